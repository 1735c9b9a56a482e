/*
 * FMA peak of the CPU (see cpu_peak.h).
 */
#include "cpu_peak.h"

#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define VW 16
#elif defined(__AVX__)
#define VW 8
#else
#define VW 4
#endif
typedef float vf __attribute__((vector_size(VW * 4)));

#define ACC 12 /* independent FMA chains per thread: >= latency (4) x ports (2), with margin */

/* a * b + c in one instruction, as the matmul's micro-kernel does it */
static inline vf vfma(vf a, vf b, vf c) {
#if VW == 16
    return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif VW == 8 && defined(__FMA__)
    return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
    return a * b + c;
#endif
}

/* One thread: `iters` rounds of ACC vector FMAs on accumulators that stay
 * in registers. Returns a value that depends on every accumulator so
 * nothing is optimised away. */
static float fma_loop(long iters, float seed) {
    vf m, a, c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11;
    for (int l = 0; l < VW; l++) m[l] = 0.999999f, a[l] = 1e-7f * seed;
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = c8 = c9 = c10 = c11 = a;
    c1 += 1, c2 += 2, c3 += 3, c4 += 4, c5 += 5, c6 += 6, c7 += 7, c8 += 8, c9 += 9, c10 += 10, c11 += 11;
    for (long it = 0; it < iters; it++) {
        c0 = vfma(c0, m, a), c1 = vfma(c1, m, a), c2 = vfma(c2, m, a), c3 = vfma(c3, m, a);
        c4 = vfma(c4, m, a), c5 = vfma(c5, m, a), c6 = vfma(c6, m, a), c7 = vfma(c7, m, a);
        c8 = vfma(c8, m, a), c9 = vfma(c9, m, a), c10 = vfma(c10, m, a), c11 = vfma(c11, m, a);
    }
    vf t = c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11;
    float s = 0;
    for (int l = 0; l < VW; l++) s += t[l];
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

int bench_cpu_peak_width(void) { return VW; }
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
            cpu_rate += 2.0 * ACC * VW * (double)iters / c * 1e-9;
        }
        double t = clock_now(CLOCK_MONOTONIC) - t0;
        sink += s;
        double gf = 2.0 * ACC * VW * (double)iters * bench_threads() / t * 1e-9;
        if (gf > best) best = gf;
        if (cpu_rate > best_cpu) best_cpu = cpu_rate;
        if (t < 0.1) iters *= 2, rep--; /* calibrate: runs of at least 0.1 s */
    }
    (void)sink;
    if (oncpu) *oncpu = best_cpu;
    return best;
}
