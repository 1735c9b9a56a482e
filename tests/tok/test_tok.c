/*
 * Exactness of src/tok against Hugging Face tokenizers: the 30 shared
 * reference strings, the harder DeepSeek-V3 cases and the tokenizer families
 * and features of tests/tok/data (made by tests/tok/gen/gen_cases.py), plus
 * thread safety of batch encoding and linear-ish merging on huge words.
 */
#include "common/test_common.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base.h"
#include "tok/tok.h"

static tok_tokenizer *deepseek;

static int setup(void **state) {
    (void)state;
    char *dir = test_shared_path("fixtures/deepseek-v3-tokenizer");
    base_status st = tok_load(dir, &deepseek);
    if (st) fprintf(stderr, "%s\n", base_err_msg());
    free(dir);
    return st ? -1 : 0;
}

static int teardown(void **state) {
    (void)state;
    tok_free(deepseek);
    return 0;
}

/* Compare ids with a JSON array; prints the first difference. */
static int ids_equal(const tok_ids *got, const cJSON *want, const char *what, const char *where) {
    int n = cJSON_GetArraySize(want);
    int64_t i = 0;
    int ok = n == got->n;
    for (const cJSON *e = want->child; e && ok; e = e->next, i++)
        if ((int32_t)e->valuedouble != got->ids[i]) ok = 0;
    if (!ok) {
        fprintf(stderr, "%s: %s differ (got %lld ids, want %d):\n  got ", where, what,
                (long long)got->n, n);
        for (int64_t k = 0; k < got->n && k < 24; k++) fprintf(stderr, "%d ", got->ids[k]);
        fprintf(stderr, "\n  want ");
        int k = 0;
        for (const cJSON *e = want->child; e && k < 24; e = e->next, k++)
            fprintf(stderr, "%d ", (int)e->valuedouble);
        fprintf(stderr, "\n");
    }
    return ok;
}

static int str_equal(const char *got, const char *want, const char *what, const char *where) {
    if (!strcmp(got, want)) return 1;
    fprintf(stderr, "%s: %s differs:\n  got  \"%.120s\"\n  want \"%.120s\"\n", where, what, got,
            want);
    return 0;
}

static char *hex_decode(const char *h, size_t *n) {
    size_t len = strlen(h) / 2;
    char *o = base_xmalloc(len + 1);
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        o[i] = (char)v;
    }
    o[len] = 0;
    *n = len;
    return o;
}

/* One fixture line. bos_override: the id tokenizer_config.json's
 * add_bos_token prepends where HF tokenizers' own post-processor adds
 * nothing (DeepSeek-V3), or -1. Returns 1 if everything matched. */
static int check_case(const tok_tokenizer *tk, const cJSON *c, const char *where,
                      int32_t bos_override) {
    int ok = 1;
    tok_ids ids = {0};
    base_buf dec = {0};
    const cJSON *dids = cJSON_GetObjectItemCaseSensitive(c, "decode_ids");
    if (dids) {
        for (const cJSON *e = dids->child; e; e = e->next) tok_ids_push(&ids, (int32_t)e->valuedouble);
        tok_decode(tk, ids.ids, ids.n, 0, &dec);
        ok &= str_equal(dec.data, base_json_str(c, "decoded", "?"), "decode", where);
        base_buf_reset(&dec);
        tok_decode(tk, ids.ids, ids.n, TOK_DEC_SKIP_SPECIAL, &dec);
        ok &= str_equal(dec.data, base_json_str(c, "decoded_skip", "?"), "decode (skip)", where);
        goto done;
    }
    const char *hex = base_json_str(c, "text_hex", NULL);
    if (hex) {
        size_t n;
        char *raw = hex_decode(hex, &n);
        if (tok_encode(tk, raw, n, 0, &ids) != BASE_ERR_INVALID || ids.n != 0) {
            fprintf(stderr, "%s: invalid UTF-8 was not refused\n", where);
            ok = 0;
        } else if (!strstr(base_err_msg(), "invalid UTF-8 at byte")) {
            fprintf(stderr, "%s: unexpected message %s\n", where, base_err_msg());
            ok = 0;
        }
        tok_utf8_lossy(raw, n, &dec);
        ok &= tok_encode(tk, dec.data, dec.len, 0, &ids) == BASE_OK;
        ok &= ids_equal(&ids, cJSON_GetObjectItemCaseSensitive(c, "lossy_ids"), "lossy ids", where);
        free(raw);
        goto done;
    }
    const char *text = base_json_str(c, "text", NULL);
    const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, "ids");
    if (!text || !want) {
        fprintf(stderr, "%s: bad fixture line\n", where);
        ok = 0;
        goto done;
    }
    size_t len = strlen(text);
    ok &= tok_encode(tk, text, len, 0, &ids) == BASE_OK;
    ok &= ids_equal(&ids, want, "ids", where);
    tok_decode(tk, ids.ids, ids.n, 0, &dec);
    ok &= str_equal(dec.data, base_json_str(c, "decoded", "?"), "decode", where);
    base_buf_reset(&dec);
    tok_decode(tk, ids.ids, ids.n, TOK_DEC_SKIP_SPECIAL, &dec);
    ok &= str_equal(dec.data, base_json_str(c, "decoded_skip", "?"), "decode (skip)", where);

    const cJSON *add = cJSON_GetObjectItemCaseSensitive(c, "ids_add");
    ids.n = 0;
    ok &= tok_encode(tk, text, len, TOK_ENC_ADD_SPECIAL, &ids) == BASE_OK;
    if (bos_override >= 0) {
        /* expected: BOS, then the plain ids (HF's own post-processor adds none here) */
        ok &= ids.n >= 1 && ids.ids[0] == bos_override;
        if (ids.n >= 1) {
            tok_ids rest = {ids.ids + 1, ids.n - 1, 0};
            ok &= ids_equal(&rest, want, "ids after BOS", where);
        }
    } else {
        ok &= ids_equal(&ids, add ? add : want, "ids with special tokens", where);
    }
    const cJSON *sat = cJSON_GetObjectItemCaseSensitive(c, "ids_special_as_text");
    ids.n = 0;
    ok &= tok_encode(tk, text, len, TOK_ENC_SPECIAL_AS_TEXT, &ids) == BASE_OK;
    ok &= ids_equal(&ids, sat ? sat : want, "ids (special as text)", where);
