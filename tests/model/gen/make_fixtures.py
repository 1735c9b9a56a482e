#!/usr/bin/env python3
"""Reference fixtures for the model tests, made with Hugging Face transformers.

Each fixture is a tiny DeepseekV3ForCausalLM with seeded random weights in a
configuration the shared fixture hf-tiny-v3-a does not cover, written as

  config.json             hub style (rope_scaling) or transformers-v5 style
                          (rope_parameters), as the variant says
  model.safetensors       float32 weights: per-expert hub names, or the v5
                          fused experts.gate_up_proj / experts.down_proj
  reference.safetensors   computed in float64 from the float32 weights:
      input_ids.0 [37], input_ids.1 [23] (int64), logits.K [T, V],
      token_logprobs.K [T-1], greedy.prompt [12] and greedy.output [24]
      (greedy with the KV cache, no EOS stop), loss.0 (mean next-token NLL)
  grads.safetensors       float64 gradients of loss.0, stored float32, hub
                          per-expert names (no lm_head when tied)

RMSNorm weights and e_score_correction_bias are randomised so every term
matters. Run: /work/venv/bin/python tests/model/gen/make_fixtures.py OUTDIR
(tests read tests/model/data/).
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

BASE = dict(
    vocab_size=160, hidden_size=48, intermediate_size=64, moe_intermediate_size=24,
    num_hidden_layers=3, num_attention_heads=3, num_key_value_heads=3, n_shared_experts=1,
    n_routed_experts=8, num_experts_per_tok=2, n_group=4, topk_group=2, routed_scaling_factor=2.5,
    kv_lora_rank=24, q_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16,
    first_k_dense_replace=1, norm_topk_prob=True, max_position_embeddings=256, rms_norm_eps=1e-6,
    tie_word_embeddings=False, bos_token_id=0, eos_token_id=1,
)
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
        "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0, "rope_theta": 10000.0}

VARIANTS = {
    # no query LoRA (q_proj), two shared experts, plain rope (no rope_scaling), eps 1e-5
    "tiny-v3-b": dict(over=dict(q_lora_rank=None, n_shared_experts=2, rms_norm_eps=1e-5),
                      rope={"rope_type": "default", "rope_theta": 50000.0}, style="hub", seed=11),
    # eight groups keeping three, top-4 of 16, unnormalised routing, two dense
    # layers of four, YaRN with mscale = mscale_all_dim = 0.707
    "tiny-v3-c": dict(over=dict(n_routed_experts=16, n_group=8, topk_group=3, num_experts_per_tok=4,
                                norm_topk_prob=False, routed_scaling_factor=1.5, first_k_dense_replace=2,
                                num_hidden_layers=4),
                      rope=dict(YARN, mscale=0.707, mscale_all_dim=0.707), style="hub", seed=12),
    # transformers-v5 files: rope_parameters spelling, fused expert tensors;
    # tied embeddings
    "tiny-v3-d": dict(over=dict(tie_word_embeddings=True),
                      rope=dict(YARN, factor=4.0), style="v5", seed=13),
}


def hub_config(cfg, rope, style):
    c = {k: v for k, v in cfg.items()}
    c.update(architectures=["DeepseekV3ForCausalLM"], model_type="deepseek_v3", hidden_act="silu",
             scoring_func="sigmoid", topk_method="noaux_tc", moe_layer_freq=1, num_nextn_predict_layers=0,
             torch_dtype="float32", rope_theta=rope["rope_theta"])
    if style == "v5":
        c["rope_parameters"] = dict(rope)
    elif rope["rope_type"] == "default":
        c["rope_scaling"] = None
    else:
        r = {k: v for k, v in rope.items() if k not in ("rope_type", "rope_theta")}
        c["rope_scaling"] = dict(type="yarn", **r)
    return c


def per_expert(sd):
    """v5 fused expert tensors -> hub per-expert names."""
    out = {}
    for k, v in sd.items():
        if k.endswith("mlp.experts.gate_up_proj"):
            p = k[: -len("gate_up_proj")]
            ie = v.shape[1] // 2
            for e in range(v.shape[0]):
                out[f"{p}{e}.gate_proj.weight"] = v[e, :ie]
                out[f"{p}{e}.up_proj.weight"] = v[e, ie:]
        elif k.endswith("mlp.experts.down_proj"):
            p = k[: -len("down_proj")]
            for e in range(v.shape[0]):
                out[f"{p}{e}.down_proj.weight"] = v[e]
        else:
            out[k] = v
    return out


def contiguous32(d):
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in d.items()}


def make(name, spec, outdir):
    torch.manual_seed(spec["seed"])
    cfg = dict(BASE, **spec["over"])
    model = DeepseekV3ForCausalLM(DeepseekV3Config(**cfg, rope_parameters=dict(spec["rope"]),
                                                   attn_implementation="eager",
                                                   experts_implementation="eager"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 1:  # RMSNorm weights
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
        for n, b in model.named_buffers():
            if n.endswith("e_score_correction_bias"):
                b.copy_(0.2 * torch.randn_like(b))
    model = model.to(torch.float32).to(torch.float64)  # weights are float32 values
    model.eval()
    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hub_config(cfg, spec["rope"], spec["style"]), f, indent=2)
    sd = {k: v for k, v in model.state_dict().items()}
    if cfg["tie_word_embeddings"]:
        sd.pop("lm_head.weight", None)
    if spec["style"] != "v5":
        sd = per_expert(sd)
    save_file(contiguous32(sd), os.path.join(d, "model.safetensors"), metadata={"format": "pt"})

    g = torch.Generator().manual_seed(spec["seed"] + 100)
    V = cfg["vocab_size"]
    ids = [torch.randint(2, V, (37,), generator=g), torch.randint(2, V, (23,), generator=g)]
    ref = {"input_ids.0": ids[0], "input_ids.1": ids[1]}
    with torch.no_grad():
        for k, x in enumerate(ids):
            logits = model(x[None]).logits[0]
            ref[f"logits.{k}"] = logits
            lp = torch.log_softmax(logits, -1)
            ref[f"token_logprobs.{k}"] = lp[:-1].gather(1, x[1:, None])[:, 0]
        prompt = ids[0][:12]
        out = model(prompt[None], use_cache=True)
        past, toks = out.past_key_values, []
        nxt = out.logits[0, -1].argmax()
        for _ in range(24):
            toks.append(int(nxt))
            out = model(nxt.view(1, 1), past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[0, -1].argmax()
        ref["greedy.prompt"] = prompt.clone()
        ref["greedy.output"] = torch.tensor(toks, dtype=torch.int64)
    loss = model(ids[0][None], labels=ids[0][None]).loss
    loss.backward()
    ref["loss.0"] = loss.detach().reshape(1)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    grads = per_expert(grads)
    save_file({k: (v.to(torch.float32).contiguous() if v.is_floating_point() else v.contiguous())
               for k, v in ref.items()}, os.path.join(d, "reference.safetensors"))
    save_file(contiguous32(grads), os.path.join(d, "grads.safetensors"))
    nparam = sum(p.numel() for p in model.parameters())
    print(f"{name}: {nparam} parameters, loss {loss.item():.6f}, greedy {toks[:6]}...")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "data")
    torch.set_grad_enabled(True)
    for name, spec in VARIANTS.items():
        make(name, spec, out)


if __name__ == "__main__":
    main()
