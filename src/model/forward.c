/*
 * One decoder layer forward (spec §3.0, §3.5-3.8), shared by training,
 * prefill and full-logits inference, and its decode form (§3.6), plus the
 * activation planner. Every op goes through the op table.
 */
#include <stdlib.h>
#include <string.h>

#include "model/internal.h"

/* ---- planner ---------------------------------------------------------------- */

tensor plan_t(planner *p, tensor_dtype dt, int ndim, int64_t a, int64_t b, int64_t c) {
    int64_t shape[3] = {a, b, c}, numel = 1;
    for (int i = 0; i < ndim; i++) numel *= shape[i];
    size_t bytes = (size_t)numel * tensor_dtype_size(dt);
    p->off = (p->off + 63) & ~(size_t)63;
    void *data = p->base ? p->base + p->off : NULL;
    p->off += bytes;
    tensor t = tensor_make(data, dt, p->m->ops->device, ndim, shape);
    return t;
}

void plan_layer_acts(planner *p, layer_acts *A, int64_t n, int dense, int moe, int keep_lse) {
    const model_config *c = &p->m->cfg;
    int64_t d = c->hidden_size, H = c->num_attention_heads, dc = c->kv_lora_rank, dr = c->qk_rope_head_dim;
    int64_t E = c->n_routed_experts, K = c->num_experts_per_tok, ie = c->moe_intermediate_size;
    int64_t is = (int64_t)c->n_shared_experts * ie;
    tensor_dtype cd = model_cdt(p->m); /* GEMM inputs */
    int bf = cd == TENSOR_BF16;
    memset(A, 0, sizeof *A);
    A->xn = plan_t(p, cd, 2, n, d, 1);
    A->rstd1 = plan_t(p, TENSOR_F32, 1, n, 1, 1);
    if (c->q_lora_rank > 0) {
        A->cq = plan_t(p, TENSOR_F32, 2, n, c->q_lora_rank, 1);
        A->rstd_q = plan_t(p, TENSOR_F32, 1, n, 1, 1);
        A->cqn = plan_t(p, cd, 2, n, c->q_lora_rank, 1);
    }
    A->q = plan_t(p, TENSOR_F32, 3, n, H, c->qk_head_dim);
    A->kva = plan_t(p, TENSOR_F32, 2, n, dc + dr, 1);
    A->rstd_kv = plan_t(p, TENSOR_F32, 1, n, 1, 1);
    A->ckvn = plan_t(p, TENSOR_F32, 2, n, dc, 1);
    if (bf) A->ckvnb = plan_t(p, cd, 2, n, dc, 1);
    A->kvb = plan_t(p, TENSOR_F32, 3, n, H, c->qk_nope_head_dim + c->v_head_dim);
    A->o = plan_t(p, TENSOR_F32, 3, n, H, c->v_head_dim);
    if (bf) A->ob = plan_t(p, cd, 2, n, H * c->v_head_dim, 1);
    if (keep_lse) A->lse = plan_t(p, TENSOR_F32, 2, n, H, 1);
    A->a = plan_t(p, TENSOR_F32, 2, n, d, 1);
    A->rstd2 = plan_t(p, TENSOR_F32, 1, n, 1, 1);
    A->un = plan_t(p, cd, 2, n, d, 1);
    if (dense) {
        A->gu = plan_t(p, TENSOR_F32, 2, n, 2 * c->intermediate_size, 1);
        A->act = plan_t(p, cd, 2, n, c->intermediate_size, 1);
    }
    if (moe) {
        if (bf) A->unf = plan_t(p, TENSOR_F32, 2, n, d, 1);
        A->z = plan_t(p, TENSOR_F32, 2, n, E, 1);
        A->idx = plan_t(p, TENSOR_I32, 2, n, K, 1);
        A->w = plan_t(p, TENSOR_F32, 2, n, K, 1);
        A->offsets = plan_t(p, TENSOR_I32, 1, E + 1, 1, 1);
        A->row_tok = plan_t(p, TENSOR_I32, 1, n * K, 1, 1);
        A->inv = plan_t(p, TENSOR_I32, 1, n * K, 1, 1);
        A->xe = plan_t(p, cd, 2, n * K, d, 1);
        A->gue = plan_t(p, TENSOR_F32, 2, n * K, 2 * ie, 1);
        A->acte = plan_t(p, cd, 2, n * K, ie, 1);
        A->ye = plan_t(p, TENSOR_F32, 2, n * K, d, 1);
        if (is > 0) {
            A->gus = plan_t(p, TENSOR_F32, 2, n, 2 * is, 1);
            A->acts = plan_t(p, cd, 2, n, is, 1);
        }
        ep_plan_acts(p, A, n);
    }
    lora_plan_acts(p, A, n, dense, moe);
}

