/*
 * The CUDA backend's op table: device memory on one stream, the scratch
 * buffers and the device error buffer that the op families share, and the
 * entry points of the op families (one .cu file each). ops_cuda()
 * initialises on first use and returns NULL (with the reason) when no GPU
 * is usable, so every command can fall back to the CPU backend or report
 * why it cannot.
 *
 * Built with GRPO_CUDA_EMU (tests only) the same file makes the emulated
 * table ops_cuda_emu(): host memory, kernels run by kernels/emu/.
 */
#include "cuda_common.cuh"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#ifdef GRPO_CUDA_EMU
#include "emu/cuda_emu_ops.h"
#endif

CUDA_NS_BEGIN

#ifndef GRPO_CUDA_EMU
cudaStream_t cuda_stream;
cublasHandle_t cuda_blas;
#endif

static int *err_dev;      /* int[5] on the device */
static int sync_each = 0; /* GRPO_CUDA_SYNC=1 */

/* ---- memory ------------------------------------------------------------------ */

#ifdef GRPO_CUDA_EMU
static void *cu_alloc(size_t n) {
    void *p = base_xmalloc_aligned(n ? n : 1);
    memset(p, 0, n ? n : 1);
    return p;
}
static void cu_free(void *p) { free(p); }
static void cu_upload(void *dst, const void *src, size_t n) {
    if (cuda_capturing()) base_die("cuda upload inside a graph capture (upload synchronises)");
    if (n) memmove(dst, src, n);
}
static void cu_download(void *dst, const void *src, size_t n) {
    cuda_check_errors();
    if (n) memmove(dst, src, n);
}
static void cu_copy(void *dst, const void *src, size_t n) {
    if (n) emu_host([=] { memmove(dst, src, n); });
}
static void cu_zero(void *p, size_t n) {
    if (n) emu_host([=] { memset(p, 0, n); });
}
static void cu_sync(void) { cuda_check_errors(); }
#else
static void *cu_alloc(size_t n) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, n ? n : 1);
    if (e != cudaSuccess) {
        size_t fr = 0, tot = 0;
        cudaGetLastError();
        cudaMemGetInfo(&fr, &tot);
        base_die("cuda alloc: %zu bytes: %s (%zu of %zu bytes free)", n, cudaGetErrorString(e), fr, tot);
    }
    CHECK_CUDA(cudaMemsetAsync(p, 0, n ? n : 1, cuda_stream));
    return p;
}
static void cu_free(void *p) {
    if (p) CHECK_CUDA(cudaFree(p));
}
static void cu_upload(void *dst, const void *src, size_t n) {
    if (cuda_capturing()) base_die("cuda upload inside a graph capture (upload synchronises)");
    if (!n) return;
    CHECK_CUDA(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, cuda_stream));
    CHECK_CUDA(cudaStreamSynchronize(cuda_stream)); /* the host buffer may change on return */
}
static void cu_download(void *dst, const void *src, size_t n) {
    if (n) CHECK_CUDA(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, cuda_stream));
    cuda_check_errors(); /* synchronises */
}
static void cu_copy(void *dst, const void *src, size_t n) {
    if (n) CHECK_CUDA(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, cuda_stream));
}
static void cu_zero(void *p, size_t n) {
    if (n) CHECK_CUDA(cudaMemsetAsync(p, 0, n, cuda_stream));
}
static void cu_sync(void) { cuda_check_errors(); }
#endif

/* ---- scratch ------------------------------------------------------------------ */

static void *scr_buf[SCR_COUNT];
static size_t scr_cap[SCR_COUNT];
static unsigned scr_gen;                  /* bumped when a buffer moves */
static void *scr_deferred[4 * SCR_COUNT]; /* old buffers replaced during a graph capture */
static int scr_ndeferred;

unsigned cuda_scratch_gen(void) { return scr_gen; }

/* Free the buffers replaced while a graph was captured (the capture has
 * ended: nothing recorded will run with them, its graph being stale). */
void cuda_scratch_release_deferred(void) {
#ifndef GRPO_CUDA_EMU
    if (scr_ndeferred) CHECK_CUDA(cudaStreamSynchronize(cuda_stream));
#endif
    for (int i = 0; i < scr_ndeferred; i++) {
#ifdef GRPO_CUDA_EMU
        free(scr_deferred[i]);
#else
        CHECK_CUDA(cudaFree(scr_deferred[i]));
#endif
    }
    scr_ndeferred = 0;
}

