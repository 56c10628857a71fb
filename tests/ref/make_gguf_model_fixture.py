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
  qwen2.gguf, qwen2_expected.safetensors   the same for a tiny random Qwen2ForCausalLM (seed 14) as
                   convert_hf_to_gguf.py's Qwen2Model writes it: general.architecture "qwen2", the qwen2.*
                   keys, q/k/v biases as blk.N.attn_{q,k,v}.bias, NO q/k row permutation (ggml runs qwen2
                   with NEOX, i.e. rotate-half, RoPE; only LlamaModel permutes) and tied embeddings (no
                   output.weight, as for Qwen2.5-0.5B). A gpt2-style token list with merges, as Qwen2's
                   BPE vocabulary is written.
  gpt2.gguf, gpt2_expected.safetensors     the same for a tiny random GPT2LMHeadModel (seed 15) as
                   GPT2Model writes it: general.architecture "gpt2", the gpt2.* keys, position_embd,
                   fused blk.N.attn_qkv, every bias, the Conv1D weights ([in, out] in transformers)
                   transposed to nn.Linear's [out, in] (so ggml's ne is [in, out] like every other
                   linear), and output.weight written as a copy of token_embd (the converter does so
                   because ggml's gpt2 graph reads output).
  Biases and norm weights are random (transformers initializes them to 0 and 1), so a bias that is
  dropped or put in the wrong place shows in the logits.
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
from transformers import (AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM)

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


IDS = torch.tensor([[3, 17, 5, 42, 63, 0, 8, 29, 33, 2, 11]])


def randomize(model):
    # biases and norms away from transformers' 0 / 1 init, so each one matters in the logits
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "norm" in name or ".ln_" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))


def bpe_vocab(w, n):
    # a gpt2-style BPE vocabulary (convert_hf_to_gguf.py's _set_vocab_gpt2 writes one for Qwen2 and GPT-2)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(["a", "b", "ab"] + [f"<t{i}>" for i in range(3, n)])
    w.add_token_types([1] * n)
    w.add_token_merges(["a b"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)


def finish(w, model, name, **config_fix):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with torch.no_grad():
        logits = model(IDS).logits[0].float().numpy()
    back = AutoModelForCausalLM.from_pretrained(OUT, gguf_file=f"{name}.gguf", torch_dtype=torch.float32,
                                                **config_fix).eval()
    with torch.no_grad():
        back_logits = back(IDS).logits[0].float().numpy()
    diff = np.abs(back_logits - logits).max()
    assert diff < 1e-5, f"transformers reads {name}.gguf back differently: {diff}"
    print(f"{name}.gguf: {os.path.getsize(os.path.join(OUT, name + '.gguf'))} bytes; "
          f"transformers' GGUF loader agrees to {diff:.2g}")
    save_file({"ids": IDS[0].numpy().astype(np.int32), "logits": logits},
              os.path.join(OUT, f"{name}_expected.safetensors"))


def f32(a):
    return np.ascontiguousarray(a.detach().float().numpy().astype(np.float32))


QWEN_THETA = 1000000.0


def qwen2():
    torch.manual_seed(14)
    cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      rms_norm_eps=1e-6, rope_theta=QWEN_THETA, tie_word_embeddings=True,
                      bos_token_id=1, eos_token_id=2, use_sliding_window=False)
    model = Qwen2ForCausalLM(cfg).eval()
    randomize(model)
    w = GGUFWriter(os.path.join(OUT, "qwen2.gguf"), "qwen2")
    w.add_name("tiny-random-qwen2")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(QWEN_THETA)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    bpe_vocab(w, cfg.vocab_size)
    sd = model.state_dict()
    w.add_tensor("token_embd.weight", f32(sd["model.embed_tokens.weight"]))
    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    for l in range(cfg.num_hidden_layers):
        for hf, gg in names.items():
            for kind in ("weight", "bias"):
                k = f"model.layers.{l}.{hf}.{kind}"
                if k in sd:
                    w.add_tensor(f"blk.{l}.{gg}.{kind}", f32(sd[k]))
    w.add_tensor("output_norm.weight", f32(sd["model.norm.weight"]))
    # tied: the checkpoint has no lm_head.weight of its own, and the converter writes no output.weight
    finish(w, model, "qwen2")


def gpt2():
    torch.manual_seed(15)
    cfg = GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=2, n_positions=64, n_ctx=64,
                     layer_norm_epsilon=1e-5, activation_function="gelu_new", bos_token_id=1, eos_token_id=2)
    model = GPT2LMHeadModel(cfg).eval()
    randomize(model)
    w = GGUFWriter(os.path.join(OUT, "gpt2.gguf"), "gpt2")
    w.add_name("tiny-random-gpt2")
    # GPT2Model.set_gguf_parameters
    w.add_block_count(cfg.n_layer)
    w.add_context_length(cfg.n_ctx)
    w.add_embedding_length(cfg.n_embd)
    w.add_feed_forward_length(4 * cfg.n_embd)
    w.add_head_count(cfg.n_head)
    w.add_layer_norm_eps(cfg.layer_norm_epsilon)
    bpe_vocab(w, cfg.vocab_size)
    sd = model.state_dict()
    w.add_tensor("token_embd.weight", f32(sd["transformer.wte.weight"]))
    w.add_tensor("position_embd.weight", f32(sd["transformer.wpe.weight"]))
    names = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
             "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
    for l in range(cfg.n_layer):
        for hf, gg in names.items():
            wt = sd[f"transformer.h.{l}.{hf}.weight"]
            if hf.startswith(("attn.", "mlp.")):
                wt = wt.transpose(1, 0)  # GPT2Model.modify_tensors: Conv1D [in, out] -> [out, in]
            w.add_tensor(f"blk.{l}.{gg}.weight", f32(wt))
            w.add_tensor(f"blk.{l}.{gg}.bias", f32(sd[f"transformer.h.{l}.{hf}.bias"]))
    w.add_tensor("output_norm.weight", f32(sd["transformer.ln_f.weight"]))
    w.add_tensor("output_norm.bias", f32(sd["transformer.ln_f.bias"]))
    w.add_tensor("output.weight", f32(sd["transformer.wte.weight"]))  # the converter's copy of token_embd
    # transformers' GGUF loader maps gpt2.context_length to n_ctx only, leaving n_positions at its default
    # 1024 (which would not match position_embd): that one config value is given, the tensors are the file's
    finish(w, model, "gpt2", n_positions=cfg.n_positions)


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
    qwen2()
    gpt2()
    if len(sys.argv) > 1:
        smollm2(sys.argv[1])
