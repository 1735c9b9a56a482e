/*
 * Training forward: the activation arena (planned once from the limits),
 * batch validation and upload, the forward over packed sequences that keeps
 * what backward.c needs, per-token logp and entropy from the chunked LM
 * head.
 *
 * Arena (one allocation, see docs/model.md): batch inputs (ids, targets,
 * positions, cu_seqlens), the residual stream h[0..L] ([N, d] each: h[l] is
 * layer l's input), per-layer activations (one shared set when recompute),
 * the final norm and LM-head outputs, and the backward's scratch.
 */
#include <stdlib.h>
#include <string.h>

#include "model/internal.h"

static int64_t max3(int64_t a, int64_t b, int64_t c) {
    int64_t m = a > b ? a : b;
    return m > c ? m : c;
}

/* Plan (measure or bind) the whole training arena. */
static void plan_train(planner *p, model_train *tr) {
    const model *m = p->m;
    const model_config *c = &m->cfg;
    int64_t n = tr->lim.max_tokens, d = c->hidden_size, L = c->num_hidden_layers, V = c->vocab_size;
    int64_t H = c->num_attention_heads, K = c->num_experts_per_tok, E = c->n_routed_experts;
    int64_t ie = c->moe_intermediate_size, is = (int64_t)c->n_shared_experts * ie, I = c->intermediate_size;
    int any_dense = 0, any_moe = 0;
    for (int l = 0; l < L; l++) {
        if (model_layer_is_moe(c, l)) any_moe = 1;
        else any_dense = 1;
    }
    tr->ids = plan_t(p, TENSOR_I32, 1, n, 1, 1);
    tr->tgt = plan_t(p, TENSOR_I32, 1, n, 1, 1);
    tr->pos = plan_t(p, TENSOR_I32, 1, n, 1, 1);
    tr->cu = plan_t(p, TENSOR_I32, 1, tr->lim.max_seqs + 1, 1, 1);
    for (int64_t l = 0; l <= L; l++) tr->h[l] = plan_t(p, TENSOR_F32, 2, n, d, 1);
    for (int i = 0; i < tr->nacts; i++) {
        int dense = tr->nacts == 1 ? any_dense : !model_layer_is_moe(c, i);
        int moe = tr->nacts == 1 ? any_moe : model_layer_is_moe(c, i);
        plan_layer_acts(p, &tr->acts[i], n, dense, moe, 1);
    }
    tr->rstd_f = plan_t(p, TENSOR_F32, 1, n, 1, 1);
    tr->hf = plan_t(p, model_cdt(m), 2, n, d, 1); /* the LM head's input */
    tr->logp = plan_t(p, TENSOR_F32, 1, n, 1, 1);
    tr->ent = plan_t(p, TENSOR_F32, 1, n, 1, 1);
    tr->lse = plan_t(p, TENSOR_F32, 1, n, 1, 1);
    tr->g_logp = plan_t(p, TENSOR_F32, 1, n, 1, 1);
    tr->g_ent = plan_t(p, TENSOR_F32, 1, n, 1, 1);
    int64_t rows = n < MODEL_LM_ROWS ? n : MODEL_LM_ROWS, cols = V < MODEL_LM_COLS ? V : MODEL_LM_COLS;
    tr->lm_ws = plan_t(p, TENSOR_F32, 2, rows, cols, 1);
    /* backward scratch: one layer at a time */
    bwd_scratch *b = &tr->b;
    b->dh = plan_t(p, TENSOR_F32, 2, n, d, 1);
    b->dxn = plan_t(p, TENSOR_F32, 2, n, d, 1);
    b->dq = plan_t(p, TENSOR_F32, 3, n, H, c->qk_head_dim);
    if (c->q_lora_rank > 0) {
        b->dcqn = plan_t(p, TENSOR_F32, 2, n, c->q_lora_rank, 1);
        b->dcq = plan_t(p, TENSOR_F32, 2, n, c->q_lora_rank, 1);
    }
    b->dkva = plan_t(p, TENSOR_F32, 2, n, c->kv_lora_rank + c->qk_rope_head_dim, 1);
    b->dckvn = plan_t(p, TENSOR_F32, 2, n, c->kv_lora_rank, 1);
    b->dkvb = plan_t(p, TENSOR_F32, 3, n, H, c->qk_nope_head_dim + c->v_head_dim);
    b->dout = plan_t(p, TENSOR_F32, 3, n, H, c->v_head_dim);
    /* expert parallelism: the expert side's rows received from the group */
    int64_t R = m->has_ep && any_moe ? m->ep.size * ep_cap(m, n) : 0;
    int64_t act_n = max3(any_dense ? n * I : 0, any_moe ? n * K * ie : 0, any_moe ? n * is : 0);
    if (R * ie > act_n) act_n = R * ie;
    b->dact = plan_t(p, TENSOR_F32, 1, act_n > 0 ? act_n : 1, 1, 1);
    b->dgu = plan_t(p, TENSOR_F32, 1, act_n > 0 ? 2 * act_n : 1, 1, 1);
    if (any_moe) {
        b->dye = plan_t(p, TENSOR_F32, 2, n * K, d, 1);
        b->dxe = plan_t(p, TENSOR_F32, 2, n * K, d, 1);
        b->dw = plan_t(p, TENSOR_F32, 2, n, K, 1);
        b->dz = plan_t(p, TENSOR_F32, 2, n, E, 1);
        if (R > 0) {
            b->ep_dy = plan_t(p, TENSOR_F32, 2, R, d, 1);
            b->ep_dx = plan_t(p, TENSOR_F32, 2, R, d, 1);
        }
    }
    if (tr->lim.recompute) tr->h_tmp = plan_t(p, TENSOR_F32, 2, n, d, 1);
    if (any_moe) tr->moe_off = plan_t(p, TENSOR_I32, 1, L * (E + 1), 1, 1);
    if (any_moe) tr->aux = plan_t(p, TENSOR_F32, 1, L * tr->lim.max_seqs, 1, 1);
    if (p->lora) { /* dL/dt of one adapted module at a time */
        int64_t rows = lora_scratch_rows(c, p->lora, n);
        b->ldt = plan_t(p, TENSOR_F32, 2, rows, p->lora->r, 1);
        if (model_cdt(m) == TENSOR_BF16) b->ldtb = plan_t(p, TENSOR_BF16, 2, rows, p->lora->r, 1);
    }
    if (model_cdt(m) == TENSOR_BF16) {
        /* the largest gradient converted for a GEMM: dh [n, d], dq, dkvb,
         * dkva, dcq, dgu (2 act_n), dye [nK, d] */
        int64_t cv = max3(n * d, n * H * c->qk_head_dim, n * H * (c->qk_nope_head_dim + c->v_head_dim));
        cv = max3(cv, n * (c->kv_lora_rank + c->qk_rope_head_dim), n * (int64_t)c->q_lora_rank);
        cv = max3(cv, 2 * act_n, any_moe ? (n * K > R ? n * K : R) * d : 0);
        b->cvt = plan_t(p, TENSOR_BF16, 1, cv, 1, 1);
    }
}

