/*
 * ops: the op table. Model code (forward, backward, decode) and the trainer
 * are written once against `struct ops`; each backend fills one table:
 * the CPU backend (src/tensor/cpu/, float32, the reference that reads like
 * the spec) and the CUDA backend (kernels/, bf16/f32). Every op of the CUDA
 * table has a parity case in tests/parity.c that compares it with the CPU
 * op on fresh random inputs.
 *
 * Conventions for every op:
 *   - Arguments are tensor descriptors whose data live on the table's device.
 *   - The last dimension has stride 1; other strides may be larger (views).
 *   - An op overwrites its output unless its comment says it accumulates.
 *   - Shapes are checked; a mismatch is a programming error and dies with
 *     both shapes named.
 */
#ifndef GRPO_OPS_H
#define GRPO_OPS_H

#include "tensor/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Hyper-parameters of one AdamW update. Per element, in float32 and in
 * torch's order (torch/optim/adamw.py, single-tensor path):
 *   g  = grad_scale * grad             (global-norm clipping folded in)
 *   p  = p * (1 - lr * weight_decay)
 *   m  = m + (1 - beta1) * (g - m)     (lerp)
 *   v  = v * beta2 + (1 - beta2) * g * g
 *   p  = p - (lr / (1 - beta1^step)) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
 * `step` is the 1-based count of updates including this one. Scalars
 * derived from the hyper-parameters (1 - beta1, the bias corrections,
 * lr / bc1) are computed in double and rounded to float once, as torch's
 * float32 kernels receive Python floats. */
typedef struct ops_adamw_args {
    double lr, beta1, beta2, eps, weight_decay; /* Python floats in torch */
    float grad_scale;                           /* a float32 tensor in torch */
    int64_t step;
} ops_adamw_args;

struct ops {
    const char *name;     /* "cpu", "cuda" */
    tensor_device device;

    /* ---- memory (device side) ---- */
    void *(*alloc)(size_t bytes); /* zero-filled; dies when out of memory */
    void (*free)(void *p);
    void (*upload)(void *dst, const void *host_src, size_t bytes);
    void (*download)(void *host_dst, const void *src, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes); /* device to device */
    void (*zero)(void *p, size_t bytes);
    void (*sync)(void);

    /* ---- compute ---- */

    /* C = alpha * op(A) @ op(B) + beta * C.
     *   op(A) is [M, K]: A is [M, K], or [K, M] when trans_a.
     *   op(B) is [K, N]: B is [K, N], or [N, K] when trans_b (an nn.Linear
     *   weight [out, in] gives y = x W^T with trans_b = 1).
     *   C is [M, N].
     * Batched when any operand is 3-D: [Bt, rows, cols]; a 2-D operand or a
     * batch of 1 is broadcast over the batch. beta = 0 overwrites C (NaN in
     * C is not propagated); beta = 1 accumulates. Accumulation in f32. */
    void (*matmul)(tensor *c, const tensor *a, const tensor *b, int trans_a, int trans_b,
                   float alpha, float beta);

    /* Elementwise over same-shape tensors (y may alias an input). */
    void (*add)(tensor *y, const tensor *a, const tensor *b); /* y = a + b */
    void (*mul)(tensor *y, const tensor *a, const tensor *b); /* y = a * b */
    void (*scale)(tensor *y, const tensor *x, float s);       /* y = s * x */
    void (*axpy)(tensor *y, const tensor *x, float a);        /* y += a * x (accumulates) */

    /* dst = src converted to dst's dtype (same shape). */
    void (*convert)(tensor *dst, const tensor *src);

    /* ---- optimizer ---- */

    /* Sum of squares of a float32 tensor, accumulated in double and returned
     * to the host (a synchronising read). NaN or inf in x gives NaN or inf.
     * Deterministic: the same x gives the same bits whatever the thread
     * count. */
    double (*sumsq)(const tensor *x);
    /* One AdamW step (torch.optim.AdamW, decoupled weight decay), in place
     * over same-shape contiguous float32 tensors; see ops_adamw_args. */
    void (*adamw)(tensor *param, tensor *m, tensor *v, const tensor *grad,
                  const struct ops_adamw_args *a);
};

/* The CPU backend: always present. */
const struct ops *ops_cpu(void);
/* The CUDA backend, or NULL when grpo was built without CUDA or no GPU is
 * usable (the reason is in base_err_msg()). */
const struct ops *ops_cuda(void);
/* By name: "cpu", "cuda", or "auto" (cuda when usable, else cpu). NULL and
 * a message for an unknown or unusable device. */
const struct ops *ops_by_name(const char *name);

/* Shape checks shared by both backends (die naming both shapes). */
void ops_check_same_shape(const char *op, const tensor *a, const tensor *b);
/* Resolve matmul dimensions and batch; dies on mismatch. */
typedef struct {
    int64_t batch, m, n, k;
    int64_t a_bstride, b_bstride, c_bstride; /* 0 when broadcast */
    int64_t lda, ldb, ldc;                   /* row strides (elements) */
} ops_matmul_dims;
ops_matmul_dims ops_matmul_resolve(const tensor *c, const tensor *a, const tensor *b, int trans_a,
                                   int trans_b);

#ifdef __cplusplus
}
#endif

#endif
