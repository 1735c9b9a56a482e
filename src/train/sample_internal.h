/*
 * Private to src/train (stage_sample.c and its tests): the pieces of R1
 * rejection sampling that do not need a model: the reasoning span of a
 * completion, R1's three filters, and the `keep` expression evaluator.
 *
 * The reasoning (chain of thought) of a completion is, as
 * reward_lang_ratio defines it: the text inside <think>...</think>; the
 * text before "</think>" when the opening tag was in the prompt; the text
 * after "<think>" when it is never closed; else the whole completion.
 */
#ifndef GRPO_TRAIN_SAMPLE_INTERNAL_H
#define GRPO_TRAIN_SAMPLE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

/* The reasoning span of text[0..n): *start (byte offset) and *len. */
void sample_reasoning(const char *text, size_t n, size_t *start, size_t *len);

/* ---- filters (each returns 1 when the completion is DROPPED) ------------ */

typedef enum {
    SAMPLE_FILTER_MIXED_LANGUAGE = 0, /* lang ratio of the reasoning < min */
    SAMPLE_FILTER_LONG_PARAGRAPHS,    /* a paragraph longer than max chars */
    SAMPLE_FILTER_CODE_BLOCKS,        /* a ``` fence in the reasoning */
    SAMPLE_FILTER_COUNT,
} sample_filter;

/* "mixed_language", "long_paragraphs", "code_blocks". */
const char *sample_filter_name(sample_filter f);
/* The filter named `name`, or -1. */
int sample_filter_parse(const char *name);

/* mixed_language over a reasoning text: the share of `lang` words
 * (reward_lang_ratio) is below min_ratio. A reasoning without words is not
 * mixed (0). *ratio (may be NULL) gets the ratio, NaN without words. An
 * unknown lang drops nothing and returns -1 (checked before sampling). */
int sample_mixed_language(const char *cot, size_t n, const char *lang, double min_ratio, double *ratio);

/* long_paragraphs: paragraphs are separated by blank lines (a newline,
 * optional spaces/tabs/CR, a newline); a paragraph's length is its count of
 * UTF-8 characters without leading and trailing whitespace. Drops when one
 * is longer than max_chars. *longest (may be NULL) gets the longest. */
int sample_long_paragraphs(const char *cot, size_t n, int64_t max_chars, int64_t *longest);

/* code_blocks: the reasoning holds a Markdown code fence "```". */
int sample_code_blocks(const char *cot, size_t n);

/* ---- the keep expression ------------------------------------------------- */

/* A compiled `keep` expression in its own small Lua state: the base,
 * string, table, math and utf8 libraries without load/loadfile/dofile/
 * require/collectgarbage/print, a budget of 1M VM instructions and 16 MiB
 * of memory per evaluation. Environment of one evaluation (globals):
 *   reward         the weighted total (nil when every function gave nil)
 *   rewards.NAME   each reward function's score (nil when nil/error)
 *   sample         the reward sample: the dataset row plus prompt (the
 *                  rendered text), completion, completion_tokens,
 *                  finish_reason
 *   completion     = sample.completion
 *   finish_reason  = sample.finish_reason ("stop" or "length")
 * The expression must give true or false (nil counts as false); any other
 * value is an error, so `keep = "reward"` (always truthy) is caught. */
typedef struct sample_keep sample_keep;

/* Compile `expr` (as `return (expr)`). A syntax error is BASE_ERR_PARSE
 * "keep expression 'EXPR': keep:1: ...". */
base_status sample_keep_new(const char *expr, sample_keep **out);
/* Evaluate for one completion: scores[f] (NaN = nil) for names[f]; total
 * NaN = nil; sample is the reward sample. *keep overwritten. A runtime
 * error, a budget overrun or a non-boolean result is BASE_ERR_INVALID
 * "keep expression 'EXPR': MESSAGE". */
base_status sample_keep_eval(sample_keep *k, double total, const char *const *names, const double *scores,
                             int nf, const cJSON *sample, int *keep);
void sample_keep_free(sample_keep *k);

#endif
