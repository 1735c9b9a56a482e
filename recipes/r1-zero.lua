-- recipes/r1-zero.lua: DeepSeek-R1-Zero (R1 paper §2.2): GRPO straight on the
-- base model, rule rewards only (accuracy + format), no SFT, no critic, no
-- reward model. Evaluates MATH-500 before and after.
--
-- Its tiny twin, recipes/tiny-zero.lua (the demo, `make demo`), runs as it
-- is on a CPU in under a minute: try that first.
--
-- Run (on a GPU machine with a real DeepSeek-V3 checkpoint; the values below
-- are the paper's, far beyond a CPU):
--   grpo run recipes/r1-zero.lua \
--     --set model=/models/DeepSeek-V3-Base \
--     --set datasets.train.path=/data/math_train.jsonl
-- Optional: --set stages.grpo.max_steps=N, --set name=my-run,
-- --set datasets.train.prompt_column=question, --resume to continue.
-- Training rows need the prompt column and `answer` (the gold final answer,
-- without \boxed); the accuracy reward reads the completion's last \boxed{},
-- so the prompts should ask for it ("... Put your final answer within
-- \boxed{}."), as the paper's accuracy reward expects "the final answer in a
-- specified format (e.g., within a box)".
--
-- Sources: [P] = the R1 paper (arXiv v1) as summarised in
-- /work/shared/docs/grpo-survey.md §3; [N] = the Nature version as quoted by
-- TRL's paper index (same section); [S] = secondary summaries listed there;
-- [T] = TRL GRPOConfig defaults (survey §2.3). "ops" = an operational choice
-- of this recipe, not a paper value.
return {
  name = "r1-zero",
  model = "models/DeepSeek-V3-Base",   -- [P] §2.2: R1-Zero starts from DeepSeek-V3-Base
  device = "auto",                     -- ops: cuda when usable
  seed = 42,                           -- ops
  template = "r1-zero",                -- [P] Table 1, verbatim (src/tok: tok_template_r1zero)

  datasets = {
    -- ops: any JSONL of math problems with `answer`; set the path with --set
    train = { path = "data/math_train.jsonl", prompt_column = "problem" },
    -- MATH-500 (openai/prm800k split; ../shared/data/SOURCES.md), as in [P]'s evaluation table
    test = { path = "../shared/data/math500_test.jsonl", prompt_column = "problem" },
  },

  rewards = {
    -- [P] §2.2.2 accuracy reward: rule-based check of the boxed final answer
    { script = "boxed_math", name = "accuracy", weight = 1.0 },
    -- [P] §2.2.2 format reward: reasoning inside <think> </think>; Table 1's
    -- template also puts the answer inside <answer> </answer>
    { script = "think_format", name = "format", weight = 1.0, params = { answer_tags = "required" } },
    -- weights: [P] gives none; the two rewards are summed (weight 1 each)
  },

  stages = {
    {
      type = "eval", name = "eval_before", dataset = "test",
      num_generations = 16,          -- [P]: pass@1 over k = 4-64 samples
      temperature = 0.6,             -- [P] evaluation: temperature 0.6
      top_p = 0.95,                  -- [P] evaluation: top-p 0.95
      max_completion_length = 32768, -- [P] evaluation: max generation 32,768 tokens
      max_prompt_length = 2048,      -- ops: MATH prompts are far shorter
      stop = { "</answer>" },        -- ops: Table 1's answer ends with </answer>
      answer_from = "boxed",         -- cons@K votes on the boxed answers (as the reward reads them)
    },
    {
      type = "grpo", name = "grpo", dataset = "train",
      num_generations = 16,          -- [N] "For each question, we sample 16 outputs"
      generation_batch_size = 512,   -- [N] "training batch size of 512"; [S] 32 questions x 16 per step
      per_device_train_batch_size = 16, -- ops: micro-batch of 16 completions (memory; same step)
      max_completion_length = 32768, -- [N] "with a maximum length of 32,768"
                                     -- ([S]: raised during training, length jump after ~8.2k steps)
      max_prompt_length = 2048,      -- ops
      temperature = 1.0,             -- [S] sampling temperature 1 for R1-Zero rollouts ([T] default too)
      top_p = 1.0,                   -- [T] default (the paper samples plainly)
      stop = { "</answer>" },        -- ops: the template's answer ends with </answer>
      beta = 0.001,                  -- [N] "the KL coefficient to 0.001"
      kl_estimator = "k3",           -- [P] Eq. 2: pi_ref/pi - log(pi_ref/pi) - 1 (the k3 estimator)
      loss_type = "grpo",            -- [P] Eq. 1 (DeepSeekMath's per-sequence mean)
      scale_rewards = "group",       -- [P] Eq. 3: A = (r - mean(group)) / std(group)
      epsilon = 10,                  -- [N] "the GRPO clip ratio epsilon to 10" (TRL's quote; a
                                     -- secondary page says 0.2: survey §3 could not resolve it)
      num_iterations = 1,            -- [N] 8,192 outputs per rollout split into 16 minibatches of
                                     -- 512: each update sees fresh samples; here one step = one
                                     -- generation batch of 512 and one update (the Nature split is
                                     -- --set stages.grpo.generation_batch_size=8192
                                     --     --set stages.grpo.steps_per_generation=16)
      learning_rate = 1e-6,          -- [S] 1e-6 (not verified from a primary source); [T] default
      lr_scheduler_type = "constant",-- ops ([T] default)
      max_grad_norm = 1.0,           -- [T] default
      max_steps = 10000,             -- ops: [S] the length jump after ~8.2k steps implies > 8.2k
      save_steps = 50,               -- ops
      save_total_limit = 3,          -- ops
      log_completions_steps = 10,    -- ops
      gradient_checkpointing = true, -- ops: 32k-token completions
    },
    {
      type = "eval", name = "eval_after", dataset = "test",
      num_generations = 16, temperature = 0.6, top_p = 0.95, -- [P] evaluation, as above
      max_completion_length = 32768, max_prompt_length = 2048,
      stop = { "</answer>" }, answer_from = "boxed",
    },
  },
}
