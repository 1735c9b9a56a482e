/*
 * sft: supervised fine-tuning pieces. The masked next-token NLL over
 * per-token logprobs (the loss the model's backward starts from), the
 * packing planner that puts several samples in one row without attention
 * across them (TRL SFTTrainer packing_strategy "bfd"), and loss masks for
 * chat samples ({"messages": [...]}) where only assistant turns are trained.
 *
 * Token-level conventions. A sample is ids[0..L) with a loss mask m[0..L):
 * m[i] = 1 when token i is a training target (completion / assistant
 * token). Position p of a packed row predicts the token at p + 1 of the same
 * sample: target[p] = ids[p + 1], and the position enters the loss when
 * m[p + 1] = 1. The first token of a sample is never a target.
 *
 * Normalisation (documented choice, as transformers' Trainer with
 * num_items_in_batch): the loss of an optimizer step is the mean NLL over
 * all loss tokens of the step, sum over micro-batches and ranks of
 *   -sum_t m_t logp_t / n_tokens_step
 * so long samples weigh by their token count and the result does not
 * depend on how the step is split into micro-batches.
 */
#ifndef GRPO_TRAIN_SFT_H
#define GRPO_TRAIN_SFT_H

#include <stdint.h>

#include "base/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Loss (sft.c)                                                             */

typedef struct {
    double loss;     /* this micro-batch's contribution to the step loss */
    double nll_sum;  /* sum of -logp over its loss tokens */
    double n_tokens; /* its loss tokens */
} sft_loss_stats;

/* Loss tokens among mask[0..n) (NULL mask: n). Sum over the step's
 * micro-batches (and ranks) for n_tokens_step. */
int64_t sft_count_loss_tokens(const uint8_t *mask, int64_t n);

/* logp[t]: log-prob of the target at position t; mask[t]: 1 = a loss
 * position (NULL = all). g_logp[0..n) is overwritten: -1 / n_tokens_step at
 * loss positions, 0 elsewhere (masked positions are never read, so their
 * logp may be anything, e.g. for padding). stats overwritten (may be NULL).
 * BASE_ERR_INVALID when n_tokens_step is smaller than this micro-batch's
 * own count. An empty step (0 tokens) gives loss 0 and zero gradients. */
base_status sft_loss(const float *logp, const uint8_t *mask, int64_t n, int64_t n_tokens_step,
                     float *g_logp, sft_loss_stats *stats);

/* ------------------------------------------------------------------------ */
/* Packing (sft_pack.c)                                                     */

typedef struct {
    const int32_t *ids;  /* [len] */
    const uint8_t *mask; /* [len] 1 = training target; NULL = every token */
    int64_t len;
} sft_sample;

typedef struct {
    int64_t sample; /* index into the planner's input */
    int64_t start;  /* first position in the row */
    int64_t len;    /* tokens placed (the sample's length, or row_len when truncated) */
} sft_segment;

/* The plan owns its arrays (sft_pack_free). Row r holds segments
 * seg[row_first[r] .. row_first[r + 1]) back to back from position 0;
 * positions [row_used[r], row_len) are padding. */
typedef struct {
    int64_t row_len;
    int64_t n_rows;
    int64_t n_segments;
    sft_segment *seg;   /* [n_segments] */
    int64_t *row_first; /* [n_rows + 1] */
    int64_t *row_used;  /* [n_rows] */
    int64_t n_truncated; /* samples longer than row_len, cut to their first row_len tokens */
    int64_t n_empty;     /* samples of length 0, left out */
} sft_pack;

/* Best-fit decreasing, as TRL's _pack_bfd: samples by length, longest first
 * (ties by input order); each goes into the open row with the least free
 * space that still fits it (ties: the row that reached that free space
 * first), else a new row. lens[n] in tokens. Errors: row_len < 1 or a
 * negative length (BASE_ERR_INVALID). Deterministic. */
