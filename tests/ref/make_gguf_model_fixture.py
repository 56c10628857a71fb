"""Makes the GGUF model fixtures in tests/ref/gguf_model/ (read by tests/test_gguf_model.c).

Run: HF_HUB_OFFLINE=1 /work/venv/bin/python tests/ref/make_gguf_model_fixture.py [SmolLM2-135M-Instruct.Q4_1.gguf]

Files:
  tiny.gguf        a tiny random LlamaForCausalLM (transformers, seed 13) written as llama.cpp's
                   convert_hf_to_gguf.py writes a Llama: general.architecture "llama", the llama.* keys,
                   F32 tensors under llama.cpp's names, and the rows of attn_q / attn_k permuted for
                   ggml's rope (the permute() below is convert_hf_to_gguf.py's LlamaModel.permute,
                   the inverse of transformers' LlamaTensorProcessor._reverse_permute_weights).
                   Untied (it has output.weight), grouped-query attention (4 heads, 2 kv heads).
  tiny_expected.safetensors   "ids" (int32 [T]) and "logits" (float32 [T, vocab]): the logits of the
                   original torch model. The script also loads tiny.gguf back with transformers'
                   GGUF loader and asserts it gives the same logits, so the file is one transformers
                   reads as that model (the permutation is the one transformers undoes).
  smollm2_logits.safetensors  (only when the SmolLM2 GGUF is given) "ids": the ChatML prompt below
                   tokenized by transformers' tokenizer of that GGUF, and "logits": the last 2 positions'
                   logits ([2, 49152]) of transformers' model loaded from the same GGUF (it dequantizes
                   Q4_1 to float32 itself), run in float32.
"""
import os
import sys

import numpy as np
import torch
from gguf import GGUFWriter
from safetensors.numpy import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gguf_model")
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(13)


def permute(weights, n_head, n_head_kv):
    # convert_hf_to_gguf.py, LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


THETA = 50000.0


def tiny():
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      rms_norm_eps=1e-5, rope_theta=THETA, tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # norms away from 1 so a mix-up of the norm weights shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    ids = torch.tensor([[1, 17, 5, 42, 63, 0, 8, 29, 33, 2]])
    with torch.no_grad():
        logits = model(ids).logits[0].float().numpy()

    path = os.path.join(OUT, "tiny.gguf")
    w = GGUFWriter(path, "llama")
    w.add_name("tiny-random-llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(THETA)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_vocab_size(cfg.vocab_size)
    # a token list as convert_hf_to_gguf.py writes one (transformers' GGUF loader wants a tokenizer)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list([f"<t{i}>" for i in range(cfg.vocab_size)])
    w.add_token_scores([0.0] * cfg.vocab_size)
    w.add_token_types([1] * cfg.vocab_size)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads

    def add(name, a):
        w.add_tensor(name, np.ascontiguousarray(a.astype(np.float32)))

    add("token_embd.weight", sd["model.embed_tokens.weight"])
    for l in range(cfg.num_hidden_layers):
        p = f"model.layers.{l}."
        add(f"blk.{l}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        add(f"blk.{l}.attn_q.weight", permute(sd[p + "self_attn.q_proj.weight"], nh, nh))
        add(f"blk.{l}.attn_k.weight", permute(sd[p + "self_attn.k_proj.weight"], nh, nkv))
        add(f"blk.{l}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        add(f"blk.{l}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        add(f"blk.{l}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        add(f"blk.{l}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        add(f"blk.{l}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        add(f"blk.{l}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    add("output_norm.weight", sd["model.norm.weight"])
    add("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    back = AutoModelForCausalLM.from_pretrained(OUT, gguf_file="tiny.gguf", torch_dtype=torch.float32).eval()
    with torch.no_grad():
        back_logits = back(ids).logits[0].float().numpy()
    diff = np.abs(back_logits - logits).max()
    assert diff < 1e-5, f"transformers reads tiny.gguf back differently: {diff}"
    print(f"tiny.gguf: {os.path.getsize(path)} bytes; transformers' GGUF loader agrees to {diff:.2g}")
    save_file({"ids": ids[0].numpy().astype(np.int32), "logits": logits},
              os.path.join(OUT, "tiny_expected.safetensors"))


PROMPT = [{"role": "user", "content": "Write a negative prompt for a photo of a cat."}]


def smollm2(path):
    d, f = os.path.split(os.path.abspath(path))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    ids = tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt")
    if not isinstance(ids, torch.Tensor):
        ids = ids["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(ids).logits[0].float().numpy()
    print(f"smollm2: {ids.shape[1]} ids {ids[0].tolist()}")
    save_file({"ids": ids[0].numpy().astype(np.int32), "logits": np.ascontiguousarray(logits[-2:])},
              os.path.join(OUT, "smollm2_logits.safetensors"))


if __name__ == "__main__":
    tiny()
    if len(sys.argv) > 1:
        smollm2(sys.argv[1])
