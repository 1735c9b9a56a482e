/* Tests of src/train/grpo*.c: advantages and reward metrics against values
 * worked out by hand (closed forms in the comments), every loss option on a
 * hand-computed batch, and finite differences of the whole loss w.r.t.
 * logp and ent over every combination of options. The comparison with
 * TRL's formulas in torch is in test_grpo_torch.c. */
#include "common/test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/grpo.h"

#define NEAR(got, want, tol)                                                                 \
    do {                                                                                     \
        double g_ = (got), w_ = (want);                                                      \
        if (!(fabs(g_ - w_) <= (tol) * (1.0 + fabs(w_)))) {                                 \
            fprintf(stderr, "%s:%d: %s = %.9g, want %.9g\n", __FILE__, __LINE__, #got, g_, w_); \
            fail();                                                                          \
        }                                                                                    \
    } while (0)

static const double EPS = 1e-4; /* TRL's std epsilon */

/* ---- advantages -------------------------------------------------------- */

static void test_adv_group(void **state) {
    (void)state;
    grpo_config c;
    grpo_config_default(&c);
    float r[8] = {1, 0, 0, 1, 2, 2, 2, 2};
    float adv[8], tot[8];
    grpo_reward_stats st;
    assert_int_equal(grpo_advantages(&c, r, 8, 1, NULL, 4, adv, tot, &st), BASE_OK);
    /* group 1: mean 0.5, unbiased std sqrt((4 * 0.25) / 3) */
    double a = 0.5 / (sqrt(1.0 / 3.0) + EPS);
    NEAR(adv[0], a, 1e-6);
    NEAR(adv[1], -a, 1e-6);
    NEAR(adv[2], -a, 1e-6);
    NEAR(adv[3], a, 1e-6);
    for (int i = 4; i < 8; i++) assert_true(adv[i] == 0.0f); /* std 0: 0 / (0 + eps) */
    NEAR(st.frac_reward_zero_std, 0.5, 1e-12);
    NEAR(st.reward, 10.0 / 8.0, 1e-12);
    /* deviations from 1.25: squares sum to 5.5, / 7 */
    NEAR(st.reward_std, sqrt(5.5 / 7.0), 1e-9);
    NEAR(st.func_mean[0], 1.25, 1e-12);
    NEAR(st.func_std[0], sqrt(5.5 / 7.0), 1e-9);
    assert_int_equal(st.n_unscorable, 0);
    assert_true(tot[4] == 2.0f);
}

static void test_adv_batch_and_none(void **state) {
    (void)state;
    grpo_config c;
    grpo_config_default(&c);
    float r[8] = {1, 0, 0, 1, 2, 2, 2, 2};
    float adv[8];
    grpo_reward_stats st;
    c.scale_rewards = GRPO_SCALE_BATCH; /* group mean, batch std */
    assert_int_equal(grpo_advantages(&c, r, 8, 1, NULL, 4, adv, NULL, &st), BASE_OK);
    double a = 0.5 / (sqrt(5.5 / 7.0) + EPS);
    NEAR(adv[0], a, 1e-6);
    NEAR(adv[1], -a, 1e-6);
    for (int i = 4; i < 8; i++) assert_true(adv[i] == 0.0f);
    NEAR(st.frac_reward_zero_std, 0.0, 1e-12); /* the batch std is not 0 */

    c.scale_rewards = GRPO_SCALE_NONE; /* Dr. GRPO: r - mean only */
    assert_int_equal(grpo_advantages(&c, r, 8, 1, NULL, 4, adv, NULL, &st), BASE_OK);
    NEAR(adv[0], 0.5, 1e-7);
    NEAR(adv[1], -0.5, 1e-7);
    for (int i = 4; i < 8; i++) assert_true(adv[i] == 0.0f);
    NEAR(st.frac_reward_zero_std, 0.5, 1e-12); /* logged from the group std */
}

static void test_adv_weights_and_nil(void **state) {
    (void)state;
    grpo_config c;
    grpo_config_default(&c);
    const float N = NAN;
    /* F = 2, weights (1, 0.5), G = 4:
     *   [1, 2] -> 2; [nil, 6] -> 3; [nil, nil] -> unscorable; [0, nil] -> 0 */
    float r[8] = {1, 2, N, 6, N, N, 0, N};
    float w[2] = {1.0f, 0.5f};
    float adv[4], tot[4];
    grpo_reward_stats st;
    assert_int_equal(grpo_advantages(&c, r, 4, 2, w, 4, adv, tot, &st), BASE_OK);
    /* scorable 2, 3, 0: mean 5/3; squares (1/9 + 16/9 + 25/9) / 2 = 7/3 */
    double s = sqrt(7.0 / 3.0) + EPS;
    NEAR(adv[0], (2 - 5.0 / 3.0) / s, 1e-6);
    NEAR(adv[1], (3 - 5.0 / 3.0) / s, 1e-6);
    assert_true(adv[2] == 0.0f); /* unscorable: advantage 0 */
    NEAR(adv[3], (0 - 5.0 / 3.0) / s, 1e-6);
    assert_true(isnan(tot[2]));
    NEAR(tot[1], 3.0, 0);
    assert_int_equal(st.n_unscorable, 1);
    NEAR(st.reward, 5.0 / 3.0, 1e-9);
    NEAR(st.reward_std, sqrt(7.0 / 3.0), 1e-9);
    NEAR(st.func_mean[0], 0.5, 1e-12); /* 1, 0 */
    NEAR(st.func_std[0], sqrt(0.5), 1e-9);
    NEAR(st.func_mean[1], 4.0, 1e-12); /* 2, 6 */
    NEAR(st.func_std[1], sqrt(8.0), 1e-9);
    NEAR(st.frac_reward_zero_std, 0.0, 0);

    /* one scorable sample in a group: std NaN, advantages 0, not "zero std" */
    float r2[2] = {1, N};
    float adv2[2];
    assert_int_equal(grpo_advantages(&c, r2, 2, 1, NULL, 2, adv2, NULL, &st), BASE_OK);
    assert_true(adv2[0] == 0.0f && adv2[1] == 0.0f);
    NEAR(st.frac_reward_zero_std, 0.0, 0);
    assert_true(isnan(st.reward_std));

    /* G = 1: std taken as 0 (TRL), advantage 0, every group "zero std" */
    assert_int_equal(grpo_advantages(&c, r2, 2, 1, NULL, 1, adv2, NULL, &st), BASE_OK);
    assert_true(adv2[0] == 0.0f && adv2[1] == 0.0f);
    NEAR(st.frac_reward_zero_std, 1.0, 0);
}

static void test_adv_errors(void **state) {
    (void)state;
    grpo_config c;
    grpo_config_default(&c);
    float r[4] = {1, 0, INFINITY, 1};
    float adv[4];
    assert_int_equal(grpo_advantages(&c, r, 4, 1, NULL, 2, adv, NULL, NULL), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "sample 2"));
    r[2] = 0;
    assert_int_equal(grpo_advantages(&c, r, 4, 1, NULL, 3, adv, NULL, NULL), BASE_ERR_INVALID);
    assert_int_equal(grpo_advantages(&c, r, 4, 0, NULL, 2, adv, NULL, NULL), BASE_ERR_INVALID);
    assert_int_equal(grpo_advantages(&c, r, 4, 1, NULL, 2, adv, NULL, NULL), BASE_OK);
}

