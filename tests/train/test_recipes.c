/* The shipped recipes: every recipes/NAME.lua loads and validates against the
 * schema; r1-zero.lua and r1.lua hold the paper's values and stages; the
 * HTTP reward model script rewards/http_judge.lua scores through a local
 * server and gives nil (never an error) when off or unreachable. */
#include "common/test_common.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "recipe/recipe.h"
#include "reward/reward.h"
#include "train/run.h"

static recipe *load(const char *rel, const char *const *sets, int n) {
    char *p = test_src_path(rel);
    recipe *r = NULL;
    if (recipe_load(p, sets, n, &r)) fail_msg("%s: %s", rel, base_err_msg());
    free(p);
    return r;
}

static void test_all_recipes_load(void **state) {
    (void)state;
    char *dir = test_src_path("recipes");
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".lua")) continue;
        char rel[300];
        snprintf(rel, sizeof rel, "recipes/%s", e->d_name);
        recipe *r = load(rel, NULL, 0);
        printf("%s: %d stages\n", rel, recipe_config(r)->n_stages);
        assert_true(recipe_config(r)->n_stages >= 1);
        /* the resolved form loads again to the same tree */
        char *lua = recipe_to_lua(r), *again_lua;
        recipe *again;
        if (recipe_load_string(lua, rel, NULL, 0, &again)) fail_msg("%s resolved: %s", rel, base_err_msg());
        again_lua = recipe_to_lua(again);
        assert_string_equal(strchr(lua, '\n'), strchr(again_lua, '\n')); /* after the "resolved from" line */
        free(lua), free(again_lua);
        recipe_free(again);
        recipe_free(r);
        n++;
    }
    closedir(d);
    free(dir);
    assert_true(n >= 3);
}

static void test_r1_zero_values(void **state) {
    (void)state;
    recipe *r = load("recipes/r1-zero.lua", NULL, 0);
    const recipe_cfg *cfg = recipe_config(r);
    const recipe_stage_cfg *st = recipe_stage_by_name(cfg, "grpo");
    assert_non_null(st);
    assert_int_equal(st->type, RECIPE_STAGE_GRPO);
    const recipe_grpo_cfg *g = &st->grpo;
    assert_string_equal(cfg->template_name, "r1-zero");
    assert_int_equal(g->gen.num_generations, 16);
    assert_int_equal(g->generation_batch_size, 512); /* 32 prompts x 16 */
    assert_true(g->beta == 0.001 && g->loss.beta == 0.001);
    assert_true(g->gen.temperature == 1.0);
    assert_int_equal(g->gen.max_completion_length, 32768);
    assert_int_equal(cfg->rewards.n, 2);
    assert_string_equal(cfg->rewards.items[0].script, "boxed_math");
    assert_string_equal(cfg->rewards.items[1].script, "think_format");
    const recipe_stage_cfg *ev = recipe_stage_by_name(cfg, "eval_after");
    assert_true(ev->eval.gen.temperature == 0.6 && ev->eval.gen.top_p == 0.95);
    recipe_free(r);
}

