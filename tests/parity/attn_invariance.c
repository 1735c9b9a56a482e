/*
 * Batch invariance of the training / prefill attention (mla_attn_fwd,
 * mla_attn_bwd): a sequence's rows of o, lse, dq, dkv and dkpe have the
 * same bits whether it is alone in the batch or packed at another offset
 * with other neighbours (before it, after it, empty sequences, many
 * one-token sequences). The rollout engine prefills prompts in groups
 * that depend on max_seqs and the page budget, and its completions must
 * not depend on them (docs/cuda.md, "Determinism").
 *
 * The sequence X (70 tokens: three tiles of the CUDA kernels, the last one
 * partial) takes the same inputs (q, kv, kpe, dO) in every layout; the
 * neighbours take other random values per layout. Two head shapes: small
 * (32 + 16 / 24, H 3) and the Moonlight / V3 dims (128 + 64 / 128, H 2).
 * Also: a cu_seqlens that decreases is reported (the process dies naming
 * it: the CUDA kernels check it on the device), never attended through.
 * Usage: attn_invariance [cpu|emu|cuda] (cuda: "skipped: no GPU" without one).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tensor/ops.h"
#ifdef GRPO_HAVE_CUDA_EMU
#include "emu/cuda_emu_ops.h"
#endif

enum { XLEN = 70, MAXSEQ = 40 };

typedef struct {
    const char *what;
    int nseq;
    int32_t len[MAXSEQ];
    int xi; /* which sequence is X */
} layout;

static const layout LAYOUTS[] = {
    {"alone", 1, {XLEN}, 0},
    {"after one of 30 tokens", 2, {30, XLEN}, 1},
    {"third of three (30, 30, X)", 3, {30, 30, XLEN}, 2},
    {"after 20 and 15 tokens", 3, {20, 15, XLEN}, 2},
    {"first, then 45 tokens", 2, {XLEN, 45}, 0},
    {"between 5 tokens, an empty sequence and 41 tokens", 4, {5, 0, XLEN, 41}, 2},
    {"after 33 one-token sequences, before 2 of 1", 36, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                                          1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, XLEN, 1, 1}, 33},
    {"after 32 and 64 tokens (a tile-aligned start)", 3, {32, 64, XLEN}, 2},
};
#define NLAYOUT ((int)(sizeof LAYOUTS / sizeof LAYOUTS[0]))

static uint64_t g_rng;
static float frand(float r) {
    g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return r * (2.0f * (float)((g_rng >> 40) & 0xffffff) / 16777216.0f - 1.0f);
}
static void fill(float *x, int64_t n, float r) {
    for (int64_t i = 0; i < n; i++) x[i] = frand(r);
}

typedef struct {
    int64_t h, dn, dr, dv;
    float range, scale;
} dims;

/* X's rows of every output, host copies */
typedef struct {
    float *o, *lse, *dq, *dkv, *dkpe;
} rows;

static void *dev_put(const struct ops *o, const void *h, size_t bytes) {
    void *d = o->alloc(bytes);
    o->upload(d, h, bytes);
    return d;
}

static tensor dt(const struct ops *o, void *d, tensor_dtype t, int nd, int64_t a, int64_t b, int64_t c) {
    int64_t s[3] = {a, b, c};
    return tensor_make(d, t, o->device, nd, s);
}

/* Runs the layout; X's inputs from xin (q, kv, kpe, dO rows), neighbours
 * from the generator; copies X's output rows into out. */
