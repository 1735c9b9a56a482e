/*
 * libFuzzer target for encoding and decoding (src/tok) on two fixed small
 * byte-level tokenizers with added tokens, made at start-up from
 * tok_write_bytelevel's output:
 *   plain  GPT-2 pre-tokenizer, a few merges, special tokens without
 *          strip or normalize flags (the writer's defaults);
 *   rich   the same under NFKC, with added tokens that lstrip, rstrip,
 *          match single words, are normalized, and are listed twice with
 *          other flags.
 * Input: byte 0 chooses the tokenizer and the flags, the rest is the text
 * (also read as token ids for decoding). Properties beyond "no crash":
 *   - invalid UTF-8 is refused (ids untouched) and its lossy repair encodes;
 *   - every id is an id of the tokenizer; decoding any ids gives valid
 *     UTF-8 without a NUL byte;
 *   - plain: decode(encode(t)) == t with a NUL shown as U+FFFD, whether
 *     added tokens match or not (byte-level BPE loses nothing); with
 *     TOK_ENC_ADD_SPECIAL the ids are BOS + the plain ids;
 *   - rich: encoding is deterministic and equals the batch encoder's.
 *
 * Fuzz with `make fuzz FUZZ_TARGET=tok_encode` (docs/fuzzing.md);
 * `make test` replays tests/fuzz/corpus/tok_encode/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tok/tok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_TEXT = 1 << 16 };

static tok_tokenizer *plain, *rich;

static void die(const char *what) {
    fprintf(stderr, "fuzz_tok_encode: %s: %s\n", what, base_err_msg());
    abort();
}

/* "\u0120t" style byte-level strings are UTF-8 here: Ġ = U+0120. */
static void add_merge(cJSON *vocab, cJSON *merges, const char *a, const char *b, int id) {
    char m[64], ab[64];
    snprintf(m, sizeof m, "%s %s", a, b);
    snprintf(ab, sizeof ab, "%s%s", a, b);
    cJSON_AddItemToArray(merges, cJSON_CreateString(m));
    cJSON_AddNumberToObject(vocab, ab, id);
}

static cJSON *added(int id, const char *content, int special, int lstrip, int rstrip, int single,
                    int normalized) {
    cJSON *t = cJSON_CreateObject();
    cJSON_AddNumberToObject(t, "id", id);
    cJSON_AddStringToObject(t, "content", content);
    cJSON_AddBoolToObject(t, "single_word", single);
    cJSON_AddBoolToObject(t, "lstrip", lstrip);
    cJSON_AddBoolToObject(t, "rstrip", rstrip);
    cJSON_AddBoolToObject(t, "normalized", normalized);
    cJSON_AddBoolToObject(t, "special", special);
    return t;
}

static tok_tokenizer *load_edited(cJSON *j, const char *cfg, size_t cfg_len, const char *what) {
    char *txt = cJSON_PrintUnformatted(j);
    tok_tokenizer *tk = NULL;
    if (!txt || tok_load_mem(txt, strlen(txt), cfg, cfg_len, what, &tk)) die(what);
    free(txt);
    return tk;
}

static void make_tokenizers(void) {
    char tmpl[] = "/tmp/fuzz-tok-XXXXXX";
    char *dir = mkdtemp(tmpl);
    if (!dir) die("mkdtemp");
    tok_bytelevel_spec sp = tok_bytelevel_default();
    if (tok_write_bytelevel(dir, &sp)) die("tok_write_bytelevel");
    char *jp = base_path_join(dir, "tokenizer.json"), *cp = base_path_join(dir, "tokenizer_config.json");
    char *json, *cfg;
    size_t jn, cn;
    if (base_read_file(jp, &json, &jn) || base_read_file(cp, &cfg, &cn)) die("read");
    remove(jp), remove(cp), rmdir(dir);
    free(jp), free(cp);
    cJSON *j = NULL;
    if (base_json_parse(json, jn, "tokenizer.json", &j)) die("parse");
    cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    /* merged tokens take ids 256..; the added tokens then get the ids after
     * the vocabulary, as in HF (the file's ids for them are only compared) */
    const char *mg[][2] = {{"\xc4\xa0", "t"}, {"t", "h"}, {"\xc4\xa0t", "h"}, {"i", "n"},
                           {"in", "g"}, {"\xc4\xa0th", "e"}, {"\xc4\xa0", "\xc4\xa0"}};
    for (int k = 0; k < (int)(sizeof mg / sizeof mg[0]); k++) add_merge(vocab, merges, mg[k][0], mg[k][1], 256 + k);
    cJSON *pre = cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer");
    cJSON_ReplaceItemInObjectCaseSensitive(pre, "use_regex", cJSON_CreateTrue());
    plain = load_edited(j, cfg, cn, "plain/tokenizer.json");

    cJSON_ReplaceItemInObjectCaseSensitive(j, "normalizer", cJSON_Parse("{\"type\": \"NFKC\"}"));
    cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "added_tokens");
    cJSON_AddItemToArray(list, added(270, "<lst>", 1, 1, 0, 0, 0));
    cJSON_AddItemToArray(list, added(271, "<rst>", 0, 0, 1, 0, 0));
    cJSON_AddItemToArray(list, added(272, "cat", 0, 0, 0, 1, 1));
    cJSON_AddItemToArray(list, added(273, "\xef\xbc\xb8y", 0, 0, 0, 0, 1)); /* Ｘy, NFKC "Xy" */
    cJSON_AddItemToArray(list, added(274, "ing", 1, 0, 0, 1, 0));           /* a vocabulary string */
    cJSON_AddItemToArray(list, added(275, "<lst>", 0, 0, 1, 0, 1));         /* listed again */
    cJSON_AddItemToArray(list, added(276, "\xef\xac\x81" "x", 0, 1, 1, 0, 1)); /* ﬁx */
    cJSON_AddItemToArray(list, added(277, "<think>", 0, 1, 0, 0, 1));       /* again, other flags */
    rich = load_edited(j, cfg, cn, "rich/tokenizer.json");
    cJSON_Delete(j);
    free(json);
    free(cfg);
}

