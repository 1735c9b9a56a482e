/*
 * Answer comparison: Math-Verify's sympy_expr_eq decision procedure on our
 * trees, without SymPy.
 *
 *   assignments   "x = 3" vs "3": gold-first unwrapping, chains truncated
 *   relations     same/flipped direction with equal (lhs - rhs); else the
 *                 two relations must be proportional (a constant ratio,
 *                 positive for inequalities) at random points: this stands
 *                 in for SymPy's solve() ("2x+4y-3=0" == "y=-x/2+3/4")
 *   sets          intervals endpoint-wise, real-line sets by membership at
 *                 all endpoints (+-delta) and probe points, finite sets by
 *                 matching, tuples in order, open (a,b) vs a 2-element list
 *   symbols       \text{odd} == "odd" (a product of letters), e == E
 *   numbers       decimals: round both to float_rounding digits; integers
 *                 and integer percentages: exact (9% == 9); else exact
 *                 rationals, or complex doubles with relative tolerance
 *   expressions   equal values at 4 pseudo-random points of the variables
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "reward/rules/rules_int.h"

#define NPTS 4

typedef struct {
    mq_arena *a;
    const mq_cmp_cfg *cfg;
} C;

static int eq(C *c, const mq_node *g, const mq_node *p);

/* ------------------------------------------------------------------------ */
/* Kinds                                                                    */

static int is_relation(const mq_node *n)
{
    if (n->kind == MQ_REL) return 1;
    if (n->kind != MQ_AND || n->nk == 0) return 0;
    for (int i = 0; i < n->nk; i++)
        if (n->kids[i]->kind != MQ_REL) return 0;
    return 1;
}

static int is_equation(const mq_node *n)
{
    if (n->kind == MQ_REL) return n->rel == MQ_EQ;
    if (!is_relation(n) || n->kind != MQ_AND) return 0;
    for (int i = 0; i < n->nk; i++)
        if (n->kids[i]->rel != MQ_EQ) return 0;
    return 1;
}

static const mq_node *first_rel(const mq_node *n) { return n->kind == MQ_AND ? n->kids[0] : n; }
static const mq_node *last_rel(const mq_node *n) { return n->kind == MQ_AND ? n->kids[n->nk - 1] : n; }

static int is_assignment(const mq_node *n)
{
    return is_equation(n) && reward_mq_only_symbols(first_rel(n)->kids[0]);
}

static int is_set(const mq_node *n)
{
    switch (n->kind) {
    case MQ_SET:
    case MQ_INTERVAL:
    case MQ_UNION:
    case MQ_INTER:
    case MQ_SETMINUS:
    case MQ_SPECIAL:
    case MQ_RELSET: return 1;
    default: return 0;
    }
}

static int is_setlike(const mq_node *n) { return is_set(n) || n->kind == MQ_TUPLE; }

static int is_scalar(const mq_node *n)
{
    return !is_setlike(n) && !is_relation(n) && n->kind != MQ_MATRIX && n->kind != MQ_PM;
}

static const mq_node *strip_neg(const mq_node *n) { return n->kind == MQ_NEG ? n->kids[0] : n; }

static int atomic_float(const mq_node *n)
{
    if (n->kind == MQ_PCT) n = n->kids[0];
    n = strip_neg(n);
    return n->kind == MQ_NUM && (n->flags & MQ_F_FLOAT);
}

static int atomic_int(const mq_node *n)
{
    if (n->kind == MQ_PCT) n = n->kids[0];
    n = strip_neg(n);
    return n->kind == MQ_NUM && !(n->flags & MQ_F_FLOAT) && reward_mq_rat_is_int(&n->q);
}

/* ------------------------------------------------------------------------ */
/* Numbers                                                                  */

