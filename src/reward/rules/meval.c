/*
 * Evaluation of mq_node trees.
 *
 * Every scalar node evaluates to an mq_val: an exact rational when the
 * subtree is rational arithmetic on literals (integer powers, perfect-square
 * roots, factorials, binomials, gcd/lcm, floor/ceil, abs), and always a
 * complex double. Symbols take pseudo-random values in [0.37, 2.67) that
 * depend only on (name, sample point), so two expressions in the same
 * variables are compared at the same points; undefined functions f(x) and
 * sums with symbolic bounds get a hash of their name/structure and argument
 * values (equal arguments give equal values, different ones almost surely
 * differ). Overflow of a finite computation is "not ok" (never equal to a
 * genuine infinity such as \infty).
 *
 * The canonical text of a tree, its atoms, renaming and matrix arithmetic
 * are in mtree.c.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "reward/rules/rules_int.h"

#ifndef CMPLX /* C11 7.3.9.3; clang 14's <complex.h> (the fuzz build) lacks it */
#define CMPLX(x, y) __builtin_complex((double)(x), (double)(y))
#endif

/* ------------------------------------------------------------------------ */
/* Hashing                                                                  */

static uint64_t fnv(const void *p, size_t n, uint64_t h)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static double unit(uint64_t h) { return (double)(mix(h) >> 11) * (1.0 / 9007199254740992.0); }

static double sym_value(const char *name, int pt)
{
    uint64_t h = fnv(name, strlen(name), 1469598103934665603ull);
    h = fnv(&pt, sizeof pt, h);
    return 0.37 + 2.3 * unit(h);
}

/* hash a value rounded to 9 significant digits (so 2x/2 and x agree) */
static uint64_t hash_val(uint64_t h, double complex z)
{
    char buf[64];
    double re = creal(z), im = cimag(z);
    if (fabs(re) < 1e-12) re = 0;
    if (fabs(im) < 1e-12) im = 0;
    int n = snprintf(buf, sizeof buf, "%.8e,%.8e", re, im);
    return fnv(buf, (size_t)n, h);
}

/* ------------------------------------------------------------------------ */
/* Values                                                                   */

enum { V_BAD = 0, V_OK = 1, V_INF = 2 };

typedef struct {
    mq_arena *a;
    int pt;
    const char *subst; /* atom replaced by subst_val (canonical text) */
    double subst_val;
    const char *bound[8];
    mq_val bound_val[8];
    int nbound;
} E;

static mq_val bad(void)
{
    mq_val v;
    memset(&v, 0, sizeof v);
    return v;
}

/* -0.0 imaginary parts would put sqrt/log on the other side of the branch
 * cut: -4 must stay (-4, +0) */
static double complex unsigned_zero(double complex z)
{
    return CMPLX(creal(z) == 0 ? 0.0 : creal(z), cimag(z) == 0 ? 0.0 : cimag(z));
}

static mq_val from_complex(double complex z)
{
    z = unsigned_zero(z);
    mq_val v = bad();
    if (isnan(creal(z)) || isnan(cimag(z))) return v;
    if (isinf(creal(z)) || isinf(cimag(z))) return v; /* overflow */
    v.ok = V_OK;
    v.z = z;
    return v;
}

static mq_val from_rat(mq_arena *a, const mq_rat *q)
{
    (void)a;
    mq_val v = bad();
    long double d = reward_mq_rat_to_ld(q);
    if (!isfinite((double)d)) {
        /* exact but beyond double range: exact comparisons still work */
        v.ok = V_BAD;
        v.exact = 1;
        v.q = *q;
        return v;
    }
    v.ok = V_OK;
    v.exact = 1;
    v.q = *q;
    v.z = (double)d;
    return v;
}

static int is_real(const mq_val *v) { return fabs(cimag(v->z)) <= 1e-12 * (1 + fabs(creal(v->z))); }

static mq_val eval(E *e, const mq_node *n);

