/*
 * Private to src/model: the weight views, the activation layout and the
 * helpers the model files share. Not for other modules (use model.h).
 */
#ifndef GRPO_MODEL_INTERNAL_H
#define GRPO_MODEL_INTERNAL_H

#include "model/model.h"

/* Views of one decoder layer's tensors inside an arena (the parameters or
 * the gradients: both have the same layout). A tensor that the layer does
 * not have has data == NULL. */
typedef struct {
    tensor in_norm, post_norm;            /* [d] */
    tensor q_a, q_a_norm, q_b;            /* [dq, d], [dq], [H*dqk, dq]   (q_lora_rank > 0) */
    tensor q;                             /* [H*dqk, d]                   (q_lora_rank = 0) */
    tensor kv_a, kv_a_norm, kv_b;         /* [dc+dr, d], [dc], [H*(dn+dv), dc] */
    tensor o;                             /* [d, H*dv] */
    int moe;
    tensor gu, down;                      /* dense: [2I, d] (gate rows, then up rows), [d, I] */
    tensor router, bias;                  /* [E, d], [E] */
    tensor e_gu, e_down;                  /* [E, 2Ie, d], [E, d, Ie] */
    tensor s_gu, s_down;                  /* shared experts: [2Is, d], [d, Is] (Is = n_shared * Ie) */
    /* MTP module extras (layers num_hidden_layers ..) */
    tensor enorm, hnorm, eh_proj, head_norm; /* [d], [d], [d, 2d], [d] */
    tensor embed_copy, head_copy;            /* [V, d] when the checkpoint stores them */
} model_layer_w;

typedef struct {
    tensor embed;      /* [V, d] */
    tensor final_norm; /* [d] */
    tensor lm_head;    /* [V, d] (the embedding when tied) */
    model_layer_w *layers; /* num_hidden_layers + n_mtp */
} model_weights;

/* The storage plan of a frozen bf16/fp8 model (frozen.c): the parameter
 * table's tensors in runs of one storage class, each run contiguous in the
 * arena in its dtype (so a view spanning several tensors of a run, e.g.
 * [gate; up] or all experts, is one linear view). */
typedef struct {
    int64_t e0, e1;  /* element range of the master layout */
    size_t b0;       /* byte offset in the arena */
    tensor_dtype dt; /* F32 (norms, router, bias), BF16 (embedding, heads), wdt (GEMM weights) */
} frozen_region;

typedef struct {
    frozen_region *reg;
    int nreg;
    int64_t *soff;  /* per parameter: its first block scale (fp8 GEMM weights), -1 otherwise */
    size_t bytes;   /* the arena */
    int64_t nscale; /* block scales */
    int ngemm;      /* GEMM weight tensors (bounds the block-scaled views) */
} frozen_plan;

