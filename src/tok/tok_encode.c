/*
 * The encode pipeline (Tokenizer::encode of Hugging Face tokenizers):
 *   1. added tokens with normalized=false, matched on the raw text;
 *   2. the normalizer on the other pieces, then added tokens with
 *      normalized=true matched on the normalized text;
 *   3. the pre-tokenizer steps;
 *   4. the BPE model on each pre-token (byte-level mapped when ByteLevel);
 *   5. with TOK_ENC_ADD_SPECIAL, the BOS/EOS (or template) ids around it.
 * Every call borrows a scratch (buffers, regex match data, word cache) from
 * the tokenizer's locked free list, so calls on one tokenizer may run on any
 * number of threads at once.
 */
#include "tok/tok_int.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Scratch                                                                  */

tok_scratch *tok_scratch_get(const tok_tokenizer *tk) {
    tok_tokenizer *m = (tok_tokenizer *)tk; /* the free list is the only mutable part */
    pthread_mutex_lock(&m->mu);
    tok_scratch *s = m->free_scratch;
    if (s) m->free_scratch = s->next_free;
    pthread_mutex_unlock(&m->mu);
    if (s) return s;
    s = base_xcalloc(1, sizeof *s);
    s->md = pcre2_match_data_create(16, NULL);
    s->mctx = pcre2_match_context_create(NULL);
    s->jstack = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, NULL);
    if (!s->md || !s->mctx || !s->jstack) base_die("pcre2: out of memory");
    pcre2_jit_stack_assign(s->mctx, NULL, s->jstack);
    return s;
}

void tok_scratch_put(const tok_tokenizer *tk, tok_scratch *s) {
    tok_tokenizer *m = (tok_tokenizer *)tk;
    pthread_mutex_lock(&m->mu);
    s->next_free = m->free_scratch;
    m->free_scratch = s;
    pthread_mutex_unlock(&m->mu);
}

void tok_scratch_free(tok_scratch *s) {
    free(s->a.v);
    free(s->b.v);
    base_buf_free(&s->norm);
    base_buf_free(&s->prefixed);
    base_buf_free(&s->mapped);
    free(s->syms);
    free(s->heap);
    pcre2_match_data_free(s->md);
    pcre2_match_context_free(s->mctx);
    pcre2_jit_stack_free(s->jstack);
    free(s->cache);
    base_buf_free(&s->cache_keys);
    free(s->cache_ids);
    free(s->prot);
    free(s);
}

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                    */

/* Length of the well-formed prefix of the sequence starting at s[0] (a lead
 * byte >= 0x80), and in *need the full length its lead byte announces (0 for
 * a byte that cannot start a sequence). Ranges per Unicode Table 3-7. */
static size_t utf8_prefix(const uint8_t *s, size_t n, size_t *need) {
    uint8_t b = s[0], lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) *need = 2;
    else if (b >= 0xE0 && b <= 0xEF) *need = 3;
    else if (b >= 0xF0 && b <= 0xF4) *need = 4;
    else {
        *need = 0;
        return 0;
    }
    if (b == 0xE0) lo = 0xA0;
    else if (b == 0xED) hi = 0x9F;
    else if (b == 0xF0) lo = 0x90;
    else if (b == 0xF4) hi = 0x8F;
    size_t k = 1;
    for (; k < *need && k < n; k++) {
        uint8_t c = s[k];
        if (k == 1 ? (c < lo || c > hi) : (c & 0xC0) != 0x80) break;
    }
    return k;
}

