/*
 * Reward scripts in a worker's lua_State (luahost.c builds the sandboxed
 * state): loading a script's table (score or score_group, columns, params)
 * and calling it on samples under the instruction budget and memory cap,
 * with its result converted to a score and parts.
 */
#include "reward/reward_internal.h"
#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------------ */
/* Loading a script                                                         */

typedef struct {
    const reward_fn_spec *f;
    char ***cols;
    int *n_cols;
    int is_group; /* out: the table gave score_group */
    char err[512];
} load_ctx;

static int rh_load_protected(lua_State *L) {
    load_ctx *c = lua_touserdata(L, 1);
    const char *path = c->f->path;
    if (luaL_loadfilex(L, path, "t") != LUA_OK) return lua_error(L);
    lua_newtable(L); /* the script's globals */
    lua_createtable(L, 0, 1);
    lua_pushglobaltable(L);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    int env = lua_gettop(L);
    lua_pushvalue(L, env);
    lua_setupvalue(L, env - 1, 1);
    lua_pushvalue(L, env - 1);
    lua_call(L, 0, 1);
    int ret = lua_gettop(L);
    if (lua_type(L, ret) == LUA_TTABLE) {
        int has_score = lua_getfield(L, ret, "score") != LUA_TNIL;
        int has_group = lua_getfield(L, ret, "score_group") != LUA_TNIL;
        if (has_score == has_group)
            return luaL_error(L, "%s: the returned table needs one function field, 'score' (per sample) or "
                              "'score_group' (per group of completions of one prompt)", path);
        c->is_group = has_group;
        if (!lua_isfunction(L, has_group ? -1 : -2))
            return luaL_error(L, "%s: '%s' must be a function", path, has_group ? "score_group" : "score");
        lua_remove(L, has_group ? -2 : -1);
        int fn = lua_gettop(L);
        if (lua_getfield(L, ret, "columns") != LUA_TNIL) {
            if (!lua_istable(L, -1)) return luaL_error(L, "%s: 'columns' must be a list of strings", path);
            lua_Integer n = luaL_len(L, -1);
            for (lua_Integer i = 1; i <= n; i++) {
                if (lua_rawgeti(L, -1, i) != LUA_TSTRING)
                    return luaL_error(L, "%s: columns[%d] is not a string", path, (int)i);
                if (c->cols) {
                    *c->cols = base_xrealloc(*c->cols, sizeof(char *) * (size_t)(*c->n_cols + 1));
                    (*c->cols)[(*c->n_cols)++] = base_xstrdup(lua_tostring(L, -1));
                }
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
        int ptype = lua_getfield(L, ret, "params");
        if (ptype != LUA_TNIL && ptype != LUA_TTABLE) return luaL_error(L, "%s: 'params' must be a table", path);
        const cJSON *ov = c->f->params;
        if (ov && cJSON_GetArraySize(ov) > 0 && ptype != LUA_TTABLE)
            return luaL_error(L, "%s: the spec sets parameters but the script declares no 'params'", path);
        for (const cJSON *it = ov ? ov->child : NULL; it; it = it->next) {
            int t = lua_getfield(L, -1, it->string);
            lua_pop(L, 1);
            if (t == LUA_TNIL) return luaL_error(L, "%s: unknown parameter '%s'", path, it->string);
            if (cJSON_IsNumber(it) && t == LUA_TNUMBER) {
                double d = it->valuedouble;
                if (d == floor(d) && fabs(d) < 9e15) lua_pushinteger(L, (lua_Integer)d);
                else lua_pushnumber(L, d);
            } else if (cJSON_IsString(it) && t == LUA_TSTRING) {
                lua_pushstring(L, it->valuestring);
            } else if (cJSON_IsBool(it) && t == LUA_TBOOLEAN) {
                lua_pushboolean(L, cJSON_IsTrue(it));
            } else {
                return luaL_error(L, "%s: parameter '%s' must be a %s", path, it->string, lua_typename(L, t));
            }
            lua_setfield(L, -2, it->string);
        }
        lua_pop(L, 1);
        int ctype = lua_getfield(L, ret, "check");
        if (ctype != LUA_TNIL && ctype != LUA_TFUNCTION) return luaL_error(L, "%s: 'check' must be a function", path);
        int check = lua_gettop(L);
        lua_pushvalue(L, fn);
        lua_pushvalue(L, check);
    } else if (lua_type(L, ret) == LUA_TFUNCTION) {
        if (c->f->params && cJSON_GetArraySize(c->f->params) > 0)
            return luaL_error(L, "%s: the spec sets parameters but the script declares no 'params'", path);
        lua_pushvalue(L, ret);
        lua_pushnil(L);
    } else {
        return luaL_error(L, "%s: must return a function or a table {score = function, ...} (or score_group), got %s", path,
                          luaL_typename(L, ret));
    }
    lua_pushglobaltable(L);
    rh_freeze_env(L, env, -1);
    lua_pop(L, 1);
    return 2; /* the score function, the check function or nil */
}

base_status rh_load(rh_state *s, const reward_fn_spec *f, char ***cols, int *n_cols) {
    lua_State *L = s->L;
    lua_settop(L, 0);
    rh_begin_call(s);
    load_ctx c = {f, cols, n_cols, 0, {0}};
    lua_pushcfunction(L, rh_load_protected);
    lua_pushlightuserdata(L, &c);
    int st = lua_pcall(L, 1, 2, 0);
    if (st != LUA_OK) {
        rh_errmsg(L, -1, c.err, sizeof c.err);
        lua_settop(L, 0);
        base_status bs = st == LUA_ERRSYNTAX || st == LUA_ERRFILE ? BASE_ERR_PARSE : BASE_ERR_INVALID;
        if (strstr(c.err, f->path)) return base_err_set(bs, "reward script %s", c.err);
        return base_err_set(bs, "reward script %s: %s", f->path, c.err);
    }
    s->fn_ref = base_xrealloc(s->fn_ref, sizeof(int) * (size_t)(s->n_funcs + 1));
    s->fn_group = base_xrealloc(s->fn_group, (size_t)(s->n_funcs + 1));
    s->fn_check = base_xrealloc(s->fn_check, sizeof(int) * (size_t)(s->n_funcs + 1));
    s->fn_group[s->n_funcs] = (uint8_t)c.is_group;
    s->fn_check[s->n_funcs] = lua_isfunction(L, -1) ? luaL_ref(L, LUA_REGISTRYINDEX) : (lua_pop(L, 1), LUA_NOREF);
    s->fn_ref[s->n_funcs++] = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT);
    return BASE_OK;
}

/* ------------------------------------------------------------------------ */
/* Calling                                                                  */

typedef struct {
    const cJSON *const *samples; /* one sample, or a group's (pushed as a list) */
    int n, group;
    int ref;
} call_ctx;

static int rh_call_protected(lua_State *L) {
    call_ctx *c = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
    if (c->group) {
        lua_createtable(L, c->n, 0);
        for (int i = 0; i < c->n; i++) {
            rh_push_json(L, c->samples[i]);
            lua_rawseti(L, -2, i + 1);
        }
    } else {
        rh_push_json(L, c->samples[0]);
    }
    lua_call(L, 1, 2);
    return 2;
}

/* Reseed math.random and run function f on c under the limits. LUA_OK
 * leaves the two results at stack 1 and 2; otherwise err is set and the
 * stack is empty. */
static int rh_invoke(rh_state *s, int f, call_ctx *c, uint64_t seed, char *err, size_t err_cap) {
    lua_State *L = s->L;
    lua_settop(L, 0);
    /* a clean heap each call: the memory cap then means the same thing on
     * every worker whatever it ran before */
    lua_gc(L, LUA_GCCOLLECT);
    rh_begin_call(s);
    s->budget = s->limits->instructions * (c->n > 1 ? c->n : 1);
    lua_getfield(L, LUA_REGISTRYINDEX, RH_SEED);
    lua_pushinteger(L, (lua_Integer)(seed >> 1));
    lua_pushinteger(L, f);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        rh_errmsg(L, -1, err, err_cap);
        lua_settop(L, 0);
        return LUA_ERRRUN;
    }
    lua_pushcfunction(L, rh_call_protected);
    lua_pushlightuserdata(L, c);
    int st = lua_pcall(L, 1, 2, 0);
    if (st != LUA_OK || s->killed) {
        rh_errmsg(L, -1, err, err_cap);
        lua_settop(L, 0);
        return st != LUA_OK ? st : LUA_ERRRUN;
    }
    return LUA_OK;
}

