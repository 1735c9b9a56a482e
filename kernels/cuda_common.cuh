/*
 * Private to kernels/: what every op family shares.
 *
 * Two builds of the same sources:
 *   - nvcc (the CUDA backend, ops_cuda()): real kernels on one stream, GEMMs
 *     through cuBLAS.
 *   - the host C++ compiler with GRPO_CUDA_EMU (tests only, ops_cuda_emu()):
 *     kernels run on the CPU under kernels/emu/cuda_emu.h, GEMMs through the
 *     CPU backend, "device" memory is host memory. Everything lives in
 *     namespace grpo_emu there, so both builds link into one test program.
 *
 * Conventions: kernels are launched with CUDA_LAUNCH (checks the launch);
 * every op validates shapes on the host (tensor/ops_check.h, the checks the
 * CPU backend runs too; dies naming the op);
 * index values that live on the device (token ids, expert ids, slots,
 * positions) are checked by the kernels, which record the first bad one
 * in the error buffer (cuda_errbuf()); the host reads it at the next
 * synchronisation (sync, download, sumsq) and dies naming the op, the
 * position and the value. With GRPO_CUDA_SYNC=1 every op synchronises and
 * checks at once (debugging: errors are then reported by the op that
 * caused them).
 */
#ifndef GRPO_CUDA_COMMON_CUH
#define GRPO_CUDA_COMMON_CUH

#include <stdint.h>
#include <stdio.h>

#include "tensor/ops.h"
#include "tensor/ops_check.h"

#ifdef GRPO_CUDA_EMU
#include "emu/cuda_emu.h"
#define CUDA_NS_BEGIN namespace grpo_emu {
#define CUDA_NS_END }
#include <tuple>
/* The arguments are evaluated now and held by value, so that a launch
 * recorded by a graph capture replays with them (as a CUDA graph does). */
