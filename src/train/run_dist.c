/*
 * Data parallel: what the pipeline's ranks exchange (run_internal.h,
 * docs/distributed.md). ZeRO stage 0: every rank holds the whole state
 * (weights, optimizer, data cursors, the step's batch after the rollout
 * results are shared), so ranks agree by computing the same thing from the
 * same data; the only reductions are the gradients, the loss statistics and
 * whether a step failed somewhere.
 */
#include <limits.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "run_internal.h"

void run_split(int64_t n, int r, int w, int64_t *lo, int64_t *hi) {
    *lo = n * r / w;
    *hi = n * (r + 1) / w;
}

base_status run_agree(run_ctx *c, base_status s, const char *what) {
    if (c->world <= 1) return s;
    int32_t v[2] = {s != BASE_OK, s != BASE_OK ? c->rank : INT32_MAX}; /* any failed; the first that did */
    int32_t any = v[0], first = v[1];
    base_status e = dist_allreduce(c->host, &any, 1, DIST_I32, DIST_MAX);
    if (!e) e = dist_allreduce(c->host, &first, 1, DIST_I32, DIST_MIN);
    if (e) return s ? s : base_err_wrap(e, "%s", what); /* no agreement: main ends the job (dist_abort) */
    if (any) dist_note_agreed_failure(); /* every rank fails here: they leave in step */
    if (s) return s; /* this rank's own message */
    if (any)
        return base_err_set(BASE_ERR_IO, "%s: rank %d failed (its own message says why)", what, (int)first);
    return BASE_OK;
}

base_status run_reduce_grads(run_ctx *c, float *grads) {
    if (c->world <= 1 || c->z2) return BASE_OK; /* ZeRO 2: reduced by run_backward */
    if (c->ep > 1) return run_ep_reduce_grads(c, grads);
    int64_t n = c->lora ? model_lora_numel(c->lora) : model_numel(c->policy);
    if (c->lora) grads = model_lora_grads(c->lora); /* the adapter's own arena */
    base_status s = dist_allreduce(c->dev, grads, (size_t)n, DIST_F32, DIST_SUM);
    return s ? base_err_wrap(s, "summing the gradients over %d ranks", c->world) : BASE_OK;
}

base_status run_reduce_loss_stats(run_ctx *c, grpo_loss_stats *st) {
    if (c->world <= 1) return BASE_OK;
    double sum[14] = {st->loss,          st->policy_loss,   st->n_tokens,          st->kl_sum,
                      st->entropy_sum,   st->clip_count,    st->clip_low_sum,      st->clip_high_sum,
                      st->clip_region_sum, st->bonus_entropy_sum, st->bonus_tokens, st->cispo_clip_sum,
                      st->phi_sum,       st->n_seqs};
    double lo = st->clip_low_min, hi = st->clip_high_max;
    int32_t flags[5] = {st->has_kl, st->has_entropy, st->has_clip, st->has_cispo, st->has_phi};
    base_status s = dist_allreduce(c->host, sum, 14, DIST_F64, DIST_SUM);
    if (!s) s = dist_allreduce(c->host, &lo, 1, DIST_F64, DIST_MIN);
    if (!s) s = dist_allreduce(c->host, &hi, 1, DIST_F64, DIST_MAX);
    if (!s) s = dist_allreduce(c->host, flags, 5, DIST_I32, DIST_MAX);
    if (s) return base_err_wrap(s, "merging the loss statistics of %d ranks", c->world);
    st->loss = sum[0], st->policy_loss = sum[1], st->n_tokens = sum[2], st->kl_sum = sum[3];
    st->entropy_sum = sum[4], st->clip_count = sum[5], st->clip_low_sum = sum[6], st->clip_high_sum = sum[7];
    st->clip_region_sum = sum[8], st->bonus_entropy_sum = sum[9], st->bonus_tokens = sum[10];
    st->cispo_clip_sum = sum[11], st->phi_sum = sum[12], st->n_seqs = sum[13];
    st->clip_low_min = lo, st->clip_high_max = hi;
    st->has_kl = flags[0], st->has_entropy = flags[1], st->has_clip = flags[2], st->has_cispo = flags[3];
    st->has_phi = flags[4];
    return BASE_OK;
}

