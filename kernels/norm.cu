/*
 * RMSNorm (spec §3.1, §3.11), row gather and the embedding on the GPU,
 * float32, following src/tensor/cpu/norm.c: the row sums of squares and
 * the backward's row dot products in double, the same float expressions
 * per element.
 *
 * Deterministic reductions over rows: rmsnorm_bwd's dw sums fixed chunks
 * of NORM_ROWS rows per column, then the chunks in order, in double as the
 * CPU (so the two agree to the last bit of the float); embedding_bwd
 * groups tokens by id with a stable sort and adds each id's rows in token
 * order (the CPU's order, so dtable gets the same bits).
 */
#include "cuda_common.cuh"

CUDA_NS_BEGIN

#define NORM_THREADS 256
#define NORM_ROWS 64

/* ---- gather / embedding forward ------------------------------------------------- */

/* Rows are copied as elements of T (float, or the 16-bit pattern of a
 * bf16: a gather never changes a value). */
template <class T>
__global__ void gather_kernel(T *dst, int64_t dld, const T *src, int64_t sld, const int32_t *idx, int64_t m, int64_t d,
                              int64_t nsrc, int *err, int op) {
    for (int64_t r = blockIdx.x; r < m; r += gridDim.x) {
        int32_t s = idx[r];
        if (s < 0 || s >= nsrc) {
            if (threadIdx.x == 0) cuda_flag(err, op, CU_WHAT_INDEX, r, s, nsrc);
            continue;
        }
        const T *sr = src + s * sld;
        T *dr = dst + r * dld;
        for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
            dr[j] = sr[j];
    }
}

static void gather(const char *op, int code, tensor *dst, const tensor *src, const tensor *idx) {
    (void)op; /* errors name gather_rows, as on the CPU */
    ops_check_gather_rows("cuda", dst, src, idx);
    int64_t m = dst->shape[0], d = dst->shape[1];
    if (!m || !d) return;
    if (dst->dtype == TENSOR_BF16)
        CUDA_LAUNCH(gather_kernel<uint16_t>, (unsigned)cu_min64(m, 65535), 128, 0, (uint16_t *)dst->data,
                    dst->stride[0], (const uint16_t *)src->data, src->stride[0], (const int32_t *)idx->data, m, d,
                    src->shape[0], cuda_errbuf(), code);
    else
        CUDA_LAUNCH(gather_kernel<float>, (unsigned)cu_min64(m, 65535), 128, 0, (float *)dst->data, dst->stride[0],
                    (const float *)src->data, src->stride[0], (const int32_t *)idx->data, m, d, src->shape[0],
                    cuda_errbuf(), code);
}

void cuda_gather_rows(tensor *dst, const tensor *src, const tensor *idx) {
    gather("gather_rows", CU_OP_GATHER, dst, src, idx);
}
/* A stored BF16 table into an f32 y (a frozen model's embedding): rows widened. */
__global__ void gather_widen_kernel(float *dst, int64_t dld, const uint16_t *src, int64_t sld, const int32_t *idx,
                                    int64_t m, int64_t d, int64_t nsrc, int *err, int op) {
    for (int64_t r = blockIdx.x; r < m; r += gridDim.x) {
        int32_t s = idx[r];
        if (s < 0 || s >= nsrc) {
            if (threadIdx.x == 0) cuda_flag(err, op, CU_WHAT_INDEX, r, s, nsrc);
            continue;
        }
        for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
            dst[r * dld + j] = cuda_load(src, TENSOR_BF16, s * sld + j);
    }
}

void cuda_embedding_fwd(tensor *y, const tensor *table, const tensor *ids) {
    if (table->dtype == y->dtype) {
        gather("embedding_fwd", CU_OP_EMBED_FWD, y, table, ids);
        return;
    }
    ops_check_embedding_fwd("cuda", y, table, ids);
    int64_t m = y->shape[0], d = y->shape[1];
    if (!m || !d) return;
    CUDA_LAUNCH(gather_widen_kernel, (unsigned)cu_min64(m, 65535), 128, 0, (float *)y->data, y->stride[0],
                (const uint16_t *)table->data, table->stride[0], (const int32_t *)ids->data, m, d, table->shape[0],
                cuda_errbuf(), CU_OP_EMBED_FWD);
}

