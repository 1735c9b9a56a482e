/*
 * The reward pool: N workers, each with one lua_State holding every
 * script of the spec, made once and reused for every batch. Samples are
 * handed out dynamically (base_pool_for); since every call starts from a
 * collected heap with math.random reseeded from the sample, and globals are
 * frozen, results do not depend on the worker count or the order.
 *
 * Group functions (score_group) run once per group of completions of one
 * prompt, as further items of the same loop.
 *
 * Combination (as TRL's sum over functions with nil = NaN ignored):
 * total = sum over functions with a number of weight * score; NaN when no
 * function gave a number. Errors count as nil and are logged, one line
 * each: "sample ID: NAME (PATH): message".
 */
#include "reward/reward_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct reward_pool {
    reward_spec spec;   /* own copy */
    reward_limits limits;
    base_pool *threads;
    int n_workers;
    rh_state **states;  /* [n_workers] */
    char **columns;     /* required dataset columns (union) */
    int n_columns;
    char **col_owner;   /* [n_columns] path of the first script needing it */
    FILE *log;
    int own_log;
    char *log_path;     /* NULL: stderr */
    char log_tag[32];   /* "rank R: " before each line (reward_pool_set_log_tag), else "" */
    pthread_mutex_t log_mu;
    atomic_llong n_errors;
    char **first_error; /* [spec.n] the first error line of each function, or NULL (under log_mu) */
};

void reward_limits_default(reward_limits *l) {
    l->instructions = 50 * 1000 * 1000;
    l->memory_bytes = (size_t)64 << 20;
    reward_sandbox_limits_default(&l->sandbox);
}

static int is_pipeline_field(const char *c) {
    return !strcmp(c, "prompt") || !strcmp(c, "completion") || !strcmp(c, "completion_tokens") ||
           !strcmp(c, "finish_reason");
}

static char *dir_of(const char *path) {
    const char *s = strrchr(path, '/');
    if (!s) return base_xstrdup(".");
    size_t n = (size_t)(s - path);
    if (n == 0) n = 1;
    char *d = base_xmalloc(n + 1);
    memcpy(d, path, n);
    d[n] = 0;
    return d;
}

