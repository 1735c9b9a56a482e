/*
 * Streaming safetensors writing (st_plan, io/st.h): the header of every
 * file is computed from the tensor list before any data, then each
 * tensor's bytes arrive piece by piece from a callback into one bounded
 * host buffer and are pwritten at their offsets. The same steps serve one
 * process (st_plan_write) and several writing one set of files together
 * (create by one, st_part_* by each, commit by one).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/st_internal.h"

typedef struct {
    char *name;
    tensor_dtype dt;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t nbytes;
    int file;     /* after layout */
    uint64_t pos; /* file offset of its first byte */
} ptensor;

typedef struct {
    char *name;
    uint64_t size; /* header + data */
    base_buf header;
} pfile;

struct st_plan {
    int n, cap;
    ptensor *t;
    int nmeta, capmeta;
    char **mkey, **mval;
    char *err; /* first bad st_plan_add */
    char *stem;
    int nfiles; /* 0 until laid out */
    pfile *f;
    uint64_t total;
};

st_plan *st_plan_new(void) { return base_xcalloc(1, sizeof(st_plan)); }

static void clear_layout(st_plan *p) {
    for (int i = 0; i < p->nfiles; i++) free(p->f[i].name), base_buf_free(&p->f[i].header);
    free(p->f);
    p->f = NULL;
    p->nfiles = 0;
    free(p->stem);
    p->stem = NULL;
}

void st_plan_free(st_plan *p) {
    if (!p) return;
    clear_layout(p);
    for (int i = 0; i < p->n; i++) free(p->t[i].name);
    for (int i = 0; i < p->nmeta; i++) free(p->mkey[i]), free(p->mval[i]);
    free(p->t), free(p->mkey), free(p->mval), free(p->err);
    free(p);
}

void st_plan_add(st_plan *p, const char *name, tensor_dtype dt, int ndim, const int64_t *shape) {
    uint64_t nbytes;
    const char *why = st_tensor_check(name, dt, ndim, shape, &nbytes);
    if (why) {
        if (!p->err) {
            base_buf b = {0};
            base_buf_printf(&b, "tensor '%s': %s", name ? name : "(null)", why);
            p->err = b.data;
        }
        return;
    }
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 16;
        p->t = base_xrealloc(p->t, (size_t)p->cap * sizeof *p->t);
    }
    ptensor *t = &p->t[p->n++];
    *t = (ptensor){.name = base_xstrdup(name), .dt = dt, .ndim = ndim, .nbytes = nbytes, .file = -1};
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
}

void st_plan_meta(st_plan *p, const char *key, const char *value) {
    for (int i = 0; i < p->nmeta; i++)
        if (!strcmp(p->mkey[i], key)) {
            free(p->mval[i]);
            p->mval[i] = base_xstrdup(value);
            return;
        }
    if (p->nmeta == p->capmeta) {
        p->capmeta = p->capmeta ? 2 * p->capmeta : 8;
        p->mkey = base_xrealloc(p->mkey, (size_t)p->capmeta * sizeof *p->mkey);
        p->mval = base_xrealloc(p->mval, (size_t)p->capmeta * sizeof *p->mval);
    }
    p->mkey[p->nmeta] = base_xstrdup(key);
    p->mval[p->nmeta++] = base_xstrdup(value);
}

int st_plan_count(const st_plan *p) { return p->n; }
int st_plan_nfiles(const st_plan *p) { return p->nfiles; }
const char *st_plan_file_name(const st_plan *p, int f) { return f >= 0 && f < p->nfiles ? p->f[f].name : NULL; }
int st_plan_file_of(const st_plan *p, int i) { return p->t[i].file; }
uint64_t st_plan_nbytes(const st_plan *p, int i) { return p->t[i].nbytes; }
uint64_t st_plan_total_bytes(const st_plan *p) { return p->total; }

/* The header and tensor positions of file f (its tensors: file == f, in order). */
static void build_file(st_plan *p, int f) {
    int n = 0;
    for (int i = 0; i < p->n; i++) n += p->t[i].file == f;
    st_hdr_tensor *ht = base_xmalloc((size_t)(n ? n : 1) * sizeof *ht);
    int k = 0;
    for (int i = 0; i < p->n; i++)
        if (p->t[i].file == f) ht[k++] = (st_hdr_tensor){p->t[i].name, p->t[i].dt, p->t[i].ndim, p->t[i].shape, p->t[i].nbytes};
    pfile *pf = &p->f[f];
    st_header_build(&pf->header, p->nmeta, p->mkey, p->mval, n, ht);
    free(ht);
    uint64_t pos = pf->header.len;
    for (int i = 0; i < p->n; i++)
        if (p->t[i].file == f) p->t[i].pos = pos, pos += p->t[i].nbytes;
    pf->size = pos;
}

