/*
 * Arena and exact arithmetic of the math engine: sign-magnitude integers of
 * 32-bit limbs capped at MQ_MAX_LIMBS (4096 bits) and reduced rationals over
 * them. Values are immutable and live in the call's arena; an operation
 * whose result would exceed the cap returns -1 so the caller can fall back
 * to floating point instead of doing unbounded work. Division is Knuth's
 * algorithm D (TAOCP vol. 2, 4.3.1), gcd is Euclid on top of it.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "reward/rules/rules_int.h"

/* ------------------------------------------------------------------------ */
/* Arena                                                                    */

struct mq_chunk {
    mq_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void reward_mq_arena_init(mq_arena *a)
{
    memset(a, 0, sizeof *a);
    a->limit = MQ_ARENA_LIMIT;
}

void *reward_mq_alloc(mq_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    mq_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        if (a->total + cap > a->limit) {
            a->failed = 1;
            return NULL;
        }
        c = base_xmalloc(sizeof *c + cap);
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
        a->total += cap;
    }
    void *p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

char *reward_mq_strndup(mq_arena *a, const char *s, size_t n)
{
    char *p = reward_mq_alloc(a, n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void reward_mq_arena_free(mq_arena *a)
{
    mq_chunk *c = a->head;
    while (c) {
        mq_chunk *nx = c->next;
        free(c);
        c = nx;
    }
    a->head = NULL;
    a->total = 0;
}

int reward_mq_work(mq_arena *a, long n)
{
    a->work += n;
    if (a->work > MQ_WORK_LIMIT) {
        a->failed = 1;
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Magnitudes: little-endian uint32 arrays                                  */

static int mag_trim(const uint32_t *d, int n)
{
    while (n > 0 && d[n - 1] == 0) n--;
    return n;
}

static int mag_cmp(const uint32_t *x, int xn, const uint32_t *y, int yn)
{
    if (xn != yn) return xn < yn ? -1 : 1;
    for (int i = xn - 1; i >= 0; i--)
        if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
    return 0;
}

/* r = x + y; r has room for max(xn, yn) + 1 limbs. Returns limbs used. */
static int mag_add(uint32_t *r, const uint32_t *x, int xn, const uint32_t *y, int yn)
{
    if (xn < yn) {
        const uint32_t *t = x; x = y; y = t;
        int tn = xn; xn = yn; yn = tn;
    }
    uint64_t c = 0;
    for (int i = 0; i < xn; i++) {
        c += (uint64_t)x[i] + (i < yn ? y[i] : 0);
        r[i] = (uint32_t)c;
        c >>= 32;
    }
    r[xn] = (uint32_t)c;
    return mag_trim(r, xn + 1);
}

/* r = x - y with x >= y; r has room for xn limbs. */
static int mag_sub(uint32_t *r, const uint32_t *x, int xn, const uint32_t *y, int yn)
{
    int64_t b = 0;
    for (int i = 0; i < xn; i++) {
        int64_t t = (int64_t)x[i] - (i < yn ? y[i] : 0) - b;
        b = t < 0;
        r[i] = (uint32_t)(t + (b ? ((int64_t)1 << 32) : 0));
    }
    return mag_trim(r, xn);
}

static int mag_mul(uint32_t *r, const uint32_t *x, int xn, const uint32_t *y, int yn)
{
    memset(r, 0, sizeof(uint32_t) * (size_t)(xn + yn));
    for (int i = 0; i < xn; i++) {
        uint64_t c = 0;
        for (int j = 0; j < yn; j++) {
            c += (uint64_t)x[i] * y[j] + r[i + j];
            r[i + j] = (uint32_t)c;
            c >>= 32;
        }
        r[i + yn] = (uint32_t)c;
    }
    return mag_trim(r, xn + yn);
}

/* Knuth D: q = u / v, r = u % v. u has m limbs, v has n limbs, m >= n,
 * v[n-1] != 0. q has room for m - n + 1 limbs, r for n. un (m + 1) and
 * vn (n) are scratch. */
static void mag_divmod(uint32_t *q, uint32_t *r, const uint32_t *u, int m, const uint32_t *v,
                       int n, uint32_t *un, uint32_t *vn)
{
    if (n == 1) {
        uint64_t k = 0;
        for (int j = m - 1; j >= 0; j--) {
            uint64_t cur = (k << 32) | u[j];
            q[j] = (uint32_t)(cur / v[0]);
            k = cur - (uint64_t)q[j] * v[0];
        }
        r[0] = (uint32_t)k;
        return;
    }
    int s = __builtin_clz(v[n - 1]);
    for (int i = n - 1; i > 0; i--)
        vn[i] = (uint32_t)(((uint64_t)v[i] << s) | ((uint64_t)v[i - 1] >> (32 - s)));
    vn[0] = (uint32_t)((uint64_t)v[0] << s);
    un[m] = (uint32_t)((uint64_t)u[m - 1] >> (32 - s));
    for (int i = m - 1; i > 0; i--)
        un[i] = (uint32_t)(((uint64_t)u[i] << s) | ((uint64_t)u[i - 1] >> (32 - s)));
    un[0] = (uint32_t)((uint64_t)u[0] << s);
    const uint64_t b = (uint64_t)1 << 32;
    for (int j = m - n; j >= 0; j--) {
        uint64_t num = ((uint64_t)un[j + n] << 32) | un[j + n - 1];
        uint64_t qhat = num / vn[n - 1];
        uint64_t rhat = num - qhat * vn[n - 1];
        while (qhat >= b || qhat * vn[n - 2] > ((rhat << 32) | un[j + n - 2])) {
            qhat--;
            rhat += vn[n - 1];
            if (rhat >= b) break;
        }
        int64_t k = 0, t;
        for (int i = 0; i < n; i++) {
            uint64_t p = qhat * vn[i];
            t = (int64_t)un[i + j] - k - (int64_t)(p & 0xFFFFFFFFu);
            un[i + j] = (uint32_t)t;
            k = (int64_t)(p >> 32) - (t >> 32);
        }
        t = (int64_t)un[j + n] - k;
        un[j + n] = (uint32_t)t;
        q[j] = (uint32_t)qhat;
        if (t < 0) {
            q[j]--;
            k = 0;
            for (int i = 0; i < n; i++) {
                t = (int64_t)un[i + j] + vn[i] + k;
                un[i + j] = (uint32_t)t;
                k = t >> 32;
            }
            un[j + n] = (uint32_t)(un[j + n] + k);
        }
    }
    for (int i = 0; i < n - 1; i++)
        r[i] = (uint32_t)(((uint64_t)un[i] >> s) | ((uint64_t)un[i + 1] << (32 - s)));
    r[n - 1] = (uint32_t)((uint64_t)un[n - 1] >> s);
}

/* ------------------------------------------------------------------------ */
/* Integers                                                                 */

static uint32_t *limbs(mq_arena *a, int n)
{
    return reward_mq_alloc(a, sizeof(uint32_t) * (size_t)(n > 0 ? n : 1));
}

static int set_mag(mq_int *r, uint32_t *d, int n, int sign)
{
    n = mag_trim(d, n);
    if (n > MQ_MAX_LIMBS) return -1;
    r->d = d;
    r->n = n;
    r->sign = n ? sign : 0;
    return 0;
}

void reward_mq_int_from_i64(mq_arena *a, mq_int *r, int64_t v)
{
    uint64_t m = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    uint32_t *d = limbs(a, 2);
    if (!d) {
        r->sign = 0, r->n = 0, r->d = NULL;
        return;
    }
    d[0] = (uint32_t)m;
    d[1] = (uint32_t)(m >> 32);
    set_mag(r, d, 2, v < 0 ? -1 : 1);
}

int reward_mq_int_from_dec(mq_arena *a, mq_int *r, const char *s, size_t n)
{
    /* 9.63 bits per decimal digit */
    if (n > (size_t)MQ_MAX_LIMBS * 9) return -1;
    int cap = (int)(n / 9) + 2;
    uint32_t *d = limbs(a, cap);
    if (!d) return -1;
    int dn = 0;
    for (size_t i = 0; i < n;) {
        uint32_t chunk = 0, mul = 1;
        for (int k = 0; k < 9 && i < n; k++, i++) {
            if (s[i] < '0' || s[i] > '9') return -1;
            chunk = chunk * 10 + (uint32_t)(s[i] - '0');
            mul *= 10;
        }
        uint64_t c = chunk;
        for (int j = 0; j < dn; j++) {
            c += (uint64_t)d[j] * mul;
            d[j] = (uint32_t)c;
            c >>= 32;
        }
        if (c) d[dn++] = (uint32_t)c;
    }
    return set_mag(r, d, dn, 1);
}

int reward_mq_int_is_zero(const mq_int *x) { return x->sign == 0; }

int reward_mq_int_cmp(const mq_int *x, const mq_int *y)
{
    if (x->sign != y->sign) return x->sign < y->sign ? -1 : 1;
    int c = mag_cmp(x->d, x->n, y->d, y->n);
    return x->sign >= 0 ? c : -c;
}

static int add_signed(mq_arena *a, mq_int *r, const mq_int *x, const mq_int *y, int ysign)
{
    if (x->sign == 0) {
        *r = *y;
        r->sign = ysign;
        return 0;
    }
    if (ysign == 0) {
        *r = *x;
        return 0;
    }
    int mx = x->n > y->n ? x->n : y->n;
    uint32_t *d = limbs(a, mx + 1);
    if (!d) return -1;
    if (x->sign == ysign) return set_mag(r, d, mag_add(d, x->d, x->n, y->d, y->n), x->sign);
    int c = mag_cmp(x->d, x->n, y->d, y->n);
    if (c == 0) {
        r->sign = 0, r->n = 0, r->d = d;
        return 0;
    }
    if (c > 0) return set_mag(r, d, mag_sub(d, x->d, x->n, y->d, y->n), x->sign);
    return set_mag(r, d, mag_sub(d, y->d, y->n, x->d, x->n), ysign);
}

int reward_mq_int_add(mq_arena *a, mq_int *r, const mq_int *x, const mq_int *y)
{
    return add_signed(a, r, x, y, y->sign);
}

int reward_mq_int_sub(mq_arena *a, mq_int *r, const mq_int *x, const mq_int *y)
{
    return add_signed(a, r, x, y, -y->sign);
}

int reward_mq_int_mul(mq_arena *a, mq_int *r, const mq_int *x, const mq_int *y)
{
    if (x->sign == 0 || y->sign == 0) {
        r->sign = 0, r->n = 0, r->d = NULL;
        return 0;
    }
    if (x->n + y->n > MQ_MAX_LIMBS + 1) return -1;
    uint32_t *d = limbs(a, x->n + y->n);
    if (!d) return -1;
    return set_mag(r, d, mag_mul(d, x->d, x->n, y->d, y->n), x->sign * y->sign);
}

int reward_mq_int_divmod(mq_arena *a, mq_int *q, mq_int *rem, const mq_int *x, const mq_int *y)
{
    if (y->sign == 0) return -1;
    if (mag_cmp(x->d, x->n, y->d, y->n) < 0) {
        if (q) q->sign = 0, q->n = 0, q->d = NULL;
        if (rem) *rem = *x;
        return 0;
    }
    int m = x->n, n = y->n;
    uint32_t *qd = limbs(a, m - n + 1), *rd = limbs(a, n);
    uint32_t *un = limbs(a, m + 1), *vn = limbs(a, n);
    if (!qd || !rd || !un || !vn) return -1;
    mag_divmod(qd, rd, x->d, m, y->d, n, un, vn);
    if (q && set_mag(q, qd, m - n + 1, x->sign * y->sign)) return -1;
    if (rem && set_mag(rem, rd, n, x->sign)) return -1;
    return 0;
}

int reward_mq_int_gcd(mq_arena *a, mq_int *r, const mq_int *x, const mq_int *y)
{
    mq_int u = *x, v = *y;
    u.sign = u.n ? 1 : 0;
    v.sign = v.n ? 1 : 0;
    while (v.sign) {
        mq_int t;
        if (!reward_mq_work(a, (long)u.n * v.n + 1)) return -1;
        if (reward_mq_int_divmod(a, NULL, &t, &u, &v)) return -1;
        t.sign = t.n ? 1 : 0;
        u = v;
        v = t;
    }
    *r = u;
    return 0;
}

long double reward_mq_int_to_ld(const mq_int *x)
{
    long double v = 0;
    for (int i = x->n - 1; i >= 0; i--) v = v * 4294967296.0L + x->d[i];
    return x->sign < 0 ? -v : v;
}

int reward_mq_int_to_i64(const mq_int *x, int64_t *v)
{
    if (x->n > 2) return 0;
    uint64_t m = 0;
    for (int i = x->n - 1; i >= 0; i--) m = (m << 32) | x->d[i];
    if (m > (uint64_t)INT64_MAX) return 0;
    *v = x->sign < 0 ? -(int64_t)m : (int64_t)m;
    return 1;
}

int reward_mq_int_to_dec(const mq_int *x, char *buf, size_t cap)
{
    if (cap < 2) return -1;
    if (x->sign == 0) {
        buf[0] = '0', buf[1] = 0;
        return 1;
    }
    uint32_t tmp[MQ_MAX_LIMBS + 2];
    int n = x->n;
    if (n > MQ_MAX_LIMBS + 1) return -1;
    memcpy(tmp, x->d, sizeof(uint32_t) * (size_t)n);
    char rev[MQ_MAX_LIMBS * 10 + 16];
    size_t k = 0;
    while (n > 0) {
        uint64_t rr = 0;
        for (int i = n - 1; i >= 0; i--) {
            uint64_t cur = (rr << 32) | tmp[i];
            tmp[i] = (uint32_t)(cur / 1000000000u);
            rr = cur % 1000000000u;
        }
        n = mag_trim(tmp, n);
        for (int j = 0; j < 9 && (n > 0 || rr); j++) {
            rev[k++] = (char)('0' + rr % 10);
            rr /= 10;
        }
    }
    size_t len = k + (x->sign < 0);
    if (len + 1 > cap) return -1;
    size_t o = 0;
    if (x->sign < 0) buf[o++] = '-';
    while (k) buf[o++] = rev[--k];
    buf[o] = 0;
    return (int)o;
}

/* ------------------------------------------------------------------------ */
/* Rationals                                                                */

int reward_mq_rat_make(mq_arena *a, mq_rat *r, const mq_int *num, const mq_int *den)
{
    if (den->sign == 0) return -1;
    if (num->sign == 0) {
        reward_mq_int_from_i64(a, &r->num, 0);
        reward_mq_int_from_i64(a, &r->den, 1);
        return 0;
    }
    mq_int g;
    if (reward_mq_int_gcd(a, &g, num, den)) return -1;
    mq_int nn, dd;
    if (reward_mq_int_divmod(a, &nn, NULL, num, &g) || reward_mq_int_divmod(a, &dd, NULL, den, &g)) return -1;
    if (dd.sign < 0) {
        dd.sign = 1;
        nn.sign = -nn.sign;
    }
    r->num = nn;
    r->den = dd;
    return 0;
}

int reward_mq_rat_from_i64(mq_arena *a, mq_rat *r, int64_t num, int64_t den)
{
    mq_int n, d;
    reward_mq_int_from_i64(a, &n, num);
    reward_mq_int_from_i64(a, &d, den);
    return reward_mq_rat_make(a, r, &n, &d);
}

static int pow10_int(mq_arena *a, mq_int *r, long e)
{
    if (e < 0 || e > (long)MQ_MAX_LIMBS * 9) return -1;
    reward_mq_int_from_i64(a, r, 1);
    mq_int ten;
    reward_mq_int_from_i64(a, &ten, 1000000000);
    while (e >= 9) {
        if (reward_mq_int_mul(a, r, r, &ten)) return -1;
        e -= 9;
    }
    int64_t m = 1;
    while (e-- > 0) m *= 10;
    mq_int t;
    reward_mq_int_from_i64(a, &t, m);
    return reward_mq_int_mul(a, r, r, &t);
}

int reward_mq_rat_from_decimal(mq_arena *a, mq_rat *r, const char *ip, size_t ipn, const char *fp,
                        size_t fpn, long exp10)
{
    if (ipn + fpn > (size_t)MQ_MAX_LIMBS * 9) return -1;
    char *digits = reward_mq_alloc(a, ipn + fpn + 1);
    if (!digits) return -1;
    memcpy(digits, ip, ipn);
    memcpy(digits + ipn, fp, fpn);
    mq_int num, den;
    if (reward_mq_int_from_dec(a, &num, digits, ipn + fpn)) return -1;
    long e = exp10 - (long)fpn;
    if (e >= 0) {
        mq_int p;
        if (pow10_int(a, &p, e) || reward_mq_int_mul(a, &num, &num, &p)) return -1;
        reward_mq_int_from_i64(a, &den, 1);
    } else if (pow10_int(a, &den, -e)) {
        return -1;
    }
    return reward_mq_rat_make(a, r, &num, &den);
}

int reward_mq_rat_add(mq_arena *a, mq_rat *r, const mq_rat *x, const mq_rat *y)
{
    mq_int t1, t2, n, d;
    if (reward_mq_int_mul(a, &t1, &x->num, &y->den) || reward_mq_int_mul(a, &t2, &y->num, &x->den) ||
        reward_mq_int_add(a, &n, &t1, &t2) || reward_mq_int_mul(a, &d, &x->den, &y->den))
        return -1;
    return reward_mq_rat_make(a, r, &n, &d);
}

void reward_mq_rat_neg(mq_rat *r, const mq_rat *x)
{
    *r = *x;
    r->num.sign = -r->num.sign;
}

int reward_mq_rat_sub(mq_arena *a, mq_rat *r, const mq_rat *x, const mq_rat *y)
{
    mq_rat ny;
    reward_mq_rat_neg(&ny, y);
    return reward_mq_rat_add(a, r, x, &ny);
}

int reward_mq_rat_mul(mq_arena *a, mq_rat *r, const mq_rat *x, const mq_rat *y)
{
    mq_int n, d;
    if (reward_mq_int_mul(a, &n, &x->num, &y->num) || reward_mq_int_mul(a, &d, &x->den, &y->den)) return -1;
    return reward_mq_rat_make(a, r, &n, &d);
}

int reward_mq_rat_div(mq_arena *a, mq_rat *r, const mq_rat *x, const mq_rat *y)
{
    if (y->num.sign == 0) return -1;
    mq_int n, d;
    if (reward_mq_int_mul(a, &n, &x->num, &y->den) || reward_mq_int_mul(a, &d, &x->den, &y->num)) return -1;
    return reward_mq_rat_make(a, r, &n, &d);
}

int reward_mq_rat_pow(mq_arena *a, mq_rat *r, const mq_rat *x, int64_t e)
{
    if (e == 0) return reward_mq_rat_from_i64(a, r, 1, 1);
    if (x->num.sign == 0) return e > 0 ? reward_mq_rat_from_i64(a, r, 0, 1) : -1;
    uint64_t m = e < 0 ? (uint64_t)0 - (uint64_t)e : (uint64_t)e;
    /* size check before doing the work: bits(result) ~ m * bits(x) */
    int bits = 32 * (x->num.n > x->den.n ? x->num.n : x->den.n);
    if (m > (uint64_t)(MQ_MAX_LIMBS * 32) || (uint64_t)bits * m > (uint64_t)(MQ_MAX_LIMBS * 32 + 64))
        return -1;
    mq_int bn = x->num, bd = x->den, rn, rd;
    reward_mq_int_from_i64(a, &rn, 1);
    reward_mq_int_from_i64(a, &rd, 1);
    while (m) {
        if (m & 1)
            if (reward_mq_int_mul(a, &rn, &rn, &bn) || reward_mq_int_mul(a, &rd, &rd, &bd)) return -1;
        m >>= 1;
        if (m)
            if (reward_mq_int_mul(a, &bn, &bn, &bn) || reward_mq_int_mul(a, &bd, &bd, &bd)) return -1;
    }
    if (e < 0) return reward_mq_rat_make(a, r, &rd, &rn);
    r->num = rn; /* already reduced: powers of coprime numbers stay coprime */
    r->den = rd;
    return 0;
}

int reward_mq_rat_cmp(const mq_rat *x, const mq_rat *y)
{
    /* reduced forms are unique */
    if (reward_mq_int_cmp(&x->den, &y->den) == 0) return reward_mq_int_cmp(&x->num, &y->num);
    mq_arena a;
    reward_mq_arena_init(&a);
    mq_int t1, t2;
    int c;
    if (reward_mq_int_mul(&a, &t1, &x->num, &y->den) || reward_mq_int_mul(&a, &t2, &y->num, &x->den)) {
        long double dx = reward_mq_rat_to_ld(x), dy = reward_mq_rat_to_ld(y);
        c = dx < dy ? -1 : dx > dy;
    } else {
        c = reward_mq_int_cmp(&t1, &t2);
    }
    reward_mq_arena_free(&a);
    return c;
}

int reward_mq_rat_is_int(const mq_rat *x) { return x->den.n == 1 && x->den.d[0] == 1; }
int reward_mq_rat_is_zero(const mq_rat *x) { return x->num.sign == 0; }

/* Top three limbs of a magnitude and the limb exponent of the rest. */
static long double top_limbs(const mq_int *x, int *exp_limbs)
{
    long double t = 0;
    int n = x->n, lo = n > 3 ? n - 3 : 0;
    for (int i = n - 1; i >= lo; i--) t = t * 4294967296.0L + x->d[i];
    *exp_limbs = lo;
    return t;
}

long double reward_mq_rat_to_ld(const mq_rat *x)
{
    if (x->num.sign == 0) return 0;
    int en, ed;
    long double tn = top_limbs(&x->num, &en), td = top_limbs(&x->den, &ed);
    long double v = ldexpl(tn / td, 32 * (en - ed));
    return x->num.sign < 0 ? -v : v;
}

int reward_mq_rat_round(mq_arena *a, mq_rat *r, const mq_rat *x, int digits)
{
    if (digits < 0 || digits > 60) return -1;
    mq_int p;
    if (pow10_int(a, &p, digits)) return -1;
    /* y = x * 10^d; round half to even; r = round(y) / 10^d */
    mq_int n, q, rem;
    if (reward_mq_int_mul(a, &n, &x->num, &p)) return -1;
    if (reward_mq_int_divmod(a, &q, &rem, &n, &x->den)) return -1;
    /* compare 2|rem| with den */
    mq_int two, t;
    reward_mq_int_from_i64(a, &two, 2);
    mq_int arem = rem;
    arem.sign = arem.n ? 1 : 0;
    if (reward_mq_int_mul(a, &t, &arem, &two)) return -1;
    int c = reward_mq_int_cmp(&t, &x->den);
    int odd = q.n > 0 && (q.d[0] & 1);
    if (c > 0 || (c == 0 && odd)) {
        mq_int one;
        reward_mq_int_from_i64(a, &one, x->num.sign < 0 ? -1 : 1);
        if (reward_mq_int_add(a, &q, &q, &one)) return -1;
    }
    return reward_mq_rat_make(a, r, &q, &p);
}

/* Integer square root of a non-negative int by Newton's method. */
static int int_isqrt(mq_arena *a, mq_int *r, const mq_int *x)
{
    if (x->sign == 0) {
        *r = *x;
        return 0;
    }
    /* start from a power of two above sqrt(x) */
    int bits = 32 * x->n;
    mq_int g;
    reward_mq_int_from_i64(a, &g, 1);
    int half = (bits + 1) / 2 + 1;
    uint32_t *d = limbs(a, half / 32 + 1);
    if (!d) return -1;
    d[half / 32] = (uint32_t)1 << (half % 32);
    if (set_mag(&g, d, half / 32 + 1, 1)) return -1;
    for (int it = 0; it < 4 * bits + 8; it++) {
        mq_int q, s, two, ng;
        reward_mq_int_from_i64(a, &two, 2);
        if (reward_mq_int_divmod(a, &q, NULL, x, &g) || reward_mq_int_add(a, &s, &g, &q) ||
            reward_mq_int_divmod(a, &ng, NULL, &s, &two))
            return -1;
        if (reward_mq_int_cmp(&ng, &g) >= 0) break;
        g = ng;
    }
    *r = g;
    return 0;
}

int reward_mq_rat_sqrt_exact(mq_arena *a, mq_rat *r, const mq_rat *x)
{
    if (x->num.sign < 0) return 0;
    mq_int sn, sd, t;
    if (int_isqrt(a, &sn, &x->num) || int_isqrt(a, &sd, &x->den)) return 0;
    if (reward_mq_int_mul(a, &t, &sn, &sn) || reward_mq_int_cmp(&t, &x->num) != 0) return 0;
    if (reward_mq_int_mul(a, &t, &sd, &sd) || reward_mq_int_cmp(&t, &x->den) != 0) return 0;
    r->num = sn;
    r->den = sd;
    return 1;
}
