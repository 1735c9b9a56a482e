/*
 * safetensors reading: map a file, validate its whole header, and index its
 * tensors. Validation follows the reference implementation (the Rust
 * `safetensors` crate behind the Python package) so that a file we accept is
 * one it accepts too:
 *   - u64 LE header length N, 0 < N <= 100,000,000, and 8 + N <= file size;
 *   - the header is UTF-8 JSON, one object, optionally surrounded by
 *     whitespace (writers pad it with spaces for alignment), no NUL bytes;
 *   - `__metadata__`, when present, maps strings to strings;
 *   - every other key is a tensor {dtype, shape, data_offsets} (each once;
 *     other fields are ignored, as the reference does), a known dtype, at most ST_MAX_DIMS non-negative integer dims,
 *     0 <= begin <= end, and shape x dtype size == end - begin;
 *   - names are unique;
 *   - sorted by offset the ranges tile the data section exactly: no
 *     overlap, no gap, no bytes after the last tensor.
 * Errors name the file and, when there is one, the tensor.
 */
#include "io/st.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The reference implementation refuses larger headers (a bound on what a
 * hostile file can make us allocate). */
#define ST_MAX_HEADER 100000000ull

struct st_file {
    char *path;     /* path, or the caller's name for an in-memory image */
    void *map;      /* the mapping (NULL for an in-memory image or an empty data section) */
    size_t map_len; /* bytes mapped */
    const uint8_t *data; /* start of the data section */
    size_t data_len;
    cJSON *meta; /* detached "__metadata__" object, or NULL */
    int n;
    st_tensor *t;  /* [n] in data (file) order */
    int *by_name;  /* [n] indices into t sorted by name, for st_find */
    char *names;   /* one block holding every name */
};

/* dtypes the safetensors format defines that grpo does not handle: a file
 * holding one is valid but unsupported, which is a different message from
 * a dtype nobody knows. */
static const char *const other_dtypes[] = {"BOOL", "U8", "I8", "U16", "I16", "U32", "U64", "F64",
                                           "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"};

static uint64_t rd_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Strict UTF-8 (no overlongs, no surrogates, max U+10FFFF). Returns the
 * offset of the first bad byte, or len when valid. */
static size_t utf8_check(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int n;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) n = 1, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0) n = 2, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0) n = 3, cp = c & 0x07, min = 0x10000;
        else return i;
        for (int k = 1; k <= n; k++) {
            if (i + (size_t)k >= len || (s[i + k] & 0xc0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
        i += (size_t)n + 1;
    }
    return len;
}

/* A JSON number that is an exact integer in [0, 2^53]. */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > 9007199254740992.0 || d != floor(d)) return 0;
    *out = (uint64_t)d;
    return 1;
}

static void file_free(st_file *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->map_len);
    cJSON_Delete(f->meta);
    free(f->t);
    free(f->by_name);
    free(f->names);
    free(f->path);
    free(f);
}

/* Validate one tensor entry and fill *t (name and data set by the caller).
 * begin/end are returned for the layout check. */
