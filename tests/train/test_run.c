/* Tests of the pipeline driver (grpo run): a recipe with eval -> GRPO ->
 * eval on the hf-tiny-v3-a weights and a byte-level tokenizer runs to the
 * end; a run stopped after N steps and resumed gives the same metrics and
 * the same weights as a straight run; a process killed with SIGKILL inside
 * a checkpoint write resumes from the previous checkpoint and still
 * finishes identical; bad recipes and datasets fail before training with a
 * message naming the file and line. */
#include "common/test_common.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "recipe/recipe.h"
#include "tok/tok.h"
#include "train/run.h"

static char *DIR_;   /* temp: model/, data.jsonl, runs/ */

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

/* eval -> grpo (4 steps, beta 0.01, a checkpoint every step, adaptive
 * entropy control whose state a resume must restore) -> eval */
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
                    "      save_steps = 1, save_total_limit = 0, per_device_train_batch_size = 4,\n"
                    "      entropy_coef = 0.001, use_adaptive_entropy = true, entropy_target = 100 },\n"
                    "    { type = 'eval', name = 'eval_after', dataset = 'train', num_generations = 2, limit = 3,\n"
                    "      max_completion_length = 8 },\n"
                    "  },\n"
                    "}\n",
                    name, DIR_, DIR_, DIR_, DIR_);
    return b.data;
}

static void write_recipe(const char *name, char **path) {
    char *text = recipe_text(name);
    char fname[64];
    snprintf(fname, sizeof fname, "%s.lua", name);
    *path = base_path_join(DIR_, fname);
    test_write_file(*path, text, strlen(text));
    free(text);
}

static base_status run_in_process(const char *name, int resume, int64_t max_total) {
    char *text = recipe_text(name);
    recipe *rc;
    base_status s = recipe_load_string(text, "test.lua", NULL, 0, &rc);
    free(text);
    if (s) return s;
    run_opts o = {.resume = resume, .overwrite = !resume, .quiet = 1, .max_total_steps = max_total};
    s = run_recipe(rc, &o);
    recipe_free(rc);
    return s;
}

static char *run_file(const char *name, const char *rel) {
    base_buf b = {0};
    base_buf_printf(&b, "%s/runs/%s/%s", DIR_, name, rel);
    char *t = NULL;
    size_t n;
    if (base_read_file(b.data, &t, &n)) fail_msg("%s", base_err_msg());
    base_buf_free(&b);
    return t;
}

/* Load recipe text with --set overrides and run it to the end (replacing
 * an earlier run of the name); any error fails the test. */
static void run_text(const char *text, const char *const *sets, int n_sets) {
    recipe *rc;
    if (recipe_load_string(text, "t.lua", sets, n_sets, &rc)) fail_msg("%s", base_err_msg());
    run_opts o = {.overwrite = 1, .quiet = 1};
    if (run_recipe(rc, &o)) fail_msg("%s", base_err_msg());
    recipe_free(rc);
}

/* The test recipe (recipe_text) under `name`, with overrides. */
static void run_sets(const char *name, const char *const *sets, int n_sets) {
    char *text = recipe_text(name);
    run_text(text, sets, n_sets);
    free(text);
}

/* The grpo stage's lines of a run's metrics.jsonl, as a cJSON array (the
 * caller deletes it). */
static cJSON *grpo_metrics(const char *name) {
    char *m = run_file(name, "metrics.jsonl"), *save = NULL;
    cJSON *out = cJSON_CreateArray();
    for (char *line = strtok_r(m, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);
        assert_non_null(j);
        if (!strcmp(base_json_str(j, "stage", ""), "grpo")) cJSON_AddItemToArray(out, j);
        else cJSON_Delete(j);
    }
    free(m);
    return out;
}

/* A checkpoint's model.safetensors bytes; *len its size. */
static char *read_weights(const char *name, int step, size_t *len) {
    char rel[64];
    snprintf(rel, sizeof rel, "checkpoints/step-%d/model.safetensors", step);
    base_buf b = {0};
    base_buf_printf(&b, "%s/runs/%s/%s", DIR_, name, rel);
    char *w = NULL;
    if (base_read_file(b.data, &w, len)) fail_msg("%s", base_err_msg());
    base_buf_free(&b);
    return w;
}

