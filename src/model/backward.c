/*
 * Explicit backward of the training forward (spec §3.11), llm.c style: the
 * reverse of train.c's forward, op by op, one layer at a time. Parameter
 * gradients accumulate (+=) into the gradient arena, which has the
 * parameters' layout (a gradient view is the parameter view moved by
 * grads - params). Activation gradients live in the one-layer scratch.
 *
 * Linear y = x W^T:  dx = dy W,  dW += dy^T x.
 * Per layer, with dh = dL/dh_out on entry and dL/dh_in on exit:
 *   FFN:  dun = (dense | shared + routed + router) backward of dh;
 *         dh += RMSNorm_post backward of dun                 (dh = dL/da)
 *   MLA:  dout = dh Wo; attention backward -> dq, dkvb, dkpe (summed over
 *         heads); rope backward on dq_pe and dkpe; kv_b, kv_a_layernorm,
 *         kv_a; q_b, q_a_layernorm, q_a (or q_proj) -> dxn;
 *         dh += RMSNorm_in backward of dxn                   (dh = dL/dh_in)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/internal.h"

/* The gradient view of a parameter view (grads NULL: frozen base weights,
 * a view with data NULL that no weight-gradient product is run for). With
 * unit windows (b->gw) the element goes to the open window holding it. */
static tensor gv(const model *m, const bwd_scratch *b, float *grads, const tensor *p) {
    tensor g = *p;
    if (!grads) {
        g.data = NULL;
        return g;
    }
    if (!b->gw && !b->gw_emb) {
        g.data = grads + ((float *)p->data - m->params);
        return g;
    }
    /* the element's place in the open units' weights, by address */
    uintptr_t d = (uintptr_t)p->data, pe = (uintptr_t)b->pw_emb, pw = (uintptr_t)b->pw;
    size_t es = sizeof(float);
    if (b->gw_emb && d >= pe && d < pe + (size_t)(b->emb_hi - b->emb_lo) * es)
        g.data = b->gw_emb + (d - pe) / es;
    else if (b->gw && d >= pw && d + (size_t)tensor_numel(p) * es <= pw + (size_t)(b->gw_hi - b->gw_lo) * es)
        g.data = b->gw + (d - pw) / es;
    else
        base_die("backward: a weight outside the open unit windows (unit [%lld, %lld))", (long long)b->gw_lo,
                 (long long)b->gw_hi);
    return g;
}

/* dW += alpha op(a) op(b): the weight-gradient products, skipped for a
 * frozen base (g.data NULL). */
static void wgrad(const model *m, tensor *g, const tensor *a, const tensor *b) {
    if (g->data) m->ops->matmul(g, a, b, 1, 0, 1.0f, 1.0f);
}

/* NULL for a frozen base's gradient view (the norm ops skip dw then). */
static tensor *gp(tensor *g) { return g->data ? g : NULL; }

/* The GEMM operand form of gradient t (contiguous): t in f32 mode; in
 * bf16 mode its bf16 copy in b->cvt (valid until the next gop: each copy
 * feeds the GEMMs issued right after it, in stream order). Weight
 * gradients are then bf16 x bf16 products summed in f32 into the f32
 * gradient arena. */
static tensor gop(const model *m, bwd_scratch *b, const tensor *t) {
    if (model_cdt(m) == TENSOR_F32) return *t;
    if (tensor_numel(t) > b->cvt.shape[0])
        base_die("backward: bf16 scratch too small (%lld < %lld)", (long long)b->cvt.shape[0], (long long)tensor_numel(t));
    tensor r = tensor_make(b->cvt.data, TENSOR_BF16, t->device, t->ndim, t->shape);
    m->ops->convert(&r, t);
    return r;
}

/* A contiguous [rows, cols] view of a flat scratch buffer. */
static tensor flat2(const tensor *buf, int64_t rows, int64_t cols) {
    if (rows * cols > buf->shape[0]) base_die("backward: scratch too small (%lld < %lld)", (long long)buf->shape[0], (long long)(rows * cols));
    int64_t s[2] = {rows, cols};
    return tensor_make(buf->data, TENSOR_F32, buf->device, 2, s);
}

