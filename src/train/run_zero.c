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
 *
 * ZeRO stage 3 adds the master parameters: each rank keeps its shard of the
 * f32 arena (the optimizer's parameters, updated in place), the policy's
 * arena is released (model_arena_release), and every pass binds a unit's
 * weights just before it uses them (the model's unit hook, run_zero_param_use):
 * the unit is all-gathered from every rank's overlap with it into one of
 * two parameter windows (unit u in window u mod 2, so a pass's adjacent
 * units alternate; a tied embedding in a window of its own) and bound
 * there; a window that still holds the unit since the last optimizer step
 * is reused (the forward's last unit is the backward's first). The
 * rollout's prefill and decode gather the same way, every unit at every
 * decode step (no resident copy). bf16 mode converts each gathered window
 * into its compute copy (model_unit_bind).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "run_internal.h"
#include "run_zero_internal.h"


/* Expert parallelism (EP > 1, below): the hooks' variants. */

static base_status finish(run_zero2 *z, int k) {
    if (z->ex) run_zero_ep_finish(z, k);
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
    if (z->ex) {
        run_zero_ep_reduce(z, k, u);
        return;
    }
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


/* The units and every rank's run_split shard of the policy's arena. */
static run_zero2 *zero_alloc(run_ctx *c) {
    model *m = c->policy;
    run_zero2 *z = base_xcalloc(1, sizeof *z);
    z->c = c;
    z->U = model_grad_units(m);
    z->ulo = base_xmalloc(2 * (size_t)z->U * sizeof(int64_t)), z->uhi = z->ulo + z->U;
    model_grad_unit_ranges(m, z->ulo, z->uhi);
    int W = c->world;
    z->slo = base_xmalloc(2 * (size_t)W * sizeof(int64_t)), z->shi = z->slo + W;
    for (int r = 0; r < W; r++) run_split(model_numel(m), r, W, &z->slo[r], &z->shi[r]);
    z->cur = 1;
    z->stage = 2;
    return z;
}

/* ZeRO 3's side: this rank's parameter shard (unfilled) and windows. */
static void params_alloc(run_zero2 *z) {
    run_ctx *c = z->c;
    const struct ops *ops = c->ops;
    int64_t emb, n = z->shi[c->rank] - z->slo[c->rank];
    model_grad_windows(c->policy, &z->win_n, &emb, NULL);
    z->stage = 3;
    z->pshard = ops->alloc(n ? (size_t)n * sizeof(float) : sizeof(float));
    z->emb_n = emb;
    int bf16 = model_get_precision(c->policy) == MODEL_BF16 && ops->device != TENSOR_CPU;
    for (int k = 0; k < 3; k++) {
        int64_t wn = k < 2 ? z->win_n : emb;
        if (wn == 0) continue;
        z->pwin[k] = ops->alloc((size_t)wn * sizeof(float));
        if (bf16) z->pwin_c[k] = ops->alloc((size_t)wn * sizeof(uint16_t));
    }
    z->pcounts = base_xmalloc((size_t)c->world * sizeof(size_t));
    run_zero_params_stale(z);
}

base_status run_zero2_new(run_ctx *c, optim *o, run_zero2 **out) {
    *out = NULL;
    model *m = c->policy;
    /* a policy the run holds released (a sharded load, or a stage-3 stage
     * before this one) comes with its shard and windows: a stage-3 stage
     * takes them over, no gather */
    int taken = o->zero_stage == 3 && c->z3;
    run_zero2 *z = taken ? c->z3 : zero_alloc(c);
    c->z3 = NULL;
    int W = c->world;
    if (!z->counts) z->counts = base_xmalloc((size_t)W * sizeof(size_t));
    int64_t emb;
    model_grad_windows(m, &z->win_n, &emb, NULL);
    const struct ops *ops = c->ops;
    for (int k = 0; k < 2; k++) z->win[k] = ops->alloc((size_t)z->win_n * sizeof(float));
    if (emb) z->emb = ops->alloc((size_t)emb * sizeof(float));
    size_t gb = (size_t)o->state_n * sizeof(float);
    z->grad = ops->alloc(gb ? gb : sizeof(float));
    z->cur = 1;
    optim_set_grad_shard(o, z->grad);
    z->o = o;
    /* the parameter shard and windows (the shard is filled by run_zero3_begin) */
    if (o->zero_stage == 3 && !taken) params_alloc(z);
    *out = z;
    return BASE_OK;
}

base_status run_zero3_open(run_ctx *c, float **shard, int64_t *lo, int64_t *hi) {
    if (!model_arena_released(c->policy) || c->z3 || c->z2)
        return base_err_set(BASE_ERR_INVALID, "ZeRO 3: a sharded load needs a policy made without its arena");
    run_zero2 *z;
    if (c->ep > 1) { /* the shard by class (run_zero_ep_optim_new's), taken over by the stage-3 stage */
        base_status s = run_zero_ep_alloc(c, 3, &z);
        if (s) {
            run_zero_release_state(z, 0);
            return base_err_wrap(s, "ZeRO 3 with expert parallelism: the sharded load");
        }
        run_zero_ep_windows(z);
        run_zero_params_stale(z);
    } else {
        z = zero_alloc(c);
        params_alloc(z);
    }
    model_unit_hook_set(c->policy, run_zero_param_use, z);
    c->z3 = z;
    *shard = z->pshard;
    *lo = z->ex ? 0 : z->slo[c->rank], *hi = z->ex ? run_zero_ep_compact_n(z) : z->shi[c->rank];
    return BASE_OK;
}

/* restore: a released policy gets its arena back (unfilled: a failed
 * stage, whose run ends); 0 when the policy goes too (run_zero3_drop). */
void run_zero_release_state(run_zero2 *z, int restore) {
    if (!z) return;
    finish_all(z);
    const struct ops *ops = z->c->ops;
    if (z->stage == 3) {
        if (restore && model_arena_released(z->c->policy)) model_arena_restore(z->c->policy);
        ops->free(z->pshard);
        for (int k = 0; k < 3; k++) {
            if (z->pwin[k]) ops->free(z->pwin[k]);
            if (z->pwin_c[k]) ops->free(z->pwin_c[k]);
        }
        free(z->pcounts);
    }
    if (z->ex) run_zero_ep_free(z);
    if (z->win[0]) ops->free(z->win[0]), ops->free(z->win[1]);
    if (z->emb) ops->free(z->emb);
    if (z->grad) ops->free(z->grad);
    free(z->ulo), free(z->slo), free(z->counts), free(z);
}

void run_zero2_free(run_zero2 *z) {
    /* a stage that failed before run_zero3_end: the hook goes with z (the
     * run ends; its last checkpoint holds the weights) */
    run_zero_release_state(z, 1);
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

/* The released policy's state: the training stage's, or the one a stage-3
 * stage left (c->z3, run_zero3_end). */
static run_zero2 *z3_of(run_ctx *c) { return c->z2 ? c->z2 : c->z3; }

/* ZeRO 3: the unit sequence of one forward (model_forward, prefill,
 * decode): the embedding, the layers, the head (the embedding again when
 * the head is tied). */
static void forward_uses(run_zero2 *z) {
    if (z->stage != 3) return;
    for (int u = 0; u < z->U; u++) run_zero_param_use(z, u);
    if (z->emb_n) run_zero_param_use(z, 0);
}

base_status run_zero2_pad(run_ctx *c, int64_t passes) {
    run_zero2 *z = c->z2;
    if (!z) return BASE_OK;
    int U = z->U, tied = z->emb != NULL, s3 = z->stage == 3;
    for (int64_t p = 0; p < passes; p++) {
        /* a forward's gathers (ZeRO 3), then model_backward_units' sequence of
         * gathers and reduce-scatters with zero windows, call for call */
        forward_uses(z);
        if (tied) {
            if (s3) run_zero_param_use(z, 0);
            hook_begin(z, 0);
        }
        for (int u = U - 1; u >= 1; u--) {
            if (s3) run_zero_param_use(z, u);
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

base_status run_pad_passes(run_ctx *c, model_train *tr, model_train *ref, float *grads, int64_t passes) {
    if (c->ep <= 1) return run_zero2_pad(c, passes);
    /* expert parallelism: zero-row passes, whose units, windows and MoE
     * exchanges come in a real pass's order (with ZeRO 2 / 3 the model
     * calls the hooks run_zero2_pad makes by hand) */
    run_zero2 *z = c->z2;
    model_grad_hooks h = {hook_begin, hook_end, z};
    for (int64_t p = 0; p < passes; p++) {
        base_status s = model_train_join_forward(tr);
        if (!s && ref) s = model_train_join_forward(ref); /* the reference's log-probs */
        if (s) return run_ep_pass_failed(c, s, "a zero-row training pass");
        model_train_join_backward(tr, z ? NULL : grads, z ? &h : NULL);
        if (z && (s = finish_all(z))) return s;
    }
    return BASE_OK;
}

/* The agreement that starts every pass of a phase: `more` 1 from a rank
 * making a pass, 0 from one that has finished (run_zero3_sync); the
 * maximum over the ranks says whether a pass follows. */
static int agree_pass(run_zero2 *z, int more) {
    int32_t v = more;
    base_status s = z->c->world > 1 ? dist_allreduce(z->c->host, &v, 1, DIST_I32, DIST_MAX) : BASE_OK;
    if (s) {
        if (!z->phase_err) z->phase_err = base_err_wrap(s, "agreeing on a forward pass of %d ranks (ZeRO 3)", z->c->world);
        return 0;
    }
    return v != 0;
}

int run_zero3_phase(run_ctx *c) {
    run_zero2 *z = z3_of(c);
    if (!z || z->stage != 3 || !model_arena_released(c->policy)) return 0;
    z->phase = 1, z->phase_uses = 0, z->phase_err = BASE_OK;
    return 1;
}

base_status run_zero3_sync(run_ctx *c) {
    run_zero2 *z = z3_of(c);
    if (!z || !z->phase) return BASE_OK;
    int per = z->U + (z->emb_n ? 1 : 0);
    base_status s = BASE_OK;
    if (z->phase_uses % per)
        s = base_err_set(BASE_ERR_INVALID, "ZeRO 3: rank %d ended a phase inside a pass (%lld unit uses)", c->rank,
                         (long long)z->phase_uses);
    /* this rank is done: it makes the gathers of every pass another rank still
     * makes (each announced by that rank's agreement), until none does */
    z->padding = 1;
    while (!s && agree_pass(z, 0)) forward_uses(z);
    z->padding = 0, z->phase = 0;
    if (!s) s = z->phase_err;
    return s;
}

base_status run_optim_step(run_ctx *c, optim *o, int64_t k, optim_step_info *info) {
    if (c->z2 && c->z2->ex) return run_zero_ep_optim_step(c, o, k, info);
    if (c->ep > 1) return run_ep_optim_step(c, o, k, info);
    if (!o->grad_sharded) {
        optim_step(o, k, info);
        return BASE_OK;
    }
    /* the global norm: every shard's sum of squares, added in rank order */
    double sumsq = optim_grad_sumsq(o);
    base_status s = dist_allreduce(c->host, &sumsq, 1, DIST_F64, DIST_SUM);
    if (s) return base_err_wrap(s, "summing the gradient norm's shards over %d ranks (ZeRO 2)", c->world);
    optim_step_sumsq(o, k, sumsq, info);
    if (c->z2 && c->z2->stage == 3) run_zero_params_stale(c->z2); /* the windows hold the old weights */
    return BASE_OK;
}

/* ---- ZeRO 3 ------------------------------------------------------------------ */

/* The weights of unit u into a parameter window (the model's unit hook):
 * every rank's overlap of the unit with its shard, all-gathered in rank
 * (= arena) order. A failed gather ends the job (the pass cannot go on
 * without the weights; the message names the collective). */
void run_zero_param_use(void *ctx, int u) {
    run_zero2 *z = ctx;
    run_ctx *c = z->c;
    int k = u == 0 && z->emb_n ? 2 : u % 2, W = c->world, me = c->rank;
    if (z->phase && !z->padding && z->phase_uses++ % (z->U + (z->emb_n ? 1 : 0)) == 0)
        agree_pass(z, 1); /* a pass starts: the ranks that have finished make its gathers too */
    if (z->bound[k] == u) return;
    if (z->ex) {
        run_zero_ep_gather_unit(z, k, u);
        return;
    }
    int64_t lo = z->ulo[u], hi = z->uhi[u];
    for (int r = 0; r < W; r++) {
        int64_t a = lo > z->slo[r] ? lo : z->slo[r], b = hi < z->shi[r] ? hi : z->shi[r];
        z->pcounts[r] = b > a ? (size_t)(b - a) : 0;
    }
    int64_t a = lo > z->slo[me] ? lo : z->slo[me];
    const float *send = z->pshard + (z->pcounts[me] ? a - z->slo[me] : 0);
    base_status s = dist_allgatherv(c->dev, send, z->pwin[k], z->pcounts, DIST_F32);
    if (s) {
        base_err_wrap(s, "gathering the weights of unit %d over %d ranks (ZeRO 3)", u, W);
        base_error("%s", base_err_msg());
        dist_abort(1);
    }
    z->bound[k] = u;
    model_unit_bind(c->policy, u, z->pwin[k], z->pwin_c[k]);
}

void run_zero_params_stale(run_zero2 *z) { z->bound[0] = z->bound[1] = z->bound[2] = -1; }

base_status run_zero3_begin(run_ctx *c) {
    run_zero2 *z = c->z2;
    if (!z || z->stage != 3) return BASE_OK;
    model *m = c->policy;
    if (model_arena_released(m)) { /* taken over from the run (run_zero2_new, run_zero_ep_optim_new): filled */
        if (!z->ex) optim_set_param_shard(z->o, z->pshard); /* with EP the optimizer's parameters are the shard */
        run_zero_params_stale(z);
        return BASE_OK;
    }
    if (z->ex) { /* the optimizer's parameters are the shard already */
        run_zero_ep_shard_from(z, model_params(m));
    } else {
        size_t n = (size_t)(z->shi[c->rank] - z->slo[c->rank]);
        c->ops->copy(z->pshard, model_params(m) + z->slo[c->rank], n * sizeof(float));
        optim_set_param_shard(z->o, z->pshard);
    }
    run_zero_params_stale(z);
    base_status s = model_arena_release(m, run_zero_param_use, z);
    return s ? base_err_wrap(s, "ZeRO 3") : BASE_OK;
}

/* Every rank's shard gathered into the whole arena at dst (device). */
static base_status gather_all(run_zero2 *z, float *dst, dist_comm *comm, const float *src) {
    int W = z->c->world;
    if (z->ex) return run_zero_ep_gather_arena(z, dst);
    for (int r = 0; r < W; r++) z->pcounts[r] = (size_t)(z->shi[r] - z->slo[r]);
    return dist_allgatherv(comm, src, dst, z->pcounts, DIST_F32);
}

base_status run_zero3_end(run_ctx *c) {
    run_zero2 *z = c->z2;
    if (!z || z->stage != 3 || !model_arena_released(c->policy)) return BASE_OK;
    base_status s = finish_all(z);
    if (s) return s;
    /* the policy stays released: its shard, windows and hook go to the run
     * (c->z3); the gradient side goes with the stage */
    const struct ops *ops = c->ops;
    ops->free(z->win[0]), ops->free(z->win[1]);
    if (z->emb) ops->free(z->emb);
    ops->free(z->grad);
    z->win[0] = z->win[1] = z->emb = z->grad = NULL;
    z->o = NULL;
    c->z3 = z, c->z2 = NULL;
    return BASE_OK;
}

base_status run_zero3_gather(run_ctx *c, const char *why) {
    run_zero2 *z = c->z3;
    if (!z) return BASE_OK;
    model *m = c->policy;
    if (!c->opts.quiet)
        base_info("the policy gathered whole from %d ranks' ZeRO 3 shards (%lld parameters): %s", c->world,
                  (long long)model_numel(m), why);
    model_arena_restore(m);
    base_status s = gather_all(z, model_params(m), c->dev, z->pshard);
    if (s) return base_err_wrap(s, "gathering the trained weights over %d ranks (ZeRO 3)", c->world);
    model_sync_compute(m);
    run_zero_release_state(z, 0);
    c->z3 = NULL;
    return BASE_OK;
}

base_status run_zero3_copy_to(run_ctx *c, model *dst) {
    run_zero2 *z = z3_of(c);
    model *m = c->policy;
    if (!z || z->stage != 3 || !model_arena_released(m))
        return base_err_set(BASE_ERR_INVALID, "ZeRO 3: no sharded policy to copy");
    int64_t most = 1;
    for (int u = 0; u < z->U; u++)
        if (z->uhi[u] - z->ulo[u] > most) most = z->uhi[u] - z->ulo[u];
    float *host = base_xmalloc((size_t)most * sizeof(float));
    int n = model_nparams(dst), set = 0;
    for (int u = 0; u < z->U; u++) { /* unit u gathered into its window (as a pass would), then dst's parameters in it */
        run_zero_param_use(z, u);
        int k = u == 0 && z->emb_n ? 2 : u % 2;
        c->ops->download(host, z->pwin[k], (size_t)(z->uhi[u] - z->ulo[u]) * sizeof(float));
        for (int i = 0; i < model_nparams(m); i++) {
            const model_param *p = model_param_at(m, i);
            if (p->offset < z->ulo[u] || p->offset + p->numel > z->uhi[u]) continue;
            const model_param *q = model_param_find(dst, p->name);
            if (!q) continue; /* the MTP layers a frozen model leaves out */
            if (q->numel != p->numel) {
                free(host);
                return base_err_set(BASE_ERR_INVALID, "ZeRO 3: %s has %lld values in the policy, %lld in the copy",
                                    p->name, (long long)p->numel, (long long)q->numel);
            }
            model_param_from_host(dst, (int)(q - model_param_at(dst, 0)), host + (p->offset - z->ulo[u]));
            set++;
        }
    }
    free(host);
    if (set != n)
        return base_err_set(BASE_ERR_INVALID, "ZeRO 3: %d of the copy's %d parameters lie in the policy's units", set, n);
    model_sync_compute(dst);
    return BASE_OK;
}

void run_zero3_drop(run_ctx *c) {
    run_zero_release_state(c->z3, 0);
    c->z3 = NULL;
}

base_status run_zero3_write_weights(run_ctx *c, const char *dir, uint64_t shard_bytes) {
    run_zero2 *z = c->z2;
    if (!z || z->stage != 3 || !model_arena_released(c->policy)) return BASE_OK;
    model *m = c->policy;
    run_ckpt_range r = {.params = model_param_at(m, 0), .nparams = model_nparams(m), .lo = z->slo[c->rank],
                        .hi = z->shi[c->rank], .shard = z->pshard, .ops = c->ops, .shard_bytes = shard_bytes};
    base_status s = run_ckpt_write_range(c, &r, dir, "model", NULL);
    return s ? base_err_wrap(s, "writing the weights' ranges of %d ranks (ZeRO 3)", c->world) : BASE_OK;
}

base_status run_zero3_param_update(run_ctx *c, const model_param *p, void (*fn)(float *, int64_t, void *),
                                   void *ctx) {
    run_zero2 *z = z3_of(c);
    if (z->ex) return run_zero_ep_param_update(z, p, fn, ctx);
    int W = c->world, me = c->rank;
    int64_t lo = p->offset, hi = p->offset + p->numel;
    for (int r = 0; r < W; r++) { /* every rank's part of the tensor, gathered whole on every rank */
        int64_t a = lo > z->slo[r] ? lo : z->slo[r], b = hi < z->shi[r] ? hi : z->shi[r];
        z->pcounts[r] = b > a ? (size_t)(b - a) : 0;
    }
    int64_t a = lo > z->slo[me] ? lo : z->slo[me];
    size_t bytes = (size_t)p->numel * sizeof(float);
    float *whole = c->ops->alloc(bytes ? bytes : sizeof(float)), *host = base_xmalloc(bytes ? bytes : sizeof(float));
    base_status s = dist_allgatherv(c->dev, z->pshard + (z->pcounts[me] ? a - z->slo[me] : 0), whole, z->pcounts,
                                    DIST_F32);
    if (!s) {
        c->ops->download(host, whole, bytes);
        fn(host, p->numel, ctx); /* the same on every rank */
        if (z->pcounts[me]) /* this rank's part back into its shard */
            c->ops->upload(z->pshard + (a - z->slo[me]), host + (a - lo), z->pcounts[me] * sizeof(float));
        run_zero_params_stale(z);
    }
    c->ops->free(whole);
    free(host);
    return s ? base_err_wrap(s, "updating %s over %d ranks (ZeRO 3)", p->name, W) : BASE_OK;
}
