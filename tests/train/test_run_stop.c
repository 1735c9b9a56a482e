/* Tests of stops, resumes and paths (issue 13, part 4), on the hf-tiny-v3-a
 * weights with a byte-level tokenizer and a recipe that names everything by
 * relative paths (proj/recipes/r.lua: ../model, ../data.jsonl, ../runs):
 *   - SIGINT to a running `grpo run` (save_steps 0, so no checkpoint was
 *     due): it finishes the step, writes a checkpoint, exits 130 with
 *     "interrupted at step N ...; --resume continues"; --resume (from
 *     another directory) ends bit-identical to an uninterrupted run;
 *   - SIGTERM twice: the second exits at once (143) in the middle of the
 *     checkpoint write; the half-written checkpoint is never used;
 *   - SIGINT inside an eval or sample stage: it stops after the current
 *     chunk and keeps nothing of the stage;
 *   - --resume with a changed recipe: changes that alter the trained result
 *     are refused and named, key by key, unless --allow-changes; others
 *     (save_steps, logging) pass; each earlier config is kept in
 *     config.history/;
 *   - config.resolved.lua holds absolute paths: it runs as it is, copied
 *     elsewhere or in its run directory, from any directory; a missing file
 *     is named by the path tried. */
#include "common/test_common.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "recipe/recipe.h"
#include "train/run.h"

static char *DIR_;  /* temp: proj/{model, data.jsonl, big.jsonl, vary.lua, recipes/, runs/}, elsewhere/ */
static char *PROJ;  /* DIR_/proj */
static char *RECIPE; /* PROJ/recipes/r.lua */

#define STEPS 12 /* GRPO steps of the test recipe */

static char *path_of(const char *rel) {
    base_buf b = {0};
    base_buf_printf(&b, "%s/%s", DIR_, rel);
    return b.data;
}

/* (not inlined: GCC 12 then takes pointers into the text for pointers to
 * the local that received it, -Wdangling-pointer) */
__attribute__((noinline)) static char *read_rel(const char *rel) {
    char *p = path_of(rel), *t = NULL;
    size_t n;
    if (base_read_file(p, &t, &n)) fail_msg("%s", base_err_msg());
    free(p);
    return t;
}

static int exists_rel(const char *rel) {
    char *p = path_of(rel);
    int ok = base_file_exists(p);
    free(p);
    return ok;
}

static void write_rel(const char *rel, const char *text) { test_write_text(DIR_, rel, text); }

static int setup(void **state) {
    (void)state;
    DIR_ = test_tmpdir();
    PROJ = path_of("proj");
    RECIPE = path_of("proj/recipes/r.lua");
    char *r = path_of("proj/recipes"), *e = path_of("elsewhere");
    test_run_fixture(PROJ); /* proj/{model, data.jsonl, vary.lua} */
    if (base_mkdir_p(r) || base_mkdir_p(e)) fail_msg("%s", base_err_msg());
    base_buf b = {0};
    for (int i = 0; i < 6000; i++) /* an eval or sample stage of many chunks */
        base_buf_printf(&b, "{\"prompt\": \"%d + %d\", \"answer\": \"%d\"}\n", i, i % 7, i + i % 7);
    write_rel("proj/big.jsonl", b.data);
    base_buf_free(&b);
    /* every path relative to the recipe's directory */
    write_rel("proj/recipes/r.lua",
              "return {\n"
              "  model = '../model', output_dir = '../runs', seed = 7, template = 'Q: {prompt}\\nA: ',\n"
              "  report = false,\n"
              "  datasets = { train = '../data.jsonl', big = { path = '../big.jsonl' } },\n"
              "  rewards = { '../vary.lua:1.0', 'think_format:0.5' },\n"
              "  stages = {\n"
              "    { type = 'eval', name = 'eval_before', dataset = 'train', num_generations = 2, limit = 3,\n"
              "      max_completion_length = 8 },\n"
              "    { type = 'grpo', dataset = 'train', num_generations = 4, generation_batch_size = 8,\n"
              "      max_steps = 12, max_completion_length = 10, learning_rate = 3e-3, beta = 0.01,\n"
              "      save_total_limit = 0, per_device_train_batch_size = 4 },\n"
              "    { type = 'eval', name = 'eval_after', dataset = 'train', num_generations = 2, limit = 3,\n"
              "      max_completion_length = 8 },\n"
              "  },\n"
              "}\n");
    free(r), free(e);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_rmdir(DIR_);
    free(DIR_), free(PROJ), free(RECIPE);
    return 0;
}

