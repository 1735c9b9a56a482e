/*
 * Reward specs: "rewards/boxed_math.lua:1.0,think_format:0.2" and the same
 * as a C struct for recipes. Grammar of one entry (entries are separated by
 * commas outside braces):
 *     [NAME=]PATH[:WEIGHT][{KEY=VALUE;KEY=VALUE...}]
 * VALUE is a number, true/false, or a string (optionally in double quotes).
 * A PATH without '/' and without ".lua" is a built-in script.
 */
#include "reward/reward.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "reward/reward_config.h"

const char *reward_builtin_dir(void) {
    const char *e = getenv("GRPO_REWARDS_DIR");
    return e && *e ? e : GRPO_REWARDS_DIR;
}

static char *default_name(const char *path) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t n = strlen(b);
    if (n > 4 && !strcmp(b + n - 4, ".lua")) n -= 4;
    char *s = base_xmalloc(n + 1);
    memcpy(s, b, n);
    s[n] = 0;
    return s;
}

static int is_ident(const char *s, size_t n) {
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_')) return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_')) return 0;
    return 1;
}

base_status reward_spec_add(reward_spec *s, const char *path, double weight, const char *name,
                            const cJSON *params) {
    if (!path || !*path) return base_err_set(BASE_ERR_INVALID, "reward spec: empty script path");
    if (!isfinite(weight)) return base_err_set(BASE_ERR_INVALID, "reward spec: %s: weight is not finite", path);
    if (params && !cJSON_IsObject(params))
        return base_err_set(BASE_ERR_INVALID, "reward spec: %s: params must be an object", path);
    char *resolved;
    size_t pl = strlen(path);
    if (!strchr(path, '/') && !(pl > 4 && !strcmp(path + pl - 4, ".lua"))) {
        base_buf b = {0};
        base_buf_printf(&b, "%s/%s.lua", reward_builtin_dir(), path);
        resolved = b.data;
    } else {
        resolved = base_xstrdup(path);
    }
    char *nm = name && *name ? base_xstrdup(name) : default_name(resolved);
    for (int i = 0; i < s->n; i++) {
        if (!strcmp(s->fns[i].name, nm)) {
            base_status st = base_err_set(BASE_ERR_INVALID,
                                          "reward spec: two functions named '%s' (give one a name: NAME=PATH)", nm);
            free(nm);
            free(resolved);
            return st;
        }
    }
    s->fns = base_xrealloc(s->fns, sizeof *s->fns * (size_t)(s->n + 1));
    reward_fn_spec *f = &s->fns[s->n++];
    f->path = resolved;
    f->name = nm;
    f->weight = weight;
    f->params = params ? cJSON_Duplicate(params, 1) : NULL;
    return BASE_OK;
}

void reward_spec_free(reward_spec *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) {
        free(s->fns[i].path);
        free(s->fns[i].name);
        cJSON_Delete(s->fns[i].params);
    }
    free(s->fns);
    s->fns = NULL;
    s->n = 0;
}

static char *trim_dup(const char *p, size_t n) {
    while (n && isspace((unsigned char)*p)) p++, n--;
    while (n && isspace((unsigned char)p[n - 1])) n--;
    char *s = base_xmalloc(n + 1);
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}

/* "k=v;k=v" -> object */
static base_status parse_params(const char *txt, const char *entry, cJSON **out) {
    cJSON *o = cJSON_CreateObject();
    const char *p = txt;
    while (*p) {
        const char *semi = strchr(p, ';');
        size_t n = semi ? (size_t)(semi - p) : strlen(p);
        char *kv = trim_dup(p, n);
        p += n + (semi ? 1 : 0);
        if (!*kv) {
            free(kv);
            continue;
        }
        char *eq = strchr(kv, '=');
        if (!eq || !is_ident(kv, (size_t)(eq - kv))) {
            base_status st = base_err_set(BASE_ERR_PARSE, "reward spec entry '%s': parameter '%s' is not KEY=VALUE",
                                          entry, kv);
            free(kv);
            cJSON_Delete(o);
            return st;
        }
        *eq = 0;
        char *key = trim_dup(kv, strlen(kv));
        char *val = trim_dup(eq + 1, strlen(eq + 1));
        char *end;
        errno = 0;
        double d = strtod(val, &end);
        if (*val && !*end && !errno && isfinite(d)) cJSON_AddNumberToObject(o, key, d);
        else if (!strcmp(val, "true") || !strcmp(val, "false")) cJSON_AddBoolToObject(o, key, val[0] == 't');
        else {
            size_t vl = strlen(val);
            if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {
                val[vl - 1] = 0;
                cJSON_AddStringToObject(o, key, val + 1);
            } else {
                cJSON_AddStringToObject(o, key, val);
            }
        }
        free(key);
        free(val);
        free(kv);
    }
    *out = o;
    return BASE_OK;
}

static base_status parse_entry(reward_spec *s, const char *entry) {
    char *e = base_xstrdup(entry);
    cJSON *params = NULL;
    size_t n = strlen(e);
    base_status st = BASE_OK;
    if (n && e[n - 1] == '}') {
        char *open = strrchr(e, '{');
        if (!open) {
            st = base_err_set(BASE_ERR_PARSE, "reward spec entry '%s': '}' without '{'", entry);
            goto done;
        }
        e[n - 1] = 0;
        *open = 0;
        st = parse_params(open + 1, entry, &params);
        if (st) goto done;
    }
    char *name = NULL, *path = e;
    char *eq = strchr(e, '=');
    if (eq && is_ident(e, (size_t)(eq - e))) {
        *eq = 0;
        name = e;
        path = eq + 1;
    }
    double w = 1.0;
    char *colon = strrchr(path, ':');
    if (colon) {
        char *end;
        errno = 0;
        double d = strtod(colon + 1, &end);
        if (colon[1] && !*end && !errno) {
            w = d;
            *colon = 0;
        } else {
            st = base_err_set(BASE_ERR_PARSE, "reward spec entry '%s': weight '%s' is not a number", entry,
                              colon + 1);
            goto done;
        }
    }
    char *p = trim_dup(path, strlen(path));
    if (!*p) {
        free(p);
        st = base_err_set(BASE_ERR_PARSE, "reward spec entry '%s': no script path", entry);
        goto done;
    }
    st = reward_spec_add(s, p, w, name, params);
    free(p);
done:
    cJSON_Delete(params);
    free(e);
    return st;
}

base_status reward_spec_parse(const char *text, reward_spec *out) {
    memset(out, 0, sizeof *out);
    if (!text) return base_err_set(BASE_ERR_PARSE, "reward spec: empty");
    const char *p = text;
    int depth = 0;
    const char *start = p;
    for (;; p++) {
        if (*p == '{') depth++;
        else if (*p == '}') depth--;
        if ((*p == ',' && depth == 0) || *p == 0) {
            char *entry = trim_dup(start, (size_t)(p - start));
            if (*entry) {
                base_status st = parse_entry(out, entry);
                if (st) {
                    free(entry);
                    reward_spec_free(out);
                    return st;
                }
            }
            free(entry);
            if (*p == 0) break;
            start = p + 1;
        }
    }
    if (out->n == 0) return base_err_set(BASE_ERR_PARSE, "reward spec '%s': no scripts", text);
    return BASE_OK;
}
