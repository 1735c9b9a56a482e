/*
 * The GRPO stage. One step:
 *
 *   P = generation_batch_size / G prompts from the shuffled dataset
 *   --rollout--> G completions each (sampling log-probs recorded)
 *   --reward pool--> rewards [N, F] (nil = NaN)
 *   (dynamic sampling: drop groups whose rewards are all equal, generate
 *    more groups, up to max_resample_rounds)
 *   --grpo_advantages--> A [N]
 *   num_iterations times: per micro-batch of completions, the policy's
 *   training forward (logits / temperature, as the sampler), the
 *   reference's forward when beta != 0, grpo_loss, backward; then one
 *   AdamW step.
 *   --> a metrics.jsonl line; samples.jsonl every log_completions_steps;
 *   a checkpoint every save_steps and at the end of the stage.
 *
 * Sequence j of a micro-batch is its prompt followed by its completion;
 * completion token k of j is predicted at position P_j - 1 + k, so the
 * model's per-position log-prob there is the token's log-prob.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "recipe/recipe.h"
#include "run_internal.h"

typedef struct {
    /* sizes */
    int G, P, N;           /* group size, prompts per round, completions per round */
    int64_t max_prompt, max_new;
    int mb;                /* completions per micro-batch */
    int64_t max_tok;       /* tokens per micro-batch */
    int F;                 /* reward functions */
    /* the step's kept completions (up to N): host buffers, one per role */
    int n;                         /* kept completions */
    int32_t *pids;                 /* [N, max_prompt] prompt ids */
    int32_t *plen;                 /* [N] */
    int32_t *cids;                 /* [N, max_new] completion ids */
    int32_t *clen;                 /* [N] */
    uint8_t *trunc;                /* [N] finish == length */
    float *rewards;                /* [N, F] */
    float *adv;                    /* [N] */
    float *total;                  /* [N] */
    int64_t *rowidx;               /* [N] dataset row of each completion */
    char **ptext, **ctext;         /* [N] rendered prompt / completion text */
    float *old_lp;                 /* [N, max_new] old log-probs: the policy before the batch's first update */
    float *samp_lp;                /* [N, max_new] the sampler's log-probs */
    float *isr;                    /* [N, max_new] importance-sampling correction (grpo_is_correction) */
    int *ord;                      /* [N] training order (shuffled when steps_per_generation > 1) */
    cJSON **sel_rows;              /* [P] the rows of a generation round */
    char **sel_where;              /* [P] */
    float *adv_mb;                 /* [mb] advantages of a micro-batch, in its order */
    uint8_t *trunc_mb;             /* [mb] */
    /* micro-batch buffers */
    int32_t *ids, *cu, *tgt;       /* [max_tok], [mb + 1], [max_tok] */
    float *lp_pos, *ent_pos, *ref_pos, *g_pos, *gent_pos; /* [max_tok] */
    float *lp, *ent, *ref, *old, *g, *gent, *samp, *is;   /* [max_tok] packed completion tokens */
    uint8_t *mask;
    int64_t *offs;                 /* [mb + 1] */
} grpo_bufs;

static void bufs_alloc(grpo_bufs *b) {
    size_t N = (size_t)b->N, T = (size_t)b->max_tok;
    b->pids = base_xmalloc(N * (size_t)b->max_prompt * sizeof(int32_t));
    b->plen = base_xcalloc(N, sizeof(int32_t));
    b->cids = base_xmalloc(N * (size_t)b->max_new * sizeof(int32_t));
    b->clen = base_xcalloc(N, sizeof(int32_t));
    b->trunc = base_xcalloc(N, 1);
    b->rewards = base_xmalloc(N * (size_t)b->F * sizeof(float));
    b->adv = base_xmalloc(N * sizeof(float));
    b->total = base_xmalloc(N * sizeof(float));
    b->rowidx = base_xmalloc(N * sizeof(int64_t));
    b->ptext = base_xcalloc(N, sizeof(char *));
    b->ctext = base_xcalloc(N, sizeof(char *));
    b->old_lp = base_xmalloc(N * (size_t)b->max_new * sizeof(float));
    b->samp_lp = base_xmalloc(N * (size_t)b->max_new * sizeof(float));
    b->isr = base_xmalloc(N * (size_t)b->max_new * sizeof(float));
    b->ord = base_xmalloc(N * sizeof(int));
    b->sel_rows = base_xcalloc((size_t)b->P, sizeof *b->sel_rows);
    b->sel_where = base_xcalloc((size_t)b->P, sizeof *b->sel_where);
    b->adv_mb = base_xmalloc((size_t)b->mb * sizeof(float));
    b->trunc_mb = base_xmalloc((size_t)b->mb);
    b->ids = base_xmalloc(T * sizeof(int32_t));
    b->tgt = base_xmalloc(T * sizeof(int32_t));
    b->cu = base_xmalloc(((size_t)b->mb + 1) * sizeof(int32_t));
    b->offs = base_xmalloc(((size_t)b->mb + 1) * sizeof(int64_t));
    float **f[] = {&b->lp_pos, &b->ent_pos, &b->ref_pos, &b->g_pos, &b->gent_pos,
                   &b->lp, &b->ent, &b->ref, &b->old, &b->g, &b->gent, &b->samp, &b->is};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) *f[i] = base_xmalloc(T * sizeof(float));
    b->mask = base_xmalloc(T);
}

