/*
 * Decoding (Tokenizer::decode of Hugging Face tokenizers): each id becomes
 * its token string (an added token's, else the vocabulary's; unknown ids are
 * dropped), special tokens are dropped on request, and the ByteLevel decoder
 * turns each token whose characters are all in the byte-level alphabet into
 * those bytes (any other token contributes its UTF-8 as is). The bytes are
 * then made valid UTF-8 with U+FFFD for each maximal invalid subpart
 * (String::from_utf8_lossy), and a 0 byte becomes U+FFFD as well (tok.h:
 * grpo's text is NUL-terminated). Without a decoder, tokens are joined by " ".
 * The per-id bytes are precomputed at load (tok_load.c).
 */
#include "tok/tok_int.h"

#include <stdlib.h>

void tok_decode(const tok_tokenizer *tk, const int32_t *ids, int64_t n, int flags, base_buf *out) {
    base_buf raw = {0};
    int first = 1;
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tk->n_ids || !tk->id_dec[id]) continue;
        if ((flags & TOK_DEC_SKIP_SPECIAL) && tk->id_skip[id]) continue;
        if (!tk->decoder_bytelevel && !first) base_buf_append(&raw, " ", 1);
        base_buf_append(&raw, tk->id_dec[id], tk->id_dec_len[id]);
        first = 0;
    }
    tok_utf8_lossy_at(raw.data ? raw.data : "", raw.len, 1, out);
    base_buf_free(&raw);
}

char *tok_decode_str(const tok_tokenizer *tk, const int32_t *ids, int64_t n, int flags,
                     size_t *len) {
    base_buf b = {0};
    tok_decode(tk, ids, n, flags, &b);
    if (len) *len = b.len;
    return b.data;
}
