/*
 * Answer extraction with Math-Verify's targets and ordering (parser.py):
 *
 *   LaTeX   ($$..$$, \[..\], $..$, \(..\), " [..] ", bare \frac{a}{b}, each
 *           optionally followed by a percent word, up to 6 joined by
 *           ","/"and"/"or") after "final answer is ... I hope" (priority
 *           0), "final answer ... is" (50), "answer:" (100), "answer"
 *           (200), anywhere (300); \boxed environments at boxed_priority.
 *   Expr    numbers with thousands separators / decimal commas / percent,
 *           and digit expressions with an operator, behind the same
 *           anchors (0, 50, 100, 200) or anywhere (300).
 *
 * Patterns of one priority are tried together; their matches right-most
 * first (end descending, then start ascending); the first match that parses
 * wins, else the next priority ("any_match"). The first non-empty match text
 * is kept as the string fallback that verify() compares as text.
 *
 * Only the last MQ_EXTRACT_WINDOW bytes (64 KiB) of a long text are
 * searched or, without extraction, parsed: the answer sits at the end and
 * the regex work stays bounded.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "reward/rules/rules_int.h"

#define MQ_EXTRACT_WINDOW ((size_t)64 << 10)
#define MQ_MAX_MATCHES 2000

enum { N_ENV_KINDS = 7 };
static const char *const k_env_kinds[N_ENV_KINDS] = {
    "latexDisplayDollar", "latexDisplayBracket", "latexInlineDollar", "latexInlineParenthesis",
    "latexInlineBracket", "latexFraction", "latexBoxed",
};
static const char *const k_prefixes[6] = {"first_", "next1_", "next2_", "next3_", "next4_", "next5_"};

typedef struct {
    mq_re *re;
    int prio;      /* fixed priority, or -1 for "the boxed priority" */
    int is_latex;
    int env_group[6][N_ENV_KINDS]; /* group index per prefix/kind, -1 */
    int pct_group[6];
    int num_group[7]; /* integer1..3, decimal1..3, percent */
    int expr_group;
} pattern;

static struct {
    pattern latex[7];
    int nlatex;
    pattern expr[6];
    int nexpr;
} X;

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void env_pattern(base_buf *b, const char *pf, int boxed)
{
    const char *dd = "(?:[^$]|\\$(?!\\$))";
    const char *db = "(?:[^\\\\]|\\\\(?!\\]))";
    const char *id = "(?:\\\\[$]|[^\\n$])";
    const char *ip = "(?:[^\\\\\\n]|\\\\(?!\\)))";
    const char *ib = "[^\\n\\]\\[]";
    const char *c[5] = {dd, db, id, ip, ib};
    char body[5][512];
    for (int i = 0; i < 5; i++) {
        if (boxed) snprintf(body[i], sizeof body[i], "%s*?\\\\boxed\\{%s+?\\}%s*?", c[i], c[i], c[i]);
        else snprintf(body[i], sizeof body[i], "%s+?", c[i]);
    }
    base_buf_puts(b, "(?:(?:");
    base_buf_printf(b, "(?<!\\\\)\\$\\$(?P<%slatexDisplayDollar>%s)(?<!\\\\)\\$\\$", pf, body[0]);
    base_buf_printf(b, "|(?<!\\\\)\\\\\\[(?P<%slatexDisplayBracket>%s)(?<!\\\\)\\\\\\]", pf, body[1]);
    base_buf_printf(b, "|(?<!\\\\|\\d)\\$(?P<%slatexInlineDollar>%s)(?<!\\\\)\\$", pf, body[2]);
    base_buf_printf(b, "|(?<!\\\\)\\\\\\((?P<%slatexInlineParenthesis>%s)(?<!\\\\)\\\\\\)", pf, body[3]);
    base_buf_printf(b, "|\\s\\[(?P<%slatexInlineBracket>%s)\\]\\s", pf, body[4]);
    if (!boxed) {
        const char *sn = "-?\\d+(?:[.,]\\d+)?";
        base_buf_printf(b, "|(?P<%slatexFraction>-?\\\\frac\\{%s\\}\\{%s\\})", pf, sn, sn);
    }
    base_buf_printf(b, ")\\s*(?P<%spercent>(?:\\\\?%%|[Pp]ercent|[Pp]ercentage|[Pp]ct))?)", pf);
}

