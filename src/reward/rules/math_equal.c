/*
 * reward_math_equal / reward_math_extract: the public entry of the math
 * engine. One arena per call (freed before returning), UTF-8 cleaned
 * copies of the inputs, extraction of both answers, comparison, and
 * Math-Verify's string fallback (two extracted texts that are equal after
 * trimming count as equal even if neither parses).
 */
#include <string.h>

#include "base/base.h"
#include "reward/rules/rules_int.h"

const char *reward_math_status_str(reward_math_status s)
{
    switch (s) {
    case REWARD_MATH_NOT_EQUAL: return "not_equal";
    case REWARD_MATH_EQUAL: return "equal";
    case REWARD_MATH_NO_GOLD: return "no_gold";
    case REWARD_MATH_NO_PRED: return "no_pred";
    case REWARD_MATH_LIMIT: return "limit";
    }
    return "?";
}

void reward_math_opts_default(reward_math_opts *o)
{
    memset(o, 0, sizeof *o);
    o->boxed_priority = 0;
    o->float_rounding = 6;
    o->strict = 1;
    o->units = 1;
    o->malformed_operators = 1;
    o->nits = 1;
    o->rel_tol = 1e-9;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

/* Math-Verify compares string fallbacks after strip(); both non-empty */
static int str_equal(const char *x, const char *y)
{
    if (!x || !y) return 0;
    while (is_space(*x)) x++;
    while (is_space(*y)) y++;
    size_t nx = strlen(x), ny = strlen(y);
    while (nx && is_space(x[nx - 1])) nx--;
    while (ny && is_space(y[ny - 1])) ny--;
    return nx && nx == ny && memcmp(x, y, nx) == 0;
}

static void sanitize(reward_math_opts *o)
{
    if (o->float_rounding < 0) o->float_rounding = 0;
    if (o->float_rounding > 30) o->float_rounding = 30;
    if (!(o->rel_tol > 0) || o->rel_tol > 0.1) o->rel_tol = 1e-9;
}

reward_math_status reward_math_equal(const char *pred, size_t pred_len, const char *gold, size_t gold_len,
                                     const reward_math_opts *opts)
{
    reward_math_opts o;
    if (opts) o = *opts;
    else reward_math_opts_default(&o);
    sanitize(&o);
    if (pred_len > REWARD_MAX_TEXT || gold_len > REWARD_MAX_TEXT) return REWARD_MATH_LIMIT;
    if (!pred) pred = "", pred_len = 0;
    if (!gold) gold = "", gold_len = 0;

    mq_arena a;
    reward_mq_arena_init(&a);
    size_t pn, gn;
    char *p = reward_mq_utf8_clean(&a, pred, pred_len, &pn);
    char *g = reward_mq_utf8_clean(&a, gold, gold_len, &gn);
    reward_math_status st = REWARD_MATH_LIMIT;
    if (!p || !g) goto done;

    mq_answer ga, pa;
    reward_math_opts go = o;
    if (o.gold_plain) go.extract_latex = go.extract_expr = 0;
    reward_mq_extract(&a, g, gn, &go, &ga);
    if (a.failed) goto done;
    reward_mq_extract(&a, p, pn, &o, &pa);
    if (a.failed) goto done;

    int equal = 0;
    if (ga.node && pa.node) {
        mq_cmp_cfg cc = {.float_rounding = o.float_rounding, .strict = o.strict,
                         .allow_set_relation_comp = o.allow_set_relation_comp, .rel_tol = o.rel_tol};
        equal = reward_mq_equal(&a, ga.node, pa.node, &cc);
    }
    if (!equal) equal = str_equal(ga.str, pa.str);
    if (equal) st = REWARD_MATH_EQUAL;
    else if (a.failed) st = REWARD_MATH_LIMIT;
    else if (!ga.node) st = REWARD_MATH_NO_GOLD;
    else if (!pa.node) st = REWARD_MATH_NO_PRED;
    else st = REWARD_MATH_NOT_EQUAL;
done:
    reward_mq_arena_free(&a);
    return st;
}

int reward_math_extract(const char *text, size_t len, const reward_math_opts *opts, char *out, size_t cap)
{
    reward_math_opts o;
    if (opts) o = *opts;
    else reward_math_opts_default(&o);
    sanitize(&o);
    if (cap) out[0] = 0;
    if (len > REWARD_MAX_TEXT || !text) return 0;
    mq_arena a;
    reward_mq_arena_init(&a);
    size_t n;
    char *t = reward_mq_utf8_clean(&a, text, len, &n);
    int found = 0;
    if (t) {
        mq_answer ans;
        reward_mq_extract(&a, t, n, &o, &ans);
        const char *s = ans.node ? ans.norm : ans.str;
        found = ans.node != NULL && !a.failed;
        if (s && cap) {
            size_t l = strlen(s);
            if (l >= cap) l = cap - 1;
            memcpy(out, s, l);
            out[l] = 0;
        }
    }
    reward_mq_arena_free(&a);
    return found;
}
