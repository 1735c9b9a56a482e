/* The model's side of ZeRO 2 and 3 (src/model/backward.c, shard.c), one
 * process, no MPI, on random tiny models (untied and tied embeddings, with
 * and without recomputation, with an MTP layer):
 *   - the units tile the trained tensors in arena order, unit 0 is the
 *     embedding; the windows are the largest unit and a tied embedding's;
 *   - model_backward_units: the windows' gradients, added into an
 *     arena-shaped buffer at each unit's range, are model_backward's bit for
 *     bit; the hooks come in the documented order;
 *   - a released arena (model_arena_release) whose units a hook binds from
 *     two alternating windows (and a tied embedding's): the training
 *     forward's log-probabilities, model_backward_units' gradients and
 *     model_forward_logits' logits are the whole model's bit for bit; the
 *     released model's weights cannot be read; model_arena_restore gives a
 *     working arena back. */
#include "common/test_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"

/* test_tiny_config with an MTP layer. */
static char *tiny(const char *over) {
    base_buf o = {0};
    base_buf_printf(&o, "%s%s\"num_nextn_predict_layers\": 1", over, *over ? ", " : "");
    char *s = test_tiny_config(o.data);
    base_buf_free(&o);
    return s;
}

static model *random_model(const char *over) {
    char *js = tiny(over);
    cJSON *j = cJSON_Parse(js);
    model_config c;
    if (model_config_parse(j, "config.json", &c)) fail_msg("%s: %s", over, base_err_msg());
    cJSON_Delete(j);
    free(js);
    model *m = NULL;
    assert_int_equal(model_init_random(&c, ops_cpu(), 7, 0.2f, NULL, &m), BASE_OK);
    return m;
}

/* The trainer's side, as src/train/run_zero.c does it in one process: unit
 * windows for the gradients (two alternating, a tied embedding's), their
 * values added into an arena-shaped sum at each unit's end; parameter
 * windows filled from a host copy of the weights for a released model. */
typedef struct {
    model *m;
    int U, tied;
    int64_t *lo, *hi;
    float *gwin[3], *sum; /* sum [numel]: the windows' gradients at their arena places */
    int cur, order[64], n_order;
    float *pwin[3], *host; /* host [numel]: the weights a released model's units come from */
    int gathers;
} units;

static float *g_begin(void *ctx, int u) {
    units *x = ctx;
    int k = u == 0 && x->tied ? 2 : (x->cur = 1 - x->cur);
    memset(x->gwin[k], 0, (size_t)(x->hi[u] - x->lo[u]) * sizeof(float));
    if (x->n_order < 64) x->order[x->n_order++] = u;
    return x->gwin[k];
}

static void g_end(void *ctx, int u) {
    units *x = ctx;
    int k = u == 0 && x->tied ? 2 : x->cur;
    for (int64_t i = 0; i < x->hi[u] - x->lo[u]; i++) x->sum[x->lo[u] + i] += x->gwin[k][i];
    if (x->n_order < 64) x->order[x->n_order++] = -1 - u;
}

static void p_use(void *ctx, int u) {
    units *x = ctx;
    int k = u == 0 && x->tied ? 2 : u % 2;
    memcpy(x->pwin[k], x->host + x->lo[u], (size_t)(x->hi[u] - x->lo[u]) * sizeof(float));
    model_unit_bind(x->m, u, x->pwin[k], NULL);
    x->gathers++;
}

static void units_init(units *x, model *m) {
    memset(x, 0, sizeof *x);
    x->m = m;
    x->U = model_grad_units(m);
    x->tied = model_cfg(m)->tie_word_embeddings;
    x->lo = malloc(2 * (size_t)x->U * sizeof(int64_t)), x->hi = x->lo + x->U;
    model_grad_unit_ranges(m, x->lo, x->hi);
    int64_t win, emb, all;
    model_grad_windows(m, &win, &emb, &all);
    for (int k = 0; k < 3; k++) {
        int64_t n = k < 2 ? win : emb > 0 ? emb : 1;
        x->gwin[k] = malloc((size_t)n * sizeof(float));
        x->pwin[k] = malloc((size_t)n * sizeof(float));
    }
    x->sum = calloc((size_t)model_numel(m), sizeof(float));
    x->host = malloc((size_t)model_numel(m) * sizeof(float));
    x->cur = 1;
}

static void units_free(units *x) {
    for (int k = 0; k < 3; k++) free(x->gwin[k]), free(x->pwin[k]);
    free(x->sum), free(x->host), free(x->lo);
}

/* Units tile the trained, non-MTP tensors; unit 0 is the embedding. */
static void check_units(const model *m, const units *x) {
    const model_config *c = model_cfg(m);
    assert_int_equal(x->U, c->num_hidden_layers + 2);
    assert_int_equal(x->lo[0], 0);
    assert_int_equal(x->hi[0], c->vocab_size * c->hidden_size);
    for (int u = 1; u < x->U; u++) assert_true(x->lo[u] >= x->hi[u - 1]);
    int64_t win, emb, all = 0, sum = 0;
    model_grad_windows(m, &win, &emb, &all);
    for (int u = 0; u < x->U; u++) sum += x->hi[u] - x->lo[u];
    assert_int_equal(all, sum);
    assert_int_equal(emb, x->tied ? x->hi[0] - x->lo[0] : 0);
    for (int i = 0; i < model_nparams(m); i++) { /* every trained main-model tensor inside one unit */
        const model_param *p = model_param_at(m, i);
        if (p->mtp) continue;
        int in = 0;
        for (int u = 0; u < x->U; u++) in += p->offset >= x->lo[u] && p->offset + p->numel <= x->hi[u];
        if (in != 1) fail_msg("%s is in %d units", p->name, in);
    }
}

