/* Tests of the typed recipe config (src/recipe/config.c, validate.c):
 *   - generated from the schema tables: for every number key with a range,
 *     a value just outside each end fails with the exact message
 *     "t.lua: PATH = VALUE: must be COND", the value at the edge passes;
 *     for every key, a value of the wrong type fails naming PATH = VALUE
 *   - an override's error names it; checks between keys
 *   - the issue's examples on the command line (top_p = 2, top_k = -5,
 *     reward_memory_mb = 0, --workers -1 / 1000000, ...): a clear error, a
 *     non-zero exit, no "fatal:" line. */
#include "common/test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recipe/recipe.h"
#include "recipe/schema.h"

/* ---- the recipe a table test edits --------------------------------------- */

/* Where a key of a schema table lives in the test recipe, and its path in
 * messages. */
typedef enum { AT_TOP, AT_DATASET, AT_REWARD, AT_STAGE, AT_LORA } place;

/* A valid recipe with one stage of `type` (NULL: grpo), plus `extra_top`,
 * `extra_ds`, `extra_rw`, `extra_stage` Lua fields at each place. */
static char *recipe_src(const char *type, const char *extra_top, const char *extra_ds, const char *extra_rw,
                        const char *extra_stage) {
    base_buf b = {0};
    /* the extra fields come last: in a Lua table constructor the last of
     * two equal keys wins */
    base_buf_printf(&b,
                    "return {\n"
                    "  model = 'm',\n"
                    "  datasets = { d = { path = 'd.jsonl', %s } },\n"
                    "  rewards = { { script = 'r.lua', %s } },\n"
                    "  stages = { { type = '%s', dataset = 'd', %s } },\n"
                    "  %s\n"
                    "}\n",
                    extra_ds, extra_rw, type ? type : "grpo", extra_stage, extra_top);
    return b.data;
}

static base_status load_at(place at, const char *type, const char *field, recipe **out) {
    char lora[300];
    snprintf(lora, sizeof lora, "lora = { %s },", field); /* AT_LORA: inside the top-level lora table */
    char *src = recipe_src(type, at == AT_TOP ? field : at == AT_LORA ? lora : "", at == AT_DATASET ? field : "",
                           at == AT_REWARD ? field : "", at == AT_STAGE ? field : "");
    base_status s = recipe_load_string(src, "t.lua", NULL, 0, out);
    free(src);
    return s;
}

static void path_of(place at, const char *key, char *buf, size_t n) {
    static const char *const prefix[] = {"", "datasets.d.", "rewards[1].", "stages[1].", "lora."};
    snprintf(buf, n, "%s%s", prefix[at], key);
}

/* The condition of a range as the message must state it, written here
 * independently of schema.c: "in [a, b]", "in (a, b]", ">= a", "> a". */
static void cond_of(const recipe_range *r, char *buf, size_t n) {
    if ((r->flags & RR_MIN) && (r->flags & RR_MAX))
        snprintf(buf, n, "in %s%.15g, %.15g%s", r->flags & RR_MIN_OPEN ? "(" : "[", r->min, r->max,
                 r->flags & RR_MAX_OPEN ? ")" : "]");
    else if (r->flags & RR_MIN)
        snprintf(buf, n, "%s %.15g", r->flags & RR_MIN_OPEN ? ">" : ">=", r->min);
    else
        snprintf(buf, n, "%s %.15g", r->flags & RR_MAX_OPEN ? "<" : "<=", r->max);
}

static int n_outside, n_edge;

/* key = v must fail with exactly "t.lua: PATH = V: must be COND", V
 * reading back as v. */
