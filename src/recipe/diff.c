/*
 * Two resolved recipes compared key by key (grpo run --resume: the recipe
 * now against the run's config.resolved.lua), walking the schema so that
 * every difference is named as errors name keys (stages[2].learning_rate)
 * and classed by its row: a key without RF_NEUTRAL alters the trained
 * result. See recipe.h.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct {
    recipe_change *items;
    int n, cap;
} diff_list;

static char *shown(const cJSON *v) {
    if (!v || cJSON_IsNull(v)) return base_xstrdup("(unset)");
    if (cJSON_IsObject(v) || cJSON_IsArray(v)) { /* a params table, a list: compact JSON, shortened */
        char *t = cJSON_PrintUnformatted(v);
        if (!t) base_die("cJSON_PrintUnformatted: out of memory");
        char *s = base_xstrdup(t);
        cJSON_free(t);
        if (strlen(s) > 80) strcpy(s + 72, " ...");
        return s;
    }
    char buf[128];
    return base_xstrdup(recipe_value_text(v, buf, sizeof buf));
}

static void add(diff_list *d, const char *key, const cJSON *before, const cJSON *after, int alters) {
    if (d->n == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 16;
        d->items = base_xrealloc(d->items, (size_t)d->cap * sizeof *d->items);
    }
    d->items[d->n++] = (recipe_change){base_xstrdup(key), shown(before), shown(after), alters};
}

/* Equal values; an absent key is null (config.resolved.lua leaves nil out). */
static int same(const cJSON *a, const cJSON *b) {
    int an = !a || cJSON_IsNull(a), bn = !b || cJSON_IsNull(b);
    if (an || bn) return an && bn;
    return cJSON_Compare(a, b, 1);
}

static void diff_object(diff_list *d, const cJSON *a, const cJSON *b, const recipe_key *schema,
                        const recipe_key *extra, const char *path);

static void diff_value(diff_list *d, const cJSON *a, const cJSON *b, const recipe_key *k, const char *path) {
    if (same(a, b)) return;
    char sub[600];
    snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", k->key);
    int alters = !(k->flags & RF_NEUTRAL);
    if (k->type == RK_DATASETS && cJSON_IsObject(a) && cJSON_IsObject(b)) {
        for (const cJSON *x = a->child; x; x = x->next) {
            char dp[700];
            snprintf(dp, sizeof dp, "%s.%s", sub, x->string);
            const cJSON *y = cJSON_GetObjectItemCaseSensitive(b, x->string);
            if (cJSON_IsObject(x) && cJSON_IsObject(y)) diff_object(d, x, y, recipe_schema_dataset(), NULL, dp);
            else if (!same(x, y)) add(d, dp, x, y, alters);
        }
        for (const cJSON *y = b->child; y; y = y->next)
            if (!cJSON_GetObjectItemCaseSensitive(a, y->string)) {
                char dp[700];
                snprintf(dp, sizeof dp, "%s.%s", sub, y->string);
                add(d, dp, NULL, y, alters);
            }
        return;
    }
    if (k->type == RK_SUB && cJSON_IsObject(a) && cJSON_IsObject(b)) {
        diff_object(d, a, b, k->sub, NULL, sub);
        return;
    }
    if ((k->type == RK_REWARDS || k->type == RK_STAGES) && cJSON_IsArray(a) && cJSON_IsArray(b)) {
        int na = cJSON_GetArraySize(a), nb = cJSON_GetArraySize(b);
        for (int i = 0; i < (na > nb ? na : nb); i++) {
            const cJSON *x = cJSON_GetArrayItem(a, i), *y = cJSON_GetArrayItem(b, i);
            char ip[700];
            snprintf(ip, sizeof ip, "%s[%d]", sub, i + 1);
            if (!cJSON_IsObject(x) || !cJSON_IsObject(y)) {
                if (!same(x, y)) add(d, ip, x, y, alters);
                continue;
            }
            if (k->type == RK_REWARDS) {
                diff_object(d, x, y, recipe_schema_reward(), NULL, ip);
                continue;
            }
            const cJSON *tx = cJSON_GetObjectItemCaseSensitive(x, "type"), *ty = cJSON_GetObjectItemCaseSensitive(y, "type");
            const recipe_key *st = cJSON_IsString(tx) ? recipe_schema_stage(tx->valuestring) : NULL;
            if (!st || !same(tx, ty)) { /* another kind of stage: the whole stage differs */
                add(d, ip, x, y, alters);
                continue;
            }
            diff_object(d, x, y, st, recipe_schema_stage_common(), ip);
        }
        return;
    }
    add(d, sub, a, b, alters);
}

static void diff_object(diff_list *d, const cJSON *a, const cJSON *b, const recipe_key *schema,
                        const recipe_key *extra, const char *path) {
    const recipe_key *tabs[2] = {extra, schema};
    for (int t = 0; t < 2; t++)
        for (const recipe_key *k = tabs[t]; k && k->key; k++)
            diff_value(d, cJSON_GetObjectItemCaseSensitive(a, k->key), cJSON_GetObjectItemCaseSensitive(b, k->key), k,
                       path);
}

base_status recipe_changes(const recipe *r, const char *path, recipe_change **out, int *n) {
    *out = NULL;
    *n = 0;
    recipe *old;
    base_status s = recipe_load(path, NULL, 0, &old);
    if (s) return s;
    diff_list d = {0};
    diff_object(&d, recipe_root(old), recipe_root(r), recipe_schema_top(), NULL, "");
    recipe_free(old);
    *out = d.items;
    *n = d.n;
    return BASE_OK;
}

void recipe_changes_free(recipe_change *c, int n) {
    for (int i = 0; i < n; i++) free(c[i].key), free(c[i].before), free(c[i].after);
    free(c);
}
