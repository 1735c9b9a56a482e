/* ZeRO stages 2 and 3 as MPI ranks on the CPU (issue 14), on test_dp.c's
 * recipe (dp_common.c: a sample stage, an eval stage, 3 GRPO steps, 3 SFT
 * steps on the hf-tiny-v3-a weights):
 *   - ZeRO 2 (gradients reduce-scattered into shards) and ZeRO 3
 *     (parameters sharded too, gathered unit by unit) on 1, 2, 4 ranks
 *     against ZeRO 0 on the same world size: byte for byte before the
 *     first update, within TOL_Z2 after; ZeRO 3 bit for bit ZeRO 2;
 *   - resume at the same world size bit for bit, and across world sizes
 *     and stages (ZeRO 1 on 4 ranks -> ZeRO 2 / 3 on 2, and back);
 *   - a rank failing a step fails every rank, the run resumes;
 *   - ranks making different numbers of forward passes at ZeRO 3 (the
 *     demo's rollout and old log-probs) end together, as ZeRO 0;
 *   - LoRA at ZeRO 2 refused by name. */
#include "dp_common.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- ZeRO stage 2 ---------------------------------------------------------- */

/* Agreement of ZeRO 2 with ZeRO 0 on the same world size after updates:
 * the gradients are reduced per micro-batch and unit (window + shard
 * additions grouped differently from ZeRO 0's one arena) and the norm is
 * summed by shard. Measured: see test_zero2's output. */
#define TOL_Z2 1e-4

/* ZeRO 2 against ZeRO 0 on 1, 2 and 4 ranks: everything before the first
 * update byte for byte (the sample rows, the eval samples, the GRPO step-1
 * completions), the losses, gradient norms, rewards and the weights after
 * 3 GRPO and 3 SFT steps within TOL_Z2; the optimizer shard files are
 * ZeRO 1's, recorded as stage 2. */
static void against_zero0(int stage, char prefix) {
    const int nps[] = {1, 2, 4};
    for (int i = 0; i < 3; i++) {
        char w[16], y[16], a[160], b[160];
        snprintf(w, sizeof w, "w%d", nps[i]);
        snprintf(y, sizeof y, "%c%d", prefix, nps[i]);
        ensure_run(nps[i], w, NULL, 0);
        double t0 = now_s();
        ensure_run(nps[i], y, NULL, stage);
        printf("# ZeRO %d on %d ranks: %.2f s\n", stage, nps[i], now_s() - t0);
        same_before_update(y, "w1", w, "ZeRO 0");
        metrics_within(y, w, TOL_Z2);
        snprintf(a, sizeof a, "runs/%s/checkpoints/step-6/model.safetensors", y);
        snprintf(b, sizeof b, "runs/%s/checkpoints/step-6/model.safetensors", w);
        weights_within(a, b, TOL_Z2);
        snprintf(a, sizeof a, "runs/%s/checkpoints/step-6", y);
        check_shards_at(a, nps[i], stage);
    }
}

static void test_zero2(void **state) {
    (void)state;
    against_zero0(2, 'y');
    /* LoRA: refused, named (the adapter's gradient arena is not sharded) */
    const char *lora[] = {"--set", "lora.r=4", NULL}, *la[16];
    with_zero(la, lora, 2);
    assert_int_not_equal(run_np(2, "ly2", NULL, la), 0);
    char *e = err_of("ly2");
    if (!strstr(e, "zero_stage = 2 with a LoRA adapter")) fail_msg("LoRA at ZeRO 2 was not refused by name:\n%s", e);
    /* refused by every rank at the same point, agreed: the ranks leave through
     * MPI_Finalize, not each through MPI_Abort (mpirun once died of a signal
     * 11 when both ranks aborted at once) */
    if (strstr(e, "ending every rank of the job")) fail_msg("LoRA at ZeRO 2: a rank ended the job alone:\n%s", e);
    free(e);
}

/* Resume with ZeRO 2: on the same world size bit for bit (weights and every
 * optimizer shard); from a ZeRO-1 checkpoint of 4 ranks on 2 at ZeRO 2,
 * and from ZeRO 2 on 2 ranks to ZeRO 1 on 4 (re-sharded on load): each
 * within TOL_Z2 of the same world-size change at ZeRO 0. A rank failing a
 * step at ZeRO 2 fails every rank, and the run resumes bit-identical. */