static void bufs_free(grpo_bufs *b) {
    for (int i = 0; i < b->N; i++) free(b->ptext[i]), free(b->ctext[i]);
    free(b->pids), free(b->plen), free(b->cids), free(b->clen), free(b->trunc), free(b->rewards);
    free(b->adv), free(b->total), free(b->rowidx), free(b->ptext), free(b->ctext), free(b->old_lp);
    free(b->ids), free(b->tgt), free(b->cu), free(b->offs), free(b->lp_pos), free(b->ent_pos);
    free(b->ref_pos), free(b->g_pos), free(b->gent_pos), free(b->lp), free(b->ent), free(b->ref);
    free(b->old), free(b->g), free(b->gent), free(b->mask), free(b->ord), free(b->adv_mb), free(b->trunc_mb);
    free(b->sel_rows), free(b->sel_where), free(b->samp_lp), free(b->isr), free(b->samp), free(b->is);
}

/* Pack completions ix[0..n) into the micro-batch: ids/cu/targets by position
 * and the completion-token layout (offs) the loss works on. */
static void pack_micro(grpo_bufs *b, const int *ix, int n, model_batch *mbatch, grpo_batch *gb) {
    int64_t pos = 0, tok = 0;
    b->cu[0] = 0;
    b->offs[0] = 0;
    for (int k = 0; k < n; k++) {
        int j = ix[k];
        int32_t P = b->plen[j], L = b->clen[j];
        memcpy(b->ids + pos, b->pids + (size_t)j * (size_t)b->max_prompt, (size_t)P * sizeof(int32_t));
        memcpy(b->ids + pos + P, b->cids + (size_t)j * (size_t)b->max_new, (size_t)L * sizeof(int32_t));
        for (int64_t t = 0; t < P + L; t++) b->tgt[pos + t] = -1;
        for (int32_t t = 0; t < L; t++) b->tgt[pos + P - 1 + t] = b->cids[(size_t)j * (size_t)b->max_new + (size_t)t];
        pos += P + L;
        tok += L;
        b->cu[k + 1] = (int32_t)pos;
        b->offs[k + 1] = tok;
        b->adv_mb[k] = b->adv[j];
        b->trunc_mb[k] = b->trunc[j];
    }
    memset(b->mask, 1, (size_t)tok);
    *mbatch = (model_batch){.nseq = n, .ids = b->ids, .cu_seqlens = b->cu, .targets = b->tgt};
    *gb = (grpo_batch){.n_seqs = n, .offsets = b->offs, .mask = b->mask, .truncated = b->trunc_mb,
                       .advantages = b->adv_mb};
}

/* Per-position values -> packed completion tokens of ix[0..n). */
static void gather(const grpo_bufs *b, const int *ix, int n, const float *pos_vals, float *tok_vals) {
    int64_t pos = 0, tok = 0;
    for (int k = 0; k < n; k++) {
        int32_t P = b->plen[ix[k]], L = b->clen[ix[k]];
        memcpy(tok_vals + tok, pos_vals + pos + P - 1, (size_t)L * sizeof(float));
        pos += P + L;
        tok += L;
    }
}

static void scatter(const grpo_bufs *b, const int *ix, int n, const float *tok_vals, float *pos_vals) {
    int64_t pos = 0, tok = 0;
    for (int k = 0; k < n; k++) {
        int32_t P = b->plen[ix[k]], L = b->clen[ix[k]];
        memset(pos_vals + pos, 0, (size_t)(P + L) * sizeof(float));
        memcpy(pos_vals + pos + P - 1, tok_vals + tok, (size_t)L * sizeof(float));
        pos += P + L;
        tok += L;
    }
}

/* Completions of optimizer step `part` of `spg`: ord[lo, hi). */
static void part_range(int n, int spg, int part, int *lo, int *hi) {
    *lo = (int)((int64_t)n * part / spg);
    *hi = (int)((int64_t)n * (part + 1) / spg);
}

