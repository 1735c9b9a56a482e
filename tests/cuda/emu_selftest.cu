/*
 * The CUDA emulator catches what it claims to (kernels/emu/cuda_emu.h):
 *   - a block reduction with its barriers and a warp-shuffle reduction
 *     give the right sums;
 *   - the same reduction without the barrier between writing and reading
 *     shared memory (a race) gives a wrong sum;
 *   - a divergent barrier (part of a warp at __syncthreads, the rest in a
 *     warp intrinsic) and a shuffle that reads an exited lane die with a
 *     message (each run in a child process).
 * Compiled for the host with GRPO_CUDA_EMU; exit status 0 when all hold.
 */
#include "cuda_common.cuh"
#include "emu/cuda_emu_ops.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

CUDA_NS_BEGIN

/* out[b] = sum of x over block b's 256 elements, through shared memory
 * (with or without the barrier that orders the writes before the reads) */
__global__ void tree_sum_kernel(float *out, const float *x, int with_barrier) {
    __shared__ float s[256];
    int t = threadIdx.x;
    s[t] = x[blockIdx.x * 256 + t];
    if (with_barrier) __syncthreads();
    for (int half = 128; half > 0; half >>= 1) {
        float v = t < half ? s[t] + s[t + half] : 0.0f;
        __syncthreads();
        if (t < half) s[t] = v;
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

__global__ void warp_sum_kernel(float *out, const float *x) {
    float v = warp_sum(x[blockIdx.x * 64 + threadIdx.x]);
    if ((threadIdx.x & 31) == 0) out[blockIdx.x * 2 + (threadIdx.x >> 5)] = v;
}

__global__ void divergent_kernel(void) {
    if (threadIdx.x < 16)
        __syncthreads();
    else
        __syncwarp();
}

__global__ void exited_lane_kernel(float *out) {
    if (threadIdx.x == 5) return;
    out[threadIdx.x] = __shfl_sync(0xffffffffu, 1.0f * threadIdx.x, 5);
}

CUDA_NS_END

using namespace grpo_emu;

static int dies(void (*f)(void)) {
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        freopen("/dev/null", "w", stderr);
        f();
        _exit(0);
    }
    int st = 0;
    waitpid(p, &st, 0);
    return !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void run_divergent(void) { CUDA_LAUNCH(divergent_kernel, 1, 32, 0); }
static void run_exited(void) {
    static float out[32];
    CUDA_LAUNCH(exited_lane_kernel, 1, 32, 0, out);
}

int main(void) {
    ops_cuda_emu(); /* the error buffer that every launch checks */
    int ok = 1;
    const int nb = 8;
    float x[nb * 256], out[nb], want[nb];
    for (int b = 0; b < nb; b++) {
        want[b] = 0;
        for (int i = 0; i < 256; i++) {
            x[b * 256 + i] = (float)((b * 256 + i) % 7) - 3.0f; /* small integers: exact sums */
            want[b] += x[b * 256 + i];
        }
    }
    CUDA_LAUNCH(tree_sum_kernel, nb, 256, 0, out, (const float *)x, 1);
    for (int b = 0; b < nb; b++)
        if (out[b] != want[b]) printf("FAIL: block sum %d is %g, want %g\n", b, out[b], want[b]), ok = 0;
    CUDA_LAUNCH(tree_sum_kernel, nb, 256, 0, out, (const float *)x, 0);
    int wrong = 0;
    for (int b = 0; b < nb; b++)
        wrong += out[b] != want[b];
    if (!wrong)
        printf("FAIL: the race (no barrier after the shared writes) went unnoticed\n"), ok = 0;
    else
        printf("race without the barrier: %d of %d block sums wrong (as it should)\n", wrong, nb);
    float w[16];
    CUDA_LAUNCH(warp_sum_kernel, nb, 64, 0, w, (const float *)x);
    for (int k = 0; k < 2 * nb; k++) {
        float s = 0;
        for (int i = 0; i < 32; i++)
            s += x[k * 32 + i];
        if (w[k] != s) printf("FAIL: warp sum %d is %g, want %g\n", k, w[k], s), ok = 0;
    }
    if (!dies(run_divergent)) printf("FAIL: a divergent barrier did not die\n"), ok = 0;
    if (!dies(run_exited)) printf("FAIL: a shuffle from an exited lane did not die\n"), ok = 0;
    printf(ok ? "emulator selftest passed\n" : "emulator selftest FAILED\n");
    return ok ? 0 : 1;
}
