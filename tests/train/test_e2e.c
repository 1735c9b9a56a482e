/* The training core on a tiny random DeepSeek-V3 model: rewards ->
 * advantages -> model forward -> GRPO loss -> model backward, checked
 * against finite differences of the whole loss along random parameter
 * directions; then a few AdamW steps on borrowed model arenas move the
 * policy towards the completions with positive advantages; and the SFT
 * loss over a packed row through the model. */
#include "common/test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "train/grpo.h"
#include "train/optim.h"
#include "train/sft.h"

static model *tiny_model(uint64_t seed) {
    const char *js =
        "{\"model_type\": \"deepseek_v3\", \"vocab_size\": 53, \"hidden_size\": 32, "
        "\"intermediate_size\": 40, \"moe_intermediate_size\": 12, \"num_hidden_layers\": 2, "
        "\"num_attention_heads\": 2, \"num_key_value_heads\": 2, \"n_shared_experts\": 1, "
        "\"n_routed_experts\": 4, \"num_experts_per_tok\": 2, \"n_group\": 2, \"topk_group\": 1, "
        "\"routed_scaling_factor\": 2.5, \"kv_lora_rank\": 16, \"q_lora_rank\": 24, "
        "\"qk_nope_head_dim\": 8, \"qk_rope_head_dim\": 8, \"v_head_dim\": 10, "
        "\"first_k_dense_replace\": 1, \"norm_topk_prob\": true, \"max_position_embeddings\": 64, "
        "\"rms_norm_eps\": 1e-6, \"rope_theta\": 10000}";
    cJSON *j = cJSON_Parse(js);
    model_config c;
    assert_int_equal(model_config_parse(j, "config.json", &c), BASE_OK);
    cJSON_Delete(j);
    model *m = NULL;
    assert_int_equal(model_init_random(&c, ops_cpu(), seed, 0.1f, NULL, &m), BASE_OK);
    /* routing biases far apart so that no expert choice flips under the
     * finite-difference perturbation (the choice is not differentiable) */
    float *p = model_params(m);
    int E = model_cfg(m)->n_routed_experts;
    for (int i = 0; i < model_nparams(m); i++) {
        const model_param *mp = model_param_at(m, i);
        if (!mp->trainable)
            for (int e = 0; e < E; e++) p[mp->offset + e] = 3.0f * ldexpf(1.0f, (e * 5 + i) % E);
    }
    return m;
}

/* Two prompts x G = 2 completions, packed as 4 sequences prompt+completion. */
enum { S = 4, G = 2, MAXN = 64 };
static const int PROMPT[S] = {3, 3, 4, 4}, COMP[S] = {4, 5, 3, 6};

typedef struct {
    int32_t ids[MAXN], cu[S + 1], targets[MAXN];
    int64_t n;            /* model tokens */
    int64_t off[S + 1];   /* completion tokens, packed */
    int64_t pos_of[MAXN]; /* completion token k -> model position predicting it */
    int64_t nc;
    float adv[S];
} e2e_batch;

static void make_batch(e2e_batch *b, int32_t vocab) {
    int64_t n = 0, k = 0;
    b->cu[0] = 0;
    b->off[0] = 0;
    for (int s = 0; s < S; s++) {
        int len = PROMPT[s] + COMP[s];
        for (int i = 0; i < len; i++) {
            b->ids[n + i] = (int32_t)((s * 11 + i * 7 + 5) % vocab);
            b->targets[n + i] = -1;
        }
        for (int j = 0; j < COMP[s]; j++) { /* completion token j at P + j, predicted at P + j - 1 */
            int64_t at = n + PROMPT[s] - 1 + j;
            b->targets[at] = b->ids[at + 1];
            b->pos_of[k++] = at;
        }
        n += len;
        b->cu[s + 1] = (int32_t)n;
        b->off[s + 1] = k;
    }
    b->n = n;
    b->nc = k;
    /* rewards: the first completion of each prompt is right */
    grpo_config c;
    grpo_config_default(&c);
    float r[S] = {1, 0, 0, 1};
    assert_int_equal(grpo_advantages(&c, r, S, 1, NULL, G, b->adv, NULL, NULL), BASE_OK);
}

typedef struct {
    const grpo_config *cfg;
    const e2e_batch *b;
    const float *old, *ref;
} e2e_loss;

/* Forward + GRPO loss; with g (model-position gradients [n]) non-NULL also
 * the per-token upstream gradients for the backward. */
