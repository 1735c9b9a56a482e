/*
 * The latent KV cache on the GPU (spec §3.6): writing rows, and absorbed
 * MLA decode attention in one kernel per layer (plus a small combine).
 *
 * The cache is paged (ops.h): a pool of pages [NP, PS, dc+dr] per layer and
 * a block table [S, MB] of page ids per sequence; position p of sequence s
 * is row p % PS of page table[s, p / PS].
 *
 * mla_decode: block (b, split, head group) takes query b's heads
 * [hg*DEC_HG, ...) over the positions [split*DEC_SPLIT, ...) of its
 * sequence, in tiles of DEC_TILE cache rows staged in shared memory (each
 * tile's row addresses looked up in the block table first, so a tile may
 * span pages and the arithmetic is the same whatever the page size): every row is
 * read once for all heads of the group (the latent cache is shared by the
 * heads, which is what makes MLA decode cheap). Scores and the online
 * softmax are per head. A cache of at most DEC_SPLIT positions is one
 * split: the kernel writes o_lat itself (one kernel per layer). Longer
 * caches are split for parallelism: each block writes its unnormalised
 * output, running max and sum, and a combine kernel merges the splits in
 * order. Splits are fixed DEC_SPLIT positions, so a query's result depends
 * on its own length only, never on the other queries of the batch, and is
 * the same on every run.
 *
 * The cache is F32, or BF16 in bf16 mode (docs/cuda.md): rows are stored
 * rounded once and staged into the f32 shared tile, so decode reads half
 * the bytes and computes as in f32 mode (kernels templated on the dtype).
 */
#include "cuda_common.cuh"

CUDA_NS_BEGIN

#define DEC_THREADS 256
#define DEC_TILE 16
#define DEC_HG 16
#define DEC_SPLIT 512

/* ---- cache write ------------------------------------------------------------------ */

/* Block per token: row (seq[i], pos[i]) through the block table; the
 * cache in dtype CT (TENSOR_F32 or TENSOR_BF16). */
template <int CT>
__global__ void cache_write_kernel(void *cache, int64_t cs0, int64_t cs1, int64_t npages, int64_t ps,
                                   const int32_t *table, int64_t ts0, int64_t nseq, int64_t mb, const float *ckv,
                                   int64_t cld, const float *kpe, int64_t kld, const int32_t *seq, const int32_t *pos,
                                   int64_t n, int64_t dc, int64_t dr, int *err) {
    for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
        int32_t s = seq[i], p = pos[i];
        if (s < 0 || s >= nseq) {
            if (threadIdx.x == 0) cuda_flag(err, CU_OP_CACHE_WRITE, CU_WHAT_SLOT, i, s, nseq);
            continue;
        }
        if (p < 0 || p >= mb * ps) {
            if (threadIdx.x == 0) cuda_flag(err, CU_OP_CACHE_WRITE, CU_WHAT_POSITION, i, p, mb * ps);
            continue;
        }
        int32_t pg = table[s * ts0 + p / ps];
        if (pg < 0 || pg >= npages) {
            if (threadIdx.x == 0) cuda_flag(err, CU_OP_CACHE_WRITE, CU_WHAT_PAGE, i, pg, npages);
            continue;
        }
        int64_t row = pg * cs0 + (p % ps) * cs1;
        for (int64_t j = threadIdx.x; j < dc + dr; j += blockDim.x)
            cuda_store(cache, CT, row + j, j < dc ? ckv[i * cld + j] : kpe[i * kld + (j - dc)]);
    }
}

void cuda_mla_cache_write(tensor *cache, const tensor *ckv, const tensor *kpe, const tensor *table, const tensor *seq,
                          const tensor *pos) {
    ops_check_mla_cache_write("cuda", cache, ckv, kpe, table, seq, pos);
    int64_t n = ckv->shape[0], dc = ckv->shape[1], dr = kpe->shape[1];
    if (!n) return;
#define CACHE_WRITE_ARGS                                                                                               \
    cache->data, cache->stride[0], cache->stride[1], cache->shape[0], cache->shape[1], (const int32_t *)table->data,   \
        table->stride[0], table->shape[0], table->shape[1], (const float *)ckv->data, ckv->stride[0],                  \
        (const float *)kpe->data, kpe->stride[0], (const int32_t *)seq->data, (const int32_t *)pos->data, n, dc, dr,   \
        cuda_errbuf()
    if (cache->dtype == TENSOR_BF16)
        CUDA_LAUNCH(cache_write_kernel<TENSOR_BF16>, (unsigned)cu_min64(n, 65535), 128, 0, CACHE_WRITE_ARGS);
    else
        CUDA_LAUNCH(cache_write_kernel<TENSOR_F32>, (unsigned)cu_min64(n, 65535), 128, 0, CACHE_WRITE_ARGS);
#undef CACHE_WRITE_ARGS
}

