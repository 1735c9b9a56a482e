/*
 * Recipe loading: Lua table -> JSON tree -> overrides -> schema validation
 * with defaults filled in. See recipe.h.
 */
#include "recipe.h"

#include <lauxlib.h>
#include <libgen.h>
#include <lua.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "reward/reward.h"
#include "schema.h"

struct recipe {
    char *path;
    char *dir;
    cJSON *root;
};

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

/* ---- schema validation ------------------------------------------------- */

int recipe_edit_distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    if (n > 64 || m > 64) return 99;
    int d[65][65];
    for (size_t i = 0; i <= n; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            int c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < c) c = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < c) c = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < c)
                c = d[i - 2][j - 2] + 1; /* transposition */
            d[i][j] = c;
        }
    return d[n][m];
}

static const recipe_key *find_key(const recipe_key *a, const recipe_key *b, const char *k) {
    for (const recipe_key *s = a; s && s->key; s++)
        if (!strcmp(s->key, k)) return s;
    for (const recipe_key *s = b; s && s->key; s++)
        if (!strcmp(s->key, k)) return s;
    return NULL;
}

static const char *suggest(const recipe_key *a, const recipe_key *b, const char *k) {
    const char *best = NULL;
    int bd = 1 << 30;
    const recipe_key *tabs[2] = {a, b};
    for (int t = 0; t < 2; t++)
        for (const recipe_key *s = tabs[t]; s && s->key; s++) {
            int d = recipe_edit_distance(k, s->key);
            if (d < bd) {
                bd = d;
                best = s->key;
            }
        }
    int lim = (int)strlen(k) / 3;
    if (lim < 2) lim = 2;
    return bd <= lim ? best : NULL;
}

static int in_choices(const char *choices, const char *v) {
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        const char *e = strchr(p, '|');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, v, n)) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

typedef struct {
    const char *file;
} vctx;

static base_status validate_object(vctx *c, cJSON *obj, const recipe_key *schema,
                                   const recipe_key *extra, const char *path);

static base_status bad(vctx *c, const char *path, const char *key, const char *fmt, const char *what) {
    char full[512];
    snprintf(full, sizeof full, "%s%s%s", path, *path ? "." : "", key);
    return base_err_set(BASE_ERR_INVALID, "%s: '%s': %s%s", c->file, full, fmt, what ? what : "");
}

/* "a.lua:1.0,b.lua:0.2" -> [{script, weight}] */
static cJSON *parse_reward_spec(const char *spec) {
    cJSON *arr = cJSON_CreateArray();
    char *copy = base_xstrdup(spec), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        cJSON *r = cJSON_CreateObject();
        char *colon = strrchr(tok, ':');
        char *end = NULL;
        double w = colon ? strtod(colon + 1, &end) : 1.0;
        if (colon && end && *end == 0 && end != colon + 1) {
            *colon = 0;
        } else {
            w = 1.0;
        }
        cJSON_AddStringToObject(r, "script", tok);
        cJSON_AddNumberToObject(r, "weight", w);
        cJSON_AddItemToArray(arr, r);
    }
    free(copy);
    return arr;
}

