/*
 * The reward_math_opts that reproduce each `mode` of
 * ../shared/data/math_equivalence_cases.jsonl (shared by the agreement test
 * and bench/bench_math.c). Header-only, static functions.
 */
#ifndef GRPO_TESTS_MATH_MODES_H
#define GRPO_TESTS_MATH_MODES_H

#include <string.h>

#include "base/base.h"
#include "reward/rules/rules.h"

static inline int has_match_type(const cJSON *opt, const char *what)
{
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(opt, "match_types");
    const cJSON *x;
    cJSON_ArrayForEach(x, mt) if (cJSON_IsString(x) && strcmp(x->valuestring, what) == 0) return 1;
    return 0;
}

/* The settings each source test used. Returns 0 for an unknown mode. */
static inline int mode_opts(const char *mode, const cJSON *opt, reward_math_opts *o)
{
    reward_math_opts_default(o);
    if (strcmp(mode, "math_verify.compare_strings") == 0) {
        /* parse() both with LatexExtractionConfig(boxed_match_priority=0)
         * and/or ExprExtractionConfig(), then verify(...) */
        o->extract_latex = has_match_type(opt, "latex");
        o->extract_expr = has_match_type(opt, "expr");
        o->boxed_priority = 0;
        o->float_rounding = (int)base_json_int(opt, "precision", 6, NULL);
        o->strict = base_json_bool(opt, "strict", 1, NULL);
        o->allow_set_relation_comp = base_json_bool(opt, "allow_set_relation_comp", 0, NULL);
        return 1;
    }
    if (strcmp(mode, "math_verify.parse_default+verify_default") == 0) {
        o->extract_latex = o->extract_expr = 1;
        o->boxed_priority = 50;
        return 1;
    }
    if (strcmp(mode, "math_verify.sympy_expr_eq") == 0) {
        o->float_rounding = (int)base_json_int(opt, "float_rounding", 6, NULL);
        return 1;
    }
    if (strcmp(mode, "hendrycks.is_equiv") == 0) {
        o->ordered_lists = 1;
        return 1;
    }
    if (strcmp(mode, "open_r1.accuracy_reward") == 0) {
        /* pred: boxed-first LaTeX only, no malformed-operator repair */
        o->extract_latex = 1;
        o->boxed_priority = 0;
        o->malformed_operators = 0;
        o->nits = 0;
        o->equations = 1;
        o->gold_plain = 1;
        return 1;
    }
    if (strcmp(mode, "verl.prime_math.compute_score") == 0) return 1;
    return 0;
}

#endif
