/*
 * The SFT stage: masked next-token NLL, several samples packed per row
 * without attention across them (TRL SFTTrainer with packing "bfd").
 *
 * A row is rendered with the stage's template (its own, else the recipe's),
 * the one generation uses (run_render_messages), never a format the model
 * was not prompted with. The first kind that fits:
 *   sampled  {"prompt", "completion", "prompt_template"} (a sample stage's
 *        output): the prompt as the model saw it, then the completion +
 *        EOS; the stage's template must be prompt_template
 *   chat     {"messages": [...]}: template "chat": the DeepSeek-V3 format,
 *        every assistant turn a target (content and end-of-turn token);
 *        any other template: the messages before the last are the
 *        generation prompt, the last (an assistant turn) the answer + EOS
 *        (encode_chat); what cannot be rendered faithfully is an error
 *   prompt/completion  {"prompt", "completion"}: the prompt through the
 *        template, completion + EOS
 *   text     {"text"}: every token (BOS added)
 * With assistant_only_loss only the answer tokens are targets. Answers are
 * encoded as HF encodes the text (added tokens such as "<think>" matched,
 * as the model writes them). Samples longer than max_length keep their
 * first max_length tokens. The stage logs the template and the rows of
 * each kind and puts them in summary.json[NAME].
 *
 * The packing plan is made once; each epoch visits its rows in a shuffled
 * order (seed, stage, epoch). One optimizer step = gradient_accumulation_
 * steps micro-batches of per_device_train_batch_size rows; the loss is the
 * mean over the step's loss tokens (sft.h). The data position is a pure
 * function of the step, so resuming needs only the step count.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "run_internal.h"
#include "train/sft.h"

typedef struct {
    int32_t *ids;
    uint8_t *mask;
    int64_t len;
} sample_buf;

/* How a row was rendered (counted for the log line and summary.json). */
enum { ROW_SAMPLED, ROW_CHAT, ROW_PROMPT, ROW_TEXT, ROW_KINDS };
static const char *const row_kind_name[ROW_KINDS] = {"sampled", "chat", "prompt_completion", "text"};

/* The DeepSeek chat format's token count of a chat prefix (the "chat"
 * template: prefixes encode as prefixes). */
static base_status count_chat(void *ctx, const sft_message *msgs, int n, int gen, int64_t *out) {
    const tok_tokenizer *tk = ctx;
    tok_msg *m = base_xcalloc((size_t)n + 1, sizeof *m);
    for (int i = 0; i < n; i++) m[i] = (tok_msg){msgs[i].role, msgs[i].content};
    tok_ids ids = {0};
    base_status s = tok_chat_encode(tk, m, n, TOK_CHAT_ASSISTANT_TOKENS | (gen ? TOK_CHAT_GENERATION_PROMPT : 0), &ids);
    *out = ids.n;
    tok_ids_free(&ids);
    free(m);
    return s;
}

/* ids = the prompt's ids, then the answer and EOS; mask on the answer (and
 * EOS) only when only_answer, else everywhere. The answer is encoded as HF
 * encodes text, added tokens matched: the way the model wrote it. */
static base_status append_answer(run_ctx *c, const char *answer, const char *where, int only_answer, tok_ids *ids,
                                 uint8_t **mask) {
    int64_t np = ids->n;
    base_status s = tok_encode(c->tok, answer, strlen(answer), 0, ids);
    if (s) return base_err_wrap(s, "%s: completion", where);
    int32_t stop[8];
    if (run_stop_ids(c, stop, 8) > 0) tok_ids_push(ids, stop[0]);
    *mask = base_xmalloc((size_t)ids->n + 1);
    for (int64_t i = 0; i < ids->n; i++) (*mask)[i] = !only_answer || i >= np;
    return BASE_OK;
}

/* A chat row ({"messages": [...]}) with the stage's template. "chat": the
 * whole conversation in the DeepSeek-V3 format (the recipe's system prompt
 * first), every assistant turn a target. Any other template renders the
 * messages before the last one as the generation prompt (run_render_messages:
 * "r1" drops earlier turns' reasoning as its chat template does; a string
 * template takes one question only) and the last one, an assistant turn, is
 * the answer. When that prompt ends inside an opened "<think>" (r1), the
 * answer must start with the same text, which the prompt already holds. */
