/*
 * The parameter arena: layout (one table of Hugging Face tensors with their
 * offsets), binding of views, loading from safetensors by name, random
 * initialisation, rope tables.
 *
 * Arena order: embed_tokens, layers 0..L-1, MTP layers, model.norm,
 * lm_head. Within a layer the tensors follow spec §2.2-2.5. Two layout
 * choices make the big GEMMs single calls: gate_proj and up_proj of every
 * MLP are adjacent ([gate; up] = one [2I, d] weight), and the routed
 * experts of a layer are [E, 2Ie, d] then [E, d, Ie] (the transformers-v5
 * fused layout, so fused checkpoints load by one copy).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/st.h"
#include "model/internal.h"

typedef struct {
    model *m;
    float *base;
    model_param *tab;
    int n;
    int64_t off;
    int frozen; /* bind views into the frozen arena (frozen_view) instead of base */
    int g;      /* index of the next tensor in the whole model's table (EP skips others' experts) */
    int *gtab;  /* per table entry: g (may be NULL) */
    int64_t wlo, whi; /* whi > 0: a window, elements [wlo, whi) at base, the rest unbound */
} lay;

/* The view of a tensor at element offset `at`: into the f32 arena at base,
 * or the frozen arena; data NULL when only counting. */
static tensor bind(lay *L, int64_t at, int ndim, const int64_t *shape) {
    tensor t;
    memset(&t, 0, sizeof t);
    if (L->frozen) t = frozen_view(L->m, at, ndim, shape);
    else if (L->base && L->whi > 0) {
        if (at >= L->wlo && at < L->whi) t = tensor_make(L->base + (at - L->wlo), TENSOR_F32, L->m->ops->device, ndim, shape);
    } else if (L->base) t = tensor_make(L->base + at, TENSOR_F32, L->m->ops->device, ndim, shape);
    return t;
}

static tensor add(lay *L, int trainable, int mtp, int ndim, int64_t a, int64_t b, int64_t c, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

/* Append one tensor; returns its view (data NULL when only counting). */
static tensor add(lay *L, int trainable, int mtp, int ndim, int64_t a, int64_t b, int64_t c, const char *fmt, ...) {
    int64_t shape[3] = {a, b, c}, numel = 1;
    for (int i = 0; i < ndim; i++) numel *= shape[i];
    if (L->tab) {
        model_param *p = &L->tab[L->n];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->name, sizeof p->name, fmt, ap);
        va_end(ap);
        p->offset = L->off;
        p->numel = numel;
        p->ndim = ndim;
        for (int i = 0; i < 3; i++) p->shape[i] = i < ndim ? shape[i] : 1;
        p->trainable = trainable;
        p->mtp = mtp;
    }
    if (L->gtab) L->gtab[L->n] = L->g;
    L->g++;
    tensor t = bind(L, L->off, ndim, shape);
    L->n++;
    L->off += numel;
    return t;
}

/* A [rows, cols] weight placed at a given arena offset (for the second
 * half of a [gate; up] pair or an expert inside the [E, ...] blocks). */
static void add_at(lay *L, int64_t at, int mtp, int64_t rows, int64_t cols, const char *name) {
    if (L->tab) {
        model_param *p = &L->tab[L->n];
        snprintf(p->name, sizeof p->name, "%s", name);
        p->offset = at;
        p->numel = rows * cols;
        p->ndim = 2;
        p->shape[0] = rows, p->shape[1] = cols, p->shape[2] = 1;
        p->trainable = 1;
        p->mtp = mtp;
    }
    if (L->gtab) L->gtab[L->n] = L->g;
    L->g++;
    L->n++;
}

static tensor view_at(lay *L, int64_t at, int ndim, int64_t a, int64_t b, int64_t c) {
    int64_t shape[3] = {a, b, c};
    return bind(L, at, ndim, shape);
}

/* An MLP's [gate; up] pair and down projection under prefix P. */
static void add_mlp(lay *L, int mtp, const char *P, int64_t inter, tensor *gu, tensor *down) {
    const model_config *c = &L->m->cfg;
    int64_t d = c->hidden_size, at = L->off;
    char nm[128];
    snprintf(nm, sizeof nm, "%s.gate_proj.weight", P);
    add_at(L, at, mtp, inter, d, nm);
    snprintf(nm, sizeof nm, "%s.up_proj.weight", P);
    add_at(L, at + inter * d, mtp, inter, d, nm);
    *gu = view_at(L, at, 2, 2 * inter, d, 1);
    L->off += 2 * inter * d;
    *down = add(L, 1, mtp, 2, d, inter, 1, "%s.down_proj.weight", P);
}

