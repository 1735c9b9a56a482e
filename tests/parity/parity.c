/*
 * The parity harness: every op of the CUDA table against the CPU reference
 * on fresh random inputs.
 *
 * HOW TO ADD AN OP: append one entry to `cases[]` below per shape/dtype
 * combination, naming the op's field of `struct ops` (OPFN(name)) and its
 * signature kind. If the op has a signature no existing kind covers (say
 * rmsnorm: y, x, w, eps), add one `SIG_` value and one `case` in call_op()
 * that calls it; nothing else changes. The _Static_assert below fails to
 * compile when `struct ops` grows, as a reminder: update it together with
 * the new entries, and the `covered` list in check_coverage().
 *
 * For each case the harness
 *   1. draws inputs uniform in [-range, range] from a fresh seed (printed;
 *      GRPO_PARITY_SEED=N repeats a run), rounded to the input dtype so that
 *      both backends see the same values;
 *   2. fills the output with NaN when the op overwrites it (the contract: an
 *      overwrite never reads the old value) or with random values when it
 *      accumulates (axpy, matmul with beta != 0);
 *   3. runs the CPU reference (float32; the inputs widened to f32, since the
 *      CPU backend computes in f32 only; `convert` runs on the real dtypes)
 *      and the backend under test, each with canaries (GUARD sentinel bytes
 *      before and after every output buffer) that must survive the op, and
 *      checks that the inputs were not written;
 *   4. compares element-wise: the NaN/Inf class must agree, and
 *      |out - ref| <= rtol * |mag| + atol, where mag is the same op run on
 *      |inputs| with |scalars| (for matmul, sum_k |a_ik||b_kj|: the natural
 *      scale of rounding error in a dot product), and reports the NMSE.
 *
 * Without a usable GPU it prints "skipped: no GPU (...)" and passes.
 * Every case prints one line (a record for bench/RESULTS.md).
 * Options: --filter OP (only cases of that op), --backend cpu (run the
 * f32/convert cases against the CPU backend itself), --backend emu (the
 * CUDA kernels run on the CPU by the CUDA emulator, tests/cuda), --selftest (prove the
 * harness catches broken backends: canary overrun, wrong values, NaN from
 * an ignored beta = 0, a written input).
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tensor/ops.h"
#ifdef GRPO_HAVE_CUDA_EMU
#include "emu/cuda_emu_ops.h"
#endif

/* The model ops' cases (gather_rows .. sample) live in parity_model.c. */
int parity_model_coverage(void);
int parity_model_run(const struct ops *dev, const char *filter, int verbose, uint64_t seed, int *nrun);
int parity_model_selftest(uint64_t seed);

/* The graph entries after adamw are not numerical ops: graph replay is
 * checked against eager launches by tests/cuda/test_cuda_graph.c. */
_Static_assert(sizeof(struct ops) == offsetof(struct ops, graph_free) + sizeof(void (*)(void)),
               "struct ops has a new op: add its parity cases to tests/parity/parity.c "
               "and move this assertion to the new last field");

/* ---- tolerances: reviewed data ---------------------------------------------
 * Each is {rtol, atol} against mag (see above). Why each value:
 *
 * F32_GEMM 1e-5: both sides sum K products in float32 in different orders
 *   (CPU: blocked FMA chains; cuBLAS: its own split). The rounding error of
 *   each is about sqrt(K) * 2^-24 * mag for random signs, 2.7e-6 * mag at
 *   K = 2048 (the largest K below), so the difference of the two stays well
 *   under 1e-5 * mag. The worst case K * 2^-24 (1.2e-4 at K = 2048) needs
 *   all errors to line up and does not occur with random inputs; a real
 *   bug (a dropped K block, a wrong transpose) is off by O(mag). cuBLAS runs
 *   with CUBLAS_DEFAULT_MATH (no TF32): TF32 would need ~1e-3.
 * F32_EW 2.5e-7: elementwise float32 ops are one correctly rounded
 *   operation on each side (2^-24 relative each); axpy may be fused into
 *   an FMA on one side and not the other. Two f32 ulps of mag cover both.
 * BF16_OUT 2^-8 + 2e-5: a bf16 output is the float32 result rounded once
 *   to 8 significant bits: |error| <= half an ulp <= 2^-8 * |value| <=
 *   2^-8 * mag (the bound is reached just above a power of two), plus the
 *   f32 accumulation difference (<= 1e-5 * mag, twice for safety). A real
 *   bug (a dropped block, a wrong index) is off by O(mag). bf16 inputs are exact in f32 and products of two bf16
 *   values are exact in f32, so bf16-in/f32-out GEMMs use F32_GEMM.
 * SUMSQ 2.5e-7: both sides accumulate in double (the op's contract) and
 *   round the sum to float32 once here; the double sums differ only by
 *   order (~1e-16 relative), so the float results are within an ulp.
 * ADAMW 2.5e-7 of mag plus atol 4e-9: each updated element is a short chain
 *   of correctly rounded float32 operations (an FMA on one side moves it by
 *   an ulp); the parameter row carries the update term, about lr = 1e-2 in
 *   size, whose ulps (~1e-9) the atol covers when the magnitude run's
 *   |p| - update cancels.
 * EXACT 0: conversions are correctly rounded on both sides (round to
 *   nearest even; F8 saturates to +-448, F16 overflows to inf, integers
 *   round half to even), so they must agree bit for bit.
 */
