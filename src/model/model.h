/*
 * model: DeepSeek-V3 (`model_type` deepseek_v3 / kimi_k2) as specified in
 * shared/docs/deepseek-v3-spec.md, written once against `struct ops`.
 *
 *   config     config.json parsing and validation (model_config_*)
 *   weights    the parameter arena: one allocation holding every tensor
 *              in f32, bound by Hugging Face names from any shard layout
 *              (model_load) or filled at random (model_init_random)
 *   training   forward over packed full sequences keeping what backward
 *              needs, per-token log p(next token) and entropy; explicit
 *              backward into a gradient arena with the parameters' layout
 *   inference  full-logits forward; prefill into a latent KV cache, then
 *              batched one-token decode steps in the absorbed MLA form
 *
 * Memory is planned up front: parameters, gradients, training activations
 * and the KV cache are one allocation each, sized from the config and the
 * run's limits; every tensor is a named view. No step allocates.
 * docs/model.md describes the contracts, the memory plan and the saved
 * activations.
 *
 * Errors: functions returning base_status report bad input (a bad config,
 * a missing tensor, a token id outside the vocabulary, a batch over the
 * planned limits) with a message naming the file, tensor or value; misuse
 * of the API (wrong shapes from code) dies.
 */
#ifndef GRPO_MODEL_H
#define GRPO_MODEL_H

#include <stdint.h>

#include "base/base.h"
#include "tensor/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Configuration (spec §1)                                                  */

#define MODEL_MAX_EOS 8

typedef struct model_config {
    char model_type[32];
    int64_t vocab_size, hidden_size, intermediate_size, moe_intermediate_size;
    int num_hidden_layers, num_attention_heads, num_key_value_heads;
    int n_shared_experts, n_routed_experts, num_experts_per_tok;
    float routed_scaling_factor;
    int n_group, topk_group, norm_topk_prob;
    int first_k_dense_replace, moe_layer_freq;
    int q_lora_rank; /* 0: no query compression (q_proj) */
    int kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim;
    float rms_norm_eps; /* input/post-attention/final norms; q_a/kv_a norms use 1e-6 */
    /* rope */
    double rope_theta;
    int rope_interleave; /* 1: pairs (2i, 2i+1) (DeepSeek checkpoints) */
    int rope_yarn;       /* 0: plain rope */
    double yarn_factor, yarn_beta_fast, yarn_beta_slow, yarn_mscale, yarn_mscale_all_dim;
    double yarn_attention_factor; /* explicit `attention_factor`, or 0 */
    int64_t yarn_original_max_position_embeddings;
    int yarn_truncate;
    int64_t max_position_embeddings;
    int tie_word_embeddings;
    int num_nextn_predict_layers; /* MTP modules declared by the config */
    int fp8;                      /* quantization_config: fp8 e4m3, 128x128 blocks */
    int64_t bos_token_id, pad_token_id; /* -1 when absent */
    int n_eos;
    int64_t eos_token_id[MODEL_MAX_EOS];
    /* derived */
    int qk_head_dim;         /* nope + rope */
    double softmax_scale;    /* qk_head_dim^-0.5 * mscale(factor, mscale_all_dim)^2 (spec §3.4) */
    double attention_factor; /* YaRN cos/sin amplitude (1 for DeepSeek-V3) */
} model_config;

/* Parse and validate a config.json object; `what` names it in messages.
 * Missing keys take the Hugging Face DeepseekV3Config defaults. Errors:
 * BASE_ERR_UNSUPPORTED (model_type, scoring_func, topk_method, hidden_act,
 * rope type, quantization, attention_bias), BASE_ERR_INVALID (experts not
 * divisible by groups, a size outside its range (docs/model.md), a
 * non-finite number, an eos_token_id outside the vocabulary, more than
 * MODEL_MAX_PARAMS parameters). Every message names `what` and the key. */
base_status model_config_parse(const cJSON *json, const char *what, model_config *cfg);
/* DIR/config.json (or a path to a .json file). */
base_status model_config_load(const char *dir, model_config *cfg);
/* Parameters of the Hugging Face layout a config describes (spec §2): the
 * main model, and in *mtp (may be NULL) its num_nextn_predict_layers MTP
 * modules (each with its embedding and head copies). Saturates at
 * INT64_MAX. model_config_parse refuses a config whose total exceeds
 * MODEL_MAX_PARAMS, before anything is allocated. */
int64_t model_config_param_count(const model_config *cfg, int64_t *mtp);
#define MODEL_MAX_PARAMS ((int64_t)1 << 40)
/* MoE layer? (layer >= first_k_dense_replace and layer % moe_layer_freq == 0) */
int model_layer_is_moe(const model_config *cfg, int layer);
/* Rope inverse frequencies [qk_rope_head_dim / 2] in f32 as HF computes them
 * (YaRN ramp between the correction range of spec §3.3). */
void model_rope_inv_freq(const model_config *cfg, float *inv_freq);

/* ------------------------------------------------------------------------ */
/* Parameters                                                               */

typedef struct model model;

/* One Hugging Face tensor of the parameter arena. */
typedef struct {
    char name[128]; /* e.g. "model.layers.3.mlp.experts.7.up_proj.weight" */
    int64_t offset; /* elements from the start of the arena */
    int64_t numel;
    int ndim;
    int64_t shape[3];
    int trainable; /* 0 for e_score_correction_bias: no gradient (spec §3.11) */
    int mtp;       /* part of an MTP module (not used by the main forward) */
} model_param;

