/*
 * Parity cases of the model ops (struct ops fields gather_rows .. sample):
 * each case builds its inputs from the run's seed, runs the op on the CPU
 * reference and on the backend under test, and compares every output.
 *
 * Inputs are the same bytes on both sides. Outputs the op overwrites start
 * as NaN on both sides (an overwrite must not read them); outputs it
 * accumulates into, or writes only partly (views, cache rows), start as the
 * same random values. Every output buffer carries canaries (GUARD bytes of
 * 0xA5 before and after) that must survive. Integer outputs (expert ids,
 * plans, sampled tokens) must be equal; float outputs must satisfy
 * |got - ref| <= rtol |ref| + atol rms(ref), with the NaN/Inf class equal.
 *
 * Tolerances (reviewed): F32_OP {1e-5, 1e-6}: f32 ops whose outputs are
 * short sums, softmaxes or norms computed in another order on a GPU (a
 * few ulps per element, plus cancellation near zero covered by the atol
 * term on the output's rms); attention and the LM head sum hundreds of
 * products and exponentials: ATTN {1e-4, 1e-5}.
 *
 * bf16 cases (bf16 mode, docs/cuda.md): the backend under test gets bf16
 * tensors where the op accepts them, the CPU reference the same values
 * widened to f32 (bf16 inputs are exact in f32), so an f32 output computed
 * from bf16 inputs keeps the f32 tolerance. BF16 {2^-8 + 1e-5, 1e-6}: a
 * bf16 output is the f32 result rounded once to 8 significant bits, which
 * moves it by less than 2^-8 of itself (half a spacing of 2^-7 relative,
 * at worst just above a power of two; measured err/bound reaches 0.99 of
 * 2^-8 alone), plus the f32 op's own tolerance (T_OP) for the f32 values
 * that are rounded. BF16_DZ {2^-8, 2^-6}: lmhead_bwd rounds dz to bf16
 * before its two GEMMs (the CPU does not): each term of dx and dw moves by
 * < 2^-8 of itself, random in sign, so an element moves by ~2^-8 / sqrt(3)
 * rms(ref) (a sum of random-sign terms has the rms of its terms' root sum
 * of squares); 4 of those (2^-6) cover a 4-sigma element, and a dropped
 * chunk or a wrong scale is off by O(rms). Skipped when the backend under
 * test is the CPU (it takes f32 only).
 *
 * A backend without an op prints "skip" for its cases (the CUDA backend
 * gains these ops one by one).
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/ops.h"

int parity_model_coverage(void);
int parity_model_run(const struct ops *dev, const char *filter, int verbose, uint64_t seed, int *nrun);
int parity_model_selftest(uint64_t seed);

#define GUARD 256
#define CANARY 0xA5
#define MAXB 16

typedef struct {
    double rtol, atol;
} mtol;
#define T_OP ((mtol){1e-5, 1e-6})
#define T_ATTN ((mtol){1e-4, 1e-5})
#define T_BF16 ((mtol){1.0 / 256 + 1e-5, 1e-6})
#define T_BF16_DZ ((mtol){1.0 / 256, 1.0 / 64})

typedef struct {
    void *raw;
    size_t bytes;
    int is_out;
    tensor_dtype dt;
    int64_t numel;
} mbuf;

/* One run of a case on one backend. */
typedef struct {
    const struct ops *o;
    uint64_t seed;
    int nin;           /* inputs drawn so far (the seed of the next) */
    mbuf b[MAXB];
    int nb;
    float *res;        /* outputs, concatenated, as float */
    int64_t nres;
    int ok;
} mrun;

static tensor mk(mrun *r, void *data, tensor_dtype dt, int ndim, int64_t a, int64_t b, int64_t c) {
    int64_t s[3] = {a, b, c};
    return tensor_make(data, dt, r->o->device, ndim, s);
}

static void *put(mrun *r, const void *host, tensor_dtype dt, int64_t numel, int is_out) {
    if (r->nb == MAXB) base_die("parity_model: too many buffers");
    mbuf *b = &r->b[r->nb++];
    b->bytes = (size_t)numel * tensor_dtype_size(dt);
    b->is_out = is_out;
    b->dt = dt;
    b->numel = numel;
    size_t total = b->bytes + 2 * GUARD;
    unsigned char *h = malloc(total);
    memset(h, CANARY, total);
    memcpy(h + GUARD, host, b->bytes);
    b->raw = r->o->alloc(total);
    r->o->upload(b->raw, h, total);
    free(h);
    return (unsigned char *)b->raw + GUARD;
}

/* Uniform f32 in [-range, range]: the k-th input of the case. */
static float *draw(mrun *r, int64_t n, float range) {
    base_rng g;
    base_rng_init(&g, r->seed, 0x70a1, (uint32_t)r->nin++, 0);
    float *x = malloc((size_t)n * sizeof(float) + 4);
    for (int64_t i = 0; i < n; i++) x[i] = (2.0f * base_rng_uniform(&g, (uint32_t)i) - 1.0f) * range;
    return x;
}

static tensor in_f32(mrun *r, int ndim, int64_t a, int64_t b, int64_t c, float range) {
    int64_t n = a * (ndim > 1 ? b : 1) * (ndim > 2 ? c : 1);
    float *x = draw(r, n, range);
    tensor t = mk(r, put(r, x, TENSOR_F32, n, 0), TENSOR_F32, ndim, a, b, c);
    free(x);
    return t;
}

static tensor in_i32(mrun *r, const int32_t *v, int64_t n) {
    return mk(r, put(r, v, TENSOR_I32, n, 0), TENSOR_I32, 1, n, 1, 1);
}

/* bf16 case helpers: the dtype the side under test gets (the CPU
 * reference gets f32). */
static tensor_dtype bdt(const mrun *r) { return r->o->device == TENSOR_CPU ? TENSOR_F32 : TENSOR_BF16; }

/* A bf16-valued input: uniform in [-range, range] rounded to bf16; bf16 on
 * the side under test, the same values in f32 on the CPU. */
static tensor in_bf(mrun *r, int ndim, int64_t a, int64_t b, int64_t c, float range) {
    int64_t n = a * (ndim > 1 ? b : 1) * (ndim > 2 ? c : 1);
    float *x = draw(r, n, range);
    uint16_t *h = malloc((size_t)n * 2 + 2);
    for (int64_t i = 0; i < n; i++) {
        h[i] = tensor_f32_to_bf16(x[i]);
        x[i] = tensor_bf16_to_f32(h[i]);
    }
    tensor_dtype dt = bdt(r);
    tensor t = mk(r, put(r, dt == TENSOR_BF16 ? (void *)h : (void *)x, dt, n, 0), dt, ndim, a, b, c);
    free(x), free(h);
    return t;
}

