/*
 * CPU ops: DeepSeekMoE routing, dispatch and combine (spec §3.8, §3.11),
 * the experts' grouped GEMM (one cpu_matmul per expert with rows), and the
 * SwiGLU activation (§3.7).
 */
#include "cpu.h"

#include <math.h>
#include <string.h>

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* Index of the largest v[i] over i in [0, n) with ok[i], lower index on
 * ties; -1 when none. */
static int argmax_masked(const float *v, const unsigned char *ok, int n) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (ok[i] && (best < 0 || v[i] > v[best])) best = i;
    return best;
}

#define MAX_EXPERTS 4096

void cpu_moe_route(tensor *idx, tensor *w, const tensor *z, const tensor *bias, int n_group,
                   int topk_group, int norm, float routed_scale) {
    const char *op = "moe_route";
    ops_check_moe_route("cpu", idx, w, z, bias);
    int64_t n = z->shape[0];
    int e = (int)z->shape[1], k = (int)idx->shape[1];
    if (e > MAX_EXPERTS || n_group < 1 || e % n_group || topk_group < 1 || topk_group > n_group ||
        k < 1 || k > topk_group * (e / n_group))
        base_die("%s: bad routing shape (experts %d, groups %d, keep %d, top-k %d)", op, e, n_group,
                 topk_group, k);
    const float *B = bias ? bias->data : NULL;
    int gs = e / n_group;
#pragma omp parallel for schedule(static) if (n * e > 16384)
    for (int64_t t = 0; t < n; t++) {
        const float *zt = cpu_row(z, t);
        float s[MAX_EXPERTS], sb[MAX_EXPERTS], gscore[MAX_EXPERTS];
        unsigned char ok[MAX_EXPERTS], gok[MAX_EXPERTS];
        for (int i = 0; i < e; i++) {
            s[i] = sigmoidf(zt[i]);
            sb[i] = s[i] + (B ? B[i] : 0.0f);
        }
        /* group score: sum of the top-2 biased scores in the group */
        for (int g = 0; g < n_group; g++) {
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
        memset(ok, 0, (size_t)e);
        for (int j = 0; j < topk_group; j++) {
            int g = argmax_masked(gscore, gok, n_group);
            gok[g] = 0;
            memset(ok + g * gs, 1, (size_t)gs);
        }
        int32_t *it = (int32_t *)cpu_row(idx, t);
        float *wt = cpu_row(w, t);
        double sum = 0;
        for (int j = 0; j < k; j++) {
            int x = argmax_masked(sb, ok, e);
            ok[x] = 0;
            it[j] = x;
            wt[j] = s[x];
            sum += s[x];
        }
        float den = norm ? (float)sum + 1e-20f : 1.0f;
        for (int j = 0; j < k; j++) wt[j] = wt[j] / den * routed_scale;
    }
}

void cpu_moe_route_bwd(tensor *dz, const tensor *dw, const tensor *z, const tensor *idx, int norm,
                       float routed_scale) {
    ops_check_moe_route_bwd("cpu", dz, dw, z, idx);
    int64_t n = z->shape[0], e = z->shape[1], k = idx->shape[1];
#pragma omp parallel for schedule(static) if (n * e > 16384)
    for (int64_t t = 0; t < n; t++) {
        const float *zt = cpu_row(z, t), *gw = cpu_row(dw, t);
        const int32_t *it = (const int32_t *)cpu_row(idx, t);
        float *dzt = cpu_row(dz, t);
        memset(dzt, 0, (size_t)e * sizeof(float));
        /* w_i = rho s_i / (S + eps) (norm) or rho s_i:
         * ds_k = rho (gw_k / (S + eps) - sum_i gw_i s_i / (S + eps)^2) */
        double ssum = 0, gs = 0;
        for (int64_t j = 0; j < k; j++) {
            float s = sigmoidf(zt[it[j]]);
            ssum += s;
            gs += (double)gw[j] * s;
        }
        double den = ssum + 1e-20;
        for (int64_t j = 0; j < k; j++) {
            float s = sigmoidf(zt[it[j]]);
            double ds = norm ? routed_scale * (gw[j] / den - gs / (den * den)) : routed_scale * gw[j];
            dzt[it[j]] = (float)(ds * s * (1.0f - s));
        }
    }
}

/* ---- the sequence-wise balance loss ---- */

/* Choices of sequence [t0, t1) per expert into cnt [e] (zeroed first). */
static void aux_counts(int64_t *cnt, const tensor *idx, int64_t t0, int64_t t1, int64_t e) {
    memset(cnt, 0, (size_t)e * sizeof(int64_t));
    for (int64_t t = t0; t < t1; t++) {
        const int32_t *it = (const int32_t *)cpu_row(idx, t);
        for (int64_t j = 0; j < idx->shape[1]; j++)
            if (it[j] >= 0 && it[j] < e) cnt[it[j]]++;
    }
}

void cpu_moe_aux_fwd(tensor *loss, const tensor *z, const tensor *idx, const tensor *cu) {
    ops_check_moe_aux("cpu", loss, NULL, z, idx, cu);
    int64_t e = z->shape[1], k = idx->shape[1], S = cu->shape[0] - 1;
    const int32_t *c = cu->data;
    if (e > MAX_EXPERTS) base_die("moe_aux_fwd: %lld experts (limit %d)", (long long)e, MAX_EXPERTS);
    int64_t cnt[MAX_EXPERTS];
    double P[MAX_EXPERTS];
    for (int64_t s = 0; s < S; s++) {
        int64_t t0 = c[s], t1 = c[s + 1], T = t1 - t0;
        aux_counts(cnt, idx, t0, t1, e);
        for (int64_t i = 0; i < e; i++) P[i] = 0;
        for (int64_t t = t0; t < t1; t++) {
            const float *zt = cpu_row(z, t);
            double sum = 0;
            for (int64_t j = 0; j < e; j++) sum += sigmoidf(zt[j]);
            for (int64_t i = 0; i < e; i++) P[i] += (double)sigmoidf(zt[i]) / sum;
        }
        double acc = 0;
        for (int64_t i = 0; i < e; i++) acc += (double)cnt[i] * P[i];
        ((float *)loss->data)[s] = T > 0 ? (float)(acc * (double)e / ((double)k * (double)T * (double)T)) : 0.0f;
    }
}

void cpu_moe_aux_bwd(tensor *dz, const tensor *z, const tensor *idx, const tensor *cu, float coef) {
    ops_check_moe_aux("cpu", NULL, dz, z, idx, cu);
    int64_t e = z->shape[1], k = idx->shape[1], S = cu->shape[0] - 1;
    const int32_t *c = cu->data;
    if (e > MAX_EXPERTS) base_die("moe_aux_bwd: %lld experts (limit %d)", (long long)e, MAX_EXPERTS);
    int64_t cnt[MAX_EXPERTS];
    double ci[MAX_EXPERTS];
    for (int64_t s = 0; s < S; s++) {
        int64_t t0 = c[s], t1 = c[s + 1], T = t1 - t0;
        if (T <= 0) continue;
        aux_counts(cnt, idx, t0, t1, e);
        for (int64_t i = 0; i < e; i++) ci[i] = (double)e * (double)cnt[i] / ((double)k * (double)T * (double)T);
#pragma omp parallel for schedule(static) if (T * e > 16384)
        for (int64_t t = t0; t < t1; t++) {
            const float *zt = cpu_row(z, t);
            float *dzt = cpu_row(dz, t);
            double sum = 0, a = 0;
            for (int64_t j = 0; j < e; j++) {
                float sj = sigmoidf(zt[j]);
                sum += sj;
                a += ci[j] * sj;
            }
            a /= sum;
            for (int64_t j = 0; j < e; j++) {
                float sj = sigmoidf(zt[j]);
                dzt[j] += (float)((double)coef * sj * (1.0f - sj) * (ci[j] - a) / sum);
            }
        }
    }
}

void cpu_moe_plan(tensor *offsets, tensor *row_tok, tensor *inv, const tensor *idx, int n_experts) {
    const char *op = "moe_plan";
    ops_check_moe_plan("cpu", offsets, row_tok, inv, idx, n_experts);
    int64_t n = idx->shape[0], k = idx->shape[1];
    int32_t *off = offsets->data, *rt = row_tok->data, *iv = inv->data;
    memset(off, 0, (size_t)(n_experts + 1) * sizeof(int32_t));
    for (int64_t t = 0; t < n; t++) {
        const int32_t *it = (const int32_t *)cpu_row(idx, t);
        for (int64_t j = 0; j < k; j++) {
            if (it[j] < 0 || it[j] >= n_experts) base_die("%s: expert %d outside [0, %d)", op, it[j], n_experts);
            off[it[j] + 1]++;
        }
    }
    for (int i = 0; i < n_experts; i++) off[i + 1] += off[i];
    /* fill in token order; off[e] serves as the cursor, then is restored */
    for (int64_t t = 0; t < n; t++) {
        const int32_t *it = (const int32_t *)cpu_row(idx, t);
        for (int64_t j = 0; j < k; j++) {
            int32_t r = off[it[j]]++;
            rt[r] = (int32_t)t;
            iv[t * k + j] = r;
        }
    }
    for (int i = n_experts; i > 0; i--) off[i] = off[i - 1];
    off[0] = 0;
}

void cpu_moe_combine(tensor *y, const tensor *ye, const tensor *w, const tensor *inv) {
    int64_t k = ops_check_moe_combine("cpu", y, ye, w, inv), n = y->shape[0], d = y->shape[1];
    if (n == 0) return;
    const int32_t *iv = cpu_i32(inv);
#pragma omp parallel for schedule(static) if (n * d > 32768)
    for (int64_t t = 0; t < n; t++) {
        float *yt = cpu_row(y, t);
        for (int64_t j = 0; j < k; j++)
            cpu_axpy_row(yt, w ? cpu_row(w, t)[j] : 1.0f, cpu_row(ye, iv[t * k + j]), d);
    }
}

void cpu_moe_combine_bwd(tensor *dye, tensor *dw, const tensor *dy, const tensor *ye,
                         const tensor *w, const tensor *inv) {
    ops_check_moe_combine_bwd("cpu", dye, dw, dy, ye, w, inv);
    int64_t n = dy->shape[0], d = dy->shape[1], k = w->shape[1];
    const int32_t *iv = cpu_i32(inv);
#pragma omp parallel for schedule(static) if (n * d > 32768)
    for (int64_t t = 0; t < n; t++) {
        const float *g = cpu_row(dy, t);
        for (int64_t j = 0; j < k; j++) {
            int32_t r = iv[t * k + j];
            float wj = cpu_row(w, t)[j];
            float *dr = cpu_row(dye, r);
            for (int64_t c = 0; c < d; c++) dr[c] = wj * g[c];
            cpu_row(dw, t)[j] = cpu_dot(g, cpu_row(ye, r), d);
        }
    }
}

/* The values of offsets [E+1] (shape checked by ops_check): 0 .. rows,
 * non-decreasing. */
static const int32_t *check_offsets(const char *op, const tensor *offsets, int64_t e, int64_t rows) {
    const int32_t *off = cpu_i32(offsets);
    if (off[0] != 0 || off[e] != rows)
        base_die("%s: offsets must run from 0 to the %lld rows (got %d .. %d)", op, (long long)rows, off[0], off[e]);
    for (int64_t i = 0; i < e; i++)
        if (off[i + 1] < off[i]) base_die("%s: offsets decrease at expert %lld", op, (long long)i);
    return off;
}

/* Expert e's weight [N, K] or [K, N] as a 2-D view of w [E, a, b]. */
static tensor expert_w(const tensor *w, int64_t e) {
    int64_t s[2] = {w->shape[1], w->shape[2]};
    tensor r = tensor_make(cpu_elem(w, e * w->stride[0]), w->dtype, w->device, 2, s);
    r.stride[0] = w->stride[1];
    r.qb = w->qb;
    return r;
}

/* Rows [r0, r0 + n) of a 2-D tensor. */
static tensor rows_of(const tensor *t, int64_t r0, int64_t n) {
    tensor r = *t;
    r.data = cpu_elem(t, r0 * t->stride[0]);
    r.shape[0] = n;
    return r;
}

void cpu_moe_matmul(tensor *y, const tensor *x, const tensor *w, const tensor *offsets, int trans_w, float alpha,
                    float beta) {
    const char *op = "moe_matmul";
    ops_check_moe_matmul("cpu", y, x, w, offsets, trans_w);
    int64_t r = x->shape[0], e = w->shape[0];
    const int32_t *off = check_offsets(op, offsets, e, r);
    for (int64_t i = 0; i < e; i++) {
        int64_t nr = off[i + 1] - off[i];
        if (nr == 0) continue;
        tensor ye = rows_of(y, off[i], nr), xe = rows_of(x, off[i], nr), we = expert_w(w, i);
        cpu_matmul(&ye, &xe, &we, 0, trans_w, alpha, beta);
    }
}

void cpu_moe_matmul_dw(tensor *dw, const tensor *dy, const tensor *x, const tensor *offsets, float alpha) {
    const char *op = "moe_matmul_dw";
    ops_check_moe_matmul_dw("cpu", dw, dy, x, offsets);
    int64_t r = x->shape[0], e = dw->shape[0];
    const int32_t *off = check_offsets(op, offsets, e, r);
    for (int64_t i = 0; i < e; i++) {
        int64_t nr = off[i + 1] - off[i];
        if (nr == 0) continue;
        tensor dye = rows_of(dy, off[i], nr), xe = rows_of(x, off[i], nr), dwe = expert_w(dw, i);
        cpu_matmul(&dwe, &dye, &xe, 1, 0, alpha, 1.0f);
    }
}

void cpu_swiglu_fwd(tensor *h, const tensor *gu) {
    ops_check_swiglu_fwd("cpu", h, gu);
    int64_t n = h->shape[0], f = h->shape[1];
#pragma omp parallel for schedule(static) if (n * f > 32768)
    for (int64_t t = 0; t < n; t++) {
        const float *g = cpu_row(gu, t), *u = g + f;
        float *y = cpu_row(h, t);
        for (int64_t j = 0; j < f; j++) y[j] = g[j] * sigmoidf(g[j]) * u[j];
    }
}

void cpu_swiglu_bwd(tensor *dgu, const tensor *dh, const tensor *gu) {
    ops_check_swiglu_bwd("cpu", dgu, dh, gu);
    int64_t n = dh->shape[0], f = dh->shape[1];
#pragma omp parallel for schedule(static) if (n * f > 32768)
    for (int64_t t = 0; t < n; t++) {
        const float *g = cpu_row(gu, t), *u = g + f, *dy = cpu_row(dh, t);
        float *dg = cpu_row(dgu, t), *du = dg + f;
        for (int64_t j = 0; j < f; j++) {
            float sg = sigmoidf(g[j]);
            float a = g[j], b = u[j], gy = dy[j];
            du[j] = gy * a * sg;
            dg[j] = gy * b * sg * (1.0f + a * (1.0f - sg));
        }
    }
}
