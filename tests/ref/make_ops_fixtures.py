"""Makes tests/ref/ops_torch.txt: what PyTorch (and Hugging Face transformers) compute for a few ops,
for tests/test_ops.c to compare against. Run with the reference environment:

    HF_HUB_OFFLINE=1 /work/venv/bin/python tests/ref/make_ops_fixtures.py

Format: one record per line, "name count v1 v2 ...", float32 values printed exactly (%.9g).
"""
import os

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb
from transformers import LlamaConfig

torch.manual_seed(1234)
lines = [f"# made by tests/ref/make_ops_fixtures.py with torch {torch.__version__}"]


def put(name, t):
    vals = t.detach().reshape(-1).tolist()
    fmt = "%d" if t.dtype in (torch.int32, torch.int64) else "%.9g"
    lines.append(name + " " + str(len(vals)) + " " + " ".join(fmt % v for v in vals))


# ---- AdamW: 5 steps of torch.optim.AdamW (single-tensor path, float32) ----
n = 64
p0 = torch.randn(n)
grads = [torch.randn(n) * (10.0 ** torch.randint(-6, 1, (n,)).float()) for _ in range(5)]
lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-8, 0.1
param = torch.nn.Parameter(p0.clone())
opt = torch.optim.AdamW([param], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, foreach=False)
for g in grads:
    param.grad = g.clone()
    opt.step()
put("adamw_hparams", torch.tensor([lr, b1, b2, eps, wd], dtype=torch.float64))
put("adamw_p0", p0)
for i, g in enumerate(grads):
    put(f"adamw_g{i + 1}", g)
put("adamw_p5", param.data)
put("adamw_m5", opt.state[param]["exp_avg"])
put("adamw_v5", opt.state[param]["exp_avg_sq"])

# ---- RoPE at positions up to 4095 ----
pos = torch.tensor([0, 1, 100, 2047, 3000, 4095], dtype=torch.int32)
nh, hd = 2, 64
for theta in (10000.0, 500000.0):
    # Hugging Face rotate-half (float32 inv_freq and angles, as the model computes them)
    cfg = LlamaConfig(hidden_size=nh * hd, num_attention_heads=nh, rope_theta=theta, max_position_embeddings=8192)
    rot = LlamaRotaryEmbedding(cfg)
    x = torch.randn(1, len(pos), nh, hd)
    cos, sin = rot(x, pos[None].long())
    out, _ = apply_rotary_pos_emb(x, x, cos, sin, unsqueeze_dim=2)
    tag = "rope_hf_%d" % int(theta)
    put(tag + "_pos", pos)
    put(tag + "_x", x)
    put(tag + "_out", out)

# Meta / llama2.c interleaved pairs, as Meta's precompute_freqs_cis + apply_rotary_emb
theta = 10000.0
freqs = 1.0 / (theta ** (torch.arange(0, hd, 2)[: (hd // 2)].float() / hd))
angles = torch.outer(pos.float(), freqs).float()
freqs_cis = torch.polar(torch.ones_like(angles), angles)
x = torch.randn(len(pos), nh, hd)
xc = torch.view_as_complex(x.float().reshape(len(pos), nh, hd // 2, 2))
out = torch.view_as_real(xc * freqs_cis[:, None, :]).flatten(2)
put("rope_meta_10000_pos", pos)
put("rope_meta_10000_x", x)
put("rope_meta_10000_out", out)

# ---- GELU (tanh), SiLU ----
x = torch.linspace(-10, 10, 201)
put("gelu_x", x)
put("gelu_out", F.gelu(x, approximate="tanh"))
put("silu_out", F.silu(x))

# ---- cross-entropy with ignore_index, per-row losses ----
N, V = 3, 2500
logits = torch.randn(N, V) * 3
targets = torch.tensor([7, -100, V - 1], dtype=torch.int32)
put("ce_logits", logits)
put("ce_targets", targets)
put("ce_losses", F.cross_entropy(logits, targets.long(), ignore_index=-100, reduction="none"))

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ops_torch.txt")
with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
print("wrote", path)
