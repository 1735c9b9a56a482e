/*
 * The GRPO stage, a loop of steps over the stage's typed options
 * (recipe_grpo_cfg, checked by the recipe). One step:
 *
 *   generate_and_score
 *     P = generation_batch_size / G prompts from the shuffled dataset
 *     --rollout--> G completions each (sampling log-probs recorded)
 *     --reward pool--> rewards [N, F] (nil = NaN)
 *     (dynamic sampling: drop groups whose rewards are all equal, generate
 *      more groups, up to max_resample_rounds)
 *   advantages   --grpo_advantages--> A [N]
 *   train        num_iterations times, steps_per_generation optimizer
 *                steps: per micro-batch of completions, the policy's
 *                training forward (logits / temperature, as the sampler),
 *                the reference's forward when beta != 0, grpo_loss,
 *                backward; then one AdamW step
 *   log          a metrics.jsonl line; samples.jsonl every
 *                log_completions_steps; the reference refresh
 *                (sync_ref_model); a checkpoint every save_steps and at the
 *                end of the stage.
 *
 * Sequence j of a micro-batch is its prompt followed by its completion;
 * completion token k of j is predicted at position P_j - 1 + k, so the
 * model's per-position log-prob there is the token's log-prob.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grpo_bufs.h"
#include "run_internal.h"

/* Completions of optimizer step `part` of `spg`: ord[lo, hi). */
static void part_range(int n, int spg, int part, int *lo, int *hi) {
    *lo = (int)((int64_t)n * part / spg);
    *hi = (int)((int64_t)n * (part + 1) / spg);
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
        const rollout_completion *co = &gen->out[i];
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

static void add_num(cJSON *o, const char *k, double v) {
    cJSON_AddItemToObject(o, k, isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull());
}

/* ---- the stage ------------------------------------------------------------ */

/* Everything one run of the stage holds, set up by stage_open. */
typedef struct {
    run_ctx *c;
    const recipe_stage_cfg *st;
    const recipe_grpo_cfg *cfg; /* the stage's options (checked by the recipe) */
    const grpo_config *gc;      /* cfg->loss: the loss configuration */
    int index;                  /* the stage's position */
    int mu, spg;                /* num_iterations, steps_per_generation */
    float T;                    /* temperature: the training forward scales logits by 1/T, as the sampler */
    grpo_bufs b;
    cJSON **rows;               /* the stage's prompts (borrowed from the datasets) */
    char **where;
    int64_t nrows;
    reward_pool *pool;
    run_gen gen;
    model_train *tr, *tr_ref;   /* policy / reference (beta != 0) training passes */
    int ref_in_policy;          /* LoRA with beta != 0: the reference pass is tr with the adapter off */
    int64_t peak_release;       /* ZeRO 3 on the CPU: the peak from the opening to the arena's release */
    int whole_open;             /* ZeRO 3: the policy came whole and the opening released it */
    model *ref;
    float *grads;
    optim opt;
    run_moe moe;                /* expert loads and the router bias step (run_moe.c) */
    cursor cur;
    grpo_entropy_ctl ectl;      /* adaptive entropy control (a no-op unless use_adaptive_entropy) */
    run_reward_parts parts;     /* the step's reward parts (kept completions) */
    float *weights;             /* [F] reward weights */
    uint8_t *keep;              /* [P] dynamic sampling: groups kept */
    int64_t step0;              /* first step to run (resume) */
    base_progress prog;
    int prog_on;
} grpo_stage;

/* What one step measured, for its metrics line. */
typedef struct {
    double t_step, t_roll, t_rew, t_train; /* start time; seconds rolling out, scoring, training */
    int64_t new_tokens;
    int64_t rounds, dropped;               /* dynamic sampling: generation rounds, groups dropped */
    grpo_reward_stats rst;
    grpo_loss_stats lstats;
    grpo_is_stats ist;
    optim_step_info info;
} grpo_step;

/* The reference model: the checkpoint's when resuming inside this stage,
 * else ref_model, else a copy of the policy; of a policy the run holds
 * sharded (ZeRO 3), no whole copy exists: the files it was loaded from when
 * nothing trained it since, else its units gathered one by one
 * (run_zero3_copy_to). */
static base_status open_ref(grpo_stage *g, const run_ckpt *resume, const model_train_limits *tl) {
    run_ctx *c = g->c;
    const model_config *mc = model_cfg(c->policy);
    /* frozen: compute weights only (no f32 master copy in bf16 mode; in f32
     * the f32 weights, as before) */
    model_load_opts lo = c->load;
    lo.frozen = 1;
    const char *ref_dir = c->cfg->ref_model;
    int in_ckpt = resume && run_ckpt_state(resume)->stage_index == g->index && run_ckpt_has_ref(resume);
    int sharded = model_arena_released(c->policy);
    /* read from files whole (made by model_load), or filled in place */
    int from_files = !in_ckpt && (ref_dir || (sharded && c->policy_on_disk));
    base_status s = from_files ? BASE_OK : model_init_random(mc, c->ops, 0, 0.0f, &lo, &g->ref);
    if (!s) {
        if (in_ckpt) {
            s = run_ckpt_load_ref(resume, g->ref);
        } else if (ref_dir) { /* a separate reference checkpoint (same architecture) */
            char *p = recipe_resolve_path(c->rc, ref_dir);
            s = model_load(p, c->ops, &lo, &g->ref);
            free(p);
            if (!s && model_numel(g->ref) != model_numel(c->policy))
                s = base_err_set(BASE_ERR_INVALID, "ref_model %s: not the policy's architecture", ref_dir);
            if (s) s = base_err_wrap(s, "ref_model");
        } else if (sharded && c->policy_on_disk) { /* ZeRO 3: the policy's files read again, as frozen */
            s = model_load(c->policy_src, c->ops, &lo, &g->ref);
            if (s) s = base_err_wrap(s, "the reference model (ZeRO 3: read from %s)", c->policy_src);
        } else if (sharded) { /* ZeRO 3, trained since it was loaded: gathered unit by unit */
            s = run_zero3_copy_to(c, g->ref);
        } else {
            s = model_copy_weights(g->ref, c->policy);
        }
    }
    if (!s) s = model_train_new(g->ref, tl, &g->tr_ref);
    return s;
}

/* Data, rewards, buffers, rollout engine, trainer, optimizer, reference and
 * (resuming inside this stage) the saved state. On error the caller still
 * calls stage_close. */
static base_status stage_open(grpo_stage *g, run_ctx *c, const recipe_stage_cfg *st, const run_ckpt *resume) {
    memset(g, 0, sizeof *g);
    g->c = c;
    g->st = st;
    g->cfg = &st->grpo;
    if (c->ops->device == TENSOR_CPU) ops_cpu_reset_peak(); /* this stage's peak (record_peak) */
    g->gc = &st->grpo.loss;
    g->index = st->index;
    g->mu = g->gc->num_iterations;
    g->spg = g->gc->steps_per_generation;
    g->T = (float)g->cfg->gen.temperature;
    if (grpo_config_warning(g->gc)) base_warn("stage '%s': %s", st->name, grpo_config_warning(g->gc));
    grpo_bufs *b = &g->b;
    b->G = (int)g->cfg->gen.num_generations;
    b->N = (int)g->cfg->generation_batch_size;
    b->P = b->N / b->G;
    b->max_prompt = g->cfg->gen.max_prompt_length;
    b->max_new = g->cfg->gen.max_completion_length;
    b->mb = (int)g->cfg->per_device_train_batch_size;
    if (b->mb <= 0 || b->mb > b->N) b->mb = b->N;
    b->max_tok = (int64_t)b->mb * (b->max_prompt + b->max_new);

    base_status s = run_stage_rows(c, st, &g->rows, &g->where, &g->nrows);
    /* buffers and the trainer planned by the longest prompt of the data */
    if (!s) s = run_stage_prompt_tokens(c, st, b->max_prompt, &b->max_prompt);
    b->max_tok = (int64_t)b->mb * (b->max_prompt + b->max_new);
    if (!s) s = run_reward_pool(c, st, &g->pool);
    if (!s) s = run_check_columns(g->pool, g->rows, g->where, g->nrows);
    if (!s) {
        b->F = reward_pool_n_funcs(g->pool);
        grpo_bufs_alloc(b);
        run_reward_parts_init(&g->parts, b->F);
    }
    model_train_limits tl = {.max_tokens = b->max_tok, .max_seqs = b->mb,
                             .recompute = g->cfg->train.gradient_checkpointing};
    if (!s) {
        g->grads = run_policy_grads(c, &g->cfg->train);
        s = run_optim_new(c, &g->cfg->train, g->cfg->max_steps * g->mu * g->spg, g->grads, &g->opt);
    }
    if (!s) s = run_moe_init(c, &g->cfg->train, &g->moe);
    if (!s && grpo_needs_ref_logp(g->gc)) {
        if (c->lora) { /* the reference is the base: the policy's model and arena with the adapter off */
            g->ref_in_policy = 1;
        } else {
            s = open_ref(g, resume, &tl);
        }
    }
    /* the data cursor, and the state a checkpoint of this stage restores */
    cursor *cur = &g->cur;
    cur->nrows = g->nrows;
    cur->perm = base_xmalloc((size_t)(g->nrows > 0 ? g->nrows : 1) * sizeof(int64_t));
    cur->shuffle = g->cfg->shuffle_dataset;
    if (!s) cursor_order(cur, c->seed, g->index);
    grpo_entropy_ctl_init(g->gc, &g->ectl);
    if (!s && resume && run_ckpt_state(resume)->stage_index == g->index) {
        const run_train_state *rs = run_ckpt_state(resume);
        g->step0 = rs->stage_step;
        cur->epoch = rs->data_epoch;
        cur->pos = rs->data_pos;
        cursor_order(cur, c->seed, g->index);
        s = run_zero_ep_params(c) ? run_ckpt_load_optim_ep(c, resume, &g->opt) /* ZeRO 2 / 3 with EP */
                                  : run_ckpt_load_optim(resume, c->lora ? NULL : c->policy, &g->opt);
        g->ectl.coef = rs->entropy_coef;
        g->ectl.last_entropy = rs->entropy_last;
    }
    if (!s) { /* the device memory of this stage by role, from the sizing it was allocated with */
        run_grpo_shape sh = {.load = c->load, .device = c->ops->device,
                             .lora = c->lora ? model_lora_cfg(c->lora) : NULL,
                             .num_generations = b->G, .prompts = b->P, .max_prompt = b->max_prompt,
                             .max_completion = b->max_new, .micro_batch = b->mb, .recompute = tl.recompute,
                             .ref = grpo_needs_ref_logp(g->gc), .world = c->world,
                             .zero_stage = (int)g->cfg->train.zero_stage, .ep = c->ep,
                             .whole_at_open = !model_arena_released(c->policy)};
        /* rank 0's, and every rank's (they differ by the ZeRO shard) */
        cJSON *sum = cJSON_CreateObject(), *ranks = cJSON_AddArrayToObject(sum, "memory_plan_ranks");
        for (int r = 0; r < c->world && !s; r++) {
            run_grpo_mem mem;
            sh.rank = r;
            s = run_grpo_memory(model_cfg(c->policy), &sh, &mem);
            if (!s) cJSON_AddItemToArray(ranks, run_grpo_memory_json(&mem));
            if (!s && r == 0) cJSON_AddItemToObject(sum, "memory_plan", run_grpo_memory_json(&mem));
        }
        if (!s) s = run_summary_set(c, st->name, sum);
        else cJSON_Delete(sum);
    }
    if (!s && g->cfg->train.zero_stage == 3 && g->cfg->sync_ref_model)
        s = base_err_set(BASE_ERR_UNSUPPORTED, "sync_ref_model with zero_stage = 3: the reference mix reads the whole "
                         "policy, which stage 3 shards (zero_stage <= 2)");
    if (!s && g->cfg->train.zero_stage == 3) { /* the policy's arena released: each rank keeps its shard */
        g->whole_open = !model_arena_released(c->policy); /* else: held sharded already, nothing to release */
        if (c->ops->device == TENSOR_CPU && g->whole_open) g->peak_release = (int64_t)ops_cpu_peak_allocated();
        s = run_zero3_begin(c);
        if (!s && c->ops->device == TENSOR_CPU) ops_cpu_reset_peak(); /* the stage's peak, without the arena */
    }
    /* the rollout engine and the trainer read the policy's layout only: made
     * after a stage-3 release, they are never allocated beside the arena */
    if (!s) {
        s = run_gen_init(&g->gen, c, st, &g->cfg->gen, g->pool, b->P);
        g->gen.step_batches = 1; /* the error policy's batch is the step (generate_and_score) */
    }
    if (!s) s = model_train_new(c->policy, &tl, &g->tr);
    g->weights = base_xmalloc((size_t)(b->F > 0 ? b->F : 1) * sizeof(float));
    for (int f = 0; f < b->F; f++) g->weights[f] = (float)reward_pool_func_weight(g->pool, f);
    g->keep = base_xmalloc((size_t)b->P + 1);
    if (!s && !c->opts.quiet) {
        base_progress_start(&g->prog, st->name, g->cfg->max_steps);
        g->prog_on = 1;
    }
    return s;
}

static void stage_close(grpo_stage *g) {
    if (g->prog_on) base_progress_finish(&g->prog);
    free(g->weights), free(g->keep), free(g->cur.perm);
    if (g->b.pids) grpo_bufs_free(&g->b);
    run_optim_free(g->c, &g->opt);
    run_moe_free(&g->moe);
    if (g->grads) g->c->ops->free(g->grads);
    model_train_free(g->tr);
    model_train_free(g->tr_ref);
    model_free(g->ref);
    run_gen_free(&g->gen);
    run_reward_parts_free(&g->parts);
    reward_pool_destroy(g->pool);
    free(g->rows);
    run_where_free(g->where, g->nrows);
}

/* The reward parts of the round's groups [0, n) that the step keeps
 * (keep NULL: all), for the step's means. */
static void add_parts(grpo_stage *g, int n, const uint8_t *keep) {
    for (int gi = 0; gi < n; gi++)
        for (int k = 0; k < g->b.G && (!keep || keep[gi]); k++)
            run_reward_parts_add(&g->parts, &g->gen.sc, (int64_t)gi * g->b.G + k);
}

/* generate -> score: the step's N completions with their rewards in the
 * bufs (b.n of them). With dynamic sampling, groups whose rewards are all
 * equal are dropped and more are generated, up to max_resample_rounds
 * extra rounds; b.n may end below N, or 0. */
static base_status generate_and_score(grpo_stage *g, grpo_step *ss) {
    grpo_bufs *b = &g->b;
    int dyn = g->cfg->dynamic_sampling;
    base_status s = BASE_OK;
    run_ep_test_phase(g->c, "rollout");
    b->n = 0;
    run_reward_parts_reset(&g->parts);
    for (;;) {
        int need = (b->N - b->n) / b->G;
        s = generate_round(g->c, g->index, b, &g->gen, g->rows, g->where, &g->cur, need, (uint32_t)ss->rounds,
                           &ss->new_tokens, &ss->t_roll, &ss->t_rew);
        if (s) break;
        if (!dyn) {
            add_parts(g, need, NULL);
            break;
        }
        int first = (b->n / b->G) - need;
        int64_t n_kept, n_refill;
        s = grpo_filter_groups(b->rewards + (size_t)first * b->G * b->F, (int64_t)need * b->G, b->F, g->weights, b->G,
                               -1, need, g->keep, &n_kept, &n_refill);
        if (s) break;
        add_parts(g, need, g->keep);
        int k = first;
        for (int gi = 0; gi < need; gi++)
            if (g->keep[gi]) grpo_bufs_move_group(b, k++, first + gi);
        ss->dropped += need - (k - first);
        b->n = k * b->G;
        ss->rounds++;
        if (b->n == b->N || ss->rounds > g->cfg->max_resample_rounds) break;
    }
    /* every completion scored in the step (dropped groups included) counts
     * for the reward error policy, before anything is trained on them */
    if (!s) s = run_reward_errors_close(&g->gen.errs, g->pool, "step");
    return s;
}

/* The policy's per-token log-probs of every completion before the batch's
 * first update (the ratio's old policy, the importance-sampling
 * correction's trainer side), and that correction. */
static base_status old_logprobs(grpo_stage *g, grpo_step *ss) {
    grpo_bufs *b = &g->b;
    run_ctx *c = g->c;
    base_status s = BASE_OK;
    /* this rank's share of the batch (in training order), then every
     * rank's shared, so the correction below sees the whole batch */
    int64_t lo, hi, done = 0;
    run_split(b->n, c->rank, c->world, &lo, &hi);
    run_zero3_phase(c); /* ZeRO 3: the ranks' forwards differ in number (run_zero3_sync below) */
    for (int j0 = (int)lo; j0 < hi && !s; j0 += b->mb, done++) {
        int nm = j0 + b->mb < hi ? b->mb : (int)hi - j0;
        model_batch mbt;
        grpo_batch gb;
        grpo_bufs_pack(b, b->ord + j0, nm, &mbt, &gb);
        mbt.logit_scale = 1.0f / g->T;
        s = model_forward(g->tr, &mbt);
        if (s) break;
        model_train_download(g->tr, b->lp_pos, NULL);
        int64_t pos = 0;
        for (int k = 0; k < nm; k++) {
            int j = b->ord[j0 + k];
            memcpy(b->old_lp + (size_t)j * (size_t)b->max_new, b->lp_pos + pos + b->plen[j] - 1,
                   (size_t)b->clen[j] * sizeof(float));
            pos += b->plen[j] + b->clen[j];
        }
    }
    s = run_ep_pass_failed(c, s, "the old policy's log-probs");
    /* EP: the forwards of ranks with more passes joined with zero-row ones */
    if (!s) s = run_ep_join_forwards(c, g->tr, run_ep_passes(c, b->n, b->mb) - done);
    base_status zs = run_zero3_sync(c); /* ZeRO 3: forwards of ranks with fewer rows padded */
    if (!s) s = zs;
    s = run_agree(c, s, "the old policy's log-probs");
    if (!s) s = run_share_rows(c, b->old_lp, b->max_new, b->clen, b->ord, b->n);
    if (!s && g->gc->importance_sampling_correction)
        s = grpo_is_correction(g->gc, b->n, b->max_new, b->clen, NULL, b->trunc, b->old_lp, b->samp_lp, b->isr,
                               &ss->ist);
    return s;
}

/* One micro-batch ix[0..nm) of an optimizer step: forward(s), GRPO loss,
 * backward (gradients accumulate). */
static base_status train_micro(grpo_stage *g, const grpo_config *gcs, const grpo_norm *norm, const int *ix, int nm,
                               int need_old, grpo_loss_stats *lstats, grpo_loss_stats *ostats) {
    grpo_bufs *b = &g->b;
    model_batch mbt;
    grpo_batch gb;
    grpo_bufs_pack(b, ix, nm, &mbt, &gb);
    mbt.logit_scale = 1.0f / g->T;
    base_status s = BASE_OK;
    if (g->ref_in_policy) { /* LoRA: the reference is the base, in the policy's arena, before its forward */
        model_train_set_adapter(g->tr, 0);
        s = model_forward(g->tr, &mbt);
        if (!s) model_train_download(g->tr, b->ref_pos, NULL);
        model_train_set_adapter(g->tr, 1);
        if (s) return s;
        grpo_bufs_gather(b, ix, nm, b->ref_pos, b->ref);
    }
    s = model_forward(g->tr, &mbt);
    if (s) return s;
    run_moe_add(&g->moe, g->tr, nm);
    model_train_download(g->tr, b->lp_pos, b->ent_pos);
    grpo_bufs_gather(b, ix, nm, b->lp_pos, b->lp);
    grpo_bufs_gather(b, ix, nm, b->ent_pos, b->ent);
    gb.logp = b->lp;
    gb.entropy = b->ent;
    if (need_old) {
        int64_t t = 0;
        for (int k = 0; k < nm; k++) {
            memcpy(b->old + t, b->old_lp + (size_t)ix[k] * (size_t)b->max_new, (size_t)b->clen[ix[k]] * sizeof(float));
            t += b->clen[ix[k]];
        }
        gb.old_logp = b->old;
    }
    if (g->gc->importance_sampling_correction) {
        int64_t t = 0;
        for (int k = 0; k < nm; k++) {
            size_t row = (size_t)ix[k] * (size_t)b->max_new, n = (size_t)b->clen[ix[k]];
            memcpy(b->is + t, b->isr + row, n * sizeof(float));
            memcpy(b->samp + t, b->samp_lp + row, n * sizeof(float));
            t += b->clen[ix[k]];
        }
        gb.is_ratio = b->is;
        gb.sampling_logp = b->samp;
    }
    if (g->tr_ref) {
        s = model_forward(g->tr_ref, &mbt);
        if (s) return s;
        model_train_download(g->tr_ref, b->ref_pos, NULL);
        grpo_bufs_gather(b, ix, nm, b->ref_pos, b->ref);
    }
    if (g->tr_ref || g->ref_in_policy) gb.ref_logp = b->ref;
    grpo_loss_stats ls;
    s = grpo_loss(gcs, &gb, norm, b->g, b->gent, &ls);
    if (s) return s;
    grpo_loss_stats_merge(lstats, &ls);
    grpo_loss_stats_merge(ostats, &ls);
    grpo_bufs_scatter(b, ix, nm, b->g, b->g_pos);
    grpo_bufs_scatter(b, ix, nm, b->gent, b->gent_pos);
    return run_backward(g->c, g->tr, b->g_pos, b->gent_pos, g->grads);
}

/* train: num_iterations passes over the batch, each split into
 * steps_per_generation optimizer steps (the batch shuffled when it is
 * split, as TRL shuffles). Several ranks: every rank holds the whole batch;
 * each trains its run_split share of every optimizer step's completions,
 * the gradients are summed over the ranks, and the loss normalisers count
 * the whole step (grpo.h: the loss is a sum over micro-batches and ranks),
 * so the step is the one a single process takes, up to the order of
 * floating-point additions. */
static base_status train(grpo_stage *g, int64_t step, grpo_step *ss) {
    run_ctx *c = g->c;
    grpo_bufs *b = &g->b;
    const int mu = g->mu, spg = g->spg;
    base_status s = BASE_OK;
    double t_train0 = base_now();
    run_ep_test_phase(c, "train");
    for (int j = 0; j < b->n; j++) b->ord[j] = j;
    if (spg > 1) {
        run_shuffle(c->seed, 0x9000u + (uint32_t)g->index, c->total_steps, b->n, b->perm);
        for (int j = 0; j < b->n; j++) b->ord[j] = (int)b->perm[j];
    }
    int need_old = grpo_needs_old_logp(g->gc) || g->gc->importance_sampling_correction;
    if (need_old && (s = old_logprobs(g, ss))) return s;
    grpo_loss_stats_init(&ss->lstats);
    run_moe_step_reset(&g->moe);
    for (int it = 0; it < mu && !s; it++)
        for (int part = 0; part < spg && !s; part++) {
            int lo, hi;
            part_range(b->n, spg, part, &lo, &hi);
            if (hi <= lo) continue;
            grpo_config gcs = *g->gc; /* this optimizer step's entropy coefficient */
            gcs.entropy_coef = grpo_entropy_ctl_apply(g->gc, &g->ectl);
            grpo_loss_stats ostats; /* this optimizer step's, for the entropy control */
            grpo_loss_stats_init(&ostats);
            /* the step-wide counts of this optimizer step, over every rank's
             * share: sequences, loss tokens, micro-batches */
            grpo_norm norm = {.n_seqs = hi - lo, .n_tokens = 0, .n_micro = 0};
            for (int j0 = lo; j0 < hi; j0 += b->mb) {
                model_batch mbt;
                grpo_batch gb;
                grpo_bufs_pack(b, b->ord + j0, j0 + b->mb < hi ? b->mb : hi - j0, &mbt, &gb);
                norm.n_tokens += grpo_count_loss_tokens(g->gc, &gb);
            }
            int64_t mlo = 0, mhi = 0, rounds = 0, done = 0; /* the most micro-batches of a rank, this rank's backwards */
            for (int r = 0; r < c->world; r++) {
                int64_t a, z;
                run_split(hi - lo, r, c->world, &a, &z);
                norm.n_micro += (z - a + b->mb - 1) / b->mb;
                if ((z - a + b->mb - 1) / b->mb > rounds) rounds = (z - a + b->mb - 1) / b->mb;
                if (r == c->rank) mlo = lo + a, mhi = lo + z;
            }
            optim_zero_grad(&g->opt);
            run_moe_aux_begin(&g->moe, g->tr, norm.n_seqs); /* the balance loss: a mean over the step's sequences */
            for (int j0 = (int)mlo; j0 < mhi && !s; j0 += b->mb) {
                s = train_micro(g, &gcs, &norm, b->ord + j0, j0 + b->mb < mhi ? b->mb : (int)mhi - j0, need_old,
                                &ss->lstats, &ostats);
                if (!s) done++;
            }
            s = run_ep_pass_failed(c, s, "a training micro-batch");
            { /* the other ranks' remaining passes: ZeRO 2's reductions, EP's exchanges */
                base_status p = run_pad_passes(c, g->tr, g->tr_ref, g->grads, rounds - done);
                if (!s) s = p;
            }
            if (!s) s = run_test_fault(c);
            s = run_agree(c, s, "the training step");
            if (!s) s = run_reduce_grads(c, g->grads);
            if (!s) s = run_reduce_loss_stats(c, &ostats); /* the entropy control sees the whole step */
            if (s) break;
            if ((s = run_optim_step(c, &g->opt, (step * mu + it) * spg + part, &ss->info))) break;
            if ((s = run_gather_params(c, &g->opt))) break; /* ZeRO 1: every rank's updated shard */
            if ((s = run_moe_update(c, &g->moe, !ss->info.skipped))) break; /* global loads, the bias step */
            run_sync_policy(c); /* bf16 mode: refresh the compute weights */
            grpo_entropy_ctl_update(g->gc, &g->ectl, &ostats);
        }
    if (!s) s = run_reduce_loss_stats(c, &ss->lstats); /* the step's metrics, every rank's tokens */
    ss->t_train = base_now() - t_train0;
    return s;
}

/* log: the step's metrics.jsonl line (every logging_steps steps and the
 * last); returns the completion statistics for the progress line. */
static grpo_completion_stats log_metrics(grpo_stage *g, int64_t step, const grpo_step *ss) {
    run_ctx *c = g->c;
    const grpo_bufs *b = &g->b;
    const grpo_config *gc = g->gc;
    double step_time = base_now() - ss->t_step;
    grpo_loss_metrics lm;
    grpo_loss_metrics_finish(&ss->lstats, &lm);
    int64_t lens[1024];
    int64_t *lenp = b->n <= 1024 ? lens : base_xmalloc((size_t)b->n * sizeof(int64_t));
    for (int j = 0; j < b->n; j++) lenp[j] = b->clen[j];
    grpo_completion_stats cs;
    grpo_completion_stats_compute(lenp, b->trunc, b->n, &cs);
    if (lenp != lens) free(lenp);
    const grpo_reward_stats *rst = &ss->rst;
    cJSON *line = cJSON_CreateObject();
    cJSON_AddStringToObject(line, "stage", g->st->name);
    cJSON_AddNumberToObject(line, "step", (double)(step + 1));
    cJSON_AddNumberToObject(line, "global_step", (double)c->total_steps);
    add_num(line, "reward", rst->reward);
    add_num(line, "reward_std", rst->reward_std);
    for (int f = 0; f < b->F; f++) {
        char key[200];
        snprintf(key, sizeof key, "rewards/%s", reward_pool_func_name(g->pool, f));
        add_num(line, key, rst->func_mean[f]);
        snprintf(key, sizeof key, "rewards/%s/std", reward_pool_func_name(g->pool, f));
        add_num(line, key, rst->func_std[f]);
    }
    run_reward_parts_put(&g->parts, g->pool, line);
    cJSON_AddNumberToObject(line, "reward_errors", (double)g->gen.errs.last_errors);
    add_num(line, "frac_reward_zero_std", rst->frac_reward_zero_std);
    add_num(line, "completion_length", cs.mean_length);
    add_num(line, "completions/min_length", cs.min_length);
    add_num(line, "completions/max_length", cs.max_length);
    add_num(line, "completions/clipped_ratio", cs.clipped_ratio);
    add_num(line, "loss", lm.loss);
    if (gc->beta != 0) add_num(line, "kl", lm.kl);
    add_num(line, "entropy", lm.entropy);
    if (gc->entropy_coef != 0 || gc->use_adaptive_entropy) add_num(line, "entropy_coef", g->ectl.coef);
    if (!isnan(lm.clip_ratio_low_mean)) { /* the clip-family loss types */
        add_num(line, "clip_ratio/low", lm.clip_ratio_low_mean);
        add_num(line, "clip_ratio/high", lm.clip_ratio_high_mean);
        add_num(line, "clip_ratio/region", lm.clip_ratio_region_mean);
    }
    if (!isnan(lm.cispo_clip_ratio)) add_num(line, "cispo_clip_ratio", lm.cispo_clip_ratio);
    if (gc->importance_sampling_correction) {
        add_num(line, "sampling/sampling_logp_difference/mean", ss->ist.logp_diff_mean);
        add_num(line, "sampling/sampling_logp_difference/max", ss->ist.logp_diff_max);
        add_num(line, "sampling/importance_sampling_ratio/min", ss->ist.ratio_min);
        add_num(line, "sampling/importance_sampling_ratio/mean", ss->ist.ratio_mean);
        add_num(line, "sampling/importance_sampling_ratio/max", ss->ist.ratio_max);
    }
    if (!isnan(lm.vespo_phi_seq_mean)) add_num(line, "vespo/phi_seq_mean", lm.vespo_phi_seq_mean);
    add_num(line, "grad_norm", ss->info.grad_norm);
    add_num(line, "lr", ss->info.lr);
    if (ss->info.skipped) cJSON_AddNumberToObject(line, "update_skipped", 1);
    run_moe_put(&g->moe, line);
    if (g->cfg->dynamic_sampling) {
        cJSON_AddNumberToObject(line, "dynamic_sampling/rounds", (double)ss->rounds);
        cJSON_AddNumberToObject(line, "dynamic_sampling/dropped_groups", (double)ss->dropped);
    }
    add_num(line, "tokens_per_s", ss->t_roll > 0 ? (double)ss->new_tokens / ss->t_roll : 0);
    add_num(line, "step_time", step_time);
    add_num(line, "time/rollout", ss->t_roll);
    add_num(line, "time/reward", ss->t_rew);
    add_num(line, "time/train", ss->t_train);
    int64_t every = g->cfg->train.logging_steps;
    if (every <= 1 || (step + 1) % every == 0 || step + 1 == g->cfg->max_steps) run_metrics_write(c, line);
    else cJSON_Delete(line);
    return cs;
}

/* A step whose dynamic sampling found no group to learn from. */
static void log_skipped(grpo_stage *g, int64_t step) {
    cJSON *line = cJSON_CreateObject();
    cJSON_AddStringToObject(line, "stage", g->st->name);
    cJSON_AddNumberToObject(line, "step", (double)(step + 1));
    cJSON_AddNumberToObject(line, "skipped", 1);
    cJSON_AddNumberToObject(line, "frac_reward_zero_std", 1);
    cJSON_AddNumberToObject(line, "reward_errors", (double)g->gen.errs.last_errors);
    run_metrics_write(g->c, line);
}

/* samples.jsonl: every completion of the step, every log_completions_steps. */
static void log_samples(grpo_stage *g, int64_t step) {
    const grpo_bufs *b = &g->b;
    int64_t every = g->cfg->log_completions_steps;
    if (!(every > 0 && (step + 1) % every == 0)) return;
    for (int j = 0; j < b->n; j++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "stage", g->st->name);
        cJSON_AddNumberToObject(o, "step", (double)(step + 1));
        cJSON_AddStringToObject(o, "prompt", b->ptext[j]);
        cJSON_AddStringToObject(o, "completion", b->ctext[j]);
        add_num(o, "reward", b->total[j]);
        cJSON *rw = cJSON_AddObjectToObject(o, "rewards");
        for (int f = 0; f < b->F; f++) add_num(rw, reward_pool_func_name(g->pool, f), b->rewards[(size_t)j * b->F + f]);
        add_num(o, "advantage", b->adv[j]);
        cJSON_AddStringToObject(o, "finish_reason", b->trunc[j] ? "length" : "stop");
        if (g->cfg->log_completion_ids) {
            cJSON_AddItemToObject(o, "prompt_ids", cJSON_CreateIntArray(b->pids + (size_t)j * (size_t)b->max_prompt,
                                                                        b->plen[j]));
            cJSON_AddItemToObject(o, "completion_ids",
                                  cJSON_CreateIntArray(b->cids + (size_t)j * (size_t)b->max_new, b->clen[j]));
        }
        run_samples_write(g->c, o);
    }
}

