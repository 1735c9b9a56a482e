/*
 * Token sampling from one row of logits: temperature, top-k, top-p
 * (nucleus) and min-p, in that order (the order vLLM and HF apply them),
 * then an inverse-CDF draw with a caller-supplied uniform u in [0, 1). The
 * caller derives u from Philox keyed by (seed, step, prompt, sample,
 * position), so a token never depends on batch composition.
 *
 * The recorded log-probability is log softmax(logits / T)[token] over the
 * full vocabulary (before truncation): the quantity the trainer recomputes
 * with `logit_scale = 1/T`, so old and new log-probs are comparable (the
 * convention of TRL). Greedy (T = 0) records log softmax(logits)[token].
 */
#include "rollout.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_desc(const void *a, const void *b, void *ctx) {
    const float *p = ctx;
    float x = p[*(const int32_t *)a], y = p[*(const int32_t *)b];
    if (x > y) return -1;
    if (x < y) return 1;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b; /* ties: lower id first */
    return (i > j) - (i < j);
}

int32_t rollout_sample_token(const float *logits, int64_t V, const rollout_sampling *sp, float u,
                             float *logp, float *probs, int32_t *order) {
    /* argmax and the log-sum-exp at the recorded temperature */
    int32_t best = 0;
    for (int64_t v = 1; v < V; v++)
        if (logits[v] > logits[best]) best = (int32_t)v;
    float T = sp->temperature > 0 ? sp->temperature : 1.0f;
    double mx = logits[best] / T, z = 0;
    for (int64_t v = 0; v < V; v++) z += exp(logits[v] / T - mx);
    double lse = mx + log(z);
    if (sp->temperature <= 0) {
        if (logp) *logp = (float)(logits[best] - lse);
        return best;
    }
    /* probabilities at temperature T */
    for (int64_t v = 0; v < V; v++) probs[v] = (float)exp(logits[v] / T - lse);
    int64_t n = V; /* candidates: order[0..n) */
    int truncating = (sp->top_k > 0 && sp->top_k < V) || (sp->top_p > 0 && sp->top_p < 1) || sp->min_p > 0;
    int32_t token;
    if (!truncating) {
        double acc = 0, target = u;
        token = (int32_t)(V - 1);
        for (int64_t v = 0; v < V; v++) {
            acc += probs[v];
            if (acc > target) {
                token = (int32_t)v;
                break;
            }
        }
        /* rounding can leave acc slightly below u: take the last positive */
        if (acc <= target)
            for (int64_t v = V - 1; v >= 0; v--)
                if (probs[v] > 0) {
                    token = (int32_t)v;
                    break;
                }
    } else {
        for (int64_t v = 0; v < V; v++) order[v] = (int32_t)v;
        qsort_r(order, (size_t)V, sizeof *order, cmp_desc, probs);
        if (sp->top_k > 0 && sp->top_k < n) n = sp->top_k;
        if (sp->top_p > 0 && sp->top_p < 1) {
            double acc = 0;
            int64_t keep = n;
            for (int64_t i = 0; i < n; i++) {
                acc += probs[order[i]];
                if (acc >= sp->top_p) {
                    keep = i + 1;
                    break;
                }
            }
            n = keep;
        }
        if (sp->min_p > 0) {
            float floor_p = sp->min_p * probs[order[0]];
            int64_t keep = 1;
            while (keep < n && probs[order[keep]] >= floor_p) keep++;
            n = keep;
        }
        double total = 0;
        for (int64_t i = 0; i < n; i++) total += probs[order[i]];
        double target = u * total, acc = 0;
        token = order[n - 1];
        for (int64_t i = 0; i < n; i++) {
            acc += probs[order[i]];
            if (acc > target) {
                token = order[i];
                break;
            }
        }
    }
    if (logp) *logp = (float)(logits[token] / T - lse);
    return token;
}

float rollout_uniform(uint64_t seed, uint32_t step, uint32_t prompt, uint32_t sample, uint32_t position) {
    base_rng r;
    base_rng_init(&r, seed, step, prompt, sample);
    return base_rng_uniform(&r, position);
}
