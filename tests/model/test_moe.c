/*
 * MoE expert load and the sequence-wise balance loss (issue 15):
 *   - model_train_expert_load against a host recount of the routing the
 *     forward saved (each MoE layer's chosen experts, idx), with and
 *     without recomputation, accumulated over two forwards;
 *   - the moe_aux_fwd / moe_aux_bwd ops against a straightforward double
 *     reference of L = sum_i f_i P_i per sequence and its central finite
 *     differences in double;
 *   - the whole model with model_train_set_aux_coef: the loss against the
 *     reference on each layer's saved router logits, and the gradient of
 *     coef * L along random parameter directions against finite
 *     differences of the model's own forward (as test_model's fd_model).
 * White box: the saved idx and z are read through model/internal.h.
 */
#include "common/test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/internal.h"
#include "model/model.h"

static model *tiny_moe(uint64_t seed) {
    char *js = test_tiny_config("\"num_hidden_layers\": 4");
    cJSON *j = cJSON_Parse(js);
    model_config c;
    if (model_config_parse(j, "config.json", &c)) fail_msg("%s", base_err_msg());
    cJSON_Delete(j);
    free(js);
    model *m = NULL;
    assert_int_equal(model_init_random(&c, ops_cpu(), seed, 0.3f, NULL, &m), BASE_OK);
    return m;
}

enum { N = 29 };

/* counts[l E + i] recounted from the idx each MoE layer saved (recompute 0). */
static void recount(const model_train *tr, int64_t *counts) {
    const model_config *c = model_cfg(tr->m);
    int E = c->n_routed_experts, K = c->num_experts_per_tok;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        if (!model_layer_is_moe(c, l)) continue;
        const int32_t *idx = tr->acts[l].idx.data; /* CPU backend: host memory */
        for (int64_t t = 0; t < tr->n * K; t++) {
            assert_true(idx[t] >= 0 && idx[t] < E);
            counts[(int64_t)l * E + idx[t]]++;
        }
    }
}

static void test_expert_load_recount(void **s) {
    (void)s;
    model *m = tiny_moe(11);
    const model_config *c = model_cfg(m);
    int L = c->num_hidden_layers, E = c->n_routed_experts, K = c->num_experts_per_tok;
    int32_t ids[N], cu[3] = {0, 12, N};
    for (int i = 0; i < N; i++) ids[i] = (i * 23 + 5) % (int32_t)c->vocab_size;
    model_batch b = {.nseq = 2, .ids = ids, .cu_seqlens = cu};
    int64_t *want = calloc((size_t)(L * E), sizeof(int64_t));
    int64_t *got[2];
    for (int rc = 0; rc < 2; rc++) {
        model_train_limits lim = {.max_tokens = N, .max_seqs = 2, .recompute = rc};
        model_train *tr = NULL;
        assert_int_equal(model_train_new(m, &lim, &tr), BASE_OK);
        got[rc] = calloc((size_t)(L * E), sizeof(int64_t));
        int64_t routed = 0, processed = 0;
        assert_int_equal(model_forward(tr, &b), BASE_OK);
        if (!rc) recount(tr, want);
        model_train_expert_load(tr, got[rc], &routed, &processed);
        /* a second forward of the first sequence alone adds to the tallies */
        model_batch b1 = {.nseq = 1, .ids = ids, .cu_seqlens = cu};
        assert_int_equal(model_forward(tr, &b1), BASE_OK);
        if (!rc) recount(tr, want);
        model_train_expert_load(tr, got[rc], &routed, &processed);
        int moe_layers = L - 1;
        assert_int_equal(routed, (int64_t)moe_layers * (N + 12) * K);
        assert_int_equal(processed, routed); /* no capacity limit drops a pair */
        model_train_free(tr);
    }
    int distinct = 0;
    for (int l = 0; l < L; l++) {
        int64_t sum = 0;
        for (int i = 0; i < E; i++) {
            int64_t w = want[l * E + i];
            if (w != got[0][l * E + i] || w != got[1][l * E + i])
                fail_msg("layer %d expert %d: recount %lld, load %lld (recompute %lld)", l, i, (long long)w,
                         (long long)got[0][l * E + i], (long long)got[1][l * E + i]);
            sum += w;
            distinct += w > 0;
        }
        assert_int_equal(sum, model_layer_is_moe(c, l) ? (int64_t)(N + 12) * K : 0);
    }
    assert_true(distinct > E); /* the loads spread over several experts: the recount means something */
    free(want), free(got[0]), free(got[1]);
    model_free(m);
}

