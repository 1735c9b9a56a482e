/* The helpers of the data-parallel tests (test_dp.c, test_zero.c): one
 * temporary directory with the tiny model, data, reward scripts and recipe
 * (setup), `mpirun -np N grpo run` of it, and comparisons of runs
 * (metrics, weights, samples, optimizer shards, memory plans). */
#include "dp_common.h"

#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "io/st.h"

char *DIR_;   /* temp: model/, data.jsonl, vary.lua, flaky.lua, r.lua, runs/ */
char *RECIPE; /* DIR_/r.lua */

char *path_of(const char *rel) {
    base_buf b = {0};
    base_buf_printf(&b, "%s/%s", DIR_, rel);
    return b.data;
}

__attribute__((noinline)) char *read_rel(const char *rel) {
    char *p = path_of(rel), *t = NULL;
    size_t n;
    if (base_read_file(p, &t, &n)) fail_msg("%s", base_err_msg());
    free(p);
    return t;
}

int exists_rel(const char *rel) {
    char *p = path_of(rel);
    int ok = base_file_exists(p);
    free(p);
    return ok;
}

void write_rel(const char *rel, const char *text) {
    char *p = path_of(rel);
    test_write_file(p, text, strlen(text));
    free(p);
}

int setup(void **state) {
    (void)state;
    DIR_ = test_tmpdir();
    RECIPE = path_of("r.lua");
    char *m = path_of("model");
    test_tiny_model(m, 1);
    free(m);
    base_buf b = {0};
    for (int i = 0; i < 40; i++)
        base_buf_printf(&b, "{\"prompt\": \"What is %d + %d?\", \"answer\": \"%d\", \"completion\": \"%d\"}\n", i,
                        7 * i % 13, i + 7 * i % 13, i + 7 * i % 13);
    write_rel("data.jsonl", b.data);
    /* a reward that varies within a group (the weights move); one that
     * fails on the prompts with a 3 in them (reward_errors.log) */
    write_rel("vary.lua",
              "return function(s) return (#s.completion % 5) / 4 + (s.completion:find('1') and 0.5 or 0) end\n");
    write_rel("flaky.lua", "return function(s) if s.prompt:find('3') then error('no threes') end return 0 end\n");
    base_buf_reset(&b);
    base_buf_printf(&b,
                    "return {\n"
                    "  name = 'dp', model = '%s/model', output_dir = '%s/runs', seed = 5, device = 'cpu',\n"
                    "  template = 'Q: {prompt}\\nA: ', report = false, threads = 1,\n"
                    "  datasets = { train = '%s/data.jsonl' },\n"
                    "  rewards = { '%s/vary.lua:1.0', '%s/flaky.lua:0.1' },\n"
                    "  stages = {\n"
                    "    { type = 'sample', name = 'rows', dataset = 'train', limit = 10, num_generations = 2,\n"
                    "      max_completion_length = 8 },\n"
                    "    { type = 'eval', name = 'eval_before', dataset = 'train', limit = 6, num_generations = 2,\n"
                    "      max_completion_length = 8 },\n"
                    "    { type = 'grpo', dataset = 'train', num_generations = 4, generation_batch_size = 16,\n"
                    "      max_steps = 3, max_completion_length = 10, learning_rate = 3e-3, beta = 0.01,\n"
                    "      save_steps = 1, per_device_train_batch_size = 2, log_completions_steps = 1 },\n"
                    "    { type = 'sft', dataset = 'train', max_steps = 3, per_device_train_batch_size = 2,\n"
                    "      learning_rate = 1e-3, save_steps = 1 },\n"
                    "  },\n"
                    "}\n",
                    DIR_, DIR_, DIR_, DIR_, DIR_);
    write_rel("r.lua", b.data);
    base_buf_free(&b);
    return 0;
}

int teardown(void **state) {
    (void)state;
    test_rmdir(DIR_);
    free(DIR_), free(RECIPE);
    return 0;
}

/* `mpirun -np NP grpo run RECIPE --quiet --set name=NAME ARGS...` with its
 * stderr in DIR_/NAME.err (appended), env (NAME=VALUE) set when not NULL;
 * returns the pid of mpirun. */
