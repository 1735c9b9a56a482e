/* What a run leaves for its user (issue 13, part 5): its memory footprint,
 * summary.json and metrics.jsonl numbers, TensorBoard event files and
 * report.html.
 *
 *   - the short demo (recipes/tiny-zero.lua, 2 GRPO steps, 20 eval
 *     prompts) peaks under 300 MB RSS (normal builds: sanitizers inflate
 *     RSS), measured by wait4 on the grpo process; `grpo info` under 64 MB
 *     (no CUDA library mapped: a CUDA build loads them on first GPU use)
 *   - every number in summary.json and metrics.jsonl is in its shortest
 *     round-trip form; the eval's mean reward is the correctly rounded
 *     mean of its samples' rewards (0.3925, not 0.39249999999999424)
 *   - RUN/tb/ holds TFRecord-framed Event protobufs (CRC32C checked here
 *     independently) whose scalars carry the TRL names and the values of
 *     metrics.jsonl
 *   - report.html puts plots in a grid, smoothed beside raw, axes fitted
 *     (the all-zero clip plot on 0..1), a table of sample completions per
 *     logged step; a sample + SFT run gets a section for each, the SFT one
 *     without "generated tokens per second"
 *   - base_json_number / base_json_print (the printer every output uses)
 */
#include "common/test_common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/base.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

#define RSS_LIMIT_KB (300 * 1024) /* the target for the demo */
#define INFO_RSS_LIMIT_KB (64 * 1024) /* grpo info reads headers: no model, no CUDA libraries */

static char *demo_dir; /* the short demo's working directory (setup) */
static long demo_rss_kb;

__attribute__((noinline)) static char *read_text(const char *dir, const char *rel) {
    char *p = base_path_join(dir, rel), *t = NULL;
    size_t n;
    base_status s = base_read_file(p, &t, &n);
    free(p);
    if (s) fail_msg("%s", base_err_msg());
    return t;
}

/* Run grpo in dir; fails the test unless it exits 0. */
static void run_in(const char *dir, const char *args) {
    base_buf cmd = {0};
    base_buf_printf(&cmd, "cd '%s' && OMP_NUM_THREADS=2 '%s' %s 2>&1", dir, getenv("GRPO_EXE"), args);
    FILE *p = popen(cmd.data, "r");
    assert_non_null(p);
    base_buf o = {0};
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) base_buf_append(&o, buf, n);
    int st = pclose(p);
    if (st != 0) fail_msg("%s failed:\n%s", cmd.data, o.data ? o.data : "");
    base_buf_free(&o);
    base_buf_free(&cmd);
}

/* Run grpo in dir (2 OpenMP threads, output in dir/grpo.log); fails the
 * test unless it exits 0. Returns its peak RSS in KiB (wait4: grpo's own,
 * or its children's when larger: gnuplot, sandboxes). */
static long run_rss(const char *dir, const char *args) {
    base_buf cmd = {0};
    base_buf_printf(&cmd, "OMP_NUM_THREADS=2 exec '%s' %s > grpo.log 2>&1", getenv("GRPO_EXE"), args);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (chdir(dir) != 0) _exit(127);
        execl("/bin/sh", "sh", "-c", cmd.data, (char *)NULL);
        _exit(127);
    }
    int st;
    struct rusage ru;
    assert_int_equal(wait4(pid, &st, 0, &ru), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char *log = read_text(dir, "grpo.log");
        fail_msg("%s failed:\n%s", cmd.data, log);
    }
    base_buf_free(&cmd);
    return ru.ru_maxrss;
}

static int setup_demo(void **state) {
    (void)state;
    demo_dir = test_tmpdir();
    char *recipe = test_src_path("recipes/tiny-zero.lua");
    base_buf a = {0};
    base_buf_printf(&a, "run '%s' --quiet --set stages.grpo.max_steps=2 --set stages.grpo.log_completions_steps=1 "
                        "--set stages.eval_before.limit=20 --set stages.eval_after.limit=20",
                    recipe);
    demo_rss_kb = run_rss(demo_dir, a.data);
    base_buf_free(&a);
    free(recipe);
    return 0;
}

static int teardown_demo(void **state) {
    (void)state;
    test_rmdir(demo_dir);
    free(demo_dir);
    return 0;
}

