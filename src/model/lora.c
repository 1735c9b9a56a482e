/*
 * LoRA adapters (Hu et al. 2021, as Hugging Face PEFT implements them):
 * the adapter's parameter arena with PEFT's names, its initialisation,
 * and the adapter's share of the forward, the backward and the absorbed
 * decode. The base weights are never modified (model_lora_merge aside):
 *
 *   y = x W^T + s (x A^T) B^T,   A [r, in], B [out, r],   s = alpha / r
 *                                                         (alpha / sqrt(r): rslora)
 *   dB += s dy^T t,  dt = s dy B,  dA += dt^T x,  dx += dt A   (t = x A^T, kept)
 *
 * For a routed expert e the same holds over the rows grouped by expert
 * (moe_matmul / moe_matmul_dw with A [E, r, in], B [E, out, r]).
 *
 * Decode (spec §3.6) multiplies q by W_UK^T and the latent output by W_UV,
 * the two halves of kv_b_proj; with an adapter on kv_b_proj the effective
 * W = W + s B A is never formed: q_lat += s A^T (B_UK^T q_nope) and
 * o += s B_UV (A o_lat), two small products per step (rank r), so the
 * weights the rollout uses are always the trained ones (no merged copy to
 * refresh after an optimizer step, no extra memory).
 *
 * Precision: A and B are f32 masters; bf16 mode keeps a bf16 copy for the
 * GEMMs (the products x A^T and t B^T take bf16 operands as the base GEMMs
 * do, with f32 accumulation and f32 t), refreshed by model_sync_compute.
 * The decode's kv_b terms use the f32 masters, as the base's absorbed
 * products use the f32 kv_b.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/internal.h"

/* ---- names and configuration ----------------------------------------------- */