pid_t spawn(int np, const char *name, const char *env, const char *const *args) {
    const char *exe = getenv("GRPO_EXE"), *mpirun = getenv("MPIRUN");
    assert_non_null(exe);
    assert_non_null(mpirun);
    char errf[64], nps[16], set[96];
    snprintf(errf, sizeof errf, "%s.err", name);
    snprintf(nps, sizeof nps, "%d", np);
    snprintf(set, sizeof set, "name=%s", name);
    char *err = path_of(errf);
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        if (env) putenv((char *)env);
        if (!freopen(err, "a", stderr)) _exit(126);
        if (!freopen("/dev/null", "w", stdout)) _exit(126);
        const char *argv[40] = {mpirun, "--oversubscribe", "-np", nps, exe, "run", RECIPE, "--quiet", "--set", set};
        int n = 10;
        for (int i = 0; args && args[i] && n < 39; i++) argv[n++] = args[i];
        argv[n] = NULL;
        execv(mpirun, (char *const *)argv);
        _exit(127);
    }
    free(err);
    return pid;
}

/* The exit status of pid (mpirun), failing when a signal ended it. */
int wait_exit(pid_t pid) {
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st)) fail_msg("mpirun did not exit (signal %d)", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return WEXITSTATUS(st);
}

int run_np(int np, const char *name, const char *env, const char *const *args) {
    return wait_exit(spawn(np, name, env, args));
}

char *err_of(const char *name) {
    char rel[96];
    snprintf(rel, sizeof rel, "%s.err", name);
    return read_rel(rel);
}

void expect_ok(int rc, const char *name) {
    if (rc != 0) {
        char *e = err_of(name);
        fail_msg("run %s: exit %d:\n%s", name, rc, e);
    }
}

double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Wait (at most 60 s) until runs/NAME/metrics.jsonl has a line with needle
 * while mpirun (pid) runs. */
void wait_metrics(pid_t pid, const char *name, const char *needle) {
    char rel[128];
    snprintf(rel, sizeof rel, "runs/%s/metrics.jsonl", name);
    for (int i = 0; i < 12000; i++) {
        if (exists_rel(rel)) {
            char *t = read_rel(rel);
            int hit = strstr(t, needle) != NULL;
            free(t);
            if (hit) return;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) fail_msg("run %s ended before its metrics had %s", name, needle);
        usleep(5000);
    }
    fail_msg("run %s: metrics never had %s", name, needle);
}

/* Wait (at most 60 s) until rel exists while mpirun (pid) runs. */
void wait_exists(pid_t pid, const char *rel) {
    for (int i = 0; i < 12000; i++) {
        if (exists_rel(rel)) return;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) fail_msg("the run ended before %s existed", rel);
        usleep(5000);
    }
    fail_msg("%s never existed", rel);
}