static base_status encode_chat(run_ctx *c, const recipe_stage_cfg *st, const cJSON *row, const char *where,
                               int only_assistant, tok_ids *ids, uint8_t **mask) {
    const char *tmpl = run_template(c, st);
    sft_chat chat;
    base_status s = sft_chat_parse(row, where, &chat);
    if (s) return s;
    if (!strcmp(tmpl, "chat")) {
        s = tok_chat_check(c->tok);
        if (s) {
            sft_chat_free(&chat);
            return base_err_wrap(s, "%s: template 'chat' renders chat rows in the DeepSeek chat format, not this "
                                    "model's: set the template the model was trained with, or write "
                                    "prompt/completion rows", where);
        }
        /* the conversation as generation renders it: the system prompt first */
        const char *system = c->cfg->system_prompt;
        sft_chat full = {0, base_xcalloc((size_t)chat.n + 1, sizeof(sft_message))};
        if (system) full.msgs[full.n++] = (sft_message){"system", system};
        for (int i = 0; i < chat.n; i++) full.msgs[full.n++] = chat.msgs[i];
        tok_msg *m = base_xcalloc((size_t)full.n, sizeof *m);
        for (int i = 0; i < full.n; i++) m[i] = (tok_msg){full.msgs[i].role, full.msgs[i].content};
        s = tok_chat_encode(c->tok, m, full.n, TOK_CHAT_ASSISTANT_TOKENS, ids);
        free(m);
        if (!s) {
            *mask = base_xmalloc((size_t)ids->n + 1);
            if (only_assistant) {
                sft_span *spans = base_xcalloc((size_t)full.n + 1, sizeof *spans);
                int nsp = 0;
                s = sft_chat_assistant_spans(&full, count_chat, c->tok, spans, &nsp);
                if (!s) sft_mask_from_spans(ids->n, spans, nsp, *mask);
                free(spans);
            } else {
                memset(*mask, 1, (size_t)ids->n);
            }
        }
        free(full.msgs);
        sft_chat_free(&chat);
        return s ? base_err_wrap(s, "%s", where) : BASE_OK;
    }
    const sft_message *last = &chat.msgs[chat.n - 1];
    if (strcmp(last->role, "assistant")) {
        char *q = run_quote(tmpl);
        s = base_err_set(BASE_ERR_INVALID,
                         "%s: the last message is the %s's: with template %s a chat row is a prompt and its answer, "
                         "the last message an assistant turn",
                         where, last->role, q);
        cJSON_free(q);
        sft_chat_free(&chat);
        return s;
    }
    tok_msg *m = base_xcalloc((size_t)chat.n, sizeof *m);
    for (int i = 0; i + 1 < chat.n; i++) m[i] = (tok_msg){chat.msgs[i].role, chat.msgs[i].content};
    char *text = NULL;
    s = run_render_messages(c, st, m, chat.n - 1, where, ids, &text);
    free(m);
    const char *answer = last->content;
    if (!s) {
        const char *tail = run_open_think_tail(text);
        size_t nt = strlen(tail);
        if (strncmp(answer, tail, nt)) {
            char *shown = run_quote(tail), *q = run_quote(tmpl);
            s = base_err_set(BASE_ERR_INVALID,
                             "%s: template %s ends the prompt with %s, so the assistant message must start with "
                             "it (an answer without reasoning is written \"<think>\\n\\n</think>\\n\\n...\")",
                             where, q, shown);
            cJSON_free(shown), cJSON_free(q);
        } else {
            s = append_answer(c, answer + nt, where, only_assistant, ids, mask);
        }
    }
    free(text);
    sft_chat_free(&chat);
    return s;
}

