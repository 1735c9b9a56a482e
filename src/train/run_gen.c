/*
 * Generate-and-score for the stages that sample (grpo, eval, sample):
 * chunks of prompts, K completions each through the rollout engine,
 * decoded into reward samples and scored by the stage's pool; the reward
 * error policy and the reward parts' means these stages share.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "run_internal.h"

/* ---- the reward error policy ------------------------------------------- */

void run_reward_errors_init(run_reward_errors *e, const run_ctx *c, int F) {
    memset(e, 0, sizeof *e);
    e->max_rate = c->cfg->max_reward_error_rate;
    e->window = (int)c->cfg->reward_error_window; /* the recipe checked [1, 10^6] */
    e->F = F;
    e->n = base_xcalloc((size_t)e->window, sizeof *e->n);
    e->err = base_xcalloc((size_t)e->window * (size_t)(F > 0 ? F : 1), sizeof *e->err);
    e->cur_err = base_xcalloc((size_t)(F > 0 ? F : 1), sizeof *e->cur_err);
}

void run_reward_errors_add(run_reward_errors *e, const reward_scores *sc) {
    e->cur_n += sc->n;
    for (int64_t i = 0; i < sc->n; i++)
        for (int f = 0; f < e->F && f < sc->n_funcs; f++)
            e->cur_err[f] += sc->status[(size_t)i * (size_t)sc->n_funcs + (size_t)f] == REWARD_ERROR;
}

base_status run_reward_errors_close(run_reward_errors *e, reward_pool *pool, const char *unit) {
    int slot = e->next;
    e->next = (e->next + 1) % e->window;
    if (e->filled < e->window) e->filled++;
    e->n[slot] = e->cur_n;
    e->last_errors = 0;
    for (int f = 0; f < e->F; f++) {
        e->err[(size_t)slot * (size_t)e->F + (size_t)f] = e->cur_err[f];
        e->last_errors += e->cur_err[f];
        e->cur_err[f] = 0;
    }
    e->cur_n = 0;
    e->total_errors += e->last_errors;
    int64_t n = 0;
    for (int k = 0; k < e->filled; k++) n += e->n[k];
    if (n == 0) return BASE_OK;
    for (int f = 0; f < e->F; f++) {
        int64_t bad = 0;
        for (int k = 0; k < e->filled; k++) bad += e->err[(size_t)k * (size_t)e->F + (size_t)f];
        double rate = (double)bad / (double)n;
        if (!(rate > e->max_rate)) continue;
        char *first = reward_pool_first_error(pool, f);
        const char *log = reward_pool_error_log(pool);
        base_status s = base_err_set(
            BASE_ERR_INVALID,
            "reward '%s' (%s) failed on %lld of %lld samples (%.0f%%) in the last %d %s%s, more than "
            "max_reward_error_rate = %g allows; first error: %s; every error is in %s",
            reward_pool_func_name(pool, f), reward_pool_func_path(pool, f), (long long)bad, (long long)n,
            100.0 * rate, e->filled, unit, e->filled == 1 ? "" : "s", e->max_rate, first ? first : "(not logged)",
            log ? log : "the reward error log (stderr)");
        free(first);
        return s;
    }
    return BASE_OK;
}

void run_reward_errors_free(run_reward_errors *e) {
    free(e->n), free(e->err), free(e->cur_err);
    memset(e, 0, sizeof *e);
}

/* ---- reward parts ------------------------------------------------------- */

void run_reward_parts_init(run_reward_parts *a, int F) {
    memset(a, 0, sizeof *a);
    a->F = F;
    size_t n = (size_t)(F > 0 ? F : 1);
    a->n = base_xcalloc(n, sizeof *a->n);
    a->name = base_xcalloc(n, sizeof *a->name);
    a->sum = base_xcalloc(n, sizeof *a->sum);
    a->cnt = base_xcalloc(n, sizeof *a->cnt);
}

