/* A run never reports success it did not have: the reward error policy
 * (max_reward_error_rate over reward_error_window steps) stops a GRPO, eval
 * or sample stage whose reward script fails, naming the script, the first
 * error and the log; metrics.jsonl and the progress line count the reward
 * errors of every step; nil is "not scored" in eval as in training; the
 * reward parts are logged as rewards/NAME/PART. On hf-tiny-v3-a with a
 * byte-level tokenizer, through `grpo run` (so the progress line is seen). */
#include "common/test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

static char *DIR_; /* model/, data.jsonl, *.lua, *.recipe.lua, runs/ */

static char *P(const char *rel) { return base_path_join(DIR_, rel); }

static void write_text(const char *rel, const char *text) { test_write_text(DIR_, rel, text); }

static int setup(void **state) {
    (void)state;
    DIR_ = test_tmpdir();
    char *m = P("model");
    test_tiny_model(m, 1);
    free(m);
    /* prompts in file order (shuffle_dataset = false): step k of a stage
     * with 2 prompts per step sees ids 2k and 2k + 1 */
    base_buf b = {0};
    for (int i = 0; i < 16; i++)
        base_buf_printf(&b, "{\"id\": %d, \"prompt\": \"What is %d + %d?\", \"answer\": \"%d\"}\n", i, i, 3, i + 3);
    write_text("data.jsonl", b.data);
    base_buf_free(&b);
    /* fails on every sample */
    write_text("down.lua", "return function(s) error('judge is down') end\n");
    /* fails on the odd ids: half the samples of every step */
    write_text("odd.lua", "return function(s) if s.id % 2 == 1 then error('odd id ' .. s.id) end\n"
                          "  return #s.completion % 3 / 2, { chars = #s.completion } end\n");
    /* fails on ids 4 and 5 only: step 3 of a stage in file order */
    write_text("step3.lua", "return function(s) if s.id == 4 or s.id == 5 then error('bad row') end\n"
                            "  return #s.completion % 2 end\n");
    /* scores 1 on ids divisible by 4 and nil elsewhere ("not scored") */
    write_text("sparse.lua", "return function(s) if s.id % 4 == 0 then return 1 end return nil end\n");
    /* a part with the trainer's own name */
    write_text("std_part.lua", "return function(s) return 1, { std = 2 } end\n");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_rmdir(DIR_);
    free(DIR_);
    return 0;
}

/* Write NAME.recipe.lua: one stage (grpo: 4 steps of 2 prompts x 4
 * completions; eval: 8 prompts x 2) with the rewards REWARDS (Lua list
 * items) and extra top-level and stage entries. */
static char *recipe(const char *name, const char *type, const char *rewards, const char *top, const char *stage) {
    base_buf b = {0};
    base_buf_printf(&b,
                    "return {\n"
                    "  name = '%s', model = '%s/model', output_dir = '%s/runs', seed = 3,\n"
                    "  template = 'Q: {prompt}\\nA: ', report = false, reward_workers = 2,\n"
                    "  datasets = { train = '%s/data.jsonl' },\n"
                    "  rewards = { %s },\n"
                    "  %s\n"
                    "  stages = {\n",
                    name, DIR_, DIR_, DIR_, rewards, top ? top : "");
    if (!strcmp(type, "grpo"))
        base_buf_printf(&b,
                        "    { type = 'grpo', dataset = 'train', num_generations = 4, generation_batch_size = 8,\n"
                        "      max_steps = 4, max_completion_length = 8, learning_rate = 1e-3,\n"
                        "      shuffle_dataset = false, log_completions_steps = 1, %s },\n",
                        stage ? stage : "");
    else
        base_buf_printf(&b,
                        "    { type = 'eval', dataset = 'train', num_generations = 2, limit = 8,\n"
                        "      max_completion_length = 8, %s },\n",
                        stage ? stage : "");
    base_buf_puts(&b, "  },\n}\n");
    char fname[128];
    snprintf(fname, sizeof fname, "%s.recipe.lua", name);
    char *path = P(fname);
    test_write_file(path, b.data, b.len);
    base_buf_free(&b);
    return path;
}

