/*
 * grpo: the options and the GRPO loss over per-token arrays, with its
 * gradient w.r.t. the policy logprobs (and entropies for the bonus).
 * Reference: TRL GRPOTrainer._compute_loss (every loss_type,
 * importance_sampling_level, delta, entropy_coef, top_entropy_quantile,
 * off_policy_mask_threshold, use_bias_correction_kl) and DeepSeekMath's Eq.
 * for GRPO; tests/train/gen/grpo_trl.py runs TRL's own code as the peer. The gradient is written by hand (the chain
 * rule through ratio, clip, min and KL) and checked against finite
 * differences in tests/train/test_grpo.c.
 */
#include "grpo.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Options                                                                  */

void grpo_config_default(grpo_config *c) {
    memset(c, 0, sizeof *c);
    c->loss_type = GRPO_LOSS_GRPO;
    c->scale_rewards = GRPO_SCALE_GROUP;
    c->scale_rewards_eps = 1e-4;
    c->beta = 0.0;
    c->kl_estimator = GRPO_KL_K3;
    c->epsilon = 0.2;
    c->epsilon_high = -1.0;
    c->delta = 0.0;
    c->num_iterations = 1;
    c->steps_per_generation = 1;
    c->max_completion_length = 512;
    c->mask_truncated_completions = 0;
    c->entropy_coef = 0.0;
    c->use_adaptive_entropy = 0;
    c->entropy_coef_min = 0.0;
    c->entropy_coef_max = 1.0;
    c->entropy_coef_delta = 0.005;
    c->entropy_target = 0.2;
    c->importance_sampling_level = GRPO_IS_TOKEN;
    c->multi_objective_aggregation = GRPO_AGG_SUM_THEN_NORMALIZE;
    c->sapo_temperature_pos = 1.0;
    c->sapo_temperature_neg = 1.05;
    c->vespo_k_pos = 2.0;
    c->vespo_lambda_pos = 3.0;
    c->vespo_k_neg = 3.0;
    c->vespo_lambda_neg = 2.0;
    c->top_entropy_quantile = 1.0;
    c->use_bias_correction_kl = 0;
    c->off_policy_mask_threshold = NAN; /* off */
    c->importance_sampling_correction = 0;
    c->importance_sampling_mode = GRPO_ISC_SEQUENCE_MASK;
    c->importance_sampling_clip_min = NAN;
    c->importance_sampling_clip_max = 3.0;
}

double grpo_epsilon_high(const grpo_config *c) {
    return c->epsilon_high < 0 ? c->epsilon : c->epsilon_high;
}