void *cuda_scratch(int slot, size_t bytes) {
    if (slot < 0 || slot >= SCR_COUNT) base_die("cuda_scratch: bad slot %d", slot);
    if (bytes > scr_cap[slot]) {
        size_t cap = bytes + bytes / 4 + 256;
        scr_gen++;
        if (cuda_capturing() && scr_buf[slot]) { /* no synchronisation now: free after the capture */
            if (scr_ndeferred == 4 * SCR_COUNT) base_die("cuda_scratch: too many buffers replaced in one capture");
            scr_deferred[scr_ndeferred++] = scr_buf[slot];
            scr_buf[slot] = NULL;
        }
#ifdef GRPO_CUDA_EMU
        free(scr_buf[slot]);
        scr_buf[slot] = base_xmalloc_aligned(cap);
#else
        if (scr_buf[slot]) {
            /* kernels queued earlier may still read it */
            CHECK_CUDA(cudaStreamSynchronize(cuda_stream));
            CHECK_CUDA(cudaFree(scr_buf[slot]));
        }
        scr_buf[slot] = cu_alloc(cap);
#endif
        scr_cap[slot] = cap;
    }
    return scr_buf[slot];
}

/* ---- the error buffer ------------------------------------------------------------ */

int *cuda_errbuf(void) { return err_dev; }

static const char *op_name(int op) {
    switch (op) {
    case CU_OP_GATHER:
        return "gather_rows";
    case CU_OP_EMBED_FWD:
        return "embedding_fwd";
    case CU_OP_EMBED_BWD:
        return "embedding_bwd";
    case CU_OP_ROPE:
        return "rope";
    case CU_OP_CACHE_WRITE:
        return "mla_cache_write";
    case CU_OP_DECODE:
        return "mla_decode";
    case CU_OP_PLAN:
        return "moe_plan";
    case CU_OP_COMBINE:
        return "moe_combine";
    case CU_OP_LMHEAD:
        return "lmhead";
    case CU_OP_ATTN:
        return "mla_attn";
    case CU_OP_MOE_GEMM:
        return "moe_matmul (offsets)";
    }
    return "?";
}
static const char *what_name(int w) {
    switch (w) {
    case CU_WHAT_INDEX:
        return "index";
    case CU_WHAT_SLOT:
        return "slot";
    case CU_WHAT_POSITION:
        return "position";
    case CU_WHAT_LENGTH:
        return "length";
    case CU_WHAT_EXPERT:
        return "expert";
    case CU_WHAT_TARGET:
        return "target";
    case CU_WHAT_PAGE:
        return "page";
    }
    return "value";
}

void cuda_check_errors(void) {
    if (cuda_capturing())
        base_die("cuda: a synchronising call (download, sync, sumsq, a host read of offsets) inside a graph capture");
    int e[5];
#ifdef GRPO_CUDA_EMU
    memcpy(e, err_dev, sizeof e);
#else
    CHECK_CUDA(cudaMemcpyAsync(e, err_dev, sizeof e, cudaMemcpyDeviceToHost, cuda_stream));
    CHECK_CUDA(cudaStreamSynchronize(cuda_stream));
#endif
    if (e[0]) base_die("cuda %s: %s %d at row %d is outside [0, %d)", op_name(e[0]), what_name(e[1]), e[3], e[2], e[4]);
}

void cuda_after_launch(const char *kernel) {
    if (cuda_capturing()) return; /* recorded, not run */
#ifdef GRPO_CUDA_EMU
    (void)kernel;
    cuda_check_errors();
#else
    if (sync_each) {
        cudaError_t e = cudaStreamSynchronize(cuda_stream);
        if (e != cudaSuccess) base_die("cuda: kernel %s failed: %s", kernel, cudaGetErrorString(e));
        cuda_check_errors();
    }
#endif
}

/* ---- shape checks ------------------------------------------------------------------ */

/* ---- the table ------------------------------------------------------------------------ */

static struct ops cuda_table;
#ifndef GRPO_CUDA_EMU
static int cuda_state; /* 0 untried, 1 ready, -1 unusable */
static char cuda_why[256];
#endif
static pthread_once_t cuda_once = PTHREAD_ONCE_INIT;

