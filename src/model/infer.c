/*
 * Inference: full-logits forward, the latent KV cache (spec §3.6, §3.12),
 * prefill (training form over packed prompts, writing the cache) and
 * batched one-token decode steps (absorbed form over the cache).
 *
 * Cache layout: a pool of pages [L, pages, page_size, dc + dr] f32 (bf16
 * in bf16 mode: rows rounded once when written, half the bytes), per
 * token the normalised c_kv then the roped k_pe, and a block table
 * [slots, MB] I32 of page ids per slot (ops.h mla_cache_write), kept on the
 * host and uploaded before the next prefill/decode after a change. One
 * workspace serves prefill and decode: one
 * layer's activations for max(max_prefill, max_batch) tokens (the layers
 * run one after the other), two residual buffers, and the logits.
 */
#include <stdlib.h>
#include <string.h>

#include "model/internal.h"

/* Workspace for n tokens over up to s sequences with `lrows` logits rows. */
typedef struct {
    tensor ids, pos, cu, slot, len, last;
    tensor ha, hb; /* residual ping-pong [n, d] */
    layer_acts A;
    tensor q_lat, o_lat; /* decode [n, H, dc] */
    tensor lora_hv;      /* decode with an adapter on kv_b_proj: [n * H * r] */
    tensor hlast, rstd_f, logits;
    tensor hnorm; /* bf16 mode: the final norm's bf16 output [lrows, d] (f32 mode: hlast) */
    tensor logits_view; /* the rows of the last call */
} infer_ws;

static void plan_ws(planner *p, infer_ws *w, int64_t n, int64_t s, int64_t lrows, int decode) {
    const model_config *c = &p->m->cfg;
    int64_t d = c->hidden_size, H = c->num_attention_heads;
    int any_dense = 0, any_moe = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        if (model_layer_is_moe(c, l)) any_moe = 1;
        else any_dense = 1;
    }
    w->ids = plan_t(p, TENSOR_I32, 1, n, 1, 1);
    w->pos = plan_t(p, TENSOR_I32, 1, n, 1, 1);
    w->slot = plan_t(p, TENSOR_I32, 1, n, 1, 1);
    w->len = plan_t(p, TENSOR_I32, 1, n, 1, 1);
    w->cu = plan_t(p, TENSOR_I32, 1, s + 1, 1, 1);
    w->last = plan_t(p, TENSOR_I32, 1, lrows, 1, 1);
    w->ha = plan_t(p, TENSOR_F32, 2, n, d, 1);
    w->hb = plan_t(p, TENSOR_F32, 2, n, d, 1);
    plan_layer_acts(p, &w->A, n, any_dense, any_moe, 0);
    if (decode) {
        w->q_lat = plan_t(p, TENSOR_F32, 3, n, H, c->kv_lora_rank);
        w->o_lat = plan_t(p, TENSOR_F32, 3, n, H, c->kv_lora_rank);
        w->lora_hv.data = NULL;
        if (p->lora && (p->lora->targets & (1u << MODEL_LORA_KV_B_PROJ)))
            w->lora_hv = plan_t(p, TENSOR_F32, 1, n * H * p->lora->r, 1, 1);
    }
    w->hlast = plan_t(p, TENSOR_F32, 2, lrows, d, 1);
    w->hnorm = model_cdt(p->m) == TENSOR_F32 ? w->hlast : plan_t(p, TENSOR_BF16, 2, lrows, d, 1);
    w->rstd_f = plan_t(p, TENSOR_F32, 1, lrows, 1, 1);
    w->logits = plan_t(p, TENSOR_F32, 2, lrows, c->vocab_size, 1);
}

/* Run the layers of the training/prefill form over n tokens from ws->ha;
 * returns the buffer holding the last residual. */
static tensor run_layers(const model *m, infer_ws *w, fwd_ctx *ctx, const tensor *cache_all) {
    int64_t n = ctx->n;
    tensor cur = mv_rows(&w->ha, n), nxt = mv_rows(&w->hb, n);
    for (int l = 0; l < m->cfg.num_hidden_layers; l++) {
        if (cache_all) ctx->cache = mv_index4(cache_all, l);
        model_unit_use(m, 1 + l);
        layer_fwd(m, l, &w->A, &cur, &nxt, ctx);
        tensor t = cur;
        cur = nxt;
        nxt = t;
    }
    return cur;
}