static base_status check_value(vctx *c, cJSON *obj, cJSON *v, const recipe_key *k, const char *path) {
    char sub[512];
    snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", k->key);
    if (cJSON_IsNull(v) && k->dflt && !strcmp(k->dflt, "null")) return BASE_OK; /* "not set" */
    switch (k->type) {
    case RK_NUM:
        if (!cJSON_IsNumber(v)) return bad(c, path, k->key, "expected a number", NULL);
        return BASE_OK;
    case RK_INT:
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 9e15)
            return bad(c, path, k->key, "expected an integer", NULL);
        return BASE_OK;
    case RK_BOOL:
        if (!cJSON_IsBool(v)) return bad(c, path, k->key, "expected true or false", NULL);
        return BASE_OK;
    case RK_STR:
        if (!cJSON_IsString(v)) return bad(c, path, k->key, "expected a string", NULL);
        if (k->choices && !in_choices(k->choices, v->valuestring)) {
            char msg[256];
            snprintf(msg, sizeof msg, "'%s' is not one of %s", v->valuestring, k->choices);
            return bad(c, path, k->key, msg, NULL);
        }
        return BASE_OK;
    case RK_STRLIST:
        if (cJSON_IsString(v)) {
            cJSON *arr = cJSON_CreateArray();
            cJSON_AddItemToArray(arr, cJSON_CreateString(v->valuestring));
            cJSON_ReplaceItemInObjectCaseSensitive(obj, k->key, arr);
            return BASE_OK;
        }
        if (!cJSON_IsArray(v)) return bad(c, path, k->key, "expected a string or a list of strings", NULL);
        for (cJSON *e = v->child; e; e = e->next)
            if (!cJSON_IsString(e)) return bad(c, path, k->key, "expected a list of strings", NULL);
        return BASE_OK;
    case RK_DATASETS: {
        if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0) {
            cJSON_ReplaceItemInObjectCaseSensitive(obj, k->key, cJSON_CreateObject());
            return BASE_OK;
        }
        if (!cJSON_IsObject(v)) return bad(c, path, k->key, "expected a table of named datasets", NULL);
        for (cJSON *d = v->child; d; d = d->next) {
            if (cJSON_IsString(d)) {
                cJSON *t = cJSON_CreateObject();
                cJSON_AddStringToObject(t, "path", d->valuestring);
                char *name = base_xstrdup(d->string);
                cJSON_ReplaceItemInObjectCaseSensitive(v, name, t);
                free(name);
                d = t;
            }
            char dpath[600];
            snprintf(dpath, sizeof dpath, "%s.%s", sub, d->string);
            if (!cJSON_IsObject(d))
                return base_err_set(BASE_ERR_INVALID, "%s: '%s': expected a dataset table or a path",
                                    c->file, dpath);
            base_status s = validate_object(c, d, recipe_schema_dataset(), NULL, dpath);
            if (s) return s;
        }
        return BASE_OK;
    }
    case RK_REWARDS: {
        if (cJSON_IsString(v)) {
            v = parse_reward_spec(v->valuestring);
            cJSON_ReplaceItemInObjectCaseSensitive(obj, k->key, v);
        }
        if (!cJSON_IsArray(v)) return bad(c, path, k->key, "expected a list of rewards", NULL);
        int i = 0;
        for (cJSON *r = v->child; r; r = r->next, i++) {
            if (cJSON_IsString(r)) {
                cJSON *one = parse_reward_spec(r->valuestring);
                cJSON *item = cJSON_DetachItemFromArray(one, 0);
                cJSON_Delete(one);
                cJSON_ReplaceItemInArray(v, i, item);
                r = item;
            }
            char rpath[600];
            snprintf(rpath, sizeof rpath, "%s[%d]", sub, i + 1);
            if (!cJSON_IsObject(r))
                return base_err_set(BASE_ERR_INVALID, "%s: '%s': expected a reward table or \"script:weight\"",
                                    c->file, rpath);
            base_status s = validate_object(c, r, recipe_schema_reward(), NULL, rpath);
            if (s) return s;
        }
        return BASE_OK;
    }
    case RK_TABLE:
        if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0) { /* Lua's {} */
            cJSON_ReplaceItemInObjectCaseSensitive(obj, k->key, cJSON_CreateObject());
            return BASE_OK;
        }
        if (!cJSON_IsObject(v)) return bad(c, path, k->key, "expected a table of named values", NULL);
        return BASE_OK;
    case RK_STAGES: {
        if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
            return bad(c, path, k->key, "expected a non-empty list of stages", NULL);
        int i = 0;
        for (cJSON *st = v->child; st; st = st->next, i++) {
            const char *name = base_json_str(st, "name", NULL);
            char spath[600];
            if (name) snprintf(spath, sizeof spath, "%s.%s", sub, name);
            else snprintf(spath, sizeof spath, "%s[%d]", sub, i + 1);
            if (!cJSON_IsObject(st))
                return base_err_set(BASE_ERR_INVALID, "%s: '%s': expected a stage table", c->file, spath);
            const char *type = base_json_str(st, "type", NULL);
            const recipe_key *ks = recipe_schema_stage(type);
            if (!ks) {
                if (!type)
                    return base_err_set(BASE_ERR_INVALID, "%s: '%s': missing 'type' (sft, grpo, sample or eval)",
                                        c->file, spath);
                return base_err_set(BASE_ERR_INVALID,
                                    "%s: '%s.type': unknown stage type '%s' (sft, grpo, sample or eval)",
                                    c->file, spath, type);
            }
            base_status s = validate_object(c, st, ks, recipe_schema_stage_common(), spath);
            if (s) return s;
        }
        return BASE_OK;
    }
    }
    return BASE_OK;
}

static base_status validate_object(vctx *c, cJSON *obj, const recipe_key *schema,
                                   const recipe_key *extra, const char *path) {
    for (cJSON *v = obj->child; v; v = v->next) {
        const recipe_key *k = find_key(schema, extra, v->string);
        if (!k) {
            const char *sg = suggest(schema, extra, v->string);
            char full[600];
            snprintf(full, sizeof full, "%s%s%s", path, *path ? "." : "", v->string);
            if (sg)
                return base_err_set(BASE_ERR_INVALID, "%s: unknown key '%s' (did you mean '%s'?)",
                                    c->file, full, sg);
            return base_err_set(BASE_ERR_INVALID, "%s: unknown key '%s'", c->file, full);
        }
    }
    const recipe_key *tabs[2] = {extra, schema};
    for (int t = 0; t < 2; t++)
        for (const recipe_key *k = tabs[t]; k && k->key; k++) {
            cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, k->key);
            if (!v) {
                if (!k->dflt) {
                    char full[600];
                    snprintf(full, sizeof full, "%s%s%s", path, *path ? "." : "", k->key);
                    return base_err_set(BASE_ERR_INVALID, "%s: missing required key '%s' (%s)", c->file,
                                        full, k->doc);
                }
                v = cJSON_Parse(k->dflt);
                if (!v) base_die("recipe schema: bad default for %s: %s", k->key, k->dflt);
                cJSON_AddItemToObject(obj, k->key, v);
            }
            v = cJSON_GetObjectItemCaseSensitive(obj, k->key);
            base_status s = check_value(c, obj, v, k, path);
            if (s) return s;
        }
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

