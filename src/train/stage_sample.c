/*
 * The sample stage: DeepSeek-R1's rejection sampling (paper §2.3.3), also
 * the data step of distillation.
 *
 *   for every prompt of the stage's datasets (the first `limit`):
 *     num_generations completions (the stage's sampling parameters; draws
 *       keyed by (seed, stage index, prompt index, sample index, position))
 *     --reward pool (the stage's rewards, else the recipe's)-->
 *     keep: the `keep` Lua expression (sample_internal.h documents its
 *       environment) must be true
 *     filters, in the listed order, on the reasoning of the completion:
 *       mixed_language   lang ratio below min_lang_ratio (the row's `lang`
 *                        column when it is a string, else the stage's lang)
 *       long_paragraphs  a paragraph longer than max_paragraph_chars
 *       code_blocks      a ``` fence
 *     a completion that passes both is a pass; the first max_per_prompt
 *     passes of a prompt (sample order) are written out.
 *
 * Outputs (all deterministic):
 *   `output` (default RUN/NAME.jsonl; the dataset path "stage:NAME" reads
 *     it): one SFT row per kept completion (sft_line),
 *       {"prompt": TEXT THE MODEL SAW, "completion": COMPLETION,
 *        "prompt_template": TEMPLATE, "messages": [user..., assistant],
 *        ...the row's other columns}
 *     so that SFT trains on exactly the prompt the model answered, with
 *     the template that rendered it (stage_sft.c); `messages` is the chat
 *     form for export (when the prompt ends inside an opened "<think>", as
 *     the r1 template's does, the assistant turn starts with it and holds
 *     the whole answer). Then the rows of `merge_datasets` as they are.
 *     Written to OUTPUT.tmp and renamed at the end: a failed stage leaves
 *     no partial file.
 *   RUN/NAME.pass_rates.jsonl: per prompt {index, where, passed, total,
 *     pass_rate, kept} (+ the row's id when it has one).
 *   RUN/NAME.samples.jsonl: every completion with its rewards and the
 *     decision: "kept", "keep" (the expression said no), a filter's name,
 *     or "max_per_prompt".
 *   summary.json[NAME] and one metrics.jsonl line: kept, merged, total,
 *     pass_rate (mean over prompts), prompts_with_pass, dropped.{keep,
 *     mixed_language, long_paragraphs, code_blocks, max_per_prompt} (each
 *     completion counts once, for the first test it fails), reward,
 *     rewards/NAME, completion_length, tokens_per_s, prompt_template,
 *     inexact_prompts (recorded prompts that do not encode back to the
 *     ids the model saw).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "reward/rules/rules.h"
#include "run_internal.h"
#include "sample_internal.h"

/* Decisions besides the filters' (which use their sample_filter value). */
enum { DEC_KEPT = SAMPLE_FILTER_COUNT, DEC_KEEP, DEC_CAP, DEC_COUNT };

static const char *decision_name(int d) {
    if (d < SAMPLE_FILTER_COUNT) return sample_filter_name((sample_filter)d);
    return d == DEC_KEPT ? "kept" : d == DEC_KEEP ? "keep" : "max_per_prompt";
}

typedef struct {
    const char *name;
    int filters[SAMPLE_FILTER_COUNT], n_filters;
    const char *lang;
    double min_lang_ratio;
    int64_t max_paragraph_chars;
    int max_per_prompt;
    sample_keep *keep;
} sample_cfg;

/* The stage's filters as sample_filter values and its keep expression
 * compiled (the recipe checked the filter names, lang and the ranges). */