/* TR-DPO reference refresh (TRL sync_ref_model): every ref_model_sync_steps
 * steps, ref = alpha * policy + (1 - alpha) * ref. */
static void sync_ref(grpo_stage *g, int64_t step) {
    run_ctx *c = g->c;
    int64_t every = g->cfg->ref_model_sync_steps;
    if (!(g->cfg->sync_ref_model && g->ref && every > 0 && (step + 1) % every == 0)) return;
    model_mix_weights(g->ref, c->policy, (float)g->cfg->ref_model_mixup_alpha);
}

/* A checkpoint every save_steps steps, at the end of the stage, and when
 * the run stops early (--max-total-steps, a stop signal). */
static base_status checkpoint(grpo_stage *g, int64_t step) {
    run_ctx *c = g->c;
    const recipe_train_cfg *t = &g->cfg->train;
    int last = step + 1 == g->cfg->max_steps;
    if (!((t->save_steps > 0 && (step + 1) % t->save_steps == 0) || last || c->stop_requested)) return BASE_OK;
    run_train_state rs = {.stage_index = g->index, .stage_done = last, .stage_step = step + 1,
                          .total_steps = c->total_steps, .data_epoch = g->cur.epoch, .data_pos = g->cur.pos,
                          .entropy_coef = g->ectl.coef, .entropy_last = g->ectl.last_entropy};
    snprintf(rs.stage_name, sizeof rs.stage_name, "%s", g->st->name);
    return run_ckpt_save(c, &rs, &g->opt, g->ref, (int)t->save_total_limit);
}

