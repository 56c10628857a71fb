"""Checks a run folder (or event files) with TensorBoard's own reader, for `make check-compat`.

    /work/venv/bin/python tests/ref/check_tensorboard.py RUN_DIR [RUN_DIR | EVENT_FILE ...]

For each argument: TensorBoard's EventAccumulator must load the event file(s) and list scalars. When
the folder also holds metrics.jsonl, every train/loss, train/lr, train/grad_norm and eval/loss value
TensorBoard reports must equal the metrics.jsonl value of the same step to float32 precision (the event
files store float32; 1e-6 relative covers float32 rounding, 6e-8, with room). When it holds loss.svg,
the SVG must parse as XML with an <svg> root and hold one polyline point per training step of
metrics.jsonl (up to the 2000-point cap). Exits 1 on the first failure.
"""
import glob
import json
import math
import os
import sys
import xml.etree.ElementTree as ET

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

FIELDS = {"train/loss": "loss", "train/lr": "lr", "train/grad_norm": "grad_norm", "eval/loss": "eval_loss"}


def fail(msg):
    print("check_tensorboard: FAIL:", msg)
    sys.exit(1)


def load_scalars(path):
    acc = EventAccumulator(path, size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    if not tags:
        fail(f"{path}: TensorBoard finds no scalars")
    return {t: {e.step: e.value for e in acc.Scalars(t)} for t in tags}


def check_metrics(folder, scalars):
    path = os.path.join(folder, "metrics.jsonl")
    expected = {t: {} for t in FIELDS}
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            for tag, key in FIELDS.items():
                if row.get(key) is not None:
                    expected[tag][row["step"]] = row[key]
    checked = 0
    for tag, by_step in expected.items():
        if not by_step:
            continue
        got = scalars.get(tag)
        if got is None:
            fail(f"{folder}: metrics.jsonl has {tag} values but TensorBoard has no such tag")
        for step, want in by_step.items():
            if step not in got:
                fail(f"{folder}: {tag} step {step} is in metrics.jsonl but not in TensorBoard")
            if not math.isclose(got[step], want, rel_tol=1e-6, abs_tol=1e-30):
                fail(f"{folder}: {tag} step {step}: TensorBoard {got[step]!r}, metrics.jsonl {want!r}")
            checked += 1
    return checked, len(expected["train/loss"])


def check_svg(folder, n_train):
    root = ET.parse(os.path.join(folder, "loss.svg")).getroot()
    if not root.tag.endswith("svg"):
        fail(f"{folder}/loss.svg: root element is {root.tag}, not svg")
    points = 0
    for el in root.iter():
        if el.tag.endswith("polyline") and el.get("class") == "train":
            points += len(el.get("points").split())
    if n_train and points != min(n_train, 2000) and n_train <= 2000:
        fail(f"{folder}/loss.svg: {points} train points for {n_train} steps")
    return points


def main(args):
    if not args:
        print(__doc__)
        return 2
    for arg in args:
        if os.path.isdir(arg) and not glob.glob(os.path.join(arg, "events.out.tfevents.*")):
            fail(f"{arg}: no events.out.tfevents.* file")
        scalars = load_scalars(arg)
        summary = ", ".join(f"{t} ({len(v)})" for t, v in sorted(scalars.items()))
        print(f"check_tensorboard: {arg}: TensorBoard reads {summary}")
        if os.path.isdir(arg) and os.path.exists(os.path.join(arg, "metrics.jsonl")):
            checked, n_train = check_metrics(arg, scalars)
            print(f"check_tensorboard: {arg}: {checked} values agree with metrics.jsonl")
            if os.path.exists(os.path.join(arg, "loss.svg")):
                pts = check_svg(arg, n_train)
                print(f"check_tensorboard: {arg}: loss.svg is well-formed XML with {pts} train points")
    print("check_tensorboard: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
