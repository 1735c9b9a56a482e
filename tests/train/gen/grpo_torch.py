#!/usr/bin/env python3
"""Write tests/train/data/grpo_torch.bin: the GRPO loss on padded [B, T]
float64 batches with its gradients w.r.t. the per-token logprobs and
entropies from autograd, and TRL's logged metrics:
- TRL's own GRPOTrainer._compute_loss (trl 1.16, called unbound on a stand-in
  trainer object) for every loss_type (grpo bnpo dr_grpo dapo cispo sapo luspo
  vespo) x importance_sampling_level x beta {0, 0.04 k3} x 4 variants (on
  policy; old logprobs + entropy bonus + mask_truncated_completions +
  top_entropy_quantile; epsilon_high + delta + off_policy_mask_threshold +
  use_bias_correction_kl; bias correction + top_entropy_quantile + non-default
  sapo/vespo parameters + a negative OPSM threshold), and two 6-step
  trajectories of use_adaptive_entropy on one stand-in trainer, and 32 cases
  of the sampler/trainer importance-sampling correction (its ratio and
  metrics restated from TRL's generation step, fed to TRL's loss);
- for verl's k1/k2 estimators (TRL has k3 only) TRL's formula restated here;
then advantages and reward metrics (nil rewards, weights, every scale_rewards
and group size; sum_then_normalize and GDPO's normalize_then_sum, restated
from TRL's _generate_and_score_completions). Read by tests/train/test_grpo_torch.c
(one micro-batch per step, so TRL's normalisers are the step's: B sequences,
mask.sum() tokens, one micro-batch).

    python3 tests/train/gen/grpo_torch.py tests/train/data/grpo_torch.bin
"""
import collections
import itertools
import math
import struct
import sys
import types

import torch

try:
    from trl.trainer.grpo_trainer import GRPOTrainer
except ImportError:  # the fixture needs TRL's code; the tests only the .bin
    sys.exit("grpo_torch.py needs trl (pip install trl) to write the fixture")

LOSS_TYPES = ["grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo"]
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


class _Accel:
    """accelerate stand-in for one process."""

    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def pad_across_processes(self, x, dim=0, pad_index=0):
        return x

    def reduce(self, x, reduction="sum"):
        return x


METRICS = ["kl", "entropy", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean",
           "clip_ratio/low_min", "clip_ratio/high_max", "cispo_clip_ratio", "vespo/phi_seq_mean", "policy_loss",
           "entropy_coef"]
IS_METRICS = ["sampling/sampling_logp_difference/mean", "sampling/sampling_logp_difference/max",
              "sampling/importance_sampling_ratio/min", "sampling/importance_sampling_ratio/mean",
              "sampling/importance_sampling_ratio/max"]
IS_MODES = ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]


def trl_is_ratio(c, old, samp, mask):
    """TRL's _generate_and_score_completions, vllm_importance_sampling_correction
    (restated: it sits inside the generation step), and its metrics."""
    diff = torch.nan_to_num((old - samp) * mask, nan=0.0)
    seq = c["is_mode"] in ("sequence_mask", "sequence_truncate")
    r = torch.exp(diff.sum(dim=-1, keepdim=True) if seq else diff)
    lo, hi = c["is_min"], c["is_max"]
    if c["is_mode"].endswith("truncate"):
        r = torch.clamp(r, min=None if math.isnan(lo) else lo, max=None if math.isnan(hi) else hi)
    else:
        bad = (r < (-math.inf if math.isnan(lo) else lo)) | (r > (math.inf if math.isnan(hi) else hi))
        r = r.masked_fill(bad, 0.0)
    delta = torch.abs(old - samp)
    mb = mask.bool()
    delta = delta[mb & ~torch.isnan(delta)]
    flat = r.flatten() if seq else r[mb]
    z = lambda x, f: f(x).item() if x.numel() > 0 else 0.0
    return r, [z(delta, torch.mean), z(delta, torch.max), z(flat, torch.min), z(flat, torch.mean), z(flat, torch.max)]


