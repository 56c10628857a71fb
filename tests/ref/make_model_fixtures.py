"""Reference fixtures for the model tests (tests/test_model_*.c).

Run from the repository root with the reference environment, offline, on the CPU:

    HF_HUB_OFFLINE=1 /work/venv/bin/python tests/ref/make_model_fixtures.py

For each tiny model family it writes tests/ref/models/<name>/ holding
  config.json + model.safetensors   the model, as Hugging Face saves it (transformers save_pretrained,
                                    or for InternLM2, whose modeling code is not in transformers, a plain
                                    torch model written here from its published definition)
  fixture.safetensors               ids [B,T], targets [B,T] (already shifted: the label of token t+1,
                                    -100 where ignored), logits [B,T,V], loss [1], grad.<HF name> for every
                                    parameter (in the Hugging Face layout), adam_loss [5], adam_gnorm [5]
                                    (5 steps of torch AdamW with clip_grad_norm_(1.0) on the same batch;
                                    weight decay on the tensors of 2 or more dimensions only, autoneg's
                                    rule (train/optim.h) and Hugging Face Trainer's)
and for the two real pretrained models (stories260K llama2.c .bin, TinyStories-656K HF folder)
tests/ref/models/real/<name>.safetensors with ids, logits, and for stories260K the greedy ids from BOS.
References run in float64 on the CPU (tensors stored as float32) with fixed seeds, so rerunning
gives the same files.
"""
import copy
import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import transformers  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(ROOT, "models")
SHARED = os.environ.get("AN_SHARED", os.path.join(ROOT, "..", "..", "..", "shared"))
B, T = 2, 16
ADAM = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
CLIP = 1.0
STEPS = 5

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def make_batch(vocab, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (B, T), generator=g)
    labels = ids.clone()
    labels[0, :5] = -100  # a masked prompt, as in supervised fine-tuning
    labels[1, 9:11] = -100
    # targets[t] = label of token t+1: the shift the HF loss does internally, done here once
    targets = torch.full_like(labels, -100)
    targets[:, :-1] = labels[:, 1:]
    return ids, labels, targets


def perturb(model, seed):
    """HF initialises norms to 1 and biases to 0; nudge every 1-D tensor so the loader and the
    gradients of norm weights and biases are actually exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def loss_of(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100)


def decay_groups(model):
    """Two parameter groups, as Hugging Face Trainer builds them (get_decay_parameter_names): matrices
    (embeddings, linear weights) with ADAM's weight_decay, vectors (norm weights, biases) without."""
    params = list(model.parameters())
    return [{"params": [p for p in params if p.dim() >= 2]},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def record(name, model, forward, vocab, seed):
    """forward(ids) -> logits [B,T,V]. Records logits, loss, grads, and 5 AdamW steps.
    The reference runs in float64 (stored as float32), so the fixture carries no float32 rounding
    of its own and the C test's error is the C side's alone."""
    model.double()
    ids, labels, targets = make_batch(vocab, seed)
    model.zero_grad()
    logits = forward(ids)
    loss = loss_of(logits, targets)
    loss.backward()
    fx = {
        "ids": ids.to(torch.int32).contiguous(),
        "targets": targets.to(torch.int32).contiguous(),
        "logits": logits.detach().float().contiguous(),
        "loss": loss.detach().float().reshape(1),
    }
    for n, p in model.named_parameters():
        fx["grad." + n] = p.grad.detach().float().contiguous().clone()
    opt = torch.optim.AdamW(decay_groups(model), **ADAM)
    losses, norms = [], []
    for _ in range(STEPS):
        opt.zero_grad()
        l = loss_of(forward(ids), targets)
        l.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)))
        losses.append(float(l))
        opt.step()
    fx["adam_loss"] = torch.tensor(losses, dtype=torch.float32)
    fx["adam_gnorm"] = torch.tensor(norms, dtype=torch.float32)
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    save_file(fx, os.path.join(d, "fixture.safetensors"))
    print(f"{name}: loss {float(loss):.6f} adam {['%.5f' % x for x in losses]} gnorm {['%.3f' % x for x in norms]}")


def hf_forward(model):
    return lambda ids: model(input_ids=ids).logits


