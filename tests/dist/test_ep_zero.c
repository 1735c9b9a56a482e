/* ZeRO 2 and 3 with expert parallelism as MPI ranks on the CPU (issues 14
 * and 15), on test_dp.c's recipe (dp_common.c: a sample stage, an eval
 * stage, 3 GRPO steps with a reference model, 3 SFT steps on the
 * hf-tiny-v3-a weights: 8 routed experts per MoE layer) with
 * expert_parallel_size 2 on 2 and 4 ranks (and 4 on 4 at ZeRO 3):
 *   - ZeRO 2 (gradients reduce-scattered: the non-expert elements over the
 *     world, the experts over the expert-data-parallel group) and ZeRO 3
 *     (the weights sharded the same way, gathered unit by unit in training,
 *     rollout, eval and sample) against ZeRO 0 with the same EP: byte for
 *     byte before the first update, the metrics and the final weights
 *     within TOL_EPZ after it, the consolidated optimizer.safetensors
 *     holding ZeRO 0's per-EP-index state within TOL_EPZ; ZeRO 3 bit for
 *     bit ZeRO 2 (every logged value, the samples, the checkpoint files);
 *     the GRPO stage's planned bytes == its measured peak on every rank;
 *   - completions of uneven lengths (a stop string): the ranks done first
 *     join their EP group's exchanges and the world's unit gathers (no hang);
 *   - a rank failing a training step at ZeRO 3 with EP ends every rank;
 *   - the sharded load with EP (each rank reads or draws only its shard's
 *     pieces): ZeRO 3 bit for bit ZeRO 2 (which loads whole), no release,
 *     every rank's peak over the whole run == the GRPO stage's plan. */
#include "dp_common.h"

#include "io/st.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Agreement with ZeRO 0 (same EP) after updates. Measured: see the output. */
#define TOL_EPZ 1e-4

#define STOP "--set", "stages.rows.stop=[\">\"]", "--set", "stages.eval_before.stop=[\">\"]", "--set", \
             "stages.grpo.stop=[\">\"]"
#define SFT4 "--set", "stages.sft.gradient_accumulation_steps=4"
/* every GRPO checkpoint kept (step-3 holds the reference model) */
#define KEEP "--set", "stages.grpo.save_total_limit=0", "--set", "stages.sft.save_total_limit=0"

/* `mpirun -np np grpo run` as NAME with EP ep at ZeRO zero, then the
 * NULL-terminated `extra` arguments; mpirun's exit status. On 4 ranks SFT
 * steps of 4 x 2 rows (every rank a micro-batch) unless extra starts with
 * UNEVEN. */
#define UNEVEN "--set", "stages.sft.gradient_accumulation_steps=1"
static int ep_run_with(int np, int ep, int zero, const char *name, const char *env, const char *const *extra) {
    char e1[64], e2[64], z1[64], z2[64];
    snprintf(e1, sizeof e1, "stages.grpo.expert_parallel_size=%d", ep);
    snprintf(e2, sizeof e2, "stages.sft.expert_parallel_size=%d", ep);
    snprintf(z1, sizeof z1, "stages.grpo.zero_stage=%d", zero);
    snprintf(z2, sizeof z2, "stages.sft.zero_stage=%d", zero);
    const char *base[] = {"--set", e1, "--set", e2, "--set", z1, "--set", z2, STOP, KEEP, NULL}, *sft4[] = {SFT4, NULL};
    const char *args[32];
    int n = 0;
    for (int i = 0; base[i]; i++) args[n++] = base[i];
    int uneven = extra && extra[0] && extra[1] && !strcmp(extra[1], "stages.sft.gradient_accumulation_steps=1");
    for (int i = 0; np == 4 && !uneven && sft4[i]; i++) args[n++] = sft4[i];
    for (int i = 0; extra && extra[i] && n < 31; i++) args[n++] = extra[i];
    args[n] = NULL;
    return run_np(np, name, env, args);
}

/* The same, unless NAME ran already in this process; env set: the run
 * must fail. */
