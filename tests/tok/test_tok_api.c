/*
 * src/tok beyond exactness: templates (R1-Zero, DeepSeek chat, user
 * templates), the byte-level writer, errors on bad tokenizer files, and the
 * `grpo tokenize` command.
 */
#include "common/test_common.h"

#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "tok/tok.h"

#define USER "<\xef\xbd\x9cUser\xef\xbd\x9c>"
#define ASSISTANT "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>"

static tok_tokenizer *ds;

static int setup(void **state) {
    (void)state;
    char *dir = test_shared_path("fixtures/deepseek-v3-tokenizer");
    base_status st = tok_load(dir, &ds);
    free(dir);
    return st ? -1 : 0;
}

static int teardown(void **state) {
    (void)state;
    tok_free(ds);
    return 0;
}

static void assert_ids(const tok_ids *got, const int32_t *want, int n) {
    if (got->n != n || memcmp(got->ids, want, (size_t)n * sizeof *want)) {
        fprintf(stderr, "got:");
        for (int64_t i = 0; i < got->n; i++) fprintf(stderr, " %d", got->ids[i]);
        fprintf(stderr, "\n");
    }
    assert_int_equal(got->n, n);
    assert_memory_equal(got->ids, want, (size_t)n * sizeof *want);
}

/* Find the fixture case whose text is `text`; returns its "ids" (owned by *doc). */
static const cJSON *fixture_ids(const char *text, cJSON **doc) {
    char *path = test_src_path("tests/tok/data/deepseek_hard.jsonl");
    base_jsonl *r;
    assert_int_equal(base_jsonl_open(path, &r), BASE_OK);
    free(path);
    cJSON *c;
    while (base_jsonl_next(r, &c) == BASE_OK) {
        const char *t = base_json_str(c, "text", NULL);
        if (t && !strcmp(t, text)) {
            base_jsonl_close(r);
            *doc = c;
            return cJSON_GetObjectItemCaseSensitive(c, "ids");
        }
        cJSON_Delete(c);
    }
    base_jsonl_close(r);
    fail_msg("no fixture case for \"%.60s\"", text);
    return NULL;
}

static void assert_ids_json(const tok_ids *got, const cJSON *want) {
    int n = cJSON_GetArraySize(want);
    int32_t *w = base_xmalloc((size_t)(n ? n : 1) * sizeof *w);
    int i = 0;
    for (const cJSON *e = want->child; e; e = e->next) w[i++] = (int32_t)e->valuedouble;
    assert_ids(got, w, n);
    free(w);
}

/* The R1-Zero template renders to the text HF encoded in the fixture (the
 * generator took it from grpo-survey.md section 3) and encodes identically. */
static void test_r1zero(void **state) {
    (void)state;
    tok_template_vars v = {.prompt = "What is 7*8?"};
    char *text = tok_template_render(ds, tok_template_r1zero, &v);
    assert_non_null(strstr(text, "<answer> answer here </answer>. User: What is 7*8?. Assistant:"));
    cJSON *doc;
    const cJSON *want = fixture_ids(text, &doc);
    tok_ids ids = {0};
    assert_int_equal(tok_template_encode(ds, tok_template_r1zero, &v, 0, &ids), BASE_OK);
    assert_ids_json(&ids, want);
    /* with special tokens: BOS first */
    ids.n = 0;
    assert_int_equal(tok_template_encode(ds, tok_template_r1zero, &v, TOK_ENC_ADD_SPECIAL, &ids),
                     BASE_OK);
    assert_int_equal(ids.ids[0], 0);
    assert_int_equal(ids.n, cJSON_GetArraySize(want) + 1);
    cJSON_Delete(doc);
    free(text);
    tok_ids_free(&ids);
}

/* A prompt holding a special-token string: the template's own added tokens
 * become ids, the prompt's stay text (same ids as TOK_ENC_ADDED_AS_TEXT). */
