/*
 * Memory planning for the stages: the sizes a stage's buffers are planned
 * with come from what the run needs, not only from the recipe's caps.
 *
 * A stage's prompt length cap (max_prompt_length, 512 by default) is the
 * most a prompt may keep; the longest prompt its data actually has is
 * usually far less (the demo's: 17 tokens). The rollout engine's prefill
 * workspace and latent cache, the trainer's activation arena (tokens per
 * micro-batch = sequences x (prompt + completion)) and the step buffers
 * are all sized by the longest prompt the stage will encode, found by
 * encoding every prompt of its rows once when the stage opens: still one
 * allocation per role at start-up, nothing allocated in the step loop.
 */
#include <stdlib.h>
#include <string.h>

#include "run_internal.h"

base_status run_stage_prompt_tokens(run_ctx *c, const recipe_stage_cfg *st, int64_t cap, int64_t *out) {
    *out = cap;
    if (!c->prompt_tokens) c->prompt_tokens = base_xcalloc((size_t)c->cfg->n_stages + 1, sizeof *c->prompt_tokens);
    int64_t *memo = &c->prompt_tokens[st->index];
    if (*memo > 0 && *memo <= cap) { /* planned when the stage opened (its datasets do not change) */
        *out = *memo;
        return BASE_OK;
    }
    cJSON **rows;
    char **where;
    int64_t n;
    base_status s = run_stage_rows(c, st, &rows, &where, &n);
    if (s) return s;
    tok_ids ids = {0};
    int64_t longest = 0;
    for (int64_t i = 0; i < n && !s; i++) {
        char *text = NULL;
        s = run_prompt(c, st, rows[i], where[i], cap, &ids, &text);
        free(text);
        if (!s && ids.n > longest) longest = ids.n;
    }
    tok_ids_free(&ids);
    free(rows);
    run_where_free(where, n);
    if (s) return s;
    /* no rows: the cap (the stage reports its empty data itself) */
    *memo = longest > 0 ? longest : cap;
    *out = *memo;
    return BASE_OK;
}
