/*
 * The whole GRPO pipeline (grpo run: rollout -> rewards -> advantages ->
 * GRPO loss with a reference model -> AdamW, a checkpoint every step) on the
 * CUDA backend, hf-tiny-v3-a weights and a byte-level tokenizer:
 *   - it runs to the end and trains (the weights move);
 *   - a run stopped after one step and resumed from its checkpoint gives
 *     the same metrics and bit-identical weights as a straight run: the
 *     device backend is deterministic, and checkpoints round-trip the
 *     weights and the optimizer state through device memory.
 * Usage: test_cuda_run [cuda|emu] [f32|bf16] ("skipped: no GPU" without
 * one; "emu" registers the emulated backend as the device "cuda-emu").
 * bf16: the run in bf16 mode (run_opts.precision): the policy's and the
 * reference's bf16 compute weights are refreshed after every optimizer
 * step and every load, so the resumed run must still match bit for bit.
 * LoRA (the recipe's lora table, every module): the adapter on the frozen
 * base trains on the device; step 1's KL to the reference (the base, the
 * adapter off) is exactly 0; stopped + resumed gives the same metrics and
 * bit-identical adapters; the base's bytes are never written. Under the
 * emulator the backend's alloc and free are counted: the GRPO stage's
 * memory plan (summary.json grpo.memory_plan, bf16 sizes in bf16 mode)
 * equals the peak of live device bytes of the run.
 */
#include "common/test_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/st.h"
#include "recipe/recipe.h"
#include "tensor/ops.h"
#include "train/run.h"
#include "cuda/test_backend.h"

static const char *g_dev, *g_prec = "f32";
static const char *g_top = ""; /* top-level recipe keys (the lora table) */

static int g_counted; /* the emulated backend with its allocations counted */
static char *DIR_;

static int setup(void **state) {
    (void)state;
    DIR_ = test_tmpdir();
    char *m = base_path_join(DIR_, "model");
    test_tiny_model(m, 1);
    base_buf b = {0};
    for (int i = 0; i < 16; i++)
        base_buf_printf(&b, "{\"id\": %d, \"prompt\": \"What is %d + %d?\", \"answer\": \"%d\"}\n", i, i, 3 * i % 7,
                        i + 3 * i % 7);
    char *d = base_path_join(DIR_, "data.jsonl");
    test_write_file(d, b.data, b.len);
    /* a reward that varies inside a group: non-zero advantages */
    const char *lua = "return function(s) return (#s.completion % 5) / 4 + (s.completion:find('1') and 0.5 or 0) end\n";
    char *rw = base_path_join(DIR_, "vary.lua");
    test_write_file(rw, lua, strlen(lua));
    base_buf_free(&b);
    free(rw), free(d), free(m);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_rmdir(DIR_);
    free(DIR_);
    return 0;
}

static base_status run_opt(const char *name, int resume, int64_t max_total, const char *extra) {
    base_buf b = {0};
    base_buf_printf(&b,
                    "return {\n"
                    "  name = '%s', model = '%s/model', output_dir = '%s/runs', seed = 3,\n"
                    "  template = 'Q: {prompt}\\nA: ', report = false,\n"
                    "  datasets = { train = '%s/data.jsonl' },\n"
                    "  rewards = { '%s/vary.lua:1.0' },\n"
                    "  %s\n"
                    "  stages = {\n"
                    "    { type = 'grpo', dataset = 'train', num_generations = 4, generation_batch_size = 8,\n"
                    "      max_steps = 2, max_completion_length = 8, learning_rate = 3e-3, beta = 0.01,\n"
                    "      save_steps = 1, save_total_limit = 0, per_device_train_batch_size = 4%s },\n"
                    "  },\n"
                    "}\n",
                    name, DIR_, DIR_, DIR_, DIR_, g_top, extra);
    recipe *rc;
    base_status s = recipe_load_string(b.data, "test.lua", NULL, 0, &rc);
    base_buf_free(&b);
    if (s) return s;
    run_opts o = {.resume = resume, .overwrite = !resume, .quiet = 1, .device = g_dev, .precision = g_prec,
                  .max_total_steps = max_total};
    s = run_recipe(rc, &o);
    recipe_free(rc);
    return s;
}

