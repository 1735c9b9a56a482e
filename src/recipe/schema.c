/*
 * The recipe schema: every key a recipe may set, its type, its default and
 * (for enumerations) its allowed values. Hyperparameters are named as TRL
 * names them (see docs/recipes.md for the full table with sources).
 *
 * A default is JSON text; "null" means "not set" (the code that reads the
 * key says what null means). Keys marked required have no default.
 */
#include "schema.h"

#include <string.h>

#define REQ NULL

/* Optimiser and logging keys shared by the training stages. */
#define TRAIN_KEYS(lr, sched)                                                                      \
    {"learning_rate", RK_NUM, lr, NULL, "peak learning rate"},                                     \
    {"lr_scheduler_type", RK_STR, sched, "constant|constant_with_warmup|linear|cosine",             \
     "learning-rate schedule after warm-up"},                                                      \
    {"warmup_ratio", RK_NUM, "0", NULL, "warm-up steps as a fraction of max_steps"},               \
    {"warmup_steps", RK_INT, "0", NULL, "warm-up steps (overrides warmup_ratio when > 0)"},        \
    {"weight_decay", RK_NUM, "0", NULL, "AdamW decoupled weight decay"},                           \
    {"adam_beta1", RK_NUM, "0.9", NULL, "AdamW beta1"},                                            \
    {"adam_beta2", RK_NUM, "0.999", NULL, "AdamW beta2"},                                          \
    {"adam_epsilon", RK_NUM, "1e-8", NULL, "AdamW epsilon"},                                       \
    {"max_grad_norm", RK_NUM, "1.0", NULL, "global gradient-norm clip (0 = off)"},                \
    {"logging_steps", RK_INT, "1", NULL, "write metrics every N steps"},                           \
    {"save_steps", RK_INT, "0", NULL, "checkpoint every N steps (0: only at the end)"},            \
    {"save_total_limit", RK_INT, "2", NULL, "keep the last K checkpoints"},                        \
    {"gradient_checkpointing", RK_BOOL, "false", NULL, "recompute activations per layer"},              \
    {"offload_optimizer", RK_BOOL, "false", NULL,                                                  \
     "AdamW moments in host memory, streamed through the GPU per update (DeepSpeed's)"}

