/*
 * LaTeX answer normalisation, step for step the normalize_latex of
 * latex2sympy2_extended (Math-Verify's parser), so that our extraction sees
 * the same strings Math-Verify's parser sees:
 *   boxed      unwrap \boxed{} (all boxes, or the last connected run)
 *   basic      \left/\right, \dfrac/\tfrac/\cfrac, \!, $, quotes,
 *              \mathrm/\textbf -> \text, "and"/"or" -> ',', percent words,
 *              infinity, newlines, doubled backslashes before commands
 *   equations  keep the part after the last '=' (opt-in)
 *   units      drop a trailing \text{..}/\mbox{..} and unit words
 *   nits       ".5" -> "0.5", "0.5" -> \frac{1}{2}
 *   malformed  \frac12, \sqrt3, sqrt(x), ^(x), a/b -> \frac{a}{b}
 * The regexes are the published ones re-expressed for PCRE2; the hendrycks
 * helpers (_fix_sqrt, _fix_fracs, _fix_a_slash_b) are re-implemented.
 * All strings live in the call's arena.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <string.h>

#include "base/base.h"
#include "reward/rules/rules_int.h"

/* Unit words (Math-Verify's list, in its order: alternation order decides
 * which word a regex engine tries first). */
static const char *const k_units[] = {
    "integerpoint", "feet", "sue", "digit", "pound", "meal", "edge", "student",
    "children ticket", "multiple", "east", "degree", "mph", "kmph", "ft", "m square",
    " m east", "sq m", "deg", "mile", "q \\.", "monkey", "prime", "ratio", "profit of rs",
    "rd", "o", "gm", "p \\. m", "lb", "tile", "per", "dm", "lt", "gain", "ab", "way", "west",
    "a \\.", "b \\.", "c \\.", "d \\.", "e \\.", "f \\.", "g \\.", "h \\.", "t", "h",
    "no change", "men", "soldier", "pie", "bc", "excess", "st", "inches", "noon", "cent",
    "by", "gal", "kmh", "c", "acre", "rise", "a \\. m", "th", "π r 2", "sq", "mark", "l",
    "toy", "coin", "sq \\. m", "gallon", "° f", "profit", "minw", "yr", "women", "am", "pm",
    "hr", "cu cm", "square", "v â € ™", "are", "rupee", "rounds", "cubic", "cc", "mtr", "s",
    "ohm", "number", "kmph", "day", "hour", "minute", "min", "second", "man", "woman", "sec",
    "cube", "mt", "sq inch", "mp", "∏ cm ³", "hectare", "more", "sec", "unit", "cu \\. m",
    "cm 2", "rs \\.", "rs", "kg", "g", "month", "km", "m", "cm", "mm", "apple", "liter",
    "loss", "yard", "pure", "year", "increase", "decrease", "d", "less", "Surface", "litre",
    "pi sq m", "s \\.", "metre", "meter", "inch",
};

/* basic_latex replacements: one alternation, first branch wins per place */
static const struct {
    const char *pat, *rep;
} k_repl[] = {
    {"\\\\math(?:rm|it|bf)", "\\text"},
    {"\\\\text(?:normal|bf|it|rm)", "\\text"},
    {"\\\\(?:d|t|c)frac", "\\frac"},
    {"\\s\\.", " 0."},
    {"\\{\\.", "{0."},
    {"~=", "\\approx"},
    {"\\s*\\{\\s*,\\s*\\}", ","},
    {"(?<![a-zA-Z]),?\\s*(?:and|or)(?![a-zA-Z])", ","},
    {",?\\s*\\\\text\\{\\s*(?:and|or)\\s*\\}", ","},
    {"(?<!\\\\)\\\\\\s", " "},
    {"infinity", "\\infty"},
    {",?\\\\ldots", " "},
    {"\\s*\\bpercentage\\b", "\\%"},
    {"\\\\text\\{percentage\\}", "%"},
    {"\\s*\\bpercent\\b", "\\%"},
    {"\\\\text\\{percent\\}", "%"},
    {"\\s*\\bpct\\b", "\\%"},
    {"\\\\text\\{pct\\}", "%"},
    {"(?<!\\\\)inf(?!inity)", "\\infty"},
    {" sqrt", "\\sqrt"},
};
#define N_REPL ((int)(sizeof k_repl / sizeof k_repl[0]))