static int close_vals(C *c, const mq_val *x, const mq_val *y)
{
    if (!x->ok || !y->ok) return 0;
    if (x->ok == 2 || y->ok == 2) return x->ok == 2 && y->ok == 2 && creal(x->z) == creal(y->z);
    double d = cabs(x->z - y->z);
    double m = fmax(cabs(x->z), cabs(y->z));
    return d <= c->cfg->rel_tol * m + 1e-13;
}

/* SymPy round(digits) on both sides, then equality */
static int rounded_equal(C *c, const mq_val *x, const mq_val *y)
{
    int d = c->cfg->float_rounding;
    if (x->exact && y->exact) {
        mq_rat rx, ry;
        if (!reward_mq_rat_round(c->a, &rx, &x->q, d) && !reward_mq_rat_round(c->a, &ry, &y->q, d))
            return reward_mq_rat_cmp(&rx, &ry) == 0;
    }
    if (x->ok != 1 || y->ok != 1) return 0;
    if (fabs(cimag(x->z)) > 1e-12 * (1 + cabs(x->z)) || fabs(cimag(y->z)) > 1e-12 * (1 + cabs(y->z)))
        return close_vals(c, x, y);
    long double s = powl(10.0L, d);
    long double a = (long double)creal(x->z) * s, b = (long double)creal(y->z) * s;
    if (fabsl(a) > 1e18L || fabsl(b) > 1e18L) return close_vals(c, x, y);
    return nearbyintl(a) == nearbyintl(b);
}

static int numeric_eq(C *c, const mq_node *g, const mq_node *p)
{
    int gm = reward_mq_is_matrix_expr(g), pm = reward_mq_is_matrix_expr(p);
    if (gm || pm) {
        if (!gm || !pm) return 0;
        const mq_node *mg = reward_mq_matrix_value(c->a, g), *mp = reward_mq_matrix_value(c->a, p);
        if (!mg || !mp || mg->rows != mp->rows || mg->cols != mp->cols) return 0;
        for (int i = 0; i < mg->nk; i++)
            if (!eq(c, mg->kids[i], mp->kids[i])) return 0;
        return 1;
    }
    if (!is_scalar(g) || !is_scalar(p)) return 0;
    int gs = reward_mq_has_symbols(g), ps = reward_mq_has_symbols(p);
    if (gs || ps) return 0;
    mq_val vg = reward_mq_eval(c->a, g, -1), vp = reward_mq_eval(c->a, p, -1);
    if (atomic_float(g) || atomic_float(p)) return rounded_equal(c, &vg, &vp);
    if (atomic_int(g) && atomic_int(p)) {
        /* 9% == 9: compare the numbers without the percent */
        const mq_node *a = g->kind == MQ_PCT ? g->kids[0] : g;
        const mq_node *b = p->kind == MQ_PCT ? p->kids[0] : p;
        mq_val va = reward_mq_eval(c->a, a, -1), vb = reward_mq_eval(c->a, b, -1);
        return va.exact && vb.exact && reward_mq_rat_cmp(&va.q, &vb.q) == 0;
    }
    if (vg.exact && vp.exact) return reward_mq_rat_cmp(&vg.q, &vp.q) == 0;
    return close_vals(c, &vg, &vp);
}

/* equal values at NPTS pseudo-random points (at least 2 must evaluate) */
static int symbolic_eq(C *c, const mq_node *g, const mq_node *p)
{
    if (!is_scalar(g) || !is_scalar(p)) return 0;
    if (!reward_mq_has_symbols(g) && !reward_mq_has_symbols(p)) return 0;
    int valid = 0;
    for (int pt = 0; pt < NPTS; pt++) {
        mq_val vg = reward_mq_eval(c->a, g, pt), vp = reward_mq_eval(c->a, p, pt);
        if (!vg.ok || !vp.ok) continue;
        if (!close_vals(c, &vg, &vp)) return 0;
        valid++;
    }
    return valid >= 2;
}

