/*
 * bench_tok: tokenizer encode throughput (MB/s of UTF-8 input).
 *
 *   bench_tok TOKENIZER_DIR CORPUS.jsonl [THREADS] [REPEATS]
 *
 * CORPUS.jsonl holds {"text": ...} documents (bench/run_tok_bench.sh builds
 * a mixed English / Chinese / code / math one). Measures, after one warm-up
 * pass: tok_encode over the documents on one thread, and tok_encode_batch
 * over a pool of THREADS (default: all cores). Prints the median of REPEATS
 * (default 5) passes and the token count plus an FNV-1a checksum of all ids,
 * so a peer run on the same corpus can show it produced the same tokens.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "tok/tok.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_tok TOKENIZER_DIR CORPUS.jsonl [THREADS] [REPEATS]\n");
        return 2;
    }
    int threads = argc > 3 ? atoi(argv[3]) : base_ncpu();
    int reps = argc > 4 ? atoi(argv[4]) : 5;
    if (reps < 1) reps = 1;
    if (reps > 64) reps = 64;
    double t0 = base_now();
    tok_tokenizer *tk;
    if (tok_load(argv[1], &tk)) {
        fprintf(stderr, "bench_tok: %s\n", base_err_msg());
        return 1;
    }
    double load_s = base_now() - t0;

    base_jsonl *r;
    if (base_jsonl_open(argv[2], &r)) {
        fprintf(stderr, "bench_tok: %s\n", base_err_msg());
        return 1;
    }
    char **texts = NULL;
    size_t *lens = NULL, bytes = 0;
    int64_t n = 0, cap = 0;
    cJSON *o;
    base_status st;
    while ((st = base_jsonl_next(r, &o)) != BASE_ERR_EOF) {
        if (st) {
            fprintf(stderr, "bench_tok: %s\n", base_err_msg());
            return 1;
        }
        const char *t = base_json_str(o, "text", NULL);
        if (t) {
            if (n == cap) {
                cap = cap ? cap * 2 : 1024;
                texts = base_xrealloc(texts, (size_t)cap * sizeof *texts);
                lens = base_xrealloc(lens, (size_t)cap * sizeof *lens);
            }
            texts[n] = base_xstrdup(t);
            lens[n] = strlen(t);
            bytes += lens[n++];
        }
        cJSON_Delete(o);
    }
    base_jsonl_close(r);

    tok_ids *outs = base_xcalloc((size_t)n, sizeof *outs);
    double single[64], batch[64];
    base_pool *pool = base_pool_create(threads);
    for (int rep = -1; rep < reps; rep++) { /* rep -1: warm-up */
        double a = base_now();
        for (int64_t i = 0; i < n; i++) {
            outs[i].n = 0;
            if (tok_encode(tk, texts[i], lens[i], 0, &outs[i])) {
                fprintf(stderr, "bench_tok: document %lld: %s\n", (long long)i, base_err_msg());
                return 1;
            }
        }
        double b = base_now();
        for (int64_t i = 0; i < n; i++) outs[i].n = 0;
        if (tok_encode_batch(tk, pool, (const char *const *)texts, lens, n, 0, outs, NULL)) {
            fprintf(stderr, "bench_tok: %s\n", base_err_msg());
            return 1;
        }
        double c = base_now();
        if (rep >= 0) {
            single[rep] = b - a;
            batch[rep] = c - b;
        }
    }
    int64_t tokens = 0;
    uint64_t h = 0xcbf29ce484222325ull;
    for (int64_t i = 0; i < n; i++) {
        tokens += outs[i].n;
        for (int64_t k = 0; k < outs[i].n; k++) h = (h ^ (uint32_t)outs[i].ids[k]) * 0x100000001b3ull;
    }
    double mb = (double)bytes / 1e6;
    double s1 = median(single, reps), sb = median(batch, reps);
    printf("grpo tok: %lld docs, %.2f MB, %lld tokens, ids checksum %016llx, load %.2f s\n",
           (long long)n, mb, (long long)tokens, (unsigned long long)h, load_s);
    printf("grpo tok: single thread %.2f MB/s (%.0f tokens/s)\n", mb / s1, (double)tokens / s1);
    printf("grpo tok: batch, %d threads %.2f MB/s (%.0f tokens/s)\n", base_pool_size(pool),
           mb / sb, (double)tokens / sb);
    base_pool_destroy(pool);
    for (int64_t i = 0; i < n; i++) {
        free(texts[i]);
        tok_ids_free(&outs[i]);
    }
    free(texts);
    free(lens);
    free(outs);
    tok_free(tk);
    return 0;
}