struct model {
    model_config cfg;
    const struct ops *ops;
    int n_mtp;             /* MTP modules in the arena */
    int mtp_copies;        /* MTP layers store embed_tokens / shared_head.head copies */
    int fused_experts;     /* checkpoint uses mlp.experts.gate_up_proj / down_proj */
    /* expert parallelism (model.h model_ep): ep.size 1 without; the arena
     * holds routed experts [e0, e0 + el) of every MoE layer (el = E / size) */
    model_ep ep;
    int has_ep;            /* loaded with an ep of size > 1 */
    int e0, el;
    int *gidx;             /* per parameter: its index in the whole model's table (random init streams) */
    float *params;         /* device arena */
    int64_t numel;
    model_param *tab;      /* parameter table (host) */
    int ntab;
    model_weights w;       /* views into params (the f32 master weights) */
    /* bf16 mode: cdt = TENSOR_BF16, params_c the bf16 copy of the arena
     * (same element offsets) and wc the views the GEMMs use: the GEMM
     * weights point into params_c, norms, router and bias stay the f32
     * views. f32 mode: cdt = TENSOR_F32, wc is w. Gradient offsets are
     * always taken from w (the master layout). */
    tensor_dtype cdt;
    uint16_t *params_c;
    model_weights wc;
    model_lora *lora;      /* the attached LoRA adapter (lora.c), or NULL */
    /* precision and frozen storage (frozen.c). wdt: the GEMM weights' dtype
     * (F32, BF16, F8_E4M3). A frozen bf16/fp8 model has no params: its
     * weights live in cmem (laid out by fz), its block scales in scales,
     * and w and wc are the same views into cmem (f32 norms, router, bias;
     * bf16 embedding and head; GEMM weights in wdt with their qb). */
    model_precision prec;
    int frozen;
    tensor_dtype wdt;
    frozen_plan fz;
    char *cmem;
    float *scales;
    tensor_qblock *qbs; /* one per block-scaled GEMM view */
    int nqb, qbcap;
    model_mem alloc;    /* bytes allocated per role */
    int64_t rope_len;      /* rows of the rope tables */
    float *rope_mem;       /* device: cos then sin, [rope_len, dr/2] each */
    tensor rope_cos, rope_sin;
    /* ZeRO 3 (shard.c): the arena released (params, params_c NULL); every
     * pass calls the unit hook before it uses a unit's weights
     * (model_unit_use), which binds them to a window (model_unit_bind) */
    int released;
    float **ubase;         /* [units] the f32 window unit u is bound to (NULL: none) */
    int64_t *ulo, *uhi;    /* [units] the units' arena ranges */
    void (*uhook)(void *ctx, int unit);
    void *uhook_ctx;
};

/* shard.c: every weight view unbound, the unit ranges and bindings made,
 * the model marked released (its arena, if any, freed by the caller):
 * model_arena_release, and a model made without its arena
 * (model_load_opts.no_arena). */
void model_shard_unbound(model *m);
/* shard.c: before a pass uses unit u's weights (ZeRO 3: the hook binds
 * them); a no-op for a model holding its arena. */
void model_unit_use(const model *m, int u);
/* The f32 window a released model's unit u is bound to (dies when it is
 * not bound). */
const float *model_unit_base(const model *m, int u);

/* weights.c: build the parameter table (tab may be NULL: count only) and
 * bind views of an arena at `base` (NULL: offsets only). Returns numel. */
int64_t model_layout(model *m, float *base, model_weights *w, model_param *tab, int *ntab);
/* Views of the tensors inside arena range [lo, hi) bound to a window at
 * base (element lo at base), every other view data NULL. */
void model_layout_window(model *m, float *base, int64_t lo, int64_t hi, model_weights *w);
/* Build m->wc from m->w (bf16 mode: params_c allocated, GEMM views into
 * it); weights.c. */
void model_build_compute_views(model *m);
/* The same views bound into a frozen model's arena (frozen_view). */
void model_layout_frozen(model *m, model_weights *w);
void model_weights_free(model_weights *w);

/* frozen.c */
/* Plan m->fz for m->tab and GEMM weights of dtype wdt (BF16 or F8_E4M3). */
void frozen_plan_build(model *m, tensor_dtype wdt);
void frozen_plan_free(frozen_plan *fz);
/* The view of the parameters at element offset off with this shape, in the
 * frozen arena (dtype by storage class; F8 views get their block scales). */
tensor frozen_view(model *m, int64_t off, int ndim, const int64_t *shape);
/* Store n f32 host values of the parameters from element offset off (whole
 * tensors) into the frozen arena: converted to the tensor's storage dtype,
 * fp8 GEMM weights quantised per tensor (tensor_quantize_fp8_block). */
void frozen_store(model *m, int64_t off, const float *host, int64_t n);
/* Store one fp8 GEMM weight (parameter index i) as given: e4m3 codes and
 * its f32 block scales (a checkpoint's FP8 tensor, kept bit for bit). */
void frozen_store_fp8(model *m, int i, const uint8_t *q, const float *scale);
/* n f32 values from element offset off (whole tensors), widened to the host. */
void frozen_fetch(const model *m, int64_t off, float *host, int64_t n);
/* The storage dtype of parameter i in the frozen arena. */
tensor_dtype frozen_param_dtype(const model *m, int i);

