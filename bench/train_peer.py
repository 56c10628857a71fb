"""PyTorch peer for `autoneg bench train`: full fine-tuning of a randomly initialised preset, fp32 on
the CPU, same model shape, batch, sequence and thread count; with --lora, PEFT's LoRA instead (rank
--rank, alpha 2 x rank, every linear layer but the head, as `autoneg bench train --method lora`).
With --device cuda: the model on the GPU, scaled_dot_product_attention, the fused AdamW, and with
--bf16 bf16 autocast (what autoneg's --device cuda-bf16 does to its matrix products).
Prints one JSON line.

Run through bench/train.sh (CPU) or bench/train_gpu.sh (GPU), which measure autoneg in the same run
and print the ratio."""
import argparse
import contextlib
import json
import statistics
import sys
import time

import torch
import transformers


def build(preset_path, attn=None):
    """attn: the attention implementation to ask transformers for (None: its default)."""
    cfg = json.load(open(preset_path))
    arch = cfg["architectures"][0]
    keys = {k: v for k, v in cfg.items() if k not in ("architectures", "torch_dtype")}
    if attn:
        keys["attn_implementation"] = attn
    if arch == "GPT2LMHeadModel":
        conf = transformers.GPT2Config(**keys)
        model = transformers.GPT2LMHeadModel(conf)
    elif arch == "LlamaForCausalLM":
        conf = transformers.LlamaConfig(**keys)
        model = transformers.LlamaForCausalLM(conf)
    else:
        sys.exit(f"train_peer.py: {preset_path}: no peer for {arch}")
    return model.float(), cfg["vocab_size"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", required=True)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lora", action="store_true", help="train a PEFT LoRA adapter on the frozen model")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast around forward and loss (GPU)")
    ap.add_argument("--profile", action="store_true",
                    help="time the steps under torch.profiler and report the share of its matrix products "
                         "(aten::mm, addmm, bmm); the profiler slows the step, so never for the ratio runs")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    gpu = a.device == "cuda"
    model, vocab = build(a.preset, "sdpa" if gpu else None)
    model = model.to(a.device)
    if a.lora:
        import peft
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "c_attn", "c_proj", "c_fc"]
        names = {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        cfg = peft.LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=a.dropout,
                              target_modules=[t for t in targets if t in names])
        model = peft.get_peft_model(model, cfg)
    model.train()
    # The same schedule autoneg uses: no dropout, so both sides do the same arithmetic.
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.0, **({"fused": True} if gpu else {"foreach": True}))
    ids = torch.randint(0, vocab, (a.batch, a.seq)).to(a.device)
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if a.bf16 else contextlib.nullcontext
    times = []
    prof = None
    for step in range(a.steps + 1):  # step 0 warms up allocators and caches
        if step == 1 and a.profile:
            prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            prof.__enter__()
        sync()
        t0 = time.perf_counter()
        with autocast():
            out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        # autoneg's step clips the global gradient norm at 1.0, as fine-tuning recipes do (XTuner's
        # max_norm 1): the peer does the same work.
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        dt = time.perf_counter() - t0
        if step:
            times.append(dt)
    matmul = {}
    if prof:
        prof.__exit__(None, None, None)
        us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
        matmul = {"matmul_ms": us / 1e3 / a.steps, "matmul_share": us / 1e6 / sum(times)}
    med = statistics.median(times)
    cfg = torch.__config__.show()
    blas = "mkl" if "BLAS_INFO=mkl" in cfg or "USE_MKL=ON" in cfg else ("openblas" if "openblas" in cfg.lower() else "other")
    print(json.dumps({
        "peer": "pytorch+peft" if a.lora else "pytorch", "torch": torch.__version__, "blas": blas, "threads": a.threads,
        "device": torch.cuda.get_device_name() if gpu else "cpu", "precision": "bf16 autocast" if a.bf16 else "fp32",
        "step_ms_median": med * 1e3, "step_ms_min": min(times) * 1e3, "step_ms_max": max(times) * 1e3,
        "tokens_per_s": a.batch * a.seq / med, **matmul,
    }))


if __name__ == "__main__":
    main()
