/* Rejection sampling: the reasoning span and R1's filters on hand-made
 * texts, the keep expression (environment, sandbox, errors), and the sample
 * stage on the tiny model hf-tiny-v3-a with a byte-level tokenizer and a
 * reward that makes every decision checkable from the completion alone
 * (byte-length parity). */
#include "common/test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recipe/recipe.h"
#include "train/run.h"
#include "train/sample_internal.h"

/* ---- the reasoning and the filters ---------------------------------------- */

static void check_reasoning(const char *text, const char *want) {
    size_t b, n;
    sample_reasoning(text, strlen(text), &b, &n);
    if (n != strlen(want) || memcmp(text + b, want, n))
        fail_msg("reasoning of '%s': got '%.*s', want '%s'", text, (int)n, text + b, want);
}

static void test_reasoning(void **state) {
    (void)state;
    check_reasoning("<think>step one</think> answer", "step one");
    check_reasoning("prefilled thought</think><answer>4</answer>", "prefilled thought");
    check_reasoning("x <think>never closed", "never closed");
    check_reasoning("no tags at all", "no tags at all");
    check_reasoning("<think>a<think>b</think>c</think>", "b"); /* the last open before the first close */
    check_reasoning("", "");
}

static void test_mixed_language(void **state) {
    (void)state;
    double r;
    const char *en = "First we add the two numbers and then we check the sum";
    assert_int_equal(sample_mixed_language(en, strlen(en), "en", 0.95, &r), 0);
    assert_true(r == 1.0);
    /* 10 English words, 2 Chinese ones: ratio 10/12 < 0.95 */
    const char *mixed = "First we add the two numbers 然后 检查 and check the sum";
    assert_int_equal(sample_mixed_language(mixed, strlen(mixed), "en", 0.95, &r), 1);
    assert_true(r > 0.5 && r < 0.95);
    assert_int_equal(sample_mixed_language(mixed, strlen(mixed), "en", 0.5, NULL), 0);
    /* no words at all: nothing to call mixed */
    assert_int_equal(sample_mixed_language("12 + 30 = 42", 12, "en", 0.95, &r), 0);
    assert_true(isnan(r));
    assert_int_equal(sample_mixed_language(en, strlen(en), "xx", 0.95, NULL), -1);
    /* only the reasoning counts: a Chinese answer after </think> is fine */
    const char *full = "<think>We add the numbers and check the sum</think>答案是 四十二";
    size_t b, n;
    sample_reasoning(full, strlen(full), &b, &n);
    assert_int_equal(sample_mixed_language(full + b, n, "en", 0.95, NULL), 0);
    assert_int_equal(sample_mixed_language(full, strlen(full), "en", 0.95, NULL), 0); /* lang ratio finds the CoT too */
    assert_int_equal(sample_filter_parse("mixed_language"), SAMPLE_FILTER_MIXED_LANGUAGE);
    assert_int_equal(sample_filter_parse("long_paragraphs"), SAMPLE_FILTER_LONG_PARAGRAPHS);
    assert_int_equal(sample_filter_parse("code_blocks"), SAMPLE_FILTER_CODE_BLOCKS);
    assert_int_equal(sample_filter_parse("code_block"), -1);
    assert_string_equal(sample_filter_name(SAMPLE_FILTER_CODE_BLOCKS), "code_blocks");
}

