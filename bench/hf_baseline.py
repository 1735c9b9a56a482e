#!/usr/bin/env python3
"""The Hugging Face transformers baseline of issue 8's GPU benchmarks.

Same device, same run as bench_gpu (bench/gpu_run.sh runs both): a
Moonlight-shaped DeepseekV3ForCausalLM cut to 12 layers (hidden 2048, 16
heads, no query LoRA, kv_lora_rank 512, qk_nope 128, qk_rope 64, v 128, 64
routed experts top-6, 2 shared, moe_intermediate 1408, intermediate 11264,
one dense layer, vocabulary 163840: about 7.2B parameters), random bf16
weights.

  peak      bf16 GEMM 8192^3 (torch.matmul) and device copy bandwidth
            (bytes read + written), measured here
  generate  model.generate: 64 prompts x 128 random tokens -> 128 new
            tokens each (min_new_tokens = max_new_tokens: no early stop),
            sampling at temperature 1, top_k 0, top_p 1; new tokens/s
  train     forward + backward of a token-level log-prob loss (mean of
            log_softmax(logits)[next token]) on 8 x 1024 random tokens;
            tokens/s and the share of the measured bf16 GEMM peak (FLOPs:
            6 x matmul parameters a token uses x tokens + the causal
            attention, the same formula as bench_gpu)

Each result is a JSON line on --out and a line on stdout. Times come from
CUDA events around the measured region after a warm-up.

  python3 bench/hf_baseline.py [--out FILE] [--only peak,generate,train] [--tiny] [--device cuda|cpu]

--tiny shrinks the model and sizes (a quick check of this script on any
machine, not a benchmark).
"""
import argparse
import json
import math
import sys
import time

import torch
import transformers
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM


def make_config(tiny):
    kw = dict(
        vocab_size=1024 if tiny else 163840,
        hidden_size=128 if tiny else 2048,
        intermediate_size=256 if tiny else 11264,
        moe_intermediate_size=64 if tiny else 1408,
        num_hidden_layers=3 if tiny else 12,
        num_attention_heads=4 if tiny else 16,
        num_key_value_heads=4 if tiny else 16,
        n_shared_experts=2,
        n_routed_experts=16 if tiny else 64,
        num_experts_per_tok=4 if tiny else 6,
        routed_scaling_factor=2.446,
        n_group=1,
        topk_group=1,
        norm_topk_prob=True,
        q_lora_rank=None,
        kv_lora_rank=64 if tiny else 512,
        qk_nope_head_dim=32 if tiny else 128,
        qk_rope_head_dim=16 if tiny else 64,
        v_head_dim=32 if tiny else 128,
        first_k_dense_replace=1,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=0,
    )
    c = DeepseekV3Config(**kw)
    c.rope_theta = 50000.0
    if getattr(c, "rope_parameters", None) is not None:
        c.rope_parameters = {"rope_type": "default", "rope_theta": 50000.0}
    return c


def active_matmul_params(c):
    """Parameters of one token's matmuls (routed + shared experts), LM head included."""
    d, H = c.hidden_size, c.num_attention_heads
    dqk = c.qk_nope_head_dim + c.qk_rope_head_dim
    dc, dr, dn, dv = c.kv_lora_rank, c.qk_rope_head_dim, c.qk_nope_head_dim, c.v_head_dim
    q = d * c.q_lora_rank + c.q_lora_rank * H * dqk if c.q_lora_rank else d * H * dqk
    attn = q + d * (dc + dr) + dc * H * (dn + dv) + H * dv * d
    dense = 3 * d * c.intermediate_size
    moe = 3 * d * c.moe_intermediate_size * (c.num_experts_per_tok + c.n_shared_experts) + d * c.n_routed_experts
    total = c.vocab_size * d
    for layer in range(c.num_hidden_layers):
        total += attn + (moe if layer >= c.first_k_dense_replace else dense)
    return total


def attn_flops(c, T):
    """Causal attention FLOPs of one sequence of T tokens, all layers, forward."""
    dqk = c.qk_nope_head_dim + c.qk_rope_head_dim
    return 2.0 * T * (T + 1) / 2 * c.num_attention_heads * (dqk + c.v_head_dim) * c.num_hidden_layers


class Recorder:
    def __init__(self, path, device):
        self.f = open(path, "a") if path else None
        self.device = device

    def __call__(self, section, **kv):
        kv = {"section": section, "device": self.device, "impl": "transformers " + transformers.__version__, **kv}
        line = json.dumps(kv)
        print(line, flush=True)
        if self.f:
            self.f.write(line + "\n")
            self.f.flush()


def timer(device):
    """(start, stop) -> seconds, with CUDA events on a GPU."""
    if device == "cuda":
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def start():
            s.record()

        def stop():
            e.record()
            torch.cuda.synchronize()
            return s.elapsed_time(e) / 1e3

        return start, stop
    t = [0.0]

    def start():
        t[0] = time.perf_counter()

    def stop():
        return time.perf_counter() - t[0]

    return start, stop


