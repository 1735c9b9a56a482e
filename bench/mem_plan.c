/*
 * mem_plan: the device bytes of a GRPO stage by role, full fine-tuning
 * beside LoRA, for a model config (config.json), from the sizing functions
 * the run allocates with (run_grpo_memory: model_weights_bytes,
 * model_lora_param_bytes, model_train_bytes_p, rollout_bytes; the test
 * train_run_mem asserts they equal what a run allocates on the CPU). These
 * are plans, not measurements (docs/model.md, "Memory of a GRPO stage").
 *
 *   mem_plan CONFIG.json [--precision f32|bf16] [--G 16] [--prompts 1]
 *            [--prompt-len 512] [--completion 4096] [--micro-batch 1]
 *            [--recompute 0|1] [--beta B] [--r 16] [--alpha 32]
 *            [--targets attention|attention+mlp|all] [--gpu-gb 80]
 *
 * The LoRA rows: the base as this branch loads it (the f32 masters and, in
 * bf16 mode, the bf16 copy), then the same with a frozen base holding
 * compute weights only, computed from the storage format: bf16 (2 bytes per
 * parameter; the norms, router and routing bias f32), and FP8 e4m3 GEMM
 * weights (attention projections, MLPs, shared and routed experts) with
 * one f32 scale per 128 x 128 block of each Hugging Face tensor, the
 * embedding and LM head bf16 (DeepSeek-V3's FP8 checkpoint layout).
 * "targets": attention = q_proj / q_a_proj / q_b_proj, kv_a_proj_with_mqa,
 * kv_b_proj, o_proj; attention+mlp adds gate/up/down_proj of the dense
 * MLP and the shared experts (the "attention + shared experts");
 * all adds the routed experts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "model/model.h"
#include "train/run.h"

#define GIB (1024.0 * 1024.0 * 1024.0)

/* ---- frozen storage from the format ---------------------------------------- */

typedef struct {
    double gemm, gemm_blocks; /* elements of GEMM weights, their 128 x 128 blocks */
    double embed;             /* embedding + LM head elements */
    double other;             /* norms, router, routing bias (f32) */
} param_split;

static double blocks(int64_t rows, int64_t cols) { return (double)((rows + 127) / 128) * (double)((cols + 127) / 128); }

static void gemm(param_split *p, int64_t rows, int64_t cols, int64_t n) {
    p->gemm += (double)rows * (double)cols * (double)n;
    p->gemm_blocks += blocks(rows, cols) * (double)n;
}

static void split_params(const model_config *c, param_split *p) {
    memset(p, 0, sizeof *p);
    int64_t d = c->hidden_size, H = c->num_attention_heads, dqk = c->qk_head_dim, qr = c->q_lora_rank;
    int64_t dc = c->kv_lora_rank, dr = c->qk_rope_head_dim, dn = c->qk_nope_head_dim, dv = c->v_head_dim;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        if (qr > 0) {
            gemm(p, qr, d, 1), gemm(p, H * dqk, qr, 1);
            p->other += (double)qr;
        } else {
            gemm(p, H * dqk, d, 1);
        }
        gemm(p, dc + dr, d, 1), gemm(p, H * (dn + dv), dc, 1), gemm(p, d, H * dv, 1);
        p->other += (double)(dc + 2 * d); /* kv_a_layernorm, input and post-attention norms */
        if (model_layer_is_moe(c, l)) {
            int64_t ie = c->moe_intermediate_size, E = c->n_routed_experts, si = c->n_shared_experts * ie;
            gemm(p, ie, d, 2 * E), gemm(p, d, ie, E);
            if (si > 0) gemm(p, si, d, 2), gemm(p, d, si, 1);
            p->other += (double)(E * d + E); /* router and its correction bias */
        } else {
            gemm(p, c->intermediate_size, d, 2), gemm(p, d, c->intermediate_size, 1);
        }
    }
    p->embed = 2.0 * (double)c->vocab_size * (double)d;
    p->other += (double)d; /* the final norm */
}

/* ---- one table ------------------------------------------------------------ */

static void row(const char *what, const run_grpo_mem *m, size_t weights, double gpu) {
    size_t total = m->total - m->weights + weights;
    printf("| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %s |\n", what, weights / GIB,
           m->adapter / GIB, m->grads / GIB, m->optimizer / GIB, m->ref_weights / GIB, m->activations / GIB,
           m->ref_activations / GIB, m->rollout / GIB, total / GIB, total <= gpu ? "yes" : "no");
}

