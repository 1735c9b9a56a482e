-- format.lua: open-r1's format_reward: 1 if the completion matches
-- ^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>$ (DOTALL, MULTILINE),
-- else 0. grpo.think_format, style "openr1". Columns: none.
return function(s)
  return grpo.think_format(s.completion, { style = "openr1" })
end
