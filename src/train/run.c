/*
 * The pipeline driver: run directory, model and tokenizer, the stage loop,
 * resume. See run.h.
 */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#else
static void omp_set_num_threads(int n) { (void)n; }
#endif

#include "recipe/recipe.h"
#include "run_internal.h"

/* The file grpo writes into every run directory it creates: --overwrite
 * removes only a directory holding it. */
#define RUN_MARKER ".grpo-run"

char *run_dir_of(const recipe *rc) {
    const recipe_cfg *cfg = recipe_config(rc);
    return base_path_join(cfg->output_dir, cfg->name);
}

/* Keep the first `lines` lines of a JSONL file (resume drops what was
 * written after the checkpoint). */
static base_status truncate_lines(const char *path, int64_t lines) {
    char *text;
    size_t n;
    if (!base_file_exists(path)) return BASE_OK;
    base_status s = base_read_file(path, &text, &n);
    if (s) return s;
    size_t cut = 0;
    int64_t seen = 0;
    while (cut < n && seen < lines) {
        char *nl = memchr(text + cut, '\n', n - cut);
        if (!nl) break;
        cut = (size_t)(nl - text) + 1;
        seen++;
    }
    if (seen < lines) { /* fewer lines than the checkpoint counted: keep all */
        free(text);
        return BASE_OK;
    }
    s = base_write_file_atomic(path, text, cut);
    free(text);
    return s;
}

/* The run name is one directory under output_dir, and --overwrite removes
 * it: never empty, ".", "..", a path or a name with control characters. */
static base_status check_name(const recipe *rc, const char *name) {
    const char *why = NULL;
    if (!name || !*name) why = "is empty";
    else if (!strcmp(name, ".") || !strcmp(name, "..")) why = "is '.' or '..'";
    else if (strchr(name, '/')) why = "contains '/'";
    else if (strlen(name) > 200) why = "is longer than 200 bytes";
    for (const char *p = name; p && *p && !why; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) why = "contains a control character";
    if (!why) return BASE_OK;
    return base_err_set(BASE_ERR_INVALID,
                        "%s: 'name' %s: the run name is one directory under output_dir (letters, digits, '-', "
                        "'_', '.'; put the run elsewhere with output_dir)",
                        recipe_path(rc), why);
}

static int has_marker(const char *dir) {
    char *p = base_path_join(dir, RUN_MARKER);
    struct stat st;
    int ok = lstat(p, &st) == 0 && S_ISREG(st.st_mode);
    free(p);
    return ok;
}

static base_status write_marker(const char *dir, const char *name) {
    if (has_marker(dir)) return BASE_OK;
    char *p = base_path_join(dir, RUN_MARKER);
    base_buf b = {0};
    base_buf_printf(&b, "grpo run directory of run '%s': grpo run --overwrite may remove this directory\n", name);
    base_status s = base_write_file_atomic(p, b.data, b.len);
    base_buf_free(&b);
    free(p);
    return s;
}

static int dir_is_empty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 1;
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
    closedir(d);
    return empty;
}

/* metrics.jsonl, samples.jsonl and reward_errors.log: rank 0 opens and
 * truncates them (every rank appends to the reward error log). */
static base_status open_outputs(run_ctx *c, int append) {
    c->reward_log = base_path_join(c->dir, "reward_errors.log");
    if (!run_writes(c)) return BASE_OK;
    char *m = base_path_join(c->dir, "metrics.jsonl"), *sp = base_path_join(c->dir, "samples.jsonl");
    c->metrics = fopen(m, append ? "a" : "w");
    c->samples = c->metrics ? fopen(sp, append ? "a" : "w") : NULL;
    base_status s = BASE_OK;
    if (!c->metrics || !c->samples) s = base_err_set(BASE_ERR_IO, "%s: %s", c->dir, base_strerror_now());
    free(m), free(sp);
    if (!append) {
        FILE *f = fopen(c->reward_log, "w");
        if (f) fclose(f);
    }
    return s;
}