def trl_call(c, logp, old, ref, ent, adv, mask, t=None, isr=None, samp=None):
    """GRPOTrainer._compute_loss itself on a stand-in trainer: returns the loss
    and TRL's logged metrics (NaN where TRL logs nothing). t: the stand-in of
    the previous call of an adaptive-entropy trajectory (its controller state
    carries over), or None for a fresh one."""
    if t is not None:
        t._metrics = {"train": collections.defaultdict(list)}
        t._get_per_token_logps_and_entropies = lambda *a, **k: (logp, ent, None)
        loss, metrics = _trl_run(t, logp, old, ref, adv, mask)
        return loss, metrics, t
    t = types.SimpleNamespace()
    t.accelerator = _Accel()
    t.model = types.SimpleNamespace(training=True)
    t.aux_loss_enabled = False
    t.top_entropy_quantile = c["tq"]
    t.get_high_entropy_mask = types.MethodType(GRPOTrainer.get_high_entropy_mask, t)
    t.get_off_policy_mask = GRPOTrainer.get_off_policy_mask
    t.get_gamma_weights = GRPOTrainer.get_gamma_weights
    t.off_policy_mask_threshold = None if math.isnan(c["opsm"]) else c["opsm"]
    t.importance_sampling_level = c["level"]
    t.beta = c["beta"]
    t.loss_type = c["loss_type"]
    t.epsilon_low, t.epsilon_high = c["eps"], c["eps_high"]
    t.args = types.SimpleNamespace(
        use_bias_correction_kl=bool(c["bias"]), delta=c["delta"] if c["delta"] > 0 else None,
        sapo_temperature_pos=c["sapo"][0], sapo_temperature_neg=c["sapo"][1],
        vespo_k_pos=c["vespo"][0], vespo_lambda_pos=c["vespo"][1], vespo_k_neg=c["vespo"][2],
        vespo_lambda_neg=c["vespo"][3], steps_per_generation=1, entropy_target=c["ent_target"],
        entropy_coef_delta=c["ent_delta"], entropy_coef_min=c["ent_min"], entropy_coef_max=c["ent_max"])
    t.use_vllm = isr is not None
    t.vllm_importance_sampling_correction = isr is not None
    t.current_gradient_accumulation_steps = 1
    t.max_completion_length = c["max_len"]
    t.use_adaptive_entropy = bool(c["adaptive"])
    t._entropy_bonus_enabled = c["entropy_coef"] != 0 or t.use_adaptive_entropy
    t.entropy_coef = c["entropy_coef"]
    t._last_world_entropy = float("inf")
    t._entropy_window_stats = None
    t._metrics = {"train": collections.defaultdict(list)}
    t._get_per_token_logps_and_entropies = lambda *a, **k: (logp, ent, None)
    loss, metrics = _trl_run(t, logp, old, ref, adv, mask, isr, samp)
    return loss, metrics, t


def _trl_run(t, logp, old, ref, adv, mask, isr=None, samp=None):
    B = logp.shape[0]
    inputs = {
        "prompt_ids": torch.zeros(B, 0, dtype=torch.long), "prompt_mask": torch.zeros(B, 0, dtype=torch.long),
        "completion_ids": torch.zeros(B, logp.shape[1], dtype=torch.long), "completion_mask": mask,
        "advantages": adv, "num_items_in_batch": mask.sum(),
    }
    if old is not None:
        inputs["old_per_token_logps"] = old
    if t.beta != 0:
        inputs["ref_per_token_logps"] = ref
    if isr is not None:
        inputs["importance_sampling_ratio"] = isr
        inputs["sampling_per_token_logps"] = samp
    loss = GRPOTrainer._compute_loss(t, None, inputs)
    m = t._metrics["train"]
    return loss, [m[k][0] if k in m else float("nan") for k in METRICS]


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
    return adv, _reward_metrics(R, w, r, zero)


def trl_advantages_gdpo(G, R, w):
    """TRL's _generate_and_score_completions, normalize_then_sum (GDPO)."""
    unscorable = torch.isnan(R).all(dim=1)
    grouped = R.view(-1, G, R.shape[1])
    mean_k = torch.nanmean(grouped, dim=1, keepdim=True)
    std_k = nanstd(grouped, dim=1).unsqueeze(1) if G > 1 else torch.zeros_like(mean_k)
    z = ((grouped - mean_k) / (std_k + 1e-4)).view(-1, R.shape[1])
    s = (z * w.unsqueeze(0)).nansum(dim=1)
    s[unscorable] = float("nan")
    std = nanstd(s).expand_as(s) if s.numel() > 1 else torch.zeros_like(s)
    adv = torch.nan_to_num((s - torch.nanmean(s)) / (std + 1e-4), nan=0.0)
    zero = torch.isclose(std, torch.zeros_like(std)).double().mean()
    r = (R * w.unsqueeze(0)).nansum(dim=1)
    r[unscorable] = float("nan")
    return adv, _reward_metrics(R, w, r, zero)


def _reward_metrics(R, w, r, zero):
    fmean = torch.stack([torch.nanmean(R[:, i]) for i in range(R.shape[1])])
    fstd = torch.stack([nanstd(R[:, i]) for i in range(R.shape[1])])
    return (torch.nanmean(r).item(), nanstd(r).item(), zero.item(), fmean, fstd)


