-- boxed_math.lua: 1 if the last \boxed{...} of the answer equals the gold
-- answer (grpo.math_equal: normalisation, exact rationals, expressions,
-- sets, intervals, matrices...), else 0. DeepSeek-R1's accuracy reward.
--
-- The answer region is the text after the last "</think>" (the whole text
-- when there is none), so a box inside the reasoning does not count.
-- A gold answer that cannot be parsed: nil (skip the sample, as TRL's and
-- open-r1's accuracy_reward return None), with or without a box, logged
-- nowhere. No box: 0 (parts.no_box = 1).
-- Column: answer (the gold final answer, e.g. MATH-500 `answer`, without
-- \boxed). Params: float_rounding (decimals kept when comparing decimal
-- numbers, Math-Verify's default 6).
local code = require("lib_code")

local P = { float_rounding = 6 }

local function score(s)
  local pred = grpo.boxed(code.answer_region(s.completion))
  local eq, status = grpo.math_equal(pred, tostring(s.answer),
                                     { gold_plain = true, float_rounding = P.float_rounding })
  if status == "no_gold" then return nil end
  if not pred then return 0, { no_box = 1 } end
  return eq and 1 or 0, { no_box = 0 }
end

return { columns = { "answer" }, params = P, score = score }
