"""Reference generations and perplexity for tests/test_generate.c, from transformers.

TinyStories-656K (../shared/models/TinyStories-656K):
  - greedy `generate` (do_sample=False, use_cache=True, KV cache) from a few prompts tokenised by the
    model's own tokenizer (BOS from its post-processor), ids recorded;
  - perplexity of a small text: the mean NLL of every token after the first, scored in windows of
    `ctx` tokens that overlap by one (window k covers tokens k(ctx-1) .. k(ctx-1)+ctx-1 and scores all
    but its first), for ctx = the whole text and ctx = 16.

Run: HF_HUB_OFFLINE=1 /work/venv/bin/python tests/ref/make_generate_fixtures.py
Writes tests/ref/generate/tinystories656k.json.
"""
import json
import math
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("AN_SHARED", os.path.join(HERE, "..", "..", "..", "shared"))
MODEL = os.path.join(SHARED, "models", "TinyStories-656K")

PROMPTS = ["Once upon a time", "Tom and Lily went to the park. They saw a big", "The cat", ""]
TEXT = ("One day, a little boy named Tim went to the park with his mom. He saw a big red ball under a tree. "
        "Tim ran to the ball and kicked it very hard. The ball flew over the fence and his mom laughed.\n"
        "\"Let's get it back,\" she said. They walked around the fence and found the ball in the grass.")
MAX_NEW = 30


def windows_nll(model, ids, ctx):
    n = len(ids)
    total, count, start = 0.0, 0, 0
    while start + 1 < n:
        seg = ids[start:start + ctx]
        with torch.no_grad():
            logits = model(torch.tensor([seg])).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        for t in range(len(seg) - 1):
            total -= logp[t, seg[t + 1]].item()
            count += 1
        start += ctx - 1
    return total / count, count


def main():
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForCausalLM.from_pretrained(MODEL, torch_dtype=torch.float32)
    model.eval()
    gens = []
    for p in PROMPTS:
        ids = tok(p)["input_ids"]  # BOS from the tokenizer's post-processor
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 do_sample=False, use_cache=True, max_new_tokens=MAX_NEW, min_new_tokens=0,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
        new = out[0, len(ids):].tolist()
        if tok.eos_token_id in new:  # our output stops before EOS
            new = new[:new.index(tok.eos_token_id)]
        gens.append({"prompt": p, "prompt_ids": ids, "ids": new, "text": tok.decode(new)})
    ids = tok(TEXT)["input_ids"]
    ppl = []
    for ctx in (len(ids), 16):
        nll, count = windows_nll(model, ids, ctx)
        ppl.append({"ctx": ctx, "tokens": len(ids), "scored": count, "nll": nll, "ppl": math.exp(nll)})
    out = {"model": "TinyStories-656K", "max_new_tokens": MAX_NEW, "eos": tok.eos_token_id, "generate": gens,
           "text": TEXT, "text_ids": ids, "perplexity": ppl}
    os.makedirs(os.path.join(HERE, "generate"), exist_ok=True)
    with open(os.path.join(HERE, "generate", "tinystories656k.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