static base_status check_limits(const model_train_limits *lim) {
    if (lim->max_tokens < 1 || lim->max_seqs < 1)
        return base_err_set(BASE_ERR_INVALID, "model_train: max_tokens (%lld) and max_seqs (%d) must be >= 1",
                            (long long)lim->max_tokens, lim->max_seqs);
    return BASE_OK;
}

static model_train *train_shell(model *m, const model_train_limits *lim) {
    model_train *tr = base_xcalloc(1, sizeof *tr);
    tr->m = m;
    tr->lim = *lim;
    int L = m->cfg.num_hidden_layers;
    tr->h = base_xcalloc((size_t)L + 1, sizeof(tensor));
    tr->nacts = lim->recompute ? 1 : L;
    tr->acts = base_xcalloc((size_t)tr->nacts, sizeof(layer_acts));
    return tr;
}

static void train_shell_free(model_train *tr) {
    free(tr->acts);
    free(tr->h);
    free(tr);
}

/* The slack model_train_new allocates past the planned arena. */
#define ARENA_SLACK 64

size_t model_train_bytes_p(const model_config *cfg, const model_train_limits *lim, const model_lora_config *lc,
                           model_precision prec) {
    return model_train_plan_bytes(cfg, lim, lc, prec) + ARENA_SLACK;
}

size_t model_train_plan_bytes(const model_config *cfg, const model_train_limits *lim, const model_lora_config *lc,
                              model_precision prec) {
    return model_train_plan_bytes_ep(cfg, lim, lc, prec, 1);
}