#define CUDA_LAUNCH(kernel, grid, block, smem, ...)                                                                    \
    do {                                                                                                               \
        auto emu_args_ = std::make_tuple(__VA_ARGS__);                                                                 \
        emu_launch((grid), (block), (smem),                                                                            \
                   [emu_args_] { std::apply([](auto... a) { kernel(a...); }, emu_args_); });                           \
        cuda_after_launch(#kernel);                                                                                    \
    } while (0)
/* Dynamic shared memory of the launch, as T*. */
#define CUDA_DYN_SMEM(T, name) T *name = (T *)emu_dyn_smem
#else
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#define CUDA_NS_BEGIN
#define CUDA_NS_END
#define CUDA_LAUNCH(kernel, grid, block, smem, ...)                                                                    \
    do {                                                                                                               \
        kernel<<<(grid), (block), (smem), cuda_stream>>>(__VA_ARGS__);                                                 \
        CHECK_LAUNCH();                                                                                                \
        cuda_after_launch(#kernel);                                                                                    \
    } while (0)
#define CUDA_DYN_SMEM(T, name)                                                                                         \
    extern __shared__ __align__(16) unsigned char cuda_dyn_smem_raw[];                                                 \
    T *name = (T *)cuda_dyn_smem_raw
/* One stream and one cuBLAS handle per process (made by ops_cuda()). */
extern cudaStream_t cuda_stream;
extern cublasHandle_t cuda_blas;
#endif

CUDA_NS_BEGIN

/* ---- host helpers ------------------------------------------------------ */

static inline unsigned cuda_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    return (unsigned)(b > 65535 * 32 ? 65535 * 32 : b);
}
static inline int64_t cu_min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t cu_max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Die unless t is contiguous (argument checks: tensor/ops_check.h). */
static inline void cuda_need_contig(const char *op, const char *arg, const tensor *t) {
    ops_need_contig("cuda", op, arg, t);
}

/* Device scratch per slot, grown on demand (the old buffer is freed after
 * the stream drains) and then reused: after the first step no op allocates.
 * Slots name their owner: two ops never hold the same slot at once. */
enum {
    SCR_NORM,   /* rmsnorm_bwd column partials */
    SCR_ATTN,   /* attention backward: D, per-head dkpe */
    SCR_ATTN_TILES, /* attention: per-sequence tile prefix */
    SCR_DEC,    /* decode split partials */
    SCR_LM,     /* lmhead running statistics */
    SCR_LMB,    /* lmhead_bwd: the bf16 copy of a dz chunk (bf16 mode) */
    SCR_SORT_A, /* radix sort buffers */
    SCR_SORT_B,
    SCR_SORT_H, /* radix sort histograms */
    SCR_SAMPLE, /* sampling rows */
    SCR_RED,    /* sumsq partials */
    SCR_MOE,    /* grouped expert GEMM tile prefix */
    SCR_EMU,    /* emulated GEMM widening (emulator only) */
    SCR_WQ,     /* matmul: a stored (fp8 / mixed-dtype) B operand made dense in A's dtype */
    SCR_COUNT
};
void *cuda_scratch(int slot, size_t bytes);

/* ---- device-side index errors ------------------------------------------- */

enum { CU_WHAT_INDEX = 1, CU_WHAT_SLOT, CU_WHAT_POSITION, CU_WHAT_LENGTH, CU_WHAT_EXPERT, CU_WHAT_TARGET, CU_WHAT_PAGE };
/* Ops that record index errors (the names in messages). */
enum {
    CU_OP_GATHER = 1,
    CU_OP_EMBED_FWD,
    CU_OP_EMBED_BWD,
    CU_OP_ROPE,
    CU_OP_CACHE_WRITE,
    CU_OP_DECODE,
    CU_OP_PLAN,
    CU_OP_COMBINE,
    CU_OP_LMHEAD,
    CU_OP_ATTN,
    CU_OP_MOE_GEMM,
};
/* The device error buffer: int[5] = {op, what, position, value, bound}, the
 * first error wins. */
int *cuda_errbuf(void);
/* Read the error buffer (synchronising) and die when an error is recorded. */
void cuda_check_errors(void);
/* After every launch: in the emulator or with GRPO_CUDA_SYNC=1,
 * synchronise and check errors now (not while a graph is captured). */
void cuda_after_launch(const char *kernel);

/* ---- graphs (graph.cu) --------------------------------------------------- */
/* ops.h graph_capture / graph_launch / graph_free. */
void *cuda_graph_capture(void (*fn)(void *), void *arg);
int cuda_graph_launch(void *graph);
void cuda_graph_free(void *graph);
/* Non-zero while a graph is being captured: nothing may synchronise. */
int cuda_capturing(void);
/* Bumped whenever a scratch buffer moves (cuda_scratch grows): a graph
 * captured before holds stale pointers. */
unsigned cuda_scratch_gen(void);
/* Free scratch buffers replaced during a capture (cuda_backend.cu; called
 * when the capture ends). */
void cuda_scratch_release_deferred(void);

__device__ __forceinline__ void cuda_flag(int *err, int op, int what, int64_t pos, int64_t value, int64_t bound) {
    if (atomicCAS(err, 0, op) == 0) {
        err[1] = what;
        err[2] = (int)pos;
        err[3] = (int)value;
        err[4] = (int)bound;
    }
}

/* ---- dtype load / store ---------------------------------------------------- */

#ifdef GRPO_CUDA_EMU
static inline float cuda_load(const void *p, int dt, int64_t i) {
    switch (dt) {
    case TENSOR_F32:
        return ((const float *)p)[i];
    case TENSOR_BF16:
        return tensor_bf16_to_f32(((const uint16_t *)p)[i]);
    case TENSOR_F16:
        return tensor_f16_to_f32(((const uint16_t *)p)[i]);
    case TENSOR_F8_E4M3:
        return tensor_f8e4m3_to_f32(((const uint8_t *)p)[i]);
    case TENSOR_I32:
        return (float)((const int32_t *)p)[i];
    case TENSOR_I64:
        return (float)((const int64_t *)p)[i];
    }
    return 0.0f;
}
static inline void cuda_store(void *p, int dt, int64_t i, float x) {
    switch (dt) {
    case TENSOR_F32:
        ((float *)p)[i] = x;
        break;
    case TENSOR_BF16:
        ((uint16_t *)p)[i] = tensor_f32_to_bf16(x);
        break;
    case TENSOR_F16:
        ((uint16_t *)p)[i] = tensor_f32_to_f16(x);
        break;
    case TENSOR_F8_E4M3:
        ((uint8_t *)p)[i] = tensor_f32_to_f8e4m3(x);
        break;
    case TENSOR_I32:
        ((int32_t *)p)[i] = (int32_t)lrintf(x);
        break;
    case TENSOR_I64:
        ((int64_t *)p)[i] = (int64_t)llrintf(x);
        break;
    }
}
#else
/* Element i of a buffer of dtype dt, as float. */
__device__ __forceinline__ float cuda_load(const void *p, int dt, int64_t i) {
    switch (dt) {
    case TENSOR_F32:
        return ((const float *)p)[i];
    case TENSOR_BF16:
        return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    case TENSOR_F16:
        return __half2float(((const __half *)p)[i]);
    case TENSOR_F8_E4M3: {
        __nv_fp8_e4m3 v;
        v.__x = ((const unsigned char *)p)[i];
        return (float)v;
    }
    case TENSOR_I32:
        return (float)((const int *)p)[i];
    case TENSOR_I64:
        return (float)((const long long *)p)[i];
    }
    return 0.0f;
}

__device__ __forceinline__ void cuda_store(void *p, int dt, int64_t i, float x) {
    switch (dt) {
    case TENSOR_F32:
        ((float *)p)[i] = x;
        break;
    case TENSOR_BF16:
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16(x);
        break;
    case TENSOR_F16:
        ((__half *)p)[i] = __float2half(x);
        break;
    case TENSOR_F8_E4M3: {
        __nv_fp8_e4m3 v(x); /* round to nearest, saturating to +-448 */
        ((unsigned char *)p)[i] = v.__x;
        break;
    }
    case TENSOR_I32:
        ((int *)p)[i] = __float2int_rn(x);
        break;
    case TENSOR_I64:
        ((long long *)p)[i] = __float2ll_rn(x);
        break;
    }
}
#endif

/* ---- stored weights (a frozen model's bf16 / fp8 compute weights) ---------------
 * An F8_E4M3 weight carries its 128 x 128 block scales (tensor.h
 * tensor_qblock); kernels get them by value. The device computes with
 * bf16(e4m3(q) * scale): the dequantised weight rounded once to bf16, as
 * DeepSeek-V3's weight_dequant kernel makes it for bf16 GEMMs ("bf16 tiles
 * through cuBLAS with the scales applied"), so a frozen fp8 model on the
 * GPU computes exactly as the frozen bf16 model of its dequantised
 * checkpoint. (The CPU keeps the f32 product: its arithmetic is f32.) */
typedef struct {
    const float *scale; /* NULL: no scales (bf16, f32, or plain e4m3) */
    int64_t off0;       /* elements from the region's base to the tensor's data */
    int64_t rows, cols, br, bc;
} cu_qb;

static inline cu_qb cuda_qb(const tensor *t) {
    cu_qb q;
    memset(&q, 0, sizeof q);
    if (t->dtype != TENSOR_F8_E4M3 || !t->qb) return q;
    q.scale = t->qb->scale;
    q.off0 = (const unsigned char *)t->data - (const unsigned char *)t->qb->base;
    q.rows = t->qb->rows, q.cols = t->qb->cols;
    q.br = (q.rows + TENSOR_QBLOCK - 1) / TENSOR_QBLOCK, q.bc = (q.cols + TENSOR_QBLOCK - 1) / TENSOR_QBLOCK;
    return q;
}

/* Element i (from the tensor's data) of a stored weight, as the device
 * GEMMs use it. */
__device__ __forceinline__ float cuda_load_w(const void *p, int dt, int64_t i, const cu_qb &q) {
    float v = cuda_load(p, dt, i);
    if (dt != TENSOR_F8_E4M3 || !q.scale) return v;
    int64_t k = q.off0 + i, per = q.rows * q.cols, in = k % per;
    v *= q.scale[k / per * q.br * q.bc + in / q.cols / TENSOR_QBLOCK * q.bc + in % q.cols / TENSOR_QBLOCK];
#ifdef GRPO_CUDA_EMU
    return tensor_bf16_to_f32(tensor_f32_to_bf16(v));
#else
    return __bfloat162float(__float2bfloat16(v));
#endif
}

/* ---- deterministic reductions ------------------------------------------------
 * A fixed tree over a fixed block size: the same inputs give the same bits
 * on every run. Every thread of the block must call them (they contain
 * __syncthreads), with blockDim.x a multiple of 32 and at most 1024. */

template <class T> __device__ __forceinline__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
template <class T> __device__ __forceinline__ T warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) {
        T w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w > v ? w : v;
    }
    return v;
}

