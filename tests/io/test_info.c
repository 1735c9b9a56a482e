/*
 * Tests of `grpo info`: the fixture's figures, an FP8 checkpoint (scales are
 * not parameters), and every kind of broken checkpoint exits 1 with a
 * message naming the file (truncated shard, corrupt header, missing shard,
 * bad config.json, FP8 weight without its scale), and config.json is
 * validated exactly as `grpo forward` validates it.
 */
#include "common/test_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/st.h"
#include "model/model.h"

#define has(msg, s)                                                                                \
    do {                                                                                           \
        if (!strstr((msg), (s))) fail_msg("missing \"%s\" in:\n%s", (s), (msg));                   \
    } while (0)

static int info(const char *dir, char **out) {
    char args[4096];
    snprintf(args, sizeof args, "info '%s'", dir);
    return test_run_grpo(args, out);
}

static void test_info_fixture(void **state) {
    (void)state;
    char *fx = test_shared_path("fixtures/hf-tiny-v3-a");
    char *out;
    int rc = info(fx, &out);
    if (rc) fail_msg("rc %d:\n%s", rc, out);
    has(out, "DeepseekV3ForCausalLM (model_type deepseek_v3)");
    has(out, "parameters: 273,088\n");
    has(out, "F32            91 tensors            273,088 elements          1,092,352 bytes");
    has(out, "in 1 file\n");
    has(out, "1 dense + 2 MoE");
    has(out, "q_lora_rank 48, kv_lora_rank 32, qk_nope 32, qk_rope 16, v_head 32");
    has(out, "8 routed (width 32) + 1 shared, top-2, 4 groups keep 2");
    has(out, "yarn factor 4 (original 128)");
    has(out, "predicts 273,088 parameters: matches");
    has(out, "model.safetensors  91 tensors");
    free(out);
    free(fx);
    assert_int_equal(test_run_grpo("info", &out), 2);
    has(out, "usage: grpo info MODEL_DIR");
    free(out);
    assert_int_equal(test_run_grpo("info --help", &out), 0);
    free(out);
    assert_int_equal(test_run_grpo("info /nonexistent/model", &out), 1);
    has(out, "/nonexistent/model: No such file");
    free(out);
}

/* A copy of the fixture in a temporary directory. */
static char *copy_fixture(void) {
    char *dir = test_tmpdir();
    test_tiny_model(dir, 0);
    return dir;
}

static void expect_fail(const char *dir, const char *what1, const char *what2) {
    char *out;
    int rc = info(dir, &out);
    if (rc != 1) fail_msg("rc %d (want 1):\n%s", rc, out);
    has(out, what1);
    has(out, what2);
    free(out);
}

