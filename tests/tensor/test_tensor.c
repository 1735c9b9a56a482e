/* Tests of src/tensor: dtype conversions and the CPU ops, matmul against a
 * double-precision triple loop over transposes, batches, strides, beta. */
#include "common/test_common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/cpu/cpu.h"
#include "tensor/ops.h"

static void test_dtype_names(void **state) {
    (void)state;
    for (int t = 0; t < TENSOR_DTYPE_COUNT; t++)
        assert_int_equal(tensor_dtype_from_name(tensor_dtype_name((tensor_dtype)t)), t);
    assert_int_equal(tensor_dtype_from_name("F64"), -1);
    assert_int_equal(tensor_dtype_size(TENSOR_BF16), 2);
    assert_int_equal(tensor_dtype_size(TENSOR_I64), 8);
}

static void test_fp8_decode(void **state) {
    (void)state;
    /* spec §8 self-check (4) */
    assert_true(tensor_f8e4m3_to_f32(0x7e) == 448.0f);
    assert_true(tensor_f8e4m3_to_f32(0x08) == ldexpf(1, -6));
    assert_true(tensor_f8e4m3_to_f32(0x01) == ldexpf(1, -9));
    assert_true(isnan(tensor_f8e4m3_to_f32(0x7f)));
    assert_true(isnan(tensor_f8e4m3_to_f32(0xff)));
    assert_true(tensor_f8e4m3_to_f32(0xfe) == -448.0f);
    assert_true(tensor_f8e4m3_to_f32(0x38) == 1.0f);
    /* every finite code round-trips */
    for (int c = 0; c < 256; c++) {
        float f = tensor_f8e4m3_to_f32((uint8_t)c);
        if (isnan(f)) continue;
        uint8_t back = tensor_f32_to_f8e4m3(f);
        if (f == 0) assert_true((back & 0x7f) == 0);
        else assert_int_equal(back, c);
    }
    assert_int_equal(tensor_f32_to_f8e4m3(1000.0f), 0x7e); /* saturates */
}

/* The oracle: nearest of the 127 finite positive codes by distance, ties
 * to the even code, saturating at 448 (the definition RNE implements). */
static uint8_t f8_nearest(float f) {
    if (isnan(f)) return 0x7f;
    uint8_t sign = signbit(f) ? 0x80 : 0;
    float a = fabsf(f);
    if (a >= 448.0f) return sign | 0x7e;
    uint8_t best = 0;
    float bd = INFINITY;
    for (int c = 0; c <= 0x7e; c++) {
        float d = fabsf(tensor_f8e4m3_to_f32((uint8_t)c) - a);
        if (d < bd || (d == bd && (c & 1) == 0)) bd = d, best = (uint8_t)c;
    }
    return sign | best;
}

/* tensor_f32_to_f8e4m3 (bit arithmetic) against the oracle: every
 * midpoint between neighbouring codes and the floats next to it, and a
 * sweep over bit patterns of every exponent. */
static void test_fp8_encode(void **state) {
    (void)state;
    for (int c = 0; c < 0x7e; c++) {
        float lo = tensor_f8e4m3_to_f32((uint8_t)c), hi = tensor_f8e4m3_to_f32((uint8_t)(c + 1));
        float mid = lo + (hi - lo) / 2, xs[5] = {mid, nextafterf(mid, 0), nextafterf(mid, INFINITY), lo, hi};
        for (int i = 0; i < 5; i++) {
            assert_int_equal(tensor_f32_to_f8e4m3(xs[i]), f8_nearest(xs[i]));
            assert_int_equal(tensor_f32_to_f8e4m3(-xs[i]), f8_nearest(-xs[i]));
        }
    }
    for (uint64_t u = 0; u < 0x100000000ull; u += 7919) {
        uint32_t b = (uint32_t)u;
        float f;
        memcpy(&f, &b, 4);
        if (isnan(f)) continue;
        if (tensor_f32_to_f8e4m3(f) != f8_nearest(f)) fail_msg("f8 of %a: %#x, nearest %#x", (double)f, tensor_f32_to_f8e4m3(f), f8_nearest(f));
    }
    assert_int_equal(tensor_f32_to_f8e4m3(464.0f), 0x7e);
    assert_int_equal(tensor_f32_to_f8e4m3(-INFINITY), 0xfe);
    assert_int_equal(tensor_f32_to_f8e4m3(NAN), 0x7f);
}

