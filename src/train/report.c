/*
 * The run report: RUN/report.html from metrics.jsonl, samples.jsonl and
 * summary.json.
 *
 *   Results   every stage's summary numbers, held-out accuracy by eval stage
 *   GRPO      a grid of plots (rewards per function, length, KL, entropy,
 *             clip fractions, loss, gradient norm, learning rate, zero-std
 *             groups, generated tokens/s, step time), then a table of a few
 *             sample completions (prompt, completion, rewards, advantage)
 *             of each logged step
 *   SFT       loss, gradient norm, learning rate, loss tokens and training
 *             tokens/s
 *   sample    what happened to the samples: kept, dropped by the keep
 *             expression, by each filter, over max_per_prompt
 *
 * Each plot draws the raw values thin and an exponential moving average
 * (TensorBoard's smoothing, weight 0.6, debiased) thick, on axes fitted to
 * the data (x from the first to the last step; y from the data's range,
 * never below 0 for non-negative data, so an all-zero curve sits on a 0..1
 * axis, not -1..1). The plots are PNGs drawn by one gnuplot process, run in
 * the run directory on one script (plots/report.gp, data in plots/NAME.dat);
 * without gnuplot the page says so and links the data files.
 *
 * A stage's kind comes from its metrics lines: "kept" marks a sample stage,
 * "accuracy" without "loss" an eval stage, "loss" with "reward" GRPO,
 * "loss" alone SFT.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "run_internal.h"

enum { K_GRPO = 1, K_SFT = 2, K_EVAL = 4, K_SAMPLE = 8 };

typedef struct {
    const char *file;     /* png base name */
    const char *title;
    const char *prefixes; /* keys plotted: "|"-separated; "p*" = every key starting with p (but .../std) */
    int kinds;            /* the stage kinds that get it */
} plot_spec;

static const plot_spec plots[] = {
    {"rewards", "reward (total and per function)", "reward|rewards/*", K_GRPO},
    {"length", "completion length (tokens)", "completion_length|completions/max_length", K_GRPO},
    {"kl", "KL to the reference", "kl", K_GRPO},
    {"entropy", "entropy", "entropy", K_GRPO},
    {"clip", "clip fractions", "clip_ratio/low|clip_ratio/high", K_GRPO},
    {"loss", "loss", "loss", K_GRPO | K_SFT},
    {"grad_norm", "gradient norm", "grad_norm", K_GRPO | K_SFT},
    {"lr", "learning rate", "lr", K_GRPO | K_SFT},
    {"zero_std", "fraction of groups with zero reward std", "frac_reward_zero_std", K_GRPO},
    {"throughput", "generated tokens per second", "tokens_per_s", K_GRPO},
    {"step_time", "seconds per step (rollout, reward, train)", "step_time|time/*", K_GRPO},
    {"num_tokens", "loss tokens per step", "num_tokens", K_SFT},
    {"train_throughput", "training tokens per second", "tokens_per_s", K_SFT},
    /* MoE models (issue 15): the worst layer first, then up to 15 layers */
    {"moe_load", "MoE expert load: max / mean tokens per expert (worst layer, per layer)",
     "moe/load_max_over_mean|moe/load_max_over_mean/*", K_GRPO | K_SFT},
    {"moe_dropped", "MoE tokens dropped (routed - processed)", "moe/dropped_tokens", K_GRPO | K_SFT},
    {"moe_aux_loss", "MoE sequence-wise balance loss (router_aux_loss_coef x its mean)", "moe/aux_loss",
     K_GRPO | K_SFT},
};

#define SMOOTH_WEIGHT 0.6
#define SAMPLES_PER_STEP 8 /* completions shown per logged step */
#define SAMPLE_STEPS 12    /* logged steps shown per stage (first, last, evenly between) */
#define TEXT_MAX 600       /* characters of a prompt or completion shown */