/* Contiguous device tensor view helpers. */
static inline tensor mv_1d(const model *m, void *p, tensor_dtype dt, int64_t a) {
    int64_t s[1] = {a};
    return tensor_make(p, dt, m->ops->device, 1, s);
}
static inline tensor mv_2d(const model *m, void *p, tensor_dtype dt, int64_t a, int64_t b) {
    int64_t s[2] = {a, b};
    return tensor_make(p, dt, m->ops->device, 2, s);
}
static inline tensor mv_3d(const model *m, void *p, tensor_dtype dt, int64_t a, int64_t b, int64_t c) {
    int64_t s[3] = {a, b, c};
    return tensor_make(p, dt, m->ops->device, 3, s);
}
/* The first n rows (dim 0) of t. */
static inline tensor mv_rows(const tensor *t, int64_t n) {
    tensor r = *t;
    r.shape[0] = n;
    return r;
}
/* Rows [r0, r0 + n) of t. */
static inline tensor mv_slice(const tensor *t, int64_t r0, int64_t n) {
    tensor r = *t;
    r.data = (char *)t->data + r0 * t->stride[0] * (int64_t)tensor_dtype_size(t->dtype);
    r.shape[0] = n;
    return r;
}
/* Columns [c0, c0 + n) of the last dim (a strided view). */
static inline tensor mv_cols(const tensor *t, int64_t c0, int64_t n) {
    tensor r = *t;
    r.data = (char *)t->data + c0 * (int64_t)tensor_dtype_size(t->dtype);
    r.shape[t->ndim - 1] = n;
    return r;
}
/* Reshape a contiguous tensor's leading data as [a, b] / [a, b, c]. */
static inline tensor mv_as2(const tensor *t, int64_t a, int64_t b) {
    int64_t s[2] = {a, b};
    return tensor_make(t->data, t->dtype, t->device, 2, s);
}
static inline tensor mv_as3(const tensor *t, int64_t a, int64_t b, int64_t c) {
    int64_t s[3] = {a, b, c};
    return tensor_make(t->data, t->dtype, t->device, 3, s);
}
/* Slice [i] of the first dim of a 3-D tensor, as 2-D. */
static inline tensor mv_index(const tensor *t, int64_t i) {
    int64_t s[2] = {t->shape[1], t->shape[2]};
    tensor r = tensor_make((char *)t->data + i * t->stride[0] * (int64_t)tensor_dtype_size(t->dtype),
                           t->dtype, t->device, 2, s);
    r.stride[0] = t->stride[1];
    return r;
}


/* ---- LoRA (lora.c) -------------------------------------------------------- */

/* Adapter slots of a layer: the attention projections, then gate/up/down
 * of the dense MLP (dense layers) or of the shared experts (MoE layers),
 * then the routed experts' (MoE layers, routed_experts). */
enum {
    LORA_Q = 0, LORA_QA, LORA_QB, LORA_KVA, LORA_KVB, LORA_O, LORA_GATE, LORA_UP, LORA_DOWN,
    LORA_EGATE, LORA_EUP, LORA_EDOWN, LORA_NSLOT
};

/* One adapted module: a [r, in] and b [out, r] (routed experts: [E, r, in]
 * and [E, out, r]) in the f32 arena, ac/bc the GEMM operands (bf16 copies
 * in bf16 mode, else a/b). a.data NULL: the module is not adapted. */
typedef struct {
    tensor a, b, ac, bc;
    int64_t in, out, experts; /* experts 0: a plain linear */
} lora_mod;

struct model_lora {
    model *m;
    model_lora_config cfg;
    float scale;          /* s */
    lora_mod *mods;       /* [num_hidden_layers * LORA_NSLOT] */
    float *params;        /* device arena, numel f32 */
    int64_t numel;
    uint16_t *params_c;   /* bf16 mode: the bf16 copy (same offsets) */
    float *grads;         /* model_lora_grads: lazily allocated */
    model_param *tab;     /* PEFT names, arena offsets */
    int ntab;
};

