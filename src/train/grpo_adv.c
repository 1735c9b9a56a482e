/*
 * grpo_adv: from rewards to advantages, the reward metrics, dynamic
 * sampling's group filter and the completion-length metrics. Mirrors TRL's
 * GRPOTrainer._generate_and_score_completions (sum_then_normalize:
 * nansum of weighted rewards, nanmean/nanstd (unbiased) per group or batch;
 * normalize_then_sum: GDPO), NaN advantages forced to 0. Arithmetic in double; results stored as float.
 */
#include "grpo.h"

#include <math.h>
#include <stdlib.h>

/* Validate the reward matrix and weights shared by the entry points. */
static base_status check_rewards(const float *rewards, int64_t n, int f, const float *w, int g) {
    if (f < 1 || f > GRPO_MAX_REWARD_FUNCS)
        return base_err_set(BASE_ERR_INVALID, "grpo: %d reward functions (expected 1..%d)", f,
                            GRPO_MAX_REWARD_FUNCS);
    if (g < 1) return base_err_set(BASE_ERR_INVALID, "grpo: group size %d (expected >= 1)", g);
    if (n < 1 || n % g)
        return base_err_set(BASE_ERR_INVALID,
                            "grpo: %lld samples is not a positive multiple of the group size %d",
                            (long long)n, g);
    for (int j = 0; w && j < f; j++)
        if (!isfinite(w[j]))
            return base_err_set(BASE_ERR_INVALID, "grpo: reward weight %d is %g", j, w[j]);
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < f; j++)
            if (isinf(rewards[i * f + j]))
                return base_err_set(BASE_ERR_INVALID,
                                    "grpo: sample %lld: reward function %d returned %g "
                                    "(use nil to skip a sample)",
                                    (long long)i, j, rewards[i * f + j]);
    return BASE_OK;
}

/* Weighted nansum of one sample's rewards; NaN when every function is nil. */
static double combine(const float *row, int f, const float *w) {
    double s = 0;
    int any = 0;
    for (int j = 0; j < f; j++) {
        if (isnan(row[j])) continue;
        s += (double)(w ? w[j] : 1.0f) * row[j];
        any = 1;
    }
    return any ? s : NAN;
}

/* nanmean / unbiased nanstd of n values: xd[0..n) when xd is given, else
 * xf[0], xf[stride], ... (a reward column). The std is NaN with fewer than
 * 2 values, as TRL's nanstd; the mean is NaN with none. */
static void nan_mean_std_at(const double *xd, const float *xf, int64_t n, int64_t stride, double *mean,
                            double *std) {
#define X(i) (xd ? xd[i] : (double)xf[(i) * stride])
    double s = 0;
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++)
        if (!isnan(X(i))) s += X(i), c++;
    double mu = c ? s / (double)c : NAN;
    double q = 0;
    for (int64_t i = 0; i < n; i++)
        if (!isnan(X(i))) q += (X(i) - mu) * (X(i) - mu);
#undef X
    if (mean) *mean = mu;
    if (std) *std = c > 1 ? sqrt(q / (double)(c - 1)) : NAN;
}

static void nan_mean_std(const double *x, int64_t n, double *mean, double *std) {
    nan_mean_std_at(x, NULL, n, 1, mean, std);
}

static void nan_mean_std_f(const float *x, int64_t n, int64_t stride, double *mean, double *std) {
    nan_mean_std_at(NULL, x, n, stride, mean, std);
}

/* torch.isclose(std, 0): |std| <= atol 1e-8 (NaN is not close). */
static int std_is_zero(double s) { return !isnan(s) && fabs(s) <= 1e-8; }

/* GDPO's advantages (normalize_then_sum, see grpo.h): each function
 * normalised within its group, the weighted nansum, then normalised over the
 * batch. r: [N] scratch (double). Returns the samples whose batch std is ~0
 * (all or none). adv: [N] overwritten. */
static int64_t normalize_then_sum(const grpo_config *cfg, const float *rewards, int64_t n, int nf,
                                  const float *weights, int g, double *r, float *adv) {
    for (int64_t i = 0; i < n; i++) r[i] = 0;
    for (int j = 0; j < nf; j++) {
        const double wj = weights ? (double)weights[j] : 1.0;
        for (int64_t g0 = 0; g0 < n; g0 += g) {
            const float *col = rewards + g0 * nf + j; /* stride nf */
            double mean, std;
            nan_mean_std_f(col, g, nf, &mean, &std);
            if (g == 1) std = 0; /* TRL: no std with one generation */
            for (int k = 0; k < g; k++) {
                double z = ((double)col[k * nf] - mean) / (std + cfg->scale_rewards_eps);
                if (!isnan(z)) r[g0 + k] += wj * z; /* nansum: all-NaN sums to 0 */
            }
        }
    }
    for (int64_t i = 0; i < n; i++) /* unscorable: every function nil */
        if (isnan(combine(rewards + i * nf, nf, weights))) r[i] = NAN;
    double mean, std = 0;
    nan_mean_std(r, n, &mean, n > 1 ? &std : NULL);
    for (int64_t i = 0; i < n; i++) {
        double a = (r[i] - mean) / (std + cfg->scale_rewards_eps);
        adv[i] = isnan(a) ? 0.0f : (float)a;
    }
    return std_is_zero(std) ? n : 0;
}

