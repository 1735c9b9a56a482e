/*
 * bench_train: throughput of the training core on the CPU.
 *   - grpo_loss: loss + gradients over a step of S sequences (token level,
 *     old logprobs, k3 KL, entropy bonus), in completion tokens per second;
 *   - the adamw and sumsq ops over a flat buffer of n parameters, in
 *     parameters per second and GB/s (adamw moves 28 bytes per parameter:
 *     reads p, m, v, g, writes p, m, v; sumsq reads 4);
 *   - sft_pack_plan (best-fit decreasing) over n samples.
 * Each figure: the best of several timed runs after a warm-up.
 *
 *   build/bench/bench_train [--quick]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "tensor/ops.h"
#include "train/grpo.h"
#include "train/sft.h"

static float frand(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((*s >> 40) & 0xffffff) / 16777216.0f;
}

static double best_of(int reps, void (*fn)(void *), void *ctx) {
    fn(ctx); /* warm-up */
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = base_now();
        fn(ctx);
        double t = base_now() - t0;
        if (t < best) best = t;
    }
    return best;
}

typedef struct {
    grpo_config cfg;
    grpo_batch b;
    grpo_norm nm;
    float *g, *ge;
} loss_ctx;

static void run_loss(void *p) {
    loss_ctx *c = p;
    grpo_loss_stats st;
    if (grpo_loss(&c->cfg, &c->b, &c->nm, c->g, c->ge, &st)) base_die("%s", base_err_msg());
}

typedef struct {
    tensor p, m, v, g;
    ops_adamw_args a;
    double sum;
} adam_ctx;

static void run_adamw(void *p) {
    adam_ctx *c = p;
    c->a.step++;
    ops_cpu()->adamw(&c->p, &c->m, &c->v, &c->g, &c->a);
}
static void run_sumsq(void *p) {
    adam_ctx *c = p;
    c->sum += ops_cpu()->sumsq(&c->g);
}

typedef struct {
    int64_t *lens, n, row;
} pack_ctx;

static void run_pack(void *p) {
    pack_ctx *c = p;
    sft_pack pk;
    if (sft_pack_plan(c->lens, c->n, c->row, &pk)) base_die("%s", base_err_msg());
    sft_pack_free(&pk);
}

