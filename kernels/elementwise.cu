/*
 * Elementwise ops and dtype conversion on the GPU. Any float dtype in and
 * out; arithmetic in f32. Grid-stride loops over contiguous buffers.
 */
#include "cuda_common.cuh"

enum { EW_ADD, EW_MUL };

__global__ void ew_binary_kernel(void *y, int yt, const void *a, int at, const void *b, int bt,
                                 int64_t n, int op) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float x = cuda_load(a, at, i), z = cuda_load(b, bt, i);
        cuda_store(y, yt, i, op == EW_ADD ? x + z : x * z);
    }
}

/* y = s*x + t*y (axpy: s = a, t = 1; scale: s, t = 0) */
__global__ void ew_axpby_kernel(void *y, int yt, const void *x, int xt, float s, float t, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = s * cuda_load(x, xt, i);
        if (t != 0.0f) v += t * cuda_load(y, yt, i);
        cuda_store(y, yt, i, v);
    }
}

static void need_contig(const char *op, const tensor *t) {
    if (!tensor_is_contiguous(t)) base_die("cuda %s: contiguous tensors only", op);
}

static void binary(const char *name, tensor *y, const tensor *a, const tensor *b, int op) {
    ops_check_same_shape(name, y, a);
    ops_check_same_shape(name, y, b);
    need_contig(name, y), need_contig(name, a), need_contig(name, b);
    int64_t n = tensor_numel(y);
    if (!n) return;
    ew_binary_kernel<<<cuda_blocks(n, 256), 256, 0, cuda_stream>>>(y->data, y->dtype, a->data, a->dtype,
                                                                   b->data, b->dtype, n, op);
    CHECK_LAUNCH();
}

void cuda_add(tensor *y, const tensor *a, const tensor *b) { binary("add", y, a, b, EW_ADD); }
void cuda_mul(tensor *y, const tensor *a, const tensor *b) { binary("mul", y, a, b, EW_MUL); }

static void axpby(const char *name, tensor *y, const tensor *x, float s, float t) {
    ops_check_same_shape(name, y, x);
    need_contig(name, y), need_contig(name, x);
    int64_t n = tensor_numel(y);
    if (!n) return;
    ew_axpby_kernel<<<cuda_blocks(n, 256), 256, 0, cuda_stream>>>(y->data, y->dtype, x->data, x->dtype,
                                                                  s, t, n);
    CHECK_LAUNCH();
}

void cuda_scale(tensor *y, const tensor *x, float s) { axpby("scale", y, x, s, 0.0f); }
void cuda_axpy(tensor *y, const tensor *x, float a) { axpby("axpy", y, x, a, 1.0f); }
void cuda_convert(tensor *dst, const tensor *src) { axpby("convert", dst, src, 1.0f, 0.0f); }
