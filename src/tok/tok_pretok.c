/*
 * Pre-tokenization: the Split pre-tokenizer (and Digits and ByteLevel's
 * regex, which are Splits) through PCRE2 with UTF and UCP, JIT-compiled.
 *
 * Hugging Face runs these regexes with Oniguruma. Two differences matter and
 * are bridged here:
 *   - Oniguruma's \s is Unicode White_Space; PCRE2's also matches U+180E.
 *     \s and \S outside classes, and \s inside classes, are rewritten to
 *     the White_Space set before compiling.
 *   - Oniguruma's find_iter skips an empty match that starts right where the
 *     previous match ended (then moves one character on); the loop below
 *     does the same, so patterns that can match "" split identically.
 * Unicode property tables are PCRE2's (Unicode 14 in PCRE2 10.42), not
 * Oniguruma's; characters assigned after Unicode 14 may classify differently.
 */
#include "tok/tok_int.h"

#include <stdlib.h>
#include <string.h>

#define WS_SET "\\t-\\r\\x{85}\\p{Z}"

/* Rewrite Oniguruma-isms; returns a malloc'd pattern. */
static char *rewrite_pattern(const char *p) {
    base_buf b = {0};
    int in_class = 0;
    size_t n = strlen(p);
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char d = p[i + 1];
            if (d == 's') base_buf_puts(&b, in_class ? WS_SET : "[" WS_SET "]");
            else if (d == 'S' && !in_class) base_buf_puts(&b, "[^" WS_SET "]");
            else base_buf_append(&b, p + i, 2);
            i++;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            base_buf_append(&b, p + i, 1);
            /* "[^]..." and "[]...": a leading ']' is a literal */
            if (i + 1 < n && p[i + 1] == '^') base_buf_append(&b, p + ++i, 1);
            if (i + 1 < n && p[i + 1] == ']') base_buf_append(&b, p + ++i, 1);
            continue;
        }
        if (in_class && c == '[' && i + 1 < n && p[i + 1] == ':') {
            /* POSIX class [:name:] inside a class */
            const char *end = strstr(p + i + 2, ":]");
            if (end) {
                base_buf_append(&b, p + i, (size_t)(end + 2 - (p + i)));
                i = (size_t)(end + 1 - p);
                continue;
            }
        }
        if (in_class && c == ']') in_class = 0;
        base_buf_append(&b, p + i, 1);
    }
    if (!b.data) base_buf_puts(&b, "");
    return b.data;
}

pcre2_code *tok_regex_compile(const char *pattern, int literal, const char *what, int *jit) {
    char *pat = literal ? base_xstrdup(pattern) : rewrite_pattern(pattern);
    int err;
    PCRE2_SIZE off;
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, opts, &err, &off, NULL);
    free(pat);
    *jit = 0;
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        base_err_set(BASE_ERR_INVALID, "%s: bad regex \"%s\": %s (near offset %zu)", what,
                     pattern, (const char *)msg, (size_t)off);
        return NULL;
    }
    *jit = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
    return re;
}

/* One search from `start`; returns 1 with [*ms, *me), 0 for no match, -1 on
 * an engine error (message set). */
static int search(const tok_pre_step *st, tok_scratch *s, const char *subj, size_t len,
                  size_t start, size_t *ms, size_t *me) {
    int rc;
    if (st->jit) {
        rc = pcre2_jit_match(st->re, (PCRE2_SPTR)subj, len, start, 0, s->md, s->mctx);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(st->re, (PCRE2_SPTR)subj, len, start,
                             PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, s->md, s->mctx);
    } else {
        rc = pcre2_match(st->re, (PCRE2_SPTR)subj, len, start, PCRE2_NO_UTF_CHECK, s->md,
                         s->mctx);
    }
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        base_err_set(BASE_ERR_LIMIT, "pre-tokenizer regex failed on a %zu-byte piece: %s", len,
                     (const char *)msg);
        return -1;
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}

/* A span of the piece and whether it is a (possibly inverted) match. */
typedef struct {
    size_t s, e;
    int m;
} span;

typedef struct {
    span *v;
    size_t n, cap;
} spans;

static void spans_push(spans *v, size_t s, size_t e, int m) {
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->v = base_xrealloc(v->v, v->cap * sizeof *v->v);
    }
    v->v[v->n++] = (span){s, e, m};
}