/* Final norm and logits of rows `last` of h into w->logits [k, V]. */
static void head(const model *m, infer_ws *w, const tensor *h, int64_t k, int gather) {
    const struct ops *o = m->ops;
    tensor hl = mv_rows(&w->hlast, k), hn = mv_rows(&w->hnorm, k), rf = mv_rows(&w->rstd_f, k);
    tensor lg = mv_rows(&w->logits, k);
    model_unit_use(m, m->cfg.num_hidden_layers + 1);
    if (m->cfg.tie_word_embeddings) model_unit_use(m, 0);
    if (gather) {
        tensor last = mv_rows(&w->last, k);
        o->gather_rows(&hl, h, &last);
        o->rmsnorm_fwd(&hn, &rf, &hl, &m->w.final_norm, m->cfg.rms_norm_eps);
    } else {
        o->rmsnorm_fwd(&hn, &rf, h, &m->w.final_norm, m->cfg.rms_norm_eps);
    }
    o->matmul(&lg, &hn, &m->wc.lm_head, 0, 1, 1.0f, 0.0f);
}

base_status model_forward_logits(model *m, int nseq, const int32_t *ids, const int32_t *cu, float *logits,
                                 float *token_logp) {
    const struct ops *o = m->ops;
    const model_config *c = &m->cfg;
    if (nseq < 1) return base_err_set(BASE_ERR_INVALID, "forward: no sequences");
    int64_t n = cu[nseq];
    int32_t *hpos = base_xmalloc((size_t)(n > 0 ? n : 1) * 2 * sizeof(int32_t)), *htgt = hpos + (n > 0 ? n : 1);
    base_status st = model_check_batch(m, nseq, ids, cu, NULL, n > 0 ? n : 1, nseq, hpos, htgt);
    if (st) {
        free(hpos);
        return st;
    }
    /* expert parallelism: every rank plans for the group's largest batch
     * (the rows a peer may send are bounded by its token count) */
    int64_t nplan = n;
    ep_host eh;
    memset(&eh, 0, sizeof eh);
    if (m->has_ep) {
        int64_t P = m->ep.size, *nb = base_xmalloc((size_t)(2 * P) * sizeof(int64_t));
        for (int64_t q = 0; q < P; q++) nb[q] = n;
        st = m->ep.alltoall_counts(m->ep.ctx, nb, nb + P, 1);
        for (int64_t q = 0; q < P && !st; q++)
            if (nb[P + q] > nplan) nplan = nb[P + q];
        free(nb);
        if (st) {
            free(hpos);
            return st;
        }
        ep_host_init(&eh, m, nplan);
    }
    infer_ws w;
    planner p = {m, NULL, 0, m->lora ? &m->lora->cfg : NULL};
    plan_ws(&p, &w, nplan, nseq, n, 0);
    /* token logprobs by the chunked head */
    int64_t V = c->vocab_size, rows = n < MODEL_LM_ROWS ? n : MODEL_LM_ROWS, cols = V < MODEL_LM_COLS ? V : MODEL_LM_COLS;
    tensor tgt = plan_t(&p, TENSOR_I32, 1, n, 1, 1), lp = plan_t(&p, TENSOR_F32, 1, n, 1, 1);
    tensor ent = plan_t(&p, TENSOR_F32, 1, n, 1, 1), lse = plan_t(&p, TENSOR_F32, 1, n, 1, 1);
    tensor ws = plan_t(&p, TENSOR_F32, 2, rows, cols, 1);
    size_t bytes = p.off;
    p.base = o->alloc(bytes + 64);
    p.off = 0;
    plan_ws(&p, &w, nplan, nseq, n, 0);
    w.A.eh = &eh;
    tgt = plan_t(&p, TENSOR_I32, 1, n, 1, 1), lp = plan_t(&p, TENSOR_F32, 1, n, 1, 1);
    ent = plan_t(&p, TENSOR_F32, 1, n, 1, 1), lse = plan_t(&p, TENSOR_F32, 1, n, 1, 1);
    ws = plan_t(&p, TENSOR_F32, 2, rows, cols, 1);
    o->upload(w.ids.data, ids, (size_t)n * sizeof(int32_t));
    o->upload(w.pos.data, hpos, (size_t)n * sizeof(int32_t));
    o->upload(w.cu.data, cu, (size_t)(nseq + 1) * sizeof(int32_t));
    o->upload(tgt.data, htgt, (size_t)n * sizeof(int32_t));
    tensor tids = mv_rows(&w.ids, n), tpos = mv_rows(&w.pos, n), tcu = mv_rows(&w.cu, nseq + 1);
    tensor h0 = mv_rows(&w.ha, n);
    model_unit_use(m, 0); /* ZeRO 3: each unit's weights bound before use */
    o->embedding_fwd(&h0, &m->w.embed, &tids);
    fwd_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.n = n;
    ctx.pos = &tpos;
    ctx.cu = &tcu;
    tensor h = run_layers(m, &w, &ctx, NULL);
    if (eh.err) {
        st = base_err_set(eh.err, "forward: %s", eh.msg);
        ep_host_free(&eh);
        o->free(p.base);
        free(hpos);
        return st;
    }
    ep_host_free(&eh);
    head(m, &w, &h, n, 0);
    if (logits) o->download(logits, w.logits.data, (size_t)(n * V) * sizeof(float));
    if (token_logp) {
        tensor hn = mv_rows(&w.hnorm, n);
        o->lmhead_fwd(&lp, &ent, &lse, &hn, &m->wc.lm_head, &tgt, 1.0f, &ws);
        o->download(token_logp, lp.data, (size_t)n * sizeof(float));
    }
    o->free(p.base);
    free(hpos);
    return BASE_OK;
}

