/*
 * The CPU backend's op table: host memory, float32 elementwise ops, dtype
 * conversion. Compute ops in their own files (matmul.c, ...).
 */
#include "cpu.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Live and peak bytes allocated (ops_cpu_allocated): each block carries
 * its size in a 64-byte header before the pointer handed out (which stays
 * 64-byte aligned). */
#define CPU_HDR 64
static _Atomic size_t cpu_live, cpu_peak, cpu_peak_all;

static void *cpu_alloc(size_t n) {
    if (n > SIZE_MAX - CPU_HDR) base_die("cpu_alloc: %zu bytes is too many", n);
    unsigned char *h = base_xmalloc_aligned(n + CPU_HDR);
    memcpy(h, &n, sizeof n);
    memset(h + CPU_HDR, 0, n);
    size_t live = atomic_fetch_add(&cpu_live, n) + n, peak = atomic_load(&cpu_peak);
    while (live > peak && !atomic_compare_exchange_weak(&cpu_peak, &peak, live)) {
    }
    size_t all = atomic_load(&cpu_peak_all);
    while (live > all && !atomic_compare_exchange_weak(&cpu_peak_all, &all, live)) {
    }
    return h + CPU_HDR;
}
static void cpu_free(void *p) {
    if (!p) return;
    unsigned char *h = (unsigned char *)p - CPU_HDR;
    size_t n;
    memcpy(&n, h, sizeof n);
    atomic_fetch_sub(&cpu_live, n);
    free(h);
}

size_t ops_cpu_allocated(void) { return atomic_load(&cpu_live); }
size_t ops_cpu_peak_allocated(void) { return atomic_load(&cpu_peak); }
size_t ops_cpu_peak_allocated_all(void) { return atomic_load(&cpu_peak_all); }
void ops_cpu_reset_peak(void) { atomic_store(&cpu_peak, atomic_load(&cpu_live)); }
static void cpu_memcpy(void *dst, const void *src, size_t n) {
    if (n) memmove(dst, src, n);
}
static void cpu_zero(void *p, size_t n) {
    if (n) memset(p, 0, n);
}
static void cpu_sync(void) {}

static void need_f32(const char *op, const tensor *t) {
    if (t->dtype != TENSOR_F32) base_die("cpu %s: float32 only (got %s)", op, tensor_dtype_name(t->dtype));
    if (!tensor_is_contiguous(t)) base_die("cpu %s: contiguous tensors only", op);
}

static void cpu_add(tensor *y, const tensor *a, const tensor *b) {
    ops_check_same_shape("add", y, a);
    ops_check_same_shape("add", y, b);
    need_f32("add", y), need_f32("add", a), need_f32("add", b);
    int64_t n = tensor_numel(y);
    float *Y = y->data;
    const float *A = a->data, *B = b->data;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) Y[i] = A[i] + B[i];
}

static void cpu_mul(tensor *y, const tensor *a, const tensor *b) {
    ops_check_same_shape("mul", y, a);
    ops_check_same_shape("mul", y, b);
    need_f32("mul", y), need_f32("mul", a), need_f32("mul", b);
    int64_t n = tensor_numel(y);
    float *Y = y->data;
    const float *A = a->data, *B = b->data;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) Y[i] = A[i] * B[i];
}

static void cpu_scale(tensor *y, const tensor *x, float s) {
    ops_check_same_shape("scale", y, x);
    need_f32("scale", y), need_f32("scale", x);
    int64_t n = tensor_numel(y);
    float *Y = y->data;
    const float *X = x->data;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) Y[i] = s * X[i];
}

static void cpu_axpy(tensor *y, const tensor *x, float a) {
    ops_check_same_shape("axpy", y, x);
    need_f32("axpy", y), need_f32("axpy", x);
    int64_t n = tensor_numel(y);
    float *Y = y->data;
    const float *X = x->data;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) Y[i] += a * X[i];
}

