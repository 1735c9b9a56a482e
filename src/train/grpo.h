/*
 * grpo: the GRPO objective of DeepSeekMath / DeepSeek-R1 and the variants
 * TRL's GRPOTrainer ships, named as TRL names them (docs/training.md gives
 * every option with its TRL and verl name, formula and default).
 *
 *   rewards [N, F] --grpo_advantages--> advantages [N]
 *   per-token logp (+ old, ref, entropy) --grpo_loss--> loss, g_logp, g_ent
 *
 * The loss is a function of per-token arrays, not of the model: the model's
 * training forward gives logp[t] (log-prob of the sampled token t under the
 * current policy) and ent[t] (entropy of the predictive distribution at t),
 * and its backward takes g_logp[t] = dL/dlogp[t] and g_ent[t] = dL/dent[t].
 * All arrays here are host memory.
 *
 * Dimension letters: N samples (completions) of a generation batch, G the
 * group size (num_generations; a group is G consecutive samples of one
 * prompt), F reward functions, S sequences of a micro-batch, T tokens of a
 * micro-batch packed back to back (the completion tokens of sequence i are
 * [offsets[i], offsets[i+1])).
 *
 * Normalisation contract (one rule for every loss_type): grpo_loss returns
 * this micro-batch's contribution to the loss of the whole optimizer step,
 * so the step's loss and gradient are the SUM of the contributions over its
 * micro-batches and ranks (data parallel all-reduce = sum, not mean). The
 * step-wide counts come in grpo_norm. With equal-sized micro-batches this
 * equals TRL's loss (TRL divides by gradient_accumulation_steps and DDP
 * averages over ranks); with unequal ones ours does not depend on how the
 * step was split, TRL's does.
 *
 * The sampler/trainer mismatch correction (TRL's vllm_importance_sampling_*)
 * is importance_sampling_correction: our sampler is the rollout engine,
 * whose decode kernels can differ from the training forward's (bf16 on a
 * GPU).
 */
#ifndef GRPO_TRAIN_GRPO_H
#define GRPO_TRAIN_GRPO_H

#include <stdint.h>

#include "base/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Options                                                                  */

typedef enum {
    GRPO_LOSS_GRPO = 0, /* (1/S_step) sum_i (1/|o_i|) sum_t l_it: the paper's sequence mean of token means */
    GRPO_LOSS_BNPO,     /* sum_t l_t / (loss tokens of this micro-batch) / n_micro */
    GRPO_LOSS_DR_GRPO,  /* sum l_it / (S_step * max_completion_length) */
    GRPO_LOSS_DAPO,     /* sum l_it / (loss tokens of the whole step): global token mean */
    GRPO_LOSS_CISPO,    /* MiniMax-M1: -sg(min(ratio, epsilon_high)) A logp; dapo's aggregation */
    GRPO_LOSS_SAPO,     /* soft gate -sigmoid(tau (ratio - 1)) 4/tau A; grpo's aggregation */
    GRPO_LOSS_LUSPO,    /* clipped surrogate, sum_t l_it / S_step (sequence sum, mean over sequences) */
    GRPO_LOSS_VESPO,    /* -sg(phi(w_i)) A logp, phi the gamma weight of the sequence ratio; dapo's */
} grpo_loss_type;

typedef enum {
    GRPO_SCALE_GROUP = 0, /* A = (r - mean_group) / (std_group + eps) */
    GRPO_SCALE_BATCH,     /* A = (r - mean_group) / (std_batch + eps) */
    GRPO_SCALE_NONE,      /* A = r - mean_group */
} grpo_scale_rewards;

typedef enum {
    GRPO_AGG_SUM_THEN_NORMALIZE = 0, /* weighted sum, then scale_rewards (GRPO) */
    GRPO_AGG_NORMALIZE_THEN_SUM,     /* GDPO: each function normalised per group, summed, then
                                      * normalised over the batch (scale_rewards unused) */
} grpo_reward_aggregation;

typedef enum {
    GRPO_KL_K3 = 0, /* exp(d) - d - 1, d = ref - logp (TRL's only estimator) */
    GRPO_KL_K1,     /* logp - ref */
    GRPO_KL_K2,     /* (logp - ref)^2 / 2 */
} grpo_kl_estimator;

typedef enum {
    GRPO_IS_TOKEN = 0, /* one ratio per token */
    GRPO_IS_SEQUENCE,  /* GSPO: exp(mean_t (logp - old)) per sequence */
} grpo_is_level;

