/*
 * Checkpoints: RUN/checkpoints/step-N/
 *   model.safetensors       policy weights, Hugging Face names, float32; past
 *                           5 GB (ST_SHARD_DEFAULT) Hugging Face's shards
 *                           model-0000i-of-0000N.safetensors and
 *                           model.safetensors.index.json instead. Streamed
 *                           tensor piece by tensor piece from the device
 *                           through one 64 MiB host buffer (st_plan): no
 *                           host copy of the model (docs/checkpoints.md)
 *   config.json             the model's config (loadable by transformers)
 *   (with the recipe's lora table, instead of those two: the adapter as
 *   PEFT saves it, adapter_config.json and adapter_model.safetensors; the
 *   frozen base is the recipe's model)
 *   tokenizer.json, tokenizer_config.json
 *   optimizer.safetensors   AdamW moments "m.NAME", "v.NAME" (float32); at ZeRO 1
 *                           instead optimizer-rank-R-of-W.safetensors, each
 *                           rank's shard (ckpt_optim.c); with expert
 *                           parallelism (ZeRO 0 and 1) the whole model's
 *                           optimizer.safetensors, every rank writing the
 *                           parts it holds (ckpt_ep.c)
 *   ref.safetensors         the reference model (GRPO with beta != 0), float32,
 *                           streamed and sharded the same way (ref-0000i-...)
 *   trainer_state.json      stage, steps, data cursor, optimizer counters,
 *                           output line counts, summary.json at the save
 *
 * Atomicity: everything is written into checkpoints/.tmp-step-N/ (each file
 * fsynced), the directory is renamed to step-N and the parent directory is
 * fsynced. trainer_state.json is the last file written, and a directory
 * without it is never used, so a process killed at any point leaves the
 * previous checkpoint as the newest complete one.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/st.h"
#include "run_internal.h"

struct run_ckpt {
    char *dir;
    run_train_state st;
    int64_t optim_step, optim_skipped;
    int has_ref, has_optim, adapter;
    int64_t optim_shards, optim_numel; /* ZeRO 1: the shard files' count and arena size; 0: optimizer.safetensors */
    cJSON *summary;
};

static void fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* A model's weights as float32 safetensors, streamed (run_internal.h). */
typedef struct {
    const model *m;
} weights_src;

static base_status fill_weights(void *ctx, int i, uint64_t off, void *dst, size_t n) {
    const weights_src *w = ctx;
    const model_param *p = model_param_at(w->m, i);
    model_weights_range_to_host(w->m, p->offset + (int64_t)(off / sizeof(float)), (int64_t)(n / sizeof(float)), dst);
    return BASE_OK;
}

base_status run_ckpt_weights_plan(const model_param *params, int nparams, const char *stem, uint64_t shard_bytes,
                                  st_plan **out) {
    st_plan *p = st_plan_new();
    for (int i = 0; i < nparams; i++) st_plan_add(p, params[i].name, TENSOR_F32, params[i].ndim, params[i].shape);
    st_plan_meta(p, "format", "pt");
    base_status s = st_plan_layout(p, stem, shard_bytes);
    if (s) {
        st_plan_free(p);
        p = NULL;
    }
    *out = p;
    return s;
}

base_status run_ckpt_write_weights(const model *m, const char *dir, const char *stem, size_t buf_bytes,
                                   uint64_t shard_bytes, size_t *peak) {
    if (peak) *peak = 0;
    st_plan *p;
    base_status s = run_ckpt_weights_plan(model_param_at(m, 0), model_nparams(m), stem, shard_bytes, &p);
    if (s) return s;
    weights_src src = {m};
    s = st_plan_write(p, dir, run_ckpt_f32_buf(buf_bytes), fill_weights, &src, peak);
    st_plan_free(p);
    return s;
}

/* The shard size of checkpoint weights: ST_SHARD_DEFAULT. Test hook:
 * GRPO_TEST_CKPT_SHARD_BYTES=N shards the tiny test models
 * (tests/train/test_ckpt_stream.c). */
static uint64_t ckpt_shard_bytes(void) {
    const char *e = getenv("GRPO_TEST_CKPT_SHARD_BYTES");
    char *end;
    unsigned long long v = e ? strtoull(e, &end, 10) : 0;
    return e && *e && !*end && v > 0 ? (uint64_t)v : ST_SHARD_DEFAULT;
}

/* The files a checkpoint carries besides the weights (c->keep_files, in
 * this order); the first of each source is required. */
static const char *const KEEP_FILES[4] = {"config.json", "generation_config.json", "tokenizer.json",
                                          "tokenizer_config.json"};

