/*
 * The run report: RUN/report.html with PNG plots drawn by gnuplot from
 * metrics.jsonl (one set per training stage: rewards per function, length,
 * KL, entropy, clip fractions, loss and gradient norm) and the eval results
 * of summary.json (accuracy of every eval stage, in run order). gnuplot
 * runs as a child process on a script file; without it the page says so
 * and the data files remain.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "run_internal.h"

typedef struct {
    const char *file;     /* png base name */
    const char *title;
    const char *prefixes; /* keys plotted: "|"-separated; "p*" = every key starting with p */
} plot_spec;

static const plot_spec plots[] = {
    {"rewards", "reward (total and per function)", "reward|rewards/*"},
    {"length", "completion length (tokens)", "completion_length|completions/max_length"},
    {"kl", "KL to the reference", "kl"},
    {"entropy", "entropy", "entropy"},
    {"clip", "clip fractions", "clip_ratio/low|clip_ratio/high"},
    {"loss", "loss", "loss"},
    {"grad_norm", "gradient norm", "grad_norm"},
    {"zero_std", "fraction of groups with zero reward std", "frac_reward_zero_std"},
    {"throughput", "generated tokens per second", "tokens_per_s"},
};

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

static int have_gnuplot(void) {
    return system("command -v gnuplot >/dev/null 2>&1") == 0;
}

/* Run gnuplot on a script; 0 on success. */
static int run_gnuplot(const char *script) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        /* gnuplot's warnings go to plots/gnuplot.log, not the terminal */
        size_t n = strlen(script);
        char *log = base_xmalloc(n + 16);
        memcpy(log, script, n + 1);
        char *slash = strrchr(log, '/');
        strcpy(slash ? slash + 1 : log, "gnuplot.log");
        FILE *f = freopen(log, "a", stderr);
        (void)f;
        execlp("gnuplot", "gnuplot", script, (char *)NULL);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) < 0) return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* One plot: a data file with the step and each matching key, then a
 * gnuplot script. Returns 1 when something was plotted. */
static int plot_stage(const char *dir, const char *stage, cJSON **lines, int n, const plot_spec *ps, int gp,
                      base_buf *html) {
    /* columns: matching numeric keys seen in this stage's lines */
    const char *cols[64];
    int nc = 0;
    for (int i = 0; i < n; i++)
        for (const cJSON *e = lines[i]->child; e; e = e->next) {
            if (!cJSON_IsNumber(e) || !key_matches(e->string, ps->prefixes)) continue;
            int seen = 0;
            for (int k = 0; k < nc; k++) seen |= !strcmp(cols[k], e->string);
            if (!seen && nc < 64) cols[nc++] = e->string;
        }
    if (!nc) return 0;
    char base[256];
    snprintf(base, sizeof base, "plots/%s_%s", stage, ps->file);
    for (char *p = base + 6; *p; p++)
        if (*p == '/' || *p == ' ') *p = '_';
    base_buf dat = {0};
    base_buf_puts(&dat, "# step");
    for (int k = 0; k < nc; k++) base_buf_printf(&dat, "\t%s", cols[k]);
    base_buf_puts(&dat, "\n");
    for (int i = 0; i < n; i++) {
        base_buf_printf(&dat, "%g", base_json_num(lines[i], "step", i + 1, NULL));
        for (int k = 0; k < nc; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(lines[i], cols[k]);
            if (cJSON_IsNumber(v) && isfinite(v->valuedouble)) base_buf_printf(&dat, "\t%.9g", v->valuedouble);
            else base_buf_puts(&dat, "\tNaN");
        }
        base_buf_puts(&dat, "\n");
    }
    char rel[300];
    snprintf(rel, sizeof rel, "%s.dat", base);
    char *datp = base_path_join(dir, rel);
    base_write_file_atomic(datp, dat.data, dat.len);
    base_buf_free(&dat);
    int ok = 0;
    if (gp) {
        base_buf sc = {0};
        base_buf_printf(&sc, "set terminal pngcairo size 720,400 noenhanced\nset output '%s/%s.png'\n", dir, base);
        base_buf_printf(&sc, "set title '%s: %s'\nset xlabel 'step'\nset grid\nset key outside right\n"
                             "set datafile missing 'NaN'\n",
                        stage, ps->title);
        base_buf_puts(&sc, "plot ");
        for (int k = 0; k < nc; k++)
            base_buf_printf(&sc, "%s'%s' using 1:%d with linespoints title '%s'", k ? ", " : "", datp, k + 2, cols[k]);
        base_buf_puts(&sc, "\n");
        char srel[300];
        snprintf(srel, sizeof srel, "%s.gp", base);
        char *sp = base_path_join(dir, srel);
        base_write_file_atomic(sp, sc.data, sc.len);
        ok = run_gnuplot(sp) == 0;
        free(sp);
        base_buf_free(&sc);
    }
    if (ok) {
        base_buf_printf(html, "<figure><img src=\"%s.png\" alt=\"", base);
        html_escape(html, ps->title);
        base_buf_puts(html, "\"></figure>\n");
    } else {
        base_buf_printf(html, "<p>%s: data in <a href=\"%s.dat\">%s.dat</a></p>\n", ps->title, base, base);
    }
    free(datp);
    return 1;
}