static void test_r1_stages(void **state) {
    (void)state;
    const char *sets[] = {"stages.rl_all.rewards.judge.params.url=http://127.0.0.1:9/score"};
    recipe *r = load("recipes/r1.lua", sets, 1);
    const char *want[][2] = {{"cold_start", "sft"}, {"reasoning_rl", "grpo"}, {"rejection", "sample"},
                             {"sft", "sft"},         {"rl_all", "grpo"},       {"eval", "eval"}};
    const recipe_cfg *cfg = recipe_config(r);
    assert_int_equal(cfg->n_stages, 6);
    for (int i = 0; i < 6; i++) {
        assert_string_equal(cfg->stages[i].name, want[i][0]);
        assert_string_equal(cfg->stages[i].type_name, want[i][1]);
        assert_int_equal(cfg->stages[i].index, i);
    }
    const recipe_stage_cfg *rl = recipe_stage_by_name(cfg, "reasoning_rl");
    assert_int_equal(rl->rewards.n, 3);
    assert_string_equal(rl->rewards.items[2].script, "lang_consistency");
    const recipe_stage_cfg *rs = recipe_stage_by_name(cfg, "rejection");
    assert_int_equal(rs->sample.filters.n, 3);
    assert_non_null(strstr(rs->sample.keep, "rewards.accuracy"));
    /* the SFT stage reads the rejection stage's output */
    const recipe_dataset *ds = recipe_dataset_by_name(cfg, "sft_data");
    assert_string_equal(ds->path, "stage:rejection");
    assert_ptr_equal(ds->producer, rs);
    /* the judge's url reached its params through --set */
    const recipe_stage_cfg *all = recipe_stage_by_name(cfg, "rl_all");
    const recipe_reward *judge = &all->rewards.items[3];
    assert_string_equal(judge->script, "http_judge");
    assert_string_equal(base_json_str(judge->params, "url", ""), "http://127.0.0.1:9/score");
    recipe_free(r);
    /* a reward param that is not a table is refused */
    const char *bad[] = {"rewards.1.params=3"};
    char *p = test_src_path("recipes/r1.lua");
    recipe *x;
    assert_int_equal(recipe_load(p, bad, 1, &x), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "params"));
    free(p);
}

/* ---- rewards/http_judge.lua against a local server ------------------------- */

static int g_listen = -1, g_port;
static atomic_int g_stop;
static pthread_t g_thread;

/* Replies to POST /score with {"score": 0.75} when the body's "response"
 * is exactly "final" (the text after </think>), else {"score": 0.25};
 * /words with {"score": "high"}; anything else with 500. */
static void handle(int fd) {
    char buf[65536];
    size_t n = 0;
    ssize_t k;
    long want = -1;
    char *body = NULL;
    while (n < sizeof buf - 1 && (k = read(fd, buf + n, sizeof buf - 1 - n)) > 0) {
        n += (size_t)k;
        buf[n] = 0;
        char *he = strstr(buf, "\r\n\r\n");
        if (he && want < 0) {
            char *cl = strcasestr(buf, "Content-Length:");
            want = cl ? atol(cl + 15) : 0;
            body = he + 4;
        }
        if (body && (long)(buf + n - body) >= want) break;
    }
    const char *reply = "{\"error\": \"no\"}";
    int code = 500;
    if (body && !strncmp(buf, "POST /score ", 12)) {
        code = 200;
        reply = strstr(body, "\"response\":\"final\"") ? "{\"score\": 0.75}" : "{\"score\": 0.25}";
    } else if (body && !strncmp(buf, "POST /words ", 12)) {
        code = 200;
        reply = "{\"score\": \"high\"}";
    }
    char out[512];
    int len = snprintf(out, sizeof out,
                       "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                       "Connection: close\r\n\r\n%s",
                       code, strlen(reply), reply);
    if (write(fd, out, (size_t)len) < 0) return;
}

static void *serve(void *arg) {
    (void)arg;
    while (!atomic_load(&g_stop)) {
        int c = accept(g_listen, NULL, NULL);
        if (c < 0) break;
        handle(c);
        close(c);
    }
    return NULL;
}

static int server_up(void) {
    g_listen = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (g_listen < 0) return -1;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(g_listen, (struct sockaddr *)&a, sizeof a) < 0 || listen(g_listen, 16) < 0) return -1;
    socklen_t al = sizeof a;
    getsockname(g_listen, (struct sockaddr *)&a, &al);
    g_port = ntohs(a.sin_port);
    return pthread_create(&g_thread, NULL, serve, NULL) ? -1 : 0;
}

static void server_down(void) {
    atomic_store(&g_stop, 1);
    shutdown(g_listen, SHUT_RDWR);
    close(g_listen);
    pthread_join(g_thread, NULL);
}

