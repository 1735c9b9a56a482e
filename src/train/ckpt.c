/*
 * Checkpoints: RUN/checkpoints/step-N/
 *   model.safetensors       policy weights, Hugging Face names, float32
 *   config.json             the model's config (loadable by transformers)
 *   tokenizer.json, tokenizer_config.json
 *   optimizer.safetensors   AdamW moments "m.NAME", "v.NAME" (float32)
 *   ref.safetensors         the reference model (GRPO with beta != 0)
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
    int has_ref, has_optim;
    cJSON *summary;
};

static base_status rm_rf(const char *path) {
    if (strchr(path, '\'')) return base_err_set(BASE_ERR_IO, "%s: refusing a path with a quote", path);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", path);
    if (system(cmd) != 0) return base_err_set(BASE_ERR_IO, "%s: could not remove", path);
    return BASE_OK;
}

static base_status copy_file(const char *src, const char *dst) {
    char *text;
    size_t n;
    base_status s = base_read_file(src, &text, &n);
    if (s) return s;
    s = base_write_file_atomic(dst, text, n);
    free(text);
    return s;
}

static void fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Host copy of a device buffer (the CPU backend's pointer as is). */
static float *host_view(const struct ops *ops, const float *dev, int64_t n, float **owned) {
    *owned = NULL;
    if (ops->device == TENSOR_CPU) return (float *)dev;
    *owned = base_xmalloc((size_t)n * sizeof(float));
    ops->download(*owned, dev, (size_t)n * sizeof(float));
    return *owned;
}

static base_status write_weights(const model *m, const char *path) {
    float *own;
    const float *host = host_view(model_ops(m), model_params(m), model_numel(m), &own);
    st_writer *w = st_writer_new();
    for (int i = 0; i < model_nparams(m); i++) {
        const model_param *p = model_param_at(m, i);
        st_writer_add(w, p->name, TENSOR_F32, p->ndim, p->shape, host + p->offset);
    }
    st_writer_meta(w, "format", "pt");
    base_status s = st_writer_write(w, path);
    st_writer_free(w);
    free(own);
    return s;
}