/* Pre-flight: every stage still to run (from stage `first`) gets its
 * datasets loaded and its rewards built, checked against the rows and
 * their scripts' check functions run now, so a missing file, a malformed
 * line, a broken reward script, a row lacking a column, an unreachable
 * reward server or a sample stage's keep expression that does not compile
 * fail the run before any training (the options themselves were checked
 * when the recipe loaded). Datasets that a sample stage of this run writes
 * ("stage:NAME") are checked when their stage comes. */
static base_status preflight(run_ctx *c, int first) {
    int n = c->cfg->n_stages;
    for (int i = first; i < n; i++) {
        const recipe_stage_cfg *st = &c->cfg->stages[i];
        const char *name = st->name;
        /* the recipe checked every option; the keep expression compiles here */
        base_status cs = st->type == RECIPE_STAGE_SAMPLE ? run_stage_sample_check(st) : BASE_OK;
        if (cs) return cs;
        int produced = 0;
        for (int k = 0; k < st->dataset.n; k++)
            if (st->datasets[k]->producer) produced = 1;
        cJSON **rows = NULL;
        char **where = NULL;
        int64_t nrows = 0;
        base_status s = produced ? BASE_OK : run_stage_rows(c, st, &rows, &where, &nrows);
        if (!s && st->type != RECIPE_STAGE_SFT) {
            reward_pool *pool = NULL;
            s = run_reward_pool(c, st, &pool);
            if (!s && !produced) s = run_check_columns(pool, rows, where, nrows);
            if (!s) s = reward_pool_check(pool); /* e.g. http_judge.lua's server answers */
            reward_pool_destroy(pool);
        }
        free(rows);
        run_where_free(where, nrows);
        if (s) return base_err_wrap(s, "stage '%s'", name);
    }
    return BASE_OK;
}

/* The resumed GRPO stage's data cursor inside its datasets as they are now. */
static base_status check_cursor(run_ctx *c, const run_ckpt *ck) {
    const run_train_state *rs = run_ckpt_state(ck);
    const recipe_stage_cfg *st = &c->cfg->stages[rs->stage_index];
    if (rs->stage_done || st->type != RECIPE_STAGE_GRPO) return BASE_OK;
    cJSON **rows;
    char **where;
    int64_t n;
    base_status s = run_stage_rows(c, st, &rows, &where, &n);
    if (!s) s = run_ckpt_check_cursor(ck, n);
    free(rows);
    run_where_free(where, n);
    return s;
}

/* Load the policy from a checkpoint directory, or (fresh = 1 and the recipe
 * sets init_std) make random weights from its config.json. first: the stage
 * that runs next with it (ZeRO 3's sharded load when it, or the first
 * training stage after it, trains at zero_stage 3: run_zero3_load_sharded). */
static base_status load_policy(run_ctx *c, const char *dir, int fresh, int first) {
    model *m = NULL;
    base_status s;
    double init_std = c->cfg->init_std; /* NaN: not set */
    int random = !isnan(init_std) && fresh;
    if (run_zero3_load_sharded(c, first)) { /* no rank holds the whole model */
        s = run_zero3_load(c, dir, random, &m);
        if (!s) s = run_keep_files(c, dir, NULL);
        if (s) return base_err_wrap(s, "loading the model (ZeRO 3: each rank its shard)");
        free(c->policy_src);
        c->policy_src = base_xstrdup(dir);
        c->policy_on_disk = !random;
        return BASE_OK;
    }
    if (random) { /* pre-training from scratch */
        model_config cfg;
        s = model_config_load(dir, &cfg);
        if (!s) s = model_init_random(&cfg, c->ops, c->seed, (float)init_std, &c->load, &m);
    } else {
        s = model_load(dir, c->ops, &c->load, &m);
    }
    if (!s) s = run_keep_files(c, dir, NULL);
    if (s) {
        model_free(m);
        return base_err_wrap(s, "loading the model");
    }
    run_zero3_drop(c); /* a released policy's shards go with it */
    model_free(c->policy);
    c->policy = m;
    free(c->policy_src);
    c->policy_src = base_xstrdup(dir);
    c->policy_on_disk = !random;
    return BASE_OK;
}

/* Every rank resumes from the checkpoint rank 0 chose (a run directory on a
 * file system every node shares). */
