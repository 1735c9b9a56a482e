/*
 * The rollout engine's paged latent cache (hf-tiny-v3-a):
 *   - completions (tokens, log-prob bytes, finish reasons) are identical
 *     whatever the page size, the page budget and the number of slots,
 *     greedy and sampled at T = 1, with early stops: compared with
 *     page_size >= max_len, where every sequence has one private page and
 *     gets a copy of its prompt (the unpaged cache of the engine before
 *     pages);
 *   - a prompt's full pages are shared by its G samples: the pages in use
 *     are floor(P / 16) + G x (its own pages), not G copies;
 *   - with the cache memory of an unpaged engine of 4 slots, shared
 *     prompts let 8 sequences decode at once, with identical completions;
 *   - a group whose worst case exceeds the pool is an error, not a hang.
 * Usage: test_paged [cpu|emu|cuda] [f32|bf16] (emu: the CUDA kernels under
 * the emulator, batch invariant like the CPU: every layout, slot count and
 * page budget is compared with one reference; cuda: a GPU, "skipped: no
 * GPU" without one, where cuBLAS picks kernels by batch shape, so only runs
 * with the same slots are compared and the budgets are left out; bf16: the
 * model in bf16 mode, its latent cache in bf16 pages, where the same
 * identities must hold).
 */
#include "common/test_common.h"

#include <stdlib.h>
#include <string.h>

#include "io/st.h"
#include "model/model.h"
#include "rollout/rollout.h"
#include "cuda/test_backend.h"

enum { NPROMPT = 5, G = 3, MAXC = NPROMPT * G, MAX_PROMPT = 40 };

static const struct ops *g_ops;
static int g_emu, g_gpu;
static model_precision g_prec;
static model *M;
static int32_t P0[64]; /* input_ids.0 of the reference */
static int64_t N0;

static int setup(void **state) {
    (void)state;
    char *dir = test_shared_path("fixtures/hf-tiny-v3-a");
    model_load_opts lo = {.precision = g_prec};
    if (model_load(dir, g_ops, &lo, &M)) fail_msg("%s", base_err_msg());
    char *ref = base_path_join(dir, "reference.safetensors");
    st_file *f;
    if (st_open(ref, &f)) fail_msg("%s", base_err_msg());
    const st_tensor *t = st_find(f, "input_ids.0");
    if (!t || t->shape[0] < 37) fail_msg("input_ids.0 missing or shorter than 37 tokens");
    N0 = t->shape[0] < 64 ? t->shape[0] : 64;
    for (int64_t i = 0; i < N0; i++) P0[i] = (int32_t)((const int64_t *)t->data)[i];
    st_close(f);
    free(ref), free(dir);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    model_free(M);
    return 0;
}

static rollout_engine *engine(int max_seqs, int64_t page_size, int64_t max_pages, int64_t max_new) {
    rollout_limits lim = {.max_seqs = max_seqs, .max_prompts = NPROMPT, .max_group = 4, .max_prompt_len = MAX_PROMPT,
                          .max_new_tokens = max_new, .page_size = page_size, .max_pages = max_pages};
    rollout_engine *e;
    if (rollout_new(M, &lim, &e)) fail_msg("%s", base_err_msg());
    return e;
}

typedef struct {
    int n;
    int32_t ids[MAXC][32];
    float lp[MAXC][32];
    int64_t len[MAXC];
    int finish[MAXC];
    int peak_seqs;
    int64_t peak_pages;
} outputs;

/* Five prompts: shorter than a page (9, 3), exactly one page (16), one
 * page and a token (17), two full pages (32). */
static const int OFF[NPROMPT] = {0, 3, 7, 1, 5}, LEN[NPROMPT] = {9, 16, 3, 17, 32};

static void generate(rollout_engine *e, float T, int64_t max_new, const int32_t *stop, int nstop, outputs *o) {
    const int32_t *pp[NPROMPT];
    int32_t pl[NPROMPT];
    for (int p = 0; p < NPROMPT; p++) pp[p] = P0 + OFF[p], pl[p] = LEN[p];
    rollout_request r = {.n_prompts = NPROMPT, .prompt_ids = pp, .prompt_len = pl, .G = G,
                         .sampling = {T, 1, 0, 0}, .max_new_tokens = max_new, .stop_ids = stop, .n_stop_ids = nstop,
                         .seed = 17, .step = 2, .prompt_base = 3};
    rollout_result res;
    if (rollout_generate(e, &r, &res)) fail_msg("%s", base_err_msg());
    memset(o, 0, sizeof *o);
    o->n = res.n;
    o->peak_seqs = res.peak_seqs;
    o->peak_pages = res.peak_pages;
    for (int i = 0; i < res.n; i++) {
        o->len[i] = res.out[i].len;
        o->finish[i] = (int)res.out[i].finish;
        memcpy(o->ids[i], res.out[i].ids, sizeof(int32_t) * (size_t)o->len[i]);
        memcpy(o->lp[i], res.out[i].logp, sizeof(float) * (size_t)o->len[i]);
    }
}

