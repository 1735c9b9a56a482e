/*
 * Decode steps replayed from CUDA graphs (ops.h graph_capture) against the
 * same steps launched op by op (model_cache_limits.no_graphs), on
 * hf-tiny-v3-a:
 *   - a capture records and does not run; each replay runs the recorded
 *     kernel and copy again on the buffers' current contents;
 *   - model level: decode steps of 1 to 7 sequences (buckets of 1, 2, 4
 *     and 8 rows, padded rows in the padding slot) give logits with the
 *     same bytes as the eager steps, every step after a bucket's first
 *     being a replay; a scratch buffer that grows between steps makes the
 *     graphs stale, they are captured again and still agree;
 *   - engine level: the rollout engine's completions (tokens and log-prob
 *     bytes, greedy and T = 1) are the same with and without graphs, most
 *     decode steps being replays.
 * Bytes are compared because the emulator's decode is batch invariant (a
 * row's result does not depend on the padding rows). On a GPU cuBLAS picks
 * kernels by shape, so padded buckets agree within rounding only; there the
 * test checks 1e-5.
 * Usage: test_cuda_graph [cuda|emu] [f32|bf16] ("skipped: no GPU" without
 * one; bf16: the model in bf16 mode, bf16 GEMM operands and cache pages).
 */
#include "common/test_common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/st.h"
#include "model/model.h"
#include "rollout/rollout.h"
#include "cuda/test_backend.h"

static const struct ops *g_ops;
static int g_emu;
static model_precision g_prec;
static model *M;
static int32_t P0[64];

static int setup(void **state) {
    (void)state;
    char *dir = test_shared_path("fixtures/hf-tiny-v3-a");
    model_load_opts lo = {.precision = g_prec};
    if (model_load(dir, g_ops, &lo, &M)) fail_msg("%s", base_err_msg());
    char *ref = base_path_join(dir, "reference.safetensors");
    st_file *f;
    if (st_open(ref, &f)) fail_msg("%s", base_err_msg());
    const st_tensor *t = st_find(f, "input_ids.0");
    if (!t || t->shape[0] < 37) fail_msg("input_ids.0 missing or shorter than 37 tokens");
    for (int64_t i = 0; i < 37; i++) P0[i] = (int32_t)((const int64_t *)t->data)[i];
    st_close(f);
    free(ref), free(dir);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    model_free(M);
    return 0;
}

