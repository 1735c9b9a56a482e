-- http_judge.lua: a reward model behind HTTP (DeepSeek-R1 §2.3.4: reward
-- models for general data in the "RL for all scenarios" stage). POSTs
--   {"prompt": ..., "completion": ..., "response": ..., "answer": ...}
-- to the `url` param (grpo.http_post_json: JSON body, timeout, retries) and
-- returns the number in the reply's `field` (default "score"), e.g. a reply
-- {"score": 0.8}. `response` is the text after the last "</think>" (the
-- final summary; R1 judges helpfulness on the summary only), `answer` the
-- row's answer column when it has one (null otherwise).
--
-- Never breaks a run: nil (the sample is skipped by this function, the
-- others still count) when `url` is empty (the default, so a recipe can list
-- the judge and switch it on with --set), when the server cannot be reached
-- or answers with an error status, or when the reply has no number there.
--
-- Params: url (string, "" = off), field (string), timeout (seconds per
-- attempt), retries (extra attempts on connect errors/429/5xx).
-- Columns: none (answer is optional).
local P = { url = "", field = "score", timeout = 30, retries = 1 }

local function final_summary(text)
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

return {
  params = P,
  score = function(s)
    if P.url == "" then return nil end
    local body = {
      prompt = s.prompt,
      completion = s.completion,
      response = final_summary(s.completion),
      answer = s.answer,
    }
    local reply = grpo.http_post_json(P.url, body, { timeout = P.timeout, retries = P.retries })
    if type(reply) ~= "table" then return nil end
    local v = reply[P.field]
    if type(v) ~= "number" or v ~= v then return nil end
    return v
  end,
}