/* ---- KV cache ------------------------------------------------------------------- */

struct model_cache {
    model *m;
    model_cache_limits lim; /* page_size and pages resolved */
    int64_t mb;             /* block-table entries per slot */
    void *mem;
    tensor cache; /* [L, pages, page_size, dc+dr], f32 or bf16 (bf16 mode) */
    int32_t *table_dev;
    tensor table;      /* [slots, mb] on the device */
    int32_t *table_h;  /* [slots, mb] host copy; -1: unmapped */
    int table_dirty;   /* host copy changed since the last upload */
    char *ws_mem;
    infer_ws w;
    int32_t *host; /* staging: 4 arrays of ws_tokens, then the last rows */
    /* decode graphs (ops.h graph_capture), one per batch bucket: bucket k
     * runs min(2^k, max_batch) rows, the rows past the step's own reading
     * and writing the padding slot (table row `slots`, page `pages`) */
    void *graph[MODEL_GRAPH_BUCKETS];
    int graph_fail[MODEL_GRAPH_BUCKETS];
    int64_t graph_captures, graph_replays;
    model_cache_mem alloc; /* bytes allocated per role */
    ep_host eh;            /* expert parallelism's host staging */
};

/* Fill in page_size and pages (0 = defaults); errors for bad limits. */
static base_status resolve_limits(const model_cache_limits *in, model_cache_limits *l, int64_t *mb) {
    *l = *in;
    *mb = 0;
    if (l->slots < 1 || l->max_len < 1 || l->max_batch < 1 || l->max_prefill < 1 || l->page_size < 0 || l->pages < 0)
        return base_err_set(BASE_ERR_INVALID, "model_cache: slots, max_len, max_batch and max_prefill must be >= 1, "
                                              "page_size and pages >= 0");
    if (!l->page_size) l->page_size = MODEL_PAGE_SIZE;
    *mb = (l->max_len + l->page_size - 1) / l->page_size;
    if (!l->pages) l->pages = (int64_t)l->slots * *mb;
    if (l->pages > INT32_MAX)
        return base_err_set(BASE_ERR_LIMIT, "model_cache: %lld pages (page ids are int32)", (long long)l->pages);
    return BASE_OK;
}

static int64_t ws_tokens(const model_cache_limits *l) {
    return l->max_prefill > l->max_batch ? l->max_prefill : l->max_batch;
}
static int64_t ws_rows(const model_cache_limits *l) { return l->slots > l->max_batch ? l->slots : l->max_batch; }

/* One page over all layers in the cache's dtype (the model's activation
 * dtype: bf16 on a device backend in bf16 / fp8, else f32). */
static size_t page_bytes_dt(const model_config *cfg, int64_t page_size, tensor_dtype dt) {
    return (size_t)cfg->num_hidden_layers * (size_t)page_size * (size_t)(cfg->kv_lora_rank + cfg->qk_rope_head_dim) *
           tensor_dtype_size(dt);
}