static void compare(const float *a, const float *b, int64_t n, const char *what) {
    if (g_emu) {
        if (memcmp(a, b, (size_t)n * sizeof(float))) fail_msg("%s: graph replay differs from eager launches", what);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        if (fabsf(a[i] - b[i]) > 1e-5f * (1.0f + fabsf(a[i])))
            fail_msg("%s: logit %lld is %g replayed, %g eager", what, (long long)i, b[i], a[i]);
}

/* Capture records and does not run; each replay runs the recorded ops on
 * the buffers' contents at that time (a kernel: scale; a copy). */
typedef struct {
    tensor x, y;
} cap_arg;
static void cap_fn(void *p) {
    cap_arg *a = p;
    g_ops->scale(&a->x, &a->x, 2.0f);
    g_ops->copy(a->y.data, a->x.data, 4 * sizeof(float));
}
static void test_capture_semantics(void **state) {
    (void)state;
    float h[4] = {1, 2, 3, 4}, out[4];
    void *d = g_ops->alloc(8 * sizeof(float));
    g_ops->upload(d, h, sizeof h);
    cap_arg a = {tensor_make(d, TENSOR_F32, g_ops->device, 1, (int64_t[]){4}),
                 tensor_make((float *)d + 4, TENSOR_F32, g_ops->device, 1, (int64_t[]){4})};
    g_ops->scale(&a.x, &a.x, 1.0f); /* size any scratch first */
    void *g = g_ops->graph_capture(cap_fn, &a);
    if (!g) fail_msg("%s", base_err_msg());
    g_ops->download(out, d, sizeof out);
    assert_memory_equal(out, h, sizeof h); /* nothing ran */
    for (int rep = 1; rep <= 2; rep++) {
        assert_int_equal(g_ops->graph_launch(g), 0);
        float both[8];
        g_ops->download(both, d, sizeof both);
        for (int i = 0; i < 4; i++) {
            assert_true(both[i] == h[i] * (float)(1 << rep));
            assert_true(both[4 + i] == both[i]);
        }
    }
    g_ops->graph_free(g);
    g_ops->free(d);
}

enum { S = 7, PL = 5, STEPS = 24 };

static void test_decode_steps(void **state) {
    (void)state;
    int64_t V = model_cfg(M)->vocab_size;
    model_cache_limits le = {.slots = S, .max_len = 64, .max_batch = 8, .max_prefill = 64, .no_graphs = 1};
    model_cache_limits lg = le;
    lg.no_graphs = 0;
    model_cache *ce, *cg;
    if (model_cache_new(M, &le, &ce) || model_cache_new(M, &lg, &cg)) fail_msg("%s", base_err_msg());
    /* seven prompts of 5 tokens, prefilled into both caches */
    int32_t ids[S * PL], cu[S + 1], slots[S];
    for (int s = 0; s < S; s++) {
        memcpy(ids + s * PL, P0 + 3 * s, PL * sizeof(int32_t));
        cu[s] = s * PL, slots[s] = s;
    }
    cu[S] = S * PL;
    const tensor *lt;
    if (model_prefill(ce, S, slots, ids, cu, &lt) || model_prefill(cg, S, slots, ids, cu, &lt))
        fail_msg("%s", base_err_msg());
    float *a = malloc((size_t)(8 * V) * sizeof(float)), *b = malloc((size_t)(8 * V) * sizeof(float));
    int len[S];
    for (int s = 0; s < S; s++) len[s] = PL;
    /* batch sizes cycling through buckets 1, 2, 4, 8 (padded: 3 -> 4, 5..7 -> 8) */
    const int sizes[] = {1, 2, 3, 4, 5, 7, 6, 1, 3, 7};
    for (int step = 0; step < STEPS; step++) {
        int n = sizes[step % 10], first = step % S;
        int32_t sl[S], tk[S], ps[S];
        for (int i = 0; i < n; i++) {
            int s = (first + i) % S;
            sl[i] = s, tk[i] = P0[(step * 7 + s) % 37], ps[i] = len[s]++;
        }
        if (step == 12) {
            /* a longer prefill grows scratch buffers: the graphs go stale */
            int32_t big[64], bcu[2] = {0, 64}, bs = 0;
            for (int i = 0; i < 64; i++) big[i] = P0[(i * 5) % 37];
            model_cache_limits lb = {.slots = 1, .max_len = 64, .max_batch = 1, .max_prefill = 64};
            model_cache *cb;
            if (model_cache_new(M, &lb, &cb)) fail_msg("%s", base_err_msg());
            if (model_prefill(cb, 1, &bs, big, bcu, &lt)) fail_msg("%s", base_err_msg());
            g_ops->download(a, lt->data, sizeof(float)); /* finish it */
            model_cache_free(cb);
        }
        if (model_decode(ce, n, sl, tk, ps, &lt)) fail_msg("%s", base_err_msg());
        g_ops->download(a, lt->data, (size_t)(n * V) * sizeof(float));
        if (model_decode(cg, n, sl, tk, ps, &lt)) fail_msg("%s", base_err_msg());
        g_ops->download(b, lt->data, (size_t)(n * V) * sizeof(float));
        char what[64];
        snprintf(what, sizeof what, "%s step %d (%d sequences)", g_ops->name, step, n);
        compare(a, b, n * V, what);
    }
    int64_t cap_e, rep_e, cap_g, rep_g;
    model_cache_graph_stats(ce, &cap_e, &rep_e);
    model_cache_graph_stats(cg, &cap_g, &rep_g);
    printf("%s: %d decode steps, %lld graphs captured, %lld steps replayed, all equal to eager launches\n",
           g_ops->name, STEPS, (long long)cap_g, (long long)rep_g);
    assert_int_equal(cap_e + rep_e, 0); /* no_graphs: none */
    assert_true(cap_g >= 5); /* the buckets 1, 2, 4, 8, and again after the scratch grew */
    assert_int_equal(cap_g + rep_g, STEPS);
    free(a), free(b);
    model_cache_free(ce), model_cache_free(cg);
}

static void test_rollout(void **state) {
    (void)state;
    const int32_t *pp[3] = {P0, P0 + 5, P0 + 20};
    int32_t pl[3] = {9, 13, 3};
    for (int t = 0; t < 2; t++) {
        rollout_request r = {.n_prompts = 3, .prompt_ids = pp, .prompt_len = pl, .G = 3,
                             .sampling = {t ? 1.0f : 0.0f, 1, 0, 0}, .max_new_tokens = 12, .seed = 3, .step = 1};
        rollout_limits lim = {.max_seqs = 9, .max_prompts = 3, .max_group = 3, .max_prompt_len = 16,
                              .max_new_tokens = 12, .no_graphs = 1};
        rollout_engine *ee, *eg;
        if (rollout_new(M, &lim, &ee)) fail_msg("%s", base_err_msg());
        lim.no_graphs = 0;
        if (rollout_new(M, &lim, &eg)) fail_msg("%s", base_err_msg());
        rollout_result re, rg;
        if (rollout_generate(ee, &r, &re) || rollout_generate(eg, &r, &rg)) fail_msg("%s", base_err_msg());
        assert_int_equal(re.n, rg.n);
        for (int i = 0; i < re.n; i++) {
            assert_int_equal(re.out[i].len, rg.out[i].len);
            assert_memory_equal(re.out[i].ids, rg.out[i].ids, sizeof(int32_t) * (size_t)re.out[i].len);
            if (g_emu) assert_memory_equal(re.out[i].logp, rg.out[i].logp, sizeof(float) * (size_t)re.out[i].len);
        }
        printf("%s: T=%d rollout, %lld decode steps, %lld replayed from graphs: same completions as eager\n",
               g_ops->name, t, (long long)rg.decode_steps, (long long)rg.graph_replays);
        assert_int_equal(re.graph_replays, 0);
        assert_true(rg.graph_replays * 2 > rg.decode_steps);
        rollout_free(ee), rollout_free(eg);
    }
}

int main(int argc, char **argv) {
    const char *backend = argc > 1 ? argv[1] : "cuda";
    if (argc > 2 && model_precision_parse(argv[2], &g_prec)) {
        fprintf(stderr, "usage: test_cuda_graph [cuda|emu] [f32|bf16]\n");
        return 2;
    }
    int have = test_backend(backend, 0, &g_ops);
    if (have < 0) {
        fprintf(stderr, "usage: test_cuda_graph [cuda|emu] [f32|bf16]\n");
        return 2;
    }
    if (!have) return 0;
    g_emu = !strcmp(backend, "emu");
    if (!g_ops->graph_capture) {
        printf("skipped: graphs are off (GRPO_CUDA_GRAPHS=0)\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_capture_semantics), cmocka_unit_test(test_decode_steps),
                                       cmocka_unit_test(test_rollout)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
