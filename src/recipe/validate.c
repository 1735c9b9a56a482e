/*
 * Schema validation of a recipe tree: every key known (else a suggestion),
 * every value of its type, among its choices and inside its range, short
 * forms normalised, defaults added. Errors name the file, the key as the
 * user addresses it (stages[2].top_p: list items 1-based, as in Lua), the
 * value and what it must be, and the override that gave the value.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- origins and messages ------------------------------------------------ */

static int holds(const cJSON *tree, const cJSON *v) {
    if (tree == v) return 1;
    if (cJSON_IsArray(tree) || cJSON_IsObject(tree))
        for (const cJSON *e = tree->child; e; e = e->next)
            if (holds(e, v)) return 1;
    return 0;
}

int recipe_vctx_origin(const recipe_vctx *c, const cJSON *v) {
    if (!v) return -1;
    for (int i = c->nsets - 1; i >= 0; i--)
        if (c->set_items && c->set_items[i] && holds(c->set_items[i], v)) return i;
    return -1;
}

void recipe_vctx_replaced(recipe_vctx *c, const cJSON *old, cJSON *new_item) {
    for (int i = 0; i < c->nsets; i++)
        if (c->set_items && c->set_items[i]) {
            if (c->set_items[i] == old) c->set_items[i] = new_item;
            else if (holds(old, c->set_items[i])) c->set_items[i] = NULL; /* freed with old */
        }
}

char *recipe_value_text(const cJSON *v, char *buf, size_t n) {
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        snprintf(buf, n, "%.15g", d);
        if (strtod(buf, NULL) != d) snprintf(buf, n, "%.17g", d);
    } else if (cJSON_IsString(v)) {
        size_t k = 0, lim = n > 48 ? 40 : (n > 8 ? n - 8 : 0);
        const char *s = v->valuestring;
        if (n) buf[k++] = '"';
        for (; *s && k < lim; s++) {
            unsigned char ch = (unsigned char)*s;
            if (ch == '"' || ch == '\\') buf[k++] = '\\', buf[k++] = (char)ch;
            else if (ch < 0x20 || ch == 0x7f) k += (size_t)snprintf(buf + k, n - k, "\\%03d", ch);
            else buf[k++] = (char)ch;
        }
        snprintf(buf + k, n - k, "%s\"", *s ? "..." : "");
    } else if (cJSON_IsBool(v)) {
        snprintf(buf, n, "%s", cJSON_IsTrue(v) ? "true" : "false");
    } else if (cJSON_IsNull(v) || !v) {
        snprintf(buf, n, "nil");
    } else {
        snprintf(buf, n, "{...}");
    }
    return buf;
}

/* " (--set A=B)", or "" */
static void origin_suffix(const recipe_vctx *c, int o, char *buf, size_t n) {
    if (o < 0 || c->sets[o].origin) buf[0] = 0;
    else snprintf(buf, n, " (--set %s)", c->sets[o].set);
}