/* Sum over the block; every thread gets the result. `red` is shared
 * scratch of 32 T (the caller's, so that a kernel can hold several). */
template <class T> __device__ T block_sum(T v, T *red) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* red may still be read by a previous call */
    if (lane == 0) red[w] = v;
    __syncthreads();
    T s = lane < nw ? red[lane] : (T)0;
    s = warp_sum(s);
    return s;
}
template <class T> __device__ T block_max(T v, T *red) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    T s = lane < nw ? red[lane] : red[0];
    s = warp_max(s);
    return s;
}

/* (value, index) with the larger value winning, the lower index on ties;
 * NaN never wins (as `if (z[j] > best)` on the CPU). Index INT64_MAX with
 * value -inf is the identity. */
struct cu_argmax {
    float v;
    int64_t i;
};
__device__ __forceinline__ cu_argmax argmax_pick(cu_argmax a, cu_argmax b) {
    if (b.v > a.v || (b.v == a.v && b.i < a.i)) return b;
    return a;
}
__device__ __forceinline__ cu_argmax warp_argmax(cu_argmax a) {
    for (int o = 16; o > 0; o >>= 1) {
        cu_argmax b;
        b.v = __shfl_xor_sync(0xffffffffu, a.v, o);
        b.i = __shfl_xor_sync(0xffffffffu, a.i, o);
        a = argmax_pick(a, b);
    }
    return a;
}
/* Over the block; every thread gets the result. rv, ri: shared [32]. */
__device__ __forceinline__ cu_argmax block_argmax(cu_argmax a, float *rv, int64_t *ri) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    a = warp_argmax(a);
    __syncthreads();
    if (lane == 0) rv[w] = a.v, ri[w] = a.i;
    __syncthreads();
    cu_argmax b;
    b.v = lane < nw ? rv[lane] : rv[0];
    b.i = lane < nw ? ri[lane] : ri[0];
    return warp_argmax(b);
}

