/*
 * The argument checks both backends run (see ops_check.h).
 */
#include "ops_check.h"

#include <string.h>

void ops_need(const char *be, const char *op, const char *arg, const tensor *t, tensor_dtype dt, int ndim) {
    if (t->dtype != dt)
        base_die("%s %s: %s must be %s (got %s)", be, op, arg, tensor_dtype_name(dt), tensor_dtype_name(t->dtype));
    if (t->ndim != ndim) {
        char s[64];
        base_die("%s %s: %s must be %d-D (got %s)", be, op, arg, ndim, tensor_shape_str(t, s, sizeof s));
    }
    if (ndim > 0 && t->stride[ndim - 1] != 1 && t->shape[ndim - 1] > 1)
        base_die("%s %s: %s must have a unit last stride", be, op, arg);
}

void ops_need_dim(const char *be, const char *op, const char *arg, const tensor *t, int dim, int64_t n) {
    if (dim >= t->ndim || t->shape[dim] != n) {
        char s[64];
        base_die("%s %s: %s has shape %s, dim %d must be %lld", be, op, arg, tensor_shape_str(t, s, sizeof s), dim,
                 (long long)n);
    }
}

void ops_need_vec(const char *be, const char *op, const char *arg, const tensor *t, int64_t n) {
    ops_need(be, op, arg, t, TENSOR_F32, 1);
    ops_need_dim(be, op, arg, t, 0, n);
}

void ops_need_contig(const char *be, const char *op, const char *arg, const tensor *t) {
    if (!tensor_is_contiguous(t)) base_die("%s %s: %s must be contiguous", be, op, arg);
}

void ops_need_fb(const char *be, const char *op, const char *arg, const tensor *t, int ndim) {
    if (t->dtype == TENSOR_BF16 && strncmp(be, "cuda", 4))
        base_die("%s %s: %s must be F32 (got BF16: bf16 tensors need the CUDA backend, --precision bf16)", be, op, arg);
    ops_need(be, op, arg, t, t->dtype == TENSOR_BF16 ? TENSOR_BF16 : TENSOR_F32, ndim);
}

void ops_need_weight(const char *be, const char *op, const char *arg, const tensor *w, const tensor *x, int ndim) {
    if (w->dtype != x->dtype && w->dtype != TENSOR_BF16 && w->dtype != TENSOR_F8_E4M3)
        base_die("%s %s: %s must be %s or a stored weight (BF16, F8_E4M3) (got %s)", be, op, arg,
                 tensor_dtype_name(x->dtype), tensor_dtype_name(w->dtype));
    ops_need(be, op, arg, w, w->dtype, ndim);
}

void ops_need_same_dtype(const char *be, const char *op, const char *an, const tensor *a, const char *bn,
                         const tensor *b) {
    if (a->dtype != b->dtype)
        base_die("%s %s: %s and %s must have one dtype (got %s and %s)", be, op, an, bn, tensor_dtype_name(a->dtype),
                 tensor_dtype_name(b->dtype));
}

/* ---- attention ------------------------------------------------------------ */

static ops_attn_dims check_attn(const char *be, const char *op, const tensor *q, const tensor *kv,
                                const tensor *kpe, const tensor *o, const tensor *cu) {
    ops_need(be, op, "q", q, TENSOR_F32, 3);
    ops_need(be, op, "kv", kv, TENSOR_F32, 3);
    ops_need(be, op, "kpe", kpe, TENSOR_F32, 2);
    ops_need(be, op, "o", o, TENSOR_F32, 3);
    ops_need(be, op, "cu_seqlens", cu, TENSOR_I32, 1);
    ops_attn_dims d;
    d.n = q->shape[0];
    d.h = q->shape[1];
    d.dqk = q->shape[2];
    d.dr = kpe->shape[1];
    d.dn = d.dqk - d.dr;
    d.dv = o->shape[2];
    if (d.dn < 0) base_die("%s %s: rope dim %lld exceeds the q head dim %lld", be, op, (long long)d.dr, (long long)d.dqk);
    if (cu->shape[0] < 1) base_die("%s %s: cu_seqlens is empty", be, op);
    ops_need_dim(be, op, "kv", kv, 0, d.n);
    ops_need_dim(be, op, "kv", kv, 1, d.h);
    ops_need_dim(be, op, "kv", kv, 2, d.dn + d.dv);
    ops_need_dim(be, op, "kpe", kpe, 0, d.n);
    ops_need_dim(be, op, "o", o, 0, d.n);
    ops_need_dim(be, op, "o", o, 1, d.h);
    return d;
}