static void ep_run(int np, int ep, int zero, const char *name, const char *env) {
    char rel[128];
    snprintf(rel, sizeof rel, "runs/%s/checkpoints/step-6/model.safetensors", name);
    if (!env && exists_rel(rel)) return;
    double t0 = now_s();
    int rc = ep_run_with(np, ep, zero, name, env, NULL);
    if (!env) {
        expect_ok(rc, name);
        printf("# EP %d, ZeRO %d on %d ranks: %.2f s\n", ep, zero, np, now_s() - t0);
    } else {
        assert_int_not_equal(rc, 0);
    }
}

/* The zero-row decode steps (joins) of every rank, summed over the run's
 * stages from STAGE's cumulative record in summary.json, printed. */
static double joins_of(const char *name, const char *stage, int np) {
    char rel[160], key[96];
    snprintf(rel, sizeof rel, "runs/%s/summary.json", name);
    snprintf(key, sizeof key, "%s.expert_parallel_rollout", stage);
    char *text = read_rel(rel);
    cJSON *j = cJSON_Parse(text);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, key), "join_steps");
    if (!arr) fail_msg("%s: no %s.join_steps", rel, key);
    assert_int_equal(cJSON_GetArraySize(arr), np);
    double joins = 0;
    printf("# %s: zero-row join steps per rank up to stage %s:", name, stage);
    for (int r = 0; r < np; r++) {
        printf(" %.0f", cJSON_GetArrayItem(arr, r)->valuedouble);
        joins += cJSON_GetArrayItem(arr, r)->valuedouble;
    }
    printf("\n");
    cJSON_Delete(j);
    free(text);
    return joins;
}

/* The GRPO stage's planned bytes (summary.json memory_plan_ranks, the
 * largest of total and release_peak) and measured peak per rank: gap[r] =
 * peak - plan, printed. */
static void plan_gaps(const char *name, int np, double *gap) {
    cJSON *j;
    const cJSON *plans, *peaks;
    grpo_summary(name, np, &j, &plans, &peaks);
    for (int r = 0; r < np; r++) {
        const cJSON *p = cJSON_GetArrayItem(plans, r);
        double total = cJSON_GetObjectItemCaseSensitive(p, "total")->valuedouble;
        const cJSON *rp = cJSON_GetObjectItemCaseSensitive(p, "release_peak");
        double plan = rp && rp->valuedouble > total ? rp->valuedouble : total;
        double peak = cJSON_GetArrayItem(peaks, r)->valuedouble;
        gap[r] = peak - plan;
        printf("# %s rank %d of %d: planned %.0f, peak allocated %.0f bytes (gap %.0f)\n", name, r, np, plan, peak,
               gap[r]);
    }
    cJSON_Delete(j);
}

/* The consolidated optimizer.safetensors of run y (ZeRO 2 / 3: every rank
 * its parts) against run ref's (ZeRO 0 with EP: ckpt_ep.c): the same
 * tensors (m.NAME, v.NAME of the whole model, global names) in the same
 * order and sizes, every value within tol. */
static void optim_within(const char *y, const char *ref, double tol) {
    char a[200], b[200];
    snprintf(a, sizeof a, "runs/%s/checkpoints/step-6/optimizer.safetensors", y);
    snprintf(b, sizeof b, "runs/%s/checkpoints/step-6/optimizer.safetensors", ref);
    int experts;
    double worst = largest_rel_diff(a, b, 1, &experts);
    assert_true(experts > 0); /* every expert's state, not only this rank's */
    printf("# %s vs ZeRO 0's: largest AdamW state difference %.3g (relative)\n", a, worst);
    if (worst > tol) fail_msg("%s: the AdamW state differs from ZeRO 0's by %.3g, above %g", a, worst, tol);
}

/* EP ep on np ranks at ZeRO 2 and 3 against ZeRO 0 with the same EP, and
 * ZeRO 3 against ZeRO 2 bit for bit. */
