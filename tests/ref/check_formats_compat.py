"""Checks that what autoneg's C writers produce loads in Hugging Face transformers and safetensors
(for `make check-compat`; needs the reference venv, never part of `make test`).

    make && /work/venv/bin/python tests/ref/check_formats_compat.py [BUILD_DIR]

For a tiny random GPT-2, Llama (GQA, explicit head_dim, attention and MLP biases), Mistral and Qwen2
model saved by transformers' save_pretrained, tests/ref/st_rewrite.c reads config.json + model.safetensors
with an_config_load / an_st_open and writes them back with an_config_save / an_st_write, once as is and
once with F32 weights converted to BF16 by an_f32_to_bf16. Checks:
  - the F32 rewrite is byte-identical to transformers' model.safetensors, and
    AutoModelForCausalLM.from_pretrained on it gives exactly the same logits;
  - every BF16 weight equals torch's .bfloat16() of the original (round to nearest even).
Exits non-zero on any failure.
"""
import os
import shutil
import subprocess
import sys
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def configs():
    small = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=64)
    return {
        "gpt2": GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4, bos_token_id=96,
                           eos_token_id=96),
        "llama": LlamaConfig(**small, head_dim=12, attention_bias=True, mlp_bias=True, rope_theta=50000.0,
                             tie_word_embeddings=False, rms_norm_eps=1e-5),
        "mistral": MistralConfig(**small, sliding_window=None),
        "qwen2": Qwen2Config(**small, tie_word_embeddings=True),
    }


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build")
    work = tempfile.mkdtemp(prefix="autoneg-compat-")
    tool = os.path.join(work, "st_rewrite")
    subprocess.run(["cc", "-std=c11", "-D_GNU_SOURCE", "-I", ROOT, os.path.join(ROOT, "tests/ref/st_rewrite.c"),
                    os.path.join(build, "libautoneg.a"), "-lcjson", "-lm", "-o", tool], check=True)
    torch.manual_seed(0)
    ids = torch.tensor([[1, 5, 9, 3, 44, 2]])
    failed = 0
    for name, cfg in configs().items():
        src, dst, dst16 = (os.path.join(work, name + s) for s in ("", "_c", "_c16"))
        m = AutoModelForCausalLM.from_config(cfg).eval()
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.02)  # nonzero biases
        m.save_pretrained(src)
        for d, extra in ((dst, []), (dst16, ["bf16"])):
            os.makedirs(d)
            r = subprocess.run([tool, src, d] + extra, capture_output=True, text=True)
            if r.returncode != 0:
                print(f"FAIL {name}: st_rewrite: {r.stdout}{r.stderr}")
                failed += 1
                continue
        if failed:
            continue
        same_bytes = open(os.path.join(src, "model.safetensors"), "rb").read() == \
            open(os.path.join(dst, "model.safetensors"), "rb").read()
        a, b16 = load_file(os.path.join(src, "model.safetensors")), load_file(os.path.join(dst16, "model.safetensors"))
        bf16_ok = a.keys() == b16.keys() and all(torch.equal(a[k].bfloat16(), b16[k]) for k in a)
        with torch.no_grad():
            ref = AutoModelForCausalLM.from_pretrained(src).eval()(ids).logits
            got = AutoModelForCausalLM.from_pretrained(dst).eval()(ids).logits
            AutoModelForCausalLM.from_pretrained(dst16)  # loads as bf16 per torch_dtype
        diff = (ref - got).abs().max().item()
        ok = same_bytes and bf16_ok and diff == 0
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: bytes identical {same_bytes}, bf16 == torch {bf16_ok}, "
              f"logits max|diff| {diff:.3g}")
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