static double grpo_of_model(model_train *tr, const e2e_loss *L, float *g_pos, float *ge_pos) {
    const e2e_batch *b = L->b;
    model_batch mb = {.nseq = S, .ids = b->ids, .cu_seqlens = b->cu, .targets = b->targets, .logit_scale = 1.0f};
    assert_int_equal(model_forward(tr, &mb), BASE_OK);
    float lp_pos[MAXN], en_pos[MAXN], lp[MAXN], en[MAXN], g[MAXN], ge[MAXN];
    model_train_download(tr, lp_pos, en_pos);
    for (int64_t k = 0; k < b->nc; k++) lp[k] = lp_pos[b->pos_of[k]], en[k] = en_pos[b->pos_of[k]];
    grpo_batch gb = {S, b->off, NULL, NULL, b->adv, lp, L->old, L->ref, en, NULL, NULL};
    grpo_norm nm = {.n_seqs = S, .n_tokens = b->nc, .n_micro = 1};
    grpo_loss_stats st;
    assert_int_equal(grpo_loss(L->cfg, &gb, &nm, g, ge, &st), BASE_OK);
    if (g_pos) {
        memset(g_pos, 0, (size_t)b->n * 4);
        memset(ge_pos, 0, (size_t)b->n * 4);
        for (int64_t k = 0; k < b->nc; k++) g_pos[b->pos_of[k]] = g[k], ge_pos[b->pos_of[k]] = ge[k];
    }
    return st.loss;
}

static void fd_case(const grpo_config *cfg) {
    model *m = tiny_model(5);
    e2e_batch b;
    make_batch(&b, (int32_t)model_cfg(m)->vocab_size);
    model_train_limits lim = {.max_tokens = MAXN, .max_seqs = S};
    model_train *tr = NULL;
    assert_int_equal(model_train_new(m, &lim, &tr), BASE_OK);
    /* old and reference logprobs near the current ones */
    float lp_pos[MAXN], old[MAXN], ref[MAXN], noise[MAXN];
    model_batch mb = {.nseq = S, .ids = b.ids, .cu_seqlens = b.cu, .targets = b.targets, .logit_scale = 1.0f};
    assert_int_equal(model_forward(tr, &mb), BASE_OK);
    model_train_download(tr, lp_pos, NULL);
    test_rand_f32(noise, b.nc, 31, 0.25f);
    for (int64_t k = 0; k < b.nc; k++) old[k] = lp_pos[b.pos_of[k]] + noise[k];
    test_rand_f32(noise, b.nc, 32, 0.3f);
    for (int64_t k = 0; k < b.nc; k++) ref[k] = lp_pos[b.pos_of[k]] + noise[k];
    e2e_loss L = {cfg, &b, grpo_needs_old_logp(cfg) ? old : NULL, grpo_needs_ref_logp(cfg) ? ref : NULL};

    float g_pos[MAXN], ge_pos[MAXN];
    grpo_of_model(tr, &L, g_pos, ge_pos);
    float *grads = model_grads_new(m);
    model_backward(tr, g_pos, ge_pos, grads);
    int64_t P = model_numel(m);
    float *p = model_params(m), *p0 = malloc((size_t)P * 4), *v = malloc((size_t)P * 4);
    memcpy(p0, p, (size_t)P * 4);
    for (int dir = 0; dir < 2; dir++) {
        test_rand_f32(v, P, 70 + (uint64_t)dir, 1.0f);
        for (int i = 0; i < model_nparams(m); i++) { /* each tensor moves by the same relative amount */
            const model_param *mp = model_param_at(m, i);
            double ss = 0;
            for (int64_t k = 0; k < mp->numel; k++) ss += (double)p0[mp->offset + k] * p0[mp->offset + k];
            float rms = mp->trainable ? (float)sqrt(ss / (double)mp->numel) : 0.0f;
            for (int64_t k = 0; k < mp->numel; k++) v[mp->offset + k] *= rms;
        }
        double an = 0;
        for (int64_t k = 0; k < P; k++) an += (double)grads[k] * v[k];
        double eps = 1e-3, l[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            for (int64_t k = 0; k < P; k++) p[k] = p0[k] + (float)((sgn ? -eps : eps) * v[k]);
            l[sgn] = grpo_of_model(tr, &L, NULL, NULL);
        }
        memcpy(p, p0, (size_t)P * 4);
        double fd = (l[0] - l[1]) / (2 * eps), rel = fabs(fd - an) / fmax(fabs(an), 1e-3);
        printf("grpo+model fd [%s, %s, beta %g, ent %g] dir %d: analytic %+.6e fd %+.6e rel %.2e\n",
               grpo_loss_type_name(cfg->loss_type), grpo_is_level_name(cfg->importance_sampling_level),
               cfg->beta, cfg->entropy_coef, dir, an, fd, rel);
        /* float32 forward, central differences at 1e-3 of each tensor's RMS:
         * measured <= 7e-5 on these cases; a wrong term is off by O(1) */
        assert_true(rel < 1e-3);
    }
    model_ops(m)->free(grads);
    free(p0), free(v);
    model_train_free(tr);
    model_free(m);
}