/* HF Pattern::find_matches for a regex, with onig's find_iter. */
static base_status find_matches(const tok_pre_step *st, tok_scratch *s, const char *p, size_t n,
                                spans *out) {
    out->n = 0;
    size_t prev = 0, last_end = 0;
    int have_last = 0;
    size_t last_match_end = 0;
    while (last_end <= n) {
        size_t ms, me;
        int r = search(st, s, p, n, last_end, &ms, &me);
        if (r < 0) return BASE_ERR_LIMIT;
        if (r == 0) break;
        if (ms == me && have_last && last_match_end == me) {
            if (last_end >= n) break;
            int adv;
            tok_utf8_get(p + last_end, n - last_end, &adv);
            last_end += (size_t)adv;
            continue;
        }
        last_end = me;
        last_match_end = me;
        have_last = 1;
        if (prev != ms) spans_push(out, prev, ms, st->invert);
        spans_push(out, ms, me, !st->invert);
        prev = me;
    }
    if (prev != n) spans_push(out, prev, n, st->invert);
    return BASE_OK;
}

/* NormalizedString::split's fold over the matches for each behaviour; the
 * result keeps only the spans to emit (m = 0 means keep). */
static void apply_behavior(tok_split_behavior b, spans *v) {
    size_t k = 0;
    int prev_match = 0;
    switch (b) {
    case TOK_SPLIT_ISOLATED:
        for (size_t i = 0; i < v->n; i++) v->v[i].m = 0;
        return;
    case TOK_SPLIT_REMOVED:
        for (size_t i = 0; i < v->n; i++)
            if (!v->v[i].m) v->v[k++] = v->v[i];
        v->n = k;
        return;
    case TOK_SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < v->n; i++) {
            int m = v->v[i].m;
            if (m == prev_match && k) v->v[k - 1].e = v->v[i].e;
            else v->v[k++] = (span){v->v[i].s, v->v[i].e, 0};
            prev_match = m;
        }
        v->n = k;
        return;
    case TOK_SPLIT_MERGED_PREV:
        for (size_t i = 0; i < v->n; i++) {
            int m = v->v[i].m;
            if (m && !prev_match && k) v->v[k - 1].e = v->v[i].e;
            else v->v[k++] = (span){v->v[i].s, v->v[i].e, 0};
            prev_match = m;
        }
        v->n = k;
        return;
    case TOK_SPLIT_MERGED_NEXT: {
        /* fold from the end, building in reverse at the tail, then compact */
        size_t w = v->n;
        for (size_t i = v->n; i-- > 0;) {
            span cur = v->v[i];
            if (cur.m && !prev_match && w < v->n) v->v[w].s = cur.s;
            else v->v[--w] = (span){cur.s, cur.e, 0};
            prev_match = cur.m;
        }
        if (w < v->n) memmove(v->v, v->v + w, (v->n - w) * sizeof *v->v);
        v->n -= w;
        return;
    }
    }
}

static base_status split_piece(const tok_pre_step *st, tok_scratch *s, const tok_piece *pc,
                               spans *sp, tok_pieces *out) {
    base_status r = find_matches(st, s, pc->p, pc->n, sp);
    if (r) return r;
    apply_behavior(st->behavior, sp);
    for (size_t i = 0; i < sp->n; i++)
        if (sp->v[i].e > sp->v[i].s)
            tok_pieces_push(out, pc->p + sp->v[i].s, sp->v[i].e - sp->v[i].s, -1);
    return BASE_OK;
}

base_status tok_pretokenize(const tok_tokenizer *tk, tok_scratch *s) {
    spans sp = {0};
    base_status r = BASE_OK;
    for (int k = 0; k < tk->n_pre && !r; k++) {
        const tok_pre_step *st = &tk->pre[k];
        s->b.n = 0;
        if (st->kind == TOK_PRE_PREFIX_SPACE) {
            /* reserve once so piece pointers into the buffer stay valid */
            size_t need = 0;
            for (size_t i = 0; i < s->a.n; i++) need += s->a.v[i].n + 1;
            base_buf_reset(&s->prefixed);
            if (s->prefixed.cap < need + 1) {
                s->prefixed.data = base_xrealloc(s->prefixed.data, need + 1);
                s->prefixed.cap = need + 1;
            }
            for (size_t i = 0; i < s->a.n; i++) {
                tok_piece pc = s->a.v[i];
                if (pc.id < 0 && pc.p[0] != ' ') {
                    char *d = s->prefixed.data + s->prefixed.len;
                    d[0] = ' ';
                    memcpy(d + 1, pc.p, pc.n);
                    s->prefixed.len += pc.n + 1;
                    pc.p = d;
                    pc.n++;
                }
                tok_pieces_push(&s->b, pc.p, pc.n, pc.id);
            }
        } else {
            for (size_t i = 0; i < s->a.n && !r; i++) {
                const tok_piece *pc = &s->a.v[i];
                if (pc->id >= 0) tok_pieces_push(&s->b, pc->p, pc->n, pc->id);
                else r = split_piece(st, s, pc, &sp, &s->b);
            }
        }
        tok_pieces t = s->a;
        s->a = s->b;
        s->b = t;
    }
    free(sp.v);
    return r;
}
