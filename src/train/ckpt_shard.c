/*
 * The consolidated Hugging Face weights of a ZeRO 3 run, whose ranks each
 * hold a contiguous range [lo, hi) of the flat f32 parameter arena:
 *
 *   write  every rank lays out the same files from the parameter table
 *          (run_ckpt_weights_plan: the headers and every tensor's file
 *          offset follow from names and shapes alone); rank 0 creates them
 *          at their full size; every rank pwrites the bytes of the tensors'
 *          parts inside its range, downloaded piece by piece into one
 *          bounded host buffer; rank 0 renames them into place. Three
 *          agreed steps (run_agree): no rank goes on after a failure
 *          anywhere, and no file is left under its final name.
 *   read   one rank fills its range from any layout, tensor by tensor
 *          (only those overlapping it), converting to f32 piece by piece.
 *
 * The files are the ones one process writes for the whole arena
 * (run_ckpt_write_weights), byte for byte.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/st.h"
#include "run_internal.h"

typedef struct {
    const run_ckpt_range *r;
} range_src;

/* Bytes [off, off + n) of tensor i, all inside the range (st_part_put is
 * only asked for those). */
static base_status fill_range(void *ctx, int i, uint64_t off, void *dst, size_t n) {
    const run_ckpt_range *r = ((const range_src *)ctx)->r;
    int64_t e = r->params[i].offset + (int64_t)(off / sizeof(float));
    const float *src = r->shard + (e - r->lo);
    if (r->ops && r->ops->device != TENSOR_CPU) r->ops->download(dst, src, n);
    else memcpy(dst, src, n);
    return BASE_OK;
}

/* The part [a, b) of parameter p inside [lo, hi); 0 when none. */
static int overlap(const model_param *p, int64_t lo, int64_t hi, int64_t *a, int64_t *b) {
    *a = p->offset > lo ? p->offset : lo;
    *b = p->offset + p->numel < hi ? p->offset + p->numel : hi;
    return *b > *a;
}

static base_status check_range(const run_ckpt_range *r) {
    if (r->lo < 0 || r->hi < r->lo || (r->hi > r->lo && !r->shard) || r->nparams < 0 || (r->nparams && !r->params))
        return base_err_set(BASE_ERR_INVALID, "checkpoint range [%lld, %lld): bad range, shard or parameter table",
                            (long long)r->lo, (long long)r->hi);
    return BASE_OK;
}

base_status run_ckpt_write_agreed(run_ctx *c, base_status s, st_plan *p, const char *dir, const char *what,
                                  size_t buf_bytes, run_ckpt_put_fn put, void *ctx, size_t *peak) {
    char step[256];
    if (peak) *peak = 0;
    snprintf(step, sizeof step, "laying out the checkpoint's %s", what);
    s = run_agree(c, s, step);
    if (s) return s;
    if (run_writes(c)) s = st_plan_create(p, dir);
    snprintf(step, sizeof step, "creating the checkpoint's %s", what);
    s = run_agree(c, s, step);
    if (s) return s;
    st_part *w = st_part_open(p, dir, run_ckpt_f32_buf(buf_bytes));
    s = put(ctx, w);
    base_status e = st_part_close(w, peak);
    if (!s) s = e;
    snprintf(step, sizeof step, "writing this rank's parts of the checkpoint's %s", what);
    s = run_agree(c, s, step);
    if (!s && run_writes(c)) s = st_plan_commit(p, dir);
    snprintf(step, sizeof step, "renaming the checkpoint's %s into place", what);
    s = run_agree(c, s, step);
    if (s && run_writes(c)) st_plan_abandon(p, dir);
    return s;
}

/* run_ckpt_write_range's parts: every tensor's overlap with [lo, hi). */
static base_status put_range(void *ctx, st_part *w) {
    const run_ckpt_range *r = ctx;
    range_src src = {r};
    base_status s = BASE_OK;
    for (int i = 0; i < r->nparams && !s; i++) {
        int64_t a, b;
        if (overlap(&r->params[i], r->lo, r->hi, &a, &b))
            s = st_part_put(w, i, (uint64_t)(a - r->params[i].offset) * sizeof(float), (uint64_t)(b - a) * sizeof(float),
                            fill_range, &src);
    }
    return s;
}

base_status run_ckpt_write_range(run_ctx *c, const run_ckpt_range *r, const char *dir, const char *stem,
                                 size_t *peak) {
    st_plan *p = NULL;
    uint64_t limit = r->shard_bytes ? r->shard_bytes : ST_SHARD_DEFAULT;
    base_status s = check_range(r);
    if (!s) s = run_ckpt_weights_plan(r->params, r->nparams, stem, limit == UINT64_MAX ? 0 : limit, &p);
    s = run_ckpt_write_agreed(c, s, p, dir, "weight files", r->buf_bytes, put_range, (void *)r, peak);
    st_plan_free(p); /* NULL when the layout failed here */
    return s;
}