/* Block quantisation (DeepGEMM's per_block_cast_to_fp8): scales amax/448,
 * every value within half an e4m3 step of the original. */
static void test_fp8_quantize(void **state) {
    (void)state;
    int64_t rows = 200, cols = 300;
    float *w = malloc(sizeof(float) * rows * cols), *back = malloc(sizeof(float) * rows * cols);
    uint8_t *q = malloc((size_t)(rows * cols));
    float sc[6];
    test_rand_f32(w, rows * cols, 11, 1.0f);
    w[5 * cols + 7] = 3.0f;               /* block (0, 0)'s amax */
    for (int64_t c = 256; c < cols; c++) /* block (1, 2): all zero (amax clamped to 1e-4) */
        for (int64_t r = 128; r < rows; r++) w[r * cols + c] = 0.0f;
    assert_int_equal(tensor_qblock_nscale(rows, cols), 6);
    tensor_quantize_fp8_block(q, sc, w, rows, cols);
    assert_true(sc[0] == 3.0f / 448.0f);
    assert_true(sc[5] == 1e-4f / 448.0f);
    assert_int_equal(q[5 * cols + 7], 0x7e); /* the amax maps to 448 */
    tensor_qblock qb = {q, sc, rows, cols, 1};
    tensor t = tensor_2d(q, TENSOR_F8_E4M3, rows, cols);
    t.qb = &qb;
    tensor_widen(back, &t, 0, rows * cols);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            float s = sc[r / 128 * 3 + c / 128], x = w[r * cols + c], y = back[r * cols + c];
            assert_true(y == tensor_f8e4m3_to_f32(q[r * cols + c]) * s);
            /* 3 mantissa bits: within 2^-4 relative (normals), 2^-10 s absolute (subnormals) */
            double tol = fmax(fabs(x) * 0.0625, ldexp(s, -10)) * 1.000001;
            if (fabs((double)x - y) > tol) fail_msg("(%lld, %lld): %g -> %g", (long long)r, (long long)c, x, y);
        }
    free(w), free(back), free(q);
}

/* An f32 copy of a stored weight region (tensor_widen over all of it). */
static float *widened(const tensor *t, int64_t n) {
    float *f = malloc(sizeof(float) * (size_t)n);
    tensor_widen(f, t, 0, n);
    return f;
}

/* matmul with a stored B (BF16, block-scaled F8) equals, bit for bit, the
 * matmul with the f32 copy of its values: the panel is widened while
 * packed. Views inside a region: a batch of experts (3-D), one expert,
 * rows and columns of a matrix whose sizes are not multiples of 128. */