base_status recipe_value_error(const recipe_vctx *c, const char *path, const cJSON *v, const char *fmt, ...) {
    char msg[512], val[128], from[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int o = recipe_vctx_origin(c, v);
    if (o >= 0 && c->sets[o].origin) return base_err_set(BASE_ERR_INVALID, "%s: %s", c->sets[o].origin, msg);
    origin_suffix(c, o, from, sizeof from);
    return base_err_set(BASE_ERR_INVALID, "%s: %s = %s: %s%s", c->file, path,
                        recipe_value_text(v, val, sizeof val), msg, from);
}

base_status recipe_key_error(const recipe_vctx *c, const cJSON *v, const char *fmt, ...) {
    char msg[1024], from[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int o = recipe_vctx_origin(c, v);
    if (o >= 0 && c->sets[o].origin) return base_err_set(BASE_ERR_INVALID, "%s: %s", c->sets[o].origin, msg);
    origin_suffix(c, o, from, sizeof from);
    return base_err_set(BASE_ERR_INVALID, "%s: %s%s", c->file, msg, from);
}

/* ---- keys ------------------------------------------------------------------ */

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

/* ---- values ---------------------------------------------------------------- */

static base_status validate_object(recipe_vctx *c, cJSON *obj, const recipe_key *schema, const recipe_key *extra,
                                   const char *path);

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

cJSON *recipe_reward_spec_list(const char *spec) { return parse_reward_spec(spec); }

cJSON *recipe_reward_spec_table(const char *spec) {
    cJSON *one = parse_reward_spec(spec);
    cJSON *item = cJSON_DetachItemFromArray(one, 0);
    cJSON_Delete(one);
    return item;
}

/* obj.key = nv in place of v (overrides that gave v now point at nv). */
static void replace_key(recipe_vctx *c, cJSON *obj, cJSON *v, const char *key, cJSON *nv) {
    recipe_vctx_replaced(c, v, nv);
    cJSON_ReplaceItemInObjectCaseSensitive(obj, key, nv);
}

static base_status check_number(recipe_vctx *c, const char *sub, const cJSON *v, const recipe_key *k) {
    if (recipe_range_ok(k, v->valuedouble)) return BASE_OK;
    char cond[96];
    recipe_range_text(k, cond, sizeof cond);
    if (!cond[0]) return recipe_value_error(c, sub, v, "must be a finite number");
    return recipe_value_error(c, sub, v, "must be %s", cond);
}

static base_status check_value(recipe_vctx *c, cJSON *obj, cJSON *v, const recipe_key *k, const char *path) {
    char sub[512];
    snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", k->key);
    if (cJSON_IsNull(v) && k->dflt && !strcmp(k->dflt, "null")) return BASE_OK; /* "not set" */
    switch (k->type) {
    case RK_NUM:
        if (!cJSON_IsNumber(v)) return recipe_value_error(c, sub, v, "expected a number");
        return check_number(c, sub, v, k);
    case RK_INT:
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 9e15)
            return recipe_value_error(c, sub, v, "expected an integer");
        return check_number(c, sub, v, k);
    case RK_BOOL:
        if (!cJSON_IsBool(v)) return recipe_value_error(c, sub, v, "expected true or false");
        return BASE_OK;
    case RK_STR:
        if (!cJSON_IsString(v)) return recipe_value_error(c, sub, v, "expected a string");
        if (k->choices && !in_choices(k->choices, v->valuestring)) {
            char hint[128];
            recipe_choice_hint(k->choices, v->valuestring, 0, hint, sizeof hint);
            return recipe_value_error(c, sub, v, "must be one of %s%s", k->choices, hint);
        }
        return BASE_OK;
    case RK_STRLIST: {
        if (cJSON_IsString(v)) {
            cJSON *arr = cJSON_CreateArray();
            cJSON_AddItemToArray(arr, cJSON_CreateString(v->valuestring));
            replace_key(c, obj, v, k->key, arr);
            v = arr;
        }
        if (!cJSON_IsArray(v)) return recipe_value_error(c, sub, v, "expected a string or a list of strings");
        int i = 1;
        for (cJSON *e = v->child; e; e = e->next, i++) {
            char item[600];
            snprintf(item, sizeof item, "%s[%d]", sub, i);
            if (!cJSON_IsString(e)) return recipe_value_error(c, item, e, "expected a string");
            if (k->choices && !in_choices(k->choices, e->valuestring)) {
                char hint[128];
                recipe_choice_hint(k->choices, e->valuestring, 0, hint, sizeof hint);
                return recipe_value_error(c, item, e, "must be one of %s%s", k->choices, hint);
            }
        }
        return BASE_OK;
    }
    case RK_DATASETS: {
        if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0) {
            replace_key(c, obj, v, k->key, cJSON_CreateObject());
            return BASE_OK;
        }
        if (!cJSON_IsObject(v)) return recipe_value_error(c, sub, v, "expected a table of named datasets");
        for (cJSON *d = v->child; d; d = d->next) {
            if (cJSON_IsString(d)) {
                cJSON *t = cJSON_CreateObject();
                cJSON_AddStringToObject(t, "path", d->valuestring);
                char *name = base_xstrdup(d->string);
                recipe_vctx_replaced(c, d, cJSON_GetObjectItemCaseSensitive(t, "path"));
                cJSON_ReplaceItemInObjectCaseSensitive(v, name, t);
                free(name);
                d = t;
            }
            char dpath[600];
            snprintf(dpath, sizeof dpath, "%s.%s", sub, d->string);
            if (!cJSON_IsObject(d)) return recipe_value_error(c, dpath, d, "expected a dataset table or a path");
            base_status s = validate_object(c, d, recipe_schema_dataset(), NULL, dpath);
            if (s) return s;
        }
        return BASE_OK;
    }
    case RK_REWARDS: {
        if (cJSON_IsString(v)) {
            cJSON *nv = parse_reward_spec(v->valuestring);
            replace_key(c, obj, v, k->key, nv);
            v = nv;
        }
        if (!cJSON_IsArray(v)) return recipe_value_error(c, sub, v, "expected a list of rewards");
        int i = 0;
        for (cJSON *r = v->child; r; r = r->next, i++) {
            char rpath[600];
            snprintf(rpath, sizeof rpath, "%s[%d]", sub, i + 1);
            if (cJSON_IsString(r)) {
                cJSON *one = parse_reward_spec(r->valuestring);
                cJSON *item = cJSON_DetachItemFromArray(one, 0);
                cJSON_Delete(one);
                if (!item) return recipe_value_error(c, rpath, r, "expected a reward table or \"script:weight\"");
                recipe_vctx_replaced(c, r, item);
                cJSON_ReplaceItemInArray(v, i, item);
                r = item;
            }
            if (!cJSON_IsObject(r))
                return recipe_value_error(c, rpath, r, "expected a reward table or \"script:weight\"");
            base_status s = validate_object(c, r, recipe_schema_reward(), NULL, rpath);
            if (s) return s;
        }
        return BASE_OK;
    }
    case RK_TABLE:
        if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0) { /* Lua's {} */
            replace_key(c, obj, v, k->key, cJSON_CreateObject());
            return BASE_OK;
        }
        if (!cJSON_IsObject(v)) return recipe_value_error(c, sub, v, "expected a table of named values");
        return BASE_OK;
    case RK_SUB:
        if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0) { /* Lua's {}: every key at its default */
            cJSON *t = cJSON_CreateObject();
            replace_key(c, obj, v, k->key, t);
            v = t;
        }
        if (!cJSON_IsObject(v)) return recipe_value_error(c, sub, v, "expected a table (keys: see docs/recipes.md)");
        return validate_object(c, v, k->sub, NULL, sub);
    case RK_STAGES: {
        if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
            return recipe_value_error(c, sub, v, "expected a non-empty list of stages");
        int i = 0;
        for (cJSON *st = v->child; st; st = st->next, i++) {
            char spath[600];
            snprintf(spath, sizeof spath, "%s[%d]", sub, i + 1);
            if (!cJSON_IsObject(st)) return recipe_value_error(c, spath, st, "expected a stage table");
            const cJSON *tv = cJSON_GetObjectItemCaseSensitive(st, "type");
            const char *type = cJSON_IsString(tv) ? tv->valuestring : NULL;
            const recipe_key *ks = recipe_schema_stage(type);
            if (!ks) {
                if (!tv) return recipe_key_error(c, NULL, "%s: missing 'type' (sft, grpo, sample or eval)", spath);
                char tpath[640], hint[128] = "";
                snprintf(tpath, sizeof tpath, "%s.type", spath);
                if (type) recipe_choice_hint("sft|grpo|sample|eval", type, 1, hint, sizeof hint);
                return recipe_value_error(c, tpath, tv, "must be one of sft|grpo|sample|eval%s", hint);
            }
            base_status s = validate_object(c, st, ks, recipe_schema_stage_common(), spath);
            if (s) return s;
        }
        return BASE_OK;
    }
    }
    return BASE_OK;
}

