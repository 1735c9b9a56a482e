/*
 * ZeRO 3's sharded load, one process (src/model/weights.c no_arena,
 * src/train/ckpt_shard.c run_ckpt_read_range; the run's side is
 * tests/dist/test_zero.c test_zero3_loads):
 *   - a model loaded without its arena (model_load_opts.no_arena) has the
 *     whole model's table and layout, holds no arena (model_params NULL,
 *     released) and allocates only its rope tables;
 *   - the ranges of 1, 2, 3 and 4 ranks read from its directory by
 *     run_ckpt_read_range are the whole model's arena (model_load) bit for
 *     bit, for the shared fixture, per-expert tensors (tiny-v3-b), fused
 *     experts with tied embeddings (tiny-v3-d), FP8 blocks
 *     (tiny-v3-a-fp8), and a copy of tiny-v3-b without its
 *     e_score_correction_bias tensors (zeros, as model_load);
 *   - model_init_random_range gives model_init_random's values for every
 *     range, bit for bit;
 *   - with expert parallelism (EP 2 and 4, every EP index): the EP index's
 *     model without its arena has the EP model's table (its experts,
 *     global names) and layout, and its arena read as 1-3 pieces at once
 *     by run_ckpt_read_ranges (global names; fused experts read from the
 *     fused tensor) is the EP model's arena (model_load with EP) bit for
 *     bit, for the same fixtures;
 *   - errors: a trainable tensor missing (named by model_load's checks, no
 *     weight read), a frozen model without its arena refused.
 */
#include "common/test_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/st.h"
#include "model/model.h"
#include "train/run_internal.h"

static char *fixture(const char *name) {
    if (!strcmp(name, "hf-tiny-v3-a")) return test_shared_path("fixtures/hf-tiny-v3-a");
    char rel[256];
    snprintf(rel, sizeof rel, "tests/model/data/%s", name);
    return test_src_path(rel);
}

/* The whole arena of a model (host copy, gaps 0). */
static float *arena_of(const model *m) {
    int64_t n = model_numel(m);
    float *a = calloc((size_t)n, sizeof(float));
    for (int i = 0; i < model_nparams(m); i++) {
        const model_param *p = model_param_at(m, i);
        model_weights_range_to_host(m, p->offset, p->numel, a + p->offset);
    }
    return a;
}

/* bare, loaded without its arena, holds none and has whole's table and
 * layout. */
static void same_layout(const model *bare, const model *whole) {
    assert_true(model_arena_released(bare));
    assert_null(model_params(bare));
    assert_int_equal(model_numel(bare), model_numel(whole));
    assert_int_equal(model_nparams(bare), model_nparams(whole));
    for (int i = 0; i < model_nparams(bare); i++) {
        const model_param *p = model_param_at(bare, i), *q = model_param_at(whole, i);
        assert_string_equal(p->name, q->name);
        assert_int_equal(p->offset, q->offset);
        assert_int_equal(p->numel, q->numel);
    }
}

/* The fixtures every range test reads: the shared one, per-expert tensors,
 * fused experts with tied embeddings, FP8 blocks. */
static void each_fixture(void (*check)(const char *dir)) {
    const char *names[] = {"hf-tiny-v3-a", "tiny-v3-b", "tiny-v3-d", "tiny-v3-a-fp8"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *d = fixture(names[i]);
        check(d);
        free(d);
    }
}