base_status reward_pool_create(const reward_spec *spec, int n_workers, const reward_limits *limits,
                               const char *error_log_path, reward_pool **out) {
    *out = NULL;
    if (!spec || spec->n <= 0) return base_err_set(BASE_ERR_INVALID, "reward pool: empty spec");
    if (n_workers < 0 || n_workers > REWARD_MAX_WORKERS)
        return base_err_set(BASE_ERR_INVALID, "reward pool: %d workers (expected 0 = all cores, or 1 to %d)",
                            n_workers, REWARD_MAX_WORKERS);
    if (limits && (limits->memory_bytes < ((size_t)REWARD_MIN_MEMORY_MB << 20) ||
                   limits->memory_bytes > ((size_t)REWARD_MAX_MEMORY_MB << 20) ||
                   limits->instructions < REWARD_MIN_INSTRUCTIONS))
        return base_err_set(BASE_ERR_INVALID,
                            "reward pool: limits of %zu MiB and %lld instructions per call (expected %d to %d MiB, "
                            "at least %d instructions)",
                            limits->memory_bytes >> 20, (long long)limits->instructions, REWARD_MIN_MEMORY_MB,
                            REWARD_MAX_MEMORY_MB, REWARD_MIN_INSTRUCTIONS);
    reward_pool *p = base_xcalloc(1, sizeof *p);
    if (limits) p->limits = *limits;
    else reward_limits_default(&p->limits);
    for (int i = 0; i < spec->n; i++) {
        base_status st = reward_spec_add(&p->spec, spec->fns[i].path, spec->fns[i].weight, spec->fns[i].name,
                                         spec->fns[i].params);
        if (st) {
            reward_spec_free(&p->spec);
            free(p);
            return st;
        }
    }
    pthread_mutex_init(&p->log_mu, NULL);
    if (error_log_path) {
        p->log = fopen(error_log_path, "a");
        if (!p->log) {
            base_status st = base_err_set(BASE_ERR_IO, "reward error log %s: %s", error_log_path, base_strerror_now());
            reward_spec_free(&p->spec);
            free(p);
            return st;
        }
        p->own_log = 1;
        /* one write(2) per line (O_APPEND): the ranks of a multi-process
         * run append to one log without mixing their lines */
        setvbuf(p->log, NULL, _IOFBF, 1 << 16);
        p->log_path = base_xstrdup(error_log_path);
    } else {
        p->log = stderr;
    }
    /* require() looks in each script's directory, then the built-ins */
    int n_dirs = 0;
    char **dirs = base_xcalloc((size_t)spec->n + 1, sizeof(char *));
    for (int i = 0; i <= spec->n; i++) {
        char *d = i < spec->n ? dir_of(p->spec.fns[i].path) : base_xstrdup(reward_builtin_dir());
        int dup = 0;
        for (int j = 0; j < n_dirs; j++) dup |= !strcmp(dirs[j], d);
        if (dup) free(d);
        else dirs[n_dirs++] = d;
    }
    p->first_error = base_xcalloc((size_t)spec->n, sizeof(char *));
    p->threads = base_pool_create(n_workers);
    p->n_workers = base_pool_size(p->threads);
    p->states = base_xcalloc((size_t)p->n_workers, sizeof *p->states);
    base_status st = BASE_OK;
    for (int w = 0; w < p->n_workers && st == BASE_OK; w++) {
        p->states[w] = rh_open(&p->limits, (const char *const *)dirs, n_dirs);
        for (int f = 0; f < p->spec.n && st == BASE_OK; f++) {
            char **cols = NULL;
            int nc = 0;
            st = rh_load(p->states[w], &p->spec.fns[f], w == 0 ? &cols : NULL, &nc);
            for (int c = 0; c < nc; c++) {
                int dup = is_pipeline_field(cols[c]);
                for (int k = 0; k < p->n_columns && !dup; k++) dup = !strcmp(p->columns[k], cols[c]);
                if (dup) {
                    free(cols[c]);
                    continue;
                }
                p->columns = base_xrealloc(p->columns, sizeof(char *) * (size_t)(p->n_columns + 1));
                p->col_owner = base_xrealloc(p->col_owner, sizeof(char *) * (size_t)(p->n_columns + 1));
                p->columns[p->n_columns] = cols[c];
                p->col_owner[p->n_columns++] = p->spec.fns[f].path;
            }
            free(cols);
        }
    }
    for (int i = 0; i < n_dirs; i++) free(dirs[i]);
    free(dirs);
    if (st != BASE_OK) {
        reward_pool_destroy(p);
        return st;
    }
    *out = p;
    return BASE_OK;
}

void reward_pool_destroy(reward_pool *p) {
    if (!p) return;
    for (int w = 0; w < p->n_workers; w++) rh_close(p->states[w]);
    free(p->states);
    base_pool_destroy(p->threads);
    for (int i = 0; i < p->n_columns; i++) free(p->columns[i]);
    free(p->columns);
    free(p->col_owner);
    if (p->own_log) fclose(p->log);
    else fflush(p->log);
    pthread_mutex_destroy(&p->log_mu);
    for (int f = 0; p->first_error && f < p->spec.n; f++) free(p->first_error[f]);
    free(p->first_error);
    free(p->log_path);
    reward_spec_free(&p->spec);
    free(p);
}

int reward_pool_n_funcs(const reward_pool *p) { return p->spec.n; }
const char *reward_pool_func_name(const reward_pool *p, int f) { return p->spec.fns[f].name; }
const char *reward_pool_func_path(const reward_pool *p, int f) { return p->spec.fns[f].path; }
double reward_pool_func_weight(const reward_pool *p, int f) { return p->spec.fns[f].weight; }
int reward_pool_n_workers(const reward_pool *p) { return p->n_workers; }
int64_t reward_pool_n_errors(const reward_pool *p) { return atomic_load(&((reward_pool *)p)->n_errors); }
const char *reward_pool_error_log(const reward_pool *p) { return p->log_path; }

void reward_pool_set_log_tag(reward_pool *p, const char *tag) {
    pthread_mutex_lock(&p->log_mu);
    snprintf(p->log_tag, sizeof p->log_tag, "%s%s", tag ? tag : "", tag && *tag ? ": " : "");
    pthread_mutex_unlock(&p->log_mu);
}

char *reward_pool_first_error(reward_pool *p, int f) {
    if (f < 0 || f >= p->spec.n) return NULL;
    pthread_mutex_lock(&p->log_mu);
    char *e = p->first_error[f] ? base_xstrdup(p->first_error[f]) : NULL;
    pthread_mutex_unlock(&p->log_mu);
    return e;
}