/* metrics.jsonl without the wall-clock fields, one canonical string */
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
    size_t na, nb;
    char *wa = read_weights(a, 4, &na), *wb = read_weights(b, 4, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(wa, wb, na); /* bit-identical weights */
    free(wa), free(wb);
}

static void test_straight_run(void **state) {
    (void)state;
    if (run_in_process("straight", 0, 0)) fail_msg("%s", base_err_msg());
    char *sum = run_file("straight", "summary.json");
    cJSON *j = cJSON_Parse(sum);
    assert_non_null(cJSON_GetObjectItemCaseSensitive(j, "eval_before"));
    assert_non_null(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "eval_after"), "accuracy"));
    cJSON_Delete(j);
    free(sum);
    char *m = run_file("straight", "metrics.jsonl");
    int lines = 0;
    for (char *p = m; *p; p++) lines += *p == '\n';
    assert_int_equal(lines, 1 + 4 + 1);
    assert_non_null(strstr(m, "\"clip_ratio/high\""));
    assert_non_null(strstr(m, "\"kl\""));
    /* adaptive entropy: the entropy stays below the target 100, so the
     * coefficient grows by entropy_coef_delta (0.005) per optimizer step */
    free(m);
    cJSON *g = grpo_metrics("straight"), *line;
    assert_int_equal(cJSON_GetArraySize(g), 4);
    int k = 0;
    cJSON_ArrayForEach(line, g) {
        k++;
        assert_true(fabs(base_json_num(line, "entropy_coef", -1, NULL) - (0.001 + 0.005 * k)) < 1e-12);
    }
    cJSON_Delete(g);
    /* the weights moved: step 4 differs from the initial model */
    size_t n4, n0;
    char *w4 = read_weights("straight", 4, &n4), *w0;
    char *p0 = base_path_join(DIR_, "model/model.safetensors");
    if (base_read_file(p0, &w0, &n0)) fail_msg("%s", base_err_msg());
    assert_true(n4 != n0 || memcmp(w4, w0, n0) != 0);
    free(w4), free(w0), free(p0);
    char *cfg = run_file("straight", "config.resolved.lua");
    assert_non_null(strstr(cfg, "loss_type = \"grpo\""));
    free(cfg);
}

static void test_resume_bit_exact(void **state) {
    (void)state;
    /* stop after 2 of the 4 GRPO steps, then resume to the end */
    if (run_in_process("resumed", 0, 2)) fail_msg("%s", base_err_msg());
    if (run_in_process("resumed", 1, 0)) fail_msg("%s", base_err_msg());
    assert_same_run("straight", "resumed");
}