/* Score two samples with http_judge at `url` (NULL: no params); out[i] is
 * the score or NaN, st[i] the status; returns the pre-flight check's
 * status (message in base_err_msg). */
static base_status judge(const char *url, double out[2], uint8_t st[2]) {
    reward_spec spec = {0};
    cJSON *params = NULL;
    if (url) {
        params = cJSON_CreateObject();
        cJSON_AddStringToObject(params, "url", url);
        cJSON_AddNumberToObject(params, "timeout", 2);
        cJSON_AddNumberToObject(params, "retries", 0);
    }
    assert_int_equal(reward_spec_add(&spec, "http_judge", 1.0, NULL, params), BASE_OK);
    reward_pool *p;
    if (reward_pool_create(&spec, 1, NULL, "/dev/null", &p)) fail_msg("%s", base_err_msg());
    cJSON *s[2] = {cJSON_Parse("{\"prompt\": \"q\", \"completion\": \"<think>r</think>final\", \"answer\": \"4\"}"),
                   cJSON_Parse("{\"prompt\": \"q\", \"completion\": \"no think tags\"}")};
    reward_scores sc = {0};
    assert_int_equal(reward_pool_score(p, (const cJSON *const *)s, 2, &sc), BASE_OK);
    for (int i = 0; i < 2; i++) out[i] = sc.score[i], st[i] = sc.status[i];
    base_status check = reward_pool_check(p);
    reward_scores_free(&sc);
    cJSON_Delete(s[0]), cJSON_Delete(s[1]), cJSON_Delete(params);
    reward_pool_destroy(p);
    reward_spec_free(&spec);
    return check;
}

/* An unreachable judge, an error status or a reply without a number are
 * errors (counted against max_reward_error_rate), never silent nils, and
 * the pre-flight check (reward_pool_check) fails on them naming the URL. */
static void test_http_judge(void **state) {
    (void)state;
    double v[2];
    uint8_t st[2];
    assert_int_equal(judge(NULL, v, st), BASE_OK); /* url empty: off, nothing to check */
    assert_true(isnan(v[0]) && isnan(v[1]));
    assert_true(st[0] == REWARD_NIL && st[1] == REWARD_NIL);
    assert_int_equal(server_up(), 0);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/score", g_port);
    assert_int_equal(judge(url, v, st), BASE_OK);
    assert_true(v[0] == 0.75); /* the judge saw the summary after </think> */
    assert_true(v[1] == 0.25);
    const char *bad[] = {"words", "fail"}; /* no number in the reply; HTTP 500 */
    for (int k = 0; k < 2; k++) {
        snprintf(url, sizeof url, "http://127.0.0.1:%d/%s", g_port, bad[k]);
        assert_int_equal(judge(url, v, st), BASE_ERR_INVALID);
        assert_non_null(strstr(base_err_msg(), "check failed"));
        assert_non_null(strstr(base_err_msg(), url));
        assert_true(st[0] == REWARD_ERROR && st[1] == REWARD_ERROR);
    }
    server_down();
    snprintf(url, sizeof url, "http://127.0.0.1:%d/score", g_port);
    assert_int_equal(judge(url, v, st), BASE_ERR_INVALID); /* nobody listens any more */
    assert_non_null(strstr(base_err_msg(), url));
    assert_true(st[0] == REWARD_ERROR && st[1] == REWARD_ERROR);
}

/* ---- recipes/r1.lua on the tiny model, every stage, a few steps each ------- */

static int count_stage_lines(const char *metrics, const char *stage) {
    char *t;
    size_t n;
    if (base_read_file(metrics, &t, &n)) fail_msg("%s", base_err_msg());
    char pat[128];
    snprintf(pat, sizeof pat, "\"stage\":\"%s\"", stage);
    int k = 0;
    for (char *p = t; (p = strstr(p, pat)); p++) k++;
    free(t);
    return k;
}

