/*
 * Lua 5.4 bindings of the rule helpers: reward_rules_register(L) sets the
 * functions into the table on top of the stack (the host's `grpo` module).
 * Argument errors raise Lua errors naming the function and the argument;
 * unknown option names in opts tables are errors too (a typo must not
 * silently change a reward). Every function is pure and reentrant.
 */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <string.h>

#include "reward/rules/rules.h"

/* ------------------------------------------------------------------------ */
/* opts tables                                                              */

/* Raise an error for keys of the opts table at `idx` not in `known`. */
static void check_keys(lua_State *L, int idx, const char *fn, const char *const *known)
{
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "%s: opts keys must be strings", fn);
        const char *k = lua_tostring(L, -1);
        int ok = 0;
        for (const char *const *p = known; *p && !ok; p++) ok = strcmp(*p, k) == 0;
        if (!ok) luaL_error(L, "%s: unknown option '%s'", fn, k);
    }
}

/* opts at idx: nil/none or a table (checked). Returns 1 if a table. */
static int opts_table(lua_State *L, int idx, const char *fn, const char *const *known)
{
    if (lua_isnoneornil(L, idx)) return 0;
    if (!lua_istable(L, idx)) luaL_error(L, "%s: opts must be a table, got %s", fn, luaL_typename(L, idx));
    check_keys(L, idx, fn, known);
    return 1;
}

static int opt_bool(lua_State *L, int idx, const char *fn, const char *key, int dflt)
{
    lua_getfield(L, idx, key);
    int r = dflt;
    if (!lua_isnil(L, -1)) {
        if (!lua_isboolean(L, -1)) luaL_error(L, "%s: opts.%s must be a boolean", fn, key);
        r = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    return r;
}

static double opt_num(lua_State *L, int idx, const char *fn, const char *key, double dflt)
{
    lua_getfield(L, idx, key);
    double r = dflt;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER) luaL_error(L, "%s: opts.%s must be a number", fn, key);
        r = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return r;
}

static lua_Integer opt_int(lua_State *L, int idx, const char *fn, const char *key, lua_Integer dflt)
{
    lua_getfield(L, idx, key);
    lua_Integer r = dflt;
    if (!lua_isnil(L, -1)) {
        int ok;
        r = lua_tointegerx(L, -1, &ok);
        if (!ok) luaL_error(L, "%s: opts.%s must be an integer", fn, key);
    }
    lua_pop(L, 1);
    return r;
}

/* string option: index into choices, or dflt when absent */
static int opt_choice(lua_State *L, int idx, const char *fn, const char *key, const char *const *choices, int dflt)
{
    lua_getfield(L, idx, key);
    int r = dflt;
    if (!lua_isnil(L, -1)) {
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        r = -1;
        for (int i = 0; s && choices[i]; i++)
            if (strcmp(choices[i], s) == 0) r = i;
        if (r < 0) {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (int i = 0; choices[i]; i++) {
                if (i) luaL_addstring(&b, ", ");
                luaL_addstring(&b, choices[i]);
            }
            luaL_pushresult(&b);
            luaL_error(L, "%s: opts.%s must be one of: %s", fn, key, lua_tostring(L, -1));
        }
    }
    lua_pop(L, 1);
    return r;
}

static const char *opt_str(lua_State *L, int idx, const char *fn, const char *key, const char *dflt)
{
    lua_getfield(L, idx, key);
    const char *r = dflt;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "%s: opts.%s must be a string", fn, key);
        r = lua_tostring(L, -1); /* stays valid: the opts table holds it */
    }
    lua_pop(L, 1);
    return r;
}

/* ------------------------------------------------------------------------ */
/* boxed, math                                                              */

static int l_boxed(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    size_t st, len;
    if (reward_boxed(s, n, &st, &len)) lua_pushlstring(L, s + st, len);
    else lua_pushnil(L);
    return 1;
}

static const char *const k_math_keys[] = {
    "extract", "gold_plain", "boxed_priority", "float_rounding", "strict", "allow_set_relation_comp",
    "ordered_lists", "units", "malformed_operators", "nits", "equations", "rel_tol", NULL,
};

