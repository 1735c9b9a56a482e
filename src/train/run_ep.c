/*
 * Expert parallelism on the trainer's side (docs/distributed.md, "Expert
 * parallelism"): the recipe key expert_parallel_size (EP) checked against
 * the world size and the model, the two groups it makes, the exchange
 * functions the model's MoE layers call (model_ep, model.h), the gradient
 * sums and norm, the consolidated checkpoint written by every rank, and
 * the plans of grpo plan --ep.
 *
 * EP groups are consecutive ranks: group g = ranks [g EP, (g + 1) EP);
 * rank r's EP index is r % EP and holds the routed experts
 * [j E / EP, (j + 1) E / EP) of every MoE layer. Its expert-data-parallel
 * group is the W / EP ranks with the same index (color r % EP): expert
 * gradients are summed over it, everything else over the world.
 *
 * One EP per run: the policy is loaded once with its local experts, so
 * every training stage of a recipe sets the same expert_parallel_size (a
 * stage that differs is refused naming the key); sample and eval stages
 * run with the run's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/st.h"
#include "run_internal.h"

base_status run_ep_size(const recipe_cfg *cfg, int64_t *ep) {
    *ep = 1;
    int first = -1;
    for (int i = 0; i < cfg->n_stages; i++) {
        const recipe_stage_cfg *st = &cfg->stages[i];
        const recipe_train_cfg *t = st->type == RECIPE_STAGE_GRPO  ? &st->grpo.train
                                    : st->type == RECIPE_STAGE_SFT ? &st->sft.train
                                                                   : NULL;
        if (!t) continue;
        if (first < 0) {
            first = i;
            *ep = t->expert_parallel_size;
        } else if (t->expert_parallel_size != *ep) {
            return base_err_set(BASE_ERR_INVALID,
                                "stages[%d].expert_parallel_size = %lld differs from stages[%d]'s %lld: one "
                                "expert_parallel_size per run (the policy holds its experts for every stage)",
                                i + 1, (long long)t->expert_parallel_size, first + 1, (long long)*ep);
        }
    }
    return BASE_OK;
}

base_status run_ep_check(const model_config *mc, int64_t ep, int world, int zero_stage, int lora) {
    if (ep <= 1) return BASE_OK;
    if (world % ep)
        return base_err_set(BASE_ERR_INVALID,
                            "expert_parallel_size = %lld does not divide the world size %d (the ranks mpirun "
                            "started): EP groups are consecutive ranks",
                            (long long)ep, world);
    if (mc->n_routed_experts <= 0)
        return base_err_set(BASE_ERR_INVALID, "expert_parallel_size = %lld: the model has no routed experts",
                            (long long)ep);
    if (mc->n_routed_experts % ep)
        return base_err_set(BASE_ERR_INVALID,
                            "expert_parallel_size = %lld does not divide the model's n_routed_experts %d",
                            (long long)ep, mc->n_routed_experts);
    (void)zero_stage; /* every stage runs with EP: ZeRO 1 shards within the expert-data-parallel group,
                       * ZeRO 2 and 3 by class (run_zero.c) */
    if (lora)
        return base_err_set(BASE_ERR_UNSUPPORTED,
                            "expert_parallel_size = %lld with a lora table: LoRA runs with every expert on every "
                            "rank (expert_parallel_size = 1)",
                            (long long)ep);
    return BASE_OK;
}

/* ---- the exchange functions (model_ep) over the EP group ---------------- */

static base_status test_fault(run_ctx *c);

static base_status ex_counts(void *ctx, const int64_t *send, int64_t *recv, int n) {
    run_ctx *c = ctx;
    if (c->ep_broken) return test_fault(c);
    size_t *k = c->ep_sizes; /* made once (run_ep_open): nothing allocated per exchange */
    for (int p = 0; p < c->ep; p++) k[p] = (size_t)n;
    base_status s = dist_alltoallv(c->ep_host, send, k, recv, k, DIST_I64);
    return s ? base_err_wrap(s, "expert parallelism: the all-to-all of the MoE row counts") : BASE_OK;
}