/* in/out features and expert count of slot k of layer l under lc (0 in and
 * out when the slot is not adapted by lc or the layer has no such module). */
void lora_slot_dims(const model_config *c, const model_lora_config *lc, int l, int k, int64_t *in, int64_t *out,
                    int64_t *experts);
/* The slot of layer l, or NULL when the adapter does not adapt it. */
static inline const lora_mod *lora_at(const model_lora *a, int l, int k) {
    const lora_mod *md = a ? &a->mods[(size_t)l * LORA_NSLOT + (size_t)k] : NULL;
    return md && md->a.data ? md : NULL;
}

/* ---- activations (forward.c) ------------------------------------------- */

/* What one layer's forward writes, sized for up to n tokens (views are
 * narrowed to the batch's token count at use). Names follow spec §3.5-3.8.
 * Dense layers use gu/act; MoE layers the router and expert tensors. */
typedef struct {
    tensor xn, rstd1;          /* RMSNorm_in(h) [n, d], [n] */
    tensor cq, rstd_q, cqn;    /* q_a_proj out [n, dq], q_a_layernorm [n], normalised [n, dq] */
    tensor q;                  /* [n, H, dqk]: q_nope | q_pe (roped) per head */
    tensor kva, rstd_kv, ckvn; /* kv_a_proj out [n, dc+dr] (c_kv raw | k_pe roped), [n], RMSNorm(c_kv) [n, dc] */
    tensor kvb;                /* kv_b_proj out [n, H, dn+dv] (k_nope | v per head) */
    tensor o, lse;             /* attention out [n, H, dv], logsumexp [n, H] */
    tensor a, rstd2, un;       /* h + attn [n, d], post norm [n], its output [n, d] */
    tensor gu, act;            /* dense MLP: [n, 2I], silu(g)*u [n, I] */
    tensor z, idx, w;          /* router logits [n, E], chosen experts I32 [n, K], weights [n, K] */
    tensor offsets, row_tok, inv; /* moe_plan: I32 [E+1], [nK], [nK] */
    tensor xe, gue, acte, ye;  /* per-row expert input [nK, d], [nK, 2Ie], [nK, Ie], output [nK, d] */
    tensor gus, acts;          /* shared experts [n, 2Is], [n, Is] */
    /* bf16 mode only (data NULL otherwise): bf16 GEMM copies of o [n, H*dv]
     * and ckvn [n, dc], and (MoE layers) the f32 post-attention norm output
     * [n, d]: the router's input (un is its bf16 copy) */
    tensor ob, ckvnb, unf;
    /* LoRA: the adapter this pass runs (NULL: the base alone) and per
     * adapted slot t = x A^T [n, r] ([nK, r] for routed experts), kept for
     * the backward, with its bf16 GEMM copy ltb in bf16 mode */
    const model_lora *lora;
    tensor lt[LORA_NSLOT], ltb[LORA_NSLOT];
    /* expert parallelism (ep.c; data NULL without): per-peer counts I32
     * [2, P, el + 1] (sent, received; the last of each el + 1 the capacity),
     * local offsets I32 [el + 1], the received -> local row order and back
     * I32 [Rmax], a bounce buffer [Rmax, d] f32, and the expert side's rows
     * in local order: input, gate|up, activation, output */
    tensor ep_cnt, ep_loff, ep_perm, ep_iperm, ep_buf;
    tensor xr, gur, actr, yr;
    int64_t ep_cap;          /* rows this rank accepts from one source */
    struct ep_host *eh;      /* host staging of the pass (set by its owner) */
} layer_acts;

/* Host staging of one pass's EP exchanges (ep.c) and its first error. */
typedef struct ep_host {
    int64_t *cnt;   /* [2 P (el + 1)] counts sent, received */
    int32_t *ci;    /* the same as I32 */
    int64_t *bs;    /* [2 P] bytes sent, received per peer */
    int32_t *off;   /* [E + 1] the global expert offsets */
    int32_t *perm;  /* perm [R], iperm [R], local offsets [el + 1] */
    base_status err;
    char msg[256];
} ep_host;

