/*
 * Frozen models on the CUDA backend: stored bf16 / fp8 weights (docs/model.md,
 * "Frozen models"; kernels/cuda_common.cuh cuda_load_w).
 *
 * The device computes with an fp8 weight as bf16(e4m3(q) * scale): the
 * dequantised value rounded once to bf16 (DeepSeek-V3's weight_dequant for
 * bf16 GEMMs). Checked here:
 *   - ops: matmul with an F8_E4M3 B (2-D, batched 3-D, a row range, a
 *     column slice crossing 128-blocks, partial edge blocks) and with a
 *     stored BF16 B under an f32 A equal the CPU GEMM of the same values in
 *     f32 (emulator: bit for bit; the GPU: within 1e-5 relative);
 *     moe_matmul with an F8 w (trans_w and not, f32 and bf16 x, the grouped
 *     kernel and the per-expert cuBLAS path) gives the
 *     bits of the same kernel on an f32 w holding bf16(dequantised) values,
 *     and the CPU's within 1e-5; embedding_fwd of a bf16 table into f32 rows
 *     is the CPU's bit for bit;
 *   - the model: tiny-v3-a-fp8 (e4m3 with 128x128 block scales, quantised by
 *     PyTorch) loaded frozen in fp8 on the backend gives the bits of the same
 *     checkpoint loaded frozen in bf16 (dequantised to f32 on load, rounded
 *     to bf16) on the backend: full logits, the training forward's logp,
 *     prefill + decode logits through the cache (emulator: bit for bit; the
 *     GPU: within 1e-5, cuBLAS may pick another kernel for a dense copy);
 *     and agrees with the CPU's fp8 model (f32 arithmetic) within the bf16
 *     mode's budget; it holds no f32 master weights.
 *
 * Usage: test_cuda_frozen [cuda|emu]. "cuda" prints "skipped: no GPU (...)"
 * and passes when no GPU is usable.
 */
#include "common/test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "cuda/test_backend.h"

static const struct ops *g_ops;
static int g_emu;

/* emulator: bit for bit; GPU: within tol relative L2 */
static void same(const char *what, const float *got, const float *want, int64_t n, double tol) {
    double rel = test_rel_l2(got, want, n), err = test_max_abs_diff(got, want, n);
    printf("%s %s: max |diff| %.3g, relative L2 %.3g\n", g_ops->name, what, err, rel);
    if (g_emu) {
        if (memcmp(got, want, (size_t)n * sizeof(float))) fail_msg("%s: not bit-identical (max |diff| %g)", what, err);
    } else if (!(rel <= tol)) {
        fail_msg("%s: relative L2 %g over %g", what, rel, tol);
    }
}

static float frand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(*s >> 40) / (double)(1ull << 24) - 0.5);
}

static void *dev_put(const void *h, size_t bytes) {
    void *d = g_ops->alloc(bytes);
    g_ops->upload(d, h, bytes);
    return d;
}

static float bf16r(float x) { return tensor_bf16_to_f32(tensor_f32_to_bf16(x)); }

/* ---- a block-scaled fp8 region: 2 matrices of 200 x 300 ------------------- */

enum { QR = 200, QC = 300, QN = 2 };

typedef struct {
    uint8_t *q;     /* host codes */
    float *scale;   /* host scales */
    float *deq;     /* host: bf16(e4m3(q) * scale), the device's values */
    void *dq, *ds;  /* device codes and scales */
    tensor_qblock qb;
} region;

static void region_make(region *r) {
    int64_t n = (int64_t)QN * QR * QC, ns = tensor_qblock_nscale(QR, QC);
    float *w = malloc((size_t)n * sizeof(float));
    uint64_t s = 7;
    for (int64_t i = 0; i < n; i++) w[i] = frand(&s) * (float)ldexp(1.0, (int)(i / 997 % 9) - 4);
    r->q = malloc((size_t)n);
    r->scale = malloc((size_t)(QN * ns) * sizeof(float));
    for (int k = 0; k < QN; k++)
        tensor_quantize_fp8_block(r->q + (int64_t)k * QR * QC, r->scale + k * ns, w + (int64_t)k * QR * QC, QR, QC);
    r->deq = w; /* reused */
    r->qb.base = NULL, r->qb.scale = NULL, r->qb.rows = QR, r->qb.cols = QC, r->qb.count = QN;
    for (int64_t i = 0; i < n; i++)
        r->deq[i] = bf16r(tensor_f8e4m3_to_f32(r->q[i]) * r->scale[tensor_qblock_index(&r->qb, i)]);
    r->dq = dev_put(r->q, (size_t)n);
    r->ds = dev_put(r->scale, (size_t)(QN * ns) * sizeof(float));
    r->qb.base = r->dq, r->qb.scale = r->ds;
}