void run_reward_parts_add(run_reward_parts *a, const reward_scores *sc, int64_t i) {
    for (int f = 0; f < a->F && f < sc->n_funcs; f++) {
        const cJSON *parts = sc->parts[(size_t)i * (size_t)sc->n_funcs + (size_t)f];
        for (const cJSON *it = parts ? parts->child : NULL; it; it = it->next) {
            int k = 0;
            while (k < a->n[f] && strcmp(a->name[f][k], it->string)) k++;
            if (k == a->n[f]) { /* a part not seen before */
                a->name[f] = base_xrealloc(a->name[f], (size_t)(k + 1) * sizeof(char *));
                a->sum[f] = base_xrealloc(a->sum[f], (size_t)(k + 1) * sizeof(double));
                a->cnt[f] = base_xrealloc(a->cnt[f], (size_t)(k + 1) * sizeof(int64_t));
                a->name[f][k] = base_xstrdup(it->string);
                a->sum[f][k] = 0;
                a->cnt[f][k] = 0;
                a->n[f]++;
            }
            a->sum[f][k] += it->valuedouble;
            a->cnt[f][k]++;
        }
    }
}

void run_reward_parts_put(const run_reward_parts *a, const reward_pool *pool, cJSON *obj) {
    for (int f = 0; f < a->F; f++)
        for (int k = 0; k < a->n[f]; k++) {
            base_buf key = {0};
            base_buf_printf(&key, "rewards/%s/%s", reward_pool_func_name(pool, f), a->name[f][k]);
            cJSON_AddNumberToObject(obj, key.data, a->sum[f][k] / (double)a->cnt[f][k]);
            base_buf_free(&key);
        }
}

void run_reward_parts_reset(run_reward_parts *a) {
    for (int f = 0; f < a->F; f++) {
        for (int k = 0; k < a->n[f]; k++) free(a->name[f][k]);
        free(a->name[f]), free(a->sum[f]), free(a->cnt[f]);
        a->name[f] = NULL, a->sum[f] = NULL, a->cnt[f] = NULL;
        a->n[f] = 0;
    }
}

void run_reward_parts_free(run_reward_parts *a) {
    if (!a->n) return;
    run_reward_parts_reset(a);
    free(a->n), free(a->name), free(a->sum), free(a->cnt);
    memset(a, 0, sizeof *a);
}

/* ---- prompt lengths ----------------------------------------------------- */

void run_prompt_format(run_ctx *c, const recipe_stage_cfg *st, const cJSON *row, base_buf *out) {
    const char *col = st->datasets[0]->prompt_column;
    const cJSON *pv = cJSON_GetObjectItemCaseSensitive(row, col);
    int list = cJSON_IsArray(pv) || cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(row, "messages"));
    if (!list && !cJSON_IsString(pv)) return;
    /* every prompt is rendered with the stage's template (run_render_messages) */
    const char *t = run_template(c, st);
    base_buf_puts(out, "template '");
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)t; *p && n < 80; p++, n++) {
        if (*p == '\n') base_buf_puts(out, "\\n");
        else if (*p == '\t') base_buf_puts(out, "\\t");
        else if (*p == '\\') base_buf_puts(out, "\\\\");
        else if (*p < 0x20 || *p == 0x7f) base_buf_printf(out, "\\%03d", *p);
        else base_buf_append(out, p, 1);
    }
    base_buf_puts(out, n < strlen(t) ? "...'" : "'");
    if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(row, "prompt_template")))
        base_buf_puts(out, " (the prompt as it was sampled)");
    else if (list) base_buf_puts(out, " (a list of messages)");
    else if (!strcmp(t, "r1-zero")) base_buf_puts(out, " (the R1-Zero paper's instructions around the question)");
}

