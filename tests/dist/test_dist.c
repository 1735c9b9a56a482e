/* src/dist on the host backend: run as one process (world size 1, no MPI)
 * and under `mpirun -np N` (N = 1, 2, 4: tests/dist/meson.build). Every
 * rank makes the same data for every rank from (rank, index), so each
 * checks its results against values it computes itself:
 *   - rank, world size and local rank from the runtime (Open MPI's
 *     environment says what they must be);
 *   - all_reduce: float sums are the rank-ordered double sum, bit for bit
 *     (one segment and several), integers exact, MAX / MIN;
 *   - reduce_scatter, all_gather, all_gather with counts, broadcast,
 *     all_to_all with counts, barrier;
 *   - the non-blocking reduce-scatter with counts (ZeRO 2): two requests
 *     in flight at once, uneven and empty blocks, written and added (+=),
 *     each element the rank-ordered double sum, bit for bit;
 *   - statistics count calls and bytes;
 *   - split communicators (expert parallelism's groups);
 *   - bad arguments and a failing MPI call are errors naming the call, the
 *     rank and the communicator. */
#include "common/test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "dist/dist_internal.h"
#include "tensor/ops.h"
#ifdef GRPO_TEST_MPI
#include <mpi.h>
#endif

static int R, W; /* this rank, world size */

/* The value rank r contributes at index i: floats of varied magnitude and
 * sign, so that the order of a sum shows in its bits. */
static float val_f32(int r, size_t i) {
    uint32_t h = (uint32_t)(i * 2654435761u) ^ (uint32_t)(r * 40503u + 7u);
    h ^= h >> 13, h *= 0x5bd1e995u, h ^= h >> 15;
    float m = (float)(h & 0xffffff) / (float)0x1000000 - 0.5f;
    return ldexpf(m, (int)(h >> 27) - 12);
}

static void test_runtime(void **state) {
    (void)state;
    const char *env = getenv("OMPI_COMM_WORLD_SIZE");
    if (env) {
        assert_int_equal(W, atoi(env));
        assert_int_equal(R, atoi(getenv("OMPI_COMM_WORLD_RANK")));
        assert_int_equal(dist_local_rank(), atoi(getenv("OMPI_COMM_WORLD_LOCAL_RANK")));
        assert_int_equal(dist_local_size(), atoi(getenv("OMPI_COMM_WORLD_LOCAL_SIZE")));
        assert_true(dist_launched());
        assert_string_equal(dist_runtime_name(), "mpi");
        assert_string_equal(dist_comm_backend(dist_world()), "mpi");
    } else {
        assert_int_equal(W, 1);
        assert_int_equal(R, 0);
        assert_false(dist_launched());
        assert_string_equal(dist_comm_backend(dist_world()), "self");
    }
    assert_int_equal(dist_comm_rank(dist_world()), R);
    assert_int_equal(dist_comm_size(dist_world()), W);
    assert_string_equal(dist_comm_name(dist_world()), "world");
    char want[16];
    snprintf(want, sizeof want, "%d", dist_local_rank());
    assert_string_equal(getenv("GRPO_LOCAL_RANK"), want);
    /* the CPU backend's buffers go over the world communicator */
    dist_comm *c = NULL;
    assert_int_equal(dist_comm_for(ops_cpu(), &c), BASE_OK);
    assert_ptr_equal(c, dist_world());
}

/* all_reduce of n floats: every element equals the rank-ordered double sum
 * rounded once, bit for bit, on every rank. */
static void check_sum_f32(size_t n) {
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = val_f32(R, i);
    assert_int_equal(dist_allreduce(dist_world(), x, n, DIST_F32, DIST_SUM), BASE_OK);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double acc = val_f32(0, i);
        for (int r = 1; r < W; r++) acc += val_f32(r, i);
        float want = (float)acc;
        if (memcmp(&want, &x[i], sizeof want)) {
            if (!bad) print_error("rank %d: element %zu: %.9g, want %.9g\n", R, i, x[i], want);
            bad++;
        }
    }
    free(x);
    assert_int_equal(bad, 0);
}

static void test_allreduce_f32(void **state) {
    (void)state;
    check_sum_f32(1);
    check_sum_f32(3);            /* fewer elements than ranks */
    check_sum_f32(1000);
    check_sum_f32((1u << 22) + 77); /* two segments of the rank-ordered sum */
}

