-- code_format.lua: open-r1's code_format_reward: 1 if the completion is
-- <think>\n...\n</think>\n<answer>\n...```LANGUAGE ... ```...\n</answer>,
-- else 0 (grpo.think_format, style "openr1" with code_lang).
-- Columns: none. Params: language (the fence language, default "python").
local P = { language = "python" }

return {
  params = P,
  score = function(s)
    return grpo.think_format(s.completion, { style = "openr1", code_lang = P.language })
  end,
}