size_t model_train_bytes_ep(const model_config *cfg, const model_train_limits *lim, const model_lora_config *lc,
                            model_precision prec, int ep_size) {
    return model_train_plan_bytes_ep(cfg, lim, lc, prec, ep_size) + ARENA_SLACK;
}

size_t model_train_plan_bytes_ep(const model_config *cfg, const model_train_limits *lim, const model_lora_config *lc,
                                 model_precision prec, int ep_size) {
    if (check_limits(lim)) return 0;
    model shell;
    memset(&shell, 0, sizeof shell);
    shell.cfg = *cfg;
    model_ep_shell(&shell, ep_size);
    shell.ops = ops_cpu();
    shell.cdt = prec == MODEL_BF16 ? TENSOR_BF16 : TENSOR_F32;
    model_train *tr = train_shell(&shell, lim);
    planner p = {&shell, NULL, 0, lim->no_adapter ? NULL : lc};
    plan_train(&p, tr);
    train_shell_free(tr);
    return p.off;
}

size_t model_train_bytes(const model_config *cfg, const model_train_limits *lim) {
    return model_train_plan_bytes(cfg, lim, NULL, MODEL_F32);
}

base_status model_train_new(model *m, const model_train_limits *lim, model_train **out) {
    *out = NULL;
    base_status st = check_limits(lim);
    if (st) return st;
    model_train *tr = train_shell(m, lim);
    /* a LoRA adapter attached now runs in this pass unless no_adapter */
    const model_lora_config *lc = m->lora && !lim->no_adapter ? &m->lora->cfg : NULL;
    planner p = {m, NULL, 0, lc};
    plan_train(&p, tr);
    tr->bytes = p.off;
    if (lc) model_lora_grads(m->lora); /* the adapter's gradient arena, made once */
    tr->mem = m->ops->alloc(tr->bytes + ARENA_SLACK);
    p.base = tr->mem;
    p.off = 0;
    plan_train(&p, tr);
    tr->lora_planned = lc ? m->lora : NULL;
    ep_host_init(&tr->eh, m, lim->max_tokens);
    for (int i = 0; i < tr->nacts; i++) tr->acts[i].eh = &tr->eh;
    tr->host_i32 = base_xmalloc((size_t)lim->max_tokens * 2 * sizeof(int32_t));
    tr->host_f32 = base_xcalloc((size_t)lim->max_tokens, sizeof(float));
    if (tr->moe_off.data)
        tr->host_off = base_xmalloc((size_t)tensor_numel(&tr->moe_off) * sizeof(int32_t));
    if (tr->aux.data) tr->host_aux = base_xmalloc((size_t)tensor_numel(&tr->aux) * sizeof(float));
    *out = tr;
    return BASE_OK;
}

size_t model_train_arena_bytes(const model_train *tr) { return tr->bytes; }

void model_train_set_adapter(model_train *tr, int on) {
    const model_lora *a = on ? tr->lora_planned : NULL;
    for (int i = 0; i < tr->nacts; i++) tr->acts[i].lora = a;
    tr->adapter_off = !on && tr->lora_planned;
    tr->have_fwd = 0; /* the next backward needs a forward in this state */
}

void model_train_free(model_train *tr) {
    if (!tr) return;
    tr->m->ops->free(tr->mem);
    free(tr->host_i32);
    free(tr->host_f32);
    free(tr->host_off);
    free(tr->host_aux);
    ep_host_free(&tr->eh);
    train_shell_free(tr);
}

/* Validate packed sequences against the model and limits; fill host
 * positions and targets. */
