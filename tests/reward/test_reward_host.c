/*
 * The Lua reward host: specs, the pool, per-call limits, the restricted
 * standard library, error logging, declared columns and parameters, and
 * determinism across worker counts.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "reward/reward.h"
#include "test_common.h"

static char *g_dir;

static char *script(const char *name, const char *text) {
    char *p = base_path_join(g_dir, name);
    test_write_file(p, text, strlen(text));
    return p;
}

static cJSON *sample(const char *json) {
    cJSON *s = cJSON_Parse(json);
    assert_non_null(s);
    return s;
}

static int setup(void **st) {
    (void)st;
    g_dir = test_tmpdir();
    return 0;
}

static int teardown(void **st) {
    (void)st;
    test_rmdir(g_dir);
    free(g_dir);
    return 0;
}

static reward_pool *make_pool(const char *spec_text, int workers, const reward_limits *lim, const char *log) {
    reward_spec spec;
    assert_int_equal(reward_spec_parse(spec_text, &spec), BASE_OK);
    reward_pool *p = NULL;
    base_status st = reward_pool_create(&spec, workers, lim, log, &p);
    if (st) fprintf(stderr, "%s\n", base_err_msg());
    assert_int_equal(st, BASE_OK);
    reward_spec_free(&spec);
    return p;
}

/* ------------------------------------------------------------------------ */

static void test_spec_parse(void **st) {
    (void)st;
    reward_spec s;
    assert_int_equal(reward_spec_parse("rewards/boxed_math.lua:1.0, fmt=think_format:0.2 ,x/y.lua", &s), BASE_OK);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.fns[0].path, "rewards/boxed_math.lua");
    assert_string_equal(s.fns[0].name, "boxed_math");
    assert_true(s.fns[0].weight == 1.0);
    assert_string_equal(s.fns[1].name, "fmt");
    assert_true(s.fns[1].weight == 0.2);
    char *want = base_path_join(reward_builtin_dir(), "think_format.lua");
    assert_string_equal(s.fns[1].path, want);
    free(want);
    assert_string_equal(s.fns[2].name, "y");
    assert_true(s.fns[2].weight == 1.0);
    assert_null(s.fns[2].params);
    reward_spec_free(&s);

    assert_int_equal(reward_spec_parse("a.lua:-0.5{n=3; pen=-1.5;lang=zh;on=true;s=\"a,b\"}", &s), BASE_OK);
    assert_int_equal(s.n, 1);
    assert_true(s.fns[0].weight == -0.5);
    cJSON *p = s.fns[0].params;
    assert_int_equal(base_json_int(p, "n", 0, NULL), 3);
    assert_true(base_json_num(p, "pen", 0, NULL) == -1.5);
    assert_string_equal(base_json_str(p, "lang", ""), "zh");
    assert_true(base_json_bool(p, "on", 0, NULL));
    assert_string_equal(base_json_str(p, "s", ""), "a,b");
    reward_spec_free(&s);

    assert_int_equal(reward_spec_parse("a.lua:x", &s), BASE_ERR_PARSE);
    assert_non_null(strstr(base_err_msg(), "weight"));
    assert_int_equal(reward_spec_parse("a.lua,b/a.lua", &s), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "two functions named 'a'"));
    assert_int_equal(reward_spec_parse(" , ", &s), BASE_ERR_PARSE);
    assert_int_equal(reward_spec_parse("a.lua{k}", &s), BASE_ERR_PARSE);
    assert_int_equal(s.n, 0);
}

