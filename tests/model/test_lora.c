/*
 * LoRA adapters (src/model/lora.c, lora_io.c) on random tiny configs:
 *   - a fresh adapter (B = 0) leaves every output of the base bit for bit
 *     (full logits, training logp and entropy, prefill + decode logits);
 *   - a trainer's arena with its adapter switched off computes the base
 *     bit for bit (the GRPO reference of a LoRA policy), on again the
 *     adapter;
 *   - the adapter's gradients against finite differences of the model's
 *     loss (base frozen: no base gradient arena), and against the base
 *     weight gradient of the same backward: dL/dB = s dW A^T,
 *     dL/dA = s B^T dW (dW = dL/dW of the adapted module);
 *   - decode (the absorbed kv_b form with the adapter's terms) equals the
 *     full forward with an adapter on every module;
 *   - merge (W += s B A) gives the same logits as base + adapter (within
 *     f32 rounding of the two orders of the products, 2e-5 relative);
 *   - PEFT files: save, load into a fresh base, the same logits bit for
 *     bit; bad files are errors naming the file and the tensor or key.
 */
#include "common/test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/st.h"
#include "model/model.h"

static const char *TINY =
    "\"model_type\": \"deepseek_v3\", \"vocab_size\": 61, \"hidden_size\": 32, "
    "\"intermediate_size\": 40, \"moe_intermediate_size\": 12, \"num_hidden_layers\": 3, "
    "\"num_attention_heads\": 3, \"num_key_value_heads\": 3, \"n_shared_experts\": 1, "
    "\"n_routed_experts\": 8, \"num_experts_per_tok\": 3, \"n_group\": 4, \"topk_group\": 2, "
    "\"routed_scaling_factor\": 2.5, \"kv_lora_rank\": 16, \"q_lora_rank\": 24, "
    "\"qk_nope_head_dim\": 8, \"qk_rope_head_dim\": 8, \"v_head_dim\": 10, "
    "\"first_k_dense_replace\": 1, \"norm_topk_prob\": true, \"max_position_embeddings\": 256, "
    "\"rms_norm_eps\": 1e-6, \"rope_theta\": 10000, "
    "\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 64, "
    "\"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 1, \"mscale_all_dim\": 1}";

static model *random_model(const char *over, uint64_t seed, float std) {
    size_t n = strlen(TINY) + strlen(over) + 8;
    char *js = malloc(n);
    snprintf(js, n, "{%s%s%s}", over, *over ? ", " : "", TINY);
    cJSON *j = cJSON_Parse(js);
    model_config c;
    if (model_config_parse(j, "config.json", &c)) fail_msg("%s: %s", over, base_err_msg());
    cJSON_Delete(j);
    free(js);
    model *m = NULL;
    assert_int_equal(model_init_random(&c, ops_cpu(), seed, std, NULL, &m), BASE_OK);
    return m;
}

static unsigned all_targets(void) { return (1u << MODEL_LORA_NTARGETS) - 1; }

static model_lora_config lora_cfg(int r, double alpha, unsigned targets, int experts) {
    model_lora_config lc = {.r = r, .lora_alpha = alpha, .targets = targets, .routed_experts = experts};
    return lc;
}

/* B of every module := uniform [-scale, scale) (A keeps its init). */
static void randomise_b(model_lora *a, uint64_t seed, float scale) {
    float *p = model_lora_params(a);
    for (int i = 0; i < model_lora_nparams(a); i++) {
        const model_param *pp = model_lora_param_at(a, i);
        if (strstr(pp->name, ".lora_B.")) test_rand_f32(p + pp->offset, pp->numel, seed + (uint64_t)i, scale);
    }
}

enum { T = 19, P = 5 };

static void ids_of(const model *m, int32_t *ids, int n, int k) {
    for (int i = 0; i < n; i++) ids[i] = (i * 37 + 11 + k) % (int32_t)model_cfg(m)->vocab_size;
}

