/*
 * Recursive-descent parser for normalised LaTeX (and plain) answers into
 * mq_node trees. It follows latex2sympy2_extended's reading of answers
 * where that matters for Math-Verify agreement:
 *   - implicit multiplication binds tighter than '/' ("2/3x" = 2/(3x)),
 *     '^' is left-associative, "2\frac{1}{2}" is the mixed number 5/2;
 *   - single letters are separate symbols ("ab" = a*b), variable names
 *     lower-cased (X = x), "e" is Euler's number, "f(x)" with a simple
 *     argument is an undefined function whose name keeps its case
 *     (P(x) != p(x), as in Math-Verify) and "x(x+1)" a product;
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
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "base/base.h"
#include "reward/rules/mparse_int.h"

/* ------------------------------------------------------------------------ */
/* Nodes                                                                    */

mq_node *reward_mq_new(mq_arena *a, mq_kind k, int nk)
{
    mq_node *n = reward_mq_alloc(a, sizeof *n);
    if (!n) return NULL;
    n->kind = k;
    n->nk = nk;
    if (nk > 0) {
        n->kids = reward_mq_alloc(a, sizeof(mq_node *) * (size_t)nk);
        if (!n->kids) return NULL;
    }
    return n;
}

mq_node *reward_mq_num_i64(mq_arena *a, int64_t v)
{
    mq_node *n = reward_mq_new(a, MQ_NUM, 0);
    if (!n || reward_mq_rat_from_i64(a, &n->q, v, 1)) return NULL;
    return n;
}

mq_node *reward_mq_bin(mq_arena *a, mq_kind k, mq_node *x, mq_node *y)
{
    if (!x || !y) return NULL;
    mq_node *n = reward_mq_new(a, k, 2);
    if (!n) return NULL;
    n->kids[0] = x;
    n->kids[1] = y;
    return n;
}

mq_node *reward_mq_un(mq_arena *a, mq_kind k, mq_node *x)
{
    if (!x) return NULL;
    mq_node *n = reward_mq_new(a, k, 1);
    if (!n) return NULL;
    n->kids[0] = x;
    return n;
}

static const char *const k_fn_names[MQ_FN_COUNT] = {
    "sqrt", "root", "sin", "cos", "tan", "sec", "csc", "cot", "asin", "acos", "atan", "asec",
    "acsc", "acot", "sinh", "cosh", "tanh", "ln", "log", "exp", "abs", "floor", "ceil",
    "factorial", "binomial", "gcd", "lcm", "max", "min", "det",
};

const char *reward_mq_fn_name(mq_fn f) { return (unsigned)f < MQ_FN_COUNT ? k_fn_names[f] : "?"; }
/* ------------------------------------------------------------------------ */
/* Expression levels                                                        */

mq_node *reward_mqp_parse_primary(P *p)
{
    if (!reward_mqp_enter(p)) FAIL(p);
    reward_mqp_ws(p);
    int c = ch(p);
    mq_node *r;
    if (isdigit(c) || (c == '.' && isdigit(ch_at(p, 1)))) r = reward_mqp_parse_number(p);
    else if (isalpha(c)) r = reward_mqp_parse_letter(p);
    else if (c == '(' || c == '[') r = reward_mqp_parse_paren(p, c);
    else if (c == '{') r = reward_mqp_parse_brace(p, 0);
    else if (c == '|') {
        p->i++;
        p->abs_depth++;
        mq_node *x = reward_mqp_parse_additive(p);
        p->abs_depth--;
        if (!x || !reward_mqp_eat(p, '|')) FAIL(p);
        r = reward_mq_un(p->a, MQ_FUNC, x);
        if (r) r->fn = MQ_FN_ABS;
    } else if (c == '\\') r = reward_mqp_parse_command(p);
    else r = NULL;
    p->depth--;
    if (!r) FAIL(p);
    return r;
}

/* degree sign: ^\circ, ^{\circ} */
static int eat_degree(P *p)
{
    size_t save = p->i;
    reward_mqp_ws(p);
    if (ch(p) != '^') goto no;
    p->i++;
    reward_mqp_ws(p);
    if (reward_mqp_is_cmd(p, "circ")) {
        p->i += 5;
        return 1;
    }
    if (ch(p) == '{') {
        p->i++;
        reward_mqp_ws(p);
        if (reward_mqp_is_cmd(p, "circ")) {
            p->i += 5;
            if (reward_mqp_eat(p, '}')) return 1;
        }
    }
no:
    p->i = save;
    return 0;
}