static base_status parse_config(const cJSON *st, grpo_config *g) {
    grpo_config_default(g);
    base_status s;
    if ((s = grpo_loss_type_parse(recipe_str(st, "loss_type"), &g->loss_type))) return s;
    if ((s = grpo_scale_rewards_parse(recipe_str(st, "scale_rewards"), &g->scale_rewards))) return s;
    if ((s = grpo_kl_estimator_parse(recipe_str(st, "kl_estimator"), &g->kl_estimator))) return s;
    if ((s = grpo_is_level_parse(recipe_str(st, "importance_sampling_level"), &g->importance_sampling_level)))
        return s;
    g->beta = recipe_num(st, "beta");
    g->epsilon = recipe_num(st, "epsilon");
    /* keys whose null means "off": grpo_config's own sentinels */
    g->epsilon_high = base_json_num(st, "epsilon_high", -1, NULL);
    int has_delta;
    g->delta = base_json_num(st, "delta", 0, &has_delta);
    if (has_delta && !(g->delta > 0))
        return base_err_set(BASE_ERR_INVALID, "delta = %g (expected > 0, or null = off; INTELLECT-2 uses 4)", g->delta);
    if ((s = grpo_reward_aggregation_parse(recipe_str(st, "multi_objective_aggregation"),
                                           &g->multi_objective_aggregation)))
        return s;
    g->sapo_temperature_pos = recipe_num(st, "sapo_temperature_pos");
    g->sapo_temperature_neg = recipe_num(st, "sapo_temperature_neg");
    g->vespo_k_pos = recipe_num(st, "vespo_k_pos");
    g->vespo_lambda_pos = recipe_num(st, "vespo_lambda_pos");
    g->vespo_k_neg = recipe_num(st, "vespo_k_neg");
    g->vespo_lambda_neg = recipe_num(st, "vespo_lambda_neg");
    g->top_entropy_quantile = recipe_num(st, "top_entropy_quantile");
    g->use_bias_correction_kl = recipe_bool(st, "use_bias_correction_kl");
    g->off_policy_mask_threshold = base_json_num(st, "off_policy_mask_threshold", NAN, NULL);
    g->importance_sampling_correction = recipe_bool(st, "importance_sampling_correction");
    if ((s = grpo_is_correction_mode_parse(recipe_str(st, "importance_sampling_mode"), &g->importance_sampling_mode)))
        return s;
    g->importance_sampling_clip_min = base_json_num(st, "importance_sampling_clip_min", NAN, NULL);
    g->importance_sampling_clip_max = base_json_num(st, "importance_sampling_clip_max", NAN, NULL);
    g->num_iterations = (int)recipe_int(st, "num_iterations");
    g->max_completion_length = (int)recipe_int(st, "max_completion_length");
    g->mask_truncated_completions = recipe_bool(st, "mask_truncated_completions");
    g->entropy_coef = recipe_num(st, "entropy_coef");
    g->use_adaptive_entropy = recipe_bool(st, "use_adaptive_entropy");
    g->entropy_coef_min = recipe_num(st, "entropy_coef_min");
    g->entropy_coef_max = recipe_num(st, "entropy_coef_max");
    g->entropy_coef_delta = recipe_num(st, "entropy_coef_delta");
    g->entropy_target = recipe_num(st, "entropy_target");
    g->steps_per_generation = (int)recipe_int(st, "steps_per_generation");
    return grpo_config_check(g);
}

/* run_stage_grpo_check, with the parsed options in *g. */
static base_status check_stage(const cJSON *st, grpo_config *g) {
    const char *name = recipe_str(st, "name");
    base_status s = parse_config(st, g);
    if (s) return base_err_wrap(s, "stage '%s'", name);
    int64_t G = recipe_int(st, "num_generations"), N = recipe_int(st, "generation_batch_size");
    if (G < 2) return base_err_set(BASE_ERR_INVALID, "stage '%s': num_generations must be >= 2 (GRPO compares a group)", name);
    if (N < G || N % G)
        return base_err_set(BASE_ERR_INVALID,
                            "stage '%s': generation_batch_size (%lld) must be a positive multiple of num_generations (%lld)",
                            name, (long long)N, (long long)G);
    if (recipe_int(st, "max_steps") < 1) return base_err_set(BASE_ERR_INVALID, "stage '%s': max_steps must be >= 1", name);
    if (!(recipe_num(st, "temperature") > 0))
        return base_err_set(BASE_ERR_INVALID, "stage '%s': GRPO samples need temperature > 0", name);
    return BASE_OK;
}

base_status run_stage_grpo_check(const cJSON *st) {
    grpo_config g;
    return check_stage(st, &g);
}

/* State of one stage run (what a checkpoint restores). */
typedef struct {
    int64_t epoch, pos; /* data cursor */
    int64_t *perm;      /* order of the current epoch */
    int64_t nrows;
    int shuffle;        /* shuffle_dataset: a seeded permutation per epoch, else file order */
} cursor;

static void cursor_order(cursor *cur, uint64_t seed, int index) {
    if (cur->shuffle) run_shuffle(seed, (uint32_t)index, cur->epoch, cur->nrows, cur->perm);
    else
        for (int64_t i = 0; i < cur->nrows; i++) cur->perm[i] = i;
}

static int64_t next_row(cursor *cur, uint64_t seed, int index) {
    if (cur->pos >= cur->nrows) {
        cur->epoch++;
        cur->pos = 0;
        cursor_order(cur, seed, index);
    }
    return cur->perm[cur->pos++];
}

/* Generate, decode and score `np` prompts x G (the next rows of the data
 * cursor) into the bufs starting at completion slot b->n (the caller keeps
 * or drops groups afterwards). */