base_status st_plan_layout(st_plan *p, const char *stem, uint64_t max_shard_bytes) {
    clear_layout(p);
    if (!stem || !*stem || strchr(stem, '/'))
        return base_err_set(BASE_ERR_INVALID, "st_plan_layout: bad file stem '%s'", stem ? stem : "(null)");
    if (p->err) return base_err_set(BASE_ERR_INVALID, "%s.safetensors: %s", stem, p->err);
    const char **names = base_xmalloc((size_t)(p->n ? p->n : 1) * sizeof *names);
    for (int i = 0; i < p->n; i++) names[i] = p->t[i].name;
    base_buf what = {0};
    base_buf_printf(&what, "%s.safetensors", stem);
    base_status s = st_check_names(names, p->n, what.data);
    free(names);
    base_buf_free(&what);
    if (s) return s;
    p->stem = base_xstrdup(stem);
    p->total = 0;
    for (int i = 0; i < p->n; i++) p->total += p->t[i].nbytes;
    /* huggingface_hub's split: in order; a tensor over the limit alone in a
     * shard (appended at once); the current shard closed when the next
     * tensor would pass the limit */
    int nf = 0, cur = -1;
    uint64_t cur_size = 0;
    if (!max_shard_bytes || p->total <= max_shard_bytes) {
        for (int i = 0; i < p->n; i++) p->t[i].file = 0;
        nf = 1;
    } else {
        for (int i = 0; i < p->n; i++) {
            ptensor *t = &p->t[i];
            if (t->nbytes > max_shard_bytes) {
                t->file = nf++;
                continue;
            }
            if (cur >= 0 && cur_size + t->nbytes > max_shard_bytes) cur = -1;
            if (cur < 0) cur = nf++, cur_size = 0;
            t->file = cur;
            cur_size += t->nbytes;
        }
        if (nf == 0) nf = 1;
    }
    /* shard numbers in the order the shards were closed, as huggingface_hub
     * lists them: a shard's number is its position among the closed ones */
    int *order = base_xmalloc((size_t)nf * sizeof *order), *num = base_xmalloc((size_t)nf * sizeof *num), k = 0;
    if (nf > 1) {
        /* a shard is closed when a later tensor opens the next one, at the
         * end, or (alone over the limit) at once: replay the split */
        int open = -1;
        for (int i = 0; i < p->n; i++) {
            int f = p->t[i].file;
            if (p->t[i].nbytes > max_shard_bytes) {
                order[k++] = f;
                continue;
            }
            if (f != open) {
                if (open >= 0) order[k++] = open;
                open = f;
            }
        }
        if (open >= 0) order[k++] = open;
    } else {
        order[k++] = 0;
    }
    for (int j = 0; j < nf; j++) num[order[j]] = j;
    for (int i = 0; i < p->n; i++) p->t[i].file = num[p->t[i].file];
    free(order), free(num);
    p->nfiles = nf;
    p->f = base_xcalloc((size_t)nf, sizeof *p->f);
    for (int f = 0; f < nf; f++) {
        base_buf b = {0};
        if (nf == 1) base_buf_printf(&b, "%s.safetensors", stem);
        else base_buf_printf(&b, "%s-%05d-of-%05d.safetensors", stem, f + 1, nf);
        p->f[f].name = b.data;
        build_file(p, f);
    }
    return BASE_OK;
}

static char *tmp_path(const char *dir, const char *name) {
    base_buf b = {0};
    base_buf_printf(&b, "%s/%s.tmp", dir, name);
    return b.data;
}