/* The activation dtype of GEMM inputs: xn, cqn, un, act, acte, acts, xe,
 * the final norm's output (TENSOR_F32, or TENSOR_BF16 in bf16 mode). */
static inline tensor_dtype model_cdt(const model *m) { return m->cdt == TENSOR_BF16 ? TENSOR_BF16 : TENSOR_F32; }

/* One arena, carved in two passes: with base NULL it only measures. */
typedef struct {
    const model *m;
    char *base;
    size_t off;
    const model_lora_config *lora; /* plan the LoRA activations of this adapter config (NULL: none) */
} planner;

tensor plan_t(planner *p, tensor_dtype dt, int ndim, int64_t a, int64_t b, int64_t c);
/* Plan a layer_acts for n tokens. dense/moe: which parts to plan. */
void plan_layer_acts(planner *p, layer_acts *A, int64_t n, int dense, int moe, int keep_lse);

/* The GEMM operand form of an f32 activation t: t itself in f32 mode; in
 * bf16 mode its bf16 copy, written into copy's buffer (t's shape). */
tensor model_gemm_in(const model *m, const tensor *t, const tensor *copy);

/* LoRA in the forward (lora.c): for slot k of layer l, when A->lora adapts
 * it, t = x A^T into A->lt[k] and y += s t B^T (y may be a column view:
 * the gate or up half of a [gate | up] output). x: the GEMM operand of the
 * base product, n rows. Routed experts (LORA_EGATE..) run over the rows
 * grouped by expert (offsets: A->offsets). */
void lora_fwd(const model *m, int l, int k, layer_acts *A, const tensor *x, tensor *y, int64_t n);
/* The absorbed decode's kv_b terms (layer_decode): q_lat [H, n, dc] view
 * += s A^T (B_UK^T q_nope) and o [H, n, dv] view += s B_UV (A o_lat), with
 * hv [n * H * r] scratch. No-ops when kv_b is not adapted. */
void lora_decode_q(const model *m, int l, const layer_acts *A, tensor *ql, const tensor *qn, const tensor *hv);
void lora_decode_o(const model *m, int l, const layer_acts *A, tensor *ov, const tensor *olv, const tensor *hv);
/* Plan A's LoRA tensors for n tokens (K experts per token) under p->lora,
 * for the slots of dense and/or MoE layers. */
void lora_plan_acts(planner *p, layer_acts *A, int64_t n, int dense, int moe);
/* lora.c, for lora_io.c: an adapter of config lc on m with zero weights,
 * attached. */
base_status lora_new_zero(model *m, const model_lora_config *lc, model_lora **out);
/* Rows of the largest LoRA gradient scratch (bwd_scratch.ldt) for n tokens. */
int64_t lora_scratch_rows(const model_config *c, const model_lora_config *lc, int64_t n);

/* Inputs of one layer forward. */
typedef struct {
    int64_t n;          /* tokens */
    const tensor *pos;  /* I32 [n] positions */
    const tensor *cu;   /* I32 [S+1] sequence offsets (training/prefill form) */
    tensor cache;        /* one layer of the paged latent cache [NP, PS, dc+dr]; data NULL: none */
    const tensor *table; /* I32 [S, MB] block tables (ops.h mla_cache_write) */
    const tensor *slot;  /* I32 [n] block-table row (sequence) per token */
    const tensor *len;  /* I32 [n] attended length per token (decode) */
    tensor lora_hv;     /* decode with an adapter on kv_b_proj: scratch [n * H * r] */
} fwd_ctx;

/* Layer l forward (training/prefill form): writes A and h_out = h_in +
 * MLA(norm(h_in)) + FFN(norm(...)). Writes the cache rows when ctx has one. */
