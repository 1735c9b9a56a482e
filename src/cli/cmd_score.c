/*
 * grpo score --rewards SPEC --in samples.jsonl --out scored.jsonl [--workers N]
 *
 * Adds to every line "reward" (the weighted total; null when every function
 * returned nil) and "reward_parts": {"NAME": score or null, "NAME/PART":
 * number, ...}. Lines that are not JSON objects, lack a "completion" string,
 * hold a string (key or value, at any depth) that is not valid UTF-8 (as
 * grpo tokenize rejects it; it would pass into the output otherwise) or
 * lack a column a script declared are reported as FILE:LINE: why and
 * skipped; a summary line on stderr counts them. Script errors (a script
 * that raises, overruns its budget or memory, or returns a bad value) become
 * null plus a line in the error log (stderr unless --error-log); nil is "not
 * scored", not an error. Exit status 1, and no output file, when no line was
 * scored at all (every line skipped, or none) or when any sample had a
 * reward error, unless --allow-partial (then the output is written, errors
 * as null, and only "nothing scored" fails). Before reading the input each
 * script's `check` runs (http_judge.lua: its server must answer), and a
 * failing check is exit 1. Consecutive lines with the same "prompt" are one
 * group for score_group scripts (as grpo generate --n and grpo sample write
 * them); a batch never splits a group. The output is written atomically (PATH.tmp.PID, then
 * renamed); "-" writes to stdout.
 */
#include "cli/cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "reward/reward.h"
#include "tok/tok.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: grpo score --rewards SPEC --in samples.jsonl --out scored.jsonl [options]\n"
            "  --rewards SPEC        e.g. rewards/boxed_math.lua:1.0,think_format:0.2\n"
            "  --workers N           reward worker threads, at most %d (default 0: all cores)\n"
            "  --batch N             samples scored together (default 256)\n"
            "  --error-log PATH      reward error log (default stderr)\n"
            "  --instructions N      Lua instruction budget per call (default 50000000)\n"
            "  --memory-mb N         Lua heap cap per worker, %d to %d (default 64)\n"
            "  --sandbox-timeout S   default wall clock for grpo.run_tests (default 10)\n"
            "  --allow-partial       write the output even when some samples had reward errors\n"
            "                        (null there) and exit 0 (default: exit 1, no output)\n",
            REWARD_MAX_WORKERS, REWARD_MIN_MEMORY_MB, REWARD_MAX_MEMORY_MB);
}

/* The first string of v (a value or an object key) that is not valid
 * UTF-8: 1, with *at its byte offset and *path where it is ("completion",
 * "info.cases[2].input"; for a key, the object holding it, "" at the top,
 * and *is_key = 1); 0 when all are valid. cJSON caps the nesting depth, so
 * the recursion is bounded. */
static int bad_utf8(const cJSON *v, base_buf *path, size_t *at, int *is_key) {
    if (cJSON_IsString(v)) {
        size_t n = strlen(v->valuestring);
        *at = tok_utf8_check(v->valuestring, n);
        return *at != n;
    }
    const size_t mark = path->len;
    int idx = 0;
    for (const cJSON *c = v->child; c; c = c->next, idx++) {
        if (cJSON_IsObject(v)) {
            size_t n = strlen(c->string);
            *at = tok_utf8_check(c->string, n);
            if (*at != n) return *is_key = 1;
            base_buf_printf(path, "%s%s", mark ? "." : "", c->string);
        } else {
            base_buf_printf(path, "[%d]", idx);
        }
        if (bad_utf8(c, path, at, is_key)) return 1;
        path->len = mark; /* drop this child's name again */
        if (path->data) path->data[mark] = 0;
    }
    return 0;
}

typedef struct {
    cJSON **rows;
    int64_t n, cap;
    int64_t *off; /* [cap + 1] group offsets */
} batch;

static int same_prompt(const cJSON *a, const cJSON *b) {
    const char *pa = base_json_str(a, "prompt", NULL), *pb = base_json_str(b, "prompt", NULL);
    return pa && pb && !strcmp(pa, pb);
}