static const char *const TARGET_NAMES[MODEL_LORA_NTARGETS] = {
    "q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

/* The target module name of each slot. */
static const model_lora_target SLOT_TARGET[LORA_NSLOT] = {
    MODEL_LORA_Q_PROJ,    MODEL_LORA_Q_A_PROJ,  MODEL_LORA_Q_B_PROJ,  MODEL_LORA_KV_A_PROJ,
    MODEL_LORA_KV_B_PROJ, MODEL_LORA_O_PROJ,    MODEL_LORA_GATE_PROJ, MODEL_LORA_UP_PROJ,
    MODEL_LORA_DOWN_PROJ, MODEL_LORA_GATE_PROJ, MODEL_LORA_UP_PROJ,   MODEL_LORA_DOWN_PROJ};

const char *model_lora_target_name(model_lora_target t) {
    return (int)t >= 0 && t < MODEL_LORA_NTARGETS ? TARGET_NAMES[t] : "?";
}

int model_lora_target_parse(const char *name) {
    for (int i = 0; i < MODEL_LORA_NTARGETS; i++)
        if (!strcmp(name, TARGET_NAMES[i])) return i;
    return -1;
}

double model_lora_scaling(const model_lora_config *c) {
    return c->use_rslora ? c->lora_alpha / sqrt((double)c->r) : c->lora_alpha / (double)c->r;
}

void lora_slot_dims(const model_config *c, const model_lora_config *lc, int l, int k, int64_t *in, int64_t *out,
                    int64_t *experts) {
    *in = *out = *experts = 0;
    if (!lc || !(lc->targets & (1u << SLOT_TARGET[k]))) return;
    int64_t d = c->hidden_size, H = c->num_attention_heads, dqk = c->qk_head_dim, qr = c->q_lora_rank;
    int64_t dc = c->kv_lora_rank, dr = c->qk_rope_head_dim, dn = c->qk_nope_head_dim, dv = c->v_head_dim;
    int moe = model_layer_is_moe(c, l);
    int64_t ie = c->moe_intermediate_size, mi = moe ? (int64_t)c->n_shared_experts * ie : c->intermediate_size;
    int64_t i = 0, o = 0, e = 0;
    switch (k) {
    case LORA_Q: if (qr == 0) i = d, o = H * dqk; break;
    case LORA_QA: if (qr > 0) i = d, o = qr; break;
    case LORA_QB: if (qr > 0) i = qr, o = H * dqk; break;
    case LORA_KVA: i = d, o = dc + dr; break;
    case LORA_KVB: i = dc, o = H * (dn + dv); break;
    case LORA_O: i = H * dv, o = d; break;
    case LORA_GATE:
    case LORA_UP: if (mi > 0) i = d, o = mi; break;
    case LORA_DOWN: if (mi > 0) i = mi, o = d; break;
    case LORA_EGATE:
    case LORA_EUP: if (moe && lc->routed_experts) i = d, o = ie, e = c->n_routed_experts; break;
    case LORA_EDOWN: if (moe && lc->routed_experts) i = ie, o = d, e = c->n_routed_experts; break;
    default: break;
    }
    *in = i, *out = o, *experts = e;
}

/* PEFT's module path of slot k of layer l (expert e for the routed slots). */
static void module_name(const model_config *c, int l, int k, int64_t e, char *buf, size_t n) {
    static const char *const attn[] = {"q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"};
    static const char *const mlp[] = {"gate_proj", "up_proj", "down_proj"};
    if (k <= LORA_O) snprintf(buf, n, "model.layers.%d.self_attn.%s", l, attn[k]);
    else if (k <= LORA_DOWN)
        snprintf(buf, n, "model.layers.%d.mlp.%s%s", l, model_layer_is_moe(c, l) ? "shared_experts." : "",
                 mlp[k - LORA_GATE]);
    else snprintf(buf, n, "model.layers.%d.mlp.experts.%lld.%s", l, (long long)e, mlp[k - LORA_EGATE]);
}

/* ---- layout ---------------------------------------------------------------------- */

static void tab_add(model_param *tab, int *nt, const char *module, const char *which, int64_t off, int64_t rows,
                    int64_t cols) {
    if (tab) {
        model_param *p = &tab[*nt];
        snprintf(p->name, sizeof p->name, "base_model.model.%s.%s.weight", module, which);
        p->offset = off;
        p->numel = rows * cols;
        p->ndim = 2;
        p->shape[0] = rows, p->shape[1] = cols, p->shape[2] = 1;
        p->trainable = 1;
        p->mtp = 0;
    }
    (*nt)++;
}

/* Walk the adapter's arena: the parameter table (tab may be NULL) and,
 * with a->params set, the views of every slot. Returns numel. */
static int64_t layout(const model_config *c, const model_lora_config *lc, model_lora *a, model_param *tab, int *ntab) {
    int64_t off = 0, r = lc->r;
    int nt = 0;
    for (int l = 0; l < c->num_hidden_layers; l++)
        for (int k = 0; k < LORA_NSLOT; k++) {
            int64_t in, out, E;
            lora_slot_dims(c, lc, l, k, &in, &out, &E);
            if (!in) continue;
            char mod[96];
            int64_t ne = E ? E : 1, a_off = off, b_off = off + ne * r * in;
            for (int64_t e = 0; e < ne; e++) {
                module_name(c, l, k, e, mod, sizeof mod);
                tab_add(tab, &nt, mod, "lora_A", a_off + e * r * in, r, in);
            }
            for (int64_t e = 0; e < ne; e++) {
                module_name(c, l, k, e, mod, sizeof mod);
                tab_add(tab, &nt, mod, "lora_B", b_off + e * out * r, out, r);
            }
            if (a && a->params) {
                lora_mod *md = &a->mods[(size_t)l * LORA_NSLOT + (size_t)k];
                tensor_device dev = a->m->ops->device;
                md->in = in, md->out = out, md->experts = E;
                if (E) {
                    md->a = tensor_make(a->params + a_off, TENSOR_F32, dev, 3, (int64_t[]){E, r, in});
                    md->b = tensor_make(a->params + b_off, TENSOR_F32, dev, 3, (int64_t[]){E, out, r});
                } else {
                    md->a = tensor_make(a->params + a_off, TENSOR_F32, dev, 2, (int64_t[]){r, in});
                    md->b = tensor_make(a->params + b_off, TENSOR_F32, dev, 2, (int64_t[]){out, r});
                }
                md->ac = md->a, md->bc = md->b;
                if (a->params_c) {
                    md->ac.data = a->params_c + a_off, md->ac.dtype = TENSOR_BF16;
                    md->bc.data = a->params_c + b_off, md->bc.dtype = TENSOR_BF16;
                }
            }
            off = b_off + ne * out * r;
        }
    if (ntab) *ntab = nt;
    return off;
}

int64_t model_lora_param_count(const model_config *mc, const model_lora_config *lc) {
    int64_t n = 0;
    for (int l = 0; l < mc->num_hidden_layers; l++)
        for (int k = 0; k < LORA_NSLOT; k++) {
            int64_t in, out, E;
            lora_slot_dims(mc, lc, l, k, &in, &out, &E);
            int64_t add = (E ? E : 1) * (int64_t)lc->r * (in + out);
            n = n > INT64_MAX - add ? INT64_MAX : n + add;
        }
    return n;
}

size_t model_lora_param_bytes(const model_config *mc, const model_lora_config *lc) {
    return (size_t)model_lora_param_count(mc, lc) * sizeof(float);
}

size_t model_lora_compute_bytes(const model_config *mc, const model_lora_config *lc, model_precision prec) {
    return prec == MODEL_BF16 ? (size_t)model_lora_param_count(mc, lc) * sizeof(uint16_t) : 0;
}

/* ---- construction ------------------------------------------------------------------ */

static base_status check_cfg(const model_config *c, const model_lora_config *lc) {
    if (lc->r < 1 || lc->r > MODEL_LORA_MAX_RANK)
        return base_err_set(BASE_ERR_INVALID, "lora: r = %d: must be in [1, %d]", lc->r, MODEL_LORA_MAX_RANK);
    if (!(lc->lora_alpha > 0) || !isfinite(lc->lora_alpha))
        return base_err_set(BASE_ERR_INVALID, "lora: lora_alpha = %g: must be a finite number > 0", lc->lora_alpha);
    if (!lc->targets || lc->targets >= (1u << MODEL_LORA_NTARGETS))
        return base_err_set(BASE_ERR_INVALID, "lora: no target module (target_modules: %s)", MODEL_LORA_TARGET_NAMES);
    if (model_lora_param_count(c, lc) == 0) {
        base_buf b = {0};
        for (int t = 0; t < MODEL_LORA_NTARGETS; t++)
            if (lc->targets & (1u << t)) base_buf_printf(&b, "%s%s", b.len ? ", " : "", TARGET_NAMES[t]);
        base_status s = base_err_set(BASE_ERR_INVALID,
                                     "lora: target_modules (%s) match no module of this model (%s has %s)", b.data,
                                     c->model_type, c->q_lora_rank > 0 ? "q_a_proj and q_b_proj, no q_proj"
                                                                       : "q_proj, no q_a_proj or q_b_proj");
        base_buf_free(&b);
        return s;
    }
    return BASE_OK;
}

/* The adapter's shell for config lc on m: table, arenas, views (A and B zero). */
static model_lora *lora_alloc(model *m, const model_lora_config *lc) {
    model_lora *a = base_xcalloc(1, sizeof *a);
    a->m = m;
    a->cfg = *lc;
    a->scale = (float)model_lora_scaling(lc);
    const model_config *c = &m->cfg;
    a->mods = base_xcalloc((size_t)c->num_hidden_layers * LORA_NSLOT, sizeof(lora_mod));
    a->numel = layout(c, lc, NULL, NULL, &a->ntab);
    a->tab = base_xcalloc((size_t)a->ntab, sizeof(model_param));
    layout(c, lc, NULL, a->tab, NULL);
    a->params = m->ops->alloc((size_t)a->numel * sizeof(float));
    if (m->cdt == TENSOR_BF16) a->params_c = m->ops->alloc((size_t)a->numel * sizeof(uint16_t));
    layout(c, lc, a, NULL, NULL);
    return a;
}

/* Refresh the bf16 copy (bf16 mode). */
static void lora_sync(model_lora *a) {
    if (!a->params_c) return;
    tensor src = tensor_1d(a->params, TENSOR_F32, a->numel), dst = tensor_1d(a->params_c, TENSOR_BF16, a->numel);
    src.device = dst.device = a->m->ops->device;
    a->m->ops->convert(&dst, &src);
}

void model_lora_sync(model_lora *a) { lora_sync(a); }

static base_status attach(model *m, model_lora *a) {
    if (m->lora) return base_err_set(BASE_ERR_INVALID, "lora: the model already has an adapter");
    m->lora = a;
    return BASE_OK;
}

/* What model_lora_new and lora_new_zero both check before allocating. */
static base_status check_new(const model *m, const model_lora_config *lc) {
    base_status s = check_cfg(&m->cfg, lc);
    if (s) return s;
    if (m->lora) return base_err_set(BASE_ERR_INVALID, "lora: the model already has an adapter");
    if (lc->routed_experts && m->has_ep)
        return base_err_set(BASE_ERR_UNSUPPORTED,
                            "lora: routed_experts (adapting the routed experts) with expert_parallel_size %d: "
                            "not supported; adapt attention and shared experts only, or expert_parallel_size 1",
                            m->ep.size);
    return BASE_OK;
}

base_status model_lora_new(model *m, const model_lora_config *lc, uint64_t seed, model_lora **out) {
    *out = NULL;
    base_status s = check_new(m, lc);
    if (s) return s;
    model_lora *a = lora_alloc(m, lc);
    int64_t maxn = 1;
    for (int i = 0; i < a->ntab; i++)
        if (a->tab[i].numel > maxn) maxn = a->tab[i].numel;
    float *host = base_xmalloc((size_t)maxn * sizeof(float));
    for (int i = 0; i < a->ntab; i++) {
        const model_param *p = &a->tab[i];
        if (!strstr(p->name, ".lora_A.")) continue; /* B stays 0 */
        /* kaiming_uniform_(a = sqrt(5)): gain sqrt(1/3), bound sqrt(3) gain / sqrt(fan_in) */
        float bound = (float)(1.0 / sqrt((double)p->shape[1]));
        base_rng r;
        base_rng_init(&r, seed, 0x4c6f5241u /* "LoRA" */, (uint32_t)i, 0);
        for (int64_t k = 0; k < p->numel; k++) host[k] = bound * (2.0f * base_rng_uniform(&r, (uint32_t)k) - 1.0f);
        m->ops->upload(a->params + p->offset, host, (size_t)p->numel * sizeof(float));
    }
    free(host);
    lora_sync(a);
    attach(m, a);
    *out = a;
    return BASE_OK;
}

/* For lora_io.c: an adapter of config lc on m with zero weights, attached. */
base_status lora_new_zero(model *m, const model_lora_config *lc, model_lora **out) {
    *out = NULL;
    base_status s = check_new(m, lc);
    if (s) return s;
    model_lora *a = lora_alloc(m, lc);
    attach(m, a);
    *out = a;
    return BASE_OK;
}

void model_lora_free(model_lora *a) {
    if (!a) return;
    if (a->m->lora == a) a->m->lora = NULL;
    const struct ops *o = a->m->ops;
    o->free(a->params);
    if (a->params_c) o->free(a->params_c);
    if (a->grads) o->free(a->grads);
    free(a->mods);
    free(a->tab);
    free(a);
}

const model_lora_config *model_lora_cfg(const model_lora *a) { return &a->cfg; }
model *model_lora_model(const model_lora *a) { return a->m; }
int model_lora_nparams(const model_lora *a) { return a->ntab; }
const model_param *model_lora_param_at(const model_lora *a, int i) {
    return i >= 0 && i < a->ntab ? &a->tab[i] : NULL;
}
const model_param *model_lora_param_find(const model_lora *a, const char *name) {
    for (int i = 0; i < a->ntab; i++)
        if (!strcmp(a->tab[i].name, name)) return &a->tab[i];
    return NULL;
}
float *model_lora_params(const model_lora *a) { return a->params; }
int64_t model_lora_numel(const model_lora *a) { return a->numel; }

float *model_lora_grads(model_lora *a) {
    if (!a->grads) a->grads = a->m->ops->alloc((size_t)a->numel * sizeof(float));
    return a->grads;
}

/* ---- merge -------------------------------------------------------------------------- */

/* The base weight (f32 master view) slot k of layer l adapts; expert e for
 * the routed slots. */
static tensor base_weight(const model *m, int l, int k, int64_t e) {
    const model_layer_w *w = &m->w.layers[l];
    const model_config *c = &m->cfg;
    int64_t ie = c->moe_intermediate_size, mi = w->moe ? (int64_t)c->n_shared_experts * ie : c->intermediate_size;
    switch (k) {
    case LORA_Q: return w->q;
    case LORA_QA: return w->q_a;
    case LORA_QB: return w->q_b;
    case LORA_KVA: return w->kv_a;
    case LORA_KVB: return w->kv_b;
    case LORA_O: return w->o;
    case LORA_GATE: return mv_rows(w->moe ? &w->s_gu : &w->gu, mi);
    case LORA_UP: return mv_slice(w->moe ? &w->s_gu : &w->gu, mi, mi);
    case LORA_DOWN: return w->moe ? w->s_down : w->down;
    default: break;
    }
    tensor ex = mv_index(k == LORA_EDOWN ? &w->e_down : &w->e_gu, e);
    if (k == LORA_EGATE) return mv_rows(&ex, ie);
    if (k == LORA_EUP) return mv_slice(&ex, ie, ie);
    return ex;
}

void model_lora_merge(model_lora *a) {
    model *m = a->m;
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        for (int k = 0; k < LORA_NSLOT; k++) {
            const lora_mod *md = lora_at(a, l, k);
            if (!md) continue;
            for (int64_t e = 0; e < (md->experts ? md->experts : 1); e++) {
                tensor w = base_weight(m, l, k, e);
                tensor A = md->experts ? mv_index(&md->a, e) : md->a, B = md->experts ? mv_index(&md->b, e) : md->b;
                m->ops->matmul(&w, &B, &A, 0, 0, a->scale, 1.0f); /* W [out, in] += s B [out, r] A [r, in] */
            }
        }
    model_sync_compute(m);
}

/* ---- forward, backward, decode -------------------------------------------------------- */

static int64_t rows_of_slot(const model_config *c, int k, int64_t n) {
    return k >= LORA_EGATE ? n * c->num_experts_per_tok : n;
}

void lora_plan_acts(planner *p, layer_acts *A, int64_t n, int dense, int moe) {
    A->lora = NULL;
    memset(A->lt, 0, sizeof A->lt);
    memset(A->ltb, 0, sizeof A->ltb);
    if (!p->lora) return;
    A->lora = p->m->lora;
    const model_config *c = &p->m->cfg;
    int bf = model_cdt(p->m) == TENSOR_BF16;
    for (int k = 0; k < LORA_NSLOT; k++) {
        int any = 0;
        for (int l = 0; l < c->num_hidden_layers && !any; l++) {
            int is_moe = model_layer_is_moe(c, l);
            if ((is_moe && !moe) || (!is_moe && !dense)) continue;
            int64_t in, out, E;
            lora_slot_dims(c, p->lora, l, k, &in, &out, &E);
            any = in > 0;
        }
        if (!any) continue;
        int64_t rows = rows_of_slot(c, k, n);
        A->lt[k] = plan_t(p, TENSOR_F32, 2, rows, p->lora->r, 1);
        if (bf) A->ltb[k] = plan_t(p, TENSOR_BF16, 2, rows, p->lora->r, 1);
    }
}

int64_t lora_scratch_rows(const model_config *c, const model_lora_config *lc, int64_t n) {
    int64_t rows = n;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        int64_t in, out, E;
        lora_slot_dims(c, lc, l, LORA_EGATE, &in, &out, &E);
        if (in) rows = n * c->num_experts_per_tok;
        lora_slot_dims(c, lc, l, LORA_EDOWN, &in, &out, &E);
        if (in) rows = n * c->num_experts_per_tok;
    }
    return rows;
}

