/* Expert parallelism as MPI ranks on the CPU (issue 15), on test_dp.c's
 * recipe (dp_common.c: a sample stage, an eval stage, 3 GRPO steps with a
 * reference model (beta 0.01), 3 SFT steps on the hf-tiny-v3-a weights: 8
 * routed experts per MoE layer) with expert_parallel_size EP:
 *   - EP 2 on 2 ranks, EP 2 and 4 on 4 ranks against EP 1 on the same
 *     world size: byte for byte before the first update (the sample stage's
 *     rows, the eval's samples, the GRPO step-1 completions: the forward
 *     is bit-identical, the rollout in lockstep over each EP group); the
 *     losses, gradient norms, rewards and the final consolidated weights
 *     (every rank's experts written into one model.safetensors) within
 *     TOL_EP after updates (the experts' gradients are summed over the
 *     expert-data-parallel group in another grouping);
 *   - ranks whose sequences end early keep joining their group's exchanges
 *     with zero-row decode steps (the eval and sample stages' uneven
 *     completion lengths: no hang, the same samples);
 *   - a step whose rows give the ranks different numbers of micro-batches
 *     is refused by name on every rank (no hang);
 *   - a rank failing a training step ends every rank, named. */
#include "dp_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* Agreement with EP 1 after updates. Measured: see the test's output. */
#define TOL_EP 1e-4

/* SFT steps of 4 x 2 rows: on 4 ranks every rank trains one micro-batch
 * (the recipe's 2 rows per step would leave two ranks without one) */
#define SFT4 "--set", "stages.sft.gradient_accumulation_steps=4"
/* a stop string the tiny model emits now and then (its "<think>", "<|bos|>"
 * tokens): completions of uneven lengths, so ranks finish at different steps */
#define STOP "--set", "stages.rows.stop=[\">\"]", "--set", "stages.eval_before.stop=[\">\"]", "--set", \
             "stages.grpo.stop=[\">\"]"
static const char *const EP_ARGS[2][3][14] = {
    {{STOP, NULL},
     {"--set", "stages.grpo.expert_parallel_size=2", "--set", "stages.sft.expert_parallel_size=2", STOP, NULL},
     {NULL}},
    {{SFT4, STOP, NULL},
     {"--set", "stages.grpo.expert_parallel_size=2", "--set", "stages.sft.expert_parallel_size=2", SFT4, STOP, NULL},
     {"--set", "stages.grpo.expert_parallel_size=4", "--set", "stages.sft.expert_parallel_size=4", SFT4, STOP, NULL}},
};

static void against_ep1(int np, int ep) {
    char w[16], y[16], a[160], b[160];
    int four = np == 4;
    snprintf(w, sizeof w, "e1_%d", np);
    snprintf(y, sizeof y, "ep%d_%d", ep, np);
    ensure_run(np, w, EP_ARGS[four][0], 0);
    double t0 = now_s();
    ensure_run(np, y, EP_ARGS[four][ep / 2], 0);
    printf("# EP %d on %d ranks: %.2f s\n", ep, np, now_s() - t0);
    same_before_update(y, w, w, "EP 1");
    metrics_within(y, w, TOL_EP);
    snprintf(a, sizeof a, "runs/%s/checkpoints/step-6/model.safetensors", y);
    snprintf(b, sizeof b, "runs/%s/checkpoints/step-6/model.safetensors", w);
    double d = weights_within(a, b, TOL_EP);
    printf("# EP %d on %d ranks: weights within %.3g of EP 1\n", ep, np, d);
    snprintf(a, sizeof a, "runs/%s/checkpoints/step-6/optimizer.safetensors", y);
    assert_true(exists_rel(a));
    /* the rollout's lockstep: the ranks' own decode steps and the zero-row
     * steps of those done first (uneven completion lengths), per rank */
    snprintf(a, sizeof a, "runs/%s/summary.json", y);
    char *text = read_rel(a);
    cJSON *j = cJSON_Parse(text);
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "sft.expert_parallel_rollout"); /* the run's totals */
    assert_non_null(r);
    double joins = 0;
    printf("# EP %d on %d ranks, rollout steps per rank (own decode / zero-row join / join s / generate s):", ep, np);
    for (int k = 0; k < np; k++) {
        double v[4];
        const char *keys[4] = {"decode_steps", "join_steps", "join_seconds", "generate_seconds"};
        for (int q = 0; q < 4; q++) {
            const cJSON *arr = cJSON_GetObjectItemCaseSensitive(r, keys[q]);
            assert_int_equal(cJSON_GetArraySize(arr), np);
            v[q] = cJSON_GetArrayItem(arr, k)->valuedouble;
        }
        printf(" %.0f/%.0f/%.3f/%.3f", v[0], v[1], v[2], v[3]);
        joins += v[1];
        assert_true(v[0] > 0);
    }
    printf("\n");
    /* on 4 ranks rank 0's completions stop 3 steps earlier than the others'
     * (the stop string): it kept joining their exchanges, and nothing hung */
    if (np == 4) assert_true(joins > 0);
    cJSON_Delete(j);
    free(text);
}

static void test_ep2_world2(void **state) {
    (void)state;
    against_ep1(2, 2);
    /* rank 1 failing GRPO step 2 ends both ranks (agreed after the step's
     * passes, so its EP peer is not left in an exchange), naming rank 1 */
    double t0 = now_s();
    int rc = run_np(2, "ep_fault", "GRPO_TEST_FAIL_RANK=1:2", EP_ARGS[0][1]);
    char *e = err_of("ep_fault");
    if (rc == 0 || !strstr(e, "rank 1 fails training step 2")) fail_msg("a failing rank with EP 2: exit %d:\n%s", rc, e);
    free(e);
    printf("# EP 2, rank 1 failing step 2: every rank ended in %.2f s\n", now_s() - t0);
}

static void test_ep_world4(void **state) {
    (void)state;
    against_ep1(4, 2);
    against_ep1(4, 4);
    /* the recipe's SFT steps of 2 rows on 4 ranks: refused by name on every
     * rank (ranks without a micro-batch would leave their EP group waiting) */
    const char *uneven[] = {"--set", "stages.grpo.expert_parallel_size=2", "--set", "stages.sft.expert_parallel_size=2",
                            NULL};
    assert_int_not_equal(run_np(4, "ep_uneven", NULL, uneven), 0);
    char *e = err_of("ep_uneven");
    if (!strstr(e, "expert_parallel_size = 2: per_device_train_batch_size x gradient_accumulation_steps: 2 rows over "
                   "4 ranks give 0 to 1 micro-batches"))
        fail_msg("uneven SFT micro-batches with EP were not refused by name:\n%s", e);
    free(e);
}

/* Arguments: the names of the tests to run (all without). */
int main(int argc, char **argv) {
    const struct CMUnitTest all[] = {cmocka_unit_test(test_ep2_world2), cmocka_unit_test(test_ep_world4)};
    return dp_run("test_ep_dp", all, sizeof all / sizeof all[0], argc, argv);
}