typedef struct {
    double rtol, atol;
} tol;
#define TOL_F32_GEMM ((tol){1e-5, 0})
#define TOL_F32_EW ((tol){2.5e-7, 0})
#define TOL_BF16_OUT ((tol){1.0 / 256 + 2e-5, 0})
#define TOL_EXACT ((tol){0, 0})
#define TOL_SUMSQ ((tol){2.5e-7, 0})
#define TOL_ADAMW ((tol){2.5e-7, 4e-9})

/* ---- the registry -------------------------------------------------------- */

typedef enum {
    SIG_MATMUL,  /* matmul(c, a, b, ta, tb, alpha, beta) */
    SIG_BINARY,  /* f(y, a, b): add, mul */
    SIG_UNARY_S, /* f(y, x, s): scale (overwrites y) */
    SIG_AXPY_S,  /* f(y, x, s): axpy (accumulates into y) */
    SIG_CONVERT, /* f(dst, src) on the real dtypes */
    SIG_SUMSQ,   /* double f(x): the sum, rounded to float, is the [1] output */
    SIG_ADAMW,   /* f(p, m, v, grad, args): in[0] grad [n], in[1] start state [3, n]
                  * (rows p, m, v; v squared to be >= 0); output the state after
                  * one update [3, n]; alpha is grad_scale */
} sig_kind;

typedef struct {
    int ndim;
    int64_t d[4];
} shp;

#define MAXIN 2
typedef struct {
    const char *op; /* the field name in struct ops */
    size_t fn;      /* offsetof(struct ops, field) */
    sig_kind sig;
    int nin;
    shp in[MAXIN], out;
    tensor_dtype in_dt[MAXIN], out_dt;
    int ta, tb;
    float alpha, beta; /* matmul; alpha is `s` for scale and axpy */
    float range;       /* inputs uniform in [-range, range] */
    tol tol;
} pcase;

#define OPFN(name) #name, offsetof(struct ops, name)
#define S1(a) {1, {a}}
#define S2(a, b) {2, {a, b}}
#define S3(a, b, c) {3, {a, b, c}}
#define F32 TENSOR_F32
#define BF16 TENSOR_BF16
#define F16 TENSOR_F16
#define F8 TENSOR_F8_E4M3
#define I32 TENSOR_I32
#define I64 TENSOR_I64

/* C[m,n] = op(A) op(B): A [m,k] (or [k,m] with ta), B [k,n] (or [n,k] with tb) */
#define MM(dt, odt, A, B, C, TA, TB, AL, BE, T)                                                    \
    {OPFN(matmul), SIG_MATMUL, 2, {A, B}, C, {dt, dt}, odt, TA, TB, AL, BE, 1.0f, T}
#define EW2(name, n, dt, odt, T) {OPFN(name), SIG_BINARY, 2, {n, n}, n, {dt, dt}, odt, 0, 0, 0, 0, 1.0f, T}
#define EWS(name, sig, n, dt, odt, s, T) {OPFN(name), sig, 1, {n}, n, {dt}, odt, 0, 0, s, 0, 1.0f, T}
#define CV(from, to, n, r) {OPFN(convert), SIG_CONVERT, 1, {n}, n, {from}, to, 0, 0, 0, 0, r, TOL_EXACT}
#define SUMSQ(n, r) {OPFN(sumsq), SIG_SUMSQ, 1, {n}, S1(1), {F32}, F32, 0, 0, 0, 0, r, TOL_SUMSQ}
#define ADAMW(n, scale) \
    {OPFN(adamw), SIG_ADAMW, 2, {S1(n), S2(3, n)}, S2(3, n), {F32, F32}, F32, 0, 0, scale, 0, 1.0f, TOL_ADAMW}

