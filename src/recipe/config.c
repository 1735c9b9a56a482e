/*
 * The typed config: the validated tree parsed once into the structs of
 * recipe.h, driven by the schema tables' offsets, then the checks of keys
 * that must agree with each other (one place, after every single key was
 * checked against its range):
 *
 *   stage names unique and usable as file names; a stage names at least
 *   one dataset; every dataset a stage names exists, and a dataset
 *   "stage:NAME" is the output of a sample stage NAME that runs earlier
 *   grpo    generation_batch_size a multiple of num_generations,
 *           entropy_coef_min <= entropy_coef_max, the importance-sampling
 *           clip bounds ordered, the loss configuration (grpo_config_check)
 *   sft     max_steps -1 or >= 1
 *   sample  filters listed once, lang a known language, merge_datasets exist
 *
 * Errors name the key with its value: "FILE: stages[2].KEY = VALUE: ...".
 */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "reward/rules/rules.h"

static void *cfg_alloc(recipe *r, size_t n) {
    void *p = base_xcalloc(n ? n : 1, 1);
    r->blocks = base_xrealloc(r->blocks, (size_t)(r->n_blocks + 1) * sizeof *r->blocks);
    r->blocks[r->n_blocks++] = p;
    return p;
}

void recipe_config_free(recipe *r) {
    for (int i = 0; i < r->n_blocks; i++) free(r->blocks[i]);
    free(r->blocks);
    r->blocks = NULL;
    r->n_blocks = 0;
    memset(&r->cfg, 0, sizeof r->cfg);
}

/* ---- filling the structs from the tree ----------------------------------- */

static recipe_strlist strlist(recipe *r, const cJSON *v) {
    int n = cJSON_GetArraySize(v), i = 0;
    const char **items = cfg_alloc(r, (size_t)(n + 1) * sizeof *items);
    for (const cJSON *e = cJSON_IsArray(v) ? v->child : NULL; e; e = e->next) items[i++] = e->valuestring;
    return (recipe_strlist){items, n};
}

static void fill(recipe *r, const recipe_key *tab, const cJSON *obj, void *base);

static recipe_rewards rewards(recipe *r, const cJSON *v) {
    if (!cJSON_IsArray(v)) return (recipe_rewards){NULL, 0};
    int n = cJSON_GetArraySize(v), i = 0;
    recipe_reward *items = cfg_alloc(r, (size_t)(n + 1) * sizeof *items);
    for (const cJSON *e = v->child; e; e = e->next) fill(r, recipe_schema_reward(), e, &items[i++]);
    return (recipe_rewards){items, n};
}

/* Every key of the table into its field of *base (RK_DATASETS and
 * RK_STAGES are filled by recipe_config_build). */
static void fill(recipe *r, const recipe_key *tab, const cJSON *obj, void *base) {
    for (const recipe_key *k = tab; k->key; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, k->key);
        char *f = (char *)base + k->offset;
        switch (k->type) {
        case RK_NUM: *(double *)f = cJSON_IsNumber(v) ? v->valuedouble : NAN; break;
        case RK_INT: *(int64_t *)f = (int64_t)v->valuedouble; break;
        case RK_BOOL: *(int *)f = cJSON_IsTrue(v); break;
        case RK_STR: *(const char **)f = cJSON_IsString(v) ? v->valuestring : NULL; break;
        case RK_STRLIST: *(recipe_strlist *)f = strlist(r, v); break;
        case RK_REWARDS: *(recipe_rewards *)f = rewards(r, v); break;
        case RK_TABLE: *(const cJSON **)f = cJSON_IsObject(v) ? v : NULL; break;
        case RK_SUB:
            *(int *)f = cJSON_IsObject(v);
            if (cJSON_IsObject(v)) fill(r, k->sub, v, f);
            break;
        case RK_DATASETS:
        case RK_STAGES: break;
        }
    }
}

/* ---- checks ---------------------------------------------------------------- */