/* Compute precision (docs/cuda.md, "bf16 mode"; docs/model.md, "Frozen
 * models"). MODEL_F32: every tensor f32 (the CPU reference). MODEL_BF16:
 * on the CUDA backend the GEMMs take bf16 operands (a bf16 copy of the
 * weights, refreshed from the f32 master weights by model_sync_compute,
 * and bf16 GEMM inputs) with f32 accumulation and f32 outputs, and the
 * latent KV cache in bf16 (rows rounded once when written); the residual
 * stream, norms statistics, router, attention, LM-head statistics,
 * logprobs, entropy, gradients and the optimizer stay f32. MODEL_FP8
 * (frozen models only): the GEMM weights in e4m3 with 128 x 128 block
 * scales (DeepSeek-V3's checkpoint format), everything else as MODEL_BF16.
 * On the CPU backend bf16 and fp8 are for frozen models: the weights are
 * stored so and widened to f32 while the GEMM packs them, so activations,
 * cache and arithmetic stay f32. */
typedef enum { MODEL_F32 = 0, MODEL_BF16 = 1, MODEL_FP8 = 2 } model_precision;

/* "f32" / "bf16" / "fp8" (NULL: f32). BASE_ERR_INVALID naming the value otherwise. */
base_status model_precision_parse(const char *s, model_precision *out);
const char *model_precision_name(model_precision p);

/* Expert parallelism (issue 15; docs/model.md "Expert parallelism").
 * An expert-parallel (EP) group of `size` ranks splits the routed experts
 * of every MoE layer (MTP layers included) evenly: the rank of index
 * `rank` holds experts [rank * E / size, (rank + 1) * E / size) (E =
 * n_routed_experts; size divides E). Its parameter arena holds only those
 * (weights, and so gradients and optimizer state), named with their GLOBAL
 * expert index (model.layers.L.mlp.experts.<global>.*); everything else is
 * held whole on every rank. The model does not know MPI: the caller fills
 * the exchange functions (src/dist calls over the EP group) and passes the
 * struct in model_load_opts.ep (it must outlive the model). Each returns
 * BASE_OK, or an error that the model's call passes back (the model's
 * state is then undefined until the next forward). Every rank of the group
 * must make the same sequence of model calls that exchange: every forward,
 * backward, model_forward_logits, prefill and decode step (with zero rows
 * when it has nothing to run: model_decode with n = 0), so that each MoE
 * layer's exchanges pair up. Buffers are host memory on the CPU backend
 * and device memory (the backend's dist_comm_for) otherwise; counts are
 * host arrays. */
typedef struct model_ep {
    int size; /* ranks in the EP group (1: no expert parallelism) */
    int rank; /* this rank's index in the group, 0 .. size - 1 */
    void *ctx; /* passed to the functions */
    /* recv[p * n + i] = peer p's send[rank * n + i] (i < n): n int64
     * counts to every peer of the group (this rank included), in peer order */
    base_status (*alltoall_counts)(void *ctx, const int64_t *send, int64_t *recv, int n);
    /* Rows: send holds send_bytes[p] bytes for peer p back to back in peer
     * order; recv receives recv_bytes[p] bytes from peer p back to back
     * (send_bytes[q] on this rank = recv_bytes[rank] on peer q). */
    base_status (*alltoallv)(void *ctx, const void *send, const int64_t *send_bytes, void *recv,
                             const int64_t *recv_bytes);
    /* *any = 1 when some rank of the group passes local != 0, else 0: the
     * decode lockstep agreement (the rollout engine keeps stepping, with
     * zero-row steps, until no rank of the group is active). The model
     * itself does not call it. */
    base_status (*any_active)(void *ctx, int local, int *any);
} model_ep;

/* Experts held by EP index `rank` of a group of ep_size ranks: [*e0, *e1). */
void model_ep_local_experts(const model_config *cfg, int ep_size, int rank, int *e0, int *e1);
/* The EP index (0 .. ep_size - 1) holding the tensor named `name` (global
 * expert index, either HF layout: model.layers.L.mlp.experts.<e>.* or
 * LoRA's ...mlp.experts.<e>....), or -1 when the tensor is not a routed
 * expert's (held by every rank). */
int model_ep_owner(const model_config *cfg, int ep_size, const char *name);
/* Check an EP setting against a config: size >= 1, size divides
 * n_routed_experts (or the model has no MoE layer), 0 <= rank < size, the
 * exchange functions set when size > 1. BASE_ERR_INVALID naming
 * expert_parallel_size and the value otherwise. */
base_status model_ep_check(const model_config *cfg, const model_ep *ep);
/* The model's EP setting (NULL when loaded without one, i.e. size 1). */
const model_ep *model_get_ep(const model *m);

