/*
 * matmul on the GPU through cuBLAS (strided batched GEMM, f32 accumulation).
 * Row-major C = op(A) op(B) is computed as column-major C^T = op(B)^T op(A)^T,
 * so A and B swap places and keep their own transpose flags.
 * Inputs F32, BF16 or F16 (A and B the same), output F32, BF16 or F16.
 *
 * Determinism: cuBLAS gives the same bits on every run for the same
 * problem on the same GPU model (atomics mode stays off, the default).
 * GRPO_CUDA_TF32=1 runs f32 GEMMs on TF32 tensor cores (a speed knob for
 * benchmarks; the parity and fixture tolerances assume true f32).
 *
 * Emulated build: the CPU backend's matmul, with 16-bit operands widened
 * to f32 and the result rounded to C's dtype (f32 accumulation, as cuBLAS
 * with CUBLAS_COMPUTE_32F).
 *
 * A stored weight as B (a frozen model: ops.h matmul): an F8_E4M3 B, or a
 * B whose dtype is not A's (bf16 weights under the f32 queries of the
 * absorbed decode), is first made a dense copy in A's dtype by one kernel
 * (wq_dense_kernel: e4m3 dequantised with its block scales and rounded to
 * bf16, cuda_common.cuh cuda_load_w), then multiplied as any B. The copy
 * lives in scratch (SCR_WQ), reused by the next GEMM in stream order.
 */
#include "cuda_common.cuh"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

CUDA_NS_BEGIN

static void check_dtypes(const tensor *c, const tensor *a, const tensor *b) {
    if (a->dtype != b->dtype)
        base_die("cuda matmul: A and B dtypes differ (%s, %s)", tensor_dtype_name(a->dtype),
                 tensor_dtype_name(b->dtype));
    for (int i = 0; i < 3; i++) {
        const tensor *t = i == 0 ? a : i == 1 ? b : c;
        if (t->dtype != TENSOR_F32 && t->dtype != TENSOR_BF16 && t->dtype != TENSOR_F16)
            base_die("cuda matmul: unsupported dtype %s", tensor_dtype_name(t->dtype));
    }
}

/* dst [nb, rows, cols] dense in dtype ddt = the stored weight src (strides
 * s0 between batches, s1 between rows, unit columns). */
__global__ void wq_dense_kernel(void *dst, int ddt, const void *src, int sdt, cu_qb q, int64_t nb, int64_t rows,
                                int64_t cols, int64_t s0, int64_t s1) {
    int64_t n = nb * rows * cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t c = i % cols, r = i / cols % rows, b = i / cols / rows;
        cuda_store(dst, ddt, i, cuda_load_w(src, sdt, b * s0 + r * s1 + c, q));
    }
}

/* b as a dense tensor of dtype dt (same shape) in SCR_WQ. */
static tensor stored_dense(const tensor *b, tensor_dtype dt) {
    if (b->ndim != 2 && b->ndim != 3) base_die("cuda matmul: a stored weight B must be 2-D or 3-D");
    if (b->stride[b->ndim - 1] != 1) base_die("cuda matmul: a stored weight B must have unit column stride");
    int64_t nb = b->ndim == 3 ? b->shape[0] : 1, rows = b->shape[b->ndim - 2], cols = b->shape[b->ndim - 1];
    int64_t s0 = b->ndim == 3 ? b->stride[0] : 0, s1 = b->stride[b->ndim - 2];
    void *buf = cuda_scratch(SCR_WQ, (size_t)(nb * rows * cols) * tensor_dtype_size(dt) + 16);
    tensor d = tensor_make(buf, dt, b->device, b->ndim, b->shape);
    if (nb * rows * cols > 0)
        CUDA_LAUNCH(wq_dense_kernel, cuda_blocks(nb * rows * cols, 256), 256, 0, buf, (int)dt, (const void *)b->data,
                    (int)b->dtype, cuda_qb(b), nb, rows, cols, s0, s1);
    return d;
}

#ifdef GRPO_CUDA_EMU

/* Rows of a 2-D or 3-D operand (its leading dims flattened), and the
 * element offset of row r. */
static int64_t n_rows(const tensor *t) { return t->ndim == 3 ? t->shape[0] * t->shape[1] : t->shape[0]; }
static int64_t row_off(const tensor *t, int64_t r) {
    if (t->ndim != 3) return r * t->stride[0];
    return r / t->shape[1] * t->stride[0] + r % t->shape[1] * t->stride[1];
}

/* A dense f32 copy of a (possibly strided, possibly 16-bit) operand. */
static tensor widen(const tensor *t, float *buf) {
    int64_t rows = n_rows(t), cols = t->shape[t->ndim - 1];
    for (int64_t r = 0; r < rows; r++) {
        int64_t off = row_off(t, r);
        for (int64_t j = 0; j < cols; j++)
            buf[r * cols + j] = cuda_load(t->data, t->dtype, off + j);
    }
    tensor w = tensor_make(buf, TENSOR_F32, TENSOR_CPU, t->ndim, t->shape);
    return w;
}