base_status run_keep_files(run_ctx *c, const char *policy_dir, const char *tok_dir) {
    for (int i = 0; i < 4; i++) {
        const char *dir = i < 2 ? policy_dir : tok_dir;
        if (!dir) continue;
        char *p = base_path_join(dir, KEEP_FILES[i]);
        base_buf_free(&c->keep_files[i]);
        base_status s = BASE_OK;
        if (base_file_exists(p)) {
            char *text;
            size_t n;
            s = base_read_file(p, &text, &n);
            if (!s) c->keep_files[i] = (base_buf){.data = text, .len = n, .cap = n + 1};
        }
        free(p);
        if (s) return s;
    }
    return BASE_OK;
}

void run_keep_files_free(run_ctx *c) {
    for (int i = 0; i < 4; i++) base_buf_free(&c->keep_files[i]);
}

base_status run_save_model(run_ctx *c, const model *m, const char *dir) {
    base_status s = base_mkdir_p(dir);
    if (s) return s;
    /* ZeRO 3: every rank wrote its range of the weights already (run_ckpt_save) */
    /* EP > 1: every rank wrote its experts already (run_ckpt_save) */
    if (!model_arena_released(m) && !model_get_ep(m))
        s = run_ckpt_write_weights(m, dir, "model", ST_BUF_DEFAULT, ckpt_shard_bytes(), NULL);
    for (int i = 0; i < 4 && !s; i++) {
        const base_buf *f = &c->keep_files[i];
        if (!f->data) {
            if (i == 0 || i == 2)
                s = base_err_set(BASE_ERR_IO, "%s: missing from %s (needed in every checkpoint)", KEEP_FILES[i],
                                 i == 0 ? c->policy_src : c->tok_dir);
            continue;
        }
        char *dst = base_path_join(dir, KEEP_FILES[i]);
        s = base_write_file_atomic(dst, f->data, f->len);
        free(dst);
    }
    return s;
}

base_status run_save_adapter(run_ctx *c, const char *dir) {
    base_status s = base_mkdir_p(dir);
    if (!s) s = model_lora_save(c->lora, dir, c->policy_src);
    for (int i = 2; i < 4 && !s; i++) { /* the tokenizer files (PEFT checkpoints of TRL carry them too) */
        const base_buf *f = &c->keep_files[i];
        if (!f->data) {
            if (i == 2) s = base_err_set(BASE_ERR_IO, "%s: missing from %s (needed in every checkpoint)", KEEP_FILES[i], c->tok_dir);
            continue;
        }
        char *dst = base_path_join(dir, KEEP_FILES[i]);
        s = base_write_file_atomic(dst, f->data, f->len);
        free(dst);
    }
    return s;
}

base_status run_ckpt_load_adapter(run_ctx *c, const char *dir) {
    model_lora_config have;
    const model_lora_config *want = model_lora_cfg(c->lora);
    base_status s = model_lora_read_config(dir, model_cfg(c->policy), &have);
    if (!s && (have.r != want->r || have.lora_alpha != want->lora_alpha || have.use_rslora != want->use_rslora))
        s = base_err_set(BASE_ERR_INVALID,
                         "%s/adapter_config.json: the checkpoint's adapter (r = %d, lora_alpha = %.15g, use_rslora = "
                         "%s) is not the recipe's lora table (r = %d, lora_alpha = %.15g, use_rslora = %s)",
                         dir, have.r, have.lora_alpha, have.use_rslora ? "true" : "false", want->r, want->lora_alpha,
                         want->use_rslora ? "true" : "false");
    if (!s) s = model_lora_load_weights(c->lora, dir);
    return s;
}

static base_status write_optim(const optim *o, const char *path) {
    float *m = base_xmalloc((size_t)o->n * sizeof(float)), *v = base_xmalloc((size_t)o->n * sizeof(float));
    optim_state_download(o, m, v);
    st_writer *w = st_writer_new();
    char **names = base_xcalloc((size_t)o->n_params * 2, sizeof *names);
    for (int i = 0; i < o->n_params; i++) {
        const optim_param *p = &o->params[i];
        int64_t shape[1] = {p->numel};
        base_buf a = {0}, b = {0};
        base_buf_printf(&a, "m.%s", p->name);
        base_buf_printf(&b, "v.%s", p->name);
        names[2 * i] = a.data, names[2 * i + 1] = b.data;
        st_writer_add(w, a.data, TENSOR_F32, 1, shape, m + p->offset);
        st_writer_add(w, b.data, TENSOR_F32, 1, shape, v + p->offset);
    }
    base_status s = st_writer_write(w, path);
    st_writer_free(w);
    for (int i = 0; i < 2 * o->n_params; i++) free(names[i]);
    free(names), free(m), free(v);
    return s;
}

