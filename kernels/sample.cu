/*
 * Token sampling on the GPU (the `sample` op), as src/tensor/cpu/lmhead.c's
 * sampler: one block per row of logits.
 *
 *   stats   argmax (lowest id on ties), the max mx and
 *           lse = log sum_j exp((z_j - mx) / T) in double
 *   greedy  (T <= 0) the argmax, logp at T = 1
 *   min-p   a floor min_p * p_max applied in the draw, after the nucleus
 *           (Hugging Face's order); p_max is the argmax's probability
 *   plain   (no top-k, top-p 1) p_j = exp((z_j - mx)/T - lse) rounded to
 *           float as the CPU does; the token is the first id (ascending)
 *           whose running sum of p passes u * mass (mass = sum of p)
 *   top-k / top-p: the row's probabilities are sorted by (p desc, id asc)
 *           with the stable radix sort (sort.cu); the k-th largest gives
 *           the top-k floor, a scan of the sorted prefix gives the last
 *           nucleus token (plast, idlast); then the same inverse-CDF draw
 *           over the kept set in ascending id order.
 *
 * Sums of probabilities are in double, as on the CPU, but in a fixed tree
 * order instead of a left-to-right loop: a draw whose u * mass falls within
 * about 1e-16 (relative) of a cumulative boundary may pick the neighbour
 * the CPU picks. Deterministic: the same logits and u give the same token
 * on every run.
 *
 * Cost: the plain path reads the row a few times per draw. The truncated
 * path sorts each row (4 radix passes over V entries per row): correct, not
 * tuned; rollouts at temperature 1 without truncation take the plain path.
 */
#include "cuda_common.cuh"

CUDA_NS_BEGIN

#define SMP_THREADS 256

typedef struct {
    double mx, lse;
    double pick;    /* argmax id (exact in a double) */
    double kth;     /* top-k floor (-1: none) */
    double plast;   /* nucleus: last kept probability, */
    double idlast;  /* and its id (V: no nucleus) */
    double nucleus; /* 1 when the nucleus applies */
    double pad;
} smp_row;

__device__ __forceinline__ float prob(float z, double mx, float inv_t, double lse) {
    return (float)exp((double)(z - (float)mx) * inv_t - lse);
}

/* Inclusive prefix sum over the block (fixed tree); *total gets the block
 * total. ws: shared [32]. */
__device__ double block_scan_incl(double v, double *ws, double *total) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 1; o < 32; o <<= 1) {
        double n = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += n;
    }
    __syncthreads(); /* ws may still be read by a previous call */
    if (lane == 31) ws[w] = v;
    __syncthreads();
    if (w == 0) {
        double x = lane < nw ? ws[lane] : 0.0;
        for (int o = 1; o < 32; o <<= 1) {
            double n = __shfl_up_sync(0xffffffffu, x, o);
            if (lane >= o) x += n;
        }
        if (lane < nw) ws[lane] = x;
    }
    __syncthreads();
    *total = ws[nw - 1];
    return v + (w > 0 ? ws[w - 1] : 0.0);
}

/* Smallest candidate over the block (INT64_MAX: none). ri: shared [32]. */
__device__ int64_t block_min_index(int64_t i, int64_t *ri) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        int64_t x = __shfl_xor_sync(0xffffffffu, i, o);
        i = x < i ? x : i;
    }
    __syncthreads();
    if (lane == 0) ri[w] = i;
    __syncthreads();
    int64_t s = lane < nw ? ri[lane] : INT64_MAX;
    for (int o = 16; o > 0; o >>= 1) {
        int64_t x = __shfl_xor_sync(0xffffffffu, s, o);
        s = x < s ? x : s;
    }
    return s;
}

/* Row statistics; with keys != NULL also the sort keys (~bits of p: the
 * ascending sort gives p descending) and ids. */