base_status run_check_positions(run_ctx *c, const recipe_stage_cfg *st, const cJSON *row, const char *where,
                                int64_t n, const char *what, int prompt) {
    int64_t max_pos = model_cfg(c->policy)->max_position_embeddings;
    if (prompt ? n < max_pos : n <= max_pos) return BASE_OK;
    base_buf fmt = {0};
    run_prompt_format(c, st, row, &fmt);
    base_status s = base_err_set(
        BASE_ERR_LIMIT, "%s: the %s has %lld tokens%s%s; the model takes only %lld positions "
        "(max_position_embeddings)%s: %s",
        where, what, (long long)n, fmt.len ? " with " : "", fmt.len ? fmt.data : "", (long long)max_pos,
        prompt ? ", and generation needs at least one" : "",
        prompt ? "use a shorter template (the recipe's 'template' key, --template on the command line) or set "
                 "max_prompt_length below it (prompts keep their last tokens)"
               : "use a shorter template (the recipe's 'template' key, --template on the command line) or set "
                 "max_length to at most that (samples keep their first max_length tokens)");
    base_buf_free(&fmt);
    return s;
}

/* ---- generate and score ------------------------------------------------- */

int run_gen_chunk_size(const recipe_gen_cfg *gen, int64_t nrows) {
    int64_t k = gen->num_generations;
    int64_t chunk = k >= 256 || k < 1 ? 1 : 256 / k; /* about 256 sequences per rollout call */
    if (chunk > nrows) chunk = nrows > 0 ? nrows : 1;
    return (int)chunk;
}

base_status run_gen_init(run_gen *g, run_ctx *c, const recipe_stage_cfg *st, const recipe_gen_cfg *gen,
                         reward_pool *pool, int chunk) {
    memset(g, 0, sizeof *g);
    g->c = c;
    g->st = st;
    g->pool = pool;
    g->K = (int)gen->num_generations; /* the recipe checked the ranges of these */
    /* planned by the longest prompt of the stage's data (truncation to it
     * changes no prompt) */
    base_status ps = run_stage_prompt_tokens(c, st, gen->max_prompt_length, &g->max_prompt);
    if (ps) return ps;
    g->max_new = gen->max_completion_length;
    g->chunk = chunk > 0 ? chunk : 1;
    g->sp = (rollout_sampling){(float)gen->temperature, (float)gen->top_p, (int)gen->top_k, (float)gen->min_p};
    g->n_stop_ids = run_stop_ids(c, g->stop_ids, 8);
    g->stop = gen->stop;
    size_t n = (size_t)g->chunk;
    g->pids = base_xcalloc(n, sizeof *g->pids);
    g->ptext = base_xcalloc(n, sizeof *g->ptext);
    g->pp = base_xcalloc(n, sizeof *g->pp);
    g->pl = base_xcalloc(n, sizeof *g->pl);
    g->samples = base_xcalloc(n * (size_t)g->K, sizeof *g->samples);
    g->group_off = base_xmalloc((n + 1) * sizeof *g->group_off);
    for (size_t i = 0; i <= n; i++) g->group_off[i] = (int64_t)i * g->K;
    run_reward_errors_init(&g->errs, c, reward_pool_n_funcs(pool));
    /* the largest run_split share of a chunk: ceil(chunk / world) */
    g->local_chunk = (g->chunk + c->world - 1) / c->world;
    if (c->world > 1) {
        size_t nk = n * (size_t)g->K;
        g->all = base_xcalloc(nk, sizeof *g->all);
        g->all_ids = base_xmalloc(nk * (size_t)g->max_new * sizeof(int32_t) + 1);
        g->all_logp = base_xmalloc(nk * (size_t)g->max_new * sizeof(float) + 1);
        g->local_samples = base_xcalloc((size_t)g->local_chunk * (size_t)g->K, sizeof *g->local_samples);
    }
    rollout_limits lim = {.max_seqs = g->local_chunk * g->K, .max_prompts = g->local_chunk, .max_group = g->K,
                          .max_prompt_len = g->max_prompt, .max_new_tokens = g->max_new};
    return rollout_new(c->policy, &lim, &g->eng);
}

/* ---- sharing a chunk between ranks ------------------------------------------ */