/* The GEMM operand form of f32 activation t [rows of a contiguous buffer]:
 * t itself in f32 mode; in bf16 mode its bf16 copy written into `copy`
 * (same rows). */
tensor model_gemm_in(const model *m, const tensor *t, const tensor *copy) {
    if (model_cdt(m) == TENSOR_F32) return *t;
    tensor r = tensor_make(copy->data, copy->dtype, copy->device, t->ndim, t->shape);
    m->ops->convert(&r, t);
    return r;
}

/* ---- views ----------------------------------------------------------------- */

/* A 3-D view [a, b, c] with element strides (s0, s1, 1) at data. */
static tensor strided3(void *data, tensor_device dev, int64_t a, int64_t b, int64_t c, int64_t s0, int64_t s1) {
    int64_t shape[3] = {a, b, c};
    tensor t = tensor_make(data, TENSOR_F32, dev, 3, shape);
    t.stride[0] = s0;
    t.stride[1] = s1;
    return t;
}

/* The same over a weight w, from `off` elements after its start, in w's
 * dtype (an f32 master, or a frozen model's stored bf16 / fp8 weight with
 * its block scales). */
static tensor strided3_w(const tensor *w, int64_t off, int64_t a, int64_t b, int64_t c, int64_t s0, int64_t s1) {
    tensor t = strided3((char *)w->data + off * (int64_t)tensor_dtype_size(w->dtype), w->device, a, b, c, s0, s1);
    t.dtype = w->dtype;
    t.qb = w->qb;
    return t;
}

static void copy_rows(const model *m, tensor *dst, const tensor *src, int64_t n) {
    m->ops->copy(dst->data, src->data, (size_t)(n * src->shape[1]) * sizeof(float));
}

/* ---- attention parts ---------------------------------------------------------- */

/* Norm, q and kv projections, latent norm, rope: everything before the
 * attention proper. Leaves kpe (roped) inside A->kva. */
