#!/usr/bin/env python3
"""An FP8 copy of the shared fixture hf-tiny-v3-a, quantised by PyTorch.

DeepSeek-V3's checkpoint format: every linear weight inside the decoder
layers (attention projections, dense MLP, shared and routed experts; not the
router `mlp.gate`) stored as float8_e4m3fn with a float32
`<name>_scale_inv` of one scale per 128 x 128 block, W = q * scale_inv.
The blocks are quantised as DeepGEMM's per_block_cast_to_fp8 does:

    amax = max(|w| over the block).clamp(1e-4)
    q = (w * (448 / amax)).to(float8_e4m3fn)     (round to nearest even, saturating)
    scale_inv = amax / 448

The embedding and lm_head are stored in bfloat16 (as the hub's FP8
checkpoints store them; round to nearest even), the norms, router and
routing bias stay float32 as in the source: exactly what a frozen fp8 model
holds, so `--precision fp8` on hf-tiny-v3-a must reproduce this file.

Writes OUTDIR/config.json (hf-tiny-v3-a's plus DeepSeek-V3's
quantization_config), OUTDIR/model.safetensors, and
OUTDIR/quant_check.safetensors: a [200, 300] matrix (6 blocks, partial edge
blocks) made from an integer hash (exact in any language: the C test makes
the same floats) and its PyTorch quantisation, `q` F8_E4M3 and `scale_inv`
F32 [2, 3]: the bit-exact check of the C quantiser.

Run: /work/peer-venv/bin/python tests/model/gen/make_fp8_fixture.py \
         ../shared/fixtures/hf-tiny-v3-a tests/model/data/tiny-v3-a-fp8
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file


def per_block_cast_to_fp8(x):
    """DeepGEMM's per_block_cast_to_fp8 (2-D, padded to whole blocks)."""
    m, n = x.shape
    pm, pn = (m + 127) // 128 * 128, (n + 127) // 128 * 128
    xp = torch.zeros((pm, pn), dtype=x.dtype)
    xp[:m, :n] = x
    xv = xp.view(pm // 128, 128, pn // 128, 128)
    amax = xv.abs().float().amax(dim=(1, 3), keepdim=True).clamp(1e-4)
    xs = (xv * (448.0 / amax)).to(torch.float8_e4m3fn)
    return xs.view(pm, pn)[:m, :n].contiguous(), (amax / 448.0).view(pm // 128, pn // 128)


def is_fp8(name, t):
    """The tensors DeepSeek-V3 ships in FP8."""
    return (t.dim() == 2 and name.startswith("model.layers.") and not name.endswith("mlp.gate.weight")
            and not name.endswith("embed_tokens.weight") and not name.endswith("shared_head.head.weight"))


def hash_matrix(rows, cols):
    """x[i] = ((i * 2654435761 mod 2^32) / 2^32 - 0.5) * 2^(i mod 7 - 3), in float64 then float32."""
    i = torch.arange(rows * cols, dtype=torch.int64)
    h = (i * 2654435761) % (1 << 32)
    x = (h.double() / 2.0 ** 32 - 0.5) * torch.pow(2.0, (i % 7 - 3).double())
    return x.float().view(rows, cols)


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    cfg["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                  "weight_block_size": [128, 128]}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    w = load_file(os.path.join(src, "model.safetensors"))
    res = {}
    nq = 0
    for name in sorted(w):
        t = w[name]
        if is_fp8(name, t):
            q, s = per_block_cast_to_fp8(t.float())
            res[name] = q
            res[name + "_scale_inv"] = s.float().contiguous()
            nq += 1
        elif name in ("model.embed_tokens.weight", "lm_head.weight"):
            res[name] = t.to(torch.bfloat16)
        else:
            res[name] = t
    save_file(res, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    x = hash_matrix(200, 300)
    q, s = per_block_cast_to_fp8(x)
    save_file({"q": q, "scale_inv": s.float().contiguous()}, os.path.join(out, "quant_check.safetensors"))
    print(f"{out}: {nq} FP8 weights of {len(w)} tensors")


if __name__ == "__main__":
    main()