/* malformed_operators: (pattern, template) applied in order */
static const struct {
    const char *pat, *tmpl;
} k_malformed[] = {
    {"\\^\\s?\\((.*?)\\)", "^{\\1}"},
    {"sqrt\\s?\\((.*?)\\)", "\\\\sqrt{\\1}"},
    {"\\\\frac\\s?(\\d)\\s?(\\d+)", "\\\\frac{\\1}{\\2}"},
    {"\\\\log_\\s?(\\d)\\s?(\\d+)", "\\\\log_{\\1}{\\2}"},
    {"\\\\frac\\s?\\{(.*?)\\}\\s?(\\d)", "\\\\frac{\\1}{\\2}"},
    {"\\\\frac\\s?(\\d)\\s?\\{(.*?)\\}", "\\\\frac{\\1}{\\2}"},
    {"\\\\sqrt\\s?(\\d)", "\\\\sqrt{\\1}"},
};
#define N_MALFORMED ((int)(sizeof k_malformed / sizeof k_malformed[0]))

static struct {
    mq_re *left, *right, *perm, *remove, *repl, *slash_fix, *unit_sup, *units;
    mq_re *malformed[N_MALFORMED];
    int repl_group[N_REPL];
} R;

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void compile_all(void)
{
    R.left = reward_mq_re_compile(
        "\\\\m?left(\\\\\\{|\\{|\\\\\\||\\||\\[|\\(|\\\\rbracl|\\\\lgroup|\\\\lbrace|\\\\lbrack|"
        "\\\\vert|\\\\lvert|\\\\lceil|\\\\lfloor|\\\\vert|\\\\lvert|\\\\langle|\\\\llcorner|"
        "\\\\ulcorner)",
        0);
    R.right = reward_mq_re_compile(
        "\\\\m?right(\\\\\\}|\\}|\\\\\\||\\||\\]|\\)|\\\\rbrack|\\\\rgroup|\\\\rbrace|\\\\rbrack|"
        "\\\\vert|\\\\rvert|\\\\rceil|\\\\rfloor|\\\\vert|\\\\rvert|\\\\rangle|\\\\lrcorner|"
        "\\\\urcorner)",
        0);
    R.perm = reward_mq_re_compile("\\(([a-zA-Z0-9+\\-*/\\\\ ]+?)\\)_\\{([a-zA-Z0-9+\\-*/\\\\ ]+?)\\}", 0);
    R.remove = reward_mq_re_compile("\\\\mathrm\\{th\\}|\\\\!\\s*|\\\\text\\s*\\{\\s*\\}|\\\\\\$|\\$|"
                             "(?<!\\\\)[\"']|\\\\displaystyle",
                             0);
    base_buf b = {0};
    for (int i = 0; i < N_REPL; i++) base_buf_printf(&b, "%s(%s)", i ? "|" : "", k_repl[i].pat);
    R.repl = reward_mq_re_compile(b.data, 0);
    /* group numbers of the branches: the patterns have no capture groups */
    for (int i = 0; i < N_REPL; i++) R.repl_group[i] = i + 1;
    base_buf_free(&b);
    R.slash_fix = reward_mq_re_compile("\\\\\\\\(?=[a-zA-Z])", 0);
    R.unit_sup = reward_mq_re_compile("(\\\\(?:text|mbox)\\{.*?\\})(\\^\\d|\\{\\^\\d\\})?$", 0);
    base_buf u = {0};
    base_buf_puts(&u, "(\\d|\\}|\\s)\\s*(?:(?:");
    for (size_t i = 0; i < sizeof k_units / sizeof k_units[0]; i++)
        base_buf_printf(&u, "%s%s", i ? "|" : "", k_units[i]);
    base_buf_puts(&u, ")(?:s|es)?)\\s*$");
    R.units = reward_mq_re_compile(u.data, 0);
    base_buf_free(&u);
    for (int i = 0; i < N_MALFORMED; i++) R.malformed[i] = reward_mq_re_compile(k_malformed[i].pat, 0);
}

/* Replace every occurrence of `from` by `to`. */
static char *replace_all(mq_arena *a, const char *s, const char *from, const char *to)
{
    if (!s || !strstr(s, from)) return (char *)s;
    size_t fl = strlen(from);
    base_buf b = {0};
    const char *p = s, *q;
    while ((q = strstr(p, from))) {
        base_buf_append(&b, p, (size_t)(q - p));
        base_buf_puts(&b, to);
        p = q + fl;
    }
    base_buf_puts(&b, p);
    char *r = reward_mq_strndup(a, b.data, b.len);
    base_buf_free(&b);
    return r;
}

static char *sub(mq_arena *a, const mq_re *re, const char *s, const char *tmpl)
{
    if (!s) return NULL;
    return reward_mq_re_sub(a, re, s, strlen(s), tmpl, NULL);
}

