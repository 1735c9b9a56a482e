/*
 * Tensor descriptors and dtype conversions (host side).
 */
#include "tensor.h"

#include <math.h>
#include <stdio.h>

static const struct {
    const char *name;
    size_t size;
} dtypes[TENSOR_DTYPE_COUNT] = {
    [TENSOR_F32] = {"F32", 4},     [TENSOR_BF16] = {"BF16", 2}, [TENSOR_F16] = {"F16", 2},
    [TENSOR_F8_E4M3] = {"F8_E4M3", 1}, [TENSOR_I32] = {"I32", 4}, [TENSOR_I64] = {"I64", 8},
};

size_t tensor_dtype_size(tensor_dtype t) { return (unsigned)t < TENSOR_DTYPE_COUNT ? dtypes[t].size : 0; }
const char *tensor_dtype_name(tensor_dtype t) {
    return (unsigned)t < TENSOR_DTYPE_COUNT ? dtypes[t].name : "?";
}
int tensor_dtype_from_name(const char *name) {
    for (int i = 0; i < TENSOR_DTYPE_COUNT; i++)
        if (!strcmp(dtypes[i].name, name)) return i;
    return -1;
}

tensor tensor_make(void *data, tensor_dtype dt, tensor_device dev, int ndim, const int64_t *shape) {
    tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = dt;
    t.device = dev;
    t.ndim = ndim;
    int64_t s = 1;
    for (int i = TENSOR_MAX_DIMS - 1; i >= 0; i--) {
        if (i < ndim) {
            t.shape[i] = shape[i];
            t.stride[i] = s;
            s *= shape[i];
        } else {
            t.shape[i] = 1;
            t.stride[i] = 1;
        }
    }
    return t;
}

int64_t tensor_numel(const tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t tensor_nbytes(const tensor *t) { return (size_t)tensor_numel(t) * tensor_dtype_size(t->dtype); }

int tensor_is_contiguous(const tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return 0;
        s *= t->shape[i];
    }
    return 1;
}

const char *tensor_shape_str(const tensor *t, char *buf, size_t n) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

float tensor_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal */
            float f = ldexpf((float)man, -24);
            return sign ? -f : f;
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t tensor_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    float a = fabsf(f);
    if (isnan(f)) return sign | 0x7e00;
    if (a >= 65520.0f) return sign | 0x7c00; /* rounds to inf */
    if (a < 6.103515625e-05f) {             /* subnormal: multiples of 2^-24 */
        float q = nearbyintf(a * 16777216.0f);
        return sign | (uint16_t)q;
    }
    int e;
    float m = frexpf(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    /* 11 significant bits */
    float q = nearbyintf(m * 2048.0f);
    if (q >= 2048.0f) {
        q = 1024.0f;
        e++;
    }
    uint32_t exp = (uint32_t)(e - 1 + 15), man = (uint32_t)q - 1024;
    if (exp >= 31) return sign | 0x7c00;
    return sign | (uint16_t)(exp << 10) | (uint16_t)man;
}

float tensor_f8e4m3_to_f32(uint8_t x) {
    int s = x >> 7, e = (x >> 3) & 0xf, m = x & 7;
    float v;
    if (e == 15 && m == 7) return NAN;
    if (e == 0) v = ldexpf((float)m / 8.0f, -6);
    else v = ldexpf(1.0f + (float)m / 8.0f, e - 7);
    return s ? -v : v;
}

uint8_t tensor_f32_to_f8e4m3(float f) {
    if (isnan(f)) return 0x7f;
    uint8_t sign = signbit(f) ? 0x80 : 0;
    float a = fabsf(f);
    if (a >= 448.0f) return sign | 0x7e; /* saturate (e4m3fn has no infinity) */
    if (a < 0.015625f) {                  /* below 2^-6: subnormal codes, multiples of 2^-9 */
        /* a * 512 is exact (a power of two); nearbyintf rounds to nearest
         * even; 8 is code 0x08 = 2^-6, the smallest normal */
        return sign | (uint8_t)nearbyintf(a * 512.0f);
    }
    uint32_t u;
    memcpy(&u, &a, 4);
    /* round the 23-bit mantissa to 3 bits, nearest even (a carry moves
     * into the exponent); a < 448 rounds to at most 448 = 1.75 * 2^8 */
    u += 0x7ffffu + ((u >> 20) & 1u);
    int e = (int)(u >> 23) - 127;
    return sign | (uint8_t)(((e + 7) << 3) | ((u >> 20) & 7u));
}