static base_status generate_round(run_ctx *c, int index, grpo_bufs *b, run_gen *gen, cJSON **rows, char **where,
                                  cursor *cur, int np, uint32_t round, int64_t *new_tokens, double *t_roll,
                                  double *t_rew) {
    int G = b->G, base = b->n;
    for (int i = 0; i < np; i++) {
        int64_t r = next_row(cur, c->seed, index);
        b->sel_rows[i] = rows[r];
        b->sel_where[i] = where[r];
        for (int g = 0; g < G; g++) b->rowidx[base + i * G + g] = r;
    }
    double t0 = base_now(), tok0 = (double)gen->new_tokens, sec0 = gen->gen_seconds;
    base_status s = run_gen_chunk(gen, b->sel_rows, b->sel_where, np, (uint32_t)c->total_steps,
                                  round * (uint32_t)b->P);
    /* the rollout's share of the time; the rest is decoding and rewards */
    *t_roll += gen->gen_seconds - sec0;
    *t_rew += (base_now() - t0) - (gen->gen_seconds - sec0);
    *new_tokens += (int64_t)((double)gen->new_tokens - tok0);
    if (s) return s;
    for (int i = 0; i < np * G; i++) {
        int j = base + i;
        const tok_ids *p = &gen->pids[i / G];
        const rollout_completion *co = &gen->res.out[i];
        memcpy(b->pids + (size_t)j * (size_t)b->max_prompt, p->ids, (size_t)p->n * sizeof(int32_t));
        b->plen[j] = (int32_t)p->n;
        memcpy(b->cids + (size_t)j * (size_t)b->max_new, co->ids, (size_t)co->len * sizeof(int32_t));
        memcpy(b->samp_lp + (size_t)j * (size_t)b->max_new, co->logp, (size_t)co->len * sizeof(float));
        b->clen[j] = (int32_t)co->len;
        b->trunc[j] = co->finish == ROLLOUT_FINISH_LENGTH;
        free(b->ptext[j]);
        free(b->ctext[j]);
        b->ptext[j] = base_xstrdup(gen->ptext[i / G]);
        b->ctext[j] = base_xstrdup(base_json_str(gen->samples[i], "completion", ""));
        for (int f = 0; f < b->F; f++)
            b->rewards[(size_t)j * (size_t)b->F + (size_t)f] = (float)gen->sc.score[(size_t)i * (size_t)b->F + (size_t)f];
    }
    b->n += np * G;
    return BASE_OK;
}

/* Move group src (G completions) to slot dst in every per-completion buffer. */
static void move_group(grpo_bufs *b, int dst, int src) {
    if (dst == src) return;
    int G = b->G;
    for (int g = 0; g < G; g++) {
        int d = dst * G + g, s = src * G + g;
        memcpy(b->pids + (size_t)d * (size_t)b->max_prompt, b->pids + (size_t)s * (size_t)b->max_prompt,
               (size_t)b->plen[s] * sizeof(int32_t));
        memcpy(b->cids + (size_t)d * (size_t)b->max_new, b->cids + (size_t)s * (size_t)b->max_new,
               (size_t)b->clen[s] * sizeof(int32_t));
        memcpy(b->samp_lp + (size_t)d * (size_t)b->max_new, b->samp_lp + (size_t)s * (size_t)b->max_new,
               (size_t)b->clen[s] * sizeof(float));
        memcpy(b->rewards + (size_t)d * (size_t)b->F, b->rewards + (size_t)s * (size_t)b->F, (size_t)b->F * sizeof(float));
        b->plen[d] = b->plen[s], b->clen[d] = b->clen[s], b->trunc[d] = b->trunc[s], b->rowidx[d] = b->rowidx[s];
        char *t = b->ptext[d];
        b->ptext[d] = b->ptext[s], b->ptext[s] = t;
        t = b->ctext[d];
        b->ctext[d] = b->ctext[s], b->ctext[s] = t;
    }
}

static void add_num(cJSON *o, const char *k, double v) {
    cJSON_AddItemToObject(o, k, isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull());
}

