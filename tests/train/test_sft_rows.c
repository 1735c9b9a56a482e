/* SFT rows and the template (issue 13, part 1): the data a sample stage
 * writes and the chat rows SFT reads are rendered with the run's template,
 * the one generation uses, so SFT trains on what the model sees.
 *
 *   sampled rows    the kept samples of the tiny demo model train from a
 *                   low loss (they are the model's own outputs): step-1 loss
 *                   < 1, where the old chat rows in a hard-coded DeepSeek
 *                   format started above 10; a stage with another template
 *                   is refused, naming both
 *   chat rows       with a string template, {"messages": [user, assistant]}
 *                   trains exactly as the same prompt/completion row (equal
 *                   loss to the bit); with "chat" and "r1" on a model whose
 *                   chat template is DeepSeek's, likewise (r1: the answer
 *                   starts inside the "<think>\n" the prompt opened; earlier
 *                   turns are context)
 *   errors          a chat row a template cannot render faithfully, and the
 *                   DeepSeek format on a model without it, name the row, the
 *                   template and why
 */
#include "common/test_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "recipe/recipe.h"
#include "tok/tok.h"
#include "train/run.h"

static char *g_dir;

static char *P(const char *rel) { return base_path_join(g_dir, rel); }

static void write_text(const char *rel, const char *text) {
    char *p = P(rel);
    test_write_file(p, text, strlen(text));
    free(p);
}

/* Run a recipe (its text); returns the status, the message in base_err_msg. */
static base_status run_text(const char *src, const char *name) {
    char *chunk = P(name);
    recipe *rc;
    base_status s = recipe_load_string(src, chunk, NULL, 0, &rc);
    if (s) fail_msg("recipe %s: %s", name, base_err_msg());
    run_opts ro = {.quiet = 1, .overwrite = 1};
    s = run_recipe(rc, &ro);
    recipe_free(rc);
    free(chunk);
    return s;
}

static void run_ok(const char *src, const char *name) {
    if (run_text(src, name)) fail_msg("%s: %s", name, base_err_msg());
}

/* Each of want[] must be in the message of the run's error. */
static void run_fails(const char *src, const char *name, const char *const *want, int n) {
    base_status s = run_text(src, name);
    const char *m = base_err_msg();
    printf("%s: %s\n", name, s ? m : "(no error)");
    assert_int_not_equal(s, BASE_OK);
    for (int i = 0; i < n; i++)
        if (!strstr(m, want[i])) fail_msg("%s: '%s' not in the message", name, want[i]);
}

/* metrics.jsonl's loss of `stage` at step 1 (the first optimizer step). */
static double first_loss(const char *run, const char *stage) {
    char *path = base_path_join(run, "metrics.jsonl");
    base_jsonl *r;
    if (base_jsonl_open(path, &r)) fail_msg("%s", base_err_msg());
    cJSON *l;
    double loss = -1;
    while (loss < 0 && base_jsonl_next(r, &l) == BASE_OK) {
        const char *st = base_json_str(l, "stage", "");
        if (!strcmp(st, stage) && base_json_int(l, "step", 0, NULL) == 1) loss = base_json_num(l, "loss", -1, NULL);
        cJSON_Delete(l);
    }
    base_jsonl_close(r);
    free(path);
    if (loss < 0) fail_msg("%s: no step-1 loss of stage %s", run, stage);
    return loss;
}

static cJSON *summary_of(const char *run) {
    char *path = base_path_join(run, "summary.json");
    cJSON *j;
    if (base_json_parse_file(path, &j)) fail_msg("%s", base_err_msg());
    free(path);
    return j;
}

/* ---- the tiny demo model -------------------------------------------------- */

/* A recipe on data/tiny/base with template "{prompt}\n"; %s are, in order:
 * the run name, datasets, stages. */
static char *tiny_recipe(const char *name, const char *datasets, const char *stages) {
    char *model = test_src_path("data/tiny/base");
    base_buf b = {0};
    base_buf_printf(&b,
                    "return {\n"
                    "  name = '%s', model = '%s', device = 'cpu', template = '{prompt}\\n',\n"
                    "  output_dir = '%s/runs', report = false, seed = 7,\n"
                    "  datasets = { %s },\n"
                    "  rewards = { { script = 'boxed_math', name = 'accuracy' } },\n"
                    "  stages = { %s },\n"
                    "}\n",
                    name, model, g_dir, datasets, stages);
    free(model);
    return b.data;
}

/* The kept samples of the model train from its own distribution: a low
 * first loss (10.2 when they were chat rows in the DeepSeek format), the
 * log and summary.json say the template; another template is refused. */