__global__ void __launch_bounds__(SMP_THREADS) smp_stats_kernel(smp_row *rows, const float *z, int64_t zld, int64_t v,
                                                                float inv_t, uint32_t *keys, int32_t *vals) {
    __shared__ float rv[32];
    __shared__ int64_t ri[32];
    __shared__ double rd[32];
    int64_t b = blockIdx.x;
    const float *zr = z + b * zld;
    cu_argmax a;
    a.v = -INFINITY, a.i = INT64_MAX;
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
        cu_argmax c;
        c.v = zr[j], c.i = j;
        a = argmax_pick(a, c);
    }
    a = block_argmax(a, rv, ri);
    if (a.i == INT64_MAX) a.i = 0, a.v = zr[0]; /* all NaN: as the CPU, id 0 */
    float mx = a.v;
    double s0 = 0;
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x)
        s0 += exp((double)(zr[j] - mx) * inv_t);
    s0 = block_sum(s0, rd);
    double lse = log(s0);
    if (threadIdx.x == 0) {
        rows[b].mx = mx;
        rows[b].lse = lse;
        rows[b].pick = (double)a.i;
    }
    if (keys)
        for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
            keys[b * v + j] = ~__float_as_uint(prob(zr[j], mx, inv_t, lse));
            vals[b * v + j] = (int32_t)j;
        }
}

/* Top-k floor and nucleus bounds from the sorted row (sk keys, sv ids). */
__global__ void __launch_bounds__(SMP_THREADS)
    smp_select_kernel(smp_row *rows, const uint32_t *sk, const int32_t *sv, int64_t v, int top_k, float top_p) {
    __shared__ int64_t ri[32];
    __shared__ double rd[32];
    int64_t b = blockIdx.x;
    const uint32_t *k = sk + b * v;
    const int32_t *ids = sv + b * v;
    float kth = -1.0f;
    if (top_k > 0 && top_k < v) kth = __uint_as_float(~k[top_k - 1]);
    int nucleus = top_p < 1.0f;
    float plast = 0.0f;
    int64_t idlast = v;
    if (nucleus) {
        /* kept by top-k: the prefix with p >= kth */
        int64_t first_out = INT64_MAX;
        for (int64_t i = threadIdx.x; i < v; i += blockDim.x)
            if (__uint_as_float(~k[i]) < kth && i < first_out) first_out = i;
        int64_t nk = block_min_index(first_out, ri);
        if (nk == INT64_MAX) nk = v;
        double mass = 0;
        for (int64_t i = threadIdx.x; i < nk; i += blockDim.x)
            mass += __uint_as_float(~k[i]);
        mass = block_sum(mass, rd);
        float t0 = (float)((1.0 - top_p) / (double)nk * mass);
        int64_t fo = INT64_MAX;
        for (int64_t i = threadIdx.x; i < nk; i += blockDim.x)
            if (__uint_as_float(~k[i]) < t0 && i < fo) fo = i;
        int64_t nc = block_min_index(fo, ri);
        if (nc == INT64_MAX) nc = nk;
        if (nc < 1) nc = 1;
        double need = top_p * mass, carry = 0;
        int64_t last = nc - 1;
        for (int64_t base = 0; base < nc - 1; base += blockDim.x) {
            int64_t i = base + threadIdx.x;
            double p = i < nc - 1 ? (double)__uint_as_float(~k[i]) : 0.0, tot;
            double incl = block_scan_incl(p, rd, &tot) + carry;
            int64_t hit = block_min_index(i < nc - 1 && incl >= need ? i : INT64_MAX, ri);
            if (hit != INT64_MAX) {
                last = hit;
                break;
            }
            carry += tot;
        }
        plast = __uint_as_float(~k[last]);
        idlast = ids[last];
    }
    if (threadIdx.x == 0) {
        rows[b].kth = kth;
        rows[b].nucleus = nucleus;
        rows[b].plast = plast;
        rows[b].idlast = (double)idlast;
    }
}

__device__ __forceinline__ int kept(float pj, int64_t j, float kth, int nucleus, float plast, int64_t idlast) {
    if (pj < kth) return 0;
    return !nucleus || pj > plast || (pj == plast && j <= idlast);
}

/* The inverse-CDF draw over the kept set in ascending id order (or the
 * argmax when greedy), and logp at the token. */
