/*
 * The model API on random tiny configs: config.json parsing and validation
 * errors, YaRN and softmax-scale numbers of spec §8, checkpoint errors
 * (missing tensor, shape mismatch), decode == full forward (absorbed vs
 * training form) for several configs, batched decode of sequences at
 * different positions, cache copy, recomputation, and a finite-difference
 * check of the whole model's backward for logp and entropy gradients.
 */
#include "common/test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/st.h"
#include "model/model.h"

static base_status parse(const char *json, model_config *c) {
    cJSON *j = cJSON_Parse(json);
    if (!j) fail_msg("bad test JSON: %s", json);
    base_status st = model_config_parse(j, "config.json", c);
    cJSON_Delete(j);
    return st;
}

/* test_tiny_config with YaRN rope_scaling; `over` holds keys that replace
 * the defaults (they come first). */
static char *tiny(const char *over) {
    base_buf o = {0};
    base_buf_printf(&o,
                    "%s%s\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 64, "
                    "\"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 1, \"mscale_all_dim\": 1}",
                    over, *over ? ", " : "");
    char *s = test_tiny_config(o.data);
    base_buf_free(&o);
    return s;
}

static void expect_err(const char *over, base_status want, const char *needle) {
    char *js = tiny(over);
    model_config c;
    base_status st = parse(js, &c);
    if (st != want || !strstr(base_err_msg(), needle))
        fail_msg("%s: got status %d '%s', want %d containing '%s'", over, st, base_err_msg(), want, needle);
    free(js);
}

static void test_config_errors(void **s) {
    (void)s;
    expect_err("\"model_type\": \"llama\"", BASE_ERR_UNSUPPORTED, "model_type 'llama'");
    expect_err("\"scoring_func\": \"softmax\"", BASE_ERR_UNSUPPORTED, "scoring_func 'softmax'");
    expect_err("\"topk_method\": \"greedy\"", BASE_ERR_UNSUPPORTED, "topk_method 'greedy'");
    expect_err("\"hidden_act\": \"gelu\"", BASE_ERR_UNSUPPORTED, "hidden_act");
    expect_err("\"n_routed_experts\": 10", BASE_ERR_INVALID, "n_routed_experts 10 is not divisible by n_group 4");
    expect_err("\"topk_group\": 5", BASE_ERR_INVALID, "topk_group 5 exceeds n_group 4");
    expect_err("\"num_experts_per_tok\": 5", BASE_ERR_INVALID, "num_experts_per_tok 5");
    expect_err("\"hidden_size\": \"big\"", BASE_ERR_INVALID, "hidden_size must be an integer");
    expect_err("\"hidden_size\": 0", BASE_ERR_INVALID, "config.json: hidden_size must be an integer in [1, 1048576] (got 0)");
    expect_err("\"qk_rope_head_dim\": 7", BASE_ERR_INVALID, "qk_rope_head_dim 7 must be even");
    expect_err("\"num_key_value_heads\": 1", BASE_ERR_UNSUPPORTED, "num_key_value_heads");
    expect_err("\"attention_bias\": true", BASE_ERR_UNSUPPORTED, "attention_bias");
    expect_err("\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2}", BASE_ERR_UNSUPPORTED, "rope type 'linear'");
    expect_err("\"quantization_config\": {\"quant_method\": \"gptq\"}", BASE_ERR_UNSUPPORTED, "quant_method 'gptq'");
    expect_err("\"quantization_config\": {\"quant_method\": \"fp8\", \"weight_block_size\": [64, 64]}",
               BASE_ERR_UNSUPPORTED, "weight_block_size");
    expect_err("\"norm_topk_prob\": 1", BASE_ERR_INVALID, "norm_topk_prob must be true or false");
}

/* config.json is untrusted: every integer has a range (no float->int UB,
 * no int truncation), numbers are finite, eos ids are vocabulary ids, and
 * a config describing more than 2^40 parameters is refused before any
 * allocation. Each message names the file and the key. */
static void test_config_limits(void **s) {
    (void)s;
    expect_err("\"eos_token_id\": 1e30", BASE_ERR_INVALID,
               "config.json: eos_token_id must be an id of the vocabulary, an integer in [0, 60] (vocab_size 61) (got 1e+30)");
    expect_err("\"eos_token_id\": 61", BASE_ERR_INVALID, "eos_token_id must be an id of the vocabulary");
    expect_err("\"eos_token_id\": [1, -1]", BASE_ERR_INVALID, "eos_token_id entries must be an id of the vocabulary");
    expect_err("\"eos_token_id\": \"1\"", BASE_ERR_INVALID, "eos_token_id must be an integer or a list");
    /* the default (1) is checked too (found by the model_config fuzz target) */
    expect_err("\"vocab_size\": 1", BASE_ERR_INVALID,
               "config.json: eos_token_id is absent and its default 1 is not an id of the vocabulary (vocab_size 1)");
    expect_err("\"num_attention_heads\": 2147483648, \"num_key_value_heads\": 2147483648", BASE_ERR_INVALID,
               "config.json: num_attention_heads must be an integer in [1, 16384] (got 2147483648)");
    expect_err("\"hidden_size\": 1e12", BASE_ERR_INVALID, "config.json: hidden_size must be an integer in [1, 1048576] (got 1000000000000)");
    expect_err("\"hidden_size\": 2.5", BASE_ERR_INVALID, "hidden_size must be an integer in [1, 1048576] (got 2.5)");
    expect_err("\"vocab_size\": 1e999", BASE_ERR_INVALID, "vocab_size must be an integer in [1, 16777216] (got inf)");
    expect_err("\"bos_token_id\": 1e30", BASE_ERR_INVALID, "bos_token_id must be an integer in [-1, 2147483647]");
    expect_err("\"rms_norm_eps\": 1e999", BASE_ERR_INVALID, "config.json: rms_norm_eps must be a finite number");
    expect_err("\"routed_scaling_factor\": 1e300", BASE_ERR_INVALID, "routed_scaling_factor 1e+300 is out of float range");
    expect_err("\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4, \"beta_fast\": -1}", BASE_ERR_INVALID,
               "YaRN beta_fast and beta_slow must be > 0");
    expect_err("\"max_position_embeddings\": 16777216, \"qk_rope_head_dim\": 512", BASE_ERR_INVALID,
               "max_position_embeddings 16777216 x qk_rope_head_dim 512 exceeds 2^32 (the rope tables)");
    /* each size within its range, together over the budget (2^20 x 2^20 x
     * 2 for the embedding and head alone) */
    double t0 = base_now();
    expect_err("\"vocab_size\": 1048576, \"hidden_size\": 1048576", BASE_ERR_INVALID,
               "config.json: the config describes 2.2e+12 parameters (hidden_size 1048576, num_hidden_layers 3, "
               "vocab_size 1048576");
    expect_err("\"num_hidden_layers\": 16384, \"moe_intermediate_size\": 4194304, \"n_routed_experts\": 4096, "
               "\"n_group\": 4, \"hidden_size\": 1048576", BASE_ERR_INVALID, "more than the limit of 2^40");
    assert_true(base_now() - t0 < 5);
    /* the count is the layout's: model_init_random allocates exactly it */
    char *js = tiny("\"num_nextn_predict_layers\": 1");
    model_config c;
    assert_int_equal(parse(js, &c), BASE_OK);
    int64_t mtp, n = model_config_param_count(&c, &mtp);
    model *m;
    assert_int_equal(model_init_random(&c, ops_cpu(), 1, 0.02f, NULL, &m), BASE_OK);
    assert_int_equal(model_numel(m), n);
    assert_true(mtp > 0);
    model_free(m);
    free(js);
}