/* A bf16 output (f32 on the CPU) holding random bf16 values: the op writes
 * part of it (cache rows). */
static tensor out_bf_keep(mrun *r, int ndim, int64_t a, int64_t b, int64_t c) {
    int64_t n = a * (ndim > 1 ? b : 1) * (ndim > 2 ? c : 1);
    float *x = draw(r, n, 1.0f);
    uint16_t *h = malloc((size_t)n * 2 + 2);
    for (int64_t i = 0; i < n; i++) {
        h[i] = tensor_f32_to_bf16(x[i]);
        x[i] = tensor_bf16_to_f32(h[i]);
    }
    tensor_dtype dt = bdt(r);
    tensor t = mk(r, put(r, dt == TENSOR_BF16 ? (void *)h : (void *)x, dt, n, 1), dt, ndim, a, b, c);
    free(x), free(h);
    return t;
}

/* A bf16 output (f32 on the CPU), NaN-filled: the op overwrites it. */
static tensor out_bf(mrun *r, int ndim, int64_t a, int64_t b, int64_t c) {
    int64_t n = a * (ndim > 1 ? b : 1) * (ndim > 2 ? c : 1);
    tensor_dtype dt = bdt(r);
    void *h = malloc((size_t)n * 4 + 4);
    for (int64_t i = 0; i < n; i++) {
        if (dt == TENSOR_BF16) ((uint16_t *)h)[i] = 0x7FC0; /* NaN */
        else ((float *)h)[i] = NAN;
    }
    tensor t = mk(r, put(r, h, dt, n, 1), dt, ndim, a, b, c);
    free(h);
    return t;
}

/* An output: NaN-filled (overwritten) or random (accumulated / partly written). */
static tensor out_t(mrun *r, tensor_dtype dt, int keep, int ndim, int64_t a, int64_t b, int64_t c) {
    int64_t n = a * (ndim > 1 ? b : 1) * (ndim > 2 ? c : 1);
    void *host = malloc((size_t)n * 4 + 4);
    if (dt == TENSOR_I32) {
        for (int64_t i = 0; i < n; i++) ((int32_t *)host)[i] = -7;
    } else if (keep) {
        float *x = draw(r, n, 1.0f);
        memcpy(host, x, (size_t)n * 4);
        free(x);
    } else {
        for (int64_t i = 0; i < n; i++) ((float *)host)[i] = NAN;
    }
    tensor t = mk(r, put(r, host, dt, n, 1), dt, ndim, a, b, c);
    free(host);
    return t;
}

/* Workspace: on the device, NaN-filled, not compared. */
static tensor scratch_t(mrun *r, int64_t a, int64_t b) {
    float *host = malloc((size_t)(a * b) * 4 + 4);
    for (int64_t i = 0; i < a * b; i++) host[i] = NAN;
    tensor t = mk(r, put(r, host, TENSOR_F32, a * b, 0), TENSOR_F32, 2, a, b, 1);
    free(host);
    return t;
}

/* Fetch every output (canaries checked), free everything. */
static void collect(mrun *r) {
    r->o->sync();
    int64_t n = 0;
    for (int i = 0; i < r->nb; i++)
        if (r->b[i].is_out) n += r->b[i].numel;
    r->res = malloc((size_t)n * sizeof(float) + 4);
    r->nres = 0;
    for (int i = 0; i < r->nb; i++) {
        mbuf *b = &r->b[i];
        if (b->is_out) {
            size_t total = b->bytes + 2 * GUARD;
            unsigned char *h = malloc(total);
            r->o->download(h, b->raw, total);
            for (size_t k = 0; k < GUARD; k++)
                if (h[k] != CANARY || h[GUARD + b->bytes + k] != CANARY) {
                    printf("    %s: canary overwritten around output buffer %d\n", r->o->name, i);
                    r->ok = 0;
                    break;
                }
            tensor_to_f32(r->res + r->nres, h + GUARD, b->dt, b->numel);
            r->nres += b->numel;
            free(h);
        }
        r->o->free(b->raw);
    }
    r->nb = 0;
}

/* Columns [c0, c0+n) of the last dim (a strided view). */
static tensor cols(tensor t, int64_t c0, int64_t n) {
    t.data = (float *)t.data + c0;
    t.shape[t.ndim - 1] = n;
    return t;
}

/* ---- the cases ---------------------------------------------------------- */

static void c_gather(mrun *r) {
    int32_t idx[50];
    for (int i = 0; i < 50; i++) idx[i] = (int32_t)((i * 7 + 3) % 37);
    tensor src = in_f32(r, 2, 37, 64, 1, 1.0f), ix = in_i32(r, idx, 50);
    tensor dst = out_t(r, TENSOR_F32, 0, 2, 50, 64, 1);
    r->o->gather_rows(&dst, &src, &ix);
}

static void c_rmsnorm_fwd(mrun *r) {
    /* x is the c_kv half of a kv_a output [37, 80] (row stride 80) */
    tensor kva = in_f32(r, 2, 37, 80, 1, 2.0f), w = in_f32(r, 1, 64, 1, 1, 1.0f);
    tensor x = cols(kva, 0, 64);
    tensor y = out_t(r, TENSOR_F32, 0, 2, 37, 64, 1), rs = out_t(r, TENSOR_F32, 0, 1, 37, 1, 1);
    r->o->rmsnorm_fwd(&y, &rs, &x, &w, 1e-6f);
}