static void expect_outside(place at, const char *type, const recipe_key *k, double v) {
    char field[200], path[200], cond[128], want_head[300], want_tail[200];
    snprintf(field, sizeof field, "%s = %.17g,", k->key, v);
    path_of(at, k->key, path, sizeof path);
    cond_of(&k->range, cond, sizeof cond);
    recipe *r = NULL;
    if (!load_at(at, type, field, &r)) fail_msg("%s (stage %s): %.17g was accepted", path, type ? type : "-", v);
    const char *m = base_err_msg();
    snprintf(want_head, sizeof want_head, "t.lua: %s = ", path);
    snprintf(want_tail, sizeof want_tail, ": must be %s", cond);
    size_t hl = strlen(want_head), tl = strlen(want_tail), ml = strlen(m);
    if (ml <= hl + tl || strncmp(m, want_head, hl) || strcmp(m + ml - tl, want_tail))
        fail_msg("%s = %.17g: message '%s', want '%sVALUE%s'", path, v, m, want_head, want_tail);
    char *end;
    double shown = strtod(m + hl, &end);
    if (end != m + ml - tl || shown != v) fail_msg("%s = %.17g: the message shows the value as '%s'", path, v, m + hl);
    n_outside++;
}

/* key = v must load and reach the typed config. */
static void expect_edge(place at, const char *type, const recipe_key *k, double v) {
    char field[300];
    snprintf(field, sizeof field, "%s = %.17g,", k->key, v);
    /* the partner of a key that a check between keys ties it to: a grpo
     * stage's generation_batch_size is a multiple of num_generations */
    if (at == AT_STAGE && type && !strcmp(type, "grpo")) {
        size_t l = strlen(field);
        if (!strcmp(k->key, "num_generations"))
            snprintf(field + l, sizeof field - l, " generation_batch_size = %.17g,", v);
        if (!strcmp(k->key, "generation_batch_size")) snprintf(field + l, sizeof field - l, " num_generations = 2,");
    }
    recipe *r = NULL;
    if (load_at(at, type, field, &r)) fail_msg("%s = %.17g (stage %s) was refused: %s", k->key, v, type ? type : "-",
                                               base_err_msg());
    const recipe_cfg *c = recipe_config(r);
    const char *base = at == AT_TOP       ? (const char *)c
                       : at == AT_DATASET ? (const char *)&c->datasets[0]
                       : at == AT_REWARD  ? (const char *)&c->rewards.items[0]
                       : at == AT_LORA    ? (const char *)&c->lora
                                          : (const char *)&c->stages[0];
    double got = k->type == RK_INT ? (double)*(const int64_t *)(base + k->offset) : *(const double *)(base + k->offset);
    if (got != v) fail_msg("%s = %.17g: the typed config holds %.17g", k->key, v, got);
    recipe_free(r);
    n_edge++;
}

static double below(const recipe_key *k, double a) { return k->type == RK_INT ? a - 1 : nextafter(a, -INFINITY); }
static double above(const recipe_key *k, double a) { return k->type == RK_INT ? a + 1 : nextafter(a, INFINITY); }

static void range_cases(place at, const char *type, const recipe_key *tab) {
    for (const recipe_key *k = tab; k->key; k++) {
        if (k->type != RK_NUM && k->type != RK_INT) continue;
        const recipe_range *r = &k->range;
        if (k->type == RK_INT)
            assert_true((r->flags & RR_MIN) && !(r->flags & (RR_MIN_OPEN | RR_MAX_OPEN))); /* integers: [a, b] */
        if (r->flags & RR_MIN) {
            int open = r->flags & RR_MIN_OPEN;
            expect_outside(at, type, k, open ? r->min : below(k, r->min));
            expect_edge(at, type, k, open ? above(k, r->min) : r->min);
        }
        /* lora_dropout's schema range is [0, 1) as PEFT's, but grpo takes only
         * 0 (test_lora_table checks that refusal): no upper edge to accept */
        if ((r->flags & RR_MAX) && !(at == AT_LORA && !strcmp(k->key, "lora_dropout"))) {
            int open = r->flags & RR_MAX_OPEN;
            expect_outside(at, type, k, open ? r->max : above(k, r->max));
            expect_edge(at, type, k, open ? below(k, r->max) : r->max);
        }
        if (!r->flags) { /* any finite number: a non-finite one is refused, naming the key */
            char field[200], want[300];
            snprintf(field, sizeof field, "%s = 1/0,", k->key);
            recipe *x = NULL;
            assert_int_not_equal(load_at(at, type, field, &x), BASE_OK);
            char path[200];
            path_of(at, k->key, path, sizeof path);
            snprintf(want, sizeof want, "t.lua: %s", path);
            const char *m = base_err_msg();
            if (strncmp(m, want, strlen(want)) || !strstr(m, "inf") || !strstr(m, "finite number"))
                fail_msg("%s = 1/0: message '%s'", path, m);
        }
    }
}

