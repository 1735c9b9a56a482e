/*
 * ZeRO 3's side of the model (docs/distributed.md): the parameter arena
 * released, and each unit's weights bound to a window by the caller's
 * unit hook just before a pass uses them. The units are model_grad_units'
 * (the embedding, each decoder layer, the final norm with the LM head).
 * A released model keeps its table, rope tables and layout; its views are
 * unbound (data NULL) until a unit is bound, and every pass (the training
 * forward and backward, prefill and decode) calls model_unit_use before
 * it reads a unit's weights.
 */
#include <stdlib.h>
#include <string.h>

#include "model/internal.h"

int model_arena_released(const model *m) { return m->released; }

void model_unit_use(const model *m, int u) {
    if (m->uhook) m->uhook(m->uhook_ctx, u);
}

const float *model_unit_base(const model *m, int u) {
    if (!m->released) base_die("model_unit_base: the model holds its arena");
    if (!m->ubase[u]) base_die("model: unit %d of a released model (ZeRO 3) is not bound", u);
    return m->ubase[u];
}

/* The unit ranges, computed once (also for a model that keeps its arena:
 * model_unit_base). */
static void ensure_units(model *m) {
    if (m->ulo) return;
    int U = model_grad_units(m);
    m->ulo = base_xmalloc(2 * (size_t)U * sizeof(int64_t)), m->uhi = m->ulo + U;
    model_grad_unit_ranges(m, m->ulo, m->uhi);
}

void model_shard_unbound(model *m) {
    ensure_units(m);
    model_weights_free(&m->w);
    model_weights_free(&m->wc);
    model_layout(m, NULL, &m->w, NULL, NULL); /* every view unbound */
    m->wc = m->w;
    int nl = m->cfg.num_hidden_layers + m->n_mtp;
    m->wc.layers = base_xmalloc((size_t)nl * sizeof(model_layer_w));
    memcpy(m->wc.layers, m->w.layers, (size_t)nl * sizeof(model_layer_w));
    m->ubase = base_xcalloc((size_t)model_grad_units(m), sizeof *m->ubase);
    m->released = 1;
}

base_status model_arena_release(model *m, void (*hook)(void *ctx, int unit), void *ctx) {
    if (m->released) return base_err_set(BASE_ERR_INVALID, "model_arena_release: the arena is released already");
    if (!m->params || m->frozen || m->lora)
        return base_err_set(BASE_ERR_UNSUPPORTED, "model_arena_release: only a trainable model without an adapter "
                            "shards its parameters (ZeRO 3)");
    if (!hook) return base_err_set(BASE_ERR_INVALID, "model_arena_release: no unit hook");
    m->ops->free(m->params), m->params = NULL;
    if (m->params_c) m->ops->free(m->params_c), m->params_c = NULL;
    model_shard_unbound(m);
    m->uhook = hook, m->uhook_ctx = ctx;
    return BASE_OK;
}

void model_unit_hook_set(model *m, void (*hook)(void *ctx, int unit), void *ctx) {
    if (!m->released) base_die("model_unit_hook_set: the model holds its arena");
    m->uhook = hook, m->uhook_ctx = ctx;
}

void model_arena_restore(model *m) {
    if (!m->released) base_die("model_arena_restore: the arena is not released");
    m->uhook = NULL, m->uhook_ctx = NULL;
    free(m->ubase), m->ubase = NULL;
    m->released = 0;
    m->params = m->ops->alloc((size_t)m->numel * sizeof(float));
    model_weights_free(&m->w);
    model_weights_free(&m->wc);
    model_layout(m, m->params, &m->w, NULL, NULL);
    model_build_compute_views(m);
}

void model_unit_bind(model *m, int u, float *win, uint16_t *win_c) {
    if (!m->released) base_die("model_unit_bind: the model holds its arena");
    int U = model_grad_units(m), L = m->cfg.num_hidden_layers;
    if (u < 0 || u >= U) base_die("model_unit_bind: unit %d of %d", u, U);
    int64_t lo = m->ulo[u], hi = m->uhi[u];
    model_weights t;
    model_layout_window(m, win, lo, hi, &t);
    int bf16 = m->prec == MODEL_BF16 && m->ops->device != TENSOR_CPU;
    if (bf16) { /* the window's compute copy, as model_sync_compute makes the arena's */
        if (!win_c) base_die("model_unit_bind: bf16 mode needs a compute window");
        tensor src = tensor_1d(win, TENSOR_F32, hi - lo), dst = tensor_1d(win_c, TENSOR_BF16, hi - lo);
        src.device = dst.device = m->ops->device;
        m->ops->convert(&dst, &src);
    }
    model_layer_w *lw = NULL, *lc = NULL;
    if (u == 0) {
        m->w.embed = m->wc.embed = t.embed;
        if (m->cfg.tie_word_embeddings) m->w.lm_head = m->wc.lm_head = t.embed;
    } else if (u <= L) {
        lw = &m->w.layers[u - 1], lc = &m->wc.layers[u - 1];
        *lw = *lc = t.layers[u - 1];
    } else {
        m->w.final_norm = m->wc.final_norm = t.final_norm;
        if (!m->cfg.tie_word_embeddings) m->w.lm_head = m->wc.lm_head = t.lm_head;
    }
    if (bf16) { /* GEMM weights into the compute window (to_compute's rule) */
        tensor *g[16];
        int ng = 0;
        if (lc) {
            tensor *gl[] = {&lc->q_a, &lc->q_b, &lc->q, &lc->kv_a, &lc->kv_b, &lc->o, &lc->gu, &lc->down,
                            &lc->e_gu, &lc->e_down, &lc->s_gu, &lc->s_down, &lc->eh_proj};
            for (size_t i = 0; i < sizeof gl / sizeof gl[0]; i++) g[ng++] = gl[i];
        }
        if ((u == 0 && m->cfg.tie_word_embeddings) || (u == L + 1 && !m->cfg.tie_word_embeddings))
            g[ng++] = &m->wc.lm_head;
        for (int i = 0; i < ng; i++) {
            if (!g[i]->data) continue;
            g[i]->data = win_c + ((float *)g[i]->data - win);
            g[i]->dtype = TENSOR_BF16;
        }
    }
    model_weights_free(&t);
    m->ubase[u] = win;
}
