/*
 * Recursive-descent parser for normalised LaTeX (and plain) answers into
 * mq_node trees. It follows latex2sympy2_extended's reading of answers
 * where that matters for Math-Verify agreement:
 *   - implicit multiplication binds tighter than '/' ("2/3x" = 2/(3x)),
 *     '^' is left-associative, "2\frac{1}{2}" is the mixed number 5/2;
 *   - single letters are separate symbols ("ab" = a*b), names lower-cased,
 *     "e" is Euler's number, "f(x)" with a simple argument is an undefined
 *     function and "x(x+1)" a product;
 *   - "(a,b)" is an open interval unless b <= a (then a tuple), "[a,b]" a
 *     closed interval, "{a,b}" and "\{a,b\}" sets, a top-level "a, b" a set
 *     (or a tuple with ordered_lists), ';' separates tuples;
 *   - "x = 1, 2" is x = {1, 2}; "a \approx b" keeps a (or b when a is only
 *     symbols); "x \in S" is x = S; chains "a < b < c" become MQ_AND;
 *   - "\pm" expands into the set of both signs; "^\circ" is dropped.
 * Unknown commands are syntax errors (so Math-Verify's last-'=' retry
 * behaves the same). Depth is capped at MQ_MAX_DEPTH.
 */
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "base/base.h"
#include "reward/rules/rules_int.h"

/* ------------------------------------------------------------------------ */
/* Nodes                                                                    */

mq_node *mq_new(mq_arena *a, mq_kind k, int nk)
{
    mq_node *n = mq_alloc(a, sizeof *n);
    if (!n) return NULL;
    n->kind = k;
    n->nk = nk;
    if (nk > 0) {
        n->kids = mq_alloc(a, sizeof(mq_node *) * (size_t)nk);
        if (!n->kids) return NULL;
    }
    return n;
}

mq_node *mq_num_i64(mq_arena *a, int64_t v)
{
    mq_node *n = mq_new(a, MQ_NUM, 0);
    if (!n || mq_rat_from_i64(a, &n->q, v, 1)) return NULL;
    return n;
}

mq_node *mq_bin(mq_arena *a, mq_kind k, mq_node *x, mq_node *y)
{
    if (!x || !y) return NULL;
    mq_node *n = mq_new(a, k, 2);
    if (!n) return NULL;
    n->kids[0] = x;
    n->kids[1] = y;
    return n;
}

mq_node *mq_un(mq_arena *a, mq_kind k, mq_node *x)
{
    if (!x) return NULL;
    mq_node *n = mq_new(a, k, 1);
    if (!n) return NULL;
    n->kids[0] = x;
    return n;
}

static const char *const k_fn_names[MQ_FN_COUNT] = {
    "sqrt", "root", "sin", "cos", "tan", "sec", "csc", "cot", "asin", "acos", "atan", "asec",
    "acsc", "acot", "sinh", "cosh", "tanh", "ln", "log", "exp", "abs", "floor", "ceil",
    "factorial", "binomial", "gcd", "lcm", "max", "min", "det",
};

const char *mq_fn_name(mq_fn f) { return (unsigned)f < MQ_FN_COUNT ? k_fn_names[f] : "?"; }

/* ------------------------------------------------------------------------ */
/* Growable node lists (arena)                                              */

typedef struct {
    mq_node **v;
    int n, cap;
} nvec;

static int nv_push(mq_arena *a, nvec *v, mq_node *x)
{
    if (!x) return -1;
    if (v->n >= MQ_MAX_ELEMS) return -1; /* this parse fails, the call goes on */
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 8;
        mq_node **nv = mq_alloc(a, sizeof(mq_node *) * (size_t)cap);
        if (!nv) return -1;
        if (v->n) memcpy(nv, v->v, sizeof(mq_node *) * (size_t)v->n);
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = x;
    return 0;
}

static mq_node *from_vec(mq_arena *a, mq_kind k, const nvec *v)
{
    mq_node *n = mq_new(a, k, v->n);
    if (!n) return NULL;
    for (int i = 0; i < v->n; i++) n->kids[i] = v->v[i];
    return n;
}

/* ------------------------------------------------------------------------ */
/* Parser state and lexing                                                  */

typedef struct {
    mq_arena *a;
    const char *s;
    size_t n, i;
    int depth, abs_depth, in_matrix;
    const mq_parse_cfg *cfg;
    int fail;
} P;

#define FAIL(p)              \
    do {                     \
        (p)->fail = 1;       \
        return NULL;         \
    } while (0)

static int ch(const P *p) { return p->i < p->n ? (unsigned char)p->s[p->i] : 0; }
static int ch_at(const P *p, size_t k) { return p->i + k < p->n ? (unsigned char)p->s[p->i + k] : 0; }

/* Length of the command name at i ("\frac" -> 4), 0 if not a letter command. */
static size_t cmd_len_at(const P *p, size_t i)
{
    if (i >= p->n || p->s[i] != '\\') return 0;
    size_t k = i + 1;
    while (k < p->n && isalpha((unsigned char)p->s[k])) k++;
    return k - i - 1;
}

static int is_cmd_at(const P *p, size_t i, const char *name)
{
    size_t l = cmd_len_at(p, i);
    return l == strlen(name) && memcmp(p->s + i + 1, name, l) == 0;
}

static int is_cmd(const P *p, const char *name) { return is_cmd_at(p, p->i, name); }

static const char *const k_spacing[] = {
    "quad", "qquad", "displaystyle", "textstyle", "scriptstyle", "left", "right", "big", "Big",
    "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr", "biggl", "biggr", "Biggl", "Biggr", "middle",
    "limits", "nolimits", "mathstrut", "hfill", "hline", "nonumber", "notag", "enspace",
    "thinspace", "medspace", "thickspace", "negthinspace", "strut", "mleft", "mright",
};

/* Skip whitespace, spacing commands and \left. / \right. */
static void ws(P *p)
{
    for (;;) {
        int c = ch(p);
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || c == '~') {
            p->i++;
            continue;
        }
        if (c == '\\') {
            int c1 = ch_at(p, 1);
            if (c1 == ',' || c1 == ';' || c1 == ':' || c1 == '!' || c1 == ' ' || c1 == '>') {
                p->i += 2;
                continue;
            }
            if (c1 == '\\' && !p->in_matrix) {
                p->i += 2;
                continue;
            }
            size_t l = cmd_len_at(p, p->i);
            /* "\quadx": the lexer of latex2sympy reads \quad then x */
            if (l > 4 && memcmp(p->s + p->i + 1, "quad", 4) == 0) {
                p->i += 5;
                continue;
            }
            if (l > 5 && memcmp(p->s + p->i + 1, "qquad", 5) == 0) {
                p->i += 6;
                continue;
            }
            int hit = 0;
            for (size_t k = 0; l && k < sizeof k_spacing / sizeof k_spacing[0]; k++)
                if (strlen(k_spacing[k]) == l && memcmp(p->s + p->i + 1, k_spacing[k], l) == 0) {
                    hit = 1;
                    break;
                }
            if (hit) {
                p->i += 1 + l;
                /* \left. and \right. : invisible delimiters */
                if (ch(p) == '.') p->i++;
                continue;
            }
        }
        break;
    }
}

static int eat(P *p, int c)
{
    ws(p);
    if (ch(p) == c) {
        p->i++;
        return 1;
    }
    return 0;
}

static int eat_cmd(P *p, const char *name)
{
    ws(p);
    if (is_cmd(p, name)) {
        p->i += 1 + strlen(name);
        return 1;
    }
    return 0;
}

static char *lower_dup(mq_arena *a, const char *s, size_t n)
{
    char *r = mq_strndup(a, s, n);
    if (!r) return NULL;
    for (size_t i = 0; i < n; i++) r[i] = (char)tolower((unsigned char)r[i]);
    return r;
}

