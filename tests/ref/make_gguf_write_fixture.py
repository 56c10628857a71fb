"""Makes tests/ref/gguf_write/quants.safetensors (read by tests/test_gguf_write.c): float32 arrays and
their Q8_0 / Q4_0 bytes as the gguf Python package's numpy quantize writes them (llama.cpp's converter
uses the same code), so autoneg's quantizer can be checked byte for byte.

Run: /work/venv/bin/python tests/ref/make_gguf_write_fixture.py [exported.gguf]

Tensors: "x" float32 [n] (n a multiple of 32) and "q8_0", "q4_0" uint8 (the quantized bytes). The blocks:
random normals at several scales, an all-zero block, ties at the rounding boundaries (Q8_0: a block
whose scale is exactly 1, so x * (1/d) lands on k + 0.5; Q4_0: a block with max -8, so x / d + 8.5 is an
integer), a block whose largest |x| appears with both signs (Q4_0 takes the first), tiny values (an
f16-subnormal scale), odd magnitudes mixed with zeros, and a single nonzero value.

With an exported GGUF file as argument it also reads that file with gguf's GGUFReader and prints its
keys and tensor types/shapes (a manual check that the package reads autoneg's files).
"""
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import quantize
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gguf_write")


def blocks():
    rng = np.random.default_rng(13)
    b = []
    for scale in (1.0, 0.02, 300.0):
        b.append(rng.standard_normal(32) * scale)
    b.append(np.zeros(32))
    ties8 = np.arange(32) - 16 + 0.5  # +-0.5 .. 15.5: q = x exactly at k + 0.5
    ties8[0] = 127.0                  # max |x| 127 -> d = 1
    b.append(ties8)
    ties4 = np.arange(32) / 2.0 - 8.0  # -8 .. 7.5: x / d + 8.5 with d = 1 is an integer or a half
    ties4[3] = -8.0
    b.append(ties4)
    both = rng.standard_normal(32)
    both[5], both[20] = 4.0, -4.0      # equal |x| with both signs: the first (+4) sets the sign
    b.append(both)
    b.append(rng.standard_normal(32) * 1e-6)  # f16-subnormal scale
    odd = np.zeros(32)
    odd[::3] = [1.0 / 3, -2.0 / 7, 1e-3, 12345.678, -0.1, 3.5, -3.5, 65.25, 1e-8, -1e-8, 0.75]
    b.append(odd)
    one = np.zeros(32)
    one[17] = -0.123
    b.append(one)
    return np.concatenate(b).astype(np.float32)


def main():
    os.makedirs(OUT, exist_ok=True)
    x = blocks()
    q8 = quantize(x.reshape(-1, 32), GGMLQuantizationType.Q8_0).reshape(-1)
    q4 = quantize(x.reshape(-1, 32), GGMLQuantizationType.Q4_0).reshape(-1)
    assert q8.dtype == np.uint8 and q8.size == x.size // 32 * 34
    assert q4.dtype == np.uint8 and q4.size == x.size // 32 * 18
    save_file({"x": x, "q8_0": q8, "q4_0": q4}, os.path.join(OUT, "quants.safetensors"))
    print(f"wrote {OUT}/quants.safetensors: {x.size // 32} blocks")
    if len(sys.argv) > 1:
        r = GGUFReader(sys.argv[1])
        for name, f in r.fields.items():
            v = f.contents() if hasattr(f, "contents") else f.parts[-1]
            if isinstance(v, list) and len(v) > 4:
                v = f"[{len(v)} values]"
            print(f"  {name} = {v!r}")
        for t in r.tensors:
            print(f"  {t.name} {t.tensor_type.name} {list(t.shape)}")


if __name__ == "__main__":
    main()
