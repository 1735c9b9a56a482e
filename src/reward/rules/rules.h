/*
 * reward rules: the pure-text reward helpers of the `grpo` Lua module,
 * written in C. No I/O, no global state beyond read-only compiled regexes;
 * every function is thread-safe and does bounded work on any input (length,
 * nesting depth and number sizes are capped; see docs/rewards-helpers.md).
 *
 *   reward_boxed            last \boxed{...} / \fbox{...} / "\boxed 5"
 *   reward_math_equal       answer equivalence without SymPy (Math-Verify
 *                           semantics: extraction, normalisation, exact
 *                           rationals, random-point evaluation, sets,
 *                           intervals, tuples, matrices, relations)
 *   reward_think_format     R1-Zero <think>...</think> format check
 *   reward_tag_count        open-r1 tag_count_reward
 *   reward_lang_ratio       R1 language-consistency ratio over the CoT
 *   reward_reasoning_steps, reward_repetition_penalty, reward_cosine_scaled,
 *   reward_soft_overlong    open-r1's other rule rewards
 *   reward_rules_register   the Lua bindings (lua_rules.c)
 *
 * Texts are (pointer, length) pairs: they need not be NUL-terminated and may
 * contain NUL bytes. Invalid UTF-8 is tolerated everywhere (treated as
 * U+FFFD where characters matter).
 */
#ifndef GRPO_REWARD_RULES_H
#define GRPO_REWARD_RULES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct lua_State;

/* Inputs longer than this are refused by math_equal (status LIMIT) and cut
 * to their last REWARD_MAX_TEXT bytes by the other helpers' scans. */
#define REWARD_MAX_TEXT ((size_t)1 << 20)

/* ------------------------------------------------------------------------ */
/* \boxed                                                                   */

/* Finds the last `\boxed` or `\fbox` in text and returns its content as a
 * view into `text` (*start = byte offset, *len = length; no copy).
 *   \boxed{a{b}c}   -> "a{b}c"   (braces counted, nesting allowed)
 *   \boxed 5$       -> "5"       (a space then the content up to the next
 *                                 '$', newline or the end, trimmed)
 * Returns 1 when found, 0 when there is no box or when the last box is
 * unterminated (`\boxed{1` ...): a truncated answer does not count.      */
int reward_boxed(const char *text, size_t len, size_t *start, size_t *out_len);

/* ------------------------------------------------------------------------ */
/* Math answer equivalence                                                  */

typedef enum {
    REWARD_MATH_NOT_EQUAL = 0,
    REWARD_MATH_EQUAL = 1,
    REWARD_MATH_NO_GOLD = 2, /* no answer could be extracted/parsed from gold */
    REWARD_MATH_NO_PRED = 3, /* none from pred (gold was fine) */
    REWARD_MATH_LIMIT = 4,   /* input over a size/depth/work limit */
} reward_math_status;

const char *reward_math_status_str(reward_math_status s); /* "equal", ... */

typedef struct {
    /* Extraction, applied to both pred and gold. With both 0 (the default)
     * each text is taken as the answer itself (normalised; a \boxed in it
     * is unwrapped). extract_latex: Math-Verify's LaTeX targets ($..$,
     * \[..\], \(..\), "final answer is", "answer:", \boxed); extract_expr:
     * plain numbers and digit expressions ("1,000.5", "28 percent", "2/3"). */
    int extract_latex;
    int extract_expr;
    int gold_plain;        /* 1: no extraction on gold (a dataset answer
                              column), only normalisation; default 0 */
    int boxed_priority;    /* 0: \boxed tried first (default); 50: after
                              "final answer is" (Math-Verify's default); -1:
                              boxes are not an extraction target */
    int float_rounding;    /* decimals kept when either side is a decimal
                              number, Math-Verify float_rounding (default 6) */
    int strict;            /* 1: variable names matter (default); 0: pred's
                              variables are renamed to gold's (f(y) == f(x)) */
    int allow_set_relation_comp; /* 1: gold interval == pred inequality too
                              (by default only gold inequality vs pred set) */
    int ordered_lists;     /* 1: a bare "a, b, c" is an ordered tuple
                              (hendrycks); 0: a set (Math-Verify, default) */
    /* Normalisation steps (Math-Verify NormalizationConfig; all 1 by
     * default): units = drop trailing unit words/\text{..};
     * malformed_operators = repair \frac12, \sqrt3, a/b; nits = ".5" -> 0.5 */
    int units;
    int malformed_operators;
    int nits;
    int equations;         /* 1: keep only the part after the last '=' of an
                              equation chain before parsing (open-r1
                              accuracy_reward sets it); default 0 */
    double rel_tol;        /* relative tolerance of numeric comparisons
                              without decimals (default 1e-9) */
} reward_math_opts;