static void attn_pre(const model *m, const model_layer_w *w, layer_acts *A, const tensor *h_in, const fwd_ctx *c) {
    const struct ops *o = m->ops;
    const model_config *cf = &m->cfg;
    int64_t n = c->n, H = cf->num_attention_heads, dc = cf->kv_lora_rank, dr = cf->qk_rope_head_dim;
    tensor xn = mv_rows(&A->xn, n), r1 = mv_rows(&A->rstd1, n);
    int l = (int)(w - m->w.layers);
    const model_layer_w *wc = &m->wc.layers[l]; /* GEMM weights (bf16 in bf16 mode) */
    o->rmsnorm_fwd(&xn, &r1, h_in, &w->in_norm, cf->rms_norm_eps);
    tensor q2 = mv_as2(&A->q, n, H * cf->qk_head_dim);
    if (cf->q_lora_rank > 0) {
        tensor cq = mv_rows(&A->cq, n), cqn = mv_rows(&A->cqn, n), rq = mv_rows(&A->rstd_q, n);
        o->matmul(&cq, &xn, &wc->q_a, 0, 1, 1.0f, 0.0f);
        lora_fwd(m, l, LORA_QA, A, &xn, &cq, n);
        o->rmsnorm_fwd(&cqn, &rq, &cq, &w->q_a_norm, 1e-6f); /* HF: class default eps, spec §1 */
        o->matmul(&q2, &cqn, &wc->q_b, 0, 1, 1.0f, 0.0f);
        lora_fwd(m, l, LORA_QB, A, &cqn, &q2, n);
    } else {
        o->matmul(&q2, &xn, &wc->q, 0, 1, 1.0f, 0.0f);
        lora_fwd(m, l, LORA_Q, A, &xn, &q2, n);
    }
    tensor kva = mv_rows(&A->kva, n);
    o->matmul(&kva, &xn, &wc->kv_a, 0, 1, 1.0f, 0.0f);
    lora_fwd(m, l, LORA_KVA, A, &xn, &kva, n);
    tensor ckv = mv_cols(&kva, 0, dc), kpe = mv_cols(&kva, dc, dr);
    tensor ckvn = mv_rows(&A->ckvn, n), rkv = mv_rows(&A->rstd_kv, n);
    o->rmsnorm_fwd(&ckvn, &rkv, &ckv, &w->kv_a_norm, 1e-6f);
    tensor q3 = mv_rows(&A->q, n);
    tensor qpe = mv_cols(&q3, cf->qk_nope_head_dim, dr);
    o->rope_fwd(&qpe, c->pos, &m->rope_cos, &m->rope_sin, cf->rope_interleave);
    o->rope_fwd(&kpe, c->pos, &m->rope_cos, &m->rope_sin, cf->rope_interleave);
    if (c->cache.data) o->mla_cache_write((tensor *)&c->cache, &ckvn, &kpe, c->table, c->slot, c->pos);
}

/* a = h_in + o @ Wo^T */
static void attn_out(const model *m, const model_layer_w *w, layer_acts *A, const tensor *h_in, int64_t n) {
    const model_config *cf = &m->cfg;
    tensor a = mv_rows(&A->a, n);
    tensor o2 = mv_as2(&A->o, n, (int64_t)cf->num_attention_heads * cf->v_head_dim);
    tensor o2c = model_gemm_in(m, &o2, &A->ob);
    copy_rows(m, &a, h_in, n);
    int l = (int)(w - m->w.layers);
    m->ops->matmul(&a, &o2c, &m->wc.layers[l].o, 0, 1, 1.0f, 1.0f);
    lora_fwd(m, l, LORA_O, A, &o2c, &a, n);
}

void layer_fwd(const model *m, int l, layer_acts *A, const tensor *h_in, tensor *h_out, const fwd_ctx *c) {
    const struct ops *o = m->ops;
    const model_config *cf = &m->cfg;
    const model_layer_w *w = &m->w.layers[l];
    int64_t n = c->n, H = cf->num_attention_heads, dc = cf->kv_lora_rank, dr = cf->qk_rope_head_dim;
    attn_pre(m, w, A, h_in, c);
    tensor ckvn = mv_rows(&A->ckvn, n), kva = mv_rows(&A->kva, n);
    tensor kpe = mv_cols(&kva, dc, dr);
    tensor kvb2 = mv_as2(&A->kvb, n, H * (cf->qk_nope_head_dim + cf->v_head_dim));
    tensor ckvc = model_gemm_in(m, &ckvn, &A->ckvnb);
    o->matmul(&kvb2, &ckvc, &m->wc.layers[l].kv_b, 0, 1, 1.0f, 0.0f);
    lora_fwd(m, l, LORA_KVB, A, &ckvc, &kvb2, n);
    tensor q3 = mv_rows(&A->q, n), kvb = mv_rows(&A->kvb, n), o3 = mv_rows(&A->o, n);
    tensor lse = A->lse.data ? mv_rows(&A->lse, n) : A->lse;
    o->mla_attn_fwd(&o3, A->lse.data ? &lse : NULL, &q3, &kvb, &kpe, c->cu, (float)cf->softmax_scale);
    attn_out(m, w, A, h_in, n);
    ffn_fwd(m, l, A, h_out, n);
}

