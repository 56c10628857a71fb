"""Learning rates from PyTorch's own schedulers, for tests/test_schedule.c.

XTuner's recipe is LinearLR(start_factor) over the warmup, then CosineAnnealingLR(eta_min) over the
rest, chained with SequentialLR; the other cases swap the second scheduler for LinearLR (linear decay)
or ConstantLR(factor=1) (constant). lr[t] is the learning rate the optimizer uses at step t, i.e.
after t calls of scheduler.step().

    HF_HUB_OFFLINE=1 /work/venv/bin/python tests/ref/make_schedule_fixture.py
"""
import json
import os

import torch
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, SequentialLR

CASES = [
    # name, type, base_lr, start_factor, min_lr_ratio, warmup, total
    ("xtuner_100_w3", "cosine", 2e-4, 1e-5, 0.0, 3, 100),
    ("cosine_min_lr", "cosine", 1e-3, 0.01, 0.1, 10, 50),
    ("cosine_no_warmup", "cosine", 5e-4, 1e-5, 0.0, 0, 30),
    ("linear_decay", "linear", 2e-4, 1e-5, 0.1, 5, 40),
    ("constant", "constant", 1e-3, 0.5, 0.0, 4, 20),
    ("tiny_from_scratch", "cosine", 2e-3, 0.01, 0.1, 30, 600),
    ("xtuner_per_micro_batch", "cosine", 2e-4, 1e-5, 0.0, 9, 320),  # 20 steps x 16 micro-batches, 3%
]


def lrs(kind, base, sf, mr, warmup, total):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=base)
    rest = total - warmup
    if kind == "cosine":
        after = CosineAnnealingLR(opt, T_max=rest, eta_min=base * mr)
    elif kind == "linear":
        after = LinearLR(opt, start_factor=1.0, end_factor=mr, total_iters=rest)
    else:
        after = ConstantLR(opt, factor=1.0, total_iters=0)
    if warmup > 0:
        # SequentialLR resets the lr and re-runs the first scheduler's initial step
        warm = LinearLR(opt, start_factor=sf, end_factor=1.0, total_iters=warmup)
        sched = SequentialLR(opt, [warm, after], milestones=[warmup])
    else:
        sched = after
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def main():
    cases = []
    for name, kind, base, sf, mr, warmup, total in CASES:
        cases.append(dict(name=name, type=kind, base_lr=base, start_factor=sf, min_lr_ratio=mr,
                          warmup=warmup, total=total, lr=lrs(kind, base, sf, mr, warmup, total)))
    out = os.path.join(os.path.dirname(__file__), "schedule_lr.json")
    with open(out, "w") as f:
        json.dump(dict(torch=torch.__version__, cases=cases), f, indent=0)
        f.write("\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
