/*
 * Recipe loading: Lua table -> JSON tree -> overrides -> schema validation
 * with defaults filled in (validate.c) -> the typed config (config.c). See
 * recipe.h.
 */
#include "recipe.h"

#include <lauxlib.h>
#include <libgen.h>
#include <lua.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- Lua value -> JSON ------------------------------------------------- */

static base_status lua_to_json(lua_State *L, int idx, base_buf *path, cJSON **out, int depth) {
    *out = NULL;
    if (depth > 32) return base_err_set(BASE_ERR_INVALID, "%s: tables nested too deeply", path->data);
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER: *out = cJSON_CreateNumber(lua_tonumber(L, idx)); return BASE_OK;
    case LUA_TBOOLEAN: *out = cJSON_CreateBool(lua_toboolean(L, idx)); return BASE_OK;
    case LUA_TSTRING: *out = cJSON_CreateString(lua_tostring(L, idx)); return BASE_OK;
    case LUA_TTABLE: break;
    default:
        return base_err_set(BASE_ERR_INVALID,
                            "%s: a recipe value must be a number, string, boolean or table (got %s)",
                            path->len ? path->data : "recipe", luaL_typename(L, idx));
    }
    /* array when the keys are exactly 1..n */
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx), count = 0;
    int all_int = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        count++;
        if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) < 1 || lua_tointeger(L, -2) > n) all_int = 0;
        else if (lua_type(L, -2) != LUA_TNUMBER) all_int = 0;
        lua_pop(L, 1);
    }
    size_t plen = path->len;
    if (all_int && count == n) {
        cJSON *arr = cJSON_CreateArray();
        for (lua_Integer i = 1; i <= n; i++) {
            base_buf_printf(path, "[%lld]", (long long)i);
            lua_rawgeti(L, idx, i);
            cJSON *v;
            base_status s = lua_to_json(L, -1, path, &v, depth + 1);
            lua_pop(L, 1);
            path->len = plen;
            path->data[plen] = 0;
            if (s) {
                cJSON_Delete(arr);
                return s;
            }
            cJSON_AddItemToArray(arr, v);
        }
        *out = arr;
        return BASE_OK;
    }
    /* object: string keys only, in a stable (sorted) order */
    int nk = 0;
    char **keys = base_xcalloc((size_t)count, sizeof *keys);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            for (int i = 0; i < nk; i++) free(keys[i]);
            free(keys);
            lua_pop(L, 1);
            return base_err_set(BASE_ERR_INVALID,
                                "%s: a table mixes list items and named keys (or has a non-string key)",
                                path->len ? path->data : "recipe");
        }
        keys[nk++] = base_xstrdup(lua_tostring(L, -1));
    }
    for (int i = 1; i < nk; i++) /* insertion sort: recipes are small */
        for (int j = i; j > 0 && strcmp(keys[j - 1], keys[j]) > 0; j--) {
            char *t = keys[j];
            keys[j] = keys[j - 1];
            keys[j - 1] = t;
        }
    cJSON *obj = cJSON_CreateObject();
    base_status s = BASE_OK;
    for (int i = 0; i < nk; i++) {
        if (!s) {
            base_buf_printf(path, "%s%s", plen ? "." : "", keys[i]);
            lua_getfield(L, idx, keys[i]);
            cJSON *v;
            s = lua_to_json(L, -1, path, &v, depth + 1);
            lua_pop(L, 1);
            path->len = plen;
            if (path->data) path->data[plen] = 0;
            if (!s) cJSON_AddItemToObject(obj, keys[i], v);
        }
        free(keys[i]);
    }
    free(keys);
    if (s) {
        cJSON_Delete(obj);
        return s;
    }
    *out = obj;
    return BASE_OK;
}

