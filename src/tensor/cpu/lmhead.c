/*
 * CPU ops: the LM head with log-softmax, entropy and their backward in
 * vocabulary chunks (spec §3.10), and the token sampler.
 *
 * lmhead_fwd walks rows in blocks of R and the vocabulary in chunks of C
 * (ws is [R, C]): z = scale x W_c^T into ws, then per row an online
 * logsumexp with m (running max), S0 = sum e^(z-m), S1 = sum e^(z-m) z, so
 *   lse = m + log S0,  H = lse - S1 / S0,  logp = z[target] - lse.
 * lmhead_bwd recomputes each chunk, turns it into dz in place and feeds two
 * GEMMs: dx += scale dz W_c, dW_c += scale dz^T x.
 */
#include "cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


/* Target ids must be inside the vocabulary (read on the host). */
static void check_targets(const char *op, const tensor *target, const ops_lm_dims *d) {
    const int32_t *y = cpu_i32(target);
    for (int64_t i = 0; i < d->n; i++)
        if (y[i] >= d->v)
            base_die("cpu %s: target[%lld] = %d outside the vocabulary (%lld)", op, (long long)i, y[i], (long long)d->v);
}

/* ws[0:rb, 0:cb] = scale * x[r0:r0+rb] @ w[v0:v0+cb]^T */
static tensor chunk_logits(tensor *ws, const tensor *x, const tensor *w, int64_t r0, int64_t rb,
                           int64_t v0, int64_t cb, float scale) {
    tensor z = *ws, xb = *x, wb = *w;
    z.shape[0] = rb;
    z.shape[1] = cb;
    xb.data = cpu_row(x, r0);
    xb.shape[0] = rb;
    wb.data = cpu_elem(w, v0 * w->stride[0]); /* w may be a stored BF16 weight */
    wb.shape[0] = cb;
    cpu_matmul(&z, &xb, &wb, 0, 1, scale, 0.0f);
    return z;
}

void cpu_lmhead_fwd(tensor *logp, tensor *ent, tensor *lse, const tensor *x, const tensor *w,
                    const tensor *target, float scale, tensor *ws) {
    ops_lm_dims d = ops_check_lmhead_fwd("cpu", logp, ent, lse, x, w, target, ws);
    check_targets("lmhead_fwd", target, &d);
    const int32_t *y = cpu_i32(target);
    float *LP = logp->data, *EN = ent->data, *LS = lse->data;
    /* per-row running statistics of the current row block */
    double *st = (double *)cpu_scratch(1, (size_t)d.r * 8);
    double *M = st, *S0 = st + d.r, *S1 = st + 2 * d.r, *ZT = st + 3 * d.r;
    for (int64_t r0 = 0; r0 < d.n; r0 += d.r) {
        int64_t rb = d.n - r0 < d.r ? d.n - r0 : d.r;
        for (int64_t i = 0; i < rb; i++) M[i] = -INFINITY, S0[i] = S1[i] = 0, ZT[i] = 0;
        for (int64_t v0 = 0; v0 < d.v; v0 += d.c) {
            int64_t cb = d.v - v0 < d.c ? d.v - v0 : d.c;
            tensor z = chunk_logits(ws, x, w, r0, rb, v0, cb, scale);
#pragma omp parallel for schedule(static) if (rb * cb > 32768)
            for (int64_t i = 0; i < rb; i++) {
                const float *zi = cpu_row(&z, i);
                float bm = zi[0];
                for (int64_t j = 1; j < cb; j++)
                    if (zi[j] > bm) bm = zi[j];
                double m = M[i] > bm ? M[i] : bm;
                double corr = M[i] == -INFINITY ? 0.0 : exp(M[i] - m);
                double s0 = 0, s1 = 0;
                for (int64_t j = 0; j < cb; j++) {
                    double e = exp((double)zi[j] - m);
                    s0 += e;
                    s1 += e * zi[j];
                }
                S0[i] = S0[i] * corr + s0;
                S1[i] = S1[i] * corr + s1;
                M[i] = m;
                int32_t t = y[r0 + i];
                if (t >= v0 && t < v0 + cb) ZT[i] = zi[t - v0];
            }
        }
        for (int64_t i = 0; i < rb; i++) {
            double l = M[i] + log(S0[i]);
            LS[r0 + i] = (float)l;
            EN[r0 + i] = (float)(l - S1[i] / S0[i]);
            LP[r0 + i] = y[r0 + i] >= 0 ? (float)(ZT[i] - l) : 0.0f;
        }
    }
}