/* Importance-sampling correction of the sampler/trainer mismatch (TRL
 * vllm_importance_sampling_mode): the ratio exp(old - sampling) per token or
 * per sequence (summed log ratios), then clamped to [clip_min, clip_max]
 * (truncate) or set to 0 outside it (mask). */
typedef enum {
    GRPO_ISC_TOKEN_TRUNCATE = 0,
    GRPO_ISC_TOKEN_MASK,
    GRPO_ISC_SEQUENCE_TRUNCATE,
    GRPO_ISC_SEQUENCE_MASK,
} grpo_is_correction_mode;

/* Real-valued options are double, as TRL's Python floats, so that e.g.
 * 1 - epsilon is the same number on both sides. */
typedef struct {
    grpo_loss_type loss_type;          /* loss_type; default grpo (TRL: dapo) */
    grpo_scale_rewards scale_rewards;  /* scale_rewards; default group */
    double scale_rewards_eps;           /* eps of the std division; 1e-4 as TRL (verl 1e-6) */
    double beta;                        /* KL coefficient; default 0.0: no reference forward */
    grpo_kl_estimator kl_estimator;    /* default k3 */
    double epsilon;                     /* lower clip: ratio >= 1 - epsilon; 0.2 */
    double epsilon_high;                /* upper clip: ratio <= 1 + epsilon_high; < 0 = epsilon (TRL None) */
    double delta;                       /* two-sided clip of the unclipped ratio (INTELLECT-2); <= 0 = off */
    int num_iterations;                /* mu: updates per generation batch; 1 */
    int steps_per_generation;          /* optimizer steps one generation batch is split into; 1 */
    int max_completion_length;         /* dr_grpo's constant L; 512 */
    int mask_truncated_completions;    /* drop completions without EOS from the loss; 0 */
    double entropy_coef;                /* entropy bonus: loss -= entropy_coef * mean token entropy; 0
                                         * (with use_adaptive_entropy: the initial coefficient) */
    int use_adaptive_entropy;          /* adapt entropy_coef every optimizer step (grpo_entropy_ctl); 0 */
    double entropy_coef_min, entropy_coef_max; /* its range; 0.0, 1.0 */
    double entropy_coef_delta;          /* its change per optimizer step; 0.005 */
    double entropy_target;              /* the bonus applies while the entropy is <= this; 0.2 */
    grpo_is_level importance_sampling_level; /* token */
    grpo_reward_aggregation multi_objective_aggregation; /* sum_then_normalize */
    double sapo_temperature_pos;        /* sapo's tau for A > 0; 1.0 */
    double sapo_temperature_neg;        /* sapo's tau for A <= 0; 1.05 */
    double vespo_k_pos, vespo_lambda_pos; /* vespo's gamma weight for A >= 0; 2.0, 3.0 */
    double vespo_k_neg, vespo_lambda_neg; /* for A < 0; 3.0, 2.0 */
    double top_entropy_quantile;        /* policy loss on the top-rho tokens by entropy; 1.0 = all */
    int use_bias_correction_kl;        /* KL term times the ratio (DeepSeek-V3.2); 0 (TRL: 1) */
    double off_policy_mask_threshold;   /* DeepSeek-V3.2 OPSM: drop A < 0 sequences whose mean
                                         * old - logp exceeds it; NaN = off (TRL None) */
    int importance_sampling_correction; /* weight the policy term by the sampler/trainer ratio; 0
                                         * (TRL vllm_importance_sampling_correction, True with vLLM) */
    grpo_is_correction_mode importance_sampling_mode; /* sequence_mask */
    double importance_sampling_clip_min; /* NaN = none (TRL None) */
    double importance_sampling_clip_max; /* 3.0; NaN = none */
} grpo_config;

/* TRL's defaults except loss_type (grpo, the paper's; TRL: dapo) and
 * use_bias_correction_kl (0, the R1 estimator; TRL: 1). Overwrites *c. */
void grpo_config_default(grpo_config *c);
/* Range checks (epsilon in [0, 1), beta >= 0, mu >= 1, ...). BASE_ERR_INVALID
 * naming the option. */
base_status grpo_config_check(const grpo_config *c);
/* The upper clip actually used (epsilon_high, or epsilon when unset). */
double grpo_epsilon_high(const grpo_config *c);

