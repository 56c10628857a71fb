"""Checks by hand (not part of `make test`) that transformers + bitsandbytes read a folder written by
`autoneg quantize` as the 4-bit model they would have made themselves:

    ./build/autoneg quantize --model ../shared/models/TinyStories-656K --type nf4 --out /tmp/ts-nf4
    HF_HUB_OFFLINE=1 /work/venv/bin/python tests/ref/check_qlora_compat.py ../shared/models/TinyStories-656K /tmp/ts-nf4

It loads the autoneg folder (its quantization_config makes transformers build Linear4bit layers and
take the serialized NF4 state as it is) and the original float folder quantized by transformers +
bitsandbytes on the fly, and requires identical logits on a fixed batch.
"""
import sys

import torch
import transformers

orig, ours = sys.argv[1], sys.argv[2]
cfg = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.float32)
a = transformers.AutoModelForCausalLM.from_pretrained(ours, device_map="cpu")
b = transformers.AutoModelForCausalLM.from_pretrained(orig, quantization_config=cfg, dtype=torch.float32, device_map="cpu")
n4 = sum(1 for m in a.modules() if type(m).__name__ == "Linear4bit")
ids = torch.arange(3, 3 + 40).reshape(2, 20) % a.config.vocab_size
with torch.no_grad():
    la, lb = a(ids).logits, b(ids).logits
print(f"{n4} Linear4bit layers; max |logit difference| {float((la - lb).abs().max()):.3g}")
assert n4 > 0 and torch.equal(la, lb)
print("ok")