static void add_layer(lay *L, int l, model_layer_w *w) {
    const model_config *c = &L->m->cfg;
    int mtp = l >= c->num_hidden_layers;
    int64_t d = c->hidden_size, H = c->num_attention_heads, dqk = c->qk_head_dim;
    int64_t dc = c->kv_lora_rank, dr = c->qk_rope_head_dim, dn = c->qk_nope_head_dim, dv = c->v_head_dim;
    char P[64];
    snprintf(P, sizeof P, "model.layers.%d", l);
    memset(w, 0, sizeof *w);
    if (mtp) {
        w->enorm = add(L, 1, 1, 1, d, 1, 1, "%s.enorm.weight", P);
        w->hnorm = add(L, 1, 1, 1, d, 1, 1, "%s.hnorm.weight", P);
        w->eh_proj = add(L, 1, 1, 2, d, 2 * d, 1, "%s.eh_proj.weight", P);
    }
    w->in_norm = add(L, 1, mtp, 1, d, 1, 1, "%s.input_layernorm.weight", P);
    if (c->q_lora_rank > 0) {
        w->q_a = add(L, 1, mtp, 2, c->q_lora_rank, d, 1, "%s.self_attn.q_a_proj.weight", P);
        w->q_a_norm = add(L, 1, mtp, 1, c->q_lora_rank, 1, 1, "%s.self_attn.q_a_layernorm.weight", P);
        w->q_b = add(L, 1, mtp, 2, H * dqk, c->q_lora_rank, 1, "%s.self_attn.q_b_proj.weight", P);
    } else {
        w->q = add(L, 1, mtp, 2, H * dqk, d, 1, "%s.self_attn.q_proj.weight", P);
    }
    w->kv_a = add(L, 1, mtp, 2, dc + dr, d, 1, "%s.self_attn.kv_a_proj_with_mqa.weight", P);
    w->kv_a_norm = add(L, 1, mtp, 1, dc, 1, 1, "%s.self_attn.kv_a_layernorm.weight", P);
    w->kv_b = add(L, 1, mtp, 2, H * (dn + dv), dc, 1, "%s.self_attn.kv_b_proj.weight", P);
    w->o = add(L, 1, mtp, 2, d, H * dv, 1, "%s.self_attn.o_proj.weight", P);
    w->post_norm = add(L, 1, mtp, 1, d, 1, 1, "%s.post_attention_layernorm.weight", P);
    w->moe = model_layer_is_moe(c, l);
    char Q[96];
    if (!w->moe) {
        snprintf(Q, sizeof Q, "%s.mlp", P);
        add_mlp(L, mtp, Q, c->intermediate_size, &w->gu, &w->down);
    } else {
        int64_t E = c->n_routed_experts, ie = c->moe_intermediate_size;
        int64_t e0 = L->m->e0, el = L->m->el; /* the experts this rank holds */
        w->router = add(L, 1, mtp, 2, E, d, 1, "%s.mlp.gate.weight", P);
        w->bias = add(L, 0, mtp, 1, E, 1, 1, "%s.mlp.gate.e_score_correction_bias", P);
        int64_t at = L->off;
        char nm[128];
        for (int64_t e = 0; e < E; e++) {
            if (e < e0 || e >= e0 + el) {
                L->g += 2;
                continue;
            }
            snprintf(nm, sizeof nm, "%s.mlp.experts.%lld.gate_proj.weight", P, (long long)e);
            add_at(L, at + (e - e0) * 2 * ie * d, mtp, ie, d, nm);
            snprintf(nm, sizeof nm, "%s.mlp.experts.%lld.up_proj.weight", P, (long long)e);
            add_at(L, at + (e - e0) * 2 * ie * d + ie * d, mtp, ie, d, nm);
        }
        w->e_gu = view_at(L, at, 3, el, 2 * ie, d);
        L->off += el * 2 * ie * d;
        at = L->off;
        for (int64_t e = 0; e < E; e++) {
            if (e < e0 || e >= e0 + el) {
                L->g++;
                continue;
            }
            snprintf(nm, sizeof nm, "%s.mlp.experts.%lld.down_proj.weight", P, (long long)e);
            add_at(L, at + (e - e0) * d * ie, mtp, d, ie, nm);
        }
        w->e_down = view_at(L, at, 3, el, d, ie);
        L->off += el * d * ie;
        if (c->n_shared_experts > 0) {
            snprintf(Q, sizeof Q, "%s.mlp.shared_experts", P);
            add_mlp(L, mtp, Q, (int64_t)c->n_shared_experts * ie, &w->s_gu, &w->s_down);
        }
    }
    if (mtp) {
        w->head_norm = add(L, 1, 1, 1, d, 1, 1, "%s.shared_head.norm.weight", P);
        if (L->m->mtp_copies) {
            w->embed_copy = add(L, 1, 1, 2, c->vocab_size, d, 1, "%s.embed_tokens.weight", P);
            w->head_copy = add(L, 1, 1, 2, c->vocab_size, d, 1, "%s.shared_head.head.weight", P);
        }
    }
}

static int64_t layout_w(model *m, float *base, model_weights *w, model_param *tab, int *ntab, int frozen,
                        int64_t wlo, int64_t whi) {
    const model_config *c = &m->cfg;
    lay L = {m, base, tab, 0, 0, frozen, 0, tab ? m->gidx : NULL, wlo, whi};
    int nl = c->num_hidden_layers + m->n_mtp;
    model_weights tmp;
    if (!w) w = &tmp;
    memset(w, 0, sizeof *w);
    w->layers = base_xcalloc((size_t)nl, sizeof(model_layer_w));
    w->embed = add(&L, 1, 0, 2, c->vocab_size, c->hidden_size, 1, "model.embed_tokens.weight");
    for (int l = 0; l < nl; l++) add_layer(&L, l, &w->layers[l]);
    w->final_norm = add(&L, 1, 0, 1, c->hidden_size, 1, 1, "model.norm.weight");
    if (c->tie_word_embeddings) w->lm_head = w->embed;
    else w->lm_head = add(&L, 1, 0, 2, c->vocab_size, c->hidden_size, 1, "lm_head.weight");
    if (ntab) *ntab = L.n;
    if (w == &tmp) model_weights_free(&tmp);
    return L.off;
}