static void test_matmul_stored(void **state) {
    (void)state;
    const struct ops *o = ops_cpu();
    int64_t E = 3, R = 130, K = 200, n = E * 2 * R * K; /* E x [gate; up] of [R, K] each */
    float *w = malloc(sizeof(float) * (size_t)n);
    test_rand_f32(w, n, 21, 0.5f);
    uint8_t *q = malloc((size_t)n);
    int64_t ns = tensor_qblock_nscale(R, K);
    float *sc = malloc(sizeof(float) * (size_t)(2 * E * ns));
    for (int64_t m = 0; m < 2 * E; m++) tensor_quantize_fp8_block(q + m * R * K, sc + m * ns, w + m * R * K, R, K);
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)n);
    tensor_from_f32(h, TENSOR_BF16, w, n);
    tensor_qblock qb = {q, sc, R, K, 2 * E};
    for (int kind = 0; kind < 2; kind++) {
        tensor st = tensor_3d(kind ? (void *)q : (void *)h, kind ? TENSOR_F8_E4M3 : TENSOR_BF16, E, 2 * R, K);
        if (kind) st.qb = &qb;
        float *wf = widened(&st, n);
        tensor wt = tensor_3d(wf, TENSOR_F32, E, 2 * R, K);
        for (int64_t m = 1; m <= 14; m += 13) {
            int64_t xn = m * K;
            float *x = malloc(sizeof(float) * (size_t)(E * 2 * R * K)), *c1 = malloc(sizeof(float) * (size_t)(E * m * 2 * R)),
                  *c2 = malloc(sizeof(float) * (size_t)(E * m * 2 * R));
            test_rand_f32(x, E * xn, 22 + m, 1.0f);
            /* batched x [E, m, K] @ w[e]^T */
            tensor tx = tensor_3d(x, TENSOR_F32, E, m, K), y1 = tensor_3d(c1, TENSOR_F32, E, m, 2 * R),
                   y2 = tensor_3d(c2, TENSOR_F32, E, m, 2 * R);
            o->matmul(&y1, &tx, &st, 0, 1, 1.0f, 0.0f);
            o->matmul(&y2, &tx, &wt, 0, 1, 1.0f, 0.0f);
            assert_memory_equal(c1, c2, sizeof(float) * (size_t)(E * m * 2 * R));
            /* expert 1's up half, columns [70, 200) as a strided view, both transposes */
            tensor sv = st, fv = wt;
            int64_t off = (1 * 2 * R + R) * K + 70;
            sv.ndim = fv.ndim = 2;
            sv.shape[0] = fv.shape[0] = R, sv.shape[1] = fv.shape[1] = K - 70;
            sv.stride[0] = fv.stride[0] = K, sv.stride[1] = fv.stride[1] = 1;
            sv.data = (char *)st.data + off * (int64_t)tensor_dtype_size(st.dtype);
            fv.data = wf + off;
            tensor x2 = tensor_2d(x, TENSOR_F32, m, K - 70), z1 = tensor_2d(c1, TENSOR_F32, m, R),
                   z2 = tensor_2d(c2, TENSOR_F32, m, R);
            o->matmul(&z1, &x2, &sv, 0, 1, 0.5f, 0.0f);
            o->matmul(&z2, &x2, &fv, 0, 1, 0.5f, 0.0f);
            assert_memory_equal(c1, c2, sizeof(float) * (size_t)(m * R));
            tensor x3 = tensor_2d(x, TENSOR_F32, m, R), u1 = tensor_2d(c1, TENSOR_F32, m, K - 70),
                   u2 = tensor_2d(c2, TENSOR_F32, m, K - 70);
            o->matmul(&u1, &x3, &sv, 0, 0, 1.0f, 0.0f); /* dx = dy W */
            o->matmul(&u2, &x3, &fv, 0, 0, 1.0f, 0.0f);
            assert_memory_equal(c1, c2, sizeof(float) * (size_t)(m * (K - 70)));
            /* the naive oracle widens the same way */
            cpu_matmul_naive(&u2, &x3, &fv, 0, 0, 1.0f, 0.0f);
            cpu_matmul_naive(&u1, &x3, &sv, 0, 0, 1.0f, 0.0f);
            assert_memory_equal(c1, c2, sizeof(float) * (size_t)(m * (K - 70)));
            free(x), free(c1), free(c2);
        }
        /* the grouped expert GEMM: rows 0-4 expert 0, none for 1, 5-8 expert 2 */
        int32_t offs[4] = {0, 5, 5, 9};
        float *x = malloc(sizeof(float) * 9 * K), *y1 = malloc(sizeof(float) * 9 * 2 * R),
              *y2 = malloc(sizeof(float) * 9 * 2 * R);
        test_rand_f32(x, 9 * K, 31, 1.0f);
        tensor tx = tensor_2d(x, TENSOR_F32, 9, K), to = tensor_1d(offs, TENSOR_I32, 4);
        tensor ty1 = tensor_2d(y1, TENSOR_F32, 9, 2 * R), ty2 = tensor_2d(y2, TENSOR_F32, 9, 2 * R);
        o->moe_matmul(&ty1, &tx, &st, &to, 1, 1.0f, 0.0f);
        o->moe_matmul(&ty2, &tx, &wt, &to, 1, 1.0f, 0.0f);
        assert_memory_equal(y1, y2, sizeof(float) * 9 * 2 * R);
        free(x), free(y1), free(y2), free(wf);
    }
    free(w), free(q), free(sc), free(h);
}