static void against_zero0(int np, int ep, int with2) {
    char z0[32], z2[32], z3[32], a[200];
    snprintf(z0, sizeof z0, "ez0_%d_%d", ep, np);
    snprintf(z2, sizeof z2, "ez2_%d_%d", ep, np);
    snprintf(z3, sizeof z3, "ez3_%d_%d", ep, np);
    ep_run(np, ep, 0, z0, NULL);
    const char *ys[2] = {z3, z2};
    double g0[4], gz[4];
    plan_gaps(z0, np, g0);
    for (int i = 0; i < 1 + with2; i++) {
        ep_run(np, ep, i ? 2 : 3, ys[i], NULL);
        /* plan == peak on every rank (shards, windows, the compact masters,
         * the dispatch buffers), as at ZeRO 0 with EP */
        plan_gaps(ys[i], np, gz);
        for (int r = 0; r < np; r++)
            if (gz[r] != 0 || g0[r] != 0)
                fail_msg("%s rank %d: peak - plan %.0f bytes (ZeRO 0's %.0f)", ys[i], r, gz[r], g0[r]);
        same_before_update(ys[i], z0, z0, "ZeRO 0 with the same EP");
        metrics_within(ys[i], z0, TOL_EPZ);
        step6_weights_within(ys[i], z0, TOL_EPZ);
        optim_within(ys[i], z0, TOL_EPZ);
        snprintf(a, sizeof a, "runs/%s/checkpoints/step-6/trainer_state.json", ys[i]);
        char *st = read_rel(a);
        cJSON *j = cJSON_Parse(st);
        assert_int_equal(cJSON_GetObjectItemCaseSensitive(j, "zero_stage")->valueint, i ? 2 : 3);
        assert_int_equal(cJSON_GetObjectItemCaseSensitive(j, "expert_parallel_size")->valueint, ep);
        assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "optimizer_by_name")));
        cJSON_Delete(j);
        free(st);
    }
    if (!with2) return;
    metrics_within(z3, z2, 0);
    same_run_file(z3, z2, "samples.jsonl");
    same_run_file(z3, z2, "rows.jsonl");
    same_checkpoints(z3, z2); /* GRPO's last checkpoint (with the reference) and SFT's */
}

static void test_ep_zero_world2(void **state) {
    (void)state;
    against_zero0(2, 2, 1);
    /* rank 1 failing GRPO step 2 at ZeRO 3 ends both ranks, named (agreed
     * after the step's passes: no rank is left in a gather or an exchange) */
    double t0 = now_s();
    ep_run(2, 2, 3, "ez_fault", "GRPO_TEST_FAIL_RANK=1:2");
    char *e = err_of("ez_fault");
    if (!strstr(e, "rank 1 fails training step 2") || !strstr(e, "the training step: rank 1 failed"))
        fail_msg("a failing rank at ZeRO 3 with EP 2:\n%s", e);
    free(e);
    assert_false(exists_rel("runs/ez_fault/checkpoints/step-2"));
    printf("# ZeRO 3, EP 2, rank 1 failing step 2: every rank ended in %.2f s\n", now_s() - t0);
}

static void test_ep_zero_world4(void **state) {
    (void)state;
    against_zero0(4, 2, 1);
    /* EP 4 on 4 ranks: expert-data-parallel groups of one rank (the experts
     * are not cut; the rest is, over 4) */
    against_zero0(4, 4, 0);
}

/* SFT steps of 2 rows on 4 ranks with EP 2: ranks 2 and 3 have no
 * micro-batch and make zero-row passes (their EP group's exchanges, and at
 * ZeRO 2 / 3 the units' reduce-scatters and gathers in a real pass's
 * order). ZeRO 2 within TOL_EPZ of ZeRO 0 with the same EP, ZeRO 3 bit
 * for bit ZeRO 2, plan == peak. */
