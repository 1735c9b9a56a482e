#!/usr/bin/env python3
"""grpo against TRL's GRPOTrainer on the demo, seed by seed (issue 13, part 2).

For each seed, runs

  grpo    build/grpo run recipes/tiny-zero.lua --set seed=S ...   (eval_before, 30 GRPO steps, eval_after)
  TRL     PEER_PYTHON ../shared/peers/trl_tiny_zero.py --steps 30 --eval --seed S ...

(the same model, data, G = 8, 8 prompts x 8, lr 5e-4 constant, beta 0, epsilon 0.2, loss_type grpo,
scale_rewards group, max_grad_norm 1; held-out pass@1 over 4 samples at T 0.6 / top-p 0.95), keeps each
run's figures in OUT_DIR/results.jsonl (a rerun skips the seeds it already has, so a long campaign can
be stopped and continued) and prints the side-by-side table: held-out pass@1 after training per seed,
each trainer's mean, standard deviation, standard error, range, the difference of the means with
Welch's 95% interval, and two tests of equal spread (the F-test, and Brown-Forsythe's median-centred
Levene test, which does not assume normal scores); --curves adds each trainer's training reward per
GRPO step (mean over the seeds, from each run's metrics.jsonl or the peer's result file in OUT_DIR). Run from the project root:

  python3 bench/trl_compare.py --seeds 42,1,2 [--trainers grpo,trl] [--grpo build/grpo]
      [--peer-python /work/peer-venv/bin/python] [--peer ../shared/peers/trl_tiny_zero.py]
      [--out-dir /tmp/trl_compare] [--table-only] [--compact N] [--curves]

Set OMP_WAIT_POLICY=passive OMP_NUM_THREADS=2 for TRL (../shared/peers/README.md); this script sets
them for both trainers when they are unset.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time


def run_grpo(args, seed, out):
    d = os.path.join(out, f"grpo-s{seed}")
    cmd = [args.grpo, "run", "recipes/tiny-zero.lua", "--set", f"seed={seed}", "--set", f"output_dir={d}",
           "--overwrite", "--quiet"]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"grpo seed {seed}: exit {p.returncode}\n{p.stderr[-2000:]}")
    s = json.load(open(os.path.join(d, "tiny-zero", "summary.json")))
    rewards = [json.loads(l) for l in open(os.path.join(d, "tiny-zero", "metrics.jsonl"))]
    rewards = [r["reward"] for r in rewards if r.get("stage") == "grpo" and "reward" in r]
    return {"eval_before": s["eval_before"]["accuracy"], "eval_after": s["eval_after"]["accuracy"],
            "train_reward_mean": statistics.fmean(rewards), "wall_s": time.perf_counter() - t}


# TRL's seeds run in one Python process (the peer script through runpy, once per seed): importing
# torch, transformers and TRL takes about half a minute, and a fresh process per seed gives the same
# figures (checked: seeds 42 and 1 in one process reproduce their separate runs exactly).
TRL_DRIVER = """
import runpy, sys
peer, out = sys.argv[1], sys.argv[2]
for s in sys.argv[3:]:
    sys.argv = [peer, "--steps", "30", "--eval", "--seed", s, "--out", f"{out}/trl-s{s}.json",
                "--out-dir", f"{out}/trl-s{s}"]
    runpy.run_path(peer, run_name="__main__")
    print(f"TRL seed {s} done", file=sys.stderr, flush=True)
"""


def trl_result(out, seed):
    res = os.path.join(out, f"trl-s{seed}.json")
    if not os.path.exists(res):
        return None
    r = json.load(open(res))
    return {"eval_before": r["eval_before"]["accuracy"], "eval_after": r["eval_after"]["accuracy"],
            "train_reward_mean": statistics.fmean(r["rewards"]), "wall_s": r["total_wall_s"]}


def run_trl(args, seeds, out):
    """Results of seeds; a seed whose result file a stopped campaign already wrote is not rerun (the
    peer script writes it once, at the end)."""
    todo = [s for s in seeds if trl_result(out, s) is None]
    if todo:
        log = os.path.join(out, "trl.log")
        print(f"TRL seeds {','.join(map(str, todo))}: log in {log}", file=sys.stderr, flush=True)
        with open(log, "a") as f:
            p = subprocess.run([args.peer_python, "-c", TRL_DRIVER, args.peer, out] + [str(s) for s in todo],
                               stdout=f, stderr=subprocess.STDOUT)
        if p.returncode:
            print(f"TRL: exit {p.returncode} (see {log})", file=sys.stderr)
    return {s: trl_result(out, s) for s in seeds}


def summary(xs):
    n = len(xs)
    m = statistics.fmean(xs)
    sd = statistics.stdev(xs) if n > 1 else float("nan")
    return n, m, sd, sd / math.sqrt(n) if n > 1 else float("nan")


def t_quantile_975(df):
    """Student's t 0.975 quantile (Cornish-Fisher expansion; within 1% of the tables for df >= 3)."""
    if df <= 1:
        return 12.706
    z = 1.959963984540054
    g1 = (z ** 3 + z) / 4
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
    return z + g1 / df + g2 / df ** 2 + g3 / df ** 3