static void test_long_paragraphs(void **state) {
    (void)state;
    int64_t longest;
    const char *t = "abc\n\nabcd";
    assert_int_equal(sample_long_paragraphs(t, strlen(t), 3, &longest), 1);
    assert_int_equal(longest, 4);
    assert_int_equal(sample_long_paragraphs(t, strlen(t), 4, NULL), 0);
    /* one newline does not end a paragraph; its characters count */
    t = "ab\ncd";
    assert_int_equal(sample_long_paragraphs(t, strlen(t), 4, &longest), 1);
    assert_int_equal(longest, 5);
    /* a line of spaces (and CR) is blank; runs of blank lines are one break;
     * leading and trailing whitespace of a paragraph do not count */
    t = "  ab  \n \t\r\n\n\n   cde\n";
    assert_int_equal(sample_long_paragraphs(t, strlen(t), 3, &longest), 0);
    assert_int_equal(longest, 3);
    /* characters, not bytes: six 2-byte letters */
    t = "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9";
    assert_int_equal(sample_long_paragraphs(t, strlen(t), 6, &longest), 0);
    assert_int_equal(longest, 6);
    assert_int_equal(sample_long_paragraphs(t, strlen(t), 5, NULL), 1);
    assert_int_equal(sample_long_paragraphs("", 0, 0, &longest), 0);
    assert_int_equal(longest, 0);
}

static void test_code_blocks(void **state) {
    (void)state;
    const char *t = "Let me write it:\n```python\nprint(4)\n```\n";
    assert_int_equal(sample_code_blocks(t, strlen(t)), 1);
    t = "inline `code` and ``two`` ticks";
    assert_int_equal(sample_code_blocks(t, strlen(t)), 0);
    /* a fence after </think> is in the answer, not the reasoning */
    t = "<think>plain reasoning</think>```python\nx = 1\n```";
    size_t b, n;
    sample_reasoning(t, strlen(t), &b, &n);
    assert_int_equal(sample_code_blocks(t + b, n), 0);
    assert_int_equal(sample_code_blocks(t, strlen(t)), 1);
    /* NUL bytes inside the text do not stop the scan */
    const char z[] = {'a', 0, '`', '`', '`'};
    assert_int_equal(sample_code_blocks(z, sizeof z), 1);
}

/* ---- the keep expression --------------------------------------------------- */

static int keep_of(const char *expr, double total, const double *scores, const cJSON *sample, base_status *st) {
    static const char *const names[2] = {"acc", "fmt"};
    sample_keep *k;
    base_status s = sample_keep_new(expr, &k);
    if (s) fail_msg("compile '%s': %s", expr, base_err_msg());
    int keep = -1;
    *st = sample_keep_eval(k, total, names, scores, 2, sample, &keep);
    sample_keep_free(k);
    return keep;
}

static void test_keep_environment(void **state) {
    (void)state;
    cJSON *smp = cJSON_Parse("{\"answer\": \"42\", \"id\": 7, \"completion\": \"<think>x</think>42\","
                             " \"finish_reason\": \"stop\", \"tags\": [\"a\", \"b\"]}");
    double sc[2] = {1.0, NAN};
    base_status s;
    assert_int_equal(keep_of("reward > 0.5", 1.0, sc, smp, &s), 1);
    assert_int_equal(s, BASE_OK);
    assert_int_equal(keep_of("reward > 1.5", 1.0, sc, smp, &s), 0);
    assert_int_equal(keep_of("rewards.acc == 1 and rewards.fmt == nil", 1.0, sc, smp, &s), 1);
    assert_int_equal(keep_of("reward == nil", NAN, sc, smp, &s), 1);
    assert_int_equal(keep_of("sample.answer == '42' and sample.id == 7 and #sample.tags == 2", 1, sc, smp, &s), 1);
    assert_int_equal(keep_of("completion:find('</think>') ~= nil and finish_reason == 'stop'", 1, sc, smp, &s), 1);
    assert_int_equal(keep_of("math.abs(-1) == 1 and string.len(completion) == 18", 1, sc, smp, &s), 1);
    assert_int_equal(keep_of("nil", 1, sc, smp, &s), 0); /* nil is false */
    assert_int_equal(s, BASE_OK);
    /* the sandbox: no loaders, no io/os */
    assert_int_equal(keep_of("load == nil and require == nil and dofile == nil and io == nil and os == nil", 1, sc,
                             smp, &s),
                     1);
    cJSON_Delete(smp);
}