done:
    tok_ids_free(&ids);
    base_buf_free(&dec);
    return ok;
}

/* Check every line of a cases file; returns the number of failures. */
static int check_file(const tok_tokenizer *tk, const char *path, int32_t bos_override, int *count) {
    base_jsonl *r;
    assert_int_equal(base_jsonl_open(path, &r), BASE_OK);
    int bad = 0;
    *count = 0;
    cJSON *c;
    base_status st;
    while ((st = base_jsonl_next(r, &c)) != BASE_ERR_EOF) {
        assert_int_equal(st, BASE_OK);
        char where[512];
        snprintf(where, sizeof where, "%s:%ld", path, base_jsonl_line(r));
        bad += !check_case(tk, c, where, bos_override);
        (*count)++;
        cJSON_Delete(c);
    }
    base_jsonl_close(r);
    return bad;
}

static void test_reference_ids(void **state) {
    (void)state;
    char *path = test_shared_path("fixtures/deepseek-v3-tokenizer/reference_ids.jsonl");
    base_jsonl *r;
    assert_int_equal(base_jsonl_open(path, &r), BASE_OK);
    int n = 0, bad = 0;
    cJSON *c;
    while (base_jsonl_next(r, &c) == BASE_OK) {
        char where[512];
        snprintf(where, sizeof where, "%s:%ld", path, base_jsonl_line(r));
        const char *text = base_json_str(c, "text", "");
        tok_ids ids = {0};
        assert_int_equal(tok_encode(deepseek, text, strlen(text), 0, &ids), BASE_OK);
        int ok = ids_equal(&ids, cJSON_GetObjectItemCaseSensitive(c, "ids"), "ids", where);
        char *dec = tok_decode_str(deepseek, ids.ids, ids.n, 0, NULL);
        ok &= str_equal(dec, base_json_str(c, "decoded", "?"), "decode", where);
        bad += !ok;
        n++;
        free(dec);
        tok_ids_free(&ids);
        cJSON_Delete(c);
    }
    base_jsonl_close(r);
    free(path);
    assert_int_equal(n, 30);
    assert_int_equal(bad, 0);
}

static void test_deepseek_properties(void **state) {
    (void)state;
    assert_int_equal(tok_vocab_size(deepseek), 128815);
    assert_int_equal(tok_bos_id(deepseek), 0);
    assert_int_equal(tok_eos_id(deepseek), 1);
    assert_int_equal(tok_pad_id(deepseek), 1);
    assert_int_equal(tok_token_id(deepseek, "<\xef\xbd\x9cUser\xef\xbd\x9c>"), 128803);
    assert_int_equal(tok_token_id(deepseek, "no such token"), -1);
    assert_string_equal(tok_token_str(deepseek, 0), "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>");
    assert_null(tok_token_str(deepseek, 128815));
    assert_true(tok_is_special(deepseek, 1));
    assert_false(tok_is_special(deepseek, 128803)); /* <｜User｜> is not special */
    assert_false(tok_is_special(deepseek, 19923));
    /* spec section 6.1 test vectors */
    tok_ids ids = {0};
    assert_int_equal(tok_encode(deepseek, "Hello world", 11, TOK_ENC_ADD_SPECIAL, &ids), BASE_OK);
    assert_int_equal(ids.n, 3);
    assert_int_equal(ids.ids[0], 0);
    assert_int_equal(ids.ids[1], 19923);
    assert_int_equal(ids.ids[2], 2058);
    tok_ids_free(&ids);
}

