/*
 * Agreement with Math-Verify on answer pairs built from the 500 MATH-500
 * gold answers (tests/reward/rules/data/math500_pairs.jsonl, made by
 * gen/gen_math_pairs.py and labelled by Math-Verify 0.9.0): an answer vs
 * the next problem's answer, vs SymPy's LaTeX of the same value, vs its
 * 12-digit decimal value, vs its expansion, vs "x = answer". Our side
 * compares the raw strings with reward_math_equal's defaults.
 *
 * Fails below the agreement reached when written (FLOOR); --report prints
 * every disagreement.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "reward/rules/rules.h"
#include "tests/common/test_common.h"

#define FLOOR 1100 /* 8 misses: Math-Verify reads "5i" as a symbol and "5 i" as the unit */

static int g_report = 0;

static int run(int *total)
{
    char *path = test_src_path("tests/reward/rules/data/math500_pairs.jsonl");
    base_jsonl *r;
    if (base_jsonl_open(path, &r) != BASE_OK) base_die("%s", base_err_msg());
    struct {
        char kind[32];
        int n, agree, mv_eq;
    } t[16];
    int nt = 0, agree = 0;
    *total = 0;
    cJSON *row;
    base_status st;
    while ((st = base_jsonl_next(r, &row)) != BASE_ERR_EOF) {
        if (st != BASE_OK) base_die("%s", base_err_msg());
        const char *gold = base_json_str(row, "gold", ""), *pred = base_json_str(row, "pred", "");
        const char *kind = base_json_str(row, "kind", "?");
        int want = base_json_bool(row, "mv_equal", 0, NULL);
        reward_math_status s = reward_math_equal(pred, strlen(pred), gold, strlen(gold), NULL);
        int ok = (s == REWARD_MATH_EQUAL) == want;
        int k;
        for (k = 0; k < nt && strcmp(t[k].kind, kind) != 0; k++) {}
        if (k == nt) {
            snprintf(t[nt].kind, sizeof t[nt].kind, "%s", kind);
            t[nt].n = t[nt].agree = t[nt].mv_eq = 0;
            nt++;
        }
        t[k].n++;
        t[k].agree += ok;
        t[k].mv_eq += want;
        agree += ok;
        (*total)++;
        if (!ok && g_report)
            printf("DISAGREE line %ld (%s): Math-Verify %d, ours %s\n  gold: %s\n  pred: %s\n", base_jsonl_line(r),
                   kind, want, reward_math_status_str(s), gold, pred);
        cJSON_Delete(row);
    }
    base_jsonl_close(r);
    free(path);
    printf("\n%-10s %6s %9s %6s %7s\n", "kind", "pairs", "MV equal", "agree", "%");
    for (int k = 0; k < nt; k++)
        printf("%-10s %6d %9d %6d %6.1f%%\n", t[k].kind, t[k].n, t[k].mv_eq, t[k].agree, 100.0 * t[k].agree / t[k].n);
    printf("all: %d/%d agree with Math-Verify (%.1f%%)\n", agree, *total, 100.0 * agree / *total);
    return agree;
}

static void test_pairs(void **state)
{
    (void)state;
    int total;
    int agree = run(&total);
    assert_true(total > 1000);
    assert_true(agree >= FLOOR);
}

/* Every MATH-500 gold answer parses, and the boxed answer of each
 * reference solution equals the answer column. */
static void test_math500_answers(void **state)
{
    (void)state;
    char *path = test_shared_path("data/math500_test.jsonl");
    base_jsonl *r;
    if (base_jsonl_open(path, &r) != BASE_OK) base_die("%s", base_err_msg());
    int n = 0, parsed = 0, boxed_equal = 0;
    char buf[4096];
    cJSON *row;
    while (base_jsonl_next(r, &row) == BASE_OK) {
        const char *ans = base_json_str(row, "answer", ""), *sol = base_json_str(row, "solution", "");
        n++;
        if (reward_math_extract(ans, strlen(ans), NULL, buf, sizeof buf)) parsed++;
        else printf("answer does not parse: %s\n", ans);
        size_t st, len;
        if (reward_boxed(sol, strlen(sol), &st, &len) &&
            reward_math_equal(sol + st, len, ans, strlen(ans), NULL) == REWARD_MATH_EQUAL)
            boxed_equal++;
        else
            printf("boxed solution differs from the answer: %s\n", ans);
        cJSON_Delete(row);
    }
    base_jsonl_close(r);
    free(path);
    printf("MATH-500: %d answers, %d parse, %d boxed solutions equal the answer\n", n, parsed, boxed_equal);
    assert_int_equal(n, 500);
    assert_int_equal(parsed, 500);
    assert_int_equal(boxed_equal, 500);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--report") == 0) {
        g_report = 1;
        int total;
        run(&total);
        return 0;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_pairs), cmocka_unit_test(test_math500_answers)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
