"""llama.cpp loads what `autoneg export` writes and computes what autoneg computes (make check-compat,
with the SmolLM2 GGUF fetched and llama-cpp-python importable; never part of make test).

    python tests/ref/check_llamacpp.py BUILD_DIR SMOLLM2.gguf RUN_DIR

RUN_DIR is an `autoneg train --base SMOLLM2.gguf --method lora` run (its adapter in RUN_DIR/final). The
script exports, into RUN_DIR/llamacpp:
  - the base as f32, q8_0 and q4_0 GGUFs (`autoneg export --model SMOLLM2.gguf --type T`),
  - the base with the adapter merged, as f32 (`--adapter RUN_DIR/final`),
  - the adapter alone in llama.cpp's LoRA format (`autoneg export --adapter RUN_DIR/final --base ...`),
and for each one, on a fixed ChatML prompt:
  - the token ids: llama.cpp's tokenizer (special tokens parsed, no BOS, as SmolLM2's GGUF says) gives
    as many as `autoneg perplexity` scores, and then the same logits (ids differing would not);
  - the next-token logits of every position: autoneg's (`perplexity --logits`, its KV-cache decoding
    path) against llama.cpp's (logits_all, KV cache in f32 so that llama.cpp does not round keys and
    values to f16); the distance of two logit sets is, per position, max |difference| over the row's
    largest |logit|:
      f32 exports: at most 1e-3 at every position (the issue's bound; both compute in float32 from the
        same numbers, so what is left is summation order over 30 layers; measured ~2e-6);
      q8_0 and q4_0: both programs read the same blocks but round every activation row to 8 bits
        (q8_0 blocks) before their integer dot products. Rounding is not continuous: a difference in
        the last bit of one activation (summation order) can flip a rounding, a change of 1/127 of its
        block's largest value, as large as the rounding error itself; so two correct programs differ
        by the size of that rounding noise (measured ~0.03 of the row's largest logit per position,
        up to ~0.1), not by float rounding. The reference is therefore the same weights without
        activation rounding: the file dequantized to f32 (`autoneg export --type f32` of the
        quantized file) run by llama.cpp. Required: autoneg's mean distance from it at most 1.5x
        llama.cpp's own, and autoneg's from llama.cpp's at most 2.5x (two independent draws of the
        noise; measured 0.95-1.17x and 0.92-1.22x). A wrong block layout or scale gives distances of O(1);
  - greedy decoding: the first 32 tokens llama.cpp picks (argmax, stopping at an end-of-generation
    token) detokenise to the text `autoneg generate --raw --temperature 0` prints, for f32 and for the
    adapter; for q8_0 / q4_0 the rounding noise above may flip a near tie, so there whether the
    texts agree is printed, not required;
  - every file reads in the gguf package (GGUFReader): architecture llama, general.type, the tensor
    count (272 for the model: 30 blocks x 9 + the embedding and the final norm; for the adapter, the
    PEFT file's lora_A / lora_B count);
  - the adapter: llama.cpp applies RUN_DIR/llamacpp/adapter.gguf over the f32 base and matches
    autoneg's base + PEFT adapter (to 1e-3), and the merged export (to 1e-3): the adapter is not a no-op
    (it moves the logits by far more than the tolerance).
llama-cpp-python builds llama.cpp from source (pip install llama-cpp-python); a llama.cpp built
already can serve: LLAMA_CPP_LIB_PATH=<dir with libllama.so> with the package's Python sources on
PYTHONPATH.
"""
import os
import subprocess
import sys

import numpy as np

PROMPT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
          "<|im_start|>user\nWrite a negative prompt for: husky with heterochromia, snow, golden hour<|im_end|>\n"
          "<|im_start|>assistant\n")
GREEDY = 32
F32_TOL = 1e-3
QUANT_OWN = 1.5    # autoneg's distance from the unrounded product / llama.cpp's
QUANT_PEER = 2.5   # autoneg's distance from llama.cpp / llama.cpp's from the unrounded product


