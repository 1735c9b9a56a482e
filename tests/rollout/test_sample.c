/* Tests of the `sample` op as the rollout engine uses it (CPU backend):
 * greedy, the sampled distribution at a temperature, top-k, top-p, min-p
 * truncation (frequencies against the truncated, renormalised
 * distribution), the recorded log-probability, determinism, and the
 * Philox draws of rollout_uniform. */
#include "common/test_common.h"

#include <math.h>
#include <string.h>

#include "rollout/rollout.h"
#include "tensor/ops.h"

#define V 6

/* One draw through the op: logits [1, V], uniform u. */
static int32_t sample_one(const float *logits, const rollout_sampling *sp, float u, float *logp) {
    float lg[V], uu = u, lp;
    int32_t id;
    memcpy(lg, logits, sizeof lg);
    tensor tl = tensor_2d(lg, TENSOR_F32, 1, V), tu = tensor_1d(&uu, TENSOR_F32, 1),
           ti = tensor_1d(&id, TENSOR_I32, 1), tp = tensor_1d(&lp, TENSOR_F32, 1);
    ops_cpu()->sample(&ti, &tp, &tl, &tu, sp->temperature, sp->top_k, sp->top_p > 0 ? sp->top_p : 1.0f, sp->min_p);
    if (logp) *logp = lp;
    return id;
}

static void softmax(const float *l, float T, double *p) {
    double mx = -1e30, z = 0;
    for (int i = 0; i < V; i++) mx = fmax(mx, l[i] / T);
    for (int i = 0; i < V; i++) z += exp(l[i] / T - mx);
    for (int i = 0; i < V; i++) p[i] = exp(l[i] / T - mx) / z;
}

/* Empirical frequencies over n draws vs expected probabilities (within
 * 5 standard errors each), and tokens with zero expectation never drawn. */
static void check_freq(const float *logits, const rollout_sampling *sp, const double *want, int n) {
    int count[V] = {0};
    for (int i = 0; i < n; i++) {
        float u = rollout_uniform(99, 1, 2, 3, (uint32_t)i);
        int32_t t = sample_one(logits, sp, u, NULL);
        assert_true(t >= 0 && t < V);
        count[t]++;
    }
    for (int v = 0; v < V; v++) {
        double f = (double)count[v] / n, se = sqrt(want[v] * (1 - want[v]) / n) + 1e-9;
        if (want[v] == 0) assert_int_equal(count[v], 0);
        else if (fabs(f - want[v]) > 5 * se) fail_msg("token %d: freq %.4f want %.4f", v, f, want[v]);
    }
}

static const float L[V] = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 0.0f};

static void test_greedy(void **state) {
    (void)state;
    rollout_sampling sp = {0, 1, 0, 0};
    float lp;
    assert_int_equal(sample_one(L, &sp, 0.3f, &lp), 1);
    double p[V];
    softmax(L, 1, p);
    assert_true(fabs(lp - log(p[1])) < 1e-6);
}

static void test_temperature(void **state) {
    (void)state;
    double p[V];
    rollout_sampling sp = {0.7f, 1, 0, 0};
    softmax(L, 0.7f, p);
    check_freq(L, &sp, p, 100000);
    sp.temperature = 1.0f;
    softmax(L, 1.0f, p);
    check_freq(L, &sp, p, 100000);
}

static void test_truncation(void **state) {
    (void)state;
    double p[V], w[V];
    softmax(L, 1, p); /* order by prob: 1, 4, 0, 2, 5, 3 */
    /* top-k 2: tokens 1 and 4 renormalised */
    rollout_sampling sp = {1, 1, 2, 0};
    memset(w, 0, sizeof w);
    w[1] = p[1] / (p[1] + p[4]);
    w[4] = p[4] / (p[1] + p[4]);
    check_freq(L, &sp, w, 50000);
    /* top-p: smallest prefix whose mass reaches p */
    double cum = p[1] + p[4];
    sp = (rollout_sampling){1, (float)(cum - 1e-3), 0, 0};
    check_freq(L, &sp, w, 50000);
    sp.top_p = (float)(cum + 1e-3); /* one more token (0) */
    memset(w, 0, sizeof w);
    double z = p[1] + p[4] + p[0];
    w[1] = p[1] / z, w[4] = p[4] / z, w[0] = p[0] / z;
    check_freq(L, &sp, w, 50000);
    /* min-p: keep tokens with p >= min_p * p_max */
    sp = (rollout_sampling){1, 1, 0, (float)(p[0] / p[1] - 1e-4)};
    check_freq(L, &sp, w, 50000);
    /* the recorded log-prob ignores truncation: full distribution at T */
    float lp;
    int32_t t = sample_one(L, &sp, 0.999f, &lp);
    assert_true(fabs(lp - log(p[t])) < 1e-6);
}

static void test_determinism(void **state) {
    (void)state;
    assert_true(rollout_uniform(1, 2, 3, 4, 5) == rollout_uniform(1, 2, 3, 4, 5));
    assert_true(rollout_uniform(1, 2, 3, 4, 5) != rollout_uniform(1, 2, 3, 5, 5));
    assert_true(rollout_uniform(1, 2, 3, 4, 5) != rollout_uniform(2, 2, 3, 4, 5));
    rollout_sampling sp = {0.9f, 0.9f, 4, 0.05f};
    for (int i = 0; i < 100; i++) {
        float u = rollout_uniform(7, 0, 0, 0, (uint32_t)i);
        assert_int_equal(sample_one(L, &sp, u, NULL), sample_one(L, &sp, u, NULL));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy), cmocka_unit_test(test_temperature),
        cmocka_unit_test(test_truncation), cmocka_unit_test(test_determinism),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