static void test_config_fields(void **s) {
    (void)s;
    model_config c;
    char *js = tiny("\"q_lora_rank\": null, \"eos_token_id\": [1, 7], \"quantization_config\": "
                    "{\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\", \"quant_method\": \"fp8\", "
                    "\"weight_block_size\": [128, 128]}, \"num_nextn_predict_layers\": 1");
    assert_int_equal(parse(js, &c), BASE_OK);
    assert_int_equal(c.q_lora_rank, 0);
    assert_int_equal(c.n_eos, 2);
    assert_int_equal(c.eos_token_id[1], 7);
    assert_int_equal(c.fp8, 1);
    assert_int_equal(c.num_nextn_predict_layers, 1);
    assert_true(c.rope_yarn);
    free(js);
    js = tiny("\"q_lora_rank\": 0");
    assert_int_equal(parse(js, &c), BASE_OK);
    assert_int_equal(c.q_lora_rank, 0);
    free(js);
    /* rope_parameters (transformers v5: rope_type and rope_theta inside) */
    js = tiny("\"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": 50000, \"factor\": 8, "
              "\"original_max_position_embeddings\": 32, \"mscale\": 0.707, \"mscale_all_dim\": 0.707}");
    assert_int_equal(parse(js, &c), BASE_OK);
    assert_true(c.rope_yarn);
    assert_true(c.rope_theta == 50000);
    assert_true(c.yarn_factor == 8);
    assert_int_equal(c.yarn_original_max_position_embeddings, 32);
    assert_true(fabs(c.attention_factor - 1.0) < 1e-12);
    double ms = 0.1 * 0.707 * log(8.0) + 1;
    assert_true(fabs(c.softmax_scale - pow(16.0, -0.5) * ms * ms) < 1e-12);
    free(js);
    /* plain rope */
    js = tiny("\"rope_scaling\": null, \"rms_norm_eps\": 1e-5");
    assert_int_equal(parse(js, &c), BASE_OK);
    assert_false(c.rope_yarn);
    assert_true(fabs(c.softmax_scale - 0.25) < 1e-12);
    assert_true(c.attention_factor == 1.0);
    assert_true(fabsf(c.rms_norm_eps - 1e-5f) == 0);
    free(js);
    /* moe_layer_freq */
    js = tiny("\"moe_layer_freq\": 2, \"first_k_dense_replace\": 1, \"num_hidden_layers\": 5");
    assert_int_equal(parse(js, &c), BASE_OK);
    assert_false(model_layer_is_moe(&c, 0));
    assert_false(model_layer_is_moe(&c, 1));
    assert_true(model_layer_is_moe(&c, 2));
    assert_false(model_layer_is_moe(&c, 3));
    assert_true(model_layer_is_moe(&c, 4));
    free(js);
}

/* spec §3.3, §3.4, §8 (3): the DeepSeek-V3 numbers. */
static void test_yarn_v3(void **s) {
    (void)s;
    model_config c;
    const char *v3 = "{\"model_type\": \"deepseek_v3\", \"max_position_embeddings\": 163840, "
                     "\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 40, \"original_max_position_embeddings\": 4096, "
                     "\"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 1.0, \"mscale_all_dim\": 1.0}}";
    assert_int_equal(parse(v3, &c), BASE_OK);
    assert_int_equal(c.hidden_size, 7168); /* HF defaults for missing keys */
    assert_int_equal(c.q_lora_rank, 1536);
    assert_true(fabs(c.softmax_scale - 0.1352337788608801) < 1e-12);
    assert_true(fabs(c.attention_factor - 1.0) < 1e-12);
    float inv[32];
    model_rope_inv_freq(&c, inv);
    struct {
        int i;
        double v;
    } want[] = {{0, 1.0}, {10, 0.0562341325}, {11, 0.0390069266}, {23, 3.33380e-5}, {31, 3.33380e-6}};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        double rel = fabs(inv[want[k].i] - want[k].v) / want[k].v;
        if (rel > 1e-5) fail_msg("inv_freq[%d] = %.10g, spec %.10g", want[k].i, inv[want[k].i], want[k].v);
    }
    assert_true(fabs(inv[16] - 0.0055) < 0.0001);
    /* V2-Lite: mscale 0.707 / 0.707 */
    const char *v2 = "{\"model_type\": \"deepseek_v3\", \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 40, "
                     "\"original_max_position_embeddings\": 4096, \"mscale\": 0.707, \"mscale_all_dim\": 0.707}}";
    assert_int_equal(parse(v2, &c), BASE_OK);
    assert_true(fabs(c.softmax_scale - 0.1147213868) < 1e-9);
    assert_true(fabs(c.attention_factor - 1.0) < 1e-12);
}