/* Start `grpo run` in a child process; returns its pid. */
static pid_t spawn_run(const char *recipe_path, int resume, const char *delay_ms) {
    const char *exe = getenv("GRPO_EXE");
    if (!exe) exe = "./grpo";
    pid_t pid = fork();
    if (pid == 0) {
        if (delay_ms) setenv("GRPO_TEST_CKPT_DELAY_MS", delay_ms, 1);
        if (!freopen("/dev/null", "w", stderr)) _exit(126);
        execl(exe, exe, "run", recipe_path, resume ? "--resume" : "--overwrite", "--quiet", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void test_kill_during_checkpoint(void **state) {
    (void)state;
    char *rp;
    write_recipe("killed", &rp);
    char *tmp1 = NULL;
    base_buf b = {0};
    base_buf_printf(&b, "%s/runs/killed/checkpoints/.tmp-step-2", DIR_);
    tmp1 = b.data;
    /* the checkpoint of step 2 takes 1.5 s between its first and last
     * file: kill -9 the run when that window opens */
    pid_t pid = spawn_run(rp, 0, "1500");
    int killed = 0;
    for (int i = 0; i < 6000 && !killed; i++) {
        struct stat st;
        char *marker = base_path_join(tmp1, "model.safetensors");
        if (stat(marker, &st) == 0) {
            kill(pid, SIGKILL);
            killed = 1;
        }
        free(marker);
        if (!killed) usleep(5000);
    }
    int status;
    waitpid(pid, &status, 0);
    assert_true(killed);
    assert_true(WIFSIGNALED(status));
    /* the half-written step 2 is not used: the newest complete one is step 1 */
    base_buf c2 = {0};
    base_buf_printf(&c2, "%s/runs/killed/checkpoints/step-2/trainer_state.json", DIR_);
    assert_false(base_file_exists(c2.data));
    base_buf_free(&c2);
    pid = spawn_run(rp, 1, NULL);
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_same_run("straight", "killed");
    free(tmp1), free(rp);
}

static void test_bad_inputs(void **state) {
    (void)state;
    /* a malformed dataset line: the error names file:line, before training */
    char *bad = base_path_join(DIR_, "bad.jsonl");
    const char *t = "{\"prompt\": \"a\", \"answer\": \"1\"}\n{\"prompt\": \"b\", answer: 2}\n";
    test_write_file(bad, t, strlen(t));
    base_buf r = {0};
    base_buf_printf(&r,
                    "return { model = '%s/model', output_dir = '%s/runs', name = 'bad', report = false,\n"
                    "  datasets = { d = '%s' }, rewards = { 'boxed_math' },\n"
                    "  stages = { { type = 'grpo', dataset = 'd', num_generations = 2, generation_batch_size = 2,\n"
                    "               max_steps = 1, max_completion_length = 4 } } }",
                    DIR_, DIR_, bad);
    recipe *rc;
    assert_int_equal(recipe_load_string(r.data, "bad.lua", NULL, 0, &rc), BASE_OK);
    run_opts o = {.overwrite = 1, .quiet = 1};
    assert_int_not_equal(run_recipe(rc, &o), BASE_OK);
    assert_non_null(strstr(base_err_msg(), "bad.jsonl:2"));
    recipe_free(rc);
    /* a row lacking a column a reward needs */
    t = "{\"prompt\": \"a\", \"answer\": \"1\"}\n{\"prompt\": \"b\"}\n";
    test_write_file(bad, t, strlen(t));
    assert_int_equal(recipe_load_string(r.data, "bad.lua", NULL, 0, &rc), BASE_OK);
    assert_int_not_equal(run_recipe(rc, &o), BASE_OK);
    assert_non_null(strstr(base_err_msg(), "bad.jsonl:2"));
    assert_non_null(strstr(base_err_msg(), "answer"));
    recipe_free(rc);
    /* pre-flight: the second stage's dataset lacks a column its reward
     * needs: the run fails before the first stage runs anything */
    {
        char *good = base_path_join(DIR_, "data.jsonl");
        base_buf r2 = {0};
        base_buf_printf(&r2,
                        "return { model = '%s/model', output_dir = '%s/runs', name = 'pre', report = false,\n"
                        "  template = 'Q: {prompt}\\nA: ', rewards = { 'boxed_math' },\n"
                        "  datasets = { good = '%s', bad = '%s' },\n"
                        "  stages = { { type = 'eval', dataset = 'good', num_generations = 1, limit = 2,\n"
                        "               max_completion_length = 4 },\n"
                        "             { type = 'grpo', dataset = 'bad', num_generations = 2,\n"
                        "               generation_batch_size = 2, max_steps = 1, max_completion_length = 4 } } }",
                        DIR_, DIR_, good, bad);
        recipe *rp;
        assert_int_equal(recipe_load_string(r2.data, "pre.lua", NULL, 0, &rp), BASE_OK);
        run_opts po = {.overwrite = 1, .quiet = 1};
        assert_int_not_equal(run_recipe(rp, &po), BASE_OK);
        assert_non_null(strstr(base_err_msg(), "stage 'grpo'"));
        assert_non_null(strstr(base_err_msg(), "bad.jsonl:2"));
        base_buf m = {0};
        base_buf_printf(&m, "%s/runs/pre/metrics.jsonl", DIR_);
        assert_false(base_file_exists(m.data)); /* nothing ran */
        recipe_free(rp);
        /* GRPO options that do not go together: the recipe does not load */
        char dpath[600];
        snprintf(dpath, sizeof dpath, "datasets.bad=%s", good); /* the dataset is fine now */
        const char *bad_opts[] = {dpath, "stages.grpo.loss_type=vespo",
                                  "stages.grpo.importance_sampling_correction=true"};
        assert_int_not_equal(recipe_load_string(r2.data, "pre.lua", bad_opts, 3, &rp), BASE_OK);
        assert_non_null(strstr(base_err_msg(), "pre.lua: stages[2].importance_sampling_mode"));
        assert_non_null(strstr(base_err_msg(), "must be token_truncate or token_mask"));
        assert_false(base_file_exists(m.data));
        /* ... and a sample or sft stage's */
        base_buf r3 = {0};
        base_buf_printf(&r3,
                        "return { model = '%s/model', output_dir = '%s/runs', name = 'pre', report = false,\n"
                        "  template = 'Q: {prompt}\\nA: ', rewards = { 'boxed_math' }, datasets = { good = '%s' },\n"
                        "  stages = { { type = 'eval', dataset = 'good', num_generations = 1, limit = 2,\n"
                        "               max_completion_length = 4 },\n"
                        "             { type = 'sample', dataset = 'good', num_generations = 2, max_per_prompt = -1,\n"
                        "               max_completion_length = 4 },\n"
                        "             { type = 'sft', dataset = 'good', max_length = 1 } } }",
                        DIR_, DIR_, good);
        assert_int_not_equal(recipe_load_string(r3.data, "pre.lua", NULL, 0, &rp), BASE_OK);
        assert_non_null(strstr(base_err_msg(), "pre.lua: stages[2].max_per_prompt = -1: must be in [0, 1000000]"));
        const char *fix[] = {"stages.sample.max_per_prompt=1"};
        assert_int_not_equal(recipe_load_string(r3.data, "pre.lua", fix, 1, &rp), BASE_OK);
        assert_non_null(strstr(base_err_msg(), "pre.lua: stages[3].max_length = 1: must be in [2, 1048576]"));
        base_buf_free(&r3);
        base_buf_free(&m);
        base_buf_free(&r2);
        free(good);
    }
    /* generation_batch_size not a multiple of G */
    const char *sets[] = {"stages.grpo.generation_batch_size=3"};
    t = "{\"prompt\": \"a\", \"answer\": \"1\"}\n";
    test_write_file(bad, t, strlen(t));
    assert_int_not_equal(recipe_load_string(r.data, "bad.lua", sets, 1, &rc), BASE_OK);
    assert_non_null(strstr(base_err_msg(), "bad.lua: stages[1].generation_batch_size = 3: must be a multiple of "
                                           "num_generations (2)"));
    /* a run that cannot start (no such model) leaves an existing run
     * directory as it was, even with --overwrite */
    {
        char *text = recipe_text("straight");
        const char *bad_model[] = {"model=/nonexistent/model"};
        recipe *r2;
        assert_int_equal(recipe_load_string(text, "t.lua", bad_model, 1, &r2), BASE_OK);
        free(text);
        run_opts ov = {.overwrite = 1, .quiet = 1};
        assert_int_not_equal(run_recipe(r2, &ov), BASE_OK);
        assert_non_null(strstr(base_err_msg(), "/nonexistent/model"));
        recipe_free(r2);
        char *m = run_file("straight", "metrics.jsonl");
        assert_true(strlen(m) > 0);
        free(m);
    }
    /* an existing run directory without --resume or --overwrite (the
     * failed runs above stopped before making it) */
    {
        base_buf d = {0};
        base_buf_printf(&d, "%s/runs/bad", DIR_);
        assert_false(base_file_exists(d.data));
        assert_int_equal(base_mkdir_p(d.data), BASE_OK);
        base_buf_printf(&d, "/metrics.jsonl");
        test_write_file(d.data, "{}\n", 3);
        base_buf_free(&d);
    }
    o.overwrite = 0;
    assert_int_equal(recipe_load_string(r.data, "bad.lua", NULL, 0, &rc), BASE_OK);
    assert_int_not_equal(run_recipe(rc, &o), BASE_OK);
    assert_non_null(strstr(base_err_msg(), "--resume"));
    recipe_free(rc);
    base_buf_free(&r);
    free(bad);
}

/* logging_steps thins metrics.jsonl; sync_ref_model with alpha 1 every step
 * makes the reference the policy again, so the KL is 0 at every step, while
 * without it the KL grows after the first update. */
static void test_logging_and_ref_sync(void **state) {
    (void)state;
    const char *sets_a[] = {"stages.grpo.logging_steps=2", "stages.grpo.sync_ref_model=true",
                            "stages.grpo.ref_model_sync_steps=1", "stages.grpo.ref_model_mixup_alpha=1.0",
                            "name=sync", "stages.grpo.save_steps=0"};
    const char *sets_b[] = {"name=nosync", "stages.grpo.save_steps=0"};
    for (int run = 0; run < 2; run++) {
        run_sets(run ? "nosync" : "sync", run ? sets_b : sets_a, run ? 2 : 6);
        cJSON *g = grpo_metrics(run ? "nosync" : "sync"), *j;
        int grpo_lines = cJSON_GetArraySize(g);
        double kl_max = 0;
        cJSON_ArrayForEach(j, g) {
            double kl = base_json_num(j, "kl", -1, NULL);
            assert_true(kl >= 0);
            if (kl > kl_max) kl_max = kl;
        }
        cJSON_Delete(g);
        if (run == 0) {
            assert_int_equal(grpo_lines, 2); /* steps 2 and 4 of 4 */
            assert_true(kl_max == 0.0);
        } else {
            assert_int_equal(grpo_lines, 4);
            assert_true(kl_max > 0.0);
        }
    }
}

/* steps_per_generation splits each generation batch into that many
 * optimizer steps (shuffled), with old log-probs from before the first:
 * 2 GRPO steps x 2 = 4 applied AdamW updates. */
static void test_steps_per_generation(void **state) {
    (void)state;
    const char *sets[] = {"name=spg", "stages.grpo.steps_per_generation=2", "stages.grpo.max_steps=2",
                          "stages.grpo.save_steps=0"};
    run_sets("spg", sets, 4);
    char *st = run_file("spg", "checkpoints/step-2/trainer_state.json");
    cJSON *j = cJSON_Parse(st);
    assert_int_equal(base_json_int(j, "optim_step", -1, NULL), 4);
    cJSON_Delete(j);
    free(st);
}

/* TRL's loss options reach the loss from the recipe: each one changes the
 * trained weights against the same run without it, and the metrics line
 * carries the loss type's own metrics (clip ratios for the clip family,
 * cispo_clip_ratio, vespo/phi_seq_mean) and no others. Two GRPO steps of
 * two optimizer steps each (so old logprobs exist). */
static char *run_weights(const char *name, const char *opt, size_t *len) {
    char nm[64];
    snprintf(nm, sizeof nm, "name=%s", name);
    const char *sets[6] = {"stages.grpo.steps_per_generation=2", "stages.grpo.max_steps=2",
                           "stages.grpo.save_steps=0", "stages.grpo.epsilon_high=0.28", nm, opt};
    run_sets(name, sets, opt ? 6 : 5);
    return read_weights(name, 2, len);
}

static void test_loss_options(void **state) {
    (void)state;
    static const struct {
        const char *name, *opt, *metric; /* metric: the one it must log (clip family: clip_ratio/low) */
    } v[] = {
        {"o_base", NULL, "clip_ratio/low"},
        {"o_cispo", "stages.grpo.loss_type=cispo", "cispo_clip_ratio"},
        {"o_sapo", "stages.grpo.loss_type=sapo", NULL},
        {"o_luspo", "stages.grpo.loss_type=luspo", "clip_ratio/low"},
        {"o_vespo", "stages.grpo.loss_type=vespo", "vespo/phi_seq_mean"},
        {"o_tq", "stages.grpo.top_entropy_quantile=0.5", "clip_ratio/low"},
        {"o_opsm", "stages.grpo.off_policy_mask_threshold=-0.001", "clip_ratio/low"},
        {"o_bias", "stages.grpo.use_bias_correction_kl=true", "clip_ratio/low"},
        {"o_gdpo", "stages.grpo.multi_objective_aggregation=normalize_then_sum", "clip_ratio/low"},
    };
    const char *per_type[] = {"clip_ratio/low", "cispo_clip_ratio", "vespo/phi_seq_mean"};
    char *base = NULL;
    size_t n_w = 0;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        size_t len;
        char *w = run_weights(v[i].name, v[i].opt, &len);
        if (!base) base = w, n_w = len;
        else {
            assert_int_equal(len, n_w);
            if (!memcmp(w, base, len)) fail_msg("%s: %s left the weights unchanged", v[i].name, v[i].opt);
            free(w);
        }
        cJSON *g = grpo_metrics(v[i].name), *j;
        assert_int_equal(cJSON_GetArraySize(g), 2);
        cJSON_ArrayForEach(j, g) {
            for (size_t k = 0; k < 3; k++) {
                int want = v[i].metric && !strcmp(v[i].metric, per_type[k]);
                const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, per_type[k]);
                if (want != cJSON_IsNumber(x))
                    fail_msg("%s: metric %s %s", v[i].name, per_type[k], want ? "missing" : "logged");
            }
        }
        cJSON_Delete(g);
    }
    free(base);
}

/* shuffle_dataset: the prompts of the first steps in file order when false,
 * in a seeded permutation (not file order) by default. */
static void test_shuffle_dataset(void **state) {
    (void)state;
    for (int shuffle = 0; shuffle < 2; shuffle++) {
        const char *name = shuffle ? "shuf1" : "shuf0";
        char nm[32];
        snprintf(nm, sizeof nm, "name=%s", name);
        const char *sets[] = {nm, "stages.grpo.max_steps=2", "stages.grpo.save_steps=0",
                              "stages.grpo.log_completions_steps=1",
                              shuffle ? "stages.grpo.shuffle_dataset=true" : "stages.grpo.shuffle_dataset=false"};
        run_sets(name, sets, 5);
        /* samples.jsonl: 2 steps x 8 completions, G = 4: prompts of rows 0..3 */
        char *m = run_file(name, "samples.jsonl"), *save = NULL;
        int k = 0, in_order = 1;
        for (char *line = strtok_r(m, "\n", &save); line; line = strtok_r(NULL, "\n", &save), k++) {
            cJSON *j = cJSON_Parse(line);
            char want[64];
            int row = k / 4;
            snprintf(want, sizeof want, "What is %d + %d?", row, 7 * row % 13);
            in_order &= strstr(base_json_str(j, "prompt", ""), want) != NULL;
            cJSON_Delete(j);
        }
        assert_int_equal(k, 16);
        assert_int_equal(in_order, !shuffle);
        free(m);
    }
}

/* Decode a JSON array of at most 256 token ids (the last left out with
 * drop_last); *n_out: the array's length. */
static char *decode_ids(const tok_tokenizer *tk, const cJSON *arr, int drop_last, int flags, int *n_out) {
    int32_t ids[256];
    int n = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, arr) {
        assert_true(cJSON_IsNumber(x) && n < 256);
        ids[n++] = (int32_t)x->valuedouble;
    }
    *n_out = n;
    if (drop_last && n > 0) n--;
    return tok_decode_str(tk, ids, n, flags, NULL);
}