static const pcase cases[] = {
    /* matmul, float32: the four transposes at the model's shapes
     * (x W^T with W [out, in]; backward: dX = dY W, dW = dY^T X) */
    MM(F32, F32, S2(37, 64), S2(64, 320), S2(37, 320), 0, 0, 1.0f, 0.0f, TOL_F32_GEMM),
    MM(F32, F32, S2(37, 64), S2(320, 64), S2(37, 320), 0, 1, 1.0f, 0.0f, TOL_F32_GEMM),
    MM(F32, F32, S2(64, 37), S2(64, 320), S2(37, 320), 1, 0, 1.0f, 0.0f, TOL_F32_GEMM),
    MM(F32, F32, S2(64, 37), S2(320, 64), S2(37, 320), 1, 1, 0.5f, 0.0f, TOL_F32_GEMM),
    /* beta = 1 accumulates (gradient accumulation), alpha != 1 */
    MM(F32, F32, S2(37, 320), S2(320, 64), S2(37, 64), 0, 0, 1.0f, 1.0f, TOL_F32_GEMM),
    MM(F32, F32, S2(320, 37), S2(320, 64), S2(37, 64), 1, 0, -0.75f, 1.0f, TOL_F32_GEMM),
    /* odd sizes, every tile edge */
    MM(F32, F32, S2(7, 5), S2(13, 5), S2(7, 13), 0, 1, 1.0f, 0.0f, TOL_F32_GEMM),
    /* decode: one token against a weight; large K */
    MM(F32, F32, S2(1, 1024), S2(512, 1024), S2(1, 512), 0, 1, 1.0f, 0.0f, TOL_F32_GEMM),
    MM(F32, F32, S2(64, 2048), S2(128, 2048), S2(64, 128), 0, 1, 1.0f, 0.0f, TOL_F32_GEMM),
    /* batched, and broadcast of a 2-D operand or a batch of 1 */
    MM(F32, F32, S3(4, 33, 48), S3(4, 48, 40), S3(4, 33, 40), 0, 0, 1.0f, 0.0f, TOL_F32_GEMM),
    MM(F32, F32, S3(3, 17, 64), S2(96, 64), S3(3, 17, 96), 0, 1, 1.0f, 0.0f, TOL_F32_GEMM),
    MM(F32, F32, S3(1, 20, 32), S3(5, 32, 24), S3(5, 20, 24), 0, 0, 1.0f, 1.0f, TOL_F32_GEMM),
    MM(F32, F32, S3(5, 32, 20), S3(5, 24, 32), S3(5, 20, 24), 1, 1, 1.0f, 0.0f, TOL_F32_GEMM),
    /* matmul, bf16 inputs with f32 output (exact products, f32 sums) */
    MM(BF16, F32, S2(37, 64), S2(320, 64), S2(37, 320), 0, 1, 1.0f, 0.0f, TOL_F32_GEMM),
    MM(BF16, F32, S2(64, 37), S2(64, 320), S2(37, 320), 1, 0, 1.0f, 1.0f, TOL_F32_GEMM),
    MM(BF16, F32, S3(3, 17, 64), S2(96, 64), S3(3, 17, 96), 0, 1, 1.0f, 0.0f, TOL_F32_GEMM),
    /* matmul, bf16 in and out */
    MM(BF16, BF16, S2(37, 64), S2(64, 320), S2(37, 320), 0, 0, 1.0f, 0.0f, TOL_BF16_OUT),
    MM(BF16, BF16, S2(37, 64), S2(320, 64), S2(37, 320), 0, 1, 1.0f, 1.0f, TOL_BF16_OUT),
    MM(BF16, BF16, S2(64, 37), S2(320, 64), S2(37, 320), 1, 1, 2.0f, 0.0f, TOL_BF16_OUT),
    MM(BF16, BF16, S3(4, 33, 48), S3(4, 48, 40), S3(4, 33, 40), 0, 0, 1.0f, 0.0f, TOL_BF16_OUT),
    MM(BF16, BF16, S2(1, 1024), S2(512, 1024), S2(1, 512), 0, 1, 1.0f, 0.0f, TOL_BF16_OUT),
    /* elementwise */
    EW2(add, S2(37, 320), F32, F32, TOL_F32_EW),
    EW2(add, S1(100003), F32, F32, TOL_F32_EW),
    EW2(add, S2(37, 320), BF16, BF16, TOL_BF16_OUT),
    EW2(mul, S2(37, 320), F32, F32, TOL_F32_EW),
    EW2(mul, S1(100003), BF16, BF16, TOL_BF16_OUT),
    EW2(mul, S3(2, 3, 5), BF16, F32, TOL_F32_EW),
    EWS(scale, SIG_UNARY_S, S2(37, 320), F32, F32, -1.5f, TOL_F32_EW),
    EWS(scale, SIG_UNARY_S, S1(100003), BF16, BF16, 0.125f, TOL_BF16_OUT),
    EWS(axpy, SIG_AXPY_S, S2(37, 320), F32, F32, 0.3f, TOL_F32_EW),
    EWS(axpy, SIG_AXPY_S, S1(100003), F32, F32, -2.0f, TOL_F32_EW),
    EWS(axpy, SIG_AXPY_S, S2(37, 320), BF16, BF16, 0.3f, TOL_BF16_OUT),
    EWS(axpy, SIG_AXPY_S, S2(37, 320), BF16, F32, 0.3f, TOL_F32_EW),
    /* dtype conversions (ranges chosen to cover F8 saturation past 448,
     * F8/F16 subnormals near 0, and integer rounding) */
    CV(F32, BF16, S2(37, 320), 100.0f),
    CV(BF16, F32, S2(37, 320), 100.0f),
    CV(F32, F16, S2(37, 320), 100.0f),
    CV(F16, F32, S2(37, 320), 100.0f),
    CV(F32, F8, S2(37, 320), 600.0f),
    CV(F32, F8, S1(4096), 0.02f),
    CV(F8, F32, S2(37, 320), 400.0f),
    CV(BF16, F16, S1(4096), 1000.0f),
    CV(F16, BF16, S1(4096), 1000.0f),
    CV(BF16, F8, S1(4096), 500.0f),
    CV(F8, BF16, S1(4096), 400.0f),
    CV(F32, I32, S1(4096), 1000.0f),
    CV(F32, I64, S1(4096), 1000.0f),
    CV(I32, F32, S1(4096), 100000.0f),
    CV(I64, F32, S1(4096), 100000.0f),
    CV(I64, BF16, S1(4096), 1000.0f),
    CV(F32, F32, S1(4096), 1.0f),
    /* optimizer: the global-norm reduction (several block sizes, odd n) and
     * the AdamW update, unclipped and clipped */
    SUMSQ(S1(1), 3.0f),
    SUMSQ(S1(100003), 1.0f),
    SUMSQ(S1(1 << 20), 0.01f),
    ADAMW(4099, 1.0f),
    ADAMW(100003, 0.37f),
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

/* Every compute op of struct ops must have a case (the memory ops are
 * exercised by every case). */
static int check_coverage(void) {
    static const struct {
        const char *name;
        size_t off;
    } covered[] = {{OPFN(matmul)}, {OPFN(add)},     {OPFN(mul)},  {OPFN(scale)},
                   {OPFN(axpy)},   {OPFN(convert)}, {OPFN(sumsq)}, {OPFN(adamw)}};
    int ok = 1;
    for (size_t i = 0; i < sizeof covered / sizeof *covered; i++) {
        int n = 0;
        for (int c = 0; c < NCASES; c++) n += cases[c].fn == covered[i].off;
        if (!n) {
            printf("FAIL: op %s has no parity case\n", covered[i].name);
            ok = 0;
        }
    }
    return ok;
}

/* ---- running one case ------------------------------------------------------ */

#define GUARD 256 /* canary bytes before and after every output buffer */
#define CANARY 0xA5

static uint64_t g_seed;

typedef struct {
    const struct ops *o;
    void *raw; /* guarded allocation on the backend */
    tensor t;  /* view of the payload */
    size_t bytes;
} buf;

static tensor mk_tensor(void *data, tensor_dtype dt, const struct ops *o, const shp *s) {
    return tensor_make(data, dt, o->device, s->ndim, s->d);
}

static int64_t shp_numel(const shp *s) {
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= s->d[i];
    return n;
}

/* A guarded buffer on backend o holding host bytes `src` (dtype dt). */
static buf buf_new(const struct ops *o, tensor_dtype dt, const shp *s, const void *src) {
    buf b;
    b.o = o;
    b.bytes = (size_t)shp_numel(s) * tensor_dtype_size(dt);
    size_t total = b.bytes + 2 * GUARD;
    uint8_t *host = malloc(total);
    memset(host, CANARY, total);
    memcpy(host + GUARD, src, b.bytes);
    b.raw = o->alloc(total);
    o->upload(b.raw, host, total);
    free(host);
    b.t = mk_tensor((uint8_t *)b.raw + GUARD, dt, o, s);
    return b;
}

/* Download the payload into dst (host) and check both canaries. Returns 0
 * and prints when a canary was overwritten. */
static int buf_fetch(const buf *b, void *dst, const char *what) {
    size_t total = b->bytes + 2 * GUARD;
    uint8_t *host = malloc(total);
    b->o->download(host, b->raw, total);
    int ok = 1;
    for (size_t i = 0; i < GUARD && ok; i++)
        if (host[i] != CANARY || host[GUARD + b->bytes + i] != CANARY) {
            printf("    canary overwritten %s the %s buffer (byte %zu)\n",
                   host[i] != CANARY ? "before" : "after", what, i);
            ok = 0;
        }
    memcpy(dst, host + GUARD, b->bytes);
    free(host);
    return ok;
}

static void buf_free(buf *b) { b->o->free(b->raw); }

/* Call the op of case c on backend o (the one place that knows signatures). */
static void call_op(const struct ops *o, const pcase *c, tensor *out, tensor *in, int mag) {
    const char *slot = (const char *)o + c->fn;
    float s = mag ? fabsf(c->alpha) : c->alpha, beta = mag ? fabsf(c->beta) : c->beta;
    switch (c->sig) {
    case SIG_MATMUL: {
        void (*f)(tensor *, const tensor *, const tensor *, int, int, float, float);
        memcpy(&f, slot, sizeof f);
        f(out, &in[0], &in[1], c->ta, c->tb, s, beta);
        break;
    }
    case SIG_BINARY: {
        void (*f)(tensor *, const tensor *, const tensor *);
        memcpy(&f, slot, sizeof f);
        f(out, &in[0], &in[1]);
        break;
    }
    case SIG_UNARY_S:
    case SIG_AXPY_S: {
        void (*f)(tensor *, const tensor *, float);
        memcpy(&f, slot, sizeof f);
        f(out, &in[0], s);
        break;
    }
    case SIG_CONVERT: {
        void (*f)(tensor *, const tensor *);
        memcpy(&f, slot, sizeof f);
        f(out, &in[0]);
        break;
    }
    case SIG_SUMSQ: {
        double (*f)(const tensor *);
        memcpy(&f, slot, sizeof f);
        float r = (float)f(&in[0]);
        o->upload(out->data, &r, sizeof r);
        break;
    }
    case SIG_ADAMW: {
        void (*f)(tensor *, tensor *, tensor *, const tensor *, const ops_adamw_args *);
        memcpy(&f, slot, sizeof f);
        int64_t n = in[0].shape[0];
        o->copy(out->data, in[1].data, (size_t)(3 * n) * sizeof(float));
        tensor row[3];
        for (int r = 0; r < 3; r++)
            row[r] = tensor_make((float *)out->data + r * n, TENSOR_F32, o->device, 1, &n);
        o->mul(&row[2], &row[2], &row[2]); /* v >= 0 */
        ops_adamw_args a = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                            .weight_decay = 0.1, .grad_scale = s, .step = 3};
        f(&row[0], &row[1], &row[2], &in[0], &a);
        break;
    }
    }
    o->sync();
}

