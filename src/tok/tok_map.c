/*
 * Lookup structures of the tokenizer: a string -> id hash map (vocabulary,
 * added tokens), a pair -> merge hash map (BPE merges), a byte trie for
 * leftmost-longest added-token matching, and the small UTF-8 and GPT-2
 * byte-level alphabet helpers everything else uses.
 */
#include "tok/tok_int.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Hashing: 32-bit FNV-1a over 8-byte words then bytes, with a final mix. It
 * only has to spread vocabulary strings and pre-tokens, not resist attacks. */

uint32_t tok_hash_bytes(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    while (n--) h = (h ^ *s++) * 0x100000001b3ull;
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return (uint32_t)h;
}

static uint32_t pow2_at_least(uint64_t n) {
    uint32_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

void tok_strmap_init(tok_strmap *m, uint32_t expected) {
    m->cap = pow2_at_least((uint64_t)expected * 2 + 1);
    m->n = 0;
    m->slots = base_xcalloc(m->cap, sizeof *m->slots);
}

static void strmap_grow(tok_strmap *m) {
    tok_strmap old = *m;
    m->cap = old.cap * 2;
    m->n = 0;
    m->slots = base_xcalloc(m->cap, sizeof *m->slots);
    for (uint32_t i = 0; i < old.cap; i++) {
        tok_strmap_slot *o = &old.slots[i];
        if (!o->key) continue;
        uint32_t j = o->hash & (m->cap - 1);
        while (m->slots[j].key) j = (j + 1) & (m->cap - 1);
        m->slots[j] = *o;
        m->n++;
    }
    free(old.slots);
}

int32_t tok_strmap_put(tok_strmap *m, const char *key, uint32_t len, int32_t val) {
    if ((m->n + 1) * 2 > m->cap) strmap_grow(m);
    uint32_t h = tok_hash_bytes(key, len);
    uint32_t j = h & (m->cap - 1);
    for (;;) {
        tok_strmap_slot *s = &m->slots[j];
        if (!s->key) {
            s->key = key;
            s->len = len;
            s->hash = h;
            s->val = val;
            m->n++;
            return -1;
        }
        if (s->hash == h && s->len == len && !memcmp(s->key, key, len)) {
            int32_t old = s->val;
            s->val = val;
            return old;
        }
        j = (j + 1) & (m->cap - 1);
    }
}

int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len) {
    if (!m->slots) return -1;
    uint32_t h = tok_hash_bytes(key, len);
    uint32_t j = h & (m->cap - 1);
    for (;;) {
        const tok_strmap_slot *s = &m->slots[j];
        if (!s->key) return -1;
        if (s->hash == h && s->len == len && !memcmp(s->key, key, len)) return s->val;
        j = (j + 1) & (m->cap - 1);
    }
}

void tok_strmap_free(tok_strmap *m) {
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}

/* ------------------------------------------------------------------------ */

static uint32_t pair_hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (uint32_t)k;
}

void tok_pairmap_init(tok_pairmap *m, uint32_t expected) {
    m->cap = pow2_at_least((uint64_t)expected * 2 + 1);
    m->n = 0;
    m->slots = base_xmalloc((size_t)m->cap * sizeof *m->slots);
    for (uint32_t i = 0; i < m->cap; i++) m->slots[i].key = UINT64_MAX;
}

void tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t new_id) {
    if ((m->n + 1) * 2 > m->cap) {
        tok_pairmap old = *m;
        tok_pairmap_init(m, old.cap);
        for (uint32_t i = 0; i < old.cap; i++)
            if (old.slots[i].key != UINT64_MAX)
                tok_pairmap_put(m, (int32_t)(old.slots[i].key >> 32),
                                (int32_t)(uint32_t)old.slots[i].key, old.slots[i].rank,
                                old.slots[i].new_id);
        free(old.slots);
    }
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint32_t j = pair_hash(k) & (m->cap - 1);
    while (m->slots[j].key != UINT64_MAX && m->slots[j].key != k) j = (j + 1) & (m->cap - 1);
    if (m->slots[j].key == UINT64_MAX) m->n++;
    /* A repeated pair keeps the later rank, as HF's collect into a map does. */
    m->slots[j] = (tok_pair_slot){k, rank, new_id};
}

const tok_pair_slot *tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b) {
    if (!m->slots) return NULL;
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint32_t j = pair_hash(k) & (m->cap - 1);
    for (;;) {
        const tok_pair_slot *s = &m->slots[j];
        if (s->key == k) return s;
        if (s->key == UINT64_MAX) return NULL;
        j = (j + 1) & (m->cap - 1);
    }
}

void tok_pairmap_free(tok_pairmap *m) {
    free(m->slots);
    m->slots = NULL;
}

/* ------------------------------------------------------------------------ */
/* Trie: nodes with linked sibling edge lists. Added-token sets are small
 * (hundreds of strings) and every lookup starts with a first-byte filter,
 * so the simple layout is enough.                                          */

