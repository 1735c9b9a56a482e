/* Tests of src/recipe: Lua recipes, overrides, validation, defaults,
 * suggestions for unknown keys, the resolved Lua round trip, and the
 * sandbox a recipe's Lua runs in (limits, library). */
#include "common/test_common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recipe/recipe.h"
#include "recipe/schema.h"

static const char *base_recipe =
    "local G = 4\n"
    "return {\n"
    "  model = 'data/tiny/base',\n"
    "  datasets = { train = 'train.jsonl', test = { path = 'test.jsonl', limit = 50 } },\n"
    "  rewards = { { script = 'rewards/boxed_math.lua', weight = 1.0 }, 'rewards/think_format.lua:0.2' },\n"
    "  stages = {\n"
    "    { type = 'eval', dataset = 'test' },\n"
    "    { type = 'grpo', dataset = 'train', num_generations = G, generation_batch_size = 4 * G,\n"
    "      learning_rate = 1e-4, stop = '</answer>' },\n"
    "    { type = 'eval', dataset = 'test', temperature = 0.0 },\n"
    "  },\n"
    "}\n";

/* rel against the current directory: recipe_load_string's chunk "t.lua"
 * is there, and overrides are taken there too */
static char *cwd_path(const char *rel) {
    char *cwd = getcwd(NULL, 0);
    assert_non_null(cwd);
    char *p = base_path_join(cwd, rel);
    free(cwd);
    return p;
}

static recipe *load_ok(const char *src, const char *const *sets, int n) {
    recipe *r = NULL;
    base_status s = recipe_load_string(src, "t.lua", sets, n, &r);
    if (s) fail_msg("unexpected error: %s", base_err_msg());
    return r;
}

static void expect_err(const char *src, const char *const *sets, int n, const char *needle) {
    recipe *r = NULL;
    base_status s = recipe_load_string(src, "t.lua", sets, n, &r);
    if (!s) fail_msg("expected an error containing '%s'", needle);
    if (!strstr(base_err_msg(), needle)) fail_msg("message '%s' lacks '%s'", base_err_msg(), needle);
    assert_null(r);
}

static void test_defaults_and_names(void **state) {
    (void)state;
    recipe *r = load_ok(base_recipe, NULL, 0);
    const recipe_cfg *c = recipe_config(r);
    assert_string_equal(c->name, "t");
    assert_int_equal(c->seed, 42);
    assert_string_equal(c->template_name, "r1-zero");
    assert_true(isnan(c->init_std)); /* null: load the model's weights */
    assert_null(c->tokenizer);
    assert_int_equal(c->reward_memory_mb, 64);
    assert_int_equal(c->n_stages, 3);
    assert_string_equal(c->stages[0].name, "eval");
    assert_int_equal(c->stages[0].type, RECIPE_STAGE_EVAL);
    assert_string_equal(c->stages[2].name, "eval_2");
    assert_true(c->stages[2].eval.gen.temperature == 0.0); /* greedy */
    const recipe_stage_cfg *st = recipe_stage_by_name(c, "grpo");
    assert_non_null(st);
    assert_ptr_equal(st, &c->stages[1]);
    const recipe_grpo_cfg *g = &st->grpo;
    assert_int_equal(g->gen.num_generations, 4);
    assert_int_equal(g->generation_batch_size, 16);
    assert_true(g->train.learning_rate == 1e-4 && g->train.optim.learning_rate == 1e-4);
    assert_true(g->epsilon == 0.2 && g->loss.epsilon == 0.2);
    assert_true(isnan(g->epsilon_high) && g->loss.epsilon_high < 0); /* null: epsilon */
    assert_string_equal(g->loss_type, "grpo");
    assert_int_equal(g->loss.loss_type, GRPO_LOSS_GRPO);
    assert_null(st->template_name); /* null: the recipe's */
    /* a single string became a one-element list */
    assert_int_equal(g->gen.stop.n, 1);
    assert_string_equal(g->gen.stop.items[0], "</answer>");
    /* dataset path string became a table with defaults */
    const recipe_dataset *train = recipe_dataset_by_name(c, "train");
    assert_non_null(train);
    char *want = cwd_path("train.jsonl"); /* paths are absolute once loaded */
    assert_string_equal(train->path, want);
    free(want);
    assert_string_equal(train->prompt_column, "prompt");
    assert_int_equal(train->limit, 0);
    assert_ptr_equal(st->datasets[0], train);
    assert_int_equal(recipe_dataset_by_name(c, "test")->limit, 50);
    /* "script:weight" reward strings; stages without rewards use the recipe's */
    assert_int_equal(c->rewards.n, 2);
    want = cwd_path("rewards/think_format.lua");
    assert_string_equal(c->rewards.items[1].script, want);
    free(want);
    assert_true(c->rewards.items[1].weight == 0.2);
    assert_ptr_equal(st->rewards.items, c->rewards.items);
    assert_null(st->own_rewards.items);
    recipe_free(r);
}