static mq_val add(E *e, mq_val x, mq_val y)
{
    if (x.exact && y.exact) {
        mq_rat r;
        if (!reward_mq_rat_add(e->a, &r, &x.q, &y.q)) return from_rat(e->a, &r);
    }
    if (!x.ok || !y.ok) return bad();
    if (x.ok == V_INF || y.ok == V_INF) {
        if (x.ok == V_INF && y.ok == V_INF && creal(x.z) != creal(y.z)) return bad();
        mq_val v = x.ok == V_INF ? x : y;
        v.exact = 0;
        return v;
    }
    return from_complex(x.z + y.z);
}

static mq_val neg(mq_val x)
{
    if (x.exact) reward_mq_rat_neg(&x.q, &x.q);
    x.z = unsigned_zero(-x.z);
    return x;
}

static mq_val mul(E *e, mq_val x, mq_val y)
{
    if (x.exact && y.exact) {
        mq_rat r;
        if (!reward_mq_rat_mul(e->a, &r, &x.q, &y.q)) return from_rat(e->a, &r);
    }
    if (!x.ok || !y.ok) return bad();
    if (x.ok == V_INF || y.ok == V_INF) {
        mq_val o = x.ok == V_INF ? y : x;
        if (o.ok == V_OK && cabs(o.z) == 0) return bad();
        mq_val v = bad();
        v.ok = V_INF;
        double s = (creal(x.z) < 0) != (creal(y.z) < 0) ? -1.0 : 1.0;
        v.z = s * INFINITY;
        return v;
    }
    return from_complex(x.z * y.z);
}

static mq_val divide(E *e, mq_val x, mq_val y)
{
    if (x.exact && y.exact) {
        if (reward_mq_rat_is_zero(&y.q)) return bad();
        mq_rat r;
        if (!reward_mq_rat_div(e->a, &r, &x.q, &y.q)) return from_rat(e->a, &r);
    }
    if (!x.ok || !y.ok) return bad();
    if (y.ok == V_INF) {
        if (x.ok == V_INF) return bad();
        return from_complex(0);
    }
    if (x.ok == V_INF) return x;
    if (cabs(y.z) == 0) return bad();
    return from_complex(x.z / y.z);
}

static mq_val power(E *e, mq_val b, mq_val x)
{
    if (b.exact && x.exact) {
        mq_rat r;
        int64_t k;
        if (reward_mq_rat_is_int(&x.q) && reward_mq_int_to_i64(&x.q.num, &k) && k >= -100000 && k <= 100000) {
            if (!(reward_mq_rat_is_zero(&b.q) && k < 0) && !reward_mq_rat_pow(e->a, &r, &b.q, k)) return from_rat(e->a, &r);
        } else if (x.q.den.n == 1 && x.q.den.d[0] == 2 && reward_mq_int_to_i64(&x.q.num, &k) && k > -1000 &&
                   k < 1000 && b.q.num.sign >= 0) {
            mq_rat s;
            if (reward_mq_rat_sqrt_exact(e->a, &s, &b.q) && !reward_mq_rat_pow(e->a, &r, &s, k)) return from_rat(e->a, &r);
        }
    }
    if (!b.ok || !x.ok) return bad();
    if (b.ok == V_INF || x.ok == V_INF) return bad();
    if (cabs(b.z) == 0) {
        if (is_real(&x) && creal(x.z) > 0) return from_complex(0);
        if (cabs(x.z) == 0) return from_complex(1);
        return bad();
    }
    if (is_real(&b) && is_real(&x)) {
        double bb = creal(b.z), xx = creal(x.z);
        if (bb > 0 || xx == floor(xx)) return from_complex(pow(bb, xx));
    }
    return from_complex(cpow(b.z, x.z));
}

/* exact integer argument in int64, if any */
static int exact_i64(const mq_val *v, int64_t *k)
{
    return v->exact && reward_mq_rat_is_int(&v->q) && reward_mq_int_to_i64(&v->q.num, k);
}

