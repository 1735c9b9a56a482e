/*
 * Parser, part 2: LaTeX commands and brackets: \text words, builtin
 * functions with powers, inverses and log bases, parentheses/brackets as
 * groups, tuples and intervals, braces as groups and sets, matrices,
 * \sum/\prod, and the dispatch of every other command (unknown commands
 * are syntax errors). See mparse.c for the grammar as a whole.
 */
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "base/base.h"
#include "reward/rules/mparse_int.h"

static const char *const k_greek[] = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta",
    "vartheta", "iota", "kappa", "lambda", "mu", "nu", "xi", "omicron", "rho", "varrho", "sigma",
    "varsigma", "tau", "upsilon", "phi", "varphi", "chi", "psi", "omega", "Gamma", "Delta",
    "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega", "ell", "hbar",
};

/* \text{...} content: a number, or a word symbol (spaces and surrounding
 * parentheses removed, lower-cased) like Math-Verify's \text handling. */
mq_node *reward_mqp_text_node(P *p, const char *s, size_t n)
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
        mq_node *num = reward_mqp_parse_number(&q);
        if (!num || q.i != q.n) FAIL(p);
        return k ? reward_mq_un(p->a, MQ_NEG, num) : num;
    }
    char *name = reward_mq_alloc(p->a, n + 1);
    if (!name) FAIL(p);
    size_t o = 0;
    for (size_t j = 0; j < n; j++)
        if (!isspace((unsigned char)s[j])) name[o++] = (char)tolower((unsigned char)s[j]);
    name[o] = 0;
    mq_node *sym = reward_mqp_make_sym(p, name);
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
    size_t l = reward_mqp_cmd_len_at(p, p->i);
    for (int k = 0; l && k < N_FUNCS; k++)
        if (strlen(k_funcs[k].cmd) == l && memcmp(p->s + p->i + 1, k_funcs[k].cmd, l) == 0) return k;
    return -1;
}

int reward_mqp_is_fn_cmd_here(P *p)
{
    reward_mqp_ws(p);
    if (func_index(p) >= 0) return 1;
    return reward_mqp_is_cmd(p, "operatorname");
}

static mq_node *make_func(P *p, mq_fn fn, nvec *args)
{
    int want = fn == MQ_FN_LOG || fn == MQ_FN_BINOM || fn == MQ_FN_ROOT ? 2 : 1;
    if (fn == MQ_FN_GCD || fn == MQ_FN_LCM || fn == MQ_FN_MAX || fn == MQ_FN_MIN) {
        if (args->n < 1) FAIL(p);
    } else if (args->n != want) {
        FAIL(p);
    }
    mq_node *n = reward_mqp_from_vec(p->a, MQ_FUNC, args);
    if (!n) FAIL(p);
    n->fn = fn;
    return n;
}

/* After the command name: [^power] [_base] argument. */
static mq_node *parse_function(P *p, mq_fn fn, mq_fn inv)
{
    mq_node *power = NULL, *base = NULL;
    for (int k = 0; k < 2; k++) {
        reward_mqp_ws(p);
        if (ch(p) == '^' && !power) {
            p->i++;
            power = reward_mqp_parse_exponent(p);
            if (!power) FAIL(p);
        } else if (ch(p) == '_' && !base) {
            p->i++;
            base = reward_mqp_parse_arg(p);
            if (!base) FAIL(p);
        }
    }
    /* sin^{-1} is arcsin */
    if (power && inv != MQ_FN_COUNT && power->kind == MQ_NEG && reward_mqp_is_int_lit(power->kids[0]) &&
        power->kids[0]->q.num.n == 1 && power->kids[0]->q.num.d[0] == 1) {
        fn = inv;
        power = NULL;
    }
    nvec args = {0};
    reward_mqp_ws(p);
    if (ch(p) == '(') {
        p->i++;
        nvec g = {0};
        if (reward_mqp_parse_groups(p, &g) || !reward_mqp_eat(p, ')') || g.n != 1) FAIL(p);
        for (int k = 0; k < g.v[0]->nk; k++)
            if (reward_mqp_nv_push(p->a, &args, g.v[0]->kids[k])) FAIL(p);
    } else {
        mq_node *x = reward_mqp_parse_implicit(p, 1);
        if (!x || reward_mqp_nv_push(p->a, &args, x)) FAIL(p);
    }
    if (fn == MQ_FN_LOG) {
        if (!base) base = reward_mq_num_i64(p->a, 10); /* latex2sympy: \log is base 10 */
        if (reward_mqp_nv_push(p->a, &args, base)) FAIL(p);
    } else if (base) {
        FAIL(p);
    }
    mq_node *f = make_func(p, fn, &args);
    if (f && power) f = reward_mq_bin(p->a, MQ_POW, f, power);
    return f;
}

