-- lib_code.lua: helpers shared by the code rewards (require "lib_code").
--   M.answer_region(text)   text after the last "</think>" (the whole text
--                           when there is none): code inside the reasoning
--                           never counts.
--   M.last_block(text, langs)  content of the last complete fenced block
--                           ```LANG\n ... ``` whose LANG is in `langs` (a set;
--                           "" = no language given), or nil.
--   M.pystr(s)              a Python string literal for s (JSON escapes are
--                           a subset of Python's).
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

function M.pystr(s)
  return grpo.json_encode(s)
end

return M