/* grpo run PATH --overwrite: exit status, output (stdout + stderr). */
static int run(const char *path, char **out) {
    base_buf a = {0};
    base_buf_printf(&a, "run '%s' --overwrite", path);
    int rc = test_run_grpo(a.data, out);
    base_buf_free(&a);
    return rc;
}

static char *run_file(const char *name, const char *rel) {
    base_buf b = {0};
    base_buf_printf(&b, "%s/runs/%s/%s", DIR_, name, rel);
    return b.data;
}

/* The lines of a JSONL file (at most max). */
static int read_lines(const char *path, cJSON **rows, int max) {
    base_jsonl *r;
    if (base_jsonl_open(path, &r)) fail_msg("%s", base_err_msg());
    int n = 0;
    cJSON *row;
    while (n < max && base_jsonl_next(r, &row) == BASE_OK) rows[n++] = row;
    base_jsonl_close(r);
    return n;
}

static int count_substr(const char *text, const char *pat) {
    int k = 0;
    for (const char *p = text; (p = strstr(p, pat)); p++) k++;
    return k;
}

/* A script that fails on every sample: the GRPO stage stops at step 1,
 * exit 1, naming the script, the first error and the log; no checkpoint,
 * no training step in metrics.jsonl. With dynamic sampling (whose all-nil
 * groups would be dropped as "no signal" and skipped) the same, over the
 * samples of all 3 generation rounds of the step. */
static void test_grpo_all_errors(void **state) {
    (void)state;
    const char *dyn[2] = {"", "dynamic_sampling = true, max_resample_rounds = 2"};
    for (int d = 0; d < 2; d++) {
        char *path = recipe("down", "grpo", "'down.lua'", NULL, dyn[d]), *out;
        assert_int_equal(run(path, &out), 1);
        int want_n = d ? 24 : 8;
        char *log = run_file("down", "reward_errors.log"), want[1200];
        snprintf(want, sizeof want,
                 "stage 'grpo': reward 'down' (%s/down.lua) failed on %d of %d samples (100%%) in the last 1 step, "
                 "more than max_reward_error_rate = 0.5 allows; first error: sample ",
                 DIR_, want_n, want_n);
        if (!strstr(out, want) || !strstr(out, "judge is down; every error is in") || !strstr(out, log))
            fail_msg("wanted '%s...judge is down; every error is in %s' in:\n%s", want, log, out);
        char *ck = run_file("down", "checkpoints"), *metrics = run_file("down", "metrics.jsonl");
        assert_false(base_file_exists(ck));
        char *t;
        size_t n;
        assert_int_equal(base_read_file(metrics, &t, &n), BASE_OK);
        assert_int_equal(count_substr(t, "\"loss\""), 0); /* nothing trained */
        assert_int_equal(count_substr(t, "\"skipped\""), 0);
        free(t);
        assert_int_equal(base_read_file(log, &t, &n), BASE_OK);
        assert_int_equal(count_substr(t, "judge is down"), want_n);
        free(t);
        free(ck), free(metrics), free(log), free(out), free(path);
    }
    /* max_reward_error_rate = 1: never stop (the run then completes, and
     * metrics.jsonl shows the errors of every step) */
    char *path = recipe("down_ok", "grpo", "'down.lua', 'think_format:0.5'", "max_reward_error_rate = 1,", NULL), *out;
    assert_int_equal(run(path, &out), 0);
    char *metrics = run_file("down_ok", "metrics.jsonl");
    cJSON *rows[8];
    int n = read_lines(metrics, rows, 8);
    assert_int_equal(n, 4);
    for (int i = 0; i < n; i++) {
        assert_int_equal(base_json_int(rows[i], "reward_errors", -1, NULL), 8);
        cJSON_Delete(rows[i]);
    }
    free(metrics), free(out), free(path);
}

/* Half the samples of every step fail: at the limit (0.5 is not more than
 * 0.5) the run completes; each step's metrics line and the progress line
 * count 4 errors; the parts' means are in metrics.jsonl
 * (rewards/odd/chars = the mean length of the step's scored completions,
 * from samples.jsonl). Below the limit (0.4) it stops at step 1. */
