#!/usr/bin/env python3
"""grpo's sampler against Hugging Face's logits processors, one next token at a time (issue 13, part 2).

Picks contexts (a test prompt with a prefix of its reference completion) where the tiny base model's
next token is uncertain after temperature + top-p, computes the exact processed distribution with
transformers' own TemperatureLogitsWarper and TopPLogitsWarper (what model.generate and TRL apply), and
draws N one-token samples per context with `grpo generate --max-new-tokens 1`. Prints per context the
kept-set sizes, the total variation distance between grpo's empirical distribution and HF's, and
Pearson's chi-square with its p-value; tokens grpo drew outside HF's kept set are counted separately
(they should never occur). Run from the project root with a Python that has torch and transformers:

  /work/peer-venv/bin/python bench/sampler_peer.py [--grpo build/grpo] [--model data/tiny/base]
      [--temperature 0.6] [--top-p 0.95] [--contexts 24] [--n 4000] [--seed 1]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper


def chi2_sf(x, k):
    """Upper tail of the chi-square distribution with k degrees of freedom (Wilson-Hilferty)."""
    if k <= 0:
        return float("nan")
    z = ((x / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return 0.5 * math.erfc(z / math.sqrt(2))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grpo", default="build/grpo")
    ap.add_argument("--model", default="data/tiny/base")
    ap.add_argument("--data", default="data/tiny/train.jsonl", help="rows with prompt and completion")
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--contexts", type=int, default=24)
    ap.add_argument("--n", type=int, default=4000, help="draws per context")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    procs = [TemperatureLogitsWarper(args.temperature)] if args.temperature != 1.0 else []
    if args.top_p < 1.0:
        procs.append(TopPLogitsWarper(args.top_p))

    # contexts: every position of reference completions, kept when >= 2 tokens survive the processors
    ctx = []
    for line in open(args.data):
        row = json.loads(line)
        p = tok(row["prompt"] + "\n")["input_ids"]
        c = tok(row["completion"], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p + c])
        with torch.no_grad():
            logits = model(ids).logits[0, len(p) - 1:]
        for k in range(len(c)):
            s = logits[k:k + 1].clone()
            for f in procs:
                s = f(ids[:, :len(p) + k], s)
            q = torch.softmax(s, -1)[0].double()
            if int((q > 0).sum()) >= 2 and q.max() < 0.9:
                ctx.append((p + c[:k], q))
        if len(ctx) >= args.contexts:
            break
    ctx = ctx[:args.contexts]

    with tempfile.TemporaryDirectory() as d:
        inp, out = os.path.join(d, "ctx.jsonl"), os.path.join(d, "out.jsonl")
        with open(inp, "w") as f:
            for ids, _ in ctx:
                f.write(json.dumps({"ids": ids}) + "\n")
        cmd = [args.grpo, "generate", "--model", args.model, "--in", inp, "--out", out, "--n", str(args.n),
               "--max-new-tokens", "1", "--temperature", str(args.temperature), "--top-p", str(args.top_p),
               "--seed", str(args.seed)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            sys.exit(f"grpo generate: exit {p.returncode}\n{p.stderr[-2000:]}")
        counts = [dict() for _ in ctx]
        for line in open(out):
            r = json.loads(line)
            t = r["completion_ids"][0]
            counts[r["index"]][t] = counts[r["index"]].get(t, 0) + 1

    print(f"T {args.temperature}, top-p {args.top_p}, {args.n} draws per context\n")
    print("| context | tokens kept (HF) | drawn (grpo) | outside HF's set | TV distance | chi2 | df | p |")
    print("|---|---|---|---|---|---|---|---|")
    chi_all, df_all, outside_all, tv_sum = 0.0, 0, 0, 0.0
    for i, ((ids, q), cnt) in enumerate(zip(ctx, counts)):
        kept = [t for t in range(q.numel()) if q[t] > 0]
        outside = sum(v for t, v in cnt.items() if q[t] == 0)
        n = sum(cnt.values())
        tv = 0.5 * sum(abs(cnt.get(t, 0) / n - float(q[t])) for t in set(kept) | set(cnt))
        # pool cells with expected counts under 5 into one
        chi, cells, pool_e, pool_o = 0.0, 0, 0.0, 0
        for t in kept:
            e, o = n * float(q[t]), cnt.get(t, 0)
            if e < 5:
                pool_e += e
                pool_o += o
                continue
            chi += (o - e) ** 2 / e
            cells += 1
        if pool_e > 0:
            chi += (pool_o - pool_e) ** 2 / pool_e
            cells += 1
        df = cells - 1
        chi_all += chi
        df_all += df
        outside_all += outside
        tv_sum += tv
        print(f"| {i} | {len(kept)} | {len(cnt)} | {outside} | {tv:.4f} | {chi:.1f} | {df} | {chi2_sf(chi, df):.3f} |")
    print(f"\nall contexts: chi2 {chi_all:.1f} on {df_all} df, p = {chi2_sf(chi_all, df_all):.3f}; "
          f"mean TV {tv_sum / len(ctx):.4f}; draws outside HF's kept set: {outside_all}")


if __name__ == "__main__":
    main()
