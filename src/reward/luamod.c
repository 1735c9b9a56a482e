/*
 * The `grpo` Lua module: helpers in C that reward scripts call.
 *   grpo.run_tests(code, tests [, opts]) -> passed, total, status, message
 *   grpo.http_post_json(url, body [, opts]) -> value, http_code | nil, message
 *   grpo.json_encode(value) -> string      grpo.json_decode(text) -> value | nil, message
 * plus the text helpers of src/reward/rules/ (registered by
 * reward_rules_register). docs/rewards.md documents each one.
 */
#include "reward/reward_internal.h"

#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "reward/rules/rules.h"


/* opts.key as a number, or dflt */
static double opt_num(lua_State *L, int opts, const char *key, double dflt) {
    if (!opts) return dflt;
    int t = lua_getfield(L, opts, key);
    double v = dflt;
    if (t == LUA_TNUMBER) v = lua_tonumber(L, -1);
    else if (t != LUA_TNIL) luaL_error(L, "option '%s' must be a number", key);
    lua_pop(L, 1);
    return v;
}

/* Join a string or a list of strings with newlines into a Lua string left
 * on the stack; returns it (or NULL and pushes nothing when nil). */
static const char *opt_text(lua_State *L, int opts, const char *key) {
    if (!opts) return NULL;
    int t = lua_getfield(L, opts, key);
    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        return NULL;
    }
    if (t == LUA_TSTRING) return lua_tostring(L, -1);
    if (t != LUA_TTABLE) luaL_error(L, "option '%s' must be a string or a list of strings", key);
    luaL_Buffer b;
    int tbl = lua_gettop(L);
    luaL_buffinit(L, &b);
    lua_Integer n = luaL_len(L, tbl);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, tbl, i) != LUA_TSTRING) luaL_error(L, "option '%s'[%d] is not a string", key, (int)i);
        luaL_addvalue(&b);
        luaL_addchar(&b, '\n');
    }
    luaL_pushresult(&b);
    lua_remove(L, tbl);
    return lua_tostring(L, -1);
}

static int l_run_tests(lua_State *L) {
    const char *code = luaL_checkstring(L, 1);
    int opts = lua_istable(L, 3) ? 3 : 0;
    if (!lua_isnoneornil(L, 3) && !opts) return luaL_argerror(L, 3, "options table expected");
    reward_sandbox_limits lim = rh_of(L)->limits->sandbox;
    const char *setup = NULL;
    /* options first: they may raise, and nothing is allocated yet */
    lim.timeout_s = opt_num(L, opts, "timeout", lim.timeout_s);
    lim.cpu_s = opt_num(L, opts, "cpu", lim.cpu_s);
    lim.memory_bytes = (size_t)(opt_num(L, opts, "memory_mb", (double)lim.memory_bytes / 1048576.0) * 1048576.0);
    lim.output_bytes = (size_t)(opt_num(L, opts, "output_kb", (double)lim.output_bytes / 1024.0) * 1024.0);
    lim.file_bytes = (size_t)(opt_num(L, opts, "file_mb", (double)lim.file_bytes / 1048576.0) * 1048576.0);
    lim.disk_bytes = (size_t)(opt_num(L, opts, "disk_mb", (double)lim.disk_bytes / 1048576.0) * 1048576.0);
    lim.nproc = (int)opt_num(L, opts, "nproc", lim.nproc);
    lim.nofile = (int)opt_num(L, opts, "nofile", lim.nofile);
    if (opts) {
        if (lua_getfield(L, opts, "python") == LUA_TSTRING) lim.python = lua_tostring(L, -1);
        lua_pop(L, 1); /* the options table keeps it alive */
        if (lua_getfield(L, opts, "namespaces") == LUA_TBOOLEAN) lim.namespaces = lua_toboolean(L, -1);
        lua_pop(L, 1);
        setup = opt_text(L, opts, "setup"); /* stays on the stack */
    }
    int n = 0;
    const char **tests = NULL;
    if (lua_type(L, 2) == LUA_TSTRING) {
        n = 1;
        tests = malloc(sizeof *tests);
        if (!tests) return luaL_error(L, "out of memory");
        tests[0] = lua_tostring(L, 2);
    } else if (lua_istable(L, 2)) {
        lua_Integer len = luaL_len(L, 2);
        if (len < 0 || len > 100000) return luaL_argerror(L, 2, "between 0 and 100000 tests");
        n = (int)len;
        for (int i = 1; i <= n; i++) {
            if (lua_rawgeti(L, 2, i) != LUA_TSTRING) return luaL_error(L, "tests[%d] is not a string", i);
            lua_pop(L, 1); /* the table keeps the string alive */
        }
        tests = malloc(sizeof *tests * (size_t)(n > 0 ? n : 1));
        if (!tests) return luaL_error(L, "out of memory");
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, 2, i);
            tests[i - 1] = lua_tostring(L, -1);
            lua_pop(L, 1);
        }
    } else {
        return luaL_argerror(L, 2, "a test string or a list of test strings expected");
    }
    reward_run_result r;
    base_status st = reward_sandbox_run_tests(code, tests, n, setup, &lim, &r);
    free(tests);
    if (st != BASE_OK) return luaL_error(L, "grpo.run_tests: %s", base_err_msg());
    lua_pushinteger(L, r.passed);
    lua_pushinteger(L, r.total);
    lua_pushstring(L, reward_run_status_str(r.status));
    lua_pushstring(L, r.message);
    return 4;
}

