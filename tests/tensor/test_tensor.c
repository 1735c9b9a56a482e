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
        cmocka_unit_test(test_elementwise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
