/*
 * ZeRO 2 and 3 with expert parallelism (EP > 1): the shard by class, its
 * reduce-scatters, gathers, optimizer and checkpoint parts (run_zero.c has
 * the stages without EP; docs/distributed.md, "ZeRO 2 and 3 with expert
 * parallelism").
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "run_internal.h"
#include "run_zero_internal.h"

/* ---- expert parallelism (EP > 1) at ZeRO 2 and 3 ----------------------------
 *
 * The shard of a rank is two pieces (docs/distributed.md, "ZeRO 2 and 3 with
 * expert parallelism"). The arena's elements fall in two classes: the routed
 * experts' (class 1: this rank's EP index's experts, the same offsets on every
 * rank) and the rest (class 0: attention, norms, dense and shared experts,
 * router, embeddings, head, gaps). Numbered in arena order within each class,
 * class 0 is cut by run_split over the world and class 1 over the expert-data-
 * parallel group (the W / EP ranks holding the same experts), so every element
 * of the whole model has exactly one owner. The rank's shard is its class-0
 * piece followed by its class-1 piece (the "compact" index); the optimizer is
 * made over the compact shard (its parameters the pieces of the tensors in it),
 * so AdamW, m and v are unchanged. A unit's window meets a few class runs; each
 * is reduce-scattered (gradients) or all-gathered (ZeRO 3 weights) over its
 * class's communicator. */

struct zero_ep {
    int nr;                   /* class runs of the arena, in arena order */
    int64_t *rlo, *rhi, *rc;  /* [nr] a run's arena range, the class index of its first element */
    int *rk;                  /* [nr] its class */
    dist_comm *comm[2];       /* the world's, the expert-data-parallel group's (device twins) */
    int size[2], me[2];       /* their sizes and this rank's index in each */
    int64_t *clo[2], *chi[2]; /* [size[k]] each member's class-k range */
    int64_t base[2];          /* the compact index of this rank's class-k piece */
    int64_t n;                /* compact elements */
    int rmax;                 /* class runs a unit meets, at most */
    dist_request **req;       /* [3 * rmax] reductions in flight per window */
};

int run_ep_is_expert(const char *name) { return strstr(name, ".mlp.experts.") != NULL; }

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static void ep_add_run(struct zero_ep *x, int64_t lo, int64_t hi, int k, int64_t *ncls) {
    if (hi <= lo) return;
    if (x->nr && x->rk[x->nr - 1] == k && x->rhi[x->nr - 1] == lo) {
        x->rhi[x->nr - 1] = hi;
    } else {
        x->rlo[x->nr] = lo, x->rhi[x->nr] = hi, x->rc[x->nr] = ncls[k], x->rk[x->nr] = k;
        x->nr++;
    }
    ncls[k] += hi - lo;
}

static base_status ep_layout(run_zero2 *z, struct zero_ep **out) {
    run_ctx *c = z->c;
    const model *m = c->policy;
    int n = model_nparams(m), cap = 2 * n + 2;
    int64_t total = model_numel(m), at = 0, ncls[2] = {0, 0};
    struct zero_ep *x = base_xcalloc(1, sizeof *x);
    x->rlo = base_xmalloc(3 * (size_t)cap * sizeof(int64_t)), x->rhi = x->rlo + cap, x->rc = x->rhi + cap;
    x->rk = base_xmalloc((size_t)cap * sizeof(int));
    *out = x;
    for (int i = 0; i <= n; i++) { /* the table is in arena order (run_ep_reduce_grads checks it too) */
        const model_param *p = i < n ? model_param_at(m, i) : NULL;
        int64_t lo = p ? p->offset : total;
        if (lo < at)
            return base_err_set(BASE_ERR_INVALID, "ZeRO %d with expert parallelism: parameter %s at %lld before the "
                                "end %lld of the previous one (the arena is not in table order)",
                                z->stage, p->name, (long long)lo, (long long)at);
        ep_add_run(x, at, lo, 0, ncls); /* a gap: the rest's */
        if (p) ep_add_run(x, p->offset, p->offset + p->numel, run_ep_is_expert(p->name), ncls), at = p->offset + p->numel;
    }
    x->comm[0] = c->dev, x->size[0] = c->world, x->me[0] = c->rank;
    x->comm[1] = c->edp_dev, x->size[1] = c->world / c->ep, x->me[1] = c->rank / c->ep;
    for (int k = 0; k < 2; k++) {
        x->clo[k] = base_xmalloc(2 * (size_t)x->size[k] * sizeof(int64_t)), x->chi[k] = x->clo[k] + x->size[k];
        for (int q = 0; q < x->size[k]; q++) run_split(ncls[k], q, x->size[k], &x->clo[k][q], &x->chi[k][q]);
    }
    x->base[0] = 0;
    x->base[1] = x->chi[0][x->me[0]] - x->clo[0][x->me[0]];
    x->n = x->base[1] + x->chi[1][x->me[1]] - x->clo[1][x->me[1]];
    for (int u = 0; u < z->U; u++) {
        int k = 0;
        for (int i = 0; i < x->nr; i++) k += x->rlo[i] < z->uhi[u] && x->rhi[i] > z->ulo[u];
        x->rmax = k > x->rmax ? k : x->rmax;
    }
    x->req = base_xcalloc(3 * (size_t)(x->rmax ? x->rmax : 1), sizeof *x->req);
    return BASE_OK;
}