ops_attn_dims ops_check_mla_attn_fwd(const char *be, const tensor *o, const tensor *lse, const tensor *q,
                                     const tensor *kv, const tensor *kpe, const tensor *cu_seqlens) {
    const char *op = "mla_attn_fwd";
    ops_attn_dims d = check_attn(be, op, q, kv, kpe, o, cu_seqlens);
    if (lse) {
        ops_need(be, op, "lse", lse, TENSOR_F32, 2);
        ops_need_dim(be, op, "lse", lse, 0, d.n);
        ops_need_dim(be, op, "lse", lse, 1, d.h);
    }
    return d;
}

ops_attn_dims ops_check_mla_attn_bwd(const char *be, const tensor *dq, const tensor *dkv, const tensor *dkpe,
                                     const tensor *dout, const tensor *q, const tensor *kv, const tensor *kpe,
                                     const tensor *o, const tensor *lse, const tensor *cu_seqlens) {
    const char *op = "mla_attn_bwd";
    ops_attn_dims d = check_attn(be, op, q, kv, kpe, o, cu_seqlens);
    ops_need(be, op, "dq", dq, TENSOR_F32, 3);
    ops_need(be, op, "dkv", dkv, TENSOR_F32, 3);
    ops_need(be, op, "dkpe", dkpe, TENSOR_F32, 2);
    ops_need(be, op, "dout", dout, TENSOR_F32, 3);
    ops_need(be, op, "lse", lse, TENSOR_F32, 2);
    for (int i = 0; i < 3; i++) {
        ops_need_dim(be, op, "dq", dq, i, q->shape[i]);
        ops_need_dim(be, op, "dkv", dkv, i, kv->shape[i]);
        ops_need_dim(be, op, "dout", dout, i, o->shape[i]);
    }
    ops_need_dim(be, op, "dkpe", dkpe, 0, d.n);
    ops_need_dim(be, op, "dkpe", dkpe, 1, d.dr);
    ops_need_dim(be, op, "lse", lse, 0, d.n);
    ops_need_dim(be, op, "lse", lse, 1, d.h);
    return d;
}

void ops_check_mla_cache_write(const char *be, const tensor *cache, const tensor *ckv, const tensor *kpe,
                               const tensor *table, const tensor *seq, const tensor *pos) {
    const char *op = "mla_cache_write";
    ops_need_fb(be, op, "cache", cache, 3);
    ops_need(be, op, "ckv", ckv, TENSOR_F32, 2);
    ops_need(be, op, "kpe", kpe, TENSOR_F32, 2);
    ops_need(be, op, "table", table, TENSOR_I32, 2);
    ops_need(be, op, "seq", seq, TENSOR_I32, 1);
    ops_need(be, op, "pos", pos, TENSOR_I32, 1);
    int64_t n = ckv->shape[0], dc = ckv->shape[1], dr = kpe->shape[1];
    ops_need_dim(be, op, "kpe", kpe, 0, n);
    ops_need_dim(be, op, "seq", seq, 0, n);
    ops_need_dim(be, op, "pos", pos, 0, n);
    ops_need_dim(be, op, "cache", cache, 2, dc + dr);
}

void ops_check_mla_decode(const char *be, const tensor *o_lat, const tensor *q_lat, const tensor *q_pe,
                          const tensor *cache, const tensor *table, const tensor *seq, const tensor *len) {
    const char *op = "mla_decode";
    ops_need(be, op, "o_lat", o_lat, TENSOR_F32, 3);
    ops_need(be, op, "q_lat", q_lat, TENSOR_F32, 3);
    ops_need(be, op, "q_pe", q_pe, TENSOR_F32, 3);
    ops_need_fb(be, op, "cache", cache, 3);
    ops_need(be, op, "table", table, TENSOR_I32, 2);
    ops_need(be, op, "seq", seq, TENSOR_I32, 1);
    ops_need(be, op, "len", len, TENSOR_I32, 1);
    int64_t b = q_lat->shape[0], h = q_lat->shape[1], dc = q_lat->shape[2], dr = q_pe->shape[2];
    for (int i = 0; i < 3; i++) ops_need_dim(be, op, "o_lat", o_lat, i, q_lat->shape[i]);
    ops_need_dim(be, op, "q_pe", q_pe, 0, b);
    ops_need_dim(be, op, "q_pe", q_pe, 1, h);
    ops_need_dim(be, op, "cache", cache, 2, dc + dr);
    ops_need_dim(be, op, "seq", seq, 0, b);
    ops_need_dim(be, op, "len", len, 0, b);
}

