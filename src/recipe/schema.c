/*
 * The recipe schema: every key a recipe may set, its type, its default, its
 * allowed values (choices or a numeric range) and where the typed config
 * (recipe.h) keeps it. Hyperparameters are named as TRL names them (see
 * docs/recipes.md for the full table, generated from this file).
 *
 * A default is JSON text; "null" means "not set" (the typed config has NaN
 * or NULL, and the field's comment in recipe.h says what that means). Keys
 * marked required have no default. Integer keys whose value the code keeps
 * in an int have an upper end that fits one; limits on sizes that the run
 * allocates from (lengths, batch sizes, completions per prompt) are generous
 * but finite, so a typo is an error naming the key rather than an
 * allocation failure.
 */
#include "schema.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "recipe.h"
#include "reward/reward.h"

#define REQ NULL

/* A row leaves out its last field, flags (RF_*), when it has none: a zero. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

/* ranges: [a, b], (a, b], [a, b), >= a, > a */
#define ANY {0, 0, 0}
#define IN(a, b) {(a), (b), RR_MIN | RR_MAX}
#define IN_OC(a, b) {(a), (b), RR_MIN | RR_MIN_OPEN | RR_MAX}
#define IN_CO(a, b) {(a), (b), RR_MIN | RR_MAX | RR_MAX_OPEN}
#define GE(a) {(a), 0, RR_MIN}
#define GT(a) {(a), 0, RR_MIN | RR_MIN_OPEN}

#define I32 2147483647.0
#define LEN_MAX 1048576.0 /* tokens of a prompt, a completion, an SFT row; rows of a batch */
#define G_MAX 65536.0     /* completions per prompt */

#define END {NULL, 0, NULL, NULL, NULL, 0, ANY, 0}

/* offsets */
#define TOP(f) offsetof(recipe_cfg, f)
#define DS(f) offsetof(recipe_dataset, f)
#define RW(f) offsetof(recipe_reward, f)
#define ST(f) offsetof(recipe_stage_cfg, f)

/* Optimiser, logging and checkpoint keys of the training stages (S: the
 * stage's member of recipe_stage_cfg). */
#define TRAIN_KEYS(S, lr, sched)                                                                                      \
    {"learning_rate", RK_NUM, lr, NULL, "peak learning rate", ST(S.train.learning_rate), GE(0)},                      \
    {"lr_scheduler_type", RK_STR, sched, "constant|constant_with_warmup|linear|cosine",                               \
     "learning-rate schedule after warm-up", ST(S.train.lr_scheduler_type), ANY},                                     \
    {"warmup_ratio", RK_NUM, "0", NULL, "warm-up steps as a fraction of max_steps", ST(S.train.warmup_ratio),        \
     IN(0, 1)},                                                                                                       \
    {"warmup_steps", RK_INT, "0", NULL, "warm-up steps (overrides warmup_ratio when > 0)",                           \
     ST(S.train.warmup_steps), GE(0)},                                                                                \
    {"weight_decay", RK_NUM, "0", NULL, "AdamW decoupled weight decay", ST(S.train.weight_decay), GE(0)},            \
    {"adam_beta1", RK_NUM, "0.9", NULL, "AdamW beta1", ST(S.train.adam_beta1), IN_CO(0, 1)},                         \
    {"adam_beta2", RK_NUM, "0.999", NULL, "AdamW beta2", ST(S.train.adam_beta2), IN_CO(0, 1)},                       \
    {"adam_epsilon", RK_NUM, "1e-8", NULL, "AdamW epsilon", ST(S.train.adam_epsilon), GE(0)},                        \
    {"max_grad_norm", RK_NUM, "1.0", NULL, "global gradient-norm clip (0 = off)", ST(S.train.max_grad_norm), GE(0)}, \
    {"logging_steps", RK_INT, "1", NULL, "write metrics every N steps", ST(S.train.logging_steps), GE(1),           \
     RF_NEUTRAL},                                                                                                     \
    {"save_steps", RK_INT, "0", NULL, "checkpoint every N steps (0: only at the end)", ST(S.train.save_steps),       \
     GE(0), RF_NEUTRAL},                                                                                              \
    {"save_total_limit", RK_INT, "2", NULL, "keep the last K checkpoints (0: all)", ST(S.train.save_total_limit),    \
     IN(0, I32), RF_NEUTRAL},                                                                                         \
    {"gradient_checkpointing", RK_BOOL, "false", NULL, "recompute activations per layer",                            \
     ST(S.train.gradient_checkpointing), ANY},                                                                        \
    {"offload_optimizer", RK_BOOL, "false", NULL,                                                                     \
     "AdamW moments in host memory, streamed through the GPU per update (DeepSpeed's)",                               \
     ST(S.train.offload_optimizer), ANY},                                                                             \
    {"zero_stage", RK_INT, "0", NULL,                                                                                 \
     "DeepSpeed ZeRO stage over ranks: 0 replicated, 1 AdamW state sharded, 2 gradients too, 3 parameters too",     \
     ST(S.train.zero_stage), IN(0, 3), RF_NEUTRAL},                                                                    \
    {"expert_parallel_size", RK_INT, "1", NULL,                                                                      \
     "EP: ranks that split the routed experts of every MoE layer (consecutive ranks; divides the world size and "   \
     "n_routed_experts; 1: every rank holds every expert)",                                                          \
     ST(S.train.expert_parallel_size), IN(1, 4096), RF_NEUTRAL},                                                     \
    {"router_bias_update_speed", RK_NUM, "0", NULL,                                                                   \
     "MoE: DeepSeek-V3's aux-loss-free balancing, e_score_correction_bias += speed * sign(mean load - load) per "      \
     "expert after each update (V3: 0.001; 0: off)",                                                                  \
     ST(S.train.router_bias_update_speed), IN(0, 1)},                                                                 \
    {"router_aux_loss_coef", RK_NUM, "0", NULL,                                                                       \
     "MoE: weight of DeepSeek-V3's sequence-wise balance loss, summed over MoE layers, mean over sequences "          \
     "(V3: 0.0001; 0: off)",                                                                                          \
     ST(S.train.router_aux_loss_coef), IN(0, 1)}