/* ---- the balance loss ---------------------------------------------------- */

/* L of one sequence [t0, t1) by the definition, in double. */
static double ref_seq_loss(const double *z, const int32_t *idx, int64_t t0, int64_t t1, int E, int K) {
    double T = (double)(t1 - t0), L = 0;
    if (t1 <= t0) return 0;
    for (int i = 0; i < E; i++) {
        double chosen = 0, P = 0;
        for (int64_t t = t0; t < t1; t++) {
            for (int k = 0; k < K; k++) chosen += idx[t * K + k] == i;
            double si = 1 / (1 + exp(-z[t * E + i])), sum = 0;
            for (int j = 0; j < E; j++) sum += 1 / (1 + exp(-z[t * E + j]));
            P += si / sum / T;
        }
        double f = E * chosen / (K * T);
        L += f * P;
    }
    return L;
}

static double ref_loss(const double *z, const int32_t *idx, const int32_t *cu, int S, int E, int K, double *per) {
    double L = 0;
    for (int s = 0; s < S; s++) {
        double v = ref_seq_loss(z, idx, cu[s], cu[s + 1], E, K);
        if (per) per[s] = v;
        L += v;
    }
    return L;
}

static void test_aux_ops(void **st) {
    (void)st;
    enum { AN = 23, E = 12, K = 3, S = 3 };
    const struct ops *O = ops_cpu();
    int32_t cu[S + 1] = {0, 9, 9, AN}, idx[AN * K];
    float z[AN * E], dz[AN * E], dz0[AN * E], loss[S];
    double zd[AN * E], per[S];
    test_rand_f32(z, AN * E, 41, 3.0f);
    test_rand_f32(dz0, AN * E, 42, 1.0f);
    for (int t = 0; t < AN; t++)
        for (int k = 0; k < K; k++) idx[t * K + k] = (t * 5 + k * 4) % E; /* distinct per token; skewed loads */
    for (int i = 0; i < AN * E; i++) zd[i] = z[i];
    int64_t sz[2] = {AN, E}, si[2] = {AN, K}, sc[1] = {S + 1}, sl[1] = {S};
    tensor tz = tensor_make(z, TENSOR_F32, TENSOR_CPU, 2, sz), tdz = tensor_make(dz, TENSOR_F32, TENSOR_CPU, 2, sz);
    tensor ti = tensor_make(idx, TENSOR_I32, TENSOR_CPU, 2, si), tc = tensor_make(cu, TENSOR_I32, TENSOR_CPU, 1, sc);
    tensor tl = tensor_make(loss, TENSOR_F32, TENSOR_CPU, 1, sl);
    O->moe_aux_fwd(&tl, &tz, &ti, &tc);
    ref_loss(zd, idx, cu, S, E, K, per);
    for (int s = 0; s < S; s++) {
        printf("aux loss of sequence %d: op %.9g, reference %.9g\n", s, loss[s], per[s]);
        assert_true(fabs(loss[s] - per[s]) <= 1e-6 * fmax(1, fabs(per[s])));
    }
    assert_true(loss[1] == 0.0f && per[0] > 1.0); /* the empty sequence; a skewed one above balance (1) */
    /* the gradient, added to dz, against central differences of the reference */
    const float coef = 0.7f;
    memcpy(dz, dz0, sizeof dz);
    O->moe_aux_bwd(&tdz, &tz, &ti, &tc, coef);
    double worst = 0;
    for (int i = 0; i < AN * E; i++) {
        double h = 1e-5, keep = zd[i];
        zd[i] = keep + h;
        double lp = ref_loss(zd, idx, cu, S, E, K, NULL);
        zd[i] = keep - h;
        double lm = ref_loss(zd, idx, cu, S, E, K, NULL);
        zd[i] = keep;
        double fd = coef * (lp - lm) / (2 * h), an = (double)dz[i] - dz0[i];
        double err = fabs(an - fd) / fmax(1e-4, fabs(fd));
        if (err > worst) worst = err;
    }
    printf("aux gradient vs finite differences: worst relative error %.2e\n", worst);
    assert_true(worst < 1e-3);
}

/* The model with the balance loss on: its value against the reference on
 * the router logits each MoE layer saved, and the gradient of coef * L
 * (no other loss: g_logp = g_ent = 0) against finite differences. */
