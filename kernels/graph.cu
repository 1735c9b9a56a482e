/*
 * CUDA graphs (ops.h graph_capture / graph_launch / graph_free): a piece of
 * device work, typically one decode step of the model, recorded once by
 * stream capture and replayed with one launch, which removes the per-kernel
 * launch cost (the decode step is ~25 small launches per layer).
 *
 * Capture runs the caller's function with the stream in capture mode
 * (relaxed: a scratch buffer may be allocated, never synchronised): every
 * kernel, copy, fill and cuBLAS GEMM it issues is recorded with its
 * arguments and pointers, nothing runs. So the caller must have put the
 * step's inputs in fixed device buffers first (uploads synchronise, which
 * capture forbids: cuda_check_errors and upload die inside a capture), and
 * must replay only while those pointers hold. The backend's own pointers
 * are its scratch buffers: a graph remembers the scratch generation it was
 * captured at, and graph_launch refuses (returns 1, nothing runs) once a
 * buffer has moved, so that the caller captures again. A capture during
 * which a scratch buffer grew is discarded (NULL): run the step eagerly
 * once first, which sizes the buffers.
 *
 * cuBLAS inside a capture gets an explicit workspace (cublasSetWorkspace),
 * so that it never allocates during capture.
 *
 * In the emulator (GRPO_CUDA_EMU) the same functions record launches and
 * host work (kernels/emu/cuda_emu.h) and replay them in order.
 */
#include "cuda_common.cuh"

#include <stdlib.h>

CUDA_NS_BEGIN

typedef struct {
#ifdef GRPO_CUDA_EMU
    void *rec;
#else
    cudaGraphExec_t exec;
#endif
    unsigned gen; /* cuda_scratch_gen() at capture */
} cu_graph;

#ifdef GRPO_CUDA_EMU
int cuda_capturing(void) { return emu_capturing(); }
#else
static int capturing;
int cuda_capturing(void) { return capturing; }
#define GRAPH_BLAS_WS ((size_t)32 << 20) /* cuBLAS's workspace for Hopper's largest kernels */
static void *blas_ws;
#endif

void *cuda_graph_capture(void (*fn)(void *), void *arg) {
    if (cuda_capturing()) base_die("cuda graph_capture inside a capture");
    unsigned g0 = cuda_scratch_gen();
#ifdef GRPO_CUDA_EMU
    emu_capture_begin();
    fn(arg);
    void *rec = emu_capture_end();
    cuda_scratch_release_deferred();
    if (cuda_scratch_gen() != g0) {
        emu_graph_free(rec);
        base_err_set(BASE_ERR_INVALID, "cuda graph: a scratch buffer grew during the capture (run the step once first)");
        return NULL;
    }
    cu_graph *g = (cu_graph *)base_xcalloc(1, sizeof *g);
    g->rec = rec;
#else
    if (!blas_ws) {
        CHECK_CUDA(cudaMalloc(&blas_ws, GRAPH_BLAS_WS));
        CHECK_CUBLAS(cublasSetWorkspace(cuda_blas, blas_ws, GRAPH_BLAS_WS));
    }
    CHECK_CUDA(cudaStreamBeginCapture(cuda_stream, cudaStreamCaptureModeRelaxed));
    capturing = 1;
    fn(arg);
    capturing = 0;
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(cuda_stream, &graph);
    cuda_scratch_release_deferred();
    if (e != cudaSuccess) {
        cudaGetLastError();
        base_err_set(BASE_ERR_INVALID, "cuda graph capture: %s", cudaGetErrorString(e));
        return NULL;
    }
    if (cuda_scratch_gen() != g0) {
        CHECK_CUDA(cudaGraphDestroy(graph));
        base_err_set(BASE_ERR_INVALID, "cuda graph: a scratch buffer grew during the capture (run the step once first)");
        return NULL;
    }
    cudaGraphExec_t exec;
    e = cudaGraphInstantiate(&exec, graph, 0);
    CHECK_CUDA(cudaGraphDestroy(graph));
    if (e != cudaSuccess) {
        cudaGetLastError();
        base_err_set(BASE_ERR_INVALID, "cuda graph instantiate: %s", cudaGetErrorString(e));
        return NULL;
    }
    cu_graph *g = (cu_graph *)base_xcalloc(1, sizeof *g);
    g->exec = exec;
#endif
    g->gen = g0;
    return g;
}

int cuda_graph_launch(void *p) {
    cu_graph *g = (cu_graph *)p;
    if (cuda_capturing()) base_die("cuda graph_launch inside a capture");
    if (g->gen != cuda_scratch_gen()) return 1; /* stale: a scratch buffer moved */
#ifdef GRPO_CUDA_EMU
    emu_graph_run(g->rec);
#else
    CHECK_CUDA(cudaGraphLaunch(g->exec, cuda_stream));
#endif
    cuda_after_launch("graph");
    return 0;
}

void cuda_graph_free(void *p) {
    cu_graph *g = (cu_graph *)p;
    if (!g) return;
#ifdef GRPO_CUDA_EMU
    emu_graph_free(g->rec);
#else
    CHECK_CUDA(cudaStreamSynchronize(cuda_stream)); /* a replay may still run */
    CHECK_CUDA(cudaGraphExecDestroy(g->exec));
#endif
    free(g);
}

CUDA_NS_END