void layer_decode(const model *m, int l, layer_acts *A, const tensor *h_in, tensor *h_out, const fwd_ctx *c,
                  tensor *q_lat, tensor *o_lat) {
    const struct ops *o = m->ops;
    const model_config *cf = &m->cfg;
    const model_layer_w *w = &m->w.layers[l];
    tensor_device dev = o->device;
    int64_t n = c->n, H = cf->num_attention_heads, dc = cf->kv_lora_rank, dr = cf->qk_rope_head_dim;
    int64_t dn = cf->qk_nope_head_dim, dv = cf->v_head_dim, dqk = cf->qk_head_dim;
    attn_pre(m, w, A, h_in, c);
    /* q_lat[b, h] = W_UK[h]^T q_nope[b, h]: batched over heads, [H, n, dn] @ [H, dn, dc]
     * (the f32 master kv_b in both modes: q and the latent cache are f32; a
     * frozen model's stored kv_b, widened by the GEMM) */
    tensor wuk = strided3_w(&w->kv_b, 0, H, dn, dc, (dn + dv) * dc, dc);
    tensor wuv = strided3_w(&w->kv_b, dn * dc, H, dv, dc, (dn + dv) * dc, dc);
    tensor qn = strided3(A->q.data, dev, H, n, dn, dqk, H * dqk);
    tensor ql = strided3(q_lat->data, dev, H, n, dc, dc, H * dc);
    o->matmul(&ql, &qn, &wuk, 0, 0, 1.0f, 0.0f);
    lora_decode_q(m, l, A, &ql, &qn, &c->lora_hv);
    tensor ql3 = mv_rows(q_lat, n), ol3 = mv_rows(o_lat, n);
    tensor q3 = mv_rows(&A->q, n);
    tensor qpe = mv_cols(&q3, dn, dr);
    o->mla_decode(&ol3, &ql3, &qpe, &c->cache, c->table, c->slot, c->len, (float)cf->softmax_scale);
    /* o[b, h] = W_UV[h] o_lat[b, h]: [H, n, dc] @ [H, dv, dc]^T */
    tensor olv = strided3(o_lat->data, dev, H, n, dc, dc, H * dc);
    tensor ov = strided3(A->o.data, dev, H, n, dv, dv, H * dv);
    o->matmul(&ov, &olv, &wuv, 0, 1, 1.0f, 0.0f);
    lora_decode_o(m, l, A, &ov, &olv, &c->lora_hv);
    attn_out(m, w, A, h_in, n);
    ffn_fwd(m, l, A, h_out, n);
}

/* ---- FFN ---------------------------------------------------------------------- */

static void shared_and_combine(const model *m, int l, layer_acts *A, tensor *h_out, int64_t n);