static void test_info_broken(void **state) {
    (void)state;
    char *dir = copy_fixture();
    char *st = base_path_join(dir, "model.safetensors");
    char *cfg = base_path_join(dir, "config.json");
    char *txt;
    size_t n;
    assert_int_equal(base_read_file(st, &txt, &n), BASE_OK);

    /* truncated: the last tensor runs past the end */
    assert_int_equal(truncate(st, (off_t)n - 100), 0);
    expect_fail(dir, st, "run past the data section");
    /* corrupt header: a byte of JSON syntax overwritten */
    test_write_file(st, txt, n);
    char *bad = malloc(n);
    memcpy(bad, txt, n);
    bad[8] = '[';
    test_write_file(st, bad, n);
    expect_fail(dir, st, "not well-formed JSON");
    /* corrupt header: a shape changed so that it no longer fits its bytes */
    memcpy(bad, txt, n);
    char *sh = strstr(bad + 8, "\"shape\":[320,64]");
    assert_non_null(sh);
    memcpy(sh, "\"shape\":[321,64]", 16);
    test_write_file(st, bad, n);
    expect_fail(dir, st, "shape [321, 64] x F32 needs 82176 bytes");
    free(bad);
    test_write_file(st, txt, n);

    /* bad config.json: malformed, wrong type, missing key, missing file */
    char *ctxt;
    size_t cn;
    assert_int_equal(base_read_file(cfg, &ctxt, &cn), BASE_OK);
    test_write_file(cfg, ctxt, cn / 2);
    expect_fail(dir, cfg, "malformed JSON");
    const char *wrong = "{\"model_type\":\"deepseek_v3\",\"vocab_size\":320,\"hidden_size\":\"64\","
                        "\"num_hidden_layers\":3,\"num_attention_heads\":4}";
    test_write_file(cfg, wrong, strlen(wrong));
    expect_fail(dir, cfg, "hidden_size must be an integer in [1, 1048576] (got a string)");
    const char *missing = "{\"model_type\":\"deepseek_v3\",\"vocab_size\":320,\"hidden_size\":64,"
                          "\"num_attention_heads\":4}";
    test_write_file(cfg, missing, strlen(missing));
    expect_fail(dir, cfg, "\"num_hidden_layers\" is missing");
    unlink(cfg);
    expect_fail(dir, cfg, "No such file");
    test_write_file(cfg, ctxt, cn);

    /* sharded, with a shard missing */
    char *sh1 = base_path_join(dir, "model-00001-of-00002.safetensors");
    assert_int_equal(rename(st, sh1), 0);
    const char *idx = "{\"metadata\":{},\"weight_map\":{\"lm_head.weight\":\"model-00001-of-00002.safetensors\","
                      "\"model.norm.weight\":\"model-00002-of-00002.safetensors\"}}";
    char *ip = base_path_join(dir, "model.safetensors.index.json");
    test_write_file(ip, idx, strlen(idx));
    expect_fail(dir, "model-00002-of-00002.safetensors", "No such file");
    free(ip);
    free(sh1);
    free(ctxt);
    free(txt);
    free(cfg);
    free(st);
    test_rmdir(dir);
    free(dir);
}

/* The line of `out` that starts with `prefix`, without it (malloc'd). */
static char *line_after(const char *out, const char *prefix) {
    const char *p = strstr(out, prefix);
    if (!p) fail_msg("no \"%s\" in:\n%s", prefix, out);
    p += strlen(prefix);
    return strndup(p, strcspn(p, "\n"));
}

/* `grpo info` validates config.json as `grpo forward` does: a config that
 * forward refuses is refused by info with the same message (info used to
 * print num_attention_heads 2^31 as -2147483648 and accept eos_token_id
 * 1e30 and configs forward cannot build). */
static void test_info_validates_as_forward(void **state) {
    (void)state;
    char *dir = copy_fixture();
    char *cfg = base_path_join(dir, "config.json");
    char *ctxt;
    size_t cn;
    assert_int_equal(base_read_file(cfg, &ctxt, &cn), BASE_OK);
    struct {
        const char *key, *value, *msg;
    } cases[] = {
        {"num_attention_heads", "2147483648", "num_attention_heads must be an integer in [1, 16384] (got 2147483648)"},
        {"eos_token_id", "1e30", "eos_token_id must be an id of the vocabulary, an integer in [0, 319]"},
        {"hidden_size", "1e12", "hidden_size must be an integer in [1, 1048576] (got 1000000000000)"},
        {"n_routed_experts", "10", "n_routed_experts 10 is not divisible by n_group 4"},
        {"max_position_embeddings", "-5", "max_position_embeddings must be an integer in [1, 16777216] (got -5)"},
    };
    char *in = base_path_join(dir, "in.jsonl"), *outp = base_path_join(dir, "out.safetensors");
    test_write_file(in, "{\"ids\": [1, 2]}\n", 16);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *j = cJSON_Parse(ctxt);
        assert_non_null(j);
        cJSON_ReplaceItemInObjectCaseSensitive(j, cases[i].key, cJSON_Parse(cases[i].value));
        char *txt = cJSON_Print(j);
        test_write_file(cfg, txt, strlen(txt));
        char *oi, *of, args[4096];
        int ri = info(dir, &oi);
        snprintf(args, sizeof args, "forward --model '%s' --in '%s' --out '%s' --device cpu", dir, in, outp);
        int rf = test_run_grpo(args, &of);
        if (ri != 1 || rf != 1) fail_msg("%s: info rc %d, forward rc %d:\n%s\n%s", cases[i].key, ri, rf, oi, of);
        char *mi = line_after(oi, "grpo info: "), *mf = line_after(of, "grpo forward: ");
        assert_string_equal(mi, mf);
        has(mi, cfg);
        has(mi, cases[i].msg);
        free(mi), free(mf), free(oi), free(of), free(txt);
        cJSON_Delete(j);
    }
    free(in), free(outp), free(ctxt), free(cfg);
    test_rmdir(dir);
    free(dir);
}

