/*
 * libFuzzer target for the JSON layer of src/base (json.c): the same bytes
 * go through base_json_parse and, as lines, through the JSONL reader over
 * memory; every value of an accepted document goes through the typed
 * getters. Beyond "no crash, leak or sanitizer report":
 *   - a failure always leaves a message naming the input;
 *   - an accepted document or line holds no U+0000 in any string (checked
 *     on the raw text by a scanner written apart from json.c's: no string
 *     was cut short), and a document with finite numbers prints to text
 *     that parses and prints back to the same text;
 *   - base_json_int / base_json_to_int / base_json_int_range agree with the
 *     double they convert, within the bounds asked for;
 *   - JSONL line numbers only grow, never past the number of lines.
 *
 * Fuzz with `make fuzz FUZZ_TARGET=json` (docs/fuzzing.md); `make test`
 * replays tests/fuzz/corpus/json/.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_INPUT = 1 << 20 };

/* The getters on every member of every object of v. */
static void check_value(const cJSON *parent, const cJSON *v, uint64_t salt) {
    if (parent && cJSON_IsObject(parent) && v->string) {
        const char *key = v->string;
        /* the first member with this key is what getters see */
        const cJSON *first = cJSON_GetObjectItemCaseSensitive(parent, key);
        int found;
        int64_t i = base_json_int(parent, key, 7, &found);
        int64_t w;
        int ok = base_json_to_int(first, INT64_MIN, INT64_MAX, &w);
        if (found != ok || (found && (i != w || (double)i != first->valuedouble))) abort();
        if (!found && i != 7) abort();
        double d = base_json_num(parent, key, -1, &found);
        if (found != cJSON_IsNumber(first) || (found && d != first->valuedouble)) abort();
        (void)base_json_bool(parent, key, 0, NULL);
        const char *s = base_json_str(parent, key, NULL);
        if ((s != NULL) != cJSON_IsString(first)) abort();
        /* a range drawn from the salt */
        int64_t lo = (int64_t)(salt % 2001) - 1000, hi = lo + (int64_t)(salt >> 20) % 5000, out;
        base_status st = base_json_int_range(parent, key, lo, hi, 3, "fuzz.json", &out);
        if (st == BASE_OK) {
            if (first && !cJSON_IsNull(first) && (out < lo || out > hi)) abort();
            if ((!first || cJSON_IsNull(first)) && out != 3) abort();
        } else if (st != BASE_ERR_INVALID || out != 3 || !strstr(base_err_msg(), "fuzz.json: ")) {
            abort();
        }
        char buf[64];
        if (!base_json_describe(first, buf, sizeof buf)[0]) abort();
    }
    if (cJSON_IsString(v) && !v->valuestring) abort();
    for (const cJSON *c = v->child; c; c = c->next) check_value(v, c, salt * 6364136223846793005ull + 1);
}

/* cJSON prints inf (from 1e999) as null: such documents do not print back. */
static int has_nonfinite(const cJSON *v) {
    if (cJSON_IsNumber(v) && !isfinite(v->valuedouble)) return 1;
    for (const cJSON *c = v->child; c; c = c->next)
        if (has_nonfinite(c)) return 1;
    return 0;
}

/* Would decoding t[0, n) put a U+0000 into a string? A raw 0 byte, or
 * "u0000" after an odd run of backslashes (an escape; an even run is
 * escaped backslashes). Written independently of json.c's scanner; valid
 * JSON has backslashes only inside strings. */
static int has_nul(const char *t, size_t n) {
    if (memchr(t, 0, n)) return 1;
    for (size_t i = 1; i + 5 <= n; i++) {
        if (memcmp(t + i, "u0000", 5)) continue;
        size_t k = 0;
        while (k < i && t[i - 1 - k] == '\\') k++;
        if (k % 2) return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > MAX_INPUT) return 0;
    const char *text = (const char *)data;
    static int quiet;
    if (!quiet) {
        base_log_set_level(BASE_LOG_ERROR);
        quiet = 1;
    }
    uint64_t salt = 1469598103934665603ull;
    for (size_t i = 0; i < size && i < 16; i++) salt = (salt ^ data[i]) * 1099511628211ull;

    /* the whole input as one document */
    cJSON *j = NULL;
    base_err_clear();
    base_status st = base_json_parse(text, size, "fuzz.json", &j);
    if (st) {
        if (j || st != BASE_ERR_PARSE || !strstr(base_err_msg(), "fuzz.json:")) abort();
    } else {
        if (!j) abort();
        if (has_nul(text, size)) abort(); /* a string would have been cut */
        check_value(NULL, j, salt);
        /* print, parse, print: the same text (cJSON_Compare cannot be the
         * judge: it looks members up by key, and keys may repeat) */
        char *p = has_nonfinite(j) ? NULL : cJSON_PrintUnformatted(j);
        if (p) {
            cJSON *k = NULL;
            if (base_json_parse(p, strlen(p), "printed", &k) != BASE_OK) abort();
            char *q = cJSON_PrintUnformatted(k);
            if (q && strcmp(p, q)) abort();
            free(q);
            cJSON_Delete(k);
            free(p);
        }
        cJSON_Delete(j);
    }

    /* the input as JSONL */
    base_jsonl *r = NULL;
    if (base_jsonl_open_mem(text, size, "fuzz.jsonl", &r) != BASE_OK) abort();
    /* where each line starts: start[L - 1] for line L */
    long lines = 1, last = 0;
    for (size_t i = 0; i < size; i++) lines += data[i] == '\n';
    size_t *start = malloc((size_t)(lines + 1) * sizeof *start);
    if (!start) return 0;
    long nl = 0;
    start[nl++] = 0;
    for (size_t i = 0; i < size; i++)
        if (data[i] == '\n') start[nl++] = i + 1;
    start[nl] = size + 1;
    for (;;) {
        cJSON *v = NULL;
        st = base_jsonl_next(r, &v);
        if (st == BASE_ERR_EOF) break;
        long ln = base_jsonl_line(r);
        if (ln <= last || ln > lines) abort();
        last = ln;
        if (st == BASE_OK) {
            if (!v) abort();
            size_t a = start[ln - 1], b = start[ln] - 1; /* the line without its '\n' */
            if (has_nul(text + a, b - a)) abort();
            check_value(NULL, v, salt + (uint64_t)ln);
            cJSON_Delete(v);
        } else if (v || st != BASE_ERR_PARSE || strncmp(base_err_msg(), "fuzz.jsonl:", 11)) {
            abort();
        }
    }
    base_jsonl_close(r);
    free(start);
    return 0;
}