__global__ void __launch_bounds__(SMP_THREADS)
    smp_draw_kernel(int32_t *out, float *logp, const smp_row *rows, const float *z, int64_t zld, int64_t v,
                    const float *u, float inv_t, int greedy, int truncated, float min_p) {
    __shared__ int64_t ri[32];
    __shared__ double rd[32];
    int64_t b = blockIdx.x;
    const float *zr = z + b * zld;
    smp_row r = rows[b];
    int64_t pick = (int64_t)r.pick;
    if (!greedy) {
        float kth = truncated ? (float)r.kth : -1.0f, plast = (float)r.plast;
        if (min_p > 0) {
            float floor_p = min_p * prob(zr[pick], r.mx, inv_t, r.lse);
            if (floor_p > kth) kth = floor_p;
        }
        int nucleus = truncated && r.nucleus != 0.0;
        int64_t idlast = (int64_t)r.idlast;
        double mass = 0;
        int64_t lastk = -1;
        for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
            float p = prob(zr[j], r.mx, inv_t, r.lse);
            if (kept(p, j, kth, nucleus, plast, idlast)) mass += p, lastk = j;
        }
        mass = block_sum(mass, rd);
        /* the last kept id: the fallback when rounding leaves the sum <= u mass */
        int64_t neg = block_min_index(lastk >= 0 ? -lastk : INT64_MAX, ri);
        double target = (double)u[b] * mass, carry = 0;
        int64_t hit = INT64_MAX;
        for (int64_t base = 0; base < v; base += blockDim.x) {
            int64_t j = base + threadIdx.x;
            float p = j < v ? prob(zr[j], r.mx, inv_t, r.lse) : 0.0f;
            int k = j < v && kept(p, j, kth, nucleus, plast, idlast);
            double tot;
            double incl = block_scan_incl(k ? (double)p : 0.0, rd, &tot) + carry;
            hit = block_min_index(k && incl > target ? j : INT64_MAX, ri);
            if (hit != INT64_MAX) break;
            carry += tot;
        }
        if (hit != INT64_MAX)
            pick = hit;
        else if (neg != INT64_MAX)
            pick = -neg;
    }
    if (threadIdx.x == 0) {
        out[b] = (int32_t)pick;
        if (logp) logp[b] = (float)((double)(zr[pick] - (float)r.mx) * inv_t - r.lse);
    }
}

void cuda_sample(tensor *ids, tensor *logp, const tensor *logits, const tensor *u, float temperature, int top_k,
                 float top_p, float min_p) {
    const char *op = "sample";
    ops_check_sample("cuda", ids, logp, logits, u);
    int64_t b = logits->shape[0], v = logits->shape[1];
    if (v < 1) base_die("cuda %s: empty vocabulary", op);
    if (v > INT32_MAX) base_die("cuda %s: vocabulary of %lld exceeds int32 ids", op, (long long)v);
    if (!b) return;
    int greedy = temperature <= 0;
    float inv_t = temperature > 0 ? 1.0f / temperature : 1.0f;
    int truncated = !greedy && ((top_k > 0 && top_k < v) || top_p < 1.0f);
    size_t rows_bytes = (size_t)b * sizeof(smp_row);
    size_t bytes = rows_bytes + (truncated ? (size_t)(b * v) * 8 : 0);
    char *scr = (char *)cuda_scratch(SCR_SAMPLE, bytes);
    smp_row *rows = (smp_row *)scr;
    uint32_t *keys = truncated ? (uint32_t *)(scr + rows_bytes) : (uint32_t *)NULL;
    int32_t *vals = truncated ? (int32_t *)(scr + rows_bytes + (size_t)(b * v) * 4) : (int32_t *)NULL;
    CUDA_LAUNCH(smp_stats_kernel, (unsigned)b, SMP_THREADS, 0, rows, (const float *)logits->data, logits->stride[0], v,
                inv_t, keys, vals);
    if (truncated) {
        for (int64_t r = 0; r < b; r++)
            cuda_sort_pairs(keys + r * v, vals + r * v, v, 32);
        CUDA_LAUNCH(smp_select_kernel, (unsigned)b, SMP_THREADS, 0, rows, (const uint32_t *)keys, (const int32_t *)vals,
                    v, top_k, top_p);
    }
    CUDA_LAUNCH(smp_draw_kernel, (unsigned)b, SMP_THREADS, 0, (int32_t *)ids->data,
                logp ? (float *)logp->data : (float *)NULL, (const smp_row *)rows, (const float *)logits->data,
                logits->stride[0], v, (const float *)u->data, inv_t, greedy, truncated, min_p);
}

CUDA_NS_END