/* ---- random models -------------------------------------------------------- */

static model *random_model_std(const char *over, uint64_t seed, float std) {
    char *js = tiny(over);
    model_config c;
    if (parse(js, &c)) fail_msg("%s: %s", over, base_err_msg());
    free(js);
    model *m = NULL;
    assert_int_equal(model_init_random(&c, ops_cpu(), seed, std, NULL, &m), BASE_OK);
    return m;
}

static model *random_model(const char *over, uint64_t seed) { return random_model_std(over, seed, 0.3f); }

/* Full-forward logits of one sequence vs prefill of a prefix then decode. */
static void decode_vs_forward(const char *over) {
    model *m = random_model(over, 7);
    int64_t V = model_cfg(m)->vocab_size;
    enum { T = 21, P = 6 };
    int32_t ids[T];
    for (int i = 0; i < T; i++) ids[i] = (i * 37 + 11) % (int32_t)V;
    int32_t cu[2] = {0, T};
    float *full = malloc(T * V * sizeof(float));
    assert_int_equal(model_forward_logits(m, 1, ids, cu, full, NULL), BASE_OK);
    model_cache_limits lim = {.slots = 3, .max_len = T, .max_batch = 3, .max_prefill = T};
    model_cache *c = NULL;
    assert_int_equal(model_cache_new(m, &lim, &c), BASE_OK);
    int32_t slot = 2, pcu[2] = {0, P};
    const tensor *lg;
    assert_int_equal(model_prefill(c, 1, &slot, ids, pcu, &lg), BASE_OK);
    double worst = test_max_abs_diff(lg->data, full + (P - 1) * V, V);
    for (int t = P; t < T; t++) {
        int32_t pos = t;
        assert_int_equal(model_decode(c, 1, &slot, &ids[t], &pos, &lg), BASE_OK);
        double e = test_max_abs_diff(lg->data, full + t * V, V);
        if (e > worst) worst = e;
    }
    printf("decode vs forward [%s]: max |diff| %.3g\n", over, worst);
    assert_true(worst < 1e-4);
    model_cache_free(c);
    free(full);
    model_free(m);
}

static void test_decode_equals_forward(void **s) {
    (void)s;
    decode_vs_forward("");
    decode_vs_forward("\"q_lora_rank\": null");
    decode_vs_forward("\"rope_scaling\": null, \"rms_norm_eps\": 1e-5");
    decode_vs_forward("\"n_routed_experts\": 16, \"n_group\": 8, \"topk_group\": 3, \"num_experts_per_tok\": 4, "
                      "\"norm_topk_prob\": false, \"n_shared_experts\": 2, \"first_k_dense_replace\": 2");
    decode_vs_forward("\"rope_interleave\": false, \"tie_word_embeddings\": true");
    decode_vs_forward("\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 40, \"original_max_position_embeddings\": 8, "
                      "\"mscale\": 0.707, \"mscale_all_dim\": 0.707}");
}

/* Several sequences at different positions in one decode batch, plus a
 * prompt prefilled once and copied to two more slots. */
