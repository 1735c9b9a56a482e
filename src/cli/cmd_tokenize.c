/*
 * grpo tokenize: encode or decode JSONL with a Hugging Face tokenizer, or
 * write a tiny byte-level tokenizer.
 *
 *   grpo tokenize --tokenizer DIR --in texts.jsonl [--out ids.jsonl]
 *                 [--add-special-tokens] [--decode] [--skip-special-tokens]
 *                 [--threads N]
 *   grpo tokenize --write-bytelevel DIR [--special TOK ...] [--bos TOK]
 *                 [--eos TOK] [--pad TOK] [--no-add-bos] [--add-eos]
 *
 * Encoding: each line {"text": ...} is written back with "ids" added (other
 * fields kept). Decoding (--decode): each line {"ids": [...]} gets "text".
 * A malformed line (bad JSON, no text/ids, invalid UTF-8, U+0000 in a
 * string: docs/tokenizer.md) is reported as FILE:LINE on stderr and
 * skipped; the exit status is then 1. Decoded text holds no NUL (a byte-0
 * token decodes to U+FFFD, tok.h), so no output string is cut short.
 */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "tok/tok.h"

static const char *USAGE =
    "usage: grpo tokenize --tokenizer DIR --in texts.jsonl [--out ids.jsonl]\n"
    "                     [--add-special-tokens] [--decode] [--skip-special-tokens] [--threads N]\n"
    "       grpo tokenize --write-bytelevel DIR [--special TOK ...] [--bos TOK] [--eos TOK]\n"
    "                     [--pad TOK] [--no-add-bos] [--add-eos]\n"
    "Encodes each line {\"text\": ...} to {\"text\": ..., \"ids\": [...]}; --decode does the\n"
    "reverse from \"ids\". Without --out the result goes to stdout.\n";

enum { CHUNK = 2048 };

typedef struct {
    const tok_tokenizer *tk;
    base_pool *pool;
    int decode, flags;
    FILE *out;
    long bad;
    /* the chunk */
    cJSON *obj[CHUNK];
    long line[CHUNK];
    const char *text[CHUNK];
    size_t len[CHUNK];
    tok_ids ids[CHUNK];
    base_status st[CHUNK];
    int n;
} job;

static void write_obj(job *j, cJSON *o) {
    char *s = base_json_print(o, 0);
    fputs(s, j->out);
    fputc('\n', j->out);
    free(s);
}

static void flush_encode(job *j, const char *path) {
    for (int i = 0; i < j->n; i++) j->ids[i].n = 0;
    tok_encode_batch(j->tk, j->pool, j->text, j->len, j->n, j->flags, j->ids, j->st);
    for (int i = 0; i < j->n; i++) {
        if (j->st[i]) {
            /* encode again on this thread for the message */
            tok_ids tmp = {0};
            tok_encode(j->tk, j->text[i], j->len[i], j->flags, &tmp);
            tok_ids_free(&tmp);
            fprintf(stderr, "%s:%ld: %s (line skipped)\n", path, j->line[i], base_err_msg());
            j->bad++;
            continue;
        }
        cJSON *arr = cJSON_CreateIntArray(j->ids[i].ids, (int)j->ids[i].n);
        if (!arr) arr = cJSON_CreateArray();
        cJSON_DeleteItemFromObjectCaseSensitive(j->obj[i], "ids");
        cJSON_AddItemToObject(j->obj[i], "ids", arr);
        write_obj(j, j->obj[i]);
    }
    for (int i = 0; i < j->n; i++) cJSON_Delete(j->obj[i]);
    j->n = 0;
}

/* The ids of one line, or -1 with a message. */
static int read_ids(const cJSON *arr, tok_ids *ids, char *why, size_t whylen) {
    if (!cJSON_IsArray(arr)) {
        snprintf(why, whylen, "no \"ids\" array");
        return -1;
    }
    int k = 0;
    for (const cJSON *e = arr->child; e; e = e->next, k++) {
        int64_t id;
        if (!base_json_to_int(e, INT32_MIN, INT32_MAX, &id)) {
            snprintf(why, whylen, "ids[%d] is not a 32-bit integer", k);
            return -1;
        }
        tok_ids_push(ids, (int32_t)id);
    }
    return 0;
}