base_status sft_pack_plan(const int64_t *lens, int64_t n, int64_t row_len, sft_pack *out);
void sft_pack_free(sft_pack *p);

/* Materialise row r of the plan (every output [row_len], overwritten):
 *   ids       token ids; pad_id on padding
 *   pos       position ids, restarting at 0 for every segment (RoPE); 0 on padding
 *   seg       segment index within the row, -1 on padding: attention is
 *             causal and only within equal segment ids
 *   target    next token of the same sample, -1 at each segment's last
 *             position and on padding
 *   loss_mask 1 where target >= 0 and the target token's sample mask is 1
 * samples: the planner's input (same indices). Any output but ids may be
 * NULL. BASE_ERR_INVALID when a sample's length disagrees with the plan. */
base_status sft_pack_row(const sft_pack *p, int64_t r, const sft_sample *samples, int32_t pad_id,
                         int32_t *ids, int32_t *pos, int32_t *seg, int32_t *target,
                         uint8_t *loss_mask);

/* The row as the model's packed batch (model_batch): cu[0..k] segment
 * boundaries (cu[0] = 0, cu[k] = row_used[r]) with k = the row's segment
 * count, returned; cu needs room for k + 1 entries (at most n_segments + 1).
 * Pass ids and the target array of sft_pack_row, first row_used[r]
 * entries: no padding needed. -1 for a row out of range. */
int sft_pack_row_cu_seqlens(const sft_pack *p, int64_t r, int32_t *cu);

/* ------------------------------------------------------------------------ */
/* Chat samples (sft.c)                                                     */

typedef struct {
    const char *role;    /* "system", "user", "assistant" or "tool" */
    const char *content; /* UTF-8; points into the parsed JSON */
} sft_message;

typedef struct {
    int n;
    sft_message *msgs; /* [n], owned (sft_chat_free); strings owned by the JSON */
} sft_chat;

/* Read {"messages": [{"role": ..., "content": ...}, ...]}. `where` names the
 * row in messages ("train.jsonl:12"). Errors (BASE_ERR_INVALID): no
 * "messages" array, a message without string role/content, an unknown
 * role, no assistant message. The chat borrows strings from `row`. */
base_status sft_chat_parse(const cJSON *row, const char *where, sft_chat *out);
void sft_chat_free(sft_chat *c);

/* Token count of a chat prefix: the tokenizer's chat encoding of msgs[0..n)
 * (with the template's generation prompt, e.g. "<｜Assistant｜>", appended
 * when add_generation_prompt). Supplied by the caller (src/tok). */
typedef base_status (*sft_chat_count_fn)(void *ctx, const sft_message *msgs, int n,
                                         int add_generation_prompt, int64_t *n_tokens);

typedef struct {
    int64_t begin, end; /* token range [begin, end) */
} sft_span;

/* The token spans of the assistant turns of a chat, found by prefix
 * differences: turn k spans [count(msgs[0..k), prompt), count(msgs[0..k+1)))
 * i.e. its content and end-of-turn token(s), without the role marker. This
 * needs a template whose encoding of a prefix is a prefix of the encoding
 * of the whole chat (true for the DeepSeek-V3 format, where contents are
 * encoded separately between special tokens; not for the R1 variant that
 * strips earlier reasoning). spans: [number of assistant messages]
 * overwritten; *n_spans set. Errors from count are passed on; a span that
 * is empty or goes backwards is BASE_ERR_INVALID (the template breaks the
 * prefix rule). */
base_status sft_chat_assistant_spans(const sft_chat *chat, sft_chat_count_fn count, void *ctx,
                                     sft_span *spans, int *n_spans);

/* mask[0..n) = 1 inside any span, 0 elsewhere (spans clipped to [0, n)). */
void sft_mask_from_spans(int64_t n, const sft_span *spans, int n_spans, uint8_t *mask);

#ifdef __cplusplus
}
#endif

#endif