/* Full logits [T, V] (malloc'd). */
static float *logits_of(model *m, const int32_t *ids) {
    int64_t V = model_cfg(m)->vocab_size;
    float *out = malloc((size_t)(T * V) * sizeof(float));
    int32_t cu[2] = {0, T};
    assert_int_equal(model_forward_logits(m, 1, ids, cu, out, NULL), BASE_OK);
    return out;
}

/* Prefill P tokens, then decode the rest one by one: logits [T - P + 1, V]. */
static float *decode_logits(model *m, const int32_t *ids) {
    int64_t V = model_cfg(m)->vocab_size;
    float *out = malloc((size_t)((T - P + 1) * V) * sizeof(float));
    model_cache_limits lim = {.slots = 2, .max_len = T, .max_batch = 2, .max_prefill = T};
    model_cache *c = NULL;
    assert_int_equal(model_cache_new(m, &lim, &c), BASE_OK);
    int32_t slot = 1, pcu[2] = {0, P};
    const tensor *lg;
    assert_int_equal(model_prefill(c, 1, &slot, ids, pcu, &lg), BASE_OK);
    memcpy(out, lg->data, (size_t)V * sizeof(float));
    for (int t = P; t < T; t++) {
        int32_t pos = t;
        assert_int_equal(model_decode(c, 1, &slot, &ids[t], &pos, &lg), BASE_OK);
        memcpy(out + (t - P + 1) * V, lg->data, (size_t)V * sizeof(float));
    }
    model_cache_free(c);
    return out;
}

/* Training forward logp and entropy [T] each into lp, en. */
static void train_fwd(model *m, const int32_t *ids, float *lp, float *en, int no_adapter) {
    model_train_limits lim = {.max_tokens = T, .max_seqs = 1, .no_adapter = no_adapter};
    model_train *tr = NULL;
    assert_int_equal(model_train_new(m, &lim, &tr), BASE_OK);
    int32_t cu[2] = {0, T};
    model_batch b = {.nseq = 1, .ids = ids, .cu_seqlens = cu, .logit_scale = 0.9f};
    assert_int_equal(model_forward(tr, &b), BASE_OK);
    model_train_download(tr, lp, en);
    model_train_free(tr);
}

static void assert_same(const float *a, const float *b, int64_t n, const char *what) {
    for (int64_t i = 0; i < n; i++)
        if (!(a[i] == b[i])) fail_msg("%s: element %lld differs: %.9g vs %.9g", what, (long long)i, a[i], b[i]);
}

/* model_train_set_adapter: with B != 0, a forward of the adapter's own
 * arena with the adapter off gives the base's logp and entropy bit for bit
 * (as an arena planned without it), on again the adapter's. With
 * recompute (one shared activation set) and without. */
static void test_adapter_toggle(void **s) {
    (void)s;
    for (int rc = 0; rc < 2; rc++) {
        model *m = random_model("", 5, 0.3f);
        int32_t ids[T];
        ids_of(m, ids, T, 1);
        float lp0[T], en0[T];
        train_fwd(m, ids, lp0, en0, 0); /* the base, no adapter attached yet */
        model_lora_config lc = lora_cfg(4, 8, all_targets(), 1);
        model_lora *a = NULL;
        assert_int_equal(model_lora_new(m, &lc, 42, &a), BASE_OK);
        randomise_b(a, 9, 0.2f);
        float lp1[T], en1[T];
        train_fwd(m, ids, lp1, en1, 0); /* the adapter */
        model_train_limits lim = {.max_tokens = T, .max_seqs = 1, .recompute = rc};
        model_train *tr = NULL;
        assert_int_equal(model_train_new(m, &lim, &tr), BASE_OK);
        int32_t cu[2] = {0, T};
        model_batch b = {.nseq = 1, .ids = ids, .cu_seqlens = cu, .logit_scale = 0.9f};
        float lp[T], en[T];
        model_train_set_adapter(tr, 0);
        assert_int_equal(model_forward(tr, &b), BASE_OK);
        model_train_download(tr, lp, en);
        assert_same(lp, lp0, T, "adapter off: logp");
        assert_same(en, en0, T, "adapter off: entropy");
        model_train_set_adapter(tr, 1);
        assert_int_equal(model_forward(tr, &b), BASE_OK);
        model_train_download(tr, lp, en);
        assert_same(lp, lp1, T, "adapter on again: logp");
        assert_same(en, en1, T, "adapter on again: entropy");
        int moved = 0;
        for (int t = 0; t < T; t++) moved += lp1[t] != lp0[t];
        assert_true(moved > 0);
        model_train_free(tr);
        model_free(m);
    }
}