/* ---- RMSNorm forward ------------------------------------------------------------------ */

/* y in dtype YT (TENSOR_F32 or TENSOR_BF16: the f32 value rounded once) */
template <int YT>
__global__ void rmsnorm_fwd_kernel(void *y, int64_t yld, float *rstd, const float *x, int64_t xld, const float *w,
                                   int64_t n, int64_t d, float eps) {
    __shared__ double red[32];
    for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
        const float *xi = x + i * xld;
        double ss = 0;
        for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
            ss += (double)xi[j] * xi[j];
        ss = block_sum(ss, red);
        float r = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
        /* every thread has read its x before the block sum's barriers; y
         * may alias x element by element (same dtype only: the checks) */
        for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
            cuda_store(y, YT, i * yld + j, w[j] * (xi[j] * r));
        if (rstd && threadIdx.x == 0) rstd[i] = r;
    }
}

void cuda_rmsnorm_fwd(tensor *y, tensor *rstd, const tensor *x, const tensor *w, float eps) {
    ops_check_rmsnorm_fwd("cuda", y, rstd, x, w);
    int64_t n = x->shape[0], d = x->shape[1];
    if (!n) return;
    if (y->dtype == TENSOR_BF16)
        CUDA_LAUNCH(rmsnorm_fwd_kernel<TENSOR_BF16>, (unsigned)cu_min64(n, 65535), NORM_THREADS, 0, y->data,
                    y->stride[0], rstd ? (float *)rstd->data : (float *)NULL, (const float *)x->data, x->stride[0],
                    (const float *)w->data, n, d, eps);
    else
        CUDA_LAUNCH(rmsnorm_fwd_kernel<TENSOR_F32>, (unsigned)cu_min64(n, 65535), NORM_THREADS, 0, y->data,
                    y->stride[0], rstd ? (float *)rstd->data : (float *)NULL, (const float *)x->data, x->stride[0],
                    (const float *)w->data, n, d, eps);
}

/* ---- RMSNorm backward ------------------------------------------------------------------- */

/* part[c, j] = sum over rows of chunk c of dy * x * rstd (rows in order),
 * each term rounded to float as on the CPU, the sum in double */
__global__ void rmsnorm_dw_part_kernel(double *part, const float *dy, int64_t gld, const float *x, int64_t xld,
                                       const float *rstd, int64_t n, int64_t d) {
    int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, c = blockIdx.y;
    if (j >= d) return;
    int64_t r0 = c * NORM_ROWS, r1 = r0 + NORM_ROWS < n ? r0 + NORM_ROWS : n;
    double s = 0.0;
    for (int64_t i = r0; i < r1; i++)
        s += (double)(dy[i * gld + j] * x[i * xld + j] * rstd[i]);
    part[c * d + j] = s;
}

/* dw[j] += the chunks in order, in double, rounded once */
__global__ void rmsnorm_dw_sum_kernel(float *dw, const double *part, int64_t nchunks, int64_t d) {
    int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (j >= d) return;
    double s = 0.0;
    for (int64_t c = 0; c < nchunks; c++)
        s += part[c * d + j];
    dw[j] = (float)((double)dw[j] + s);
}

__global__ void rmsnorm_dx_kernel(float *dx, int64_t dld, const float *dy, int64_t gld, const float *x, int64_t xld,
                                  const float *w, const float *rstd, int64_t n, int64_t d, int accumulate) {
    __shared__ double red[32];
    for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
        const float *xi = x + i * xld, *gi = dy + i * gld;
        double dot = 0;
        for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
            dot += (double)gi[j] * w[j] * xi[j];
        dot = block_sum(dot, red);
        float r = rstd[i];
        float c = (float)(dot / (double)d) * r * r * r;
        float *di = dx + i * dld;
        for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
            float v = r * gi[j] * w[j] - xi[j] * c;
            di[j] = accumulate ? di[j] + v : v;
        }
    }
}