base_status run_report_write(const char *dir) {
    char *mp = base_path_join(dir, "metrics.jsonl");
    base_jsonl *r;
    base_status s = base_jsonl_open(mp, &r);
    free(mp);
    if (s) return s;
    cJSON **lines = NULL;
    int n = 0, cap = 0;
    cJSON *v;
    base_status rs;
    while ((rs = base_jsonl_next(r, &v)) != BASE_ERR_EOF) {
        if (rs) continue; /* a damaged line does not stop the report */
        if (n == cap) lines = base_xrealloc(lines, (size_t)(cap = cap ? 2 * cap : 256) * sizeof *lines);
        lines[n++] = v;
    }
    base_jsonl_close(r);
    char *pd = base_path_join(dir, "plots");
    base_mkdir_p(pd);
    free(pd);
    int gp = have_gnuplot();
    base_buf html = {0};
    base_buf_puts(&html, "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>grpo run report</title>\n"
                         "<style>body{font-family:sans-serif;max-width:1500px;margin:2em auto}"
                         "figure{display:inline-block;margin:4px}table{border-collapse:collapse}"
                         "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style></head><body>\n");
    base_buf_puts(&html, "<h1>grpo run report</h1>\n<p>Run directory: <code>");
    html_escape(&html, dir);
    base_buf_puts(&html, "</code>; configuration: <a href=\"config.resolved.lua\">config.resolved.lua</a>; "
                         "metrics: <a href=\"metrics.jsonl\">metrics.jsonl</a>; samples: "
                         "<a href=\"samples.jsonl\">samples.jsonl</a></p>\n");
    if (!gp) base_buf_puts(&html, "<p><b>gnuplot was not found: plots are missing (install gnuplot-nox).</b></p>\n");
    /* eval results */
    char *sp = base_path_join(dir, "summary.json");
    cJSON *sum = NULL;
    if (base_json_parse_file(sp, &sum) == BASE_OK && cJSON_IsObject(sum) && sum->child) {
        base_buf_puts(&html, "<h2>Results</h2>\n<table><tr><th>stage</th><th>metric</th><th>value</th></tr>\n");
        base_buf acc = {0};
        int na = 0;
        for (const cJSON *st = sum->child; st; st = st->next)
            for (const cJSON *e = st->child; e; e = e->next)
                if (cJSON_IsNumber(e)) {
                    base_buf_puts(&html, "<tr><td style=\"text-align:left\">");
                    html_escape(&html, st->string);
                    base_buf_puts(&html, "</td><td style=\"text-align:left\">");
                    html_escape(&html, e->string);
                    base_buf_printf(&html, "</td><td>%.4g</td></tr>\n", e->valuedouble);
                    if (!strcmp(e->string, "accuracy")) {
                        base_buf_printf(&acc, "%d\t%.9g\t\"%s\"\n", na++, e->valuedouble, st->string);
                    }
                }
        base_buf_puts(&html, "</table>\n");
        if (na && gp) {
            char *dp = base_path_join(dir, "plots/accuracy.dat"), *gpp = base_path_join(dir, "plots/accuracy.gp");
            base_write_file_atomic(dp, acc.data, acc.len);
            base_buf sc = {0};
            base_buf_printf(&sc, "set terminal pngcairo size 720,400 noenhanced\nset output '%s/plots/accuracy.png'\n"
                                 "set title 'held-out accuracy (pass@1) by eval stage'\nset yrange [0:1]\nset grid\n"
                                 "set style fill solid 0.6\nset boxwidth 0.6\nunset key\n"
                                 "plot '%s' using 1:2:xtic(3) with boxes, '' using 1:2:(sprintf('%%.3f',$2)) with labels offset 0,1\n",
                            dir, dp);
            base_write_file_atomic(gpp, sc.data, sc.len);
            if (run_gnuplot(gpp) == 0)
                base_buf_puts(&html, "<figure><img src=\"plots/accuracy.png\" alt=\"accuracy\"></figure>\n");
            base_buf_free(&sc);
            free(dp), free(gpp);
        }
        base_buf_free(&acc);
    }
    cJSON_Delete(sum);
    free(sp);
    /* training stages, in order of appearance */
    const char *stages[64];
    int ns = 0;
    for (int i = 0; i < n; i++) {
        const char *st = base_json_str(lines[i], "stage", NULL);
        if (!st || !cJSON_GetObjectItemCaseSensitive(lines[i], "loss")) continue;
        int seen = 0;
        for (int k = 0; k < ns; k++) seen |= !strcmp(stages[k], st);
        if (!seen && ns < 64) stages[ns++] = st;
    }
    for (int k = 0; k < ns; k++) {
        cJSON **sel = base_xcalloc((size_t)n, sizeof *sel);
        int m = 0;
        for (int i = 0; i < n; i++)
            if (!strcmp(base_json_str(lines[i], "stage", ""), stages[k]) && cJSON_GetObjectItemCaseSensitive(lines[i], "loss"))
                sel[m++] = lines[i];
        base_buf_puts(&html, "<h2>Stage ");
        html_escape(&html, stages[k]);
        base_buf_printf(&html, " (%d steps)</h2>\n", m);
        for (size_t p = 0; p < sizeof plots / sizeof plots[0]; p++) plot_stage(dir, stages[k], sel, m, &plots[p], gp, &html);
        free(sel);
    }
    base_buf_puts(&html, "</body></html>\n");
    char *hp = base_path_join(dir, "report.html");
    s = base_write_file_atomic(hp, html.data, html.len);
    free(hp);
    base_buf_free(&html);
    for (int i = 0; i < n; i++) cJSON_Delete(lines[i]);
    free(lines);
    return s;
}