/* Class-k indices [ca, cb): counts[q] = member q's share (in member order
 * they are the range, back to back); returns the compact index of this
 * rank's share (its start when it has none). */
static int64_t ep_counts(const struct zero_ep *x, int k, int64_t ca, int64_t cb, size_t *counts) {
    for (int q = 0; q < x->size[k]; q++) {
        int64_t a = max64(ca, x->clo[k][q]), b = min64(cb, x->chi[k][q]);
        counts[q] = b > a ? (size_t)(b - a) : 0;
    }
    int me = x->me[k];
    return x->base[k] + (counts[me] ? max64(ca, x->clo[k][me]) - x->clo[k][me] : 0);
}

void run_zero_ep_finish(run_zero2 *z, int k) {
    struct zero_ep *x = z->ex;
    for (int j = 0; j < x->rmax; j++) {
        dist_request **r = &x->req[k * x->rmax + j];
        base_status s = dist_wait(*r);
        *r = NULL;
        if (s && !z->err)
            z->err = base_err_wrap(s, "reducing the gradients over %d ranks (ZeRO %d, experts over the expert-data-"
                                   "parallel group)", z->c->world, z->stage);
    }
}

/* Window k (unit u's gradients) reduce-scattered run by run into the shard. */
void run_zero_ep_reduce(run_zero2 *z, int k, int u) {
    struct zero_ep *x = z->ex;
    const float *w = k == 2 ? z->emb : z->win[k];
    int64_t lo = z->ulo[u], hi = z->uhi[u];
    for (int i = 0, j = 0; i < x->nr; i++) {
        int64_t a = max64(lo, x->rlo[i]), b = min64(hi, x->rhi[i]), ca = x->rc[i] + (a - x->rlo[i]);
        if (b <= a) continue;
        int cls = x->rk[i];
        int64_t at = ep_counts(x, cls, ca, ca + (b - a), z->counts);
        base_status s = dist_ireduce_scatterv(x->comm[cls], w + (a - lo), z->grad + at, z->counts, DIST_F32, 1,
                                              &x->req[k * x->rmax + j++]);
        if (s && !z->err)
            z->err = base_err_wrap(s, "reducing the gradients of unit %d over %d ranks (ZeRO %d, %s)", u, x->size[cls],
                                   z->stage, cls ? "experts: the expert-data-parallel group" : "the world");
    }
}

/* Unit u's weights gathered into parameter window k, run by run. */
void run_zero_ep_gather_unit(run_zero2 *z, int k, int u) {
    struct zero_ep *x = z->ex;
    int64_t lo = z->ulo[u], hi = z->uhi[u];
    for (int i = 0; i < x->nr; i++) {
        int64_t a = max64(lo, x->rlo[i]), b = min64(hi, x->rhi[i]), ca = x->rc[i] + (a - x->rlo[i]);
        if (b <= a) continue;
        int cls = x->rk[i];
        int64_t at = ep_counts(x, cls, ca, ca + (b - a), z->pcounts);
        base_status s = dist_allgatherv(x->comm[cls], z->pshard + at, z->pwin[k] + (a - lo), z->pcounts, DIST_F32);
        if (s) {
            base_err_wrap(s, "gathering the weights of unit %d over %d ranks (ZeRO 3, %s)", u, x->size[cls],
                          cls ? "experts: the expert-data-parallel group" : "the world");
            base_error("%s", base_err_msg());
            dist_abort(1);
        }
    }
    z->bound[k] = u;
    model_unit_bind(z->c->policy, u, z->pwin[k], z->pwin_c[k]);
}