/* A stored BF16 embedding table and LM head: rows widened, the same
 * results as their f32 copies. */
static void test_stored_lookup(void **state) {
    (void)state;
    const struct ops *o = ops_cpu();
    int64_t V = 300, D = 40, N = 7;
    float *wf = malloc(sizeof(float) * V * D);
    uint16_t *wb = malloc(sizeof(uint16_t) * V * D);
    test_rand_f32(wf, V * D, 41, 1.0f);
    tensor_from_f32(wb, TENSOR_BF16, wf, V * D);
    tensor_to_f32(wf, wb, TENSOR_BF16, V * D);
    int32_t ids[7] = {0, 299, 5, 5, 100, 7, 1};
    float y1[7 * 40], y2[7 * 40];
    tensor tb = tensor_2d(wb, TENSOR_BF16, V, D), tf = tensor_2d(wf, TENSOR_F32, V, D);
    tensor ti = tensor_1d(ids, TENSOR_I32, N), t1 = tensor_2d(y1, TENSOR_F32, N, D), t2 = tensor_2d(y2, TENSOR_F32, N, D);
    o->embedding_fwd(&t1, &tb, &ti);
    o->embedding_fwd(&t2, &tf, &ti);
    assert_memory_equal(y1, y2, sizeof y1);
    float lp[2][7], en[2][7], ls[2][7], ws[4 * 64];
    tensor tws = tensor_2d(ws, TENSOR_F32, 4, 64); /* 2 row blocks, 5 vocabulary chunks */
    for (int k = 0; k < 2; k++) {
        tensor l = tensor_1d(lp[k], TENSOR_F32, N), e = tensor_1d(en[k], TENSOR_F32, N), s = tensor_1d(ls[k], TENSOR_F32, N);
        o->lmhead_fwd(&l, &e, &s, &t2, k ? &tf : &tb, &ti, 0.7f, &tws);
    }
    assert_memory_equal(lp[0], lp[1], sizeof lp[0]);
    assert_memory_equal(en[0], en[1], sizeof en[0]);
    free(wf), free(wb);
}

static void test_bf16_f16(void **state) {
    (void)state;
    assert_true(tensor_bf16_to_f32(tensor_f32_to_bf16(1.0f)) == 1.0f);
    /* round to nearest even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 */
    assert_true(tensor_bf16_to_f32(tensor_f32_to_bf16(1.0f + ldexpf(1, -8))) == 1.0f);
    assert_true(tensor_bf16_to_f32(tensor_f32_to_bf16(1.0f + 3 * ldexpf(1, -8))) ==
                1.0f + ldexpf(1, -6));
    assert_true(isnan(tensor_bf16_to_f32(tensor_f32_to_bf16(NAN))));
    float vals[] = {0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.9604645e-08f, 0.1f, 1e5f};
    float want[] = {0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.9604645e-08f, 0.0999755859375f,
                    INFINITY};
    for (int i = 0; i < 8; i++) assert_true(tensor_f16_to_f32(tensor_f32_to_f16(vals[i])) == want[i]);
    for (int h = 0; h < 0x7c00; h++) /* every finite positive half round-trips */
        assert_int_equal(tensor_f32_to_f16(tensor_f16_to_f32((uint16_t)h)), h);
}

