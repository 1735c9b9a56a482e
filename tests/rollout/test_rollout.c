/* Tests of the rollout engine on the hf-tiny-v3-a fixture: greedy output
 * equals Hugging Face's cached generation, completions do not depend on
 * batch composition, seeds, recorded log-probs equal the training forward,
 * stop tokens and stop strings. */
#include "common/test_common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/st.h"
#include "model/model.h"
#include "rollout/rollout.h"
#include "tok/tok.h"

static model *M;
static st_file *REF;

static int setup(void **state) {
    (void)state;
    char *dir = test_shared_path("fixtures/hf-tiny-v3-a");
    if (model_load(dir, ops_cpu(), NULL, &M)) fail_msg("%s", base_err_msg());
    char *ref = base_path_join(dir, "reference.safetensors");
    if (st_open(ref, &REF)) fail_msg("%s", base_err_msg());
    free(ref), free(dir);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    model_free(M);
    st_close(REF);
    return 0;
}

static int32_t *ref_ids(const char *name, int64_t *n) {
    const st_tensor *t = st_find(REF, name);
    assert_non_null(t);
    *n = t->shape[0];
    int32_t *ids = malloc((size_t)*n * sizeof *ids);
    const int64_t *src = t->data;
    for (int64_t i = 0; i < *n; i++) ids[i] = (int32_t)src[i];
    return ids;
}

static rollout_engine *engine(int max_seqs, int max_group) {
    rollout_limits lim = {.max_seqs = max_seqs, .max_prompts = 8, .max_group = max_group,
                          .max_prompt_len = 40, .max_new_tokens = 32};
    rollout_engine *e;
    if (rollout_new(M, &lim, &e)) fail_msg("%s", base_err_msg());
    return e;
}

static void test_greedy_matches_hf(void **state) {
    (void)state;
    int64_t np, no;
    int32_t *prompt = ref_ids("greedy.prompt", &np), *want = ref_ids("greedy.output", &no);
    rollout_engine *e = engine(2, 2);
    const int32_t *pp[1] = {prompt};
    int32_t pl[1] = {(int32_t)np};
    rollout_request r = {.n_prompts = 1, .prompt_ids = pp, .prompt_len = pl, .G = 2,
                         .sampling = {0, 1, 0, 0}, .max_new_tokens = no, .seed = 1};
    rollout_result res;
    if (rollout_generate(e, &r, &res)) fail_msg("%s", base_err_msg());
    assert_int_equal(res.n, 2);
    for (int g = 0; g < 2; g++) {
        assert_int_equal(res.out[g].len, no);
        assert_int_equal(res.out[g].finish, ROLLOUT_FINISH_LENGTH);
        for (int64_t i = 0; i < no; i++) assert_int_equal(res.out[g].ids[i], want[i]);
    }
    rollout_free(e);
    free(prompt), free(want);
}

/* Three prompts of different lengths, G = 4, sampled at temperature 1. */
static void run_sampled(rollout_engine *e, uint64_t seed, int32_t **ids_out, float **lp_out, int64_t *lens) {
    int64_t n0;
    int32_t *p0 = ref_ids("input_ids.0", &n0);
    const int32_t *pp[3] = {p0, p0 + 5, p0 + 20};
    int32_t pl[3] = {7, 13, 3};
    rollout_request r = {.n_prompts = 3, .prompt_ids = pp, .prompt_len = pl, .G = 4,
                         .sampling = {1.0f, 1, 0, 0}, .max_new_tokens = 20, .seed = seed, .step = 3,
                         .prompt_base = 10};
    rollout_result res;
    if (rollout_generate(e, &r, &res)) fail_msg("%s", base_err_msg());
    assert_int_equal(res.n, 12);
    for (int i = 0; i < 12; i++) {
        lens[i] = res.out[i].len;
        ids_out[i] = malloc(sizeof(int32_t) * 20);
        lp_out[i] = malloc(sizeof(float) * 20);
        memcpy(ids_out[i], res.out[i].ids, sizeof(int32_t) * (size_t)lens[i]);
        memcpy(lp_out[i], res.out[i].logp, sizeof(float) * (size_t)lens[i]);
    }
    free(p0);
}

static void free_runs(int32_t **ids, float **lp) {
    for (int i = 0; i < 12; i++) free(ids[i]), free(lp[i]);
}

static void test_batch_independence(void **state) {
    (void)state;
    int32_t *a[12], *b[12], *c[12];
    float *la[12], *lb[12], *lc[12];
    int64_t na[12], nb[12], nc[12];
    rollout_engine *small = engine(4, 4), *big = engine(16, 4);
    run_sampled(small, 5, a, la, na);
    run_sampled(big, 5, b, lb, nb);
    run_sampled(big, 6, c, lc, nc);
    int differs = 0;
    for (int i = 0; i < 12; i++) {
        assert_int_equal(na[i], nb[i]);
        for (int64_t t = 0; t < na[i]; t++) {
            assert_int_equal(a[i][t], b[i][t]);
            assert_true(la[i][t] == lb[i][t]); /* bit-identical */
        }
        if (na[i] != nc[i] || memcmp(a[i], c[i], sizeof(int32_t) * (size_t)na[i])) differs++;
    }
    assert_true(differs > 6); /* another seed gives other samples */
    /* samples of a group differ from each other */
    assert_true(memcmp(a[0], a[1], sizeof(int32_t) * 20) != 0);
    free_runs(a, la), free_runs(b, lb), free_runs(c, lc);
    rollout_free(small), rollout_free(big);
}