base_status reward_pool_check(reward_pool *p) {
    for (int f = 0; f < p->spec.n; f++) {
        char err[600];
        if (rh_check(p->states[0], f, err, sizeof err))
            return base_err_set(BASE_ERR_INVALID, "reward '%s' (%s): check failed: %s", p->spec.fns[f].name,
                                p->spec.fns[f].path, err);
    }
    return BASE_OK;
}

const char *const *reward_required_columns(const reward_pool *p, int *n) {
    *n = p->n_columns;
    return (const char *const *)p->columns;
}

base_status reward_check_row(const reward_pool *p, const cJSON *row, const char *where) {
    if (!cJSON_IsObject(row)) return base_err_set(BASE_ERR_INVALID, "%s: not a JSON object", where);
    for (int i = 0; i < p->n_columns; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, p->columns[i]);
        if (!v || cJSON_IsNull(v))
            return base_err_set(BASE_ERR_INVALID, "%s: missing column '%s' needed by %s", where, p->columns[i],
                                p->col_owner[i]);
    }
    return BASE_OK;
}

void reward_scores_free(reward_scores *s) {
    if (!s) return;
    if (s->parts)
        for (int64_t i = 0; i < s->n * s->n_funcs; i++) cJSON_Delete(s->parts[i]);
    free(s->total);
    free(s->score);
    free(s->status);
    free(s->parts);
    memset(s, 0, sizeof *s);
}

/* FNV-1a over the text fields that identify a sample */
static uint64_t fnv1a(uint64_t h, const char *s) {
    if (!s) return h;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
    return h ^ 0xff;
}

static void sample_id(const cJSON *s, int64_t i, char *out, size_t cap) {
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(s, "id");
    if (cJSON_IsString(id)) snprintf(out, cap, "%s", id->valuestring);
    else if (cJSON_IsNumber(id)) snprintf(out, cap, "%.17g", id->valuedouble);
    else snprintf(out, cap, "#%lld", (long long)i);
}

static void log_error(reward_pool *p, const char *id, int f, const char *msg) {
    atomic_fetch_add(&p->n_errors, 1);
    pthread_mutex_lock(&p->log_mu);
    fprintf(p->log, "%ssample %s: %s (%s): %s\n", p->log_tag, id, p->spec.fns[f].name, p->spec.fns[f].path, msg);
    fflush(p->log);
    if (!p->first_error[f]) {
        base_buf b = {0};
        base_buf_printf(&b, "sample %s: %s", id, msg);
        p->first_error[f] = b.data;
    }
    pthread_mutex_unlock(&p->log_mu);
}

typedef struct {
    reward_pool *p;
    const cJSON *const *samples;
    int64_t n;
    const int64_t *group_off; /* [n_groups + 1], or NULL: groups of one */
    reward_scores *out;
} score_job;

static uint64_t sample_seed(const cJSON *sample) {
    uint64_t seed = 0xcbf29ce484222325ULL;
    seed = fnv1a(seed, base_json_str(sample, "prompt", NULL));
    return fnv1a(seed, base_json_str(sample, "completion", NULL));
}

/* Per-sample functions on sample i. */
static void score_sample(score_job *j, int64_t i, int worker) {
    reward_pool *p = j->p;
    rh_state *s = p->states[worker];
    const cJSON *sample = j->samples[i];
    uint64_t seed = sample_seed(sample);
    int nf = p->spec.n;
    for (int f = 0; f < nf; f++) {
        if (s->fn_group[f]) continue;
        double v;
        cJSON *parts = NULL;
        char err[600];
        int rc = rh_call(s, f, sample, seed, &v, &parts, err, sizeof err);
        size_t k = (size_t)i * (size_t)nf + (size_t)f;
        j->out->status[k] = (uint8_t)rc;
        j->out->score[k] = rc == REWARD_OK ? v : NAN;
        j->out->parts[k] = parts;
        if (rc == REWARD_ERROR) {
            char id[128];
            sample_id(sample, i, id, sizeof id);
            log_error(p, id, f, err);
        }
    }
}