static void test_keep_errors(void **state) {
    (void)state;
    sample_keep *k = NULL;
    assert_int_equal(sample_keep_new("reward >", &k), BASE_ERR_PARSE);
    assert_null(k);
    assert_non_null(strstr(base_err_msg(), "keep expression 'reward >': syntax error"));
    assert_int_equal(sample_keep_new("", &k), BASE_ERR_INVALID);
    /* a statement is not an expression */
    assert_int_equal(sample_keep_new("x = 1", &k), BASE_ERR_PARSE);

    cJSON *smp = cJSON_Parse("{\"completion\": \"abc\", \"finish_reason\": \"length\"}");
    double sc[2] = {NAN, 0.0};
    base_status s;
    assert_int_equal(keep_of("rewards.acc > 0", 0, sc, smp, &s), 0);
    assert_int_equal(s, BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "attempt to compare"));
    assert_non_null(strstr(base_err_msg(), "acc, fmt")); /* the hint lists the names */
    keep_of("reward", 0, sc, smp, &s); /* a number is not a decision */
    assert_int_equal(s, BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "gave a number"));
    keep_of("setmetatable({}, {__tostring = error})", 0, sc, smp, &s);
    assert_int_equal(s, BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "gave a table"));
    keep_of("error('boom')", 0, sc, smp, &s);
    assert_int_equal(s, BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "boom"));
    keep_of("(function() while true do end end)()", 0, sc, smp, &s);
    assert_int_equal(s, BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "instruction budget"));
    keep_of("#string.rep('x', 1 << 30) > 0", 0, sc, smp, &s);
    assert_int_equal(s, BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "memory"));
    /* the state stays usable after errors */
    assert_int_equal(keep_of("completion == 'abc'", 0, sc, smp, &s), 1);
    assert_int_equal(s, BASE_OK);
    cJSON_Delete(smp);
}

/* ---- the stage on the tiny model ------------------------------------------- */

typedef struct {
    char *dir;
} fx;

static char *fx_path(const fx *f, const char *rel) { return base_path_join(f->dir, rel); }

static void write_text(const fx *f, const char *rel, const char *text) {
    char *p = fx_path(f, rel);
    test_write_file(p, text, strlen(text));
    free(p);
}

static fx fx_setup(void) {
    fx f = {test_tmpdir()};
    char *m = fx_path(&f, "m");
    test_tiny_model(m, 1);
    free(m);
    write_text(&f, "p.jsonl",
               "{\"prompt\": \"What is 2+2?\", \"answer\": \"4\", \"id\": \"a\"}\n"
               "{\"prompt\": \"What is 3+5?\", \"answer\": \"8\", \"id\": \"b\"}\n"
               "{\"prompt\": \"Compute 7*6.\", \"answer\": \"42\", \"id\": \"c\"}\n"
               "{\"prompt\": \"Half of 10?\", \"answer\": \"5\", \"id\": \"d\"}\n");
    write_text(&f, "extra.jsonl",
               "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", "
               "\"content\": \"hello\"}]}\n");
    /* parity: 1 when the completion has an odd number of bytes */
    write_text(&f, "parity.lua", "return { score = function(s) return #s.completion % 2 end }\n");
    return f;
}

static void fx_free(fx *f) {
    test_rmdir(f->dir);
    free(f->dir);
}

/* Load a recipe (text with %s = the fixture dir) and run it. */
static base_status run_src(const fx *f, const char *fmt, const char *name) {
    base_buf src = {0};
    base_buf_printf(&src, fmt, f->dir, f->dir, f->dir, f->dir, f->dir, f->dir);
    char *chunk = fx_path(f, name);
    recipe *rc;
    base_status s = recipe_load_string(src.data, chunk, NULL, 0, &rc);
    if (s) fail_msg("recipe: %s", base_err_msg());
    run_opts ro = {.quiet = 1, .overwrite = 1};
    s = run_recipe(rc, &ro);
    recipe_free(rc);
    free(chunk);
    base_buf_free(&src);
    return s;
}

