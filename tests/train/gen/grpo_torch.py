#!/usr/bin/env python3
"""Write tests/train/data/grpo_torch.bin: the GRPO loss of TRL's
GRPOTrainer._compute_loss, restated here in float64 torch on padded [B, T]
batches, and its gradients w.r.t. the per-token logprobs and entropies from
autograd, for every loss_type x importance_sampling_level x KL estimator,
with and without old logprobs, delta, entropy bonus and
mask_truncated_completions; then TRL's advantages and reward metrics
(nil rewards, weights, every scale_rewards and group size). Read by
test_torch_fixture and test_torch_advantages in
tests/train/test_grpo.c (one micro-batch per step, so TRL's normalisers are
the step's: B sequences, mask.sum() tokens, one micro-batch).

    python3 tests/train/gen/grpo_torch.py tests/train/data/grpo_torch.bin
"""
import itertools
import struct
import sys

import torch

LOSS_TYPES = ["grpo", "bnpo", "dr_grpo", "dapo"]
LEVELS = ["token", "sequence"]
KLS = [None, "k3", "k1", "k2"]  # None: beta = 0


def trl_loss(c, logp, old, ref, ent, adv, mask):
    """TRL's formula (grpo_trainer.py, _compute_loss) for one micro-batch;
    k1/k2 are verl's estimators (TRL has k3 only)."""
    old = logp.detach() if old is None else old
    log_ratio = logp - old
    if c["level"] == "token":
        liw = log_ratio
    else:
        liw = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    coef_1 = torch.exp(liw)
    if c["kl"] is not None:
        d = ref - logp
        kl = {"k3": torch.exp(d) - d - 1, "k1": -d, "k2": 0.5 * d * d}[c["kl"]]
    coef_2 = torch.clamp(coef_1, 1 - c["eps"], 1 + c["eps_high"])
    if c["delta"] > 0:
        coef_1 = torch.clamp(coef_1, max=c["delta"])
    a = adv.unsqueeze(1)
    ptl = -torch.min(coef_1 * a, coef_2 * a)
    if c["kl"] is not None:
        ptl = ptl + c["beta"] * kl
    lt = c["loss_type"]
    if lt == "grpo":
        loss = ((ptl * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif lt == "bnpo":
        loss = (ptl * mask).sum() / mask.sum().clamp(min=1.0)
    elif lt == "dr_grpo":
        loss = (ptl * mask).sum() / (ptl.size(0) * c["max_len"])
    else:  # dapo: num_items_in_batch = mask.sum() for a one-micro-batch step
        loss = (ptl * mask).sum() / mask.sum().clamp(min=1.0)
    if c["entropy_coef"] != 0:
        loss = loss - c["entropy_coef"] * (ent * mask).sum() / mask.sum().clamp(min=1.0)
    return loss


def nanstd(x, dim=None):
    """TRL's nanstd: unbiased, NaN with fewer than two values."""
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    var = torch.nanmean((x - mean) ** 2, dim=dim, keepdim=True)
    cnt = (~torch.isnan(x)).sum(dim=dim, keepdim=True).double()  # float64 throughout
    var = var * torch.where(cnt > 1, cnt / (cnt - 1), torch.full_like(var, float("nan")))
    s = torch.sqrt(var)
    return s.squeeze() if dim is None else s.squeeze(dim)


def trl_advantages(scale, G, R, w):
    """TRL's _generate_and_score_completions, sum_then_normalize."""
    unscorable = torch.isnan(R).all(dim=1)
    r = (R * w.unsqueeze(0)).nansum(dim=1)
    r[unscorable] = float("nan")
    mean = torch.nanmean(r.view(-1, G), dim=1).repeat_interleave(G)
    if scale in ("group", "none"):
        std = nanstd(r.view(-1, G), dim=1).repeat_interleave(G) if G > 1 else torch.zeros_like(r)
    else:
        std = nanstd(r).expand_as(r) if r.numel() > 1 else torch.zeros_like(r)
    adv = r - mean
    if scale != "none":
        adv = adv / (std + 1e-4)
    zero = torch.isclose(std, torch.zeros_like(std)).double().mean()
    adv = torch.nan_to_num(adv, nan=0.0)
    fmean = torch.stack([torch.nanmean(R[:, i]) for i in range(R.shape[1])])
    fstd = torch.stack([nanstd(R[:, i]) for i in range(R.shape[1])])
    return adv, (torch.nanmean(r).item(), nanstd(r).item(), zero.item(), fmean, fstd)


def main(out_path):
    g = torch.Generator().manual_seed(20260601)
    cases = []
    for lt, lvl, kl, variant in itertools.product(LOSS_TYPES, LEVELS, KLS, range(3)):
        cases.append(
            {
                "loss_type": lt,
                "level": lvl,
                "kl": kl,
                "beta": 0.04 if kl else 0.0,
                "has_old": variant != 0,  # variant 0: on-policy (ratio 1, min() ties)
                "eps": 0.2,
                "eps_high": 0.28 if variant == 2 else 0.2,
                "delta": 1.4 if variant == 2 else 0.0,
                "entropy_coef": 0.01 if variant == 1 else 0.0,
                "mask_trunc": 1 if variant == 1 else 0,
                "max_len": 12,
            }
        )
    out = bytearray(b"GRPOFX01")
    out += struct.pack("<i", len(cases))
    for c in cases:
        B, T = 5, 12
        lens = torch.randint(1, T + 1, (B,), generator=g)
        lens[3] = 0  # an empty completion
        pad = torch.arange(T).unsqueeze(0) < lens.unsqueeze(1)
        tool = torch.rand(B, T, generator=g) < 0.1  # tokens the model did not produce
        mask = (pad & ~tool).double()
        trunc = (torch.rand(B, generator=g) < 0.4).to(torch.uint8)
        if c["mask_trunc"]:
            mask = mask * (1 - trunc.double()).unsqueeze(1)
        f32 = lambda x: x.float().double()  # inputs as float32 values
        old = f32(-2.0 + torch.rand(B, T, generator=g))
        logp = f32(old + (torch.rand(B, T, generator=g) - 0.5) * 0.9)
        if not c["has_old"]:
            logp = old.clone()
        ref = f32(old + (torch.rand(B, T, generator=g) - 0.5) * 0.6)
        ent = f32(torch.rand(B, T, generator=g) * 3)
        adv = f32(torch.randn(B, generator=g))
        lp = logp.clone().requires_grad_(True)
        en = ent.clone().requires_grad_(True)
        loss = trl_loss(c, lp, old if c["has_old"] else None, ref, en, adv, mask)
        loss.backward()
        out += struct.pack(
            "<6i", LOSS_TYPES.index(c["loss_type"]), LEVELS.index(c["level"]),
            -1 if c["kl"] is None else ["k3", "k1", "k2"].index(c["kl"]), int(c["has_old"]),
            c["mask_trunc"], c["max_len"])
        out += struct.pack("<5d", c["beta"], c["eps"], c["eps_high"], c["delta"], c["entropy_coef"])
        out += struct.pack("<2i", B, T)
        out += struct.pack(f"<{B}i", *lens.tolist())
        for x in (logp, old, ref, ent):
            out += x.float().numpy().astype("<f4").tobytes()
        out += (pad & ~tool).to(torch.uint8).numpy().tobytes()
        out += trunc.numpy().tobytes()
        out += adv.float().numpy().astype("<f4").tobytes()
        out += struct.pack("<d", loss.item())
        out += lp.grad.numpy().astype("<f8").tobytes()
        g_ent = en.grad if en.grad is not None else torch.zeros_like(ent)
        out += g_ent.numpy().astype("<f8").tobytes()
    # advantages: TRL's sum_then_normalize with nil (NaN) rewards, per scale_rewards
    adv_cases = []
    for scale, G, F in itertools.product(["group", "batch", "none"], [1, 2, 4, 8], [1, 3]):
        N = G * 6
        R = torch.randn(N, F, generator=g).double()
        R = R.float().double()
        R[torch.rand(N, F, generator=g) < 0.25] = float("nan")
        R[0, :] = float("nan")  # one unscorable sample
        if G > 1:  # one group with equal rewards
            R[G : 2 * G, :] = 1.0
        w = (torch.rand(F, generator=g) * 2).float().double()
        adv_cases.append((scale, G, F, R, w, trl_advantages(scale, G, R, w)))
    out += struct.pack("<i", len(adv_cases))
    for scale, G, F, R, w, (adv, stats) in adv_cases:
        out += struct.pack("<4i", ["group", "batch", "none"].index(scale), G, F, R.shape[0])
        out += R.float().numpy().astype("<f4").tobytes()
        out += w.float().numpy().astype("<f4").tobytes()
        out += adv.numpy().astype("<f8").tobytes()
        out += struct.pack("<3d", *stats[:3])
        out += stats[3].numpy().astype("<f8").tobytes() + stats[4].numpy().astype("<f8").tobytes()
    with open(out_path, "wb") as f:
        f.write(out)
    print(f"{out_path}: {len(cases)} cases, {len(out)} bytes, torch {torch.__version__}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/train/data/grpo_torch.bin")
