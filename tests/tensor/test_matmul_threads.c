/* Two promises of src/tensor/cpu/matmul.c, checked bitwise:
 *   - the result does not depend on the number of threads (work is split
 *     by output tiles and every tile sums over k in a fixed order): large
 *     and small M, both transposes, batched, beta = 1;
 *   - a row's result does not depend on the other rows of the call (batch
 *     invariance, which rollout relies on): the rows of an M = 300 product
 *     (several L2 blocks of A) and of M = 37 (one block) equal the same
 *     rows computed alone (M = 1) and in small groups. */
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

static void test_rows_independent(void **state) {
    (void)state;
    const int64_t n = 333, k = 600; /* k > KC: several k blocks; n: a partial panel */
    for (int tb = 0; tb <= 1; tb++)
        for (int64_t m = 37; m <= 300; m += 263) {
            float *a = malloc((size_t)(m * k) * 4), *b = malloc((size_t)(n * k) * 4);
            float *all = malloc((size_t)(m * n) * 4), *part = malloc((size_t)(6 * n) * 4);
            test_rand_f32(a, m * k, 21, 1.0f);
            test_rand_f32(b, n * k, 22, 1.0f);
            tensor A = tensor_2d(a, TENSOR_F32, m, k), C = tensor_2d(all, TENSOR_F32, m, n);
            tensor B = tb ? tensor_2d(b, TENSOR_F32, n, k) : tensor_2d(b, TENSOR_F32, k, n);
            ops_cpu()->matmul(&C, &A, &B, 0, tb, 1.0f, 0.0f);
            for (int64_t r0 = 0; r0 < m;) {
                int64_t rows = 1 + r0 % 6; /* groups of 1..6 rows */
                if (r0 + rows > m) rows = m - r0;
                tensor Ar = tensor_2d(a + r0 * k, TENSOR_F32, rows, k), Cr = tensor_2d(part, TENSOR_F32, rows, n);
                ops_cpu()->matmul(&Cr, &Ar, &B, 0, tb, 1.0f, 0.0f);
                if (memcmp(part, all + r0 * n, (size_t)(rows * n) * 4))
                    fail_msg("tb %d, M %lld: rows [%lld, %lld) alone differ from the full product", tb,
                             (long long)m, (long long)r0, (long long)(r0 + rows));
                r0 += rows;
            }
            free(a), free(b), free(all), free(part);
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_threads),
                                       cmocka_unit_test(test_rows_independent)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