static base_status run_lua(const char *src, const char *chunkname, cJSON **out) {
    *out = NULL;
    lua_State *L = luaL_newstate();
    if (!L) return base_err_set(BASE_ERR_NOMEM, "%s: cannot create a Lua state", chunkname);
    luaL_openlibs(L);
    char name[1024];
    snprintf(name, sizeof name, "@%s", chunkname);
    base_status s = BASE_OK;
    if (luaL_loadbufferx(L, src, strlen(src), name, "t") != LUA_OK ||
        lua_pcall(L, 0, 1, 0) != LUA_OK) {
        s = base_err_set(BASE_ERR_PARSE, "%s", lua_tostring(L, -1));
    } else if (!lua_istable(L, -1)) {
        s = base_err_set(BASE_ERR_INVALID, "%s: a recipe must return a table (got %s)", chunkname,
                         luaL_typename(L, -1));
    } else {
        base_buf path = {0};
        s = lua_to_json(L, -1, &path, out, 0);
        if (s) base_err_wrap(s, "%s", chunkname);
        base_buf_free(&path);
    }
    lua_close(L);
    return s;
}

/* ---- stage names and overrides ------------------------------------------ */

static void name_stages(cJSON *root) {
    cJSON *stages = cJSON_GetObjectItemCaseSensitive(root, "stages");
    if (!cJSON_IsArray(stages)) return;
    for (cJSON *st = stages->child; st; st = st->next) {
        if (!cJSON_IsObject(st) || cJSON_GetObjectItemCaseSensitive(st, "name")) continue;
        const char *type = base_json_str(st, "type", NULL);
        if (!type) continue;
        int count = 0;
        for (cJSON *o = stages->child; o != st; o = o->next)
            if (cJSON_IsObject(o) && !strcmp(base_json_str(o, "type", ""), type)) count++;
        char name[128];
        if (count) snprintf(name, sizeof name, "%s_%d", type, count + 1);
        else snprintf(name, sizeof name, "%s", type);
        cJSON_AddStringToObject(st, "name", name);
    }
}

static char *strndup_x(const char *s, size_t n) {
    char *d = base_xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

/* Apply override i of c (its value goes to c->set_items[i]). */
static base_status apply_set(recipe_vctx *c, cJSON *root, int i) {
    const char *set = c->sets[i].set, *file = c->file;
    const char *eq = strchr(set, '=');
    if (!eq || eq == set)
        return base_err_set(BASE_ERR_INVALID, "--set '%s': expected key.path=value", set);
    char *keypath = strndup_x(set, (size_t)(eq - set));
    const char *val = eq + 1;
    cJSON *node = root;
    char *save = NULL, *seg = strtok_r(keypath, ".", &save);
    base_status s = BASE_OK;
    while (seg) {
        char *next = strtok_r(NULL, ".", &save);
        cJSON *child = NULL;
        if (cJSON_IsArray(node)) {
            for (cJSON *e = node->child; e; e = e->next)
                if (cJSON_IsObject(e) && !strcmp(base_json_str(e, "name", ""), seg)) child = e;
            char *end;
            long idx = strtol(seg, &end, 10);
            if (!child && *end == 0 && idx >= 1 && idx <= cJSON_GetArraySize(node))
                child = cJSON_GetArrayItem(node, (int)idx - 1);
            if (!child) {
                s = base_err_set(BASE_ERR_INVALID, "--set %s: no list item named or numbered '%s' in %s",
                                 set, seg, file);
                break;
            }
            if (!next) {
                s = base_err_set(BASE_ERR_INVALID, "--set %s: cannot replace a whole list item", set);
                break;
            }
        } else if (cJSON_IsObject(node)) {
            child = cJSON_GetObjectItemCaseSensitive(node, seg);
            if (!next) {
                cJSON *v = cJSON_Parse(val);
                if (!v) v = cJSON_CreateString(val);
                if (child) {
                    recipe_vctx_replaced(c, child, NULL);
                    cJSON_ReplaceItemInObjectCaseSensitive(node, seg, v);
                } else {
                    cJSON_AddItemToObject(node, seg, v);
                }
                c->set_items[i] = v;
                break;
            }
            if (!child) {
                child = cJSON_CreateObject();
                cJSON_AddItemToObject(node, seg, child);
            }
        } else {
            s = base_err_set(BASE_ERR_INVALID, "--set %s: '%s' is not a table in %s", set, seg, file);
            break;
        }
        node = child;
        seg = next;
    }
    free(keypath);
    return s;
}

/* Sort object keys recursively: the resolved tree has one canonical order,
 * so a recipe and its config.resolved.lua give identical trees. */
static void sort_keys(cJSON *v) {
    if (!cJSON_IsObject(v) && !cJSON_IsArray(v)) return;
    for (cJSON *e = v->child; e; e = e->next) sort_keys(e);
    if (!cJSON_IsObject(v)) return;
    int n = cJSON_GetArraySize(v);
    if (n < 2) return;
    cJSON **items = base_xmalloc((size_t)n * sizeof *items);
    int k = 0;
    while (v->child) items[k++] = cJSON_DetachItemViaPointer(v, v->child);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(items[j - 1]->string, items[j]->string) > 0; j--) {
            cJSON *t = items[j];
            items[j] = items[j - 1];
            items[j - 1] = t;
        }
    for (int i = 0; i < n; i++) {
        char *key = items[i]->string;
        items[i]->string = NULL;
        cJSON_AddItemToObject(v, key, items[i]);
        cJSON_free(key);
    }
    free(items);
}