/* The lines of rel that hold needle, concatenated. */
char *lines_with(const char *rel, const char *needle) {
    char *t = read_rel(rel), *save = NULL;
    base_buf b = {0};
    base_buf_printf(&b, "%s", "");
    for (char *l = strtok_r(t, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
        if (strstr(l, needle)) base_buf_printf(&b, "%s\n", l);
    free(t);
    return b.data;
}

void same_file(const char *a, const char *b) {
    char *x = read_rel(a), *y = read_rel(b);
    if (strcmp(x, y)) fail_msg("%s and %s differ", a, b);
    free(x), free(y);
}

void same_run_file(const char *a, const char *b, const char *rel) {
    char pa[200], pb[200];
    snprintf(pa, sizeof pa, "runs/%s/%s", a, rel);
    snprintf(pb, sizeof pb, "runs/%s/%s", b, rel);
    same_file(pa, pb);
}

int close_enough(double a, double b, double tol) { return fabs(a - b) <= tol * (fabs(b) > 1 ? fabs(b) : 1); }

/* metrics.jsonl of run a against run b: the same lines, each key of
 * `keys` within tol (0: the same double). */
void metrics_within(const char *a, const char *b, double tol) {
    const char *keys[] = {"loss", "grad_norm", "reward", "kl", "entropy"};
    char ra[128], rb[128];
    snprintf(ra, sizeof ra, "runs/%s/metrics.jsonl", a);
    snprintf(rb, sizeof rb, "runs/%s/metrics.jsonl", b);
    char *ta = read_rel(ra), *tb = read_rel(rb), *sa = NULL, *sb = NULL;
    char *la = strtok_r(ta, "\n", &sa), *lb = strtok_r(tb, "\n", &sb);
    int lines = 0, compared = 0;
    double worst = 0;
    for (; la && lb; la = strtok_r(NULL, "\n", &sa), lb = strtok_r(NULL, "\n", &sb), lines++) {
        cJSON *ja = cJSON_Parse(la), *jb = cJSON_Parse(lb);
        assert_non_null(ja);
        assert_non_null(jb);
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            const cJSON *x = cJSON_GetObjectItemCaseSensitive(ja, keys[k]);
            const cJSON *y = cJSON_GetObjectItemCaseSensitive(jb, keys[k]);
            if (!y) continue;
            if (!x || !cJSON_IsNumber(x) || !cJSON_IsNumber(y)) fail_msg("%s line %d: %s missing", ra, lines + 1, keys[k]);
            if (!close_enough(x->valuedouble, y->valuedouble, tol))
                fail_msg("%s line %d: %s = %.17g, %s has %.17g", ra, lines + 1, keys[k], x->valuedouble, rb,
                         y->valuedouble);
            double d = fabs(x->valuedouble - y->valuedouble) / (fabs(y->valuedouble) > 1 ? fabs(y->valuedouble) : 1);
            if (d > worst) worst = d;
            compared++;
        }
        cJSON_Delete(ja), cJSON_Delete(jb);
    }
    if (la || lb) fail_msg("%s and %s have different numbers of lines", ra, rb);
    printf("# %s vs %s: largest metric difference %.3g (relative)\n", ra, rb, worst);
    assert_true(lines >= 6); /* 3 GRPO + 3 SFT steps (and a line per eval / sample stage) */
    assert_true(compared >= 12);
    free(ta), free(tb);
}

void metrics_close(const char *a, const char *b) { metrics_within(a, b, TOL); }

/* The weights of two checkpoints (rel paths of model.safetensors): the same
 * tensors, max |a - b| <= TOL * max(1, |b|) element by element, and some
 * weight moved from the base model (the test trains). */
double weights_within(const char *a, const char *b, double tol) {
    char *pa = path_of(a), *pb = path_of(b), *p0 = path_of("model/model.safetensors");
    st_file *fa, *fb, *f0;
    if (st_open(pa, &fa) || st_open(pb, &fb) || st_open(p0, &f0)) fail_msg("%s", base_err_msg());
    assert_int_equal(st_count(fa), st_count(fb));
    double worst = 0;
    int moved = 0;
    for (int i = 0; i < st_count(fa); i++) {
        const st_tensor *x = st_at(fa, i), *y = st_find(fb, x->name), *z = st_find(f0, x->name);
        assert_non_null(y);
        assert_int_equal(x->nbytes, y->nbytes);
        int64_t n = st_numel(x);
        float *u = base_xmalloc((size_t)n * sizeof(float)), *v = base_xmalloc((size_t)n * sizeof(float));
        float *w = base_xmalloc((size_t)n * sizeof(float));
        if (st_file_load(fa, x->name, TENSOR_F32, u, n) || st_file_load(fb, x->name, TENSOR_F32, v, n))
            fail_msg("%s", base_err_msg());
        if (z && !st_file_load(f0, x->name, TENSOR_F32, w, n) && memcmp(u, w, (size_t)n * sizeof(float))) moved = 1;
        for (int64_t k = 0; k < n; k++) {
            double d = fabs((double)u[k] - v[k]) / (fabs(v[k]) > 1 ? fabs(v[k]) : 1);
            if (d > worst) worst = d;
        }
        free(u), free(v), free(w);
    }
    printf("# %s vs %s: largest weight difference %.3g (relative)\n", a, b, worst);
    if (worst > tol) fail_msg("%s vs %s: weights differ by %.3g (relative), above %g", a, b, worst, tol);
    assert_true(moved);
    st_close(fa), st_close(fb), st_close(f0);
    free(pa), free(pb), free(p0);
    return worst;
}

void weights_close(const char *a, const char *b) { weights_within(a, b, TOL); }

void same_bytes(const char *a, const char *b) {
    char *pa = path_of(a), *pb = path_of(b), *x = NULL, *y = NULL;
    size_t nx, ny;
    if (base_read_file(pa, &x, &nx) || base_read_file(pb, &y, &ny)) fail_msg("%s", base_err_msg());
    if (nx != ny || memcmp(x, y, nx)) fail_msg("%s and %s differ", a, b);
    free(x), free(y), free(pa), free(pb);
}

double largest_rel_diff(const char *a, const char *b, int ordered, int *experts) {
    char *pa = path_of(a), *pb = path_of(b);
    st_file *fa, *fb;
    if (st_open(pa, &fa) || st_open(pb, &fb)) fail_msg("%s", base_err_msg());
    assert_int_equal(st_count(fa), st_count(fb));
    double worst = 0;
    if (experts) *experts = 0;
    for (int i = 0; i < st_count(fa); i++) {
        const st_tensor *x = st_at(fa, i), *y = ordered ? st_at(fb, i) : st_find(fb, x->name);
        assert_non_null(y);
        if (strcmp(x->name, y->name)) fail_msg("%s: tensor %d is %s, %s has %s", a, i, x->name, b, y->name);
        int64_t n = st_numel(x);
        assert_int_equal(n, st_numel(y));
        assert_int_equal(x->nbytes, y->nbytes);
        if (experts) *experts += strstr(x->name, ".mlp.experts.") != NULL;
        float *u = base_xmalloc((size_t)n * sizeof(float)), *v = base_xmalloc((size_t)n * sizeof(float));
        if (st_file_load(fa, x->name, TENSOR_F32, u, n) || st_file_load(fb, x->name, TENSOR_F32, v, n))
            fail_msg("%s", base_err_msg());
        for (int64_t k = 0; k < n; k++) {
            double d = fabs((double)u[k] - v[k]) / (fabs(v[k]) > 1 ? fabs(v[k]) : 1);
            if (d > worst) worst = d;
        }
        free(u), free(v);
    }
    st_close(fa), st_close(fb);
    free(pa), free(pb);
    return worst;
}

void same_checkpoints(const char *a, const char *b) {
    const char *files[] = {"step-3/model.safetensors", "step-3/ref.safetensors", "step-3/optimizer.safetensors",
                           "step-6/model.safetensors", "step-6/optimizer.safetensors"};
    char x[200], y[200];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(x, sizeof x, "runs/%s/checkpoints/%s", a, files[i]);
        snprintf(y, sizeof y, "runs/%s/checkpoints/%s", b, files[i]);
        same_bytes(x, y);
    }
}

