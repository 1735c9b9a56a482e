/*
 * optim: AdamW with global-norm gradient clipping and learning-rate
 * schedules, over flat float32 buffers planned at start-up: one allocation
 * per role (parameters, gradients, first moments m, second moments v), each
 * [n] on the op table's device, with named views per parameter. Either the
 * optimizer plans and owns all four (optim_init), or it borrows the model's
 * parameter and gradient arenas and owns only m and v, laid out like the
 * arena (optim_init_arena: what the trainer uses with src/model). The
 * update itself is the `adamw` op (src/tensor/ops.h); the norm is the
 * `sumsq` op.
 *
 * Defaults follow TRL / transformers.TrainingArguments (adam_beta1 0.9,
 * adam_beta2 0.999, adam_epsilon 1e-8, weight_decay 0.0, max_grad_norm 1.0,
 * lr_scheduler_type linear, no warm-up) and torch.optim.AdamW's arithmetic.
 *
 * Step counters (documented contract, also what a checkpoint must save):
 *   - the caller's training step k (0-based) picks the learning rate,
 *     lr = learning_rate * lambda(k), as transformers' LambdaLR does for
 *     the k-th optimizer.step(); it advances whether or not the update is
 *     applied, so a skipped step does not stretch the schedule;
 *   - optim.step counts APPLIED updates and is AdamW's t (bias correction):
 *     a skipped update leaves m, v, the parameters and t untouched, as if
 *     that batch had never been seen;
 *   - optim.n_skipped counts updates skipped for a non-finite gradient
 *     norm (each one logged with the training step).
 */
#ifndef GRPO_TRAIN_OPTIM_H
#define GRPO_TRAIN_OPTIM_H

#include <stdint.h>

#include "tensor/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* transformers' SchedulerType names: "constant", "constant_with_warmup",
 * "linear", "cosine" (one half-cosine, num_cycles 0.5, down to 0). */
typedef enum {
    OPTIM_SCHED_CONSTANT = 0,
    OPTIM_SCHED_CONSTANT_WITH_WARMUP,
    OPTIM_SCHED_LINEAR,
    OPTIM_SCHED_COSINE,
} optim_sched;

typedef struct {
    double learning_rate;          /* 1e-6 (TRL GRPOConfig; SFTConfig uses 2e-5) */
    double adam_beta1, adam_beta2; /* 0.9, 0.999 */
    double adam_epsilon;           /* 1e-8 */
    double weight_decay;           /* 0.0; decoupled (p *= 1 - lr * wd) */
    double max_grad_norm;          /* 1.0; <= 0 disables clipping */
    optim_sched lr_scheduler_type; /* linear */
    int64_t warmup_steps;          /* > 0: linear warm-up steps (wins over the ratio) */
    double warmup_ratio;           /* else ceil(max_steps * warmup_ratio) */
    int64_t max_steps;             /* training steps the schedule spans (linear, cosine) */
    int offload_optimizer;         /* 0; 1: m and v in host memory, streamed through the device in
                                    * chunks for each update (DeepSpeed's offload_optimizer): 8
                                    * bytes per parameter off the device, the same bits. A no-op on
                                    * the CPU backend. */
} optim_config;

void optim_config_default(optim_config *c);
/* BASE_ERR_INVALID naming the option (lr < 0, betas outside [0, 1), ...,
 * max_steps < 1 for a decaying schedule). */
base_status optim_config_check(const optim_config *c);
const char *optim_sched_name(optim_sched s);
base_status optim_sched_parse(const char *s, optim_sched *out);

/* Warm-up steps: warmup_steps when > 0, else ceil(max_steps * warmup_ratio). */
int64_t optim_warmup_steps(const optim_config *c);
/* Learning rate of the update made at 0-based training step k:
 *   warm-up (k < W): lr * k / max(1, W)   (so the first update has lr 0
 *                                           when W > 0, as transformers)
 *   then constant: lr;  linear: lr * max(0, (K - k) / max(1, K - W));
 *   cosine: lr * max(0, (1 + cos(pi * (k - W) / max(1, K - W))) / 2)
 * with K = max_steps. */
double optim_lr_at(const optim_config *c, int64_t k);