static base_status parse_entry(const st_file *f, const char *name, const cJSON *e, st_tensor *t,
                               uint64_t *begin, uint64_t *end) {
    const char *P = f->path;
    if (!cJSON_IsObject(e))
        return base_err_set(BASE_ERR_PARSE, "%s: tensor '%s': entry is not a JSON object", P, name);
    const cJSON *dt = NULL, *shape = NULL, *offs = NULL;
    for (const cJSON *it = e->child; it; it = it->next) {
        const cJSON **slot = !strcmp(it->string, "dtype")          ? &dt
                             : !strcmp(it->string, "shape")        ? &shape
                             : !strcmp(it->string, "data_offsets") ? &offs
                                                                   : NULL;
        if (!slot) continue; /* other fields are ignored, as by the reference reader */
        if (*slot)
            return base_err_set(BASE_ERR_PARSE, "%s: tensor '%s': field '%s' appears twice", P, name,
                                it->string);
        *slot = it;
    }
    if (!dt || !shape || !offs)
        return base_err_set(BASE_ERR_PARSE, "%s: tensor '%s': missing field '%s'", P, name,
                            !dt ? "dtype" : !shape ? "shape" : "data_offsets");
    if (!cJSON_IsString(dt))
        return base_err_set(BASE_ERR_PARSE, "%s: tensor '%s': dtype is not a string", P, name);
    int d = tensor_dtype_from_name(dt->valuestring);
    if (d < 0) {
        for (size_t i = 0; i < sizeof other_dtypes / sizeof *other_dtypes; i++)
            if (!strcmp(dt->valuestring, other_dtypes[i]))
                return base_err_set(BASE_ERR_UNSUPPORTED,
                                    "%s: tensor '%s': dtype %s is not supported by grpo "
                                    "(F32, BF16, F16, F8_E4M3, I32, I64 are)",
                                    P, name, dt->valuestring);
        return base_err_set(BASE_ERR_PARSE, "%s: tensor '%s': unknown dtype '%.40s'", P, name,
                            dt->valuestring);
    }
    t->dtype = (tensor_dtype)d;
    if (!cJSON_IsArray(shape))
        return base_err_set(BASE_ERR_PARSE, "%s: tensor '%s': shape is not an array", P, name);
    int nd = cJSON_GetArraySize(shape);
    if (nd > ST_MAX_DIMS)
        return base_err_set(BASE_ERR_UNSUPPORTED, "%s: tensor '%s': %d dims (at most %d supported)", P,
                            name, nd, ST_MAX_DIMS);
    t->ndim = nd;
    /* numel bounded before multiplying: a hostile shape must not wrap
     * around to match a small byte range. Any real tensor has fewer than
     * 2^53 elements (its byte range is a JSON integer <= 2^53); the bound
     * applies to the product of the non-zero dims so that numel never
     * overflows for callers either. */
    uint64_t nz = 1;
    int zero = 0, k = 0;
    for (const cJSON *it = shape->child; it; it = it->next, k++) {
        uint64_t v;
        if (!json_uint(it, &v))
            return base_err_set(BASE_ERR_PARSE,
                                "%s: tensor '%s': shape[%d] is not a non-negative integer", P, name, k);
        t->shape[k] = (int64_t)v;
        if (!v) {
            zero = 1;
            continue;
        }
        if (nz > (UINT64_C(1) << 53) / v)
            return base_err_set(BASE_ERR_PARSE, "%s: tensor '%s': shape has 2^53 or more elements", P,
                                name);
        nz *= v;
    }
    uint64_t bytes = (zero ? 0 : nz) * tensor_dtype_size(t->dtype);
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return base_err_set(BASE_ERR_PARSE, "%s: tensor '%s': data_offsets is not [begin, end]", P,
                            name);
    if (!json_uint(offs->child, begin) || !json_uint(offs->child->next, end))
        return base_err_set(BASE_ERR_PARSE,
                            "%s: tensor '%s': data_offsets are not non-negative integers", P, name);
    if (*end < *begin)
        return base_err_set(BASE_ERR_PARSE, "%s: tensor '%s': data_offsets [%llu, %llu) end before begin",
                            P, name, (unsigned long long)*begin, (unsigned long long)*end);
    if (bytes != *end - *begin) {
        tensor tmp = {.ndim = t->ndim};
        memcpy(tmp.shape, t->shape, sizeof t->shape);
        char sb[96];
        return base_err_set(BASE_ERR_PARSE,
                            "%s: tensor '%s': shape %s x %s needs %llu bytes but "
                            "data_offsets [%llu, %llu) hold %llu",
                            P, name, tensor_shape_str(&tmp, sb, sizeof sb), dt->valuestring,
                            (unsigned long long)bytes,
                            (unsigned long long)*begin, (unsigned long long)*end,
                            (unsigned long long)(*end - *begin));
    }
    if (*end > f->data_len)
        return base_err_set(BASE_ERR_PARSE,
                            "%s: tensor '%s': data_offsets [%llu, %llu) run past the data section "
                            "(%zu bytes)",
                            P, name, (unsigned long long)*begin, (unsigned long long)*end, f->data_len);
    t->nbytes = (size_t)bytes;
    return BASE_OK;
}

typedef struct {
    uint64_t begin, end;
    int idx;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->idx - y->idx;
}

/* qsort has no context argument: the tensors being sorted, per thread */
static _Thread_local const st_tensor *name_base;

static int cmp_name(const void *a, const void *b) {
    return strcmp(name_base[*(const int *)a].name, name_base[*(const int *)b].name);
}