static const char *const colors[] = {"1f77b4", "ff7f0e", "2ca02c", "d62728", "9467bd", "8c564b", "e377c2", "7f7f7f"};

static int key_matches(const char *key, const char *prefixes) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", prefixes);
    char *save = NULL;
    for (char *p = strtok_r(buf, "|", &save); p; p = strtok_r(NULL, "|", &save)) {
        size_t n = strlen(p);
        if (n && p[n - 1] == '*') {
            if (!strncmp(key, p, n - 1) && !strstr(key + n - 1, "/std")) return 1;
        } else if (!strcmp(key, p)) {
            return 1;
        }
    }
    return 0;
}

static void html_escape(base_buf *b, const char *s) {
    for (; *s; s++) {
        if (*s == '<') base_buf_puts(b, "&lt;");
        else if (*s == '>') base_buf_puts(b, "&gt;");
        else if (*s == '&') base_buf_puts(b, "&amp;");
        else if (*s == '"') base_buf_puts(b, "&quot;");
        else base_buf_append(b, s, 1);
    }
}

/* At most max bytes of s, cut at a UTF-8 character boundary, "..." after a cut. */
static void html_text(base_buf *b, const char *s, size_t max) {
    size_t n = strlen(s);
    if (n <= max) {
        html_escape(b, s);
        return;
    }
    while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80) max--;
    char *t = base_xmalloc(max + 1);
    memcpy(t, s, max);
    t[max] = 0;
    html_escape(b, t);
    base_buf_puts(b, "&hellip;");
    free(t);
}

/* A gnuplot single-quoted string: ' doubled. */
static void gp_str(base_buf *b, const char *s) {
    base_buf_puts(b, "'");
    for (; *s; s++) {
        if (*s == '\'') base_buf_puts(b, "''");
        else base_buf_append(b, s, 1);
    }
    base_buf_puts(b, "'");
}

/* A file name part from a stage name: letters, digits, '-', '_', '.'. */
static void file_part(char *out, size_t n, const char *s) {
    size_t o = 0;
    for (; *s && o + 1 < n; s++) {
        char ch = *s;
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                 ch == '.';
        out[o++] = ok ? ch : '_';
    }
    out[o] = 0;
}

static int have_gnuplot(void) {
    return system("command -v gnuplot >/dev/null 2>&1") == 0;
}

/* gnuplot on DIR/plots/report.gp with DIR as its working directory
 * (the script names files relative to it); warnings to plots/gnuplot.log. */
static int run_gnuplot(const char *dir) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (chdir(dir) != 0) _exit(127);
        if (!freopen("plots/gnuplot.log", "w", stderr)) _exit(127);
        execlp("gnuplot", "gnuplot", "plots/report.gp", (char *)NULL);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) < 0) return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* The axis range [lo, hi] of values: the data's range plus 5%, not below
 * 0 for non-negative data; a constant v gets [v - |v|/2, v + |v|/2] (0..1
 * for 0). Returns 0 when there are no finite values. */
static int fit_range(const double *v, int n, double *lo, double *hi) {
    double a = INFINITY, b = -INFINITY;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i])) a = fmin(a, v[i]), b = fmax(b, v[i]);
    if (a > b) return 0;
    double pad = b > a ? 0.05 * (b - a) : (a != 0 ? 0.5 * fabs(a) : 1);
    *lo = a - pad;
    *hi = b + pad;
    if (a >= 0 && *lo < 0) *lo = 0;
    if (b == a && a == 0) *lo = 0, *hi = 1;
    return 1;
}

typedef struct {
    const char *dir;
    int gp;         /* gnuplot present */
    base_buf script; /* plots/report.gp */
    base_buf html;
    char **pngs;     /* the PNGs the script draws (to check afterwards), without ".png" */
    char **alts;     /* their titles */
    int npng;
} report;

/* A figure: the image when gnuplot drew it, else the data file. The
 * marker "@@FIG n@@" in the page is replaced by the figure once gnuplot ran. */