static int scalar_eq(C *c, const mq_node *g, const mq_node *p)
{
    return numeric_eq(c, g, p) || symbolic_eq(c, g, p);
}

/* ------------------------------------------------------------------------ */
/* Relations                                                                */

static mq_rel inverse(mq_rel r)
{
    switch (r) {
    case MQ_LT: return MQ_GT;
    case MQ_GT: return MQ_LT;
    case MQ_LE: return MQ_GE;
    case MQ_GE: return MQ_LE;
    default: return r;
    }
}

static mq_node *diff(C *c, const mq_node *l, const mq_node *r)
{
    return reward_mq_bin(c->a, MQ_ADD, (mq_node *)l, reward_mq_un(c->a, MQ_NEG, (mq_node *)r));
}

/* "solve": d_g / d_p constant (positive for inequalities) at the points */
static int proportional(C *c, const mq_node *g, const mq_node *p)
{
    mq_rel rg = g->rel, rp = p->rel;
    const mq_node *dg = (rg == MQ_GT || rg == MQ_GE) ? diff(c, g->kids[1], g->kids[0]) : diff(c, g->kids[0], g->kids[1]);
    const mq_node *dp = (rp == MQ_GT || rp == MQ_GE) ? diff(c, p->kids[1], p->kids[0]) : diff(c, p->kids[0], p->kids[1]);
    if (!dg || !dp) return 0;
    if (rg == MQ_GT) rg = MQ_LT;
    if (rg == MQ_GE) rg = MQ_LE;
    if (rp == MQ_GT) rp = MQ_LT;
    if (rp == MQ_GE) rp = MQ_LE;
    if (rg != rp) return 0;
    if (!reward_mq_has_symbols(dg) || !reward_mq_has_symbols(dp)) return 0;
    double complex ratio = 0;
    int valid = 0;
    for (int pt = 0; pt < NPTS + 2; pt++) {
        mq_val a = reward_mq_eval(c->a, dg, pt), b = reward_mq_eval(c->a, dp, pt);
        if (a.ok != 1 || b.ok != 1) continue;
        if (cabs(a.z) < 1e-12 || cabs(b.z) < 1e-12) return 0;
        double complex r = a.z / b.z;
        if (valid == 0) {
            ratio = r;
            if ((rg == MQ_LT || rg == MQ_LE) &&
                (fabs(cimag(r)) > 1e-9 * cabs(r) || creal(r) <= 0))
                return 0;
        } else if (cabs(r - ratio) > c->cfg->rel_tol * cabs(ratio) + 1e-13) {
            return 0;
        }
        valid++;
    }
    return valid >= 3;
}

static int cmp_relational(C *c, const mq_node *g, const mq_node *p)
{
    if (g->kind == MQ_AND || p->kind == MQ_AND) {
        if (g->kind != MQ_AND || p->kind != MQ_AND || g->nk != p->nk) return 0;
        for (int i = 0; i < g->nk; i++)
            if (!cmp_relational(c, g->kids[i], p->kids[i])) return 0;
        return 1;
    }
    const mq_node *gl = g->kids[0], *gr = g->kids[1], *pl = p->kids[0], *pr = p->kids[1];
    if (!is_scalar(gl) || !is_scalar(gr) || !is_scalar(pl) || !is_scalar(pr)) {
        if (g->rel == p->rel && eq(c, gl, pl) && eq(c, gr, pr)) return 1;
        if (inverse(g->rel) == p->rel && eq(c, gl, pr) && eq(c, gr, pl)) return 1;
        return 0;
    }
    const mq_node *dg = diff(c, gl, gr);
    if (!dg) return 0;
    if (g->rel == p->rel && scalar_eq(c, dg, diff(c, pl, pr))) return 1;
    if (inverse(g->rel) == p->rel && scalar_eq(c, dg, diff(c, pr, pl))) return 1;
    return proportional(c, g, p);
}

/* ------------------------------------------------------------------------ */
/* Real sets by membership                                                  */

