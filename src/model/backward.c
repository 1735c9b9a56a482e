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
#include <string.h>

#include "model/internal.h"

/* The gradient view of a parameter view (grads NULL: frozen base weights,
 * a view with data NULL that no weight-gradient product is run for). */
static tensor gv(const model *m, float *grads, const tensor *p) {
    tensor g = *p;
    g.data = grads ? grads + ((float *)p->data - m->params) : NULL;
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
    tensor g_egu = gv(m, grads, &w->e_gu), g_edown = gv(m, grads, &w->e_down);
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
    tensor g_down = gv(m, grads, w_down), g_gu = gv(m, grads, w_gu);
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
        tensor g_router = gv(m, grads, &w->router);
        tensor unr = A->unf.data ? mv_rows(&A->unf, n) : un; /* the f32 router input */
        wgrad(m, &g_router, &dz, &unr);
        o->matmul(&dun, &dz, &w->router, 0, 0, 1.0f, 1.0f);
        (void)E;
    }
    tensor g_post = gv(m, grads, &w->post_norm);
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
    tensor g_o = gv(m, grads, &w->o);
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
    tensor g_kvb = gv(m, grads, &w->kv_b);
    tensor ckvc = A->ckvnb.data ? mv_rows(&A->ckvnb, n) : ckvn, dkvbc = gop(m, b, &dkvb2);
    wgrad(m, &g_kvb, &dkvbc, &ckvc);
    o->matmul(&dckvn, &dkvbc, &wc->kv_b, 0, 0, 1.0f, 0.0f);
    lora_bwd(m, l, LORA_KVB, A, b, &ckvc, &dkvbc, &dckvn, n);
    tensor dckv = mv_cols(&dkva, 0, dc), ckv = mv_cols(&kva, 0, dc), rkv = mv_rows(&A->rstd_kv, n);
    tensor g_kvn = gv(m, grads, &w->kv_a_norm);
    o->rmsnorm_bwd(&dckv, gp(&g_kvn), &dckvn, &ckv, &w->kv_a_norm, &rkv, 0);
    tensor xn = mv_rows(&A->xn, n), g_kva = gv(m, grads, &w->kv_a);
    tensor dkvac = gop(m, b, &dkva);
    wgrad(m, &g_kva, &dkvac, &xn);
    o->matmul(&dxn, &dkvac, &wc->kv_a, 0, 0, 1.0f, 0.0f);
    lora_bwd(m, l, LORA_KVA, A, b, &xn, &dkvac, &dxn, n);
    /* q path */
    tensor dq2 = mv_as2(&b->dq, n, H * dqk);
    if (c->q_lora_rank > 0) {
        tensor cqn = mv_rows(&A->cqn, n), cq = mv_rows(&A->cq, n), rq = mv_rows(&A->rstd_q, n);
        tensor dcqn = mv_rows(&b->dcqn, n), dcq = mv_rows(&b->dcq, n);
        tensor g_qb = gv(m, grads, &w->q_b), g_qn = gv(m, grads, &w->q_a_norm), g_qa = gv(m, grads, &w->q_a);
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
        tensor g_q = gv(m, grads, &w->q);
        tensor dqc = gop(m, b, &dq2);
        wgrad(m, &g_q, &dqc, &xn);
        o->matmul(&dxn, &dqc, &wc->q, 0, 0, 1.0f, 1.0f);
        lora_bwd(m, l, LORA_Q, A, b, &xn, &dqc, &dxn, n);
    }
    tensor r1 = mv_rows(&A->rstd1, n), g_in = gv(m, grads, &w->in_norm);
    o->rmsnorm_bwd(&dh, gp(&g_in), &dxn, h_in, &w->in_norm, &r1, 1);
}

void model_backward(model_train *tr, const float *g_logp, const float *g_ent, float *grads) {
    if (!tr->have_fwd) base_die("model_backward: no forward to differentiate");
    if (tr->adapter_off) base_die("model_backward: the last forward ran with the adapter off");
    model *m = tr->m;
    /* a frozen bf16/fp8 model differentiates only as a LoRA base: dx through
     * its stored weights, gradients for the adapter alone (grads NULL) */
    if (!m->params && !(m->lora && !grads && !tr->lim.no_adapter))
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
    /* LM head + log-softmax, then the final norm */
    tensor g_head = gv(m, grads, &m->w.lm_head);
    o->lmhead_bwd(&dxn, gp(&g_head), &gl, &ge, &hf, &m->wc.lm_head, &tgt, &lse, &ent, tr->scale, &tr->lm_ws);
    tensor hL = mv_rows(&tr->h[L], n), rf = mv_rows(&tr->rstd_f, n), g_fn = gv(m, grads, &m->w.final_norm);
    o->rmsnorm_bwd(&dh, gp(&g_fn), &dxn, &hL, &m->w.final_norm, &rf, 0);
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
        if (tr->lim.recompute) {
            tensor ho = mv_rows(&tr->h_tmp, n);
            layer_fwd(m, l, A, &hi, &ho, &ctx);
        }
        ffn_bwd(m, l, A, b, grads, n);
        attn_bwd(m, l, A, b, grads, &hi, &pos, &cu, n);
    }
    tensor ids = mv_rows(&tr->ids, n), g_emb = gv(m, grads, &m->w.embed);
    if (g_emb.data) o->embedding_bwd(&g_emb, &dh, &ids);
}