/* The whole arena (this rank's EP index's) at dst from every rank's shard. */
base_status run_zero_ep_gather_arena(run_zero2 *z, float *dst) {
    struct zero_ep *x = z->ex;
    base_status s = BASE_OK;
    for (int i = 0; i < x->nr && !s; i++) {
        int cls = x->rk[i];
        int64_t at = ep_counts(x, cls, x->rc[i], x->rc[i] + (x->rhi[i] - x->rlo[i]), z->pcounts);
        s = dist_allgatherv(x->comm[cls], z->pshard + at, dst + x->rlo[i], z->pcounts, DIST_F32);
    }
    return s ? base_err_wrap(s, "gathering the weights over %d ranks (ZeRO %d with expert parallelism)", z->c->world,
                             z->stage)
             : BASE_OK;
}

/* The compact range [*a, *b) -> arena: calls fn for each part of this
 * rank's shard lying in arena range [lo, hi): arena [a, b) at compact at. */
static void ep_parts(const struct zero_ep *x, int64_t lo, int64_t hi,
                     void (*fn)(void *ctx, int64_t a, int64_t b, int64_t at), void *ctx) {
    for (int i = 0; i < x->nr; i++) {
        int k = x->rk[i], me = x->me[k];
        /* the run's class indices inside this rank's class-k range, as arena elements */
        int64_t ca = max64(x->rc[i], x->clo[k][me]), cb = min64(x->rc[i] + (x->rhi[i] - x->rlo[i]), x->chi[k][me]);
        if (cb <= ca) continue;
        int64_t a = x->rlo[i] + (ca - x->rc[i]), b = x->rlo[i] + (cb - x->rc[i]);
        int64_t pa = max64(a, lo), pb = min64(b, hi);
        if (pb > pa) fn(ctx, pa, pb, x->base[k] + (ca - x->clo[k][me]) + (pa - a));
    }
}

typedef struct {
    run_zero2 *z;
    const float *arena;
} from_ctx;

static void copy_from(void *ctx, int64_t a, int64_t b, int64_t at) {
    const from_ctx *f = ctx;
    f->z->c->ops->copy(f->z->pshard + at, f->arena + a, (size_t)(b - a) * sizeof(float));
}

void run_zero_ep_shard_from(run_zero2 *z, const float *arena) {
    from_ctx f = {z, arena};
    ep_parts(z->ex, 0, model_numel(z->c->policy), copy_from, &f);
}

void run_zero_ep_free(run_zero2 *z) {
    struct zero_ep *x = z->ex;
    if (z->stage == 2 && z->pshard) z->c->ops->free(z->pshard);
    if (z->stage == 2) free(z->pcounts);
    free(x->rlo), free(x->rk), free(x->clo[0]), free(x->clo[1]), free(x->req), free(x);
    z->ex = NULL;
}

base_status run_zero_ep_optim_step(run_ctx *c, optim *o, int64_t k, optim_step_info *info) {
    run_zero2 *z = c->z2;
    /* ZeRO 2: the arena's values (a parameter update such as the router bias's may have changed them) */
    if (z->stage == 2) run_zero_ep_shard_from(z, model_params(c->policy));
    /* every element of the model has one owner: the shards' sums of squares, added in rank order */
    double sumsq = optim_grad_sumsq(o);
    base_status s = dist_allreduce(c->host, &sumsq, 1, DIST_F64, DIST_SUM);
    if (s) return base_err_wrap(s, "summing the gradient norm's shards over %d ranks (ZeRO %d)", c->world, z->stage);
    optim_step_sumsq(o, k, sumsq, info);
    if (z->stage == 3) run_zero_params_stale(z);
    return BASE_OK;
}

base_status run_zero_ep_gather(run_ctx *c) {
    run_zero2 *z = c->z2;
    if (!z || !z->ex || z->stage != 2) return BASE_OK;
    return run_zero_ep_gather_arena(z, model_params(c->policy));
}

