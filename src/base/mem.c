/*
 * Memory: checked allocation (out of memory is fatal, as in Redis' zmalloc),
 * the arena used for one-allocation-per-role, and a growable byte buffer.
 */
#include "base.h"

#include <stdlib.h>
#include <string.h>

void *base_xmalloc_at(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) base_die_at(file, line, "out of memory allocating %zu bytes", n);
    return p;
}

void *base_xcalloc_at(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) base_die_at(file, line, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *base_xrealloc_at(void *p, size_t n, const char *file, int line) {
    void *q = realloc(p, n ? n : 1);
    if (!q) base_die_at(file, line, "out of memory reallocating to %zu bytes", n);
    return q;
}

char *base_xstrdup_at(const char *s, const char *file, int line) {
    size_t n = strlen(s) + 1;
    char *d = base_xmalloc_at(n, file, line);
    memcpy(d, s, n);
    return d;
}

void *base_xmalloc_aligned_at(size_t n, const char *file, int line) {
    void *p = NULL;
    size_t sz = (n + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, sz ? sz : 64) != 0 || !p)
        base_die_at(file, line, "out of memory allocating %zu aligned bytes", n);
    return p;
}

void base_arena_init(base_arena *a, size_t cap) {
    a->base = cap ? base_xmalloc_aligned(cap) : NULL;
    a->cap = cap;
    a->used = 0;
    a->peak = 0;
    if (cap) memset(a->base, 0, cap);
}

void *base_arena_alloc(base_arena *a, size_t n, size_t align) {
    if (align == 0) align = 64;
    size_t start = (a->used + align - 1) & ~(align - 1);
    if (start > a->cap || n > a->cap - start) return NULL;
    a->used = start + n;
    if (a->used > a->peak) a->peak = a->used;
    return a->base + start;
}

void base_arena_reset(base_arena *a) {
    if (a->used) memset(a->base, 0, a->used);
    a->used = 0;
}

void base_arena_free(base_arena *a) {
    free(a->base);
    a->base = NULL;
    a->cap = a->used = a->peak = 0;
}

static void buf_reserve(base_buf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    b->data = base_xrealloc(b->data, cap);
    b->cap = cap;
}

void base_buf_append(base_buf *b, const void *p, size_t n) {
    buf_reserve(b, n);
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void base_buf_puts(base_buf *b, const char *s) { base_buf_append(b, s, strlen(s)); }

void base_buf_printf(base_buf *b, const char *fmt, ...) {
    char small[256];
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        va_end(ap2);
        return;
    }
    if ((size_t)n < sizeof small) {
        base_buf_append(b, small, (size_t)n);
    } else {
        buf_reserve(b, (size_t)n);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
}

void base_buf_reset(base_buf *b) {
    b->len = 0;
    if (b->data) b->data[0] = 0;
}

void base_buf_free(base_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
