/* `grpo plan` (src/cli/cmd_plan.c): the bytes it prints per role are
 * run_grpo_memory's for the shape it prints (the planner tests/dist/
 * test_dp.c checks against every rank's allocations), for rank 0 and the
 * rank with the largest ZeRO-1 shard (3 ranks: the shards are uneven),
 * full at ZeRO 0-3 and LoRA at ZeRO 0-1; the communication volume is the
 * ring's 2 (W-1)/W of the gradient arena (and (W-1)/W for ZeRO 1's
 * all-gather), at ZeRO 2 and 3 run_grpo_comm_volume's reduce-scatters and
 * gathers; LoRA at ZeRO 2 and bad values are refused. */
#include "common/test_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "train/run.h"

/* The first number after `role` in out. */
static long long printed(const char *out, const char *role) {
    const char *p = strstr(out, role);
    if (!p) fail_msg("no '%s' in:\n%s", role, out);
    p += strlen(role);
    while (*p == ' ') p++;
    long long v = 0;
    for (; *p >= '0' && *p <= '9'; p++) v = v * 10 + (*p - '0');
    return v;
}

/* The second number after `role` (the largest rank's column). */
static long long printed2(const char *out, const char *role) {
    const char *p = strstr(out, role);
    if (!p) fail_msg("no '%s' in:\n%s", role, out);
    p = strstr(p, "GiB");
    assert_non_null(p);
    return printed(p, "GiB");
}

