/*
 * The routed experts' grouped GEMM (moe_matmul, moe_matmul_dw) on the GPU.
 *
 * moe_matmul, y[rows of e] = alpha x[rows of e] op(w[e]) + beta y, two paths:
 *   - few rows (decode: a handful of tokens per expert): one launch of a
 *     grouped tiled kernel that reads the offsets on the device. Block
 *     (tile, n-tile): the tile index maps to (expert, MG_BM-row tile)
 *     through a prefix of per-expert tile counts computed on the device, so
 *     there is no host synchronisation and every expert's weights are read
 *     once per row tile (decode is bound by reading the weights);
 *   - many rows (training, prefill): the offsets are downloaded (one
 *     synchronisation) and each expert's rows go through cuBLAS.
 * The switch is on the rows R (known on the host): R <= MG_SMALL_ROWS takes
 * the kernel. GRPO_CUDA_MOE_PATH=kernel|blas forces one path (tests run
 * both; benchmarks compare them).
 *
 * moe_matmul_dw always downloads the offsets and runs one cuBLAS GEMM per
 * expert (dw[e] += alpha dy_e^T x_e): it only occurs in training, where R
 * is large.
 *
 * Every output element sums in one fixed order in both paths: the same
 * bits on every run (a row's bits may differ between the two paths).
 */
#include "cuda_common.cuh"

#include <stdlib.h>
#include <string.h>

CUDA_NS_BEGIN

#define MG_BM 16
#define MG_BN 64
#define MG_BK 32
#define MG_THREADS 256
#define MG_SMALL_ROWS 4096

/* tiles[e] = prefix of ceil(rows_e / MG_BM); tiles[E] the total. Flags
 * offsets that do not run from 0 to R without decreasing. One thread:
 * E is small. */
__global__ void mg_tiles_kernel(int32_t *tiles, const int32_t *off, int64_t e, int64_t r, int *err) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    int32_t t = 0;
    if (off[0] != 0) cuda_flag(err, CU_OP_MOE_GEMM, CU_WHAT_INDEX, 0, off[0], 1);
    if (off[e] != r) cuda_flag(err, CU_OP_MOE_GEMM, CU_WHAT_INDEX, e, off[e], r + 1);
    for (int64_t i = 0; i < e; i++) {
        tiles[i] = t;
        int32_t n = off[i + 1] - off[i];
        if (n < 0) {
            cuda_flag(err, CU_OP_MOE_GEMM, CU_WHAT_INDEX, i + 1, off[i + 1], off[i] + 1);
            n = 0;
        }
        t += (n + MG_BM - 1) / MG_BM;
    }
    tiles[e] = t;
}

typedef struct {
    float *y;
    const void *x, *w; /* x: F32 or BF16 (XT); w: XT, or a stored BF16 / F8 weight (WT) */
    cu_qb wq;          /* w's block scales (F8) */
    const int32_t *off, *tiles;
    int64_t yld, xld, ws0, ws1; /* row strides; w strides of dims 0 and 1 */
    int64_t e, n, k;
    int trans_w;
    float alpha, beta;
} mg_args;

/* XT: the dtype of x (TENSOR_F32 or TENSOR_BF16), WT: w's (XT, or a stored
 * BF16 / F8_E4M3 weight: cuda_load_w), loaded as f32 into shared memory;
 * products and sums in f32. */