def autoneg(build, *args):
    out = subprocess.run([os.path.join(build, "autoneg"), *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"autoneg {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def autoneg_logits(build, model, adapter, text_path, out_path):
    args = ["perplexity", "--model", model, "--file", text_path, "--logits", out_path]
    if adapter:
        args += ["--adapter", adapter]
    n = int(dict(kv.split("=") for kv in autoneg(build, *args).split())["tokens"])
    return np.fromfile(out_path, dtype=np.float32).reshape(n, -1)


def autoneg_greedy(build, model, adapter):
    args = ["generate", "--model", model, "--raw", "--temperature", "0", "--max-tokens", str(GREEDY),
            "--prompt", PROMPT]
    if adapter:
        args += ["--adapter", adapter]
    return autoneg(build, *args).strip()


def llama_run(path, lora=None):
    """llama.cpp's token ids of PROMPT, its logits for each, and its greedy continuation (ids, text)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=path, lora_path=lora, n_ctx=512, n_batch=512, n_threads=2,
                          logits_all=True, type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32,
                          flash_attn=False, verbose=False)
    ids = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
    gen = []
    nxt = int(np.argmax(logits[-1]))
    while len(gen) < GREEDY and not llama_cpp.llama_vocab_is_eog(llm._model.vocab, nxt):
        gen.append(nxt)
        llm.eval([nxt])
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    text = llm.detokenize(gen).decode("utf-8", errors="replace")
    del llm
    return ids, logits, gen, text


def row_diffs(a, b):
    """per position: max |a - b| / max |b|; a shape mismatch or a NaN anywhere gives inf (NaN-safe)."""
    if a.shape != b.shape:
        return np.array([np.inf])
    d = np.abs(a.astype(np.float64) - b.astype(np.float64)).max(axis=1) / np.abs(b).max(axis=1)
    return d if np.all(np.isfinite(d)) else np.array([np.inf])


def gguf_reads(models, lora, adapter_dir):
    """The gguf package (llama.cpp's gguf-py) reads every export: its architecture, type and tensors."""
    from gguf import GGUFReader
    from safetensors import safe_open

    with safe_open(os.path.join(adapter_dir, "adapter_model.safetensors"), "np") as f:
        peft_tensors = len(list(f.keys()))  # a lora_A and a lora_B per adapted weight, as the GGUF

    ok = True
    for path in models + [lora]:
        r = GGUFReader(path)
        field = lambda k: bytes(r.fields[k].parts[r.fields[k].data[0]]).decode() if k in r.fields else None
        want = "adapter" if path == lora else "model"
        good = field("general.architecture") == "llama" and (field("general.type") or "model") == want
        good &= len(r.tensors) == (peft_tensors if path == lora else 272) and all(t.n_elements > 0 for t in r.tensors)
        print(f"gguf reads {os.path.basename(path)}: {field('general.architecture')}, {want}, "
              f"{len(r.tensors)} tensors {'ok' if good else 'FAILED'}")
        ok &= good
    return ok


def greedy_compare(build, model, adapter, llama_text):
    """autoneg's greedy text against llama.cpp's: (same, equal leading characters, autoneg's, llama.cpp's)."""
    atext = autoneg_greedy(build, model, adapter)
    want = " ".join(llama_text.split("\n")).strip()  # generate prints one line per output
    lead = 0
    while lead < min(len(atext), len(want)) and atext[lead] == want[lead]:
        lead += 1
    return atext == want, lead, atext, want


def rel_diff(a, b):
    return float(row_diffs(a, b).max())


def mean_diff(a, b):
    return float(row_diffs(a, b).mean())


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    build, smol, run_dir = sys.argv[1:]
    adapter = os.path.join(run_dir, "final")
    work = os.path.join(run_dir, "llamacpp")
    os.makedirs(work, exist_ok=True)
    text_path = os.path.join(work, "prompt.txt")
    with open(text_path, "w") as f:
        f.write(PROMPT)
    files = {}
    for t in ("f32", "q8_0", "q4_0"):
        files[t] = os.path.join(work, f"base.{t}.gguf")
        autoneg(build, "export", "--model", smol, "--out", files[t], "--type", t)
    files["merged"] = os.path.join(work, "merged.f32.gguf")
    autoneg(build, "export", "--model", smol, "--adapter", adapter, "--out", files["merged"], "--type", "f32")
    lora_gguf = os.path.join(work, "adapter.gguf")
    autoneg(build, "export", "--adapter", adapter, "--base", smol, "--out", lora_gguf)

    ok = True
    results = {}
    ok &= gguf_reads([files[k] for k in ("f32", "q8_0", "q4_0", "merged")], lora_gguf, adapter)
    cases = [  # name, model, llama.cpp adapter, autoneg adapter
        ("f32", files["f32"], None, None),
        ("merged f32", files["merged"], None, None),
        ("adapter over f32", files["f32"], lora_gguf, adapter),
    ]
    for name, model, llora, aadapter in cases:
        ids, ref, gen, ltext = llama_run(model, llora)
        mine = autoneg_logits(build, model, aadapter, text_path, os.path.join(work, "logits.bin"))
        d = rel_diff(mine, ref)
        same, lead, atext, want = greedy_compare(build, model, aadapter, ltext)
        passed = d <= F32_TOL and same
        ok &= passed
        results[name] = mine
        print(f"{name:17s} {len(ids)} tokens: logits max distance {d:.2e} (at most {F32_TOL:g}); greedy "
              f"{'the same text' if same else f'first {lead} characters equal'} ({len(gen)} tokens) "
              f"{'ok' if passed else 'FAILED'}")
        if not same:
            print(f"    llama.cpp: {want!r}\n    autoneg:   {atext!r}")
    for t in ("q8_0", "q4_0"):
        unrounded = os.path.join(work, f"dequantized.{t}.gguf")
        autoneg(build, "export", "--model", files[t], "--out", unrounded, "--type", "f32")
        _, exact, _, _ = llama_run(unrounded)
        ids, ref, gen, ltext = llama_run(files[t])
        mine = autoneg_logits(build, files[t], None, text_path, os.path.join(work, "logits.bin"))
        own, peer, theirs = mean_diff(mine, exact), mean_diff(mine, ref), mean_diff(ref, exact)
        same, lead, _, _ = greedy_compare(build, files[t], None, ltext)
        passed = own <= QUANT_OWN * theirs and peer <= QUANT_PEER * theirs
        ok &= passed
        print(f"{t:17s} {len(ids)} tokens: mean distance from the unrounded product: autoneg {own:.3f}, "
              f"llama.cpp {theirs:.3f} ({own / theirs:.2f}x, at most {QUANT_OWN:g}x); autoneg from llama.cpp "
              f"{peer:.3f} ({peer / theirs:.2f}x, at most {QUANT_PEER:g}x); greedy "
              f"{'the same text' if same else f'first {lead} characters equal'} {'ok' if passed else 'FAILED'}")
    moved = rel_diff(results["adapter over f32"], results["f32"])
    print(f"the adapter moves the logits by {moved:.2e} of the row's largest (must exceed {10 * F32_TOL:g})")
    ok &= moved > 10 * F32_TOL
    print("llama.cpp: all passed" if ok else "llama.cpp: FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
