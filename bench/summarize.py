"""Reads the JSON lines of a bench script (autoneg's and its peers', interleaved) and prints, per
preset, the median and spread of each side, the ratio of medians, and the ratio within each repeat
(the scripts measure the sides of one repeat back to back, so on a VM whose speed drifts over
minutes the median of those paired ratios is the steadier figure). Standard library only."""
import collections
import json
import statistics
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
groups = collections.OrderedDict()
preset = None
for r in rows:
    if r.get("peer", "autoneg") == "autoneg":
        preset = f'{r["preset"]} B={r["batch"]} T={r["seq"]} {r.get("method", "full")}'
    groups.setdefault(preset, collections.defaultdict(list))[r.get("peer", "autoneg")].append(r)



def paired(num, den):
    """The ratio within each repeat (the i-th measurement of each side) and their median."""
    r = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(num, den)]
    return f"per repeat {', '.join(f'{x:.2f}' for x in r)} (median {statistics.median(r):.2f}x)"


for preset, sides in groups.items():
    print(f"== {preset}")
    med = {}
    for side, rs in sides.items():
        tps = [r["tokens_per_s"] for r in rs]
        med[side] = statistics.median(tps)
        extra = ""
        if side == "autoneg":
            fr = statistics.median(r["fraction_of_sgemm_peak"] for r in rs)
            extra = f', {statistics.median(r["gflops"] for r in rs):.1f} GFLOP/s = {fr * 100:.0f}% of sgemm peak' \
                    f' ({rs[0]["sgemm_peak_gflops"]:.0f} GFLOP/s), peak memory {rs[0]["peak_mib"]:.0f} MiB'
            if rs[0].get("fma_peak_gflops"):
                fma = max(r["fma_peak_gflops"] for r in rs)
                extra += f'; {statistics.median(r["gflops"] for r in rs) / fma * 100:.0f}% of the multiply-add peak' \
                         f' ({fma:.0f} GFLOP/s)'
        else:
            extra = f' (torch {rs[0]["torch"]}, {rs[0]["blas"]}, {rs[0]["threads"]} threads)'
        print(f"  {side:8s} {med[side]:8.1f} tokens/s  (min {min(tps):.1f}, max {max(tps):.1f}, n={len(tps)}){extra}")
    for peer in ("pytorch", "pytorch+peft"):
        if "autoneg" in med and peer in med:
            print(f"  ratio autoneg / {peer}: {med['autoneg'] / med[peer]:.2f}x; "
                  f"{paired(sides['autoneg'], sides[peer])}")
            an = sides["autoneg"]
            if an[0].get("fma_peak_gflops"):
                # the peer's rate in autoneg's FLOPs per token (the same model, batch and method), and
                # what twice it would take of the machine's multiply-add peak
                per_token = statistics.median(r["gflops"] / r["tokens_per_s"] for r in an)
                fma = max(r["fma_peak_gflops"] for r in an)
                print(f"  {peer} at {med[peer] * per_token / fma * 100:.0f}% of the multiply-add peak; "
                      f"2x of it would take {2 * med[peer] * per_token / fma * 100:.0f}%")
    # Where the step goes (bench/matmul_share.sh): matrix products of the linear layers and the head,
    # and the rest. PyTorch's step divided by autoneg's matmul time is what autoneg would reach with
    # nothing at all outside its matmuls.
    if all(side in sides and "matmul_ms" in sides[side][0] for side in ("autoneg", "pytorch")):
        parts = {}
        for side in ("autoneg", "pytorch"):
            mm = statistics.median(r["matmul_ms"] for r in sides[side])
            step = statistics.median(r["step_ms_median"] for r in sides[side])
            parts[side] = (mm, step)
            print(f"  {side:8s} matmuls {mm:7.0f} ms a step ({mm / step * 100:.0f}%), the rest {step - mm:6.0f} ms")
        print(f"  matmuls pytorch / autoneg: {parts['pytorch'][0] / parts['autoneg'][0]:.2f}x; with nothing outside "
              f"its matmuls autoneg would be {parts['pytorch'][1] / parts['autoneg'][0]:.2f}x pytorch")

# LoRA beside full fine-tuning (autoneg only): same preset, batch and sequence
by_shape = collections.defaultdict(dict)
for r in rows:
    if r.get("peer", "autoneg") == "autoneg":
        by_shape[(r["preset"], r["batch"], r["seq"])].setdefault(r.get("method", "full"), []).append(r)
for (p, b, t), methods in by_shape.items():
    if "full" in methods and "lora" in methods:
        tf = statistics.median(r["tokens_per_s"] for r in methods["full"])
        tl = statistics.median(r["tokens_per_s"] for r in methods["lora"])
        mf = statistics.median(r["peak_mib"] for r in methods["full"])
        ml = statistics.median(r["peak_mib"] for r in methods["lora"])
        print(f"== {p} B={b} T={t}: LoRA / full tokens/s {tl:.1f} / {tf:.1f} = {tl / tf:.2f}x; "
              f"{paired(methods['lora'], methods['full'])}; peak memory full {mf:.0f} MiB, LoRA {ml:.0f} MiB")