static base_status run_lora(const char *name, int resume, int64_t max_total) {
    g_top = "lora = { r = 4, lora_alpha = 8, target_modules = 'all-linear' },";
    base_status s = run_opt(name, resume, max_total, "");
    g_top = "";
    return s;
}

static base_status run(const char *name, int resume, int64_t max_total) {
    return run_opt(name, resume, max_total, "");
}

static char *read_run(const char *name, const char *rel, size_t *n) {
    base_buf b = {0};
    base_buf_printf(&b, "%s/runs/%s/%s", DIR_, name, rel);
    char *t = NULL;
    size_t k;
    if (base_read_file(b.data, &t, &k)) fail_msg("%s", base_err_msg());
    base_buf_free(&b);
    if (n) *n = k;
    return t;
}

/* metrics.jsonl without the wall-clock fields */
static char *metrics_canon(const char *name) {
    char *text = read_run(name, "metrics.jsonl", NULL);
    int lines = 0;
    for (const char *c = text; *c; c++) lines += *c == '\n';
    assert_true(lines >= 2);
    free(text);
    base_buf b = {0};
    base_buf_printf(&b, "%s/runs/%s/metrics.jsonl", DIR_, name);
    char *m = test_metrics_canon(b.data);
    base_buf_free(&b);
    return m;
}

