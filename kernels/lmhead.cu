/*
 * The LM head with log-softmax, entropy and their backward in vocabulary
 * chunks (spec §3.10) on the GPU, as src/tensor/cpu/lmhead.c: rows in
 * blocks of R and the vocabulary in chunks of C (ws is [R, C]); each chunk
 * z = scale x W_c^T is one cuBLAS GEMM into ws, then a kernel updates the
 * per-row running statistics in double, m (max), S0 = sum e^(z-m),
 * S1 = sum e^(z-m) z:
 *   lse = m + log S0,  H = lse - S1 / S0,  logp = z[target] - lse.
 * The backward recomputes each chunk, turns it into dz in place and feeds
 * two GEMMs: dx (+)= scale dz W_c, dW_c += scale dz^T x. Never [N, V].
 *
 * Row statistics are block reductions with a fixed tree: deterministic.
 */
#include "cuda_common.cuh"

CUDA_NS_BEGIN

#define LM_THREADS 256

/* ws[0:rb, 0:cb] = scale * x[r0:r0+rb] @ w[v0:v0+cb]^T */
static tensor chunk_logits(tensor *ws, const tensor *x, const tensor *w, int64_t r0, int64_t rb, int64_t v0, int64_t cb,
                           float scale) {
    tensor z = *ws, xb = *x, wb = *w;
    z.shape[0] = rb;
    z.shape[1] = cb;
    xb.data = (char *)x->data + r0 * x->stride[0] * (int64_t)tensor_dtype_size(x->dtype);
    xb.shape[0] = rb;
    wb.data = (char *)w->data + v0 * w->stride[0] * (int64_t)tensor_dtype_size(w->dtype);
    wb.shape[0] = cb;
    cuda_matmul(&z, &xb, &wb, 0, 1, scale, 0.0f);
    return z;
}

/* Per-row statistics: st[4 * i + 0..3] = m, S0, S1, z[target]. */
__global__ void lm_init_kernel(double *st, int64_t rb) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rb; i += (int64_t)gridDim.x * blockDim.x) {
        st[4 * i + 0] = -INFINITY;
        st[4 * i + 1] = 0.0;
        st[4 * i + 2] = 0.0;
        st[4 * i + 3] = 0.0;
    }
}

__global__ void lm_stats_kernel(double *st, const float *z, int64_t zld, int64_t rb, int64_t cb, const int32_t *tgt,
                                int64_t r0, int64_t v0) {
    __shared__ float redf[32];
    __shared__ double redd[32];
    for (int64_t i = blockIdx.x; i < rb; i += gridDim.x) {
        const float *zi = z + i * zld;
        float bm = -INFINITY;
        for (int64_t j = threadIdx.x; j < cb; j += blockDim.x)
            bm = zi[j] > bm ? zi[j] : bm;
        bm = block_max(bm, redf);
        double mo = st[4 * i], m = mo > (double)bm ? mo : (double)bm;
        double s0 = 0, s1 = 0;
        for (int64_t j = threadIdx.x; j < cb; j += blockDim.x) {
            double e = exp((double)zi[j] - m);
            s0 += e;
            s1 += e * zi[j];
        }
        s0 = block_sum(s0, redd);
        s1 = block_sum(s1, redd);
        if (threadIdx.x == 0) {
            double corr = mo == -INFINITY ? 0.0 : exp(mo - m);
            st[4 * i + 1] = st[4 * i + 1] * corr + s0;
            st[4 * i + 2] = st[4 * i + 2] * corr + s1;
            st[4 * i] = m;
            int32_t t = tgt[r0 + i];
            if (t >= v0 && t < v0 + cb) st[4 * i + 3] = zi[t - v0];
        }
    }
}

__global__ void lm_final_kernel(float *logp, float *ent, float *lse, const double *st, const int32_t *tgt, int64_t r0,
                                int64_t rb, int64_t v, int *err) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rb; i += (int64_t)gridDim.x * blockDim.x) {
        double l = st[4 * i] + log(st[4 * i + 1]);
        int32_t t = tgt[r0 + i];
        if (t >= v) cuda_flag(err, CU_OP_LMHEAD, CU_WHAT_TARGET, r0 + i, t, v);
        lse[r0 + i] = (float)l;
        ent[r0 + i] = (float)(l - st[4 * i + 2] / st[4 * i + 1]);
        logp[r0 + i] = t >= 0 ? (float)(st[4 * i + 3] - l) : 0.0f;
    }
}