static int64_t layout(model *m, float *base, model_weights *w, model_param *tab, int *ntab, int frozen) {
    return layout_w(m, base, w, tab, ntab, frozen, 0, 0);
}

int64_t model_layout(model *m, float *base, model_weights *w, model_param *tab, int *ntab) {
    return layout(m, base, w, tab, ntab, 0);
}

void model_layout_window(model *m, float *base, int64_t lo, int64_t hi, model_weights *w) {
    layout_w(m, base, w, NULL, NULL, 0, lo, hi > lo ? hi : lo + 1);
}

void model_layout_frozen(model *m, model_weights *w) { layout(m, NULL, w, NULL, NULL, 1); }

void model_weights_free(model_weights *w) {
    free(w->layers);
    w->layers = NULL;
}

/* ---- construction --------------------------------------------------------- */

/* The storage a precision asks for: frozen bf16/fp8 models hold one
 * compute arena (frozen.c), every other model the f32 parameter arena. */
static int frozen_arena(model_precision p, int frozen) { return frozen && p != MODEL_F32; }

/* The parameter table of cfg (n_mtp MTP layers, with embedding / head
 * copies or not) and, for a frozen bf16/fp8 model, its storage plan:
 * everything the sizes depend on, nothing allocated. */
static model *model_shell(const model_config *cfg, const struct ops *ops, int n_mtp, int copies,
                          model_precision prec, int frozen, const model_ep *ep) {
    model *m = base_xcalloc(1, sizeof *m);
    m->cfg = *cfg;
    m->ops = ops;
    m->ep.size = 1;
    if (ep && ep->size > 1) {
        m->ep = *ep;
        m->has_ep = 1;
    }
    model_ep_local_experts(cfg, m->ep.size, m->ep.rank, &m->e0, &m->el);
    m->el -= m->e0;
    m->n_mtp = n_mtp;
    m->mtp_copies = copies;
    m->prec = prec;
    m->frozen = frozen;
    m->wdt = prec == MODEL_FP8 ? TENSOR_F8_E4M3 : prec == MODEL_BF16 && frozen ? TENSOR_BF16 : TENSOR_F32;
    int n = 0;
    m->numel = model_layout(m, NULL, NULL, NULL, &n);
    m->tab = base_xcalloc((size_t)n, sizeof(model_param));
    m->gidx = base_xcalloc((size_t)n, sizeof(int));
    model_layout(m, NULL, NULL, m->tab, &m->ntab);
    if (frozen_arena(prec, frozen)) frozen_plan_build(m, m->wdt);
    return m;
}

/* Bytes per role of a shell (model_memory_plan) or a model being built:
 * the sizes model_alloc / finish allocate. */
static void sizes(const model *m, tensor_device dev, int64_t rope_len, model_mem *mm) {
    memset(mm, 0, sizeof *mm);
    mm->params = m->numel;
    if (frozen_arena(m->prec, m->frozen)) {
        mm->compute = m->fz.bytes;
        mm->scales = (size_t)m->fz.nscale * sizeof(float);
    } else {
        mm->master = (size_t)m->numel * sizeof(float);
        /* bf16 mode's copy (a trainable model on a device backend) */
        if (m->prec == MODEL_BF16 && dev != TENSOR_CPU) mm->compute = (size_t)m->numel * sizeof(uint16_t);
        model_grad_windows(m, &mm->grad_window, &mm->grad_window_emb, &mm->grad_units);
    }
    mm->rope = 2 * (size_t)rope_len * (size_t)(m->cfg.qk_rope_head_dim / 2) * sizeof(float) + 1;
}

static model *model_alloc(const model_config *cfg, const struct ops *ops, int n_mtp, int copies, model_precision prec,
                          int frozen, const model_ep *ep, int no_arena) {
    model *m = model_shell(cfg, ops, n_mtp, copies, prec, frozen, ep);
    model_mem mm;
    sizes(m, ops->device, 0, &mm);
    if (frozen_arena(prec, frozen)) {
        m->cmem = ops->alloc(mm.compute);
        if (mm.scales) m->scales = ops->alloc(mm.scales);
        m->qbcap = m->fz.ngemm;
        m->qbs = base_xcalloc((size_t)(m->qbcap > 0 ? m->qbcap : 1), sizeof(tensor_qblock));
        model_layout_frozen(m, &m->w);
    } else if (no_arena) { /* ZeRO 3's sharded load: released from the start */
        model_layout(m, NULL, &m->w, NULL, NULL);
        model_shard_unbound(m);
    } else {
        m->params = ops->alloc(mm.master);
        model_layout(m, m->params, &m->w, NULL, NULL);
    }
    m->alloc = mm;
    m->alloc.compute = frozen_arena(prec, frozen) ? mm.compute : 0; /* bf16 mode's copy: setup_precision */
    m->alloc.rope = 0;                                              /* model_rope_tables */
    return m;
}

