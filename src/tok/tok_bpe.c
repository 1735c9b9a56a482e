/*
 * The BPE model on one pre-token: a port of BPE::merge_word and
 * Word::merge_all of Hugging Face tokenizers. Symbols form a linked list in
 * an array; candidate merges sit in a binary min-heap ordered by (rank,
 * position) and are validated when popped, so a word of n symbols costs
 * O(n log n), never O(n^2). The tie order (leftmost position first) and the
 * validation rule are HF's, so results agree id for id.
 *
 * A per-scratch word cache maps pre-token bytes to ids (HF keeps a similar
 * cache); it is bounded and cleared when full.
 */
#include "tok/tok_int.h"

#include <stdlib.h>
#include <string.h>

struct tok_sym {
    int32_t id;
    int32_t prev, next; /* -1 at the ends */
    uint32_t len;       /* bytes; 0 = merged away */
};

struct tok_merge {
    int32_t rank, pos, new_id;
};

enum { CACHE_SLOTS = 1 << 15, CACHE_MAX_KEY = 255, CACHE_MAX_BYTES = 4 << 20 };

static int merge_less(const struct tok_merge *a, const struct tok_merge *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(tok_scratch *s, size_t *n, struct tok_merge m) {
    if (*n == s->heap_cap) {
        s->heap_cap = s->heap_cap ? s->heap_cap * 2 : 64;
        s->heap = base_xrealloc(s->heap, s->heap_cap * sizeof *s->heap);
    }
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!merge_less(&m, &s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = m;
}

static struct tok_merge heap_pop(tok_scratch *s, size_t *n) {
    struct tok_merge top = s->heap[0];
    struct tok_merge last = s->heap[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && merge_less(&s->heap[c + 1], &s->heap[c])) c++;
        if (!merge_less(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (*n) s->heap[i] = last;
    return top;
}

static void add_sym(tok_scratch *s, size_t *n, int32_t id, uint32_t len) {
    if (*n == s->syms_cap) {
        s->syms_cap = s->syms_cap ? s->syms_cap * 2 : 64;
        s->syms = base_xrealloc(s->syms, s->syms_cap * sizeof *s->syms);
    }
    s->syms[*n] = (struct tok_sym){id, (int32_t)*n - 1, -1, len};
    if (*n) s->syms[*n - 1].next = (int32_t)*n;
    (*n)++;
}

/* One character of the model string, "str" (prefix/suffix applied), that is
 * not a vocabulary entry: byte fallback, else unk (fused or not), else the
 * character is dropped, as HF does. */
static void add_unknown(const tok_tokenizer *tk, tok_scratch *s, size_t *n, const char *str,
                        size_t slen, uint32_t byte_len, int32_t *unk_id, uint32_t *unk_len) {
    if (tk->byte_fallback) {
        int all = 1;
        for (size_t j = 0; j < slen; j++) all &= tk->fallback_id[(uint8_t)str[j]] >= 0;
        if (all) {
            for (size_t j = 0; j < slen; j++) add_sym(s, n, tk->fallback_id[(uint8_t)str[j]], 1);
            return;
        }
    }
    if (tk->unk_id < 0) return;
    if (*unk_id >= 0 && tk->fuse_unk) {
        *unk_len += byte_len;
        return;
    }
    if (*unk_id >= 0) add_sym(s, n, *unk_id, *unk_len);
    *unk_id = tk->unk_id;
    *unk_len = byte_len;
}

/* Build the initial symbols (BPE::merge_word before merge_all). */
static size_t initial_symbols(const tok_tokenizer *tk, tok_scratch *s, const char *w, size_t n) {
    size_t ns = 0;
    int32_t unk_id = -1;
    uint32_t unk_len = 0;
    char buf[64];
    base_buf big = {0};
    for (size_t i = 0; i < n;) {
        int adv = 1;
        char cbuf[4];
        const char *c;
        size_t clen;
        if (tk->bytelevel) {
            uint8_t b = (uint8_t)w[i];
            if (!tk->prefix && !tk->suffix && tk->byte_id[b] >= 0) {
                if (unk_id >= 0) {
                    add_sym(s, &ns, unk_id, unk_len);
                    unk_id = -1;
                }
                add_sym(s, &ns, tk->byte_id[b], 1);
                i++;
                continue;
            }
            clen = (size_t)tok_utf8_put(tok_byte_to_cp(b), cbuf);
            c = cbuf;
        } else {
            tok_utf8_get(w + i, n - i, &adv);
            c = w + i;
            clen = (size_t)adv;
        }
        /* the lookup string: [prefix] char [suffix] */
        const char *pre = i > 0 ? tk->prefix : NULL;
        const char *suf = i + (size_t)adv >= n ? tk->suffix : NULL;
        size_t lp = pre ? strlen(pre) : 0, ls = suf ? strlen(suf) : 0;
        const char *str = c;
        size_t slen = clen;
        if (lp || ls) {
            char *d = buf;
            if (lp + clen + ls > sizeof buf) {
                base_buf_reset(&big);
                base_buf_append(&big, pre ? pre : "", lp);
                base_buf_append(&big, c, clen);
                base_buf_append(&big, suf ? suf : "", ls);
                d = big.data;
            } else {
                memcpy(d, pre ? pre : "", lp);
                memcpy(d + lp, c, clen);
                memcpy(d + lp + clen, suf ? suf : "", ls);
            }
            str = d;
            slen = lp + clen + ls;
        }
        int32_t id = tok_strmap_get(&tk->vocab, str, slen);
        if (id >= 0) {
            if (unk_id >= 0) {
                add_sym(s, &ns, unk_id, unk_len);
                unk_id = -1;
            }
            add_sym(s, &ns, id, (uint32_t)adv);
        } else {
            add_unknown(tk, s, &ns, str, slen, (uint32_t)adv, &unk_id, &unk_len);
        }
        i += (size_t)adv;
    }
    if (unk_id >= 0) add_sym(s, &ns, unk_id, unk_len);
    base_buf_free(&big);
    return ns;
}

static void push_pair(const tok_tokenizer *tk, tok_scratch *s, size_t *nh, int32_t pos) {
    const struct tok_sym *a = &s->syms[pos];
    if (a->next < 0) return;
    const tok_pair_slot *m = tok_pairmap_get(&tk->merges, a->id, s->syms[a->next].id);
    if (m) heap_push(s, nh, (struct tok_merge){m->rank, pos, m->new_id});
}

static void merge_all(const tok_tokenizer *tk, tok_scratch *s, size_t ns) {
    size_t nh = 0;
    for (size_t i = 0; i + 1 < ns; i++) push_pair(tk, s, &nh, (int32_t)i);
    struct tok_sym *y = s->syms;
    while (nh) {
        struct tok_merge top = heap_pop(s, &nh);
        struct tok_sym *cur = &y[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        struct tok_sym right = y[cur->next];
        const tok_pair_slot *m = tok_pairmap_get(&tk->merges, cur->id, right.id);
        if (!m || m->new_id != top.new_id) continue; /* stale entry */
        y[cur->next].len = 0;
        cur->id = top.new_id;
        cur->len += right.len;
        cur->next = right.next;
        if (right.next >= 0) y[right.next].prev = top.pos;
        if (cur->prev >= 0) push_pair(tk, s, &nh, cur->prev);
        push_pair(tk, s, &nh, top.pos);
    }
}

/* ------------------------------------------------------------------------ */
/* Word cache                                                               */

static void cache_clear(tok_scratch *s) {
    memset(s->cache, 0, (size_t)s->cache_cap * sizeof *s->cache);
    s->cache_n = 0;
    base_buf_reset(&s->cache_keys);
    s->cache_ids_n = 0;
}

static const tok_cache_slot *cache_find(tok_scratch *s, const char *k, size_t n, uint32_t h,
                                        uint32_t *slot) {
    uint32_t j = h & (s->cache_cap - 1);
    for (;;) {
        tok_cache_slot *c = &s->cache[j];
        if (!c->key_len) {
            *slot = j;
            return NULL;
        }
        if (c->hash == h && c->key_len == n && !memcmp(s->cache_keys.data + c->key_off, k, n))
            return c;
        j = (j + 1) & (s->cache_cap - 1);
    }
}

static void cache_put(tok_scratch *s, uint32_t slot, const char *k, size_t n, uint32_t h,
                      const int32_t *ids, uint32_t n_ids) {
    if (s->cache_ids_n + n_ids > s->cache_ids_cap) {
        s->cache_ids_cap = (s->cache_ids_n + n_ids) * 2;
        s->cache_ids = base_xrealloc(s->cache_ids, s->cache_ids_cap * sizeof *s->cache_ids);
    }
    tok_cache_slot *c = &s->cache[slot];
    c->hash = h;
    c->key_off = (uint32_t)s->cache_keys.len;
    c->key_len = (uint32_t)n;
    c->ids_off = s->cache_ids_n;
    c->n_ids = n_ids;
    base_buf_append(&s->cache_keys, k, n);
    if (n_ids) memcpy(s->cache_ids + s->cache_ids_n, ids, n_ids * sizeof *ids);
    s->cache_ids_n += n_ids;
    s->cache_n++;
}

void tok_bpe_word(const tok_tokenizer *tk, tok_scratch *s, const char *w, size_t n,
                  tok_ids *out) {
    if (n == 0) return;
    if (tk->ignore_merges) {
        /* the whole pre-token, in the model's alphabet, may be a token */
        const char *str = w;
        size_t slen = n;
        if (tk->bytelevel) {
            base_buf_reset(&s->mapped);
            for (size_t i = 0; i < n; i++) {
                char c[4];
                base_buf_append(&s->mapped, c, (size_t)tok_utf8_put(tok_byte_to_cp((uint8_t)w[i]), c));
            }
            str = s->mapped.data;
            slen = s->mapped.len;
        }
        int32_t id = tok_strmap_get(&tk->vocab, str, slen);
        if (id >= 0) {
            tok_ids_push(out, id);
            return;
        }
    }
    uint32_t h = 0, slot = 0;
    int cacheable = n <= CACHE_MAX_KEY;
    if (cacheable) {
        if (!s->cache) {
            s->cache_cap = CACHE_SLOTS;
            s->cache = base_xcalloc(s->cache_cap, sizeof *s->cache);
        }
        h = tok_hash_bytes(w, n);
        const tok_cache_slot *c = cache_find(s, w, n, h, &slot);
        if (c) {
            for (uint32_t i = 0; i < c->n_ids; i++) tok_ids_push(out, s->cache_ids[c->ids_off + i]);
            return;
        }
    }
    size_t ns = initial_symbols(tk, s, w, n);
    merge_all(tk, s, ns);
    int64_t first = out->n;
    for (size_t i = 0; i < ns; i++)
        if (s->syms[i].len) tok_ids_push(out, s->syms[i].id);
    if (cacheable) {
        if (s->cache_n * 2 >= s->cache_cap || s->cache_keys.len > CACHE_MAX_BYTES) {
            cache_clear(s);
            cache_find(s, w, n, h, &slot);
        }
        cache_put(s, slot, w, n, h, out->n > first ? out->ids + first : NULL,
                  (uint32_t)(out->n - first));
    }
}
