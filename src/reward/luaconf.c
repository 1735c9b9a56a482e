/*
 * Configuration files (recipes) in the reward scripts' sandbox: one fresh
 * RH_CONFIG state per file, the chunk and the caller's conversion of its
 * result in one protected call under the limits. See reward.h.
 */
#include "reward/reward_internal.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

/* What a configuration file calls instead of a function it may not use. */
static int rh_forbidden(lua_State *L) {
    return luaL_error(L, "%s is not available in recipes: a recipe is configuration (no processes, no file "
                      "writes; io.open reads files)", lua_tostring(L, lua_upvalueindex(1)));
}

void rh_forbid(lua_State *L, int t, const char *lib, const char *name) {
    lua_pushfstring(L, "%s%s%s", lib ? lib : "", lib ? "." : "", name);
    lua_pushcclosure(L, rh_forbidden, 1);
    lua_setfield(L, t, name);
}

typedef struct {
    const char *src;
    size_t len;
    const char *chunkname;
    reward_config_fn fn;
    void *ud;
    base_status fn_status; /* fn's result once it returned */
} config_ctx;

static int config_protected(lua_State *L) {
    config_ctx *c = lua_touserdata(L, 1);
    lua_pushfstring(L, "@%s", c->chunkname);
    if (luaL_loadbufferx(L, c->src, c->len, lua_tostring(L, -1), "t") != LUA_OK) return lua_error(L);
    /* the chunk's own globals, reading through to the (frozen) library */
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushglobaltable(L);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    lua_setupvalue(L, -2, 1);
    lua_call(L, 0, 1);
    c->fn_status = c->fn(L, c->ud);
    return 0;
}

base_status reward_lua_run_config(const char *src, size_t len, const char *chunkname, const char *dir,
                                  const reward_limits *lim, reward_config_fn fn, void *ud) {
    const char *dirs[1] = {dir};
    rh_state *s = rh_open_profile(lim, dirs, dir ? 1 : 0, RH_CONFIG);
    lua_State *L = s->L;
    config_ctx c = {src, len, chunkname, fn, ud, BASE_OK};
    rh_begin_call(s);
    lua_pushcfunction(L, config_protected);
    lua_pushlightuserdata(L, &c);
    int st = lua_pcall(L, 1, 0, 0);
    base_status r = BASE_OK;
    if (st != LUA_OK || s->killed) {
        const char *at = s->where[0] ? s->where : chunkname;
        if (s->killed == RH_KILL_MEMORY || st == LUA_ERRMEM)
            r = base_err_set(BASE_ERR_PARSE, "%s: memory cap exceeded (%d MiB)", at, (int)(s->limit >> 20));
        else if (s->killed == RH_KILL_BUDGET)
            r = base_err_set(BASE_ERR_PARSE, "%s: instruction budget exceeded (%lld instructions)", at,
                             (long long)s->budget);
        else if (lua_type(L, -1) == LUA_TSTRING)
            r = base_err_set(BASE_ERR_PARSE, "%s", lua_tostring(L, -1));
        else
            r = base_err_set(BASE_ERR_PARSE, "%s: error object is a %s value", chunkname, luaL_typename(L, -1));
    } else {
        r = c.fn_status;
    }
    rh_close(s);
    return r;
}