/* Operator chains are built by loops, not recursion (x^2^2, 5!!, a/b/c),
 * yet each link deepens the tree that every later pass walks recursively.
 * So each link counts as one level against MQ_MAX_DEPTH (reward_mqp_enter)
 * and the caller gives the levels back with p->depth -= links when the
 * chain ends: a chain of thousands of operators does not parse instead of
 * overflowing the stack in has_pm, eval or the comparison. */
static int chain_link(P *p, int *links)
{
    if (!reward_mqp_enter(p)) return 0;
    (*links)++;
    return 1;
}

static mq_node *parse_postfix(P *p)
{
    mq_node *x = reward_mqp_parse_primary(p);
    if (!x) FAIL(p);
    int links = 0;
    for (;;) {
        size_t save = p->i;
        reward_mqp_ws(p);
        int c = ch(p);
        if ((c == '!' && ch_at(p, 1) != '=') || c == '%' || (c == '\\' && ch_at(p, 1) == '%'))
            if (!chain_link(p, &links)) FAIL(p);
        if (c == '!' && ch_at(p, 1) != '=') {
            p->i++;
            mq_node *f = reward_mq_un(p->a, MQ_FUNC, x);
            if (!f) FAIL(p);
            f->fn = MQ_FN_FACT;
            x = f;
        } else if (c == '%' || (c == '\\' && ch_at(p, 1) == '%')) {
            p->i += c == '%' ? 1 : 2;
            x = reward_mq_un(p->a, MQ_PCT, x);
            if (!x) FAIL(p);
        } else if (c == '\'') {
            p->i++;
        } else if (c == '_' && x->kind != MQ_SYM) {
            /* base of a numeral (204_5): dropped like latex2sympy does */
            p->i++;
            const char *t;
            size_t tn;
            if (!reward_mqp_subscript_text(p, &t, &tn)) FAIL(p);
        } else if (reward_mqp_is_cmd(p, "circ") || reward_mqp_is_cmd(p, "degree")) {
            p->i += reward_mqp_is_cmd(p, "circ") ? 5 : 7;
        } else {
            p->i = save;
            p->depth -= links;
            return x;
        }
    }
}

mq_node *reward_mqp_parse_power(P *p)
{
    if (!reward_mqp_enter(p)) FAIL(p);
    mq_node *b = parse_postfix(p);
    int links = 0;
    while (b) {
        if (eat_degree(p)) continue;
        size_t save = p->i;
        reward_mqp_ws(p);
        if (ch(p) == '^' || (p->cfg->plain_expr && ch(p) == '*' && ch_at(p, 1) == '*')) {
            if (!chain_link(p, &links)) FAIL(p);
            p->i += ch(p) == '^' ? 1 : 2;
            mq_node *e = reward_mqp_parse_exponent(p);
            b = reward_mq_bin(p->a, MQ_POW, b, e);
            /* postfix after a power: x^2! is rare, % is not */
            size_t s2 = p->i;
            reward_mqp_ws(p);
            if (b && (ch(p) == '%' || (ch(p) == '\\' && ch_at(p, 1) == '%'))) {
                p->i += ch(p) == '%' ? 1 : 2;
                b = reward_mq_un(p->a, MQ_PCT, b);
            } else {
                p->i = s2;
            }
            continue;
        }
        p->i = save;
        break;
    }
    p->depth -= 1 + links;
    if (!b) FAIL(p);
    return b;
}

/* Can the text at i start another factor of an implicit product? */
static int starts_factor(P *p, int stop_at_fn)
{
    reward_mqp_ws(p);
    int c = ch(p);
    if (isdigit(c) || isalpha(c) || c == '(') return 1;
    if (c == '.' && isdigit(ch_at(p, 1))) return 1;
    if (c == '{') return 1;
    if (c == '|') return p->abs_depth == 0;
    if (c != '\\') return 0;
    if (ch_at(p, 1) == '{') return 1;
    size_t l = reward_mqp_cmd_len_at(p, p->i);
    if (!l) return 0;
    if (stop_at_fn && reward_mqp_is_fn_cmd_here(p)) return 0;
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
    if (reward_mqp_is_cmd(p, "vert")) return p->abs_depth == 0;
    return 1;
}

