"""Makes the safetensors fixtures of tests/test_safetensors.c with the Python `safetensors` library
and torch (the independent reference for the file layout and for f32 -> f16/bf16 rounding).

    /work/venv/bin/python tests/ref/make_safetensors_fixtures.py            # writes the fixtures
    /work/venv/bin/python tests/ref/make_safetensors_fixtures.py --check F  # loads a C-written file F

Outputs (all in tests/ref/, a few tens of KB):
  st_python.safetensors        tensors of every dtype, values chosen to hit the edge cases
  st_python_expected.json      each tensor's dtype, shape and values as torch reads them (float64 / int);
                               non-finite floats are the strings "nan", "inf", "-inf"
  st_rounding.safetensors      "f32": float32 inputs; "f16"/"bf16": torch's .half() / .bfloat16() of them
  st_sharded/                  a 2-shard model with model.safetensors.index.json, as transformers writes it
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))


def as_json_values(t):
    out = []
    for v in t.flatten().tolist():
        if isinstance(v, float) and not math.isfinite(v):
            out.append("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
        else:
            out.append(v)
    return out


def edge_tensors():
    inf = float("inf")
    return {
        "f32.values": torch.tensor([[0.0, 1.0, -2.5], [3.14159274, 1e-30, -65504.0]], dtype=torch.float32),
        # 2**-24 is the smallest f16 subnormal, 3 * 2**-24 another; 0.1 is inexact; 65504 the largest finite
        "f16.values": torch.tensor([1.0, -2.5, 65504.0, 2.0**-24, 3 * 2.0**-24, 0.1, inf, -inf, -0.0, 6.1e-5],
                                   dtype=torch.float32).half(),
        "f16.nan": torch.tensor([float("nan")], dtype=torch.float16),
        "bf16.values": torch.tensor([[1.0, -3.0], [0.1, 1e30]], dtype=torch.float32).bfloat16(),
        "f64.values": torch.tensor([0.5, -1e-3, 1e300], dtype=torch.float64),
        "i64.values": torch.tensor([0, -1, 2**40 + 5], dtype=torch.int64),
        "i32.values": torch.tensor([-2147483648, 7], dtype=torch.int32),
        "i16.values": torch.tensor([-300, 300], dtype=torch.int16),
        "i8.values": torch.tensor([-128, 127, 0], dtype=torch.int8),
        "u8.values": torch.tensor([0, 255], dtype=torch.uint8),
        "bool.values": torch.tensor([True, False, True], dtype=torch.bool),
        "scalar": torch.tensor(42.0, dtype=torch.float32),
        "empty": torch.zeros((0, 4), dtype=torch.float32),
    }


def rounding_inputs():
    g = torch.Generator().manual_seed(1234)
    specials = [
        0.0, -0.0, 1.0, 1.0 + 2.0**-11,  # exactly half an f16 ulp above 1: ties to even (1.0)
        1.0 + 3 * 2.0**-11,              # tie that rounds up to even
        1.0 + 2.0**-8,                   # exactly half a bf16 ulp above 1
        1.0 + 3 * 2.0**-8,
        65504.0, 65519.0, 65520.0,       # largest f16; just below and at the overflow-to-inf boundary
        2.0**-24, 2.0**-25, 1.5 * 2.0**-25, 3 * 2.0**-25, 2.0**-14, 2.0**-14 - 2.0**-25,
        1e-10, 3.0e38, -3.0e38, 3.3895314e38, float("inf"), float("-inf"),
    ]
    parts = [torch.tensor(specials, dtype=torch.float32)]
    # random values over the whole f16 range and beyond, both signs
    exps = torch.randint(-30, 20, (1500,), generator=g).float()
    mant = 1 + torch.rand(1500, generator=g)
    sign = torch.where(torch.rand(1500, generator=g) < 0.5, -1.0, 1.0)
    parts.append((sign * mant * torch.pow(2.0, exps)).float())
    # random float32 bit patterns (finite ones): exercises every mantissa bit for bf16
    bits = torch.randint(0, 2**31 - 1, (500,), generator=g, dtype=torch.int64).to(torch.int32)
    r = bits.view(torch.float32)
    parts.append(r[torch.isfinite(r)])
    return torch.cat(parts)


def make():
    t = edge_tensors()
    save_file(t, os.path.join(HERE, "st_python.safetensors"), metadata={"format": "pt", "note": "autoneg fixture"})
    back = load_file(os.path.join(HERE, "st_python.safetensors"))
    expected = {}
    for name, v in back.items():
        vals = v.double() if v.dtype.is_floating_point else v.long()
        expected[name] = {"dtype": str(v.dtype), "shape": list(v.shape), "values": as_json_values(vals)}
    with open(os.path.join(HERE, "st_python_expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)

    x = rounding_inputs()
    save_file({"f32": x, "f16": x.half(), "bf16": x.bfloat16()}, os.path.join(HERE, "st_rounding.safetensors"))

    d = os.path.join(HERE, "st_sharded")
    os.makedirs(d, exist_ok=True)
    shard1 = {"model.embed_tokens.weight": torch.arange(12, dtype=torch.float32).reshape(4, 3),
              "model.norm.weight": torch.tensor([1.0, 2.0, 3.0]).bfloat16()}
    shard2 = {"lm_head.weight": -torch.arange(12, dtype=torch.float32).reshape(4, 3),
              "model.layers.0.mlp.up_proj.weight": torch.full((2, 3), 0.5).half()}
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    save_file(shard1, os.path.join(d, names[0]), metadata={"format": "pt"})
    save_file(shard2, os.path.join(d, names[1]), metadata={"format": "pt"})
    total = sum(v.numel() * v.element_size() for s in (shard1, shard2) for v in s.values())
    weight_map = {k: names[0] for k in shard1} | {k: names[1] for k in shard2}
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)


def check(path):
    """Loads a file written by autoneg's C writer and prints what Python sees."""
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        print("metadata:", f.metadata())
        for k in f.keys():
            v = f.get_tensor(k)
            print(k, v.dtype, tuple(v.shape), v.flatten()[:6].tolist())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        check(sys.argv[2])
    else:
        make()