static void c_rmsnorm_bwd(mrun *r) {
    tensor x = in_f32(r, 2, 37, 320, 1, 2.0f), w = in_f32(r, 1, 320, 1, 1, 1.0f), dy = in_f32(r, 2, 37, 320, 1, 1.0f);
    float rs_h[37];
    /* rstd by its definition on the same inputs (an input here) */
    float *xv = malloc(37 * 320 * 4);
    r->o->download(xv, x.data, 37 * 320 * 4);
    for (int i = 0; i < 37; i++) {
        double ss = 0;
        for (int j = 0; j < 320; j++) ss += (double)xv[i * 320 + j] * xv[i * 320 + j];
        rs_h[i] = (float)(1.0 / sqrt(ss / 320 + 1e-6));
    }
    free(xv);
    tensor rs = mk(r, put(r, rs_h, TENSOR_F32, 37, 0), TENSOR_F32, 1, 37, 1, 1);
    tensor dx = out_t(r, TENSOR_F32, 1, 2, 37, 320, 1), dw = out_t(r, TENSOR_F32, 1, 1, 320, 1, 1);
    tensor dx2 = out_t(r, TENSOR_F32, 0, 2, 37, 320, 1);
    r->o->rmsnorm_bwd(&dx, &dw, &dy, &x, &w, &rs, 1);
    r->o->rmsnorm_bwd(&dx2, NULL, &dy, &x, &w, &rs, 0);
}

static float tabs_h[2][64 * 32];
static void rope_tables(void) {
    for (int p = 0; p < 64; p++)
        for (int i = 0; i < 32; i++) {
            double a = p * pow(10000.0, -2.0 * i / 64);
            tabs_h[0][p * 32 + i] = (float)(cos(a) * 1.1);
            tabs_h[1][p * 32 + i] = (float)(sin(a) * 1.1);
        }
}

static void c_rope(mrun *r, int bwd, int inter) {
    int32_t pos[37];
    for (int i = 0; i < 37; i++) pos[i] = (i * 11) % 64;
    rope_tables();
    tensor cs = mk(r, put(r, tabs_h[0], TENSOR_F32, 64 * 32, 0), TENSOR_F32, 2, 64, 32, 1);
    tensor sn = mk(r, put(r, tabs_h[1], TENSOR_F32, 64 * 32, 0), TENSOR_F32, 2, 64, 32, 1);
    tensor tp = in_i32(r, pos, 37);
    /* in place on the rope slice of q [37, 4, 192]: an output kept outside the view */
    tensor q = out_t(r, TENSOR_F32, 1, 3, 37, 4, 192);
    tensor v = cols(q, 128, 64);
    if (bwd) r->o->rope_bwd(&v, &tp, &cs, &sn, inter);
    else r->o->rope_fwd(&v, &tp, &cs, &sn, inter);
}
static void c_rope_fwd_i(mrun *r) { c_rope(r, 0, 1); }
static void c_rope_fwd_h(mrun *r) { c_rope(r, 0, 0); }
static void c_rope_bwd_i(mrun *r) { c_rope(r, 1, 1); }

enum { AN = 40, AH = 4, ADN = 32, ADR = 16, ADV = 24 };
static const int32_t att_cu[4] = {0, 17, 17, AN};

static void attn_inputs(mrun *r, tensor *q, tensor *kv, tensor *kpe, tensor *cu) {
    *q = in_f32(r, 3, AN, AH, ADN + ADR, 1.0f);
    *kv = in_f32(r, 3, AN, AH, ADN + ADV, 1.0f);
    tensor kva = in_f32(r, 2, AN, 64 + ADR, 1, 1.0f);
    *kpe = cols(kva, 64, ADR);
    *cu = in_i32(r, att_cu, 4);
}

static void c_attn_fwd(mrun *r) {
    tensor q, kv, kpe, cu;
    attn_inputs(r, &q, &kv, &kpe, &cu);
    tensor o = out_t(r, TENSOR_F32, 0, 3, AN, AH, ADV), lse = out_t(r, TENSOR_F32, 0, 2, AN, AH, 1);
    r->o->mla_attn_fwd(&o, &lse, &q, &kv, &kpe, &cu, 0.2f);
}

static void c_attn_bwd(mrun *r) {
    tensor q, kv, kpe, cu;
    attn_inputs(r, &q, &kv, &kpe, &cu);
    tensor dout = in_f32(r, 3, AN, AH, ADV, 1.0f);
    /* the forward's o and lse, made by the backend under test */
    tensor o = out_t(r, TENSOR_F32, 0, 3, AN, AH, ADV), lse = out_t(r, TENSOR_F32, 0, 2, AN, AH, 1);
    r->o->mla_attn_fwd(&o, &lse, &q, &kv, &kpe, &cu, 0.2f);
    tensor dq = out_t(r, TENSOR_F32, 0, 3, AN, AH, ADN + ADR), dkv = out_t(r, TENSOR_F32, 0, 3, AN, AH, ADN + ADV);
    tensor dkva = out_t(r, TENSOR_F32, 1, 2, AN, 64 + ADR, 1), dkpe = cols(dkva, 64, ADR);
    r->o->mla_attn_bwd(&dq, &dkv, &dkpe, &dout, &q, &kv, &kpe, &o, &lse, &cu, 0.2f);
}

/* Wide heads (the Moonlight / V3 head dims 128 + 64 / 128, here with
 * dv 136): 70 tokens over two sequences cross three 32-token tiles, and the
 * GPU kernels accumulate q/k rows (192) and v rows (136) in two column
 * passes of 128 */
static const int32_t att_cu2[3] = {0, 45, 70};
static void c_attn_wide(mrun *r) {
    enum { N = 70, H = 2, DN = 128, DR = 64, DV = 136 };
    tensor q = in_f32(r, 3, N, H, DN + DR, 0.3f), kv = in_f32(r, 3, N, H, DN + DV, 0.3f);
    tensor kva = in_f32(r, 2, N, 64 + DR, 1, 0.3f), kpe = cols(kva, 64, DR), cu = in_i32(r, att_cu2, 3);
    tensor dout = in_f32(r, 3, N, H, DV, 1.0f);
    tensor o = out_t(r, TENSOR_F32, 0, 3, N, H, DV), lse = out_t(r, TENSOR_F32, 0, 2, N, H, 1);
    r->o->mla_attn_fwd(&o, &lse, &q, &kv, &kpe, &cu, 0.07f);
    tensor dq = out_t(r, TENSOR_F32, 0, 3, N, H, DN + DR), dkv = out_t(r, TENSOR_F32, 0, 3, N, H, DN + DV);
    tensor dkva = out_t(r, TENSOR_F32, 1, 2, N, 64 + DR, 1), dkpe = cols(dkva, 64, DR);
    r->o->mla_attn_bwd(&dq, &dkv, &dkpe, &dout, &q, &kv, &kpe, &o, &lse, &cu, 0.07f);
}

