/*
 * Frozen models (model_load_opts.frozen): compute weights only, on the CPU.
 *
 * - frozen f32 gives the bits of the ordinary model;
 * - frozen bf16 gives the bits of an f32 model whose GEMM weights, embedding
 *   and head are the bf16-rounded values (the CPU GEMM widens bf16 exactly
 *   while packing; the arithmetic is the f32 model's);
 * - FP8 stays FP8: an e4m3 block-scaled checkpoint (tests/model/data/
 *   tiny-v3-a-fp8, quantised by PyTorch as DeepGEMM does) loaded frozen in
 *   fp8 keeps its codes and scales, and gives the bits of the same
 *   checkpoint dequantised to f32 on load (the GEMM packs e4m3(q) * scale,
 *   the f32 product st_dir_load dequantises with);
 * - --precision fp8 on an f32 checkpoint quantises on load bit for bit as
 *   PyTorch's per_block_cast_to_fp8 (codes and scales);
 * - a random model with sizes that are not multiples of 128 (partial
 *   blocks, views crossing blocks, decode's per-head kv_b slices);
 * - the bytes model_memory_plan / model_cache_plan report equal the bytes
 *   the backend's alloc was asked for (a counting op table);
 * - the reference-model operations (copy from a policy, TR-DPO mix) and the
 *   error messages.
 * "Outputs" below: full logits of two packed sequences, the training
 * forward's per-token logp, and prefill + decode logits through the cache.
 */
#include "common/test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/st.h"
#include "model/model.h"
#include "model/fixture_ref.h"

/* ---- outputs ------------------------------------------------------------- */


static void same_outputs(const char *what, model *a, model *b) {
    test_model_outputs x, y;
    test_model_outputs_run(a, &x);
    test_model_outputs_run(b, &y);
    if (memcmp(x.full, y.full, (size_t)x.nfull * sizeof(float)))
        fail_msg("%s: logits differ (max |diff| %g)", what, test_max_abs_diff(x.full, y.full, x.nfull));
    if (memcmp(x.logp, y.logp, (size_t)x.nlogp * sizeof(float)))
        fail_msg("%s: training logp differ (max |diff| %g)", what, test_max_abs_diff(x.logp, y.logp, x.nlogp));
    if (memcmp(x.dec, y.dec, (size_t)x.ndec * sizeof(float)))
        fail_msg("%s: decode logits differ (max |diff| %g)", what, test_max_abs_diff(x.dec, y.dec, x.ndec));
    printf("%s: logits, training logp and decode logits bit-identical\n", what);
    test_model_outputs_free(&x), test_model_outputs_free(&y);
}

static model *load(const char *dir, model_precision p, int frozen) {
    model_load_opts lo = {.precision = p, .frozen = frozen};
    model *m = NULL;
    if (model_load(dir, ops_cpu(), &lo, &m)) fail_msg("%s: %s", dir, base_err_msg());
    return m;
}

/* The tensors a frozen model keeps in f32 (norms, router, routing bias). */
static int stays_f32(const model_param *p) {
    size_t n = strlen(p->name), k = strlen(".mlp.gate.weight");
    return p->ndim == 1 || (n >= k && !strcmp(p->name + n - k, ".mlp.gate.weight"));
}

/* ---- frozen f32 and bf16 -------------------------------------------------- */

static void test_frozen_f32(void **s) {
    (void)s;
    char *dir = test_shared_path("fixtures/hf-tiny-v3-a");
    model *a = load(dir, MODEL_F32, 0), *b = load(dir, MODEL_F32, 1);
    assert_true(model_is_frozen(b) && !model_is_frozen(a));
    assert_non_null(model_params(b)); /* an f32 model's weights are its compute weights */
    same_outputs("hf-tiny-v3-a frozen f32 vs f32", a, b);
    model_mem ma, mb;
    model_memory(a, &ma), model_memory(b, &mb);
    assert_true(ma.master == mb.master && mb.compute == 0 && mb.scales == 0);
    model_free(a), model_free(b);
    free(dir);
}