base_status run_share_rows(run_ctx *c, float *buf, int64_t stride, const int32_t *len, const int *ord, int n) {
    if (c->world <= 1) return BASE_OK;
    int W = c->world;
    size_t *counts = base_xcalloc((size_t)W, sizeof *counts), total = 0;
    for (int r = 0; r < W; r++) {
        int64_t lo, hi;
        run_split(n, r, W, &lo, &hi);
        for (int64_t k = lo; k < hi; k++) counts[r] += (size_t)len[ord[k]];
        total += counts[r];
    }
    float *mine = base_xmalloc((counts[c->rank] + 1) * sizeof(float));
    float *all = base_xmalloc((total + 1) * sizeof(float));
    int64_t lo, hi;
    run_split(n, c->rank, W, &lo, &hi);
    size_t o = 0;
    for (int64_t k = lo; k < hi; k++) {
        int j = ord[k];
        memcpy(mine + o, buf + (size_t)j * (size_t)stride, (size_t)len[j] * sizeof(float));
        o += (size_t)len[j];
    }
    base_status s = dist_allgatherv(c->host, mine, all, counts, DIST_F32);
    if (!s) { /* rank order = k order: the rows come back as they were split */
        o = 0;
        for (int k = 0; k < n; k++) {
            int j = ord[k];
            memcpy(buf + (size_t)j * (size_t)stride, all + o, (size_t)len[j] * sizeof(float));
            o += (size_t)len[j];
        }
    }
    free(counts), free(mine), free(all);
    return s ? base_err_wrap(s, "sharing per-token values over %d ranks", W) : BASE_OK;
}

base_status run_test_fault(run_ctx *c) {
    const char *e = getenv("GRPO_TEST_FAIL_RANK");
    int r = -1;
    long long step = -1;
    if (!e || sscanf(e, "%d:%lld", &r, &step) != 2 || r != c->rank || step != c->total_steps + 1) return BASE_OK;
    return base_err_set(BASE_ERR_IO, "GRPO_TEST_FAIL_RANK=%s: rank %d fails training step %lld (a test of faults)", e,
                        c->rank, step);
}

void run_zero_shard(const run_ctx *c, const recipe_train_cfg *train, int64_t n, int64_t *lo, int64_t *hi) {
    if (train->zero_stage >= 1 && c->ep > 1) run_split(n, c->rank / c->ep, c->world / c->ep, lo, hi); /* expert-DP group */
    else if (train->zero_stage >= 1) run_split(n, c->rank, c->world, lo, hi);
    else *lo = 0, *hi = n;
}

base_status run_gather_params(run_ctx *c, const optim *o) {
    if (c->z2 && c->ep > 1) return run_zero_ep_gather(c); /* ZeRO 2 / 3 with EP: the shard by class */
    if (o->zero_shards <= 1 || c->world <= 1 || o->param_sharded) return BASE_OK; /* ZeRO 3: no whole copy */
    /* the ranks holding the same arena: the world, or with EP > 1 the
     * expert-data-parallel group (o->zero_rank = rank / EP among them) */
    int W = o->zero_shards;
    dist_comm *comm = c->ep > 1 ? c->edp_dev : c->dev;
    size_t *counts = base_xcalloc((size_t)W, sizeof *counts);
    for (int r = 0; r < W; r++) {
        int64_t lo, hi;
        run_split(o->n, r, W, &lo, &hi);
        counts[r] = (size_t)(hi - lo);
    }
    /* the send buffer may not alias the receive buffer: this rank's shard
     * goes through a copy (4 bytes x shard, freed at once) */
    size_t bytes = counts[o->zero_rank] * sizeof(float);
    float *mine = c->ops->alloc(bytes ? bytes : sizeof(float));
    c->ops->copy(mine, o->param + o->state_lo, bytes);
    base_status s = dist_allgatherv(comm, mine, o->param, counts, DIST_F32);
    c->ops->free(mine);
    free(counts);
    return s ? base_err_wrap(s, "gathering the updated parameter shards of %d ranks (ZeRO %d)", W, o->zero_stage)
             : BASE_OK;
}