/* The test recipe under `name` (an override), run in this process. */
static base_status run_in_process(const char *name, const char *const *extra, int n_extra, const run_opts *o) {
    const char *sets[16];
    char nm[96];
    snprintf(nm, sizeof nm, "name=%s", name);
    sets[0] = nm;
    for (int i = 0; i < n_extra; i++) sets[1 + i] = extra[i];
    recipe *rc;
    base_status s = recipe_load(RECIPE, sets, 1 + n_extra, &rc);
    if (s) return s;
    s = run_recipe(rc, o);
    recipe_free(rc);
    return s;
}

/* `grpo run ARGS...` in a child process, in directory cwd, with its stderr
 * in DIR_/NAME.err; the environment variable `env` (NAME=VALUE) set when
 * not NULL. Returns its pid. */
static pid_t spawn(const char *cwd, const char *err_name, const char *env, const char *const *args) {
    const char *exe = getenv("GRPO_EXE");
    if (!exe) exe = "./grpo";
    char *err = path_of(err_name);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGINT, SIG_DFL); /* what grpo finds when started from a terminal, even if the */
        signal(SIGTERM, SIG_DFL); /* tests run where these are ignored (a background job) */
        if (chdir(cwd) != 0) _exit(125);
        if (env) putenv((char *)env);
        if (!freopen(err, "w", stderr)) _exit(126);
        const char *argv[32] = {exe, "run"};
        int n = 2;
        for (; args[n - 2] && n < 31; n++) argv[n] = args[n - 2];
        argv[n] = NULL;
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    free(err);
    return pid;
}

/* Lines of rel holding needle (0 when rel does not exist). */
static int count_lines(const char *rel, const char *needle) {
    char *p = path_of(rel), *t = NULL;
    size_t n;
    int k = 0;
    if (base_file_exists(p) && !base_read_file(p, &t, &n))
        for (char *q = t; (q = strstr(q, needle)); q++) k++;
    free(t), free(p);
    return k;
}

/* Wait until rel has a line with needle (the child still running), then
 * send sig; fails after 60 s. */
static void signal_when(pid_t pid, const char *rel, const char *needle, int sig) {
    for (int i = 0; i < 12000; i++) {
        if (count_lines(rel, needle) > 0) {
            assert_int_equal(kill(pid, sig), 0);
            return;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) fail_msg("the run ended before %s had %s", rel, needle);
        usleep(5000);
    }
    fail_msg("%s never had %s", rel, needle);
}

static int wait_exit(pid_t pid) {
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st)) fail_msg("grpo run did not exit (killed by signal %d)", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return WEXITSTATUS(st);
}

/* metrics.jsonl without the wall-clock fields, one canonical string */
static char *metrics_canon(const char *name) {
    base_buf b = {0};
    base_buf_printf(&b, "%s/proj/runs/%s/metrics.jsonl", DIR_, name);
    char *m = test_metrics_canon(b.data);
    base_buf_free(&b);
    return m;
}

/* The same metrics and bit-identical final weights as the straight run. */
static void assert_same_as_straight(const char *name) {
    char *ma = metrics_canon("straight"), *mb = metrics_canon(name);
    assert_string_equal(ma, mb);
    free(ma), free(mb);
    char ra[128], rb[128];
    snprintf(ra, sizeof ra, "proj/runs/straight/checkpoints/step-%d/model.safetensors", STEPS);
    snprintf(rb, sizeof rb, "proj/runs/%s/checkpoints/step-%d/model.safetensors", name, STEPS);
    char *pa = path_of(ra), *pb = path_of(rb), *wa, *wb;
    size_t na, nb;
    if (base_read_file(pa, &wa, &na) || base_read_file(pb, &wb, &nb)) fail_msg("%s", base_err_msg());
    assert_int_equal(na, nb);
    assert_memory_equal(wa, wb, na);
    free(wa), free(wb), free(pa), free(pb);
}