static base_status same_checkpoint(run_ctx *c, const run_ckpt *ck) {
    if (c->world <= 1) return BASE_OK;
    int64_t mine = ck ? run_ckpt_state(ck)->total_steps : -1, r0 = mine;
    base_status s = dist_broadcast(c->host, &r0, 1, DIST_I64, 0);
    int32_t bad = !s && r0 != mine, any = bad;
    if (!s) s = dist_allreduce(c->host, &any, 1, DIST_I32, DIST_MAX);
    if (s) return s;
    if (bad)
        return base_err_set(BASE_ERR_INVALID,
                            "--resume: rank %d finds checkpoint step %lld in %s, rank 0 step %lld: every rank must see "
                            "the same run directory (put output_dir on a file system all nodes share)",
                            c->rank, (long long)mine, c->dir, (long long)r0);
    if (any) return base_err_set(BASE_ERR_INVALID, "--resume: the ranks see different checkpoints in %s", c->dir);
    return BASE_OK;
}

/* The recipe's lora table: a new adapter on the policy (A drawn from the
 * run's seed, B = 0), or the adapter of checkpoint dir (resume). */
static base_status attach_adapter(run_ctx *c, const char *dir) {
    base_status s = model_lora_new(c->policy, &c->cfg->lora.model, c->seed, &c->lora);
    if (!s && dir) s = run_ckpt_load_adapter(c, dir);
    return s ? base_err_wrap(s, "lora") : BASE_OK;
}

static void ctx_free(run_ctx *c) {
    if (c->metrics) fclose(c->metrics);
    if (c->samples) fclose(c->samples);
    for (int i = 0; i < c->n_datasets; i++) {
        run_dataset *d = &c->datasets[i];
        for (int64_t k = 0; k < d->n; k++) cJSON_Delete(d->rows[k]);
        free(d->rows), free(d->lines), free(d->name), free(d->path), free(d->prompt_column);
    }
    free(c->datasets);
    run_zero3_drop(c);
    model_free(c->policy);
    tok_free(c->tok);
    cJSON_Delete(c->summary);
    free(c->dir), free(c->name), free(c->policy_src), free(c->tok_dir), free(c->reward_log);
    free(c->prompt_tokens);
    run_tb_close(c->tb);
    run_keep_files_free(c);
    run_ep_close(c);
}

/* ZeRO 2 and 3 with a LoRA adapter, refused before the first stage: every
 * rank finds it in the recipe at the same point, so the refusal is agreed
 * (run_agree below) and the ranks leave through MPI_Finalize rather than
 * each ending the job at once (dist_abort from every rank). */
static base_status check_zero_lora(const run_ctx *c) {
    if (!c->lora) return BASE_OK;
    for (int i = 0; i < c->cfg->n_stages; i++) {
        const recipe_stage_cfg *st = &c->cfg->stages[i];
        const recipe_train_cfg *t = st->type == RECIPE_STAGE_GRPO ? &st->grpo.train
                                    : st->type == RECIPE_STAGE_SFT ? &st->sft.train : NULL;
        if (t && t->zero_stage >= 2)
            return base_err_set(BASE_ERR_UNSUPPORTED,
                                "stage '%s': zero_stage = %lld with a LoRA adapter: the adapter's gradients and "
                                "parameters are not sharded (its arena is %lld parameters); use zero_stage = 1 "
                                "(AdamW state sharded) or 0", st->name, (long long)t->zero_stage,
                                (long long)model_lora_numel(c->lora));
    }
    return BASE_OK;
}

/* On the CPU: every rank's most allocated device bytes over the whole run
 * (load, every stage, the stages' ends: ops_cpu_peak_allocated_all), in
 * summary.json as run_memory.peak_allocated, one number per rank. */
static base_status record_run_peak(run_ctx *c) {
    if (c->ops->device != TENSOR_CPU) return BASE_OK;
    int64_t mine = (int64_t)ops_cpu_peak_allocated_all();
    int64_t *all = base_xcalloc((size_t)c->world, sizeof *all);
    all[0] = mine;
    base_status s = c->world > 1 ? dist_allgather(c->host, &mine, all, 1, DIST_I64) : BASE_OK;
    if (!s) {
        cJSON *o = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(o, "peak_allocated");
        for (int r = 0; r < c->world; r++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)all[r]));
        s = run_summary_set(c, "run_memory", o);
    }
    free(all);
    return s ? base_err_wrap(s, "gathering the ranks' peak allocated memory over the run") : BASE_OK;
}

