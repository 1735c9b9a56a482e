/*
 * Pipeline helpers shared by the stages: datasets, prompt templates, reward
 * samples, stop conditions, reward pools, data order and the run's output
 * files (metrics.jsonl, samples.jsonl, summary.json).
 */
#include <stdlib.h>
#include <string.h>

#include "run_internal.h"

/* ---- datasets ----------------------------------------------------------- */

static base_status load_jsonl(const char *path, int64_t limit, run_dataset *d) {
    base_jsonl *r;
    base_status s = base_jsonl_open(path, &r);
    if (s) return s;
    int64_t cap = 0;
    cJSON *v;
    while ((s = base_jsonl_next(r, &v)) != BASE_ERR_EOF) {
        if (s) { /* nothing trained yet: stop at the first bad line */
            base_jsonl_close(r);
            return s;
        }
        if (!cJSON_IsObject(v)) {
            s = base_err_set(BASE_ERR_INVALID, "%s:%ld: expected a JSON object", path, base_jsonl_line(r));
            cJSON_Delete(v);
            base_jsonl_close(r);
            return s;
        }
        if (d->n == cap) {
            cap = cap ? 2 * cap : 256;
            d->rows = base_xrealloc(d->rows, (size_t)cap * sizeof *d->rows);
            d->lines = base_xrealloc(d->lines, (size_t)cap * sizeof *d->lines);
        }
        d->rows[d->n] = v;
        d->lines[d->n] = base_jsonl_line(r);
        d->n++;
        if (limit > 0 && d->n >= limit) break;
    }
    base_jsonl_close(r);
    if (d->n == 0) return base_err_set(BASE_ERR_INVALID, "%s: no rows", path);
    return BASE_OK;
}

base_status run_dataset_get(run_ctx *c, const recipe_dataset *ds, run_dataset **out) {
    *out = NULL;
    const char *name = ds->name;
    for (int i = 0; i < c->n_datasets; i++)
        if (!strcmp(c->datasets[i].name, name)) {
            if (!c->datasets[i].rows) break;
            *out = &c->datasets[i];
            return BASE_OK;
        }
    char *resolved;
    if (ds->producer) { /* "stage:NAME": that sample stage's output */
        const char *o = ds->producer->sample.output;
        if (o) {
            resolved = recipe_resolve_path(c->rc, o);
        } else {
            char fname[300];
            snprintf(fname, sizeof fname, "%s.jsonl", ds->producer->name);
            resolved = base_path_join(c->dir, fname);
        }
    } else {
        resolved = recipe_resolve_path(c->rc, ds->path);
    }
    c->datasets = base_xrealloc(c->datasets, (size_t)(c->n_datasets + 1) * sizeof *c->datasets);
    run_dataset *d = &c->datasets[c->n_datasets];
    memset(d, 0, sizeof *d);
    base_status s = load_jsonl(resolved, ds->limit, d);
    if (s) {
        for (int64_t i = 0; i < d->n; i++) cJSON_Delete(d->rows[i]);
        free(d->rows), free(d->lines), free(resolved);
        memset(d, 0, sizeof *d);
        return base_err_wrap(s, "dataset '%s'", name);
    }
    d->name = base_xstrdup(name);
    d->path = resolved;
    d->prompt_column = base_xstrdup(ds->prompt_column);
    c->n_datasets++;
    *out = d;
    return BASE_OK;
}

