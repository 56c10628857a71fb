"""PyTorch peer for `autoneg bench generate`: transformers' `generate` (greedy, KV cache on) on a
randomly initialised model of the same preset (same shape, fp32, CPU, same thread count), from
random prompts of the same length. Prints one JSON line per batch size.

Decode speed: (N - 1) new tokens per sequence timed as generate(max_new_tokens=N) minus
generate(max_new_tokens=1), which removes the prefill and the first token, so both sides time the
same thing: decode steps with a filled KV cache.

  python bench/generate_peer.py --preset configs/models/llama-60m.json [--batch 1 16] [--tokens N]
  python bench/generate_peer.py --summarize FILE.jsonl     (ratio of medians, autoneg / pytorch)
"""
import argparse
import collections
import json
import statistics
import sys
import time


def summarize(path):
    rows = [json.loads(l) for l in open(path) if l.startswith("{")]
    groups = collections.OrderedDict()
    for r in rows:
        groups.setdefault((r["preset"], r["batch"]), collections.defaultdict(list))[r["peer"]].append(r)
    for (preset, batch), sides in groups.items():
        print(f"== {preset}, batch {batch}")
        med = {}
        for side, rs in sides.items():
            tps = [r["tokens_per_s"] for r in rs]
            med[side] = statistics.median(tps)
            extra = ""
            if side == "autoneg" and batch == 1:
                extra = (f", weights {statistics.median(r['weight_gbs'] for r in rs):.2f} GB/s = "
                         f"{100 * statistics.median(r['fraction_of_bandwidth'] for r in rs):.0f}% of "
                         f"{statistics.median(r['bandwidth_gbs'] for r in rs):.2f} GB/s measured")
            if side == "pytorch":
                extra = f" (torch {rs[0]['torch']}, transformers {rs[0]['transformers']}, {rs[0]['threads']} threads)"
            print(f"  {side:8s} {med[side]:8.1f} tokens/s (min {min(tps):.1f}, max {max(tps):.1f}, n={len(tps)}){extra}")
        if "autoneg" in med and "pytorch" in med:
            print(f"  ratio autoneg / pytorch: {med['autoneg'] / med['pytorch']:.2f}x")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--summarize")
    a = ap.parse_args()
    if a.summarize:
        summarize(a.summarize)
        return
    import torch
    import transformers

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = json.load(open(a.preset))
    arch = cfg["architectures"][0]
    kw = {k: v for k, v in cfg.items() if k not in ("architectures", "torch_dtype")}
    if arch == "LlamaForCausalLM":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw))
    elif arch == "GPT2LMHeadModel":
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kw))
    else:
        sys.exit(f"generate_peer.py: {a.preset}: no peer for {arch}")
    model = model.float().eval()
    name = a.preset.rsplit("/", 1)[-1].removesuffix(".json")
    for B in a.batch:
        ids = torch.randint(0, cfg["vocab_size"], (B, a.prompt))
        mask = torch.ones_like(ids)

        def gen(n):
            t0 = time.perf_counter()
            with torch.inference_mode():
                model.generate(ids, attention_mask=mask, do_sample=False, use_cache=True, max_new_tokens=n,
                               min_new_tokens=n, pad_token_id=0)
            return time.perf_counter() - t0

        gen(4)  # warm-up
        t1 = gen(1)
        tn = gen(a.tokens)
        tps = B * (a.tokens - 1) / (tn - t1)
        print(json.dumps({"peer": "pytorch", "preset": name, "batch": B, "prompt": a.prompt, "tokens": a.tokens,
                          "threads": torch.get_num_threads(), "tokens_per_s": round(tps, 2),
                          "torch": torch.__version__, "transformers": transformers.__version__}), flush=True)


if __name__ == "__main__":
    main()