static void test_batched_decode(void **s) {
    (void)s;
    model *m = random_model("", 9);
    int64_t V = model_cfg(m)->vocab_size;
    enum { A = 9, B = 5, C = 14 };
    int32_t sa[A], sb[B], sc[C];
    for (int i = 0; i < A; i++) sa[i] = (i * 13 + 2) % (int32_t)V;
    for (int i = 0; i < B; i++) sb[i] = (i * 29 + 5) % (int32_t)V;
    for (int i = 0; i < C; i++) sc[i] = (i * 7 + 1) % (int32_t)V;
    float *fa = malloc(A * V * 4), *fb = malloc(B * V * 4), *fc = malloc(C * V * 4);
    int32_t cua[2] = {0, A}, cub[2] = {0, B}, cuc[2] = {0, C};
    assert_int_equal(model_forward_logits(m, 1, sa, cua, fa, NULL), BASE_OK);
    assert_int_equal(model_forward_logits(m, 1, sb, cub, fb, NULL), BASE_OK);
    assert_int_equal(model_forward_logits(m, 1, sc, cuc, fc, NULL), BASE_OK);
    model_cache_limits lim = {.slots = 5, .max_len = 16, .max_batch = 4, .max_prefill = 16};
    model_cache *c = NULL;
    assert_int_equal(model_cache_new(m, &lim, &c), BASE_OK);
    /* prefill the three prompts together: a[0..3), b[0..2), c[0..8) */
    int32_t packed[13], pcu[4] = {0, 3, 5, 13}, slots[3] = {0, 1, 2};
    memcpy(packed, sa, 3 * 4);
    memcpy(packed + 3, sb, 2 * 4);
    memcpy(packed + 5, sc, 8 * 4);
    const tensor *lg;
    assert_int_equal(model_prefill(c, 3, slots, packed, pcu, &lg), BASE_OK);
    const float *L = lg->data;
    assert_true(test_max_abs_diff(L, fa + 2 * V, V) < 1e-4);
    assert_true(test_max_abs_diff(L + V, fb + 1 * V, V) < 1e-4);
    assert_true(test_max_abs_diff(L + 2 * V, fc + 7 * V, V) < 1e-4);
    /* sequence c shared by slot 3 (copy after prefill) */
    model_cache_copy(c, 3, 2, 8);
    int pa = 3, pb = 2, pc = 8, pc2 = 8;
    double worst = 0;
    while (pa < A || pb < B || pc < C) {
        int32_t sl[4], tk[4], ps[4];
        const float *want[4];
        int n = 0;
        if (pa < A) sl[n] = 0, tk[n] = sa[pa], ps[n] = pa, want[n++] = fa + pa * V, pa++;
        if (pb < B) sl[n] = 1, tk[n] = sb[pb], ps[n] = pb, want[n++] = fb + pb * V, pb++;
        if (pc < C) sl[n] = 2, tk[n] = sc[pc], ps[n] = pc, want[n++] = fc + pc * V, pc++;
        if (pc2 < C) sl[n] = 3, tk[n] = sc[pc2], ps[n] = pc2, want[n++] = fc + pc2 * V, pc2++;
        assert_int_equal(model_decode(c, n, sl, tk, ps, &lg), BASE_OK);
        for (int i = 0; i < n; i++) {
            double e = test_max_abs_diff((const float *)lg->data + i * V, want[i], V);
            if (e > worst) worst = e;
        }
    }
    /* several tokens of one slot in one call extend it (chunked prefill):
     * slot 4 gets a[0..3) by prefill, then a[3..9) in one decode call */
    int32_t s4 = 4, ext_slot[6], ext_pos[6];
    assert_int_equal(model_prefill(c, 1, &s4, sa, pcu, &lg), BASE_OK);
    for (int i = 0; i < 6; i++) ext_slot[i] = 4, ext_pos[i] = 3 + i;
    assert_int_equal(model_decode(c, 4, ext_slot, sa + 3, ext_pos, &lg), BASE_OK);
    assert_int_equal(model_decode(c, 2, ext_slot + 4, sa + 7, ext_pos + 4, &lg), BASE_OK);
    for (int i = 0; i < 2; i++) {
        double e = test_max_abs_diff((const float *)lg->data + i * V, fa + (7 + i) * V, V);
        if (e > worst) worst = e;
    }
    printf("batched decode: max |diff| %.3g\n", worst);
    assert_true(worst < 1e-4);
    /* limits are errors, not crashes */
    int32_t sl = 0, tk = 0, ps = 16;
    assert_int_equal(model_decode(c, 1, &sl, &tk, &ps, &lg), BASE_ERR_LIMIT);
    tk = (int32_t)V;
    ps = 1;
    assert_int_equal(model_decode(c, 1, &sl, &tk, &ps, &lg), BASE_ERR_INVALID);
    sl = 5;
    tk = 0;
    assert_int_equal(model_decode(c, 1, &sl, &tk, &ps, &lg), BASE_ERR_INVALID);
    model_cache_free(c);
    free(fa), free(fb), free(fc);
    model_free(m);
}

/* Explicit page pool: a sequence decoded through scattered pages, two
 * slots sharing full prompt pages (model_cache_copy copies only the partial
 * one), and mapping errors. Logits equal the full forward's. */
static void test_paged_cache(void **s) {
    (void)s;
    model *m = random_model("", 9);
    int64_t V = model_cfg(m)->vocab_size;
    enum { T = 14, P = 9 };
    int32_t ids[T];
    for (int i = 0; i < T; i++) ids[i] = (i * 13 + 2) % (int32_t)V;
    float *full = malloc(T * V * sizeof(float));
    int32_t fcu[2] = {0, T};
    assert_int_equal(model_forward_logits(m, 1, ids, fcu, full, NULL), BASE_OK);
    model_cache_limits lim = {.slots = 2, .max_len = 16, .max_batch = 2, .max_prefill = 16, .page_size = 4, .pages = 7};
    model_cache *c = NULL;
    assert_int_equal(model_cache_new(m, &lim, &c), BASE_OK);
    int64_t ps, np, mb;
    model_cache_geometry(c, &ps, &np, &mb);
    assert_int_equal(ps, 4), assert_int_equal(np, 7), assert_int_equal(mb, 4);
    /* nothing mapped yet: prefill refuses */
    int32_t slot = 0, pcu[2] = {0, P};
    const tensor *lg;
    assert_int_equal(model_prefill(c, 1, &slot, ids, pcu, &lg), BASE_ERR_INVALID);
    /* slot 0: pages 5, 1, 6 (positions 0..11); slot 1 shares 5 and 1, own page 3 */
    int32_t p0[4] = {5, 1, 6, 0}, p1[3] = {5, 1, 3}, bad[1] = {7};
    assert_int_equal(model_cache_map(c, 0, p0, 3), BASE_OK);
    assert_int_equal(model_cache_map(c, 1, p1, 3), BASE_OK);
    assert_int_equal(model_cache_map(c, 1, bad, 1), BASE_ERR_INVALID);  /* page outside the pool */
    assert_int_equal(model_cache_map(c, 2, p1, 1), BASE_ERR_INVALID);   /* no slot 2 */
    assert_int_equal(model_cache_map(c, 0, p0, 5), BASE_ERR_INVALID);   /* more than mb pages */
    assert_int_equal(model_prefill(c, 1, &slot, ids, pcu, &lg), BASE_OK);
    double worst = test_max_abs_diff(lg->data, full + (P - 1) * V, V);
    model_cache_copy(c, 1, 0, P); /* copies position 8 (page 6 -> 3) only */
    /* both slots continue with the same tokens: same logits as the forward */
    for (int t = P; t < 12; t++) {
        int32_t sl[2] = {0, 1}, tk[2] = {ids[t], ids[t]}, pos[2] = {t, t};
        assert_int_equal(model_decode(c, 2, sl, tk, pos, &lg), BASE_OK);
        for (int i = 0; i < 2; i++) {
            double e = test_max_abs_diff((const float *)lg->data + i * V, full + t * V, V);
            if (e > worst) worst = e;
        }
    }
    /* position 12 needs a fourth page: unmapped is an error, mapped works */
    int32_t t12 = 12;
    assert_int_equal(model_decode(c, 1, &slot, &ids[12], &t12, &lg), BASE_ERR_INVALID);
    p0[3] = 4;
    assert_int_equal(model_cache_map(c, 0, p0, 4), BASE_OK);
    for (int t = 12; t < T; t++) {
        int32_t pos = t;
        assert_int_equal(model_decode(c, 1, &slot, &ids[t], &pos, &lg), BASE_OK);
        double e = test_max_abs_diff(lg->data, full + t * V, V);
        if (e > worst) worst = e;
    }
    printf("paged cache: max |diff| %.3g\n", worst);
    assert_true(worst < 1e-4);
    /* bytes: the pool, not slots x max_len */
    model_cache_limits one = lim, two = lim;
    two.pages = 14;
    assert_int_equal(model_cache_bytes(model_cfg(m), &two) - model_cache_bytes(model_cfg(m), &one),
                     7 * model_cache_page_bytes(model_cfg(m), 4));
    model_cache_free(c);
    free(full);
    model_free(m);
}