base_status run_stage_rows(run_ctx *c, const recipe_stage_cfg *stage, cJSON ***rows, char ***where, int64_t *n) {
    *rows = NULL;
    *where = NULL;
    *n = 0;
    int64_t total = 0;
    for (int k = 0; k < stage->dataset.n; k++) {
        run_dataset *d;
        base_status s = run_dataset_get(c, stage->datasets[k], &d);
        if (s) {
            free(*rows);
            run_where_free(*where, total);
            *rows = NULL, *where = NULL;
            return s;
        }
        *rows = base_xrealloc(*rows, (size_t)(total + d->n) * sizeof **rows);
        *where = base_xrealloc(*where, (size_t)(total + d->n) * sizeof **where);
        for (int64_t i = 0; i < d->n; i++) {
            base_buf b = {0};
            base_buf_printf(&b, "%s:%ld", d->path, d->lines[i]);
            (*rows)[total + i] = d->rows[i];
            (*where)[total + i] = b.data;
        }
        total += d->n;
    }
    *n = total;
    return BASE_OK;
}

void run_where_free(char **where, int64_t n) {
    if (!where) return;
    for (int64_t i = 0; i < n; i++) free(where[i]);
    free(where);
}

/* ---- prompts ------------------------------------------------------------ */

char *run_quote(const char *s) {
    cJSON *j = cJSON_CreateString(s ? s : "");
    char *t = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return t;
}

const char *run_template(const run_ctx *c, const recipe_stage_cfg *stage) {
    return stage->template_name ? stage->template_name : c->cfg->template_name;
}

int run_template_is_chat(const char *tmpl) { return !strcmp(tmpl, "chat") || !strcmp(tmpl, "r1"); }

const char *run_open_think_tail(const char *prompt) {
    const char *last = NULL, *p = prompt, *q;
    while ((q = strstr(p, "<think>"))) last = q, p = q + 1;
    if (!last || strstr(last, "</think>")) return "";
    for (const char *r = last + 7; *r; r++)
        if (*r != ' ' && *r != '\n' && *r != '\r' && *r != '\t') return "";
    return last;
}

/* The role list of a conversation, for messages ("system, user, user"). */
static void role_list(const tok_msg *msgs, int n, base_buf *b) {
    for (int i = 0; i < n; i++) base_buf_printf(b, "%s%s", i ? ", " : "", msgs[i].role ? msgs[i].role : "?");
}

/* A string template renders one question: [system] user, the system text
 * into {system} (the recipe's system_prompt and the row's joined by a blank
 * line, as the DeepSeek format joins system prompts). */
static base_status render_string(run_ctx *c, const char *tmpl, const tok_msg *msgs, int n, const char *where,
                                 tok_ids *ids, char **text) {
    int users = 0, order_ok = 1;
    for (int i = 0; i < n; i++) {
        if (!strcmp(msgs[i].role, "user")) users++;
        else if (strcmp(msgs[i].role, "system") || users) order_ok = 0;
    }
    const char *t = !strcmp(tmpl, "r1-zero") ? tok_template_r1zero : !strcmp(tmpl, "raw") ? "{prompt}" : tmpl;
    if (users != 1 || !order_ok) {
        base_buf r = {0};
        role_list(msgs, n, &r);
        char *shown = run_quote(tmpl);
        base_status s = base_err_set(BASE_ERR_INVALID,
                                     "%s: template %s renders one question (a user message as {prompt}, after an "
                                     "optional system message as {system}), not this conversation (%s): use a chat "
                                     "template ('chat' or 'r1') with a model that has one, or prompt/completion rows",
                                     where, shown, r.data ? r.data : "no messages");
        cJSON_free(shown);
        base_buf_free(&r);
        return s;
    }
    base_buf sys = {0};
    if (c->cfg->system_prompt) base_buf_puts(&sys, c->cfg->system_prompt);
    const char *q = NULL;
    for (int i = 0; i < n; i++) {
        if (!strcmp(msgs[i].role, "user")) {
            q = msgs[i].content;
            continue;
        }
        if (!strstr(t, "{system}")) {
            char *shown = run_quote(tmpl);
            base_status s = base_err_set(BASE_ERR_INVALID,
                                         "%s: the conversation has a system message but template %s has no "
                                         "{system}: it would be dropped",
                                         where, shown);
            cJSON_free(shown);
            base_buf_free(&sys);
            return s;
        }
        if (sys.len) base_buf_puts(&sys, "\n\n");
        base_buf_puts(&sys, msgs[i].content);
    }
    tok_template_vars v = {q, sys.data};
    *text = tok_template_render(c->tok, t, &v);
    base_status s = tok_template_encode(c->tok, t, &v, TOK_ENC_ADD_SPECIAL, ids);
    base_buf_free(&sys);
    return s ? base_err_wrap(s, "%s", where) : BASE_OK;
}