/* log_completion_ids: every samples.jsonl line carries the token ids the
 * step trained on; they decode to the logged prompt (the template after the
 * tokenizer's special tokens) and completion (a stop token, when the
 * completion stopped on one, last in completion_ids and not in the text),
 * and a completion has at most max_completion_length ids. Off by default. */
static void test_completion_ids(void **state) {
    (void)state;
    char *mdir = base_path_join(DIR_, "model");
    tok_tokenizer *tk = NULL;
    if (tok_load(mdir, &tk)) fail_msg("%s", base_err_msg());
    free(mdir);
    for (int on = 0; on < 2; on++) {
        const char *name = on ? "ids1" : "ids0";
        char nm[32];
        snprintf(nm, sizeof nm, "name=%s", name);
        const char *sets[] = {nm, "stages.grpo.max_steps=2", "stages.grpo.save_steps=0",
                              "stages.grpo.log_completions_steps=1", "stages.grpo.log_completion_ids=true"};
        run_sets(name, sets, on ? 5 : 4);
        char *m = run_file(name, "samples.jsonl"), *save = NULL;
        int k = 0;
        for (char *line = strtok_r(m, "\n", &save); line; line = strtok_r(NULL, "\n", &save), k++) {
            cJSON *j = cJSON_Parse(line);
            const cJSON *pi = cJSON_GetObjectItemCaseSensitive(j, "prompt_ids");
            const cJSON *ci = cJSON_GetObjectItemCaseSensitive(j, "completion_ids");
            if (!on) {
                assert_null(pi);
                assert_null(ci);
                cJSON_Delete(j);
                continue;
            }
            assert_true(cJSON_IsArray(pi) && cJSON_IsArray(ci));
            int np, nc;
            char *p = decode_ids(tk, pi, 0, TOK_DEC_SKIP_SPECIAL, &np);
            assert_string_equal(p, base_json_str(j, "prompt", ""));
            int stopped = !strcmp(base_json_str(j, "finish_reason", ""), "stop");
            char *c = decode_ids(tk, ci, stopped, 0, &nc);
            assert_string_equal(c, base_json_str(j, "completion", ""));
            assert_true(nc >= 1 && nc <= 10);
            assert_true(np > 0);
            free(p), free(c);
            cJSON_Delete(j);
        }
        assert_int_equal(k, 16);
        free(m);
    }
    tok_free(tk);
}