static void test_plan_roles(void **state) {
    (void)state;
    char *cfgp = test_src_path("tests/model/data/tiny-v3-a-fp8/config.json");
    model_config mc;
    assert_int_equal(model_config_load(cfgp, &mc), BASE_OK);
    model_lora_config lc = {.r = 4, .lora_alpha = 8, .targets = (1u << MODEL_LORA_NTARGETS) - 1};
    for (int lora = 0; lora < 2; lora++)
        for (int zero = 0; zero < (lora ? 2 : 4); zero++) {
            char args[1024], *out;
            const int W = 3;
            snprintf(args, sizeof args, "plan --model '%s' --gpus %d --zero %d --precision bf16 %s", cfgp, W, zero,
                     lora ? "--lora-r 4" : "");
            int rc = test_run_grpo(args, &out);
            if (rc) fail_msg("%s: rc %d\n%s", args, rc, out);
            /* the printed TRL-like defaults */
            run_grpo_shape sh = {.load = {.precision = MODEL_BF16, .max_context = 512 + 256, .frozen = lora},
                                 .device = TENSOR_CUDA, .lora = lora ? &lc : NULL, .num_generations = 8,
                                 .prompts = W, .max_prompt = 512, .max_completion = 256, .micro_batch = 8,
                                 .recompute = 1, .world = W, .zero_stage = zero};
            run_grpo_mem m[3];
            for (int r = 0; r < W; r++) {
                sh.rank = r;
                assert_int_equal(run_grpo_memory(&mc, &sh, &m[r]), BASE_OK);
            }
            int big = 0;
            for (int r = 1; r < W; r++)
                if (m[r].total > m[big].total) big = r;
            if (zero) assert_true(m[big].total > m[0].total || big == 0);
            assert_int_equal(printed(out, "  weights"), (long long)m[0].weights);
            assert_int_equal(printed(out, "  gradients"), (long long)m[0].grads);
            assert_int_equal(printed(out, "  AdamW m, v"), (long long)m[0].optimizer);
            assert_int_equal(printed(out, "  activations"), (long long)m[0].activations);
            assert_int_equal(printed(out, "  rollout (KV cache, tables, workspace)"), (long long)m[0].rollout);
            assert_int_equal(printed(out, "  ZeRO 1/2 all-gather copy"), (long long)m[0].gather);
            if (zero == 3) assert_int_equal(m[0].gather, 0);
            assert_int_equal(printed(out, "  total"), (long long)m[0].total);
            assert_int_equal(printed2(out, "  AdamW m, v"), (long long)m[big].optimizer);
            assert_int_equal(printed2(out, "  total"), (long long)m[big].total);
            if (lora) assert_int_equal(printed(out, "  LoRA adapter"), (long long)m[0].adapter);
            /* ZeRO >= 1: each rank's m and v its share; ZeRO 0: the whole arena's */
            size_t sum = 0, arena = (size_t)m[0].numel * sizeof(float);
            for (int r = 0; r < W; r++) sum += m[r].optimizer;
            assert_int_equal(sum, (zero ? 2 : 2 * W) * arena);
            if (zero < 2) assert_int_equal(m[0].grads, arena);
            else assert_true(m[0].grads < arena); /* the shard and the unit windows */
            double g = (double)arena;
            run_grpo_comm cv;
            run_grpo_comm_volume(&mc, &sh, &cv);
            if (zero < 2) {
                assert_int_equal(printed(out, "gradient all-reduce"), (long long)(2.0 * (W - 1) / W * g + 0.5));
            } else {
                char label[64];
                snprintf(label, sizeof label, "gradient reduce-scatters (%lld mb)", (long long)cv.micro_batches);
                assert_int_equal(printed(out, label), (long long)(cv.grad_reduce_scatter + 0.5));
                assert_true(cv.grad_allreduce == 0 && cv.micro_batches >= 1);
            }
            if (zero < 3) {
                assert_int_equal(printed(out, "ZeRO 1/2 parameter all-gather"),
                                 zero ? (long long)((double)(W - 1) / W * g + 0.5) : 0);
            } else {
                assert_int_equal(printed(out, "ZeRO 3 unit gathers, training"), (long long)(cv.train_allgather + 0.5));
                assert_int_equal(printed(out, "ZeRO 3 unit gathers, rollout"), (long long)(cv.rollout_allgather + 0.5));
                assert_true(cv.param_allgather == 0 && cv.train_allgather > 0);
                /* the sharded load: no release, the run's peak is the plan */
                assert_null(strstr(out, "ZeRO 3 peak at the release"));
                assert_int_equal(m[0].release_peak, 0);
                assert_non_null(strstr(out, "the load reads each rank's shard only"));
                /* a policy that reaches the stage whole (a stage at 0-2 before): the opening with
                 * the whole model, the plan but the activations and rollout, + the f32 arena (and
                 * bf16 copy) */
                run_grpo_shape wh = sh;
                wh.whole_at_open = 1, wh.rank = 0;
                run_grpo_mem mw;
                assert_int_equal(run_grpo_memory(&mc, &wh, &mw), BASE_OK);
                assert_int_equal(mw.total, m[0].total);
                assert_true(mw.release_peak > mw.total - mw.activations - mw.rollout + arena - 1);
            }
            if (zero < 3) assert_null(strstr(out, "ZeRO 3 peak at the release"));
            if (zero < 3) assert_int_equal(m[0].release_peak, 0);
            assert_non_null(strstr(out, "fits in 80 GB: yes"));
            assert_non_null(strstr(out, "smallest GPU count it fits on (ZeRO"));
            free(out);
        }
    const char *bad[] = {"--zero 2 --lora-r 4", "--zero 4", "--gpus 0", "--precision fp4", "--gpu-memory 80TB"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char args[1024], *out;
        snprintf(args, sizeof args, "plan --model '%s' --gpus 2 %s", cfgp, bad[i]);
        int rc = test_run_grpo(args, &out);
        if (rc != 2 && rc != 1) fail_msg("%s: rc %d\n%s", args, rc, out);
        if (i == 0) assert_non_null(strstr(out, "ZeRO 2 with a LoRA adapter"));
        free(out);
    }
    free(cfgp);
}

/* --ep E: the roles of a rank holding 1 / E of the routed experts, checked
 * against a plain count on tiny-v3-a (8 experts of 3 x 64 x 32 in each of
 * its 2 MoE layers) in f32 (4 bytes a parameter): weights and gradients
 * lose (E - 1) / E of the experts; at ZeRO 1 the AdamW shards of each
 * expert-data-parallel group (4 / E ranks) add up to its ranks' arena once;
 * the gradient all-reduce is the ring's
 * over the world for the non-expert bytes and over the expert-data-
 * parallel group for the rank's experts; the all-to-all per decode step
 * is a dispatch and a combine of (E - 1) / E of the rank's rows per MoE
 * layer plus the counts. ZeRO 2 / 3: the shards by class (below). A world
 * or expert count E does not divide is refused naming expert_parallel_size. */
