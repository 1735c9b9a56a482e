/* The memory plan of a GRPO stage (run_grpo_memory, recorded in
 * summary.json as "memory_plan") against what the run allocates: the run
 * goes through a counting copy of the CPU op table (every device
 * allocation and free), and the peak of live device bytes over a run of one
 * GRPO stage equals the plan's total, byte for byte, for LoRA and full
 * fine-tuning, with and without a reference pass, with a micro-batch below
 * the generation batch and with gradient checkpointing. The roles are
 * checked too: LoRA holds no reference model, no base gradients and
 * optimizer state of the adapter's size only; its base is frozen (compute
 * weights only), stored in bf16 or fp8 with the recipe's precision. */
#include "common/test_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "recipe/recipe.h"
#include "tensor/ops.h"
#include "train/run.h"

static char *DIR_;

static int setup(void **state) {
    (void)state;
    DIR_ = test_tmpdir();
    char *m = base_path_join(DIR_, "model");
    test_tiny_model(m, 1);
    base_buf b = {0};
    for (int i = 0; i < 12; i++)
        base_buf_printf(&b, "{\"prompt\": \"What is %d + %d?\", \"answer\": \"%d\"}\n", i, 5 * i % 7, i + 5 * i % 7);
    char *d = base_path_join(DIR_, "data.jsonl");
    test_write_file(d, b.data, b.len);
    const char *lua = "return function(s) return #s.completion % 3 end\n";
    char *rw = base_path_join(DIR_, "len.lua");
    test_write_file(rw, lua, strlen(lua));
    free(rw), free(d), free(m);
    base_buf_free(&b);
    ops_register("cpu-count", test_counting_ops(ops_cpu(), "cpu-count"));
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_rmdir(DIR_);
    free(DIR_);
    return 0;
}

typedef struct {
    const char *name;
    const char *lora; /* the recipe's lora table, or "" */
    double beta;
    int mb, recompute;
    const char *precision; /* the recipe's (LoRA: the frozen base's storage on the CPU) */
} mem_case;

/* Runs one GRPO stage of 2 steps on the counting backend; returns the
 * stage's memory_plan (caller deletes) and the peak of live device bytes. */
static cJSON *run_case(const mem_case *k, size_t *peak) {
    base_buf b = {0};
    base_buf_printf(&b,
                    "return {\n"
                    "  name = '%s', model = '%s/model', output_dir = '%s/runs', seed = 3,\n"
                    "  template = 'Q: {prompt}\\nA: ', report = false, precision = '%s',\n"
                    "  datasets = { train = '%s/data.jsonl' }, rewards = { '%s/len.lua:1.0' },\n"
                    "  %s\n"
                    "  stages = {\n"
                    "    { type = 'grpo', dataset = 'train', num_generations = 3, generation_batch_size = 6,\n"
                    "      max_steps = 2, max_completion_length = 7, learning_rate = 1e-2, beta = %g,\n"
                    "      per_device_train_batch_size = %d, gradient_checkpointing = %s, save_steps = 2 },\n"
                    "  },\n"
                    "}\n",
                    k->name, DIR_, DIR_, k->precision ? k->precision : "f32", DIR_, DIR_, k->lora, k->beta, k->mb, k->recompute ? "true" : "false");
    recipe *rc;
    if (recipe_load_string(b.data, "mem.lua", NULL, 0, &rc)) fail_msg("%s", base_err_msg());
    base_buf_free(&b);
    run_opts o = {.overwrite = 1, .quiet = 1, .device = "cpu-count"};
    test_counting_reset_peak();
    if (run_recipe(rc, &o)) fail_msg("%s: %s", k->name, base_err_msg());
    recipe_free(rc);
    assert_int_equal(test_counting_live(), 0); /* everything allocated was freed */
    *peak = test_counting_peak();
    base_buf_printf(&b, "%s/runs/%s/summary.json", DIR_, k->name);
    char *text;
    size_t n;
    if (base_read_file(b.data, &text, &n)) fail_msg("%s", base_err_msg());
    base_buf_free(&b);
    cJSON *j = cJSON_Parse(text);
    free(text);
    assert_non_null(j);
    cJSON *plan = cJSON_DetachItemFromObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "grpo"), "memory_plan");
    cJSON_Delete(j);
    if (!plan) fail_msg("%s: no grpo.memory_plan in summary.json", k->name);
    return plan;
}