static void test_sampled_rows_teach(void **state) {
    (void)state;
    char *train = test_src_path("data/tiny/train.jsonl"), ds[600];
    snprintf(ds, sizeof ds, "train = { path = '%s', limit = 24 }, kept = 'stage:teacher'", train);
    char *src = tiny_recipe("a", ds,
                            "{ type = 'sample', name = 'teacher', dataset = 'train', num_generations = 4,\n"
                            "  max_completion_length = 48, keep = '(rewards.accuracy or 0) == 1', max_per_prompt = 0 },\n"
                            "{ type = 'sft', name = 'student', dataset = 'kept', max_steps = 1, max_length = 128,\n"
                            "  learning_rate = 1e-4 }");
    run_ok(src, "a.lua");
    char *run = P("runs/a");
    double loss = first_loss(run, "student");
    cJSON *sum = summary_of(run);
    const cJSON *teacher = cJSON_GetObjectItem(sum, "teacher"), *student = cJSON_GetObjectItem(sum, "student");
    int64_t kept = base_json_int(teacher, "kept", -1, NULL);
    printf("sampled rows: %lld kept of 96, student step-1 loss %.4f\n", (long long)kept, loss);
    assert_true(kept >= 8);
    assert_true(loss < 1.0);
    assert_string_equal(base_json_str(teacher, "prompt_template", ""), "{prompt}\n");
    assert_string_equal(base_json_str(student, "template", ""), "{prompt}\n");
    assert_string_equal(base_json_str(student, "chat_template", ""), "none");
    assert_int_equal(base_json_int(cJSON_GetObjectItem(student, "rows"), "sampled", -1, NULL), kept);
    cJSON_Delete(sum);
    free(src);

    /* the same data under another template: an error naming both */
    char *kept_path = base_path_join(run, "teacher.jsonl");
    snprintf(ds, sizeof ds, "kept = '%s'", kept_path);
    src = tiny_recipe("a2", ds, "{ type = 'sft', dataset = 'kept', max_steps = 1, template = 'raw' }");
    const char *want[] = {"teacher.jsonl:1", "rendered with template \"{prompt}\\n\" when it was sampled",
                          "this stage's template is \"raw\""};
    run_fails(src, "a2.lua", want, 3);
    free(src), free(kept_path), free(run), free(train);
}

/* A chat row [user, assistant] under a string template is the
 * prompt/completion row of the same question and answer: equal loss. */
static void test_chat_rows_as_generation(void **state) {
    (void)state;
    char *train = test_src_path("data/tiny/train.jsonl");
    base_jsonl *r;
    if (base_jsonl_open(train, &r)) fail_msg("%s", base_err_msg());
    base_buf chat = {0}, pc = {0};
    cJSON *row;
    for (int i = 0; i < 8 && base_jsonl_next(r, &row) == BASE_OK; i++) {
        const char *q = base_json_str(row, "prompt", ""), *a = base_json_str(row, "completion", "");
        cJSON *c = cJSON_CreateObject(), *m = cJSON_AddArrayToObject(c, "messages"), *u = cJSON_CreateObject(),
              *as = cJSON_CreateObject();
        cJSON_AddStringToObject(u, "role", "user"), cJSON_AddStringToObject(u, "content", q);
        cJSON_AddStringToObject(as, "role", "assistant"), cJSON_AddStringToObject(as, "content", a);
        cJSON_AddItemToArray(m, u), cJSON_AddItemToArray(m, as);
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "prompt", q), cJSON_AddStringToObject(p, "completion", a);
        char *t1 = cJSON_PrintUnformatted(c), *t2 = cJSON_PrintUnformatted(p);
        base_buf_printf(&chat, "%s\n", t1), base_buf_printf(&pc, "%s\n", t2);
        cJSON_free(t1), cJSON_free(t2), cJSON_Delete(c), cJSON_Delete(p), cJSON_Delete(row);
    }
    base_jsonl_close(r);
    write_text("chat.jsonl", chat.data);
    write_text("pc.jsonl", pc.data);
    double loss[2];
    for (int k = 0; k < 2; k++) {
        char ds[300], name[8];
        snprintf(ds, sizeof ds, "d = '%s/%s'", g_dir, k ? "pc.jsonl" : "chat.jsonl");
        snprintf(name, sizeof name, "b%d", k);
        char *src = tiny_recipe(name, ds, "{ type = 'sft', dataset = 'd', max_steps = 1, shuffle = false }");
        char lua[16], *run;
        snprintf(lua, sizeof lua, "%s.lua", name);
        run_ok(src, lua);
        snprintf(lua, sizeof lua, "runs/%s", name);
        run = P(lua);
        loss[k] = first_loss(run, "sft");
        free(run), free(src);
    }
    printf("chat rows %.17g, prompt/completion rows %.17g\n", loss[0], loss[1]);
    assert_true(loss[0] == loss[1]);
    assert_true(loss[0] < 1.0);
    base_buf_free(&chat), base_buf_free(&pc);
    free(train);
}

