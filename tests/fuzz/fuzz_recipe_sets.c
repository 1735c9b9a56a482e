/*
 * libFuzzer target for the recipe's overrides, schema validation and typed
 * config (src/recipe/validate.c, config.c): the input is up to 32 lines,
 * each an override "a.b=v" (as --set gives them), applied to a fixed valid
 * recipe with every stage type. Loading must return a status (never crash,
 * leak or die) with a message that names the recipe or the override; when it
 * loads, the typed config must agree with the schema (every number inside
 * its key's range, every reference resolved, the checks between keys held)
 * and the resolved form must load again to the same tree.
 *
 * Fuzz with `make fuzz FUZZ_TARGET=recipe_sets` (docs/fuzzing.md); `make
 * test` replays tests/fuzz/corpus/recipe_sets/.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "recipe/recipe.h"
#include "recipe/schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *RECIPE =
    "return {\n"
    "  model = 'm', seed = 7,\n"
    "  datasets = { p = { path = 'p.jsonl', limit = 4 }, q = 'q.jsonl', kept = 'stage:sample' },\n"
    "  rewards = { { script = 'boxed_math', weight = 1 }, 'think_format:0.2' },\n"
    "  stages = {\n"
    "    { type = 'sft', dataset = 'q', max_steps = 2 },\n"
    "    { type = 'grpo', dataset = { 'p', 'q' }, num_generations = 4, generation_batch_size = 8,\n"
    "      stop = '</answer>', rewards = { { script = 'r.lua', params = { k = 1 } } } },\n"
    "    { type = 'sample', dataset = 'p', filters = { 'code_blocks' }, merge_datasets = 'q' },\n"
    "    { type = 'sft', name = 'sft2', dataset = 'kept' },\n"
    "    { type = 'eval', dataset = 'p', temperature = 0 },\n"
    "  },\n"
    "}\n";

/* Every number of the table's struct at base inside its key's range. */
static void check_ranges(const recipe_key *tab, const void *base) {
    for (const recipe_key *k = tab; k->key; k++) {
        const char *f = (const char *)base + k->offset;
        double v;
        if (k->type == RK_NUM) v = *(const double *)f;
        else if (k->type == RK_INT) v = (double)*(const int64_t *)f;
        else continue;
        if (isnan(v) && k->type == RK_NUM && k->dflt && !strcmp(k->dflt, "null")) continue; /* unset */
        if (!recipe_range_ok(k, v)) abort();
    }
}

static void check_config(const recipe_cfg *c) {
    check_ranges(recipe_schema_top(), c);
    for (int i = 0; i < c->n_datasets; i++) {
        check_ranges(recipe_schema_dataset(), &c->datasets[i]);
        if (c->datasets[i].producer && c->datasets[i].producer->type != RECIPE_STAGE_SAMPLE) abort();
    }
    for (int i = 0; i < c->rewards.n; i++) check_ranges(recipe_schema_reward(), &c->rewards.items[i]);
    if (c->n_stages < 1) abort();
    for (int i = 0; i < c->n_stages; i++) {
        const recipe_stage_cfg *st = &c->stages[i];
        if (st->index != i || !st->name[0] || strchr(st->name, '/') || recipe_stage_by_name(c, st->name) != st)
            abort();
        check_ranges(recipe_schema_stage(st->type_name), st);
        if (st->dataset.n < 1) abort();
        for (int k = 0; k < st->dataset.n; k++) {
            const recipe_dataset *d = st->datasets[k];
            if (!d || strcmp(d->name, st->dataset.items[k]) || (d->producer && d->producer->index >= i)) abort();
        }
        for (int k = 0; k < st->rewards.n; k++) check_ranges(recipe_schema_reward(), &st->rewards.items[k]);
        if (st->type == RECIPE_STAGE_GRPO) {
            const recipe_grpo_cfg *g = &st->grpo;
            if (g->generation_batch_size % g->gen.num_generations || g->gen.num_generations < 2) abort();
            if (grpo_config_check(&g->loss) != BASE_OK) abort();
        }
        if (st->type == RECIPE_STAGE_SAMPLE)
            for (int k = 0; k < st->sample.merge_datasets.n; k++)
                if (!st->sample.merge[k]) abort();
        if (st->type == RECIPE_STAGE_SFT && st->sft.max_steps == 0) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0;
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    const char *sets[32];
    int n = 0;
    for (char *line = text, *next; line && n < 32; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        if (*line) sets[n++] = line;
    }
    recipe *r = NULL;
    if (recipe_load_string(RECIPE, "fz.lua", sets, n, &r) != BASE_OK) {
        const char *m = base_err_msg();
        if (r || (strncmp(m, "fz.lua: ", 8) && strncmp(m, "--set ", 6))) abort(); /* names the recipe or override */
        free(text);
        return 0;
    }
    check_config(recipe_config(r));
    /* the resolved form is a recipe that loads to the same tree */
    char *lua = recipe_to_lua(r);
    recipe *again = NULL;
    if (recipe_load_string(lua, "fz.lua", NULL, 0, &again) != BASE_OK) abort();
    char *a = cJSON_PrintUnformatted(recipe_root(r)), *b = cJSON_PrintUnformatted(recipe_root(again));
    if (!a || !b || strcmp(a, b)) abort();
    cJSON_free(a), cJSON_free(b);
    free(lua);
    recipe_free(again);
    recipe_free(r);
    free(text);
    return 0;
}
