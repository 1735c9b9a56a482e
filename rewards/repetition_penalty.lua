-- repetition_penalty.lua: open-r1's repetition penalty (arXiv 2502.03373
-- App. C.2): (1 - distinct n-grams / n-grams) * max_penalty over the
-- lower-cased whitespace words; 0 when there are fewer than ngram_size
-- words. Language "zh" counts each CJK character as a word (open-r1 uses
-- jieba, which we do not ship, so zh scores differ from open-r1's).
-- Columns: none. Params: ngram_size (3), max_penalty (<= 0, -1.0),
-- language ("en" or "zh").
local P = { ngram_size = 3, max_penalty = -1.0, language = "en" }

return {
  params = P,
  score = function(s)
    return grpo.repetition_penalty(s.completion, { ngram_size = P.ngram_size,
                                                   max_penalty = P.max_penalty, language = P.language })
  end,
}
