/*
 * matmul on the GPU through cuBLAS (strided batched GEMM, f32 accumulation).
 * Row-major C = op(A) op(B) is computed as column-major C^T = op(B)^T op(A)^T,
 * so A and B swap places and keep their own transpose flags.
 * Inputs F32 or BF16 (both the same), output F32 or BF16.
 */
#include "cuda_common.cuh"

static cudaDataType_t blas_type(tensor_dtype t) {
    switch (t) {
    case TENSOR_F32: return CUDA_R_32F;
    case TENSOR_BF16: return CUDA_R_16BF;
    case TENSOR_F16: return CUDA_R_16F;
    default: base_die("cuda matmul: unsupported dtype %s", tensor_dtype_name(t));
    }
}

void cuda_matmul(tensor *c, const tensor *a, const tensor *b, int trans_a, int trans_b, float alpha,
                 float beta) {
    if (a->dtype != b->dtype)
        base_die("cuda matmul: A and B dtypes differ (%s, %s)", tensor_dtype_name(a->dtype),
                 tensor_dtype_name(b->dtype));
    ops_matmul_dims d = ops_matmul_resolve(c, a, b, trans_a, trans_b);
    if (d.m == 0 || d.n == 0) return;
    /* true f32 accumulation for every input type (no TF32 shortcuts) */
    cublasComputeType_t ct = CUBLAS_COMPUTE_32F;
    CHECK_CUBLAS(cublasGemmStridedBatchedEx(
        cuda_blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
        (int)d.n, (int)d.m, (int)d.k, &alpha, b->data, blas_type(b->dtype), (int)d.ldb, d.b_bstride,
        a->data, blas_type(a->dtype), (int)d.lda, d.a_bstride, &beta, c->data, blas_type(c->dtype),
        (int)d.ldc, d.c_bstride, (int)d.batch, ct, CUBLAS_GEMM_DEFAULT));
}