static void test_filter_groups(void **state) {
    (void)state;
    const float N = NAN;
    /* G = 3: [1 1 1] all equal, [0 1 0] mixed, [nil 1 nil] one value,
     * [nil nil nil] nothing */
    float r[12] = {1, 1, 1, 0, 1, 0, N, 1, N, N, N, N};
    uint8_t keep[4];
    int64_t kept, refill;
    assert_int_equal(grpo_filter_groups(r, 12, 1, NULL, 3, -1, 4, keep, &kept, &refill), BASE_OK);
    assert_int_equal(keep[0], 0);
    assert_int_equal(keep[1], 1);
    assert_int_equal(keep[2], 0);
    assert_int_equal(keep[3], 0);
    assert_int_equal(kept, 1);
    assert_int_equal(refill, 3);
    /* metric = one function: F = 2 where function 1 is constant but the
     * weighted sum is not */
    float r2[6] = {1, 5, 0, 5, 1, 5};
    uint8_t k2[1];
    assert_int_equal(grpo_filter_groups(r2, 3, 2, NULL, 3, 1, 1, k2, &kept, &refill), BASE_OK);
    assert_int_equal(k2[0], 0);
    assert_int_equal(refill, 1);
    assert_int_equal(grpo_filter_groups(r2, 3, 2, NULL, 3, -1, 1, k2, &kept, &refill), BASE_OK);
    assert_int_equal(k2[0], 1);
    assert_int_equal(refill, 0);
    assert_int_equal(grpo_filter_groups(r2, 3, 2, NULL, 3, 2, 1, k2, &kept, &refill),
                     BASE_ERR_INVALID);
}

static void test_completion_stats(void **state) {
    (void)state;
    int64_t len[4] = {3, 5, 10, 10};
    uint8_t tr[4] = {0, 0, 1, 1};
    grpo_completion_stats s;
    grpo_completion_stats_compute(len, tr, 4, &s);
    NEAR(s.mean_length, 7, 0);
    NEAR(s.min_length, 3, 0);
    NEAR(s.max_length, 10, 0);
    NEAR(s.clipped_ratio, 0.5, 0);
    NEAR(s.mean_terminated_length, 4, 0);
    NEAR(s.min_terminated_length, 3, 0);
    NEAR(s.max_terminated_length, 5, 0);
    uint8_t all[2] = {1, 1};
    grpo_completion_stats_compute(len, all, 2, &s);
    NEAR(s.mean_terminated_length, 0, 0);
    NEAR(s.max_terminated_length, 0, 0);
    NEAR(s.clipped_ratio, 1, 0);
}

static void test_names(void **state) {
    (void)state;
    grpo_loss_type lt;
    assert_int_equal(grpo_loss_type_parse("dr_grpo", &lt), BASE_OK);
    assert_int_equal(lt, GRPO_LOSS_DR_GRPO);
    assert_string_equal(grpo_loss_type_name(GRPO_LOSS_DAPO), "dapo");
    assert_int_equal(grpo_loss_type_parse("ppo", &lt), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "bnpo"));
    grpo_scale_rewards sr;
    assert_int_equal(grpo_scale_rewards_parse("none", &sr), BASE_OK);
    assert_int_equal(sr, GRPO_SCALE_NONE);
    grpo_kl_estimator k;
    assert_int_equal(grpo_kl_estimator_parse("k2", &k), BASE_OK);
    assert_int_equal(k, GRPO_KL_K2);
    grpo_is_level l;
    assert_int_equal(grpo_is_level_parse("sequence", &l), BASE_OK);
    assert_int_equal(l, GRPO_IS_SEQUENCE);
    grpo_config c;
    grpo_config_default(&c);
    assert_int_equal(grpo_config_check(&c), BASE_OK);
    assert_false(grpo_needs_ref_logp(&c));
    assert_false(grpo_needs_old_logp(&c));
    NEAR(grpo_epsilon_high(&c), 0.2, 1e-7);
    c.beta = -1;
    assert_int_equal(grpo_config_check(&c), BASE_ERR_INVALID);
    c.beta = 0.001f;
    assert_true(grpo_needs_ref_logp(&c));
    c.num_iterations = 2;
    assert_true(grpo_needs_old_logp(&c));
    c.num_iterations = 0;
    assert_int_equal(grpo_config_check(&c), BASE_ERR_INVALID);
}

