/* Data-parallel runs as MPI ranks on the CPU (issue 14): `mpirun -np N grpo
 * run` of one recipe (a sample stage, an eval stage, 3 GRPO steps, 3 SFT
 * steps) on the hf-tiny-v3-a weights with a byte-level tokenizer:
 *   - LoRA on 2 ranks against 1 (the adapter's gradients are summed);
 *   - world sizes 1, 2, 4: what comes before the first update (the sample
 *     stage's rows, the eval's samples, the GRPO step-1 completions) is byte
 *     for byte the same; the losses and gradient norms of every step and the
 *     final weights agree with world size 1 within TOL (the gradients are
 *     summed in rank order, in double: the same bits on every run of a
 *     world size, but partial sums grouped differently from one process's);
 *     rank 0 alone writes the run; reward errors of every rank reach
 *     reward_errors.log tagged with their rank;
 *   - resume: stopped after 2 steps (--max-total-steps) and resumed on the
 *     same world size: bit-identical weights and optimizer state; resumed
 *     on another (2 -> 1, 1 -> 2): the run completes, within TOL;
 *   - ZeRO stage 1 (AdamW state sharded) on 1, 2, 4 ranks: bit-identical to
 *     ZeRO 0 (metrics, samples, weights), one balanced optimizer shard file
 *     per rank; resume at the same world size bit for bit, ZeRO 0 <-> 1, and
 *     2 -> 1, 1 -> 2, 4 -> 2 re-sharded on load;
 *   - faults: an error on rank 1 (GRPO_TEST_FAIL_RANK) and rank 1 killed
 *     with SIGKILL mid-run: every rank gone within 60 s, exit non-zero,
 *     the message names rank 1, the last checkpoint resumes (bit-identical
 *     to the uninterrupted run after the error);
 *   - SIGUSR1 to mpirun: every rank stops at the same step (exit 138), with
 *     a checkpoint that resumes.
 * MPIRUN (tests/dist/meson.build) is the launcher; OMPI_* in the test
 * environment let Open MPI run as root and oversubscribe CI's cores. */
#include "dp_common.h"

#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "io/st.h"

/* The moe/ metrics (expert loads, integer sums over the ranks) of the
 * metrics lines of stage `stage` in rel, printed exactly, one line per
 * step; fails when a line has none. */