static void math_opts(lua_State *L, int idx, const char *fn, reward_math_opts *o)
{
    reward_math_opts_default(o);
    if (!opts_table(L, idx, fn, k_math_keys)) return;
    static const char *const ex[] = {"none", "latex", "expr", "all", NULL};
    int e = opt_choice(L, idx, fn, "extract", ex, 0);
    o->extract_latex = e == 1 || e == 3;
    o->extract_expr = e == 2 || e == 3;
    o->gold_plain = opt_bool(L, idx, fn, "gold_plain", 0);
    lua_Integer bp = opt_int(L, idx, fn, "boxed_priority", 0);
    if (bp < -1 || bp > 1000) luaL_error(L, "%s: opts.boxed_priority must be -1 (off) or 0..1000", fn);
    o->boxed_priority = (int)bp;
    lua_Integer fr = opt_int(L, idx, fn, "float_rounding", 6);
    if (fr < 0 || fr > 30) luaL_error(L, "%s: opts.float_rounding must be in 0..30", fn);
    o->float_rounding = (int)fr;
    o->strict = opt_bool(L, idx, fn, "strict", 1);
    o->allow_set_relation_comp = opt_bool(L, idx, fn, "allow_set_relation_comp", 0);
    o->ordered_lists = opt_bool(L, idx, fn, "ordered_lists", 0);
    o->units = opt_bool(L, idx, fn, "units", 1);
    o->malformed_operators = opt_bool(L, idx, fn, "malformed_operators", 1);
    o->nits = opt_bool(L, idx, fn, "nits", 1);
    o->equations = opt_bool(L, idx, fn, "equations", 0);
    double tol = opt_num(L, idx, fn, "rel_tol", 1e-9);
    if (!(tol > 0 && tol <= 0.1)) luaL_error(L, "%s: opts.rel_tol must be in (0, 0.1]", fn);
    o->rel_tol = tol;
}

/* math_equal(pred, gold [, opts]) -> boolean, status. pred may be nil
 * (no extracted answer): false and "no_pred", or "no_gold" when the gold
 * cannot be parsed either, so a script can skip that sample whether or not
 * the completion had an answer (TRL/open-r1 accuracy_reward: None). */
static int l_math_equal(lua_State *L)
{
    size_t pn = 0, gn;
    const char *pred = NULL;
    if (!lua_isnil(L, 1)) pred = luaL_checklstring(L, 1, &pn);
    else luaL_checkany(L, 1);
    const char *gold = luaL_checklstring(L, 2, &gn);
    reward_math_opts o;
    math_opts(L, 3, "math_equal", &o);
    /* a NULL pred is an empty one: never equal, NO_GOLD before NO_PRED */
    reward_math_status st = reward_math_equal(pred, pn, gold, gn, &o);
    lua_pushboolean(L, st == REWARD_MATH_EQUAL);
    lua_pushstring(L, reward_math_status_str(st));
    return 2;
}

/* math_extract(text [, opts]) -> answer text or nil */
static int l_math_extract(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    reward_math_opts o;
    math_opts(L, 2, "math_extract", &o);
    char buf[4096];
    if (reward_math_extract(s, n, &o, buf, sizeof buf)) lua_pushstring(L, buf);
    else lua_pushnil(L);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* format                                                                   */

static const char *const k_think_keys[] = {"style", "prefilled", "answer_tags", "code_lang", NULL};

static int l_think_format(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    reward_think_opts o;
    reward_think_opts_default(&o);
    if (opts_table(L, 2, "think_format", k_think_keys)) {
        static const char *const styles[] = {"r1", "openr1", NULL};
        static const char *const tags[] = {"optional", "required", "forbidden", NULL};
        o.style = opt_choice(L, 2, "think_format", "style", styles, 0) ? REWARD_THINK_OPENR1 : REWARD_THINK_R1;
        o.prefilled = opt_bool(L, 2, "think_format", "prefilled", 0);
        int t = opt_choice(L, 2, "think_format", "answer_tags", tags, 0);
        o.answer_tags = t == 1 ? 1 : t == 2 ? -1 : 0;
        o.code_lang = opt_str(L, 2, "think_format", "code_lang", NULL);
        if (o.code_lang && o.style != REWARD_THINK_OPENR1)
            luaL_error(L, "think_format: opts.code_lang needs style = \"openr1\"");
    }
    double r = reward_think_format(s, n, &o);
    if (r < 0) luaL_error(L, "think_format: opts.code_lang may only hold letters, digits and + # _ . -");
    lua_pushnumber(L, r);
    return 1;
}

static int l_tag_count(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_pushnumber(L, reward_tag_count(s, n));
    return 1;
}

/* ------------------------------------------------------------------------ */
/* language                                                                 */

/* lang_ratio(text, lang [, opts]) -> ratio (or opts.empty when the CoT has
 * no words; default nil), target words, total words */
static int l_lang_ratio(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *lang = luaL_checkstring(L, 2);
    static const char *const keys[] = {"empty", NULL};
    int have = opts_table(L, 3, "lang_ratio", keys);
    if (!reward_lang_known(lang)) luaL_error(L, "lang_ratio: unknown language code '%s'", lang);
    reward_lang_counts c;
    double r = reward_lang_ratio(s, n, lang, &c);
    if (isnan(r)) {
        if (have) lua_getfield(L, 3, "empty");
        else lua_pushnil(L);
        if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "lang_ratio: opts.empty must be a number");
    } else {
        lua_pushnumber(L, r);
    }
    lua_pushinteger(L, (lua_Integer)c.target);
    lua_pushinteger(L, (lua_Integer)c.total);
    return 3;
}