/* Chat rows no template can render faithfully, and the DeepSeek format on
 * a model whose format it is not. */
static void test_row_errors(void **state) {
    (void)state;
    const struct {
        const char *row, *tmpl, *want[3];
    } cases[] = {
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"},"
         " {\"role\": \"user\", \"content\": \"c\"}, {\"role\": \"assistant\", \"content\": \"d\"}]}",
         NULL,
         {"e0.jsonl:1", "template \"{prompt}\\n\" renders one question", "(user, assistant, user)"}},
        {"{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", \"content\": \"a\"},"
         " {\"role\": \"assistant\", \"content\": \"b\"}]}",
         NULL,
         {"e1.jsonl:1", "has a system message but template \"{prompt}\\n\" has no {system}", NULL}},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"},"
         " {\"role\": \"user\", \"content\": \"c\"}]}",
         NULL,
         {"e2.jsonl:1", "the last message is the user's", NULL}},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}",
         "chat",
         {"e3.jsonl:1", "not this model's", "has no chat template"}},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}",
         "r1",
         {"e4.jsonl:1", "template 'r1' is the DeepSeek chat format, not this model's", "has no chat template"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char rel[32], ds[300], st[200], name[16];
        snprintf(rel, sizeof rel, "e%zu.jsonl", i);
        write_text(rel, cases[i].row);
        snprintf(ds, sizeof ds, "d = '%s/%s'", g_dir, rel);
        snprintf(st, sizeof st, "{ type = 'sft', dataset = 'd', max_steps = 1%s%s%s }",
                 cases[i].tmpl ? ", template = '" : "", cases[i].tmpl ? cases[i].tmpl : "", cases[i].tmpl ? "'" : "");
        snprintf(name, sizeof name, "e%zu", i);
        char *src = tiny_recipe(name, ds, st);
        snprintf(name, sizeof name, "e%zu.lua", i);
        run_fails(src, name, cases[i].want, cases[i].want[2] ? 3 : 2);
        free(src);
    }
    /* generation too: the demo's prompts under r1 */
    char *test = test_src_path("data/tiny/test.jsonl"), ds[300];
    snprintf(ds, sizeof ds, "t = '%s'", test);
    char *src = tiny_recipe("g", ds, "{ type = 'eval', dataset = 't', template = 'r1', num_generations = 1, limit = 2 }");
    const char *want[] = {"test.jsonl:1", "template 'r1' is the DeepSeek chat format, not this model's"};
    run_fails(src, "g.lua", want, 2);
    free(src), free(test);
}

/* ---- a model whose chat template is DeepSeek-V3's ------------------------- */

#define BOS_T "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define EOS_T "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"

/* hf-tiny-v3-a with a byte-level tokenizer holding DeepSeek's special
 * tokens, and the DeepSeek-V3 tokenizer's chat_template. */
static void deepseek_model(const char *dir) {
    test_tiny_model(dir, 0);
    static const char *const specials[] = {BOS_T, EOS_T, "<\xef\xbd\x9cUser\xef\xbd\x9c>",
                                           "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>", "<think>", "</think>"};
    tok_bytelevel_spec sp = {specials, 6, BOS_T, EOS_T, EOS_T, 1, 0};
    if (tok_write_bytelevel(dir, &sp)) fail_msg("%s", base_err_msg());
    char *ref = test_shared_path("fixtures/deepseek-v3-tokenizer/tokenizer_config.json");
    char *cfg_path = base_path_join(dir, "tokenizer_config.json");
    cJSON *ds, *cfg;
    if (base_json_parse_file(ref, &ds) || base_json_parse_file(cfg_path, &cfg)) fail_msg("%s", base_err_msg());
    cJSON_AddItemToObject(cfg, "chat_template",
                          cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(ds, "chat_template"), 1));
    char *t = cJSON_Print(cfg);
    test_write_file(cfg_path, t, strlen(t));
    cJSON_free(t), cJSON_Delete(ds), cJSON_Delete(cfg), free(ref), free(cfg_path);
}

static char *ds_recipe(const char *name, const char *tmpl, const char *data) {
    base_buf b = {0};
    base_buf_printf(&b,
                    "return {\n"
                    "  name = '%s', model = '%s/ds', device = 'cpu', template = '%s',\n"
                    "  output_dir = '%s/runs', report = false,\n"
                    "  datasets = { d = '%s/%s' },\n"
                    "  stages = { { type = 'sft', dataset = 'd', max_steps = 1, shuffle = false, max_length = 256 } },\n"
                    "}\n",
                    name, g_dir, tmpl, g_dir, g_dir, data);
    return b.data;
}

