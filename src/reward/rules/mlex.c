/*
 * Parser, part 1: the parser state and lexing (whitespace and spacing
 * commands, TeX arguments, subscripts), numbers, letters and symbols,
 * undefined functions f(x). See mparse.c for the grammar as a whole.
 */
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "base/base.h"
#include "reward/rules/mparse_int.h"

/* ------------------------------------------------------------------------ */
/* Growable node lists (arena)                                              */


int reward_mqp_nv_push(mq_arena *a, nvec *v, mq_node *x)
{
    if (!x) return -1;
    if (v->n >= MQ_MAX_ELEMS) return -1; /* this parse fails, the call goes on */
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 8;
        mq_node **nv = reward_mq_alloc(a, sizeof(mq_node *) * (size_t)cap);
        if (!nv) return -1;
        if (v->n) memcpy(nv, v->v, sizeof(mq_node *) * (size_t)v->n);
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = x;
    return 0;
}

mq_node *reward_mqp_from_vec(mq_arena *a, mq_kind k, const nvec *v)
{
    mq_node *n = reward_mq_new(a, k, v->n);
    if (!n) return NULL;
    for (int i = 0; i < v->n; i++) n->kids[i] = v->v[i];
    return n;
}

/* ------------------------------------------------------------------------ */
/* Parser state and lexing                                                  */




/* Length of the command name at i ("\frac" -> 4), 0 if not a letter command. */
size_t reward_mqp_cmd_len_at(const P *p, size_t i)
{
    if (i >= p->n || p->s[i] != '\\') return 0;
    size_t k = i + 1;
    while (k < p->n && isalpha((unsigned char)p->s[k])) k++;
    return k - i - 1;
}

int reward_mqp_is_cmd_at(const P *p, size_t i, const char *name)
{
    size_t l = reward_mqp_cmd_len_at(p, i);
    return l == strlen(name) && memcmp(p->s + i + 1, name, l) == 0;
}

int reward_mqp_is_cmd(const P *p, const char *name) { return reward_mqp_is_cmd_at(p, p->i, name); }

static const char *const k_spacing[] = {
    "quad", "qquad", "displaystyle", "textstyle", "scriptstyle", "left", "right", "big", "Big",
    "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr", "biggl", "biggr", "Biggl", "Biggr", "middle",
    "limits", "nolimits", "mathstrut", "hfill", "hline", "nonumber", "notag", "enspace",
    "thinspace", "medspace", "thickspace", "negthinspace", "strut", "mleft", "mright",
};

/* Skip whitespace, spacing commands and \left. / \right. */
void reward_mqp_ws(P *p)
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
            size_t l = reward_mqp_cmd_len_at(p, p->i);
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

int reward_mqp_eat(P *p, int c)
{
    reward_mqp_ws(p);
    if (ch(p) == c) {
        p->i++;
        return 1;
    }
    return 0;
}

int reward_mqp_eat_cmd(P *p, const char *name)
{
    reward_mqp_ws(p);
    if (reward_mqp_is_cmd(p, name)) {
        p->i += 1 + strlen(name);
        return 1;
    }
    return 0;
}

char *reward_mqp_lower_dup(mq_arena *a, const char *s, size_t n)
{
    char *r = reward_mq_strndup(a, s, n);
    if (!r) return NULL;
    for (size_t i = 0; i < n; i++) r[i] = (char)tolower((unsigned char)r[i]);
    return r;
}