/* Tokens and loss mask of one row; *kind says how it was rendered. */
static base_status encode_row(run_ctx *c, const recipe_stage_cfg *st, const cJSON *row, const char *where,
                              int only_assistant, int64_t max_len, sample_buf *out, int *kind) {
    tok_ids ids = {0};
    uint8_t *mask = NULL;
    base_status s = BASE_OK;
    int sampled = cJSON_IsString(cJSON_GetObjectItemCaseSensitive(row, "prompt_template"));
    int completion = cJSON_IsString(cJSON_GetObjectItemCaseSensitive(row, "completion"));
    if (sampled && completion && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(row, "prompt"))) {
        /* a sample stage's row: the prompt as the model saw it (run_prompt
         * checks the template) */
        char *ptext = NULL;
        *kind = ROW_SAMPLED;
        s = run_prompt(c, st, row, where, 0, &ids, &ptext);
        free(ptext);
        if (!s) s = append_answer(c, base_json_str(row, "completion", ""), where, only_assistant, &ids, &mask);
    } else if (cJSON_GetObjectItemCaseSensitive(row, "messages")) {
        *kind = ROW_CHAT;
        s = encode_chat(c, st, row, where, only_assistant, &ids, &mask);
    } else if (completion) {
        char *ptext = NULL;
        *kind = ROW_PROMPT;
        s = run_prompt(c, st, row, where, 0, &ids, &ptext);
        free(ptext);
        if (!s) s = append_answer(c, base_json_str(row, "completion", ""), where, only_assistant, &ids, &mask);
    } else if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(row, "text"))) {
        const char *t = base_json_str(row, "text", "");
        *kind = ROW_TEXT;
        s = tok_encode(c->tok, t, strlen(t), TOK_ENC_ADD_SPECIAL, &ids);
        if (!s) {
            mask = base_xmalloc((size_t)ids.n + 1);
            memset(mask, 1, (size_t)ids.n);
        } else {
            s = base_err_wrap(s, "%s: text", where);
        }
    } else {
        s = base_err_set(BASE_ERR_INVALID, "%s: an SFT row needs \"messages\", \"prompt\" + \"completion\", or \"text\"",
                         where);
    }
    if (s) {
        tok_ids_free(&ids);
        free(mask);
        return s;
    }
    if (ids.n > max_len) ids.n = max_len;
    out->ids = ids.ids;
    out->mask = mask;
    out->len = ids.n;
    return BASE_OK;
}

/* Say which template rendered the rows: one log line and summary.json
 * [stage] = {"template", "chat_template" (the tokenizer's), "rows": {kind: n}}. */
static base_status report_rows(run_ctx *c, const recipe_stage_cfg *st, const int64_t *kinds) {
    const char *tmpl = run_template(c, st);
    const char *ct = tok_chat_template_name(tok_chat_template(c->tok));
    cJSON *sum = cJSON_CreateObject();
    cJSON_AddStringToObject(sum, "template", tmpl);
    cJSON_AddStringToObject(sum, "chat_template", ct);
    cJSON *rows = cJSON_AddObjectToObject(sum, "rows");
    base_buf line = {0};
    for (int k = 0; k < ROW_KINDS; k++) {
        cJSON_AddNumberToObject(rows, row_kind_name[k], (double)kinds[k]);
        if (kinds[k]) base_buf_printf(&line, "%s%lld %s", line.len ? ", " : "", (long long)kinds[k], row_kind_name[k]);
    }
    if (!c->opts.quiet) {
        char *esc = run_quote(tmpl);
        base_info("%s: template %s (%s; the tokenizer's chat template: %s): %s rows", st->name, esc,
                  st->template_name ? "the stage's" : "the recipe's", ct, line.data ? line.data : "no");
        cJSON_free(esc);
    }
    base_buf_free(&line);
    return run_summary_set(c, st->name, sum);
}