static void test_grpo_partial_errors(void **state) {
    (void)state;
    char *path = recipe("odd", "grpo", "'odd.lua', 'think_format:0.5'", NULL, NULL), *out;
    int rc = run(path, &out);
    if (rc != 0) fail_msg("rc %d:\n%s", rc, out);
    assert_non_null(strstr(out, "grpo: 4/4 "));
    assert_non_null(strstr(out, " reward_errors 4\n")); /* the progress line of the last step */
    char *metrics = run_file("odd", "metrics.jsonl"), *samples = run_file("odd", "samples.jsonl");
    cJSON *m[8], *s[64];
    assert_int_equal(read_lines(metrics, m, 8), 4);
    assert_int_equal(read_lines(samples, s, 64), 32);
    for (int step = 0; step < 4; step++) {
        assert_int_equal(base_json_int(m[step], "reward_errors", -1, NULL), 4);
        double chars = 0;
        int scored = 0;
        for (int j = 0; j < 8; j++) {
            const cJSON *smp = s[step * 8 + j], *rw = cJSON_GetObjectItem(smp, "rewards");
            assert_int_equal(base_json_int(smp, "step", -1, NULL), step + 1);
            if (cJSON_IsNull(cJSON_GetObjectItem(rw, "odd"))) continue;
            chars += (double)strlen(base_json_str(smp, "completion", ""));
            scored++;
        }
        assert_int_equal(scored, 4);
        assert_true(fabs(base_json_num(m[step], "rewards/odd/chars", -1, NULL) - chars / scored) < 1e-9);
        assert_null(cJSON_GetObjectItem(m[step], "rewards/think_format/chars"));
    }
    for (int i = 0; i < 4; i++) cJSON_Delete(m[i]);
    for (int i = 0; i < 32; i++) cJSON_Delete(s[i]);
    free(out), free(path), free(metrics), free(samples);
    path = recipe("odd_strict", "grpo", "'odd.lua'", "max_reward_error_rate = 0.4,", NULL);
    assert_int_equal(run(path, &out), 1);
    if (!strstr(out, "reward 'odd' (") || !strstr(out, "failed on 4 of 8 samples (50%) in the last 1 step") ||
        !strstr(out, "max_reward_error_rate = 0.4"))
        fail_msg("unexpected output:\n%s", out);
    free(out), free(path);
}

/* The window: errors only in step 3 (4 + 4 of 8 samples). Over a window
 * of 1 step that is 100% and the stage stops at step 3; over 3 steps it is
 * 8 of 24 (33%) and the run completes, with the errors in step 3's line. */
static void test_grpo_window(void **state) {
    (void)state;
    char *path = recipe("w1", "grpo", "'step3.lua'", "max_reward_error_rate = 0.6, reward_error_window = 1,", NULL);
    char *out;
    assert_int_equal(run(path, &out), 1);
    if (!strstr(out, "failed on 8 of 8 samples (100%) in the last 1 step,")) fail_msg("unexpected output:\n%s", out);
    char *metrics = run_file("w1", "metrics.jsonl");
    cJSON *m[8];
    assert_int_equal(read_lines(metrics, m, 8), 2); /* steps 1 and 2 trained */
    for (int i = 0; i < 2; i++) cJSON_Delete(m[i]);
    free(out), free(path), free(metrics);
    path = recipe("w3", "grpo", "'step3.lua'", "max_reward_error_rate = 0.6, reward_error_window = 3,", NULL);
    int rc = run(path, &out);
    if (rc != 0) fail_msg("rc %d:\n%s", rc, out);
    metrics = run_file("w3", "metrics.jsonl");
    assert_int_equal(read_lines(metrics, m, 8), 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(base_json_int(m[i], "reward_errors", -1, NULL), i == 2 ? 8 : 0);
        cJSON_Delete(m[i]);
    }
    free(out), free(path), free(metrics);
}

