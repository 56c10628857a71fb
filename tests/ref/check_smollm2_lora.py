"""A LoRA run on the real SmolLM2-135M-Instruct GGUF base, checked by the Python stack (make check-compat,
when `make model` has fetched the file; never part of make test).

    python tests/ref/check_smollm2_lora.py BUILD_DIR SMOLLM2.gguf RUN_DIR

RUN_DIR is an `autoneg train --base SMOLLM2.gguf --method lora` run with evaluations (eval.every):
  - its held-out loss at the end is below the one at step 0 (metrics.jsonl): the run learned;
  - transformers loads the same GGUF (dequantized, float64) and PEFT the run's adapter (RUN_DIR/final)
    onto it; the mean next-token NLL of a text, on autoneg's own token ids (transformers' GGUF loader
    lacks SmolLM2's digit split, see docs/tokenizers.md), equals `autoneg perplexity --model SMOLLM2.gguf
    --adapter RUN_DIR/final` to 1e-4 relative (both compute from the same dequantized Q4_1 weights;
    autoneg in float32: the gap is float32 rounding over 30 layers, measured ~1e-6), and differs from
    the base's (the adapter is not a no-op);
  - `autoneg export --adapter RUN_DIR/final --base SMOLLM2.gguf` writes a llama.cpp LoRA GGUF that the
    gguf package reads: general.type adapter, adapter.type lora, adapter.lora.alpha, and for each PEFT
    tensor a .lora_a / .lora_b pair with llama.cpp's shapes.
"""
import json
import os
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
import torch
from transformers import AutoModelForCausalLM

TEXT = "cinematic photo of a husky with heterochromia, 35mm, film grain. Negative prompt: blurry, lowres, watermark"


def run(build, *args):
    out = subprocess.run([os.path.join(build, "autoneg"), *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"autoneg {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    build, gguf_path, run_dir = sys.argv[1:]
    adapter = os.path.join(run_dir, "final")
    ok = True
    evals = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if '"eval_loss"' in l]
    first, last = evals[0], evals[-1]
    print(f"held-out loss: step {first['step']} {first['eval_loss']:.4f} -> step {last['step']} {last['eval_loss']:.4f}")
    ok &= last["eval_loss"] < first["eval_loss"]

    text_path = os.path.join(run_dir, "check_text.txt")
    with open(text_path, "w") as f:
        f.write(TEXT)
    ids = [int(x) for x in run(build, "tokenize", "--tokenizer", gguf_path, "--file", text_path).split()]
    fields = dict(kv.split("=") for kv in run(build, "perplexity", "--model", gguf_path, "--adapter", adapter,
                                                "--file", text_path).split())
    if int(fields["tokens"]) != len(ids):
        print(f"autoneg scored {fields['tokens']} tokens; its tokenizer gives {len(ids)}")
        ok = False
    from peft import PeftModel

    d, name = os.path.split(os.path.abspath(gguf_path))
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float64).eval()
    x = torch.tensor([ids])
    with torch.no_grad():
        base_nll = torch.nn.functional.cross_entropy(model(input_ids=x).logits[0][:-1], x[0, 1:]).item()
        peft = PeftModel.from_pretrained(model, adapter).eval()
        nll = torch.nn.functional.cross_entropy(peft(input_ids=x).logits[0][:-1], x[0, 1:]).item()
    an_nll = float(fields["nll"])
    rel = abs(nll - an_nll) / abs(nll)
    print(f"SmolLM2 + adapter: PEFT nll {nll:.6f}, autoneg {an_nll:.6f} (rel {rel:.2e}); base alone {base_nll:.6f}")
    ok &= rel < 1e-4 and abs(nll - base_nll) > 1e-3

    import gguf
    from safetensors import safe_open

    out = os.path.join(run_dir, "adapter.gguf")
    run(build, "export", "--adapter", adapter, "--base", gguf_path, "--out", out)
    r = gguf.GGUFReader(out)
    kv = {f.name: f for f in r.fields.values()}
    s = lambda k: bytes(kv[k].parts[kv[k].data[0]]).decode()
    ok &= s("general.type") == "adapter" and s("adapter.type") == "lora"
    alpha = float(kv["adapter.lora.alpha"].parts[kv["adapter.lora.alpha"].data[0]][0])
    cfg = json.load(open(os.path.join(adapter, "adapter_config.json")))
    ok &= abs(alpha - cfg["lora_alpha"]) < 1e-6
    tensors = {t.name: t for t in r.tensors}
    with safe_open(os.path.join(adapter, "adapter_model.safetensors"), "pt") as st:
        n_peft = sum(1 for k in st.keys() if "lora_A" in k)
    shapes_ok = all(tensors[n].shape[1] == tensors[n.replace("lora_a", "lora_b")].shape[0]
                    for n in tensors if n.endswith(".lora_a"))
    print(f"adapter.gguf: {len(tensors)} tensors for {n_peft} PEFT modules, alpha {alpha}, ranks consistent {shapes_ok}")
    ok &= len(tensors) == 2 * n_peft and shapes_ok
    print("check_smollm2_lora: " + ("ok" if ok else "FAILED"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
