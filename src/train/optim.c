/*
 * optim: the AdamW driver. Plans the flat role buffers, computes the
 * global gradient norm and torch's clipping coefficient, decides to skip on
 * a non-finite norm, picks the scheduled learning rate and calls the
 * `adamw` op on the decayed and non-decayed ranges. No allocation after
 * optim_init.
 */
#include "optim.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN_FLOATS 16 /* 64 bytes: every parameter view starts on a cache line */

void optim_config_default(optim_config *c) {
    memset(c, 0, sizeof *c);
    c->learning_rate = 1e-6;
    c->adam_beta1 = 0.9;
    c->adam_beta2 = 0.999;
    c->adam_epsilon = 1e-8;
    c->weight_decay = 0.0;
    c->max_grad_norm = 1.0;
    c->lr_scheduler_type = OPTIM_SCHED_LINEAR;
    c->warmup_steps = 0;
    c->warmup_ratio = 0.0;
    c->max_steps = 1;
}

base_status optim_config_check(const optim_config *c) {
#define BAD(...) return base_err_set(BASE_ERR_INVALID, "optimizer config: " __VA_ARGS__)
    if (!isfinite(c->learning_rate) || c->learning_rate < 0)
        BAD("learning_rate = %g (expected >= 0)", c->learning_rate);
    if (!(c->adam_beta1 >= 0 && c->adam_beta1 < 1)) BAD("adam_beta1 = %g (expected [0, 1))", c->adam_beta1);
    if (!(c->adam_beta2 >= 0 && c->adam_beta2 < 1)) BAD("adam_beta2 = %g (expected [0, 1))", c->adam_beta2);
    if (!(c->adam_epsilon >= 0) || !isfinite(c->adam_epsilon))
        BAD("adam_epsilon = %g (expected >= 0)", c->adam_epsilon);
    if (!(c->weight_decay >= 0) || !isfinite(c->weight_decay))
        BAD("weight_decay = %g (expected >= 0)", c->weight_decay);
    if (isnan(c->max_grad_norm)) BAD("max_grad_norm is NaN");
    if ((unsigned)c->lr_scheduler_type > OPTIM_SCHED_COSINE)
        BAD("lr_scheduler_type %d is unknown", (int)c->lr_scheduler_type);
    if (c->warmup_steps < 0) BAD("warmup_steps = %lld (expected >= 0)", (long long)c->warmup_steps);
    if (!(c->warmup_ratio >= 0 && c->warmup_ratio <= 1))
        BAD("warmup_ratio = %g (expected [0, 1])", c->warmup_ratio);
    if (c->max_steps < 1) BAD("max_steps = %lld (expected >= 1)", (long long)c->max_steps);
#undef BAD
    return BASE_OK;
}

static const char *const sched_names[] = {"constant", "constant_with_warmup", "linear", "cosine"};

const char *optim_sched_name(optim_sched s) {
    return (unsigned)s <= OPTIM_SCHED_COSINE ? sched_names[s] : "?";
}

base_status optim_sched_parse(const char *s, optim_sched *out) {
    for (int i = 0; s && i <= OPTIM_SCHED_COSINE; i++)
        if (!strcmp(s, sched_names[i])) {
            *out = (optim_sched)i;
            return BASE_OK;
        }
    return base_err_set(BASE_ERR_INVALID,
                        "lr_scheduler_type '%s' is unknown (expected one of: constant, "
                        "constant_with_warmup, linear, cosine)",
                        s ? s : "(null)");
}

int64_t optim_warmup_steps(const optim_config *c) {
    if (c->warmup_steps > 0) return c->warmup_steps;
    return (int64_t)ceil((double)c->max_steps * c->warmup_ratio);
}

double optim_lr_at(const optim_config *c, int64_t k) {
    const int64_t w = optim_warmup_steps(c), total = c->max_steps;
    /* constant has no warm-up in transformers (get_constant_schedule) */
    if (c->lr_scheduler_type != OPTIM_SCHED_CONSTANT && k < w)
        return c->learning_rate * ((double)k / (double)(w > 1 ? w : 1));
    const double span = (double)(total - w > 1 ? total - w : 1);
    switch (c->lr_scheduler_type) {
    case OPTIM_SCHED_LINEAR: return c->learning_rate * fmax(0.0, (double)(total - k) / span);
    case OPTIM_SCHED_COSINE: {
        double progress = (double)(k - w) / span;
        return c->learning_rate * fmax(0.0, 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * progress)));
    }
    case OPTIM_SCHED_CONSTANT:
    case OPTIM_SCHED_CONSTANT_WITH_WARMUP:
    default: return c->learning_rate;
    }
}

