/*
 * A checkpoint directory: one safetensors file or a sharded set described
 * by model.safetensors.index.json ({"metadata": {...}, "weight_map":
 * {tensor name: shard file}}). The index and the shards must agree
 * exactly: every listed tensor is in the shard the index names, every
 * tensor of a shard is listed (under that shard), and no name is in two
 * files. Checks are O(n log n) (sorted merges): V3 has ~92k tensors.
 */
#include "io/st.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define ST_INDEX "model.safetensors.index.json"

struct st_dir {
    char *path;
    char *index; /* path of the index file, or NULL */
    int nfiles;
    st_file **files; /* [nfiles] */
    int n;
    st_tensor *t; /* [n] sorted by name; shard = index into files */
    size_t total;
};

typedef struct {
    const char *name;
    int shard;
} mapent;

static int cmp_tensor(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}
static int cmp_mapent(const void *a, const void *b) {
    return strcmp(((const mapent *)a)->name, ((const mapent *)b)->name);
}
static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void st_dir_close(st_dir *d) {
    if (!d) return;
    for (int i = 0; i < d->nfiles; i++) st_close(d->files[i]);
    free(d->files);
    free(d->t);
    free(d->index);
    free(d->path);
    free(d);
}

/* A shard name from the index must stay inside the directory. */
static int safe_rel_name(const char *s) {
    if (!*s || s[0] == '/') return 0;
    for (const char *p = s; *p;) {
        const char *q = strchr(p, '/');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        if (n == 0 || (n == 2 && p[0] == '.' && p[1] == '.')) return 0;
        p += n + (q ? 1 : 0);
    }
    return 1;
}

/* Open files[0..nfiles) (names relative to d->path), merge their tensors,
 * sort by name and reject names found in two files. */
static base_status open_files(st_dir *d, char **names, int nfiles) {
    d->files = base_xcalloc((size_t)nfiles, sizeof *d->files);
    int total = 0;
    for (int i = 0; i < nfiles; i++) {
        char *p = base_path_join(d->path, names[i]);
        base_status s = st_open(p, &d->files[i]);
        free(p);
        if (s) return s;
        d->nfiles = i + 1;
        total += st_count(d->files[i]);
    }
    d->t = base_xmalloc((size_t)(total ? total : 1) * sizeof *d->t);
    int k = 0;
    for (int i = 0; i < nfiles; i++)
        for (int j = 0; j < st_count(d->files[i]); j++) {
            d->t[k] = *st_at(d->files[i], j);
            d->t[k].shard = i;
            d->total += d->t[k].nbytes;
            k++;
        }
    d->n = total;
    qsort(d->t, (size_t)total, sizeof *d->t, cmp_tensor);
    for (int i = 1; i < total; i++)
        if (!strcmp(d->t[i].name, d->t[i - 1].name)) {
            const char *a = st_path(d->files[d->t[i - 1].shard]), *b = st_path(d->files[d->t[i].shard]);
            if (strcmp(a, b) > 0) {
                const char *x = a;
                a = b;
                b = x;
            }
            return base_err_set(BASE_ERR_INVALID, "%s: tensor '%s' is in both %s and %s", d->path,
                                d->t[i].name, a, b);
        }
    return BASE_OK;
}

static base_status open_indexed(st_dir *d) {
    cJSON *idx = NULL;
    base_status s = base_json_parse_file(d->index, &idx);
    if (s) return s;
    const char *I = d->index;
    char **names = NULL;
    mapent *map = NULL;
    int nnames = 0, nmap = 0;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
    if (!cJSON_IsObject(idx) || !cJSON_IsObject(wm)) {
        s = base_err_set(BASE_ERR_PARSE, "%s: no \"weight_map\" object", I);
        goto out;
    }
    nmap = cJSON_GetArraySize(wm);
    if (nmap == 0) {
        s = base_err_set(BASE_ERR_INVALID, "%s: weight_map is empty", I);
        goto out;
    }
    /* distinct shard names, sorted */
    names = base_xmalloc((size_t)nmap * sizeof *names);
    for (const cJSON *it = wm->child; it; it = it->next) {
        if (!cJSON_IsString(it)) {
            s = base_err_set(BASE_ERR_PARSE, "%s: weight_map['%s'] is not a file name", I, it->string);
            goto out;
        }
        if (!safe_rel_name(it->valuestring)) {
            s = base_err_set(BASE_ERR_INVALID,
                             "%s: weight_map['%s'] = '%s' is not a file inside the directory", I,
                             it->string, it->valuestring);
            goto out;
        }
        names[nnames++] = it->valuestring;
    }
    qsort(names, (size_t)nnames, sizeof *names, cmp_str);
    int u = 0;
    for (int i = 0; i < nnames; i++)
        if (!u || strcmp(names[i], names[u - 1])) names[u++] = names[i];
    nnames = u;
    s = open_files(d, names, nnames);
    if (s) goto out;
    /* the index's view, sorted by name, with shard numbers */
    map = base_xmalloc((size_t)nmap * sizeof *map);
    int k = 0;
    for (const cJSON *it = wm->child; it; it = it->next, k++) {
        char **hit = bsearch(&it->valuestring, names, (size_t)nnames, sizeof *names, cmp_str);
        map[k].name = it->string;
        map[k].shard = (int)(hit - names);
    }
    qsort(map, (size_t)nmap, sizeof *map, cmp_mapent);
    for (int i = 1; i < nmap; i++)
        if (!strcmp(map[i].name, map[i - 1].name)) {
            s = base_err_set(BASE_ERR_PARSE, "%s: tensor '%s' is listed twice in weight_map", I,
                             map[i].name);
            goto out;
        }
    /* merge the two sorted lists */
    int i = 0, j = 0;
    while (i < nmap || j < d->n) {
        int c = i == nmap ? 1 : j == d->n ? -1 : strcmp(map[i].name, d->t[j].name);
        if (c < 0 || (c == 0 && map[i].shard != d->t[j].shard)) {
            s = base_err_set(BASE_ERR_INVALID, "%s: tensor '%s' is mapped to %s, which does not contain it",
                             I, map[i].name, names[map[i].shard]);
            goto out;
        }
        if (c > 0) {
            s = base_err_set(BASE_ERR_INVALID, "%s: tensor '%s' is not listed in %s",
                             st_path(d->files[d->t[j].shard]), d->t[j].name, I);
            goto out;
        }
        i++, j++;
    }
out:
    free(map);
    free(names);
    cJSON_Delete(idx);
    return s;
}