size_t model_cache_page_bytes_p(const model_config *cfg, int64_t page_size, model_precision prec) {
    return page_bytes_dt(cfg, page_size, prec == MODEL_F32 ? TENSOR_F32 : TENSOR_BF16);
}

size_t model_cache_page_bytes(const model_config *cfg, int64_t page_size) {
    return model_cache_page_bytes_p(cfg, page_size, MODEL_F32);
}

/* The cache's allocations: pages, block table, workspace (cdt: the
 * model's activation dtype; lc: the attached adapter's config or NULL). */
static void cache_sizes(const model_config *cfg, const model_cache_limits *l, int64_t mb, tensor_dtype cdt,
                        const model_lora_config *lc, const model *epm, model_cache_mem *out) {
    model shell;
    memset(&shell, 0, sizeof shell);
    shell.cfg = *cfg;
    if (epm) { /* the expert-parallel workspace of a model */
        shell.ep = epm->ep, shell.has_ep = epm->has_ep, shell.e0 = epm->e0, shell.el = epm->el;
    }
    shell.ops = ops_cpu();
    shell.cdt = cdt;
    infer_ws w;
    planner p = {&shell, NULL, 0, lc};
    plan_ws(&p, &w, ws_tokens(l), l->slots, ws_rows(l), 1);
    out->pages = (size_t)(l->pages + 1) * page_bytes_dt(cfg, l->page_size, cdt); /* + the padding page */
    out->table = (size_t)(l->slots + 1) * (size_t)mb * sizeof(int32_t);     /* + the padding slot */
    out->workspace = p.off + 64;
}

size_t model_cache_bytes(const model_config *cfg, const model_cache_limits *lim) {
    model_cache_mem mm;
    return model_cache_plan(cfg, lim, MODEL_F32, TENSOR_CPU, &mm) ? 0 : mm.pages + mm.table + mm.workspace - 64;
}

base_status model_cache_plan(const model_config *cfg, const model_cache_limits *lim, model_precision prec,
                             tensor_device dev, model_cache_mem *out) {
    memset(out, 0, sizeof *out);
    model_cache_limits l;
    int64_t mb = 0;
    base_status st = resolve_limits(lim, &l, &mb);
    if (st) return st;
    cache_sizes(cfg, &l, mb, prec != MODEL_F32 && dev != TENSOR_CPU ? TENSOR_BF16 : TENSOR_F32, NULL, NULL, out);
    return BASE_OK;
}

size_t model_cache_bytes_p(const model_config *cfg, const model_cache_limits *lim, const model_lora_config *lc,
                           model_precision prec) {
    return model_cache_bytes_ep(cfg, lim, lc, prec, 1);
}

size_t model_cache_bytes_ep(const model_config *cfg, const model_cache_limits *lim, const model_lora_config *lc,
                            model_precision prec, int ep_size) {
    model_cache_limits l;
    int64_t mb = 0;
    if (resolve_limits(lim, &l, &mb)) return 0;
    model_cache_mem mm;
    model epm;
    memset(&epm, 0, sizeof epm);
    epm.cfg = *cfg;
    model_ep_shell(&epm, ep_size);
    cache_sizes(cfg, &l, mb, prec == MODEL_BF16 ? TENSOR_BF16 : TENSOR_F32, lc, &epm, &mm);
    return mm.pages + mm.table + mm.workspace;
}

void model_cache_memory(const model_cache *mc, model_cache_mem *out) { *out = mc->alloc; }