static cJSON **read_jsonl(const char *path, int *n) {
    base_jsonl *r;
    if (base_jsonl_open(path, &r)) fail_msg("%s", base_err_msg());
    cJSON **v = NULL, *x;
    *n = 0;
    base_status s;
    while ((s = base_jsonl_next(r, &x)) == BASE_OK) {
        v = realloc(v, (size_t)(*n + 1) * sizeof *v);
        v[(*n)++] = x;
    }
    assert_int_equal(s, BASE_ERR_EOF);
    base_jsonl_close(r);
    return v;
}

static void free_rows(cJSON **v, int n) {
    for (int i = 0; i < n; i++) cJSON_Delete(v[i]);
    free(v);
}

static const char *RECIPE =
    "return {\n"
    "  model = '%s/m', template = 'raw', output_dir = '%s/runs', seed = 3, report = false,\n"
    "  datasets = { p = '%s/p.jsonl', extra = '%s/extra.jsonl', sft = 'stage:sample' },\n"
    "  rewards = { '%s/parity.lua' },\n"
    "  stages = {\n"
    "    { type = 'sample', dataset = 'p', num_generations = 5, max_completion_length = 10, temperature = 1.0,\n"
    "      top_p = 1.0, keep = 'rewards.parity == 1', max_per_prompt = 2, merge_datasets = 'extra' },\n"
    "    { type = 'sft', dataset = 'sft', max_steps = 1, max_length = 64 },\n"
    "  },\n"
    "}\n";

