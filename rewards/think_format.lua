-- think_format.lua: DeepSeek-R1-Zero's format reward: 1 if the completion
-- is "<think> reasoning </think> answer" (exactly one "</think>", a
-- non-blank CoT and a non-blank answer; an optional single
-- <answer>...</answer> around the answer), else 0. grpo.think_format,
-- style "r1".
-- Columns: none. Params: prefilled (true when the chat template already
-- ends the prompt with "<think>", as distilled R1 templates do),
-- answer_tags ("optional", "required" or "forbidden").
local P = { prefilled = false, answer_tags = "optional" }

return {
  params = P,
  score = function(s)
    return grpo.think_format(s.completion, { style = "r1", prefilled = P.prefilled,
                                             answer_tags = P.answer_tags })
  end,
}