base_status st_plan_create(const st_plan *p, const char *dir) {
    if (!p->nfiles) return base_err_set(BASE_ERR_INVALID, "st_plan_create: the plan is not laid out");
    base_status s = BASE_OK;
    for (int f = 0; f < p->nfiles && !s; f++) {
        char *tmp = tmp_path(dir, p->f[f].name);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            s = base_err_set(BASE_ERR_IO, "%s: %s", tmp, base_strerror_now());
        } else {
            if (st_write_all(fd, p->f[f].header.data, p->f[f].header.len) < 0)
                s = base_err_set(BASE_ERR_IO, "%s: writing the header: %s", tmp, base_strerror_now());
            else if (ftruncate(fd, (off_t)p->f[f].size) < 0)
                s = base_err_set(BASE_ERR_IO, "%s: ftruncate to %" PRIu64 " bytes: %s", tmp, p->f[f].size,
                                 base_strerror_now());
            if (close(fd) < 0 && !s) s = base_err_set(BASE_ERR_IO, "%s: close: %s", tmp, base_strerror_now());
        }
        free(tmp);
    }
    if (s) st_plan_abandon(p, dir);
    return s;
}

struct st_part {
    const st_plan *p;
    char *dir;
    int *fd; /* [nfiles], -1: not opened */
    char *buf;
    size_t cap, peak;
};

st_part *st_part_open(const st_plan *p, const char *dir, size_t buf_bytes) {
    st_part *w = base_xcalloc(1, sizeof *w);
    w->p = p;
    w->dir = base_xstrdup(dir);
    w->fd = base_xmalloc((size_t)(p->nfiles ? p->nfiles : 1) * sizeof *w->fd);
    for (int f = 0; f < p->nfiles; f++) w->fd[f] = -1;
    w->cap = buf_bytes ? buf_bytes : ST_BUF_DEFAULT;
    return w;
}

static int pwrite_all(int fd, const char *c, size_t n, uint64_t pos) {
    while (n) {
        ssize_t r = pwrite(fd, c, n > (1u << 30) ? (1u << 30) : n, (off_t)pos);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        c += r, pos += (uint64_t)r, n -= (size_t)r;
    }
    return 0;
}

base_status st_part_put(st_part *w, int i, uint64_t off, uint64_t n, st_fill_fn fill, void *ctx) {
    const st_plan *p = w->p;
    if (!p->nfiles) return base_err_set(BASE_ERR_INVALID, "st_part_put: the plan is not laid out");
    if (i < 0 || i >= p->n || off > p->t[i].nbytes || n > p->t[i].nbytes - off)
        return base_err_set(BASE_ERR_INVALID, "st_part_put: bytes [%" PRIu64 ", +%" PRIu64 ") outside tensor %d", off,
                            n, i);
    if (!n) return BASE_OK;
    const ptensor *t = &p->t[i];
    const char *name = p->f[t->file].name;
    if (w->fd[t->file] < 0) {
        char *tmp = tmp_path(w->dir, name);
        w->fd[t->file] = open(tmp, O_WRONLY | O_CLOEXEC);
        base_status s = w->fd[t->file] < 0 ? base_err_set(BASE_ERR_IO, "%s: %s", tmp, base_strerror_now()) : BASE_OK;
        free(tmp);
        if (s) return s;
    }
    if (!w->buf) { /* no larger than the largest tensor: small models stay small */
        uint64_t most = 0;
        for (int k = 0; k < p->n; k++)
            if (p->t[k].nbytes > most) most = p->t[k].nbytes;
        if (most < w->cap) w->cap = (size_t)most;
        w->buf = base_xmalloc(w->cap);
    }
    while (n) {
        size_t k = n < w->cap ? (size_t)n : w->cap;
        if (k > w->peak) w->peak = k;
        base_status s = fill(ctx, i, off, w->buf, k);
        if (s) return base_err_wrap(s, "%s/%s: tensor '%s'", w->dir, name, t->name);
        if (pwrite_all(w->fd[t->file], w->buf, k, t->pos + off) < 0)
            return base_err_set(BASE_ERR_IO, "%s/%s.tmp: writing tensor '%s': %s", w->dir, name, t->name,
                                base_strerror_now());
        off += k, n -= k;
    }
    return BASE_OK;
}

base_status st_part_close(st_part *w, size_t *peak) {
    base_status s = BASE_OK;
    for (int f = 0; f < w->p->nfiles; f++) {
        if (w->fd[f] < 0) continue;
        if (fsync(w->fd[f]) < 0 && !s)
            s = base_err_set(BASE_ERR_IO, "%s/%s.tmp: fsync: %s", w->dir, w->p->f[f].name, base_strerror_now());
        if (close(w->fd[f]) < 0 && !s)
            s = base_err_set(BASE_ERR_IO, "%s/%s.tmp: close: %s", w->dir, w->p->f[f].name, base_strerror_now());
    }
    if (peak) *peak = w->peak;
    free(w->fd), free(w->buf), free(w->dir), free(w);
    return s;
}