mq_node *reward_mqp_parse_implicit(P *p, int stop_at_fn)
{
    if (!reward_mqp_enter(p)) FAIL(p);
    nvec items = {0};
    mq_node *f = reward_mqp_parse_power(p);
    if (!f || reward_mqp_nv_push(p->a, &items, f)) FAIL(p);
    while (starts_factor(p, stop_at_fn)) {
        mq_node *g = reward_mqp_parse_power(p);
        if (!g) FAIL(p);
        mq_node *last = items.v[items.n - 1];
        /* mixed number: 2\frac{1}{2} = 5/2 (integers only) */
        if (items.n == 1 && reward_mqp_is_int_lit(last) && g->kind == MQ_DIV && (g->flags & 32) &&
            reward_mqp_is_int_lit(g->kids[0]) && reward_mqp_is_int_lit(g->kids[1])) {
            items.v[0] = reward_mq_bin(p->a, MQ_ADD, last, g);
            if (!items.v[0]) FAIL(p);
            continue;
        }
        if (reward_mqp_nv_push(p->a, &items, g)) FAIL(p);
    }
    p->depth--;
    if (items.n == 1) return items.v[0];
    return reward_mqp_from_vec(p->a, MQ_MUL, &items);
}

static mq_node *parse_unary(P *p)
{
    if (!reward_mqp_enter(p)) FAIL(p);
    reward_mqp_ws(p);
    mq_node *r;
    int c = ch(p);
    if (c == '-') {
        p->i++;
        r = reward_mq_un(p->a, MQ_NEG, parse_unary(p));
    } else if (c == '+') {
        p->i++;
        r = parse_unary(p);
    } else if (reward_mqp_is_cmd(p, "pm") || reward_mqp_is_cmd(p, "mp")) {
        int mp = reward_mqp_is_cmd(p, "mp");
        p->i += 3;
        mq_node *x = parse_unary(p);
        r = reward_mq_un(p->a, MQ_PM, mp ? reward_mq_un(p->a, MQ_NEG, x) : x);
    } else {
        r = reward_mqp_parse_implicit(p, 0);
    }
    p->depth--;
    if (!r) FAIL(p);
    return r;
}

static mq_node *parse_term(P *p)
{
    mq_node *l = parse_unary(p);
    int links = 0;
    while (l) {
        reward_mqp_ws(p);
        int c = ch(p);
        if (c == '*' && !(p->cfg->plain_expr && ch_at(p, 1) == '*')) {
            p->i++;
            l = reward_mq_bin(p->a, MQ_MUL, l, parse_unary(p));
        } else if (reward_mqp_eat_cmd(p, "cdot") || reward_mqp_eat_cmd(p, "times") || reward_mqp_eat_cmd(p, "ast")) {
            l = reward_mq_bin(p->a, MQ_MUL, l, parse_unary(p));
        } else if (c == '/') {
            p->i++;
            l = reward_mq_bin(p->a, MQ_DIV, l, parse_unary(p));
        } else if (reward_mqp_eat_cmd(p, "div")) {
            l = reward_mq_bin(p->a, MQ_DIV, l, parse_unary(p));
        } else if (c == ':' && ch_at(p, 1) != '=') {
            p->i++;
            l = reward_mq_bin(p->a, MQ_DIV, l, parse_unary(p));
        } else {
            break;
        }
        if (!chain_link(p, &links)) FAIL(p);
    }
    p->depth -= links;
    if (!l) FAIL(p);
    return l;
}