static void test_allreduce_other(void **state) {
    (void)state;
    double d[3] = {1e16 * (R + 1), 1.0, -0.5 * R};
    assert_int_equal(dist_allreduce(dist_world(), d, 3, DIST_F64, DIST_SUM), BASE_OK);
    double a0 = 1e16, a1 = 1.0, a2 = -0.0;
    for (int r = 1; r < W; r++) a0 += 1e16 * (r + 1), a1 += 1.0, a2 += -0.5 * r;
    assert_memory_equal(&d[0], &a0, sizeof a0);
    assert_memory_equal(&d[1], &a1, sizeof a1);
    assert_true(d[2] == a2);
    int64_t k[2] = {(int64_t)1 << 40, R};
    assert_int_equal(dist_allreduce(dist_world(), k, 2, DIST_I64, DIST_SUM), BASE_OK);
    assert_int_equal(k[0], ((int64_t)1 << 40) * W);
    assert_int_equal(k[1], (int64_t)W * (W - 1) / 2);
    float m[2] = {(float)R, -(float)R};
    assert_int_equal(dist_allreduce(dist_world(), m, 2, DIST_F32, DIST_MAX), BASE_OK);
    assert_true(m[0] == (float)(W - 1) && m[1] == 0.0f);
    int32_t mi[1] = {10 - R};
    assert_int_equal(dist_allreduce(dist_world(), mi, 1, DIST_I32, DIST_MIN), BASE_OK);
    assert_int_equal(mi[0], 10 - (W - 1));
    uint8_t u = (uint8_t)(R == W - 1);
    assert_int_equal(dist_allreduce(dist_world(), &u, 1, DIST_U8, DIST_MAX), BASE_OK);
    assert_int_equal(u, 1);
}

static void test_reduce_scatter(void **state) {
    (void)state;
    size_t n = 37; /* per rank */
    float *send = malloc((size_t)W * n * sizeof *send), *recv = malloc(n * sizeof *recv);
    for (size_t i = 0; i < (size_t)W * n; i++) send[i] = val_f32(R, i);
    assert_int_equal(dist_reduce_scatter(dist_world(), send, recv, n, DIST_F32, DIST_SUM), BASE_OK);
    for (size_t i = 0; i < n; i++) {
        size_t gi = (size_t)R * n + i;
        double acc = val_f32(0, gi);
        for (int r = 1; r < W; r++) acc += val_f32(r, gi);
        float want = (float)acc;
        assert_memory_equal(&want, &recv[i], sizeof want);
    }
    int32_t si[8], ri[2];
    for (int i = 0; i < 2 * W; i++) si[i] = R * 100 + i;
    assert_int_equal(dist_reduce_scatter(dist_world(), si, ri, 2, DIST_I32, DIST_MAX), BASE_OK);
    assert_int_equal(ri[0], (W - 1) * 100 + 2 * R);
    assert_int_equal(ri[1], (W - 1) * 100 + 2 * R + 1);
    free(send), free(recv);
}

/* Block sizes of the non-blocking reduce-scatter: uneven, some empty. */
static size_t rs_count(int r, int pass) { return (size_t)((r * 7 + pass * 3) % 5) * (pass ? 1000 : 3); }

static void test_ireduce_scatterv(void **state) {
    (void)state;
    size_t counts[2][64], total[2] = {0, 0};
    assert_true(W <= 64);
    for (int p = 0; p < 2; p++)
        for (int r = 0; r < W; r++) counts[p][r] = rs_count(r, p), total[p] += counts[p][r];
    float *send[2], *recv[2];
    for (int p = 0; p < 2; p++) { /* every rank's blocks: rank R's value at the element's global index */
        send[p] = malloc((total[p] + 1) * sizeof(float));
        recv[p] = malloc((counts[p][R] + 1) * sizeof(float));
        for (size_t i = 0; i < total[p]; i++) send[p][i] = val_f32(R, i + 17 * (size_t)p);
        for (size_t i = 0; i < counts[p][R]; i++) recv[p][i] = val_f32(W + 5, i); /* what += adds to */
    }
    dist_request *q[2];
    for (int p = 0; p < 2; p++) /* both in flight, written (pass 0) and added (pass 1) */
        assert_int_equal(dist_ireduce_scatterv(dist_world(), send[p], recv[p], counts[p], DIST_F32, p, &q[p]),
                         BASE_OK);
    assert_int_equal(dist_wait(q[1]), BASE_OK);
    assert_int_equal(dist_wait(q[0]), BASE_OK);
    for (int p = 0; p < 2; p++) {
        size_t off = 0, bad = 0;
        for (int r = 0; r < R; r++) off += counts[p][r];
        for (size_t i = 0; i < counts[p][R]; i++) {
            double acc = val_f32(0, off + i + 17 * (size_t)p);
            for (int r = 1; r < W; r++) acc += val_f32(r, off + i + 17 * (size_t)p);
            float want = p ? (float)((double)val_f32(W + 5, i) + acc) : (float)acc;
            if (memcmp(&want, &recv[p][i], sizeof want)) bad++;
        }
        assert_int_equal(bad, 0);
        free(send[p]), free(recv[p]);
    }
    /* f32 / f64 sums only; NULL waits */
    dist_request *none = NULL;
    int32_t i32 = 0;
    size_t one[64];
    for (int r = 0; r < W; r++) one[r] = 0;
    assert_int_equal(dist_ireduce_scatterv(dist_world(), &i32, &i32, one, DIST_I32, 0, &none), BASE_ERR_INVALID);
    assert_null(none);
    assert_int_equal(dist_wait(NULL), BASE_OK);
}