static base_status parse_cfg(const recipe_stage_cfg *st, sample_cfg *g) {
    const recipe_sample_cfg *sa = &st->sample;
    memset(g, 0, sizeof *g);
    g->name = st->name;
    for (int i = 0; i < sa->filters.n && g->n_filters < SAMPLE_FILTER_COUNT; i++) {
        int f = sample_filter_parse(sa->filters.items[i]);
        if (f < 0)
            return base_err_set(BASE_ERR_INVALID,
                                "filters: unknown filter '%s' (mixed_language, long_paragraphs, code_blocks)",
                                sa->filters.items[i]);
        g->filters[g->n_filters++] = f;
    }
    g->lang = sa->lang;
    g->min_lang_ratio = sa->min_lang_ratio;
    g->max_paragraph_chars = sa->max_paragraph_chars;
    g->max_per_prompt = (int)sa->max_per_prompt;
    return sample_keep_new(sa->keep, &g->keep);
}

/* The first filter that drops the completion, or -1. lang may be NULL (the
 * stage's). */
static int run_filters(const sample_cfg *g, const char *text, const char *row_lang) {
    size_t b, n;
    sample_reasoning(text, strlen(text), &b, &n);
    for (int i = 0; i < g->n_filters; i++) {
        int drop = 0;
        switch ((sample_filter)g->filters[i]) {
        case SAMPLE_FILTER_MIXED_LANGUAGE: {
            const char *lang = row_lang && reward_lang_known(row_lang) ? row_lang : g->lang;
            drop = sample_mixed_language(text + b, n, lang, g->min_lang_ratio, NULL) == 1;
            break;
        }
        case SAMPLE_FILTER_LONG_PARAGRAPHS: drop = sample_long_paragraphs(text + b, n, g->max_paragraph_chars, NULL); break;
        case SAMPLE_FILTER_CODE_BLOCKS: drop = sample_code_blocks(text + b, n); break;
        default: break;
        }
        if (drop) return g->filters[i];
    }
    return -1;
}

/* One SFT line for a kept completion (malloc'd JSON text):
 *   prompt           the prompt exactly as the model saw it (its ids
 *                    decoded, added tokens and BOS as text)
 *   completion       the completion (without the stop token)
 *   prompt_template  the template that rendered the prompt
 *   messages         the chat for export: the question (or the row's
 *                    conversation) and the answer as an assistant turn
 *   ...              the row's other columns */
static char *sft_line(const cJSON *row, const char *prompt_col, const char *tmpl, const char *seen,
                      const char *prompt_text, const char *completion) {
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "prompt", seen);
    cJSON_AddStringToObject(out, "completion", completion);
    cJSON_AddStringToObject(out, "prompt_template", tmpl);
    cJSON *msgs = cJSON_AddArrayToObject(out, "messages");
    const cJSON *pv = cJSON_GetObjectItemCaseSensitive(row, prompt_col);
    if (cJSON_IsArray(pv)) {
        for (const cJSON *m = pv->child; m; m = m->next) cJSON_AddItemToArray(msgs, cJSON_Duplicate(m, 1));
    } else {
        cJSON *u = cJSON_CreateObject();
        cJSON_AddStringToObject(u, "role", "user");
        cJSON_AddStringToObject(u, "content", cJSON_IsString(pv) ? pv->valuestring : "");
        cJSON_AddItemToArray(msgs, u);
    }
    /* the answer of an r1 prompt starts inside the "<think>" the prompt
     * opened: the chat turn holds the whole answer */
    base_buf content = {0};
    base_buf_puts(&content, run_open_think_tail(prompt_text));
    base_buf_puts(&content, completion);
    cJSON *a = cJSON_CreateObject();
    cJSON_AddStringToObject(a, "role", "assistant");
    cJSON_AddStringToObject(a, "content", content.data ? content.data : "");
    cJSON_AddItemToArray(msgs, a);
    base_buf_free(&content);
    static const char *const ours[] = {"prompt", "completion", "prompt_template", "messages"};
    for (const cJSON *e = row->child; e; e = e->next) {
        int skip = !strcmp(e->string, prompt_col);
        for (size_t k = 0; k < sizeof ours / sizeof ours[0]; k++) skip |= !strcmp(e->string, ours[k]);
        if (!skip) cJSON_AddItemToObject(out, e->string, cJSON_Duplicate(e, 1));
    }
    char *t = base_json_print(out, 0);
    cJSON_Delete(out);
    return t;
}

