#!/usr/bin/env python3
"""Summary of bench/serve_llamacpp.sh's results (JSON lines from bench/serve_client.py): per server and
client count the median over rounds and the spread (min..max) of generated tokens/s, TTFT p50/p99 and
per-token latency p50; autoneg's throughput as a ratio of each peer's, per round, then the median; the
four-adapter over one-adapter ratio likewise.
  python3 bench/serve_llamacpp_summary.py results.jsonl PEER"""
import json
import statistics
import sys
from collections import defaultdict


def spread(xs):
    return "%s (%s..%s)" % (fmt(statistics.median(xs)), fmt(min(xs)), fmt(max(xs)))


def fmt(x):
    return "%.0f" % x if abs(x) >= 100 else "%.3g" % x


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    by = defaultdict(list)
    for r in rows:
        by[(r["label"], r["clients"])].append(r)
    servers = []
    for r in rows:
        if r["label"] not in servers and not r["label"].startswith("adapters"):
            servers.append(r["label"])
    levels = sorted({r["clients"] for r in rows if not r["label"].startswith("adapters")})
    print("| server | clients | generated tok/s | TTFT p50 ms | TTFT p99 ms | per-token p50 ms | finished/cut/errors |")
    print("|---|---|---|---|---|---|---|")
    for c in levels:
        for s in servers:
            rs = by[(s, c)]
            if not rs:
                continue
            g = lambda k: [r[k] for r in rs if k in r] or [float("nan")]
            print("| %s | %d | %s | %s | %s | %s | %d/%d/%d |" % (
                s, c, spread(g("tok_s")), spread(g("ttft_p50_ms")), spread(g("ttft_p99_ms")),
                spread(g("tpot_p50_ms")), sum(r["finished"] for r in rs), sum(r["cut"] for r in rs),
                sum(r["errors"] for r in rs)))
    print()
    for peer in servers:
        if peer == "autoneg":
            continue
        for c in levels:
            a, p = by[("autoneg", c)], by[(peer, c)]
            ratios = [x["tok_s"] / y["tok_s"] for x, y in zip(a, p) if y["tok_s"] > 0]
            if ratios:
                print("autoneg / %s throughput at %d clients: %s (per round: %s)" % (
                    peer, c, spread(ratios), ", ".join("%.2f" % x for x in ratios)))
    one, four = by[("adapters-1", 16)], by[("adapters-4", 16)]
    ratios = [f["tok_s"] / o["tok_s"] for f, o in zip(four, one) if o["tok_s"] > 0]
    if ratios:
        print("autoneg 4 adapters / 1 adapter throughput at 16 clients: %s (per round: %s; tok/s 1: %s, 4: %s)" % (
            spread(ratios), ", ".join("%.2f" % x for x in ratios), spread([o["tok_s"] for o in one]),
            spread([f["tok_s"] for f in four])))
    bad = sum(r["errors"] for r in rows)
    if bad:
        print("errors: %d (first: %s)" % (bad, next(r["first_error"] for r in rows if r.get("first_error"))))


if __name__ == "__main__":
    main()