static cJSON *state_json(const run_ctx *c, const run_train_state *st, const optim *o, int has_ref) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddNumberToObject(j, "stage_index", st->stage_index);
    cJSON_AddStringToObject(j, "stage_name", st->stage_name);
    cJSON_AddBoolToObject(j, "stage_done", st->stage_done);
    cJSON_AddNumberToObject(j, "stage_step", (double)st->stage_step);
    cJSON_AddNumberToObject(j, "total_steps", (double)st->total_steps);
    cJSON_AddNumberToObject(j, "data_epoch", (double)st->data_epoch);
    cJSON_AddNumberToObject(j, "data_pos", (double)st->data_pos);
    /* doubles print with up to 17 digits when 15 do not round-trip (cJSON) */
    cJSON_AddNumberToObject(j, "entropy_coef", st->entropy_coef);
    cJSON_AddItemToObject(j, "entropy_last",
                          isfinite(st->entropy_last) ? cJSON_CreateNumber(st->entropy_last) : cJSON_CreateNull());
    cJSON_AddNumberToObject(j, "metrics_lines", (double)c->metrics_lines);
    cJSON_AddNumberToObject(j, "world_size", c->world); /* for the record: any world size resumes it */
    cJSON_AddNumberToObject(j, "samples_lines", (double)c->samples_lines);
    cJSON_AddNumberToObject(j, "seed", (double)c->seed);
    cJSON_AddBoolToObject(j, "has_optimizer", o != NULL);
    cJSON_AddBoolToObject(j, "has_ref", has_ref);
    /* for the record: any expert_parallel_size resumes it (ckpt_ep.c) */
    cJSON_AddNumberToObject(j, "expert_parallel_size", c->ep > 1 ? c->ep : 1);
    cJSON_AddBoolToObject(j, "adapter", c->lora != NULL);
    if (o) {
        optim_counters oc = optim_counters_get(o);
        cJSON_AddNumberToObject(j, "optim_step", (double)oc.step);
        cJSON_AddNumberToObject(j, "optim_skipped", (double)oc.n_skipped);
        cJSON_AddNumberToObject(j, "zero_stage", o->zero_shards || c->ep > 1 ? o->zero_stage : 0); /* the record; the next two decide */
        if (o->zero_shards && c->ep <= 1) {
            cJSON_AddNumberToObject(j, "optimizer_shards", o->zero_shards);
            cJSON_AddNumberToObject(j, "optimizer_numel", (double)o->n);
        } else { /* optimizer.safetensors by name (EP > 1: written by every rank, ckpt_ep.c) */
            cJSON_AddBoolToObject(j, "optimizer_by_name", 1);
        }
    }
    cJSON_AddItemToObject(j, "summary", cJSON_Duplicate(c->summary, 1));
    return j;
}

/* step-N directories by N, ascending (complete ones only when `complete`). */
static int64_t *list_ckpts(const char *root, int complete, int *n) {
    *n = 0;
    DIR *d = opendir(root);
    if (!d) return NULL;
    int64_t *v = NULL;
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        if (strncmp(e->d_name, "step-", 5)) continue;
        long long k = strtoll(e->d_name + 5, &end, 10);
        if (*end || end == e->d_name + 5 || k < 0) continue;
        if (complete) {
            char *p = base_path_join(root, e->d_name), *q = base_path_join(p, "trainer_state.json");
            int ok = base_file_exists(q);
            free(p), free(q);
            if (!ok) continue;
        }
        if (*n == cap) v = base_xrealloc(v, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *v);
        v[(*n)++] = k;
    }
    closedir(d);
    for (int i = 1; i < *n; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            int64_t t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return v;
}

/* Leftovers of a save that a crash interrupted: .tmp-step-N (an unfinished
 * checkpoint) and .old-step (a replaced one), whatever their N. Only this
 * process writes the run directory, so none of them is in use. */
static base_status remove_stale(const char *root) {
    DIR *d = opendir(root);
    if (!d) return base_err_set(BASE_ERR_IO, "%s: %s", root, base_strerror_now());
    base_status s = BASE_OK;
    struct dirent *e;
    while (!s && (e = readdir(d))) {
        if (strncmp(e->d_name, ".tmp-step-", 10) && strcmp(e->d_name, ".old-step")) continue;
        char *p = base_path_join(root, e->d_name);
        s = base_remove_tree(p);
        free(p);
    }
    closedir(d);
    return s;
}

static base_status ckpt_write(run_ctx *c, const run_train_state *st, const optim *opt, const model *ref, int keep);