/* The rope tables' bytes (model_rope_tables): cos and sin [len, dr/2] f32, + 1. */
static size_t rope_bytes(const model_config *c, int64_t len) {
    return 2 * (size_t)len * (size_t)(c->qk_rope_head_dim / 2) * sizeof(float) + 1;
}

void model_rope_tables(model *m, int64_t len) {
    const model_config *c = &m->cfg;
    int half = c->qk_rope_head_dim / 2;
    float inv[half];
    model_rope_inv_freq(c, inv);
    size_t n = (size_t)len * (size_t)half;
    float *host = base_xmalloc(rope_bytes(c, len));
    for (int64_t p = 0; p < len; p++)
        for (int i = 0; i < half; i++) {
            /* HF: angle = float(position) * inv_freq in f32, then cos/sin
             * times the attention factor */
            float ang = (float)p * inv[i];
            host[p * half + i] = (float)(cos((double)ang) * c->attention_factor);
            host[n + p * half + i] = (float)(sin((double)ang) * c->attention_factor);
        }
    m->rope_len = len;
    m->alloc.rope = 2 * n * sizeof(float) + 1;
    m->rope_mem = m->ops->alloc(m->alloc.rope);
    m->ops->upload(m->rope_mem, host, 2 * n * sizeof(float));
    free(host);
    m->rope_cos = mv_2d(m, m->rope_mem, TENSOR_F32, len, half);
    m->rope_sin = mv_2d(m, m->rope_mem + n, TENSOR_F32, len, half);
}

/* ---- precision ------------------------------------------------------------- */

base_status model_precision_parse(const char *s, model_precision *out) {
    if (!s || !strcmp(s, "f32")) *out = MODEL_F32;
    else if (!strcmp(s, "bf16")) *out = MODEL_BF16;
    else if (!strcmp(s, "fp8")) *out = MODEL_FP8;
    else return base_err_set(BASE_ERR_INVALID, "precision '%s': expected f32, bf16 or fp8", s);
    return BASE_OK;
}

const char *model_precision_name(model_precision p) {
    return p == MODEL_BF16 ? "bf16" : p == MODEL_FP8 ? "fp8" : "f32";
}

/* Point a GEMM weight view at its bf16 copy (same element offset). */
static void to_compute(const model *m, tensor *t) {
    if (!t->data) return;
    int64_t off = (float *)t->data - m->params;
    t->data = m->params_c + off;
    t->dtype = TENSOR_BF16;
}

/* The precision asked for is one this backend runs for this model (checked
 * before any weight is read). */
static base_status check_precision(const struct ops *ops, const model_load_opts *opts) {
    model_precision p = opts ? opts->precision : MODEL_F32;
    int frozen = opts && opts->frozen;
    if (p != MODEL_F32 && p != MODEL_BF16 && p != MODEL_FP8)
        return base_err_set(BASE_ERR_INVALID, "precision %d: expected f32, bf16 or fp8", (int)p);
    if (p == MODEL_FP8 && !frozen)
        return base_err_set(BASE_ERR_UNSUPPORTED,
                            "precision fp8: for frozen models only (generate, eval, sample, forward); a "
                            "trained model keeps f32 master weights: use bf16 or f32");
    if (opts && opts->no_arena && frozen)
        return base_err_set(BASE_ERR_UNSUPPORTED, "a model loaded without its arena (ZeRO 3's sharded load) is a "
                            "trainable model");
    if (p == MODEL_BF16 && ops->device == TENSOR_CPU && !frozen)
        return base_err_set(BASE_ERR_UNSUPPORTED,
                            "precision bf16: the %s backend is the f32 reference and trains in f32 only (bf16 "
                            "there is for frozen models: generate, eval, sample, forward); bf16 training needs "
                            "--device cuda (or --precision f32)",
                            ops->name);
    return BASE_OK;
}

/* Build m->wc (and the bf16 arena in bf16 mode; check_precision passed). */
static base_status setup_precision(model *m, const model_load_opts *opts) {
    model_precision p = opts ? opts->precision : MODEL_F32;
    int nl = m->cfg.num_hidden_layers + m->n_mtp;
    /* activations: bf16 GEMM inputs and cache on a device backend in bf16
     * and fp8; the CPU keeps f32 (stored weights widened in the GEMM) */
    m->cdt = p != MODEL_F32 && m->ops->device != TENSOR_CPU ? TENSOR_BF16 : TENSOR_F32;
    (void)nl;
    if (m->released) return BASE_OK; /* no arena: model_unit_bind makes the compute views */
    model_build_compute_views(m);
    if (m->params_c) model_sync_compute(m);
    return BASE_OK;
}

void model_build_compute_views(model *m) {
    int nl = m->cfg.num_hidden_layers + m->n_mtp;
    m->wc = m->w;
    m->wc.layers = base_xmalloc((size_t)nl * sizeof(model_layer_w));
    memcpy(m->wc.layers, m->w.layers, (size_t)nl * sizeof(model_layer_w));
    if (m->cmem || m->prec == MODEL_F32) return; /* frozen: w is the compute weights */
    m->alloc.compute = (size_t)m->numel * sizeof(uint16_t);
    m->params_c = m->ops->alloc(m->alloc.compute);
    for (int l = 0; l < nl; l++) {
        model_layer_w *w = &m->wc.layers[l];
        tensor *g[] = {&w->q_a, &w->q_b, &w->q, &w->kv_a, &w->kv_b, &w->o, &w->gu, &w->down,
                       &w->e_gu, &w->e_down, &w->s_gu, &w->s_down, &w->eh_proj};
        for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) to_compute(m, g[i]);
    }
    to_compute(m, &m->wc.lm_head);
}

