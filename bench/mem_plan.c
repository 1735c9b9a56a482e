/*
 * mem_plan: the device bytes of a GRPO stage by role, full fine-tuning
 * beside LoRA, for a model config (config.json), from the sizing functions
 * the run allocates with (run_grpo_memory: model_memory_plan,
 * model_lora_param_bytes, model_train_bytes_p, rollout_bytes; the test
 * train_run_mem asserts they equal what a run allocates on the CPU). These
 * are plans, not measurements (docs/model.md, "Memory of a GRPO stage").
 *
 *   mem_plan CONFIG.json [--precision f32|bf16] [--G 16] [--prompts 1]
 *            [--prompt-len 512] [--completion 4096] [--micro-batch 1]
 *            [--recompute 0|1] [--beta B] [--r 16] [--alpha 32]
 *            [--targets attention|attention+mlp|all] [--gpu-gb 80]
 *
 * The LoRA rows: the base frozen, as a LoRA run loads it (compute weights
 * only, model_load_opts.frozen): bf16 (2 bytes per parameter) and FP8
 * (e4m3 GEMM weights with one f32 scale per 128 x 128 block, the embedding
 * and LM head bf16); and for comparison the base held as a trainable model
 * (f32 masters + the bf16 copy), as before the base was frozen.
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

/* ---- one table ------------------------------------------------------------ */

static void row(const char *what, const run_grpo_mem *m, double gpu) {
    size_t weights = m->weights, total = m->total;
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
    run_grpo_shape sh = {.load = {.precision = MODEL_BF16}, .device = TENSOR_CUDA, .num_generations = 16,
                         .prompts = 1, .max_prompt = 512, .max_completion = 4096, .micro_batch = 1, .recompute = 1,
                         .ref = 1};
    model_lora_config lc = {.r = 16, .lora_alpha = 32};
    const char *targets = "attention+mlp";
    double beta = 0.001, gpu_gb = 80;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--precision")) {
            if (i + 1 >= argc || model_precision_parse(argv[++i], &sh.load.precision)) base_die("mem_plan: --precision");
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
    sh.load.max_context = sh.max_prompt + sh.max_completion;
    model_precision prec0 = sh.load.precision; /* full GRPO's and the trainable base's */
    run_grpo_mem full, lora_tr, lora_bf, lora_f8;
    if (run_grpo_memory(&cfg, &sh, &full)) base_die("%s", base_err_msg());
    sh.lora = &lc;
    if (run_grpo_memory(&cfg, &sh, &lora_tr)) base_die("%s", base_err_msg());
    sh.load.frozen = 1;
    sh.load.precision = MODEL_BF16;
    if (run_grpo_memory(&cfg, &sh, &lora_bf)) base_die("%s", base_err_msg());
    sh.load.precision = MODEL_FP8;
    if (run_grpo_memory(&cfg, &sh, &lora_f8)) base_die("%s", base_err_msg());
    double n = (double)model_config_param_count(&cfg, NULL);
    double gpu = gpu_gb * 1e9;

    printf("%s: %.0f parameters; %s; G = %lld, %lld prompt(s) "
           "per step, prompt %lld + completion %lld tokens, micro-batch %lld, gradient_checkpointing %d, beta %g; "
           "LoRA r = %d, alpha %g, %s (%lld adapter parameters)\n\n",
           argv[1], n, model_precision_name(prec0),
           (long long)sh.num_generations, (long long)sh.prompts, (long long)sh.max_prompt,
           (long long)sh.max_completion, (long long)sh.micro_batch, sh.recompute, beta, lc.r, lc.lora_alpha, targets,
           (long long)model_lora_param_count(&cfg, &lc));
    printf("| GiB | weights | adapter | grads | AdamW m, v | reference model | activations | reference pass | "
           "rollout | total | fits %.0f GB |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
           gpu_gb);
    row("full GRPO", &full, gpu);
    row("LoRA GRPO, base held trainable (f32 + bf16 copy)", &lora_tr, gpu);
    row("LoRA GRPO, frozen bf16 base", &lora_bf, gpu);
    row("LoRA GRPO, frozen FP8 base", &lora_f8, gpu);
    return 0;
}
