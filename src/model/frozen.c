/*
 * Frozen models: compute weights only (model.h model_load_opts.frozen).
 *
 * A frozen bf16/fp8 model has no f32 master arena. Its weights live in one
 * compute arena laid out from the parameter table in storage classes:
 *   - GEMM weights (q_a, q_b / q, kv_a, kv_b, o, the MLPs, the shared and
 *     routed experts): bf16, or e4m3 codes with one f32 scale per
 *     128 x 128 block of each Hugging Face tensor (DeepSeek-V3's format)
 *     in a second arena;
 *   - embedding and LM head: bf16 (the CPU and CUDA embedding and LM-head
 *     ops widen them);
 *   - norms, router weight and routing bias: f32 (read by f32 ops; a
 *     fraction of a percent of the parameters).
 * Consecutive tensors of one class form a region, contiguous in the arena
 * in its dtype, so views spanning several tensors ([gate; up], all experts
 * of a layer) stay linear views; regions start on 256-byte boundaries.
 * Block-scaled views carry a tensor_qblock (tensor.h) built here, one per
 * GEMM view, whose scales follow the tensors' order.
 *
 * Frozen f32 models keep the ordinary f32 arena (it is their compute
 * copy): nothing here concerns them.
 */
#include <stdlib.h>
#include <string.h>

#include "model/internal.h"

enum { FZ_SMALL, FZ_EMBED, FZ_GEMM };

static int ends(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

static int param_class(const model_param *p) {
    if (p->ndim == 1 || ends(p->name, ".mlp.gate.weight")) return FZ_SMALL;
    if (!strcmp(p->name, "lm_head.weight") || ends(p->name, "embed_tokens.weight") ||
        ends(p->name, ".shared_head.head.weight"))
        return FZ_EMBED;
    return FZ_GEMM;
}

void frozen_plan_build(model *m, tensor_dtype wdt) {
    frozen_plan *fz = &m->fz;
    memset(fz, 0, sizeof *fz);
    fz->reg = base_xcalloc((size_t)m->ntab + 1, sizeof(frozen_region));
    fz->soff = base_xmalloc((size_t)(m->ntab > 0 ? m->ntab : 1) * sizeof(int64_t));
    int64_t e = 0;
    int cls = -1;
    for (int i = 0; i < m->ntab; i++) {
        const model_param *p = &m->tab[i];
        /* the table lists the arena in order without gaps (weights.c) */
        if (p->offset != e) base_die("frozen plan: %s at element %lld, expected %lld", p->name, (long long)p->offset, (long long)e);
        int c = param_class(p);
        if (c != cls) {
            if (fz->nreg) fz->bytes += (size_t)(e - fz->reg[fz->nreg - 1].e0) * tensor_dtype_size(fz->reg[fz->nreg - 1].dt);
            fz->bytes = (fz->bytes + 255) & ~(size_t)255;
            frozen_region *r = &fz->reg[fz->nreg++];
            r->e0 = e;
            r->b0 = fz->bytes;
            r->dt = c == FZ_SMALL ? TENSOR_F32 : c == FZ_EMBED ? TENSOR_BF16 : wdt;
            cls = c;
        }
        fz->reg[fz->nreg - 1].e1 = e + p->numel;
        fz->soff[i] = -1;
        if (c == FZ_GEMM) {
            fz->ngemm++;
            if (wdt == TENSOR_F8_E4M3) {
                fz->soff[i] = fz->nscale;
                fz->nscale += tensor_qblock_nscale(p->shape[0], p->shape[1]);
            }
        }
        e += p->numel;
    }
    if (fz->nreg) fz->bytes += (size_t)(e - fz->reg[fz->nreg - 1].e0) * tensor_dtype_size(fz->reg[fz->nreg - 1].dt);
}

void frozen_plan_free(frozen_plan *fz) {
    free(fz->reg);
    free(fz->soff);
    memset(fz, 0, sizeof *fz);
}

/* The region holding element e. */
static const frozen_region *region_of(const model *m, int64_t e) {
    int lo = 0, hi = m->fz.nreg - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (m->fz.reg[mid].e0 <= e) lo = mid;
        else hi = mid - 1;
    }
    const frozen_region *r = &m->fz.reg[lo];
    if (m->fz.nreg == 0 || e < r->e0 || e >= r->e1) base_die("frozen arena: element %lld outside every region", (long long)e);
    return r;
}