/* The reference model is evaluated only when this is true (beta != 0);
 * grpo_loss rejects ref_logp when it is false, so a wasted reference
 * forward is an error rather than a silent cost. */
int grpo_needs_ref_logp(const grpo_config *c);
/* Old-policy logprobs differ from the current ones, and must be given to
 * grpo_loss, when a generation batch feeds more than one optimizer step
 * (num_iterations > 1 or steps_per_generation > 1). Otherwise old = the
 * current logp detached (ratio 1, TRL's shortcut) and old_logp is NULL. The
 * caller takes them from the sampler's logprobs or from a no-grad forward
 * of the policy before the first update on the batch. */
int grpo_needs_old_logp(const grpo_config *c);

/* Names as TRL spells them: "grpo" "bnpo" "dr_grpo" "dapo" "cispo" "sapo"
 * "luspo" "vespo"; "group" "batch" "none"; "k1" "k2" "k3"; "token"
 * "sequence"; "sum_then_normalize" "normalize_then_sum". Parse returns
 * BASE_ERR_INVALID listing the accepted names. */
const char *grpo_loss_type_name(grpo_loss_type t);
base_status grpo_loss_type_parse(const char *s, grpo_loss_type *out);
const char *grpo_scale_rewards_name(grpo_scale_rewards s);
base_status grpo_scale_rewards_parse(const char *s, grpo_scale_rewards *out);
const char *grpo_kl_estimator_name(grpo_kl_estimator k);
base_status grpo_kl_estimator_parse(const char *s, grpo_kl_estimator *out);
const char *grpo_is_level_name(grpo_is_level l);
base_status grpo_is_level_parse(const char *s, grpo_is_level *out);
const char *grpo_reward_aggregation_name(grpo_reward_aggregation a);
base_status grpo_reward_aggregation_parse(const char *s, grpo_reward_aggregation *out);
/* "token_truncate" "token_mask" "sequence_truncate" "sequence_mask" */
const char *grpo_is_correction_mode_name(grpo_is_correction_mode m);
base_status grpo_is_correction_mode_parse(const char *s, grpo_is_correction_mode *out);
/* Settings TRL accepts but warns about (e.g. luspo at token level, vespo at
 * sequence level): a sentence, or NULL when there is nothing to say. */
const char *grpo_config_warning(const grpo_config *c);

/* ------------------------------------------------------------------------ */
/* Advantages and reward statistics (grpo_adv.c)                            */

#define GRPO_MAX_REWARD_FUNCS 32

typedef struct {
    int n_funcs;
    double reward;                 /* nanmean of the combined reward (TRL "reward") */
    double reward_std;             /* nanstd of the combined reward ("reward_std") */
    double func_mean[GRPO_MAX_REWARD_FUNCS]; /* "rewards/<name>/mean": nanmean, unweighted */
    double func_std[GRPO_MAX_REWARD_FUNCS];  /* "rewards/<name>/std" */
    double frac_reward_zero_std;   /* fraction of samples whose std (group or batch) is ~0 */
    int64_t n_unscorable;          /* samples for which every function returned nil */
} grpo_reward_stats;

/* Group-relative advantages. multi_objective_aggregation sum_then_normalize
 * (GRPO, the default):
 *   r_n     = nansum_f(w_f * rewards[n, f])  (nil = NaN is skipped; a sample
 *             whose every function is nil is unscorable: r_n = NaN)
 *   mean_g  = nanmean of r over the group (always per group)
 *   std     = nanstd over the group (group, none) or over all N (batch):
 *             unbiased (Bessel, count - 1, as torch.std), NaN with < 2 values;
 *             0 when G == 1 (group) or N == 1 (batch), as TRL
 *   A_n     = r_n - mean_g, divided by (std + scale_rewards_eps) unless none
 *   NaN advantages (unscorable samples, groups with < 2 scorable samples
 *   when scaled) become 0.
 * normalize_then_sum (GDPO), scale_rewards not used:
 *   z_nf    = (rewards[n, f] - nanmean_group_f) / (nanstd_group_f + eps)
 *             (std 0 when G == 1; a nil reward stays NaN)
 *   s_n     = nansum_f(w_f * z_nf), NaN for unscorable samples
 *   A_n     = (s_n - nanmean_N(s)) / (nanstd_N(s) + eps), NaN -> 0
 *   frac_reward_zero_std then tells whether that batch std is ~0.
 * The logged reward metrics (reward, reward_std, rewards/<f>) are of the raw
 * rewards in both modes.
 * rewards: [N, F] row-major, NaN = nil; weights: [F] or NULL (all 1);
 * N a multiple of G. adv: [N] overwritten. total: [N] or NULL, overwritten
 * with r (NaN for unscorable). stats: overwritten (NULL allowed).
 * Arithmetic in double. Errors (BASE_ERR_INVALID): N not a multiple of G,
 * F outside [1, GRPO_MAX_REWARD_FUNCS], an infinite reward or weight
 * (named by sample and function). */
