"""Checks that the model folder `autoneg train` writes (RUN/final) loads in Hugging Face transformers and
gives autoneg's numbers (for `make check-compat`; needs the reference venv, never part of `make test`).

    python tests/ref/check_train_output.py BUILD_DIR FINAL_DIR... [BASE_DIR+ADAPTER_DIR]...

For each model folder:
  - AutoTokenizer loads its tokenizer files and gives the ids `autoneg tokenize` gives for a sample
    text (the trained byte-level BPE of a run from scratch, or the base model's copied tokenizer);
  - AutoModelForCausalLM loads config.json + model.safetensors, and the mean next-token NLL of that
    text in float64 equals `autoneg perplexity` (float32 logits) to 1e-4 relative: one window, so the
    NLL is the mean of -log softmax(logits) over the same tokens, a check of every logit's row.
For each BASE+ADAPTER (the PEFT folder a LoRA run writes): PEFT's PeftModel.from_pretrained loads the
adapter onto the base model, and the NLL equals `autoneg perplexity --model BASE --adapter ADAPTER`
to 1e-4 relative; with the adapter the NLL must also differ from the base model's (the adapter
is not a no-op).
Exits non-zero on any failure.
"""
import os
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

# one line: autoneg tokenize prints the ids of each line of a file
TEXT = "cinematic photo of a husky with heterochromia, 35mm, film grain. Negative prompt: blurry, lowres, watermark"


def run(build, *args):
    out = subprocess.run([os.path.join(build, "autoneg"), *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"autoneg {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def check(build, folder, text_path):
    ok = True
    tok = AutoTokenizer.from_pretrained(folder)
    hf_ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    an_ids = [int(x) for x in run(build, "tokenize", "--tokenizer", folder, "--file", text_path).split()]
    if hf_ids != an_ids:
        print(f"{folder}: token ids differ:\n  transformers {hf_ids}\n  autoneg      {an_ids}")
        ok = False
    fields = dict(kv.split("=") for kv in run(build, "perplexity", "--model", folder, "--file", text_path).split())
    n = int(fields["tokens"])
    an_nll = float(fields["nll"])
    ids = tok(TEXT)["input_ids"]  # with BOS when the tokenizer's configuration adds it, as autoneg does
    if len(ids) != n:
        print(f"{folder}: autoneg scored {n} tokens, transformers has {len(ids)}")
        return False
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:])).item()
    rel = abs(nll - an_nll) / abs(nll)
    print(f"{folder}: {n} tokens, nll transformers {nll:.6f} autoneg {an_nll:.6f} (rel {rel:.2e})")
    return ok and rel < 1e-4


def check_adapter(build, base, adapter, text_path):
    from peft import PeftModel

    tok = AutoTokenizer.from_pretrained(base)
    ids = tok(TEXT)["input_ids"]
    fields = dict(kv.split("=") for kv in run(build, "perplexity", "--model", base, "--adapter", adapter,
                                                "--file", text_path).split())
    if int(fields["tokens"]) != len(ids):
        print(f"{adapter}: autoneg scored {fields['tokens']} tokens, transformers has {len(ids)}")
        return False
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float64).eval()
    x = torch.tensor([ids])
    with torch.no_grad():
        base_nll = torch.nn.functional.cross_entropy(model(input_ids=x).logits[0][:-1], x[0, 1:]).item()
        peft = PeftModel.from_pretrained(model, adapter).eval()
        nll = torch.nn.functional.cross_entropy(peft(input_ids=x).logits[0][:-1], x[0, 1:]).item()
    an_nll = float(fields["nll"])
    rel = abs(nll - an_nll) / abs(nll)
    print(f"{adapter}: PEFT nll {nll:.6f}, autoneg {an_nll:.6f} (rel {rel:.2e}); base alone {base_nll:.6f}")
    return rel < 1e-4 and abs(nll - base_nll) > 1e-3


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    build = sys.argv[1]
    text_path = os.path.join(os.path.dirname(os.path.abspath(sys.argv[2].split("+")[-1])), "check_text.txt")
    with open(text_path, "w") as f:
        f.write(TEXT)
    ok = all([check_adapter(build, *d.split("+"), text_path) if "+" in d else check(build, d, text_path)
              for d in sys.argv[2:]])
    print("check_train_output: " + ("ok" if ok else "FAILED"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
