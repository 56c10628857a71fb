"""Makes the GGUF fixtures in tests/ref/gguf/ with the gguf package (llama.cpp's gguf-py, from PyPI).

Run: /work/venv/bin/python tests/ref/make_gguf_fixtures.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]

Read by tests/test_gguf.c. Files:
  TYPE.gguf, TYPE.expected.safetensors   for TYPE in f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q5_k q6_k:
      a GGUF file (GGUFWriter) with tensor "quantized" (random float32 data of numpy shape (2, 256)
      put through gguf.quants.quantize; only for types it can quantize) and tensor "raw" (numpy shape
      (2, 1, 256): random block bytes, every scale field a finite f16), and, in the .safetensors,
      float32 tensors of the same names: gguf.quants.dequantize of the bytes GGUFReader reads back
      (the numpy mirror of ggml's reference dequantization; the C test compares bit for bit).
      q8_0.gguf also carries general.name and an i32 array: tests/test_gguf.c corrupts copies of it.
  meta.gguf      every metadata value type, arrays of each, arrays of strings, nested arrays,
                 general.alignment = 64 and three small F32 tensors (values 0, 1, 2, ... of numel)
  meta_v2.gguf   the same bytes with version 2 (v2 and v3 differ only in allowing big-endian files)
  smollm2_expected.safetensors   (only when the SmolLM2 file is given) for a few tensors of the real
      model: NAME.idx (int64 flat indices, ggml order) and NAME.val (float32 from gguf's dequantize)
The values meta.gguf holds are spelled out in test_gguf.c (test_metadata_every_type).
"""
import os
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter, GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gguf")
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(13)

QUANTIZABLE = {T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1}
# byte offsets of the f16 scale fields in one block: kept finite so values are numbers
SCALES = {T.Q8_0: [0], T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q4_K: [0, 2],
          T.Q5_K: [0, 2], T.Q6_K: [208]}


def source_data(qtype):
    x = rng.standard_normal((2, 256)).astype(np.float32) * 0.1
    x[0, 3] = 1.5  # an outlier, as real weights have
    x[1, 40:72] = 0  # an all-zero block (d = 0)
    if qtype in (T.F32, T.F16, T.BF16):
        x[0, :8] = [np.inf, -np.inf, np.nan, -0.0, 1e-7, -3e-8, 65504, 1e-40]
    return x


def raw_blocks(qtype):
    block, size = GGML_QUANT_SIZES[qtype]
    n = 2 * 256 // block
    b = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    for off in SCALES.get(qtype, []):
        d = (rng.standard_normal(n) * 0.01).astype(np.float16)
        b[:, off:off + 2] = d.view(np.uint8).reshape(n, 2)
    return b.reshape(2, 1, -1)


def write_type(qtype):
    name = qtype.name.lower()
    path = os.path.join(OUT, name + ".gguf")
    w = GGUFWriter(path, "llama")
    if qtype == T.Q8_0:
        w.add_name("bad-input base")
        w.add_array("test.ints", [1, 2, 3, 4])
    if qtype in QUANTIZABLE:
        q = quantize(source_data(qtype), qtype)
        if qtype == T.F32:
            w.add_tensor("quantized", q)
        elif qtype == T.F16:
            w.add_tensor("quantized", q)
        else:
            w.add_tensor("quantized", q, raw_dtype=qtype)
    raw = raw_blocks(qtype)
    if qtype == T.F32:
        w.add_tensor("raw", raw.view(np.float32))
    elif qtype == T.F16:
        w.add_tensor("raw", raw.view(np.float16))
    else:
        w.add_tensor("raw", raw, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    expected = {}
    for t in GGUFReader(path).tensors:
        assert t.tensor_type == qtype, (t.name, t.tensor_type)
        data = np.ascontiguousarray(t.data).view(np.uint8).reshape(-1)
        expected[t.name] = np.ascontiguousarray(dequantize(data, qtype).astype(np.float32).reshape(-1))
    save_file(expected, os.path.join(OUT, name + ".expected.safetensors"))


def write_meta():
    path = os.path.join(OUT, "meta.gguf")
    w = GGUFWriter(path, "llama")
    w.add_custom_alignment(64)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 0.1)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "naïve ✓")
    w.add_uint64("t.u64", 18000000000000000000)
    w.add_int64("t.i64", -9000000000000000000)
    w.add_float64("t.f64", 2.718281828459045)
    w.add_key_value("t.empty", "", GGUFValueType.STRING)  # add_string skips empty strings
    for vt, vals in [(GGUFValueType.UINT8, [0, 255]), (GGUFValueType.INT8, [-128, 127]),
                     (GGUFValueType.UINT16, [65535]), (GGUFValueType.INT16, [-32768, 7]),
                     (GGUFValueType.UINT32, [1, 2, 4294967295]), (GGUFValueType.INT32, [-1, 0, 1]),
                     (GGUFValueType.FLOAT32, [1.5, -0.25]), (GGUFValueType.BOOL, [True, False, True]),
                     (GGUFValueType.UINT64, [2**64 - 1]), (GGUFValueType.INT64, [-(2**63)]),
                     (GGUFValueType.FLOAT64, [0.1, 1e300])]:
        w.add_key_value("a." + vt.name.lower(), vals, GGUFValueType.ARRAY, sub_type=vt)
    w.add_array("a.string", ["a", "", "三", "longer string"])
    w.add_key_value("a.nested", [[1, 2], [3], [4, 5, 6]], GGUFValueType.ARRAY, sub_type=GGUFValueType.ARRAY)
    w.add_key_value("a.nested_str", [["x", "yy"], ["zzz"]], GGUFValueType.ARRAY, sub_type=GGUFValueType.ARRAY)
    w.add_key_value("a.deep", [[[1], [2, 3]], [[4]]], GGUFValueType.ARRAY, sub_type=GGUFValueType.ARRAY)
    w.add_tensor("vec", np.arange(5, dtype=np.float32))
    w.add_tensor("mat", np.arange(6, dtype=np.float32).reshape(3, 2))
    w.add_tensor("four_d", np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    b = bytearray(open(path, "rb").read())
    assert b[4:8] == (3).to_bytes(4, "little")
    b[4:8] = (2).to_bytes(4, "little")
    open(os.path.join(OUT, "meta_v2.gguf"), "wb").write(bytes(b))


def write_smollm2(model):
    r = GGUFReader(model)
    want = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_norm.weight", "blk.17.ffn_gate.weight",
            "blk.29.ffn_down.weight", "output_norm.weight"]
    out = {}
    pick = np.random.default_rng(135)
    for t in r.tensors:
        if t.name not in want:
            continue
        vals = dequantize(np.ascontiguousarray(t.data).view(np.uint8).reshape(-1) if t.tensor_type != T.F32
                          else np.ascontiguousarray(t.data), t.tensor_type).astype(np.float32).reshape(-1)
        assert vals.size == int(np.prod(t.shape)), t.name
        idx = np.concatenate([np.arange(min(64, vals.size)), pick.integers(0, vals.size, 64), [vals.size - 1]])
        out[t.name + ".idx"] = idx.astype(np.int64)
        out[t.name + ".val"] = vals[idx]
    assert len(out) == 2 * len(want), sorted(out)
    save_file(out, os.path.join(OUT, "smollm2_expected.safetensors"))


for qt in [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K, T.Q5_K, T.Q6_K]:
    write_type(qt)
write_meta()
if len(sys.argv) > 1:
    write_smollm2(sys.argv[1])
print("wrote", OUT)
