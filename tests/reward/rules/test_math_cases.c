/*
 * Agreement of reward_math_equal with the 287 equivalence cases collected
 * from the Math-Verify, hendrycks MATH, open-r1 and verl test suites
 * (../shared/data/math_equivalence_cases.jsonl). Each case's `mode` and
 * `options` select the extraction and comparison settings the source test
 * used (see mode_opts). Cases whose note flags a library quirk (a control
 * character from a non-raw Python string, or an expectation the source
 * itself calls counter-intuitive) are reported separately.
 *
 * The test fails when the agreement drops below the figure reached when it
 * was written (FLOOR_* below): a regression guard, not a target.
 *
 *   test_math_cases            run as a cmocka test (prints the tables)
 *   test_math_cases --report   tables plus every disagreeing case
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "reward/rules/rules.h"
#include "tests/common/test_common.h"
#include "tests/reward/rules/math_modes.h"

/* Figures reached (all cases / cases not flagged as quirks). */
#define FLOOR_ALL 286
#define FLOOR_NONQUIRK 284

static int g_report = 0;

typedef struct {
    char name[192];
    int n, agree;       /* all cases */
    int nq, nq_agree;   /* cases not flagged as quirks */
} tally;

static void add(tally *t, int *nt, const char *name, int ok, int quirk)
{
    int i;
    for (i = 0; i < *nt && strcmp(t[i].name, name) != 0; i++) {}
    if (i == *nt) {
        memset(&t[i], 0, sizeof t[i]);
        snprintf(t[i].name, sizeof t[i].name, "%s", name);
        (*nt)++;
    }
    t[i].n++;
    t[i].agree += ok;
    if (!quirk) {
        t[i].nq++;
        t[i].nq_agree += ok;
    }
}

static void print_table(const char *title, tally *t, int nt)
{
    printf("\n| %s | cases | agree | non-quirk cases | agree | %% non-quirk |\n|---|---|---|---|---|---|\n", title);
    for (int i = 0; i < nt; i++)
        printf("| %s | %d | %d | %d | %d | %.1f%% |\n", t[i].name, t[i].n, t[i].agree, t[i].nq, t[i].nq_agree,
               t[i].nq ? 100.0 * t[i].nq_agree / t[i].nq : 100.0);
}

static void short_source(const char *src, char *out, size_t cap)
{
    /* "owner/repo:path::test" -> "owner/repo:file" */
    const char *colon = strchr(src, ':');
    const char *slash = colon ? strrchr(src, '/') : NULL;
    const char *dc = strstr(src, "::");
    if (!colon || !slash || !dc || slash > dc) {
        snprintf(out, cap, "%s", src);
        return;
    }
    snprintf(out, cap, "%.*s:%.*s", (int)(colon - src), src, (int)(dc - slash - 1), slash + 1);
}

static void run_cases(int *all_agree, int *nq_agree, int *nq_total, int *total)
{
    char *path = test_shared_path("data/math_equivalence_cases.jsonl");
    base_jsonl *r;
    if (base_jsonl_open(path, &r) != BASE_OK) base_die("%s", base_err_msg());
    tally by_src[64], by_kind[32], by_mode[16];
    int ns = 0, nk = 0, nm = 0;
    *all_agree = *nq_agree = *nq_total = *total = 0;
    int quirks = 0, quirk_agree = 0;
    cJSON *row;
    base_status st;
    double t0 = base_now();
    while ((st = base_jsonl_next(r, &row)) != BASE_ERR_EOF) {
        if (st != BASE_OK) base_die("%s", base_err_msg());
        const char *gold = base_json_str(row, "gold", NULL);
        const char *pred = base_json_str(row, "pred", NULL);
        const char *mode = base_json_str(row, "mode", "");
        const char *note = base_json_str(row, "note", "");
        const char *kind = base_json_str(row, "kind_guess", "?");
        int want = base_json_bool(row, "equal", 0, NULL);
        const cJSON *opt = cJSON_GetObjectItemCaseSensitive(row, "options");
        reward_math_opts o;
        if (!gold || !pred || !mode_opts(mode, opt, &o)) base_die("line %ld: bad case", base_jsonl_line(r));
        reward_math_status s = reward_math_equal(pred, strlen(pred), gold, strlen(gold), &o);
        int got = s == REWARD_MATH_EQUAL;
        int ok = got == want;
        int quirk = strstr(note, "control character") || strstr(note, "counter-intuitive");
        char src[160];
        short_source(base_json_str(row, "source", "?"), src, sizeof src);
        add(by_src, &ns, src, ok, quirk);
        add(by_kind, &nk, kind, ok, quirk);
        add(by_mode, &nm, mode, ok, quirk);
        (*total)++;
        *all_agree += ok;
        if (quirk) {
            quirks++;
            quirk_agree += ok;
        } else {
            (*nq_total)++;
            *nq_agree += ok;
        }
        if (!ok && g_report) {
            char ex[512];
            reward_math_opts ogold = o;
            if (o.gold_plain) ogold.extract_latex = ogold.extract_expr = 0;
            reward_math_extract(gold, strlen(gold), &ogold, ex, sizeof ex);
            printf("DISAGREE line %ld (%s%s) want %d got %s\n  gold: %.200s\n  gold answer: %s\n", base_jsonl_line(r),
                   kind, quirk ? ", quirk" : "", want, reward_math_status_str(s), gold, ex);
            reward_math_extract(pred, strlen(pred), &o, ex, sizeof ex);
            size_t pl = strlen(pred);
            printf("  pred: ...%.200s\n  pred answer: %s\n", pl > 200 ? pred + pl - 200 : pred, ex);
        }
        cJSON_Delete(row);
    }
    double dt = base_now() - t0;
    base_jsonl_close(r);
    free(path);
    print_table("source", by_src, ns);
    print_table("kind_guess", by_kind, nk);
    print_table("mode", by_mode, nm);
    printf("\nall cases: %d/%d agree (%.1f%%)\n", *all_agree, *total, 100.0 * *all_agree / *total);
    printf("non-quirk cases: %d/%d agree (%.1f%%); quirk cases: %d/%d\n", *nq_agree, *nq_total,
           100.0 * *nq_agree / *nq_total, quirk_agree, quirks);
    printf("time: %.3f s for %d cases\n", dt, *total);
}

static void test_agreement(void **state)
{
    (void)state;
    int all, nq, nqt, tot;
    run_cases(&all, &nq, &nqt, &tot);
    assert_int_equal(tot, 287);
    assert_true(all >= FLOOR_ALL);
    assert_true(nq >= FLOOR_NONQUIRK);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--report") == 0) {
        g_report = 1;
        int all, nq, nqt, tot;
        run_cases(&all, &nq, &nqt, &tot);
        return 0;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_agreement)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