static mq_val func(E *e, const mq_node *n)
{
    mq_val x = eval(e, n->kids[0]);
    if (n->fn == MQ_FN_ABS) {
        if (x.exact) {
            if (x.q.num.sign < 0) reward_mq_rat_neg(&x.q, &x.q);
            x.z = cabs(x.z);
            return x;
        }
        if (!x.ok) return bad();
        if (x.ok == V_INF) return (x.z = INFINITY, x);
        return from_complex(cabs(x.z));
    }
    if ((n->fn == MQ_FN_FLOOR || n->fn == MQ_FN_CEIL) && x.exact) {
        mq_int q, r;
        if (!reward_mq_int_divmod(e->a, &q, &r, &x.q.num, &x.q.den)) {
            /* truncation toward zero -> floor/ceil */
            mq_int one;
            reward_mq_int_from_i64(e->a, &one, 1);
            if (r.sign < 0 && n->fn == MQ_FN_FLOOR && reward_mq_int_sub(e->a, &q, &q, &one)) return bad();
            if (r.sign > 0 && n->fn == MQ_FN_CEIL && reward_mq_int_add(e->a, &q, &q, &one)) return bad();
            mq_rat res;
            if (!reward_mq_rat_make(e->a, &res, &q, &one)) return from_rat(e->a, &res);
        }
    }
    if (n->fn == MQ_FN_SQRT) {
        mq_val h = bad();
        h.exact = 1;
        if (reward_mq_rat_from_i64(e->a, &h.q, 1, 2)) return bad();
        h.ok = V_OK;
        h.z = 0.5;
        if (x.ok == V_INF && creal(x.z) > 0) return x;
        return power(e, x, h);
    }
    if (n->fn == MQ_FN_FACT) {
        int64_t k;
        if (exact_i64(&x, &k) && k >= 0 && k <= 2000) {
            mq_rat r;
            reward_mq_rat_from_i64(e->a, &r, 1, 1);
            int okx = 1;
            for (int64_t i = 2; i <= k && okx; i++) {
                mq_rat f;
                if (!reward_mq_work(e->a, 1) || reward_mq_rat_from_i64(e->a, &f, i, 1) || reward_mq_rat_mul(e->a, &r, &r, &f)) okx = 0;
            }
            if (okx) return from_rat(e->a, &r);
            return bad();
        }
        if (!x.ok || x.ok == V_INF || !is_real(&x)) return bad();
        return from_complex(tgamma(creal(x.z) + 1));
    }
    if (n->fn == MQ_FN_DET) {
        const mq_node *m = reward_mq_matrix_value(e->a, n->kids[0]);
        if (!m || m->rows != m->cols || m->rows > 4) return bad();
        /* cofactor expansion, small matrices only */
        int r = m->rows;
        if (r == 1) return eval(e, m->kids[0]);
        mq_val v[16];
        for (int i = 0; i < r * r; i++) v[i] = eval(e, m->kids[i]);
        if (r == 2) return add(e, mul(e, v[0], v[3]), neg(mul(e, v[1], v[2])));
        if (r == 3) {
            mq_val t1 = mul(e, v[0], add(e, mul(e, v[4], v[8]), neg(mul(e, v[5], v[7]))));
            mq_val t2 = mul(e, v[1], add(e, mul(e, v[3], v[8]), neg(mul(e, v[5], v[6]))));
            mq_val t3 = mul(e, v[2], add(e, mul(e, v[3], v[7]), neg(mul(e, v[4], v[6]))));
            return add(e, add(e, t1, neg(t2)), t3);
        }
        return bad();
    }
    /* multi-argument integer functions */
    if (n->fn == MQ_FN_GCD || n->fn == MQ_FN_LCM || n->fn == MQ_FN_MAX || n->fn == MQ_FN_MIN) {
        mq_val acc = x;
        for (int i = 1; i < n->nk; i++) {
            mq_val y = eval(e, n->kids[i]);
            if (n->fn == MQ_FN_MAX || n->fn == MQ_FN_MIN) {
                if (acc.exact && y.exact) {
                    int c = reward_mq_rat_cmp(&acc.q, &y.q);
                    if ((n->fn == MQ_FN_MAX) == (c < 0)) acc = y;
                    continue;
                }
                if (!acc.ok || !y.ok || !is_real(&acc) || !is_real(&y)) return bad();
                if ((n->fn == MQ_FN_MAX) == (creal(acc.z) < creal(y.z))) acc = y;
                continue;
            }
            if (!acc.exact || !y.exact || !reward_mq_rat_is_int(&acc.q) || !reward_mq_rat_is_int(&y.q)) return bad();
            mq_int g;
            if (reward_mq_int_gcd(e->a, &g, &acc.q.num, &y.q.num)) return bad();
            mq_rat res, gr;
            mq_int one;
            reward_mq_int_from_i64(e->a, &one, 1);
            if (n->fn == MQ_FN_GCD) {
                if (reward_mq_rat_make(e->a, &res, &g, &one)) return bad();
            } else {
                mq_int prod, l;
                if (g.sign == 0) {
                    reward_mq_rat_from_i64(e->a, &res, 0, 1);
                } else if (reward_mq_int_mul(e->a, &prod, &acc.q.num, &y.q.num) ||
                           reward_mq_int_divmod(e->a, &l, NULL, &prod, &g)) {
                    return bad();
                } else {
                    l.sign = l.n ? 1 : 0;
                    if (reward_mq_rat_make(e->a, &res, &l, &one)) return bad();
                }
            }
            (void)gr;
            acc = from_rat(e->a, &res);
        }
        return acc;
    }
    if (n->fn == MQ_FN_BINOM) {
        mq_val y = eval(e, n->kids[1]);
        int64_t nn, kk;
        if (exact_i64(&x, &nn) && exact_i64(&y, &kk) && nn >= 0 && nn <= 100000) {
            if (kk < 0 || kk > nn) {
                mq_rat z;
                if (reward_mq_rat_from_i64(e->a, &z, 0, 1)) return bad();
                return from_rat(e->a, &z);
            }
            if (kk > nn - kk) kk = nn - kk;
            mq_rat r;
            reward_mq_rat_from_i64(e->a, &r, 1, 1);
            for (int64_t i = 1; i <= kk; i++) {
                mq_rat f;
                if (!reward_mq_work(e->a, 1) || reward_mq_rat_from_i64(e->a, &f, nn - kk + i, i) ||
                    reward_mq_rat_mul(e->a, &r, &r, &f))
                    return bad();
            }
            return from_rat(e->a, &r);
        }
        if (!x.ok || !y.ok || !is_real(&x) || !is_real(&y)) return bad();
        double a = creal(x.z), b = creal(y.z);
        return from_complex(tgamma(a + 1) / (tgamma(b + 1) * tgamma(a - b + 1)));
    }
    if (n->fn == MQ_FN_ROOT) {
        mq_val k = eval(e, n->kids[1]);
        mq_val one = bad();
        one.exact = 1;
        if (reward_mq_rat_from_i64(e->a, &one.q, 1, 1)) return bad();
        one.ok = V_OK, one.z = 1;
        return power(e, x, divide(e, one, k));
    }
    if (n->fn == MQ_FN_LOG) {
        mq_val b = eval(e, n->kids[1]);
        if (!x.ok || !b.ok || x.ok == V_INF || b.ok == V_INF) return bad();
        if (cabs(x.z) == 0 || cabs(b.z) == 0) return bad();
        double complex lb = is_real(&b) && creal(b.z) > 0 ? log(creal(b.z)) : clog(b.z);
        double complex lx = is_real(&x) && creal(x.z) > 0 ? log(creal(x.z)) : clog(x.z);
        if (cabs(lb) == 0) return bad();
        return from_complex(lx / lb);
    }
    if (!x.ok) return bad();
    if (x.ok == V_INF) {
        if (n->fn == MQ_FN_EXP && creal(x.z) < 0) return from_complex(0);
        if (n->fn == MQ_FN_ATAN) return from_complex(creal(x.z) > 0 ? M_PI / 2 : -M_PI / 2);
        return bad();
    }
    double complex z = x.z;
    int real = is_real(&x);
    double r = creal(z);
    switch (n->fn) {
    case MQ_FN_SIN: return from_complex(real ? sin(r) : csin(z));
    case MQ_FN_COS: return from_complex(real ? cos(r) : ccos(z));
    case MQ_FN_TAN: return from_complex(real ? tan(r) : ctan(z));
    case MQ_FN_SEC: return from_complex(1.0 / (real ? cos(r) : ccos(z)));
    case MQ_FN_CSC: return from_complex(1.0 / (real ? sin(r) : csin(z)));
    case MQ_FN_COT: return from_complex(1.0 / (real ? tan(r) : ctan(z)));
    case MQ_FN_ASIN: return from_complex(real && fabs(r) <= 1 ? asin(r) : casin(z));
    case MQ_FN_ACOS: return from_complex(real && fabs(r) <= 1 ? acos(r) : cacos(z));
    case MQ_FN_ATAN: return from_complex(real ? atan(r) : catan(z));
    case MQ_FN_ASEC: return from_complex(real && fabs(r) >= 1 ? acos(1 / r) : cacos(1.0 / z));
    case MQ_FN_ACSC: return from_complex(real && fabs(r) >= 1 ? asin(1 / r) : casin(1.0 / z));
    case MQ_FN_ACOT: return from_complex(real ? atan(1 / r) : catan(1.0 / z));
    case MQ_FN_SINH: return from_complex(real ? sinh(r) : csinh(z));
    case MQ_FN_COSH: return from_complex(real ? cosh(r) : ccosh(z));
    case MQ_FN_TANH: return from_complex(real ? tanh(r) : ctanh(z));
    case MQ_FN_LN:
        if (cabs(z) == 0) return bad();
        return from_complex(real && r > 0 ? log(r) : clog(z));
    case MQ_FN_EXP: return from_complex(real ? exp(r) : cexp(z));
    case MQ_FN_FLOOR: return real ? from_complex(floor(r)) : bad();
    case MQ_FN_CEIL: return real ? from_complex(ceil(r)) : bad();
    default: return bad();
    }
}

