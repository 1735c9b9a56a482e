/*
 * CPU ops: MLA attention (spec §3.5 training/prefill form with its backward
 * §3.11, and §3.6 absorbed decode over the latent cache).
 *
 * Forward: one task per (token, head); keys are visited in blocks of BLK
 * with an online softmax (running max m, running sum l), so no [T, T]
 * score matrix exists. The logsumexp m + log l is saved for the backward.
 *
 * Backward (FlashAttention-2 algebra): P = exp(S - lse), dP = dO V^T,
 * D = rowsum(dO * O), dS = P (dP - D), scores recomputed, not stored.
 * One task per (sequence, head) walks its (t, u <= t) pairs once:
 *   dq[t,h] = scale sum_u dS[t,u] K_h[u],  dk[u,h] = scale sum_t dS[t,u] q[t,h],
 *   dv[u,h] = sum_t P[t,u] dO[t,h],
 * with the rope part of dk into a per-head partial; dkpe[u] then sums the
 * partials in head order (k_pe is shared by the heads). Every output has
 * one owner and every sum one order, so the result does not depend on the
 * thread count.
 */
#include "cpu.h"

#include <math.h>
#include <string.h>

#define BLK 64


/* The values of cu_seqlens [S+1] (shape checked by ops_check): 0 .. N,
 * non-decreasing. */
static void check_cu(const char *op, const tensor *cu, int64_t n) {
    int64_t s = cu->shape[0] - 1;
    const int32_t *c = cpu_i32(cu);
    if (s < 0 || c[0] != 0 || c[s] != n) base_die("%s: cu_seqlens must run from 0 to N = %lld", op, (long long)n);
    for (int64_t i = 0; i < s; i++)
        if (c[i + 1] < c[i]) base_die("%s: cu_seqlens decreases at %lld", op, (long long)i);
}

/* First token of the sequence holding token t (binary search). */
static int64_t seq_start(const int32_t *cu, int64_t nseq, int64_t t) {
    int64_t lo = 0, hi = nseq; /* cu[lo] <= t < cu[hi] */
    while (hi - lo > 1) {
        int64_t mid = (lo + hi) / 2;
        if (cu[mid] <= t) lo = mid;
        else hi = mid;
    }
    return cu[lo];
}

void cpu_mla_attn_fwd(tensor *o, tensor *lse, const tensor *q, const tensor *kv, const tensor *kpe,
                      const tensor *cu_seqlens, float scale) {
    const char *op = "mla_attn_fwd";
    ops_attn_dims d = ops_check_mla_attn_fwd("cpu", o, lse, q, kv, kpe, cu_seqlens);
    check_cu(op, cu_seqlens, d.n);
    const int32_t *cu = cpu_i32(cu_seqlens);
    int64_t nseq = cu_seqlens->shape[0] - 1;
    /* work ~ N^2 H (dqk + dv) / 2 for one sequence: stay serial when tiny */
    int par = d.n * d.n * d.h * (d.dqk + d.dv) > (1 << 18);
#pragma omp parallel for collapse(2) schedule(dynamic, 8) if (par)
    for (int64_t t = 0; t < d.n; t++) {
        for (int64_t h = 0; h < d.h; h++) {
            const float *qt = cpu_at3(q, t, h);
            float *acc = cpu_at3(o, t, h);
            memset(acc, 0, (size_t)d.dv * sizeof(float));
            float m = -INFINITY, l = 0.0f, s[BLK];
            int64_t u0 = seq_start(cu, nseq, t);
            for (; u0 <= t; u0 += BLK) {
                int64_t nb = t + 1 - u0 < BLK ? t + 1 - u0 : BLK;
                float bm = -INFINITY;
                for (int64_t j = 0; j < nb; j++) {
                    int64_t u = u0 + j;
                    float sc = cpu_dot(qt, cpu_at3(kv, u, h), d.dn) + cpu_dot(qt + d.dn, cpu_row(kpe, u), d.dr);
                    s[j] = scale * sc;
                    if (s[j] > bm) bm = s[j];
                }
                float mn = bm > m ? bm : m;
                if (m != -INFINITY && mn != m) {
                    float corr = expf(m - mn);
                    l *= corr;
                    cpu_scale_row(acc, corr, d.dv);
                }
                m = mn;
                for (int64_t j = 0; j < nb; j++) {
                    float p = expf(s[j] - m);
                    l += p;
                    cpu_axpy_row(acc, p, cpu_at3(kv, u0 + j, h) + d.dn, d.dv);
                }
            }
            cpu_scale_row(acc, 1.0f / l, d.dv);
            if (lse) cpu_row(lse, t)[h] = m + logf(l);
        }
    }
}