base_status grpo_advantages(const grpo_config *cfg, const float *rewards, int64_t n_samples,
                            int n_funcs, const float *weights, int group_size, float *adv,
                            float *total, grpo_reward_stats *stats) {
    double *ws = base_xmalloc((size_t)(n_samples > 0 ? n_samples : 1) * sizeof(double));
    base_status st = grpo_advantages_ws(cfg, rewards, n_samples, n_funcs, weights, group_size, adv, total, stats, ws);
    free(ws);
    return st;
}

base_status grpo_advantages_ws(const grpo_config *cfg, const float *rewards, int64_t n_samples,
                               int n_funcs, const float *weights, int group_size, float *adv,
                               float *total, grpo_reward_stats *stats, double *r) {
    base_status st = check_rewards(rewards, n_samples, n_funcs, weights, group_size);
    if (st) return st;
    int64_t zero_std = 0;
    if (cfg->multi_objective_aggregation == GRPO_AGG_NORMALIZE_THEN_SUM)
        zero_std = normalize_then_sum(cfg, rewards, n_samples, n_funcs, weights, group_size, r, adv);
    int64_t unscorable = 0;
    for (int64_t i = 0; i < n_samples; i++) {
        r[i] = combine(rewards + i * n_funcs, n_funcs, weights);
        if (isnan(r[i])) unscorable++;
        if (total) total[i] = (float)r[i];
    }
    if (cfg->multi_objective_aggregation == GRPO_AGG_SUM_THEN_NORMALIZE) {
        double batch_std = 0;
        if (cfg->scale_rewards == GRPO_SCALE_BATCH && n_samples > 1)
            nan_mean_std(r, n_samples, NULL, &batch_std);
        for (int64_t g0 = 0; g0 < n_samples; g0 += group_size) {
            double mean, std;
            nan_mean_std(r + g0, group_size, &mean, &std);
            if (cfg->scale_rewards == GRPO_SCALE_BATCH) std = batch_std;
            else if (group_size == 1) std = 0; /* TRL: no std with one generation */
            for (int64_t i = g0; i < g0 + group_size; i++) {
                double a = r[i] - mean;
                if (cfg->scale_rewards != GRPO_SCALE_NONE) a /= std + cfg->scale_rewards_eps;
                adv[i] = isnan(a) ? 0.0f : (float)a;
                zero_std += std_is_zero(std);
            }
        }
    }
    if (stats) {
        stats->n_funcs = n_funcs;
        stats->n_unscorable = unscorable;
        nan_mean_std(r, n_samples, &stats->reward, &stats->reward_std);
        stats->frac_reward_zero_std = (double)zero_std / (double)n_samples;
        for (int j = 0; j < n_funcs; j++)
            nan_mean_std_f(rewards + j, n_samples, n_funcs, &stats->func_mean[j], &stats->func_std[j]);
    }
    return BASE_OK;
}

base_status grpo_filter_groups(const float *rewards, int64_t n_samples, int n_funcs,
                               const float *weights, int group_size, int metric_func,
                               int64_t target_groups, uint8_t *keep, int64_t *n_kept,
                               int64_t *n_refill) {
    base_status st = check_rewards(rewards, n_samples, n_funcs, weights, group_size);
    if (st) return st;
    if (metric_func >= n_funcs)
        return base_err_set(BASE_ERR_INVALID,
                            "grpo: dynamic sampling metric is reward function %d of %d",
                            metric_func, n_funcs);
    int64_t kept = 0;
    for (int64_t g = 0; g < n_samples / group_size; g++) {
        double first = NAN;
        int distinct = 0;
        for (int64_t i = g * group_size; i < (g + 1) * group_size && !distinct; i++) {
            const float *row = rewards + i * n_funcs;
            double x = metric_func < 0 ? combine(row, n_funcs, weights) : (double)row[metric_func];
            if (isnan(x)) continue;
            if (isnan(first)) first = x;
            else if (x != first) distinct = 1;
        }
        keep[g] = (uint8_t)distinct;
        kept += distinct;
    }
    *n_kept = kept;
    *n_refill = target_groups > kept ? target_groups - kept : 0;
    return BASE_OK;
}

void grpo_completion_stats_compute(const int64_t *lengths, const uint8_t *truncated, int64_t n,
                                   grpo_completion_stats *out) {
    grpo_completion_stats s = {0};
    if (n <= 0) {
        *out = s;
        return;
    }
    double sum = 0, tsum = 0;
    int64_t nt = 0, ntrunc = 0;
    s.min_length = s.max_length = (double)lengths[0];
    for (int64_t i = 0; i < n; i++) {
        double l = (double)lengths[i];
        sum += l;
        if (l < s.min_length) s.min_length = l;
        if (l > s.max_length) s.max_length = l;
        if (truncated && truncated[i]) {
            ntrunc++;
            continue;
        }
        if (nt == 0 || l < s.min_terminated_length) s.min_terminated_length = l;
        if (nt == 0 || l > s.max_terminated_length) s.max_terminated_length = l;
        tsum += l;
        nt++;
    }
    s.mean_length = sum / (double)n;
    s.clipped_ratio = (double)ntrunc / (double)n;
    s.mean_terminated_length = nt ? tsum / (double)nt : 0.0;
    *out = s;
}