/* ---- step 0: a fresh adapter changes nothing ------------------------------ */

static void step0(const char *over, unsigned targets, int experts) {
    model *m = random_model(over, 5, 0.3f);
    int64_t V = model_cfg(m)->vocab_size;
    int32_t ids[T];
    ids_of(m, ids, T, 0);
    float *l0 = logits_of(m, ids), *d0 = decode_logits(m, ids), lp0[T], en0[T];
    train_fwd(m, ids, lp0, en0, 0);
    model_lora_config lc = lora_cfg(4, 8, targets, experts);
    model_lora *a = NULL;
    assert_int_equal(model_lora_new(m, &lc, 42, &a), BASE_OK);
    /* A is drawn (kaiming uniform, bound 1/sqrt(in)), B is zero */
    int nonzero_a = 0;
    for (int i = 0; i < model_lora_nparams(a); i++) {
        const model_param *pp = model_lora_param_at(a, i);
        const float *v = model_lora_params(a) + pp->offset;
        float bound = 1.0f / sqrtf((float)pp->shape[1]);
        for (int64_t k = 0; k < pp->numel; k++) {
            if (strstr(pp->name, ".lora_B.")) assert_true(v[k] == 0.0f);
            else {
                assert_true(fabsf(v[k]) <= bound);
                nonzero_a += v[k] != 0.0f;
            }
        }
    }
    assert_true(nonzero_a > 0);
    float *l1 = logits_of(m, ids), *d1 = decode_logits(m, ids), lp1[T], en1[T];
    train_fwd(m, ids, lp1, en1, 0);
    assert_same(l1, l0, T * V, "full logits");
    assert_same(d1, d0, (T - P + 1) * V, "decode logits");
    assert_same(lp1, lp0, T, "train logp");
    assert_same(en1, en0, T, "train entropy");
    printf("step 0 [%s] targets %#x experts %d: %d adapter tensors, %lld parameters: base outputs unchanged\n", over,
           targets, experts, model_lora_nparams(a), (long long)model_lora_numel(a));
    /* and with B moved, the outputs move (the adapter is in every path) */
    randomise_b(a, 3, 0.5f);
    float *l2 = logits_of(m, ids), *d2 = decode_logits(m, ids), lp2[T], en2[T], lp3[T], en3[T];
    train_fwd(m, ids, lp2, en2, 0);
    train_fwd(m, ids, lp3, en3, 1); /* the reference pass: base alone */
    assert_true(test_max_abs_diff(l2, l0, T * V) > 1e-3);
    assert_true(test_max_abs_diff(d2, d0, (T - P + 1) * V) > 1e-3);
    assert_true(test_max_abs_diff(lp2, lp0, T) > 1e-4);
    assert_same(lp3, lp0, T, "no_adapter logp");
    assert_same(en3, en0, T, "no_adapter entropy");
    free(l0), free(l1), free(l2), free(d0), free(d1), free(d2);
    model_free(m); /* frees the attached adapter */
}

static void test_step0_is_base(void **s) {
    (void)s;
    step0("", all_targets(), 0);
    step0("", all_targets(), 1);
    step0("\"q_lora_rank\": null", all_targets(), 1);
    step0("", 1u << MODEL_LORA_O_PROJ | 1u << MODEL_LORA_KV_B_PROJ, 0);
    step0("\"n_shared_experts\": 0, \"tie_word_embeddings\": true", 1u << MODEL_LORA_DOWN_PROJ, 1);
}

