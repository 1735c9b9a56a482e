/* Tests that a run never loses data (issue 12): the run name cannot point
 * outside output_dir and --overwrite removes only a directory grpo made
 * (its .grpo-run marker), never following links; a resume after
 * save_total_limit rotated away the checkpoint it started from still saves
 * and finishes bit-exactly; a stale .tmp-step-N is cleaned up; a bad
 * trainer_state.json is an error naming the file and the key before
 * metrics.jsonl is touched; a corrupt newest checkpoint is named, and
 * --resume-from-last-good resumes from the newest one that verifies.
 * The model is hf-tiny-v3-a with a byte-level tokenizer: every run takes
 * well under a second. */
#include "common/test_common.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "recipe/recipe.h"
#include "train/run.h"

static char *DIR_; /* temp: model/, data.jsonl, vary.lua, runs/, victim/ */

static int setup(void **state) {
    (void)state;
    DIR_ = test_tmpdir();
    test_run_fixture(DIR_);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_rmdir(DIR_);
    free(DIR_);
    return 0;
}

/* eval -> grpo (4 steps, a checkpoint every step) -> eval */
static char *recipe_text(const char *name) {
    base_buf b = {0};
    base_buf_printf(&b,
                    "return {\n"
                    "  name = '%s', model = '%s/model', output_dir = '%s/runs', seed = 7,\n"
                    "  template = 'Q: {prompt}\\nA: ', report = false,\n"
                    "  datasets = { train = '%s/data.jsonl' },\n"
                    "  rewards = { '%s/vary.lua:1.0', 'think_format:0.5' },\n"
                    "  stages = {\n"
                    "    { type = 'eval', name = 'eval_before', dataset = 'train', num_generations = 2, limit = 3,\n"
                    "      max_completion_length = 8 },\n"
                    "    { type = 'grpo', dataset = 'train', num_generations = 4, generation_batch_size = 8,\n"
                    "      max_steps = 4, max_completion_length = 10, learning_rate = 3e-3, beta = 0.01,\n"
                    "      save_steps = 1, save_total_limit = 0, per_device_train_batch_size = 4 },\n"
                    "    { type = 'eval', name = 'eval_after', dataset = 'train', num_generations = 2, limit = 3,\n"
                    "      max_completion_length = 8 },\n"
                    "  },\n"
                    "}\n",
                    name, DIR_, DIR_, DIR_, DIR_);
    return b.data;
}

/* Run the test recipe under `name` with overrides. */
static base_status run_opts_with(const char *name, const char *const *sets, int n_sets, const run_opts *o) {
    char *text = recipe_text(name);
    recipe *rc;
    base_status s = recipe_load_string(text, "t.lua", sets, n_sets, &rc);
    free(text);
    if (s) return s;
    s = run_recipe(rc, o);
    recipe_free(rc);
    return s;
}

static base_status run_with(const char *name, const char *const *sets, int n_sets, int resume, int64_t max_total) {
    run_opts o = {.resume = resume, .overwrite = !resume, .quiet = 1, .max_total_steps = max_total};
    return run_opts_with(name, sets, n_sets, &o);
}

static char *path_of(const char *rel) {
    base_buf b = {0};
    base_buf_printf(&b, "%s/%s", DIR_, rel);
    return b.data;
}

static char *read_rel(const char *rel, size_t *n) {
    char *p = path_of(rel), *t = NULL;
    size_t len;
    if (base_read_file(p, &t, &len)) fail_msg("%s", base_err_msg());
    if (n) *n = len;
    free(p);
    return t;
}

static void write_rel(const char *rel, const char *text) {
    char *p = path_of(rel);
    test_write_file(p, text, strlen(text));
    free(p);
}

static int exists_rel(const char *rel) {
    char *p = path_of(rel);
    struct stat st;
    int ok = lstat(p, &st) == 0;
    free(p);
    return ok;
}

static void mkdir_rel(const char *rel) {
    char *p = path_of(rel);
    if (base_mkdir_p(p)) fail_msg("%s", base_err_msg());
    free(p);
}

static void expect_error(base_status s, const char *needle) {
    if (!s) fail_msg("expected an error containing '%s'", needle);
    if (!strstr(base_err_msg(), needle)) fail_msg("message '%s' lacks '%s'", base_err_msg(), needle);
}

/* metrics.jsonl without wall-clock fields, and step-4 weights, equal */
static char *metrics_canon(const char *name) {
    base_buf b = {0};
    base_buf_printf(&b, "%s/runs/%s/metrics.jsonl", DIR_, name);
    char *m = test_metrics_canon(b.data);
    base_buf_free(&b);
    return m;
}

