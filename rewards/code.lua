-- code.lua: open-r1's code_reward for stdin/stdout problems, run locally in
-- the sandbox instead of E2B/Morph. The program (the last ```python block
-- after the last "</think>") is run once per test case with the case's
-- input on stdin; a case passes when its stdout, split into lines with
-- surrounding whitespace stripped (trailing blank lines ignored), equals the
-- expected output's lines. A SystemExit with a non-zero code fails the case.
-- (open-r1 compares only zip(actual, expected) lines, so a missing last line
-- passes there; here it fails.)
--
-- Score: fraction of cases passed; with binary = true, 1 when the fraction
-- is above 0.99 else 0 (open-r1 binary_code_reward). No code block: 0.
-- Column: verification_info (a table or its JSON text) =
--   {language = "python", test_cases = {{input = "...", output = "..."}, ...}}
-- A language other than python gives nil (logged); no test cases: nil.
-- Params: timeout (s, whole run), memory_mb, binary.
local code = require("lib_code")

local P = { timeout = 10, memory_mb = 1024, binary = false }
local LANGS = { python = true, py = true, python3 = true }

-- The program runs on the solution's side of the sandbox (in `code`, never
-- in the tests or the setup, which the verifier runs); the verifier
-- compares the lines it prints with the expected ones.
local RUNNER = [[
def _grpo_stdio(inp):
    import io, sys
    out = io.StringIO()
    saved = sys.stdin, sys.stdout
    sys.stdin, sys.stdout = io.StringIO(inp), out
    try:
        try:
            exec(compile(_grpo_program, '<program>', 'exec'), {'__name__': '__main__'})
        except SystemExit as e:
            if e.code not in (None, 0):
                raise
    finally:
        sys.stdin, sys.stdout = saved
    return out.getvalue()
]]
local SETUP = [[
def _grpo_lines(text):
    lines = [l.strip() for l in text.split('\n')]
    while lines and lines[-1] == '':
        lines.pop()
    return lines
]]

local function score(s)
  local info = s.verification_info
  if type(info) == "string" then info = assert(grpo.json_decode(info)) end
  if type(info) ~= "table" or type(info.test_cases) ~= "table" then
    error("verification_info needs a test_cases list")
  end
  if info.language and info.language ~= "python" then
    error("only python programs are run (got " .. tostring(info.language) .. ")")
  end
  local cases = info.test_cases
  if #cases == 0 then return nil end
  local src = code.last_block(code.answer_region(s.completion), LANGS)
  if not src then return 0, { passed = 0, total = #cases } end
  local tests = {}
  for i, c in ipairs(cases) do
    tests[i] = ("assert _grpo_lines(_grpo_stdio(%s)) == _grpo_lines(%s)"):format(
      code.pystr(tostring(c.input or "")), code.pystr(tostring(c.output or "")))
  end
  local program = "_grpo_program = " .. code.pystr(src) .. "\n" .. RUNNER
  local passed, total, status, msg = grpo.run_tests(program, tests, {
    timeout = P.timeout, memory_mb = P.memory_mb, setup = SETUP })
  if status == "sandbox_error" then error("sandbox: " .. msg) end
  local rate = passed / total
  if P.binary then return rate > 0.99 and 1 or 0, { passed = passed, total = total } end
  return rate, { passed = passed, total = total }
end

-- Pre-flight: one trivial run, so a machine where the sandbox cannot run
-- (no python3, namespaces refused) stops the run before training rather
-- than failing on every sample.
local function check()
  local _, _, status, msg = grpo.run_tests("x = 1", { "assert x == 1" }, { timeout = P.timeout, memory_mb = P.memory_mb })
  if status ~= "passed" then error("sandbox: " .. status .. ": " .. msg, 0) end
end

return { columns = { "verification_info" }, params = P, score = score, check = check }
