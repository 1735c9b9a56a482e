/*
 * Argument checks shared by the backends (private to the tensor layer: the
 * CPU backend in src/tensor/cpu and the CUDA backend in kernels/). Each op
 * of `struct ops` has one checker for dtypes, ranks and shapes, so the two
 * backends accept exactly the same arguments and word their errors the
 * same way; a backend adds only what it alone needs (the CPU backend also
 * checks values it can read on the host: token ids, cu_seqlens, offsets;
 * the CUDA backend adds contiguity where a kernel needs it).
 *
 * Every check dies (a programming error, not bad input) with
 * "BACKEND OP: ARG ..." naming both the wanted and the actual shape.
 */
#ifndef GRPO_TENSOR_OPS_CHECK_H
#define GRPO_TENSOR_OPS_CHECK_H

#include "tensor/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* dtype dt, ndim dims, a unit last stride. */
void ops_need(const char *be, const char *op, const char *arg, const tensor *t, tensor_dtype dt, int ndim);
/* shape[dim] == n */
void ops_need_dim(const char *be, const char *op, const char *arg, const tensor *t, int dim, int64_t n);
/* F32 [n] */
void ops_need_vec(const char *be, const char *op, const char *arg, const tensor *t, int64_t n);
void ops_need_contig(const char *be, const char *op, const char *arg, const tensor *t);
/* bf16 mode (docs/cuda.md): an operand that the CUDA backend accepts in F32
 * or BF16 (loaded as f32, computed in f32; a BF16 output is the f32 result
 * rounded once). The CPU backend is the f32 reference and takes F32 only:
 * for be "cpu" a BF16 tensor dies naming the CUDA backend. */
void ops_need_fb(const char *be, const char *op, const char *arg, const tensor *t, int ndim);
/* A weight operand w of a GEMM whose other operand is x: x's dtype, or a
 * stored weight's dtype (BF16, F8_E4M3: a frozen model's compute weights,
 * widened to x's dtype by the op; F8 with its block scales, tensor.h
 * tensor_qblock). x itself obeys ops_need_fb (the CPU: F32). */
void ops_need_weight(const char *be, const char *op, const char *arg, const tensor *w, const tensor *x, int ndim);
/* b has a's dtype (operands of one GEMM). */
void ops_need_same_dtype(const char *be, const char *op, const char *an, const tensor *a, const char *bn,
                         const tensor *b);

typedef struct {
    int64_t n, h, dqk, dn, dr, dv; /* tokens, heads, q/k head dim = nope + rope, value dim */
} ops_attn_dims;

/* mla_attn_fwd / mla_attn_bwd (lse may be NULL in the forward). */
ops_attn_dims ops_check_mla_attn_fwd(const char *be, const tensor *o, const tensor *lse, const tensor *q,
                                     const tensor *kv, const tensor *kpe, const tensor *cu_seqlens);
ops_attn_dims ops_check_mla_attn_bwd(const char *be, const tensor *dq, const tensor *dkv, const tensor *dkpe,
                                     const tensor *dout, const tensor *q, const tensor *kv, const tensor *kpe,
                                     const tensor *o, const tensor *lse, const tensor *cu_seqlens);
void ops_check_mla_cache_write(const char *be, const tensor *cache, const tensor *ckv, const tensor *kpe,
                               const tensor *table, const tensor *seq, const tensor *pos);
void ops_check_mla_decode(const char *be, const tensor *o_lat, const tensor *q_lat, const tensor *q_pe,
                          const tensor *cache, const tensor *table, const tensor *seq, const tensor *len);

typedef struct {
    int64_t n, d, v, r, c; /* tokens, hidden, vocabulary, workspace [r, c] */
} ops_lm_dims;

ops_lm_dims ops_check_lmhead_fwd(const char *be, const tensor *logp, const tensor *ent, const tensor *lse,
                                 const tensor *x, const tensor *w, const tensor *target, const tensor *ws);
ops_lm_dims ops_check_lmhead_bwd(const char *be, const tensor *dx, const tensor *dw, const tensor *g_logp,
                                 const tensor *g_ent, const tensor *x, const tensor *w, const tensor *target,
                                 const tensor *lse, const tensor *ent, const tensor *ws);
void ops_check_sample(const char *be, const tensor *ids, const tensor *logp, const tensor *logits, const tensor *u);

void ops_check_moe_route(const char *be, const tensor *idx, const tensor *w, const tensor *z, const tensor *bias);
void ops_check_moe_route_bwd(const char *be, const tensor *dz, const tensor *dw, const tensor *z,
                             const tensor *idx);
/* moe_aux_fwd (loss non-NULL) and moe_aux_bwd (dz non-NULL). */
void ops_check_moe_aux(const char *be, const tensor *loss, const tensor *dz, const tensor *z, const tensor *idx,
                       const tensor *cu);
void ops_check_moe_plan(const char *be, const tensor *offsets, const tensor *row_tok, const tensor *inv,
                        const tensor *idx, int n_experts);
/* Returns K (inv holds N * K entries); 0 when N = 0. */
int64_t ops_check_moe_combine(const char *be, const tensor *y, const tensor *ye, const tensor *w,
                              const tensor *inv);
void ops_check_moe_combine_bwd(const char *be, const tensor *dye, const tensor *dw, const tensor *dy,
                               const tensor *ye, const tensor *w, const tensor *inv);
void ops_check_moe_matmul(const char *be, const tensor *y, const tensor *x, const tensor *w, const tensor *offsets,
                          int trans_w);
void ops_check_moe_matmul_dw(const char *be, const tensor *dw, const tensor *dy, const tensor *x,
                             const tensor *offsets);
void ops_check_swiglu_fwd(const char *be, const tensor *h, const tensor *gu);
void ops_check_swiglu_bwd(const char *be, const tensor *dgu, const tensor *dh, const tensor *gu);

/* rope_fwd / rope_bwd (op names the direction): x [N, R] or [N, H, R] with R
 * even, pos I32 [N], cos and sin [P, R/2]. */
void ops_check_rope(const char *be, const char *op, const tensor *x, const tensor *pos, const tensor *cos,
                    const tensor *sin);

void ops_check_gather_rows(const char *be, const tensor *dst, const tensor *src, const tensor *idx);
void ops_check_rmsnorm_fwd(const char *be, const tensor *y, const tensor *rstd, const tensor *x, const tensor *w);
void ops_check_rmsnorm_bwd(const char *be, const tensor *dx, const tensor *dw, const tensor *dy, const tensor *x,
                           const tensor *w, const tensor *rstd);
/* y [N, D] F32 (or the table's dtype on the CUDA backend), table [V, D]
 * F32 or BF16 (a stored weight, widened into an F32 y), ids I32 [N]. */
void ops_check_embedding_fwd(const char *be, const tensor *y, const tensor *table, const tensor *ids);
void ops_check_embedding_bwd(const char *be, const tensor *dtable, const tensor *dy, const tensor *ids);

#ifdef __cplusplus
}
#endif

#endif