/* ---- decode == full forward with an adapter ------------------------------- */

static void decode_vs_forward(const char *over, int experts) {
    model *m = random_model(over, 7, 0.3f);
    int64_t V = model_cfg(m)->vocab_size;
    model_lora_config lc = lora_cfg(3, 6, all_targets(), experts);
    model_lora *a = NULL;
    assert_int_equal(model_lora_new(m, &lc, 1, &a), BASE_OK);
    randomise_b(a, 11, 0.6f);
    int32_t ids[T];
    ids_of(m, ids, T, 3);
    float *full = logits_of(m, ids), *dec = decode_logits(m, ids);
    double worst = 0;
    for (int t = P - 1; t < T; t++) {
        double e = test_max_abs_diff(dec + (t - P + 1) * V, full + t * V, V);
        if (e > worst) worst = e;
    }
    printf("decode vs forward with an adapter [%s] experts %d: max |diff| %.3g\n", over, experts, worst);
    assert_true(worst < 1e-4);
    free(full), free(dec);
    model_free(m);
}

static void test_decode_with_adapter(void **s) {
    (void)s;
    decode_vs_forward("", 1);
    decode_vs_forward("\"q_lora_rank\": null, \"rope_interleave\": false", 0);
    decode_vs_forward("\"n_routed_experts\": 16, \"n_group\": 8, \"topk_group\": 3, \"num_experts_per_tok\": 4, "
                      "\"n_shared_experts\": 2, \"first_k_dense_replace\": 2",
                      1);
}

/* ---- gradients ---------------------------------------------------------------- */

enum { N = 13 };

static double loss(model_train *tr, const model_batch *b, const float *ga, const float *gb) {
    assert_int_equal(model_forward(tr, b), BASE_OK);
    float lp[N], en[N];
    model_train_download(tr, lp, en);
    double l = 0;
    for (int t = 0; t < N; t++) l += (double)ga[t] * lp[t] + (double)gb[t] * en[t];
    return l;
}

/* Routing biases far apart, so no expert choice flips under a perturbation
 * (as test_model.c's fd_model). */
static void spread_biases(model *m) {
    int E = model_cfg(m)->n_routed_experts;
    float *p = model_params(m);
    for (int i = 0; i < model_nparams(m); i++) {
        const model_param *mp = model_param_at(m, i);
        if (!mp->trainable)
            for (int e = 0; e < E; e++) p[mp->offset + e] = 3.0f * ldexpf(1.0f, (e * 5 + i) % E);
    }
}

