/* Expert parallelism of the model (issue 15; docs/model.md "Expert
 * parallelism"), as one process and under `mpirun -np N` (N = 1, 2, 4:
 * tests/dist/meson.build). Every rank holds the whole model (EP = 1, the
 * reference) and the same model split over EP = 2 and 4 (where EP divides
 * the world size and the routed experts), on the tiny random model and on
 * the fixtures hf-tiny-v3-a and tiny-v3-b, -c, -d (routing variants: top-2
 * of 8 in 4 groups, top-4 of 16 in 8 groups unnormalised, fused expert
 * tensors). Each rank runs its own batch (lengths differ by rank) and
 * checks against its reference:
 *   - the local arena: only experts [j E/EP, (j+1) E/EP), named with their
 *     global index, with the reference's values bit for bit (load and
 *     random init); model_ep_owner agrees;
 *   - model_forward_logits logits and log-probs, the training forward's
 *     log-probs and entropies, the expert load counts: bit-identical
 *     (the CPU GEMMs are batch-invariant, the combine runs in slot order);
 *   - the balance loss (model_train_set_aux_coef) bit-identical;
 *   - backward: every non-expert gradient bit-identical to the rank's own
 *     reference gradient; the routed experts' gradients summed over the
 *     ranks holding each expert against the reference summed over all
 *     ranks, within 2e-6 relative (max abs difference over max abs value:
 *     the rows are summed in another order; measured at most 5.3e-7);
 *   - greedy decode of two sequences per rank stopping after a rank-
 *     dependent number of steps (rank 0 first): the finished ranks step
 *     with zero rows until every rank is done (no hang), tokens and
 *     logits bit-identical to the reference;
 *   - errors: an EP size not dividing the experts, LoRA on routed experts.
 * The exchange functions run over the world communicator with zero counts
 * outside the EP group (src/dist has no sub-communicators): every rank of
 * the world then makes the same calls, so the decode agreement is taken
 * over the world (a superset of the group: its ranks keep stepping with
 * zero rows, as a group would for a slower peer). */
#include "common/test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "io/st.h"
#include "model/fixture_ref.h"
#include "model/model.h"

static int R, W; /* this rank, world size */

/* ---- the exchange over the world ----------------------------------------------- */

typedef struct {
    int first, size; /* the group's world ranks [first, first + size) */
    int64_t calls;
} grp;

static base_status x_counts(void *ctx, const int64_t *send, int64_t *recv, int n) {
    grp *G = ctx;
    size_t *sc = calloc((size_t)W * 2, sizeof(size_t)), *rc = sc + W;
    for (int p = 0; p < G->size; p++) sc[G->first + p] = rc[G->first + p] = (size_t)n;
    base_status st = dist_alltoallv(dist_world(), send, sc, recv, rc, DIST_I64);
    free(sc);
    G->calls++;
    return st;
}

static base_status x_rows(void *ctx, const void *send, const int64_t *sb, void *recv, const int64_t *rb) {
    grp *G = ctx;
    size_t *sc = calloc((size_t)W * 2, sizeof(size_t)), *rc = sc + W;
    for (int p = 0; p < G->size; p++) sc[G->first + p] = (size_t)sb[p], rc[G->first + p] = (size_t)rb[p];
    base_status st = dist_alltoallv(dist_world(), send, sc, recv, rc, DIST_U8);
    free(sc);
    G->calls++;
    return st;
}

static base_status x_any(void *ctx, int local, int *any) {
    (void)ctx;
    int32_t v = local != 0;
    base_status st = dist_allreduce(dist_world(), &v, 1, DIST_I32, DIST_MAX);
    *any = v;
    return st;
}

static model_ep make_ep(grp *G, int ep) {
    G->first = R / ep * ep, G->size = ep, G->calls = 0;
    model_ep e = {.size = ep, .rank = R % ep, .ctx = G, .alltoall_counts = x_counts, .alltoallv = x_rows,
                  .any_active = x_any};
    return e;
}

