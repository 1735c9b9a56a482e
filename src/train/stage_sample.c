#include "recipe/recipe.h"
#include "run_internal.h"
base_status run_stage_sample(run_ctx *c, const cJSON *stage, int index) {
    (void)c, (void)index;
    return base_err_set(BASE_ERR_UNSUPPORTED, "stage '%s': sample WIP", recipe_str(stage, "name"));
}
