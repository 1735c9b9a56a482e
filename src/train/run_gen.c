/*
 * Generate-and-score for the stages that sample without training (eval,
 * sample): chunks of prompts, K completions each through the rollout
 * engine, decoded into reward samples and scored by the stage's pool.
 */
#include <stdlib.h>
#include <string.h>

#include "run_internal.h"

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
    return reward_pool_score_groups(g->pool, (const cJSON *const *)g->samples, (int64_t)np * g->K, g->group_off, np,
                                    &g->sc);
}

void run_gen_free(run_gen *g) {
    for (int i = 0; i < g->np * g->K; i++) cJSON_Delete(g->samples[i]);
    for (int i = 0; i < g->chunk; i++) tok_ids_free(&g->pids[i]), free(g->ptext[i]);
    free(g->pids), free(g->ptext), free(g->pp), free(g->pl), free(g->samples);
    free(g->group_off);
    reward_scores_free(&g->sc);
    rollout_free(g->eng);
    memset(g, 0, sizeof *g);
}