base_status grpo_config_check(const grpo_config *c) {
#define BAD(...) return base_err_set(BASE_ERR_INVALID, "grpo config: " __VA_ARGS__)
    if ((unsigned)c->loss_type > GRPO_LOSS_VESPO) BAD("loss_type %d is unknown", (int)c->loss_type);
    if ((unsigned)c->scale_rewards > GRPO_SCALE_NONE)
        BAD("scale_rewards %d is unknown", (int)c->scale_rewards);
    if ((unsigned)c->kl_estimator > GRPO_KL_K2) BAD("kl_estimator %d is unknown", (int)c->kl_estimator);
    if ((unsigned)c->importance_sampling_level > GRPO_IS_SEQUENCE)
        BAD("importance_sampling_level %d is unknown", (int)c->importance_sampling_level);
    if (!isfinite(c->scale_rewards_eps) || c->scale_rewards_eps < 0)
        BAD("scale_rewards_eps = %g (expected >= 0)", c->scale_rewards_eps);
    if (!isfinite(c->beta) || c->beta < 0) BAD("beta = %g (expected >= 0)", c->beta);
    if (!isfinite(c->epsilon) || c->epsilon < 0) BAD("epsilon = %g (expected >= 0)", c->epsilon);
    if (!isfinite(c->epsilon_high)) BAD("epsilon_high = %g", c->epsilon_high);
    if (!isfinite(c->delta) || c->delta < 0) BAD("delta = %g (expected 0 = off, or > 0)", c->delta);
    if (c->num_iterations < 1) BAD("num_iterations = %d (expected >= 1)", c->num_iterations);
    if (c->steps_per_generation < 1)
        BAD("steps_per_generation = %d (expected >= 1)", c->steps_per_generation);
    if (c->max_completion_length < 1)
        BAD("max_completion_length = %d (expected >= 1)", c->max_completion_length);
    if (!isfinite(c->entropy_coef)) BAD("entropy_coef = %g", c->entropy_coef);
    if (!isfinite(c->entropy_coef_min) || !isfinite(c->entropy_coef_max) || c->entropy_coef_min > c->entropy_coef_max)
        BAD("entropy_coef_min = %g, entropy_coef_max = %g (expected finite, min <= max)", c->entropy_coef_min,
            c->entropy_coef_max);
    if (!isfinite(c->entropy_coef_delta) || c->entropy_coef_delta < 0)
        BAD("entropy_coef_delta = %g (expected >= 0)", c->entropy_coef_delta);
    if (!isfinite(c->entropy_target)) BAD("entropy_target = %g", c->entropy_target);
    if ((unsigned)c->multi_objective_aggregation > GRPO_AGG_NORMALIZE_THEN_SUM)
        BAD("multi_objective_aggregation %d is unknown", (int)c->multi_objective_aggregation);
    if (!(c->sapo_temperature_pos > 0) || !isfinite(c->sapo_temperature_pos) ||
        !(c->sapo_temperature_neg > 0) || !isfinite(c->sapo_temperature_neg))
        BAD("sapo_temperature_pos = %g, sapo_temperature_neg = %g (expected > 0)", c->sapo_temperature_pos,
            c->sapo_temperature_neg);
    if (!isfinite(c->vespo_k_pos) || !isfinite(c->vespo_lambda_pos) || !isfinite(c->vespo_k_neg) ||
        !isfinite(c->vespo_lambda_neg))
        BAD("vespo_k_pos/vespo_lambda_pos/vespo_k_neg/vespo_lambda_neg must be finite");
    if (!(c->top_entropy_quantile >= 0 && c->top_entropy_quantile <= 1))
        BAD("top_entropy_quantile = %g (expected in [0, 1])", c->top_entropy_quantile);
    if (isinf(c->off_policy_mask_threshold))
        BAD("off_policy_mask_threshold = %g (expected a number, or NaN = off)", c->off_policy_mask_threshold);
    if ((unsigned)c->importance_sampling_mode > GRPO_ISC_SEQUENCE_MASK)
        BAD("importance_sampling_mode %d is unknown", (int)c->importance_sampling_mode);
    if (isinf(c->importance_sampling_clip_min) || isinf(c->importance_sampling_clip_max) ||
        c->importance_sampling_clip_min > c->importance_sampling_clip_max)
        BAD("importance_sampling_clip_min = %g, importance_sampling_clip_max = %g (expected numbers with min <= max, "
            "or NaN = none)",
            c->importance_sampling_clip_min, c->importance_sampling_clip_max);
    if (c->importance_sampling_correction && c->loss_type == GRPO_LOSS_VESPO &&
        c->importance_sampling_mode != GRPO_ISC_TOKEN_TRUNCATE && c->importance_sampling_mode != GRPO_ISC_TOKEN_MASK)
        BAD("loss_type vespo takes the importance-sampling correction into its sequence weight: "
            "importance_sampling_mode must be token_truncate or token_mask (as TRL)");
    if (c->loss_type == GRPO_LOSS_CISPO && !(grpo_epsilon_high(c) > 0))
        BAD("loss_type cispo caps the ratio at epsilon_high = %g (expected > 0; ScaleRL: 5.0)",
            grpo_epsilon_high(c));
#undef BAD
    return BASE_OK;
}

int grpo_needs_ref_logp(const grpo_config *c) { return c->beta != 0.0; }
int grpo_needs_old_logp(const grpo_config *c) {
    return c->num_iterations > 1 || c->steps_per_generation > 1;
}

static const char *const loss_names[] = {"grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo"};
static const char *const scale_names[] = {"group", "batch", "none"};
static const char *const kl_names[] = {"k3", "k1", "k2"};
static const char *const is_names[] = {"token", "sequence"};
static const char *const agg_names[] = {"sum_then_normalize", "normalize_then_sum"};
static const char *const isc_names[] = {"token_truncate", "token_mask", "sequence_truncate", "sequence_mask"};

static base_status parse_name(const char *what, const char *s, const char *const *names, int n,
                              int *out) {
    for (int i = 0; s && i < n; i++)
        if (!strcmp(s, names[i])) {
            *out = i;
            return BASE_OK;
        }
    base_buf b = {0};
    for (int i = 0; i < n; i++) base_buf_printf(&b, "%s%s", i ? ", " : "", names[i]);
    base_err_set(BASE_ERR_INVALID, "%s '%s' is unknown (expected one of: %s)", what,
                 s ? s : "(null)", b.data);
    base_buf_free(&b);
    return BASE_ERR_INVALID;
}

#define NAME_FUNCS(fn, type, arr, what)                                                  \
    const char *fn##_name(type v) {                                                      \
        return (unsigned)v < sizeof arr / sizeof arr[0] ? arr[v] : "?";                  \
    }                                                                                    \
    base_status fn##_parse(const char *s, type *out) {                                   \
        int i;                                                                           \
        base_status st = parse_name(what, s, arr, (int)(sizeof arr / sizeof arr[0]), &i); \
        if (!st) *out = (type)i;                                                         \
        return st;                                                                       \
    }
NAME_FUNCS(grpo_loss_type, grpo_loss_type, loss_names, "loss_type")
NAME_FUNCS(grpo_scale_rewards, grpo_scale_rewards, scale_names, "scale_rewards")
NAME_FUNCS(grpo_kl_estimator, grpo_kl_estimator, kl_names, "kl_estimator")
NAME_FUNCS(grpo_is_level, grpo_is_level, is_names, "importance_sampling_level")
NAME_FUNCS(grpo_reward_aggregation, grpo_reward_aggregation, agg_names, "multi_objective_aggregation")
NAME_FUNCS(grpo_is_correction_mode, grpo_is_correction_mode, isc_names, "importance_sampling_mode")
#undef NAME_FUNCS