static char *moe_metrics(const char *rel, const char *stage) {
    char *t = read_rel(rel), *save = NULL;
    base_buf b = {0};
    base_buf_printf(&b, "%s", "");
    for (char *l = strtok_r(t, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(l), *it;
        assert_non_null(j);
        if (strcmp(base_json_str(j, "stage", ""), stage)) {
            cJSON_Delete(j);
            continue;
        }
        int n = 0;
        cJSON_ArrayForEach(it, j) if (!strncmp(it->string, "moe/", 4)) {
            assert_true(cJSON_IsNumber(it));
            base_buf_printf(&b, "%s=%.17g ", it->string, it->valuedouble);
            n++;
        }
        if (n < 4) fail_msg("%s: a %s line has %d moe/ metrics", rel, stage, n);
        base_buf_printf(&b, "%s", "\n");
        cJSON_Delete(j);
    }
    free(t);
    return b.data;
}

/* ---- world sizes ---------------------------------------------------------- */

static void test_world_sizes(void **state) {
    (void)state;
    double t0 = now_s();
    expect_ok(run_np(1, "w1", NULL, NULL), "w1");
    double t1 = now_s();
    expect_ok(run_np(2, "w2", NULL, NULL), "w2");
    double t2 = now_s();
    expect_ok(run_np(4, "w4", NULL, NULL), "w4");
    printf("# seconds: np 1 %.2f, np 2 %.2f, np 4 %.2f\n", t1 - t0, t2 - t1, now_s() - t2);
    const char *ws[] = {"w2", "w4"};
    for (int i = 0; i < 2; i++) {
        char a[128], b[128];
        /* before any update: byte for byte */
        same_before_update(ws[i], "w1", "w1", "world size 1");
        /* the expert loads of GRPO step 1 (the same completions, the same
         * weights): integer sums, bit for bit */
        snprintf(a, sizeof a, "runs/%s/metrics.jsonl", ws[i]);
        char *m1 = moe_metrics("runs/w1/metrics.jsonl", "grpo"), *mn = moe_metrics(a, "grpo");
        char *e1 = strchr(m1, '\n'), *en = strchr(mn, '\n');
        assert_non_null(e1);
        assert_non_null(en);
        if (e1 - m1 != en - mn || memcmp(m1, mn, (size_t)(e1 - m1)))
            fail_msg("GRPO step-1 expert loads of %s differ from world size 1:\n%s\n%s", ws[i], m1, mn);
        free(m1), free(mn);
        /* after the updates: within TOL */
        metrics_close(ws[i], "w1");
        snprintf(a, sizeof a, "runs/%s/checkpoints/step-6/model.safetensors", ws[i]);
        snprintf(b, sizeof b, "runs/%s/checkpoints/step-6/optimizer.safetensors", ws[i]);
        weights_close(a, "runs/w1/checkpoints/step-6/model.safetensors");
        /* rank 0 alone writes the run (one TensorBoard file) */
        assert_int_equal(tb_files(ws[i]), 1);
        assert_true(exists_rel(b));
    }
    /* reward errors: every prompt with a 3 fails `flaky`, on whichever rank
     * scored it; each line names its rank */
    char *l1 = read_rel("runs/w1/reward_errors.log"), *l4 = read_rel("runs/w4/reward_errors.log");
    assert_non_null(strstr(l1, "no threes"));
    assert_null(strstr(l1, "rank "));
    for (int r = 0; r < 4; r++) {
        char tag[32];
        snprintf(tag, sizeof tag, "rank %d: sample", r);
        if (!strstr(l4, tag)) fail_msg("reward_errors.log of 4 ranks has no line of rank %d:\n%s", r, l4);
    }
    int n1 = 0, n4 = 0;
    for (char *q = l1; (q = strstr(q, "no threes")); q++) n1++;
    for (char *q = l4; (q = strstr(q, "no threes")); q++) n4++;
    assert_int_equal(n1, n4);
    free(l1), free(l4);
}

/* DeepSeek-V3's aux-loss-free bias update on 1 and 2 ranks (and 2 ranks at
 * ZeRO 3, the bias in the ranks' parameter shards): an SFT stage with
 * learning rate 0 from a router that sends every token to experts 0 and 1,
 * router_bias_update_speed 0.05, 3 steps: the same expert loads every step
 * (bit for bit) and the same bias trajectory (the checkpoints byte for
 * byte; the bias moved). */
static void test_moe_bias(void **state) {
    (void)state;
    char *m = path_of("unbal");
    test_tiny_model_unbalanced(m, 1, 0.3f);
    free(m);
    base_buf b = {0};
    base_buf_printf(&b,
                    "return {\n"
                    "  name = 'moe', model = '%s/unbal', output_dir = '%s/runs', seed = 5, device = 'cpu',\n"
                    "  template = 'Q: {prompt}\\nA: ', report = false, threads = 1,\n"
                    "  datasets = { train = '%s/data.jsonl' },\n"
                    "  stages = {\n"
                    "    { type = 'sft', dataset = 'train', max_steps = 3, per_device_train_batch_size = 2,\n"
                    "      learning_rate = 0, save_steps = 1, save_total_limit = 0, router_bias_update_speed = 0.05 },\n"
                    "  },\n"
                    "}\n",
                    DIR_, DIR_, DIR_);
    write_rel("moe.lua", b.data);
    base_buf_free(&b);
    char *keep = RECIPE;
    RECIPE = path_of("moe.lua");
    expect_ok(run_np(1, "moe1", NULL, NULL), "moe1");
    expect_ok(run_np(2, "moe2", NULL, NULL), "moe2");
    /* ZeRO 3: the bias lives in the ranks' shards (run_param_add gathers it, each rank writes its part back) */
    const char *z3[] = {"--set", "stages.sft.zero_stage=3", NULL};
    expect_ok(run_np(2, "moe3", NULL, z3), "moe3");
    free(RECIPE);
    RECIPE = keep;
    char *m1 = moe_metrics("runs/moe1/metrics.jsonl", "sft"), *m2 = moe_metrics("runs/moe2/metrics.jsonl", "sft");
    char *m3 = moe_metrics("runs/moe3/metrics.jsonl", "sft");
    if (strcmp(m1, m3)) fail_msg("expert loads at ZeRO 3 differ from 1 rank:\n%s\n%s", m1, m3);
    free(m3);
    printf("# expert loads, 1 rank:\n%s", m1);
    int lines = 0;
    for (char *q = m1; *q; q++) lines += *q == '\n';
    assert_int_equal(lines, 3);
    if (strcmp(m1, m2)) fail_msg("expert loads of 2 ranks differ from 1:\n%s\n%s", m1, m2);
    free(m1), free(m2);
    for (int k = 1; k <= 3; k++) {
        char a[96], c[96];
        snprintf(a, sizeof a, "runs/moe1/checkpoints/step-%d/model.safetensors", k);
        snprintf(c, sizeof c, "runs/moe2/checkpoints/step-%d/model.safetensors", k);
        same_file(a, c);
        snprintf(c, sizeof c, "runs/moe3/checkpoints/step-%d/model.safetensors", k);
        same_file(a, c);
    }
    char *p0 = path_of("unbal/model.safetensors"), *p3 = path_of("runs/moe1/checkpoints/step-3/model.safetensors");
    st_file *f0, *f3;
    if (st_open(p0, &f0) || st_open(p3, &f3)) fail_msg("%s", base_err_msg());
    const st_tensor *b0 = st_find(f0, "model.layers.1.mlp.gate.e_score_correction_bias");
    const st_tensor *b3 = st_find(f3, "model.layers.1.mlp.gate.e_score_correction_bias");
    assert_non_null(b0);
    assert_non_null(b3);
    float x0[8], x3[8];
    memcpy(x0, b0->data, sizeof x0), memcpy(x3, b3->data, sizeof x3);
    assert_true(x3[0] < x0[0] && x3[1] < x0[1] && x3[7] > x0[7]); /* the overloaded down, the idle up */
    st_close(f0), st_close(f3);
    free(p0), free(p3);
}

/* LoRA (the adapter's own gradient arena is what the ranks sum): 2 ranks
 * against 1, step-1 completions byte for byte, the losses and adapter
 * weights within TOL. */
static void test_lora(void **state) {
    (void)state;
    const char *lora[] = {"--set", "lora.r=4", "--set", "lora.lora_alpha=8", "--set", "lora.target_modules=all-linear",
                          NULL};
    expect_ok(run_np(1, "l1", NULL, lora), "l1");
    expect_ok(run_np(2, "l2", NULL, lora), "l2");
    char *s1 = lines_with("runs/l1/samples.jsonl", "\"step\":1,"), *s2 = lines_with("runs/l2/samples.jsonl", "\"step\":1,");
    assert_true(strlen(s1) > 0);
    if (strcmp(s1, s2)) fail_msg("LoRA: GRPO step-1 completions of 2 ranks differ from world size 1");
    free(s1), free(s2);
    metrics_close("l2", "l1");
    double worst = largest_rel_diff("runs/l2/checkpoints/step-6/adapter_model.safetensors",
                                    "runs/l1/checkpoints/step-6/adapter_model.safetensors", 0, NULL);
    printf("# LoRA adapter, 2 ranks vs 1: largest difference %.3g (relative)\n", worst);
    if (worst > TOL) fail_msg("LoRA: adapter weights of 2 ranks differ from 1 by %.3g", worst);
}

/* ---- resume --------------------------------------------------------------- */

static void test_resume(void **state) {
    (void)state;
    const char *stop2[] = {"--max-total-steps", "2", NULL};
    const char *resume[] = {"--resume", NULL};
    /* the same world size: bit for bit */
    expect_ok(run_np(2, "r22", NULL, stop2), "r22");
    assert_true(exists_rel("runs/r22/checkpoints/step-2/model.safetensors"));
    assert_false(exists_rel("runs/r22/checkpoints/step-3"));
    expect_ok(run_np(2, "r22", NULL, resume), "r22");
    same_bytes("runs/r22/checkpoints/step-6/model.safetensors", "runs/w2/checkpoints/step-6/model.safetensors");
    same_bytes("runs/r22/checkpoints/step-6/optimizer.safetensors",
               "runs/w2/checkpoints/step-6/optimizer.safetensors");
    /* 2 ranks -> 1 and 1 -> 2: the state is replicated, any world size resumes it */
    expect_ok(run_np(2, "r21", NULL, stop2), "r21");
    expect_ok(run_np(1, "r21", NULL, resume), "r21");
    weights_close("runs/r21/checkpoints/step-6/model.safetensors", "runs/w1/checkpoints/step-6/model.safetensors");
    expect_ok(run_np(1, "r12", NULL, stop2), "r12");
    expect_ok(run_np(2, "r12", NULL, resume), "r12");
    weights_close("runs/r12/checkpoints/step-6/model.safetensors", "runs/w1/checkpoints/step-6/model.safetensors");
    metrics_close("r12", "w1");
}


/* ZeRO 1 against ZeRO 0 on 1, 2 and 4 ranks: the same gradient sum, the
 * whole arena's norm on every rank, and AdamW element by element, so the
 * losses, gradient norms, rewards and the weights after the 3 GRPO and 3
 * SFT steps are bit-identical; each rank's optimizer state is its shard. */
static void test_zero1(void **state) {
    (void)state;
    const int nps[] = {1, 2, 4};
    for (int i = 0; i < 3; i++) {
        char w[16], z[16], a[160], b[160];
        snprintf(w, sizeof w, "w%d", nps[i]);
        snprintf(z, sizeof z, "z%d", nps[i]);
        ensure_run(nps[i], w, NULL, 0);
        double t0 = now_s();
        ensure_run(nps[i], z, NULL, 1);
        printf("# ZeRO 1 on %d ranks: %.2f s\n", nps[i], now_s() - t0);
        metrics_within(z, w, 0);
        same_run_file(z, w, "samples.jsonl");
        for (int step = 5; step <= 6; step++) { /* the two kept (save_total_limit) */
            snprintf(a, sizeof a, "runs/%s/checkpoints/step-%d/model.safetensors", z, step);
            snprintf(b, sizeof b, "runs/%s/checkpoints/step-%d/model.safetensors", w, step);
            same_bytes(a, b);
            snprintf(a, sizeof a, "runs/%s/checkpoints/step-%d", z, step);
            check_shards(a, nps[i]);
        }
    }
}

/* Resume at ZeRO 1: on the same world size bit for bit (weights and every
 * shard); across world sizes (2 -> 1, 1 -> 2, 4 -> 2) and ZeRO stages
 * (0 -> 1, 1 -> 0) the optimizer state is re-sharded on load: each resumed
 * run is bit-identical to the same resume from a ZeRO-0 checkpoint, or to
 * the uninterrupted run on the same world size. The ZeRO-0 reference of
 * a world-size change is the path test_resume covers. */
static void test_zero1_resume(void **state) {
    (void)state;
    char a[160], b[160];
    ensure_run(2, "w2", NULL, 0);
    ensure_run(2, "z2", NULL, 1);
    stop_resume("zr22", 2, 1, 2, 1);
    same_step6("zr22", "z2", 2);
    /* ZeRO 0 <-> 1 on 2 ranks: the uninterrupted run's bits */
    stop_resume("z01", 2, 0, 2, 1);
    same_bytes("runs/z01/checkpoints/step-6/model.safetensors", "runs/w2/checkpoints/step-6/model.safetensors");
    check_shards("runs/z01/checkpoints/step-6", 2);
    stop_resume("z10", 2, 1, 2, 0);
    same_bytes("runs/z10/checkpoints/step-6/model.safetensors", "runs/w2/checkpoints/step-6/model.safetensors");
    same_bytes("runs/z10/checkpoints/step-6/optimizer.safetensors", "runs/w2/checkpoints/step-6/optimizer.safetensors");
    /* across world sizes: the resume of a ZeRO-1 checkpoint equals the
     * resume of the ZeRO-0 checkpoint of the same steps (the same state) */
    const struct { const char *z, *ref; int np1, np2; } cross[] = {
        {"zr21", "rr21", 2, 1}, {"zr12", "rr12", 1, 2}, {"zr42", "rr42", 4, 2}};
    for (int i = 0; i < 3; i++) {
        stop_resume(cross[i].z, cross[i].np1, 1, cross[i].np2, 1);
        stop_resume(cross[i].ref, cross[i].np1, 0, cross[i].np2, 0);
        snprintf(a, sizeof a, "runs/%s/checkpoints/step-6/model.safetensors", cross[i].z);
        snprintf(b, sizeof b, "runs/%s/checkpoints/step-6/model.safetensors", cross[i].ref);
        same_bytes(a, b);
        snprintf(a, sizeof a, "runs/%s/checkpoints/step-6", cross[i].z);
        check_shards(a, cross[i].np2);
    }
}

/* ---- faults --------------------------------------------------------------- */

static void test_fault_error(void **state) {
    (void)state;
    double t0 = now_s();
    int rc = run_np(2, "fe", "GRPO_TEST_FAIL_RANK=1:2", NULL);
    double dt = now_s() - t0;
    char *e = err_of("fe");
    if (rc == 0) fail_msg("a failing rank: the job exited 0:\n%s", e);
    assert_true(dt < 60);
    assert_non_null(strstr(e, "rank 1 fails training step 2"));       /* rank 1's own message */
    assert_non_null(strstr(e, "grpo[rank 0] run: stage 'grpo': the training step: rank 1 failed")); /* rank 0's */
    /* a failure every rank agreed on: they leave in step, no MPI_Abort
     * cutting the others' messages short */
    if (strstr(e, "MPI_ABORT")) fail_msg("an agreed failure ended the job with MPI_Abort:\n%s", e);
    free(e);
    assert_true(exists_rel("runs/fe/checkpoints/step-1/model.safetensors"));
    assert_false(exists_rel("runs/fe/checkpoints/step-2"));
    const char *resume[] = {"--resume", NULL};
    expect_ok(run_np(2, "fe", NULL, resume), "fe");
    same_bytes("runs/fe/checkpoints/step-6/model.safetensors", "runs/w2/checkpoints/step-6/model.safetensors");
}

/* The pid of rank `rank` among mpirun's children (0 if none). */
static pid_t rank_pid(pid_t mpirun, int rank) {
    DIR *d = opendir("/proc");
    pid_t found = 0;
    char want[48];
    snprintf(want, sizeof want, "OMPI_COMM_WORLD_RANK=%d", rank);
    for (struct dirent *e; d && !found && (e = readdir(d));) {
        pid_t p = (pid_t)atoi(e->d_name);
        if (p <= 0) continue;
        char path[64], *t = NULL;
        size_t n;
        snprintf(path, sizeof path, "/proc/%d/stat", (int)p);
        if (base_read_file(path, &t, &n)) continue;
        const char *rp = strrchr(t, ')');
        int ppid = 0;
        if (rp) sscanf(rp + 1, " %*c %d", &ppid);
        free(t), t = NULL;
        if (ppid != mpirun) continue;
        snprintf(path, sizeof path, "/proc/%d/environ", (int)p);
        if (base_read_file(path, &t, &n)) continue;
        for (size_t o = 0; o < n; o += strlen(t + o) + 1)
            if (!strcmp(t + o, want)) found = p;
        free(t);
    }
    if (d) closedir(d);
    return found;
}

static void test_fault_kill(void **state) {
    (void)state;
    const char *more[] = {"--set", "stages.grpo.max_steps=400", NULL};
    pid_t pid = spawn(2, "fk", NULL, more);
    /* step 2's checkpoint complete (renamed into place): rank 1 dies in a
     * later step or in a later checkpoint's write */
    wait_exists(pid, "runs/fk/checkpoints/step-2");
    pid_t r1 = rank_pid(pid, 1);
    assert_true(r1 > 0);
    assert_int_equal(kill(r1, SIGKILL), 0);
    double t0 = now_s();
    int rc = wait_exit(pid);
    double dt = now_s() - t0;
    printf("# rank 1 killed: mpirun exited %d after %.2f s\n", rc, dt);
    assert_true(rc != 0);
    assert_true(dt < 60);
    char *e = err_of("fk");
    if (!strstr(e, "rank 1 with PID")) fail_msg("the message does not name rank 1:\n%s", e);
    free(e);
    assert_true(exists_rel("runs/fk/checkpoints/step-2/model.safetensors"));
    /* the last complete checkpoint resumes (a half-written one is set aside) */
    const char *resume[] = {"--set", "stages.grpo.max_steps=400", "--resume", "--max-total-steps", "5", NULL};
    expect_ok(run_np(2, "fk", NULL, resume), "fk");
    assert_true(exists_rel("runs/fk/checkpoints/step-5/model.safetensors"));
}

/* SIGUSR1 to mpirun (it forwards it to every rank): every rank stops after
 * the same step, with a checkpoint; --resume continues. */
static void test_stop_signal(void **state) {
    (void)state;
    const char *more[] = {"--set", "stages.grpo.max_steps=400", NULL};
    pid_t pid = spawn(2, "ss", NULL, more);
    wait_metrics(pid, "ss", "\"global_step\":2,");
    assert_int_equal(kill(pid, SIGUSR1), 0);
    int rc = wait_exit(pid);
    char *e = err_of("ss");
    if (rc != 128 + SIGUSR1) fail_msg("SIGUSR1: mpirun exited %d:\n%s", rc, e);
    /* both ranks name the same step */
    const char *p0 = strstr(e, "grpo[rank 0] run: "), *p1 = strstr(e, "grpo[rank 1] run: ");
    if (!p0 || !p1) fail_msg("a rank did not report the stop:\n%s", e);
    const char *s0 = strstr(p0, "at step "), *s1 = strstr(p1, "at step ");
    assert_non_null(s0);
    assert_non_null(s1);
    long long k0 = atoll(s0 + 8), k1 = atoll(s1 + 8);
    assert_int_equal(k0, k1);
    free(e);
    char rel[128];
    snprintf(rel, sizeof rel, "runs/ss/checkpoints/step-%lld/model.safetensors", k0);
    assert_true(exists_rel(rel));
    char until[32];
    snprintf(until, sizeof until, "%lld", k0 + 1);
    const char *resume[] = {"--set", "stages.grpo.max_steps=400", "--resume", "--max-total-steps", until, NULL};
    expect_ok(run_np(2, "ss", NULL, resume), "ss");
    snprintf(rel, sizeof rel, "runs/ss/checkpoints/step-%lld/model.safetensors", k0 + 1);
    assert_true(exists_rel(rel));
}

static void test_memory_plan(void **state) {
    (void)state;
    const char *lora[] = {"--set", "lora.r=4", "--set", "lora.lora_alpha=8", "--set", "lora.target_modules=all-linear",
                          NULL};
    const int nps[] = {1, 2, 4};
    for (int i = 0; i < 3; i++)
        for (int zero = 0; zero <= 3; zero++) {
            char name[16];
            snprintf(name, sizeof name, "%c%d", "wzyx"[zero], nps[i]);
            ensure_run(nps[i], name, NULL, zero);
            plan_equals_peak(name, nps[i], zero);
        }
    /* expert parallelism: EP 2 on 2 ranks, EP 2 and 4 on 4 (each rank's
     * dispatch buffers: the rows it may receive from every peer, planned
     * for the worst case, every row of every peer to its experts) */
    const char *const ep[3][5] = {
        {"--set", "stages.grpo.expert_parallel_size=2", "--set", "stages.sft.expert_parallel_size=2", NULL},
        {"--set", "stages.grpo.expert_parallel_size=2", "--set", "stages.sft.expert_parallel_size=2", NULL},
        {"--set", "stages.grpo.expert_parallel_size=4", "--set", "stages.sft.expert_parallel_size=4", NULL}};
    const char *const enames[3] = {"pe2_2", "pe2_4", "pe4_4"};
    for (int i = 0; i < 3; i++) {
        int np = i ? 4 : 2;
        ensure_run(np, enames[i], ep[i], 0);
        plan_equals_peak(enames[i], np, 0);
    }
    /* LoRA: 2 ranks at ZeRO 0 (test_lora's run, when it ran), 4 at ZeRO 1 */
    const char *const lnames[2] = {"l2", "lz4"};
    for (int zero = 0; zero <= 1; zero++) {
        char rel[128];
        snprintf(rel, sizeof rel, "runs/%s/checkpoints/step-6/adapter_model.safetensors", lnames[zero]);
        if (!exists_rel(rel)) {
            const char *a[16];
            with_zero(a, lora, zero);
            expect_ok(run_np(zero ? 4 : 2, lnames[zero], NULL, a), lnames[zero]);
        }
        plan_equals_peak(lnames[zero], zero ? 4 : 2, zero);
    }
}

/* The bytes of a safetensors file's tensor data (its size less the 8-byte
 * header length and the header). */
static double tensor_bytes(const char *rel) {
    char *p = path_of(rel);
    FILE *f = fopen(p, "rb");
    if (!f) fail_msg("%s: cannot open", p);
    uint64_t h = 0;
    assert_int_equal(fread(&h, sizeof h, 1, f), 1);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long size = ftell(f);
    fclose(f);
    free(p);
    return (double)size - 8.0 - (double)h;
}

/* ZeRO 3 over the whole run (the counters never reset: load, the sample
 * and eval stages before, the GRPO stage, its end; summary.json's
 * run_memory): a run whose first training stage trains at stage 3 loads
 * the policy sharded (a model without its arena, each rank reading only its
 * range), so on 1, 2 and 4 ranks every rank's peak over the whole run is
 * the stage's plan, byte for byte, and the plan has no release peak. The
 * shapes (2-token completions, micro-batches of 1, 4 prompts) keep the
 * stage's activations and rollout below the whole f32 arena, so a whole
 * model at load shows in the peak: loading it whole and releasing it at
 * the stage's opening peaked at plan + 142,212 bytes per rank on 4 ranks. */
static void test_zero3_run_peak(void **state) {
    (void)state;
    const int nps[] = {1, 2, 4};
    int released = 0; /* the world size of a run whose stage released a whole arena at its opening */
    for (int i = 0; i < 3; i++) {
        int np = nps[i];
        char name[16], rel[128];
        snprintf(name, sizeof name, "xrp%d", np);
        const char *stop[] = {"--max-total-steps", "3", "--set", "stages.grpo.max_completion_length=2", "--set",
                              "stages.grpo.per_device_train_batch_size=1", "--set", "stages.grpo.generation_batch_size=8",
                              "--set", "stages.grpo.num_generations=2", NULL}, *a[16];
        with_zero(a, stop, 3);
        expect_ok(run_np(np, name, NULL, a), name);
        snprintf(rel, sizeof rel, "runs/%s/checkpoints/step-3/model.safetensors", name);
        double arena = tensor_bytes(rel);
        snprintf(rel, sizeof rel, "runs/%s/summary.json", name);
        char *t = read_rel(rel);
        cJSON *j = cJSON_Parse(t);
        assert_non_null(j);
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(j, "grpo");
        const cJSON *plans = cJSON_GetObjectItemCaseSensitive(g, "memory_plan_ranks");
        const cJSON *peaks = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "run_memory"),
                                                              "peak_allocated");
        if (!cJSON_IsArray(plans) || !cJSON_IsArray(peaks)) fail_msg("%s: no per-rank plan and run peak", name);
        assert_int_equal(cJSON_GetArraySize(peaks), np);
        if (cJSON_GetObjectItemCaseSensitive(g, "memory_peak_release")) released = name[3] - '0';
        for (int r = 0; r < np; r++) {
            const cJSON *pr = cJSON_GetArrayItem(plans, r);
            double plan = cJSON_GetObjectItemCaseSensitive(pr, "total")->valuedouble;
            double rel = cJSON_GetObjectItemCaseSensitive(pr, "release_peak")->valuedouble;
            double peak = cJSON_GetArrayItem(peaks, r)->valuedouble;
            printf("# %s rank %d of %d (ZeRO 3, sharded load): planned %.0f, whole arena %.0f, run peak %.0f bytes\n",
                   name, r, np, plan, arena, peak);
            if (peak != plan) fail_msg("%s rank %d: the run's peak %.0f, planned %.0f", name, r, peak, plan);
            if (rel != 0) released = np; /* a release planned: checked after every world size's peak */
        }
        cJSON_Delete(j);
        free(t);
    }
    if (released)
        fail_msg("xrp%d: the stage received the whole policy and released it at its opening (or planned so)", released);
}

/* Arguments: the names of the tests to run (all without); the sanitizer
 * build runs the world sizes, LoRA, ZeRO 1 and the failed rank
 * (tests/dist/meson.build). */
/* Arguments: the names of the tests to run (all without); the sanitizer
 * build runs the world sizes, LoRA, ZeRO 1, the failed rank and the memory
 * plans (tests/dist/meson.build). */
int main(int argc, char **argv) {
    const struct CMUnitTest all[] = {
        cmocka_unit_test(test_world_sizes), cmocka_unit_test(test_lora),        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_zero1),       cmocka_unit_test(test_zero1_resume),
        cmocka_unit_test(test_fault_error), cmocka_unit_test(test_fault_kill),  cmocka_unit_test(test_stop_signal),
        cmocka_unit_test(test_memory_plan), cmocka_unit_test(test_moe_bias),
        cmocka_unit_test(test_zero3_run_peak),
    };
    return dp_run("test_dp", all, sizeof all / sizeof all[0], argc, argv);
}