void cpu_lmhead_bwd(tensor *dx, tensor *dw, const tensor *g_logp, const tensor *g_ent,
                    const tensor *x, const tensor *w, const tensor *target, const tensor *lse,
                    const tensor *ent, float scale, tensor *ws) {
    ops_lm_dims d = ops_check_lmhead_bwd("cpu", dx, dw, g_logp, g_ent, x, w, target, lse, ent, ws);
    check_targets("lmhead_bwd", target, &d);
    const int32_t *y = cpu_i32(target);
    const float *GL = g_logp->data, *GE = g_ent->data, *LS = lse->data, *EN = ent->data;
    for (int64_t r0 = 0; r0 < d.n; r0 += d.r) {
        int64_t rb = d.n - r0 < d.r ? d.n - r0 : d.r;
        tensor xb = *x, dxb = *dx;
        xb.data = cpu_row(x, r0);
        xb.shape[0] = rb;
        dxb.data = cpu_row(dx, r0);
        dxb.shape[0] = rb;
        for (int64_t v0 = 0; v0 < d.v; v0 += d.c) {
            int64_t cb = d.v - v0 < d.c ? d.v - v0 : d.c;
            tensor z = chunk_logits(ws, x, w, r0, rb, v0, cb, scale);
#pragma omp parallel for schedule(static) if (rb * cb > 32768)
            for (int64_t i = 0; i < rb; i++) {
                float *zi = cpu_row(&z, i);
                int64_t n = r0 + i;
                float l = LS[n], h = EN[n], gl = y[n] >= 0 ? GL[n] : 0.0f, ge = GE[n];
                for (int64_t j = 0; j < cb; j++) {
                    float lp = zi[j] - l, p = expf(lp);
                    zi[j] = -gl * p - ge * p * (lp + h);
                }
                if (y[n] >= v0 && y[n] < v0 + cb) zi[y[n] - v0] += gl;
            }
            tensor wb = *w;
            wb.data = cpu_elem(w, v0 * w->stride[0]);
            wb.shape[0] = cb;
            cpu_matmul(&dxb, &z, &wb, 0, 0, scale, v0 == 0 ? 0.0f : 1.0f);
            if (dw) {
                tensor dwb = *dw;
                dwb.data = cpu_row(dw, v0);
                dwb.shape[0] = cb;
                cpu_matmul(&dwb, &z, &xb, 1, 0, scale, 1.0f);
            }
        }
    }
}

/* ---- sampling ----------------------------------------------------------- */

/* k-th largest (1-based) of v[0..n) by quickselect on a copy. */
static float kth_largest(float *a, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1, want = k - 1; /* position in descending order */
    while (lo < hi) {
        float piv = a[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] > piv) i++;
            while (a[j] < piv) j--;
            if (i <= j) {
                float t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++, j--;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else return a[want];
    }
    return a[lo];
}

typedef struct {
    float p;
    int32_t id;
} cand;