static void fd_lora(const char *over, int experts, int recompute, int rslora) {
    model *m = random_model(over, 3, 0.1f);
    spread_biases(m);
    model_lora_config lc = lora_cfg(4, 16, all_targets(), experts);
    lc.use_rslora = rslora;
    model_lora *a = NULL;
    assert_int_equal(model_lora_new(m, &lc, 9, &a), BASE_OK);
    randomise_b(a, 21, 0.2f);
    int32_t ids[N], cu[3] = {0, 6, N};
    ids_of(m, ids, N, 1);
    float ga[N], gb[N];
    test_rand_f32(ga, N, 91, 1.0f);
    test_rand_f32(gb, N, 92, 1.0f);
    model_train_limits lim = {.max_tokens = N, .max_seqs = 2, .recompute = recompute};
    model_train *tr = NULL;
    assert_int_equal(model_train_new(m, &lim, &tr), BASE_OK);
    model_batch b = {.nseq = 2, .ids = ids, .cu_seqlens = cu, .logit_scale = 0.8f};
    int64_t n = model_lora_numel(a);
    float *g = model_lora_grads(a), *p = model_lora_params(a);
    memset(g, 0, (size_t)n * sizeof(float));
    float *base0 = malloc((size_t)model_numel(m) * sizeof(float));
    memcpy(base0, model_params(m), (size_t)model_numel(m) * sizeof(float));
    loss(tr, &b, ga, gb);
    model_backward(tr, ga, gb, NULL); /* base frozen */
    assert_same(model_params(m), base0, model_numel(m), "base weights (frozen)");
    float *p0 = malloc((size_t)n * sizeof(float)), *v = malloc((size_t)n * sizeof(float));
    memcpy(p0, p, (size_t)n * sizeof(float));
    for (int dir = 0; dir < 3; dir++) {
        /* dir 0, 1: every tensor, scaled by its RMS; dir 2: A only */
        test_rand_f32(v, n, 95 + dir, 1.0f);
        for (int i = 0; i < model_lora_nparams(a); i++) {
            const model_param *pp = model_lora_param_at(a, i);
            double ss = 0;
            for (int64_t k = 0; k < pp->numel; k++) ss += (double)p0[pp->offset + k] * p0[pp->offset + k];
            float rms = (float)sqrt(ss / (double)pp->numel);
            if (dir == 2 && strstr(pp->name, ".lora_B.")) rms = 0;
            for (int64_t k = 0; k < pp->numel; k++) v[pp->offset + k] *= rms;
        }
        double an = 0;
        for (int64_t k = 0; k < n; k++) an += (double)g[k] * v[k];
        double eps = 1e-3, l[2];
        for (int sg = 0; sg < 2; sg++) {
            for (int64_t k = 0; k < n; k++) p[k] = p0[k] + (float)((sg ? -eps : eps) * v[k]);
            l[sg] = loss(tr, &b, ga, gb);
        }
        memcpy(p, p0, (size_t)n * sizeof(float));
        double fd = (l[0] - l[1]) / (2 * eps), rel = fabs(fd - an) / fmax(fabs(an), 1e-2);
        printf("lora fd [%s%s%s%s] dir %d: analytic %+.6e fd %+.6e rel %.2e\n", over, experts ? ", experts" : "",
               recompute ? ", recompute" : "", rslora ? ", rslora" : "", dir, an, fd, rel);
        assert_true(rel < 1e-2);
    }
    free(p0), free(v), free(base0);
    model_train_free(tr);
    model_free(m);
}

static void test_fd_lora(void **s) {
    (void)s;
    fd_lora("", 1, 0, 0);
    fd_lora("\"q_lora_rank\": null, \"norm_topk_prob\": false", 0, 1, 1);
    fd_lora("\"tie_word_embeddings\": true, \"n_shared_experts\": 2", 1, 1, 0);
}

/* dL/dB = s dW A^T and dL/dA = s B^T dW, with dW the base weight gradient
 * of the same backward (the model's full gradient arena next to the
 * adapter's), for every adapted module of every layer (routed experts:
 * every expert). */
