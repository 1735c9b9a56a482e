#include "recipe/recipe.h"
#include "run_internal.h"
base_status run_stage_sft(run_ctx *c, const cJSON *stage, int index, const run_ckpt *resume_from) {
    (void)c, (void)index, (void)resume_from;
    return base_err_set(BASE_ERR_UNSUPPORTED, "stage '%s': sft WIP", recipe_str(stage, "name"));
}