/* Raw text of a {...} group at i (braces balanced); sets *end after '}'. */
static int raw_group(P *p, const char **out, size_t *outn)
{
    ws(p);
    if (ch(p) != '{') return 0;
    int depth = 0;
    size_t st = p->i;
    for (size_t k = p->i; k < p->n; k++) {
        if (p->s[k] == '{') depth++;
        else if (p->s[k] == '}' && --depth == 0) {
            *out = p->s + st + 1;
            *outn = k - st - 1;
            p->i = k + 1;
            return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Forward declarations                                                     */

static mq_node *parse_element(P *p);
static mq_node *parse_additive(P *p);
static mq_node *parse_unary(P *p);
static mq_node *parse_implicit(P *p, int stop_at_fn);
static mq_node *parse_power(P *p);
static mq_node *parse_primary(P *p);
static int parse_groups(P *p, nvec *groups);

static int enter(P *p)
{
    if (++p->depth > MQ_MAX_DEPTH) {
        p->fail = 1; /* too deep: this text does not parse */
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Helpers on nodes                                                         */

static int is_int_lit(const mq_node *n)
{
    return n && n->kind == MQ_NUM && !(n->flags & MQ_F_FLOAT) && mq_rat_is_int(&n->q);
}

/* Math-Verify is_expr_of_only_symbols */
int mq_only_symbols(const mq_node *n)
{
    if (!n) return 0;
    switch (n->kind) {
    case MQ_SYM: return 1;
    case MQ_DIV:
        if (is_int_lit(n->kids[0]) && n->kids[0]->q.num.n == 1 && n->kids[0]->q.num.d[0] == 1 &&
            n->kids[0]->q.num.sign > 0)
            return mq_only_symbols(n->kids[1]);
        /* fall through */
    case MQ_ADD:
    case MQ_MUL:
    case MQ_TUPLE:
    case MQ_APPLY:
    case MQ_INTERVAL:
        for (int i = 0; i < n->nk; i++)
            if (!mq_only_symbols(n->kids[i])) return 0;
        return n->nk > 0;
    case MQ_FUNC:
        if (n->fn != MQ_FN_ABS) return 0;
        return mq_only_symbols(n->kids[0]);
    default: return 0;
    }
}

/* Numeric value of a symbol-free node, for interval/tuple decisions. */
static int real_value(P *p, const mq_node *n, double *v)
{
    if (mq_has_symbols(n)) return 0;
    mq_val x = mq_eval(p->a, n, -1);
    if (!x.ok || fabs(cimag(x.z)) > 1e-12 * (1 + fabs(creal(x.z)))) return 0;
    *v = creal(x.z);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Numbers                                                                  */

static mq_node *parse_number(P *p)
{
    size_t st = p->i, ip0 = p->i;
    while (isdigit(ch(p))) p->i++;
    size_t ipn = p->i - ip0;
    const char *fp = "";
    size_t fpn = 0;
    int is_float = 0;
    if (ch(p) == '.' && isdigit(ch_at(p, 1))) {
        p->i++;
        fp = p->s + p->i;
        while (isdigit(ch(p))) p->i++;
        fpn = (size_t)(p->s + p->i - fp);
        is_float = 1;
    } else if (ch(p) == '.' && p->cfg->plain_expr && ipn > 0) {
        p->i++; /* Python "3." */
        is_float = 1;
    }
    long ex = 0;
    /* scientific notation 1.5e3 / 2E-4: digits must follow */
    if ((ch(p) == 'e' || ch(p) == 'E') && ipn + fpn > 0) {
        size_t k = 1;
        int sign = 1;
        if (ch_at(p, 1) == '+' || ch_at(p, 1) == '-') {
            sign = ch_at(p, 1) == '-' ? -1 : 1;
            k = 2;
        }
        if (isdigit(ch_at(p, k))) {
            size_t j = p->i + k;
            long e = 0;
            while (j < p->n && isdigit((unsigned char)p->s[j])) {
                if (e < 100000) e = e * 10 + (p->s[j] - '0');
                j++;
            }
            ex = sign * e;
            p->i = j;
            is_float = 1;
        }
    }
    if (ipn + fpn == 0) {
        p->i = st;
        FAIL(p);
    }
    mq_node *n = mq_new(p->a, MQ_NUM, 0);
    if (!n) FAIL(p);
    if (mq_rat_from_decimal(p->a, &n->q, p->s + ip0, ipn, fp, fpn, ex)) FAIL(p); /* over the size cap */
    if (is_float) n->flags |= MQ_F_FLOAT;
    return n;
}

/* ------------------------------------------------------------------------ */
/* TeX arguments: {group}, one digit, one letter, or one command atom       */

static mq_node *parse_group_content(P *p, int close)
{
    nvec g = {0};
    if (parse_groups(p, &g)) FAIL(p);
    if (!eat(p, close)) FAIL(p);
    if (g.n != 1 || g.v[0]->nk != 1) FAIL(p);
    return g.v[0]->kids[0];
}

static mq_node *parse_arg(P *p)
{
    ws(p);
    int c = ch(p);
    if (c == '{') {
        p->i++;
        return parse_group_content(p, '}');
    }
    if (isdigit(c)) {
        mq_node *n = mq_new(p->a, MQ_NUM, 0);
        if (!n || mq_rat_from_i64(p->a, &n->q, c - '0', 1)) FAIL(p);
        p->i++;
        return n;
    }
    if (isalpha(c) || c == '\\') return parse_primary(p);
    FAIL(p);
}

/* exponent after '^': {group}, a whole number, a letter, a command, -x */
static mq_node *parse_exponent(P *p)
{
    ws(p);
    int c = ch(p);
    if (c == '{') {
        p->i++;
        return parse_group_content(p, '}');
    }
    if (isdigit(c)) return parse_number(p);
    if (c == '-') {
        p->i++;
        return mq_un(p->a, MQ_NEG, parse_exponent(p));
    }
    if (c == '+') {
        p->i++;
        return parse_exponent(p);
    }
    if (isalpha(c) || c == '\\' || c == '(') return parse_primary(p);
    FAIL(p);
}

/* Subscript text for a symbol name: "_1", "_{n-1}" -> "1", "n-1". */
static int subscript_text(P *p, const char **out, size_t *outn)
{
    ws(p);
    if (ch(p) == '{') return raw_group(p, out, outn);
    size_t st = p->i;
    if (isalnum(ch(p))) {
        p->i++;
    } else if (ch(p) == '\\') {
        size_t l = cmd_len_at(p, p->i);
        if (!l) return 0;
        p->i += 1 + l;
    } else {
        return 0;
    }
    *out = p->s + st;
    *outn = p->i - st;
    return 1;
}

/* name + "_" + subscript with spaces removed, lower-cased */
static char *sub_name(P *p, const char *base, size_t bn, const char *sub, size_t sn)
{
    char *r = mq_alloc(p->a, bn + sn + 4);
    if (!r) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < bn; i++) r[k++] = (char)tolower((unsigned char)base[i]);
    r[k++] = '_';
    int braces = 0;
    for (size_t i = 0; i < sn; i++)
        if (!isspace((unsigned char)sub[i])) braces++;
    if (braces > 1) r[k++] = '{';
    for (size_t i = 0; i < sn; i++)
        if (!isspace((unsigned char)sub[i])) r[k++] = (char)tolower((unsigned char)sub[i]);
    if (braces > 1) r[k++] = '}';
    r[k] = 0;
    return r;
}

/* ------------------------------------------------------------------------ */
/* Symbols, constants, undefined functions                                  */

static mq_node *make_sym(P *p, const char *name)
{
    mq_node *n = mq_new(p->a, MQ_SYM, 0);
    if (!n) FAIL(p);
    n->name = name;
    return n;
}

static mq_node *make_const(P *p, const char *name)
{
    mq_node *n = mq_new(p->a, MQ_CONST, 0);
    if (!n) FAIL(p);
    n->name = name;
    return n;
}

/* Math-Verify reads f(x) as a function only for simple arguments */
static int simple_arg(const mq_node *n)
{
    switch (n->kind) {
    case MQ_SYM:
    case MQ_CONST: return 1;
    case MQ_NUM: return n->q.num.sign >= 0;
    case MQ_POW: return simple_arg(n->kids[0]) && simple_arg(n->kids[1]);
    default: return 0;
    }
}

static mq_node *parse_letter(P *p)
{
    const char *base = p->s + p->i;
    p->i++;
    const char *name;
    size_t save = p->i;
    ws(p);
    if (ch(p) == '_') {
        p->i++;
        const char *sub;
        size_t sn;
        if (!subscript_text(p, &sub, &sn)) FAIL(p);
        name = sub_name(p, base, 1, sub, sn);
    } else {
        p->i = save;
        char c = (char)tolower((unsigned char)*base);
        if (*base == 'e') return make_const(p, "e");
        if (*base == 'i') return make_const(p, "i");
        name = mq_strndup(p->a, &c, 1);
    }
    if (!name) FAIL(p);
    /* f(x): an undefined function when the arguments are simple */
    save = p->i;
    ws(p);
    if (ch(p) == '(') {
        P q = *p;
        q.i++;
        nvec g = {0};
        if (!parse_groups(&q, &g) && eat(&q, ')') && g.n == 1 && g.v[0]->nk >= 1) {
            mq_node *grp = g.v[0];
            int ok = 1;
            for (int k = 0; k < grp->nk; k++)
                if (!simple_arg(grp->kids[k])) ok = 0;
            if (ok) {
                mq_node *n = mq_new(p->a, MQ_APPLY, grp->nk);
                if (!n) FAIL(p);
                n->name = name;
                for (int k = 0; k < grp->nk; k++) n->kids[k] = grp->kids[k];
                p->i = q.i;
                return n;
            }
        }
        if (q.a->failed) FAIL(p);
    }
    p->i = save;
    return make_sym(p, name);
}

static const char *const k_greek[] = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta",
    "vartheta", "iota", "kappa", "lambda", "mu", "nu", "xi", "omicron", "rho", "varrho", "sigma",
    "varsigma", "tau", "upsilon", "phi", "varphi", "chi", "psi", "omega", "Gamma", "Delta",
    "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega", "ell", "hbar",
};

/* \text{...} content: a number, or a word symbol (spaces and surrounding
 * parentheses removed, lower-cased) like Math-Verify's \text handling. */
static mq_node *text_node(P *p, const char *s, size_t n)
{
    while (n && isspace((unsigned char)*s)) s++, n--;
    while (n && isspace((unsigned char)s[n - 1])) n--;
    while (n >= 2 && s[0] == '(' && s[n - 1] == ')') s++, n -= 2;
    if (n == 0) FAIL(p);
    size_t k = 0, digits = 0, dots = 0;
    if (s[0] == '-') k++;
    for (size_t j = k; j < n; j++) {
        if (isdigit((unsigned char)s[j])) digits++;
        else if (s[j] == '.') dots++;
        else {
            digits = 0;
            break;
        }
    }
    if (digits && dots <= 1) {
        P q = *p;
        q.s = s + k;
        q.n = n - k;
        q.i = 0;
        mq_node *num = parse_number(&q);
        if (!num || q.i != q.n) FAIL(p);
        return k ? mq_un(p->a, MQ_NEG, num) : num;
    }
    char *name = mq_alloc(p->a, n + 1);
    if (!name) FAIL(p);
    size_t o = 0;
    for (size_t j = 0; j < n; j++)
        if (!isspace((unsigned char)s[j])) name[o++] = (char)tolower((unsigned char)s[j]);
    name[o] = 0;
    mq_node *sym = make_sym(p, name);
    if (sym) sym->flags |= MQ_F_TEXT;
    return sym;
}

/* ------------------------------------------------------------------------ */
/* Builtin functions                                                        */

static const struct {
    const char *cmd;
    mq_fn fn, inv; /* inv: the ^{-1} form (MQ_FN_COUNT if none) */
} k_funcs[] = {
    {"sin", MQ_FN_SIN, MQ_FN_ASIN},       {"cos", MQ_FN_COS, MQ_FN_ACOS},
    {"tan", MQ_FN_TAN, MQ_FN_ATAN},       {"sec", MQ_FN_SEC, MQ_FN_ASEC},
    {"csc", MQ_FN_CSC, MQ_FN_ACSC},       {"cot", MQ_FN_COT, MQ_FN_ACOT},
    {"arcsin", MQ_FN_ASIN, MQ_FN_COUNT},  {"arccos", MQ_FN_ACOS, MQ_FN_COUNT},
    {"arctan", MQ_FN_ATAN, MQ_FN_COUNT},  {"arcsec", MQ_FN_ASEC, MQ_FN_COUNT},
    {"arccsc", MQ_FN_ACSC, MQ_FN_COUNT},  {"arccot", MQ_FN_ACOT, MQ_FN_COUNT},
    {"sinh", MQ_FN_SINH, MQ_FN_COUNT},    {"cosh", MQ_FN_COSH, MQ_FN_COUNT},
    {"tanh", MQ_FN_TANH, MQ_FN_COUNT},    {"ln", MQ_FN_LN, MQ_FN_COUNT},
    {"log", MQ_FN_LOG, MQ_FN_COUNT},      {"lg", MQ_FN_LOG, MQ_FN_COUNT},
    {"exp", MQ_FN_EXP, MQ_FN_COUNT},      {"gcd", MQ_FN_GCD, MQ_FN_COUNT},
    {"lcm", MQ_FN_LCM, MQ_FN_COUNT},      {"max", MQ_FN_MAX, MQ_FN_COUNT},
    {"min", MQ_FN_MIN, MQ_FN_COUNT},      {"det", MQ_FN_DET, MQ_FN_COUNT},
};
#define N_FUNCS ((int)(sizeof k_funcs / sizeof k_funcs[0]))

static int func_index(const P *p)
{
    size_t l = cmd_len_at(p, p->i);
    for (int k = 0; l && k < N_FUNCS; k++)
        if (strlen(k_funcs[k].cmd) == l && memcmp(p->s + p->i + 1, k_funcs[k].cmd, l) == 0) return k;
    return -1;
}

static int is_fn_cmd_here(P *p)
{
    ws(p);
    if (func_index(p) >= 0) return 1;
    return is_cmd(p, "operatorname");
}

static mq_node *make_func(P *p, mq_fn fn, nvec *args)
{
    int want = fn == MQ_FN_LOG || fn == MQ_FN_BINOM || fn == MQ_FN_ROOT ? 2 : 1;
    if (fn == MQ_FN_GCD || fn == MQ_FN_LCM || fn == MQ_FN_MAX || fn == MQ_FN_MIN) {
        if (args->n < 1) FAIL(p);
    } else if (args->n != want) {
        FAIL(p);
    }
    mq_node *n = from_vec(p->a, MQ_FUNC, args);
    if (!n) FAIL(p);
    n->fn = fn;
    return n;
}

/* After the command name: [^power] [_base] argument. */
static mq_node *parse_function(P *p, mq_fn fn, mq_fn inv)
{
    mq_node *power = NULL, *base = NULL;
    for (int k = 0; k < 2; k++) {
        ws(p);
        if (ch(p) == '^' && !power) {
            p->i++;
            power = parse_exponent(p);
            if (!power) FAIL(p);
        } else if (ch(p) == '_' && !base) {
            p->i++;
            base = parse_arg(p);
            if (!base) FAIL(p);
        }
    }
    /* sin^{-1} is arcsin */
    if (power && inv != MQ_FN_COUNT && power->kind == MQ_NEG && is_int_lit(power->kids[0]) &&
        power->kids[0]->q.num.n == 1 && power->kids[0]->q.num.d[0] == 1) {
        fn = inv;
        power = NULL;
    }
    nvec args = {0};
    ws(p);
    if (ch(p) == '(') {
        p->i++;
        nvec g = {0};
        if (parse_groups(p, &g) || !eat(p, ')') || g.n != 1) FAIL(p);
        for (int k = 0; k < g.v[0]->nk; k++)
            if (nv_push(p->a, &args, g.v[0]->kids[k])) FAIL(p);
    } else {
        mq_node *x = parse_implicit(p, 1);
        if (!x || nv_push(p->a, &args, x)) FAIL(p);
    }
    if (fn == MQ_FN_LOG) {
        if (!base) base = mq_num_i64(p->a, 10); /* latex2sympy: \log is base 10 */
        if (nv_push(p->a, &args, base)) FAIL(p);
    } else if (base) {
        FAIL(p);
    }
    mq_node *f = make_func(p, fn, &args);
    if (f && power) f = mq_bin(p->a, MQ_POW, f, power);
    return f;
}

/* ------------------------------------------------------------------------ */
/* Brackets: groups, tuples, intervals, sets                                */

static mq_node *flatten_groups(P *p, nvec *g, mq_kind k)
{
    nvec all = {0};
    for (int i = 0; i < g->n; i++)
        for (int j = 0; j < g->v[i]->nk; j++)
            if (nv_push(p->a, &all, g->v[i]->kids[j])) FAIL(p);
    return from_vec(p->a, k, &all);
}

static mq_node *make_interval(P *p, mq_node *lo, mq_node *hi, int lopen, int ropen)
{
    double a, b;
    int num = real_value(p, lo, &a) && real_value(p, hi, &b);
    /* latex2sympy: an empty (a,b) / [a,b] is a tuple instead */
    if (num && ((lopen && ropen && b <= a) || (!lopen && !ropen && b < a))) {
        mq_node *t = mq_bin(p->a, MQ_TUPLE, lo, hi);
        if (!t) FAIL(p);
        return t;
    }
    mq_node *n = mq_bin(p->a, MQ_INTERVAL, lo, hi);
    if (!n) FAIL(p);
    if (lopen) n->flags |= MQ_F_LOPEN;
    if (ropen) n->flags |= MQ_F_ROPEN;
    if (lopen && ropen) n->flags |= MQ_F_PAREN2;
    return n;
}

static mq_node *parse_paren(P *p, int open)
{
    p->i++;
    nvec g = {0};
    if (parse_groups(p, &g)) FAIL(p);
    ws(p);
    int close = ch(p);
    if (close != ')' && close != ']') FAIL(p);
    p->i++;
    int total = 0;
    for (int i = 0; i < g.n; i++) total += g.v[i]->nk;
    int matched = close == (open == '(' ? ')' : ']');
    if (total == 2 && g.n == 1)
        return make_interval(p, g.v[0]->kids[0], g.v[0]->kids[1], open == '(', close == ')');
    if (!matched || total < 1) FAIL(p);
    if (total == 1) return g.v[0]->kids[0];
    return flatten_groups(p, &g, MQ_TUPLE);
}

/* After the opening "{" or "\{" / "\lbrace": a group or a set. */
static mq_node *parse_brace_body(P *p, int escaped)
{
    ws(p);
    if (escaped && ((ch(p) == '\\' && ch_at(p, 1) == '}') || is_cmd(p, "rbrace"))) {
        p->i += ch_at(p, 1) == '}' ? 2 : 7;
        mq_node *e = mq_new(p->a, MQ_SPECIAL, 0);
        if (!e) FAIL(p);
        e->name = "empty";
        return e;
    }
    nvec g = {0};
    if (parse_groups(p, &g)) FAIL(p);
    ws(p);
    if (escaped) {
        if (ch(p) == '\\' && ch_at(p, 1) == '}') p->i += 2;
        else if (is_cmd(p, "rbrace")) p->i += 7;
        else FAIL(p);
    } else {
        if (ch(p) != '}') FAIL(p);
        p->i++;
    }
    int total = 0;
    for (int i = 0; i < g.n; i++) total += g.v[i]->nk;
    if (!escaped && total == 1) return g.v[0]->kids[0];
    if (total < 1) FAIL(p);
    return flatten_groups(p, &g, MQ_SET);
}

static mq_node *parse_brace(P *p, int escaped)
{
    p->i += escaped ? 2 : 1;
    return parse_brace_body(p, escaped);
}

/* \begin{pmatrix} a & b \\ c & d \end{pmatrix} (also bmatrix, array...) */
static mq_node *parse_matrix(P *p, const char *env, size_t envn)
{
    if (envn == 5 && memcmp(env, "array", 5) == 0) {
        const char *spec;
        size_t sn;
        if (!raw_group(p, &spec, &sn)) FAIL(p);
    }
    int saved = p->in_matrix;
    p->in_matrix = 1;
    nvec cells = {0};
    int rows = 0, cols = -1, cur = 0;
    for (;;) {
        ws(p);
        if (is_cmd(p, "end")) break;
        mq_node *c = parse_additive(p);
        if (!c || nv_push(p->a, &cells, c)) FAIL(p);
        cur++;
        ws(p);
        if (ch(p) == '&') {
            p->i++;
            continue;
        }
        int end_row = ch(p) == '\\' && ch_at(p, 1) == '\\';
        if (end_row) p->i += 2;
        else if (!is_cmd(p, "end")) FAIL(p);
        if (cols < 0) cols = cur;
        else if (cols != cur) FAIL(p);
        rows++;
        cur = 0;
    }
    if (cur) FAIL(p);
    p->in_matrix = saved;
    p->i += 4;
    const char *e2;
    size_t e2n;
    if (!raw_group(p, &e2, &e2n) || e2n != envn || memcmp(e2, env, envn) != 0) FAIL(p);
    if (rows == 0 || cols <= 0) FAIL(p);
    mq_node *m = from_vec(p->a, MQ_MATRIX, &cells);
    if (!m) FAIL(p);
    m->rows = rows;
    m->cols = cols;
    if (envn == 7 && (memcmp(env, "vmatrix", 7) == 0 || memcmp(env, "Vmatrix", 7) == 0)) {
        mq_node *d = mq_un(p->a, MQ_FUNC, m);
        if (!d) FAIL(p);
        d->fn = MQ_FN_DET;
        return d;
    }
    return m;
}

/* \sum_{k=1}^{n} body, \prod ... */
static mq_node *parse_bigop(P *p, const char *name)
{
    mq_node *var = NULL, *lo = NULL, *hi = NULL;
    for (int k = 0; k < 2; k++) {
        ws(p);
        if (ch(p) == '_' && !lo) {
            p->i++;
            ws(p);
            if (ch(p) != '{') FAIL(p);
            p->i++;
            mq_node *r = parse_element(p);
            if (!r || !eat(p, '}')) FAIL(p);
            if (r->kind != MQ_REL || r->rel != MQ_EQ || r->kids[0]->kind != MQ_SYM) FAIL(p);
            var = r->kids[0];
            lo = r->kids[1];
        } else if (ch(p) == '^' && !hi) {
            p->i++;
            hi = parse_exponent(p);
            if (!hi) FAIL(p);
        }
    }
    if (!var || !hi) FAIL(p);
    mq_node *body = parse_implicit(p, 0);
    if (!body) FAIL(p);
    mq_node *n = mq_new(p->a, MQ_BIGOP, 4);
    if (!n) FAIL(p);
    n->name = name;
    n->kids[0] = var, n->kids[1] = lo, n->kids[2] = hi, n->kids[3] = body;
    return n;
}

static mq_node *parse_command(P *p)
{
    size_t l = cmd_len_at(p, p->i);
    if (l == 0) {
        /* \{ set, \| norm (unsupported) */
        if (ch_at(p, 1) == '{') return parse_brace(p, 1);
        FAIL(p);
    }
    const char *c = p->s + p->i + 1;
#define IS(name) (l == sizeof(name) - 1 && memcmp(c, name, l) == 0)
    int fi = func_index(p);
    p->i += 1 + l;
    if (fi >= 0) return parse_function(p, k_funcs[fi].fn, k_funcs[fi].inv);
    if (IS("frac") || IS("dfrac") || IS("tfrac") || IS("cfrac")) {
        mq_node *a = parse_arg(p);
        mq_node *b = a ? parse_arg(p) : NULL;
        mq_node *d = mq_bin(p->a, MQ_DIV, a, b);
        if (!d) FAIL(p);
        d->flags |= 32; /* written as \frac: for mixed numbers */
        return d;
    }
    if (IS("sqrt")) {
        ws(p);
        mq_node *idx = NULL;
        if (ch(p) == '[') {
            p->i++;
            idx = parse_additive(p);
            if (!idx || !eat(p, ']')) FAIL(p);
        }
        mq_node *x = parse_arg(p);
        if (!x) FAIL(p);
        if (!idx) {
            mq_node *f = mq_un(p->a, MQ_FUNC, x);
            if (!f) FAIL(p);
            f->fn = MQ_FN_SQRT;
            return f;
        }
        mq_node *f = mq_bin(p->a, MQ_FUNC, x, idx);
        if (!f) FAIL(p);
        f->fn = MQ_FN_ROOT;
        return f;
    }
    if (IS("binom") || IS("dbinom") || IS("tbinom")) {
        mq_node *a = parse_arg(p);
        mq_node *b = a ? parse_arg(p) : NULL;
        mq_node *f = mq_bin(p->a, MQ_FUNC, a, b);
        if (!f) FAIL(p);
        f->fn = MQ_FN_BINOM;
        return f;
    }
    if (IS("pi")) return make_const(p, "pi");
    if (IS("infty") || IS("infin")) return make_const(p, "inf");
    if (IS("imath")) return make_const(p, "i");
    for (size_t k = 0; k < sizeof k_greek / sizeof k_greek[0]; k++)
        if (strlen(k_greek[k]) == l && memcmp(c, k_greek[k], l) == 0) {
            const char *name = lower_dup(p->a, c, l);
            ws(p);
            if (ch(p) == '_') {
                p->i++;
                const char *sub;
                size_t sn;
                if (!subscript_text(p, &sub, &sn)) FAIL(p);
                name = sub_name(p, c, l, sub, sn);
            }
            if (!name) FAIL(p);
            return make_sym(p, name);
        }
    if (IS("text") || IS("mbox") || IS("textrm") || IS("textbf") || IS("textit") || IS("mathrm") ||
        IS("mathit") || IS("mathbf") || IS("textnormal") || IS("textsf") || IS("texttt")) {
        const char *t;
        size_t tn;
        if (!raw_group(p, &t, &tn)) FAIL(p);
        return text_node(p, t, tn);
    }
    if (IS("operatorname")) {
        const char *t;
        size_t tn;
        if (!raw_group(p, &t, &tn)) FAIL(p);
        for (int k = 0; k < N_FUNCS; k++)
            if (strlen(k_funcs[k].cmd) == tn && memcmp(t, k_funcs[k].cmd, tn) == 0)
                return parse_function(p, k_funcs[k].fn, k_funcs[k].inv);
        const char *name = lower_dup(p->a, t, tn);
        ws(p);
        if (ch(p) == '(') {
            p->i++;
            nvec g = {0};
            if (parse_groups(p, &g) || !eat(p, ')') || g.n != 1) FAIL(p);
            mq_node *n = mq_new(p->a, MQ_APPLY, g.v[0]->nk);
            if (!n) FAIL(p);
            n->name = name;
            for (int k = 0; k < g.v[0]->nk; k++) n->kids[k] = g.v[0]->kids[k];
            return n;
        }
        return make_sym(p, name);
    }
    if (IS("mathbb") || IS("Bbb")) {
        const char *t;
        size_t tn;
        if (!raw_group(p, &t, &tn) || tn != 1) FAIL(p);
        mq_node *n = mq_new(p->a, MQ_SPECIAL, 0);
        if (!n) FAIL(p);
        switch (t[0]) {
        case 'R': n->name = "reals"; break;
        case 'N': n->name = "naturals"; break;
        case 'Z': n->name = "integers"; break;
        case 'Q': n->name = "rationals"; break;
        case 'C': n->name = "complexes"; break;
        default: FAIL(p);
        }
        return n;
    }
    if (IS("emptyset") || IS("varnothing")) {
        mq_node *n = mq_new(p->a, MQ_SPECIAL, 0);
        if (!n) FAIL(p);
        n->name = "empty";
        return n;
    }
    if (IS("begin")) {
        const char *env;
        size_t envn;
        if (!raw_group(p, &env, &envn)) FAIL(p);
        static const char *const mats[] = {"pmatrix", "bmatrix", "Bmatrix", "vmatrix", "Vmatrix",
                                           "matrix", "smallmatrix", "array"};
        for (size_t k = 0; k < sizeof mats / sizeof mats[0]; k++)
            if (strlen(mats[k]) == envn && memcmp(env, mats[k], envn) == 0) return parse_matrix(p, env, envn);
        FAIL(p);
    }
    if (IS("lfloor") || IS("lceil")) {
        int fl = IS("lfloor");
        mq_node *x = parse_additive(p);
        if (!x || !eat_cmd(p, fl ? "rfloor" : "rceil")) FAIL(p);
        mq_node *f = mq_un(p->a, MQ_FUNC, x);
        if (!f) FAIL(p);
        f->fn = fl ? MQ_FN_FLOOR : MQ_FN_CEIL;
        return f;
    }
    if (IS("lvert") || IS("vert")) {
        p->abs_depth++;
        mq_node *x = parse_additive(p);
        p->abs_depth--;
        if (!x || !(eat_cmd(p, "rvert") || eat_cmd(p, "vert") || eat(p, '|'))) FAIL(p);
        mq_node *f = mq_un(p->a, MQ_FUNC, x);
        if (!f) FAIL(p);
        f->fn = MQ_FN_ABS;
        return f;
    }
    if (IS("lbrace")) return parse_brace_body(p, 1);
    if (IS("langle")) {
        nvec g = {0};
        if (parse_groups(p, &g) || !eat_cmd(p, "rangle")) FAIL(p);
        return flatten_groups(p, &g, MQ_TUPLE);
    }
    if (IS("overline") || IS("bar") || IS("vec") || IS("hat") || IS("widehat") || IS("tilde") ||
        IS("widetilde") || IS("dot") || IS("ddot") || IS("mathcal") || IS("mathscr") ||
        IS("mathfrak") || IS("boldsymbol") || IS("bm") || IS("overrightarrow") ||
        IS("overleftrightarrow") || IS("underline")) {
        const char *t;
        size_t tn;
        ws(p);
        if (ch(p) == '{') {
            if (!raw_group(p, &t, &tn)) FAIL(p);
        } else if (isalpha(ch(p))) {
            t = p->s + p->i++;
            tn = 1;
        } else {
            FAIL(p);
        }
        char *name = mq_alloc(p->a, l + tn + 3);
        if (!name) FAIL(p);
        size_t o = 0;
        memcpy(name, c, l);
        o = l;
        name[o++] = '{';
        for (size_t k = 0; k < tn; k++)
            if (!isspace((unsigned char)t[k])) name[o++] = (char)tolower((unsigned char)t[k]);
        name[o++] = '}';
        name[o] = 0;
        return make_sym(p, name);
    }
    if (IS("angle") || IS("triangle") || IS("measuredangle")) return make_sym(p, lower_dup(p->a, c, l));
    if (IS("sum")) return parse_bigop(p, "sum");
    if (IS("prod")) return parse_bigop(p, "prod");
    if (IS("boxed") || IS("fbox")) return parse_arg(p);
#undef IS
    FAIL(p);
}

/* ------------------------------------------------------------------------ */
/* Expression levels                                                        */

static mq_node *parse_primary(P *p)
{
    if (!enter(p)) FAIL(p);
    ws(p);
    int c = ch(p);
    mq_node *r;
    if (isdigit(c) || (c == '.' && isdigit(ch_at(p, 1)))) r = parse_number(p);
    else if (isalpha(c)) r = parse_letter(p);
    else if (c == '(' || c == '[') r = parse_paren(p, c);
    else if (c == '{') r = parse_brace(p, 0);
    else if (c == '|') {
        p->i++;
        p->abs_depth++;
        mq_node *x = parse_additive(p);
        p->abs_depth--;
        if (!x || !eat(p, '|')) FAIL(p);
        r = mq_un(p->a, MQ_FUNC, x);
        if (r) r->fn = MQ_FN_ABS;
    } else if (c == '\\') r = parse_command(p);
    else r = NULL;
    p->depth--;
    if (!r) FAIL(p);
    return r;
}

/* degree sign: ^\circ, ^{\circ} */
static int eat_degree(P *p)
{
    size_t save = p->i;
    ws(p);
    if (ch(p) != '^') goto no;
    p->i++;
    ws(p);
    if (is_cmd(p, "circ")) {
        p->i += 5;
        return 1;
    }
    if (ch(p) == '{') {
        p->i++;
        ws(p);
        if (is_cmd(p, "circ")) {
            p->i += 5;
            if (eat(p, '}')) return 1;
        }
    }
no:
    p->i = save;
    return 0;
}

static mq_node *parse_postfix(P *p)
{
    mq_node *x = parse_primary(p);
    if (!x) FAIL(p);
    for (;;) {
        size_t save = p->i;
        ws(p);
        int c = ch(p);
        if (c == '!' && ch_at(p, 1) != '=') {
            p->i++;
            mq_node *f = mq_un(p->a, MQ_FUNC, x);
            if (!f) FAIL(p);
            f->fn = MQ_FN_FACT;
            x = f;
        } else if (c == '%' || (c == '\\' && ch_at(p, 1) == '%')) {
            p->i += c == '%' ? 1 : 2;
            x = mq_un(p->a, MQ_PCT, x);
            if (!x) FAIL(p);
        } else if (c == '\'') {
            p->i++;
        } else if (c == '_' && x->kind != MQ_SYM) {
            /* base of a numeral (204_5): dropped like latex2sympy does */
            p->i++;
            const char *t;
            size_t tn;
            if (!subscript_text(p, &t, &tn)) FAIL(p);
        } else if (is_cmd(p, "circ") || is_cmd(p, "degree")) {
            p->i += is_cmd(p, "circ") ? 5 : 7;
        } else {
            p->i = save;
            return x;
        }
    }
}

static mq_node *parse_power(P *p)
{
    if (!enter(p)) FAIL(p);
    mq_node *b = parse_postfix(p);
    while (b) {
        if (eat_degree(p)) continue;
        size_t save = p->i;
        ws(p);
        if (ch(p) == '^' || (p->cfg->plain_expr && ch(p) == '*' && ch_at(p, 1) == '*')) {
            p->i += ch(p) == '^' ? 1 : 2;
            mq_node *e = parse_exponent(p);
            b = mq_bin(p->a, MQ_POW, b, e);
            /* postfix after a power: x^2! is rare, % is not */
            size_t s2 = p->i;
            ws(p);
            if (b && (ch(p) == '%' || (ch(p) == '\\' && ch_at(p, 1) == '%'))) {
                p->i += ch(p) == '%' ? 1 : 2;
                b = mq_un(p->a, MQ_PCT, b);
            } else {
                p->i = s2;
            }
            continue;
        }
        p->i = save;
        break;
    }
    p->depth--;
    if (!b) FAIL(p);
    return b;
}

/* Can the text at i start another factor of an implicit product? */
static int starts_factor(P *p, int stop_at_fn)
{
    ws(p);
    int c = ch(p);
    if (isdigit(c) || isalpha(c) || c == '(') return 1;
    if (c == '.' && isdigit(ch_at(p, 1))) return 1;
    if (c == '{') return 1;
    if (c == '|') return p->abs_depth == 0;
    if (c != '\\') return 0;
    if (ch_at(p, 1) == '{') return 1;
    size_t l = cmd_len_at(p, p->i);
    if (!l) return 0;
    if (stop_at_fn && is_fn_cmd_here(p)) return 0;
    static const char *const not_values[] = {
        "cdot", "times", "div", "pm", "mp", "cup", "cap", "setminus", "le", "leq", "ge", "geq",
        "ne", "neq", "lt", "gt", "leqslant", "geqslant", "approx", "in", "notin", "end", "right",
        "rfloor", "rceil", "rvert", "rangle", "rbrace", "to", "equiv", "sim", "ast", "backslash",
        "subset", "subseteq", "supset", "supseteq", "circ", "degree", "quad", "qquad", "land", "lor",
        "wedge", "vee", "mid", "colon", "implies", "iff", "Rightarrow", "rightarrow", "cdots",
        "ldots", "dots", "vdots",
    };
    for (size_t k = 0; k < sizeof not_values / sizeof not_values[0]; k++)
        if (strlen(not_values[k]) == l && memcmp(p->s + p->i + 1, not_values[k], l) == 0) return 0;
    if (is_cmd(p, "vert")) return p->abs_depth == 0;
    return 1;
}

static mq_node *parse_implicit(P *p, int stop_at_fn)
{
    if (!enter(p)) FAIL(p);
    nvec items = {0};
    mq_node *f = parse_power(p);
    if (!f || nv_push(p->a, &items, f)) FAIL(p);
    while (starts_factor(p, stop_at_fn)) {
        mq_node *g = parse_power(p);
        if (!g) FAIL(p);
        mq_node *last = items.v[items.n - 1];
        /* mixed number: 2\frac{1}{2} = 5/2 (integers only) */
        if (items.n == 1 && is_int_lit(last) && g->kind == MQ_DIV && (g->flags & 32) &&
            is_int_lit(g->kids[0]) && is_int_lit(g->kids[1])) {
            items.v[0] = mq_bin(p->a, MQ_ADD, last, g);
            if (!items.v[0]) FAIL(p);
            continue;
        }
        if (nv_push(p->a, &items, g)) FAIL(p);
    }
    p->depth--;
    if (items.n == 1) return items.v[0];
    return from_vec(p->a, MQ_MUL, &items);
}

static mq_node *parse_unary(P *p)
{
    if (!enter(p)) FAIL(p);
    ws(p);
    mq_node *r;
    int c = ch(p);
    if (c == '-') {
        p->i++;
        r = mq_un(p->a, MQ_NEG, parse_unary(p));
    } else if (c == '+') {
        p->i++;
        r = parse_unary(p);
    } else if (is_cmd(p, "pm") || is_cmd(p, "mp")) {
        int mp = is_cmd(p, "mp");
        p->i += 3;
        mq_node *x = parse_unary(p);
        r = mq_un(p->a, MQ_PM, mp ? mq_un(p->a, MQ_NEG, x) : x);
    } else {
        r = parse_implicit(p, 0);
    }
    p->depth--;
    if (!r) FAIL(p);
    return r;
}

static mq_node *parse_term(P *p)
{
    mq_node *l = parse_unary(p);
    while (l) {
        ws(p);
        int c = ch(p);
        if (c == '*' && !(p->cfg->plain_expr && ch_at(p, 1) == '*')) {
            p->i++;
            l = mq_bin(p->a, MQ_MUL, l, parse_unary(p));
        } else if (eat_cmd(p, "cdot") || eat_cmd(p, "times") || eat_cmd(p, "ast")) {
            l = mq_bin(p->a, MQ_MUL, l, parse_unary(p));
        } else if (c == '/') {
            p->i++;
            l = mq_bin(p->a, MQ_DIV, l, parse_unary(p));
        } else if (eat_cmd(p, "div")) {
            l = mq_bin(p->a, MQ_DIV, l, parse_unary(p));
        } else if (c == ':' && ch_at(p, 1) != '=') {
            p->i++;
            l = mq_bin(p->a, MQ_DIV, l, parse_unary(p));
        } else {
            break;
        }
    }
    if (!l) FAIL(p);
    return l;
}

static mq_node *parse_additive(P *p)
{
    if (!enter(p)) FAIL(p);
    nvec terms = {0};
    mq_node *t = parse_term(p);
    if (!t || nv_push(p->a, &terms, t)) FAIL(p);
    for (;;) {
        ws(p);
        int c = ch(p);
        if (c == '+') {
            p->i++;
            if (nv_push(p->a, &terms, parse_term(p))) FAIL(p);
        } else if (c == '-') {
            p->i++;
            if (nv_push(p->a, &terms, mq_un(p->a, MQ_NEG, parse_term(p)))) FAIL(p);
        } else if (is_cmd(p, "pm") || is_cmd(p, "mp")) {
            int mp = is_cmd(p, "mp");
            p->i += 3;
            mq_node *r = parse_term(p);
            mq_node *l = terms.n == 1 ? terms.v[0] : from_vec(p->a, MQ_ADD, &terms);
            mq_node *pm = mq_bin(p->a, MQ_PM, l, mp ? mq_un(p->a, MQ_NEG, r) : r);
            terms.n = 0;
            if (nv_push(p->a, &terms, pm)) FAIL(p);
        } else {
            break;
        }
    }
    p->depth--;
    if (terms.n == 1) return terms.v[0];
    return from_vec(p->a, MQ_ADD, &terms);
}

static mq_node *tuple_to_set(P *p, mq_node *x)
{
    if (x && x->kind == MQ_TUPLE) {
        mq_node *s = mq_new(p->a, MQ_SET, x->nk);
        if (!s) FAIL(p);
        for (int i = 0; i < x->nk; i++) s->kids[i] = x->kids[i];
        return s;
    }
    return x;
}

static mq_node *parse_setexpr(P *p)
{
    mq_node *l = parse_additive(p);
    while (l) {
        mq_kind k;
        ws(p);
        if (eat_cmd(p, "cup")) k = MQ_UNION;
        else if (eat_cmd(p, "cap")) k = MQ_INTER;
        else if (eat_cmd(p, "setminus") || eat_cmd(p, "backslash")) k = MQ_SETMINUS;
        else break;
        mq_node *r = parse_additive(p);
        l = mq_bin(p->a, k, tuple_to_set(p, l), tuple_to_set(p, r));
    }
    if (!l) FAIL(p);
    return l;
}

/* relation operator at i: returns 1 and sets *rel / *approx / *in */
static int relop(P *p, mq_rel *rel, int *approx)
{
    ws(p);
    *approx = 0;
    int c = ch(p), c1 = ch_at(p, 1);
    static const struct {
        const char *cmd;
        mq_rel rel;
        int approx;
    } cmds[] = {
        {"le", MQ_LE, 0},  {"leq", MQ_LE, 0}, {"leqslant", MQ_LE, 0}, {"ge", MQ_GE, 0},
        {"geq", MQ_GE, 0}, {"geqslant", MQ_GE, 0}, {"ne", MQ_NE, 0},  {"neq", MQ_NE, 0},
        {"lt", MQ_LT, 0},  {"gt", MQ_GT, 0},  {"approx", MQ_EQ, 1},    {"in", MQ_EQ, 0},
    };
    if (c == '\\') {
        for (size_t k = 0; k < sizeof cmds / sizeof cmds[0]; k++)
            if (is_cmd(p, cmds[k].cmd)) {
                p->i += 1 + strlen(cmds[k].cmd);
                *rel = cmds[k].rel;
                *approx = cmds[k].approx;
                return 1;
            }
        return 0;
    }
    if (c == '<' && c1 == '=') return p->i += 2, *rel = MQ_LE, 1;
    if (c == '>' && c1 == '=') return p->i += 2, *rel = MQ_GE, 1;
    if (c == '!' && c1 == '=') return p->i += 2, *rel = MQ_NE, 1;
    if (c == ':' && c1 == '=') return p->i += 2, *rel = MQ_EQ, 1;
    if (c == '=' && c1 == '=') return p->i += 2, *rel = MQ_EQ, 1;
    if (c == '<') return p->i++, *rel = MQ_LT, 1;
    if (c == '>') return p->i++, *rel = MQ_GT, 1;
    if (c == '=') return p->i++, *rel = MQ_EQ, 1;
    return 0;
}

static mq_node *make_rel(P *p, mq_node *l, mq_rel r, mq_node *x)
{
    mq_node *n = mq_bin(p->a, MQ_REL, l, x);
    if (!n) FAIL(p);
    n->rel = r;
    return n;
}

static mq_node *parse_relation(P *p)
{
    if (!enter(p)) FAIL(p);
    mq_node *lhs = parse_setexpr(p);
    mq_rel rel;
    int approx;
    while (lhs && relop(p, &rel, &approx)) {
        mq_node *rhs = parse_setexpr(p);
        if (!rhs) FAIL(p);
        if (approx) {
            lhs = mq_only_symbols(lhs) ? rhs : lhs;
            continue;
        }
        if (lhs->kind == MQ_REL) {
            mq_node *a = mq_new(p->a, MQ_AND, 2);
            if (!a) FAIL(p);
            a->kids[0] = lhs;
            a->kids[1] = make_rel(p, lhs->kids[1], rel, rhs);
            if (!a->kids[1]) FAIL(p);
            lhs = a;
        } else if (lhs->kind == MQ_AND) {
            mq_node *a = mq_new(p->a, MQ_AND, lhs->nk + 1);
            if (!a) FAIL(p);
            for (int i = 0; i < lhs->nk; i++) a->kids[i] = lhs->kids[i];
            a->kids[lhs->nk] = make_rel(p, lhs->kids[lhs->nk - 1]->kids[1], rel, rhs);
            if (!a->kids[lhs->nk]) FAIL(p);
            lhs = a;
        } else {
            /* "(x, y) = ..." : a tuple of symbols, not an interval */
            if (lhs->kind == MQ_INTERVAL && (lhs->flags & MQ_F_PAREN2) && mq_only_symbols(lhs))
                lhs->kind = MQ_TUPLE, lhs->flags = 0;
            lhs = make_rel(p, lhs, rel, rhs);
        }
    }
    p->depth--;
    if (!lhs) FAIL(p);
    return lhs;
}

static mq_node *parse_element(P *p) { return parse_relation(p); }

/* ------------------------------------------------------------------------ */
/* +- expansion                                                             */

static int has_pm(const mq_node *n)
{
    if (n->kind == MQ_PM) return 1;
    for (int i = 0; i < n->nk; i++)
        if (has_pm(n->kids[i])) return 1;
    return 0;
}

#define MAX_VARIANTS 16

/* All sign choices of the +- nodes of n; returns count or -1. */
static int variants(mq_arena *a, mq_node *n, mq_node **out)
{
    if (!has_pm(n)) {
        out[0] = n;
        return 1;
    }
    if (n->kind == MQ_PM) {
        mq_node *lv[MAX_VARIANTS], *rv[MAX_VARIANTS];
        int ln = 1, rn;
        if (n->nk == 2) {
            ln = variants(a, n->kids[0], lv);
            if (ln < 0) return -1;
        }
        rn = variants(a, n->kids[n->nk - 1], rv);
        if (rn < 0 || ln * rn * 2 > MAX_VARIANTS) return -1;
        int k = 0;
        for (int i = 0; i < ln; i++)
            for (int j = 0; j < rn; j++) {
                if (n->nk == 2) {
                    out[k++] = mq_bin(a, MQ_ADD, lv[i], rv[j]);
                    out[k++] = mq_bin(a, MQ_ADD, lv[i], mq_un(a, MQ_NEG, rv[j]));
                } else {
                    out[k++] = mq_un(a, MQ_NEG, rv[j]);
                    out[k++] = rv[j];
                }
                if (!out[k - 1] || !out[k - 2]) return -1;
            }
        return k;
    }
    /* cartesian product over the kids */
    int total = 1;
    mq_node *kv[8][MAX_VARIANTS];
    int kn[8];
    if (n->nk > 8) return -1;
    for (int i = 0; i < n->nk; i++) {
        kn[i] = variants(a, n->kids[i], kv[i]);
        if (kn[i] < 0) return -1;
        total *= kn[i];
        if (total > MAX_VARIANTS) return -1;
    }
    for (int v = 0; v < total; v++) {
        mq_node *c = mq_new(a, n->kind, n->nk);
        if (!c) return -1;
        mq_node **kids = c->kids;
        *c = *n;
        c->kids = kids;
        int r = v;
        for (int i = 0; i < n->nk; i++) {
            c->kids[i] = kv[i][r % kn[i]];
            r /= kn[i];
        }
        out[v] = c;
    }
    return total;
}

/* ------------------------------------------------------------------------ */
/* Lists                                                                    */

/* Comma/semicolon separated elements; each group becomes an MQ_TUPLE node
 * in groups (a container, not a value). Returns 0 or -1. */
static int parse_groups(P *p, nvec *groups)
{
    if (!enter(p)) return -1;
    nvec cur = {0};
    for (;;) {
        mq_node *e = parse_element(p);
        if (!e) return -1;
        mq_node *vs[MAX_VARIANTS];
        int nv = variants(p->a, e, vs);
        if (nv < 0) {
            p->fail = 1;
            return -1;
        }
        for (int k = 0; k < nv; k++)
            if (nv_push(p->a, &cur, vs[k])) return -1;
        ws(p);
        if (ch(p) == ',') {
            p->i++;
            continue;
        }
        if (ch(p) == ';') {
            p->i++;
            if (nv_push(p->a, groups, from_vec(p->a, MQ_TUPLE, &cur))) return -1;
            cur.n = 0, cur.v = NULL, cur.cap = 0;
            continue;
        }
        break;
    }
    if (nv_push(p->a, groups, from_vec(p->a, MQ_TUPLE, &cur))) return -1;
    p->depth--;
    return 0;
}

static int is_relation_node(const mq_node *n) { return n->kind == MQ_REL || n->kind == MQ_AND; }

/* Math-Verify convert_elements_to_set_or_tuple + set_elements_relation */
static mq_node *assemble(P *p, nvec *g)
{
    if (g->n == 1) {
        mq_node *grp = g->v[0];
        if (grp->nk == 1) return grp->kids[0];
        /* x = 1, 2, 3  ->  x = {1, 2, 3} */
        mq_node *f = grp->kids[0];
        int rest_plain = 1;
        for (int i = 1; i < grp->nk; i++)
            if (is_relation_node(grp->kids[i])) rest_plain = 0;
        if (rest_plain && f->kind == MQ_REL && f->rel == MQ_EQ && mq_only_symbols(f->kids[0])) {
            mq_node *s = mq_new(p->a, p->cfg->ordered_lists ? MQ_TUPLE : MQ_SET, grp->nk);
            if (!s) FAIL(p);
            s->kids[0] = f->kids[1];
            for (int i = 1; i < grp->nk; i++) s->kids[i] = grp->kids[i];
            return make_rel(p, f->kids[0], MQ_EQ, s);
        }
        mq_node *s = mq_new(p->a, p->cfg->ordered_lists ? MQ_TUPLE : MQ_SET, grp->nk);
        if (!s) FAIL(p);
        for (int i = 0; i < grp->nk; i++) s->kids[i] = grp->kids[i];
        return s;
    }
    int all_single = 1;
    for (int i = 0; i < g->n; i++)
        if (g->v[i]->nk != 1) all_single = 0;
    mq_node *s = mq_new(p->a, MQ_SET, g->n);
    if (!s) FAIL(p);
    for (int i = 0; i < g->n; i++) s->kids[i] = all_single ? g->v[i]->kids[0] : g->v[i];
    return s;
}

/* ------------------------------------------------------------------------ */
/* Entry points                                                             */

/* Unicode math characters -> LaTeX, so the parser sees one spelling. */
static const struct {
    const char *u, *tex;
} k_unicode[] = {
    {"\xE2\x88\x92", "-"},         {"\xC3\x97", "\\times "},     {"\xC3\xB7", "\\div "},
    {"\xC2\xB7", "\\cdot "},       {"\xE2\x8B\x85", "\\cdot "},  {"\xE2\x89\xA4", "\\le "},
    {"\xE2\x89\xA5", "\\ge "},     {"\xE2\x89\xA0", "\\ne "},    {"\xE2\x88\x9E", "\\infty "},
    {"\xCF\x80", "\\pi "},         {"\xE2\x88\x9A", "\\sqrt "},  {"\xE2\x88\xAA", "\\cup "},
    {"\xE2\x88\xA9", "\\cap "},    {"\xC2\xB0", "^\\circ "},     {"\xE2\x80\xB2", "'"},
    {"\xC2\xB1", "\\pm "},         {"\xE2\x88\x88", "\\in "},    {"\xE2\x88\x85", "\\emptyset "},
    {"\xE2\x84\x9D", "\\mathbb{R}"}, {"\xC2\xA0", " "},          {"\xE2\x80\x89", " "},
    {"\xE2\x80\xAF", " "},         {"\xE2\x80\x8B", ""},         {"\xCE\xB1", "\\alpha "},
    {"\xCE\xB2", "\\beta "},       {"\xCE\xB3", "\\gamma "},     {"\xCE\xB4", "\\delta "},
    {"\xCE\xB8", "\\theta "},      {"\xCE\xBB", "\\lambda "},    {"\xCE\xBC", "\\mu "},
    {"\xCF\x83", "\\sigma "},      {"\xCF\x86", "\\phi "},       {"\xCF\x89", "\\omega "},
    {"\xE2\x88\x97", "*"},
};

static char *unicode_to_tex(mq_arena *a, const char *s, size_t n, size_t *out_n)
{
    int any = 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80 ||
            (s[i] == '\\' && i + 1 < n && strchr("()[]", s[i + 1]) && s[i + 1]))
            any = 1;
    if (!any) {
        *out_n = n;
        return (char *)s;
    }
    base_buf b = {0};
    for (size_t i = 0; i < n;) {
        int hit = 0;
        /* \( \) \[ \] delimit like ( ) [ ] (latex2sympy reads them so) */
        if (s[i] == '\\' && i + 1 < n && s[i + 1] && strchr("()[]", s[i + 1]) &&
            !(i > 0 && s[i - 1] == '\\')) {
            base_buf_append(&b, s + i + 1, 1);
            i += 2;
            continue;
        }
        if ((unsigned char)s[i] >= 0x80)
            for (size_t k = 0; k < sizeof k_unicode / sizeof k_unicode[0]; k++) {
                size_t ul = strlen(k_unicode[k].u);
                if (i + ul <= n && memcmp(s + i, k_unicode[k].u, ul) == 0) {
                    base_buf_puts(&b, k_unicode[k].tex);
                    i += ul;
                    hit = 1;
                    break;
                }
            }
        if (!hit) base_buf_append(&b, s + i++, 1);
    }
    char *r = mq_strndup(a, b.data ? b.data : "", b.len);
    *out_n = b.len;
    base_buf_free(&b);
    return r;
}

/* ^\s*-?\d{1,3}(,\d{3})+(\.\d+)?\s*$ : "1,000" is a number, not a set */
static int comma_number(const char *s, size_t n, mq_arena *a, mq_node **out)
{
    size_t i = 0;
    while (i < n && isspace((unsigned char)s[i])) i++;
    while (n > i && isspace((unsigned char)s[n - 1])) n--;
    int neg = 0;
    if (i < n && s[i] == '-') neg = 1, i++;
    size_t st = i, d = 0;
    while (i < n && isdigit((unsigned char)s[i])) i++, d++;
    if (d < 1 || d > 3) return 0;
    int groups = 0;
    while (i + 4 <= n && s[i] == ',' && isdigit((unsigned char)s[i + 1]) &&
           isdigit((unsigned char)s[i + 2]) && isdigit((unsigned char)s[i + 3]) &&
           (i + 4 == n || !isdigit((unsigned char)s[i + 4]))) {
        i += 4;
        groups++;
    }
    if (!groups) return 0;
    size_t fp = 0, fpn = 0;
    if (i < n && s[i] == '.') {
        fp = ++i;
        while (i < n && isdigit((unsigned char)s[i])) i++;
        fpn = i - fp;
        if (!fpn) return 0;
    }
    if (i != n) return 0;
    char *digits = mq_alloc(a, n + 1);
    if (!digits) return 0;
    size_t k = 0;
    for (size_t j = st; j < (fpn ? fp - 1 : n); j++)
        if (isdigit((unsigned char)s[j])) digits[k++] = s[j];
    mq_node *num = mq_new(a, MQ_NUM, 0);
    if (!num || mq_rat_from_decimal(a, &num->q, digits, k, fpn ? s + fp : "", fpn, 0)) return 0;
    if (fpn) num->flags |= MQ_F_FLOAT;
    *out = neg ? mq_un(a, MQ_NEG, num) : num;
    return *out != NULL;
}

mq_node *mq_parse(mq_arena *a, const char *s, size_t n, const mq_parse_cfg *cfg)
{
    if (n > MQ_MAX_PARSE_LEN) return NULL;
    s = unicode_to_tex(a, s, n, &n);
    if (!s) return NULL;
    /* trailing periods and spaces: "x = 5." */
    while (n && (isspace((unsigned char)s[n - 1]) || (s[n - 1] == '.' && !(n >= 2 && s[n - 2] == '\\'))))
        n--;
    mq_node *num;
    if (comma_number(s, n, a, &num)) return num;
    P p = {.a = a, .s = s, .n = n, .cfg = cfg};
    nvec g = {0};
    if (parse_groups(&p, &g) || p.fail) return NULL;
    ws(&p);
    if (p.i != p.n) return NULL;
    return assemble(&p, &g);
}

mq_node *mq_parse_with_last_eq(mq_arena *a, const char *s, size_t n, const mq_parse_cfg *cfg)
{
    mq_node *r = mq_parse(a, s, n, cfg);
    if (r || a->failed) return r;
    for (size_t i = 0; i < n; i++)
        if (s[i] == ',' || s[i] == ';') return NULL;
    int parts = 1;
    size_t last = 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '=' && !(i > 0 && (s[i - 1] == '\\' || s[i - 1] == '<' || s[i - 1] == '!' || s[i - 1] == '>'))) {
            parts++;
            last = i + 1;
        }
    if (parts <= 2) return NULL;
    return mq_parse(a, s + last, n - last, cfg);
}
