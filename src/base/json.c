/*
 * JSON through cJSON, plus a streaming JSONL reader that knows its line
 * numbers so every bad line can be reported as "file:line: why", and the
 * printer every output file uses: numbers in their shortest round-trip
 * form (cJSON prints %1.15g, else %1.17g: 0.85850000000000648 where
 * 0.8585000000000065 reads back the same).
 *
 * cJSON strings are C strings: a decoded U+0000 would cut a string short
 * without a word. Both parsers refuse text with a raw NUL byte or a \u0000
 * escape in a string (find_nul), so no text is ever silently truncated.
 * Integer getters convert only finite, integral, in-range doubles (a cast of
 * 1e30 to int64 is undefined behaviour in C).
 */
#include "base.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void base_text_linecol(const char *text, size_t off, int *line, int *col) {
    int l = 1, c = 1;
    for (size_t i = 0; i < off && text[i]; i++) {
        if (text[i] == '\n') {
            l++;
            c = 1;
        } else {
            c++;
        }
    }
    *line = l;
    *col = c;
}

/* Offset of the first U+0000 in the strings of valid JSON text[0, len): a
 * raw NUL byte, or a \u0000 escape inside a string (an escaped backslash
 * followed by "u0000", i.e. \\u0000, is not one). len when there is none. */
size_t base_json_find_nul(const char *text, size_t len) {
    const char *raw = memchr(text, 0, len);
    size_t lim = raw ? (size_t)(raw - text) : len;
    if (!memmem(text, lim, "\\u0000", 6)) return lim; /* the common case */
    int in_str = 0;
    for (size_t i = 0; i < lim; i++) {
        char c = text[i];
        if (!in_str) {
            in_str = c == '"';
        } else if (c == '"') {
            in_str = 0;
        } else if (c == '\\') {
            if (i + 5 < lim && !memcmp(text + i + 1, "u0000", 5)) return i;
            i++; /* the escaped character, a backslash included */
        }
    }
    return lim;
}

static const char NUL_MSG[] = "U+0000 (NUL) in a string: not supported";

base_status base_json_parse(const char *text, size_t len, const char *what, cJSON **out) {
    const char *end = NULL;
    int line, col;
    *out = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!*out) {
        size_t off = end && end >= text ? (size_t)(end - text) : 0;
        if (off > len) off = len;
        base_text_linecol(text, off, &line, &col);
        return base_err_set(BASE_ERR_PARSE, "%s:%d:%d: malformed JSON", what, line, col);
    }
    size_t off = end && end >= text && (size_t)(end - text) <= len ? (size_t)(end - text) : len;
    while (off < len && (text[off] == ' ' || text[off] == '\t' || text[off] == '\n' ||
                         text[off] == '\r'))
        off++;
    const char *msg = NULL;
    if (off < len && text[off]) {
        msg = "extra text after the JSON value";
    } else {
        off = base_json_find_nul(text, len);
        if (off < len) msg = NUL_MSG;
    }
    if (!msg) return BASE_OK;
    cJSON_Delete(*out);
    *out = NULL;
    base_text_linecol(text, off, &line, &col);
    return base_err_set(BASE_ERR_PARSE, "%s:%d:%d: %s", what, line, col, msg);
}
base_status base_json_parse_file(const char *path, cJSON **out) {
    char *text;
    size_t len;
    *out = NULL;
    base_status s = base_read_file(path, &text, &len);
    if (s) return s;
    s = base_json_parse(text, len, path, out);
    free(text);
    return s;
}

double base_json_num(const cJSON *obj, const char *key, double dflt, int *found) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (found) *found = it && cJSON_IsNumber(it);
    return it && cJSON_IsNumber(it) ? it->valuedouble : dflt;
}

