/*
 * MLA causal attention, training / prefill form (spec §3.5) and its
 * backward (§3.11), float32, over packed sequences: FlashAttention tiling,
 * so no [T, T] score matrix exists.
 *
 * Forward: block (query tile of AT_BQ rows, head); keys in tiles of AT_BK
 * staged in shared memory with an online softmax per row; writes o and the
 * logsumexp of the scaled scores.
 *
 * Batch invariance: tiles never cross a sequence. Tile j of sequence s
 * covers its tokens [cu[s] + 32 j, cu[s] + 32 (j + 1)) (the last one
 * shorter), and every key loop starts at the sequence's own start, so a
 * row meets the same tiles, the same columns and the same masked slots
 * wherever its sequence sits in the packed batch and whatever its
 * neighbours: its bits depend on its own sequence only. The grid is the
 * bound sum_s ceil(len_s / 32) <= (N + S (32 - 1)) / 32; a block maps its
 * index to (s, j) through a prefix of tile counts computed on the device
 * (attn_tiles_kernel: no host synchronisation) and leaves when it is past
 * the total.
 *
 * Backward (the CPU's two race-free passes, FlashAttention-2 algebra):
 *   P = exp(S - lse), dP = dO V^T, D = rowsum(dO * O), dS = scale P (dP - D)
 *   pass A, block (query tile, head): dq = dS K
 *   pass B, block (key tile, head):   dk = dS^T q, dv = P^T dO, and the rope
 *           part of dk into a per-head buffer; then dkpe = sum over heads
 *           in head order (k_pe is shared by the heads).
 * Every output element has one owner and sums in a fixed order: the same
 * bits on every run.
 *
 * Shared-memory rows read by the lanes of a warp at once (one row per
 * lane) are padded by one float so that the lanes hit different banks.
 * Scores and accumulations use register micro-tiles (pair_dots, accum).
 */
#include "cuda_common.cuh"

CUDA_NS_BEGIN

#define AT_BQ 32
#define AT_BK 32
#define AT_THREADS 128

typedef struct {
    const float *q, *kv, *kpe;
    int64_t q0, q1, kv0, kv1, kp0; /* strides (elements) */
    const int32_t *cu, *tiles; /* tiles: attn_tiles_kernel's prefix [S+1] */
    int64_t nseq, n, h, dn, dr, dv;
    float scale;
} attn_in;

static_assert(AT_BQ == AT_BK, "one tile map serves query tiles (forward, pass A) and key tiles (pass B)");

/* tiles[s] = prefix of ceil(len_s / AT_BQ) over the sequences, tiles[S] the
 * total. cu_seqlens must run from 0 to N without decreasing; the first
 * fault is flagged (op mla_attn): cu[0] != 0 as index cu[0] at row 0
 * outside [0, 1), a sequence s with a negative length or one past N as
 * length cu[s+1] - cu[s] at row s outside [0, N - cu[s] + 1), cu[S] != N as
 * index cu[S] at row S outside [0, N + 1). The faulty sequence and every
 * later one get no tiles, so the others' tiles stay disjoint and inside
 * [0, N) (their rows are written, the rest are not). One thread: S is
 * small next to the attention's work. */
__global__ void attn_tiles_kernel(int32_t *tiles, const int32_t *cu, int64_t nseq, int64_t n, int *err) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    int32_t t = 0;
    int ok = 1;
    if (cu[0] != 0) cuda_flag(err, CU_OP_ATTN, CU_WHAT_INDEX, 0, cu[0], 1), ok = 0;
    for (int64_t s = 0; s < nseq; s++) {
        tiles[s] = t;
        if (ok && (cu[s + 1] < cu[s] || cu[s + 1] > n))
            cuda_flag(err, CU_OP_ATTN, CU_WHAT_LENGTH, s, (int64_t)cu[s + 1] - cu[s], n - cu[s] + 1), ok = 0;
        if (ok) t += (cu[s + 1] - cu[s] + AT_BQ - 1) / AT_BQ;
    }
    tiles[nseq] = t;
    if (ok && cu[nseq] != n) cuda_flag(err, CU_OP_ATTN, CU_WHAT_INDEX, nseq, cu[nseq], n + 1);
}

/* The tile of block index b: tokens [*t0, *t0 + *nt) of the sequence
 * [*s0, *end); 0 when b is past the last tile (the whole block leaves). */
