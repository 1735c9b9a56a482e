/*
 * Loading a tensor out of a mapping into caller memory, converted to F32 or
 * BF16 (or copied as is when the caller asks for the stored dtype). FP8
 * e4m3 weights are dequantised with their 128x128 block scales
 * (deepseek-v3-spec.md §5):
 *     W[i, j] = fp8(Wq[i, j]) * scale_inv[i / 128][j / 128]
 * where scale_inv is [ceil(rows/128), ceil(cols/128)], so the last row and
 * column blocks may be partial (kv_a_proj_with_mqa: 576 rows, 5 blocks).
 *
 * Source data may sit at any byte offset of the mapping (safetensors does
 * not align tensors), so a misaligned source is read through an aligned
 * bounce buffer instead of through a typed pointer.
 */
#include "io/st.h"

#include <stdlib.h>
#include <string.h>

#define CHUNK 4096 /* elements converted per step (stack buffers) */

static void shape_str(const st_tensor *t, char *buf, size_t n) {
    tensor tmp = {.ndim = t->ndim};
    memcpy(tmp.shape, t->shape, sizeof t->shape);
    tensor_shape_str(&tmp, buf, n);
}

/* dst[0, n) (dtype dt: F32 or BF16) = src[0, n) (dtype st) converted. */
static void convert_range(void *dst, tensor_dtype dt, const uint8_t *src, tensor_dtype st, int64_t n) {
    size_t ss = tensor_dtype_size(st), ds = tensor_dtype_size(dt);
    int64_t nch = (n + CHUNK - 1) / CHUNK;
    int aligned = ((uintptr_t)src % ss) == 0;
#pragma omp parallel for schedule(static) if (n > 8 * CHUNK)
    for (int64_t c = 0; c < nch; c++) {
        int64_t i0 = c * CHUNK, m = n - i0 < CHUNK ? n - i0 : CHUNK;
        uint64_t bounce[CHUNK]; /* 8 bytes: the widest source dtype (I64) */
        float tmp[CHUNK];
        const void *s = src + (size_t)i0 * ss;
        if (!aligned) {
            memcpy(bounce, s, (size_t)m * ss);
            s = bounce;
        }
        uint8_t *d = (uint8_t *)dst + (size_t)i0 * ds;
        if (dt == TENSOR_F32) {
            tensor_to_f32((float *)d, s, st, m);
        } else {
            tensor_to_f32(tmp, s, st, m);
            tensor_from_f32(d, dt, tmp, m);
        }
    }
}

/* The FP8 weight t has a 2-D shape and its scale sc is [ceil(rows/128), ceil(cols/128)]. */
static base_status check_fp8(const st_tensor *t, const char *file, const st_tensor *sc, const char *scfile) {
    char sb[96], sb2[96];
    if (t->ndim != 2) {
        shape_str(t, sb, sizeof sb);
        return base_err_set(BASE_ERR_UNSUPPORTED,
                            "%s: tensor '%s': F8_E4M3 with shape %s: block scales need a 2-D weight",
                            file, t->name, sb);
    }
    int64_t br = (t->shape[0] + 127) / 128, bc = (t->shape[1] + 127) / 128;
    if (!sc)
        return base_err_set(BASE_ERR_INVALID,
                            "%s: tensor '%s': F8_E4M3 weight without its '%s_scale_inv' block scales",
                            file, t->name, t->name);
    if (sc->ndim != 2 || sc->shape[0] != br || sc->shape[1] != bc ||
        (sc->dtype != TENSOR_F32 && sc->dtype != TENSOR_BF16)) {
        shape_str(t, sb, sizeof sb);
        shape_str(sc, sb2, sizeof sb2);
        return base_err_set(BASE_ERR_INVALID,
                            "%s: tensor '%s': scale is %s %s, expected F32 [%lld, %lld] "
                            "for the %s weight '%s' in %s (128x128 blocks)",
                            scfile, sc->name, tensor_dtype_name(sc->dtype), sb2, (long long)br,
                            (long long)bc, sb, t->name, file);
    }
    return BASE_OK;
}

/* Dequantise the FP8 [rows, cols] weight t with scale sc into dst. */
static base_status dequant_fp8(const st_tensor *t, const char *file, const st_tensor *sc,
                               const char *scfile, tensor_dtype dt, void *dst) {
    base_status st = check_fp8(t, file, sc, scfile);
    if (st) return st;
    int64_t rows = t->shape[0], cols = t->shape[1];
    int64_t br = (rows + 127) / 128, bc = (cols + 127) / 128;
    float *s = base_xmalloc((size_t)(br * bc > 0 ? br * bc : 1) * sizeof(float));
    convert_range(s, TENSOR_F32, sc->data, sc->dtype, br * bc);
    float lut[256];
    for (int i = 0; i < 256; i++) lut[i] = tensor_f8e4m3_to_f32((uint8_t)i);
    const uint8_t *q = t->data;
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
    for (int64_t i = 0; i < rows; i++) {
        const float *srow = s + (i / 128) * bc;
        const uint8_t *qi = q + i * cols;
        if (dt == TENSOR_F32) {
            float *di = (float *)dst + i * cols;
            for (int64_t j = 0; j < cols; j++) di[j] = lut[qi[j]] * srow[j >> 7];
        } else {
            uint16_t *di = (uint16_t *)dst + i * cols;
            for (int64_t j = 0; j < cols; j++) di[j] = tensor_f32_to_bf16(lut[qi[j]] * srow[j >> 7]);
        }
    }
    free(s);
    return BASE_OK;
}

