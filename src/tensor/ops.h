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
     * C is not propagated); beta = 1 accumulates. Accumulation in f32.
     * B may be a stored weight of a frozen model (ops_need_weight): BF16, or
     * F8_E4M3 with its block scales (tensor.qb), whatever A's dtype; the op
     * computes with B's dequantised values in A's dtype (the CPU widens each
     * panel to f32 while packing it: bit for bit the product with an f32
     * copy of the dequantised B; CUDA dequantises into a scratch copy in
     * A's dtype for cuBLAS). */
    void (*matmul)(tensor *c, const tensor *a, const tensor *b, int trans_a, int trans_b,
                   float alpha, float beta);

    /* Elementwise over same-shape tensors (y may alias an input). */
    void (*add)(tensor *y, const tensor *a, const tensor *b); /* y = a + b */
    void (*mul)(tensor *y, const tensor *a, const tensor *b); /* y = a * b */
    void (*scale)(tensor *y, const tensor *x, float s);       /* y = s * x */
    void (*axpy)(tensor *y, const tensor *x, float a);        /* y += a * x (accumulates) */

    /* dst = src converted to dst's dtype (same shape). */
    void (*convert)(tensor *dst, const tensor *src);

    /* ---- model ops (DeepSeek-V3; spec = shared/docs/deepseek-v3-spec.md) ----
     * Shapes: N tokens (packed over sequences), D features. Activations and
     * weights are F32 on the CPU backend; index tensors are I32. bf16 mode
     * (docs/cuda.md): the CUDA backend also takes BF16 for the operands
     * marked "F32 or BF16" below (loaded as f32, computed in f32, a BF16
     * output rounded once); the CPU backend dies on a BF16 tensor. A 2-D
     * operand may be a row-strided view (stride[1] == 1, stride[0] >= cols),
     * e.g. the c_kv / k_pe halves of the kv_a_proj output. */

    /* y[dst rows] = src rows: dst [M, D], src [N, D], idx I32 [M] in [0, N).
     * dst and src: F32 or BF16, one dtype. */
    void (*gather_rows)(tensor *dst, const tensor *src, const tensor *idx);

    /* RMSNorm (spec §3.1) over the last dim, in f32:
     *   rstd[n] = 1 / sqrt(mean_j x[n,j]^2 + eps),  y = w * x * rstd.
     * x, y [N, D] (y may alias x); w [D]; rstd [N] written (saved for the
     * backward) or NULL. y: F32 or BF16 (x, w, rstd F32). */
    void (*rmsnorm_fwd)(tensor *y, tensor *rstd, const tensor *x, const tensor *w, float eps);
    /* dx = rstd (dy*w) - x rstd^3 mean_j(dy_j w_j x_j) (written, or added
     * when accumulate_dx); dw += sum_n dy * x * rstd (accumulates; NULL:
     * no weight gradient). */
    void (*rmsnorm_bwd)(tensor *dx, tensor *dw, const tensor *dy, const tensor *x, const tensor *w,
                        const tensor *rstd, int accumulate_dx);

    /* Rotary embedding in place (spec §3.2) on x [N, R] or [N, H, R] (a
     * strided view: the rope slice of q or of kv_a), token n at position
     * pos[n] (I32 [N]); every head uses its token's angles. cos, sin
     * [P, R/2]: row p holds cos/sin(p * inv_freq_i) times the YaRN
     * attention factor. interleaved: pairs (2i, 2i+1), the DeepSeek
     * checkpoint layout (HF rope_interleave=true); else pairs (i, i+R/2).
     * The output keeps the input's layout. _bwd rotates by -angle: the
     * gradient of _fwd (an orthogonal map per pair). */
    void (*rope_fwd)(tensor *x, const tensor *pos, const tensor *cos, const tensor *sin,
                     int interleaved);
    void (*rope_bwd)(tensor *dx, const tensor *pos, const tensor *cos, const tensor *sin,
                     int interleaved);

    /* MLA causal attention, training / prefill form (spec §3.5), over S
     * packed sequences: token t of sequence s (cu[s] <= t < cu[s+1]) sees
     * tokens cu[s]..t. Per head h:
     *   K_h[u] = [kv[u,h,:dn] ; kpe[u]],  V_h[u] = kv[u,h,dn:],
     *   o[t,h] = sum_u softmax_u(scale * q[t,h] . K_h[u]) V_h[u].
     * q [N, H, dn+dr] (rope applied), kv [N, H, dn+dv] (kv_b_proj output),
     * kpe [N, dr] (roped, shared by the heads), cu_seqlens I32 [S+1].
     * o [N, H, dv] written; lse [N, H] (logsumexp of the scaled scores,
     * for the backward) written or NULL. */
    void (*mla_attn_fwd)(tensor *o, tensor *lse, const tensor *q, const tensor *kv,
                         const tensor *kpe, const tensor *cu_seqlens, float scale);
    /* Gradients of mla_attn_fwd, written (not accumulated): dq [N,H,dn+dr],
     * dkv [N,H,dn+dv], dkpe [N,dr] (summed over the heads: k_pe is shared). */
    void (*mla_attn_bwd)(tensor *dq, tensor *dkv, tensor *dkpe, const tensor *dout,
                         const tensor *q, const tensor *kv, const tensor *kpe, const tensor *o,
                         const tensor *lse, const tensor *cu_seqlens, float scale);

    /* Paged latent KV cache of one layer (PagedAttention's layout): a pool
     * of pages cache [NP, PS, dc+dr], each page PS consecutive positions of
     * one sequence, per position the normalised c_kv (dc) then the roped
     * k_pe (dr). Sequence s's position p lives in page table[s, p / PS] at
     * row p % PS: table I32 [S, MB] is the block table, one row per
     * sequence, MB pages (MB * PS positions) at most. Several rows may name
     * one page (a prompt's pages shared by its samples); the caller keeps
     * writes off shared pages. Unused table entries are ignored (any
     * value); an entry that is read must lie in [0, NP).
     * mla_cache_write: token n (sequence seq[n], position pos[n]) writes
     * its row from ckv [N, dc] and kpe [N, dr]; seq, pos I32 [N]. */
    void (*mla_cache_write)(tensor *cache, const tensor *ckv, const tensor *kpe, const tensor *table,
                            const tensor *seq, const tensor *pos);
    /* Absorbed MLA decode (spec §3.6): query b attends positions
     * 0..len[b]-1 of sequence seq[b] through its block table row:
     *   score[h,u] = scale * (q_lat[b,h] . c_u + q_pe[b,h] . pe_u),
     *   o_lat[b,h] = sum_u softmax_u(score[h,u]) c_u,
     * positions in ascending order whatever the pages (the result does not
     * depend on the page size or on which pages hold the rows).
     * q_lat [B, H, dc] (= W_UK^T q_nope), q_pe [B, H, dr] (roped),
     * cache and table as above, seq, len I32 [B] (1 <= len <= MB * PS);
     * o_lat [B, H, dc] written. */
    void (*mla_decode)(tensor *o_lat, const tensor *q_lat, const tensor *q_pe, const tensor *cache,
                       const tensor *table, const tensor *seq, const tensor *len, float scale);

    /* DeepSeekMoE router (spec §3.8), f32: s = sigmoid(z); selection on
     * s + bias: n_group groups of E/n_group consecutive experts scored by the
     * sum of their top-2, the best topk_group groups kept (others -inf), then
     * the top K experts; weights w = s[idx] (unbiased), divided by
     * (sum + 1e-20) when norm, times routed_scale. Ties go to the lower id.
     * z [N, E] router logits, bias [E] or NULL; idx I32 [N, K] and
     * w [N, K] written. */
    void (*moe_route)(tensor *idx, tensor *w, const tensor *z, const tensor *bias, int n_group,
                      int topk_group, int norm, float routed_scale);
    /* dz [N, E] written from dw = dL/dw [N, K]: the selection is constant,
     * the bias gets nothing; zero for experts not chosen. */
    void (*moe_route_bwd)(tensor *dz, const tensor *dw, const tensor *z, const tensor *idx, int norm,
                          float routed_scale);
    /* Group the N*K (token, choice) pairs by expert, tokens ascending
     * within an expert: offsets I32 [E+1] (expert e owns rows
     * offsets[e]..offsets[e+1]-1), row_tok I32 [N*K] (token of each row),
     * inv I32 [N*K] (row of pair (n, k) at n*K+k). */
    void (*moe_plan)(tensor *offsets, tensor *row_tok, tensor *inv, const tensor *idx, int n_experts);
    /* DeepSeek-V3's complementary sequence-wise balance loss of one MoE
     * layer (tech report eq. 17-20) over packed sequences cu I32 [S+1]:
     * for sequence s of T tokens loss[s] = sum_i f_i P_i, with
     * f_i = E / (K T) #{(t, k): idx[t, k] = i} and
     * P_i = 1/T sum_t s_ti / sum_j s_tj, s = sigmoid(z) (the scores
     * without the bias); 0 for an empty sequence. z [N, E] f32, idx I32
     * [N, K] (the routing's choice; an entry outside [0, E) counts for no
     * expert), loss [S] f32 written. Sums in double, tokens in order. */
    void (*moe_aux_fwd)(tensor *loss, const tensor *z, const tensor *idx, const tensor *cu);
    /* Its gradient times coef for every sequence, the choice constant,
     * added to dz [N, E]: with c_i = f_i / T and S_t = sum_j s_tj,
     * dz_ti += coef s_ti (1 - s_ti) (c_i - sum_j c_j s_tj / S_t) / S_t. */
    void (*moe_aux_bwd)(tensor *dz, const tensor *z, const tensor *idx, const tensor *cu, float coef);
    /* y[n] += sum_k w[n,k] * ye[inv[n*K+k]] (accumulates; w NULL means 1,
     * which makes it the backward of gather_rows by row_tok).
     * y [N, D], ye [N*K, D], w [N, K], inv I32 [N*K]. */
    void (*moe_combine)(tensor *y, const tensor *ye, const tensor *w, const tensor *inv);
    /* Backward of moe_combine (written): dye[inv[n*K+k]] = w[n,k] dy[n],
     * dw[n,k] = dy[n] . ye[inv[n*K+k]]. */
    void (*moe_combine_bwd)(tensor *dye, tensor *dw, const tensor *dy, const tensor *ye,
                            const tensor *w, const tensor *inv);
    /* The routed experts' GEMM over rows grouped by expert (moe_plan's
     * offsets, on the device): for every expert e and row r in
     * [offsets[e], offsets[e+1]):
     *   y[r] = alpha * x[r] @ op(w[e]) + beta * y[r]
     * x [R, K], y [R, N]; w [E, N, K] with trans_w (y = x w[e]^T, the
     * nn.Linear layout) or [E, K, N] without (x and w: F32 or BF16, one
     * dtype, or w a stored BF16 / block-scaled F8_E4M3 weight as for
     * matmul; y F32); offsets I32 [E+1] from 0 to R,
     * non-decreasing. One call for all experts: no host loop, no
     * synchronisation needed by the caller. beta = 0 overwrites. */
    void (*moe_matmul)(tensor *y, const tensor *x, const tensor *w, const tensor *offsets, int trans_w,
                       float alpha, float beta);
    /* Its weight gradient: dw[e] += alpha * dy[rows of e]^T x[rows of e]
     * (accumulates). dw [E, N, K] F32, dy [R, N], x [R, K] (F32 or BF16, one
     * dtype), offsets as above. */
    void (*moe_matmul_dw)(tensor *dw, const tensor *dy, const tensor *x, const tensor *offsets, float alpha);

    /* SwiGLU (spec §3.7): gu [N, 2I] = [gate | up] (x @ [Wg; Wu]^T),
     * h [N, I] = silu(gate) * up (h: F32 or BF16). _bwd writes dgu [N, 2I]. */
    void (*swiglu_fwd)(tensor *h, const tensor *gu);
    void (*swiglu_bwd)(tensor *dgu, const tensor *dh, const tensor *gu);

    /* y [N, D] = table[ids] (table [V, D], ids I32 [N]); _bwd:
     * dtable[ids[n]] += dy[n] (accumulates). The forward's table may be a
     * stored BF16 weight with an F32 y (rows widened). */
    void (*embedding_fwd)(tensor *y, const tensor *table, const tensor *ids);
    void (*embedding_bwd)(tensor *dtable, const tensor *dy, const tensor *ids);

    /* LM head + log-softmax in vocabulary chunks, never [N, V] logits:
     * z = scale * x @ w^T (scale = 1/temperature), p = softmax(z),
     * logp[n] = log p[target[n]] (0 where target < 0), ent[n] = -sum p log p,
     * lse[n] = logsumexp(z) (saved for the backward).
     * x [N, D], w [V, D] (F32 or BF16, one dtype, or w a stored weight:
     * ops_need_weight), target I32 [N]; ws [R, C]
     * (F32) is workspace: R rows by C vocabulary entries per block. */
    void (*lmhead_fwd)(tensor *logp, tensor *ent, tensor *lse, const tensor *x, const tensor *w,
                       const tensor *target, float scale, tensor *ws);
    /* dz_v = g_logp (1[v=target] - p_v) + g_ent (-p_v (log p_v + H)), then
     * dx = scale dz @ w (written), dw += scale dz^T x (accumulates; dx, dw
     * F32; with BF16 x and w, dz is rounded to bf16 for the two products).
     * dw NULL: a frozen head, dx only.
     * g_logp, g_ent [N] (dL/dlogp, dL/dH); lse, ent from _fwd. */
    void (*lmhead_bwd)(tensor *dx, tensor *dw, const tensor *g_logp, const tensor *g_ent,
                       const tensor *x, const tensor *w, const tensor *target, const tensor *lse,
                       const tensor *ent, float scale, tensor *ws);

    /* One token per row of logits [B, V]. temperature <= 0: argmax (lowest
     * id on ties). Else p = softmax(logits / T), restricted to the top_k
     * largest (0: all; ties at the k-th value kept), renormalised, then to
     * the nucleus: the smallest set of most probable tokens whose mass
     * reaches top_p (1: all; ties broken by lower id), then to the tokens
     * with p >= min_p * max p (0: all) (Hugging Face's order: top-k,
     * top-p, min-p); the token is found by inverse CDF with the uniform
     * u[b] in [0, 1) over that set in ascending id order.
     * ids I32 [B] written; logp [B] = log softmax(logits / T)[id] over the
     * whole vocabulary (T = 1 when greedy), or NULL. */
    void (*sample)(tensor *ids, tensor *logp, const tensor *logits, const tensor *u,
                   float temperature, int top_k, float top_p, float min_p);
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

    /* ---- graphs (NULL where the backend has none: the CPU backend; the
     * CUDA backend with GRPO_CUDA_GRAPHS=0) ----
     * graph_capture calls fn(arg) with the device recording instead of
     * executing: every op fn issues is recorded in order with its
     * arguments, device pointers included, and nothing runs. fn must not
     * synchronise or cross the host boundary (upload, download, sync,
     * sumsq die): its inputs sit in device buffers filled beforehand, and
     * a replay reads whatever those buffers hold then. Returns the graph,
     * or NULL with the reason in base_err_msg() (e.g. a scratch buffer grew
     * during the capture: run fn once before capturing).
     * graph_launch replays the graph (asynchronous, like any op) and
     * returns 0, or 1 without running anything when the graph is stale (the
     * backend's scratch buffers moved since the capture): free it and
     * capture again. graph_free frees one (NULL is a no-op). */
    void *(*graph_capture)(void (*fn)(void *arg), void *arg);
    int (*graph_launch)(void *graph);
    void (*graph_free)(void *graph);
};