static void test_ranges_from_schema(void **state) {
    (void)state;
    range_cases(AT_TOP, NULL, recipe_schema_top());
    range_cases(AT_LORA, NULL, recipe_schema_lora());
    range_cases(AT_DATASET, NULL, recipe_schema_dataset());
    range_cases(AT_REWARD, NULL, recipe_schema_reward());
    for (const char *const *t = recipe_schema_stage_types(); *t; t++) {
        range_cases(AT_STAGE, *t, recipe_schema_stage_common());
        range_cases(AT_STAGE, *t, recipe_schema_stage(*t));
    }
    printf("%d values outside a range refused, %d at an edge accepted\n", n_outside, n_edge);
    assert_true(n_outside > 100 && n_edge == n_outside);
}

/* A value of the wrong type for every key: "t.lua: PATH = VALUE: expected ...". */
static void type_cases(place at, const char *type, const recipe_key *tab) {
    for (const recipe_key *k = tab; k->key; k++) {
        if (!strcmp(k->key, "type")) continue; /* picks the stage's table: test_cross_checks */
        const char *bad = k->type == RK_BOOL ? "1" : k->type == RK_NUM || k->type == RK_INT ? "'x'" : "true";
        const char *shown = k->type == RK_BOOL ? "1" : k->type == RK_NUM || k->type == RK_INT ? "\"x\"" : "true";
        char field[200], path[200], want[400];
        snprintf(field, sizeof field, "%s = %s,", k->key, bad);
        path_of(at, k->key, path, sizeof path);
        snprintf(want, sizeof want, "t.lua: %s = %s: expected ", path, shown);
        recipe *r = NULL;
        if (!load_at(at, type, field, &r)) fail_msg("%s = %s was accepted", path, bad);
        if (strncmp(base_err_msg(), want, strlen(want)))
            fail_msg("%s = %s: message '%s', want '%s...'", path, bad, base_err_msg(), want);
    }
}

static void test_types_from_schema(void **state) {
    (void)state;
    type_cases(AT_TOP, NULL, recipe_schema_top());
    type_cases(AT_LORA, NULL, recipe_schema_lora());
    type_cases(AT_DATASET, NULL, recipe_schema_dataset());
    type_cases(AT_REWARD, NULL, recipe_schema_reward());
    for (const char *const *t = recipe_schema_stage_types(); *t; t++) {
        type_cases(AT_STAGE, *t, recipe_schema_stage_common());
        type_cases(AT_STAGE, *t, recipe_schema_stage(*t));
    }
}

/* ---- the issue's examples, overrides, checks between keys ---------------- */

static void expect_msg(const char *src, const char *const *sets, int n, const char *want) {
    recipe *r = NULL;
    if (!recipe_load_string(src, "recipe.lua", sets, n, &r)) fail_msg("accepted; wanted: %s", want);
    assert_null(r);
    assert_string_equal(base_err_msg(), want);
}

static const char *two_stages =
    "return { model = 'm', datasets = { train = 't.jsonl', test = 'e.jsonl' },\n"
    "  stages = { { type = 'eval', dataset = 'test' },\n"
    "             { type = 'grpo', dataset = 'train', %s } } }\n";

static void expect_grpo(const char *fields, const char *const *sets, int n, const char *want) {
    base_buf b = {0};
    base_buf_printf(&b, two_stages, fields);
    expect_msg(b.data, sets, n, want);
    base_buf_free(&b);
}

