#!/usr/bin/env python3
"""The Hugging Face side of the demo's held-out evaluation, over several RNG seeds (issue 13, part 2).

Pass@1 on data/tiny/test.jsonl exactly as ../shared/peers/trl_tiny_zero.py evaluates
(model.generate, K samples per prompt, 64 new tokens, prompts "{prompt}\\n" with the tokenizer's BOS,
left-padded batches of 64 prompts, the Python rewards of ../shared/peers/rewards_py.py), once per
torch seed: the peer script always evaluates with torch.manual_seed(0), so its eval_before is one draw
of this distribution. The grpo side is `grpo eval --seed S` (bench/RESULTS.md has both). --model
may be repeated (e.g. grpo's checkpoints, to evaluate them exactly as TRL's side is evaluated). One
JSON line per model and seed, then per model the mean and standard deviation over the seeds. Run from
the project root with a Python that has torch and transformers:

  /work/peer-venv/bin/python bench/eval_peer.py [--model data/tiny/base ...] [--seeds 0-19] [--k 4]
      [--temperature 0.6] [--top-p 0.95]
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="model folder (repeatable; default data/tiny/base)")
    ap.add_argument("--data", default="data/tiny/test.jsonl")
    ap.add_argument("--peers", default="../shared/peers", help="folder of rewards_py.py")
    ap.add_argument("--seeds", default="0-19", help="comma-separated seeds, or A-B for a range")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--top-p", type=float, default=0.95)
    args = ap.parse_args()
    sys.path.insert(0, args.peers)
    from rewards_py import accuracy  # noqa: E402 (the peers folder is an argument)

    seeds = []
    for part in args.seeds.split(","):
        a, _, b = part.partition("-")
        seeds += list(range(int(a), int(b) + 1)) if b else [int(a)]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    rows = [json.loads(line) for line in open(args.data)]
    for model_dir in args.model or ["data/tiny/base"]:
        evaluate(model_dir, rows, seeds, args, accuracy)


def evaluate(model_dir, rows, seeds, args, accuracy):
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    eos, pad = tok.eos_token_id, tok.pad_token_id
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def text_of(ids):  # as the peer script: pads dropped, then the stop token
        ids = [x for x in ids if x != pad]
        if ids and ids[-1] == eos:
            ids.pop()
        return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    accs = []
    for seed in seeds:
        torch.manual_seed(seed)
        t = time.perf_counter()
        hits = []
        for i in range(0, len(rows), 64):
            chunk = rows[i:i + 64]
            enc = tok([r["prompt"] + "\n" for r in chunk], return_tensors="pt", padding=True)
            with torch.no_grad():
                out = model.generate(**enc, do_sample=True, temperature=args.temperature, top_p=args.top_p,
                                     top_k=0, max_new_tokens=64, num_return_sequences=args.k,
                                     pad_token_id=pad, eos_token_id=eos, use_cache=True)
            comp = out[:, enc["input_ids"].shape[1]:]
            for j in range(comp.shape[0]):
                ids = comp[j].tolist()
                n = next((k + 1 for k, x in enumerate(ids) if x == eos), len(ids))
                hits.append(accuracy(text_of(ids[:n]), chunk[j // args.k]["answer"]))
        acc = sum(hits) / len(hits)
        accs.append(acc)
        print(json.dumps({"model": model_dir, "seed": seed, "k": args.k, "temperature": args.temperature,
                          "top_p": args.top_p, "accuracy": acc, "wall_s": round(time.perf_counter() - t, 1)}),
              flush=True)
    if len(accs) > 1:
        print(f"{model_dir}: {len(accs)} seeds: mean {statistics.fmean(accs):.4f}, sd {statistics.stdev(accs):.4f}, "
              f"min {min(accs):.4f}, max {max(accs):.4f}", flush=True)


if __name__ == "__main__":
    main()