static void check_dw_relation(const char *over) {
    model *m = random_model(over, 4, 0.2f);
    const model_config *c = model_cfg(m);
    model_lora_config lc = lora_cfg(3, 12, all_targets(), 1);
    model_lora *a = NULL;
    assert_int_equal(model_lora_new(m, &lc, 2, &a), BASE_OK);
    randomise_b(a, 31, 0.3f);
    double s = model_lora_scaling(&lc);
    int32_t ids[N], cu[3] = {0, 7, N};
    ids_of(m, ids, N, 2);
    float ga[N], gb[N];
    test_rand_f32(ga, N, 81, 1.0f);
    test_rand_f32(gb, N, 82, 1.0f);
    model_train_limits lim = {.max_tokens = N, .max_seqs = 2};
    model_train *tr = NULL;
    assert_int_equal(model_train_new(m, &lim, &tr), BASE_OK);
    model_batch b = {.nseq = 2, .ids = ids, .cu_seqlens = cu};
    loss(tr, &b, ga, gb);
    float *gw = model_grads_new(m), *gl = model_lora_grads(a);
    model_backward(tr, ga, gb, gw);
    const float *lp = model_lora_params(a);
    int checked = 0;
    double worst = 0;
    for (int i = 0; i < model_lora_nparams(a); i++) {
        const model_param *pa = model_lora_param_at(a, i);
        const char *k = strstr(pa->name, ".lora_A.weight");
        if (!k) continue;
        /* the module: its A, B and the base weight it adapts */
        char mod[128], bn[160], wn[160];
        snprintf(mod, sizeof mod, "%.*s", (int)(k - pa->name), pa->name);
        snprintf(bn, sizeof bn, "%s.lora_B.weight", mod);
        snprintf(wn, sizeof wn, "%s.weight", mod + strlen("base_model.model."));
        const model_param *pb = model_lora_param_find(a, bn), *pw = model_param_find(m, wn);
        if (!pb || !pw) fail_msg("no %s or %s", bn, wn);
        int64_t r = lc.r, in = pa->shape[1], out = pb->shape[0];
        assert_int_equal(pw->shape[0], out);
        assert_int_equal(pw->shape[1], in);
        const float *A = lp + pa->offset, *B = lp + pb->offset, *dW = gw + pw->offset;
        const float *dA = gl + pa->offset, *dB = gl + pb->offset;
        float *wantA = malloc((size_t)(r * in) * sizeof(float)), *wantB = malloc((size_t)(out * r) * sizeof(float));
        for (int64_t o = 0; o < out; o++)
            for (int64_t j = 0; j < r; j++) {
                double acc = 0;
                for (int64_t x = 0; x < in; x++) acc += (double)dW[o * in + x] * A[j * in + x];
                wantB[o * r + j] = (float)(s * acc);
            }
        for (int64_t j = 0; j < r; j++)
            for (int64_t x = 0; x < in; x++) {
                double acc = 0;
                for (int64_t o = 0; o < out; o++) acc += (double)B[o * r + j] * dW[o * in + x];
                wantA[j * in + x] = (float)(s * acc);
            }
        double na = 0, nb = 0;
        for (int64_t q = 0; q < r * in; q++) na += (double)wantA[q] * wantA[q];
        for (int64_t q = 0; q < out * r; q++) nb += (double)wantB[q] * wantB[q];
        /* an expert no token was routed to has dW = 0 and so dA = dB = 0 exactly */
        if (na == 0 && nb == 0) {
            for (int64_t q = 0; q < r * in; q++) assert_true(dA[q] == 0.0f);
            for (int64_t q = 0; q < out * r; q++) assert_true(dB[q] == 0.0f);
        } else {
            double ea = test_rel_l2(dA, wantA, r * in), eb = test_rel_l2(dB, wantB, out * r);
            if (ea > worst) worst = ea;
            if (eb > worst) worst = eb;
            if (ea > 1e-4 || eb > 1e-4) fail_msg("%s: dA rel %.3g, dB rel %.3g", mod, ea, eb);
            checked++;
        }
        free(wantA), free(wantB);
    }
    printf("dB = s dW A^T, dA = s B^T dW [%s]: %d modules, worst relative L2 %.3g (c = %d layers)\n", over, checked,
           worst, c->num_hidden_layers);
    assert_true(checked > 10);
    model_ops(m)->free(gw);
    model_train_free(tr);
    model_free(m);
}

static void test_grad_vs_dw(void **s) {
    (void)s;
    check_dw_relation("");
    check_dw_relation("\"q_lora_rank\": null");
}

/* ---- merge and PEFT files --------------------------------------------------------- */