void layer_fwd(const model *m, int l, layer_acts *A, const tensor *h_in, tensor *h_out, const fwd_ctx *c);
/* Decode form: one token per row at ctx->pos, attention absorbed over the
 * cache (after writing this token's row). q_lat/o_lat [n, H, dc] scratch. */
void layer_decode(const model *m, int l, layer_acts *A, const tensor *h_in, tensor *h_out,
                  const fwd_ctx *c, tensor *q_lat, tensor *o_lat);
/* The FFN half: h_out = a + FFN(RMSNorm_post(a)) with a = A->a. */
void ffn_fwd(const model *m, int l, layer_acts *A, tensor *h_out, int64_t n);


/* ---- training state (train.c, backward.c) ------------------------------- */

/* LM-head workspace: rows x vocabulary entries per block. */
#define MODEL_LM_ROWS 256
#define MODEL_LM_COLS 8192

/* Gradients of activations, one layer at a time (backward.c). dact/dgu are
 * flat buffers viewed per use (dense MLP, routed rows, shared experts). */
typedef struct {
    tensor dh;           /* [n, d] dL/d(residual stream), running */
    tensor dxn;          /* [n, d] dL/d(normalised input) of the current half-layer */
    tensor dq;           /* [n, H, dqk] */
    tensor dcqn, dcq;    /* [n, dq] */
    tensor dkva, dckvn;  /* [n, dc+dr], [n, dc] */
    tensor dkvb, dout;   /* [n, H, dn+dv], [n, H, dv] */
    tensor dact, dgu;    /* flat */
    tensor dye, dxe;     /* [nK, d] */
    tensor dw, dz;       /* [n, K], [n, E] */
    tensor cvt;          /* bf16 mode: flat bf16 copy of the gradient fed to the next GEMMs */
    tensor ldt, ldtb;    /* LoRA: dL/dt [rows, r] (lora_scratch_rows) and its bf16 copy */
    tensor ep_dy, ep_dx; /* expert parallelism: received row gradients, their dx [Rmax, d] */
    /* model_backward_units: the gradient windows in use (gw NULL: the
     * whole arena, model_backward); arena elements [gw_lo, gw_hi) live in
     * gw, [emb_lo, emb_hi) in gw_emb while the embedding's window is open
     * ahead of its turn (tied embeddings: the LM head writes into it) */
    float *gw, *gw_emb;
    int64_t gw_lo, gw_hi, emb_lo, emb_hi;
    const float *pw, *pw_emb; /* where the open units' weights are: the arena at gw_lo / emb_lo, or
                               * their ZeRO 3 windows (model_unit_base) */
    float aux_coef;      /* the balance loss's weight in this backward (0: none; model_train_set_aux_coef) */
    tensor aux_cu;       /* its sequences: the batch's cu_seqlens */
} bwd_scratch;

/* LoRA in the backward (lora.c) of y = x W^T (+ s (x A^T) B^T), slot k of
 * layer l, with dyc the GEMM operand of dL/dy (n rows): dB += s dy^T t,
 * dt = s dy B, dA += dt^T x, dx += dt A (dx written by the base product
 * before). Gradients into the adapter's arena. No-op when not adapted. */
void lora_bwd(const model *m, int l, int k, const layer_acts *A, const bwd_scratch *b, const tensor *x,
              const tensor *dyc, tensor *dx, int64_t n);

/* ---- expert parallelism (ep.c) -------------------------------------------- */

/* A sizing shell's EP fields for a group of ep_size (rank 0; sizes do not
 * depend on the rank). */
void model_ep_shell(model *m, int ep_size);
/* Rows one source may send this rank for a pass of n tokens per rank. */
int64_t ep_cap(const model *m, int64_t n);
/* Plan A's EP tensors for n tokens (no-op without EP). */
void ep_plan_acts(planner *p, layer_acts *A, int64_t n);
void ep_host_init(ep_host *h, const model *m, int64_t n);
void ep_host_free(ep_host *h);
/* Forward of layer l's routed experts with EP: xe [nK, d] (sorted by
 * global expert, A->offsets) -> ye [nK, d], through the owners. Errors
 * go to A->eh (the pass returns them). */