static void figure(report *r, const char *base, const char *title) {
    r->pngs = base_xrealloc(r->pngs, (size_t)(r->npng + 1) * sizeof *r->pngs);
    r->alts = base_xrealloc(r->alts, (size_t)(r->npng + 1) * sizeof *r->alts);
    r->pngs[r->npng] = base_xstrdup(base);
    r->alts[r->npng] = base_xstrdup(title);
    base_buf_printf(&r->html, "@@FIG %d@@\n", r->npng++);
}

/* One plot of a stage's lines: a data file (step, raw columns, smoothed
 * columns) and its part of the script. */
static void plot_stage(report *r, const char *stage, cJSON **lines, int n, const plot_spec *ps) {
    const char *cols[16];
    int nc = 0;
    for (int i = 0; i < n; i++)
        for (const cJSON *e = lines[i]->child; e; e = e->next) {
            if (!cJSON_IsNumber(e) || !key_matches(e->string, ps->prefixes)) continue;
            int seen = 0;
            for (int k = 0; k < nc; k++) seen |= !strcmp(cols[k], e->string);
            if (!seen && nc < 16) cols[nc++] = e->string;
        }
    if (!nc) return;
    char sp[128], base[300];
    file_part(sp, sizeof sp, stage);
    snprintf(base, sizeof base, "plots/%s_%s", sp, ps->file);
    double *raw = base_xmalloc((size_t)n * (size_t)nc * sizeof(double)), *x = base_xmalloc((size_t)n * sizeof(double));
    for (int i = 0; i < n; i++) {
        x[i] = base_json_num(lines[i], "step", i + 1, NULL);
        for (int k = 0; k < nc; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(lines[i], cols[k]);
            raw[(size_t)k * n + i] = cJSON_IsNumber(v) ? v->valuedouble : NAN;
        }
    }
    base_buf dat = {0};
    base_buf_puts(&dat, "# step");
    for (int k = 0; k < nc; k++) base_buf_printf(&dat, "\t%s", cols[k]);
    for (int k = 0; k < nc; k++) base_buf_printf(&dat, "\t%s (smoothed)", cols[k]);
    base_buf_puts(&dat, "\n");
    double *ema = base_xcalloc((size_t)nc, sizeof(double));
    int *cnt = base_xcalloc((size_t)nc, sizeof(int));
    for (int i = 0; i < n; i++) {
        base_buf_printf(&dat, "%.9g", x[i]);
        for (int k = 0; k < nc; k++) {
            double v = raw[(size_t)k * n + i];
            if (isfinite(v)) base_buf_printf(&dat, "\t%.9g", v);
            else base_buf_puts(&dat, "\tNaN");
        }
        for (int k = 0; k < nc; k++) {
            double v = raw[(size_t)k * n + i];
            if (isfinite(v)) { /* debiased EMA, as TensorBoard smooths */
                ema[k] = ema[k] * SMOOTH_WEIGHT + (1 - SMOOTH_WEIGHT) * v;
                cnt[k]++;
            }
            if (cnt[k]) base_buf_printf(&dat, "\t%.9g", ema[k] / (1 - pow(SMOOTH_WEIGHT, cnt[k])));
            else base_buf_puts(&dat, "\tNaN");
        }
        base_buf_puts(&dat, "\n");
    }
    char rel[320];
    snprintf(rel, sizeof rel, "%s.dat", base);
    char *datp = base_path_join(r->dir, rel);
    base_write_file_atomic(datp, dat.data, dat.len);
    free(datp);
    base_buf_free(&dat);
    double lo, hi;
    int any = fit_range(raw, n * nc, &lo, &hi);
    double x0 = n ? x[0] : 0, x1 = n ? x[n - 1] : 1;
    if (x1 <= x0) x0 -= 1, x1 += 1;
    base_buf *sc = &r->script;
    base_buf_printf(sc, "set output '%s.png'\nset title ", base);
    base_buf t = {0};
    base_buf_printf(&t, "%s: %s", stage, ps->title);
    gp_str(sc, t.data);
    base_buf_free(&t);
    base_buf_printf(sc, "\nset xrange [%.17g:%.17g]\n%s", x0, x1, x1 - x0 <= 10 ? "set xtics 1\n" : "set xtics autofreq\n");
    if (any) base_buf_printf(sc, "set yrange [%.17g:%.17g]\n", lo, hi);
    else base_buf_puts(sc, "set yrange [0:1]\n");
    base_buf_puts(sc, "plot ");
    for (int k = 0; k < nc; k++) {
        const char *col = colors[k % 8];
        base_buf_printf(sc, "%s'%s.dat' using 1:%d with linespoints pt 7 ps 0.35 lw 1 lc rgb '#a0%s' notitle, "
                            "'%s.dat' using 1:%d with lines lw 2.5 lc rgb '#%s' title ",
                        k ? ", " : "", base, k + 2, col, base, nc + k + 2, col);
        gp_str(sc, cols[k]);
    }
    base_buf_puts(sc, "\n");
    figure(r, base, ps->title);
    free(raw), free(x), free(ema), free(cnt);
}