/* The routed experts' backward over `rows` rows grouped by expert
 * (offsets; the model's expert weights): dyc the GEMM operand of dL/dy,
 * x / gu / act the forward's rows; dx written, the local experts' weight
 * gradients accumulated. */
static void routed_bwd(const model *m, int l, const layer_acts *A, bwd_scratch *b, float *grads, int64_t rows,
                       const tensor *x_, const tensor *gu_, const tensor *act_, const tensor *offsets,
                       const tensor *dyc, tensor *dx) {
    const struct ops *o = m->ops;
    const model_layer_w *w = &m->w.layers[l], *wc = &m->wc.layers[l];
    int64_t f = m->cfg.moe_intermediate_size;
    tensor x = mv_rows(x_, rows), gue = mv_rows(gu_, rows), acte = mv_rows(act_, rows);
    tensor g_egu = gv(m, b, grads, &w->e_gu), g_edown = gv(m, b, grads, &w->e_down);
    tensor dact = flat2(&b->dact, rows, f), dgu = flat2(&b->dgu, rows, 2 * f);
    /* the routed experts over the rows sorted by expert, all at once */
    o->moe_matmul(&dact, dyc, &wc->e_down, offsets, 0, 1.0f, 0.0f);
    lora_bwd(m, l, LORA_EDOWN, A, b, &acte, dyc, &dact, rows);
    if (g_edown.data) o->moe_matmul_dw(&g_edown, dyc, &acte, offsets, 1.0f);
    o->swiglu_bwd(&dgu, &dact, &gue);
    tensor dguc = gop(m, b, &dgu);
    if (g_egu.data) o->moe_matmul_dw(&g_egu, &dguc, &x, offsets, 1.0f);
    o->moe_matmul(dx, &dguc, &wc->e_gu, offsets, 0, 1.0f, 0.0f);
    tensor dge = mv_cols(&dguc, 0, f), due = mv_cols(&dguc, f, f);
    lora_bwd(m, l, LORA_EGATE, A, b, &x, &dge, dx, rows);
    lora_bwd(m, l, LORA_EUP, A, b, &x, &due, dx, rows);
}

/* One SwiGLU MLP backward (the dense MLP or the shared experts of layer
 * l, LoRA slots LORA_GATE/UP/DOWN): master weights gu [2F, d], down [d, F]
 * (for the gradient views) and their compute views c_gu, c_down; input x
 * [n, d], saved gu_out [n, 2F], act [n, F]; dy [n, d]. dx written or added. */
static void mlp_bwd(const model *m, int l, const layer_acts *A, float *grads, bwd_scratch *b, const tensor *w_gu,
                    const tensor *w_down, const tensor *c_gu, const tensor *c_down, const tensor *x, const tensor *gu,
                    const tensor *act, const tensor *dy, tensor *dx, int add_dx) {
    const struct ops *o = m->ops;
    int64_t n = x->shape[0], f = act->shape[1];
    tensor dact = flat2(&b->dact, n, f), dgu = flat2(&b->dgu, n, 2 * f);
    tensor g_down = gv(m, b, grads, w_down), g_gu = gv(m, b, grads, w_gu);
    tensor dyc = gop(m, b, dy);
    o->matmul(&dact, &dyc, c_down, 0, 0, 1.0f, 0.0f);
    lora_bwd(m, l, LORA_DOWN, A, b, act, &dyc, &dact, n);
    wgrad(m, &g_down, &dyc, act);
    o->swiglu_bwd(&dgu, &dact, gu);
    tensor dguc = gop(m, b, &dgu);
    wgrad(m, &g_gu, &dguc, x);
    o->matmul(dx, &dguc, c_gu, 0, 0, 1.0f, add_dx ? 1.0f : 0.0f);
    tensor dg = mv_cols(&dguc, 0, f), du = mv_cols(&dguc, f, f);
    lora_bwd(m, l, LORA_GATE, A, b, x, &dg, dx, n);
    lora_bwd(m, l, LORA_UP, A, b, x, &du, dx, n);
}