base_status run_render_messages(run_ctx *c, const recipe_stage_cfg *stage, const tok_msg *msgs, int n,
                                const char *where, tok_ids *ids, char **text) {
    const char *tmpl = run_template(c, stage);
    ids->n = 0;
    *text = NULL;
    for (int i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return base_err_set(BASE_ERR_INVALID, "%s: message %d needs string role and content", where, i);
    if (!run_template_is_chat(tmpl)) return render_string(c, tmpl, msgs, n, where, ids, text);
    base_status s = tok_chat_check(c->tok);
    if (s)
        return base_err_wrap(s, "%s: template '%s' is the DeepSeek chat format, not this model's: use the template "
                                "the model was trained with (for data/tiny: '{prompt}\\n')", where, tmpl);
    const char *system = c->cfg->system_prompt;
    tok_msg *m = base_xcalloc((size_t)n + 1, sizeof *m);
    int k = 0;
    if (system) m[k++] = (tok_msg){"system", system};
    for (int i = 0; i < n; i++) m[k++] = msgs[i];
    int flags = TOK_CHAT_GENERATION_PROMPT | (!strcmp(tmpl, "r1") ? TOK_CHAT_R1 : 0);
    s = tok_chat_render(c->tok, m, k, flags, text);
    if (!s) s = tok_chat_encode(c->tok, m, k, flags, ids);
    free(m);
    return s ? base_err_wrap(s, "%s", where) : BASE_OK;
}

/* A row written by a sample stage: its "prompt" is the text the model saw
 * (rendered, BOS included), "prompt_template" the template that rendered
 * it. Used as is when the stage's template is the same. */
static base_status recorded_prompt(run_ctx *c, const recipe_stage_cfg *stage, const cJSON *row, const char *where,
                                   const char *recorded, tok_ids *ids, char **text) {
    const char *tmpl = run_template(c, stage), *prompt = base_json_str(row, "prompt", "");
    if (strcmp(recorded, tmpl)) {
        char *r = run_quote(recorded), *t = run_quote(tmpl);
        base_status s = base_err_set(BASE_ERR_INVALID,
                                     "%s: the prompt was rendered with template %s when it was sampled, but this "
                                     "stage's template is %s: set the stage's template to %s (the data and the "
                                     "template must agree)",
                                     where, r, t, r);
        cJSON_free(r), cJSON_free(t);
        return s;
    }
    *text = base_xstrdup(prompt);
    base_status s = tok_encode(c->tok, prompt, strlen(prompt), 0, ids);
    return s ? base_err_wrap(s, "%s: prompt", where) : BASE_OK;
}

base_status run_prompt(run_ctx *c, const recipe_stage_cfg *stage, const cJSON *row, const char *where,
                       int64_t max_len, tok_ids *ids, char **text) {
    ids->n = 0;
    *text = NULL;
    const char *col = stage->datasets[0]->prompt_column; /* the first dataset's */
    const cJSON *pv = cJSON_GetObjectItemCaseSensitive(row, col);
    const char *recorded = base_json_str(row, "prompt_template", NULL);
    base_status s;
    if (cJSON_IsString(pv) && recorded && !strcmp(col, "prompt")) {
        s = recorded_prompt(c, stage, row, where, recorded, ids, text);
    } else if (cJSON_IsArray(pv)) { /* conversational prompt: a list of messages */
        int n = cJSON_GetArraySize(pv), k = 0;
        tok_msg *msgs = base_xcalloc((size_t)n + 1, sizeof *msgs);
        for (const cJSON *m = pv->child; m; m = m->next, k++) {
            msgs[k] = (tok_msg){base_json_str(m, "role", NULL), base_json_str(m, "content", NULL)};
            if (!msgs[k].role || !msgs[k].content) {
                free(msgs);
                return base_err_set(BASE_ERR_INVALID, "%s: '%s' messages need string role and content", where, col);
            }
        }
        s = run_render_messages(c, stage, msgs, k, where, ids, text);
        free(msgs);
    } else if (cJSON_IsString(pv)) {
        tok_msg q = {"user", pv->valuestring};
        s = run_render_messages(c, stage, &q, 1, where, ids, text);
    } else {
        return base_err_set(BASE_ERR_INVALID, "%s: missing prompt column '%s' (a string or a list of messages)",
                            where, col);
    }
    if (s) { /* the message names the row */
        free(*text);
        *text = NULL;
        return s;
    }
    if (ids->n == 0) {
        free(*text);
        *text = NULL;
        return base_err_set(BASE_ERR_INVALID, "%s: the prompt encodes to no tokens", where);
    }
    if (max_len > 0 && ids->n > max_len) { /* left-truncate, as TRL */
        memmove(ids->ids, ids->ids + (ids->n - max_len), (size_t)max_len * sizeof(int32_t));
        ids->n = max_len;
    }
    return BASE_OK;
}

char *run_completion_text(run_ctx *c, const int32_t *ids, int64_t n, int stopped_by_token) {
    if (stopped_by_token && n > 0) {
        int32_t stop[8];
        int ns = run_stop_ids(c, stop, 8);
        for (int i = 0; i < ns; i++)
            if (ids[n - 1] == stop[i]) {
                n--;
                break;
            }
    }
    return tok_decode_str(c->tok, ids, n, 0, NULL);
}

cJSON *run_make_sample(const cJSON *row, const char *prompt, const char *completion, int64_t ntok,
                       const char *finish) {
    cJSON *s = cJSON_Duplicate(row, 1);
    cJSON_DeleteItemFromObjectCaseSensitive(s, "prompt_text");
    cJSON_DeleteItemFromObjectCaseSensitive(s, "completion");
    cJSON_DeleteItemFromObjectCaseSensitive(s, "completion_tokens");
    cJSON_DeleteItemFromObjectCaseSensitive(s, "finish_reason");
    /* the dataset's own prompt column stays; `prompt` is the rendered text */
    if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(s, "prompt")) ||
        !cJSON_GetObjectItemCaseSensitive(s, "prompt")) {
        cJSON_DeleteItemFromObjectCaseSensitive(s, "prompt");
        cJSON_AddStringToObject(s, "prompt", prompt);
    } else {
        cJSON_AddStringToObject(s, "prompt_text", prompt);
    }
    cJSON_AddStringToObject(s, "completion", completion);
    cJSON_AddNumberToObject(s, "completion_tokens", (double)ntok);
    cJSON_AddStringToObject(s, "finish_reason", finish);
    return s;
}

