/* Resume of expert-parallel checkpoints and ZeRO 1 with expert parallelism
 * (issue 15), on test_dp.c's recipe (dp_common.c: a sample stage, an eval
 * stage, 3 GRPO steps with a reference model, 3 SFT steps of 4 x 2 rows on
 * the hf-tiny-v3-a weights: 8 routed experts per MoE layer). A run stopped
 * after 2 steps (--max-total-steps 2, inside the GRPO stage) and resumed
 * (--resume) is compared at its step-6 checkpoint with others:
 *   - the same world size, EP and ZeRO stage (EP 2 on 2 and on 4 ranks,
 *     ZeRO 0 stopped in the GRPO stage, ZeRO 1 in the SFT stage after 4
 *     steps): byte for byte the uninterrupted run's weights and
 *     optimizer.safetensors, the same metrics to the last bit;
 *   - across EP, world size and ZeRO: 4 ranks EP 4 ZeRO 0 -> 2 ranks EP 1
 *     ZeRO 1 and 2 ranks EP 1 ZeRO 1 -> 4 ranks EP 4 ZeRO 0 (the second
 *     maps the EP 1 run's per-rank arena shards onto the EP arenas) within
 *     TOL_EP of the same change at EP 1 (the reference);
 *   - ZeRO 1 with EP against ZeRO 0 with EP (uninterrupted, EP 2 on 4
 *     ranks: AdamW state split over the 2 ranks of each expert-data-parallel
 *     group): the same weights, optimizer state and metrics bit for bit,
 *     each rank's planned AdamW state half of ZeRO 0's, and the measured
 *     peak smaller by exactly the planned difference on every rank. */
#include "dp_common.h"

#include "io/st.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Agreement with the reference after updates (the experts' gradients summed
 * in another grouping). Measured: see the test's output. */
#define TOL_EP 1e-4

/* The --set of EP e for both training stages, and SFT steps of 4 x 2 rows
 * (on 4 ranks every rank trains one micro-batch: the EP group's passes). */
static void ep_args(const char **out, int ep, int zero, const char *const *extra) {
    static char g[8][48], s[8][48];
    int n = 0;
    snprintf(g[ep], sizeof g[ep], "stages.grpo.expert_parallel_size=%d", ep);
    snprintf(s[ep], sizeof s[ep], "stages.sft.expert_parallel_size=%d", ep);
    out[n++] = "--set", out[n++] = g[ep], out[n++] = "--set", out[n++] = s[ep];
    out[n++] = "--set", out[n++] = "stages.sft.gradient_accumulation_steps=4";
    for (int i = 0; extra && extra[i]; i++) out[n++] = extra[i];
    out[n] = NULL;
    const char *z[16];
    with_zero(z, out, zero);
    for (int i = 0; (out[i] = z[i]); i++) continue;
}

/* NAME uninterrupted on np ranks (unless it ran already in this process). */
static void full_run(const char *name, int np, int ep, int zero) {
    char rel[128];
    snprintf(rel, sizeof rel, "runs/%s/checkpoints/step-6/model.safetensors", name);
    if (exists_rel(rel)) return;
    const char *a[24];
    ep_args(a, ep, zero, NULL);
    double t0 = now_s();
    expect_ok(run_np(np, name, NULL, a), name);
    printf("# %s: %d ranks, EP %d, ZeRO %d: %.2f s\n", name, np, ep, zero, now_s() - t0);
}

/* NAME stopped after `at` steps (2: inside the GRPO stage, 4: inside SFT)
 * on np1 ranks (EP ep1, ZeRO z1), resumed on np2 (EP ep2, ZeRO z2). */