/* On the CPU: every rank's peak of allocated device bytes over the stage
 * (ops_cpu_peak_allocated), gathered to the summary beside the plan as
 * "memory_peak_allocated", one number per rank; at ZeRO 3 when the policy
 * came whole also the peak from the opening to the release as
 * "memory_peak_release" (the plan's release_peak). */
static base_status record_peak(grpo_stage *g) {
    run_ctx *c = g->c;
    if (c->ops->device != TENSOR_CPU) return BASE_OK;
    int64_t mine[2] = {(int64_t)ops_cpu_peak_allocated(), g->peak_release};
    int64_t *all = base_xcalloc(2 * (size_t)c->world, sizeof *all);
    all[0] = mine[0], all[1] = mine[1];
    base_status s = c->world > 1 ? dist_allgather(c->host, mine, all, 2, DIST_I64) : BASE_OK;
    const cJSON *old = cJSON_GetObjectItemCaseSensitive(c->summary, g->st->name);
    if (!s) {
        cJSON *sum = old ? cJSON_Duplicate(old, 1) : cJSON_CreateObject(), *a = cJSON_CreateArray();
        for (int r = 0; r < c->world; r++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)all[2 * r]));
        cJSON_DeleteItemFromObjectCaseSensitive(sum, "memory_peak_allocated");
        cJSON_AddItemToObject(sum, "memory_peak_allocated", a);
        if (g->whole_open) { /* the opening's peak, the whole model loaded (release_peak) */
            cJSON *b = cJSON_CreateArray();
            for (int r = 0; r < c->world; r++) cJSON_AddItemToArray(b, cJSON_CreateNumber((double)all[2 * r + 1]));
            cJSON_DeleteItemFromObjectCaseSensitive(sum, "memory_peak_release");
            cJSON_AddItemToObject(sum, "memory_peak_release", b);
        }
        s = run_summary_set(c, g->st->name, sum);
    }
    free(all);
    return s ? base_err_wrap(s, "gathering the ranks' peak allocated memory") : BASE_OK;
}