/* Does the op read its output before writing it? */
static int accumulates(const pcase *c) {
    return c->sig == SIG_AXPY_S || (c->sig == SIG_MATMUL && c->beta != 0.0f);
}

/* Fill x with values in [-r, r] exactly representable in dt. */
static void rand_in(float *x, int64_t n, tensor_dtype dt, float r, uint64_t seed) {
    base_rng g;
    base_rng_init(&g, seed, 0x9a41, 0, 0);
    for (int64_t i = 0; i < n; i++) x[i] = (2.0f * base_rng_uniform(&g, (uint32_t)i) - 1.0f) * r;
    void *tmp = malloc((size_t)n * 8 + 8);
    tensor_from_f32(tmp, dt, x, n);
    tensor_to_f32(x, tmp, dt, n);
    free(tmp);
}

/* Run case c on backend `o` with typed host inputs; output widened to f32
 * in *res. Returns 0 on a canary or input-write failure (printed). */
static int run_on(const struct ops *o, const pcase *c, int native, void *const *in_typed,
                  const float *const *in_f32, const void *out_init_typed, const float *out_init_f32,
                  float *res, int mag) {
    buf in[MAXIN], out;
    tensor tin[MAXIN];
    int ok = 1;
    for (int i = 0; i < c->nin; i++) {
        tensor_dtype dt = native ? c->in_dt[i] : TENSOR_F32;
        in[i] = buf_new(o, dt, &c->in[i], native ? in_typed[i] : (const void *)in_f32[i]);
        tin[i] = in[i].t;
    }
    tensor_dtype odt = native ? c->out_dt : TENSOR_F32;
    out = buf_new(o, odt, &c->out, native ? out_init_typed : (const void *)out_init_f32);
    call_op(o, c, &out.t, tin, mag);
    int64_t n = shp_numel(&c->out);
    void *host = malloc(out.bytes + 8);
    ok &= buf_fetch(&out, host, "output");
    tensor_to_f32(res, host, odt, n);
    free(host);
    for (int i = 0; i < c->nin; i++) {
        void *back = malloc(in[i].bytes + 8);
        ok &= buf_fetch(&in[i], back, "input");
        if (memcmp(back, native ? in_typed[i] : (const void *)in_f32[i], in[i].bytes)) {
            printf("    the op wrote into input %d\n", i);
            ok = 0;
        }
        free(back);
        buf_free(&in[i]);
    }
    buf_free(&out);
    return ok;
}

