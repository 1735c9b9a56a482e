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
    rollout_limits lim = {.max_seqs = g->chunk * g->K, .max_prompts = g->chunk, .max_group = g->K,
                          .max_prompt_len = g->max_prompt, .max_new_tokens = g->max_new};
    return rollout_new(c->policy, &lim, &g->eng);
}

base_status run_gen_chunk(run_gen *g, cJSON **rows, char **where, int np, uint32_t step_key,
                          uint32_t prompt_base) {
    run_ctx *c = g->c;
    base_status s = BASE_OK;
    for (int i = 0; i < g->np * g->K; i++) cJSON_Delete(g->samples[i]), g->samples[i] = NULL;
    g->np = 0;
    for (int i = 0; i < np && !s; i++) {
        free(g->ptext[i]);
        g->ptext[i] = NULL;
        s = run_prompt(c, g->st, rows[i], where[i], g->max_prompt, &g->pids[i], &g->ptext[i]);
        g->pp[i] = g->pids[i].ids;
        g->pl[i] = (int32_t)g->pids[i].n;
        if (!s) s = run_check_positions(c, g->st, rows[i], where[i], g->pids[i].n, "prompt", 1);
    }
    if (s) return s;
    rollout_request rq = {.n_prompts = np, .prompt_ids = g->pp, .prompt_len = g->pl, .G = g->K, .sampling = g->sp,
                          .max_new_tokens = g->max_new, .stop_ids = g->stop_ids, .n_stop_ids = g->n_stop_ids,
                          .stop_strings = g->stop.items, .n_stop_strings = g->stop.n, .tok = c->tok,
                          .seed = c->seed, .step = step_key, .prompt_base = prompt_base};
    s = rollout_generate(g->eng, &rq, &g->res);
    if (s) return s;
    g->gen_seconds += g->res.seconds;
    g->new_tokens += g->res.new_tokens;
    for (int i = 0; i < np * g->K; i++) {
        const rollout_completion *co = &g->res.out[i];
        char *text = run_completion_text(c, co->ids, co->len, co->finish == ROLLOUT_FINISH_STOP);
        g->samples[i] = run_make_sample(rows[i / g->K], g->ptext[i / g->K], text, co->len,
                                        rollout_finish_name(co->finish));
        free(text);
    }
    g->np = np;
    /* score_group scripts see the K samples of one prompt together */
    s = reward_pool_score_groups(g->pool, (const cJSON *const *)g->samples, (int64_t)np * g->K, g->group_off, np,
                                 &g->sc);
    if (s) return s;
    run_reward_errors_add(&g->errs, &g->sc);
    return g->step_batches ? BASE_OK : run_reward_errors_close(&g->errs, g->pool, "generation batch");
}

void run_gen_free(run_gen *g) {
    for (int i = 0; i < g->np * g->K; i++) cJSON_Delete(g->samples[i]);
    for (int i = 0; i < g->chunk; i++) tok_ids_free(&g->pids[i]), free(g->ptext[i]);
    free(g->pids), free(g->ptext), free(g->pp), free(g->pl), free(g->samples);
    free(g->group_off);
    reward_scores_free(&g->sc);
    run_reward_errors_free(&g->errs);
    rollout_free(g->eng);
    memset(g, 0, sizeof *g);
}