/* Generation keys (S: the stage's member; defaults differ per stage). */
#define GEN_KEYS(S, G, g_min, g_doc, temp, temp_range, temp_doc, p_dflt, p_doc)                                   \
    {"num_generations", RK_INT, G, NULL, g_doc, ST(S.gen.num_generations), IN(g_min, G_MAX)},                         \
    {"temperature", RK_NUM, temp, NULL, temp_doc, ST(S.gen.temperature), temp_range},                                 \
    {"top_p", RK_NUM, p_dflt, NULL, p_doc, ST(S.gen.top_p), IN_OC(0, 1)},                                          \
    {"top_k", RK_INT, "0", NULL, "top-k sampling (0: off; vLLM's -1 is written 0 here)", ST(S.gen.top_k),           \
     IN(0, I32)},                                                                                                     \
    {"min_p", RK_NUM, "0", NULL, "min-p sampling (0: off)", ST(S.gen.min_p), IN(0, 1)},                              \
    {"max_prompt_length", RK_INT, "512", NULL, "prompts are left-truncated to this many tokens",                     \
     ST(S.gen.max_prompt_length), IN(1, LEN_MAX)},                                                                    \
    {"max_completion_length", RK_INT, "256", NULL, "new tokens per completion", ST(S.gen.max_completion_length),     \
     IN(1, LEN_MAX)},                                                                                                 \
    {"stop", RK_STRLIST, "[]", NULL, "stop strings (e.g. \"</answer>\")", ST(S.gen.stop), ANY}