void cpu_mla_attn_bwd(tensor *dq, tensor *dkv, tensor *dkpe, const tensor *dout, const tensor *q,
                      const tensor *kv, const tensor *kpe, const tensor *o, const tensor *lse,
                      const tensor *cu_seqlens, float scale) {
    const char *op = "mla_attn_bwd";
    ops_attn_dims d = ops_check_mla_attn_bwd("cpu", dq, dkv, dkpe, dout, q, kv, kpe, o, lse, cu_seqlens);
    check_cu(op, cu_seqlens, d.n);
    const int32_t *cu = cpu_i32(cu_seqlens);
    int64_t nseq = cu_seqlens->shape[0] - 1;

    /* D[t,h] = dO[t,h] . O[t,h] */
    float *D = cpu_scratch(0, (size_t)(d.n * d.h));
#pragma omp parallel for schedule(static) if (d.n * d.h * d.dv > 65536)
    for (int64_t t = 0; t < d.n; t++)
        for (int64_t h = 0; h < d.h; h++) D[t * d.h + h] = cpu_dot(cpu_at3(dout, t, h), cpu_at3(o, t, h), d.dv);

    int par = d.n * d.n * d.h * (d.dqk + d.dv) > (1 << 17);
    /* one task per (sequence, head): it owns dq[t,h], dkv[u,h] and a
     * per-head partial of dkpe, so every sum runs in one order */
    float *dpe_h = cpu_scratch(5, (size_t)(d.h * d.n * d.dr));
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (par)
    for (int64_t s = 0; s < nseq; s++) {
        for (int64_t h = 0; h < d.h; h++) {
            int64_t t0 = cu[s], t1 = cu[s + 1];
            float *dph = dpe_h + h * d.n * d.dr;
            for (int64_t t = t0; t < t1; t++) {
                memset(cpu_at3(dq, t, h), 0, (size_t)d.dqk * sizeof(float));
                memset(cpu_at3(dkv, t, h), 0, (size_t)(d.dn + d.dv) * sizeof(float));
                memset(dph + t * d.dr, 0, (size_t)d.dr * sizeof(float));
            }
            for (int64_t t = t0; t < t1; t++) {
                const float *qt = cpu_at3(q, t, h), *gt = cpu_at3(dout, t, h);
                float *dqt = cpu_at3(dq, t, h);
                float L = cpu_row(lse, t)[h], Dt = D[t * d.h + h];
                for (int64_t u = t0; u <= t; u++) {
                    const float *ku = cpu_at3(kv, u, h), *pe = cpu_row(kpe, u);
                    float sc = scale * (cpu_dot(qt, ku, d.dn) + cpu_dot(qt + d.dn, pe, d.dr));
                    float p = expf(sc - L);
                    float dp = cpu_dot(gt, ku + d.dn, d.dv);
                    float ds = scale * p * (dp - Dt);
                    float *dku = cpu_at3(dkv, u, h);
                    cpu_axpy_row(dqt, ds, ku, d.dn);
                    cpu_axpy_row(dqt + d.dn, ds, pe, d.dr);
                    cpu_axpy_row(dku, ds, qt, d.dn);
                    cpu_axpy_row(dph + u * d.dr, ds, qt + d.dn, d.dr);
                    cpu_axpy_row(dku + d.dn, p, gt, d.dv);
                }
            }
        }
    }
    /* dkpe[u] = sum over heads, in head order */
#pragma omp parallel for schedule(static) if (d.n * d.h * d.dr > 65536)
    for (int64_t u = 0; u < d.n; u++) {
        float *dpe = cpu_row(dkpe, u);
        memcpy(dpe, dpe_h + u * d.dr, (size_t)d.dr * sizeof(float));
        for (int64_t h = 1; h < d.h; h++) cpu_axpy_row(dpe, 1.0f, dpe_h + (h * d.n + u) * d.dr, d.dr);
    }
}

/* The cache row of (sequence s, position p) through the block table; dies
 * naming the op when s, p or the page is outside the cache. */