/* A block table [rows, mb] (I32) as an input. */
static tensor in_table(mrun *r, const int32_t *v, int64_t rows, int64_t mb) {
    return mk(r, put(r, v, TENSOR_I32, rows * mb, 0), TENSOR_I32, 2, rows, mb, 1);
}

/* Paged writes: a pool of 6 pages of 4 positions, 3 sequences of up to 5
 * pages; pages scattered over the pool, page 3 and the unmapped entries
 * (-1) never touched. */
static void c_cache_write(mrun *r) {
    int32_t seq[7] = {2, 0, 2, 1, 2, 0, 1}, pos[7] = {0, 5, 19, 3, 7, 6, 0};
    int32_t table[3 * 5] = {-1, 4, -1, -1, -1, /**/ 1, -1, -1, -1, -1, /**/ 5, 0, -1, -1, 2};
    tensor ckv = in_f32(r, 2, 7, 64, 1, 1.0f), kva = in_f32(r, 2, 7, 64 + 16, 1, 1.0f), kpe = cols(kva, 64, 16);
    tensor ts = in_i32(r, seq, 7), tp = in_i32(r, pos, 7), tt = in_table(r, table, 3, 5);
    tensor cache = out_t(r, TENSOR_F32, 1, 3, 6, 4, 80);
    r->o->mla_cache_write(&cache, &ckv, &kpe, &tt, &ts, &tp);
}

/* Pages of 7 positions (a 16-row tile of the GPU kernel spans pages);
 * sequence 3 shares its first two pages with sequence 2 (a prompt shared by
 * two samples); row 1 of the table is unmapped and never read. */
static void c_decode(mrun *r) {
    int32_t seq[3] = {2, 0, 3}, len[3] = {30, 1, 17};
    int32_t table[4 * 5] = {4, -1, -1, -1, -1, /**/ -1, -1, -1, -1, -1, /**/ 9, 3, 11, 0, 6, /**/ 9, 3, 7, -1, -1};
    tensor cache = in_f32(r, 3, 12, 7, 80, 1.0f), ql = in_f32(r, 3, 3, 4, 64, 1.0f);
    tensor q = in_f32(r, 3, 3, 4, 48 + 16, 1.0f), qpe = cols(q, 48, 16);
    tensor ts = in_i32(r, seq, 3), tl = in_i32(r, len, 3), tt = in_table(r, table, 4, 5);
    tensor ol = out_t(r, TENSOR_F32, 0, 3, 3, 4, 64);
    r->o->mla_decode(&ol, &ql, &qpe, &cache, &tt, &ts, &tl, 0.15f);
}

/* 1100 positions in pages of 48 (23 pages, 1104 positions): three
 * 512-position splits on the GPU, merged by the combine kernel (lengths end
 * inside the first, second, third); sequence 0 shares its first 4 pages
 * with sequence 1, the rest of the pool is a permutation. */
static void decode_long(mrun *r, int bf) {
    enum { PS = 48, MB = 23, NP = 36 };
    int32_t seq[3] = {1, 0, 1}, len[3] = {1100, 513, 7}, table[2 * MB];
    int used[NP] = {0};
    for (int k = 0; k < MB; k++) table[MB + k] = (k * 5 + 3) % NP, used[(k * 5 + 3) % NP] = 1;
    for (int k = 0, next = 0; k < MB; k++) {
        if (k < 4) {
            table[k] = table[MB + k];
        } else if (k < 11) {
            while (used[next]) next++;
            table[k] = next, used[next] = 1;
        } else {
            table[k] = -1;
        }
    }
    tensor cache = bf ? in_bf(r, 3, NP, PS, 40, 1.0f) : in_f32(r, 3, NP, PS, 40, 1.0f);
    tensor ql = in_f32(r, 3, 3, 20, 32, 1.0f);
    tensor q = in_f32(r, 3, 3, 20, 24 + 8, 1.0f), qpe = cols(q, 24, 8);
    tensor ts = in_i32(r, seq, 3), tl = in_i32(r, len, 3), tt = in_table(r, table, 2, MB);
    tensor ol = out_t(r, TENSOR_F32, 0, 3, 3, 20, 32);
    r->o->mla_decode(&ol, &ql, &qpe, &cache, &tt, &ts, &tl, 0.2f);
}
static void c_decode_long(mrun *r) { decode_long(r, 0); }
static void c_decode_long_bf(mrun *r) { decode_long(r, 1); }

static void c_route(mrun *r, int norm) {
    tensor z = in_f32(r, 2, 37, 16, 1, 3.0f), bias = in_f32(r, 1, 16, 1, 1, 0.5f);
    tensor idx = out_t(r, TENSOR_I32, 0, 2, 37, 3, 1), w = out_t(r, TENSOR_F32, 0, 2, 37, 3, 1);
    r->o->moe_route(&idx, &w, &z, &bias, 4, 2, norm, 2.5f);
}
static void c_route_n(mrun *r) { c_route(r, 1); }
static void c_route_u(mrun *r) { c_route(r, 0); }

static void c_route_bwd(mrun *r) {
    int32_t idx[37 * 3];
    for (int t = 0; t < 37; t++)
        for (int k = 0; k < 3; k++) idx[t * 3 + k] = (int32_t)((t + 5 * k) % 16);
    tensor z = in_f32(r, 2, 37, 16, 1, 3.0f), dw = in_f32(r, 2, 37, 3, 1, 1.0f);
    tensor ti = mk(r, put(r, idx, TENSOR_I32, 37 * 3, 0), TENSOR_I32, 2, 37, 3, 1);
    tensor dz = out_t(r, TENSOR_F32, 0, 2, 37, 16, 1), dz2 = out_t(r, TENSOR_F32, 0, 2, 37, 16, 1);
    r->o->moe_route_bwd(&dz, &dw, &z, &ti, 1, 2.5f);
    r->o->moe_route_bwd(&dz2, &dw, &z, &ti, 0, 2.5f);
}

/* The sequence-wise balance loss: 3 sequences (one empty, one over a
 * CUDA block's 128-token chunk), 16 experts, top-3 choices as a router
 * would make them (distinct per token), loss and dz (accumulated). */