/* An f32 model holding m's parameters rounded as a frozen model of
 * precision p stores them. */
static model *rounded_copy(const char *dir, model_precision p) {
    model *f = load(dir, MODEL_F32, 0);
    int64_t n = model_numel(f);
    float *h = malloc((size_t)n * sizeof(float));
    model_weights_to_host(f, h);
    for (int i = 0; i < model_nparams(f); i++) {
        const model_param *q = model_param_at(f, i);
        if (stays_f32(q)) continue;
        float *x = h + q->offset;
        assert_int_equal(p, MODEL_BF16);
        for (int64_t k = 0; k < q->numel; k++) x[k] = tensor_bf16_to_f32(tensor_f32_to_bf16(x[k]));
    }
    model_weights_from_host(f, h);
    free(h);
    return f;
}

static void test_frozen_bf16(void **s) {
    (void)s;
    const char *names[] = {"hf-tiny-v3-a", "tiny-v3-b", "tiny-v3-d"};
    for (int k = 0; k < 3; k++) {
        char *dir = fixture_dir(names[k]);
        model *b = load(dir, MODEL_BF16, 1), *r = rounded_copy(dir, MODEL_BF16);
        assert_null(model_params(b));
        assert_int_equal(model_get_precision(b), MODEL_BF16);
        char what[96];
        snprintf(what, sizeof what, "%s frozen bf16 (cpu) vs f32 of the bf16 values", names[k]);
        same_outputs(what, b, r);
        model_mem mb;
        model_memory(b, &mb);
        /* 2 bytes per GEMM / embedding parameter, 4 per norm, router and
         * bias parameter, plus region alignment */
        int64_t small = 0;
        for (int i = 0; i < model_nparams(b); i++)
            if (stays_f32(model_param_at(b, i))) small += model_param_at(b, i)->numel;
        size_t want = (size_t)(2 * (model_numel(b) - small) + 4 * small);
        printf("%s: frozen bf16 weights %zu bytes (%.3f per parameter; f32: %lld)\n", names[k], mb.compute,
               (double)mb.compute / (double)model_numel(b), (long long)(4 * model_numel(b)));
        assert_true(mb.master == 0 && mb.compute >= want && mb.compute < want + 256 * 64);
        model_free(b), model_free(r);
        free(dir);
    }
}

/* ---- FP8 ---------------------------------------------------------------------- */

static void test_fp8_stays_fp8(void **s) {
    (void)s;
    char *dir = fixture_dir("tiny-v3-a-fp8");
    model *q = load(dir, MODEL_FP8, 1), *d = load(dir, MODEL_F32, 0);
    assert_int_equal(model_get_precision(q), MODEL_FP8);
    same_outputs("tiny-v3-a-fp8 frozen fp8 vs dequantised to f32 on load", q, d);
    /* the stored values are the checkpoint's: dequantised they equal the f32 load */
    int64_t n = model_numel(q);
    float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
    model_weights_to_host(q, a);
    model_weights_to_host(d, b);
    for (int i = 0; i < model_nparams(q); i++) {
        const model_param *p = model_param_at(q, i);
        int head = strstr(p->name, "embed_tokens") || !strcmp(p->name, "lm_head.weight"); /* bf16 when frozen */
        for (int64_t k = p->offset; k < p->offset + p->numel; k++) {
            float want = head ? tensor_bf16_to_f32(tensor_f32_to_bf16(b[k])) : b[k];
            if (a[k] != want) fail_msg("%s[%lld]: stored %g, the f32 load has %g", p->name, (long long)(k - p->offset), a[k], b[k]);
        }
    }
    model_mem mq;
    model_memory(q, &mq);
    printf("tiny-v3-a-fp8: frozen fp8 weights %zu bytes + %zu of scales (%lld parameters)\n", mq.compute, mq.scales,
           (long long)n);
    int64_t nscale = 0, ngemm = 0;
    for (int i = 0; i < model_nparams(q); i++) {
        const model_param *p = model_param_at(q, i);
        if (stays_f32(p) || strstr(p->name, "embed_tokens") || !strcmp(p->name, "lm_head.weight")) continue;
        nscale += tensor_qblock_nscale(p->shape[0], p->shape[1]), ngemm++;
    }
    assert_int_equal(ngemm, 72); /* the checkpoint's F8 tensors */
    assert_true(mq.master == 0 && mq.scales == (size_t)nscale * sizeof(float));
    assert_true(mq.compute < (size_t)(2 * n));
    free(a), free(b);
    model_free(q), model_free(d);
    free(dir);
}