void model_sync_compute(model *m) {
    if (m->lora) model_lora_sync(m->lora); /* the adapter's bf16 copy too */
    if (!m->params_c) return; /* f32 mode, or a frozen model: no master copy */
    tensor src = tensor_1d(m->params, TENSOR_F32, m->numel), dst = tensor_1d(m->params_c, TENSOR_BF16, m->numel);
    src.device = dst.device = m->ops->device;
    m->ops->convert(&dst, &src);
}

model_precision model_get_precision(const model *m) { return m->prec; }
size_t model_compute_bytes(const model *m) { return m->alloc.compute; }
int model_is_frozen(const model *m) { return m->frozen; }
void model_memory(const model *m, model_mem *out) { *out = m->alloc; }
size_t model_mem_total(const model_mem *mm) { return mm->master + mm->compute + mm->scales + mm->rope; }

base_status model_memory_plan(const model_config *cfg, const model_load_opts *opts, tensor_device dev, model_mem *out) {
    memset(out, 0, sizeof *out);
    const struct ops *shell_ops = ops_cpu(); /* sizes only: device named by dev */
    struct ops o = *shell_ops;
    o.device = dev;
    base_status st = check_precision(&o, opts);
    if (st) return st;
    int frozen = opts && opts->frozen, mtp = frozen || (opts && opts->skip_mtp) ? 0 : cfg->num_nextn_predict_layers;
    if (opts && opts->ep && (st = model_ep_check(cfg, opts->ep))) return st;
    model *m = model_shell(cfg, shell_ops, mtp, mtp > 0, opts ? opts->precision : MODEL_F32, frozen,
                           opts ? opts->ep : NULL);
    int64_t len = opts && opts->max_context > 0 ? opts->max_context : cfg->max_position_embeddings;
    sizes(m, dev, len, out);
    frozen_plan_free(&m->fz);
    free(m->tab);
    free(m->gidx);
    free(m);
    return BASE_OK;
}

static base_status finish(model *m, const model_load_opts *opts) {
    int64_t len = opts && opts->max_context > 0 ? opts->max_context : m->cfg.max_position_embeddings;
    model_rope_tables(m, len);
    return setup_precision(m, opts);
}

void model_free(model *m) {
    if (!m) return;
    model_lora_free(m->lora); /* an attached adapter goes with its model */
    if (m->params) m->ops->free(m->params);
    if (m->params_c) m->ops->free(m->params_c);
    free(m->ulo), free(m->ubase);
    if (m->cmem) m->ops->free(m->cmem);
    if (m->scales) m->ops->free(m->scales);
    free(m->qbs);
    frozen_plan_free(&m->fz);
    model_weights_free(&m->wc);
    m->ops->free(m->rope_mem);
    model_weights_free(&m->w);
    free(m->tab);
    free(m->gidx);
    free(m);
}

/* ---- loading ---------------------------------------------------------------- */