static void test_demo_rss(void **state) {
    (void)state;
    print_message("short demo: peak RSS %ld KiB (limit %d KiB)\n", demo_rss_kb, RSS_LIMIT_KB);
    if (SANITIZED) {
        print_message("skipped: the sanitizers' shadow memory inflates RSS\n");
        skip();
    }
    assert_true(demo_rss_kb > 0);
    assert_true(demo_rss_kb < RSS_LIMIT_KB);
}

/* grpo info maps no CUDA library (a CUDA build loads them only when a
 * model runs on the GPU) and allocates nothing model-sized. */
static void test_info_rss(void **state) {
    (void)state;
    char *model = test_src_path("data/tiny/base"), *dir = test_tmpdir();
    base_buf a = {0};
    base_buf_printf(&a, "info '%s'", model);
    long kb = run_rss(dir, a.data);
    print_message("grpo info: peak RSS %ld KiB (limit %d KiB)\n", kb, INFO_RSS_LIMIT_KB);
    base_buf_free(&a);
    test_rmdir(dir);
    free(dir), free(model);
    if (SANITIZED) {
        print_message("skipped: the sanitizers' shadow memory inflates RSS\n");
        skip();
    }
    assert_true(kb < INFO_RSS_LIMIT_KB);
}

/* ---- numbers -------------------------------------------------------------- */

/* Every number token of a JSON text (outside strings) is the shortest
 * round-trip form of its value. */
static void check_shortest(const char *what, const char *t) {
    int in_str = 0, count = 0;
    for (const char *p = t; *p; p++) {
        if (in_str) {
            if (*p == '\\' && p[1]) p++;
            else if (*p == '"') in_str = 0;
            continue;
        }
        if (*p == '"') {
            in_str = 1;
            continue;
        }
        if (*p != '-' && (*p < '0' || *p > '9')) continue;
        const char *e = p;
        while (*e && strchr("+-.eE0123456789", *e)) e++;
        char tok[64], want[64];
        size_t n = (size_t)(e - p);
        assert_true(n < sizeof tok);
        memcpy(tok, p, n);
        tok[n] = 0;
        base_json_number(want, sizeof want, strtod(tok, NULL));
        if (strcmp(tok, want)) fail_msg("%s: %s is not the shortest round-trip form (%s)", what, tok, want);
        count++;
        p = e - 1;
    }
    assert_true(count > 0);
}

static void test_numbers_shortest(void **state) {
    (void)state;
    char *sum = read_text(demo_dir, "runs/tiny-zero/summary.json");
    char *met = read_text(demo_dir, "runs/tiny-zero/metrics.jsonl");
    check_shortest("summary.json", sum);
    check_shortest("metrics.jsonl", met);
    free(sum), free(met);
}

/* summary.eval_before.reward is the mean of the samples' rewards, rounded
 * once: the sum taken exactly (binary128 holds every partial sum of these
 * doubles exactly: 80 rewards in [0, 1.2] with 2^-55 granularity). */
static void test_eval_mean_exact(void **state) {
    (void)state;
    char *p = base_path_join(demo_dir, "runs/tiny-zero/eval_before.samples.jsonl");
    base_jsonl *r;
    assert_int_equal(base_jsonl_open(p, &r), BASE_OK);
    __float128 sum = 0;
    int64_t n = 0;
    cJSON *v;
    while (base_jsonl_next(r, &v) == BASE_OK) {
        const cJSON *rw = cJSON_GetObjectItemCaseSensitive(v, "reward");
        if (cJSON_IsNumber(rw)) sum += rw->valuedouble, n++;
        cJSON_Delete(v);
    }
    base_jsonl_close(r);
    free(p);
    assert_int_equal(n, 80);
    double want = (double)(sum / n);
    char *sp = base_path_join(demo_dir, "runs/tiny-zero/summary.json");
    cJSON *s = NULL;
    assert_int_equal(base_json_parse_file(sp, &s), BASE_OK);
    double got = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(s, "eval_before"), "reward")->valuedouble;
    if (got != want) fail_msg("eval_before.reward %.17g, the correctly rounded mean is %.17g", got, want);
    cJSON_Delete(s);
    free(sp);
}