static int run(job *j, const char *in_path) {
    base_jsonl *r;
    if (base_jsonl_open(in_path, &r)) {
        fprintf(stderr, "grpo tokenize: %s\n", base_err_msg());
        return 1;
    }
    tok_ids ids = {0};
    base_buf text = {0};
    for (;;) {
        cJSON *o = NULL;
        base_status st = base_jsonl_next(r, &o);
        if (st == BASE_ERR_EOF) break;
        if (st == BASE_ERR_IO) {
            fprintf(stderr, "grpo tokenize: %s\n", base_err_msg());
            j->bad++;
            break;
        }
        if (st) {
            fprintf(stderr, "%s (line skipped)\n", base_err_msg());
            j->bad++;
            continue;
        }
        long line = base_jsonl_line(r);
        if (j->decode) {
            char why[128];
            ids.n = 0;
            if (read_ids(cJSON_GetObjectItemCaseSensitive(o, "ids"), &ids, why, sizeof why)) {
                fprintf(stderr, "%s:%ld: %s (line skipped)\n", in_path, line, why);
                j->bad++;
                cJSON_Delete(o);
                continue;
            }
            base_buf_reset(&text);
            tok_decode(j->tk, ids.ids, ids.n, j->flags, &text);
            cJSON_DeleteItemFromObjectCaseSensitive(o, "text");
            cJSON_AddStringToObject(o, "text", text.data);
            write_obj(j, o);
            cJSON_Delete(o);
            continue;
        }
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "text");
        if (!cJSON_IsString(t)) {
            fprintf(stderr, "%s:%ld: no \"text\" string (line skipped)\n", in_path, line);
            j->bad++;
            cJSON_Delete(o);
            continue;
        }
        j->obj[j->n] = o;
        j->line[j->n] = line;
        j->text[j->n] = t->valuestring;
        j->len[j->n] = strlen(t->valuestring);
        if (++j->n == CHUNK) flush_encode(j, in_path);
    }
    if (j->n) flush_encode(j, in_path);
    tok_ids_free(&ids);
    base_buf_free(&text);
    base_jsonl_close(r);
    return 0;
}

static int write_bytelevel(int argc, char **argv) {
    const char *dir = NULL;
    const char **special = base_xcalloc((size_t)argc + 1, sizeof *special);
    tok_bytelevel_spec sp = tok_bytelevel_default();
    int n_special = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--write-bytelevel") && v) dir = argv[++i];
        else if (!strcmp(a, "--special") && v) special[n_special++] = argv[++i];
        else if (!strcmp(a, "--bos") && v) sp.bos = argv[++i];
        else if (!strcmp(a, "--eos") && v) sp.eos = argv[++i];
        else if (!strcmp(a, "--pad") && v) sp.pad = argv[++i];
        else if (!strcmp(a, "--no-add-bos")) sp.add_bos = 0;
        else if (!strcmp(a, "--add-eos")) sp.add_eos = 1;
        else {
            free(special);
            return cli_usage_error("tokenize", "unexpected argument '%s'\n%s", a, USAGE);
        }
    }
    if (n_special) {
        sp.special = special;
        sp.n_special = n_special;
    }
    base_status st = tok_write_bytelevel(dir, &sp);
    free(special);
    if (st) {
        fprintf(stderr, "grpo tokenize: %s: %s\n", dir, base_err_msg());
        return 1;
    }
    fprintf(stderr, "wrote %s/tokenizer.json and tokenizer_config.json (%d ids)\n", dir,
            256 + sp.n_special);
    return 0;
}

int cli_cmd_tokenize(int argc, char **argv) {
    const char *dir = NULL, *in = NULL, *out = NULL;
    int decode = 0, add = 0, skip = 0, threads = 0;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--write-bytelevel")) return write_bytelevel(argc, argv);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            return 0;
        } else if (!strcmp(a, "--tokenizer") && v) dir = argv[++i];
        else if (!strcmp(a, "--in") && v) in = argv[++i];
        else if (!strcmp(a, "--out") && v) out = argv[++i];
        else if (!strcmp(a, "--threads") && v) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--add-special-tokens")) add = 1;
        else if (!strcmp(a, "--skip-special-tokens")) skip = 1;
        else if (!strcmp(a, "--decode")) decode = 1;
        else return cli_usage_error("tokenize", "unexpected argument '%s'\n%s", a, USAGE);
    }
    if (!dir || !in) return cli_usage_error("tokenize", "--tokenizer and --in are required\n%s",
                                            USAGE);
    tok_tokenizer *tk;
    if (tok_load(dir, &tk)) {
        fprintf(stderr, "grpo tokenize: %s\n", base_err_msg());
        return 1;
    }
    job *j = base_xcalloc(1, sizeof *j);
    j->tk = tk;
    j->decode = decode;
    j->flags = decode ? (skip ? TOK_DEC_SKIP_SPECIAL : 0) : (add ? TOK_ENC_ADD_SPECIAL : 0);
    j->out = stdout;
    FILE *f = NULL;
    char *tmp = NULL;
    if (out) {
        /* write beside, rename at the end: no half-written output on failure */
        size_t n = strlen(out) + 32;
        tmp = base_xmalloc(n);
        snprintf(tmp, n, "%s.tmp.%d", out, (int)getpid());
        f = fopen(tmp, "w");
        if (!f) {
            fprintf(stderr, "grpo tokenize: %s: %s\n", out, base_strerror_now());
            free(tmp);
            free(j);
            tok_free(tk);
            return 1;
        }
        j->out = f;
    }
    j->pool = decode ? NULL : base_pool_create(threads);
    int rc = run(j, in);
    if (j->pool) base_pool_destroy(j->pool);
    for (int i = 0; i < CHUNK; i++) tok_ids_free(&j->ids[i]);
    if (f) {
        int bad_close = fclose(f) != 0;
        if (bad_close || rename(tmp, out) != 0) {
            fprintf(stderr, "grpo tokenize: %s: %s\n", out, base_strerror_now());
            remove(tmp);
            rc = 1;
        }
    } else {
        fflush(stdout);
    }
    if (j->bad) {
        fprintf(stderr, "grpo tokenize: %ld line(s) skipped\n", j->bad);
        rc = 1;
    }
    free(tmp);
    free(j);
    tok_free(tk);
    return rc;
}
