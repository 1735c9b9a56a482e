/*
 * safetensors writing. Layout (what the Python `safetensors` package
 * writes and loads): u64 LE header length N, the JSON header padded with
 * spaces so that 8 + N is a multiple of 8 (the data section starts 8-byte
 * aligned in the file and in any mapping of it), then the tensors' bytes
 * back to back in the order added (the format forbids gaps between them).
 *
 * The header is printed by hand, not through cJSON: cJSON prints integers
 * above 2^31 in %g form, and byte offsets of real checkpoints pass 4 GiB.
 *
 * Atomic: the file is written to PATH.tmp.PID, fsynced, renamed over PATH
 * and the directory fsynced, so a crash leaves the old file or the new one.
 * A failure removes the temporary file and leaves PATH untouched.
 */
#include "io/st_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *name;
    tensor_dtype dt;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
} wtensor;

struct st_writer {
    int n, cap;
    wtensor *t;
    int nmeta, capmeta;
    char **mkey, **mval;
    char *err; /* first bad st_writer_add, reported by st_writer_write */
};

st_writer *st_writer_new(void) { return base_xcalloc(1, sizeof(st_writer)); }

void st_writer_free(st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->t[i].name);
    for (int i = 0; i < w->nmeta; i++) free(w->mkey[i]), free(w->mval[i]);
    free(w->t);
    free(w->mkey);
    free(w->mval);
    free(w->err);
    free(w);
}

static void note_err(st_writer *w, const char *name, const char *why) {
    if (w->err) return;
    base_buf b = {0};
    base_buf_printf(&b, "tensor '%s': %s", name ? name : "(null)", why);
    w->err = b.data;
}

const char *st_tensor_check(const char *name, tensor_dtype dt, int ndim, const int64_t *shape, uint64_t *nbytes) {
    uint64_t numel = 1;
    *nbytes = 0;
    if (!name) return "no name";
    if ((unsigned)dt >= TENSOR_DTYPE_COUNT) return "bad dtype";
    if (ndim < 0 || ndim > ST_MAX_DIMS) return "more than 4 dims";
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return "negative dim";
        if (shape[i] && numel > (UINT64_C(1) << 53) / (uint64_t)shape[i]) return "too many elements";
        numel *= (uint64_t)shape[i];
    }
    *nbytes = numel * tensor_dtype_size(dt);
    return NULL;
}

void st_writer_add(st_writer *w, const char *name, tensor_dtype dt, int ndim, const int64_t *shape,
                   const void *data) {
    uint64_t nb;
    const char *why = st_tensor_check(name, dt, ndim, shape, &nb);
    size_t nbytes = (size_t)nb;
    if (!why && nbytes && !data) why = "NULL data";
    if (why) {
        note_err(w, name, why);
        return;
    }
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 16;
        w->t = base_xrealloc(w->t, (size_t)w->cap * sizeof *w->t);
    }
    wtensor *t = &w->t[w->n++];
    t->name = base_xstrdup(name);
    t->dt = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->data = data;
    t->nbytes = nbytes;
}

void st_writer_meta(st_writer *w, const char *key, const char *value) {
    for (int i = 0; i < w->nmeta; i++)
        if (!strcmp(w->mkey[i], key)) {
            free(w->mval[i]);
            w->mval[i] = base_xstrdup(value);
            return;
        }
    if (w->nmeta == w->capmeta) {
        w->capmeta = w->capmeta ? 2 * w->capmeta : 8;
        w->mkey = base_xrealloc(w->mkey, (size_t)w->capmeta * sizeof *w->mkey);
        w->mval = base_xrealloc(w->mval, (size_t)w->capmeta * sizeof *w->mval);
    }
    w->mkey[w->nmeta] = base_xstrdup(key);
    w->mval[w->nmeta++] = base_xstrdup(value);
}

/* JSON string literal (RFC 8259 escapes; UTF-8 passes through). */
static void json_str(base_buf *b, const char *s) {
    base_buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"') base_buf_puts(b, "\\\"");
        else if (*p == '\\') base_buf_puts(b, "\\\\");
        else if (*p == '\n') base_buf_puts(b, "\\n");
        else if (*p == '\t') base_buf_puts(b, "\\t");
        else if (*p == '\r') base_buf_puts(b, "\\r");
        else if (*p < 0x20) base_buf_printf(b, "\\u%04x", *p);
        else base_buf_append(b, p, 1);
    }
    base_buf_puts(b, "\"");
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

