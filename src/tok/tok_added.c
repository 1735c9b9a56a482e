/*
 * Added tokens found in the text before pre-tokenization: a port of
 * AddedVocabulary::find_matches of Hugging Face tokenizers. Matches are
 * leftmost-longest and non-overlapping over the original text; a match that
 * is then discarded (single_word not satisfied, or a special token under
 * TOK_ENC_SPECIAL_AS_TEXT) does not let a shorter or overlapping token match
 * instead, exactly as there. lstrip/rstrip widen a kept match over
 * neighbouring White_Space. Protected ranges (template values) never match.
 */
#include "tok/tok_int.h"

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