/* The parameter starting at element off (-1 when none does). */
static int param_at(const model *m, int64_t off) {
    int lo = 0, hi = m->ntab - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (m->tab[mid].offset == off) return mid;
        if (m->tab[mid].offset < off) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

static void *arena_at(const model *m, const frozen_region *r, int64_t e) {
    return m->cmem + r->b0 + (size_t)(e - r->e0) * tensor_dtype_size(r->dt);
}

tensor_dtype frozen_param_dtype(const model *m, int i) { return region_of(m, m->tab[i].offset)->dt; }

tensor frozen_view(model *m, int64_t off, int ndim, const int64_t *shape) {
    const frozen_region *r = region_of(m, off);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= shape[i];
    if (off + numel > r->e1) base_die("frozen arena: a view of %lld elements at %lld crosses its region", (long long)numel, (long long)off);
    tensor t = tensor_make(arena_at(m, r, off), r->dt, m->ops->device, ndim, shape);
    if (r->dt == TENSOR_F8_E4M3) {
        int i = param_at(m, off);
        if (i < 0 || m->nqb >= m->qbcap) base_die("frozen arena: no block scales for the view at element %lld", (long long)off);
        const model_param *p = &m->tab[i];
        tensor_qblock *qb = &m->qbs[m->nqb++];
        qb->base = t.data;
        qb->scale = m->scales + m->fz.soff[i];
        qb->rows = p->shape[0];
        qb->cols = p->shape[1];
        qb->count = numel / p->numel;
        if (qb->count * p->numel != numel) base_die("frozen arena: the view at %s is not whole tensors", p->name);
        t.qb = qb;
    }
    return t;
}

/* ---- moving values in and out ---------------------------------------------- */

/* The parameters [i0, i1) covering elements [off, off + n) exactly. */
static void param_range(const model *m, int64_t off, int64_t n, int *i0, int *i1) {
    int a = param_at(m, off), b = a;
    if (a < 0) base_die("frozen arena: no parameter starts at element %lld", (long long)off);
    int64_t e = off;
    while (e < off + n && b < m->ntab) e += m->tab[b++].numel;
    if (e != off + n) base_die("frozen arena: elements [%lld, %lld) are not whole parameters", (long long)off, (long long)(off + n));
    *i0 = a, *i1 = b;
}

/* One parameter's f32 values into its storage. */
static void store_param(model *m, int i, const float *x) {
    const model_param *p = &m->tab[i];
    const frozen_region *r = region_of(m, p->offset);
    void *dst = arena_at(m, r, p->offset);
    const struct ops *o = m->ops;
    if (r->dt == TENSOR_F32) {
        o->upload(dst, x, (size_t)p->numel * sizeof(float));
    } else if (r->dt == TENSOR_BF16) {
        uint16_t *h = base_xmalloc((size_t)p->numel * sizeof(uint16_t));
        tensor_from_f32(h, TENSOR_BF16, x, p->numel);
        o->upload(dst, h, (size_t)p->numel * sizeof(uint16_t));
        free(h);
    } else {
        int64_t ns = tensor_qblock_nscale(p->shape[0], p->shape[1]);
        uint8_t *q = base_xmalloc((size_t)p->numel);
        float *s = base_xmalloc((size_t)ns * sizeof(float));
        tensor_quantize_fp8_block(q, s, x, p->shape[0], p->shape[1]);
        frozen_store_fp8(m, i, q, s);
        free(q), free(s);
    }
}

void frozen_store(model *m, int64_t off, const float *host, int64_t n) {
    int i0, i1;
    param_range(m, off, n, &i0, &i1);
    for (int i = i0; i < i1; i++) store_param(m, i, host + (m->tab[i].offset - off));
}

void frozen_store_fp8(model *m, int i, const uint8_t *q, const float *scale) {
    const model_param *p = &m->tab[i];
    const frozen_region *r = region_of(m, p->offset);
    if (r->dt != TENSOR_F8_E4M3) base_die("frozen arena: %s is not stored in fp8", p->name);
    m->ops->upload(arena_at(m, r, p->offset), q, (size_t)p->numel);
    m->ops->upload(m->scales + m->fz.soff[i], scale,
                   (size_t)tensor_qblock_nscale(p->shape[0], p->shape[1]) * sizeof(float));
}

/* One parameter's stored values widened to f32 on the host. */
static void fetch_param(const model *m, int i, float *x) {
    const model_param *p = &m->tab[i];
    const frozen_region *r = region_of(m, p->offset);
    const void *src = arena_at(m, r, p->offset);
    const struct ops *o = m->ops;
    if (r->dt == TENSOR_F32) {
        o->download(x, src, (size_t)p->numel * sizeof(float));
        return;
    }
    size_t es = tensor_dtype_size(r->dt);
    void *raw = base_xmalloc((size_t)p->numel * es);
    o->download(raw, src, (size_t)p->numel * es);
    tensor t = tensor_2d(raw, r->dt, p->shape[0], p->numel / p->shape[0]);
    float *s = NULL;
    tensor_qblock qb;
    if (r->dt == TENSOR_F8_E4M3) {
        int64_t ns = tensor_qblock_nscale(p->shape[0], p->shape[1]);
        s = base_xmalloc((size_t)ns * sizeof(float));
        o->download(s, m->scales + m->fz.soff[i], (size_t)ns * sizeof(float));
        qb = (tensor_qblock){raw, s, p->shape[0], p->shape[1], 1};
        t.qb = &qb;
    }
    tensor_widen(x, &t, 0, p->numel);
    free(raw), free(s);
}

void frozen_fetch(const model *m, int64_t off, float *host, int64_t n) {
    int i0, i1;
    param_range(m, off, n, &i0, &i1);
    for (int i = i0; i < i1; i++) fetch_param(m, i, host + (m->tab[i].offset - off));
}

/* Parameter i as f32 on the host / set from f32 host values, whatever the
 * model's storage. */
static void param_get(const model *m, int i, float *x) {
    const model_param *p = &m->tab[i];
    if (m->released) base_die("model: %s: the weights are sharded over ranks (ZeRO 3): gather them first", p->name);
    if (m->params) m->ops->download(x, m->params + p->offset, (size_t)p->numel * sizeof(float));
    else fetch_param(m, i, x);
}

static void param_set(model *m, int i, const float *x) {
    const model_param *p = &m->tab[i];
    if (m->released) base_die("model: %s: the weights are sharded over ranks (ZeRO 3): gather them first", p->name);
    if (m->params) m->ops->upload(m->params + p->offset, x, (size_t)p->numel * sizeof(float));
    else store_param(m, i, x);
}

/* Elements [a, a + n) of parameter i (a from its start) widened to f32
 * into x[n], downloaded through a bounded bounce buffer (never the whole
 * parameter). */
static void fetch_piece(const model *m, int i, int64_t a, int64_t n, float *x) {
    const model_param *p = &m->tab[i];
    const struct ops *o = m->ops;
    if (m->released) base_die("model: %s: the weights are sharded over ranks (ZeRO 3): gather them first", p->name);
    if (m->params) {
        o->download(x, m->params + p->offset + a, (size_t)n * sizeof(float));
        return;
    }
    const frozen_region *r = region_of(m, p->offset);
    if (r->dt == TENSOR_F32) {
        o->download(x, (const float *)arena_at(m, r, p->offset) + a, (size_t)n * sizeof(float));
        return;
    }
    enum { BOUNCE = 1 << 16 }; /* elements per download */
    size_t es = tensor_dtype_size(r->dt);
    const uint8_t *src = (const uint8_t *)arena_at(m, r, p->offset) + (size_t)a * es;
    uint8_t *raw = base_xmalloc(BOUNCE * es);
    float *scale = NULL;
    int64_t cols = 0, bc = 0;
    if (r->dt == TENSOR_F8_E4M3) {
        int64_t ns = tensor_qblock_nscale(p->shape[0], p->shape[1]);
        scale = base_xmalloc((size_t)ns * sizeof(float));
        o->download(scale, m->scales + m->fz.soff[i], (size_t)ns * sizeof(float));
        cols = p->shape[1], bc = (cols + TENSOR_QBLOCK - 1) / TENSOR_QBLOCK;
    }
    for (int64_t d = 0; d < n; d += BOUNCE) {
        int64_t k = n - d < BOUNCE ? n - d : BOUNCE;
        o->download(raw, src + (size_t)d * es, (size_t)k * es);
        if (!scale) {
            tensor_to_f32(x + d, raw, r->dt, k);
            continue;
        }
        for (int64_t j = 0; j < k; j++) {
            int64_t e = a + d + j;
            x[d + j] = tensor_f8e4m3_to_f32(raw[j]) * scale[(e / cols / TENSOR_QBLOCK) * bc + (e % cols) / TENSOR_QBLOCK];
        }
    }
    free(raw), free(scale);
}

void model_weights_range_to_host(const model *m, int64_t off, int64_t n, float *host) {
    if (off < 0 || n < 0 || off + n > m->numel)
        base_die("model_weights_range_to_host: elements [%lld, %lld) outside the arena of %lld", (long long)off,
                 (long long)(off + n), (long long)m->numel);
    memset(host, 0, (size_t)n * sizeof(float)); /* the arena's gaps */
    int lo = 0, hi = m->ntab; /* the first parameter ending after off */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (m->tab[mid].offset + m->tab[mid].numel <= off) lo = mid + 1;
        else hi = mid;
    }
    for (int i = lo; i < m->ntab && m->tab[i].offset < off + n; i++) {
        const model_param *p = &m->tab[i];
        int64_t a = p->offset > off ? p->offset : off;
        int64_t b = p->offset + p->numel < off + n ? p->offset + p->numel : off + n;
        if (b > a) fetch_piece(m, i, a - p->offset, b - a, host + (a - off));
    }
}

