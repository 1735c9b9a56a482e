/*
 * Token-id JSONL reading for the model subcommands.
 */
#include "cli/model_cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

base_status cli_parse_ids(const cJSON *arr, const char *what, int64_t vocab, int32_t **buf, int64_t *n,
                          int64_t *cap) {
    if (!cJSON_IsArray(arr)) return base_err_set(BASE_ERR_INVALID, "%s: expected an array of token ids", what);
    int k = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, arr) {
        double v = cJSON_IsNumber(x) ? x->valuedouble : -1;
        if (!cJSON_IsNumber(x) || v != floor(v) || v < 0 || v >= (double)vocab)
            return base_err_set(BASE_ERR_INVALID, "%s[%d]: not a token id in [0, %lld)", what, k, (long long)vocab);
        if (*n == *cap) {
            *cap = *cap ? 2 * *cap : 1024;
            *buf = base_xrealloc(*buf, (size_t)*cap * sizeof(int32_t));
        }
        (*buf)[(*n)++] = (int32_t)v;
        k++;
    }
    return BASE_OK;
}

base_status cli_read_ids(const char *path, int64_t vocab, cli_seqs *out) {
    memset(out, 0, sizeof *out);
    base_jsonl *r = NULL;
    base_status st = base_jsonl_open(path, &r);
    if (st) return st;
    int64_t n = 0, cap = 0;
    int scap = 0;
    cJSON *o = NULL;
    while ((st = base_jsonl_next(r, &o)) == BASE_OK) {
        char what[512];
        snprintf(what, sizeof what, "%s:%ld: ids", base_jsonl_path(r), base_jsonl_line(r));
        const cJSON *ids = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, "ids") : NULL;
        int64_t before = n;
        if (!ids) st = base_err_set(BASE_ERR_INVALID, "%s:%ld: expected an object with \"ids\"", base_jsonl_path(r), base_jsonl_line(r));
        else st = cli_parse_ids(ids, what, vocab, &out->ids, &n, &cap);
        if (!st && n == before) st = base_err_set(BASE_ERR_INVALID, "%s: empty", what);
        cJSON_Delete(o);
        if (st) break;
        if (out->n + 2 > scap) {
            scap = scap ? 2 * scap : 64;
            out->cu = base_xrealloc(out->cu, (size_t)scap * sizeof(int32_t));
            out->line = base_xrealloc(out->line, (size_t)scap * sizeof(long));
        }
        if (n > INT32_MAX) {
            st = base_err_set(BASE_ERR_LIMIT, "%s: more than 2^31 tokens", path);
            break;
        }
        out->cu[out->n] = (int32_t)before;
        out->line[out->n] = base_jsonl_line(r);
        out->n++;
        out->cu[out->n] = (int32_t)n;
    }
    base_jsonl_close(r);
    if (st == BASE_ERR_EOF) st = BASE_OK;
    if (!st && out->n == 0) st = base_err_set(BASE_ERR_INVALID, "%s: no sequences", path);
    if (st) cli_seqs_free(out);
    return st;
}

void cli_seqs_free(cli_seqs *s) {
    free(s->ids);
    free(s->cu);
    free(s->line);
    memset(s, 0, sizeof *s);
}