static int rh_check_protected(lua_State *L) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, *(int *)lua_touserdata(L, 1));
    lua_call(L, 0, 0);
    return 0;
}

int rh_check(rh_state *s, int f, char *err, size_t err_cap) {
    err[0] = 0;
    if (s->fn_check[f] == LUA_NOREF) return 0;
    lua_State *L = s->L;
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT);
    rh_begin_call(s);
    int ref = s->fn_check[f];
    lua_pushcfunction(L, rh_check_protected);
    lua_pushlightuserdata(L, &ref);
    int st = lua_pcall(L, 1, 0, 0);
    if (st != LUA_OK || s->killed) {
        rh_errmsg(L, -1, err, err_cap);
        lua_settop(L, 0);
        return -1;
    }
    lua_settop(L, 0);
    return 0;
}

/* A score (number or nil) at idx and its parts at pidx (nil or a table of
 * named finite numbers): REWARD_OK / NIL / ERROR (message in err). */
static int rh_take(lua_State *L, int idx, int pidx, double *score, cJSON **parts, char *err, size_t err_cap) {
    *score = NAN;
    *parts = NULL;
    if (lua_isnil(L, idx)) return REWARD_NIL;
    if (lua_type(L, idx) != LUA_TNUMBER) {
        snprintf(err, err_cap, "returned a %s, expected a number or nil", luaL_typename(L, idx));
        return REWARD_ERROR;
    }
    double v = lua_tonumber(L, idx);
    if (!isfinite(v)) {
        snprintf(err, err_cap, "returned a non-finite score (%g)", v);
        return REWARD_ERROR;
    }
    if (!lua_isnil(L, pidx)) {
        if (!lua_istable(L, pidx)) {
            snprintf(err, err_cap, "parts must be a table of named numbers, got a %s", luaL_typename(L, pidx));
            return REWARD_ERROR;
        }
        pidx = lua_absindex(L, pidx);
        cJSON *o = cJSON_CreateObject();
        lua_pushnil(L);
        while (lua_next(L, pidx)) {
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TNUMBER || !isfinite(lua_tonumber(L, -1))) {
                snprintf(err, err_cap, "parts must map names to finite numbers (bad entry of type %s = %s)",
                         luaL_typename(L, -2), luaL_typename(L, -1));
                lua_pop(L, 2);
                cJSON_Delete(o);
                return REWARD_ERROR;
            }
            const char *key = lua_tostring(L, -2);
            if (!strcmp(key, "std") || !strcmp(key, "scored")) { /* rewards/NAME/std, /scored are the trainer's */
                snprintf(err, err_cap, "part '%s' is a reserved name (grpo logs rewards/NAME/%s itself): rename it",
                         key, key);
                lua_pop(L, 2);
                cJSON_Delete(o);
                return REWARD_ERROR;
            }
            cJSON_AddNumberToObject(o, key, lua_tonumber(L, -1));
            lua_pop(L, 1);
        }
        *parts = o;
    }
    *score = v;
    return REWARD_OK;
}