base_status run_save_model(run_ctx *c, const model *m, const char *dir) {
    base_status s = base_mkdir_p(dir);
    if (s) return s;
    char *p = base_path_join(dir, "model.safetensors");
    s = write_weights(m, p);
    free(p);
    const char *files[] = {"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"};
    const char *from[] = {c->policy_src, c->tok_dir, c->tok_dir, c->policy_src};
    for (int i = 0; i < 4 && !s; i++) {
        char *src = base_path_join(from[i], files[i]), *dst = base_path_join(dir, files[i]);
        if (base_file_exists(src)) s = copy_file(src, dst);
        else if (i < 2) s = base_err_set(BASE_ERR_IO, "%s: missing (needed in every checkpoint)", src);
        free(src), free(dst);
    }
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
    cJSON_AddNumberToObject(j, "samples_lines", (double)c->samples_lines);
    cJSON_AddNumberToObject(j, "seed", (double)c->seed);
    cJSON_AddBoolToObject(j, "has_optimizer", o != NULL);
    cJSON_AddBoolToObject(j, "has_ref", has_ref);
    if (o) {
        optim_counters oc = optim_counters_get(o);
        cJSON_AddNumberToObject(j, "optim_step", (double)oc.step);
        cJSON_AddNumberToObject(j, "optim_skipped", (double)oc.n_skipped);
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

base_status run_ckpt_save(run_ctx *c, const run_train_state *st, const optim *opt, const model *ref, int keep) {
    char *root = base_path_join(c->dir, "checkpoints");
    char name[64], tmpname[64];
    snprintf(name, sizeof name, "step-%lld", (long long)st->total_steps);
    snprintf(tmpname, sizeof tmpname, ".tmp-step-%lld", (long long)st->total_steps);
    char *dir = base_path_join(root, name), *tmp = base_path_join(root, tmpname);
    base_status s = base_mkdir_p(root);
    if (!s && base_file_exists(tmp)) s = rm_rf(tmp);
    if (!s) s = run_save_model(c, c->policy, tmp);
    /* Test hook: GRPO_TEST_CKPT_DELAY_MS widens the window between the
     * first and the last file of a checkpoint so tests can kill -9 the
     * process inside a checkpoint write (tests/train/test_run.c). */
    const char *delay = getenv("GRPO_TEST_CKPT_DELAY_MS");
    if (delay) usleep((useconds_t)atoi(delay) * 1000);
    if (!s && opt) {
        char *p = base_path_join(tmp, "optimizer.safetensors");
        s = write_optim(opt, p);
        free(p);
    }
    if (!s && ref) {
        char *p = base_path_join(tmp, "ref.safetensors");
        s = write_weights(ref, p);
        free(p);
    }
    if (!s) { /* the completion marker, last */
        cJSON *j = state_json(c, st, opt, ref != NULL);
        char *text = cJSON_Print(j), *p = base_path_join(tmp, "trainer_state.json");
        s = base_write_file_atomic(p, text, strlen(text));
        cJSON_free(text);
        cJSON_Delete(j);
        free(p);
    }
    if (!s) {
        fsync_dir(tmp);
        if (base_file_exists(dir)) { /* same step saved again (stage end): replace */
            char *old = base_path_join(root, ".old-step");
            if (base_file_exists(old)) rm_rf(old);
            if (rename(dir, old) < 0) s = base_err_set(BASE_ERR_IO, "rename %s: %s", dir, base_strerror_now());
            if (!s && rename(tmp, dir) < 0) s = base_err_set(BASE_ERR_IO, "rename %s: %s", tmp, base_strerror_now());
            if (!s) rm_rf(old);
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
            rm_rf(p);
            free(p);
        }
        free(all);
    }
    free(root), free(dir), free(tmp);
    return s ? base_err_wrap(s, "checkpoint %s", name) : BASE_OK;
}

base_status run_ckpt_latest(run_ctx *c, run_ckpt **out) {
    *out = NULL;
    char *root = base_path_join(c->dir, "checkpoints");
    int n;
    int64_t *all = list_ckpts(root, 1, &n);
    base_status s = BASE_OK;
    if (n > 0) {
        char nm[64];
        snprintf(nm, sizeof nm, "step-%lld", (long long)all[n - 1]);
        run_ckpt *k = base_xcalloc(1, sizeof *k);
        k->dir = base_path_join(root, nm);
        char *p = base_path_join(k->dir, "trainer_state.json");
        cJSON *j;
        s = base_json_parse_file(p, &j);
        free(p);
        if (!s) {
            run_train_state *st = &k->st;
            st->stage_index = (int)base_json_int(j, "stage_index", -1, NULL);
            snprintf(st->stage_name, sizeof st->stage_name, "%s", base_json_str(j, "stage_name", ""));
            st->stage_done = base_json_bool(j, "stage_done", 0, NULL);
            st->stage_step = base_json_int(j, "stage_step", 0, NULL);
            st->total_steps = base_json_int(j, "total_steps", 0, NULL);
            st->data_epoch = base_json_int(j, "data_epoch", 0, NULL);
            st->data_pos = base_json_int(j, "data_pos", 0, NULL);
            st->entropy_coef = base_json_num(j, "entropy_coef", 0, NULL);
            const cJSON *el = cJSON_GetObjectItemCaseSensitive(j, "entropy_last");
            st->entropy_last = cJSON_IsNumber(el) ? el->valuedouble : INFINITY;
            st->metrics_lines = base_json_int(j, "metrics_lines", 0, NULL);
            st->samples_lines = base_json_int(j, "samples_lines", 0, NULL);
            k->optim_step = base_json_int(j, "optim_step", 0, NULL);
            k->optim_skipped = base_json_int(j, "optim_skipped", 0, NULL);
            k->has_optim = base_json_bool(j, "has_optimizer", 0, NULL);
            k->has_ref = base_json_bool(j, "has_ref", 0, NULL);
            const cJSON *sum = cJSON_GetObjectItemCaseSensitive(j, "summary");
            k->summary = cJSON_IsObject(sum) ? cJSON_Duplicate(sum, 1) : cJSON_CreateObject();
            if (st->stage_index < 0 || (uint64_t)base_json_int(j, "seed", -1, NULL) != c->seed)
                s = base_err_set(BASE_ERR_INVALID, "%s: trainer_state.json is from another run (seed or stage differ)",
                                 k->dir);
            cJSON_Delete(j);
        }
        if (s) run_ckpt_free(k);
        else *out = k;
    }
    free(all);
    free(root);
    return s;
}

const run_train_state *run_ckpt_state(const run_ckpt *k) { return &k->st; }
const char *run_ckpt_dir(const run_ckpt *k) { return k->dir; }
int run_ckpt_has_ref(const run_ckpt *k) { return k->has_ref; }
cJSON *run_ckpt_summary(const run_ckpt *k) { return cJSON_Duplicate(k->summary, 1); }

base_status run_ckpt_load_optim(const run_ckpt *k, optim *o) {
    if (!k->has_optim) return base_err_set(BASE_ERR_INVALID, "%s: no optimizer state to resume from", k->dir);
    char *p = base_path_join(k->dir, "optimizer.safetensors");
    st_file *f;
    base_status s = st_open(p, &f);
    free(p);
    if (s) return s;
    float *m = base_xmalloc((size_t)o->n * sizeof(float)), *v = base_xcalloc((size_t)o->n, sizeof(float));
    optim_state_download(o, m, v); /* keeps what the file does not name */
    for (int i = 0; i < o->n_params && !s; i++) {
        const optim_param *pp = &o->params[i];
        base_buf a = {0}, b = {0};
        base_buf_printf(&a, "m.%s", pp->name);
        base_buf_printf(&b, "v.%s", pp->name);
        s = st_file_load(f, a.data, TENSOR_F32, m + pp->offset, pp->numel);
        if (!s) s = st_file_load(f, b.data, TENSOR_F32, v + pp->offset, pp->numel);
        base_buf_free(&a), base_buf_free(&b);
    }
    if (!s) {
        optim_state_upload(o, m, v);
        s = optim_counters_set(o, (optim_counters){k->optim_step, k->optim_skipped});
    }
    free(m), free(v);
    st_close(f);
    return s;
}

base_status run_ckpt_load_ref(const run_ckpt *k, model *ref) {
    char *p = base_path_join(k->dir, "ref.safetensors");
    st_file *f;
    base_status s = st_open(p, &f);
    free(p);
    if (s) return s;
    int64_t n = model_numel(ref);
    float *host = base_xcalloc((size_t)n, sizeof(float));
    for (int i = 0; i < model_nparams(ref) && !s; i++) {
        const model_param *pp = model_param_at(ref, i);
        s = st_file_load(f, pp->name, TENSOR_F32, host + pp->offset, pp->numel);
    }
    if (!s) model_ops(ref)->upload(model_params(ref), host, (size_t)n * sizeof(float));
    free(host);
    st_close(f);
    return s;
}

void run_ckpt_free(run_ckpt *k) {
    if (!k) return;
    cJSON_Delete(k->summary);
    free(k->dir);
    free(k);
}