/* Whole-model backward against finite differences of
 * L = sum_t a_t logp_t + b_t ent_t along random parameter directions (each
 * tensor's direction scaled by its RMS, so every tensor moves by the same
 * relative amount). The routing biases are set far apart so that no expert
 * choice flips under the perturbation (the choice is not differentiable);
 * routing weights and everything else still move. Biases 3 * 2^k make
 * every sum of two differ by more than two sigmoid scores can. */
static double model_loss(model_train *tr, const model_batch *b, const float *a, const float *bb, int64_t n) {
    assert_int_equal(model_forward(tr, b), BASE_OK);
    float *lp = malloc(n * 4), *en = malloc(n * 4);
    model_train_download(tr, lp, en);
    double l = 0;
    for (int64_t t = 0; t < n; t++) l += (double)a[t] * lp[t] + (double)bb[t] * en[t];
    free(lp), free(en);
    return l;
}

static void fd_model(const char *over, int recompute) {
    model *m = random_model_std(over, 3, 0.1f);
    enum { N = 13 };
    int32_t ids[N], cu[3] = {0, 6, N};
    for (int i = 0; i < N; i++) ids[i] = (i * 17 + 3) % (int32_t)model_cfg(m)->vocab_size;
    float a[N], bb[N];
    test_rand_f32(a, N, 91, 1.0f);
    test_rand_f32(bb, N, 92, 1.0f);
    int64_t P = model_numel(m);
    float *p = model_params(m), *p0 = malloc(P * 4), *v = malloc(P * 4);
    int E = model_cfg(m)->n_routed_experts;
    for (int i = 0; i < model_nparams(m); i++) {
        const model_param *mp = model_param_at(m, i);
        if (!mp->trainable)
            for (int e = 0; e < E; e++) p[mp->offset + e] = 3.0f * ldexpf(1.0f, (e * 5 + i) % E);
    }
    model_train_limits lim = {.max_tokens = N, .max_seqs = 2, .recompute = recompute};
    model_train *tr = NULL;
    assert_int_equal(model_train_new(m, &lim, &tr), BASE_OK);
    model_batch b = {.nseq = 2, .ids = ids, .cu_seqlens = cu, .logit_scale = 0.8f};
    model_loss(tr, &b, a, bb, N);
    float *g = model_grads_new(m);
    model_backward(tr, a, bb, g);
    memcpy(p0, p, P * 4);
    for (int dir = 0; dir < 2; dir++) {
        test_rand_f32(v, P, 95 + dir, 1.0f);
        for (int i = 0; i < model_nparams(m); i++) {
            const model_param *mp = model_param_at(m, i);
            double ss = 0;
            for (int64_t k = 0; k < mp->numel; k++) ss += (double)p0[mp->offset + k] * p0[mp->offset + k];
            float rms = mp->trainable ? (float)sqrt(ss / mp->numel) : 0.0f; /* no move along the bias */
            for (int64_t k = 0; k < mp->numel; k++) v[mp->offset + k] *= rms;
        }
        double an = 0;
        for (int64_t k = 0; k < P; k++) an += (double)g[k] * v[k];
        double eps = 1e-3, l[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            for (int64_t k = 0; k < P; k++) p[k] = p0[k] + (float)((sgn ? -eps : eps) * v[k]);
            l[sgn] = model_loss(tr, &b, a, bb, N);
        }
        memcpy(p, p0, P * 4);
        double fd = (l[0] - l[1]) / (2 * eps);
        double rel = fabs(fd - an) / fmax(fabs(an), 1e-2);
        printf("model fd [%s%s] dir %d: analytic %+.6e fd %+.6e rel %.2e\n", over, recompute ? ", recompute" : "", dir, an, fd, rel);
        assert_true(rel < 1e-2);
    }
    /* backward accumulates: a second pass doubles the gradient */
    float *g2 = malloc(P * 4);
    memcpy(g2, g, P * 4);
    model_loss(tr, &b, a, bb, N);
    model_backward(tr, a, bb, g);
    for (int64_t k = 0; k < P; k += 97) assert_true(fabsf(g[k] - 2 * g2[k]) <= 1e-5f * (1 + fabsf(g[k])));
    model_ops(m)->free(g);
    free(g2), free(p0), free(v);
    model_train_free(tr);
    model_free(m);
}

static void test_fd_model(void **s) {
    (void)s;
    fd_model("", 0);
    fd_model("\"q_lora_rank\": null, \"n_shared_experts\": 0, \"norm_topk_prob\": false", 1);
    fd_model("\"tie_word_embeddings\": true", 0);
}

/* ---- checkpoint errors ----------------------------------------------------- */

static void write_checkpoint(const char *dir, const char *config, const char *drop, const char *reshape) {
    char *src = test_shared_path("fixtures/hf-tiny-v3-a/model.safetensors");
    st_file *f = NULL;
    assert_int_equal(st_open(src, &f), BASE_OK);
    st_writer *w = st_writer_new();
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        if (drop && !strcmp(t->name, drop)) continue;
        int64_t shape[4];
        memcpy(shape, t->shape, sizeof shape);
        if (reshape && !strcmp(t->name, reshape)) shape[0] /= 2, shape[1] *= 2;
        st_writer_add(w, t->name, t->dtype, t->ndim, shape, t->data);
    }
    char *out = base_path_join(dir, "model.safetensors");
    assert_int_equal(st_writer_write(w, out), BASE_OK);
    st_writer_free(w);
    st_close(f);
    char *cp = base_path_join(dir, "config.json");
    test_write_file(cp, config, strlen(config));
    free(out), free(cp), free(src);
}

