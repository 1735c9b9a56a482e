/*
 * bench_matmul: GFLOP/s of ops_cpu()->matmul at the shapes grpo runs,
 * next to the machine's peak measured the same way in the same program.
 *
 * Peak: every OpenMP thread runs a loop of independent vector FMAs kept in
 * registers (ACC accumulators, enough to cover FMA latency x FMA ports), at
 * the vector width the matmul is compiled for (VW, derived from the same
 * macros as src/tensor/cpu/matmul.c). That is the ceiling the GEMM
 * micro-kernel can reach; the fraction of it is the figure of merit.
 *
 * Each shape: one warm-up call, then calls until at least MIN_TIME seconds
 * have passed (and at least 3); the best time counts (least disturbed by
 * other processes). FLOPs = 2 * batch * M * N * K. Two figures per shape:
 *   GFLOP/s (wall clock) and its fraction of the wall-clock peak;
 *   on-CPU GFLOP/s (FLOPs per second of process CPU time, times threads) and
 *   its fraction of the on-CPU peak (the FMA loop's rate per second of
 *   thread CPU time, summed over threads). On an idle machine the two
 *   agree; on a shared one only the on-CPU pair is stable.
 *
 *   build/bench/bench_matmul [--quick | --time SECONDS_PER_SHAPE]
 *
 * On a shared machine give each shape more time (--time 3): the best call
 * is the one least disturbed by other processes. GB/s counts A, B and C
 * once each: the figure that matters for the memory-bound decode shapes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "tensor/ops.h"

#include "cpu_peak.h"

static double min_time = 0.5;

typedef struct {
    const char *what;
    int64_t batch, m, n, k;
    int ta, tb;
    float beta;
} shape;

static const shape shapes[] = {
    {"prefill x W^T   [512x2048] x [2048x2048]^T", 1, 512, 2048, 2048, 0, 1, 0.0f},
    {"backward dX = dY W  [512x2048] x [2048x2048]", 1, 512, 2048, 2048, 0, 0, 0.0f},
    {"backward dW += dY^T X  [512x2048]^T x [512x2048]", 1, 2048, 2048, 512, 1, 0, 1.0f},
    {"MLA q_b  [512x48] x [192x48]^T (tiny K)", 1, 512, 192, 48, 0, 1, 0.0f},
    {"fixture logits  [37x64] x [320x64]^T", 1, 37, 320, 64, 0, 1, 0.0f},
    {"decode M=1  [1x1024] x [4096x1024]^T", 1, 1, 4096, 1024, 0, 1, 0.0f},
    {"decode M=1  [1x4096] x [4096x1024] (dX form)", 1, 1, 1024, 4096, 0, 0, 0.0f},
    {"batched attention  8 x [128x64] x [128x64]^T", 8, 128, 128, 64, 0, 1, 0.0f},
};

static double proc_cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Best wall time of the shape; *gflops from it, *cpu_gflops = FLOPs per
 * second of process CPU time (all threads) x threads: the rate the cores
 * deliver while running, comparable to the on-CPU peak (idle OpenMP
 * workers spinning count as CPU time, so it errs low). */
static double bench_shape(const shape *s, double *gflops, double *cpu_gflops, double *gbs) {
    const struct ops *o = ops_cpu();
    int64_t ar = s->ta ? s->k : s->m, ac = s->ta ? s->m : s->k;
    int64_t br = s->tb ? s->n : s->k, bc = s->tb ? s->k : s->n;
    size_t na = (size_t)(s->batch * ar * ac), nb = (size_t)(s->batch * br * bc),
           nc = (size_t)(s->batch * s->m * s->n);
    float *A = base_xmalloc_aligned(na * 4), *B = base_xmalloc_aligned(nb * 4),
          *C = base_xmalloc_aligned(nc * 4);
    base_rng g;
    base_rng_init(&g, 1, 2, 3, 4);
    for (size_t i = 0; i < na; i++) A[i] = base_rng_uniform(&g, (uint32_t)i) - 0.5f;
    for (size_t i = 0; i < nb; i++) B[i] = base_rng_uniform(&g, (uint32_t)(i + na)) - 0.5f;
    memset(C, 0, nc * 4);
    tensor a, b, c;
    if (s->batch > 1) {
        a = tensor_3d(A, TENSOR_F32, s->batch, ar, ac);
        b = tensor_3d(B, TENSOR_F32, s->batch, br, bc);
        c = tensor_3d(C, TENSOR_F32, s->batch, s->m, s->n);
    } else {
        a = tensor_2d(A, TENSOR_F32, ar, ac);
        b = tensor_2d(B, TENSOR_F32, br, bc);
        c = tensor_2d(C, TENSOR_F32, s->m, s->n);
    }
    double flop = 2.0 * (double)s->batch * (double)s->m * (double)s->n * (double)s->k;
    o->matmul(&c, &a, &b, s->ta, s->tb, 1.0f, s->beta); /* warm-up */
    double best = 1e30, best_cpu = 1e30, start = base_now();
    int reps = 0;
    while (reps < 3 || base_now() - start < min_time) {
        double t0 = base_now(), c0 = proc_cpu_now();
        o->matmul(&c, &a, &b, s->ta, s->tb, 1.0f, s->beta);
        double t = base_now() - t0, ct = proc_cpu_now() - c0;
        if (t < best) best = t;
        if (ct < best_cpu) best_cpu = ct;
        reps++;
    }
    *cpu_gflops = flop / best_cpu * bench_threads() * 1e-9;
    free(A), free(B), free(C);
    *gflops = flop / best * 1e-9;
    *gbs = (double)(na + nb + nc) * 4 / best * 1e-9;
    return best;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) min_time = 0.05;
        else if (!strcmp(argv[i], "--time") && i + 1 < argc) min_time = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_matmul [--quick | --time SECONDS_PER_SHAPE]\n");
            return 2;
        }
    }
    printf("bench_matmul: ops_cpu()->matmul, float32, %d threads, vector width %d floats\n",
           bench_threads(), bench_cpu_peak_width());
    double oncpu, peak = bench_cpu_peak(min_time >= 0.5 ? 30 : 5, &oncpu);
    printf("peak (register FMA loop, %d chains x %d lanes, all threads): %.1f GFLOP/s wall clock "
           "(%.1f per second of thread CPU time)\n\n",
           bench_cpu_peak_chains(), bench_cpu_peak_width(), peak, oncpu);
    printf("%-50s %9s %8s %7s %8s %7s %6s\n", "shape", "time ms", "GFLOP/s", "of peak", "on-CPU",
           "of peak", "GB/s");
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        double gf, cgf, gbs, t = bench_shape(&shapes[i], &gf, &cgf, &gbs);
        const shape *h = &shapes[i];
        /* the on-CPU figure needs a call that runs on every thread (4 MFLOP
         * and up: PAR_MIN_FLOP in src/tensor/cpu/matmul.c) and lasts long
         * enough for CPU-time accounting (1 ms) */
        if (2.0 * (double)h->batch * (double)h->m * (double)h->n * (double)h->k >= 4.0e6 && t >= 1e-3)
            printf("%-50s %9.3f %8.1f %6.1f%% %8.1f %6.1f%% %6.1f\n", h->what, t * 1e3, gf,
                   100.0 * gf / peak, cgf, 100.0 * cgf / oncpu, gbs);
        else
            printf("%-50s %9.3f %8.1f %6.1f%% %8s %7s %6.1f\n", h->what, t * 1e3, gf, 100.0 * gf / peak, "-",
                   "-", gbs);
    }
    return 0;
}