static void region_free(region *r) {
    g_ops->free(r->dq), g_ops->free(r->ds);
    free(r->q), free(r->scale), free(r->deq);
}

/* A view of the region: ndim 2 or 3, from element off, shape, row stride s1
 * (and batch stride s0). */
static tensor qview(const region *r, int64_t off, int ndim, const int64_t *shape, int64_t s0, int64_t s1) {
    tensor t = tensor_make((char *)r->dq + off, TENSOR_F8_E4M3, g_ops->device, ndim, shape);
    t.stride[ndim - 1] = 1;
    t.stride[ndim - 2] = s1;
    if (ndim == 3) t.stride[0] = s0;
    t.qb = &r->qb;
    return t;
}

/* The same view's values as a dense host f32 tensor (its own buffer). */
static tensor dense_host(const region *r, int64_t off, int ndim, const int64_t *shape, int64_t s0, int64_t s1) {
    int64_t nb = ndim == 3 ? shape[0] : 1, rows = shape[ndim - 2], cols = shape[ndim - 1];
    float *h = malloc((size_t)(nb * rows * cols) * sizeof(float));
    for (int64_t b = 0; b < nb; b++)
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j++) h[(b * rows + i) * cols + j] = r->deq[off + b * s0 + i * s1 + j];
    return tensor_make(h, TENSOR_F32, TENSOR_CPU, ndim, shape);
}

/* c = a @ op(b) on the backend, a f32 or bf16 [.., m, k] random; the CPU
 * reference multiplies a's values (widened) by bref. */
static void check_matmul(const char *what, const tensor *b, const tensor *bref, tensor_dtype adt, int trans_b) {
    int nd = b->ndim;
    int64_t nb = nd == 3 ? b->shape[0] : 1, M = 5;
    int64_t K = trans_b ? b->shape[nd - 1] : b->shape[nd - 2], N = trans_b ? b->shape[nd - 2] : b->shape[nd - 1];
    int64_t as[3] = {nb, M, K}, cs[3] = {nb, M, N};
    int64_t na = nb * M * K, nc = nb * M * N;
    float *ah = malloc((size_t)na * sizeof(float));
    uint16_t *ab = malloc((size_t)na * sizeof(uint16_t));
    uint64_t s = 11;
    for (int64_t i = 0; i < na; i++) {
        ah[i] = frand(&s);
        ab[i] = tensor_f32_to_bf16(ah[i]);
        if (adt == TENSOR_BF16) ah[i] = tensor_bf16_to_f32(ab[i]);
    }
    void *ad = adt == TENSOR_BF16 ? dev_put(ab, (size_t)na * 2) : dev_put(ah, (size_t)na * 4);
    void *cd = g_ops->alloc((size_t)nc * 4);
    tensor A = tensor_make(ad, adt, g_ops->device, nd, nd == 3 ? as : as + 1);
    tensor C = tensor_make(cd, TENSOR_F32, g_ops->device, nd, nd == 3 ? cs : cs + 1);
    g_ops->matmul(&C, &A, b, 0, trans_b, 1.0f, 0.0f);
    float *got = malloc((size_t)nc * 4), *want = calloc((size_t)nc, 4);
    g_ops->download(got, cd, (size_t)nc * 4);
    tensor Ah = tensor_make(ah, TENSOR_F32, TENSOR_CPU, nd, nd == 3 ? as : as + 1);
    tensor Ch = tensor_make(want, TENSOR_F32, TENSOR_CPU, nd, nd == 3 ? cs : cs + 1);
    ops_cpu()->matmul(&Ch, &Ah, bref, 0, trans_b, 1.0f, 0.0f);
    same(what, got, want, nc, 1e-5);
    g_ops->free(ad), g_ops->free(cd);
    free(ah), free(ab), free(got), free(want);
}