/* ---- models ---------------------------------------------------------------------- */

static const char *TINY = "tiny";

static model *get_model(const char *name, const model_ep *ep) {
    model_load_opts o = {.ep = ep};
    model *m = NULL;
    if (!strcmp(name, TINY)) {
        char *js = test_tiny_config("");
        cJSON *j = cJSON_Parse(js);
        model_config c;
        if (model_config_parse(j, "config.json", &c)) fail_msg("%s", base_err_msg());
        cJSON_Delete(j);
        free(js);
        if (model_init_random(&c, ops_cpu(), 7, 0.3f, &o, &m)) fail_msg("%s", base_err_msg());
    } else {
        char *dir = fixture_dir(name);
        if (model_load(dir, ops_cpu(), &o, &m)) fail_msg("%s: %s", dir, base_err_msg());
        free(dir);
    }
    return m;
}

static uint32_t hash(uint32_t a, uint32_t b) {
    uint32_t h = a * 2654435761u ^ (b + 0x9e3779b9u + (a << 6));
    h ^= h >> 13, h *= 0x5bd1e995u, h ^= h >> 15;
    return h;
}

/* This rank's batch: two sequences whose lengths depend on the rank. */
typedef struct {
    int32_t ids[64], cu[3];
    int n;
} batch;

static void make_batch(batch *b, int64_t V) {
    int l0 = 9 + 3 * R, l1 = 5 + 2 * R;
    b->cu[0] = 0, b->cu[1] = l0, b->cu[2] = l0 + l1, b->n = l0 + l1;
    for (int i = 0; i < b->n; i++) b->ids[i] = (int32_t)(hash((uint32_t)R, (uint32_t)i) % (uint32_t)V);
}

static int is_expert(const char *name) { return strstr(name, "mlp.experts.") != NULL; }

/* ---- the checks ------------------------------------------------------------------ */

static void check_params(const char *what, const model *ref, const model *m, int ep) {
    const model_config *c = model_cfg(m);
    int E = c->n_routed_experts, e0, e1, j = R % ep;
    model_ep_local_experts(c, ep, j, &e0, &e1);
    assert_int_equal(e1 - e0, E / ep);
    float *hr = malloc((size_t)model_numel(ref) * sizeof(float)), *hm = malloc((size_t)model_numel(m) * sizeof(float));
    model_weights_to_host(ref, hr);
    model_weights_to_host(m, hm);
    int64_t held = 0, ref_experts = 0;
    for (int i = 0; i < model_nparams(ref); i++) ref_experts += is_expert(model_param_at(ref, i)->name);
    for (int i = 0; i < model_nparams(m); i++) {
        const model_param *p = model_param_at(m, i), *q = model_param_find(ref, p->name);
        if (!q) fail_msg("%s: %s not in the whole model", what, p->name);
        assert_int_equal(p->numel, q->numel);
        int own = model_ep_owner(c, ep, p->name);
        if (is_expert(p->name)) {
            int e = atoi(strstr(p->name, "mlp.experts.") + strlen("mlp.experts."));
            assert_true(e >= e0 && e < e1);
            assert_int_equal(own, j);
            held++;
        } else {
            assert_int_equal(own, -1);
        }
        if (memcmp(hm + p->offset, hr + q->offset, (size_t)p->numel * sizeof(float)))
            fail_msg("%s: %s differs from the whole model's", what, p->name);
    }
    assert_int_equal(held * ep, ref_experts);
    free(hr), free(hm);
}

static void same_bits(const char *what, const char *name, const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)))
            fail_msg("%s: %s [%lld] %.9g, EP = 1 %.9g", what, name, (long long)i, (double)a[i], (double)b[i]);
}