base_status run_stage_grpo(run_ctx *c, const cJSON *st, int index, const run_ckpt *resume) {
    const char *name = recipe_str(st, "name");
    grpo_config gc;
    base_status s = check_stage(st, &gc);
    if (s) return s;
    if (grpo_config_warning(&gc)) base_warn("stage '%s': %s", name, grpo_config_warning(&gc));
    grpo_bufs b;
    memset(&b, 0, sizeof b);
    b.G = (int)recipe_int(st, "num_generations");
    b.N = (int)recipe_int(st, "generation_batch_size");
    b.P = b.N / b.G;
    b.max_prompt = recipe_int(st, "max_prompt_length");
    b.max_new = recipe_int(st, "max_completion_length");
    b.mb = (int)recipe_int(st, "per_device_train_batch_size");
    if (b.mb <= 0 || b.mb > b.N) b.mb = b.N;
    b.max_tok = (int64_t)b.mb * (b.max_prompt + b.max_new);
    int64_t max_steps = recipe_int(st, "max_steps");
    int mu = gc.num_iterations, spg = gc.steps_per_generation;
    float T = (float)recipe_num(st, "temperature");

    cJSON **rows = NULL;
    char **where = NULL;
    int64_t nrows = 0;
    reward_pool *pool = NULL;
    run_gen gen;
    memset(&gen, 0, sizeof gen);
    model_train *tr = NULL, *tr_ref = NULL;
    model *ref = NULL;
    float *grads = NULL;
    optim opt;
    memset(&opt, 0, sizeof opt);
    cursor cur = {0};
    s = run_stage_rows(c, st, &rows, &where, &nrows);
    if (!s) s = run_reward_pool(c, st, &pool);
    if (!s) s = run_check_columns(pool, rows, where, nrows);
    if (!s) {
        b.F = reward_pool_n_funcs(pool);
        bufs_alloc(&b);
        s = run_gen_init(&gen, c, st, pool, b.P);
    }
    model_train_limits tl = {.max_tokens = b.max_tok, .max_seqs = b.mb, .recompute = recipe_bool(st, "gradient_checkpointing")};
    if (!s) s = model_train_new(c->policy, &tl, &tr);
    if (!s) {
        grads = model_grads_new(c->policy);
        s = run_optim_new(c, st, max_steps * mu * spg, grads, &opt);
    }
    if (!s && grpo_needs_ref_logp(&gc)) {
        const model_config *cfg = model_cfg(c->policy);
        s = model_init_random(cfg, c->ops, 0, 0.0f, &c->load, &ref);
        const char *ref_dir = recipe_str(c->root, "ref_model");
        if (!s) {
            if (resume && run_ckpt_state(resume)->stage_index == index && run_ckpt_has_ref(resume)) {
                s = run_ckpt_load_ref(resume, ref);
            } else if (ref_dir) { /* a separate reference checkpoint (same architecture) */
                model_free(ref);
                ref = NULL;
                char *p = recipe_resolve_path(c->rc, ref_dir);
                s = model_load(p, c->ops, &c->load, &ref);
                free(p);
                if (!s && model_numel(ref) != model_numel(c->policy))
                    s = base_err_set(BASE_ERR_INVALID, "ref_model %s: not the policy's architecture", ref_dir);
                if (s) s = base_err_wrap(s, "ref_model");
            } else {
                c->ops->copy(model_params(ref), model_params(c->policy), (size_t)model_numel(c->policy) * sizeof(float));
            }
            if (!s) model_sync_compute(ref); /* bf16 mode: its compute weights from the master copy */
        }
        if (!s) s = model_train_new(ref, &tl, &tr_ref);
    }
    /* resume inside this stage */
    int64_t step0 = 0;
    cur.nrows = nrows;
    cur.perm = base_xmalloc((size_t)(nrows > 0 ? nrows : 1) * sizeof(int64_t));
    cur.epoch = 0;
    cur.shuffle = recipe_bool(st, "shuffle_dataset");
    if (!s) cursor_order(&cur, c->seed, index);
    grpo_entropy_ctl ectl; /* adaptive entropy control (a no-op unless use_adaptive_entropy) */
    grpo_entropy_ctl_init(&gc, &ectl);
    if (!s && resume && run_ckpt_state(resume)->stage_index == index) {
        const run_train_state *rs = run_ckpt_state(resume);
        step0 = rs->stage_step;
        cur.epoch = rs->data_epoch;
        cur.pos = rs->data_pos;
        cursor_order(&cur, c->seed, index);
        s = run_ckpt_load_optim(resume, &opt);
        ectl.coef = rs->entropy_coef;
        ectl.last_entropy = rs->entropy_last;
    }
    int64_t keep_ckpt = recipe_int(st, "save_total_limit"), save_steps = recipe_int(st, "save_steps");
    int64_t log_every = recipe_int(st, "log_completions_steps");
    int dyn = recipe_bool(st, "dynamic_sampling");
    int64_t logging_steps = recipe_int(st, "logging_steps");
    int sync_ref = recipe_bool(st, "sync_ref_model") && ref;
    int64_t sync_steps = recipe_int(st, "ref_model_sync_steps");
    float mixup = (float)recipe_num(st, "ref_model_mixup_alpha");
    int64_t max_rounds = recipe_int(st, "max_resample_rounds");
    float *weights = base_xmalloc((size_t)(b.F > 0 ? b.F : 1) * sizeof(float));
    for (int f = 0; f < b.F; f++) weights[f] = (float)reward_pool_func_weight(pool, f);
    uint8_t *keep = base_xmalloc((size_t)b.P + 1);
    base_progress prog;
    if (!s && !c->opts.quiet) base_progress_start(&prog, name, max_steps);
    int64_t step = step0;
    for (; step < max_steps && !s && !c->stop_requested; step++) {
        double t_step = base_now(), t_roll = 0, t_rew = 0;
        int64_t new_tokens = 0;
        b.n = 0;
        /* generation (with dynamic sampling: keep only informative groups) */
        int64_t rounds = 0, dropped = 0;
        for (;;) {
            int need = (b.N - b.n) / b.G;
            s = generate_round(c, index, &b, &gen, rows, where, &cur, need, (uint32_t)rounds, &new_tokens, &t_roll,
                               &t_rew);
            if (s || !dyn) break;
            int first = (b.n / b.G) - need;
            int64_t n_kept, n_refill;
            s = grpo_filter_groups(b.rewards + (size_t)first * b.G * b.F, (int64_t)need * b.G, b.F, weights, b.G, -1,
                                   need, keep, &n_kept, &n_refill);
            if (s) break;
            int k = first;
            for (int gi = 0; gi < need; gi++)
                if (keep[gi]) move_group(&b, k++, first + gi);
            dropped += need - (k - first);
            b.n = k * b.G;
            rounds++;
            if (b.n == b.N || rounds > max_rounds) break;
        }
        if (s) break;
        if (b.n == 0) { /* dynamic sampling found nothing to learn from */
            cJSON *line = cJSON_CreateObject();
            cJSON_AddStringToObject(line, "stage", name);
            cJSON_AddNumberToObject(line, "step", (double)(step + 1));
            cJSON_AddNumberToObject(line, "skipped", 1);
            cJSON_AddNumberToObject(line, "frac_reward_zero_std", 1);
            run_metrics_write(c, line);
            c->total_steps++;
            continue;
        }
        grpo_reward_stats rst;
        s = grpo_advantages(&gc, b.rewards, b.n, b.F, weights, b.G, b.adv, b.total, &rst);
        if (s) break;
        /* training: the batch in training order (shuffled when it is split
         * into steps_per_generation optimizer steps, as TRL shuffles) */
        double t_train0 = base_now();
        for (int j = 0; j < b.n; j++) b.ord[j] = j;
        if (spg > 1) {
            int64_t *perm = base_xmalloc((size_t)b.n * sizeof(int64_t));
            run_shuffle(c->seed, 0x9000u + (uint32_t)index, c->total_steps, b.n, perm);
            for (int j = 0; j < b.n; j++) b.ord[j] = (int)perm[j];
            free(perm);
        }
        /* the policy before this batch's first update: the ratio's old
         * policy, and the importance-sampling correction's trainer side */
        int need_old = grpo_needs_old_logp(&gc) || gc.importance_sampling_correction;
        grpo_is_stats ist = {0};
        if (need_old) {
            for (int j0 = 0; j0 < b.n && !s; j0 += b.mb) {
                int nm = j0 + b.mb < b.n ? b.mb : b.n - j0;
                model_batch mbt;
                grpo_batch gb;
                pack_micro(&b, b.ord + j0, nm, &mbt, &gb);
                mbt.logit_scale = 1.0f / T;
                s = model_forward(tr, &mbt);
                if (s) break;
                model_train_download(tr, b.lp_pos, NULL);
                int64_t pos = 0;
                for (int k = 0; k < nm; k++) {
                    int j = b.ord[j0 + k];
                    memcpy(b.old_lp + (size_t)j * (size_t)b.max_new, b.lp_pos + pos + b.plen[j] - 1,
                           (size_t)b.clen[j] * sizeof(float));
                    pos += b.plen[j] + b.clen[j];
                }
            }
            if (s) break;
            if (gc.importance_sampling_correction &&
                (s = grpo_is_correction(&gc, b.n, b.max_new, b.clen, NULL, b.trunc, b.old_lp, b.samp_lp, b.isr, &ist)))
                break;
        }
        grpo_loss_stats lstats;
        grpo_loss_stats_init(&lstats);
        optim_step_info info = {0};
        for (int it = 0; it < mu && !s; it++)
            for (int part = 0; part < spg && !s; part++) {
                int lo, hi;
                part_range(b.n, spg, part, &lo, &hi);
                if (hi <= lo) continue;
                grpo_config gcs = gc; /* this optimizer step's entropy coefficient */
                gcs.entropy_coef = grpo_entropy_ctl_apply(&gc, &ectl);
                grpo_loss_stats ostats; /* this optimizer step's, for the entropy control */
                grpo_loss_stats_init(&ostats);
                /* the step-wide counts of this optimizer step */
                grpo_norm norm = {.n_seqs = hi - lo, .n_tokens = 0, .n_micro = (hi - lo + b.mb - 1) / b.mb};
                for (int j0 = lo; j0 < hi; j0 += b.mb) {
                    model_batch mbt;
                    grpo_batch gb;
                    pack_micro(&b, b.ord + j0, j0 + b.mb < hi ? b.mb : hi - j0, &mbt, &gb);
                    norm.n_tokens += grpo_count_loss_tokens(&gc, &gb);
                }
                optim_zero_grad(&opt);
                for (int j0 = lo; j0 < hi && !s; j0 += b.mb) {
                    int nm = j0 + b.mb < hi ? b.mb : hi - j0;
                    const int *ix = b.ord + j0;
                    model_batch mbt;
                    grpo_batch gb;
                    pack_micro(&b, ix, nm, &mbt, &gb);
                    mbt.logit_scale = 1.0f / T;
                    s = model_forward(tr, &mbt);
                    if (s) break;
                    model_train_download(tr, b.lp_pos, b.ent_pos);
                    gather(&b, ix, nm, b.lp_pos, b.lp);
                    gather(&b, ix, nm, b.ent_pos, b.ent);
                    gb.logp = b.lp;
                    gb.entropy = b.ent;
                    if (need_old) {
                        int64_t t = 0;
                        for (int k = 0; k < nm; k++) {
                            memcpy(b.old + t, b.old_lp + (size_t)ix[k] * (size_t)b.max_new,
                                   (size_t)b.clen[ix[k]] * sizeof(float));
                            t += b.clen[ix[k]];
                        }
                        gb.old_logp = b.old;
                    }
                    if (gc.importance_sampling_correction) {
                        int64_t t = 0;
                        for (int k = 0; k < nm; k++) {
                            size_t row = (size_t)ix[k] * (size_t)b.max_new, n = (size_t)b.clen[ix[k]];
                            memcpy(b.is + t, b.isr + row, n * sizeof(float));
                            memcpy(b.samp + t, b.samp_lp + row, n * sizeof(float));
                            t += b.clen[ix[k]];
                        }
                        gb.is_ratio = b.is;
                        gb.sampling_logp = b.samp;
                    }
                    if (tr_ref) {
                        s = model_forward(tr_ref, &mbt);
                        if (s) break;
                        model_train_download(tr_ref, b.ref_pos, NULL);
                        gather(&b, ix, nm, b.ref_pos, b.ref);
                        gb.ref_logp = b.ref;
                    }
                    grpo_loss_stats ls;
                    s = grpo_loss(&gcs, &gb, &norm, b.g, b.gent, &ls);
                    if (s) break;
                    grpo_loss_stats_merge(&lstats, &ls);
                    grpo_loss_stats_merge(&ostats, &ls);
                    scatter(&b, ix, nm, b.g, b.g_pos);
                    scatter(&b, ix, nm, b.gent, b.gent_pos);
                    model_backward(tr, b.g_pos, b.gent_pos, grads);
                }
                if (s) break;
                optim_step(&opt, (step * mu + it) * spg + part, &info);
                model_sync_compute(c->policy); /* bf16 mode: refresh the compute weights */
                grpo_entropy_ctl_update(&gc, &ectl, &ostats);
            }
        if (s) break;
        c->total_steps++;
        double t_train = base_now() - t_train0, step_time = base_now() - t_step;
        /* metrics */
        grpo_loss_metrics lm;
        grpo_loss_metrics_finish(&lstats, &lm);
        int64_t lens[1024];
        int64_t *lenp = b.n <= 1024 ? lens : base_xmalloc((size_t)b.n * sizeof(int64_t));
        for (int j = 0; j < b.n; j++) lenp[j] = b.clen[j];
        grpo_completion_stats cs;
        grpo_completion_stats_compute(lenp, b.trunc, b.n, &cs);
        if (lenp != lens) free(lenp);
        cJSON *line = cJSON_CreateObject();
        cJSON_AddStringToObject(line, "stage", name);
        cJSON_AddNumberToObject(line, "step", (double)(step + 1));
        cJSON_AddNumberToObject(line, "global_step", (double)c->total_steps);
        add_num(line, "reward", rst.reward);
        add_num(line, "reward_std", rst.reward_std);
        for (int f = 0; f < b.F; f++) {
            char key[200];
            snprintf(key, sizeof key, "rewards/%s", reward_pool_func_name(pool, f));
            add_num(line, key, rst.func_mean[f]);
            snprintf(key, sizeof key, "rewards/%s/std", reward_pool_func_name(pool, f));
            add_num(line, key, rst.func_std[f]);
        }
        add_num(line, "frac_reward_zero_std", rst.frac_reward_zero_std);
        add_num(line, "completion_length", cs.mean_length);
        add_num(line, "completions/min_length", cs.min_length);
        add_num(line, "completions/max_length", cs.max_length);
        add_num(line, "completions/clipped_ratio", cs.clipped_ratio);
        add_num(line, "loss", lm.loss);
        if (gc.beta != 0) add_num(line, "kl", lm.kl);
        add_num(line, "entropy", lm.entropy);
        if (gc.entropy_coef != 0 || gc.use_adaptive_entropy) add_num(line, "entropy_coef", ectl.coef);
        if (!isnan(lm.clip_ratio_low_mean)) { /* the clip-family loss types */
            add_num(line, "clip_ratio/low", lm.clip_ratio_low_mean);
            add_num(line, "clip_ratio/high", lm.clip_ratio_high_mean);
            add_num(line, "clip_ratio/region", lm.clip_ratio_region_mean);
        }
        if (!isnan(lm.cispo_clip_ratio)) add_num(line, "cispo_clip_ratio", lm.cispo_clip_ratio);
        if (gc.importance_sampling_correction) {
            add_num(line, "sampling/sampling_logp_difference/mean", ist.logp_diff_mean);
            add_num(line, "sampling/sampling_logp_difference/max", ist.logp_diff_max);
            add_num(line, "sampling/importance_sampling_ratio/min", ist.ratio_min);
            add_num(line, "sampling/importance_sampling_ratio/mean", ist.ratio_mean);
            add_num(line, "sampling/importance_sampling_ratio/max", ist.ratio_max);
        }
        if (!isnan(lm.vespo_phi_seq_mean)) add_num(line, "vespo/phi_seq_mean", lm.vespo_phi_seq_mean);
        add_num(line, "grad_norm", info.grad_norm);
        add_num(line, "lr", info.lr);
        if (info.skipped) cJSON_AddNumberToObject(line, "update_skipped", 1);
        if (dyn) {
            cJSON_AddNumberToObject(line, "dynamic_sampling/rounds", (double)rounds);
            cJSON_AddNumberToObject(line, "dynamic_sampling/dropped_groups", (double)dropped);
        }
        add_num(line, "tokens_per_s", t_roll > 0 ? (double)new_tokens / t_roll : 0);
        add_num(line, "step_time", step_time);
        add_num(line, "time/rollout", t_roll);
        add_num(line, "time/reward", t_rew);
        add_num(line, "time/train", t_train);
        if (logging_steps <= 1 || (step + 1) % logging_steps == 0 || step + 1 == max_steps)
            run_metrics_write(c, line);
        else
            cJSON_Delete(line);
        /* TR-DPO reference refresh (TRL sync_ref_model):
         * ref = alpha * policy + (1 - alpha) * ref every ref_model_sync_steps */
        if (sync_ref && sync_steps > 0 && (step + 1) % sync_steps == 0) {
            tensor tr_ = tensor_1d(model_params(ref), TENSOR_F32, model_numel(ref));
            tensor tp_ = tensor_1d(model_params(c->policy), TENSOR_F32, model_numel(c->policy));
            tr_.device = tp_.device = c->ops->device;
            c->ops->scale(&tr_, &tr_, 1.0f - mixup);
            c->ops->axpy(&tr_, &tp_, mixup);
            model_sync_compute(ref);
        }
        if (log_every > 0 && (step + 1) % log_every == 0) {
            for (int j = 0; j < b.n; j++) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "stage", name);
                cJSON_AddNumberToObject(o, "step", (double)(step + 1));
                cJSON_AddStringToObject(o, "prompt", b.ptext[j]);
                cJSON_AddStringToObject(o, "completion", b.ctext[j]);
                add_num(o, "reward", b.total[j]);
                cJSON *rw = cJSON_AddObjectToObject(o, "rewards");
                for (int f = 0; f < b.F; f++) add_num(rw, reward_pool_func_name(pool, f), b.rewards[(size_t)j * b.F + f]);
                add_num(o, "advantage", b.adv[j]);
                cJSON_AddStringToObject(o, "finish_reason", b.trunc[j] ? "length" : "stop");
                run_samples_write(c, o);
            }
        }
        if (!c->opts.quiet)
            base_progress_update(&prog, step + 1, "reward %.3f len %.1f tok/s %.0f", rst.reward, cs.mean_length,
                                 t_roll > 0 ? (double)new_tokens / t_roll : 0);
        if (c->opts.max_total_steps > 0 && c->total_steps >= c->opts.max_total_steps) c->stop_requested = 1;
        int last = step + 1 == max_steps;
        if ((save_steps > 0 && (step + 1) % save_steps == 0) || last || c->stop_requested) {
            run_train_state rs = {.stage_index = index, .stage_done = last, .stage_step = step + 1,
                                  .total_steps = c->total_steps, .data_epoch = cur.epoch, .data_pos = cur.pos,
                                  .entropy_coef = ectl.coef, .entropy_last = ectl.last_entropy};
            snprintf(rs.stage_name, sizeof rs.stage_name, "%s", name);
            s = run_ckpt_save(c, &rs, &opt, ref, (int)keep_ckpt);
        }
    }
    if (!c->opts.quiet && gen.eng) base_progress_finish(&prog);
    free(weights), free(keep), free(cur.perm);
    if (b.pids) bufs_free(&b);
    optim_free(&opt);
    if (grads) c->ops->free(grads);
    model_train_free(tr);
    model_train_free(tr_ref);
    model_free(ref);
    run_gen_free(&gen);
    reward_pool_destroy(pool);
    free(rows);
    run_where_free(where, nrows);
    return s ? base_err_wrap(s, "stage '%s'", name) : BASE_OK;
}