static void test_straight(void **state) {
    (void)state;
    run_opts o = {.overwrite = 1, .quiet = 1};
    if (run_in_process("straight", NULL, 0, &o)) fail_msg("%s", base_err_msg());
    /* save_steps 0: the only checkpoint is the stage's last */
    assert_true(exists_rel("proj/runs/straight/checkpoints/step-12/trainer_state.json"));
    assert_false(exists_rel("proj/runs/straight/checkpoints/step-1"));
}

/* SIGINT mid-stage: the step finishes, a checkpoint, exit 130, the message;
 * --resume continues to the same weights. */
static void test_sigint_checkpoint_and_resume(void **state) {
    (void)state;
    const char *args[] = {RECIPE, "--set", "name=sigint", "--overwrite", "--quiet", NULL};
    pid_t pid = spawn(DIR_, "sigint.err", NULL, args);
    signal_when(pid, "proj/runs/sigint/metrics.jsonl", "\"stage\":\"grpo\"", SIGINT);
    assert_int_equal(wait_exit(pid), 130);
    char *err = read_rel("sigint.err");
    const char *m = strstr(err, "interrupted at step ");
    if (!m) fail_msg("no 'interrupted at step' in:\n%s", err);
    int step = atoi(m + strlen("interrupted at step "));
    if (step < 1 || step >= STEPS) fail_msg("stopped at step %d:\n%s", step, err);
    char want[512];
    snprintf(want, sizeof want, "by SIGINT: checkpoint %s/runs/sigint/checkpoints/step-%d; --resume continues", PROJ,
             step);
    if (!strstr(err, want)) fail_msg("'%s' lacks '%s'", err, want);
    free(err);
    char rel[128];
    snprintf(rel, sizeof rel, "proj/runs/sigint/checkpoints/step-%d/trainer_state.json", step);
    assert_true(exists_rel(rel));
    /* the checkpoint was written at the end of the step that was running:
     * metrics.jsonl has exactly its steps, and eval_after never started */
    assert_int_equal(count_lines("proj/runs/sigint/metrics.jsonl", "\"stage\":\"grpo\""), step);
    assert_int_equal(count_lines("proj/runs/sigint/metrics.jsonl", "eval_after"), 0);
    /* resume from another directory: the recipe's paths do not depend on it */
    char *elsewhere = path_of("elsewhere");
    const char *res[] = {RECIPE, "--set", "name=sigint", "--resume", "--quiet", NULL};
    pid = spawn(elsewhere, "sigint-resume.err", NULL, res);
    int rc = wait_exit(pid);
    if (rc != 0) fail_msg("--resume exited %d:\n%s", rc, read_rel("sigint-resume.err"));
    free(elsewhere);
    assert_same_as_straight("sigint");
}

/* SIGTERM twice: the second, during the checkpoint write the first asked
 * for, exits at once with 143; the partial checkpoint is never read. */
static void test_second_signal_exits_at_once(void **state) {
    (void)state;
    const char *args[] = {RECIPE, "--set", "name=twice", "--overwrite", "--quiet", NULL};
    /* each checkpoint write now takes 30 s between its first and last file */
    pid_t pid = spawn(DIR_, "twice.err", "GRPO_TEST_CKPT_DELAY_MS=30000", args);
    signal_when(pid, "proj/runs/twice/metrics.jsonl", "\"stage\":\"grpo\"", SIGTERM);
    char *ckdir = path_of("proj/runs/twice/checkpoints");
    int found = 0;
    for (int i = 0; i < 12000 && !found; i++) { /* the write has begun: .tmp-step-N/model.safetensors */
        base_buf b = {0};
        for (int k = 1; k <= STEPS && !found; k++) {
            base_buf_reset(&b);
            base_buf_printf(&b, "%s/.tmp-step-%d/model.safetensors", ckdir, k);
            found = base_file_exists(b.data);
        }
        base_buf_free(&b);
        if (!found) usleep(5000);
    }
    assert_true(found);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(kill(pid, SIGTERM), 0);
    assert_int_equal(wait_exit(pid), 143);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double waited = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (waited > 15) fail_msg("the second SIGTERM took %.1f s to end the run", waited); /* not the 30 s write */
    char *err = read_rel("twice.err");
    assert_non_null(strstr(err, "second stop signal: exiting now"));
    free(err);
    /* no complete checkpoint: --resume starts again and still ends identical */
    const char *res[] = {RECIPE, "--set", "name=twice", "--resume", "--quiet", NULL};
    pid = spawn(DIR_, "twice-resume.err", NULL, res);
    int rc = wait_exit(pid);
    if (rc != 0) fail_msg("--resume exited %d:\n%s", rc, read_rel("twice-resume.err"));
    free(ckdir);
    assert_same_as_straight("twice");
}

