/*
 * bench_reward: reward throughput (samples/s) of the Lua reward pool.
 *
 *   bench_reward math [WORKERS] [REPEAT]   boxed_math.lua on MATH-500 rows
 *       (completion = a short CoT + \boxed{gold}: every sample scores 1,
 *       so the full extraction + equivalence path runs)
 *   bench_reward code [WORKERS] [ROWS]     unit_tests.lua on MBPP rows
 *       (canonical solutions in a ```python block: one sandboxed python3
 *       per sample)
 *   bench_reward SPEC FILE.jsonl [WORKERS] any spec on any samples
 *
 * Data come from $SHARED_DIR/data (default ../shared/data). Prints one
 * line: samples, seconds, samples/s, mean reward, errors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "reward/reward.h"

static char *data_path(const char *name) {
    const char *d = getenv("SHARED_DIR");
    base_buf b = {0};
    base_buf_printf(&b, "%s/data/%s", d ? d : "../shared", name);
    return b.data;
}

static cJSON **load_rows(const char *path, int64_t *n) {
    base_jsonl *r;
    if (base_jsonl_open(path, &r)) base_die("%s", base_err_msg());
    cJSON **rows = NULL;
    *n = 0;
    cJSON *row;
    base_status st;
    while ((st = base_jsonl_next(r, &row)) != BASE_ERR_EOF) {
        if (st) base_die("%s", base_err_msg());
        rows = base_xrealloc(rows, sizeof *rows * (size_t)(*n + 1));
        rows[(*n)++] = row;
    }
    base_jsonl_close(r);
    return rows;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_reward math|code [WORKERS] [N] | bench_reward SPEC FILE.jsonl [WORKERS]\n");
        return 2;
    }
    const char *mode = argv[1];
    const char *spec_text;
    int workers = 0;
    int64_t n = 0;
    cJSON **samples = NULL;
    if (!strcmp(mode, "math") || !strcmp(mode, "code")) {
        workers = argc > 2 ? atoi(argv[2]) : 0;
        int64_t want = argc > 3 ? atoll(argv[3]) : 0;
        char *path = data_path(!strcmp(mode, "math") ? "math500_test.jsonl" : "mbpp_sanitized.jsonl");
        int64_t nrows;
        cJSON **rows = load_rows(path, &nrows);
        free(path);
        if (!strcmp(mode, "math")) {
            spec_text = "boxed_math";
            int64_t rep = want > 0 ? want : 4;
            n = nrows * rep;
            samples = base_xcalloc((size_t)n, sizeof *samples);
            for (int64_t i = 0; i < n; i++) {
                const cJSON *row = rows[i % nrows];
                cJSON *s = cJSON_CreateObject();
                const char *gold = base_json_str(row, "answer", "");
                base_buf c = {0};
                base_buf_printf(&c, "<think>\nWe work through the problem step by step and check the result.\n"
                                    "</think>\nThe final answer is $\\boxed{%s}$.",
                                gold);
                cJSON_AddStringToObject(s, "prompt", base_json_str(row, "problem", ""));
                cJSON_AddStringToObject(s, "completion", c.data);
                cJSON_AddStringToObject(s, "answer", gold);
                base_buf_free(&c);
                samples[i] = s;
            }
        } else {
            spec_text = "unit_tests";
            n = want > 0 && want < nrows ? want : nrows;
            samples = base_xcalloc((size_t)n, sizeof *samples);
            for (int64_t i = 0; i < n; i++) {
                const cJSON *row = rows[i];
                cJSON *s = cJSON_CreateObject();
                base_buf c = {0};
                base_buf_printf(&c, "```python\n%s\n```", base_json_str(row, "code", ""));
                cJSON_AddStringToObject(s, "completion", c.data);
                cJSON_AddItemToObject(s, "tests", cJSON_Duplicate(cJSON_GetObjectItem(row, "test_list"), 1));
                cJSON_AddItemToObject(s, "test_imports", cJSON_Duplicate(cJSON_GetObjectItem(row, "test_imports"), 1));
                base_buf_free(&c);
                samples[i] = s;
            }
        }
        for (int64_t i = 0; i < nrows; i++) cJSON_Delete(rows[i]);
        free(rows);
    } else {
        if (argc < 3) return 2;
        spec_text = mode;
        samples = load_rows(argv[2], &n);
        workers = argc > 3 ? atoi(argv[3]) : 0;
    }
    reward_spec spec;
    if (reward_spec_parse(spec_text, &spec)) base_die("%s", base_err_msg());
    reward_pool *pool;
    if (reward_pool_create(&spec, workers, NULL, "/dev/null", &pool)) base_die("%s", base_err_msg());
    reward_spec_free(&spec);
    reward_scores sc = {0};
    double t0 = base_now();
    if (reward_pool_score(pool, (const cJSON *const *)samples, n, &sc)) base_die("%s", base_err_msg());
    double dt = base_now() - t0;
    double sum = 0;
    int64_t counted = 0;
    for (int64_t i = 0; i < n; i++)
        if (sc.total[i] == sc.total[i]) sum += sc.total[i], counted++;
    printf("%s: %lld samples, %d workers, %.3f s, %.1f samples/s, mean reward %.4f, %lld errors\n", spec_text,
           (long long)n, reward_pool_n_workers(pool), dt, (double)n / dt, counted ? sum / (double)counted : 0.0,
           (long long)reward_pool_n_errors(pool));
    reward_scores_free(&sc);
    reward_pool_destroy(pool);
    for (int64_t i = 0; i < n; i++) cJSON_Delete(samples[i]);
    free(samples);
    return 0;
}