static base_status validate_object(recipe_vctx *c, cJSON *obj, const recipe_key *schema, const recipe_key *extra,
                                   const char *path) {
    for (cJSON *v = obj->child; v; v = v->next) {
        const recipe_key *k = find_key(schema, extra, v->string);
        if (!k) {
            char full[600], hint[400];
            snprintf(full, sizeof full, "%s%s%s", path, *path ? "." : "", v->string);
            recipe_unknown_key_hint(schema, extra, v->string, v, hint, sizeof hint);
            return recipe_key_error(c, v, "unknown key '%s'%s", full, hint);
        }
    }
    const recipe_key *tabs[2] = {extra, schema};
    for (int t = 0; t < 2; t++)
        for (const recipe_key *k = tabs[t]; k && k->key; k++) {
            cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, k->key);
            int dflt = !v;
            if (!v) {
                if (!k->dflt) {
                    char full[600];
                    snprintf(full, sizeof full, "%s%s%s", path, *path ? "." : "", k->key);
                    return recipe_key_error(c, NULL, "missing required key '%s' (%s)", full, k->doc);
                }
                v = cJSON_Parse(k->dflt);
                if (!v) base_die("recipe schema: bad default for %s: %s", k->key, k->dflt);
                cJSON_AddItemToObject(obj, k->key, v);
            }
            v = cJSON_GetObjectItemCaseSensitive(obj, k->key);
            base_status s = check_value(c, obj, v, k, path);
            if (!s && (k->flags & RF_PATH)) s = recipe_resolve_value(c, obj, k, path, dflt);
            if (s) return s;
        }
    return BASE_OK;
}

base_status recipe_validate_tree(recipe_vctx *c, cJSON *root) {
    return validate_object(c, root, recipe_schema_top(), NULL, "");
}

/* ---- single values (flags of commands without a recipe) -------------------- */

base_status recipe_check_number(const char *table, const char *key, double v, const char *what) {
    const recipe_key *t = !strcmp(table, "top")      ? recipe_schema_top()
                          : !strcmp(table, "dataset") ? recipe_schema_dataset()
                          : !strcmp(table, "reward")  ? recipe_schema_reward()
                          : !strcmp(table, "stage")   ? recipe_schema_stage_common()
                                                      : recipe_schema_stage(table);
    const recipe_key *k = t ? find_key(t, NULL, key) : NULL;
    if (!k || (k->type != RK_NUM && k->type != RK_INT))
        base_die("recipe_check_number: no number key '%s' in the %s table", key, table);
    if (k->type == RK_INT && (v != floor(v) || fabs(v) > 9e15))
        return base_err_set(BASE_ERR_INVALID, "%s: expected an integer", what);
    if (recipe_range_ok(k, v)) return BASE_OK;
    char cond[96];
    recipe_range_text(k, cond, sizeof cond);
    return base_err_set(BASE_ERR_INVALID, "%s: must be %s", what, cond[0] ? cond : "a finite number");
}
