-- lang_consistency.lua: DeepSeek-R1's language-consistency reward: the
-- proportion of target-language words in the CoT (the text inside
-- <think>...</think>; see docs/rewards-helpers.md for what a word is).
-- nil when the CoT has no words. Parts: target_words, words.
-- Column: lang (optional; ISO 639-1 code such as en, zh, ja, fr; rows
-- without it use the default_lang param, "en"). An unknown code is an error.
local P = { default_lang = "en" }

return {
  params = P,
  score = function(s)
    local lang = s.lang or P.default_lang
    local ratio, target, total = grpo.lang_ratio(s.completion, lang)
    if ratio == nil then return nil end
    return ratio, { target_words = target, words = total }
  end,
}