/* HF Trainer's rule for weight decay: no decay when the lower-cased name
 * contains "bias", "layernorm" or "rmsnorm", or has a "norm" or "*_norm"
 * dotted component (transformers get_decay_parameter_names). */
int optim_default_decay(const char *name);

/* One trainable parameter as the planner sees it. */
typedef struct {
    const char *name; /* copied */
    int64_t numel;
    int64_t offset;   /* optim_init_arena only: elements into the arena */
} optim_param_spec;

typedef struct {
    char *name;
    int64_t numel;
    int64_t offset; /* in floats into every role buffer (optim_init: a multiple of 16) */
    int decay;
} optim_param;

/* A maximal range of adjacent parameters with the same decay flag: one
 * adamw call each. */
typedef struct {
    int64_t offset, n;
    int decay;
} optim_run;

typedef struct {
    const struct ops *ops;
    optim_config cfg;
    int n_params;
    optim_param *params; /* [n_params] in the caller's order */
    int n_runs;
    optim_run *runs;     /* ascending offsets; what is updated and enters the norm */
    int64_t n;           /* floats per role buffer (padding, untrained gaps included) */
    float *param;        /* device [n]: master weights (float32) */
    float *grad;         /* device [n]: gradients, accumulated by backward */
    float *m;            /* device [state_n] (host when state_on_host): first moments (exp_avg) of
                          * arena elements [state_lo, state_lo + state_n) */
    float *v;            /* likewise: second moments (exp_avg_sq) */
    int64_t state_lo, state_n; /* the range whose state this optimizer holds and updates: [0, n)
                                * unless sharded (ZeRO 1: this rank's shard, optim_init_arena_shard) */
    int state_on_host;   /* offload_optimizer on a device backend */
    float *stage;        /* device [2 * stage_n]: an m chunk then a v chunk (state_on_host) */
    int64_t stage_n;
    int owns_param_grad; /* 1 after optim_init, 0 after optim_init_arena */
    int grad_sharded;    /* 1: grad holds only [state_lo, state_lo + state_n) like m and v (ZeRO 2,
                          * optim_set_grad_shard); 0: grad is the whole arena [n] */
    int param_sharded;   /* 1: param holds only [state_lo, state_lo + state_n) (ZeRO 3,
                          * optim_set_param_shard) */
    int zero_stage;      /* the caller's record: 1, 2 or 3 with zero_shards, else 0 */
    int zero_shards;     /* the caller's record: ZeRO 1 / 2 over this many ranks (0: state not sharded) */
    int zero_rank;       /* and this rank's shard among them */
    int64_t step;        /* applied updates (AdamW t) */
    int64_t n_skipped;   /* updates skipped for a non-finite gradient */
} optim;

/* Plan and allocate the four role buffers (zero-filled) for `specs`
 * (offsets ignored). decay(name) says which parameters get weight decay
 * (NULL = optim_default_decay); decayed parameters are laid out first so the
 * update is two adamw calls. Errors (BASE_ERR_INVALID): a bad config, a
 * duplicate or empty name, numel < 1; BASE_ERR_UNSUPPORTED when the backend
 * lacks the adamw or sumsq op. On error nothing is allocated. */
base_status optim_init(optim *o, const struct ops *ops, const optim_config *cfg,
                       const optim_param_spec *specs, int n_specs, int (*decay)(const char *name));
/* Borrow an existing parameter arena and its gradient arena (device [n]
 * each, same layout, e.g. model_params / model_grads_new) and allocate m
 * and v [n] (zero) in that layout. specs give each trainable parameter's
 * offset; arena elements outside every spec (frozen tensors such as
 * e_score_correction_bias) are never read or written. The arenas stay the
 * caller's (optim_free does not free them). Extra errors: a spec outside
 * [0, n) or overlapping another. */
base_status optim_init_arena(optim *o, const struct ops *ops, const optim_config *cfg,
                             const optim_param_spec *specs, int n_specs,
                             int (*decay)(const char *name), float *param, float *grad, int64_t n);
/* ZeRO stage 1: the same, but m and v are allocated for the arena range
 * [lo, hi) only (8 bytes per element of the range), and optim_step updates
 * only the parameters' elements inside it (the rest of the arena is left
 * for the ranks that own it; the caller all-gathers the updated shards).
 * The gradient norm is still the whole arena's (grad must hold the summed
 * gradient of every element), so clipping and skipping are global.
 * optim_m_view / optim_v_view die for a parameter not wholly inside
 * [lo, hi); use optim_role_view / optim_state_download. Extra error: [lo,
 * hi) not inside [0, n). */
