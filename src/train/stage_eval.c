/*
 * The eval stage: K samples per prompt at the R1 paper's evaluation
 * settings (temperature 0.6, top-p 0.95 by default), scored by the stage's
 * rewards.
 *
 *   accuracy = pass@1 averaged over K samples: the mean over prompts of the
 *              mean over their K samples of the FIRST reward function's
 *              score (nil counts 0). Recipes list the accuracy reward first.
 *   cons@K   = majority vote: per prompt the most frequent extracted answer
 *              (answer_from: boxed, answer_tag, last_number; ties go to the
 *              answer seen first) compared with the row's `answer` column by
 *              math equivalence; only when rows have `answer`.
 *
 * Results go to summary.json under the stage name, to one metrics.jsonl
 * line, and every sample to RUN/NAME.samples.jsonl.
 */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "recipe/recipe.h"
#include "reward/rules/rules.h"
#include "run_internal.h"

/* The answer a sample votes for (malloc'd; NULL when none). */
static char *extract_answer(const char *text, const char *how) {
    size_t n = strlen(text);
    if (!strcmp(how, "boxed")) {
        size_t st, len;
        if (!reward_boxed(text, n, &st, &len)) return NULL;
        char *a = base_xmalloc(len + 1);
        memcpy(a, text + st, len);
        a[len] = 0;
        return a;
    }
    if (!strcmp(how, "answer_tag")) {
        const char *open = NULL, *p = text;
        while ((p = strstr(p, "<answer>"))) open = p, p++;
        if (!open) return NULL;
        open += 8;
        const char *close = strstr(open, "</answer>");
        if (!close) return NULL;
        while (open < close && isspace((unsigned char)*open)) open++;
        while (close > open && isspace((unsigned char)close[-1])) close--;
        char *a = base_xmalloc((size_t)(close - open) + 1);
        memcpy(a, open, (size_t)(close - open));
        a[close - open] = 0;
        return a;
    }
    /* last_number: the last run of digits with an optional sign and point */
    const char *end = NULL, *start = NULL;
    for (const char *p = text; *p; p++)
        if (isdigit((unsigned char)*p)) {
            const char *s = p;
            while (isdigit((unsigned char)*p) || (*p == '.' && isdigit((unsigned char)p[1]))) p++;
            if (s > text && s[-1] == '-') s--;
            start = s, end = p;
            if (!*p) break;
        }
    if (!start) return NULL;
    char *a = base_xmalloc((size_t)(end - start) + 1);
    memcpy(a, start, (size_t)(end - start));
    a[end - start] = 0;
    return a;
}

/* Majority vote over k answers (NULL = abstain); ties: first seen. */
static const char *vote(char **ans, int k) {
    const char *best = NULL;
    int best_n = 0;
    for (int i = 0; i < k; i++) {
        if (!ans[i]) continue;
        int n = 0;
        for (int j = 0; j < k; j++) n += ans[j] && !strcmp(ans[i], ans[j]);
        if (n > best_n) best_n = n, best = ans[i];
    }
    return best;
}