/* ---- LM head and sampling ---------------------------------------------------------- */

static ops_lm_dims check_lm(const char *be, const char *op, const tensor *x, const tensor *w, const tensor *target,
                            const tensor *ws) {
    ops_need_fb(be, op, "x", x, 2);
    ops_need_weight(be, op, "w", w, x, 2);
    ops_need(be, op, "target", target, TENSOR_I32, 1);
    ops_need(be, op, "ws", ws, TENSOR_F32, 2);
    ops_lm_dims d = {x->shape[0], x->shape[1], w->shape[0], ws->shape[0], ws->shape[1]};
    ops_need_dim(be, op, "w", w, 1, d.d);
    ops_need_dim(be, op, "target", target, 0, d.n);
    if (d.r < 1 || d.c < 1) base_die("%s %s: empty workspace", be, op);
    return d;
}

ops_lm_dims ops_check_lmhead_fwd(const char *be, const tensor *logp, const tensor *ent, const tensor *lse,
                                 const tensor *x, const tensor *w, const tensor *target, const tensor *ws) {
    const char *op = "lmhead_fwd";
    ops_lm_dims d = check_lm(be, op, x, w, target, ws);
    ops_need_vec(be, op, "logp", logp, d.n);
    ops_need_vec(be, op, "ent", ent, d.n);
    ops_need_vec(be, op, "lse", lse, d.n);
    return d;
}

ops_lm_dims ops_check_lmhead_bwd(const char *be, const tensor *dx, const tensor *dw, const tensor *g_logp,
                                 const tensor *g_ent, const tensor *x, const tensor *w, const tensor *target,
                                 const tensor *lse, const tensor *ent, const tensor *ws) {
    const char *op = "lmhead_bwd";
    ops_lm_dims d = check_lm(be, op, x, w, target, ws);
    ops_need_vec(be, op, "g_logp", g_logp, d.n);
    ops_need_vec(be, op, "g_ent", g_ent, d.n);
    ops_need_vec(be, op, "lse", lse, d.n);
    ops_need_vec(be, op, "ent", ent, d.n);
    ops_need(be, op, "dx", dx, TENSOR_F32, 2);
    ops_need_dim(be, op, "dx", dx, 0, d.n);
    ops_need_dim(be, op, "dx", dx, 1, d.d);
    if (dw) { /* NULL: a frozen head, no weight gradient */
        ops_need(be, op, "dw", dw, TENSOR_F32, 2);
        ops_need_dim(be, op, "dw", dw, 0, d.v);
        ops_need_dim(be, op, "dw", dw, 1, d.d);
    }
    return d;
}

void ops_check_sample(const char *be, const tensor *ids, const tensor *logp, const tensor *logits, const tensor *u) {
    const char *op = "sample";
    ops_need(be, op, "ids", ids, TENSOR_I32, 1);
    ops_need(be, op, "logits", logits, TENSOR_F32, 2);
    ops_need(be, op, "u", u, TENSOR_F32, 1);
    int64_t b = logits->shape[0];
    ops_need_dim(be, op, "ids", ids, 0, b);
    ops_need_dim(be, op, "u", u, 0, b);
    if (logp) ops_need_vec(be, op, "logp", logp, b);
    if (logits->shape[1] < 1) base_die("%s %s: empty vocabulary", be, op);
}

/* ---- MoE ------------------------------------------------------------------------------ */

void ops_check_moe_route(const char *be, const tensor *idx, const tensor *w, const tensor *z, const tensor *bias) {
    const char *op = "moe_route";
    ops_need(be, op, "z", z, TENSOR_F32, 2);
    ops_need(be, op, "idx", idx, TENSOR_I32, 2);
    ops_need(be, op, "w", w, TENSOR_F32, 2);
    int64_t n = z->shape[0], e = z->shape[1], k = idx->shape[1];
    ops_need_dim(be, op, "idx", idx, 0, n);
    ops_need_dim(be, op, "w", w, 0, n);
    ops_need_dim(be, op, "w", w, 1, k);
    if (bias) {
        ops_need(be, op, "bias", bias, TENSOR_F32, 1);
        ops_need_dim(be, op, "bias", bias, 0, e);
    }
}