static void run_layout(const struct ops *o, const dims *d, const layout *L, float *const xin[4], rows *out) {
    int64_t dqk = d->dn + d->dr, dkv = d->dn + d->dv;
    int64_t rq = d->h * dqk, rkv = d->h * dkv, ro = d->h * d->dv;
    int32_t cu[MAXSEQ + 1] = {0};
    for (int s = 0; s < L->nseq; s++) cu[s + 1] = cu[s] + L->len[s];
    int64_t n = cu[L->nseq], x0 = cu[L->xi];
    float *q = malloc(sizeof(float) * (size_t)(n * rq)), *kv = malloc(sizeof(float) * (size_t)(n * rkv));
    float *kpe = malloc(sizeof(float) * (size_t)(n * d->dr)), *g = malloc(sizeof(float) * (size_t)(n * ro));
    fill(q, n * rq, d->range), fill(kv, n * rkv, d->range), fill(kpe, n * d->dr, d->range), fill(g, n * ro, 1.0f);
    memcpy(q + x0 * rq, xin[0], sizeof(float) * (size_t)(XLEN * rq));
    memcpy(kv + x0 * rkv, xin[1], sizeof(float) * (size_t)(XLEN * rkv));
    memcpy(kpe + x0 * d->dr, xin[2], sizeof(float) * (size_t)(XLEN * d->dr));
    memcpy(g + x0 * ro, xin[3], sizeof(float) * (size_t)(XLEN * ro));
    size_t f = sizeof(float);
    void *Q = dev_put(o, q, f * (size_t)(n * rq)), *KV = dev_put(o, kv, f * (size_t)(n * rkv));
    void *KPE = dev_put(o, kpe, f * (size_t)(n * d->dr)), *GO = dev_put(o, g, f * (size_t)(n * ro));
    void *CU = dev_put(o, cu, sizeof(int32_t) * (size_t)(L->nseq + 1));
    void *O = o->alloc(f * (size_t)(n * ro)), *LSE = o->alloc(f * (size_t)(n * d->h));
    void *DQ = o->alloc(f * (size_t)(n * rq)), *DKV = o->alloc(f * (size_t)(n * rkv));
    void *DKPE = o->alloc(f * (size_t)(n * d->dr));
    tensor tq = dt(o, Q, TENSOR_F32, 3, n, d->h, dqk), tkv = dt(o, KV, TENSOR_F32, 3, n, d->h, dkv);
    tensor tkpe = dt(o, KPE, TENSOR_F32, 2, n, d->dr, 1), tg = dt(o, GO, TENSOR_F32, 3, n, d->h, d->dv);
    tensor tcu = dt(o, CU, TENSOR_I32, 1, L->nseq + 1, 1, 1);
    tensor to = dt(o, O, TENSOR_F32, 3, n, d->h, d->dv), tl = dt(o, LSE, TENSOR_F32, 2, n, d->h, 1);
    tensor tdq = dt(o, DQ, TENSOR_F32, 3, n, d->h, dqk), tdkv = dt(o, DKV, TENSOR_F32, 3, n, d->h, dkv);
    tensor tdkpe = dt(o, DKPE, TENSOR_F32, 2, n, d->dr, 1);
    o->mla_attn_fwd(&to, &tl, &tq, &tkv, &tkpe, &tcu, d->scale);
    o->mla_attn_bwd(&tdq, &tdkv, &tdkpe, &tg, &tq, &tkv, &tkpe, &to, &tl, &tcu, d->scale);
    o->download(out->o, (float *)O + x0 * ro, f * (size_t)(XLEN * ro));
    o->download(out->lse, (float *)LSE + x0 * d->h, f * (size_t)(XLEN * d->h));
    o->download(out->dq, (float *)DQ + x0 * rq, f * (size_t)(XLEN * rq));
    o->download(out->dkv, (float *)DKV + x0 * rkv, f * (size_t)(XLEN * rkv));
    o->download(out->dkpe, (float *)DKPE + x0 * d->dr, f * (size_t)(XLEN * d->dr));
    void *bufs[] = {Q, KV, KPE, GO, CU, O, LSE, DQ, DKV, DKPE};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) o->free(bufs[i]);
    free(q), free(kv), free(kpe), free(g);
}

static void rows_alloc(rows *r, const dims *d) {
    int64_t dqk = d->dn + d->dr;
    r->o = malloc(sizeof(float) * (size_t)(XLEN * d->h * d->dv));
    r->lse = malloc(sizeof(float) * (size_t)(XLEN * d->h));
    r->dq = malloc(sizeof(float) * (size_t)(XLEN * d->h * dqk));
    r->dkv = malloc(sizeof(float) * (size_t)(XLEN * d->h * (d->dn + d->dv)));
    r->dkpe = malloc(sizeof(float) * (size_t)(XLEN * d->dr));
}
static void rows_free(rows *r) { free(r->o), free(r->lse), free(r->dq), free(r->dkv), free(r->dkpe); }

/* The first differing element of a [XLEN, w] block, or -1 (bitwise). */
static int64_t first_diff(const float *a, const float *b, int64_t w) {
    for (int64_t i = 0; i < XLEN * w; i++)
        if (memcmp(a + i, b + i, sizeof(float))) return i;
    return -1;
}

static int check(const struct ops *o, const dims *d) {
    int64_t dqk = d->dn + d->dr, dkv = d->dn + d->dv;
    int64_t w[5] = {d->h * d->dv, d->h, d->h * dqk, d->h * dkv, d->dr};
    const char *names[5] = {"o", "lse", "dq", "dkv", "dkpe"};
    float *xin[4];
    int64_t xw[4] = {d->h * dqk, d->h * dkv, d->dr, d->h * d->dv};
    g_rng = 12345;
    for (int i = 0; i < 4; i++) {
        xin[i] = malloc(sizeof(float) * (size_t)(XLEN * xw[i]));
        fill(xin[i], XLEN * xw[i], i == 3 ? 1.0f : d->range);
    }
    rows ref, got;
    rows_alloc(&ref, d), rows_alloc(&got, d);
    run_layout(o, d, &LAYOUTS[0], xin, &ref);
    int fails = 0;
    for (int l = 1; l < NLAYOUT; l++) {
        run_layout(o, d, &LAYOUTS[l], xin, &got);
        float *ra[5] = {ref.o, ref.lse, ref.dq, ref.dkv, ref.dkpe}, *ga[5] = {got.o, got.lse, got.dq, got.dkv, got.dkpe};
        int bad = 0;
        for (int k = 0; k < 5; k++) {
            int64_t i = first_diff(ra[k], ga[k], w[k]);
            if (i < 0) continue;
            printf("FAIL %s, H %lld, %lld+%lld / %lld: X %s: %s row %lld element %lld is %.9g, alone %.9g\n", o->name,
                   (long long)d->h, (long long)d->dn, (long long)d->dr, (long long)d->dv, LAYOUTS[l].what, names[k],
                   (long long)(i / w[k]), (long long)(i % w[k]), ga[k][i], ra[k][i]);
            bad = 1;
        }
        if (!bad)
            printf("ok %s, H %lld, %lld+%lld / %lld: X %s: o, lse, dq, dkv, dkpe bit-identical to X alone\n", o->name,
                   (long long)d->h, (long long)d->dn, (long long)d->dr, (long long)d->dv, LAYOUTS[l].what);
        fails += bad;
    }
    rows_free(&ref), rows_free(&got);
    for (int i = 0; i < 4; i++) free(xin[i]);
    return fails;
}