static void test_ep_zero_uneven(void **state) {
    (void)state;
    const char *uneven[] = {UNEVEN, NULL};
    const char *names[3] = {"ezu0", "ezu2", "ezu3"};
    for (int z = 0; z < 3; z++) expect_ok(ep_run_with(4, 2, z ? z + 1 : 0, names[z], NULL, uneven), names[z]);
    metrics_within("ezu2", "ezu0", TOL_EPZ);
    weights_within("runs/ezu2/checkpoints/step-6/model.safetensors", "runs/ezu0/checkpoints/step-6/model.safetensors",
                   TOL_EPZ);
    metrics_within("ezu3", "ezu2", 0);
    same_bytes("runs/ezu3/checkpoints/step-6/model.safetensors", "runs/ezu2/checkpoints/step-6/model.safetensors");
    same_bytes("runs/ezu3/checkpoints/step-6/optimizer.safetensors",
               "runs/ezu2/checkpoints/step-6/optimizer.safetensors");
    double gap[4];
    for (int z = 1; z < 3; z++) {
        plan_gaps(names[z], 4, gap);
        for (int r = 0; r < 4; r++) assert_true(gap[r] == 0);
    }
}

/* Resume with EP 2 on 2 ranks: at ZeRO 2 and 3 a run stopped after 2 steps
 * and resumed ends bit for bit the uninterrupted run (weights and the
 * consolidated optimizer state); the optimizer.safetensors of ZeRO 0 with EP
 * resumes at ZeRO 3 with EP, and ZeRO 3's at ZeRO 0 with EP 1, each ending
 * within TOL_EPZ of the uninterrupted ZeRO 0 run with EP 2. */
static void test_ep_zero_resume(void **state) {
    (void)state;
    const char *stop2[] = {"--max-total-steps", "2", NULL}, *resume[] = {"--resume", NULL};
    const struct { const char *name; int ep1, z1, ep2, z2; } runs[] = {
        {"ezr2", 2, 2, 2, 2}, {"ezr3", 2, 3, 2, 3}, {"ezr03", 2, 0, 2, 3}, {"ezr31", 2, 3, 1, 0}};
    char z0[32];
    snprintf(z0, sizeof z0, "ez0_2_2");
    ep_run(2, 2, 0, z0, NULL);
    for (int i = 0; i < 4; i++) {
        expect_ok(ep_run_with(2, runs[i].ep1, runs[i].z1, runs[i].name, NULL, stop2), runs[i].name);
        expect_ok(ep_run_with(2, runs[i].ep2, runs[i].z2, runs[i].name, NULL, resume), runs[i].name);
        char a[200], b[200], ref[32];
        if (runs[i].z1 == runs[i].z2) { /* the same configuration: bit for bit */
            snprintf(ref, sizeof ref, "ez%d_2_2", runs[i].z1);
            ep_run(2, 2, runs[i].z1, ref, NULL);
            const char *files[] = {"model.safetensors", "optimizer.safetensors"};
            for (int k = 0; k < 2; k++) {
                snprintf(a, sizeof a, "runs/%s/checkpoints/step-6/%s", runs[i].name, files[k]);
                snprintf(b, sizeof b, "runs/%s/checkpoints/step-6/%s", ref, files[k]);
                same_bytes(a, b);
            }
        } else {
            step6_weights_within(runs[i].name, z0, TOL_EPZ);
            optim_within(runs[i].name, z0, TOL_EPZ);
        }
    }
}

/* Stages after the stage-3 stages run on the policy they left sharded
 * (gathered unit by unit, experts within the expert-data-parallel group):
 * an eval stage of 3 prompts and a sample stage of 1 after SFT (ranks
 * without prompts: on 2 ranks rank 0 joins rank 1's passes with zero-row
 * steps, each a whole unit sequence of gathers; on 4 ranks EP group 0 has
 * no prompt in the sample stage and pads the world's gathers of group 1's
 * passes), EP 2 on 2 and 4 ranks, write the same samples byte for byte as
 * after the same stages at ZeRO 2 (whose weights are ZeRO 3's). A ZeRO 3
 * stage followed by a ZeRO 0 one (the policy gathered whole, by class). */