static void test_scores_parts_weights(void **st) {
    (void)st;
    char *a = script("len.lua", "return function(s) return #s.completion, {chars = #s.completion, half = 0.5} end\n");
    char *b = script("flag.lua", "return {columns = {'answer'}, score = function(s)\n"
                                 "  if s.answer == 'skip' then return nil end\n"
                                 "  return s.answer == s.completion and 1 or 0 end}\n");
    base_buf spec = {0};
    base_buf_printf(&spec, "%s:0.5,acc=%s:2", a, b);
    reward_pool *p = make_pool(spec.data, 2, NULL, NULL);
    assert_int_equal(reward_pool_n_funcs(p), 2);
    assert_string_equal(reward_pool_func_name(p, 0), "len");
    assert_string_equal(reward_pool_func_name(p, 1), "acc");
    assert_true(reward_pool_func_weight(p, 1) == 2.0);
    cJSON *s[3] = {sample("{\"completion\":\"42\",\"answer\":\"42\"}"),
                   sample("{\"completion\":\"abcd\",\"answer\":\"x\"}"),
                   sample("{\"completion\":\"\",\"answer\":\"skip\"}")};
    reward_scores sc = {0};
    assert_int_equal(reward_pool_score(p, (const cJSON *const *)s, 3, &sc), BASE_OK);
    assert_int_equal(sc.n, 3);
    assert_int_equal(sc.n_funcs, 2);
    assert_true(sc.total[0] == 0.5 * 2 + 2 * 1);
    assert_true(sc.total[1] == 0.5 * 4 + 2 * 0);
    assert_true(sc.total[2] == 0.0); /* nil is skipped, the other function counts */
    assert_int_equal(sc.status[2 * 2 + 1], REWARD_NIL);
    assert_true(isnan(sc.score[2 * 2 + 1]));
    assert_true(base_json_num(sc.parts[1 * 2 + 0], "chars", -1, NULL) == 4);
    assert_true(base_json_num(sc.parts[1 * 2 + 0], "half", -1, NULL) == 0.5);
    assert_null(sc.parts[1 * 2 + 1]);
    assert_int_equal(reward_pool_n_errors(p), 0);
    int nc;
    const char *const *cols = reward_required_columns(p, &nc);
    assert_int_equal(nc, 1);
    assert_string_equal(cols[0], "answer");
    cJSON *row = sample("{\"prompt\":\"q\"}");
    assert_int_equal(reward_check_row(p, row, "data.jsonl:7"), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "data.jsonl:7: missing column 'answer' needed by"));
    assert_non_null(strstr(base_err_msg(), "flag.lua"));
    cJSON_Delete(row);
    /* a second batch reuses the states and overwrites the result */
    assert_int_equal(reward_pool_score(p, (const cJSON *const *)s, 1, &sc), BASE_OK);
    assert_int_equal(sc.n, 1);
    reward_scores_free(&sc);
    reward_pool_destroy(p);
    /* every function nil: the total is NaN */
    p = make_pool(b, 1, NULL, NULL);
    assert_int_equal(reward_pool_score(p, (const cJSON *const *)&s[2], 1, &sc), BASE_OK);
    assert_true(isnan(sc.total[0]));
    reward_scores_free(&sc);
    reward_pool_destroy(p);
    for (int i = 0; i < 3; i++) cJSON_Delete(s[i]);
    base_buf_free(&spec);
    free(a);
    free(b);
}

/* Each bad behaviour gives nil and exactly one log line; the run goes on
 * and the state stays usable for the next sample. */
static void test_errors_and_limits(void **st) {
    (void)st;
    char *bad = script("bad.lua",
                       "local cases = {\n"
                       "  err = function() error('boom') end,\n"
                       "  loop = function() while true do end end,\n"
                       "  swallow = function() while true do pcall(function() while true do end end) end end,\n"
                       "  xswallow = function() while true do xpcall(function() while true do end end, function(e) return e end) end end,\n"
                       "  coswallow = function() while true do coroutine.resume(coroutine.create(function() while true do end end)) end end,\n"
                       "  loadswallow = function() while true do load(function() while true do end end) end end,\n"
                       "  mem = function() local t = {} for i = 1, 1e9 do t[i] = ('x'):rep(100) .. i end end,\n"
                       "  memswallow = function() while true do pcall(function() local t = {} for i = 1, 1e9 do t[i] = {i} end end) end end,\n"
                       "  rep = function() return #string.rep('x', 1e9) end,\n"
                       "  global = function() counter = 1 return 1 end,\n"
                       "  str = function() return 'one' end,\n"
                       "  nan = function() return 0/0 end,\n"
                       "  parts = function() return 1, {a = 'x'} end,\n"
                       "  gc = function() setmetatable({}, {__gc = function() while true do end end}) return 1 end,\n"
                       "  libwrite = function() string.rep = nil return 1 end,\n"
                       "}\n"
                       "return function(s)\n"
                       "  local f = cases[s.case]\n"
                       "  if f then return f() end\n"
                       "  return 1\n"
                       "end\n");
    const char *cases[] = {"err",  "loop",   "swallow", "xswallow", "coswallow", "loadswallow", "mem",     "memswallow",
                           "rep",  "global", "str",     "nan",      "parts",     "gc",          "libwrite"};
    const char *expect[] = {"boom",
                            "instruction budget exceeded",
                            "instruction budget exceeded",
                            "instruction budget exceeded",
                            "instruction budget exceeded",
                            "instruction budget exceeded",
                            "memory cap exceeded",
                            "memory cap exceeded",
                            "not enough memory",
                            "assignment to global 'counter'",
                            "returned a string",
                            "non-finite",
                            "parts must map names",
                            "__gc metamethods are not allowed",
                            "read-only"};
    int n = (int)(sizeof cases / sizeof cases[0]);
    char *log = base_path_join(g_dir, "errors.log");
    reward_limits lim;
    reward_limits_default(&lim);
    lim.instructions = 2 * 1000 * 1000;
    lim.memory_bytes = (size_t)16 << 20;
    reward_pool *p = make_pool(bad, 2, &lim, log);
    cJSON **s = base_xcalloc((size_t)n + 1, sizeof *s);
    for (int i = 0; i < n; i++) {
        char js[128];
        snprintf(js, sizeof js, "{\"id\":\"id-%s\",\"completion\":\"c\",\"case\":\"%s\"}", cases[i], cases[i]);
        s[i] = sample(js);
    }
    s[n] = sample("{\"completion\":\"ok\"}");
    reward_scores sc = {0};
    double t0 = base_now();
    assert_int_equal(reward_pool_score(p, (const cJSON *const *)s, n + 1, &sc), BASE_OK);
    assert_true(base_now() - t0 < 30);
    for (int i = 0; i < n; i++) {
        if (sc.status[i] != REWARD_ERROR) fprintf(stderr, "case %s: status %d\n", cases[i], sc.status[i]);
        assert_int_equal(sc.status[i], REWARD_ERROR);
        assert_true(isnan(sc.total[i]));
    }
    assert_int_equal(sc.status[n], REWARD_OK);
    assert_true(sc.total[n] == 1.0);
    assert_int_equal(reward_pool_n_errors(p), n);
    reward_pool_destroy(p);
    char *txt;
    size_t len;
    assert_int_equal(base_read_file(log, &txt, &len), BASE_OK);
    int lines = 0;
    for (size_t i = 0; i < len; i++) lines += txt[i] == '\n';
    assert_int_equal(lines, n);
    for (int i = 0; i < n; i++) {
        char key[64];
        snprintf(key, sizeof key, "sample id-%s: bad (", cases[i]);
        char *at = strstr(txt, key);
        if (!at) fprintf(stderr, "no log line for %s in:\n%s", cases[i], txt);
        assert_non_null(at);
        char *eol = strchr(at, '\n');
        *eol = 0;
        if (!strstr(at, expect[i])) fprintf(stderr, "case %s: '%s' lacks '%s'\n", cases[i], at, expect[i]);
        assert_non_null(strstr(at, expect[i]));
        *eol = '\n';
    }
    free(txt);
    reward_scores_free(&sc);
    for (int i = 0; i <= n; i++) cJSON_Delete(s[i]);
    free(s);
    free(log);
    free(bad);
}