static const recipe_key grpo_keys[] = {
    {"max_steps", RK_INT, "100", NULL, "GRPO steps (one generation batch each)"},
    {"num_generations", RK_INT, "8", NULL, "G: completions per prompt"},
    {"generation_batch_size", RK_INT, "64", NULL, "completions per step (prompts x G)"},
    {"per_device_train_batch_size", RK_INT, "0", NULL,
     "completions per micro-batch (0: the whole generation batch at once)"},
    {"num_iterations", RK_INT, "1", NULL, "mu: passes over each generation batch"},
    {"steps_per_generation", RK_INT, "1", NULL,
     "optimizer steps each pass splits the (shuffled) generation batch into"},
    {"max_prompt_length", RK_INT, "512", NULL, "prompts are left-truncated to this many tokens"},
    {"shuffle_dataset", RK_BOOL, "true", NULL, "a seeded order of the prompts per epoch (false: file order)"},
    {"max_completion_length", RK_INT, "256", NULL, "new tokens per completion"},
    {"temperature", RK_NUM, "1.0", NULL, "sampling temperature"},
    {"top_p", RK_NUM, "1.0", NULL, "nucleus sampling"},
    {"top_k", RK_INT, "0", NULL, "top-k sampling (0: off)"},
    {"min_p", RK_NUM, "0", NULL, "min-p sampling (0: off)"},
    {"stop", RK_STRLIST, "[]", NULL, "stop strings (e.g. \"</answer>\")"},
    {"beta", RK_NUM, "0.0", NULL, "KL coefficient (0: no reference model)"},
    {"kl_estimator", RK_STR, "\"k3\"", "k1|k2|k3", "per-token KL estimator"},
    {"epsilon", RK_NUM, "0.2", NULL, "lower clip of the ratio"},
    {"epsilon_high", RK_NUM, "null", NULL, "upper clip (null: epsilon; DAPO 0.28)"},
    {"delta", RK_NUM, "null", NULL, "two-sided clip: ratio capped at delta (INTELLECT-2; null: off)"},
    {"loss_type", RK_STR, "\"grpo\"", "grpo|bnpo|dr_grpo|dapo|cispo|sapo|luspo|vespo",
     "policy term and aggregation"},
    {"sapo_temperature_pos", RK_NUM, "1.0", NULL, "sapo: gate temperature for A > 0"},
    {"sapo_temperature_neg", RK_NUM, "1.05", NULL, "sapo: gate temperature for A <= 0"},
    {"vespo_k_pos", RK_NUM, "2.0", NULL, "vespo: gamma shape k for A >= 0"},
    {"vespo_lambda_pos", RK_NUM, "3.0", NULL, "vespo: gamma rate lambda for A >= 0"},
    {"vespo_k_neg", RK_NUM, "3.0", NULL, "vespo: gamma shape k for A < 0"},
    {"vespo_lambda_neg", RK_NUM, "2.0", NULL, "vespo: gamma rate lambda for A < 0"},
    {"top_entropy_quantile", RK_NUM, "1.0", NULL, "policy loss on the top rho tokens by entropy (1: all)"},
    {"use_bias_correction_kl", RK_BOOL, "false", NULL, "KL term times the ratio (DeepSeek-V3.2; TRL: true)"},
    {"off_policy_mask_threshold", RK_NUM, "null", NULL,
     "OPSM: drop A < 0 sequences whose mean old - new logp exceeds it (null: off)"},
    {"importance_sampling_correction", RK_BOOL, "false", NULL,
     "weight the policy loss by exp(trainer - sampler logp) (TRL vllm_importance_sampling_correction)"},
    {"importance_sampling_mode", RK_STR, "\"sequence_mask\"", "token_truncate|token_mask|sequence_truncate|sequence_mask",
     "correction ratio per token or per sequence, clipped (truncate) or zeroed (mask) outside the bounds"},
    {"importance_sampling_clip_min", RK_NUM, "null", NULL, "correction ratio lower bound (null: none)"},
    {"importance_sampling_clip_max", RK_NUM, "3.0", NULL, "correction ratio upper bound (null: none)"},
    {"multi_objective_aggregation", RK_STR, "\"sum_then_normalize\"", "sum_then_normalize|normalize_then_sum",
     "rewards: weighted sum then normalise (GRPO), or per function first (GDPO)"},
    {"scale_rewards", RK_STR, "\"group\"", "group|batch|none", "advantage scaling"},
    {"importance_sampling_level", RK_STR, "\"token\"", "token|sequence", "ratio per token or GSPO"},
    {"mask_truncated_completions", RK_BOOL, "false", NULL, "drop truncated completions from the loss"},
    {"dynamic_sampling", RK_BOOL, "false", NULL, "DAPO: drop zero-std groups and refill"},
    {"max_resample_rounds", RK_INT, "4", NULL, "dynamic sampling: extra generation rounds at most"},
    {"entropy_coef", RK_NUM, "0", NULL, "entropy bonus coefficient (adaptive: the initial one)"},
    {"use_adaptive_entropy", RK_BOOL, "false", NULL, "adapt entropy_coef each optimizer step toward entropy_target"},
    {"entropy_coef_min", RK_NUM, "0.0", NULL, "adaptive entropy: lowest coefficient"},
    {"entropy_coef_max", RK_NUM, "1.0", NULL, "adaptive entropy: highest coefficient"},
    {"entropy_coef_delta", RK_NUM, "0.005", NULL, "adaptive entropy: change per optimizer step"},
    {"entropy_target", RK_NUM, "0.2", NULL, "adaptive entropy: bonus on while the entropy is <= this"},
    {"sync_ref_model", RK_BOOL, "false", NULL, "TR-DPO style reference refresh"},
    {"ref_model_sync_steps", RK_INT, "512", NULL, "refresh the reference every N steps"},
    {"ref_model_mixup_alpha", RK_NUM, "0.6", NULL, "ref = alpha * policy + (1 - alpha) * ref"},
    {"log_completions_steps", RK_INT, "10", NULL, "write samples.jsonl every N steps (0: never)"},
    {"rewards", RK_REWARDS, "null", NULL, "this stage's rewards (null: the recipe's)"},
    TRAIN_KEYS("1e-6", "\"constant\""),
    {NULL, 0, NULL, NULL, NULL},
};

