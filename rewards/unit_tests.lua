-- unit_tests.lua: runs the model's Python code against the sample's tests in
-- the sandbox (grpo.run_tests) and scores the fraction of tests passed.
--
-- Code: the last fenced block (```python, ```py, ```python3 or a bare ```)
-- after the last "</think>"; no block scores 0 (parts.no_code = 1). A row
-- with an empty list of tests: nil (nothing to judge).
-- Score: passed / total in [0, 1]; nil (logged) when the sandbox could not
-- judge (status sandbox_error: a test that does not compile, no python3).
-- Timeouts, crashes, memory and output overruns score what passed before.
--
-- Columns:
--   tests         required. A list of test snippets (MBPP `test_list`: one
--                 assert each), or one string (HumanEval `test`: one test).
--   test_imports  optional, string or list: run before the solution
--                 (MBPP `test_imports`).
--   entry_point   optional (HumanEval): when `tests` is a string defining
--                 check(candidate) and not calling it, "check(ENTRY_POINT)"
--                 is appended; and the top-level imports and functions of
--                 the row's `prompt` other than ENTRY_POINT (HumanEval's
--                 helpers, e.g. /50 encode_shift) run as setup on the
--                 verifier's side, so a solution cannot replace them
--                 (params.prompt_helpers = false turns this off).
-- Parts: passed, total, no_code, timeout (1 when the run hit a limit).
-- Params: timeout (s, wall clock), memory_mb, binary (true: 1 only when
-- every test passed, else 0).
local code = require("lib_code")

local P = { timeout = 10, memory_mb = 1024, binary = false, prompt_helpers = true }
local LANGS = { [""] = true, python = true, py = true, python3 = true }

local function score(s)
  local tests = s.tests
  if type(tests) == "string" then
    if s.entry_point and tests:find("def check%(") and not tests:find("\ncheck%(") then
      tests = tests .. "\ncheck(" .. s.entry_point .. ")\n"
    end
    tests = { tests }
  elseif type(tests) ~= "table" then
    error("column 'tests' must be a string or a list of strings")
  end
  if #tests == 0 then return nil end
  local src = code.last_block(code.answer_region(s.completion), LANGS)
  if not src then return 0, { passed = 0, total = #tests, no_code = 1, timeout = 0 } end
  local setup = s.test_imports
  if P.prompt_helpers and type(s.entry_point) == "string" and type(s.prompt) == "string" then
    local helpers = code.prompt_helpers(s.prompt, s.entry_point)
    if helpers then
      if type(setup) == "table" then setup = table.concat(setup, "\n") end
      setup = (setup and setup .. "\n" or "") .. helpers
    end
  end
  local passed, total, status, msg = grpo.run_tests(src, tests, {
    timeout = P.timeout, memory_mb = P.memory_mb, setup = setup })
  if status == "sandbox_error" then error("sandbox: " .. msg) end
  local parts = { passed = passed, total = total, no_code = 0,
                  timeout = (status == "timeout" or status == "memory" or status == "output_limit") and 1 or 0 }
  if P.binary then return passed == total and 1 or 0, parts end
  return passed / total, parts
end

-- Pre-flight: one trivial run, so a machine where the sandbox cannot run
-- (no python3, namespaces refused) stops the run before training rather
-- than failing on every sample.
local function check()
  local _, _, status, msg = grpo.run_tests("x = 1", { "assert x == 1" }, { timeout = P.timeout, memory_mb = P.memory_mb })
  if status ~= "passed" then error("sandbox: " .. status .. ": " .. msg, 0) end
end

return { columns = { "tests" }, params = P, score = score, check = check }