static void test_overrides(void **state) {
    (void)state;
    const char *sets[] = {"stages.grpo.beta=0.01", "stages.3.temperature=0.5", "seed=7",
                          "model=other/dir", "stages.grpo.stop=[\"a\",\"b\"]",
                          "datasets.test.limit=5"};
    recipe *r = load_ok(base_recipe, sets, 6);
    const recipe_cfg *c = recipe_config(r);
    const recipe_grpo_cfg *g = &recipe_stage_by_name(c, "grpo")->grpo;
    assert_true(g->beta == 0.01 && g->loss.beta == 0.01);
    assert_true(c->stages[2].eval.gen.temperature == 0.5);
    assert_int_equal(c->seed, 7);
    char *want = cwd_path("other/dir");
    assert_string_equal(c->model, want);
    free(want);
    assert_int_equal(g->gen.stop.n, 2);
    assert_int_equal(recipe_dataset_by_name(c, "test")->limit, 5);
    recipe_free(r);
    const char *bad1[] = {"stages.grpo.learnig_rate=1"};
    expect_err(base_recipe, bad1, 1, "did you mean 'learning_rate'");
    const char *bad2[] = {"stages.nope.beta=1"};
    expect_err(base_recipe, bad2, 1, "no list item named or numbered 'nope'");
    const char *bad3[] = {"seed"};
    expect_err(base_recipe, bad3, 1, "expected key.path=value");
    const char *bad4[] = {"stages.grpo.loss_type=foo"};
    expect_err(base_recipe, bad4, 1,
               "t.lua: stages[2].loss_type = \"foo\": must be one of grpo|bnpo|dr_grpo|dapo|cispo|sapo|luspo|vespo "
               "(--set stages.grpo.loss_type=foo)");
}

