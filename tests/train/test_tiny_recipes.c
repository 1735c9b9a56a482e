/* The tiny twins of the R1 recipes, run as a user runs them (suite slow,
 * `make test-slow`; a few minutes each on 2 cores):
 *
 *   test_tiny_recipes distill   recipes/tiny-distill.lua: the student's
 *                               held-out accuracy after SFT (eval_after) is
 *                               at least 0.75 and at least 3x its accuracy
 *                               before (eval_before)
 *   test_tiny_recipes r1        recipes/tiny-r1.lua: every SFT stage's
 *                               first-step loss is below 1.0 and the final
 *                               eval at least the R1-Zero stage's
 *                               (eval_r1_zero)
 *
 * Both also check what the pipeline says about itself: every SFT stage
 * trained on the rows the sample stage wrote, with the recipe's template. */
#include "common/test_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "recipe/recipe.h"

static const char *g_which; /* "distill" or "r1" */

static double accuracy(const cJSON *sum, const char *stage) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(sum, stage), "accuracy");
    if (!cJSON_IsNumber(a)) fail_msg("summary.json has no %s.accuracy", stage);
    return a->valuedouble;
}

/* metrics.jsonl's loss of `stage` at its step 1. */
static double first_loss(const char *run, const char *stage) {
    char *path = base_path_join(run, "metrics.jsonl");
    base_jsonl *r;
    if (base_jsonl_open(path, &r)) fail_msg("%s", base_err_msg());
    cJSON *l;
    double loss = -1;
    while (loss < 0 && base_jsonl_next(r, &l) == BASE_OK) {
        if (!strcmp(base_json_str(l, "stage", ""), stage) && base_json_int(l, "step", 0, NULL) == 1)
            loss = base_json_num(l, "loss", -1, NULL);
        cJSON_Delete(l);
    }
    base_jsonl_close(r);
    free(path);
    if (loss < 0) fail_msg("%s: no step-1 loss of stage %s", run, stage);
    return loss;
}

/* Run recipes/tiny-NAME.lua in a fresh directory; the run directory
 * (malloc'd) and the loaded recipe (for its stages). */
static char *run_recipe_file(const char *name, recipe **rc, char **tmp) {
    char rel[64];
    snprintf(rel, sizeof rel, "recipes/tiny-%s.lua", name);
    char *path = test_src_path(rel);
    if (recipe_load(path, NULL, 0, rc)) fail_msg("%s: %s", rel, base_err_msg());
    *tmp = test_tmpdir();
    base_buf cmd = {0}, out = {0};
    base_buf_printf(&cmd, "cd '%s' && '%s' run '%s' --quiet 2>&1", *tmp, getenv("GRPO_EXE"), path);
    double t0 = base_now();
    FILE *p = popen(cmd.data, "r");
    assert_non_null(p);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) base_buf_append(&out, buf, n);
    int st = pclose(p);
    if (st != 0) fail_msg("grpo run %s failed:\n%s", rel, out.data ? out.data : "");
    printf("%s%s: %.0f s\n", out.data ? out.data : "", rel, base_now() - t0);
    base_buf_free(&cmd), base_buf_free(&out);
    free(path);
    snprintf(rel, sizeof rel, "runs/tiny-%s", name);
    return base_path_join(*tmp, rel);
}

/* Every SFT stage trained on its sample stage's rows, rendered with the
 * recipe's template; returns the largest first-step loss among them. */
static double check_sft_stages(const recipe *rc, const char *run, const cJSON *sum) {
    const recipe_cfg *cfg = recipe_config(rc);
    double worst = 0;
    int n = 0;
    for (int i = 0; i < cfg->n_stages; i++) {
        const recipe_stage_cfg *st = &cfg->stages[i];
        if (st->type != RECIPE_STAGE_SFT) continue;
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(sum, st->name);
        const recipe_stage_cfg *src = st->datasets[0]->producer;
        assert_non_null(src); /* "stage:NAME" */
        int64_t kept = base_json_int(cJSON_GetObjectItemCaseSensitive(sum, src->name), "kept", -1, NULL);
        int64_t rows = base_json_int(cJSON_GetObjectItemCaseSensitive(s, "rows"), "sampled", -1, NULL);
        double l = first_loss(run, st->name);
        cJSON *t = cJSON_CreateString(base_json_str(s, "template", "?"));
        char *shown = cJSON_PrintUnformatted(t);
        printf("%s: %lld sampled rows (kept by %s: %lld), template %s, step-1 loss %.4f\n", st->name,
               (long long)rows, src->name, (long long)kept, shown, l);
        cJSON_free(shown), cJSON_Delete(t);
        assert_true(kept > 0 && rows == kept);
        assert_string_equal(base_json_str(s, "template", ""), cfg->template_name);
        if (l > worst) worst = l;
        n++;
    }
    assert_true(n > 0);
    return worst;
}

static void test_tiny_recipe(void **state) {
    (void)state;
    recipe *rc;
    char *tmp, *run = run_recipe_file(g_which, &rc, &tmp);
    char *sp = base_path_join(run, "summary.json");
    cJSON *sum;
    if (base_json_parse_file(sp, &sum)) fail_msg("%s", base_err_msg());
    double worst = check_sft_stages(rc, run, sum);
    assert_true(worst < 1.0);
    if (!strcmp(g_which, "distill")) {
        double before = accuracy(sum, "eval_before"), after = accuracy(sum, "eval_after");
        printf("tiny-distill: student %.4f -> %.4f (teacher %.4f); target >= 0.75 and >= 3x\n", before, after,
               accuracy(sum, "eval_teacher"));
        assert_true(after >= 0.75);
        assert_true(after >= 3 * before);
    } else {
        const recipe_cfg *cfg = recipe_config(rc);
        const char *last = NULL;
        for (int i = 0; i < cfg->n_stages; i++)
            if (cfg->stages[i].type == RECIPE_STAGE_EVAL) last = cfg->stages[i].name;
        assert_non_null(last);
        double zero = accuracy(sum, "eval_r1_zero"), fin = accuracy(sum, last);
        printf("tiny-r1: R1-Zero %.4f, final (%s) %.4f; SFT step-1 losses <= %.4f (target < 1.0)\n", zero, last,
               fin, worst);
        assert_true(fin >= zero);
    }
    cJSON_Delete(sum);
    recipe_free(rc);
    test_rmdir(tmp);
    free(sp), free(run), free(tmp);
}

int main(int argc, char **argv) {
    g_which = argc > 1 ? argv[1] : "distill";
    if (strcmp(g_which, "distill") && strcmp(g_which, "r1")) {
        fprintf(stderr, "usage: test_tiny_recipes distill|r1\n");
        return 2;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_tiny_recipe)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