/* ---- internal entry points (one .cu per op family) ---------------------------- */

/* matmul.cu */
void cuda_matmul(tensor *c, const tensor *a, const tensor *b, int trans_a, int trans_b, float alpha, float beta);
/* elementwise.cu */
void cuda_add(tensor *y, const tensor *a, const tensor *b);
void cuda_mul(tensor *y, const tensor *a, const tensor *b);
void cuda_scale(tensor *y, const tensor *x, float s);
void cuda_axpy(tensor *y, const tensor *x, float a);
void cuda_convert(tensor *dst, const tensor *src);
/* norm.cu */
void cuda_gather_rows(tensor *dst, const tensor *src, const tensor *idx);
void cuda_rmsnorm_fwd(tensor *y, tensor *rstd, const tensor *x, const tensor *w, float eps);
void cuda_rmsnorm_bwd(tensor *dx, tensor *dw, const tensor *dy, const tensor *x, const tensor *w, const tensor *rstd,
                      int accumulate_dx);
void cuda_embedding_fwd(tensor *y, const tensor *table, const tensor *ids);
void cuda_embedding_bwd(tensor *dtable, const tensor *dy, const tensor *ids);
/* rope.cu */
void cuda_rope_fwd(tensor *x, const tensor *pos, const tensor *cos, const tensor *sin, int interleaved);
void cuda_rope_bwd(tensor *dx, const tensor *pos, const tensor *cos, const tensor *sin, int interleaved);
/* attention.cu */
void cuda_mla_attn_fwd(tensor *o, tensor *lse, const tensor *q, const tensor *kv, const tensor *kpe,
                       const tensor *cu_seqlens, float scale);