void ffn_fwd(const model *m, int l, layer_acts *A, tensor *h_out, int64_t n) {
    const struct ops *o = m->ops;
    const model_config *cf = &m->cfg;
    const model_layer_w *w = &m->w.layers[l], *wc = &m->wc.layers[l];
    tensor a = mv_rows(&A->a, n), un = mv_rows(&A->un, n), r2 = mv_rows(&A->rstd2, n);
    if (A->unf.data) { /* bf16 MoE layer: the norm in f32 (the router's input), its bf16 copy for the GEMMs */
        tensor unf = mv_rows(&A->unf, n);
        o->rmsnorm_fwd(&unf, &r2, &a, &w->post_norm, cf->rms_norm_eps);
        o->convert(&un, &unf);
    } else {
        o->rmsnorm_fwd(&un, &r2, &a, &w->post_norm, cf->rms_norm_eps);
    }
    copy_rows(m, h_out, &a, n);
    if (!w->moe) {
        tensor gu = mv_rows(&A->gu, n), act = mv_rows(&A->act, n);
        int64_t I = cf->intermediate_size;
        o->matmul(&gu, &un, &wc->gu, 0, 1, 1.0f, 0.0f);
        tensor g_half = mv_cols(&gu, 0, I), u_half = mv_cols(&gu, I, I);
        lora_fwd(m, l, LORA_GATE, A, &un, &g_half, n);
        lora_fwd(m, l, LORA_UP, A, &un, &u_half, n);
        o->swiglu_fwd(&act, &gu);
        o->matmul(h_out, &act, &wc->down, 0, 1, 1.0f, 1.0f);
        lora_fwd(m, l, LORA_DOWN, A, &act, h_out, n);
        return;
    }
    int64_t E = cf->n_routed_experts, K = cf->num_experts_per_tok;
    tensor z = mv_rows(&A->z, n), idx = mv_rows(&A->idx, n), wt = mv_rows(&A->w, n);
    /* the router in f32: the f32 norm output and the f32 router weight */
    tensor unr = A->unf.data ? mv_rows(&A->unf, n) : un;
    o->matmul(&z, &unr, &w->router, 0, 1, 1.0f, 0.0f);
    o->moe_route(&idx, &wt, &z, &w->bias, cf->n_group, cf->topk_group, cf->norm_topk_prob, cf->routed_scaling_factor);
    tensor rt = mv_rows(&A->row_tok, n * K), inv = mv_rows(&A->inv, n * K);
    o->moe_plan(&A->offsets, &rt, &inv, &idx, (int)E);
    tensor xe = mv_rows(&A->xe, n * K), ye = mv_rows(&A->ye, n * K);
    tensor gue = mv_rows(&A->gue, n * K), acte = mv_rows(&A->acte, n * K);
    o->gather_rows(&xe, &un, &rt);
    int64_t ie = cf->moe_intermediate_size;
    if (m->has_ep) { /* the routed experts on their owners (ep.c) */
        ep_routed_fwd(m, l, A, &xe, &ye);
        shared_and_combine(m, l, A, h_out, n);
        return;
    }
    /* the routed experts over the rows sorted by expert: one grouped GEMM
     * each way (the offsets stay on the device) */
    o->moe_matmul(&gue, &xe, &wc->e_gu, &A->offsets, 1, 1.0f, 0.0f);
    tensor ge_half = mv_cols(&gue, 0, ie), ue_half = mv_cols(&gue, ie, ie);
    lora_fwd(m, l, LORA_EGATE, A, &xe, &ge_half, n * K);
    lora_fwd(m, l, LORA_EUP, A, &xe, &ue_half, n * K);
    o->swiglu_fwd(&acte, &gue);
    o->moe_matmul(&ye, &acte, &wc->e_down, &A->offsets, 1, 1.0f, 0.0f);
    lora_fwd(m, l, LORA_EDOWN, A, &acte, &ye, n * K);
    shared_and_combine(m, l, A, h_out, n);
}

/* The shared experts into h_out, then the routed rows ye combined in slot order. */
static void shared_and_combine(const model *m, int l, layer_acts *A, tensor *h_out, int64_t n) {
    const struct ops *o = m->ops;
    const model_config *cf = &m->cfg;
    const model_layer_w *wc = &m->wc.layers[l];
    int64_t K = cf->num_experts_per_tok, ie = cf->moe_intermediate_size;
    tensor un = mv_rows(&A->un, n), wt = mv_rows(&A->w, n), inv = mv_rows(&A->inv, n * K);
    tensor ye = mv_rows(&A->ye, n * K);
    if (cf->n_shared_experts > 0) {
        tensor gus = mv_rows(&A->gus, n), acts = mv_rows(&A->acts, n);
        int64_t is = (int64_t)cf->n_shared_experts * ie;
        o->matmul(&gus, &un, &wc->s_gu, 0, 1, 1.0f, 0.0f);
        tensor gs_half = mv_cols(&gus, 0, is), us_half = mv_cols(&gus, is, is);
        lora_fwd(m, l, LORA_GATE, A, &un, &gs_half, n);
        lora_fwd(m, l, LORA_UP, A, &un, &us_half, n);
        o->swiglu_fwd(&acts, &gus);
        o->matmul(h_out, &acts, &wc->s_down, 0, 1, 1.0f, 1.0f);
        lora_fwd(m, l, LORA_DOWN, A, &acts, h_out, n);
    }
    o->moe_combine(h_out, &ye, &wt, &inv);
}