/* FFN half: dh = dL/dh_out in, dL/da out. */
static void ffn_bwd(const model *m, int l, layer_acts *A, bwd_scratch *b, float *grads, int64_t n) {
    const struct ops *o = m->ops;
    const model_config *c = &m->cfg;
    const model_layer_w *w = &m->w.layers[l], *wc = &m->wc.layers[l];
    tensor dh = mv_rows(&b->dh, n), dun = mv_rows(&b->dxn, n);
    tensor un = mv_rows(&A->un, n), a = mv_rows(&A->a, n), r2 = mv_rows(&A->rstd2, n);
    if (!w->moe) {
        tensor gu = mv_rows(&A->gu, n), act = mv_rows(&A->act, n);
        mlp_bwd(m, l, A, grads, b, &w->gu, &w->down, &wc->gu, &wc->down, &un, &gu, &act, &dh, &dun, 0);
    } else {
        int64_t E = c->n_routed_experts, K = c->num_experts_per_tok;
        int have = 0;
        if (c->n_shared_experts > 0) {
            tensor gus = mv_rows(&A->gus, n), acts = mv_rows(&A->acts, n);
            mlp_bwd(m, l, A, grads, b, &w->s_gu, &w->s_down, &wc->s_gu, &wc->s_down, &un, &gus, &acts, &dh, &dun,
                    0);
            have = 1;
        }
        if (!have) o->zero(dun.data, (size_t)(n * c->hidden_size) * sizeof(float));
        /* routed experts: dye = w dh per row, dw = dh . ye */
        tensor dye = mv_rows(&b->dye, n * K), dxe = mv_rows(&b->dxe, n * K), dw = mv_rows(&b->dw, n);
        tensor ye = mv_rows(&A->ye, n * K), wt = mv_rows(&A->w, n), inv = mv_rows(&A->inv, n * K);
        o->moe_combine_bwd(&dye, &dw, &dh, &ye, &wt, &inv);
        tensor dyec = gop(m, b, &dye);
        if (m->has_ep) {
            ep_routed_bwd(m, l, A, b, grads, &dyec, &dxe, routed_bwd);
        } else {
            tensor xe = mv_rows(&A->xe, n * K), gue = mv_rows(&A->gue, n * K), acte = mv_rows(&A->acte, n * K);
            routed_bwd(m, l, A, b, grads, n * K, &xe, &gue, &acte, &A->offsets, &dyec, &dxe);
        }
        o->moe_combine(&dun, &dxe, NULL, &inv); /* backward of the row gather */
        /* router: the choice is constant; the chosen sigmoid weights are not */
        tensor dz = mv_rows(&b->dz, n), z = mv_rows(&A->z, n), idx = mv_rows(&A->idx, n);
        o->moe_route_bwd(&dz, &dw, &z, &idx, c->norm_topk_prob, c->routed_scaling_factor);
        if (b->aux_coef != 0.0f) o->moe_aux_bwd(&dz, &z, &idx, &b->aux_cu, b->aux_coef); /* the balance loss */
        tensor g_router = gv(m, b, grads, &w->router);
        tensor unr = A->unf.data ? mv_rows(&A->unf, n) : un; /* the f32 router input */
        wgrad(m, &g_router, &dz, &unr);
        o->matmul(&dun, &dz, &w->router, 0, 0, 1.0f, 1.0f);
        (void)E;
    }
    tensor g_post = gv(m, b, grads, &w->post_norm);
    o->rmsnorm_bwd(&dh, gp(&g_post), &dun, &a, &w->post_norm, &r2, 1);
}