# ---------------------------------------------------------------- GPT-2
def gpt2():
    torch.manual_seed(1)
    cfg = transformers.GPT2Config(vocab_size=256, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).float().eval()
    perturb(model, 11)
    d = os.path.join(OUT, "gpt2")
    model.save_pretrained(d, safe_serialization=True)
    # The original openai-community/gpt2 checkpoint: no "transformer." prefix, no lm_head (tied),
    # and the causal-mask buffers attn.bias / attn.masked_bias stored as tensors.
    sd = {}
    for n, p in model.state_dict().items():
        if n.startswith("lm_head."):
            continue
        if n.endswith(".attn.bias") or n.endswith(".attn.masked_bias"):
            continue
        sd[n[len("transformer."):]] = p.detach().contiguous().clone()
    for i in range(cfg.n_layer):
        P = cfg.n_positions
        sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(P, P)).reshape(1, 1, P, P).contiguous()
        sd[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    do = os.path.join(OUT, "gpt2-original-keys")
    os.makedirs(do, exist_ok=True)
    save_file(sd, os.path.join(do, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    with open(os.path.join(do, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
    record("gpt2", model, hf_forward(model), cfg.vocab_size, 101)


# ---------------------------------------------------------------- Llama (GQA, untied head)
def llama():
    torch.manual_seed(2)
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                                   bos_token_id=1, eos_token_id=2)
    model = transformers.LlamaForCausalLM(cfg).float().eval()
    perturb(model, 12)
    model.save_pretrained(os.path.join(OUT, "llama"), safe_serialization=True)
    record("llama", model, hf_forward(model), cfg.vocab_size, 102)


# ---------------------------------------------------------------- Llama with every bias, one kv head, tied
def llama_bias():
    torch.manual_seed(5)
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=16, intermediate_size=40, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                                   rms_norm_eps=1e-5, rope_theta=500.0, tie_word_embeddings=True,
                                   attention_bias=True, mlp_bias=True, bos_token_id=1, eos_token_id=2)
    model = transformers.LlamaForCausalLM(cfg).float().eval()
    perturb(model, 15)
    model.save_pretrained(os.path.join(OUT, "llama-bias"), safe_serialization=True)
    record("llama-bias", model, hf_forward(model), cfg.vocab_size, 105)


# ---------------------------------------------------------------- Qwen2 (q/k/v bias, tied head), saved as BF16
def qwen2():
    torch.manual_seed(3)
    cfg = transformers.Qwen2Config(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
                                   bos_token_id=1, eos_token_id=2)
    model = transformers.Qwen2ForCausalLM(cfg).float().eval()
    perturb(model, 13)
    # Saved in bfloat16 to exercise the BF16 loader; the reference runs on the rounded weights, which is
    # what the C side holds after widening BF16 to float32.
    # (Rounding the parameters only: model.to(bfloat16) would also round the rotary inv_freq buffer.)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(os.path.join(OUT, "qwen2"), safe_serialization=True)
    record("qwen2", model, hf_forward(model), cfg.vocab_size, 103)


# ---------------------------------------------------------------- InternLM2 in plain torch
class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_cos_sin(T_, hd, theta, dtype):
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=dtype) / hd))
    f = torch.outer(torch.arange(T_, dtype=dtype), inv)
    emb = torch.cat((f, f), dim=-1)
    return emb.cos(), emb.sin()