/* SIGINT inside an eval stage and inside a sample stage: each stops after
 * its current chunk of prompts and keeps nothing of the stage. */
static void test_sigint_in_eval_and_sample(void **state) {
    (void)state;
    const char *stage[2] = {"eval", "sample"};
    for (int t = 0; t < 2; t++) {
        char name[32], type[96], err_name[64], rel[128];
        snprintf(name, sizeof name, "name=big_%s", stage[t]);
        snprintf(type, sizeof type, "stages.eval_before.type=%s", stage[t]);
        snprintf(err_name, sizeof err_name, "big_%s.err", stage[t]);
        const char *args[] = {RECIPE,   "--set", name, "--set", type, "--set", "stages.eval_before.dataset=big",
                              "--set", "stages.eval_before.limit=0", "--set", "stages.eval_before.num_generations=1",
                              "--set", "stages.eval_before.max_completion_length=2", "--overwrite", NULL};
        pid_t pid = spawn(DIR_, err_name, NULL, args);
        /* the stage's progress line names the prompts done: the first chunk is in */
        snprintf(rel, sizeof rel, "big_%s.err", stage[t]);
        signal_when(pid, rel, "256/6000", SIGINT);
        assert_int_equal(wait_exit(pid), 130);
        char *err = read_rel(rel);
        if (!strstr(err, "interrupted at step 0 by SIGINT, before the run's first checkpoint: --resume starts the "
                         "run again (stage 'eval_before': stopped after ") ||
            !strstr(err, "of 6000 prompts; eval and sample stages keep no partial results"))
            fail_msg("message:\n%s", err);
        free(err);
        snprintf(rel, sizeof rel, "proj/runs/big_%s/summary.json", stage[t]);
        assert_false(exists_rel(rel)); /* no result of the stage */
        snprintf(rel, sizeof rel, "proj/runs/big_%s/eval_before.jsonl", stage[t]);
        assert_false(exists_rel(rel)); /* the sample stage's output was never written */
        snprintf(rel, sizeof rel, "proj/runs/big_%s/eval_before.samples.jsonl", stage[t]);
        assert_false(exists_rel(rel)); /* nor the samples the eval had written */
        snprintf(rel, sizeof rel, "proj/runs/big_%s/metrics.jsonl", stage[t]);
        assert_int_equal(count_lines(rel, "eval_before"), 0);
    }
}