/* The prompt the model saw, as text (malloc'd); *exact = 0 when encoding
 * that text does not give the same ids back (a question holding an added
 * token's string, or a prompt cut inside a character). */
static char *seen_prompt(run_ctx *c, const tok_ids *ids, int *exact) {
    char *t = tok_decode_str(c->tok, ids->ids, ids->n, 0, NULL);
    tok_ids back = {0};
    *exact = !tok_encode(c->tok, t, strlen(t), 0, &back) && back.n == ids->n &&
             !memcmp(back.ids, ids->ids, (size_t)ids->n * sizeof(int32_t));
    tok_ids_free(&back);
    return t;
}

static void put_line(FILE *f, cJSON *line) {
    if (!f) { /* a rank that does not write */
        cJSON_Delete(line);
        return;
    }
    char *t = base_json_print(line, 0);
    fputs(t, f);
    fputc('\n', f);
    free(t);
    cJSON_Delete(line);
}

static cJSON *num_or_null(double v) { return isnan(v) ? cJSON_CreateNull() : cJSON_CreateNumber(v); }

/* Close f (flushed and synced) and rename tmp over path. */
static base_status finish_file(FILE *f, const char *tmp, const char *path) {
    int bad = fflush(f) != 0 || ferror(f);
    if (!bad) bad = fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        base_status s = base_err_set(BASE_ERR_IO, "%s: %s", path, base_strerror_now());
        unlink(tmp);
        return s;
    }
    return BASE_OK;
}

static FILE *open_tmp(const char *path, char **tmp) {
    base_buf b = {0};
    base_buf_printf(&b, "%s.tmp-%ld", path, (long)getpid());
    *tmp = b.data;
    FILE *f = fopen(b.data, "w");
    if (!f) base_err_set(BASE_ERR_IO, "%s: %s", b.data, base_strerror_now());
    return f;
}

base_status run_stage_sample_check(const recipe_stage_cfg *st) {
    sample_cfg cfg;
    base_status s = parse_cfg(st, &cfg);
    sample_keep_free(cfg.keep);
    return s ? base_err_wrap(s, "stage '%s'", st->name) : BASE_OK;
}