/* Attention half: dh = dL/da in, dL/dh_in out. */
static void attn_bwd(const model *m, int l, layer_acts *A, bwd_scratch *b, float *grads, const tensor *h_in,
                     const tensor *pos, const tensor *cu, int64_t n) {
    const struct ops *o = m->ops;
    const model_config *c = &m->cfg;
    const model_layer_w *w = &m->w.layers[l], *wc = &m->wc.layers[l];
    int64_t H = c->num_attention_heads, dc = c->kv_lora_rank, dr = c->qk_rope_head_dim, dn = c->qk_nope_head_dim;
    int64_t dv = c->v_head_dim, dqk = c->qk_head_dim;
    tensor dh = mv_rows(&b->dh, n), dxn = mv_rows(&b->dxn, n);
    /* o_proj */
    tensor o2 = mv_as2(&A->o, n, H * dv), dout2 = mv_as2(&b->dout, n, H * dv);
    tensor g_o = gv(m, b, grads, &w->o);
    tensor o2c = A->ob.data ? mv_rows(&A->ob, n) : o2; /* the forward's GEMM input */
    tensor dhc = gop(m, b, &dh);
    o->matmul(&dout2, &dhc, &wc->o, 0, 0, 1.0f, 0.0f);
    lora_bwd(m, l, LORA_O, A, b, &o2c, &dhc, &dout2, n);
    wgrad(m, &g_o, &dhc, &o2c);
    /* attention */
    tensor q3 = mv_rows(&A->q, n), kvb3 = mv_rows(&A->kvb, n), o3 = mv_rows(&A->o, n), lse = mv_rows(&A->lse, n);
    tensor kva = mv_rows(&A->kva, n), kpe = mv_cols(&kva, dc, dr);
    tensor dq3 = mv_rows(&b->dq, n), dkvb3 = mv_rows(&b->dkvb, n), dout3 = mv_rows(&b->dout, n);
    tensor dkva = mv_rows(&b->dkva, n), dkpe = mv_cols(&dkva, dc, dr);
    o->mla_attn_bwd(&dq3, &dkvb3, &dkpe, &dout3, &q3, &kvb3, &kpe, &o3, &lse, cu, (float)c->softmax_scale);
    tensor dqpe = mv_cols(&dq3, dn, dr);
    o->rope_bwd(&dqpe, pos, &m->rope_cos, &m->rope_sin, c->rope_interleave);
    o->rope_bwd(&dkpe, pos, &m->rope_cos, &m->rope_sin, c->rope_interleave);
    /* kv path: kv_b, kv_a_layernorm, kv_a */
    tensor dkvb2 = mv_as2(&b->dkvb, n, H * (dn + dv)), ckvn = mv_rows(&A->ckvn, n), dckvn = mv_rows(&b->dckvn, n);
    tensor g_kvb = gv(m, b, grads, &w->kv_b);
    tensor ckvc = A->ckvnb.data ? mv_rows(&A->ckvnb, n) : ckvn, dkvbc = gop(m, b, &dkvb2);
    wgrad(m, &g_kvb, &dkvbc, &ckvc);
    o->matmul(&dckvn, &dkvbc, &wc->kv_b, 0, 0, 1.0f, 0.0f);
    lora_bwd(m, l, LORA_KVB, A, b, &ckvc, &dkvbc, &dckvn, n);
    tensor dckv = mv_cols(&dkva, 0, dc), ckv = mv_cols(&kva, 0, dc), rkv = mv_rows(&A->rstd_kv, n);
    tensor g_kvn = gv(m, b, grads, &w->kv_a_norm);
    o->rmsnorm_bwd(&dckv, gp(&g_kvn), &dckvn, &ckv, &w->kv_a_norm, &rkv, 0);
    tensor xn = mv_rows(&A->xn, n), g_kva = gv(m, b, grads, &w->kv_a);
    tensor dkvac = gop(m, b, &dkva);
    wgrad(m, &g_kva, &dkvac, &xn);
    o->matmul(&dxn, &dkvac, &wc->kv_a, 0, 0, 1.0f, 0.0f);
    lora_bwd(m, l, LORA_KVA, A, b, &xn, &dkvac, &dxn, n);
    /* q path */
    tensor dq2 = mv_as2(&b->dq, n, H * dqk);
    if (c->q_lora_rank > 0) {
        tensor cqn = mv_rows(&A->cqn, n), cq = mv_rows(&A->cq, n), rq = mv_rows(&A->rstd_q, n);
        tensor dcqn = mv_rows(&b->dcqn, n), dcq = mv_rows(&b->dcq, n);
        tensor g_qb = gv(m, b, grads, &w->q_b), g_qn = gv(m, b, grads, &w->q_a_norm), g_qa = gv(m, b, grads, &w->q_a);
        tensor dqc = gop(m, b, &dq2);
        wgrad(m, &g_qb, &dqc, &cqn);
        o->matmul(&dcqn, &dqc, &wc->q_b, 0, 0, 1.0f, 0.0f);
        lora_bwd(m, l, LORA_QB, A, b, &cqn, &dqc, &dcqn, n);
        o->rmsnorm_bwd(&dcq, gp(&g_qn), &dcqn, &cq, &w->q_a_norm, &rq, 0);
        tensor dcqc = gop(m, b, &dcq);
        wgrad(m, &g_qa, &dcqc, &xn);
        o->matmul(&dxn, &dcqc, &wc->q_a, 0, 0, 1.0f, 1.0f);
        lora_bwd(m, l, LORA_QA, A, b, &xn, &dcqc, &dxn, n);
    } else {
        tensor g_q = gv(m, b, grads, &w->q);
        tensor dqc = gop(m, b, &dq2);
        wgrad(m, &g_q, &dqc, &xn);
        o->matmul(&dxn, &dqc, &wc->q, 0, 0, 1.0f, 1.0f);
        lora_bwd(m, l, LORA_Q, A, b, &xn, &dqc, &dxn, n);
    }
    tensor r1 = mv_rows(&A->rstd1, n), g_in = gv(m, b, grads, &w->in_norm);
    o->rmsnorm_bwd(&dh, gp(&g_in), &dxn, h_in, &w->in_norm, &r1, 1);
}