/* Fills the defaults above. */
void reward_math_opts_default(reward_math_opts *o);

/* Is `pred` the same answer as `gold`? Gold-first asymmetric like
 * Math-Verify's verify(gold, pred): "x = 3" as gold accepts "3" and an
 * inequality gold accepts an interval pred, not the reverse (see
 * allow_set_relation_comp). Never hangs: inputs over REWARD_MAX_TEXT give
 * LIMIT, nesting over 200 levels or numbers over 4096 bits make that part
 * unparsable or non-exact. `o` may be NULL (defaults). `pred` may be NULL
 * (no answer): NO_GOLD when gold cannot be parsed, else NO_PRED, so a caller
 * learns whether to skip the sample without a prediction. */
reward_math_status reward_math_equal(const char *pred, size_t pred_len,
                                     const char *gold, size_t gold_len,
                                     const reward_math_opts *o);

/* The answer text that extraction + normalisation picks from `text` (for
 * logging and debugging): writes at most cap-1 bytes plus a NUL into out.
 * Returns 1 if an answer was found and parsed, 0 otherwise (out then holds
 * the first raw match, possibly empty). */
int reward_math_extract(const char *text, size_t len, const reward_math_opts *o,
                        char *out, size_t cap);

/* ------------------------------------------------------------------------ */
/* Format                                                                   */

typedef enum {
    REWARD_THINK_R1 = 0, /* structural check (below) */
    REWARD_THINK_OPENR1, /* open-r1 format_reward's exact regex:
                            ^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>$
                            (DOTALL, MULTILINE); with code_lang set, open-r1
                            code_format_reward's regex for that language */
} reward_think_style;

typedef struct {
    reward_think_style style;
    int prefilled;      /* R1 style: the prompt ended with "<think>", so the
                           completion may start inside the think block */
    int answer_tags;    /* R1 style: 0 = <answer>..</answer> optional,
                           1 = required, -1 = forbidden */
    const char *code_lang; /* OPENR1 style: NULL for format_reward, else the
                           fence language of code_format_reward ("python") */
} reward_think_opts;

void reward_think_opts_default(reward_think_opts *o);

/* 1.0 if the completion has the R1-Zero shape, else 0.0. R1 style:
 *   - it starts (after leading whitespace) with "<think>", or prefilled and
 *     no "<think>" at all;
 *   - exactly one "</think>" and at most one "<think>" (before it);
 *   - a non-blank CoT between them and a non-blank answer after "</think>";
 *   - answer part: if it contains "<answer>" it must be exactly
 *     "<answer>X</answer>" with only whitespace outside, one pair, non-blank
 *     X; answer_tags = 1 requires that form, -1 forbids the tags.
 * Returns -1.0 if code_lang holds characters other than [A-Za-z0-9+#_.-]. */
double reward_think_format(const char *text, size_t len, const reward_think_opts *o);

/* open-r1 tag_count_reward: 0.25 for each of "<think>\n", "\n</think>\n",
 * "\n<answer>\n", "\n</answer>" that occurs exactly once. */
double reward_tag_count(const char *text, size_t len);