int rh_call(rh_state *s, int f, const cJSON *sample, uint64_t seed, double *score, cJSON **parts, char *err,
            size_t err_cap) {
    *score = NAN;
    *parts = NULL;
    err[0] = 0;
    call_ctx c = {&sample, 1, 0, s->fn_ref[f]};
    if (rh_invoke(s, f, &c, seed, err, err_cap) != LUA_OK) return REWARD_ERROR;
    int rc = rh_take(s->L, 1, 2, score, parts, err, err_cap);
    lua_settop(s->L, 0);
    return rc;
}

void rh_call_group(rh_state *s, int f, const cJSON *const *samples, int n, uint64_t seed, double *score,
                   cJSON **parts, uint8_t *status, char *err, char *errs, size_t err_cap) {
    lua_State *L = s->L;
    err[0] = 0;
    for (int i = 0; i < n; i++) score[i] = NAN, parts[i] = NULL, status[i] = REWARD_ERROR, errs[i * err_cap] = 0;
    call_ctx c = {samples, n, 1, s->fn_ref[f]};
    if (rh_invoke(s, f, &c, seed, err, err_cap) != LUA_OK) return;
    if (!lua_istable(L, 1)) {
        snprintf(err, err_cap, "score_group returned a %s, expected a list of %d scores", luaL_typename(L, 1), n);
    } else if (luaL_len(L, 1) > n) {
        snprintf(err, err_cap, "score_group returned %lld scores for a group of %d", (long long)luaL_len(L, 1), n);
    } else if (!lua_isnil(L, 2) && !lua_istable(L, 2)) {
        snprintf(err, err_cap, "score_group's parts must be a list of tables, got a %s", luaL_typename(L, 2));
    } else {
        for (int i = 0; i < n; i++) {
            lua_geti(L, 1, i + 1);
            if (lua_istable(L, 2)) lua_geti(L, 2, i + 1);
            else lua_pushnil(L);
            status[i] = (uint8_t)rh_take(L, -2, -1, &score[i], &parts[i], errs + (size_t)i * err_cap, err_cap);
            lua_pop(L, 2);
        }
    }
    lua_settop(L, 0);
}