static void latex_envs(base_buf *b, int boxed)
{
    env_pattern(b, "first_", boxed);
    for (int i = 1; i <= 5; i++) {
        base_buf_puts(b, boxed ? "\\s*(?:\\s*(?:,?and|,?or|,)\\s*" : "(?:\\s*(?:,?and|,?or|,)\\s*");
        env_pattern(b, k_prefixes[i], boxed);
        base_buf_puts(b, ")?");
    }
}

static void index_groups(pattern *pt)
{
    for (int p = 0; p < 6; p++) {
        char name[64];
        for (int k = 0; k < N_ENV_KINDS; k++) {
            snprintf(name, sizeof name, "%s%s", k_prefixes[p], k_env_kinds[k]);
            pt->env_group[p][k] = reward_mq_re_group_index(pt->re, name);
        }
        snprintf(name, sizeof name, "%spercent", k_prefixes[p]);
        pt->pct_group[p] = pt->is_latex ? reward_mq_re_group_index(pt->re, name) : -1;
    }
    static const char *const nums[7] = {"integer1", "integer2", "integer3", "decimal1", "decimal2", "decimal3", "percent"};
    for (int k = 0; k < 7; k++) pt->num_group[k] = pt->is_latex ? -1 : reward_mq_re_group_index(pt->re, nums[k]);
    pt->expr_group = pt->is_latex ? -1 : reward_mq_re_group_index(pt->re, "expr");
}

static void add_pattern(pattern *arr, int *n, const char *pat, int prio, int is_latex)
{
    pattern *pt = &arr[(*n)++];
    pt->re = reward_mq_re_compile(pat, is_latex ? PCRE2_DOTALL : 0);
    pt->prio = prio;
    pt->is_latex = is_latex;
    index_groups(pt);
}

static void compile_all(void)
{
    base_buf L = {0}, t = {0};
    latex_envs(&L, 0);
    const char *l = L.data;
    base_buf_printf(&t, "(?i:final answer is):?\\s*%s\\.?\\s?I hope", l);
    add_pattern(X.latex, &X.nlatex, t.data, 0, 1);
    base_buf_reset(&t);
    base_buf_printf(&t, "(?i:final answer.{0,100}?)\\s+is:?\\s*%s", l);
    add_pattern(X.latex, &X.nlatex, t.data, 50, 1);
    base_buf_reset(&t);
    base_buf_printf(&t, "(?i:answer):.{0,50}?%s", l);
    add_pattern(X.latex, &X.nlatex, t.data, 100, 1);
    base_buf_reset(&t);
    base_buf_printf(&t, "(?i:answer).{0,50}?%s", l);
    add_pattern(X.latex, &X.nlatex, t.data, 200, 1);
    add_pattern(X.latex, &X.nlatex, l, 300, 1);
    base_buf_reset(&t);
    latex_envs(&t, 1);
    add_pattern(X.latex, &X.nlatex, t.data, -1, 1);
    add_pattern(X.latex, &X.nlatex, "(?P<first_latexBoxed>\\\\boxed\\{.+\\})", -1, 1);
    base_buf_free(&L);

    /* expressions */
    const char *number_re =
        "(?<!\\d)(?:(?P<integer1>-?[1-9]\\d{0,2}(?:[ ,]\\d{3})+)(?P<decimal1>\\.\\d+)?|"
        "(?P<integer2>-?\\d+)(?P<decimal2>[.,]\\d+)|(?P<decimal3>\\.\\d+)|(?P<integer3>-?\\d+))"
        "(?P<percent>\\s*(?:%|[Pp]ercent|\\s*[Pp]ercentage|\\s*[Pp]ct))?";
    const char *ops = "+\\-*×/^()÷";
    char all[64], expr_re[256], ewa[512], nwa[1024], eon[1600];
    snprintf(all, sizeof all, "[\\d.\\s%s]", ops);
    snprintf(expr_re, sizeof expr_re, "(?P<expr>-?\\(?-?\\d%s*[%s]%s+\\)?)", all, ops, all);
    const char *currency = "[$€£¥₹₽₪₩₫฿₡₢₣₤₥₦₧₨₭₮₯₰₱₲₳₴₵₶₷₸₺₻₼₾₿]";
    const char *prefix = "(?:^|\\s|=)(?:\\*\\*)?";
    const char *suffix = "(?:\\*\\*)?(?:\\.|,|:|\\s|\\)|\\$|$)";
    snprintf(ewa, sizeof ewa, "(?:%s%s%s)", prefix, expr_re, suffix);
    snprintf(nwa, sizeof nwa, "(?:%s%s?%s)", prefix, currency, number_re);
    snprintf(eon, sizeof eon, "(?:%s|%s)", ewa, nwa);
    base_buf_reset(&t);
    base_buf_printf(&t, "(?i:final answer is):?\\s*%s\\.?\\s?I hope", eon);
    add_pattern(X.expr, &X.nexpr, t.data, 0, 0);
    base_buf_reset(&t);
    base_buf_printf(&t, "(?i:final answer.{0,100}?)\\s+is:?%s", eon);
    add_pattern(X.expr, &X.nexpr, t.data, 50, 0);
    base_buf_reset(&t);
    base_buf_printf(&t, "(?i:answer):(?:.{0,100}=\\s*|.{0,50}?)%s(?!\\s*=)", eon);
    add_pattern(X.expr, &X.nexpr, t.data, 100, 0);
    base_buf_reset(&t);
    base_buf_printf(&t, "(?i:answer)(?:.{0,100}=\\s*|.{0,50}?)%s(?!\\s*=)", eon);
    add_pattern(X.expr, &X.nexpr, t.data, 200, 0);
    add_pattern(X.expr, &X.nexpr, ewa, 300, 0);
    add_pattern(X.expr, &X.nexpr, nwa, 300, 0);
    base_buf_free(&t);
}

