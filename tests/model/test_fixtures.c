/*
 * The model against Hugging Face transformers references (float64):
 * shared/fixtures/hf-tiny-v3-a and the fixtures of tests/model/data/ made
 * by tests/model/gen/make_fixtures.py (other valid configs: no query LoRA,
 * 8 groups keep 3, unnormalised routing, two shared experts, several dense
 * layers, plain rope, YaRN mscale 0.707, rms_norm_eps 1e-5).
 *
 * For each fixture: full logits within 1e-4 absolute and token logprobs
 * within 1e-4 (both sequences packed in one batch); the training forward's
 * logp equal to the reference logprobs; greedy tokens identical when
 * generated with the latent cache (prefill, then decode steps); the loss
 * within 1e-5 and every parameter's gradient within 1e-3 relative L2 with
 * exact zeros where the reference is zero (also with recomputation).
 */
#include "common/test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/st.h"
#include "model/model.h"
#include "model/fixture_ref.h"

static void check_logits(const char *name) {
    char *dir = fixture_dir(name);
    model *m = NULL;
    if (model_load(dir, ops_cpu(), NULL, &m)) fail_msg("%s: %s", dir, base_err_msg());
    char *rp = base_path_join(dir, "reference.safetensors");
    st_file *ref = NULL;
    assert_int_equal(st_open(rp, &ref), BASE_OK);
    int64_t n0, n1;
    int32_t *a = ref_ids(ref, "input_ids.0", &n0), *b = ref_ids(ref, "input_ids.1", &n1);
    int32_t *ids = malloc((size_t)(n0 + n1) * sizeof(int32_t));
    memcpy(ids, a, (size_t)n0 * 4);
    memcpy(ids + n0, b, (size_t)n1 * 4);
    int32_t cu[3] = {0, (int32_t)n0, (int32_t)(n0 + n1)};
    int64_t V = model_cfg(m)->vocab_size;
    float *lg = malloc((size_t)((n0 + n1) * V) * sizeof(float)), *lp = malloc((size_t)(n0 + n1) * sizeof(float));
    assert_int_equal(model_forward_logits(m, 2, ids, cu, lg, lp), BASE_OK);
    for (int s = 0; s < 2; s++) {
        char nm[64];
        int64_t k;
        snprintf(nm, sizeof nm, "logits.%d", s);
        float *want = ref_f32(ref, nm, &k);
        assert_int_equal(k, (cu[s + 1] - cu[s]) * V);
        double err = test_max_abs_diff(lg + cu[s] * V, want, k);
        printf("%s: logits.%d max |diff| %.3g\n", name, s, err);
        assert_true(err < 1e-4);
        free(want);
        snprintf(nm, sizeof nm, "token_logprobs.%d", s);
        want = ref_f32(ref, nm, &k);
        assert_int_equal(k, cu[s + 1] - cu[s] - 1);
        err = test_max_abs_diff(lp + cu[s], want, k);
        printf("%s: token_logprobs.%d max |diff| %.3g\n", name, s, err);
        assert_true(err < 1e-4);
        assert_true(lp[cu[s + 1] - 1] == 0.0f);
        free(want);
    }
    /* the training forward's per-token logp (recompute and not) */
    for (int rc = 0; rc < 2; rc++) {
        model_train_limits lim = {.max_tokens = n0 + n1 + 5, .max_seqs = 3, .recompute = rc};
        model_train *tr = NULL;
        assert_int_equal(model_train_new(m, &lim, &tr), BASE_OK);
        model_batch bt = {.nseq = 2, .ids = ids, .cu_seqlens = cu};
        assert_int_equal(model_forward(tr, &bt), BASE_OK);
        float *tl = malloc((size_t)(n0 + n1) * sizeof(float)), *te = malloc((size_t)(n0 + n1) * sizeof(float));
        model_train_download(tr, tl, te);
        assert_true(test_max_abs_diff(tl, lp, n0 + n1) < 2e-5);
        /* entropy from the full logits of token 0 */
        double mx = -1e30, s0 = 0, s1 = 0;
        for (int64_t v = 0; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
        for (int64_t v = 0; v < V; v++) s0 += exp(lg[v] - mx), s1 += exp(lg[v] - mx) * lg[v];
        double H = mx + log(s0) - s1 / s0;
        assert_true(fabs(te[0] - H) < 1e-4);
        free(tl);
        free(te);
        model_train_free(tr);
    }
    free(lg);
    free(lp);
    free(ids);
    free(a);
    free(b);
    st_close(ref);
    free(rp);
    model_free(m);
    free(dir);
}

static void check_greedy(const char *name) {
    char *dir = fixture_dir(name);
    model *m = NULL;
    if (model_load(dir, ops_cpu(), NULL, &m)) fail_msg("%s: %s", dir, base_err_msg());
    char *rp = base_path_join(dir, "reference.safetensors");
    st_file *ref = NULL;
    assert_int_equal(st_open(rp, &ref), BASE_OK);
    int64_t np, ng;
    int32_t *prompt = ref_ids(ref, "greedy.prompt", &np), *want = ref_ids(ref, "greedy.output", &ng);
    model_cache_limits lim = {.slots = 2, .max_len = np + ng + 1, .max_batch = 2, .max_prefill = np};
    model_cache *c = NULL;
    assert_int_equal(model_cache_new(m, &lim, &c), BASE_OK);
    int32_t cu[2] = {0, (int32_t)np}, slot = 1;
    const tensor *lg = NULL;
    assert_int_equal(model_prefill(c, 1, &slot, prompt, cu, &lg), BASE_OK);
    int64_t V = model_cfg(m)->vocab_size;
    for (int64_t i = 0; i < ng; i++) {
        const float *z = lg->data;
        int32_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (z[v] > z[best]) best = (int32_t)v;
        if (best != want[i]) fail_msg("%s: greedy token %lld is %d, reference %d", name, (long long)i, best, want[i]);
        int32_t pos = (int32_t)(np + i);
        assert_int_equal(model_decode(c, 1, &slot, &best, &pos, &lg), BASE_OK);
    }
    printf("%s: %lld greedy tokens identical\n", name, (long long)ng);
    model_cache_free(c);
    free(prompt);
    free(want);
    st_close(ref);
    free(rp);
    model_free(m);
    free(dir);
}

static void check_grads(const char *name) {
    char *dir = fixture_dir(name);
    model *m = NULL;
    if (model_load(dir, ops_cpu(), NULL, &m)) fail_msg("%s: %s", dir, base_err_msg());
    char *rp = base_path_join(dir, "reference.safetensors"), *gp = base_path_join(dir, "grads.safetensors");
    st_file *ref = NULL, *gf = NULL;
    assert_int_equal(st_open(rp, &ref), BASE_OK);
    assert_int_equal(st_open(gp, &gf), BASE_OK);
    int64_t n0;
    int32_t *ids = ref_ids(ref, "input_ids.0", &n0);
    float *loss_ref = ref_f32(ref, "loss.0", NULL);
    for (int rc = 0; rc < 2; rc++) {
        model_train_limits lim = {.max_tokens = n0, .max_seqs = 1, .recompute = rc};
        model_train *tr = NULL;
        assert_int_equal(model_train_new(m, &lim, &tr), BASE_OK);
        int32_t cu[2] = {0, (int32_t)n0};
        model_batch bt = {.nseq = 1, .ids = ids, .cu_seqlens = cu};
        assert_int_equal(model_forward(tr, &bt), BASE_OK);
        float *lp = malloc((size_t)n0 * sizeof(float)), *g = malloc((size_t)n0 * sizeof(float));
        model_train_download(tr, lp, NULL);
        double loss = 0;
        for (int64_t t = 0; t + 1 < n0; t++) loss -= lp[t];
        loss /= (double)(n0 - 1);
        printf("%s: loss %.8f reference %.8f\n", name, loss, loss_ref[0]);
        assert_true(fabs(loss - loss_ref[0]) < 1e-5);
        for (int64_t t = 0; t < n0; t++) g[t] = t + 1 < n0 ? -1.0f / (float)(n0 - 1) : 0.0f;
        float *grads = model_grads_new(m);
        model_backward(tr, g, NULL, grads);
        int checked = 0;
        double worst = 0;
        const char *worst_name = "";
        for (int i = 0; i < model_nparams(m); i++) {
            const model_param *p = model_param_at(m, i);
            if (!p->trainable) continue;
            const st_tensor *t = st_find(gf, p->name);
            if (!t) fail_msg("%s: reference has no gradient for %s", name, p->name);
            float *want = ref_f32(gf, p->name, NULL);
            const float *got = grads + p->offset;
            double rel = test_rel_l2(got, want, p->numel);
            int64_t zero_bad = 0;
            for (int64_t k = 0; k < p->numel; k++)
                if (want[k] == 0.0f && got[k] != 0.0f) zero_bad++;
            if (rel > 1e-3 || zero_bad) fail_msg("%s: %s relative L2 %.3g, %lld nonzero where the reference is 0", name, p->name, rel, (long long)zero_bad);
            if (rel > worst) worst = rel, worst_name = p->name;
            free(want);
            checked++;
        }
        printf("%s%s: %d gradients, worst relative L2 %.3g (%s)\n", name, rc ? " (recompute)" : "", checked, worst, worst_name);
        assert_int_equal(checked, st_count(gf));
        model_ops(m)->free(grads);
        free(lp);
        free(g);
        model_train_free(tr);
    }
    free(loss_ref);
    free(ids);
    st_close(ref);
    st_close(gf);
    free(rp);
    free(gp);
    model_free(m);
    free(dir);
}

#define FIXTURE(id, name)                                                                          \
    static void test_logits_##id(void **s) { (void)s; check_logits(name); }                         \
    static void test_greedy_##id(void **s) { (void)s; check_greedy(name); }                         \
    static void test_grads_##id(void **s) { (void)s; check_grads(name); }

FIXTURE(a, "hf-tiny-v3-a")
FIXTURE(b, "tiny-v3-b") /* no query LoRA, two shared experts, plain rope, eps 1e-5 */
FIXTURE(c, "tiny-v3-c") /* 8 groups keep 3, top-4 of 16, unnormalised, 2 dense layers, YaRN mscale 0.707 */
FIXTURE(d, "tiny-v3-d") /* v5 files: rope_parameters, fused experts; tied embeddings */

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_a),
        cmocka_unit_test(test_greedy_a),
        cmocka_unit_test(test_grads_a),
        cmocka_unit_test(test_logits_b),
        cmocka_unit_test(test_greedy_b),
        cmocka_unit_test(test_grads_b),
        cmocka_unit_test(test_logits_c),
        cmocka_unit_test(test_greedy_c),
        cmocka_unit_test(test_grads_c),
        cmocka_unit_test(test_logits_d),
        cmocka_unit_test(test_greedy_d),
        cmocka_unit_test(test_grads_d),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