static void test_json_number(void **state) {
    (void)state;
    char b[64];
    struct {
        double v;
        const char *s;
    } cases[] = {{0.1, "0.1"},
                 {0.8585000000000065, "0.8585000000000065"}, /* cJSON: 0.85850000000000648 */
                 {9948.147526127254, "9948.147526127254"},   /* cJSON: 9948.1475261272535 */
                 {0.39249999999999424, "0.39249999999999424"},
                 {200, "200"},
                 {-3, "-3"},
                 {1e-7, "1e-07"},
                 {1.5e300, "1.5e+300"},
                 {1e20, "1e+20"},
                 {9007199254740992.0, "9007199254740992"},
                 {NAN, "null"},
                 {INFINITY, "null"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        base_json_number(b, sizeof b, cases[i].v);
        assert_string_equal(b, cases[i].s);
    }
    /* random doubles: the text reads back exactly, and one digit fewer does not */
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double d;
        uint64_t bits = (x & 0x000fffffffffffffull) | ((uint64_t)(1023 + (int)(x >> 52) % 40 - 20) << 52);
        memcpy(&d, &bits, sizeof d);
        if (i & 1) d = -d;
        base_json_number(b, sizeof b, d);
        assert_true(strtod(b, NULL) == d);
        int digits = 0, lead = 1; /* significant digits of the text */
        for (const char *c = b; *c && *c != 'e'; c++) {
            if (*c < '0' || *c > '9' || (lead && *c == '0')) continue;
            lead = 0;
            digits++;
        }
        char fewer[400];
        snprintf(fewer, sizeof fewer, "%.*g", digits - 1 > 0 ? digits - 1 : 1, d);
        if (digits > 1 && d != floor(d)) assert_true(strtod(fewer, NULL) != d);
    }
}

static void test_json_print(void **state) {
    (void)state;
    const char *src = "{\"a\":[1,2.5,{\"b\":\"x\\\"y\\n\\u0001\"}],\"c\":null,\"d\":true,\"e\":{},\"f\":[],"
                      "\"g\":0.30000000000000004,\"h\":\"caf\xc3\xa9\"}";
    cJSON *j = cJSON_Parse(src);
    assert_non_null(j);
    char *one = base_json_print(j, 0), *pretty = base_json_print(j, 1);
    assert_string_equal(one, src);
    assert_non_null(strstr(pretty, "\n  \"c\": null,\n"));
    assert_true(pretty[strlen(pretty) - 1] == '\n');
    cJSON *back = cJSON_Parse(pretty);
    assert_true(cJSON_Compare(j, back, 1));
    cJSON_Delete(back), cJSON_Delete(j);
    free(one), free(pretty);
}

/* ---- TensorBoard ---------------------------------------------------------- */

static uint32_t crc32c(const unsigned char *p, size_t n) { /* bitwise, independent of tb.c's table */
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1)));
    }
    return ~c;
}
static uint32_t masked(uint32_t c) { return ((c >> 15) | (c << 17)) + 0xa282ead8u; }
static uint64_t le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint64_t varint(const unsigned char **p, const unsigned char *end) {
    uint64_t v = 0;
    for (int s = 0; *p < end; s += 7) {
        unsigned char b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) return v;
    }
    fail_msg("truncated varint");
    return 0;
}

typedef struct {
    char tag[128];
    int64_t step;
    float value;
} scalar;

/* Decode one Event; appends its scalars; *version set from file_version,
 * *start to the step of a SessionLog{status: START}. */
static void decode_event(const unsigned char *p, const unsigned char *end, scalar **out, int *n, char *version,
                         int64_t *start) {
    int64_t step = 0;
    int session_start = 0;
    const unsigned char *summary = NULL, *summary_end = NULL;
    while (p < end) {
        uint64_t key = varint(&p, end);
        int field = (int)(key >> 3), wt = (int)(key & 7);
        if (wt == 0) {
            uint64_t v = varint(&p, end);
            if (field == 2) step = (int64_t)v;
        } else if (wt == 1) {
            p += 8;
        } else if (wt == 5) {
            p += 4;
        } else if (wt == 2) {
            uint64_t len = varint(&p, end);
            assert_true(len <= (uint64_t)(end - p));
            if (field == 3) snprintf(version, 32, "%.*s", (int)len, (const char *)p);
            if (field == 5) summary = p, summary_end = p + len;
            if (field == 7) session_start = len == 2 && p[0] == 0x08 && p[1] == 1; /* status = START */
            p += len;
        } else {
            fail_msg("wire type %d", wt);
        }
    }
    if (session_start) *start = step;
    while (summary && summary < summary_end) { /* Summary: repeated Value value = 1 */
        uint64_t key = varint(&summary, summary_end), len = varint(&summary, summary_end);
        assert_int_equal(key, 1 << 3 | 2);
        const unsigned char *v = summary, *ve = summary + len;
        summary = ve;
        scalar s = {.step = step};
        while (v < ve) {
            uint64_t k = varint(&v, ve);
            if (k == (1 << 3 | 2)) {
                uint64_t l = varint(&v, ve);
                snprintf(s.tag, sizeof s.tag, "%.*s", (int)l, (const char *)v);
                v += l;
            } else if (k == (2 << 3 | 5)) {
                uint32_t u = (uint32_t)le(v, 4);
                memcpy(&s.value, &u, 4);
                v += 4;
            } else {
                fail_msg("unexpected Summary.Value field key %llu", (unsigned long long)k);
            }
        }
        *out = realloc(*out, (size_t)(*n + 1) * sizeof **out);
        (*out)[(*n)++] = s;
    }
}

