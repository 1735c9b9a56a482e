/*
 * The eval stage: K samples per prompt at the R1 paper's evaluation
 * settings (temperature 0.6, top-p 0.95 by default), scored by the stage's
 * rewards.
 *
 *   accuracy = pass@1 averaged over K samples: the mean over prompts of the
 *              mean over their K samples of the FIRST reward function's
 *              score. Recipes list the accuracy reward first. A nil (or a
 *              failed call) is "not scored", as in training: left out of
 *              the means, never counted as 0; a prompt none of whose
 *              samples was scored is left out of the accuracy, and
 *              rewards/NAME/scored says how many samples each function
 *              scored (accuracy is null when the first scored none).
 *   reward, rewards/NAME, rewards/NAME/PART: means over the samples that
 *              have them; reward_errors: failed reward calls (the error
 *              policy, max_reward_error_rate, applies per generation batch).
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
#include <unistd.h>

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

static void add_num(cJSON *o, const char *k, double v) {
    cJSON_AddItemToObject(o, k, isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull());
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

base_status run_stage_eval(run_ctx *c, const recipe_stage_cfg *st) {
    const recipe_eval_cfg *ev = &st->eval;
    const char *name = st->name;
    const int index = st->index;
    cJSON **rows;
    char **where;
    int64_t nrows, nall;
    base_status s = run_stage_rows(c, st, &rows, &where, &nall);
    if (s) return base_err_wrap(s, "stage '%s'", name);
    nrows = nall;
    if (ev->limit > 0 && ev->limit < nrows) nrows = ev->limit;
    reward_pool *pool = NULL;
    run_gen gen;
    memset(&gen, 0, sizeof gen);
    s = run_reward_pool(c, st, &pool);
    if (!s) s = run_check_columns(pool, rows, where, nrows);
    /* several ranks: each call's prompts are split over them (run_gen_chunk) */
    int64_t chunk = (int64_t)run_gen_chunk_size(&ev->gen, nrows) * c->world;
    if (chunk > nrows) chunk = nrows > 0 ? nrows : 1;
    if (!s) s = run_gen_init(&gen, c, st, &ev->gen, pool, (int)chunk);
    const char *answer_from = ev->answer_from;
    char fname[300];
    snprintf(fname, sizeof fname, "%s.samples.jsonl", name);
    char *spath = base_path_join(c->dir, fname);
    FILE *sf = s || !run_writes(c) ? NULL : fopen(spath, "w"); /* rank 0 writes */
    if (!s && run_writes(c) && !sf) s = base_err_set(BASE_ERR_IO, "%s: %s", spath, base_strerror_now());
    int K = gen.K, nf = pool ? reward_pool_n_funcs(pool) : 0;
    double acc_sum = 0, len_sum = 0, cons_hits = 0;
    run_sum reward_sum = {0, 0};
    int64_t n_samples = 0, cons_n = 0, acc_prompts = 0, reward_n = 0;
    run_sum *func_sum = base_xcalloc((size_t)nf + 1, sizeof *func_sum);
    int64_t *func_n = base_xcalloc((size_t)nf + 1, sizeof(int64_t));
    run_reward_parts parts;
    run_reward_parts_init(&parts, nf);
    char **answers = base_xcalloc((size_t)K + 1, sizeof *answers);
    base_progress prog;
    if (!s && !c->opts.quiet) base_progress_start(&prog, name, nrows);
    for (int64_t p0 = 0; p0 < nrows && !s; p0 += gen.chunk) {
        if (run_poll_signal(c)) { /* an eval keeps no partial results: it runs again on resume */
            s = run_stage_interrupted(c, p0, nrows);
            break;
        }
        int np = (int)(nrows - p0 < gen.chunk ? nrows - p0 : gen.chunk);
        s = run_gen_chunk(&gen, rows + p0, where + p0, np, 0x80000000u | (uint32_t)index, (uint32_t)p0);
        if (s) break;
        const reward_scores *sc = &gen.sc;
        for (int i = 0; i < np; i++) {
            double prompt_acc = 0;
            int prompt_scored = 0;
            for (int g = 0; g < K; g++) {
                int j = i * K + g;
                double a = sc->score[(size_t)j * (size_t)nf];
                if (!isnan(a)) prompt_acc += a, prompt_scored++;
                if (!isnan(sc->total[j])) run_sum_add(&reward_sum, sc->total[j]), reward_n++;
                for (int f = 0; f < nf; f++) {
                    double v = sc->score[(size_t)j * (size_t)nf + (size_t)f];
                    if (!isnan(v)) run_sum_add(&func_sum[f], v), func_n[f]++;
                }
                run_reward_parts_add(&parts, sc, j);
                len_sum += (double)gen.out[j].len;
                const char *comp = base_json_str(gen.samples[j], "completion", "");
                answers[g] = extract_answer(comp, answer_from);
                cJSON *line = cJSON_CreateObject();
                cJSON_AddStringToObject(line, "prompt", gen.ptext[i]);
                cJSON_AddStringToObject(line, "completion", comp);
                cJSON_AddItemToObject(line, "reward", isnan(sc->total[j]) ? cJSON_CreateNull() : cJSON_CreateNumber(sc->total[j]));
                cJSON *rw = cJSON_AddObjectToObject(line, "rewards");
                for (int f = 0; f < nf; f++) {
                    double v = sc->score[(size_t)j * (size_t)nf + (size_t)f];
                    cJSON_AddItemToObject(rw, reward_pool_func_name(pool, f), isnan(v) ? cJSON_CreateNull() : cJSON_CreateNumber(v));
                }
                if (answers[g]) cJSON_AddStringToObject(line, "extracted", answers[g]);
                char *t = base_json_print(line, 0);
                if (sf) fprintf(sf, "%s\n", t);
                free(t);
                cJSON_Delete(line);
            }
            if (prompt_scored) acc_sum += prompt_acc / prompt_scored, acc_prompts++;
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
        if (!c->opts.quiet) {
            char errs[48] = "";
            if (gen.errs.total_errors > 0)
                snprintf(errs, sizeof errs, " reward_errors %lld", (long long)gen.errs.total_errors);
            base_progress_update(&prog, p0 + np, "accuracy %.3f%s", acc_prompts ? acc_sum / (double)acc_prompts : NAN,
                                 errs);
        }
    }
    if (!c->opts.quiet && gen.eng) base_progress_finish(&prog);
    if (sf) fclose(sf);
    if (s == BASE_ERR_INTERRUPTED && run_writes(c)) unlink(spath); /* nothing of a stopped stage stays */
    if (!s) {
        double acc = acc_prompts ? acc_sum / (double)acc_prompts : NAN;
        cJSON *sum = cJSON_CreateObject();
        add_num(sum, "accuracy", acc);
        add_num(sum, "pass@1", acc);
        if (cons_n) {
            char key[32];
            snprintf(key, sizeof key, "cons@%d", K);
            cJSON_AddNumberToObject(sum, key, cons_hits / (double)cons_n);
        }
        add_num(sum, "reward", reward_n ? run_sum_get(&reward_sum) / (double)reward_n : NAN);
        for (int f = 0; f < nf; f++) {
            char key[160];
            snprintf(key, sizeof key, "rewards/%s", reward_pool_func_name(pool, f));
            add_num(sum, key, func_n[f] ? run_sum_get(&func_sum[f]) / (double)func_n[f] : NAN);
            snprintf(key, sizeof key, "rewards/%s/scored", reward_pool_func_name(pool, f));
            cJSON_AddNumberToObject(sum, key, (double)func_n[f]);
        }
        run_reward_parts_put(&parts, pool, sum);
        cJSON_AddNumberToObject(sum, "reward_errors", (double)gen.errs.total_errors);
        cJSON_AddNumberToObject(sum, "n_samples", (double)n_samples);
        cJSON_AddNumberToObject(sum, "completion_length", len_sum / (double)n_samples);
        cJSON_AddNumberToObject(sum, "n_prompts", (double)nrows);
        cJSON_AddNumberToObject(sum, "num_generations", K);
        cJSON_AddNumberToObject(sum, "tokens_per_s", gen.gen_seconds > 0 ? (double)gen.new_tokens / gen.gen_seconds : 0);
        cJSON *line = cJSON_Duplicate(sum, 1);
        cJSON_AddStringToObject(line, "stage", name);
        cJSON_AddNumberToObject(line, "step", (double)c->total_steps);
        run_metrics_write(c, line);
        s = run_summary_set(c, name, sum);
        if (!c->opts.quiet) {
            char errs[64] = "";
            if (gen.errs.total_errors > 0)
                snprintf(errs, sizeof errs, ", %lld reward errors", (long long)gen.errs.total_errors);
            base_info("%s: accuracy %.3f (pass@1 over %d samples, %lld prompts; %lld of %lld samples scored%s)%s", name,
                      acc, K, (long long)nrows, (long long)func_n[0], (long long)n_samples, errs,
                      cons_n ? "" : "; no 'answer' column: no cons@K");
        }
        if (func_n[0] == 0)
            base_warn("%s: the accuracy reward '%s' (the first) scored none of the %lld samples (nil for every one): "
                      "accuracy is null", name, reward_pool_func_name(pool, 0), (long long)n_samples);
    }
    run_reward_parts_free(&parts);
    free(answers), free(func_sum), free(func_n), free(spath);
    run_gen_free(&gen);
    reward_pool_destroy(pool);
    free(rows);
    run_where_free(where, nall);
    return s ? base_err_wrap(s, "stage '%s'", name) : BASE_OK;
}