static void test_validation_errors(void **state) {
    (void)state;
    expect_err("return { datasets = {}, stages = {} }", NULL, 0, "missing required key 'model'");
    expect_err("return { model = 'm', datsets = {} }", NULL, 0, "did you mean 'datasets'");
    expect_err("return { model = 'm', datasets = { a = 'x' }, stages = { { type = 'grpo', dataset = 'b' } } }",
               NULL, 0, "no dataset named 'b'");
    expect_err("return { model = 'm', datasets = { a = 'x' }, stages = { { type = 'rl', dataset = 'a' } } }",
               NULL, 0, "t.lua: stages[1].type = \"rl\": must be one of sft|grpo|sample|eval");
    expect_err("return { model = 'm', datasets = { a = 'x' }, stages = { { type = 'grpo', dataset = 'a', "
               "num_generations = 2.5 } } }",
               NULL, 0, "t.lua: stages[1].num_generations = 2.5: expected an integer");
    expect_err("return { model = 'm', datasets = { a = 'x' }, stages = { { type = 'grpo', dataset = 'a', "
               "max_steps = 'ten' } } }",
               NULL, 0, "expected an integer");
    expect_err("return { model = 'm', datasets = { a = 'x' }, stages = { { type = 'sft', dataset = 'a', "
               "beta = 0.1 } } }",
               NULL, 0, "unknown key 'stages[1].beta'");
    expect_err("return 5", NULL, 0, "must return a table");
    expect_err("return { model == 4 }", NULL, 0, "t.lua: a recipe must return a table of named values");
    expect_err("return {}", NULL, 0, "missing required key 'model'");
    expect_err("return { model = print }", NULL, 0, "got function");
    expect_err("return { model = 'm', { 1 }, x = 2 }", NULL, 0, "mixes list items");
    expect_err("error('boom')", NULL, 0, "boom");
    expect_err("return {", NULL, 0, "t.lua");
    expect_err("return { model = 'm', datasets = { a = 'x' }, stages = { { type = 'eval', dataset = 'a', "
               "name = 'x' }, { type = 'eval', dataset = 'a', name = 'x' } } }",
               NULL, 0, "two stages are named 'x'");
    /* ZeRO: stages 0 to 3; others refused naming the key */
    const int bad_zero[] = {-1, 4};
    for (int i = 0; i < 2; i++) {
        char src[160], want[64];
        snprintf(src, sizeof src,
                 "return { model = 'm', datasets = { a = 'x' }, stages = { { type = 'sft', dataset = 'a', "
                 "zero_stage = %d } } }",
                 bad_zero[i]);
        snprintf(want, sizeof want, "t.lua: stages[1].zero_stage = %d: must be in [0, 3]", bad_zero[i]);
        expect_err(src, NULL, 0, want);
    }
    for (int z = 1; z <= 3; z++) {
        char src[160];
        snprintf(src, sizeof src,
                 "return { model = 'm', datasets = { a = 'x' }, stages = { { type = 'grpo', dataset = 'a', "
                 "zero_stage = %d } } }",
                 z);
        recipe *r = load_ok(src, NULL, 0);
        assert_int_equal(recipe_config(r)->stages[0].grpo.train.zero_stage, z);
        recipe_free(r);
    }
}

static void test_resolved_round_trip(void **state) {
    (void)state;
    const char *sets[] = {"stages.grpo.beta=0.01", "name=weird \"name\"\n"};
    recipe *r = load_ok(base_recipe, sets, 2);
    char *lua = recipe_to_lua(r);
    recipe *r2 = load_ok(lua, NULL, 0);
    char *a = cJSON_PrintUnformatted(recipe_root(r)), *b = cJSON_PrintUnformatted(recipe_root(r2));
    assert_string_equal(a, b);
    free(a), free(b), free(lua);
    char *dir = test_tmpdir();
    char *p = base_path_join(dir, "config.resolved.lua");
    assert_int_equal(recipe_write_resolved(r, p), BASE_OK);
    recipe *r3 = NULL;
    assert_int_equal(recipe_load(p, NULL, 0, &r3), BASE_OK);
    assert_string_equal(recipe_config(r3)->name, "weird \"name\"\n");
    recipe_free(r3);
    test_rmdir(dir);
    free(p), free(dir);
    recipe_free(r);
    recipe_free(r2);
}

/* A recipe is configuration (issue 12): its Lua runs with an instruction
 * budget, a memory cap and no process or file-writing functions; each ends
 * with an error naming the file and line, quickly. */
static void expect_quick_err(const char *src, const char *needle) {
    double t0 = base_now();
    expect_err(src, NULL, 0, needle);
    double dt = base_now() - t0;
    if (dt > 20) fail_msg("'%s' took %.1f s", needle, dt);
}

