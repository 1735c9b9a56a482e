/*
 * src/tok on untrusted input (tokenizers come from the Hub; text comes from
 * datasets and from the model): duplicate added tokens, ids far outside the
 * vocabulary, bad TemplateProcessing ids, invalid UTF-8 and U+0000 in the
 * file, loading from memory, a byte-0 token in decoded text, and the same
 * paths through `grpo tokenize`. HF's exact duplicate semantics are checked
 * id for id by the dup_added family of test_tok (tests/tok/data/dup_added).
 */
#include "common/test_common.h"

#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "tok/tok.h"

/* A tokenizer.json in a fresh directory; returns the directory. */
static char *write_tokenizer(const char *json, size_t len) {
    char *dir = test_tmpdir();
    char *p = base_path_join(dir, "tokenizer.json");
    test_write_file(p, json, len ? len : strlen(json));
    free(p);
    return dir;
}

static void expect_refused(const char *json, size_t len, base_status want, const char *needle) {
    char *dir = write_tokenizer(json, len);
    tok_tokenizer *tk = (tok_tokenizer *)1;
    double t0 = base_now();
    base_status st = tok_load(dir, &tk);
    if (st != want || !strstr(base_err_msg(), needle) || !strstr(base_err_msg(), dir))
        fail_msg("status %d (want %d), message: %s", st, want, base_err_msg());
    assert_null(tk);
    assert_true(base_now() - t0 < 5); /* refused, not built first */
    test_rmdir(dir);
    free(dir);
}

#define ADDED(id, content, special, normalized)                                                   \
    "{\"id\": " #id ", \"content\": \"" content "\", \"single_word\": false, \"lstrip\": false, "  \
    "\"rstrip\": false, \"normalized\": " #normalized ", \"special\": " #special "}"

/* The reproducer: "<x>" special, then not special. The later flags
 * win under the same id, the content stays special (HF), nothing is freed
 * that a map still points at (ASan saw a use-after-free here). */
static void test_duplicate_added(void **state) {
    (void)state;
    const char *json = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, "
                       "\"merges\": [\"a b\"]}, \"added_tokens\": ["
                       ADDED(3, "<x>", true, false) ", " ADDED(3, "<x>", false, false) ", "
                       ADDED(4, "<y>", false, false) ", " ADDED(4, "<y>", true, false) ", "
                       ADDED(9, "<x>", true, false) "]}";
    char *dir = write_tokenizer(json, 0);
    tok_tokenizer *tk;
    assert_int_equal(tok_load(dir, &tk), BASE_OK);
    assert_int_equal(tok_vocab_size(tk), 5);
    assert_int_equal(tok_token_id(tk, "<x>"), 3);
    assert_int_equal(tok_token_id(tk, "<y>"), 4);
    assert_string_equal(tok_token_str(tk, 3), "<x>");
    assert_true(tok_is_special(tk, 3));
    assert_true(tok_is_special(tk, 4));
    tok_ids ids = {0};
    assert_int_equal(tok_encode(tk, "ab<x>a<y>", 9, 0, &ids), BASE_OK);
    const int32_t want[] = {2, 3, 0, 4};
    assert_int_equal(ids.n, 4);
    assert_memory_equal(ids.ids, want, sizeof want);
    /* special tokens as text: neither matches */
    ids.n = 0;
    assert_int_equal(tok_encode(tk, "<x>", 3, TOK_ENC_SPECIAL_AS_TEXT, &ids), BASE_OK);
    assert_int_equal(ids.n, 0); /* "<", "x", ">" are not in the vocabulary: dropped, as HF */
    char *text = tok_decode_str(tk, want, 4, TOK_DEC_SKIP_SPECIAL, NULL);
    assert_string_equal(text, "ab a");
    free(text);
    tok_ids_free(&ids);
    tok_free(tk);
    test_rmdir(dir);
    free(dir);
}

/* Ids are bounded by what the file defines: entries + 65536. An id of 2e9
 * in a tiny file used to allocate ~8 GB of per-id tables. */