/* The unit of a parameter (model_grad_units), -1 for none (MTP). */
static int unit_of(const model *m, const model_param *p) {
    int L = m->cfg.num_hidden_layers, l;
    if (p->mtp) return -1;
    if (!strcmp(p->name, "model.embed_tokens.weight")) return 0;
    if (sscanf(p->name, "model.layers.%d.", &l) == 1) return l >= 0 && l < L ? 1 + l : -1;
    return L + 1;
}

int model_grad_units(const model *m) { return m->cfg.num_hidden_layers + 2; }

void model_grad_unit_ranges(const model *m, int64_t *lo, int64_t *hi) {
    int U = model_grad_units(m);
    for (int u = 0; u < U; u++) lo[u] = INT64_MAX, hi[u] = INT64_MIN;
    for (int i = 0; i < model_nparams(m); i++) {
        const model_param *p = model_param_at(m, i);
        int u = unit_of(m, p);
        if (u < 0) continue;
        if (p->offset < lo[u]) lo[u] = p->offset;
        if (p->offset + p->numel > hi[u]) hi[u] = p->offset + p->numel;
    }
    for (int u = 0; u < U; u++)
        if (lo[u] > hi[u]) base_die("model_grad_unit_ranges: unit %d has no tensor", u);
    for (int u = 1; u < U; u++)
        if (lo[u] < hi[u - 1]) base_die("model_grad_unit_ranges: units %d and %d overlap", u - 1, u);
}

void model_grad_windows(const model *m, int64_t *win, int64_t *emb, int64_t *units) {
    int U = model_grad_units(m), tied = m->cfg.tie_word_embeddings;
    int64_t *lo = base_xmalloc(2 * (size_t)U * sizeof(int64_t)), *hi = lo + U;
    model_grad_unit_ranges(m, lo, hi);
    *win = 0, *emb = tied ? hi[0] - lo[0] : 0;
    int64_t all = 0;
    for (int u = 0; u < U; u++) all += hi[u] - lo[u];
    for (int u = tied ? 1 : 0; u < U; u++)
        if (hi[u] - lo[u] > *win) *win = hi[u] - lo[u];
    if (units) *units = all;
    free(lo);
}

/* Where unit u's weights are: the arena, or its ZeRO 3 window. */
static const float *unit_weights(const model *m, const int64_t *lo, int u) {
    return m->released ? model_unit_base(m, u) : m->params + lo[u];
}

/* Unit windows: open unit u's (begin) as the current window, or close it. */
static void unit_open(bwd_scratch *b, const model_grad_hooks *h, const model *m, const int64_t *lo,
                      const int64_t *hi, int u) {
    if (!h) return;
    b->gw = h->begin(h->ctx, u);
    b->gw_lo = lo[u], b->gw_hi = hi[u];
    b->pw = unit_weights(m, lo, u);
}

static void unit_close(bwd_scratch *b, const model_grad_hooks *h, int u) {
    if (!h) return;
    h->end(h->ctx, u);
    b->gw = NULL;
}

/* With ZeRO hooks h: the units' gradient ranges (*ulo, *uhi [L + 2], the
 * caller frees *ulo) and, for tied embeddings, the embedding's window opened
 * for the whole pass (from the LM head on). Returns the grads to pass on:
 * the flag `windowed` (every gradient goes to a window, gv) with hooks,
 * else grads. */
