-- cosine.lua: get_cosine_scaled_reward (TRL; open-r1): correctness (the
-- last \boxed answer after "</think>" equals `answer`, as boxed_math.lua)
-- scaled by the completion length in characters:
-- c = cos(pi * min(len, max_len) / max_len);
-- correct: min_value_correct + (max_value_correct - min_value_correct)(1+c)/2
-- (short right answers earn more); wrong: max_value_wrong +
-- (min_value_wrong - max_value_wrong)(1+c)/2 (long wrong answers are
-- punished less). A gold answer that cannot be parsed: nil (TRL; open-r1
-- scores it 1.0).
-- Length past max_len: clamp = true (the default, TRL's behaviour) scores
-- it as max_len; clamp = false is open-r1's unclamped cosine, periodic in
-- the length: past max_len it climbs back, so at 2 * max_len a right answer
-- earns max_value_correct again (and a wrong one min_value_wrong).
-- Column: answer. Params: min_value_wrong (-1.0), max_value_wrong (-0.5),
-- min_value_correct (0.5), max_value_correct (1.0), max_len (1000 chars),
-- clamp (true).
local code = require("lib_code")

local P = { min_value_wrong = -1.0, max_value_wrong = -0.5, min_value_correct = 0.5,
            max_value_correct = 1.0, max_len = 1000, clamp = true }

local function score(s)
  local pred = grpo.boxed(code.answer_region(s.completion))
  local eq, status = grpo.math_equal(pred, tostring(s.answer), { gold_plain = true })
  if status == "no_gold" then return nil end
  return grpo.cosine_scaled(s.completion, eq, {
    min_value_wrong = P.min_value_wrong, max_value_wrong = P.max_value_wrong,
    min_value_correct = P.min_value_correct, max_value_correct = P.max_value_correct,
    max_len = P.max_len, clamp = P.clamp }), { correct = eq and 1 or 0 }
end

return { columns = { "answer" }, params = P, score = score }
