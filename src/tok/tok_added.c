/*
 * Added tokens: loading (a port of AddedVocabulary::add_tokens of Hugging
 * Face tokenizers) and matching them in the text before pre-tokenization (a
 * port of AddedVocabulary::find_matches).
 *
 * Loading, as HF does for the "added_tokens" list: an empty content is
 * ignored; a content already added with the same flags is ignored; a
 * content already added with other flags replaces that token's flags under
 * the same id; a new content takes its vocabulary id, else the next id
 * after the model vocabulary. The file's "id" is only compared (a warning).
 * A content once added as special stays special (HF's special_tokens_set),
 * and an id keeps the normalized form of its last normalized entry that
 * changed under the normalizer (HF's normalized_cache). Every string is
 * owned by tk->strs, so replacing a token frees nothing a map points at.
 *
 * Matching: Matches are
 * leftmost-longest and non-overlapping over the original text; a match that
 * is then discarded (single_word not satisfied, or a special token under
 * TOK_ENC_SPECIAL_AS_TEXT) does not let a shorter or overlapping token match
 * instead, exactly as there. lstrip/rstrip widen a kept match over
 * neighbouring White_Space. Protected ranges (template values) never match.
 */
#include "tok/tok_int.h"

#include <stdlib.h>
#include <string.h>

/* Rust regex \w on one code point at s (valid UTF-8). */
static int is_word_at(const tok_tokenizer *tk, const char *s, size_t n) {
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md) base_die("pcre2_match_data_create: out of memory");
    int rc = pcre2_match(tk->re_word, (PCRE2_SPTR)s, n, 0, PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK,
                         md, NULL);
    pcre2_match_data_free(md);
    return rc >= 0;
}

/* Start of the last code point of s[0..n) (n > 0). */
static size_t last_char_start(const char *s, size_t n) {
    size_t i = n - 1;
    while (i > 0 && ((uint8_t)s[i] & 0xC0) == 0x80) i--;
    return i;
}

/* Start offset of the trailing White_Space run of s[0..n). */
static size_t space_leftmost_at_end(const char *s, size_t n) {
    while (n > 0) {
        size_t i = last_char_start(s, n);
        int adv;
        if (!tok_is_white_space(tok_utf8_get(s + i, n - i, &adv))) break;
        n = i;
    }
    return n;
}

/* Length of the leading White_Space run of s[0..n). */
static size_t space_rightmost_at_start(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        int adv;
        if (!tok_is_white_space(tok_utf8_get(s + i, n - i, &adv))) break;
        i += (size_t)adv;
    }
    return i;
}