static void test_sandbox_limits(void **state) {
    (void)state;
    expect_quick_err("while true do end", "t.lua:1: instruction budget exceeded (10000000 instructions)");
    expect_quick_err("local function f()\n  local x = 0\n  while true do x = x + 1 end\nend\nf()",
                     "t.lua:3: instruction budget exceeded");
    /* pcall cannot swallow the kill */
    expect_quick_err("pcall(function() while true do end end)\nreturn { model = 'm' }", "instruction budget exceeded");
    expect_quick_err("local t = {}\nfor i = 1, 1e9 do t[i] = ('x'):rep(64) .. i end", "memory cap exceeded (32 MiB)");
    expect_quick_err("local t = {}\nfor i = 1, 1e9 do t[i] = ('x'):rep(64) .. i end", "t.lua:2: memory cap");
    expect_quick_err("local s = string.rep('x', 1 << 30)", "t.lua: memory cap exceeded");
    /* the converted tree is bounded: shared sub-tables and strings */
    expect_quick_err("local t = {1}\nfor i = 1, 25 do t = {t, t} end\nreturn { model = 'm', x = t }",
                     "more than 1000000 values");
    expect_quick_err("local t = {1}\nfor i = 1, 40 do t = {t, t} end\nreturn { model = 'm', x = t }",
                     "tables nested too deeply");
    expect_quick_err("local s, t = ('x'):rep(1 << 20), {}\nfor i = 1, 100 do t[i] = s end\n"
                     "return { model = 'm', x = t }",
                     "MiB of text");
    expect_err("error({})", NULL, 0, "t.lua: error object is a table value");
    expect_err("return { model = 'm', x = { 1, 0/0 } }", NULL, 0, "t.lua: x[2]: nan is not a finite number");
    expect_err("return { model = 'm', x = math.huge }", NULL, 0, "t.lua: x: inf is not a finite number");
}

static void test_sandbox_library(void **state) {
    (void)state;
    char *dir = test_tmpdir();
    char *victim = base_path_join(dir, "victim"), *made = base_path_join(dir, "made");
    test_write_file(victim, "data\n", 5);
    const char *calls[][2] = {
        {"os.execute('touch %s')", "os.execute is not available in recipes"},
        {"io.popen('touch %s')", "io.popen is not available in recipes"},
        {"io.open('%s', 'w')", "io.open: only read modes are allowed in recipes (got 'w')"},
        {"io.open('%s', 'a+')", "only read modes"},
        {"io.open('%s', 'r+')", "only read modes"},
        {"io.output('%s')", "io.output is not available"},
        {"os.remove('%s')", "os.remove is not available"},
        {"os.rename('%s', '%s.x')", "os.rename is not available"},
        {"os.exit(0, '%s')", "os.exit is not available"},
        {"dofile('%s')", "dofile is not available"},
        {"loadfile('%s')", "loadfile is not available"},
        {"package.loadlib('%s', 'f')", "global 'package'"},
        {"debug.sethook(print, '%s')", "global 'debug'"},
        {"grpo.run_tests('%s')", "global 'grpo'"},
        {"require('grpo') -- %s", "module 'grpo' not found"},
        {"io.open('/dev/stdin') -- %s", "io.open: '/dev/stdin' is not a regular file"},
        {"io.lines('/dev/zero') -- %s", "io.lines: '/dev/zero' is not a regular file"},
        {"io.open('/tmp') -- %s", "io.open: '/tmp' is not a regular file"},
    };
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        const char *target = i == 6 || i == 7 ? victim : made;
        base_buf src = {0};
        base_buf_puts(&src, "local x = 1\n");
        base_buf_printf(&src, calls[i][0], target, target);
        base_buf_puts(&src, "\nreturn { model = 'm' }\n");
        expect_err(src.data, NULL, 0, calls[i][1]);
        if (i < 12) assert_non_null(strstr(base_err_msg(), "t.lua:2:"));
        base_buf_free(&src);
        assert_false(base_file_exists(made));
    }
    char *text;
    size_t n;
    assert_int_equal(base_read_file(victim, &text, &n), BASE_OK);
    assert_string_equal(text, "data\n");
    free(text);
    /* what configuration may do: read files, the environment, modules next
     * to the recipe, global helpers */
    char *helper = base_path_join(dir, "paths.lua"), *rp = base_path_join(dir, "r.lua");
    const char *h = "return { model = function(n) return 'models/' .. n end }\n";
    test_write_file(helper, h, strlen(h));
    base_buf src = {0};
    base_buf_printf(&src,
                    "local paths = require('paths')\n"
                    "function steps(n) return n * 2 end\n"
                    "local f = io.open('%s', 'r')\n"
                    "local line = f:read('l')\n"
                    "f:close()\n"
                    "local home = os.getenv('PATH') and 'env' or 'noenv'\n"
                    "return { model = paths.model(line), name = home, datasets = { a = 'x' },\n"
                    "  stages = { { type = 'grpo', dataset = 'a', max_steps = steps(5) } } }\n",
                    victim);
    test_write_file(rp, src.data, src.len);
    recipe *r = NULL;
    if (recipe_load(rp, NULL, 0, &r)) fail_msg("%s", base_err_msg());
    char *want = base_path_join(dir, "models/data"); /* against the recipe's directory */
    assert_string_equal(recipe_config(r)->model, want);
    free(want);
    assert_string_equal(recipe_config(r)->name, "env");
    assert_int_equal(recipe_config(r)->stages[0].grpo.max_steps, 10);
    recipe_free(r);
    base_buf_free(&src);
    test_rmdir(dir);
    free(dir), free(victim), free(made), free(helper), free(rp);
}