static base_status ex_rows(void *ctx, const void *send, const int64_t *send_bytes, void *recv,
                           const int64_t *recv_bytes) {
    run_ctx *c = ctx;
    base_status f = test_fault(c);
    if (f) return f;
    size_t *sc = c->ep_sizes, *rc = sc + c->ep;
    for (int p = 0; p < c->ep; p++) sc[p] = (size_t)send_bytes[p], rc[p] = (size_t)recv_bytes[p];
    base_status s = dist_alltoallv(c->ep_dev, send, sc, recv, rc, DIST_U8);
    return s ? base_err_wrap(s, "expert parallelism: the all-to-all of the MoE rows") : BASE_OK;
}

static base_status ex_any(void *ctx, int local, int *any) {
    run_ctx *c = ctx;
    if (c->ep_broken) return test_fault(c);
    int32_t v = local != 0;
    base_status s = dist_allreduce(c->ep_host, &v, 1, DIST_I32, DIST_MAX);
    if (s) return base_err_wrap(s, "expert parallelism: the decode agreement of the EP group");
    *any = v != 0;
    return BASE_OK;
}

base_status run_ep_open(run_ctx *c, const char *model_dir) {
    int64_t ep;
    base_status s = run_ep_size(c->cfg, &ep);
    if (s || ep <= 1) return s;
    model_config mc;
    s = model_config_load(model_dir, &mc);
    if (s) s = base_err_wrap(s, "expert_parallel_size = %lld", (long long)ep);
    /* a config one rank cannot read: every rank stops here, none waits in the split */
    s = run_agree(c, s, "expert parallelism: the model's config");
    if (s) return s;
    int zero = 0;
    for (int i = 0; i < c->cfg->n_stages; i++) {
        const recipe_stage_cfg *st = &c->cfg->stages[i];
        int z = st->type == RECIPE_STAGE_GRPO ? (int)st->grpo.train.zero_stage
                : st->type == RECIPE_STAGE_SFT ? (int)st->sft.train.zero_stage : 0;
        zero = z > zero ? z : zero;
    }
    s = run_ep_check(&mc, ep, c->world, zero, c->cfg->lora.set);
    if (s) return s;
    c->ep = (int)ep;
    s = dist_comm_split(c->host, c->rank / c->ep, c->rank, "ep", &c->ep_host);
    if (!s) s = dist_comm_split(c->host, c->rank % c->ep, c->rank, "expert_dp", &c->edp_host);
    if (!s) s = dist_comm_device(c->ops, c->ep_host, "ep/device", &c->ep_dev);
    if (!s) s = dist_comm_device(c->ops, c->edp_host, "expert_dp/device", &c->edp_dev);
    if (s) return base_err_wrap(s, "expert_parallel_size = %d: the EP and expert-data-parallel groups", c->ep);
    c->ep_sizes = base_xmalloc(2 * (size_t)c->ep * sizeof *c->ep_sizes);
    c->ep_x = (model_ep){.size = c->ep, .rank = c->rank % c->ep, .ctx = c, .alltoall_counts = ex_counts,
                         .alltoallv = ex_rows, .any_active = ex_any};
    c->load.ep = &c->ep_x;
    return BASE_OK;
}

void run_ep_close(run_ctx *c) {
    if (c->ep_dev != c->ep_host) dist_comm_free(c->ep_dev);
    if (c->edp_dev != c->edp_host) dist_comm_free(c->edp_dev);
    dist_comm_free(c->ep_host);
    dist_comm_free(c->edp_host);
    free(c->ep_sizes);
    c->ep_sizes = NULL;
    c->ep_dev = c->ep_host = c->edp_dev = c->edp_host = NULL;
    c->load.ep = NULL;
    c->ep = 0;
}

/* ---- plans (run_mem.c's roles with EP > 1) ------------------------------- */

/* Routed-expert parameters of the whole model as held with `params`
 * parameters: every MoE layer of the main model, and the MTP layers' when
 * the arena holds them (params above the main model's count). */