static void cpu_convert(tensor *dst, const tensor *src) {
    ops_check_same_shape("convert", dst, src);
    if (!tensor_is_contiguous(dst) || !tensor_is_contiguous(src))
        base_die("cpu convert: contiguous tensors only");
    int64_t n = tensor_numel(dst);
    if (dst->dtype == TENSOR_F8_E4M3 && dst->qb)
        base_die("cpu convert: to block-scaled F8 (the scales come from the values: tensor_quantize_fp8_block)");
    if (src->dtype == TENSOR_F8_E4M3 && src->qb) { /* dequantise with the block scales */
        float *tmp = dst->dtype == TENSOR_F32 ? dst->data : base_xmalloc((size_t)n * sizeof(float));
        tensor_widen(tmp, src, 0, n);
        if (tmp != dst->data) {
            tensor_from_f32(dst->data, dst->dtype, tmp, n);
            free(tmp);
        }
    } else if (dst->dtype == src->dtype) {
        memmove(dst->data, src->data, tensor_nbytes(dst));
    } else if (dst->dtype == TENSOR_F32) {
        tensor_to_f32(dst->data, src->data, src->dtype, n);
    } else if (src->dtype == TENSOR_F32) {
        tensor_from_f32(dst->data, dst->dtype, src->data, n);
    } else {
        float *tmp = base_xmalloc((size_t)n * sizeof(float));
        tensor_to_f32(tmp, src->data, src->dtype, n);
        tensor_from_f32(dst->data, dst->dtype, tmp, n);
        free(tmp);
    }
}

/* ---- helpers shared by the op files (cpu.h) ---- */

/* Per-thread scratch buffers for ops that need temporary rows (attention
 * statistics, sampling). Grown on first use to the largest size asked and
 * then reused: after the first step no op allocates. */
#define CPU_SCRATCH_SLOTS 8
static _Thread_local float *scratch_buf[CPU_SCRATCH_SLOTS];
static _Thread_local size_t scratch_cap[CPU_SCRATCH_SLOTS];

float *cpu_scratch(int slot, size_t n) {
    if (n > scratch_cap[slot]) {
        free(scratch_buf[slot]);
        scratch_buf[slot] = base_xmalloc_aligned((n ? n : 1) * sizeof(float));
        scratch_cap[slot] = n;
    }
    return scratch_buf[slot];
}

static const struct ops cpu_table = {
    .name = "cpu",
    .device = TENSOR_CPU,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_memcpy,
    .download = cpu_memcpy,
    .copy = cpu_memcpy,
    .zero = cpu_zero,
    .sync = cpu_sync,
    .matmul = cpu_matmul,
    .add = cpu_add,
    .mul = cpu_mul,
    .scale = cpu_scale,
    .axpy = cpu_axpy,
    .convert = cpu_convert,
    .gather_rows = cpu_gather_rows,
    .rmsnorm_fwd = cpu_rmsnorm_fwd,
    .rmsnorm_bwd = cpu_rmsnorm_bwd,
    .rope_fwd = cpu_rope_fwd,
    .rope_bwd = cpu_rope_bwd,
    .mla_attn_fwd = cpu_mla_attn_fwd,
    .mla_attn_bwd = cpu_mla_attn_bwd,
    .mla_cache_write = cpu_mla_cache_write,
    .mla_decode = cpu_mla_decode,
    .moe_route = cpu_moe_route,
    .moe_route_bwd = cpu_moe_route_bwd,
    .moe_plan = cpu_moe_plan,
    .moe_aux_fwd = cpu_moe_aux_fwd,
    .moe_aux_bwd = cpu_moe_aux_bwd,
    .moe_combine = cpu_moe_combine,
    .moe_combine_bwd = cpu_moe_combine_bwd,
    .moe_matmul = cpu_moe_matmul,
    .moe_matmul_dw = cpu_moe_matmul_dw,
    .swiglu_fwd = cpu_swiglu_fwd,
    .swiglu_bwd = cpu_swiglu_bwd,
    .embedding_fwd = cpu_embedding_fwd,
    .embedding_bwd = cpu_embedding_bwd,
    .lmhead_fwd = cpu_lmhead_fwd,
    .lmhead_bwd = cpu_lmhead_bwd,
    .sample = cpu_sample,
    .sumsq = cpu_sumsq,
    .adamw = cpu_adamw,
};

const struct ops *ops_cpu(void) { return &cpu_table; }
