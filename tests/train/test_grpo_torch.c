/* src/train/grpo*.c against TRL: tests/train/data/grpo_torch.bin, written by
 * tests/train/gen/grpo_torch.py: 172 loss cases computed by TRL 1.16's own
 * GRPOTrainer._compute_loss (every loss_type and option) with autograd's
 * gradients and TRL's logged metrics, 48 for verl's k1/k2 estimators on
 * TRL's formula restated, 32 advantage cases (sum_then_normalize for every
 * scale_rewards, normalize_then_sum). */
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

/* tests/train/data/grpo_torch.bin from tests/train/gen/grpo_torch.py: per
 * case the options, a padded [B, T] batch and TRL's loss with autograd's
 * gradients (float64). Layout in the generator. */
static void test_torch_fixture(void **state) {
    (void)state;
    char *path = test_src_path("tests/train/data/grpo_torch.bin");
    char *buf;
    size_t len;
    if (base_read_file(path, &buf, &len) != BASE_OK) {
        fprintf(stderr, "%s (committed; regenerate with tests/train/gen/grpo_torch.py)\n",
                base_err_msg());
        free(path);
        fail();
    }
    free(path);
    const char *p = buf;
#define TAKE(dst, n)                                  \
    do {                                              \
        assert_true((size_t)(p - buf) + (n) <= len); \
        memcpy((dst), p, (n));                        \
        p += (n);                                     \
    } while (0)
    char magic[8];
    TAKE(magic, 8);
    assert_memory_equal(magic, "GRPOFX02", 8);
    int32_t nc;
    TAKE(&nc, 4);
    double worst_loss = 0, worst_g = 0;
    int n_metrics = 0, n_adaptive = 0, n_is = 0;
    grpo_entropy_ctl ectl = {0};
    for (int ci = 0; ci < nc; ci++) {
        int32_t h[13];
        double d[19];
        TAKE(h, sizeof h);
        TAKE(d, sizeof d);
        const int B = h[7], T = h[8];
        assert_true(B > 0 && B <= 64 && T > 0 && T <= 64);
        grpo_config c;
        grpo_config_default(&c);
        c.loss_type = (grpo_loss_type)h[0];
        c.importance_sampling_level = (grpo_is_level)h[1];
        if (h[2] >= 0) c.kl_estimator = (grpo_kl_estimator)h[2];
        int has_old = h[3];
        c.mask_truncated_completions = h[4];
        c.max_completion_length = h[5];
        c.num_iterations = has_old ? 2 : 1;
        c.beta = d[0];
        c.epsilon = d[1];
        c.epsilon_high = d[2];
        c.delta = d[3];
        c.entropy_coef = d[4];
        c.use_bias_correction_kl = h[6];
        c.top_entropy_quantile = d[5];
        c.off_policy_mask_threshold = d[6];
        c.sapo_temperature_pos = d[7], c.sapo_temperature_neg = d[8];
        c.vespo_k_pos = d[9], c.vespo_lambda_pos = d[10], c.vespo_k_neg = d[11], c.vespo_lambda_neg = d[12];
        c.use_adaptive_entropy = h[10];
        c.entropy_target = d[13], c.entropy_coef_delta = d[14];
        c.entropy_coef_min = d[15], c.entropy_coef_max = d[16];
        c.importance_sampling_correction = h[12] >= 0;
        if (h[12] >= 0) c.importance_sampling_mode = (grpo_is_correction_mode)h[12];
        c.importance_sampling_clip_min = d[17], c.importance_sampling_clip_max = d[18];
        /* an adaptive trajectory: one controller over consecutive cases
         * (optimizer steps), as TRL's trainer object carries it */
        if (!c.use_adaptive_entropy || h[11] == 0) grpo_entropy_ctl_init(&c, &ectl);
        grpo_config run_c = c;
        run_c.entropy_coef = grpo_entropy_ctl_apply(&c, &ectl);
        int32_t lens[64];
        TAKE(lens, (size_t)B * 4);
        size_t nf = (size_t)B * (size_t)T;
        float *lp = malloc(nf * 4), *old = malloc(nf * 4), *ref = malloc(nf * 4), *ent = malloc(nf * 4),
              *samp = malloc(nf * 4), *isr = malloc(nf * 4), *pis = malloc(nf * 4), *psamp = malloc(nf * 4);
        double *want_isr = malloc(nf * 8);
        uint8_t *mask = malloc(nf), trunc[64];
        float adv[64];
        TAKE(lp, nf * 4);
        TAKE(old, nf * 4);
        TAKE(ref, nf * 4);
        TAKE(ent, nf * 4);
        TAKE(samp, nf * 4);
        TAKE(want_isr, nf * 8);
        TAKE(mask, nf);
        TAKE(trunc, (size_t)B);
        TAKE(adv, (size_t)B * 4);
        double want_loss;
        TAKE(&want_loss, 8);
        double *wg = malloc(nf * 8), *we = malloc(nf * 8);
        TAKE(wg, nf * 8);
        TAKE(we, nf * 8);
        double wm[11]; /* TRL's logged metrics, NaN = not logged (restated cases: none) */
        TAKE(wm, sizeof wm);
        double wis[5]; /* the importance-sampling metrics (TRL's generation step, restated) */
        TAKE(wis, sizeof wis);
        if (c.importance_sampling_correction) {
            /* our ratio from the padded rows, against TRL's (stored as
             * float on both sides); then the loss runs on ours */
            grpo_is_stats ist;
            assert_int_equal(grpo_is_correction(&c, B, T, lens, mask, trunc, old, samp, isr, &ist), BASE_OK);
            for (int i = 0; i < B; i++)
                for (int t = 0; t < lens[i]; t++) {
                    size_t q = (size_t)i * (size_t)T + (size_t)t;
                    if (fabs(isr[q] - want_isr[q]) > 1.2e-7 * fabs(want_isr[q]))
                        fail_msg("case %d (%s) seq %d token %d: is ratio %.9g, TRL %.9g", ci,
                                 grpo_is_correction_mode_name(c.importance_sampling_mode), i, t, isr[q], want_isr[q]);
                }
            const double gi[5] = {ist.logp_diff_mean, ist.logp_diff_max, ist.ratio_min, ist.ratio_mean, ist.ratio_max};
            for (int k = 0; k < 5; k++)
                if (fabs(gi[k] - wis[k]) > 1e-12 * (1.0 + fabs(wis[k])))
                    fail_msg("case %d (%s): is metric %d = %.15g, TRL %.15g", ci,
                             grpo_is_correction_mode_name(c.importance_sampling_mode), k, gi[k], wis[k]);
            n_is++;
        }
        /* pack the padded rows: sequence i is lens[i] tokens of row i */
        int64_t off[65];
        float *plp = malloc(nf * 4), *pold = malloc(nf * 4), *pref = malloc(nf * 4),
              *pent = malloc(nf * 4), *g = malloc(nf * 4), *ge = malloc(nf * 4);
        uint8_t *pm = malloc(nf);
        off[0] = 0;
        for (int i = 0; i < B; i++) {
            for (int t = 0; t < lens[i]; t++) {
                int64_t k = off[i] + t;
                size_t q = (size_t)i * (size_t)T + (size_t)t;
                plp[k] = lp[q], pold[k] = old[q], pref[k] = ref[q], pent[k] = ent[q];
                pis[k] = isr[q], psamp[k] = samp[q];
                pm[k] = mask[q];
            }
            off[i + 1] = off[i] + lens[i];
        }
        grpo_batch b = {B, off, pm, trunc, adv, plp, has_old ? pold : NULL,
                        grpo_needs_ref_logp(&c) ? pref : NULL, pent, NULL, NULL};
        if (c.importance_sampling_correction) b.is_ratio = pis, b.sampling_logp = psamp;
        grpo_norm nm = {.n_seqs = B, .n_tokens = grpo_count_loss_tokens(&c, &b), .n_micro = 1};
        grpo_loss_stats st;
        assert_int_equal(grpo_loss(&run_c, &b, &nm, g, ge, &st), BASE_OK);
        grpo_entropy_ctl_update(&c, &ectl, &st);
        /* both sides compute in double from the same float32 inputs: the
         * loss agrees to double rounding; our gradients are stored as float,
         * off by at most 2^-24 |g| <= 6e-8 max|g| (allowed: 2 such ulps) */
        double el = fabs(st.loss - want_loss) / fmax(1.0, fabs(want_loss));
        if (el > worst_loss) worst_loss = el;
        if (el > 1e-12) {
            fprintf(stderr, "case %d (%s, %s, kl %d, old %d): loss %.15g, torch %.15g\n", ci,
                    grpo_loss_type_name(c.loss_type), grpo_is_level_name(c.importance_sampling_level),
                    h[2], has_old, st.loss, want_loss);
            fail();
        }
        double gmax = 1e-30, emax = 1e-30; /* each gradient against its own largest */
        for (size_t q = 0; q < nf; q++) gmax = fmax(gmax, fabs(wg[q])), emax = fmax(emax, fabs(we[q]));
        for (int i = 0; i < B; i++)
            for (int t = 0; t < T; t++) {
                size_t q = (size_t)i * (size_t)T + (size_t)t;
                double gl = t < lens[i] ? g[off[i] + t] : 0.0, gE = t < lens[i] ? ge[off[i] + t] : 0.0;
                double e1 = fabs(gl - wg[q]) / gmax, e2 = fabs(gE - we[q]) / emax;
                if (e1 > worst_g) worst_g = e1;
                if (e2 > worst_g) worst_g = e2;
                if (e1 > 1.2e-7 || e2 > 1.2e-7) {
                    fprintf(stderr,
                            "case %d (%s, %s, kl %d, old %d, delta %g) seq %d token %d: "
                            "g_logp %.9g torch %.9g, g_ent %.9g torch %.9g\n",
                            ci, grpo_loss_type_name(c.loss_type),
                            grpo_is_level_name(c.importance_sampling_level), h[2], has_old, c.delta,
                            i, t, gl, wg[q], gE, we[q]);
                    fail();
                }
            }
        /* TRL's metrics: each one TRL logs equals ours, ours are NaN
         * exactly where TRL logs none. TRL counts the clip fractions
         * (k 2..7) in float32 (flags .float()): 1e-6, a few float32 ulps of
         * a fraction; the rest are double on both sides */
        grpo_loss_metrics m;
        grpo_loss_metrics_finish(&st, &m);
        const int bonus = c.entropy_coef != 0 || c.use_adaptive_entropy;
        const double gm[11] = {m.kl, m.entropy, m.clip_ratio_low_mean, m.clip_ratio_high_mean,
                               m.clip_ratio_region_mean, m.clip_ratio_low_min, m.clip_ratio_high_max,
                               m.cispo_clip_ratio, m.vespo_phi_seq_mean, m.policy_loss,
                               bonus ? ectl.coef : NAN};
        static const char *const mname[11] = {"kl", "entropy", "clip_ratio/low_mean", "clip_ratio/high_mean",
                                              "clip_ratio/region_mean", "clip_ratio/low_min",
                                              "clip_ratio/high_max", "cispo_clip_ratio", "vespo/phi_seq_mean",
                                              "policy_loss", "entropy_coef"};
        if (c.use_adaptive_entropy) n_adaptive++;
        for (int k = 0; k < 11 && h[9]; k++) {
            if (k == 9 && isnan(wm[k])) continue; /* TRL logs policy_loss with the entropy bonus only */
            const double tol = k >= 2 && k <= 7 ? 1e-6 : 1e-12;
            int ok = isnan(wm[k]) ? isnan(gm[k]) : fabs(gm[k] - wm[k]) <= tol * (1.0 + fabs(wm[k]));
            if (!ok) {
                fprintf(stderr, "case %d (%s, %s): metric %s = %.15g, TRL %.15g\n", ci,
                        grpo_loss_type_name(c.loss_type), grpo_is_level_name(c.importance_sampling_level),
                        mname[k], gm[k], wm[k]);
                fail();
            }
            n_metrics++;
        }
        free(lp), free(old), free(ref), free(ent), free(mask), free(wg), free(we);
        free(samp), free(isr), free(pis), free(psamp), free(want_isr);
        free(plp), free(pold), free(pref), free(pent), free(g), free(ge), free(pm);
    }
    fprintf(stderr,
            "torch GRPO fixture: %d cases (%d adaptive-entropy steps), loss rel err %.2g, grad err %.2g of "
            "max |g|, %d TRL metrics\n",
            nc, n_adaptive, worst_loss, worst_g, n_metrics);
    assert_int_equal(n_adaptive, 12);
    assert_int_equal(n_is, 32);

    /* TRL's advantages and reward metrics: nil rewards, weights, every
     * scale_rewards and group size; computed in double on both sides from
     * float32 rewards, ours stored as float */
    int32_t na;
    TAKE(&na, 4);
    double worst_adv = 0;
    for (int ci = 0; ci < na; ci++) {
        int32_t h[5];
        TAKE(h, sizeof h);
        const int F = h[2], N = h[3], G = h[1];
        assert_true(F >= 1 && F <= 8 && N >= 1 && N <= 256);
        float *R = malloc((size_t)N * (size_t)F * 4), w[8], *adv = malloc((size_t)N * 4);
        double *want = malloc((size_t)N * 8), st3[3], fm[8], fs[8];
        TAKE(R, (size_t)N * (size_t)F * 4);
        TAKE(w, (size_t)F * 4);
        TAKE(want, (size_t)N * 8);
        TAKE(st3, sizeof st3);
        TAKE(fm, (size_t)F * 8);
        TAKE(fs, (size_t)F * 8);
        grpo_config c;
        grpo_config_default(&c);
        c.scale_rewards = (grpo_scale_rewards)h[0];
        c.multi_objective_aggregation = (grpo_reward_aggregation)h[4];
        grpo_reward_stats rs;
        assert_int_equal(grpo_advantages(&c, R, N, F, w, G, adv, NULL, &rs), BASE_OK);
        for (int i = 0; i < N; i++) {
            double e = fabs(adv[i] - want[i]) / fmax(1.0, fabs(want[i]));
            if (e > worst_adv) worst_adv = e;
            if (e > 1.2e-7) {
                fprintf(stderr, "adv case %d (%s, %s, G %d, F %d) sample %d: %.9g, torch %.9g\n", ci,
                        grpo_reward_aggregation_name(c.multi_objective_aggregation),
                        grpo_scale_rewards_name(c.scale_rewards), G, F, i, adv[i], want[i]);
                fail();
            }
        }
        /* metrics in double on both sides; NaN (fewer than 2 values) must match */
        const double got_m[3] = {rs.reward, rs.reward_std, rs.frac_reward_zero_std};
        for (int k = 0; k < 3 + 2 * F; k++) {
            double gv = k < 3 ? got_m[k] : (k < 3 + F ? rs.func_mean[k - 3] : rs.func_std[k - 3 - F]);
            double wv = k < 3 ? st3[k] : (k < 3 + F ? fm[k - 3] : fs[k - 3 - F]);
            if (isnan(wv)) assert_true(isnan(gv));
            else NEAR(gv, wv, 1e-12);
        }
        free(R), free(adv), free(want);
    }
    assert_true((size_t)(p - buf) == len);
    fprintf(stderr, "torch advantages: %d cases, max rel err %.2g\n", na, worst_adv);
#undef TAKE
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_torch_fixture),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
