-- countdown.lua: the countdown task's accuracy (TinyZero's verifier): 1 when
-- the last \boxed{...} of the answer is an arithmetic expression that uses
-- only the row's numbers, each at most as often as it is listed, and equals
-- the target; else 0 (parts.bad_numbers / parts.no_box say why).
--
-- The expression may hold digits, + - * and parentheses (the task's
-- operations); anything else scores 0. The value is checked with
-- grpo.math_equal (exact rational arithmetic), so "(8-4+3)*10" equals 70.
-- The answer region is the text after the last "</think>". A target that
-- cannot be parsed: nil (skip the sample; no answer could be right).
-- Columns: answer (the target), numbers (the list of usable numbers), as
-- data/datagen.c --task countdown writes them.
local code = require("lib_code")

local function score(s)
  local expr = grpo.boxed(code.answer_region(s.completion))
  local eq, status = grpo.math_equal(expr, tostring(s.answer), { gold_plain = true })
  if status == "no_gold" then return nil end
  if not expr then return 0, { no_box = 1, bad_numbers = 0 } end
  if expr:find("[^%d%s%+%-%*%(%)]") then return 0, { no_box = 0, bad_numbers = 1 } end
  local avail = {}
  for _, n in ipairs(s.numbers) do
    local k = math.tointeger(n)
    if k then avail[k] = (avail[k] or 0) + 1 end
  end
  for d in expr:gmatch("%d+") do
    local n = math.tointeger(tonumber(d))
    if not n or not avail[n] or avail[n] == 0 then return 0, { no_box = 0, bad_numbers = 1 } end
    avail[n] = avail[n] - 1
  end
  return eq and 1 or 0, { no_box = 0, bad_numbers = 0 }
end

return { columns = { "answer", "numbers" }, score = score }
