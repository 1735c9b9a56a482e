-- tiny-zero: the demo (`make demo`). R1-Zero-style GRPO with rule rewards on
-- a tiny DeepSeek-V3-architecture model (MLA, DeepSeekMoE with group-limited
-- sigmoid routing, about 1.2M parameters) that runs on the CPU:
--
--   1. eval_before: held-out accuracy of the base model (pass@1 over 4
--      samples at temperature 0.6 / top-p 0.95, the R1 paper's settings)
--   2. grpo: 30 steps of 8 prompts x 8 samples, accuracy + format rewards
--   3. eval_after: the same evaluation again
--
--   grpo run recipes/tiny-zero.lua [--overwrite]
--
-- writes runs/tiny-zero/ (summary.json has eval_before/eval_after accuracy,
-- report.html the plots). Under a minute on 2 cores.
return {
  name = "tiny-zero",
  device = "cpu",               -- the CPU demo: same numbers on every machine class
  model = "../data/tiny/base",   -- made by recipes/tiny-pretrain.lua
  template = "{prompt}\n",       -- the base model was pre-trained on this
  datasets = {
    train = "../data/tiny/train.jsonl",   -- 2000 problems for RL
    test = "../data/tiny/test.jsonl",     -- 200 held-out problems (no overlap)
  },
  rewards = {
    { script = "boxed_math", weight = 1.0 },   -- accuracy (listed first: eval's "accuracy")
    { script = "think_format", weight = 0.2 }, -- <think>...</think> then the answer
  },
  stages = {
    { type = "eval", name = "eval_before", dataset = "test", num_generations = 4, max_completion_length = 64 },
    {
      type = "grpo",
      dataset = "train",
      num_generations = 8,             -- G
      generation_batch_size = 64,      -- 8 prompts x 8 samples per step
      max_steps = 30,
      max_completion_length = 64,
      temperature = 1.0,               -- R1-Zero samples at temperature 1
      learning_rate = 5e-4,
      beta = 0.0,
      loss_type = "grpo",
      log_completions_steps = 10,
    },
    { type = "eval", name = "eval_after", dataset = "test", num_generations = 4, max_completion_length = 64 },
  },
}