static base_status apply_set(cJSON *root, const char *file, const char *set) {
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
                if (child) cJSON_ReplaceItemInObjectCaseSensitive(node, seg, v);
                else cJSON_AddItemToObject(node, seg, v);
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

static base_status check_stage_refs(const char *file, cJSON *root) {
    cJSON *ds = cJSON_GetObjectItemCaseSensitive(root, "datasets");
    cJSON *stages = cJSON_GetObjectItemCaseSensitive(root, "stages");
    for (cJSON *st = stages->child; st; st = st->next) {
        const char *name = base_json_str(st, "name", "?");
        for (cJSON *o = stages->child; o != st; o = o->next)
            if (!strcmp(base_json_str(o, "name", ""), name))
                return base_err_set(BASE_ERR_INVALID, "%s: two stages are named '%s'", file, name);
        cJSON *dl = cJSON_GetObjectItemCaseSensitive(st, "dataset");
        for (cJSON *d = dl->child; d; d = d->next)
            if (!cJSON_GetObjectItemCaseSensitive(ds, d->valuestring)) {
                base_buf names = {0};
                for (cJSON *x = ds->child; x; x = x->next) base_buf_printf(&names, "%s%s", names.len ? ", " : "", x->string);
                base_status s = base_err_set(BASE_ERR_INVALID,
                                             "%s: 'stages.%s.dataset': no dataset named '%s' (datasets: %s)",
                                             file, name, d->valuestring, names.len ? names.data : "none");
                base_buf_free(&names);
                return s;
            }
    }
    return BASE_OK;
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

base_status recipe_load_string(const char *src, const char *chunkname, const char *const *sets,
                               int nsets, recipe **out) {
    *out = NULL;
    cJSON *root;
    base_status s = run_lua(src, chunkname, &root);
    if (s) return s;
    name_stages(root);
    for (int i = 0; i < nsets && !s; i++) s = apply_set(root, chunkname, sets[i]);
    vctx c = {chunkname};
    if (!s) s = validate_object(&c, root, recipe_schema_top(), NULL, "");
    if (!s) {
        name_stages(root); /* stages added by --set */
        s = check_stage_refs(chunkname, root);
    }
    if (s) {
        cJSON_Delete(root);
        return s;
    }
    recipe *r = base_xcalloc(1, sizeof *r);
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
    *out = r;
    return BASE_OK;
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
    cJSON_Delete(r->root);
    free(r->path);
    free(r->dir);
    free(r);
}

const cJSON *recipe_root(const recipe *r) { return r->root; }
const char *recipe_path(const recipe *r) { return r->path; }

int recipe_nstages(const recipe *r) {
    return cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r->root, "stages"));
}

const cJSON *recipe_stage(const recipe *r, int i) {
    return cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r->root, "stages"), i);
}

const cJSON *recipe_stage_by_name(const recipe *r, const char *name) {
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(r->root, "stages");
    for (const cJSON *e = st->child; e; e = e->next)
        if (!strcmp(base_json_str(e, "name", ""), name)) return e;
    return NULL;
}

static const cJSON *need(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) base_die("recipe: key '%s' missing from a resolved recipe", key);
    return v;
}

double recipe_num(const cJSON *obj, const char *key) {
    const cJSON *v = need(obj, key);
    if (!cJSON_IsNumber(v)) base_die("recipe: key '%s' is not a number", key);
    return v->valuedouble;
}
int64_t recipe_int(const cJSON *obj, const char *key) { return (int64_t)recipe_num(obj, key); }
int recipe_bool(const cJSON *obj, const char *key) {
    const cJSON *v = need(obj, key);
    if (!cJSON_IsBool(v)) base_die("recipe: key '%s' is not a boolean", key);
    return cJSON_IsTrue(v);
}
const char *recipe_str(const cJSON *obj, const char *key) {
    const cJSON *v = need(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

char *recipe_resolve_path(const recipe *r, const char *p) {
    /* relative to the recipe file first (a recipe's own paths), then to the
     * current directory (paths given with --set) */
    if (p[0] == '/') return base_xstrdup(p);
    char *j = base_path_join(r->dir, p);
    if (base_file_exists(j)) return j;
    free(j);
    return base_xstrdup(p);
}