/* ZeRO stage 0: every rank holds the same weights and optimizer state, so
 * rank 0 writes the checkpoint and the others wait for it (a checkpoint
 * that failed on rank 0 fails the step on every rank). ZeRO 1: rank 0
 * makes the temporary directory, every rank writes its optimizer shard
 * into it, then rank 0 writes the rest and renames it into place (each
 * phase agreed, so a failure anywhere fails the step everywhere and leaves
 * no step-N). */
base_status run_ckpt_save(run_ctx *c, const run_train_state *st, const optim *opt, const model *ref, int keep) {
    base_status s = BASE_OK;
    if (opt && opt->zero_shards && c->ep <= 1) {
        char *root = base_path_join(c->dir, "checkpoints"), tmpname[64];
        snprintf(tmpname, sizeof tmpname, ".tmp-step-%lld", (long long)st->total_steps);
        char *tmp = base_path_join(root, tmpname);
        if (run_writes(c)) {
            s = base_mkdir_p(root);
            if (!s) s = remove_stale(root);
            if (!s) s = base_mkdir_p(tmp);
        }
        s = run_agree(c, s, "writing the checkpoint");
        if (!s) s = run_agree(c, run_ckpt_write_optim_shard(opt, tmp), "writing the checkpoint's optimizer shards");
        /* ZeRO 3: each rank writes its range of the consolidated weights (agreed inside) */
        if (!s) s = run_zero3_write_weights(c, tmp, ckpt_shard_bytes());
        free(root), free(tmp);
        if (s) return s;
    } else if (c->ep > 1) { /* expert parallelism: every rank's experts into the shared files */
        char *root = base_path_join(c->dir, "checkpoints"), tmpname[64];
        snprintf(tmpname, sizeof tmpname, ".tmp-step-%lld", (long long)st->total_steps);
        char *tmp = base_path_join(root, tmpname);
        if (run_writes(c)) {
            s = base_mkdir_p(root);
            if (!s) s = remove_stale(root);
            if (!s) s = base_mkdir_p(tmp);
        }
        s = run_agree(c, s, "writing the checkpoint");
        if (!s) s = run_ep_write_weights(c, c->policy, tmp, "model", ckpt_shard_bytes());
        if (!s && ref) s = run_ep_write_weights(c, ref, tmp, "ref", ckpt_shard_bytes());
        /* every rank's AdamW state, whole-model names (ZeRO 2 / 3: the shards by class, run_zero.c) */
        if (!s && opt) s = run_ep_write_optim(c, opt, tmp);
        free(root), free(tmp);
        if (s) return s;
    }
    s = run_writes(c) ? ckpt_write(c, st, opt, ref, keep) : BASE_OK;
    s = run_agree(c, s, "writing the checkpoint");
    if (!s) c->saved_step = st->total_steps;
    return s;
}

static base_status ckpt_write(run_ctx *c, const run_train_state *st, const optim *opt, const model *ref, int keep) {
    char *root = base_path_join(c->dir, "checkpoints");
    char name[64], tmpname[64];
    snprintf(name, sizeof name, "step-%lld", (long long)st->total_steps);
    snprintf(tmpname, sizeof tmpname, ".tmp-step-%lld", (long long)st->total_steps);
    char *dir = base_path_join(root, name), *tmp = base_path_join(root, tmpname);
    base_status s = base_mkdir_p(root);
    if (!s && !(opt && opt->zero_shards) && c->ep <= 1) s = remove_stale(root); /* ZeRO 1: done, the shards are in tmp */
    if (!s) s = c->lora ? run_save_adapter(c, tmp) : run_save_model(c, c->policy, tmp);
    /* Test hook: GRPO_TEST_CKPT_DELAY_MS widens the window between the
     * first and the last file of a checkpoint so tests can kill -9 the
     * process inside a checkpoint write (tests/train/test_run.c). */
    const char *delay = getenv("GRPO_TEST_CKPT_DELAY_MS");
    if (delay) usleep((useconds_t)atoi(delay) * 1000);
    if (!s && opt && !opt->zero_shards && c->ep <= 1) {
        char *p = base_path_join(tmp, "optimizer.safetensors");
        s = write_optim(opt, p);
        free(p);
    }
    if (!s && ref && c->ep <= 1) {
        s = run_ckpt_write_weights(ref, tmp, "ref", ST_BUF_DEFAULT, ckpt_shard_bytes(), NULL);
    }
    if (!s) { /* the completion marker, last */
        cJSON *j = state_json(c, st, opt, ref != NULL);
        char *text = base_json_print(j, 1), *p = base_path_join(tmp, "trainer_state.json");
        s = base_write_file_atomic(p, text, strlen(text));
        free(text);
        cJSON_Delete(j);
        free(p);
    }
    if (!s) {
        fsync_dir(tmp);
        if (base_file_exists(dir)) { /* same step saved again (stage end): replace */
            char *old = base_path_join(root, ".old-step");
            s = base_remove_tree(old);
            if (!s && rename(dir, old) < 0) s = base_err_set(BASE_ERR_IO, "rename %s: %s", dir, base_strerror_now());
            if (!s && rename(tmp, dir) < 0) s = base_err_set(BASE_ERR_IO, "rename %s: %s", tmp, base_strerror_now());
            if (!s) s = base_remove_tree(old);
            free(old);
        } else if (rename(tmp, dir) < 0) {
            s = base_err_set(BASE_ERR_IO, "rename %s: %s", tmp, base_strerror_now());
        }
        fsync_dir(root);
    }
    if (!s && keep > 0) {
        int n;
        int64_t *all = list_ckpts(root, 0, &n);
        for (int i = 0; i + keep < n; i++) {
            char nm[64];
            snprintf(nm, sizeof nm, "step-%lld", (long long)all[i]);
            char *p = base_path_join(root, nm);
            base_status r = base_remove_tree(p);
            if (r) base_warn("checkpoint rotation (save_total_limit): %s", base_err_msg());
            free(p);
        }
        free(all);
    }
    free(root), free(dir), free(tmp);
    return s ? base_err_wrap(s, "checkpoint %s", name) : BASE_OK;
}