static mq_val hashed(E *e, const mq_node *n, uint64_t h)
{
    (void)n;
    (void)e;
    return from_complex(0.5 + 2.0 * unit(h));
}

static mq_val bigop(E *e, const mq_node *n)
{
    mq_val lo = eval(e, n->kids[1]), hi = eval(e, n->kids[2]);
    int64_t l, h;
    int is_sum = strcmp(n->name, "sum") == 0;
    if (exact_i64(&lo, &l) && exact_i64(&hi, &h) && h - l < 10000 && e->nbound < 8) {
        mq_val acc = bad();
        acc.exact = 1;
        if (reward_mq_rat_from_i64(e->a, &acc.q, is_sum ? 0 : 1, 1)) return bad();
        acc.ok = V_OK;
        acc.z = is_sum ? 0 : 1;
        int slot = e->nbound++;
        e->bound[slot] = n->kids[0]->name;
        for (int64_t k = l; k <= h; k++) {
            if (!reward_mq_work(e->a, 10)) break;
            mq_val kv = bad();
            kv.exact = 1;
            reward_mq_rat_from_i64(e->a, &kv.q, k, 1);
            kv.ok = V_OK;
            kv.z = (double)k;
            e->bound_val[slot] = kv;
            mq_val b = eval(e, n->kids[3]);
            acc = is_sum ? add(e, acc, b) : mul(e, acc, b);
        }
        e->nbound--;
        return acc;
    }
    /* symbolic bounds: a value determined by the structure and the point */
    const char *c = reward_mq_canon(e->a, n);
    if (!c) return bad();
    uint64_t hh = fnv(c, strlen(c), 7);
    hh = fnv(&e->pt, sizeof e->pt, hh);
    return hashed(e, n, hh);
}