static void test_fd_grpo_through_model(void **state) {
    (void)state;
    grpo_config c;
    grpo_config_default(&c);
    c.num_iterations = 2; /* off-policy: ratios away from 1 */
    c.beta = 0.04;
    c.entropy_coef = 0.01;
    c.epsilon_high = 0.28;
    fd_case(&c);
    c.loss_type = GRPO_LOSS_DAPO;
    c.importance_sampling_level = GRPO_IS_SEQUENCE;
    c.kl_estimator = GRPO_KL_K2;
    fd_case(&c);
}

/* sum_i A_i * mean_t logp_it: what GRPO steps should increase */
static double advantage_weighted_logp(model_train *tr, const e2e_batch *b) {
    model_batch mb = {.nseq = S, .ids = b->ids, .cu_seqlens = b->cu, .targets = b->targets, .logit_scale = 1.0f};
    assert_int_equal(model_forward(tr, &mb), BASE_OK);
    float lp_pos[MAXN];
    model_train_download(tr, lp_pos, NULL);
    double s = 0;
    for (int i = 0; i < S; i++) {
        double m = 0;
        for (int64_t k = b->off[i]; k < b->off[i + 1]; k++) m += lp_pos[b->pos_of[k]];
        s += b->adv[i] * m / (double)(b->off[i + 1] - b->off[i]);
    }
    return s;
}

static void test_grpo_steps(void **state) {
    (void)state;
    model *m = tiny_model(6);
    e2e_batch b;
    make_batch(&b, (int32_t)model_cfg(m)->vocab_size);
    model_train_limits lim = {.max_tokens = MAXN, .max_seqs = S};
    model_train *tr = NULL;
    assert_int_equal(model_train_new(m, &lim, &tr), BASE_OK);
    /* the optimizer borrows the model's arenas, trainable tensors only */
    optim_param_spec *specs = calloc((size_t)model_nparams(m), sizeof *specs);
    int n = 0;
    for (int i = 0; i < model_nparams(m); i++) {
        const model_param *mp = model_param_at(m, i);
        if (!mp->trainable || mp->mtp) continue;
        specs[n++] = (optim_param_spec){mp->name, mp->numel, mp->offset};
    }
    float *grads = model_grads_new(m);
    optim_config oc;
    optim_config_default(&oc);
    oc.learning_rate = 3e-3;
    oc.lr_scheduler_type = OPTIM_SCHED_CONSTANT;
    optim o;
    assert_int_equal(optim_init_arena(&o, model_ops(m), &oc, specs, n, NULL, model_params(m), grads,
                                      model_numel(m)), BASE_OK);
    const model_param *bias = NULL;
    for (int i = 0; i < model_nparams(m); i++)
        if (!model_param_at(m, i)->trainable) bias = model_param_at(m, i);
    assert_non_null(bias);
    float bias0 = model_params(m)[bias->offset];
    grpo_config c;
    grpo_config_default(&c);
    e2e_loss L = {&c, &b, NULL, NULL};
    double before = advantage_weighted_logp(tr, &b);
    for (int k = 0; k < 5; k++) {
        float g_pos[MAXN], ge_pos[MAXN];
        grpo_of_model(tr, &L, g_pos, ge_pos);
        optim_zero_grad(&o);
        model_backward(tr, g_pos, ge_pos, grads);
        optim_step_info info;
        optim_step(&o, k, &info);
        assert_int_equal(info.skipped, 0);
        assert_true(info.grad_norm > 0);
    }
    double after = advantage_weighted_logp(tr, &b);
    printf("sum A * mean logp: %.6f -> %.6f\n", before, after);
    assert_true(after > before + 1e-3);
    assert_true(model_params(m)[bias->offset] == bias0); /* frozen */
    optim_free(&o);
    model_ops(m)->free(grads);
    free(specs);
    model_train_free(tr);
    model_free(m);
}