typedef struct {
    int64_t max_context; /* rope table length; 0: max_position_embeddings */
    int skip_mtp;        /* do not load MTP layers even when present */
    model_precision precision; /* MODEL_BF16 / MODEL_FP8: see model_precision */
    /* A frozen model (sampling, eval, the GRPO reference, a distillation
     * teacher, a LoRA base) holds compute weights only: no f32 master copy.
     * f32: the f32 weights; bf16: one arena of bf16 GEMM weights, bf16
     * embedding and LM head, f32 norms, router and routing bias (2 bytes
     * per parameter); fp8: the same with the GEMM weights in e4m3 plus one
     * f32 scale per 128 x 128 block (1 byte per parameter and 1/4096 of
     * scales). FP8 checkpoint weights are kept as stored (no dequantise /
     * requantise); f32 or bf16 ones are quantised on load (amax / 448 per
     * block, as DeepGEMM). MTP layers are not loaded. model_params() is
     * NULL for a frozen bf16/fp8 model, model_backward refuses it unless it
     * is a LoRA base (an attached adapter, grads NULL: dx through the stored
     * weights, the adapter's gradients only), and model_sync_compute only
     * refreshes an attached adapter's bf16 copy. */
    int frozen;
    /* Expert parallelism (model_ep above): NULL or size 1 holds every
     * expert. With size > 1 the arena, model_params(), the parameter list,
     * model_weights_to_host and the gradient arena cover this rank's
     * experts only; model_load reads only their tensors; model_init_random
     * gives each held tensor the values the whole model (same seed) gives
     * it; model_memory_plan plans the local arena. LoRA on routed experts
     * (model_lora_config.routed_experts) is refused with size > 1. */
    const model_ep *ep;
    /* ZeRO 3's sharded load (docs/distributed.md): a trainable model
     * created without its arena, released from the start
     * (model_arena_released): config, parameter table, layout and rope
     * tables; model_load checks every tensor's presence and shape (the MTP
     * layers found as it finds them) but reads no weight, and no f32 arena
     * nor bf16 copy is allocated. The caller fills its own range of the
     * arena (the trainer: run_ckpt_read_range, or model_init_random_range),
     * sets the unit hook (model_unit_hook_set) and binds units as after
     * model_arena_release. Refused for frozen models. With EP > 1 the arena
     * laid out is the EP index's (its experts only, global names). */
    int no_arena;
} model_load_opts;

/* Load DIR (config.json + safetensors in any shard layout; F32, BF16 or FP8
 * blocks, dequantised to f32, or kept / converted to the frozen model's
 * storage: model_load_opts.frozen). MTP layer tensors are loaded when the
 * checkpoint has them (not for frozen models). Errors name the missing
 * tensor or both shapes. */
base_status model_load(const char *dir, const struct ops *ops, const model_load_opts *opts,
                       model **out);
/* A model with random weights N(0, std^2) (norm weights 1 + N(0, std^2),
 * routing bias N(0, std^2)), for tests and benchmarks; deterministic in seed. */
base_status model_init_random(const model_config *cfg, const struct ops *ops, uint64_t seed,
                              float std, const model_load_opts *opts, model **out);
void model_free(model *m);
/* The values model_init_random (same seed and std) gives arena elements
 * [lo, hi) of m's layout, into host[hi - lo] (elements of no parameter:
 * 0): a sharded load's random weights (model_load_opts.no_arena). */
void model_init_random_range(const model *m, uint64_t seed, float std, int64_t lo, int64_t hi, float *host);

const model_config *model_cfg(const model *m);
const struct ops *model_ops(const model *m);
int model_nparams(const model *m);
const model_param *model_param_at(const model *m, int i);
const model_param *model_param_find(const model *m, const char *name); /* NULL if absent */
/* The parameter arena (device memory), model_numel(m) f32 values; NULL for
 * a frozen bf16/fp8 model (use model_weights_to_host / _from_host). */
float *model_params(const model *m);
int64_t model_numel(const model *m);
int model_has_mtp(const model *m); /* MTP modules loaded */
model_precision model_get_precision(const model *m);
/* bf16 mode: refresh the bf16 compute weights from the f32 master weights
 * (one convert over the arena). Call after anything writes
 * model_params(m) (an optimizer step, a parameter copy); a no-op in f32
 * mode. model_load and model_init_random call it. */
void model_sync_compute(model *m);
/* Bytes of the low-precision compute-weight arena: the bf16 copy in bf16
 * mode, a frozen bf16/fp8 model's weights (0 in f32 mode). */
size_t model_compute_bytes(const model *m);
int model_is_frozen(const model *m);

/* Every parameter as f32 on the host, at its model_param offset
 * (host [model_numel(m)]): the master weights, or a frozen model's stored
 * weights widened (bf16 exactly, fp8 dequantised). */
void model_weights_to_host(const model *m, float *host);
/* Arena elements [off, off + n) as f32 into host[n] (dies outside the
 * arena): the master weights downloaded, or a frozen model's stored weights
 * widened piece by piece (bf16 exactly, fp8 dequantised) through a bounce
 * buffer of at most 256 KiB; elements of no parameter (gaps) are 0. What
 * the streaming checkpoint writer downloads tensor piece by tensor piece. */
void model_weights_range_to_host(const model *m, int64_t off, int64_t n, float *host);
/* Set every parameter from f32 host values (model_param layout): the
 * master weights (then model_sync_compute), or a frozen model's storage
 * (rounded to bf16, or quantised to fp8 blocks). */
void model_weights_from_host(model *m, const float *host);
/* Parameter i (model_param_at order) from f32 host values x[numel], as
 * model_weights_from_host sets it, without the final model_sync_compute:
 * call that after the last parameter (loading one tensor at a time). */
void model_param_from_host(model *m, int i, const float *x);
/* dst's weights = src's, parameter by parameter by name (src may hold more:
 * the MTP layers of a policy, which a frozen model leaves out; a name dst
 * has and src lacks, or another shape, is BASE_ERR_INVALID), in dst's
 * storage: device copies when both hold f32, else converted through the
 * host. The GRPO reference model starts so from the policy. */
