/*
 * recipe: Lua recipes. A recipe is a Lua file returning a table: model,
 * datasets, template, rewards with weights, and stages (sft, grpo, sample,
 * eval) with hyperparameters named as TRL names them. Loading runs the file
 * in a fresh Lua state, converts the returned table to a JSON tree, applies
 * `--set a.b=v` overrides, validates every key against the schema (type,
 * allowed values or range; an unknown key is an error with a suggestion),
 * fills in the defaults, and parses the tree once into the typed config
 * below (recipe_config), checking the keys that must agree with each other.
 * The code that runs a recipe reads only that typed config; the resolved
 * tree holds every value the run uses and is written back as
 * `config.resolved.lua`.
 *
 * Errors name the recipe file and the key as the user wrote it, with the
 * value and what it must be:
 *   recipe.lua: stages[2].top_p = 2: must be in (0, 1]
 * (list items 1-based, as in Lua); a value that came from an override says
 * so: "... (--set stages.grpo.top_p=2)", or is named by the command-line
 * flag it came from ("--top-p 2: must be in (0, 1]").
 *
 * Stages are addressed in overrides by name (`stages.grpo.beta=0.01`) or by
 * 1-based index (`stages.2.beta=0.01`). A stage's name defaults to its type,
 * with a number appended when the type repeats (eval, eval_2, ...).
 */
#ifndef GRPO_RECIPE_H
#define GRPO_RECIPE_H

#include "base/base.h"
#include "model/model.h"
#include "train/grpo.h"
#include "train/optim.h"

typedef struct recipe recipe;

/* An override: "a.b=v", and where it came from for error messages (NULL:
 * the command line's `--set a.b=v`; else e.g. "--top-p 2", a flag of a
 * one-stage command that the command turned into this override). */
typedef struct {
    const char *set;
    const char *origin;
} recipe_set;

/* Load, override, validate, fill defaults, parse into the typed config. On
 * error returns non-OK with a message naming the recipe file and the key
 * path (and a suggestion for an unknown key). `sets` are "a.b=v" strings. */
base_status recipe_load(const char *path, const char *const *sets, int nsets, recipe **out);
/* Same from a Lua source string (`chunkname` names it in errors). */
base_status recipe_load_string(const char *src, const char *chunkname, const char *const *sets,
                               int nsets, recipe **out);
/* Same with overrides that carry their origin. */
base_status recipe_load_string_sets(const char *src, const char *chunkname, const recipe_set *sets, int nsets,
                                    recipe **out);
void recipe_free(recipe *r);

/* ---- the typed config ---------------------------------------------------
 * Every field is a recipe key of the same name (docs/recipes.md has the
 * tables with types, defaults and ranges); strings and tables are borrowed
 * from the recipe and live as long as it. A null number is NaN, a null
 * string NULL. */

typedef struct {
    const char *const *items;
    int n;
} recipe_strlist;

typedef struct recipe_stage_cfg recipe_stage_cfg;

typedef struct {
    const char *name;          /* datasets.NAME */
    const char *path;          /* as written: the file, or "stage:NAME" */
    const char *prompt_column;
    int64_t limit;             /* 0: all rows */
    const recipe_stage_cfg *producer; /* path "stage:NAME": that sample stage; else NULL */
} recipe_dataset;

typedef struct {
    const char *script;
    double weight;
    const char *name;          /* NULL: the script's base name */
    const cJSON *params;       /* free-form, handed to the script as its params table; NULL: none */
} recipe_reward;

typedef struct {
    const recipe_reward *items;
    int n;
} recipe_rewards;

/* Generation settings (grpo, sample, eval). */
typedef struct {
    int64_t num_generations;       /* completions per prompt (G, K) */
    double temperature;            /* 0: greedy (sample, eval) */
    double top_p;                  /* in (0, 1]; 1: off */
    int64_t top_k;                 /* 0: off */
    double min_p;                  /* 0: off */
    int64_t max_prompt_length;
    int64_t max_completion_length;
    recipe_strlist stop;
} recipe_gen_cfg;