static int l_json_encode(lua_State *L) {
    luaL_checkany(L, 1);
    char err[200];
    cJSON *j = rh_to_json(L, 1, err, sizeof err);
    if (!j) return luaL_error(L, "grpo.json_encode: %s", err);
    char *s = base_json_print(j, 0);
    cJSON_Delete(j);
    lua_pushstring(L, s);
    free(s);
    return 1;
}

typedef struct {
    cJSON *j;
} json_box;

static int json_box_gc(lua_State *L) {
    json_box *b = lua_touserdata(L, 1);
    cJSON_Delete(b->j);
    b->j = NULL;
    return 0;
}

/* Push the parsed JSON; the cJSON tree sits in a userdata with __gc so a
 * Lua error while converting (memory cap) does not leak it. */
static int push_parsed(lua_State *L, const char *text, size_t len) {
    json_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->j = NULL;
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, json_box_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    size_t nul = base_json_find_nul(text, len);
    if (nul < len) { /* cJSON would cut the string there */
        lua_pushnil(L);
        lua_pushfstring(L, "invalid JSON at byte %d: U+0000 (NUL) in a string is not supported", (int)nul);
        return 2;
    }
    const char *end = NULL;
    b->j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    int trailing = 0;
    if (b->j && end) {
        while (end < text + len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t')) end++;
        trailing = end < text + len;
    }
    if (!b->j || trailing) {
        size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        lua_pushnil(L);
        lua_pushfstring(L, "invalid JSON at byte %d", (int)off);
        return 2;
    }
    rh_push_json(L, b->j);
    cJSON_Delete(b->j);
    b->j = NULL;
    return 1;
}

static int l_json_decode(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    return push_parsed(L, s, len);
}

static int l_http_post_json(lua_State *L) {
    const char *url = luaL_checkstring(L, 1);
    luaL_checkany(L, 2);
    int opts = lua_istable(L, 3) ? 3 : 0;
    if (!lua_isnoneornil(L, 3) && !opts) return luaL_argerror(L, 3, "options table expected");
    const char *body;
    if (lua_type(L, 2) == LUA_TSTRING) {
        body = lua_tostring(L, 2);
    } else {
        lua_pushcfunction(L, l_json_encode);
        lua_pushvalue(L, 2);
        lua_call(L, 1, 1);
        body = lua_tostring(L, -1);
    }
    reward_http_opts o;
    reward_http_opts_default(&o);
    o.timeout_s = opt_num(L, opts, "timeout", o.timeout_s);
    o.retries = (int)opt_num(L, opts, "retries", o.retries);
    o.backoff_s = opt_num(L, opts, "backoff", o.backoff_s);
    o.max_bytes = (size_t)opt_num(L, opts, "max_bytes", (double)o.max_bytes);
    const char *hdrs[32];
    if (opts && lua_getfield(L, opts, "headers") == LUA_TTABLE) {
        int t = lua_gettop(L);
        lua_Integer n = luaL_len(L, t);
        if (n > 32) return luaL_error(L, "at most 32 headers");
        for (lua_Integer i = 1; i <= n; i++) {
            if (lua_rawgeti(L, t, i) != LUA_TSTRING) return luaL_error(L, "headers[%d] is not a string", (int)i);
            hdrs[o.n_headers++] = lua_tostring(L, -1);
            lua_pop(L, 1); /* the table keeps it */
        }
        o.headers = hdrs;
    } else if (opts) {
        lua_pop(L, 1);
    }
    char *resp = NULL;
    long code = 0;
    if (reward_http_post_json(url, body, &o, &resp, &code) != BASE_OK) {
        lua_pushnil(L);
        lua_pushstring(L, base_err_msg());
        return 2;
    }
    /* copy into Lua before parsing so the C buffer can be freed at once */
    lua_pushstring(L, resp);
    free(resp);
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    int nret = push_parsed(L, text, len);
    if (nret == 2) {
        lua_pushfstring(L, "POST %s: response is not JSON (%s)", url, lua_tostring(L, -1));
        lua_replace(L, -2);
        return 2;
    }
    lua_pushinteger(L, code);
    return 2;
}

void rh_push_grpo_module(lua_State *L) {
    static const luaL_Reg fns[] = {{"run_tests", l_run_tests},
                                   {"http_post_json", l_http_post_json},
                                   {"json_encode", l_json_encode},
                                   {"json_decode", l_json_decode},
                                   {NULL, NULL}};
    luaL_newlib(L, fns);
    reward_rules_register(L); /* the text helpers, into the same table */
}