void tok_added_split(const tok_tokenizer *tk, const tok_trie *trie, const char *p, size_t n,
                     const size_t *prot, size_t n_prot, int flags, tok_pieces *outp) {
    if (n == 0) return;
    if (trie->empty || (flags & TOK_ENC_ADDED_AS_TEXT)) {
        tok_pieces_push(outp, p, n, -1);
        return;
    }
    size_t start_offset = 0, i = 0, pi = 0;
    while (i < n) {
        /* skip protected ranges; a match must end before the next one */
        while (pi < n_prot && prot[2 * pi + 1] <= i) pi++;
        if (pi < n_prot && prot[2 * pi] <= i) {
            i = prot[2 * pi + 1];
            continue;
        }
        size_t limit = pi < n_prot ? prot[2 * pi] : n;
        if (!trie->first_byte[(uint8_t)p[i]]) {
            i++;
            continue;
        }
        int32_t k = -1;
        size_t len = tok_trie_longest(trie, p + i, limit - i, &k);
        if (!len) {
            i++;
            continue;
        }
        size_t start = i, stop = i + len;
        i = stop;
        const tok_added *a = &tk->added[k];
        if ((flags & TOK_ENC_SPECIAL_AS_TEXT) && a->special) continue;
        if (a->single_word) {
            int start_space = start == 0;
            if (!start_space) {
                size_t c = last_char_start(p, start);
                start_space = !is_word_at(tk, p + c, start - c);
            }
            int stop_space = stop == n || !is_word_at(tk, p + stop, n - stop);
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) {
            size_t ns = space_leftmost_at_end(p, start);
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) stop += space_rightmost_at_start(p + stop, n - stop);
        if (start_offset < start) tok_pieces_push(outp, p + start_offset, start - start_offset, -1);
        tok_pieces_push(outp, p + start, stop - start, a->id);
        start_offset = stop;
    }
    if (start_offset < n) tok_pieces_push(outp, p + start_offset, n - start_offset, -1);
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                  */

/* A copy of s[0, n) owned by the tokenizer until tok_free. */
static const char *keep(tok_tokenizer *tk, const char *s, size_t n) {
    if (tk->n_strs == tk->cap_strs) {
        tk->cap_strs = tk->cap_strs ? tk->cap_strs * 2 : 64;
        tk->strs = base_xrealloc(tk->strs, (size_t)tk->cap_strs * sizeof *tk->strs);
    }
    char *d = base_xmalloc(n + 1);
    if (n) memcpy(d, s, n);
    d[n] = 0;
    tk->strs[tk->n_strs++] = d;
    return d;
}

/* HF AddedToken equality: content and every flag. */
static int same_token(const tok_added *a, const char *content, const tok_added *b) {
    return !strcmp(a->content, content) && a->special == b->special && a->lstrip == b->lstrip &&
           a->rstrip == b->rstrip && a->single_word == b->single_word &&
           a->normalized == b->normalized;
}

enum { MAX_ID_WARNINGS = 5 };

base_status tok_added_load(tok_tokenizer *tk, const cJSON *list) {
    const char *path = tk->path;
    if (list && !cJSON_IsNull(list) && !cJSON_IsArray(list))
        return base_err_set(BASE_ERR_PARSE, "%s: added_tokens is not an array", path);
    int n = cJSON_IsArray(list) ? cJSON_GetArraySize(list) : 0;
    tk->added = base_xcalloc((size_t)(n ? n : 1), sizeof *tk->added);
    tok_strmap_init(&tk->added_map, (uint32_t)n);
    tok_strmap_init(&tk->special_set, (uint32_t)n);
    /* every id is a vocabulary id (< n_ids) or a new one (< n_model + n) */
    int64_t cap = (int64_t)tk->n_model + n > tk->n_ids ? (int64_t)tk->n_model + n : tk->n_ids;
    int32_t *k_of_id = base_xmalloc((size_t)(cap ? cap : 1) * sizeof *k_of_id);
    for (int64_t i = 0; i < cap; i++) k_of_id[i] = -1;
    int32_t next_id = tk->n_model;
    int idx = 0, warned = 0;
    base_status st = BASE_OK;
    for (const cJSON *e = n ? list->child : NULL; e && !st; e = e->next, idx++) {
        const char *content = base_json_str(e, "content", NULL);
        int64_t file_id;
        if (!content || !base_json_to_int(cJSON_GetObjectItemCaseSensitive(e, "id"), 0,
                                          UINT32_MAX, &file_id)) {
            st = base_err_set(BASE_ERR_PARSE, "%s: added_tokens[%d] needs \"id\" (an integer in "
                              "[0, 2^32)) and \"content\" (a string)", path, idx);
            break;
        }
        if (!*content) continue;
        tok_added a = {
            .special = base_json_bool(e, "special", 0, NULL),
            .lstrip = base_json_bool(e, "lstrip", 0, NULL),
            .rstrip = base_json_bool(e, "rstrip", 0, NULL),
            .single_word = base_json_bool(e, "single_word", 0, NULL),
        };
        /* HF requires every flag; a missing one takes AddedToken::from's default */
        a.normalized = base_json_bool(e, "normalized", !a.special, NULL);
        size_t clen = strlen(content);
        int32_t id = tok_strmap_get(&tk->added_map, content, clen);
        if (id >= 0 && k_of_id[id] >= 0 && same_token(&tk->added[k_of_id[id]], content, &a))
            continue;
        if (id < 0) id = tok_strmap_get(&tk->vocab, content, clen);
        if (id < 0) id = next_id++;
        if (id != file_id && warned++ < MAX_ID_WARNINGS)
            base_warn("%s: added token \"%s\" has id %lld in the file but gets %d, as in "
                      "Hugging Face tokenizers", path, content, (long long)file_id, id);
        int32_t k = k_of_id[id];
        a.id = id;
        a.content = keep(tk, content, clen);
        a.cache = k >= 0 ? tk->added[k].cache : NULL;
        if (a.normalized && tk->norm != TOK_NORM_NONE) {
            base_buf nb = {0};
            st = tok_normalize(tk->norm, content, clen, &nb);
            if (st) base_err_wrap(st, "%s: added_tokens[%d]", path, idx);
            else if (nb.len != clen || memcmp(nb.data, content, clen))
                a.cache = keep(tk, nb.data ? nb.data : "", nb.len);
            base_buf_free(&nb);
        }
        tok_strmap_put(&tk->added_map, a.content, (uint32_t)clen, id);
        if (a.special && tok_strmap_get(&tk->special_set, content, clen) < 0)
            tok_strmap_put(&tk->special_set, a.content, (uint32_t)clen, 1);
        if (k < 0) {
            k = tk->n_added++;
            k_of_id[id] = k;
        }
        tk->added[k] = a;
    }
    free(k_of_id);
    if (warned > MAX_ID_WARNINGS)
        base_warn("%s: %d more added tokens get another id than the file's", path,
                  warned - MAX_ID_WARNINGS);
    if (st) return st;
    tok_trie_init(&tk->trie_raw);
    tok_trie_init(&tk->trie_norm);
    for (int32_t k = 0; k < tk->n_added; k++) {
        tok_added *a = &tk->added[k];
        a->special = tok_strmap_get(&tk->special_set, a->content, strlen(a->content)) >= 0;
        a->match = a->normalized && a->cache ? a->cache : a->content;
        a->dec = a->cache ? a->cache : a->content;
        if (a->id + 1 > tk->n_ids) tk->n_ids = a->id + 1;
        tok_trie_add(a->normalized ? &tk->trie_norm : &tk->trie_raw, a->match, strlen(a->match), k);
    }
    return BASE_OK;
}