base_status model_cache_new(model *m, const model_cache_limits *lim, model_cache **out) {
    *out = NULL;
    model_cache_limits l;
    int64_t mb = 0;
    base_status st = resolve_limits(lim, &l, &mb);
    if (st) return st;
    const model_config *c = &m->cfg;
    model_cache *mc = base_xcalloc(1, sizeof *mc);
    mc->m = m;
    mc->lim = l;
    mc->mb = mb;
    int64_t dl = c->kv_lora_rank + c->qk_rope_head_dim;
    /* one page and one block-table row more than asked: the padding slot
     * of bucketed decode graphs (never mapped by callers) */
    cache_sizes(c, &l, mb, model_cdt(m), m->lora ? &m->lora->cfg : NULL, m, &mc->alloc);
    mc->mem = m->ops->alloc(mc->alloc.pages);
    int64_t shape[4] = {c->num_hidden_layers, l.pages + 1, l.page_size, dl};
    mc->cache = tensor_make(mc->mem, model_cdt(m), m->ops->device, 4, shape);
    size_t tn = (size_t)(l.slots + 1) * (size_t)mb;
    mc->table_dev = m->ops->alloc(mc->alloc.table);
    mc->table = tensor_make(mc->table_dev, TENSOR_I32, m->ops->device, 2, (int64_t[]){l.slots + 1, mb});
    mc->table_h = base_xmalloc(tn * sizeof(int32_t));
    int identity = !lim->pages; /* the default pool: slot s owns pages s*mb .. */
    for (size_t i = 0; i < tn; i++) mc->table_h[i] = identity ? (int32_t)i : -1;
    mc->table_h[(size_t)l.slots * (size_t)mb] = (int32_t)l.pages; /* the padding slot's position 0 */
    mc->table_dirty = 1;
    planner p = {m, NULL, 0, m->lora ? &m->lora->cfg : NULL};
    int64_t n = ws_tokens(&l);
    plan_ws(&p, &mc->w, n, l.slots, ws_rows(&l), 1);
    if (p.off + 64 != mc->alloc.workspace) base_die("model_cache_new: workspace %zu, planned %zu", p.off + 64, mc->alloc.workspace);
    mc->ws_mem = m->ops->alloc(mc->alloc.workspace);
    p.base = mc->ws_mem;
    p.off = 0;
    plan_ws(&p, &mc->w, n, l.slots, ws_rows(&l), 1);
    mc->host = base_xmalloc((size_t)(4 * n + ws_rows(&l)) * sizeof(int32_t));
    ep_host_init(&mc->eh, m, n);
    mc->w.A.eh = &mc->eh;
    *out = mc;
    return BASE_OK;
}

void model_cache_free(model_cache *mc) {
    if (!mc) return;
    for (int k = 0; k < MODEL_GRAPH_BUCKETS; k++)
        if (mc->graph[k]) mc->m->ops->graph_free(mc->graph[k]);
    mc->m->ops->free(mc->mem);
    mc->m->ops->free(mc->table_dev);
    mc->m->ops->free(mc->ws_mem);
    free(mc->table_h);
    free(mc->host);
    ep_host_free(&mc->eh);
    free(mc);
}

void model_cache_geometry(const model_cache *mc, int64_t *page_size, int64_t *pages, int64_t *pages_per_slot) {
    if (page_size) *page_size = mc->lim.page_size;
    if (pages) *pages = mc->lim.pages;
    if (pages_per_slot) *pages_per_slot = mc->mb;
}

base_status model_cache_map(model_cache *mc, int slot, const int32_t *pages, int64_t n) {
    if (slot < 0 || slot >= mc->lim.slots)
        return base_err_set(BASE_ERR_INVALID, "model_cache_map: slot %d outside [0, %d)", slot, mc->lim.slots);
    if (n < 0 || n > mc->mb)
        return base_err_set(BASE_ERR_INVALID, "model_cache_map: %lld pages for slot %d (at most %lld)", (long long)n,
                            slot, (long long)mc->mb);
    for (int64_t k = 0; k < n; k++)
        if (pages[k] < 0 || pages[k] >= mc->lim.pages)
            return base_err_set(BASE_ERR_INVALID, "model_cache_map: page %d (entry %lld of slot %d) outside [0, %lld)",
                                pages[k], (long long)k, slot, (long long)mc->lim.pages);
    int32_t *row = mc->table_h + (size_t)slot * (size_t)mc->mb;
    for (int64_t k = 0; k < mc->mb; k++) {
        int32_t v = k < n ? pages[k] : -1;
        if (row[k] != v) row[k] = v, mc->table_dirty = 1;
    }
    return BASE_OK;
}

/* The page holding position pos of slot, or -1 when unmapped. */
static int32_t page_of(const model_cache *mc, int slot, int64_t pos) {
    return mc->table_h[(size_t)slot * (size_t)mc->mb + (size_t)(pos / mc->lim.page_size)];
}

