/*
 * DeepSeekMoE routing, dispatch plan, combine (spec §3.8, §3.11) and the
 * SwiGLU activation (§3.7) on the GPU, float32, following
 * src/tensor/cpu/moe.c expression by expression:
 *   route       one warp per token: sigmoid scores, group top-2 sums, the
 *               kept groups, then K warp-wide argmaxes (ties to the lower
 *               id) and the normalised weights (sum in double, in selection
 *               order, as the CPU)
 *   route_bwd   one warp per token, in double as the CPU
 *   plan        a stable counting pass keyed by expert id: rows of an
 *               expert in (token, choice) order, as the CPU's counting sort
 *   combine     block per token, choices added in order k = 0..K-1
 *   combine_bwd block per token; dw by a fixed-tree block sum in double
 */
#include "cuda_common.cuh"

CUDA_NS_BEGIN

#define ROUTE_WARPS 4
#define ROUTE_MAX_EXPERTS 1024

__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

/* Warp-wide argmax of v[i] over i in [0, n) with ok[i], ties to the lower
 * index; -1 when none (as argmax_masked on the CPU). */
__device__ int warp_argmax_masked(const float *v, const unsigned char *ok, int n) {
    cu_argmax a;
    a.v = -INFINITY;
    a.i = INT64_MAX;
    int have = 0;
    for (int i = threadIdx.x & 31; i < n; i += 32)
        if (ok[i]) {
            cu_argmax b;
            b.v = v[i];
            b.i = i;
            /* the first ok entry counts even when -inf or NaN, as `best < 0` */
            a = have ? argmax_pick(a, b) : b;
            have = 1;
        }
    unsigned any = __ballot_sync(0xffffffffu, have);
    if (!any) return -1;
    /* lanes without an entry must not win: give them the identity */
    if (!have) a.v = -INFINITY, a.i = INT64_MAX;
    for (int o = 16; o > 0; o >>= 1) {
        cu_argmax b;
        b.v = __shfl_xor_sync(0xffffffffu, a.v, o);
        b.i = __shfl_xor_sync(0xffffffffu, a.i, o);
        /* a real entry beats the identity even at -inf */
        if (b.i != INT64_MAX && (a.i == INT64_MAX || b.v > a.v || (b.v == a.v && b.i < a.i))) a = b;
    }
    return (int)a.i;
}

__global__ void route_kernel(int32_t *idx, float *w, const float *z, int64_t zld, const float *bias, int64_t n, int e,
                             int k, int n_group, int topk_group, int norm, float routed_scale) {
    CUDA_DYN_SMEM(float, smem);
    int wid = threadIdx.x >> 5, lane = threadIdx.x & 31;
    /* per warp: s [e], sb [e], gscore [n_group], ok [e] bytes, gok [n_group] bytes */
    int64_t fl = 2 * (int64_t)e + n_group;
    int64_t per = fl * 4 + ((e + n_group + 3) & ~3);
    float *s = (float *)((char *)smem + wid * per), *sb = s + e, *gscore = sb + e;
    unsigned char *ok = (unsigned char *)(gscore + n_group), *gok = ok + e;
    int64_t t = blockIdx.x * (int64_t)ROUTE_WARPS + wid;
    if (t >= n) return; /* whole warps only: no block barrier below */
    const float *zt = z + t * zld;
    for (int i = lane; i < e; i += 32) {
        s[i] = sigmoid_f(zt[i]);
        sb[i] = s[i] + (bias ? bias[i] : 0.0f);
        ok[i] = 0;
    }
    __syncwarp();
    int gs = e / n_group;
    for (int g = lane; g < n_group; g += 32) {
        const float *v = sb + g * gs;
        int a = 0;
        for (int i = 1; i < gs; i++)
            if (v[i] > v[a]) a = i;
        float sum = v[a];
        if (gs > 1) {
            int b2 = a == 0 ? 1 : 0;
            for (int i = 0; i < gs; i++)
                if (i != a && v[i] > v[b2]) b2 = i;
            sum += v[b2];
        }
        gscore[g] = sum;
        gok[g] = 1;
    }
    __syncwarp();
    for (int j = 0; j < topk_group; j++) {
        int g = warp_argmax_masked(gscore, gok, n_group);
        for (int i = lane; i < gs; i += 32)
            ok[g * gs + i] = 1;
        __syncwarp();
        if (lane == 0) gok[g] = 0;
        __syncwarp();
    }
    int32_t *it = idx + t * k;
    float *wt = w + t * k;
    double sum = 0;
    for (int j = 0; j < k; j++) {
        int x = warp_argmax_masked(sb, ok, e);
        __syncwarp();
        if (lane == 0) {
            ok[x] = 0;
            it[j] = x;
            wt[j] = s[x];
        }
        sum += s[x];
        __syncwarp();
    }
    if (lane == 0) {
        float den = norm ? (float)sum + 1e-20f : 1.0f;
        for (int j = 0; j < k; j++)
            wt[j] = wt[j] / den * routed_scale;
    }
}