static void test_plan_ep(void **state) {
    (void)state;
    char *cfgp = test_src_path("tests/model/data/tiny-v3-a-fp8/config.json");
    model_config mc;
    assert_int_equal(model_config_load(cfgp, &mc), BASE_OK);
    const int W = 4, G = 8, layers = 2, E = 8, H = 64, K = 2;
    const long long X = (long long)E * 3 * H * 32 * layers; /* routed expert parameters */
    model_load_opts lo = {.precision = MODEL_F32, .max_context = 512 + 256};
    model_mem pm;
    assert_int_equal(model_memory_plan(&mc, &lo, TENSOR_CUDA, &pm), BASE_OK);
    const long long P = pm.params, N = P - X;
    char *base_out;
    char args[1024];
    snprintf(args, sizeof args, "plan --model '%s' --gpus %d --zero 0 --precision f32", cfgp, W);
    assert_int_equal(test_run_grpo(args, &base_out), 0);
    for (int ep = 2; ep <= 4; ep += 2)
        for (int zero = 0; zero < 2; zero++) {
            char *out;
            snprintf(args, sizeof args, "plan --model '%s' --gpus %d --zero %d --ep %d --precision f32", cfgp, W,
                     zero, ep);
            int rc = test_run_grpo(args, &out);
            if (rc) fail_msg("%s: rc %d\n%s", args, rc, out);
            long long held = N + X / ep, D = W / ep;
            assert_int_equal(printed(out, "  gradients"), held * 4);
            assert_int_equal(printed(base_out, "  weights") - printed(out, "  weights"), (X - X / ep) * 4);
            run_grpo_shape sh = {.load = lo, .device = TENSOR_CUDA, .num_generations = G, .prompts = W,
                                 .max_prompt = 512, .max_completion = 256, .micro_batch = 8, .recompute = 1,
                                 .world = W, .zero_stage = zero, .ep = ep};
            long long sum = 0;
            for (int r = 0; r < W; r++) {
                run_grpo_mem m;
                sh.rank = r;
                assert_int_equal(run_grpo_memory(&mc, &sh, &m), BASE_OK);
                sum += (long long)m.optimizer;
                if (r == 0) assert_int_equal(printed(out, "  AdamW m, v"), (long long)m.optimizer);
            }
            /* ZeRO 1: each expert-data-parallel group (EP of them) splits its arena once */
            assert_int_equal(sum, zero ? 8 * ep * held : 8 * W * held);
            double ar = 2.0 * (W - 1) / W * (double)N * 4 + 2.0 * (double)(D - 1) / (double)D * (double)(X / ep) * 4;
            assert_int_equal(printed(out, "gradient all-reduce"), (long long)(ar + 0.5));
            assert_int_equal(printed(out, "ZeRO 1/2 parameter all-gather"),
                             zero ? (long long)((double)(D - 1) / (double)D * (double)held * 4 + 0.5) : 0);
            double rows = (double)G * K; /* one prompt per rank (prompts = W), G completions, K experts each */
            double a2a = layers * (2.0 * (ep - 1) / ep * rows * H * 4 + (double)(ep - 1) * (E / ep) * 8);
            assert_int_equal(printed(out, "per decode step"), (long long)(a2a + 0.5));
            assert_non_null(strstr(out, "expert_parallel_size"));
            free(out);
        }
    free(base_out);
    /* ZeRO 2 / 3 with EP: each rank's shard is the non-expert elements cut
     * over the world and its EP index's experts cut over its expert-data-
     * parallel group, so the AdamW shards of all W ranks add up to the
     * non-expert arena once and every expert once; the gradient
     * reduce-scatters and the parameter all-gather by class */
    for (int ep = 2; ep <= 4; ep += 2)
        for (int zero = 2; zero <= 3; zero++) {
            char *out;
            snprintf(args, sizeof args, "plan --model '%s' --gpus %d --zero %d --ep %d --precision f32", cfgp, W,
                     zero, ep);
            int rc = test_run_grpo(args, &out);
            if (rc) fail_msg("%s: rc %d\n%s", args, rc, out);
            run_grpo_shape sh = {.load = lo, .device = TENSOR_CUDA, .num_generations = G, .prompts = W,
                                 .max_prompt = 512, .max_completion = 256, .micro_batch = 8, .recompute = 1,
                                 .world = W, .zero_stage = zero, .ep = ep};
            long long sum = 0, D = W / ep;
            for (int r = 0; r < W; r++) {
                run_grpo_mem m;
                sh.rank = r;
                assert_int_equal(run_grpo_memory(&mc, &sh, &m), BASE_OK);
                long long n = (N * (r + 1) / W - N * r / W) + (X / ep * (r / ep + 1) / D - X / ep * (r / ep) / D);
                assert_int_equal((long long)m.optimizer, 8 * n);
                assert_int_equal((long long)m.gather, zero == 2 ? 4 * n : 0);
                sum += (long long)m.optimizer;
            }
            assert_int_equal(sum, 8 * (N + X)); /* every element of the whole model once */
            double ag = (double)(W - 1) / W * (double)N * 4 + (double)(D - 1) / (double)D * (double)(X / ep) * 4;
            if (zero == 2) assert_int_equal(printed(out, "ZeRO 1/2 parameter all-gather"), (long long)(ag + 0.5));
            else assert_true(printed(out, "ZeRO 3 unit gathers, training") == 2 * (long long)(ag + 0.5));
            assert_null(strstr(out, "gradient all-reduce"));
            /* one micro-batch per rank: every unit once (tiny-v3-a's units are its arena), and the norm's sum */
            assert_non_null(strstr(out, "gradient reduce-scatters (1 mb)"));
            assert_int_equal(printed(out, "gradient reduce-scatters (1 mb)"), (long long)(ag + 2.0 * (W - 1) / W * 8 + 0.5));
            free(out);
        }
    const char *bad[] = {"--gpus 3 --ep 2", "--gpus 3 --ep 3"};
    const char *want[] = {"expert_parallel_size = 2 does not divide the world size 3",
                          "expert_parallel_size = 3 does not divide the model's n_routed_experts 8"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *out;
        snprintf(args, sizeof args, "plan --model '%s' %s", cfgp, bad[i]);
        int rc = test_run_grpo(args, &out);
        if (rc != 1 || !strstr(out, want[i])) fail_msg("%s: rc %d, expected '%s':\n%s", args, rc, want[i], out);
        free(out);
    }
    free(cfgp);
}