__device__ __forceinline__ int tile_of(const int32_t *tiles, const int32_t *cu, int64_t nseq, int64_t b, int64_t *s0,
                                       int64_t *t0, int64_t *nt, int64_t *end) {
    if (b >= tiles[nseq]) return 0;
    int64_t lo = 0, hi = nseq; /* tiles[lo] <= b < tiles[hi]: sequence lo has tile b */
    while (hi - lo > 1) {
        int64_t mid = (lo + hi) / 2;
        if (tiles[mid] <= b)
            lo = mid;
        else
            hi = mid;
    }
    *end = cu[lo + 1];
    *s0 = cu[lo];
    *t0 = *s0 + (b - tiles[lo]) * AT_BQ;
    *nt = *end - *t0 < AT_BQ ? *end - *t0 : AT_BQ;
    return 1;
}

/* Stage K rows [u0, u0+nb) of head h: kd = [k_nope ; k_pe] (stride dqk+1)
 * and vd (stride dv+1). */
__device__ __forceinline__ void load_kv(const attn_in &a, int64_t h, int64_t u0, int64_t nb, float *kd, float *vd) {
    int64_t dqk = a.dn + a.dr;
    for (int64_t i = threadIdx.x; i < nb * dqk; i += blockDim.x) {
        int64_t r = i / dqk, j = i % dqk, u = u0 + r;
        kd[r * (dqk + 1) + j] = j < a.dn ? a.kv[u * a.kv0 + h * a.kv1 + j] : a.kpe[u * a.kp0 + (j - a.dn)];
    }
    for (int64_t i = threadIdx.x; i < nb * a.dv; i += blockDim.x) {
        int64_t r = i / a.dv, j = i % a.dv, u = u0 + r;
        vd[r * (a.dv + 1) + j] = a.kv[u * a.kv0 + h * a.kv1 + a.dn + j];
    }
}

/* Stage query rows [t0, t0+nq) of head h (stride dqk+1). */
__device__ __forceinline__ void load_q(const attn_in &a, int64_t h, int64_t t0, int64_t nq, float *qd) {
    int64_t dqk = a.dn + a.dr;
    for (int64_t i = threadIdx.x; i < nq * dqk; i += blockDim.x) {
        int64_t r = i / dqk, j = i % dqk;
        qd[r * (dqk + 1) + j] = a.q[(t0 + r) * a.q0 + h * a.q1 + j];
    }
}

/* Register micro-tiles (AT_THREADS = 128, tiles of 32 x 32): thread t owns
 * tile rows rg, rg + 16 (rg = t / 8) and score columns cg + 8u, u < 4
 * (cg = t % 8), or accumulation columns cg + 8i. Every shared-memory value
 * loaded feeds 2 to 4 multiply-adds instead of one. */
static_assert(AT_THREADS == 128 && AT_BQ == 32 && AT_BK == 32, "micro-tiles assume 128 threads, 32 x 32 tiles");
#define AT_CHUNK 128 /* accumulation columns per pass: 16 per thread */

/* acc[i][u] = A[row rg + 16i] . B[row cg + 8u] over n (rows of A, B with
 * leading dimensions lda, ldb) */
__device__ __forceinline__ void pair_dots(const float *A, int64_t lda, const float *B, int64_t ldb, int64_t n,
                                          float acc[2][4]) {
    int rg = threadIdx.x >> 3, cg = threadIdx.x & 7;
    const float *a0 = A + rg * lda, *a1 = A + (rg + 16) * lda;
    const float *b0 = B + cg * ldb, *b1 = B + (cg + 8) * ldb, *b2 = B + (cg + 16) * ldb, *b3 = B + (cg + 24) * ldb;
    for (int i = 0; i < 2; i++)
        for (int u = 0; u < 4; u++)
            acc[i][u] = 0.0f;
    for (int64_t j = 0; j < n; j++) {
        float x0 = a0[j], x1 = a1[j], y0 = b0[j], y1 = b1[j], y2 = b2[j], y3 = b3[j];
        acc[0][0] += x0 * y0, acc[0][1] += x0 * y1, acc[0][2] += x0 * y2, acc[0][3] += x0 * y3;
        acc[1][0] += x1 * y0, acc[1][1] += x1 * y1, acc[1][2] += x1 * y2, acc[1][3] += x1 * y3;
    }
}

