#!/usr/bin/env python3
"""Read a grpo run's TensorBoard events back with the tensorboard package.

    python3 -m venv /work/venv-tb && /work/venv-tb/bin/pip install tensorboard
    /work/venv-tb/bin/python tests/train/tb_check.py runs/tiny-zero

Loads RUN/tb/ with tensorboard's EventAccumulator (what `tensorboard --logdir`
uses) and checks it against RUN/metrics.jsonl: every numeric key of every
metrics line is a scalar, tagged "train/", "eval/" or "sample/" + its TRL name,
at the line's global step, with the line's value as a float32. Prints the tags
and a few values; exits 1 on any difference. Not needed to build or test grpo
(the C test train_outputs reads the same files itself).
"""
import json
import math
import struct
import sys

from tensorboard.backend.event_processing import event_accumulator

RENAMED = {
    "lr": "learning_rate",
    "completion_length": "completions/mean_length",
    "clip_ratio/low": "clip_ratio/low_mean",
    "clip_ratio/high": "clip_ratio/high_mean",
    "clip_ratio/region": "clip_ratio/region_mean",
}


def tag_of(prefix, key):
    if key in RENAMED:
        return prefix + "/" + RENAMED[key]
    if key.startswith("rewards/") and not key.endswith("/std"):
        return prefix + "/" + key + "/mean"
    return prefix + "/" + key


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def main():
    run = sys.argv[1] if len(sys.argv) > 1 else "runs/tiny-zero"
    ea = event_accumulator.EventAccumulator(run + "/tb", size_guidance={event_accumulator.SCALARS: 0})
    ea.Reload()
    tags = ea.Tags()["scalars"]
    got = {t: {e.step: e.value for e in ea.Scalars(t)} for t in tags}
    bad = 0
    n = 0
    with open(run + "/metrics.jsonl") as f:
        for line in f:
            m = json.loads(line)
            stage = m.get("stage", "")
            # the stage's type from its line: eval lines report accuracy,
            # sample lines what they kept, training lines a loss
            prefix = "train"
            if "accuracy" in m and "loss" not in m:
                prefix = "eval"
            elif "kept" in m:
                prefix = "sample"
            step = m.get("global_step", m.get("step"))
            flat = {}
            for k, v in m.items():
                if isinstance(v, dict):  # one level of nesting: "dropped/keep"
                    flat.update({k + "/" + k2: v2 for k2, v2 in v.items()})
                else:
                    flat[k] = v
            for k, v in flat.items():
                if k in ("step", "global_step") or isinstance(v, bool) or not isinstance(v, (int, float)):
                    continue
                t = tag_of(prefix, k)
                n += 1
                if t not in got or step not in got[t]:
                    print(f"missing: {t} at step {step} (stage {stage})")
                    bad += 1
                elif not (got[t][step] == f32(v) or (math.isnan(got[t][step]) and math.isnan(v))):
                    print(f"differs: {t} at step {step}: events {got[t][step]!r}, metrics.jsonl {v!r}")
                    bad += 1
    print(f"{run}/tb: {len(tags)} scalar tags, {sum(len(v) for v in got.values())} points; "
          f"{n} metrics.jsonl values checked, {bad} bad")
    for t in sorted(tags)[:60]:
        pts = sorted(got[t].items())
        print(f"  {t}: {len(pts)} points, first {pts[0]}, last {pts[-1]}")
    return 1 if bad or n == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