/* ------------------------------------------------------------------------ */
/* Turning one match into an answer                                         */

typedef struct {
    const pattern *pt;
    size_t start, end;
    size_t *ov; /* 2 * (groups + 1) */
    int order;
} match;

static int set(const size_t *ov, int g) { return g >= 0 && ov[2 * g] != SIZE_MAX && ov[2 * g + 1] > ov[2 * g]; }

static mq_norm_cfg norm_cfg(const reward_math_opts *o, mq_box_mode boxed)
{
    mq_norm_cfg c = {.boxed = boxed, .basic_latex = 1, .units = o->units,
                     .malformed_operators = o->malformed_operators, .nits = o->nits,
                     .equations = o->equations};
    return c;
}

/* normalise + parse one LaTeX string (retry without unit stripping) */
static mq_node *parse_latex(mq_arena *a, const char *s, size_t n, const reward_math_opts *o,
                            mq_box_mode boxed, const char **norm)
{
    mq_norm_cfg nc = norm_cfg(o, boxed);
    char *pre = NULL;
    char *t = reward_mq_normalize(a, s, n, &nc, &pre);
    *norm = t;
    if (!t) return NULL;
    mq_parse_cfg pc = {.ordered_lists = o->ordered_lists};
    mq_node *r = reward_mq_parse_with_last_eq(a, t, strlen(t), &pc);
    if (!r && pre && !a->failed) r = reward_mq_parse_with_last_eq(a, pre, strlen(pre), &pc);
    return r;
}

static mq_node *pct(mq_arena *a, mq_node *x) { return x ? reward_mq_un(a, MQ_PCT, x) : NULL; }