base_status run_optim_new(run_ctx *c, const cJSON *st, int64_t max_steps, float *grads, optim *o) {
    optim_config oc;
    optim_config_default(&oc);
    oc.learning_rate = recipe_num(st, "learning_rate");
    oc.adam_beta1 = recipe_num(st, "adam_beta1");
    oc.adam_beta2 = recipe_num(st, "adam_beta2");
    oc.adam_epsilon = recipe_num(st, "adam_epsilon");
    oc.weight_decay = recipe_num(st, "weight_decay");
    oc.max_grad_norm = recipe_num(st, "max_grad_norm");
    oc.warmup_steps = recipe_int(st, "warmup_steps");
    oc.warmup_ratio = recipe_num(st, "warmup_ratio");
    oc.max_steps = max_steps;
    oc.offload_optimizer = recipe_bool(st, "offload_optimizer");
    base_status s = optim_sched_parse(recipe_str(st, "lr_scheduler_type"), &oc.lr_scheduler_type);
    if (s) return s;
    int n = model_nparams(c->policy), k = 0;
    optim_param_spec *specs = base_xcalloc((size_t)n, sizeof *specs);
    for (int i = 0; i < n; i++) {
        const model_param *p = model_param_at(c->policy, i);
        if (!p->trainable || p->mtp) continue;
        specs[k++] = (optim_param_spec){p->name, p->numel, p->offset};
    }
    s = optim_init_arena(o, c->ops, &oc, specs, k, NULL, model_params(c->policy), grads, model_numel(c->policy));
    free(specs);
    return s;
}
