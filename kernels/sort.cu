/*
 * Stable counting passes and an LSD radix sort of (key, value) pairs: the
 * deterministic building block of moe_plan (group rows by expert, tokens
 * ascending), embedding_bwd (group tokens by id) and the truncated sampler
 * (order tokens by probability). No atomics whose order matters: counts are
 * integers, and placement within a chunk is sequential per digit.
 *
 * One pass over n elements in chunks of CHUNK:
 *   hist    block per chunk: counts of each digit in the chunk, stored
 *           digit-major: hist[digit * nchunks + chunk]
 *   scan    one block: exclusive prefix over hist in that order, so entry
 *           (d, c) is where chunk c's first element of digit d goes; and
 *           the per-digit totals when asked
 *   scatter block per chunk: one thread per digit walks the chunk in order
 *           and places that digit's elements (stable)
 */
#include "cuda_common.cuh"

CUDA_NS_BEGIN

#define SORT_CHUNK 1024
#define SORT_THREADS 256

__device__ __forceinline__ int sort_digit(uint32_t key, int shift, int nbins, int64_t limit, int *err, int op,
                                          int64_t i) {
    if (limit > 0) {
        if ((int64_t)key >= limit) {
            cuda_flag(err, op, op == CU_OP_PLAN ? CU_WHAT_EXPERT : CU_WHAT_INDEX, i, (int32_t)key, limit);
            return 0;
        }
        return (int)key;
    }
    return (int)((key >> shift) & (uint32_t)(nbins - 1));
}

__global__ void sort_hist_kernel(const uint32_t *keys, int64_t n, int shift, int nbins, int64_t limit, int32_t *hist,
                                 int64_t nchunks, int *err, int op) {
    CUDA_DYN_SMEM(int32_t, cnt);
    int64_t c = blockIdx.x, i0 = c * SORT_CHUNK;
    int64_t i1 = i0 + SORT_CHUNK < n ? i0 + SORT_CHUNK : n;
    for (int d = threadIdx.x; d < nbins; d += blockDim.x)
        cnt[d] = 0;
    __syncthreads();
    for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x)
        atomicAdd(&cnt[sort_digit(keys[i], shift, nbins, limit, err, op, i)], 1);
    __syncthreads();
    for (int d = threadIdx.x; d < nbins; d += blockDim.x)
        hist[(int64_t)d * nchunks + c] = cnt[d];
}

/* Exclusive scan of hist[0..len) in place (one block of 1024 threads,
 * chunks of 1024 with a running carry); totals[d] = sum of digit d's row
 * when totals is not NULL. */
__global__ void __launch_bounds__(1024)
    sort_scan_kernel(int32_t *hist, int64_t len, int64_t nchunks, int nbins, int32_t *totals) {
    __shared__ int32_t buf[1024];
    __shared__ int32_t carry;
    if (totals)
        for (int d = threadIdx.x; d < nbins; d += blockDim.x) {
            int32_t s = 0;
            for (int64_t c = 0; c < nchunks; c++)
                s += hist[(int64_t)d * nchunks + c];
            totals[d] = s;
        }
    if (threadIdx.x == 0) carry = 0;
    __syncthreads();
    for (int64_t base = 0; base < len; base += 1024) {
        int64_t i = base + threadIdx.x;
        int32_t v = i < len ? hist[i] : 0;
        buf[threadIdx.x] = v;
        __syncthreads();
        /* Hillis-Steele inclusive scan over 1024 entries */
        for (int off = 1; off < 1024; off <<= 1) {
            int32_t add = (int)threadIdx.x >= off ? buf[threadIdx.x - off] : 0;
            __syncthreads();
            buf[threadIdx.x] += add;
            __syncthreads();
        }
        int32_t incl = buf[threadIdx.x];
        if (i < len) hist[i] = carry + incl - v;
        __syncthreads();
        if (threadIdx.x == 1023) carry += incl;
        __syncthreads();
    }
}

