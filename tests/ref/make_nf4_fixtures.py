"""Makes the NF4 fixtures in tests/ref/nf4/ from bitsandbytes' own quantize_4bit on CPU tensors.

Run: HF_HUB_OFFLINE=1 /work/venv/bin/python tests/ref/make_nf4_fixtures.py

Every array is written raw, little-endian, no header (NAME.f32 = float32, NAME.u8 = uint8), and each
case's packed QuantState JSON is written as CASE.quant_state.json exactly as bitsandbytes packs it into
`weight.quant_state.bitsandbytes__nf4`. Per case CASE (plain, compress_statistics=False) and CASE_dq
(double quantization, compress_statistics=True):
  CASE.input.f32        the float32 tensor that was quantized (row-major)
  CASE[_dq].weight.u8   packed codes, element 2k high nibble, 2k+1 low nibble
  CASE.absmax.f32       plain absmax per 64-block
  CASE_dq.absmax.u8     8-bit codes of absmax - offset
  CASE_dq.nested_absmax.f32, CASE_dq.nested_quant_map.f32   state2 of the double quantization
  CASE[_dq].dequant.f32 bitsandbytes.functional.dequantize_4bit of the above
Plus nf4_code.f32 (get_4bit_type("nf4")), dynamic_map.f32 (create_dynamic_map()), and a gradient case
(grad.*) computed by torch autograd on the dequantized weight of case "wide_dq", and torch.mean of
float32 vectors (mean_N.input, mean_N.mean), which double quantization uses for its offset, and
bitsandbytes' 8-bit quantize_blockwise on its own (blockwise8.input/.q/.absmax), and a 256 x 512
weight generated from its index (hashgen*: outputs only; the generator is in the script and the test).
"""
import json
import os

import numpy as np
import torch
import bitsandbytes
import bitsandbytes.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nf4")
os.makedirs(OUT, exist_ok=True)


def put(name, t):
    a = t.detach().cpu().contiguous().numpy()
    if a.dtype == np.float32:
        ext = "f32"
    elif a.dtype == np.uint8:
        ext = "u8"
    else:
        raise SystemExit(f"{name}: unexpected dtype {a.dtype}")
    a.astype(a.dtype.newbyteorder("<")).tofile(os.path.join(OUT, f"{name}.{ext}"))


def nf4_midpoints():
    code = F.get_4bit_type("nf4", device="cpu").float()
    return code, (code[:-1] + code[1:]) / 2


def case_midpoints():
    """Values that land exactly on the midpoints between NF4 codes (ties go to the lower code), on
    the codes themselves, and just either side, in two full blocks and a short last block."""
    code, mids = nf4_midpoints()
    vals = []
    # block 0: absmax 1 (scale exactly 1), midpoints, codes, neighbours of midpoints
    b0 = [1.0] + mids.tolist() + code.tolist()
    b0 += [float(np.nextafter(np.float32(m), np.float32(2))) for m in mids.tolist()]
    b0 += [float(np.nextafter(np.float32(m), np.float32(-2))) for m in mids.tolist()[:64 - len(b0) - 1]]
    b0 = (b0 + [0.0] * 64)[:64]
    # block 1: absmax 2 (1/2 is exact) with doubled midpoints
    b1 = [(-2.0)] + [2 * m for m in mids.tolist()] + [-2 * m for m in mids.tolist()]
    b1 = (b1 + [0.5] * 64)[:64]
    # short last block (22 values): divides by its own absmax 4 (exact), midpoints times 4
    b2 = [4.0] + [4 * m for m in mids.tolist()] + [-4.0, 0.0, 3.0, -3.0, 1.0, 2.0]
    vals = b0 + b1 + b2[:22]
    return torch.tensor(vals, dtype=torch.float32).reshape(1, -1)


def cases():
    g = torch.Generator().manual_seed(1234)
    out = {}
    out["short"] = torch.randn(3, 200, generator=g)
    out["wide"] = torch.randn(64, 130, generator=g) * 0.02
    out["big"] = torch.randn(160, 130, generator=g) * 0.05
    out["midpoints"] = case_midpoints()
    z = torch.randn(2, 100, generator=g)
    z[0, 64:128 - 100 + 100] = 0.0  # second block (64..127) all zero
    z[1, 100 - 8:] = 0.0            # last short block (192..199) all zero
    z[0, 64:] = 0.0
    z[1, :28] = 0.0
    out["zeros"] = z
    o = torch.randn(4, 256, generator=g) * 0.02
    o[2, 3] = 1000.0
    o[2, 100] = -2500.0
    o[2, 200] = 7.5
    out["outliers"] = o
    out["single"] = torch.randn(1, 40, generator=g)
    out["allzero"] = torch.zeros(2, 70)
    return out