/* A few completions of each logged step of a GRPO stage (samples.jsonl). */
static void samples_table(report *r, const char *stage, cJSON **samp, int ns) {
    /* the logged steps of this stage, in order */
    int64_t *steps = NULL;
    int nsteps = 0;
    for (int i = 0; i < ns; i++) {
        if (strcmp(base_json_str(samp[i], "stage", ""), stage)) continue;
        int64_t st = base_json_int(samp[i], "step", -1, NULL);
        if (nsteps && steps[nsteps - 1] == st) continue;
        steps = base_xrealloc(steps, (size_t)(nsteps + 1) * sizeof *steps);
        steps[nsteps++] = st;
    }
    if (!nsteps) return;
    base_buf *h = &r->html;
    char anchor[128];
    file_part(anchor, sizeof anchor, stage);
    base_buf_printf(h, "<h3 id=\"samples-%s\">Sample completions</h3>\n<p class=\"note\">The first %d completions of each logged step "
                       "(log_completions_steps), %d of the %d logged steps; all of them in "
                       "<a href=\"samples.jsonl\">samples.jsonl</a>.</p>\n",
                    anchor, SAMPLES_PER_STEP, nsteps < SAMPLE_STEPS ? nsteps : SAMPLE_STEPS, nsteps);
    int shown = nsteps < SAMPLE_STEPS ? nsteps : SAMPLE_STEPS;
    for (int q = 0; q < shown; q++) {
        int idx = shown == 1 ? 0 : (int)((int64_t)q * (nsteps - 1) / (shown - 1));
        int64_t st = steps[idx];
        base_buf_printf(h, "<details%s><summary>step %lld</summary>\n<table class=\"samples\"><tr><th>prompt</th>"
                           "<th>completion</th><th>reward</th><th>rewards</th><th>advantage</th><th>finish</th></tr>\n",
                        q == shown - 1 ? " open" : "", (long long)st);
        int k = 0;
        for (int i = 0; i < ns && k < SAMPLES_PER_STEP; i++) {
            if (strcmp(base_json_str(samp[i], "stage", ""), stage) || base_json_int(samp[i], "step", -1, NULL) != st)
                continue;
            k++;
            base_buf_puts(h, "<tr><td class=\"text\">");
            html_text(h, base_json_str(samp[i], "prompt", ""), TEXT_MAX);
            base_buf_puts(h, "</td><td class=\"text\">");
            html_text(h, base_json_str(samp[i], "completion", ""), TEXT_MAX);
            const cJSON *rw = cJSON_GetObjectItemCaseSensitive(samp[i], "reward");
            if (cJSON_IsNumber(rw)) base_buf_printf(h, "</td><td>%.4g</td><td class=\"parts\">", rw->valuedouble);
            else base_buf_puts(h, "</td><td>-</td><td class=\"parts\">");
            const cJSON *parts = cJSON_GetObjectItemCaseSensitive(samp[i], "rewards");
            for (const cJSON *e = parts ? parts->child : NULL; e; e = e->next) {
                html_escape(h, e->string ? e->string : "");
                if (cJSON_IsNumber(e)) base_buf_printf(h, " %.4g", e->valuedouble);
                else base_buf_puts(h, " -");
                if (e->next) base_buf_puts(h, "<br>");
            }
            const cJSON *adv = cJSON_GetObjectItemCaseSensitive(samp[i], "advantage");
            if (cJSON_IsNumber(adv))
                base_buf_printf(h, "</td><td class=\"%s\">%+.3f</td><td>", adv->valuedouble > 0 ? "pos" : adv->valuedouble < 0 ? "neg" : "",
                                adv->valuedouble);
            else base_buf_puts(h, "</td><td>-</td><td>");
            html_escape(h, base_json_str(samp[i], "finish_reason", ""));
            base_buf_puts(h, "</td></tr>\n");
        }
        base_buf_puts(h, "</table></details>\n");
    }
    free(steps);
}