void model_weights_to_host(const model *m, float *host) {
    for (int i = 0; i < m->ntab; i++) param_get(m, i, host + m->tab[i].offset);
}

void model_param_from_host(model *m, int i, const float *x) {
    if (i < 0 || i >= m->ntab) base_die("model_param_from_host: parameter %d of %d", i, m->ntab);
    param_set(m, i, x);
}

void model_weights_from_host(model *m, const float *host) {
    for (int i = 0; i < m->ntab; i++) param_set(m, i, host + m->tab[i].offset);
    model_sync_compute(m);
}

static int64_t max_numel(const model *m) {
    int64_t n = 1;
    for (int i = 0; i < m->ntab; i++)
        if (m->tab[i].numel > n) n = m->tab[i].numel;
    return n;
}

/* The parameter of src that each parameter of dst is (by name; src may
 * hold more: the MTP layers a trainable policy loads and a frozen model
 * leaves out). Both tables are in arena order, so dst's names are a
 * subsequence of src's. NULL with an error when dst has a name src lacks
 * or a shape differs. */
static int *match_params(const model *dst, const model *src, const char *what) {
    int *map = base_xmalloc((size_t)(dst->ntab > 0 ? dst->ntab : 1) * sizeof(int));
    int j = 0;
    for (int i = 0; i < dst->ntab; i++) {
        while (j < src->ntab && strcmp(src->tab[j].name, dst->tab[i].name)) j++;
        if (j == src->ntab || src->tab[j].numel != dst->tab[i].numel) {
            base_err_set(BASE_ERR_INVALID, "%s: the models differ in architecture (%s %s)", what, dst->tab[i].name,
                         j == src->ntab ? "is missing" : "has another shape");
            free(map);
            return NULL;
        }
        map[i] = j++;
    }
    return map;
}

