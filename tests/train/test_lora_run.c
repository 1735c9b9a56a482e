/* LoRA runs (the recipe's lora table) on the hf-tiny-v3-a weights with a
 * byte-level tokenizer: eval -> GRPO (beta 0.01: the reference is the base,
 * the adapter off) -> SFT -> eval.
 *   - checkpoints hold the adapter in PEFT's format (adapter_config.json,
 *     adapter_model.safetensors with PEFT's names) and the optimizer state,
 *     no model weights; the model directory is never written;
 *   - step 1 trains a policy equal to its base (B = 0): its KL to the
 *     reference is exactly 0, and the adapter's B moves;
 *   - a run stopped inside GRPO, and one stopped inside SFT, then resumed
 *     give the same metrics and the same adapter bytes as a straight run;
 *   - the checkpoint's adapter loads with `grpo forward --adapter`, and the
 *     merged model of `grpo merge` gives the same logits (2e-5 relative);
 *   - a LoRA checkpoint does not resume a recipe without the lora table. */
#include "common/test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/st.h"
#include "recipe/recipe.h"
#include "train/run.h"

static char *DIR_;

static int setup(void **state) {
    (void)state;
    DIR_ = test_tmpdir();
    test_run_fixture(DIR_); /* model/, data.jsonl, vary.lua */
    base_buf sft = {0};
    for (int i = 0; i < 24; i++)
        base_buf_printf(&sft, "{\"prompt\": \"What is %d + %d?\", \"completion\": \" %d\"}\n", i, 3 * i % 11,
                        i + 3 * i % 11);
    test_write_text(DIR_, "sft.jsonl", sft.data);
    base_buf_free(&sft);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_rmdir(DIR_);
    free(DIR_);
    return 0;
}

/* 4 GRPO steps then 3 SFT steps = global steps 1..7, a checkpoint each. */
static char *recipe_text(const char *name, int lora) {
    base_buf b = {0};
    base_buf_printf(&b,
                    "return {\n"
                    "  name = '%s', model = '%s/model', output_dir = '%s/runs', seed = 11,\n"
                    "  template = 'Q: {prompt}\\nA: ', report = false,\n"
                    "  datasets = { train = '%s/data.jsonl', sft = '%s/sft.jsonl' },\n"
                    "  rewards = { '%s/vary.lua:1.0' },\n"
                    "  %s\n"
                    "  stages = {\n"
                    "    { type = 'eval', name = 'eval_before', dataset = 'train', num_generations = 2, limit = 3,\n"
                    "      max_completion_length = 8 },\n"
                    "    { type = 'grpo', dataset = 'train', num_generations = 4, generation_batch_size = 8,\n"
                    "      max_steps = 4, max_completion_length = 10, learning_rate = 2e-2, beta = 0.01,\n"
                    "      save_steps = 1, save_total_limit = 0, per_device_train_batch_size = 4 },\n"
                    "    { type = 'sft', dataset = 'sft', max_steps = 3, per_device_train_batch_size = 4,\n"
                    "      max_length = 64, learning_rate = 1e-2, save_steps = 1, save_total_limit = 0 },\n"
                    "    { type = 'eval', name = 'eval_after', dataset = 'train', num_generations = 2, limit = 3,\n"
                    "      max_completion_length = 8 },\n"
                    "  },\n"
                    "}\n",
                    name, DIR_, DIR_, DIR_, DIR_, DIR_,
                    lora ? "lora = { r = 4, lora_alpha = 8, target_modules = 'all-linear' }," : "");
    return b.data;
}

static base_status run_in_process(const char *name, int lora, int resume, int64_t max_total, int allow) {
    char *text = recipe_text(name, lora);
    recipe *rc;
    base_status s = recipe_load_string(text, "test.lua", NULL, 0, &rc);
    free(text);
    if (s) return s;
    run_opts o = {.resume = resume, .overwrite = !resume, .quiet = 1, .max_total_steps = max_total,
                  .allow_changes = allow};
    s = run_recipe(rc, &o);
    recipe_free(rc);
    return s;
}