/* ---- the loss on hand-computed batches ------------------------------- */

/* Two on-policy sequences: 3 tokens with A = 1 and 2 tokens with A = -0.5.
 * Ratio 1 everywhere, so each token's loss is -A and its gradient -A * w. */
static void onpolicy_batch(grpo_batch *b, int64_t *off, float *adv, float *lp) {
    off[0] = 0, off[1] = 3, off[2] = 5;
    adv[0] = 1.0f, adv[1] = -0.5f;
    for (int i = 0; i < 5; i++) lp[i] = -0.3f * (float)(i + 1);
    memset(b, 0, sizeof *b);
    b->n_seqs = 2;
    b->offsets = off;
    b->advantages = adv;
    b->logp = lp;
}

static void test_loss_types_onpolicy(void **state) {
    (void)state;
    grpo_config c;
    grpo_config_default(&c);
    grpo_batch b;
    int64_t off[3];
    float adv[2], lp[5], g[5];
    onpolicy_batch(&b, off, adv, lp);
    grpo_norm nm = {.n_seqs = 2, .n_tokens = 5, .n_micro = 1};
    grpo_loss_stats s;
    grpo_loss_metrics m;

    /* grpo: (1/2) [(1/3)(3 * -1) + (1/2)(2 * 0.5)] */
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, &s), BASE_OK);
    NEAR(s.loss, -0.25, 1e-12);
    for (int t = 0; t < 3; t++) NEAR(g[t], -1.0 / 6.0, 1e-7);
    for (int t = 3; t < 5; t++) NEAR(g[t], 0.5 / 4.0, 1e-7);
    grpo_loss_metrics_finish(&s, &m);
    assert_true(isnan(m.kl)); /* beta = 0: not computed */
    assert_true(isnan(m.entropy));
    NEAR(m.clip_ratio_region_mean, 0, 0);

    /* old = logp given explicitly: identical to the detached shortcut */
    float g2[5];
    b.old_logp = lp;
    grpo_loss_stats s2;
    assert_int_equal(grpo_loss(&c, &b, &nm, g2, NULL, &s2), BASE_OK);
    assert_memory_equal(g, g2, sizeof g);
    assert_true(s.loss == s2.loss);
    b.old_logp = NULL;

    /* bnpo: local token mean, / n_micro */
    c.loss_type = GRPO_LOSS_BNPO;
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, &s), BASE_OK);
    NEAR(s.loss, (3 * -1.0 + 2 * 0.5) / 5.0, 1e-12);
    NEAR(g[0], -1.0 / 5.0, 1e-7);
    NEAR(g[4], 0.5 / 5.0, 1e-7);
    nm.n_micro = 2;
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, &s), BASE_OK);
    NEAR(s.loss, (3 * -1.0 + 2 * 0.5) / 10.0, 1e-12);
    nm.n_micro = 1;

    /* dr_grpo: sum / (S * max_completion_length), L = 4 */
    c.loss_type = GRPO_LOSS_DR_GRPO;
    c.max_completion_length = 4;
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, &s), BASE_OK);
    NEAR(s.loss, (3 * -1.0 + 2 * 0.5) / 8.0, 1e-12);
    NEAR(g[0], -1.0 / 8.0, 1e-7);
    NEAR(g[4], 0.5 / 8.0, 1e-7);

    /* dapo: global token count of a step with other micro-batches (10) */
    c.loss_type = GRPO_LOSS_DAPO;
    nm.n_tokens = 10;
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, &s), BASE_OK);
    NEAR(s.loss, (3 * -1.0 + 2 * 0.5) / 10.0, 1e-12);
    NEAR(g[0], -0.1, 1e-7);
    NEAR(g[4], 0.05, 1e-7);
    /* a step count below the micro-batch's own is a caller error */
    nm.n_tokens = 4;
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, &s), BASE_ERR_INVALID);
}

/* Off-policy token ratios: seq 0 (A = +1) ratios 1.5, 1.1, 0.5; seq 1
 * (A = -1) ratios 0.5, 1.5; epsilon 0.2.
 *   1.5, A=+1: min(1.5, 1.2) = 1.2 clipped: loss -1.2, grad 0 (high clip)
 *   1.1, A=+1: loss -1.1, grad -1.1
 *   0.5, A=+1: min(0.5, 0.8) = 0.5: loss -0.5, grad -0.5 (no flag: A > 0)
 *   0.5, A=-1: min(-0.5, -0.8) = -0.8 clipped: loss 0.8, grad 0 (low clip)
 *   1.5, A=-1: min(-1.5, -1.2) = -1.5: loss 1.5, grad 1.5 */
static void offpolicy_batch(grpo_batch *b, int64_t *off, float *adv, float *lp, float *old,
                            const double *ratio) {
    off[0] = 0, off[1] = 3, off[2] = 5;
    adv[0] = 1.0f, adv[1] = -1.0f;
    for (int t = 0; t < 5; t++) {
        old[t] = -1.0f;
        lp[t] = (float)(-1.0 + log(ratio[t]));
    }
    memset(b, 0, sizeof *b);
    b->n_seqs = 2;
    b->offsets = off;
    b->advantages = adv;
    b->logp = lp;
    b->old_logp = old;
}