static const char *shape_str(int ndim, const int64_t *s, char *buf, size_t n) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int i = 0; i < ndim && o < n; i++) o += (size_t)snprintf(buf + o, n - o, i ? ", %lld" : "%lld", (long long)s[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
    return buf;
}

/* Host staging of a load: f32 values of the largest tensor (a device
 * backend, or a frozen arena), and for fp8 storage its e4m3 codes and
 * block scales as the checkpoint has them. */
typedef struct {
    float *f32;
    uint8_t *q;
    float *scale;
} stage_bufs;

/* An FP8 checkpoint weight kept as stored: codes and its `_scale_inv`
 * [ceil(rows/128), ceil(cols/128)] (F32 or BF16 in the file) checked, then
 * stored bit for bit. */
static base_status load_fp8_raw(model *m, const st_dir *d, const st_tensor *t, int pi, const stage_bufs *sb) {
    const model_param *p = &m->tab[pi];
    char sn[160];
    snprintf(sn, sizeof sn, "%s_scale_inv", t->name);
    const st_tensor *sc = st_dir_find(d, sn);
    int64_t br = (p->shape[0] + TENSOR_QBLOCK - 1) / TENSOR_QBLOCK, bc = (p->shape[1] + TENSOR_QBLOCK - 1) / TENSOR_QBLOCK;
    if (!sc)
        return base_err_set(BASE_ERR_INVALID, "%s: tensor '%s': F8_E4M3 weight without its '%s' block scales",
                            st_dir_file_of(d, t), t->name, sn);
    if (sc->ndim != 2 || sc->shape[0] != br || sc->shape[1] != bc ||
        (sc->dtype != TENSOR_F32 && sc->dtype != TENSOR_BF16)) {
        char a[96];
        return base_err_set(BASE_ERR_INVALID, "%s: tensor '%s': scale is %s %s, expected F32 [%lld, %lld] (128x128 blocks)",
                            st_dir_file_of(d, sc), sn, tensor_dtype_name(sc->dtype),
                            shape_str(sc->ndim, sc->shape, a, sizeof a), (long long)br, (long long)bc);
    }
    base_status st = st_dir_load(d, t->name, TENSOR_F8_E4M3, sb->q, p->numel);
    if (!st) st = st_dir_load(d, sn, TENSOR_F32, sb->scale, br * bc);
    if (!st) frozen_store_fp8(m, pi, sb->q, sb->scale);
    return st;
}

/* Load tensor `name` of expected shape into the parameters at `off` (pi:
 * its parameter index when it is one parameter, -1 for a fused tensor). */
static base_status load_one(model *m, const st_dir *d, const char *name, int ndim, const int64_t *shape,
                            int64_t off, int pi, const stage_bufs *sb) {
    const st_tensor *t = st_dir_find(d, name);
    if (!t) return base_err_set(BASE_ERR_INVALID, "checkpoint: missing tensor %s", name);
    int ok = t->ndim == ndim;
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        numel *= shape[i];
        if (ok && t->shape[i] != shape[i]) ok = 0;
    }
    if (!ok) {
        char a[96], b[96];
        return base_err_set(BASE_ERR_INVALID, "%s: tensor %s has shape %s, the config needs %s", st_dir_file_of(d, t),
                            name, shape_str(t->ndim, t->shape, a, sizeof a), shape_str(ndim, shape, b, sizeof b));
    }
    if (m->released) return BASE_OK; /* no arena (ZeRO 3's sharded load): checked, not read */
    if (m->cmem && pi >= 0 && t->dtype == TENSOR_F8_E4M3 && frozen_param_dtype(m, pi) == TENSOR_F8_E4M3)
        return load_fp8_raw(m, d, t, pi, sb); /* FP8 stays FP8 */
    float *dst = m->params && m->ops->device == TENSOR_CPU ? m->params + off : sb->f32;
    base_status st = st_dir_load(d, name, TENSOR_F32, dst, numel);
    if (st) return st;
    if (m->cmem) frozen_store(m, off, dst, numel);
    else if (dst != m->params + off) m->ops->upload(m->params + off, dst, (size_t)numel * sizeof(float));
    return BASE_OK;
}

/* A fused experts tensor [E, a, b]: whole without EP; with EP read whole
 * into the staging buffer and this rank's experts [e0, e0 + el) stored. */
static base_status load_fused(model *m, const st_dir *d, const char *name, const int64_t *shape, int64_t off,
                              const stage_bufs *sb) {
    if (!m->has_ep) return load_one(m, d, name, 3, shape, off, -1, sb);
    const st_tensor *t = st_dir_find(d, name);
    if (!t) return base_err_set(BASE_ERR_INVALID, "checkpoint: missing tensor %s", name);
    if (t->ndim != 3 || t->shape[0] != shape[0] || t->shape[1] != shape[1] || t->shape[2] != shape[2]) {
        char a[96], b[96];
        return base_err_set(BASE_ERR_INVALID, "%s: tensor %s has shape %s, the config needs %s", st_dir_file_of(d, t),
                            name, shape_str(t->ndim, t->shape, a, sizeof a), shape_str(3, shape, b, sizeof b));
    }
    if (m->released) return BASE_OK; /* no arena (ZeRO 3's sharded load): checked, not read */
    int64_t per = shape[1] * shape[2];
    base_status st = st_dir_load(d, name, TENSOR_F32, sb->f32, shape[0] * per);
    if (st) return st;
    const float *src = sb->f32 + (int64_t)m->e0 * per;
    if (m->cmem) frozen_store(m, off, src, m->el * per);
    else m->ops->upload(m->params + off, src, (size_t)(m->el * per) * sizeof(float));
    return BASE_OK;
}