static char *path_of(const char *name, const char *rel) {
    base_buf b = {0};
    base_buf_printf(&b, "%s/runs/%s/%s", DIR_, name, rel);
    return b.data;
}

static char *read_rel(const char *name, const char *rel, size_t *len) {
    char *p = path_of(name, rel), *t = NULL;
    size_t n;
    if (base_read_file(p, &t, &n)) fail_msg("%s", base_err_msg());
    free(p);
    if (len) *len = n;
    return t;
}

static int exists(const char *name, const char *rel) {
    char *p = path_of(name, rel);
    int e = base_file_exists(p);
    free(p);
    return e;
}

/* metrics.jsonl without the wall-clock fields */
static char *metrics_canon(const char *name) {
    char *p = path_of(name, "metrics.jsonl");
    char *m = test_metrics_canon(p);
    free(p);
    return m;
}

static void assert_same_run(const char *a, const char *b) {
    char *ma = metrics_canon(a), *mb = metrics_canon(b);
    assert_string_equal(ma, mb);
    free(ma), free(mb);
    for (int step = 4; step <= 7; step += 3) {
        char rel[96];
        snprintf(rel, sizeof rel, "checkpoints/step-%d/adapter_model.safetensors", step);
        size_t na, nb;
        char *wa = read_rel(a, rel, &na), *wb = read_rel(b, rel, &nb);
        assert_int_equal(na, nb);
        assert_memory_equal(wa, wb, na); /* bit-identical adapters */
        free(wa), free(wb);
    }
}

/* Sum of squares of the lora_B tensors of a checkpoint's adapter. */
static double b_norm(const char *name, int step) {
    char rel[96];
    snprintf(rel, sizeof rel, "checkpoints/step-%d/adapter_model.safetensors", step);
    char *p = path_of(name, rel);
    st_file *f;
    assert_int_equal(st_open(p, &f), BASE_OK);
    double ss = 0;
    int nb = 0;
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        assert_int_equal(t->dtype, TENSOR_F32);
        assert_int_equal(strncmp(t->name, "base_model.model.model.layers.", 30), 0);
        if (!strstr(t->name, ".lora_B.weight")) continue;
        nb++;
        const float *v = t->data;
        for (int64_t k = 0; k < st_numel(t); k++) ss += (double)v[k] * v[k];
    }
    assert_true(nb > 0);
    st_close(f);
    free(p);
    return ss;
}