/* The optimizer's parameters: each trained tensor's part in the shard. */
typedef struct {
    optim_param_spec *specs;
    int k;
    const model_param *p;
} spec_ctx;

static void add_spec(void *ctx, int64_t a, int64_t b, int64_t at) {
    spec_ctx *s = ctx;
    s->specs[s->k++] = (optim_param_spec){s->p->name, b - a, at};
}

/* The units, the class layout, the scratch and the master shard (unfilled). */
base_status run_zero_ep_alloc(run_ctx *c, int stage, run_zero2 **out) {
    model *m = c->policy;
    run_zero2 *z = base_xcalloc(1, sizeof *z);
    z->c = c, z->stage = stage, z->cur = 1;
    z->U = model_grad_units(m);
    z->ulo = base_xmalloc(2 * (size_t)z->U * sizeof(int64_t)), z->uhi = z->ulo + z->U;
    model_grad_unit_ranges(m, z->ulo, z->uhi);
    int W = c->world;
    z->slo = base_xcalloc(2 * (size_t)W, sizeof(int64_t)), z->shi = z->slo + W; /* unused with EP */
    z->counts = base_xmalloc((size_t)W * sizeof(size_t));
    z->pcounts = base_xmalloc((size_t)W * sizeof(size_t));
    *out = z;
    base_status s = ep_layout(z, &z->ex);
    z->pshard = c->ops->alloc((size_t)(z->ex->n ? z->ex->n : 1) * sizeof(float));
    return s;
}

/* ZeRO 3: the parameter windows (the embedding's when tied). */
void run_zero_ep_windows(run_zero2 *z) {
    const struct ops *ops = z->c->ops;
    int64_t emb;
    model_grad_windows(z->c->policy, &z->win_n, &emb, NULL);
    z->emb_n = emb;
    int bf16 = model_get_precision(z->c->policy) == MODEL_BF16 && ops->device != TENSOR_CPU;
    for (int k = 0; k < 3; k++) {
        int64_t wn = k < 2 ? z->win_n : emb;
        if (wn == 0) continue;
        z->pwin[k] = ops->alloc((size_t)wn * sizeof(float));
        if (bf16) z->pwin_c[k] = ops->alloc((size_t)wn * sizeof(uint16_t));
    }
}

base_status run_zero_ep_optim_new(run_ctx *c, const optim_config *oc, int stage, optim *o) {
    model *m = c->policy;
    const struct ops *ops = c->ops;
    /* a stage-3 stage after another keeps the policy released: it takes the
     * run's shard, windows and hook over (filled: no copy, no gather) */
    int taken = stage == 3 && c->z3 && c->z3->ex && model_arena_released(m);
    run_zero2 *z = taken ? c->z3 : NULL;
    base_status s = BASE_OK;
    if (taken) c->z3 = NULL, z->cur = 1, z->err = BASE_OK;
    else s = run_zero_ep_alloc(c, stage, &z);
    size_t gb = (size_t)(z->ex->n ? z->ex->n : 1) * sizeof(float);
    z->grad = ops->alloc(gb);
    int n = model_nparams(m);
    spec_ctx sc = {base_xcalloc((size_t)n, sizeof(optim_param_spec)), 0, NULL};
    for (int i = 0; i < n && !s; i++) {
        sc.p = model_param_at(m, i);
        if (sc.p->trainable && !sc.p->mtp) ep_parts(z->ex, sc.p->offset, sc.p->offset + sc.p->numel, add_spec, &sc);
    }
    if (!s) {
        if (!taken) run_zero_ep_shard_from(z, model_params(m));
        s = optim_init_arena(o, ops, oc, sc.specs, sc.k, NULL, z->pshard, z->grad, z->ex->n);
    }
    free(sc.specs);
    if (s) {
        run_zero_release_state(z, 0);
        return base_err_wrap(s, "ZeRO %d with expert parallelism: the optimizer over this rank's shard", stage);
    }
    o->zero_stage = stage; /* zero_shards stays 0: the state is not a run_split range (checkpoints: ckpt.c) */
    int64_t emb;
    model_grad_windows(m, &z->win_n, &emb, NULL);
    for (int k = 0; k < 2; k++) z->win[k] = ops->alloc((size_t)z->win_n * sizeof(float));
    if (emb) z->emb = ops->alloc((size_t)emb * sizeof(float));
    z->o = o;
    if (stage == 3 && !taken) run_zero_ep_windows(z);
    if (stage == 3) run_zero_params_stale(z); /* taken over: the weights the last stage left, rebound on use */
    c->z2 = z;
    return BASE_OK;
}