void tensor_widen(float *dst, const tensor *t, int64_t off, int64_t n) {
    size_t es = tensor_dtype_size(t->dtype);
    const void *src = (const char *)t->data + off * (int64_t)es;
    if (t->dtype != TENSOR_F8_E4M3 || !t->qb) {
        tensor_to_f32(dst, src, t->dtype, n);
        return;
    }
    static float lut[256];
    static int lut_done;
    if (!__atomic_load_n(&lut_done, __ATOMIC_ACQUIRE)) {
        for (int i = 0; i < 256; i++) lut[i] = tensor_f8e4m3_to_f32((uint8_t)i);
        __atomic_store_n(&lut_done, 1, __ATOMIC_RELEASE);
    }
    const tensor_qblock *qb = t->qb;
    const uint8_t *q = src;
    int64_t k = (const uint8_t *)src - (const uint8_t *)qb->base;
    if (k < 0 || k + n > qb->rows * qb->cols * qb->count)
        base_die("tensor_widen: F8 elements [%lld, %lld) outside their block-scaled region of %lld",
                 (long long)k, (long long)(k + n), (long long)(qb->rows * qb->cols * qb->count));
    for (int64_t i = 0; i < n;) {
        /* a run inside one scale block of one row */
        int64_t col = (k + i) % qb->cols, run = TENSOR_QBLOCK - col % TENSOR_QBLOCK;
        if (run > qb->cols - col) run = qb->cols - col;
        if (run > n - i) run = n - i;
        float s = qb->scale[tensor_qblock_index(qb, k + i)];
        for (int64_t j = 0; j < run; j++) dst[i + j] = lut[q[i + j]] * s;
        i += run;
    }
}

void tensor_quantize_fp8_block(uint8_t *q, float *scale, const float *w, int64_t rows, int64_t cols) {
    int64_t br = (rows + TENSOR_QBLOCK - 1) / TENSOR_QBLOCK, bc = (cols + TENSOR_QBLOCK - 1) / TENSOR_QBLOCK;
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
    for (int64_t b = 0; b < br * bc; b++) {
        int64_t r0 = b / bc * TENSOR_QBLOCK, c0 = b % bc * TENSOR_QBLOCK;
        int64_t r1 = r0 + TENSOR_QBLOCK < rows ? r0 + TENSOR_QBLOCK : rows;
        int64_t c1 = c0 + TENSOR_QBLOCK < cols ? c0 + TENSOR_QBLOCK : cols;
        float amax = 0.0f;
        for (int64_t r = r0; r < r1; r++)
            for (int64_t c = c0; c < c1; c++) {
                float a = fabsf(w[r * cols + c]);
                if (a > amax || isnan(a)) amax = a; /* NaN propagates, as torch's amax */
            }
        if (amax < 1e-4f) amax = 1e-4f; /* DeepGEMM: amax.clamp(1e-4) */
        float inv = 448.0f / amax;
        for (int64_t r = r0; r < r1; r++)
            for (int64_t c = c0; c < c1; c++) q[r * cols + c] = tensor_f32_to_f8e4m3(w[r * cols + c] * inv);
        scale[b] = amax / 448.0f;
    }
}

void tensor_to_f32(float *dst, const void *src, tensor_dtype st, int64_t n) {
    switch (st) {
    case TENSOR_F32: memmove(dst, src, (size_t)n * 4); break;
    case TENSOR_BF16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = tensor_bf16_to_f32(s[i]);
        break;
    }
    case TENSOR_F16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = tensor_f16_to_f32(s[i]);
        break;
    }
    case TENSOR_F8_E4M3: {
        float lut[256];
        for (int i = 0; i < 256; i++) lut[i] = tensor_f8e4m3_to_f32((uint8_t)i);
        const uint8_t *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = lut[s[i]];
        break;
    }
    case TENSOR_I32: {
        const int32_t *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i];
        break;
    }
    case TENSOR_I64: {
        const int64_t *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i];
        break;
    }
    default: base_die("tensor_to_f32: bad dtype %d", (int)st);
    }
}

void tensor_from_f32(void *dst, tensor_dtype dt, const float *src, int64_t n) {
    switch (dt) {
    case TENSOR_F32: memmove(dst, src, (size_t)n * 4); break;
    case TENSOR_BF16: {
        uint16_t *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = tensor_f32_to_bf16(src[i]);
        break;
    }
    case TENSOR_F16: {
        uint16_t *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = tensor_f32_to_f16(src[i]);
        break;
    }
    case TENSOR_F8_E4M3: {
        uint8_t *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = tensor_f32_to_f8e4m3(src[i]);
        break;
    }
    case TENSOR_I32: {
        int32_t *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = (int32_t)lrintf(src[i]);
        break;
    }
    case TENSOR_I64: {
        int64_t *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = (int64_t)llrintf(src[i]);
        break;
    }
    default: base_die("tensor_from_f32: bad dtype %d", (int)dt);
    }
}