/* ------------------------------------------------------------------------ */
/* Brackets: groups, tuples, intervals, sets                                */

mq_node *reward_mqp_flatten_groups(P *p, nvec *g, mq_kind k)
{
    nvec all = {0};
    for (int i = 0; i < g->n; i++)
        for (int j = 0; j < g->v[i]->nk; j++)
            if (reward_mqp_nv_push(p->a, &all, g->v[i]->kids[j])) FAIL(p);
    return reward_mqp_from_vec(p->a, k, &all);
}

static mq_node *make_interval(P *p, mq_node *lo, mq_node *hi, int lopen, int ropen)
{
    double a, b;
    int num = reward_mqp_real_value(p, lo, &a) && reward_mqp_real_value(p, hi, &b);
    /* latex2sympy: an empty (a,b) / [a,b] is a tuple instead */
    if (num && ((lopen && ropen && b <= a) || (!lopen && !ropen && b < a))) {
        mq_node *t = reward_mq_bin(p->a, MQ_TUPLE, lo, hi);
        if (!t) FAIL(p);
        return t;
    }
    mq_node *n = reward_mq_bin(p->a, MQ_INTERVAL, lo, hi);
    if (!n) FAIL(p);
    if (lopen) n->flags |= MQ_F_LOPEN;
    if (ropen) n->flags |= MQ_F_ROPEN;
    if (lopen && ropen) n->flags |= MQ_F_PAREN2;
    return n;
}

mq_node *reward_mqp_parse_paren(P *p, int open)
{
    p->i++;
    nvec g = {0};
    if (reward_mqp_parse_groups(p, &g)) FAIL(p);
    reward_mqp_ws(p);
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
    return reward_mqp_flatten_groups(p, &g, MQ_TUPLE);
}

/* After the opening "{" or "\{" / "\lbrace": a group or a set. */
mq_node *reward_mqp_parse_brace_body(P *p, int escaped)
{
    reward_mqp_ws(p);
    if (escaped && ((ch(p) == '\\' && ch_at(p, 1) == '}') || reward_mqp_is_cmd(p, "rbrace"))) {
        p->i += ch_at(p, 1) == '}' ? 2 : 7;
        mq_node *e = reward_mq_new(p->a, MQ_SPECIAL, 0);
        if (!e) FAIL(p);
        e->name = "empty";
        return e;
    }
    nvec g = {0};
    if (reward_mqp_parse_groups(p, &g)) FAIL(p);
    reward_mqp_ws(p);
    if (escaped) {
        if (ch(p) == '\\' && ch_at(p, 1) == '}') p->i += 2;
        else if (reward_mqp_is_cmd(p, "rbrace")) p->i += 7;
        else FAIL(p);
    } else {
        if (ch(p) != '}') FAIL(p);
        p->i++;
    }
    int total = 0;
    for (int i = 0; i < g.n; i++) total += g.v[i]->nk;
    if (!escaped && total == 1) return g.v[0]->kids[0];
    if (total < 1) FAIL(p);
    return reward_mqp_flatten_groups(p, &g, MQ_SET);
}