void ops_check_moe_route_bwd(const char *be, const tensor *dz, const tensor *dw, const tensor *z,
                             const tensor *idx) {
    const char *op = "moe_route_bwd";
    ops_need(be, op, "dz", dz, TENSOR_F32, 2);
    ops_need(be, op, "dw", dw, TENSOR_F32, 2);
    ops_need(be, op, "z", z, TENSOR_F32, 2);
    ops_need(be, op, "idx", idx, TENSOR_I32, 2);
    int64_t n = z->shape[0], e = z->shape[1], k = idx->shape[1];
    ops_need_dim(be, op, "dz", dz, 0, n);
    ops_need_dim(be, op, "dz", dz, 1, e);
    ops_need_dim(be, op, "dw", dw, 0, n);
    ops_need_dim(be, op, "dw", dw, 1, k);
    ops_need_dim(be, op, "idx", idx, 0, n);
}

void ops_check_moe_aux(const char *be, const tensor *loss, const tensor *dz, const tensor *z, const tensor *idx,
                       const tensor *cu) {
    const char *op = loss ? "moe_aux_fwd" : "moe_aux_bwd";
    ops_need(be, op, "z", z, TENSOR_F32, 2);
    ops_need(be, op, "idx", idx, TENSOR_I32, 2);
    ops_need(be, op, "cu", cu, TENSOR_I32, 1);
    int64_t n = z->shape[0], e = z->shape[1];
    ops_need_dim(be, op, "idx", idx, 0, n);
    if (cu->shape[0] < 1) base_die("%s (%s): cu has no entry", op, be);
    if (loss) {
        ops_need(be, op, "loss", loss, TENSOR_F32, 1);
        ops_need_dim(be, op, "loss", loss, 0, cu->shape[0] - 1);
    } else {
        ops_need(be, op, "dz", dz, TENSOR_F32, 2);
        ops_need_dim(be, op, "dz", dz, 0, n);
        ops_need_dim(be, op, "dz", dz, 1, e);
    }
}

void ops_check_moe_plan(const char *be, const tensor *offsets, const tensor *row_tok, const tensor *inv,
                        const tensor *idx, int n_experts) {
    const char *op = "moe_plan";
    ops_need(be, op, "offsets", offsets, TENSOR_I32, 1);
    ops_need(be, op, "row_tok", row_tok, TENSOR_I32, 1);
    ops_need(be, op, "inv", inv, TENSOR_I32, 1);
    ops_need(be, op, "idx", idx, TENSOR_I32, 2);
    int64_t nk = idx->shape[0] * idx->shape[1];
    ops_need_dim(be, op, "offsets", offsets, 0, (int64_t)n_experts + 1);
    ops_need_dim(be, op, "row_tok", row_tok, 0, nk);
    ops_need_dim(be, op, "inv", inv, 0, nk);
}

int64_t ops_check_moe_combine(const char *be, const tensor *y, const tensor *ye, const tensor *w,
                              const tensor *inv) {
    const char *op = "moe_combine";
    ops_need(be, op, "y", y, TENSOR_F32, 2);
    ops_need(be, op, "ye", ye, TENSOR_F32, 2);
    ops_need(be, op, "inv", inv, TENSOR_I32, 1);
    int64_t n = y->shape[0], d = y->shape[1], nk = inv->shape[0];
    if (n == 0) return 0;
    int64_t k = nk / n;
    if (k * n != nk)
        base_die("%s %s: inv has %lld entries, not a multiple of %lld tokens", be, op, (long long)nk, (long long)n);
    ops_need_dim(be, op, "ye", ye, 1, d);
    ops_need_dim(be, op, "ye", ye, 0, nk);
    if (w) {
        ops_need(be, op, "w", w, TENSOR_F32, 2);
        ops_need_dim(be, op, "w", w, 0, n);
        ops_need_dim(be, op, "w", w, 1, k);
    }
    return k;
}