base_status model_copy_weights(model *dst, const model *src);
/* TR-DPO's reference refresh (parameters matched as above; dies when they
 * do not match): dst = alpha * src + (1 - alpha) * dst, in
 * f32 (dst scaled, then src added: torch's two ops), stored in dst's
 * storage (a frozen bf16 dst rounds the result once). */
void model_mix_weights(model *dst, const model *src, float alpha);

/* Bytes of a model's weights by role: planned from a config
 * (model_memory_plan) or what a model allocated (model_memory), from the
 * same sizing code (model_load allocates what the plan says). */
typedef struct {
    size_t master;  /* f32 weights: a trainable model's master copy, a frozen f32 model's weights */
    size_t compute; /* the bf16 copy of bf16 mode, or a frozen bf16/fp8 model's weight arena */
    size_t scales;  /* fp8: the f32 block scales (inside no other role) */
    size_t rope;    /* the rope cos / sin tables */
    int64_t params; /* parameters held (MTP layers included when loaded) */
    /* ZeRO 2's gradient windows and the units' elements together
     * (model_grad_windows; 0 for a frozen model) */
    int64_t grad_window, grad_window_emb, grad_units;
} model_mem;
size_t model_mem_total(const model_mem *mm);
/* Plan for cfg loaded with opts on a backend (TENSOR_CPU or TENSOR_CUDA):
 * MTP layers counted when the model would load them (not frozen, not
 * skip_mtp; with their embedding and head copies, as DeepSeek-V3 ships
 * them). Errors: the precision checks of model_load. */
base_status model_memory_plan(const model_config *cfg, const model_load_opts *opts, tensor_device dev, model_mem *out);
void model_memory(const model *m, model_mem *out);

/* Gradient arena: same layout as the parameters, zero-filled device memory
 * (free with model_ops(m)->free). Backward accumulates into it. */
float *model_grads_new(const model *m);
void model_grads_zero(const model *m, float *grads);

/* ------------------------------------------------------------------------ */
/* Training forward / backward                                              */

typedef struct {
    int64_t max_tokens; /* tokens per batch, all sequences together */
    int max_seqs;       /* sequences per batch */
    int recompute;      /* keep each layer's input only; recompute it in backward */
    int no_adapter;     /* 1: the base alone even when a LoRA adapter is attached
                         * (the GRPO reference of a LoRA policy, as TRL with PEFT) */
} model_train_limits;

/* A batch of packed full sequences (positions restart at 0 in each; no
 * attention across sequences). Host arrays. */
typedef struct {
    int nseq;
    const int32_t *ids;        /* [cu_seqlens[nseq]] */
    const int32_t *cu_seqlens; /* [nseq + 1], cu[0] = 0, non-decreasing */
    const int32_t *targets;    /* [N] token to score at each position, -1 for
                                  none; NULL: the next token of the same
                                  sequence, -1 at each sequence's end */
    float logit_scale;         /* logits times this (1 / temperature); 0: 1 */
} model_batch;

typedef struct model_train model_train;

/* Plan and allocate the activation arena for these limits. */
base_status model_train_new(model *m, const model_train_limits *lim, model_train **out);
void model_train_free(model_train *tr);
/* Bytes of the activation arena for a config and limits (planning; the
 * f32 mode's plan). */
size_t model_train_bytes(const model_config *cfg, const model_train_limits *lim);
/* The device bytes model_train_new allocates for a config and limits with
 * a LoRA adapter of config lc attached (NULL: none), in a precision: the
 * planned arena (model_train_plan_bytes) and 64 bytes of slack. The
 * adapter's gradient arena, which model_train_new makes once, is not
 * counted (model_lora_param_bytes). */
struct model_lora_config;
size_t model_train_bytes_p(const model_config *cfg, const model_train_limits *lim,
                           const struct model_lora_config *lc, model_precision prec);
size_t model_train_plan_bytes(const model_config *cfg, const model_train_limits *lim,
                              const struct model_lora_config *lc, model_precision prec);
/* The same for a model loaded with expert parallelism of ep_size ranks
 * (1: as above): the expert side's buffers for the rows the group may send
 * (ep_size * max_tokens * min(K, E / ep_size) rows per MoE layer; every
 * rank of the group must use the same limits). */
size_t model_train_bytes_ep(const model_config *cfg, const model_train_limits *lim,
                            const struct model_lora_config *lc, model_precision prec, int ep_size);
size_t model_train_plan_bytes_ep(const model_config *cfg, const model_train_limits *lim,
                                 const struct model_lora_config *lc, model_precision prec, int ep_size);
/* Bytes of tr's activation arena (as planned for its model's precision). */
size_t model_train_arena_bytes(const model_train *tr);
/* on = 0: tr's forwards run the base alone (an attached adapter planned
 * into tr is skipped: the GRPO reference of a LoRA policy in the policy's
 * own arena, no second one); on = 1: the adapter again. model_backward
 * refuses a forward run with the adapter off. */
void model_train_set_adapter(model_train *tr, int on);

/* Forward a batch: per-token logp[t] = log p(target[t] | tokens <= t) (0
 * where target is -1) and ent[t] = entropy of the predictive distribution
 * at t, both under softmax(logit_scale * logits). Keeps what backward
 * needs. Errors: ids outside the vocabulary, a batch over the limits, a
 * sequence longer than the rope table. */
base_status model_forward(model_train *tr, const model_batch *b);
/* Results of the last forward (device tensors [N], valid until the next
 * forward) and a copy to host arrays (either may be NULL). */