/* Score and write the rows of b; unless `final`, the last group is kept
 * for the next batch (it may go on). Adds the samples with a reward error
 * to *n_err_samples. Returns -1 on error. */
static int write_batch(FILE *out, reward_pool *pool, batch *b, reward_scores *sc, int final, int64_t *n_err_samples) {
    if (b->n == 0) return 0;
    int64_t ng = 0;
    b->off[0] = 0;
    for (int64_t i = 1; i <= b->n; i++)
        if (i == b->n || !same_prompt(b->rows[i - 1], b->rows[i])) b->off[++ng] = i;
    if (!final && ng == 1) { /* one group fills the batch: grow it */
        b->cap *= 2;
        b->rows = base_xrealloc(b->rows, (size_t)b->cap * sizeof(cJSON *));
        b->off = base_xrealloc(b->off, (size_t)(b->cap + 1) * sizeof(int64_t));
        return 0;
    }
    if (!final) ng--;
    const int64_t n = b->off[ng];
    base_status st = reward_pool_score_groups(pool, (const cJSON *const *)b->rows, n, b->off, ng, sc);
    if (st) {
        fprintf(stderr, "grpo score: %s\n", base_err_msg());
        return -1;
    }
    int nf = reward_pool_n_funcs(pool);
    for (int64_t i = 0; i < n; i++) {
        cJSON *row = b->rows[i];
        cJSON_DeleteItemFromObjectCaseSensitive(row, "reward");
        cJSON_DeleteItemFromObjectCaseSensitive(row, "reward_parts");
        if (isnan(sc->total[i])) cJSON_AddNullToObject(row, "reward");
        else cJSON_AddNumberToObject(row, "reward", sc->total[i]);
        cJSON *parts = cJSON_AddObjectToObject(row, "reward_parts");
        int errored = 0;
        for (int f = 0; f < nf; f++) {
            size_t k = (size_t)i * (size_t)nf + (size_t)f;
            errored |= sc->status[k] == REWARD_ERROR;
            const char *name = reward_pool_func_name(pool, f);
            if (sc->status[k] == REWARD_OK) cJSON_AddNumberToObject(parts, name, sc->score[k]);
            else cJSON_AddNullToObject(parts, name);
            for (const cJSON *it = sc->parts[k] ? sc->parts[k]->child : NULL; it; it = it->next) {
                base_buf key = {0};
                base_buf_printf(&key, "%s/%s", name, it->string);
                cJSON_AddNumberToObject(parts, key.data, it->valuedouble);
                base_buf_free(&key);
            }
        }
        *n_err_samples += errored;
        char *line = base_json_print(row, 0);
        int bad = fputs(line, out) < 0 || fputc('\n', out) < 0;
        free(line);
        if (bad) {
            fprintf(stderr, "grpo score: write failed: %s\n", base_strerror_now());
            return -1;
        }
        cJSON_Delete(row);
        b->rows[i] = NULL;
    }
    memmove(b->rows, b->rows + n, (size_t)(b->n - n) * sizeof(cJSON *));
    b->n -= n;
    return 0;
}