base_status run_stage_grpo(run_ctx *c, const recipe_stage_cfg *st, const run_ckpt *resume) {
    grpo_stage g;
    base_status s = stage_open(&g, c, st, resume);
    for (int64_t step = g.step0; step < g.cfg->max_steps && !s && !c->stop_requested; step++) {
        grpo_step ss = {.t_step = base_now()};
        s = generate_and_score(&g, &ss);
        if (s) break;
        if (g.b.n == 0) { /* dynamic sampling found nothing to learn from */
            log_skipped(&g, step);
            c->total_steps++;
        } else {
            s = grpo_advantages_ws(g.gc, g.b.rewards, g.b.n, g.b.F, g.weights, g.b.G, g.b.adv, g.b.total, &ss.rst,
                                   g.b.adv_ws);
            if (!s) s = train(&g, step, &ss);
            if (s) break;
            c->total_steps++;
            grpo_completion_stats cs = log_metrics(&g, step, &ss);
            sync_ref(&g, step);
            log_samples(&g, step);
            if (g.prog_on) {
                char errs[48] = "";
                if (g.gen.errs.last_errors > 0)
                    snprintf(errs, sizeof errs, " reward_errors %lld", (long long)g.gen.errs.last_errors);
                base_progress_update(&g.prog, step + 1, "reward %.3f len %.1f tok/s %.0f%s", ss.rst.reward,
                                     cs.mean_length, ss.t_roll > 0 ? (double)ss.new_tokens / ss.t_roll : 0, errs);
            }
        }
        if (c->opts.max_total_steps > 0 && c->total_steps >= c->opts.max_total_steps) c->stop_requested = 1;
        run_poll_signal(c); /* a stop signal: this step's checkpoint, then stop */
        s = checkpoint(&g, step);
    }
    if (!s) s = record_peak(&g);
    if (!s) s = run_zero3_end(c); /* ZeRO 3: the policy stays released, its shards kept by the run */
    stage_close(&g);
    return s ? base_err_wrap(s, "stage '%s'", st->name) : BASE_OK;
}
