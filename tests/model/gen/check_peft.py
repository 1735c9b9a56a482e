"""grpo's LoRA adapters against Hugging Face PEFT, both ways, on a model
directory with a tokenizer (data/tiny/base by default):

  1. grpo -> peft: a LoRA GRPO run of grpo (2 steps of recipes/tiny-zero.lua
     with a lora table on the attention projections) writes
     checkpoints/step-2/ (adapter_config.json, adapter_model.safetensors);
     PeftModel.from_pretrained loads it on the transformers model, and its
     logits are compared with `grpo forward --adapter` on the same ids;
  2. merged: `grpo merge` of that adapter against peft's merge_and_unload;
  3. peft -> grpo: an adapter made by peft (random A and B, r 4,
     use_rslora) saved with save_pretrained, loaded by `grpo forward
     --adapter`, logits compared with peft's;
  4. the MLP modules (gate/up/down_proj of the dense MLP and the shared
     experts): 1 with target_modules all-linear. PEFT 0.17+ on transformers
     5 rewrites gate_proj/up_proj/down_proj of DeepSeek-V3 (model_type
     mapped to qwen2_moe) to the fused routed experts' parameters
     (peft/utils/transformers_weight_conversion.py), so the dense MLP and
     the shared experts are not adapted there: the check says so and is
     skipped when that rewrite applies (transformers 4.x has per-expert
     nn.Linear modules and no rewrite).

    python tests/model/gen/check_peft.py GRPO_EXE [MODEL_DIR]

Needs torch, transformers and peft (not needed by the project's build or
tests). Exits 1 when a max |logit diff| of a check that ran is 1e-4 or
more."""
import json, os, subprocess, sys, tempfile

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import LoraConfig, PeftModel, get_peft_model

exe = os.path.abspath(sys.argv[1])
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
model_dir = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "data/tiny/base"))
tok = AutoTokenizer.from_pretrained(model_dir)
ids = tok("What is 37 + 48?\n<think>")["input_ids"]
worst = 0.0


def grpo_logits(d, extra):
    inp, out = os.path.join(d, "ids.jsonl"), os.path.join(d, "out.safetensors")
    open(inp, "w").write(json.dumps({"ids": ids}) + "\n")
    subprocess.run([exe, "forward", "--in", inp, "--out", out] + extra, check=True, stderr=subprocess.DEVNULL)
    return load_file(out)["logits.0"]


def hf_logits(m):
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0].float()


def report(what, ours, theirs):
    global worst
    diff = (ours - theirs).abs().max().item()
    agree = (ours.argmax(-1) == theirs.argmax(-1)).float().mean().item()
    worst = max(worst, diff)
    print(f"{what}: {len(ids)} tokens, max |logit diff| {diff:.2e}, argmax agreement {agree:.3f}")


def base_model():
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


ATTN = ["q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"]


def grpo_run(d, name, targets):
    recipe = os.path.join(root, "recipes/tiny-zero.lua")
    sets = ["lora.r=8", "lora.lora_alpha=16", f"lora.target_modules={json.dumps(targets)}", "stages.grpo.max_steps=2",
            "stages.grpo.learning_rate=5e-3", "stages.eval_before.limit=2", "stages.eval_after.limit=2",
            f"model={model_dir}", f"output_dir={d}", f"name={name}", "report=false"]
    cmd = [exe, "run", recipe, "--quiet"] + sum((["--set", s] for s in sets), [])
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return os.path.join(d, name, "checkpoints/step-2")


with tempfile.TemporaryDirectory() as d:
    # 1. an adapter trained by grpo, loaded by peft
    ad = grpo_run(d, "attn", ATTN)
    peft_m = PeftModel.from_pretrained(base_model(), ad).eval()
    report("grpo adapter (attention) in peft vs grpo forward --adapter",
           grpo_logits(d, ["--model", model_dir, "--adapter", ad]), hf_logits(peft_m))
    # 2. merged by grpo vs peft's merge_and_unload
    merged = os.path.join(d, "merged")
    subprocess.run([exe, "merge", "--model", model_dir, "--adapter", ad, "--out", merged], check=True,
                   stderr=subprocess.DEVNULL)
    report("grpo merge vs peft merge_and_unload", grpo_logits(d, ["--model", merged]),
           hf_logits(peft_m.merge_and_unload()))
    # 3. an adapter made by peft, loaded by grpo
    torch.manual_seed(0)
    cfg = LoraConfig(r=4, lora_alpha=16, use_rslora=True, init_lora_weights=False, target_modules=ATTN)
    pm = get_peft_model(base_model(), cfg).eval()
    mine = os.path.join(d, "from_peft")
    pm.save_pretrained(mine)
    report("peft adapter (attention) in grpo forward --adapter vs peft",
           grpo_logits(d, ["--model", model_dir, "--adapter", mine]), hf_logits(pm))
    # 4. every module kind
    ad = grpo_run(d, "all", ["all-linear"])
    pa = PeftModel.from_pretrained(base_model(), ad).eval()
    dense_mlp = pa.base_model.model.model.layers[0].mlp.gate_proj
    if not hasattr(dense_mlp, "lora_A"):
        import peft, transformers
        print(f"grpo adapter (all-linear) in peft: skipped: peft {peft.__version__} on transformers "
              f"{transformers.__version__} maps gate/up/down_proj to the fused routed experts, so the dense MLP and "
              "the shared experts are not adapted (the attention adapters match: check 1)")
        # the same adapter applied by hand as PEFT defines it, W + (lora_alpha / r) B A, on the
        # transformers model's nn.Linear weights (the MLP modules included)
        cfgj = json.load(open(os.path.join(ad, "adapter_config.json")))
        s = cfgj["lora_alpha"] / (cfgj["r"] ** 0.5 if cfgj.get("use_rslora") else cfgj["r"])
        w = load_file(os.path.join(ad, "adapter_model.safetensors"))
        hm = base_model()
        params = dict(hm.named_parameters())
        n = 0
        with torch.no_grad():
            for k, a in w.items():
                if not k.endswith(".lora_A.weight"):
                    continue
                mod = k[len("base_model.model."):-len(".lora_A.weight")]
                params[mod + ".weight"].add_(s * (w[k.replace(".lora_A.", ".lora_B.")] @ a))
                n += 1
        report(f"grpo adapter (all-linear, {n} modules) applied as W + s B A in torch vs grpo forward --adapter",
               grpo_logits(d, ["--model", model_dir, "--adapter", ad]), hf_logits(hm))
    else:
        report("grpo adapter (all-linear) in peft vs grpo forward --adapter",
               grpo_logits(d, ["--model", model_dir, "--adapter", ad]), hf_logits(pa))
sys.exit(0 if worst < 1e-4 else 1)