class InternLM2Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        C, nh, nkv, F_ = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["intermediate_size"]
        hd = C // nh
        self.nh, self.nkv, self.hd = nh, nkv, hd
        self.attention_norm = RMSNorm(C, c["rms_norm_eps"])
        self.attention = nn.Module()
        self.attention.wqkv = nn.Linear(C, (nh + 2 * nkv) * hd, bias=False)
        self.attention.wo = nn.Linear(nh * hd, C, bias=False)
        self.ffn_norm = RMSNorm(C, c["rms_norm_eps"])
        self.feed_forward = nn.Module()
        self.feed_forward.w1 = nn.Linear(C, F_, bias=False)
        self.feed_forward.w3 = nn.Linear(C, F_, bias=False)
        self.feed_forward.w2 = nn.Linear(F_, C, bias=False)

    def forward(self, x, cos, sin):
        Bq, Tq, _ = x.shape
        G = self.nh // self.nkv
        h = self.attention_norm(x)
        # wqkv rows grouped per kv head: [q heads g*G..g*G+G-1, k head g, v head g], each hd rows
        qkv = self.attention.wqkv(h).view(Bq, Tq, self.nkv, G + 2, self.hd)
        q = qkv[..., :G, :].reshape(Bq, Tq, self.nh, self.hd).transpose(1, 2)
        k = qkv[..., -2, :].transpose(1, 2)
        v = qkv[..., -1, :].transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(G, dim=1)
        v = v.repeat_interleave(G, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        mask = torch.ones(Tq, Tq, dtype=torch.bool).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        o = (att @ v).transpose(1, 2).reshape(Bq, Tq, self.nh * self.hd)
        x = x + self.attention.wo(o)
        h = self.ffn_norm(x)
        return x + self.feed_forward.w2(F.silu(self.feed_forward.w1(h)) * self.feed_forward.w3(h))


class InternLM2(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = nn.Module()
        self.model.tok_embeddings = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.model.layers = nn.ModuleList([InternLM2Layer(c) for _ in range(c["num_hidden_layers"])])
        self.model.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.output = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    def forward(self, ids):
        hd = self.c["hidden_size"] // self.c["num_attention_heads"]
        cos, sin = rope_cos_sin(ids.shape[1], hd, self.c["rope_theta"], self.output.weight.dtype)
        x = self.model.tok_embeddings(ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        return self.output(self.model.norm(x))


def internlm2():
    torch.manual_seed(4)
    c = {
        "architectures": ["InternLM2ForCausalLM"],
        "model_type": "internlm2",
        "auto_map": {"AutoConfig": "configuration_internlm2.InternLM2Config",
                     "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"},
        "vocab_size": 256, "hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 6, "num_key_value_heads": 2, "max_position_embeddings": 64,
        "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "rope_scaling": None, "bias": False,
        "hidden_act": "silu", "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 2, "initializer_range": 0.02, "torch_dtype": "float32", "attn_implementation": "eager",
    }
    model = InternLM2(c).float().eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.02)
    perturb(model, 14)
    d = os.path.join(OUT, "internlm2")
    os.makedirs(d, exist_ok=True)
    save_file({n: p.detach().contiguous() for n, p in model.state_dict().items()},
              os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
    record("internlm2", model, model, c["vocab_size"], 104)


# ---------------------------------------------------------------- real weights
def read_llama2c(path):
    with open(path, "rb") as f:
        raw = f.read()
    dim, hidden, L, nh, nkv, V, S = struct.unpack("<7i", raw[:28])
    shared = V > 0
    V = abs(V)
    w = torch.frombuffer(bytearray(raw[28:]), dtype=torch.float32).double()
    hd = dim // nh
    kvd = nkv * hd
    off = 0

    def take(*shape):
        nonlocal off
        n = math.prod(shape)
        t = w[off:off + n].reshape(shape).clone()
        off += n
        return t

    m = dict(dim=dim, hidden=hidden, L=L, nh=nh, nkv=nkv, V=V, S=S, hd=hd)
    m["tok"] = take(V, dim)
    m["rms_att"] = take(L, dim)
    m["wq"] = take(L, dim, dim)
    m["wk"] = take(L, kvd, dim)
    m["wv"] = take(L, kvd, dim)
    m["wo"] = take(L, dim, dim)
    m["rms_ffn"] = take(L, dim)
    m["w1"] = take(L, hidden, dim)
    m["w2"] = take(L, dim, hidden)
    m["w3"] = take(L, hidden, dim)
    m["rms_final"] = take(dim)
    off += S * hd // 2 * 2  # freq_cis_real, freq_cis_imag
    m["wcls"] = m["tok"] if shared else take(V, dim)
    return m


def rope_interleaved(x, pos, theta=10000.0):
    """llama2.c RoPE: pairs (2i, 2i+1) of each head rotated by pos * theta^(-2i/hd). x [T, h, hd]."""
    hd = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = pos[:, None].double() * inv[None, :]  # [T, hd/2]
    c, s = ang.cos()[:, None, :], ang.sin()[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def llama2c_forward(m, ids):
    """Written from the llama2.c layout in shared/models/SOURCES.md: RMSNorm eps 1e-5, interleaved RoPE
    theta 10000, GQA, SwiGLU. ids [T] -> logits [T, V]."""
    Tn = ids.shape[0]
    nh, nkv, hd = m["nh"], m["nkv"], m["hd"]
    pos = torch.arange(Tn)

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))

    x = m["tok"][ids]
    mask = torch.ones(Tn, Tn, dtype=torch.bool).tril()
    for l in range(m["L"]):
        h = rms(x, m["rms_att"][l])
        q = rope_interleaved((h @ m["wq"][l].T).view(Tn, nh, hd), pos)
        k = rope_interleaved((h @ m["wk"][l].T).view(Tn, nkv, hd), pos)
        v = (h @ m["wv"][l].T).view(Tn, nkv, hd)
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        att = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        o = torch.einsum("hts,shd->thd", att, v).reshape(Tn, nh * hd)
        x = x + o @ m["wo"][l].T
        h = rms(x, m["rms_ffn"][l])
        x = x + (F.silu(h @ m["w1"][l].T) * (h @ m["w3"][l].T)) @ m["w2"][l].T
    return rms(x, m["rms_final"]) @ m["wcls"].T


def real_models():
    d = os.path.join(OUT, "real")
    os.makedirs(d, exist_ok=True)
    m = read_llama2c(os.path.join(SHARED, "models", "stories260K", "stories260K.bin"))
    seq = [1]
    with torch.no_grad():
        for _ in range(40):
            seq.append(int(llama2c_forward(m, torch.tensor(seq))[-1].argmax()))
        ids = torch.tensor(seq[:16])
        logits = llama2c_forward(m, ids)
    save_file({"ids": ids.to(torch.int32), "logits": logits.float().contiguous(),
               "greedy": torch.tensor(seq, dtype=torch.int32)}, os.path.join(d, "stories260K.safetensors"))
    print("stories260K greedy:", seq)

    path = os.path.join(SHARED, "models", "TinyStories-656K")
    model = transformers.LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float64).eval()
    g = torch.Generator().manual_seed(656)
    ids = torch.cat([torch.tensor([1]), torch.randint(3, 2048, (15,), generator=g)])
    with torch.no_grad():
        logits = model(input_ids=ids[None]).logits[0]
    save_file({"ids": ids.to(torch.int32), "logits": logits.float().contiguous()},
              os.path.join(d, "TinyStories-656K.safetensors"))
    print("TinyStories-656K logits", tuple(logits.shape))


if __name__ == "__main__":
    makers = {"gpt2": gpt2, "llama": llama, "llama-bias": llama_bias, "qwen2": qwen2, "internlm2": internlm2,
              "real": real_models}
    for w in sys.argv[1:] or list(makers):
        makers[w]()