void ops_check_moe_combine_bwd(const char *be, const tensor *dye, const tensor *dw, const tensor *dy,
                               const tensor *ye, const tensor *w, const tensor *inv) {
    const char *op = "moe_combine_bwd";
    ops_need(be, op, "dye", dye, TENSOR_F32, 2);
    ops_need(be, op, "dw", dw, TENSOR_F32, 2);
    ops_need(be, op, "dy", dy, TENSOR_F32, 2);
    ops_need(be, op, "ye", ye, TENSOR_F32, 2);
    ops_need(be, op, "w", w, TENSOR_F32, 2);
    ops_need(be, op, "inv", inv, TENSOR_I32, 1);
    int64_t n = dy->shape[0], d = dy->shape[1], k = w->shape[1];
    ops_need_dim(be, op, "w", w, 0, n);
    ops_need_dim(be, op, "dw", dw, 0, n);
    ops_need_dim(be, op, "dw", dw, 1, k);
    ops_need_dim(be, op, "inv", inv, 0, n * k);
    ops_need_dim(be, op, "ye", ye, 0, n * k);
    ops_need_dim(be, op, "ye", ye, 1, d);
    ops_need_dim(be, op, "dye", dye, 0, n * k);
    ops_need_dim(be, op, "dye", dye, 1, d);
}

void ops_check_moe_matmul(const char *be, const tensor *y, const tensor *x, const tensor *w, const tensor *offsets,
                          int trans_w) {
    const char *op = "moe_matmul";
    ops_need(be, op, "y", y, TENSOR_F32, 2);
    ops_need_fb(be, op, "x", x, 2);
    ops_need_weight(be, op, "w", w, x, 3);
    ops_need(be, op, "offsets", offsets, TENSOR_I32, 1);
    int64_t r = x->shape[0], k = x->shape[1], e = w->shape[0], n = y->shape[1];
    ops_need_dim(be, op, "y", y, 0, r);
    ops_need_dim(be, op, "w", w, trans_w ? 1 : 2, n);
    ops_need_dim(be, op, "w", w, trans_w ? 2 : 1, k);
    ops_need_dim(be, op, "offsets", offsets, 0, e + 1);
}

void ops_check_moe_matmul_dw(const char *be, const tensor *dw, const tensor *dy, const tensor *x,
                             const tensor *offsets) {
    const char *op = "moe_matmul_dw";
    ops_need(be, op, "dw", dw, TENSOR_F32, 3);
    ops_need_fb(be, op, "dy", dy, 2);
    ops_need_fb(be, op, "x", x, 2);
    ops_need_same_dtype(be, op, "dy", dy, "x", x);
    ops_need(be, op, "offsets", offsets, TENSOR_I32, 1);
    ops_need_dim(be, op, "dy", dy, 0, x->shape[0]);
    ops_need_dim(be, op, "dw", dw, 1, dy->shape[1]);
    ops_need_dim(be, op, "dw", dw, 2, x->shape[1]);
    ops_need_dim(be, op, "offsets", offsets, 0, dw->shape[0] + 1);
}

void ops_check_swiglu_fwd(const char *be, const tensor *h, const tensor *gu) {
    const char *op = "swiglu_fwd";
    ops_need_fb(be, op, "h", h, 2);
    ops_need(be, op, "gu", gu, TENSOR_F32, 2);
    ops_need_dim(be, op, "gu", gu, 0, h->shape[0]);
    ops_need_dim(be, op, "gu", gu, 1, 2 * h->shape[1]);
}

void ops_check_swiglu_bwd(const char *be, const tensor *dgu, const tensor *dh, const tensor *gu) {
    const char *op = "swiglu_bwd";
    ops_need(be, op, "dgu", dgu, TENSOR_F32, 2);
    ops_need(be, op, "dh", dh, TENSOR_F32, 2);
    ops_need(be, op, "gu", gu, TENSOR_F32, 2);
    int64_t n = dh->shape[0], f = dh->shape[1];
    ops_need_dim(be, op, "gu", gu, 0, n);
    ops_need_dim(be, op, "gu", gu, 1, 2 * f);
    ops_need_dim(be, op, "dgu", dgu, 0, n);
    ops_need_dim(be, op, "dgu", dgu, 1, 2 * f);
}

/* ---- rope ---------------------------------------------------------------------------- */