/* The recorded sampling log-probs equal the training forward's log-probs
 * of the same tokens at logit_scale 1/T. */
static void test_logp_matches_forward(void **state) {
    (void)state;
    int64_t n0;
    int32_t *p0 = ref_ids("input_ids.0", &n0);
    rollout_engine *e = engine(4, 2);
    const int32_t *pp[1] = {p0};
    int32_t pl[1] = {9};
    float T = 0.7f;
    rollout_request r = {.n_prompts = 1, .prompt_ids = pp, .prompt_len = pl, .G = 2,
                         .sampling = {T, 1, 0, 0}, .max_new_tokens = 16, .seed = 11};
    rollout_result res;
    if (rollout_generate(e, &r, &res)) fail_msg("%s", base_err_msg());
    int32_t ids[64], cu[3] = {0, 0, 0};
    int n = 0;
    for (int g = 0; g < 2; g++) {
        memcpy(ids + n, p0, 9 * sizeof(int32_t));
        memcpy(ids + n + 9, res.out[g].ids, sizeof(int32_t) * (size_t)res.out[g].len);
        n += 9 + (int)res.out[g].len;
        cu[g + 1] = n;
    }
    model_train_limits tl = {.max_tokens = 64, .max_seqs = 2};
    model_train *tr;
    if (model_train_new(M, &tl, &tr)) fail_msg("%s", base_err_msg());
    model_batch b = {.nseq = 2, .ids = ids, .cu_seqlens = cu, .logit_scale = 1.0f / T};
    if (model_forward(tr, &b)) fail_msg("%s", base_err_msg());
    float lp[64];
    model_train_download(tr, lp, NULL);
    for (int g = 0; g < 2; g++)
        for (int64_t t = 0; t < res.out[g].len; t++) {
            float want = lp[cu[g] + 8 + t]; /* position of the token before it */
            if (fabsf(want - res.out[g].logp[t]) > 1e-4f)
                fail_msg("sample %d token %lld: logp %g vs forward %g", g, (long long)t, res.out[g].logp[t], want);
        }
    model_train_free(tr);
    rollout_free(e);
    free(p0);
}

static void test_stops(void **state) {
    (void)state;
    int64_t n0;
    int32_t *p0 = ref_ids("input_ids.0", &n0);
    rollout_engine *e = engine(2, 1);
    const int32_t *pp[1] = {p0};
    int32_t pl[1] = {12};
    rollout_request r = {.n_prompts = 1, .prompt_ids = pp, .prompt_len = pl, .G = 1,
                         .sampling = {0, 1, 0, 0}, .max_new_tokens = 24};
    rollout_result res;
    if (rollout_generate(e, &r, &res)) fail_msg("%s", base_err_msg());
    int32_t full[24];
    memcpy(full, res.out[0].ids, sizeof full);
    /* a stop token: generation ends at its first occurrence, kept */
    int32_t stop = full[5];
    int first = 0;
    while (full[first] != stop) first++;
    r.stop_ids = &stop;
    r.n_stop_ids = 1;
    if (rollout_generate(e, &r, &res)) fail_msg("%s", base_err_msg());
    assert_int_equal(res.out[0].len, first + 1);
    assert_int_equal(res.out[0].finish, ROLLOUT_FINISH_STOP);
    assert_string_equal(rollout_finish_name(res.out[0].finish), "stop");
    /* a stop string made of the bytes of two consecutive tokens */
    char *dir = test_tmpdir();
    tok_bytelevel_spec spec = tok_bytelevel_default();
    if (tok_write_bytelevel(dir, &spec)) fail_msg("%s", base_err_msg());
    tok_tokenizer *tk;
    if (tok_load(dir, &tk)) fail_msg("%s", base_err_msg());
    int k = 0;
    while (k < 20 && (full[k] >= 127 || full[k + 1] >= 127 || full[k] < 32 || full[k + 1] < 32)) k++;
    char s[3] = {0};
    const char *stops[1] = {s};
    if (k < 20) {
        s[0] = (char)full[k];
        s[1] = (char)full[k + 1];
        r.n_stop_ids = 0;
        r.stop_strings = stops;
        r.n_stop_strings = 1;
        r.tok = tk;
        if (rollout_generate(e, &r, &res)) fail_msg("%s", base_err_msg());
        char *text = tok_decode_str(tk, res.out[0].ids, res.out[0].len, 0, NULL);
        char *hit = strstr(text, s);
        assert_non_null(hit);
        assert_int_equal(hit + 2 - text, (long)strlen(text)); /* ends with the stop string */
        assert_int_equal(res.out[0].finish, ROLLOUT_FINISH_STOP);
        free(text);
    } else {
        fail_msg("no printable byte pair in the greedy output to test stop strings");
    }
    /* bad requests */
    r.tok = NULL;
    assert_int_equal(rollout_generate(e, &r, &res), BASE_ERR_INVALID); /* stop strings need a tokenizer */
    r.n_stop_strings = 0;
    r.G = 3;
    assert_int_equal(rollout_generate(e, &r, &res), BASE_ERR_INVALID);
    r.G = 1;
    int32_t bad[1] = {999};
    const int32_t *pb[1] = {bad};
    int32_t one[1] = {1};
    r.prompt_ids = pb;
    r.prompt_len = one;
    assert_int_equal(rollout_generate(e, &r, &res), BASE_ERR_INVALID);
    tok_free(tk);
    test_rmdir(dir);
    free(dir);
    rollout_free(e);
    free(p0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_matches_hf), cmocka_unit_test(test_batch_independence),
        cmocka_unit_test(test_logp_matches_forward), cmocka_unit_test(test_stops),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