static void test_clip(void **state) {
    (void)state;
    const double ratio[5] = {1.5, 1.1, 0.5, 0.5, 1.5};
    grpo_config c;
    grpo_config_default(&c);
    c.num_iterations = 2;
    grpo_batch b;
    int64_t off[3];
    float adv[2], lp[5], old[5], g[5];
    offpolicy_batch(&b, off, adv, lp, old, ratio);
    grpo_norm nm = {.n_seqs = 2, .n_tokens = 5, .n_micro = 1};
    grpo_loss_stats s;
    grpo_loss_metrics m;
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, &s), BASE_OK);
    NEAR(s.loss, 0.5 * ((-1.2 - 1.1 - 0.5) / 3.0 + (0.8 + 1.5) / 2.0), 1e-6);
    NEAR(g[0], 0, 0);
    NEAR(g[1], -1.1 / 6.0, 1e-6);
    NEAR(g[2], -0.5 / 6.0, 1e-6);
    NEAR(g[3], 0, 0);
    NEAR(g[4], 1.5 / 4.0, 1e-6);
    grpo_loss_metrics_finish(&s, &m);
    NEAR(m.clip_ratio_low_mean, 1.0 / 5.0, 1e-12);
    NEAR(m.clip_ratio_high_mean, 1.0 / 5.0, 1e-12);
    NEAR(m.clip_ratio_region_mean, 2.0 / 5.0, 1e-12);
    NEAR(m.clip_ratio_low_min, 0.0, 0);        /* seq 0: 0/3, seq 1: 1/2 */
    NEAR(m.clip_ratio_high_max, 1.0 / 3.0, 1e-12); /* seq 0: 1/3, seq 1: 0/2 */

    /* clip-higher: epsilon_high 0.6 leaves 1.5 unclipped for A > 0 */
    c.epsilon_high = 0.6f;
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, &s), BASE_OK);
    NEAR(s.loss, 0.5 * ((-1.5 - 1.1 - 0.5) / 3.0 + (0.8 + 1.5) / 2.0), 1e-6);
    NEAR(g[0], -1.5 / 6.0, 1e-6);
    grpo_loss_metrics_finish(&s, &m);
    NEAR(m.clip_ratio_high_mean, 0, 0);

    /* delta = 1.3 caps the unclipped ratio: 1.5 with A = -1 gives
     * min(-1.3, -1.2) = -1.3: loss 1.3 and no gradient */
    c.epsilon_high = -1;
    c.delta = 1.3f;
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, &s), BASE_OK);
    NEAR(s.loss, 0.5 * ((-1.2 - 1.1 - 0.5) / 3.0 + (0.8 + 1.3) / 2.0), 1e-6);
    NEAR(g[4], 0, 0);
    NEAR(g[1], -1.1 / 6.0, 1e-6);

    /* without old_logp the ratio is 1 and mu > 1 is refused */
    b.old_logp = NULL;
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, &s), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "old_logp"));
}

/* KL: one sequence, A = 0 (so only beta * KL remains), tokens
 * (logp, ref) = (-1, -1.5): d = ref - logp = -0.5, and (-2, -1): d = 1.
 *   k3 = e^d - d - 1, dk3/dlogp = 1 - e^d;  k1 = -d, 1;  k2 = d^2/2, -d */
static void test_kl(void **state) {
    (void)state;
    int64_t off[2] = {0, 2};
    float adv[1] = {0}, lp[2] = {-1, -2}, ref[2] = {-1.5f, -1}, g[2];
    grpo_batch b = {.n_seqs = 1, .offsets = off, .advantages = adv, .logp = lp, .ref_logp = ref};
    grpo_norm nm = {.n_seqs = 1, .n_tokens = 2, .n_micro = 1};
    grpo_config c;
    grpo_config_default(&c);
    c.beta = 0.1f;
    grpo_loss_stats s;
    grpo_loss_metrics m;
    const double d0 = -0.5, d1 = 1.0;
    struct {
        grpo_kl_estimator k;
        double k0, k1, g0, g1;
    } cases[3] = {
        {GRPO_KL_K3, exp(d0) - d0 - 1, exp(d1) - d1 - 1, 1 - exp(d0), 1 - exp(d1)},
        {GRPO_KL_K1, -d0, -d1, 1, 1},
        {GRPO_KL_K2, d0 * d0 / 2, d1 * d1 / 2, -d0, -d1},
    };
    for (int i = 0; i < 3; i++) {
        c.kl_estimator = cases[i].k;
        assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, &s), BASE_OK);
        NEAR(s.loss, 0.1 * (cases[i].k0 + cases[i].k1) / 2, 1e-7);
        NEAR(g[0], 0.1 * cases[i].g0 / 2, 1e-7);
        NEAR(g[1], 0.1 * cases[i].g1 / 2, 1e-7);
        grpo_loss_metrics_finish(&s, &m);
        NEAR(m.kl, (cases[i].k0 + cases[i].k1) / 2, 1e-7);
    }
    /* the reference is required with beta != 0 and refused with beta == 0 */
    b.ref_logp = NULL;
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, &s), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "ref_logp"));
    c.beta = 0;
    b.ref_logp = ref;
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, &s), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "not needed"));
}

/* Entropy bonus: one on-policy sequence, A = 1, entropies 2 and 4, a step
 * of 4 loss tokens: loss = -1 * 2/... (grpo: mean over the sequence = -1,
 * / 1 sequence) - 0.01 * (2 + 4) / 4; dL/dent = -0.01 / 4. */
