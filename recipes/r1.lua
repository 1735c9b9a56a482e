-- recipes/r1.lua: the four stages of DeepSeek-R1 (R1 paper §2.3), then an
-- evaluation on MATH-500:
--   1. cold_start    SFT of the base model on a few thousand long-CoT chats (§2.3.1)
--   2. reasoning_rl  GRPO on reasoning prompts: accuracy + format + language
--                    consistency (§2.3.2)
--   3. rejection     rejection sampling from the RL checkpoint: keep correct,
--                    well-formed answers; drop mixed-language chains, long
--                    paragraphs and code blocks in the reasoning; merged with
--                    optional non-reasoning SFT data (§2.3.3)
--   4. sft           SFT of the BASE model on that data, 2 epochs (§2.3.3)
--      rl_all        RL for all scenarios: the rule rewards plus an optional
--                    HTTP reward model (§2.3.4)
--   eval             pass@1 / cons@K on MATH-500
--
-- Its tiny twin, recipes/tiny-r1.lua, runs every stage as it is on a CPU
-- (the tiny demo model, about 3 minutes) and meets its targets in the slow
-- suite: try that first. The template here, "r1", is the DeepSeek chat
-- format: the model's tokenizer must have that chat template
-- (docs/recipes.md); the tiny model has none and uses "{prompt}\n".
--
-- Run (GPU machine, real DeepSeek-V3 checkpoint):
--   grpo run recipes/r1.lua \
--     --set model=/models/DeepSeek-V3-Base \
--     --set datasets.cold_start.path=/data/cold_start.jsonl \
--     --set datasets.train.path=/data/reasoning_prompts.jsonl
-- Options:
--   non-reasoning SFT data merged into stage 3's output:
--     --set stages.rejection.merge_datasets=non_reasoning \
--     --set datasets.non_reasoning.path=/data/non_reasoning_sft.jsonl
--   the HTTP reward model of stage 4 (off while its url is empty; an
--   unreachable server gives nil rewards, never a failed run):
--     --set stages.rl_all.rewards.judge.params.url=http://host:8000/score
--   --resume continues after an interruption (from the last checkpoint).
-- Data: cold_start rows are chats {"messages": [{"role": "user", ...},
-- {"role": "assistant", "content": "<think>\n...\n</think>\n\nsummary"}]};
-- train rows need the prompt column and `answer` (gold final answer, no
-- \boxed), their prompts asking for a boxed answer ("Please reason step by
-- step, and put your final answer within \boxed{}.", R1's usage advice).
--
-- Sources: [P] = the R1 paper (arXiv v1) as summarised in
-- /work/shared/docs/grpo-survey.md §3; [N] = the Nature version as quoted by
-- TRL (same section); [S] = secondary summaries there; [T] = TRL defaults
-- (survey §2.3); "ops" = an operational choice of this recipe.

-- Rewards of the RL stages ([P] §2.3.2: the language-consistency reward is
-- "summed directly" with the accuracy reward; weights 1)
local accuracy = { script = "boxed_math", name = "accuracy", weight = 1.0 }
-- the r1 template ends the prompt with "<think>\n": the completion starts
-- inside the reasoning
local format = { script = "think_format", name = "format", weight = 1.0, params = { prefilled = true } }
local language = { script = "lang_consistency", name = "language", weight = 1.0 }
local judge = { script = "http_judge", name = "judge", weight = 1.0, params = { url = "" } }

-- The RL hyper-parameters of both GRPO stages: R1-Zero's ([P] §2.3.2 "the
-- same large-scale RL training process as employed in DeepSeek-R1-Zero";
-- values as in recipes/r1-zero.lua)
local function rl(t)
  local s = {
    type = "grpo",
    num_generations = 16,          -- [N] 16 outputs per question
    generation_batch_size = 512,   -- [N] training batch 512 = 32 questions x 16
    per_device_train_batch_size = 16, -- ops: micro-batches of 16 completions
    max_completion_length = 32768, -- [N] maximum length 32,768
    max_prompt_length = 2048,      -- ops
    temperature = 1.0,             -- [S] / [T]
    beta = 0.001,                  -- [N] KL coefficient 0.001
    kl_estimator = "k3",           -- [P] Eq. 2
    loss_type = "grpo",            -- [P] Eq. 1
    epsilon = 10,                  -- [N] clip ratio 10 (TRL's quote; 0.2 per a secondary page)
    learning_rate = 1e-6,          -- [S] (unverified) / [T]
    save_steps = 50, save_total_limit = 3, -- ops
    gradient_checkpointing = true, -- ops
  }
  for k, v in pairs(t) do s[k] = v end
  return s
end

return {
  name = "r1",
  model = "models/DeepSeek-V3-Base",  -- [P] §2.3.1: the cold start fine-tunes DeepSeek-V3-Base
  device = "auto",
  seed = 42,
  template = "r1",                    -- DeepSeek chat template, prompt ends "<｜Assistant｜><think>\n"

  datasets = {
    cold_start = { path = "data/r1/cold_start.jsonl" },      -- [P] "thousands of cold-start data"
    train = { path = "data/r1/reasoning_prompts.jsonl", prompt_column = "problem" },
    non_reasoning = { path = "data/r1/non_reasoning.jsonl" }, -- [P] ~200k non-reasoning SFT samples
    sft_data = { path = "stage:rejection" },                  -- stage 3's output
    test = { path = "../shared/data/math500_test.jsonl", prompt_column = "problem" },
  },

  rewards = { accuracy, format, language },

  stages = {
    {
      type = "sft", name = "cold_start", dataset = "cold_start",
      num_train_epochs = 2,           -- ops: [P] gives no cold-start schedule (2 as in §2.3.3)
      learning_rate = 2e-5,           -- ops: [T] SFT default
      lr_scheduler_type = "cosine",   -- ops
      warmup_ratio = 0.03,            -- ops
      max_length = 32768,             -- ops: long CoTs
      per_device_train_batch_size = 8, -- ops
      gradient_checkpointing = true,  -- ops
    },
    rl({
      name = "reasoning_rl", dataset = "train",
      rewards = { accuracy, format, language }, -- [P] §2.3.2
      max_steps = 5000,               -- ops: [P] trains "until it achieves convergence on reasoning tasks"
    }),
    {
      type = "sample", name = "rejection", dataset = "train",
      num_generations = 16,           -- ops: [P] "sample multiple responses" (count not reported)
      temperature = 0.6, top_p = 0.95, -- ops: R1's recommended sampling settings
      max_completion_length = 32768,  -- as the RL stages
      max_prompt_length = 2048,
      rewards = { accuracy, format },
      -- [P] "retain only the correct responses"; well-formed too
      keep = "(rewards.accuracy or 0) == 1 and (rewards.format or 0) == 1",
      -- [P] "filtered out chain-of-thought with mixed languages, long paragraphs, and code blocks"
      filters = { "mixed_language", "long_paragraphs", "code_blocks" },
      lang = "en", min_lang_ratio = 0.95, -- ops (R1 reports no threshold)
      max_paragraph_chars = 2000,     -- ops (R1 reports no threshold)
      max_per_prompt = 1,             -- ops
      merge_datasets = {},            -- optional: { "non_reasoning" } ([P] ~200k non-reasoning samples)
    },
    {
      type = "sft", name = "sft", dataset = "sft_data",
      init_from = "model",            -- [P] §2.3.3: "fine-tune DeepSeek-V3-Base": the recipe's model again
      num_train_epochs = 2,           -- [P] "for two epochs"
      learning_rate = 2e-5, lr_scheduler_type = "cosine", warmup_ratio = 0.03, -- ops
      max_length = 32768, per_device_train_batch_size = 8, gradient_checkpointing = true, -- ops
    },
    rl({
      name = "rl_all", dataset = "train",
      -- [P] §2.3.4: rule rewards for reasoning data, reward models for general data
      rewards = { accuracy, format, language, judge },
      max_steps = 2000,               -- ops
    }),
    {
      type = "eval", name = "eval", dataset = "test",
      num_generations = 16, temperature = 0.6, top_p = 0.95, -- [P] evaluation settings
      max_completion_length = 32768, max_prompt_length = 2048,
      answer_from = "boxed",
    },
  },
}