static size_t role(const cJSON *plan, const char *k) {
    int ok = 0;
    double v = base_json_num(plan, k, -1, &ok);
    if (v < 0) fail_msg("memory_plan: no %s", k);
    return (size_t)v;
}

static void check_total(const cJSON *plan) {
    const char *roles[] = {"weights",     "adapter",         "grads",   "optimizer", "ref_weights",
                           "activations", "ref_activations", "rollout"};
    size_t sum = 0;
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) sum += role(plan, roles[i]);
    assert_int_equal(sum, role(plan, "total"));
}

static void test_plan_equals_allocated(void **state) {
    (void)state;
    const char *lora = "lora = { r = 4, lora_alpha = 8, target_modules = 'all-linear' },";
    const char *attn = "lora = { r = 2, lora_alpha = 4, target_modules = { 'q_proj', 'q_a_proj', 'q_b_proj', "
                       "'kv_a_proj_with_mqa', 'kv_b_proj', 'o_proj' } },";
    const mem_case cases[] = {
        {"lora_ref", lora, 0.04, 6, 0, NULL},
        {"lora_noref", lora, 0.0, 2, 0, NULL},
        {"lora_attn_rc", attn, 0.04, 3, 1, NULL},
        {"lora_bf16_base", lora, 0.04, 3, 0, "bf16"},
        {"lora_fp8_base", lora, 0.04, 6, 1, "fp8"},
        {"full_ref", "", 0.04, 6, 0, NULL},
        {"full_noref_rc", "", 0.0, 2, 1, NULL},
    };
    size_t lora_total = 0, full_total = 0, lora_f32_weights = 0, lora_bf16_weights = 0, lora_fp8_weights = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const mem_case *k = &cases[i];
        size_t peak;
        cJSON *plan = run_case(k, &peak);
        check_total(plan);
        printf("%-14s planned %zu bytes (weights %zu adapter %zu grads %zu optimizer %zu ref_weights %zu "
               "activations %zu ref_activations %zu rollout %zu), peak allocated %zu\n",
               k->name, role(plan, "total"), role(plan, "weights"), role(plan, "adapter"), role(plan, "grads"),
               role(plan, "optimizer"), role(plan, "ref_weights"), role(plan, "activations"),
               role(plan, "ref_activations"), role(plan, "rollout"), peak);
        assert_int_equal(role(plan, "total"), peak);
        if (*k->lora) {
            assert_true(role(plan, "adapter") > 0);
            assert_int_equal(role(plan, "grads"), role(plan, "adapter")); /* f32 run: A and B, no copy */
            assert_int_equal(role(plan, "optimizer"), 2 * role(plan, "grads"));
            assert_int_equal(role(plan, "ref_weights"), 0); /* the base with the adapter off */
            assert_true(role(plan, "grads") < role(plan, "weights") / 4);
            assert_int_equal(role(plan, "ref_activations"), 0); /* the trainer's arena, the adapter off */
            if (!strcmp(k->name, "lora_ref")) lora_total = role(plan, "total"), lora_f32_weights = role(plan, "weights");
            if (!strcmp(k->name, "lora_bf16_base")) lora_bf16_weights = role(plan, "weights");
            if (!strcmp(k->name, "lora_fp8_base")) lora_fp8_weights = role(plan, "weights");
        } else {
            assert_int_equal(role(plan, "adapter"), 0);
            assert_true(role(plan, "grads") >= role(plan, "weights") * 9 / 10);
            assert_int_equal(role(plan, "optimizer"), 2 * role(plan, "grads"));
            assert_int_equal(role(plan, "ref_weights"), k->beta != 0 ? role(plan, "weights") : 0);
            if (!strcmp(k->name, "full_ref")) full_total = role(plan, "total");
        }
        cJSON_Delete(plan);
    }
    /* the same stage: LoRA with the base as its reference holds less than
     * full fine-tuning with a reference model (on this tiny model the
     * activations dominate both) */
    assert_true(lora_total < full_total);
    /* the frozen base in its storage: bf16 about half of f32, fp8 below bf16 */
    printf("LoRA base: f32 %zu, bf16 %zu, fp8 %zu bytes\n", lora_f32_weights, lora_bf16_weights, lora_fp8_weights);
    assert_true(lora_bf16_weights < lora_f32_weights * 6 / 10);
    assert_true(lora_fp8_weights < lora_bf16_weights);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_equals_allocated),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