def betainc(a, b, x):
    """Regularized incomplete beta I_x(a, b) (continued fraction, modified Lentz)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - betainc(b, a, 1.0 - x)
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 1000):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(lbeta) * f / a


def f_sf(f, d1, d2):
    """P(F > f) for Fisher's F distribution with (d1, d2) degrees of freedom."""
    return betainc(d2 / 2, d1 / 2, d2 / (d2 + d1 * f)) if f > 0 else 1.0


def variance_tests(a, b):
    """(F = var a / var b, two-sided F-test p, Brown-Forsythe (median-centred Levene) p)."""
    na, nb = len(a), len(b)
    f = statistics.variance(a) / statistics.variance(b)
    p_f = min(1.0, 2 * min(f_sf(f, na - 1, nb - 1), 1 - f_sf(f, na - 1, nb - 1)))
    za = [abs(x - statistics.median(a)) for x in a]
    zb = [abs(x - statistics.median(b)) for x in b]
    ma, mb, mz = statistics.fmean(za), statistics.fmean(zb), statistics.fmean(za + zb)
    between = na * (ma - mz) ** 2 + nb * (mb - mz) ** 2
    within = sum((z - ma) ** 2 for z in za) + sum((z - mb) ** 2 for z in zb)
    w = (na + nb - 2) * between / within
    return f, p_f, f_sf(w, 1, na + nb - 2)


def table(rows, trainers, seeds, compact=0):
    by = {(r["trainer"], r["seed"]): r for r in rows}
    seeds = [s for s in seeds if any((t, s) in by for t in trainers)]
    if compact:  # eval_after only, `compact` seeds a row
        print("| seeds | " + " | ".join(f"{t} eval_after" for t in trainers) + " |")
        print("|---|" + "---|" * len(trainers))
        for i in range(0, len(seeds), compact):
            part = seeds[i:i + compact]
            cells = [" ".join(f"{by[(t, s)]['eval_after']:.4g}" if (t, s) in by else "-" for s in part)
                     for t in trainers]
            print(f"| {part[0]}..{part[-1]} | " + " | ".join(cells) + " |")
    else:
        print("| seed | " + " | ".join(f"{t} eval_before -> eval_after" for t in trainers) + " |")
        print("|---|" + "---|" * len(trainers))
        for s in seeds:
            cells = []
            for t in trainers:
                r = by.get((t, s))
                cells.append(f"{r['eval_before']:.4g} -> {r['eval_after']:.4g}" if r else "")
            print(f"| {s} | " + " | ".join(cells) + " |")
    print()
    print("| trainer | runs | mean pass@1 | sd | se | min | max | mean eval_before | mean training reward |")
    print("|---|---|---|---|---|---|---|---|---|")
    stats = {}
    for t in trainers:
        rs = [by[(t, s)] for s in seeds if (t, s) in by]
        if not rs:
            continue
        xs = [r["eval_after"] for r in rs]
        n, m, sd, se = summary(xs)
        stats[t] = (n, m, sd)
        print(f"| {t} | {n} | {m:.4f} | {sd:.4f} | {se:.4f} | {min(xs):.4f} | {max(xs):.4f} | "
              f"{statistics.fmean(r['eval_before'] for r in rs):.4f} | "
              f"{statistics.fmean(r['train_reward_mean'] for r in rs):.4f} |")
    if len(stats) == 2 and all(v[0] > 1 for v in stats.values()):
        (na, ma, sa), (nb, mb, sb) = stats[trainers[0]], stats[trainers[1]]
        va, vb = sa * sa / na, sb * sb / nb
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va * va / (na - 1) + vb * vb / (nb - 1)) if va + vb > 0 else float("inf")
        h = t_quantile_975(df) * se
        d = ma - mb
        print(f"\n{trainers[0]} - {trainers[1]}: {d:+.4f} (Welch 95% interval {d - h:+.4f} .. {d + h:+.4f}, "
              f"df {df:.1f})")
        xs = [[by[(t, s)]["eval_after"] for s in seeds if (t, s) in by] for t in trainers]
        f, p_f, p_bf = variance_tests(xs[0], xs[1])
        print(f"spread: variance ratio {trainers[0]}/{trainers[1]} {f:.3f} (sd ratio {math.sqrt(f):.3f}); "
              f"F-test p {p_f:.3f}, Brown-Forsythe (Levene, median) p {p_bf:.3f}")


