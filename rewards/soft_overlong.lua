-- soft_overlong.lua: DAPO's soft overlong punishment (eq. 13) on the
-- number of generated tokens L: 0 if L <= max - cache,
-- (max - cache - L) / cache inside the last `cache` tokens, -1 beyond max.
-- Uses the pipeline's `completion_tokens` (nil when it is absent).
-- Columns: none. Params: max_completion_len (DAPO: 20480),
-- soft_punish_cache (DAPO: 4096).
local P = { max_completion_len = 20480, soft_punish_cache = 4096 }

return {
  params = P,
  score = function(s)
    if s.completion_tokens == nil then return nil end
    return grpo.soft_overlong(s.completion_tokens, P.max_completion_len, P.soft_punish_cache)
  end,
}