/* A sample stage (its numbers are in Results): where the samples went, a
 * bar chart of kept and dropped by reason. */
static void sample_section(report *r, const char *stage, const cJSON *line) {
    base_buf *h = &r->html;
    base_buf_printf(h, "<p>Kept %.0f of %.0f completions (%.0f prompts, mean pass rate %.3f)", base_json_num(line, "kept", 0, NULL),
                    base_json_num(line, "total", 0, NULL), base_json_num(line, "prompts", 0, NULL),
                    base_json_num(line, "pass_rate", 0, NULL));
    const char *out = base_json_str(line, "output", NULL);
    if (out) {
        base_buf_puts(h, " in <code>");
        html_escape(h, out);
        base_buf_puts(h, "</code>");
    }
    base_buf_puts(h, ".</p>\n");
    const cJSON *dr = cJSON_GetObjectItemCaseSensitive(line, "dropped");
    if (!cJSON_IsObject(dr)) return;
    char sp[128], base[300];
    file_part(sp, sizeof sp, stage);
    snprintf(base, sizeof base, "plots/%s_outcome", sp);
    base_buf dat = {0};
    int i = 0;
    double top = base_json_num(line, "kept", 0, NULL);
    base_buf_printf(&dat, "%d\t%.17g\t\"kept\"\n", i++, top);
    for (const cJSON *e = dr->child; e; e = e->next) {
        if (!cJSON_IsNumber(e)) continue;
        top = fmax(top, e->valuedouble);
        base_buf_printf(&dat, "%d\t%.17g\t\"%s%s\"\n", i++, e->valuedouble,
                        !strcmp(e->string, "keep") ? "dropped: keep expression" : "dropped: ",
                        !strcmp(e->string, "keep") ? "" : e->string);
    }
    char rel[320];
    snprintf(rel, sizeof rel, "%s.dat", base);
    char *datp = base_path_join(r->dir, rel);
    base_write_file_atomic(datp, dat.data, dat.len);
    free(datp);
    base_buf_free(&dat);
    base_buf *sc = &r->script;
    base_buf_printf(sc, "set output '%s.png'\nset title ", base);
    base_buf t = {0};
    base_buf_printf(&t, "%s: samples kept and dropped (of %.0f)", stage, base_json_num(line, "total", 0, NULL));
    gp_str(sc, t.data);
    base_buf_free(&t);
    base_buf_printf(sc, "\nset xrange [-0.6:%d.4]\nset yrange [0:%.17g]\nset style fill solid 0.7\nset boxwidth 0.6\n"
                        "set xtics rotate by -25\nset bmargin 6\nunset xlabel\nplot '%s.dat' using 1:2:xtic(3) with boxes lc rgb '#1f77b4' notitle, "
                        "'' using 1:2:(sprintf('%%.0f',$2)) with labels offset 0,0.7 notitle\nset xtics norotate\n"
                        "set xlabel 'step'\nset bmargin\n",
                    i - 1, top > 0 ? top * 1.15 : 1, base);
    base_buf_puts(h, "<div class=\"grid\">");
    figure(r, base, "samples kept and dropped");
    base_buf_puts(h, "</div>\n");
}

