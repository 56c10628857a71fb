"""Makes the config.json fixtures of tests/test_config.c with Hugging Face transformers' own config
classes (the reference for field names and defaults), and checks configs written by autoneg.

    /work/venv/bin/python tests/ref/make_config_fixtures.py               # writes tests/ref/config_*.json
    /work/venv/bin/python tests/ref/make_config_fixtures.py --check DIR   # DIR/config.json + weights load?

Each tests/ref/config_<name>.json is what `save_pretrained` writes; tests/ref/config_expected.json holds,
per fixture, the values transformers resolves from it (head_dim, kv heads, ffn size, ...), which is what
an_config_load must agree with.
"""
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def fixtures():
    from transformers import GPT2Config, LlamaConfig, MistralConfig, Qwen2Config
    return {
        # n_inner None -> 4 * n_embd; the published gpt2 (124M) sizes
        "gpt2": GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                           architectures=["GPT2LMHeadModel"]),
        # grouped-query attention, explicit head_dim different from hidden/heads, attention and MLP biases
        "llama": LlamaConfig(vocab_size=32000, hidden_size=256, intermediate_size=688, num_hidden_layers=3,
                             num_attention_heads=8, num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-5,
                             rope_theta=500000.0, max_position_embeddings=2048, attention_bias=True,
                             mlp_bias=True, tie_word_embeddings=False, bos_token_id=1, eos_token_id=[2, 7],
                             architectures=["LlamaForCausalLM"]),
        "mistral": MistralConfig(vocab_size=32000, hidden_size=512, intermediate_size=1792, num_hidden_layers=2,
                                 num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=32768,
                                 sliding_window=4096, architectures=["MistralForCausalLM"]),
        # the Qwen2-0.5B sizes: 14 heads of 64, 2 kv heads, tied embeddings
        "qwen2": Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                             num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                             rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                             bos_token_id=151643, eos_token_id=151645, architectures=["Qwen2ForCausalLM"]),
    }


def resolved(c):
    """The numbers transformers' modelling code uses, computed the way it computes them."""
    if c.model_type == "gpt2":
        return {"vocab_size": c.vocab_size, "dim": c.n_embd, "n_layers": c.n_layer, "n_heads": c.n_head,
                "n_kv_heads": c.n_head, "head_dim": c.n_embd // c.n_head,
                "ffn_dim": c.n_inner if c.n_inner is not None else 4 * c.n_embd, "max_seq": c.n_positions,
                "norm_eps": c.layer_norm_epsilon, "rope_theta": 10000.0, "tie": int(c.tie_word_embeddings),
                "qkv_bias": 1, "o_bias": 1, "mlp_bias": 1, "bos": c.bos_token_id, "eos": c.eos_token_id, "pad": -1,
                "sliding_window": 0}
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    eos = c.eos_token_id[0] if isinstance(c.eos_token_id, list) else c.eos_token_id
    attn_bias = int(getattr(c, "attention_bias", False))
    sw = 0
    if c.model_type == "mistral":
        sw = c.sliding_window or 0
    elif c.model_type == "qwen2" and c.use_sliding_window:
        sw = c.sliding_window
    rope = getattr(c, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))
    return {"vocab_size": c.vocab_size, "dim": c.hidden_size, "n_layers": c.num_hidden_layers,
            "n_heads": c.num_attention_heads, "n_kv_heads": c.num_key_value_heads, "head_dim": head_dim,
            "ffn_dim": c.intermediate_size, "max_seq": c.max_position_embeddings, "norm_eps": c.rms_norm_eps,
            "rope_theta": theta, "tie": int(c.tie_word_embeddings),
            "qkv_bias": 1 if c.model_type == "qwen2" else attn_bias,
            "o_bias": 0 if c.model_type == "qwen2" else attn_bias,
            "mlp_bias": int(getattr(c, "mlp_bias", False)),
            "bos": -1 if c.bos_token_id is None else c.bos_token_id, "eos": -1 if eos is None else eos,
            "pad": -1 if c.pad_token_id is None else c.pad_token_id, "sliding_window": sw}


def make():
    expected = {}
    for name, c in fixtures().items():
        with tempfile.TemporaryDirectory() as d:
            c.save_pretrained(d)
            text = open(os.path.join(d, "config.json")).read()
        with open(os.path.join(HERE, f"config_{name}.json"), "w") as f:
            f.write(text)
        expected[name] = resolved(c)
    with open(os.path.join(HERE, "config_expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)


def check(d):
    """Loads DIR (config.json written by autoneg + model.safetensors) with AutoModelForCausalLM."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = AutoConfig.from_pretrained(d)
    print(type(cfg).__name__, cfg.to_dict())
    m = AutoModelForCausalLM.from_pretrained(d)
    ids = torch.tensor([[1, 5, 9, 3]])
    print(type(m).__name__, "logits[0,-1,:5] =", m(ids).logits[0, -1, :5].tolist())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        check(sys.argv[2])
    else:
        make()