/* The sampler/trainer importance-sampling correction from the recipe: on the
 * CPU the rollout engine's log-probs agree with the training forward's
 * (ratios ~1, the logged difference tiny); bounds that exclude 1 mask every
 * sequence (ratio 0: the policy term is gone and the weights differ). */
static void test_is_correction(void **state) {
    (void)state;
    const char *on[] = {"name=isc", "stages.grpo.max_steps=2", "stages.grpo.save_steps=0",
                        "stages.grpo.importance_sampling_correction=true"};
    const char *masked[] = {"name=isc0", "stages.grpo.max_steps=2", "stages.grpo.save_steps=0",
                            "stages.grpo.importance_sampling_correction=true",
                            "stages.grpo.importance_sampling_clip_max=0.5"};
    char *w[2];
    size_t n[2];
    for (int run = 0; run < 2; run++) {
        const char *name = run ? "isc0" : "isc";
        run_sets(name, run ? masked : on, run ? 5 : 4);
        cJSON *g = grpo_metrics(name), *j;
        assert_int_equal(cJSON_GetArraySize(g), 2);
        cJSON_ArrayForEach(j, g) {
            double dmax = base_json_num(j, "sampling/sampling_logp_difference/max", -1, NULL);
            double rmean = base_json_num(j, "sampling/importance_sampling_ratio/mean", -1, NULL);
            double rmax = base_json_num(j, "sampling/importance_sampling_ratio/max", -1, NULL);
            assert_true(dmax >= 0 && dmax < 1e-4);
            if (run == 0) assert_true(fabs(rmean - 1.0) < 1e-3);
            else assert_true(rmax == 0.0);
        }
        cJSON_Delete(g);
        w[run] = read_weights(name, 2, &n[run]);
    }
    assert_int_equal(n[0], n[1]);
    assert_true(memcmp(w[0], w[1], n[0]) != 0);
    free(w[0]), free(w[1]);
}

