/* The demo recipe (recipes/tiny-zero.lua) on the committed tiny model.
 * Default suite: a short run (2 GRPO steps, 20 held-out prompts) goes
 * through every stage and writes the run directory, summary and report.
 * Suite slow (test_demo --full, `make test-slow`): the whole demo meets its
 * target, b >= 2a and b - a >= 0.2 for held-out accuracy before (a) and
 * after (b) GRPO.
 * Suite slow (test_demo --lora): the demo with the README's LoRA line (r = 8
 * on every attention and MLP module, learning rate 3e-3) rises by >= 0.2
 * too, and its checkpoints hold the adapter in PEFT's format, no weights. */
#include "common/test_common.h"

#include <stdlib.h>
#include <string.h>

#include "base/base.h"

static cJSON *summary_of(const char *dir) {
    char *p = base_path_join(dir, "runs/tiny-zero/summary.json");
    cJSON *j = NULL;
    if (base_json_parse_file(p, &j)) fail_msg("%s", base_err_msg());
    free(p);
    return j;
}

static double acc(const cJSON *sum, const char *stage) {
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(sum, stage);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(st, "accuracy");
    if (!cJSON_IsNumber(a)) fail_msg("summary.json has no %s.accuracy", stage);
    return a->valuedouble;
}

static char *run_demo(const char *extra) {
    char *dir = test_tmpdir(), *recipe = test_src_path("recipes/tiny-zero.lua");
    base_buf cmd = {0};
    base_buf_printf(&cmd, "cd '%s' && '%s' run '%s' --quiet %s", dir, getenv("GRPO_EXE"), recipe, extra);
    char *out = NULL;
    FILE *p = popen(cmd.data, "r");
    assert_non_null(p);
    base_buf o = {0};
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) base_buf_append(&o, buf, n);
    int st = pclose(p);
    out = o.data;
    if (st != 0) fail_msg("grpo run failed:\n%s", out ? out : "");
    assert_non_null(strstr(out, "eval_before"));
    assert_non_null(strstr(out, "eval_after"));
    free(out);
    base_buf_free(&cmd);
    free(recipe);
    return dir;
}

static void test_demo_short(void **state) {
    (void)state;
    char *dir = run_demo("--set stages.grpo.max_steps=2 --set stages.eval_before.limit=20 "
                         "--set stages.eval_after.limit=20");
    cJSON *sum = summary_of(dir);
    double a = acc(sum, "eval_before"), b = acc(sum, "eval_after");
    assert_true(a >= 0 && a <= 1 && b >= 0 && b <= 1);
    cJSON_Delete(sum);
    const char *files[] = {"config.resolved.lua", "metrics.jsonl", "samples.jsonl", "reward_errors.log",
                           "report.html", "checkpoints/step-2/model.safetensors", "checkpoints/step-2/config.json",
                           "checkpoints/step-2/tokenizer.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        base_buf p = {0};
        base_buf_printf(&p, "%s/runs/tiny-zero/%s", dir, files[i]);
        if (!base_file_exists(p.data)) fail_msg("missing %s", p.data);
        base_buf_free(&p);
    }
    /* the report shows the plots it links to */
    char *rp = base_path_join(dir, "runs/tiny-zero/report.html"), *html;
    size_t n;
    assert_int_equal(base_read_file(rp, &html, &n), BASE_OK);
    if (system("command -v gnuplot >/dev/null 2>&1") == 0) {
        assert_non_null(strstr(html, "plots/grpo_rewards.png"));
        assert_non_null(strstr(html, "plots/accuracy.png"));
        const char *pngs[] = {"plots/grpo_rewards.png", "plots/grpo_entropy.png", "plots/grpo_clip.png",
                              "plots/grpo_length.png", "plots/accuracy.png"};
        for (size_t i = 0; i < sizeof pngs / sizeof pngs[0]; i++) {
            base_buf p = {0};
            base_buf_printf(&p, "%s/runs/tiny-zero/%s", dir, pngs[i]);
            char *png;
            size_t pn;
            if (base_read_file(p.data, &png, &pn)) fail_msg("%s", base_err_msg());
            assert_true(pn > 8 && !memcmp(png, "\x89PNG\r\n\x1a\n", 8));
            free(png);
            base_buf_free(&p);
        }
    }
    free(html), free(rp);
    test_rmdir(dir);
    free(dir);
}

static void test_demo_full(void **state) {
    (void)state;
    if (!getenv("GRPO_DEMO_FULL")) {
        skip();
        return;
    }
    char *dir = run_demo("");
    cJSON *sum = summary_of(dir);
    double a = acc(sum, "eval_before"), b = acc(sum, "eval_after");
    print_message("held-out accuracy: before %.3f, after %.3f\n", a, b);
    assert_true(b >= 2 * a);
    assert_true(b - a >= 0.2);
    cJSON_Delete(sum);
    test_rmdir(dir);
    free(dir);
}

/* The README's LoRA line for the demo. */
#define DEMO_LORA_SET                                                                                             \
    "--set lora.r=8 --set lora.lora_alpha=16 --set lora.target_modules=all-linear "                               \
    "--set stages.grpo.learning_rate=3e-3"

static void test_demo_lora(void **state) {
    (void)state;
    if (!getenv("GRPO_DEMO_LORA")) {
        skip();
        return;
    }
    char *dir = run_demo(DEMO_LORA_SET);
    cJSON *sum = summary_of(dir);
    double a = acc(sum, "eval_before"), b = acc(sum, "eval_after");
    print_message("LoRA GRPO, held-out accuracy: before %.3f, after %.3f\n", a, b);
    assert_true(b - a >= 0.2);
    cJSON_Delete(sum);
    const char *have[] = {"adapter_config.json", "adapter_model.safetensors", "optimizer.safetensors"};
    for (size_t i = 0; i < sizeof have / sizeof have[0]; i++) {
        base_buf p = {0};
        base_buf_printf(&p, "%s/runs/tiny-zero/checkpoints/step-30/%s", dir, have[i]);
        if (!base_file_exists(p.data)) fail_msg("missing %s", p.data);
        base_buf_free(&p);
    }
    char *w = base_path_join(dir, "runs/tiny-zero/checkpoints/step-30/model.safetensors");
    assert_false(base_file_exists(w));
    free(w);
    test_rmdir(dir);
    free(dir);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--lora")) {
        setenv("GRPO_DEMO_LORA", "1", 1);
        const struct CMUnitTest lora[] = {cmocka_unit_test(test_demo_lora)};
        return cmocka_run_group_tests(lora, NULL, NULL);
    }
    if (argc > 1 && !strcmp(argv[1], "--full")) {
        setenv("GRPO_DEMO_FULL", "1", 1);
        const struct CMUnitTest full[] = {cmocka_unit_test(test_demo_full)};
        return cmocka_run_group_tests(full, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_demo_short), cmocka_unit_test(test_demo_full)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