static void test_template_protects_values(void **state) {
    (void)state;
    const char *tmpl = "{bos}{system}" USER "{prompt}" ASSISTANT "{eos}";
    tok_template_vars v = {.prompt = "hi " ASSISTANT " <\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                           .system = "S"};
    tok_ids ids = {0};
    assert_int_equal(tok_template_encode(ds, tmpl, &v, 0, &ids), BASE_OK);
    /* expected: [0] + "S" + 128803 + text ids of the prompt + 128804 + [1] */
    tok_ids want = {0};
    tok_ids_push(&want, 0);
    assert_int_equal(tok_encode(ds, "S", 1, 0, &want), BASE_OK);
    tok_ids_push(&want, 128803);
    assert_int_equal(tok_encode(ds, v.prompt, strlen(v.prompt), TOK_ENC_ADDED_AS_TEXT, &want), BASE_OK);
    tok_ids_push(&want, 128804);
    tok_ids_push(&want, 1);
    assert_ids(&ids, want.ids, (int)want.n);
    for (int64_t i = 3; i < ids.n - 2; i++) assert_true(ids.ids[i] < 128000);
    /* literal braces stay text; the result equals encoding the rendered text */
    tok_template_vars w = {.prompt = "x"};
    char *r = tok_template_render(ds, "\\boxed{} {prompt} {unknown}", &w);
    assert_string_equal(r, "\\boxed{} x {unknown}");
    ids.n = want.n = 0;
    assert_int_equal(tok_template_encode(ds, "\\boxed{} {prompt} {unknown}", &w, 0, &ids), BASE_OK);
    assert_int_equal(tok_encode(ds, r, strlen(r), 0, &want), BASE_OK);
    assert_ids(&ids, want.ids, (int)want.n);
    free(r);
    tok_ids_free(&ids);
    tok_ids_free(&want);
}

/* The same under a normalizer (the Qwen2-style fixture tokenizer, NFC):
 * protected ranges survive normalization part by part. */
static void test_template_normalized(void **state) {
    (void)state;
    char *dir = test_src_path("tests/tok/data/qwen2");
    tok_tokenizer *tk;
    assert_int_equal(tok_load(dir, &tk), BASE_OK);
    int32_t start = tok_token_id(tk, "<|im_start|>"), end = tok_token_id(tk, "<|im_end|>");
    assert_true(start >= 0 && end >= 0);
    tok_template_vars v = {.prompt = "cafe\xcc\x81 <|im_end|> A\xcc\x8a<|im_start|>x"};
    tok_ids ids = {0}, want = {0};
    assert_int_equal(tok_template_encode(tk, "<|im_start|>user\n{prompt}<|im_end|>", &v, 0, &ids),
                     BASE_OK);
    tok_ids_push(&want, start);
    base_buf t = {0};
    base_buf_printf(&t, "user\n%s", v.prompt);
    assert_int_equal(tok_encode(tk, t.data, t.len, TOK_ENC_ADDED_AS_TEXT, &want), BASE_OK);
    tok_ids_push(&want, end);
    assert_ids(&ids, want.ids, (int)want.n);
    /* NFC happened: the composed and decomposed prompts give the same ids */
    ids.n = want.n = 0;
    tok_template_vars c = {.prompt = "caf\xc3\xa9 <|im_end|> \xc3\x85<|im_start|>x"};
    assert_int_equal(tok_template_encode(tk, "<|im_start|>user\n{prompt}<|im_end|>", &v, 0, &ids),
                     BASE_OK);
    assert_int_equal(tok_template_encode(tk, "<|im_start|>user\n{prompt}<|im_end|>", &c, 0, &want),
                     BASE_OK);
    assert_ids(&ids, want.ids, (int)want.n);
    base_buf_free(&t);
    tok_ids_free(&ids);
    tok_ids_free(&want);
    tok_free(tk);
    free(dir);
}

/* deepseek-v3-spec.md section 6.2: the worked chat example. */
static void test_chat_v3(void **state) {
    (void)state;
    tok_msg m[] = {{"system", "SYS"}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "2+2?"}};
    char *text;
    assert_int_equal(tok_chat_render(ds, m, 4, TOK_CHAT_GENERATION_PROMPT, &text), BASE_OK);
    assert_string_equal(text, "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>SYS" USER
                              "Hi" ASSISTANT "Hello!<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>" USER
                              "2+2?" ASSISTANT);
    free(text);
    tok_ids ids = {0};
    assert_int_equal(tok_chat_encode(ds, m, 4, TOK_CHAT_GENERATION_PROMPT, &ids), BASE_OK);
    const int32_t want[] = {0, 53, 20842, 128803, 23166, 128804, 19923, 3, 1, 128803, 20, 13, 20, 33, 128804};
    assert_ids(&ids, want, 15);
    tok_ids_free(&ids);
}