int cli_cmd_score(int argc, char **argv) {
    const char *spec_text = NULL, *in = NULL, *outp = NULL, *errlog = NULL;
    int workers = 0, allow_partial = 0;
    int64_t bsize = 256;
    reward_limits lim;
    reward_limits_default(&lim);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--allow-partial")) {
            allow_partial = 1;
            continue;
        }
        if (i + 1 >= argc) return cli_usage_error("score", "%s needs a value (see --help)", a);
        const char *v = argv[++i];
        char *end = NULL;
        if (!strcmp(a, "--rewards")) spec_text = v;
        else if (!strcmp(a, "--in")) in = v;
        else if (!strcmp(a, "--out")) outp = v;
        else if (!strcmp(a, "--error-log")) errlog = v;
        else if (!strcmp(a, "--workers")) {
            long w = strtol(v, &end, 10); /* as a recipe's reward_workers */
            if (*end || end == v || w < 0 || w > REWARD_MAX_WORKERS)
                return cli_usage_error("score", "--workers %s: must be an integer in [0, %d] (0: all cores)", v,
                                       REWARD_MAX_WORKERS);
            workers = (int)w;
        }
        else if (!strcmp(a, "--batch")) bsize = strtoll(v, &end, 10);
        else if (!strcmp(a, "--instructions")) lim.instructions = strtoll(v, &end, 10);
        else if (!strcmp(a, "--memory-mb")) {
            long long mb = strtoll(v, &end, 10); /* as a recipe's reward_memory_mb */
            if (*end || end == v || mb < REWARD_MIN_MEMORY_MB || mb > REWARD_MAX_MEMORY_MB)
                return cli_usage_error("score", "--memory-mb %s: must be an integer in [%d, %d]", v,
                                       REWARD_MIN_MEMORY_MB, REWARD_MAX_MEMORY_MB);
            lim.memory_bytes = (size_t)mb << 20;
        }
        else if (!strcmp(a, "--sandbox-timeout")) lim.sandbox.timeout_s = strtod(v, &end);
        else return cli_usage_error("score", "unknown option '%s' (see --help)", a);
        if (end && (*end || end == v)) return cli_usage_error("score", "%s: '%s' is not a number", a, v);
    }
    if (!spec_text || !in || !outp) return cli_usage_error("score", "--rewards, --in and --out are required");
    if (bsize < 1 || lim.instructions < REWARD_MIN_INSTRUCTIONS || !(lim.sandbox.timeout_s > 0))
        return cli_usage_error("score", "--batch >= 1, --instructions >= %d, --sandbox-timeout > 0",
                               REWARD_MIN_INSTRUCTIONS);

    reward_spec spec;
    if (reward_spec_parse(spec_text, &spec) != BASE_OK) {
        fprintf(stderr, "grpo score: %s\n", base_err_msg());
        return 1;
    }
    reward_pool *pool = NULL;
    base_status st = reward_pool_create(&spec, workers, &lim, errlog, &pool);
    reward_spec_free(&spec);
    if (!st) st = reward_pool_check(pool);
    if (st) {
        fprintf(stderr, "grpo score: %s\n", base_err_msg());
        reward_pool_destroy(pool);
        return 1;
    }
    base_jsonl *r = NULL;
    if (base_jsonl_open(in, &r) != BASE_OK) {
        fprintf(stderr, "grpo score: %s\n", base_err_msg());
        reward_pool_destroy(pool);
        return 1;
    }
    int to_stdout = !strcmp(outp, "-");
    char *tmp = NULL;
    FILE *out = stdout;
    if (!to_stdout) {
        base_buf t = {0};
        base_buf_printf(&t, "%s.tmp.%d", outp, (int)getpid());
        tmp = t.data;
        out = fopen(tmp, "w");
        if (!out) {
            fprintf(stderr, "grpo score: %s: %s\n", tmp, base_strerror_now());
            free(tmp);
            base_jsonl_close(r);
            reward_pool_destroy(pool);
            return 1;
        }
    }
    batch b = {base_xcalloc((size_t)bsize, sizeof(cJSON *)), 0, bsize,
               base_xmalloc((size_t)(bsize + 1) * sizeof(int64_t))};
    reward_scores sc = {0};
    int64_t n_in = 0, n_skip = 0, n_err_samples = 0;
    int rc = 0;
    double t0 = base_now();
    for (;;) {
        cJSON *row = NULL;
        st = base_jsonl_next(r, &row);
        if (st == BASE_ERR_EOF) break;
        if (st == BASE_ERR_PARSE) {
            fprintf(stderr, "grpo score: %s (skipped)\n", base_err_msg());
            n_skip++;
            continue;
        }
        if (st != BASE_OK) {
            fprintf(stderr, "grpo score: %s\n", base_err_msg());
            rc = 1;
            break;
        }
        char where[512];
        snprintf(where, sizeof where, "%s:%ld", base_jsonl_path(r), base_jsonl_line(r));
        const cJSON *comp = cJSON_IsObject(row) ? cJSON_GetObjectItemCaseSensitive(row, "completion") : NULL;
        if (cJSON_IsObject(row) && !cJSON_IsString(comp)) {
            fprintf(stderr, "grpo score: %s: no \"completion\" string (skipped)\n", where);
            cJSON_Delete(row);
            n_skip++;
            continue;
        }
        base_buf path = {0};
        size_t at = 0;
        int is_key = 0;
        if (bad_utf8(row, &path, &at, &is_key)) {
            const char *p = path.data ? path.data : "";
            if (!is_key) fprintf(stderr, "grpo score: %s: \"%s\": invalid UTF-8 at byte %zu (skipped)\n", where, p, at);
            else if (*p) fprintf(stderr, "grpo score: %s: a key in \"%s\": invalid UTF-8 at byte %zu (skipped)\n", where, p, at);
            else fprintf(stderr, "grpo score: %s: a key: invalid UTF-8 at byte %zu (skipped)\n", where, at);
            base_buf_free(&path);
            cJSON_Delete(row);
            n_skip++;
            continue;
        }
        base_buf_free(&path);
        if (reward_check_row(pool, row, where) != BASE_OK) {
            fprintf(stderr, "grpo score: %s (skipped)\n", base_err_msg());
            cJSON_Delete(row);
            n_skip++;
            continue;
        }
        b.rows[b.n++] = row;
        n_in++;
        if (b.n == b.cap && write_batch(out, pool, &b, &sc, 0, &n_err_samples) < 0) {
            rc = 1;
            break;
        }
    }
    if (rc == 0 && write_batch(out, pool, &b, &sc, 1, &n_err_samples) < 0) rc = 1;
    for (int64_t i = 0; i < b.n; i++) cJSON_Delete(b.rows[i]);
    free(b.rows), free(b.off);
    reward_scores_free(&sc);
    double dt = base_now() - t0;
    int64_t n_err = reward_pool_n_errors(pool);
    /* the first error of the first function that has one, for the message */
    char *first = NULL;
    const char *first_name = NULL;
    for (int f = 0; f < reward_pool_n_funcs(pool) && !first; f++)
        if ((first = reward_pool_first_error(pool, f))) first_name = reward_pool_func_name(pool, f);
    base_jsonl_close(r);
    int none = rc == 0 && n_in == 0; /* nothing to write: a failure, not an empty output */
    if (none) rc = 1;
    int partial = rc == 0 && n_err_samples > 0 && !allow_partial; /* scores with holes: not a success */
    if (partial) rc = 1;
    if (!to_stdout) {
        if (fflush(out) != 0 || fsync(fileno(out)) != 0) rc = 1;
        if (fclose(out) != 0) rc = 1;
        if (rc == 0 && rename(tmp, outp) != 0) {
            fprintf(stderr, "grpo score: rename %s -> %s: %s\n", tmp, outp, base_strerror_now());
            rc = 1;
        }
        if (rc != 0) unlink(tmp);
        free(tmp);
    } else if (fflush(stdout) != 0) {
        rc = 1;
    }
    fprintf(stderr, "grpo score: %lld samples scored, %lld lines skipped, %lld reward errors, %.2f s (%.1f samples/s)\n",
            (long long)n_in, (long long)n_skip, (long long)n_err, dt, dt > 0 ? (double)n_in / dt : 0.0);
    if (none) fprintf(stderr, "grpo score: %s: no sample scored (%lld line(s) skipped)\n", in, (long long)n_skip);
    if (partial || (n_err_samples > 0 && allow_partial)) {
        const char *log = reward_pool_error_log(pool);
        fprintf(stderr, "grpo score: %lld of %lld samples had a reward error (first: %s: %s; all in %s)%s\n",
                (long long)n_err_samples, (long long)n_in, first_name, first ? first : "?", log ? log : "stderr above",
                partial ? (to_stdout ? "; exit 1 (--allow-partial accepts partial scores)"
                                     : "; no output written (--allow-partial writes the scores, null where a reward "
                                       "failed)")
                        : "; written as null (--allow-partial)");
    }
    free(first);
    reward_pool_destroy(pool);
    return rc;
}