void cuda_lmhead_fwd(tensor *logp, tensor *ent, tensor *lse, const tensor *x, const tensor *w, const tensor *target,
                     float scale, tensor *ws) {
    const char *op = "lmhead_fwd";
    ops_lm_dims d = ops_check_lmhead_fwd("cuda", logp, ent, lse, x, w, target, ws);
    if (!d.n) return;
    if (d.v < 1) base_die("cuda %s: empty vocabulary", op);
    double *st = (double *)cuda_scratch(SCR_LM, (size_t)d.r * 4 * sizeof(double));
    const int32_t *tg = (const int32_t *)target->data;
    for (int64_t r0 = 0; r0 < d.n; r0 += d.r) {
        int64_t rb = d.n - r0 < d.r ? d.n - r0 : d.r;
        CUDA_LAUNCH(lm_init_kernel, cuda_blocks(rb, 256), 256, 0, st, rb);
        for (int64_t v0 = 0; v0 < d.v; v0 += d.c) {
            int64_t cb = d.v - v0 < d.c ? d.v - v0 : d.c;
            tensor z = chunk_logits(ws, x, w, r0, rb, v0, cb, scale);
            CUDA_LAUNCH(lm_stats_kernel, (unsigned)cu_min64(rb, 65535), LM_THREADS, 0, st, (const float *)z.data,
                        z.stride[0], rb, cb, tg, r0, v0);
        }
        CUDA_LAUNCH(lm_final_kernel, cuda_blocks(rb, 256), 256, 0, (float *)logp->data, (float *)ent->data,
                    (float *)lse->data, (const double *)st, tg, r0, rb, d.v, cuda_errbuf());
    }
}

/* z -> dz in place: dz_v = -g_logp p_v - g_ent p_v (log p_v + H), plus
 * g_logp at the target. */
__global__ void lm_dz_kernel(float *z, int64_t zld, int64_t rb, int64_t cb, const float *gl, const float *ge,
                             const float *ls, const float *en, const int32_t *tgt, int64_t r0, int64_t v0) {
    int64_t total = rb * cb;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = e / cb, j = e % cb, n = r0 + i;
        int32_t t = tgt[n];
        float l = ls[n], h = en[n], g = t >= 0 ? gl[n] : 0.0f, q = ge[n];
        float *zi = z + i * zld;
        float lp = zi[j] - l, p = expf(lp);
        float v = -g * p - q * p * (lp + h);
        if (t == v0 + j) v += g;
        zi[j] = v;
    }
}

/* dst [rb, cb] bf16 (contiguous) = z [rb, cb] (row stride zld) rounded once */
__global__ void lm_tobf_kernel(void *dst, const float *z, int64_t zld, int64_t rb, int64_t cb) {
    int64_t total = rb * cb;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x)
        cuda_store(dst, TENSOR_BF16, e, z[(e / cb) * zld + e % cb]);
}

void cuda_lmhead_bwd(tensor *dx, tensor *dw, const tensor *g_logp, const tensor *g_ent, const tensor *x,
                     const tensor *w, const tensor *target, const tensor *lse, const tensor *ent, float scale,
                     tensor *ws) {
    ops_lm_dims d = ops_check_lmhead_bwd("cuda", dx, dw, g_logp, g_ent, x, w, target, lse, ent, ws);
    if (!d.n) return;
    /* bf16 x and w: dz is rounded to bf16 (a copy in scratch) for the two
     * GEMMs, bf16 x bf16 products summed in f32 into the f32 dx and dw */
    int bf = x->dtype == TENSOR_BF16;
    size_t xs = tensor_dtype_size(x->dtype);
    void *dzb = bf ? cuda_scratch(SCR_LMB, (size_t)(d.r * d.c) * 2) : NULL;
    for (int64_t r0 = 0; r0 < d.n; r0 += d.r) {
        int64_t rb = d.n - r0 < d.r ? d.n - r0 : d.r;
        tensor xb = *x, dxb = *dx;
        xb.data = (char *)x->data + r0 * x->stride[0] * (int64_t)xs;
        xb.shape[0] = rb;
        dxb.data = (float *)dx->data + r0 * dx->stride[0];
        dxb.shape[0] = rb;
        for (int64_t v0 = 0; v0 < d.v; v0 += d.c) {
            int64_t cb = d.v - v0 < d.c ? d.v - v0 : d.c;
            tensor z = chunk_logits(ws, x, w, r0, rb, v0, cb, scale);
            CUDA_LAUNCH(lm_dz_kernel, cuda_blocks(rb * cb, 256), 256, 0, (float *)z.data, z.stride[0], rb, cb,
                        (const float *)g_logp->data, (const float *)g_ent->data, (const float *)lse->data,
                        (const float *)ent->data, (const int32_t *)target->data, r0, v0);
            tensor wb = *w;
            wb.data = (char *)w->data + v0 * w->stride[0] * (int64_t)tensor_dtype_size(w->dtype);
            wb.shape[0] = cb;
            if (bf) {
                int64_t sh[2] = {rb, cb};
                tensor zb = tensor_make(dzb, TENSOR_BF16, z.device, 2, sh);
                CUDA_LAUNCH(lm_tobf_kernel, cuda_blocks(rb * cb, 256), 256, 0, dzb, (const float *)z.data,
                            z.stride[0], rb, cb);
                z = zb;
            }
            cuda_matmul(&dxb, &z, &wb, 0, 0, scale, v0 == 0 ? 0.0f : 1.0f);
            if (dw) { /* NULL: a frozen head */
                tensor dwb = *dw;
                dwb.data = (float *)dw->data + v0 * dw->stride[0];
                dwb.shape[0] = cb;
                cuda_matmul(&dwb, &z, &xb, 1, 0, scale, 1.0f);
            }
        }
    }
}

CUDA_NS_END