static void test_issue_examples(void **state) {
    (void)state;
    expect_grpo("top_p = 2", NULL, 0, "recipe.lua: stages[2].top_p = 2: must be in (0, 1]");
    expect_grpo("top_k = -5", NULL, 0, "recipe.lua: stages[2].top_k = -5: must be in [0, 2147483647]");
    expect_grpo("temperature = 0", NULL, 0, "recipe.lua: stages[2].temperature = 0: must be > 0");
    expect_grpo("num_generations = 1", NULL, 0, "recipe.lua: stages[2].num_generations = 1: must be in [2, 65536]");
    expect_grpo("beta = -0.1", NULL, 0, "recipe.lua: stages[2].beta = -0.1: must be >= 0");
    expect_grpo("learning_rate = -1e-6", NULL, 0, "recipe.lua: stages[2].learning_rate = -1e-06: must be >= 0");
    expect_grpo("max_completion_length = 100000000", NULL, 0,
                "recipe.lua: stages[2].max_completion_length = 100000000: must be in [1, 1048576]");
    const char *mem[] = {"reward_memory_mb=0"};
    expect_grpo("", mem, 1, "recipe.lua: reward_memory_mb = 0: must be in [16, 65536] (--set reward_memory_mb=0)");
    const char *workers[] = {"reward_workers=1000000"};
    expect_grpo("", workers, 1,
                "recipe.lua: reward_workers = 1000000: must be in [0, 256] (--set reward_workers=1000000)");
    /* an eval stage may sample greedily */
    recipe *r = NULL;
    const char *greedy[] = {"stages.eval.temperature=0"};
    base_buf b = {0};
    base_buf_printf(&b, two_stages, "");
    assert_int_equal(recipe_load_string(b.data, "recipe.lua", greedy, 1, &r), BASE_OK);
    assert_true(recipe_config(r)->stages[0].eval.gen.temperature == 0);
    recipe_free(r);
    base_buf_free(&b);
}

static void test_override_origin(void **state) {
    (void)state;
    /* by name and by index; the last override of a key is the one named */
    const char *by_name[] = {"stages.grpo.top_p=2"};
    expect_grpo("", by_name, 1, "recipe.lua: stages[2].top_p = 2: must be in (0, 1] (--set stages.grpo.top_p=2)");
    const char *twice[] = {"stages.2.top_p=3", "stages.grpo.top_p=1.5"};
    expect_grpo("", twice, 2, "recipe.lua: stages[2].top_p = 1.5: must be in (0, 1] (--set stages.grpo.top_p=1.5)");
    /* a value in the file is not blamed on an override of another key */
    const char *other[] = {"stages.grpo.top_p=0.5"};
    expect_grpo("top_k = -1", other, 1, "recipe.lua: stages[2].top_k = -1: must be in [0, 2147483647]");
    /* an override that a command made of its option is named by the option */
    base_buf b = {0};
    base_buf_printf(&b, two_stages, "");
    recipe_set flag[] = {{"stages.2.top_p=2", "--top-p 2"}};
    recipe *r = NULL;
    assert_int_not_equal(recipe_load_string_sets(b.data, "(grpo eval)", flag, 1, &r), BASE_OK);
    assert_string_equal(base_err_msg(), "--top-p 2: must be in (0, 1]");
    /* an unknown key from an override */
    const char *typo[] = {"stages.grpo.top_pp=0.5"};
    expect_msg(b.data, typo, 1,
               "recipe.lua: unknown key 'stages[2].top_pp' (did you mean 'top_p'?) (--set stages.grpo.top_pp=0.5)");
    /* a string given for a list, then checked item by item */
    const char *stop[] = {"stages.grpo.stop=5"};
    expect_msg(b.data, stop, 1,
               "recipe.lua: stages[2].stop = 5: expected a string or a list of strings (--set stages.grpo.stop=5)");
    base_buf_free(&b);
}