/* The GEMM operand form of t: t (f32 mode) or its bf16 copy in copy. */
static tensor gemm_form(const model *m, const tensor *t, const tensor *copy, int64_t rows) {
    tensor r = mv_rows(t, rows);
    if (!copy->data) return r;
    tensor c = mv_rows(copy, rows);
    m->ops->convert(&c, &r);
    return c;
}

void lora_fwd(const model *m, int l, int k, layer_acts *A, const tensor *x, tensor *y, int64_t n) {
    const lora_mod *md = lora_at(A->lora, l, k);
    if (!md) return;
    const struct ops *o = m->ops;
    float s = A->lora->scale;
    tensor t = mv_rows(&A->lt[k], n);
    if (md->experts) o->moe_matmul(&t, x, &md->ac, &A->offsets, 1, 1.0f, 0.0f);
    else o->matmul(&t, x, &md->ac, 0, 1, 1.0f, 0.0f);
    tensor tc = gemm_form(m, &A->lt[k], &A->ltb[k], n);
    if (md->experts) o->moe_matmul(y, &tc, &md->bc, &A->offsets, 1, s, 1.0f);
    else o->matmul(y, &tc, &md->bc, 0, 1, s, 1.0f);
}

/* The gradient view of an adapter parameter view. */
static tensor lgv(const model_lora *a, const tensor *p) {
    tensor g = *p;
    g.data = a->grads + ((float *)p->data - a->params);
    return g;
}