base_status model_copy_weights(model *dst, const model *src) {
    int *map = match_params(dst, src, "model_copy_weights");
    if (!map) return BASE_ERR_INVALID;
    if (dst->params && src->params && dst->ops == src->ops) {
        for (int i = 0; i < dst->ntab; i++)
            dst->ops->copy(dst->params + dst->tab[i].offset, src->params + src->tab[map[i]].offset,
                           (size_t)dst->tab[i].numel * sizeof(float));
    } else {
        float *x = base_xmalloc((size_t)max_numel(dst) * sizeof(float));
        for (int i = 0; i < dst->ntab; i++) {
            param_get(src, map[i], x);
            param_set(dst, i, x);
        }
        free(x);
    }
    free(map);
    model_sync_compute(dst);
    return BASE_OK;
}

void model_mix_weights(model *dst, const model *src, float alpha) {
    int *map = match_params(dst, src, "model_mix_weights");
    if (!map) base_die("%s", base_err_msg());
    if (dst->params && src->params && dst->ops == src->ops) {
        for (int i = 0; i < dst->ntab; i++) {
            tensor td = tensor_1d(dst->params + dst->tab[i].offset, TENSOR_F32, dst->tab[i].numel);
            tensor ts = tensor_1d(src->params + src->tab[map[i]].offset, TENSOR_F32, dst->tab[i].numel);
            td.device = ts.device = dst->ops->device;
            dst->ops->scale(&td, &td, 1.0f - alpha);
            dst->ops->axpy(&td, &ts, alpha);
        }
    } else {
        int64_t n = max_numel(dst);
        float *x = base_xmalloc((size_t)n * sizeof(float)), *y = base_xmalloc((size_t)n * sizeof(float));
        for (int i = 0; i < dst->ntab; i++) {
            param_get(dst, i, x);
            param_get(src, map[i], y);
            /* the device ops' two steps: scale, then axpy, each rounded to f32 */
            for (int64_t k = 0; k < dst->tab[i].numel; k++) x[k] = (1.0f - alpha) * x[k];
            for (int64_t k = 0; k < dst->tab[i].numel; k++) x[k] += alpha * y[k];
            param_set(dst, i, x);
        }
        free(x), free(y);
    }
    free(map);
    model_sync_compute(dst);
}
