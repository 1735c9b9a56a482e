/*
 * Structural operations on mq_node trees: the canonical text of a tree
 * (commutative operands sorted, the key of exact comparisons), its free
 * atoms, renaming of symbols, and matrix arithmetic (products, scaling,
 * the value of a matrix expression). Evaluation is in meval.c.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "reward/rules/rules_int.h"

/* ------------------------------------------------------------------------ */
/* Canonical text                                                           */

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

static const char *rel_str(mq_rel r)
{
    static const char *const s[] = {"=", "!=", "<", "<=", ">", ">="};
    return s[r];
}

static int canon_rec(mq_arena *a, const mq_node *n, base_buf *b, int depth)
{
    if (depth > MQ_MAX_DEPTH * 2 || !reward_mq_work(a, 1) || b->len > ((size_t)4 << 20)) return -1;
    switch (n->kind) {
    case MQ_NUM: {
        char buf[MQ_MAX_LIMBS * 10 + 16];
        if (reward_mq_int_to_dec(&n->q.num, buf, sizeof buf) < 0) return -1;
        base_buf_puts(b, buf);
        if (!reward_mq_rat_is_int(&n->q)) {
            if (reward_mq_int_to_dec(&n->q.den, buf, sizeof buf) < 0) return -1;
            base_buf_printf(b, "/%s", buf);
        }
        return 0;
    }
    case MQ_SYM: base_buf_puts(b, n->name); return 0;
    case MQ_CONST: base_buf_printf(b, "#%s", n->name); return 0;
    case MQ_SPECIAL: base_buf_printf(b, "$%s", n->name); return 0;
    default: break;
    }
    /* kids' texts */
    const char **ks = n->nk ? reward_mq_alloc(a, sizeof(char *) * (size_t)n->nk) : NULL;
    if (n->nk && !ks) return -1;
    for (int i = 0; i < n->nk; i++) {
        base_buf kb = {0};
        if (canon_rec(a, n->kids[i], &kb, depth + 1)) {
            base_buf_free(&kb);
            return -1;
        }
        ks[i] = reward_mq_strndup(a, kb.data ? kb.data : "", kb.len);
        base_buf_free(&kb);
        if (!ks[i]) return -1;
    }
    int sorted = n->kind == MQ_ADD || n->kind == MQ_MUL || n->kind == MQ_SET ||
                 n->kind == MQ_UNION || n->kind == MQ_INTER;
    if (sorted) qsort(ks, (size_t)n->nk, sizeof *ks, cmp_str);
    const char *head = "?";
    switch (n->kind) {
    case MQ_ADD: head = "add"; break;
    case MQ_MUL: head = "mul"; break;
    case MQ_NEG: head = "neg"; break;
    case MQ_DIV: head = "div"; break;
    case MQ_POW: head = "pow"; break;
    case MQ_FUNC: head = reward_mq_fn_name(n->fn); break;
    case MQ_APPLY: head = n->name; break;
    case MQ_PCT: head = "pct"; break;
    case MQ_BIGOP: head = n->name; break;
    case MQ_PM: head = "pm"; break;
    case MQ_REL: head = rel_str(n->rel); break;
    case MQ_AND: head = "and"; break;
    case MQ_SET: head = "set"; break;
    case MQ_TUPLE: head = "tuple"; break;
    case MQ_INTERVAL:
        head = (n->flags & MQ_F_LOPEN) ? ((n->flags & MQ_F_ROPEN) ? "ivl()" : "ivl(]")
                                       : ((n->flags & MQ_F_ROPEN) ? "ivl[)" : "ivl[]");
        break;
    case MQ_UNION: head = "union"; break;
    case MQ_INTER: head = "inter"; break;
    case MQ_SETMINUS: head = "minus"; break;
    case MQ_MATRIX: head = "matrix"; break;
    case MQ_RELSET: head = "relset"; break;
    default: break;
    }
    base_buf_puts(b, head);
    if (n->kind == MQ_APPLY) base_buf_puts(b, "@");
    if (n->kind == MQ_MATRIX) base_buf_printf(b, "%dx%d", n->rows, n->cols);
    base_buf_puts(b, "(");
    for (int i = 0; i < n->nk; i++) {
        if (i) base_buf_puts(b, ",");
        base_buf_puts(b, ks[i]);
    }
    base_buf_puts(b, ")");
    return 0;
}

const char *reward_mq_canon(mq_arena *a, const mq_node *n)
{
    base_buf b = {0};
    const char *r = NULL;
    if (!canon_rec(a, n, &b, 0)) r = reward_mq_strndup(a, b.data ? b.data : "", b.len);
    base_buf_free(&b);
    return r;
}

/* ------------------------------------------------------------------------ */
/* Atoms and renaming                                                       */

static void atoms_rec(mq_arena *a, const mq_node *n, const char **out, int *k, int cap,
                      const char *bound, int fn_atoms)
{
    if (n->kind == MQ_SYM || (fn_atoms && n->kind == MQ_APPLY)) {
        const char *t = n->kind == MQ_SYM ? n->name : reward_mq_canon(a, n);
        if (!t || (bound && strcmp(t, bound) == 0)) return;
        for (int i = 0; i < *k && i < cap; i++) /* only the stored ones */
            if (strcmp(out[i], t) == 0) return;
        if (*k < cap) out[(*k)++] = t;
        else (*k)++;
        return;
    }
    if (n->kind == MQ_BIGOP) {
        for (int i = 1; i < n->nk; i++) atoms_rec(a, n->kids[i], out, k, cap, n->kids[0]->name, fn_atoms);
        return;
    }
    for (int i = 0; i < n->nk; i++) atoms_rec(a, n->kids[i], out, k, cap, bound, fn_atoms);
}