static const char *fmt_case(const pcase *c, char *b, size_t n) {
    size_t o = (size_t)snprintf(b, n, "%-7s ", c->op);
    for (int i = 0; i < c->nin && o < n; i++) {
        tensor t = tensor_make(NULL, c->in_dt[i], TENSOR_CPU, c->in[i].ndim, c->in[i].d);
        char s[64];
        o += (size_t)snprintf(b + o, n - o, "%s%s %s%s", i ? ", " : "", tensor_dtype_name(c->in_dt[i]),
                              tensor_shape_str(&t, s, sizeof s),
                              (i == 0 && c->ta) || (i == 1 && c->tb) ? "^T" : "");
    }
    if (o < n) {
        tensor t = tensor_make(NULL, c->out_dt, TENSOR_CPU, c->out.ndim, c->out.d);
        char s[64];
        o += (size_t)snprintf(b + o, n - o, " -> %s %s", tensor_dtype_name(c->out_dt),
                              tensor_shape_str(&t, s, sizeof s));
    }
    if (c->sig == SIG_MATMUL && o < n)
        snprintf(b + o, n - o, " alpha %g beta %g", c->alpha, c->beta);
    else if ((c->sig == SIG_UNARY_S || c->sig == SIG_AXPY_S) && o < n)
        snprintf(b + o, n - o, " s %g", c->alpha);
    return b;
}

