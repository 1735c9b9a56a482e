/*
 * The AdamW state of an expert-parallel run in a checkpoint
 * (docs/checkpoints.md, "Expert parallelism"). Every rank holds m and v of
 * its optimizer's range of its EP index's arena: the non-expert parameters
 * and its local experts (ZeRO 0: all of that arena; ZeRO 1: its shard
 * within the expert-data-parallel group). The checkpoint holds them under
 * the whole model's global names, in the layout of a ZeRO 0 run at
 * expert_parallel_size 1:
 *
 *   optimizer.safetensors  "m.NAME", "v.NAME" [numel] F32 for every trained
 *                          parameter of the whole model (every routed
 *                          expert, global index), in the whole model's
 *                          table order: byte for byte the file one process
 *                          holding every expert writes (st_plan)
 *
 * Written by several ranks into the shared file (st_plan_create by rank 0,
 * st_part_put of each rank's pieces, st_plan_commit by rank 0; each step
 * agreed): an element is written by the one rank that holds it in EP
 * group 0 at ZeRO 0 (rank 0 the non-expert parameters, rank j < EP the
 * experts of EP index j), and at ZeRO 1 by the rank of its shard
 * (the non-expert parts by the ranks of EP index 0, the expert parts by
 * their EP index's). Read back by name (ckpt_optim.c read_full) at any
 * world size, expert_parallel_size and ZeRO stage.
 *
 * ZeRO 1 shard files of an EP 1 run (optimizer-rank-R-of-W, arena ranges
 * of the whole model) are read by an EP > 1 run through the whole
 * model's arena offsets of its parameters (run_ep_whole_offsets): the
 * arena is the parameter table laid out back to back (model/weights.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/st.h"
#include "run_internal.h"

static int is_expert(const char *name) { return strstr(name, ".mlp.experts.") != NULL; }

/* A trained parameter of the whole table (the optimizer's rule, run_optim_new). */
static int trained(const model_param *p) { return p->trainable && !p->mtp; }

/* oi[l] = the optimizer parameter of local table entry l, -1 when untrained;
 * an error when o's parameters are not m's trained entries in table order. */
static base_status optim_index(const model *m, const optim *o, int *oi) {
    int n = model_nparams(m), k = 0;
    for (int l = 0; l < n; l++) {
        const model_param *p = model_param_at(m, l);
        oi[l] = -1;
        if (!trained(p)) continue;
        if (k >= o->n_params || o->params[k].offset != p->offset || strcmp(o->params[k].name, p->name))
            return base_err_set(BASE_ERR_INVALID,
                                "expert parallelism: the optimizer's parameter %d is not the policy's trained %s",
                                k, p->name);
        oi[l] = k++;
    }
    if (k != o->n_params)
        return base_err_set(BASE_ERR_INVALID, "expert parallelism: the optimizer has %d parameters, the policy %d "
                            "trained ones", o->n_params, k);
    return BASE_OK;
}

typedef struct {
    const float *m, *v;   /* host [state_n]: the optimizer's range */
    int64_t lo;           /* its first arena element */
    const int64_t *at;    /* [plan tensors / 2]: the local arena offset of each m/v pair, -1: not here */
} optim_src;

static base_status fill_optim(void *ctx, int i, uint64_t off, void *dst, size_t n) {
    const optim_src *src = ctx;
    int64_t e = src->at[i / 2] + (int64_t)(off / sizeof(float));
    memcpy(dst, (i % 2 ? src->v : src->m) + (e - src->lo), n);
    return BASE_OK;
}

/* run_ep_write_optim's parts of optimizer.safetensors. */
typedef struct {
    run_ctx *c;
    const optim *o;
    const model_param *t;
    const int *g, *pi;
    int ng;
    const int64_t *at;
} optim_put;