static void aux_case(mrun *r, int bwd) {
    enum { AN = 200, AE = 16, AK = 3 };
    static int32_t idx[AN * AK];
    for (int t = 0; t < AN; t++)
        for (int k = 0; k < AK; k++) idx[t * AK + k] = (int32_t)((t * 7 + k * (1 + t % 5)) % AE);
    int32_t cu[4] = {0, 150, 150, AN};
    tensor z = in_f32(r, 2, AN, AE, 1, 3.0f), tc = in_i32(r, cu, 4);
    tensor ti = mk(r, put(r, idx, TENSOR_I32, AN * AK, 0), TENSOR_I32, 2, AN, AK, 1);
    if (!bwd) {
        tensor loss = out_t(r, TENSOR_F32, 0, 1, 3, 1, 1);
        r->o->moe_aux_fwd(&loss, &z, &ti, &tc);
    } else {
        tensor dz = out_t(r, TENSOR_F32, 1, 2, AN, AE, 1);
        r->o->moe_aux_bwd(&dz, &z, &ti, &tc, 0.37f);
    }
}
static void c_aux_fwd(mrun *r) { aux_case(r, 0); }
static void c_aux_bwd(mrun *r) { aux_case(r, 1); }

static int32_t plan_idx[37 * 3];
static void make_idx(void) {
    for (int t = 0; t < 37; t++)
        for (int k = 0; k < 3; k++) plan_idx[t * 3 + k] = (int32_t)((t * 3 + 7 * k) % 10);
}

static void c_plan(mrun *r) {
    make_idx();
    tensor ti = mk(r, put(r, plan_idx, TENSOR_I32, 37 * 3, 0), TENSOR_I32, 2, 37, 3, 1);
    tensor off = out_t(r, TENSOR_I32, 0, 1, 11, 1, 1), rt = out_t(r, TENSOR_I32, 0, 1, 37 * 3, 1, 1);
    tensor inv = out_t(r, TENSOR_I32, 0, 1, 37 * 3, 1, 1);
    r->o->moe_plan(&off, &rt, &inv, &ti, 10);
}

/* inv as moe_plan makes it, computed here so the combine cases do not
 * depend on the backend's plan. */
static void host_inv(int32_t *inv) {
    make_idx();
    int cnt[11] = {0};
    for (int i = 0; i < 37 * 3; i++) cnt[plan_idx[i] + 1]++;
    for (int e = 0; e < 10; e++) cnt[e + 1] += cnt[e];
    for (int i = 0; i < 37 * 3; i++) inv[i] = cnt[plan_idx[i]]++;
}

static void c_combine(mrun *r) {
    int32_t inv[37 * 3];
    host_inv(inv);
    tensor ye = in_f32(r, 2, 37 * 3, 48, 1, 1.0f), w = in_f32(r, 2, 37, 3, 1, 1.0f), ti = in_i32(r, inv, 37 * 3);
    tensor y = out_t(r, TENSOR_F32, 1, 2, 37, 48, 1), y2 = out_t(r, TENSOR_F32, 1, 2, 37, 48, 1);
    r->o->moe_combine(&y, &ye, &w, &ti);
    r->o->moe_combine(&y2, &ye, NULL, &ti);
}

static void c_combine_bwd(mrun *r) {
    int32_t inv[37 * 3];
    host_inv(inv);
    tensor ye = in_f32(r, 2, 37 * 3, 48, 1, 1.0f), w = in_f32(r, 2, 37, 3, 1, 1.0f), ti = in_i32(r, inv, 37 * 3);
    tensor dy = in_f32(r, 2, 37, 48, 1, 1.0f);
    tensor dye = out_t(r, TENSOR_F32, 0, 2, 37 * 3, 48, 1), dw = out_t(r, TENSOR_F32, 0, 2, 37, 3, 1);
    r->o->moe_combine_bwd(&dye, &dw, &dy, &ye, &w, &ti);
}

/* Grouped expert GEMM: 6 experts over 40 rows, two without rows; K = 70
 * and N = 36 cross the kernel's tile edges (32, 64) */
static const int32_t mm_off[7] = {0, 7, 7, 20, 21, 40, 40};
static void c_moe_mm(mrun *r) {
    tensor off = in_i32(r, mm_off, 7);
    tensor x = in_f32(r, 2, 40, 70, 1, 1.0f), w = in_f32(r, 3, 6, 36, 70, 1.0f), w2 = in_f32(r, 3, 6, 70, 36, 1.0f);
    tensor y = out_t(r, TENSOR_F32, 0, 2, 40, 36, 1), y2 = out_t(r, TENSOR_F32, 1, 2, 40, 36, 1);
    r->o->moe_matmul(&y, &x, &w, &off, 1, 1.0f, 0.0f);   /* y = x w[e]^T, overwritten */
    r->o->moe_matmul(&y2, &x, &w2, &off, 0, -0.5f, 1.0f); /* y += -0.5 x w[e] */
}
static void c_moe_mm_dw(mrun *r) {
    tensor off = in_i32(r, mm_off, 7);
    tensor dy = in_f32(r, 2, 40, 36, 1, 1.0f), x = in_f32(r, 2, 40, 70, 1, 1.0f);
    tensor dw = out_t(r, TENSOR_F32, 1, 3, 6, 36, 70);
    r->o->moe_matmul_dw(&dw, &dy, &x, &off, 0.75f);
}

static void c_swiglu_fwd(mrun *r) {
    tensor gu = in_f32(r, 2, 37, 2 * 96, 1, 4.0f), h = out_t(r, TENSOR_F32, 0, 2, 37, 96, 1);
    r->o->swiglu_fwd(&h, &gu);
}
static void c_swiglu_bwd(mrun *r) {
    tensor gu = in_f32(r, 2, 37, 2 * 96, 1, 4.0f), dh = in_f32(r, 2, 37, 96, 1, 1.0f);
    tensor dgu = out_t(r, TENSOR_F32, 0, 2, 37, 2 * 96, 1);
    r->o->swiglu_bwd(&dgu, &dh, &gu);
}

static void c_embed_fwd(mrun *r) {
    int32_t ids[41];
    for (int i = 0; i < 41; i++) ids[i] = (int32_t)((i * 13) % 320);
    tensor tab = in_f32(r, 2, 320, 64, 1, 1.0f), ti = in_i32(r, ids, 41), y = out_t(r, TENSOR_F32, 0, 2, 41, 64, 1);
    r->o->embedding_fwd(&y, &tab, &ti);
}
static void c_embed_bwd(mrun *r) {
    int32_t ids[41];
    for (int i = 0; i < 41; i++) ids[i] = (int32_t)((i * 5) % 12); /* repeated ids accumulate */
    tensor dy = in_f32(r, 2, 41, 64, 1, 1.0f), ti = in_i32(r, ids, 41), dt = out_t(r, TENSOR_F32, 1, 2, 320, 64, 1);
    r->o->embedding_bwd(&dt, &dy, &ti);
}