/* dir read into every range of W = 1..4 ranks == the whole model's arena. */
static void ranges_equal(const char *dir) {
    model *whole = NULL, *bare = NULL;
    if (model_load(dir, ops_cpu(), NULL, &whole)) fail_msg("%s: %s", dir, base_err_msg());
    model_load_opts o = {.no_arena = 1};
    size_t before = ops_cpu_allocated();
    if (model_load(dir, ops_cpu(), &o, &bare)) fail_msg("%s (no arena): %s", dir, base_err_msg());
    model_mem mm;
    model_memory_plan(model_cfg(bare), &o, TENSOR_CPU, &mm);
    assert_int_equal(ops_cpu_allocated() - before, mm.rope); /* the rope tables only */
    same_layout(bare, whole);
    float *ref = arena_of(whole);
    int64_t n = model_numel(bare);
    for (int W = 1; W <= 4; W++) {
        float *got = malloc((size_t)n * sizeof(float));
        for (int64_t e = 0; e < n; e++) got[e] = 0;
        for (int r = 0; r < W; r++) {
            int64_t lo, hi;
            run_split(n, r, W, &lo, &hi);
            run_ckpt_range rg = {.params = model_param_at(bare, 0), .nparams = model_nparams(bare), .lo = lo,
                                 .hi = hi, .shard = got + lo};
            if (run_ckpt_read_range(dir, "model", &rg, NULL)) fail_msg("%s [%lld, %lld): %s", dir, (long long)lo,
                                                                     (long long)hi, base_err_msg());
        }
        if (memcmp(got, ref, (size_t)n * sizeof(float)))
            fail_msg("%s: the ranges of %d ranks differ from the whole model's arena", dir, W);
        free(got);
    }
    printf("# %s: %lld parameters, the ranges of 1-4 ranks equal the whole load bit for bit\n", dir, (long long)n);
    free(ref);
    model_free(whole), model_free(bare);
}

static void test_ranges(void **state) {
    (void)state;
    each_fixture(ranges_equal);
}

/* model_ep's exchanges: never called (the models are only loaded). */
static base_status no_counts(void *ctx, const int64_t *send, int64_t *recv, int n) {
    (void)ctx, (void)send, (void)recv, (void)n;
    return base_err_set(BASE_ERR_INVALID, "test: no exchange");
}
static base_status no_rows(void *ctx, const void *send, const int64_t *sb, void *recv, const int64_t *rb) {
    (void)ctx, (void)send, (void)sb, (void)recv, (void)rb;
    return base_err_set(BASE_ERR_INVALID, "test: no exchange");
}

/* EP index r of ep: dir's EP model without its arena read as K pieces
 * (K = 1..3, one run_ckpt_read_ranges call each) == model_load with EP. */
static void ep_ranges_equal(const char *dir, int ep) {
    for (int r = 0; r < ep; r++) {
        model_ep x = {.size = ep, .rank = r, .alltoall_counts = no_counts, .alltoallv = no_rows};
        model_load_opts wo = {.ep = &x}, o = {.ep = &x, .no_arena = 1};
        model *whole = NULL, *bare = NULL;
        if (model_load(dir, ops_cpu(), &wo, &whole)) fail_msg("%s EP %d/%d: %s", dir, r, ep, base_err_msg());
        if (model_load(dir, ops_cpu(), &o, &bare)) fail_msg("%s EP %d/%d (no arena): %s", dir, r, ep, base_err_msg());
        same_layout(bare, whole);
        float *ref = arena_of(whole);
        int64_t n = model_numel(bare);
        float *got = malloc((size_t)n * sizeof(float));
        for (int K = 1; K <= 3; K++) {
            run_ckpt_range rg[3];
            for (int64_t e = 0; e < n; e++) got[e] = 0;
            for (int k = 0; k < K; k++) {
                int64_t lo, hi;
                run_split(n, k, K, &lo, &hi);
                rg[k] = (run_ckpt_range){.params = model_param_at(bare, 0), .nparams = model_nparams(bare), .lo = lo,
                                         .hi = hi, .shard = got + lo};
            }
            if (run_ckpt_read_ranges(dir, "model", rg, K, NULL))
                fail_msg("%s EP %d/%d, %d pieces: %s", dir, r, ep, K, base_err_msg());
            if (memcmp(got, ref, (size_t)n * sizeof(float)))
                fail_msg("%s EP %d/%d: %d pieces differ from the EP model's arena", dir, r, ep, K);
        }
        free(got), free(ref);
        model_free(whole), model_free(bare);
    }
}

static void ep_ranges_all(const char *dir) {
    for (int ep = 2; ep <= 4; ep += 2) ep_ranges_equal(dir, ep);
    printf("# %s: every EP index's pieces (EP 2, 4) equal the EP load bit for bit\n", dir);
}

static void test_ep_ranges(void **state) {
    (void)state;
    each_fixture(ep_ranges_all);
}

/* Model directory dst: src's config.json and its model.safetensors without
 * the tensors whose names hold part (all of the name where whole); the
 * number left out. */