static void check_matmul(int64_t bt, int64_t m, int64_t n, int64_t k, int ta, int tb, float alpha,
                         float beta, int bcast_b, int64_t pad) {
    /* A: [bt, m, k] or [bt, k, m]; B likewise (batch 1 when bcast_b); rows
     * padded by `pad` extra columns to test row strides */
    int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    int64_t bb = bcast_b ? 1 : bt;
    float *A = malloc(sizeof(float) * bt * ar * (ac + pad));
    float *B = malloc(sizeof(float) * bb * br * (bc + pad));
    float *C = malloc(sizeof(float) * bt * m * (n + pad));
    float *R = malloc(sizeof(float) * bt * m * (n + pad));
    test_rand_f32(A, bt * ar * (ac + pad), 1, 1.0f);
    test_rand_f32(B, bb * br * (bc + pad), 2, 1.0f);
    test_rand_f32(C, bt * m * (n + pad), 3, 1.0f);
    memcpy(R, C, sizeof(float) * bt * m * (n + pad));
    tensor a = tensor_3d(A, TENSOR_F32, bt, ar, ac), b = tensor_3d(B, TENSOR_F32, bb, br, bc),
           c = tensor_3d(C, TENSOR_F32, bt, m, n), r = tensor_3d(R, TENSOR_F32, bt, m, n);
    a.stride[1] = ac + pad, a.stride[0] = ar * (ac + pad);
    b.stride[1] = bc + pad, b.stride[0] = br * (bc + pad);
    c.stride[1] = r.stride[1] = n + pad, c.stride[0] = r.stride[0] = m * (n + pad);
    if (beta == 0.0f) /* NaN in C must not leak when overwriting */
        C[0] = NAN;
    ops_cpu()->matmul(&c, &a, &b, ta, tb, alpha, beta);
    cpu_matmul_naive(&r, &a, &b, ta, tb, alpha, beta);
    double worst = 0;
    for (int64_t x = 0; x < bt; x++)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n + pad; j++) {
                int64_t o = x * m * (n + pad) + i * (n + pad) + j;
                double d = fabs((double)C[o] - R[o]);
                if (j >= n) assert_true(C[o] == R[o]); /* padding untouched */
                if (d > worst) worst = d;
            }
    double tol = 1e-5 * sqrt((double)k) * 4;
    if (worst > tol)
        fail_msg("matmul bt=%lld m=%lld n=%lld k=%lld ta=%d tb=%d: max diff %g > %g", (long long)bt,
                 (long long)m, (long long)n, (long long)k, ta, tb, worst, tol);
    free(A), free(B), free(C), free(R);
}

static void test_matmul_shapes(void **state) {
    (void)state;
    int64_t sizes[][3] = {{1, 1, 1},   {1, 37, 64},   {2, 5, 3},    {7, 13, 300}, {37, 320, 64},
                          {64, 64, 64}, {100, 33, 513}, {6, 32, 256}, {13, 95, 17}, {1, 1000, 70}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                check_matmul(1, sizes[s][0], sizes[s][1], sizes[s][2], ta, tb, 1.0f, 0.0f, 0, 0);
                check_matmul(1, sizes[s][0], sizes[s][1], sizes[s][2], ta, tb, 0.5f, 1.0f, 0, 3);
            }
    check_matmul(3, 9, 17, 33, 0, 1, 1.0f, 0.0f, 0, 0);
    check_matmul(3, 9, 17, 33, 1, 0, 2.0f, 1.0f, 1, 5); /* B broadcast over the batch */
    check_matmul(2, 300, 70, 600, 0, 1, 1.0f, 0.25f, 0, 1);
}

static void test_elementwise(void **state) {
    (void)state;
    const struct ops *o = ops_cpu();
    float a[5] = {1, 2, 3, 4, 5}, b[5] = {5, 4, 3, 2, 1}, y[5];
    tensor ta = tensor_1d(a, TENSOR_F32, 5), tb = tensor_1d(b, TENSOR_F32, 5), ty = tensor_1d(y, TENSOR_F32, 5);
    o->add(&ty, &ta, &tb);
    for (int i = 0; i < 5; i++) assert_true(y[i] == 6);
    o->mul(&ty, &ta, &tb);
    assert_true(y[0] == 5 && y[2] == 9);
    o->scale(&ty, &ta, 2);
    assert_true(y[4] == 10);
    o->axpy(&ty, &tb, -1);
    assert_true(y[4] == 9 && y[0] == -3);
    uint16_t h[5];
    tensor th = tensor_1d(h, TENSOR_BF16, 5);
    o->convert(&th, &ta);
    o->convert(&ty, &th);
    for (int i = 0; i < 5; i++) assert_true(y[i] == a[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_names),  cmocka_unit_test(test_fp8_decode),
        cmocka_unit_test(test_bf16_f16),     cmocka_unit_test(test_matmul_shapes),
        cmocka_unit_test(test_elementwise),  cmocka_unit_test(test_fp8_encode),
        cmocka_unit_test(test_fp8_quantize), cmocka_unit_test(test_matmul_stored),
        cmocka_unit_test(test_stored_lookup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