/* Results: every summary number, and held-out accuracy by eval stage. */
static void results(report *r) {
    char *sp = base_path_join(r->dir, "summary.json");
    cJSON *sum = NULL;
    if (base_json_parse_file(sp, &sum) == BASE_OK && cJSON_IsObject(sum) && sum->child) {
        base_buf *h = &r->html;
        /* one row per metric, one column per stage (blank: the stage has no such number) */
        const char *keys[128];
        int nk = 0;
        for (const cJSON *st = sum->child; st; st = st->next)
            for (const cJSON *e = st->child; e; e = e->next) {
                int seen = !cJSON_IsNumber(e);
                for (int k = 0; k < nk && !seen; k++) seen = !strcmp(keys[k], e->string);
                if (!seen && nk < 128) keys[nk++] = e->string;
            }
        base_buf_puts(h, "<h2 id=\"results\">Results</h2>\n<table><tr><th></th>");
        for (const cJSON *st = sum->child; st; st = st->next) {
            base_buf_puts(h, "<th>");
            html_escape(h, st->string);
            base_buf_puts(h, "</th>");
        }
        base_buf_puts(h, "</tr>\n");
        for (int k = 0; k < nk; k++) {
            base_buf_puts(h, "<tr><td class=\"l\">");
            html_escape(h, keys[k]);
            base_buf_puts(h, "</td>");
            for (const cJSON *st = sum->child; st; st = st->next) {
                const cJSON *e = cJSON_GetObjectItemCaseSensitive(st, keys[k]);
                if (cJSON_IsNumber(e)) base_buf_printf(h, "<td>%.4g</td>", e->valuedouble);
                else base_buf_puts(h, "<td></td>");
            }
            base_buf_puts(h, "</tr>\n");
        }
        base_buf_puts(h, "</table>\n");
        base_buf acc = {0};
        int na = 0;
        for (const cJSON *st = sum->child; st; st = st->next) {
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(st, "accuracy");
            if (!cJSON_IsNumber(e)) continue;
            char name[128];
            file_part(name, sizeof name, st->string);
            base_buf_printf(&acc, "%d\t%.9g\t\"%s\"\n", na++, e->valuedouble, name);
        }
        if (na) {
            char *dp = base_path_join(r->dir, "plots/accuracy.dat");
            base_write_file_atomic(dp, acc.data, acc.len);
            free(dp);
            base_buf_printf(&r->script, "set output 'plots/accuracy.png'\nset title 'held-out accuracy (pass@1) by eval "
                                        "stage'\nunset xlabel\nset xrange [-0.6:%d.6]\nset yrange [0:1]\nset style fill solid 0.6\n"
                                        "set boxwidth 0.6\nplot 'plots/accuracy.dat' using 1:2:xtic(3) with boxes lc rgb "
                                        "'#2ca02c' notitle, '' using 1:2:(sprintf('%%.3f',$2)) with labels offset 0,1 "
                                        "notitle\nset xlabel 'step'\n",
                            na - 1);
            base_buf_puts(h, "<div class=\"grid\">");
            figure(r, "plots/accuracy", "accuracy");
            base_buf_puts(h, "</div>\n");
        }
        base_buf_free(&acc);
    }
    cJSON_Delete(sum);
    free(sp);
}

/* Every line of a JSONL file (damaged lines skipped: the report never
 * stops on them). */
