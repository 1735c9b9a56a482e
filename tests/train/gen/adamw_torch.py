#!/usr/bin/env python3
"""Write tests/train/data/adamw_torch.bin: a trajectory of torch.optim.AdamW
(single-tensor path) with torch.nn.utils.clip_grad_norm_ and transformers'
cosine schedule with warm-up, read by tests/train/test_optim.c.

Run with a Python that has torch and transformers:
    python3 tests/train/gen/adamw_torch.py tests/train/data/adamw_torch.bin
Layout (little-endian): see test_torch_fixture in tests/train/test_optim.c.
"""
import struct
import sys

import torch
from transformers import get_cosine_schedule_with_warmup

NUMELS = [(37, 1), (5, 0), (64, 1), (3, 0)]  # (numel, weight decay?)
LR, B1, B2, EPS, WD, MAX_NORM = 3e-2, 0.9, 0.999, 1e-8, 0.1, 1.0
WARMUP, MAX_STEPS, N_STEPS = 2, 10, 10


def main(out_path):
    g = torch.Generator().manual_seed(1234)
    params = [torch.nn.Parameter(torch.randn(n, generator=g, dtype=torch.float32)) for n, _ in NUMELS]
    groups = [
        {"params": [p for p, (_, d) in zip(params, NUMELS) if d], "weight_decay": WD},
        {"params": [p for p, (_, d) in zip(params, NUMELS) if not d], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=LR, betas=(B1, B2), eps=EPS, foreach=False, fused=False)
    sched = get_cosine_schedule_with_warmup(opt, WARMUP, MAX_STEPS)
    out = bytearray(b"ADAMWFX1")
    out += struct.pack("<ii", len(NUMELS), N_STEPS)
    for n, d in NUMELS:
        out += struct.pack("<ii", n, d)
    out += struct.pack("<6d", LR, B1, B2, EPS, WD, MAX_NORM)
    out += struct.pack("<ii", WARMUP, MAX_STEPS)
    for p in params:
        out += p.detach().numpy().astype("<f4").tobytes()
    for step in range(N_STEPS):
        # alternate small and large gradients so that clipping is exercised
        scale = 0.05 if step % 3 else 0.6
        grads = [torch.randn(p.shape, generator=g, dtype=torch.float32) * scale for p in params]
        for p, gr in zip(params, grads):
            p.grad = gr.clone()
            out += gr.numpy().astype("<f4").tobytes()
        norm = torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
        opt.step()
        sched.step()
        for p in params:
            out += p.detach().numpy().astype("<f4").tobytes()
        out += struct.pack("<d", float(norm))
    with open(out_path, "wb") as f:
        f.write(out)
    print(f"{out_path}: {len(out)} bytes, torch {torch.__version__}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/train/data/adamw_torch.bin")