static void test_stage(void **state) {
    (void)state;
    fx f = fx_setup();
    if (run_src(&f, RECIPE, "a.lua")) fail_msg("%s", base_err_msg());
    char *run = fx_path(&f, "runs/a");
    char *sp = base_path_join(run, "sample.samples.jsonl"), *op = base_path_join(run, "sample.jsonl");
    char *pp = base_path_join(run, "sample.pass_rates.jsonl"), *sum = base_path_join(run, "summary.json");
    int ns, no, np;
    cJSON **smp = read_jsonl(sp, &ns), **out = read_jsonl(op, &no), **pr = read_jsonl(pp, &np);
    assert_int_equal(ns, 4 * 5);
    assert_int_equal(np, 4);
    /* every decision follows from the completion: parity 0 -> "keep";
     * parity 1 -> the first two of the prompt kept, the rest capped */
    int o = 0, n_keep = 0, n_cap = 0, n_kept = 0;
    const char *questions[4] = {"What is 2+2?", "What is 3+5?", "Compute 7*6.", "Half of 10?"};
    const char *ids[4] = {"a", "b", "c", "d"};
    for (int p = 0; p < 4; p++) {
        int passed = 0;
        for (int g = 0; g < 5; g++) {
            const cJSON *l = smp[p * 5 + g];
            assert_int_equal(base_json_int(l, "prompt_index", -1, NULL), p);
            assert_int_equal(base_json_int(l, "sample_index", -1, NULL), g);
            const char *comp = base_json_str(l, "completion", NULL);
            const char *dec = base_json_str(l, "decision", NULL);
            assert_non_null(comp);
            int parity = (int)(strlen(comp) % 2);
            assert_true(base_json_num(cJSON_GetObjectItem(l, "rewards"), "parity", -1, NULL) == parity);
            if (!parity) {
                assert_string_equal(dec, "keep");
                n_keep++;
                continue;
            }
            passed++;
            if (passed > 2) {
                assert_string_equal(dec, "max_per_prompt");
                n_cap++;
                continue;
            }
            assert_string_equal(dec, "kept");
            n_kept++;
            /* the output line, in order: the prompt as the model saw it
             * (template 'raw': the question after BOS), the completion, the
             * template, the chat form, the row's columns */
            assert_true(o < no);
            char seen[64];
            snprintf(seen, sizeof seen, "<|bos|>%s", questions[p]);
            assert_string_equal(base_json_str(out[o], "prompt", ""), seen);
            assert_string_equal(base_json_str(out[o], "completion", ""), comp);
            assert_string_equal(base_json_str(out[o], "prompt_template", ""), "raw");
            const cJSON *msgs = cJSON_GetObjectItem(out[o], "messages");
            assert_int_equal(cJSON_GetArraySize(msgs), 2);
            assert_string_equal(base_json_str(cJSON_GetArrayItem(msgs, 0), "role", ""), "user");
            assert_string_equal(base_json_str(cJSON_GetArrayItem(msgs, 0), "content", ""), questions[p]);
            assert_string_equal(base_json_str(cJSON_GetArrayItem(msgs, 1), "role", ""), "assistant");
            assert_string_equal(base_json_str(cJSON_GetArrayItem(msgs, 1), "content", ""), comp);
            assert_string_equal(base_json_str(out[o], "id", ""), ids[p]);
            assert_non_null(cJSON_GetObjectItem(out[o], "answer"));
            o++;
        }
        assert_int_equal(base_json_int(pr[p], "index", -1, NULL), p);
        assert_int_equal(base_json_int(pr[p], "passed", -1, NULL), passed);
        assert_int_equal(base_json_int(pr[p], "total", -1, NULL), 5);
        assert_int_equal(base_json_int(pr[p], "kept", -1, NULL), passed < 2 ? passed : 2);
        assert_string_equal(base_json_str(pr[p], "id", ""), ids[p]);
    }
    printf("sample stage: %d kept, %d failed keep, %d over max_per_prompt\n", n_kept, n_keep, n_cap);
    /* the random model must exercise both outcomes for the test to mean anything */
    assert_true(n_kept > 0 && n_keep > 0);
    assert_int_equal(no, n_kept + 1); /* + the merged row, last */
    assert_string_equal(base_json_str(cJSON_GetArrayItem(cJSON_GetObjectItem(out[no - 1], "messages"), 1), "content", ""),
                        "hello");
    cJSON *js;
    if (base_json_parse_file(sum, &js)) fail_msg("%s", base_err_msg());
    const cJSON *ss = cJSON_GetObjectItem(js, "sample");
    assert_int_equal(base_json_int(ss, "kept", -1, NULL), n_kept);
    assert_int_equal(base_json_int(ss, "merged", -1, NULL), 1);
    assert_int_equal(base_json_int(ss, "total", -1, NULL), 20);
    const cJSON *dr = cJSON_GetObjectItem(ss, "dropped");
    assert_int_equal(base_json_int(dr, "keep", -1, NULL), n_keep);
    assert_int_equal(base_json_int(dr, "max_per_prompt", -1, NULL), n_cap);
    double rate = 0;
    for (int p = 0; p < 4; p++) rate += base_json_num(pr[p], "pass_rate", 0, NULL) / 4;
    assert_true(fabs(base_json_num(ss, "pass_rate", -1, NULL) - rate) < 1e-12);
    assert_string_equal(base_json_str(ss, "prompt_template", ""), "raw");
    assert_int_equal(base_json_int(ss, "inexact_prompts", -1, NULL), 0);
    /* "stage:sample" is the output: the sft stage read every line of it,
     * the kept ones as sampled and the merged chat row with the template */
    const cJSON *rows = cJSON_GetObjectItem(cJSON_GetObjectItem(js, "sft"), "rows");
    assert_int_equal(base_json_int(rows, "sampled", -1, NULL), n_kept);
    assert_int_equal(base_json_int(rows, "chat", -1, NULL), 1);
    assert_string_equal(base_json_str(cJSON_GetObjectItem(js, "sft"), "template", ""), "raw");
    cJSON_Delete(js);

    /* deterministic: the same recipe under another name writes the same bytes */
    if (run_src(&f, RECIPE, "b.lua")) fail_msg("%s", base_err_msg());
    char *op2 = fx_path(&f, "runs/b/sample.jsonl"), *a, *b;
    size_t na, nb;
    assert_int_equal(base_read_file(op, &a, &na), BASE_OK);
    assert_int_equal(base_read_file(op2, &b, &nb), BASE_OK);
    assert_true(na == nb && !memcmp(a, b, na));
    free(a), free(b), free(op2);
    free_rows(smp, ns), free_rows(out, no), free_rows(pr, np);
    free(sp), free(op), free(pp), free(sum), free(run);
    fx_free(&f);
}

