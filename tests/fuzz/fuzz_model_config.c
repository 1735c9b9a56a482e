/*
 * libFuzzer target for config.json (src/model/config.c): bytes ->
 * base_json_parse -> model_config_parse. Beyond "no crash, leak or
 * sanitizer report (UBSan: no float->int overflow)":
 *   - a refusal always names the file;
 *   - an accepted config is within the documented limits (docs/model.md):
 *     sizes positive, eos ids inside the vocabulary, at most 2^40
 *     parameters, rope tables of at most 2^32 elements, and its rope
 *     frequencies are numbers (no NaN);
 *   - a small accepted config builds: model_init_random allocates exactly
 *     model_config_param_count parameters.
 *
 * Fuzz with `make fuzz FUZZ_TARGET=model_config` (docs/fuzzing.md);
 * `make test` replays tests/fuzz/corpus/model_config/.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "tensor/ops.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_INPUT = 1 << 16, SMALL_MODEL = 1 << 17 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > MAX_INPUT) return 0;
    static int quiet;
    if (!quiet) {
        base_log_set_level(BASE_LOG_ERROR);
        quiet = 1;
    }
    cJSON *j = NULL;
    if (base_json_parse((const char *)data, size, "config.json", &j) != BASE_OK) return 0;
    model_config c;
    base_status st = model_config_parse(j, "config.json", &c);
    cJSON_Delete(j);
    if (st) {
        if (!strstr(base_err_msg(), "config.json: ")) abort();
        return 0;
    }
    if (c.vocab_size < 1 || c.hidden_size < 1 || c.num_hidden_layers < 1 || c.num_attention_heads < 1 ||
        c.kv_lora_rank < 1 || c.qk_rope_head_dim < 2 || c.qk_rope_head_dim % 2 || c.v_head_dim < 1 ||
        c.n_routed_experts < 1 || c.n_group < 1 || c.moe_layer_freq < 1 || c.q_lora_rank < 0)
        abort();
    for (int i = 0; i < c.n_eos; i++)
        if (c.eos_token_id[i] < 0 || c.eos_token_id[i] >= c.vocab_size) abort();
    int64_t mtp, n = model_config_param_count(&c, &mtp);
    if (n < 1 || mtp < 0 || n > MODEL_MAX_PARAMS || mtp > MODEL_MAX_PARAMS - n) abort();
    if (c.max_position_embeddings * c.qk_rope_head_dim > ((int64_t)1 << 32)) abort();
    if (!isfinite(c.softmax_scale) || !isfinite(c.attention_factor)) abort();
    float inv[2048];
    model_rope_inv_freq(&c, inv);
    for (int i = 0; i < c.qk_rope_head_dim / 2; i++)
        if (isnan(inv[i])) abort();
    for (int l = 0; l < c.num_hidden_layers; l++) (void)model_layer_is_moe(&c, l);
    if (n <= SMALL_MODEL && c.max_position_embeddings * c.qk_rope_head_dim <= (1 << 16)) {
        model *m = NULL;
        if (model_init_random(&c, ops_cpu(), 1, 0.02f, NULL, &m) != BASE_OK) abort();
        if (model_numel(m) != n) abort();
        model_free(m);
    }
    return 0;
}
