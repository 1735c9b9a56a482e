/*
 * The optimizer state in a checkpoint, in either layout, read back into
 * whatever range this rank's optimizer holds (re-sharding on load):
 *
 *   ZeRO 0  optimizer.safetensors: "m.NAME", "v.NAME" [numel] per trained
 *           parameter (rank 0 writes it, ckpt.c; with expert parallelism
 *           the same file of the whole model, written by the ranks holding
 *           each part at ZeRO 0 and 1: ckpt_ep.c)
 *   ZeRO 1  optimizer-rank-R-of-W.safetensors, one per rank R of the W that
 *           wrote it (expert_parallel_size 1): "m" and "v" [hi - lo], the
 *           arena elements [lo, hi) = run_split(numel, R, W)
 *           (trainer_state.json records W as "optimizer_shards" and the
 *           arena's size as "optimizer_numel"; the file's metadata repeats
 *           offset, numel, rank and world)
 *
 * The loader copies into this rank's range [state_lo, state_lo + state_n)
 * the parts of the file(s) that overlap it, straight from the mapped files
 * (by name from optimizer.safetensors; from the shards by arena offset,
 * mapped parameter by parameter onto the whole model's arena when this
 * run holds 1 / EP of the experts; a shard that holds none of the range is
 * not opened), so any layout resumes under any world size, ZeRO stage and
 * expert_parallel_size.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/st.h"
#include "run_internal.h"

char *run_ckpt_optim_shard_name(int rank, int world) {
    base_buf b = {0};
    base_buf_printf(&b, "optimizer-rank-%d-of-%d.safetensors", rank, world);
    return b.data;
}

base_status run_ckpt_write_optim_shard(const optim *o, const char *dir) {
    char *name = run_ckpt_optim_shard_name(o->zero_rank, o->zero_shards), *path = base_path_join(dir, name);
    size_t n = (size_t)o->state_n;
    float *m = base_xmalloc((n + 1) * sizeof(float)), *v = base_xmalloc((n + 1) * sizeof(float));
    optim_state_download(o, m, v);
    char off[32], numel[32], rank[16], world[16];
    snprintf(off, sizeof off, "%" PRId64, o->state_lo);
    snprintf(numel, sizeof numel, "%" PRId64, o->n);
    snprintf(rank, sizeof rank, "%d", o->zero_rank);
    snprintf(world, sizeof world, "%d", o->zero_shards);
    int64_t shape[1] = {o->state_n};
    st_writer *w = st_writer_new();
    st_writer_add(w, "m", TENSOR_F32, 1, shape, m);
    st_writer_add(w, "v", TENSOR_F32, 1, shape, v);
    st_writer_meta(w, "offset", off);
    st_writer_meta(w, "numel", numel);
    st_writer_meta(w, "rank", rank);
    st_writer_meta(w, "world", world);
    base_status s = st_writer_write(w, path);
    st_writer_free(w);
    free(m), free(v), free(name), free(path);
    return s;
}

/* The F32 tensor `name` of f with exactly `numel` elements, or an error
 * naming both. */
static base_status f32_tensor(const st_file *f, const char *name, int64_t numel, const st_tensor **out) {
    const st_tensor *t = st_find(f, name);
    if (!t) return base_err_set(BASE_ERR_INVALID, "%s: tensor '%s' is missing", st_path(f), name);
    if (t->dtype != TENSOR_F32 || st_numel(t) != numel)
        return base_err_set(BASE_ERR_INVALID, "%s: tensor '%s' is not F32 [%lld] (a checkpoint of another model?)",
                            st_path(f), name, (long long)numel);
    *out = t;
    return BASE_OK;
}

/* [a, b) of the arena from tensors tm / tv whose element 0 is arena
 * element `base`, into m / v indexed from lo. */
static void copy_range(float *m, float *v, int64_t lo, const st_tensor *tm, const st_tensor *tv, int64_t base,
                       int64_t a, int64_t b) {
    size_t bytes = (size_t)(b - a) * sizeof(float), src = (size_t)(a - base) * sizeof(float);
    memcpy(m + (a - lo), (const char *)tm->data + src, bytes);
    memcpy(v + (a - lo), (const char *)tv->data + src, bytes);
}

static base_status read_full(const char *dir, const optim *o, float *m, float *v) {
    char *p = base_path_join(dir, "optimizer.safetensors");
    st_file *f;
    base_status s = st_open(p, &f);
    free(p);
    if (s) return s;
    const int64_t lo = o->state_lo, hi = o->state_lo + o->state_n;
    for (int i = 0; i < o->n_params && !s; i++) {
        const optim_param *pp = &o->params[i];
        int64_t a = pp->offset > lo ? pp->offset : lo, b = pp->offset + pp->numel < hi ? pp->offset + pp->numel : hi;
        if (b <= a) continue; /* another rank's */
        base_buf bm = {0}, bv = {0};
        base_buf_printf(&bm, "m.%s", pp->name);
        base_buf_printf(&bv, "v.%s", pp->name);
        const st_tensor *tm = NULL, *tv = NULL;
        s = f32_tensor(f, bm.data, pp->numel, &tm);
        if (!s) s = f32_tensor(f, bv.data, pp->numel, &tv);
        if (!s) copy_range(m, v, lo, tm, tv, pp->offset, a, b);
        base_buf_free(&bm), base_buf_free(&bv);
    }
    st_close(f);
    return s;
}