/* One completion as it travels between ranks (native byte order: the ranks
 * of a job run the same program on the same architecture):
 *   int64 len, int32 finish, int32 ids[len], float logp[len],
 *   double total, per function {double score, uint8 status, parts},
 *   parts = uint32 count (UINT32_MAX: none), per part {uint32 n, name, double},
 *   uint32 n, completion text. */
static void put(base_buf *b, const void *p, size_t n) { base_buf_append(b, p, n); }

static void pack_completion(base_buf *b, const rollout_completion *co, const reward_scores *sc, int64_t i,
                            const char *text) {
    int64_t len = co->len;
    int32_t fin = (int32_t)co->finish;
    put(b, &len, sizeof len);
    put(b, &fin, sizeof fin);
    put(b, co->ids, (size_t)len * sizeof(int32_t));
    put(b, co->logp, (size_t)len * sizeof(float));
    put(b, &sc->total[i], sizeof(double));
    for (int f = 0; f < sc->n_funcs; f++) {
        size_t k = (size_t)i * (size_t)sc->n_funcs + (size_t)f;
        put(b, &sc->score[k], sizeof(double));
        put(b, &sc->status[k], 1);
        const cJSON *parts = sc->parts ? sc->parts[k] : NULL;
        uint32_t np = parts ? 0 : UINT32_MAX;
        for (const cJSON *it = parts ? parts->child : NULL; it; it = it->next) np++;
        put(b, &np, sizeof np);
        for (const cJSON *it = parts ? parts->child : NULL; it; it = it->next) {
            uint32_t nl = (uint32_t)strlen(it->string);
            put(b, &nl, sizeof nl);
            put(b, it->string, nl);
            put(b, &it->valuedouble, sizeof(double));
        }
    }
    uint32_t nt = (uint32_t)strlen(text);
    put(b, &nt, sizeof nt);
    put(b, text, nt);
}

typedef struct {
    const char *p, *end;
} reader;

static void get(reader *r, void *dst, size_t n) {
    if ((size_t)(r->end - r->p) < n) base_die("run_gen: a rank's rollout record is truncated (a bug)");
    memcpy(dst, r->p, n);
    r->p += n;
}

/* Completion i of the chunk from r into g (out, samples, sc). */
static void unpack_completion(run_gen *g, reader *r, cJSON **rows, int64_t i) {
    run_ctx *c = g->c;
    int F = g->sc.n_funcs;
    int64_t len;
    int32_t fin;
    get(r, &len, sizeof len);
    get(r, &fin, sizeof fin);
    if (len < 0 || len > g->max_new) base_die("run_gen: a completion of %lld tokens from a rank (a bug)", (long long)len);
    int32_t *ids = g->all_ids + (size_t)i * (size_t)g->max_new;
    float *lp = g->all_logp + (size_t)i * (size_t)g->max_new;
    get(r, ids, (size_t)len * sizeof(int32_t));
    get(r, lp, (size_t)len * sizeof(float));
    g->all[i] = (rollout_completion){ids, lp, len, (rollout_finish)fin};
    get(r, &g->sc.total[i], sizeof(double));
    for (int f = 0; f < F; f++) {
        size_t k = (size_t)i * (size_t)F + (size_t)f;
        get(r, &g->sc.score[k], sizeof(double));
        get(r, &g->sc.status[k], 1);
        uint32_t np;
        get(r, &np, sizeof np);
        g->sc.parts[k] = np == UINT32_MAX ? NULL : cJSON_CreateObject();
        for (uint32_t q = 0; q < (np == UINT32_MAX ? 0 : np); q++) {
            uint32_t nl;
            get(r, &nl, sizeof nl);
            char *name = base_xmalloc((size_t)nl + 1);
            get(r, name, nl);
            name[nl] = 0;
            double v;
            get(r, &v, sizeof v);
            cJSON_AddNumberToObject(g->sc.parts[k], name, v);
            free(name);
        }
    }
    uint32_t nt;
    get(r, &nt, sizeof nt);
    char *text = base_xmalloc((size_t)nt + 1);
    get(r, text, nt);
    text[nt] = 0;
    (void)c;
    g->samples[i] = run_make_sample(rows[i / g->K], g->ptext[i / g->K], text, len, rollout_finish_name(g->all[i].finish));
    free(text);
}