static double ds_loss(const char *name, const char *tmpl, const char *data) {
    char *src = ds_recipe(name, tmpl, data), lua[32], rel[32];
    snprintf(lua, sizeof lua, "%s.lua", name);
    run_ok(src, lua);
    snprintf(rel, sizeof rel, "runs/%s", name);
    char *run = P(rel);
    double l = first_loss(run, "sft");
    free(run), free(src);
    return l;
}

#define MSG(role, text) "{\"role\": \"" role "\", \"content\": \"" text "\"}"

static void test_chat_rows_deepseek(void **state) {
    (void)state;
    char *m = P("ds");
    deepseek_model(m);
    free(m);
    /* r1: the prompt ends "<｜Assistant｜><think>\n"; the chat answer holds
     * the whole reasoning, the completion what follows the prompt */
    write_text("r1_chat.jsonl", "{\"messages\": [" MSG("user", "What is 2+2?") ", "
                                MSG("assistant", "<think>\\n2+2=4</think> 4") "]}\n"
                                "{\"messages\": [" MSG("user", "Name a colour.") ", "
                                MSG("assistant", "<think>\\n\\n</think>\\n\\nBlue.") "]}\n");
    write_text("r1_pc.jsonl", "{\"prompt\": \"What is 2+2?\", \"completion\": \"2+2=4</think> 4\"}\n"
                              "{\"prompt\": \"Name a colour.\", \"completion\": \"\\n</think>\\n\\nBlue.\"}\n");
    double a = ds_loss("r1c", "r1", "r1_chat.jsonl"), b = ds_loss("r1p", "r1", "r1_pc.jsonl");
    printf("r1: chat rows %.17g, prompt/completion rows %.17g\n", a, b);
    assert_true(a == b);
    char *run = P("runs/r1c");
    cJSON *sum = summary_of(run);
    const cJSON *st = cJSON_GetObjectItem(sum, "sft");
    assert_string_equal(base_json_str(st, "chat_template", ""), "DeepSeek-V3");
    assert_string_equal(base_json_str(st, "template", ""), "r1");
    assert_int_equal(base_json_int(cJSON_GetObjectItem(st, "rows"), "chat", -1, NULL), 2);
    cJSON_Delete(sum);
    free(run);
    /* chat (V3): the answer's <think> tokens as the model writes them */
    write_text("v3_chat.jsonl", "{\"messages\": [" MSG("user", "What is 2+2?") ", "
                                MSG("assistant", "<think>2+2=4</think> 4") "]}\n");
    write_text("v3_pc.jsonl", "{\"prompt\": \"What is 2+2?\", \"completion\": \"<think>2+2=4</think> 4\"}\n");
    a = ds_loss("v3c", "chat", "v3_chat.jsonl"), b = ds_loss("v3p", "chat", "v3_pc.jsonl");
    printf("chat: chat rows %.17g, prompt/completion rows %.17g\n", a, b);
    assert_true(a == b);
    /* r1, several turns: the last is the answer, the others its prompt
     * (earlier reasoning dropped, as the R1 template does) */
    write_text("mt_chat.jsonl", "{\"messages\": [" MSG("user", "a?") ", " MSG("assistant", "<think>\\nx</think>y") ", "
                                MSG("user", "b?") ", " MSG("assistant", "<think>\\nr</think>z") "]}\n");
    write_text("mt_pc.jsonl", "{\"prompt\": [" MSG("user", "a?") ", " MSG("assistant", "<think>\\nx</think>y") ", "
                              MSG("user", "b?") "], \"completion\": \"r</think>z\"}\n");
    a = ds_loss("mtc", "r1", "mt_chat.jsonl"), b = ds_loss("mtp", "r1", "mt_pc.jsonl");
    printf("r1, two turns: chat rows %.17g, prompt/completion rows %.17g\n", a, b);
    assert_true(a == b);
    /* r1 with an answer that does not start inside the reasoning */
    write_text("bad.jsonl", "{\"messages\": [" MSG("user", "a?") ", " MSG("assistant", "b") "]}\n");
    char *src = ds_recipe("bad", "r1", "bad.jsonl");
    const char *want[] = {"bad.jsonl:1", "ends the prompt with \"<think>\\n\", so the assistant message must start"};
    run_fails(src, "bad.lua", want, 2);
    free(src);
}

static int setup(void **state) {
    (void)state;
    g_dir = test_tmpdir();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_rmdir(g_dir);
    free(g_dir);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sampled_rows_teach),
        cmocka_unit_test(test_chat_rows_as_generation),
        cmocka_unit_test(test_row_errors),
        cmocka_unit_test(test_chat_rows_deepseek),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