static void test_entropy_bonus(void **state) {
    (void)state;
    int64_t off[2] = {0, 2};
    float adv[1] = {1}, lp[2] = {-1, -2}, ent[2] = {2, 4}, g[2], ge[2];
    grpo_batch b = {.n_seqs = 1, .offsets = off, .advantages = adv, .logp = lp, .entropy = ent};
    grpo_norm nm = {.n_seqs = 1, .n_tokens = 4, .n_micro = 1};
    grpo_config c;
    grpo_config_default(&c);
    c.entropy_coef = 0.01f;
    grpo_loss_stats s;
    grpo_loss_metrics m;
    assert_int_equal(grpo_loss(&c, &b, &nm, g, ge, &s), BASE_OK);
    NEAR(s.policy_loss, -1.0, 1e-12);
    NEAR(s.loss, -1.0 - 0.01 * 6.0 / 4.0, 1e-9);
    NEAR(ge[0], -0.01 / 4.0, 1e-9);
    NEAR(ge[1], -0.01 / 4.0, 1e-9);
    NEAR(g[0], -0.5, 1e-7);
    grpo_loss_metrics_finish(&s, &m);
    NEAR(m.entropy, 3.0, 1e-7); /* over this micro-batch's 2 tokens */
    /* entropies required with a coefficient */
    b.entropy = NULL;
    assert_int_equal(grpo_loss(&c, &b, &nm, g, ge, &s), BASE_ERR_INVALID);
    /* without a coefficient the entropy is only a metric and g_ent is 0 */
    c.entropy_coef = 0;
    b.entropy = ent;
    assert_int_equal(grpo_loss(&c, &b, &nm, g, ge, &s), BASE_OK);
    assert_true(ge[0] == 0.0f && ge[1] == 0.0f);
    NEAR(s.loss, -1.0, 1e-12);
}

/* Masks: sequence 0 has a masked (tool) token in the middle; sequence 1 is
 * truncated. With mask_truncated_completions it leaves the loss but still
 * counts as a sequence for grpo (TRL's mean over the batch). */
static void test_masks(void **state) {
    (void)state;
    grpo_config c;
    grpo_config_default(&c);
    grpo_batch b;
    int64_t off[3];
    float adv[2], lp[5], g[5];
    onpolicy_batch(&b, off, adv, lp);
    uint8_t mask[5] = {1, 0, 1, 1, 1}, trunc[2] = {0, 1};
    b.mask = mask;
    b.truncated = trunc;
    lp[1] = NAN; /* a masked token is never read */
    grpo_norm nm = {.n_seqs = 2, .n_tokens = 4, .n_micro = 1};
    grpo_loss_stats s;
    assert_int_equal(grpo_count_loss_tokens(&c, &b), 4);
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, &s), BASE_OK);
    NEAR(s.loss, -0.25, 1e-12); /* seq 0 mean is still -1 over its 2 tokens */
    NEAR(g[0], -1.0 / 4.0, 1e-7);
    assert_true(g[1] == 0.0f);
    NEAR(g[3], 0.5 / 4.0, 1e-7);
    c.mask_truncated_completions = 1;
    assert_int_equal(grpo_count_loss_tokens(&c, &b), 2);
    nm.n_tokens = 2;
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, &s), BASE_OK);
    NEAR(s.loss, 0.5 * -1.0, 1e-12);
    assert_true(g[3] == 0.0f && g[4] == 0.0f);
    NEAR(s.n_tokens, 2, 0);
    /* dapo over the 2 remaining tokens */
    c.loss_type = GRPO_LOSS_DAPO;
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, &s), BASE_OK);
    NEAR(s.loss, -1.0, 1e-12);
    NEAR(g[0], -0.5, 1e-7);
}

/* GSPO: one sequence, A = 1, ratios 1.1 and 1.3: c = exp(mean log) =
 * sqrt(1.43) < 1.2 unclipped: loss -c, dL/dlogp_t = -c / 2. Ratios 1.5 and
 * 1.5: c = 1.5 clipped high: loss -1.2, no gradient. */
static void test_sequence_level(void **state) {
    (void)state;
    int64_t off[2] = {0, 2};
    float adv[1] = {1}, lp[2], old[2] = {-1, -1}, g[2];
    lp[0] = (float)(-1 + log(1.1));
    lp[1] = (float)(-1 + log(1.3));
    grpo_batch b = {.n_seqs = 1, .offsets = off, .advantages = adv, .logp = lp, .old_logp = old};
    grpo_norm nm = {.n_seqs = 1, .n_tokens = 2, .n_micro = 1};
    grpo_config c;
    grpo_config_default(&c);
    c.importance_sampling_level = GRPO_IS_SEQUENCE;
    c.steps_per_generation = 4;
    grpo_loss_stats s;
    grpo_loss_metrics m;
    double cs = sqrt(1.1 * 1.3);
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, &s), BASE_OK);
    NEAR(s.loss, -cs, 1e-6);
    NEAR(g[0], -cs / 2, 1e-6);
    NEAR(g[1], -cs / 2, 1e-6);
    lp[0] = lp[1] = (float)(-1 + log(1.5));
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, &s), BASE_OK);
    NEAR(s.loss, -1.2, 1e-6);
    assert_true(g[0] == 0.0f && g[1] == 0.0f);
    grpo_loss_metrics_finish(&s, &m);
    NEAR(m.clip_ratio_high_mean, 1.0, 0); /* one sequence, clipped */
    NEAR(m.clip_ratio_high_max, 1.0, 0);
}