static int cmp_idx(const void *a, const void *b, void *ctx) {
    const ptensor *t = ctx;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

/* JSON string for the index (json.dumps' escapes for what names hold). */
static void index_str(base_buf *b, const char *s) {
    base_buf_puts(b, "\"");
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') base_buf_printf(b, "\\%c", *c);
        else if (*c < 0x20) base_buf_printf(b, "\\u%04x", *c);
        else base_buf_append(b, c, 1);
    }
    base_buf_puts(b, "\"");
}

base_status st_plan_commit(const st_plan *p, const char *dir) {
    if (!p->nfiles) return base_err_set(BASE_ERR_INVALID, "st_plan_commit: the plan is not laid out");
    base_status s = BASE_OK;
    for (int f = 0; f < p->nfiles && !s; f++) {
        char *tmp = tmp_path(dir, p->f[f].name), *dst = base_path_join(dir, p->f[f].name);
        struct stat sb;
        if (stat(tmp, &sb) < 0) s = base_err_set(BASE_ERR_IO, "%s: %s", tmp, base_strerror_now());
        else if ((uint64_t)sb.st_size != p->f[f].size)
            s = base_err_set(BASE_ERR_IO, "%s: %lld bytes, the layout says %" PRIu64, tmp, (long long)sb.st_size,
                             p->f[f].size);
        else if (rename(tmp, dst) < 0)
            s = base_err_set(BASE_ERR_IO, "%s: rename to %s: %s", tmp, dst, base_strerror_now());
        free(tmp), free(dst);
    }
    base_buf nm = {0};
    base_buf_printf(&nm, "%s.safetensors.index.json", p->stem);
    char *ipath = base_path_join(dir, nm.data);
    if (!s && p->nfiles > 1) {
        int *idx = base_xmalloc((size_t)(p->n ? p->n : 1) * sizeof *idx);
        for (int i = 0; i < p->n; i++) idx[i] = i;
        qsort_r(idx, (size_t)p->n, sizeof *idx, cmp_idx, p->t);
        base_buf b = {0};
        base_buf_printf(&b, "{\n  \"metadata\": {\n    \"total_size\": %" PRIu64 "\n  },\n  \"weight_map\": {", p->total);
        for (int k = 0; k < p->n; k++) {
            base_buf_puts(&b, k ? ",\n    " : "\n    ");
            index_str(&b, p->t[idx[k]].name);
            base_buf_puts(&b, ": ");
            index_str(&b, p->f[p->t[idx[k]].file].name);
        }
        base_buf_puts(&b, p->n ? "\n  }\n}\n" : "}\n}\n");
        s = base_write_file_atomic(ipath, b.data, b.len);
        base_buf_free(&b);
        free(idx);
    } else if (!s && unlink(ipath) < 0 && errno != ENOENT) { /* a stale index would shadow the new file */
        s = base_err_set(BASE_ERR_IO, "%s: %s", ipath, base_strerror_now());
    }
    free(ipath);
    base_buf_free(&nm);
    st_fsync_dir(dir);
    if (s) st_plan_abandon(p, dir);
    return s;
}

void st_plan_abandon(const st_plan *p, const char *dir) {
    for (int f = 0; f < p->nfiles; f++) {
        char *tmp = tmp_path(dir, p->f[f].name);
        (void)unlink(tmp);
        free(tmp);
    }
}

base_status st_plan_write(const st_plan *p, const char *dir, size_t buf_bytes, st_fill_fn fill, void *ctx,
                          size_t *peak) {
    if (peak) *peak = 0;
    base_status s = st_plan_create(p, dir);
    if (s) return s;
    st_part *w = st_part_open(p, dir, buf_bytes);
    for (int i = 0; i < p->n && !s; i++) s = st_part_put(w, i, 0, p->t[i].nbytes, fill, ctx);
    base_status c = st_part_close(w, peak);
    if (!s) s = c;
    if (!s) return st_plan_commit(p, dir);
    st_plan_abandon(p, dir);
    return s;
}