/* --precision fp8 on the f32 hf-tiny-v3-a quantises as PyTorch did when it
 * wrote tiny-v3-a-fp8: the same stored values, the same outputs. */
static void test_fp8_quantize_on_load(void **s) {
    (void)s;
    char *src = fixture_dir("hf-tiny-v3-a"), *fp8 = fixture_dir("tiny-v3-a-fp8");
    model *a = load(src, MODEL_FP8, 1), *b = load(fp8, MODEL_FP8, 1);
    int64_t n = model_numel(a);
    float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
    model_weights_to_host(a, x);
    model_weights_to_host(b, y);
    assert_memory_equal(x, y, (size_t)n * 4);
    same_outputs("hf-tiny-v3-a quantised on load vs PyTorch's FP8 copy", a, b);
    free(x), free(y);
    model_free(a), model_free(b);
    free(src), free(fp8);
}

/* The C quantiser on the hash matrix of make_fp8_fixture.py equals
 * PyTorch's per_block_cast_to_fp8 bit for bit: codes and scales. */
static void test_quant_check(void **s) {
    (void)s;
    char *dir = fixture_dir("tiny-v3-a-fp8"), *p = base_path_join(dir, "quant_check.safetensors");
    st_file *f = NULL;
    assert_int_equal(st_open(p, &f), BASE_OK);
    enum { R = 200, C = 300 };
    float *x = malloc(R * C * sizeof(float)), sc[6], want_s[6];
    uint8_t *q = malloc(R * C), *want_q = malloc(R * C);
    for (int64_t i = 0; i < R * C; i++) {
        uint64_t h = ((uint64_t)i * 2654435761ull) % (1ull << 32);
        x[i] = (float)(((double)h / 4294967296.0 - 0.5) * ldexp(1.0, (int)(i % 7) - 3));
    }
    tensor_quantize_fp8_block(q, sc, x, R, C);
    assert_int_equal(st_file_load(f, "q", TENSOR_F8_E4M3, want_q, R * C), BASE_OK);
    assert_int_equal(st_file_load(f, "scale_inv", TENSOR_F32, want_s, 6), BASE_OK);
    assert_memory_equal(sc, want_s, sizeof sc);
    int64_t diff = 0;
    for (int64_t i = 0; i < R * C; i++) diff += q[i] != want_q[i];
    if (diff) fail_msg("%lld of %d codes differ from PyTorch's", (long long)diff, R * C);
    printf("quant_check: %d codes and 6 scales equal PyTorch's\n", R * C);
    st_close(f);
    free(x), free(q), free(want_q), free(p), free(dir);
}

/* A random model whose sizes are not multiples of 128: FP8 and BF16 frozen
 * models give the bits of an f32 model holding their stored values. */