/* ---- reading a checkpoint back -------------------------------------------- */

/* An integer field of trainer_state.json in [lo, hi]. */
static base_status state_int(const cJSON *j, const char *file, const char *key, int64_t lo, int64_t hi,
                             int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!v) return base_err_set(BASE_ERR_INVALID, "%s: '%s' is missing", file, key);
    double d = v->valuedouble;
    if (!cJSON_IsNumber(v) || d != floor(d) || fabs(d) > 9007199254740992.0)
        return base_err_set(BASE_ERR_INVALID, "%s: '%s' must be an integer", file, key);
    if (d < (double)lo || d > (double)hi)
        return base_err_set(BASE_ERR_INVALID, "%s: '%s' = %lld is out of range [%lld, %lld]", file, key,
                            (long long)d, (long long)lo, (long long)hi);
    *out = (int64_t)d;
    return BASE_OK;
}

static base_status state_bool(const cJSON *j, const char *file, const char *key, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsBool(v)) return base_err_set(BASE_ERR_INVALID, "%s: '%s' must be true or false", file, key);
    *out = cJSON_IsTrue(v);
    return BASE_OK;
}

static base_status parse_state(const recipe *rc, const cJSON *j, const char *file, run_ckpt *k) {
    const int64_t BIG = (int64_t)1 << 53;
    run_train_state *st = &k->st;
    if (!cJSON_IsObject(j)) return base_err_set(BASE_ERR_INVALID, "%s: not a JSON object", file);
    int64_t v, step, total;
    base_status s = state_int(j, file, "version", 1, 1, &v);
    const recipe_cfg *cfg = recipe_config(rc);
    if (!s) s = state_int(j, file, "stage_index", 0, cfg->n_stages - 1, &v);
    if (s) return s;
    st->stage_index = (int)v;
    const recipe_stage_cfg *stage = &cfg->stages[st->stage_index];
    const char *want = stage->name, *type = stage->type_name;
    const char *name = base_json_str(j, "stage_name", NULL);
    if (!name) return base_err_set(BASE_ERR_INVALID, "%s: 'stage_name' must be a string", file);
    if (strcmp(name, want))
        return base_err_set(BASE_ERR_INVALID,
                            "%s: 'stage_name' is '%s' but the recipe's stage %d is '%s' (a checkpoint of another "
                            "recipe?)",
                            file, name, st->stage_index + 1, want);
    if (stage->type != RECIPE_STAGE_GRPO && stage->type != RECIPE_STAGE_SFT)
        return base_err_set(BASE_ERR_INVALID, "%s: stage '%s' is a %s stage, which saves no checkpoints", file,
                            name, type);
    snprintf(st->stage_name, sizeof st->stage_name, "%s", name);
    /* max_steps <= 0 (sft): the epochs decide; the stage checks the count */
    int64_t max_steps = stage->type == RECIPE_STAGE_GRPO ? stage->grpo.max_steps : stage->sft.max_steps;
    s = state_bool(j, file, "stage_done", &st->stage_done);
    if (!s) s = state_int(j, file, "stage_step", 0, max_steps > 0 ? max_steps : BIG, &step);
    if (!s) s = state_int(j, file, "total_steps", step, BIG, &total);
    if (!s) s = state_int(j, file, "data_epoch", 0, BIG, &st->data_epoch);
    if (!s) s = state_int(j, file, "data_pos", 0, BIG, &st->data_pos);
    if (!s) s = state_int(j, file, "metrics_lines", 0, BIG, &st->metrics_lines);
    if (!s) s = state_int(j, file, "samples_lines", 0, BIG, &st->samples_lines);
    if (!s) s = state_bool(j, file, "has_optimizer", &k->has_optim);
    if (!s) s = state_bool(j, file, "has_ref", &k->has_ref);
    if (s) return s;
    /* "adapter" (a LoRA checkpoint) is absent from checkpoints of older grpo: false */
    const cJSON *ad = cJSON_GetObjectItemCaseSensitive(j, "adapter");
    if (ad && !cJSON_IsBool(ad)) return base_err_set(BASE_ERR_INVALID, "%s: 'adapter' must be true or false", file);
    k->adapter = cJSON_IsTrue(ad);
    if (k->adapter != cfg->lora.set)
        return base_err_set(BASE_ERR_INVALID,
                            k->adapter ? "%s: a checkpoint of a LoRA run (the adapter only), but the recipe has no lora "
                                         "table"
                                       : "%s: a checkpoint of a full fine-tuning run, but the recipe has a lora table",
                            file);
    st->stage_step = step;
    st->total_steps = total;
    if (!st->stage_done && !k->has_optim)
        return base_err_set(BASE_ERR_INVALID,
                            "%s: 'has_optimizer' is false inside stage '%s': no optimizer state to resume from", file,
                            name);
    /* expert parallelism: the optimizer state in optimizer.safetensors by name
     * ("optimizer_by_name"); older grpo wrote one file per EP index */
    const cJSON *epj = cJSON_GetObjectItemCaseSensitive(j, "expert_parallel_size");
    if (cJSON_IsNumber(epj) && epj->valuedouble > 1 && k->has_optim &&
        !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "optimizer_by_name")))
        return base_err_set(BASE_ERR_UNSUPPORTED,
                            "%s: a checkpoint of a run with expert_parallel_size = %g written by an older grpo "
                            "(optimizer-ep-J-of-EP files, no 'optimizer_by_name'): its optimizer state does not "
                            "resume (its model.safetensors is complete: start a new run from it with model = its "
                            "directory)",
                            file, epj->valuedouble);
    if (k->has_optim) {
        s = state_int(j, file, "optim_step", 0, BIG, &k->optim_step);
        if (!s) s = state_int(j, file, "optim_skipped", 0, k->optim_step, &k->optim_skipped);
        /* "optimizer_shards" (ZeRO 1, absent in ZeRO 0 checkpoints and older grpo's) */
        if (!s && cJSON_GetObjectItemCaseSensitive(j, "optimizer_shards")) {
            s = state_int(j, file, "optimizer_shards", 1, 1 << 20, &k->optim_shards);
            if (!s) s = state_int(j, file, "optimizer_numel", 1, BIG, &k->optim_numel);
        }
        if (s) return s;
    }
    const cJSON *ec = cJSON_GetObjectItemCaseSensitive(j, "entropy_coef");
    if (!cJSON_IsNumber(ec) || !isfinite(ec->valuedouble))
        return base_err_set(BASE_ERR_INVALID, "%s: 'entropy_coef' must be a finite number", file);
    st->entropy_coef = ec->valuedouble;
    const cJSON *el = cJSON_GetObjectItemCaseSensitive(j, "entropy_last");
    if (!cJSON_IsNull(el) && !(cJSON_IsNumber(el) && isfinite(el->valuedouble)))
        return base_err_set(BASE_ERR_INVALID, "%s: 'entropy_last' must be a finite number or null", file);
    st->entropy_last = cJSON_IsNumber(el) ? el->valuedouble : INFINITY;
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(j, "seed");
    double want_seed = (double)(uint64_t)cfg->seed;
    if (!cJSON_IsNumber(seed) || seed->valuedouble != want_seed)
        return base_err_set(BASE_ERR_INVALID, "%s: 'seed' is not the recipe's seed (%.17g): a checkpoint of another run",
                            file, want_seed);
    const cJSON *sum = cJSON_GetObjectItemCaseSensitive(j, "summary");
    if (!cJSON_IsObject(sum)) return base_err_set(BASE_ERR_INVALID, "%s: 'summary' must be an object", file);
    k->summary = cJSON_Duplicate(sum, 1);
    return BASE_OK;
}