static void split_run_at(const char *name, int at, int np1, int ep1, int z1, int np2, int ep2, int z2) {
    char steps[8];
    snprintf(steps, sizeof steps, "%d", at);
    const char *stop[] = {"--max-total-steps", steps, NULL}, *resume[] = {"--resume", NULL}, *a[24];
    ep_args(a, ep1, z1, stop);
    expect_ok(run_np(np1, name, NULL, a), name);
    char rel[128];
    snprintf(rel, sizeof rel, "runs/%s/checkpoints/step-%d/trainer_state.json", name, at);
    char *st = read_rel(rel);
    char want[48];
    snprintf(want, sizeof want, "\"expert_parallel_size\": %d", ep1);
    assert_non_null(strstr(st, want));
    free(st);
    ep_args(a, ep2, z2, resume);
    expect_ok(run_np(np2, name, NULL, a), name);
}

static void split_run(const char *name, int np1, int ep1, int z1, int np2, int ep2, int z2) {
    split_run_at(name, 2, np1, ep1, z1, np2, ep2, z2);
}

static void step6_file(char *out, size_t n, const char *name, const char *file) {
    snprintf(out, n, "runs/%s/checkpoints/step-6/%s", name, file);
}

/* Runs a and b: the same step-6 weights and optimizer.safetensors byte for
 * byte, the same metrics to the last bit. */
static void same_run(const char *a, const char *b) {
    char x[160], y[160];
    step6_file(x, sizeof x, a, "model.safetensors");
    step6_file(y, sizeof y, b, "model.safetensors");
    same_bytes(x, y);
    step6_file(x, sizeof x, a, "optimizer.safetensors");
    step6_file(y, sizeof y, b, "optimizer.safetensors");
    same_bytes(x, y);
    metrics_within(a, b, 0);
}

static void resume_same(int np, int ep, int zero) {
    char full[32], split[32];
    snprintf(full, sizeof full, "f%d_%d_%d", np, ep, zero);
    snprintf(split, sizeof split, "s%d_%d_%d", np, ep, zero);
    full_run(full, np, ep, zero);
    int at = zero ? 4 : 2; /* ZeRO 0 resumes inside the GRPO stage, ZeRO 1 inside SFT */
    split_run_at(split, at, np, ep, zero, np, ep, zero);
    same_run(split, full);
    printf("# resume after step %d at %d ranks, EP %d, ZeRO %d: bit-identical to the uninterrupted run\n", at, np,
           ep, zero);
}

static void test_resume_same_ep(void **state) {
    (void)state;
    for (int zero = 0; zero <= 1; zero++) {
        resume_same(2, 2, zero);
        resume_same(4, 2, zero);
    }
}

/* The step-6 optimizer.safetensors of runs a and b: the same tensors, each
 * within tol of b's relative to b's largest magnitude in that tensor (the
 * moments, not only the weights they moved, carried across the resume);
 * the largest such difference. */
static double optim_within(const char *a, const char *b, double tol) {
    char x[160], y[160];
    step6_file(x, sizeof x, a, "optimizer.safetensors");
    step6_file(y, sizeof y, b, "optimizer.safetensors");
    char *pa = path_of(x), *pb = path_of(y);
    st_file *fa, *fb;
    if (st_open(pa, &fa) || st_open(pb, &fb)) fail_msg("%s", base_err_msg());
    assert_int_equal(st_count(fa), st_count(fb));
    double worst = 0;
    for (int i = 0; i < st_count(fa); i++) {
        const st_tensor *ta = st_at(fa, i), *tb = st_find(fb, ta->name);
        assert_non_null(tb);
        assert_int_equal(ta->nbytes, tb->nbytes);
        const float *u = ta->data, *v = tb->data;
        double big = 0, d = 0;
        for (int64_t k = 0; k < st_numel(ta); k++) {
            big = fabs(v[k]) > big ? fabs(v[k]) : big;
            d = fabs((double)u[k] - v[k]) > d ? fabs((double)u[k] - v[k]) : d;
        }
        if (big > 0) d /= big;
        if (d > tol) fail_msg("%s: %s differs from %s's by %.3g of its largest value", x, ta->name, y, d);
        worst = d > worst ? d : worst;
    }
    printf("# %s vs %s: largest moment difference %.3g (of each tensor's largest)\n", x, y, worst);
    st_close(fa), st_close(fb);
    free(pa), free(pb);
    return worst;
}

