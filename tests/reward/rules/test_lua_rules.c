/*
 * The Lua bindings from a plain luaL_newstate: reward_rules_register fills
 * a table that we publish as `grpo`, then Lua chunks call every function,
 * check results, and check that bad arguments raise clear errors.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <string.h>

#include "reward/rules/rules.h"
#include "tests/common/test_common.h"

static lua_State *new_state(void)
{
    lua_State *L = luaL_newstate();
    assert_non_null(L);
    luaL_openlibs(L);
    lua_newtable(L);
    lua_pushstring(L, "kept");
    lua_setfield(L, -2, "existing"); /* register must not clear the table */
    int top = lua_gettop(L);
    reward_rules_register(L);
    assert_int_equal(lua_gettop(L), top); /* the table stays on top */
    lua_setglobal(L, "grpo");
    return L;
}

static void run(lua_State *L, const char *code)
{
    if (luaL_dostring(L, code) != LUA_OK) {
        fprintf(stderr, "lua error: %s\n", lua_tostring(L, -1));
        fail();
    }
}

/* the chunk must raise an error whose message contains `want` */
static void run_error(lua_State *L, const char *code, const char *want)
{
    int rc = luaL_dostring(L, code);
    assert_int_not_equal(rc, LUA_OK);
    const char *msg = lua_tostring(L, -1);
    if (!msg || !strstr(msg, want)) {
        fprintf(stderr, "error message '%s' lacks '%s'\n", msg ? msg : "(null)", want);
        fail();
    }
    lua_pop(L, 1);
}

static void test_functions(void **state)
{
    (void)state;
    lua_State *L = new_state();
    run(L, "assert(grpo.existing == 'kept')\n"
           "for _, k in ipairs{'boxed','math_equal','math_extract','think_format','tag_count',"
           "'lang_ratio','reasoning_steps','repetition_penalty','cosine_scaled','soft_overlong',"
           "'utf8_length'} do assert(type(grpo[k]) == 'function', k) end");
    run(L, "assert(grpo.boxed('x \\\\boxed{\\\\frac{1}{2}} y') == '\\\\frac{1}{2}')\n"
           "assert(grpo.boxed('nothing') == nil)");
    run(L, "local ok, st = grpo.math_equal('\\\\frac{1}{2}', '0.5')\n"
           "assert(ok == true and st == 'equal')\n"
           "ok, st = grpo.math_equal('3', '4')\n"
           "assert(ok == false and st == 'not_equal')\n"
           "ok, st = grpo.math_equal(nil, '4')\n"
           "assert(ok == false and st == 'no_pred')\n"
           "ok, st = grpo.math_equal(nil, '\\\\undefinedcommand{2}')\n" /* no answer, bad gold: skip */
           "assert(ok == false and st == 'no_gold')\n"
           "ok = grpo.math_equal('The answer is $\\\\boxed{28\\\\%}$.', '0.28', {extract='latex', gold_plain=true})\n"
           "assert(ok)\n"
           "ok = grpo.math_equal('0.333', '1/3', {float_rounding=3})\n"
           "assert(ok)\n"
           "ok = grpo.math_equal('0.333', '1/3', {float_rounding=4})\n"
           "assert(not ok)\n"
           "ok = grpo.math_equal('4, 10, -2', '10, 4, -2', {ordered_lists=true})\n"
           "assert(not ok)\n"
           "assert(grpo.math_equal('4, 10, -2', '10, 4, -2'))\n"
           "assert(grpo.math_extract('so $x = \\\\dfrac{1}{2}$.', {extract='all'}) == 'x = \\\\frac{1}{2}')\n"
           "assert(grpo.math_extract('no math', {extract='latex'}) == nil)");
    run(L, "assert(grpo.think_format('<think>a</think>b') == 1)\n"
           "assert(grpo.think_format('a</think>b') == 0)\n"
           "assert(grpo.think_format('a</think>b', {prefilled=true}) == 1)\n"
           "assert(grpo.think_format('<think>a</think>b', {answer_tags='required'}) == 0)\n"
           "assert(grpo.think_format('<think>\\nx\\n</think>\\n<answer>\\n```python\\nx\\n```\\n</answer>',"
           " {style='openr1', code_lang='python'}) == 1)\n"
           "assert(grpo.tag_count('<think>\\nx\\n</think>\\n') == 0.5)");
    run(L, "local r, t, n = grpo.lang_ratio('<think>hello 世界</think>', 'en')\n"
           "assert(math.abs(r - 1/3) < 1e-12 and t == 1 and n == 3)\n"
           "r, t, n = grpo.lang_ratio('<think>123</think>', 'en')\n"
           "assert(r == nil and t == 0 and n == 0)\n"
           "r = grpo.lang_ratio('<think>123</think>', 'en', {empty=0})\n"
           "assert(r == 0)");
    run(L, "assert(grpo.reasoning_steps('Step 1: a Step 2: b') > 0.6)\n"
           "assert(grpo.repetition_penalty('this this this this this', {ngram_size=2}) == -0.75)\n"
           "assert(grpo.repetition_penalty('x') == 0)\n"
           "local c = grpo.cosine_scaled(string.rep('a', 22), true, {max_len=100})\n"
           "assert(math.abs(c - 0.9426) < 1e-3)\n"
           "assert(math.abs(grpo.cosine_scaled(22, false, {max_len=100}) + 0.9426) < 1e-3)\n"
           "assert(grpo.cosine_scaled(200, true, {max_len=100}) == 0.5)\n" /* clamped (TRL) */
           "assert(grpo.cosine_scaled(200, true, {max_len=100, clamp=false}) == 1.0)\n"
           "assert(grpo.soft_overlong(90, 100, 20) == -0.5)\n"
           "assert(grpo.utf8_length('h\\u{e9}llo') == 5)");
    lua_close(L);
}