static void test_deepseek_hard(void **state) {
    (void)state;
    char *path = test_src_path("tests/tok/data/deepseek_hard.jsonl");
    int n;
    int bad = check_file(deepseek, path, tok_bos_id(deepseek), &n);
    free(path);
    assert_true(n >= 380);
    assert_int_equal(bad, 0);
}

static void test_families(void **state) {
    (void)state;
    char *root = test_src_path("tests/tok/data");
    DIR *d = opendir(root);
    assert_non_null(d);
    struct dirent *e;
    int families = 0, bad = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *dir = base_path_join(root, e->d_name);
        char *cases = base_path_join(dir, "cases.jsonl");
        if (base_file_exists(cases)) {
            tok_tokenizer *tk;
            base_status st = tok_load(dir, &tk);
            if (st) fprintf(stderr, "%s\n", base_err_msg());
            assert_int_equal(st, BASE_OK);
            int n, b = check_file(tk, cases, -1, &n);
            if (b) fprintf(stderr, "%s: %d of %d cases differ\n", e->d_name, b, n);
            assert_true(n >= 50);
            bad += b;
            families++;
            tok_free(tk);
        }
        free(cases);
        free(dir);
    }
    closedir(d);
    free(root);
    assert_true(families >= 19);
    assert_int_equal(bad, 0);
}

/* Batch encoding over threads gives exactly the sequential ids. */
static void test_batch_threads(void **state) {
    (void)state;
    char *path = test_shared_path("data/gsm8k_test.jsonl");
    char *all;
    size_t len;
    assert_int_equal(base_read_file(path, &all, &len), BASE_OK);
    enum { N = 400 };
    const char *texts[N];
    size_t lens[N];
    size_t chunk = len / N;
    for (int i = 0; i < N; i++) {
        texts[i] = all + (size_t)i * chunk;
        lens[i] = chunk;
        /* start and end on character boundaries */
        while (((uint8_t)texts[i][0] & 0xC0) == 0x80) texts[i]++, lens[i]--;
        while (lens[i] && tok_utf8_check(texts[i], lens[i]) != lens[i]) lens[i]--;
    }
    tok_ids seq[N], par[N];
    memset(seq, 0, sizeof seq);
    memset(par, 0, sizeof par);
    base_status st[N];
    for (int i = 0; i < N; i++)
        assert_int_equal(tok_encode(deepseek, texts[i], lens[i], 0, &seq[i]), BASE_OK);
    base_pool *pool = base_pool_create(4);
    for (int rep = 0; rep < 2; rep++) {
        for (int i = 0; i < N; i++) par[i].n = 0;
        assert_int_equal(tok_encode_batch(deepseek, pool, texts, lens, N, 0, par, st), BASE_OK);
        for (int i = 0; i < N; i++) {
            assert_int_equal(st[i], BASE_OK);
            assert_int_equal(par[i].n, seq[i].n);
            assert_memory_equal(par[i].ids, seq[i].ids, (size_t)seq[i].n * sizeof(int32_t));
        }
    }
    /* a bad text in the middle: the others still encode, it is reported */
    texts[7] = "bad \xff";
    lens[7] = 5;
    for (int i = 0; i < N; i++) par[i].n = 0;
    assert_int_equal(tok_encode_batch(deepseek, pool, texts, lens, N, 0, par, st), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "text 7 of the batch"));
    assert_int_equal(st[7], BASE_ERR_INVALID);
    assert_int_equal(par[7].n, 0);
    assert_int_equal(par[8].n, seq[8].n);
    base_pool_destroy(pool);
    for (int i = 0; i < N; i++) {
        tok_ids_free(&seq[i]);
        tok_ids_free(&par[i]);
    }
    free(all);
    free(path);
}

/* A 1 MiB word: merging must not be quadratic (that would take hours). The
 * result is checked against itself through decode. */
static void test_huge_word(void **state) {
    (void)state;
    size_t n = 1u << 20;
    char *w = base_xmalloc(n + 1);
    uint64_t x = 7;
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        w[i] = "abcdefgh"[x >> 61];
    }
    w[n] = 0;
    double t0 = base_now();
    tok_ids ids = {0};
    assert_int_equal(tok_encode(deepseek, w, n, 0, &ids), BASE_OK);
    double dt = base_now() - t0;
    assert_true(ids.n > (int64_t)(n / 16));
    size_t dlen;
    char *back = tok_decode_str(deepseek, ids.ids, ids.n, 0, &dlen);
    assert_int_equal(dlen, n);
    assert_memory_equal(back, w, n);
    fprintf(stderr, "1 MiB word: %lld ids in %.2f s\n", (long long)ids.n, dt);
    free(back);
    free(w);
    tok_ids_free(&ids);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_ids),  cmocka_unit_test(test_deepseek_properties),
        cmocka_unit_test(test_deepseek_hard),  cmocka_unit_test(test_families),
        cmocka_unit_test(test_batch_threads),  cmocka_unit_test(test_huge_word),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