#define G_ST(f) ST(grpo.f)
static const recipe_key grpo_keys[] = {
    {"max_steps", RK_INT, "100", NULL, "GRPO steps (one generation batch each)", G_ST(max_steps), GE(1)},
    GEN_KEYS(grpo, "8", 2, "G: completions per prompt (a group; GRPO compares at least 2)", "1.0", GT(0),
             "sampling temperature", "1.0", "nucleus sampling (1: off)"),
    {"generation_batch_size", RK_INT, "64", NULL, "completions per step (prompts x G; a multiple of G)",
     G_ST(generation_batch_size), IN(2, LEN_MAX)},
    {"per_device_train_batch_size", RK_INT, "0", NULL,
     "completions per micro-batch (0: the whole generation batch at once)", G_ST(per_device_train_batch_size),
     IN(0, LEN_MAX)},
    {"num_iterations", RK_INT, "1", NULL, "mu: passes over each generation batch", G_ST(num_iterations), IN(1, 1024)},
    {"steps_per_generation", RK_INT, "1", NULL,
     "optimizer steps each pass splits the (shuffled) generation batch into", G_ST(steps_per_generation),
     IN(1, G_MAX)},
    {"shuffle_dataset", RK_BOOL, "true", NULL, "a seeded order of the prompts per epoch (false: file order)",
     G_ST(shuffle_dataset), ANY},
    {"beta", RK_NUM, "0.0", NULL, "KL coefficient (0: no reference model)", G_ST(beta), GE(0)},
    {"kl_estimator", RK_STR, "\"k3\"", "k1|k2|k3", "per-token KL estimator", G_ST(kl_estimator), ANY},
    {"epsilon", RK_NUM, "0.2", NULL, "lower clip of the ratio (>= 1: no lower clip; R1: 10)", G_ST(epsilon), GT(0)},
    {"epsilon_high", RK_NUM, "null", NULL, "upper clip (null: epsilon; DAPO 0.28)", G_ST(epsilon_high), GE(0)},
    {"delta", RK_NUM, "null", NULL, "two-sided clip: ratio capped at delta (INTELLECT-2: 4; null: off)",
     G_ST(delta), GT(0)},
    {"loss_type", RK_STR, "\"grpo\"", "grpo|bnpo|dr_grpo|dapo|cispo|sapo|luspo|vespo", "policy term and aggregation",
     G_ST(loss_type), ANY},
    {"sapo_temperature_pos", RK_NUM, "1.0", NULL, "sapo: gate temperature for A > 0", G_ST(sapo_temperature_pos),
     GT(0)},
    {"sapo_temperature_neg", RK_NUM, "1.05", NULL, "sapo: gate temperature for A <= 0", G_ST(sapo_temperature_neg),
     GT(0)},
    {"vespo_k_pos", RK_NUM, "2.0", NULL, "vespo: gamma shape k for A >= 0", G_ST(vespo_k_pos), GE(0)},
    {"vespo_lambda_pos", RK_NUM, "3.0", NULL, "vespo: gamma rate lambda for A >= 0", G_ST(vespo_lambda_pos), GE(0)},
    {"vespo_k_neg", RK_NUM, "3.0", NULL, "vespo: gamma shape k for A < 0", G_ST(vespo_k_neg), GE(0)},
    {"vespo_lambda_neg", RK_NUM, "2.0", NULL, "vespo: gamma rate lambda for A < 0", G_ST(vespo_lambda_neg), GE(0)},
    {"top_entropy_quantile", RK_NUM, "1.0", NULL, "policy loss on the top rho tokens by entropy (1: all)",
     G_ST(top_entropy_quantile), IN(0, 1)},
    {"use_bias_correction_kl", RK_BOOL, "false", NULL, "KL term times the ratio (DeepSeek-V3.2; TRL: true)",
     G_ST(use_bias_correction_kl), ANY},
    {"off_policy_mask_threshold", RK_NUM, "null", NULL,
     "OPSM: drop A < 0 sequences whose mean old - new logp exceeds it (null: off)",
     G_ST(off_policy_mask_threshold), ANY},
    {"importance_sampling_correction", RK_BOOL, "false", NULL,
     "weight the policy loss by exp(trainer - sampler logp) (TRL vllm_importance_sampling_correction)",
     G_ST(importance_sampling_correction), ANY},
    {"importance_sampling_mode", RK_STR, "\"sequence_mask\"",
     "token_truncate|token_mask|sequence_truncate|sequence_mask",
     "correction ratio per token or per sequence, clipped (truncate) or zeroed (mask) outside the bounds",
     G_ST(importance_sampling_mode), ANY},
    {"importance_sampling_clip_min", RK_NUM, "null", NULL, "correction ratio lower bound (null: none)",
     G_ST(importance_sampling_clip_min), GE(0)},
    {"importance_sampling_clip_max", RK_NUM, "3.0", NULL, "correction ratio upper bound (null: none)",
     G_ST(importance_sampling_clip_max), GT(0)},
    {"multi_objective_aggregation", RK_STR, "\"sum_then_normalize\"", "sum_then_normalize|normalize_then_sum",
     "rewards: weighted sum then normalise (GRPO), or per function first (GDPO)",
     G_ST(multi_objective_aggregation), ANY},
    {"scale_rewards", RK_STR, "\"group\"", "group|batch|none", "advantage scaling", G_ST(scale_rewards), ANY},
    {"importance_sampling_level", RK_STR, "\"token\"", "token|sequence", "ratio per token or GSPO",
     G_ST(importance_sampling_level), ANY},
    {"mask_truncated_completions", RK_BOOL, "false", NULL, "drop truncated completions from the loss",
     G_ST(mask_truncated_completions), ANY},
    {"dynamic_sampling", RK_BOOL, "false", NULL, "DAPO: drop zero-std groups and refill", G_ST(dynamic_sampling),
     ANY},
    {"max_resample_rounds", RK_INT, "4", NULL, "dynamic sampling: extra generation rounds at most",
     G_ST(max_resample_rounds), IN(0, 1024)},
    {"entropy_coef", RK_NUM, "0", NULL, "entropy bonus coefficient (adaptive: the initial one)", G_ST(entropy_coef),
     GE(0)},
    {"use_adaptive_entropy", RK_BOOL, "false", NULL, "adapt entropy_coef each optimizer step toward entropy_target",
     G_ST(use_adaptive_entropy), ANY},
    {"entropy_coef_min", RK_NUM, "0.0", NULL, "adaptive entropy: lowest coefficient (<= entropy_coef_max)",
     G_ST(entropy_coef_min), GE(0)},
    {"entropy_coef_max", RK_NUM, "1.0", NULL, "adaptive entropy: highest coefficient", G_ST(entropy_coef_max),
     GE(0)},
    {"entropy_coef_delta", RK_NUM, "0.005", NULL, "adaptive entropy: change per optimizer step",
     G_ST(entropy_coef_delta), GE(0)},
    {"entropy_target", RK_NUM, "0.2", NULL, "adaptive entropy: bonus on while the entropy is <= this",
     G_ST(entropy_target), GE(0)},
    {"sync_ref_model", RK_BOOL, "false", NULL, "TR-DPO style reference refresh", G_ST(sync_ref_model), ANY},
    {"ref_model_sync_steps", RK_INT, "512", NULL, "refresh the reference every N steps", G_ST(ref_model_sync_steps),
     GE(1)},
    {"ref_model_mixup_alpha", RK_NUM, "0.6", NULL, "ref = alpha * policy + (1 - alpha) * ref",
     G_ST(ref_model_mixup_alpha), IN(0, 1)},
    {"log_completions_steps", RK_INT, "10", NULL, "write samples.jsonl every N steps (0: never)",
     G_ST(log_completions_steps), GE(0), RF_NEUTRAL},
    {"log_completion_ids", RK_BOOL, "false", NULL,
     "samples.jsonl lines also carry prompt_ids and completion_ids: the token ids trained on",
     G_ST(log_completion_ids), ANY, RF_NEUTRAL},
    {"rewards", RK_REWARDS, "null", NULL, "this stage's rewards (null: the recipe's)", ST(own_rewards), ANY},
    TRAIN_KEYS(grpo, "1e-6", "\"constant\""),
    END,
};