/* Optimizer, schedule, logging and checkpoints (sft, grpo). */
typedef struct {
    double learning_rate;
    const char *lr_scheduler_type;
    double warmup_ratio;
    int64_t warmup_steps;
    double weight_decay, adam_beta1, adam_beta2, adam_epsilon, max_grad_norm;
    int64_t logging_steps, save_steps, save_total_limit;
    int gradient_checkpointing, offload_optimizer;
    int64_t zero_stage;            /* 0 replicated; 1: AdamW m and v sharded over the ranks (docs/distributed.md) */
    int64_t expert_parallel_size;  /* EP: ranks splitting the routed experts (1: none; docs/distributed.md) */
    double router_bias_update_speed; /* MoE aux-loss-free balancing step (0: off; docs/training.md) */
    double router_aux_loss_coef;     /* MoE sequence-wise balance loss weight (0: off) */
    optim_config optim;            /* the keys above as the optimizer takes them; max_steps 0: the stage sets it */
} recipe_train_cfg;

typedef struct {
    recipe_gen_cfg gen;
    recipe_train_cfg train;
    int64_t max_steps, generation_batch_size, per_device_train_batch_size, num_iterations,
        steps_per_generation;
    int shuffle_dataset;
    double beta;
    const char *kl_estimator;
    double epsilon, epsilon_high, delta; /* epsilon_high, delta: NaN when null */
    const char *loss_type;
    double sapo_temperature_pos, sapo_temperature_neg;
    double vespo_k_pos, vespo_lambda_pos, vespo_k_neg, vespo_lambda_neg;
    double top_entropy_quantile;
    int use_bias_correction_kl;
    double off_policy_mask_threshold;    /* NaN: off */
    int importance_sampling_correction;
    const char *importance_sampling_mode;
    double importance_sampling_clip_min, importance_sampling_clip_max; /* NaN: none */
    const char *multi_objective_aggregation, *scale_rewards, *importance_sampling_level;
    int mask_truncated_completions, dynamic_sampling;
    int64_t max_resample_rounds;
    double entropy_coef;
    int use_adaptive_entropy;
    double entropy_coef_min, entropy_coef_max, entropy_coef_delta, entropy_target;
    int sync_ref_model;
    int64_t ref_model_sync_steps;
    double ref_model_mixup_alpha;
    int64_t log_completions_steps;
    int log_completion_ids;        /* samples.jsonl lines carry prompt_ids and completion_ids */
    grpo_config loss;              /* the keys above as the GRPO loss takes them (checked) */
} recipe_grpo_cfg;

typedef struct {
    recipe_train_cfg train;
    double num_train_epochs;
    int64_t max_steps;             /* -1: from num_train_epochs */
    int64_t per_device_train_batch_size, gradient_accumulation_steps, max_length;
    int packing, assistant_only_loss, shuffle;
} recipe_sft_cfg;

typedef struct {
    recipe_gen_cfg gen;
    const char *keep;              /* Lua expression (compiled by the stage) */
    recipe_strlist filters;        /* mixed_language, long_paragraphs, code_blocks; each at most once */
    const char *lang;              /* a known ISO 639-1 code */
    double min_lang_ratio;
    int64_t max_paragraph_chars, max_per_prompt, limit;
    recipe_strlist merge_datasets; /* dataset names */
    const recipe_dataset *const *merge; /* [merge_datasets.n] those datasets */
    const char *output;            /* NULL: RUN/NAME.jsonl */
} recipe_sample_cfg;

typedef struct {
    recipe_gen_cfg gen;
    int64_t limit;
    const char *answer_from;
} recipe_eval_cfg;

typedef enum { RECIPE_STAGE_SFT, RECIPE_STAGE_GRPO, RECIPE_STAGE_SAMPLE, RECIPE_STAGE_EVAL } recipe_stage_type;

struct recipe_stage_cfg {
    recipe_stage_type type;
    const char *type_name;         /* "sft", "grpo", "sample", "eval" */
    int index;                     /* 0-based position in stages */
    const char *name;
    recipe_strlist dataset;        /* dataset names */
    const recipe_dataset *const *datasets; /* [dataset.n] those datasets */
    const char *template_name;     /* the stage's template key; NULL: the recipe's */
    const char *init_from;         /* NULL: the previous stage's weights */
    recipe_rewards own_rewards;    /* the stage's rewards key (n = 0, items NULL when null) */
    recipe_rewards rewards;        /* the rewards the stage uses: its own, else the recipe's */
    union {
        recipe_sft_cfg sft;
        recipe_grpo_cfg grpo;
        recipe_sample_cfg sample;
        recipe_eval_cfg eval;
    };
};