/* Everything a script must not reach is absent or refused. */
static void test_restricted_stdlib(void **st) {
    (void)st;
    char *target = base_path_join(g_dir, "written.txt");
    char *readable = script("data.txt", "line1\nline2\n");
    base_buf code = {0};
    base_buf_printf(&code,
                    "local out = {}\n"
                    "local function check(name, ok) out[name] = ok and 1 or 0 end\n"
                    "return function(s)\n"
                    "  check('os.execute', os.execute == nil)\n"
                    "  check('os.exit', os.exit == nil)\n"
                    "  check('os.remove', os.remove == nil)\n"
                    "  check('os.getenv', os.getenv == nil)\n"
                    "  check('io.popen', io.popen == nil)\n"
                    "  check('io.write', io.write == nil)\n"
                    "  check('package', package == nil)\n"
                    "  check('debug', debug == nil)\n"
                    "  check('dofile', dofile == nil and loadfile == nil)\n"
                    "  check('require_c', not pcall(require, 'socket'))\n"
                    "  check('require_path', not pcall(require, '../etc/passwd'))\n"
                    "  check('io.open_w', not pcall(io.open, '%s', 'w'))\n"
                    "  check('io.open_a', not pcall(io.open, '%s', 'a+'))\n"
                    "  check('io.lines_stdin', not pcall(io.lines))\n"
                    "  local f = io.open('%s', 'r'); check('io.open_r', f and f:read('l') == 'line1'); f:close()\n"
                    "  check('f:write', not io.open('%s'):write('x'))\n"
                    "  check('load_binary', load(string.dump(function() return 1 end)) == nil)\n"
                    "  check('load_text', load('return 7')() == 7)\n"
                    "  check('string_mt', getmetatable('') == false)\n"
                    "  check('lib_readonly', not pcall(function() string.upper = nil end))\n"
                    "  check('rawset_G', not pcall(rawset, _G, 'x', 1))\n"
                    "  check('rawset_own', pcall(rawset, {}, 'x', 1))\n"
                    "  check('gc_stop', not pcall(collectgarbage, 'stop'))\n"
                    "  check('gc_count', type(collectgarbage('count')) == 'number')\n"
                    "  local n = 0; for k in pairs(string) do n = n + 1 end; check('pairs_lib', n > 10)\n"
                    "  check('math', math.floor(2.5) == 2 and math.random(1, 6) >= 1)\n"
                    "  check('coroutine', coroutine.wrap(function() coroutine.yield(3) end)() == 3)\n"
                    "  check('pcall_yield', coroutine.wrap(function() pcall(coroutine.yield, 4) end)() == 4)\n"
                    "  check('grpo', type(grpo.run_tests) == 'function' and type(grpo.json_encode) == 'function')\n"
                    "  check('grpo_readonly', not pcall(function() grpo.run_tests = print end))\n"
                    "  return 1, out\n"
                    "end\n",
                    target, target, readable, readable);
    char *path = script("stdlib.lua", code.data);
    reward_pool *p = make_pool(path, 1, NULL, NULL);
    cJSON *s = sample("{\"completion\":\"x\"}");
    reward_scores sc = {0};
    assert_int_equal(reward_pool_score(p, (const cJSON *const *)&s, 1, &sc), BASE_OK);
    assert_int_equal(sc.status[0], REWARD_OK);
    int checks = 0;
    for (cJSON *it = sc.parts[0]->child; it; it = it->next, checks++) {
        if (it->valuedouble != 1) fprintf(stderr, "restriction check failed: %s\n", it->string);
        assert_true(it->valuedouble == 1);
    }
    assert_int_equal(checks, 30);
    assert_false(base_file_exists(target));
    reward_scores_free(&sc);
    reward_pool_destroy(p);
    cJSON_Delete(s);
    base_buf_free(&code);
    free(path);
    free(readable);
    free(target);
}