base_status st_check_names(const char *const *names, int n, const char *path) {
    const char **v = base_xmalloc((size_t)(n ? n : 1) * sizeof *v);
    memcpy(v, names, (size_t)n * sizeof *v);
    qsort(v, (size_t)n, sizeof *v, cmp_str);
    base_status s = BASE_OK;
    for (int i = 0; i < n && !s; i++) {
        if (!strcmp(v[i], "__metadata__"))
            s = base_err_set(BASE_ERR_INVALID, "%s: tensor name '__metadata__' is reserved", path);
        else if (i && !strcmp(v[i], v[i - 1]))
            s = base_err_set(BASE_ERR_INVALID, "%s: tensor '%s' added twice", path, v[i]);
    }
    free(v);
    return s;
}

int st_write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t r = write(fd, c, n > (1u << 30) ? (1u << 30) : n);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

void st_fsync_dir(const char *dir) {
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
}

void st_header_build(base_buf *h, int nmeta, char *const *mkey, char *const *mval, int n, const st_hdr_tensor *t) {
    size_t start = h->len;
    base_buf_append(h, "\0\0\0\0\0\0\0\0", 8); /* length, filled in below */
    base_buf_puts(h, "{");
    if (nmeta) {
        base_buf_puts(h, "\"__metadata__\":{");
        for (int i = 0; i < nmeta; i++) {
            if (i) base_buf_puts(h, ",");
            json_str(h, mkey[i]);
            base_buf_puts(h, ":");
            json_str(h, mval[i]);
        }
        base_buf_puts(h, "}");
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        if (i || nmeta) base_buf_puts(h, ",");
        json_str(h, t[i].name);
        base_buf_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", tensor_dtype_name(t[i].dt));
        for (int k = 0; k < t[i].ndim; k++) base_buf_printf(h, "%s%lld", k ? "," : "", (long long)t[i].shape[k]);
        base_buf_printf(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                        (unsigned long long)(off + t[i].nbytes));
        off += t[i].nbytes;
    }
    base_buf_puts(h, "}");
    while ((h->len - start) % 8) base_buf_puts(h, " ");
    uint64_t hn = h->len - start - 8;
    for (int i = 0; i < 8; i++) h->data[start + (size_t)i] = (char)(hn >> (8 * i));
}

base_status st_writer_write(st_writer *w, const char *path) {
    if (w->err) return base_err_set(BASE_ERR_INVALID, "%s: %s", path, w->err);
    const char **names = base_xmalloc((size_t)(w->n ? w->n : 1) * sizeof *names);
    st_hdr_tensor *ht = base_xmalloc((size_t)(w->n ? w->n : 1) * sizeof *ht);
    for (int i = 0; i < w->n; i++) {
        names[i] = w->t[i].name;
        ht[i] = (st_hdr_tensor){w->t[i].name, w->t[i].dt, w->t[i].ndim, w->t[i].shape, w->t[i].nbytes};
    }
    base_status s = st_check_names(names, w->n, path);
    base_buf h = {0};
    if (!s) st_header_build(&h, w->nmeta, w->mkey, w->mval, w->n, ht);
    free(names), free(ht);
    if (s) return s;

    size_t tl = strlen(path) + 32;
    char *tmp = base_xmalloc(tl);
    snprintf(tmp, tl, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        s = base_err_set(BASE_ERR_IO, "%s: %s", tmp, base_strerror_now());
        goto done;
    }
    if (st_write_all(fd, h.data, h.len) < 0) {
        s = base_err_set(BASE_ERR_IO, "%s: writing the header: %s", tmp, base_strerror_now());
        goto fail;
    }
    for (int i = 0; i < w->n; i++)
        if (w->t[i].nbytes && st_write_all(fd, w->t[i].data, w->t[i].nbytes) < 0) {
            s = base_err_set(BASE_ERR_IO, "%s: writing tensor '%s': %s", tmp, w->t[i].name,
                             base_strerror_now());
            goto fail;
        }
    if (fsync(fd) < 0) {
        s = base_err_set(BASE_ERR_IO, "%s: fsync: %s", tmp, base_strerror_now());
        goto fail;
    }
    int rc = close(fd);
    fd = -1;
    if (rc < 0) {
        s = base_err_set(BASE_ERR_IO, "%s: close: %s", tmp, base_strerror_now());
        goto fail;
    }
    if (rename(tmp, path) < 0) {
        s = base_err_set(BASE_ERR_IO, "%s: rename to %s: %s", tmp, path, base_strerror_now());
        goto fail;
    }
    {
        /* make the rename durable */
        char *dcopy = base_xstrdup(path);
        st_fsync_dir(dirname(dcopy));
        free(dcopy);
    }
    goto done;
fail:
    if (fd >= 0) close(fd);
    unlink(tmp);
done:
    free(tmp);
    base_buf_free(&h);
    return s;
}