static char *do_replacements(mq_arena *a, const char *s)
{
    size_t n = strlen(s);
    base_buf b = {0};
    size_t ov[2 * (N_REPL + 1)];
    size_t pos = 0, last = 0;
    while (pos <= n && reward_mq_re_find(R.repl, s, n, pos, ov, 2 * (N_REPL + 1)) == 1) {
        base_buf_append(&b, s + last, ov[0] - last);
        for (int i = 0; i < N_REPL; i++) {
            int g = R.repl_group[i];
            if (ov[2 * g] != SIZE_MAX) {
                base_buf_puts(&b, k_repl[i].rep);
                break;
            }
        }
        last = ov[1];
        pos = ov[1] > ov[0] ? ov[1] : ov[1] + 1;
    }
    if (last < n) base_buf_append(&b, s + last, n - last);
    char *r = reward_mq_strndup(a, b.data ? b.data : "", b.len);
    base_buf_free(&b);
    return r;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static const char *lstrip(const char *s)
{
    while (*s && is_space(*s)) s++;
    return s;
}

/* hendrycks _fix_sqrt: "\sqrt3" -> "\sqrt{3}" */
static char *fix_sqrt(mq_arena *a, const char *s)
{
    if (!strstr(s, "\\sqrt")) return (char *)s;
    base_buf b = {0};
    const char *p = strstr(s, "\\sqrt");
    base_buf_append(&b, s, (size_t)(p - s));
    while (p) {
        const char *seg = p + 5;
        const char *nx = strstr(seg, "\\sqrt");
        size_t segn = nx ? (size_t)(nx - seg) : strlen(seg);
        const char *t = seg;
        while (t < seg + segn && is_space(*t)) t++;
        size_t tn = segn - (size_t)(t - seg);
        if (tn > 0 && *t != '{' && *t != '[') {
            /* one character (UTF-8 aware) */
            size_t cl = 1;
            while (cl < tn && ((unsigned char)t[cl] & 0xC0) == 0x80) cl++;
            base_buf_puts(&b, "\\sqrt{");
            base_buf_append(&b, t, cl);
            base_buf_puts(&b, "}");
            base_buf_append(&b, t + cl, tn - cl);
        } else {
            base_buf_puts(&b, "\\sqrt");
            base_buf_append(&b, t, tn);
        }
        p = nx;
    }
    char *r = reward_mq_strndup(a, b.data, b.len);
    base_buf_free(&b);
    return r;
}

/* hendrycks _fix_fracs: "\frac12" -> "\frac{1}{2}", "\frac1{2}" -> ... */
static char *fix_fracs(mq_arena *a, const char *s)
{
    const char *p = strstr(s, "\\frac");
    if (!p) return (char *)s;
    base_buf b = {0};
    base_buf_append(&b, s, (size_t)(p - s));
    while (p) {
        const char *seg = p + 5;
        const char *nx = strstr(seg, "\\frac");
        size_t segn = nx ? (size_t)(nx - seg) : strlen(seg);
        const char *t = seg;
        while (t < seg + segn && is_space(*t)) t++;
        size_t tn = segn - (size_t)(t - seg);
        base_buf_puts(&b, "\\frac");
        if (tn > 0 && t[0] == '{') {
            base_buf_append(&b, t, tn);
        } else if (tn < 2) {
            base_buf_free(&b);
            return (char *)s;
        } else if (t[1] != '{') {
            base_buf_printf(&b, "{%c}{%c}", t[0], t[1]);
            base_buf_append(&b, t + 2, tn - 2);
        } else {
            base_buf_printf(&b, "{%c}", t[0]);
            base_buf_append(&b, t + 1, tn - 1);
        }
        p = nx;
    }
    char *r = reward_mq_strndup(a, b.data, b.len);
    base_buf_free(&b);
    return r;
}

/* canonical integer text: -?(0|[1-9][0-9]*) */
static int canon_int(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-') i++;
    if (i >= n) return 0;
    if (s[i] == '0') return i + 1 == n && !(i == 1); /* "0" yes, "-0" no */
    for (; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    return 1;
}

/* hendrycks _fix_a_slash_b: "2/3" -> "\frac{2}{3}" (integers only) */
static char *fix_a_slash_b(mq_arena *a, const char *s)
{
    const char *sl = strchr(s, '/');
    if (!sl || strchr(sl + 1, '/')) return (char *)s;
    if (!canon_int(s, (size_t)(sl - s)) || !canon_int(sl + 1, strlen(sl + 1))) return (char *)s;
    base_buf b = {0};
    base_buf_puts(&b, "\\frac{");
    base_buf_append(&b, s, (size_t)(sl - s));
    base_buf_puts(&b, "}{");
    base_buf_puts(&b, sl + 1);
    base_buf_puts(&b, "}");
    char *r = reward_mq_strndup(a, b.data, b.len);
    base_buf_free(&b);
    return r;
}

/* "equations": the part after the last '=' not preceded by \ < ! > */
static char *last_equation_part(mq_arena *a, const char *s)
{
    if (strchr(s, ',') || strchr(s, ';')) return (char *)s;
    int parts = 1;
    const char *last = s;
    for (const char *p = s; *p; p++)
        if (*p == '=' && !(p > s && (p[-1] == '\\' || p[-1] == '<' || p[-1] == '!' || p[-1] == '>'))) {
            parts++;
            last = p + 1;
        }
    return parts > 2 ? reward_mq_strndup(a, last, strlen(last)) : (char *)s;
}

static char *strip_copy(mq_arena *a, const char *s)
{
    const char *b = lstrip(s);
    size_t n = strlen(b);
    while (n && is_space(b[n - 1])) n--;
    return reward_mq_strndup(a, b, n);
}

/* Math-Verify's trailing unit word removal, except after a letter: in
 * "2\pi r h" the h is a variable, not hours (Math-Verify strips it). */
static char *strip_unit(mq_arena *a, const char *t)
{
    size_t n = strlen(t), ov[4];
    if (reward_mq_re_find(R.units, t, n, 0, ov, 4) != 1) return (char *)t;
    size_t g = ov[2];
    if (g != SIZE_MAX && is_space(t[g])) {
        size_t k = g;
        while (k > 0 && is_space(t[k - 1])) k--;
        char c = k > 0 ? t[k - 1] : 0;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return (char *)t;
    }
    /* replace the match by group 1 */
    char *r = reward_mq_alloc(a, n + 1);
    if (!r) return NULL;
    memcpy(r, t, ov[0]);
    size_t k = ov[0];
    if (g != SIZE_MAX) {
        memcpy(r + k, t + g, ov[3] - g);
        k += ov[3] - g;
    }
    memcpy(r + k, t + ov[1], n - ov[1]);
    r[k + n - ov[1]] = 0;
    return r;
}

char *reward_mq_normalize(mq_arena *a, const char *s, size_t n, const mq_norm_cfg *cfg, char **pre_units)
{
    pthread_once(&g_once, compile_all);
    if (pre_units) *pre_units = NULL;
    char *t;
    if (cfg->boxed != MQ_BOX_NONE) t = reward_mq_boxed_content(a, s, n, cfg->boxed, NULL);
    else t = reward_mq_strndup(a, s, n);
    if (!t) return NULL;

    if (cfg->basic_latex) {
        t = replace_all(a, t, "\\mathrm{T}", "T");
        t = replace_all(a, t, "\\mathrm{d}", "d");
        t = replace_all(a, t, "{\\rm d}", "d");
        t = replace_all(a, t, "\\left[\\begin{matrix}", "\\begin{bmatrix}");
        t = replace_all(a, t, "\\end{matrix}\\right]", "\\end{bmatrix}");
        t = sub(a, R.left, t, "\\1");
        t = sub(a, R.right, t, "\\1");
        t = sub(a, R.perm, t, "\\\\frac{(\\1)!}{((\\1)-(\\2))!}");
        t = sub(a, R.remove, t, "");
        if (!t) return NULL;
        t = do_replacements(a, t);
        if (!t) return NULL;
        for (char *p = t; *p; p++)
            if (*p == '\n' || *p == '\t') *p = ' ';
        if (!strstr(t, "matrix")) t = sub(a, R.slash_fix, t, "\\\\");
        if (!t) return NULL;
    }
    if (cfg->equations) t = last_equation_part(a, t);
    if (!t) return NULL;
    if (cfg->units) {
        char *before = t;
        char *u = sub(a, R.unit_sup, t, "");
        if (!u) return NULL;
        u = strip_copy(a, u);
        if (u && *u && strcmp(u, t) != 0) t = u;
        for (int k = 0; k < 2; k++) {
            u = strip_unit(a, t);
            if (!u) return NULL;
            if (*u && strcmp(u, t) != 0) t = u;
        }
        if (pre_units && t != before) *pre_units = before;
    }
    if (cfg->nits) {
        if (t[0] == '.') {
            char *u = reward_mq_alloc(a, strlen(t) + 2);
            if (!u) return NULL;
            u[0] = '0';
            strcpy(u + 1, t);
            t = u;
        }
        if (strcmp(t, "0.5") == 0) t = reward_mq_strndup(a, "\\frac{1}{2}", 11);
    }
    if (cfg->malformed_operators) {
        for (int i = 0; i < N_MALFORMED && t; i++) t = sub(a, R.malformed[i], t, k_malformed[i].tmpl);
        t = replace_all(a, t, " sqrt", "\\sqrt");
        if (!t) return NULL;
        t = fix_sqrt(a, t);
        if (!t) return NULL;
        t = fix_fracs(a, t);
        if (!t) return NULL;
        t = fix_a_slash_b(a, t);
    }
    return t;
}