static void test_params_columns_require(void **st) {
    (void)st;
    free(script("helper.lua", "local M = {}\nfunction M.twice(x) return 2 * x end\nreturn M\n"));
    char *path = script("param.lua", "local H = require('helper')\n"
                                     "local P = {n = 3, scale = 0.5, lang = 'en', strict = false}\n"
                                     "return {columns = {'gold', 'completion'}, params = P,\n"
                                     "  score = function(s) return H.twice(P.n) * P.scale + (P.strict and 100 or 0),\n"
                                     "    {lang_zh = P.lang == 'zh' and 1 or 0} end}\n");
    base_buf spec = {0};
    base_buf_printf(&spec, "%s{n=5;lang=zh;strict=true}", path);
    reward_pool *p = make_pool(spec.data, 1, NULL, NULL);
    int nc;
    const char *const *cols = reward_required_columns(p, &nc);
    assert_int_equal(nc, 1); /* completion is added by the pipeline */
    assert_string_equal(cols[0], "gold");
    cJSON *s = sample("{\"completion\":\"x\",\"gold\":1}");
    reward_scores sc = {0};
    assert_int_equal(reward_pool_score(p, (const cJSON *const *)&s, 1, &sc), BASE_OK);
    assert_true(sc.score[0] == 2 * 5 * 0.5 + 100);
    assert_true(base_json_num(sc.parts[0], "lang_zh", -1, NULL) == 1);
    reward_scores_free(&sc);
    reward_pool_destroy(p);
    /* unknown parameter, wrong type, params for a script without them */
    const char *bad_specs[] = {"{m=1}", "{n=abc}", "{strict=2}"};
    for (int i = 0; i < 3; i++) {
        base_buf_reset(&spec);
        base_buf_printf(&spec, "%s%s", path, bad_specs[i]);
        reward_spec rs;
        assert_int_equal(reward_spec_parse(spec.data, &rs), BASE_OK);
        assert_int_not_equal(reward_pool_create(&rs, 1, NULL, NULL, &p), BASE_OK);
        assert_null(p);
        assert_non_null(strstr(base_err_msg(), "param.lua"));
        reward_spec_free(&rs);
    }
    cJSON_Delete(s);
    base_buf_free(&spec);
    free(path);
}

static void test_load_errors(void **st) {
    (void)st;
    const char *texts[] = {"return function(s) return 1 end end", "return 42", "return {columns = {'a'}}",
                           "error('at load')", "while true do end"};
    const char *want[] = {"<eof> expected", "must return a function or a table", "needs one function field, 'score'",
                          "at load", "instruction budget"};
    reward_limits lim;
    reward_limits_default(&lim);
    lim.instructions = 100000;
    for (int i = 0; i < 5; i++) {
        char name[32];
        snprintf(name, sizeof name, "load%d.lua", i);
        char *path = script(name, texts[i]);
        reward_spec rs;
        assert_int_equal(reward_spec_parse(path, &rs), BASE_OK);
        reward_pool *p = NULL;
        assert_int_not_equal(reward_pool_create(&rs, 1, &lim, NULL, &p), BASE_OK);
        if (!strstr(base_err_msg(), want[i])) fprintf(stderr, "%s\n", base_err_msg());
        assert_non_null(strstr(base_err_msg(), want[i]));
        assert_non_null(strstr(base_err_msg(), name));
        reward_spec_free(&rs);
        free(path);
    }
    reward_spec rs;
    assert_int_equal(reward_spec_parse("/nonexistent/x.lua", &rs), BASE_OK);
    reward_pool *p = NULL;
    assert_int_not_equal(reward_pool_create(&rs, 1, NULL, NULL, &p), BASE_OK);
    assert_non_null(strstr(base_err_msg(), "/nonexistent/x.lua"));
    reward_spec_free(&rs);
}