static void check_ids(const tok_tokenizer *tk, const tok_ids *ids) {
    int32_t V = tok_vocab_size(tk);
    for (int64_t i = 0; i < ids->n; i++)
        if (ids->ids[i] < 0 || ids->ids[i] >= V) abort();
}

/* Decoded text: valid UTF-8 without a NUL byte. */
static void check_text(const base_buf *b) {
    if (!b->data || strlen(b->data) != b->len || tok_utf8_check(b->data, b->len) != b->len) abort();
}

/* t with every 0 byte as U+FFFD: what decoding gives back. */
static void expect_back(const char *t, size_t n, base_buf *out) {
    for (size_t i = 0; i < n; i++) {
        if (t[i]) base_buf_append(out, t + i, 1);
        else base_buf_puts(out, "\xef\xbf\xbd");
    }
    if (!out->data) base_buf_puts(out, "");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > MAX_TEXT) return 0;
    if (!plain) {
        base_log_set_level(BASE_LOG_ERROR);
        make_tokenizers();
    }
    uint8_t sel = data[0];
    const tok_tokenizer *tk = sel & 1 ? rich : plain;
    int flags = (sel >> 1) & (TOK_ENC_ADD_SPECIAL | TOK_ENC_SPECIAL_AS_TEXT | TOK_ENC_ADDED_AS_TEXT);
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    tok_ids ids = {0};
    base_buf dec = {0}, want = {0};

    /* decoding arbitrary ids (2 bytes each, a few outside the vocabulary) */
    int32_t V = tok_vocab_size(tk);
    for (size_t i = 0; i + 1 < n; i += 2) {
        int32_t id = (int32_t)(((uint8_t)text[i] | (uint8_t)text[i + 1] << 8) % (V + 8)) - 4;
        tok_ids_push(&ids, id);
    }
    tok_decode(tk, ids.ids, ids.n, (sel >> 4) & TOK_DEC_SKIP_SPECIAL, &dec);
    check_text(&dec);
    ids.n = 0;
    base_buf_reset(&dec);

    size_t bad = tok_utf8_check(text, n);
    base_status st = tok_encode(tk, text, n, flags, &ids);
    if (bad < n) {
        if (st != BASE_ERR_INVALID || ids.n) abort();
        base_buf fixed = {0};
        tok_utf8_lossy(text, n, &fixed);
        /* valid UTF-8 (a NUL in the input stays: it is valid UTF-8) */
        if (!fixed.data || tok_utf8_check(fixed.data, fixed.len) != fixed.len) abort();
        if (tok_encode(tk, fixed.data, fixed.len, flags, &ids)) abort();
        check_ids(tk, &ids);
        base_buf_free(&fixed);
        goto done;
    }
    if (st) abort();
    check_ids(tk, &ids);
    tok_decode(tk, ids.ids, ids.n, 0, &dec);
    check_text(&dec);
    if (tk == plain) {
        /* lossless, BOS aside */
        int64_t skip = (flags & TOK_ENC_ADD_SPECIAL) ? 1 : 0;
        if (skip && (ids.n < 1 || ids.ids[0] != tok_bos_id(tk))) abort();
        base_buf_reset(&dec);
        tok_decode(tk, ids.n ? ids.ids + skip : NULL, ids.n - skip, 0, &dec);
        expect_back(text, n, &want);
        if (dec.len != want.len || memcmp(dec.data, want.data, dec.len)) abort();
        tok_ids again = {0};
        if (tok_encode(tk, text, n, flags & ~TOK_ENC_ADD_SPECIAL, &again)) abort();
        if (again.n != ids.n - skip ||
            (again.n && memcmp(again.ids, ids.ids + skip, (size_t)again.n * sizeof(int32_t))))
            abort();
        tok_ids_free(&again);
    } else {
        /* deterministic, and the batch encoder agrees */
        tok_ids again = {0};
        const char *texts[1] = {text};
        size_t lens[1] = {n};
        base_status bst;
        if (tok_encode_batch(tk, NULL, texts, lens, 1, flags, &again, &bst) || bst) abort();
        if (again.n != ids.n || (ids.n && memcmp(again.ids, ids.ids, (size_t)ids.n * sizeof(int32_t)))) abort();
        tok_ids_free(&again);
    }
    /* the text as a template value and as a chat message */
    tok_template_vars v = {.prompt = NULL, .system = "sys"};
    char *z = strndup(text, n); /* a value is a C string: up to the first NUL */
    if (!z) abort();
    v.prompt = z;
    ids.n = 0;
    if (tok_template_encode(tk, "{bos}<think>{prompt}</think>{eos}", &v, flags & TOK_ENC_ADD_SPECIAL, &ids))
        abort();
    check_ids(tk, &ids);
    tok_msg m[2] = {{"system", "S"}, {"user", z}};
    ids.n = 0;
    if (tok_chat_encode(tk, m, 2, TOK_CHAT_GENERATION_PROMPT | (sel >> 5 & TOK_CHAT_R1), &ids)) abort();
    check_ids(tk, &ids);
    free(z);
done:
    tok_ids_free(&ids);
    base_buf_free(&dec);
    base_buf_free(&want);
    return 0;
}