base_status grpo_advantages(const grpo_config *cfg, const float *rewards, int64_t n_samples,
                            int n_funcs, const float *weights, int group_size, float *adv,
                            float *total, grpo_reward_stats *stats);
/* grpo_advantages with the caller's workspace ws: [N] doubles, overwritten
 * (the trainer's step loop allocates nothing; grpo_advantages allocates it). */
base_status grpo_advantages_ws(const grpo_config *cfg, const float *rewards, int64_t n_samples,
                               int n_funcs, const float *weights, int group_size, float *adv,
                               float *total, grpo_reward_stats *stats, double *ws);

/* Dynamic sampling (DAPO; verl filter_groups): keep[g] = 1 when group g has
 * at least two distinct scorable values of the metric, the only groups whose
 * advantages are not all 0; 0 otherwise. The metric is the combined reward
 * (metric_func < 0) or reward function metric_func, unweighted. *n_kept =
 * groups kept, *n_refill = max(0, target_groups - *n_kept): how many groups
 * the caller generates again (and filters) to fill the batch. keep: [N/G]
 * overwritten. Same input rules and errors as grpo_advantages. */
base_status grpo_filter_groups(const float *rewards, int64_t n_samples, int n_funcs,
                               const float *weights, int group_size, int metric_func,
                               int64_t target_groups, uint8_t *keep, int64_t *n_kept,
                               int64_t *n_refill);

/* Completion length metrics as TRL logs them ("completions/..."): lengths
 * [N] in tokens, truncated [N] (1 = no EOS, cut at max_completion_length;
 * NULL = none). Terminated-length stats are 0 when nothing terminated. */
typedef struct {
    double mean_length, min_length, max_length;
    double clipped_ratio; /* fraction truncated */
    double mean_terminated_length, min_terminated_length, max_terminated_length;
} grpo_completion_stats;

void grpo_completion_stats_compute(const int64_t *lengths, const uint8_t *truncated, int64_t n,
                                   grpo_completion_stats *out);

/* ------------------------------------------------------------------------ */
/* The loss (grpo.c)                                                        */

/* One micro-batch of completions, packed. Every pointer is host memory of
 * the length given; the struct owns nothing. */
typedef struct {
    int64_t n_seqs;            /* S */
    const int64_t *offsets;    /* [S + 1], offsets[0] = 0, non-decreasing; T = offsets[S] */
    const uint8_t *mask;       /* [T] 1 = a completion token the model produced; NULL = all */
    const uint8_t *truncated;  /* [S] 1 = cut without EOS; NULL = none (mask_truncated_completions) */
    const float *advantages;   /* [S] */
    const float *logp;         /* [T] current policy log-prob of each sampled token */
    const float *old_logp;     /* [T] or NULL = logp detached (see grpo_needs_old_logp) */
    const float *ref_logp;     /* [T] when grpo_needs_ref_logp, else NULL */
    const float *entropy;      /* [T] or NULL; required when entropy_coef != 0 */
    const float *is_ratio;     /* [T] the importance-sampling correction (grpo_is_correction), required
                                * when importance_sampling_correction, else NULL */
    const float *sampling_logp; /* [T] the sampler's log-probs or NULL: what OPSM compares with
                                 * (TRL sampling_per_token_logps; NULL = old_logp) */
} grpo_batch;

/* Step-wide counts, identical for every micro-batch of one optimizer step. */
typedef struct {
    int64_t n_seqs;   /* sequences in the step, all micro-batches and ranks (grpo, dr_grpo) */
    int64_t n_tokens; /* loss tokens in the step (sum of grpo_count_loss_tokens; dapo and the
                       * entropy bonus); TRL's num_items_in_batch */
    int64_t n_micro;  /* micro-batches in the step over all ranks (bnpo) */
} grpo_norm;

