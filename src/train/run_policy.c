/*
 * What trains in a run: the policy's parameters (full fine-tuning: the
 * model's trainable, non-MTP parameters and a gradient arena of the
 * model's layout) or, with the recipe's lora table, the adapter's A and B
 * (their gradient arena is the adapter's own): the optimizer over them and
 * the refresh of the compute weights after a step. Shared by the GRPO and
 * SFT stages.
 */
#include <stdlib.h>
#include <string.h>

#include "run_internal.h"

float *run_policy_grads(run_ctx *c, const recipe_train_cfg *train) {
    return c->lora || train->zero_stage >= 2 ? NULL : model_grads_new(c->policy);
}

void run_optim_free(run_ctx *c, optim *o) {
    run_zero2_free(c->z2);
    c->z2 = NULL;
    optim_free(o);
}

base_status run_param_update(run_ctx *c, const char *name, void (*fn)(float *vals, int64_t numel, void *ctx),
                             void *ctx) {
    const model_param *p = model_param_find(c->policy, name);
    if (!p) return base_err_set(BASE_ERR_INVALID, "parameter update: the policy has no parameter '%s'", name);
    if (model_arena_released(c->policy)) return run_zero3_param_update(c, p, fn, ctx); /* ZeRO 3: sharded */
    float *arena = model_params(c->policy);
    if (!arena)
        return base_err_set(BASE_ERR_UNSUPPORTED, "parameter update of '%s': the policy is frozen (%s, no master "
                            "weights)", name, model_precision_name(model_get_precision(c->policy)));
    size_t bytes = (size_t)p->numel * sizeof(float);
    float *host = base_xmalloc(bytes ? bytes : sizeof(float));
    c->ops->download(host, arena + p->offset, bytes);
    fn(host, p->numel, ctx);
    c->ops->upload(arena + p->offset, host, bytes);
    free(host);
    model_sync_compute(c->policy);
    return BASE_OK;
}

void run_sync_policy(run_ctx *c) {
    if (c->lora) model_lora_sync(c->lora);
    else model_sync_compute(c->policy);
}

base_status run_optim_new(run_ctx *c, const recipe_train_cfg *train, int64_t max_steps, float *grads, optim *o) {
    optim_config oc = train->optim;
    oc.max_steps = max_steps;
    if (train->zero_stage >= 2 && c->lora)
        return base_err_set(BASE_ERR_UNSUPPORTED,
                            "zero_stage = %lld with a LoRA adapter: the adapter's gradients and parameters are not "
                            "sharded (its arena is %lld parameters); use zero_stage = 1 (AdamW state sharded) or 0",
                            (long long)train->zero_stage, (long long)model_lora_numel(c->lora));
    if (c->lora) { /* the adapter's A and B, in its arena */
        model_lora *a = c->lora;
        int n = model_lora_nparams(a);
        optim_param_spec *specs = base_xcalloc((size_t)n, sizeof *specs);
        for (int i = 0; i < n; i++) {
            const model_param *p = model_lora_param_at(a, i);
            specs[i] = (optim_param_spec){p->name, p->numel, p->offset};
        }
        int64_t lo, hi, na = model_lora_numel(a);
        run_zero_shard(c, train, na, &lo, &hi);
        base_status s = optim_init_arena_shard(o, c->ops, &oc, specs, n, NULL, model_lora_params(a),
                                               model_lora_grads(a), na, lo, hi);
        free(specs);
        if (!s && train->zero_stage == 1) o->zero_shards = c->world, o->zero_rank = c->rank, o->zero_stage = 1;
        return s;
    }
    if (c->ep > 1 && train->zero_stage >= 2) return run_zero_ep_optim_new(c, &oc, (int)train->zero_stage, o);
    int n = model_nparams(c->policy), k = 0;
    optim_param_spec *specs = base_xcalloc((size_t)n, sizeof *specs);
    for (int i = 0; i < n; i++) {
        const model_param *p = model_param_at(c->policy, i);
        if (!p->trainable || p->mtp) continue;
        specs[k++] = (optim_param_spec){p->name, p->numel, p->offset};
    }
    int64_t lo, hi, na = model_numel(c->policy);
    run_zero_shard(c, train, na, &lo, &hi);
    base_status s = optim_init_arena_shard(o, c->ops, &oc, specs, k, NULL, model_params(c->policy), grads, na, lo, hi);
    free(specs);
    if (!s && train->zero_stage >= 1 && c->ep > 1) /* sharded within the expert-data-parallel group */
        o->zero_shards = c->world / c->ep, o->zero_rank = c->rank / c->ep, o->zero_stage = (int)train->zero_stage;
    else if (!s && train->zero_stage >= 1)
        o->zero_shards = c->world, o->zero_rank = c->rank, o->zero_stage = (int)train->zero_stage;
    if (!s && train->zero_stage >= 2) s = run_zero2_new(c, o, &c->z2);
    return s;
}

/* run_param_add at ZeRO 3: values += delta on the gathered tensor. */
typedef struct {
    const float *delta;
} add_ctx;

static void add_delta(float *vals, int64_t n, void *ctx) {
    const add_ctx *a = ctx;
    for (int64_t i = 0; i < n; i++) vals[i] += a->delta[i];
}

base_status run_param_add(run_ctx *c, const char *name, const float *delta, float *scratch, int64_t n) {
    const model_param *p = model_param_find(c->policy, name);
    if (!p) return base_err_set(BASE_ERR_INVALID, "the policy has no parameter %s", name);
    if (p->numel != n)
        return base_err_set(BASE_ERR_INVALID, "%s has %lld values, not %lld", name, (long long)p->numel, (long long)n);
    if (model_arena_released(c->policy)) { /* ZeRO 3: the tensor lives in the ranks' shards */
        add_ctx a = {delta};
        return run_zero3_param_update(c, p, add_delta, &a);
    }
    float *arena = model_params(c->policy);
    if (!arena || c->lora)
        return base_err_set(BASE_ERR_UNSUPPORTED, "%s: the policy's weights are frozen (LoRA or a frozen %s model)",
                            name, model_precision_name(model_get_precision(c->policy)));
    c->ops->download(scratch, arena + p->offset, (size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) scratch[i] += delta[i];
    c->ops->upload(arena + p->offset, scratch, (size_t)n * sizeof(float));
    return BASE_OK;
}
