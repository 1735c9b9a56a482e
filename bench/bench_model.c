/*
 * bench_model: the DeepSeek-V3 model on the CPU backend at a ~88M-parameter
 * V3 config with random weights (MLA with query LoRA, YaRN, 16 routed
 * experts in 4 groups, top-2, one shared expert, one dense layer):
 *
 *   prefill   tokens/s of model_prefill (training-form MLA over packed
 *             prompts, latent cache written), and its GFLOP/s as a share of
 *             the machine's FMA peak measured in this program
 *   decode    tokens/s of model_decode (absorbed MLA over the latent cache)
 *             at batch 1 and batch B, context growing from the prompt
 *   train     tokens/s of model_forward + model_backward (logp and entropy)
 *
 * FLOPs are counted from the config: 2 per multiply-add of every GEMM a
 * token goes through (its routed experts and the shared one only), plus the
 * causal attention (scores and values over the positions it sees).
 * Each figure is the best of several runs (least disturbed by other
 * processes on a shared machine).
 *
 *   build/bench/bench_model [--quick] [--prompt LEN] [--seqs S] [--steps N] [--batch B]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#include "cpu_peak.h"
#include "model/model.h"

static const char *CONFIG =
    "{\"model_type\": \"deepseek_v3\", \"vocab_size\": 32000, \"hidden_size\": 512, "
    "\"intermediate_size\": 1408, \"moe_intermediate_size\": 256, \"num_hidden_layers\": 8, "
    "\"num_attention_heads\": 8, \"num_key_value_heads\": 8, \"n_shared_experts\": 1, "
    "\"n_routed_experts\": 16, \"num_experts_per_tok\": 2, \"n_group\": 4, \"topk_group\": 2, "
    "\"routed_scaling_factor\": 2.5, \"kv_lora_rank\": 128, \"q_lora_rank\": 256, "
    "\"qk_nope_head_dim\": 64, \"qk_rope_head_dim\": 32, \"v_head_dim\": 64, "
    "\"first_k_dense_replace\": 1, \"norm_topk_prob\": true, \"max_position_embeddings\": 4096, "
    "\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 1024, "
    "\"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 1.0, \"mscale_all_dim\": 1.0}}";

/* GEMM FLOPs per token of the decoder layers (no attention core, no head). */
static double layer_flops(const model_config *c) {
    double d = c->hidden_size, H = c->num_attention_heads, dqk = c->qk_head_dim, dc = c->kv_lora_rank;
    double dr = c->qk_rope_head_dim, dn = c->qk_nope_head_dim, dv = c->v_head_dim, dq = c->q_lora_rank;
    double attn = (dq > 0 ? d * dq + dq * H * dqk : d * H * dqk) + d * (dc + dr) + dc * H * (dn + dv) + H * dv * d;
    double ie = c->moe_intermediate_size, is = c->n_shared_experts * ie;
    double f = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        f += attn;
        if (model_layer_is_moe(c, l)) f += d * c->n_routed_experts + c->num_experts_per_tok * 3 * d * ie + 3 * d * is;
        else f += 3 * d * c->intermediate_size;
    }
    return 2 * f;
}

/* Attention core FLOPs of one token that sees `ctx` positions. */
static double attn_flops(const model_config *c, double ctx) {
    return 2.0 * c->num_hidden_layers * c->num_attention_heads * (c->qk_head_dim + c->v_head_dim) * ctx;
}