static void extract_latex(mq_arena *a, const char *s, const match *m, const reward_math_opts *o, mq_answer *out)
{
    mq_node *nodes[6];
    const char *strs[6];
    int k = 0, all = 1;
    for (int p = 0; p < 6; p++) {
        int g = -1, kind = -1;
        for (int e = 0; e < N_ENV_KINDS; e++)
            if (set(m->ov, m->pt->env_group[p][e])) {
                g = m->pt->env_group[p][e];
                kind = e;
                break;
            }
        if (g < 0) continue;
        mq_box_mode bm = kind == 6 ? MQ_BOX_LAST : MQ_BOX_ALL;
        const char *norm;
        mq_node *x = parse_latex(a, s + m->ov[2 * g], m->ov[2 * g + 1] - m->ov[2 * g], o, bm, &norm);
        if (x && set(m->ov, m->pt->pct_group[p])) x = pct(a, x);
        nodes[k] = x;
        strs[k] = norm ? norm : "";
        if (!x) all = 0;
        k++;
    }
    out->node = NULL;
    out->str = NULL;
    out->norm = NULL;
    if (k == 0) return;
    if (k > 1 && all) {
        /* "$1$, $2$ and $3$" -> {1, 2, 3} */
        int tot = 0;
        for (int i = 0; i < k; i++) tot += nodes[i]->kind == MQ_SET ? nodes[i]->nk : 1;
        mq_node *setn = reward_mq_new(a, MQ_SET, tot);
        if (!setn) return;
        int j = 0;
        for (int i = 0; i < k; i++) {
            if (nodes[i]->kind == MQ_SET)
                for (int q = 0; q < nodes[i]->nk; q++) setn->kids[j++] = nodes[i]->kids[q];
            else setn->kids[j++] = nodes[i];
        }
        base_buf b = {0};
        for (int i = 0; i < k; i++) base_buf_printf(&b, "%s%s", i ? " and " : "", strs[i]);
        out->node = setn;
        out->str = reward_mq_strndup(a, b.data, b.len);
        out->norm = out->str;
        base_buf_free(&b);
        return;
    }
    out->node = nodes[0];
    out->str = strs[0];
    out->norm = strs[0];
}

static void extract_expr(mq_arena *a, const char *s, const match *m, const reward_math_opts *o, mq_answer *out)
{
    (void)o;
    const pattern *pt = m->pt;
    const size_t *ov = m->ov;
    int gi = -1, gd = -1;
    for (int k = 0; k < 3; k++)
        if (gi < 0 && set(ov, pt->num_group[k])) gi = pt->num_group[k];
    for (int k = 3; k < 6; k++)
        if (gd < 0 && set(ov, pt->num_group[k])) gd = pt->num_group[k];
    out->node = NULL;
    out->str = NULL;
    out->norm = NULL;
    if (gi >= 0 || gd >= 0) {
        /* digits without separators and leading zeros, decimal comma -> . */
        base_buf ip = {0}, fp = {0};
        int neg = 0;
        if (gi >= 0)
            for (size_t i = ov[2 * gi]; i < ov[2 * gi + 1]; i++) {
                char ch = s[i];
                if (ch == '-') neg = 1;
                else if (ch >= '0' && ch <= '9') base_buf_append(&ip, &ch, 1);
            }
        if (gd >= 0)
            for (size_t i = ov[2 * gd] + 1; i < ov[2 * gd + 1]; i++) base_buf_append(&fp, s + i, 1);
        size_t lz = 0;
        while (lz < ip.len && ip.data[lz] == '0') lz++;
        const char *ipd = ip.len > lz ? ip.data + lz : "0";
        size_t ipn = ip.len > lz ? ip.len - lz : 1;
        mq_node *num = reward_mq_new(a, MQ_NUM, 0);
        base_buf txt = {0};
        base_buf_printf(&txt, "%s%.*s%s%.*s", neg ? "-" : "", (int)ipn, ipd, gd >= 0 ? "." : "",
                        (int)fp.len, fp.data ? fp.data : "");
        if (num && !reward_mq_rat_from_decimal(a, &num->q, ipd, ipn, fp.data ? fp.data : "", fp.len, 0)) {
            if (gd >= 0) num->flags |= MQ_F_FLOAT;
            mq_node *x = neg ? reward_mq_un(a, MQ_NEG, num) : num;
            if (x && set(ov, pt->num_group[6])) x = pct(a, x);
            out->node = x;
        }
        out->str = reward_mq_strndup(a, txt.data, txt.len);
        out->norm = out->str;
        base_buf_free(&ip);
        base_buf_free(&fp);
        base_buf_free(&txt);
        return;
    }
    if (set(ov, pt->expr_group)) {
        size_t st = ov[2 * pt->expr_group], en = ov[2 * pt->expr_group + 1];
        char *e = reward_mq_strndup(a, s + st, en - st);
        if (!e) return;
        out->str = e;
        out->norm = e;
        mq_parse_cfg pc = {.plain_expr = 1};
        out->node = reward_mq_parse(a, e, en - st, &pc);
    }
}