# sapo and vespo parameters must be exact in float32: TRL builds them with
# torch.where(cond, python float, python float), i.e. rounds them to float32
# (sapo_temperature_neg's default 1.05 becomes 1.0499999523), we keep doubles
DEFAULTS = {"eps": 0.2, "eps_high": 0.2, "delta": 0.0, "entropy_coef": 0.0, "mask_trunc": 0, "max_len": 12,
            "bias": 0, "tq": 1.0, "opsm": float("nan"), "sapo": (1.0, 1.0625), "vespo": (2.0, 3.0, 3.0, 2.0),
            "adaptive": 0, "traj_pos": 0, "ent_target": 0.2, "ent_delta": 0.005, "ent_min": 0.0, "ent_max": 1.0,
            "ent_scale": 1.0, "is_mode": None, "is_min": float("nan"), "is_max": float("nan")}


def case_grid():
    cases = []
    # verl's k1/k2 on the restated formula (the clip family)
    for lt, lvl, kl, variant in itertools.product(LOSS_TYPES[:4], LEVELS, ["k1", "k2"], range(3)):
        c = dict(DEFAULTS, loss_type=lt, level=lvl, kl=kl, beta=0.04, has_old=variant != 0, trl=0)
        if variant == 1:
            c.update(entropy_coef=0.01, mask_trunc=1)
        if variant == 2:
            c.update(eps_high=0.28, delta=1.4)
        cases.append(c)
    # TRL's own code
    for lt, lvl, beta, variant in itertools.product(LOSS_TYPES, LEVELS, [0.0, 0.04], range(4)):
        c = dict(DEFAULTS, loss_type=lt, level=lvl, kl="k3" if beta else None, beta=beta,
                 has_old=variant != 0, trl=1)
        if variant == 1:
            c.update(entropy_coef=0.01, mask_trunc=1, tq=0.2)
        if variant == 2:
            c.update(eps_high=1.3 if lt == "cispo" else 0.28, delta=1.4, opsm=0.05, bias=1)
        if variant == 3:
            c.update(bias=1, tq=0.5, entropy_coef=0.02, opsm=-0.02, sapo=(2.0, 0.625),
                     vespo=(1.5, 2.5, 2.0, 1.25), eps_high=5.0 if lt == "cispo" else 0.2)
        cases.append(c)
    # the sampler/trainer importance-sampling correction (+ OPSM on the
    # sampler's log-probs), every mode; vespo takes token modes only
    for k, (lt, lvl, beta) in enumerate(itertools.product(LOSS_TYPES, LEVELS, [0.0, 0.04])):
        mode = IS_MODES[k % 4] if lt != "vespo" else IS_MODES[k % 2]
        lo, hi = (0.8, 1.2) if mode.startswith("token") else (0.5, 3.0)
        if k % 3 == 2:
            lo = float("nan")  # no lower bound
        cases.append(dict(DEFAULTS, loss_type=lt, level=lvl, kl="k3" if beta else None, beta=beta, has_old=True,
                          trl=1, is_mode=mode, is_min=lo, is_max=hi, opsm=0.02,
                          eps_high=1.3 if lt == "cispo" else 0.2))
    # use_adaptive_entropy: trajectories of consecutive optimizer steps on one
    # stand-in trainer; the entropies are scaled per step so that the step's
    # entropy falls on both sides of the target
    for traj in range(2):
        for pos, scale in enumerate([0.6, 1.4, 0.8, 0.5, 1.6, 0.7]):
            c = dict(DEFAULTS, loss_type=["grpo", "dapo"][traj], level="token", kl=None, beta=0.0, has_old=True,
                     trl=1, adaptive=1, traj_pos=pos, ent_scale=scale)
            if traj == 0:
                c.update(entropy_coef=0.02, ent_target=1.5, ent_delta=0.01, ent_max=0.035)
            else:
                c.update(entropy_coef=0.0, ent_target=2.0, ent_delta=0.25, ent_min=0.125, tq=0.5)
            cases.append(c)
    return cases


