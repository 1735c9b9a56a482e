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
    if (zero_stage > 1)
        return base_err_set(BASE_ERR_UNSUPPORTED,
                            "zero_stage = %d with expert_parallel_size = %lld: ZeRO 2 and 3 are not combined with "
                            "expert parallelism (zero_stage 0 or 1)",
                            zero_stage, (long long)ep);
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

int run_ep_plan_largest_rank(const model_config *mc, const run_grpo_shape *sh, int64_t params) {
    int W = sh->world > 1 ? sh->world : 1, ep = sh->ep > 1 ? sh->ep : 1, best = 0;
    int64_t x = expert_numel(mc, params, NULL), bsz = -1;
    for (int r = 0; r < W; r++) {
        int64_t z = ep_shard(params, x, ep, W, r);
        if (z > bsz) bsz = z, best = r;
    }
    return best;
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
    return BASE_OK;
}

void run_ep_plan_comm(const model_config *mc, const run_grpo_shape *sh, const model_mem *pm, run_grpo_comm *out) {
    int W = sh->world > 1 ? sh->world : 1, ep = sh->ep, D = W / ep, layers = 0;
    int64_t x = expert_numel(mc, pm->params, &layers);
    double nonexp = (double)(pm->params - x) * sizeof(float), mine = (double)(x / ep) * sizeof(float);
    out->grad_allreduce = 2.0 * (W - 1) / W * nonexp + 2.0 * (D - 1) / D * mine;
    out->param_allgather = sh->zero_stage == 1 ? (double)(D - 1) / D * (nonexp + mine) : 0;
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

static int is_expert(const char *name) { return strstr(name, ".mlp.experts.") != NULL; }

base_status run_ep_reduce_grads(run_ctx *c, float *grads) {
    const model *m = c->policy;
    int n = model_nparams(m);
    int64_t total = model_numel(m), lo = 0, end = 0;
    int cls = n ? is_expert(model_param_at(m, 0)->name) : 0;
    base_status s = BASE_OK;
    /* runs of one class in arena order: experts over the expert-data-parallel
     * group, the rest (arena gaps included) over the world */
    for (int i = 0; i <= n && !s; i++) {
        const model_param *p = i < n ? model_param_at(m, i) : NULL;
        if (p && p->offset < end)
            return base_err_set(BASE_ERR_INVALID, "expert parallelism: parameter %s at %lld before the end %lld of "
                                "the previous one (the arena is not in table order)",
                                p->name, (long long)p->offset, (long long)end);
        int k = p ? is_expert(p->name) : !cls;
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
        part[is_expert(o->params[i].name)] += o->ops->sumsq(&g);
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

base_status run_ep_write_weights(run_ctx *c, const model *m, const char *dir, const char *stem, uint64_t shard_bytes) {
    model_param *t;
    int *g, ng = run_ep_whole_table(m, &t, &g);
    st_plan *p = NULL;
    base_status s = run_ckpt_weights_plan(t, ng, stem, shard_bytes == UINT64_MAX ? 0 : shard_bytes, &p);
    s = run_agree(c, s, "laying out the checkpoint's weight files");
    if (!s && run_writes(c)) s = st_plan_create(p, dir);
    s = run_agree(c, s, "creating the checkpoint's weight files");
    if (!s) {
        /* rank 0 writes the non-expert tensors, EP group 0 (ranks 0 .. EP - 1) its experts */
        st_part *w = st_part_open(p, dir, run_ckpt_f32_buf(0));
        ep_src src = {m, t, g};
        for (int i = 0; i < ng && !s; i++) {
            int mine = g[i] >= 0 && (is_expert(t[i].name) ? c->rank < c->ep : c->rank == 0);
            if (mine) s = st_part_put(w, i, 0, (uint64_t)t[i].numel * sizeof(float), fill_local, &src);
        }
        base_status e = st_part_close(w, NULL);
        if (!s) s = e;
        s = run_agree(c, s, "writing this rank's tensors of the checkpoint's weights");
        if (!s && run_writes(c)) s = st_plan_commit(p, dir);
        s = run_agree(c, s, "renaming the checkpoint's weight files into place");
        if (s && run_writes(c)) st_plan_abandon(p, dir);
    }
    st_plan_free(p);
    free(t), free(g);
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