static int64_t expert_numel(const model_config *mc, int64_t params, int *moe_layers) {
    int64_t per = (int64_t)mc->n_routed_experts * 3 * mc->hidden_size * mc->moe_intermediate_size, n = 0;
    int main_moe = 0;
    for (int l = 0; l < mc->num_hidden_layers; l++)
        if (model_layer_is_moe(mc, l)) main_moe++;
    n = per * main_moe;
    int64_t mtp = 0, main = model_config_param_count(mc, &mtp);
    if (params > main)
        for (int k = 0; k < mc->num_nextn_predict_layers; k++)
            if (model_layer_is_moe(mc, mc->num_hidden_layers + k)) n += per;
    if (moe_layers) *moe_layers = main_moe;
    return n;
}

/* Elements of rank r's ZeRO 1 shard with EP: its arena (the non-expert
 * elements and its EP index's experts, numel - experts + experts / EP)
 * split over the W / EP ranks of its expert-data-parallel group, which
 * hold the same arena. */
static int64_t ep_shard(int64_t numel, int64_t experts, int ep, int W, int r) {
    int64_t lo, hi;
    run_split(numel - experts + experts / ep, r / ep, W / ep, &lo, &hi);
    return hi - lo;
}

/* Elements of rank r's ZeRO 2 / 3 shard with EP (run_zero.c): the
 * non-expert elements (numel - experts) split over the world and its EP
 * index's experts (experts / EP) over its expert-data-parallel group. */
static int64_t ep_class_shard(int64_t numel, int64_t experts, int ep, int W, int r) {
    int64_t a, b, c, d;
    run_split(numel - experts, r, W, &a, &b);
    run_split(experts / ep, r / ep, W / ep, &c, &d);
    return (b - a) + (d - c);
}

int run_ep_plan_largest_rank(const model_config *mc, const run_grpo_shape *sh, int64_t params) {
    int W = sh->world > 1 ? sh->world : 1, ep = sh->ep > 1 ? sh->ep : 1, best = 0;
    int64_t x = expert_numel(mc, params, NULL), bsz = -1;
    for (int r = 0; r < W; r++) {
        int64_t z = sh->zero_stage >= 2 ? ep_class_shard(params, x, ep, W, r) : ep_shard(params, x, ep, W, r);
        if (z > bsz) bsz = z, best = r;
    }
    return best;
}

/* The exchange functions of a plan's model shell (model_memory_plan never
 * calls them). */
static base_status plan_counts(void *ctx, const int64_t *send, int64_t *recv, int n) {
    (void)ctx, (void)send, (void)recv, (void)n;
    return base_err_set(BASE_ERR_INVALID, "a planned model exchanges no rows");
}
static base_status plan_rows(void *ctx, const void *send, const int64_t *sb, void *recv, const int64_t *rb) {
    (void)ctx, (void)send, (void)sb, (void)recv, (void)rb;
    return base_err_set(BASE_ERR_INVALID, "a planned model exchanges no rows");
}

/* ZeRO 2 / 3 with EP (run_zero_ep_optim_new): the rank's shard by class,
 * the gradient shard and the unit windows of its EP index's model (units
 * hold 1 / EP of the experts), the compact master shard (ZeRO 2: the
 * all-gather's source, "gather"; ZeRO 3: the weights with the parameter
 * windows, the arena released). */