/* R1: the generation prompt ends in "<｜Assistant｜><think>\n"; earlier
 * assistant turns lose their reasoning. Compared with HF's encoding of the
 * rendered text in the fixture and with the V3 tokenizer's ids. */
static void test_chat_r1(void **state) {
    (void)state;
    tok_msg m[] = {{"user", "What is 2+2?"}};
    char *text;
    assert_int_equal(tok_chat_render(ds, m, 1, TOK_CHAT_GENERATION_PROMPT | TOK_CHAT_R1, &text),
                     BASE_OK);
    cJSON *doc;
    const cJSON *want = fixture_ids(text, &doc);
    tok_ids ids = {0};
    assert_int_equal(tok_chat_encode(ds, m, 1, TOK_CHAT_GENERATION_PROMPT | TOK_CHAT_R1, &ids), BASE_OK);
    assert_ids_json(&ids, want);
    /* ends in <｜Assistant｜> then "<think>\n" as text (the V3 vocabulary
     * has no <think> token) */
    tok_ids tail = {0};
    assert_int_equal(tok_encode(ds, "<think>\n", 8, 0, &tail), BASE_OK);
    assert_int_equal(ids.ids[ids.n - (int64_t)tail.n - 1], 128804);
    assert_memory_equal(ids.ids + ids.n - tail.n, tail.ids, (size_t)tail.n * sizeof(int32_t));
    cJSON_Delete(doc);
    free(text);
    tok_msg m2[] = {{"user", "a"}, {"assistant", "<think>x</think>y</think>answer"}, {"user", "b"}};
    assert_int_equal(tok_chat_render(ds, m2, 3, TOK_CHAT_R1, &text), BASE_OK);
    assert_non_null(strstr(text, ASSISTANT "answer<"));
    assert_null(strstr(text, "</think>"));
    free(text);
    tok_msg bad[] = {{"tool", "x"}};
    assert_int_equal(tok_chat_encode(ds, bad, 1, 0, &ids), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "tool"));
    tok_ids_free(&ids);
    tok_ids_free(&tail);
}

/* s with every `from` replaced by `to` (malloc'd); `from` must occur. */
static char *replace_all(const char *s, const char *from, const char *to) {
    base_buf b = {0};
    const char *p = s, *q;
    int n = 0;
    while ((q = strstr(p, from))) {
        base_buf_append(&b, p, (size_t)(q - p));
        base_buf_puts(&b, to);
        p = q + strlen(from);
        n++;
    }
    base_buf_puts(&b, p);
    assert_true(n > 0);
    return b.data;
}

/* A byte-level tokenizer in dir with the given specials and, when not
 * NULL, tokenizer_config.json's chat_template set to `ct` (JSON text). */
static tok_tokenizer *bytelevel_with(const char *dir, const char *const *specials, int n, const char *ct) {
    tok_bytelevel_spec sp = {specials, n, specials[0], specials[1], NULL, 1, 0};
    if (tok_write_bytelevel(dir, &sp)) fail_msg("%s", base_err_msg());
    if (ct) {
        char *path = base_path_join(dir, "tokenizer_config.json");
        cJSON *cfg;
        assert_int_equal(base_json_parse_file(path, &cfg), BASE_OK);
        cJSON_AddItemToObject(cfg, "chat_template", cJSON_Parse(ct));
        char *t = cJSON_Print(cfg);
        test_write_file(path, t, strlen(t));
        cJSON_free(t), cJSON_Delete(cfg), free(path);
    }
    tok_tokenizer *tk;
    if (tok_load(dir, &tk)) fail_msg("%s", base_err_msg());
    return tk;
}

/* The tokenizer's chat template: DeepSeek-V3's (the fixture) and R1's are
 * recognised by what they emit; variants, other templates and none are
 * told apart, and tok_chat_check says when the DeepSeek format is the
 * model's own. */