static void check_logits(const char *what, model *ref, model *m, const batch *b) {
    int64_t V = model_cfg(m)->vocab_size;
    float *l0 = malloc((size_t)(b->n * V) * sizeof(float)), *l1 = malloc((size_t)(b->n * V) * sizeof(float));
    float lp0[64], lp1[64];
    assert_int_equal(model_forward_logits(ref, 2, b->ids, b->cu, l0, lp0), BASE_OK);
    if (model_forward_logits(m, 2, b->ids, b->cu, l1, lp1)) fail_msg("%s: %s", what, base_err_msg());
    same_bits(what, "logits", l1, l0, b->n * V);
    same_bits(what, "token log-probs", lp1, lp0, b->n);
    free(l0), free(l1);
}

/* Training forward and backward; returns the largest relative difference
 * of the routed experts' summed gradients. */
static double check_train(const char *what, model *ref, model *m, const batch *b, int recompute) {
    const model_config *c = model_cfg(m);
    model_train_limits lim = {.max_tokens = 64, .max_seqs = 2, .recompute = recompute};
    model_train *t0 = NULL, *t1 = NULL;
    assert_int_equal(model_train_new(ref, &lim, &t0), BASE_OK);
    assert_int_equal(model_train_new(m, &lim, &t1), BASE_OK);
    /* the plan of an EP pass is what it allocates */
    int ep = model_get_ep(m) ? model_get_ep(m)->size : 1;
    assert_int_equal(model_train_arena_bytes(t1), model_train_plan_bytes_ep(c, &lim, NULL, MODEL_F32, ep));
    if (ep > 1) assert_true(model_train_arena_bytes(t1) > model_train_arena_bytes(t0));
    /* the balance loss (router side) in the recomputing pass */
    model_train_set_aux_coef(t0, recompute ? 0.01f : 0.0f);
    model_train_set_aux_coef(t1, recompute ? 0.01f : 0.0f);
    model_batch mb = {.nseq = 2, .ids = b->ids, .cu_seqlens = b->cu};
    assert_int_equal(model_forward(t0, &mb), BASE_OK);
    if (model_forward(t1, &mb)) fail_msg("%s: %s", what, base_err_msg());
    double aux0 = model_train_aux_loss(t0), aux1 = model_train_aux_loss(t1);
    assert_memory_equal(&aux0, &aux1, sizeof aux0);
    assert_true(recompute ? aux0 > 0 : aux0 == 0);
    float lp0[64], lp1[64], en0[64], en1[64];
    model_train_download(t0, lp0, en0);
    model_train_download(t1, lp1, en1);
    same_bits(what, "train log-probs", lp1, lp0, b->n);
    same_bits(what, "train entropies", en1, en0, b->n);
    int64_t L = c->num_hidden_layers, E = c->n_routed_experts;
    int64_t *k0 = calloc((size_t)(L * E), sizeof(int64_t)), *k1 = calloc((size_t)(L * E), sizeof(int64_t));
    int64_t r0 = 0, p0 = 0, r1 = 0, p1 = 0;
    model_train_expert_load(t0, k0, &r0, &p0);
    model_train_expert_load(t1, k1, &r1, &p1);
    assert_memory_equal(k0, k1, (size_t)(L * E) * sizeof(int64_t));
    assert_true(r0 == r1 && p0 == p1 && r1 == p1);
    free(k0), free(k1);
    float g_lp[64], g_en[64];
    for (int i = 0; i < b->n; i++) {
        g_lp[i] = -1.0f + (float)(hash(7u + (uint32_t)R, (uint32_t)i) % 1000) / 1000.0f;
        g_en[i] = 0.01f * (float)(hash(9u, (uint32_t)i) % 100) / 100.0f;
    }
    float *g0 = model_grads_new(ref), *g1 = model_grads_new(m);
    model_grads_zero(ref, g0);
    model_grads_zero(m, g1);
    model_backward(t0, g_lp, g_en, g0);
    model_backward(t1, g_lp, g_en, g1);
    /* non-expert gradients: this rank's own, bit for bit; experts: summed
     * over the ranks, placed at the whole model's offsets */
    int64_t nr = model_numel(ref);
    float *s0 = calloc((size_t)nr, sizeof(float)), *s1 = calloc((size_t)nr, sizeof(float));
    for (int i = 0; i < model_nparams(m); i++) {
        const model_param *p = model_param_at(m, i), *q = model_param_find(ref, p->name);
        if (is_expert(p->name)) memcpy(s1 + q->offset, g1 + p->offset, (size_t)p->numel * sizeof(float));
        else same_bits(what, p->name, g1 + p->offset, g0 + q->offset, p->numel);
    }
    for (int i = 0; i < model_nparams(ref); i++) {
        const model_param *q = model_param_at(ref, i);
        if (is_expert(q->name)) memcpy(s0 + q->offset, g0 + q->offset, (size_t)q->numel * sizeof(float));
    }
    assert_int_equal(dist_allreduce(dist_world(), s0, (size_t)nr, DIST_F32, DIST_SUM), BASE_OK);
    assert_int_equal(dist_allreduce(dist_world(), s1, (size_t)nr, DIST_F32, DIST_SUM), BASE_OK);
    double worst = 0;
    for (int i = 0; i < model_nparams(ref); i++) {
        const model_param *q = model_param_at(ref, i);
        if (!is_expert(q->name)) continue;
        double mx = 0, diff = 0;
        for (int64_t k = 0; k < q->numel; k++) {
            double a = s0[q->offset + k], d = fabs((double)s1[q->offset + k] - a);
            if (fabs(a) > mx) mx = fabs(a);
            if (d > diff) diff = d;
            if (a == 0.0 && s1[q->offset + k] != 0.0f) fail_msg("%s: %s [%lld] not zero", what, q->name, (long long)k);
        }
        double rel = mx > 0 ? diff / mx : diff;
        if (rel > worst) worst = rel;
        if (rel > 2e-6) fail_msg("%s: %s summed gradient differs by %.3g relative", what, q->name, rel);
    }
    free(s0), free(s1);
    model_ops(ref)->free(g0);
    model_ops(m)->free(g1);
    model_train_free(t0);
    model_train_free(t1);
    return worst;
}