/* Tokens of b that enter the loss: mask, minus truncated completions when
 * mask_truncated_completions. Sum it over the step's micro-batches for
 * grpo_norm.n_tokens. */
int64_t grpo_count_loss_tokens(const grpo_config *cfg, const grpo_batch *b);

/* Sums, counts and extremes of one micro-batch; merge several with
 * grpo_loss_stats_merge (data-parallel ranks: sum the sums, min/max the
 * extremes) and finish with grpo_loss_metrics. */
typedef struct {
    double loss;          /* contribution to the step loss (policy loss - entropy bonus) */
    double policy_loss;   /* contribution without the entropy bonus */
    double n_tokens;      /* loss tokens */
    double kl_sum;        /* sum of the KL estimator over loss tokens (beta != 0) */
    double entropy_sum;   /* sum of entropies over loss tokens (entropy given) */
    double clip_count;    /* loss tokens (token level) or sequences (sequence level) */
    double clip_low_sum;  /* ratio < 1 - epsilon and A < 0 */
    double clip_high_sum; /* ratio > 1 + epsilon_high and A > 0 */
    double clip_region_sum;
    double clip_low_min;  /* min over sequences of their low-clip fraction (+inf when none) */
    double clip_high_max; /* max over sequences of their high-clip fraction (-inf when none) */
    double bonus_entropy_sum; /* entropies of the entropy-selected loss tokens (the bonus's) */
    double bonus_tokens;  /* their count */
    double cispo_clip_sum; /* cispo: ratio > epsilon_high and A > 0 (per clip_count) */
    double phi_sum;       /* vespo: sum of the sequences' gamma weights */
    double n_seqs;        /* sequences */
    int has_kl, has_entropy;
    int has_clip;         /* 1: the clip-family losses (grpo bnpo dr_grpo dapo luspo) */
    int has_cispo, has_phi;
} grpo_loss_stats;

void grpo_loss_stats_init(grpo_loss_stats *s);
void grpo_loss_stats_merge(grpo_loss_stats *acc, const grpo_loss_stats *s);

/* Per-step metrics, TRL's names in comments. NaN where not computed. */
typedef struct {
    double loss;                   /* "loss" */
    double policy_loss;            /* "policy_loss" */
    double kl;                     /* "kl" (beta != 0) */
    double entropy;                /* "entropy" */
    double clip_ratio_low_mean;    /* "clip_ratio/low_mean" */
    double clip_ratio_low_min;     /* "clip_ratio/low_min" */
    double clip_ratio_high_mean;   /* "clip_ratio/high_mean" */
    double clip_ratio_high_max;    /* "clip_ratio/high_max" */
    double clip_ratio_region_mean; /* "clip_ratio/region_mean" */
    double cispo_clip_ratio;       /* "cispo_clip_ratio" */
    double vespo_phi_seq_mean;     /* "vespo/phi_seq_mean" */
} grpo_loss_metrics;

void grpo_loss_metrics_finish(const grpo_loss_stats *s, grpo_loss_metrics *m);

/* The importance-sampling correction of one generation batch of n
 * completions stored in rows of `stride` floats: completion i is tokens
 * [0, len[i]) of its row, a loss token where mask (same layout; NULL = all)
 * is 1, unless truncated[i] and mask_truncated_completions. old: the trainer's log-probs of the sampled
 * tokens before any update (a no-grad forward); sampling: the sampler's.
 * ratio [n, stride] overwritten: per cfg->importance_sampling_mode (TRL's
 * formula: d = (old - sampling) on loss tokens, NaN -> 0, 0 elsewhere;
 * exp(d) per token, or exp(sum_t d) for the whole sequence; then truncate or
 * mask with the clip bounds), 1 off the loss tokens in token modes. The
 * metrics, TRL's names: sampling/sampling_logp_difference/{mean,max} over
 * loss tokens (NaN left out; 0 when none), sampling/importance_sampling_
 * ratio/{min,mean,max} over loss tokens (token modes) or sequences. */
typedef struct {
    double logp_diff_mean, logp_diff_max;
    double ratio_min, ratio_mean, ratio_max;
} grpo_is_stats;

base_status grpo_is_correction(const grpo_config *cfg, int64_t n, int64_t stride, const int32_t *len,
                               const uint8_t *mask, const uint8_t *truncated, const float *old,
                               const float *sampling, float *ratio, grpo_is_stats *stats);