static void test_straight_run(void **state) {
    (void)state;
    char *mp = base_path_join(DIR_, "model/model.safetensors"), *w0;
    size_t n0;
    if (base_read_file(mp, &w0, &n0)) fail_msg("%s", base_err_msg());
    if (run_in_process("straight", 1, 0, 0, 0)) fail_msg("%s", base_err_msg());
    /* checkpoints: adapter, optimizer, tokenizer, state; no weights */
    const char *have[] = {"adapter_config.json", "adapter_model.safetensors", "optimizer.safetensors",
                          "trainer_state.json", "tokenizer.json"};
    for (int step = 1; step <= 7; step++)
        for (size_t i = 0; i < sizeof have / sizeof have[0]; i++) {
            char rel[96];
            snprintf(rel, sizeof rel, "checkpoints/step-%d/%s", step, have[i]);
            if (!exists("straight", rel)) fail_msg("no %s", rel);
            snprintf(rel, sizeof rel, "checkpoints/step-%d/model.safetensors", step);
            assert_false(exists("straight", rel));
            snprintf(rel, sizeof rel, "checkpoints/step-%d/ref.safetensors", step);
            assert_false(exists("straight", rel)); /* the reference is the base: nothing to save */
        }
    char *cfg = read_rel("straight", "checkpoints/step-7/adapter_config.json", NULL);
    cJSON *j = cJSON_Parse(cfg);
    assert_string_equal(base_json_str(j, "peft_type", ""), "LORA");
    assert_int_equal(base_json_int(j, "r", 0, NULL), 4);
    char *want_base = base_path_join(DIR_, "model");
    assert_string_equal(base_json_str(j, "base_model_name_or_path", ""), want_base);
    free(want_base);
    cJSON_Delete(j);
    free(cfg);
    /* the optimizer state is the adapter's: m.NAME / v.NAME of its tensors */
    char *op = path_of("straight", "checkpoints/step-2/optimizer.safetensors");
    st_file *f;
    assert_int_equal(st_open(op, &f), BASE_OK);
    assert_non_null(st_find(f, "m.base_model.model.model.layers.0.self_attn.o_proj.lora_B.weight"));
    assert_null(st_find(f, "m.model.layers.0.self_attn.o_proj.weight"));
    st_close(f);
    free(op);
    /* step 1's policy is its base: KL exactly 0; later steps move away */
    char *m = metrics_canon("straight"), *save = NULL;
    int grpo = 0, sft = 0;
    for (char *line = strtok_r(m, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *l = cJSON_Parse(line);
        const char *st = base_json_str(l, "stage", "");
        if (!strcmp(st, "grpo")) {
            double kl = base_json_num(l, "kl", NAN, NULL);
            if (++grpo == 1) assert_true(kl == 0.0);
            else assert_true(kl > 0);
        }
        if (!strcmp(st, "sft")) {
            sft++;
            assert_true(isfinite(base_json_num(l, "loss", NAN, NULL)));
        }
        cJSON_Delete(l);
    }
    assert_int_equal(grpo, 4);
    assert_int_equal(sft, 3);
    free(m);
    /* B starts at 0 and moves; SFT moves it further */
    double b1 = b_norm("straight", 1), b4 = b_norm("straight", 4), b7 = b_norm("straight", 7);
    printf("sum of squares of B: step 1 %.3g, step 4 %.3g, step 7 %.3g\n", b1, b4, b7);
    assert_true(b1 > 0 && b4 > 0 && b7 != b4);
    /* the base model was only read */
    char *w1;
    size_t n1;
    if (base_read_file(mp, &w1, &n1)) fail_msg("%s", base_err_msg());
    assert_int_equal(n1, n0);
    assert_memory_equal(w1, w0, n0);
    free(w0), free(w1), free(mp);
}

static void test_resume_bit_exact(void **state) {
    (void)state;
    /* stopped inside GRPO (after 2 of its 4 steps), then inside SFT (step 6 of 7) */
    if (run_in_process("resumed", 1, 0, 2, 0)) fail_msg("%s", base_err_msg());
    if (run_in_process("resumed", 1, 1, 6, 0)) fail_msg("%s", base_err_msg());
    if (run_in_process("resumed", 1, 1, 0, 0)) fail_msg("%s", base_err_msg());
    assert_same_run("straight", "resumed");
}

/* grpo forward --adapter and grpo merge on the run's last adapter. */
static void test_forward_and_merge(void **state) {
    (void)state;
    char *ad = path_of("straight", "checkpoints/step-7"), *ids = base_path_join(DIR_, "ids.jsonl");
    char *out = base_path_join(DIR_, "merged");
    const char *row = "{\"ids\": [1, 70, 80, 90, 100, 33, 45, 12, 7]}\n";
    test_write_file(ids, row, strlen(row));
    base_buf cmd = {0};
    char *log = NULL;
    base_buf_printf(&cmd, "forward --model %s/model --adapter %s --in %s --out %s/a.safetensors", DIR_, ad, ids, DIR_);
    if (test_run_grpo(cmd.data, &log)) fail_msg("%s", log);
    free(log);
    base_buf_free(&cmd);
    base_buf_printf(&cmd, "forward --model %s/model --in %s --out %s/base.safetensors", DIR_, ids, DIR_);
    if (test_run_grpo(cmd.data, &log)) fail_msg("%s", log);
    free(log);
    base_buf_free(&cmd);
    base_buf_printf(&cmd, "merge --model %s/model --adapter %s --out %s", DIR_, ad, out);
    if (test_run_grpo(cmd.data, &log)) fail_msg("%s", log);
    free(log);
    base_buf_free(&cmd);
    base_buf_printf(&cmd, "forward --model %s --in %s --out %s/m.safetensors", out, ids, DIR_);
    if (test_run_grpo(cmd.data, &log)) fail_msg("%s", log);
    free(log);
    base_buf_free(&cmd);
    const char *files[] = {"a.safetensors", "base.safetensors", "m.safetensors"};
    float *lg[3];
    int64_t n = 0;
    for (int i = 0; i < 3; i++) {
        char *p = base_path_join(DIR_, files[i]);
        st_file *f;
        assert_int_equal(st_open(p, &f), BASE_OK);
        const st_tensor *t = st_find(f, "logits.0");
        assert_non_null(t);
        n = st_numel(t);
        lg[i] = malloc((size_t)n * sizeof(float));
        memcpy(lg[i], t->data, (size_t)n * sizeof(float));
        st_close(f);
        free(p);
    }
    double moved = test_max_abs_diff(lg[0], lg[1], n), rel = test_rel_l2(lg[2], lg[0], n);
    printf("adapter vs base: max |diff| %.3g; merged vs base + adapter: relative L2 %.3g\n", moved, rel);
    assert_true(moved > 1e-3);
    assert_true(rel < 2e-5);
    /* the merged directory is a model: config.json, weights, tokenizer */
    char *cj = base_path_join(out, "config.json"), *tk = base_path_join(out, "tokenizer.json");
    assert_true(base_file_exists(cj) && base_file_exists(tk));
    free(cj), free(tk);
    /* --dtype bf16: every tensor the f32 merge's rounded to bf16 */
    char *out16 = base_path_join(DIR_, "merged16");
    base_buf_printf(&cmd, "merge --model %s/model --adapter %s --out %s --dtype bf16", DIR_, ad, out16);
    if (test_run_grpo(cmd.data, &log)) fail_msg("%s", log);
    free(log);
    base_buf_free(&cmd);
    st_dir *d32, *d16;
    assert_int_equal(st_dir_open(out, &d32), BASE_OK);
    assert_int_equal(st_dir_open(out16, &d16), BASE_OK);
    assert_int_equal(st_dir_count(d32), st_dir_count(d16));
    for (int i = 0; i < st_dir_count(d32); i++) {
        const st_tensor *a = st_dir_at(d32, i), *b = st_dir_find(d16, a->name);
        assert_non_null(b);
        assert_int_equal(a->dtype, TENSOR_F32);
        assert_int_equal(b->dtype, TENSOR_BF16);
        int64_t k = st_numel(a);
        assert_int_equal(st_numel(b), k);
        for (int64_t e = 0; e < k; e++) {
            float f;
            uint16_t h;
            memcpy(&f, (const char *)a->data + 4 * e, 4);
            memcpy(&h, (const char *)b->data + 2 * e, 2);
            if (h != tensor_f32_to_bf16(f)) fail_msg("%s[%lld]: bf16 %#x, f32 %.9g", a->name, (long long)e, h, f);
        }
    }
    st_dir_close(d32), st_dir_close(d16);
    free(out16);
    for (int i = 0; i < 3; i++) free(lg[i]);
    free(ad), free(ids), free(out);
}

static void test_resume_mismatch(void **state) {
    (void)state;
    if (run_in_process("mismatch", 1, 0, 2, 0)) fail_msg("%s", base_err_msg());
    /* the same run without the lora table: refused (a changed key), and with
     * --allow-changes still refused by the checkpoint itself */
    assert_int_not_equal(run_in_process("mismatch", 0, 1, 0, 0), BASE_OK);
    assert_non_null(strstr(base_err_msg(), "lora"));
    assert_int_not_equal(run_in_process("mismatch", 0, 1, 0, 1), BASE_OK);
    assert_non_null(strstr(base_err_msg(), "a checkpoint of a LoRA run"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_straight_run),
        cmocka_unit_test(test_resume_bit_exact),
        cmocka_unit_test(test_forward_and_merge),
        cmocka_unit_test(test_resume_mismatch),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