const tensor *model_train_logp(const model_train *tr);
const tensor *model_train_entropy(const model_train *tr);
void model_train_download(const model_train *tr, float *logp, float *ent);
/* The routed experts' load of the last forward, added (+=) to the caller's
 * tallies (issue 15, docs/model.md "Expert load"): counts[l * E + i] +=
 * the tokens layer l sent to routed expert i (E = n_routed_experts, l over
 * num_hidden_layers; dense layers add nothing), from the forward's own
 * expert plan (moe_plan's offsets, copied aside per layer, so it holds with
 * recompute); *routed += N K per MoE layer (the (token, expert) pairs the
 * router chose, N tokens, K experts each) and *processed += the rows the
 * experts' grouped GEMMs ran over. No capacity limit drops a pair, so the
 * two are equal; a trainer reports routed - processed as dropped tokens.
 * One download of L (E + 1) integers; nothing is allocated. With expert
 * parallelism the counts are still per GLOBAL expert and cover this
 * rank's own tokens (its routing, before the dispatch): sum them over
 * every rank for the global load, as without EP. */
void model_train_expert_load(const model_train *tr, int64_t *counts, int64_t *routed, int64_t *processed);
/* DeepSeek-V3's complementary sequence-wise balance loss (tech report
 * §2.1.2; docs/model.md "Expert load"): coef != 0 makes the following
 * forwards compute, per MoE layer and sequence of the batch,
 * L_s = sum_i f_i P_i (f_i = E / (K T) times the tokens of the sequence
 * routed to expert i, P_i the sequence's mean of s_i / sum_j s_j, s the
 * sigmoid scores without the bias), and their backwards add the gradient
 * of coef * sum_(layers, sequences) L_s through the router's scores (the
 * top-k choice constant). 0 (the default): neither. */
void model_train_set_aux_coef(model_train *tr, float coef);
/* sum over MoE layers and sequences of the last forward's L_s (without
 * coef); 0 when that forward ran with coef 0. */
double model_train_aux_loss(const model_train *tr);

/* Backward of the last forward for per-token upstream gradients (host
 * arrays [N]): g_logp[t] = dL/dlogp[t], g_ent[t] = dL/dent[t] (NULL: 0).
 * At the LM head dz_v = g_logp (1[v=y] - p_v) + g_ent (-p_v (log p_v + H)).
 * Accumulates (+=) into grads (model_grads_new layout); grads NULL: the
 * base weights are frozen and get no gradient (no weight-gradient GEMM
 * runs). A pass planned with the model's LoRA adapter also accumulates
 * into the adapter's gradients (model_lora_grads). The top-k expert
 * choice is not differentiated; e_score_correction_bias gets no gradient. */
void model_backward(model_train *tr, const float *g_logp, const float *g_ent, float *grads);

/* Gradients by unit (ZeRO 2, docs/distributed.md): the arena cut into
 * model_grad_units(m) = L + 2 units in arena order: unit 0 the embedding,
 * unit 1 + l decoder layer l, unit L + 1 the final norm and lm_head (the
 * final norm alone with tied embeddings). MTP layers and the gaps between
 * tensors belong to no unit (they get no gradient). lo, hi [L + 2]: each
 * unit's arena range [lo, hi) (over its tensors, in elements). */
int model_grad_units(const model *m);
void model_grad_unit_ranges(const model *m, int64_t *lo, int64_t *hi);
/* The windows a unit-wise backward needs (elements): *win the largest unit
 * but a tied embedding (two such windows alternate), *emb a tied
 * embedding's unit (its own window, open through the whole pass), else 0;
 * *units (may be NULL) the elements of every unit together (what a pass
 * reduces). */
void model_grad_windows(const model *m, int64_t *win, int64_t *emb, int64_t *units);
typedef struct {
    /* unit u's gradient window [hi - lo] floats (arena element lo + i at
     * i), zero-filled by the callee: called before the backward writes
     * any gradient of the unit */
    float *(*begin)(void *ctx, int unit);
    /* after the last write into the unit's window: the callee may post its
     * reduction; the window is not touched again in this pass */
    void (*end)(void *ctx, int unit);
    void *ctx;
} model_grad_hooks;
/* model_backward into per-unit windows instead of a whole gradient arena
 * (the windows' values are this pass's gradients alone). The calls, in
 * order: unit L + 1, then L, ..., 1, then 0; with tied embeddings unit 0
 * begins first (the LM head's gradient goes into it) and ends last. Full
 * fine-tuning only (no LoRA adapter in the pass, a model with master
 * weights): dies otherwise, as model_backward does for a bad state. */
void model_backward_units(model_train *tr, const float *g_logp, const float *g_ent, const model_grad_hooks *h);

/* Zero-row training passes (expert parallelism, docs/distributed.md): a
 * rank with fewer micro-batches than the others of its EP group makes, for
 * each one it lacks, model_train_join_forward and (when the others
 * differentiate theirs) model_train_join_backward: the exchanges of every
 * MoE layer in the order of model_forward / model_backward (with
 * recompute the backward's extra forward of each layer too), with no
 * tokens of its own. It serves the rows the peers send to its experts, so
 * its experts' weight gradients get their share as in a real pass; nothing
 * else is computed or written (no log-probs, no expert load, no
 * gradient of any other weight). The unit hooks of ZeRO 3 (model_unit_use)
 * and the gradient windows of h (NULL: grads, the arena layout) are called
 * in the order a real pass calls them, so the windows' reductions pair up
 * with the other ranks'. Without EP the passes make those calls only. The
 * forward returns an exchange's error; the backward dies on one, as
 * model_backward does. */