/* Parse and validate the header of the image buf[0, len); fills f. */
static base_status parse_image(st_file *f, const uint8_t *buf, size_t len) {
    const char *P = f->path;
    if (len < 8)
        return base_err_set(BASE_ERR_PARSE, "%s: file is %zu bytes, too short for a safetensors header",
                            P, len);
    uint64_t hn = rd_le64(buf);
    if (hn == 0) return base_err_set(BASE_ERR_PARSE, "%s: header length is 0", P);
    if (hn > len - 8)
        return base_err_set(BASE_ERR_PARSE,
                            "%s: header length %llu runs past the end of the file (%zu bytes)", P,
                            (unsigned long long)hn, len);
    if (hn > ST_MAX_HEADER)
        return base_err_set(BASE_ERR_PARSE, "%s: header length %llu exceeds the limit of %llu bytes", P,
                            (unsigned long long)hn, ST_MAX_HEADER);
    const char *h = (const char *)buf + 8;
    size_t n = (size_t)hn;
    if (memchr(h, 0, n))
        return base_err_set(BASE_ERR_PARSE, "%s: header contains a NUL byte at offset %zu", P,
                            (size_t)((const char *)memchr(h, 0, n) - h) + 8);
    size_t bad = utf8_check((const uint8_t *)h, n);
    if (bad != n)
        return base_err_set(BASE_ERR_PARSE, "%s: header is not valid UTF-8 (byte %zu)", P, bad + 8);
    f->data = buf + 8 + n;
    f->data_len = len - 8 - n;

    size_t nul = base_json_find_nul(h, n);
    if (nul < n)
        return base_err_set(BASE_ERR_PARSE, "%s: header has U+0000 (NUL) in a string (byte %zu): not supported", P,
                            nul + 8);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(h, n, &end, 0);
    if (!root) {
        size_t off = end && end >= h && end <= h + n ? (size_t)(end - h) : 0;
        /* cJSON leaves `end` untouched on failure; its global error pointer
         * is not thread-safe, so the message gives the position only when
         * the parse got that far */
        const char *ep = cJSON_GetErrorPtr();
        if (ep >= h && ep <= h + n) off = (size_t)(ep - h);
        return base_err_set(BASE_ERR_PARSE, "%s: header is not well-formed JSON (near byte %zu)", P,
                            off + 8);
    }
    for (const char *q = end; q < h + n; q++)
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') {
            cJSON_Delete(root);
            return base_err_set(BASE_ERR_PARSE, "%s: trailing bytes after the JSON header (byte %zu)",
                                P, (size_t)(q - h) + 8);
        }
    base_status s = BASE_OK;
    span *sp = NULL;
    if (!cJSON_IsObject(root)) {
        s = base_err_set(BASE_ERR_PARSE, "%s: header is not a JSON object", P);
        goto out;
    }
    int count = 0;
    size_t name_bytes = 0;
    cJSON *meta = NULL; /* still owned by root until detached below */
    for (cJSON *it = root->child; it; it = it->next) {
        if (!strcmp(it->string, "__metadata__")) {
            if (meta) {
                s = base_err_set(BASE_ERR_PARSE, "%s: __metadata__ appears twice", P);
                goto out;
            }
            if (!cJSON_IsObject(it)) {
                s = base_err_set(BASE_ERR_PARSE, "%s: __metadata__ is not an object", P);
                goto out;
            }
            for (cJSON *m = it->child; m; m = m->next)
                if (!cJSON_IsString(m)) {
                    s = base_err_set(BASE_ERR_PARSE, "%s: __metadata__ value '%s' is not a string", P,
                                     m->string);
                    goto out;
                }
            meta = it;
            continue;
        }
        count++;
        name_bytes += strlen(it->string) + 1;
    }
    if (meta) f->meta = cJSON_DetachItemViaPointer(root, meta);
    f->t = base_xcalloc((size_t)(count ? count : 1), sizeof *f->t);
    f->by_name = base_xmalloc((size_t)(count ? count : 1) * sizeof(int));
    f->names = base_xmalloc(name_bytes ? name_bytes : 1);
    sp = base_xmalloc((size_t)(count ? count : 1) * sizeof *sp);
    char *np = f->names;
    int i = 0;
    for (cJSON *it = root->child; it; it = it->next, i++) {
        size_t nl = strlen(it->string) + 1;
        memcpy(np, it->string, nl);
        st_tensor *t = &f->t[i];
        t->name = np;
        np += nl;
        s = parse_entry(f, t->name, it, t, &sp[i].begin, &sp[i].end);
        if (s) goto out;
        sp[i].idx = i;
    }
    f->n = count;
    /* unique names (cJSON keeps duplicate keys as separate items) */
    for (i = 0; i < count; i++) f->by_name[i] = i;
    name_base = f->t;
    qsort(f->by_name, (size_t)count, sizeof(int), cmp_name);
    for (i = 1; i < count; i++)
        if (!strcmp(f->t[f->by_name[i]].name, f->t[f->by_name[i - 1]].name)) {
            s = base_err_set(BASE_ERR_PARSE, "%s: tensor '%s' appears twice in the header", P,
                             f->t[f->by_name[i]].name);
            goto out;
        }
    /* layout: sorted by offset, the ranges tile [0, data_len) */
    qsort(sp, (size_t)count, sizeof *sp, cmp_span);
    uint64_t pos = 0;
    for (i = 0; i < count; i++) {
        const char *nm = f->t[sp[i].idx].name;
        if (sp[i].begin < pos) {
            s = base_err_set(BASE_ERR_PARSE,
                             "%s: tensor '%s' [%llu, %llu) overlaps tensor '%s' [%llu, %llu)", P, nm,
                             (unsigned long long)sp[i].begin, (unsigned long long)sp[i].end,
                             f->t[sp[i - 1].idx].name, (unsigned long long)sp[i - 1].begin,
                             (unsigned long long)sp[i - 1].end);
            goto out;
        }
        if (sp[i].begin > pos) {
            s = base_err_set(BASE_ERR_PARSE,
                             "%s: bytes [%llu, %llu) of the data section belong to no tensor "
                             "(gap before tensor '%s')",
                             P, (unsigned long long)pos, (unsigned long long)sp[i].begin, nm);
            goto out;
        }
        pos = sp[i].end;
    }
    if (pos != f->data_len) {
        s = base_err_set(BASE_ERR_PARSE,
                         "%s: data section is %zu bytes but the tensors cover %llu (%s)", P,
                         f->data_len, (unsigned long long)pos,
                         pos < f->data_len ? "trailing bytes or a wrong header length"
                                           : "file truncated");
        goto out;
    }
    /* reorder into file order; by_name maps through the permutation */
    {
        st_tensor *ord = base_xmalloc((size_t)(count ? count : 1) * sizeof *ord);
        int *where = base_xmalloc((size_t)(count ? count : 1) * sizeof(int));
        for (i = 0; i < count; i++) {
            ord[i] = f->t[sp[i].idx];
            ord[i].data = f->data + sp[i].begin;
            ord[i].shard = 0;
            where[sp[i].idx] = i;
        }
        for (i = 0; i < count; i++) f->by_name[i] = where[f->by_name[i]];
        free(f->t);
        free(where);
        f->t = ord;
    }