static void test_zero2_resume(void **state) {
    (void)state;
    ensure_run(2, "y2", NULL, 2);
    stop_resume("yr22", 2, 2, 2, 2);
    same_step6("yr22", "y2", 2);
    const struct { const char *y, *ref; int np1, z1, np2, z2; } cross[] = {
        {"yr42", "rr42", 4, 1, 2, 2}, {"yr24", "rr24", 2, 2, 4, 1}};
    for (int i = 0; i < 2; i++)
        resume_within_zero0(cross[i].y, cross[i].ref, cross[i].np1, cross[i].z1, cross[i].np2, cross[i].z2, TOL_Z2);
    /* a failed rank */
    const char *z2[16];
    with_zero(z2, NULL, 2);
    int rc = run_np(2, "yfe", "GRPO_TEST_FAIL_RANK=1:2", z2);
    char *e = err_of("yfe");
    if (rc == 0) fail_msg("a failing rank at ZeRO 2: the job exited 0:\n%s", e);
    assert_non_null(strstr(e, "grpo[rank 0] run: stage 'grpo': the training step: rank 1 failed"));
    free(e);
    assert_false(exists_rel("runs/yfe/checkpoints/step-2"));
    const char *resume[] = {"--resume", NULL}, *ra[16];
    with_zero(ra, resume, 2);
    expect_ok(run_np(2, "yfe", NULL, ra), "yfe");
    same_bytes("runs/yfe/checkpoints/step-6/model.safetensors", "runs/y2/checkpoints/step-6/model.safetensors");
}

/* ---- ZeRO stage 3 ---------------------------------------------------------- */

/* ZeRO 3 against ZeRO 0 on 1, 2 and 4 ranks, as ZeRO 2 (the same gradient
 * path; the weights gathered unit by unit are the same values): before the
 * first update byte for byte, after it within TOL_Z2; and bit for bit the
 * ZeRO 2 run of the same world size (every logged value, the samples, the
 * checkpoint's weights and optimizer shards). */
static void test_zero3(void **state) {
    (void)state;
    against_zero0(3, 'x');
    const int nps[] = {1, 2, 4};
    for (int i = 0; i < 3; i++) {
        char x[16], y[16];
        snprintf(x, sizeof x, "x%d", nps[i]);
        snprintf(y, sizeof y, "y%d", nps[i]);
        ensure_run(nps[i], y, NULL, 2);
        metrics_within(x, y, 0);
        same_run_file(x, y, "samples.jsonl");
        same_step6(x, y, nps[i]);
    }
}

/* Resume with ZeRO 3: on the same world size bit for bit; from a ZeRO-1
 * checkpoint written by 4 ranks onto 2 ranks at ZeRO 3, and from ZeRO 3 on
 * 2 ranks onto 4 at ZeRO 1, each within TOL_Z2 of the same change at ZeRO
 * 0 (the weights are loaded whole, then sharded; the optimizer state is
 * re-sharded on load). A rank failing step 2 at ZeRO 3 fails every rank
 * (no rank left waiting in a unit gather), and the resumed run ends
 * bit-identical to the uninterrupted one. */
static void test_zero3_resume(void **state) {
    (void)state;
    ensure_run(2, "x2", NULL, 3);
    stop_resume("xr22", 2, 3, 2, 3);
    same_step6("xr22", "x2", 2);
    const struct { const char *x, *ref; int np1, z1, np2, z2; } cross[] = {
        {"xr42", "rr42", 4, 1, 2, 3}, {"xr24", "rr24", 2, 3, 4, 1}};
    for (int i = 0; i < 2; i++)
        resume_within_zero0(cross[i].x, cross[i].ref, cross[i].np1, cross[i].z1, cross[i].np2, cross[i].z2, TOL_Z2);
    const char *z3[16];
    with_zero(z3, NULL, 3);
    double t0 = now_s();
    int rc = run_np(2, "xfe", "GRPO_TEST_FAIL_RANK=1:2", z3);
    double dt = now_s() - t0;
    char *e = err_of("xfe");
    if (rc == 0) fail_msg("a failing rank at ZeRO 3: the job exited 0:\n%s", e);
    assert_true(dt < 60);
    assert_non_null(strstr(e, "rank 1 fails training step 2"));
    assert_non_null(strstr(e, "grpo[rank 0] run: stage 'grpo': the training step: rank 1 failed"));
    free(e);
    assert_true(exists_rel("runs/xfe/checkpoints/step-1/model.safetensors"));
    assert_false(exists_rel("runs/xfe/checkpoints/step-2"));
    const char *resume[] = {"--resume", NULL}, *ra[16];
    with_zero(ra, resume, 3);
    expect_ok(run_np(2, "xfe", NULL, ra), "xfe");
    same_bytes("runs/xfe/checkpoints/step-6/model.safetensors", "runs/x2/checkpoints/step-6/model.safetensors");
}

/* `mpirun -np np` of NAME (spawn) within `seconds`, else killed and failed:
 * a collective one rank never makes would leave the others waiting. */