static base_status put_optim(void *ctx, st_part *w) {
    const optim_put *e = ctx;
    run_ctx *c = e->c;
    const optim *o = e->o;
    size_t n = (size_t)o->state_n;
    float *hm = base_xmalloc((n + 1) * sizeof(float)), *hv = base_xmalloc((n + 1) * sizeof(float));
    optim_state_download(o, hm, hv);
    base_status s = BASE_OK;
    if (o->zero_stage >= 2) {
        /* ZeRO 2 / 3: every rank the parts of its two-piece shard (run_zero.c) */
        const float *mv[2] = {hm, hv};
        s = run_zero_ep_put_optim(c, w, e->t, e->g, e->ng, mv);
    } else {
        /* ZeRO 0: EP group 0 writes (each EP group holds the same state); ZeRO 1:
         * every rank its shard, the non-expert parts from EP index 0's ranks */
        optim_src src = {hm, hv, o->state_lo, e->at};
        int group = o->zero_shards > 0 || c->rank < c->ep, lead = c->rank % c->ep == 0;
        const int64_t lo = o->state_lo, hi = o->state_lo + o->state_n;
        for (int i = 0; i < e->ng && !s; i++) {
            if (e->pi[i] < 0 || e->g[i] < 0 || !group || !(is_expert(e->t[i].name) || lead)) continue;
            int64_t off = e->at[e->pi[i] / 2], a = off > lo ? off : lo;
            int64_t b = off + e->t[i].numel < hi ? off + e->t[i].numel : hi;
            if (b <= a) continue; /* another shard's */
            uint64_t from = (uint64_t)(a - off) * sizeof(float), len = (uint64_t)(b - a) * sizeof(float);
            s = st_part_put(w, e->pi[i], from, len, fill_optim, &src);
            if (!s) s = st_part_put(w, e->pi[i] + 1, from, len, fill_optim, &src);
        }
    }
    free(hm), free(hv);
    return s;
}

base_status run_ep_write_optim(run_ctx *c, const optim *o, const char *dir) {
    const model *m = c->policy;
    model_param *t;
    int *g, ng = run_ep_whole_table(m, &t, &g);
    int *oi = base_xmalloc(((size_t)model_nparams(m) + 1) * sizeof *oi);
    int64_t *at = base_xmalloc(((size_t)ng + 1) * sizeof *at);
    int *pi = base_xmalloc(((size_t)ng + 1) * sizeof *pi); /* whole entry -> its m's plan index, -1 */
    /* at ZeRO 2 / 3 the optimizer holds a shard, not the parameters: optim_index is ZeRO 0 / 1's */
    base_status s = o->zero_stage >= 2 ? BASE_OK : optim_index(m, o, oi);
    st_plan *p = st_plan_new();
    int np = 0;
    for (int i = 0; i < ng && !s; i++) {
        pi[i] = -1;
        if (!trained(&t[i])) continue;
        if (o->zero_stage < 2 && g[i] >= 0 && oi[g[i]] < 0) {
            s = base_err_set(BASE_ERR_INVALID, "expert parallelism: %s is trained but not in the optimizer", t[i].name);
            break;
        }
        int64_t shape[1] = {t[i].numel};
        char nm[sizeof t[i].name + 4];
        snprintf(nm, sizeof nm, "m.%s", t[i].name);
        st_plan_add(p, nm, TENSOR_F32, 1, shape);
        snprintf(nm, sizeof nm, "v.%s", t[i].name);
        st_plan_add(p, nm, TENSOR_F32, 1, shape);
        at[np / 2] = g[i] >= 0 ? model_param_at(m, g[i])->offset : -1;
        pi[i] = np;
        np += 2;
    }
    if (!s) s = st_plan_layout(p, "optimizer", 0);
    optim_put e = {c, o, t, g, pi, ng, at};
    s = run_ckpt_write_agreed(c, s, p, dir, "optimizer.safetensors", 0, put_optim, &e, NULL);
    st_plan_free(p);
    free(t), free(g), free(oi), free(at), free(pi);
    return s ? base_err_wrap(s, "expert_parallel_size = %d: the optimizer state (ZeRO %d)", c->ep, o->zero_stage)
             : BASE_OK;
}

base_status run_ep_whole_offsets(const model *m, const optim *o, int64_t *src, int64_t *whole_n) {
    if (!model_get_ep(m)) {
        for (int i = 0; i < o->n_params; i++) src[i] = o->params[i].offset;
        *whole_n = o->n;
        return BASE_OK;
    }
    model_param *t;
    int *g, ng = run_ep_whole_table(m, &t, &g);
    int *oi = base_xmalloc(((size_t)model_nparams(m) + 1) * sizeof *oi);
    base_status s = optim_index(m, o, oi);
    int64_t at = 0, local = 0;
    for (int i = 0; i < ng && !s; i++) {
        if (g[i] >= 0) { /* the local arena is the local table back to back too */
            const model_param *p = model_param_at(m, g[i]);
            if (p->offset != local)
                s = base_err_set(BASE_ERR_INVALID, "expert parallelism: %s at arena offset %lld, not %lld (the arena "
                                 "is not its table back to back)", p->name, (long long)p->offset, (long long)local);
            local += p->numel;
            if (oi[g[i]] >= 0) src[oi[g[i]]] = at;
        }
        at += t[i].numel;
    }
    if (!s && local != model_numel(m))
        s = base_err_set(BASE_ERR_INVALID, "expert parallelism: the policy's table covers %lld of its %lld arena "
                         "elements", (long long)local, (long long)model_numel(m));
    *whole_n = at;
    free(t), free(g), free(oi);
    return s;
}