static void test_merge(void **s) {
    (void)s;
    model *m = random_model("", 8, 0.3f);
    int64_t V = model_cfg(m)->vocab_size;
    model_lora_config lc = lora_cfg(4, 8, all_targets(), 1);
    model_lora *a = NULL;
    assert_int_equal(model_lora_new(m, &lc, 5, &a), BASE_OK);
    randomise_b(a, 41, 0.5f);
    int32_t ids[T];
    ids_of(m, ids, T, 5);
    float *with = logits_of(m, ids);
    model_lora_merge(a);
    model_lora_free(a); /* detached: the merged weights alone */
    float *merged = logits_of(m, ids);
    double rel = test_rel_l2(merged, with, T * V), mx = test_max_abs_diff(merged, with, T * V);
    printf("merged vs base + adapter: max |diff| %.3g, relative L2 %.3g\n", mx, rel);
    assert_true(rel < 2e-5);
    free(with), free(merged);
    model_free(m);
}

static void test_peft_files(void **s) {
    (void)s;
    char *dir = test_tmpdir();
    model *m = random_model("", 8, 0.3f);
    int64_t V = model_cfg(m)->vocab_size;
    model_lora_config lc = lora_cfg(4, 32, 1u << MODEL_LORA_Q_A_PROJ | 1u << MODEL_LORA_KV_B_PROJ |
                                               1u << MODEL_LORA_O_PROJ | 1u << MODEL_LORA_GATE_PROJ,
                                    0);
    lc.use_rslora = 1;
    model_lora *a = NULL;
    assert_int_equal(model_lora_new(m, &lc, 5, &a), BASE_OK);
    randomise_b(a, 51, 0.5f);
    assert_non_null(model_lora_param_find(a, "base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight"));
    assert_non_null(model_lora_param_find(a, "base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight"));
    assert_non_null(
        model_lora_param_find(a, "base_model.model.model.layers.1.mlp.shared_experts.gate_proj.lora_A.weight"));
    assert_null(model_lora_param_find(a, "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight"));
    int32_t ids[T];
    ids_of(m, ids, T, 6);
    float *want = logits_of(m, ids);
    assert_int_equal(model_lora_save(a, dir, "/models/base"), BASE_OK);
    model_lora_free(a);
    /* the config as PEFT writes it */
    char *cp = base_path_join(dir, "adapter_config.json");
    cJSON *j;
    assert_int_equal(base_json_parse_file(cp, &j), BASE_OK);
    assert_string_equal(base_json_str(j, "peft_type", ""), "LORA");
    assert_string_equal(base_json_str(j, "base_model_name_or_path", ""), "/models/base");
    assert_int_equal(base_json_int(j, "r", 0, NULL), 4);
    assert_true(base_json_num(j, "lora_alpha", 0, NULL) == 32);
    assert_true(base_json_bool(j, "use_rslora", 0, NULL));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "target_modules")), 4);
    cJSON_Delete(j);
    model_lora_config rc;
    assert_int_equal(model_lora_read_config(dir, model_cfg(m), &rc), BASE_OK);
    assert_int_equal(rc.targets, lc.targets);
    assert_int_equal(rc.routed_experts, 0);
    assert_int_equal(model_lora_load(m, dir, &a), BASE_OK);
    float *got = logits_of(m, ids);
    assert_same(got, want, T * V, "reloaded adapter logits");
    /* a second adapter on the same model is refused */
    model_lora *b = NULL;
    assert_int_equal(model_lora_new(m, &lc, 1, &b), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "already has an adapter"));
    model_lora_free(a);
    /* bad files: a missing tensor, an extra one, a wrong shape, DoRA, a bias */
    char *stp = base_path_join(dir, "adapter_model.safetensors");
    st_file *f;
    assert_int_equal(st_open(stp, &f), BASE_OK);
    for (int mode = 0; mode < 3; mode++) {
        st_writer *w = st_writer_new();
        for (int i = 0; i < st_count(f); i++) {
            const st_tensor *t = st_at(f, i);
            int64_t shape[4];
            memcpy(shape, t->shape, sizeof shape);
            if (mode == 0 && strstr(t->name, "layers.2.self_attn.o_proj.lora_B")) continue;
            if (mode == 2 && strstr(t->name, "layers.1.self_attn.kv_b_proj.lora_A")) shape[0] = 2, shape[1] *= 2;
            st_writer_add(w, t->name, t->dtype, t->ndim, shape, t->data);
        }
        float extra[4] = {0};
        if (mode == 1) st_writer_add(w, "base_model.model.lm_head.lora_A.weight", TENSOR_F32, 2, (int64_t[]){1, 4}, extra);
        char *bad = test_tmpdir(), *bp = base_path_join(bad, "adapter_model.safetensors"), *bc = base_path_join(bad, "adapter_config.json");
        assert_int_equal(st_writer_write(w, bp), BASE_OK);
        st_writer_free(w);
        char *text;
        size_t tn;
        assert_int_equal(base_read_file(cp, &text, &tn), BASE_OK);
        test_write_file(bc, text, tn);
        free(text);
        base_status st = model_lora_load(m, bad, &a);
        assert_int_not_equal(st, BASE_OK);
        const char *want_msg[] = {"missing tensor base_model.model.model.layers.2.self_attn.o_proj.lora_B.weight",
                                  "tensor base_model.model.lm_head.lora_A.weight is not a LoRA weight",
                                  "kv_b_proj.lora_A.weight has shape [2, 32], the adapter needs [4, 16]"};
        if (!strstr(base_err_msg(), want_msg[mode])) fail_msg("mode %d: %s", mode, base_err_msg());
        assert_null(a);
        test_rmdir(bad);
        free(bad), free(bp), free(bc);
    }
    st_close(f);
    const char *cfgs[] = {"{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"use_dora\": true}",
                          "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"bias\": \"all\"}",
                          "{\"peft_type\": \"IA3\"}", "{\"r\": 0}", "{\"r\": 4, \"lora_alpha\": \"x\"}"};
    const char *msgs[] = {"DoRA adapters are not supported", "bias 'all'", "peft_type 'IA3'", "r must be an integer",
                          "lora_alpha must be a finite number"};
    for (int i = 0; i < 5; i++) {
        test_write_file(cp, cfgs[i], strlen(cfgs[i]));
        assert_int_not_equal(model_lora_load(m, dir, &a), BASE_OK);
        if (!strstr(base_err_msg(), msgs[i]) || !strstr(base_err_msg(), "adapter_config.json"))
            fail_msg("%s: %s", cfgs[i], base_err_msg());
    }
    free(want), free(got), free(cp), free(stp);
    model_free(m);
    test_rmdir(dir);
    free(dir);
}