static void test_matmul_fp8(void **st) {
    (void)st;
    region r;
    region_make(&r);
    struct {
        const char *what;
        int64_t off;
        int nd;
        int64_t shape[3], s0, s1;
        int trans_b;
    } v[] = {
        {"matmul fp8 B^T (second matrix)", QR * QC, 2, {QR, QC}, 0, QC, 1},
        {"matmul fp8 B rows 50..169", 50 * QC, 2, {120, QC}, 0, QC, 0},
        {"matmul fp8 B batched [2, 200, 300]", 0, 3, {QN, QR, QC}, QR * QC, QC, 0},
        {"matmul fp8 B column slice 60..209 per matrix", 60, 3, {QN, 100, 150}, QR * QC, QC, 0},
        {"matmul fp8 B^T column slice 130..299", 130, 3, {QN, QR, 170}, QR * QC, QC, 1},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        tensor b = qview(&r, v[i].off, v[i].nd, v[i].nd == 3 ? v[i].shape : v[i].shape, v[i].s0, v[i].s1);
        tensor bh = dense_host(&r, v[i].off, v[i].nd, v[i].shape, v[i].s0, v[i].s1);
        for (int a = 0; a < 2; a++) {
            char what[128];
            snprintf(what, sizeof what, "%s, %s A", v[i].what, a ? "bf16" : "f32");
            check_matmul(what, &b, &bh, a ? TENSOR_BF16 : TENSOR_F32, v[i].trans_b);
        }
        free(bh.data);
    }
    /* a stored bf16 B under an f32 A (the absorbed decode's kv_b) */
    int64_t n = (int64_t)QR * QC, sh[2] = {QR, QC};
    uint16_t *hb = malloc((size_t)n * 2);
    for (int64_t i = 0; i < n; i++) hb[i] = tensor_f32_to_bf16(r.deq[i]);
    void *db = dev_put(hb, (size_t)n * 2);
    tensor b = tensor_make(db, TENSOR_BF16, g_ops->device, 2, sh), bh = tensor_make(r.deq, TENSOR_F32, TENSOR_CPU, 2, sh);
    check_matmul("matmul stored bf16 B^T, f32 A", &b, &bh, TENSOR_F32, 1);
    g_ops->free(db);
    free(hb);
    region_free(&r);
}