base_status run_recipe(const recipe *rc, const run_opts *opts) {
    run_ctx c;
    memset(&c, 0, sizeof c);
    c.rc = rc;
    c.cfg = recipe_config(rc);
    if (opts) c.opts = *opts;
    base_status s = check_name(rc, c.cfg->name);
    if (s) return s;
    c.dir = run_dir_of(rc);
    c.name = base_xstrdup(c.cfg->name);
    c.seed = (uint64_t)c.cfg->seed;
    c.saved_step = -1;
    /* data parallel: every rank runs this function; rank 0 alone shows
     * progress and results and writes the run directory (run_writes) */
    c.host = dist_world();
    c.rank = dist_comm_rank(c.host);
    c.world = dist_comm_size(c.host);
    if (c.rank != 0) c.opts.quiet = 1, c.opts.no_results = 1;
    const char *dev = c.opts.device ? c.opts.device : c.cfg->device;
    int64_t threads = c.cfg->threads;
    if (threads > 0) omp_set_num_threads((int)threads);
    else if (dist_local_size() > 1) /* the ranks of a node share its cores */
        omp_set_num_threads(base_ncpu() / dist_local_size() > 1 ? base_ncpu() / dist_local_size() : 1);
    c.ops = ops_by_name(dev);
    if (!c.ops) {
        s = base_err_set(BASE_ERR_UNSUPPORTED, "device '%s': %s", dev, base_err_msg());
        goto done;
    }
    s = dist_comm_for(c.ops, &c.dev);
    if (s) goto done;
    s = model_precision_parse(c.opts.precision ? c.opts.precision : c.cfg->precision,
                              &c.load.precision);
    if (s) goto done;
    /* a run that trains nothing (sample and eval stages only) holds the
     * policy frozen: compute weights only (bf16 / fp8 allowed on the CPU) */
    c.load.frozen = 1;
    for (int i = 0; i < c.cfg->n_stages; i++)
        if (c.cfg->stages[i].type == RECIPE_STAGE_SFT || c.cfg->stages[i].type == RECIPE_STAGE_GRPO) c.load.frozen = 0;
    /* with a lora table the model is the adapters' frozen base: compute
     * weights only too (bf16 / fp8 allowed on the CPU) */
    if (c.cfg->lora.set) c.load.frozen = 1;
    /* the checkpoint to resume from (read only) */
    run_ckpt *ck = NULL;
    if (c.opts.resume) {
        /* a changed recipe: shown, and refused where it alters the result */
        s = run_check_changes(&c);
        /* rank 0 first: with --resume-last-good it sets bad checkpoints aside */
        if (!s && c.rank == 0) s = run_ckpt_latest(&c, &ck);
        s = run_agree(&c, s, "--resume: the checkpoint to resume from");
        if (!s && c.rank != 0) s = run_ckpt_latest(&c, &ck);
        if (!s) s = run_agree(&c, s, "--resume: the checkpoint to resume from");
        if (!s) s = same_checkpoint(&c, ck);
        if (s) {
            run_ckpt_free(ck);
            goto done;
        }
        if (!ck) base_warn("%s: no checkpoint to resume from: starting the run from the beginning", c.dir);
        if (ck) c.saved_step = run_ckpt_state(ck)->total_steps;
    }
    /* weights and tokenizer first: a run that cannot start leaves an
     * existing run directory as it was */
    char *model_dir = recipe_resolve_path(rc, c.cfg->model);
    /* expert parallelism: the groups, and the policy's local experts */
    s = run_ep_open(&c, ck && !c.cfg->lora.set ? run_ckpt_dir(ck) : model_dir);
    /* the first stage to run (resuming: the checkpoint's, or the next) */
    int first = ck ? run_ckpt_state(ck)->stage_index + (run_ckpt_state(ck)->stage_done ? 1 : 0) : 0;
    if (!s && c.cfg->lora.set) { /* the frozen base is the recipe's model; the adapter new or the checkpoint's */
        s = load_policy(&c, model_dir, 1, first);
        if (!s) s = attach_adapter(&c, ck ? run_ckpt_dir(ck) : NULL);
    } else if (!s) {
        s = load_policy(&c, ck ? run_ckpt_dir(ck) : model_dir, !ck, first);
    }
    const char *tk = c.cfg->tokenizer;
    c.tok_dir = tk ? recipe_resolve_path(rc, tk) : base_xstrdup(model_dir);
    free(model_dir);
    if (!s) {
        s = tok_load(c.tok_dir, &c.tok);
        if (!s) s = run_keep_files(&c, NULL, c.tok_dir);
        if (s) s = base_err_wrap(s, "loading the tokenizer (set 'tokenizer' in the recipe)");
    }
    if (!s) s = preflight(&c, first);
    if (!s && ck) s = check_cursor(&c, ck);
    s = run_agree(&c, s, "starting the run"); /* a file one node lacks, ... */
    if (!s && run_poll_signal(&c)) { /* stopped while loading: the run directory stays as it was */
        c.total_steps = ck ? run_ckpt_state(ck)->total_steps : 0;
        run_ckpt_free(ck);
        s = run_stop_status(&c, BASE_OK);
        goto done;
    }
    /* the run directory: a new run needs an empty (or absent) one; a resume
     * one with a checkpoint or grpo's marker (rank 0 alone writes it) */
    if (!s && run_writes(&c) && base_file_exists(c.dir) && !dir_is_empty(c.dir) && !ck) {
        int marked = has_marker(c.dir);
        if (c.opts.resume && !marked) {
            s = base_err_set(BASE_ERR_INVALID,
                             "run directory %s has no checkpoint and no %s marker: not a grpo run directory, so "
                             "grpo does not write into it (give the run another name with --set name=...)",
                             c.dir, RUN_MARKER);
        } else if (!c.opts.resume && !c.opts.overwrite) {
            s = base_err_set(BASE_ERR_INVALID,
                             "run directory %s already exists: continue it with --resume, replace it with "
                             "--overwrite, or give the run another name (--set name=...)",
                             c.dir);
        } else if (!c.opts.resume && !marked) {
            s = base_err_set(BASE_ERR_INVALID,
                             "run directory %s: --overwrite refuses to remove it: it has no %s marker, so grpo did "
                             "not create it (or an older grpo did); check it and remove it yourself (rm -r '%s'), or "
                             "give the run another name (--set name=...)",
                             c.dir, RUN_MARKER, c.dir);
        } else if (!c.opts.resume) {
            s = base_remove_tree(c.dir);
            if (s) s = base_err_wrap(s, "--overwrite: removing the old run directory");
        }
    }
    if (!s && run_writes(&c)) {
        s = base_mkdir_p(c.dir);
        if (!s) s = write_marker(c.dir, c.name);
        if (!s && c.opts.resume) s = run_keep_config_history(&c, ck ? run_ckpt_state(ck)->total_steps : -1);
        if (!s) {
            char *p = base_path_join(c.dir, "config.resolved.lua");
            s = recipe_write_resolved(rc, p);
            free(p);
        }
    }
    s = run_agree(&c, s, "preparing the run directory");
    if (s) {
        run_ckpt_free(ck);
        goto done;
    }
    /* outputs; on resume drop what was written after the checkpoint */
    if (ck) {
        const run_train_state *rs = run_ckpt_state(ck);
        c.total_steps = rs->total_steps;
        c.metrics_lines = rs->metrics_lines;
        c.samples_lines = rs->samples_lines;
        if (run_writes(&c)) {
            char *m = base_path_join(c.dir, "metrics.jsonl"), *sp = base_path_join(c.dir, "samples.jsonl");
            s = truncate_lines(m, rs->metrics_lines);
            if (!s) s = truncate_lines(sp, rs->samples_lines);
            free(m), free(sp);
        }
        c.summary = run_ckpt_summary(ck);
    }
    if (!c.summary) c.summary = cJSON_CreateObject();
    if (!s) s = check_zero_lora(&c);
    if (!s) s = open_outputs(&c, ck != NULL);
    if (!s && run_writes(&c)) s = run_tb_start(&c, ck ? run_ckpt_state(ck)->total_steps + 1 : -1);
    /* the other ranks open the reward error log once rank 0 made it */
    s = run_agree(&c, s, "opening the run's outputs");
    int n = c.cfg->n_stages;
    const run_train_state *rs = ck ? run_ckpt_state(ck) : NULL;
    for (int i = 0; i < n && !s && !c.stop_requested; i++) {
        const recipe_stage_cfg *st = &c.cfg->stages[i];
        if (rs && (i < rs->stage_index || (i == rs->stage_index && rs->stage_done))) continue;
        if (run_poll_signal(&c)) break; /* no stage starts after a stop signal */
        const char *from = st->init_from;
        if (from && !(rs && i == rs->stage_index)) {
            /* "model": the recipe's model again (R1's second SFT starts from
             * the base model, not from the RL checkpoint) */
            char *p = recipe_resolve_path(rc, !strcmp(from, "model") ? c.cfg->model : from);
            s = load_policy(&c, p, 0, i);
            free(p);
            s = run_agree(&c, s, "loading the stage's init_from");
            if (s) break;
        }
        const run_ckpt *res = rs && i == rs->stage_index ? ck : NULL;
        if (!c.opts.quiet) base_info("stage %d/%d: %s (%s)", i + 1, n, st->name, st->type_name);
        if (st->type == RECIPE_STAGE_GRPO || st->type == RECIPE_STAGE_SFT) {
            /* a policy the run holds released (a sharded load, a stage-3
             * stage before): a stage-3 stage takes its shards over
             * (run_zero2_new); training at stage 0-2 reads the whole arena */
            const recipe_train_cfg *t = st->type == RECIPE_STAGE_GRPO ? &st->grpo.train : &st->sft.train;
            char why[192];
            snprintf(why, sizeof why, "stage '%s' trains it", st->name);
            if (t->zero_stage != 3) s = run_zero3_gather(&c, why);
            if (s) break;
        }
        if (st->type == RECIPE_STAGE_GRPO) s = run_stage_grpo(&c, st, res);
        else if (st->type == RECIPE_STAGE_SFT) s = run_stage_sft(&c, st, res);
        if (st->type == RECIPE_STAGE_GRPO || st->type == RECIPE_STAGE_SFT) c.policy_on_disk = 0; /* trained */
        else if (st->type == RECIPE_STAGE_EVAL) s = run_stage_eval(&c, st);
        else s = run_stage_sample(&c, st);
        if (!s && c.ep > 1) s = run_ep_summary(&c, st->name);
        /* the next stage may read what rank 0 wrote (a sample stage's rows) */
        if (!s && c.world > 1) s = dist_barrier(c.host);
    }
    if (!s) s = record_run_peak(&c);
    run_ckpt_free(ck);
    if (c.stop_signal && (!s || s == BASE_ERR_INTERRUPTED)) s = run_stop_status(&c, s);
    if (!s && !c.stop_requested && c.cfg->report && run_writes(&c)) {
        fflush(c.metrics);
        base_status r = run_report_write(c.dir);
        if (r) base_warn("report: %s", base_err_msg());
    }
    if (!s && !c.stop_requested && !c.opts.no_results) {
        /* the eval results, on stdout */
        int any = 0;
        for (const cJSON *e = c.summary->child; e; e = e->next) {
            const cJSON *acc = cJSON_GetObjectItemCaseSensitive(e, "accuracy");
            if (!cJSON_IsNumber(acc)) continue;
            if (!any++) printf("results (%s/summary.json):\n", c.dir);
            printf("  %-16s accuracy %.3f", e->string, acc->valuedouble);
            for (const cJSON *k = e->child; k; k = k->next)
                if (!strncmp(k->string, "cons@", 5) && cJSON_IsNumber(k)) printf("  %s %.3f", k->string, k->valuedouble);
            printf("\n");
        }
        fflush(stdout);
    }
    if (!s && !c.opts.quiet && !c.opts.temporary_dir) base_info("run %s: done (%s)", c.name, c.dir);
done:
    ctx_free(&c);
    return s;
}