static const char *WIDE =
    "{\"model_type\": \"deepseek_v3\", \"vocab_size\": 300, \"hidden_size\": 160, "
    "\"intermediate_size\": 200, \"moe_intermediate_size\": 136, \"num_hidden_layers\": 2, "
    "\"num_attention_heads\": 3, \"num_key_value_heads\": 3, \"n_shared_experts\": 1, "
    "\"n_routed_experts\": 4, \"num_experts_per_tok\": 2, \"n_group\": 2, \"topk_group\": 1, "
    "\"routed_scaling_factor\": 2.5, \"kv_lora_rank\": 136, \"q_lora_rank\": 144, "
    "\"qk_nope_head_dim\": 40, \"qk_rope_head_dim\": 16, \"v_head_dim\": 48, "
    "\"first_k_dense_replace\": 1, \"norm_topk_prob\": true, \"max_position_embeddings\": 64, "
    "\"rms_norm_eps\": 1e-6, \"rope_theta\": 10000}";

static void wide_config(model_config *c) {
    cJSON *j = cJSON_Parse(WIDE);
    assert_non_null(j);
    if (model_config_parse(j, "wide", c)) fail_msg("%s", base_err_msg());
    cJSON_Delete(j);
}

static void test_wide_blocks(void **s) {
    (void)s;
    model_config c;
    wide_config(&c);
    model_precision ps[2] = {MODEL_FP8, MODEL_BF16};
    for (int k = 0; k < 2; k++) {
        model_load_opts lo = {.precision = ps[k], .frozen = 1};
        model *q = NULL, *f = NULL;
        assert_int_equal(model_init_random(&c, ops_cpu(), 5, 0.2f, &lo, &q), BASE_OK);
        assert_int_equal(model_init_random(&c, ops_cpu(), 6, 0.2f, NULL, &f), BASE_OK);
        float *h = malloc((size_t)model_numel(q) * 4);
        model_weights_to_host(q, h);
        model_weights_from_host(f, h);
        char what[64];
        snprintf(what, sizeof what, "wide random model frozen %s", model_precision_name(ps[k]));
        same_outputs(what, q, f);
        free(h);
        model_free(q), model_free(f);
    }
}

/* ---- memory: planned == allocated ---------------------------------------------- */

static size_t g_alloc;
static void *(*g_real_alloc)(size_t);
static void *counting_alloc(size_t n) {
    g_alloc += n;
    return g_real_alloc(n);
}

static void test_memory_counted(void **s) {
    (void)s;
    struct ops counting = *ops_cpu();
    g_real_alloc = counting.alloc;
    counting.alloc = counting_alloc;
    const char *names[] = {"hf-tiny-v3-a", "tiny-v3-b", "tiny-v3-c", "tiny-v3-d", "tiny-v3-a-fp8"};
    struct {
        model_precision p;
        int frozen;
    } modes[] = {{MODEL_F32, 0}, {MODEL_F32, 1}, {MODEL_BF16, 1}, {MODEL_FP8, 1}};
    for (int k = 0; k < 5; k++) {
        char *dir = fixture_dir(names[k]);
        model_config cfg;
        assert_int_equal(model_config_load(dir, &cfg), BASE_OK);
        for (int md = 0; md < 4; md++) {
            model_load_opts lo = {.precision = modes[md].p, .frozen = modes[md].frozen, .max_context = 96};
            model_mem plan, got;
            assert_int_equal(model_memory_plan(&cfg, &lo, TENSOR_CPU, &plan), BASE_OK);
            g_alloc = 0;
            model *m = NULL;
            if (model_load(dir, &counting, &lo, &m)) fail_msg("%s: %s", dir, base_err_msg());
            size_t weights = g_alloc;
            model_memory(m, &got);
            model_cache_limits cl = {.slots = 16, .max_len = 80, .max_batch = 16, .max_prefill = 64};
            model_cache_mem cp, cg;
            assert_int_equal(model_cache_plan(&cfg, &cl, lo.precision, TENSOR_CPU, &cp), BASE_OK);
            g_alloc = 0;
            model_cache *c = NULL;
            assert_int_equal(model_cache_new(m, &cl, &c), BASE_OK);
            model_cache_memory(c, &cg);
            printf("%s %s%s: weights planned %zu (master %zu, compute %zu, scales %zu, rope %zu), allocated %zu; "
                   "cache planned %zu, allocated %zu\n",
                   names[k], model_precision_name(lo.precision), lo.frozen ? " frozen" : "", model_mem_total(&plan),
                   plan.master, plan.compute, plan.scales, plan.rope, weights, cp.pages + cp.table + cp.workspace, g_alloc);
            assert_int_equal(model_mem_total(&plan), weights);
            assert_memory_equal(&plan, &got, sizeof plan);
            assert_int_equal(cp.pages + cp.table + cp.workspace, g_alloc);
            assert_memory_equal(&cp, &cg, sizeof cp);
            model_cache_free(c);
            model_free(m);
        }
        free(dir);
    }
}

