-- tag_count.lua: open-r1's tag_count_reward: 0.25 for each of "<think>\n",
-- "\n</think>\n", "\n<answer>\n", "\n</answer>" that occurs exactly once
-- (partial format credit). Columns: none.
return function(s)
  return grpo.tag_count(s.completion)
end