base_status model_check_batch(const model *m, int nseq, const int32_t *ids, const int32_t *cu,
                              const int32_t *targets, int64_t max_tokens, int max_seqs, int32_t *pos,
                              int32_t *tgt) {
    const model_config *c = &m->cfg;
    if (nseq < 1 || nseq > max_seqs)
        return base_err_set(BASE_ERR_LIMIT, "batch: %d sequences (limit %d)", nseq, max_seqs);
    if (cu[0] != 0) return base_err_set(BASE_ERR_INVALID, "batch: cu_seqlens[0] is %d, not 0", cu[0]);
    for (int s = 0; s < nseq; s++) {
        int64_t len = (int64_t)cu[s + 1] - cu[s];
        if (len < 0) return base_err_set(BASE_ERR_INVALID, "batch: cu_seqlens decreases at sequence %d", s);
        if (len > m->rope_len)
            return base_err_set(BASE_ERR_LIMIT, "batch: sequence %d has %lld tokens, more than the %lld positions of the model",
                                s, (long long)len, (long long)m->rope_len);
    }
    int64_t n = cu[nseq];
    if (n < 1 || n > max_tokens)
        return base_err_set(BASE_ERR_LIMIT, "batch: %lld tokens (limit %lld)", (long long)n, (long long)max_tokens);
    for (int64_t t = 0; t < n; t++)
        if (ids[t] < 0 || ids[t] >= c->vocab_size)
            return base_err_set(BASE_ERR_INVALID, "batch: token %lld has id %d outside the vocabulary [0, %lld)",
                                (long long)t, ids[t], (long long)c->vocab_size);
    for (int s = 0; s < nseq; s++)
        for (int64_t t = cu[s]; t < cu[s + 1]; t++) {
            if (pos) pos[t] = (int32_t)(t - cu[s]);
            if (!tgt) continue;
            if (targets) {
                if (targets[t] < -1 || targets[t] >= c->vocab_size)
                    return base_err_set(BASE_ERR_INVALID, "batch: target %lld is %d, outside [-1, %lld)", (long long)t,
                                        targets[t], (long long)c->vocab_size);
                tgt[t] = targets[t];
            } else {
                tgt[t] = t + 1 < cu[s + 1] ? ids[t + 1] : -1;
            }
        }
    return BASE_OK;
}

base_status model_forward(model_train *tr, const model_batch *b) {
    model *m = tr->m;
    const struct ops *o = m->ops;
    const model_config *c = &m->cfg;
    tr->have_fwd = tr->have_join = 0;
    int32_t *hpos = tr->host_i32, *htgt = tr->host_i32 + tr->lim.max_tokens;
    base_status st = model_check_batch(m, b->nseq, b->ids, b->cu_seqlens, b->targets, tr->lim.max_tokens,
                                       tr->lim.max_seqs, hpos, htgt);
    if (st) return st;
    int64_t n = b->cu_seqlens[b->nseq];
    tr->n = n;
    tr->nseq = b->nseq;
    tr->scale = b->logit_scale > 0 ? b->logit_scale : 1.0f;
    o->upload(tr->ids.data, b->ids, (size_t)n * sizeof(int32_t));
    o->upload(tr->pos.data, hpos, (size_t)n * sizeof(int32_t));
    o->upload(tr->tgt.data, htgt, (size_t)n * sizeof(int32_t));
    o->upload(tr->cu.data, b->cu_seqlens, (size_t)(b->nseq + 1) * sizeof(int32_t));
    tensor ids = mv_rows(&tr->ids, n), pos = mv_rows(&tr->pos, n), cu = mv_rows(&tr->cu, b->nseq + 1);
    tensor h0 = mv_rows(&tr->h[0], n);
    model_unit_use(m, 0); /* ZeRO 3: each unit's weights bound before use */
    o->embedding_fwd(&h0, &m->w.embed, &ids);
    fwd_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.n = n;
    ctx.pos = &pos;
    ctx.cu = &cu;
    int L = c->num_hidden_layers;
    tr->eh.err = BASE_OK;
    for (int l = 0; l < L; l++) {
        tensor hi = mv_rows(&tr->h[l], n), ho = mv_rows(&tr->h[l + 1], n);
        layer_acts *A = &tr->acts[tr->nacts == 1 ? 0 : l];
        model_unit_use(m, 1 + l);
        layer_fwd(m, l, A, &hi, &ho, &ctx);
        if (!m->w.layers[l].moe) continue;
        /* the layer's expert plan, kept for model_train_expert_load */
        o->copy((int32_t *)tr->moe_off.data + (int64_t)l * (c->n_routed_experts + 1), A->offsets.data,
                (size_t)(c->n_routed_experts + 1) * sizeof(int32_t));
        if (tr->aux_coef != 0.0f) { /* the balance loss per sequence (model_train_aux_loss) */
            tensor row = mv_slice(&tr->aux, (int64_t)l * tr->lim.max_seqs, b->nseq);
            tensor z = mv_rows(&A->z, n), idx = mv_rows(&A->idx, n);
            o->moe_aux_fwd(&row, &z, &idx, &cu);
        }
    }
    if (tr->eh.err) return base_err_set(tr->eh.err, "forward: %s", tr->eh.msg);
    tensor hl = mv_rows(&tr->h[L], n), hf = mv_rows(&tr->hf, n), rf = mv_rows(&tr->rstd_f, n);
    model_unit_use(m, L + 1);
    if (c->tie_word_embeddings) model_unit_use(m, 0);
    o->rmsnorm_fwd(&hf, &rf, &hl, &m->w.final_norm, c->rms_norm_eps);
    tensor logp = mv_rows(&tr->logp, n), ent = mv_rows(&tr->ent, n), lse = mv_rows(&tr->lse, n);
    tensor tgt = mv_rows(&tr->tgt, n);
    o->lmhead_fwd(&logp, &ent, &lse, &hf, &m->wc.lm_head, &tgt, tr->scale, &tr->lm_ws);
    tr->out_logp = logp;
    tr->out_ent = ent;
    tr->aux_fwd = tr->aux_coef != 0.0f && tr->aux.data;
    tr->have_fwd = 1;
    return BASE_OK;
}