/* --recipe: a GRPO stage at ZeRO 3 after an SFT stage at ZeRO 0 receives
 * the policy whole (the release line printed, its peak counted); after an
 * SFT stage at ZeRO 3 it is held sharded (no release, the sharded load). */
static void test_plan_whole_at_open(void **state) {
    (void)state;
    char *cfgp = test_src_path("tests/model/data/tiny-v3-a-fp8/config.json"), *dir = test_tmpdir();
    for (int z = 0; z <= 3; z += 3) {
        char text[512], args[1536], *out;
        snprintf(text, sizeof text,
                 "return { name = 'p', model = 'm', datasets = { train = 'd.jsonl' }, rewards = { 'r.lua' },\n"
                 "  stages = { { type = 'sft', dataset = 'train', zero_stage = %d },\n"
                 "             { type = 'grpo', dataset = 'train', zero_stage = 3 } } }\n", z);
        test_write_text(dir, "r.lua", text);
        snprintf(args, sizeof args, "plan --model '%s' --gpus 3 --recipe '%s/r.lua'", cfgp, dir);
        int rc = test_run_grpo(args, &out);
        if (rc) fail_msg("%s: rc %d\n%s", args, rc, out);
        if (z == 0) /* the whole arena beside all but the activations and rollout */
            assert_true(printed(out, "  ZeRO 3 peak at the release") >
                        printed(out, "  total") - printed(out, "  activations") -
                            printed(out, "  rollout (KV cache, tables, workspace)"));
        else assert_null(strstr(out, "ZeRO 3 peak at the release"));
        assert_true((strstr(out, "the load reads each rank's shard only") != NULL) == (z == 3));
        free(out);
    }
    test_rmdir(dir);
    free(dir), free(cfgp);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_plan_roles), cmocka_unit_test(test_plan_ep),
                                       cmocka_unit_test(test_plan_whole_at_open)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