static void fill_table(void) {
#ifdef GRPO_CUDA_EMU
    cuda_table.name = "cuda-emu";
#else
    cuda_table.name = "cuda";
#endif
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
    cuda_table.gather_rows = cuda_gather_rows;
    cuda_table.rmsnorm_fwd = cuda_rmsnorm_fwd;
    cuda_table.rmsnorm_bwd = cuda_rmsnorm_bwd;
    cuda_table.rope_fwd = cuda_rope_fwd;
    cuda_table.rope_bwd = cuda_rope_bwd;
    cuda_table.mla_attn_fwd = cuda_mla_attn_fwd;
    cuda_table.mla_attn_bwd = cuda_mla_attn_bwd;
    cuda_table.mla_cache_write = cuda_mla_cache_write;
    cuda_table.mla_decode = cuda_mla_decode;
    cuda_table.moe_route = cuda_moe_route;
    cuda_table.moe_route_bwd = cuda_moe_route_bwd;
    cuda_table.moe_plan = cuda_moe_plan;
    cuda_table.moe_aux_fwd = cuda_moe_aux_fwd;
    cuda_table.moe_aux_bwd = cuda_moe_aux_bwd;
    cuda_table.moe_combine = cuda_moe_combine;
    cuda_table.moe_combine_bwd = cuda_moe_combine_bwd;
    cuda_table.moe_matmul = cuda_moe_matmul;
    cuda_table.moe_matmul_dw = cuda_moe_matmul_dw;
    cuda_table.swiglu_fwd = cuda_swiglu_fwd;
    cuda_table.swiglu_bwd = cuda_swiglu_bwd;
    cuda_table.embedding_fwd = cuda_embedding_fwd;
    cuda_table.embedding_bwd = cuda_embedding_bwd;
    cuda_table.lmhead_fwd = cuda_lmhead_fwd;
    cuda_table.lmhead_bwd = cuda_lmhead_bwd;
    cuda_table.sample = cuda_sample;
    cuda_table.sumsq = cuda_sumsq;
    cuda_table.adamw = cuda_adamw;
    const char *g = getenv("GRPO_CUDA_GRAPHS"); /* 0: no graphs (every step launched eagerly) */
    if (!g || strcmp(g, "0")) {
        cuda_table.graph_capture = cuda_graph_capture;
        cuda_table.graph_launch = cuda_graph_launch;
        cuda_table.graph_free = cuda_graph_free;
    }
}

static void cuda_init(void) {
    const char *s = getenv("GRPO_CUDA_SYNC");
    sync_each = s && *s && strcmp(s, "0");
#ifdef GRPO_CUDA_EMU
    err_dev = (int *)cu_alloc(5 * sizeof(int));
#else
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        snprintf(cuda_why, sizeof cuda_why, "no usable CUDA device (%s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0");
        cudaGetLastError(); /* clear the sticky error */
        cuda_state = -1;
        return;
    }
    /* one process per GPU: the local rank of an MPI job picks its device
     * (src/dist exports GRPO_LOCAL_RANK); a process that sees one device
     * (CUDA_VISIBLE_DEVICES set per rank, srun --gpus-per-task=1) uses it */
    const char *lr = getenv("GRPO_LOCAL_RANK");
    int dev = lr ? atoi(lr) : 0;
    if (n == 1) dev = 0;
    if (dev < 0 || dev >= n) {
        snprintf(cuda_why, sizeof cuda_why,
                 "local rank %d has no GPU of its own: this node shows %d devices (start at most %d processes per "
                 "node, one per GPU)", dev, n, n);
        cuda_state = -1;
        return;
    }
    CHECK_CUDA(cudaSetDevice(dev));
    CHECK_CUDA(cudaStreamCreateWithFlags(&cuda_stream, cudaStreamNonBlocking));
    CHECK_CUBLAS(cublasCreate(&cuda_blas));
    CHECK_CUBLAS(cublasSetStream(cuda_blas, cuda_stream));
    /* f32 GEMMs stay true f32 (no TF32): the float32 mode must match the
     * CPU reference tightly */
    CHECK_CUBLAS(cublasSetMathMode(cuda_blas, CUBLAS_DEFAULT_MATH));
    err_dev = (int *)cu_alloc(5 * sizeof(int));
    CHECK_CUDA(cudaStreamSynchronize(cuda_stream));
#endif
    fill_table();
#ifndef GRPO_CUDA_EMU
    cuda_state = 1;
#endif
}

CUDA_NS_END

#ifdef GRPO_CUDA_EMU
extern "C" const struct ops *ops_cuda_emu(void) {
    pthread_once(&grpo_emu::cuda_once, grpo_emu::cuda_init);
    return &grpo_emu::cuda_table;
}
#else
/* The module's entry (grpo-cuda.so): src/tensor/ops_cuda_load.c's
 * ops_cuda() loads the module and calls it. */
extern "C" const struct ops *ops_cuda_module(void) {
    pthread_once(&cuda_once, cuda_init);
    if (cuda_state != 1) {
        base_err_set(BASE_ERR_UNSUPPORTED, "%s", cuda_why);
        return NULL;
    }
    return &cuda_table;
}
#endif