static cJSON **read_lines(const char *dir, const char *name, int *n) {
    *n = 0;
    char *p = base_path_join(dir, name);
    base_jsonl *rd;
    cJSON **lines = NULL;
    if (base_jsonl_open(p, &rd) == BASE_OK) {
        int cap = 0;
        cJSON *v;
        base_status rs;
        while ((rs = base_jsonl_next(rd, &v)) != BASE_ERR_EOF) {
            if (rs) continue;
            if (*n == cap) lines = base_xrealloc(lines, (size_t)(cap = cap ? 2 * cap : 256) * sizeof *lines);
            lines[(*n)++] = v;
        }
        base_jsonl_close(rd);
    }
    free(p);
    return lines;
}

static int line_kind(const cJSON *l) {
    if (cJSON_GetObjectItemCaseSensitive(l, "kept")) return K_SAMPLE;
    int loss = cJSON_GetObjectItemCaseSensitive(l, "loss") != NULL;
    if (cJSON_GetObjectItemCaseSensitive(l, "accuracy") && !loss) return K_EVAL;
    if (loss) return cJSON_GetObjectItemCaseSensitive(l, "reward") ? K_GRPO : K_SFT;
    return 0; /* e.g. a skipped step's line */
}

static const char *css =
    "body{font-family:sans-serif;max-width:1600px;margin:1.5em auto;padding:0 1em;color:#222}"
    "h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:1.6em}"
    ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:10px}"
    ".grid figure{margin:0}.grid img{width:100%;height:auto;border:1px solid #eee}"
    "table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;"
    "vertical-align:top}td.l{text-align:left}th{background:#f4f4f4}"
    "table.samples td.text{text-align:left;white-space:pre-wrap;font-family:monospace;font-size:12px;max-width:560px}"
    "table.samples th{text-align:left}table.samples td.parts{text-align:left;font-size:12px}td.pos{color:#1a7f37}td.neg{color:#c62828}"
    "details{margin:4px 0}summary{cursor:pointer;font-weight:bold}.note{color:#555;font-size:90%}";