void cuda_mla_attn_bwd(tensor *dq, tensor *dkv, tensor *dkpe, const tensor *dout, const tensor *q, const tensor *kv,
                       const tensor *kpe, const tensor *o, const tensor *lse, const tensor *cu_seqlens, float scale);
/* decode.cu */
void cuda_mla_cache_write(tensor *cache, const tensor *ckv, const tensor *kpe, const tensor *table, const tensor *seq,
                          const tensor *pos);
void cuda_mla_decode(tensor *o_lat, const tensor *q_lat, const tensor *q_pe, const tensor *cache, const tensor *table,
                     const tensor *seq, const tensor *len, float scale);
/* moe.cu */
void cuda_moe_route(tensor *idx, tensor *w, const tensor *z, const tensor *bias, int n_group, int topk_group, int norm,
                    float routed_scale);
void cuda_moe_route_bwd(tensor *dz, const tensor *dw, const tensor *z, const tensor *idx, int norm, float routed_scale);
void cuda_moe_aux_fwd(tensor *loss, const tensor *z, const tensor *idx, const tensor *cu);
void cuda_moe_aux_bwd(tensor *dz, const tensor *z, const tensor *idx, const tensor *cu, float coef);
void cuda_moe_plan(tensor *offsets, tensor *row_tok, tensor *inv, const tensor *idx, int n_experts);
void cuda_moe_combine(tensor *y, const tensor *ye, const tensor *w, const tensor *inv);
void cuda_moe_combine_bwd(tensor *dye, tensor *dw, const tensor *dy, const tensor *ye, const tensor *w,
                          const tensor *inv);
/* moe_gemm.cu */
void cuda_moe_matmul(tensor *y, const tensor *x, const tensor *w, const tensor *offsets, int trans_w, float alpha,
                     float beta);
void cuda_moe_matmul_dw(tensor *dw, const tensor *dy, const tensor *x, const tensor *offsets, float alpha);
void cuda_swiglu_fwd(tensor *h, const tensor *gu);
void cuda_swiglu_bwd(tensor *dgu, const tensor *dh, const tensor *gu);
/* lmhead.cu */
void cuda_lmhead_fwd(tensor *logp, tensor *ent, tensor *lse, const tensor *x, const tensor *w, const tensor *target,
                     float scale, tensor *ws);
void cuda_lmhead_bwd(tensor *dx, tensor *dw, const tensor *g_logp, const tensor *g_ent, const tensor *x,
                     const tensor *w, const tensor *target, const tensor *lse, const tensor *ent, float scale,
                     tensor *ws);
/* sample.cu */
void cuda_sample(tensor *ids, tensor *logp, const tensor *logits, const tensor *u, float temperature, int top_k,
                 float top_p, float min_p);
/* optim.cu */
double cuda_sumsq(const tensor *x);
void cuda_adamw(tensor *param, tensor *m, tensor *v, const tensor *grad, const ops_adamw_args *a);

/* sort.cu: stable LSD radix sort of n (key, value) pairs by the low `bits`
 * bits of the key, in place (keys and vals are device arrays; scratch from
 * SCR_SORT_*). Equal keys keep their input order. */
void cuda_sort_pairs(uint32_t *keys, int32_t *vals, int64_t n, int bits);
/* One stable counting pass by digit (key >> shift) & (nbins - 1) from
 * (kin, vin) into (kout, vout); when `counts` is not NULL it gets the
 * per-digit totals [nbins] (I32). Keys at or above `limit` (when limit > 0)
 * are flagged as errors of op `op` and treated as digit 0. */
void cuda_sort_pass(const uint32_t *kin, const int32_t *vin, uint32_t *kout, int32_t *vout, int64_t n, int shift,
                    int nbins, int32_t *counts, int64_t limit, int op);

CUDA_NS_END

#endif