static void test_chat_template_kind(void **state) {
    (void)state;
    assert_int_equal(tok_chat_template(ds), TOK_CHAT_TEMPLATE_DEEPSEEK_V3);
    assert_int_equal(tok_chat_check(ds), BASE_OK);
    char *cfg_path = test_shared_path("fixtures/deepseek-v3-tokenizer/tokenizer_config.json");
    cJSON *cfg;
    assert_int_equal(base_json_parse_file(cfg_path, &cfg), BASE_OK);
    const char *v3 = base_json_str(cfg, "chat_template", NULL);
    assert_non_null(v3);
    assert_int_equal(tok_chat_template_classify(v3), TOK_CHAT_TEMPLATE_DEEPSEEK_V3);
    /* R1's: the assistant turn keeps the text after </think>, the
     * generation prompt opens the reasoning */
    char *a = replace_all(v3, "{{'" ASSISTANT "' + message['content'] + '<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>'}}",
                          "{% set content = message['content'] %}{% if '</think>' in content %}{% set content = "
                          "content.split('</think>')[-1] %}{% endif %}{{'" ASSISTANT "' + content + '<\xef\xbd\x9c"
                          "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>'}}");
    char *r1 = replace_all(a, "{{'" ASSISTANT "'}}", "{{'" ASSISTANT "<think>\\n'}}");
    assert_int_equal(tok_chat_template_classify(r1), TOK_CHAT_TEMPLATE_DEEPSEEK_R1);
    /* half-way (R1's prompt, V3's turns), a thinking switch, ChatML: other */
    char *half = replace_all(v3, "{{'" ASSISTANT "'}}", "{{'" ASSISTANT "<think>\\n'}}");
    assert_int_equal(tok_chat_template_classify(half), TOK_CHAT_TEMPLATE_OTHER);
    char *sw = replace_all(r1, "{{'" ASSISTANT "<think>\\n'}}",
                           "{{'" ASSISTANT "<think>\\n'}}{% if not enable_thinking %}{{'</think>'}}{% endif %}");
    assert_int_equal(tok_chat_template_classify(sw), TOK_CHAT_TEMPLATE_OTHER);
    assert_int_equal(tok_chat_template_classify("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                                                "{{ m['content'] }}<|im_end|>\n{% endfor %}"),
                     TOK_CHAT_TEMPLATE_OTHER);
    assert_int_equal(tok_chat_template_classify(NULL), TOK_CHAT_TEMPLATE_NONE);
    assert_int_equal(tok_chat_template_classify(""), TOK_CHAT_TEMPLATE_NONE);

    /* loaded from tokenizer_config.json: a string, or the "default" entry
     * of a list; without one, the DeepSeek format is the model's only when
     * its role markers are tokens */
    char *dir = test_tmpdir(), *d1 = base_path_join(dir, "a"), *d2 = base_path_join(dir, "b"),
         *d3 = base_path_join(dir, "c"), *d4 = base_path_join(dir, "d");
    static const char *const plain[] = {"<|bos|>", "<|eos|>", "<think>", "</think>"};
    static const char *const roles[] = {"<|bos|>", "<|eos|>", USER, ASSISTANT};
    tok_tokenizer *tk = bytelevel_with(d1, plain, 4, NULL);
    assert_int_equal(tok_chat_template(tk), TOK_CHAT_TEMPLATE_NONE);
    assert_int_equal(tok_chat_check(tk), BASE_ERR_UNSUPPORTED);
    assert_non_null(strstr(base_err_msg(), "has no chat template"));
    assert_non_null(strstr(base_err_msg(), d1));
    /* model output keeps its tokens in the assistant turn; user text stays text */
    tok_msg m[] = {{"user", "<think>"}, {"assistant", "<think>x</think>"}};
    tok_ids as_text = {0}, as_tokens = {0};
    assert_int_equal(tok_chat_encode(tk, m, 2, 0, &as_text), BASE_OK);
    assert_int_equal(tok_chat_encode(tk, m, 2, TOK_CHAT_ASSISTANT_TOKENS, &as_tokens), BASE_OK);
    int32_t think = tok_token_id(tk, "<think>"), end = tok_token_id(tk, "</think>");
    int n_think[2] = {0, 0};
    for (int64_t i = 0; i < as_text.n; i++) n_think[0] += as_text.ids[i] == think || as_text.ids[i] == end;
    for (int64_t i = 0; i < as_tokens.n; i++) n_think[1] += as_tokens.ids[i] == think || as_tokens.ids[i] == end;
    assert_int_equal(n_think[0], 0);
    assert_int_equal(n_think[1], 2);
    tok_ids_free(&as_text), tok_ids_free(&as_tokens);
    tok_free(tk);
    tk = bytelevel_with(d2, roles, 4, NULL);
    assert_int_equal(tok_chat_template(tk), TOK_CHAT_TEMPLATE_NONE);
    assert_int_equal(tok_chat_check(tk), BASE_OK);
    tok_free(tk);
    cJSON *list = cJSON_CreateArray(), *e1 = cJSON_CreateObject(), *e2 = cJSON_CreateObject();
    cJSON_AddStringToObject(e1, "name", "tool_use"), cJSON_AddStringToObject(e1, "template", "{{ x }}");
    cJSON_AddStringToObject(e2, "name", "default"), cJSON_AddStringToObject(e2, "template", r1);
    cJSON_AddItemToArray(list, e1), cJSON_AddItemToArray(list, e2);
    char *lt = cJSON_PrintUnformatted(list);
    tk = bytelevel_with(d3, roles, 4, lt);
    assert_int_equal(tok_chat_template(tk), TOK_CHAT_TEMPLATE_DEEPSEEK_R1);
    assert_int_equal(tok_chat_check(tk), BASE_OK);
    tok_free(tk);
    tk = bytelevel_with(d4, roles, 4, "\"{% for m in messages %}{{ m['content'] }}{% endfor %}\"");
    assert_int_equal(tok_chat_template(tk), TOK_CHAT_TEMPLATE_OTHER);
    assert_int_equal(tok_chat_check(tk), BASE_ERR_UNSUPPORTED);
    assert_non_null(strstr(base_err_msg(), "neither DeepSeek-V3's nor DeepSeek-R1's"));
    assert_string_equal(tok_chat_template_name(tok_chat_template(tk)), "other");
    tok_free(tk);
    cJSON_free(lt), cJSON_Delete(list);
    test_rmdir(dir);
    free(dir), free(d1), free(d2), free(d3), free(d4);
    free(a), free(r1), free(half), free(sw), free(cfg_path);
    cJSON_Delete(cfg);
}

/* The writer's output equals the committed data/bytelevel files (which HF
 * tokenizers and transformers were checked against by gen_cases.py), and
 * loads here with the expected ids. */
static void test_writer(void **state) {
    (void)state;
    char *dir = test_tmpdir();
    char *out = base_path_join(dir, "tk");
    tok_bytelevel_spec sp = tok_bytelevel_default();
    assert_int_equal(tok_write_bytelevel(out, &sp), BASE_OK);
    const char *files[] = {"tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; i < 2; i++) {
        char *a = base_path_join(out, files[i]);
        char *rel = base_path_join("tests/tok/data/bytelevel", files[i]);
        char *b = test_src_path(rel);
        char *da, *db;
        size_t na, nb;
        assert_int_equal(base_read_file(a, &da, &na), BASE_OK);
        assert_int_equal(base_read_file(b, &db, &nb), BASE_OK);
        assert_int_equal(na, nb);
        assert_memory_equal(da, db, na);
        free(da);
        free(db);
        free(a);
        free(b);
        free(rel);
    }
    tok_tokenizer *tk;
    assert_int_equal(tok_load(out, &tk), BASE_OK);
    assert_int_equal(tok_vocab_size(tk), 263);
    assert_int_equal(tok_bos_id(tk), 256);
    assert_int_equal(tok_eos_id(tk), 257);
    assert_int_equal(tok_pad_id(tk), 258);
    assert_int_equal(tok_token_id(tk, "</answer>"), 262);
    tok_ids ids = {0};
    assert_int_equal(tok_encode(tk, "<think>A\xc3\xa9", 10, TOK_ENC_ADD_SPECIAL, &ids), BASE_OK);
    const int32_t want[] = {256, 259, 'A', 0xc3, 0xa9};
    assert_ids(&ids, want, 5);
    tok_ids_free(&ids);
    tok_free(tk);
    /* bad specs are refused */
    const char *dup[] = {"<a>", "<a>"};
    tok_bytelevel_spec bad = {dup, 2, NULL, NULL, NULL, 0, 0};
    assert_int_equal(tok_write_bytelevel(out, &bad), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "twice"));
    tok_bytelevel_spec bad2 = {dup, 1, "<b>", NULL, NULL, 1, 0};
    assert_int_equal(tok_write_bytelevel(out, &bad2), BASE_ERR_INVALID);
    test_rmdir(dir);
    free(out);
    free(dir);
}

