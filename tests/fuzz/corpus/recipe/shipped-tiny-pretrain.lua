-- tiny-pretrain: makes the tiny demo model's base checkpoint (data/tiny/base)
-- from random weights, by SFT on synthetic arithmetic with worked steps.
--
--   grpo run recipes/tiny-pretrain.lua
--   cp runs/tiny-pretrain/checkpoints/step-1584/* data/tiny/base/
--
-- The pre-training data comes from a "biased teacher": the worked steps are
-- right but 70% of the final answers are off by one (data/tiny/README.md),
-- so the base model writes correct steps and then usually copies a wrong
-- result: it solves some held-out problems, not most (about 0.2 pass@1),
-- and a verifier reward has something to fix (recipes/tiny-zero.lua).
-- About 8 minutes on 2 cores; deterministic (same machine class, same
-- weights bit for bit).
return {
  name = "tiny-pretrain",
  device = "cpu",               -- the CPU demo: same numbers on every machine class
  model = "../data/tiny",      -- config.json + byte-level tokenizer
  init_std = 0.02,             -- random N(0, 0.02^2) start (initializer_range)
  template = "{prompt}\n",
  datasets = { pretrain = "../data/tiny/pretrain.jsonl" },
  stages = {
    {
      type = "sft",
      dataset = "pretrain",
      num_train_epochs = 3,
      per_device_train_batch_size = 8,   -- packed rows of 256 tokens
      max_length = 256,
      learning_rate = 3e-3,
      lr_scheduler_type = "cosine",
      warmup_steps = 20,
      weight_decay = 0.0,
      assistant_only_loss = true,        -- loss on the completion only
      save_steps = 100,
    },
  },
}