static int fclass(float x) { return isnan(x) ? 2 : isinf(x) ? (x > 0 ? 3 : 4) : 0; }

/* 1 = pass. */
static int run_case(const struct ops *dev, const pcase *c, int idx, int verbose) {
    const struct ops *cpu = ops_cpu();
    uint64_t seed = g_seed + (uint64_t)idx * 1000003u;
    float *in_f32[MAXIN], *in_abs[MAXIN];
    void *in_typed[MAXIN];
    for (int i = 0; i < c->nin; i++) {
        int64_t n = shp_numel(&c->in[i]);
        in_f32[i] = malloc((size_t)n * sizeof(float) + 4);
        in_abs[i] = malloc((size_t)n * sizeof(float) + 4);
        in_typed[i] = malloc((size_t)n * 8 + 8);
        rand_in(in_f32[i], n, c->in_dt[i], c->range, seed + (uint64_t)i);
        tensor_from_f32(in_typed[i], c->in_dt[i], in_f32[i], n);
        for (int64_t k = 0; k < n; k++) in_abs[i][k] = fabsf(in_f32[i][k]);
    }
    int64_t n = shp_numel(&c->out);
    float *init = malloc((size_t)n * sizeof(float) + 4), *init_abs = malloc((size_t)n * sizeof(float) + 4);
    void *init_typed = malloc((size_t)n * 8 + 8);
    if (accumulates(c)) {
        rand_in(init, n, c->out_dt, c->range, seed + 17);
    } else {
        for (int64_t k = 0; k < n; k++) init[k] = NAN;
    }
    tensor_from_f32(init_typed, c->out_dt, init, n);
    tensor_to_f32(init, init_typed, c->out_dt, n); /* what the output dtype can hold (NaN for ints: 0) */
    for (int64_t k = 0; k < n; k++) init_abs[k] = fabsf(init[k]);

    float *ref = malloc((size_t)n * sizeof(float) + 4), *got = malloc((size_t)n * sizeof(float) + 4),
          *mag = malloc((size_t)n * sizeof(float) + 4);
    int native_ref = c->sig == SIG_CONVERT;
    const float *cin[MAXIN] = {in_f32[0], c->nin > 1 ? in_f32[1] : NULL};
    const float *cabs[MAXIN] = {in_abs[0], c->nin > 1 ? in_abs[1] : NULL};
    int ok = run_on(cpu, c, native_ref, in_typed, cin, init_typed, init, ref, 0);
    if (!ok) printf("    (in the CPU reference)\n");
    if (native_ref) {
        for (int64_t k = 0; k < n; k++) mag[k] = fabsf(ref[k]);
    } else {
        ok &= run_on(cpu, c, 0, NULL, cabs, NULL, init_abs, mag, 1);
    }
    ok &= run_on(dev, c, 1, in_typed, cin, init_typed, init, got, 0);

    double num = 0, den = 0, worst = 0;
    int64_t bad = -1, nbad = 0;
    for (int64_t k = 0; k < n; k++) {
        double r = ref[k], g = got[k];
        if (fclass(got[k]) != fclass(ref[k])) {
            if (bad < 0) bad = k;
            nbad++;
            continue;
        }
        if (fclass(got[k])) continue; /* same NaN/Inf */
        double err = fabs(g - r), bound = c->tol.rtol * fabs((double)mag[k]) + c->tol.atol;
        num += err * err;
        den += r * r;
        double ratio = err == 0 ? 0 : bound > 0 ? err / bound : INFINITY;
        if (ratio > worst) worst = ratio;
        if (err > bound) {
            if (bad < 0) bad = k;
            nbad++;
        }
    }
    double nmse = den > 0 ? num / den : num;
    char desc[256];
    fmt_case(c, desc, sizeof desc);
    if (bad >= 0) ok = 0;
    if (!ok || verbose)
        printf("%-4s %s  err/bound %.3g nmse %.3g\n", ok ? "ok" : "FAIL", desc, worst, nmse);
    if (bad >= 0)
        printf("    %lld of %lld elements out of tolerance; first [%lld]: got %.9g, want %.9g "
               "(bound %.3g)\n",
               (long long)nbad, (long long)n, (long long)bad, got[bad], ref[bad],
               c->tol.rtol * fabs((double)mag[bad]) + c->tol.atol);
    for (int i = 0; i < c->nin; i++) free(in_f32[i]), free(in_abs[i]), free(in_typed[i]);
    free(init), free(init_abs), free(init_typed), free(ref), free(got), free(mag);
    return ok;
}