void cuda_moe_route(tensor *idx, tensor *w, const tensor *z, const tensor *bias, int n_group, int topk_group, int norm,
                    float routed_scale) {
    const char *op = "moe_route";
    ops_check_moe_route("cuda", idx, w, z, bias);
    cuda_need_contig(op, "idx", idx), cuda_need_contig(op, "w", w);
    int64_t n = z->shape[0];
    int e = (int)z->shape[1], k = (int)idx->shape[1];
    if (e > ROUTE_MAX_EXPERTS || n_group < 1 || e % n_group || topk_group < 1 || topk_group > n_group || k < 1 ||
        k > topk_group * (e / n_group))
        base_die("cuda %s: bad routing shape (experts %d of at most %d, groups %d, keep %d, top-k %d)", op, e,
                 ROUTE_MAX_EXPERTS, n_group, topk_group, k);
    if (!n) return;
    int64_t per = (2 * (int64_t)e + n_group) * 4 + ((e + n_group + 3) & ~3);
    CUDA_LAUNCH(route_kernel, (unsigned)((n + ROUTE_WARPS - 1) / ROUTE_WARPS), ROUTE_WARPS * 32,
                (size_t)(per * ROUTE_WARPS), (int32_t *)idx->data, (float *)w->data, (const float *)z->data,
                z->stride[0], bias ? (const float *)bias->data : (const float *)NULL, n, e, k, n_group, topk_group,
                norm, routed_scale);
}

__global__ void route_bwd_kernel(float *dz, int64_t dld, const float *dw, int64_t gld, const float *z, int64_t zld,
                                 const int32_t *idx, int64_t ild, int64_t n, int64_t e, int64_t k, int norm,
                                 float routed_scale) {
    int wid = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t t = blockIdx.x * (int64_t)ROUTE_WARPS + wid;
    if (t >= n) return;
    const float *zt = z + t * zld, *gw = dw + t * gld;
    const int32_t *it = idx + t * ild;
    float *dzt = dz + t * dld;
    for (int64_t i = lane; i < e; i += 32)
        dzt[i] = 0.0f;
    __syncwarp();
    if (lane == 0) {
        double ssum = 0, gs = 0;
        for (int64_t j = 0; j < k; j++) {
            float s = sigmoid_f(zt[it[j]]);
            ssum += s;
            gs += (double)gw[j] * s;
        }
        double den = ssum + 1e-20;
        for (int64_t j = 0; j < k; j++) {
            int32_t x = it[j];
            if (x < 0 || x >= e) continue; /* moe_route never makes one */
            float s = sigmoid_f(zt[x]);
            double ds = norm ? routed_scale * (gw[j] / den - gs / (den * den)) : routed_scale * gw[j];
            dzt[x] = (float)(ds * s * (1.0f - s));
        }
    }
}

void cuda_moe_route_bwd(tensor *dz, const tensor *dw, const tensor *z, const tensor *idx, int norm,
                        float routed_scale) {
    ops_check_moe_route_bwd("cuda", dz, dw, z, idx);
    int64_t n = z->shape[0], e = z->shape[1], k = idx->shape[1];
    if (!n) return;
    CUDA_LAUNCH(route_bwd_kernel, (unsigned)((n + ROUTE_WARPS - 1) / ROUTE_WARPS), ROUTE_WARPS * 32, 0,
                (float *)dz->data, dz->stride[0], (const float *)dw->data, dw->stride[0], (const float *)z->data,
                z->stride[0], (const int32_t *)idx->data, idx->stride[0], n, e, k, norm, routed_scale);
}

/* ---- the sequence-wise balance loss ------------------------------------------------------ */
/* One block per sequence, following the CPU expression by expression: a
 * token's score sum in double (experts in order), each expert's P_i and
 * choice count by one thread over the tokens in order (no atomics: the
 * same bits every run). */

#define AUX_THREADS 128
#define AUX_MAX_EXPERTS 2048