static void test_gather_broadcast(void **state) {
    (void)state;
    dist_comm *w = dist_world();
    int64_t mine[3] = {R, R * 10, R * 100}, all[12];
    assert_int_equal(dist_allgather(w, mine, all, 3, DIST_I64), BASE_OK);
    for (int r = 0; r < W; r++)
        for (int k = 0; k < 3; k++) assert_int_equal(all[r * 3 + k], (int64_t)r * (k == 0 ? 1 : k == 1 ? 10 : 100));
    /* uneven counts: rank r sends r + 1 bytes 'a' + r (rank 0: one byte) */
    size_t counts[4], total = 0;
    for (int r = 0; r < W; r++) counts[r] = (size_t)r + 1, total += (size_t)r + 1;
    char send[4], recv[16];
    memset(send, 'a' + R, sizeof send);
    assert_int_equal(dist_allgatherv(w, send, recv, counts, DIST_U8), BASE_OK);
    size_t off = 0;
    for (int r = 0; r < W; r++)
        for (size_t k = 0; k < counts[r]; k++) assert_int_equal(recv[off++], 'a' + r);
    assert_int_equal(off, total);
    double b[2] = {R == W - 1 ? 3.25 : 0, R == W - 1 ? -1e300 : 0};
    assert_int_equal(dist_broadcast(w, b, 2, DIST_F64, W - 1), BASE_OK);
    assert_true(b[0] == 3.25 && b[1] == -1e300);
    assert_int_equal(dist_barrier(w), BASE_OK);
}

/* all_to_all with counts: rank s sends s + d + 1 ints valued s * 1000 + d *
 * 10 + k to rank d. */
static void test_alltoallv(void **state) {
    (void)state;
    size_t sc[4], rc[4], ns = 0, nr = 0;
    for (int d = 0; d < W; d++) sc[d] = (size_t)(R + d + 1), rc[d] = (size_t)(d + R + 1), ns += sc[d], nr += rc[d];
    int32_t *send = malloc(ns * sizeof *send), *recv = malloc(nr * sizeof *recv);
    size_t o = 0;
    for (int d = 0; d < W; d++)
        for (size_t k = 0; k < sc[d]; k++) send[o++] = R * 1000 + d * 10 + (int32_t)k;
    assert_int_equal(dist_alltoallv(dist_world(), send, sc, recv, rc, DIST_I32), BASE_OK);
    o = 0;
    for (int s = 0; s < W; s++)
        for (size_t k = 0; k < rc[s]; k++) assert_int_equal(recv[o++], s * 1000 + R * 10 + (int32_t)k);
    free(send), free(recv);
}

static void test_stats(void **state) {
    (void)state;
    dist_stats a, b;
    dist_comm_stats(dist_world(), &a);
    float x[5] = {0};
    assert_int_equal(dist_allreduce(dist_world(), x, 5, DIST_F32, DIST_SUM), BASE_OK);
    assert_int_equal(dist_barrier(dist_world()), BASE_OK);
    dist_comm_stats(dist_world(), &b);
    assert_int_equal(b.calls[DIST_ALLREDUCE] - a.calls[DIST_ALLREDUCE], 1);
    assert_int_equal(b.bytes[DIST_ALLREDUCE] - a.bytes[DIST_ALLREDUCE], 20);
    assert_int_equal(b.calls[DIST_BARRIER] - a.calls[DIST_BARRIER], 1);
    assert_string_equal(dist_coll_name(DIST_ALLTOALL), "all_to_all");
}

static void test_errors(void **state) {
    (void)state;
    float x = 0;
    assert_int_equal(dist_allreduce(dist_world(), &x, 1, (dist_dtype)9, DIST_SUM), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "dtype 9"));
    assert_non_null(strstr(base_err_msg(), "'world'"));
    assert_int_equal(dist_allreduce(dist_world(), &x, 1, DIST_F32, (dist_op)7), BASE_ERR_INVALID);
    assert_int_equal(dist_broadcast(dist_world(), &x, 1, DIST_F32, W), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "root"));
