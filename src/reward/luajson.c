/*
 * JSON <-> Lua values, for the sample table given to a reward function and
 * for grpo.json_encode/json_decode/http_post_json.
 *
 * JSON -> Lua: objects and arrays become tables (arrays 1-based), null
 * becomes nil (an array with nulls has holes), numbers that are integral
 * and exactly representable become Lua integers, others floats. Depth is
 * capped (cJSON itself caps parsing depth; we cap at 200 here too).
 * Lua -> JSON: nil -> null, booleans, numbers (NaN and infinities are
 * refused), strings, tables: a table whose keys are exactly 1..n (n >= 1)
 * is an array, any other table an object whose keys must be strings or
 * integers (written in decimal). An empty table is {}. Depth > 100 (which
 * also catches cycles) is refused.
 */
#include "reward/reward_internal.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static void push_json_depth(lua_State *L, const cJSON *v, int depth) {
    if (depth > 200) luaL_error(L, "JSON nested deeper than 200 levels");
    luaL_checkstack(L, 4, "JSON nesting");
    if (!v || cJSON_IsNull(v) || cJSON_IsInvalid(v)) {
        lua_pushnil(L);
    } else if (cJSON_IsBool(v)) {
        lua_pushboolean(L, cJSON_IsTrue(v));
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == floor(d) && fabs(d) <= 9007199254740992.0) lua_pushinteger(L, (lua_Integer)d);
        else lua_pushnumber(L, d);
    } else if (cJSON_IsString(v)) {
        lua_pushstring(L, v->valuestring ? v->valuestring : "");
    } else if (cJSON_IsArray(v)) {
        lua_createtable(L, cJSON_GetArraySize(v), 0);
        lua_Integer i = 0;
        for (const cJSON *it = v->child; it; it = it->next) {
            push_json_depth(L, it, depth + 1);
            lua_rawseti(L, -2, ++i);
        }
    } else if (cJSON_IsObject(v)) {
        lua_createtable(L, 0, cJSON_GetArraySize(v));
        for (const cJSON *it = v->child; it; it = it->next) {
            if (!it->string) continue;
            push_json_depth(L, it, depth + 1);
            lua_setfield(L, -2, it->string);
        }
    } else {
        lua_pushnil(L); /* raw values are not produced by the parser */
    }
}

void rh_push_json(lua_State *L, const cJSON *v) { push_json_depth(L, v, 0); }

/* Is the table at idx a non-empty sequence 1..n with no other keys? */
static int is_array(lua_State *L, int idx, lua_Integer *n_out) {
    lua_Integer n = 0, max = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1)) {
            lua_pop(L, 1);
            return 0;
        }
        lua_Integer k = lua_tointeger(L, -1);
        if (k < 1) {
            lua_pop(L, 1);
            return 0;
        }
        if (k > max) max = k;
        n++;
    }
    *n_out = n;
    return n > 0 && max == n;
}

static cJSON *to_json_depth(lua_State *L, int idx, int depth, char *err, size_t cap) {
    idx = lua_absindex(L, idx);
    if (depth > 100) {
        snprintf(err, cap, "value nested deeper than 100 levels (or a cycle)");
        return NULL;
    }
    if (!lua_checkstack(L, 4)) {
        snprintf(err, cap, "Lua stack exhausted");
        return NULL;
    }
    switch (lua_type(L, idx)) {
    case LUA_TNIL: return cJSON_CreateNull();
    case LUA_TBOOLEAN: return cJSON_CreateBool(lua_toboolean(L, idx));
    case LUA_TNUMBER: {
        double d = lua_tonumber(L, idx);
        if (!isfinite(d)) {
            snprintf(err, cap, "number %g has no JSON form", d);
            return NULL;
        }
        return cJSON_CreateNumber(d);
    }
    case LUA_TSTRING: return cJSON_CreateString(lua_tostring(L, idx));
    case LUA_TTABLE: {
        lua_Integer n = 0;
        if (is_array(L, idx, &n)) {
            cJSON *a = cJSON_CreateArray();
            for (lua_Integer i = 1; i <= n; i++) {
                lua_rawgeti(L, idx, i);
                cJSON *e = to_json_depth(L, -1, depth + 1, err, cap);
                lua_pop(L, 1);
                if (!e) {
                    cJSON_Delete(a);
                    return NULL;
                }
                cJSON_AddItemToArray(a, e);
            }
            return a;
        }
        cJSON *o = cJSON_CreateObject();
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            char key[64];
            const char *k;
            if (lua_type(L, -2) == LUA_TSTRING) {
                k = lua_tostring(L, -2);
            } else if (lua_isinteger(L, -2)) {
                snprintf(key, sizeof key, "%lld", (long long)lua_tointeger(L, -2));
                k = key;
            } else {
                snprintf(err, cap, "table key of type %s has no JSON form", luaL_typename(L, -2));
                lua_pop(L, 2);
                cJSON_Delete(o);
                return NULL;
            }
            cJSON *e = to_json_depth(L, -1, depth + 1, err, cap);
            lua_pop(L, 1);
            if (!e) {
                lua_pop(L, 1);
                cJSON_Delete(o);
                return NULL;
            }
            cJSON_AddItemToObject(o, k, e);
        }
        return o;
    }
    default:
        snprintf(err, cap, "a %s value has no JSON form", luaL_typename(L, idx));
        return NULL;
    }
}

cJSON *rh_to_json(lua_State *L, int idx, char *err, size_t err_cap) {
    err[0] = 0;
    return to_json_depth(L, idx, 0, err, err_cap);
}