/* Greedy decode of this rank's two prompts, sequence s stopping after
 * steps[s] tokens; the model steps with zero rows once both stopped until
 * `any` says every rank is done. Tokens [2][16] and the step logits
 * [2][16][V] out; returns the steps run. */
static int decode(model *m, const batch *b, const model_ep *ep, int32_t *tok, float *lg) {
    int64_t V = model_cfg(m)->vocab_size;
    int steps[2] = {2 + 2 * R, 1 + R};
    model_cache_limits cl = {.slots = 2, .max_len = 64, .max_batch = 2, .max_prefill = 64};
    model_cache *mc = NULL;
    assert_int_equal(model_cache_new(m, &cl, &mc), BASE_OK);
    model_cache_mem cm;
    model_cache_memory(mc, &cm);
    assert_int_equal(cm.pages + cm.table + cm.workspace,
                     model_cache_bytes_ep(model_cfg(m), &cl, NULL, MODEL_F32, ep ? ep->size : 1));
    int32_t slots[2] = {0, 1};
    const tensor *out = NULL;
    if (model_prefill(mc, 2, slots, b->ids, b->cu, &out)) fail_msg("prefill: %s", base_err_msg());
    float *h = malloc((size_t)(2 * V) * sizeof(float));
    int32_t next[2], pos[2] = {b->cu[1], b->cu[2] - b->cu[1]};
    model_ops(m)->download(h, out->data, (size_t)(2 * V) * sizeof(float));
    int done[2] = {0, 0}, nstep = 0;
    for (int s = 0; s < 2; s++) {
        int best = 0;
        for (int64_t v = 1; v < V; v++)
            if (h[s * V + v] > h[s * V + best]) best = (int)v;
        next[s] = best;
        tok[s * 16] = best;
        memcpy(lg + (size_t)(s * 16) * (size_t)V, h + s * V, (size_t)V * sizeof(float));
    }
    for (;;) {
        int32_t rs[2], rt[2], rp[2];
        int n = 0;
        for (int s = 0; s < 2; s++) {
            if (done[s] + 1 >= steps[s]) continue; /* its last token is chosen */
            rs[n] = s, rt[n] = next[s], rp[n] = pos[s], n++;
        }
        int any = n > 0;
        if (ep) assert_int_equal(ep->any_active(ep->ctx, n > 0, &any), BASE_OK);
        if (!any) break;
        if (!n && !ep) break;
        if (model_decode(mc, n, rs, rt, rp, &out)) fail_msg("decode: %s", base_err_msg());
        nstep++;
        if (!n) continue;
        model_ops(m)->download(h, out->data, (size_t)(n * V) * sizeof(float));
        for (int i = 0; i < n; i++) {
            int s = rs[i], best = 0;
            for (int64_t v = 1; v < V; v++)
                if (h[i * V + v] > h[i * V + best]) best = (int)v;
            done[s]++, pos[s]++;
            next[s] = best;
            tok[s * 16 + done[s]] = best;
            memcpy(lg + (size_t)(s * 16 + done[s]) * (size_t)V, h + i * V, (size_t)V * sizeof(float));
        }
    }
    for (int s = 0; s < 2; s++) assert_int_equal(done[s] + 1, steps[s]);
    free(h);
    model_cache_free(mc);
    return nstep;
}

