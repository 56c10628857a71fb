"""Reference fixtures for the LoRA tests (tests/test_lora*.c), made with PEFT.

Run from the repository root with the reference environment, offline, on the CPU:

    HF_HUB_OFFLINE=1 /work/venv/bin/python tests/ref/make_lora_fixtures.py

For the tiny models of tests/ref/models/ (made by make_model_fixtures.py) it wraps each in PEFT's
LoraConfig(r=4, lora_alpha=8, lora_dropout=0, every linear target, and the head for Llama,
InternLM2 and the tied Llama with biases), sets lora_B
to small random values after PEFT's init (so the gradients of lora_A are not zero), saves the adapter
with save_pretrained into tests/ref/lora/<name>/ (adapter_config.json + adapter_model.safetensors,
float32) and writes tests/ref/lora/<name>/fixture.safetensors holding
  ids, targets [B,T]               the batch (targets already shifted, -100 where ignored)
  logits [B,T,V], loss [1]         of the base model with the adapter
  grad.<PEFT key>                  the gradient of every lora_A / lora_B weight (PEFT's file layout)
  dembeds [B,T,C]                  the gradient with respect to the input embeddings (the output of the
                                   token embedding), which flows back through every frozen weight
QLoRA (qlora-llama, qlora-internlm2): the same with every linear weight but the head replaced by
bitsandbytes' dequantize_4bit(quantize_4bit(W, blocksize=64, nf4, compress_statistics=True)), i.e. PEFT
on the dequantized base, which is what autoneg's NF4 layers compute with.
The reference runs in float64 on the float32 values that are saved, so the fixture carries no float32
rounding of its own. InternLM2 is the plain-torch definition of make_model_fixtures.py.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_model_fixtures as mm  # noqa: E402
import peft  # noqa: E402
import transformers  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(ROOT, "models")
OUT = os.path.join(ROOT, "lora")
R, ALPHA = 4, 8

torch.set_num_threads(1)

TARGETS = {
    # every linear of the family, and the head where listed
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    # tied head: the adapter on lm_head runs on the embedding's weight
    "llama-bias": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "internlm2": ["wqkv", "wo", "w1", "w2", "w3", "output"],
}


def load_internlm2(path):
    with open(os.path.join(path, "config.json")) as f:
        c = json.load(f)
    model = mm.InternLM2(c).float().eval()
    model.load_state_dict(load_file(os.path.join(path, "model.safetensors")))
    return model


def internlm2_forward_embeds(model, x):
    """InternLM2.forward from the embeddings on (the plain-torch model takes ids)."""
    hd = model.c["hidden_size"] // model.c["num_attention_heads"]
    cos, sin = mm.rope_cos_sin(x.shape[1], hd, model.c["rope_theta"], x.dtype)
    for layer in model.model.layers:
        x = layer(x, cos, sin)
    return model.output(model.model.norm(x))


def quantize_base(model, head):
    """Every nn.Linear weight but the head's through bitsandbytes NF4 and back (CPU path)."""
    import bitsandbytes.functional as bf
    with torch.no_grad():
        for n, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and n != head:
                q, st = bf.quantize_4bit(mod.weight.data.contiguous(), blocksize=64, quant_type="nf4",
                                         compress_statistics=True)
                mod.weight.copy_(bf.dequantize_4bit(q, st))


def make(fixture, seed):
    qlora = fixture.startswith("qlora-")
    name = fixture[len("qlora-"):] if qlora else fixture
    path = os.path.join(MODELS, name)
    torch.manual_seed(seed)
    if name == "internlm2":
        base = load_internlm2(path)
        embed = base.model.tok_embeddings
        vocab = base.c["vocab_size"]
        task = None
    else:
        base = transformers.AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
        embed = base.get_input_embeddings()
        vocab = base.config.vocab_size
        task = "CAUSAL_LM"
    if qlora:
        quantize_base(base, "output" if name == "internlm2" else "lm_head")
    cfg = peft.LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS[name], task_type=task,
                          fan_in_fan_out=(name == "gpt2"))
    model = peft.get_peft_model(base, cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    d = os.path.join(OUT, fixture)
    os.makedirs(d, exist_ok=True)
    # float32 values, the ones the reference uses; a tied head (GPT-2) must not drag the embedding in
    model.save_pretrained(d, save_embedding_layers=False)
    os.remove(os.path.join(d, "README.md"))
    # the base as a path relative to the repository root (a plain module has none at all)
    with open(os.path.join(d, "adapter_config.json")) as f:
        ac = json.load(f)
    ac["base_model_name_or_path"] = "tests/ref/models/" + name
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(ac, f, indent=2)

    model.double()
    ids, _, targets = mm.make_batch(vocab, seed + 2)
    emb = embed(ids).detach().clone().requires_grad_(True)
    if name == "internlm2":
        logits = internlm2_forward_embeds(model.base_model.model, emb)
    else:
        logits = model(inputs_embeds=emb).logits
    loss = mm.loss_of(logits, targets)
    loss.backward()
    fx = {
        "ids": ids.to(torch.int32).contiguous(),
        "targets": targets.to(torch.int32).contiguous(),
        "logits": logits.detach().float().contiguous(),
        "loss": loss.detach().float().reshape(1),
        "dembeds": emb.grad.detach().float().contiguous(),
    }
    saved = load_file(os.path.join(d, "adapter_model.safetensors"))
    n_lora = 0
    for n, p in model.named_parameters():
        if "lora_" not in n:
            continue
        key = n.replace(".default", "")
        assert key in saved, key
        assert p.grad is not None, n
        fx["grad." + key] = p.grad.detach().float().contiguous().clone()
        n_lora += 1
    assert n_lora == len(saved)
    save_file(fx, os.path.join(d, "fixture.safetensors"))
    print(f"{fixture}: {n_lora} lora tensors, loss {float(loss):.6f}")


if __name__ == "__main__":
    seeds = {"gpt2": 201, "llama": 202, "qwen2": 203, "internlm2": 204, "llama-bias": 205,
             "qlora-llama": 206, "qlora-internlm2": 207}
    for w in sys.argv[1:] or list(seeds):
        make(w, seeds[w])