mq_node *reward_mqp_parse_brace(P *p, int escaped)
{
    p->i += escaped ? 2 : 1;
    return reward_mqp_parse_brace_body(p, escaped);
}

/* \begin{pmatrix} a & b \\ c & d \end{pmatrix} (also bmatrix, array...) */
static mq_node *parse_matrix(P *p, const char *env, size_t envn)
{
    if (envn == 5 && memcmp(env, "array", 5) == 0) {
        const char *spec;
        size_t sn;
        if (!reward_mqp_raw_group(p, &spec, &sn)) FAIL(p);
    }
    int saved = p->in_matrix;
    p->in_matrix = 1;
    nvec cells = {0};
    int rows = 0, cols = -1, cur = 0;
    for (;;) {
        reward_mqp_ws(p);
        if (reward_mqp_is_cmd(p, "end")) break;
        mq_node *c = reward_mqp_parse_additive(p);
        if (!c || reward_mqp_nv_push(p->a, &cells, c)) FAIL(p);
        cur++;
        reward_mqp_ws(p);
        if (ch(p) == '&') {
            p->i++;
            continue;
        }
        int end_row = ch(p) == '\\' && ch_at(p, 1) == '\\';
        if (end_row) p->i += 2;
        else if (!reward_mqp_is_cmd(p, "end")) FAIL(p);
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
    if (!reward_mqp_raw_group(p, &e2, &e2n) || e2n != envn || memcmp(e2, env, envn) != 0) FAIL(p);
    if (rows == 0 || cols <= 0) FAIL(p);
    mq_node *m = reward_mqp_from_vec(p->a, MQ_MATRIX, &cells);
    if (!m) FAIL(p);
    m->rows = rows;
    m->cols = cols;
    if (envn == 7 && (memcmp(env, "vmatrix", 7) == 0 || memcmp(env, "Vmatrix", 7) == 0)) {
        mq_node *d = reward_mq_un(p->a, MQ_FUNC, m);
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
        reward_mqp_ws(p);
        if (ch(p) == '_' && !lo) {
            p->i++;
            reward_mqp_ws(p);
            if (ch(p) != '{') FAIL(p);
            p->i++;
            mq_node *r = reward_mqp_parse_element(p);
            if (!r || !reward_mqp_eat(p, '}')) FAIL(p);
            if (r->kind != MQ_REL || r->rel != MQ_EQ || r->kids[0]->kind != MQ_SYM) FAIL(p);
            var = r->kids[0];
            lo = r->kids[1];
        } else if (ch(p) == '^' && !hi) {
            p->i++;
            hi = reward_mqp_parse_exponent(p);
            if (!hi) FAIL(p);
        }
    }
    if (!var || !hi) FAIL(p);
    mq_node *body = reward_mqp_parse_implicit(p, 0);
    if (!body) FAIL(p);
    mq_node *n = reward_mq_new(p->a, MQ_BIGOP, 4);
    if (!n) FAIL(p);
    n->name = name;
    n->kids[0] = var, n->kids[1] = lo, n->kids[2] = hi, n->kids[3] = body;
    return n;
}

mq_node *reward_mqp_parse_command(P *p)
{
    size_t l = reward_mqp_cmd_len_at(p, p->i);
    if (l == 0) {
        /* \{ set, \| norm (unsupported) */
        if (ch_at(p, 1) == '{') return reward_mqp_parse_brace(p, 1);
        FAIL(p);
    }
    const char *c = p->s + p->i + 1;
#define IS(name) (l == sizeof(name) - 1 && memcmp(c, name, l) == 0)
    int fi = func_index(p);
    p->i += 1 + l;
    if (fi >= 0) return parse_function(p, k_funcs[fi].fn, k_funcs[fi].inv);
    if (IS("frac") || IS("dfrac") || IS("tfrac") || IS("cfrac")) {
        mq_node *a = reward_mqp_parse_arg(p);
        mq_node *b = a ? reward_mqp_parse_arg(p) : NULL;
        mq_node *d = reward_mq_bin(p->a, MQ_DIV, a, b);
        if (!d) FAIL(p);
        d->flags |= 32; /* written as \frac: for mixed numbers */
        return d;
    }
    if (IS("sqrt")) {
        reward_mqp_ws(p);
        mq_node *idx = NULL;
        if (ch(p) == '[') {
            p->i++;
            idx = reward_mqp_parse_additive(p);
            if (!idx || !reward_mqp_eat(p, ']')) FAIL(p);
        }
        mq_node *x = reward_mqp_parse_arg(p);
        if (!x) FAIL(p);
        if (!idx) {
            mq_node *f = reward_mq_un(p->a, MQ_FUNC, x);
            if (!f) FAIL(p);
            f->fn = MQ_FN_SQRT;
            return f;
        }
        mq_node *f = reward_mq_bin(p->a, MQ_FUNC, x, idx);
        if (!f) FAIL(p);
        f->fn = MQ_FN_ROOT;
        return f;
    }
    if (IS("binom") || IS("dbinom") || IS("tbinom")) {
        mq_node *a = reward_mqp_parse_arg(p);
        mq_node *b = a ? reward_mqp_parse_arg(p) : NULL;
        mq_node *f = reward_mq_bin(p->a, MQ_FUNC, a, b);
        if (!f) FAIL(p);
        f->fn = MQ_FN_BINOM;
        return f;
    }
    if (IS("pi")) return reward_mqp_make_const(p, "pi");
    if (IS("infty") || IS("infin")) return reward_mqp_make_const(p, "inf");
    if (IS("imath")) return reward_mqp_make_const(p, "i");
    for (size_t k = 0; k < sizeof k_greek / sizeof k_greek[0]; k++)
        if (strlen(k_greek[k]) == l && memcmp(c, k_greek[k], l) == 0) {
            const char *name = reward_mqp_lower_dup(p->a, c, l);
            reward_mqp_ws(p);
            if (ch(p) == '_') {
                p->i++;
                const char *sub;
                size_t sn;
                if (!reward_mqp_subscript_text(p, &sub, &sn)) FAIL(p);
                name = reward_mqp_sub_name(p, c, l, sub, sn, 1);
            }
            if (!name) FAIL(p);
            return reward_mqp_make_sym(p, name);
        }
    if (IS("text") || IS("mbox") || IS("textrm") || IS("textbf") || IS("textit") || IS("mathrm") ||
        IS("mathit") || IS("mathbf") || IS("textnormal") || IS("textsf") || IS("texttt")) {
        const char *t;
        size_t tn;
        if (!reward_mqp_raw_group(p, &t, &tn)) FAIL(p);
        return reward_mqp_text_node(p, t, tn);
    }
    if (IS("operatorname")) {
        const char *t;
        size_t tn;
        if (!reward_mqp_raw_group(p, &t, &tn)) FAIL(p);
        for (int k = 0; k < N_FUNCS; k++)
            if (strlen(k_funcs[k].cmd) == tn && memcmp(t, k_funcs[k].cmd, tn) == 0)
                return parse_function(p, k_funcs[k].fn, k_funcs[k].inv);
        reward_mqp_ws(p);
        if (ch(p) == '(') { /* a function: its name keeps its case, as for f(x) */
            p->i++;
            nvec g = {0};
            if (reward_mqp_parse_groups(p, &g) || !reward_mqp_eat(p, ')') || g.n != 1) FAIL(p);
            mq_node *n = reward_mq_new(p->a, MQ_APPLY, g.v[0]->nk);
            if (!n) FAIL(p);
            n->name = reward_mq_strndup(p->a, t, tn);
            if (!n->name) FAIL(p);
            for (int k = 0; k < g.v[0]->nk; k++) n->kids[k] = g.v[0]->kids[k];
            return n;
        }
        const char *name = reward_mqp_lower_dup(p->a, t, tn);
        if (!name) FAIL(p);
        return reward_mqp_make_sym(p, name);
    }
    if (IS("mathbb") || IS("Bbb")) {
        const char *t;
        size_t tn;
        if (!reward_mqp_raw_group(p, &t, &tn) || tn != 1) FAIL(p);
        mq_node *n = reward_mq_new(p->a, MQ_SPECIAL, 0);
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
        mq_node *n = reward_mq_new(p->a, MQ_SPECIAL, 0);
        if (!n) FAIL(p);
        n->name = "empty";
        return n;
    }
    if (IS("begin")) {
        const char *env;
        size_t envn;
        if (!reward_mqp_raw_group(p, &env, &envn)) FAIL(p);
        static const char *const mats[] = {"pmatrix", "bmatrix", "Bmatrix", "vmatrix", "Vmatrix",
                                           "matrix", "smallmatrix", "array"};
        for (size_t k = 0; k < sizeof mats / sizeof mats[0]; k++)
            if (strlen(mats[k]) == envn && memcmp(env, mats[k], envn) == 0) return parse_matrix(p, env, envn);
        FAIL(p);
    }
    if (IS("lfloor") || IS("lceil")) {
        int fl = IS("lfloor");
        mq_node *x = reward_mqp_parse_additive(p);
        if (!x || !reward_mqp_eat_cmd(p, fl ? "rfloor" : "rceil")) FAIL(p);
        mq_node *f = reward_mq_un(p->a, MQ_FUNC, x);
        if (!f) FAIL(p);
        f->fn = fl ? MQ_FN_FLOOR : MQ_FN_CEIL;
        return f;
    }
    if (IS("lvert") || IS("vert")) {
        p->abs_depth++;
        mq_node *x = reward_mqp_parse_additive(p);
        p->abs_depth--;
        if (!x || !(reward_mqp_eat_cmd(p, "rvert") || reward_mqp_eat_cmd(p, "vert") || reward_mqp_eat(p, '|'))) FAIL(p);
        mq_node *f = reward_mq_un(p->a, MQ_FUNC, x);
        if (!f) FAIL(p);
        f->fn = MQ_FN_ABS;
        return f;
    }
    if (IS("lbrace")) return reward_mqp_parse_brace_body(p, 1);
    if (IS("langle")) {
        nvec g = {0};
        if (reward_mqp_parse_groups(p, &g) || !reward_mqp_eat_cmd(p, "rangle")) FAIL(p);
        return reward_mqp_flatten_groups(p, &g, MQ_TUPLE);
    }
    if (IS("overline") || IS("bar") || IS("vec") || IS("hat") || IS("widehat") || IS("tilde") ||
        IS("widetilde") || IS("dot") || IS("ddot") || IS("mathcal") || IS("mathscr") ||
        IS("mathfrak") || IS("boldsymbol") || IS("bm") || IS("overrightarrow") ||
        IS("overleftrightarrow") || IS("underline")) {
        const char *t;
        size_t tn;
        reward_mqp_ws(p);
        if (ch(p) == '{') {
            if (!reward_mqp_raw_group(p, &t, &tn)) FAIL(p);
        } else if (isalpha(ch(p))) {
            t = p->s + p->i++;
            tn = 1;
        } else {
            FAIL(p);
        }
        char *name = reward_mq_alloc(p->a, l + tn + 3);
        if (!name) FAIL(p);
        size_t o = 0;
        memcpy(name, c, l);
        o = l;
        name[o++] = '{';
        for (size_t k = 0; k < tn; k++)
            if (!isspace((unsigned char)t[k])) name[o++] = (char)tolower((unsigned char)t[k]);
        name[o++] = '}';
        name[o] = 0;
        return reward_mqp_make_sym(p, name);
    }
    if (IS("angle") || IS("triangle") || IS("measuredangle")) return reward_mqp_make_sym(p, reward_mqp_lower_dup(p->a, c, l));
    if (IS("sum")) return parse_bigop(p, "sum");
    if (IS("prod")) return parse_bigop(p, "prod");
    if (IS("boxed") || IS("fbox")) return reward_mqp_parse_arg(p);
#undef IS
    FAIL(p);
}