void ep_routed_fwd(const model *m, int l, layer_acts *A, const tensor *xe, tensor *ye);
/* The routed experts' backward over rows grouped by (local) expert:
 * backward.c's, called for the received rows. */
typedef void (*ep_grad_fn)(const model *m, int l, const layer_acts *A, bwd_scratch *b, float *grads, int64_t rows,
                           const tensor *x, const tensor *gu, const tensor *act, const tensor *offsets,
                           const tensor *dyc, tensor *dx);
/* Backward with EP: dyec (the GEMM operand of dye) to the owners, fn over
 * the received rows, dxe back. Dies on an exchange error (naming it). */
void ep_routed_bwd(const model *m, int l, const layer_acts *A, bwd_scratch *b, float *grads, const tensor *dyec,
                   tensor *dxe, ep_grad_fn fn);
/* The same exchanges with no rows of this rank's own (a zero-row pass):
 * zeros holds n_routed_experts + 1 zero offsets (host). The peers' rows
 * to this rank's experts are served; their weight gradients accumulate
 * as in ep_routed_bwd. */
void ep_join_fwd(const model *m, int l, layer_acts *A, const int32_t *zeros);
void ep_join_bwd(const model *m, int l, const layer_acts *A, bwd_scratch *b, float *grads, ep_grad_fn fn);

struct model_train {
    model *m;
    model_train_limits lim;
    char *mem; /* the activation arena (device) */
    size_t bytes;
    tensor ids, tgt, pos, cu;
    tensor *h;          /* [L + 1] residual stream, h[l] = input of layer l */
    layer_acts *acts;   /* per layer, or one shared set (recompute) */
    int nacts;
    tensor rstd_f, hf;  /* final norm */
    tensor logp, ent, lse, g_logp, g_ent, lm_ws;
    bwd_scratch b;
    tensor h_tmp;       /* recompute: the discarded layer output */
    tensor moe_off;     /* I32 [L, E + 1]: each MoE layer's expert offsets of the last forward */
    int32_t *host_off;  /* staging for moe_off (model_train_expert_load) */
    tensor aux;         /* F32 [L, max_seqs]: each MoE layer's balance loss per sequence of the last forward */
    float *host_aux;    /* staging for aux */
    float aux_coef;     /* model_train_set_aux_coef */
    int aux_fwd;        /* the last forward computed aux */
    int32_t *host_i32;  /* staging: positions, targets */
    float *host_f32;    /* staging: zeros for an absent g_ent */
    /* the last forward */
    int64_t n;
    int nseq;
    float scale;
    int have_fwd;
    int have_join;      /* the last forward was model_train_join_forward */
    tensor out_logp, out_ent;
    const model_lora *lora_planned; /* the adapter the arena was planned for (NULL: none) */
    ep_host eh;                     /* expert parallelism's host staging */
    int adapter_off;                /* model_train_set_adapter(tr, 0): forwards run the base */
};

/* Validate packed sequences (limits, ids in the vocabulary, targets in
 * [-1, V), lengths within the rope table); fill host positions and targets
 * (either may be NULL). */
base_status model_check_batch(const model *m, int nseq, const int32_t *ids, const int32_t *cu,
                              const int32_t *targets, int64_t max_tokens, int max_seqs, int32_t *pos,
                              int32_t *tgt);

/* Slice [i] of the first dim of a 4-D tensor, as 3-D. */
static inline tensor mv_index4(const tensor *t, int64_t i) {
    int64_t s[3] = {t->shape[1], t->shape[2], t->shape[3]};
    tensor r = tensor_make((char *)t->data + i * t->stride[0] * (int64_t)tensor_dtype_size(t->dtype),
                           t->dtype, t->device, 3, s);
    r.stride[0] = t->stride[1];
    r.stride[1] = t->stride[2];
    return r;
}

/* Fill the rope tables for positions [0, len). */
void model_rope_tables(model *m, int64_t len);

#endif