/* Every record of the run's events files (nfiles of them), CRCs checked;
 * *start: the step of a SessionLog START (-1: none). */
static scalar *read_events(const char *run, int nfiles, int *n, int64_t *start) {
    char *tb = base_path_join(run, "tb");
    base_buf cmd = {0};
    base_buf_printf(&cmd, "ls -1 '%s'/events.out.tfevents.*", tb);
    FILE *ls = popen(cmd.data, "r");
    assert_non_null(ls);
    scalar *out = NULL;
    *n = 0;
    *start = -1;
    int files = 0;
    char path[4096];
    while (fgets(path, sizeof path, ls)) {
        path[strcspn(path, "\n")] = 0;
        files++;
        char *data;
        size_t len;
        assert_int_equal(base_read_file(path, &data, &len), BASE_OK);
        const unsigned char *p = (const unsigned char *)data, *end = p + len;
        int records = 0;
        while (p < end) {
            assert_true(end - p >= 12);
            uint64_t l = le(p, 8);
            assert_int_equal(le(p + 8, 4), masked(crc32c(p, 8)));
            assert_true(l + 16 <= (uint64_t)(end - p));
            assert_int_equal(le(p + 12 + l, 4), masked(crc32c(p + 12, l)));
            char v[32] = "";
            decode_event(p + 12, p + 12 + l, &out, n, v, start);
            if (records++ == 0) assert_string_equal(v, "brain.Event:2");
            p += 16 + l;
        }
        free(data);
    }
    pclose(ls);
    assert_int_equal(files, nfiles);
    base_buf_free(&cmd);
    free(tb);
    return out;
}

static const scalar *find(const scalar *s, int n, const char *tag, int64_t step) {
    for (int i = 0; i < n; i++)
        if (!strcmp(s[i].tag, tag) && s[i].step == step) return &s[i];
    return NULL;
}

static void test_tensorboard(void **state) {
    (void)state;
    char *run = base_path_join(demo_dir, "runs/tiny-zero");
    int n;
    int64_t start;
    scalar *s = read_events(run, 1, &n, &start);
    assert_int_equal(start, -1); /* a fresh run: no restart */
    /* every GRPO metrics line's numbers, under their TRL names */
    char *mp = base_path_join(run, "metrics.jsonl");
    base_jsonl *r;
    assert_int_equal(base_jsonl_open(mp, &r), BASE_OK);
    cJSON *v;
    int grpo_lines = 0;
    while (base_jsonl_next(r, &v) == BASE_OK) {
        if (!strcmp(base_json_str(v, "stage", ""), "grpo")) {
            int64_t step = base_json_int(v, "global_step", -1, NULL);
            struct {
                const char *key, *tag;
            } names[] = {{"reward", "train/reward"},
                         {"reward_std", "train/reward_std"},
                         {"rewards/boxed_math", "train/rewards/boxed_math/mean"},
                         {"rewards/boxed_math/std", "train/rewards/boxed_math/std"},
                         {"completion_length", "train/completions/mean_length"},
                         {"loss", "train/loss"},
                         {"grad_norm", "train/grad_norm"},
                         {"lr", "train/learning_rate"},
                         {"entropy", "train/entropy"},
                         {"clip_ratio/low", "train/clip_ratio/low_mean"},
                         {"frac_reward_zero_std", "train/frac_reward_zero_std"}};
            for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
                const scalar *e = find(s, n, names[k].tag, step);
                if (!e) fail_msg("no %s at step %lld", names[k].tag, (long long)step);
                assert_true(e->value == (float)base_json_num(v, names[k].key, NAN, NULL));
            }
            grpo_lines++;
        } else if (!strcmp(base_json_str(v, "stage", ""), "eval_after")) {
            const scalar *e = find(s, n, "eval/accuracy", 2);
            assert_non_null(e);
            assert_true(e->value == (float)base_json_num(v, "accuracy", NAN, NULL));
        }
        cJSON_Delete(v);
    }
    base_jsonl_close(r);
    assert_int_equal(grpo_lines, 2);
    assert_non_null(find(s, n, "eval/accuracy", 0));
    free(s), free(mp), free(run);
}