static void test_r1_tiny(void **state) {
    (void)state;
    char *dir = test_tmpdir(), *base = test_src_path("data/tiny/base"), *data = test_src_path("data/tiny");
    base_buf sets_buf[64];
    int n = 0;
#define SET(...) (sets_buf[n] = (base_buf){0}, base_buf_printf(&sets_buf[n], __VA_ARGS__), n++)
    SET("model=%s", base);
    SET("output_dir=%s", dir);
    SET("template={prompt}\n"); /* the tiny base model's prompt format */
    SET("report=false");
    SET("datasets.cold_start.path=%s/pretrain.jsonl", data); /* prompt/completion rows */
    SET("datasets.cold_start.limit=16");
    SET("datasets.train.path=%s/train.jsonl", data);
    SET("datasets.train.prompt_column=prompt");
    SET("datasets.train.limit=8");
    SET("datasets.non_reasoning.path=%s/pretrain.jsonl", data);
    SET("datasets.non_reasoning.limit=4");
    SET("datasets.test.path=%s/test.jsonl", data);
    SET("datasets.test.prompt_column=prompt");
    SET("datasets.test.limit=6");
    const char *sft[] = {"cold_start", "sft"};
    for (int i = 0; i < 2; i++) {
        SET("stages.%s.max_steps=2", sft[i]);
        SET("stages.%s.per_device_train_batch_size=4", sft[i]);
        SET("stages.%s.max_length=128", sft[i]);
    }
    const char *rl[] = {"reasoning_rl", "rl_all"};
    for (int i = 0; i < 2; i++) {
        SET("stages.%s.max_steps=2", rl[i]);
        SET("stages.%s.num_generations=4", rl[i]);
        SET("stages.%s.generation_batch_size=8", rl[i]);
        SET("stages.%s.per_device_train_batch_size=8", rl[i]);
        SET("stages.%s.max_prompt_length=64", rl[i]);
        SET("stages.%s.max_completion_length=24", rl[i]);
    }
    const char *smp[] = {"rejection", "eval"};
    for (int i = 0; i < 2; i++) {
        SET("stages.%s.num_generations=4", smp[i]);
        SET("stages.%s.max_prompt_length=64", smp[i]);
        SET("stages.%s.max_completion_length=40", smp[i]);
    }
    SET("stages.rejection.merge_datasets=non_reasoning");
#undef SET
    const char *sets[64];
    for (int i = 0; i < n; i++) sets[i] = sets_buf[i].data;
    recipe *r = load("recipes/r1.lua", sets, n);
    run_opts ro = {.quiet = 1};
    double t0 = base_now();
    if (run_recipe(r, &ro)) fail_msg("r1.lua on the tiny model: %s", base_err_msg());
    printf("r1.lua, 6 stages on the tiny model: %.1f s\n", base_now() - t0);
    recipe_free(r);

    char *run = base_path_join(dir, "r1"), *metrics = base_path_join(run, "metrics.jsonl");
    char *sum = base_path_join(run, "summary.json"), *rej = base_path_join(run, "rejection.jsonl");
    /* the four training stages each wrote their 2 steps */
    const char *train[] = {"cold_start", "reasoning_rl", "sft", "rl_all"};
    for (int i = 0; i < 4; i++) assert_int_equal(count_stage_lines(metrics, train[i]), 2);
    char ck[600];
    snprintf(ck, sizeof ck, "%s/checkpoints/step-8/model.safetensors", run); /* 4 stages x 2 steps */
    assert_true(base_file_exists(ck));
    cJSON *js;
    if (base_json_parse_file(sum, &js)) fail_msg("%s", base_err_msg());
    const cJSON *rs = cJSON_GetObjectItem(js, "rejection"), *ev = cJSON_GetObjectItem(js, "eval");
    assert_non_null(rs);
    assert_non_null(ev);
    int kept = (int)base_json_int(rs, "kept", -1, NULL);
    printf("rejection: kept %d of %d (pass rate %.3f), merged %d; eval accuracy %.3f\n", kept,
           (int)base_json_int(rs, "total", -1, NULL), base_json_num(rs, "pass_rate", -1, NULL),
           (int)base_json_int(rs, "merged", -1, NULL), base_json_num(ev, "accuracy", -1, NULL));
    assert_int_equal(base_json_int(rs, "total", -1, NULL), 8 * 4);
    assert_int_equal(base_json_int(rs, "merged", -1, NULL), 4);
    /* stage 3's output (kept + merged rows) is what the sft stage read */
    char *t;
    size_t tn;
    assert_int_equal(base_read_file(rej, &t, &tn), BASE_OK);
    int lines = 0;
    for (size_t i = 0; i < tn; i++) lines += t[i] == '\n';
    assert_int_equal(lines, kept + 4);
    free(t);
    assert_int_equal(base_json_int(ev, "n_prompts", -1, NULL), 6);
    cJSON_Delete(js);
    for (int i = 0; i < n; i++) base_buf_free(&sets_buf[i]);
    free(run), free(metrics), free(sum), free(rej), free(base), free(data);
    test_rmdir(dir);
    free(dir);
}