void lora_bwd(const model *m, int l, int k, const layer_acts *A, const bwd_scratch *b, const tensor *x,
              const tensor *dyc, tensor *dx, int64_t n) {
    const lora_mod *md = lora_at(A->lora, l, k);
    if (!md) return;
    const model_lora *a = A->lora;
    if (!a->grads) base_die("lora backward: the adapter has no gradient arena (model_lora_grads)");
    const struct ops *o = m->ops;
    float s = a->scale;
    int64_t r = a->cfg.r;
    tensor ga = lgv(a, &md->a), gb = lgv(a, &md->b);
    tensor tc = A->ltb[k].data ? mv_rows(&A->ltb[k], n) : mv_rows(&A->lt[k], n);
    if (n * r > b->ldt.shape[0] * b->ldt.shape[1]) base_die("lora backward: scratch too small");
    tensor dt = tensor_make(b->ldt.data, TENSOR_F32, b->ldt.device, 2, (int64_t[]){n, r});
    tensor dtb = b->ldtb;
    if (dtb.data) dtb = tensor_make(b->ldtb.data, TENSOR_BF16, b->ldtb.device, 2, (int64_t[]){n, r});
    if (md->experts) {
        o->moe_matmul_dw(&gb, dyc, &tc, &A->offsets, s);
        o->moe_matmul(&dt, dyc, &md->bc, &A->offsets, 0, s, 0.0f);
    } else {
        o->matmul(&gb, dyc, &tc, 1, 0, s, 1.0f);
        o->matmul(&dt, dyc, &md->bc, 0, 0, s, 0.0f);
    }
    tensor dtc = dt;
    if (dtb.data) {
        o->convert(&dtb, &dt);
        dtc = dtb;
    }
    if (md->experts) {
        o->moe_matmul_dw(&ga, &dtc, x, &A->offsets, 1.0f);
        o->moe_matmul(dx, &dtc, &md->ac, &A->offsets, 0, 1.0f, 1.0f);
    } else {
        o->matmul(&ga, &dtc, x, 1, 0, 1.0f, 1.0f);
        o->matmul(dx, &dtc, &md->ac, 0, 0, 1.0f, 1.0f);
    }
}