/* Cases a backend can run: the CPU backend computes in f32 only. */
static int runnable_on_cpu(const pcase *c) {
    if (c->sig == SIG_CONVERT) return 1;
    for (int i = 0; i < c->nin; i++)
        if (c->in_dt[i] != TENSOR_F32) return 0;
    return c->out_dt == TENSOR_F32;
}

static int run_all(const struct ops *dev, const char *filter, int cpu_only, int verbose, int *nrun) {
    int fails = 0;
    *nrun = 0;
    for (int i = 0; i < NCASES; i++) {
        if (filter && strcmp(filter, cases[i].op)) continue;
        if (cpu_only && !runnable_on_cpu(&cases[i])) continue;
        void (*fnp)(void);
        memcpy(&fnp, (const char *)dev + cases[i].fn, sizeof fnp);
        if (!fnp) { /* an op this backend does not provide yet: said, not run */
            printf("skip %s: the %s backend has no %s op\n", cases[i].op, dev->name, cases[i].op);
            continue;
        }
        (*nrun)++;
        if (!run_case(dev, &cases[i], i, verbose)) fails++;
    }
    return fails;
}

/* ---- self-test: broken backends the harness must catch ------------------- */

static void bad_add(tensor *y, const tensor *a, const tensor *b) { /* writes one element too many */
    ops_cpu()->add(y, a, b);
    ((float *)y->data)[tensor_numel(y)] = 0.0f;
}
static void bad_mul(tensor *y, const tensor *a, const tensor *b) { /* wrong by 1e-3 relative */
    ops_cpu()->mul(y, a, b);
    ((float *)y->data)[tensor_numel(y) / 2] *= 1.001f;
}
static void bad_matmul(tensor *c, const tensor *a, const tensor *b, int ta, int tb, float al, float be) {
    ops_cpu()->matmul(c, a, b, ta, tb, al, be == 0.0f ? 1.0f : be); /* beta = 0 read C: NaN in, NaN out */
}
static void bad_scale(tensor *y, const tensor *x, float s) { /* scribbles on its input */
    ops_cpu()->scale(y, x, s);
    ((float *)x->data)[0] += 1.0f;
}
static void bad_convert(tensor *d, const tensor *s) { /* writes before its output */
    ops_cpu()->convert(d, s);
    ((uint8_t *)d->data)[-1] ^= 1;
}