def gemm_peak(device, n, reps):
    """bf16 n^3 matmul FLOP/s on random data (never zeros)."""
    g = torch.Generator(device=device).manual_seed(1)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=g)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=g)
    for _ in range(3):
        a @ b
    start, stop = timer(device)
    start()
    for _ in range(reps):
        a @ b
    return 2 * n**3 / (stop() / reps)


def peak(rec, device, tiny):
    n = 512 if tiny else 8192
    f = gemm_peak(device, n, 2 if tiny else 20)
    rec("peak", what="gemm_bf16", n=n, TFLOP_per_s=round(f / 1e12, 2))
    nbytes = (64 << 20) if tiny else (2 << 30)
    g = torch.Generator(device=device).manual_seed(3)
    x = torch.rand(nbytes // 4, device=device, generator=g)
    y = torch.empty_like(x)
    y.copy_(x)
    start, stop = timer(device)
    reps = 3 if tiny else 20
    start()
    for i in range(reps):
        (y if i % 2 == 0 else x).copy_(x if i % 2 == 0 else y)
    t = stop() / reps
    rec("peak", what="copy", bytes=nbytes, GB_per_s=round(2 * nbytes / t / 1e9, 1))
    del x, y
    return f


def build_model(c, device):
    torch.manual_seed(1234)
    t0 = time.perf_counter()
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        m = DeepseekV3ForCausalLM(c)
    torch.set_default_dtype(prev)
    m = m.to(torch.bfloat16)
    return m, time.perf_counter() - t0


def generate(rec, m, c, device, tiny):
    B, P, NEW = (8, 32, 16) if tiny else (64, 128, 128)
    g = torch.Generator(device="cpu").manual_seed(7)
    ids = torch.randint(2, c.vocab_size, (B, P), generator=g).to(device)
    mask = torch.ones_like(ids)
    kw = dict(attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=0)
    m.eval()
    with torch.no_grad():
        m.generate(ids, max_new_tokens=2, min_new_tokens=2, **kw)  # warm-up
        start, stop = timer(device)
        start()
        out = m.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, **kw)
        t = stop()
    new = (out.shape[1] - P) * B
    rec("generate", prompts=B, prompt_len=P, new_tokens=int(new), seconds=round(t, 3),
        new_tokens_per_s=round(new / t, 1))


def train(rec, m, c, device, tiny, peak_bf16):
    S, T = (2, 64) if tiny else (8, 1024)
    g = torch.Generator(device="cpu").manual_seed(99)
    ids = torch.randint(2, c.vocab_size, (S, T), generator=g).to(device)
    m.train()

    def step():
        logits = m(input_ids=ids).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        tok = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
        loss = -tok.mean()
        loss.backward()
        return loss

    checkpointing = False
    try:
        step()  # warm-up
    except torch.OutOfMemoryError:
        m.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        m.gradient_checkpointing_enable()
        checkpointing = True
        step()
    m.zero_grad(set_to_none=True)
    start, stop = timer(device)
    best = math.inf
    for _ in range(1 if tiny else 3):
        start()
        step()
        best = min(best, stop())
        m.zero_grad(set_to_none=True)
    n = S * T
    flops = 6.0 * active_matmul_params(c) * n + 3.0 * S * attn_flops(c, T)
    rec("train", seqs=S, seq_len=T, gradient_checkpointing=checkpointing, step_s=round(best, 4),
        tokens_per_s=round(n / best, 1), TFLOP=round(flops / 1e12, 2), TFLOP_per_s=round(flops / best / 1e12, 2),
        share_of_bf16_peak=round(flops / best / peak_bf16, 3) if peak_bf16 else None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out")
    ap.add_argument("--only", default="peak,generate,train")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    rec = Recorder(a.out, torch.cuda.get_device_name() if a.device == "cuda" else "cpu")
    only = a.only.split(",")
    if "peak" in only:
        peak_bf16 = peak(rec, a.device, a.tiny)
    else:  # the train share needs the peak: measured without a record
        peak_bf16 = gemm_peak(a.device, 512 if a.tiny else 8192, 2 if a.tiny else 10)
    c = make_config(a.tiny)
    if "generate" in only or "train" in only:
        m, t = build_model(c, a.device)
        rec("model", params=sum(p.numel() for p in m.parameters()), active_matmul_params=active_matmul_params(c),
            init_s=round(t, 1), experts_implementation=str(getattr(c, "_experts_implementation", None)))
        if "generate" in only:
            generate(rec, m, c, a.device, a.tiny)
        if "train" in only:
            train(rec, m, c, a.device, a.tiny, peak_bf16)


if __name__ == "__main__":
    sys.exit(main())
