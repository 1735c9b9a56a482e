/*
 * Private header of the CPU backend: the ops it implements, shared between
 * its files and with tests (the naive oracles), plus the small helpers the
 * op files share (argument checks, row pointers, vector dot products).
 */
#ifndef GRPO_TENSOR_CPU_H
#define GRPO_TENSOR_CPU_H

#include "tensor/ops.h"
#include "tensor/ops_check.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

void cpu_matmul(tensor *c, const tensor *a, const tensor *b, int trans_a, int trans_b, float alpha,
                float beta);
void cpu_matmul_naive(tensor *c, const tensor *a, const tensor *b, int trans_a, int trans_b,
                      float alpha, float beta);

/* norm.c */
void cpu_gather_rows(tensor *dst, const tensor *src, const tensor *idx);
void cpu_rmsnorm_fwd(tensor *y, tensor *rstd, const tensor *x, const tensor *w, float eps);
void cpu_rmsnorm_bwd(tensor *dx, tensor *dw, const tensor *dy, const tensor *x, const tensor *w,
                     const tensor *rstd, int accumulate_dx);
void cpu_embedding_fwd(tensor *y, const tensor *table, const tensor *ids);
void cpu_embedding_bwd(tensor *dtable, const tensor *dy, const tensor *ids);
/* rope.c */
void cpu_rope_fwd(tensor *x, const tensor *pos, const tensor *cos, const tensor *sin, int interleaved);
void cpu_rope_bwd(tensor *dx, const tensor *pos, const tensor *cos, const tensor *sin,
                  int interleaved);
/* attention.c */
void cpu_mla_attn_fwd(tensor *o, tensor *lse, const tensor *q, const tensor *kv, const tensor *kpe,
                      const tensor *cu_seqlens, float scale);
void cpu_mla_attn_bwd(tensor *dq, tensor *dkv, tensor *dkpe, const tensor *dout, const tensor *q,
                      const tensor *kv, const tensor *kpe, const tensor *o, const tensor *lse,
                      const tensor *cu_seqlens, float scale);
void cpu_mla_cache_write(tensor *cache, const tensor *ckv, const tensor *kpe, const tensor *table, const tensor *seq,
                         const tensor *pos);
void cpu_mla_decode(tensor *o_lat, const tensor *q_lat, const tensor *q_pe, const tensor *cache, const tensor *table,
                    const tensor *seq, const tensor *len, float scale);
/* moe.c */
void cpu_moe_route(tensor *idx, tensor *w, const tensor *z, const tensor *bias, int n_group,
                   int topk_group, int norm, float routed_scale);
void cpu_moe_route_bwd(tensor *dz, const tensor *dw, const tensor *z, const tensor *idx, int norm,
                       float routed_scale);
void cpu_moe_aux_fwd(tensor *loss, const tensor *z, const tensor *idx, const tensor *cu);
void cpu_moe_aux_bwd(tensor *dz, const tensor *z, const tensor *idx, const tensor *cu, float coef);
void cpu_moe_plan(tensor *offsets, tensor *row_tok, tensor *inv, const tensor *idx, int n_experts);
void cpu_moe_combine(tensor *y, const tensor *ye, const tensor *w, const tensor *inv);
void cpu_moe_combine_bwd(tensor *dye, tensor *dw, const tensor *dy, const tensor *ye,
                         const tensor *w, const tensor *inv);
void cpu_moe_matmul(tensor *y, const tensor *x, const tensor *w, const tensor *offsets, int trans_w, float alpha,
                    float beta);
void cpu_moe_matmul_dw(tensor *dw, const tensor *dy, const tensor *x, const tensor *offsets, float alpha);
void cpu_swiglu_fwd(tensor *h, const tensor *gu);
void cpu_swiglu_bwd(tensor *dgu, const tensor *dh, const tensor *gu);
/* lmhead.c */
void cpu_lmhead_fwd(tensor *logp, tensor *ent, tensor *lse, const tensor *x, const tensor *w,
                    const tensor *target, float scale, tensor *ws);
void cpu_lmhead_bwd(tensor *dx, tensor *dw, const tensor *g_logp, const tensor *g_ent,
                    const tensor *x, const tensor *w, const tensor *target, const tensor *lse,
                    const tensor *ent, float scale, tensor *ws);