out:
    free(sp);
    cJSON_Delete(root);
    return s;
}

base_status st_open_memory(const void *buf, size_t len, const char *name, st_file **out) {
    *out = NULL;
    st_file *f = base_xcalloc(1, sizeof *f);
    f->path = base_xstrdup(name ? name : "(memory)");
    base_status s = parse_image(f, buf, len);
    if (s) {
        file_free(f);
        return s;
    }
    *out = f;
    return BASE_OK;
}

base_status st_open(const char *path, st_file **out) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return base_err_set(BASE_ERR_IO, "%s: %s", path, base_strerror_now());
    struct stat stt;
    if (fstat(fd, &stt) < 0) {
        base_err_set(BASE_ERR_IO, "%s: %s", path, base_strerror_now());
        close(fd);
        return BASE_ERR_IO;
    }
    if (!S_ISREG(stt.st_mode)) {
        close(fd);
        return base_err_set(BASE_ERR_IO, "%s: not a regular file", path);
    }
    size_t len = (size_t)stt.st_size;
    if (len < 8) {
        close(fd);
        return base_err_set(BASE_ERR_PARSE,
                            "%s: file is %zu bytes, too short for a safetensors header", path, len);
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) {
        errno = e;
        return base_err_set(BASE_ERR_IO, "%s: mmap: %s", path, base_strerror_now());
    }
    st_file *f = base_xcalloc(1, sizeof *f);
    f->path = base_xstrdup(path);
    f->map = map;
    f->map_len = len;
    base_status s = parse_image(f, map, len);
    if (s) {
        file_free(f);
        return s;
    }
    *out = f;
    return BASE_OK;
}

int st_count(const st_file *f) { return f->n; }
const st_tensor *st_at(const st_file *f, int i) { return i >= 0 && i < f->n ? &f->t[i] : NULL; }
const cJSON *st_metadata(const st_file *f) { return f->meta; }
const char *st_path(const st_file *f) { return f->path; }
size_t st_data_bytes(const st_file *f) { return f->data_len; }
void st_close(st_file *f) { file_free(f); }

const st_tensor *st_find(const st_file *f, const char *name) {
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const st_tensor *t = &f->t[f->by_name[mid]];
        int c = strcmp(t->name, name);
        if (!c) return t;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

int64_t st_numel(const st_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}