static void test_checkpoint_errors(void **s) {
    (void)s;
    char *cfgp = test_shared_path("fixtures/hf-tiny-v3-a/config.json");
    char *cfg = NULL;
    size_t n;
    assert_int_equal(base_read_file(cfgp, &cfg, &n), BASE_OK);
    char *dir = test_tmpdir();
    model *m = NULL;
    write_checkpoint(dir, cfg, "model.layers.2.self_attn.kv_b_proj.weight", NULL);
    assert_int_equal(model_load(dir, ops_cpu(), NULL, &m), BASE_ERR_INVALID);
    printf("missing: %s\n", base_err_msg());
    assert_non_null(strstr(base_err_msg(), "missing tensor model.layers.2.self_attn.kv_b_proj.weight"));
    write_checkpoint(dir, cfg, NULL, "model.layers.1.mlp.experts.3.up_proj.weight");
    assert_int_equal(model_load(dir, ops_cpu(), NULL, &m), BASE_ERR_INVALID);
    printf("reshaped: %s\n", base_err_msg());
    assert_non_null(strstr(base_err_msg(), "model.layers.1.mlp.experts.3.up_proj.weight has shape [16, 128], the config needs [32, 64]"));
    /* the bias may be absent (zeros, as HF) */
    write_checkpoint(dir, cfg, "model.layers.1.mlp.gate.e_score_correction_bias", NULL);
    assert_int_equal(model_load(dir, ops_cpu(), NULL, &m), BASE_OK);
    model_free(m);
    /* a config the weights do not fit */
    char *bad = malloc(n + 64);
    const char *p = strstr(cfg, "\"kv_lora_rank\": 32");
    assert_non_null(p);
    snprintf(bad, n + 64, "%.*s\"kv_lora_rank\": 16%s", (int)(p - cfg), cfg, p + strlen("\"kv_lora_rank\": 32"));
    write_checkpoint(dir, bad, NULL, NULL);
    assert_int_equal(model_load(dir, ops_cpu(), NULL, &m), BASE_ERR_INVALID);
    printf("config mismatch: %s\n", base_err_msg());
    assert_non_null(strstr(base_err_msg(), "the config needs"));
    /* bad batches */
    write_checkpoint(dir, cfg, NULL, NULL);
    assert_int_equal(model_load(dir, ops_cpu(), NULL, &m), BASE_OK);
    int32_t ids[3] = {1, 400, 2}, cu[2] = {0, 3};
    assert_int_equal(model_forward_logits(m, 1, ids, cu, NULL, NULL), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "id 400 outside the vocabulary"));
    model_train_limits lim = {.max_tokens = 2, .max_seqs = 1};
    model_train *tr = NULL;
    assert_int_equal(model_train_new(m, &lim, &tr), BASE_OK);
    ids[1] = 4;
    model_batch b = {.nseq = 1, .ids = ids, .cu_seqlens = cu};
    assert_int_equal(model_forward(tr, &b), BASE_ERR_LIMIT);
    model_train_free(tr);
    model_free(m);
    free(bad);
    test_rmdir(dir);
    free(dir), free(cfg), free(cfgp);
}


/* The same weights as F32 (one file), BF16, FP8 e4m3 with 128x128 block
 * scales (quantization_config), and F32 split over two shards with an
 * index: each loads to the values its dtype holds, bit for bit. */