#define S_ST(f) ST(sft.f)
static const recipe_key sft_keys[] = {
    {"num_train_epochs", RK_NUM, "1", NULL, "passes over the dataset", S_ST(num_train_epochs), GT(0)},
    {"max_steps", RK_INT, "-1", NULL, "optimizer steps (-1: from num_train_epochs; 0 is not a count)",
     S_ST(max_steps), GE(-1)},
    {"per_device_train_batch_size", RK_INT, "8", NULL, "samples per micro-batch", S_ST(per_device_train_batch_size),
     IN(1, LEN_MAX)},
    {"gradient_accumulation_steps", RK_INT, "1", NULL, "micro-batches per optimizer step",
     S_ST(gradient_accumulation_steps), IN(1, LEN_MAX)},
    {"max_length", RK_INT, "1024", NULL, "tokens per packed row / truncation length", S_ST(max_length),
     IN(2, LEN_MAX)},
    {"packing", RK_BOOL, "true", NULL, "pack several samples per row (no cross attention)", S_ST(packing), ANY},
    {"assistant_only_loss", RK_BOOL, "true", NULL, "loss on assistant/completion tokens only",
     S_ST(assistant_only_loss), ANY},
    {"shuffle", RK_BOOL, "true", NULL, "shuffle the dataset every epoch (seeded)", S_ST(shuffle), ANY},
    TRAIN_KEYS(sft, "2e-5", "\"linear\""),
    END,
};

