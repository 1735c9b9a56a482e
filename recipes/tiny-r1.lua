-- tiny-r1: every stage of recipes/r1.lua (the DeepSeek-R1 pipeline, R1
-- paper §2.3) on the tiny demo model, runnable as it is on a CPU (about 3
-- minutes on 2 cores):
--
--   1. eval_before         the base model on the 200 held-out problems
--   2. r1_zero             R1-Zero (§2.2): GRPO straight on the base, rule
--                          rewards (as recipes/tiny-zero.lua)
--   3. eval_r1_zero        the R1-Zero model
--   4. cold_start_samples  cold-start data (§2.3.1: "R1-Zero outputs in a
--                          readable format"): R1-Zero's correct, well-formed
--                          answers to 500 training prompts
--   5. cold_start          SFT of the BASE model on them (§2.3.1)
--   6. reasoning_rl        GRPO from the cold start: accuracy + format (§2.3.2;
--                          the language-consistency reward has no words to
--                          measure in this arithmetic)
--   7. rejection           rejection sampling from the RL model (§2.3.3): keep
--                          correct, well-formed answers; R1's three filters
--   8. sft                 SFT of the BASE model on that data, 2 epochs (§2.3.3)
--   9. eval_sft            the SFT model
--  10. rl_all              the last RL stage (§2.3.4; rule rewards only, no
--                          reward model on the tiny task)
--  11. eval                the final model
--
--   grpo run recipes/tiny-r1.lua [--overwrite]
--
-- writes runs/tiny-r1/ (summary.json: every eval by stage name, each sample
-- stage's counts, each SFT stage's template and rows). The sample stages
-- record each prompt as the model saw it and the SFT stages train on those
-- rows with the same template ("{prompt}\n": the tiny model has no chat
-- template, so r1.lua's template "r1" is replaced here), so each SFT stage
-- starts from the low loss of the model's own answers. Target
-- (tests/train/test_tiny_recipes.c, suite slow): every SFT stage's first-step
-- loss below 1.0, the final eval at least the R1-Zero stage's.
local accuracy = { script = "boxed_math", name = "accuracy", weight = 1.0 }
local format = { script = "think_format", name = "format", weight = 0.2 }
local keep = "(rewards.accuracy or 0) == 1 and (rewards.format or 0) == 1"

local function eval(name)
  return { type = "eval", name = name, dataset = "test", num_generations = 4, max_completion_length = 64 }
end

-- the GRPO stages: the demo's settings (8 prompts x 8 samples, 30 steps)
local function rl(name, lr)
  return {
    type = "grpo", name = name, dataset = "train",
    num_generations = 8, generation_batch_size = 64, max_steps = 30,
    max_completion_length = 64, temperature = 1.0, learning_rate = lr,
    log_completions_steps = 10,
  }
end

local function sample(name, limit)
  return {
    type = "sample", name = name, dataset = "train", limit = limit,
    num_generations = 4, temperature = 0.6, top_p = 0.95, max_completion_length = 64,
    keep = keep, filters = { "mixed_language", "long_paragraphs", "code_blocks" }, max_per_prompt = 1,
  }
end

local function sft(name, dataset)
  return {
    type = "sft", name = name, dataset = dataset,
    init_from = "model",            -- R1 fine-tunes the base model both times
    num_train_epochs = 2, learning_rate = 5e-4,
    per_device_train_batch_size = 8, max_length = 256,
  }
end

return {
  name = "tiny-r1",
  device = "cpu",                 -- the CPU demo: same numbers on every machine class
  model = "../data/tiny/base",    -- made by recipes/tiny-pretrain.lua
  template = "{prompt}\n",        -- the tiny model's format (it has no chat template)
  datasets = {
    train = "../data/tiny/train.jsonl",      -- 2000 problems
    test = "../data/tiny/test.jsonl",        -- 200 held-out problems
    cold_start = "stage:cold_start_samples",
    sft_data = "stage:rejection",
  },
  rewards = { accuracy, format },
  stages = {
    eval("eval_before"),
    rl("r1_zero", 5e-4),
    eval("eval_r1_zero"),
    sample("cold_start_samples", 500),
    sft("cold_start", "cold_start"),
    rl("reasoning_rl", 5e-4),
    sample("rejection", 0),
    sft("sft", "sft_data"),
    eval("eval_sft"),
    rl("rl_all", 1e-4),               -- ops: a smaller step from the strong SFT model
    eval("eval"),
  },
}