static void emu_gemm(tensor *c, const tensor *a, const tensor *b, int trans_a, int trans_b, float alpha, float beta) {
    if (a->dtype == TENSOR_F32 && c->dtype == TENSOR_F32) {
        ops_cpu()->matmul(c, a, b, trans_a, trans_b, alpha, beta);
        return;
    }
    int64_t na = tensor_numel(a), nb = tensor_numel(b), nc = tensor_numel(c);
    float *buf = (float *)cuda_scratch(SCR_EMU, (size_t)(na + nb + nc) * sizeof(float));
    tensor wa = widen(a, buf), wb = widen(b, buf + na), wc = widen(c, buf + na + nb);
    if (beta == 0.0f) memset(wc.data, 0, (size_t)nc * sizeof(float)); /* NaN in C does not propagate */
    ops_cpu()->matmul(&wc, &wa, &wb, trans_a, trans_b, alpha, beta);
    int64_t rows = n_rows(c), cols = c->shape[c->ndim - 1];
    for (int64_t r = 0; r < rows; r++) {
        int64_t off = row_off(c, r);
        for (int64_t j = 0; j < cols; j++)
            cuda_store(c->data, c->dtype, off + j, ((float *)wc.data)[r * cols + j]);
    }
}

/* The GEMM is host work in the emulator: run now, or recorded by a graph
 * capture with copies of the descriptors (like cuBLAS's captured launch). */
void cuda_matmul(tensor *c, const tensor *a, const tensor *b, int trans_a, int trans_b, float alpha, float beta) {
    tensor bd;
    if (b->dtype == TENSOR_F8_E4M3 || (b->dtype != a->dtype && b->dtype == TENSOR_BF16)) {
        ops_matmul_resolve(c, a, b, trans_a, trans_b); /* shapes first: die naming them */
        bd = stored_dense(b, a->dtype);
        b = &bd;
    }
    check_dtypes(c, a, b);
    ops_matmul_dims d = ops_matmul_resolve(c, a, b, trans_a, trans_b);
    if (d.m == 0 || d.n == 0) return;
    tensor C = *c, A = *a, B = *b;
    emu_host([=]() mutable { emu_gemm(&C, &A, &B, trans_a, trans_b, alpha, beta); });
}

#else

/* Read at every call (a getenv is cheap next to a GEMM launch), so a
 * program can switch it between phases (bench_gpu --variants). */
static int cuda_tf32(void) {
    const char *e = getenv("GRPO_CUDA_TF32");
    return e && *e && strcmp(e, "0");
}

static void check_int(const char *what, int64_t v) {
    if (v > INT_MAX) base_die("cuda matmul: %s %lld exceeds cuBLAS's int range", what, (long long)v);
}

static cudaDataType_t blas_type(tensor_dtype t) {
    switch (t) {
    case TENSOR_F32:
        return CUDA_R_32F;
    case TENSOR_BF16:
        return CUDA_R_16BF;
    case TENSOR_F16:
        return CUDA_R_16F;
    default:
        base_die("cuda matmul: unsupported dtype %s", tensor_dtype_name(t));
    }
}

void cuda_matmul(tensor *c, const tensor *a, const tensor *b, int trans_a, int trans_b, float alpha, float beta) {
    tensor bd;
    if (b->dtype == TENSOR_F8_E4M3 || (b->dtype != a->dtype && b->dtype == TENSOR_BF16)) {
        ops_matmul_resolve(c, a, b, trans_a, trans_b); /* shapes first: die naming them */
        bd = stored_dense(b, a->dtype);
        b = &bd;
    }
    check_dtypes(c, a, b);
    ops_matmul_dims d = ops_matmul_resolve(c, a, b, trans_a, trans_b);
    if (d.m == 0 || d.n == 0) return;
    check_int("M", d.m), check_int("N", d.n), check_int("K", d.k), check_int("batch", d.batch);
    check_int("lda", d.lda), check_int("ldb", d.ldb), check_int("ldc", d.ldc);
    /* f32 accumulation for every input type; f32 operands stay true f32
     * unless GRPO_CUDA_TF32=1 asks for TF32 tensor cores (10-bit mantissa
     * products: faster, outside the float32 mode's tolerances) */
    cublasComputeType_t ct =
        cuda_tf32() && a->dtype == TENSOR_F32 && b->dtype == TENSOR_F32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    CHECK_CUBLAS(cublasGemmStridedBatchedEx(
        cuda_blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, (int)d.n, (int)d.m,
        (int)d.k, &alpha, b->data, blas_type(b->dtype), (int)d.ldb, d.b_bstride, a->data, blas_type(a->dtype),
        (int)d.lda, d.a_bstride, &beta, c->data, blas_type(c->dtype), (int)d.ldc, d.c_bstride, (int)d.batch, ct,
        CUBLAS_GEMM_DEFAULT));
    cuda_after_launch("cublasGemmStridedBatchedEx");
}

#endif

CUDA_NS_END