static int real_of(C *c, const mq_node *n, double *v)
{
    mq_val x = reward_mq_eval(c->a, n, -1);
    if (!x.ok || fabs(cimag(x.z)) > 1e-12 * (1 + cabs(x.z))) return 0;
    *v = creal(x.z);
    return 1;
}

static int near(double a, double b) { return fabs(a - b) <= 1e-12 * fmax(1.0, fmax(fabs(a), fabs(b))); }

static int rel_holds(C *c, const mq_node *r, const char *atom, double t)
{
    if (r->kind == MQ_AND) {
        for (int i = 0; i < r->nk; i++) {
            int h = rel_holds(c, r->kids[i], atom, t);
            if (h <= 0) return h;
        }
        return 1;
    }
    if (r->kind != MQ_REL) return -1;
    mq_val l = reward_mq_eval_subst(c->a, r->kids[0], atom, t), x = reward_mq_eval_subst(c->a, r->kids[1], atom, t);
    if (!l.ok || !x.ok) return -1;
    if (fabs(cimag(l.z)) > 1e-9 * (1 + cabs(l.z)) || fabs(cimag(x.z)) > 1e-9 * (1 + cabs(x.z))) return -1;
    double a = creal(l.z), b = creal(x.z);
    int e = fabs(a - b) <= 1e-9 * fmax(1.0, fmax(fabs(a), fabs(b)));
    switch (r->rel) {
    case MQ_EQ: return e;
    case MQ_NE: return !e;
    case MQ_LT: return a < b && !e;
    case MQ_LE: return a < b || e;
    case MQ_GT: return a > b && !e;
    case MQ_GE: return a > b || e;
    }
    return -1;
}

/* 1 member, 0 not, -1 cannot tell */
static int member(C *c, const mq_node *s, double t)
{
    switch (s->kind) {
    case MQ_INTERVAL: {
        double lo, hi;
        if (!real_of(c, s->kids[0], &lo) || !real_of(c, s->kids[1], &hi)) return -1;
        int lok = near(t, lo) ? !(s->flags & MQ_F_LOPEN) : t > lo;
        int hok = near(t, hi) ? !(s->flags & MQ_F_ROPEN) : t < hi;
        return lok && hok;
    }
    case MQ_SET:
        for (int i = 0; i < s->nk; i++) {
            double v;
            if (!real_of(c, s->kids[i], &v)) return -1;
            if (near(v, t)) return 1;
        }
        return 0;
    case MQ_UNION:
    case MQ_INTER:
    case MQ_SETMINUS: {
        int x = member(c, s->kids[0], t), y = member(c, s->kids[1], t);
        if (x < 0 || y < 0) return -1;
        if (s->kind == MQ_UNION) return x || y;
        if (s->kind == MQ_INTER) return x && y;
        return x && !y;
    }
    case MQ_SPECIAL:
        if (strcmp(s->name, "reals") == 0) return 1;
        if (strcmp(s->name, "empty") == 0) return 0;
        if (strcmp(s->name, "integers") == 0) return t == floor(t);
        if (strcmp(s->name, "naturals") == 0) return t == floor(t) && t >= 1;
        return -1;
    case MQ_RELSET: return rel_holds(c, s->kids[0], s->name, t);
    default: return -1;
    }
}

