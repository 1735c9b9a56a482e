/* Expert parallelism on MPI ranks on the CPU (issue 15): `mpirun -np N
 * grpo run` of a GRPO and an SFT stage on the hf-tiny-v3-a weights (8
 * routed experts) with expert_parallel_size set:
 *   - refusals, on every rank, before anything is written: an EP that does
 *     not divide the world size, one that does not divide n_routed_experts,
 *     training stages with different EPs, LoRA or ZeRO 2 with EP > 1; each
 *     message names expert_parallel_size and the value;
 *   - expert_parallel_size = 1 and 2 run; an EP 2 checkpoint records its EP
 *     and its optimizer state in optimizer.safetensors by name, and resumes
 *     with EP 1 (tests/dist/test_ep_resume.c: resume across EP, world size
 *     and ZeRO against the uninterrupted runs); a checkpoint without
 *     'optimizer_by_name' (older grpo's per-EP-index files) is refused by
 *     name.
 * MPIRUN (tests/dist/meson.build) is the launcher; OMPI_* in the test
 * environment let Open MPI run as root and oversubscribe CI's cores. */
#include "dp_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* dp_common.c's temp directory with this test's data, reward and recipe:
 * DIR_/r.lua is rewritten before the tests (RECIPE). */
static int ep_setup(void **state) {
    if (setup(state)) return -1;
    base_buf b = {0};
    for (int i = 0; i < 24; i++)
        base_buf_printf(&b, "{\"prompt\": \"What is %d + %d?\", \"completion\": \"%d\"}\n", i, 7 * i % 13,
                        i + 7 * i % 13);
    write_rel("data.jsonl", b.data);
    write_rel("vary.lua", "return function(s) return (#s.completion % 5) / 4 end\n");
    base_buf_reset(&b);
    base_buf_printf(&b,
                    "return {\n"
                    "  name = 'ep', model = '%s/model', output_dir = '%s/runs', seed = 5, device = 'cpu',\n"
                    "  template = 'Q: {prompt}\\nA: ', report = false, threads = 1,\n"
                    "  datasets = { train = '%s/data.jsonl' },\n"
                    "  rewards = { '%s/vary.lua:1.0' },\n"
                    "  stages = {\n"
                    "    { type = 'grpo', dataset = 'train', num_generations = 4, generation_batch_size = 8,\n"
                    "      max_steps = 2, max_completion_length = 6, learning_rate = 3e-3 },\n"
                    "    { type = 'sft', dataset = 'train', max_steps = 2, per_device_train_batch_size = 2,\n"
                    "      learning_rate = 1e-3 },\n"
                    "  },\n"
                    "}\n",
                    DIR_, DIR_, DIR_, DIR_);
    write_rel("r.lua", b.data);
    base_buf_free(&b);
    return 0;
}

/* dp_common.c's run_np with NAME.err emptied first (spawn appends to it):
 * each run's stderr alone. */
static int run_fresh(int np, const char *name, const char *const *args) {
    char errf[64];
    snprintf(errf, sizeof errf, "%s.err", name);
    write_rel(errf, "");
    return run_np(np, name, NULL, args);
}

/* A run refused at start: non-zero exit, want in its stderr, no run directory. */
static void expect_refused(int np, const char *name, const char *const *args, const char *want) {
    int rc = run_fresh(np, name, args);
    char rel[96];
    snprintf(rel, sizeof rel, "%s.err", name);
    char *e = read_rel(rel);
    if (rc == 0 || !strstr(e, want)) fail_msg("run %s: exit %d, expected an error with '%s':\n%s", name, rc, want, e);
    free(e);
    snprintf(rel, sizeof rel, "runs/%s", name);
    assert_false(exists_rel(rel));
}

static void test_refused(void **state) {
    (void)state;
    const char *world[] = {"--set", "stages.grpo.expert_parallel_size=2", "--set", "stages.sft.expert_parallel_size=2",
                           NULL};
    expect_refused(3, "ep_world", world, "expert_parallel_size = 2 does not divide the world size 3");
    const char *experts[] = {"--set", "stages.grpo.expert_parallel_size=3", "--set",
                             "stages.sft.expert_parallel_size=3", NULL};
    expect_refused(3, "ep_experts", experts,
                   "expert_parallel_size = 3 does not divide the model's n_routed_experts 8");
    const char *differ[] = {"--set", "stages.grpo.expert_parallel_size=2", NULL};
    expect_refused(2, "ep_differ", differ,
                   "stages[2].expert_parallel_size = 1 differs from stages[1]'s 2: one expert_parallel_size per run");
    const char *lora[] = {"--set", "stages.grpo.expert_parallel_size=2", "--set", "stages.sft.expert_parallel_size=2",
                          "--set", "lora.r=4", NULL};
    expect_refused(2, "ep_lora", lora, "expert_parallel_size = 2 with a lora table");
    /* expert_parallel_size = 1 (the default, and set) runs */
    const char *one[] = {"--set", "stages.grpo.expert_parallel_size=1", "--set", "stages.sft.expert_parallel_size=1",
                         NULL};
    int rc = run_fresh(2, "ep_one", one);
    if (rc) {
        char *e = read_rel("ep_one.err");
        fail_msg("run ep_one: exit %d:\n%s", rc, e);
    }
    assert_true(exists_rel("runs/ep_one/checkpoints/step-4/model.safetensors"));
    /* an EP 2 run stopped after 2 steps; its checkpoint records the EP and
     * the optimizer state by name, and resumes with EP 1 */
    const char *two[] = {"--set", "stages.grpo.expert_parallel_size=2", "--set", "stages.sft.expert_parallel_size=2",
                         "--max-total-steps", "2", NULL};
    rc = run_fresh(2, "ep_two", two);
    if (rc) {
        char *e = read_rel("ep_two.err");
        fail_msg("run ep_two: exit %d:\n%s", rc, e);
    }
    char *st = read_rel("runs/ep_two/checkpoints/step-2/trainer_state.json");
    assert_non_null(strstr(st, "\"expert_parallel_size\": 2"));
    assert_non_null(strstr(st, "\"optimizer_by_name\": true"));
    assert_true(exists_rel("runs/ep_two/checkpoints/step-2/optimizer.safetensors"));
    /* older grpo's EP checkpoint (no optimizer_by_name): refused by name, the run left as it was */
    char *old = base_xstrdup(st), *at = strstr(old, "\"optimizer_by_name\"");
    memcpy(at, "\"optimizer_by_nome\"", strlen("\"optimizer_by_nome\""));
    write_rel("runs/ep_two/checkpoints/step-2/trainer_state.json", old);
    const char *as1[] = {"--resume", NULL};
    rc = run_fresh(2, "ep_two", as1);
    char *e = read_rel("ep_two.err");
    if (rc == 0 || !strstr(e, "a checkpoint of a run with expert_parallel_size = 2 written by an older grpo"))
        fail_msg("resume of an old-layout EP 2 checkpoint: exit %d:\n%s", rc, e);
    free(e);
    assert_false(exists_rel("runs/ep_two/checkpoints/step-4"));
    write_rel("runs/ep_two/checkpoints/step-2/trainer_state.json", st);
    free(old), free(st);
    rc = run_fresh(2, "ep_two", as1);
    if (rc) {
        e = read_rel("ep_two.err");
        fail_msg("resume of an EP 2 checkpoint with EP 1: exit %d:\n%s", rc, e);
    }
    assert_true(exists_rel("runs/ep_two/checkpoints/step-4/optimizer.safetensors"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, ep_setup, teardown);
}