int main(int argc, char **argv) {
    int P = 512, S = 4, steps = 32, B = 16, quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1, P = 128, S = 2, steps = 8, B = 4;
        else if (!strcmp(argv[i], "--prompt") && i + 1 < argc) P = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seqs") && i + 1 < argc) S = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) B = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_model [--quick] [--prompt LEN] [--seqs S] [--steps N] [--batch B]\n");
            return 2;
        }
    }
    if (P < 2 || S < 1 || steps < 1 || B < 1) base_die("bench_model: bad sizes");
    cJSON *j = cJSON_Parse(CONFIG);
    model_config cfg;
    if (model_config_parse(j, "bench config", &cfg)) base_die("%s", base_err_msg());
    cJSON_Delete(j);
    model *m = NULL;
    if (model_init_random(&cfg, ops_cpu(), 1, 0.02f, NULL, &m)) base_die("%s", base_err_msg());
    int64_t nparam = model_numel(m);
    double peak = bench_cpu_peak(7, NULL);
    printf("bench_model: %d threads, %.1fM parameters (%d layers, d %lld, %d heads, %d experts top-%d, vocab %lld)\n",
           bench_threads(), nparam / 1e6, cfg.num_hidden_layers, (long long)cfg.hidden_size, cfg.num_attention_heads,
           cfg.n_routed_experts, cfg.num_experts_per_tok, (long long)cfg.vocab_size);
    printf("FMA peak: %.1f GFLOP/s\n", peak);
    int reps = quick ? 2 : 4;
    int slots = S > B ? S : B;
    model_cache_limits lim = {.slots = slots, .max_len = P + steps + 1, .max_batch = B, .max_prefill = (int64_t)S * P};
    model_cache *c = NULL;
    if (model_cache_new(m, &lim, &c)) base_die("%s", base_err_msg());
    int32_t *ids = malloc((size_t)S * P * sizeof(int32_t)), *cu = malloc((size_t)(S + 1) * sizeof(int32_t));
    int32_t *sl = malloc((size_t)slots * sizeof(int32_t));
    for (int64_t i = 0; i < (int64_t)S * P; i++) ids[i] = (int32_t)((i * 7919 + 13) % cfg.vocab_size);
    for (int s = 0; s <= S; s++) cu[s] = s * P;
    for (int s = 0; s < slots; s++) sl[s] = s;
    const tensor *lg;
    /* prefill */
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = base_now();
        if (model_prefill(c, S, sl, ids, cu, &lg)) base_die("%s", base_err_msg());
        double t = base_now() - t0;
        if (t < best) best = t;
    }
    double ntok = (double)S * P;
    double fl = ntok * layer_flops(&cfg) + ntok * attn_flops(&cfg, (P + 1) / 2.0) + 2.0 * S * cfg.hidden_size * cfg.vocab_size;
    printf("prefill  %d x %d tokens: %8.3f s  %9.1f tokens/s  %7.1f GFLOP/s  %5.1f%% of peak\n", S, P, best, ntok / best,
           fl / best * 1e-9, 100 * fl / best * 1e-9 / peak);
    /* decode at batch 1 and batch B: slots beyond S get copies of prompt 0 */
    for (int s = S; s < slots; s++) model_cache_copy(c, s, 0, P);
    int bs[2] = {1, B};
    for (int k = 0; k < (B > 1 ? 2 : 1); k++) {
        int b = bs[k];
        int32_t *tok = malloc((size_t)b * 4), *pos = malloc((size_t)b * 4);
        best = 1e30;
        for (int r = 0; r < reps; r++) {
            double t0 = base_now();
            for (int st = 0; st < steps; st++) {
                for (int i = 0; i < b; i++) tok[i] = (int32_t)((st * 31 + i) % cfg.vocab_size), pos[i] = P + st;
                if (model_decode(c, b, sl, tok, pos, &lg)) base_die("%s", base_err_msg());
            }
            double t = base_now() - t0;
            if (t < best) best = t;
        }
        double nt = (double)b * steps;
        double dfl = nt * (layer_flops(&cfg) + 2.0 * cfg.hidden_size * cfg.vocab_size);
        printf("decode   batch %3d, %d steps from %d: %8.3f s  %9.1f tokens/s  %7.1f GFLOP/s (GEMMs)\n", b, steps, P,
               best, nt / best, dfl / best * 1e-9);
        free(tok), free(pos);
    }
    model_cache_free(c);
    /* training forward + backward over the same S x P tokens */
    model_train_limits tl = {.max_tokens = (int64_t)S * P, .max_seqs = S, .recompute = 0};
    model_train *tr = NULL;
    if (model_train_new(m, &tl, &tr)) base_die("%s", base_err_msg());
    float *g = malloc((size_t)S * P * 4), *grads = model_grads_new(m);
    for (int64_t i = 0; i < (int64_t)S * P; i++) g[i] = -1.0f / (float)(S * P);
    model_batch bt = {.nseq = S, .ids = ids, .cu_seqlens = cu};
    best = 1e30;
    double bf = 1e30;
    for (int r = 0; r < (quick ? 1 : 3); r++) {
        double t0 = base_now();
        if (model_forward(tr, &bt)) base_die("%s", base_err_msg());
        double t1 = base_now();
        model_backward(tr, g, g, grads);
        double t2 = base_now();
        if (t2 - t0 < best) best = t2 - t0;
        if (t1 - t0 < bf) bf = t1 - t0;
    }
    /* the training forward also runs the full LM head over every token */
    double tfl = ntok * layer_flops(&cfg) + ntok * attn_flops(&cfg, (P + 1) / 2.0) + 2.0 * ntok * cfg.hidden_size * cfg.vocab_size;
    printf("train    %d x %d tokens: forward %.3f s, forward+backward %.3f s  %9.1f tokens/s  %7.1f GFLOP/s (3x forward)\n",
           S, P, bf, best, ntok / best, 3 * tfl / best * 1e-9);
    printf("memory: activations %.1f MiB (%.1f MiB with recompute), cache %.1f MiB\n",
           model_train_bytes(&cfg, &tl) / 1048576.0,
           model_train_bytes(&cfg, &(model_train_limits){.max_tokens = tl.max_tokens, .max_seqs = tl.max_seqs, .recompute = 1}) / 1048576.0,
           model_cache_bytes(&cfg, &lim) / 1048576.0);
    model_ops(m)->free(grads);
    free(g);
    model_train_free(tr);
    free(ids), free(cu), free(sl);
    model_free(m);
    return 0;
}
