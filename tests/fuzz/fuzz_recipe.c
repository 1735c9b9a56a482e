/*
 * libFuzzer target for recipe loading: arbitrary bytes as a recipe's Lua
 * source through recipe_load_string (the sandboxed Lua run with its
 * instruction budget and memory cap, the conversion of the returned table,
 * the schema validation with defaults) must return a status with a message
 * (never crash, hang, leak or trip ASan/UBSan). The sandbox has no
 * function that writes a file or starts a process, so the fuzzer cannot
 * touch the machine; run it with stdin from /dev/null (io.open can read
 * "/dev/stdin"). When a recipe loads, its resolved form
 * (config.resolved.lua) must load again to the same tree.
 *
 * Fuzz with `make fuzz FUZZ_TARGET=recipe` (docs/fuzzing.md); `make test`
 * replays tests/fuzz/corpus/recipe/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "recipe/recipe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 1 << 16 || memchr(data, 0, size)) return 0; /* recipe_load refuses NUL bytes */
    char *src = malloc(size + 1);
    if (!src) abort();
    memcpy(src, data, size);
    src[size] = 0;
    recipe *r = NULL;
    base_status s = recipe_load_string(src, "fuzz.lua", NULL, 0, &r);
    free(src);
    if (s) {
        if (r || !base_err_msg()[0]) abort(); /* a failure always says why */
        return 0;
    }
    char *lua = recipe_to_lua(r), *a = cJSON_PrintUnformatted(recipe_root(r));
    recipe *r2 = NULL;
    if (recipe_load_string(lua, "fuzz.lua", NULL, 0, &r2)) abort();
    char *b = cJSON_PrintUnformatted(recipe_root(r2));
    if (strcmp(a, b)) abort();
    free(lua), free(a), free(b);
    recipe_free(r);
    recipe_free(r2);
    return 0;
}