static float *paged_row(const char *op, const tensor *cache, const tensor *table, int64_t s, int64_t p) {
    int64_t ps = cache->shape[1], mb = table->shape[1];
    if (s < 0 || s >= table->shape[0] || p < 0 || p >= mb * ps)
        base_die("%s: (sequence %lld, position %lld) outside the block table [%lld sequences, %lld positions]", op,
                 (long long)s, (long long)p, (long long)table->shape[0], (long long)(mb * ps));
    int32_t pg = cpu_i32(table)[s * table->stride[0] + p / ps];
    if (pg < 0 || pg >= cache->shape[0])
        base_die("%s: sequence %lld position %lld maps to page %d, outside the pool [0, %lld)", op, (long long)s,
                 (long long)p, pg, (long long)cache->shape[0]);
    return cpu_at3(cache, pg, p % ps);
}

void cpu_mla_cache_write(tensor *cache, const tensor *ckv, const tensor *kpe, const tensor *table, const tensor *seq,
                         const tensor *pos) {
    const char *op = "mla_cache_write";
    ops_check_mla_cache_write("cpu", cache, ckv, kpe, table, seq, pos);
    int64_t n = ckv->shape[0], dc = ckv->shape[1], dr = kpe->shape[1];
    const int32_t *S = cpu_i32(seq), *P = cpu_i32(pos);
    for (int64_t i = 0; i < n; i++) {
        float *row = paged_row(op, cache, table, S[i], P[i]);
        memcpy(row, cpu_row(ckv, i), (size_t)dc * sizeof(float));
        memcpy(row + dc, cpu_row(kpe, i), (size_t)dr * sizeof(float));
    }
}

void cpu_mla_decode(tensor *o_lat, const tensor *q_lat, const tensor *q_pe, const tensor *cache, const tensor *table,
                    const tensor *seq, const tensor *len, float scale) {
    const char *op = "mla_decode";
    ops_check_mla_decode("cpu", o_lat, q_lat, q_pe, cache, table, seq, len);
    int64_t b = q_lat->shape[0], h = q_lat->shape[1], dc = q_lat->shape[2], dr = q_pe->shape[2];
    const int32_t *S = cpu_i32(seq), *Ln = cpu_i32(len);
    for (int64_t i = 0; i < b; i++) { /* every row read below is checked here, before the parallel loop */
        if (Ln[i] < 1)
            base_die("%s: query %lld has length %d (at least 1)", op, (long long)i, Ln[i]);
        for (int64_t u = 0; u < Ln[i]; u += cache->shape[1]) paged_row(op, cache, table, S[i], u);
        paged_row(op, cache, table, S[i], Ln[i] - 1);
    }
    int64_t work = 0;
    for (int64_t i = 0; i < b; i++) work += (int64_t)Ln[i] * h * (2 * dc + dr);
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (work > (1 << 21))
    for (int64_t i = 0; i < b; i++) {
        for (int64_t k = 0; k < h; k++) {
            const float *ql = cpu_at3(q_lat, i, k), *qp = cpu_at3(q_pe, i, k);
            float *acc = cpu_at3(o_lat, i, k);
            memset(acc, 0, (size_t)dc * sizeof(float));
            float m = -INFINITY, l = 0.0f, s[BLK];
            int64_t n = Ln[i];
            for (int64_t u0 = 0; u0 < n; u0 += BLK) {
                int64_t nb = n - u0 < BLK ? n - u0 : BLK;
                float bm = -INFINITY;
                for (int64_t j = 0; j < nb; j++) {
                    const float *row = paged_row(op, cache, table, S[i], u0 + j);
                    s[j] = scale * (cpu_dot(ql, row, dc) + cpu_dot(qp, row + dc, dr));
                    if (s[j] > bm) bm = s[j];
                }
                float mn = bm > m ? bm : m;
                if (m != -INFINITY && mn != m) {
                    float corr = expf(m - mn);
                    l *= corr;
                    cpu_scale_row(acc, corr, dc);
                }
                m = mn;
                for (int64_t j = 0; j < nb; j++) {
                    float p = expf(s[j] - m);
                    l += p;
                    cpu_axpy_row(acc, p, paged_row(op, cache, table, S[i], u0 + j), dc);
                }
            }
            cpu_scale_row(acc, 1.0f / l, dc);
        }
    }
}