#define SA_ST(f) ST(sample.f)
static const recipe_key sample_keys[] = {
    GEN_KEYS(sample, "4", 1, "completions per prompt", "0.6", GE(0), "sampling temperature (0: greedy)", "0.95",
             "nucleus sampling (1: off)"),
    {"keep", RK_STR, "\"reward > 0\"", NULL, "Lua expression over reward, rewards.<name>, sample", SA_ST(keep), ANY},
    {"filters", RK_STRLIST, "[]", "mixed_language|long_paragraphs|code_blocks",
     "R1 filters, each at most once", SA_ST(filters), ANY},
    {"lang", RK_STR, "\"en\"", NULL, "target language for the mixed_language filter (ISO 639-1)", SA_ST(lang), ANY},
    {"min_lang_ratio", RK_NUM, "0.95", NULL, "mixed_language: least share of target-language words",
     SA_ST(min_lang_ratio), IN(0, 1)},
    {"max_paragraph_chars", RK_INT, "2000", NULL, "long_paragraphs: longest paragraph allowed",
     SA_ST(max_paragraph_chars), GE(1)},
    {"max_per_prompt", RK_INT, "1", NULL, "kept completions per prompt at most (0: all)", SA_ST(max_per_prompt),
     IN(0, 1000000)},
    {"limit", RK_INT, "0", NULL, "sample from the first N prompts only (0: all)", SA_ST(limit), GE(0)},
    {"merge_datasets", RK_STRLIST, "[]", NULL, "datasets (names) whose rows are appended to the output",
     SA_ST(merge_datasets), ANY},
    {"output", RK_STR, "null", NULL, "output JSONL (null: RUN/NAME.jsonl)", SA_ST(output), ANY, RF_PATH},
    {"rewards", RK_REWARDS, "null", NULL, "this stage's rewards (null: the recipe's)", ST(own_rewards), ANY},
    END,
};

#define E_ST(f) ST(eval.f)
static const recipe_key eval_keys[] = {
    GEN_KEYS(eval, "4", 1, "K samples per prompt for pass@1 and cons@K", "0.6", GE(0),
             "sampling temperature (0: greedy; R1 paper: 0.6)", "0.95", "nucleus sampling (R1 paper: 0.95)"),
    {"limit", RK_INT, "0", NULL, "evaluate the first N prompts only (0: all)", E_ST(limit), GE(0)},
    {"answer_from", RK_STR, "\"boxed\"", "boxed|answer_tag|last_number", "how cons@K extracts the answer to vote on",
     E_ST(answer_from), ANY},
    {"rewards", RK_REWARDS, "null", NULL, "this stage's rewards (null: the recipe's)", ST(own_rewards), ANY},
    END,
};

static const recipe_key stage_common[] = {
    {"type", RK_STR, REQ, "sft|grpo|sample|eval", "what the stage does", ST(type_name), ANY},
    {"name", RK_STR, "null", NULL, "stage name (default: its type, numbered when repeated)", ST(name), ANY},
    {"dataset", RK_STRLIST, REQ, NULL, "dataset name(s) from the recipe's datasets", ST(dataset), ANY},
    {"template", RK_STR, "null", NULL, "this stage's prompt template (null: the recipe's)", ST(template_name), ANY},
    {"init_from", RK_STR, "null", NULL,
     "start from this checkpoint; \"model\": the recipe's model (null: the previous stage's weights)", ST(init_from),
     ANY, RF_PATH},
    END,
};

static const recipe_key dataset_keys[] = {
    {"path", RK_STR, REQ, NULL, "JSONL file, or \"stage:NAME\" (the output of an earlier sample stage)", DS(path),
     ANY, RF_PATH},
    {"prompt_column", RK_STR, "\"prompt\"", NULL, "column holding the question", DS(prompt_column), ANY},
    {"limit", RK_INT, "0", NULL, "use the first N rows (0: all)", DS(limit), GE(0)},
    END,
};