/* Raw text of a {...} group at i (braces balanced); sets *end after '}'. */
int reward_mqp_raw_group(P *p, const char **out, size_t *outn)
{
    reward_mqp_ws(p);
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

int reward_mqp_enter(P *p)
{
    if (++p->depth > MQ_MAX_DEPTH) {
        p->fail = 1; /* too deep: this text does not parse */
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Helpers on nodes                                                         */

int reward_mqp_is_int_lit(const mq_node *n)
{
    return n && n->kind == MQ_NUM && !(n->flags & MQ_F_FLOAT) && reward_mq_rat_is_int(&n->q);
}

/* Math-Verify is_expr_of_only_symbols */
int reward_mq_only_symbols(const mq_node *n)
{
    if (!n) return 0;
    switch (n->kind) {
    case MQ_SYM: return 1;
    case MQ_DIV:
        if (reward_mqp_is_int_lit(n->kids[0]) && n->kids[0]->q.num.n == 1 && n->kids[0]->q.num.d[0] == 1 &&
            n->kids[0]->q.num.sign > 0)
            return reward_mq_only_symbols(n->kids[1]);
        /* fall through */
    case MQ_ADD:
    case MQ_MUL:
    case MQ_TUPLE:
    case MQ_APPLY:
    case MQ_INTERVAL:
        for (int i = 0; i < n->nk; i++)
            if (!reward_mq_only_symbols(n->kids[i])) return 0;
        return n->nk > 0;
    case MQ_FUNC:
        if (n->fn != MQ_FN_ABS) return 0;
        return reward_mq_only_symbols(n->kids[0]);
    default: return 0;
    }
}

/* Numeric value of a symbol-free node, for interval/tuple decisions. */
int reward_mqp_real_value(P *p, const mq_node *n, double *v)
{
    if (reward_mq_has_symbols(n)) return 0;
    mq_val x = reward_mq_eval(p->a, n, -1);
    if (!x.ok || fabs(cimag(x.z)) > 1e-12 * (1 + fabs(creal(x.z)))) return 0;
    *v = creal(x.z);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Numbers                                                                  */

mq_node *reward_mqp_parse_number(P *p)
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
    mq_node *n = reward_mq_new(p->a, MQ_NUM, 0);
    if (!n) FAIL(p);
    if (reward_mq_rat_from_decimal(p->a, &n->q, p->s + ip0, ipn, fp, fpn, ex)) FAIL(p); /* over the size cap */
    if (is_float) n->flags |= MQ_F_FLOAT;
    return n;
}

/* ------------------------------------------------------------------------ */
/* TeX arguments: {group}, one digit, one letter, or one command atom       */

mq_node *reward_mqp_parse_group_content(P *p, int close)
{
    nvec g = {0};
    if (reward_mqp_parse_groups(p, &g)) FAIL(p);
    if (!reward_mqp_eat(p, close)) FAIL(p);
    if (g.n != 1 || g.v[0]->nk != 1) FAIL(p);
    return g.v[0]->kids[0];
}

mq_node *reward_mqp_parse_arg(P *p)
{
    reward_mqp_ws(p);
    int c = ch(p);
    if (c == '{') {
        p->i++;
        return reward_mqp_parse_group_content(p, '}');
    }
    if (isdigit(c)) {
        mq_node *n = reward_mq_new(p->a, MQ_NUM, 0);
        if (!n || reward_mq_rat_from_i64(p->a, &n->q, c - '0', 1)) FAIL(p);
        p->i++;
        return n;
    }
    if (isalpha(c) || c == '\\') return reward_mqp_parse_primary(p);
    FAIL(p);
}

/* exponent after '^': {group}, a whole number, a letter, a command, -x */
static mq_node *exponent_body(P *p)
{
    reward_mqp_ws(p);
    int c = ch(p);
    if (c == '{') {
        p->i++;
        return reward_mqp_parse_group_content(p, '}');
    }
    if (isdigit(c)) return reward_mqp_parse_number(p);
    if (c == '-') {
        p->i++;
        return reward_mq_un(p->a, MQ_NEG, reward_mqp_parse_exponent(p));
    }
    if (c == '+') {
        p->i++;
        return reward_mqp_parse_exponent(p);
    }
    if (isalpha(c) || c == '\\' || c == '(') return reward_mqp_parse_primary(p);
    FAIL(p);
}

/* x^2, x^{...}, x^-1, x^--+1 (signs recurse: a level each) */
mq_node *reward_mqp_parse_exponent(P *p)
{
    if (!reward_mqp_enter(p)) FAIL(p);
    mq_node *r = exponent_body(p);
    p->depth--;
    if (!r) FAIL(p);
    return r;
}

/* Subscript text for a symbol name: "_1", "_{n-1}" -> "1", "n-1". */
int reward_mqp_subscript_text(P *p, const char **out, size_t *outn)
{
    reward_mqp_ws(p);
    if (ch(p) == '{') return reward_mqp_raw_group(p, out, outn);
    size_t st = p->i;
    if (isalnum(ch(p))) {
        p->i++;
    } else if (ch(p) == '\\') {
        size_t l = reward_mqp_cmd_len_at(p, p->i);
        if (!l) return 0;
        p->i += 1 + l;
    } else {
        return 0;
    }
    *out = p->s + st;
    *outn = p->i - st;
    return 1;
}

/* name + "_" + subscript with spaces removed; lower-cased with `fold`
 * (variables: latex2sympy's lowercase_symbols), as written without it
 * (undefined function names: Math-Verify keeps their case) */
char *reward_mqp_sub_name(P *p, const char *base, size_t bn, const char *sub, size_t sn, int fold)
{
    char *r = reward_mq_alloc(p->a, bn + sn + 4);
    if (!r) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < bn; i++) r[k++] = fold ? (char)tolower((unsigned char)base[i]) : base[i];
    r[k++] = '_';
    int braces = 0;
    for (size_t i = 0; i < sn; i++)
        if (!isspace((unsigned char)sub[i])) braces++;
    if (braces > 1) r[k++] = '{';
    for (size_t i = 0; i < sn; i++)
        if (!isspace((unsigned char)sub[i])) r[k++] = fold ? (char)tolower((unsigned char)sub[i]) : sub[i];
    if (braces > 1) r[k++] = '}';
    r[k] = 0;
    return r;
}

/* ------------------------------------------------------------------------ */
/* Symbols, constants, undefined functions                                  */

mq_node *reward_mqp_make_sym(P *p, const char *name)
{
    mq_node *n = reward_mq_new(p->a, MQ_SYM, 0);
    if (!n) FAIL(p);
    n->name = name;
    return n;
}

mq_node *reward_mqp_make_const(P *p, const char *name)
{
    mq_node *n = reward_mq_new(p->a, MQ_CONST, 0);
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

/* At '^' followed by an integer exponent (^2, ^{2}, ^-1, ^{-1}): only
 * these make f^n(x) a power of a function, so the exponent is never a
 * large expression parsed twice. */
static int int_exponent_at(const P *p)
{
    size_t i = p->i;
    if (ch_at(p, 0) != '^') return 0;
    i++;
    int braced = i < p->n && p->s[i] == '{';
    i += (size_t)braced;
    if (i < p->n && p->s[i] == '-') i++;
    size_t d = i;
    while (i < p->n && isdigit((unsigned char)p->s[i])) i++;
    if (i == d || i - d > 3) return 0;
    return !braced || (i < p->n && p->s[i] == '}');
}

/* Is the "(...)" at p->i free of nested parentheses? Only then can all its
 * arguments be simple (symbols, numbers, powers of them), so only then is
 * f(x) tried as a function: trying every "a(" of a(b(c(d(...)))) both as a
 * function and as a product took time exponential in the nesting. */
static int flat_parens_at(const P *p)
{
    for (size_t i = p->i + 1; i < p->n; i++) {
        if (p->s[i] == ')') return 1;
        if (p->s[i] == '(') return 0;
    }
    return 0;
}

/* A letter: a variable (lower-cased: Math-Verify reads X and x as one
 * symbol) or, before simple arguments, an undefined function whose name
 * keeps its case (Math-Verify: P(x) and p(x) differ). */
mq_node *reward_mqp_parse_letter(P *p)
{
    const char *base = p->s + p->i;
    p->i++;
    const char *name, *fname;
    size_t save = p->i;
    reward_mqp_ws(p);
    if (ch(p) == '_') {
        p->i++;
        const char *sub;
        size_t sn;
        if (!reward_mqp_subscript_text(p, &sub, &sn)) FAIL(p);
        name = reward_mqp_sub_name(p, base, 1, sub, sn, 1);
        fname = reward_mqp_sub_name(p, base, 1, sub, sn, 0);
    } else {
        p->i = save;
        char c = (char)tolower((unsigned char)*base);
        if (*base == 'e') return reward_mqp_make_const(p, "e");
        if (*base == 'i') return reward_mqp_make_const(p, "i");
        name = reward_mq_strndup(p->a, &c, 1);
        fname = reward_mq_strndup(p->a, base, 1);
    }
    if (!name || !fname) FAIL(p);
    /* f(x): an undefined function when the arguments are simple; f^{2}(x)
     * and f^{-1}(x) are f(x)^2 and f(x)^{-1} (latex2sympy) */
    save = p->i;
    reward_mqp_ws(p);
    P q = *p;
    mq_node *pw = NULL;
    if (int_exponent_at(&q)) {
        q.i++;
        pw = reward_mqp_parse_exponent(&q);
        if (!pw) {
            if (q.a->failed) FAIL(p);
            q.i = q.n; /* not a function power after all */
        }
        reward_mqp_ws(&q);
    }
    if (ch(&q) == '(' && flat_parens_at(&q)) {
        q.i++;
        nvec g = {0};
        if (!reward_mqp_parse_groups(&q, &g) && reward_mqp_eat(&q, ')') && g.n == 1 && g.v[0]->nk >= 1) {
            mq_node *grp = g.v[0];
            int ok = 1;
            for (int k = 0; k < grp->nk; k++)
                if (!simple_arg(grp->kids[k])) ok = 0;
            if (ok) {
                mq_node *n = reward_mq_new(p->a, MQ_APPLY, grp->nk);
                if (!n) FAIL(p);
                n->name = fname;
                for (int k = 0; k < grp->nk; k++) n->kids[k] = grp->kids[k];
                p->i = q.i;
                if (!pw) return n;
                n = reward_mq_bin(p->a, MQ_POW, n, pw);
                if (!n) FAIL(p);
                return n;
            }
        }
        if (q.a->failed) FAIL(p);
    }
    p->i = save;
    return reward_mqp_make_sym(p, name);
}