void ops_check_rope(const char *be, const char *op, const tensor *x, const tensor *pos, const tensor *cos,
                    const tensor *sin) {
    if (x->ndim != 2 && x->ndim != 3) base_die("%s %s: x must be [N, R] or [N, H, R] (got %d-D)", be, op, x->ndim);
    ops_need(be, op, "x", x, TENSOR_F32, x->ndim);
    ops_need(be, op, "pos", pos, TENSOR_I32, 1);
    ops_need(be, op, "cos", cos, TENSOR_F32, 2);
    ops_need(be, op, "sin", sin, TENSOR_F32, 2);
    int64_t r = x->shape[x->ndim - 1];
    if (r % 2) base_die("%s %s: rope dim %lld must be even", be, op, (long long)r);
    ops_need_dim(be, op, "pos", pos, 0, x->shape[0]);
    ops_need_dim(be, op, "cos", cos, 1, r / 2);
    ops_need_dim(be, op, "sin", sin, 0, cos->shape[0]);
    ops_need_dim(be, op, "sin", sin, 1, r / 2);
}

/* ---- norms and embeddings ------------------------------------------------------------ */

void ops_check_gather_rows(const char *be, const tensor *dst, const tensor *src, const tensor *idx) {
    const char *op = "gather_rows";
    ops_need_fb(be, op, "dst", dst, 2);
    ops_need_fb(be, op, "src", src, 2);
    ops_need_same_dtype(be, op, "dst", dst, "src", src);
    ops_need(be, op, "idx", idx, TENSOR_I32, 1);
    ops_need_dim(be, op, "src", src, 1, dst->shape[1]);
    ops_need_dim(be, op, "idx", idx, 0, dst->shape[0]);
}

void ops_check_rmsnorm_fwd(const char *be, const tensor *y, const tensor *rstd, const tensor *x, const tensor *w) {
    const char *op = "rmsnorm_fwd";
    ops_need(be, op, "x", x, TENSOR_F32, 2);
    ops_need_fb(be, op, "y", y, 2);
    ops_need(be, op, "w", w, TENSOR_F32, 1);
    int64_t n = x->shape[0], d = x->shape[1];
    ops_need_dim(be, op, "y", y, 0, n);
    ops_need_dim(be, op, "y", y, 1, d);
    ops_need_dim(be, op, "w", w, 0, d);
    if (rstd) ops_need_vec(be, op, "rstd", rstd, n);
}

void ops_check_rmsnorm_bwd(const char *be, const tensor *dx, const tensor *dw, const tensor *dy, const tensor *x,
                           const tensor *w, const tensor *rstd) {
    const char *op = "rmsnorm_bwd";
    ops_need(be, op, "x", x, TENSOR_F32, 2);
    ops_need(be, op, "dy", dy, TENSOR_F32, 2);
    ops_need(be, op, "dx", dx, TENSOR_F32, 2);
    ops_need(be, op, "w", w, TENSOR_F32, 1);
    int64_t n = x->shape[0], d = x->shape[1];
    ops_need_dim(be, op, "dy", dy, 0, n);
    ops_need_dim(be, op, "dy", dy, 1, d);
    ops_need_dim(be, op, "dx", dx, 0, n);
    ops_need_dim(be, op, "dx", dx, 1, d);
    ops_need_dim(be, op, "w", w, 0, d);
    ops_need_vec(be, op, "rstd", rstd, n);
    if (dw) ops_need_vec(be, op, "dw", dw, d);
}

void ops_check_embedding_fwd(const char *be, const tensor *y, const tensor *table, const tensor *ids) {
    const char *op = "embedding_fwd";
    if (table->dtype != TENSOR_BF16) ops_need(be, op, "table", table, TENSOR_F32, 2);
    else ops_need(be, op, "table", table, TENSOR_BF16, 2);
    if (y->dtype != TENSOR_F32) ops_need_fb(be, op, "y", y, 2);
    else ops_need(be, op, "y", y, TENSOR_F32, 2);
    if (y->dtype != TENSOR_F32) ops_need_same_dtype(be, op, "y", y, "table", table);
    ops_need(be, op, "ids", ids, TENSOR_I32, 1);
    ops_need_dim(be, op, "table", table, 1, y->shape[1]);
    ops_need_dim(be, op, "ids", ids, 0, y->shape[0]);
}

void ops_check_embedding_bwd(const char *be, const tensor *dtable, const tensor *dy, const tensor *ids) {
    const char *op = "embedding_bwd";
    ops_need(be, op, "dtable", dtable, TENSOR_F32, 2);
    ops_need(be, op, "dy", dy, TENSOR_F32, 2);
    ops_need(be, op, "ids", ids, TENSOR_I32, 1);
    ops_need_dim(be, op, "dtable", dtable, 1, dy->shape[1]);
    ops_need_dim(be, op, "ids", ids, 0, dy->shape[0]);
}