__global__ void aux_fwd_kernel(float *loss, const float *z, int64_t zld, const int32_t *idx, int64_t ild,
                               const int32_t *cu, int64_t e, int64_t k) {
    CUDA_DYN_SMEM(double, smem); /* P [e], the chunk's score sums [AUX_THREADS], counts [e] (int64) */
    double *P = smem, *sum = smem + e;
    int64_t *cnt = (int64_t *)(sum + AUX_THREADS);
    int64_t s = blockIdx.x, t0 = cu[s], t1 = cu[s + 1];
    for (int64_t i = threadIdx.x; i < e; i += blockDim.x) P[i] = 0.0, cnt[i] = 0;
    __syncthreads();
    for (int64_t c0 = t0; c0 < t1; c0 += AUX_THREADS) {
        int64_t t = c0 + threadIdx.x, nc = t1 - c0 < AUX_THREADS ? t1 - c0 : AUX_THREADS;
        if (t < t1) {
            double v = 0;
            for (int64_t j = 0; j < e; j++) v += sigmoid_f(z[t * zld + j]);
            sum[threadIdx.x] = v;
        }
        __syncthreads();
        for (int64_t i = threadIdx.x; i < e; i += blockDim.x) {
            double p = P[i];
            int64_t c = cnt[i];
            for (int64_t u = 0; u < nc; u++) {
                p += (double)sigmoid_f(z[(c0 + u) * zld + i]) / sum[u];
                for (int64_t j = 0; j < k; j++) c += idx[(c0 + u) * ild + j] == i;
            }
            P[i] = p, cnt[i] = c;
        }
        __syncthreads(); /* the chunk's sums are consumed */
    }
    if (threadIdx.x == 0) {
        double acc = 0, T = (double)(t1 - t0);
        for (int64_t i = 0; i < e; i++) acc += (double)cnt[i] * P[i];
        loss[s] = t1 > t0 ? (float)(acc * (double)e / ((double)k * T * T)) : 0.0f;
    }
}

__global__ void aux_bwd_kernel(float *dz, int64_t dld, const float *z, int64_t zld, const int32_t *idx, int64_t ild,
                               const int32_t *cu, int64_t e, int64_t k, float coef) {
    CUDA_DYN_SMEM(double, ci); /* c_i = f_i / T [e] */
    int64_t s = blockIdx.x, t0 = cu[s], t1 = cu[s + 1];
    if (t1 <= t0) return; /* uniform across the block */
    double T = (double)(t1 - t0);
    for (int64_t i = threadIdx.x; i < e; i += blockDim.x) {
        int64_t c = 0;
        for (int64_t t = t0; t < t1; t++)
            for (int64_t j = 0; j < k; j++) c += idx[t * ild + j] == i;
        ci[i] = (double)e * (double)c / ((double)k * T * T);
    }
    __syncthreads();
    for (int64_t t = t0 + threadIdx.x; t < t1; t += blockDim.x) {
        const float *zt = z + t * zld;
        float *dzt = dz + t * dld;
        double sum = 0, a = 0;
        for (int64_t j = 0; j < e; j++) {
            float sj = sigmoid_f(zt[j]);
            sum += sj;
            a += ci[j] * sj;
        }
        a /= sum;
        for (int64_t j = 0; j < e; j++) {
            float sj = sigmoid_f(zt[j]);
            dzt[j] += (float)((double)coef * sj * (1.0f - sj) * (ci[j] - a) / sum);
        }
    }
}

void cuda_moe_aux_fwd(tensor *loss, const tensor *z, const tensor *idx, const tensor *cu) {
    ops_check_moe_aux("cuda", loss, NULL, z, idx, cu);
    int64_t e = z->shape[1], S = cu->shape[0] - 1;
    if (e > AUX_MAX_EXPERTS) base_die("moe_aux_fwd (cuda): %lld experts (limit %d)", (long long)e, AUX_MAX_EXPERTS);
    if (S < 1) return;
    size_t smem = (size_t)(2 * e + AUX_THREADS) * sizeof(double);
    CUDA_LAUNCH(aux_fwd_kernel, (unsigned)S, AUX_THREADS, smem, (float *)loss->data, (const float *)z->data,
                z->stride[0], (const int32_t *)idx->data, idx->stride[0], (const int32_t *)cu->data, e,
                idx->shape[1]);
}

