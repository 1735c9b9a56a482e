/*
 * bench_math: samples/s of the math reward path, reward_boxed(pred) +
 * reward_math_equal(pred, gold) with each case's settings, over the 287
 * equivalence cases (../shared/data/math_equivalence_cases.jsonl). One
 * sample = one case. Prints the median of 5 timed passes after a warm-up,
 * single-threaded and over a base_pool of all cores, plus a checksum of the
 * verdicts so runs can be compared.
 *
 *   build/bench/bench_math [CASES_JSONL] [PASSES_PER_RUN] [mv]
 *
 * With "mv", only the 261 cases whose mode is a Math-Verify parse+verify
 * (the subset bench/math_peer.py can time with Math-Verify itself).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "reward/rules/rules.h"
#include "tests/reward/rules/math_modes.h"

typedef struct {
    char *gold, *pred;
    reward_math_opts o;
} case_t;

typedef struct {
    case_t *c;
    int n;
    int *verdict;
} ctx_t;

static void one(void *p, int64_t i, int worker)
{
    (void)worker;
    ctx_t *x = p;
    case_t *c = &x->c[i % x->n];
    size_t st, len;
    int b = reward_boxed(c->pred, strlen(c->pred), &st, &len);
    reward_math_status s = reward_math_equal(c->pred, strlen(c->pred), c->gold, strlen(c->gold), &c->o);
    x->verdict[i] = (s == REWARD_MATH_EQUAL) * 2 + b;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "../shared/data/math_equivalence_cases.jsonl";
    int reps = argc > 2 ? atoi(argv[2]) : 20;
    if (reps < 1) reps = 1;
    int mv_only = argc > 3 && strcmp(argv[3], "mv") == 0;
    base_jsonl *r;
    if (base_jsonl_open(path, &r) != BASE_OK) base_die("%s", base_err_msg());
    case_t *cs = NULL;
    int n = 0, cap = 0;
    cJSON *row;
    base_status st;
    while ((st = base_jsonl_next(r, &row)) != BASE_ERR_EOF) {
        if (st != BASE_OK) base_die("%s", base_err_msg());
        const char *mode = base_json_str(row, "mode", "");
        if (mv_only && strcmp(mode, "math_verify.compare_strings") != 0 &&
            strcmp(mode, "math_verify.parse_default+verify_default") != 0) {
            cJSON_Delete(row);
            continue;
        }
        if (n == cap) cs = base_xrealloc(cs, sizeof *cs * (size_t)(cap = cap ? 2 * cap : 512));
        cs[n].gold = base_xstrdup(base_json_str(row, "gold", ""));
        cs[n].pred = base_xstrdup(base_json_str(row, "pred", ""));
        if (!mode_opts(base_json_str(row, "mode", ""), cJSON_GetObjectItemCaseSensitive(row, "options"), &cs[n].o))
            base_die("%s:%ld: unknown mode", path, base_jsonl_line(r));
        n++;
        cJSON_Delete(row);
    }
    base_jsonl_close(r);
    int64_t total = (int64_t)n * reps;
    ctx_t x = {.c = cs, .n = n, .verdict = base_xcalloc((size_t)total, sizeof(int))};
    base_pool *pool = base_pool_create(0);
    int threads = base_pool_size(pool);
    for (int mode = 0; mode < 2; mode++) {
        double t[5];
        one(&x, 0, 0);
        for (int64_t i = 0; i < n; i++) one(&x, i, 0); /* warm-up: regex compilation, caches */
        for (int k = 0; k < 5; k++) {
            double t0 = base_now();
            if (mode == 0)
                for (int64_t i = 0; i < total; i++) one(&x, i, 0);
            else
                base_pool_for(pool, total, one, &x);
            t[k] = base_now() - t0;
        }
        qsort(t, 5, sizeof *t, cmp_d);
        uint64_t h = 1469598103934665603ull;
        int equal = 0;
        for (int i = 0; i < n; i++) {
            h = (h ^ (uint64_t)x.verdict[i]) * 1099511628211ull;
            equal += x.verdict[i] >> 1;
        }
        printf("%-16s threads %d: %d cases x %d passes, median %.3f s, %.0f samples/s "
               "(%.1f us/sample), equal %d/%d, verdict checksum %016llx\n",
               mode ? "pool" : "single thread", mode ? threads : 1, n, reps, t[2], (double)total / t[2],
               1e6 * t[2] / (double)total, equal, n, (unsigned long long)h);
    }
    base_pool_destroy(pool);
    for (int i = 0; i < n; i++) free(cs[i].gold), free(cs[i].pred);
    free(cs);
    free(x.verdict);
    return 0;
}