/* Every rank's share of the chunk (np prompts; this rank's [lo, hi)) to
 * every rank: g->out, g->samples and g->sc for all np * K completions. */
static base_status share_chunk(run_gen *g, cJSON **rows, int np, int64_t lo, int64_t hi) {
    run_ctx *c = g->c;
    int K = g->K, W = c->world, F = reward_pool_n_funcs(g->pool);
    base_buf mine = {0};
    for (int64_t i = 0; i < (hi - lo) * K; i++) {
        const char *text = base_json_str(g->local_samples[i], "completion", "");
        pack_completion(&mine, &g->res.out[i], &g->sc_local, i, text);
    }
    int64_t nb = (int64_t)mine.len;
    int64_t *sizes = base_xmalloc((size_t)W * sizeof *sizes);
    base_status s = dist_allgather(c->host, &nb, sizes, 1, DIST_I64);
    size_t *counts = base_xmalloc((size_t)W * sizeof *counts), total = 0;
    for (int r = 0; r < W && !s; r++) counts[r] = (size_t)sizes[r], total += counts[r];
    char *all = s ? NULL : base_xmalloc(total + 1);
    if (!s) s = dist_allgatherv(c->host, mine.data ? mine.data : "", all, counts, DIST_U8);
    /* new tokens of every rank; the rollout time of the slowest */
    int64_t tok = g->res.new_tokens;
    double sec = g->res.seconds;
    if (!s) s = dist_allreduce(c->host, &tok, 1, DIST_I64, DIST_SUM);
    if (!s) s = dist_allreduce(c->host, &sec, 1, DIST_F64, DIST_MAX);
    if (!s) {
        reward_scores_free(&g->sc);
        int64_t n = (int64_t)np * K;
        g->sc.n = n;
        g->sc.n_funcs = F;
        g->sc.total = base_xmalloc((size_t)n * sizeof(double) + 1);
        g->sc.score = base_xmalloc((size_t)n * (size_t)F * sizeof(double) + 1);
        g->sc.status = base_xmalloc((size_t)n * (size_t)F + 1);
        g->sc.parts = base_xcalloc((size_t)n * (size_t)F + 1, sizeof(cJSON *));
        reader rd = {all, all + total};
        for (int64_t i = 0; i < n; i++) unpack_completion(g, &rd, rows, i);
        if (rd.p != rd.end) base_die("run_gen: %lld bytes left over from the ranks' records (a bug)",
                                     (long long)(rd.end - rd.p));
        g->out = g->all;
        g->gen_seconds += sec;
        g->new_tokens += tok;
    }
    base_buf_free(&mine);
    free(sizes), free(counts), free(all);
    return s ? base_err_wrap(s, "sharing the rollout results of %d ranks", W) : BASE_OK;
}