base_status run_ckpt_parse_state(const recipe *rc, const char *dir, const char *text, size_t len, run_ckpt **out) {
    *out = NULL;
    char *file = base_path_join(dir, "trainer_state.json");
    cJSON *j;
    base_status s = base_json_parse(text, len, file, &j);
    if (!s) {
        run_ckpt *k = base_xcalloc(1, sizeof *k);
        k->dir = base_xstrdup(dir);
        s = parse_state(rc, j, file, k);
        cJSON_Delete(j);
        if (s) run_ckpt_free(k);
        else *out = k;
    }
    free(file);
    return s;
}

base_status run_ckpt_check_cursor(const run_ckpt *k, int64_t nrows) {
    if (k->st.data_pos <= nrows) return BASE_OK;
    return base_err_set(BASE_ERR_INVALID,
                        "%s/trainer_state.json: 'data_pos' = %lld is past the end of stage '%s''s data (%lld rows): "
                        "did the dataset change since the checkpoint?",
                        k->dir, (long long)k->st.data_pos, k->st.stage_name, (long long)nrows);
}

/* A safetensors file of a checkpoint opens (header, sizes). */
static base_status verify_st(const char *dir, const char *name) {
    char *p = base_path_join(dir, name);
    st_file *f;
    base_status s = st_open(p, &f);
    if (!s) st_close(f);
    free(p);
    return s;
}

