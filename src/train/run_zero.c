/*
 * ZeRO stage 2 (docs/distributed.md): gradients reduce-scattered into the
 * rank's shard, the same run_split range of the arena as the AdamW state.
 * No full-size gradient arena: the backward writes each unit's gradients
 * (model_backward_units: the embedding, each decoder layer, the final norm
 * with the LM head) into a unit-sized window; when a unit is done its
 * window is reduce-scattered, non-blocking (dist_ireduce_scatterv), every
 * rank's overlap with each shard summed in rank order and added (+=) into
 * that shard's gradient. Two windows alternate, so unit u's reduction is
 * in flight while unit u - 1's backward runs; a window's reduction is
 * completed before the window is reused, and every one before the pass
 * returns. A tied embedding (its unit written by the LM head first and by
 * the embedding last) has a window of its own, reduced last. Every
 * micro-batch is reduced (DeepSpeed's stage 2 does the same); ranks with
 * fewer micro-batches in an optimizer step take part in the others'
 * reductions with zero windows (run_zero2_pad).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "run_internal.h"

struct run_zero2 {
    run_ctx *c;
    int U;               /* units */
    int64_t *ulo, *uhi;  /* [U] each unit's arena range */
    int64_t *slo, *shi;  /* [W] each rank's shard */
    int64_t win_n;       /* elements of each alternating window */
    float *win[2];       /* device windows, alternating */
    float *emb;          /* a tied embedding's window (NULL: untied) */
    float *grad;         /* device [shi - slo]: this rank's gradient shard (the optimizer's) */
    dist_request *req[3]; /* in flight on win[0], win[1], emb */
    int cur;             /* the window the open unit uses (0, 1; 2: emb) */
    size_t *counts;      /* [W] scratch: a window's overlap with each shard */
    base_status err;     /* the first failed post or wait of the pass */
};

static base_status finish(run_zero2 *z, int k) {
    base_status s = dist_wait(z->req[k]);
    z->req[k] = NULL;
    if (s && !z->err) z->err = base_err_wrap(s, "reducing the gradients over %d ranks (ZeRO 2)", z->c->world);
    return s;
}

static float *hook_begin(void *ctx, int u) {
    run_zero2 *z = ctx;
    int k;
    if (u == 0 && z->emb) k = 2;
    else k = z->cur = 1 - z->cur; /* the other window: its reduction (unit u + 2's) completes first */
    finish(z, k);
    float *w = k == 2 ? z->emb : z->win[k];
    z->c->ops->zero(w, (size_t)(z->uhi[u] - z->ulo[u]) * sizeof(float));
    return w;
}

static void hook_end(void *ctx, int u) {
    run_zero2 *z = ctx;
    int k = u == 0 && z->emb ? 2 : z->cur, W = z->c->world, me = z->c->rank;
    const float *w = k == 2 ? z->emb : z->win[k];
    int64_t lo = z->ulo[u], hi = z->uhi[u];
    for (int r = 0; r < W; r++) { /* the window's overlap with rank r's shard, in rank (= arena) order */
        int64_t a = lo > z->slo[r] ? lo : z->slo[r], b = hi < z->shi[r] ? hi : z->shi[r];
        z->counts[r] = b > a ? (size_t)(b - a) : 0;
    }
    /* the shards partition the arena, so the overlaps in rank order are the
     * whole window, back to back; this rank receives its own overlap's sum */
    int64_t a = lo > z->slo[me] ? lo : z->slo[me];
    float *recv = z->grad + (z->counts[me] ? a - z->slo[me] : 0);
    base_status s = dist_ireduce_scatterv(z->c->dev, w, recv, z->counts, DIST_F32, 1, &z->req[k]);
    if (s && !z->err) z->err = base_err_wrap(s, "reducing the gradients over %d ranks (ZeRO 2)", W);
}

static base_status finish_all(run_zero2 *z) {
    for (int k = 0; k < 3; k++) finish(z, k);
    base_status s = z->err;
    z->err = BASE_OK;
    return s;
}

base_status run_zero2_new(run_ctx *c, optim *o, run_zero2 **out) {
    *out = NULL;
    model *m = c->policy;
    run_zero2 *z = base_xcalloc(1, sizeof *z);
    z->c = c;
    z->U = model_grad_units(m);
    z->ulo = base_xmalloc(2 * (size_t)z->U * sizeof(int64_t)), z->uhi = z->ulo + z->U;
    model_grad_unit_ranges(m, z->ulo, z->uhi);
    int W = c->world;
    z->slo = base_xmalloc(2 * (size_t)W * sizeof(int64_t)), z->shi = z->slo + W;
    for (int r = 0; r < W; r++) run_split(o->n, r, W, &z->slo[r], &z->shi[r]);
    z->counts = base_xmalloc((size_t)W * sizeof(size_t));
    int64_t emb;
    model_grad_windows(m, &z->win_n, &emb, NULL);
    const struct ops *ops = c->ops;
    for (int k = 0; k < 2; k++) z->win[k] = ops->alloc((size_t)z->win_n * sizeof(float));
    if (emb) z->emb = ops->alloc((size_t)emb * sizeof(float));
    size_t gb = (size_t)o->state_n * sizeof(float);
    z->grad = ops->alloc(gb ? gb : sizeof(float));
    z->cur = 1;
    optim_set_grad_shard(o, z->grad);
    *out = z;
    return BASE_OK;
}

void run_zero2_free(run_zero2 *z) {
    if (!z) return;
    finish_all(z);
    const struct ops *ops = z->c->ops;
    ops->free(z->win[0]), ops->free(z->win[1]);
    if (z->emb) ops->free(z->emb);
    ops->free(z->grad);
    free(z->ulo), free(z->slo), free(z->counts), free(z);
}

base_status run_backward(run_ctx *c, model_train *tr, const float *g_logp, const float *g_ent, float *grads) {
    if (!c->z2) {
        model_backward(tr, g_logp, g_ent, grads);
        return BASE_OK;
    }
    model_grad_hooks h = {hook_begin, hook_end, c->z2};
    model_backward_units(tr, g_logp, g_ent, &h);
    return finish_all(c->z2);
}

base_status run_zero2_pad(run_ctx *c, int64_t passes) {
    run_zero2 *z = c->z2;
    if (!z) return BASE_OK;
    int U = z->U, tied = z->emb != NULL;
    for (int64_t p = 0; p < passes; p++) { /* the units in model_backward_units' order, zero windows */
        if (tied) hook_begin(z, 0);
        for (int u = U - 1; u >= 1; u--) {
            hook_begin(z, u);
            hook_end(z, u);
        }
        if (!tied) hook_begin(z, 0);
        hook_end(z, 0);
        base_status s = finish_all(z);
        if (s) return s;
    }
    return BASE_OK;
}

base_status run_optim_step(run_ctx *c, optim *o, int64_t k, optim_step_info *info) {
    if (!o->grad_sharded) {
        optim_step(o, k, info);
        return BASE_OK;
    }
    /* the global norm: every shard's sum of squares, added in rank order */
    double sumsq = optim_grad_sumsq(o);
    base_status s = dist_allreduce(c->host, &sumsq, 1, DIST_F64, DIST_SUM);
    if (s) return base_err_wrap(s, "summing the gradient norm's shards over %d ranks (ZeRO 2)", c->world);
    optim_step_sumsq(o, k, sumsq, info);
    return BASE_OK;
}