static int selftest(void) {
    int nrun, ok = 1;
    printf("selftest: the CPU backend against itself (f32 and convert cases)\n");
    if (run_all(ops_cpu(), NULL, 1, 0, &nrun)) ok = 0, printf("FAIL: cpu vs cpu\n");
    printf("  %d cases\n", nrun);
    struct {
        const char *op, *why;
        struct ops t;
    } broken[5];
    const char *ops_names[5] = {"add", "mul", "matmul", "scale", "convert"};
    const char *why[5] = {"canary after the output", "values off by 1e-3", "NaN from an ignored beta = 0",
                          "a written input", "canary before the output"};
    for (int i = 0; i < 5; i++) {
        broken[i].t = *ops_cpu();
        broken[i].op = ops_names[i];
        broken[i].why = why[i];
    }
    broken[0].t.add = bad_add;
    broken[1].t.mul = bad_mul;
    broken[2].t.matmul = bad_matmul;
    broken[3].t.scale = bad_scale;
    broken[4].t.convert = bad_convert;
    for (int i = 0; i < 5; i++) {
        printf("selftest: a broken %s (%s) must fail:\n", broken[i].op, broken[i].why);
        int fails = run_all(&broken[i].t, broken[i].op, 1, 0, &nrun);
        if (fails == 0) {
            printf("FAIL: the harness missed the broken %s\n", broken[i].op);
            ok = 0;
        } else {
            printf("  caught in %d of %d cases\n", fails, nrun);
        }
    }
    if (!parity_model_selftest(g_seed)) ok = 0;
    printf(ok ? "selftest passed\n" : "selftest FAILED\n");
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    const char *filter = NULL, *backend = "cuda";
    int self = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--filter") && i + 1 < argc) filter = argv[++i];
        else if (!strcmp(argv[i], "--backend") && i + 1 < argc) backend = argv[++i];
        else if (!strcmp(argv[i], "--selftest")) self = 1;
        else {
            fprintf(stderr, "usage: parity [--filter OP] [--backend cuda|cpu|emu] [--selftest]\n");
            return 2;
        }
    }
    const char *env = getenv("GRPO_PARITY_SEED");
    g_seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    printf("parity: %d cases, seed %llu (GRPO_PARITY_SEED to repeat)\n", NCASES, (unsigned long long)g_seed);
    if (!check_coverage() || !parity_model_coverage()) return 1;
    if (self) return selftest();
    const struct ops *dev = NULL;
#ifdef GRPO_HAVE_CUDA_EMU
    if (!strcmp(backend, "emu")) dev = ops_cuda_emu();
    else
#endif
        dev = ops_by_name(backend);
    if (!dev) {
        if (!strcmp(backend, "cuda")) {
            printf("skipped: no GPU (%s)\n", base_err_msg());
            return 0;
        }
        fprintf(stderr, "parity: %s\n", base_err_msg());
        return 2;
    }
    int cpu_only = dev->device == TENSOR_CPU;
    int nrun;
    int fails = run_all(dev, filter, cpu_only, 1, &nrun);
    int mrun;
    int mfails = parity_model_run(dev, filter, 1, g_seed, &mrun);
    fails += mfails;
    nrun += mrun;
    printf("parity on %s: %d of %d cases passed\n", dev->name, nrun - fails, nrun);
    return fails ? 1 : 0;
}
