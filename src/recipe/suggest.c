/*
 * Suggestions for names a recipe gets wrong: typos (edit distance), the
 * names users bring from TRL, verl, OpenRLHF, vLLM and transformers
 * (kl_coef -> beta, rollout.n -> num_generations, ...), keys set in the
 * wrong table (beta at the top level, or in an sft stage), and the stage
 * types. Every table row is checked by tests/recipe: its target exists.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* Another tool's name for a key: `alias` (a dotted name is a table and its
 * key, as verl's YAML nests them: rollout.n) is `key` here; `tools` name
 * it so (NULL: a common name), `note` says how the meanings differ. */
typedef struct {
    const char *alias, *key, *tools, *note;
} key_alias;

static const key_alias ALIASES[] = {
    /* optimisation */
    {"lr", "learning_rate", NULL, NULL},
    {"actor_learning_rate", "learning_rate", "OpenRLHF", NULL},
    {"optim.lr", "learning_rate", "verl", "actor.optim.lr"},
    {"lr_scheduler", "lr_scheduler_type", "OpenRLHF", NULL},
    {"warmup_style", "lr_scheduler_type", "verl", NULL},
    {"lr_warmup_ratio", "warmup_ratio", "OpenRLHF", NULL},
    {"lr_warmup_steps_ratio", "warmup_ratio", "verl", NULL},
    {"lr_warmup_steps", "warmup_steps", "verl", NULL},
    {"grad_clip", "max_grad_norm", "verl", NULL},
    {"max_norm", "max_grad_norm", "OpenRLHF", NULL},
    {"clip_grad_norm", "max_grad_norm", NULL, NULL},
    {"total_training_steps", "max_steps", "verl", NULL},
    {"max_train_steps", "max_steps", NULL, NULL},
    {"num_steps", "max_steps", NULL, NULL},
    {"num_epochs", "num_train_epochs", NULL, NULL},
    {"epochs", "num_train_epochs", NULL, NULL},
    {"max_seq_length", "max_length", "TRL (formerly)", NULL},
    {"max_len", "max_length", "OpenRLHF", NULL},
    /* the GRPO objective */
    {"kl_coef", "beta", "verl and OpenRLHF", NULL},
    {"init_kl_coef", "beta", "OpenRLHF", NULL},
    {"kl_loss_coef", "beta", "verl", NULL},
    {"kl_ctrl.kl_coef", "beta", "verl", "algorithm.kl_ctrl.kl_coef"},
    {"use_kl_loss", "beta", "verl", "its switch: here beta > 0 turns the KL term on"},
    {"kl_loss_type", "kl_estimator", "verl", NULL},
    {"kl_penalty", "kl_estimator", "verl", NULL},
    {"clip_ratio", "epsilon", "verl", NULL},
    {"clip_ratio_low", "epsilon", "verl", NULL},
    {"clip_ratio_high", "epsilon_high", "verl", NULL},
    {"eps_clip", "epsilon", "OpenRLHF", NULL},
    {"eps_clip_low_high", "epsilon", "OpenRLHF", "both bounds: here epsilon and epsilon_high"},
    {"cliprange", "epsilon", "TRL's PPO", NULL},
    {"loss_agg_mode", "loss_type", "verl", NULL},
    {"entropy_coeff", "entropy_coef", "verl", NULL},
    {"norm_adv_by_std_in_grpo", "scale_rewards", "verl", "false is scale_rewards = \"none\""},
    {"filter_groups", "dynamic_sampling", "verl", "algorithm.filter_groups"},
    {"dynamic_filtering", "dynamic_sampling", "OpenRLHF", NULL},
    {"max_num_gen_batches", "max_resample_rounds", "verl", NULL},
    {"vllm_importance_sampling_correction", "importance_sampling_correction", "TRL", NULL},
    {"vllm_importance_sampling_cap", "importance_sampling_clip_max", "TRL", NULL},
    {"tis_imp_ratio_cap", "importance_sampling_clip_max", "verl", NULL},
    {"ppo_epochs", "num_iterations", "verl", NULL},
    {"max_epochs", "num_iterations", "OpenRLHF", "passes over each batch"},
    /* generation */
    {"n_samples_per_prompt", "num_generations", "OpenRLHF", NULL},
    {"rollout.n", "num_generations", "verl", "actor_rollout_ref.rollout.n"},
    {"n", "num_generations", "vLLM", NULL},
    {"num_return_sequences", "num_generations", "transformers", NULL},
    {"group_size", "num_generations", NULL, NULL},
    {"num_samples", "num_generations", NULL, NULL},
    {"max_new_tokens", "max_completion_length", "transformers", NULL},
    {"max_tokens", "max_completion_length", "vLLM", NULL},
    {"generate_max_len", "max_completion_length", "OpenRLHF", NULL},
    {"max_response_length", "max_completion_length", "verl", "data.max_response_length"},
    {"response_length", "max_completion_length", "verl", "rollout.response_length"},
    {"prompt_max_len", "max_prompt_length", "OpenRLHF", NULL},
    {"stop_strings", "stop", "transformers", NULL},
    /* batches */
    {"rollout_batch_size", "generation_batch_size", "OpenRLHF",
     "counted in prompts there, here in completions: prompts x num_generations"},
    {"train_batch_size", "generation_batch_size", "verl",
     "counted in prompts there, here in completions: prompts x num_generations"},
    {"ppo_mini_batch_size", "steps_per_generation", "verl", "here the optimizer steps per generation batch"},
    {"gradient_accumulation_steps", "steps_per_generation", "TRL's GRPOTrainer",
     "here the optimizer steps per generation batch"},
    {"ppo_micro_batch_size_per_gpu", "per_device_train_batch_size", "verl", NULL},
    {"micro_train_batch_size", "per_device_train_batch_size", "OpenRLHF", NULL},
    {"micro_batch_size", "per_device_train_batch_size", NULL, NULL},
    /* checkpoints and logging */
    {"save_freq", "save_steps", "verl", NULL},
    {"max_actor_ckpt_to_keep", "save_total_limit", "verl", NULL},
    {"max_ckpt_num", "save_total_limit", "OpenRLHF", NULL},
    {"log_completions", "log_completions_steps", "TRL", "a switch there, a period here"},
    /* the run */
    {"model_name_or_path", "model", "TRL", NULL},
    {"pretrain", "model", "OpenRLHF", NULL},
    {"model_path", "model", NULL, NULL},
    {"model.path", "model", "verl", "actor_rollout_ref.model.path"},
    {"tokenizer_name_or_path", "tokenizer", "TRL", NULL},
    {"reward_funcs", "rewards", "TRL", NULL},
    {"reward_weights", "rewards", "TRL", "here each reward has its weight"},
    {"reward_fn", "rewards", NULL, NULL},
    {"train_files", "datasets", "verl", "data.train_files"},
    {"prompt_data", "datasets", "OpenRLHF", NULL},
    {"dataset_name", "datasets", "TRL", NULL},
    {"run_name", "name", "TRL", NULL},
    {"experiment_name", "name", "verl", NULL},
    {"bf16", "precision", "TRL", "a switch there: here precision = \"bf16\""},
    {"chat_template", "template", "transformers", NULL},
    {"system", "system_prompt", NULL, NULL},
    {NULL, NULL, NULL, NULL},
};