static const int32_t lm_tgt[37] = {5, 319, 0, -1, 17, 17, 200, 3, 99, 100, 101, 250, 1, 2, 3, 4, 5, 6, 7,
                                   -1, 8, 9, 310, 311, 0, 0, 0, 44, 45, 46, 47, 48, 160, 161, 162, 163, 1};
/* the lm head forward, and with bwd its backward after it; x and w in f32
 * or, with bf, in bf16 (the gradients in and out stay f32) */
static void lmhead_case(mrun *r, int bf, int bwd) {
    tensor (*in)(mrun *, int, int64_t, int64_t, int64_t, float) = bf ? in_bf : in_f32;
    tensor x = in(r, 2, 37, 64, 1, 1.0f), w = in(r, 2, 320, 64, 1, 0.5f), t = in_i32(r, lm_tgt, 37), gl, ge;
    if (bwd) gl = in_f32(r, 1, 37, 1, 1, 1.0f), ge = in_f32(r, 1, 37, 1, 1, 1.0f);
    tensor lp = out_t(r, TENSOR_F32, 0, 1, 37, 1, 1), en = out_t(r, TENSOR_F32, 0, 1, 37, 1, 1);
    tensor ls = out_t(r, TENSOR_F32, 0, 1, 37, 1, 1), ws = scratch_t(r, 16, 100);
    r->o->lmhead_fwd(&lp, &en, &ls, &x, &w, &t, 0.7f, &ws);
    if (!bwd) return;
    tensor dx = out_t(r, TENSOR_F32, 0, 2, 37, 64, 1), dw = out_t(r, TENSOR_F32, 1, 2, 320, 64, 1);
    r->o->lmhead_bwd(&dx, &dw, &gl, &ge, &x, &w, &t, &ls, &en, 0.7f, &ws);
}
static void c_lmhead_fwd(mrun *r) { lmhead_case(r, 0, 0); }
static void c_lmhead_bwd(mrun *r) { lmhead_case(r, 0, 1); }

/* ---- bf16 cases ---------------------------------------------------------- */

static void c_gather_bf(mrun *r) {
    int32_t idx[50];
    for (int i = 0; i < 50; i++) idx[i] = (int32_t)((i * 11 + 5) % 37);
    tensor src = in_bf(r, 2, 37, 64, 1, 1.0f), ix = in_i32(r, idx, 50);
    tensor dst = out_bf(r, 2, 50, 64, 1);
    r->o->gather_rows(&dst, &src, &ix);
}
static void c_rmsnorm_fwd_bf(mrun *r) {
    tensor kva = in_f32(r, 2, 37, 80, 1, 2.0f), w = in_f32(r, 1, 64, 1, 1, 1.0f);
    tensor x = cols(kva, 0, 64);
    tensor y = out_bf(r, 2, 37, 64, 1), rs = out_t(r, TENSOR_F32, 0, 1, 37, 1, 1);
    r->o->rmsnorm_fwd(&y, &rs, &x, &w, 1e-6f);
}
static void c_swiglu_fwd_bf(mrun *r) {
    tensor gu = in_f32(r, 2, 37, 2 * 96, 1, 4.0f), h = out_bf(r, 2, 37, 96, 1);
    r->o->swiglu_fwd(&h, &gu);
}
static void c_moe_mm_bf(mrun *r) {
    tensor off = in_i32(r, mm_off, 7);
    tensor x = in_bf(r, 2, 40, 70, 1, 1.0f), w = in_bf(r, 3, 6, 36, 70, 1.0f), w2 = in_bf(r, 3, 6, 70, 36, 1.0f);
    tensor y = out_t(r, TENSOR_F32, 0, 2, 40, 36, 1), y2 = out_t(r, TENSOR_F32, 1, 2, 40, 36, 1);
    r->o->moe_matmul(&y, &x, &w, &off, 1, 1.0f, 0.0f);
    r->o->moe_matmul(&y2, &x, &w2, &off, 0, -0.5f, 1.0f);
}
static void c_moe_mm_dw_bf(mrun *r) {
    tensor off = in_i32(r, mm_off, 7);
    tensor dy = in_bf(r, 2, 40, 36, 1, 1.0f), x = in_bf(r, 2, 40, 70, 1, 1.0f);
    tensor dw = out_t(r, TENSOR_F32, 1, 3, 6, 36, 70);
    r->o->moe_matmul_dw(&dw, &dy, &x, &off, 0.75f);
}
static void c_lmhead_fwd_bf(mrun *r) { lmhead_case(r, 1, 0); }
static void c_lmhead_bwd_bf(mrun *r) { lmhead_case(r, 1, 1); }

/* the bf16 latent cache (bf16 mode): rows written rounded once, read by
 * decode as f32 (the same paged layouts as the f32 cases) */
static void c_cache_write_bf(mrun *r) {
    int32_t seq[7] = {2, 0, 2, 1, 2, 0, 1}, pos[7] = {0, 5, 19, 3, 7, 6, 0};
    int32_t table[3 * 5] = {-1, 4, -1, -1, -1, /**/ 1, -1, -1, -1, -1, /**/ 5, 0, -1, -1, 2};
    tensor ckv = in_f32(r, 2, 7, 64, 1, 1.0f), kva = in_f32(r, 2, 7, 64 + 16, 1, 1.0f), kpe = cols(kva, 64, 16);
    tensor ts = in_i32(r, seq, 7), tp = in_i32(r, pos, 7), tt = in_table(r, table, 3, 5);
    tensor cache = out_bf_keep(r, 3, 6, 4, 80);
    r->o->mla_cache_write(&cache, &ckv, &kpe, &tt, &ts, &tp);
}
static void c_decode_bf(mrun *r) {
    int32_t seq[3] = {2, 0, 3}, len[3] = {30, 1, 17};
    int32_t table[4 * 5] = {4, -1, -1, -1, -1, /**/ -1, -1, -1, -1, -1, /**/ 9, 3, 11, 0, 6, /**/ 9, 3, 7, -1, -1};
    tensor cache = in_bf(r, 3, 12, 7, 80, 1.0f), ql = in_f32(r, 3, 3, 4, 64, 1.0f);
    tensor q = in_f32(r, 3, 3, 4, 48 + 16, 1.0f), qpe = cols(q, 48, 16);
    tensor ts = in_i32(r, seq, 3), tl = in_i32(r, len, 3), tt = in_table(r, table, 4, 5);
    tensor ol = out_t(r, TENSOR_F32, 0, 3, 3, 4, 64);
    r->o->mla_decode(&ol, &ql, &qpe, &cache, &tt, &ts, &tl, 0.15f);
}

