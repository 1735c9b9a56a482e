/*
 * The CUDA backend's op table: device memory on one stream, and the compute
 * ops of the other kernels/*.cu files. ops_cuda() initialises on first use
 * and returns NULL (with the reason) when no GPU is usable, so every command
 * can fall back to the CPU backend or report why it cannot.
 */
#include "cuda_common.cuh"

#include <pthread.h>

cudaStream_t cuda_stream;
cublasHandle_t cuda_blas;

static void *cu_alloc(size_t n) {
    void *p = NULL;
    CHECK_CUDA(cudaMalloc(&p, n ? n : 1));
    CHECK_CUDA(cudaMemsetAsync(p, 0, n ? n : 1, cuda_stream));
    return p;
}
static void cu_free(void *p) {
    if (p) CHECK_CUDA(cudaFree(p));
}
static void cu_upload(void *dst, const void *src, size_t n) {
    CHECK_CUDA(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, cuda_stream));
    CHECK_CUDA(cudaStreamSynchronize(cuda_stream));
}
static void cu_download(void *dst, const void *src, size_t n) {
    CHECK_CUDA(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, cuda_stream));
    CHECK_CUDA(cudaStreamSynchronize(cuda_stream));
}
static void cu_copy(void *dst, const void *src, size_t n) {
    CHECK_CUDA(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, cuda_stream));
}
static void cu_zero(void *p, size_t n) { CHECK_CUDA(cudaMemsetAsync(p, 0, n, cuda_stream)); }
static void cu_sync(void) { CHECK_CUDA(cudaStreamSynchronize(cuda_stream)); }

static struct ops cuda_table;
static int cuda_state; /* 0 untried, 1 ready, -1 unusable */
static char cuda_why[256];
static pthread_once_t cuda_once = PTHREAD_ONCE_INIT;

static void cuda_init(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        snprintf(cuda_why, sizeof cuda_why, "no usable CUDA device (%s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0");
        cudaGetLastError(); /* clear the sticky error */
        cuda_state = -1;
        return;
    }
    CHECK_CUDA(cudaSetDevice(0));
    CHECK_CUDA(cudaStreamCreateWithFlags(&cuda_stream, cudaStreamNonBlocking));
    CHECK_CUBLAS(cublasCreate(&cuda_blas));
    CHECK_CUBLAS(cublasSetStream(cuda_blas, cuda_stream));
    /* f32 GEMMs stay true f32 (no TF32): the float32 mode must match the
     * CPU reference tightly */
    CHECK_CUBLAS(cublasSetMathMode(cuda_blas, CUBLAS_DEFAULT_MATH));
    cuda_table.name = "cuda";
    cuda_table.device = TENSOR_CUDA;
    cuda_table.alloc = cu_alloc;
    cuda_table.free = cu_free;
    cuda_table.upload = cu_upload;
    cuda_table.download = cu_download;
    cuda_table.copy = cu_copy;
    cuda_table.zero = cu_zero;
    cuda_table.sync = cu_sync;
    cuda_table.matmul = cuda_matmul;
    cuda_table.add = cuda_add;
    cuda_table.mul = cuda_mul;
    cuda_table.scale = cuda_scale;
    cuda_table.axpy = cuda_axpy;
    cuda_table.convert = cuda_convert;
    cuda_state = 1;
}

extern "C" const struct ops *ops_cuda(void) {
    pthread_once(&cuda_once, cuda_init);
    if (cuda_state != 1) {
        base_err_set(BASE_ERR_UNSUPPORTED, "%s", cuda_why);
        return NULL;
    }
    return &cuda_table;
}