const char *recipe_alias_of(int i, const char **key) {
    if (i < 0 || i >= (int)(sizeof ALIASES / sizeof ALIASES[0]) - 1) return NULL;
    if (key) *key = ALIASES[i].key;
    return ALIASES[i].alias;
}

static const recipe_key *in_tables(const recipe_key *a, const recipe_key *b, const char *k) {
    const recipe_key *tabs[2] = {a, b};
    for (int t = 0; t < 2; t++)
        for (const recipe_key *s = tabs[t]; s && s->key; s++)
            if (!strcmp(s->key, k)) return s;
    return NULL;
}

static const key_alias *find_alias(const char *name) {
    for (const key_alias *a = ALIASES; a->alias; a++)
        if (!strcmp(a->alias, name)) return a;
    return NULL;
}

/* The stage types whose tables have key k, "grpo or sft" style, into buf;
 * 0 when none. */
static int stage_types_with(const char *k, char *buf, size_t n) {
    int found = 0;
    buf[0] = 0;
    for (const char *const *t = recipe_schema_stage_types(); *t; t++)
        if (in_tables(recipe_schema_stage(*t), NULL, k)) {
            size_t len = strlen(buf);
            snprintf(buf + len, n - len, "%s%s", found++ ? " and " : "", *t);
        }
    return found;
}

/* Where a key of another table goes, seen from table (a, b). */
static void elsewhere(const recipe_key *a, const char *key, char *buf, size_t n) {
    char types[64];
    if (a == recipe_schema_top()) {
        if (in_tables(recipe_schema_stage_common(), NULL, key) || stage_types_with(key, types, sizeof types))
            snprintf(buf, n, "a stage key: set it in the stage (stages[N].%s)", key);
        else if (in_tables(recipe_schema_dataset(), NULL, key))
            snprintf(buf, n, "a dataset key (datasets.NAME.%s)", key);
        else if (in_tables(recipe_schema_reward(), NULL, key))
            snprintf(buf, n, "a reward key (rewards[N].%s)", key);
        else
            buf[0] = 0;
    } else if (in_tables(recipe_schema_top(), NULL, key)) {
        snprintf(buf, n, "a top-level key of the recipe");
    } else if (stage_types_with(key, types, sizeof types)) {
        snprintf(buf, n, "a key of %s stages", types);
    } else {
        buf[0] = 0;
    }
}