/* A run stopped after step 1 (checkpoint) and resumed: a second events
 * file that starts with SessionLog START at step 2, so TensorBoard drops
 * whatever the first process logged after its checkpoint. */
static void test_tensorboard_resume(void **state) {
    (void)state;
    char *dir = test_tmpdir(), *recipe = test_src_path("recipes/tiny-zero.lua");
    base_buf a = {0};
    base_buf_printf(&a, "run '%s' --quiet --set stages.grpo.max_steps=2 --set stages.eval_before.limit=4 "
                        "--set stages.eval_after.limit=4",
                    recipe);
    base_buf first = {0};
    base_buf_printf(&first, "%s --max-total-steps 1", a.data);
    run_in(dir, first.data);
    base_buf_puts(&a, " --resume");
    run_in(dir, a.data);
    char *run = base_path_join(dir, "runs/tiny-zero");
    int n;
    int64_t start;
    scalar *s = read_events(run, 2, &n, &start);
    assert_int_equal(start, 2);
    assert_non_null(find(s, n, "train/reward", 1));
    assert_non_null(find(s, n, "train/reward", 2));
    assert_non_null(find(s, n, "eval/accuracy", 2));
    free(s), free(run), free(recipe);
    base_buf_free(&a), base_buf_free(&first);
    test_rmdir(dir);
    free(dir);
}

/* ---- report.html ---------------------------------------------------------- */

/* The "set yrange [lo:hi]" of the plot writing png in report.gp. */
static void plot_yrange(const char *gp, const char *png, double *lo, double *hi) {
    char want[256];
    snprintf(want, sizeof want, "set output '%s'", png);
    const char *at = strstr(gp, want);
    if (!at) fail_msg("report.gp does not draw %s", png);
    const char *yr = strstr(at, "set yrange [");
    assert_non_null(yr);
    assert_int_equal(sscanf(yr, "set yrange [%lf:%lf]", lo, hi), 2);
}

static void test_report(void **state) {
    (void)state;
    char *run = base_path_join(demo_dir, "runs/tiny-zero");
    char *html = read_text(run, "report.html");
    assert_non_null(strstr(html, "class=\"grid\""));
    /* sample completions of both logged steps, with their advantage */
    assert_non_null(strstr(html, "<summary>step 1</summary>"));
    assert_non_null(strstr(html, "<summary>step 2</summary>"));
    assert_non_null(strstr(html, "<th>advantage</th>"));
    char *sp = base_path_join(run, "samples.jsonl");
    base_jsonl *r;
    assert_int_equal(base_jsonl_open(sp, &r), BASE_OK);
    cJSON *v;
    assert_int_equal(base_jsonl_next(r, &v), BASE_OK); /* the first completion of step 1 is shown */
    base_buf esc = {0};
    for (const char *c = base_json_str(v, "completion", ""); *c; c++) {
        if (*c == '<') base_buf_puts(&esc, "&lt;");
        else if (*c == '>') base_buf_puts(&esc, "&gt;");
        else if (*c == '&') base_buf_puts(&esc, "&amp;");
        else if (*c == '"') base_buf_puts(&esc, "&quot;");
        else base_buf_append(&esc, c, 1);
    }
    if (!strstr(html, esc.data)) fail_msg("report.html lacks the completion %s", esc.data);
    cJSON_Delete(v);
    base_jsonl_close(r);
    base_buf_free(&esc);
    if (system("command -v gnuplot >/dev/null 2>&1") == 0) {
        /* smoothed columns beside the raw ones */
        char *dat = read_text(run, "plots/grpo_rewards.dat");
        assert_non_null(strstr(dat, "\treward (smoothed)"));
        free(dat);
        /* axes fitted: the clip fractions are all 0 here; their axis is 0..1, not -1..1 */
        char *met = read_text(run, "metrics.jsonl");
        assert_non_null(strstr(met, "\"clip_ratio/low\":0,"));
        free(met);
        char *gp = read_text(run, "plots/report.gp");
        double lo, hi;
        plot_yrange(gp, "plots/grpo_clip.png", &lo, &hi);
        assert_true(lo == 0 && hi == 1);
        plot_yrange(gp, "plots/grpo_rewards.png", &lo, &hi);
        assert_true(lo >= 0 && hi <= 1.3); /* rewards in [0, 1.2] */
        free(gp);
        assert_non_null(strstr(html, "<img src=\"plots/grpo_clip.png\""));
    }
    free(sp), free(html), free(run);
}

