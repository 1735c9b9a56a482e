/*
 * Elementwise ops and dtype conversion on the GPU. Any float dtype in and
 * out; arithmetic in f32. Grid-stride loops over contiguous buffers.
 */
#include "cuda_common.cuh"

CUDA_NS_BEGIN

enum { EW_ADD, EW_MUL };

__global__ void ew_binary_kernel(void *y, int yt, const void *a, int at, const void *b, int bt, int64_t n, int op) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float x = cuda_load(a, at, i), z = cuda_load(b, bt, i);
        cuda_store(y, yt, i, op == EW_ADD ? x + z : x * z);
    }
}

/* y = s*x + t*y (axpy: s = a, t = 1; scale: s, t = 0) */
__global__ void ew_axpby_kernel(void *y, int yt, const void *x, int xt, float s, float t, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = s * cuda_load(x, xt, i);
        if (t != 0.0f) v += t * cuda_load(y, yt, i);
        cuda_store(y, yt, i, v);
    }
}

/* dst = src converted (no arithmetic: a multiply by 1 would turn -0 into
 * -0 anyway, but keep the conversion a pure load/store) */
__global__ void ew_convert_kernel(void *y, int yt, const void *x, int xt, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        cuda_store(y, yt, i, cuda_load(x, xt, i));
}

/* i64 -> i64 and i32 -> i32 must not pass through float */
__global__ void ew_copy_bytes_kernel(unsigned char *y, const unsigned char *x, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = x[i];
}

static void binary(const char *name, tensor *y, const tensor *a, const tensor *b, int op) {
    ops_check_same_shape(name, y, a);
    ops_check_same_shape(name, y, b);
    cuda_need_contig(name, "y", y), cuda_need_contig(name, "a", a), cuda_need_contig(name, "b", b);
    int64_t n = tensor_numel(y);
    if (!n) return;
    CUDA_LAUNCH(ew_binary_kernel, cuda_blocks(n, 256), 256, 0, y->data, (int)y->dtype, a->data, (int)a->dtype, b->data,
                (int)b->dtype, n, op);
}

void cuda_add(tensor *y, const tensor *a, const tensor *b) { binary("add", y, a, b, EW_ADD); }
void cuda_mul(tensor *y, const tensor *a, const tensor *b) { binary("mul", y, a, b, EW_MUL); }

static void axpby(const char *name, tensor *y, const tensor *x, float s, float t) {
    ops_check_same_shape(name, y, x);
    cuda_need_contig(name, "y", y), cuda_need_contig(name, "x", x);
    int64_t n = tensor_numel(y);
    if (!n) return;
    CUDA_LAUNCH(ew_axpby_kernel, cuda_blocks(n, 256), 256, 0, y->data, (int)y->dtype, x->data, (int)x->dtype, s, t, n);
}

void cuda_scale(tensor *y, const tensor *x, float s) { axpby("scale", y, x, s, 0.0f); }
void cuda_axpy(tensor *y, const tensor *x, float a) { axpby("axpy", y, x, a, 1.0f); }

void cuda_convert(tensor *dst, const tensor *src) {
    ops_check_same_shape("convert", dst, src);
    cuda_need_contig("convert", "dst", dst), cuda_need_contig("convert", "src", src);
    int64_t n = tensor_numel(dst);
    if (!n) return;
    if (dst->dtype == src->dtype) {
        int64_t bytes = (int64_t)tensor_nbytes(dst);
        CUDA_LAUNCH(ew_copy_bytes_kernel, cuda_blocks(bytes, 256), 256, 0, (unsigned char *)dst->data,
                    (const unsigned char *)src->data, bytes);
        return;
    }
    CUDA_LAUNCH(ew_convert_kernel, cuda_blocks(n, 256), 256, 0, dst->data, (int)dst->dtype, src->data, (int)src->dtype,
                n);
}

CUDA_NS_END