static const recipe_key reward_keys[] = {
    {"script", RK_STR, REQ, NULL, "Lua reward script: a built-in name (boxed_math) or a file (a '/' or '.lua')",
     RW(script), ANY, RF_PATH},
    {"weight", RK_NUM, "1.0", NULL, "weight in the total reward", RW(weight), ANY},
    {"name", RK_STR, "null", NULL, "metric name (default: the script's base name)", RW(name), ANY},
    {"params", RK_TABLE, "null", NULL, "values for the script's params table (e.g. {url = ...})", RW(params), ANY},
    END,
};

#define LO(f) offsetof(recipe_lora_cfg, f)
static const recipe_key lora_keys[] = {
    {"r", RK_INT, "8", NULL, "LoRA rank", LO(r), IN(1, MODEL_LORA_MAX_RANK)},
    {"lora_alpha", RK_NUM, "8", NULL, "scaling: s = lora_alpha / r (use_rslora: lora_alpha / sqrt(r))", LO(lora_alpha),
     GT(0)},
    {"lora_dropout", RK_NUM, "0", NULL, "PEFT's dropout on the adapters' input; grpo trains the adapters without it: any value but 0 is refused", LO(lora_dropout),
     IN_CO(0, 1)},
    {"target_modules", RK_STRLIST, "[\"all-linear\"]", MODEL_LORA_TARGET_NAMES "|all-linear",
     "modules to adapt by name; all-linear: every one (not lm_head); gate/up/down_proj are the dense MLP's and the "
     "shared experts'", LO(target_modules), ANY},
    {"use_rslora", RK_BOOL, "false", NULL, "rank-stabilised scaling lora_alpha / sqrt(r)", LO(use_rslora), ANY},
    {"routed_experts", RK_BOOL, "false", NULL, "adapt every routed expert's gate/up/down_proj too (its own A and B)",
     LO(routed_experts), ANY},
    END,
};

static const recipe_key top_keys[] = {
    {"name", RK_STR, "null", NULL, "run name (default: the recipe file's base name)", TOP(name), ANY, RF_NEUTRAL},
    {"model", RK_STR, REQ, NULL, "policy checkpoint directory (Hugging Face layout)", TOP(model), ANY, RF_PATH},
    {"init_std", RK_NUM, "null", NULL,
     "start from random weights N(0, init_std^2) with the model's config.json (pre-training)", TOP(init_std), GT(0)},
    {"tokenizer", RK_STR, "null", NULL, "tokenizer directory (null: the model's)", TOP(tokenizer), ANY, RF_PATH},
    {"ref_model", RK_STR, "null", NULL, "reference model (null: the policy at the stage start)", TOP(ref_model), ANY,
     RF_PATH},
    {"device", RK_STR, "\"auto\"", "auto|cpu|cuda", "backend", TOP(device), ANY},
    {"precision", RK_STR, "\"f32\"", "f32|bf16|fp8",
     "weights and compute precision (training in bf16: CUDA only; fp8: runs that train nothing, or a LoRA "
     "run's frozen base; docs/model.md)",
     TOP(precision), ANY},
    {"seed", RK_INT, "42", NULL, "seed of every random draw", TOP(seed), GE(0)},
    {"output_dir", RK_STR, "\"runs\"", NULL, "runs are written to OUTPUT_DIR/NAME", TOP(output_dir), ANY,
     RF_PATH | RF_NEUTRAL},
    {"threads", RK_INT, "0", NULL, "CPU threads (0: all cores)", TOP(threads), IN(0, 1024), RF_NEUTRAL},
    {"template", RK_STR, "\"r1-zero\"", NULL,
     "prompt template: r1-zero, chat, r1, raw, or a string with {prompt} and {system}", TOP(template_name), ANY},
    {"system_prompt", RK_STR, "null", NULL, "system prompt for chat templates", TOP(system_prompt), ANY},
    {"datasets", RK_DATASETS, REQ, NULL, "named datasets", TOP(datasets), ANY},
    {"rewards", RK_REWARDS, "[]", NULL, "reward scripts with weights", TOP(rewards), ANY},
    {"reward_workers", RK_INT, "0", NULL, "reward threads (0: all cores)", TOP(reward_workers),
     IN(0, REWARD_MAX_WORKERS), RF_NEUTRAL},
    {"reward_instructions", RK_INT, "50000000", NULL, "Lua instruction budget per reward call",
     TOP(reward_instructions), GE(REWARD_MIN_INSTRUCTIONS)},
    {"reward_memory_mb", RK_INT, "64", NULL, "Lua memory cap per reward worker", TOP(reward_memory_mb),
     IN(REWARD_MIN_MEMORY_MB, REWARD_MAX_MEMORY_MB)},
    {"max_reward_error_rate", RK_NUM, "0.5", NULL,
     "stop the stage when a reward function fails on more than this share of the samples of the last "
     "reward_error_window steps (1: never stop; docs/rewards.md)",
     TOP(max_reward_error_rate), IN(0, 1)},
    {"reward_error_window", RK_INT, "10", NULL,
     "steps (eval/sample: generation batches) that max_reward_error_rate looks back over", TOP(reward_error_window),
     IN(1, 1000000)},
    {"stages", RK_STAGES, REQ, NULL, "the pipeline", TOP(stages), ANY},
    {"report", RK_BOOL, "true", NULL, "write report.html with plots at the end", TOP(report), ANY, RF_NEUTRAL},
    {"lora", RK_SUB, "null", NULL,
     "LoRA adapters (PEFT's LoraConfig, the keys below) on the frozen model: every training stage trains them, "
     "checkpoints hold them in PEFT's format (null: full fine-tuning)",
     TOP(lora), ANY, 0, lora_keys},
    END,
};

