-- recipes/distill.lua: distillation as in the R1 paper §2.4: a reasoning
-- teacher answers the prompts, only answers that pass the rewards are kept
-- (rejection sampling, R1's filters), and a student is fine-tuned on them
-- with SFT only (no RL). Then the student is evaluated on MATH-500.
--   1. teacher_samples  sample from the teacher (the recipe's `model`)
--   2. student_sft      SFT of the student (init_from) on the kept samples
--   3. eval             the student's pass@1 / cons@K
--
-- Its tiny twin, recipes/tiny-distill.lua, runs as it is on a CPU (the tiny
-- demo model as teacher and student, about 2 minutes) and meets its target
-- in the slow suite: try that first.
--
-- Run:
--   grpo run recipes/distill.lua \
--     --set model=/models/teacher \
--     --set stages.student_sft.init_from=/models/student \
--     --set datasets.prompts.path=/data/prompts.jsonl
-- The run has one tokenizer (the teacher's, or --set tokenizer=DIR), so the
-- student must share it here. For a student with another tokenizer, run
-- stage 1 alone and train the student with `grpo sft`:
--   grpo sample --model /models/teacher --in prompts.jsonl --template r1 \
--     --rewards 'accuracy=boxed_math,format=think_format{prefilled=true}' \
--     --keep '(rewards.accuracy or 0) == 1' --filters mixed_language,code_blocks \
--     --out distilled.jsonl
--   grpo sft --model /models/student --in distilled.jsonl --out /models/student-distilled --epochs 2 \
--     --template r1
-- (the rows record each prompt as the teacher saw it and the template that
-- rendered it; SFT refuses another template, so train and evaluate the
-- student with the same one)
-- Prompt rows need `answer` (gold final answer, no \boxed) and should ask
-- for a boxed answer. The template "r1" is the DeepSeek chat format: the
-- teacher's tokenizer must have that chat template (docs/recipes.md). The
-- kept data (RUN/teacher_samples.jsonl: prompt as seen, completion, chat form)
-- and its pass rates (RUN/teacher_samples.pass_rates.jsonl) stay in the run
-- directory.
--
-- Sources: [P] = the R1 paper as summarised in
-- /work/shared/docs/grpo-survey.md §3; [T] = TRL defaults (survey §2.3);
-- "ops" = an operational choice of this recipe.
local accuracy = { script = "boxed_math", name = "accuracy", weight = 1.0 }
local format = { script = "think_format", name = "format", weight = 1.0, params = { prefilled = true } }

return {
  name = "distill",
  model = "models/teacher",           -- [P] §2.4: the teacher is DeepSeek-R1
  device = "auto",
  seed = 42,
  template = "r1",                    -- chat template, prompt ends "<think>\n" (the teacher's format)

  datasets = {
    prompts = { path = "data/distill/prompts.jsonl", prompt_column = "problem" },
    distilled = { path = "stage:teacher_samples" },  -- stage 1's output
    test = { path = "../shared/data/math500_test.jsonl", prompt_column = "problem" },
  },

  rewards = { accuracy, format },

  stages = {
    {
      type = "sample", name = "teacher_samples", dataset = "prompts",
      num_generations = 4,            -- ops: samples per prompt
      temperature = 0.6, top_p = 0.95, -- ops: R1's recommended sampling settings
      max_completion_length = 32768,  -- [P] generation length of R1
      max_prompt_length = 2048,       -- ops
      -- [P] §2.3.3 / §2.4: the 800k samples are correct, filtered responses
      keep = "(rewards.accuracy or 0) == 1 and (rewards.format or 0) == 1",
      filters = { "mixed_language", "long_paragraphs", "code_blocks" }, -- [P] §2.3.3
      max_per_prompt = 1,             -- ops
    },
    {
      type = "sft", name = "student_sft", dataset = "distilled",
      init_from = "models/student",   -- [P] §2.4: Qwen2.5 / Llama students (here: a V3-architecture model)
      num_train_epochs = 2,           -- ops: as R1's own SFT ([P] §2.3.3 "two epochs")
      learning_rate = 2e-5,           -- ops: [T] SFT default
      lr_scheduler_type = "cosine", warmup_ratio = 0.03, -- ops
      max_length = 32768,             -- ops: long CoTs
      per_device_train_batch_size = 8, gradient_checkpointing = true, -- ops
    },
    {
      type = "eval", name = "eval", dataset = "test",
      num_generations = 16, temperature = 0.6, top_p = 0.95, -- [P] evaluation settings
      max_completion_length = 32768, max_prompt_length = 2048,
      answer_from = "boxed",
    },
  },
}