double step6_weights_within(const char *a, const char *b, double tol) {
    char x[200], y[200];
    snprintf(x, sizeof x, "runs/%s/checkpoints/step-6/model.safetensors", a);
    snprintf(y, sizeof y, "runs/%s/checkpoints/step-6/model.safetensors", b);
    return weights_within(x, y, tol);
}

char *recipe_sft_to(const char *out, const char *stages, int keep_sft) {
    char *r = read_rel("r.lua");
    const char *sft = "    { type = 'sft', dataset = 'train', max_steps = 3, per_device_train_batch_size = 2,\n"
                      "      learning_rate = 1e-3, save_steps = 1 },\n";
    char *at = strstr(r, sft);
    assert_non_null(at);
    *at = 0;
    base_buf b = {0};
    base_buf_printf(&b, "%s%s%s%s", r, keep_sft ? sft : "", stages, at + strlen(sft));
    write_rel(out, b.data);
    base_buf_free(&b);
    free(r);
    return path_of(out);
}

void same_before_update(const char *y, const char *rows_ref, const char *ref, const char *what) {
    char a[160], b[160];
    same_run_file(rows_ref, y, "rows.jsonl");
    same_run_file(rows_ref, y, "eval_before.samples.jsonl");
    snprintf(a, sizeof a, "runs/%s/samples.jsonl", y);
    snprintf(b, sizeof b, "runs/%s/samples.jsonl", ref);
    char *s0 = lines_with(b, "\"step\":1,"), *s1 = lines_with(a, "\"step\":1,");
    assert_true(strlen(s0) > 0);
    if (strcmp(s0, s1)) fail_msg("GRPO step-1 completions of %s differ from %s", y, what);
    free(s0), free(s1);
}

