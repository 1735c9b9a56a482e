/*
 * The rollout engine on the CUDA backend (hf-tiny-v3-a), sampling on the
 * device with the `sample` op:
 *   - greedy output equals Hugging Face's cached generation, for every
 *     sample of a group;
 *   - sampled completions (T = 0.7, plain and with top-k 40, which takes
 *     the sampler's sorting path) are reproducible, and every recorded log-prob equals the training
 *     forward's log-prob of the token at logit_scale 1/T within 1e-4;
 *   - under the emulator, completions do not depend on how many sequences
 *     decode together nor on how the prompts are packed into prefills
 *     (every kernel computes a row the same way whatever the batch: three
 *     prompts of 30, 30 and 37 tokens prefilled together, two then one, or
 *     one at a time give the same token and log-prob bytes; on a GPU cuBLAS
 *     picks kernels by shape, so this is not claimed there).
 * bf16 mode (second argument bf16; budgets of tests/cuda/test_cuda_fixture.c):
 *   - greedy: how many of the engine's greedy tokens equal the f32
 *     reference's is printed, not asserted (a near tie may flip under
 *     rounding); every recorded log-prob is within 2^-3 of the f32 model's
 *     training-forward log-prob of the same token in the same context;
 *   - sampled: reproducible and batch independent as in f32; the recorded
 *     log-probs (absorbed decode over the f32 latent cache) within 2^-3 of
 *     the bf16 training forward (bf16 kv_b GEMM): the two forms round
 *     different operands.
 * Usage: test_cuda_rollout [cuda|emu] [f32|bf16] ("skipped: no GPU" without one).
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
static int g_emu, g_bf;
static model *M, *M32; /* M in the test's precision; M32 the f32 model (bf16 runs) */
#define BF16_LOGP_ABS 0.125 /* 2^-3: test_cuda_fixture.c's budget */
static double g_worst_lp; /* largest |recorded - forward| log-prob seen by run() */
static st_file *REF;

static int setup(void **state) {
    (void)state;
    char *dir = test_shared_path("fixtures/hf-tiny-v3-a");
    model_load_opts lo = {.precision = g_bf ? MODEL_BF16 : MODEL_F32};
    if (model_load(dir, g_ops, &lo, &M)) fail_msg("%s", base_err_msg());
    if (g_bf && model_load(dir, g_ops, NULL, &M32)) fail_msg("%s", base_err_msg());
    char *ref = base_path_join(dir, "reference.safetensors");
    if (st_open(ref, &REF)) fail_msg("%s", base_err_msg());
    free(ref), free(dir);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    st_close(REF);
    model_free(M);
    model_free(M32);
    return 0;
}

static int32_t *ref_ids(const char *name, int64_t *n) {
    const st_tensor *t = st_find(REF, name);
    if (!t) fail_msg("no %s", name);
    *n = t->shape[0];
    int32_t *ids = malloc((size_t)*n * sizeof *ids);
    for (int64_t i = 0; i < *n; i++)
        ids[i] = (int32_t)((const int64_t *)t->data)[i];
    return ids;
}

static rollout_engine *engine(int max_seqs, int max_group) {
    rollout_limits lim = {
        .max_seqs = max_seqs, .max_prompts = 8, .max_group = max_group, .max_prompt_len = 40, .max_new_tokens = 32};
    rollout_engine *e;
    if (rollout_new(M, &lim, &e)) fail_msg("%s", base_err_msg());
    return e;
}

/* bf16: the greedy completions against the reference tokens (counted) and
 * the f32 model's log-probs of the same tokens (asserted). */
static void greedy_bf16(const rollout_result *res, const int32_t *prompt, int64_t np, const int32_t *want, int64_t no) {
    for (int g = 0; g < 2; g++) {
        int64_t len = res->out[g].len, same = 0;
        while (same < len && same < no && res->out[g].ids[same] == want[same]) same++;
        int32_t *seq = malloc(sizeof(int32_t) * (size_t)(np + len)), cu[2] = {0, (int32_t)(np + len)};
        memcpy(seq, prompt, sizeof(int32_t) * (size_t)np);
        memcpy(seq + np, res->out[g].ids, sizeof(int32_t) * (size_t)len);
        model_train_limits tl = {.max_tokens = np + len, .max_seqs = 1};
        model_train *tr;
        if (model_train_new(M32, &tl, &tr)) fail_msg("%s", base_err_msg());
        model_batch b = {.nseq = 1, .ids = seq, .cu_seqlens = cu};
        if (model_forward(tr, &b)) fail_msg("%s", base_err_msg());
        float *fl = malloc(sizeof(float) * (size_t)(np + len));
        model_train_download(tr, fl, NULL);
        double worst = 0;
        for (int64_t t = 0; t < len; t++) {
            double d = fabs((double)fl[np - 1 + t] - res->out[g].logp[t]);
            worst = d > worst ? d : worst;
        }
        printf("%s bf16: greedy rollout sample %d: the first %lld of %lld tokens equal the f32 reference's; recorded "
               "log-probs vs the f32 forward: worst |diff| %.3g\n",
               g_ops->name, g, (long long)same, (long long)no, worst);
        assert_true(worst < BF16_LOGP_ABS);
        free(fl), free(seq);
        model_train_free(tr);
    }
}