void cpu_sample(tensor *ids, tensor *logp, const tensor *logits, const tensor *u, float temperature,
                int top_k, float top_p, float min_p);

/* ---- helpers shared by the op files ------------------------------------ */

/* Per-thread scratch (slot 0..7), grown on demand and then reused. */
float *cpu_scratch(int slot, size_t n);

/* Row r of a 2-D (or the first dim of a 3-D) tensor. */
static inline float *cpu_row(const tensor *t, int64_t r) {
    return (float *)t->data + r * t->stride[0];
}
/* The element `off` places after t->data, whatever t's dtype. */
static inline void *cpu_elem(const tensor *t, int64_t off) {
    return (char *)t->data + off * (int64_t)tensor_dtype_size(t->dtype);
}
/* Element [a, b, 0] of a 3-D tensor. */
static inline float *cpu_at3(const tensor *t, int64_t a, int64_t b) {
    return (float *)t->data + a * t->stride[0] + b * t->stride[1];
}
static inline const int32_t *cpu_i32(const tensor *t) { return (const int32_t *)t->data; }

#if defined(__AVX512F__)
#define CPU_VW 16
#elif defined(__AVX__)
#define CPU_VW 8
#else
#define CPU_VW 4
#endif
typedef float cpu_vf __attribute__((vector_size(CPU_VW * 4)));
typedef float cpu_vfu __attribute__((vector_size(CPU_VW * 4), aligned(4)));

static inline cpu_vf cpu_vload(const float *p) { return *(const cpu_vfu *)p; }
static inline void cpu_vstore(float *p, cpu_vf v) { *(cpu_vfu *)p = v; }
static inline cpu_vf cpu_vset(float x) {
    cpu_vf v;
    for (int i = 0; i < CPU_VW; i++) v[i] = x;
    return v;
}

/* a * b + c as one fused instruction. Written with intrinsics because ISO
 * C11 mode (-std=c11) turns off GCC's contraction of a * b + c into an FMA
 * (half the matmul micro-kernel's throughput). bench/cpu_peak.c measures
 * the machine's peak with this same instruction. */
static inline cpu_vf cpu_vfma(cpu_vf a, cpu_vf b, cpu_vf c) {
#if CPU_VW == 16
    return (cpu_vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif CPU_VW == 8 && defined(__FMA__)
    return (cpu_vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
    return a * b + c;
#endif
}

/* Dot product in f32 with vector partial sums (a fixed order: the result
 * does not depend on threads). */
static inline float cpu_dot(const float *a, const float *b, int64_t n) {
    cpu_vf acc0 = cpu_vset(0.0f), acc1 = cpu_vset(0.0f);
    int64_t i = 0;
    for (; i + 2 * CPU_VW <= n; i += 2 * CPU_VW) {
        acc0 += cpu_vload(a + i) * cpu_vload(b + i);
        acc1 += cpu_vload(a + i + CPU_VW) * cpu_vload(b + i + CPU_VW);
    }
    for (; i + CPU_VW <= n; i += CPU_VW) acc0 += cpu_vload(a + i) * cpu_vload(b + i);
    acc0 += acc1;
    float s = 0.0f;
    for (int k = 0; k < CPU_VW; k++) s += acc0[k];
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* y[0..n) += a * x[0..n). */
static inline void cpu_axpy_row(float *y, float a, const float *x, int64_t n) {
    cpu_vf av = cpu_vset(a);
    int64_t i = 0;
    for (; i + CPU_VW <= n; i += CPU_VW) cpu_vstore(y + i, cpu_vload(y + i) + av * cpu_vload(x + i));
    for (; i < n; i++) y[i] += a * x[i];
}

/* y[0..n) *= a. */
static inline void cpu_scale_row(float *y, float a, int64_t n) {
    cpu_vf av = cpu_vset(a);
    int64_t i = 0;
    for (; i + CPU_VW <= n; i += CPU_VW) cpu_vstore(y + i, cpu_vload(y + i) * av);
    for (; i < n; i++) y[i] *= a;
}
/* optim.c */
double cpu_sumsq(const tensor *x);
void cpu_adamw(tensor *param, tensor *m, tensor *v, const tensor *grad, const ops_adamw_args *a);

#endif