void cuda_moe_aux_bwd(tensor *dz, const tensor *z, const tensor *idx, const tensor *cu, float coef) {
    ops_check_moe_aux("cuda", NULL, dz, z, idx, cu);
    int64_t e = z->shape[1], S = cu->shape[0] - 1;
    if (e > AUX_MAX_EXPERTS) base_die("moe_aux_bwd (cuda): %lld experts (limit %d)", (long long)e, AUX_MAX_EXPERTS);
    if (S < 1) return;
    CUDA_LAUNCH(aux_bwd_kernel, (unsigned)S, AUX_THREADS, (size_t)e * sizeof(double), (float *)dz->data,
                dz->stride[0], (const float *)z->data, z->stride[0], (const int32_t *)idx->data, idx->stride[0],
                (const int32_t *)cu->data, e, idx->shape[1], coef);
}

/* ---- plan ----------------------------------------------------------------------------- */

/* offsets[0] = 0, offsets[i+1] = offsets[i] + counts[i] (one thread: E is small) */
__global__ void plan_offsets_kernel(int32_t *offsets, const int32_t *counts, int e) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    int32_t s = 0;
    offsets[0] = 0;
    for (int i = 0; i < e; i++) {
        s += counts[i];
        offsets[i + 1] = s;
    }
}

__global__ void plan_rows_kernel(int32_t *row_tok, int32_t *inv, const int32_t *pair, int64_t nk, int64_t k) {
    for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < nk; r += (int64_t)gridDim.x * blockDim.x) {
        int32_t p = pair[r];
        row_tok[r] = (int32_t)(p / k);
        inv[p] = (int32_t)r;
    }
}

void cuda_moe_plan(tensor *offsets, tensor *row_tok, tensor *inv, const tensor *idx, int n_experts) {
    const char *op = "moe_plan";
    ops_check_moe_plan("cuda", offsets, row_tok, inv, idx, n_experts);
    cuda_need_contig(op, "idx", idx);
    int64_t n = idx->shape[0], k = idx->shape[1], nk = n * k;
    if (n_experts < 1 || n_experts > 4096) base_die("cuda %s: %d experts (1 to 4096)", op, n_experts);
    if (nk == 0) {
#ifdef GRPO_CUDA_EMU
        memset(offsets->data, 0, (size_t)(n_experts + 1) * sizeof(int32_t));
#else
        CHECK_CUDA(cudaMemsetAsync(offsets->data, 0, (size_t)(n_experts + 1) * sizeof(int32_t), cuda_stream));
#endif
        return;
    }
    /* keys sorted into SCR_SORT_A (unused), pair indices into SCR_SORT_B,
     * per-expert counts after them */
    uint32_t *kout = (uint32_t *)cuda_scratch(SCR_SORT_A, (size_t)nk * sizeof(uint32_t));
    int32_t *buf = (int32_t *)cuda_scratch(SCR_SORT_B, (size_t)(nk + n_experts) * sizeof(int32_t));
    int32_t *pair = buf, *counts = buf + nk;
    cuda_sort_pass((const uint32_t *)idx->data, NULL, kout, pair, nk, 0, n_experts, counts, n_experts, CU_OP_PLAN);
    CUDA_LAUNCH(plan_offsets_kernel, 1, 32, 0, (int32_t *)offsets->data, (const int32_t *)counts, n_experts);
    CUDA_LAUNCH(plan_rows_kernel, cuda_blocks(nk, 256), 256, 0, (int32_t *)row_tok->data, (int32_t *)inv->data,
                (const int32_t *)pair, nk, k);
}

/* ---- combine ------------------------------------------------------------------------------- */

__global__ void combine_kernel(float *y, int64_t yld, const float *ye, int64_t eld, const float *w, int64_t wld,
                               const int32_t *inv, int64_t n, int64_t d, int64_t k, int *err) {
    for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
        float *yt = y + t * yld;
        for (int64_t j = 0; j < k; j++) {
            int32_t r = inv[t * k + j];
            if (r < 0 || r >= n * k) {
                if (threadIdx.x == 0) cuda_flag(err, CU_OP_COMBINE, CU_WHAT_INDEX, t * k + j, r, n * k);
                continue;
            }
            float a = w ? w[t * wld + j] : 1.0f;
            const float *src = ye + (int64_t)r * eld;
            for (int64_t c = threadIdx.x; c < d; c += blockDim.x)
                yt[c] += a * src[c];
        }
    }
}

void cuda_moe_combine(tensor *y, const tensor *ye, const tensor *w, const tensor *inv) {
    int64_t k = ops_check_moe_combine("cuda", y, ye, w, inv), n = y->shape[0], d = y->shape[1];
    if (n == 0) return;
    CUDA_LAUNCH(combine_kernel, (unsigned)cu_min64(n, 65535), 128, 0, (float *)y->data, y->stride[0],
                (const float *)ye->data, ye->stride[0], w ? (const float *)w->data : (const float *)NULL,
                w ? w->stride[0] : 0, (const int32_t *)inv->data, n, d, k, cuda_errbuf());
}