def main(out_path):
    g = torch.Generator().manual_seed(20260601)
    cases = case_grid()
    out = bytearray(b"GRPOFX02")
    out += struct.pack("<i", len(cases))
    stand_in = None
    for c in cases:
        B, T = 6, 12
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
        ent = f32(torch.rand(B, T, generator=g) * 3 * c["ent_scale"])
        adv = f32(torch.randn(B, generator=g))
        samp = f32(old + (torch.rand(B, T, generator=g) - 0.5) * 0.6)  # the sampler's log-probs
        samp[1, 0] = float("nan")  # a token the sampler could not score
        isr, is_metrics = None, [float("nan")] * len(IS_METRICS)
        if c["is_mode"]:
            isr, is_metrics = trl_is_ratio(c, old, samp, mask)
            isr = isr.float().double()  # as we store it
        lp = logp.clone().requires_grad_(True)
        en = ent.clone().requires_grad_(True)
        if c["trl"]:
            loss, metrics, t = trl_call(c, lp, old if c["has_old"] else None, ref, en, adv, mask,
                                        stand_in if c["traj_pos"] > 0 else None, isr, samp if isr is not None else None)
            stand_in = t if c["adaptive"] else None
        else:
            loss, metrics = trl_loss(c, lp, old if c["has_old"] else None, ref, en, adv, mask), \
                [float("nan")] * len(METRICS)
        loss.backward()
        out += struct.pack(
            "<13i", LOSS_TYPES.index(c["loss_type"]), LEVELS.index(c["level"]),
            -1 if c["kl"] is None else ["k3", "k1", "k2"].index(c["kl"]), int(c["has_old"]),
            c["mask_trunc"], c["max_len"], c["bias"], B, T, c["trl"], c["adaptive"], c["traj_pos"],
            IS_MODES.index(c["is_mode"]) if c["is_mode"] else -1)
        out += struct.pack("<19d", c["beta"], c["eps"], c["eps_high"], c["delta"], c["entropy_coef"], c["tq"],
                           c["opsm"], *c["sapo"], *c["vespo"], c["ent_target"], c["ent_delta"], c["ent_min"],
                           c["ent_max"], c["is_min"], c["is_max"])
        out += struct.pack(f"<{B}i", *lens.tolist())
        for x in (logp, old, ref, ent, samp):
            out += x.float().numpy().astype("<f4").tobytes()
        out += (isr.expand(B, T) if isr is not None else torch.ones(B, T)).double().numpy().astype("<f8").tobytes()
        out += (pad & ~tool).to(torch.uint8).numpy().tobytes()
        out += trunc.numpy().tobytes()
        out += adv.float().numpy().astype("<f4").tobytes()
        out += struct.pack("<d", loss.item())
        out += lp.grad.numpy().astype("<f8").tobytes()
        g_ent = en.grad if en.grad is not None else torch.zeros_like(ent)
        out += g_ent.numpy().astype("<f8").tobytes()
        out += struct.pack(f"<{len(METRICS)}d", *metrics)
        out += struct.pack(f"<{len(IS_METRICS)}d", *is_metrics)
    # advantages: TRL's sum_then_normalize per scale_rewards, and GDPO's
    # normalize_then_sum, with nil (NaN) rewards
    adv_cases = []
    for agg, scale, G, F in itertools.product([0, 1], ["group", "batch", "none"], [1, 2, 4, 8], [1, 3]):
        if agg == 1 and scale != "group":
            continue  # scale_rewards is not used by normalize_then_sum
        N = G * 6
        R = torch.randn(N, F, generator=g).double()
        R = R.float().double()
        R[torch.rand(N, F, generator=g) < 0.25] = float("nan")
        R[0, :] = float("nan")  # one unscorable sample
        if G > 1:  # one group with equal rewards
            R[G : 2 * G, :] = 1.0
        w = (torch.rand(F, generator=g) * 2).float().double()
        res = trl_advantages_gdpo(G, R, w) if agg else trl_advantages(scale, G, R, w)
        adv_cases.append((agg, scale, G, F, R, w, res))
    out += struct.pack("<i", len(adv_cases))
    for agg, scale, G, F, R, w, (adv, stats) in adv_cases:
        out += struct.pack("<5i", ["group", "batch", "none"].index(scale), G, F, R.shape[0], agg)
        out += R.float().numpy().astype("<f4").tobytes()
        out += w.float().numpy().astype("<f4").tobytes()
        out += adv.numpy().astype("<f8").tobytes()
        out += struct.pack("<3d", *stats[:3])
        out += stats[3].numpy().astype("<f8").tobytes() + stats[4].numpy().astype("<f8").tobytes()
    with open(out_path, "wb") as f:
        f.write(out)
    import trl

    print(f"{out_path}: {len(cases)} loss cases ({sum(c['trl'] for c in cases)} by TRL's code), "
          f"{len(adv_cases)} advantage cases, {len(out)} bytes, torch {torch.__version__}, trl {trl.__version__}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/train/data/grpo_torch.bin")