static void test_config_errors(void **s) {
    (void)s;
    model *m = random_model("", 8, 0.3f);
    model_lora *a = NULL;
    model_lora_config lc = lora_cfg(0, 8, all_targets(), 0);
    assert_int_equal(model_lora_new(m, &lc, 1, &a), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "r = 0"));
    lc = lora_cfg(4, 0, all_targets(), 0);
    assert_int_equal(model_lora_new(m, &lc, 1, &a), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "lora_alpha"));
    lc = lora_cfg(4, 8, 1u << MODEL_LORA_Q_PROJ, 0); /* q_lora_rank > 0: no q_proj */
    assert_int_equal(model_lora_new(m, &lc, 1, &a), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "match no module of this model"));
    assert_int_equal(model_lora_target_parse("kv_a_proj_with_mqa"), MODEL_LORA_KV_A_PROJ);
    assert_int_equal(model_lora_target_parse("k_proj"), -1);
    assert_null(a);
    /* sizes: the planned count is the arena's */
    lc = lora_cfg(5, 8, all_targets(), 1);
    assert_int_equal(model_lora_new(m, &lc, 1, &a), BASE_OK);
    assert_int_equal(model_lora_param_count(model_cfg(m), &lc), model_lora_numel(a));
    model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adapter_toggle),
        cmocka_unit_test(test_step0_is_base), cmocka_unit_test(test_decode_with_adapter),
        cmocka_unit_test(test_fd_lora),       cmocka_unit_test(test_grad_vs_dw),
        cmocka_unit_test(test_merge),         cmocka_unit_test(test_peft_files),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