__global__ void sort_scatter_kernel(const uint32_t *kin, const int32_t *vin, uint32_t *kout, int32_t *vout, int64_t n,
                                    int shift, int nbins, int64_t limit, const int32_t *hist, int64_t nchunks) {
    __shared__ int32_t dig[SORT_CHUNK];
    int64_t c = blockIdx.x, i0 = c * SORT_CHUNK;
    int len = (int)(i0 + SORT_CHUNK < n ? SORT_CHUNK : n - i0);
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        uint32_t k = kin[i0 + i];
        /* invalid keys were flagged by the histogram pass; digit 0 here too */
        dig[i] = limit > 0 ? ((int64_t)k < limit ? (int)k : 0) : (int)((k >> shift) & (uint32_t)(nbins - 1));
    }
    __syncthreads();
    for (int d = threadIdx.x; d < nbins; d += blockDim.x) {
        int32_t pos = hist[(int64_t)d * nchunks + c];
        for (int i = 0; i < len; i++)
            if (dig[i] == d) {
                kout[pos] = kin[i0 + i];
                vout[pos] = vin ? vin[i0 + i] : (int32_t)(i0 + i);
                pos++;
            }
    }
}

void cuda_sort_pass(const uint32_t *kin, const int32_t *vin, uint32_t *kout, int32_t *vout, int64_t n, int shift,
                    int nbins, int32_t *counts, int64_t limit, int op) {
    if (n <= 0) {
        if (counts) base_die("cuda sort: per-digit counts of an empty input");
        return;
    }
    if (nbins < 1 || nbins > 4096 || (limit <= 0 && (nbins & (nbins - 1))))
        base_die("cuda sort: %d bins (a power of two up to 4096 unless keys are digits)", nbins);
    if (n > INT32_MAX) base_die("cuda sort: %lld elements exceed int32 positions", (long long)n);
    int64_t nchunks = (n + SORT_CHUNK - 1) / SORT_CHUNK;
    int32_t *hist = (int32_t *)cuda_scratch(SCR_SORT_H, (size_t)(nchunks * nbins) * sizeof(int32_t));
    CUDA_LAUNCH(sort_hist_kernel, (unsigned)nchunks, SORT_THREADS, (size_t)nbins * sizeof(int32_t), kin, n, shift,
                nbins, limit, hist, nchunks, cuda_errbuf(), op);
    CUDA_LAUNCH(sort_scan_kernel, 1, 1024, 0, hist, nchunks * nbins, nchunks, nbins, counts);
    CUDA_LAUNCH(sort_scatter_kernel, (unsigned)nchunks, SORT_THREADS, 0, kin, vin, kout, vout, n, shift, nbins, limit,
                hist, nchunks);
}

__global__ void sort_copy_kernel(uint32_t *k, int32_t *v, const uint32_t *ks, const int32_t *vs, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        k[i] = ks[i];
        v[i] = vs[i];
    }
}

void cuda_sort_pairs(uint32_t *keys, int32_t *vals, int64_t n, int bits) {
    if (n <= 0 || bits <= 0) return;
    uint32_t *kb = (uint32_t *)cuda_scratch(SCR_SORT_A, (size_t)n * sizeof(uint32_t));
    int32_t *vb = (int32_t *)cuda_scratch(SCR_SORT_B, (size_t)n * sizeof(int32_t));
    uint32_t *ks = keys, *kd = kb;
    int32_t *vs = vals, *vd = vb;
    int passes = 0;
    for (int shift = 0; shift < bits; shift += 8, passes++) {
        int nb = bits - shift >= 8 ? 256 : 1 << (bits - shift);
        cuda_sort_pass(ks, vs, kd, vd, n, shift, nb, NULL, 0, 0);
        uint32_t *tk = ks;
        ks = kd, kd = tk;
        int32_t *tv = vs;
        vs = vd, vd = tv;
    }
    if (passes & 1) CUDA_LAUNCH(sort_copy_kernel, cuda_blocks(n, 256), 256, 0, keys, vals, kb, vb, n);
}

CUDA_NS_END