base_status recipe_load_string_sets(const char *src, const char *chunkname, const recipe_set *sets, int nsets,
                                    recipe **out) {
    *out = NULL;
    cJSON *root;
    base_status s = run_lua(src, chunkname, &root);
    if (s) return s;
    recipe_vctx c = {chunkname, sets, nsets, base_xcalloc((size_t)nsets + 1, sizeof(cJSON *))};
    name_stages(root);
    for (int i = 0; i < nsets && !s; i++) s = apply_set(&c, root, i);
    if (!s) s = recipe_validate_tree(&c, root);
    recipe *r = NULL;
    if (!s) {
        name_stages(root); /* stages added by --set */
        r = base_xcalloc(1, sizeof *r);
        r->root = root;
        r->path = base_xstrdup(chunkname);
        char *tmp = base_xstrdup(chunkname);
        r->dir = base_xstrdup(dirname(tmp));
        free(tmp);
        if (cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "name"))) {
            char *b = base_xstrdup(chunkname);
            char *base = basename(b);
            char *dot = strrchr(base, '.');
            if (dot && !strcmp(dot, ".lua")) *dot = 0;
            cJSON_ReplaceItemInObjectCaseSensitive(root, "name", cJSON_CreateString(base));
            free(b);
        }
        sort_keys(root);
        s = recipe_config_build(&c, r);
    }
    free(c.set_items);
    if (s) {
        if (r) recipe_free(r);
        else cJSON_Delete(root);
        return s;
    }
    *out = r;
    return BASE_OK;
}

base_status recipe_load_string(const char *src, const char *chunkname, const char *const *sets, int nsets,
                               recipe **out) {
    recipe_set *rs = base_xcalloc((size_t)nsets + 1, sizeof *rs);
    for (int i = 0; i < nsets; i++) rs[i].set = sets[i];
    base_status s = recipe_load_string_sets(src, chunkname, rs, nsets, out);
    free(rs);
    return s;
}

base_status recipe_load(const char *path, const char *const *sets, int nsets, recipe **out) {
    char *src;
    size_t n;
    *out = NULL;
    base_status s = base_read_file(path, &src, &n);
    if (s) return s;
    if (strlen(src) != n) {
        free(src);
        return base_err_set(BASE_ERR_PARSE, "%s: NUL byte in recipe", path);
    }
    s = recipe_load_string(src, path, sets, nsets, out);
    free(src);
    return s;
}

void recipe_free(recipe *r) {
    if (!r) return;
    recipe_config_free(r);
    cJSON_Delete(r->root);
    free(r->path);
    free(r->dir);
    free(r);
}

const cJSON *recipe_root(const recipe *r) { return r->root; }
const char *recipe_path(const recipe *r) { return r->path; }
const recipe_cfg *recipe_config(const recipe *r) { return &r->cfg; }

char *recipe_resolve_path(const recipe *r, const char *p) {
    /* relative to the recipe file first (a recipe's own paths), then to the
     * current directory (paths given with --set) */
    if (p[0] == '/') return base_xstrdup(p);
    char *j = base_path_join(r->dir, p);
    if (base_file_exists(j)) return j;
    free(j);
    return base_xstrdup(p);
}
