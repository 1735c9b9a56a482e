"""Load a grpo checkpoint (runs/NAME/checkpoints/step-N) with Hugging Face
transformers and compare its logits with `grpo forward` on the same ids.

    python tests/train/gen/check_hf_checkpoint.py CKPT_DIR GRPO_EXE

Needs torch and transformers (not needed by the project's build or tests).
Prints the largest absolute logit difference and the token agreement."""
import json, os, subprocess, sys, tempfile

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

ckpt, exe = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32).eval()
tok = AutoTokenizer.from_pretrained(ckpt)
ids = tok("What is 37 + 48?\n<think>")["input_ids"]
with tempfile.TemporaryDirectory() as d:
    inp, out = os.path.join(d, "ids.jsonl"), os.path.join(d, "out.safetensors")
    open(inp, "w").write(json.dumps({"ids": ids}) + "\n")
    subprocess.run([exe, "forward", "--model", ckpt, "--in", inp, "--out", out], check=True)
    ours = load_file(out)["logits.0"]
with torch.no_grad():
    theirs = model(torch.tensor([ids])).logits[0]
diff = (ours - theirs).abs().max().item()
agree = (ours.argmax(-1) == theirs.argmax(-1)).float().mean().item()
print(f"{ckpt}: {len(ids)} tokens, max |logit diff| {diff:.2e}, argmax agreement {agree:.3f}")
sys.exit(0 if diff < 1e-4 else 1)