/* Load t (from `file`) into dst; `sc`/`scfile` are its FP8 scale, if any. */
static base_status load(const st_tensor *t, const char *file, const st_tensor *sc, const char *scfile,
                        tensor_dtype dt, void *dst, int64_t numel) {
    if (dt != TENSOR_F32 && dt != TENSOR_BF16 && dt != t->dtype)
        return base_err_set(BASE_ERR_UNSUPPORTED,
                            "%s: tensor '%s': cannot load %s as %s (F32, BF16 or the stored dtype)",
                            file, t->name, tensor_dtype_name(t->dtype),
                            (unsigned)dt < TENSOR_DTYPE_COUNT ? tensor_dtype_name(dt) : "?");
    int64_t n = st_numel(t);
    if (n != numel) {
        char sb[96];
        shape_str(t, sb, sizeof sb);
        return base_err_set(BASE_ERR_INVALID, "%s: tensor '%s': %s has %lld elements, expected %lld",
                            file, t->name, sb, (long long)n, (long long)numel);
    }
    if (dt == t->dtype) {
        if (t->nbytes) memcpy(dst, t->data, t->nbytes);
        return BASE_OK;
    }
    if (t->dtype == TENSOR_F8_E4M3) return dequant_fp8(t, file, sc, scfile, dt, dst);
    convert_range(dst, dt, t->data, t->dtype, n);
    return BASE_OK;
}

static char *scale_name(const char *name) {
    size_t n = strlen(name);
    char *s = base_xmalloc(n + sizeof "_scale_inv");
    memcpy(s, name, n);
    memcpy(s + n, "_scale_inv", sizeof "_scale_inv");
    return s;
}

base_status st_file_load(const st_file *f, const char *name, tensor_dtype dt, void *dst, int64_t numel) {
    const st_tensor *t = st_find(f, name);
    if (!t) return base_err_set(BASE_ERR_INVALID, "%s: no tensor '%s'", st_path(f), name);
    const st_tensor *sc = NULL;
    if (t->dtype == TENSOR_F8_E4M3) {
        char *sn = scale_name(name);
        sc = st_find(f, sn);
        free(sn);
    }
    return load(t, st_path(f), sc, st_path(f), dt, dst, numel);
}

base_status st_dir_load(const st_dir *d, const char *name, tensor_dtype dt, void *dst, int64_t numel) {
    const st_tensor *t = st_dir_find(d, name);
    if (!t) {
        const char *ip = st_dir_index_path(d);
        return base_err_set(BASE_ERR_INVALID, "%s: no tensor '%s'",
                            ip ? ip : st_dir_nfiles(d) == 1 ? st_path(st_dir_file(d, 0)) : st_dir_path(d),
                            name);
    }
    const st_tensor *sc = NULL;
    if (t->dtype == TENSOR_F8_E4M3) {
        char *sn = scale_name(name);
        sc = st_dir_find(d, sn);
        free(sn);
    }
    return load(t, st_dir_file_of(d, t), sc, sc ? st_dir_file_of(d, sc) : NULL, dt, dst, numel);
}

base_status st_dir_load_f32_range(const st_dir *d, const char *name, int64_t off, int64_t n, float *dst) {
    const st_tensor *t = st_dir_find(d, name);
    if (!t) {
        const char *ip = st_dir_index_path(d);
        return base_err_set(BASE_ERR_INVALID, "%s: no tensor '%s'",
                            ip ? ip : st_dir_nfiles(d) == 1 ? st_path(st_dir_file(d, 0)) : st_dir_path(d),
                            name);
    }
    const char *file = st_dir_file_of(d, t);
    int64_t numel = st_numel(t);
    if (off < 0 || n < 0 || off > numel || n > numel - off)
        return base_err_set(BASE_ERR_INVALID, "%s: tensor '%s': elements [%lld, %lld) outside its %lld", file, name,
                            (long long)off, (long long)(off + n), (long long)numel);
    if (t->dtype == TENSOR_F32 || t->dtype == TENSOR_BF16 || t->dtype == TENSOR_F16) {
        convert_range(dst, TENSOR_F32, (const uint8_t *)t->data + (size_t)off * tensor_dtype_size(t->dtype), t->dtype,
                      n);
        return BASE_OK;
    }
    if (t->dtype != TENSOR_F8_E4M3)
        return base_err_set(BASE_ERR_UNSUPPORTED, "%s: tensor '%s': %s is not a floating-point weight", file, name,
                            tensor_dtype_name(t->dtype));
    char *sn = scale_name(name);
    const st_tensor *sc = st_dir_find(d, sn);
    free(sn);
    base_status s = check_fp8(t, file, sc, sc ? st_dir_file_of(d, sc) : NULL);
    if (s) return s;
    const int64_t cols = t->shape[1], bc = (cols + 127) / 128;
    const size_t ss = tensor_dtype_size(sc->dtype);
    const uint8_t *q = (const uint8_t *)t->data + off;
    for (int64_t i = 0; i < n;) { /* a run inside one scale block of one row */
        int64_t k = off + i, row = k / cols, col = k % cols;
        int64_t run = 128 - col % 128;
        if (run > cols - col) run = cols - col;
        if (run > n - i) run = n - i;
        uint32_t raw = 0; /* the scale, read through a copy (any alignment) */
        memcpy(&raw, (const uint8_t *)sc->data + (size_t)((row / 128) * bc + col / 128) * ss, ss);
        float scale;
        tensor_to_f32(&scale, &raw, sc->dtype, 1);
        for (int64_t j = 0; j < run; j++) dst[i + j] = tensor_f8e4m3_to_f32(q[i + j]) * scale;
        i += run;
    }
    return BASE_OK;
}