const char *grpo_config_warning(const grpo_config *c) {
    int seq = c->importance_sampling_level == GRPO_IS_SEQUENCE;
    switch (c->loss_type) {
    case GRPO_LOSS_LUSPO:
        if (!seq) return "loss_type luspo is meant for importance_sampling_level = 'sequence' (the paper's setup)";
        break;
    case GRPO_LOSS_VESPO:
        if (seq)
            return "loss_type vespo computes its own sequence weight; importance_sampling_level should be "
                   "'token'";
        break;
    case GRPO_LOSS_CISPO:
        if (c->epsilon_high < 0)
            return "loss_type cispo caps the ratio at epsilon_high, which is unset: the cap is epsilon "
                   "(TRL does the same; MiniMax-M1/ScaleRL use epsilon_high = 5.0 or so)";
        /* fall through */
    case GRPO_LOSS_BNPO:
    case GRPO_LOSS_DR_GRPO:
    case GRPO_LOSS_DAPO:
        if (seq)
            return "importance_sampling_level = 'sequence' with a token-sum loss_type weights each sequence "
                   "by its length; GSPO's setup is loss_type = 'grpo'";
        break;
    default: break;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Statistics                                                               */

void grpo_loss_stats_init(grpo_loss_stats *s) {
    memset(s, 0, sizeof *s);
    s->clip_low_min = INFINITY;
    s->clip_high_max = -INFINITY;
}

void grpo_loss_stats_merge(grpo_loss_stats *acc, const grpo_loss_stats *s) {
    acc->loss += s->loss;
    acc->policy_loss += s->policy_loss;
    acc->n_tokens += s->n_tokens;
    acc->kl_sum += s->kl_sum;
    acc->entropy_sum += s->entropy_sum;
    acc->clip_count += s->clip_count;
    acc->clip_low_sum += s->clip_low_sum;
    acc->clip_high_sum += s->clip_high_sum;
    acc->clip_region_sum += s->clip_region_sum;
    if (s->clip_low_min < acc->clip_low_min) acc->clip_low_min = s->clip_low_min;
    if (s->clip_high_max > acc->clip_high_max) acc->clip_high_max = s->clip_high_max;
    acc->bonus_entropy_sum += s->bonus_entropy_sum;
    acc->bonus_tokens += s->bonus_tokens;
    acc->cispo_clip_sum += s->cispo_clip_sum;
    acc->phi_sum += s->phi_sum;
    acc->n_seqs += s->n_seqs;
    acc->has_kl |= s->has_kl;
    acc->has_entropy |= s->has_entropy;
    acc->has_clip |= s->has_clip;
    acc->has_cispo |= s->has_cispo;
    acc->has_phi |= s->has_phi;
}

void grpo_loss_metrics_finish(const grpo_loss_stats *s, grpo_loss_metrics *m) {
    double nt = s->n_tokens > 1 ? s->n_tokens : 1; /* TRL clamp(min=1) */
    double nc = s->clip_count > 1 ? s->clip_count : 1;
    m->loss = s->loss;
    m->policy_loss = s->policy_loss;
    m->kl = s->has_kl ? s->kl_sum / nt : NAN;
    m->entropy = s->has_entropy ? s->entropy_sum / nt : NAN;
    m->clip_ratio_low_mean = s->has_clip ? s->clip_low_sum / nc : NAN;
    m->clip_ratio_high_mean = s->has_clip ? s->clip_high_sum / nc : NAN;
    m->clip_ratio_region_mean = s->has_clip ? s->clip_region_sum / nc : NAN;
    m->clip_ratio_low_min = s->has_clip && !isinf(s->clip_low_min) ? s->clip_low_min : NAN;
    m->clip_ratio_high_max = s->has_clip && !isinf(s->clip_high_max) ? s->clip_high_max : NAN;
    m->cispo_clip_ratio = s->has_cispo ? s->cispo_clip_sum / nc : NAN;
    m->vespo_phi_seq_mean = s->has_phi ? s->phi_sum / (s->n_seqs > 1 ? s->n_seqs : 1) : NAN;
}

/* ------------------------------------------------------------------------ */
/* Loss                                                                     */

static int token_active(const grpo_config *cfg, const grpo_batch *b, int64_t i, int64_t t) {
    if (cfg->mask_truncated_completions && b->truncated && b->truncated[i]) return 0;
    return !b->mask || b->mask[t];
}

int64_t grpo_count_loss_tokens(const grpo_config *cfg, const grpo_batch *b) {
    int64_t n = 0;
    for (int64_t i = 0; i < b->n_seqs; i++)
        for (int64_t t = b->offsets[i]; t < b->offsets[i + 1]; t++) n += token_active(cfg, b, i, t);
    return n;
}

/* The clipped surrogate of one ratio c with advantage a: its value and
 * d(value)/dc, and TRL's clip flags. */
typedef struct {
    double l, dl_dc;
    int low, high;
} surrogate;

static surrogate surrogate_eval(double c, double a, double lo, double hi, double delta) {
    surrogate s;
    double c2 = c < lo ? lo : (c > hi ? hi : c);
    double pass2 = (c >= lo && c <= hi) ? 1.0 : 0.0; /* torch.clamp passes at its bounds */
    double c1 = c, pass1 = 1.0;
    if (delta > 0 && c > delta) c1 = delta, pass1 = 0.0;
    double x1 = c1 * a, x2 = c2 * a;
    if (x1 < x2) s.l = -x1, s.dl_dc = -a * pass1;
    else if (x2 < x1) s.l = -x2, s.dl_dc = -a * pass2;
    else s.l = -x1, s.dl_dc = -0.5 * a * (pass1 + pass2); /* torch.min splits a tie */
    s.low = c1 < lo && a < 0;
    s.high = c1 > hi && a > 0;
    return s;
}

/* KL estimator per token and its derivative w.r.t. logp. */
static double kl_eval(grpo_kl_estimator k, double lp, double ref, double *dkl) {
    double d = ref - lp;
    switch (k) {
    case GRPO_KL_K1:
        *dkl = 1.0;
        return -d;
    case GRPO_KL_K2:
        *dkl = -d;
        return 0.5 * d * d;
    case GRPO_KL_K3:
    default: {
        double e = exp(d);
        *dkl = 1.0 - e;
        return e - d - 1.0;
    }
    }
}

#define BAD(...) return base_err_set(BASE_ERR_INVALID, "grpo_loss: " __VA_ARGS__)

/* Offsets first: everything else indexes through them. */
static base_status check_offsets(const grpo_batch *b) {
    if (b->n_seqs < 0) BAD("n_seqs = %lld", (long long)b->n_seqs);
    if (b->n_seqs == 0) return BASE_OK;
    if (!b->offsets || b->offsets[0] != 0) BAD("offsets must start at 0");
    for (int64_t i = 0; i < b->n_seqs; i++)
        if (b->offsets[i + 1] < b->offsets[i])
            BAD("offsets decrease at sequence %lld (%lld -> %lld)", (long long)i,
                (long long)b->offsets[i], (long long)b->offsets[i + 1]);
    return BASE_OK;
}

static base_status check_batch(const grpo_config *cfg, const grpo_batch *b, const grpo_norm *norm,
                               int64_t n_local, const float *g_ent) {
    if (b->n_seqs == 0) return BASE_OK;
    if (!b->advantages || !b->logp) BAD("advantages and logp are required");
    if (grpo_needs_ref_logp(cfg) && !b->ref_logp)
        BAD("beta = %g needs ref_logp (the reference model's logprobs)", cfg->beta);
    if (!grpo_needs_ref_logp(cfg) && b->ref_logp)
        BAD("ref_logp given but beta = 0: the reference forward is not needed");
    if (grpo_needs_old_logp(cfg) && !b->old_logp)
        BAD("num_iterations = %d, steps_per_generation = %d need old_logp (the logprobs "
            "of the policy that sampled the batch)",
            cfg->num_iterations, cfg->steps_per_generation);
    if (cfg->entropy_coef != 0 && (!b->entropy || !g_ent))
        BAD("entropy_coef = %g needs the entropies and a g_ent output", cfg->entropy_coef);
    if (cfg->use_adaptive_entropy && !b->entropy) BAD("use_adaptive_entropy needs the entropies");
    if (cfg->importance_sampling_correction && !b->is_ratio)
        BAD("importance_sampling_correction needs is_ratio (grpo_is_correction)");
    if (!cfg->importance_sampling_correction && b->is_ratio)
        BAD("is_ratio given but importance_sampling_correction is off");
    if (cfg->top_entropy_quantile < 1.0 && !b->entropy)
        BAD("top_entropy_quantile = %g needs the entropies", cfg->top_entropy_quantile);
    const grpo_loss_type lt = cfg->loss_type;
    if ((lt == GRPO_LOSS_GRPO || lt == GRPO_LOSS_DR_GRPO || lt == GRPO_LOSS_SAPO || lt == GRPO_LOSS_LUSPO) &&
        norm->n_seqs < b->n_seqs)
        BAD("norm.n_seqs = %lld but this micro-batch alone has %lld sequences",
            (long long)norm->n_seqs, (long long)b->n_seqs);
    if ((lt == GRPO_LOSS_DAPO || lt == GRPO_LOSS_CISPO || lt == GRPO_LOSS_VESPO || cfg->entropy_coef != 0) &&
        norm->n_tokens < n_local)
        BAD("norm.n_tokens = %lld but this micro-batch alone has %lld loss tokens",
            (long long)norm->n_tokens, (long long)n_local);
    if (lt == GRPO_LOSS_BNPO && norm->n_micro < 1)
        BAD("norm.n_micro = %lld (expected >= 1)", (long long)norm->n_micro);
    return BASE_OK;
}
#undef BAD

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Reorder v[0..n) so that v[k] is the value a sort would put there, with
 * v[0..k) <= v[k] <= v(k..n) (Hoare quickselect, median-of-three pivots,
 * a full sort after too many rounds: O(n) expected, O(n log n) worst). */
static void select_kth(float *v, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1;
    for (int rounds = 0; hi > lo; rounds++) {
        if (rounds > 64) {
            qsort(v + lo, (size_t)(hi - lo + 1), sizeof(float), cmp_float);
            return;
        }
        int64_t mid = lo + (hi - lo) / 2;
        float a = v[lo], b = v[mid], c = v[hi];
        float pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j) {
                float t = v[i];
                v[i] = v[j], v[j] = t;
                i++, j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return; /* j < k < i: v[k] equals the pivot, in place */
    }
}

/* torch.quantile(x, q) of the loss-token entropies of b, linear
 * interpolation, in float as TRL computes it (entropies[mask].float()).
 * NAN when b has no loss token. scratch: [n_local] floats, clobbered. */
static double entropy_threshold(const grpo_config *cfg, const grpo_batch *b, int64_t n_local,
                                float *scratch) {
    if (n_local == 0) return NAN;
    float *v = scratch;
    int64_t k = 0;
    for (int64_t i = 0; i < b->n_seqs; i++)
        for (int64_t t = b->offsets[i]; t < b->offsets[i + 1]; t++)
            if (token_active(cfg, b, i, t)) v[k++] = b->entropy[t];
    /* torch: the rank from q as a float, in double; the weight and the
     * difference as floats; lerp as one fused multiply-add (matched against
     * torch 2.15 on 8000 random cases, tests/train/gen/grpo_trl.py) */
    const double rank = (double)(float)(1.0 - cfg->top_entropy_quantile) * (double)(k - 1);
    const int64_t lo = (int64_t)floor(rank), hi = (int64_t)ceil(rank);
    /* the two order statistics the interpolation needs, not a full sort */
    select_kth(v, k, lo);
    float vhi = v[lo];
    if (hi > lo) {
        vhi = v[lo + 1];
        for (int64_t j = lo + 2; j < k; j++) vhi = v[j] < vhi ? v[j] : vhi;
    }
    const float wgt = (float)(rank - (double)lo), d = vhi - v[lo];
    const float thr = fabsf(wgt) < 0.5f ? (float)fma((double)wgt, (double)d, (double)v[lo])
                                        : (float)fma((double)(wgt - 1.0f), (double)d, (double)vhi);
    return (double)thr;
}

/* vespo's gamma weight of a sequence from its summed log ratio (TRL
 * get_gamma_weights: clamp, log space, NaN/inf -> 0). */
static double vespo_phi(const grpo_config *cfg, double seq_log_ratio, double a) {
    const double lower = log(1e-8);
    double lw = seq_log_ratio < lower ? lower : (seq_log_ratio > 20.0 ? 20.0 : seq_log_ratio);
    double k = a >= 0 ? cfg->vespo_k_pos : cfg->vespo_k_neg;
    double lam = a >= 0 ? cfg->vespo_lambda_pos : cfg->vespo_lambda_neg;
    if (lam < 1e-4) lam = 1e-4;
    double phi = exp(lam + k * lw - lam * exp(lw));
    return isfinite(phi) ? phi : 0.0;
}

/* The policy term of one ratio c (token's or sequence's) with advantage a:
 * its value and d/dc for the ratio losses (clip family, sapo). */
static surrogate policy_eval(const grpo_config *cfg, double c, double a, double lo, double hi) {
    if (cfg->loss_type != GRPO_LOSS_SAPO) return surrogate_eval(c, a, lo, hi, cfg->delta);
    surrogate s = {0};
    double tau = a > 0 ? cfg->sapo_temperature_pos : cfg->sapo_temperature_neg;
    double sg = 1.0 / (1.0 + exp(-tau * (c - 1.0)));
    s.l = -sg * 4.0 / tau * a;
    s.dl_dc = -4.0 * sg * (1.0 - sg) * a;
    return s;
}

/* Per-sequence quantities of grpo_loss's first pass over the loss tokens. */
typedef struct {
    int64_t n;     /* loss tokens n_i */
    double log_w;  /* sum of logp - old (0 when old is NULL) */
    double lr_sum; /* vespo: sum of clamp(logp - old, +-20) (+ the clamped log is_ratio) */
    double kl_old; /* OPSM: sum of (sampling or old) - logp, NaN terms as 0 */
    double q_sel;  /* the policy weights of its loss tokens: sum of e_t is_t (e_t the entropy
                    * selection, is_t = 1 without the correction) */
    double kl_sum; /* sum of the KL estimator; only for the sequence-level bias correction */
} seq_pass;

/* The importance-sampling correction's factor on token t's policy term
 * (vespo takes it in its sequence weight instead). */
static double is_factor(const grpo_config *cfg, const grpo_batch *b, int64_t t) {
    if (!cfg->importance_sampling_correction || cfg->loss_type == GRPO_LOSS_VESPO) return 1.0;
    return b->is_ratio[t];
}

static seq_pass seq_first_pass(const grpo_config *cfg, const grpo_batch *b, int64_t i, double ent_thr) {
    seq_pass p = {0};
    const int tq = cfg->top_entropy_quantile < 1.0;
    for (int64_t t = b->offsets[i]; t < b->offsets[i + 1]; t++) {
        if (!token_active(cfg, b, i, t)) continue;
        p.n++;
        if (b->old_logp) {
            double d = (double)b->logp[t] - (double)b->old_logp[t];
            p.log_w += d;
            p.lr_sum += d < -20.0 ? -20.0 : (d > 20.0 ? 20.0 : d);
        }
        const float *sref = b->sampling_logp ? b->sampling_logp : b->old_logp;
        if (sref) {
            double d = (double)sref[t] - (double)b->logp[t];
            if (!isnan(d)) p.kl_old += d;
        }
        if (cfg->importance_sampling_correction && cfg->loss_type == GRPO_LOSS_VESPO) {
            double l = log((double)b->is_ratio[t]), lo = log(1e-8);
            p.lr_sum += l < lo ? lo : (l > 20.0 ? 20.0 : l);
        }
        const double e = !tq || (double)b->entropy[t] >= ent_thr;
        p.q_sel += e * is_factor(cfg, b, t);
        if (cfg->beta != 0 && cfg->use_bias_correction_kl && cfg->importance_sampling_level == GRPO_IS_SEQUENCE) {
            double dkl;
            p.kl_sum += kl_eval(cfg->kl_estimator, b->logp[t], b->ref_logp[t], &dkl);
        }
    }
    return p;
}

/* Loss tokens of b whose entropy is at least thr. */
static int64_t count_selected(const grpo_config *cfg, const grpo_batch *b, double thr) {
    int64_t n = 0;
    for (int64_t i = 0; i < b->n_seqs; i++)
        for (int64_t t = b->offsets[i]; t < b->offsets[i + 1]; t++)
            n += token_active(cfg, b, i, t) && (double)b->entropy[t] >= thr;
    return n;
}

/* Aggregation weight of each loss token of a sequence with n_i loss tokens. */
static double token_weight(const grpo_config *cfg, const grpo_norm *norm, int64_t n_i, int64_t n_local,
                           double n_tok_step) {
    switch (cfg->loss_type) {
    case GRPO_LOSS_GRPO:
    case GRPO_LOSS_SAPO: return n_i ? 1.0 / ((double)n_i * (double)norm->n_seqs) : 0.0;
    case GRPO_LOSS_BNPO: return 1.0 / ((n_local > 1 ? (double)n_local : 1.0) * (double)norm->n_micro);
    case GRPO_LOSS_DR_GRPO: return 1.0 / ((double)norm->n_seqs * (double)cfg->max_completion_length);
    case GRPO_LOSS_LUSPO: return 1.0 / (double)norm->n_seqs;
    case GRPO_LOSS_DAPO:
    case GRPO_LOSS_CISPO:
    case GRPO_LOSS_VESPO:
    default: return 1.0 / n_tok_step;
    }
}

static void count_clip(grpo_loss_stats *s, int low, int high) {
    s->clip_count += 1;
    s->clip_low_sum += low;
    s->clip_high_sum += high;
    s->clip_region_sum += low || high;
}

base_status grpo_loss(const grpo_config *cfg, const grpo_batch *b, const grpo_norm *norm,
                      float *g_logp, float *g_ent, grpo_loss_stats *stats) {
    base_status st = grpo_config_check(cfg);
    if (st) return st;
    if ((st = check_offsets(b))) return st;
    int64_t n_local = grpo_count_loss_tokens(cfg, b);
    if ((st = check_batch(cfg, b, norm, n_local, g_ent))) return st;

    const grpo_loss_type lt = cfg->loss_type;
    const int clip_family = lt == GRPO_LOSS_GRPO || lt == GRPO_LOSS_BNPO || lt == GRPO_LOSS_DR_GRPO ||
                            lt == GRPO_LOSS_DAPO || lt == GRPO_LOSS_LUSPO;
    const int ratio_loss = clip_family || lt == GRPO_LOSS_SAPO; /* differentiated through the ratio */
    grpo_loss_stats s;
    grpo_loss_stats_init(&s);
    s.has_kl = grpo_needs_ref_logp(cfg);
    s.has_entropy = b->entropy != NULL;
    s.has_clip = clip_family;
    s.has_cispo = lt == GRPO_LOSS_CISPO;
    s.has_phi = lt == GRPO_LOSS_VESPO;
    const double lo = 1.0 - cfg->epsilon, eh = grpo_epsilon_high(cfg), hi = 1.0 + eh;
    const double beta = cfg->beta;
    const double n_tok_step = norm->n_tokens > 1 ? (double)norm->n_tokens : 1.0;
    const int seq_level = cfg->importance_sampling_level == GRPO_IS_SEQUENCE;
    const int tq = cfg->top_entropy_quantile < 1.0, opsm = !isnan(cfg->off_policy_mask_threshold);
    const int bias = cfg->use_bias_correction_kl;
    /* g_logp is the selection's scratch: every element is written below */
    const double ent_thr = tq ? entropy_threshold(cfg, b, n_local, g_logp) : 0.0;

    /* the entropy bonus is the mean over the entropy-selected loss tokens,
     * scaled by this micro-batch's share of the step's loss tokens */
    const double n_sel_all = (double)(tq ? count_selected(cfg, b, ent_thr) : n_local);
    const double ent_w = 1.0 / (n_sel_all > 1 ? n_sel_all : 1.0) * (double)n_local / n_tok_step;
    double h_sum = 0; /* sum of the selected tokens' entropies (the bonus) */

    for (int64_t i = 0; i < b->n_seqs; i++) {
        const int64_t t0 = b->offsets[i], t1 = b->offsets[i + 1];
        const seq_pass p = seq_first_pass(cfg, b, i, ent_thr);
        const double w = token_weight(cfg, norm, p.n, n_local, n_tok_step);
        const double a = b->advantages[i];
        const double n_div = p.n > 1 ? (double)p.n : 1.0;
        /* OPSM: keep unless A < 0 and the sequence drifted too far */
        const double keep =
            (!opsm || a >= 0 || p.kl_old / n_div <= cfg->off_policy_mask_threshold) ? 1.0 : 0.0;
        const double phi = lt == GRPO_LOSS_VESPO ? vespo_phi(cfg, p.lr_sum, a) : 0.0;
        if (lt == GRPO_LOSS_VESPO) s.phi_sum += phi;
        s.n_seqs += 1;

        /* sequence level: one ratio for the sequence; a ratio loss's value
         * is w * keep * E_i * l(c) and reaches each loss token u through
         * dc/dlogp_u = c / n_div */
        const double c_seq = seq_level ? exp(p.log_w / n_div) : 1.0;
        double g_seq = 0; /* gradient of the sequence terms (before w), to every loss token */
        if (seq_level) {
            if (ratio_loss) {
                surrogate ss = policy_eval(cfg, c_seq, a, lo, hi);
                s.policy_loss += w * keep * p.q_sel * ss.l;
                g_seq += keep * p.q_sel * ss.dl_dc * c_seq / n_div;
                if (clip_family) {
                    count_clip(&s, ss.low, ss.high);
                    if (ss.low < s.clip_low_min) s.clip_low_min = ss.low;
                    if (ss.high > s.clip_high_max) s.clip_high_max = ss.high;
                }
            }
            if (lt == GRPO_LOSS_CISPO) {
                s.clip_count += 1;
                s.cispo_clip_sum += c_seq > eh && a > 0;
            }
            if (beta != 0 && bias) g_seq += beta * p.kl_sum * c_seq / n_div;
        }

        int64_t n_low = 0, n_high = 0;
        for (int64_t t = t0; t < t1; t++) {
            if (!token_active(cfg, b, i, t)) {
                g_logp[t] = 0.0f;
                if (g_ent) g_ent[t] = 0.0f;
                continue;
            }
            const double lp = b->logp[t];
            const double e_t = !tq || (double)b->entropy[t] >= ent_thr ? 1.0 : 0.0;
            const double q = keep * e_t * is_factor(cfg, b, t); /* policy-term weight */
            /* token ratio; dc/dlogp = c, also when old = sg(logp) (c = 1) */
            const double c_tok = b->old_logp ? exp(lp - (double)b->old_logp[t]) : 1.0;
            const double c = seq_level ? c_seq : c_tok;
            double loss_t = 0, g = g_seq;
            if (lt == GRPO_LOSS_CISPO) {
                double cc = c > eh ? eh : c; /* detached */
                loss_t = -q * cc * a * lp;
                g += -q * cc * a;
                if (!seq_level) {
                    s.clip_count += 1;
                    s.cispo_clip_sum += c_tok > eh && a > 0;
                }
            } else if (lt == GRPO_LOSS_VESPO) {
                loss_t = -q * phi * a * lp;
                g += -q * phi * a;
            } else if (!seq_level) {
                surrogate su = policy_eval(cfg, c_tok, a, lo, hi);
                loss_t = q * su.l;
                g += q * su.dl_dc * c_tok;
                if (clip_family) {
                    n_low += su.low;
                    n_high += su.high;
                    count_clip(&s, su.low, su.high);
                }
            }
            if (beta != 0) {
                double dkl, kl = kl_eval(cfg->kl_estimator, lp, b->ref_logp[t], &dkl);
                const double cb = bias ? c : 1.0; /* the ratio before the delta clamp */
                loss_t += beta * kl * cb;
                g += beta * dkl * cb;
                if (bias && !seq_level) g += beta * kl * c_tok;
                s.kl_sum += kl * cb; /* TRL logs the corrected KL */
            }
            s.policy_loss += w * loss_t;
            g_logp[t] = (float)(w * g);
            if (b->entropy) {
                s.entropy_sum += b->entropy[t];
                h_sum += e_t * (double)b->entropy[t];
            }
            if (g_ent) g_ent[t] = (float)(-cfg->entropy_coef * e_t * ent_w);
        }
        if (!seq_level && clip_family && p.n > 0) {
            double fl = (double)n_low / (double)p.n, fh = (double)n_high / (double)p.n;
            if (fl < s.clip_low_min) s.clip_low_min = fl;
            if (fh > s.clip_high_max) s.clip_high_max = fh;
        }
        s.n_tokens += (double)p.n;
    }
    s.loss = s.policy_loss;
    if (cfg->entropy_coef != 0) s.loss -= cfg->entropy_coef * h_sum * ent_w;
    s.bonus_entropy_sum = h_sum;
    s.bonus_tokens = b->entropy ? n_sel_all : 0;
    if (stats) *stats = s;
    return BASE_OK;
}

/* ------------------------------------------------------------------------ */
/* Adaptive entropy control                                                 */

void grpo_entropy_ctl_init(const grpo_config *c, grpo_entropy_ctl *e) {
    e->coef = c->entropy_coef;
    e->last_entropy = INFINITY;
}

double grpo_entropy_ctl_apply(const grpo_config *c, const grpo_entropy_ctl *e) {
    if (!c->use_adaptive_entropy) return c->entropy_coef;
    return e->last_entropy <= c->entropy_target ? e->coef : 0.0;
}

void grpo_entropy_ctl_update(const grpo_config *c, grpo_entropy_ctl *e, const grpo_loss_stats *step) {
    if (!c->use_adaptive_entropy) return;
    double h = step->bonus_entropy_sum / (step->bonus_tokens > 1 ? step->bonus_tokens : 1.0);
    if (h <= c->entropy_target) e->coef = fmin(e->coef + c->entropy_coef_delta, c->entropy_coef_max);
    else e->coef = fmax(e->coef - c->entropy_coef_delta, c->entropy_coef_min);
    e->last_entropy = h;
}

/* ------------------------------------------------------------------------ */
/* Importance-sampling correction                                           */

base_status grpo_is_correction(const grpo_config *cfg, int64_t n, int64_t stride, const int32_t *len,
                               const uint8_t *mask, const uint8_t *truncated, const float *old,
                               const float *sampling, float *ratio, grpo_is_stats *stats) {
    base_status st = grpo_config_check(cfg);
    if (st) return st;
    for (int64_t i = 0; i < n; i++)
        if (len[i] < 0 || len[i] > stride)
            return base_err_set(BASE_ERR_INVALID, "grpo_is_correction: completion %lld has %d tokens (row of %lld)",
                                (long long)i, len[i], (long long)stride);
    const grpo_is_correction_mode m = cfg->importance_sampling_mode;
    const int seq = m == GRPO_ISC_SEQUENCE_TRUNCATE || m == GRPO_ISC_SEQUENCE_MASK;
    const int mask_mode = m == GRPO_ISC_TOKEN_MASK || m == GRPO_ISC_SEQUENCE_MASK;
    const double lo = isnan(cfg->importance_sampling_clip_min) ? -INFINITY : cfg->importance_sampling_clip_min;
    const double hi = isnan(cfg->importance_sampling_clip_max) ? INFINITY : cfg->importance_sampling_clip_max;
    grpo_is_stats z = {0, 0, INFINITY, 0, -INFINITY};
    double diff_sum = 0, r_sum = 0, n_diff = 0, n_r = 0;
    for (int64_t i = 0; i < n; i++) {
        const int active = !(cfg->mask_truncated_completions && truncated && truncated[i]);
        const float *o = old + i * stride, *sp = sampling + i * stride;
        const uint8_t *mk = mask ? mask + i * stride : NULL;
        float *r = ratio + i * stride;
        double dsum = 0;
#define LOSS_TOKEN(t) ((t) < len[i] && active && (!mk || mk[t]))
        for (int64_t t = 0; t < stride; t++) {
            double d = LOSS_TOKEN(t) ? (double)o[t] - (double)sp[t] : 0.0;
            if (LOSS_TOKEN(t) && !isnan(d)) { /* the logp difference metric */
                diff_sum += fabs(d), n_diff++;
                if (fabs(d) > z.logp_diff_max) z.logp_diff_max = fabs(d);
            }
            if (!isnan(d)) dsum += d; /* no sampling logprob: no correction */
        }
        for (int64_t t = 0; t < stride; t++) {
            double d = LOSS_TOKEN(t) ? (double)o[t] - (double)sp[t] : 0.0;
            double x = exp(seq ? dsum : (isnan(d) ? 0.0 : d));
            if (mask_mode) x = x < lo || x > hi ? 0.0 : x;
            else x = x < lo ? lo : (x > hi ? hi : x);
            r[t] = (float)x;
            if ((seq && t == 0) || (!seq && LOSS_TOKEN(t))) {
                r_sum += x, n_r++;
                if (x < z.ratio_min) z.ratio_min = x;
                if (x > z.ratio_max) z.ratio_max = x;
            }
        }
    }
#undef LOSS_TOKEN
    z.logp_diff_mean = n_diff ? diff_sum / n_diff : 0.0;
    z.ratio_mean = n_r ? r_sum / n_r : 0.0;
    if (!n_r) z.ratio_min = z.ratio_max = 0.0;
    if (stats) *stats = z;
    return BASE_OK;
}