int base_json_to_int(const cJSON *item, int64_t lo, int64_t hi, int64_t *out) {
    if (!cJSON_IsNumber(item)) return 0;
    double x = item->valuedouble;
    /* -2^63 <= x < 2^63 (both bounds exact doubles) before the conversion */
    if (!isfinite(x) || x != floor(x) || x < -9223372036854775808.0 || x >= 9223372036854775808.0)
        return 0;
    int64_t v = (int64_t)x;
    if (v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

int64_t base_json_int(const cJSON *obj, const char *key, int64_t dflt, int *found) {
    int64_t v;
    int ok = base_json_to_int(cJSON_GetObjectItemCaseSensitive(obj, key), INT64_MIN, INT64_MAX, &v);
    if (found) *found = ok;
    return ok ? v : dflt;
}

const char *base_json_describe(const cJSON *item, char *buf, size_t n) {
    if (!item) snprintf(buf, n, "nothing");
    else if (cJSON_IsNumber(item)) {
        /* the shortest of %.15g / %.17g that reads back as the same double */
        snprintf(buf, n, "%.15g", item->valuedouble);
        if (strtod(buf, NULL) != item->valuedouble) snprintf(buf, n, "%.17g", item->valuedouble);
    }
    else if (cJSON_IsString(item)) snprintf(buf, n, "a string");
    else if (cJSON_IsBool(item)) snprintf(buf, n, "%s", cJSON_IsTrue(item) ? "true" : "false");
    else if (cJSON_IsNull(item)) snprintf(buf, n, "null");
    else if (cJSON_IsArray(item)) snprintf(buf, n, "an array");
    else if (cJSON_IsObject(item)) snprintf(buf, n, "an object");
    else snprintf(buf, n, "an invalid value");
    return buf;
}

base_status base_json_int_range(const cJSON *obj, const char *key, int64_t lo, int64_t hi,
                                int64_t dflt, const char *what, int64_t *out) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = dflt;
    if (!it || cJSON_IsNull(it) || base_json_to_int(it, lo, hi, out)) return BASE_OK;
    char got[64];
    return base_err_set(BASE_ERR_INVALID, "%s: %s must be an integer in [%lld, %lld] (got %s)",
                        what, key, (long long)lo, (long long)hi,
                        base_json_describe(it, got, sizeof got));
}
int base_json_bool(const cJSON *obj, const char *key, int dflt, int *found) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (found) *found = it && cJSON_IsBool(it);
    return it && cJSON_IsBool(it) ? cJSON_IsTrue(it) : dflt;
}

const char *base_json_str(const cJSON *obj, const char *key, const char *dflt) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return it && cJSON_IsString(it) ? it->valuestring : dflt;
}

/* ---- printing --------------------------------------------------------- */

int base_json_number(char *buf, size_t n, double v) {
    if (!isfinite(v)) return snprintf(buf, n, "null"); /* JSON has no NaN or infinities (as cJSON) */
    if (v == floor(v) && fabs(v) < 9007199254740992.0) /* integers below 2^53: all digits, no exponent */
        return snprintf(buf, n, "%.0f", v);
    char tmp[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*g", p, v);
        if (strtod(tmp, NULL) == v) break;
    }
    return snprintf(buf, n, "%s", tmp);
}

static void print_string(base_buf *b, const char *s) {
    base_buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '"': base_buf_puts(b, "\\\""); break;
        case '\\': base_buf_puts(b, "\\\\"); break;
        case '\b': base_buf_puts(b, "\\b"); break;
        case '\f': base_buf_puts(b, "\\f"); break;
        case '\n': base_buf_puts(b, "\\n"); break;
        case '\r': base_buf_puts(b, "\\r"); break;
        case '\t': base_buf_puts(b, "\\t"); break;
        default:
            if (*p < 0x20) base_buf_printf(b, "\\u%04x", *p);
            else base_buf_append(b, p, 1);
        }
    }
    base_buf_puts(b, "\"");
}

static void indent(base_buf *b, int depth) {
    base_buf_puts(b, "\n");
    for (int i = 0; i < depth; i++) base_buf_puts(b, "  ");
}

/* depth < 0: one line */
static void print_value(base_buf *b, const cJSON *v, int depth) {
    char num[40];
    switch (v->type & 0xff) {
    case cJSON_False: base_buf_puts(b, "false"); return;
    case cJSON_True: base_buf_puts(b, "true"); return;
    case cJSON_Number:
        base_json_number(num, sizeof num, v->valuedouble);
        base_buf_puts(b, num);
        return;
    case cJSON_String: print_string(b, v->valuestring); return;
    case cJSON_Raw: base_buf_puts(b, v->valuestring ? v->valuestring : "null"); return;
    case cJSON_Array:
    case cJSON_Object: {
        int obj = (v->type & 0xff) == cJSON_Object;
        base_buf_puts(b, obj ? "{" : "[");
        for (const cJSON *e = v->child; e; e = e->next) {
            if (depth >= 0) indent(b, depth + 1);
            if (obj) {
                print_string(b, e->string);
                base_buf_puts(b, depth >= 0 ? ": " : ":");
            }
            print_value(b, e, depth >= 0 ? depth + 1 : -1);
            if (e->next) base_buf_puts(b, ",");
        }
        if (depth >= 0 && v->child) indent(b, depth);
        base_buf_puts(b, obj ? "}" : "]");
        return;
    }
    default: base_buf_puts(b, "null"); return; /* cJSON_NULL (and an invalid item) */
    }
}