static void test_aux_model(void **st) {
    (void)st;
    model *m = tiny_moe(5);
    const model_config *c = model_cfg(m);
    int L = c->num_hidden_layers, E = c->n_routed_experts, K = c->num_experts_per_tok;
    enum { AN = 19 };
    int32_t ids[AN], cu[3] = {0, 7, AN};
    for (int i = 0; i < AN; i++) ids[i] = (i * 13 + 2) % (int32_t)c->vocab_size;
    float *p = model_params(m);
    int64_t P = model_numel(m);
    /* biases far apart: no expert choice flips under the perturbation */
    for (int i = 0; i < model_nparams(m); i++) {
        const model_param *mp = model_param_at(m, i);
        if (!mp->trainable)
            for (int e = 0; e < E; e++) p[mp->offset + e] = 3.0f * ldexpf(1.0f, (e * 5 + i) % E);
    }
    model_train_limits lim = {.max_tokens = AN, .max_seqs = 2};
    model_train *tr = NULL;
    assert_int_equal(model_train_new(m, &lim, &tr), BASE_OK);
    model_batch b = {.nseq = 2, .ids = ids, .cu_seqlens = cu};
    /* off by default: no loss, no gradient from it */
    float zero[AN] = {0};
    float *g = model_grads_new(m);
    assert_int_equal(model_forward(tr, &b), BASE_OK);
    assert_true(model_train_aux_loss(tr) == 0.0);
    model_backward(tr, zero, zero, g);
    for (int64_t k = 0; k < P; k++) assert_true(g[k] == 0.0f);
    const float coef = 2.0f;
    model_train_set_aux_coef(tr, coef);
    assert_int_equal(model_forward(tr, &b), BASE_OK);
    double got = model_train_aux_loss(tr), want = 0;
    double *zd = malloc((size_t)AN * E * sizeof(double));
    for (int l = 0; l < L; l++) {
        if (!model_layer_is_moe(c, l)) continue;
        const float *zl = tr->acts[l].z.data;
        for (int64_t i = 0; i < (int64_t)AN * E; i++) zd[i] = zl[i];
        want += ref_loss(zd, tr->acts[l].idx.data, cu, 2, E, K, NULL);
    }
    free(zd);
    printf("model aux loss %.9g, reference %.9g\n", got, want);
    assert_true(fabs(got - want) <= 1e-6 * want);
    model_backward(tr, zero, zero, g);
    float *p0 = malloc(P * 4), *v = malloc(P * 4);
    memcpy(p0, p, P * 4);
    for (int dir = 0; dir < 2; dir++) {
        test_rand_f32(v, P, 77 + dir, 1.0f);
        for (int i = 0; i < model_nparams(m); i++) { /* each tensor moved by the same relative amount */
            const model_param *mp = model_param_at(m, i);
            double ss = 0;
            for (int64_t k = 0; k < mp->numel; k++) ss += (double)p0[mp->offset + k] * p0[mp->offset + k];
            float rms = mp->trainable ? (float)sqrt(ss / mp->numel) : 0.0f;
            for (int64_t k = 0; k < mp->numel; k++) v[mp->offset + k] *= rms;
        }
        double an = 0, eps = 1e-3, l2[2];
        for (int64_t k = 0; k < P; k++) an += (double)g[k] * v[k];
        for (int sgn = 0; sgn < 2; sgn++) {
            for (int64_t k = 0; k < P; k++) p[k] = p0[k] + (float)((sgn ? -eps : eps) * v[k]);
            assert_int_equal(model_forward(tr, &b), BASE_OK);
            l2[sgn] = coef * model_train_aux_loss(tr);
        }
        memcpy(p, p0, P * 4);
        double fd = (l2[0] - l2[1]) / (2 * eps), rel = fabs(fd - an) / fmax(fabs(an), 1e-3);
        printf("model aux gradient dir %d: analytic %+.6e fd %+.6e rel %.2e\n", dir, an, fd, rel);
        assert_true(fabs(an) > 1e-3); /* the balance loss reaches the parameters */
        assert_true(rel < 1e-2);
    }
    free(p0), free(v);
    model_ops(m)->free(g);
    model_train_free(tr);
    model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expert_load_recount),
        cmocka_unit_test(test_aux_ops),
        cmocka_unit_test(test_aux_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
