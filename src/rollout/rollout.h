/*
 * rollout: batched generation for GRPO. Prompts are prefilled once into the
 * latent KV cache and their cache is shared by their G samples; every live
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

typedef struct {
    float temperature; /* 0: greedy */
    float top_p;       /* 1 or 0: off */
    int top_k;         /* 0: off */
    float min_p;       /* 0: off */
} rollout_sampling;

/* Sample one token from logits [V] (see sample.c for the order of the
 * filters). u: uniform in [0, 1). *logp (may be NULL) gets log softmax of
 * logits / temperature at the token, over the full vocabulary. Scratch:
 * probs [V] and order [V], owned by the caller. */
int32_t rollout_sample_token(const float *logits, int64_t V, const rollout_sampling *sp, float u,
                             float *logp, float *probs, int32_t *order);

/* The uniform draw for (seed, step, prompt, sample, position). */
float rollout_uniform(uint64_t seed, uint32_t step, uint32_t prompt, uint32_t sample, uint32_t position);

#endif