static int copy_without(const char *src, const char *dst, const char *part, int whole) {
    char *sp = base_path_join(src, "model.safetensors"), *dp = base_path_join(dst, "model.safetensors");
    char *sc = base_path_join(src, "config.json"), *dc = base_path_join(dst, "config.json");
    char *text;
    size_t len;
    assert_int_equal(base_read_file(sc, &text, &len), BASE_OK);
    test_write_file(dc, text, len);
    free(text);
    st_file *f = NULL;
    assert_int_equal(st_open(sp, &f), BASE_OK);
    st_writer *w = st_writer_new();
    int dropped = 0;
    float **keep = calloc((size_t)st_count(f), sizeof *keep);
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        if (whole ? !strcmp(t->name, part) : strstr(t->name, part) != NULL) {
            dropped++;
            continue;
        }
        keep[i] = malloc((size_t)st_numel(t) * sizeof(float));
        assert_int_equal(st_file_load(f, t->name, TENSOR_F32, keep[i], st_numel(t)), BASE_OK);
        st_writer_add(w, t->name, TENSOR_F32, t->ndim, t->shape, keep[i]);
    }
    assert_int_equal(st_writer_write(w, dp), BASE_OK);
    st_writer_free(w);
    for (int i = 0; i < st_count(f); i++) free(keep[i]);
    free(keep);
    st_close(f);
    free(sp), free(dp), free(sc), free(dc);
    return dropped;
}

/* tiny-v3-b without its e_score_correction_bias tensors: zeros on both paths. */
static void test_missing_bias(void **state) {
    (void)state;
    char *src = fixture("tiny-v3-b"), *tmp = test_tmpdir();
    assert_true(copy_without(src, tmp, "e_score_correction_bias", 0) > 0);
    ranges_equal(tmp);
    test_rmdir(tmp);
    free(src), free(tmp);
}

static void test_random_ranges(void **state) {
    (void)state;
    char *js = test_tiny_config("\"tie_word_embeddings\": true");
    cJSON *j = cJSON_Parse(js);
    model_config c;
    assert_int_equal(model_config_parse(j, "config.json", &c), BASE_OK);
    cJSON_Delete(j);
    free(js);
    model *whole = NULL, *bare = NULL;
    model_load_opts o = {.no_arena = 1};
    assert_int_equal(model_init_random(&c, ops_cpu(), 11, 0.3f, NULL, &whole), BASE_OK);
    assert_int_equal(model_init_random(&c, ops_cpu(), 11, 0.3f, &o, &bare), BASE_OK);
    assert_true(model_arena_released(bare));
    float *ref = arena_of(whole);
    int64_t n = model_numel(bare);
    float *got = malloc((size_t)n * sizeof(float));
    for (int W = 1; W <= 4; W++) {
        for (int r = 0; r < W; r++) {
            int64_t lo, hi;
            run_split(n, r, W, &lo, &hi);
            model_init_random_range(bare, 11, 0.3f, lo, hi, got + lo);
        }
        if (memcmp(got, ref, (size_t)n * sizeof(float))) fail_msg("random ranges of %d ranks differ", W);
    }
    free(got), free(ref);
    model_free(whole), model_free(bare);
}

static void test_errors(void **state) {
    (void)state;
    char *src = fixture("tiny-v3-b"), *tmp = test_tmpdir();
    copy_without(src, tmp, "model.layers.1.self_attn.o_proj.weight", 1); /* without one trainable tensor */
    model *m = NULL;
    model_load_opts o = {.no_arena = 1};
    assert_int_equal(model_load(tmp, ops_cpu(), &o, &m), BASE_ERR_INVALID);
    assert_null(m);
    assert_non_null(strstr(base_err_msg(), "model.layers.1.self_attn.o_proj.weight"));
    o.frozen = 1;
    assert_int_equal(model_load(src, ops_cpu(), &o, &m), BASE_ERR_UNSUPPORTED);
    assert_non_null(strstr(base_err_msg(), "without its arena"));
    test_rmdir(tmp);
    free(src), free(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_ranges), cmocka_unit_test(test_missing_bias),
                                       cmocka_unit_test(test_random_ranges), cmocka_unit_test(test_ep_ranges),
                                       cmocka_unit_test(test_errors)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