int main(int argc, char **argv) {
    int quick = argc > 1 && !strcmp(argv[1], "--quick");
    uint64_t seed = 1;
    /* ---- grpo_loss ---- */
    int64_t S = quick ? 64 : 512, T_avg = 1024;
    int64_t *off = malloc((size_t)(S + 1) * sizeof *off);
    off[0] = 0;
    for (int64_t i = 0; i < S; i++) off[i + 1] = off[i] + 1 + (int64_t)(frand(&seed) * 2 * T_avg);
    int64_t T = off[S];
    float *lp = malloc((size_t)T * 4), *old = malloc((size_t)T * 4), *ref = malloc((size_t)T * 4),
          *ent = malloc((size_t)T * 4), *adv = malloc((size_t)S * 4);
    for (int64_t t = 0; t < T; t++) {
        old[t] = -3.0f * frand(&seed);
        lp[t] = old[t] + 0.4f * (frand(&seed) - 0.5f);
        ref[t] = old[t] + 0.4f * (frand(&seed) - 0.5f);
        ent[t] = 3.0f * frand(&seed);
    }
    for (int64_t i = 0; i < S; i++) adv[i] = 2.0f * frand(&seed) - 1.0f;
    loss_ctx lc;
    grpo_config_default(&lc.cfg);
    lc.cfg.beta = 0.04;
    lc.cfg.num_iterations = 2;
    lc.cfg.entropy_coef = 0.01;
    lc.b = (grpo_batch){S, off, NULL, NULL, adv, lp, old, ref, ent, NULL, NULL};
    lc.nm = (grpo_norm){S, T, 1};
    lc.g = malloc((size_t)T * 4);
    lc.ge = malloc((size_t)T * 4);
    double t_loss = best_of(5, run_loss, &lc);
    printf("grpo_loss: %lld sequences, %lld tokens: %.2f ms, %.1f M tokens/s\n", (long long)S,
           (long long)T, t_loss * 1e3, (double)T / t_loss / 1e6);
    /* every loss_type and the costlier options, same batch, same run:
     * time relative to the default above */
    float *isr = malloc((size_t)T * 4);
    for (int64_t t = 0; t < T; t++) isr[t] = 0.8f + 0.4f * frand(&seed);
    for (int v = 0; v < GRPO_LOSS_VESPO + 4; v++) {
        loss_ctx lv = lc;
        char what[64];
        if (v <= GRPO_LOSS_VESPO) {
            lv.cfg.loss_type = (grpo_loss_type)v;
            if (v == GRPO_LOSS_CISPO) lv.cfg.epsilon_high = 5.0;
            snprintf(what, sizeof what, "loss_type %s", grpo_loss_type_name(lv.cfg.loss_type));
        } else if (v == GRPO_LOSS_VESPO + 1) {
            lv.cfg.importance_sampling_level = GRPO_IS_SEQUENCE;
            snprintf(what, sizeof what, "importance_sampling_level sequence");
        } else if (v == GRPO_LOSS_VESPO + 2) {
            lv.cfg.top_entropy_quantile = 0.2; /* a sort of the micro-batch's entropies */
            snprintf(what, sizeof what, "top_entropy_quantile 0.2");
        } else {
            lv.cfg.importance_sampling_correction = 1, lv.cfg.use_bias_correction_kl = 1;
            lv.cfg.off_policy_mask_threshold = 0.1;
            lv.b.is_ratio = isr, lv.b.sampling_logp = old;
            snprintf(what, sizeof what, "IS correction + bias KL + OPSM");
        }
        double tv = best_of(5, run_loss, &lv);
        printf("  %-36s %.2f ms, %.2fx the default's time\n", what, tv * 1e3, tv / t_loss);
    }
    free(isr);

    /* ---- adamw / sumsq ---- */
    int64_t n = quick ? (1 << 22) : (1 << 26);
    adam_ctx ac;
    float *buf[4];
    for (int k = 0; k < 4; k++) {
        buf[k] = ops_cpu()->alloc((size_t)n * 4);
        for (int64_t i = 0; i < n; i++) buf[k][i] = k == 2 ? 0.01f * frand(&seed) : frand(&seed) - 0.5f;
    }
    ac.p = tensor_1d(buf[0], TENSOR_F32, n);
    ac.m = tensor_1d(buf[1], TENSOR_F32, n);
    ac.v = tensor_1d(buf[2], TENSOR_F32, n);
    ac.g = tensor_1d(buf[3], TENSOR_F32, n);
    ac.a = (ops_adamw_args){.lr = 1e-4, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01,
                            .grad_scale = 1.0f, .step = 0};
    ac.sum = 0;
    double t_adam = best_of(5, run_adamw, &ac), t_sq = best_of(5, run_sumsq, &ac);
    printf("adamw: %lld params: %.2f ms, %.0f M params/s, %.1f GB/s\n", (long long)n, t_adam * 1e3,
           (double)n / t_adam / 1e6, 28.0 * (double)n / t_adam / 1e9);
    printf("sumsq: %lld params: %.2f ms, %.1f GB/s\n", (long long)n, t_sq * 1e3,
           4.0 * (double)n / t_sq / 1e9);

    /* ---- sft packing ---- */
    pack_ctx pc = {.n = quick ? 100000 : 1000000, .row = 8192};
    pc.lens = malloc((size_t)pc.n * sizeof *pc.lens);
    for (int64_t i = 0; i < pc.n; i++) pc.lens[i] = 1 + (int64_t)(frand(&seed) * frand(&seed) * 4096);
    double t_pack = best_of(3, run_pack, &pc);
    printf("sft_pack_plan: %lld samples into rows of %lld: %.1f ms, %.2f M samples/s\n",
           (long long)pc.n, (long long)pc.row, t_pack * 1e3, (double)pc.n / t_pack / 1e6);

    for (int k = 0; k < 4; k++) ops_cpu()->free(buf[k]);
    free(off), free(lp), free(old), free(ref), free(ent), free(adv), free(lc.g), free(lc.ge);
    free(pc.lens);
    return 0;
}