base_status model_load(const char *dir, const struct ops *ops, const model_load_opts *opts, model **out) {
    *out = NULL;
    model_config cfg;
    base_status st = check_precision(ops, opts);
    if (st) return st;
    st = model_config_load(dir, &cfg);
    if (st) return st;
    st_dir *d = NULL;
    if ((st = st_dir_open(dir, &d))) return st;
    /* MTP modules: loaded when the checkpoint has them */
    int n_mtp = 0, copies = 0;
    if (!(opts && (opts->skip_mtp || opts->frozen))) {
        for (int k = 0; k < cfg.num_nextn_predict_layers; k++) {
            char nm[96];
            snprintf(nm, sizeof nm, "model.layers.%d.eh_proj.weight", cfg.num_hidden_layers + k);
            if (!st_dir_find(d, nm)) break;
            n_mtp++;
        }
        if (n_mtp) {
            char nm[96];
            snprintf(nm, sizeof nm, "model.layers.%d.embed_tokens.weight", cfg.num_hidden_layers);
            copies = st_dir_find(d, nm) != NULL;
        }
        if (n_mtp < cfg.num_nextn_predict_layers)
            base_info("%s: %d of %d MTP layers present in the checkpoint; loading %d", dir, n_mtp,
                      cfg.num_nextn_predict_layers, n_mtp);
    }
    model_precision prec = opts ? opts->precision : MODEL_F32;
    if (opts && opts->ep && (st = model_ep_check(&cfg, opts->ep))) {
        st_dir_close(d);
        return st;
    }
    model *m = model_alloc(&cfg, ops, n_mtp, copies, prec, opts && opts->frozen, opts ? opts->ep : NULL,
                           opts && opts->no_arena);
    unsigned char *done = base_xcalloc((size_t)m->ntab, 1);
    int64_t maxn = 0;
    for (int i = 0; i < m->ntab; i++)
        if (m->tab[i].numel > maxn) maxn = m->tab[i].numel;
    /* host staging for a device backend: the largest tensor, a fused
     * experts tensor included */
    int64_t fused = (int64_t)cfg.n_routed_experts * 2 * cfg.moe_intermediate_size * cfg.hidden_size;
    if (fused > maxn) maxn = fused;
    stage_bufs sb = {NULL, NULL, NULL};
    if ((ops->device != TENSOR_CPU || m->cmem || m->has_ep) && !m->released) sb.f32 = base_xmalloc((size_t)maxn * sizeof(float));
    if (m->wdt == TENSOR_F8_E4M3 && !m->released) {
        sb.q = base_xmalloc((size_t)maxn);
        sb.scale = base_xmalloc((size_t)(maxn / (TENSOR_QBLOCK * TENSOR_QBLOCK) + 2 * maxn / TENSOR_QBLOCK + 1) *
                                sizeof(float)); /* ceil(r/128) ceil(c/128) <= rc/128^2 + (r+c)/128 + 1 */
    }
    /* fused experts (transformers v5 layout): one tensor per layer */
    int nl = cfg.num_hidden_layers + n_mtp;
    for (int l = 0; l < nl && !st; l++) {
        model_layer_w *w = &m->w.layers[l];
        if (!w->moe) continue;
        char nm[128];
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.experts.0.gate_proj.weight", l);
        if (st_dir_find(d, nm)) continue;
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.experts.gate_up_proj", l);
        if (!st_dir_find(d, nm)) continue; /* reported below as missing per-expert tensors */
        int64_t E = cfg.n_routed_experts, ie = cfg.moe_intermediate_size, dm = cfg.hidden_size;
        int64_t gs[3] = {E, 2 * ie, dm}, ds[3] = {E, dm, ie};
        char e0[128];
        snprintf(e0, sizeof e0, "model.layers.%d.mlp.experts.%d.gate_proj.weight", l, m->e0);
        st = load_fused(m, d, nm, gs, model_param_find(m, e0)->offset, &sb);
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.experts.down_proj", l);
        snprintf(e0, sizeof e0, "model.layers.%d.mlp.experts.%d.down_proj.weight", l, m->e0);
        if (!st) st = load_fused(m, d, nm, ds, model_param_find(m, e0)->offset, &sb);
        char pre[64];
        snprintf(pre, sizeof pre, "model.layers.%d.mlp.experts.", l);
        for (int i = 0; i < m->ntab; i++)
            if (!strncmp(m->tab[i].name, pre, strlen(pre))) done[i] = 1;
        m->fused_experts = 1;
    }
    for (int i = 0; i < m->ntab && !st; i++) {
        const model_param *p = &m->tab[i];
        if (done[i]) continue;
        if (!p->trainable && !st_dir_find(d, p->name)) {
            /* e_score_correction_bias: HF keeps a zero buffer when absent */
            base_warn("%s: no %s; using zeros", dir, p->name);
            continue;
        }
        st = load_one(m, d, p->name, p->ndim, p->shape, p->offset, i, &sb);
    }
    free(sb.f32), free(sb.q), free(sb.scale);
    free(done);
    st_dir_close(d);
    if (st) {
        model_free(m);
        return st;
    }
    if ((st = finish(m, opts))) {
        model_free(m);
        return st;
    }
    *out = m;
    return BASE_OK;
}

base_status model_init_random(const model_config *cfg, const struct ops *ops, uint64_t seed, float std,
                              const model_load_opts *opts, model **out) {
    *out = NULL;
    base_status st0 = check_precision(ops, opts);
    if (st0) return st0;
    if (opts && opts->ep && (st0 = model_ep_check(cfg, opts->ep))) return st0;
    model *m = model_alloc(cfg, ops, 0, 0, opts ? opts->precision : MODEL_F32, opts && opts->frozen,
                           opts ? opts->ep : NULL, opts && opts->no_arena);
    int64_t maxn = 0;
    for (int i = 0; i < m->ntab; i++)
        if (m->tab[i].numel > maxn) maxn = m->tab[i].numel;
    float *host = base_xmalloc((size_t)maxn * sizeof(float));
    for (int i = 0; i < m->ntab && !m->released; i++) { /* no arena: model_init_random_range fills a range */
        const model_param *p = &m->tab[i];
        base_rng r;
        base_rng_init(&r, seed, 0x4d4f44u, (uint32_t)m->gidx[i], 0); /* the whole model's stream */
        int is_norm = p->ndim == 1 && strstr(p->name, "bias") == NULL;
#pragma omp parallel for schedule(static) if (p->numel > 65536)
        for (int64_t k = 0; k < p->numel; k++) {
            float x = std * base_rng_normal(&r, (uint32_t)k);
            host[k] = is_norm ? 1.0f + x : x;
        }
        if (m->cmem) frozen_store(m, p->offset, host, p->numel);
        else ops->upload(m->params + p->offset, host, (size_t)p->numel * sizeof(float));
    }
    free(host);
    base_status st = finish(m, opts);
    if (st) {
        model_free(m);
        *out = NULL;
        return st;
    }
    *out = m;
    return BASE_OK;
}