static base_status plan_zero23(const model_config *mc, const run_grpo_shape *sh, const model_mem *pm, int64_t x,
                               run_grpo_mem *out) {
    int W = sh->world > 1 ? sh->world : 1, rank = sh->world > 1 ? sh->rank : 0, ep = sh->ep;
    model_ep pe = {.size = ep, .rank = rank % ep, .alltoall_counts = plan_counts, .alltoallv = plan_rows};
    model_load_opts lo = sh->load;
    lo.ep = &pe;
    model_mem pl;
    base_status s = model_memory_plan(mc, &lo, sh->device, &pl);
    if (s) return s;
    int64_t n = ep_class_shard(pm->params, x, ep, W, rank);
    size_t shard = (size_t)(n > 0 ? n : 1) * sizeof(float), win = 2 * (size_t)pl.grad_window + (size_t)pl.grad_window_emb;
    out->optimizer = 2 * (size_t)n * sizeof(float);
    out->grads = shard + win * sizeof(float);
    out->gather = 0;
    if (sh->zero_stage == 2) {
        out->gather = shard;
    } else {
        int bf16 = sh->device != TENSOR_CPU && sh->load.precision == MODEL_BF16;
        out->weights = out->weights - pl.master - pl.compute + shard + win * sizeof(float) +
                       (bf16 ? win * sizeof(uint16_t) : 0);
        /* run_grpo_memory's release peak: this EP index's model loaded whole (pm: every expert) */
        out->release_peak = pl.master + pl.compute;
    }
    return BASE_OK;
}

base_status run_ep_plan_memory(const model_config *mc, const run_grpo_shape *sh, const model_mem *pm,
                               const model_mem *rm, run_grpo_mem *out) {
    int W = sh->world > 1 ? sh->world : 1, rank = sh->world > 1 ? sh->rank : 0;
    base_status s = run_ep_check(mc, sh->ep, W, sh->zero_stage, sh->lora != NULL);
    if (s) return s;
    int ep = sh->ep;
    int64_t x = expert_numel(mc, pm->params, NULL), drop = x - x / ep, held = pm->params - drop;
    /* weights: the experts' share of the weight bytes, in proportion to their parameters */
    double per = (double)(pm->master + pm->compute + pm->scales) / (double)pm->params;
    out->weights -= (size_t)(per * (double)drop);
    if (out->ref_weights && rm->params > 0) {
        int64_t rx = expert_numel(mc, rm->params, NULL);
        double rper = (double)(rm->master + rm->compute + rm->scales) / (double)rm->params;
        out->ref_weights -= (size_t)(rper * (double)(rx - rx / ep));
    }
    out->grads = (size_t)held * sizeof(float);
    int64_t state = sh->zero_stage == 1 ? ep_shard(pm->params, x, ep, W, rank) : held;
    out->optimizer = 2 * (size_t)state * sizeof(float);
    /* ZeRO 1's all-gather runs over the W / EP ranks of the expert-DP group: none when it is one rank */
    out->gather = sh->zero_stage == 1 && W / ep > 1 ? (state > 0 ? (size_t)state : 1) * sizeof(float) : 0;
    out->numel = held;
    out->expert_numel = x / ep;
    if (sh->zero_stage >= 2) s = plan_zero23(mc, sh, pm, x, out);
    return s;
}

void run_ep_plan_comm(const model_config *mc, const run_grpo_shape *sh, const model_mem *pm, run_grpo_comm *out) {
    int W = sh->world > 1 ? sh->world : 1, ep = sh->ep, D = W / ep, layers = 0;
    int64_t x = expert_numel(mc, pm->params, &layers);
    double nonexp = (double)(pm->params - x) * sizeof(float), mine = (double)(x / ep) * sizeof(float);
    out->grad_allreduce = 2.0 * (W - 1) / W * nonexp + 2.0 * (D - 1) / D * mine;
    out->param_allgather = sh->zero_stage == 1 ? (double)(D - 1) / D * (nonexp + mine) : 0;
    if (sh->zero_stage >= 2) { /* by class: the rest over the world, the experts over the expert-DP group */
        int64_t xm = expert_numel(mc, 0, NULL); /* the units' experts: the main model's (no MTP) */
        double ux = (double)(xm / ep) * sizeof(float), u0 = (double)pm->grad_units * sizeof(float) - (double)xm * sizeof(float);
        double unit = (double)(W - 1) / W * u0 + (double)(D - 1) / D * ux; /* one pass over every unit */
        out->grad_allreduce = 0;
        out->grad_reduce_scatter = (double)out->micro_batches * unit + 2.0 * (W - 1) / W * 8;
        out->param_allgather = sh->zero_stage == 2 ? (double)(W - 1) / W * nonexp + (double)(D - 1) / D * mine : 0;
        if (sh->zero_stage == 3) {
            out->train_allgather = 2.0 * (double)out->micro_batches * unit;
            out->rollout_allgather = (double)(sh->max_completion > 0 ? sh->max_completion : 1) * unit;
        }
    }
    /* one exchange of `rows` rows: a dispatch and a combine per MoE layer, and the counts */
    double away = (double)(ep - 1) / ep, row = (double)mc->hidden_size * sizeof(float);
    double counts = (double)(ep - 1) * (double)(mc->n_routed_experts / ep) * sizeof(int64_t);
    int64_t seqs = (sh->prompts + W - 1) / W * sh->num_generations, k = mc->num_experts_per_tok;
#define A2A(rows) ((double)layers * (2.0 * away * (double)(rows) * row + counts))
    out->a2a_decode_step = A2A(seqs * k);
    out->a2a_prefill = A2A(seqs * sh->max_prompt * k);
    int64_t rows = (sh->prompts * sh->num_generations + W - 1) / W;
    double train = A2A(rows * (sh->max_prompt + sh->max_completion) * k); /* one forward */
    out->a2a_train = train * (2.0 + (sh->recompute ? 1 : 0) + (sh->ref ? 1 : 0));
#undef A2A
}