base_status run_stage_sample(run_ctx *c, const recipe_stage_cfg *st) {
    const recipe_sample_cfg *sa = &st->sample;
    const char *name = st->name;
    const int index = st->index;
    sample_cfg cfg;
    base_status s = parse_cfg(st, &cfg);
    if (s) return base_err_wrap(s, "stage '%s'", name);
    cJSON **rows = NULL;
    char **where = NULL;
    int64_t nrows = 0;
    reward_pool *pool = NULL;
    run_gen gen;
    memset(&gen, 0, sizeof gen);
    s = run_stage_rows(c, st, &rows, &where, &nrows);
    const int64_t nrows_all = nrows;
    if (sa->limit > 0 && sa->limit < nrows) nrows = sa->limit;
    if (!s) s = run_reward_pool(c, st, &pool);
    if (!s) s = run_check_columns(pool, rows, where, nrows);
    /* the datasets to merge are loaded before any generation */
    for (int i = 0; i < sa->merge_datasets.n && !s; i++) {
        run_dataset *d;
        s = run_dataset_get(c, sa->merge[i], &d);
    }
    /* several ranks: each call's prompts are split over them (run_gen_chunk) */
    int64_t chunk = (int64_t)run_gen_chunk_size(&sa->gen, nrows) * c->world;
    if (chunk > nrows) chunk = nrows > 0 ? nrows : 1;
    if (!s) s = run_gen_init(&gen, c, st, &sa->gen, pool, (int)chunk);
    int K = gen.K;
    /* output files */
    char fname[300];
    const char *o = sa->output;
    snprintf(fname, sizeof fname, "%s.jsonl", name);
    char *out_path = o ? recipe_resolve_path(c->rc, o) : base_path_join(c->dir, fname);
    snprintf(fname, sizeof fname, "%s.pass_rates.jsonl", name);
    char *pr_path = base_path_join(c->dir, fname);
    snprintf(fname, sizeof fname, "%s.samples.jsonl", name);
    char *sm_path = base_path_join(c->dir, fname);
    char *out_tmp = NULL, *pr_tmp = NULL, *sm_tmp = NULL;
    FILE *fo = NULL, *fp = NULL, *fs = NULL;
    int w = run_writes(c); /* rank 0 writes the outputs; the other ranks decide the same and write nothing */
    if (!s && w) {
        char *slash = strrchr(out_path, '/');
        if (slash && slash != out_path) { /* the output's directory may be new */
            *slash = 0;
            s = base_mkdir_p(out_path);
            *slash = '/';
        }
    }
    if (!s && w && !(fo = open_tmp(out_path, &out_tmp))) s = BASE_ERR_IO;
    if (!s && w && !(fp = open_tmp(pr_path, &pr_tmp))) s = BASE_ERR_IO;
    if (!s && w && !(fs = open_tmp(sm_path, &sm_tmp))) s = BASE_ERR_IO;
    s = run_agree(c, s, "opening the sample stage's outputs");

    const char *prompt_col = st->datasets[0]->prompt_column, *tmpl = run_template(c, st);
    int64_t n_inexact = 0; /* recorded prompts that do not encode back to the ids the model saw */
    int nf = pool ? reward_pool_n_funcs(pool) : 0;
    const char **fnames = base_xcalloc((size_t)nf + 1, sizeof *fnames);
    for (int f = 0; f < nf; f++) fnames[f] = reward_pool_func_name(pool, f);
    run_sum *func_sum = base_xcalloc((size_t)nf + 1, sizeof *func_sum);
    double *row_scores = base_xcalloc((size_t)nf + 1, sizeof(double));
    int64_t *func_n = base_xcalloc((size_t)nf + 1, sizeof(int64_t));

    int64_t dec_count[DEC_COUNT] = {0}, n_samples = 0, n_kept = 0, n_merged = 0, prompts_with_pass = 0;
    int64_t reward_n = 0;
    double pass_rate_sum = 0, len_sum = 0;
    run_sum reward_sum = {0, 0};
    base_progress prog;
    int prog_on = !s && !c->opts.quiet;
    if (prog_on) base_progress_start(&prog, name, nrows);
    for (int64_t p0 = 0; p0 < nrows && !s; p0 += gen.chunk) {
        if (run_poll_signal(c)) { /* the outputs stay temporary (removed): the stage runs again on resume */
            s = run_stage_interrupted(c, p0, nrows);
            break;
        }
        int np = (int)(nrows - p0 < gen.chunk ? nrows - p0 : gen.chunk);
        s = run_gen_chunk(&gen, rows + p0, where + p0, np, 0x40000000u | (uint32_t)index, (uint32_t)p0);
        const reward_scores *sc = &gen.sc;
        cJSON **samples = gen.samples;
        for (int i = 0; i < np && !s; i++) {
            const cJSON *row = rows[p0 + i];
            const char *row_lang = base_json_str(row, "lang", NULL);
            int passed = 0, kept = 0;
            char *seen = NULL; /* the prompt as the model saw it, made for the first kept completion */
            for (int g = 0; g < K && !s; g++) {
                int j = i * K + g, keep = 0, dec;
                const char *comp = base_json_str(samples[j], "completion", "");
                for (int f = 0; f < nf; f++) row_scores[f] = sc->score[(size_t)j * (size_t)nf + (size_t)f];
                s = sample_keep_eval(cfg.keep, sc->total[j], fnames, row_scores, nf, samples[j], &keep);
                if (s) {
                    s = base_err_wrap(s, "%s (sample %d)", where[p0 + i], g);
                    break;
                }
                int drop = keep ? run_filters(&cfg, comp, row_lang) : -1;
                if (!keep) dec = DEC_KEEP;
                else if (drop >= 0) dec = drop;
                else if (cfg.max_per_prompt && kept >= cfg.max_per_prompt) dec = DEC_CAP, passed++;
                else dec = DEC_KEPT, passed++, kept++;
                dec_count[dec]++;
                if (dec == DEC_KEPT) {
                    if (!seen) {
                        int exact;
                        seen = seen_prompt(c, &gen.pids[i], &exact);
                        n_inexact += !exact;
                    }
                    char *t = sft_line(row, prompt_col, tmpl, seen, gen.ptext[i], comp);
                    if (fo) fputs(t, fo), fputc('\n', fo);
                    free(t);
                }
                if (!isnan(sc->total[j])) run_sum_add(&reward_sum, sc->total[j]), reward_n++;
                for (int f = 0; f < nf; f++)
                    if (!isnan(row_scores[f])) run_sum_add(&func_sum[f], row_scores[f]), func_n[f]++;
                len_sum += (double)gen.out[j].len;
                cJSON *line = cJSON_CreateObject();
                cJSON_AddNumberToObject(line, "prompt_index", (double)(p0 + i));
                cJSON_AddNumberToObject(line, "sample_index", g);
                cJSON_AddStringToObject(line, "completion", comp);
                cJSON_AddStringToObject(line, "finish_reason", base_json_str(samples[j], "finish_reason", ""));
                cJSON_AddItemToObject(line, "reward", num_or_null(sc->total[j]));
                cJSON *rw = cJSON_AddObjectToObject(line, "rewards");
                for (int f = 0; f < nf; f++) cJSON_AddItemToObject(rw, fnames[f], num_or_null(row_scores[f]));
                cJSON_AddStringToObject(line, "decision", decision_name(dec));
                put_line(fs, line); /* (fs NULL: dropped) */
            }
            free(seen);
            if (s) break;
            cJSON *line = cJSON_CreateObject();
            cJSON_AddNumberToObject(line, "index", (double)(p0 + i));
            cJSON_AddStringToObject(line, "where", where[p0 + i]);
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(row, "id");
            if (id) cJSON_AddItemToObject(line, "id", cJSON_Duplicate(id, 1));
            cJSON_AddNumberToObject(line, "passed", passed);
            cJSON_AddNumberToObject(line, "total", K);
            cJSON_AddNumberToObject(line, "pass_rate", (double)passed / K);
            cJSON_AddNumberToObject(line, "kept", kept);
            put_line(fp, line); /* (fp NULL: dropped) */
            pass_rate_sum += (double)passed / K;
            prompts_with_pass += passed > 0;
            n_kept += kept;
        }
        n_samples += (int64_t)np * K;
        if (!s && !c->opts.quiet)
            base_progress_update(&prog, p0 + np, "kept %lld pass %.3f", (long long)n_kept,
                                 pass_rate_sum / (double)(p0 + np));
    }
    if (prog_on) base_progress_finish(&prog);
    /* merged datasets, as they are */
    for (int i = 0; i < sa->merge_datasets.n && !s; i++) {
        run_dataset *d;
        s = run_dataset_get(c, sa->merge[i], &d);
        for (int64_t i = 0; i < (s ? 0 : d->n); i++) {
            if (fo) {
                char *t = base_json_print(d->rows[i], 0);
                fputs(t, fo);
                fputc('\n', fo);
                free(t);
            }
            n_merged++;
        }
    }
    if (!s && fo) s = finish_file(fo, out_tmp, out_path);
    else if (fo) fclose(fo), unlink(out_tmp);
    fo = NULL;
    if (!s && fp) s = finish_file(fp, pr_tmp, pr_path);
    else if (fp) fclose(fp), unlink(pr_tmp);
    if (!s && fs) s = finish_file(fs, sm_tmp, sm_path);
    else if (fs) fclose(fs), unlink(sm_tmp);
    if (!s && n_kept + n_merged == 0)
        base_warn("stage '%s': no sample was kept and nothing merged: %s is empty", name, out_path);
    if (!s && n_inexact)
        base_warn("stage '%s': %lld recorded prompts do not encode back to the ids the model saw (a question "
                  "holding an added token's text such as \"<think>\", or a prompt cut inside a character by "
                  "max_prompt_length); SFT reads them as the text encodes",
                  name, (long long)n_inexact);
    if (!s) {
        cJSON *sum = cJSON_CreateObject();
        cJSON_AddNumberToObject(sum, "kept", (double)n_kept);
        cJSON_AddStringToObject(sum, "prompt_template", tmpl);
        cJSON_AddNumberToObject(sum, "inexact_prompts", (double)n_inexact);
        cJSON_AddNumberToObject(sum, "merged", (double)n_merged);
        cJSON_AddNumberToObject(sum, "total", (double)n_samples);
        cJSON_AddNumberToObject(sum, "prompts", (double)nrows);
        /* nil is "not scored", as in eval and training: a mean over nothing is
         * null, never 0, and rewards/NAME/scored says how many were scored */
        cJSON_AddItemToObject(sum, "pass_rate", num_or_null(nrows ? pass_rate_sum / (double)nrows : NAN));
        cJSON_AddNumberToObject(sum, "prompts_with_pass", (double)prompts_with_pass);
        cJSON *dr = cJSON_AddObjectToObject(sum, "dropped");
        cJSON_AddNumberToObject(dr, "keep", (double)dec_count[DEC_KEEP]);
        for (int f = 0; f < SAMPLE_FILTER_COUNT; f++)
            cJSON_AddNumberToObject(dr, sample_filter_name((sample_filter)f), (double)dec_count[f]);
        cJSON_AddNumberToObject(dr, "max_per_prompt", (double)dec_count[DEC_CAP]);
        cJSON_AddItemToObject(sum, "reward", num_or_null(reward_n ? run_sum_get(&reward_sum) / (double)reward_n : NAN));
        for (int f = 0; f < nf; f++) {
            char key[160];
            snprintf(key, sizeof key, "rewards/%s", fnames[f]);
            cJSON_AddItemToObject(sum, key, num_or_null(func_n[f] ? run_sum_get(&func_sum[f]) / (double)func_n[f] : NAN));
            snprintf(key, sizeof key, "rewards/%s/scored", fnames[f]);
            cJSON_AddNumberToObject(sum, key, (double)func_n[f]);
        }
        cJSON_AddItemToObject(sum, "completion_length", num_or_null(n_samples ? len_sum / (double)n_samples : NAN));
        cJSON_AddNumberToObject(sum, "num_generations", K);
        cJSON_AddNumberToObject(sum, "tokens_per_s", gen.gen_seconds > 0 ? (double)gen.new_tokens / gen.gen_seconds : 0);
        cJSON_AddStringToObject(sum, "output", out_path);
        cJSON *line = cJSON_Duplicate(sum, 1);
        cJSON_AddStringToObject(line, "stage", name);
        cJSON_AddNumberToObject(line, "step", (double)c->total_steps);
        run_metrics_write(c, line);
        s = run_summary_set(c, name, sum);
        if (!s && !c->opts.quiet)
            base_info("%s: kept %lld of %lld completions (%lld prompts, mean pass rate %.3f), merged %lld -> %s",
                      name, (long long)n_kept, (long long)n_samples, (long long)nrows,
                      nrows ? pass_rate_sum / (double)nrows : 0, (long long)n_merged, out_path);
    }
    free(fnames), free(func_sum), free(func_n), free(row_scores);
    free(out_path), free(pr_path), free(sm_path), free(out_tmp), free(pr_tmp), free(sm_tmp);
    run_gen_free(&gen);
    reward_pool_destroy(pool);
    sample_keep_free(cfg.keep);
    free(rows);
    run_where_free(where, nrows_all);
    return s ? base_err_wrap(s, "stage '%s'", name) : BASE_OK;
}
