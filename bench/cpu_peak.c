/*
 * FMA peak of the CPU (see cpu_peak.h).
 */
#include "cpu_peak.h"

#include "tensor/cpu/cpu.h" /* the matmul's vector width and FMA */

#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define ACC 12 /* independent FMA chains per thread: >= latency (4) x ports (2), with margin */

/* One thread: `iters` rounds of ACC vector FMAs on accumulators that stay
 * in registers. Returns a value that depends on every accumulator so
 * nothing is optimised away. */
static float fma_loop(long iters, float seed) {
    cpu_vf m, a, c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11;
    for (int l = 0; l < CPU_VW; l++) m[l] = 0.999999f, a[l] = 1e-7f * seed;
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = c8 = c9 = c10 = c11 = a;
    c1 += 1, c2 += 2, c3 += 3, c4 += 4, c5 += 5, c6 += 6, c7 += 7, c8 += 8, c9 += 9, c10 += 10, c11 += 11;
    for (long it = 0; it < iters; it++) {
        c0 = cpu_vfma(c0, m, a), c1 = cpu_vfma(c1, m, a), c2 = cpu_vfma(c2, m, a), c3 = cpu_vfma(c3, m, a);
        c4 = cpu_vfma(c4, m, a), c5 = cpu_vfma(c5, m, a), c6 = cpu_vfma(c6, m, a), c7 = cpu_vfma(c7, m, a);
        c8 = cpu_vfma(c8, m, a), c9 = cpu_vfma(c9, m, a), c10 = cpu_vfma(c10, m, a), c11 = cpu_vfma(c11, m, a);
    }
    cpu_vf t = c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11;
    float s = 0;
    for (int l = 0; l < CPU_VW; l++) s += t[l];
    return s;
}

int bench_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static double clock_now(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int bench_cpu_peak_width(void) { return CPU_VW; }
int bench_cpu_peak_chains(void) { return ACC; }

double bench_cpu_peak(int reps, double *oncpu) {
    long iters = 1 << 18;
    double best = 0, best_cpu = 0;
    volatile float sink = 0;
    for (int rep = 0; rep < reps; rep++) {
        double t0 = clock_now(CLOCK_MONOTONIC), cpu_rate = 0;
        float s = 0;
#pragma omp parallel reduction(+ : s, cpu_rate)
        {
            double c0 = clock_now(CLOCK_THREAD_CPUTIME_ID);
            s += fma_loop(iters, 1.0f + (float)rep);
            double c = clock_now(CLOCK_THREAD_CPUTIME_ID) - c0;
            cpu_rate += 2.0 * ACC * CPU_VW * (double)iters / c * 1e-9;
        }
        double t = clock_now(CLOCK_MONOTONIC) - t0;
        sink += s;
        double gf = 2.0 * ACC * CPU_VW * (double)iters * bench_threads() / t * 1e-9;
        if (gf > best) best = gf;
        if (cpu_rate > best_cpu) best_cpu = cpu_rate;
        if (t < 0.1) iters *= 2, rep--; /* calibrate: runs of at least 0.1 s */
    }
    (void)sink;
    if (oncpu) *oncpu = best_cpu;
    return best;
}