static void test_cross_checks(void **state) {
    (void)state;
    expect_grpo("num_generations = 8, generation_batch_size = 60", NULL, 0,
                "recipe.lua: stages[2].generation_batch_size = 60: must be a multiple of num_generations (8): "
                "whole groups per step");
    expect_grpo("entropy_coef_min = 0.5, entropy_coef_max = 0.1", NULL, 0,
                "recipe.lua: stages[2].entropy_coef_min = 0.5: must be <= entropy_coef_max (0.1)");
    expect_grpo("importance_sampling_clip_min = 4", NULL, 0,
                "recipe.lua: stages[2].importance_sampling_clip_min = 4: must be <= importance_sampling_clip_max (3)");
    expect_grpo("loss_type = 'cispo', epsilon_high = 0", NULL, 0,
                "recipe.lua: stages[2].epsilon_high = 0: must be > 0 with loss_type cispo (it caps the ratio at "
                "1 + epsilon_high; ScaleRL: 5.0)");
    expect_grpo("type = 'sft', max_steps = 0", NULL, 0,
                "recipe.lua: stages[2].max_steps = 0: must be -1 (from num_train_epochs) or >= 1");
    expect_grpo("dataset = 'nope'", NULL, 0,
                "recipe.lua: stages[2].dataset[1] = \"nope\": no dataset named 'nope' (datasets: test, train)");
    expect_grpo("name = 'eval'", NULL, 0,
                "recipe.lua: stages[2].name = \"eval\": two stages are named 'eval' (stages[1] too)");
    expect_grpo("type = 'rl'", NULL, 0,
                "recipe.lua: stages[2].type = \"rl\": must be one of sft|grpo|sample|eval (did you mean 'grpo'?)");
    expect_grpo("dataset = {}", NULL, 0, "recipe.lua: stages[2].dataset = {...}: must name at least one dataset");
    const char *names[] = {"''", "'../x'", "'a/b'", "'..'", "'a\\nb'"};
    for (int i = 0; i < 5; i++) {
        char field[64];
        snprintf(field, sizeof field, "name = %s", names[i]);
        base_buf b = {0};
        base_buf_printf(&b, two_stages, field);
        recipe *r = NULL;
        assert_int_not_equal(recipe_load_string(b.data, "recipe.lua", NULL, 0, &r), BASE_OK);
        assert_non_null(strstr(base_err_msg(), "recipe.lua: stages[2].name = "));
        assert_non_null(strstr(base_err_msg(), "(it names files in the run directory)"));
        base_buf_free(&b);
    }
    /* "stage:NAME" datasets: a sample stage that runs before the reader */
    const char *produced =
        "return { model = 'm', datasets = { p = 'p.jsonl', kept = 'stage:%s' },\n"
        "  stages = { { type = 'sft', dataset = '%s' }, { type = 'sample', dataset = 'p' },\n"
        "             { type = 'sft', name = 'sft2', dataset = 'kept' } } }\n";
    base_buf b = {0};
    base_buf_printf(&b, produced, "sft2", "p");
    expect_msg(b.data, NULL, 0,
               "recipe.lua: datasets.kept.path = \"stage:sft2\": names a stage that is not a sample stage");
    b.len = 0;
    base_buf_printf(&b, produced, "nope", "p");
    expect_msg(b.data, NULL, 0,
               "recipe.lua: datasets.kept.path = \"stage:nope\": no stage of this recipe has that name");
    b.len = 0;
    base_buf_printf(&b, produced, "sample", "kept");
    expect_msg(b.data, NULL, 0,
               "recipe.lua: stages[1].dataset[1] = \"kept\": dataset 'kept' is the output of stage 'sample' "
               "(stages[2]), which does not run before this one");
    b.len = 0;
    base_buf_printf(&b, produced, "sample", "p");
    recipe *r = NULL;
    assert_int_equal(recipe_load_string(b.data, "recipe.lua", NULL, 0, &r), BASE_OK);
    const recipe_cfg *c = recipe_config(r);
    assert_ptr_equal(c->stages[2].datasets[0]->producer, &c->stages[1]);
    recipe_free(r);
    base_buf_free(&b);
}

/* config.resolved.lua holds every value exactly, -0.0 too (Lua reads "-0"
 * as the integer 0). */
/* The lora table: defaults, the names as the model takes them, overrides
 * that create it, and what does not go with it. */
