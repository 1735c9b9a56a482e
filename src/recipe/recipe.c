/*
 * Recipe loading: Lua table -> JSON tree -> overrides -> schema validation
 * with defaults filled in (validate.c) -> the typed config (config.c). See
 * recipe.h.
 */
#include "recipe.h"

#include <lauxlib.h>
#include <libgen.h>
#include <lua.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "reward/reward.h"

/* ---- Lua value -> JSON ------------------------------------------------- */

/* A recipe is configuration: it runs in the reward scripts' sandbox (no
 * processes, no file writes) with these limits, generous for building a
 * table: the shipped recipes run under 1000 instructions in 50 KB. */
#define RECIPE_LUA_INSTRUCTIONS 10000000
#define RECIPE_LUA_MEMORY ((size_t)32 << 20)
/* and the converted tree is bounded too: a table can reach the same
 * sub-table many times (t = {t, t} nested 32 deep is 2^32 values) */
#define RECIPE_MAX_VALUES 1000000
#define RECIPE_MAX_TEXT ((size_t)64 << 20)

/* The conversion runs inside the Lua protected call, where the memory cap
 * can end it at any Lua call: everything it allocates is reachable from
 * here (the tree is built top-down, each value attached as it is made). */
typedef struct {
    const char *chunkname;
    cJSON *root;
    base_buf path; /* key path of the value being converted */
    int64_t values;
    size_t text;
} conv_ctx;

static const char *conv_where(const conv_ctx *cx) { return cx->path.len ? cx->path.data : "recipe"; }

/* Convert the value at idx and attach it to parent (an array when key is
 * NULL, else an object) or make it the root. */
static base_status lua_to_json(lua_State *L, int idx, conv_ctx *cx, cJSON *parent, const char *key, int depth) {
    if (depth > 32) return base_err_set(BASE_ERR_INVALID, "%s: tables nested too deeply", conv_where(cx));
    if (++cx->values > RECIPE_MAX_VALUES)
        return base_err_set(BASE_ERR_INVALID, "%s: the recipe's table holds more than %d values", conv_where(cx),
                            RECIPE_MAX_VALUES);
    idx = lua_absindex(L, idx);
    cJSON *v;
    int t = lua_type(L, idx);
    switch (t) {
    case LUA_TNUMBER:
        if (!isfinite(lua_tonumber(L, idx))) /* JSON and config.resolved.lua have no inf or nan */
            return base_err_set(BASE_ERR_INVALID, "%s: %s is not a finite number", conv_where(cx),
                                lua_tonumber(L, idx) != lua_tonumber(L, idx) ? "nan" : "inf");
        v = cJSON_CreateNumber(lua_tonumber(L, idx));
        break;
    case LUA_TBOOLEAN: v = cJSON_CreateBool(lua_toboolean(L, idx)); break;
    case LUA_TSTRING: {
        size_t n;
        const char *str = lua_tolstring(L, idx, &n);
        cx->text += n;
        if (cx->text > RECIPE_MAX_TEXT)
            return base_err_set(BASE_ERR_INVALID, "%s: the recipe's table holds more than %d MiB of text",
                                conv_where(cx), (int)(RECIPE_MAX_TEXT >> 20));
        v = cJSON_CreateString(str);
        break;
    }
    case LUA_TTABLE: v = NULL; break;
    default:
        return base_err_set(BASE_ERR_INVALID,
                            "%s: a recipe value must be a number, string, boolean or table (got %s)", conv_where(cx),
                            luaL_typename(L, idx));
    }
    /* array when the keys are exactly 1..n */
    lua_Integer n = 0, count = 0;
    int all_int = 1;
    if (t == LUA_TTABLE) {
        luaL_checkstack(L, 4, "recipe tables");
        n = (lua_Integer)lua_rawlen(L, idx);
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            count++;
            if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) < 1 || lua_tointeger(L, -2) > n) all_int = 0;
            lua_pop(L, 1);
        }
        v = all_int && count == n ? cJSON_CreateArray() : cJSON_CreateObject();
    }
    if (!parent) cx->root = v;
    else if (key) cJSON_AddItemToObject(parent, key, v);
    else cJSON_AddItemToArray(parent, v);
    if (t != LUA_TTABLE) return BASE_OK;
    size_t plen = cx->path.len;
    base_status s = BASE_OK;
    if (cJSON_IsArray(v)) {
        for (lua_Integer i = 1; i <= n && !s; i++) {
            base_buf_printf(&cx->path, "[%lld]", (long long)i);
            lua_rawgeti(L, idx, i);
            s = lua_to_json(L, -1, cx, v, NULL, depth + 1);
            lua_pop(L, 1);
            cx->path.len = plen;
            cx->path.data[plen] = 0;
        }
        return s;
    }
    /* object: string keys only (recipe_load sorts them afterwards) */
    lua_pushnil(L);
    while (!s && lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pop(L, 2);
            return base_err_set(BASE_ERR_INVALID,
                                "%s: a table mixes list items and named keys (or has a non-string key)",
                                conv_where(cx));
        }
        const char *k = lua_tostring(L, -2);
        base_buf_printf(&cx->path, "%s%s", plen ? "." : "", k);
        s = lua_to_json(L, -1, cx, v, k, depth + 1);
        lua_pop(L, 1);
        cx->path.len = plen;
        if (cx->path.data) cx->path.data[plen] = 0;
    }
    if (s) lua_pop(L, 1); /* the key lua_next left */
    return s;
}