size_t tok_utf8_check(const char *str, size_t len) {
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0;
    while (i < len) {
        if (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t need, k = utf8_prefix(s + i, len - i, &need);
        if (!need || k != need) return i;
        i += need;
    }
    return len;
}

void tok_utf8_lossy_at(const char *str, size_t len, int nul, base_buf *out) {
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0, run = 0; /* [run, i) is valid and not yet copied */
    while (i < len) {
        size_t need = 0, k = 0;
        if (s[i] < 0x80) {
            if (s[i] || !nul) {
                i++;
                continue;
            }
        } else {
            k = utf8_prefix(s + i, len - i, &need);
            if (need && k == need) {
                i += need;
                continue;
            }
        }
        base_buf_append(out, str + run, i - run);
        base_buf_puts(out, "\xEF\xBF\xBD");
        i += k ? k : 1;
        run = i;
    }
    if (len > run) base_buf_append(out, str + run, len - run);
    if (!out->data) base_buf_puts(out, "");
}

void tok_utf8_lossy(const char *str, size_t len, base_buf *out) { tok_utf8_lossy_at(str, len, 0, out); }

/* ------------------------------------------------------------------------ */
/* Pipeline                                                                 */

/* A piece after step 1 that still needs normalizing and step-2 matching. */
typedef struct {
    size_t off, n;         /* in text (not normalized) or in s->norm */
    size_t prot_i, prot_n; /* its protected ranges in s->prot, piece-relative pairs */
} seg;

static void prot_push(tok_scratch *s, size_t a, size_t b) {
    if (s->prot_n + 2 > s->prot_cap) {
        s->prot_cap = s->prot_cap ? s->prot_cap * 2 : 64;
        s->prot = base_xrealloc(s->prot, s->prot_cap * sizeof *s->prot);
    }
    s->prot[s->prot_n++] = a;
    s->prot[s->prot_n++] = b;
}

base_status tok_encode_ranges(const tok_tokenizer *tk, const char *text, size_t len,
                              const tok_range *prot, int n_prot, int flags, tok_ids *out) {
    size_t bad = tok_utf8_check(text, len);
    if (bad != len)
        return base_err_set(BASE_ERR_INVALID, "invalid UTF-8 at byte %zu of a %zu-byte text "
                            "(tok_utf8_lossy can repair it)", bad, len);
    tok_scratch *s = tok_scratch_get(tk);
    int64_t n0 = out->n;
    base_status st = BASE_OK;

    /* step 1: raw-matched added tokens, the whole text as one piece */
    s->prot_n = 0;
    for (int i = 0; i < n_prot; i++) prot_push(s, prot[i].start, prot[i].end);
    s->b.n = 0;
    tok_added_split(tk, &tk->trie_raw, text, len, s->prot, s->prot_n / 2, flags, &s->b);

    /* step 2: normalize the text pieces, keeping protected ranges aligned */
    seg *segs = base_xmalloc((s->b.n ? s->b.n : 1) * sizeof *segs);
    size_t nseg = 0;
    base_buf_reset(&s->norm);
    for (size_t i = 0; i < s->b.n; i++) {
        tok_piece pc = s->b.v[i];
        if (pc.id >= 0) continue;
        size_t off = (size_t)(pc.p - text), end = off + pc.n;
        seg g = {.prot_i = s->prot_n};
        /* cut the piece at protected boundaries and normalize part by part */
        size_t pos_norm = s->norm.len, a = off;
        for (int r = 0; r <= n_prot && !st; r++) {
            size_t ps = end, pe = end;
            if (r < n_prot) {
                ps = prot[r].start > off ? prot[r].start : off;
                pe = prot[r].end < end ? prot[r].end : end;
                if (pe <= ps) continue;
            }
            for (int part = 0; part < 2 && !st; part++) {
                size_t from = part ? ps : a, to = part ? pe : ps;
                if (to <= from) continue;
                size_t before = tk->norm ? s->norm.len - pos_norm : from - off;
                if (tk->norm) st = tok_normalize(tk->norm, text + from, to - from, &s->norm);
                size_t after = tk->norm ? s->norm.len - pos_norm : to - off;
                if (part) prot_push(s, before, after);
            }
            a = pe;
        }
        if (st) break;
        g.off = tk->norm ? pos_norm : off;
        g.n = tk->norm ? s->norm.len - pos_norm : pc.n;
        g.prot_n = (s->prot_n - g.prot_i) / 2;
        segs[nseg++] = g;
    }
    if (st) {
        free(segs);
        tok_scratch_put(tk, s);
        return base_err_wrap(st, "normalizer of %s", tk->path);
    }

    /* step 2b: normalized-matched added tokens; rebuild the piece list */
    s->a.n = 0;
    size_t gi = 0;
    for (size_t i = 0; i < s->b.n; i++) {
        tok_piece pc = s->b.v[i];
        if (pc.id >= 0) {
            tok_pieces_push(&s->a, pc.p, pc.n, pc.id);
            continue;
        }
        seg g = segs[gi++];
        if (!g.n) continue; /* (s->norm.data and s->prot may be NULL: no NULL + 0) */
        const char *base = (tk->norm ? s->norm.data : text) + g.off;
        tok_added_split(tk, &tk->trie_norm, base, g.n, g.prot_n ? s->prot + g.prot_i : NULL,
                        g.prot_n, flags, &s->a);
    }
    free(segs);

    /* steps 3-4 */
    st = tok_pretokenize(tk, s);
    if (!st) {
        if (flags & TOK_ENC_ADD_SPECIAL)
            for (int i = 0; i < tk->n_prefix_ids; i++) tok_ids_push(out, tk->prefix_ids[i]);
        for (size_t i = 0; i < s->a.n; i++) {
            const tok_piece *pc = &s->a.v[i];
            if (pc->id >= 0) tok_ids_push(out, pc->id);
            else tok_bpe_word(tk, s, pc->p, pc->n, out);
        }
        if (flags & TOK_ENC_ADD_SPECIAL)
            for (int i = 0; i < tk->n_suffix_ids; i++) tok_ids_push(out, tk->suffix_ids[i]);
    } else {
        out->n = n0;
    }
    tok_scratch_put(tk, s);
    return st;
}

base_status tok_encode(const tok_tokenizer *tk, const char *text, size_t len, int flags,
                       tok_ids *out) {
    return tok_encode_ranges(tk, text, len, NULL, 0, flags, out);
}

/* ------------------------------------------------------------------------ */
/* Batch                                                                    */

typedef struct {
    const tok_tokenizer *tk;
    const char *const *texts;
    const size_t *lens;
    int flags;
    tok_ids *outs;
    base_status *st;
} batch_ctx;

static void batch_one(void *ctx, int64_t i, int worker) {
    (void)worker;
    batch_ctx *c = ctx;
    size_t n = c->lens ? c->lens[i] : strlen(c->texts[i]);
    c->st[i] = tok_encode(c->tk, c->texts[i], n, c->flags, &c->outs[i]);
}

base_status tok_encode_batch(const tok_tokenizer *tk, base_pool *pool, const char *const *texts,
                             const size_t *lens, int64_t n, int flags, tok_ids *outs,
                             base_status *status) {
    base_status *st = status ? status : base_xcalloc((size_t)(n > 0 ? n : 1), sizeof *st);
    batch_ctx c = {tk, texts, lens, flags, outs, st};
    if (pool) base_pool_for(pool, n, batch_one, &c);
    else
        for (int64_t i = 0; i < n; i++) batch_one(&c, i, 0);
    base_status r = BASE_OK;
    for (int64_t i = 0; i < n; i++) {
        if (st[i] == BASE_OK) continue;
        /* the worker's message is thread-local: encode again here for it */
        tok_ids tmp = {0};
        r = tok_encode(tk, texts[i], lens ? lens[i] : strlen(texts[i]), flags, &tmp);
        tok_ids_free(&tmp);
        if (!r) r = base_err_set(st[i], "encoding failed");
        base_err_wrap(r, "text %lld of the batch", (long long)i);
        break;
    }
    if (st != status) free(st);
    return r;
}