static void test_id_bounds(void **state) {
    (void)state;
    expect_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 2000000000}, "
                   "\"merges\": []}}", 0, BASE_ERR_INVALID,
                   "model.vocab[\"b\"] has id 2000000000, but the file defines 2 tokens "
                   "(model.vocab + added_tokens): ids must be below 65538");
    /* the bound itself: entries (2 + 1 added) + 65536 */
    char json[512];
    const char *fmt = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": %d}, \"merges\": []},"
                      " \"added_tokens\": [" ADDED(0, "<s>", true, false) "]}";
    snprintf(json, sizeof json, fmt, 65538);
    char *dir = write_tokenizer(json, 0);
    tok_tokenizer *tk;
    assert_int_equal(tok_load(dir, &tk), BASE_OK);
    assert_int_equal(tok_vocab_size(tk), 65539);
    assert_int_equal(tok_token_id(tk, "<s>"), 2); /* after the 2 model entries, as HF */
    assert_string_equal(tok_token_str(tk, 65538), "b");
    assert_null(tok_token_str(tk, 1000)); /* a hole */
    tok_free(tk);
    test_rmdir(dir);
    free(dir);
    snprintf(json, sizeof json, fmt, 65539);
    expect_refused(json, 0, BASE_ERR_INVALID, "ids must be below 65539");
    expect_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1e30}, \"merges\": []}}", 0,
                   BASE_ERR_PARSE, "model.vocab[\"a\"] is not a valid id (got 1e+30)");
    expect_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0.5}, \"merges\": []}}", 0,
                   BASE_ERR_PARSE, "model.vocab[\"a\"] is not a valid id (got 0.5)");
    expect_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                   "\"added_tokens\": [{\"id\": 1e30, \"content\": \"x\"}]}", 0, BASE_ERR_PARSE,
                   "added_tokens[0] needs \"id\" (an integer in [0, 2^32))");
    expect_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                   "\"added_tokens\": [{\"id\": -1, \"content\": \"x\"}]}", 0, BASE_ERR_PARSE,
                   "added_tokens[0] needs");
    /* TemplateProcessing ids must be ids of the tokenizer */
    const char *tp = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                     "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": "
                     "[{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, "
                     "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"special_tokens\": "
                     "{\"<s>\": {\"id\": \"<s>\", \"ids\": [%s], \"tokens\": [\"<s>\"]}}}}";
    snprintf(json, sizeof json, tp, "7");
    expect_refused(json, 0, BASE_ERR_INVALID,
                   "post_processor: TemplateProcessing id 7 is not a token (the tokenizer has ids 0..0)");
    snprintf(json, sizeof json, tp, "1e30");
    expect_refused(json, 0, BASE_ERR_PARSE,
                   "TemplateProcessing special token \"<s>\" has an id that is not an integer");
}

/* Two strings with one id: the first in the file names it, whatever the
 * hashing (HF picks by HashMap order). */
static void test_shared_id(void **state) {
    (void)state;
    for (int order = 0; order < 2; order++) {
        const char *json = order ? "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"zz\": 0, \"a\": 0}, "
                                   "\"merges\": []}}"
                                 : "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"zz\": 0}, "
                                   "\"merges\": []}}";
        char *dir = write_tokenizer(json, 0);
        tok_tokenizer *tk;
        assert_int_equal(tok_load(dir, &tk), BASE_OK);
        assert_string_equal(tok_token_str(tk, 0), order ? "zz" : "a");
        tok_free(tk);
        test_rmdir(dir);
        free(dir);
    }
}

/* The file must be UTF-8 (as for HF) without U+0000 in its strings. */
static void test_bad_text_in_file(void **state) {
    (void)state;
    expect_refused("{\"model\": {\"type\": \"BPE\",\n \"vocab\": {\"a\xff\": 0}, \"merges\": []}}", 0,
                   BASE_ERR_PARSE, "tokenizer.json:2:14: invalid UTF-8");
    expect_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\\u0000b\": 0}, \"merges\": []}}", 0,
                   BASE_ERR_PARSE, "tokenizer.json:1:39: U+0000 (NUL) in a string: not supported");
    expect_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}} trailing", 0,
                   BASE_ERR_PARSE, "extra text after the JSON value");
}

/* tok_load_mem gives the tokenizer tok_load gives. */
static void test_load_mem(void **state) {
    (void)state;
    char *dir = test_src_path("tests/tok/data/bytelevel");
    char *jp = base_path_join(dir, "tokenizer.json"), *cp = base_path_join(dir, "tokenizer_config.json");
    char *json, *cfg;
    size_t jn, cn;
    assert_int_equal(base_read_file(jp, &json, &jn), BASE_OK);
    assert_int_equal(base_read_file(cp, &cfg, &cn), BASE_OK);
    tok_tokenizer *a, *b;
    assert_int_equal(tok_load(dir, &a), BASE_OK);
    assert_int_equal(tok_load_mem(json, jn, cfg, cn, "mem.json", &b), BASE_OK);
    assert_int_equal(tok_vocab_size(a), tok_vocab_size(b));
    assert_int_equal(tok_bos_id(a), tok_bos_id(b));
    const char *text = "<think>x</think> caf\xc3\xa9 <answer>42</answer>";
    tok_ids ia = {0}, ib = {0};
    assert_int_equal(tok_encode(a, text, strlen(text), TOK_ENC_ADD_SPECIAL, &ia), BASE_OK);
    assert_int_equal(tok_encode(b, text, strlen(text), TOK_ENC_ADD_SPECIAL, &ib), BASE_OK);
    assert_int_equal(ia.n, ib.n);
    assert_memory_equal(ia.ids, ib.ids, (size_t)ia.n * sizeof(int32_t));
    tok_free(b);
    /* errors name `what` */
    assert_int_equal(tok_load_mem(json, jn / 2, NULL, 0, "mem.json", &b), BASE_ERR_PARSE);
    assert_non_null(strstr(base_err_msg(), "mem.json:"));
    assert_null(b);
    assert_int_equal(tok_load_mem(json, jn, "{\"bos_token\": \"<nope>\"}", 23, "mem.json", &b),
                     BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "tokenizer_config.json: bos_token \"<nope>\""));
    tok_ids_free(&ia);
    tok_ids_free(&ib);
    tok_free(a);
    free(json), free(cfg), free(jp), free(cp), free(dir);
}