/* ------------------------------------------------------------------------ */
/* Driver                                                                   */

static int match_cmp(const void *x, const void *y)
{
    const match *a = x, *b = y;
    if (a->end != b->end) return a->end > b->end ? -1 : 1;
    if (a->start != b->start) return a->start < b->start ? -1 : 1;
    return a->order - b->order;
}

static void plain(mq_arena *a, const char *s, size_t n, const reward_math_opts *o, mq_answer *out)
{
    const char *norm;
    out->node = parse_latex(a, s, n, o, MQ_BOX_ALL, &norm);
    out->str = norm;
    out->norm = norm;
}

void reward_mq_extract(mq_arena *a, const char *s, size_t n, const reward_math_opts *o, mq_answer *out)
{
    memset(out, 0, sizeof *out);
    if (n > MQ_EXTRACT_WINDOW) {
        size_t cut = n - MQ_EXTRACT_WINDOW;
        while (cut < n && ((unsigned char)s[cut] & 0xC0) == 0x80) cut++;
        s += cut;
        n -= cut;
    }
    if (!o->extract_latex && !o->extract_expr) {
        plain(a, s, n, o, out);
        return;
    }
    pthread_once(&g_once, compile_all);
    const pattern *pats[16];
    int prios[16], np = 0;
    if (o->extract_latex)
        for (int i = 0; i < X.nlatex; i++) {
            int pr = X.latex[i].prio >= 0 ? X.latex[i].prio : o->boxed_priority;
            if (pr < 0) continue;
            pats[np] = &X.latex[i];
            prios[np++] = pr;
        }
    if (o->extract_expr)
        for (int i = 0; i < X.nexpr; i++) {
            pats[np] = &X.expr[i];
            prios[np++] = X.expr[i].prio;
        }
    /* distinct priorities, ascending */
    int levels[16], nl = 0;
    for (int i = 0; i < np; i++) {
        int seen = 0;
        for (int j = 0; j < nl; j++) seen |= levels[j] == prios[i];
        if (!seen) levels[nl++] = prios[i];
    }
    for (int i = 1; i < nl; i++)
        for (int j = i; j > 0 && levels[j] < levels[j - 1]; j--) {
            int t = levels[j];
            levels[j] = levels[j - 1];
            levels[j - 1] = t;
        }
    int have_fallback = 0;
    for (int L = 0; L < nl && !out->node; L++) {
        match *ms = NULL;
        int nm = 0, cap = 0, order = 0;
        for (int i = 0; i < np; i++) {
            if (prios[i] != levels[L]) continue;
            int ng = reward_mq_re_group_count(pats[i]->re);
            size_t pos = 0;
            while (pos <= n && nm < MQ_MAX_MATCHES) {
                size_t *ov = reward_mq_alloc(a, sizeof(size_t) * 2 * (size_t)(ng + 1));
                if (!ov) break;
                if (reward_mq_re_find(pats[i]->re, s, n, pos, ov, 2 * (ng + 1)) != 1) break;
                if (nm == cap) {
                    cap = cap ? 2 * cap : 16;
                    match *nmv = reward_mq_alloc(a, sizeof(match) * (size_t)cap);
                    if (!nmv) break;
                    if (nm) memcpy(nmv, ms, sizeof(match) * (size_t)nm);
                    ms = nmv;
                }
                ms[nm++] = (match){.pt = pats[i], .start = ov[0], .end = ov[1], .ov = ov, .order = order++};
                if (ov[1] > ov[0]) {
                    pos = ov[1];
                } else {
                    pos = ov[1] + 1;
                    while (pos < n && ((unsigned char)s[pos] & 0xC0) == 0x80) pos++;
                }
            }
        }
        if (nm > 1) qsort(ms, (size_t)nm, sizeof *ms, match_cmp);
        for (int k = 0; k < nm; k++) {
            mq_answer r;
            if (ms[k].pt->is_latex) extract_latex(a, s, &ms[k], o, &r);
            else extract_expr(a, s, &ms[k], o, &r);
            if (a->failed) return;
            if (r.str && *r.str && !have_fallback) {
                out->str = r.str;
                have_fallback = 1;
            }
            if (r.node) {
                out->node = r.node;
                out->norm = r.norm;
                break;
            }
        }
    }
}