base_status optim_init_arena_shard(optim *o, const struct ops *ops, const optim_config *cfg,
                                   const optim_param_spec *specs, int n_specs, int (*decay)(const char *name),
                                   float *param, float *grad, int64_t n, int64_t lo, int64_t hi);
void optim_free(optim *o);

/* Index of a parameter by name, -1 if absent. */
int optim_find(const optim *o, const char *name);
/* 1-D views [numel] of parameter i in each role buffer (on the device; m
 * and v on the host when state_on_host, the view's device says which). */
tensor optim_param_view(const optim *o, int i);
tensor optim_grad_view(const optim *o, int i);
tensor optim_m_view(const optim *o, int i);
tensor optim_v_view(const optim *o, int i);
/* The whole role buffers as 1-D [n] tensors (checkpoints, all-reduce). */
tensor optim_role_view(const optim *o, float *role); /* m, v: [state_n] */

/* ZeRO 2: from now on the gradients are grad [state_n], the elements
 * [state_lo, state_lo + state_n) of the arena (the caller's buffer, as
 * large; the caller reduces every rank's gradients into it). The norm is
 * then this shard's part (optim_grad_sumsq): the caller sums the shards'
 * over the ranks and steps with optim_step_sumsq. optim_grad_view dies for
 * a parameter not wholly inside the shard. */
void optim_set_grad_shard(optim *o, float *grad);
/* ZeRO 3: the master parameters are param [state_n] too (the caller's
 * shard of the arena); optim_step updates it in place. */
void optim_set_param_shard(optim *o, float *param);

/* grad = 0 (the whole buffer, arena included). */
void optim_zero_grad(optim *o);

typedef struct {
    double grad_norm; /* global L2 norm before clipping (NaN/inf when skipped) */
    double lr;        /* learning rate used (0 when skipped) */
    float clip_coef;  /* factor applied to the gradients (1 when not clipped) */
    int skipped;      /* 1: non-finite norm, nothing updated */
} optim_step_info;

/* One optimizer step at training step k: norm = sqrt(sum over the runs of
 * sumsq(grad)), in run order; when it is not finite, skip (log a warning
 * naming k, count n_skipped); else clip as torch.nn.utils.clip_grad_norm_
 * (coef = max_grad_norm / (norm + 1e-6), applied when < 1), step++, and
 * AdamW with lr = optim_lr_at(k) on every run (weight_decay on decayed runs,
 * 0 on the others). The gradient buffer is read, not modified (clipping is
 * folded into the update). info may be NULL. */
void optim_step(optim *o, int64_t k, optim_step_info *info);
/* The sum of squares of the gradients optim_step's norm is the root of: the
 * runs' sumsq in run order, summed in double; with sharded gradients only
 * the parts of the runs inside the shard. */
double optim_grad_sumsq(const optim *o);
/* optim_step with the norm sqrt(sumsq) given (ZeRO 2: the ranks' shard
 * sums added in rank order), the same decisions and update otherwise. */
void optim_step_sumsq(optim *o, int64_t k, double sumsq, optim_step_info *info);

/* Optimizer state for checkpoints: the m and v buffers (optim_role_view,
 * or per parameter optim_m_view / optim_v_view) and these counters. The
 * parameter layout is a pure function of the specs, so a state saved from
 * one optim restores bit-exactly into another planned from the same specs.
 * set: BASE_ERR_INVALID for negative counters. */
typedef struct {
    int64_t step;
    int64_t n_skipped;
} optim_counters;

optim_counters optim_counters_get(const optim *o);
/* m and v copied into host arrays [state_n] (arena elements [state_lo,
 * state_lo + state_n): [0, n) unless sharded), or set from them, wherever
 * the state lives (device, or host when state_on_host). */
void optim_state_download(const optim *o, float *m, float *v);
void optim_state_upload(optim *o, const float *m, const float *v);
base_status optim_counters_set(optim *o, optim_counters c);

#ifdef __cplusplus
}
#endif

#endif
