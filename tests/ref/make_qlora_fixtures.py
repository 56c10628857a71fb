"""Reference fixtures for the QLoRA tests (tests/test_qlora*.c), made with bitsandbytes + PEFT.

Run from the repository root with the reference environment, offline, on the CPU:

    HF_HUB_OFFLINE=1 /work/venv/bin/python tests/ref/make_qlora_fixtures.py

For the tiny Llama and InternLM2 of tests/ref/models/ (make_model_fixtures.py):

1. every linear weight but the head is quantized with bitsandbytes itself,
   `bitsandbytes.functional.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")`
   (NF4 + double quantization, as QLoRA / XTuner), and dequantized with `dequantize_4bit`: the exact
   bits the C quantizer must produce (it is bit-exact with bitsandbytes) and the float weights they
   stand for;
2. the dequantized weights are loaded into a float model (embeddings, norms and head stay float32,
   as PEFT's prepare_model_for_kbit_training keeps them), the PEFT adapter of the LoRA tests
   (tests/ref/lora/<name>/, r 4, alpha 8, lora_B nonzero) is put on top, and a float64 forward and
   backward records, in tests/ref/qlora/<name>/fixture.safetensors,
     ids, targets [B,T]       the batch (targets shifted, -100 where ignored)
     logits [B,T,V], loss [1]
     grad.<PEFT key>          the gradient of every lora_A / lora_B
     dembeds [B,T,C]          the gradient with respect to the input embeddings, which flows back
                              through every frozen NF4 weight (dX = dY W_dq, QLoRA's MatMul4Bit)
     nf4.<weight name>        bitsandbytes' serialized arrays for that weight, with the keys
                              QuantState.as_dict(packed=True) gives (…, .absmax, .quant_map,
                              .nested_absmax, .nested_quant_map, .quant_state.bitsandbytes__nf4)
3. tests/ref/qlora/llama-bnb/ is the tiny Llama as transformers + bitsandbytes save it after
   loading it with BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
   bnb_4bit_use_double_quant=True) and save_pretrained (config.json with its quantization_config,
   model.safetensors with the serialized 4-bit weights): a checkpoint bitsandbytes wrote, for the
   loader.
4. tests/ref/qlora/llama-merged.safetensors: PEFT's merge_and_unload() of the LoRA test adapter into
   that 4-bit model (dequantize, add scaling * B A, quantize again): the re-quantized codes and
   scales of each weight and the merged model's logits on the batch of 2.
"""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_model_fixtures as mm  # noqa: E402
import make_lora_fixtures as ml  # noqa: E402
import bitsandbytes.functional as bf  # noqa: E402
import peft  # noqa: E402
import transformers  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(ROOT, "models")
OUT = os.path.join(ROOT, "qlora")
HEADS = ("lm_head.weight", "output.weight")

torch.set_num_threads(1)


def is_quantized(name, t):
    return t.ndim == 2 and name.endswith(".weight") and name not in HEADS and "embed" not in name


def make(name, seed):
    path = os.path.join(MODELS, name)
    sd = load_file(os.path.join(path, "model.safetensors"))
    deq, fx = {}, {}
    for k, w in sorted(sd.items()):
        if not is_quantized(k, w):
            continue
        q, st = bf.quantize_4bit(w.float().contiguous(), blocksize=64, compress_statistics=True, quant_type="nf4")
        deq[k] = bf.dequantize_4bit(q, st).float()
        fx["nf4." + k] = q.contiguous()
        for kk, v in st.as_dict(packed=True).items():
            fx[f"nf4.{k}.{kk}"] = v.contiguous()
    if name == "internlm2":
        base = ml.load_internlm2(path)
        embed = base.model.tok_embeddings
        vocab = base.c["vocab_size"]
    else:
        base = transformers.AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
        embed = base.get_input_embeddings()
        vocab = base.config.vocab_size
    with torch.no_grad():
        own = dict(base.named_parameters())
        for k, v in deq.items():
            own[k].copy_(v)
    model = peft.PeftModel.from_pretrained(base, os.path.join(ROOT, "lora", name), is_trainable=True)
    model.double()
    ids, _, targets = mm.make_batch(vocab, seed)
    emb = embed(ids).detach().clone().requires_grad_(True)
    if name == "internlm2":
        logits = ml.internlm2_forward_embeds(model.base_model.model, emb)
    else:
        logits = model(inputs_embeds=emb).logits
    loss = mm.loss_of(logits, targets)
    loss.backward()
    fx.update({
        "ids": ids.to(torch.int32).contiguous(),
        "targets": targets.to(torch.int32).contiguous(),
        "logits": logits.detach().float().contiguous(),
        "loss": loss.detach().float().reshape(1),
        "dembeds": emb.grad.detach().float().contiguous(),
    })
    n_lora = 0
    for n, p in model.named_parameters():
        if "lora_" in n:
            fx["grad." + n.replace(".default", "")] = p.grad.detach().float().contiguous().clone()
            n_lora += 1
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    save_file(fx, os.path.join(d, "fixture.safetensors"))
    print(f"{name}: {len(deq)} NF4 weights, {n_lora} lora tensors, loss {float(loss):.6f}")


def make_bnb_folder():
    """The tiny Llama quantized and saved by transformers + bitsandbytes themselves."""
    cfg = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                          bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32)
    model = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(MODELS, "llama"), quantization_config=cfg,
                                                              torch_dtype=torch.float32, device_map="cpu")
    d = os.path.join(OUT, "llama-bnb")
    if os.path.isdir(d):
        shutil.rmtree(d)
    model.save_pretrained(d)
    for extra in ("generation_config.json",):
        p = os.path.join(d, extra)
        if os.path.exists(p):
            os.remove(p)
    keys = sorted(load_file(os.path.join(d, "model.safetensors")))
    print(f"llama-bnb: {len(keys)} tensors, e.g. {[k for k in keys if 'q_proj' in k][:6]}")
    with open(os.path.join(d, "config.json")) as f:
        print(json.dumps(json.load(f).get("quantization_config"), indent=1))


def make_merged():
    """PEFT's merge into a 4-bit base: the tiny Llama as transformers + bitsandbytes load it from
    tests/ref/qlora/llama-bnb/, the LoRA test adapter on top, merge_and_unload() (which dequantizes,
    adds scaling * B A and quantizes again). Writes tests/ref/qlora/llama-merged.safetensors with the
    re-quantized codes (<name>.weight, <name>.weight.absmax) and the merged model's logits on the
    fixture batch of make()."""
    model = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(OUT, "llama-bnb"), device_map="cpu")
    model = peft.PeftModel.from_pretrained(model, os.path.join(ROOT, "lora", "llama"))
    merged = model.merge_and_unload()
    fx = load_file(os.path.join(OUT, "llama", "fixture.safetensors"))
    ids = fx["ids"].long()
    with torch.no_grad():
        logits = merged(ids).logits.float()
    out = {"logits": logits.contiguous()}
    for n, m in merged.named_modules():
        if type(m).__name__ == "Linear4bit":
            out[n + ".weight"] = m.weight.data.contiguous()
            out[n + ".weight.absmax"] = m.weight.quant_state.absmax.contiguous()
    save_file(out, os.path.join(OUT, "llama-merged.safetensors"))
    print(f"llama-merged: {len(out) // 2} re-quantized weights")


if __name__ == "__main__":
    seeds = {"llama": 302, "internlm2": 304}
    for w in sys.argv[1:] or list(seeds) + ["bnb", "merged"]:
        if w == "bnb":
            make_bnb_folder()
        elif w == "merged":
            make_merged()
        else:
            make(w, seeds[w])