static void c_sample(mrun *r) {
    tensor z = in_f32(r, 2, 6, 320, 1, 4.0f);
    float uh[6] = {0.1f, 0.5f, 0.9f, 0.33f, 0.77f, 0.01f};
    tensor u = mk(r, put(r, uh, TENSOR_F32, 6, 0), TENSOR_F32, 1, 6, 1, 1);
    struct {
        float t;
        int k;
        float p;
    } cfg[4] = {{0.0f, 0, 1.0f}, {1.0f, 0, 1.0f}, {0.7f, 20, 1.0f}, {0.6f, 0, 0.9f}};
    for (int i = 0; i < 4; i++) {
        tensor ids = out_t(r, TENSOR_I32, 0, 1, 6, 1, 1), lp = out_t(r, TENSOR_F32, 0, 1, 6, 1, 1);
        r->o->sample(&ids, &lp, &z, &u, cfg[i].t, cfg[i].k, cfg[i].p, 0.0f);
    }
}

typedef struct {
    const char *op;
    size_t fn;
    const char *what;
    void (*run)(mrun *r);
    mtol tol;
    int bf16; /* a bf16 case: not run against the CPU backend itself */
} mcase;

#define MC(name, what, fn, tol) {#name, offsetof(struct ops, name), what, fn, tol, 0}
#define MCB(name, what, fn, tol) {#name, offsetof(struct ops, name), "bf16: " what, fn, tol, 1}
static const mcase mcases[] = {
    MC(gather_rows, "[37,64] -> 50 rows", c_gather, T_OP),
    MC(rmsnorm_fwd, "x a strided [37,64] view", c_rmsnorm_fwd, T_OP),
    MC(rmsnorm_bwd, "[37,320], dx added and written", c_rmsnorm_bwd, T_OP),
    MC(rope_fwd, "[37,4,64] view of q, interleaved", c_rope_fwd_i, T_OP),
    MC(rope_fwd, "[37,4,64] view of q, rotate-half", c_rope_fwd_h, T_OP),
    MC(rope_bwd, "[37,4,64] view of q, interleaved", c_rope_bwd_i, T_OP),
    MC(mla_attn_fwd, "3 sequences (one empty), H 4, 32+16 / 24", c_attn_fwd, T_ATTN),
    MC(mla_attn_bwd, "3 sequences (one empty), H 4, 32+16 / 24", c_attn_bwd, T_ATTN),
    MC(mla_attn_bwd, "fwd + bwd, 2 sequences of 45 and 25, H 2, 128+64 / 136", c_attn_wide, T_ATTN),
    MC(mla_cache_write, "7 rows into a pool of 6 pages of 4, block table [3,5]", c_cache_write, T_OP),
    MC(mla_decode, "3 queries, lengths 30/1/17, pages of 7, shared pages, H 4, dc 64", c_decode, T_ATTN),
    MC(mla_decode, "1100 positions in pages of 48, lengths 1100/513/7, H 20 (2 head groups), dc 32", c_decode_long,
       T_ATTN),
    MC(moe_route, "16 experts, 4 groups keep 2, top-3, normalised", c_route_n, T_OP),
    MC(moe_route, "16 experts, 4 groups keep 2, top-3, unnormalised", c_route_u, T_OP),
    MC(moe_route_bwd, "16 experts, top-3", c_route_bwd, T_OP),
    MC(moe_plan, "37 tokens x 3 over 10 experts", c_plan, T_OP),
    MC(moe_aux_fwd, "3 sequences (one empty, one of 150), 16 experts, top-3", c_aux_fwd, T_OP),
    MC(moe_aux_bwd, "3 sequences (one empty, one of 150), 16 experts, top-3, dz added", c_aux_bwd, T_OP),
    MC(moe_combine, "weighted and unweighted", c_combine, T_OP),
    MC(moe_combine_bwd, "37 x 3 rows of 48", c_combine_bwd, T_OP),
    MC(moe_matmul, "6 experts (2 empty) x 40 rows, K 70, N 36, both layouts", c_moe_mm, T_ATTN),
    MC(moe_matmul_dw, "6 experts (2 empty) x 40 rows, [36, 70]", c_moe_mm_dw, T_ATTN),
    MC(swiglu_fwd, "[37, 2x96]", c_swiglu_fwd, T_OP),
    MC(swiglu_bwd, "[37, 2x96]", c_swiglu_bwd, T_OP),
    MC(embedding_fwd, "41 ids of 320", c_embed_fwd, T_OP),
    MC(embedding_bwd, "41 ids, repeats", c_embed_bwd, T_OP),
    MC(lmhead_fwd, "[37,64] x [320,64]^T, ws 16x100, scale 0.7", c_lmhead_fwd, T_ATTN),
    MC(lmhead_bwd, "[37,64] x [320,64]^T, ws 16x100, scale 0.7", c_lmhead_bwd, T_ATTN),
    MC(sample, "6 rows of 320: greedy, T 1, top-k 20, top-p 0.9", c_sample, T_OP),
    /* bf16 mode: the ops with bf16 operands (docs/cuda.md) */
    MCB(gather_rows, "[37,64] -> 50 rows", c_gather_bf, T_OP),
    MCB(rmsnorm_fwd, "bf16 y, x a strided f32 view", c_rmsnorm_fwd_bf, T_BF16),
    MCB(swiglu_fwd, "bf16 h [37, 96]", c_swiglu_fwd_bf, T_BF16),
    MCB(moe_matmul, "bf16 x and w, f32 y, both layouts", c_moe_mm_bf, T_ATTN),
    MCB(moe_matmul_dw, "bf16 dy and x into f32 dw", c_moe_mm_dw_bf, T_ATTN),
    MCB(lmhead_fwd, "bf16 x and w", c_lmhead_fwd_bf, T_ATTN),
    MCB(lmhead_bwd, "bf16 x and w, f32 dx and dw", c_lmhead_bwd_bf, T_BF16_DZ),
    MCB(mla_cache_write, "bf16 pool of 6 pages of 4, block table [3,5]", c_cache_write_bf, T_BF16),
    MCB(mla_decode, "bf16 pool, lengths 30/1/17, pages of 7, shared pages", c_decode_bf, T_ATTN),
    MCB(mla_decode, "bf16 pool, 1100 positions in pages of 48 (split + combine)", c_decode_long_bf, T_ATTN),
};
#define NM ((int)(sizeof mcases / sizeof mcases[0]))