static int cand_cmp(const void *x, const void *y) {
    const cand *a = x, *b = y;
    if (a->p != b->p) return a->p > b->p ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* Is token j (probability pj) inside the kept set? Kept: pj >= kth (top-k)
 * and, with a nucleus, before or at (plast, idlast) in (p desc, id asc). */
static inline int kept(float pj, int64_t j, float kth, int nucleus, float plast, int64_t idlast) {
    if (pj < kth) return 0;
    return !nucleus || pj > plast || (pj == plast && j <= idlast);
}

static int64_t sample_row(const float *z, int64_t v, float u, float temperature, int top_k,
                          float top_p, float min_p, float *logp_out) {
    float inv_t = temperature > 0 ? 1.0f / temperature : 1.0f;
    float mx = z[0];
    int64_t pick = 0;
    for (int64_t j = 1; j < v; j++)
        if (z[j] > mx) mx = z[j], pick = j;
    double s0 = 0;
    for (int64_t j = 0; j < v; j++) s0 += exp((double)(z[j] - mx) * inv_t);
    double lse = log(s0); /* of (z - mx) / T */
    if (temperature > 0) {
        float *p = cpu_scratch(2, (size_t)v);
        for (int64_t j = 0; j < v; j++) p[j] = (float)exp((double)(z[j] - mx) * inv_t - lse);
        float kth = -1.0f; /* top-k: keep p >= kth (probability order = logit order) */
        if (top_k > 0 && top_k < v) {
            float *tmp = cpu_scratch(3, (size_t)v);
            memcpy(tmp, p, (size_t)v * sizeof(float));
            kth = kth_largest(tmp, v, top_k);
        }
        int nucleus = top_p < 1.0f;
        float plast = 0.0f;
        int64_t idlast = v;
        if (nucleus) {
            double mass = 0;
            int64_t nk = 0;
            for (int64_t j = 0; j < v; j++)
                if (p[j] >= kth) mass += p[j], nk++;
            /* tokens under (1-top_p)/nk of the kept mass hold at most 1-top_p
             * of it together, so none of them is in the nucleus: sort only
             * the others */
            float t0 = (float)((1.0 - top_p) / (double)nk * mass);
            cand *c = (cand *)cpu_scratch(4, (size_t)v * 2);
            int64_t nc = 0;
            for (int64_t j = 0; j < v; j++)
                if (p[j] >= kth && p[j] >= t0) c[nc].p = p[j], c[nc].id = (int32_t)j, nc++;
            qsort(c, (size_t)nc, sizeof(cand), cand_cmp);
            double cum = 0, need = top_p * mass;
            int64_t last = 0;
            for (; last < nc - 1; last++) {
                cum += c[last].p;
                if (cum >= need) break;
            }
            plast = c[last].p;
            idlast = c[last].id;
        }
        /* min-p last (after the nucleus, as Hugging Face): a floor on p
         * relative to the most probable token, which is always kept */
        if (min_p > 0 && min_p * p[pick] > kth) kth = min_p * p[pick];
        double mass = 0;
        for (int64_t j = 0; j < v; j++)
            if (kept(p[j], j, kth, nucleus, plast, idlast)) mass += p[j];
        double target = (double)u * mass, acc = 0;
        for (int64_t j = 0; j < v; j++) {
            if (!kept(p[j], j, kth, nucleus, plast, idlast)) continue;
            pick = j; /* the last kept token if rounding leaves acc <= target */
            acc += p[j];
            if (acc > target) break;
        }
    }
    *logp_out = (float)((double)(z[pick] - mx) * inv_t - lse);
    return pick;
}

void cpu_sample(tensor *ids, tensor *logp, const tensor *logits, const tensor *u, float temperature,
                int top_k, float top_p, float min_p) {
    ops_check_sample("cpu", ids, logp, logits, u);
    int64_t b = logits->shape[0], v = logits->shape[1];
    int32_t *ID = ids->data;
    const float *U = u->data;
#pragma omp parallel for schedule(dynamic, 1) if (b > 1 && b * v > (1 << 17))
    for (int64_t i = 0; i < b; i++) {
        float lp;
        ID[i] = (int32_t)sample_row(cpu_row(logits, i), v, U[i], temperature, top_k, top_p, min_p, &lp);
        if (logp) ((float *)logp->data)[i] = lp;
    }
}
