/*
 * MoE expert load, DeepSeek-V3's auxiliary-loss-free balancing and its
 * sequence-wise balance loss's bookkeeping (run_internal.h,
 * docs/training.md "MoE expert load and balancing").
 *
 * The counts are integers from the forward's own expert plan, so their sum
 * over the ranks is exact: every rank gets the same global loads and makes
 * the same bias step (tech report §2.1.2: b_i += gamma sign(mean - load_i),
 * written here as sign(total - E load_i), exact in integers; sign(0) = 0).
 */
#include <stdlib.h>
#include <string.h>

#include "run_internal.h"

base_status run_moe_init(run_ctx *c, const recipe_train_cfg *train, run_moe *mo) {
    memset(mo, 0, sizeof *mo);
    const model_config *mc = model_cfg(c->policy);
    int L = mc->num_hidden_layers, any = 0;
    for (int l = 0; l < L; l++) any |= model_layer_is_moe(mc, l);
    mo->speed = train->router_bias_update_speed;
    mo->aux_coef = train->router_aux_loss_coef;
    if (!any) return BASE_OK;
    if (mo->speed > 0 && (c->lora || (!model_params(c->policy) && !model_arena_released(c->policy))))
        return base_err_set(BASE_ERR_UNSUPPORTED,
                            "router_bias_update_speed %g moves e_score_correction_bias, a base weight: it needs full "
                            "fine-tuning (a LoRA run saves only the adapter); set it to 0",
                            mo->speed);
    mo->L = L;
    mo->E = mc->n_routed_experts;
    size_t n = (size_t)L * (size_t)mo->E;
    mo->moe = base_xcalloc((size_t)L, 1);
    for (int l = 0; l < L; l++) mo->moe[l] = (uint8_t)model_layer_is_moe(mc, l);
    mo->opt = base_xcalloc(n, sizeof(int64_t));
    mo->step = base_xcalloc(n, sizeof(int64_t));
    mo->delta = base_xcalloc((size_t)mo->E, sizeof(float));
    mo->scratch = base_xcalloc((size_t)mo->E, sizeof(float));
    return BASE_OK;
}

void run_moe_free(run_moe *mo) {
    free(mo->moe), free(mo->opt), free(mo->step), free(mo->delta), free(mo->scratch);
    memset(mo, 0, sizeof *mo);
}

void run_moe_step_reset(run_moe *mo) {
    if (!mo->L) return;
    memset(mo->step, 0, (size_t)mo->L * (size_t)mo->E * sizeof(int64_t));
    mo->step_pairs[0] = mo->step_pairs[1] = 0;
    mo->step_aux[0] = mo->step_aux[1] = 0;
}

void run_moe_aux_begin(run_moe *mo, model_train *tr, int64_t n_seqs) {
    if (mo->L && mo->aux_coef > 0 && n_seqs > 0) model_train_set_aux_coef(tr, (float)(mo->aux_coef / (double)n_seqs));
}

void run_moe_add(run_moe *mo, const model_train *tr, int nseq) {
    if (!mo->L) return;
    model_train_expert_load(tr, mo->opt, &mo->opt_pairs[0], &mo->opt_pairs[1]);
    if (mo->aux_coef > 0) {
        mo->opt_aux[0] += model_train_aux_loss(tr);
        mo->opt_aux[1] += nseq;
    }
}

/* The bias step of MoE layer l from its global loads. */
static base_status bias_step(run_ctx *c, run_moe *mo, int l) {
    const int64_t *load = mo->opt + (size_t)l * (size_t)mo->E;
    int64_t total = 0;
    for (int i = 0; i < mo->E; i++) total += load[i];
    float step = (float)mo->speed;
    for (int i = 0; i < mo->E; i++) {
        int64_t d = total - (int64_t)mo->E * load[i]; /* E (mean - load_i) */
        mo->delta[i] = d > 0 ? step : d < 0 ? -step : 0.0f;
    }
    char name[128];
    snprintf(name, sizeof name, "model.layers.%d.mlp.gate.e_score_correction_bias", l);
    return run_param_add(c, name, mo->delta, mo->scratch, mo->E);
}

base_status run_moe_update(run_ctx *c, run_moe *mo, int applied) {
    if (!mo->L) return BASE_OK;
    size_t n = (size_t)mo->L * (size_t)mo->E;
    base_status s = BASE_OK;
    if (c->world > 1) {
        s = dist_allreduce(c->host, mo->opt, n, DIST_I64, DIST_SUM);
        if (!s) s = dist_allreduce(c->host, mo->opt_pairs, 2, DIST_I64, DIST_SUM);
        if (!s && mo->aux_coef > 0) s = dist_allreduce(c->host, mo->opt_aux, 2, DIST_F64, DIST_SUM);
        if (s) return base_err_wrap(s, "summing the expert loads of %d ranks", c->world);
    }
    for (size_t k = 0; k < n; k++) mo->step[k] += mo->opt[k];
    mo->step_pairs[0] += mo->opt_pairs[0];
    mo->step_pairs[1] += mo->opt_pairs[1];
    mo->step_aux[0] += mo->opt_aux[0];
    mo->step_aux[1] += mo->opt_aux[1];
    mo->opt_aux[0] = mo->opt_aux[1] = 0;
    if (applied && mo->speed > 0)
        for (int l = 0; l < mo->L && !s; l++)
            if (mo->moe[l]) s = bias_step(c, mo, l);
    memset(mo->opt, 0, n * sizeof(int64_t));
    mo->opt_pairs[0] = mo->opt_pairs[1] = 0;
    return s;
}

static void put_num(cJSON *o, const char *k, double v) {
    cJSON_AddItemToObject(o, k, isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull());
}

/* max / mean of MoE layer l's loads in the logged step (NaN: no token). */
static double layer_ratio(const run_moe *mo, int l) {
    const int64_t *load = mo->step + (size_t)l * (size_t)mo->E;
    int64_t total = 0, max = 0;
    for (int i = 0; i < mo->E; i++) {
        total += load[i];
        if (load[i] > max) max = load[i];
    }
    return total > 0 ? (double)max * mo->E / (double)total : NAN;
}

void run_moe_put(const run_moe *mo, cJSON *line) {
    if (!mo->L) return;
    double worst = NAN;
    for (int l = 0; l < mo->L; l++) {
        double r = mo->moe[l] ? layer_ratio(mo, l) : NAN;
        if (!isnan(r) && (isnan(worst) || r > worst)) worst = r;
    }
    put_num(line, "moe/load_max_over_mean", worst);
    char key[96];
    for (int l = 0; l < mo->L; l++) {
        if (!mo->moe[l]) continue;
        snprintf(key, sizeof key, "moe/load_max_over_mean/layer_%d", l);
        put_num(line, key, layer_ratio(mo, l));
    }
    cJSON_AddNumberToObject(line, "moe/dropped_tokens", (double)(mo->step_pairs[0] - mo->step_pairs[1]));
    if (mo->aux_coef > 0)
        put_num(line, "moe/aux_loss", mo->step_aux[1] > 0 ? mo->aux_coef * mo->step_aux[0] / mo->step_aux[1] : NAN);
}