/* ---- training with EP > 1 ---------------------------------------------------- */

base_status run_ep_reduce_grads(run_ctx *c, float *grads) {
    const model *m = c->policy;
    int n = model_nparams(m);
    int64_t total = model_numel(m), lo = 0, end = 0;
    int cls = n ? run_ep_is_expert(model_param_at(m, 0)->name) : 0;
    base_status s = BASE_OK;
    /* runs of one class in arena order: experts over the expert-data-parallel
     * group, the rest (arena gaps included) over the world */
    for (int i = 0; i <= n && !s; i++) {
        const model_param *p = i < n ? model_param_at(m, i) : NULL;
        if (p && p->offset < end)
            return base_err_set(BASE_ERR_INVALID, "expert parallelism: parameter %s at %lld before the end %lld of "
                                "the previous one (the arena is not in table order)",
                                p->name, (long long)p->offset, (long long)end);
        int k = p ? run_ep_is_expert(p->name) : !cls;
        int64_t at = p ? p->offset : total;
        if (k != cls) {
            if (at > lo) s = dist_allreduce(cls ? c->edp_dev : c->dev, grads + lo, (size_t)(at - lo), DIST_F32, DIST_SUM);
            lo = at, cls = k;
        }
        if (p) end = p->offset + p->numel;
    }
    return s ? base_err_wrap(s, "summing the gradients (experts over the %d ranks of the expert-data-parallel group, the "
                             "rest over %d)", dist_comm_size(c->edp_host), c->world)
             : BASE_OK;
}

base_status run_ep_optim_step(run_ctx *c, optim *o, int64_t k, optim_step_info *info) {
    double part[2] = {0, 0}; /* non-expert, this rank's experts */
    for (int i = 0; i < o->n_params; i++) {
        tensor g = optim_grad_view(o, i);
        part[run_ep_is_expert(o->params[i].name)] += o->ops->sumsq(&g);
    }
    /* every expert counted once: summed over the EP group, each holding its own */
    base_status s = dist_allreduce(c->ep_host, &part[1], 1, DIST_F64, DIST_SUM);
    if (s) return base_err_wrap(s, "summing the experts' gradient norm over the EP group");
    optim_step_sumsq(o, k, part[0] + part[1], info);
    return BASE_OK;
}

/* The whole model's parameter table from this rank's (the EP model's holds
 * its experts only, in the whole table's order): each MoE layer's block of
 * local gate/up (then down) entries replaced by every expert's, named with
 * its global index; gidx[i] = the local entry of global entry i, -1 for
 * another rank's expert. */
