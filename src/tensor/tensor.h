/*
 * tensor: the tensor descriptor (dtype, up to 4 dims with strides, device)
 * and scalar/bulk dtype conversions. A descriptor never owns its data: the
 * owner is the arena or mapping it points into (one allocation per role).
 *
 * Strides are in elements, row-major by default: for shape [A, B, C]
 * stride = [B*C, C, 1].
 */
#ifndef GRPO_TENSOR_H
#define GRPO_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    TENSOR_F32 = 0,
    TENSOR_BF16,
    TENSOR_F16,
    TENSOR_F8_E4M3,
    TENSOR_I32,
    TENSOR_I64,
    TENSOR_DTYPE_COUNT
} tensor_dtype;

typedef enum { TENSOR_CPU = 0, TENSOR_CUDA } tensor_device;

#define TENSOR_MAX_DIMS 4

/* Block scales of an F8_E4M3 weight region (DeepSeek-V3's checkpoint
 * format: `weight_scale_inv`, 128 x 128 blocks). The region is `count`
 * row-major matrices of rows x cols e4m3 codes laid end to end from
 * `base` (one per Hugging Face tensor: an expert's gate_proj, ...), each
 * with f32 scales [ceil(rows/128), ceil(cols/128)] (edge blocks partial),
 * matrix after matrix in `scale`. The element k places after `base` is
 *     e4m3(q[k]) * scale[tensor_qblock_index(qb, k)]
 * (one f32 product: the arithmetic st_dir_load dequantises with). A view
 * anywhere in the region (some rows, an expert, a head's columns) carries
 * the region's descriptor and finds its scales from its data pointer.
 * The descriptor lives with the weights' owner (the model); `scale` is on
 * the tensor's device. */
#define TENSOR_QBLOCK 128
typedef struct tensor_qblock {
    const void *base;
    const float *scale;
    int64_t rows, cols, count;
} tensor_qblock;

typedef struct tensor {
    void *data;
    tensor_dtype dtype;
    tensor_device device;
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    int64_t stride[TENSOR_MAX_DIMS]; /* elements */
    const tensor_qblock *qb;         /* F8_E4M3 with block scales; NULL: none (scale 1) */
} tensor;

/* Index into qb->scale of the element k places after qb->base. */
static inline int64_t tensor_qblock_index(const tensor_qblock *qb, int64_t k) {
    int64_t per = qb->rows * qb->cols, in = k % per, bc = (qb->cols + TENSOR_QBLOCK - 1) / TENSOR_QBLOCK;
    int64_t br = (qb->rows + TENSOR_QBLOCK - 1) / TENSOR_QBLOCK;
    return k / per * br * bc + in / qb->cols / TENSOR_QBLOCK * bc + in % qb->cols / TENSOR_QBLOCK;
}
/* Scales of one rows x cols matrix: ceil(rows/128) * ceil(cols/128). */
static inline int64_t tensor_qblock_nscale(int64_t rows, int64_t cols) {
    return ((rows + TENSOR_QBLOCK - 1) / TENSOR_QBLOCK) * ((cols + TENSOR_QBLOCK - 1) / TENSOR_QBLOCK);
}

size_t tensor_dtype_size(tensor_dtype t);
/* safetensors spelling: "F32", "BF16", "F16", "F8_E4M3", "I32", "I64". */
const char *tensor_dtype_name(tensor_dtype t);
/* -1 if unknown. */
int tensor_dtype_from_name(const char *name);

/* Contiguous descriptor over `data`. */
tensor tensor_make(void *data, tensor_dtype dt, tensor_device dev, int ndim, const int64_t *shape);
static inline tensor tensor_1d(void *d, tensor_dtype dt, int64_t n) {
    int64_t s[1] = {n};
    return tensor_make(d, dt, TENSOR_CPU, 1, s);
}
static inline tensor tensor_2d(void *d, tensor_dtype dt, int64_t r, int64_t c) {
    int64_t s[2] = {r, c};
    return tensor_make(d, dt, TENSOR_CPU, 2, s);
}
static inline tensor tensor_3d(void *d, tensor_dtype dt, int64_t a, int64_t b, int64_t c) {
    int64_t s[3] = {a, b, c};
    return tensor_make(d, dt, TENSOR_CPU, 3, s);
}
int64_t tensor_numel(const tensor *t);
size_t tensor_nbytes(const tensor *t); /* numel * dtype size (contiguous) */
int tensor_is_contiguous(const tensor *t);
/* "[37, 320]" into buf. */
const char *tensor_shape_str(const tensor *t, char *buf, size_t n);

/* ---- scalar conversions ------------------------------------------------ */

static inline float tensor_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
/* Round to nearest even; NaN stays NaN. */
static inline uint16_t tensor_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
float tensor_f16_to_f32(uint16_t h);
uint16_t tensor_f32_to_f16(float f);
/* float8_e4m3fn (no infinities; 0x7f/0xff NaN; max 448). */
float tensor_f8e4m3_to_f32(uint8_t x);
uint8_t tensor_f32_to_f8e4m3(float f); /* round to nearest even, saturating to +-448 */

/* n consecutive elements of host tensor t, starting `off` elements after
 * t->data, widened to f32: F32 copied, BF16 / F16 widened (exact), F8_E4M3
 * times its block scale when t->qb is set (the f32 product
 * e4m3(q) * scale, as st_dir_load dequantises). The CPU backend's GEMM
 * packing and weight gathers read stored weights through it. */
void tensor_widen(float *dst, const tensor *t, int64_t off, int64_t n);

/* Quantise a rows x cols f32 matrix to e4m3 with 128 x 128 block scales,
 * as DeepGEMM's per_block_cast_to_fp8 (and DeepSeek-V3's checkpoints):
 * per block amax = max(max |w|, 1e-4), q = e4m3(w * (448 / amax)) (round to
 * nearest even, saturating), scale = amax / 448, all in f32. q [rows *
 * cols], scale [tensor_qblock_nscale(rows, cols)]. */
void tensor_quantize_fp8_block(uint8_t *q, float *scale, const float *w, int64_t rows, int64_t cols);

/* Bulk: n elements of `src` (dtype st) into f32 / from f32. Integer dtypes
 * convert by value. */
void tensor_to_f32(float *dst, const void *src, tensor_dtype st, int64_t n);
void tensor_from_f32(void *dst, tensor_dtype dt, const float *src, int64_t n);

#ifdef __cplusplus
}
#endif

#endif