int run_stop_ids(run_ctx *c, int32_t *ids, int max) {
    int n = 0;
    int32_t e = tok_eos_id(c->tok);
    if (e >= 0 && n < max) ids[n++] = e;
    const model_config *cfg = model_cfg(c->policy);
    for (int i = 0; i < cfg->n_eos && n < max; i++) {
        int dup = 0;
        for (int j = 0; j < n; j++) dup |= ids[j] == (int32_t)cfg->eos_token_id[i];
        if (!dup && cfg->eos_token_id[i] >= 0) ids[n++] = (int32_t)cfg->eos_token_id[i];
    }
    return n;
}

/* ---- rewards ------------------------------------------------------------ */

base_status run_reward_pool(run_ctx *c, const recipe_stage_cfg *stage, reward_pool **out) {
    *out = NULL;
    if (stage->rewards.n == 0)
        return base_err_set(BASE_ERR_INVALID, "%s: stage '%s' needs rewards (none in the stage or the recipe)",
                            recipe_path(c->rc), stage->name);
    reward_spec spec = {0};
    base_status s = BASE_OK;
    for (int i = 0; i < stage->rewards.n && !s; i++) {
        const recipe_reward *r = &stage->rewards.items[i];
        char *path;
        /* a bare name is a built-in script; otherwise relative to the recipe */
        if (strchr(r->script, '/') || strstr(r->script, ".lua")) path = recipe_resolve_path(c->rc, r->script);
        else path = base_xstrdup(r->script);
        /* params: free-form, the script's own table (reward_spec_add checks it against the script) */
        s = reward_spec_add(&spec, path, r->weight, r->name, r->params);
        free(path);
    }
    if (!s) {
        reward_limits lim;
        reward_limits_default(&lim);
        lim.instructions = c->cfg->reward_instructions;
        lim.memory_bytes = (size_t)c->cfg->reward_memory_mb << 20;
        int workers = (int)c->cfg->reward_workers; /* 0: the cores, shared by the ranks of a node */
        if (workers == 0 && dist_local_size() > 1)
            workers = base_ncpu() / dist_local_size() > 1 ? base_ncpu() / dist_local_size() : 1;
        s = reward_pool_create(&spec, workers, &lim, c->reward_log, out);
        if (!s && c->world > 1) { /* every rank appends to reward_errors.log */
            char tag[32];
            snprintf(tag, sizeof tag, "rank %d", c->rank);
            reward_pool_set_log_tag(*out, tag);
        }
    }
    reward_spec_free(&spec);
    return s;
}