def main():
    torch.manual_seed(0)
    put("nf4_code", F.get_4bit_type("nf4", device="cpu").float())
    put("dynamic_map", F.create_dynamic_map())
    meta = {"bitsandbytes": bitsandbytes.__version__, "torch": torch.__version__, "cases": {}}
    for name, t in cases().items():
        t = t.float().contiguous()
        put(f"{name}.input", t)
        for dq in (False, True):
            q, st = F.quantize_4bit(t, blocksize=64, quant_type="nf4", compress_statistics=dq)
            d = F.dequantize_4bit(q, st)
            tag = f"{name}_dq" if dq else name
            put(f"{tag}.weight", q)
            packed = st.as_dict(packed=True)
            if dq:
                put(f"{tag}.absmax", packed["absmax"])
                put(f"{tag}.nested_absmax", packed["nested_absmax"])
                put(f"{tag}.nested_quant_map", packed["nested_quant_map"])
            else:
                put(f"{tag}.absmax", packed["absmax"])
            put(f"{tag}.quant_map", packed["quant_map"])
            js = bytes(packed["quant_state.bitsandbytes__nf4"].tolist())
            with open(os.path.join(OUT, f"{tag}.quant_state.json"), "wb") as f:
                f.write(js)
            put(f"{tag}.dequant", d.float())
            meta["cases"][tag] = list(t.shape)

    # Input gradient of y = x @ dequant(W)^T, by autograd on the dequantized weight (the only
    # gradient QLoRA needs from a frozen NF4 weight).
    g = torch.Generator().manual_seed(99)
    w = cases()["wide"].float()
    q, st = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    wdq = F.dequantize_4bit(q, st).float()
    x = torch.randn(5, 130, generator=g).requires_grad_(True)
    dout = torch.randn(5, 64, generator=g)
    bias = torch.randn(64, generator=g)
    y = x @ wdq.t() + bias
    y.backward(dout)
    put("grad.x", x)
    put("grad.dout", dout)
    put("grad.bias", bias)
    put("grad.y", y)
    put("grad.dx", x.grad)

    # torch.mean of float32 vectors (the double-quantization offset), sizes that exercise the
    # scalar tail, the 8-lane vectors, the 4-row interleave and the 16-chunk cascade levels; all
    # below 32768 so torch sums on one thread.
    g = torch.Generator().manual_seed(7)
    for n in (7, 100, 1000, 20000):
        v = torch.rand(n, generator=g) * 3.0 + torch.randn(n, generator=g).abs() * 0.01
        put(f"mean_{n}.input", v)
        put(f"mean_{n}.mean", v.mean().reshape(1))
    # A larger weight (256 x 512: 2048 blocks, 8 nested blocks, so the cascade levels of torch's
    # mean take part) whose values C regenerates from their index with the same float32 steps,
    # so only bitsandbytes' outputs are stored: x_i = (u32(i * 2654435761) * 2^-32 - 0.5) * s,
    # s = 1 + (i / 64 % 13) / 4.
    n = 256 * 512
    i = np.arange(n, dtype=np.uint64)
    u = ((i * np.uint64(2654435761)) % np.uint64(2**32)).astype(np.float32)
    sc = (np.float32(1) + ((i // 64) % 13).astype(np.float32) * np.float32(0.25)).astype(np.float32)
    x = ((u * np.float32(2.0**-32) - np.float32(0.5)) * sc).astype(np.float32)
    t = torch.from_numpy(x).reshape(256, 512)
    for dq in (False, True):
        q, st = F.quantize_4bit(t, blocksize=64, quant_type="nf4", compress_statistics=dq)
        tag = "hashgen_dq" if dq else "hashgen"
        put(f"{tag}.weight", q)
        packed = st.as_dict(packed=True)
        put(f"{tag}.absmax", packed["absmax"])
        if dq:
            put(f"{tag}.nested_absmax", packed["nested_absmax"])
        with open(os.path.join(OUT, f"{tag}.quant_state.json"), "wb") as f:
            f.write(bytes(packed["quant_state.bitsandbytes__nf4"].tolist()))
        meta["cases"][tag] = [256, 512]

    # torch.mean of a 100000-element float32 vector generated from its index (as above, without
    # the block scale), under 1, 2, 3, 4, 8 and 9 torch threads: from 32768 elements on torch
    # splits the sum over its threads and the last bits depend on how many.
    n = 100000
    i = np.arange(n, dtype=np.uint64)
    v = torch.from_numpy((((i * np.uint64(2654435761)) % np.uint64(2**32)).astype(np.float32) * np.float32(2.0**-32)).astype(np.float32))
    saved = torch.get_num_threads()
    means = []
    for th in (1, 2, 3, 4, 8, 9):
        torch.set_num_threads(th)
        means.append(v.mean().item())
    torch.set_num_threads(saved)
    put("mean_threads", torch.tensor(means, dtype=torch.float32))

    # The 8-bit blockwise quantization that double quantization uses, on its own: exact midpoints
    # of the dynamic map and values just beside them (where bitsandbytes' 65536-step table decides),
    # random blocks of several scales, an all-zero block and a short last block of 13.
    m = F.create_dynamic_map()
    mids = ((m[:-1] + m[1:]) / 2).tolist()
    b0 = [1.0] + mids
    b1 = [-1.0] + [v * (1 + 3e-5) for v in mids]
    b2 = [1.0] + [v * (1 - 3e-5) for v in mids]
    rnd = (torch.randn(5 * 256, generator=g) * torch.tensor([0.01, 1.0, 300.0, 1e-4, 0.5]).repeat_interleave(256)).tolist()
    vals = b0 + b1 + b2 + rnd + [0.0] * 256 + torch.randn(13, generator=g).tolist()
    v = torch.tensor(vals, dtype=torch.float32)
    q, st = F.quantize_blockwise(v, code=m, blocksize=256)
    put("blockwise8.input", v)
    put("blockwise8.q", q)
    put("blockwise8.absmax", st.absmax)
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