/* Error unless positions [0, n) of slot are mapped. */
static base_status check_mapped(const model_cache *mc, const char *op, int slot, int64_t n) {
    for (int64_t p = 0; p < n; p += mc->lim.page_size)
        if (page_of(mc, slot, p) < 0)
            return base_err_set(BASE_ERR_INVALID, "%s: position %lld of slot %d has no page (model_cache_map)", op,
                                (long long)p, slot);
    return BASE_OK;
}

static void upload_table(model_cache *mc) {
    if (!mc->table_dirty) return;
    mc->m->ops->upload(mc->table_dev, mc->table_h, (size_t)(mc->lim.slots + 1) * (size_t)mc->mb * sizeof(int32_t));
    mc->table_dirty = 0;
}

void model_cache_copy(model_cache *mc, int dst, int src, int64_t len) {
    const tensor *t = &mc->cache;
    int64_t ps = mc->lim.page_size;
    if (dst < 0 || src < 0 || dst >= mc->lim.slots || src >= mc->lim.slots || len < 0 || len > mc->mb * ps)
        base_die("model_cache_copy: slot %d <- %d, %lld positions outside the cache", dst, src, (long long)len);
    if (dst == src) return;
    for (int64_t p0 = 0; p0 < len; p0 += ps) {
        int32_t pd = page_of(mc, dst, p0), pgs = page_of(mc, src, p0);
        if (pd < 0 || pgs < 0)
            base_die("model_cache_copy: position %lld of slot %d or %d has no page", (long long)p0, dst, src);
        if (pd == pgs) continue; /* shared */
        int64_t rows = len - p0 < ps ? len - p0 : ps;
        size_t es = tensor_dtype_size(t->dtype);
        for (int64_t l = 0; l < t->shape[0]; l++) {
            char *base = (char *)t->data + l * t->stride[0] * (int64_t)es;
            mc->m->ops->copy(base + pd * t->stride[1] * (int64_t)es, base + pgs * t->stride[1] * (int64_t)es,
                             (size_t)(rows * t->shape[3]) * es);
        }
    }
}

base_status model_prefill(model_cache *mc, int nseq, const int32_t *slots, const int32_t *ids, const int32_t *cu,
                          const tensor **logits) {
    model *m = mc->m;
    const struct ops *o = m->ops;
    int64_t cap = ws_tokens(&mc->lim);
    *logits = NULL;
    if (nseq < 1 || nseq > mc->lim.slots)
        return base_err_set(BASE_ERR_LIMIT, "prefill: %d prompts (limit %d)", nseq, mc->lim.slots);
    int32_t *hpos = mc->host, *hslot = hpos + cap, *hlast = hslot + 2 * cap;
    base_status st = model_check_batch(m, nseq, ids, cu, NULL, mc->lim.max_prefill, mc->lim.slots, hpos, NULL);
    if (st) return st;
    for (int s = 0; s < nseq; s++) {
        int64_t len = (int64_t)cu[s + 1] - cu[s];
        if (slots[s] < 0 || slots[s] >= mc->lim.slots)
            return base_err_set(BASE_ERR_INVALID, "prefill: slot %d outside [0, %d)", slots[s], mc->lim.slots);
        if (len < 1 || len > mc->lim.max_len)
            return base_err_set(BASE_ERR_LIMIT, "prefill: prompt %d has %lld tokens (1 to %lld allowed)", s,
                                (long long)len, (long long)mc->lim.max_len);
        st = check_mapped(mc, "prefill", slots[s], len);
        if (st) return st;
        for (int64_t t = cu[s]; t < cu[s + 1]; t++) hslot[t] = slots[s];
        hlast[s] = cu[s + 1] - 1;
    }
    int64_t n = cu[nseq];
    infer_ws *w = &mc->w;
    o->upload(w->ids.data, ids, (size_t)n * sizeof(int32_t));
    o->upload(w->pos.data, hpos, (size_t)n * sizeof(int32_t));
    o->upload(w->slot.data, hslot, (size_t)n * sizeof(int32_t));
    o->upload(w->cu.data, cu, (size_t)(nseq + 1) * sizeof(int32_t));
    o->upload(w->last.data, hlast, (size_t)nseq * sizeof(int32_t));
    upload_table(mc);
    tensor tids = mv_rows(&w->ids, n), tpos = mv_rows(&w->pos, n), tslot = mv_rows(&w->slot, n);
    tensor tcu = mv_rows(&w->cu, nseq + 1);
    tensor h0 = mv_rows(&w->ha, n);
    model_unit_use(m, 0); /* ZeRO 3: each unit's weights bound before use */
    o->embedding_fwd(&h0, &m->w.embed, &tids);
    fwd_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.n = n;
    ctx.pos = &tpos;
    ctx.cu = &tcu;
    ctx.table = &mc->table;
    ctx.slot = &tslot;
    mc->eh.err = BASE_OK;
    tensor h = run_layers(m, w, &ctx, &mc->cache);
    if (mc->eh.err) return base_err_set(mc->eh.err, "prefill: %s", mc->eh.msg);
    head(m, w, &h, nseq, 1);
    w->logits_view = mv_rows(&w->logits, nseq);
    *logits = &w->logits_view;
    return BASE_OK;
}