/* A score_group reward sees the num_generations completions of one prompt
 * together: its score is the group's size and the prompt shared by all. */
static void test_group_reward(void **state) {
    (void)state;
    const char *lua = "return {score_group = function(ss)\n"
                      "  local out = {}\n"
                      "  for i = 1, #ss do out[i] = ss[i].prompt == ss[1].prompt and #ss or -1 end\n"
                      "  return out end}\n";
    char *rw = base_path_join(DIR_, "gsize.lua");
    test_write_file(rw, lua, strlen(lua));
    base_buf b = {0};
    base_buf_printf(&b,
                    "return { name = 'grp', model = '%s/model', output_dir = '%s/runs', seed = 3,\n"
                    "  template = 'Q: {prompt}\\nA: ', report = false, datasets = { train = '%s/data.jsonl' },\n"
                    "  rewards = { '%s:1.0' },\n"
                    "  stages = { { type = 'grpo', dataset = 'train', num_generations = 4, generation_batch_size = 12,\n"
                    "               max_steps = 1, max_completion_length = 6, log_completions_steps = 1 } } }\n",
                    DIR_, DIR_, DIR_, rw);
    run_text(b.data, NULL, 0);
    char *m = run_file("grp", "samples.jsonl");
    int n = 0;
    char *save = NULL;
    for (char *line = strtok_r(m, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);
        assert_true(base_json_num(cJSON_GetObjectItemCaseSensitive(j, "rewards"), "gsize", -2, NULL) == 4);
        cJSON_Delete(j);
        n++;
    }
    assert_int_equal(n, 12);
    free(m), free(rw);
    base_buf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_straight_run),
        cmocka_unit_test(test_resume_bit_exact),
        cmocka_unit_test(test_kill_during_checkpoint),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_logging_and_ref_sync),
        cmocka_unit_test(test_steps_per_generation),
        cmocka_unit_test(test_loss_options),
        cmocka_unit_test(test_group_reward),
        cmocka_unit_test(test_is_correction),
        cmocka_unit_test(test_shuffle_dataset),
        cmocka_unit_test(test_completion_ids),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
