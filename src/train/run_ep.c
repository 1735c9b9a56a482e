/*
 * Expert parallelism on the trainer's side (docs/distributed.md, "Expert
 * parallelism"): the recipe key expert_parallel_size (EP) checked against
 * the world size and the model, and the plans of grpo plan --ep. Runs with
 * EP > 1 are refused at start after these checks: the trainer does not yet
 * make the groups (dist_comm_split), fill the model's exchange functions
 * (model_ep), sum expert gradients over the expert-data-parallel group or
 * write every rank's experts into checkpoints.
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
    /* the model holds its experts and exchanges rows (model_ep), but the
     * trainer does not yet sum expert gradients over the expert-DP group,
     * take the global gradient norm, or write the experts of every rank into
     * checkpoints: refused rather than trained wrongly */
    return base_err_set(BASE_ERR_UNSUPPORTED,
                        "expert_parallel_size = %lld: training with expert parallelism is not built on the trainer's "
                        "side yet (expert gradients over the expert-data-parallel group, checkpoints of every rank's "
                        "experts); expert_parallel_size = 1 runs, and `grpo plan --ep` plans EP > 1",
                        (long long)ep);
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