int run_ep_whole_table(const model *m, model_param **out, int **gidx) {
    const model_config *mc = model_cfg(m);
    const model_ep *x = model_get_ep(m);
    int e0, e1;
    model_ep_local_experts(mc, x ? x->size : 1, x ? x->rank : 0, &e0, &e1);
    int el = e1 - e0;
    int n = model_nparams(m), E = mc->n_routed_experts, cap = n + 3 * E * (mc->num_hidden_layers + 1) + 16, ng = 0;
    model_param *t = base_xcalloc((size_t)cap, sizeof *t);
    int *g = base_xcalloc((size_t)cap, sizeof *g);
    for (int i = 0; i < n;) {
        const model_param *p = model_param_at(m, i);
        const char *x = strstr(p->name, ".mlp.experts.");
        if (!x) {
            t[ng] = *p, g[ng++] = i++;
            continue;
        }
        int per = strstr(x, ".down_proj.") ? 1 : 2; /* entries per expert in this block */
        const char *sfx[2] = {per == 1 ? "down_proj" : "gate_proj", "up_proj"};
        int plen = (int)(x - p->name);
        for (int e = 0; e < E && ng + per <= cap; e++)
            for (int k = 0; k < per; k++) {
                int li = i + (e - e0) * per + k;
                t[ng] = e >= e0 && e < e0 + el ? *model_param_at(m, li) : *p;
                snprintf(t[ng].name, sizeof t[ng].name, "%.*s.mlp.experts.%d.%s.weight", plen, p->name, e, sfx[k]);
                g[ng++] = e >= e0 && e < e0 + el ? li : -1;
            }
        i += el * per;
    }
    *out = t, *gidx = g;
    return ng;
}

typedef struct {
    const model *m;
    const model_param *t;
    const int *g;
} ep_src;

static base_status fill_local(void *ctx, int i, uint64_t off, void *dst, size_t n) {
    const ep_src *src = ctx;
    int64_t at = model_param_at(src->m, src->g[i])->offset + (int64_t)(off / sizeof(float));
    model_weights_range_to_host(src->m, at, (int64_t)(n / sizeof(float)), dst); /* a frozen model's too */
    return BASE_OK;
}

/* ZeRO 3 with EP: bytes [off, off + n) of whole-table tensor i, all in this
 * rank's shard (st_part_put is only asked for the part it owns). */
typedef struct {
    const run_ctx *c;
    const model *m;
    const int *g;
    const float *vals; /* NULL: the weights (device); else host values indexed like the shard (m or v) */
    int cur;           /* the whole table's entry being put (the plan's index differs for m / v) */
} shard_src;

static base_status fill_shard(void *ctx, int i, uint64_t off, void *dst, size_t n) {
    const shard_src *src = ctx;
    int64_t e = model_param_at(src->m, src->g[src->cur])->offset + (int64_t)(off / sizeof(float)), a, b, at;
    if (!run_zero_ep_owned(src->c, e, e + (int64_t)(n / sizeof(float)), &a, &b, &at) || a != e ||
        b != e + (int64_t)(n / sizeof(float)))
        return base_err_set(BASE_ERR_INVALID, "expert parallelism: tensor %d's bytes [%llu, +%zu) are not in this "
                            "rank's shard", i, (unsigned long long)off, n);
    if (src->vals) memcpy(dst, src->vals + at, n);
    else src->c->ops->download(dst, run_zero_ep_params(src->c) + at, n);
    return BASE_OK;
}

/* Every local tensor's part in this rank's shard (ZeRO 3 with EP) through
 * fill_shard; tensors i of the whole table, (is_m, is_v) pairs when `two`. */
static base_status put_owned(st_part *w, const model_param *t, const int *g, int ng, int two, const model *m,
                             shard_src *src, const float *mv[2]) {
    base_status s = BASE_OK;
    for (int i = 0, j = 0; i < ng && !s; i++) {
        if (two && (!t[i].trainable || t[i].mtp)) continue;
        int k = two ? 2 * j++ : i;
        if (g[i] < 0) continue; /* another EP index's expert */
        const model_param *lp = model_param_at(m, g[i]);
        int64_t a, b, at;
        if (!run_zero_ep_owned(src->c, lp->offset, lp->offset + lp->numel, &a, &b, &at)) continue;
        uint64_t off = (uint64_t)(a - lp->offset) * sizeof(float), bytes = (uint64_t)(b - a) * sizeof(float);
        src->cur = i;
        for (int r = 0; r < (two ? 2 : 1) && !s; r++) {
            src->vals = two ? mv[r] : NULL;
            s = st_part_put(w, k + r, off, bytes, fill_shard, src);
        }
    }
    return s;
}

