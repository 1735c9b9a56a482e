/*
 * The CPU model ops: every backward against central finite differences on
 * random inputs (directional derivatives of L = sum c * y for random c and
 * random directions), the rope conventions of spec §3.2, routing cases of
 * spec §3.8 / §8 (7), the chunked LM head against full logits, and the
 * sampler's filters.
 */
#include "common/test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/ops.h"

static const struct ops *O;

static float *rnd(int64_t n, uint64_t seed, float scale) {
    float *x = malloc((size_t)n * sizeof(float) + 4);
    test_rand_f32(x, n, seed, scale);
    return x;
}
static float *dup(const float *x, int64_t n) {
    float *y = malloc((size_t)n * sizeof(float) + 4);
    memcpy(y, x, (size_t)n * sizeof(float));
    return y;
}
static tensor T1(void *p, tensor_dtype dt, int64_t a) { return tensor_1d(p, dt, a); }
static tensor T2(void *p, int64_t a, int64_t b) { return tensor_2d(p, TENSOR_F32, a, b); }
static tensor T3(void *p, int64_t a, int64_t b, int64_t c) { return tensor_3d(p, TENSOR_F32, a, b, c); }
static double dotd(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* A differentiable function of a list of inputs, scalarised by c. */
typedef struct {
    int nin;
    float *x[4];
    int64_t n[4];
    double (*loss)(void *ctx, float *const *x); /* sum c*y of the forward */
    void (*grad)(void *ctx, float *const *x, float **g); /* g[i] = dL/dx[i] (written) */
    void *ctx;
} fd_case;

/* Compare the analytic directional derivative with central differences
 * along 3 random directions. */
static void fd_check(const char *what, fd_case *c, double eps, double tol) {
    float *g[4], *xp[4];
    for (int i = 0; i < c->nin; i++) g[i] = calloc((size_t)c->n[i] + 1, sizeof(float));
    c->grad(c->ctx, c->x, g);
    for (int dir = 0; dir < 3; dir++) {
        float *v[4];
        double an = 0;
        for (int i = 0; i < c->nin; i++) {
            v[i] = rnd(c->n[i], 900 + 10 * dir + i, 1.0f);
            an += dotd(g[i], v[i], c->n[i]);
        }
        double lp = 0, lm = 0;
        for (int s = 0; s < 2; s++) {
            for (int i = 0; i < c->nin; i++) {
                xp[i] = dup(c->x[i], c->n[i]);
                for (int64_t k = 0; k < c->n[i]; k++) xp[i][k] += (float)((s ? -eps : eps) * v[i][k]);
            }
            double l = c->loss(c->ctx, xp);
            if (s) lm = l;
            else lp = l;
            for (int i = 0; i < c->nin; i++) free(xp[i]);
        }
        double fd = (lp - lm) / (2 * eps);
        double err = fabs(fd - an) / fmax(fabs(an), 1e-3);
        printf("%-14s dir %d: analytic %+.6e  fd %+.6e  rel %.2e\n", what, dir, an, fd, err);
        if (err > tol) fail_msg("%s: finite differences disagree (analytic %g, fd %g)", what, an, fd);
        for (int i = 0; i < c->nin; i++) free(v[i]);
    }
    for (int i = 0; i < c->nin; i++) free(g[i]);
}

/* ---- rmsnorm ---- */
enum { RN = 5, RD = 24 };
static float rn_c[RN * RD];
static double rn_loss(void *ctx, float *const *x) {
    (void)ctx;
    float y[RN * RD], r[RN];
    tensor ty = T2(y, RN, RD), tr = T1(r, TENSOR_F32, RN), tx = T2(x[0], RN, RD), tw = T1(x[1], TENSOR_F32, RD);
    O->rmsnorm_fwd(&ty, &tr, &tx, &tw, 1e-5f);
    return dotd(y, rn_c, RN * RD);
}
static void rn_grad(void *ctx, float *const *x, float **g) {
    (void)ctx;
    float y[RN * RD], r[RN];
    tensor ty = T2(y, RN, RD), tr = T1(r, TENSOR_F32, RN), tx = T2(x[0], RN, RD), tw = T1(x[1], TENSOR_F32, RD);
    O->rmsnorm_fwd(&ty, &tr, &tx, &tw, 1e-5f);
    tensor dy = T2(rn_c, RN, RD), dx = T2(g[0], RN, RD), dw = T1(g[1], TENSOR_F32, RD);
    O->rmsnorm_bwd(&dx, &dw, &dy, &tx, &tw, &tr, 0);
}
static void test_fd_rmsnorm(void **s) {
    (void)s;
    test_rand_f32(rn_c, RN * RD, 1, 1.0f);
    fd_case c = {2, {rnd(RN * RD, 2, 1.0f), rnd(RD, 3, 1.0f)}, {RN * RD, RD}, rn_loss, rn_grad, NULL};
    fd_check("rmsnorm", &c, 1e-2, 2e-3);
    /* accumulate_dx adds */
    float *g0[2] = {calloc(RN * RD, 4), calloc(RD, 4)}, *g1[2] = {calloc(RN * RD, 4), calloc(RD, 4)};
    rn_grad(NULL, c.x, g0);
    for (int i = 0; i < RN * RD; i++) g1[0][i] = 1.0f;
    float y[RN * RD], r[RN];
    tensor ty = T2(y, RN, RD), tr = T1(r, TENSOR_F32, RN), tx = T2(c.x[0], RN, RD), tw = T1(c.x[1], TENSOR_F32, RD);
    O->rmsnorm_fwd(&ty, &tr, &tx, &tw, 1e-5f);
    tensor dy = T2(rn_c, RN, RD), dx = T2(g1[0], RN, RD), dw = T1(g1[1], TENSOR_F32, RD);
    O->rmsnorm_bwd(&dx, &dw, &dy, &tx, &tw, &tr, 1);
    for (int i = 0; i < RN * RD; i++) assert_true(fabsf(g1[0][i] - 1.0f - g0[0][i]) < 1e-5f);
    for (int i = 0; i < 2; i++) free(c.x[i]), free(g0[i]), free(g1[i]);
}

/* ---- rope ---- */
enum { PN = 4, PH = 3, PR = 8, PDQ = 12 };
static float pe_cos[16 * PR / 2], pe_sin[16 * PR / 2], pe_c[PN * PH * PDQ];
static int32_t pe_pos[PN] = {0, 3, 7, 15};
static void pe_tables(float factor) {
    for (int p = 0; p < 16; p++)
        for (int i = 0; i < PR / 2; i++) {
            double a = p * pow(10000.0, -2.0 * i / PR);
            pe_cos[p * PR / 2 + i] = (float)(cos(a) * factor);
            pe_sin[p * PR / 2 + i] = (float)(sin(a) * factor);
        }
}
static int pe_inter;
static double pe_loss(void *ctx, float *const *x) {
    (void)ctx;
    float y[PN * PH * PDQ];
    memcpy(y, x[0], sizeof y);
    tensor t = T3(y, PN, PH, PDQ), v = t;
    v.data = y + (PDQ - PR);
    v.shape[2] = PR; /* the rope slice of a [N, H, dqk] tensor */
    tensor pos = T1(pe_pos, TENSOR_I32, PN), tc = T2(pe_cos, 16, PR / 2), ts = T2(pe_sin, 16, PR / 2);
    O->rope_fwd(&v, &pos, &tc, &ts, pe_inter);
    return dotd(y, pe_c, PN * PH * PDQ);
}
static void pe_grad(void *ctx, float *const *x, float **g) {
    (void)ctx, (void)x;
    memcpy(g[0], pe_c, sizeof pe_c);
    tensor t = T3(g[0], PN, PH, PDQ), v = t;
    v.data = g[0] + (PDQ - PR);
    v.shape[2] = PR;
    tensor pos = T1(pe_pos, TENSOR_I32, PN), tc = T2(pe_cos, 16, PR / 2), ts = T2(pe_sin, 16, PR / 2);
    O->rope_bwd(&v, &pos, &tc, &ts, pe_inter);
}
static void test_fd_rope(void **s) {
    (void)s;
    pe_tables(1.3f); /* a YaRN attention factor != 1: the backward is the transpose */
    test_rand_f32(pe_c, PN * PH * PDQ, 5, 1.0f);
    for (pe_inter = 0; pe_inter < 2; pe_inter++) {
        fd_case c = {1, {rnd(PN * PH * PDQ, 6, 1.0f)}, {PN * PH * PDQ}, pe_loss, pe_grad, NULL};
        fd_check(pe_inter ? "rope interleaved" : "rope half", &c, 1e-2, 2e-3);
        free(c.x[0]);
    }
}

/* spec §3.2: interleaved pairs on the checkpoint layout and rotate-half on
 * the de-interleaved copy (HF) give the same q.k; the outputs are the same
 * values permuted. */
static void test_rope_conventions(void **s) {
    (void)s;
    enum { R = 64, NP = 300 };
    float *cs = malloc(NP * R / 2 * 4), *sn = malloc(NP * R / 2 * 4);
    for (int p = 0; p < NP; p++)
        for (int i = 0; i < R / 2; i++) {
            double a = p * pow(10000.0, -2.0 * i / R);
            cs[p * R / 2 + i] = (float)cos(a), sn[p * R / 2 + i] = (float)sin(a);
        }
    tensor tc = T2(cs, NP, R / 2), ts = T2(sn, NP, R / 2);
    float q[R], k[R], qi[R], ki[R], qh[R], kh[R];
    test_rand_f32(q, R, 11, 1.0f);
    test_rand_f32(k, R, 12, 1.0f);
    int32_t pq = 250, pk = 17;
    for (int i = 0; i < R / 2; i++) { /* HF de-interleave: [x0, x2, ..., x1, x3, ...] */
        qh[i] = q[2 * i], qh[i + R / 2] = q[2 * i + 1];
        kh[i] = k[2 * i], kh[i + R / 2] = k[2 * i + 1];
    }
    memcpy(qi, q, sizeof q);
    memcpy(ki, k, sizeof k);
    tensor a = T2(qi, 1, R), b = T2(ki, 1, R), c = T2(qh, 1, R), d = T2(kh, 1, R);
    tensor tpq = T1(&pq, TENSOR_I32, 1), tpk = T1(&pk, TENSOR_I32, 1);
    O->rope_fwd(&a, &tpq, &tc, &ts, 1);
    O->rope_fwd(&b, &tpk, &tc, &ts, 1);
    O->rope_fwd(&c, &tpq, &tc, &ts, 0);
    O->rope_fwd(&d, &tpk, &tc, &ts, 0);
    assert_true(fabs(dotd(qi, ki, R) - dotd(qh, kh, R)) < 1e-5);
    for (int i = 0; i < R / 2; i++) {
        assert_true(fabsf(qi[2 * i] - qh[i]) < 1e-6f);
        assert_true(fabsf(qi[2 * i + 1] - qh[i + R / 2]) < 1e-6f);
    }
    /* and the wrong convention (rotate-half on the raw layout) differs */
    memcpy(qh, q, sizeof q);
    memcpy(kh, k, sizeof k);
    O->rope_fwd(&c, &tpq, &tc, &ts, 0);
    O->rope_fwd(&d, &tpk, &tc, &ts, 0);
    assert_true(fabs(dotd(qi, ki, R) - dotd(qh, kh, R)) > 1e-3);
    /* q.k depends only on the position difference */
    float q2[R], k2[R];
    memcpy(q2, q, sizeof q);
    memcpy(k2, k, sizeof k);
    int32_t pq2 = pq - 10, pk2 = pk - 10;
    tensor e = T2(q2, 1, R), f = T2(k2, 1, R), tpq2 = T1(&pq2, TENSOR_I32, 1), tpk2 = T1(&pk2, TENSOR_I32, 1);
    O->rope_fwd(&e, &tpq2, &tc, &ts, 1);
    O->rope_fwd(&f, &tpk2, &tc, &ts, 1);
    assert_true(fabs(dotd(q2, k2, R) - dotd(qi, ki, R)) < 1e-4);
    free(cs), free(sn);
}

/* ---- attention ---- */
enum { AN = 11, AH = 2, ADN = 6, ADR = 4, ADV = 5 };
static int32_t at_cu[4] = {0, 4, 4, 11}; /* an empty sequence in the middle */
static float at_c[AN * AH * ADV];
static double at_loss(void *ctx, float *const *x) {
    (void)ctx;
    float o[AN * AH * ADV], l[AN * AH];
    tensor to = T3(o, AN, AH, ADV), tl = T2(l, AN, AH), q = T3(x[0], AN, AH, ADN + ADR);
    tensor kv = T3(x[1], AN, AH, ADN + ADV), kpe = T2(x[2], AN, ADR), cu = T1(at_cu, TENSOR_I32, 4);
    O->mla_attn_fwd(&to, &tl, &q, &kv, &kpe, &cu, 0.37f);
    return dotd(o, at_c, AN * AH * ADV);
}
static void at_grad(void *ctx, float *const *x, float **g) {
    (void)ctx;
    float o[AN * AH * ADV], l[AN * AH];
    tensor to = T3(o, AN, AH, ADV), tl = T2(l, AN, AH), q = T3(x[0], AN, AH, ADN + ADR);
    tensor kv = T3(x[1], AN, AH, ADN + ADV), kpe = T2(x[2], AN, ADR), cu = T1(at_cu, TENSOR_I32, 4);
    O->mla_attn_fwd(&to, &tl, &q, &kv, &kpe, &cu, 0.37f);
    tensor dq = T3(g[0], AN, AH, ADN + ADR), dkv = T3(g[1], AN, AH, ADN + ADV), dkpe = T2(g[2], AN, ADR);
    tensor dout = T3(at_c, AN, AH, ADV);
    O->mla_attn_bwd(&dq, &dkv, &dkpe, &dout, &q, &kv, &kpe, &to, &tl, &cu, 0.37f);
}
static void test_fd_attention(void **s) {
    (void)s;
    test_rand_f32(at_c, AN * AH * ADV, 21, 1.0f);
    fd_case c = {3, {rnd(AN * AH * (ADN + ADR), 22, 1.0f), rnd(AN * AH * (ADN + ADV), 23, 1.0f), rnd(AN * ADR, 24, 1.0f)},
                 {AN * AH * (ADN + ADR), AN * AH * (ADN + ADV), AN * ADR}, at_loss, at_grad, NULL};
    fd_check("mla_attention", &c, 1e-2, 2e-3);
    /* causality and sequence isolation: changing token 6 changes no output
     * before it nor any of the first sequence */
    float o1[AN * AH * ADV], o2[AN * AH * ADV], l[AN * AH];
    tensor to = T3(o1, AN, AH, ADV), tl = T2(l, AN, AH), q = T3(c.x[0], AN, AH, ADN + ADR);
    tensor kv = T3(c.x[1], AN, AH, ADN + ADV), kpe = T2(c.x[2], AN, ADR), cu = T1(at_cu, TENSOR_I32, 4);
    O->mla_attn_fwd(&to, &tl, &q, &kv, &kpe, &cu, 0.37f);
    c.x[1][6 * AH * (ADN + ADV) + 2] += 1.0f;
    c.x[2][6 * ADR] += 1.0f;
    to.data = o2;
    O->mla_attn_fwd(&to, &tl, &q, &kv, &kpe, &cu, 0.37f);
    assert_memory_equal(o1, o2, 6 * AH * ADV * sizeof(float));
    assert_true(memcmp(o1 + 6 * AH * ADV, o2 + 6 * AH * ADV, AH * ADV * sizeof(float)) != 0);
    for (int i = 0; i < 3; i++) free(c.x[i]);
}

/* Absorbed decode over a latent cache equals the non-absorbed attention with
 * kv = c W_kvb^T (spec §3.5 vs §3.6, self-check (1)). */
static void test_absorbed_equals_plain(void **s) {
    (void)s;
    enum { N = 9, H = 3, DC = 8, DN = 5, DR = 4, DV = 6 };
    float *c = rnd(N * DC, 31, 1.0f), *pe = rnd(N * DR, 32, 1.0f), *wkvb = rnd(H * (DN + DV) * DC, 33, 0.5f);
    float *q = rnd(N * H * (DN + DR), 34, 1.0f);
    float kv[N * H * (DN + DV)], o[N * H * DV], lse[N * H];
    tensor tc = T2(c, N, DC), tw = T2(wkvb, H * (DN + DV), DC), tkv = T2(kv, N, H * (DN + DV));
    O->matmul(&tkv, &tc, &tw, 0, 1, 1.0f, 0.0f);
    int32_t cu[2] = {0, N};
    tensor to = T3(o, N, H, DV), tl = T2(lse, N, H), tq = T3(q, N, H, DN + DR), tkv3 = T3(kv, N, H, DN + DV);
    tensor tpe = T2(pe, N, DR), tcu = T1(cu, TENSOR_I32, 2);
    O->mla_attn_fwd(&to, &tl, &tq, &tkv3, &tpe, &tcu, 0.3f);
    /* paged cache: sequence 1 of 2, pages of 4 positions scattered over a
     * pool of 4 (row 0 of the block table is never read) */
    enum { PS = 4, NP = 4 };
    float cache[NP * PS * (DC + DR)];
    memset(cache, 0, sizeof cache);
    int32_t slot[N], pos[N], len[N], table[2 * 3] = {-1, -1, -1, 3, 0, 2};
    for (int i = 0; i < N; i++) slot[i] = 1, pos[i] = i, len[i] = i + 1;
    tensor tcache = T3(cache, NP, PS, DC + DR), ts = T1(slot, TENSOR_I32, N), tp = T1(pos, TENSOR_I32, N);
    tensor ttab = tensor_2d(table, TENSOR_I32, 2, 3);
    O->mla_cache_write(&tcache, &tc, &tpe, &ttab, &ts, &tp);
    float ql[N * H * DC], ol[N * H * DC], od[N * H * DV];
    for (int t = 0; t < N; t++)
        for (int h = 0; h < H; h++)
            for (int j = 0; j < DC; j++) {
                double a = 0;
                for (int i = 0; i < DN; i++) a += (double)q[(t * H + h) * (DN + DR) + i] * wkvb[(h * (DN + DV) + i) * DC + j];
                ql[(t * H + h) * DC + j] = (float)a;
            }
    tensor tql = T3(ql, N, H, DC), tol = T3(ol, N, H, DC), tqpe = tq, tln = T1(len, TENSOR_I32, N);
    tqpe.data = q + DN;
    tqpe.shape[2] = DR;
    O->mla_decode(&tol, &tql, &tqpe, &tcache, &ttab, &ts, &tln, 0.3f);
    for (int t = 0; t < N; t++)
        for (int h = 0; h < H; h++)
            for (int v = 0; v < DV; v++) {
                double a = 0;
                for (int j = 0; j < DC; j++) a += (double)ol[(t * H + h) * DC + j] * wkvb[(h * (DN + DV) + DN + v) * DC + j];
                od[(t * H + h) * DV + v] = (float)a;
            }
    double err = test_max_abs_diff(od, o, N * H * DV);
    printf("absorbed vs plain attention: max |diff| %.3g\n", err);
    assert_true(err < 1e-5);
    free(c), free(pe), free(wkvb), free(q);
}

/* ---- routing ---- */
enum { MN = 6, ME = 8, MK = 3 };
static int32_t mr_idx[MN * MK];
static float mr_c[MN * MK], mr_bias[ME];
static int mr_norm;
static double mr_loss(void *ctx, float *const *x) {
    (void)ctx;
    float w[MN * MK];
    int32_t idx[MN * MK];
    tensor ti = {0}, tw = T2(w, MN, MK), tz = T2(x[0], MN, ME), tb = T1(mr_bias, TENSOR_F32, ME);
    ti = tensor_2d(idx, TENSOR_I32, MN, MK);
    O->moe_route(&ti, &tw, &tz, &tb, 4, 2, mr_norm, 2.5f);
    /* the choice must stay fixed under the perturbation */
    assert_memory_equal(idx, mr_idx, sizeof idx);
    return dotd(w, mr_c, MN * MK);
}
static void mr_grad(void *ctx, float *const *x, float **g) {
    (void)ctx;
    float w[MN * MK];
    tensor ti = tensor_2d(mr_idx, TENSOR_I32, MN, MK), tw = T2(w, MN, MK), tz = T2(x[0], MN, ME);
    tensor tb = T1(mr_bias, TENSOR_F32, ME);
    O->moe_route(&ti, &tw, &tz, &tb, 4, 2, mr_norm, 2.5f);
    tensor dz = T2(g[0], MN, ME), dw = T2(mr_c, MN, MK);
    O->moe_route_bwd(&dz, &dw, &tz, &ti, mr_norm, 2.5f);
    for (int t = 0; t < MN; t++) /* unchosen experts get exactly zero */
        for (int e = 0; e < ME; e++) {
            int chosen = 0;
            for (int k = 0; k < MK; k++) chosen |= mr_idx[t * MK + k] == e;
            if (!chosen) assert_true(g[0][t * ME + e] == 0.0f);
        }
}
static void test_fd_route(void **s) {
    (void)s;
    test_rand_f32(mr_c, MN * MK, 41, 1.0f);
    test_rand_f32(mr_bias, ME, 42, 0.3f);
    for (mr_norm = 0; mr_norm < 2; mr_norm++) {
        fd_case c = {1, {rnd(MN * ME, 43, 2.0f)}, {MN * ME}, mr_loss, mr_grad, NULL};
        fd_check(mr_norm ? "route norm" : "route", &c, 1e-2, 2e-3);
        free(c.x[0]);
    }
}

/* Hand-made routing (spec §8 (7)): 8 experts in 4 groups of 2, keep 2
 * groups, top-2. The bias moves the choice; the weights stay the unbiased
 * sigmoid scores. */
static void test_route_hand(void **s) {
    (void)s;
    float z[8] = {2.0f, 1.0f, 0.0f, 0.0f, -1.0f, -1.0f, 0.5f, 0.4f};
    float bias[8] = {0, 0, 0, 0, 3.0f, 0, 0, 0};
    int32_t idx[2];
    float w[2];
    tensor ti = tensor_2d(idx, TENSOR_I32, 1, 2), tw = T2(w, 1, 2), tz = T2(z, 1, 8), tb = T1(bias, TENSOR_F32, 8);
    /* without bias: groups (sum of top-2) 0: s(2)+s(1), 3: s(.5)+s(.4) -> experts 0, 1 */
    O->moe_route(&ti, &tw, &tz, NULL, 4, 2, 1, 2.5f);
    assert_int_equal(idx[0], 0);
    assert_int_equal(idx[1], 1);
    double s0 = 1 / (1 + exp(-2.0)), s1 = 1 / (1 + exp(-1.0));
    assert_true(fabs(w[0] - 2.5 * s0 / (s0 + s1)) < 1e-6);
    /* with the bias, group 2 (experts 4, 5) wins and expert 4 leads the top-2 */
    O->moe_route(&ti, &tw, &tz, &tb, 4, 2, 1, 2.5f);
    assert_int_equal(idx[0], 4);
    assert_int_equal(idx[1], 0);
    double s4 = 1 / (1 + exp(1.0));
    assert_true(fabs(w[0] - 2.5 * s4 / (s4 + s0)) < 1e-6); /* unbiased score of expert 4 */
    assert_true(fabs(w[1] - 2.5 * s0 / (s4 + s0)) < 1e-6);
    /* unnormalised: w = 2.5 s */
    O->moe_route(&ti, &tw, &tz, &tb, 4, 2, 0, 2.5f);
    assert_true(fabs(w[0] - 2.5 * s4) < 1e-6);
    /* -inf masking: with all biased scores negative the non-kept groups still never win */
    float nb[8] = {-5, -5, -5, -5, -5, -5, -5, -5};
    nb[6] = nb[7] = -4.0f;
    tensor tnb = T1(nb, TENSOR_F32, 8);
    O->moe_route(&ti, &tw, &tz, &tnb, 4, 1, 1, 1.0f);
    assert_int_equal(idx[0], 6);
    assert_int_equal(idx[1], 7);
}

/* ---- combine, gather, swiglu, embedding ---- */
enum { CN = 5, CK = 2, CD = 7, CE = 4 };
static int32_t cb_idx[CN * CK] = {0, 2, 1, 2, 3, 0, 2, 1, 0, 3};
static int32_t cb_off[CE + 1], cb_rt[CN * CK], cb_inv[CN * CK];
static float cb_c[CN * CD];
static double cb_loss(void *ctx, float *const *x) {
    (void)ctx;
    float y[CN * CD];
    memset(y, 0, sizeof y);
    tensor ty = T2(y, CN, CD), tye = T2(x[0], CN * CK, CD), tw = T2(x[1], CN, CK), ti = T1(cb_inv, TENSOR_I32, CN * CK);
    O->moe_combine(&ty, &tye, &tw, &ti);
    return dotd(y, cb_c, CN * CD);
}
static void cb_grad(void *ctx, float *const *x, float **g) {
    (void)ctx;
    tensor dye = T2(g[0], CN * CK, CD), dw = T2(g[1], CN, CK), dy = T2(cb_c, CN, CD);
    tensor tye = T2(x[0], CN * CK, CD), tw = T2(x[1], CN, CK), ti = T1(cb_inv, TENSOR_I32, CN * CK);
    O->moe_combine_bwd(&dye, &dw, &dy, &tye, &tw, &ti);
}
static void test_moe_plan_combine(void **s) {
    (void)s;
    tensor off = T1(cb_off, TENSOR_I32, CE + 1), rt = T1(cb_rt, TENSOR_I32, CN * CK), inv = T1(cb_inv, TENSOR_I32, CN * CK);
    tensor idx = tensor_2d(cb_idx, TENSOR_I32, CN, CK);
    O->moe_plan(&off, &rt, &inv, &idx, CE);
    int32_t want_off[CE + 1] = {0, 3, 5, 8, 10};
    assert_memory_equal(cb_off, want_off, sizeof want_off);
    for (int t = 0; t < CN; t++)
        for (int k = 0; k < CK; k++) {
            int32_t r = cb_inv[t * CK + k];
            assert_int_equal(cb_rt[r], t);
            assert_true(r >= cb_off[cb_idx[t * CK + k]] && r < cb_off[cb_idx[t * CK + k] + 1]);
        }
    for (int e = 0; e < CE; e++) /* tokens ascending within an expert */
        for (int r = cb_off[e] + 1; r < cb_off[e + 1]; r++) assert_true(cb_rt[r] > cb_rt[r - 1]);
    test_rand_f32(cb_c, CN * CD, 51, 1.0f);
    fd_case c = {2, {rnd(CN * CK * CD, 52, 1.0f), rnd(CN * CK, 53, 1.0f)}, {CN * CK * CD, CN * CK}, cb_loss, cb_grad, NULL};
    fd_check("moe_combine", &c, 1e-2, 1e-3);
    /* gather_rows then combine with w = NULL is its transpose: <g(x), y> = <x, g^T(y)> */
    float *x = rnd(CN * CD, 54, 1.0f), *y = rnd(CN * CK * CD, 55, 1.0f), gx[CN * CK * CD], gty[CN * CD];
    memset(gty, 0, sizeof gty);
    tensor tx = T2(x, CN, CD), tgx = T2(gx, CN * CK, CD), ty = T2(y, CN * CK, CD), tgty = T2(gty, CN, CD);
    O->gather_rows(&tgx, &tx, &rt);
    O->moe_combine(&tgty, &ty, NULL, &inv);
    assert_true(fabs(dotd(gx, y, CN * CK * CD) - dotd(x, gty, CN * CD)) < 1e-4);
    free(x), free(y), free(c.x[0]), free(c.x[1]);
}

enum { SN = 4, SF = 6 };
static float sw_c[SN * SF];
static double sw_loss(void *ctx, float *const *x) {
    (void)ctx;
    float h[SN * SF];
    tensor th = T2(h, SN, SF), tg = T2(x[0], SN, 2 * SF);
    O->swiglu_fwd(&th, &tg);
    return dotd(h, sw_c, SN * SF);
}
static void sw_grad(void *ctx, float *const *x, float **g) {
    (void)ctx;
    tensor dg = T2(g[0], SN, 2 * SF), dh = T2(sw_c, SN, SF), tg = T2(x[0], SN, 2 * SF);
    O->swiglu_bwd(&dg, &dh, &tg);
}
static void test_fd_swiglu(void **s) {
    (void)s;
    test_rand_f32(sw_c, SN * SF, 61, 1.0f);
    fd_case c = {1, {rnd(SN * 2 * SF, 62, 3.0f)}, {SN * 2 * SF}, sw_loss, sw_grad, NULL};
    fd_check("swiglu", &c, 1e-2, 1e-3);
    free(c.x[0]);
}

enum { EV = 6, ED = 5, EN = 7 };
static int32_t em_ids[EN] = {3, 0, 3, 5, 1, 3, 0};
static float em_c[EN * ED];
static double em_loss(void *ctx, float *const *x) {
    (void)ctx;
    float y[EN * ED];
    tensor ty = T2(y, EN, ED), tt = T2(x[0], EV, ED), ti = T1(em_ids, TENSOR_I32, EN);
    O->embedding_fwd(&ty, &tt, &ti);
    return dotd(y, em_c, EN * ED);
}
static void em_grad(void *ctx, float *const *x, float **g) {
    (void)ctx, (void)x;
    memset(g[0], 0, EV * ED * sizeof(float));
    tensor dt = T2(g[0], EV, ED), dy = T2(em_c, EN, ED), ti = T1(em_ids, TENSOR_I32, EN);
    O->embedding_bwd(&dt, &dy, &ti);
}
static void test_fd_embedding(void **s) {
    (void)s;
    test_rand_f32(em_c, EN * ED, 71, 1.0f);
    fd_case c = {1, {rnd(EV * ED, 72, 1.0f)}, {EV * ED}, em_loss, em_grad, NULL};
    fd_check("embedding", &c, 1e-2, 1e-4);
    free(c.x[0]);
}

/* ---- LM head ---- */
enum { LN = 7, LD = 9, LV = 23 };
static int32_t lm_tgt[LN] = {4, 22, 0, -1, 9, 9, 13};
static float lm_a[LN], lm_b[LN], lm_scale;
static double lm_loss(void *ctx, float *const *x) {
    (void)ctx;
    float lp[LN], en[LN], ls[LN], ws[3 * 5];
    tensor tlp = T1(lp, TENSOR_F32, LN), ten = T1(en, TENSOR_F32, LN), tls = T1(ls, TENSOR_F32, LN);
    tensor tx = T2(x[0], LN, LD), tw = T2(x[1], LV, LD), tt = T1(lm_tgt, TENSOR_I32, LN), tws = T2(ws, 3, 5);
    O->lmhead_fwd(&tlp, &ten, &tls, &tx, &tw, &tt, lm_scale, &tws);
    return dotd(lp, lm_a, LN) + dotd(en, lm_b, LN);
}
static void lm_grad(void *ctx, float *const *x, float **g) {
    (void)ctx;
    float lp[LN], en[LN], ls[LN], ws[3 * 5];
    tensor tlp = T1(lp, TENSOR_F32, LN), ten = T1(en, TENSOR_F32, LN), tls = T1(ls, TENSOR_F32, LN);
    tensor tx = T2(x[0], LN, LD), tw = T2(x[1], LV, LD), tt = T1(lm_tgt, TENSOR_I32, LN), tws = T2(ws, 3, 5);
    O->lmhead_fwd(&tlp, &ten, &tls, &tx, &tw, &tt, lm_scale, &tws);
    memset(g[1], 0, LV * LD * sizeof(float));
    tensor dx = T2(g[0], LN, LD), dw = T2(g[1], LV, LD), ga = T1(lm_a, TENSOR_F32, LN), gb = T1(lm_b, TENSOR_F32, LN);
    O->lmhead_bwd(&dx, &dw, &ga, &gb, &tx, &tw, &tt, &tls, &ten, lm_scale, &tws);
}
static void test_lmhead(void **s) {
    (void)s;
    float *x = rnd(LN * LD, 81, 1.0f), *w = rnd(LV * LD, 82, 1.0f);
    test_rand_f32(lm_a, LN, 83, 1.0f);
    test_rand_f32(lm_b, LN, 84, 1.0f);
    /* chunked values against the full logits (odd chunk sizes: 3 rows x 5 vocab) */
    for (lm_scale = 1.0f; lm_scale > 0.4f; lm_scale -= 0.5f) {
        float lp[LN], en[LN], ls[LN], ws[15];
        tensor tlp = T1(lp, TENSOR_F32, LN), ten = T1(en, TENSOR_F32, LN), tls = T1(ls, TENSOR_F32, LN);
        tensor tx = T2(x, LN, LD), tw = T2(w, LV, LD), tt = T1(lm_tgt, TENSOR_I32, LN), tws = T2(ws, 3, 5);
        O->lmhead_fwd(&tlp, &ten, &tls, &tx, &tw, &tt, lm_scale, &tws);
        for (int t = 0; t < LN; t++) {
            double z[LV], mx = -1e30, s0 = 0, s1 = 0;
            for (int v = 0; v < LV; v++) z[v] = lm_scale * dotd(x + t * LD, w + v * LD, LD), mx = fmax(mx, z[v]);
            for (int v = 0; v < LV; v++) s0 += exp(z[v] - mx), s1 += exp(z[v] - mx) * z[v];
            double lse = mx + log(s0);
            assert_true(fabs(ls[t] - lse) < 1e-5);
            assert_true(fabs(en[t] - (lse - s1 / s0)) < 1e-5);
            assert_true(fabs(lp[t] - (lm_tgt[t] < 0 ? 0.0 : z[lm_tgt[t]] - lse)) < 1e-5);
        }
        fd_case c = {2, {x, w}, {LN * LD, LV * LD}, lm_loss, lm_grad, NULL};
        fd_check("lmhead", &c, 1e-2, 2e-3);
    }
    free(x), free(w);
}

/* ---- sampler ---- */
static void test_sample(void **s) {
    (void)s;
    enum { V = 6 };
    float z[2 * V] = {1.0f, 3.0f, 3.0f, 0.5f, 2.0f, -1.0f, /* row 2 */ 0, 0, 0, 0, 0, 5.0f};
    int32_t ids[2];
    float lp[2], u[2] = {0.99f, 0.5f};
    tensor tz = T2(z, 2, V), ti = T1(ids, TENSOR_I32, 2), tl = T1(lp, TENSOR_F32, 2), tu = T1(u, TENSOR_F32, 2);
    /* greedy: lowest id on ties; logp at T = 1 */
    O->sample(&ti, &tl, &tz, &tu, 0.0f, 0, 1.0f, 0.0f);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 5);
    double s0 = 0;
    for (int v = 0; v < V; v++) s0 += exp(z[v] - 3.0);
    assert_true(fabs(lp[0] - (0.0 - log(s0))) < 1e-6);
    /* top-k 1 = greedy whatever u */
    O->sample(&ti, &tl, &tz, &tu, 1.0f, 1, 1.0f, 0.0f);
    assert_true(ids[0] == 1 || ids[0] == 2); /* ties at the k-th value are kept */
    /* top-k 2 keeps both 3.0 logits; u = 0.99 picks the later one in id order */
    O->sample(&ti, &tl, &tz, &tu, 1.0f, 2, 1.0f, 0.0f);
    assert_int_equal(ids[0], 2);
    /* top-p small: only the top of row 2 */
    O->sample(&ti, &tl, &tz, &tu, 0.7f, 0, 0.1f, 0.0f);
    assert_int_equal(ids[1], 5);
    /* the full distribution: u maps by inverse CDF in id order */
    float z1[V] = {0, 0, 0, 0, 0, 0}, uu[1];
    tensor tz1 = T2(z1, 1, V), ti1 = T1(ids, TENSOR_I32, 1), tu1 = T1(uu, TENSOR_F32, 1);
    for (int k = 0; k < V; k++) {
        uu[0] = (k + 0.5f) / V;
        O->sample(&ti1, NULL, &tz1, &tu1, 1.0f, 0, 1.0f, 0.0f);
        assert_int_equal(ids[0], k);
    }
    /* nucleus 0.5 over [.4 .3 .2 .1]: keeps the two largest */
    float z2[4] = {logf(0.2f), logf(0.4f), logf(0.1f), logf(0.3f)};
    tensor tz2 = T2(z2, 1, 4);
    int seen[4] = {0};
    for (int k = 0; k < 20; k++) {
        uu[0] = (k + 0.5f) / 20;
        O->sample(&ti1, NULL, &tz2, &tu1, 1.0f, 0, 0.5f, 0.0f);
        seen[ids[0]]++;
    }
    assert_int_equal(seen[0] + seen[2], 0);
    assert_true(seen[1] > 0 && seen[3] > 0);
}

int main(void) {
    O = ops_cpu();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fd_rmsnorm),        cmocka_unit_test(test_fd_rope),
        cmocka_unit_test(test_rope_conventions),  cmocka_unit_test(test_fd_attention),
        cmocka_unit_test(test_absorbed_equals_plain), cmocka_unit_test(test_fd_route),
        cmocka_unit_test(test_route_hand),        cmocka_unit_test(test_moe_plan_combine),
        cmocka_unit_test(test_fd_swiglu),         cmocka_unit_test(test_fd_embedding),
        cmocka_unit_test(test_lmhead),            cmocka_unit_test(test_sample),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
