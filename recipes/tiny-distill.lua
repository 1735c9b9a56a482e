-- tiny-distill: recipes/distill.lua on the tiny demo model, runnable as it is
-- on a CPU (about 2 minutes on 2 cores). Distillation as in the R1 paper
-- §2.4: a teacher answers the training prompts, only answers that pass the
-- rewards and R1's filters are kept (rejection sampling), and a fresh copy of
-- the base model (the student) is fine-tuned on them with SFT only:
--
--   1. eval_before      the student (data/tiny/base) on the 200 held-out problems
--   2. teacher_rl       the teacher: 30 GRPO steps from the base, as the demo
--                       (recipes/tiny-zero.lua) trains it
--   3. eval_teacher     the teacher on the same problems
--   4. teacher_samples  4 answers per training prompt from the teacher; kept
--                       when correct and well-formed, at most one per prompt
--   5. student_sft      SFT of the base (init_from = "model") on the kept answers
--   6. eval_after       the student again
--
--   grpo run recipes/tiny-distill.lua [--overwrite]
--
-- writes runs/tiny-distill/ (summary.json: every eval by stage name, the
-- sample stage's counts, the SFT stage's template and rows). The sampled
-- rows (runs/tiny-distill/teacher_samples.jsonl) record each prompt as the
-- model saw it ("<|bos|>What is 60 - 53?\n", the template below) and SFT
-- trains on them with the same template, so the student starts from a low
-- loss. Target (tests/train/test_tiny_recipes.c, suite slow): the student's
-- held-out accuracy after SFT is at least 0.75 and at least 3x before.
local accuracy = { script = "boxed_math", name = "accuracy", weight = 1.0 }
local format = { script = "think_format", name = "format", weight = 0.2 }
local function eval(name)
  return { type = "eval", name = name, dataset = "test", num_generations = 4, max_completion_length = 64 }
end

return {
  name = "tiny-distill",
  device = "cpu",                 -- the CPU demo: same numbers on every machine class
  model = "../data/tiny/base",    -- made by recipes/tiny-pretrain.lua: the student, and the teacher's start
  template = "{prompt}\n",        -- the tiny model's format (it has no chat template)
  datasets = {
    train = "../data/tiny/train.jsonl",      -- 2000 problems
    test = "../data/tiny/test.jsonl",        -- 200 held-out problems
    distilled = "stage:teacher_samples",     -- stage 4's output
  },
  rewards = { accuracy, format },
  stages = {
    eval("eval_before"),
    {
      type = "grpo", name = "teacher_rl", dataset = "train",
      num_generations = 8, generation_batch_size = 64, max_steps = 30,
      max_completion_length = 64, temperature = 1.0, learning_rate = 5e-4,
      log_completions_steps = 10,
    },
    eval("eval_teacher"),
    {
      type = "sample", name = "teacher_samples", dataset = "train",
      num_generations = 4, temperature = 0.6, top_p = 0.95, max_completion_length = 64,
      keep = "(rewards.accuracy or 0) == 1 and (rewards.format or 0) == 1",
      filters = { "mixed_language", "long_paragraphs", "code_blocks" },
      max_per_prompt = 1,
    },
    {
      type = "sft", name = "student_sft", dataset = "distilled",
      init_from = "model",            -- a fresh copy of the base, not the teacher
      num_train_epochs = 2, learning_rate = 5e-4,
      per_device_train_batch_size = 8, max_length = 256,
    },
    eval("eval_after"),
  },
}