static void test_checkpoint_formats(void **s) {
    (void)s;
    char *src = test_shared_path("fixtures/hf-tiny-v3-a/model.safetensors");
    char *cfgp = test_shared_path("fixtures/hf-tiny-v3-a/config.json");
    char *cfg = NULL;
    size_t cn;
    assert_int_equal(base_read_file(cfgp, &cfg, &cn), BASE_OK);
    st_file *f = NULL;
    assert_int_equal(st_open(src, &f), BASE_OK);
    model *ref = NULL;
    char *fxdir = test_shared_path("fixtures/hf-tiny-v3-a");
    assert_int_equal(model_load(fxdir, ops_cpu(), NULL, &ref), BASE_OK);
    int64_t P = model_numel(ref);
    for (int fmt = 0; fmt < 3; fmt++) { /* 0 BF16, 1 FP8, 2 two shards */
        char *dir = test_tmpdir();
        float *want = malloc(P * 4);
        memcpy(want, model_params(ref), P * 4);
        st_writer *w[2] = {st_writer_new(), st_writer_new()};
        void **keep = calloc((size_t)st_count(f) * 2, sizeof(void *));
        base_buf index = {0};
        base_buf_puts(&index, "{\"metadata\": {}, \"weight_map\": {");
        for (int i = 0; i < st_count(f); i++) {
            const st_tensor *t = st_at(f, i);
            int64_t n = (int64_t)(t->nbytes / 4);
            const float *x = t->data;
            const model_param *mp = model_param_find(ref, t->name);
            assert_non_null(mp);
            int linear = t->ndim == 2 && !strstr(t->name, "embed") && !strstr(t->name, "lm_head") && !strstr(t->name, "mlp.gate.");
            if (fmt == 0) {
                uint16_t *b = malloc(n * 2);
                for (int64_t k = 0; k < n; k++) b[k] = tensor_f32_to_bf16(x[k]), want[mp->offset + k] = tensor_bf16_to_f32(b[k]);
                st_writer_add(w[0], t->name, TENSOR_BF16, t->ndim, t->shape, b);
                keep[2 * i] = b;
            } else if (fmt == 1 && linear) {
                /* one 128x128 block covers these small weights; a second
                 * block row for tensors taller than 128 */
                int64_t rows = t->shape[0], cols = t->shape[1], sr = (rows + 127) / 128, sc = (cols + 127) / 128;
                float *scale = calloc((size_t)(sr * sc), 4);
                uint8_t *q = malloc(n);
                for (int64_t r = 0; r < rows; r++)
                    for (int64_t c = 0; c < cols; c++) {
                        float *a = &scale[(r / 128) * sc + c / 128];
                        if (fabsf(x[r * cols + c]) / 448.0f > *a) *a = fabsf(x[r * cols + c]) / 448.0f;
                    }
                for (int64_t r = 0; r < rows; r++)
                    for (int64_t c = 0; c < cols; c++) {
                        float sv = scale[(r / 128) * sc + c / 128];
                        q[r * cols + c] = tensor_f32_to_f8e4m3(sv > 0 ? x[r * cols + c] / sv : 0.0f);
                        want[mp->offset + r * cols + c] = tensor_f8e4m3_to_f32(q[r * cols + c]) * sv;
                    }
                char nm[160];
                snprintf(nm, sizeof nm, "%s_scale_inv", t->name);
                int64_t ss[2] = {sr, sc};
                st_writer_add(w[0], t->name, TENSOR_F8_E4M3, 2, t->shape, q);
                st_writer_add(w[0], nm, TENSOR_F32, 2, ss, scale);
                keep[2 * i] = q, keep[2 * i + 1] = scale;
            } else {
                int half = fmt == 2 && i % 2;
                st_writer_add(w[half], t->name, t->dtype, t->ndim, t->shape, t->data);
                if (fmt == 2)
                    base_buf_printf(&index, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? ", " : "", t->name, half + 1);
            }
        }
        base_buf_puts(&index, "}}");
        if (fmt < 2) {
            char *out = base_path_join(dir, "model.safetensors");
            assert_int_equal(st_writer_write(w[0], out), BASE_OK);
            free(out);
        } else {
            for (int h = 0; h < 2; h++) {
                char nm[64];
                snprintf(nm, sizeof nm, "model-0000%d-of-00002.safetensors", h + 1);
                char *out = base_path_join(dir, nm);
                assert_int_equal(st_writer_write(w[h], out), BASE_OK);
                free(out);
            }
            char *ip = base_path_join(dir, "model.safetensors.index.json");
            test_write_file(ip, index.data, index.len);
            free(ip);
        }
        /* config: FP8 declares its quantisation */
        char *cp = base_path_join(dir, "config.json");
        if (fmt == 1) {
            base_buf c2 = {0};
            base_buf_append(&c2, cfg, 1);
            base_buf_puts(&c2, "\"quantization_config\": {\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\", "
                               "\"quant_method\": \"fp8\", \"weight_block_size\": [128, 128]}, ");
            base_buf_append(&c2, cfg + 1, cn - 1);
            test_write_file(cp, c2.data, c2.len);
            base_buf_free(&c2);
        } else {
            test_write_file(cp, cfg, cn);
        }
        model *m = NULL;
        if (model_load(dir, ops_cpu(), NULL, &m)) fail_msg("format %d: %s", fmt, base_err_msg());
        assert_int_equal(model_numel(m), P);
        if (fmt == 1) assert_true(model_cfg(m)->fp8);
        assert_memory_equal(model_params(m), want, P * 4);
        /* and it runs: logits close to the f32 model's */
        int32_t ids[5] = {3, 7, 11, 200, 5}, cu[2] = {0, 5};
        float *l0 = malloc(5 * 320 * 4), *l1 = malloc(5 * 320 * 4);
        assert_int_equal(model_forward_logits(ref, 1, ids, cu, l0, NULL), BASE_OK);
        assert_int_equal(model_forward_logits(m, 1, ids, cu, l1, NULL), BASE_OK);
        double err = test_max_abs_diff(l1, l0, 5 * 320);
        printf("format %s: params as stored, logits within %.3g of f32\n", fmt == 0 ? "bf16" : fmt == 1 ? "fp8" : "2 shards", err);
        if (fmt == 2) assert_true(err == 0);
        else assert_true(err < (fmt == 0 ? 0.05 : 0.5));
        free(l0), free(l1);
        model_free(m);
        for (int i = 0; i < st_count(f) * 2; i++) free(keep[i]);
        free(keep);
        st_writer_free(w[0]), st_writer_free(w[1]);
        base_buf_free(&index);
        free(cp), free(want);
        test_rmdir(dir);
        free(dir);
    }
    model_free(ref);
    st_close(f);
    free(src), free(cfgp), free(cfg), free(fxdir);
}


/* A checkpoint with an MTP module (layer num_hidden_layers: a full decoder
 * layer plus enorm, hnorm, eh_proj, shared_head.norm and the embed / head
 * copies): loaded into the arena under its names, unused by the forward,
 * skipped on request. */
