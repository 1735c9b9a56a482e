/*
 * Expert parallelism on the trainer's side (docs/distributed.md, "Expert
 * parallelism"): the recipe key expert_parallel_size (EP) checked against
 * the world size and the model, the two groups it makes, and the exchange
 * functions the model's MoE layers call (model_ep, model.h).
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
#include <stdlib.h>
#include <string.h>

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

static base_status ex_counts(void *ctx, const int64_t *send, int64_t *recv, int n) {
    run_ctx *c = ctx;
    size_t *k = base_xmalloc((size_t)c->ep * sizeof *k);
    for (int p = 0; p < c->ep; p++) k[p] = (size_t)n;
    base_status s = dist_alltoallv(c->ep_host, send, k, recv, k, DIST_I64);
    free(k);
    return s ? base_err_wrap(s, "expert parallelism: the all-to-all of the MoE row counts") : BASE_OK;
}

static base_status ex_rows(void *ctx, const void *send, const int64_t *send_bytes, void *recv,
                           const int64_t *recv_bytes) {
    run_ctx *c = ctx;
    size_t *sc = base_xmalloc(2 * (size_t)c->ep * sizeof *sc), *rc = sc + c->ep;
    for (int p = 0; p < c->ep; p++) sc[p] = (size_t)send_bytes[p], rc[p] = (size_t)recv_bytes[p];
    base_status s = dist_alltoallv(c->ep_dev, send, sc, recv, rc, DIST_U8);
    free(sc);
    return s ? base_err_wrap(s, "expert parallelism: the all-to-all of the MoE rows") : BASE_OK;
}

static base_status ex_any(void *ctx, int local, int *any) {
    run_ctx *c = ctx;
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
    c->ep_dev = c->ep_host = c->edp_dev = c->edp_host = NULL;
    c->load.ep = NULL;
    c->ep = 0;
}