/* Same scores with 1 and 3 workers, in any order, including scripts that
 * use math.random and make garbage. */
static void test_determinism(void **st) {
    (void)st;
    char *path = script("rand.lua", "return function(s)\n"
                                    "  local t = {}\n"
                                    "  for i = 1, #s.completion * 50 do t[i] = tostring(i) end\n"
                                    "  return math.random() + #s.completion + s.completion_tokens, {n = #t} end\n");
    const int N = 200;
    cJSON **s = base_xcalloc(N, sizeof *s);
    for (int i = 0; i < N; i++) {
        char js[200];
        snprintf(js, sizeof js, "{\"completion\":\"%.*s\",\"completion_tokens\":%d}", i % 37, "abcdefghijklmnopqrstuvwxyz0123456789xyz", i);
        s[i] = sample(js);
    }
    reward_scores a = {0}, b = {0};
    reward_pool *p1 = make_pool(path, 1, NULL, NULL);
    reward_pool *p3 = make_pool(path, 3, NULL, NULL);
    assert_int_equal(reward_pool_score(p1, (const cJSON *const *)s, N, &a), BASE_OK);
    assert_int_equal(reward_pool_score(p3, (const cJSON *const *)s, N, &b), BASE_OK);
    for (int i = 0; i < N; i++) {
        assert_true(a.total[i] == b.total[i]);
        assert_int_equal(a.status[i], REWARD_OK);
    }
    /* reversed order on the 3-worker pool: per-sample results unchanged */
    cJSON **r = base_xcalloc(N, sizeof *r);
    for (int i = 0; i < N; i++) r[i] = s[N - 1 - i];
    assert_int_equal(reward_pool_score(p3, (const cJSON *const *)r, N, &b), BASE_OK);
    for (int i = 0; i < N; i++) assert_true(a.total[i] == b.total[N - 1 - i]);
    /* the random part really varies between samples */
    int distinct = 0;
    for (int i = 1; i < N; i++) distinct += a.total[i] - floor(a.total[i]) != a.total[0] - floor(a.total[0]);
    assert_true(distinct > N / 2);
    reward_scores_free(&a);
    reward_scores_free(&b);
    reward_pool_destroy(p1);
    reward_pool_destroy(p3);
    for (int i = 0; i < N; i++) cJSON_Delete(s[i]);
    free(s);
    free(r);
    free(path);
}

static void test_json_helpers(void **st) {
    (void)st;
    char *path = script("json.lua",
                        "return function(s)\n"
                        "  local v = grpo.json_decode(s.raw)\n"
                        "  assert(v.a[2] == 2 and v.b.c == 'x' and math.type(v.n) == 'integer' and v.f == 1.5)\n"
                        "  local back = grpo.json_decode(grpo.json_encode(v))\n"
                        "  assert(back.a[3] == 3 and back.b.c == 'x')\n"
                        "  assert(grpo.json_encode({}) == '{}' and grpo.json_encode({1, 2}) == '[1,2]')\n"
                        "  local bad, msg = grpo.json_decode('{x')\n"
                        "  assert(bad == nil and msg:find('invalid JSON'))\n"
                        "  bad, msg = grpo.json_decode('[\"a\\\\u0000b\"]')\n"
                        "  assert(bad == nil and msg:find('U+0000', 1, true))\n"
                        "  assert(grpo.json_decode('[\"a\\\\\\\\u0000b\"]')[1] == 'a\\\\u0000b')\n"
                        "  assert(not pcall(grpo.json_encode, {f = print}))\n"
                        "  local cyc = {}; cyc.self = cyc\n"
                        "  assert(not pcall(grpo.json_encode, cyc))\n"
                        "  assert(s.nested.list[2] == 'b' and s.completion_tokens == 12)\n"
                        "  return 1 end\n");
    reward_pool *p = make_pool(path, 1, NULL, NULL);
    cJSON *s = sample("{\"completion\":\"c\",\"completion_tokens\":12,\"nested\":{\"list\":[\"a\",\"b\"]},"
                      "\"raw\":\"{\\\"a\\\":[1,2,3],\\\"b\\\":{\\\"c\\\":\\\"x\\\"},\\\"n\\\":7,\\\"f\\\":1.5}\"}");
    reward_scores sc = {0};
    assert_int_equal(reward_pool_score(p, (const cJSON *const *)&s, 1, &sc), BASE_OK);
    assert_int_equal(sc.status[0], REWARD_OK);
    assert_int_equal(reward_pool_n_errors(p), 0);
    reward_scores_free(&sc);
    reward_pool_destroy(p);
    cJSON_Delete(s);
    free(path);
}