/* --resume with a changed recipe. */
static void test_resume_changes(void **state) {
    (void)state;
    run_opts o = {.overwrite = 1, .quiet = 1, .max_total_steps = 2};
    if (run_in_process("chg", NULL, 0, &o)) fail_msg("%s", base_err_msg());
    char *cfg0 = read_rel("proj/runs/chg/config.resolved.lua"), *m0 = read_rel("proj/runs/chg/metrics.jsonl");
    /* the example: lr 0.1 and num_generations 4 -> 2: refused,
     * both named with their values, nothing touched */
    const char *bad[] = {"stages.grpo.learning_rate=0.1", "stages.grpo.num_generations=2"};
    run_opts r = {.resume = 1, .quiet = 1};
    base_status s = run_in_process("chg", bad, 2, &r);
    assert_int_equal(s, BASE_ERR_INVALID);
    const char *want = "--resume: the recipe changes 2 keys of ";
    if (!strstr(base_err_msg(), want) ||
        !strstr(base_err_msg(), "config.resolved.lua that alter the trained result: stages[2].num_generations 4 -> "
                                "2, stages[2].learning_rate 0.003 -> 0.1; resume with --allow-changes to accept "
                                "them, undo them, or start again with --overwrite"))
        fail_msg("message: %s", base_err_msg());
    char *cfg1 = read_rel("proj/runs/chg/config.resolved.lua"), *m1 = read_rel("proj/runs/chg/metrics.jsonl");
    assert_string_equal(cfg0, cfg1);
    assert_string_equal(m0, m1);
    assert_false(exists_rel("proj/runs/chg/config.history"));
    free(cfg1), free(m1);
    /* a dataset's file, a reward, the seed: the same */
    const char *bad2[] = {"datasets.train.path=../big.jsonl"};
    assert_int_equal(run_in_process("chg", bad2, 1, &r), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "datasets.train.path"));
    const char *bad3[] = {"seed=8"};
    assert_int_equal(run_in_process("chg", bad3, 1, &r), BASE_ERR_INVALID);
    if (!strstr(base_err_msg(), "1 key of ")) fail_msg("message: %s", base_err_msg());
    assert_non_null(strstr(base_err_msg(), "that alters the trained result: seed 7 -> 8"));
    /* what does not alter the result passes: checkpoint cadence, logging,
     * threads, the report; the earlier config goes to config.history/ */
    const char *fine[] = {"stages.grpo.save_steps=1", "stages.grpo.logging_steps=2", "threads=1", "report=false"};
    r.max_total_steps = 3;
    if (run_in_process("chg", fine, 4, &r)) fail_msg("%s", base_err_msg());
    char *h1 = read_rel("proj/runs/chg/config.history/config.resolved.1.lua");
    assert_non_null(strstr(h1, "-- replaced on "));
    assert_non_null(strstr(h1, "by the config of a --resume from checkpoints/step-2\n"));
    assert_string_equal(strchr(h1, '\n') + 1, cfg0); /* the first config, as it was */
    char *cfg2 = read_rel("proj/runs/chg/config.resolved.lua");
    assert_non_null(strstr(cfg2, "save_steps = 1,"));
    /* --allow-changes: accepted, and the config it replaces is kept too */
    r.allow_changes = 1;
    r.max_total_steps = 4;
    const char *lr[] = {"stages.grpo.save_steps=1", "stages.grpo.logging_steps=2", "threads=1", "report=false",
                        "stages.grpo.learning_rate=0.001"};
    if (run_in_process("chg", lr, 5, &r)) fail_msg("%s", base_err_msg());
    char *h2 = read_rel("proj/runs/chg/config.history/config.resolved.2.lua");
    assert_string_equal(strchr(h2, '\n') + 1, cfg2);
    assert_true(exists_rel("proj/runs/chg/checkpoints/step-4/trainer_state.json"));
    /* the command line prints the changes key by key */
    char *out = NULL;
    base_buf cmd = {0};
    base_buf_printf(&cmd, "run '%s' --set name=chg --resume --quiet --set stages.grpo.learning_rate=0.5", RECIPE);
    assert_int_equal(test_run_grpo(cmd.data, &out), 1);
    if (!strstr(out, "\n  stages[2].learning_rate: 0.001 -> 0.5 (alters the trained result)") ||
        !strstr(out, "\n  stages[2].save_steps: 1 -> 0\n") || !strstr(out, "--allow-changes"))
        fail_msg("output:\n%s", out);
    free(out);
    base_buf_free(&cmd);
    /* a stop signal while the run loads: nothing of the run directory is
     * touched (no history, no new config), the checkpoint is named */
    volatile sig_atomic_t flag = SIGTERM;
    run_opts st = {.resume = 1, .quiet = 1, .allow_changes = 1, .stop_signal = &flag};
    char *cfg3 = read_rel("proj/runs/chg/config.resolved.lua");
    assert_int_equal(run_in_process("chg", NULL, 0, &st), BASE_ERR_INTERRUPTED);
    char stop_msg[600];
    snprintf(stop_msg, sizeof stop_msg, "interrupted at step 4 by SIGTERM: checkpoint %s/runs/chg/checkpoints/step-4; --resume "
             "continues", PROJ);
    assert_string_equal(base_err_msg(), stop_msg);
    assert_false(exists_rel("proj/runs/chg/config.history/config.resolved.3.lua"));
    char *cfg4 = read_rel("proj/runs/chg/config.resolved.lua");
    assert_string_equal(cfg3, cfg4);
    run_opts fresh = {.overwrite = 1, .quiet = 1, .stop_signal = &flag};
    assert_int_equal(run_in_process("never", NULL, 0, &fresh), BASE_ERR_INTERRUPTED);
    assert_string_equal(base_err_msg(), "interrupted at step 0 by SIGTERM, before the run's first checkpoint: --resume "
                                        "starts the run again");
    assert_false(exists_rel("proj/runs/never"));
    free(cfg0), free(m0), free(h1), free(h2), free(cfg2), free(cfg3), free(cfg4);
}

