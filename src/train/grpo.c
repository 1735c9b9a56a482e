/*
 * grpo: the options and the GRPO loss over per-token arrays, with its
 * gradient w.r.t. the policy logprobs (and entropies for the bonus).
 * Reference: TRL GRPOTrainer._compute_loss (loss_type grpo/bnpo/dr_grpo/
 * dapo, importance_sampling_level token/sequence, delta, entropy_coef) and
 * DeepSeekMath's Eq. for GRPO. The gradient is written by hand (the chain
 * rule through ratio, clip, min and KL) and checked against finite
 * differences in tests/train/test_grpo.c.
 */
#include "grpo.h"

#include <math.h>
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
    c->importance_sampling_level = GRPO_IS_TOKEN;
}

double grpo_epsilon_high(const grpo_config *c) {
    return c->epsilon_high < 0 ? c->epsilon : c->epsilon_high;
}

base_status grpo_config_check(const grpo_config *c) {
#define BAD(...) return base_err_set(BASE_ERR_INVALID, "grpo config: " __VA_ARGS__)
    if ((unsigned)c->loss_type > GRPO_LOSS_DAPO) BAD("loss_type %d is unknown", (int)c->loss_type);
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
#undef BAD
    return BASE_OK;
}

int grpo_needs_ref_logp(const grpo_config *c) { return c->beta != 0.0; }
int grpo_needs_old_logp(const grpo_config *c) {
    return c->num_iterations > 1 || c->steps_per_generation > 1;
}

static const char *const loss_names[] = {"grpo", "bnpo", "dr_grpo", "dapo"};
static const char *const scale_names[] = {"group", "batch", "none"};
static const char *const kl_names[] = {"k3", "k1", "k2"};
static const char *const is_names[] = {"token", "sequence"};

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
#undef NAME_FUNCS

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
    acc->has_kl |= s->has_kl;
    acc->has_entropy |= s->has_entropy;
}

void grpo_loss_metrics_finish(const grpo_loss_stats *s, grpo_loss_metrics *m) {
    double nt = s->n_tokens > 1 ? s->n_tokens : 1; /* TRL clamp(min=1) */
    double nc = s->clip_count > 1 ? s->clip_count : 1;
    m->loss = s->loss;
    m->policy_loss = s->policy_loss;
    m->kl = s->has_kl ? s->kl_sum / nt : NAN;
    m->entropy = s->has_entropy ? s->entropy_sum / nt : NAN;
    m->clip_ratio_low_mean = s->clip_low_sum / nc;
    m->clip_ratio_high_mean = s->clip_high_sum / nc;
    m->clip_ratio_region_mean = s->clip_region_sum / nc;
    m->clip_ratio_low_min = isinf(s->clip_low_min) ? NAN : s->clip_low_min;
    m->clip_ratio_high_max = isinf(s->clip_high_max) ? NAN : s->clip_high_max;
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
    if ((cfg->loss_type == GRPO_LOSS_GRPO || cfg->loss_type == GRPO_LOSS_DR_GRPO) &&
        norm->n_seqs < b->n_seqs)
        BAD("norm.n_seqs = %lld but this micro-batch alone has %lld sequences",
            (long long)norm->n_seqs, (long long)b->n_seqs);
    if ((cfg->loss_type == GRPO_LOSS_DAPO || cfg->entropy_coef != 0) && norm->n_tokens < n_local)
        BAD("norm.n_tokens = %lld but this micro-batch alone has %lld loss tokens",
            (long long)norm->n_tokens, (long long)n_local);
    if (cfg->loss_type == GRPO_LOSS_BNPO && norm->n_micro < 1)
        BAD("norm.n_micro = %lld (expected >= 1)", (long long)norm->n_micro);
    return BASE_OK;
}
#undef BAD