static void test_lora_table(void **state) {
    (void)state;
    const char *src = "return { model = 'm', datasets = { train = 't.jsonl' },\n"
                      "  stages = { { type = 'grpo', dataset = 'train' } }, %s }\n";
    base_buf b = {0};
    base_buf_printf(&b, src, "");
    recipe *r = NULL;
    assert_int_equal(recipe_load_string(b.data, "recipe.lua", NULL, 0, &r), BASE_OK);
    assert_int_equal(recipe_config(r)->lora.set, 0); /* no table: full fine-tuning */
    recipe_free(r);
    /* --set creates the table, the other keys take their defaults */
    const char *sets[] = {"lora.r=16", "lora.lora_alpha=32", "lora.target_modules=[\"q_a_proj\",\"kv_a_proj_with_mqa\"]"};
    assert_int_equal(recipe_load_string(b.data, "recipe.lua", sets, 3, &r), BASE_OK);
    const recipe_lora_cfg *lo = &recipe_config(r)->lora;
    assert_int_equal(lo->set, 1);
    assert_int_equal(lo->model.r, 16);
    assert_true(lo->model.lora_alpha == 32);
    assert_int_equal(lo->model.targets, 1u << MODEL_LORA_Q_A_PROJ | 1u << MODEL_LORA_KV_A_PROJ);
    assert_int_equal(lo->model.routed_experts, 0);
    char *lua = recipe_to_lua(r);
    assert_non_null(strstr(lua, "lora = {"));
    free(lua);
    recipe_free(r);
    /* lora = {} : every default, all-linear */
    base_buf_free(&b);
    base_buf_printf(&b, src, "lora = {},");
    assert_int_equal(recipe_load_string(b.data, "recipe.lua", NULL, 0, &r), BASE_OK);
    lo = &recipe_config(r)->lora;
    assert_int_equal(lo->set, 1);
    assert_int_equal(lo->model.r, 8);
    assert_int_equal(lo->model.targets, (1u << MODEL_LORA_NTARGETS) - 1);
    recipe_free(r);
    base_buf_free(&b);
    struct {
        const char *fields, *want, *also;
    } bad[] = {
        {"lora = { target_modules = {'q_a_proj', 'k_proj'} },",
         "recipe.lua: lora.target_modules[2] = \"k_proj\": must be one of " MODEL_LORA_TARGET_NAMES "|all-linear", NULL},
        {"lora = { target_modules = {} },", "recipe.lua: lora.target_modules = {...}: must name at least one module", NULL},
        {"lora = { lora_dropout = 0.05 },", "recipe.lua: lora.lora_dropout = 0.05: only 0 is supported", NULL},
        {"lora = { r = 0 },", "recipe.lua: lora.r = 0: must be in [1, 4096]", NULL},
        {"lora = { rank = 8 },", "recipe.lua: unknown key 'lora.rank'", NULL},
        {"lora = 8,", "recipe.lua: lora = 8: expected a table", NULL},
        {"lora = {}, ref_model = 'ref',", "recipe.lua: ref_model = \"/", "ref\": not with lora: the reference is the base"},
        {"lora = {}, init_std = 0.02,", "recipe.lua: init_std = 0.02: not with lora", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        base_buf_printf(&b, src, bad[i].fields);
        assert_int_not_equal(recipe_load_string(b.data, "recipe.lua", NULL, 0, &r), BASE_OK);
        if (strncmp(base_err_msg(), bad[i].want, strlen(bad[i].want)) || (bad[i].also && !strstr(base_err_msg(), bad[i].also)))
            fail_msg("%s: '%s', want '%s...'", bad[i].fields, base_err_msg(), bad[i].want);
        base_buf_free(&b);
    }
    const char *src2 = "return { model = 'm', datasets = { train = 't.jsonl' }, lora = {},\n"
                       "  stages = { { type = 'grpo', dataset = 'train', %s } } }\n";
    base_buf_printf(&b, src2, "sync_ref_model = true");
    assert_int_not_equal(recipe_load_string(b.data, "recipe.lua", NULL, 0, &r), BASE_OK);
    assert_non_null(strstr(base_err_msg(), "stages[1].sync_ref_model = true: not with lora"));
    base_buf_free(&b);
    base_buf_printf(&b, src2, "init_from = 'model'");
    assert_int_not_equal(recipe_load_string(b.data, "recipe.lua", NULL, 0, &r), BASE_OK);
    assert_non_null(strstr(base_err_msg(), "stages[1].init_from = \"model\": not with lora"));
    base_buf_free(&b);
}

static void test_resolved_negative_zero(void **state) {
    (void)state;
    recipe *r = NULL, *again = NULL;
    char *src = recipe_src(NULL, "", "limit = -0.0,", "weight = -0.0,", "beta = -0.0,");
    assert_int_equal(recipe_load_string(src, "t.lua", NULL, 0, &r), BASE_OK);
    char *lua = recipe_to_lua(r);
    assert_int_equal(recipe_load_string(lua, "t.lua", NULL, 0, &again), BASE_OK);
    assert_true(signbit(recipe_config(again)->rewards.items[0].weight));
    assert_true(signbit(recipe_config(again)->stages[0].grpo.beta));
    char *a = cJSON_PrintUnformatted(recipe_root(r)), *b = cJSON_PrintUnformatted(recipe_root(again));
    assert_string_equal(a, b);
    cJSON_free(a), cJSON_free(b);
    free(lua), free(src);
    recipe_free(again);
    recipe_free(r);
}

static void test_check_number(void **state) {
    (void)state;
    assert_int_equal(recipe_check_number("eval", "top_p", 1.0, "--top-p 1"), BASE_OK);
    assert_int_equal(recipe_check_number("eval", "top_p", 0.0, "--top-p 0"), BASE_ERR_INVALID);
    assert_string_equal(base_err_msg(), "--top-p 0: must be in (0, 1]");
    assert_int_equal(recipe_check_number("eval", "temperature", 0.0, "--temperature 0"), BASE_OK);
    assert_int_equal(recipe_check_number("grpo", "temperature", 0.0, "x"), BASE_ERR_INVALID);
    assert_int_equal(recipe_check_number("eval", "top_k", 2.5, "--top-k 2.5"), BASE_ERR_INVALID);
    assert_string_equal(base_err_msg(), "--top-k 2.5: expected an integer");
    char buf[64];
    const recipe_key *k = recipe_schema_stage("grpo");
    while (strcmp(k->key, "top_p")) k++;
    assert_string_equal(recipe_range_text(k, buf, sizeof buf), "in (0, 1]");
}

/* ---- on the command line ---------------------------------------------------- */

static char *g_dir;

static int setup(void **state) {
    (void)state;
    g_dir = test_tmpdir();
    char *m = base_path_join(g_dir, "m");
    if (base_mkdir_p(m)) fail_msg("%s", base_err_msg());
    test_tiny_model(m, 1);
    free(m);
    char *p = base_path_join(g_dir, "p.jsonl");
    const char *rows = "{\"prompt\": \"What is 2+2?\", \"answer\": \"4\"}\n"
                       "{\"prompt\": \"What is 3+5?\", \"answer\": \"8\"}\n";
    test_write_file(p, rows, strlen(rows));
    free(p);
    p = base_path_join(g_dir, "parity.lua");
    const char *lua = "return { score = function(s) return #s.completion % 2 end }\n";
    test_write_file(p, lua, strlen(lua));
    free(p);
    /* a small valid recipe: one eval and one grpo step on the tiny model */
    base_buf b = {0};
    base_buf_printf(&b,
                    "return { model = 'm', output_dir = '%s/runs', name = 'cli', report = false, template = 'raw',\n"
                    "  datasets = { p = 'p.jsonl' }, rewards = { 'parity.lua' },\n"
                    "  stages = { { type = 'eval', dataset = 'p', num_generations = 1, limit = 1,\n"
                    "               max_completion_length = 2 },\n"
                    "             { type = 'grpo', dataset = 'p', num_generations = 2, generation_batch_size = 2,\n"
                    "               max_steps = 1, max_completion_length = 2 } } }\n",
                    g_dir);
    p = base_path_join(g_dir, "recipe.lua");
    test_write_file(p, b.data, b.len);
    free(p);
    base_buf_free(&b);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_rmdir(g_dir);
    free(g_dir);
    return 0;
}

/* grpo ARGS (%s: the fixture directory) exits want_rc with want in its
 * output and no "fatal:" line. */
static void cli(int want_rc, const char *args, const char *want) {
    base_buf a = {0};
    base_buf_printf(&a, args, g_dir, g_dir, g_dir, g_dir);
    char *out;
    int rc = test_run_grpo(a.data, &out);
    if (rc != want_rc || !strstr(out, want) || strstr(out, "fatal:"))
        fail_msg("grpo %s: exit %d (want %d), output:\n%s\n(wanted '%s' and no 'fatal:')", a.data, rc, want_rc, out,
                 want);
    free(out);
    base_buf_free(&a);
}

static void test_cli(void **state) {
    (void)state;
    cli(1, "run %s/recipe.lua --overwrite --quiet --set stages.grpo.top_p=2",
        "recipe.lua: stages[2].top_p = 2: must be in (0, 1] (--set stages.grpo.top_p=2)");
    cli(1, "run %s/recipe.lua --overwrite --quiet --set stages.2.top_k=-5",
        "recipe.lua: stages[2].top_k = -5: must be in [0, 2147483647] (--set stages.2.top_k=-5)");
    cli(1, "run %s/recipe.lua --overwrite --quiet --set reward_memory_mb=0",
        "recipe.lua: reward_memory_mb = 0: must be in [16, 65536] (--set reward_memory_mb=0)");
    cli(1, "run %s/recipe.lua --overwrite --quiet --set reward_workers=1000000",
        "recipe.lua: reward_workers = 1000000: must be in [0, 256]");
    cli(2, "run %s/recipe.lua --max-total-steps -1", "grpo run: --max-total-steps -1: must be an integer >= 0");
    cli(2, "score --rewards %s/parity.lua --in %s/p.jsonl --out %s/o.jsonl --workers -1",
        "grpo score: --workers -1: must be an integer in [0, 256] (0: all cores)");
    cli(2, "score --rewards %s/parity.lua --in %s/p.jsonl --out %s/o.jsonl --workers 1000000",
        "grpo score: --workers 1000000: must be an integer in [0, 256] (0: all cores)");
    cli(2, "score --rewards %s/parity.lua --in %s/p.jsonl --out %s/o.jsonl --memory-mb 0",
        "grpo score: --memory-mb 0: must be an integer in [16, 65536]");
    cli(2, "eval --model %s/m --in %s/p.jsonl --rewards %s/parity.lua --top-k -5 --quiet",
        "grpo eval: --top-k -5: must be in [0, 2147483647]");
    cli(2, "sample --model %s/m --in %s/p.jsonl --rewards %s/parity.lua --out %s/o.jsonl --top-p 2 --quiet",
        "grpo sample: --top-p 2: must be in (0, 1]");
    cli(2, "sft --model %s/m --in %s/p.jsonl --out %s/o --lr -1 --quiet", "grpo sft: --lr -1: must be >= 0");
    cli(2, "generate --model %s/m --in %s/p.jsonl --top-p 0", "grpo generate: --top-p 0: must be in (0, 1]");
    /* the recipe itself with the values of the issue */
    char *p = base_path_join(g_dir, "recipe.lua"), *src, *q = base_path_join(g_dir, "bad.lua");
    size_t n;
    assert_int_equal(base_read_file(p, &src, &n), BASE_OK);
    char *at = strstr(src, "max_steps = 1");
    assert_non_null(at);
    base_buf b = {0};
    base_buf_append(&b, src, (size_t)(at - src));
    base_buf_puts(&b, "top_p = 2, ");
    base_buf_puts(&b, at);
    test_write_file(q, b.data, b.len);
    cli(1, "run %s/bad.lua --overwrite --quiet", "bad.lua: stages[2].top_p = 2: must be in (0, 1]");
    /* and the valid recipe runs */
    cli(0, "run %s/recipe.lua --overwrite --quiet", "");
    base_buf_free(&b);
    free(src), free(p), free(q);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranges_from_schema), cmocka_unit_test(test_types_from_schema),
        cmocka_unit_test(test_issue_examples),     cmocka_unit_test(test_override_origin),
        cmocka_unit_test(test_cross_checks),       cmocka_unit_test(test_check_number),
        cmocka_unit_test(test_resolved_negative_zero), cmocka_unit_test(test_lora_table),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