void same_step6(const char *a, const char *b, int np) {
    char x[160], y[160];
    snprintf(x, sizeof x, "runs/%s/checkpoints/step-6/model.safetensors", a);
    snprintf(y, sizeof y, "runs/%s/checkpoints/step-6/model.safetensors", b);
    same_bytes(x, y);
    for (int r = 0; r < np; r++) {
        snprintf(x, sizeof x, "runs/%s/checkpoints/step-6/optimizer-rank-%d-of-%d.safetensors", a, r, np);
        snprintf(y, sizeof y, "runs/%s/checkpoints/step-6/optimizer-rank-%d-of-%d.safetensors", b, r, np);
        same_bytes(x, y);
    }
}

void resume_within_zero0(const char *name, const char *ref, int np1, int z1, int np2, int z2, double tol) {
    char a[160], b[160];
    stop_resume(name, np1, z1, np2, z2);
    snprintf(a, sizeof a, "runs/%s/checkpoints/step-6/model.safetensors", ref);
    if (!exists_rel(a)) stop_resume(ref, np1, 0, np2, 0);
    snprintf(b, sizeof b, "runs/%s/checkpoints/step-6/model.safetensors", name);
    weights_within(b, a, tol);
    snprintf(a, sizeof a, "runs/%s/checkpoints/step-6", name);
    check_shards_at(a, np2, z2);
}

/* Files of the run's tb/ directory. */
int tb_files(const char *name) {
    char rel[96];
    snprintf(rel, sizeof rel, "runs/%s/tb", name);
    char *p = path_of(rel);
    DIR *d = opendir(p);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    free(p);
    return n;
}

/* ---- ZeRO stage 1 ---------------------------------------------------------- */

const char *const ZERO[4][5] = {
    {NULL},
    {"--set", "stages.grpo.zero_stage=1", "--set", "stages.sft.zero_stage=1", NULL},
    {"--set", "stages.grpo.zero_stage=2", "--set", "stages.sft.zero_stage=2", NULL},
    {"--set", "stages.grpo.zero_stage=3", "--set", "stages.sft.zero_stage=3", NULL}};

/* ARGS followed by the --set of ZeRO stage `zero` for both training
 * stages (none for 0; a NULL-terminated list of at most 12, ensure_run's
 * of at most 27). */
void with_zero(const char **out, const char *const *args, int zero) {
    int n = 0;
    for (int i = 0; args && args[i]; i++) out[n++] = args[i];
    for (int i = 0; ZERO[zero][i]; i++) out[n++] = ZERO[zero][i];
    out[n] = NULL;
}

/* Run NAME on np ranks (at ZeRO stage zero) unless it ran already in this
 * process (the world-size runs above, when run together). */
void ensure_run(int np, const char *name, const char *const *args, int zero) {
    char rel[128];
    snprintf(rel, sizeof rel, "runs/%s/checkpoints/step-6/model.safetensors", name);
    if (exists_rel(rel)) return;
    const char *a[32]; /* args (test_ep_dp's uneven runs: 26) and the ZeRO --sets */
    with_zero(a, args, zero);
    expect_ok(run_np(np, name, NULL, a), name);
}

/* Stop a run after 2 steps on np1 ranks at ZeRO z1, resume it on np2 at
 * ZeRO z2. */
void stop_resume(const char *name, int np1, int z1, int np2, int z2) {
    const char *stop2[] = {"--max-total-steps", "2", NULL}, *resume[] = {"--resume", NULL}, *a[16];
    with_zero(a, stop2, z1);
    expect_ok(run_np(np1, name, NULL, a), name);
    with_zero(a, resume, z2);
    expect_ok(run_np(np2, name, NULL, a), name);
}