/* out[R][c] = out[R][c] * (scale ? scale[R] : 1) + sum_{k < nk} coef(R, k) src[k][c]
 * for the thread's rows R = rg, rg + 16 and columns c = cg + 8i < ncols;
 * coef(R, k) = coef[R * ci + k * ck]. Each output has one owner and sums
 * k in order. */
__device__ __forceinline__ void accum(float *out, int64_t ldo, const float *coef, int64_t ci, int64_t ck,
                                      const float *src, int64_t lds, int64_t ncols, int64_t nk, const float *scale) {
    int rg = threadIdx.x >> 3, cg = threadIdx.x & 7;
    int64_t R0 = rg, R1 = rg + 16;
    float s0 = scale ? scale[R0] : 1.0f, s1 = scale ? scale[R1] : 1.0f;
    for (int64_t c0 = 0; c0 < ncols; c0 += AT_CHUNK) {
        float acc0[16], acc1[16];
#pragma unroll
        for (int i = 0; i < 16; i++) {
            int64_t c = c0 + cg + 8 * i;
            acc0[i] = c < ncols ? out[R0 * ldo + c] * s0 : 0.0f;
            acc1[i] = c < ncols ? out[R1 * ldo + c] * s1 : 0.0f;
        }
        for (int64_t k = 0; k < nk; k++) {
            float p0 = coef[R0 * ci + k * ck], p1 = coef[R1 * ci + k * ck];
            const float *sr = src + k * lds + c0 + cg;
#pragma unroll
            for (int i = 0; i < 16; i++)
                if (c0 + cg + 8 * i < ncols) {
                    float v = sr[8 * i];
                    acc0[i] += p0 * v;
                    acc1[i] += p1 * v;
                }
        }
#pragma unroll
        for (int i = 0; i < 16; i++) {
            int64_t c = c0 + cg + 8 * i;
            if (c < ncols) out[R0 * ldo + c] = acc0[i], out[R1 * ldo + c] = acc1[i];
        }
    }
}

/* ---- forward ---------------------------------------------------------------------------- */

static size_t fwd_smem(int64_t dqk, int64_t dv) {
    return (size_t)(2 * AT_BQ * (dqk + 1) + AT_BK * (dv + 1) + AT_BQ * (AT_BK + 1) + AT_BQ * dv + 3 * AT_BQ) *
           sizeof(float);
}

__global__ void __launch_bounds__(AT_THREADS)
    attn_fwd_kernel(attn_in a, float *o, int64_t o0, int64_t o1, float *lse, int64_t l0) {
    CUDA_DYN_SMEM(float, sm);
    int64_t dqk = a.dn + a.dr, dv = a.dv, h = blockIdx.y, s0, t0, nq, e0;
    if (!tile_of(a.tiles, a.cu, a.nseq, blockIdx.x, &s0, &t0, &nq, &e0)) return;
    float *qd = sm, *kd = qd + AT_BQ * (dqk + 1), *vd = kd + AT_BK * (dqk + 1), *sc = vd + AT_BK * (dv + 1);
    float *od = sc + AT_BQ * (AT_BK + 1), *m = od + AT_BQ * dv, *l = m + AT_BQ, *corr = l + AT_BQ;
    int tid = threadIdx.x;
    load_q(a, h, t0, nq, qd);
    for (int64_t i = tid; i < AT_BQ * dv; i += blockDim.x)
        od[i] = 0.0f;
    for (int64_t r = tid; r < AT_BQ; r += blockDim.x)
        m[r] = -INFINITY, l[r] = 0.0f;
    __syncthreads();
    int64_t uhi = t0 + nq; /* keys [s0, uhi) of the tile's own sequence, in tiles from its start */
    for (int64_t u0 = s0; u0 < uhi; u0 += AT_BK) {
        int64_t nb = uhi - u0 < AT_BK ? uhi - u0 : AT_BK;
        __syncthreads(); /* the previous tile is consumed */
        load_kv(a, h, u0, nb, kd, vd);
        __syncthreads();
        {
            float sc4[2][4];
            pair_dots(qd, dqk + 1, kd, dqk + 1, dqk, sc4);
            for (int i = 0; i < 2; i++)
                for (int u = 0; u < 4; u++) {
                    int64_t r = (tid >> 3) + 16 * i, c = (tid & 7) + 8 * u, t = t0 + r, uu = u0 + c;
                    int ok = r < nq && c < nb && uu <= t;
                    sc[r * (AT_BK + 1) + c] = ok ? a.scale * sc4[i][u] : -INFINITY;
                }
        }
        __syncthreads();
        for (int64_t r = tid; r < AT_BQ; r += blockDim.x) {
            float *row = sc + r * (AT_BK + 1);
            float bm = -INFINITY;
            for (int64_t c = 0; c < nb; c++)
                bm = row[c] > bm ? row[c] : bm;
            if (bm == -INFINITY) { /* no key of this tile for the row */
                for (int64_t c = 0; c < nb; c++)
                    row[c] = 0.0f;
                corr[r] = 1.0f;
                continue;
            }
            float mn = bm > m[r] ? bm : m[r];
            float cr = m[r] == -INFINITY ? 0.0f : expf(m[r] - mn);
            float sum = 0.0f;
            for (int64_t c = 0; c < nb; c++) {
                float pr = row[c] == -INFINITY ? 0.0f : expf(row[c] - mn);
                row[c] = pr;
                sum += pr;
            }
            m[r] = mn;
            l[r] = l[r] * cr + sum;
            corr[r] = cr;
        }
        __syncthreads();
        accum(od, dv, sc, AT_BK + 1, 1, vd, dv + 1, dv, nb, corr);
    }
    __syncthreads();
    for (int64_t i = tid; i < nq * dv; i += blockDim.x) {
        int64_t r = i / dv, c = i % dv;
        o[(t0 + r) * o0 + h * o1 + c] = od[i] / l[r];
    }
    if (lse)
        for (int64_t r = tid; r < nq; r += blockDim.x)
            lse[(t0 + r) * l0 + h] = m[r] + logf(l[r]);
}