/* Group functions on group g: samples [off[g], off[g + 1]). */
static void score_group(score_job *j, int64_t g, int worker) {
    reward_pool *p = j->p;
    rh_state *s = p->states[worker];
    const int64_t i0 = j->group_off ? j->group_off[g] : g;
    const int G = (int)(j->group_off ? j->group_off[g + 1] - i0 : 1), nf = p->spec.n;
    if (G == 0) return;
    uint64_t seed = 0xcbf29ce484222325ULL;
    for (int k = 0; k < G; k++) seed ^= sample_seed(j->samples[i0 + k]) + 0x9e3779b97f4a7c15ULL * (uint64_t)k;
    double *v = base_xmalloc((size_t)G * sizeof(double));
    cJSON **parts = base_xmalloc((size_t)G * sizeof(cJSON *));
    uint8_t *st = base_xmalloc((size_t)G);
    enum { CAP = 600 };
    char err[CAP], *errs = base_xmalloc((size_t)G * CAP);
    for (int f = 0; f < nf; f++) {
        if (!s->fn_group[f]) continue;
        rh_call_group(s, f, j->samples + i0, G, seed, v, parts, st, err, errs, CAP);
        char id[128], id2[128];
        if (err[0]) { /* the call failed as a whole: one line for the group */
            sample_id(j->samples[i0], i0, id, sizeof id);
            sample_id(j->samples[i0 + G - 1], i0 + G - 1, id2, sizeof id2);
            char where[300];
            snprintf(where, sizeof where, "%s .. %s (group of %d)", id, id2, G);
            log_error(p, where, f, err);
        }
        for (int k = 0; k < G; k++) {
            size_t q = (size_t)(i0 + k) * (size_t)nf + (size_t)f;
            j->out->status[q] = st[k];
            j->out->score[q] = v[k];
            j->out->parts[q] = parts[k];
            if (st[k] == REWARD_ERROR && !err[0]) {
                sample_id(j->samples[i0 + k], i0 + k, id, sizeof id);
                log_error(p, id, f, errs + (size_t)k * CAP);
            }
        }
    }
    free(v), free(parts), free(st), free(errs);
}

/* Items [0, n) are samples, [n, n + n_groups) groups (when a group function exists). */
static void score_item(void *ctx, int64_t i, int worker) {
    score_job *j = ctx;
    if (i < j->n) score_sample(j, i, worker);
    else score_group(j, i - j->n, worker);
}

base_status reward_pool_score_groups(reward_pool *p, const cJSON *const *samples, int64_t n,
                                     const int64_t *group_off, int64_t n_groups, reward_scores *out) {
    reward_scores_free(out);
    if (group_off) {
        int ok = n_groups >= 0 && group_off[0] == 0 && group_off[n_groups] == n;
        for (int64_t g = 0; ok && g < n_groups; g++) ok = group_off[g + 1] >= group_off[g];
        if (!ok) return base_err_set(BASE_ERR_INVALID, "reward_pool_score: group offsets do not cover the %lld samples",
                                     (long long)n);
    } else {
        n_groups = n;
    }
    for (int64_t i = 0; i < n; i++)
        if (!cJSON_IsObject(samples[i]))
            return base_err_set(BASE_ERR_INVALID, "reward_pool_score: sample %lld is not a JSON object", (long long)i);
    out->n = n;
    out->n_funcs = p->spec.n;
    size_t m = (size_t)(n > 0 ? n : 1) * (size_t)p->spec.n;
    out->total = base_xcalloc((size_t)(n > 0 ? n : 1), sizeof(double));
    out->score = base_xcalloc(m, sizeof(double));
    out->status = base_xcalloc(m, 1);
    out->parts = base_xcalloc(m, sizeof(cJSON *));
    int any_group = 0;
    for (int f = 0; f < p->spec.n; f++) any_group |= p->states[0]->fn_group[f];
    score_job j = {p, samples, n, group_off, out};
    base_pool_for(p->threads, n + (any_group ? n_groups : 0), score_item, &j);
    /* the totals, once every function has run */
    for (int64_t i = 0; i < n; i++) {
        double total = 0;
        int any = 0;
        for (int f = 0; f < p->spec.n; f++) {
            size_t k = (size_t)i * (size_t)p->spec.n + (size_t)f;
            if (out->status[k] != REWARD_OK) continue;
            total += p->spec.fns[f].weight * out->score[k];
            any = 1;
        }
        out->total[i] = any ? total : NAN;
    }
    return BASE_OK;
}

base_status reward_pool_score(reward_pool *p, const cJSON *const *samples, int64_t n, reward_scores *out) {
    return reward_pool_score_groups(p, samples, n, NULL, 0, out);
}
