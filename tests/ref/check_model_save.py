"""Checks that model folders written by an_model_save load in Hugging Face transformers and give the
reference logits. Not part of `make test` (it needs Python); run it after the model tests:

    make test   # test_model_io and test_model_real save folders under /tmp/autoneg-test-*/
    HF_HUB_OFFLINE=1 /work/venv/bin/python tests/ref/check_model_save.py

It loads the newest saved-gpt2, saved-llama (tiny fixtures) and stories260K-hf (the llama2.c model,
whose q/k rows the saver permutes to rotate-half order) with AutoModelForCausalLM in float64 and
compares their logits with the fixtures in tests/ref/models/ (tolerance 1e-5 of the largest logit).
"""
import glob
import os
import sys

import torch
import transformers
from safetensors.torch import load_file

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")


def newest(name):
    found = sorted(glob.glob(f"/tmp/autoneg-test-*/{name}"), key=os.path.getmtime)
    if not found:
        sys.exit(f"no /tmp/autoneg-test-*/{name}: run the model tests first")
    return found[-1]


def check(saved, fixture, batched):
    m = transformers.AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float64).eval()
    fx = load_file(fixture)
    ids = fx["ids"].long()
    with torch.no_grad():
        logits = m(input_ids=ids if batched else ids[None]).logits
    logits = (logits if batched else logits[0]).float()
    err = float((logits - fx["logits"]).abs().max() / fx["logits"].abs().max())
    print(f"{saved}: logits rel err {err:.3g}")
    return err < 1e-5


ok = check(newest("saved-gpt2"), f"{HERE}/gpt2/fixture.safetensors", True)
ok &= check(newest("saved-llama"), f"{HERE}/llama/fixture.safetensors", True)
ok &= check(newest("stories260K-hf"), f"{HERE}/real/stories260K.safetensors", False)
sys.exit(0 if ok else 1)