/* SFT through the model: two samples packed in one row; the loss mask
 * comes from the packer, the model scores the next token of each segment,
 * and finite differences check dL/dparams along a random direction. */
static void test_sft_through_model(void **state) {
    (void)state;
    model *m = tiny_model(8);
    int32_t a[7] = {1, 2, 3, 4, 5, 6, 7}, bb[5] = {9, 8, 7, 6, 5};
    uint8_t ma[7] = {0, 0, 0, 1, 1, 1, 1}, mbk[5] = {0, 1, 1, 1, 1};
    sft_sample smp[2] = {{a, ma, 7}, {bb, mbk, 5}};
    int64_t lens[2] = {7, 5};
    sft_pack pk;
    assert_int_equal(sft_pack_plan(lens, 2, 16, &pk), BASE_OK);
    assert_int_equal(pk.n_rows, 1);
    int32_t ids[16], tgt[16];
    uint8_t lm[16];
    assert_int_equal(sft_pack_row(&pk, 0, smp, 0, ids, NULL, NULL, tgt, lm), BASE_OK);
    int64_t N = pk.row_used[0];
    int32_t cu[3];
    assert_int_equal(sft_pack_row_cu_seqlens(&pk, 0, cu), 2);
    assert_int_equal(cu[1], 7);
    assert_int_equal(cu[2], N);
    model_train_limits lim = {.max_tokens = 16, .max_seqs = 2};
    model_train *tr = NULL;
    assert_int_equal(model_train_new(m, &lim, &tr), BASE_OK);
    model_batch mb = {.nseq = 2, .ids = ids, .cu_seqlens = cu, .targets = tgt, .logit_scale = 1.0f};
    int64_t ntok = sft_count_loss_tokens(lm, N);
    assert_int_equal(ntok, 4 + 4); /* a: tokens 3..6 are targets, b: tokens 1..4 */
    float lp[16], g[16];
    sft_loss_stats st;
    assert_int_equal(model_forward(tr, &mb), BASE_OK);
    model_train_download(tr, lp, NULL);
    assert_int_equal(sft_loss(lp, lm, N, ntok, g, &st), BASE_OK);
    float *grads = model_grads_new(m);
    model_backward(tr, g, NULL, grads);
    int64_t P = model_numel(m);
    float *p = model_params(m), *p0 = malloc((size_t)P * 4), *v = malloc((size_t)P * 4);
    memcpy(p0, p, (size_t)P * 4);
    test_rand_f32(v, P, 81, 1.0f);
    for (int i = 0; i < model_nparams(m); i++) {
        const model_param *mp = model_param_at(m, i);
        double ss = 0;
        for (int64_t k = 0; k < mp->numel; k++) ss += (double)p0[mp->offset + k] * p0[mp->offset + k];
        float rms = mp->trainable ? (float)sqrt(ss / (double)mp->numel) : 0.0f;
        for (int64_t k = 0; k < mp->numel; k++) v[mp->offset + k] *= rms;
    }
    double an = 0;
    for (int64_t k = 0; k < P; k++) an += (double)grads[k] * v[k];
    double eps = 1e-3, l[2];
    for (int sgn = 0; sgn < 2; sgn++) {
        for (int64_t k = 0; k < P; k++) p[k] = p0[k] + (float)((sgn ? -eps : eps) * v[k]);
        assert_int_equal(model_forward(tr, &mb), BASE_OK);
        model_train_download(tr, lp, NULL);
        assert_int_equal(sft_loss(lp, lm, N, ntok, g, &st), BASE_OK);
        l[sgn] = st.loss;
    }
    memcpy(p, p0, (size_t)P * 4);
    double fd = (l[0] - l[1]) / (2 * eps), rel = fabs(fd - an) / fmax(fabs(an), 1e-3);
    printf("sft+model fd: analytic %+.6e fd %+.6e rel %.2e\n", an, fd, rel);
    assert_true(rel < 1e-3); /* as above */
    model_ops(m)->free(grads);
    free(p0), free(v);
    sft_pack_free(&pk);
    model_train_free(tr);
    model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fd_grpo_through_model),
        cmocka_unit_test(test_grpo_steps),
        cmocka_unit_test(test_sft_through_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