/* config.resolved.lua runs as it is: in its run directory (--resume) and
 * copied elsewhere, from another directory; a missing file is named by
 * the absolute path tried. */
static void test_paths(void **state) {
    (void)state;
    char *cfg = read_rel("proj/runs/straight/config.resolved.lua"), want[600];
    snprintf(want, sizeof want, "model = \"%s/model\"", PROJ);
    if (!strstr(cfg, want)) fail_msg("config.resolved.lua lacks '%s':\n%s", want, cfg);
    snprintf(want, sizeof want, "path = \"%s/data.jsonl\"", PROJ);
    assert_non_null(strstr(cfg, want));
    snprintf(want, sizeof want, "output_dir = \"%s/runs\"", PROJ);
    assert_non_null(strstr(cfg, want));
    snprintf(want, sizeof want, "script = \"%s/vary.lua\"", PROJ);
    assert_non_null(strstr(cfg, want));
    assert_non_null(strstr(cfg, "script = \"think_format\"")); /* a built-in stays a name */
    /* copied into another directory, run from a third one */
    write_rel("elsewhere/copy.lua", cfg);
    char *elsewhere = path_of("elsewhere"), *copy = path_of("elsewhere/copy.lua");
    const char *args[] = {copy, "--set", "name=copied", "--set", "stages.grpo.max_steps=2", "--quiet", NULL};
    pid_t pid = spawn("/", "copied.err", NULL, args);
    int rc = wait_exit(pid);
    if (rc != 0) fail_msg("the copied config exited %d:\n%s", rc, read_rel("copied.err"));
    assert_true(exists_rel("proj/runs/copied/checkpoints/step-2/trainer_state.json"));
    /* the run directory's own config.resolved.lua, resumed as it is */
    char *own = path_of("proj/runs/straight/config.resolved.lua");
    const char *res[] = {own, "--resume", "--quiet", NULL};
    pid = spawn(elsewhere, "own.err", NULL, res);
    rc = wait_exit(pid);
    if (rc != 0) fail_msg("runs/straight/config.resolved.lua --resume exited %d:\n%s", rc, read_rel("own.err"));
    assert_true(exists_rel("proj/runs/straight/config.history/config.resolved.1.lua"));
    /* a missing dataset: the error names the absolute path tried */
    char *out = NULL;
    base_buf cmd = {0};
    base_buf_printf(&cmd, "run '%s' --set name=missing --set datasets.train.path=nope.jsonl --quiet", RECIPE);
    assert_int_equal(test_run_grpo(cmd.data, &out), 1);
    char *cwd = getcwd(NULL, 0); /* an override's relative path is the current directory's */
    snprintf(want, sizeof want, "%s/nope.jsonl: No such file or directory", cwd);
    if (!strstr(out, want)) fail_msg("'%s' lacks '%s'", out, want);
    free(out), free(cwd);
    base_buf_free(&cmd);
    free(cfg), free(elsewhere), free(copy), free(own);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_straight),
        cmocka_unit_test(test_sigint_checkpoint_and_resume),
        cmocka_unit_test(test_second_signal_exits_at_once),
        cmocka_unit_test(test_sigint_in_eval_and_sample),
        cmocka_unit_test(test_resume_changes),
        cmocka_unit_test(test_paths),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