static void test_mtp_load(void **s) {
    (void)s;
    char *src = test_shared_path("fixtures/hf-tiny-v3-a/model.safetensors");
    char *cfgp = test_shared_path("fixtures/hf-tiny-v3-a/config.json");
    char *cfg = NULL;
    size_t cn;
    assert_int_equal(base_read_file(cfgp, &cfg, &cn), BASE_OK);
    char *p = strstr(cfg, "\"num_nextn_predict_layers\": 0");
    assert_non_null(p);
    p[strlen("\"num_nextn_predict_layers\": ")] = '1';
    st_file *f = NULL;
    assert_int_equal(st_open(src, &f), BASE_OK);
    st_writer *w = st_writer_new();
    enum { MAXT = 256 };
    char *names[MAXT];
    int nn = 0;
    float *extra = malloc(64 * 128 * 4), *big = malloc(320 * 64 * 4);
    test_rand_f32(extra, 64 * 128, 5, 0.1f);
    test_rand_f32(big, 320 * 64, 6, 0.1f);
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
        /* layer 2 (MoE) doubles as the MTP decoder layer 3 */
        if (!strncmp(t->name, "model.layers.2.", 15)) {
            char nm[160];
            snprintf(nm, sizeof nm, "model.layers.3.%s", t->name + 15);
            names[nn] = base_xstrdup(nm);
            st_writer_add(w, names[nn++], t->dtype, t->ndim, t->shape, t->data);
        }
    }
    int64_t d1[1] = {64}, eh[2] = {64, 128}, vd[2] = {320, 64};
    st_writer_add(w, "model.layers.3.enorm.weight", TENSOR_F32, 1, d1, extra);
    st_writer_add(w, "model.layers.3.hnorm.weight", TENSOR_F32, 1, d1, extra + 64);
    st_writer_add(w, "model.layers.3.eh_proj.weight", TENSOR_F32, 2, eh, extra);
    st_writer_add(w, "model.layers.3.shared_head.norm.weight", TENSOR_F32, 1, d1, extra + 128);
    st_writer_add(w, "model.layers.3.embed_tokens.weight", TENSOR_F32, 2, vd, big);
    st_writer_add(w, "model.layers.3.shared_head.head.weight", TENSOR_F32, 2, vd, big);
    char *dir = test_tmpdir(), *out = base_path_join(dir, "model.safetensors"), *cp = base_path_join(dir, "config.json");
    assert_int_equal(st_writer_write(w, out), BASE_OK);
    test_write_file(cp, cfg, cn);
    model *m = NULL, *m0 = NULL;
    assert_int_equal(model_load(dir, ops_cpu(), NULL, &m), BASE_OK);
    assert_true(model_has_mtp(m));
    const model_param *eh_p = model_param_find(m, "model.layers.3.eh_proj.weight");
    const model_param *hd = model_param_find(m, "model.layers.3.shared_head.head.weight");
    const model_param *ex = model_param_find(m, "model.layers.3.mlp.experts.5.up_proj.weight");
    const model_param *ex2 = model_param_find(m, "model.layers.2.mlp.experts.5.up_proj.weight");
    assert_non_null(eh_p), assert_non_null(hd), assert_non_null(ex), assert_non_null(ex2);
    assert_true(eh_p->mtp && ex->mtp && !ex2->mtp);
    assert_memory_equal(model_params(m) + eh_p->offset, extra, 64 * 128 * 4);
    assert_memory_equal(model_params(m) + hd->offset, big, 320 * 64 * 4);
    assert_memory_equal(model_params(m) + ex->offset, model_params(m) + ex2->offset, ex->numel * 4);
    model_load_opts skip = {.skip_mtp = 1};
    assert_int_equal(model_load(dir, ops_cpu(), &skip, &m0), BASE_OK);
    assert_false(model_has_mtp(m0));
    assert_null(model_param_find(m0, "model.layers.3.eh_proj.weight"));
    int32_t ids[6] = {3, 9, 27, 81, 243, 100}, cu[2] = {0, 6};
    float *l0 = malloc(6 * 320 * 4), *l1 = malloc(6 * 320 * 4);
    assert_int_equal(model_forward_logits(m, 1, ids, cu, l1, NULL), BASE_OK);
    assert_int_equal(model_forward_logits(m0, 1, ids, cu, l0, NULL), BASE_OK);
    assert_memory_equal(l0, l1, 6 * 320 * 4);
    /* a frozen model leaves the MTP layers out; it takes the policy's
     * weights by name (the GRPO reference copied from an MTP policy) */
    model_load_opts fz = {.frozen = 1};
    model *r = NULL;
    assert_int_equal(model_init_random(model_cfg(m), ops_cpu(), 3, 0.1f, &fz, &r), BASE_OK);
    assert_false(model_has_mtp(r));
    assert_true(model_numel(r) < model_numel(m));
    assert_int_equal(model_copy_weights(r, m), BASE_OK);
    assert_int_equal(model_forward_logits(r, 1, ids, cu, l0, NULL), BASE_OK);
    assert_memory_equal(l0, l1, 6 * 320 * 4);
    assert_int_equal(model_copy_weights(m, r), BASE_ERR_INVALID); /* the MTP layers have no source */
    assert_non_null(strstr(base_err_msg(), "model.layers.3.enorm.weight is missing"));
    model_free(r);
    model_free(m), model_free(m0);
    for (int i = 0; i < nn; i++) free(names[i]);
    st_writer_free(w);
    st_close(f);
    test_rmdir(dir);
    free(extra), free(big), free(l0), free(l1), free(dir), free(out), free(cp), free(src), free(cfgp), free(cfg);
}

/* Planned sizes: the arena of model_train_new is what model_train_bytes says,
 * and recomputation needs less. */
static void test_memory_plan(void **s) {
    (void)s;
    model *m = random_model("", 1);
    model_train_limits a = {.max_tokens = 64, .max_seqs = 4, .recompute = 0}, b = a;
    b.recompute = 1;
    size_t full = model_train_bytes(model_cfg(m), &a), rc = model_train_bytes(model_cfg(m), &b);
    printf("activation arena: %zu bytes, %zu with recompute\n", full, rc);
    assert_true(rc < full);
    model_cache_limits cl = {.slots = 4, .max_len = 32, .max_batch = 4, .max_prefill = 32};
    assert_true(model_cache_bytes(model_cfg(m), &cl) > (size_t)3 * 4 * 32 * 24 * 4);
    model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_errors),     cmocka_unit_test(test_config_limits), cmocka_unit_test(test_config_fields),
        cmocka_unit_test(test_yarn_v3),           cmocka_unit_test(test_decode_equals_forward),
        cmocka_unit_test(test_batched_decode), cmocka_unit_test(test_paged_cache),    cmocka_unit_test(test_fd_model),
        cmocka_unit_test(test_checkpoint_errors), cmocka_unit_test(test_checkpoint_formats),
        cmocka_unit_test(test_mtp_load),          cmocka_unit_test(test_memory_plan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