base_status model_train_join_forward(model_train *tr);
void model_train_join_backward(model_train *tr, float *grads, const model_grad_hooks *h);

/* ZeRO 3 (shard.c, docs/distributed.md): parameters sharded over ranks.
 * model_arena_release frees the parameter arena (and bf16 mode's compute
 * copy) of a trainable model without an adapter; from then on every pass
 * (model_forward, model_backward_units, prefill, decode,
 * model_forward_logits) calls hook(ctx, u) before it uses unit u's weights
 * (the units of model_grad_unit_ranges; the embedding again for a tied LM
 * head), and the hook binds them with model_unit_bind. Decode graphs are
 * not captured meanwhile (the hook's gathers are host calls). Nothing else
 * may read the weights of a released model (model_weights_to_host,
 * model_copy_weights, ... die). model_arena_restore allocates the arena
 * again (zero: the caller fills it, then model_sync_compute) and drops the
 * hook. */
base_status model_arena_release(model *m, void (*hook)(void *ctx, int unit), void *ctx);
void model_arena_restore(model *m);
int model_arena_released(const model *m);
/* The unit hook of a model loaded without its arena
 * (model_load_opts.no_arena), set once its owner can gather units; dies
 * when the model is not released. */
void model_unit_hook_set(model *m, void (*hook)(void *ctx, int unit), void *ctx);
/* Bind unit u's weight views to win [hi - lo] f32 values of arena range
 * [lo, hi) (model_grad_unit_ranges); in bf16 mode win_c [hi - lo] bf16
 * receives their compute copy and the GEMM views point into it (win_c may
 * be NULL in f32 mode). The views stay bound until the unit is bound
 * again; the caller keeps the windows' values valid while they are used. */
void model_unit_bind(model *m, int u, float *win, uint16_t *win_c);

/* ------------------------------------------------------------------------ */
/* Inference                                                                */

/* Full logits of packed sequences (positions from 0 in each):
 * logits [N, V] and token_logp [N] (log p of the next token of the same
 * sequence, 0 at each sequence's last token), host arrays (either may be
 * NULL). Plans its own workspace for N tokens. */
base_status model_forward_logits(model *m, int nseq, const int32_t *ids, const int32_t *cu_seqlens,
                                 float *logits, float *token_logp);

/* Positions per page of the latent cache when model_cache_limits.page_size
 * is 0. 16: the CUDA decode kernel stages 16 rows per tile, so a page is
 * one tile (vLLM's default block size too); a sequence wastes at most 15
 * positions (0.4% of a 4K context), a prompt shared by G samples copies at
 * most 15 rows per sample (its last partial page), and a 4K sequence's
 * block table is 256 entries. */
#define MODEL_PAGE_SIZE 16

typedef struct {
    int slots;            /* sequences held in the cache at once (block-table rows) */
    int64_t max_len;      /* positions per sequence (prompt + completion) */
    int max_batch;        /* sequences per decode step */
    int64_t max_prefill;  /* prompt tokens per prefill call, all prompts together */
    int64_t page_size;    /* positions per page; 0: MODEL_PAGE_SIZE */
    int64_t pages;        /* pages in the pool (per layer); 0: slots * ceil(max_len / page_size),
                           * every slot owning its own pages (the identity map below) */
    int no_graphs;        /* 1: every decode step launched op by op, even where the backend
                           * captures graphs (ops.h graph_capture; GRPO_CUDA_GRAPHS=0 turns
                           * graphs off for the whole CUDA backend) */
} model_cache_limits;

/* Decode graphs: on a backend with graph_capture (CUDA), model_decode pads
 * a step of n sequences to its bucket min(2^ceil(log2 n), max_batch) rows
 * (the padding rows use a padding slot and page of their own, allocated
 * with the cache) and replays the bucket's graph of the whole step; the
 * first step of a bucket, and the first after the backend's scratch
 * buffers moved, runs op by op and captures. Steps over
 * MODEL_GRAPH_MAX_BATCH sequences run op by op (their MoE GEMM takes the
 * synchronising per-expert path above 4096 rows of 8 experts each). */
#define MODEL_GRAPH_MAX_BATCH 512
#define MODEL_GRAPH_BUCKETS 10 /* 1, 2, 4, ..., 512 */

/* Paged latent KV cache (spec §3.6: kv_lora_rank + qk_rope_head_dim values
 * per token per layer) plus the prefill and decode workspaces. Memory: a
 * pool of `pages` pages of page_size positions per layer
 * ([L, pages, page_size, dc+dr] f32, bf16 in bf16 mode), and a block table per slot:
 * MB = ceil(max_len / page_size) page ids (ops.h mla_cache_write), held on
 * the host and uploaded by the next prefill/decode after a change.
 * With pages = 0 slot s starts mapped to its own pages s*MB .. s*MB+MB-1
 * (a contiguous cache per slot, as without paging); with an explicit pool
 * every slot starts unmapped and the caller maps pages (model_cache_map):
 * the rollout engine shares a prompt's full pages among its G samples. */
typedef struct model_cache model_cache;

base_status model_cache_new(model *m, const model_cache_limits *lim, model_cache **out);
void model_cache_free(model_cache *c);
size_t model_cache_bytes(const model_config *cfg, const model_cache_limits *lim);
/* Bytes of a cache by role: planned (model_cache_plan, for a precision on a
 * backend: the cache is bf16 on a device backend in bf16 / fp8, else f32)
 * or allocated (model_cache_memory); the same sizing code. */