/* True when `pat` occurs in `s` as a dotted component ("a.norm.b"), with
 * an optional prefix ending in '_' when `underscore` ("post_norm"). */
static int has_component(const char *s, const char *pat, int underscore) {
    size_t lp = strlen(pat);
    for (const char *p = strstr(s, pat); p; p = strstr(p + 1, pat)) {
        int end_ok = p[lp] == '\0' || p[lp] == '.';
        int start_ok = underscore ? (p > s && p[-1] == '_') : (p == s || p[-1] == '.');
        if (start_ok && end_ok) return 1;
    }
    return 0;
}

int optim_default_decay(const char *name) {
    char low[512];
    size_t n = strlen(name);
    if (n >= sizeof low) n = sizeof low - 1;
    for (size_t i = 0; i < n; i++) low[i] = (char)tolower((unsigned char)name[i]);
    low[n] = '\0';
    if (strstr(low, "bias") || strstr(low, "layernorm") || strstr(low, "rmsnorm")) return 0;
    if (has_component(low, "norm", 0) || has_component(low, "norm", 1)) return 0;
    return 1;
}

static int64_t align_up(int64_t x) { return (x + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS; }

/* Checks shared by both initialisers; copies names and decay flags. */
static base_status init_common(optim *o, const struct ops *ops, const optim_config *cfg,
                               const optim_param_spec *specs, int n_specs,
                               int (*decay)(const char *name)) {
    memset(o, 0, sizeof *o);
    base_status st = optim_config_check(cfg);
    if (st) return st;
    if (n_specs < 1) return base_err_set(BASE_ERR_INVALID, "optimizer: no parameters");
    if (!ops->adamw || !ops->sumsq)
        return base_err_set(BASE_ERR_UNSUPPORTED, "optimizer: the %s backend has no adamw/sumsq op",
                            ops->name);
    if (!decay) decay = optim_default_decay;
    for (int i = 0; i < n_specs; i++) {
        if (!specs[i].name || !specs[i].name[0])
            return base_err_set(BASE_ERR_INVALID, "optimizer: parameter %d has no name", i);
        if (specs[i].numel < 1)
            return base_err_set(BASE_ERR_INVALID, "optimizer: parameter %s has %lld elements",
                                specs[i].name, (long long)specs[i].numel);
        for (int j = 0; j < i; j++)
            if (!strcmp(specs[i].name, specs[j].name))
                return base_err_set(BASE_ERR_INVALID, "optimizer: parameter %s is listed twice",
                                    specs[i].name);
    }
    o->params = base_xcalloc((size_t)n_specs, sizeof *o->params);
    o->n_params = n_specs;
    for (int i = 0; i < n_specs; i++) {
        o->params[i].name = base_xstrdup(specs[i].name);
        o->params[i].numel = specs[i].numel;
        o->params[i].decay = decay(specs[i].name) ? 1 : 0;
    }
    o->ops = ops;
    o->cfg = *cfg;
    return BASE_OK;
}

static void free_table(optim *o) {
    for (int i = 0; i < o->n_params; i++) free(o->params[i].name);
    free(o->params);
    free(o->runs);
    memset(o, 0, sizeof *o);
}

static int by_offset(const void *a, const void *b) {
    const optim_param *x = *(optim_param *const *)a, *y = *(optim_param *const *)b;
    return x->offset < y->offset ? -1 : (x->offset > y->offset);
}

/* Runs: parameters by offset, adjacent ones with equal decay merged. With
 * check_overlap, an overlap is an error (its names in the message). */
static base_status make_runs(optim *o, int check_overlap) {
    optim_param **by = base_xmalloc((size_t)o->n_params * sizeof *by);
    for (int i = 0; i < o->n_params; i++) by[i] = &o->params[i];
    qsort(by, (size_t)o->n_params, sizeof *by, by_offset);
    o->runs = base_xcalloc((size_t)o->n_params, sizeof *o->runs);
    o->n_runs = 0;
    for (int i = 0; i < o->n_params; i++) {
        const optim_param *p = by[i];
        if (check_overlap && i > 0 && by[i - 1]->offset + by[i - 1]->numel > p->offset) {
            base_status st = base_err_set(BASE_ERR_INVALID, "optimizer: parameters %s and %s overlap",
                                          by[i - 1]->name, p->name);
            free(by);
            return st;
        }
        optim_run *last = o->n_runs ? &o->runs[o->n_runs - 1] : NULL;
        if (last && last->decay == p->decay && last->offset + last->n == p->offset) {
            last->n += p->numel;
        } else {
            optim_run r = {p->offset, p->numel, p->decay};
            o->runs[o->n_runs++] = r;
        }
    }
    free(by);
    return BASE_OK;
}

/* m and v [n], zero: on the device, or in host memory with a device
 * staging buffer of two chunks (offload_optimizer on a device backend). */
#define OPTIM_STAGE_MAX ((int64_t)1 << 24) /* floats per chunk: 64 MB each for m and v */
static void alloc_state(optim *o) {
    size_t bytes = (size_t)o->state_n * sizeof(float);
    o->state_on_host = o->cfg.offload_optimizer && o->ops->device != TENSOR_CPU;
    if (!o->state_on_host) {
        o->m = o->ops->alloc(bytes);
        o->v = o->ops->alloc(bytes);
        return;
    }
    o->m = base_xcalloc((size_t)o->state_n, sizeof(float));
    o->v = base_xcalloc((size_t)o->state_n, sizeof(float));
    /* GRPO_OFFLOAD_CHUNK (floats) makes the chunks small, so that a test
     * crosses their boundaries on a tiny model */
    const char *env = getenv("GRPO_OFFLOAD_CHUNK");
    int64_t cap = env && atoll(env) > 0 ? atoll(env) : OPTIM_STAGE_MAX;
    o->stage_n = o->state_n < cap ? o->state_n : cap;
    o->stage = o->ops->alloc(2 * (size_t)o->stage_n * sizeof(float));
}

base_status optim_init(optim *o, const struct ops *ops, const optim_config *cfg,
                       const optim_param_spec *specs, int n_specs, int (*decay)(const char *name)) {
    base_status st = init_common(o, ops, cfg, specs, n_specs, decay);
    if (st) return st;
    int64_t off = 0, n_decay = 0;
    for (int pass = 1; pass >= 0; pass--) { /* decayed first, then the rest */
        for (int i = 0; i < n_specs; i++) {
            optim_param *p = &o->params[i];
            if (p->decay != pass) continue;
            p->offset = off;
            off = align_up(off + p->numel);
        }
        if (pass == 1) n_decay = off;
    }
    o->n = off;
    /* padding between parameters is zero in every role and AdamW keeps a
     * zero parameter with a zero gradient at zero, so each decay class is
     * one run over its padded range */
    o->runs = base_xcalloc(2, sizeof *o->runs);
    if (n_decay > 0) o->runs[o->n_runs++] = (optim_run){0, n_decay, 1};
    if (o->n > n_decay) o->runs[o->n_runs++] = (optim_run){n_decay, o->n - n_decay, 0};
    size_t bytes = (size_t)o->n * sizeof(float);
    o->param = ops->alloc(bytes);
    o->grad = ops->alloc(bytes);
    o->state_lo = 0, o->state_n = o->n;
    alloc_state(o);
    o->owns_param_grad = 1;
    return BASE_OK;
}

base_status optim_init_arena(optim *o, const struct ops *ops, const optim_config *cfg,
                             const optim_param_spec *specs, int n_specs,
                             int (*decay)(const char *name), float *param, float *grad, int64_t n) {
    return optim_init_arena_shard(o, ops, cfg, specs, n_specs, decay, param, grad, n, 0, n);
}

base_status optim_init_arena_shard(optim *o, const struct ops *ops, const optim_config *cfg,
                                   const optim_param_spec *specs, int n_specs, int (*decay)(const char *name),
                                   float *param, float *grad, int64_t n, int64_t lo, int64_t hi) {
    if (lo < 0 || hi < lo || hi > n)
        return base_err_set(BASE_ERR_INVALID, "optimizer: shard [%lld, %lld) is not inside the arena of %lld",
                            (long long)lo, (long long)hi, (long long)n);
    base_status st = init_common(o, ops, cfg, specs, n_specs, decay);
    if (st) return st;
    for (int i = 0; i < n_specs; i++) {
        if (specs[i].offset < 0 || specs[i].offset + specs[i].numel > n) {
            st = base_err_set(BASE_ERR_INVALID,
                              "optimizer: parameter %s [%lld, %lld) is outside the arena of %lld",
                              specs[i].name, (long long)specs[i].offset,
                              (long long)(specs[i].offset + specs[i].numel), (long long)n);
            free_table(o);
            return st;
        }
        o->params[i].offset = specs[i].offset;
    }
    if ((st = make_runs(o, 1))) {
        free_table(o);
        return st;
    }
    o->n = n;
    o->param = param;
    o->grad = grad;
    o->state_lo = lo, o->state_n = hi - lo;
    alloc_state(o);
    o->owns_param_grad = 0;
    return BASE_OK;
}

void optim_free(optim *o) {
    if (!o->ops) return;
    if (o->owns_param_grad) {
        o->ops->free(o->param);
        o->ops->free(o->grad);
    }
    if (o->state_on_host) {
        free(o->m), free(o->v);
        o->ops->free(o->stage);
    } else {
        o->ops->free(o->m);
        o->ops->free(o->v);
    }
    free_table(o);
}

int optim_find(const optim *o, const char *name) {
    for (int i = 0; i < o->n_params; i++)
        if (!strcmp(o->params[i].name, name)) return i;
    return -1;
}

static tensor view(const optim *o, float *role, int64_t off, int64_t n) {
    int64_t shape[1] = {n};
    return tensor_make(role + off, TENSOR_F32, o->ops->device, 1, shape);
}

static tensor pview(const optim *o, float *role, int i) {
    if (i < 0 || i >= o->n_params) base_die("optimizer: parameter index %d of %d", i, o->n_params);
    return view(o, role, o->params[i].offset, o->params[i].numel);
}

static tensor state_view(const optim *o, float *role, int i);
/* Parameter i of the parameters or gradients: a shard (ZeRO) is indexed as
 * the state and is always on the device. */
static tensor pg_view(const optim *o, float *role, int sharded, int i) {
    if (!sharded) return pview(o, role, i);
    tensor t = state_view(o, role, i);
    t.device = o->ops->device;
    return t;
}
tensor optim_param_view(const optim *o, int i) { return pg_view(o, o->param, o->param_sharded, i); }
tensor optim_grad_view(const optim *o, int i) { return pg_view(o, o->grad, o->grad_sharded, i); }
static tensor state_view(const optim *o, float *role, int i) {
    if (i < 0 || i >= o->n_params) base_die("optimizer: parameter index %d of %d", i, o->n_params);
    const optim_param *p = &o->params[i];
    if (p->offset < o->state_lo || p->offset + p->numel > o->state_lo + o->state_n)
        base_die("optimizer: parameter %s is not inside this rank's state shard [%lld, %lld)", p->name,
                 (long long)o->state_lo, (long long)(o->state_lo + o->state_n));
    tensor t = view(o, role, p->offset - o->state_lo, p->numel);
    if (o->state_on_host) t.device = TENSOR_CPU;
    return t;
}

tensor optim_m_view(const optim *o, int i) { return state_view(o, o->m, i); }
tensor optim_v_view(const optim *o, int i) { return state_view(o, o->v, i); }
tensor optim_role_view(const optim *o, float *role) {
    int state = role == o->m || role == o->v;
    tensor t = view(o, role, 0, state ? o->state_n : o->n);
    if (o->state_on_host && state) t.device = TENSOR_CPU;
    return t;
}

void optim_set_param_shard(optim *o, float *param) {
    o->param = param;
    o->param_sharded = 1;
}

void optim_set_grad_shard(optim *o, float *grad) {
    o->grad = grad;
    o->grad_sharded = 1;
}

void optim_zero_grad(optim *o) {
    o->ops->zero(o->grad, (size_t)(o->grad_sharded ? o->state_n : o->n) * sizeof(float));
}

double optim_grad_sumsq(const optim *o) {
    double sumsq = 0;
    const int64_t slo = o->state_lo, shi = o->state_lo + o->state_n;
    for (int i = 0; i < o->n_runs; i++) { /* fixed order: deterministic */
        int64_t r0 = o->runs[i].offset, r1 = o->runs[i].offset + o->runs[i].n;
        if (o->grad_sharded) { /* the run's part in the shard, indexed from state_lo */
            r0 = r0 > slo ? r0 : slo, r1 = r1 < shi ? r1 : shi;
            if (r1 <= r0) continue;
            r0 -= slo, r1 -= slo;
        }
        tensor g = view(o, o->grad, r0, r1 - r0);
        sumsq += o->ops->sumsq(&g);
    }
    return sumsq;
}

void optim_step(optim *o, int64_t k, optim_step_info *info) { optim_step_sumsq(o, k, optim_grad_sumsq(o), info); }

void optim_step_sumsq(optim *o, int64_t k, double sumsq, optim_step_info *info) {
    optim_step_info r = {0};
    r.grad_norm = sqrt(sumsq);
    r.clip_coef = 1.0f;
    if (!isfinite(r.grad_norm)) {
        o->n_skipped++;
        r.skipped = 1;
        base_warn("optimizer: training step %lld: gradient norm is %g; update skipped "
                  "(%lld skipped so far, %lld applied)",
                  (long long)k, r.grad_norm, (long long)o->n_skipped, (long long)o->step);
        if (info) *info = r;
        return;
    }
    if (o->cfg.max_grad_norm > 0) {
        /* torch clip_grad_norm_: float32 norm, coef = (1 / (norm + 1e-6)) *
         * max_norm (Tensor.__rtruediv__), clamped to 1 */
        float norm_f = (float)r.grad_norm;
        float coef = (1.0f / (norm_f + 1e-6f)) * (float)o->cfg.max_grad_norm;
        if (coef < 1.0f) r.clip_coef = coef;
    }
    o->step++;
    r.lr = optim_lr_at(&o->cfg, k);
    ops_adamw_args a = {.lr = r.lr,
                        .beta1 = o->cfg.adam_beta1,
                        .beta2 = o->cfg.adam_beta2,
                        .eps = o->cfg.adam_epsilon,
                        .grad_scale = r.clip_coef,
                        .step = o->step};
    const int64_t slo = o->state_lo, shi = o->state_lo + o->state_n;
    const int64_t glo = o->grad_sharded ? slo : 0; /* the gradient buffer's first arena element */
    const int64_t plo = o->param_sharded ? slo : 0; /* the parameter buffer's */
    for (int i = 0; i < o->n_runs; i++) {
        /* the part of the run inside this rank's state shard (all of it
         * unless sharded: ZeRO 1); m and v are indexed from state_lo */
        int64_t r0 = o->runs[i].offset > slo ? o->runs[i].offset : slo;
        int64_t r1 = o->runs[i].offset + o->runs[i].n < shi ? o->runs[i].offset + o->runs[i].n : shi;
        if (r1 <= r0) continue;
        const optim_run run = {r0, r1 - r0, o->runs[i].decay}, *u = &run;
        a.weight_decay = u->decay ? o->cfg.weight_decay : 0.0;
        if (!o->state_on_host) {
            tensor p = view(o, o->param, u->offset - plo, u->n), m = view(o, o->m, u->offset - slo, u->n);
            tensor v = view(o, o->v, u->offset - slo, u->n), g = view(o, o->grad, u->offset - glo, u->n);
            o->ops->adamw(&p, &m, &v, &g, &a);
            continue;
        }
        /* offloaded state: each chunk's m and v up, the same element-wise
         * update on the device, back down (AdamW is element-wise, so the
         * chunking changes no bit) */
        for (int64_t c0 = u->offset; c0 < u->offset + u->n; c0 += o->stage_n) {
            int64_t cn = u->offset + u->n - c0 < o->stage_n ? u->offset + u->n - c0 : o->stage_n;
            size_t bytes = (size_t)cn * sizeof(float);
            o->ops->upload(o->stage, o->m + (c0 - slo), bytes);
            o->ops->upload(o->stage + o->stage_n, o->v + (c0 - slo), bytes);
            tensor p = view(o, o->param, c0 - plo, cn), g = view(o, o->grad, c0 - glo, cn);
            tensor m = view(o, o->stage, 0, cn), v = view(o, o->stage + o->stage_n, 0, cn);
            o->ops->adamw(&p, &m, &v, &g, &a);
            o->ops->download(o->m + (c0 - slo), o->stage, bytes);
            o->ops->download(o->v + (c0 - slo), o->stage + o->stage_n, bytes);
        }
    }
    if (info) *info = r;
}

void optim_state_download(const optim *o, float *m, float *v) {
    size_t bytes = (size_t)o->state_n * sizeof(float);
    if (o->state_on_host) {
        memcpy(m, o->m, bytes);
        memcpy(v, o->v, bytes);
    } else {
        o->ops->download(m, o->m, bytes);
        o->ops->download(v, o->v, bytes);
    }
}

void optim_state_upload(optim *o, const float *m, const float *v) {
    size_t bytes = (size_t)o->state_n * sizeof(float);
    if (o->state_on_host) {
        memcpy(o->m, m, bytes);
        memcpy(o->v, v, bytes);
    } else {
        o->ops->upload(o->m, m, bytes);
        o->ops->upload(o->v, v, bytes);
    }
}

optim_counters optim_counters_get(const optim *o) {
    optim_counters c = {o->step, o->n_skipped};
    return c;
}

base_status optim_counters_set(optim *o, optim_counters c) {
    if (c.step < 0 || c.n_skipped < 0)
        return base_err_set(BASE_ERR_INVALID, "optimizer state: step %lld, skipped %lld",
                            (long long)c.step, (long long)c.n_skipped);
    o->step = c.step;
    o->n_skipped = c.n_skipped;
    return BASE_OK;
}