base_status grpo_loss(const grpo_config *cfg, const grpo_batch *b, const grpo_norm *norm,
                      float *g_logp, float *g_ent, grpo_loss_stats *stats) {
    base_status st = grpo_config_check(cfg);
    if (st) return st;
    if ((st = check_offsets(b))) return st;
    int64_t n_local = grpo_count_loss_tokens(cfg, b);
    if ((st = check_batch(cfg, b, norm, n_local, g_ent))) return st;

    grpo_loss_stats s;
    grpo_loss_stats_init(&s);
    s.has_kl = grpo_needs_ref_logp(cfg);
    s.has_entropy = b->entropy != NULL;
    const double lo = 1.0 - cfg->epsilon, hi = 1.0 + grpo_epsilon_high(cfg);
    const double delta = cfg->delta, beta = cfg->beta;
    const double n_tok_step = norm->n_tokens > 1 ? (double)norm->n_tokens : 1.0;
    const int seq_level = cfg->importance_sampling_level == GRPO_IS_SEQUENCE;

    for (int64_t i = 0; i < b->n_seqs; i++) {
        const int64_t t0 = b->offsets[i], t1 = b->offsets[i + 1];
        int64_t n_i = 0;
        double log_w = 0; /* sum of logp - old over the sequence (sequence level) */
        for (int64_t t = t0; t < t1; t++) {
            if (!token_active(cfg, b, i, t)) continue;
            n_i++;
            if (b->old_logp) log_w += (double)b->logp[t] - (double)b->old_logp[t];
        }
        double w; /* aggregation weight of each loss token of this sequence */
        switch (cfg->loss_type) {
        case GRPO_LOSS_GRPO: w = n_i ? 1.0 / ((double)n_i * (double)norm->n_seqs) : 0.0; break;
        case GRPO_LOSS_BNPO:
            w = 1.0 / ((n_local > 1 ? (double)n_local : 1.0) * (double)norm->n_micro);
            break;
        case GRPO_LOSS_DR_GRPO:
            w = 1.0 / ((double)norm->n_seqs * (double)cfg->max_completion_length);
            break;
        case GRPO_LOSS_DAPO:
        default: w = 1.0 / n_tok_step; break;
        }
        const double a = b->advantages[i];
        /* sequence level: one ratio for the sequence, each token's share of
         * its gradient is c * m_t / max(n_i, 1) */
        surrogate ss = {0};
        double c_seq = 1.0, n_div = n_i > 1 ? (double)n_i : 1.0;
        if (seq_level) {
            c_seq = exp(log_w / n_div);
            ss = surrogate_eval(c_seq, a, lo, hi, delta);
            s.policy_loss += w * (double)n_i * ss.l;
            s.clip_count += 1;
            s.clip_low_sum += ss.low;
            s.clip_high_sum += ss.high;
            s.clip_region_sum += ss.low || ss.high;
            if (ss.low < s.clip_low_min) s.clip_low_min = ss.low;
            if (ss.high > s.clip_high_max) s.clip_high_max = ss.high;
        }
        int64_t n_low = 0, n_high = 0;
        for (int64_t t = t0; t < t1; t++) {
            if (!token_active(cfg, b, i, t)) {
                g_logp[t] = 0.0f;
                if (g_ent) g_ent[t] = 0.0f;
                continue;
            }
            const double lp = b->logp[t];
            double loss_t = 0, g = 0;
            if (seq_level) {
                g = (double)n_i * ss.dl_dc * c_seq / n_div;
            } else {
                double c = b->old_logp ? exp(lp - (double)b->old_logp[t]) : 1.0;
                surrogate su = surrogate_eval(c, a, lo, hi, delta);
                loss_t = su.l;
                g = su.dl_dc * c; /* dc/dlogp = c, also when old = sg(logp) */
                n_low += su.low;
                n_high += su.high;
                s.clip_count += 1;
                s.clip_low_sum += su.low;
                s.clip_high_sum += su.high;
                s.clip_region_sum += su.low || su.high;
            }
            if (beta != 0) {
                double dkl, kl = kl_eval(cfg->kl_estimator, lp, b->ref_logp[t], &dkl);
                loss_t += beta * kl;
                g += beta * dkl;
                s.kl_sum += kl;
            }
            s.policy_loss += w * loss_t;
            g_logp[t] = (float)(w * g);
            if (b->entropy) s.entropy_sum += b->entropy[t];
            if (g_ent) g_ent[t] = (float)(-cfg->entropy_coef / n_tok_step);
        }
        if (!seq_level && n_i > 0) {
            double fl = (double)n_low / (double)n_i, fh = (double)n_high / (double)n_i;
            if (fl < s.clip_low_min) s.clip_low_min = fl;
            if (fh > s.clip_high_max) s.clip_high_max = fh;
        }
        s.n_tokens += (double)n_i;
    }
    s.loss = s.policy_loss;
    if (cfg->entropy_coef != 0) s.loss -= cfg->entropy_coef * s.entropy_sum / n_tok_step;
    if (stats) *stats = s;
    return BASE_OK;
}