base_status model_train_join_forward(model_train *tr) {
    model *m = tr->m;
    const model_config *c = &m->cfg;
    int L = c->num_hidden_layers;
    tr->have_fwd = tr->have_join = 0;
    tr->eh.err = BASE_OK;
    /* the units in model_forward's order (ZeRO 3's gathers), each MoE
     * layer's exchanges with zero rows of this rank's own */
    if (tr->host_off) memset(tr->host_off, 0, (size_t)(c->n_routed_experts + 1) * sizeof(int32_t)); /* no rows */
    model_unit_use(m, 0);
    for (int l = 0; l < L; l++) {
        model_unit_use(m, 1 + l);
        if (m->has_ep && m->w.layers[l].moe) ep_join_fwd(m, l, &tr->acts[tr->nacts == 1 ? 0 : l], tr->host_off);
    }
    model_unit_use(m, L + 1);
    if (c->tie_word_embeddings) model_unit_use(m, 0);
    if (tr->eh.err) return base_err_set(tr->eh.err, "forward (zero rows): %s", tr->eh.msg);
    tr->have_join = 1;
    return BASE_OK;
}

const tensor *model_train_logp(const model_train *tr) { return &tr->out_logp; }
const tensor *model_train_entropy(const model_train *tr) { return &tr->out_ent; }

void model_train_download(const model_train *tr, float *logp, float *ent) {
    if (!tr->have_fwd) base_die("model_train_download: no forward");
    const struct ops *o = tr->m->ops;
    if (logp) o->download(logp, tr->logp.data, (size_t)tr->n * sizeof(float));
    if (ent) o->download(ent, tr->ent.data, (size_t)tr->n * sizeof(float));
}

void model_train_set_aux_coef(model_train *tr, float coef) { tr->aux_coef = coef; }

double model_train_aux_loss(const model_train *tr) {
    if (!tr->have_fwd) base_die("model_train_aux_loss: no forward");
    if (!tr->aux_fwd) return 0.0;
    const model *m = tr->m;
    m->ops->download(tr->host_aux, tr->aux.data, (size_t)tensor_numel(&tr->aux) * sizeof(float));
    double sum = 0;
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        if (m->w.layers[l].moe)
            for (int s = 0; s < tr->nseq; s++) sum += tr->host_aux[(int64_t)l * tr->lim.max_seqs + s];
    return sum;
}

void model_train_expert_load(const model_train *tr, int64_t *counts, int64_t *routed, int64_t *processed) {
    if (!tr->have_fwd) base_die("model_train_expert_load: no forward");
    const model *m = tr->m;
    const model_config *c = &m->cfg;
    if (!tr->moe_off.data) return; /* no MoE layer */
    int64_t E = c->n_routed_experts, K = c->num_experts_per_tok;
    m->ops->download(tr->host_off, tr->moe_off.data, (size_t)tensor_numel(&tr->moe_off) * sizeof(int32_t));
    for (int l = 0; l < c->num_hidden_layers; l++) {
        if (!m->w.layers[l].moe) continue;
        const int32_t *off = tr->host_off + (int64_t)l * (E + 1);
        for (int64_t i = 0; i < E; i++) counts[l * E + i] += off[i + 1] - off[i];
        *routed += tr->n * K;
        *processed += off[E] - off[0];
    }
}