static void check_decode(const char *what, model *ref, model *m, const batch *b, const model_ep *ep) {
    int64_t V = model_cfg(m)->vocab_size;
    int32_t t0[32], t1[32];
    memset(t0, -1, sizeof t0), memset(t1, -1, sizeof t1);
    float *l0 = calloc((size_t)(32 * V), sizeof(float)), *l1 = calloc((size_t)(32 * V), sizeof(float));
    decode(ref, b, NULL, t0, l0);
    int steps = decode(m, b, ep, t1, l1);
    assert_memory_equal(t0, t1, sizeof t0);
    same_bits(what, "decode logits", l1, l0, 32 * V);
    /* with EP every rank stepped until the last one was done: rank W-1
     * decodes 2 + 2 (W-1) tokens, the first from the prefill */
    assert_int_equal(steps, ep ? 2 * W - 1 : 1 + 2 * R);
    free(l0), free(l1);
}

static void run_case(const char *name) {
    model *ref = get_model(name, NULL);
    const model_config *c = model_cfg(ref);
    batch b;
    make_batch(&b, c->vocab_size);
    for (int ep = 1; ep <= 4; ep *= 2) {
        if (W % ep || c->n_routed_experts % ep) continue;
        grp G;
        model_ep e = make_ep(&G, ep);
        model *m = get_model(name, &e);
        char what[96];
        snprintf(what, sizeof what, "%s EP %d of world %d, rank %d", name, ep, W, R);
        assert_true(ep == 1 ? model_get_ep(m) == NULL : model_get_ep(m) != NULL);
        check_params(what, ref, m, ep);
        model_load_opts lo = {.ep = &e};
        model_mem pm, am;
        assert_int_equal(model_memory_plan(c, &lo, TENSOR_CPU, &pm), BASE_OK);
        model_memory(m, &am);
        assert_int_equal(pm.params, model_numel(m));
        assert_int_equal(pm.master, am.master);
        check_logits(what, ref, m, &b);
        double rel = check_train(what, ref, m, &b, 0);
        double rel2 = check_train(what, ref, m, &b, 1);
        check_decode(what, ref, m, &b, ep > 1 ? &e : NULL);
        if (ep > 1) assert_true(G.calls > 0);
        if (R == 0)
            printf("%s: bit-identical forward, logits, decode and non-expert gradients; expert gradients "
                   "within %.2g / %.2g (recompute) relative, %lld exchanges\n",
                   what, rel, rel2, (long long)G.calls);
        model_free(m);
    }
    model_free(ref);
}

