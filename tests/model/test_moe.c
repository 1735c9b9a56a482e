/*
 * MoE expert load (issue 15): model_train_expert_load against a host
 * recount of the routing the forward saved (each MoE layer's chosen
 * experts, idx), with and without recomputation, accumulated over two
 * forwards. White box: the saved idx is read through model/internal.h.
 */
#include "common/test_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/internal.h"
#include "model/model.h"

static model *tiny_moe(uint64_t seed) {
    static const char *js =
        "{\"model_type\": \"deepseek_v3\", \"vocab_size\": 61, \"hidden_size\": 32, "
        "\"intermediate_size\": 40, \"moe_intermediate_size\": 12, \"num_hidden_layers\": 4, "
        "\"num_attention_heads\": 3, \"num_key_value_heads\": 3, \"n_shared_experts\": 1, "
        "\"n_routed_experts\": 8, \"num_experts_per_tok\": 3, \"n_group\": 4, \"topk_group\": 2, "
        "\"routed_scaling_factor\": 2.5, \"kv_lora_rank\": 16, \"q_lora_rank\": 24, "
        "\"qk_nope_head_dim\": 8, \"qk_rope_head_dim\": 8, \"v_head_dim\": 10, "
        "\"first_k_dense_replace\": 1, \"norm_topk_prob\": true, \"max_position_embeddings\": 256, "
        "\"rms_norm_eps\": 1e-6, \"rope_theta\": 10000}";
    cJSON *j = cJSON_Parse(js);
    model_config c;
    if (model_config_parse(j, "config.json", &c)) fail_msg("%s", base_err_msg());
    cJSON_Delete(j);
    model *m = NULL;
    assert_int_equal(model_init_random(&c, ops_cpu(), seed, 0.3f, NULL, &m), BASE_OK);
    return m;
}

enum { N = 29 };

/* counts[l E + i] recounted from the idx each MoE layer saved (recompute 0). */
static void recount(const model_train *tr, int64_t *counts) {
    const model_config *c = model_cfg(tr->m);
    int E = c->n_routed_experts, K = c->num_experts_per_tok;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        if (!model_layer_is_moe(c, l)) continue;
        const int32_t *idx = tr->acts[l].idx.data; /* CPU backend: host memory */
        for (int64_t t = 0; t < tr->n * K; t++) {
            assert_true(idx[t] >= 0 && idx[t] < E);
            counts[(int64_t)l * E + idx[t]]++;
        }
    }
}

static void test_expert_load_recount(void **s) {
    (void)s;
    model *m = tiny_moe(11);
    const model_config *c = model_cfg(m);
    int L = c->num_hidden_layers, E = c->n_routed_experts, K = c->num_experts_per_tok;
    int32_t ids[N], cu[3] = {0, 12, N};
    for (int i = 0; i < N; i++) ids[i] = (i * 23 + 5) % (int32_t)c->vocab_size;
    model_batch b = {.nseq = 2, .ids = ids, .cu_seqlens = cu};
    int64_t *want = calloc((size_t)(L * E), sizeof(int64_t));
    int64_t *got[2];
    for (int rc = 0; rc < 2; rc++) {
        model_train_limits lim = {.max_tokens = N, .max_seqs = 2, .recompute = rc};
        model_train *tr = NULL;
        assert_int_equal(model_train_new(m, &lim, &tr), BASE_OK);
        got[rc] = calloc((size_t)(L * E), sizeof(int64_t));
        int64_t routed = 0, processed = 0;
        assert_int_equal(model_forward(tr, &b), BASE_OK);
        if (!rc) recount(tr, want);
        model_train_expert_load(tr, got[rc], &routed, &processed);
        /* a second forward of the first sequence alone adds to the tallies */
        model_batch b1 = {.nseq = 1, .ids = ids, .cu_seqlens = cu};
        assert_int_equal(model_forward(tr, &b1), BASE_OK);
        if (!rc) recount(tr, want);
        model_train_expert_load(tr, got[rc], &routed, &processed);
        int moe_layers = L - 1;
        assert_int_equal(routed, (int64_t)moe_layers * (N + 12) * K);
        assert_int_equal(processed, routed); /* no capacity limit drops a pair */
        model_train_free(tr);
    }
    int distinct = 0;
    for (int l = 0; l < L; l++) {
        int64_t sum = 0;
        for (int i = 0; i < E; i++) {
            int64_t w = want[l * E + i];
            if (w != got[0][l * E + i] || w != got[1][l * E + i])
                fail_msg("layer %d expert %d: recount %lld, load %lld (recompute %lld)", l, i, (long long)w,
                         (long long)got[0][l * E + i], (long long)got[1][l * E + i]);
            sum += w;
            distinct += w > 0;
        }
        assert_int_equal(sum, model_layer_is_moe(c, l) ? (int64_t)(N + 12) * K : 0);
    }
    assert_true(distinct > E); /* the loads spread over several experts: the recount means something */
    free(want), free(got[0]), free(got[1]);
    model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expert_load_recount),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
