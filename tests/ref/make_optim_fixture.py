"""Makes tests/ref/optim_torch.txt: what torch.optim.AdamW and torch.nn.utils.clip_grad_norm_ do to a
mix of matrices and vectors over several steps, for tests/test_optim.c (the optimizer of
train/optim.h, the path `autoneg train` steps through). Run with the reference environment:

    /work/venv/bin/python tests/ref/make_optim_fixture.py

The parameters are split into two groups as Hugging Face Trainer splits them (and as autoneg's
decay rule does): tensors of 2 or more dimensions with weight decay, 1-D tensors (norm weights,
biases) without. Each step clips the global gradient norm to 1 first; the gradients are scaled so that
some steps are clipped and some are not. The starting values and gradients are float32 numbers (what
the C side holds, exactly); the reference then runs in float64, so it carries no float32 rounding of
its own.

Format: one record per line, "name count v1 v2 ...", values printed exactly (%.17g).
"""
import os

import torch

torch.manual_seed(4321)
lines = [f"# made by tests/ref/make_optim_fixture.py with torch {torch.__version__}"]


def put(name, t):
    vals = t.detach().reshape(-1).tolist()
    lines.append(name + " " + str(len(vals)) + " " + " ".join("%.17g" % v for v in vals))


# name, shape: two matrices (a linear weight, an embedding) and two vectors (a bias, a norm weight)
TENSORS = [("w", (4, 6)), ("b", (6,)), ("e", (5, 3)), ("n", (7,))]
STEPS = 6
LR, B1, B2, EPS, WD, CLIP = 1e-2, 0.9, 0.999, 1e-8, 0.1, 1.0
# global gradient scale per step: the norm lands above CLIP (clipped) in some steps, below in others
SCALE = [3.0, 0.25, 5.0, 1.5, 0.3, 2.0]

params = [torch.nn.Parameter(torch.randn(shape).double()) for _, shape in TENSORS]
put("hparams", torch.tensor([LR, B1, B2, EPS, WD, CLIP, STEPS], dtype=torch.float64))
for (name, shape), p in zip(TENSORS, params):
    put(f"shape_{name}", torch.tensor(shape, dtype=torch.float64))
    put(f"p0_{name}", p)
groups = [{"params": [p for p in params if p.dim() >= 2]},
          {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
opt = torch.optim.AdamW(groups, lr=LR, betas=(B1, B2), eps=EPS, weight_decay=WD, foreach=False)
norms = []
for s in range(STEPS):
    opt.zero_grad()
    for (name, shape), p in zip(TENSORS, params):
        # entries spanning 1e-3..1 so the moments span several magnitudes; float32 numbers
        g = torch.randn(shape) * 10.0 ** torch.randint(-3, 1, shape).float() * SCALE[s] / 4.0
        p.grad = g.double()
        put(f"g{s + 1}_{name}", g)
    norms.append(float(torch.nn.utils.clip_grad_norm_(params, CLIP)))
    opt.step()
    for (name, _), p in zip(TENSORS, params):
        put(f"p{s + 1}_{name}", p)
put("norms", torch.tensor(norms, dtype=torch.float64))
for (name, _), p in zip(TENSORS, params):
    put(f"m_{name}", opt.state[p]["exp_avg"])
    put(f"v_{name}", opt.state[p]["exp_avg_sq"])
print("pre-clip norms:", ["%.4f" % n for n in norms])

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optim_torch.txt")
with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
print("wrote", out)