mq_node *reward_mqp_parse_additive(P *p)
{
    if (!reward_mqp_enter(p)) FAIL(p);
    nvec terms = {0};
    int links = 0;
    mq_node *t = parse_term(p);
    if (!t || reward_mqp_nv_push(p->a, &terms, t)) FAIL(p);
    for (;;) {
        reward_mqp_ws(p);
        int c = ch(p);
        if (c == '+') {
            p->i++;
            if (reward_mqp_nv_push(p->a, &terms, parse_term(p))) FAIL(p);
        } else if (c == '-') {
            p->i++;
            if (reward_mqp_nv_push(p->a, &terms, reward_mq_un(p->a, MQ_NEG, parse_term(p)))) FAIL(p);
        } else if (reward_mqp_is_cmd(p, "pm") || reward_mqp_is_cmd(p, "mp")) {
            if (!chain_link(p, &links)) FAIL(p);
            int mp = reward_mqp_is_cmd(p, "mp");
            p->i += 3;
            mq_node *r = parse_term(p);
            mq_node *l = terms.n == 1 ? terms.v[0] : reward_mqp_from_vec(p->a, MQ_ADD, &terms);
            mq_node *pm = reward_mq_bin(p->a, MQ_PM, l, mp ? reward_mq_un(p->a, MQ_NEG, r) : r);
            terms.n = 0;
            if (reward_mqp_nv_push(p->a, &terms, pm)) FAIL(p);
        } else {
            break;
        }
    }
    p->depth -= 1 + links;
    if (terms.n == 1) return terms.v[0];
    return reward_mqp_from_vec(p->a, MQ_ADD, &terms);
}

static mq_node *tuple_to_set(P *p, mq_node *x)
{
    if (x && x->kind == MQ_TUPLE) {
        mq_node *s = reward_mq_new(p->a, MQ_SET, x->nk);
        if (!s) FAIL(p);
        for (int i = 0; i < x->nk; i++) s->kids[i] = x->kids[i];
        return s;
    }
    return x;
}

static mq_node *parse_setexpr(P *p)
{
    mq_node *l = reward_mqp_parse_additive(p);
    int links = 0;
    while (l) {
        mq_kind k;
        reward_mqp_ws(p);
        if (reward_mqp_eat_cmd(p, "cup")) k = MQ_UNION;
        else if (reward_mqp_eat_cmd(p, "cap")) k = MQ_INTER;
        else if (reward_mqp_eat_cmd(p, "setminus") || reward_mqp_eat_cmd(p, "backslash")) k = MQ_SETMINUS;
        else break;
        mq_node *r = reward_mqp_parse_additive(p);
        l = reward_mq_bin(p->a, k, tuple_to_set(p, l), tuple_to_set(p, r));
        if (!chain_link(p, &links)) FAIL(p);
    }
    p->depth -= links;
    if (!l) FAIL(p);
    return l;
}

