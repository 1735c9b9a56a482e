/*
 * rollout: batched generation for GRPO. Prompts are prefilled once into the
 * paged latent KV cache and their full pages are shared by their G samples
 * (only the last partial page is copied per sample); every live
 * sequence of a step decodes together (continuous batching: a finished
 * sequence's slot is refilled at once); sampling draws come from Philox
 * keyed by (seed, step, prompt index, sample index, position), so a sample
 * never depends on batch composition; generation stops on EOS, stop strings
 * and max_new_tokens; each token's sampling log-probability is recorded.
 */
#ifndef GRPO_ROLLOUT_H
#define GRPO_ROLLOUT_H

#include <stdint.h>

#include "base/base.h"
#include "model/model.h"

struct model;
struct tok_tokenizer;

/* Sampling parameters, applied by the `sample` op (src/tensor/ops.h):
 * temperature, then top-k, top-p, min-p (Hugging Face's order). The
 * recorded log-probability is log softmax(logits / T) over the whole
 * vocabulary at the token (T = 1 when greedy): what the trainer recomputes
 * with logit_scale = 1/T. */
typedef struct {
    float temperature; /* 0: greedy */
    float top_p;       /* 1 or 0: off */
    int top_k;         /* 0: off */
    float min_p;       /* 0: off */
} rollout_sampling;

/* The uniform draw for (seed, step, prompt, sample, position). */
float rollout_uniform(uint64_t seed, uint32_t step, uint32_t prompt, uint32_t sample, uint32_t position);

/* ------------------------------------------------------------------------ */
/* The engine                                                               */

typedef enum {
    ROLLOUT_FINISH_STOP = 0, /* EOS / a stop token, or a stop string */
    ROLLOUT_FINISH_LENGTH,   /* max_new_tokens reached */
} rollout_finish;

/* "stop" or "length" (the vLLM / TRL names). */
const char *rollout_finish_name(rollout_finish f);

/* Sizes fixed at creation: every buffer is allocated once here. */
typedef struct {
    int max_seqs;           /* sequences decoded together (>= the group size G) */
    int max_prompts;        /* prompts per rollout_generate call */
    int max_group;          /* G at most */
    int64_t max_prompt_len; /* tokens */
    int64_t max_new_tokens; /* tokens per completion */
    int64_t page_size;      /* positions per cache page; 0: MODEL_PAGE_SIZE (16) */
    int64_t max_pages;      /* cache pages (the latent cache's memory, model_cache_page_bytes
                             * each); 0: max_seqs * ceil((max_prompt_len + max_new_tokens) /
                             * page_size), enough for every slot at full length unshared */
    int no_graphs;          /* 1: decode steps op by op even where the backend has graphs
                             * (model_cache_limits.no_graphs) */
} rollout_limits;

typedef struct rollout_engine rollout_engine;

/* The latent cache rollout_new plans for a config and these limits, and
 * the device bytes the engine allocates (model_cache_bytes_p: the page
 * pool, the block tables, the prefill/decode workspace; and the sampler's
 * buffer) with an adapter of config lc (NULL: none) in a precision. */
void rollout_cache_limits(const model_config *cfg, const rollout_limits *lim, model_cache_limits *out);
size_t rollout_bytes(const model_config *cfg, const rollout_limits *lim, const model_lora_config *lc,
                     model_precision prec);
/* The same for a model loaded with expert parallelism over ep_size ranks
 * (model_cache_bytes_ep: the workspace's dispatch buffers for the rows
 * every peer may send, the worst case of all of them to this rank). */
size_t rollout_bytes_ep(const model_config *cfg, const rollout_limits *lim, const model_lora_config *lc,
                        model_precision prec, int ep_size);

/* An engine over a loaded model: a paged latent KV cache of max_pages
 * pages and max_seqs block tables, result buffers for max_prompts *
 * max_group completions. */
base_status rollout_new(struct model *m, const rollout_limits *lim, rollout_engine **out);
void rollout_free(rollout_engine *e);

typedef struct {
    int n_prompts;
    const int32_t *const *prompt_ids; /* [n_prompts] arrays */
    const int32_t *prompt_len;        /* [n_prompts], each >= 1 */
    int G;                            /* completions per prompt */
    rollout_sampling sampling;
    int64_t max_new_tokens;
    const int32_t *stop_ids; /* EOS and other stop tokens (kept in the output) */
    int n_stop_ids;
    const char *const *stop_strings; /* kept in the output; need `tok` */
    int n_stop_strings;
    const struct tok_tokenizer *tok; /* for stop strings; may be NULL */
    /* RNG key: token t of sample g of prompt p draws
     * rollout_uniform(seed, step, prompt_base + p, g, t) */
    uint64_t seed;
    uint32_t step;
    uint32_t prompt_base;
} rollout_request;

/* One completion. Arrays are owned by the engine, valid until the next
 * rollout_generate. */
typedef struct {
    const int32_t *ids; /* [len] generated tokens (a stop token included) */
    const float *logp;  /* [len] sampling log-probabilities (see sample.c) */
    int64_t len;
    rollout_finish finish;
} rollout_completion;

typedef struct {
    int n;                         /* n_prompts * G, prompt-major */
    const rollout_completion *out; /* [n]: out[p * G + g] */
    int64_t new_tokens;            /* generated tokens in all */
    int64_t prefill_tokens;
    double seconds;
    int64_t decode_steps;
    int64_t join_steps; /* expert parallelism: zero-row decode steps taken after this rank's own
                         * sequences were done, until its EP group agreed all were (0 without) */
    double join_seconds; /* the time those steps and the per-step agreements took */
    int peak_seqs;      /* most sequences live at once */
    int64_t peak_pages; /* most cache pages in use at once (a shared page counts once) */
    int64_t graph_replays; /* decode steps replayed from a captured graph (CUDA) */
} rollout_result;

/* Generate G completions for each prompt. Continuous batching: all live
 * sequences decode together; when a sequence finishes its slot and pages
 * go back and waiting prompts are admitted at once. Each prompt is
 * prefilled once; its full cache pages serve its G samples. A prompt is
 * admitted, in order, when G slots are free and its group's worst case
 * (every sample reaching max_new_tokens) fits in the pages neither in use
 * nor promised to live sequences: a live sequence always gets its next page
 * (no preemption, no deadlock), and the tokens do not depend on the page
 * budget. Errors (a prompt over max_prompt_len, G over max_group, a group
 * whose worst case exceeds max_pages, a model error) leave *res empty. */
base_status rollout_generate(rollout_engine *e, const rollout_request *r, rollout_result *res);

#endif