/* ---- decode ---------------------------------------------------------------------------- */

typedef struct {
    const float *ql, *qp;
    const void *cache; /* F32 or BF16: decode_kernel's template argument */
    int64_t ql0, ql1, qp0, qp1, cs0, cs1, ts0; /* strides (elements) */
    const int32_t *table, *seq, *len;
    int64_t b, h, dc, dr, nseq, npages, ps, npos, nsplit, nhg; /* npos = MB * PS */
    float scale;
    float *po, *pm, *pl; /* partials [b, nsplit, h, dc], [b, nsplit, h] x 2 */
    float *out;          /* one split: o_lat written directly (no combine) */
    int64_t o0, o1;
    int *err;
} dec_args;

/* Shared memory: q [hg][dl], tile [DEC_TILE][dl + 1] (the +1 keeps the
 * threads of a warp, which read different rows, on different banks),
 * o [hg][dc], scores [hg][DEC_TILE], m, l, corr [hg]. */
static size_t dec_smem(int64_t dc, int64_t dr, int64_t hg) {
    int64_t dl = dc + dr;
    return (size_t)(hg * dl + DEC_TILE * (dl + 1) + hg * dc + hg * DEC_TILE + 3 * hg) * sizeof(float);
}

template <int CT> __global__ void __launch_bounds__(DEC_THREADS) decode_kernel(dec_args a) {
    CUDA_DYN_SMEM(float, sm);
    int64_t b = blockIdx.x, split = blockIdx.y, h0 = blockIdx.z * DEC_HG;
    int64_t hg = a.h - h0 < DEC_HG ? a.h - h0 : DEC_HG;
    int64_t dc = a.dc, dr = a.dr, dl = dc + dr;
    float *q = sm, *tile = q + hg * dl, *o = tile + DEC_TILE * (dl + 1), *sc = o + hg * dc;
    float *m = sc + hg * DEC_TILE, *l = m + hg, *corr = l + hg;
    __shared__ int64_t roff[DEC_TILE]; /* the tile's row offsets in the pool */
    __shared__ int bad;                 /* a page of this split is outside the pool */
    int tid = threadIdx.x, nt = blockDim.x;
    int32_t s = a.seq[b], n = a.len[b];
    int valid = 1;
    if (s < 0 || s >= a.nseq) {
        if (tid == 0 && split == 0 && blockIdx.z == 0) cuda_flag(a.err, CU_OP_DECODE, CU_WHAT_SLOT, b, s, a.nseq);
        valid = 0;
    }
    if (n < 1 || n > a.npos) {
        if (tid == 0 && split == 0 && blockIdx.z == 0) cuda_flag(a.err, CU_OP_DECODE, CU_WHAT_LENGTH, b, n, a.npos + 1);
        valid = 0;
    }
    int64_t u0 = split * DEC_SPLIT, u1 = valid ? (u0 + DEC_SPLIT < n ? u0 + DEC_SPLIT : n) : u0;
    int64_t pbase = (b * a.nsplit + split) * a.h + h0;
    const int32_t *trow = a.table + (valid ? (int64_t)s * a.ts0 : 0);
    if (u0 < u1) { /* the split's pages must lie in the pool (uniform: every thread reads bad) */
        if (tid == 0) bad = 0;
        __syncthreads();
        for (int64_t k = u0 / a.ps + tid; k <= (u1 - 1) / a.ps; k += nt) {
            int32_t pg = trow[k];
            if (pg < 0 || pg >= a.npages) {
                if (blockIdx.z == 0) cuda_flag(a.err, CU_OP_DECODE, CU_WHAT_PAGE, b, pg, a.npages);
                bad = 1;
            }
        }
        __syncthreads();
        if (bad) u1 = u0;
    }
    if (u0 >= u1) { /* nothing here: an empty partial */
        for (int64_t i = tid; i < hg; i += nt)
            a.pl[pbase + i] = 0.0f, a.pm[pbase + i] = -INFINITY;
        return; /* whole block */
    }
    for (int64_t i = tid; i < hg * dl; i += nt) {
        int64_t hh = i / dl, j = i % dl;
        q[i] = j < dc ? a.ql[b * a.ql0 + (h0 + hh) * a.ql1 + j] : a.qp[b * a.qp0 + (h0 + hh) * a.qp1 + (j - dc)];
    }
    for (int64_t i = tid; i < hg * dc; i += nt)
        o[i] = 0.0f;
    for (int64_t i = tid; i < hg; i += nt)
        m[i] = -INFINITY, l[i] = 0.0f;
    for (int64_t t0 = u0; t0 < u1; t0 += DEC_TILE) {
        int64_t nb = u1 - t0 < DEC_TILE ? u1 - t0 : DEC_TILE;
        __syncthreads(); /* the previous tile is consumed */
        if (tid < nb) {
            int64_t p = t0 + tid;
            roff[tid] = (int64_t)trow[p / a.ps] * a.cs0 + (p % a.ps) * a.cs1;
        }
        __syncthreads();
        for (int64_t i = tid; i < nb * dl; i += nt) {
            int64_t r = i / dl, j = i % dl;
            tile[r * (dl + 1) + j] = cuda_load(a.cache, CT, roff[r] + j);
        }
        __syncthreads();
        /* scores: one (head, row) pair per thread and step */
        for (int64_t i = tid; i < hg * DEC_TILE; i += nt) {
            int64_t hh = i / DEC_TILE, r = i % DEC_TILE;
            float v = -INFINITY;
            if (r < nb) {
                const float *qh = q + hh * dl, *row = tile + r * (dl + 1);
                float x = 0.0f, y = 0.0f;
                for (int64_t j = 0; j < dc; j++)
                    x += qh[j] * row[j];
                for (int64_t j = dc; j < dl; j++)
                    y += qh[j] * row[j];
                v = a.scale * (x + y);
            }
            sc[i] = v;
        }
        __syncthreads();
        /* online softmax per head: new max, rescale factor, probabilities */
        for (int64_t hh = tid; hh < hg; hh += nt) {
            float bm = -INFINITY;
            for (int64_t r = 0; r < nb; r++)
                bm = sc[hh * DEC_TILE + r] > bm ? sc[hh * DEC_TILE + r] : bm;
            float mo = m[hh], mn = bm > mo ? bm : mo;
            float c = mo == -INFINITY ? 0.0f : expf(mo - mn);
            float sum = 0.0f;
            for (int64_t r = 0; r < nb; r++) {
                float p = expf(sc[hh * DEC_TILE + r] - mn);
                sc[hh * DEC_TILE + r] = p;
                sum += p;
            }
            m[hh] = mn;
            l[hh] = l[hh] * c + sum;
            corr[hh] = c;
        }
        __syncthreads();
        for (int64_t i = tid; i < hg * dc; i += nt) {
            int64_t hh = i / dc, j = i % dc;
            float acc = o[i] * corr[hh];
            const float *p = sc + hh * DEC_TILE;
            for (int64_t r = 0; r < nb; r++)
                acc += p[r] * tile[r * (dl + 1) + j];
            o[i] = acc;
        }
    }
    __syncthreads();
    if (a.out) { /* the only split: normalise and write o_lat */
        for (int64_t i = tid; i < hg * dc; i += nt) {
            int64_t hh = i / dc, j = i % dc;
            a.out[b * a.o0 + (h0 + hh) * a.o1 + j] = o[i] / l[hh];
        }
        return;
    }
    for (int64_t i = tid; i < hg * dc; i += nt)
        a.po[pbase * dc + i] = o[i];
    for (int64_t i = tid; i < hg; i += nt)
        a.pm[pbase + i] = m[i], a.pl[pbase + i] = l[i];
}