base_status run_stage_sft(run_ctx *c, const recipe_stage_cfg *st, const run_ckpt *resume) {
    const recipe_sft_cfg *sf = &st->sft; /* ranges checked by the recipe: max_length >= 2, bs, ga >= 1 */
    const char *name = st->name;
    const int index = st->index;
    int64_t max_len = sf->max_length, bs = sf->per_device_train_batch_size;
    int64_t ga = sf->gradient_accumulation_steps, max_steps = sf->max_steps;
    int packing = sf->packing, only_asst = sf->assistant_only_loss;
    int shuffle = sf->shuffle;
    int64_t logging_steps = sf->train.logging_steps;
    double epochs = sf->num_train_epochs;
    cJSON **rows;
    char **where;
    int64_t n;
    base_status s = run_stage_rows(c, st, &rows, &where, &n);
    if (s) return base_err_wrap(s, "stage '%s'", name);
    sample_buf *sb = base_xcalloc((size_t)n, sizeof *sb);
    sft_sample *ss = base_xcalloc((size_t)n, sizeof *ss);
    int64_t *lens = base_xcalloc((size_t)n, sizeof *lens);
    int64_t kinds[ROW_KINDS] = {0};
    for (int64_t i = 0; i < n && !s; i++) {
        int kind = ROW_TEXT;
        s = encode_row(c, st, rows[i], where[i], only_asst, max_len, &sb[i], &kind);
        if (!s) s = run_check_positions(c, st, rows[i], where[i], sb[i].len, "sample", 0);
        ss[i] = (sft_sample){sb[i].ids, sb[i].mask, sb[i].len};
        lens[i] = sb[i].len;
        kinds[kind] += !s;
    }
    if (!s) s = report_rows(c, st, kinds);
    sft_pack plan;
    memset(&plan, 0, sizeof plan);
    if (!s) {
        if (packing) {
            s = sft_pack_plan(lens, n, max_len, &plan);
        } else { /* one sample per row: plan rows of exactly one segment */
            int64_t *solo = base_xmalloc((size_t)n * sizeof *solo);
            for (int64_t i = 0; i < n; i++) solo[i] = max_len; /* each fills a row */
            s = sft_pack_plan(solo, n, max_len, &plan);
            free(solo);
            for (int64_t i = 0; !s && i < plan.n_segments; i++) plan.seg[i].len = lens[plan.seg[i].sample];
            for (int64_t r = 0; !s && r < plan.n_rows; r++) plan.row_used[r] = plan.seg[plan.row_first[r]].len;
        }
    }
    int64_t steps_per_epoch = plan.n_rows > 0 ? (plan.n_rows + bs * ga - 1) / (bs * ga) : 0;
    int64_t total = max_steps > 0 ? max_steps : (int64_t)ceil(epochs * (double)steps_per_epoch);
    if (!s && total < 1) s = base_err_set(BASE_ERR_INVALID, "stage '%s': no training steps (empty data?)", name);
    /* the biggest micro-batch: bs rows, their segments */
    int64_t max_segs = 1, row_max = 1; /* and its tokens: bs rows of at most row_max */
    for (int64_t r = 0; r < plan.n_rows; r++) {
        int64_t k = plan.row_first[r + 1] - plan.row_first[r];
        if (k > max_segs) max_segs = k;
        if (plan.row_used[r] > row_max) row_max = plan.row_used[r];
    }
    model_train *tr = NULL;
    float *grads = NULL;
    optim opt;
    memset(&opt, 0, sizeof opt);
    model_train_limits tl = {.max_tokens = bs * row_max, .max_seqs = (int)(bs * max_segs),
                             .recompute = sf->train.gradient_checkpointing};
    if (!s) s = model_train_new(c->policy, &tl, &tr);
    if (!s) {
        grads = run_policy_grads(c, &sf->train);
        s = run_optim_new(c, &sf->train, total, grads, &opt);
    }
    run_moe moe; /* expert loads and the router bias step (run_moe.c) */
    base_status ms = run_moe_init(c, &sf->train, &moe);
    if (!s) s = ms;
    int64_t step0 = 0;
    if (!s && resume && run_ckpt_state(resume)->stage_index == index) {
        step0 = run_ckpt_state(resume)->stage_step;
        s = run_zero_ep_params(c) ? run_ckpt_load_optim_ep(c, resume, &opt) /* ZeRO 2 / 3 with EP */
                                  : run_ckpt_load_optim(resume, c->lora ? NULL : c->policy, &opt);
    }
    if (!s) s = run_zero3_begin(c); /* ZeRO 3: the policy's arena released, each rank keeps its shard */
    size_t T = (size_t)(bs * max_len);
    int32_t *ids = base_xmalloc(T * sizeof(int32_t)), *tgt = base_xmalloc(T * sizeof(int32_t));
    int32_t *rid = base_xmalloc((size_t)max_len * sizeof(int32_t)), *rtg = base_xmalloc((size_t)max_len * sizeof(int32_t));
    int32_t *cu = base_xmalloc((size_t)(bs * max_segs + 1) * sizeof(int32_t)), *rcu = base_xmalloc((size_t)(max_segs + 1) * sizeof(int32_t));
    uint8_t *mask = base_xmalloc(T), *rmask = base_xmalloc((size_t)max_len);
    float *lp = base_xmalloc(T * sizeof(float)), *g = base_xmalloc(T * sizeof(float));
    int64_t *order = base_xmalloc((size_t)(plan.n_rows > 0 ? plan.n_rows : 1) * sizeof(int64_t));
    int64_t order_epoch = -1;
    int32_t pad = tok_pad_id(c->tok) >= 0 ? tok_pad_id(c->tok) : 0;
    int64_t save_steps = sf->train.save_steps, keep = sf->train.save_total_limit;
    base_progress prog;
    if (!s && !c->opts.quiet) base_progress_start(&prog, name, total);
    int64_t k = step0;
    for (; k < total && !s && !c->stop_requested; k++) {
        double t0 = base_now();
        optim_zero_grad(&opt);
        run_moe_step_reset(&moe);
        /* the step's rows: k*ga*bs + t of the visit order, t in [0, ga*bs);
         * micro-batches of bs rows. Several ranks: the loss tokens are
         * counted over all of them; each rank trains its run_split share
         * of t, and the gradients and losses are summed over the ranks */
        int64_t n_tok_step = 0, seq_step = 0, tokens = 0, R = ga * bs, mine_lo, mine_hi, rounds = 0, done = 0;
        run_split(R, c->rank, c->world, &mine_lo, &mine_hi);
        for (int r = 0; r < c->world; r++) { /* the most micro-batches of a rank (ZeRO 2's reductions) */
            int64_t a, z;
            run_split(R, r, c->world, &a, &z);
            if ((z - a + bs - 1) / bs > rounds) rounds = (z - a + bs - 1) / bs;
        }
        for (int pass = 0; pass < 2 && !s; pass++) { /* pass 0 counts loss tokens, pass 1 trains */
            double loss = 0;
            int64_t t_lo = pass == 0 ? 0 : mine_lo, t_hi = pass == 0 ? R : mine_hi;
            if (pass == 1) /* the balance loss: a mean over the step's sequences */
                run_moe_aux_begin(&moe, tr, seq_step);
            for (int64_t t0 = t_lo; t0 < t_hi && !s; t0 += bs) {
                int64_t nt = 0, nseg = 0;
                cu[0] = 0;
                for (int64_t i = 0; i < bs && t0 + i < t_hi; i++) {
                    int64_t v = k * R + t0 + i, epoch = v / plan.n_rows;
                    if (epoch != order_epoch) {
                        if (shuffle) run_shuffle(c->seed, (uint32_t)index, epoch, plan.n_rows, order);
                        else
                            for (int64_t q = 0; q < plan.n_rows; q++) order[q] = q;
                        order_epoch = epoch;
                    }
                    int64_t r = order[v % plan.n_rows];
                    s = sft_pack_row(&plan, r, ss, pad, rid, NULL, NULL, rtg, rmask);
                    if (s) break;
                    int ns = sft_pack_row_cu_seqlens(&plan, r, rcu);
                    int64_t used = plan.row_used[r];
                    memcpy(ids + nt, rid, (size_t)used * sizeof(int32_t));
                    for (int64_t p = 0; p < used; p++) {
                        tgt[nt + p] = rmask[p] ? rtg[p] : -1;
                        mask[nt + p] = rmask[p];
                    }
                    for (int q = 1; q <= ns; q++) cu[nseg + q] = (int32_t)(nt + rcu[q]);
                    nseg += ns;
                    nt += used;
                }
                if (s) break;
                if (pass == 0) {
                    n_tok_step += sft_count_loss_tokens(mask, nt);
                    seq_step += nseg;
                    continue;
                }
                tokens += nt;
                model_batch mb = {.nseq = (int)nseg, .ids = ids, .cu_seqlens = cu, .targets = tgt};
                s = model_forward(tr, &mb);
                if (s) break;
                run_moe_add(&moe, tr, (int)nseg);
                model_train_download(tr, lp, NULL);
                sft_loss_stats ls;
                s = sft_loss(lp, mask, nt, n_tok_step, g, &ls);
                if (s) break;
                loss += ls.loss;
                s = run_backward(c, tr, g, NULL, grads);
                if (!s) done++;
            }
            if (pass == 1) { /* the other ranks' remaining passes: ZeRO 2's reductions, EP's exchanges */
                s = run_ep_pass_failed(c, s, "a training micro-batch");
                base_status p = run_pad_passes(c, tr, NULL, grads, rounds - done);
                if (!s) s = p;
            }
            if (pass == 1) { /* every rank's share */
                s = run_agree(c, s, "the training step");
                if (!s) s = run_reduce_grads(c, grads);
                double sums[2] = {loss, (double)tokens};
                if (!s && c->world > 1) s = dist_allreduce(c->host, sums, 2, DIST_F64, DIST_SUM);
                loss = sums[0], tokens = (int64_t)sums[1];
            }
            if (pass == 1 && !s) {
                optim_step_info info;
                if ((s = run_optim_step(c, &opt, k, &info))) break;
                if ((s = run_gather_params(c, &opt))) break; /* ZeRO 1: every rank's updated shard */
                if ((s = run_moe_update(c, &moe, !info.skipped))) break; /* global loads, the bias step */
                run_sync_policy(c); /* bf16 mode: refresh the compute weights */
                c->total_steps++;
                double dt = base_now() - t0;
                cJSON *line = cJSON_CreateObject();
                cJSON_AddStringToObject(line, "stage", name);
                cJSON_AddNumberToObject(line, "step", (double)(k + 1));
                cJSON_AddNumberToObject(line, "global_step", (double)c->total_steps);
                cJSON_AddNumberToObject(line, "epoch", (double)((k + 1) * ga * bs) / (double)plan.n_rows);
                cJSON_AddNumberToObject(line, "loss", loss);
                cJSON_AddItemToObject(line, "grad_norm", isfinite(info.grad_norm) ? cJSON_CreateNumber(info.grad_norm) : cJSON_CreateNull());
                cJSON_AddNumberToObject(line, "lr", info.lr);
                cJSON_AddNumberToObject(line, "num_tokens", (double)n_tok_step);
                cJSON_AddNumberToObject(line, "tokens_per_s", (double)tokens / dt);
                cJSON_AddNumberToObject(line, "step_time", dt);
                if (info.skipped) cJSON_AddNumberToObject(line, "update_skipped", 1);
                run_moe_put(&moe, line);
                if (logging_steps <= 1 || (k + 1) % logging_steps == 0 || k + 1 == total)
                    run_metrics_write(c, line);
                else
                    cJSON_Delete(line);
                if (!c->opts.quiet) base_progress_update(&prog, k + 1, "loss %.4f tok/s %.0f", loss, (double)tokens / dt);
            }
        }
        if (s) break;
        if (c->opts.max_total_steps > 0 && c->total_steps >= c->opts.max_total_steps) c->stop_requested = 1;
        run_poll_signal(c); /* a stop signal: this step's checkpoint, then stop */
        int last = k + 1 == total;
        if ((save_steps > 0 && (k + 1) % save_steps == 0) || last || c->stop_requested) {
            run_train_state rs = {.stage_index = index, .stage_done = last, .stage_step = k + 1,
                                  .total_steps = c->total_steps};
            snprintf(rs.stage_name, sizeof rs.stage_name, "%s", name);
            s = run_ckpt_save(c, &rs, &opt, NULL, (int)keep);
        }
    }
    if (!s) s = run_zero3_end(c); /* ZeRO 3: the policy stays released, its shards kept by the run */
    if (!c->opts.quiet && tr && step0 < total) base_progress_finish(&prog);
    free(ids), free(tgt), free(rid), free(rtg), free(cu), free(rcu), free(mask), free(rmask), free(lp), free(g), free(order);
    run_optim_free(c, &opt);
    run_moe_free(&moe);
    if (grads) c->ops->free(grads);
    model_train_free(tr);
    sft_pack_free(&plan);
    for (int64_t i = 0; i < n; i++) free(sb[i].ids), free(sb[i].mask);
    free(sb), free(ss), free(lens), free(rows);
    run_where_free(where, n);
    return s ? base_err_wrap(s, "stage '%s'", name) : BASE_OK;
}