static int64_t arg_int(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) base_die("mem_plan: %s needs a value", argv[*i]);
    return atoll(argv[++*i]);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        fprintf(stderr, "usage: mem_plan CONFIG.json [--precision f32|bf16] [--G N] [--prompts N] [--prompt-len N]\n"
                        "                [--completion N] [--micro-batch N] [--recompute 0|1] [--beta B] [--r N]\n"
                        "                [--alpha A] [--targets attention|attention+mlp|all] [--gpu-gb GB]\n");
        return 2;
    }
    run_grpo_shape sh = {.precision = MODEL_BF16, .num_generations = 16, .prompts = 1, .max_prompt = 512,
                         .max_completion = 4096, .micro_batch = 1, .recompute = 1, .ref = 1};
    model_lora_config lc = {.r = 16, .lora_alpha = 32};
    const char *targets = "attention+mlp";
    double beta = 0.001, gpu_gb = 80;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--precision")) {
            if (i + 1 >= argc || model_precision_parse(argv[++i], &sh.precision)) base_die("mem_plan: --precision");
        } else if (!strcmp(a, "--G")) sh.num_generations = arg_int(argc, argv, &i);
        else if (!strcmp(a, "--prompts")) sh.prompts = arg_int(argc, argv, &i);
        else if (!strcmp(a, "--prompt-len")) sh.max_prompt = arg_int(argc, argv, &i);
        else if (!strcmp(a, "--completion")) sh.max_completion = arg_int(argc, argv, &i);
        else if (!strcmp(a, "--micro-batch")) sh.micro_batch = arg_int(argc, argv, &i);
        else if (!strcmp(a, "--recompute")) sh.recompute = (int)arg_int(argc, argv, &i);
        else if (!strcmp(a, "--r")) lc.r = (int)arg_int(argc, argv, &i);
        else if (!strcmp(a, "--beta") && i + 1 < argc) beta = atof(argv[++i]);
        else if (!strcmp(a, "--alpha") && i + 1 < argc) lc.lora_alpha = atof(argv[++i]);
        else if (!strcmp(a, "--gpu-gb") && i + 1 < argc) gpu_gb = atof(argv[++i]);
        else if (!strcmp(a, "--targets") && i + 1 < argc) targets = argv[++i];
        else base_die("mem_plan: unknown option %s", a);
    }
    if (sh.num_generations < 1 || sh.prompts < 1 || sh.max_prompt < 1 || sh.max_completion < 1 || lc.r < 1)
        base_die("mem_plan: sizes must be >= 1");
    sh.ref = beta != 0;
    const char *attn[] = {"q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"};
    const char *mlp[] = {"gate_proj", "up_proj", "down_proj"};
    for (size_t k = 0; k < 6; k++) lc.targets |= 1u << model_lora_target_parse(attn[k]);
    if (!strcmp(targets, "attention+mlp") || !strcmp(targets, "all"))
        for (size_t k = 0; k < 3; k++) lc.targets |= 1u << model_lora_target_parse(mlp[k]);
    else if (strcmp(targets, "attention"))
        base_die("mem_plan: --targets %s: expected attention, attention+mlp or all", targets);
    lc.routed_experts = !strcmp(targets, "all");

    cJSON *j = NULL;
    if (base_json_parse_file(argv[1], &j)) base_die("%s", base_err_msg());
    model_config cfg;
    if (model_config_parse(j, argv[1], &cfg)) base_die("%s", base_err_msg());
    cJSON_Delete(j);
    sh.max_context = sh.max_prompt + sh.max_completion;
    run_grpo_mem full, lora;
    run_grpo_memory(&cfg, &sh, &full);
    sh.lora = &lc;
    run_grpo_memory(&cfg, &sh, &lora);
    param_split ps;
    split_params(&cfg, &ps);
    double n = (double)model_config_param_count(&cfg, NULL);
    size_t rope = model_weights_bytes(&cfg, &(model_load_opts){.max_context = sh.max_context}, 0) -
                  (size_t)(n * sizeof(float));
    size_t bf16 = (size_t)(2 * (ps.gemm + ps.embed) + 4 * ps.other) + rope;
    size_t fp8 = (size_t)(ps.gemm + 4 * ps.gemm_blocks + 2 * ps.embed + 4 * ps.other) + rope;
    double gpu = gpu_gb * 1e9;

    printf("%s: %.0f parameters (GEMM %.0f, embedding + head %.0f, other %.0f); %s; G = %lld, %lld prompt(s) "
           "per step, prompt %lld + completion %lld tokens, micro-batch %lld, gradient_checkpointing %d, beta %g; "
           "LoRA r = %d, alpha %g, %s (%lld adapter parameters)\n\n",
           argv[1], n, ps.gemm, ps.embed, ps.other, model_precision_name(sh.precision),
           (long long)sh.num_generations, (long long)sh.prompts, (long long)sh.max_prompt,
           (long long)sh.max_completion, (long long)sh.micro_batch, sh.recompute, beta, lc.r, lc.lora_alpha, targets,
           (long long)model_lora_param_count(&cfg, &lc));
    printf("| GiB | weights | adapter | grads | AdamW m, v | reference model | activations | reference pass | "
           "rollout | total | fits %.0f GB |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
           gpu_gb);
    row("full GRPO", &full, full.weights, gpu);
    row("LoRA GRPO, base as loaded today", &lora, lora.weights, gpu);
    row("LoRA GRPO, frozen bf16 base", &lora, bf16, gpu);
    row("LoRA GRPO, frozen FP8 base", &lora, fp8, gpu);
    return 0;
}