void cuda_rmsnorm_bwd(tensor *dx, tensor *dw, const tensor *dy, const tensor *x, const tensor *w, const tensor *rstd,
                      int accumulate_dx) {
    ops_check_rmsnorm_bwd("cuda", dx, dw, dy, x, w, rstd);
    int64_t n = x->shape[0], d = x->shape[1];
    if (!n || !d) return;
    if (dw) {
        int64_t nch = (n + NORM_ROWS - 1) / NORM_ROWS;
        double *part = (double *)cuda_scratch(SCR_NORM, (size_t)(nch * d) * sizeof(double));
        dim3 g((unsigned)((d + NORM_THREADS - 1) / NORM_THREADS), (unsigned)nch);
        CUDA_LAUNCH(rmsnorm_dw_part_kernel, g, NORM_THREADS, 0, part, (const float *)dy->data, dy->stride[0],
                    (const float *)x->data, x->stride[0], (const float *)rstd->data, n, d);
        CUDA_LAUNCH(rmsnorm_dw_sum_kernel, (unsigned)((d + NORM_THREADS - 1) / NORM_THREADS), NORM_THREADS, 0,
                    (float *)dw->data, (const double *)part, nch, d);
    }
    CUDA_LAUNCH(rmsnorm_dx_kernel, (unsigned)cu_min64(n, 65535), NORM_THREADS, 0, (float *)dx->data, dx->stride[0],
                (const float *)dy->data, dy->stride[0], (const float *)x->data, x->stride[0], (const float *)w->data,
                (const float *)rstd->data, n, d, accumulate_dx);
}

/* ---- embedding backward ------------------------------------------------------------------ */

/* keys[i] = ids[i], or v for an id outside [0, v) (flagged by the run
 * kernel); tok[i] = i. */
__global__ void embed_keys_kernel(uint32_t *keys, int32_t *tok, const int32_t *ids, int64_t n, int64_t v) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int32_t id = ids[i];
        keys[i] = id >= 0 && id < v ? (uint32_t)id : (uint32_t)v;
        tok[i] = (int32_t)i;
    }
}

/* Block per sorted position that starts a run of one id: adds the run's
 * rows of dy, in token order, to the id's row. */
__global__ void embed_bwd_kernel(float *dt, int64_t tld, const float *dy, int64_t gld, const uint32_t *keys,
                                 const int32_t *tok, const int32_t *ids, int64_t n, int64_t d, int64_t v, int *err) {
    for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
        uint32_t k = keys[i];
        if (i > 0 && keys[i - 1] == k) continue;
        if ((int64_t)k >= v) {
            if (threadIdx.x == 0) cuda_flag(err, CU_OP_EMBED_BWD, CU_WHAT_INDEX, tok[i], ids[tok[i]], v);
            continue;
        }
        float *row = dt + (int64_t)k * tld;
        for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
            float s = row[j];
            for (int64_t r = i; r < n && keys[r] == k; r++)
                s += dy[tok[r] * gld + j];
            row[j] = s;
        }
    }
}

void cuda_embedding_bwd(tensor *dtable, const tensor *dy, const tensor *ids) {
    ops_check_embedding_bwd("cuda", dtable, dy, ids);
    int64_t n = dy->shape[0], d = dy->shape[1], v = dtable->shape[0];
    if (!n || !d) return;
    /* keys and token order in the sampler's scratch (not in use during a
     * backward); the sort itself uses SCR_SORT_* */
    char *buf = (char *)cuda_scratch(SCR_SAMPLE, (size_t)n * 8);
    uint32_t *keys = (uint32_t *)buf;
    int32_t *tok = (int32_t *)(buf + (size_t)n * 4);
    CUDA_LAUNCH(embed_keys_kernel, cuda_blocks(n, 256), 256, 0, keys, tok, (const int32_t *)ids->data, n, v);
    int bits = 1; /* keys run to v inclusive */
    while (bits < 32 && ((int64_t)1 << bits) <= v)
        bits++;
    cuda_sort_pairs(keys, tok, n, bits);
    CUDA_LAUNCH(embed_bwd_kernel, (unsigned)cu_min64(n, 65535), 128, 0, (float *)dtable->data, dtable->stride[0],
                (const float *)dy->data, dy->stride[0], (const uint32_t *)keys, (const int32_t *)tok,
                (const int32_t *)ids->data, n, d, v, cuda_errbuf());
}

CUDA_NS_END