int parity_model_coverage(void) {
    static const size_t first = offsetof(struct ops, gather_rows), last = offsetof(struct ops, sample);
    int ok = 1;
    for (size_t off = first; off <= last; off += sizeof(void (*)(void))) {
        int n = 0;
        for (int c = 0; c < NM; c++) n += mcases[c].fn == off;
        if (!n) {
            printf("FAIL: the model op at offset %zu of struct ops has no parity case\n", off);
            ok = 0;
        }
    }
    return ok;
}

static int fclass(float x) { return isnan(x) ? 2 : isinf(x) ? (x > 0 ? 3 : 4) : 0; }

static int run_one(const struct ops *dev, const mcase *c, uint64_t seed, int verbose) {
    mrun ref = {ops_cpu(), seed, 0, {{0}}, 0, NULL, 0, 1}, got = {dev, seed, 0, {{0}}, 0, NULL, 0, 1};
    c->run(&ref);
    collect(&ref);
    c->run(&got);
    collect(&got);
    int ok = ref.ok && got.ok && ref.nres == got.nres;
    double ss = 0, worst = 0;
    int64_t nbad = 0, first = -1;
    for (int64_t i = 0; i < ref.nres && ok; i++)
        if (!fclass(ref.res[i])) ss += (double)ref.res[i] * ref.res[i];
    double rms = ref.nres ? sqrt(ss / (double)ref.nres) : 0;
    for (int64_t i = 0; i < ref.nres && ok; i++) {
        float a = got.res[i], b = ref.res[i];
        if (fclass(a) != fclass(b)) {
            nbad++, first = first < 0 ? i : first;
            continue;
        }
        if (fclass(a)) continue;
        double err = fabs((double)a - b), bound = c->tol.rtol * fabs(b) + c->tol.atol * rms;
        if (err > 0 && err / (bound > 0 ? bound : 1e-300) > worst) worst = err / (bound > 0 ? bound : 1e-300);
        if (err > bound) nbad++, first = first < 0 ? i : first;
    }
    if (nbad) ok = 0;
    if (!ok || verbose)
        printf("%-4s %-15s %s  err/bound %.3g\n", ok ? "ok" : "FAIL", c->op, c->what, worst);
    if (nbad)
        printf("    %lld of %lld values out of tolerance; first [%lld]: got %.9g, want %.9g\n", (long long)nbad,
               (long long)ref.nres, (long long)first, got.res[first], ref.res[first]);
    free(ref.res);
    free(got.res);
    return ok;
}

int parity_model_run(const struct ops *dev, const char *filter, int verbose, uint64_t seed, int *nrun) {
    int fails = 0;
    *nrun = 0;
    for (int i = 0; i < NM; i++) {
        if (filter && strcmp(filter, mcases[i].op)) continue;
        if (mcases[i].bf16 && dev->device == TENSOR_CPU) continue; /* f32 only: nothing to compare */
        void (*fnp)(void);
        memcpy(&fnp, (const char *)dev + mcases[i].fn, sizeof fnp);
        if (!fnp) {
            printf("skip %s: the %s backend has no %s op\n", mcases[i].op, dev->name, mcases[i].op);
            continue;
        }
        (*nrun)++;
        if (!run_one(dev, &mcases[i], seed + 7919u * (uint64_t)i, verbose)) fails++;
    }
    return fails;
}

/* ---- self-test: broken model ops the cases must catch ------------------- */

static void bad_rmsnorm(tensor *y, tensor *rstd, const tensor *x, const tensor *w, float eps) {
    ops_cpu()->rmsnorm_fwd(y, rstd, x, w, eps * 1000.0f + 1e-3f); /* a wrong eps */
}
static void bad_attn(tensor *o, tensor *lse, const tensor *q, const tensor *kv, const tensor *kpe,
                     const tensor *cu, float scale) {
    ops_cpu()->mla_attn_fwd(o, lse, q, kv, kpe, cu, scale * 1.001f);
}
static void bad_route(tensor *idx, tensor *w, const tensor *z, const tensor *bias, int ng, int kg, int norm,
                      float rs) {
    ops_cpu()->moe_route(idx, w, z, NULL, ng, kg, norm, rs); /* ignores the bias */
    (void)bias;
}
static void bad_cache(tensor *cache, const tensor *ckv, const tensor *kpe, const tensor *table, const tensor *seq,
                      const tensor *pos) {
    ops_cpu()->mla_cache_write(cache, ckv, kpe, table, seq, pos);
    ((float *)cache->data)[tensor_numel(cache)] = 0.0f; /* one past the end */
}

static void bad_moe_mm(tensor *y, const tensor *x, const tensor *w, const tensor *off, int trans_w, float alpha,
                       float beta) {
    ops_cpu()->moe_matmul(y, x, w, off, trans_w, alpha, 0.0f); /* ignores beta: no accumulation */
    (void)beta;
}

int parity_model_selftest(uint64_t seed) {
    struct {
        const char *op;
        struct ops t;
    } b[5];
    for (int i = 0; i < 5; i++) b[i].t = *ops_cpu();
    b[0].op = "rmsnorm_fwd", b[0].t.rmsnorm_fwd = bad_rmsnorm;
    b[1].op = "mla_attn_fwd", b[1].t.mla_attn_fwd = bad_attn;
    b[2].op = "moe_route", b[2].t.moe_route = bad_route;
    b[3].op = "mla_cache_write", b[3].t.mla_cache_write = bad_cache;
    b[4].op = "moe_matmul", b[4].t.moe_matmul = bad_moe_mm;
    int ok = 1, n;
    for (int i = 0; i < 5; i++) {
        printf("selftest: a broken %s must fail:\n", b[i].op);
        int fails = parity_model_run(&b[i].t, b[i].op, 0, seed, &n);
        if (!fails) {
            printf("FAIL: the model cases missed the broken %s\n", b[i].op);
            ok = 0;
        } else {
            printf("  caught in %d of %d cases\n", fails, n);
        }
    }
    return ok;
}
