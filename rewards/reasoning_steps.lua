-- reasoning_steps.lua: open-r1's reasoning_steps_reward: min(1, n/3) where
-- n counts "Step N:", a leading "N.", "\n-", "\n*", "First,", "Second,",
-- "Next,", "Finally,". Columns: none.
return function(s)
  return grpo.reasoning_steps(s.completion)
end