static void test_straight_and_resumed(void **state) {
    (void)state;
    if (run("straight", 0, 0)) fail_msg("%s: %s", g_dev, base_err_msg());
    if (run("resumed", 0, 1)) fail_msg("%s: %s", g_dev, base_err_msg());
    if (run("resumed", 1, 0)) fail_msg("%s (resume): %s", g_dev, base_err_msg());
    char *ma = metrics_canon("straight"), *mb = metrics_canon("resumed");
    assert_string_equal(ma, mb);
    size_t na, nb, n0;
    char *wa = read_run("straight", "checkpoints/step-2/model.safetensors", &na);
    char *wb = read_run("resumed", "checkpoints/step-2/model.safetensors", &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(wa, wb, na);
    /* the weights moved */
    char *src = test_shared_path("fixtures/hf-tiny-v3-a/model.safetensors"), *w0;
    if (base_read_file(src, &w0, &n0)) fail_msg("%s", base_err_msg());
    assert_true(n0 != na || memcmp(w0, wa, na) != 0);
    printf("%s %s: 2 GRPO steps, straight and stopped after 1 + resumed: same metrics, bit-identical weights\n", g_dev,
           g_prec);
    free(ma), free(mb), free(wa), free(wb), free(w0), free(src);
}

/* offload_optimizer: AdamW's m and v in host memory, streamed through the
 * device in chunks (here 1000 floats, so every update crosses chunk
 * boundaries): the same metrics and bit-identical weights as the state on
 * the device, straight and stopped after 1 + resumed (the checkpoint's
 * optimizer file written from and read into host memory). */
static void test_offload_optimizer(void **state) {
    (void)state;
    setenv("GRPO_OFFLOAD_CHUNK", "1000", 1);
    if (run_opt("offload", 0, 0, ", offload_optimizer = true")) fail_msg("%s: %s", g_dev, base_err_msg());
    if (run_opt("offres", 0, 1, ", offload_optimizer = true")) fail_msg("%s: %s", g_dev, base_err_msg());
    if (run_opt("offres", 1, 0, ", offload_optimizer = true")) fail_msg("%s (resume): %s", g_dev, base_err_msg());
    unsetenv("GRPO_OFFLOAD_CHUNK");
    char *ma = metrics_canon("straight");
    size_t na;
    char *wa = read_run("straight", "checkpoints/step-2/model.safetensors", &na);
    char *oa = read_run("straight", "checkpoints/step-2/optimizer.safetensors", NULL);
    const char *runs[2] = {"offload", "offres"};
    for (int r = 0; r < 2; r++) {
        char *mb = metrics_canon(runs[r]);
        assert_string_equal(ma, mb);
        size_t nb, nob, noa;
        char *wb = read_run(runs[r], "checkpoints/step-2/model.safetensors", &nb);
        assert_int_equal(na, nb);
        assert_memory_equal(wa, wb, na);
        char *ob = read_run(runs[r], "checkpoints/step-2/optimizer.safetensors", &nob);
        free(read_run("straight", "checkpoints/step-2/optimizer.safetensors", &noa));
        assert_int_equal(noa, nob);
        assert_memory_equal(oa, ob, noa); /* the moments too */
        free(mb), free(wb), free(ob);
    }
    printf("%s %s: offload_optimizer: same metrics, bit-identical weights and moments, also resumed\n", g_dev,
           g_prec);
    free(ma), free(wa), free(oa);
}

static void test_lora(void **state) {
    (void)state;
    test_counting_reset_peak();
    if (run_lora("lora", 0, 0)) fail_msg("%s: %s", g_dev, base_err_msg());
    if (g_counted) { /* the memory plan == the device bytes the run allocated */
        char *text = read_run("lora", "summary.json", NULL);
        cJSON *j = cJSON_Parse(text);
        const cJSON *plan = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "grpo"), "memory_plan");
        double total = base_json_num(plan, "total", -1, NULL);
        printf("%s %s: LoRA GRPO stage: planned %.0f device bytes, peak allocated %zu\n", g_dev, g_prec, total,
               test_counting_peak());
        assert_true(total == (double)test_counting_peak());
        assert_int_equal(test_counting_live(), 0);
        cJSON_Delete(j);
        free(text);
    }
    if (run_lora("lora_res", 0, 1)) fail_msg("%s: %s", g_dev, base_err_msg());
    if (run_lora("lora_res", 1, 0)) fail_msg("%s (resume): %s", g_dev, base_err_msg());
    char *ma = metrics_canon("lora"), *mb = metrics_canon("lora_res");
    assert_string_equal(ma, mb);
    cJSON *first = cJSON_Parse(ma); /* the first line: step 1 */
    assert_non_null(first);
    assert_true(base_json_num(first, "kl", -1, NULL) == 0.0);
    cJSON_Delete(first);
    size_t na, nb;
    char *wa = read_run("lora", "checkpoints/step-2/adapter_model.safetensors", &na);
    char *wb = read_run("lora_res", "checkpoints/step-2/adapter_model.safetensors", &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(wa, wb, na);
    base_buf p = {0};
    base_buf_printf(&p, "%s/runs/lora/checkpoints/step-2/model.safetensors", DIR_);
    assert_false(base_file_exists(p.data)); /* the adapter only */
    base_buf_free(&p);
    /* B moved from 0: some lora_B byte is not zero */
    st_file *f;
    base_buf_printf(&p, "%s/runs/lora/checkpoints/step-2/adapter_model.safetensors", DIR_);
    assert_int_equal(st_open(p.data, &f), BASE_OK);
    double ss = 0;
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        if (!strstr(t->name, ".lora_B.weight")) continue;
        for (int64_t k = 0; k < st_numel(t); k++) ss += (double)((const float *)t->data)[k] * ((const float *)t->data)[k];
    }
    st_close(f);
    base_buf_free(&p);
    assert_true(ss > 0);
    printf("%s %s: LoRA GRPO, 2 steps: KL 0 at step 1, B moved (sum of squares %.3g), resumed: same metrics, "
           "bit-identical adapter\n",
           g_dev, g_prec, ss);
    free(ma), free(mb), free(wa), free(wb);
}

int main(int argc, char **argv) {
    const char *backend = argc > 1 ? argv[1] : "cuda";
    if (argc > 2) g_prec = argv[2];
    const struct ops *ops;
    int have = test_backend(backend, 0, &ops);
    if (have < 0) {
        fprintf(stderr, "usage: test_cuda_run [cuda|emu]\n");
        return 2;
    }
    if (!have) return 0;
    if (!strcmp(backend, "emu")) {
        g_counted = 1;
        ops_register("cuda-emu", test_counting_ops(ops, ops->name));
        g_dev = "cuda-emu";
    } else {
        g_dev = "cuda";
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_straight_and_resumed),
                                       cmocka_unit_test(test_offload_optimizer), cmocka_unit_test(test_lora)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