static void assert_same(const outputs *a, const outputs *b, const char *what) {
    assert_int_equal(a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        if (a->len[i] != b->len[i] || a->finish[i] != b->finish[i])
            fail_msg("%s: completion %d has %lld tokens (%d), reference %lld (%d)", what, i, (long long)b->len[i],
                     b->finish[i], (long long)a->len[i], a->finish[i]);
        if (memcmp(a->ids[i], b->ids[i], sizeof(int32_t) * (size_t)a->len[i]) ||
            memcmp(a->lp[i], b->lp[i], sizeof(float) * (size_t)a->len[i])) /* bytes, not a tolerance */
            fail_msg("%s: completion %d differs from the reference", what, i);
    }
}

/* Page layouts against one private page per sequence (page_size >= the
 * longest sequence: the unpaged cache, prompt rows copied per sample). The
 * slot count and a page budget change which prompts are prefilled and
 * decoded together. The CPU and the emulated CUDA backend are batch
 * invariant (docs/cuda.md, "Determinism"), so there every layout is
 * compared with one reference: the unpaged cache with every slot (all
 * prompts prefilled at once). On a GPU the reference has the layout's
 * slots and the budget runs are left out. */
static void test_identical_across_layouts(void **state) {
    (void)state;
    int64_t max_new = g_emu ? 10 : 20, max_len = MAX_PROMPT + max_new;
    struct {
        int max_seqs;
        int64_t page_size, max_pages;
    } cfg[] = {
        {MAXC, 16, 0}, /* the default page size, every prompt admitted at once */
        {4, 16, 0},    /* one group at a time */
        {8, 5, 0},     /* pages of 5: a prompt of 16 spans 4 pages, 3 shared */
        {6, 1, 0},     /* a page per position */
        {MAXC, 16, 0}, /* set below: the smallest pool that holds the largest group */
        {MAXC, 3, 0},  /* set below: pages of 3, half the positions of all slots */
    };
    int ncfg = (int)(sizeof cfg / sizeof cfg[0]);
    /* the largest group's worst case: F + G (ceil(T / 16) - F), T = P + max_new - 1 */
    int64_t tight = 0;
    for (int p = 0; p < NPROMPT; p++) {
        int64_t F = LEN[p] / 16, need = F + G * ((LEN[p] + max_new - 1 + 15) / 16 - F);
        if (need > tight) tight = need;
    }
    cfg[ncfg - 2].max_pages = tight;
    cfg[ncfg - 1].max_pages = MAXC * ((max_len + 2) / 3) / 2;
    if (g_gpu) ncfg -= 2;
    static outputs ref, got;
    for (int t = 0; t < 2; t++) {
        float T = t ? 1.0f : 0.0f;
        /* a stop token seen early in some completions: sequences end at
         * different steps and give their pages back mid-run */
        rollout_engine *e0 = engine(MAXC, max_len, 0, max_new);
        generate(e0, T, max_new, NULL, 0, &ref);
        int32_t stop = ref.ids[1][3];
        if (!g_gpu) generate(e0, T, max_new, &stop, 1, &ref); /* the one reference */
        rollout_free(e0);
        for (int c = 0; c < ncfg; c++) {
            rollout_engine *e = engine(cfg[c].max_seqs, cfg[c].page_size, cfg[c].max_pages, max_new);
            if (g_gpu) {
                rollout_engine *r0 = engine(cfg[c].max_seqs, max_len, 0, max_new);
                generate(r0, T, max_new, &stop, 1, &ref);
                rollout_free(r0);
            }
            generate(e, T, max_new, &stop, 1, &got);
            int early = 0;
            for (int i = 0; i < ref.n; i++) early += ref.len[i] < max_new;
            assert_true(early >= 1);
            char what[160];
            snprintf(what, sizeof what, "%s T=%g max_seqs %d page_size %lld max_pages %lld vs unpaged, %d slots",
                     g_ops->name, T, cfg[c].max_seqs, (long long)cfg[c].page_size, (long long)cfg[c].max_pages,
                     g_gpu ? cfg[c].max_seqs : MAXC);
            assert_same(&ref, &got, what);
            if (cfg[c].max_pages) assert_true(got.peak_pages <= cfg[c].max_pages);
            printf("%s: identical (%d early stops, peak %d sequences, %lld pages; "
                   "unpaged: %lld pages of %lld positions)\n",
                   what, early, got.peak_seqs, (long long)got.peak_pages, (long long)ref.peak_pages,
                   (long long)max_len);
            rollout_free(e);
        }
    }
}