/* score_group: one call per group of one prompt's completions, mixed with
 * per-sample functions; whole-call failures and bad entries; len_reward. */
static void test_group_scripts(void **st) {
    (void)st;
    /* rank of the completion's length within its group (0 = shortest) */
    char *a = script("rank.lua", "return {score_group = function(ss)\n"
                                 "  local out, parts = {}, {}\n"
                                 "  for i, s in ipairs(ss) do\n"
                                 "    local r = 0\n"
                                 "    for _, t in ipairs(ss) do if #t.completion < #s.completion then r = r + 1 end end\n"
                                 "    out[i] = r; parts[i] = {n = #ss}\n"
                                 "  end\n"
                                 "  if ss[1].completion == 'skip' then out[1] = nil end\n"
                                 "  return out, parts end}\n");
    char *b = script("one.lua", "return function(s) return 1 end\n");
    char *log = base_path_join(g_dir, "group_errors.log");
    base_buf spec = {0};
    base_buf_printf(&spec, "%s:2,%s:1", a, b);
    cJSON *s[6] = {sample("{\"id\":\"a\",\"completion\":\"aaa\"}"), sample("{\"id\":\"b\",\"completion\":\"x\"}"),
                   sample("{\"id\":\"c\",\"completion\":\"xx\"}"), sample("{\"id\":\"d\",\"completion\":\"skip\"}"),
                   sample("{\"id\":\"e\",\"completion\":\"yyyyyy\"}"), sample("{\"id\":\"f\",\"completion\":\"z\"}")};
    int64_t off[4] = {0, 3, 5, 6}; /* groups of 3, 2 and 1 */
    for (int workers = 1; workers <= 3; workers += 2) {
        reward_pool *p = make_pool(spec.data, workers, NULL, NULL);
        reward_scores sc = {0};
        assert_int_equal(reward_pool_score_groups(p, (const cJSON *const *)s, 6, off, 3, &sc), BASE_OK);
        const double rank[6] = {2, 0, 1, NAN, 1, 0}; /* d (nil) still counts as a length */
        for (int i = 0; i < 6; i++) {
            if (isnan(rank[i])) {
                assert_int_equal(sc.status[i * 2], REWARD_NIL);
                assert_true(sc.total[i] == 1.0);
            } else {
                assert_int_equal(sc.status[i * 2], REWARD_OK);
                assert_true(sc.score[i * 2] == rank[i]);
                assert_true(sc.total[i] == 2 * rank[i] + 1);
                assert_true(base_json_num(sc.parts[i * 2], "n", -1, NULL) == (i < 3 ? 3 : i < 5 ? 2 : 1));
            }
        }
        /* without groups every sample is a group of one: rank 0 */
        assert_int_equal(reward_pool_score(p, (const cJSON *const *)s, 3, &sc), BASE_OK);
        for (int i = 0; i < 3; i++) assert_true(sc.score[i * 2] == 0);
        /* offsets that do not cover the samples */
        int64_t bad[3] = {0, 4, 5};
        assert_int_equal(reward_pool_score_groups(p, (const cJSON *const *)s, 6, bad, 2, &sc), BASE_ERR_INVALID);
        reward_scores_free(&sc);
        reward_pool_destroy(p);
    }
    /* failures: a throw fails its whole group (one log line), too many
     * scores fail the group, a bad entry fails that sample only */
    char *c = script("bad.lua", "return {score_group = function(ss)\n"
                                "  if ss[1].completion == 'throw' then error('boom') end\n"
                                "  if ss[1].completion == 'many' then return {1, 2, 3} end\n"
                                "  return {1, 'no'} end}\n");
    reward_pool *p = make_pool(c, 1, NULL, log);
    cJSON *t[6] = {sample("{\"id\":1,\"completion\":\"throw\"}"), sample("{\"id\":2,\"completion\":\"x\"}"),
                   sample("{\"id\":3,\"completion\":\"many\"}"), sample("{\"id\":4,\"completion\":\"x\"}"),
                   sample("{\"id\":5,\"completion\":\"ok\"}"), sample("{\"id\":6,\"completion\":\"x\"}")};
    int64_t off2[4] = {0, 2, 4, 6};
    reward_scores sc = {0};
    assert_int_equal(reward_pool_score_groups(p, (const cJSON *const *)t, 6, off2, 3, &sc), BASE_OK);
    const int want[6] = {REWARD_ERROR, REWARD_ERROR, REWARD_ERROR, REWARD_ERROR, REWARD_OK, REWARD_ERROR};
    for (int i = 0; i < 6; i++) assert_int_equal(sc.status[i], want[i]);
    assert_true(sc.score[4] == 1.0 && isnan(sc.total[5]));
    assert_int_equal(reward_pool_n_errors(p), 3);
    reward_scores_free(&sc);
    reward_pool_destroy(p);
    char *text;
    size_t len;
    assert_int_equal(base_read_file(log, &text, &len), BASE_OK);
    assert_non_null(strstr(text, "sample 1 .. 2 (group of 2): bad"));
    assert_non_null(strstr(text, "boom"));
    assert_non_null(strstr(text, "returned 3 scores for a group of 2"));
    assert_non_null(strstr(text, "sample 6: bad"));
    assert_non_null(strstr(text, "returned a string, expected a number or nil"));
    free(text);
    /* the instruction budget of a group call is n times the per-sample one */
    char *d = script("spin.lua", "return {score_group = function(ss)\n"
                                 "  local x = 0\n"
                                 "  for i = 1, 300000 * #ss do x = x + i end\n"
                                 "  local out = {}\n"
                                 "  for i = 1, #ss do out[i] = 1 end\n"
                                 "  return out end}\n");
    reward_limits lim;
    reward_limits_default(&lim);
    lim.instructions = 1000000; /* 300k loop turns (2 instructions each) per sample: over 1M, under n x 1M */
    p = make_pool(d, 1, &lim, log);
    assert_int_equal(reward_pool_score_groups(p, (const cJSON *const *)t, 6, off2, 3, &sc), BASE_OK);
    for (int i = 0; i < 6; i++) assert_int_equal(sc.status[i], REWARD_OK);
    reward_scores_free(&sc);
    reward_pool_destroy(p);
    /* a table with both score and score_group, or neither, is refused */
    char *e = script("both.lua", "return {score = function() end, score_group = function() end}\n");
    reward_spec sp;
    assert_int_equal(reward_spec_parse(e, &sp), BASE_OK);
    assert_int_equal(reward_pool_create(&sp, 1, NULL, NULL, &p), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "'score' (per sample) or 'score_group'"));
    reward_spec_free(&sp);
    for (int i = 0; i < 6; i++) cJSON_Delete(s[i]), cJSON_Delete(t[i]);
    base_buf_free(&spec);
    free(a), free(b), free(c), free(d), free(e), free(log);
}