/* Paths (issue 13): every file and directory key is absolute once loaded;
 * a relative one named in a recipe file is taken against that file's
 * directory, one from an override or a default against the current
 * directory; "stage:NAME", init_from "model" and built-in reward names
 * stay; "NAME/.." folds only where NAME is a directory, not a link. */
static void test_paths(void **state) {
    (void)state;
    char *dir = test_tmpdir(), *sub = base_path_join(dir, "sub"), *x = base_path_join(dir, "sub/x");
    char *link = base_path_join(dir, "sub/link"), *rp = base_path_join(dir, "sub/r.lua");
    if (base_mkdir_p(x)) fail_msg("%s", base_err_msg());
    assert_int_equal(symlink("/tmp", link), 0);
    const char *src =
        "return { model = '../m', tokenizer = './x/../tok', output_dir = 'out', ref_model = 'link/../ref',\n"
        "  datasets = { a = 'a.jsonl', s = 'stage:smp', b = { path = '/abs/b.jsonl' } },\n"
        "  rewards = { 'think_format:0.5', { script = '../rw/my.lua' } },\n"
        "  stages = { { type = 'sample', name = 'smp', dataset = 'a', output = 'o.jsonl' },\n"
        "             { type = 'sft', dataset = 's', init_from = 'model' } } }\n";
    test_write_file(rp, src, strlen(src));
    recipe *r = NULL;
    if (recipe_load(rp, NULL, 0, &r)) fail_msg("%s", base_err_msg());
    const recipe_cfg *c = recipe_config(r);
    char want[600];
    snprintf(want, sizeof want, "%s/m", dir);
    assert_string_equal(c->model, want);
    snprintf(want, sizeof want, "%s/sub/tok", dir); /* x is a directory: x/.. folds */
    assert_string_equal(c->tokenizer, want);
    snprintf(want, sizeof want, "%s/sub/link/../ref", dir); /* after a link, ".." is the kernel's */
    assert_string_equal(c->ref_model, want);
    snprintf(want, sizeof want, "%s/sub/out", dir);
    assert_string_equal(c->output_dir, want);
    snprintf(want, sizeof want, "%s/sub/a.jsonl", dir);
    assert_string_equal(recipe_dataset_by_name(c, "a")->path, want);
    assert_string_equal(recipe_dataset_by_name(c, "s")->path, "stage:smp");
    assert_string_equal(recipe_dataset_by_name(c, "b")->path, "/abs/b.jsonl");
    assert_string_equal(c->rewards.items[0].script, "think_format");
    snprintf(want, sizeof want, "%s/rw/my.lua", dir);
    assert_string_equal(c->rewards.items[1].script, want);
    snprintf(want, sizeof want, "%s/sub/o.jsonl", dir);
    assert_string_equal(c->stages[0].sample.output, want);
    assert_string_equal(c->stages[1].init_from, "model");
    /* config.resolved.lua holds them as they are now */
    char *lua = recipe_to_lua(r);
    snprintf(want, sizeof want, "model = \"%s/m\"", dir);
    assert_non_null(strstr(lua, want));
    free(lua);
    recipe_free(r);
    /* overrides and defaults: the current directory */
    const char *sets[] = {"datasets.a.path=y.jsonl", "output_dir=null"};
    if (recipe_load(rp, sets, 1, &r)) fail_msg("%s", base_err_msg());
    char *y = cwd_path("y.jsonl");
    assert_string_equal(recipe_dataset_by_name(recipe_config(r), "a")->path, y);
    free(y);
    recipe_free(r);
    const char *plain = "return { model = 'm', datasets = { a = 'a.jsonl' }, stages = { { type = 'sft', dataset = 'a' } } }";
    r = load_ok(plain, NULL, 0);
    char *runs = cwd_path("runs");
    assert_string_equal(recipe_config(r)->output_dir, runs); /* the default */
    free(runs);
    recipe_free(r);
    /* an empty path is no path */
    expect_err("return { model = '', datasets = { a = 'a.jsonl' }, stages = { { type = 'sft', dataset = 'a' } } }",
               NULL, 0, "t.lua: model = \"\": expected a path");
    test_rmdir(dir);
    free(dir), free(sub), free(x), free(link), free(rp);
}