int reward_mq_atoms(mq_arena *a, const mq_node *n, const char **out, int cap, int fn_atoms)
{
    int k = 0;
    atoms_rec(a, n, out, &k, cap, NULL, fn_atoms);
    if (k > cap) return k;
    qsort(out, (size_t)k, sizeof *out, cmp_str);
    return k;
}

mq_node *reward_mq_rename(mq_arena *a, const mq_node *n, const char **from, const char **to, int k)
{
    mq_node *c = reward_mq_new(a, n->kind, n->nk);
    if (!c) return NULL;
    mq_node **kids = c->kids;
    *c = *n;
    c->kids = kids;
    if (n->kind == MQ_SYM)
        for (int i = 0; i < k; i++)
            if (strcmp(n->name, from[i]) == 0) c->name = to[i];
    for (int i = 0; i < n->nk; i++) {
        c->kids[i] = reward_mq_rename(a, n->kids[i], from, to, k);
        if (!c->kids[i]) return NULL;
    }
    return c;
}

/* ------------------------------------------------------------------------ */
/* Matrices                                                                 */

int reward_mq_is_matrix_expr(const mq_node *n)
{
    switch (n->kind) {
    case MQ_MATRIX: return 1;
    case MQ_ADD:
    case MQ_MUL:
        for (int i = 0; i < n->nk; i++)
            if (reward_mq_is_matrix_expr(n->kids[i])) return 1;
        return 0;
    case MQ_NEG:
    case MQ_DIV:
    case MQ_POW: return reward_mq_is_matrix_expr(n->kids[0]);
    default: return 0;
    }
}

static mq_node *mat_new(mq_arena *a, int r, int c)
{
    if (r * c > MQ_MAX_ELEMS) return NULL;
    mq_node *m = reward_mq_new(a, MQ_MATRIX, r * c);
    if (!m) return NULL;
    m->rows = r, m->cols = c;
    return m;
}

static mq_node *mat_mul(mq_arena *a, const mq_node *x, const mq_node *y)
{
    if (x->cols != y->rows) return NULL;
    mq_node *m = mat_new(a, x->rows, y->cols);
    if (!m) return NULL;
    for (int i = 0; i < x->rows; i++)
        for (int j = 0; j < y->cols; j++) {
            mq_node *s = reward_mq_new(a, MQ_ADD, x->cols);
            if (!s) return NULL;
            for (int k = 0; k < x->cols; k++) {
                s->kids[k] = reward_mq_bin(a, MQ_MUL, x->kids[i * x->cols + k], y->kids[k * y->cols + j]);
                if (!s->kids[k]) return NULL;
            }
            m->kids[i * m->cols + j] = s;
        }
    return m;
}

static mq_node *mat_scale(mq_arena *a, const mq_node *x, mq_node *s, mq_kind how)
{
    mq_node *m = mat_new(a, x->rows, x->cols);
    if (!m) return NULL;
    for (int i = 0; i < x->nk; i++) {
        m->kids[i] = how == MQ_NEG ? reward_mq_un(a, MQ_NEG, x->kids[i]) : reward_mq_bin(a, how, x->kids[i], s);
        if (!m->kids[i]) return NULL;
    }
    return m;
}

mq_node *reward_mq_matrix_value(mq_arena *a, const mq_node *n)
{
    switch (n->kind) {
    case MQ_MATRIX: return (mq_node *)n;
    case MQ_NEG: {
        mq_node *x = reward_mq_matrix_value(a, n->kids[0]);
        return x ? mat_scale(a, x, NULL, MQ_NEG) : NULL;
    }
    case MQ_DIV: {
        mq_node *x = reward_mq_matrix_value(a, n->kids[0]);
        if (!x || reward_mq_is_matrix_expr(n->kids[1])) return NULL;
        return mat_scale(a, x, n->kids[1], MQ_DIV);
    }
    case MQ_ADD: {
        mq_node *acc = NULL;
        for (int i = 0; i < n->nk; i++) {
            mq_node *x = reward_mq_matrix_value(a, n->kids[i]);
            if (!x) return NULL;
            if (!acc) {
                acc = x;
                continue;
            }
            if (x->rows != acc->rows || x->cols != acc->cols) return NULL;
            mq_node *m = mat_new(a, x->rows, x->cols);
            if (!m) return NULL;
            for (int k = 0; k < x->nk; k++) {
                m->kids[k] = reward_mq_bin(a, MQ_ADD, acc->kids[k], x->kids[k]);
                if (!m->kids[k]) return NULL;
            }
            acc = m;
        }
        return acc;
    }
    case MQ_MUL: {
        mq_node *acc = NULL;
        mq_node *scal[32];
        int ns = 0;
        for (int i = 0; i < n->nk; i++) {
            if (!reward_mq_is_matrix_expr(n->kids[i])) {
                if (ns >= 32) return NULL;
                scal[ns++] = n->kids[i];
                continue;
            }
            mq_node *x = reward_mq_matrix_value(a, n->kids[i]);
            if (!x) return NULL;
            acc = acc ? mat_mul(a, acc, x) : x;
            if (!acc) return NULL;
        }
        for (int i = 0; i < ns && acc; i++) acc = mat_scale(a, acc, scal[i], MQ_MUL);
        return acc;
    }
    case MQ_POW: {
        mq_node *x = reward_mq_matrix_value(a, n->kids[0]);
        const mq_node *k = n->kids[1];
        int64_t e;
        if (!x || k->kind != MQ_NUM || !reward_mq_rat_is_int(&k->q) || !reward_mq_int_to_i64(&k->q.num, &e) ||
            e < 1 || e > 8)
            return NULL;
        mq_node *acc = x;
        for (int64_t i = 1; i < e && acc; i++) acc = mat_mul(a, acc, x);
        return acc;
    }
    default: return NULL;
    }
}