/* rewards/len_reward.lua against Kimi k1.5's formula (open-r1 len_reward)
 * computed here: lambda = 0.5 - (len - min) / (max - min) per group;
 * correct: lambda, wrong: min(0, lambda); all 0 when the lengths agree. */
static void test_len_reward(void **st) {
    (void)st;
    reward_pool *p = make_pool("len_reward", 1, NULL, NULL);
    const char *comp[7] = {"<think>a</think> \\boxed{4}",             /* right, 25 chars */
                           "<think>abcdefghij</think> \\boxed{4}",    /* right, 34 */
                           "<think>ab</think> \\boxed{5}",            /* wrong, 26 */
                           "<think>abcdefghijklmnop</think> \\boxed{5}", /* wrong, 40 */
                           "<think>é</think> \\boxed{4}",             /* right, 25 characters, 26 bytes */
                           "\\boxed{4}", "\\boxed{3}"};             /* a group of equal lengths */
    cJSON *s[7];
    double len[7];
    for (int i = 0; i < 7; i++) {
        s[i] = cJSON_CreateObject();
        cJSON_AddStringToObject(s[i], "completion", comp[i]);
        cJSON_AddStringToObject(s[i], "answer", "4");
        len[i] = 0;
        for (const unsigned char *c = (const unsigned char *)comp[i]; *c; c++) len[i] += (*c & 0xc0) != 0x80;
    }
    int64_t off[3] = {0, 5, 7};
    reward_scores sc = {0};
    assert_int_equal(reward_pool_score_groups(p, (const cJSON *const *)s, 7, off, 2, &sc), BASE_OK);
    const int correct[5] = {1, 1, 0, 0, 1};
    double lo = 1e9, hi = -1;
    for (int i = 0; i < 5; i++) lo = fmin(lo, len[i]), hi = fmax(hi, len[i]);
    assert_true(hi > lo);
    for (int i = 0; i < 5; i++) {
        double lambda = 0.5 - (len[i] - lo) / (hi - lo);
        double want = correct[i] ? lambda : fmin(0.0, lambda);
        assert_int_equal(sc.status[i], REWARD_OK);
        if (fabs(sc.score[i] - want) > 1e-12) fail_msg("len_reward sample %d: %.17g, want %.17g", i, sc.score[i], want);
        assert_true(base_json_num(sc.parts[i], "correct", -1, NULL) == correct[i]);
    }
    assert_true(sc.score[0] == 0.5 && sc.score[4] == 0.5); /* the shortest right answers */
    assert_true(sc.score[5] == 0.0 && sc.score[6] == 0.0);
    reward_scores_free(&sc);
    reward_pool_destroy(p);
    for (int i = 0; i < 7; i++) cJSON_Delete(s[i]);
}