/* --set into the short forms (issue 13): a bare dataset path and a
 * "script:weight" reward take their keys; a value that is no table says
 * what to write; a stage that is not there lists those that are. */
static void test_set_short_forms(void **state) {
    (void)state;
    const char *sets[] = {"datasets.train.path=other.jsonl", "datasets.train.limit=3", "rewards.2.weight=0.7"};
    recipe *r = load_ok(base_recipe, sets, 3);
    const recipe_cfg *c = recipe_config(r);
    char *want = cwd_path("other.jsonl");
    assert_string_equal(recipe_dataset_by_name(c, "train")->path, want);
    free(want);
    assert_int_equal(recipe_dataset_by_name(c, "train")->limit, 3);
    assert_true(c->rewards.items[1].weight == 0.7);
    want = cwd_path("rewards/think_format.lua");
    assert_string_equal(c->rewards.items[1].script, want);
    free(want);
    recipe_free(r);
    /* rewards as one "a:1,b:2" string */
    const char *one = "return { model = 'm', datasets = { a = 'a.jsonl' }, rewards = 'think_format:1,boxed_math:2',\n"
                      "  stages = { { type = 'eval', dataset = 'a' } } }";
    const char *w[] = {"rewards.1.weight=3"};
    r = load_ok(one, w, 1);
    assert_true(recipe_config(r)->rewards.items[0].weight == 3 && recipe_config(r)->rewards.items[1].weight == 2);
    recipe_free(r);
    const char *bad[] = {"model.path=x"};
    expect_err(base_recipe, bad, 1,
               "--set model.path=x: 'model' is \"data/tiny/base\" in t.lua, not a table, so it has no 'path': set it "
               "whole (--set model=VALUE)");
    const char *bad2[] = {"stages.grop.beta=1"};
    expect_err(base_recipe, bad2, 1,
               "--set stages.grop.beta=1: no list item named or numbered 'grop' in t.lua (did you mean 'grpo'?); "
               "the list has 3 items, named eval, grpo, eval_2");
}

/* The suggestions (issue 13): other tools' names, keys of another table,
 * stage types, choices, built-in reward names. */