static void test_ep_zero3_after(void **state) {
    (void)state;
    char *saved = RECIPE;
    RECIPE = recipe_sft_to("r_ep_after.lua",
                           "    { type = 'eval', name = 'eval_after', dataset = 'train', limit = 3, num_generations = 2,\n"
                           "      max_completion_length = 8, stop = { '>' } },\n"
                           "    { type = 'sample', name = 'rows_after', dataset = 'train', limit = 1, num_generations = 2,\n"
                           "      max_completion_length = 8, stop = { '>' } },\n",
                           1);
    const int nps[] = {2, 4};
    for (int i = 0; i < 2; i++) {
        char x[16], y[16];
        snprintf(x, sizeof x, "eza3_%d", nps[i]);
        snprintf(y, sizeof y, "eza2_%d", nps[i]);
        ep_run(nps[i], 2, 3, x, NULL);
        ep_run(nps[i], 2, 2, y, NULL);
        same_run_file(x, y, "eval_after.samples.jsonl");
        same_run_file(x, y, "rows_after.samples.jsonl");
        same_run_file(x, y, "rows_after.jsonl");
        /* the after-stages' joins: a rank without prompts joined every pass of its peer */
        assert_true(joins_of(x, "rows_after", nps[i]) > joins_of(x, "grpo", nps[i]));
    }
    free(RECIPE);
    RECIPE = saved;
    /* GRPO at ZeRO 3 then SFT at ZeRO 0 with EP 2 on 2 ranks: the policy
     * gathered whole (each class over its group) before the SFT stage; the
     * run ends within TOL_EPZ of ZeRO 0 throughout */
    ep_run(2, 2, 0, "ez0_2_2", NULL);
    const char *sft0[] = {"--set", "stages.sft.zero_stage=0", NULL};
    expect_ok(ep_run_with(2, 2, 3, "eza30", NULL, sft0), "eza30");
    metrics_within("eza30", "ez0_2_2", TOL_EPZ);
    step6_weights_within("eza30", "ez0_2_2", TOL_EPZ);
}

/* Run NAME's GRPO stage at ZeRO 3 never held a whole policy (its EP
 * index's model included): no peak at a release in its summary, no
 * release_peak in any rank's plan, and each rank's measured peak its
 * planned total, byte for byte. */
static void no_release(const char *name, int np) {
    cJSON *j;
    const cJSON *plans, *peaks, *g = grpo_summary(name, np, &j, &plans, &peaks);
    if (cJSON_GetObjectItemCaseSensitive(g, "memory_peak_release"))
        fail_msg("%s: the GRPO stage at ZeRO 3 received its EP index's model whole and released it", name);
    for (int r = 0; r < np; r++) {
        const cJSON *p = cJSON_GetArrayItem(plans, r), *rp = cJSON_GetObjectItemCaseSensitive(p, "release_peak");
        double total = cJSON_GetObjectItemCaseSensitive(p, "total")->valuedouble;
        double peak = cJSON_GetArrayItem(peaks, r)->valuedouble;
        printf("# %s rank %d of %d: planned total %.0f, release peak %.0f, peak allocated %.0f bytes\n", name, r, np,
               total, rp ? rp->valuedouble : 0.0, peak);
        if (rp && rp->valuedouble != 0) fail_msg("%s rank %d: a release peak of %.0f bytes planned", name, r, rp->valuedouble);
        if (peak != total) fail_msg("%s rank %d: peak %.0f bytes, planned %.0f", name, r, peak, total);
    }
    cJSON_Delete(j);
}

/* The sharded load with EP (run_zero3_load: the EP index's model made
 * without its arena, each rank reading its shard's pieces by class, the
 * experts' over the expert-data-parallel group, the rest over the world),
 * EP 2 at ZeRO 3 on 2 and 4 ranks against the same at ZeRO 2 (which loads
 * whole): the sample, eval, GRPO (reference read from the model directory
 * again, as a frozen EP model) and SFT stages' metrics and samples and the
 * GRPO and SFT checkpoints byte for byte; and on 2 ranks with init_std
 * (random weights from scratch: each rank draws its pieces; the reference
 * gathered unit by unit, as no file holds it). The GRPO stage never
 * receives a whole policy: no release, peak == plan per rank. */