/* o_lat[b, h] = sum_s e^(m_s - M) o_s / sum_s e^(m_s - M) l_s, splits in order */
__global__ void decode_combine_kernel(float *out, int64_t o0, int64_t o1, const float *po, const float *pm,
                                      const float *pl, int64_t h, int64_t dc, int64_t nsplit) {
    int64_t b = blockIdx.x, hh = blockIdx.y;
    float mx = -INFINITY;
    for (int64_t s = 0; s < nsplit; s++) {
        int64_t pi = (b * nsplit + s) * h + hh;
        if (pl[pi] > 0.0f && pm[pi] > mx) mx = pm[pi];
    }
    float den = 0.0f;
    for (int64_t s = 0; s < nsplit; s++) {
        int64_t pi = (b * nsplit + s) * h + hh;
        if (pl[pi] > 0.0f) den += expf(pm[pi] - mx) * pl[pi];
    }
    for (int64_t j = threadIdx.x; j < dc; j += blockDim.x) {
        float acc = 0.0f;
        for (int64_t s = 0; s < nsplit; s++) {
            int64_t pi = (b * nsplit + s) * h + hh;
            if (pl[pi] > 0.0f) acc += expf(pm[pi] - mx) * po[pi * dc + j];
        }
        out[b * o0 + hh * o1 + j] = acc / den;
    }
}

