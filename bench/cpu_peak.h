/*
 * The machine's float32 FMA peak, measured the same way the CPU matmul runs
 * (same vector width, fused multiply-adds, registers only), on all OpenMP
 * threads: the yardstick of bench_matmul and bench_model.
 */
#ifndef GRPO_BENCH_CPU_PEAK_H
#define GRPO_BENCH_CPU_PEAK_H

/* GFLOP/s, best of `reps` runs of at least 0.1 s each (wall clock). When
 * oncpu != NULL it gets the rate per second of thread CPU time summed over
 * the threads: what the cores deliver while they run, which stays
 * meaningful when other processes share the machine. */
double bench_cpu_peak(int reps, double *oncpu);
/* Vector width (floats) and independent FMA chains of the loop, for reports. */
int bench_cpu_peak_width(void);
int bench_cpu_peak_chains(void);
/* OpenMP threads the benchmarks run on. */
int bench_threads(void);

#endif