base_status run_report_write(const char *dir) {
    int n = 0, ns = 0;
    cJSON **lines = read_lines(dir, "metrics.jsonl", &n), **samp = read_lines(dir, "samples.jsonl", &ns);
    char *pd = base_path_join(dir, "plots");
    base_mkdir_p(pd);
    free(pd);
    report r = {.dir = dir, .gp = have_gnuplot()};
    base_buf_puts(&r.script, "set terminal pngcairo size 640,360 noenhanced font 'DejaVu Sans,10'\n"
                             "set grid\nset key below\nset xlabel 'step'\nset datafile missing 'NaN'\n");
    base_buf *h = &r.html;
    base_buf_printf(h, "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>grpo run report</title>\n"
                       "<style>%s</style></head><body>\n",
                    css);
    base_buf_puts(h, "<h1>grpo run report</h1>\n<p>Run directory: <code>");
    html_escape(h, dir);
    base_buf_puts(h, "</code>; configuration: <a href=\"config.resolved.lua\">config.resolved.lua</a>; "
                     "metrics: <a href=\"metrics.jsonl\">metrics.jsonl</a> (and TensorBoard: <code>tensorboard "
                     "--logdir</code> on the run directory's parent); samples: <a href=\"samples.jsonl\">samples.jsonl</a></p>\n"
                     "<p class=\"note\">Plots: thin lines and points are the raw values, thick lines their exponential "
                     "moving average (weight 0.6, as TensorBoard smooths).</p>\n");
    if (!r.gp) base_buf_puts(h, "<p><b>gnuplot was not found: plots are missing (install gnuplot-nox).</b></p>\n");
    results(&r);
    /* the stages, in order of appearance */
    const char *stages[64];
    int kinds[64], nst = 0;
    for (int i = 0; i < n; i++) {
        const char *st = base_json_str(lines[i], "stage", NULL);
        int kind = line_kind(lines[i]);
        if (!st || !kind) continue;
        int seen = -1;
        for (int k = 0; k < nst; k++)
            if (!strcmp(stages[k], st)) seen = k;
        if (seen < 0 && nst < 64) stages[nst] = st, kinds[nst++] = kind;
    }
    cJSON **sel = base_xcalloc((size_t)n + 1, sizeof *sel);
    for (int k = 0; k < nst; k++) {
        if (kinds[k] == K_EVAL) continue; /* in Results */
        int m = 0;
        for (int i = 0; i < n; i++)
            if (!strcmp(base_json_str(lines[i], "stage", ""), stages[k]) && line_kind(lines[i]) == kinds[k])
                sel[m++] = lines[i];
        const char *kname = kinds[k] == K_GRPO ? "GRPO" : kinds[k] == K_SFT ? "SFT" : "rejection sampling";
        char anchor[128];
        file_part(anchor, sizeof anchor, stages[k]);
        base_buf_printf(h, "<h2 id=\"stage-%s\">Stage ", anchor);
        html_escape(h, stages[k]);
        if (kinds[k] == K_SAMPLE) base_buf_printf(h, " (%s)</h2>\n", kname);
        else base_buf_printf(h, " (%s, %d logged steps)</h2>\n", kname, m);
        if (kinds[k] == K_SAMPLE) {
            sample_section(&r, stages[k], sel[m - 1]);
            continue;
        }
        base_buf_puts(h, "<div class=\"grid\">\n");
        for (size_t p = 0; p < sizeof plots / sizeof plots[0]; p++)
            if (plots[p].kinds & kinds[k]) plot_stage(&r, stages[k], sel, m, &plots[p]);
        base_buf_puts(h, "</div>\n");
        if (kinds[k] == K_GRPO) samples_table(&r, stages[k], samp, ns);
    }
    free(sel);
    base_buf_puts(h, "</body></html>\n");
    /* draw, then put each figure or its data link in place */
    int drawn = 0;
    if (r.gp && r.npng) {
        char *gpp = base_path_join(dir, "plots/report.gp");
        base_status ws = base_write_file_atomic(gpp, r.script.data, r.script.len);
        free(gpp);
        drawn = !ws && run_gnuplot(dir) == 0;
    }
    base_buf out = {0};
    const char *p = h->data;
    for (int f = 0; f < r.npng; f++) {
        char mark[32];
        snprintf(mark, sizeof mark, "@@FIG %d@@", f);
        const char *at = strstr(p, mark);
        base_buf_append(&out, p, (size_t)(at - p));
        base_buf png = {0};
        base_buf_printf(&png, "%s/%s.png", dir, r.pngs[f]);
        if (drawn && base_file_exists(png.data)) {
            base_buf_printf(&out, "<figure><img src=\"%s.png\" alt=\"", r.pngs[f]);
            html_escape(&out, r.alts[f]);
            base_buf_puts(&out, "\"></figure>");
        } else {
            base_buf_puts(&out, "<p>");
            html_escape(&out, r.alts[f]);
            base_buf_printf(&out, ": data in <a href=\"%s.dat\">%s.dat</a></p>", r.pngs[f], r.pngs[f]);
        }
        base_buf_free(&png);
        p = at + strlen(mark);
        free(r.pngs[f]), free(r.alts[f]);
    }
    base_buf_puts(&out, p);
    free(r.pngs), free(r.alts);
    char *hp = base_path_join(dir, "report.html");
    base_status s = base_write_file_atomic(hp, out.data, out.len);
    free(hp);
    base_buf_free(&out);
    base_buf_free(&r.html);
    base_buf_free(&r.script);
    for (int i = 0; i < n; i++) cJSON_Delete(lines[i]);
    for (int i = 0; i < ns; i++) cJSON_Delete(samp[i]);
    free(lines), free(samp);
    return s;
}
