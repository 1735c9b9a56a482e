-- lib_code.lua: helpers shared by the code rewards (require "lib_code").
--   M.answer_region(text)   text after the last "</think>" (the whole text
--                           when there is none): code inside the reasoning
--                           never counts.
--   M.last_block(text, langs)  content of the last complete fenced block
--                           ```LANG\n ... ``` whose LANG is in `langs` (a set;
--                           "" = no language given), or nil.
--   M.pystr(s)              a Python string literal for s (JSON escapes are
--                           a subset of Python's).
--   M.prompt_helpers(prompt, entry_point)  the prompt's top-level imports and
--                           function definitions other than entry_point's
--                           (HumanEval's helpers: /32 poly, /38 encode_cyclic,
--                           /50 encode_shift), or nil when there are none. Given
--                           to the tests as setup they are the verifier's own,
--                           so a solution that redefines them (an identity
--                           encode_shift with an identity decode_shift) does
--                           not change what the tests call.
local M = {}

function M.answer_region(text)
  local last = nil
  local from = 1
  while true do
    local s, e = text:find("</think>", from, true)
    if not s then break end
    last, from = e, e + 1
  end
  if last then return text:sub(last + 1) end
  return text
end

function M.last_block(text, langs)
  local found = nil
  local pos = 1
  while true do
    local s, e, lang = text:find("```([%w_+#.%-]*)[ \t]*\r?\n", pos)
    if not s then break end
    local close = text:find("```", e + 1, true)
    if not close then break end
    if langs[lang:lower()] then found = text:sub(e + 1, close - 1) end
    pos = close + 3
  end
  return found
end

function M.prompt_helpers(prompt, entry_point)
  local out, keep = {}, false
  local skip = "^def%s+" .. entry_point:gsub("%W", "%%%0") .. "%s*%("
  for line in (prompt .. "\n"):gmatch("([^\n]*)\n") do
    if line:find("^%S") then -- a top-level line starts or ends a block
      keep = (line:find("^def%s+[%a_][%w_]*%s*%(") and not line:find(skip))
          or line:find("^async%s+def%s")
          or line:find("^import%s") or line:find("^from%s+[%w_.]+%s+import%s")
      keep = keep and true or false
    end
    if keep then out[#out + 1] = line end
  end
  if #out == 0 then return nil end
  return table.concat(out, "\n") .. "\n"
end

function M.pystr(s)
  return grpo.json_encode(s)
end

return M