template <int XT, int WT> __global__ void __launch_bounds__(MG_THREADS) mg_kernel(mg_args a) {
    __shared__ float xs[MG_BM][MG_BK + 1];
    __shared__ float wsh[MG_BK][MG_BN + 1];
    int64_t tile = blockIdx.x, n0 = blockIdx.y * (int64_t)MG_BN;
    if (tile >= a.tiles[a.e]) return; /* the grid is sized for the worst case */
    int64_t lo = 0, hi = a.e;         /* tiles[lo] <= tile < tiles[hi] */
    while (hi - lo > 1) {
        int64_t mid = (lo + hi) / 2;
        if (a.tiles[mid] <= tile)
            lo = mid;
        else
            hi = mid;
    }
    int64_t ex = lo; /* tiles[ex] <= tile < tiles[ex + 1]: expert ex has rows */
    int64_t r0 = a.off[ex] + (tile - a.tiles[ex]) * MG_BM, r1 = a.off[ex + 1];
    int64_t nr = r1 - r0 < MG_BM ? r1 - r0 : MG_BM;
    int64_t wo = ex * a.ws0; /* expert ex's first element in w */
    int tid = threadIdx.x, tx = tid % MG_BN, ty = tid / MG_BN; /* rows ty*4 .. ty*4+3, column tx */
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t k0 = 0; k0 < a.k; k0 += MG_BK) {
        int64_t kb = a.k - k0 < MG_BK ? a.k - k0 : MG_BK;
        for (int i = tid; i < MG_BM * MG_BK; i += MG_THREADS) {
            int m = i / MG_BK, kk = i % MG_BK;
            xs[m][kk] = m < nr && kk < kb ? cuda_load(a.x, XT, (r0 + m) * a.xld + k0 + kk) : 0.0f;
        }
        for (int i = tid; i < MG_BK * MG_BN; i += MG_THREADS) {
            int kk, j;
            if (a.trans_w)
                kk = i % MG_BK, j = i / MG_BK; /* w[e][n][k]: k fastest in memory */
            else
                kk = i / MG_BN, j = i % MG_BN; /* w[e][k][n]: n fastest */
            float v = 0.0f;
            if (kk < kb && n0 + j < a.n)
                v = cuda_load_w(a.w, WT, wo + (a.trans_w ? (n0 + j) * a.ws1 + k0 + kk : (k0 + kk) * a.ws1 + n0 + j), a.wq);
            wsh[kk][j] = v;
        }
        __syncthreads();
        for (int kk = 0; kk < kb; kk++) {
            float wv = wsh[kk][tx];
#pragma unroll
            for (int m = 0; m < 4; m++)
                acc[m] += xs[ty * 4 + m][kk] * wv;
        }
        __syncthreads();
    }
    if (n0 + tx >= a.n) return;
    for (int m = 0; m < 4; m++) {
        int64_t row = ty * 4 + m;
        if (row >= nr) break;
        float *yp = a.y + (r0 + row) * a.yld + n0 + tx;
        *yp = a.beta == 0.0f ? a.alpha * acc[m] : a.alpha * acc[m] + a.beta * *yp;
    }
}

/* 0 auto, 1 kernel, 2 blas; read at every call (bench_gpu --variants
 * switches it between phases). */
static int moe_path(void) {
    const char *s = getenv("GRPO_CUDA_MOE_PATH");
    return s && !strcmp(s, "kernel") ? 1 : s && !strcmp(s, "blas") ? 2 : 0;
}

/* Expert e's [a, b] slice of w [E, a, b]. */
static tensor expert_w(const tensor *w, int64_t e) {
    tensor r = *w;
    r.ndim = 2;
    r.data = (char *)w->data + e * w->stride[0] * (int64_t)tensor_dtype_size(w->dtype);
    r.shape[0] = w->shape[1], r.shape[1] = w->shape[2];
    r.stride[0] = w->stride[1], r.stride[1] = 1;
    return r;
}
static tensor rows_of(const tensor *t, int64_t r0, int64_t n) {
    tensor r = *t;
    r.data = (char *)t->data + r0 * t->stride[0] * (int64_t)tensor_dtype_size(t->dtype);
    r.shape[0] = n;
    return r;
}

/* The offsets on the host (synchronising), checked as the CPU checks them. */
static int32_t *host_offsets(const char *op, const tensor *offsets, int64_t e, int64_t r) {
    int32_t *h = (int32_t *)malloc((size_t)(e + 1) * sizeof(int32_t));
    if (!h) base_die("cuda %s: out of memory", op);
#ifdef GRPO_CUDA_EMU
    cuda_check_errors();
    memcpy(h, offsets->data, (size_t)(e + 1) * sizeof(int32_t));
#else
    CHECK_CUDA(
        cudaMemcpyAsync(h, offsets->data, (size_t)(e + 1) * sizeof(int32_t), cudaMemcpyDeviceToHost, cuda_stream));
    cuda_check_errors(); /* synchronises */
#endif
    if (h[0] != 0 || h[e] != r)
        base_die("cuda %s: offsets must run from 0 to the %lld rows (got %d .. %d)", op, (long long)r, h[0], h[e]);
    for (int64_t i = 0; i < e; i++)
        if (h[i + 1] < h[i]) base_die("cuda %s: offsets decrease at expert %lld", op, (long long)i);
    return h;
}