void model_init_random_range(const model *m, uint64_t seed, float std, int64_t lo, int64_t hi, float *host) {
    if (lo < 0 || hi < lo || hi > m->numel)
        base_die("model_init_random_range: [%lld, %lld) outside the arena of %lld", (long long)lo, (long long)hi,
                 (long long)m->numel);
    memset(host, 0, (size_t)(hi - lo) * sizeof(float));
    for (int i = 0; i < m->ntab; i++) { /* model_init_random's values, element k of parameter i at offset + k */
        const model_param *p = &m->tab[i];
        int64_t a = p->offset > lo ? p->offset : lo, b = p->offset + p->numel < hi ? p->offset + p->numel : hi;
        if (b <= a) continue;
        base_rng r;
        base_rng_init(&r, seed, 0x4d4f44u, (uint32_t)m->gidx[i], 0);
        int is_norm = p->ndim == 1 && strstr(p->name, "bias") == NULL;
        float *dst = host + (a - lo);
#pragma omp parallel for schedule(static) if (b - a > 65536)
        for (int64_t e = a; e < b; e++) {
            float x = std * base_rng_normal(&r, (uint32_t)(e - p->offset));
            dst[e - a] = is_norm ? 1.0f + x : x;
        }
    }
}

/* ---- accessors ------------------------------------------------------------ */

const model_config *model_cfg(const model *m) { return &m->cfg; }
const struct ops *model_ops(const model *m) { return m->ops; }
int model_nparams(const model *m) { return m->ntab; }
const model_param *model_param_at(const model *m, int i) { return i >= 0 && i < m->ntab ? &m->tab[i] : NULL; }
const model_param *model_param_find(const model *m, const char *name) {
    for (int i = 0; i < m->ntab; i++)
        if (!strcmp(m->tab[i].name, name)) return &m->tab[i];
    return NULL;
}
float *model_params(const model *m) { return m->params; }
int64_t model_numel(const model *m) { return m->numel; }
int model_has_mtp(const model *m) { return m->n_mtp > 0; }

float *model_grads_new(const model *m) { return m->ops->alloc((size_t)m->numel * sizeof(float)); }
void model_grads_zero(const model *m, float *grads) { m->ops->zero(grads, (size_t)m->numel * sizeof(float)); }

/* ---- expert parallelism ------------------------------------------------------ */

void model_ep_local_experts(const model_config *cfg, int ep_size, int rank, int *e0, int *e1) {
    int E = cfg->n_routed_experts, n = ep_size > 0 ? ep_size : 1;
    *e0 = (int)((int64_t)rank * E / n);
    *e1 = (int)((int64_t)(rank + 1) * E / n);
}

int model_ep_owner(const model_config *cfg, int ep_size, const char *name) {
    const char *p = strstr(name, "mlp.experts.");
    if (!p || ep_size <= 1) return p && ep_size == 1 ? 0 : -1;
    p += strlen("mlp.experts.");
    if (*p < '0' || *p > '9') return -1; /* the fused gate_up_proj / down_proj: every expert */
    char *end;
    long e = strtol(p, &end, 10);
    if (*end != '.' || e < 0 || e >= cfg->n_routed_experts) return -1;
    return (int)(e / (cfg->n_routed_experts / ep_size));
}

base_status model_ep_check(const model_config *cfg, const model_ep *ep) {
    if (!ep) return BASE_OK;
    if (ep->size < 1)
        return base_err_set(BASE_ERR_INVALID, "expert_parallel_size %d: must be at least 1", ep->size);
    if (ep->size == 1) return BASE_OK;
    int any_moe = 0;
    for (int l = 0; l < cfg->num_hidden_layers; l++) any_moe |= model_layer_is_moe(cfg, l);
    if (!any_moe || cfg->n_routed_experts % ep->size)
        return base_err_set(BASE_ERR_INVALID,
                            "expert_parallel_size %d: must divide n_routed_experts (%d) of a model with MoE layers",
                            ep->size, any_moe ? cfg->n_routed_experts : 0);
    if (ep->rank < 0 || ep->rank >= ep->size)
        return base_err_set(BASE_ERR_INVALID, "expert_parallel_size %d: rank %d outside the group", ep->size,
                            ep->rank);
    if (!ep->alltoall_counts || !ep->alltoallv)
        return base_err_set(BASE_ERR_INVALID, "expert_parallel_size %d: exchange functions not set", ep->size);
    return BASE_OK;
}

const model_ep *model_get_ep(const model *m) { return m->has_ep ? &m->ep : NULL; }

void model_ep_shell(model *m, int ep_size) {
    m->ep.size = ep_size > 1 ? ep_size : 1;
    m->ep.rank = 0;
    m->has_ep = ep_size > 1;
    model_ep_local_experts(&m->cfg, m->ep.size, 0, &m->e0, &m->el);
    m->el -= m->e0;
}