/* An error about stages[i].key (its value in the tree). */
static base_status stage_error(recipe_vctx *c, const cJSON *stj, int i, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static base_status stage_error(recipe_vctx *c, const cJSON *stj, int i, const char *key, const char *fmt, ...) {
    char msg[512], path[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(path, sizeof path, "stages[%d].%s", i + 1, key);
    return recipe_value_error(c, path, cJSON_GetObjectItemCaseSensitive(stj, key), "%s", msg);
}

/* The dataset `name` for use by stage st (item `item` of its list `key`). */
static base_status dataset_ref(recipe_vctx *c, const recipe_cfg *cfg, const recipe_stage_cfg *st, const cJSON *stj,
                               const char *key, int item, const char *name, const recipe_dataset **out) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(stj, key);
    char path[300];
    snprintf(path, sizeof path, "stages[%d].%s[%d]", st->index + 1, key, item + 1);
    const recipe_dataset *d = recipe_dataset_by_name(cfg, name);
    if (!d) {
        base_buf names = {0};
        for (int i = 0; i < cfg->n_datasets; i++)
            base_buf_printf(&names, "%s%s", names.len ? ", " : "", cfg->datasets[i].name);
        base_status s = recipe_value_error(c, path, cJSON_GetArrayItem(list, item),
                                           "no dataset named '%s' (datasets: %s)", name,
                                           names.len ? names.data : "none");
        base_buf_free(&names);
        return s;
    }
    if (d->producer && d->producer->index >= st->index)
        return recipe_value_error(c, path, cJSON_GetArrayItem(list, item),
                                  "dataset '%s' is the output of stage '%s' (stages[%d]), which does not run before "
                                  "this one",
                                  name, d->producer->name, d->producer->index + 1);
    *out = d;
    return BASE_OK;
}

static base_status check_grpo(recipe_vctx *c, const cJSON *stj, recipe_stage_cfg *st) {
    recipe_grpo_cfg *g = &st->grpo;
    int i = st->index;
    if (g->generation_batch_size % g->gen.num_generations)
        return stage_error(c, stj, i, "generation_batch_size",
                           "must be a multiple of num_generations (%lld): whole groups per step",
                           (long long)g->gen.num_generations);
    if (g->entropy_coef_min > g->entropy_coef_max)
        return stage_error(c, stj, i, "entropy_coef_min", "must be <= entropy_coef_max (%.15g)", g->entropy_coef_max);
    if (g->importance_sampling_clip_min > g->importance_sampling_clip_max) /* false when either is null (NaN) */
        return stage_error(c, stj, i, "importance_sampling_clip_min", "must be <= importance_sampling_clip_max (%.15g)",
                           g->importance_sampling_clip_max);
    if (!strcmp(g->loss_type, "cispo") && g->epsilon_high == 0)
        return stage_error(c, stj, i, "epsilon_high",
                           "must be > 0 with loss_type cispo (it caps the ratio at 1 + epsilon_high; ScaleRL: 5.0)");
    if (!strcmp(g->loss_type, "vespo") && g->importance_sampling_correction &&
        strncmp(g->importance_sampling_mode, "token_", 6))
        return stage_error(c, stj, i, "importance_sampling_mode",
                           "must be token_truncate or token_mask with loss_type vespo and "
                           "importance_sampling_correction (vespo takes the correction into its sequence weight, "
                           "as TRL)");
    /* the loss configuration as the trainer takes it */
    grpo_config *l = &g->loss;
    grpo_config_default(l);
    base_status s;
    if ((s = grpo_loss_type_parse(g->loss_type, &l->loss_type)) ||
        (s = grpo_scale_rewards_parse(g->scale_rewards, &l->scale_rewards)) ||
        (s = grpo_kl_estimator_parse(g->kl_estimator, &l->kl_estimator)) ||
        (s = grpo_is_level_parse(g->importance_sampling_level, &l->importance_sampling_level)) ||
        (s = grpo_reward_aggregation_parse(g->multi_objective_aggregation, &l->multi_objective_aggregation)) ||
        (s = grpo_is_correction_mode_parse(g->importance_sampling_mode, &l->importance_sampling_mode)))
        return recipe_key_error(c, NULL, "stages[%d]: %s", i + 1, base_err_msg());
    l->beta = g->beta;
    l->epsilon = g->epsilon;
    l->epsilon_high = isnan(g->epsilon_high) ? -1 : g->epsilon_high; /* grpo_config: < 0 = epsilon */
    l->delta = isnan(g->delta) ? 0 : g->delta;                        /* 0 = off */
    l->sapo_temperature_pos = g->sapo_temperature_pos;
    l->sapo_temperature_neg = g->sapo_temperature_neg;
    l->vespo_k_pos = g->vespo_k_pos;
    l->vespo_lambda_pos = g->vespo_lambda_pos;
    l->vespo_k_neg = g->vespo_k_neg;
    l->vespo_lambda_neg = g->vespo_lambda_neg;
    l->top_entropy_quantile = g->top_entropy_quantile;
    l->use_bias_correction_kl = g->use_bias_correction_kl;
    l->off_policy_mask_threshold = g->off_policy_mask_threshold;
    l->importance_sampling_correction = g->importance_sampling_correction;
    l->importance_sampling_clip_min = g->importance_sampling_clip_min;
    l->importance_sampling_clip_max = g->importance_sampling_clip_max;
    l->num_iterations = (int)g->num_iterations;
    l->max_completion_length = (int)g->gen.max_completion_length;
    l->mask_truncated_completions = g->mask_truncated_completions;
    l->entropy_coef = g->entropy_coef;
    l->use_adaptive_entropy = g->use_adaptive_entropy;
    l->entropy_coef_min = g->entropy_coef_min;
    l->entropy_coef_max = g->entropy_coef_max;
    l->entropy_coef_delta = g->entropy_coef_delta;
    l->entropy_target = g->entropy_target;
    l->steps_per_generation = (int)g->steps_per_generation;
    if ((s = grpo_config_check(l))) return recipe_key_error(c, NULL, "stages[%d]: %s", i + 1, base_err_msg());
    return BASE_OK;
}

static base_status train_config(recipe_vctx *c, const recipe_stage_cfg *st, recipe_train_cfg *t) {
    optim_config *o = &t->optim;
    optim_config_default(o);
    o->learning_rate = t->learning_rate;
    o->adam_beta1 = t->adam_beta1;
    o->adam_beta2 = t->adam_beta2;
    o->adam_epsilon = t->adam_epsilon;
    o->weight_decay = t->weight_decay;
    o->max_grad_norm = t->max_grad_norm;
    o->warmup_steps = t->warmup_steps;
    o->warmup_ratio = t->warmup_ratio;
    o->max_steps = 0; /* the stage's */
    o->offload_optimizer = t->offload_optimizer;
    if (optim_sched_parse(t->lr_scheduler_type, &o->lr_scheduler_type))
        return recipe_key_error(c, NULL, "stages[%d]: %s", st->index + 1, base_err_msg());
    return BASE_OK;
}

static base_status check_sample(recipe_vctx *c, const recipe_cfg *cfg, const cJSON *stj, recipe_stage_cfg *st,
                                recipe *r) {
    recipe_sample_cfg *sa = &st->sample;
    const cJSON *fl = cJSON_GetObjectItemCaseSensitive(stj, "filters");
    for (int i = 0; i < sa->filters.n; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(sa->filters.items[i], sa->filters.items[j])) {
                char path[300];
                snprintf(path, sizeof path, "stages[%d].filters[%d]", st->index + 1, i + 1);
                return recipe_value_error(c, path, cJSON_GetArrayItem(fl, i), "listed twice");
            }
    if (!reward_lang_known(sa->lang))
        return stage_error(c, stj, st->index, "lang", "must be a known language code (ISO 639-1: en, zh, fr, ...)");
    const recipe_dataset **m = cfg_alloc(r, (size_t)(sa->merge_datasets.n + 1) * sizeof *m);
    for (int i = 0; i < sa->merge_datasets.n; i++) {
        base_status s = dataset_ref(c, cfg, st, stj, "merge_datasets", i, sa->merge_datasets.items[i], &m[i]);
        if (s) return s;
    }
    sa->merge = m;
    return BASE_OK;
}

/* The lora table as the model takes it, and what does not go with it: a
 * reference other than the base (ref_model, sync_ref_model), a stage that
 * starts from other weights (init_from), random weights (init_std). */
static base_status check_lora(recipe_vctx *c, recipe_cfg *cfg, const cJSON *root) {
    recipe_lora_cfg *lo = &cfg->lora;
    if (!lo->set) return BASE_OK;
    const cJSON *lj = cJSON_GetObjectItemCaseSensitive(root, "lora");
    if (lo->lora_dropout != 0)
        return recipe_value_error(c, "lora.lora_dropout", cJSON_GetObjectItemCaseSensitive(lj, "lora_dropout"),
                                  "only 0 is supported: grpo does not implement LoRA dropout (PEFT's default is 0)");
    if (lo->target_modules.n == 0)
        return recipe_value_error(c, "lora.target_modules", cJSON_GetObjectItemCaseSensitive(lj, "target_modules"),
                                  "must name at least one module (%s, or all-linear)", MODEL_LORA_TARGET_NAMES);
    model_lora_config *m = &lo->model;
    memset(m, 0, sizeof *m);
    m->r = (int)lo->r;
    m->lora_alpha = lo->lora_alpha;
    m->use_rslora = lo->use_rslora;
    m->routed_experts = lo->routed_experts;
    for (int i = 0; i < lo->target_modules.n; i++) {
        const char *t = lo->target_modules.items[i];
        int k = model_lora_target_parse(t);
        m->targets |= !strcmp(t, "all-linear") ? (1u << MODEL_LORA_NTARGETS) - 1 : 1u << k; /* the schema checked t */
    }
    if (cfg->ref_model)
        return recipe_value_error(c, "ref_model", cJSON_GetObjectItemCaseSensitive(root, "ref_model"),
                                  "not with lora: the reference is the base model (the adapters off, as TRL with "
                                  "PEFT); remove ref_model or the lora table");
    if (!isnan(cfg->init_std))
        return recipe_value_error(c, "init_std", cJSON_GetObjectItemCaseSensitive(root, "init_std"),
                                  "not with lora: the adapters train on the loaded model's weights");
    const cJSON *sl = cJSON_GetObjectItemCaseSensitive(root, "stages");
    for (int i = 0; i < cfg->n_stages; i++) {
        const recipe_stage_cfg *st = &cfg->stages[i];
        const cJSON *stj = cJSON_GetArrayItem(sl, i);
        if (st->init_from)
            return stage_error(c, stj, i, "init_from",
                               "not with lora: every stage trains the one adapter on the recipe's model (merge it "
                               "with grpo merge and start a recipe from the merged model instead)");
        if (st->type == RECIPE_STAGE_GRPO && st->grpo.sync_ref_model)
            return stage_error(c, stj, i, "sync_ref_model",
                               "not with lora: the reference is the base model (the adapters off)");
    }
    return BASE_OK;
}

/* ---- the whole config -------------------------------------------------------- */

base_status recipe_config_build(recipe_vctx *c, recipe *r) {
    recipe_cfg *cfg = &r->cfg;
    const cJSON *root = r->root;
    fill(r, recipe_schema_top(), root, cfg);
    /* datasets (producers are set once the stages exist) */
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(root, "datasets");
    int nd = cJSON_GetArraySize(ds), i = 0;
    recipe_dataset *dsets = cfg_alloc(r, (size_t)(nd + 1) * sizeof *dsets);
    for (const cJSON *d = ds->child; d; d = d->next, i++) {
        fill(r, recipe_schema_dataset(), d, &dsets[i]);
        dsets[i].name = d->string;
    }
    cfg->datasets = dsets;
    cfg->n_datasets = nd;
    /* stages */
    const cJSON *sl = cJSON_GetObjectItemCaseSensitive(root, "stages");
    int ns = cJSON_GetArraySize(sl);
    recipe_stage_cfg *stages = cfg_alloc(r, (size_t)(ns + 1) * sizeof *stages);
    const cJSON **stj = cfg_alloc(r, (size_t)(ns + 1) * sizeof *stj);
    i = 0;
    for (const cJSON *e = sl->child; e; e = e->next, i++) {
        recipe_stage_cfg *st = &stages[i];
        stj[i] = e;
        st->index = i;
        fill(r, recipe_schema_stage_common(), e, st);
        const char *const *types = recipe_schema_stage_types(); /* in recipe_stage_type order */
        for (int t = 0; types[t]; t++)
            if (!strcmp(st->type_name, types[t])) st->type = (recipe_stage_type)t;
        fill(r, recipe_schema_stage(st->type_name), e, st);
        st->rewards = st->own_rewards.items ? st->own_rewards : cfg->rewards;
    }
    cfg->stages = stages;
    cfg->n_stages = ns;
    /* names and references */
    for (i = 0; i < ns; i++) {
        const char *nm = stages[i].name;
        int bad = !*nm || !strcmp(nm, ".") || !strcmp(nm, "..") || strlen(nm) > 100;
        for (const unsigned char *p = (const unsigned char *)nm; *p; p++) bad |= *p == '/' || *p < 0x20 || *p == 0x7f;
        if (bad)
            return stage_error(c, stj[i], i, "name",
                               "must be 1 to 100 characters without '/' or control characters, not '.' or '..' "
                               "(it names files in the run directory)");
        if (stages[i].dataset.n == 0)
            return stage_error(c, stj[i], i, "dataset", "must name at least one dataset");
    }
    for (i = 0; i < ns; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(stages[i].name, stages[j].name))
                return stage_error(c, stj[i], i, "name", "two stages are named '%s' (stages[%d] too)",
                                   stages[i].name, j + 1);
    for (i = 0; i < nd; i++) {
        if (strncmp(dsets[i].path, "stage:", 6)) continue;
        const recipe_stage_cfg *p = recipe_stage_by_name(cfg, dsets[i].path + 6);
        if (!p || p->type != RECIPE_STAGE_SAMPLE) {
            char path[300];
            snprintf(path, sizeof path, "datasets.%s.path", dsets[i].name);
            const cJSON *dj = cJSON_GetObjectItemCaseSensitive(ds, dsets[i].name);
            const cJSON *pv = cJSON_GetObjectItemCaseSensitive(dj, "path");
            return recipe_value_error(c, path, pv, "%s", p ? "names a stage that is not a sample stage"
                                                          : "no stage of this recipe has that name");
        }
        dsets[i].producer = p;
    }
    for (i = 0; i < ns; i++) {
        recipe_stage_cfg *st = &stages[i];
        const recipe_dataset **refs = cfg_alloc(r, (size_t)(st->dataset.n + 1) * sizeof *refs);
        for (int j = 0; j < st->dataset.n; j++) {
            base_status s = dataset_ref(c, cfg, st, stj[i], "dataset", j, st->dataset.items[j], &refs[j]);
            if (s) return s;
        }
        st->datasets = refs;
        base_status s = BASE_OK;
        switch (st->type) {
        case RECIPE_STAGE_GRPO:
            s = check_grpo(c, stj[i], st);
            if (!s) s = train_config(c, st, &st->grpo.train);
            break;
        case RECIPE_STAGE_SFT:
            if (st->sft.max_steps == 0)
                s = stage_error(c, stj[i], i, "max_steps", "must be -1 (from num_train_epochs) or >= 1");
            if (!s) s = train_config(c, st, &st->sft.train);
            break;
        case RECIPE_STAGE_SAMPLE: s = check_sample(c, cfg, stj[i], st, r); break;
        case RECIPE_STAGE_EVAL: break;
        }
        if (s) return s;
    }
    return check_lora(c, cfg, root);
}

const recipe_dataset *recipe_dataset_by_name(const recipe_cfg *c, const char *name) {
    for (int i = 0; i < c->n_datasets; i++)
        if (!strcmp(c->datasets[i].name, name)) return &c->datasets[i];
    return NULL;
}

const recipe_stage_cfg *recipe_stage_by_name(const recipe_cfg *c, const char *name) {
    for (int i = 0; i < c->n_stages; i++)
        if (!strcmp(c->stages[i].name, name)) return &c->stages[i];
    return NULL;
}

const recipe_gen_cfg *recipe_stage_gen(const recipe_stage_cfg *st) {
    switch (st->type) {
    case RECIPE_STAGE_GRPO: return &st->grpo.gen;
    case RECIPE_STAGE_SAMPLE: return &st->sample.gen;
    case RECIPE_STAGE_EVAL: return &st->eval.gen;
    case RECIPE_STAGE_SFT: break;
    }
    return NULL;
}