/* relation operator at i: returns 1 and sets *rel / *approx / *in */
static int relop(P *p, mq_rel *rel, int *approx)
{
    reward_mqp_ws(p);
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
            if (reward_mqp_is_cmd(p, cmds[k].cmd)) {
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
    mq_node *n = reward_mq_bin(p->a, MQ_REL, l, x);
    if (!n) FAIL(p);
    n->rel = r;
    return n;
}

static mq_node *parse_relation(P *p)
{
    if (!reward_mqp_enter(p)) FAIL(p);
    mq_node *lhs = parse_setexpr(p);
    mq_rel rel;
    int approx;
    while (lhs && relop(p, &rel, &approx)) {
        mq_node *rhs = parse_setexpr(p);
        if (!rhs) FAIL(p);
        if (approx) {
            lhs = reward_mq_only_symbols(lhs) ? rhs : lhs;
            continue;
        }
        if (lhs->kind == MQ_REL) {
            mq_node *a = reward_mq_new(p->a, MQ_AND, 2);
            if (!a) FAIL(p);
            a->kids[0] = lhs;
            a->kids[1] = make_rel(p, lhs->kids[1], rel, rhs);
            if (!a->kids[1]) FAIL(p);
            lhs = a;
        } else if (lhs->kind == MQ_AND) {
            mq_node *a = reward_mq_new(p->a, MQ_AND, lhs->nk + 1);
            if (!a) FAIL(p);
            for (int i = 0; i < lhs->nk; i++) a->kids[i] = lhs->kids[i];
            a->kids[lhs->nk] = make_rel(p, lhs->kids[lhs->nk - 1]->kids[1], rel, rhs);
            if (!a->kids[lhs->nk]) FAIL(p);
            lhs = a;
        } else {
            /* "(x, y) = ..." : a tuple of symbols, not an interval */
            if (lhs->kind == MQ_INTERVAL && (lhs->flags & MQ_F_PAREN2) && reward_mq_only_symbols(lhs))
                lhs->kind = MQ_TUPLE, lhs->flags = 0;
            lhs = make_rel(p, lhs, rel, rhs);
        }
    }
    p->depth--;
    if (!lhs) FAIL(p);
    return lhs;
}

mq_node *reward_mqp_parse_element(P *p) { return parse_relation(p); }

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
                    out[k++] = reward_mq_bin(a, MQ_ADD, lv[i], rv[j]);
                    out[k++] = reward_mq_bin(a, MQ_ADD, lv[i], reward_mq_un(a, MQ_NEG, rv[j]));
                } else {
                    out[k++] = reward_mq_un(a, MQ_NEG, rv[j]);
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
        mq_node *c = reward_mq_new(a, n->kind, n->nk);
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
int reward_mqp_parse_groups(P *p, nvec *groups)
{
    if (!reward_mqp_enter(p)) return -1;
    nvec cur = {0};
    for (;;) {
        mq_node *e = reward_mqp_parse_element(p);
        if (!e) return -1;
        mq_node *vs[MAX_VARIANTS];
        int nv = variants(p->a, e, vs);
        if (nv < 0) {
            p->fail = 1;
            return -1;
        }
        for (int k = 0; k < nv; k++)
            if (reward_mqp_nv_push(p->a, &cur, vs[k])) return -1;
        reward_mqp_ws(p);
        if (ch(p) == ',') {
            p->i++;
            continue;
        }
        if (ch(p) == ';') {
            p->i++;
            if (reward_mqp_nv_push(p->a, groups, reward_mqp_from_vec(p->a, MQ_TUPLE, &cur))) return -1;
            cur.n = 0, cur.v = NULL, cur.cap = 0;
            continue;
        }
        break;
    }
    if (reward_mqp_nv_push(p->a, groups, reward_mqp_from_vec(p->a, MQ_TUPLE, &cur))) return -1;
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
        if (rest_plain && f->kind == MQ_REL && f->rel == MQ_EQ && reward_mq_only_symbols(f->kids[0])) {
            mq_node *s = reward_mq_new(p->a, p->cfg->ordered_lists ? MQ_TUPLE : MQ_SET, grp->nk);
            if (!s) FAIL(p);
            s->kids[0] = f->kids[1];
            for (int i = 1; i < grp->nk; i++) s->kids[i] = grp->kids[i];
            return make_rel(p, f->kids[0], MQ_EQ, s);
        }
        mq_node *s = reward_mq_new(p->a, p->cfg->ordered_lists ? MQ_TUPLE : MQ_SET, grp->nk);
        if (!s) FAIL(p);
        for (int i = 0; i < grp->nk; i++) s->kids[i] = grp->kids[i];
        return s;
    }
    int all_single = 1;
    for (int i = 0; i < g->n; i++)
        if (g->v[i]->nk != 1) all_single = 0;
    mq_node *s = reward_mq_new(p->a, MQ_SET, g->n);
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
    char *r = reward_mq_strndup(a, b.data ? b.data : "", b.len);
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
    char *digits = reward_mq_alloc(a, n + 1);
    if (!digits) return 0;
    size_t k = 0;
    for (size_t j = st; j < (fpn ? fp - 1 : n); j++)
        if (isdigit((unsigned char)s[j])) digits[k++] = s[j];
    mq_node *num = reward_mq_new(a, MQ_NUM, 0);
    if (!num || reward_mq_rat_from_decimal(a, &num->q, digits, k, fpn ? s + fp : "", fpn, 0)) return 0;
    if (fpn) num->flags |= MQ_F_FLOAT;
    *out = neg ? reward_mq_un(a, MQ_NEG, num) : num;
    return *out != NULL;
}

mq_node *reward_mq_parse(mq_arena *a, const char *s, size_t n, const mq_parse_cfg *cfg)
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
    if (reward_mqp_parse_groups(&p, &g) || p.fail) return NULL;
    reward_mqp_ws(&p);
    if (p.i != p.n) return NULL;
    return assemble(&p, &g);
}

mq_node *reward_mq_parse_with_last_eq(mq_arena *a, const char *s, size_t n, const mq_parse_cfg *cfg)
{
    mq_node *r = reward_mq_parse(a, s, n, cfg);
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
    return reward_mq_parse(a, s + last, n - last, cfg);
}