/* Adaptive entropy control (TRL use_adaptive_entropy): the coefficient
 * moves by entropy_coef_delta after every optimizer step, up (to at most
 * entropy_coef_max) when the step's mean entropy over the bonus's tokens was
 * <= entropy_target, else down (to at least entropy_coef_min), and the
 * bonus applies only while the last step's entropy was <= entropy_target
 * (none before the first step). Without use_adaptive_entropy the applied
 * coefficient is entropy_coef, always. The state is part of a checkpoint. */
typedef struct {
    double coef;         /* current coefficient */
    double last_entropy; /* last optimizer step's entropy; +inf before the first */
} grpo_entropy_ctl;

/* coef = entropy_coef, last_entropy = +inf. */
void grpo_entropy_ctl_init(const grpo_config *c, grpo_entropy_ctl *e);
/* The entropy_coef to run grpo_loss with during the next optimizer step. */
double grpo_entropy_ctl_apply(const grpo_config *c, const grpo_entropy_ctl *e);
/* After an optimizer step whose micro-batch stats were merged into step:
 * updates e (no-op without use_adaptive_entropy). */
void grpo_entropy_ctl_update(const grpo_config *c, grpo_entropy_ctl *e, const grpo_loss_stats *step);

/* The GRPO loss of one micro-batch and its gradient w.r.t. logp (and ent).
 *
 * Per loss token t of sequence i (A = advantages[i], lo/hi the clip
 * bounds, m_t the loss-token mask, n_i its count in the sequence):
 *   ratio c  = exp(logp - old)         (token level; old = sg(logp) when NULL)
 *            = exp(sum_t m(logp - old) / max(n_i, 1))  (sequence level)
 *   policy p = -min(min(c, delta) * A, clamp(c, lo, hi) * A)  grpo bnpo dr_grpo dapo luspo
 *            = -sg(min(c, epsilon_high)) * A * logp            cispo
 *            = -sigmoid(tau (c - 1)) * 4 / tau * A             sapo (tau by the sign of A)
 *            = -sg(phi_i) * A * logp                           vespo, with
 *              log w_i = clamp(sum_t m clamp(logp - old, +-20), log 1e-8, 20)
 *              phi_i   = exp(lambda + k log w_i - lambda w_i) (k, lambda by the sign of A)
 *   p       *= e_t * o_i * is_t: is_t the importance-sampling correction
 *              (importance_sampling_correction; not for vespo, whose
 *              log w_i adds sum_t m clamp(log is_t, log 1e-8, 20));
 *              e_t = 1 when top_entropy_quantile = 1, else
 *              ent_t >= the (1 - rho) quantile of the micro-batch's loss-token
 *              entropies (torch.quantile, linear); o_i = 0 when OPSM is on,
 *              A < 0 and mean_t m(s - logp) > off_policy_mask_threshold
 *              (s = sampling_logp, else old)
 *   l        = p + beta * KL_t * (use_bias_correction_kl ? c : 1)
 *   loss     = sum_t w_t l_t - entropy_coef * H
 *   H        = sum_t m e ent / max(sum_t m e, 1) * n_local / max(n_tokens_step, 1)
 *              (the step's mean token entropy when e = 1; TRL's micro-batch
 *              mean over the entropy-selected tokens for one micro-batch)
 * with w_t from loss_type (see grpo_loss_type, norm). Gradients follow
 * torch's rules at kinks: min() splits a tie evenly, clamp() passes the
 * gradient at its bounds; sg() and the masks pass none.
 * g_logp: [T] overwritten (0 off the loss tokens). g_ent: [T] overwritten
 * when non-NULL (required when entropy_coef != 0). stats: overwritten.
 * Arithmetic in double. A NaN logp on a loss token gives a NaN loss and
 * gradient (the optimizer then skips the step); masked tokens are never
 * read. Errors (BASE_ERR_INVALID, nothing written): bad offsets, ref_logp
 * missing with beta != 0 or given with beta == 0, old_logp missing when
 * grpo_needs_old_logp, entropy missing with entropy_coef != 0,
 * use_adaptive_entropy or top_entropy_quantile < 1, norm counts < 1 where
 * the loss_type needs them. */
base_status grpo_loss(const grpo_config *cfg, const grpo_batch *b, const grpo_norm *norm,
                      float *g_logp, float *g_ent, grpo_loss_stats *stats);

#ifdef __cplusplus
}
#endif

#endif