/* moe_matmul: the fp8 region's two matrices as two experts. */
static void test_moe_fp8(void **st) {
    (void)st;
    region r;
    region_make(&r);
    int64_t R = 13, n = (int64_t)QN * QR * QC;
    int32_t offs[3] = {0, 6, 13};
    void *od = dev_put(offs, sizeof offs);
    int64_t os[1] = {3};
    tensor off = tensor_make(od, TENSOR_I32, g_ops->device, 1, os);
    tensor offh = tensor_make(offs, TENSOR_I32, TENSOR_CPU, 1, os);
    void *wd = dev_put(r.deq, (size_t)n * 4); /* f32 w of the device's values */
    for (int path = 0; path < 4; path++) {
        int tw = path & 1, xb = path >> 1 & 1;
        for (int bl = 0; bl < 2; bl++) {
            /* both paths: the grouped kernel and cuBLAS per expert */
            setenv("GRPO_CUDA_MOE_PATH", bl ? "blas" : "kernel", 1);
            int64_t K = tw ? QC : QR, N = tw ? QR : QC, ws[3] = {QN, QR, QC}, xs[2] = {R, K}, ys[2] = {R, N};
            float *xh = malloc((size_t)(R * K) * 4);
            uint16_t *xbh = malloc((size_t)(R * K) * 2);
            uint64_t s = 3;
            for (int64_t i = 0; i < R * K; i++) {
                xbh[i] = tensor_f32_to_bf16(frand(&s));
                xh[i] = tensor_bf16_to_f32(xbh[i]);
            }
            void *xd = xb ? dev_put(xbh, (size_t)(R * K) * 2) : dev_put(xh, (size_t)(R * K) * 4);
            void *y1 = g_ops->alloc((size_t)(R * N) * 4), *y2 = g_ops->alloc((size_t)(R * N) * 4);
            tensor X = tensor_make(xd, xb ? TENSOR_BF16 : TENSOR_F32, g_ops->device, 2, xs);
            tensor Y1 = tensor_make(y1, TENSOR_F32, g_ops->device, 2, ys), Y2 = Y1;
            Y2.data = y2;
            tensor W8 = qview(&r, 0, 3, ws, QR * QC, QC);
            tensor WF = tensor_make(wd, TENSOR_F32, g_ops->device, 3, ws);
            g_ops->moe_matmul(&Y1, &X, &W8, &off, tw, 1.0f, 0.0f);
            if (xb) {
                /* same kernel, w f32: x must share its dtype, so compare with f32 x */
                void *xf = dev_put(xh, (size_t)(R * K) * 4);
                tensor XF = tensor_make(xf, TENSOR_F32, g_ops->device, 2, xs);
                g_ops->moe_matmul(&Y2, &XF, &WF, &off, tw, 1.0f, 0.0f);
                g_ops->free(xf);
            } else {
                g_ops->moe_matmul(&Y2, &X, &WF, &off, tw, 1.0f, 0.0f);
            }
            float *a = malloc((size_t)(R * N) * 4), *b = malloc((size_t)(R * N) * 4), *c = calloc((size_t)(R * N), 4);
            g_ops->download(a, y1, (size_t)(R * N) * 4);
            g_ops->download(b, y2, (size_t)(R * N) * 4);
            tensor Xh = tensor_make(xh, TENSOR_F32, TENSOR_CPU, 2, xs), Wh = tensor_make(r.deq, TENSOR_F32, TENSOR_CPU, 3, ws);
            tensor Yh = tensor_make(c, TENSOR_F32, TENSOR_CPU, 2, ys);
            ops_cpu()->moe_matmul(&Yh, &Xh, &Wh, &offh, tw, 1.0f, 0.0f);
            char what[96];
            snprintf(what, sizeof what, "moe_matmul (%s) fp8 w%s, %s x: vs f32 w of its values", bl ? "blas" : "kernel",
                     tw ? "^T" : "", xb ? "bf16" : "f32");
            /* the kernel's arithmetic is the same for both: equal bits on any device */
            if (memcmp(a, b, (size_t)(R * N) * 4)) fail_msg("%s: max |diff| %g", what, test_max_abs_diff(a, b, R * N));
            printf("%s %s: bit-identical\n", g_ops->name, what);
            snprintf(what, sizeof what, "moe_matmul (%s) fp8 w%s, %s x: vs the cpu", bl ? "blas" : "kernel", tw ? "^T" : "",
                     xb ? "bf16" : "f32");
            double rel = test_rel_l2(a, c, R * N);
            printf("%s %s: relative L2 %.3g\n", g_ops->name, what, rel);
            assert_true(rel < 1e-5);
            g_ops->free(xd), g_ops->free(y1), g_ops->free(y2);
            free(xh), free(xbh), free(a), free(b), free(c);
        }
    }
    unsetenv("GRPO_CUDA_MOE_PATH");
    g_ops->free(wd), g_ops->free(od);
    region_free(&r);
}

