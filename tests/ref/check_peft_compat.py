"""Checks that autoneg's LoRA adapters and merged models load in PEFT and transformers as they are
(for `make check-compat`; needs the reference venv, never part of `make test`).

    make && HF_HUB_OFFLINE=1 /work/venv/bin/python tests/ref/check_peft_compat.py [BUILD_DIR] [--adapter DIR]...

For each tiny model of tests/ref/models/ (GPT-2 with Conv1D layers, Llama with its head adapted, Qwen2 on
q/v only, a Llama with every bias and an adapted tied head, InternLM2 in plain torch), the helper
tests/ref/lora_tool.c attaches a fresh adapter, trains it 5 AdamW steps (so B is not zero) and saves it
with an_lora_save; then
  - peft.PeftModel.from_pretrained(base, adapter_dir) loads the folder unchanged and gives autoneg's logits;
  - `autoneg merge` writes a merged folder that transformers' from_pretrained loads, giving the same logits
    (not for the tied head, whose merge autoneg refuses: it would change the embedding too).
Each --adapter DIR (an autoneg adapter of a Hugging Face model, its base read from adapter_config.json)
gets the PEFT check as well. Tolerance: 1e-4 of the largest |logit| (float32 on both sides, sums in
different orders). Exits non-zero on any failure.
"""
import json
import os
import subprocess
import sys
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
import peft  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "ref"))
import make_model_fixtures as mm  # noqa: E402

IDS = [1, 5, 9, 3, 44, 2, 17, 80, 33, 6]
CASES = [
    ("gpt2", ["c_attn", "c_proj", "c_fc"]),
    ("llama", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]),
    ("qwen2", ["q_proj", "v_proj"]),
    ("llama-bias", ["all-linear", "lm_head"]),
    ("internlm2", ["wqkv", "wo", "w1", "w2", "w3", "output"]),
]


def ldlibs():
    r = subprocess.run(["make", "--no-print-directory", "-s", "-f", "Makefile", "-f", "-", "print-ldlibs"], cwd=ROOT,
                       input="print-ldlibs: ; @echo $(LDLIBS)\n", capture_output=True, text=True, check=True)
    return r.stdout.split()


def load_base(model_dir):
    if os.path.basename(model_dir.rstrip("/")) == "internlm2":
        with open(os.path.join(model_dir, "config.json")) as f:
            c = json.load(f)
        m = mm.InternLM2(c).float().eval()
        m.load_state_dict(load_file(os.path.join(model_dir, "model.safetensors")))
        # PeftModelForCausalLM (task_type CAUSAL_LM) keeps this hook of a transformers model; the real
        # InternLM2 has one, the plain-torch stand-in does not generate
        m.prepare_inputs_for_generation = lambda *a, **k: None
        # the LoRA layers are injected into the module itself; PeftModel.forward wants a transformers config
        return m, lambda model, ids: (model.get_base_model() if isinstance(model, peft.PeftModel) else model)(ids)
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return m, lambda model, ids: model(input_ids=ids).logits


def c_logits(tool, model_dir, adapter, work):
    out = os.path.join(work, "logits.f32")
    subprocess.run([tool, "logits", model_dir, adapter, out] + [str(i) for i in IDS], check=True)
    return torch.from_numpy(np.fromfile(out, dtype=np.float32)).reshape(len(IDS), -1)


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


def check_peft(tool, model_dir, adapter, work, label):
    ref = c_logits(tool, model_dir, adapter, work)
    base, fwd = load_base(model_dir)
    pm = peft.PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        got = fwd(pm, torch.tensor([IDS]))[0]
    err = rel_err(got, ref)
    ok = err < 1e-4
    print(f"{'ok ' if ok else 'BAD'} {label}: PEFT loads the adapter, logits rel err {err:.2e}")
    return ok, ref


def main():
    args = sys.argv[1:]
    extra = []
    while "--adapter" in args:
        i = args.index("--adapter")
        extra.append(args[i + 1])
        del args[i:i + 2]
    build = args[0] if args else os.path.join(ROOT, "build")
    work = tempfile.mkdtemp(prefix="autoneg-peft-")
    tool = os.path.join(work, "lora_tool")
    subprocess.run(["cc", "-std=c11", "-D_GNU_SOURCE", "-I", ROOT, os.path.join(ROOT, "tests/ref/lora_tool.c"),
                    os.path.join(build, "libautoneg.a")] + ldlibs() + ["-o", tool], check=True)
    autoneg = os.path.join(build, "autoneg")
    failed = 0
    for name, targets in CASES:
        model_dir = os.path.join(ROOT, "tests", "ref", "models", name)
        adapter = os.path.join(work, name + "-adapter")
        subprocess.run([tool, "train", model_dir, adapter] + targets, check=True)
        ok, ref = check_peft(tool, model_dir, adapter, work, name)
        failed += not ok
        if name in ("llama-bias", "internlm2"):  # tied head: merge refused; InternLM2: not a transformers model
            continue
        merged = os.path.join(work, name + "-merged")
        subprocess.run([autoneg, "merge", "--model", model_dir, "--adapter", adapter, "--out", merged], check=True)
        m, fwd = load_base(merged)
        with torch.no_grad():
            got = fwd(m, torch.tensor([IDS]))[0]
        err = rel_err(got, ref)
        ok = err < 1e-4
        failed += not ok
        print(f"{'ok ' if ok else 'BAD'} {name}: transformers loads the merged folder, logits rel err {err:.2e}")
    for adapter in extra:
        with open(os.path.join(adapter, "adapter_config.json")) as f:
            base = json.load(f)["base_model_name_or_path"]
        ok, _ = check_peft(tool, os.path.join(ROOT, base) if not os.path.isabs(base) else base, adapter, work, adapter)
        failed += not ok
    print("all good" if not failed else f"{failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
