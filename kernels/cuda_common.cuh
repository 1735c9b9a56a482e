/*
 * Private to kernels/: CUDA includes, the shared cuBLAS handle and stream,
 * dtype load/store helpers for kernels, and the internal entry points that
 * cuda_backend.cu puts into the op table. Check macros come from base.h.
 */
#ifndef GRPO_CUDA_COMMON_CUH
#define GRPO_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include "tensor/ops.h"

/* One stream and one cuBLAS handle per process (made by ops_cuda()). */
extern cudaStream_t cuda_stream;
extern cublasHandle_t cuda_blas;

static inline unsigned cuda_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 65535 * 32 ? 65535 * 32 : b);
}

/* Element i of a buffer of dtype dt, as float. */
__device__ __forceinline__ float cuda_load(const void *p, int dt, int64_t i) {
    switch (dt) {
    case TENSOR_F32: return ((const float *)p)[i];
    case TENSOR_BF16: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    case TENSOR_F16: return __half2float(((const __half *)p)[i]);
    case TENSOR_F8_E4M3: {
        __nv_fp8_e4m3 v;
        v.__x = ((const unsigned char *)p)[i];
        return (float)v;
    }
    case TENSOR_I32: return (float)((const int *)p)[i];
    case TENSOR_I64: return (float)((const long long *)p)[i];
    }
    return 0.0f;
}

__device__ __forceinline__ void cuda_store(void *p, int dt, int64_t i, float x) {
    switch (dt) {
    case TENSOR_F32: ((float *)p)[i] = x; break;
    case TENSOR_BF16: ((__nv_bfloat16 *)p)[i] = __float2bfloat16(x); break;
    case TENSOR_F16: ((__half *)p)[i] = __float2half(x); break;
    case TENSOR_F8_E4M3: {
        __nv_fp8_e4m3 v(x); /* round to nearest, saturating to +-448 */
        ((unsigned char *)p)[i] = v.__x;
        break;
    }
    case TENSOR_I32: ((int *)p)[i] = __float2int_rn(x); break;
    case TENSOR_I64: ((long long *)p)[i] = __float2ll_rn(x); break;
    }
}

/* Internal entry points (one .cu per op family). */
void cuda_matmul(tensor *c, const tensor *a, const tensor *b, int trans_a, int trans_b, float alpha,
                 float beta);
void cuda_add(tensor *y, const tensor *a, const tensor *b);
void cuda_mul(tensor *y, const tensor *a, const tensor *b);
void cuda_scale(tensor *y, const tensor *x, float s);
void cuda_axpy(tensor *y, const tensor *x, float a);
void cuda_convert(tensor *dst, const tensor *src);

#endif