typedef struct {
    size_t pages;     /* the latent KV pages (one padding page included) */
    size_t table;     /* block tables (one padding slot included) */
    size_t workspace; /* prefill / decode activations and logits */
} model_cache_mem;
base_status model_cache_plan(const model_config *cfg, const model_cache_limits *lim, model_precision prec,
                             tensor_device dev, model_cache_mem *out);
void model_cache_memory(const model_cache *c, model_cache_mem *out);
/* The device bytes model_cache_new allocates for a cache of a model with a
 * LoRA adapter of config lc attached (NULL: none) in a precision, on a
 * device backend (bf16 pages in bf16 mode): pages + table + workspace of
 * the same sizing code. */
size_t model_cache_bytes_p(const model_config *cfg, const model_cache_limits *lim,
                           const struct model_lora_config *lc, model_precision prec);
/* The same for a model loaded with expert parallelism of ep_size ranks
 * (the workspace's expert side for ep_size * max(max_prefill, max_batch) *
 * min(K, E / ep_size) rows). */
size_t model_cache_bytes_ep(const model_config *cfg, const model_cache_limits *lim,
                            const struct model_lora_config *lc, model_precision prec, int ep_size);
/* Bytes of one page over all layers (page_size positions of the latent
 * rows of every layer), f32 (model_cache_bytes plans f32 pages too). */
size_t model_cache_page_bytes(const model_config *cfg, int64_t page_size);
/* The same in a precision: bf16 mode keeps the latent cache in bf16 (half). */
size_t model_cache_page_bytes_p(const model_config *cfg, int64_t page_size, model_precision prec);
/* The resolved geometry: positions per page, pages in the pool, block-table
 * entries per slot (each may be NULL). */
void model_cache_geometry(const model_cache *c, int64_t *page_size, int64_t *pages, int64_t *pages_per_slot);
/* Slot's block table: positions [k*page_size, (k+1)*page_size) live in page
 * pages[k] for k < n; entries from n on are unmapped. Host-side only (no
 * device work); errors for a slot, n or page id out of range. */
base_status model_cache_map(model_cache *c, int slot, const int32_t *pages, int64_t n);
/* Graphs captured and replays so far (model_decode; 0 where the backend
 * has no graphs or no_graphs is set). */
void model_cache_graph_stats(const model_cache *c, int64_t *captures, int64_t *replays);
/* Copy positions [0, len) of slot src to slot dst (every layer) through
 * their block tables, page by page; pages both slots map to the same page
 * id are shared, not copied. Dies on unmapped pages or out-of-range
 * arguments (a programming error). A prompt prefilled once serves G
 * samples: with shared full pages only its last partial page is copied. */
void model_cache_copy(model_cache *c, int dst_slot, int src_slot, int64_t len);

/* Prefill nseq prompts (packed ids, cu_seqlens as in model_batch) into
 * cache slots slots[s], positions 0..len-1 (their pages mapped). *logits
 * (device [nseq, V], valid until the next call) gets each prompt's
 * last-token logits. */
base_status model_prefill(model_cache *c, int nseq, const int32_t *slots, const int32_t *ids,
                          const int32_t *cu_seqlens, const tensor **logits);
/* One decode step for n sequences: token tokens[i] at position pos[i] of
 * slot slots[i] (positions 0..pos[i]-1 already cached, the pages of
 * 0..pos[i] mapped). Writes the cache row and sets *logits (device [n, V],
 * valid until the next call). Several
 * entries may name one slot at consecutive positions: every layer writes
 * all rows before attending, so such a chunk extends the sequence (chunked
 * prefill in the absorbed form; logits for each of its tokens). With
 * expert parallelism n may be 0 (slots, tokens, pos may then be NULL): a
 * step that only joins the group's MoE exchanges (*logits gets a [0, V]
 * view). */
base_status model_decode(model_cache *c, int n, const int32_t *slots, const int32_t *tokens,
                         const int32_t *pos, const tensor **logits);

/* ------------------------------------------------------------------------ */
/* LoRA adapters (lora.c, lora_io.c), PEFT's LoraConfig semantics           */

/* Target modules by PEFT's module names. In a MoE layer gate_proj, up_proj
 * and down_proj name the shared experts' projections, and the routed
 * experts' too when routed_experts is set. */
typedef enum {
    MODEL_LORA_Q_PROJ = 0, /* self_attn.q_proj (q_lora_rank = 0) */
    MODEL_LORA_Q_A_PROJ,
    MODEL_LORA_Q_B_PROJ,
    MODEL_LORA_KV_A_PROJ, /* self_attn.kv_a_proj_with_mqa */
    MODEL_LORA_KV_B_PROJ,
    MODEL_LORA_O_PROJ,
    MODEL_LORA_GATE_PROJ,
    MODEL_LORA_UP_PROJ,
    MODEL_LORA_DOWN_PROJ,
    MODEL_LORA_NTARGETS
} model_lora_target;

#define MODEL_LORA_TARGET_NAMES "q_proj|q_a_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj|gate_proj|up_proj|down_proj"
#define MODEL_LORA_MAX_RANK 4096

/* PEFT's module name of a target; -1 for an unknown name. */
const char *model_lora_target_name(model_lora_target t);
int model_lora_target_parse(const char *name);