/* A script's optional check() runs only when asked (reward_pool_check,
 * the pre-flight), under the per-call limits; an error there names the
 * script. A check that is not a function is a load error. The first error
 * of each function and the log path are kept for messages. */
static void test_check_and_first_error(void **st) {
    (void)st;
    char *ok = script("chk_ok.lua", "local n = 0\nreturn { score = function(s) return 1 end,\n"
                                    "  check = function() assert(grpo ~= nil) end }\n");
    char *bad = script("chk_bad.lua", "return { score = function(s) if s.completion == 'x' then error('no x') end\n"
                                      "  return nil end, check = function() error('server down', 0) end }\n");
    char *loop = script("chk_loop.lua", "return { score = function(s) return 1 end,\n"
                                        "  check = function() while true do end end }\n");
    char *notfn = script("chk_notfn.lua", "return { score = function(s) return 1 end, check = 1 }\n");
    char *log = base_path_join(g_dir, "chk.log");
    base_buf spec = {0};
    base_buf_printf(&spec, "%s,%s", ok, bad);
    reward_pool *p = make_pool(spec.data, 2, NULL, log);
    assert_int_equal(reward_pool_check(p), BASE_ERR_INVALID);
    char want[600];
    snprintf(want, sizeof want, "reward 'chk_bad' (%s): check failed: server down", bad);
    assert_string_equal(base_err_msg(), want);
    assert_string_equal(reward_pool_error_log(p), log);
    assert_null(reward_pool_first_error(p, 1));
    cJSON *s[3] = {sample("{\"id\":\"a\",\"completion\":\"y\"}"), sample("{\"id\":\"b\",\"completion\":\"x\"}"),
                   sample("{\"id\":\"c\",\"completion\":\"x\"}")};
    reward_scores sc = {0};
    assert_int_equal(reward_pool_score(p, (const cJSON *const *)s, 3, &sc), BASE_OK);
    assert_int_equal(sc.status[0 * 2 + 1], REWARD_NIL); /* nil: not an error */
    assert_int_equal(sc.status[1 * 2 + 1], REWARD_ERROR);
    assert_int_equal(reward_pool_n_errors(p), 2);
    assert_null(reward_pool_first_error(p, 0));
    char *first = reward_pool_first_error(p, 1);
    assert_non_null(first);
    if (strncmp(first, "sample b: ", 10) && strncmp(first, "sample c: ", 10)) fail_msg("first error: %s", first);
    assert_non_null(strstr(first, "no x"));
    free(first);
    reward_scores_free(&sc);
    reward_pool_destroy(p);
    base_buf_reset(&spec);
    base_buf_printf(&spec, "%s", ok);
    p = make_pool(spec.data, 1, NULL, NULL);
    assert_int_equal(reward_pool_check(p), BASE_OK);
    assert_null(reward_pool_error_log(p));
    reward_pool_destroy(p);
    reward_limits lim;
    reward_limits_default(&lim);
    lim.instructions = 100000;
    p = make_pool(loop, 1, &lim, NULL);
    assert_int_equal(reward_pool_check(p), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "check failed: instruction budget exceeded"));
    reward_pool_destroy(p);
    reward_spec rs;
    assert_int_equal(reward_spec_parse(notfn, &rs), BASE_OK);
    assert_int_not_equal(reward_pool_create(&rs, 1, NULL, NULL, &p), BASE_OK);
    assert_non_null(strstr(base_err_msg(), "'check' must be a function"));
    reward_spec_free(&rs);
    for (int i = 0; i < 3; i++) cJSON_Delete(s[i]);
    base_buf_free(&spec);
    free(ok), free(bad), free(loop), free(notfn), free(log);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group_scripts),
        cmocka_unit_test(test_len_reward),
        cmocka_unit_test(test_spec_parse),
        cmocka_unit_test(test_scores_parts_weights),
        cmocka_unit_test(test_errors_and_limits),
        cmocka_unit_test(test_restricted_stdlib),
        cmocka_unit_test(test_params_columns_require),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_json_helpers),
        cmocka_unit_test(test_check_and_first_error),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