/* The optimizer shards of checkpoint rel (a step-N dir) of a ZeRO-1 run on
 * w ranks: one file per rank, no optimizer.safetensors, each rank's m and
 * v the balanced range [n r / w, n (r + 1) / w) of the arena (8 bytes x
 * its elements, not 8 x n), the ranges tiling the arena. */
void check_shards_at(const char *rel, int w, int stage) {
    char p[256];
    snprintf(p, sizeof p, "%s/optimizer.safetensors", rel);
    assert_false(exists_rel(p));
    snprintf(p, sizeof p, "%s/trainer_state.json", rel);
    char *text = read_rel(p);
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    const cJSON *zs = cJSON_GetObjectItemCaseSensitive(j, "zero_stage");
    const cJSON *ns = cJSON_GetObjectItemCaseSensitive(j, "optimizer_shards");
    const cJSON *nn = cJSON_GetObjectItemCaseSensitive(j, "optimizer_numel");
    assert_true(cJSON_IsNumber(zs) && zs->valueint == stage);
    assert_true(cJSON_IsNumber(ns) && ns->valueint == w);
    assert_true(cJSON_IsNumber(nn));
    int64_t n = (int64_t)nn->valuedouble, next = 0;
    for (int r = 0; r < w; r++) {
        snprintf(p, sizeof p, "%s/optimizer-rank-%d-of-%d.safetensors", rel, r, w);
        char *fp = path_of(p);
        st_file *f;
        if (st_open(fp, &f)) fail_msg("%s", base_err_msg());
        const st_tensor *m = st_find(f, "m"), *v = st_find(f, "v");
        assert_non_null(m);
        assert_non_null(v);
        int64_t lo = n * r / w, hi = n * (r + 1) / w;
        assert_int_equal(lo, next);
        assert_int_equal(st_numel(m), hi - lo);
        assert_int_equal(m->nbytes + v->nbytes, 8 * (size_t)(hi - lo));
        assert_int_equal(st_numel(v), hi - lo);
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(st_metadata(f), "offset");
        assert_true(cJSON_IsString(off) && atoll(off->valuestring) == lo);
        next = hi;
        st_close(f);
        free(fp);
    }
    assert_int_equal(next, n);
    cJSON_Delete(j);
    free(text);
}

void check_shards(const char *rel, int w) { check_shards_at(rel, w, 1); }
/* ---- memory: plan against what each rank allocated ------------------------ */

/* The GRPO stage of run NAME on np ranks: summary.json's plan of every rank
 * (memory_plan_ranks, run_grpo_memory) against the peak of device bytes
 * that rank's CPU backend counted over the stage (memory_peak_allocated),
 * byte for byte; the plans' roles add up to their totals, rank 0's is
 * memory_plan, and at ZeRO 1 the optimizer state of the ranks tiles the
 * whole arena (m and v: 8 bytes per element of the gradient arena). At
 * ZeRO 2 and 3 a rank's gradients are its shard (4 bytes per element of
 * its m) plus the unit windows, the same on every rank and smaller than
 * the arena; the shards tile the arena (trainer_state.json's numel). At
 * ZeRO 3 the weights are the parameter shard and windows (the plan's
 * weights role, checked with the rest against the peak). */
const cJSON *grpo_summary(const char *name, int np, cJSON **doc, const cJSON **plans, const cJSON **peaks) {
    char rel[128];
    snprintf(rel, sizeof rel, "runs/%s/summary.json", name);
    char *text = read_rel(rel);
    *doc = cJSON_Parse(text);
    free(text);
    assert_non_null(*doc);
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(*doc, "grpo");
    *plans = cJSON_GetObjectItemCaseSensitive(g, "memory_plan_ranks");
    *peaks = cJSON_GetObjectItemCaseSensitive(g, "memory_peak_allocated");
    if (!cJSON_IsArray(*plans) || !cJSON_IsArray(*peaks)) fail_msg("%s: no per-rank memory plan and peak", name);
    assert_int_equal(cJSON_GetArraySize(*plans), np);
    assert_int_equal(cJSON_GetArraySize(*peaks), np);
    return g;
}