static void test_errors(void **state)
{
    (void)state;
    lua_State *L = new_state();
    run_error(L, "grpo.boxed(nil)", "bad argument #1 to 'boxed'");
    run_error(L, "grpo.math_equal('1', nil)", "bad argument #2 to 'math_equal'");
    run_error(L, "grpo.math_equal('1', '1', {extrct='latex'})", "math_equal: unknown option 'extrct'");
    run_error(L, "grpo.math_equal('1', '1', {extract='boxes'})", "opts.extract must be one of: none, latex, expr, all");
    run_error(L, "grpo.math_equal('1', '1', {strict=1})", "opts.strict must be a boolean");
    run_error(L, "grpo.math_equal('1', '1', {float_rounding=99})", "float_rounding must be in 0..30");
    run_error(L, "grpo.math_equal('1', '1', 5)", "opts must be a table");
    run_error(L, "grpo.think_format('x', {style='r2'})", "opts.style must be one of: r1, openr1");
    run_error(L, "grpo.think_format('x', {code_lang='python'})", "code_lang needs style");
    run_error(L, "grpo.think_format('x', {style='openr1', code_lang='py thon'})", "code_lang may only hold");
    run_error(L, "grpo.lang_ratio('x', 'klingon')", "unknown language code 'klingon'");
    run_error(L, "grpo.lang_ratio('x', 'en', {empty='zero'})", "opts.empty must be a number");
    run_error(L, "grpo.repetition_penalty('x', {max_penalty=1})", "max_penalty must be <= 0");
    run_error(L, "grpo.repetition_penalty('x', {ngram_size=0})", "ngram_size must be in 1..1000");
    run_error(L, "grpo.repetition_penalty('x', {language='fr'})", "opts.language must be one of: en, zh");
    run_error(L, "grpo.cosine_scaled({}, true)", "argument 1 must be the completion text or its length");
    run_error(L, "grpo.cosine_scaled(1, 'yes')", "bad argument #2 to 'cosine_scaled'");
    run_error(L, "grpo.cosine_scaled(1, true, {max_len=0})", "max_len must be > 0");
    run_error(L, "grpo.cosine_scaled(1, true, {clamp=1})", "opts.clamp must be a boolean");
    run_error(L, "grpo.soft_overlong(1, 10, 20)", "soft_punish_cache <= max_completion_len");
    run_error(L, "grpo.soft_overlong('a', 10, 2)", "bad argument #1 to 'soft_overlong'");
    /* the state is still usable after errors */
    run(L, "assert(grpo.boxed('\\\\boxed{1}') == '1')");
    lua_close(L);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_functions), cmocka_unit_test(test_errors)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