/* The CPU backend: always present. */
const struct ops *ops_cpu(void);
/* The CPU backend's device bytes: allocated now (alloc minus free), and the
 * most allocated at once since the process started or the last
 * ops_cpu_reset_peak (which sets the peak to what is allocated now);
 * ops_cpu_peak_allocated_all: the most since the process started (never
 * reset). */
size_t ops_cpu_allocated(void);
size_t ops_cpu_peak_allocated(void);
size_t ops_cpu_peak_allocated_all(void);
void ops_cpu_reset_peak(void);
/* The CUDA backend, or NULL when grpo was built without CUDA or no GPU is
 * usable (the reason is in base_err_msg()). In a CUDA build the kernels
 * and the CUDA libraries are the module grpo-cuda.so, loaded by the first
 * call (src/tensor/ops_cuda_load.c): a process that never asks for the
 * GPU never maps them. */
const struct ops *ops_cuda(void);
/* A symbol the loaded CUDA module exports besides its op table (src/dist
 * takes its NCCL table, cuda_dist_nccl, from it), after ops_cuda()
 * succeeded; NULL with a message otherwise. */
void *ops_cuda_module_symbol(const char *name);
/* By name: "cpu", "cuda", or "auto" (cuda when usable, else cpu), or a name
 * given to ops_register. NULL and a message for an unknown or unusable
 * device. */
const struct ops *ops_by_name(const char *name);
/* Make ops_by_name accept `name` (copied; up to 4 names) for backend o:
 * tests register the emulated CUDA backend (tests/cuda) as "cuda-emu" to
 * drive whole pipelines through it. Not thread-safe: call at start-up. */
void ops_register(const char *name, const struct ops *o);

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