/* ---- the reference model's operations ------------------------------------------------ */

static void test_copy_mix(void **s) {
    (void)s;
    char *dir = fixture_dir("hf-tiny-v3-a");
    model *pol = load(dir, MODEL_F32, 0);
    model_config cfg = *model_cfg(pol);
    model_load_opts lo = {.precision = MODEL_BF16, .frozen = 1};
    model *ref = NULL;
    assert_int_equal(model_init_random(&cfg, ops_cpu(), 0, 0.0f, &lo, &ref), BASE_OK);
    assert_int_equal(model_copy_weights(ref, pol), BASE_OK);
    int64_t n = model_numel(pol);
    float *p = malloc((size_t)n * 4), *r = malloc((size_t)n * 4), *r0 = malloc((size_t)n * 4);
    model_weights_to_host(pol, p);
    model_weights_to_host(ref, r);
    for (int i = 0; i < model_nparams(pol); i++) {
        const model_param *q = model_param_at(pol, i);
        for (int64_t k = q->offset; k < q->offset + q->numel; k++) {
            float want = stays_f32(q) ? p[k] : tensor_bf16_to_f32(tensor_f32_to_bf16(p[k]));
            if (r[k] != want) fail_msg("%s[%lld]: %g, want %g", q->name, (long long)(k - q->offset), r[k], want);
        }
    }
    /* TR-DPO mix from a policy that moved */
    float *p2 = malloc((size_t)n * 4);
    for (int64_t k = 0; k < n; k++) p2[k] = p[k] * 1.5f + 0.01f;
    model_weights_from_host(pol, p2);
    memcpy(r0, r, (size_t)n * 4);
    model_mix_weights(ref, pol, 0.25f);
    model_weights_to_host(ref, r);
    for (int i = 0; i < model_nparams(pol); i++) {
        const model_param *q = model_param_at(pol, i);
        for (int64_t k = q->offset; k < q->offset + q->numel; k++) {
            float v = 0.75f * r0[k];
            v += 0.25f * p2[k];
            float want = stays_f32(q) ? v : tensor_bf16_to_f32(tensor_f32_to_bf16(v));
            if (r[k] != want) fail_msg("mix %s: %g, want %g", q->name, r[k], want);
        }
    }
    /* another architecture is refused */
    model_config c2;
    wide_config(&c2);
    model *other = NULL;
    assert_int_equal(model_init_random(&c2, ops_cpu(), 1, 0.1f, NULL, &other), BASE_OK);
    assert_int_equal(model_copy_weights(ref, other), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "differ in architecture (model.embed_tokens.weight has another shape)"));
    model_free(other);
    free(p), free(p2), free(r), free(r0);
    model_free(pol), model_free(ref);
    free(dir);
}

/* ---- errors ----------------------------------------------------------------------------- */

/* dst: a copy of the FP8 fixture without tensor `drop`, or with `reshape`
 * stored as [1, 1] instead. */