static int is_st_name(const struct dirent *e) {
    size_t n = strlen(e->d_name);
    return n > 12 && !strcmp(e->d_name + n - 12, ".safetensors") && e->d_name[0] != '.';
}

/* DIR/STEM.safetensors.index.json, else DIR/STEM.safetensors, else (any)
 * every *.safetensors file of DIR. */
static base_status open_stem(const char *dir, const char *stem, int any, st_dir **out) {
    *out = NULL;
    struct stat sb;
    if (stat(dir, &sb) < 0) return base_err_set(BASE_ERR_IO, "%s: %s", dir, base_strerror_now());
    if (!S_ISDIR(sb.st_mode)) return base_err_set(BASE_ERR_IO, "%s: not a directory", dir);
    st_dir *d = base_xcalloc(1, sizeof *d);
    d->path = base_xstrdup(dir);
    base_status s;
    base_buf iname = {0}, one = {0};
    base_buf_printf(&iname, "%s.safetensors.index.json", stem);
    base_buf_printf(&one, "%s.safetensors", stem);
    char *p = base_path_join(dir, iname.data);
    if (base_file_exists(p)) {
        d->index = p;
        s = open_indexed(d);
    } else {
        free(p);
        p = base_path_join(dir, one.data);
        if (base_file_exists(p)) {
            s = open_files(d, &one.data, 1);
        } else if (!any) {
            s = base_err_set(BASE_ERR_IO, "%s: no %s or %s", dir, iname.data, one.data);
        } else {
            struct dirent **ents = NULL;
            int n = scandir(dir, &ents, is_st_name, alphasort);
            if (n < 0) {
                s = base_err_set(BASE_ERR_IO, "%s: %s", dir, base_strerror_now());
            } else if (n == 0) {
                s = base_err_set(BASE_ERR_IO,
                                 "%s: no " ST_INDEX ", model.safetensors or *.safetensors file", dir);
            } else {
                char **names = base_xmalloc((size_t)n * sizeof *names);
                for (int i = 0; i < n; i++) names[i] = ents[i]->d_name;
                s = open_files(d, names, n);
                free(names);
            }
            for (int i = 0; i < n; i++) free(ents[i]);
            free(ents);
        }
        free(p);
    }
    base_buf_free(&iname), base_buf_free(&one);
    if (s) {
        st_dir_close(d);
        return s;
    }
    *out = d;
    return BASE_OK;
}

base_status st_dir_open(const char *dir, st_dir **out) { return open_stem(dir, "model", 1, out); }

base_status st_dir_open_stem(const char *dir, const char *stem, st_dir **out) {
    if (!stem || !*stem || strchr(stem, '/')) {
        *out = NULL;
        return base_err_set(BASE_ERR_INVALID, "%s: bad file stem '%s'", dir, stem ? stem : "(null)");
    }
    return open_stem(dir, stem, 0, out);
}

int st_dir_count(const st_dir *d) { return d->n; }
const st_tensor *st_dir_at(const st_dir *d, int i) { return i >= 0 && i < d->n ? &d->t[i] : NULL; }
int st_dir_nfiles(const st_dir *d) { return d->nfiles; }
size_t st_dir_total_bytes(const st_dir *d) { return d->total; }
const st_file *st_dir_file(const st_dir *d, int i) {
    return i >= 0 && i < d->nfiles ? d->files[i] : NULL;
}
const char *st_dir_index_path(const st_dir *d) { return d->index; }
const char *st_dir_path(const st_dir *d) { return d->path; }
const char *st_dir_file_of(const st_dir *d, const st_tensor *t) {
    return t && t->shard >= 0 && t->shard < d->nfiles ? st_path(d->files[t->shard]) : NULL;
}

const st_tensor *st_dir_find(const st_dir *d, const char *name) {
    st_tensor key = {.name = name};
    return bsearch(&key, d->t, (size_t)d->n, sizeof *d->t, cmp_tensor);
}