/* The shard file r of `shards` over an arena of numel elements, opened on
 * first use (f[r]) with its m and v checked. */
static base_status shard_open(const char *dir, int r, int shards, int64_t numel, st_file **f) {
    if (f[r]) return BASE_OK;
    int64_t slo, shi;
    run_split(numel, r, shards, &slo, &shi);
    char *name = run_ckpt_optim_shard_name(r, shards), *p = base_path_join(dir, name);
    base_status s = st_open(p, &f[r]);
    free(name), free(p);
    const st_tensor *t;
    if (!s) s = f32_tensor(f[r], "m", shi - slo, &t);
    if (!s) s = f32_tensor(f[r], "v", shi - slo, &t);
    return s;
}

/* Parameter by parameter: the part [a, b) of parameter i inside this rank's
 * range, taken from the shards that hold its source elements [src[i] +
 * (a - offset), ...) of the writer's arena (a shard that holds none of
 * them is not opened). */
static base_status read_shards(const char *dir, int shards, int64_t numel, const int64_t *src, int64_t src_n,
                               const optim *o, float *m, float *v) {
    if (numel != src_n)
        return base_err_set(BASE_ERR_INVALID,
                            "%s/trainer_state.json: 'optimizer_numel' is %lld but this run's model arena has %lld "
                            "elements%s (a checkpoint of another model?)",
                            dir, (long long)numel, (long long)src_n,
                            src_n != o->n ? " with every routed expert" : "");
    const int64_t lo = o->state_lo, hi = o->state_lo + o->state_n;
    st_file **f = base_xcalloc((size_t)shards, sizeof *f);
    base_status s = BASE_OK;
    for (int i = 0; i < o->n_params && !s; i++) {
        const optim_param *pp = &o->params[i];
        int64_t a = pp->offset > lo ? pp->offset : lo, b = pp->offset + pp->numel < hi ? pp->offset + pp->numel : hi;
        if (b <= a) continue; /* another rank's */
        int64_t sa = (src ? src[i] : pp->offset) + (a - pp->offset), sb = sa + (b - a);
        if (sa < 0 || sb > numel) {
            s = base_err_set(BASE_ERR_INVALID, "%s: %s outside the shards' arena of %lld elements", dir, pp->name,
                             (long long)numel);
            break;
        }
        int r = (int)(sa * shards / numel); /* the shard holding sa: near sa x shards / numel */
        if (r >= shards) r = shards - 1;
        int64_t slo, shi;
        run_split(numel, r, shards, &slo, &shi);
        while (r > 0 && slo > sa) run_split(numel, --r, shards, &slo, &shi);
        while (shi <= sa) run_split(numel, ++r, shards, &slo, &shi);
        for (; r < shards && !s; r++) {
            run_split(numel, r, shards, &slo, &shi);
            if (slo >= sb) break;
            int64_t x = slo > sa ? slo : sa, y = shi < sb ? shi : sb;
            if (y <= x) continue;
            s = shard_open(dir, r, shards, numel, f);
            if (s) break;
            const st_tensor *tm = st_find(f[r], "m"), *tv = st_find(f[r], "v");
            size_t bytes = (size_t)(y - x) * sizeof(float), from = (size_t)(x - slo) * sizeof(float);
            int64_t to = a + (x - sa) - lo;
            memcpy(m + to, (const char *)tm->data + from, bytes);
            memcpy(v + to, (const char *)tv->data + from, bytes);
        }
    }
    for (int r = 0; r < shards; r++)
        if (f[r]) st_close(f[r]);
    free(f);
    return s;
}

base_status run_ckpt_read_optim(const char *dir, int shards, int64_t numel, const int64_t *src, int64_t src_n,
                                optim *o) {
    size_t n = (size_t)o->state_n;
    float *m = base_xmalloc((n + 1) * sizeof(float)), *v = base_xmalloc((n + 1) * sizeof(float));
    optim_state_download(o, m, v); /* keeps what the files do not name (frozen elements, padding) */
    base_status s = shards > 0 ? read_shards(dir, shards, numel, src, src ? src_n : o->n, o, m, v)
                               : read_full(dir, o, m, v);
    if (!s) optim_state_upload(o, m, v);
    free(m), free(v);
    return s;
}