void model_cache_graph_stats(const model_cache *mc, int64_t *captures, int64_t *replays) {
    if (captures) *captures = mc->graph_captures;
    if (replays) *replays = mc->graph_replays;
}

/* One decode step over the first n rows of the workspace (inputs uploaded):
 * everything between the uploads and the logits, the part a graph holds. */
typedef struct {
    model_cache *mc;
    int64_t n;
} decode_step;

static void decode_body(void *arg) {
    const decode_step *d = arg;
    model_cache *mc = d->mc;
    model *m = mc->m;
    const struct ops *o = m->ops;
    int64_t n = d->n;
    infer_ws *w = &mc->w;
    tensor tids = mv_rows(&w->ids, n), tpos = mv_rows(&w->pos, n), tslot = mv_rows(&w->slot, n);
    tensor tlen = mv_rows(&w->len, n);
    tensor cur = mv_rows(&w->ha, n), nxt = mv_rows(&w->hb, n);
    model_unit_use(m, 0); /* ZeRO 3: each unit's weights bound before use */
    o->embedding_fwd(&cur, &m->w.embed, &tids);
    fwd_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.n = n;
    ctx.pos = &tpos;
    ctx.table = &mc->table;
    ctx.slot = &tslot;
    ctx.len = &tlen;
    ctx.lora_hv = w->lora_hv;
    for (int l = 0; l < m->cfg.num_hidden_layers; l++) {
        ctx.cache = mv_index4(&mc->cache, l);
        model_unit_use(m, 1 + l);
        layer_decode(m, l, &w->A, &cur, &nxt, &ctx, &w->q_lat, &w->o_lat);
        tensor t = cur;
        cur = nxt;
        nxt = t;
    }
    head(m, w, &cur, n, 0);
}

/* A zero-row step with expert parallelism: each MoE layer's exchange with
 * nothing sent (the peers' rows for this rank's experts still run here),
 * in the order of a forward pass's layers. */
static base_status decode_join(model_cache *mc, const tensor **logits) {
    model *m = mc->m;
    infer_ws *w = &mc->w;
    int64_t E = m->cfg.n_routed_experts;
    int32_t *zero = mc->host; /* E + 1 zeros: no rows for any expert */
    int64_t cap = ws_tokens(&mc->lim);
    if (E + 1 > 4 * cap + ws_rows(&mc->lim)) base_die("decode: staging too small for %lld offsets", (long long)E + 1);
    memset(zero, 0, (size_t)(E + 1) * sizeof(int32_t));
    mc->eh.err = BASE_OK;
    tensor xe = mv_rows(&w->A.xe, 0), ye = mv_rows(&w->A.ye, 0);
    /* ZeRO 3: a pass's whole unit sequence (decode_body's), so the ranks'
     * gathers stay in step and this rank's experts are bound for the peers' rows */
    model_unit_use(m, 0);
    for (int l = 0; l < m->cfg.num_hidden_layers; l++) {
        model_unit_use(m, 1 + l);
        if (!m->w.layers[l].moe) continue;
        m->ops->upload(w->A.offsets.data, zero, (size_t)(E + 1) * sizeof(int32_t));
        ep_routed_fwd(m, l, &w->A, &xe, &ye);
    }
    model_unit_use(m, m->cfg.num_hidden_layers + 1);
    if (m->cfg.tie_word_embeddings) model_unit_use(m, 0);
    if (mc->eh.err) return base_err_set(mc->eh.err, "decode: %s", mc->eh.msg);
    w->logits_view = mv_rows(&w->logits, 0);
    *logits = &w->logits_view;
    return BASE_OK;
}