/* Filters inside the stage: keep everything, drop by long_paragraphs with a
 * tiny limit; each decision must match the filter run on the reasoning. */
static void test_stage_filters(void **state) {
    (void)state;
    fx f = fx_setup();
    const char *r =
        "return {\n"
        "  model = '%s/m', template = 'raw', output_dir = '%s/runs', report = false,\n"
        "  datasets = { p = '%s/p.jsonl' }, rewards = { '%s/parity.lua' },\n"
        "  stages = { { type = 'sample', dataset = 'p', num_generations = 6, max_completion_length = 12,\n"
        "      temperature = 1.0, top_p = 1.0, keep = 'true', max_per_prompt = 0,\n"
        "      filters = { 'code_blocks', 'long_paragraphs' }, max_paragraph_chars = 7,\n"
        "      output = '%s/out/kept.jsonl' } },\n"
        "}\n";
    if (run_src(&f, r, "c.lua")) fail_msg("%s", base_err_msg());
    char *sp = fx_path(&f, "runs/c/sample.samples.jsonl"), *op = fx_path(&f, "out/kept.jsonl");
    int ns, no;
    cJSON **smp = read_jsonl(sp, &ns), **out = read_jsonl(op, &no);
    int kept = 0, dropped = 0;
    for (int i = 0; i < ns; i++) {
        const char *c = base_json_str(smp[i], "completion", "");
        size_t b, n;
        sample_reasoning(c, strlen(c), &b, &n);
        int want = sample_code_blocks(c + b, n) ? 0 : sample_long_paragraphs(c + b, n, 7, NULL) ? 1 : 2;
        const char *names[3] = {"code_blocks", "long_paragraphs", "kept"};
        assert_string_equal(base_json_str(smp[i], "decision", ""), names[want]);
        kept += want == 2, dropped += want == 1;
    }
    printf("filters: %d kept, %d long paragraphs\n", kept, dropped);
    assert_true(kept > 0 && dropped > 0);
    assert_int_equal(no, kept);
    free_rows(smp, ns), free_rows(out, no);
    free(sp), free(op);
    fx_free(&f);
}

/* Errors: a clear message naming the stage, no output file left behind. */
static void stage_error(fx *f, const char *stage_keys, const char *want1, const char *want2) {
    base_buf r = {0};
    base_buf_printf(&r,
                    "return {\n"
                    "  model = '%%s/m', template = 'raw', output_dir = '%%s/runs', report = false,\n"
                    "  datasets = { p = '%%s/p.jsonl' }, rewards = { '%%s/parity.lua' },\n"
                    "  stages = { { type = 'sample', name = 'rs', dataset = 'p', num_generations = 2,\n"
                    "      max_completion_length = 4, %s } },\n"
                    "}\n",
                    stage_keys);
    base_status s = run_src(f, r.data, "e.lua");
    assert_int_not_equal(s, BASE_OK);
    const char *m = base_err_msg();
    printf("error: %s\n", m);
    assert_non_null(strstr(m, "stage 'rs'"));
    assert_non_null(strstr(m, want1));
    if (want2) assert_non_null(strstr(m, want2));
    char *op = fx_path(f, "runs/e/rs.jsonl");
    assert_false(base_file_exists(op));
    free(op);
    base_buf_free(&r);
}

/* The stage's options are checked when the recipe loads: the message names
 * the file, the key and its value. */