static void test_loss_errors(void **state) {
    (void)state;
    grpo_config c;
    grpo_config_default(&c);
    grpo_batch b;
    int64_t off[3];
    float adv[2], lp[5], g[5];
    onpolicy_batch(&b, off, adv, lp);
    grpo_norm nm = {.n_seqs = 2, .n_tokens = 5, .n_micro = 1};
    off[1] = 6; /* decreasing */
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, NULL), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "offsets"));
    off[1] = 3;
    nm.n_seqs = 1; /* fewer sequences in the step than in this micro-batch */
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, NULL), BASE_ERR_INVALID);
    nm.n_seqs = 2;
    c.epsilon = -0.1f;
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, NULL), BASE_ERR_INVALID);
    /* an empty micro-batch is fine */
    c.epsilon = 0.2f;
    b.n_seqs = 0;
    grpo_loss_stats s;
    assert_int_equal(grpo_loss(&c, &b, &nm, g, NULL, &s), BASE_OK);
    NEAR(s.loss, 0, 0);
}

/* ---- splitting a step into micro-batches changes nothing ------------- */

static void test_microbatch_split(void **state) {
    (void)state;
    /* 4 sequences of lengths 3, 1, 4, 2 (10 tokens), off-policy, KL on */
    int64_t off[5] = {0, 3, 4, 8, 10};
    float adv[4] = {0.7f, -1.2f, 0.4f, -0.3f};
    float lp[10], old[10], ref[10], ent[10];
    test_rand_f32(lp, 10, 1, 0.3f);
    test_rand_f32(old, 10, 2, 0.3f);
    test_rand_f32(ref, 10, 3, 0.3f);
    test_rand_f32(ent, 10, 4, 1.0f);
    for (int t = 0; t < 10; t++) lp[t] -= 1.5f, old[t] -= 1.5f, ref[t] -= 1.5f, ent[t] += 2.0f;
    for (int lt = GRPO_LOSS_GRPO; lt <= GRPO_LOSS_VESPO; lt++) {
        if (lt == GRPO_LOSS_BNPO) continue; /* bnpo is a local mean by definition */
        grpo_config c;
        grpo_config_default(&c);
        c.loss_type = (grpo_loss_type)lt;
        c.beta = 0.04f;
        c.num_iterations = 2;
        c.entropy_coef = 0.01f;
        c.max_completion_length = 6;
        c.use_bias_correction_kl = lt % 2;
        if (lt == GRPO_LOSS_CISPO) c.epsilon_high = 1.1;
        grpo_norm nm = {.n_seqs = 4, .n_tokens = 10, .n_micro = 2};
        grpo_batch whole = {4, off, NULL, NULL, adv, lp, old, ref, ent, NULL, NULL};
        float g1[10], ge1[10], g2[10], ge2[10];
        grpo_loss_stats s1, sa, sb;
        assert_int_equal(grpo_loss(&c, &whole, &nm, g1, ge1, &s1), BASE_OK);
        int64_t offb[3] = {0, 4, 6};
        grpo_batch a = {2, off, NULL, NULL, adv, lp, old, ref, ent, NULL, NULL};
        grpo_batch bb = {2, offb, NULL, NULL, adv + 2, lp + 4, old + 4, ref + 4, ent + 4, NULL, NULL};
        assert_int_equal(grpo_loss(&c, &a, &nm, g2, ge2, &sa), BASE_OK);
        assert_int_equal(grpo_loss(&c, &bb, &nm, g2 + 4, ge2 + 4, &sb), BASE_OK);
        grpo_loss_stats_merge(&sa, &sb);
        NEAR(sa.loss, s1.loss, 1e-12);
        NEAR(sa.kl_sum, s1.kl_sum, 1e-12);
        for (int t = 0; t < 10; t++) {
            NEAR(g2[t], g1[t], 1e-7);
            NEAR(ge2[t], ge1[t], 1e-7);
        }
    }
}

/* ---- top_entropy_quantile on large batches with ties ------------------ */