/* Bad tokenizer files: each a clear error naming the file. */
static void expect_load_error(const char *json, base_status want, const char *needle) {
    char *dir = test_tmpdir();
    char *path = base_path_join(dir, "tokenizer.json");
    if (json) test_write_file(path, json, strlen(json));
    tok_tokenizer *tk = (tok_tokenizer *)1;
    base_status st = tok_load(dir, &tk);
    if (st != want || !strstr(base_err_msg(), needle) || !strstr(base_err_msg(), dir))
        fprintf(stderr, "status %d, message: %s\n", st, base_err_msg());
    assert_int_equal(st, want);
    assert_null(tk);
    assert_non_null(strstr(base_err_msg(), needle));
    assert_non_null(strstr(base_err_msg(), dir)); /* names the file */
    test_rmdir(dir);
    free(path);
    free(dir);
}

#define MODEL_OK "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}"

static void test_bad_files(void **state) {
    (void)state;
    expect_load_error(NULL, BASE_ERR_IO, "tokenizer.json");
    expect_load_error("{\"model\": {\"type\": \"BPE\",", BASE_ERR_PARSE, "malformed JSON");
    expect_load_error("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", BASE_ERR_UNSUPPORTED,
                      "model type 'WordPiece' is unsupported");
    expect_load_error("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", BASE_ERR_UNSUPPORTED,
                      "model type 'Unigram' is unsupported");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
                      "\"merges\": [\"a c\"]}}", BASE_ERR_INVALID,
                      "names token \"c\" that is not in the vocabulary");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
                      "\"merges\": [[\"a\", \"b\"]]}}", BASE_ERR_INVALID,
                      "names token \"ab\" that is not in the vocabulary");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b c\"]}}",
                      BASE_ERR_PARSE, "not two tokens");
    expect_load_error("{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(ab\"}, "
                      "\"behavior\": \"Isolated\", \"invert\": false}, " MODEL_OK "}",
                      BASE_ERR_INVALID, "bad regex \"(ab\"");
    expect_load_error("{\"pre_tokenizer\": {\"type\": \"Metaspace\"}, " MODEL_OK "}",
                      BASE_ERR_UNSUPPORTED, "pre_tokenizer type 'Metaspace' is unsupported");
    expect_load_error("{\"normalizer\": {\"type\": \"Lowercase\"}, " MODEL_OK "}",
                      BASE_ERR_UNSUPPORTED, "normalizer type 'Lowercase' is unsupported");
    expect_load_error("{\"decoder\": {\"type\": \"WordPiece\"}, " MODEL_OK "}",
                      BASE_ERR_UNSUPPORTED, "decoder type 'WordPiece' is unsupported");
    expect_load_error("{\"post_processor\": {\"type\": \"BertProcessing\"}, " MODEL_OK "}",
                      BASE_ERR_UNSUPPORTED, "post_processor type 'BertProcessing' is unsupported");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"dropout\": 0.1, \"vocab\": {}, \"merges\": []}}",
                      BASE_ERR_UNSUPPORTED, "dropout");
    expect_load_error("{\"added_tokens\": [{\"content\": \"x\"}], " MODEL_OK "}", BASE_ERR_PARSE,
                      "added_tokens[0]");
    expect_load_error("[1, 2]", BASE_ERR_PARSE, "not a JSON object");
    /* a good file with a config naming an unknown bos token */
    char *dir = test_tmpdir();
    char *p = base_path_join(dir, "tokenizer.json");
    test_write_file(p, "{" MODEL_OK "}", strlen("{" MODEL_OK "}"));
    char *c = base_path_join(dir, "tokenizer_config.json");
    test_write_file(c, "{\"bos_token\": \"<s>\"}", strlen("{\"bos_token\": \"<s>\"}"));
    tok_tokenizer *tk;
    assert_int_equal(tok_load(dir, &tk), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "tokenizer_config.json: bos_token \"<s>\""));
    test_write_file(c, "{\"add_bos_token\": true}", strlen("{\"add_bos_token\": true}"));
    assert_int_equal(tok_load(dir, &tk), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "add_bos_token without a bos_token"));
    test_write_file(c, "{", 1);
    assert_int_equal(tok_load(dir, &tk), BASE_ERR_PARSE);
    assert_non_null(strstr(base_err_msg(), "tokenizer_config.json"));
    /* no config at all is fine: no BOS/EOS */
    remove(c);
    assert_int_equal(tok_load(dir, &tk), BASE_OK);
    assert_int_equal(tok_bos_id(tk), -1);
    tok_ids ids = {0};
    assert_int_equal(tok_encode(tk, "abba", 4, TOK_ENC_ADD_SPECIAL, &ids), BASE_OK);
    const int32_t want[] = {2, 1, 0};
    assert_ids(&ids, want, 3);
    tok_ids_free(&ids);
    tok_free(tk);
    test_rmdir(dir);
    free(p);
    free(c);
    free(dir);
}