static float *units_begin(model *m, bwd_scratch *b, const model_grad_hooks *h, float *grads, float *windowed,
                          int64_t **ulo, int64_t **uhi) {
    *ulo = *uhi = NULL;
    if (!h) return grads;
    int L = m->cfg.num_hidden_layers;
    *ulo = base_xmalloc(2 * (size_t)(L + 2) * sizeof(int64_t)), *uhi = *ulo + L + 2;
    model_grad_unit_ranges(m, *ulo, *uhi);
    if ((*uhi)[0] - (*ulo)[0] != m->cfg.vocab_size * m->cfg.hidden_size) base_die("backward: unit 0 is not the embedding");
    b->gw_emb = NULL;
    if (m->cfg.tie_word_embeddings) {
        model_unit_use(m, 0);
        b->gw_emb = h->begin(h->ctx, 0);
        b->emb_lo = (*ulo)[0], b->emb_hi = (*uhi)[0];
        b->pw_emb = unit_weights(m, *ulo, 0);
    }
    return windowed;
}

static void backward(model_train *tr, const float *g_logp, const float *g_ent, float *grads,
                     const model_grad_hooks *h) {
    static float windowed; /* grads with unit windows: a flag, never written (gv picks the window) */
    if (!tr->have_fwd) base_die("model_backward: no forward to differentiate");
    if (tr->adapter_off) base_die("model_backward: the last forward ran with the adapter off");
    model *m = tr->m;
    /* a frozen bf16/fp8 model differentiates only as a LoRA base: dx through
     * its stored weights, gradients for the adapter alone (grads NULL) */
    if (!m->params && !m->released && !(m->lora && !grads && !tr->lim.no_adapter))
        base_die("model_backward: a frozen %s model holds no master weights to differentiate",
                 model_precision_name(m->prec));
    const struct ops *o = m->ops;
    const model_config *c = &m->cfg;
    int64_t n = tr->n;
    int L = c->num_hidden_layers;
    bwd_scratch *b = &tr->b;
    o->upload(tr->g_logp.data, g_logp, (size_t)n * sizeof(float));
    o->upload(tr->g_ent.data, g_ent ? g_ent : tr->host_f32, (size_t)n * sizeof(float));
    tensor gl = mv_rows(&tr->g_logp, n), ge = mv_rows(&tr->g_ent, n);
    tensor hf = mv_rows(&tr->hf, n), tgt = mv_rows(&tr->tgt, n), lse = mv_rows(&tr->lse, n), ent = mv_rows(&tr->ent, n);
    tensor dxn = mv_rows(&b->dxn, n), dh = mv_rows(&b->dh, n);
    int tied = c->tie_word_embeddings;
    int64_t *ulo, *uhi;
    grads = units_begin(m, b, h, grads, &windowed, &ulo, &uhi); /* non-NULL with hooks: every gradient to a window */
    /* LM head + log-softmax, then the final norm */
    model_unit_use(m, L + 1);
    unit_open(b, h, m, ulo, uhi, L + 1);
    tensor g_head = gv(m, b, grads, &m->w.lm_head);
    o->lmhead_bwd(&dxn, gp(&g_head), &gl, &ge, &hf, &m->wc.lm_head, &tgt, &lse, &ent, tr->scale, &tr->lm_ws);
    tensor hL = mv_rows(&tr->h[L], n), rf = mv_rows(&tr->rstd_f, n), g_fn = gv(m, b, grads, &m->w.final_norm);
    o->rmsnorm_bwd(&dh, gp(&g_fn), &dxn, &hL, &m->w.final_norm, &rf, 0);
    unit_close(b, h, L + 1);
    tensor pos = mv_rows(&tr->pos, n), cu = mv_rows(&tr->cu, tr->nseq + 1);
    b->aux_coef = tr->aux_fwd ? tr->aux_coef : 0.0f; /* the balance loss of the forward's setting */
    b->aux_cu = cu;
    fwd_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.n = n;
    ctx.pos = &pos;
    ctx.cu = &cu;
    for (int l = L - 1; l >= 0; l--) {
        layer_acts *A = &tr->acts[tr->nacts == 1 ? 0 : l];
        tensor hi = mv_rows(&tr->h[l], n);
        model_unit_use(m, 1 + l);
        if (tr->lim.recompute) {
            tensor ho = mv_rows(&tr->h_tmp, n);
            layer_fwd(m, l, A, &hi, &ho, &ctx);
        }
        unit_open(b, h, m, ulo, uhi, 1 + l);
        ffn_bwd(m, l, A, b, grads, n);
        attn_bwd(m, l, A, b, grads, &hi, &pos, &cu, n);
        unit_close(b, h, 1 + l);
    }
    if (h && !tied) { /* the embedding's gradient needs no weights: its grad window alone */
        b->gw = h->begin(h->ctx, 0);
        b->gw_lo = ulo[0], b->gw_hi = uhi[0];
        b->pw = m->released ? NULL : m->params + ulo[0];
    }
    tensor ids = mv_rows(&tr->ids, n), g_emb;
    if (h) { /* unit 0 is the embedding alone: its window is the table's gradient */
        int64_t es[2] = {c->vocab_size, c->hidden_size};
        g_emb = tensor_make(tied ? b->gw_emb : b->gw, TENSOR_F32, o->device, 2, es);
    } else {
        g_emb = gv(m, b, grads, &m->w.embed);
    }
    if (g_emb.data) o->embedding_bwd(&g_emb, &dh, &ids);
    if (h) {
        h->end(h->ctx, 0);
        b->gw = b->gw_emb = NULL;
        free(ulo);
    }
}