static const recipe_key sft_keys[] = {
    {"num_train_epochs", RK_NUM, "1", NULL, "passes over the dataset"},
    {"max_steps", RK_INT, "-1", NULL, "optimizer steps (-1: from num_train_epochs)"},
    {"per_device_train_batch_size", RK_INT, "8", NULL, "samples per micro-batch"},
    {"gradient_accumulation_steps", RK_INT, "1", NULL, "micro-batches per optimizer step"},
    {"max_length", RK_INT, "1024", NULL, "tokens per packed row / truncation length"},
    {"packing", RK_BOOL, "true", NULL, "pack several samples per row (no cross attention)"},
    {"assistant_only_loss", RK_BOOL, "true", NULL, "loss on assistant/completion tokens only"},
    {"shuffle", RK_BOOL, "true", NULL, "shuffle the dataset every epoch (seeded)"},
    TRAIN_KEYS("2e-5", "\"linear\""),
    {NULL, 0, NULL, NULL, NULL},
};

static const recipe_key sample_keys[] = {
    {"num_generations", RK_INT, "4", NULL, "completions per prompt"},
    {"temperature", RK_NUM, "0.6", NULL, "sampling temperature"},
    {"top_p", RK_NUM, "0.95", NULL, "nucleus sampling"},
    {"top_k", RK_INT, "0", NULL, "top-k sampling (0: off)"},
    {"min_p", RK_NUM, "0", NULL, "min-p sampling"},
    {"max_prompt_length", RK_INT, "512", NULL, "prompt truncation"},
    {"max_completion_length", RK_INT, "256", NULL, "new tokens per completion"},
    {"stop", RK_STRLIST, "[]", NULL, "stop strings"},
    {"keep", RK_STR, "\"reward > 0\"", NULL, "Lua expression over reward, rewards.<name>, sample"},
    {"filters", RK_STRLIST, "[]", NULL,
     "R1 filters: mixed_language, long_paragraphs, code_blocks"},
    {"lang", RK_STR, "\"en\"", NULL, "target language for the mixed_language filter"},
    {"min_lang_ratio", RK_NUM, "0.95", NULL, "mixed_language: least share of target-language words"},
    {"max_paragraph_chars", RK_INT, "2000", NULL, "long_paragraphs: longest paragraph allowed"},
    {"max_per_prompt", RK_INT, "1", NULL, "kept completions per prompt at most (0: all)"},
    {"limit", RK_INT, "0", NULL, "sample from the first N prompts only (0: all)"},
    {"merge_datasets", RK_STRLIST, "[]", NULL, "extra SFT datasets appended to the output"},
    {"output", RK_STR, "null", NULL, "output JSONL (null: RUN/NAME.jsonl)"},
    {"rewards", RK_REWARDS, "null", NULL, "this stage's rewards (null: the recipe's)"},
    {NULL, 0, NULL, NULL, NULL},
};

static const recipe_key eval_keys[] = {
    {"num_generations", RK_INT, "4", NULL, "K samples per prompt for pass@1 and cons@K"},
    {"temperature", RK_NUM, "0.6", NULL, "sampling temperature (R1 paper: 0.6)"},
    {"top_p", RK_NUM, "0.95", NULL, "nucleus sampling (R1 paper: 0.95)"},
    {"top_k", RK_INT, "0", NULL, "top-k sampling"},
    {"min_p", RK_NUM, "0", NULL, "min-p sampling"},
    {"max_prompt_length", RK_INT, "512", NULL, "prompt truncation"},
    {"max_completion_length", RK_INT, "256", NULL, "new tokens per completion"},
    {"stop", RK_STRLIST, "[]", NULL, "stop strings"},
    {"limit", RK_INT, "0", NULL, "evaluate the first N prompts only (0: all)"},
    {"answer_from", RK_STR, "\"boxed\"", "boxed|answer_tag|last_number",
     "how cons@K extracts the answer to vote on"},
    {"rewards", RK_REWARDS, "null", NULL, "this stage's rewards (null: the recipe's)"},
    {NULL, 0, NULL, NULL, NULL},
};