/* The class run holding arena element e (every element is in one). */
static int ep_run_of(const struct zero_ep *x, int64_t e) {
    int i = 0;
    while (i + 1 < x->nr && x->rhi[i] <= e) i++;
    return i;
}

/* run_zero3_param_update with EP: the tensor (one class) gathered over its
 * class's communicator, updated on every rank, this rank's part put back. */
base_status run_zero_ep_param_update(run_zero2 *z, const model_param *p, void (*fn)(float *, int64_t, void *),
                                   void *ctx) {
    struct zero_ep *x = z->ex;
    run_ctx *c = z->c;
    int i = ep_run_of(x, p->offset), cls = x->rk[i];
    int64_t ca = x->rc[i] + (p->offset - x->rlo[i]), at = ep_counts(x, cls, ca, ca + p->numel, z->pcounts);
    size_t bytes = (size_t)p->numel * sizeof(float), mine = z->pcounts[x->me[cls]];
    float *whole = c->ops->alloc(bytes ? bytes : sizeof(float)), *host = base_xmalloc(bytes ? bytes : sizeof(float));
    base_status s = dist_allgatherv(x->comm[cls], z->pshard + at, whole, z->pcounts, DIST_F32);
    if (!s) {
        c->ops->download(host, whole, bytes);
        fn(host, p->numel, ctx); /* the same on every rank */
        if (mine) {
            int64_t from = max64(ca, x->clo[cls][x->me[cls]]) - ca; /* this rank's part within the tensor */
            c->ops->upload(z->pshard + at, host + from, mine * sizeof(float));
        }
        run_zero_params_stale(z);
    }
    c->ops->free(whole);
    free(host);
    return s ? base_err_wrap(s, "updating %s over %d ranks (ZeRO 3 with expert parallelism)", p->name, x->size[cls])
             : BASE_OK;
}

typedef struct {
    int64_t a, b, at;
    int n;
} owned_ctx;

static void note_owned(void *ctx, int64_t a, int64_t b, int64_t at) {
    owned_ctx *o = ctx;
    if (!o->n++) o->a = a, o->b = b, o->at = at;
}

int run_zero_ep_owned(const run_ctx *c, int64_t lo, int64_t hi, int64_t *a, int64_t *b, int64_t *at) {
    const run_zero2 *z = c->z2 ? c->z2 : c->z3;
    owned_ctx o = {0, 0, 0, 0};
    if (z && z->ex) ep_parts(z->ex, lo, hi, note_owned, &o);
    if (o.n > 1) base_die("run_zero_ep_owned: [%lld, %lld) meets %d parts of the shard (one tensor, one class)",
                          (long long)lo, (long long)hi, o.n);
    *a = o.a, *b = o.b, *at = o.at;
    return o.n;
}

const float *run_zero_ep_params(const run_ctx *c) {
    const run_zero2 *z = c->z2 ? c->z2 : c->z3;
    return z && z->ex ? z->pshard : NULL;
}

int64_t run_zero_ep_compact_n(const run_zero2 *z) { return z->ex->n; }

typedef struct {
    int64_t *t;
    int n;
} parts_ctx;

static void add_part(void *ctx, int64_t a, int64_t b, int64_t at) {
    parts_ctx *p = ctx;
    p->t[3 * p->n] = a, p->t[3 * p->n + 1] = b, p->t[3 * p->n + 2] = at;
    p->n++;
}

int run_zero_ep_parts(const run_ctx *c, int64_t **parts) {
    const run_zero2 *z = c->z2 ? c->z2 : c->z3;
    *parts = NULL;
    if (!z || !z->ex) return 0;
    parts_ctx p = {base_xmalloc(3 * (size_t)(z->ex->nr ? z->ex->nr : 1) * sizeof(int64_t)), 0};
    ep_parts(z->ex, 0, model_numel(c->policy), add_part, &p);
    *parts = p.t;
    return p.n;
}