static int32_t trie_node(tok_trie *t) {
    if (t->n_nodes == t->cap_nodes) {
        t->cap_nodes = t->cap_nodes ? t->cap_nodes * 2 : 64;
        t->first = base_xrealloc(t->first, (size_t)t->cap_nodes * sizeof *t->first);
        t->value = base_xrealloc(t->value, (size_t)t->cap_nodes * sizeof *t->value);
    }
    t->first[t->n_nodes] = -1;
    t->value[t->n_nodes] = -1;
    return t->n_nodes++;
}

void tok_trie_init(tok_trie *t) {
    memset(t, 0, sizeof *t);
    t->empty = 1;
    trie_node(t);
}

void tok_trie_add(tok_trie *t, const char *s, size_t n, int32_t value) {
    if (n == 0) return;
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        int32_t e = t->first[node];
        while (e >= 0 && t->byte[e] != c) e = t->next[e];
        if (e < 0) {
            int32_t child = trie_node(t);
            if (t->n_edges == t->cap_edges) {
                t->cap_edges = t->cap_edges ? t->cap_edges * 2 : 64;
                t->next = base_xrealloc(t->next, (size_t)t->cap_edges * sizeof *t->next);
                t->byte = base_xrealloc(t->byte, (size_t)t->cap_edges);
                t->child = base_xrealloc(t->child, (size_t)t->cap_edges * sizeof *t->child);
            }
            e = t->n_edges++;
            t->byte[e] = c;
            t->child[e] = child;
            t->next[e] = t->first[node];
            t->first[node] = e;
        }
        node = t->child[e];
    }
    t->value[node] = value;
    t->first_byte[(uint8_t)s[0]] = 1;
    t->empty = 0;
}

size_t tok_trie_longest(const tok_trie *t, const char *s, size_t limit, int32_t *value) {
    size_t best = 0;
    int32_t node = 0;
    for (size_t i = 0; i < limit; i++) {
        uint8_t c = (uint8_t)s[i];
        int32_t e = t->first[node];
        while (e >= 0 && t->byte[e] != c) e = t->next[e];
        if (e < 0) break;
        node = t->child[e];
        if (t->value[node] >= 0) {
            best = i + 1;
            *value = t->value[node];
        }
    }
    return best;
}

void tok_trie_free(tok_trie *t) {
    free(t->first);
    free(t->next);
    free(t->byte);
    free(t->child);
    free(t->value);
    memset(t, 0, sizeof *t);
}

/* ------------------------------------------------------------------------ */
/* UTF-8 and the byte-level alphabet                                        */

int tok_utf8_put(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

uint32_t tok_utf8_get(const char *s, size_t n, int *adv) {
    const uint8_t *u = (const uint8_t *)s;
    int len = u[0] < 0x80 ? 1 : u[0] < 0xE0 ? 2 : u[0] < 0xF0 ? 3 : 4;
    if ((size_t)len > n) { /* truncated: callers pass valid UTF-8, so only defensive */
        *adv = (int)n;
        return 0xFFFD;
    }
    *adv = len;
    switch (len) {
    case 1: return u[0];
    case 2: return (uint32_t)(u[0] & 0x1F) << 6 | (u[1] & 0x3F);
    case 3: return (uint32_t)(u[0] & 0x0F) << 12 | (uint32_t)(u[1] & 0x3F) << 6 | (u[2] & 0x3F);
    default:
        return (uint32_t)(u[0] & 0x07) << 18 | (uint32_t)(u[1] & 0x3F) << 12 |
               (uint32_t)(u[2] & 0x3F) << 6 | (u[3] & 0x3F);
    }
}

/* GPT-2 bytes_to_unicode: printable Latin-1 bytes map to themselves, the
 * other 68 bytes to U+0100.. in byte order. */
static int is_printable_byte(int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tok_byte_to_cp(uint8_t b) {
    if (is_printable_byte(b)) return b;
    uint32_t n = 0;
    for (int i = 0; i < b; i++) n += !is_printable_byte(i);
    return 256 + n;
}

int tok_cp_to_byte(uint32_t cp) {
    if (cp < 256) return is_printable_byte((int)cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    uint32_t n = 0;
    for (int b = 0; b < 256; b++) {
        if (is_printable_byte(b)) continue;
        if (256 + n == cp) return b;
        n++;
    }
    return -1;
}

int tok_is_white_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

void tok_ids_push(tok_ids *v, int32_t id) {
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->ids = base_xrealloc(v->ids, (size_t)v->cap * sizeof *v->ids);
    }
    v->ids[v->n++] = id;
}

void tok_ids_free(tok_ids *v) {
    free(v->ids);
    v->ids = NULL;
    v->n = v->cap = 0;
}

void tok_pieces_push(tok_pieces *ps, const char *p, size_t n, int32_t id) {
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? ps->cap * 2 : 256;
        ps->v = base_xrealloc(ps->v, ps->cap * sizeof *ps->v);
    }
    ps->v[ps->n++] = (tok_piece){p, (uint32_t)n, id};
}