void model_backward(model_train *tr, const float *g_logp, const float *g_ent, float *grads) {
    backward(tr, g_logp, g_ent, grads, NULL);
}

/* The backward of a zero-row forward (model_train_join_forward): backward()'s
 * sequence of unit uses, windows and MoE exchanges, with no rows of this
 * rank's own; only the rows peers send to this rank's experts are
 * differentiated (their weight gradients accumulate as in a real pass). */
void model_train_join_backward(model_train *tr, float *grads, const model_grad_hooks *h) {
    static float windowed; /* as backward(): a flag, never written */
    if (!tr->have_join) base_die("model_train_join_backward: no zero-row forward to follow");
    if (h && (!h->begin || !h->end)) base_die("model_train_join_backward: incomplete hooks");
    model *m = tr->m;
    const model_config *c = &m->cfg;
    int L = c->num_hidden_layers, tied = c->tie_word_embeddings;
    bwd_scratch *b = &tr->b;
    int64_t *ulo = NULL, *uhi = NULL;
    const int32_t *zeros = tr->host_off; /* n_routed_experts + 1 zeros (the join forward's) */
    grads = units_begin(m, b, h, grads, &windowed, &ulo, &uhi);
    model_unit_use(m, L + 1);
    unit_open(b, h, m, ulo, uhi, L + 1);
    unit_close(b, h, L + 1);
    tr->eh.err = BASE_OK;
    for (int l = L - 1; l >= 0; l--) {
        layer_acts *A = &tr->acts[tr->nacts == 1 ? 0 : l];
        int moe = m->has_ep && m->w.layers[l].moe;
        model_unit_use(m, 1 + l);
        if (tr->lim.recompute && moe) ep_join_fwd(m, l, A, zeros); /* the recomputation's exchanges */
        unit_open(b, h, m, ulo, uhi, 1 + l);
        if (moe) ep_join_bwd(m, l, A, b, grads, routed_bwd);
        unit_close(b, h, 1 + l);
    }
    if (tr->eh.err) base_die("backward (zero rows): %s", tr->eh.msg);
    if (h) {
        if (!tied) h->begin(h->ctx, 0);
        h->end(h->ctx, 0);
        b->gw = b->gw_emb = NULL;
        free(ulo);
    }
    tr->have_join = 0;
}

void model_backward_units(model_train *tr, const float *g_logp, const float *g_ent, const model_grad_hooks *h) {
    if (!h || !h->begin || !h->end) base_die("model_backward_units: no hooks");
    if (!tr->m->params && !tr->m->released) base_die("model_backward_units: the model holds no master weights");
    if (tr->lora_planned && !tr->adapter_off)
        base_die("model_backward_units: a pass with a LoRA adapter (its gradients are the adapter's arena)");
    backward(tr, g_logp, g_ent, NULL, h);
}
