/*
 * JSON through cJSON, plus a streaming JSONL reader that knows its line
 * numbers so every bad line can be reported as "file:line: why", and the
 * printer every output file uses: numbers in their shortest round-trip
 * form (cJSON prints %1.15g, else %1.17g: 0.39249999999999424 where
 * 16 digits round-trip too).
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

base_status base_json_parse(const char *text, size_t len, const char *what, cJSON **out) {
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (*out) return BASE_OK;
    size_t off = end && end >= text ? (size_t)(end - text) : 0;
    if (off > len) off = len;
    int line, col;
    base_text_linecol(text, off, &line, &col);
    return base_err_set(BASE_ERR_PARSE, "%s:%d:%d: malformed JSON", what, line, col);
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

int64_t base_json_int(const cJSON *obj, const char *key, int64_t dflt, int *found) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (found) *found = it && cJSON_IsNumber(it);
    return it && cJSON_IsNumber(it) ? (int64_t)it->valuedouble : dflt;
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
    FILE *f;
    int own;
    char *path;
    char *line;
    size_t cap;
    long lineno;
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

base_status base_jsonl_next(base_jsonl *r, cJSON **out) {
    *out = NULL;
    for (;;) {
        errno = 0;
        ssize_t n = getline(&r->line, &r->cap, r->f);
        if (n < 0) {
            if (ferror(r->f))
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
        if (memchr(r->line, 0, len))
            return base_err_set(BASE_ERR_PARSE, "%s:%ld: NUL byte in line", r->path, r->lineno);
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
    free(r);
}