/* x: (np1, ep1, z1) -> (np2, ep2, z2); its reference r the same with EP 1. */
static void across(const char *x, const char *r, int np1, int ep1, int z1, int np2, int ep2, int z2) {
    split_run(x, np1, ep1, z1, np2, ep2, z2);
    split_run(r, np1, 1, z1, np2, 1, z2);
    char a[160], b[160];
    step6_file(a, sizeof a, x, "model.safetensors");
    step6_file(b, sizeof b, r, "model.safetensors");
    double d = weights_within(a, b, TOL_EP);
    metrics_within(x, r, TOL_EP);
    if (z2 == 0) optim_within(x, r, TOL_EP); /* both in optimizer.safetensors */
    printf("# %d ranks EP %d ZeRO %d -> %d ranks EP %d ZeRO %d: weights within %.3g of the same change at EP 1\n",
           np1, ep1, z1, np2, ep2, z2, d);
}

static void test_resume_across_ep(void **state) {
    (void)state;
    across("x4to2", "r4to2", 4, 4, 0, 2, 1, 1);
    across("x2to4", "r2to4", 2, 1, 1, 4, 4, 0);
}

/* summary.json's grpo.memory_plan_ranks[r].KEY and memory_peak_allocated[r] of run NAME. */
static void plan_of(const char *name, int np, const char *key, double *plan, double *peak) {
    cJSON *j;
    const cJSON *plans, *peaks;
    grpo_summary(name, np, &j, &plans, &peaks);
    for (int r = 0; r < np; r++) {
        const cJSON *p = cJSON_GetArrayItem(plans, r);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(p, key), *t = cJSON_GetObjectItemCaseSensitive(p, "total");
        if (!cJSON_IsNumber(v) || !cJSON_IsNumber(t)) fail_msg("%s rank %d: memory plan has no %s", name, r, key);
        plan[2 * r] = v->valuedouble, plan[2 * r + 1] = t->valuedouble;
        peak[r] = cJSON_GetArrayItem(peaks, r)->valuedouble;
    }
    cJSON_Delete(j);
}

static void test_zero1_ep(void **state) {
    (void)state;
    full_run("f4_2_0", 4, 2, 0);
    full_run("f4_2_1", 4, 2, 1);
    /* AdamW is elementwise and the gradient norm is ZeRO 0's: bit-identical */
    same_run("f4_2_1", "f4_2_0");
    double p0[8], p1[8], k0[4], k1[4];
    plan_of("f4_2_0", 4, "optimizer", p0, k0);
    plan_of("f4_2_1", 4, "optimizer", p1, k1);
    for (int r = 0; r < 4; r++) {
        printf("# EP 2 on 4 ranks, rank %d: AdamW state planned %.0f (ZeRO 0) / %.0f (ZeRO 1) bytes; plan total %.0f "
               "/ %.0f, peak allocated %.0f / %.0f\n", r, p0[2 * r], p1[2 * r], p0[2 * r + 1], p1[2 * r + 1], k0[r],
               k1[r]);
        /* the EP index's arena split over its 2 expert-data-parallel ranks */
        assert_true(fabs(p1[2 * r] - p0[2 * r] / 2) <= 8);
        /* what ZeRO 1 saves, measured, is what the plan says it saves */
        if (k0[r] - k1[r] != p0[2 * r + 1] - p1[2 * r + 1])
            fail_msg("rank %d: ZeRO 1 with EP saves %.0f bytes of peak, the plan says %.0f", r, k0[r] - k1[r],
                     p0[2 * r + 1] - p1[2 * r + 1]);
    }
}

/* Arguments: the names of the tests to run (all without). */
int main(int argc, char **argv) {
    const struct CMUnitTest all[] = {cmocka_unit_test(test_zero1_ep), cmocka_unit_test(test_resume_same_ep),
                                     cmocka_unit_test(test_resume_across_ep)};
    return dp_run("test_ep_resume", all, sizeof all / sizeof all[0], argc, argv);
}