/* An FP8 checkpoint: the scale tensors are reported but not counted as
 * parameters; a weight without its scale is an error naming both. */
static void test_info_fp8(void **state) {
    (void)state;
    char *dir = test_tmpdir();
    const char *cfg = "{\"architectures\":[\"DeepseekV3ForCausalLM\"],\"model_type\":\"deepseek_v3\","
                      "\"vocab_size\":8,\"hidden_size\":200,\"num_hidden_layers\":1,"
                      "\"num_attention_heads\":1,\"quantization_config\":{\"quant_method\":\"fp8\","
                      "\"fmt\":\"e4m3\",\"weight_block_size\":[128,128]}}";
    char *cp = base_path_join(dir, "config.json");
    test_write_file(cp, cfg, strlen(cfg));
    static uint8_t q[300 * 200];
    static float s[3 * 2];
    uint16_t e[8 * 200] = {0};
    int64_t qs[2] = {300, 200}, ss[2] = {3, 2}, es[2] = {8, 200};
    char *p = base_path_join(dir, "model.safetensors");
    st_writer *w = st_writer_new();
    st_writer_add(w, "model.embed_tokens.weight", TENSOR_BF16, 2, es, e);
    st_writer_add(w, "model.layers.0.mlp.up_proj.weight", TENSOR_F8_E4M3, 2, qs, q);
    st_writer_add(w, "model.layers.0.mlp.up_proj.weight_scale_inv", TENSOR_F32, 2, ss, s);
    assert_int_equal(st_writer_write(w, p), BASE_OK);
    st_writer_free(w);
    char *out;
    int rc = info(dir, &out);
    if (rc) fail_msg("rc %d:\n%s", rc, out);
    has(out, "parameters: 61,600 (1 FP8 block-scale tensors not counted)");
    has(out, "F8_E4M3         1 tensors             60,000 elements             60,000 bytes");
    has(out, "F32             1 tensors                  6 elements                 24 bytes");
    has(out, "quantization               fp8 e4m3, blocks 128x128");
    has(out, "lacks the fields to predict");
    free(out);
    /* the scale with a wrong shape, then missing */
    int64_t bad[2] = {2, 2};
    w = st_writer_new();
    st_writer_add(w, "model.layers.0.mlp.up_proj.weight", TENSOR_F8_E4M3, 2, qs, q);
    st_writer_add(w, "model.layers.0.mlp.up_proj.weight_scale_inv", TENSOR_F32, 2, bad, s);
    assert_int_equal(st_writer_write(w, p), BASE_OK);
    st_writer_free(w);
    expect_fail(dir, p, "'model.layers.0.mlp.up_proj.weight_scale_inv': shape does not match its weight "
                        "'model.layers.0.mlp.up_proj.weight' (expected [3, 2])");
    w = st_writer_new();
    st_writer_add(w, "model.layers.0.mlp.up_proj.weight", TENSOR_F8_E4M3, 2, qs, q);
    assert_int_equal(st_writer_write(w, p), BASE_OK);
    st_writer_free(w);
    expect_fail(dir, p, "'model.layers.0.mlp.up_proj.weight': F8_E4M3 weight without "
                        "'model.layers.0.mlp.up_proj.weight_scale_inv'");
    free(p);
    free(cp);
    test_rmdir(dir);
    free(dir);
}