#ifdef GRPO_TEST_MPI
    if (W > 1) {
        /* a communicator MPI rejects: the call fails with MPI's message,
         * named with the call, the rank and the communicator */
        static MPI_Comm bad;
        bad = MPI_COMM_NULL;
        dist_comm c = *dist_world();
        c.impl = &bad;
        snprintf(c.name, sizeof c.name, "broken");
        assert_int_equal(dist_barrier(&c), BASE_ERR_IO);
        char want[64];
        snprintf(want, sizeof want, "on rank %d of communicator 'broken'", R);
        assert_non_null(strstr(base_err_msg(), "MPI_Barrier("));
        assert_non_null(strstr(base_err_msg(), want));
    }
#endif
}

/* Expert parallelism's groups (dist_comm_split): for every EP dividing
 * the world, the EP group of rank R (color R / EP: consecutive ranks) and
 * its expert-data-parallel group (color R % EP): sizes, ranks, an integer
 * sum, an all-gather in group order and an all-to-all inside each group. */
static void test_split(void **state) {
    (void)state;
    for (int ep = 1; ep <= W; ep++) {
        if (W % ep) continue;
        dist_comm *g = NULL, *d = NULL, *gd = NULL;
        assert_int_equal(dist_comm_split(dist_world(), R / ep, R, "ep", &g), BASE_OK);
        assert_int_equal(dist_comm_split(dist_world(), R % ep, R, "expert_dp", &d), BASE_OK);
        assert_int_equal(dist_comm_size(g), ep);
        assert_int_equal(dist_comm_rank(g), R % ep);
        assert_int_equal(dist_comm_size(d), W / ep);
        assert_int_equal(dist_comm_rank(d), R / ep);
        assert_string_equal(dist_comm_name(g), "ep");
        assert_string_equal(dist_comm_name(d), "expert_dp");
        assert_string_equal(dist_comm_backend(g), W > 1 || dist_launched() ? "mpi" : "self");
        int32_t x = R;
        assert_int_equal(dist_allreduce(g, &x, 1, DIST_I32, DIST_SUM), BASE_OK);
        int32_t want = 0;
        for (int k = 0; k < ep; k++) want += (R / ep) * ep + k;
        assert_int_equal(x, want);
        int32_t mine = R, all[4] = {-1, -1, -1, -1};
        assert_int_equal(dist_allgather(d, &mine, all, 1, DIST_I32), BASE_OK);
        for (int k = 0; k < W / ep; k++) assert_int_equal(all[k], k * ep + R % ep);
        size_t sc[4], rc[4];
        int32_t send[4], recv[4];
        for (int k = 0; k < ep; k++) sc[k] = rc[k] = 1, send[k] = R * 10 + k;
        assert_int_equal(dist_alltoallv(g, send, sc, recv, rc, DIST_I32), BASE_OK);
        for (int k = 0; k < ep; k++) assert_int_equal(recv[k], ((R / ep) * ep + k) * 10 + R % ep);
        /* the CPU backend's device twin is the host communicator itself */
        assert_int_equal(dist_comm_device(ops_cpu(), g, "ep/device", &gd), BASE_OK);
        assert_ptr_equal(gd, g);
        dist_comm_free(d);
        dist_comm_free(g);
    }
    dist_comm *bad = (dist_comm *)1;
    assert_int_equal(dist_comm_split(dist_world(), -1, R, "ep", &bad), BASE_ERR_INVALID);
    assert_null(bad);
    assert_non_null(strstr(base_err_msg(), "color -1"));
    dist_comm_free(NULL);
    dist_comm_free(dist_world()); /* never freed: still usable */
    assert_int_equal(dist_barrier(dist_world()), BASE_OK);
}

int main(int argc, char **argv) {
    if (dist_init(&argc, &argv)) {
        fprintf(stderr, "dist_init: %s\n", base_err_msg());
        return 1;
    }
    R = dist_rank(), W = dist_world_size();
    if (W > 4) {
        fprintf(stderr, "test_dist runs on at most 4 ranks\n");
        dist_abort(1);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runtime),     cmocka_unit_test(test_allreduce_f32),    cmocka_unit_test(test_allreduce_other),
        cmocka_unit_test(test_reduce_scatter), cmocka_unit_test(test_ireduce_scatterv), cmocka_unit_test(test_gather_broadcast), cmocka_unit_test(test_alltoallv),
        cmocka_unit_test(test_stats),       cmocka_unit_test(test_errors),
        cmocka_unit_test(test_split),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    /* a rank whose test failed must not leave the others in a collective */
    if (failed) dist_abort(1);
    dist_finalize();
    return 0;
}