static int collect_points(C *c, const mq_node *s, double *v, int *n, int cap)
{
    switch (s->kind) {
    case MQ_INTERVAL:
    case MQ_SET:
        for (int i = 0; i < s->nk; i++) {
            double x;
            if (!real_of(c, s->kids[i], &x)) {
                mq_val z = reward_mq_eval(c->a, s->kids[i], -1);
                if (z.ok == 2) continue; /* +-infinity */
                return -1;
            }
            if (*n < cap) v[(*n)++] = x;
        }
        return 0;
    case MQ_UNION:
    case MQ_INTER:
    case MQ_SETMINUS:
        if (collect_points(c, s->kids[0], v, n, cap) || collect_points(c, s->kids[1], v, n, cap)) return -1;
        return 0;
    case MQ_SPECIAL:
    case MQ_RELSET: return 0;
    default: return -1;
    }
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* Two subsets of the reals equal? Probes every endpoint, endpoint +- delta,
 * midpoints and fixed far points. 1 equal, 0 differ, -1 cannot tell. */
static int same_real_set(C *c, const mq_node *x, const mq_node *y)
{
    enum { CAP = 256 };
    double pts[CAP];
    int n = 0;
    if (collect_points(c, x, pts, &n, CAP) || collect_points(c, y, pts, &n, CAP) || n >= CAP) return -1;
    qsort(pts, (size_t)n, sizeof *pts, cmp_double);
    double mingap = INFINITY, maxabs = 1;
    for (int i = 0; i < n; i++) {
        maxabs = fmax(maxabs, fabs(pts[i]));
        if (i && pts[i] - pts[i - 1] > 1e-12 * fmax(1, fabs(pts[i]))) mingap = fmin(mingap, pts[i] - pts[i - 1]);
    }
    double delta = fmin(isinf(mingap) ? 1e-3 : 0.25 * mingap, 1e-6 * maxabs);
    static const double probes[] = {-1000.5, -123.4, -7.3, -1.7, -0.3, 0.0, 0.4, 1.3, 2.9, 11.1, 123.4, 1000.5};
    double t[4 * CAP + 32];
    int k = 0;
    for (int i = 0; i < n; i++) {
        t[k++] = pts[i];
        t[k++] = pts[i] - delta;
        t[k++] = pts[i] + delta;
        if (i + 1 < n) t[k++] = 0.5 * (pts[i] + pts[i + 1]);
    }
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) t[k++] = probes[i] * (n ? maxabs : 1);
    if (n) {
        t[k++] = pts[0] - 1;
        t[k++] = pts[n - 1] + 1;
    }
    for (int i = 0; i < k; i++) {
        if (!reward_mq_work(c->a, 4)) return -1;
        int a = member(c, x, t[i]), b = member(c, y, t[i]);
        if (a < 0 || b < 0) return -1;
        if (a != b) return 0;
    }
    return 1;
}

/* Relation in one free atom -> its solution set (Relational.as_set). */
static const mq_node *as_set(C *c, const mq_node *r)
{
    const char *atoms[4];
    int k = reward_mq_atoms(c->a, r, atoms, 4, 1);
    if (k != 1) return r;
    /* x = value: the one-point set */
    if (r->kind == MQ_REL && r->rel == MQ_EQ) {
        const mq_node *l = r->kids[0], *v = r->kids[1];
        if (!(l->kind == MQ_SYM && strcmp(l->name, atoms[0]) == 0)) {
            const mq_node *t = l;
            l = v, v = t;
        }
        if (l->kind == MQ_SYM && strcmp(l->name, atoms[0]) == 0 && !reward_mq_has_symbols(v) && is_scalar(v))
            return reward_mq_un(c->a, MQ_SET, (mq_node *)v);
    }
    mq_node *s = reward_mq_un(c->a, MQ_RELSET, (mq_node *)r);
    if (!s) return r;
    s->name = atoms[0];
    return s;
}

/* ------------------------------------------------------------------------ */
/* Finite sets and tuples                                                   */

static const mq_node *dedupe(C *c, const mq_node *s)
{
    if (s->kind != MQ_SET || s->nk < 2) return s;
    const char **cs = reward_mq_alloc(c->a, sizeof(char *) * (size_t)s->nk);
    mq_node *o = reward_mq_new(c->a, MQ_SET, s->nk);
    if (!cs || !o) return s;
    int k = 0;
    for (int i = 0; i < s->nk; i++) {
        const char *t = reward_mq_canon(c->a, s->kids[i]);
        if (!t) return s;
        int dup = 0;
        for (int j = 0; j < k && !dup; j++) dup = strcmp(cs[j], t) == 0;
        if (dup) continue;
        cs[k] = t;
        o->kids[k++] = s->kids[i];
    }
    o->nk = k;
    return o;
}