/* Eval: nil is "not scored", as in training. sparse.lua scores 1 on the
 * ids divisible by 4 (2 of the 8 prompts) and nil elsewhere: accuracy and
 * rewards/sparse are 1 over the 4 scored samples (not 0.25 with nil as 0),
 * rewards/sparse/scored is 4 of n_samples 16; the second function's parts
 * are averaged (rewards/odd/chars); reward_errors counts odd.lua's
 * failures, and a reward that fails everywhere stops the stage. */
static void test_eval_nil_and_parts(void **state) {
    (void)state;
    char *path = recipe("ev", "eval", "'sparse.lua', 'odd.lua'", NULL, NULL), *out;
    int rc = run(path, &out);
    if (rc != 0) fail_msg("rc %d:\n%s", rc, out);
    assert_non_null(strstr(out, "accuracy 1.000 (pass@1 over 2 samples, 8 prompts; 4 of 16 samples scored, 8 reward errors)"));
    char *sum = run_file("ev", "summary.json"), *smp = run_file("ev", "eval.samples.jsonl");
    cJSON *js;
    if (base_json_parse_file(sum, &js)) fail_msg("%s", base_err_msg());
    const cJSON *ev = cJSON_GetObjectItem(js, "eval");
    assert_true(base_json_num(ev, "accuracy", -1, NULL) == 1.0);
    assert_true(base_json_num(ev, "pass@1", -1, NULL) == 1.0);
    assert_true(base_json_num(ev, "rewards/sparse", -1, NULL) == 1.0);
    assert_int_equal(base_json_int(ev, "rewards/sparse/scored", -1, NULL), 4);
    assert_int_equal(base_json_int(ev, "rewards/odd/scored", -1, NULL), 8);
    assert_int_equal(base_json_int(ev, "n_samples", -1, NULL), 16);
    assert_int_equal(base_json_int(ev, "reward_errors", -1, NULL), 8);
    cJSON *s[16];
    assert_int_equal(read_lines(smp, s, 16), 16);
    double chars = 0, odd = 0, total = 0;
    int n_odd = 0, n_total = 0;
    for (int i = 0; i < 16; i++) {
        const cJSON *rw = cJSON_GetObjectItem(s[i], "rewards"), *v = cJSON_GetObjectItem(rw, "odd");
        if (cJSON_IsNumber(v)) {
            chars += (double)strlen(base_json_str(s[i], "completion", ""));
            odd += v->valuedouble;
            n_odd++;
        }
        if (cJSON_IsNumber(cJSON_GetObjectItem(s[i], "reward")))
            total += cJSON_GetObjectItem(s[i], "reward")->valuedouble, n_total++;
        cJSON_Delete(s[i]);
    }
    assert_int_equal(n_odd, 8);
    assert_true(fabs(base_json_num(ev, "rewards/odd/chars", -1, NULL) - chars / n_odd) < 1e-9);
    assert_true(fabs(base_json_num(ev, "rewards/odd", -1, NULL) - odd / n_odd) < 1e-9);
    assert_true(fabs(base_json_num(ev, "reward", -1, NULL) - total / n_total) < 1e-9);
    cJSON_Delete(js);
    free(out), free(path), free(sum), free(smp);
    path = recipe("ev_down", "eval", "'down.lua'", NULL, NULL);
    assert_int_equal(run(path, &out), 1);
    if (!strstr(out, "stage 'eval': reward 'down' (") || !strstr(out, "in the last 1 generation batch"))
        fail_msg("unexpected output:\n%s", out);
    free(out), free(path);
}

/* A part named like the trainer's own metrics (rewards/NAME/std) is an
 * error of that call, not a silent overwrite. */
static void test_reserved_part(void **state) {
    (void)state;
    char *path = recipe("stdp", "eval", "'std_part.lua'", NULL, NULL), *out;
    assert_int_equal(run(path, &out), 1);
    if (!strstr(out, "part 'std' is a reserved name")) fail_msg("unexpected output:\n%s", out);
    free(out), free(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grpo_all_errors),
        cmocka_unit_test(test_grpo_partial_errors),
        cmocka_unit_test(test_grpo_window),
        cmocka_unit_test(test_eval_nil_and_parts),
        cmocka_unit_test(test_reserved_part),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