/* A frozen bf16 model split over EP = 2 (where the world allows): its
 * logits bit-identical to the whole frozen bf16 model's. */
static void test_frozen_bf16(void **s) {
    (void)s;
    if (W % 2) return;
    char *dir = fixture_dir("tiny-v3-b");
    grp G;
    model_ep e = make_ep(&G, 2);
    model_load_opts o0 = {.precision = MODEL_BF16, .frozen = 1}, o1 = o0;
    o1.ep = &e;
    model *ref = NULL, *m = NULL;
    assert_int_equal(model_load(dir, ops_cpu(), &o0, &ref), BASE_OK);
    if (model_load(dir, ops_cpu(), &o1, &m)) fail_msg("%s", base_err_msg());
    assert_true(model_compute_bytes(m) < model_compute_bytes(ref));
    batch b;
    make_batch(&b, model_cfg(m)->vocab_size);
    check_logits("tiny-v3-b frozen bf16 EP 2", ref, m, &b);
    check_decode("tiny-v3-b frozen bf16 EP 2", ref, m, &b, &e);
    model_free(ref), model_free(m);
    free(dir);
}

static void test_tiny(void **s) { (void)s, run_case(TINY); }
static void test_fixture_a(void **s) { (void)s, run_case("hf-tiny-v3-a"); }
static void test_fixture_b(void **s) { (void)s, run_case("tiny-v3-b"); }
static void test_fixture_c(void **s) { (void)s, run_case("tiny-v3-c"); }
static void test_fixture_d(void **s) { (void)s, run_case("tiny-v3-d"); }

static void test_errors(void **s) {
    (void)s;
    grp G;
    model_ep e = make_ep(&G, 1);
    e.size = 3, e.rank = 0; /* 8 experts */
    char *dir = fixture_dir("tiny-v3-b");
    model_load_opts o = {.ep = &e};
    model *m = NULL;
    assert_int_equal(model_load(dir, ops_cpu(), &o, &m), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "expert_parallel_size 3"));
    assert_null(m);
    e.size = 2, e.rank = 1, e.alltoallv = NULL;
    assert_int_equal(model_load(dir, ops_cpu(), &o, &m), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "exchange"));
    e.alltoallv = x_rows;
    assert_int_equal(model_load(dir, ops_cpu(), &o, &m), BASE_OK); /* loading exchanges nothing */
    model_lora_config lc = {.r = 2, .lora_alpha = 4, .targets = 1u << MODEL_LORA_GATE_PROJ, .routed_experts = 1};
    model_lora *a = NULL;
    assert_int_equal(model_lora_new(m, &lc, 1, &a), BASE_ERR_UNSUPPORTED);
    assert_non_null(strstr(base_err_msg(), "routed_experts"));
    assert_non_null(strstr(base_err_msg(), "expert_parallel_size 2"));
    lc.routed_experts = 0; /* the shared experts only: fine */
    assert_int_equal(model_lora_new(m, &lc, 1, &a), BASE_OK);
    model_free(m);
    free(dir);
}

int main(int argc, char **argv) {
    if (dist_init(&argc, &argv)) {
        fprintf(stderr, "dist_init: %s\n", base_err_msg());
        return 1;
    }
    R = dist_rank(), W = dist_world_size();
    (void)ref_f32, (void)ref_ids; /* fixture_ref.h's readers: not needed here */
    if (W > 4) {
        fprintf(stderr, "test_ep runs on at most 4 ranks\n");
        dist_abort(1);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny),      cmocka_unit_test(test_fixture_a), cmocka_unit_test(test_fixture_b),
        cmocka_unit_test(test_fixture_c), cmocka_unit_test(test_fixture_d), cmocka_unit_test(test_frozen_bf16),
        cmocka_unit_test(test_errors),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    if (failed) dist_abort(1); /* a rank whose test failed must not leave the others in a collective */
    dist_finalize();
    return 0;
}