/* LoRA adapters (the top-level `lora` table, PEFT's LoraConfig names):
 * every training stage trains them on the frozen model; eval and sample
 * stages generate with base + adapters. */
typedef struct {
    int set;                       /* 0: no lora table (full fine-tuning) */
    int64_t r;
    double lora_alpha, lora_dropout;
    recipe_strlist target_modules; /* module names, or "all-linear" */
    int use_rslora, routed_experts;
    model_lora_config model;       /* the keys above as the model takes them (checked) */
} recipe_lora_cfg;

typedef struct {
    const char *name, *model;
    double init_std;               /* NaN: load the model's weights */
    const char *tokenizer, *ref_model; /* NULL: the model's / the policy at the stage start */
    const char *device, *precision;
    int64_t seed;
    const char *output_dir;
    int64_t threads;               /* 0: all cores */
    const char *template_name;     /* the template key */
    const char *system_prompt;
    const recipe_dataset *datasets;
    int n_datasets;
    recipe_rewards rewards;
    int64_t reward_workers, reward_instructions, reward_memory_mb;
    double max_reward_error_rate;  /* a stage stops past this share of failed reward calls ... */
    int64_t reward_error_window;   /* ... over its last this many steps (run_gen.c) */
    const recipe_stage_cfg *stages;
    int n_stages;
    int report;
    recipe_lora_cfg lora;
} recipe_cfg;

/* The typed config (owned by the recipe). */
const recipe_cfg *recipe_config(const recipe *r);
/* The dataset named `name`, or NULL. */
const recipe_dataset *recipe_dataset_by_name(const recipe_cfg *c, const char *name);
/* The stage named `name`, or NULL. */
const recipe_stage_cfg *recipe_stage_by_name(const recipe_cfg *c, const char *name);
/* The stage's generation settings (grpo, sample, eval); NULL for sft. */
const recipe_gen_cfg *recipe_stage_gen(const recipe_stage_cfg *st);

/* Check a number for a key of a schema table ("top", "dataset", "reward",
 * "stage" for every stage, or a stage type) as a recipe value is checked;
 * for commands that take the same settings as flags without a recipe.
 * BASE_ERR_INVALID "WHAT: must be ..." (WHAT names the flag and value). */
base_status recipe_check_number(const char *table, const char *key, double v, const char *what);

/* The resolved tree (owned by the recipe): what config.resolved.lua holds. */
const cJSON *recipe_root(const recipe *r);
const char *recipe_path(const recipe *r);

/* The resolved tree as a Lua table literal ("return { ... }\n"). */
char *recipe_to_lua(const recipe *r);
/* Write it atomically to `path`. */
base_status recipe_write_resolved(const recipe *r, const char *path);

/* A path of the recipe as the run opens it (malloc'd). Every file and
 * directory key (model, tokenizer, ref_model, output_dir, datasets.*.path,
 * a reward's script, init_from, a sample stage's output) is made absolute
 * when the recipe loads: a relative path named in a recipe file against
 * that file's directory, one from an override, a flag or a default against
 * the current directory. So config.resolved.lua holds absolute paths and
 * runs as it is from any directory. A relative p (not from the tree) is
 * taken against the recipe file's directory. */
char *recipe_resolve_path(const recipe *r, const char *p);

/* ---- comparing with an earlier run's config (--resume) ------------------ */

typedef struct {
    char *key;            /* as errors name keys: "stages[2].learning_rate" */
    char *before, *after; /* the values as messages show them ("(unset)": none) */
    int alters;           /* 1: the key alters the trained result (its schema row lacks RF_NEUTRAL) */
} recipe_change;

/* The keys whose values differ between the recipe in the file `path` (an
 * earlier config.resolved.lua, loaded as a recipe) and r, in schema order;
 * a dataset, reward or stage added, removed or of another type is one
 * change. *out is malloc'd (recipe_changes_free). Errors: the file does
 * not load (the message names it). */
base_status recipe_changes(const recipe *r, const char *path, recipe_change **out, int *n);
void recipe_changes_free(recipe_change *c, int n);

/* Edit distance (for "did you mean" suggestions). */
int recipe_edit_distance(const char *a, const char *b);

#endif
