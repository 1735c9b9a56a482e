/* The CPU matmul's result must not depend on the number of threads (a
 * promise of src/tensor/cpu/matmul.c: work is split by output tiles and
 * every tile sums over k in a fixed order). Bitwise comparison across
 * thread counts, on the GEMM path (large M), the GEMV path (M <= 2) and
 * both transposes, batched, with beta = 1. */
#include "common/test_common.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/ops.h"

static void run(int threads, int64_t m, int64_t n, int64_t k, int ta, int tb, int batch, float beta,
                float *out) {
    omp_set_num_threads(threads);
    int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    float *a = malloc((size_t)(batch * ar * ac) * 4), *b = malloc((size_t)(batch * br * bc) * 4);
    test_rand_f32(a, batch * ar * ac, 11, 1.0f);
    test_rand_f32(b, batch * br * bc, 12, 1.0f);
    test_rand_f32(out, batch * m * n, 13, 1.0f);
    tensor A = tensor_3d(a, TENSOR_F32, batch, ar, ac), B = tensor_3d(b, TENSOR_F32, batch, br, bc),
           C = tensor_3d(out, TENSOR_F32, batch, m, n);
    ops_cpu()->matmul(&C, &A, &B, ta, tb, 0.75f, beta);
    free(a);
    free(b);
}

static void test_threads(void **state) {
    (void)state;
    static const struct {
        int64_t m, n, k;
        int ta, tb, batch;
        float beta;
    } c[] = {
        {67, 301, 530, 0, 1, 1, 0.0f}, {67, 301, 530, 1, 0, 2, 1.0f}, {130, 70, 300, 1, 1, 1, 0.0f},
        {1, 700, 600, 0, 1, 1, 0.0f},  {2, 700, 600, 0, 0, 3, 1.0f},  {1, 300, 257, 1, 1, 1, 0.0f},
    };
    int save = omp_get_max_threads();
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        size_t n = (size_t)(c[i].batch * c[i].m * c[i].n);
        float *ref = malloc(n * 4), *got = malloc(n * 4);
        run(1, c[i].m, c[i].n, c[i].k, c[i].ta, c[i].tb, c[i].batch, c[i].beta, ref);
        for (int t = 2; t <= 5; t++) {
            run(t, c[i].m, c[i].n, c[i].k, c[i].ta, c[i].tb, c[i].batch, c[i].beta, got);
            if (memcmp(ref, got, n * 4)) fail_msg("case %zu: %d threads differ from 1 thread", i, t);
        }
        free(ref);
        free(got);
    }
    omp_set_num_threads(save);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_threads)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