/* cu_seqlens {0, 20, 10, 40}: the child runs the forward and reads o back;
 * it must die with a message naming the fault (`want`). 0 when it does. */
static int check_bad_cu(const struct ops *o, const char *want) {
    int fd[2];
    if (pipe(fd)) return perror("pipe"), 1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return perror("fork"), 1;
    if (!pid) {
        dup2(fd[1], 2), close(fd[0]), close(fd[1]);
        int32_t cu[4] = {0, 20, 10, 40};
        dims d = {1, 32, 16, 24, 1.0f, 0.2f};
        size_t f = sizeof(float);
        void *Q = o->alloc(f * 40 * 48), *KV = o->alloc(f * 40 * 56), *KPE = o->alloc(f * 40 * 16);
        void *O = o->alloc(f * 40 * 24), *L = o->alloc(f * 40), *CU = dev_put(o, cu, sizeof cu);
        tensor tq = dt(o, Q, TENSOR_F32, 3, 40, 1, 48), tkv = dt(o, KV, TENSOR_F32, 3, 40, 1, 56);
        tensor tkpe = dt(o, KPE, TENSOR_F32, 2, 40, 16, 1), tcu = dt(o, CU, TENSOR_I32, 1, 4, 1, 1);
        tensor to = dt(o, O, TENSOR_F32, 3, 40, 1, 24), tl = dt(o, L, TENSOR_F32, 2, 40, 1, 1);
        o->mla_attn_fwd(&to, &tl, &tq, &tkv, &tkpe, &tcu, d.scale);
        float x;
        o->download(&x, O, sizeof x);
        _exit(0);
    }
    close(fd[1]);
    char msg[4096];
    size_t n = 0;
    ssize_t k;
    while (n < sizeof msg - 1 && (k = read(fd[0], msg + n, sizeof msg - 1 - n)) > 0) n += (size_t)k;
    msg[n] = 0;
    close(fd[0]);
    int st;
    waitpid(pid, &st, 0);
    int died = !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    if (!died || !strstr(msg, want)) {
        printf("FAIL %s: cu_seqlens {0, 20, 10, 40}: %s, message \"%s\" (want \"%s\")\n", o->name,
               died ? "died" : "accepted", msg, want);
        return 1;
    }
    printf("ok %s: cu_seqlens {0, 20, 10, 40} refused: %s", o->name, msg);
    return 0;
}

int main(int argc, char **argv) {
    const char *backend = argc > 1 ? argv[1] : "cpu";
    const struct ops *o = NULL;
#ifdef GRPO_HAVE_CUDA_EMU
    if (!strcmp(backend, "emu")) o = ops_cuda_emu();
    else
#endif
        if (!strcmp(backend, "cpu") || !strcmp(backend, "cuda"))
        o = ops_by_name(backend);
    else {
        fprintf(stderr, "usage: attn_invariance [cpu|emu|cuda]\n");
        return 2;
    }
    if (!o) {
        if (!strcmp(backend, "cuda")) {
            printf("skipped: no GPU (%s)\n", base_err_msg());
            return 0;
        }
        fprintf(stderr, "attn_invariance: %s\n", base_err_msg());
        return 2;
    }
    dims small = {3, 32, 16, 24, 1.0f, 0.2f}, wide = {2, 128, 64, 128, 0.3f, 0.07f};
    int fails = check(o, &small) + check(o, &wide);
    printf("attn_invariance on %s: %d of %d layouts differ\n", o->name, fails, 2 * (NLAYOUT - 1));
    /* the CPU checks cu_seqlens on the host, the CUDA kernels on the device */
    fails += check_bad_cu(o, o->device == TENSOR_CPU ? "cu_seqlens decreases at 1" : "mla_attn: length -10 at row 1");
    return fails ? 1 : 0;
}