base_status run_gen_chunk(run_gen *g, cJSON **rows, char **where, int np, uint32_t step_key,
                          uint32_t prompt_base) {
    run_ctx *c = g->c;
    base_status s = BASE_OK;
    for (int i = 0; i < g->np * g->K; i++) cJSON_Delete(g->samples[i]), g->samples[i] = NULL;
    g->np = 0;
    g->out = NULL;
    /* every rank renders every prompt of the chunk (its samples carry them) */
    for (int i = 0; i < np && !s; i++) {
        free(g->ptext[i]);
        g->ptext[i] = NULL;
        s = run_prompt(c, g->st, rows[i], where[i], g->max_prompt, &g->pids[i], &g->ptext[i]);
        g->pp[i] = g->pids[i].ids;
        g->pl[i] = (int32_t)g->pids[i].n;
        if (!s) s = run_check_positions(c, g->st, rows[i], where[i], g->pids[i].n, "prompt", 1);
    }
    if (s) return s;
    /* this rank's share: prompts [lo, hi), keyed by their chunk index */
    int64_t lo = 0, hi = np;
    if (c->world > 1) run_split(np, c->rank, c->world, &lo, &hi);
    int nloc = (int)(hi - lo), K = g->K;
    cJSON **samples = c->world > 1 ? g->local_samples : g->samples;
    reward_scores *sc = c->world > 1 ? &g->sc_local : &g->sc;
    memset(&g->res, 0, sizeof g->res);
    run_zero3_phase(c); /* ZeRO 3: ranks generate different numbers of passes (run_zero3_sync below) */
    /* expert parallelism: a rank without prompts still joins its EP group's
     * MoE exchanges until every rank of the group is done (rollout_generate) */
    if (nloc > 0 || c->ep > 1) {
        rollout_request rq = {.n_prompts = nloc, .prompt_ids = g->pp + lo, .prompt_len = g->pl + lo, .G = K,
                              .sampling = g->sp, .max_new_tokens = g->max_new, .stop_ids = g->stop_ids,
                              .n_stop_ids = g->n_stop_ids, .stop_strings = g->stop.items, .n_stop_strings = g->stop.n,
                              .tok = c->tok, .seed = c->seed, .step = step_key,
                              .prompt_base = prompt_base + (uint32_t)lo};
        s = rollout_generate(g->eng, &rq, &g->res);
        s = run_ep_pass_failed(c, s, "the rollout"); /* EP: its group waits in a decode step's exchange */
        if (!s && c->ep > 1) {
            c->ep_decode_steps += g->res.decode_steps, c->ep_join_steps += g->res.join_steps;
            c->ep_join_seconds += g->res.join_seconds, c->ep_gen_seconds += g->res.seconds;
        }
        for (int i = 0; i < nloc * K && !s; i++) {
            const rollout_completion *co = &g->res.out[i];
            char *text = run_completion_text(c, co->ids, co->len, co->finish == ROLLOUT_FINISH_STOP);
            cJSON_Delete(samples[i]);
            samples[i] = run_make_sample(rows[lo + i / K], g->ptext[lo + i / K], text, co->len,
                                         rollout_finish_name(co->finish));
            free(text);
        }
        /* score_group scripts see the K samples of one prompt together */
        if (!s)
            s = reward_pool_score_groups(g->pool, (const cJSON *const *)samples, (int64_t)nloc * K, g->group_off, nloc,
                                         sc);
    }
    { /* ZeRO 3: the ranks' prefill / decode passes gather weights together: a
       * rank with fewer passes (shorter completions, fewer prompts) pads */
        base_status z = run_zero3_sync(c);
        if (!s) s = z;
    }
    if (c->world > 1) {
        s = run_agree(c, s, "generating and scoring a chunk");
        if (!s) s = share_chunk(g, rows, np, lo, hi);
        for (int i = 0; i < nloc * K; i++) cJSON_Delete(samples[i]), samples[i] = NULL;
    } else if (!s) {
        g->out = g->res.out;
        g->gen_seconds += g->res.seconds;
        g->new_tokens += g->res.new_tokens;
    }
    if (s) return s;
    g->np = np;
    run_reward_errors_add(&g->errs, &g->sc);
    return g->step_batches ? BASE_OK : run_reward_errors_close(&g->errs, g->pool, "generation batch");
}

void run_gen_free(run_gen *g) {
    for (int i = 0; i < g->np * g->K; i++) cJSON_Delete(g->samples[i]);
    for (int i = 0; i < g->chunk; i++) tok_ids_free(&g->pids[i]), free(g->ptext[i]);
    free(g->pids), free(g->ptext), free(g->pp), free(g->pl), free(g->samples);
    free(g->group_off);
    reward_scores_free(&g->sc);
    reward_scores_free(&g->sc_local);
    free(g->all), free(g->all_ids), free(g->all_logp), free(g->local_samples);
    run_reward_errors_free(&g->errs);
    rollout_free(g->eng);
    memset(g, 0, sizeof *g);
}