/* run_ep_write_weights' parts: at ZeRO 3 every rank its parts of the shards;
 * else rank 0 the non-expert tensors and EP group 0 (ranks 0 .. EP - 1) its
 * experts. */
typedef struct {
    run_ctx *c;
    const model *m;
    const model_param *t;
    const int *g;
    int ng;
} ep_put;

static base_status put_weights(void *ctx, st_part *w) {
    const ep_put *e = ctx;
    run_ctx *c = e->c;
    if (e->m == c->policy && model_arena_released(e->m)) {
        shard_src sh = {c, e->m, e->g, NULL, 0};
        return put_owned(w, e->t, e->g, e->ng, 0, e->m, &sh, NULL);
    }
    ep_src src = {e->m, e->t, e->g};
    base_status s = BASE_OK;
    for (int i = 0; i < e->ng && !s; i++) {
        int mine = e->g[i] >= 0 && (run_ep_is_expert(e->t[i].name) ? c->rank < c->ep : c->rank == 0);
        if (mine) s = st_part_put(w, i, 0, (uint64_t)e->t[i].numel * sizeof(float), fill_local, &src);
    }
    return s;
}

base_status run_ep_write_weights(run_ctx *c, const model *m, const char *dir, const char *stem, uint64_t shard_bytes) {
    model_param *t;
    int *g, ng = run_ep_whole_table(m, &t, &g);
    st_plan *p = NULL;
    base_status s = run_ckpt_weights_plan(t, ng, stem, shard_bytes == UINT64_MAX ? 0 : shard_bytes, &p);
    ep_put e = {c, m, t, g, ng};
    s = run_ckpt_write_agreed(c, s, p, dir, "weight files", 0, put_weights, &e, NULL);
    st_plan_free(p);
    free(t), free(g);
    return s;
}

base_status run_zero_ep_put_optim(run_ctx *c, st_part *w, const model_param *t, const int *g, int ng,
                                  const float *mv[2]) {
    shard_src sh = {c, c->policy, g, NULL, 0};
    return put_owned(w, t, g, ng, 1, c->policy, &sh, mv);
}

base_status run_zero_ep_read_optim(run_ctx *c, const char *dir, optim *o) {
    const model *m = c->policy;
    char *path = base_path_join(dir, "optimizer.safetensors");
    st_file *f = NULL;
    base_status s = st_open(path, &f);
    free(path);
    if (s) return s;
    model_param *t;
    int *g, ng = run_ep_whole_table(m, &t, &g);
    size_t n = (size_t)o->state_n;
    float *mv[2] = {base_xmalloc((n + 1) * sizeof(float)), base_xmalloc((n + 1) * sizeof(float))};
    optim_state_download(o, mv[0], mv[1]); /* keeps what the file does not name (frozen elements, gaps) */
    for (int i = 0; i < ng && !s; i++) {
        if (g[i] < 0 || !t[i].trainable || t[i].mtp) continue;
        const model_param *lp = model_param_at(m, g[i]);
        int64_t a, b, at;
        if (!run_zero_ep_owned(c, lp->offset, lp->offset + lp->numel, &a, &b, &at)) continue;
        for (int r = 0; r < 2 && !s; r++) {
            char nm[sizeof t[i].name + 4];
            snprintf(nm, sizeof nm, "%c.%s", r ? 'v' : 'm', t[i].name);
            const st_tensor *x = st_find(f, nm);
            if (!x || x->dtype != TENSOR_F32 || st_numel(x) != t[i].numel)
                s = base_err_set(BASE_ERR_INVALID, "%s: tensor '%s' is %s (expected F32 [%lld])", st_path(f), nm,
                                 x ? "of another type or size" : "missing", (long long)t[i].numel);
            else
                memcpy(mv[r] + at, (const float *)x->data + (a - lp->offset), (size_t)(b - a) * sizeof(float));
        }
    }
    if (!s) optim_state_upload(o, mv[0], mv[1]);
    free(mv[0]), free(mv[1]);
    free(t), free(g);
    st_close(f);
    return s;
}

