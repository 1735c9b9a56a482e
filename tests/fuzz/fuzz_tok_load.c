/*
 * libFuzzer target for loading tokenizer.json (src/tok/tok_load.c,
 * tok_added.c): the input is the file's bytes, optionally followed by two
 * NUL bytes and the bytes of tokenizer_config.json; tok_load_mem must return
 * a status (never crash, hang, leak, read out of bounds or allocate beyond
 * what the file defines). When it accepts:
 *   - the id count is bounded by the file (entries + 65536, tok.h);
 *   - every id's string names a token whose string is the same;
 *   - BOS/EOS/pad are ids of the tokenizer or -1;
 *   - a few texts (and the added tokens' strings) encode to ids of the
 *     tokenizer, and decoding gives valid UTF-8 without a NUL byte.
 *
 * Fuzz with `make fuzz FUZZ_TARGET=tok_load` (docs/fuzzing.md); `make test`
 * replays tests/fuzz/corpus/tok_load/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tok/tok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_INPUT = 1 << 20 };

static void check_decode(const tok_tokenizer *tk, const tok_ids *ids) {
    for (int flags = 0; flags < 2; flags++) {
        size_t len;
        char *t = tok_decode_str(tk, ids->ids, ids->n, flags, &len);
        if (!t || strlen(t) != len || tok_utf8_check(t, len) != len) abort();
        free(t);
    }
}

static void check_encode(const tok_tokenizer *tk, const char *text, size_t n, int flags) {
    tok_ids ids = {0};
    base_status st = tok_encode(tk, text, n, flags, &ids);
    if (st == BASE_OK) {
        for (int64_t i = 0; i < ids.n; i++)
            if (ids.ids[i] < 0 || ids.ids[i] >= tok_vocab_size(tk)) abort();
        check_decode(tk, &ids);
    } else if (st != BASE_ERR_LIMIT && st != BASE_ERR_INVALID) {
        abort();
    }
    tok_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > MAX_INPUT) return 0;
    static int quiet;
    if (!quiet) {
        base_log_set_level(BASE_LOG_ERROR);
        quiet = 1;
    }
    const char *json = (const char *)data, *cfg = NULL;
    size_t jn = size, cn = 0;
    for (size_t i = 0; i + 1 < size; i++)
        if (!data[i] && !data[i + 1]) {
            jn = i;
            cfg = json + i + 2;
            cn = size - i - 2;
            break;
        }
    tok_tokenizer *tk = NULL;
    base_err_clear();
    if (tok_load_mem(json, jn, cfg, cn, "fuzz/tokenizer.json", &tk) != BASE_OK) {
        if (tk || !base_err_msg()[0]) abort(); /* a failure always says why */
        return 0;
    }
    int32_t V = tok_vocab_size(tk);
    if (V < 0 || (size_t)V > size + 65536) abort();
    tok_ids all = {0};
    for (int32_t id = 0; id < V; id++) {
        const char *s = tok_token_str(tk, id);
        if (!s) continue;
        int32_t back = tok_token_id(tk, s);
        if (back < 0 || !tok_token_str(tk, back) || strcmp(tok_token_str(tk, back), s)) abort();
        if (tok_is_special(tk, id) && id < 4096) tok_ids_push(&all, id);
    }
    int32_t sp[3] = {tok_bos_id(tk), tok_eos_id(tk), tok_pad_id(tk)};
    for (int i = 0; i < 3; i++)
        if (sp[i] < -1 || sp[i] >= V) abort();
    check_decode(tk, &all);
    static const char *texts[] = {
        "Hello, world! 12345 caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87  \n\t x",
        "<|bos|> <think>a</think> <s></s><unk> \xef\xbd\x9cUser\xef\xbd\x9c",
        "",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        for (int flags = 0; flags < 8; flags++) check_encode(tk, texts[i], strlen(texts[i]), flags);
    /* the special tokens' strings, concatenated */
    base_buf b = {0};
    for (int64_t i = 0; i < all.n && b.len < 4096; i++) {
        base_buf_puts(&b, tok_token_str(tk, all.ids[i]));
        base_buf_puts(&b, i % 2 ? " " : "x");
    }
    if (b.len) check_encode(tk, b.data, b.len, 0);
    base_buf_free(&b);
    tok_ids_free(&all);
    tok_free(tk);
    return 0;
}