base_status run_stage_eval(run_ctx *c, const cJSON *st, int index) {
    const char *name = recipe_str(st, "name");
    cJSON **rows;
    char **where;
    int64_t nrows, nall;
    base_status s = run_stage_rows(c, st, &rows, &where, &nall);
    if (s) return base_err_wrap(s, "stage '%s'", name);
    nrows = nall;
    int64_t limit = recipe_int(st, "limit");
    if (limit > 0 && limit < nrows) nrows = limit;
    reward_pool *pool = NULL;
    rollout_engine *eng = NULL;
    s = run_reward_pool(c, st, &pool);
    if (!s) s = run_check_columns(pool, rows, where, nrows);
    int K = (int)recipe_int(st, "num_generations");
    int64_t max_prompt = recipe_int(st, "max_prompt_length"), max_new = recipe_int(st, "max_completion_length");
    if (!s && K < 1) s = base_err_set(BASE_ERR_INVALID, "stage '%s': num_generations must be >= 1", name);
    int chunk = K >= 256 ? 1 : 256 / K; /* prompts per rollout call */
    if (chunk > nrows) chunk = (int)nrows;
    if (!s) {
        rollout_limits lim = {.max_seqs = chunk * K, .max_prompts = chunk, .max_group = K,
                              .max_prompt_len = max_prompt, .max_new_tokens = max_new};
        s = rollout_new(c->policy, &lim, &eng);
    }
    if (s) {
        reward_pool_destroy(pool);
        free(rows);
        run_where_free(where, nall);
        return base_err_wrap(s, "stage '%s'", name);
    }
    int32_t stop_ids[8];
    int n_stop_ids = run_stop_ids(c, stop_ids, 8), n_stop_str;
    const char **stop_str = run_stop_strings(st, &n_stop_str);
    rollout_sampling sp = {(float)recipe_num(st, "temperature"), (float)recipe_num(st, "top_p"),
                           (int)recipe_int(st, "top_k"), (float)recipe_num(st, "min_p")};
    const char *answer_from = recipe_str(st, "answer_from");
    char fname[300];
    snprintf(fname, sizeof fname, "%s.samples.jsonl", name);
    char *spath = base_path_join(c->dir, fname);
    FILE *sf = fopen(spath, "w");
    if (!sf) s = base_err_set(BASE_ERR_IO, "%s: %s", spath, base_strerror_now());

    double acc_sum = 0, reward_sum = 0, len_sum = 0, cons_hits = 0;
    int64_t n_samples = 0, cons_n = 0, new_tokens = 0;
    double gen_seconds = 0;
    int nf = reward_pool_n_funcs(pool);
    double *func_sum = base_xcalloc((size_t)nf, sizeof(double));
    tok_ids *pids = base_xcalloc((size_t)chunk, sizeof *pids);
    char **ptext = base_xcalloc((size_t)chunk, sizeof *ptext);
    const int32_t **pp = base_xcalloc((size_t)chunk, sizeof *pp);
    int32_t *pl = base_xcalloc((size_t)chunk, sizeof *pl);
    cJSON **samples = base_xcalloc((size_t)chunk * (size_t)K, sizeof *samples);
    char **answers = base_xcalloc((size_t)K, sizeof *answers);
    base_progress prog;
    if (!c->opts.quiet) base_progress_start(&prog, name, nrows);
    for (int64_t p0 = 0; p0 < nrows && !s; p0 += chunk) {
        int np = (int)(nrows - p0 < chunk ? nrows - p0 : chunk);
        for (int i = 0; i < np && !s; i++) {
            free(ptext[i]);
            s = run_prompt(c, st, rows[p0 + i], where[p0 + i], max_prompt, &pids[i], &ptext[i]);
            pp[i] = pids[i].ids;
            pl[i] = (int32_t)pids[i].n;
        }
        if (s) break;
        rollout_request rq = {.n_prompts = np, .prompt_ids = pp, .prompt_len = pl, .G = K, .sampling = sp,
                              .max_new_tokens = max_new, .stop_ids = stop_ids, .n_stop_ids = n_stop_ids,
                              .stop_strings = stop_str, .n_stop_strings = n_stop_str, .tok = c->tok,
                              .seed = c->seed, .step = 0x80000000u | (uint32_t)index,
                              .prompt_base = (uint32_t)p0};
        rollout_result res;
        s = rollout_generate(eng, &rq, &res);
        if (s) break;
        gen_seconds += res.seconds;
        new_tokens += res.new_tokens;
        for (int i = 0; i < np * K; i++) {
            const rollout_completion *co = &res.out[i];
            char *text = run_completion_text(c, co->ids, co->len, co->finish == ROLLOUT_FINISH_STOP);
            samples[i] = run_make_sample(rows[p0 + i / K], ptext[i / K], text, co->len,
                                         rollout_finish_name(co->finish));
            free(text);
        }
        reward_scores sc = {0};
        s = reward_pool_score(pool, (const cJSON *const *)samples, np * K, &sc);
        if (s) break;
        for (int i = 0; i < np; i++) {
            double prompt_acc = 0;
            for (int g = 0; g < K; g++) {
                int j = i * K + g;
                double a = sc.score[(size_t)j * (size_t)nf];
                prompt_acc += isnan(a) ? 0 : a;
                if (!isnan(sc.total[j])) reward_sum += sc.total[j];
                for (int f = 0; f < nf; f++) {
                    double v = sc.score[(size_t)j * (size_t)nf + (size_t)f];
                    if (!isnan(v)) func_sum[f] += v;
                }
                len_sum += (double)res.out[j].len;
                const char *comp = base_json_str(samples[j], "completion", "");
                answers[g] = extract_answer(comp, answer_from);
                cJSON *line = cJSON_CreateObject();
                cJSON_AddStringToObject(line, "prompt", ptext[i]);
                cJSON_AddStringToObject(line, "completion", comp);
                cJSON_AddItemToObject(line, "reward", isnan(sc.total[j]) ? cJSON_CreateNull() : cJSON_CreateNumber(sc.total[j]));
                cJSON *rw = cJSON_AddObjectToObject(line, "rewards");
                for (int f = 0; f < nf; f++) {
                    double v = sc.score[(size_t)j * (size_t)nf + (size_t)f];
                    cJSON_AddItemToObject(rw, reward_pool_func_name(pool, f), isnan(v) ? cJSON_CreateNull() : cJSON_CreateNumber(v));
                }
                if (answers[g]) cJSON_AddStringToObject(line, "extracted", answers[g]);
                if (sf) {
                    char *t = cJSON_PrintUnformatted(line);
                    fprintf(sf, "%s\n", t);
                    cJSON_free(t);
                }
                cJSON_Delete(line);
            }
            acc_sum += prompt_acc / K;
            const char *gold = base_json_str(rows[p0 + i], "answer", NULL);
            if (gold) {
                const char *v = vote(answers, K);
                reward_math_opts mo;
                reward_math_opts_default(&mo);
                mo.gold_plain = 1;
                cons_n++;
                if (v && reward_math_equal(v, strlen(v), gold, strlen(gold), &mo) == REWARD_MATH_EQUAL) cons_hits++;
            }
            for (int g = 0; g < K; g++) free(answers[g]), answers[g] = NULL;
        }
        n_samples += (int64_t)np * K;
        reward_scores_free(&sc);
        for (int i = 0; i < np * K; i++) cJSON_Delete(samples[i]), samples[i] = NULL;
        if (!c->opts.quiet)
            base_progress_update(&prog, p0 + np, "accuracy %.3f", acc_sum / (double)(p0 + np));
    }
    if (!c->opts.quiet) base_progress_finish(&prog);
    if (sf) fclose(sf);
    if (!s) {
        double acc = acc_sum / (double)nrows;
        cJSON *sum = cJSON_CreateObject();
        cJSON_AddNumberToObject(sum, "accuracy", acc);
        cJSON_AddNumberToObject(sum, "pass@1", acc);
        if (cons_n) {
            char key[32];
            snprintf(key, sizeof key, "cons@%d", K);
            cJSON_AddNumberToObject(sum, key, cons_hits / (double)cons_n);
        }
        cJSON_AddNumberToObject(sum, "reward", reward_sum / (double)n_samples);
        for (int f = 0; f < nf; f++) {
            char key[160];
            snprintf(key, sizeof key, "rewards/%s", reward_pool_func_name(pool, f));
            cJSON_AddNumberToObject(sum, key, func_sum[f] / (double)n_samples);
        }
        cJSON_AddNumberToObject(sum, "completion_length", len_sum / (double)n_samples);
        cJSON_AddNumberToObject(sum, "n_prompts", (double)nrows);
        cJSON_AddNumberToObject(sum, "num_generations", K);
        cJSON_AddNumberToObject(sum, "tokens_per_s", gen_seconds > 0 ? (double)new_tokens / gen_seconds : 0);
        cJSON *line = cJSON_Duplicate(sum, 1);
        cJSON_AddStringToObject(line, "stage", name);
        cJSON_AddNumberToObject(line, "step", (double)c->total_steps);
        run_metrics_write(c, line);
        s = run_summary_set(c, name, sum);
        if (!c->opts.quiet) {
            base_info("%s: accuracy %.3f (pass@1 over %d samples, %lld prompts)%s", name, acc, K, (long long)nrows,
                      cons_n ? "" : "; no 'answer' column: no cons@K");
        }
    }
    for (int i = 0; i < chunk; i++) tok_ids_free(&pids[i]), free(ptext[i]);
    free(pids), free(ptext), free(pp), free(pl), free(samples), free(answers), free(func_sum), free(spath);
    free(stop_str);
    rollout_free(eng);
    reward_pool_destroy(pool);
    free(rows);
    run_where_free(where, nall);
    return s ? base_err_wrap(s, "stage '%s'", name) : BASE_OK;
}