/* unwrap an assignment to its value (Math-Verify sort key and matching) */
static int deep_compare(C *c, const mq_node *g, const mq_node *p)
{
    g = dedupe(c, g);
    p = dedupe(c, p);
    if (g->nk != p->nk) return 0;
    if (g->kind == MQ_SET) {
        char *used = reward_mq_alloc(c->a, (size_t)p->nk + 1);
        if (!used) return 0;
        for (int i = 0; i < g->nk; i++) {
            int found = 0;
            for (int j = 0; j < p->nk && !found; j++) {
                if (used[j]) continue;
                if (!reward_mq_work(c->a, 2)) return 0;
                if (eq(c, g->kids[i], p->kids[j])) used[j] = 1, found = 1;
            }
            if (!found) return 0;
        }
        return 1;
    }
    for (int i = 0; i < g->nk; i++)
        if (!eq(c, g->kids[i], p->kids[i])) return 0;
    return 1;
}

static int open_interval(const mq_node *n)
{
    return n->kind == MQ_INTERVAL && (n->flags & MQ_F_LOPEN) && (n->flags & MQ_F_ROPEN);
}

static int cmp_sets(C *c, const mq_node *g, const mq_node *p)
{
    const mq_node *A = is_setlike(g) ? g : reward_mq_un(c->a, MQ_SET, (mq_node *)g);
    const mq_node *B = is_setlike(p) ? p : reward_mq_un(c->a, MQ_SET, (mq_node *)p);
    if (!A || !B) return 0;
    if (A->kind == MQ_INTERVAL && B->kind == MQ_INTERVAL)
        return (A->flags & (MQ_F_LOPEN | MQ_F_ROPEN)) == (B->flags & (MQ_F_LOPEN | MQ_F_ROPEN)) &&
               eq(c, A->kids[0], B->kids[0]) && eq(c, A->kids[1], B->kids[1]);
    const char *ca = reward_mq_canon(c->a, A), *cb = reward_mq_canon(c->a, B);
    if (ca && cb && strcmp(ca, cb) == 0) return 1;
    int lists = (A->kind == MQ_SET || A->kind == MQ_TUPLE) && (B->kind == MQ_SET || B->kind == MQ_TUPLE);
    if (is_set(A) && is_set(B) && !(A->kind == MQ_SET && B->kind == MQ_SET))
        if (same_real_set(c, A, B) == 1) return 1;
    if (lists) return deep_compare(c, A, B);
    /* (1, 2) parses as an interval; 1,2 as a set: compare as pairs */
    if (open_interval(A) && (B->kind == MQ_SET || B->kind == MQ_TUPLE) && B->nk == 2) {
        mq_node *t = reward_mq_bin(c->a, MQ_TUPLE, A->kids[0], A->kids[1]);
        return t && deep_compare(c, t, B);
    }
    if (open_interval(B) && (A->kind == MQ_SET || A->kind == MQ_TUPLE) && A->nk == 2) {
        mq_node *t = reward_mq_bin(c->a, MQ_TUPLE, B->kids[0], B->kids[1]);
        return t && deep_compare(c, A, t);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Symbols                                                                  */

static int is_e_const(const mq_node *n) { return n->kind == MQ_CONST && strcmp(n->name, "e") == 0; }

/* a product of letters spelled out: "odd" == o*d*d; -1 if not one */
static int concat_equal(const mq_node *sym, const mq_node *prod)
{
    if (prod->kind != MQ_MUL) return -1;
    char buf[512];
    size_t k = 0;
    for (int i = 0; i < prod->nk; i++) {
        const mq_node *f = prod->kids[i];
        const char *t;
        if (f->kind == MQ_SYM) t = f->name;
        else if (f->kind == MQ_CONST && (strcmp(f->name, "e") == 0 || strcmp(f->name, "i") == 0)) t = f->name;
        else return -1;
        size_t l = strlen(t);
        if (k + l >= sizeof buf) return 0;
        memcpy(buf + k, t, l);
        k += l;
    }
    buf[k] = 0;
    return strcmp(buf, sym->name) == 0;
}

/* Math-Verify sympy_compare_symbols: 1 equal, 0 unequal, -1 not a symbol
 * case (the numeric comparison decides). */
static int cmp_symbols(const mq_node *g, const mq_node *p)
{
    /* \text{e} or E (a symbol) against Euler's e */
    if (g->kind == MQ_SYM && is_e_const(p)) return strcmp(g->name, "e") == 0 ? 1 : -1;
    if (p->kind == MQ_SYM && is_e_const(g)) return strcmp(p->name, "e") == 0 ? 1 : -1;
    if (g->kind == MQ_SYM && p->kind == MQ_SYM) return strcmp(g->name, p->name) == 0;
    if (g->kind == MQ_SYM) return concat_equal(g, p);
    if (p->kind == MQ_SYM) return concat_equal(p, g);
    return -1;
}

/* ------------------------------------------------------------------------ */
/* sympy_expr_eq                                                            */

static const mq_node *make_eq(C *c, const mq_node *l, const mq_node *r)
{
    mq_node *n = reward_mq_bin(c->a, MQ_REL, (mq_node *)l, (mq_node *)r);
    if (n) n->rel = MQ_EQ;
    return n;
}

static int eq(C *c, const mq_node *g, const mq_node *p)
{
    if (!g || !p || !reward_mq_work(c->a, 5)) return 0;
    if (!c->cfg->strict) {
        const char *ga[16], *pa[16];
        int gn = reward_mq_atoms(c->a, g, ga, 16, 0), pn = reward_mq_atoms(c->a, p, pa, 16, 0);
        if (gn == pn && gn > 0 && gn <= 16) {
            mq_node *r = reward_mq_rename(c->a, p, pa, ga, gn);
            if (r) p = r;
        }
    }
    int ga = is_assignment(g), pa = is_assignment(p);
    int ge = is_equation(g), pe = is_equation(p);
    if (ga && g->kind == MQ_AND) g = make_eq(c, first_rel(g)->kids[0], last_rel(g)->kids[1]);
    if (pa && p->kind == MQ_AND) p = make_eq(c, first_rel(p)->kids[0], last_rel(p)->kids[1]);
    if (!g || !p) return 0;
    if (pe && !ge) p = last_rel(p)->kids[1];
    else if (ga && !pe) g = last_rel(g)->kids[1];

    if (is_relation(g) && is_set(p)) g = as_set(c, g);
    if (c->cfg->allow_set_relation_comp && is_relation(p) && is_set(g)) p = as_set(c, p);

    const char *cg = reward_mq_canon(c->a, g), *cp = reward_mq_canon(c->a, p);
    if (cg && cp && strcmp(cg, cp) == 0) return 1;

    if (is_relation(g) && is_relation(p)) return cmp_relational(c, g, p);
    if (is_setlike(g) || is_setlike(p)) return cmp_sets(c, g, p);
    if (g->kind == MQ_SYM || p->kind == MQ_SYM) {
        int r = cmp_symbols(g, p);
        if (r >= 0) return r;
    }
    return numeric_eq(c, g, p) || symbolic_eq(c, g, p);
}

int reward_mq_equal(mq_arena *a, const mq_node *gold, const mq_node *pred, const mq_cmp_cfg *cfg)
{
    C c = {.a = a, .cfg = cfg};
    return eq(&c, gold, pred);
}