/* recipes/r1.lua with its HTTP judge switched on at a URL nobody answers:
 * the run stops at pre-flight, before any stage ran (no run directory),
 * naming the judge and the URL; it does not train on silent nils. */
static void test_r1_judge_preflight(void **state) {
    (void)state;
    char *dir = test_tmpdir(), *base = test_src_path("data/tiny/base"), *data = test_src_path("data/tiny");
    assert_int_equal(server_up(), 0); /* a free port: bound, then closed */
    int port = g_port;
    server_down();
    base_buf b[12];
    int n = 0;
#define SET(...) (b[n] = (base_buf){0}, base_buf_printf(&b[n], __VA_ARGS__), n++)
    SET("model=%s", base);
    SET("output_dir=%s", dir);
    SET("template={prompt}\n");
    const char *ds[] = {"cold_start", "train", "non_reasoning", "test"};
    const char *file[] = {"pretrain", "train", "pretrain", "test"};
    for (int i = 0; i < 4; i++) SET("datasets.%s.path=%s/%s.jsonl", ds[i], data, file[i]);
    SET("datasets.train.prompt_column=prompt");
    SET("datasets.test.prompt_column=prompt");
    SET("stages.rl_all.rewards.4.params.url=http://127.0.0.1:%d/score", port);
    SET("stages.rl_all.rewards.4.params.retries=0");
#undef SET
    const char *sets[12];
    for (int i = 0; i < n; i++) sets[i] = b[i].data;
    recipe *r = load("recipes/r1.lua", sets, n);
    run_opts ro = {.quiet = 1};
    assert_int_not_equal(run_recipe(r, &ro), BASE_OK);
    char want[64];
    snprintf(want, sizeof want, "http://127.0.0.1:%d/score", port);
    if (!strstr(base_err_msg(), "stage 'rl_all': reward 'judge'") || !strstr(base_err_msg(), "check failed") ||
        !strstr(base_err_msg(), want))
        fail_msg("unexpected error: %s", base_err_msg());
    char *run = base_path_join(dir, "r1");
    assert_false(base_file_exists(run)); /* nothing ran */
    recipe_free(r);
    for (int i = 0; i < n; i++) base_buf_free(&b[i]);
    free(run), free(base), free(data);
    test_rmdir(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_recipes_load),
        cmocka_unit_test(test_r1_zero_values),
        cmocka_unit_test(test_r1_stages),
        cmocka_unit_test(test_http_judge),
        cmocka_unit_test(test_r1_judge_preflight),
        cmocka_unit_test(test_r1_tiny),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