void plan_equals_peak(const char *name, int np, int zero) {
    char rel[128];
    cJSON *j;
    const cJSON *plans, *peaks, *g = grpo_summary(name, np, &j, &plans, &peaks);
    const char *roles[] = {"weights",     "adapter",         "grads",   "optimizer", "ref_weights",
                           "activations", "ref_activations", "rollout", "gather"};
    double opt_sum = 0, grads = -1, win = -1, grad_sum = 0;
    for (int r = 0; r < np; r++) {
        const cJSON *p = cJSON_GetArrayItem(plans, r);
        double sum = 0;
        for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(p, roles[i]);
            if (!cJSON_IsNumber(v)) fail_msg("%s rank %d: memory plan has no %s", name, r, roles[i]);
            sum += v->valuedouble;
        }
        double total = cJSON_GetObjectItemCaseSensitive(p, "total")->valuedouble;
        double peak = cJSON_GetArrayItem(peaks, r)->valuedouble;
        printf("# %s rank %d of %d (ZeRO %d): planned %.0f, peak allocated %.0f bytes\n", name, r, np, zero, total,
               peak);
        assert_true(sum == total);
        if (total != peak)
            fail_msg("%s rank %d of %d: planned %.0f bytes, allocated at most %.0f", name, r, np, total, peak);
        opt_sum += cJSON_GetObjectItemCaseSensitive(p, "optimizer")->valuedouble;
        double gr = cJSON_GetObjectItemCaseSensitive(p, "grads")->valuedouble;
        double op = cJSON_GetObjectItemCaseSensitive(p, "optimizer")->valuedouble;
        grad_sum += gr;
        if (zero >= 2) { /* shard + windows; the windows replicated */
            double w = gr - op / 2;
            if (win >= 0) assert_true(w == win);
            win = w;
            assert_true(w > 0);
        } else {
            if (grads >= 0) assert_true(gr == grads); /* replicated */
            grads = gr;
        }
        if (r == 0) {
            const cJSON *p0 = cJSON_GetObjectItemCaseSensitive(g, "memory_plan");
            assert_true(cJSON_IsObject(p0));
            assert_true(cJSON_GetObjectItemCaseSensitive(p0, "total")->valuedouble == total);
        }
    }
    if (zero >= 2) {
        snprintf(rel, sizeof rel, "runs/%s/checkpoints/step-6/trainer_state.json", name);
        char *st = read_rel(rel);
        cJSON *sj = cJSON_Parse(st);
        const cJSON *nn = cJSON_GetObjectItemCaseSensitive(sj, "optimizer_numel");
        assert_true(cJSON_IsNumber(nn));
        double arena = 4 * nn->valuedouble;
        printf("# %s: gradient arena %.0f bytes; ZeRO %d windows %.0f, rank 0's gradients %.0f\n", name, arena, zero,
               win, grad_sum / np);
        assert_true(opt_sum == 2 * arena);        /* the shards tile the arena */
        assert_true(grad_sum - np * win == arena); /* and so do the gradient shards */
        assert_true(win < arena);
        cJSON_Delete(sj);
        free(st);
    } else {
        assert_true(opt_sum == (zero ? 2 : 2 * np) * grads);
    }
    cJSON_Delete(j);
}


int dp_run(const char *group, const struct CMUnitTest *all, size_t n_all, int argc, char **argv) {
    struct CMUnitTest *tests = base_xcalloc(n_all, sizeof *tests);
    size_t n = 0;
    for (size_t i = 0; i < n_all; i++) {
        int want = argc < 2;
        for (int a = 1; a < argc; a++) want |= !strcmp(argv[a], all[i].name);
        if (want) tests[n++] = all[i];
    }
    if (n == 0) {
        fprintf(stderr, "%s: no test named by the arguments\n", group);
        free(tests);
        return 2;
    }
    int rc = _cmocka_run_group_tests(group, tests, n, setup, teardown);
    free(tests);
    return rc;
}
