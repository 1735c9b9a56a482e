-- len_reward.lua: Kimi k1.5's length reward (open-r1 len_reward), over the
-- G completions of one prompt (a score_group script). With len the
-- completion's length in characters and min/max over the group:
--   lambda = 0.5 - (len - min) / (max - min)
--   correct: lambda        wrong: min(0, lambda)
-- so among right answers the short ones gain and the long ones lose, and a
-- wrong answer is never rewarded for being short. All 0 when every
-- completion of the group has the same length. Correctness as
-- boxed_math.lua (the last \boxed answer after "</think>" equals `answer`);
-- a gold answer that cannot be parsed counts as correct, box or no box, as
-- in open-r1.
-- Min and max are per prompt, as in the Kimi k1.5 paper (open-r1 takes them
-- over whatever batch TRL passes, i.e. the whole generation batch).
-- Column: answer.
local code = require("lib_code")

local function is_correct(s)
  local pred = grpo.boxed(code.answer_region(s.completion))
  local eq, status = grpo.math_equal(pred, tostring(s.answer), { gold_plain = true })
  if status == "no_gold" then return true end
  return eq
end

local function score_group(samples)
  local n = #samples
  local len, ok = {}, {}
  local lo, hi = math.huge, -math.huge
  for i = 1, n do
    local c = samples[i].completion
    len[i] = utf8.len(c) or #c -- characters, as Python's len(); bytes if not UTF-8
    ok[i] = is_correct(samples[i])
    lo, hi = math.min(lo, len[i]), math.max(hi, len[i])
  end
  local scores, parts = {}, {}
  for i = 1, n do
    local lambda = hi > lo and 0.5 - (len[i] - lo) / (hi - lo) or 0.0
    scores[i] = ok[i] and lambda or math.min(0.0, lambda)
    parts[i] = { correct = ok[i] and 1 or 0 }
  end
  return scores, parts
end

return { columns = { "answer" }, score_group = score_group }