static void test_greedy(void **state) {
    (void)state;
    int64_t np, no;
    int32_t *prompt = ref_ids("greedy.prompt", &np), *want = ref_ids("greedy.output", &no);
    rollout_engine *e = engine(2, 2);
    const int32_t *pp[1] = {prompt};
    int32_t pl[1] = {(int32_t)np};
    rollout_request r = {.n_prompts = 1,
                         .prompt_ids = pp,
                         .prompt_len = pl,
                         .G = 2,
                         .sampling = {0, 1, 0, 0},
                         .max_new_tokens = no,
                         .seed = 1};
    rollout_result res;
    if (rollout_generate(e, &r, &res)) fail_msg("%s", base_err_msg());
    if (g_bf) {
        greedy_bf16(&res, prompt, np, want, no);
        rollout_free(e);
        free(prompt), free(want);
        return;
    }
    for (int g = 0; g < 2; g++) {
        assert_int_equal(res.out[g].len, no);
        for (int64_t i = 0; i < no; i++)
            if (res.out[g].ids[i] != want[i])
                fail_msg("%s: sample %d greedy token %lld is %d, reference %d", g_ops->name, g, (long long)i,
                         res.out[g].ids[i], want[i]);
    }
    printf("%s: greedy rollout equals the reference (%lld tokens, G = 2)\n", g_ops->name, (long long)no);
    rollout_free(e);
    free(prompt), free(want);
}

/* Three prompts, G = 3, at temperature T. */
static void run(rollout_engine *e, float T, int top_k, uint64_t seed, int32_t ids[9][20], float lp[9][20],
                int64_t lens[9]) {
    int64_t n0;
    int32_t *p0 = ref_ids("input_ids.0", &n0);
    const int32_t *pp[3] = {p0, p0 + 5, p0 + 20};
    int32_t pl[3] = {9, 13, 3};
    rollout_request r = {.n_prompts = 3,
                         .prompt_ids = pp,
                         .prompt_len = pl,
                         .G = 3,
                         .sampling = {T, 1, top_k, 0},
                         .max_new_tokens = 12,
                         .seed = seed,
                         .step = 2,
                         .prompt_base = 4};
    rollout_result res;
    if (rollout_generate(e, &r, &res)) fail_msg("%s", base_err_msg());
    assert_int_equal(res.n, 9);
    for (int i = 0; i < 9; i++) {
        lens[i] = res.out[i].len;
        memcpy(ids[i], res.out[i].ids, sizeof(int32_t) * (size_t)lens[i]);
        memcpy(lp[i], res.out[i].logp, sizeof(float) * (size_t)lens[i]);
    }
    /* every recorded log-prob against the training forward at 1/T */
    int32_t seqs[9 * 40], cu[10] = {0};
    int n = 0;
    for (int i = 0; i < 9; i++) {
        memcpy(seqs + n, pp[i / 3], sizeof(int32_t) * (size_t)pl[i / 3]);
        memcpy(seqs + n + pl[i / 3], ids[i], sizeof(int32_t) * (size_t)lens[i]);
        n += pl[i / 3] + (int)lens[i];
        cu[i + 1] = n;
    }
    model_train_limits tl = {.max_tokens = n, .max_seqs = 9};
    model_train *tr;
    if (model_train_new(M, &tl, &tr)) fail_msg("%s", base_err_msg());
    model_batch b = {.nseq = 9, .ids = seqs, .cu_seqlens = cu, .logit_scale = 1.0f / T};
    if (model_forward(tr, &b)) fail_msg("%s", base_err_msg());
    float *fl = malloc(sizeof(float) * (size_t)n);
    model_train_download(tr, fl, NULL);
    for (int i = 0; i < 9; i++)
        for (int64_t t = 0; t < lens[i]; t++) {
            float want = fl[cu[i] + pl[i / 3] - 1 + t];
            if (fabsf(want - lp[i][t]) > g_worst_lp) g_worst_lp = fabsf(want - lp[i][t]);
            if (fabsf(want - lp[i][t]) > (g_bf ? BF16_LOGP_ABS : 1e-4f))
                fail_msg("%s: sample %d token %lld: logp %g vs forward %g", g_ops->name, i, (long long)t, lp[i][t],
                         want);
        }
    free(fl);
    model_train_free(tr);
    free(p0);
}

