/*
 * The CUDA emulator: compiles the kernels of the kernels/ sources with the host C++
 * compiler and runs them on the CPU, so that their logic (indexing,
 * reductions, barriers, warp shuffles, tiling edges) is tested where no GPU
 * exists. Tests only: tests/parity (`--backend emu`) and tests/cuda run the
 * emulated backend (ops_cuda_emu()) against the CPU reference and the
 * fixtures.
 *
 * Model: a launch runs its blocks one after the other; the threads of a
 * block are fibers (one stack each) switched cooperatively at barriers.
 * __syncthreads() waits until every live thread of the block has arrived;
 * a warp intrinsic (__shfl_*_sync, __ballot_sync, __syncwarp) waits for the
 * live lanes of the warp. A thread at __syncthreads while a lane of its
 * warp waits in a warp intrinsic is a divergent barrier: the emulator dies
 * naming it (on a GPU it would hang or be undefined). Exited threads count
 * as arrived, as on the hardware.
 *
 * `__shared__` is `static`: one instance per launch, shared by the block's
 * fibers and reused by the next block (CUDA promises no contents either).
 * Dynamic shared memory is a fresh buffer per launch, filled with a NaN
 * pattern so that a read before a write shows up in the results.
 *
 * What it does not model: concurrency between blocks (they run in order,
 * so a kernel relying on inter-block ordering would pass here), memory
 * ordering, timing, bank conflicts, register or static shared-memory
 * limits. A race inside a block (a thread reading shared memory that
 * another writes in the same barrier interval) shows up as wrong results:
 * each interval runs the threads in a fresh pseudo-random order (fixed
 * seed, so runs repeat).
 */
#ifndef GRPO_CUDA_EMU_H
#define GRPO_CUDA_EMU_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <functional>

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct emu_uint3 {
    unsigned x, y, z;
};

/* ---- qualifiers -------------------------------------------------------- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __shared__ static
#define __constant__ static
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__

/* ---- the running thread -------------------------------------------------- */
struct emu_thread {
    emu_uint3 tid;
    int linear, lane, warp;
};
extern emu_thread *emu_cur;
extern emu_uint3 emu_block_idx;
extern dim3 emu_block_dim, emu_grid_dim;
extern unsigned char *emu_dyn_smem;
#define threadIdx (emu_cur->tid)
#define blockIdx emu_block_idx
#define blockDim emu_block_dim
#define gridDim emu_grid_dim
#define warpSize 32

/* Barriers (see the top of this file). */
void emu_syncthreads(void);
void emu_syncwarp(void);
/* Warp exchange: put this lane's 8-byte value, wait for the warp, read
 * lane `src`'s value, wait again (so that the next exchange cannot
 * overwrite a value not yet read). */
uint64_t emu_warp_xchg(uint64_t v, int src);
/* The 32-bit mask of live lanes whose `pred` is non-zero. */
unsigned emu_ballot(int pred);

static inline void __syncthreads(void) { emu_syncthreads(); }
static inline void __syncwarp(unsigned mask = 0xffffffffu) {
    (void)mask;
    emu_syncwarp();
}
static inline void __threadfence(void) {}
static inline void __threadfence_block(void) {}

template <class T> static inline uint64_t emu_bits(T v) {
    static_assert(sizeof(T) <= 8, "shuffle of a type over 8 bytes");
    uint64_t u = 0;
    memcpy(&u, &v, sizeof v);
    return u;
}
template <class T> static inline T emu_unbits(uint64_t u) {
    T v;
    memcpy(&v, &u, sizeof v);
    return v;
}
template <class T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    (void)mask;
    int lane = emu_cur->lane;
    int base = lane - lane % width;
    return emu_unbits<T>(emu_warp_xchg(emu_bits(v), base + (src % width)));
}
template <class T> static inline T __shfl_xor_sync(unsigned mask, T v, int lm, int width = 32) {
    (void)mask;
    int lane = emu_cur->lane;
    int src = lane ^ lm;
    if (src / width != lane / width) src = lane; /* outside the segment: own value */
    return emu_unbits<T>(emu_warp_xchg(emu_bits(v), src));
}
template <class T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
    (void)mask;
    int lane = emu_cur->lane;
    int src = lane + (int)d;
    if (src / width != lane / width) src = lane;
    return emu_unbits<T>(emu_warp_xchg(emu_bits(v), src));
}
template <class T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) {
    (void)mask;
    int lane = emu_cur->lane;
    int src = lane - (int)d;
    if (src < 0 || src / width != lane / width) src = lane;
    return emu_unbits<T>(emu_warp_xchg(emu_bits(v), src));
}
static inline unsigned __ballot_sync(unsigned mask, int pred) {
    (void)mask;
    return emu_ballot(pred);
}
static inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
static inline int __all_sync(unsigned mask, int pred) {
    (void)mask;
    return emu_ballot(!pred) == 0;
}

/* ---- atomics: blocks and threads never run at once -------------------- */
template <class T> static inline T atomicAdd(T *p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}
template <class T> static inline T atomicMax(T *p, T v) {
    T old = *p;
    if (v > old) *p = v;
    return old;
}
template <class T> static inline T atomicMin(T *p, T v) {
    T old = *p;
    if (v < old) *p = v;
    return old;
}
template <class T> static inline T atomicCAS(T *p, T cmp, T v) {
    T old = *p;
    if (old == cmp) *p = v;
    return old;
}
template <class T> static inline T atomicExch(T *p, T v) {
    T old = *p;
    *p = v;
    return old;
}

/* ---- intrinsics --------------------------------------------------------- */
static inline float __int_as_float(int x) { return emu_unbits<float>((uint64_t)(uint32_t)x); }
static inline int __float_as_int(float x) { return (int)(uint32_t)emu_bits(x); }
static inline unsigned __float_as_uint(float x) { return (uint32_t)emu_bits(x); }
static inline float __uint_as_float(unsigned x) { return emu_unbits<float>((uint64_t)x); }
static inline float __fdividef(float a, float b) { return a / b; }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline int __float2int_rn(float x) { return (int)lrintf(x); }
static inline long long __float2ll_rn(float x) { return (long long)llrintf(x); }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
template <class T> static inline T __ldg(const T *p) { return *p; }

/* ---- launches ----------------------------------------------------------- */
/* Run body once per thread of every block, blocks in order. smem: bytes of
 * dynamic shared memory. Dies on a divergent barrier. While a graph is
 * being captured the launch is recorded instead (body copied: it must hold
 * its arguments by value, as CUDA_LAUNCH's does). */
void emu_launch(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body);

/* ---- graphs (CUDA stream capture, emulated) ------------------------------ */
/* Device work done on the host in the emulator (copies, fills, the GEMMs
 * that go through the CPU backend): run now, or recorded while capturing. */
void emu_host(const std::function<void()> &fn);
/* Between begin and end, launches and emu_host work are recorded in order,
 * not run; end returns the recording (a graph), which emu_graph_run
 * replays in the same order, with the same arguments. */
void emu_capture_begin(void);
void *emu_capture_end(void);
int emu_capturing(void);
void emu_graph_run(void *graph);
void emu_graph_free(void *graph);

#endif