static void assert_same_run(const char *a, const char *b) {
    char *ma = metrics_canon(a), *mb = metrics_canon(b);
    assert_string_equal(ma, mb);
    free(ma), free(mb);
    char ra[128], rb[128];
    snprintf(ra, sizeof ra, "runs/%s/checkpoints/step-4/model.safetensors", a);
    snprintf(rb, sizeof rb, "runs/%s/checkpoints/step-4/model.safetensors", b);
    size_t na, nb;
    char *wa = read_rel(ra, &na), *wb = read_rel(rb, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(wa, wb, na);
    free(wa), free(wb);
}

static void test_straight(void **state) {
    (void)state;
    if (run_with("straight", NULL, 0, 0, 0)) fail_msg("%s", base_err_msg());
    assert_true(exists_rel("runs/straight/.grpo-run"));
}

/* --set name=... cannot leave output_dir; --overwrite removes only a marked
 * run directory, and links inside it are removed, not followed. */
static void test_names_and_overwrite(void **state) {
    (void)state;
    mkdir_rel("victim/sub");
    write_rel("victim/precious", "keep me\n");
    write_rel("victim/sub/precious2", "keep me too\n");
    mkdir_rel("runs/other");
    write_rel("runs/other/metrics.jsonl", "{}\n");
    const char *bad[][2] = {{"name=", "'name' is empty"},
                            {"name=../victim", "contains '/'"},
                            {"name=..", "'.' or '..'"},
                            {"name=.", "'.' or '..'"},
                            {"name=a/../../victim", "contains '/'"},
                            {"name=x\ty", "control character"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_error(run_with("straight", bad[i], 1, 0, 0), bad[i][1]);
        assert_non_null(strstr(base_err_msg(), "t.lua"));
        assert_non_null(strstr(base_err_msg(), "'name'"));
    }
    char long_name[300] = "name=";
    memset(long_name + 5, 'n', 250);
    const char *too_long[] = {long_name};
    expect_error(run_with("straight", too_long, 1, 0, 0), "longer than 200");
    assert_true(exists_rel("victim/precious"));
    assert_true(exists_rel("runs/other/metrics.jsonl"));
    assert_true(exists_rel("runs/straight/metrics.jsonl"));
    /* a marked run directory with links to the victim inside: overwrite
     * removes the links, the victim keeps its files */
    const char *one_step[] = {"stages.grpo.max_steps=1"};
    if (run_with("ow", one_step, 1, 0, 0)) fail_msg("%s", base_err_msg());
    char *victim = path_of("victim"), *link1 = path_of("runs/ow/link"), *link2 = path_of("runs/ow/checkpoints/ln");
    char *vfile = path_of("victim/precious"), *link3 = path_of("runs/ow/fl");
    assert_int_equal(symlink(victim, link1), 0);
    assert_int_equal(symlink(victim, link2), 0);
    assert_int_equal(symlink(vfile, link3), 0);
    if (run_with("ow", one_step, 1, 0, 0)) fail_msg("%s", base_err_msg());
    assert_false(exists_rel("runs/ow/link"));
    assert_false(exists_rel("runs/ow/fl"));
    assert_true(exists_rel("runs/ow/.grpo-run"));
    assert_true(exists_rel("runs/ow/checkpoints/step-1/model.safetensors"));
    assert_true(exists_rel("victim/precious"));
    assert_true(exists_rel("victim/sub/precious2"));
    /* the run directory itself a link to a marked directory: the link goes,
     * the directory it points to stays */
    mkdir_rel("elsewhere");
    write_rel("elsewhere/.grpo-run", "x\n");
    write_rel("elsewhere/metrics.jsonl", "{}\n");
    char *elsewhere = path_of("elsewhere"), *runlink = path_of("runs/linked");
    assert_int_equal(symlink(elsewhere, runlink), 0);
    const char *linked[] = {"stages.grpo.max_steps=1", "name=linked"};
    if (run_with("linked", linked, 2, 0, 0)) fail_msg("%s", base_err_msg());
    assert_true(exists_rel("elsewhere/metrics.jsonl"));
    assert_true(exists_rel("elsewhere/.grpo-run"));
    struct stat st;
    assert_int_equal(lstat(runlink, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    /* a directory without the marker (not grpo's, or an older grpo's):
     * --overwrite refuses and says how to remove it; --resume without a
     * checkpoint does not write into it */
    const char *other[] = {"name=other"};
    expect_error(run_with("other", other, 1, 0, 0), "refuses");
    assert_non_null(strstr(base_err_msg(), "rm -r"));
    expect_error(run_with("other", other, 1, 1, 0), "not a grpo run directory");
    char *m = read_rel("runs/other/metrics.jsonl", NULL);
    assert_string_equal(m, "{}\n");
    assert_false(exists_rel("runs/other/config.resolved.lua"));
    free(m), free(victim), free(link1), free(link2), free(vfile), free(link3), free(elsewhere), free(runlink);
}

/* Issue 12 defect 2: save_total_limit = 2, one step, resume: the resumed
 * run's saves do not read from the checkpoint it started from (rotated
 * away at step 3), a stale .tmp-step-N is removed, and the result is the
 * straight run's. */
static void test_resume_after_rotation(void **state) {
    (void)state;
    const char *sets[] = {"stages.grpo.save_total_limit=2"};
    if (run_with("rot", sets, 1, 0, 1)) fail_msg("%s", base_err_msg());
    assert_true(exists_rel("runs/rot/checkpoints/step-1/trainer_state.json"));
    mkdir_rel("runs/rot/checkpoints/.tmp-step-9");
    write_rel("runs/rot/checkpoints/.tmp-step-9/model.safetensors", "half a checkpoint");
    mkdir_rel("runs/rot/checkpoints/.tmp-step-2");
    write_rel("runs/rot/checkpoints/.tmp-step-2/junk", "from a crash");
    if (run_with("rot", sets, 1, 1, 0)) fail_msg("%s", base_err_msg());
    char *root = path_of("runs/rot/checkpoints");
    DIR *d = opendir(root);
    assert_non_null(d);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (strcmp(e->d_name, "step-3") && strcmp(e->d_name, "step-4")) fail_msg("left in checkpoints/: %s", e->d_name);
        n++;
    }
    closedir(d);
    free(root);
    assert_int_equal(n, 2);
    assert_true(exists_rel("runs/rot/checkpoints/step-4/config.json"));
    assert_true(exists_rel("runs/rot/checkpoints/step-4/tokenizer.json"));
    assert_same_run("straight", "rot");
}

/* Replace `key`'s value in a checkpoint's trainer_state.json. */
static void edit_state(const char *run, int step, const char *key, cJSON *value) {
    char rel[160];
    snprintf(rel, sizeof rel, "runs/%s/checkpoints/step-%d/trainer_state.json", run, step);
    char *text = read_rel(rel, NULL);
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    cJSON_ReplaceItemInObjectCaseSensitive(j, key, value);
    char *out = cJSON_Print(j);
    write_rel(rel, out);
    cJSON_free(out);
    cJSON_Delete(j);
    free(text);
}

/* Issue 12 defect 6: a bad trainer_state.json is an error naming the file
 * and the key, before metrics.jsonl or anything else is written. */
static void test_bad_trainer_state(void **state) {
    (void)state;
    static const struct {
        const char *key, *json, *needle;
    } cases[] = {
        {"stage_step", "-5", "'stage_step' = -5 is out of range"},
        {"stage_step", "5", "'stage_step' = 5 is out of range [0, 4]"},
        {"stage_step", "1.5", "'stage_step' must be an integer"},
        {"stage_step", "1e300", "'stage_step' must be an integer"},
        {"total_steps", "0", "'total_steps' = 0 is out of range [2"},
        {"metrics_lines", "-1", "'metrics_lines' = -1"},
        {"samples_lines", "\"3\"", "'samples_lines' must be an integer"},
        {"data_pos", "-2", "'data_pos' = -2"},
        {"data_pos", "1000", "'data_pos' = 1000 is past the end"},
        {"stage_index", "7", "'stage_index' = 7 is out of range [0, 2]"},
        {"stage_index", "0", "'stage_name' is 'grpo' but the recipe's stage 1 is 'eval_before'"},
        {"stage_name", "\"other\"", "'stage_name' is 'other'"},
        {"optim_skipped", "9", "'optim_skipped' = 9"},
        {"has_optimizer", "false", "'has_optimizer' is false"},
        {"entropy_last", "\"x\"", "'entropy_last'"},
        {"seed", "8", "'seed'"},
        {"version", "2", "'version' = 2"},
        {"summary", "[]", "'summary' must be an object"},
    };
    if (run_with("badts", NULL, 0, 0, 2)) fail_msg("%s", base_err_msg());
    size_t n0, s0;
    char *metrics0 = read_rel("runs/badts/metrics.jsonl", &n0), *samples0 = read_rel("runs/badts/samples.jsonl", &s0);
    char *good = read_rel("runs/badts/checkpoints/step-2/trainer_state.json", NULL);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_rel("runs/badts/checkpoints/step-2/trainer_state.json", good);
        edit_state("badts", 2, cases[i].key, cJSON_Parse(cases[i].json));
        base_status s = run_with("badts", NULL, 0, 1, 0);
        if (!s) fail_msg("%s = %s: resumed", cases[i].key, cases[i].json);
        if (!strstr(base_err_msg(), cases[i].needle))
            fail_msg("%s = %s: message '%s' lacks '%s'", cases[i].key, cases[i].json, base_err_msg(),
                     cases[i].needle);
        assert_non_null(strstr(base_err_msg(), "step-2/trainer_state.json"));
        size_t n1, s1;
        char *metrics1 = read_rel("runs/badts/metrics.jsonl", &n1), *samples1 = read_rel("runs/badts/samples.jsonl", &s1);
        assert_int_equal(n1, n0);
        assert_memory_equal(metrics1, metrics0, n0);
        assert_int_equal(s1, s0);
        assert_memory_equal(samples1, samples0, s0);
        free(metrics1), free(samples1);
    }
    /* a key missing, and not JSON at all */
    write_rel("runs/badts/checkpoints/step-2/trainer_state.json", good);
    edit_state("badts", 2, "stage_step", cJSON_CreateNull());
    expect_error(run_with("badts", NULL, 0, 1, 0), "'stage_step' must be an integer");
    write_rel("runs/badts/checkpoints/step-2/trainer_state.json", "{\"stage_index\": 1,");
    expect_error(run_with("badts", NULL, 0, 1, 0), "step-2/trainer_state.json");
    char *m = read_rel("runs/badts/metrics.jsonl", NULL);
    assert_memory_equal(m, metrics0, n0);
    free(m), free(metrics0), free(samples0), free(good);
}

/* A corrupt newest checkpoint: --resume names it, why, and the newest good
 * one; --resume-from-last-good sets it aside and resumes from that one,
 * finishing as the straight run did. */
static void test_resume_from_last_good(void **state) {
    (void)state;
    if (run_with("lastgood", NULL, 0, 0, 3)) fail_msg("%s", base_err_msg());
    /* step-3's weights truncated, step-2's trainer_state.json garbage */
    char *w = path_of("runs/lastgood/checkpoints/step-3/model.safetensors");
    assert_int_equal(truncate(w, 100), 0);
    write_rel("runs/lastgood/checkpoints/step-2/trainer_state.json", "{\"stage_step\": -5}");
    size_t n0;
    char *metrics0 = read_rel("runs/lastgood/metrics.jsonl", &n0);
    expect_error(run_with("lastgood", NULL, 0, 1, 0), "step-3 does not verify");
    assert_non_null(strstr(base_err_msg(), "model.safetensors"));
    assert_non_null(strstr(base_err_msg(), "step-1: resume from it with --resume-from-last-good"));
    char *m = read_rel("runs/lastgood/metrics.jsonl", NULL);
    assert_memory_equal(m, metrics0, n0);
    free(m);
    run_opts o = {.resume = 1, .resume_last_good = 1, .quiet = 1};
    if (run_opts_with("lastgood", NULL, 0, &o)) fail_msg("%s", base_err_msg());
    assert_true(exists_rel("runs/lastgood/checkpoints/corrupt-step-3/model.safetensors"));
    assert_true(exists_rel("runs/lastgood/checkpoints/corrupt-step-2/trainer_state.json"));
    assert_same_run("straight", "lastgood");
    /* no checkpoint verifies: an error, with or without the flag */
    const char *two[] = {"name=nogood"};
    if (run_with("nogood", two, 1, 0, 1)) fail_msg("%s", base_err_msg());
    write_rel("runs/nogood/checkpoints/step-1/config.json", "{not json");
    expect_error(run_opts_with("nogood", two, 1, &o), "no older checkpoint");
    assert_non_null(strstr(base_err_msg(), "step-1/config.json"));
    /* the command line flag */
    char *rp = path_of("lastgood.lua"), *text = recipe_text("lastgood");
    write_rel("lastgood.lua", text);
    w = (free(w), path_of("runs/lastgood/checkpoints/step-4/optimizer.safetensors"));
    assert_int_equal(truncate(w, 10), 0);
    base_buf args = {0};
    base_buf_printf(&args, "run '%s' --resume --quiet", rp);
    char *out;
    assert_int_equal(test_run_grpo(args.data, &out), 1);
    assert_non_null(strstr(out, "--resume-from-last-good"));
    free(out);
    base_buf_reset(&args);
    base_buf_printf(&args, "run '%s' --resume-from-last-good --quiet", rp);
    if (test_run_grpo(args.data, &out) != 0) fail_msg("%s", out);
    free(out);
    assert_true(exists_rel("runs/lastgood/checkpoints/corrupt-step-4/optimizer.safetensors"));
    assert_true(exists_rel("runs/lastgood/checkpoints/step-4/trainer_state.json"));
    base_buf_free(&args);
    free(rp), free(text), free(w), free(metrics0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_straight),
        cmocka_unit_test(test_names_and_overwrite),
        cmocka_unit_test(test_resume_after_rotation),
        cmocka_unit_test(test_bad_trainer_state),
        cmocka_unit_test(test_resume_from_last_good),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