def step_rewards(out, trainer, seed):
    """The mean training reward of each GRPO step of one run (None when its files are gone)."""
    if trainer == "grpo":
        path = os.path.join(out, f"grpo-s{seed}", "tiny-zero", "metrics.jsonl")
        if not os.path.exists(path):
            return None
        ms = [json.loads(l) for l in open(path)]
        return [m["reward"] for m in ms if m.get("stage") == "grpo" and "reward" in m]
    path = os.path.join(out, f"trl-s{seed}.json")
    return json.load(open(path))["rewards"] if os.path.exists(path) else None


def curves(out, trainers, seeds):
    """Per GRPO step, each trainer's training reward: mean over the seeds and its standard error."""
    runs = {t: [r for r in (step_rewards(out, t, s) for s in seeds) if r] for t in trainers}
    steps = min((len(r) for rs in runs.values() for r in rs), default=0)
    print("| step | " + " | ".join(f"{t} reward (mean, se, runs)" for t in trainers) + " |")
    print("|---|" + "---|" * len(trainers))
    for k in range(steps):
        cells = []
        for t in trainers:
            xs = [r[k] for r in runs[t]]
            n, m, _, se = summary(xs)
            cells.append(f"{m:.4f} ({se:.4f}, {n})")
        print(f"| {k + 1} | " + " | ".join(cells) + " |")
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="42,1,2", help="comma-separated seeds, or A-B for a range")
    ap.add_argument("--trainers", default="grpo,trl")
    ap.add_argument("--grpo", default="build/grpo")
    ap.add_argument("--peer-python", default="/work/peer-venv/bin/python")
    ap.add_argument("--peer", default="../shared/peers/trl_tiny_zero.py")
    ap.add_argument("--out-dir", default="/tmp/trl_compare")
    ap.add_argument("--table-only", action="store_true", help="print the table of the results kept so far")
    ap.add_argument("--curves", action="store_true",
                    help="with the table, each trainer's training reward per step (mean over the seeds)")
    ap.add_argument("--compact", type=int, default=0, metavar="N",
                    help="per-seed table of eval_after only, N seeds a row (0: a row per seed)")
    args = ap.parse_args()
    seeds = []
    for part in args.seeds.split(","):
        a, _, b = part.partition("-")
        seeds += list(range(int(a), int(b) + 1)) if b else [int(a)]
    trainers = args.trainers.split(",")
    for t in trainers:
        if t not in ("grpo", "trl"):
            sys.exit(f"--trainers: unknown trainer '{t}' (expected grpo, trl)")
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, "results.jsonl")
    rows = [json.loads(l) for l in open(path)] if os.path.exists(path) else []
    done = {(r["trainer"], r["seed"]) for r in rows}
    if not args.table_only:
        def keep(t, s, r):
            r.update(trainer=t, seed=s)
            rows.append(r)
            with open(path, "a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"{t} seed {s}: eval_before {r['eval_before']:.4f} eval_after {r['eval_after']:.4f} "
                  f"({r['wall_s']:.0f} s)", file=sys.stderr, flush=True)
        if "grpo" in trainers:
            for s in seeds:
                if ("grpo", s) not in done:
                    keep("grpo", s, run_grpo(args, s, args.out_dir))
        todo = [s for s in seeds if ("trl", s) not in done]
        if "trl" in trainers and todo:
            for s, r in run_trl(args, todo, args.out_dir).items():
                if r:
                    keep("trl", s, r)
    if args.curves:
        curves(args.out_dir, trainers, seeds)
    table(rows, trainers, seeds, args.compact)


if __name__ == "__main__":
    main()