const recipe_key *recipe_schema_top(void) { return top_keys; }
const recipe_key *recipe_schema_dataset(void) { return dataset_keys; }
const recipe_key *recipe_schema_reward(void) { return reward_keys; }
const recipe_key *recipe_schema_stage_common(void) { return stage_common; }
const recipe_key *recipe_schema_lora(void) { return lora_keys; }

const recipe_key *recipe_schema_stage(const char *type) {
    if (!type) return NULL;
    if (!strcmp(type, "grpo")) return grpo_keys;
    if (!strcmp(type, "sft")) return sft_keys;
    if (!strcmp(type, "sample")) return sample_keys;
    if (!strcmp(type, "eval")) return eval_keys;
    return NULL;
}

const char *const *recipe_schema_stage_types(void) {
    static const char *const types[] = {"sft", "grpo", "sample", "eval", NULL}; /* recipe_stage_type order */
    _Static_assert(RECIPE_STAGE_SFT == 0 && RECIPE_STAGE_GRPO == 1 && RECIPE_STAGE_SAMPLE == 2 &&
                       RECIPE_STAGE_EVAL == 3,
                   "recipe_stage_type and this list agree");
    return types;
}

int recipe_range_ok(const recipe_key *k, double v) {
    const recipe_range *r = &k->range;
    if (!isfinite(v)) return 0;
    if (r->flags & RR_MIN) {
        if (r->flags & RR_MIN_OPEN ? !(v > r->min) : !(v >= r->min)) return 0;
    }
    if (r->flags & RR_MAX) {
        if (r->flags & RR_MAX_OPEN ? !(v < r->max) : !(v <= r->max)) return 0;
    }
    return 1;
}

char *recipe_range_text(const recipe_key *k, char *buf, size_t n) {
    const recipe_range *r = &k->range;
    unsigned f = r->flags;
    if ((f & RR_MIN) && (f & RR_MAX))
        snprintf(buf, n, "in %c%.15g, %.15g%c", f & RR_MIN_OPEN ? '(' : '[', r->min, r->max,
                 f & RR_MAX_OPEN ? ')' : ']');
    else if (f & RR_MIN)
        snprintf(buf, n, "%s %.15g", f & RR_MIN_OPEN ? ">" : ">=", r->min);
    else if (f & RR_MAX)
        snprintf(buf, n, "%s %.15g", f & RR_MAX_OPEN ? "<" : "<=", r->max);
    else if (n)
        buf[0] = 0;
    return buf;
}