/* Pages in use for one prompt of P tokens and G samples, 16 per page. */
static void test_pages_shared(void **state) {
    (void)state;
    enum { GG = 4, PS = 16 };
    const int lens[4] = {16, 17, 9, 33};
    for (int k = 0; k < 4; k++) {
        int64_t P = lens[k], F = P / PS;
        for (int pass = 0; pass < 2; pass++) {
            int64_t max_new = pass ? 8 : 1; /* 1: prefill only; 8: seven decode steps */
            rollout_engine *e = engine(GG, PS, 0, 8);
            const int32_t *pp[1] = {P0};
            int32_t pl[1] = {(int32_t)P};
            rollout_request r = {.n_prompts = 1, .prompt_ids = pp, .prompt_len = pl, .G = GG,
                                 .sampling = {1.0f, 1, 0, 0}, .max_new_tokens = max_new, .seed = 5};
            rollout_result res;
            if (rollout_generate(e, &r, &res)) fail_msg("%s", base_err_msg());
            int64_t T = P + max_new - 1; /* positions written: the last token is never fed */
            int64_t want = F + GG * ((T + PS - 1) / PS - F), unshared = GG * ((T + PS - 1) / PS);
            printf("%s: prompt %lld, G %d, %lld new tokens: %lld pages in use (unshared: %lld)\n", g_ops->name,
                   (long long)P, GG, (long long)max_new, (long long)res.peak_pages, (long long)unshared);
            assert_int_equal(res.peak_pages, want);
            if (F) assert_true(res.peak_pages < unshared);
            rollout_free(e);
        }
    }
}

/* Same cache memory as an unpaged engine of 4 slots (4 x ceil(48 / 16)
 * pages), groups of 4 samples of a 32-token prompt: each group needs 2
 * shared + 4 own pages, so two groups (8 sequences) decode at once where
 * the unpaged cache held one. */
static void test_more_sequences_same_memory(void **state) {
    (void)state;
    enum { GG = 4, NEW = 8 };
    int64_t budget = 4 * ((MAX_PROMPT + NEW + 15) / 16);
    const int32_t *pp[4] = {P0, P0 + 1, P0 + 2, P0 + 3};
    int32_t pl[4] = {32, 32, 32, 32};
    rollout_request r = {.n_prompts = 4, .prompt_ids = pp, .prompt_len = pl, .G = GG,
                         .sampling = {1.0f, 1, 0, 0}, .max_new_tokens = NEW, .seed = 9};
    rollout_engine *old = engine(4, 16, budget, NEW), *paged = engine(16, 16, budget, NEW);
    rollout_result ra, rb;
    if (rollout_generate(old, &r, &ra)) fail_msg("%s", base_err_msg());
    if (rollout_generate(paged, &r, &rb)) fail_msg("%s", base_err_msg());
    printf("%s: %lld pages of cache: %d sequences at once with 4 slots, %d with 16 slots (%lld pages used)\n",
           g_ops->name, (long long)budget, ra.peak_seqs, rb.peak_seqs, (long long)rb.peak_pages);
    assert_int_equal(ra.peak_seqs, 4);
    assert_int_equal(rb.peak_seqs, 8);
    assert_true(rb.peak_pages <= budget);
    for (int i = 0; i < ra.n && !g_gpu; i++) { /* other batches: needs batch invariance */
        assert_int_equal(ra.out[i].len, rb.out[i].len);
        assert_memory_equal(ra.out[i].ids, rb.out[i].ids, sizeof(int32_t) * (size_t)ra.out[i].len);
        assert_memory_equal(ra.out[i].logp, rb.out[i].logp, sizeof(float) * (size_t)ra.out[i].len);
    }
    /* a group that can never fit is refused up front */
    rollout_engine *tiny = engine(16, 16, 5, NEW);
    assert_int_equal(rollout_generate(tiny, &r, &rb), BASE_ERR_LIMIT);
    printf("%s\n", base_err_msg());
    rollout_free(old), rollout_free(paged), rollout_free(tiny);
}

int main(int argc, char **argv) {
    const char *backend = argc > 1 ? argv[1] : "cpu";
    if (argc > 2 && model_precision_parse(argv[2], &g_prec)) {
        fprintf(stderr, "usage: test_paged [cpu|emu|cuda] [f32|bf16]\n");
        return 2;
    }
    int have = test_backend(backend, 1, &g_ops);
    if (have < 0) {
        fprintf(stderr, "usage: test_paged [cpu|emu|cuda] [f32|bf16]\n");
        return 2;
    }
    if (!have) return 0;
    g_gpu = !strcmp(backend, "cuda");
    g_emu = !strcmp(backend, "emu");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identical_across_layouts),
        cmocka_unit_test(test_pages_shared),
        cmocka_unit_test(test_more_sequences_same_memory),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