/* embedding_fwd: a stored bf16 table into f32 rows. */
static void test_embedding_bf16(void **st) {
    (void)st;
    enum { V = 37, D = 50, N = 9 };
    uint16_t tb[V * D];
    float tf[V * D], got[N * D], want[N * D];
    uint64_t s = 5;
    for (int i = 0; i < V * D; i++) tb[i] = tensor_f32_to_bf16(frand(&s)), tf[i] = tensor_bf16_to_f32(tb[i]);
    int32_t ids[N] = {0, 36, 5, 5, 17, 2, 30, 1, 12};
    int64_t ts[2] = {V, D}, ys[2] = {N, D}, is[1] = {N};
    void *td = dev_put(tb, sizeof tb), *idd = dev_put(ids, sizeof ids), *yd = g_ops->alloc(sizeof got);
    tensor T = tensor_make(td, TENSOR_BF16, g_ops->device, 2, ts), I = tensor_make(idd, TENSOR_I32, g_ops->device, 1, is);
    tensor Y = tensor_make(yd, TENSOR_F32, g_ops->device, 2, ys);
    g_ops->embedding_fwd(&Y, &T, &I);
    g_ops->download(got, yd, sizeof got);
    tensor Th = tensor_make(tf, TENSOR_F32, TENSOR_CPU, 2, ts), Ih = tensor_make(ids, TENSOR_I32, TENSOR_CPU, 1, is);
    tensor Yh = tensor_make(want, TENSOR_F32, TENSOR_CPU, 2, ys);
    ops_cpu()->embedding_fwd(&Yh, &Th, &Ih);
    assert_memory_equal(got, want, sizeof got);
    printf("%s embedding_fwd bf16 table -> f32 rows: the cpu's bits\n", g_ops->name);
    g_ops->free(td), g_ops->free(idd), g_ops->free(yd);
}

/* ---- the model ------------------------------------------------------------------ */


static model *load(const char *dir, const struct ops *o, model_precision p) {
    model_load_opts lo = {.precision = p, .frozen = 1};
    model *m = NULL;
    if (model_load(dir, o, &lo, &m)) fail_msg("%s: %s", dir, base_err_msg());
    return m;
}

static void test_model_fp8(void **st) {
    (void)st;
    char *dir = test_src_path("tests/model/data/tiny-v3-a-fp8");
    model *q = load(dir, g_ops, MODEL_FP8), *b = load(dir, g_ops, MODEL_BF16), *c = load(dir, ops_cpu(), MODEL_FP8);
    assert_null(model_params(q));
    model_mem mq;
    model_memory(q, &mq);
    assert_true(mq.master == 0 && mq.scales > 0 && mq.compute < (size_t)(2 * model_numel(q)));
    printf("%s tiny-v3-a-fp8 frozen fp8: %zu bytes of weights + %zu of scales, no master (%lld parameters)\n",
           g_ops->name, mq.compute, mq.scales, (long long)model_numel(q));
    test_model_outputs x, y, z;
    test_model_outputs_run(q, &x);
    test_model_outputs_run(b, &y);
    test_model_outputs_run(c, &z);
    same("tiny-v3-a-fp8 fp8 vs bf16 of the dequantised checkpoint: logits", x.full, y.full, x.nfull, 1e-5);
    same("tiny-v3-a-fp8 fp8 vs bf16 of the dequantised checkpoint: training logp", x.logp, y.logp, x.nlogp, 1e-5);
    same("tiny-v3-a-fp8 fp8 vs bf16 of the dequantised checkpoint: decode logits", x.dec, y.dec, x.ndec, 1e-5);
    /* the device's bf16 activations and weight rounding against the CPU's f32
     * arithmetic on the same codes: the bf16 mode's logits budget
     * (test_cuda_fixture.c BF16_LOGITS_REL, 2^-4) */
    double r1 = test_rel_l2(x.full, z.full, x.nfull), r2 = test_rel_l2(x.dec, z.dec, x.ndec);
    printf("%s tiny-v3-a-fp8 fp8 vs the cpu's fp8 model: logits relative L2 %.3g, decode logits %.3g\n", g_ops->name,
           r1, r2);
    assert_true(r1 < 1.0 / 16 && r2 < 1.0 / 16);
    test_model_outputs_free(&x), test_model_outputs_free(&y), test_model_outputs_free(&z);
    model_free(q), model_free(b), model_free(c);
    free(dir);
}

int main(int argc, char **argv) {
    const char *backend = argc > 1 ? argv[1] : "cuda";
    int have = test_backend(backend, 0, &g_ops);
    if (have < 0) {
        fprintf(stderr, "usage: test_cuda_frozen [cuda|emu]\n");
        return 2;
    }
    if (!have) return 0;
    g_emu = !strcmp(backend, "emu");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_fp8),
        cmocka_unit_test(test_moe_fp8),
        cmocka_unit_test(test_embedding_bf16),
        cmocka_unit_test(test_model_fp8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