typedef struct model_lora_config {
    int r;               /* rank, 1 .. MODEL_LORA_MAX_RANK */
    double lora_alpha;   /* > 0 */
    int use_rslora;      /* scaling alpha / sqrt(r) instead of alpha / r */
    unsigned targets;    /* bit (1u << model_lora_target) per targeted module name */
    int routed_experts;  /* the routed experts' projections too (gate/up/down_proj targeted) */
} model_lora_config;

/* s = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora (PEFT). */
double model_lora_scaling(const model_lora_config *c);

/* A LoRA adapter over a model's frozen weights: for every targeted linear
 * y = x W^T of layers 0 .. num_hidden_layers-1 (MTP layers are not
 * adapted, as PEFT on the HF model, which has none),
 *   y = x W^T + s (x A^T) B^T,  A [r, in], B [out, r]
 * in f32 (A and B are the trainable parameters), never merged into W: the
 * training forward, prefill, decode (the absorbed kv_b form takes the
 * adapter per step: W_UK^T q + s A^T (B_UK^T q), W_UV o + s B_UV (A o))
 * and model_forward_logits all run base + adapter. Attaching an adapter to
 * a model makes every pass planned afterwards (model_train_new,
 * model_cache_new) run it; passes planned before it was attached, and
 * those planned with model_train_limits.no_adapter, run the base alone.
 * One adapter per model; model_lora_free detaches it.
 *
 * The parameter arena holds, per layer in order, each adapted module's A
 * then B (routed experts: A [E, r, in] then B [E, out, r]), named as PEFT
 * saves them: base_model.model.model.layers.L.self_attn.o_proj.lora_A.weight,
 * ...mlp.shared_experts.gate_proj.lora_B.weight,
 * ...mlp.experts.E.down_proj.lora_A.weight. bf16 mode keeps bf16 copies
 * for the GEMMs (model_sync_compute refreshes them with the base's). */
typedef struct model_lora model_lora;

/* A new adapter, attached to m: A as PEFT initialises it (kaiming_uniform
 * with a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in))), drawn from seed, and B = 0,
 * so the model computes exactly what its base computes until B moves.
 * Errors (BASE_ERR_INVALID): r or lora_alpha out of range, no target, no
 * module of the model matches the targets, an adapter already attached. */
base_status model_lora_new(model *m, const model_lora_config *cfg, uint64_t seed, model_lora **out);
/* Detach from the model and free (NULL is a no-op). model_free frees the
 * adapter attached to the model it frees. */
void model_lora_free(model_lora *a);
const model_lora_config *model_lora_cfg(const model_lora *a);
model *model_lora_model(const model_lora *a);
int model_lora_nparams(const model_lora *a);
const model_param *model_lora_param_at(const model_lora *a, int i);
const model_param *model_lora_param_find(const model_lora *a, const char *name);
/* The parameter arena (device), model_lora_numel(a) f32 values. */
float *model_lora_params(const model_lora *a);
int64_t model_lora_numel(const model_lora *a);
/* The gradient arena (device, the parameters' layout, zero-filled when
 * made), allocated by the first call and owned by the adapter: the
 * backward of a pass that runs the adapter accumulates (+=) into it. */
float *model_lora_grads(model_lora *a);
/* bf16 mode: refresh the adapter's bf16 copy from its f32 parameters
 * (after an optimizer step; the frozen base needs no refresh). A no-op in
 * f32 mode. model_sync_compute does it too. */
void model_lora_sync(model_lora *a);
/* Bytes of the adapter's parameters (f32) for a config, and of its bf16
 * compute copy in a precision (0 in f32 mode). */
size_t model_lora_param_bytes(const model_config *mc, const model_lora_config *lc);
size_t model_lora_compute_bytes(const model_config *mc, const model_lora_config *lc, model_precision prec);
/* Parameters of the adapter a config gives (saturates like
 * model_config_param_count). */
int64_t model_lora_param_count(const model_config *mc, const model_lora_config *lc);

/* PEFT format (lora_io.c): DIR/adapter_config.json (peft_type LORA, r,
 * lora_alpha, lora_dropout 0, target_modules, use_rslora, bias "none",
 * base_model_name_or_path = base, task_type CAUSAL_LM) and
 * DIR/adapter_model.safetensors (F32, the names above). Written atomically
 * file by file; dir must exist. */
base_status model_lora_save(const model_lora *a, const char *dir, const char *base);
/* Read DIR's adapter_config.json into *cfg (r, lora_alpha, use_rslora,
 * target_modules as a list of names or a single name, and which modules
 * the safetensors file adapts: routed experts when it holds their
 * tensors). Errors name the file and key (a target this model type does
 * not have, peft_type other than LORA, lora_dropout ignored: it only acts
 * in training). */
base_status model_lora_read_config(const char *dir, const model_config *mc, model_lora_config *cfg);
/* Load DIR into a new adapter attached to m (model_lora_read_config, then
 * every tensor checked by name and shape). */
base_status model_lora_load(model *m, const char *dir, model_lora **out);
/* Copy A and B of DIR's adapter_model.safetensors into a (same config):
 * resuming. Errors name the missing tensor or the shape. */
base_status model_lora_load_weights(model_lora *a, const char *dir);
/* W += s B A for every adapted module (the base's f32 weights; then
 * model_sync_compute): the merged model computes what base + adapter
 * computes, up to rounding. The adapter stays attached: detach it
 * (model_lora_free) before using the merged model alone. */
void model_lora_merge(model_lora *a);

#ifdef __cplusplus
}
#endif

#endif
