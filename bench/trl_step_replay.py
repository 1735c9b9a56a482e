#!/usr/bin/env python3
"""grpo's GRPO update against TRL's, on grpo's own completions (issue 13, part 2).

Runs the demo's GRPO stage for N steps with every completion's token ids logged
(log_completion_ids), then replays those steps in PyTorch (float64, the Hugging Face model
loaded from the same base checkpoint): per step TRL's loss_type "grpo" on the logged
completions and advantages (GRPOTrainer._compute_loss with beta 0 and one iteration:
mean over sequences of sum_t -A * exp(logp - logp.detach()) / n_tokens), autograd,
torch.nn.utils.clip_grad_norm_(max_norm 1) over all parameters, torch.optim.AdamW
(lr 5e-4, betas 0.9/0.999, eps 1e-8, weight decay 0). Prints each step's gradient norm in
both and, per tensor, the relative L2 difference of the total update (w_N - w_0) between
grpo's checkpoint and the replay. The sampling is grpo's in both, so what is compared is
everything after it: log-probs, loss, gradient, clipping and AdamW. It also scores every logged
completion with the peer's Python rewards (../shared/peers/rewards_py.py, what TRL's side trains
on) and counts the samples whose scores differ from grpo's Lua rewards. --trl-advantages replays
with the advantages TRL computes from the logged rewards (float32: nanmean, nanstd, + 1e-4) instead
of grpo's (double), which differ where a group's rewards are all equal: TRL's float32 mean misses
the common value by an ulp, so such a group gets a small advantage of one sign (about +1.2e-3 for
8 x 1.2, -1.5e-4 for 8 x 0.2) where grpo's is 0. Run from the project
root with a Python that has torch, transformers and safetensors:

  /work/peer-venv/bin/python bench/trl_step_replay.py [--steps 30] [--seed 42] [--grpo build/grpo]
      [--out-dir /tmp/trl_step_replay]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grpo", default="build/grpo")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--base", default="data/tiny/base")
    ap.add_argument("--out-dir", default="/tmp/trl_step_replay")
    ap.add_argument("--peers", default="../shared/peers", help="folder of rewards_py.py")
    ap.add_argument("--data", default="data/tiny/train.jsonl")
    ap.add_argument("--trl-advantages", action="store_true",
                    help="TRL's float32 advantages from the logged rewards instead of grpo's")
    ap.add_argument("--save", default=None, help="save the replayed model here (HF layout, float32)")
    args = ap.parse_args()
    sys.path.insert(0, args.peers)
    from rewards_py import accuracy, think_format  # noqa: E402 (the peers folder is an argument)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    d = os.path.join(args.out_dir, f"s{args.seed}")
    cmd = [args.grpo, "run", "recipes/tiny-zero.lua", "--set", f"seed={args.seed}", "--set", f"output_dir={d}",
           "--set", f"stages.grpo.max_steps={args.steps}", "--set", "stages.grpo.log_completions_steps=1",
           "--set", "stages.grpo.log_completion_ids=true", "--set", "stages.eval_before.limit=1",
           "--set", "stages.eval_after.limit=1", "--overwrite", "--quiet"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"grpo: exit {p.returncode}\n{p.stderr[-2000:]}")
    run = os.path.join(d, "tiny-zero")
    metrics = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
    gnorm = {m["step"]: m["grad_norm"] for m in metrics if m.get("stage") == "grpo" and "grad_norm" in m}
    rows = [json.loads(l) for l in open(os.path.join(run, "samples.jsonl"))]
    answer = {}
    for line in open(args.data):
        r = json.loads(line)
        answer[r["prompt"] + "\n"] = r["answer"]
    differ = 0
    for r in rows:
        py = (accuracy(r["completion"], answer[r["prompt"]]), think_format(r["completion"]))
        differ += py != (r["rewards"]["boxed_math"], r["rewards"]["think_format"])
    print(f"rewards: {len(rows)} completions, {differ} scored differently by rewards_py.py\n")

    model = AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float64, experts_implementation="eager")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    adv_changed = 0
    print("| step | grad_norm grpo | grad_norm replay | relative difference |")
    print("|---|---|---|---|")
    worst_gn = 0.0
    for step in range(1, args.steps + 1):
        batch = [r for r in rows if r["step"] == step]
        if args.trl_advantages:  # GRPOTrainer._generate_and_score_completions, sum_then_normalize, group
            from trl.trainer.utils import nanstd
            per_func = torch.tensor([[r["rewards"]["boxed_math"], r["rewards"]["think_format"]] for r in batch],
                                    dtype=torch.float32)
            rew = (per_func * torch.tensor([1.0, 0.2])).nansum(dim=1)
            mean = torch.nanmean(rew.view(-1, 8), dim=1).repeat_interleave(8)
            std = nanstd(rew.view(-1, 8), dim=1).repeat_interleave(8)
            adv = ((rew - mean) / (std + 1e-4)).tolist()
            for r, a in zip(batch, adv):
                adv_changed += r["advantage"] == 0 and a != 0
                r["advantage"] = a
        loss = 0
        for r in batch:
            p, c = r["prompt_ids"], r["completion_ids"]
            logits = model(torch.tensor([p + c])).logits[0, len(p) - 1:-1]
            lp = torch.log_softmax(logits, -1).gather(1, torch.tensor(c)[:, None])[:, 0]
            loss = loss + (-(r["advantage"] * torch.exp(lp - lp.detach()))).sum() / len(c) / len(batch)
        opt.zero_grad()
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
        opt.step()
        rel = abs(gnorm[step] - gn) / gn
        worst_gn = max(worst_gn, rel)
        print(f"| {step} | {gnorm[step]:.6f} | {gn:.6f} | {rel:.1e} |")

    params = dict(model.named_parameters())

    def replayed(name):  # transformers 5 fuses the experts: [E, 2I, H] gate_up and [E, H, I] down
        m = re.match(r"(.*mlp\.experts)\.(\d+)\.(gate|up|down)_proj\.weight", name)
        if not m:
            return params.get(name)
        pre, e, w = m.group(1), int(m.group(2)), m.group(3)
        if w == "down":
            return params[pre + ".down_proj"][e]
        gu = params[pre + ".gate_up_proj"][e]
        half = gu.shape[0] // 2
        return gu[:half] if w == "gate" else gu[half:]

    w0 = load_file(os.path.join(args.base, "model.safetensors"))
    w1 = load_file(os.path.join(run, "checkpoints", f"step-{args.steps}", "model.safetensors"))
    total_ref = total_diff = 0.0
    worst = (0.0, "")
    for name in sorted(w1):
        ref = replayed(name)
        if ref is None:  # e_score_correction_bias: a buffer, not trained in either
            continue
        u_ref = ref.detach() - w0[name].double()
        u_got = w1[name].double() - w0[name].double()
        rel = ((u_got - u_ref).norm() / u_ref.norm()).item()
        total_ref += u_ref.norm().item() ** 2
        total_diff += (u_got - u_ref).norm().item() ** 2
        worst = max(worst, (rel, name))
    print(f"\nafter {args.steps} steps: update (w_N - w_0) relative L2 difference {(total_diff / total_ref) ** 0.5:.2e} "
          f"over all tensors, worst tensor {worst[1]} {worst[0]:.2e}; worst step grad_norm difference {worst_gn:.1e}")
    if args.save:
        model.to(torch.float32).save_pretrained(args.save)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(args.base, f), args.save)
    if args.trl_advantages:
        print(f"TRL's advantages: {adv_changed} of {len(rows)} completions have a nonzero advantage where grpo's is 0")


if __name__ == "__main__":
    main()