static void run_case(const char *over, int recompute) {
    model *m = random_model(over), *r = random_model(over);
    int64_t P = model_numel(m);
    enum { N = 11 };
    int32_t ids[N], cu[3] = {0, 5, N};
    for (int i = 0; i < N; i++) ids[i] = (i * 13 + 2) % (int32_t)model_cfg(m)->vocab_size;
    float a[N], b[N];
    test_rand_f32(a, N, 31, 1.0f);
    test_rand_f32(b, N, 32, 1.0f);
    model_batch mb = {.nseq = 2, .ids = ids, .cu_seqlens = cu};
    model_train_limits lim = {.max_tokens = N, .max_seqs = 2, .recompute = recompute};
    /* the whole model: arena gradients, log-probs, logits */
    model_train *tr = NULL;
    assert_int_equal(model_train_new(m, &lim, &tr), BASE_OK);
    assert_int_equal(model_forward(tr, &mb), BASE_OK);
    float lp0[N], lp1[N];
    model_train_download(tr, lp0, NULL);
    float *g = model_grads_new(m);
    model_backward(tr, a, b, g);
    int V = (int)model_cfg(m)->vocab_size;
    float *lg0 = malloc((size_t)N * V * sizeof(float)), *lg1 = malloc((size_t)N * V * sizeof(float));
    assert_int_equal(model_forward_logits(m, 2, ids, cu, lg0, NULL), BASE_OK);
    /* the same pass into unit windows */
    units x;
    units_init(&x, m);
    check_units(m, &x);
    model_grad_hooks h = {g_begin, g_end, &x};
    assert_int_equal(model_forward(tr, &mb), BASE_OK);
    model_backward_units(tr, a, b, &h);
    assert_memory_equal(x.sum, g, (size_t)P * sizeof(float));
    /* the order: (tied: 0 first), L + 1, ..., 1, 0 last */
    int k = 0;
    if (x.tied) assert_int_equal(x.order[k++], 0);
    for (int u = x.U - 1; u >= 1; u--) {
        assert_int_equal(x.order[k++], u);
        assert_int_equal(x.order[k++], -1 - u);
    }
    if (!x.tied) assert_int_equal(x.order[k++], 0);
    assert_int_equal(x.order[k++], -1);
    assert_int_equal(k, x.n_order);
    /* released: every unit bound from the windows when used */
    model_train *tr2 = NULL;
    assert_int_equal(model_train_new(r, &lim, &tr2), BASE_OK);
    units y;
    units_init(&y, r);
    y.m = r;
    memcpy(y.host, model_params(m), (size_t)P * sizeof(float)); /* m's weights, as the ranks' shards hold them */
    assert_int_equal(model_arena_release(r, p_use, &y), BASE_OK);
    assert_true(model_arena_released(r) && !model_params(r));
    assert_int_equal(model_arena_release(r, p_use, &y), BASE_ERR_INVALID);
    assert_int_equal(model_forward(tr2, &mb), BASE_OK);
    model_train_download(tr2, lp1, NULL);
    assert_memory_equal(lp0, lp1, sizeof lp0);
    int fwd_gathers = y.gathers;
    assert_int_equal(fwd_gathers, y.U + (y.tied ? 1 : 0));
    model_grad_hooks h2 = {g_begin, g_end, &y};
    model_backward_units(tr2, a, b, &h2);
    assert_memory_equal(y.sum, g, (size_t)P * sizeof(float));
    assert_true(y.gathers > fwd_gathers);
    assert_int_equal(model_forward_logits(r, 2, ids, cu, lg1, NULL), BASE_OK);
    assert_memory_equal(lg0, lg1, (size_t)N * V * sizeof(float));
    /* back to a whole arena: the weights uploaded, the same logits */
    model_arena_restore(r);
    assert_false(model_arena_released(r));
    memcpy(model_params(r), y.host, (size_t)P * sizeof(float));
    model_sync_compute(r);
    assert_int_equal(model_forward_logits(r, 2, ids, cu, lg1, NULL), BASE_OK);
    assert_memory_equal(lg0, lg1, (size_t)N * V * sizeof(float));
    printf("# units [%s%s]: %d units, backward_units == backward, released == whole (%d gathers)\n", over,
           recompute ? ", recompute" : "", x.U, y.gathers);
    units_free(&x), units_free(&y);
    free(lg0), free(lg1);
    model_ops(m)->free(g);
    model_train_free(tr), model_train_free(tr2);
    model_free(m), model_free(r);
}

static void test_units(void **state) {
    (void)state;
    run_case("", 0);
    run_case("\"tie_word_embeddings\": true", 0);
    run_case("\"tie_word_embeddings\": true", 1);
    run_case("\"q_lora_rank\": null, \"n_shared_experts\": 0", 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_units)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