static const recipe_key stage_common[] = {
    {"type", RK_STR, REQ, "sft|grpo|sample|eval", "what the stage does"},
    {"name", RK_STR, "null", NULL, "stage name (default: its type, numbered when repeated)"},
    {"dataset", RK_STRLIST, REQ, NULL, "dataset name(s) from the recipe's datasets"},
    {"template", RK_STR, "null", NULL, "this stage's prompt template (null: the recipe's)"},
    {"init_from", RK_STR, "null", NULL,
     "start from this checkpoint; \"model\": the recipe's model (null: the previous stage's weights)"},
    {NULL, 0, NULL, NULL, NULL},
};

static const recipe_key dataset_keys[] = {
    {"path", RK_STR, REQ, NULL, "JSONL file"},
    {"prompt_column", RK_STR, "\"prompt\"", NULL, "column holding the question"},
    {"limit", RK_INT, "0", NULL, "use the first N rows (0: all)"},
    {NULL, 0, NULL, NULL, NULL},
};

static const recipe_key reward_keys[] = {
    {"script", RK_STR, REQ, NULL, "Lua reward script"},
    {"weight", RK_NUM, "1.0", NULL, "weight in the total reward"},
    {"name", RK_STR, "null", NULL, "metric name (default: the script's base name)"},
    {"params", RK_TABLE, "null", NULL, "values for the script's params table (e.g. {url = ...})"},
    {NULL, 0, NULL, NULL, NULL},
};

static const recipe_key top_keys[] = {
    {"name", RK_STR, "null", NULL, "run name (default: the recipe file's base name)"},
    {"model", RK_STR, REQ, NULL, "policy checkpoint directory (Hugging Face layout)"},
    {"init_std", RK_NUM, "null", NULL,
     "start from random weights N(0, init_std^2) with the model's config.json (pre-training)"},
    {"tokenizer", RK_STR, "null", NULL, "tokenizer directory (null: the model's)"},
    {"ref_model", RK_STR, "null", NULL, "reference model (null: the policy at the stage start)"},
    {"device", RK_STR, "\"auto\"", "auto|cpu|cuda", "backend"},
    {"precision", RK_STR, "\"f32\"", "f32|bf16", "compute precision (bf16: CUDA backend only, docs/cuda.md)"},
    {"seed", RK_INT, "42", NULL, "seed of every random draw"},
    {"output_dir", RK_STR, "\"runs\"", NULL, "runs are written to OUTPUT_DIR/NAME"},
    {"threads", RK_INT, "0", NULL, "CPU threads (0: all cores)"},
    {"template", RK_STR, "\"r1-zero\"", NULL,
     "prompt template: r1-zero, chat, r1, raw, or a string with {prompt} and {system}"},
    {"system_prompt", RK_STR, "null", NULL, "system prompt for chat templates"},
    {"datasets", RK_DATASETS, REQ, NULL, "named datasets"},
    {"rewards", RK_REWARDS, "[]", NULL, "reward scripts with weights"},
    {"reward_workers", RK_INT, "0", NULL, "reward threads (0: all cores)"},
    {"reward_instructions", RK_INT, "50000000", NULL, "Lua instruction budget per reward call"},
    {"reward_memory_mb", RK_INT, "64", NULL, "Lua memory cap per reward worker"},
    {"stages", RK_STAGES, REQ, NULL, "the pipeline"},
    {"report", RK_BOOL, "true", NULL, "write report.html with plots at the end"},
    {NULL, 0, NULL, NULL, NULL},
};

const recipe_key *recipe_schema_top(void) { return top_keys; }
const recipe_key *recipe_schema_dataset(void) { return dataset_keys; }
const recipe_key *recipe_schema_reward(void) { return reward_keys; }
const recipe_key *recipe_schema_stage_common(void) { return stage_common; }

const recipe_key *recipe_schema_stage(const char *type) {
    if (!type) return NULL;
    if (!strcmp(type, "grpo")) return grpo_keys;
    if (!strcmp(type, "sft")) return sft_keys;
    if (!strcmp(type, "sample")) return sample_keys;
    if (!strcmp(type, "eval")) return eval_keys;
    return NULL;
}