char *base_json_print(const cJSON *v, int pretty) {
    base_buf b = {0};
    if (v) print_value(&b, v, pretty ? 0 : -1);
    else base_buf_puts(&b, "null");
    if (pretty) base_buf_puts(&b, "\n");
    return b.data;
}

struct base_jsonl {
    FILE *f;   /* NULL when reading memory */
    int own;
    char *path;
    char *line;
    size_t cap;
    long lineno;
    char *mem; /* base_jsonl_open_mem: a private copy */
    size_t mem_len, mem_pos;
};

base_status base_jsonl_open(const char *path, base_jsonl **out) {
    *out = NULL;
    FILE *f;
    int own = 1;
    if (!strcmp(path, "-")) {
        f = stdin;
        own = 0;
    } else {
        f = fopen(path, "re");
        if (!f) return base_err_set(BASE_ERR_IO, "%s: %s", path, base_strerror_now());
    }
    base_jsonl *r = base_xcalloc(1, sizeof *r);
    r->f = f;
    r->own = own;
    r->path = base_xstrdup(own ? path : "<stdin>");
    *out = r;
    return BASE_OK;
}

base_status base_jsonl_open_mem(const char *data, size_t len, const char *name, base_jsonl **out) {
    base_jsonl *r = base_xcalloc(1, sizeof *r);
    r->mem = base_xmalloc(len + 1);
    if (len) memcpy(r->mem, data, len);
    r->mem_len = len;
    r->path = base_xstrdup(name);
    *out = r;
    return BASE_OK;
}

/* The next line into r->line (with its '\n' when there is one); its length,
 * or -1 at the end (errno set by getline on a read error). */
static ssize_t next_line(base_jsonl *r) {
    if (r->f) return getline(&r->line, &r->cap, r->f);
    if (r->mem_pos >= r->mem_len) return -1;
    const char *p = r->mem + r->mem_pos;
    const char *nl = memchr(p, '\n', r->mem_len - r->mem_pos);
    size_t n = nl ? (size_t)(nl - p) + 1 : r->mem_len - r->mem_pos;
    if (n + 1 > r->cap) {
        r->cap = n + 1;
        r->line = base_xrealloc(r->line, r->cap);
    }
    memcpy(r->line, p, n);
    r->line[n] = 0;
    r->mem_pos += n;
    return (ssize_t)n;
}

base_status base_jsonl_next(base_jsonl *r, cJSON **out) {
    *out = NULL;
    for (;;) {
        errno = 0;
        ssize_t n = next_line(r);
        if (n < 0) {
            if (r->f && ferror(r->f))
                return base_err_set(BASE_ERR_IO, "%s:%ld: read error: %s", r->path,
                                    r->lineno + 1, base_strerror_now());
            return BASE_ERR_EOF;
        }
        r->lineno++;
        size_t len = (size_t)n;
        while (len && (r->line[len - 1] == '\n' || r->line[len - 1] == '\r')) len--;
        size_t i = 0;
        while (i < len && (r->line[i] == ' ' || r->line[i] == '\t')) i++;
        if (i == len) continue; /* blank line */
        const char *nul = memchr(r->line, 0, len);
        if (nul)
            return base_err_set(BASE_ERR_PARSE, "%s:%ld:%zu: NUL byte in line", r->path, r->lineno,
                                (size_t)(nul - r->line) + 1);
        const char *end = NULL;
        cJSON *v = cJSON_ParseWithLengthOpts(r->line, len, &end, 0);
        if (!v) {
            size_t col = end && end >= r->line ? (size_t)(end - r->line) + 1 : 1;
            return base_err_set(BASE_ERR_PARSE, "%s:%ld:%zu: malformed JSON", r->path,
                                r->lineno, col);
        }
        /* trailing garbage after the value */
        const char *p = end;
        while (p < r->line + len && (*p == ' ' || *p == '\t')) p++;
        if (p != r->line + len) {
            cJSON_Delete(v);
            return base_err_set(BASE_ERR_PARSE, "%s:%ld:%zu: extra text after JSON value",
                                r->path, r->lineno, (size_t)(p - r->line) + 1);
        }
        size_t at = base_json_find_nul(r->line, len);
        if (at < len) {
            cJSON_Delete(v);
            return base_err_set(BASE_ERR_PARSE, "%s:%ld:%zu: %s", r->path, r->lineno, at + 1,
                                NUL_MSG);
        }
        *out = v;
        return BASE_OK;
    }
}

long base_jsonl_line(const base_jsonl *r) { return r->lineno; }
const char *base_jsonl_path(const base_jsonl *r) { return r->path; }

void base_jsonl_close(base_jsonl *r) {
    if (!r) return;
    if (r->own && r->f) fclose(r->f);
    free(r->line);
    free(r->path);
    free(r->mem);
    free(r);
}