static int cmp_f(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The loss finds the (1 - rho) quantile with a selection, not a sort: the
 * tokens it selects (stats.bonus_tokens) are those at or above the
 * threshold a full sort gives (torch.quantile's rule), on batches of up to
 * 4000 tokens with many ties, a single token, and rho 0 and 1. */
static void test_entropy_quantile_selection(void **state) {
    (void)state;
    enum { NMAX = 4000 };
    static float ent[NMAX], lp[NMAX], sorted[NMAX], g[NMAX], ge[NMAX];
    static float adv[1] = {1.0f};
    for (int trial = 0; trial < 60; trial++) {
        uint64_t seed = 777 + (uint64_t)trial;
        float u[2];
        test_rand_f32(u, 2, seed, 1.0f);
        int64_t n = trial == 0 ? 1 : 1 + (int64_t)((u[0] + 1.0f) * 0.5f * (NMAX - 1));
        test_rand_f32(ent, n, seed + 1, 1.0f);
        for (int64_t t = 0; t < n; t++) {
            if (trial % 2) ent[t] = roundf(ent[t] * 4.0f) / 4.0f; /* 9 distinct values: ties */
            ent[t] += 2.0f;
            lp[t] = -1.0f;
        }
        grpo_config c;
        grpo_config_default(&c);
        c.top_entropy_quantile = trial == 2 ? 0.0 : trial == 3 ? 1.0 - 1e-9 : (u[1] + 1.0) * 0.5;
        int64_t off[2] = {0, n};
        grpo_batch b = {1, off, NULL, NULL, adv, lp, NULL, NULL, ent, NULL, NULL};
        grpo_norm nm = {.n_seqs = 1, .n_tokens = n, .n_micro = 1};
        grpo_loss_stats st;
        assert_int_equal(grpo_loss(&c, &b, &nm, g, ge, &st), BASE_OK);
        memcpy(sorted, ent, (size_t)n * sizeof(float));
        qsort(sorted, (size_t)n, sizeof(float), cmp_f);
        double rank = (double)(float)(1.0 - c.top_entropy_quantile) * (double)(n - 1);
        int64_t lo = (int64_t)floor(rank), hi = (int64_t)ceil(rank);
        float w = (float)(rank - (double)lo), d = sorted[hi] - sorted[lo];
        float thr = fabsf(w) < 0.5f ? (float)fma(w, d, sorted[lo]) : (float)fma(w - 1.0f, d, sorted[hi]);
        int64_t want = 0;
        for (int64_t t = 0; t < n; t++) want += ent[t] >= thr;
        if (st.bonus_tokens != (double)want)
            fail_msg("trial %d (n %lld, rho %g): %g tokens selected, a sort gives %lld", trial, (long long)n,
                     c.top_entropy_quantile, st.bonus_tokens, (long long)want);
    }
}

/* ---- finite differences of the whole loss ---------------------------- */

typedef struct {
    int64_t off[7];
    float adv[6], lp[40], old[40], ref[40], ent[40];
    uint8_t mask[40], trunc[6];
    int64_t n_tok;
} fd_batch;

static double loss_of(const grpo_config *c, grpo_batch *b, const grpo_norm *nm) {
    float *g = malloc(40 * sizeof(float)), *ge = malloc(40 * sizeof(float));
    grpo_loss_stats s;
    assert_int_equal(grpo_loss(c, b, nm, g, ge, &s), BASE_OK);
    free(g);
    free(ge);
    return s.loss;
}

/* Distance of x from the loss's kinks (clip bounds, delta; cispo's cap). */
static double kink_dist(const grpo_config *c, double x) {
    if (c->loss_type == GRPO_LOSS_CISPO) return fabs(x - grpo_epsilon_high(c));
    if (c->loss_type == GRPO_LOSS_SAPO || c->loss_type == GRPO_LOSS_VESPO) return 1;
    double d = fabs(x - (1 - c->epsilon));
    double d2 = fabs(x - (1 + grpo_epsilon_high(c)));
    if (d2 < d) d = d2;
    if (c->delta > 0 && fabs(x - c->delta) < d) d = fabs(x - c->delta);
    return d;
}

static void fd_make(fd_batch *f, uint64_t seed, const grpo_config *c) {
    int64_t lens[6] = {5, 1, 9, 0, 7, 6}; /* includes an empty sequence */
    f->off[0] = 0;
    for (int i = 0; i < 6; i++) f->off[i + 1] = f->off[i] + lens[i];
    f->n_tok = f->off[6];
    test_rand_f32(f->adv, 6, seed, 1.5f);
    for (uint64_t s = seed;; s += 1000) {
        float u[40];
        test_rand_f32(f->old, f->n_tok, s + 1, 0.5f);
        test_rand_f32(u, f->n_tok, s + 2, 0.45f); /* log ratios in [-0.45, 0.45] */
        test_rand_f32(f->ref, f->n_tok, s + 3, 0.5f);
        test_rand_f32(f->ent, f->n_tok, s + 4, 1.0f);
        for (int64_t t = 0; t < f->n_tok; t++) {
            /* multiples of 2^-12: logp +- h and old +- h stay exact, so
             * the stop-gradient check below moves no ratio by rounding */
            u[t] = roundf(u[t] * 4096.0f) / 4096.0f;
            f->old[t] = roundf((f->old[t] - 1.2f) * 4096.0f) / 4096.0f;
            f->ref[t] -= 1.2f;
            f->lp[t] = f->old[t] + u[t];
            f->ent[t] += 1.5f;
            f->mask[t] = (t % 7) != 3;
        }
        /* keep every ratio (token and sequence) away from the kinks */
        double far = 1;
        for (int64_t t = 0; t < f->n_tok; t++) {
            double k = kink_dist(c, exp((double)u[t]));
            if (k < far) far = k;
        }
        for (int i = 0; i < 6; i++) {
            double sum = 0;
            int n = 0;
            for (int64_t t = f->off[i]; t < f->off[i + 1]; t++)
                if (f->mask[t]) sum += u[t], n++;
            double k = kink_dist(c, exp(n ? sum / n : 0));
            if (k < far) far = k;
        }
        if (far > 0.02) break;
    }
    for (int i = 0; i < 6; i++) f->trunc[i] = i == 4;
}

static void fd_check(const grpo_config *c0, uint64_t seed) {
    fd_batch f;
    grpo_config cc = *c0;
    const grpo_config *c = &cc;
    fd_make(&f, seed, c);
    if (!isnan(cc.off_policy_mask_threshold)) {
        /* OPSM's keep is a step in logp: move the threshold away from every
         * sequence's mean(old - logp) (a perturbation moves it by <= h) */
        for (int moved = 1; moved;) {
            moved = 0;
            for (int i = 0; i < 6; i++) {
                double sum = 0;
                int n = 0;
                for (int64_t t = f.off[i]; t < f.off[i + 1]; t++)
                    if (f.mask[t] && !(c->mask_truncated_completions && f.trunc[i]))
                        sum += (double)f.old[t] - (double)f.lp[t], n++;
                if (fabs(sum / (n > 1 ? n : 1) - cc.off_policy_mask_threshold) < 0.01)
                    cc.off_policy_mask_threshold += 0.013, moved = 1;
            }
        }
    }
    grpo_batch b = {6, f.off, f.mask, f.trunc, f.adv, f.lp, f.old, NULL, f.ent, NULL, NULL};
    if (grpo_needs_ref_logp(c)) b.ref_logp = f.ref;
    int64_t ntok = grpo_count_loss_tokens(c, &b);
    grpo_norm nm = {.n_seqs = 9, .n_tokens = ntok + 5, .n_micro = 3}; /* a larger step */
    float g[40], ge[40];
    grpo_loss_stats s;
    assert_int_equal(grpo_loss(c, &b, &nm, g, ge, &s), BASE_OK);
    double gmax = 0;
    for (int64_t t = 0; t < f.n_tok; t++) gmax = fmax(gmax, fabs(g[t]));
    const int stopgrad = c->loss_type == GRPO_LOSS_CISPO || c->loss_type == GRPO_LOSS_VESPO;
    /* ... which also freezes the bias-corrected KL's ratio: that gradient
     * term is checked against TRL's autograd instead (test_grpo_torch) */
    if (stopgrad && c->beta != 0 && c->use_bias_correction_kl) return;
    for (int64_t t = 0; t < f.n_tok; t++) {
        /* the entropy selection is a step in ent: no finite difference */
        for (int which = 0; which < (c->top_entropy_quantile < 1 ? 1 : 2); which++) {
            float *x = which ? &f.ent[t] : &f.lp[t];
            /* cispo and vespo stop the gradient through their weight
             * (min(ratio, epsilon_high), phi): moving old with logp keeps
             * the weight and leaves the derivative the gradient is of */
            float *y = !which && stopgrad ? &f.old[t] : NULL;
            float x0 = *x, h = 1.0f / 512, y0 = y ? *y : 0;
            float xp = x0 + h, xm = x0 - h;
            *x = xp;
            if (y) *y = y0 + h;
            double lpl = loss_of(c, &b, &nm);
            *x = xm;
            if (y) *y = y0 - h;
            double lmi = loss_of(c, &b, &nm);
            *x = x0;
            if (y) *y = y0;
            double fd = (lpl - lmi) / ((double)xp - (double)xm);
            double an = which ? ge[t] : g[t];
            if (!(fabs(fd - an) <= 1e-4 * fmax(fabs(an), 0.01 * gmax) + 1e-9)) {
                fprintf(stderr,
                        "fd mismatch: loss_type %s, is %s, kl %s, beta %g, delta %g, ent %g, "
                        "trunc %d, bias %d, opsm %g, tq %g, token %lld %s: analytic %.9g fd %.9g\n",
                        grpo_loss_type_name(c->loss_type),
                        grpo_is_level_name(c->importance_sampling_level),
                        grpo_kl_estimator_name(c->kl_estimator), c->beta, c->delta,
                        c->entropy_coef, c->mask_truncated_completions, c->use_bias_correction_kl,
                        c->off_policy_mask_threshold, c->top_entropy_quantile, (long long)t,
                        which ? "ent" : "logp", an, fd);
                fail();
            }
        }
    }
}

static void test_finite_differences(void **state) {
    (void)state;
    int n = 0;
    for (int lt = 0; lt <= GRPO_LOSS_VESPO; lt++)
        for (int is = 0; is <= GRPO_IS_SEQUENCE; is++)
            for (int kl = -1; kl <= GRPO_KL_K2; kl++)
                for (int variant = 0; variant < 5; variant++) {
                    grpo_config c;
                    grpo_config_default(&c);
                    c.loss_type = (grpo_loss_type)lt;
                    c.importance_sampling_level = (grpo_is_level)is;
                    c.num_iterations = 3;
                    c.max_completion_length = 16;
                    if (kl >= 0) c.beta = 0.05f, c.kl_estimator = (grpo_kl_estimator)kl;
                    if (variant == 1) c.epsilon = 0.15f, c.epsilon_high = 0.28f, c.delta = 1.35f;
                    if (variant == 1 && lt == GRPO_LOSS_CISPO) c.epsilon_high = 1.3;
                    if (variant == 2) c.entropy_coef = 0.02f, c.mask_truncated_completions = 1;
                    if (variant == 3)
                        c.use_bias_correction_kl = 1, c.entropy_coef = 0.02, c.top_entropy_quantile = 0.5;
                    if (variant == 4) {
                        c.off_policy_mask_threshold = 0.0;
                        c.use_bias_correction_kl = 1;
                        c.sapo_temperature_pos = 2.5, c.sapo_temperature_neg = 0.7;
                        c.vespo_k_pos = 1.5, c.vespo_lambda_pos = 2.0, c.vespo_k_neg = 2.5;
                        c.vespo_lambda_neg = 1.5;
                    }
                    fd_check(&c, 100 + (uint64_t)n);
                    n++;
                }
    assert_int_equal(n, 8 * 2 * 4 * 5);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adv_group),
        cmocka_unit_test(test_adv_batch_and_none),
        cmocka_unit_test(test_adv_weights_and_nil),
        cmocka_unit_test(test_adv_errors),
        cmocka_unit_test(test_filter_groups),
        cmocka_unit_test(test_completion_stats),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_loss_types_onpolicy),
        cmocka_unit_test(test_clip),
        cmocka_unit_test(test_kl),
        cmocka_unit_test(test_entropy_bonus),
        cmocka_unit_test(test_masks),
        cmocka_unit_test(test_sequence_level),
        cmocka_unit_test(test_loss_errors),
        cmocka_unit_test(test_microbatch_split),
        cmocka_unit_test(test_entropy_quantile_selection),
        cmocka_unit_test(test_finite_differences),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