base_status model_decode(model_cache *mc, int n, const int32_t *slots, const int32_t *tokens, const int32_t *pos,
                         const tensor **logits) {
    model *m = mc->m;
    const struct ops *o = m->ops;
    const model_config *c = &m->cfg;
    int64_t cap = ws_tokens(&mc->lim);
    *logits = NULL;
    if (n == 0 && m->has_ep) return decode_join(mc, logits);
    if (n < 1 || n > mc->lim.max_batch)
        return base_err_set(BASE_ERR_LIMIT, "decode: %d sequences (limit %d)", n, mc->lim.max_batch);
    int32_t *hlen = mc->host, *htok = hlen + cap, *hpos = htok + cap, *hslot = hpos + cap;
    for (int i = 0; i < n; i++) {
        if (slots[i] < 0 || slots[i] >= mc->lim.slots)
            return base_err_set(BASE_ERR_INVALID, "decode: slot %d outside [0, %d)", slots[i], mc->lim.slots);
        if (pos[i] < 0 || pos[i] >= mc->lim.max_len || pos[i] >= m->rope_len)
            return base_err_set(BASE_ERR_LIMIT, "decode: position %d outside the cache (%lld positions) or the rope table (%lld)",
                                pos[i], (long long)mc->lim.max_len, (long long)m->rope_len);
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return base_err_set(BASE_ERR_INVALID, "decode: token id %d outside the vocabulary [0, %lld)", tokens[i],
                                (long long)c->vocab_size);
        base_status st = check_mapped(mc, "decode", slots[i], (int64_t)pos[i] + 1);
        if (st) return st;
        hlen[i] = pos[i] + 1, htok[i] = tokens[i], hpos[i] = pos[i], hslot[i] = slots[i];
    }
    /* graphs: the batch padded to its bucket, the padding rows token 0 at
     * position 0 of the padding slot (they write and read only its page) */
    /* not with ZeRO 3's unit hook: its gathers are host calls a graph would
     * not replay; not with expert parallelism: each MoE layer's exchange
     * plans on the host */
    int graphs = o->graph_capture && !mc->lim.no_graphs && !m->uhook && !m->has_ep && n <= MODEL_GRAPH_MAX_BATCH;
    int64_t nb = n;
    int bucket = 0;
    if (graphs) {
        for (nb = 1; nb < n; nb *= 2) bucket++;
        if (nb > mc->lim.max_batch) nb = mc->lim.max_batch;
        for (int64_t i = n; i < nb; i++) hlen[i] = 1, htok[i] = 0, hpos[i] = 0, hslot[i] = mc->lim.slots;
    }
    infer_ws *w = &mc->w;
    o->upload(w->ids.data, htok, (size_t)nb * sizeof(int32_t));
    o->upload(w->pos.data, hpos, (size_t)nb * sizeof(int32_t));
    o->upload(w->slot.data, hslot, (size_t)nb * sizeof(int32_t));
    o->upload(w->len.data, hlen, (size_t)nb * sizeof(int32_t));
    upload_table(mc);
    decode_step step = {mc, nb};
    mc->eh.err = BASE_OK;
    if (!graphs) {
        decode_body(&step);
    } else if (mc->graph[bucket] && o->graph_launch(mc->graph[bucket]) == 0) {
        mc->graph_replays++;
    } else {
        if (mc->graph[bucket]) o->graph_free(mc->graph[bucket]); /* stale: the backend's scratch moved */
        mc->graph[bucket] = NULL;
        decode_body(&step); /* eagerly: this step's result, and the scratch sized for the capture */
        if (mc->graph_fail[bucket] < 2) {
            mc->graph[bucket] = o->graph_capture(decode_body, &step);
            if (mc->graph[bucket])
                mc->graph_captures++;
            else
                mc->graph_fail[bucket]++; /* stays eager after two failed captures */
        }
    }
    if (mc->eh.err) return base_err_set(mc->eh.err, "decode: %s", mc->eh.msg);
    w->logits_view = mv_rows(&w->logits, n);
    *logits = &w->logits_view;
    return BASE_OK;
}