int64_t run_ep_passes(const run_ctx *c, int64_t n, int64_t mb) {
    int64_t most = 0;
    if (mb <= 0) return 0;
    for (int r = 0; r < c->world; r++) {
        int64_t a, z;
        run_split(n, r, c->world, &a, &z);
        int64_t k = (z - a + mb - 1) / mb;
        most = k > most ? k : most;
    }
    return most;
}

base_status run_ep_join_forwards(run_ctx *c, model_train *tr, int64_t passes) {
    base_status s = BASE_OK;
    for (int64_t p = 0; p < passes && c->ep > 1 && !s; p++) s = model_train_join_forward(tr);
    return run_ep_pass_failed(c, s, "a zero-row forward pass");
}

base_status run_ep_pass_failed(run_ctx *c, base_status s, const char *what) {
    if (!s || c->ep <= 1) return s;
    fflush(stdout);
    fprintf(stderr, "%s: error: %s\n", base_log_tag(), base_err_msg());
    fprintf(stderr,
            "%s: rank %d failed inside the expert-parallel lockstep of %s (its EP group's exchanges cannot "
            "pair up without it): ending every rank of the job\n",
            base_log_tag(), c->rank, what);
    fflush(stderr);
    dist_abort(1);
}

/* ---- faults inside the lockstep (tests) ---------------------------------- */

void run_ep_test_phase(run_ctx *c, const char *phase) {
    c->ep_phase = phase;
    c->ep_calls = 0;
}

/* GRPO_TEST_FAIL_EP=R:PHASE:S:K (run_internal.h): BASE_OK, or the error of
 * this exchange (the K-th of the phase, and every one after it). */
static base_status test_fault(run_ctx *c) {
    if (c->ep_broken)
        return base_err_set(BASE_ERR_IO, "rank %d: its EP group's exchanges failed before (GRPO_TEST_FAIL_EP)", c->rank);
    const char *e = getenv("GRPO_TEST_FAIL_EP");
    int r = -1;
    long long step = -1, k = -1;
    char phase[16];
    if (!e || !c->ep_phase || sscanf(e, "%d:%15[a-z]:%lld:%lld", &r, phase, &step, &k) != 4 || r != c->rank ||
        strcmp(phase, c->ep_phase) || step != c->total_steps + 1 || ++c->ep_calls != k)
        return BASE_OK;
    c->ep_broken = 1;
    return base_err_set(BASE_ERR_IO,
                        "GRPO_TEST_FAIL_EP=%s: rank %d fails MoE row exchange %lld of GRPO step %lld's %s phase (a "
                        "test of faults)",
                        e, c->rank, k, step, phase);
}

base_status run_ep_summary(run_ctx *c, const char *stage) {
    double mine[4] = {(double)c->ep_decode_steps, (double)c->ep_join_steps, c->ep_join_seconds, c->ep_gen_seconds};
    double *all = base_xmalloc((size_t)c->world * 4 * sizeof *all);
    base_status s = dist_allgather(c->host, mine, all, 4, DIST_F64);
    if (!s) {
        const char *keys[4] = {"decode_steps", "join_steps", "join_seconds", "generate_seconds"};
        cJSON *o = cJSON_CreateObject();
        for (int k = 0; k < 4; k++) {
            cJSON *a = cJSON_AddArrayToObject(o, keys[k]);
            for (int r = 0; r < c->world; r++) cJSON_AddItemToArray(a, cJSON_CreateNumber(all[r * 4 + k]));
        }
        char key[160];
        snprintf(key, sizeof key, "%s.expert_parallel_rollout", stage);
        s = run_summary_set(c, key, o);
    }
    free(all);
    return s;
}
