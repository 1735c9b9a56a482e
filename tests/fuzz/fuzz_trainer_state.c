/*
 * libFuzzer target for trainer_state.json, the file `grpo run --resume`
 * trusts to cut metrics.jsonl and to place the data cursor:
 * run_ckpt_parse_state on arbitrary bytes, checked against a fixed recipe
 * (eval_before, grpo with max_steps 4, eval_after, sft by epochs; seed 7:
 * the recipe of tests/train/test_run_dir.c, whose checkpoints are the
 * seeds), must return a status naming the file (never crash, leak or
 * trip ASan/UBSan); when it accepts, the state must be one a resume can
 * use: a checkpointing stage of the recipe, counters in range and
 * consistent.
 *
 * Fuzz with `make fuzz FUZZ_TARGET=trainer_state` (docs/fuzzing.md);
 * `make test` replays tests/fuzz/corpus/trainer_state/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "recipe/recipe.h"
#include "train/run_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *RECIPE =
    "return { name = 'fz', model = 'm', seed = 7, datasets = { train = 'd.jsonl' },\n"
    "  stages = {\n"
    "    { type = 'eval', name = 'eval_before', dataset = 'train' },\n"
    "    { type = 'grpo', dataset = 'train', num_generations = 4, generation_batch_size = 8, max_steps = 4 },\n"
    "    { type = 'eval', name = 'eval_after', dataset = 'train' },\n"
    "    { type = 'sft', dataset = 'train' },\n"
    "  } }\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static recipe *rc;
    if (!rc && recipe_load_string(RECIPE, "fz.lua", NULL, 0, &rc)) abort();
    run_ckpt *k = NULL;
    if (run_ckpt_parse_state(rc, "ckpt", (const char *)data, size, &k) != BASE_OK) {
        if (k || !strstr(base_err_msg(), "trainer_state.json")) abort(); /* a failure names the file */
        return 0;
    }
    const run_train_state *st = run_ckpt_state(k);
    if (st->stage_index != 1 && st->stage_index != 3) abort(); /* grpo or sft: the stages that save */
    if (strcmp(st->stage_name, recipe_config(rc)->stages[st->stage_index].name)) abort();
    if (st->stage_step < 0 || (st->stage_index == 1 && st->stage_step > 4)) abort();
    if (st->total_steps < st->stage_step || st->data_epoch < 0 || st->data_pos < 0) abort();
    if (st->metrics_lines < 0 || st->samples_lines < 0) abort();
    if (run_ckpt_check_cursor(k, 24) == BASE_OK && st->data_pos > 24) abort();
    cJSON *sum = run_ckpt_summary(k);
    if (!cJSON_IsObject(sum)) abort();
    cJSON_Delete(sum);
    run_ckpt_free(k);
    return 0;
}
