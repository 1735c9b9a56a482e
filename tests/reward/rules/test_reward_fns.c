/*
 * open-r1's reward-function expectations (../shared/data/reward_fn_cases.jsonl,
 * asserted by huggingface/open-r1 tests/test_rewards.py) against our C
 * helpers. Every case is one of ours (format, tag count, reasoning steps,
 * repetition, cosine scaling, code format, soft overlong: pure text or
 * arithmetic; none executes code). One case cannot be reproduced without
 * the jieba dictionary segmenter: the "zh" repetition case segments
 * "这个这个这个这个这个" into five words "这个"; we count every Han character
 * as a word. It is checked against our own documented value instead and
 * reported.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "reward/rules/rules.h"
#include "tests/common/test_common.h"

static double tolerance(const char *cmp)
{
    if (strcmp(cmp, "exact") == 0) return 0.0;
    int dp;
    if (sscanf(cmp, "almost_equal_%ddp", &dp) == 1) return 0.5 * pow(10.0, -dp);
    base_die("unknown compare '%s'", cmp);
}

/* Returns the value of our helper for this case; *skip set for the jieba case. */
static double evaluate(const cJSON *row, int *jieba)
{
    const char *fn = base_json_str(row, "reward", "");
    const char *text = base_json_str(row, "completion", "");
    size_t n = strlen(text);
    const cJSON *prm = cJSON_GetObjectItemCaseSensitive(row, "params");
    *jieba = 0;
    if (strcmp(fn, "open_r1.format_reward") == 0) {
        reward_think_opts o;
        reward_think_opts_default(&o);
        o.style = REWARD_THINK_OPENR1;
        return reward_think_format(text, n, &o);
    }
    if (strcmp(fn, "open_r1.code_format_reward") == 0) {
        reward_think_opts o;
        reward_think_opts_default(&o);
        o.style = REWARD_THINK_OPENR1;
        o.code_lang = base_json_str(prm, "language", "python");
        return reward_think_format(text, n, &o);
    }
    if (strcmp(fn, "open_r1.tag_count_reward") == 0) return reward_tag_count(text, n);
    if (strcmp(fn, "open_r1.reasoning_steps_reward") == 0) return reward_reasoning_steps(text, n);
    if (strcmp(fn, "open_r1.repetition_penalty_reward") == 0) {
        const char *lang = base_json_str(prm, "language", "en");
        *jieba = strcmp(lang, "zh") == 0;
        return reward_repetition_penalty(text, n, (int)base_json_int(prm, "ngram_size", 3, NULL),
                                         base_json_num(prm, "max_penalty", -1.0, NULL), lang);
    }
    if (strcmp(fn, "open_r1.soft_overlong_punishment") == 0)
        return reward_soft_overlong(base_json_num(row, "completion_token_count", 0, NULL),
                                    base_json_num(prm, "max_completion_len", 0, NULL),
                                    base_json_num(prm, "soft_punish_cache", 0, NULL));
    if (strcmp(fn, "open_r1.cosine_scaled_reward") == 0) {
        /* correctness as open-r1 computes it: boxed-first LaTeX extraction
         * of the completion against the parsed solution */
        const char *sol = base_json_str(row, "solution", "");
        reward_math_opts m;
        reward_math_opts_default(&m);
        m.extract_latex = 1;
        m.gold_plain = 1;
        m.malformed_operators = 0;
        m.nits = 0;
        int correct = reward_math_equal(text, n, sol, strlen(sol), &m) == REWARD_MATH_EQUAL;
        reward_cosine_opts o;
        reward_cosine_opts_default(&o);
        o.min_value_wrong = base_json_num(prm, "min_value_wrong", -1.0, NULL);
        o.max_value_wrong = base_json_num(prm, "max_value_wrong", -0.5, NULL);
        o.min_value_correct = base_json_num(prm, "min_value_correct", 0.5, NULL);
        o.max_value_correct = base_json_num(prm, "max_value_correct", 1.0, NULL);
        o.max_len = base_json_num(prm, "max_len", 1000, NULL);
        return reward_cosine_scaled((double)reward_utf8_length(text, n), correct, &o);
    }
    base_die("case for an unknown reward '%s'", fn);
}

static void test_open_r1_cases(void **state)
{
    (void)state;
    char *path = test_shared_path("data/reward_fn_cases.jsonl");
    base_jsonl *r;
    if (base_jsonl_open(path, &r) != BASE_OK) base_die("%s", base_err_msg());
    int total = 0, pass = 0, jieba = 0;
    cJSON *row;
    base_status st;
    while ((st = base_jsonl_next(r, &row)) != BASE_ERR_EOF) {
        assert_int_equal(st, BASE_OK);
        int is_jieba;
        double got = evaluate(row, &is_jieba);
        double want = base_json_num(row, "expected", NAN, NULL);
        double tol = tolerance(base_json_str(row, "compare", "exact"));
        total++;
        if (is_jieba) {
            /* ours: 10 one-character words, 9 bigrams, 2 distinct */
            jieba++;
            printf("line %ld: zh/jieba case: open-r1 %.4f, ours %.4f (per-character words)\n",
                   base_jsonl_line(r), want, got);
            assert_true(fabs(got - (1.0 - 2.0 / 9.0) * -1.0) < 1e-12);
        } else {
            int ok = fabs(got - want) <= tol;
            if (!ok)
                printf("line %ld: %s: want %.6f got %.6f\n", base_jsonl_line(r),
                       base_json_str(row, "reward", ""), want, got);
            pass += ok;
            assert_true(ok);
        }
        cJSON_Delete(row);
    }
    base_jsonl_close(r);
    free(path);
    printf("reward_fn_cases: %d/%d reproduced, %d not reproducible (jieba)\n", pass, total - jieba, jieba);
    assert_int_equal(total, 53);
    assert_int_equal(pass, 52);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_open_r1_cases)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