static void fp8_variant(const char *dst, const char *drop, const char *reshape) {
    char *src = fixture_dir("tiny-v3-a-fp8");
    assert_int_equal(base_mkdir_p(dst), BASE_OK);
    char *a = base_path_join(src, "config.json"), *b = base_path_join(dst, "config.json");
    char *buf = NULL;
    size_t len = 0;
    assert_int_equal(base_read_file(a, &buf, &len), BASE_OK);
    test_write_file(b, buf, len);
    free(buf);
    free(a), free(b);
    a = base_path_join(src, "model.safetensors");
    st_file *f = NULL;
    assert_int_equal(st_open(a, &f), BASE_OK);
    st_writer *w = st_writer_new();
    float one = 1.0f;
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        if (drop && !strcmp(t->name, drop)) continue;
        if (reshape && !strcmp(t->name, reshape)) {
            int64_t sh[2] = {1, 1};
            st_writer_add(w, t->name, TENSOR_F32, 2, sh, &one);
            continue;
        }
        st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    b = base_path_join(dst, "model.safetensors");
    assert_int_equal(st_writer_write(w, b), BASE_OK);
    st_writer_free(w);
    st_close(f);
    free(a), free(b), free(src);
}

static void test_errors(void **s) {
    (void)s;
    char *dir = fixture_dir("hf-tiny-v3-a");
    model *m = NULL;
    model_load_opts lo = {.precision = MODEL_FP8};
    assert_int_equal(model_load(dir, ops_cpu(), &lo, &m), BASE_ERR_UNSUPPORTED);
    assert_non_null(strstr(base_err_msg(), "fp8: for frozen models only"));
    lo.precision = MODEL_BF16;
    assert_int_equal(model_load(dir, ops_cpu(), &lo, &m), BASE_ERR_UNSUPPORTED);
    assert_non_null(strstr(base_err_msg(), "trains in f32 only"));
    model_precision p;
    assert_int_equal(model_precision_parse("fp8", &p), BASE_OK);
    assert_int_equal(p, MODEL_FP8);
    assert_int_equal(model_precision_parse("fp4", &p), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "expected f32, bf16 or fp8"));
    free(dir);
    char *tmp = test_tmpdir(), *d1 = base_path_join(tmp, "noscale"), *d2 = base_path_join(tmp, "badscale");
    const char *w = "model.layers.1.mlp.experts.3.up_proj.weight";
    char sc[128];
    snprintf(sc, sizeof sc, "%s_scale_inv", w);
    fp8_variant(d1, sc, NULL);
    fp8_variant(d2, NULL, "model.layers.0.self_attn.kv_b_proj.weight_scale_inv");
    lo = (model_load_opts){.precision = MODEL_FP8, .frozen = 1};
    for (int k = 0; k < 2; k++) { /* kept as fp8, and dequantised to f32 */
        assert_int_equal(model_load(d1, ops_cpu(), &lo, &m), BASE_ERR_INVALID);
        printf("%s\n", base_err_msg());
        assert_non_null(strstr(base_err_msg(), "without its"));
        assert_non_null(strstr(base_err_msg(), sc));
        assert_int_equal(model_load(d2, ops_cpu(), &lo, &m), BASE_ERR_INVALID);
        printf("%s\n", base_err_msg());
        assert_non_null(strstr(base_err_msg(), "kv_b_proj.weight_scale_inv"));
        assert_non_null(strstr(base_err_msg(), "[1, 1]"));
        lo = (model_load_opts){0};
    }
    test_rmdir(tmp);
    free(d1), free(d2), free(tmp);
}

int main(void) {
    (void)ref_f32, (void)ref_ids; /* fixture_ref.h: only fixture_dir is used here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frozen_f32),    cmocka_unit_test(test_frozen_bf16),
        cmocka_unit_test(test_fp8_stays_fp8), cmocka_unit_test(test_fp8_quantize_on_load),
        cmocka_unit_test(test_quant_check),   cmocka_unit_test(test_wide_blocks),
        cmocka_unit_test(test_memory_counted), cmocka_unit_test(test_copy_mix),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