void cuda_mla_decode(tensor *o_lat, const tensor *q_lat, const tensor *q_pe, const tensor *cache, const tensor *table,
                     const tensor *seq, const tensor *len, float scale) {
    const char *op = "mla_decode";
    ops_check_mla_decode("cuda", o_lat, q_lat, q_pe, cache, table, seq, len);
    int64_t b = q_lat->shape[0], h = q_lat->shape[1], dc = q_lat->shape[2], dr = q_pe->shape[2];
    if (!b || !h) return;
    int64_t npos = table->shape[1] * cache->shape[1], nsplit = (npos + DEC_SPLIT - 1) / DEC_SPLIT, nhg = (h + DEC_HG - 1) / DEC_HG;
    int64_t hg = h < DEC_HG ? h : DEC_HG;
    size_t smem = dec_smem(dc, dr, hg);
    if (smem > 227 * 1024)
        base_die("cuda %s: latent rank %lld + rope %lld needs %zu bytes of shared memory (227 KiB at most)", op,
                 (long long)dc, (long long)dr, smem);
    size_t np = (size_t)(b * nsplit * h);
    float *part = (float *)cuda_scratch(SCR_DEC, (np * (size_t)dc + 2 * np) * sizeof(float));
    dec_args a;
    a.ql = (const float *)q_lat->data, a.qp = (const float *)q_pe->data, a.cache = cache->data;
    a.ql0 = q_lat->stride[0], a.ql1 = q_lat->stride[1], a.qp0 = q_pe->stride[0], a.qp1 = q_pe->stride[1];
    a.cs0 = cache->stride[0], a.cs1 = cache->stride[1], a.ts0 = table->stride[0];
    a.table = (const int32_t *)table->data, a.seq = (const int32_t *)seq->data, a.len = (const int32_t *)len->data;
    a.b = b, a.h = h, a.dc = dc, a.dr = dr, a.nseq = table->shape[0], a.npages = cache->shape[0], a.ps = cache->shape[1];
    a.npos = npos, a.nsplit = nsplit, a.nhg = nhg;
    a.scale = scale;
    a.po = part, a.pm = part + np * (size_t)dc, a.pl = a.pm + np;
    a.err = cuda_errbuf();
    int bf = cache->dtype == TENSOR_BF16;
#ifndef GRPO_CUDA_EMU
    static size_t smem_set[2]; /* raised once per new size, not every step (and not inside a graph capture) */
    if (smem > smem_set[bf]) {
        if (bf)
            CHECK_CUDA(cudaFuncSetAttribute(decode_kernel<TENSOR_BF16>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            (int)smem));
        else
            CHECK_CUDA(cudaFuncSetAttribute(decode_kernel<TENSOR_F32>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            (int)smem));
        smem_set[bf] = smem;
    }
#endif
    a.out = nsplit == 1 ? (float *)o_lat->data : (float *)NULL;
    a.o0 = o_lat->stride[0], a.o1 = o_lat->stride[1];
    dim3 grid((unsigned)b, (unsigned)nsplit, (unsigned)nhg);
    if (bf)
        CUDA_LAUNCH(decode_kernel<TENSOR_BF16>, grid, DEC_THREADS, smem, a);
    else
        CUDA_LAUNCH(decode_kernel<TENSOR_F32>, grid, DEC_THREADS, smem, a);
    if (nsplit > 1)
        CUDA_LAUNCH(decode_combine_kernel, dim3((unsigned)b, (unsigned)h), 128, 0, (float *)o_lat->data,
                    o_lat->stride[0], o_lat->stride[1], (const float *)a.po, (const float *)a.pm, (const float *)a.pl,
                    h, dc, nsplit);
}

CUDA_NS_END