static void run_within(int np, const char *name, const char *const *args, double seconds) {
    pid_t pid = spawn(np, name, NULL, args);
    double t0 = now_s();
    int st = 0;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (now_s() - t0 > seconds) {
            kill(pid, SIGTERM);
            sleep(2);
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            char *e = err_of(name);
            fail_msg("%s on %d ranks did not end within %.0f s (ranks waiting in a collective?):\n%s", name, np,
                     seconds, e);
        }
        usleep(20000);
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char *e = err_of(name);
        fail_msg("%s on %d ranks failed (status %d):\n%s", name, np, st, e);
    }
}

/* ZeRO 3 when the ranks make different numbers of forward passes (the
 * demo's rollout: completions of 1 to 64 tokens, each rank decoding until
 * its own are done; the old log-probs): every unit gather is a collective,
 * so a rank that has finished makes the others' remaining passes' gathers
 * (run_zero3_sync); the run ends, and its GRPO steps equal ZeRO 0's on the
 * same world size (step 1 bit for bit, the next within TOL_Z2). */
static void test_zero3_uneven(void **state) {
    (void)state;
    char *src = getenv("GRPO_SRC"), recipe[1024], out[1024];
    assert_non_null(src);
    snprintf(recipe, sizeof recipe, "%s/recipes/tiny-zero.lua", src);
    snprintf(out, sizeof out, "output_dir=%s/runs", DIR_);
    char *keep = RECIPE;
    RECIPE = recipe;
    const char *a3[] = {"--set", out, "--max-total-steps", "3", "--set", "stages.eval_before.limit=8",
                        "--set", "stages.grpo.zero_stage=3", "--set", "stages.grpo.num_iterations=2", NULL};
    const char *a0i[] = {"--set", out, "--max-total-steps", "3", "--set", "stages.eval_before.limit=8",
                         "--set", "stages.grpo.num_iterations=2", NULL};
    run_within(2, "demo0", a0i, 120);
    run_within(2, "demo3", a3, 120);
    RECIPE = keep;
    char *m0 = read_rel("runs/demo0/metrics.jsonl"), *m3 = read_rel("runs/demo3/metrics.jsonl");
    char *s0 = NULL, *s3 = NULL;
    int steps = 0;
    for (char *l0 = strtok_r(m0, "\n", &s0), *l3 = strtok_r(m3, "\n", &s3); l0 && l3;
         l0 = strtok_r(NULL, "\n", &s0), l3 = strtok_r(NULL, "\n", &s3)) {
        cJSON *j0 = cJSON_Parse(l0), *j3 = cJSON_Parse(l3);
        assert_non_null(j0);
        assert_non_null(j3);
        if (!strcmp(base_json_str(j0, "stage", ""), "grpo")) {
            const char *keys[] = {"reward", "loss", "grad_norm", "completion_length"};
            for (int k = 0; k < 4; k++) {
                double x = cJSON_GetObjectItemCaseSensitive(j0, keys[k])->valuedouble;
                double y = cJSON_GetObjectItemCaseSensitive(j3, keys[k])->valuedouble;
                if (steps == 0 && k != 1 && k != 2 && x != y) fail_msg("step 1 %s: ZeRO 0 %.17g, ZeRO 3 %.17g", keys[k], x, y);
                if (!close_enough(y, x, TOL_Z2)) fail_msg("step %d %s: ZeRO 0 %.17g, ZeRO 3 %.17g", steps + 1, keys[k], x, y);
            }
            steps++;
        }
        cJSON_Delete(j0), cJSON_Delete(j3);
    }
    assert_int_equal(steps, 3);
    free(m0), free(m3);
}

/* The stages after a stage-3 GRPO stage run on the policy it left released
 * (run_zero3_end keeps the shards and the unit hook; no gather of the whole
 * arena): an eval stage and a sample stage after it, on 2 and 4 ranks (6
 * prompts: uneven over 4), write the same samples, byte for byte, as after
 * the same stage at ZeRO 2 (whose trained weights are ZeRO 3's bit for bit,
 * test_zero3). */
static void test_zero3_after(void **state) {
    (void)state;
    char *saved = RECIPE;
    RECIPE = recipe_sft_to("r_after.lua",
                           "    { type = 'eval', name = 'eval_after', dataset = 'train', limit = 6, num_generations = 2,\n"
                           "      max_completion_length = 8 },\n"
                           "    { type = 'sample', name = 'rows_after', dataset = 'train', limit = 6, num_generations = 2,\n"
                           "      max_completion_length = 8 },\n",
                           0);
    const int nps[] = {2, 4};
    for (int i = 0; i < 2; i++) {
        char x[16], y[16];
        snprintf(x, sizeof x, "xa%d", nps[i]);
        snprintf(y, sizeof y, "ya%d", nps[i]);
        const char *z3[] = {"--set", "stages.grpo.zero_stage=3", NULL}, *z2[] = {"--set", "stages.grpo.zero_stage=2", NULL};
        expect_ok(run_np(nps[i], x, NULL, z3), x);
        expect_ok(run_np(nps[i], y, NULL, z2), y);
        same_run_file(x, y, "eval_after.samples.jsonl");
        same_run_file(x, y, "rows_after.samples.jsonl");
        same_run_file(x, y, "rows_after.jsonl");
    }
    free(RECIPE);
    RECIPE = saved;
}