/* A 3-D f32 view [a, b, c] with element strides (s0, s1, 1). */
static tensor view3(void *data, tensor_device dev, int64_t a, int64_t b, int64_t c, int64_t s0, int64_t s1) {
    tensor t = tensor_make(data, TENSOR_F32, dev, 3, (int64_t[]){a, b, c});
    t.stride[0] = s0;
    t.stride[1] = s1;
    return t;
}

void lora_decode_q(const model *m, int l, const layer_acts *A, tensor *ql, const tensor *qn, const tensor *hv) {
    const lora_mod *md = lora_at(A->lora, l, LORA_KVB);
    if (!md) return;
    const model_config *c = &m->cfg;
    int64_t H = c->num_attention_heads, dn = c->qk_nope_head_dim, dv = c->v_head_dim, r = A->lora->cfg.r;
    int64_t n = qn->shape[1];
    tensor_device dev = m->ops->device;
    /* u[h] = q_nope[h] B_UK[h]: [n, dn] @ [dn, r]; B_UK[h] = rows h(dn+dv) .. h(dn+dv)+dn of B */
    tensor bk = view3(md->b.data, dev, H, dn, r, (dn + dv) * r, r);
    tensor u = view3(hv->data, dev, H, n, r, n * r, r);
    m->ops->matmul(&u, qn, &bk, 0, 0, 1.0f, 0.0f);
    m->ops->matmul(ql, &u, &md->a, 0, 0, A->lora->scale, 1.0f); /* q_lat[h] += s u[h] A */
}

void lora_decode_o(const model *m, int l, const layer_acts *A, tensor *ov, const tensor *olv, const tensor *hv) {
    const lora_mod *md = lora_at(A->lora, l, LORA_KVB);
    if (!md) return;
    const model_config *c = &m->cfg;
    int64_t H = c->num_attention_heads, dn = c->qk_nope_head_dim, dv = c->v_head_dim, r = A->lora->cfg.r;
    int64_t n = olv->shape[1];
    tensor_device dev = m->ops->device;
    tensor v = view3(hv->data, dev, H, n, r, n * r, r);
    m->ops->matmul(&v, olv, &md->a, 0, 1, 1.0f, 0.0f); /* v[h] = o_lat[h] A^T */
    tensor bv = view3((float *)md->b.data + dn * r, dev, H, dv, r, (dn + dv) * r, r);
    m->ops->matmul(ov, &v, &bv, 0, 1, A->lora->scale, 1.0f); /* o[h] += s v[h] B_UV[h]^T */
}