/* A model can sample the byte-level token of byte 0 ("\xc4\x80", U+0100).
 * Decoded text never holds a NUL: that byte becomes U+FFFD, so a C-string
 * consumer (JSON writer, Lua, stop strings) sees the whole completion. */
static void test_decode_nul(void **state) {
    (void)state;
    char *dir = test_shared_path("fixtures/deepseek-v3-tokenizer");
    tok_tokenizer *tk;
    assert_int_equal(tok_load(dir, &tk), BASE_OK);
    int32_t nul = tok_token_id(tk, "\xc4\x80");
    assert_true(nul >= 0);
    tok_ids ids = {0};
    assert_int_equal(tok_encode(tk, "ab", 2, 0, &ids), BASE_OK);
    tok_ids_push(&ids, nul);
    assert_int_equal(tok_encode(tk, "cd", 2, 0, &ids), BASE_OK);
    size_t len;
    char *text = tok_decode_str(tk, ids.ids, ids.n, 0, &len);
    assert_int_equal(len, strlen(text));
    assert_string_equal(text, "ab\xef\xbf\xbd" "cd");
    free(text);
    tok_ids_free(&ids);
    tok_free(tk);
    free(dir);
}

/* `grpo tokenize`: a line whose text holds U+0000 is refused with its
 * position (it used to tokenize as the text before the NUL and echo the cut
 * text); decoding a byte-0 id writes U+FFFD, not a cut string. */
static void test_cli_nul(void **state) {
    (void)state;
    char *dir = test_tmpdir();
    char *in = base_path_join(dir, "in.jsonl"), *out = base_path_join(dir, "out.jsonl");
    char *tk = test_shared_path("fixtures/deepseek-v3-tokenizer");
    const char *lines = "{\"text\": \"a\\u0000b\"}\n{\"text\": \"a\\\\u0000b\"}\n";
    test_write_file(in, lines, strlen(lines));
    base_buf args = {0};
    base_buf_printf(&args, "tokenize --tokenizer '%s' --in '%s' --out '%s'", tk, in, out);
    char *log, *o;
    size_t n;
    assert_int_equal(test_run_grpo(args.data, &log), 1);
    assert_non_null(strstr(log, "in.jsonl:1:12: U+0000 (NUL) in a string: not supported (line skipped)"));
    assert_int_equal(base_read_file(out, &o, &n), BASE_OK);
    assert_null(strstr(o, "{\"text\":\"a\","));
    assert_non_null(strstr(o, "{\"text\":\"a\\\\u0000b\",\"ids\":["));
    free(o);
    free(log);
    /* decode: ids 67 ("a"), 191 ("\xc4\x80", byte 0; HF decodes "a\0b"),
     * 68 ("b"); and an id that is not 32-bit */
    const char *dec = "{\"ids\": [67, 191, 68]}\n{\"ids\": [4294967296]}\n";
    test_write_file(in, dec, strlen(dec));
    base_buf_reset(&args);
    base_buf_printf(&args, "tokenize --tokenizer '%s' --in '%s' --out '%s' --decode", tk, in, out);
    assert_int_equal(test_run_grpo(args.data, &log), 1);
    assert_non_null(strstr(log, "in.jsonl:2: ids[0] is not a 32-bit integer"));
    assert_int_equal(base_read_file(out, &o, &n), BASE_OK);
    assert_string_equal(o, "{\"ids\":[67,191,68],\"text\":\"a\xef\xbf\xbd" "b\"}\n");
    free(o);
    free(log);
    base_buf_free(&args);
    test_rmdir(dir);
    free(tk), free(in), free(out), free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duplicate_added), cmocka_unit_test(test_id_bounds),
        cmocka_unit_test(test_shared_id),       cmocka_unit_test(test_bad_text_in_file),
        cmocka_unit_test(test_load_mem),        cmocka_unit_test(test_decode_nul),
        cmocka_unit_test(test_cli_nul),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
