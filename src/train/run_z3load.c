/*
 * ZeRO 3's sharded load (docs/distributed.md, "ZeRO stage 3"): a run whose
 * policy is next trained at zero_stage 3 never holds the whole model on a
 * rank. The policy is made without its arena (model_load_opts.no_arena:
 * config, parameter table, layout, every tensor's presence and shape
 * checked, nothing read), the run's shard state is opened for it
 * (run_zero3_open: this rank's parameter shard, the windows, the unit
 * hook) and the shard [lo, hi) is filled from the files by
 * run_ckpt_read_range (only the tensors overlapping it, converted piece by
 * piece), or drawn with model_init_random's values for a run from scratch.
 * The stage then takes the shard over (run_zero2_new) with no copy and no
 * release; stages before it (eval, sample) generate through unit gathers.
 * With expert parallelism the policy is the EP index's model (its experts
 * only, global names) and the shard is by class (run_zero.c: the routed
 * experts' elements over the expert-data-parallel group, the rest over the
 * world): each of its arena pieces is read or drawn as a range, and
 * run_zero_ep_optim_new takes it over.
 */
#include <stdlib.h>

#include "run_internal.h"

int run_zero3_load_sharded(const run_ctx *c, int first) {
    if (c->cfg->lora.set) return 0;
    for (int i = first; i < c->cfg->n_stages; i++) {
        const recipe_stage_cfg *st = &c->cfg->stages[i];
        if (i > first && st->init_from) return 0; /* loaded again before anything trains it */
        const recipe_train_cfg *t = st->type == RECIPE_STAGE_GRPO  ? &st->grpo.train
                                    : st->type == RECIPE_STAGE_SFT ? &st->sft.train
                                                                   : NULL;
        if (t) return t->zero_stage == 3;
    }
    return 0;
}

/* model_init_random's values of this rank's range, through a 1 MiB host buffer. */
static void draw_range(run_ctx *c, const model *m, float *shard, int64_t lo, int64_t hi) {
    int64_t step = 1 << 18;
    float *host = base_xmalloc((size_t)step * sizeof(float));
    for (int64_t e = lo; e < hi; e += step) {
        int64_t n = hi - e < step ? hi - e : step;
        model_init_random_range(m, c->seed, (float)c->cfg->init_std, e, e + n, host);
        c->ops->upload(shard + (e - lo), host, (size_t)n * sizeof(float));
    }
    free(host);
}

/* Expert parallelism: the shard is the class pieces (run_zero_ep_parts),
 * each an arena range of this EP index's model (global expert names) at
 * its compact index, filled as one range would be. */
static base_status fill_ep(run_ctx *c, const model *m, const char *dir, int random, float *shard) {
    int64_t *pt;
    int n = run_zero_ep_parts(c, &pt);
    base_status s = BASE_OK;
    if (random) {
        for (int i = 0; i < n; i++) draw_range(c, m, shard + pt[3 * i + 2], pt[3 * i], pt[3 * i + 1]);
    } else {
        run_ckpt_range *r = base_xcalloc((size_t)(n ? n : 1), sizeof *r);
        for (int i = 0; i < n; i++)
            r[i] = (run_ckpt_range){.params = model_param_at(m, 0), .nparams = model_nparams(m), .lo = pt[3 * i],
                                    .hi = pt[3 * i + 1], .shard = shard + pt[3 * i + 2], .ops = c->ops};
        s = run_ckpt_read_ranges(dir, "model", r, n, NULL);
        free(r);
    }
    free(pt);
    return s;
}

base_status run_zero3_load(run_ctx *c, const char *dir, int random, model **out) {
    *out = NULL;
    model_load_opts lo = c->load;
    lo.no_arena = 1;
    model *m = NULL;
    base_status s;
    if (random) {
        model_config cfg;
        s = model_config_load(dir, &cfg);
        if (!s) s = model_init_random(&cfg, c->ops, c->seed, (float)c->cfg->init_std, &lo, &m);
    } else {
        s = model_load(dir, c->ops, &lo, &m);
    }
    if (s) return s;
    /* the old policy and its shards go first: the new one is never beside them */
    run_zero3_drop(c);
    model_free(c->policy);
    c->policy = m;
    float *shard;
    int64_t a, b;
    s = run_zero3_open(c, &shard, &a, &b);
    if (s) return s;
    c->ops->zero(shard, (size_t)(b > a ? b - a : 1) * sizeof(float)); /* arena gaps, as a loaded arena's */
    if (c->ep > 1) {
        s = fill_ep(c, m, dir, random, shard);
        if (s) return base_err_wrap(s, "rank %d reading its ZeRO 3 shard (expert parallelism %d: its EP index's "
                                    "experts over the expert-data-parallel group, the rest over the world) of %s",
                                    c->rank, c->ep, dir);
    } else if (random) {
        draw_range(c, m, shard, a, b);
    } else {
        run_ckpt_range r = {.params = model_param_at(m, 0), .nparams = model_nparams(m), .lo = a, .hi = b,
                            .shard = shard, .ops = c->ops};
        s = run_ckpt_read_range(dir, "model", &r, NULL);
        if (s) return base_err_wrap(s, "rank %d reading its ZeRO 3 range [%lld, %lld) of %s", c->rank, (long long)a,
                                    (long long)b, dir);
    }
    *out = m;
    return BASE_OK;
}