/* ------------------------------------------------------------------------ */
/* Language consistency                                                     */

typedef struct {
    int64_t target; /* words in a script of the target language */
    int64_t total;  /* all counted words */
} reward_lang_counts;

/* DeepSeek-R1's language-consistency reward: target words / all words of
 * the CoT (docs/rewards-helpers.md defines "word" exactly). The CoT is the
 * text inside <think>...</think>, the text before "</think>" when the
 * opening tag was prefilled, the text after "<think>" when it is never
 * closed, else the whole text. `lang` is an ISO 639-1 code (en, fr, de,
 * es, it, pt, nl, ..., zh, ja, ko, ru, uk, ar, fa, he, el, hi, th, ...).
 * Returns the ratio in [0,1], NaN when the CoT has no words, and -1 when
 * `lang` is unknown. `counts` may be NULL. */
double reward_lang_ratio(const char *text, size_t len, const char *lang,
                         reward_lang_counts *counts);

/* 1 if `lang` is a code reward_lang_ratio knows. */
int reward_lang_known(const char *lang);

/* ------------------------------------------------------------------------ */
/* open-r1's other rewards                                                  */

/* reasoning_steps_reward: matches of (Step \d+:|^\d+\.|\n-|\n\*|First,|
 * Second,|Next,|Finally,) (no MULTILINE: ^ is the start of the text);
 * min(1, count/3). */
double reward_reasoning_steps(const char *text, size_t len);

/* get_repetition_penalty_reward: words = whitespace-split, ASCII
 * lower-cased ("zh": every CJK character is a word, other runs split on
 * whitespace; open-r1 uses the jieba segmenter, which we do not ship);
 * (1 - distinct n-grams / n-grams) * max_penalty, 0 when there are fewer
 * than ngram_size words. max_penalty must be <= 0 and ngram_size >= 1,
 * else NaN. */
double reward_repetition_penalty(const char *text, size_t len, int ngram_size,
                                 double max_penalty, const char *lang);

typedef struct {
    double min_value_wrong;   /* -1.0 */
    double max_value_wrong;   /* -0.5 */
    double min_value_correct; /*  0.5 */
    double max_value_correct; /*  1.0 */
    double max_len;           /* 1000 */
    int clamp;                /* 1 (default, TRL): a completion longer than
                                 max_len scores as one of max_len; 0
                                 (open-r1): the cosine rises again past
                                 max_len, so very long completions regain
                                 reward */
} reward_cosine_opts;

void reward_cosine_opts_default(reward_cosine_opts *o);

/* get_cosine_scaled_reward for a completion of `gen_len` characters:
 * c = cos(pi * min(gen_len, max_len) / max_len) (without clamp: gen_len);
 * correct: min_c + (max_c - min_c)(1+c)/2; wrong: max_w + (min_w -
 * max_w)(1+c)/2 (longer wrong answers are penalised less). NaN if
 * max_len <= 0. */
double reward_cosine_scaled(double gen_len, int correct, const reward_cosine_opts *o);

/* DAPO soft overlong punishment on a token count L: 0 if L <= max - cache,
 * (max - cache - L) / cache inside the cache window, -1 beyond max.
 * NaN if cache <= 0 or cache > max. */
double reward_soft_overlong(double completion_tokens, double max_completion_len,
                            double soft_punish_cache);

/* Number of Unicode code points in text (invalid bytes count as one each):
 * the "len(content)" of the open-r1 length rewards. */
size_t reward_utf8_length(const char *text, size_t len);

/* ------------------------------------------------------------------------ */
/* Lua                                                                      */

/* Sets boxed, math_equal, math_extract, think_format, tag_count,
 * lang_ratio, reasoning_steps, repetition_penalty, cosine_scaled,
 * soft_overlong and utf8_length into the table on top of the stack (which
 * stays there).
 * Arguments and opts tables: docs/rewards-helpers.md. */
void reward_rules_register(struct lua_State *L);

#ifdef __cplusplus
}
#endif

#endif