/* Where a per-expert tensor the file lacks lives in a fused experts tensor
 * (transformers v5's layout, as model_load reads it): its name into buf and
 * the parameter's first element in it (gate_up_proj [E, 2 ie, d]: expert
 * e's gate at 2 e ie d, its up at (2 e + 1) ie d; down_proj [E, d, ie]:
 * e d ie); NULL when p is no expert tensor or the file has no fused one. */
static const char *fused_of(const st_dir *d, const model_param *p, char *buf, size_t n, int64_t *first) {
    int layer, e, end = 0;
    char kind[8] = "";
    if (sscanf(p->name, "model.layers.%d.mlp.experts.%d.%7[a-z]_proj.weight%n", &layer, &e, kind, &end) != 3 ||
        p->name[end] != '\0')
        return NULL;
    int gate = !strcmp(kind, "gate"), up = !strcmp(kind, "up");
    if (!gate && !up && strcmp(kind, "down")) return NULL;
    snprintf(buf, n, "model.layers.%d.mlp.experts.%s", layer, gate || up ? "gate_up_proj" : "down_proj");
    *first = gate || up ? (2 * (int64_t)e + up) * p->numel : (int64_t)e * p->numel;
    return st_dir_find(d, buf) ? buf : NULL;
}

/* Range r's tensors from the open directory d, through the host buffer
 * *buf (made on first use, step floats). */
static base_status read_one(const st_dir *d, const run_ckpt_range *r, int64_t step, float **buf, size_t *peak) {
    base_status s = check_range(r);
    int on_host = !r->ops || r->ops->device == TENSOR_CPU;
    for (int i = 0; i < r->nparams && !s; i++) {
        const model_param *pp = &r->params[i];
        int64_t a, b;
        if (!overlap(pp, r->lo, r->hi, &a, &b)) continue; /* another rank's: not read */
        const st_tensor *t = st_dir_find(d, pp->name);
        const char *name = pp->name;
        char fused[128];
        int64_t first = 0; /* the parameter's first element in tensor `name` */
        if (!t && !pp->trainable) { /* e_score_correction_bias: zeros when absent, as model_load */
            if (on_host) memset(r->shard + (a - r->lo), 0, (size_t)(b - a) * sizeof(float));
            else r->ops->zero(r->shard + (a - r->lo), (size_t)(b - a) * sizeof(float));
            continue;
        }
        if (!t && fused_of(d, pp, fused, sizeof fused, &first)) name = fused; /* else: named missing below */
        if (t && st_numel(t) != pp->numel) {
            s = base_err_set(BASE_ERR_INVALID, "%s: tensor '%s' has %lld elements, the model's has %lld",
                             st_dir_file_of(d, t), pp->name, (long long)st_numel(t), (long long)pp->numel);
            break;
        }
        for (int64_t e = a; e < b && !s; e += step) {
            int64_t n = b - e < step ? b - e : step;
            float *dst = r->shard + (e - r->lo);
            if (on_host) {
                s = st_dir_load_f32_range(d, name, first + e - pp->offset, n, dst);
                continue;
            }
            if (!*buf) *buf = base_xmalloc((size_t)step * sizeof(float));
            if (peak && (size_t)n * sizeof(float) > *peak) *peak = (size_t)n * sizeof(float);
            s = st_dir_load_f32_range(d, name, first + e - pp->offset, n, *buf);
            if (!s) r->ops->upload(dst, *buf, (size_t)n * sizeof(float));
        }
    }
    return s;
}

base_status run_ckpt_read_ranges(const char *dir, const char *stem, const run_ckpt_range *r, int nr, size_t *peak) {
    if (peak) *peak = 0;
    base_status s = BASE_OK;
    for (int k = 0; k < nr && !s; k++) s = check_range(&r[k]);
    if (s) return s;
    st_dir *d;
    s = !strcmp(stem, "model") ? st_dir_open(dir, &d) : st_dir_open_stem(dir, stem, &d);
    if (s) return s;
    /* one host buffer for every range: r[0]'s bound, no larger than the largest tensor */
    size_t cap = nr && r[0].buf_bytes ? r[0].buf_bytes : ST_BUF_DEFAULT;
    int64_t step = (int64_t)(cap / sizeof(float)), most = 1;
    for (int k = 0; k < nr; k++)
        for (int i = 0; i < r[k].nparams; i++)
            if (r[k].params[i].numel > most) most = r[k].params[i].numel;
    if (step > most) step = most;
    if (step < 1) step = 1;
    float *buf = NULL;
    for (int k = 0; k < nr && !s; k++) s = read_one(d, &r[k], step, &buf, peak);
    free(buf);
    st_dir_close(d);
    return s;
}

base_status run_ckpt_read_range(const char *dir, const char *stem, const run_ckpt_range *r, size_t *peak) {
    return run_ckpt_read_ranges(dir, stem, r, 1, peak);
}