/* A weights file set of a checkpoint (STEM.safetensors or its shards and
 * index) opens. */
static base_status verify_weights(const char *dir, const char *stem) {
    st_dir *d;
    base_status s = st_dir_open_stem(dir, stem, &d);
    if (!s) st_dir_close(d);
    return s;
}

/* Everything a resume reads from the checkpoint dir, checked up front. */
static base_status open_ckpt(const recipe *rc, const char *dir, run_ckpt **out) {
    *out = NULL;
    char *p = base_path_join(dir, "trainer_state.json"), *text;
    size_t n;
    base_status s = base_read_file(p, &text, &n);
    free(p);
    if (s) return s;
    run_ckpt *k;
    s = run_ckpt_parse_state(rc, dir, text, n, &k);
    free(text);
    if (s) return s;
    p = base_path_join(dir, k->adapter ? "adapter_config.json" : "config.json");
    cJSON *cfg;
    s = base_json_parse_file(p, &cfg);
    if (!s && !cJSON_IsObject(cfg)) s = base_err_set(BASE_ERR_PARSE, "%s: not a JSON object", p);
    if (!s) cJSON_Delete(cfg);
    free(p);
    if (!s) s = k->adapter ? verify_st(dir, "adapter_model.safetensors") : verify_weights(dir, "model");
    if (!s && k->has_optim && !k->optim_shards) s = verify_st(dir, "optimizer.safetensors");
    for (int64_t r = 0; !s && k->has_optim && r < k->optim_shards; r++) { /* every shard is there and sound */
        char *nm = run_ckpt_optim_shard_name((int)r, (int)k->optim_shards);
        s = verify_st(dir, nm);
        free(nm);
    }
    if (!s && k->has_ref) s = verify_weights(dir, "ref");
    if (s) run_ckpt_free(k);
    else *out = k;
    return s;
}

/* checkpoints/corrupt-step-N (or .2, .3, ... when that exists). */
static base_status set_aside(const char *root, int64_t step) {
    char nm[64], bad[96];
    snprintf(nm, sizeof nm, "step-%lld", (long long)step);
    char *from = base_path_join(root, nm), *to = NULL;
    for (int i = 1; !to || base_file_exists(to); i++) {
        free(to);
        if (i == 1) snprintf(bad, sizeof bad, "corrupt-%s", nm);
        else snprintf(bad, sizeof bad, "corrupt-%s.%d", nm, i);
        to = base_path_join(root, bad);
    }
    base_status s = BASE_OK;
    if (rename(from, to) < 0) s = base_err_set(BASE_ERR_IO, "rename %s to %s: %s", from, to, base_strerror_now());
    else base_warn("%s set aside as %s (it does not verify)", from, to);
    free(from), free(to);
    return s;
}