/* A sample stage feeding an SFT stage: a section each in the report, SFT
 * plots of training throughput (not "generated tokens"), TensorBoard tags
 * "sample/..." and "train/loss". */
static void test_report_sample_sft(void **state) {
    (void)state;
    char *dir = test_tmpdir(), *model = test_src_path("data/tiny/base"), *data = test_src_path("data/tiny/train.jsonl");
    base_buf rc = {0};
    base_buf_printf(&rc,
                    "return {\n  name = 'mix', device = 'cpu', model = '%s', template = '{prompt}\\n',\n"
                    "  datasets = { train = { path = '%s', limit = 16 }, kept = 'stage:distill' },\n"
                    "  rewards = { { script = 'boxed_math', weight = 1.0 }, { script = 'think_format', weight = 0.2 } },\n"
                    "  stages = {\n"
                    "    { type = 'sample', name = 'distill', dataset = 'train', num_generations = 2,\n"
                    "      max_completion_length = 48, keep = 'reward > 0' },\n"
                    "    { type = 'sft', dataset = 'kept', max_steps = 3, per_device_train_batch_size = 4, max_length = 128 },\n"
                    "  },\n}\n",
                    model, data);
    char *rp = base_path_join(dir, "mix.lua");
    test_write_file(rp, rc.data, rc.len);
    run_in(dir, "run mix.lua --quiet");
    char *run = base_path_join(dir, "runs/mix");
    char *html = read_text(run, "report.html");
    const char *sample = strstr(html, "Stage distill (rejection sampling)"), *sft = strstr(html, "Stage sft (SFT, 3 logged steps)");
    if (!sample || !sft) fail_msg("report.html lacks the sample or SFT section:\n%s", html);
    assert_non_null(strstr(sample, "Kept "));
    assert_null(strstr(sft, "generated tokens per second"));
    if (system("command -v gnuplot >/dev/null 2>&1") == 0) {
        assert_non_null(strstr(sample, "plots/distill_outcome.png"));
        assert_non_null(strstr(sft, "plots/sft_train_throughput.png"));
        assert_non_null(strstr(sft, "plots/sft_loss.png"));
    }
    int n;
    int64_t start;
    scalar *s = read_events(run, 1, &n, &start);
    assert_non_null(find(s, n, "sample/kept", 0));
    assert_non_null(find(s, n, "sample/dropped/keep", 0));
    assert_non_null(find(s, n, "train/loss", 3));
    assert_non_null(find(s, n, "train/learning_rate", 1));
    free(s), free(html), free(run), free(rp), free(model), free(data);
    base_buf_free(&rc);
    test_rmdir(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest demo[] = {
        cmocka_unit_test(test_demo_rss),  cmocka_unit_test(test_numbers_shortest), cmocka_unit_test(test_eval_mean_exact),
        cmocka_unit_test(test_tensorboard), cmocka_unit_test(test_report),
    };
    const struct CMUnitTest other[] = {
        cmocka_unit_test(test_info_rss),
        cmocka_unit_test(test_tensorboard_resume),
        cmocka_unit_test(test_json_number),
        cmocka_unit_test(test_json_print),
        cmocka_unit_test(test_report_sample_sft),
    };
    int fails = cmocka_run_group_tests_name("short demo", demo, setup_demo, teardown_demo);
    fails += cmocka_run_group_tests_name("unit", other, NULL, NULL);
    return fails;
}