base_status run_check_columns(reward_pool *p, cJSON **rows, char **where, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        base_status s = reward_check_row(p, rows[i], where[i]);
        if (s) return s;
    }
    return BASE_OK;
}

/* ---- data order --------------------------------------------------------- */

void run_shuffle(uint64_t seed, uint32_t stage, int64_t epoch, int64_t n, int64_t *perm) {
    base_rng r;
    base_rng_init(&r, seed, 0x5eed0000u + stage, (uint32_t)epoch, (uint32_t)((uint64_t)epoch >> 32));
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates with 64-bit draws */
        uint32_t w[4];
        base_rng_block(&r, (uint32_t)i, w);
        uint64_t x = (uint64_t)w[0] << 32 | w[1];
        int64_t j = (int64_t)(x % (uint64_t)(i + 1));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* ---- output files -------------------------------------------------------- */

/* Rank 0 has the files; the other ranks count the lines and drop them. */
static void write_line(FILE *f, cJSON *line) {
    if (!f) {
        cJSON_Delete(line);
        return;
    }
    char *s = base_json_print(line, 0);
    fputs(s, f);
    fputc('\n', f);
    fflush(f);
    free(s);
    cJSON_Delete(line);
}

void run_metrics_write(run_ctx *c, cJSON *line) {
    run_tb_metrics(c, line);
    write_line(c->metrics, line);
    c->metrics_lines++;
}
void run_samples_write(run_ctx *c, cJSON *line) {
    write_line(c->samples, line);
    c->samples_lines++;
}

base_status run_summary_set(run_ctx *c, const char *stage, cJSON *obj) {
    if (cJSON_GetObjectItemCaseSensitive(c->summary, stage))
        cJSON_ReplaceItemInObjectCaseSensitive(c->summary, stage, obj);
    else
        cJSON_AddItemToObject(c->summary, stage, obj);
    if (!run_writes(c)) return BASE_OK; /* every rank keeps the summary; rank 0 writes it */
    char *text = base_json_print(c->summary, 1);
    char *path = base_path_join(c->dir, "summary.json");
    base_status s = base_write_file_atomic(path, text, strlen(text));
    free(path);
    free(text);
    return s;
}