static attn_in make_in(const tensor *q, const tensor *kv, const tensor *kpe, const tensor *cu, const ops_attn_dims &d,
                       float scale) {
    attn_in a;
    a.q = (const float *)q->data, a.kv = (const float *)kv->data, a.kpe = (const float *)kpe->data;
    a.q0 = q->stride[0], a.q1 = q->stride[1], a.kv0 = kv->stride[0], a.kv1 = kv->stride[1], a.kp0 = kpe->stride[0];
    a.cu = (const int32_t *)cu->data;
    a.nseq = cu->shape[0] - 1;
    a.tiles = NULL;
    a.n = d.n, a.h = d.h, a.dn = d.dn, a.dr = d.dr, a.dv = d.dv;
    a.scale = scale;
    return a;
}

static void smem_ok(const char *op, size_t bytes) {
    if (bytes > 227 * 1024) base_die("cuda %s: head dims need %zu bytes of shared memory (227 KiB at most)", op, bytes);
}

/* The tile map (attn_tiles_kernel) in scratch, and the grid's tile bound
 * (N + S (AT_BQ - 1)) / AT_BQ; blocks past the map's total leave. */
static unsigned launch_tiles(attn_in *a) {
    int32_t *tiles = (int32_t *)cuda_scratch(SCR_ATTN_TILES, (size_t)(a->nseq + 1) * sizeof(int32_t));
    CUDA_LAUNCH(attn_tiles_kernel, 1, 32, 0, tiles, a->cu, a->nseq, a->n, cuda_errbuf());
    a->tiles = tiles;
    int64_t bound = (a->n + a->nseq * (AT_BQ - 1)) / AT_BQ;
    if (bound > 0x7fffffff) base_die("cuda mla_attn: %lld query tiles exceed the grid", (long long)bound);
    return (unsigned)bound;
}