static void test_utf8(void **state) {
    (void)state;
    assert_int_equal(tok_utf8_check("abc", 3), 3);
    assert_int_equal(tok_utf8_check("ab\xc3", 3), 2);
    assert_int_equal(tok_utf8_check("\xed\xa0\x80", 3), 0); /* surrogate */
    assert_int_equal(tok_utf8_check("xxxxxxxx\xf0\x9f\x98\x80", 12), 12);
    base_buf b = {0};
    tok_utf8_lossy("a\xf0\x9f\x98 b\xff\xc0\xaf", 9, &b);
    /* maximal subparts: F0 9F 98 -> one U+FFFD; FF, C0, AF -> one each */
    assert_string_equal(b.data, "a\xef\xbf\xbd b\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    base_buf_free(&b);
}

/* Templates typed on the command line are read as Lua string literals: the
 * same bytes Lua makes of the same text in a recipe. */
static void test_template_unescape(void **state) {
    (void)state;
    static const struct {
        const char *in, *out;
    } ok[] = {
        {"{prompt}\\n", "{prompt}\n"},
        {"Q: {prompt}\\nA:\\t\\r", "Q: {prompt}\nA:\t\r"},
        {"a\\\\b \\\"q\\\" \\'", "a\\b \"q\" '"},
        {"\\x41\\x7a|\\65\\0667|\\u{48}\\u{e9}\\u{20AC}\\u{1F600}", "Az|AB7|H\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"},
        {"a\\z  \n\t b", "ab"},
        {"line\\\nnext", "line\nnext"},
        {"{ not a variable } {system}", "{ not a variable } {system}"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char *o;
        if (tok_template_unescape(ok[i].in, &o)) fail_msg("'%s': %s", ok[i].in, base_err_msg());
        if (strcmp(o, ok[i].out)) fail_msg("'%s' -> '%s', want '%s'", ok[i].in, o, ok[i].out);
        free(o);
    }
    static const struct {
        const char *in, *msg;
    } bad[] = {
        {"{prompt} \\boxed{}", "byte 9: '\\b' is a control character"},
        {"\\frac", "byte 0: '\\f' is a control character"},
        {"\\a \\v", "'\\a' is a control character"},
        {"x\\q", "byte 1: '\\q' is not an escape"},
        {"x\\", "a lone backslash"},
        {"\\x4", "two hexadecimal digits"},
        {"\\256", "too large (256 > 255)"},
        {"\\u{}", "'\\u' needs {HEX}"},
        {"\\u{110000000}", "below 2^31"},
        {"\\u41", "'\\u' needs {HEX}"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *o = (char *)1;
        assert_int_equal(tok_template_unescape(bad[i].in, &o), BASE_ERR_PARSE);
        assert_null(o);
        if (!strstr(base_err_msg(), bad[i].msg)) fail_msg("'%s': '%s', wanted '%s'", bad[i].in, base_err_msg(), bad[i].msg);
    }
}

static void test_cli(void **state) {
    (void)state;
    char *dir = test_tmpdir();
    char *in = base_path_join(dir, "in.jsonl");
    const char *lines = "{\"text\": \"Hello world\", \"id\": 7}\n"
                        "not json\n"
                        "{\"nope\": 1}\n"
                        "{\"text\": \"bad \\u00ff\"}\n"
                        "{\"text\": \"\xff\"}\n";
    test_write_file(in, lines, strlen(lines));
    char *tk = test_shared_path("fixtures/deepseek-v3-tokenizer");
    char *out = base_path_join(dir, "out.jsonl");
    base_buf args = {0};
    base_buf_printf(&args, "tokenize --tokenizer '%s' --in '%s' --out '%s' --add-special-tokens", tk,
                    in, out);
    char *log;
    int rc = test_run_grpo(args.data, &log);
    assert_int_equal(rc, 1); /* some lines were skipped */
    assert_non_null(strstr(log, "in.jsonl:2:"));
    assert_non_null(strstr(log, "in.jsonl:3: no \"text\""));
    assert_non_null(strstr(log, "in.jsonl:5: invalid UTF-8 at byte 0"));
    assert_non_null(strstr(log, "3 line(s) skipped"));
    char *o;
    size_t n;
    assert_int_equal(base_read_file(out, &o, &n), BASE_OK);
    assert_non_null(strstr(o, "\"text\":\"Hello world\",\"id\":7,\"ids\":[0,19923,2058]}\n"));
    assert_non_null(strstr(o, "{\"text\":\"bad \xc3\xbf\",\"ids\":[0,"));
    free(log);
    /* and back */
    char *back = base_path_join(dir, "back.jsonl");
    base_buf_reset(&args);
    base_buf_printf(&args, "tokenize --tokenizer '%s' --in '%s' --out '%s' --decode "
                           "--skip-special-tokens", tk, out, back);
    rc = test_run_grpo(args.data, &log);
    assert_int_equal(rc, 0);
    char *b;
    assert_int_equal(base_read_file(back, &b, &n), BASE_OK);
    assert_non_null(strstr(b, "\"ids\":[0,19923,2058],\"text\":\"Hello world\"}"));
    free(b);
    free(log);
    free(o);
    /* usage errors and a missing tokenizer */
    assert_int_equal(test_run_grpo("tokenize --in x.jsonl", NULL), 2);
    base_buf_reset(&args);
    base_buf_printf(&args, "tokenize --tokenizer '%s' --in '%s'", dir, in);
    rc = test_run_grpo(args.data, &log);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(log, "tokenizer.json"));
    free(log);
    /* the writer through the CLI */
    char *wdir = base_path_join(dir, "w");
    base_buf_reset(&args);
    base_buf_printf(&args, "tokenize --write-bytelevel '%s' --special '<s>' --special '</s>' "
                           "--bos '<s>' --eos '</s>' --pad '</s>'", wdir);
    rc = test_run_grpo(args.data, &log);
    assert_int_equal(rc, 0);
    tok_tokenizer *t;
    assert_int_equal(tok_load(wdir, &t), BASE_OK);
    assert_int_equal(tok_vocab_size(t), 258);
    assert_int_equal(tok_eos_id(t), 257);
    tok_free(t);
    free(log);
    base_buf_free(&args);
    test_rmdir(dir);
    free(wdir);
    free(back);
    free(out);
    free(tk);
    free(in);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_r1zero),      cmocka_unit_test(test_template_protects_values),
        cmocka_unit_test(test_template_normalized),
        cmocka_unit_test(test_chat_v3),     cmocka_unit_test(test_chat_r1),
        cmocka_unit_test(test_chat_template_kind),
        cmocka_unit_test(test_writer),      cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_utf8),        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_template_unescape),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
