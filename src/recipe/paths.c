/*
 * The paths of a recipe (keys with RF_PATH in the schema), made absolute
 * while the tree is validated: a relative path that a recipe file names is
 * taken against that file's directory, one that came from an override, a
 * command-line flag or a default against the current directory. So a
 * copied recipe runs from any directory, and config.resolved.lua (which
 * holds the absolute paths) runs as it is. A reward script given by a bare
 * name is a built-in one and must exist: an unknown name lists them.
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "reward/reward.h"

char *recipe_abs_path(const char *base, const char *p) {
    base_buf in = {0};
    if (p[0] == '/') base_buf_puts(&in, p);
    else base_buf_printf(&in, "%s/%s", base, p);
    /* segments, with "." dropped and "NAME/.." folded where NAME is a real
     * directory: after a symbolic link (or a name that does not exist) the
     * rest stays as written, since ".." then means what the kernel says */
    base_buf out = {0};
    int literal = 0;
    char *save = NULL;
    for (char *seg = strtok_r(in.data, "/", &save); seg; seg = strtok_r(NULL, "/", &save)) {
        if (!literal && !strcmp(seg, ".")) continue;
        if (!literal && !strcmp(seg, "..")) {
            if (out.len == 0) continue; /* "/.." is "/" */
            struct stat st;
            if (lstat(out.data, &st) == 0 && S_ISDIR(st.st_mode)) {
                char *slash = strrchr(out.data, '/');
                out.len = (size_t)(slash - out.data);
                out.data[out.len] = 0;
                continue;
            }
            literal = 1;
        }
        base_buf_printf(&out, "/%s", seg);
    }
    if (out.len == 0) base_buf_puts(&out, "/");
    base_buf_free(&in);
    return out.data;
}

static int is_builtin_name(const char *script) {
    size_t n = strlen(script);
    return !strchr(script, '/') && !(n > 4 && !strcmp(script + n - 4, ".lua")); /* reward_spec_add's rule */
}

/* The built-in reward scripts (NAME.lua in the built-in directory, not
 * lib_*.lua modules), sorted, comma-separated into b; the closest to
 * `name` into *best (malloc'd, NULL when none is close). */
static void builtin_names(const char *name, base_buf *b, char **best) {
    *best = NULL;
    DIR *d = opendir(reward_builtin_dir());
    if (!d) return;
    char **names = NULL;
    int n = 0, bd = 1 << 30;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".lua") || !strncmp(e->d_name, "lib_", 4)) continue;
        names = base_xrealloc(names, (size_t)(n + 1) * sizeof *names);
        names[n] = base_xstrdup(e->d_name);
        names[n][len - 4] = 0;
        int dist = recipe_edit_distance(name, names[n]);
        if (dist < bd) bd = dist, free(*best), *best = base_xstrdup(names[n]);
        n++;
    }
    closedir(d);
    int lim = (int)strlen(name) / 3 < 2 ? 2 : (int)strlen(name) / 3;
    if (bd > lim) free(*best), *best = NULL;
    for (int i = 1; i < n; i++) /* insertion sort: a few dozen names */
        for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    for (int i = 0; i < n; i++) {
        base_buf_printf(b, "%s%s", i ? ", " : "", names[i]);
        free(names[i]);
    }
    free(names);
}

static base_status check_builtin(recipe_vctx *c, const cJSON *v, const char *sub) {
    base_buf p = {0};
    base_buf_printf(&p, "%s/%s.lua", reward_builtin_dir(), v->valuestring);
    struct stat st;
    int ok = stat(p.data, &st) == 0 && S_ISREG(st.st_mode);
    base_buf_free(&p);
    if (ok) return BASE_OK;
    base_buf names = {0};
    char *best;
    builtin_names(v->valuestring, &names, &best);
    char hint[160] = "";
    if (best) snprintf(hint, sizeof hint, " (did you mean '%s'?)", best);
    base_status s = recipe_value_error(c, sub, v,
                                       "no built-in reward script of that name%s; the built-in ones (%s): %s; a "
                                       "script file needs a '/' or '.lua' in its path",
                                       hint, reward_builtin_dir(), names.len ? names.data : "none");
    free(best);
    base_buf_free(&names);
    return s;
}

base_status recipe_resolve_value(recipe_vctx *c, cJSON *obj, const recipe_key *k, const char *path, int dflt) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, k->key);
    if (!cJSON_IsString(v)) return BASE_OK; /* null: not set */
    const char *p = v->valuestring;
    char sub[600];
    snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", k->key);
    if (!strcmp(k->key, "path") && !strncmp(p, "stage:", 6)) return BASE_OK; /* a sample stage's output */
    if (!strcmp(k->key, "init_from") && !strcmp(p, "model")) return BASE_OK;
    if (!strcmp(k->key, "script") && is_builtin_name(p)) return check_builtin(c, v, sub);
    if (!*p) return recipe_value_error(c, sub, v, "expected a path");
    if (p[0] == '/') return BASE_OK;
    /* the recipe file's directory, unless an override, a flag or the
     * default gave the value */
    const char *base = !dflt && recipe_vctx_origin(c, v) < 0 ? c->dir : c->cwd;
    char *abs = recipe_abs_path(base, p);
    cJSON *nv = cJSON_CreateString(abs);
    free(abs);
    recipe_vctx_replaced(c, v, nv);
    cJSON_ReplaceItemInObjectCaseSensitive(obj, k->key, nv);
    return BASE_OK;
}