void cuda_mla_attn_fwd(tensor *o, tensor *lse, const tensor *q, const tensor *kv, const tensor *kpe,
                       const tensor *cu_seqlens, float scale) {
    const char *op = "mla_attn_fwd";
    ops_attn_dims d = ops_check_mla_attn_fwd("cuda", o, lse, q, kv, kpe, cu_seqlens);
    if (!d.n || !d.h) return;
    attn_in a = make_in(q, kv, kpe, cu_seqlens, d, scale);
    unsigned ntiles = launch_tiles(&a);
    size_t smem = fwd_smem(d.dqk, d.dv);
    smem_ok(op, smem);
#ifndef GRPO_CUDA_EMU
    CHECK_CUDA(cudaFuncSetAttribute(attn_fwd_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
#endif
    dim3 grid(ntiles, (unsigned)d.h);
    CUDA_LAUNCH(attn_fwd_kernel, grid, AT_THREADS, smem, a, (float *)o->data, o->stride[0], o->stride[1],
                lse ? (float *)lse->data : (float *)NULL, lse ? lse->stride[0] : 0);
}

/* ---- backward ------------------------------------------------------------------------------ */

/* D[t, h] = dO[t, h] . O[t, h]: one warp per (t, h) */
__global__ void attn_d_kernel(float *D, const float *dout, int64_t g0, int64_t g1, const float *o, int64_t o0,
                              int64_t o1, int64_t n, int64_t h, int64_t dv) {
    int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (w >= n * h) return; /* whole warps */
    int64_t t = w / h, k = w % h;
    const float *g = dout + t * g0 + k * g1, *x = o + t * o0 + k * o1;
    float s = 0.0f;
    for (int64_t c = lane; c < dv; c += 32)
        s += g[c] * x[c];
    s = warp_sum(s);
    if (lane == 0) D[w] = s;
}

typedef struct {
    const float *dout, *lse, *D;
    int64_t g0, g1, l0;
} attn_grad_in;

/* Stage dO rows [t0, t0+nq) (stride dv+1). */
__device__ __forceinline__ void load_do(const attn_in &a, const attn_grad_in &g, int64_t h, int64_t t0, int64_t nq,
                                        float *gd) {
    for (int64_t i = threadIdx.x; i < nq * a.dv; i += blockDim.x) {
        int64_t r = i / a.dv, c = i % a.dv;
        gd[r * (a.dv + 1) + c] = g.dout[(t0 + r) * g.g0 + h * g.g1 + c];
    }
}

static size_t bwd_q_smem(int64_t dqk, int64_t dv) {
    return (size_t)(AT_BQ * (dqk + 1) + AT_BQ * (dv + 1) + AT_BK * (dqk + 1) + AT_BK * (dv + 1) + AT_BQ * (AT_BK + 1) +
                    AT_BQ * dqk + 2 * AT_BQ) *
           sizeof(float);
}

/* pass A: dq for a query tile */
__global__ void __launch_bounds__(AT_THREADS)
    attn_bwd_q_kernel(attn_in a, attn_grad_in g, float *dq, int64_t d0, int64_t d1) {
    CUDA_DYN_SMEM(float, sm);
    int64_t dqk = a.dn + a.dr, dv = a.dv, h = blockIdx.y, s0, t0, nq, e0;
    if (!tile_of(a.tiles, a.cu, a.nseq, blockIdx.x, &s0, &t0, &nq, &e0)) return;
    float *qd = sm, *gd = qd + AT_BQ * (dqk + 1), *kd = gd + AT_BQ * (dv + 1), *vd = kd + AT_BK * (dqk + 1);
    float *ds = vd + AT_BK * (dv + 1), *dqd = ds + AT_BQ * (AT_BK + 1), *L = dqd + AT_BQ * dqk, *Dr = L + AT_BQ;
    int tid = threadIdx.x;
    load_q(a, h, t0, nq, qd);
    load_do(a, g, h, t0, nq, gd);
    for (int64_t i = tid; i < AT_BQ * dqk; i += blockDim.x)
        dqd[i] = 0.0f;
    for (int64_t r = tid; r < AT_BQ; r += blockDim.x) {
        L[r] = r < nq ? g.lse[(t0 + r) * g.l0 + h] : 0.0f;
        Dr[r] = r < nq ? g.D[(t0 + r) * a.h + h] : 0.0f;
    }
    __syncthreads();
    int64_t uhi = t0 + nq; /* keys [s0, uhi) in tiles from the sequence's start, as the forward */
    for (int64_t u0 = s0; u0 < uhi; u0 += AT_BK) {
        int64_t nb = uhi - u0 < AT_BK ? uhi - u0 : AT_BK;
        __syncthreads();
        load_kv(a, h, u0, nb, kd, vd);
        __syncthreads();
        {
            float s4[2][4], p4[2][4];
            pair_dots(qd, dqk + 1, kd, dqk + 1, dqk, s4);
            pair_dots(gd, dv + 1, vd, dv + 1, dv, p4);
            for (int i = 0; i < 2; i++)
                for (int u = 0; u < 4; u++) {
                    int64_t r = (tid >> 3) + 16 * i, c = (tid & 7) + 8 * u, t = t0 + r, uu = u0 + c;
                    float v = 0.0f;
                    if (r < nq && c < nb && uu <= t) {
                        float pr = expf(a.scale * s4[i][u] - L[r]);
                        v = a.scale * pr * (p4[i][u] - Dr[r]);
                    }
                    ds[r * (AT_BK + 1) + c] = v;
                }
        }
        __syncthreads();
        accum(dqd, dqk, ds, AT_BK + 1, 1, kd, dqk + 1, dqk, nb, NULL);
    }
    __syncthreads();
    for (int64_t i = tid; i < nq * dqk; i += blockDim.x) {
        int64_t r = i / dqk, j = i % dqk;
        dq[(t0 + r) * d0 + h * d1 + j] = dqd[i];
    }
}

static size_t bwd_kv_smem(int64_t dqk, int64_t dv) {
    return (size_t)(AT_BK * (dqk + 1) + AT_BK * (dv + 1) + AT_BK * dqk + AT_BK * dv + AT_BQ * (dqk + 1) +
                    AT_BQ * (dv + 1) + 2 * AT_BQ * (AT_BK + 1) + 2 * AT_BQ) *
           sizeof(float);
}

/* pass B: dk, dv for a key tile of one sequence (the tile map's tile:
 * keys [u0, u0 + nk)); the queries [u0, end of the sequence) in tiles from
 * u0, so from the sequence's start too; the rope part of dk into dpe_h
 * [N, H, dr] */
__global__ void __launch_bounds__(AT_THREADS)
    attn_bwd_kv_kernel(attn_in a, attn_grad_in g, float *dkv, int64_t k0, int64_t k1, float *dpe_h) {
    CUDA_DYN_SMEM(float, sm);
    int64_t dqk = a.dn + a.dr, dv = a.dv, h = blockIdx.y, s0, u0, nk, tend;
    if (!tile_of(a.tiles, a.cu, a.nseq, blockIdx.x, &s0, &u0, &nk, &tend)) return;
    float *kd = sm, *vd = kd + AT_BK * (dqk + 1), *dkd = vd + AT_BK * (dv + 1), *dvd = dkd + AT_BK * dqk;
    float *qd = dvd + AT_BK * dv, *gd = qd + AT_BQ * (dqk + 1), *pp = gd + AT_BQ * (dv + 1);
    float *ds = pp + AT_BQ * (AT_BK + 1), *L = ds + AT_BQ * (AT_BK + 1), *Dr = L + AT_BQ;
    int tid = threadIdx.x;
    load_kv(a, h, u0, nk, kd, vd);
    for (int64_t i = tid; i < AT_BK * dqk; i += blockDim.x)
        dkd[i] = 0.0f;
    for (int64_t i = tid; i < AT_BK * dv; i += blockDim.x)
        dvd[i] = 0.0f;
    __syncthreads();
    for (int64_t t0 = u0; t0 < tend; t0 += AT_BQ) { /* queries [u0, end of the sequence) */
        int64_t nq = tend - t0 < AT_BQ ? tend - t0 : AT_BQ;
        __syncthreads();
        load_q(a, h, t0, nq, qd);
        load_do(a, g, h, t0, nq, gd);
        for (int64_t r = tid; r < AT_BQ; r += blockDim.x) {
            L[r] = r < nq ? g.lse[(t0 + r) * g.l0 + h] : 0.0f;
            Dr[r] = r < nq ? g.D[(t0 + r) * a.h + h] : 0.0f;
        }
        __syncthreads();
        {
            float s4[2][4], p4[2][4];
            pair_dots(qd, dqk + 1, kd, dqk + 1, dqk, s4);
            pair_dots(gd, dv + 1, vd, dv + 1, dv, p4);
            for (int i = 0; i < 2; i++)
                for (int u = 0; u < 4; u++) {
                    int64_t r = (tid >> 3) + 16 * i, c = (tid & 7) + 8 * u, t = t0 + r, uu = u0 + c;
                    float pv = 0.0f, dsv = 0.0f;
                    if (r < nq && c < nk && uu <= t) {
                        pv = expf(a.scale * s4[i][u] - L[r]);
                        dsv = a.scale * pv * (p4[i][u] - Dr[r]);
                    }
                    pp[r * (AT_BK + 1) + c] = pv;
                    ds[r * (AT_BK + 1) + c] = dsv;
                }
        }
        __syncthreads();
        /* rows of the outputs are keys: coef(key, query) = ds[query][key] */
        accum(dkd, dqk, ds, 1, AT_BK + 1, qd, dqk + 1, dqk, nq, NULL);
        accum(dvd, dv, pp, 1, AT_BK + 1, gd, dv + 1, dv, nq, NULL);
    }
    __syncthreads();
    for (int64_t i = tid; i < nk * (a.dn + dv); i += blockDim.x) {
        int64_t c = i / (a.dn + dv), j = i % (a.dn + dv);
        dkv[(u0 + c) * k0 + h * k1 + j] = j < a.dn ? dkd[c * dqk + j] : dvd[c * dv + (j - a.dn)];
    }
    for (int64_t i = tid; i < nk * a.dr; i += blockDim.x) {
        int64_t c = i / a.dr, j = i % a.dr;
        dpe_h[((u0 + c) * a.h + h) * a.dr + j] = dkd[c * dqk + a.dn + j];
    }
}

/* dkpe[u] = sum over heads, in head order */
__global__ void attn_dkpe_kernel(float *dkpe, int64_t p0, const float *dpe_h, int64_t n, int64_t h, int64_t dr) {
    int64_t total = n * dr;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t u = e / dr, j = e % dr;
        float s = 0.0f;
        for (int64_t k = 0; k < h; k++)
            s += dpe_h[(u * h + k) * dr + j];
        dkpe[u * p0 + j] = s;
    }
}

void cuda_mla_attn_bwd(tensor *dq, tensor *dkv, tensor *dkpe, const tensor *dout, const tensor *q, const tensor *kv,
                       const tensor *kpe, const tensor *o, const tensor *lse, const tensor *cu_seqlens, float scale) {
    const char *op = "mla_attn_bwd";
    ops_attn_dims d = ops_check_mla_attn_bwd("cuda", dq, dkv, dkpe, dout, q, kv, kpe, o, lse, cu_seqlens);
    if (!d.n || !d.h) return;
    attn_in a = make_in(q, kv, kpe, cu_seqlens, d, scale);
    size_t nh = (size_t)(d.n * d.h);
    float *scr = (float *)cuda_scratch(SCR_ATTN, (nh + nh * (size_t)d.dr) * sizeof(float));
    float *D = scr, *dpe_h = scr + nh;
    CUDA_LAUNCH(attn_d_kernel, cuda_blocks((int64_t)nh * 32, 256), 256, 0, D, (const float *)dout->data,
                dout->stride[0], dout->stride[1], (const float *)o->data, o->stride[0], o->stride[1], d.n, d.h, d.dv);
    attn_grad_in g;
    g.dout = (const float *)dout->data, g.lse = (const float *)lse->data, g.D = D;
    g.g0 = dout->stride[0], g.g1 = dout->stride[1], g.l0 = lse->stride[0];
    unsigned ntiles = launch_tiles(&a);
    size_t sq = bwd_q_smem(d.dqk, d.dv), skv = bwd_kv_smem(d.dqk, d.dv);
    smem_ok(op, sq);
    smem_ok(op, skv);
#ifndef GRPO_CUDA_EMU
    CHECK_CUDA(cudaFuncSetAttribute(attn_bwd_q_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sq));
    CHECK_CUDA(cudaFuncSetAttribute(attn_bwd_kv_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)skv));
#endif
    dim3 gq(ntiles, (unsigned)d.h), gk(ntiles, (unsigned)d.h); /* query tiles, key tiles: one map (AT_BQ == AT_BK) */
    CUDA_LAUNCH(attn_bwd_q_kernel, gq, AT_THREADS, sq, a, g, (float *)dq->data, dq->stride[0], dq->stride[1]);
    CUDA_LAUNCH(attn_bwd_kv_kernel, gk, AT_THREADS, skv, a, g, (float *)dkv->data, dkv->stride[0], dkv->stride[1],
                dpe_h);
    CUDA_LAUNCH(attn_dkpe_kernel, cuda_blocks(d.n * d.dr, 256), 256, 0, (float *)dkpe->data, dkpe->stride[0],
                (const float *)dpe_h, d.n, d.h, d.dr);
}

CUDA_NS_END