static const char *nearest(const recipe_key *a, const recipe_key *b, const char *k) {
    const char *best = NULL;
    int bd = 1 << 30;
    const recipe_key *tabs[2] = {a, b};
    for (int t = 0; t < 2; t++)
        for (const recipe_key *s = tabs[t]; s && s->key; s++) {
            int d = recipe_edit_distance(k, s->key);
            if (d < bd) {
                bd = d;
                best = s->key;
            }
        }
    int lim = (int)strlen(k) / 3;
    if (lim < 2) lim = 2;
    return bd <= lim ? best : NULL;
}

/* " (did you mean 'KEY'? TOOLS call it 'ALIAS' (NOTE); 'KEY' is WHERE)" */
static void alias_hint(const key_alias *al, const char *where, char *buf, size_t n) {
    base_buf b = {0};
    base_buf_printf(&b, " (did you mean '%s'?", al->key);
    if (al->tools) base_buf_printf(&b, " %s call%s it '%s'", al->tools, strstr(al->tools, " and ") ? "" : "s", al->alias);
    if (al->note) base_buf_printf(&b, " (%s)", al->note);
    if (where[0]) base_buf_printf(&b, "%s'%s' is %s", al->tools || al->note ? "; " : " ", al->key, where);
    base_buf_puts(&b, ")");
    snprintf(buf, n, "%s", b.data);
    base_buf_free(&b);
}

/* The hint for one name (k, or "table.child"): 1 when there is one. */
static int hint_for(const recipe_key *a, const recipe_key *b, const char *k, char *buf, size_t n) {
    char where[160];
    const key_alias *al = find_alias(k);
    if (al && in_tables(a, b, al->key)) {
        alias_hint(al, "", buf, n);
        return 1;
    }
    elsewhere(a, k, where, sizeof where); /* a key of another table */
    if (where[0]) {
        snprintf(buf, n, " ('%s' is %s)", k, where);
        return 1;
    }
    if (al) {
        elsewhere(a, al->key, where, sizeof where);
        alias_hint(al, where, buf, n);
        return 1;
    }
    return 0;
}

void recipe_unknown_key_hint(const recipe_key *a, const recipe_key *b, const char *k, const cJSON *v, char *buf,
                             size_t n) {
    buf[0] = 0;
    if (hint_for(a, b, k, buf, n)) return;
    if (cJSON_IsObject(v)) /* verl's nesting: rollout = { n = 8 } */
        for (const cJSON *e = v->child; e; e = e->next) {
            char dotted[256];
            snprintf(dotted, sizeof dotted, "%s.%s", k, e->string);
            if (find_alias(dotted) && hint_for(a, b, dotted, buf, n)) return;
            if (in_tables(a, b, e->string)) {
                snprintf(buf, n, " (did you mean '%s'? keys are not nested here: %s.%s is '%s')", e->string, k,
                         e->string, e->string);
                return;
            }
        }
    const char *sg = nearest(a, b, k);
    if (sg) snprintf(buf, n, " (did you mean '%s'?)", sg);
}

/* ---- values of a key with choices, stage types ------------------------------ */

static const struct {
    const char *name, *type;
} STAGE_ALIASES[] = {
    {"ppo", "grpo"},        {"rl", "grpo"},         {"rloo", "grpo"},         {"dapo", "grpo"},
    {"train", "sft"},       {"finetune", "sft"},    {"fine_tune", "sft"},     {"distill", "sft"},
    {"rejection_sampling", "sample"}, {"rs", "sample"}, {"generate", "sample"}, {"generation", "sample"},
    {"evaluate", "eval"},   {"evaluation", "eval"}, {"test", "eval"},         {"benchmark", "eval"},
    {NULL, NULL},
};

void recipe_choice_hint(const char *choices, const char *v, int stage_type, char *buf, size_t n) {
    buf[0] = 0;
    if (stage_type)
        for (int i = 0; STAGE_ALIASES[i].name; i++)
            if (!strcmp(STAGE_ALIASES[i].name, v)) {
                snprintf(buf, n, " (did you mean '%s'?)", STAGE_ALIASES[i].type);
                return;
            }
    char best[64] = "";
    int bd = 1 << 30;
    for (const char *p = choices; *p;) {
        const char *e = strchr(p, '|');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char c[64];
        snprintf(c, sizeof c, "%.*s", (int)(len < sizeof c ? len : sizeof c - 1), p);
        int d = recipe_edit_distance(v, c);
        if (d < bd) bd = d, snprintf(best, sizeof best, "%s", c);
        if (!e) break;
        p = e + 1;
    }
    int lim = (int)strlen(v) / 3 < 2 ? 2 : (int)strlen(v) / 3;
    if (best[0] && bd <= lim) snprintf(buf, n, " (did you mean '%s'?)", best);
}