static mq_val eval(E *e, const mq_node *n)
{
    if (!reward_mq_work(e->a, 1)) return bad();
    switch (n->kind) {
    case MQ_NUM: return from_rat(e->a, &n->q);
    case MQ_SYM: {
        for (int i = e->nbound - 1; i >= 0; i--)
            if (strcmp(e->bound[i], n->name) == 0) return e->bound_val[i];
        if (e->subst && strcmp(e->subst, n->name) == 0) return from_complex(e->subst_val);
        if (e->pt < 0) return bad();
        return from_complex(sym_value(n->name, e->pt));
    }
    case MQ_CONST:
        if (strcmp(n->name, "pi") == 0) return from_complex(M_PI);
        if (strcmp(n->name, "e") == 0) return from_complex(M_E);
        if (strcmp(n->name, "i") == 0) return from_complex(I);
        if (strcmp(n->name, "inf") == 0) {
            mq_val v = bad();
            v.ok = V_INF;
            v.z = INFINITY;
            return v;
        }
        return bad();
    case MQ_ADD: {
        mq_val acc = eval(e, n->kids[0]);
        for (int i = 1; i < n->nk; i++) acc = add(e, acc, eval(e, n->kids[i]));
        return acc;
    }
    case MQ_MUL: {
        mq_val acc = eval(e, n->kids[0]);
        for (int i = 1; i < n->nk; i++) acc = mul(e, acc, eval(e, n->kids[i]));
        return acc;
    }
    case MQ_NEG: return neg(eval(e, n->kids[0]));
    case MQ_DIV: return divide(e, eval(e, n->kids[0]), eval(e, n->kids[1]));
    case MQ_POW: {
        const mq_node *b = n->kids[0];
        /* e^x */
        if (b->kind == MQ_CONST && strcmp(b->name, "e") == 0) {
            mq_val x = eval(e, n->kids[1]);
            if (!x.ok) return bad();
            if (x.ok == V_INF) return creal(x.z) < 0 ? from_complex(0) : x;
            return from_complex(is_real(&x) ? exp(creal(x.z)) : cexp(x.z));
        }
        return power(e, eval(e, b), eval(e, n->kids[1]));
    }
    case MQ_PCT: {
        mq_val x = eval(e, n->kids[0]), h = bad();
        h.exact = 1;
        if (reward_mq_rat_from_i64(e->a, &h.q, 100, 1)) return bad();
        h.ok = V_OK, h.z = 100;
        return divide(e, x, h);
    }
    case MQ_FUNC: return func(e, n);
    case MQ_APPLY: {
        if (e->subst) {
            const char *c = reward_mq_canon(e->a, n);
            if (c && strcmp(c, e->subst) == 0) return from_complex(e->subst_val);
        }
        uint64_t h = fnv(n->name, strlen(n->name), 11);
        for (int i = 0; i < n->nk; i++) {
            mq_val v = eval(e, n->kids[i]);
            if (!v.ok) return bad();
            h = hash_val(h, v.z);
        }
        return hashed(e, n, h);
    }
    case MQ_BIGOP: return bigop(e, n);
    default: return bad();
    }
}

mq_val reward_mq_eval(mq_arena *a, const mq_node *n, int pt)
{
    E e = {.a = a, .pt = pt};
    mq_val v = eval(&e, n);
    if (v.ok == V_INF) v.ok = 2;
    return v;
}

mq_val reward_mq_eval_subst(mq_arena *a, const mq_node *n, const char *atom, double t)
{
    E e = {.a = a, .pt = 0, .subst = atom, .subst_val = t};
    return eval(&e, n);
}

int reward_mq_has_symbols(const mq_node *n)
{
    if (n->kind == MQ_SYM) return 1;
    if (n->kind == MQ_BIGOP) {
        /* the bound variable is not free */
        for (int i = 1; i < n->nk; i++)
            if (i != 3 && reward_mq_has_symbols(n->kids[i])) return 1;
        return 1; /* conservatively: the body may use other symbols */
    }
    for (int i = 0; i < n->nk; i++)
        if (reward_mq_has_symbols(n->kids[i])) return 1;
    return 0;
}