void cuda_moe_matmul(tensor *y, const tensor *x, const tensor *w, const tensor *offsets, int trans_w, float alpha,
                     float beta) {
    const char *op = "moe_matmul";
    ops_check_moe_matmul("cuda", y, x, w, offsets, trans_w);
    int64_t r = x->shape[0], k = x->shape[1], e = w->shape[0], n = y->shape[1];
    if (e < 1) base_die("cuda %s: no experts", op);
    if (!r || !n) return;
    int path = moe_path();
    if (path == 1 || (path == 0 && r <= MG_SMALL_ROWS)) {
        int32_t *tiles = (int32_t *)cuda_scratch(SCR_MOE, (size_t)(e + 1) * sizeof(int32_t));
        CUDA_LAUNCH(mg_tiles_kernel, 1, 32, 0, tiles, (const int32_t *)offsets->data, e, r, cuda_errbuf());
        mg_args a;
        a.y = (float *)y->data, a.x = x->data, a.w = w->data, a.wq = cuda_qb(w);
        a.off = (const int32_t *)offsets->data, a.tiles = tiles;
        a.yld = y->stride[0], a.xld = x->stride[0], a.ws0 = w->stride[0], a.ws1 = w->stride[1];
        a.e = e, a.n = n, a.k = k, a.trans_w = trans_w, a.alpha = alpha, a.beta = beta;
        dim3 grid((unsigned)((r + MG_BM - 1) / MG_BM + e), (unsigned)((n + MG_BN - 1) / MG_BN));
        int xb = x->dtype == TENSOR_BF16;
#define MG_KERNEL(X, W) mg_kernel<X, W>
        if (w->dtype == TENSOR_F8_E4M3) {
            if (xb) CUDA_LAUNCH(MG_KERNEL(TENSOR_BF16, TENSOR_F8_E4M3), grid, MG_THREADS, 0, a);
            else CUDA_LAUNCH(MG_KERNEL(TENSOR_F32, TENSOR_F8_E4M3), grid, MG_THREADS, 0, a);
        } else if (xb) {
            CUDA_LAUNCH(MG_KERNEL(TENSOR_BF16, TENSOR_BF16), grid, MG_THREADS, 0, a);
        } else if (w->dtype == TENSOR_BF16) {
            CUDA_LAUNCH(MG_KERNEL(TENSOR_F32, TENSOR_BF16), grid, MG_THREADS, 0, a);
        } else {
            CUDA_LAUNCH(MG_KERNEL(TENSOR_F32, TENSOR_F32), grid, MG_THREADS, 0, a);
        }
#undef MG_KERNEL
        return;
    }
    int32_t *h = host_offsets(op, offsets, e, r);
    for (int64_t i = 0; i < e; i++) {
        int64_t nr = h[i + 1] - h[i];
        if (!nr) continue;
        tensor ye = rows_of(y, h[i], nr), xe = rows_of(x, h[i], nr), we = expert_w(w, i);
        cuda_matmul(&ye, &xe, &we, 0, trans_w, alpha, beta);
    }
    free(h);
}

void cuda_moe_matmul_dw(tensor *dw, const tensor *dy, const tensor *x, const tensor *offsets, float alpha) {
    const char *op = "moe_matmul_dw";
    ops_check_moe_matmul_dw("cuda", dw, dy, x, offsets);
    int64_t r = x->shape[0], e = dw->shape[0];
    if (e < 1) base_die("cuda %s: no experts", op);
    if (!r) return;
    int32_t *h = host_offsets(op, offsets, e, r);
    for (int64_t i = 0; i < e; i++) {
        int64_t nr = h[i + 1] - h[i];
        if (!nr) continue;
        tensor dye = rows_of(dy, h[i], nr), xe = rows_of(x, h[i], nr), dwe = expert_w(dw, i);
        cuda_matmul(&dwe, &dye, &xe, 1, 0, alpha, 1.0f);
    }
    free(h);
}

CUDA_NS_END