/* The policy loaded sharded (ZeRO 3's load: a model without its arena,
 * each rank reading its range) wherever a stage-3 stage trains it next:
 * test_dp.c's recipe without its sample and eval stages and with its SFT
 * stage (3 steps) before its GRPO stage (beta 0.01, 3 steps), both at
 * stage 3, on 2 ranks, against the same at ZeRO 2
 * (the policy whole at load; ZeRO 3's results are ZeRO 2's bit for bit,
 * test_zero3): the checkpoint's weights and optimizer shards and every
 * logged loss, norm, reward, KL and entropy the same, byte for byte, for
 *   - the model directory read sharded; the GRPO stage takes the SFT
 *     stage's shards over and its reference is gathered unit by unit
 *     (trained since the load: no file holds it);
 *   - init_std (random weights from scratch): each rank draws its range,
 *     model_init_random's values;
 *   - the GRPO stage's init_from = "model": the model directory read
 *     sharded again, the reference read from it;
 *   - the GRPO stage at ZeRO 2 instead: the sharded policy gathered whole
 *     after the SFT stage (its arena restored), then trained as ZeRO 2's.
 * At stage 3 the GRPO stage never receives a whole policy: its summary has
 * no peak at a release (loading whole and releasing at the opening
 * recorded one). */
static void test_zero3_loads(void **state) {
    (void)state;
    char *r = read_rel("r.lua");
    char *grpo = strstr(r, "    { type = 'grpo'"), *sft = strstr(r, "    { type = 'sft'");
    assert_non_null(grpo);
    assert_non_null(sft);
    char *end = strstr(sft, "  },\n}");
    assert_non_null(end);
    char *stages = strstr(r, "  stages = {\n");
    assert_non_null(stages);
    stages += strlen("  stages = {\n");
    char *text = NULL; /* the SFT stage, then the GRPO stage (no sample and eval stages) */
    assert_true(asprintf(&text, "%.*s%.*s%.*s%s", (int)(stages - r), r, (int)(end - sft), sft, (int)(sft - grpo), grpo,
                         end) > 0);
    write_rel("r_loads.lua", text);
    char *saved = RECIPE;
    RECIPE = path_of("r_loads.lua");
    const char *z3[] = {"--set", "stages.grpo.zero_stage=3", "--set", "stages.sft.zero_stage=3", NULL};
    const char *z2[] = {"--set", "stages.grpo.zero_stage=2", "--set", "stages.sft.zero_stage=2", NULL};
    const struct {
        const char *name, *set;
    } v[] = {{"ld", NULL}, {"ldr", "init_std=0.02"}, {"ldi", "stages.grpo.init_from=model"},
             {"ldg", "stages.grpo.zero_stage=2"}};
    for (int i = 0; i < 4; i++) {
        char x[16], y[16], rel[96];
        snprintf(x, sizeof x, "%s3", v[i].name);
        snprintf(y, sizeof y, "%s2", v[i].name);
        const char *a3[8], *a2[8];
        int n = 0;
        for (; z3[n]; n++) a3[n] = z3[n], a2[n] = z2[n];
        if (v[i].set) a3[n] = a2[n] = "--set", a3[n + 1] = a2[n + 1] = v[i].set, n += 2;
        a3[n] = a2[n] = NULL;
        expect_ok(run_np(2, x, NULL, a3), x);
        expect_ok(run_np(2, y, NULL, a2), y);
        same_step6(x, y, 2);
        metrics_within(x, y, 0);
        snprintf(rel, sizeof rel, "runs/%s/summary.json", x);
        char *t = read_rel(rel);
        cJSON *j = cJSON_Parse(t);
        assert_non_null(j);
        if (cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "grpo"), "memory_peak_release"))
            fail_msg("%s: the GRPO stage at ZeRO 3 received the whole policy and released it", x);
        cJSON_Delete(j);
        free(t);
    }
    free(RECIPE);
    RECIPE = saved;
    free(text), free(r);
}

/* Arguments: the names of the tests to run (all without). */
int main(int argc, char **argv) {
    const struct CMUnitTest all[] = {
        cmocka_unit_test(test_zero2), cmocka_unit_test(test_zero2_resume),
        cmocka_unit_test(test_zero3), cmocka_unit_test(test_zero3_resume), cmocka_unit_test(test_zero3_uneven),
        cmocka_unit_test(test_zero3_after), cmocka_unit_test(test_zero3_loads),
    };
    return dp_run("test_zero", all, sizeof all / sizeof all[0], argc, argv);
}