static void test_ep_zero3_loads(void **state) {
    (void)state;
    const int nps[] = {2, 4, 2};
    const char *rnd[] = {"--set", "init_std=0.02", NULL};
    for (int i = 0; i < 3; i++) {
        char x[32], y[32];
        const char *const *extra = i == 2 ? rnd : NULL;
        snprintf(x, sizeof x, i == 2 ? "ezl3_r" : "ez3_2_%d", nps[i]);
        snprintf(y, sizeof y, i == 2 ? "ezl2_r" : "ez2_2_%d", nps[i]);
        if (extra) {
            expect_ok(ep_run_with(nps[i], 2, 3, x, NULL, extra), x);
            expect_ok(ep_run_with(nps[i], 2, 2, y, NULL, extra), y);
        } else {
            ep_run(nps[i], 2, 3, x, NULL);
            ep_run(nps[i], 2, 2, y, NULL);
        }
        metrics_within(x, y, 0);
        same_run_file(x, y, "samples.jsonl");
        same_run_file(x, y, "rows.jsonl");
        same_checkpoints(x, y);
        no_release(x, nps[i]);
    }
}

/* EP 2 at ZeRO 3 over the whole run (the counters never reset: the load,
 * the sample and eval stages, the GRPO stage, its end; summary.json's
 * run_memory) on 2 and 4 ranks: every rank's peak is the GRPO stage's
 * planned total, byte for byte, and neither the stage nor its plan has a
 * release. test_dp.c's test_zero3_run_peak's shapes (2-token completions,
 * micro-batches of 1, 4 prompts) keep the activations and rollout below
 * the EP index's f32 arena, so loading that arena whole (and releasing it
 * at the stage's opening) shows in the peak. */
static void test_ep_zero3_run_peak(void **state) {
    (void)state;
    const int nps[] = {2, 4};
    const char *small[] = {"--set", "stages.grpo.expert_parallel_size=2", "--set", "stages.sft.expert_parallel_size=2",
                           "--set", "stages.grpo.zero_stage=3", "--set", "stages.sft.zero_stage=3",
                           "--max-total-steps", "3", "--set", "stages.grpo.max_completion_length=2", "--set",
                           "stages.grpo.per_device_train_batch_size=1", "--set", "stages.grpo.generation_batch_size=8",
                           "--set", "stages.grpo.num_generations=2", NULL};
    for (int i = 0; i < 2; i++) {
        char name[16];
        snprintf(name, sizeof name, "ezp%d", nps[i]);
        expect_ok(run_np(nps[i], name, NULL, small), name);
        no_release(name, nps[i]); /* the stage's own peak == its plan, no release */
        cJSON *j;
        const cJSON *plans, *stage_peaks;
        grpo_summary(name, nps[i], &j, &plans, &stage_peaks);
        const cJSON *peaks = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "run_memory"),
                                                              "peak_allocated");
        if (!cJSON_IsArray(peaks)) fail_msg("%s: no run_memory.peak_allocated", name);
        assert_int_equal(cJSON_GetArraySize(peaks), nps[i]);
        for (int r = 0; r < nps[i]; r++) {
            double plan = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(plans, r), "total")->valuedouble;
            double peak = cJSON_GetArrayItem(peaks, r)->valuedouble;
            printf("# %s rank %d of %d (EP 2, ZeRO 3): planned %.0f, run peak %.0f bytes\n", name, r, nps[i], plan,
                   peak);
            if (peak != plan) fail_msg("%s rank %d: the run's peak %.0f, planned %.0f", name, r, peak, plan);
        }
        cJSON_Delete(j);
    }
}

/* Arguments: the names of the tests to run (all without). */
int main(int argc, char **argv) {
    const struct CMUnitTest all[] = {cmocka_unit_test(test_ep_zero_world2), cmocka_unit_test(test_ep_zero_world4),
                                     cmocka_unit_test(test_ep_zero3_after), cmocka_unit_test(test_ep_zero_resume),
                                     cmocka_unit_test(test_ep_zero_uneven), cmocka_unit_test(test_ep_zero3_loads),
                                     cmocka_unit_test(test_ep_zero3_run_peak)};
    return dp_run("test_ep_zero", all, sizeof all / sizeof all[0], argc, argv);
}