static void option_error(fx *f, const char *stage_keys, const char *want) {
    base_buf r = {0};
    base_buf_printf(&r,
                    "return {\n"
                    "  model = 'm', datasets = { p = 'p.jsonl' }, rewards = { 'parity.lua' },\n"
                    "  stages = { { type = 'sample', name = 'rs', dataset = 'p', %s } },\n"
                    "}\n",
                    stage_keys);
    char *chunk = fx_path(f, "e.lua");
    recipe *rc = NULL;
    assert_int_not_equal(recipe_load_string(r.data, chunk, NULL, 0, &rc), BASE_OK);
    assert_null(rc);
    const char *m = base_err_msg();
    printf("error: %s\n", m);
    assert_non_null(strstr(m, "e.lua: stages[1]."));
    assert_non_null(strstr(m, want));
    free(chunk);
    base_buf_free(&r);
}

/* A reward that scores nothing ("not scored" everywhere): the summary's
 * means over nothing are null, not 0, and rewards/NAME/scored counts. */
static void test_stage_not_scored(void **state) {
    (void)state;
    fx f = fx_setup();
    write_text(&f, "never.lua", "return function(s) return nil end\n");
    const char *recipe =
        "return {\n"
        "  model = '%s/m', template = 'raw', output_dir = '%s/runs', seed = 3, report = false,\n"
        "  datasets = { p = '%s/p.jsonl' },\n"
        "  rewards = { '%s/parity.lua', '%s/never.lua' },\n"
        "  stages = {\n"
        "    { type = 'sample', dataset = 'p', num_generations = 2, max_completion_length = 6, keep = 'true' },\n"
        "  },\n"
        "}\n";
    if (run_src(&f, recipe, "n.lua")) fail_msg("%s", base_err_msg());
    char *sum = fx_path(&f, "runs/n/summary.json"), *text = NULL;
    size_t n;
    if (base_read_file(sum, &text, &n)) fail_msg("%s", base_err_msg());
    cJSON *j = cJSON_Parse(text), *st = cJSON_GetObjectItemCaseSensitive(j, "sample");
    assert_non_null(st);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(st, "rewards/never")));
    assert_int_equal(base_json_int(st, "rewards/never/scored", -1, NULL), 0);
    assert_int_equal(base_json_int(st, "rewards/parity/scored", -1, NULL), 8);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(st, "rewards/parity")));
    assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(st, "reward")));
    cJSON_Delete(j);
    free(text), free(sum);
    fx_free(&f);
}

static void test_stage_errors(void **state) {
    (void)state;
    fx f = fx_setup();
    stage_error(&f, "keep = 'rewards.parity =='", "syntax error", "keep:1:");
    stage_error(&f, "keep = 'rewards.accuracy > 0'", "p.jsonl:1 (sample 0)", "attempt to compare");
    stage_error(&f, "keep = '1'", "gave a number", NULL);
    option_error(&f, "filters = { 'code_block' }",
                 "filters[1] = \"code_block\": must be one of mixed_language|long_paragraphs|code_blocks");
    option_error(&f, "filters = { 'code_blocks', 'code_blocks' }", "filters[2] = \"code_blocks\": listed twice");
    option_error(&f, "filters = { 'mixed_language' }, lang = 'xx'", "lang = \"xx\": must be a known language code");
    option_error(&f, "max_per_prompt = -1", "max_per_prompt = -1: must be in [0, 1000000]");
    option_error(&f, "merge_datasets = { 'nope' }", "merge_datasets[1] = \"nope\": no dataset named 'nope'");
    fx_free(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reasoning),      cmocka_unit_test(test_mixed_language),
        cmocka_unit_test(test_long_paragraphs), cmocka_unit_test(test_code_blocks),
        cmocka_unit_test(test_keep_environment), cmocka_unit_test(test_keep_errors),
        cmocka_unit_test(test_stage),           cmocka_unit_test(test_stage_filters),
        cmocka_unit_test(test_stage_errors),  cmocka_unit_test(test_stage_not_scored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