static void test_sampled(void **state) {
    (void)state;
    static int32_t a[9][20], b[9][20], c[9][20];
    static float la[9][20], lb[9][20], lc[9][20];
    int64_t na[9], nb[9], nc[9];
    for (int trunc = 0; trunc < 2; trunc++) {
        int top_k = trunc ? 40 : 0; /* 40 < V: the sorting path of the sampler */
        rollout_engine *e = engine(9, 3), *small = engine(3, 3);
        run(e, 0.7f, top_k, 5, a, la, na);
        run(e, 0.7f, top_k, 5, b, lb, nb);
        for (int i = 0; i < 9; i++) {
            assert_int_equal(na[i], nb[i]);
            assert_memory_equal(a[i], b[i], sizeof(int32_t) * (size_t)na[i]);
            assert_memory_equal(la[i], lb[i], sizeof(float) * (size_t)na[i]);
        }
        if (g_emu) { /* batch independence: one prompt's group at a time */
            run(small, 0.7f, top_k, 5, c, lc, nc);
            for (int i = 0; i < 9; i++) {
                assert_int_equal(na[i], nc[i]);
                assert_memory_equal(a[i], c[i], sizeof(int32_t) * (size_t)na[i]);
            }
        }
        int differ = memcmp(a[0], a[1], sizeof(int32_t) * 12) != 0;
        assert_true(differ); /* two samples of a group differ */
        printf("%s%s: sampled rollouts (%s) reproducible, log-probs = forward (worst |diff| %.3g)%s\n", g_ops->name,
               g_bf ? " bf16" : "", trunc ? "top-k 40" : "plain", g_worst_lp, g_emu ? ", batch independent" : "");
        rollout_free(e), rollout_free(small);
    }
}

/* Prefill packing: prompts of 30, 30 and 37 tokens, G = 3, with 9 slots
 * (one prefill of the three prompts: the third starts at token 60, inside
 * the attention kernels' second 32-token tile), 6 slots (two prompts, then
 * the third alone) and 3 slots (one at a time): the same completions, token
 * and log-prob bytes (emulator only: see the top of the file). */
static void test_prefill_packing(void **state) {
    (void)state;
    if (!g_emu) {
        printf("%s: prefill packing invariance is checked under the emulator only\n", g_ops->name);
        return;
    }
    int64_t n0;
    int32_t *p0 = ref_ids("input_ids.0", &n0);
    if (n0 < 37) fail_msg("input_ids.0 has %lld tokens, 37 needed", (long long)n0);
    const int32_t *pp[3] = {p0, p0 + 7, p0};
    int32_t pl[3] = {30, 30, 37};
    static int32_t ids[3][9][12];
    static float lp[3][9][12];
    int64_t len[3][9];
    const int slots[3] = {9, 6, 3};
    for (int k = 0; k < 3; k++) {
        rollout_engine *e = engine(slots[k], 3);
        rollout_request r = {.n_prompts = 3,
                             .prompt_ids = pp,
                             .prompt_len = pl,
                             .G = 3,
                             .sampling = {0.7f, 1, 0, 0},
                             .max_new_tokens = 12,
                             .seed = 9,
                             .step = 1,
                             .prompt_base = 0};
        rollout_result res;
        if (rollout_generate(e, &r, &res)) fail_msg("%s", base_err_msg());
        assert_int_equal(res.n, 9);
        for (int i = 0; i < 9; i++) {
            len[k][i] = res.out[i].len;
            assert_true(len[k][i] <= 12);
            memcpy(ids[k][i], res.out[i].ids, sizeof(int32_t) * (size_t)len[k][i]);
            memcpy(lp[k][i], res.out[i].logp, sizeof(float) * (size_t)len[k][i]);
        }
        rollout_free(e);
        if (!k) continue;
        for (int i = 0; i < 9; i++) {
            if (len[k][i] != len[0][i]) fail_msg("%d slots: completion %d has %lld tokens, 9 slots %lld", slots[k], i,
                                                 (long long)len[k][i], (long long)len[0][i]);
            if (memcmp(ids[k][i], ids[0][i], sizeof(int32_t) * (size_t)len[0][i]) ||
                memcmp(lp[k][i], lp[0][i], sizeof(float) * (size_t)len[0][i])) /* bytes */
                fail_msg("%s%s: %d slots: completion %d (prompt %d) differs from 9 slots", g_ops->name,
                         g_bf ? " bf16" : "", slots[k], i, i / 3);
        }
    }
    printf("%s%s: completions identical with 9, 6 and 3 slots (prompts of 30, 30, 37 tokens prefilled together, "
           "2 + 1, one at a time)\n",
           g_ops->name, g_bf ? " bf16" : "");
    free(p0);
}

int main(int argc, char **argv) {
    const char *backend = argc > 1 ? argv[1] : "cuda";
    g_bf = argc > 2 && !strcmp(argv[2], "bf16");
    int have = test_backend(backend, 0, &g_ops);
    if (have < 0) {
        fprintf(stderr, "usage: test_cuda_rollout [cuda|emu]\n");
        return 2;
    }
    if (!have) return 0;
    g_emu = !strcmp(backend, "emu");
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_greedy), cmocka_unit_test(test_sampled),
                                       cmocka_unit_test(test_prefill_packing)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
