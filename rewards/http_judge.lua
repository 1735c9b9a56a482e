-- http_judge.lua: a reward model behind HTTP (DeepSeek-R1 §2.3.4: reward
-- models for general data in the "RL for all scenarios" stage). POSTs
--   {"prompt": ..., "completion": ..., "response": ..., "answer": ...}
-- to the `url` param (grpo.http_post_json: JSON body, timeout, retries) and
-- returns the number in the reply's `field` (default "score"), e.g. a reply
-- {"score": 0.8}. `response` is the text after the last "</think>" (the
-- final summary; R1 judges helpfulness on the summary only), `answer` the
-- row's answer column when it has one (null otherwise).
--
-- nil (this function does not score the sample; the others still count)
-- when `url` is empty (the default, so a recipe can list the judge and
-- switch it on with --set) or when the reply's field is missing or null
-- (the judge abstains). An error (logged and counted against
-- max_reward_error_rate, docs/rewards.md) when the server cannot be reached
-- or answers with an error status, the reply is not a JSON object, or the
-- field holds something other than a number.
--
-- Pre-flight (`check`, before any training): one POST of a small sample;
-- the run stops there unless the server answers with a number in `field`.
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

local function post(body)
  local reply, err = grpo.http_post_json(P.url, body, { timeout = P.timeout, retries = P.retries })
  if reply == nil then error("http_judge: " .. tostring(err), 0) end
  if type(reply) ~= "table" then
    error("http_judge: " .. P.url .. " replied with a JSON " .. type(reply) .. ", expected an object", 0)
  end
  local v = reply[P.field]
  if v == nil then return nil end
  if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then
    error("http_judge: " .. P.url .. ": '" .. P.field .. "' in the reply is " .. tostring(v) .. ", not a number", 0)
  end
  return v
end

return {
  params = P,
  check = function()
    if P.url == "" then return end
    local v = post({ prompt = "What is 1 + 1?", completion = "<think>1 + 1 = 2</think> 2", response = " 2",
                     answer = "2" })
    if v == nil then
      error("http_judge: " .. P.url .. ": the reply to a test sample has no number in '" .. P.field .. "'", 0)
    end
  end,
  score = function(s)
    if P.url == "" then return nil end
    return post({
      prompt = s.prompt,
      completion = s.completion,
      response = final_summary(s.completion),
      answer = s.answer,
    })
  end,
}