base_status run_ckpt_latest(run_ctx *c, run_ckpt **out) {
    *out = NULL;
    char *root = base_path_join(c->dir, "checkpoints");
    int n;
    int64_t *all = list_ckpts(root, 1, &n);
    base_status s = BASE_OK;
    char *why = NULL; /* why the newest one does not verify */
    int bad = -1, good = -1; /* indices of the newest one that does not / that does */
    run_ckpt *k = NULL;
    for (int i = n - 1; i >= 0 && !k; i--) {
        char nm[64];
        snprintf(nm, sizeof nm, "step-%lld", (long long)all[i]);
        char *dir = base_path_join(root, nm);
        if (open_ckpt(c->rc, dir, &k)) {
            if (!why) why = base_xstrdup(base_err_msg()), bad = i;
        } else {
            good = i;
        }
        free(dir);
    }
    if (why && !c->opts.resume_last_good) {
        base_buf b = {0};
        base_buf_printf(&b, "%s/step-%lld does not verify: %s; ", root, (long long)all[bad], why);
        if (k)
            base_buf_printf(&b, "the newest checkpoint that does is %s: resume from it with --resume-from-last-good",
                            k->dir);
        else base_buf_puts(&b, "no older checkpoint verifies either");
        s = base_err_set(BASE_ERR_INVALID, "%s", b.data);
        base_buf_free(&b);
        run_ckpt_free(k);
        k = NULL;
    } else if (why && !k) {
        s = base_err_set(BASE_ERR_INVALID, "%s/step-%lld does not verify (%s), and no older checkpoint does", root,
                         (long long)all[bad], why);
    } else if (why) { /* --resume-from-last-good: the newer bad ones out of the way */
        base_warn("%s/step-%lld does not verify: %s", root, (long long)all[bad], why);
        for (int i = n - 1; i > good && !s; i--) s = set_aside(root, all[i]);
        if (s) {
            run_ckpt_free(k);
            k = NULL;
        }
    }
    free(why);
    free(all);
    free(root);
    *out = k;
    return s;
}

const run_train_state *run_ckpt_state(const run_ckpt *k) { return &k->st; }
const char *run_ckpt_dir(const run_ckpt *k) { return k->dir; }
int run_ckpt_has_ref(const run_ckpt *k) { return k->has_ref; }
cJSON *run_ckpt_summary(const run_ckpt *k) { return cJSON_Duplicate(k->summary, 1); }

base_status run_ckpt_load_optim(const run_ckpt *k, const model *policy, optim *o) {
    if (!k->has_optim) return base_err_set(BASE_ERR_INVALID, "%s: no optimizer state to resume from", k->dir);
    int64_t *src = NULL, src_n = 0;
    base_status s = BASE_OK;
    if (k->optim_shards && policy && model_get_ep(policy)) { /* an EP 1 run's shards onto this EP index's arena */
        src = base_xmalloc(((size_t)o->n_params + 1) * sizeof *src);
        s = run_ep_whole_offsets(policy, o, src, &src_n);
    }
    if (!s) s = run_ckpt_read_optim(k->dir, (int)k->optim_shards, k->optim_numel, src, src_n, o);
    free(src);
    if (!s) s = optim_counters_set(o, (optim_counters){k->optim_step, k->optim_skipped});
    return s;
}

base_status run_ckpt_load_optim_ep(run_ctx *c, const run_ckpt *k, optim *o) {
    if (!k->has_optim) return base_err_set(BASE_ERR_INVALID, "%s: no optimizer state to resume from", k->dir);
    if (k->optim_shards)
        return base_err_set(BASE_ERR_UNSUPPORTED,
                            "%s: ZeRO 1 shard files (optimizer-rank-R-of-%lld) of an expert_parallel_size 1 run do not "
                            "resume at zero_stage %d with expert parallelism (not built): resume it at zero_stage 0 or 1",
                            k->dir, (long long)k->optim_shards, o->zero_stage);
    base_status s = run_zero_ep_read_optim(c, k->dir, o);
    if (!s) s = optim_counters_set(o, (optim_counters){k->optim_step, k->optim_skipped});
    return s;
}

base_status run_ckpt_load_ref(const run_ckpt *k, model *ref) {
    st_dir *d;
    base_status s = st_dir_open_stem(k->dir, "ref", &d);
    if (s) return s;
    int64_t most = 1; /* one tensor at a time, as model_load */
    for (int i = 0; i < model_nparams(ref); i++)
        if (model_param_at(ref, i)->numel > most) most = model_param_at(ref, i)->numel;
    float *host = base_xmalloc((size_t)most * sizeof(float));
    for (int i = 0; i < model_nparams(ref) && !s; i++) {
        const model_param *pp = model_param_at(ref, i);
        s = st_dir_load(d, pp->name, TENSOR_F32, host, pp->numel);
        if (!s) model_param_from_host(ref, i, host);
    }
    if (!s) model_sync_compute(ref);
    free(host);
    st_dir_close(d);
    return s;
}

void run_ckpt_free(run_ckpt *k) {
    if (!k) return;
    cJSON_Delete(k->summary);
    free(k->dir);
    free(k);
}