__global__ void combine_bwd_kernel(float *dye, int64_t dld, float *dw, int64_t dwld, const float *dy, int64_t gld,
                                   const float *ye, int64_t eld, const float *w, int64_t wld, const int32_t *inv,
                                   int64_t n, int64_t d, int64_t k, int *err) {
    __shared__ double red[32];
    for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
        const float *g = dy + t * gld;
        for (int64_t j = 0; j < k; j++) {
            int32_t r = inv[t * k + j];
            if (r < 0 || r >= n * k) { /* uniform across the block: no barrier is skipped by part of it */
                if (threadIdx.x == 0) cuda_flag(err, CU_OP_COMBINE, CU_WHAT_INDEX, t * k + j, r, n * k);
                continue;
            }
            float wj = w[t * wld + j];
            float *dr = dye + (int64_t)r * dld;
            const float *yr = ye + (int64_t)r * eld;
            double dot = 0.0;
            for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
                dr[c] = wj * g[c];
                dot += (double)g[c] * yr[c];
            }
            dot = block_sum(dot, red);
            if (threadIdx.x == 0) dw[t * dwld + j] = (float)dot;
        }
    }
}

void cuda_moe_combine_bwd(tensor *dye, tensor *dw, const tensor *dy, const tensor *ye, const tensor *w,
                          const tensor *inv) {
    ops_check_moe_combine_bwd("cuda", dye, dw, dy, ye, w, inv);
    int64_t n = dy->shape[0], d = dy->shape[1], k = w->shape[1];
    if (!n) return;
    CUDA_LAUNCH(combine_bwd_kernel, (unsigned)cu_min64(n, 65535), 128, 0, (float *)dye->data, dye->stride[0],
                (float *)dw->data, dw->stride[0], (const float *)dy->data, dy->stride[0], (const float *)ye->data,
                ye->stride[0], (const float *)w->data, w->stride[0], (const int32_t *)inv->data, n, d, k,
                cuda_errbuf());
}

/* ---- SwiGLU ------------------------------------------------------------------------------------ */

/* h in dtype HT (TENSOR_F32, or TENSOR_BF16: the f32 value rounded once) */
template <int HT>
__global__ void swiglu_fwd_kernel(void *h, int64_t hld, const float *gu, int64_t gld, int64_t n, int64_t f) {
    int64_t total = n * f;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = e / f, j = e % f;
        const float *g = gu + t * gld;
        cuda_store(h, HT, t * hld + j, g[j] * sigmoid_f(g[j]) * g[f + j]);
    }
}

__global__ void swiglu_bwd_kernel(float *dgu, int64_t dld, const float *dh, int64_t hld, const float *gu, int64_t gld,
                                  int64_t n, int64_t f) {
    int64_t total = n * f;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = e / f, j = e % f;
        const float *g = gu + t * gld;
        float sg = sigmoid_f(g[j]);
        float a = g[j], b = g[f + j], gy = dh[t * hld + j];
        dgu[t * dld + f + j] = gy * a * sg;
        dgu[t * dld + j] = gy * b * sg * (1.0f + a * (1.0f - sg));
    }
}

void cuda_swiglu_fwd(tensor *h, const tensor *gu) {
    ops_check_swiglu_fwd("cuda", h, gu);
    int64_t n = h->shape[0], f = h->shape[1];
    if (!n || !f) return;
    if (h->dtype == TENSOR_BF16)
        CUDA_LAUNCH(swiglu_fwd_kernel<TENSOR_BF16>, cuda_blocks(n * f, 256), 256, 0, h->data, h->stride[0],
                    (const float *)gu->data, gu->stride[0], n, f);
    else
        CUDA_LAUNCH(swiglu_fwd_kernel<TENSOR_F32>, cuda_blocks(n * f, 256), 256, 0, h->data, h->stride[0],
                    (const float *)gu->data, gu->stride[0], n, f);
}

void cuda_swiglu_bwd(tensor *dgu, const tensor *dh, const tensor *gu) {
    ops_check_swiglu_bwd("cuda", dgu, dh, gu);
    int64_t n = dh->shape[0], f = dh->shape[1];
    if (!n || !f) return;
    CUDA_LAUNCH(swiglu_bwd_kernel, cuda_blocks(n * f, 256), 256, 0, (float *)dgu->data, dgu->stride[0],
                (const float *)dh->data, dh->stride[0], (const float *)gu->data, gu->stride[0], n, f);
}

CUDA_NS_END