/* ------------------------------------------------------------------------ */
/* open-r1 rewards                                                          */

static int l_reasoning_steps(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_pushnumber(L, reward_reasoning_steps(s, n));
    return 1;
}

/* repetition_penalty(text [, {ngram_size=3, max_penalty=-1, language="en"}]) */
static int l_repetition_penalty(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    static const char *const keys[] = {"ngram_size", "max_penalty", "language", NULL};
    lua_Integer ng = 3;
    double mp = -1.0;
    int zh = 0;
    if (opts_table(L, 2, "repetition_penalty", keys)) {
        ng = opt_int(L, 2, "repetition_penalty", "ngram_size", 3);
        mp = opt_num(L, 2, "repetition_penalty", "max_penalty", -1.0);
        static const char *const langs[] = {"en", "zh", NULL};
        zh = opt_choice(L, 2, "repetition_penalty", "language", langs, 0) == 1;
    }
    if (ng < 1 || ng > 1000) luaL_error(L, "repetition_penalty: opts.ngram_size must be in 1..1000");
    if (!(mp <= 0)) luaL_error(L, "repetition_penalty: opts.max_penalty must be <= 0");
    lua_pushnumber(L, reward_repetition_penalty(s, n, (int)ng, mp, zh ? "zh" : "en"));
    return 1;
}

/* cosine_scaled(text_or_length, correct [, opts]) */
static int l_cosine_scaled(lua_State *L)
{
    double len;
    if (lua_type(L, 1) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, 1, &n);
        len = (double)reward_utf8_length(s, n);
    } else if (lua_type(L, 1) == LUA_TNUMBER) {
        len = lua_tonumber(L, 1);
        if (!(len >= 0)) luaL_error(L, "cosine_scaled: length must be >= 0");
    } else {
        return luaL_error(L, "cosine_scaled: argument 1 must be the completion text or its length");
    }
    luaL_checktype(L, 2, LUA_TBOOLEAN);
    int correct = lua_toboolean(L, 2);
    static const char *const keys[] = {"min_value_wrong", "max_value_wrong", "min_value_correct",
                                       "max_value_correct", "max_len", "clamp", NULL};
    reward_cosine_opts o;
    reward_cosine_opts_default(&o);
    if (opts_table(L, 3, "cosine_scaled", keys)) {
        o.min_value_wrong = opt_num(L, 3, "cosine_scaled", "min_value_wrong", o.min_value_wrong);
        o.max_value_wrong = opt_num(L, 3, "cosine_scaled", "max_value_wrong", o.max_value_wrong);
        o.min_value_correct = opt_num(L, 3, "cosine_scaled", "min_value_correct", o.min_value_correct);
        o.max_value_correct = opt_num(L, 3, "cosine_scaled", "max_value_correct", o.max_value_correct);
        o.max_len = opt_num(L, 3, "cosine_scaled", "max_len", o.max_len);
        o.clamp = opt_bool(L, 3, "cosine_scaled", "clamp", o.clamp);
    }
    if (!(o.max_len > 0)) luaL_error(L, "cosine_scaled: opts.max_len must be > 0");
    lua_pushnumber(L, reward_cosine_scaled(len, correct, &o));
    return 1;
}

/* soft_overlong(completion_tokens, max_completion_len, soft_punish_cache) */
static int l_soft_overlong(lua_State *L)
{
    double t = luaL_checknumber(L, 1), mx = luaL_checknumber(L, 2), cache = luaL_checknumber(L, 3);
    if (!(t >= 0)) luaL_error(L, "soft_overlong: completion_tokens must be >= 0");
    if (!(cache > 0 && cache <= mx))
        luaL_error(L, "soft_overlong: need 0 < soft_punish_cache <= max_completion_len");
    lua_pushnumber(L, reward_soft_overlong(t, mx, cache));
    return 1;
}

static int l_utf8_length(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_pushinteger(L, (lua_Integer)reward_utf8_length(s, n));
    return 1;
}

void reward_rules_register(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"boxed", l_boxed},
        {"math_equal", l_math_equal},
        {"math_extract", l_math_extract},
        {"think_format", l_think_format},
        {"tag_count", l_tag_count},
        {"lang_ratio", l_lang_ratio},
        {"reasoning_steps", l_reasoning_steps},
        {"repetition_penalty", l_repetition_penalty},
        {"cosine_scaled", l_cosine_scaled},
        {"soft_overlong", l_soft_overlong},
        {"utf8_length", l_utf8_length},
        {NULL, NULL},
    };
    luaL_checktype(L, -1, LUA_TTABLE);
    luaL_setfuncs(L, fns, 0);
}