/* The number printed on the line of `role`, commas removed. */
static long long printed(const char *out, const char *role) {
    const char *p = strstr(out, role);
    if (!p) fail_msg("no '%s' in:\n%s", role, out);
    p += strlen(role);
    while (*p == ' ') p++;
    long long v = 0;
    for (; (*p >= '0' && *p <= '9') || *p == ','; p++)
        if (*p != ',') v = v * 10 + (*p - '0');
    return v;
}

/* --memory prints the bytes model_memory_plan / model_cache_plan give (the
 * sizes model_load and model_cache_new allocate: tests/model/test_frozen.c
 * counts them), for a checkpoint and for a config file alone. */
static void test_info_memory(void **state) {
    (void)state;
    char *fp8 = test_src_path("tests/model/data/tiny-v3-a-fp8"), *cfgp = base_path_join(fp8, "config.json");
    model_config mc;
    assert_int_equal(model_config_load(fp8, &mc), BASE_OK);
    const char *precs[3] = {"f32", "bf16", "fp8"};
    for (int k = 0; k < 3; k++)
        for (int dev = 0; dev < 2; dev++)
            for (int form = 0; form < 2; form++) {
                char args[1024], *out;
                snprintf(args, sizeof args, "info '%s' --memory --precision %s --device %s --sequences 4 --max-len 64",
                         form ? cfgp : fp8, precs[k], dev ? "cuda" : "cpu");
                int rc = test_run_grpo(args, &out);
                if (rc) fail_msg("%s: rc %d\n%s", args, rc, out);
                model_load_opts lo = {.frozen = 1, .max_context = 64};
                assert_int_equal(model_precision_parse(precs[k], &lo.precision), BASE_OK);
                model_mem w;
                assert_int_equal(model_memory_plan(&mc, &lo, dev ? TENSOR_CUDA : TENSOR_CPU, &w), BASE_OK);
                model_cache_limits cl = {.slots = 4, .max_len = 64, .max_batch = 4, .max_prefill = 64};
                model_cache_mem c;
                assert_int_equal(model_cache_plan(&mc, &cl, lo.precision, dev ? TENSOR_CUDA : TENSOR_CPU, &c), BASE_OK);
                const char *wrole = k == 0 ? "weights (f32)" : k == 1 ? "weights (bf16; norms, router f32)"
                                                                      : "weights (e4m3; embedding, head bf16)";
                assert_int_equal(printed(out, wrole), (long long)(w.master + w.compute));
                if (k == 2) assert_int_equal(printed(out, "fp8 block scales"), (long long)w.scales);
                assert_int_equal(printed(out, "latent KV cache"), (long long)c.pages);
                assert_int_equal(printed(out, "workspace"), (long long)c.workspace);
                assert_int_equal(printed(out, "  total"), (long long)(model_mem_total(&w) + c.pages + c.table + c.workspace));
                has(out, dev && k ? "(bf16)" : "(f32)"); /* the cache's dtype */
                free(out);
            }
    char *out;
    char args[512];
    snprintf(args, sizeof args, "info '%s' --memory --sequences 0", fp8);
    assert_int_equal(test_run_grpo(args, &out), 2);
    has(out, "--sequences 0: bad value");
    free(out);
    snprintf(args, sizeof args, "info '%s' --memory --precision fp4", fp8);
    assert_int_equal(test_run_grpo(args, &out), 2);
    free(out);
    free(fp8), free(cfgp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_info_memory),
        cmocka_unit_test(test_info_fixture),
        cmocka_unit_test(test_info_broken),
        cmocka_unit_test(test_info_fp8),
        cmocka_unit_test(test_info_validates_as_forward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