static void test_suggestions(void **state) {
    (void)state;
    static const struct {
        const char *set, *msg;
    } cases[] = {
        {"stages.grpo.lr=1", "unknown key 'stages[2].lr' (did you mean 'learning_rate'?)"},
        {"stages.grpo.kl_coef=0.1",
         "unknown key 'stages[2].kl_coef' (did you mean 'beta'? verl and OpenRLHF call it 'kl_coef')"},
        {"stages.grpo.init_kl_coef=0.1", "(did you mean 'beta'? OpenRLHF calls it 'init_kl_coef')"},
        {"stages.grpo.n_samples_per_prompt=8",
         "(did you mean 'num_generations'? OpenRLHF calls it 'n_samples_per_prompt')"},
        {"stages.grpo.rollout.n=8",
         "unknown key 'stages[2].rollout' (did you mean 'num_generations'? verl calls it 'rollout.n' "
         "(actor_rollout_ref.rollout.n))"},
        {"stages.grpo.clip_ratio=0.2", "(did you mean 'epsilon'? verl calls it 'clip_ratio')"},
        {"stages.grpo.eps_clip=0.2", "(did you mean 'epsilon'? OpenRLHF calls it 'eps_clip')"},
        {"stages.grpo.max_new_tokens=64", "(did you mean 'max_completion_length'? transformers calls it"},
        {"lr=1", "unknown key 'lr' (did you mean 'learning_rate'? 'learning_rate' is a stage key: set it in the "
                 "stage (stages[N].learning_rate))"},
        {"beta=0.1", "unknown key 'beta' ('beta' is a stage key: set it in the stage (stages[N].beta))"},
        {"stages.grpo.num_train_epochs=2", "unknown key 'stages[2].num_train_epochs' ('num_train_epochs' is a key "
                                           "of sft stages)"},
        {"stages.grpo.rollout.temperature=0.7",
         "(did you mean 'temperature'? keys are not nested here: rollout.temperature is 'temperature')"},
        {"stages.grpo.betta=1", "unknown key 'stages[2].betta' (did you mean 'beta'?)"},
        {"stages.grpo.type=ppo", "stages[2].type = \"ppo\": must be one of sft|grpo|sample|eval (did you mean "
                                 "'grpo'?)"},
        {"stages.grpo.loss_type=dr-grpo", "must be one of grpo|bnpo|dr_grpo|dapo|cispo|sapo|luspo|vespo (did you "
                                          "mean 'dr_grpo'?)"},
        {"rewards.1.script=boxed_maths",
         "rewards[1].script = \"boxed_maths\": no built-in reward script of that name (did you mean "
         "'boxed_math'?); the built-in ones ("},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) expect_err(base_recipe, &cases[i].set, 1, cases[i].msg);
    /* the built-in list names the scripts, not the modules */
    const char *bm[] = {"rewards.1.script=nope"};
    expect_err(base_recipe, bm, 1, "boxed_math, code, code_format, ");
    assert_null(strstr(base_err_msg(), "lib_code"));
    /* every alias names a key some table has */
    int n = 0;
    const char *key;
    for (const char *a; (a = recipe_alias_of(n, &key)); n++) {
        int found = 0;
        const recipe_key *tabs[] = {recipe_schema_top(), recipe_schema_dataset(), recipe_schema_reward(),
                                    recipe_schema_stage_common(), recipe_schema_stage("sft"),
                                    recipe_schema_stage("grpo"), recipe_schema_stage("sample"),
                                    recipe_schema_stage("eval")};
        for (size_t t = 0; t < sizeof tabs / sizeof tabs[0]; t++)
            for (const recipe_key *k = tabs[t]; k->key; k++) found |= !strcmp(k->key, key);
        if (!found) fail_msg("alias '%s' -> '%s': no such key", a, key);
    }
    assert_true(n > 50);
}

static void test_edit_distance(void **state) {
    (void)state;
    assert_int_equal(recipe_edit_distance("beta", "beta"), 0);
    assert_int_equal(recipe_edit_distance("bteа", "beta") > 0, 1);
    assert_int_equal(recipe_edit_distance("lerning_rate", "learning_rate"), 1);
    assert_int_equal(recipe_edit_distance("ab", "ba"), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_names), cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_validation_errors),  cmocka_unit_test(test_resolved_round_trip),
        cmocka_unit_test(test_edit_distance),      cmocka_unit_test(test_sandbox_limits),
        cmocka_unit_test(test_sandbox_library),    cmocka_unit_test(test_paths),
        cmocka_unit_test(test_set_short_forms),    cmocka_unit_test(test_suggestions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