static base_status convert_result(lua_State *L, void *ud) {
    conv_ctx *cx = ud;
    if (!lua_istable(L, -1))
        return base_err_set(BASE_ERR_INVALID, "%s: a recipe must return a table (got %s)", cx->chunkname,
                            luaL_typename(L, -1));
    base_status s = lua_to_json(L, -1, cx, NULL, NULL, 0);
    if (s) base_err_wrap(s, "%s", cx->chunkname);
    return s;
}

static void sort_keys(cJSON *v);

/* Run the recipe's Lua in the sandbox (reward_lua_run_config); *out is the
 * returned table as JSON, keys sorted. require() reads Lua files next to
 * the recipe. */
static base_status run_lua(const char *src, const char *chunkname, cJSON **out) {
    *out = NULL;
    reward_limits lim;
    reward_limits_default(&lim);
    lim.instructions = RECIPE_LUA_INSTRUCTIONS;
    lim.memory_bytes = RECIPE_LUA_MEMORY;
    char *tmp = base_xstrdup(chunkname);
    conv_ctx cx = {.chunkname = chunkname};
    base_status s = reward_lua_run_config(src, strlen(src), chunkname, dirname(tmp), &lim, convert_result, &cx);
    base_buf_free(&cx.path);
    free(tmp);
    if (!s && cJSON_IsArray(cx.root) && cx.root->child)
        s = base_err_set(BASE_ERR_INVALID,
                         "%s: a recipe must return a table of named values ({ model = ..., stages = ... }), not a list",
                         chunkname);
    if (s) {
        cJSON_Delete(cx.root);
        return s;
    }
    if (cJSON_IsArray(cx.root)) { /* Lua's {}: no keys yet */
        cJSON_Delete(cx.root);
        cx.root = cJSON_CreateObject();
    }
    sort_keys(cx.root);
    *out = cx.root;
    return BASE_OK;
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

/* "no list item named or numbered 'seg'", with the names the list has. */
static base_status no_item(const recipe_vctx *c, const char *set, const char *seg, const cJSON *list) {
    base_buf names = {0};
    const char *best = NULL;
    int bd = 1 << 30;
    for (const cJSON *e = list->child; e; e = e->next) {
        const char *nm = cJSON_IsObject(e) ? base_json_str(e, "name", NULL) : NULL;
        if (!nm) continue;
        base_buf_printf(&names, "%s%s", names.len ? ", " : "", nm);
        int d = recipe_edit_distance(seg, nm);
        if (d < bd) bd = d, best = nm;
    }
    int lim = (int)strlen(seg) / 3 < 2 ? 2 : (int)strlen(seg) / 3;
    char hint[200] = "";
    if (best && bd <= lim) snprintf(hint, sizeof hint, " (did you mean '%s'?)", best);
    base_status s = base_err_set(BASE_ERR_INVALID,
                                 "--set %s: no list item named or numbered '%s' in %s%s; the list has %d item%s%s%s",
                                 set, seg, c->file, hint, cJSON_GetArraySize(list),
                                 cJSON_GetArraySize(list) == 1 ? "" : "s", names.len ? ", named " : "",
                                 names.len ? names.data : "");
    base_buf_free(&names);
    return s;
}

/* A short form that an override reaches into (`--set datasets.train.path=`
 * on `train = "a.jsonl"`, `--set rewards.2.weight=` on "script:weight",
 * `--set rewards.1.weight=` on rewards = "a:1,b:2"), as the table it stands
 * for; NULL when v is no short form. v is node[seg]; node is under the key
 * `key` of its parent (NULL: node is the root) at depth `depth`. */
static cJSON *short_form_table(const cJSON *node, const char *key, int depth, const char *seg, const cJSON *v) {
    if (!cJSON_IsString(v)) return NULL;
    if (!strcmp(seg, "rewards") && (depth == 0 || (depth == 2 && cJSON_IsObject(node)))) /* the recipe's, a stage's */
        return recipe_reward_spec_list(v->valuestring);
    if (!key) return NULL;
    if (depth == 1 && !strcmp(key, "datasets") && cJSON_IsObject(node)) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(t, "path", v->valuestring);
        return t;
    }
    if (!strcmp(key, "rewards") && cJSON_IsArray(node)) return recipe_reward_spec_table(v->valuestring);
    return NULL;
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
    const char *node_key = NULL; /* the key node is under (NULL: the root) */
    int depth = 0;
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
                s = no_item(c, set, seg, node);
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
        }
        if (next && !cJSON_IsObject(child) && !cJSON_IsArray(child)) {
            cJSON *t = short_form_table(node, node_key, depth, seg, child);
            if (!t) { /* a value, not a table: say what to write */
                char val_text[128];
                char *prefix = strndup_x(set, (size_t)(seg - keypath) + strlen(seg));
                s = base_err_set(BASE_ERR_INVALID,
                                 "--set %s: '%s' is %s in %s, not a table, so it has no '%s': set it whole "
                                 "(--set %s=VALUE)",
                                 set, prefix, recipe_value_text(child, val_text, sizeof val_text), file, next, prefix);
                free(prefix);
                break;
            }
            /* overrides that gave the short form now give what it stands for */
            cJSON *path = cJSON_IsObject(t) ? cJSON_GetObjectItemCaseSensitive(t, "path") : NULL;
            recipe_vctx_replaced(c, child, path ? path : t);
            if (cJSON_IsObject(node)) cJSON_ReplaceItemInObjectCaseSensitive(node, seg, t); /* keeps the key */
            else cJSON_ReplaceItemViaPointer(node, child, t);
            child = t;
        }
        node_key = seg;
        depth++;
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
    char *cwd = getcwd(NULL, 0);
    if (!cwd) return base_err_set(BASE_ERR_IO, "%s: getcwd: %s", chunkname, base_strerror_now());
    char *tmp = base_xstrdup(chunkname);
    char *dir = recipe_abs_path(cwd, dirname(tmp)); /* the recipe file's directory */
    free(tmp);
    cJSON *root;
    base_status s = run_lua(src, chunkname, &root);
    if (s) {
        free(cwd), free(dir);
        return s;
    }
    recipe_vctx c = {chunkname, sets, nsets, base_xcalloc((size_t)nsets + 1, sizeof(cJSON *)), dir, cwd};
    name_stages(root);
    for (int i = 0; i < nsets && !s; i++) s = apply_set(&c, root, i);
    if (!s) s = recipe_validate_tree(&c, root);
    recipe *r = NULL;
    if (!s) {
        name_stages(root); /* stages added by --set */
        r = base_xcalloc(1, sizeof *r);
        r->root = root;
        r->path = base_xstrdup(chunkname);
        r->dir = base_xstrdup(dir);
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
    free(cwd), free(dir);
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
    /* the tree's paths are absolute already (paths.c) */
    return p[0] == '/' ? base_xstrdup(p) : recipe_abs_path(r->dir, p);
}
