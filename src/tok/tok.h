/*
 * tok: Hugging Face `tokenizer.json` tokenizers of the byte-level BPE kind
 * (DeepSeek-V3/R1, Llama-3, Qwen2, GPT-2 and most current models), encoded
 * and decoded exactly as the Hugging Face `tokenizers` library does, plus
 * prompt templates (R1-Zero, DeepSeek-V3/R1 chat, recipe templates with
 * {prompt}/{system}) and a writer for tiny byte-level tokenizers.
 *
 * Supported (anything else is refused at load with BASE_ERR_UNSUPPORTED and
 * a message naming the file and the component):
 *   model          BPE: vocab, merges ("a b" or ["a","b"]), ignore_merges,
 *                  byte_fallback, unk_token/fuse_unk, continuing_subword_prefix,
 *                  end_of_word_suffix (no dropout)
 *   normalizer     null, Sequence, NFC, NFKC, NFD, NFKD (ICU)
 *   pre_tokenizer  null, Sequence, Split (Regex or String pattern, all five
 *                  behaviours, invert), ByteLevel (add_prefix_space,
 *                  use_regex; last in the sequence), Digits
 *   added tokens   special, lstrip, rstrip, single_word, normalized
 *   post_processor null, ByteLevel, TemplateProcessing (single), Sequence
 *   decoder        null, ByteLevel
 * `truncation` and `padding` in tokenizer.json are ignored: callers get all
 * ids and pad/cut themselves.
 *
 * Untrusted files (tokenizers come from the Hub): tokenizer.json must be
 * valid UTF-8 JSON (as HF requires); every vocabulary id must be below the
 * number of entries the file defines (model.vocab + added_tokens) plus
 * 65536, so the per-id tables are proportional to the file (an id of 2e9
 * in a 6 KB file is refused, naming the token); TemplateProcessing ids must
 * be ids of the tokenizer. Added tokens get their ids as HF assigns them
 * (the file's "id" is only compared); a content listed twice with other
 * flags takes the later flags under the same id and stays special once
 * listed as special, as HF's AddedVocabulary does.
 *
 * Thread safety: a loaded tokenizer is read-only. tok_encode, tok_decode and
 * the template functions may run concurrently on one tokenizer from any
 * number of threads (each call borrows a private scratch with its own word
 * cache from a small locked free list). tok_free must not race with them.
 *
 * Text is UTF-8. Encoding invalid UTF-8 fails with BASE_ERR_INVALID naming
 * the byte offset (Hugging Face cannot receive such text at all: Python
 * strings are valid Unicode); tok_utf8_lossy repairs text the way Python's
 * bytes.decode("utf-8", "replace") does, if a caller prefers that.
 */
#ifndef GRPO_TOK_H
#define GRPO_TOK_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tok_tokenizer tok_tokenizer;

/* A growable id list. Encoding functions APPEND to it (so a caller can build
 * one sequence from several calls); reset with `ids.n = 0`. Owns `ids`. */
typedef struct {
    int32_t *ids; /* [n] */
    int64_t n, cap;
} tok_ids;

void tok_ids_push(tok_ids *v, int32_t id);
void tok_ids_free(tok_ids *v);

/* ------------------------------------------------------------------------ */
/* Loading                                                                  */

/* Load DIR/tokenizer.json and, when present, DIR/tokenizer_config.json
 * (bos/eos/pad names, add_bos_token/add_eos_token). On error returns the
 * status with a message naming the file (and what is wrong) and *out = NULL. */
base_status tok_load(const char *dir, tok_tokenizer **out);
/* Same, from explicit paths; config_path may be NULL. */
base_status tok_load_files(const char *json_path, const char *config_path, tok_tokenizer **out);
/* Same, from memory: the text of tokenizer.json (`what` names it in
 * messages) and of tokenizer_config.json (config may be NULL). */
base_status tok_load_mem(const char *json, size_t len, const char *config, size_t config_len,
                         const char *what, tok_tokenizer **out);
void tok_free(tok_tokenizer *tk);

/* Number of ids: max id + 1 over the model vocabulary and added tokens
 * (128815 for DeepSeek-V3; the model's embedding may have more rows). */
int32_t tok_vocab_size(const tok_tokenizer *tk);
/* Id of a token string (added tokens first, then the model vocabulary, as
 * HF token_to_id), or -1. The string is the vocabulary form ("Ġhello"). */
int32_t tok_token_id(const tok_tokenizer *tk, const char *token);
/* The vocabulary string of an id (NUL-terminated, owned by tk), or NULL. */
const char *tok_token_str(const tok_tokenizer *tk, int32_t id);
/* 1 if id is an added token whose content is special (in HF's
 * special_tokens_set; skipped by TOK_DEC_SKIP_SPECIAL). */
int tok_is_special(const tok_tokenizer *tk, int32_t id);
/* bos/eos/pad ids from tokenizer_config.json (pad falls back to eos when the
 * config names none), -1 when absent. */
int32_t tok_bos_id(const tok_tokenizer *tk);
int32_t tok_eos_id(const tok_tokenizer *tk);
int32_t tok_pad_id(const tok_tokenizer *tk);

/* ------------------------------------------------------------------------ */
/* Encoding and decoding                                                    */

enum {
    /* Add the sequence's special tokens: BOS/EOS per add_bos_token /
     * add_eos_token when tokenizer_config.json sets either, else the
     * tokenizer.json TemplateProcessing post-processor (HF
     * add_special_tokens=True). Without it: exactly HF
     * `Tokenizer.encode(text, add_special_tokens=False)`. */
    TOK_ENC_ADD_SPECIAL = 1,
    /* Added tokens marked special are not matched in the text: their strings
     * are encoded as plain text (HF `encode_special_tokens = True`). */
    TOK_ENC_SPECIAL_AS_TEXT = 2,
    /* No added token at all is matched in the text (user-supplied content
     * that must never produce control tokens). */
    TOK_ENC_ADDED_AS_TEXT = 4,
};

/* Encode `len` bytes of UTF-8 and APPEND the ids to *out. Returns BASE_OK, or
 * BASE_ERR_INVALID for invalid UTF-8 (message gives the byte offset; *out
 * unchanged). Thread-safe. */
base_status tok_encode(const tok_tokenizer *tk, const char *text, size_t len, int flags,
                       tok_ids *out);

/* Encode n texts over the pool's threads (pool may be NULL: the caller's
 * thread only). outs[i] receives texts[i]'s ids (appended). lens may be NULL
 * (NUL-terminated texts). Every text is attempted; status (may be NULL)
 * gets each text's status. Returns BASE_OK, or the first failing text's
 * status with its message prefixed by "text I of the batch". */
base_status tok_encode_batch(const tok_tokenizer *tk, base_pool *pool, const char *const *texts,
                             const size_t *lens, int64_t n, int flags, tok_ids *outs,
                             base_status *status);

enum {
    TOK_DEC_SKIP_SPECIAL = 1, /* drop added tokens marked special */
};

/* Decode ids and APPEND the text to *out (NUL-terminated). Unknown ids are
 * dropped and byte sequences that are not UTF-8 become U+FFFD, as HF does.
 * One difference from HF: a decoded byte 0 (the byte-level token "Ā" of
 * byte 0x00, which a model can sample) becomes U+FFFD too, so the text
 * never holds a NUL and every C-string consumer (JSON, Lua, stop strings)
 * sees all of it. Thread-safe; never fails. */
void tok_decode(const tok_tokenizer *tk, const int32_t *ids, int64_t n, int flags, base_buf *out);
/* Convenience: a malloc'd NUL-terminated string; *len (may be NULL) its length. */
char *tok_decode_str(const tok_tokenizer *tk, const int32_t *ids, int64_t n, int flags,
                     size_t *len);

/* Byte offset of the first invalid UTF-8 sequence, or len when valid. */
size_t tok_utf8_check(const char *s, size_t len);
/* APPEND s to *out with each maximal invalid UTF-8 subpart replaced by U+FFFD
 * (the rule of Python's errors="replace" and Rust's from_utf8_lossy). */
void tok_utf8_lossy(const char *s, size_t len, base_buf *out);

/* ------------------------------------------------------------------------ */
/* Templates (template.c)                                                   */

/* The R1-Zero training template (DeepSeek-R1 paper, Table 1), verbatim; the
 * question replaces {prompt}. */
extern const char *const tok_template_r1zero;
/* The R1 generation prompt suffix for the DeepSeek chat format. */
#define TOK_R1_GENERATION_PROMPT "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c><think>\n"

typedef struct {
    const char *prompt; /* replaces {prompt}; NULL = "" */
    const char *system; /* replaces {system}; NULL = "" */
} tok_template_vars;

/* Render a template: {prompt} and {system} are replaced by the variables,
 * {bos} and {eos} by the tokenizer's bos/eos strings ("" when it has none);
 * other braces are literal text. Returns a malloc'd string. */
char *tok_template_render(const tok_tokenizer *tk, const char *tmpl, const tok_template_vars *v);

/* A template typed on the command line, read with the escapes of a Lua
 * string literal, so '{prompt}\n' means what it means in a recipe: \n \t
 * \r \\ \" \' \xXX \ddd \u{XXX} \z and backslash-newline. \a \b \f \v
 * (control characters no template wants; "\boxed", "\frac" and "\vec"
 * typed with one backslash) and escapes Lua does not know are errors:
 * BASE_ERR_PARSE "byte N: why" (*out NULL). *out is malloc'd. The result
 * may hold a NUL only when \0 was written, which then ends it. */
base_status tok_template_unescape(const char *s, char **out);

/* Encode a rendered template and APPEND the ids to *out. Added-token strings
 * in the template text (e.g. "<｜User｜>", "<think>" where the vocabulary has
 * it) become their ids; the prompt and system values are encoded as plain
 * text even if they contain such strings. Text is tokenised as one string, so
 * without special strings in the values the ids equal HF encoding the
 * rendered text. flags: TOK_ENC_ADD_SPECIAL adds BOS/EOS as tok_encode. */
base_status tok_template_encode(const tok_tokenizer *tk, const char *tmpl,
                                const tok_template_vars *v, int flags, tok_ids *out);

/* One chat message: role "system", "user" or "assistant". */
typedef struct {
    const char *role;
    const char *content;
} tok_msg;

enum {
    TOK_CHAT_GENERATION_PROMPT = 1, /* end with "<｜Assistant｜>" */
    /* DeepSeek-R1 variant: previous assistant turns keep only the text after
     * their last "</think>", and the generation prompt ends in
     * "<｜Assistant｜><think>\n". */
    TOK_CHAT_R1 = 2,
    /* Assistant contents may hold added tokens ("<think>", "</think>"): they
     * are encoded as HF encodes the rendered text, the way the model wrote
     * them, instead of as plain text. For training data (SFT), where the
     * assistant turns are model output; user and system contents stay
     * plain text. */
    TOK_CHAT_ASSISTANT_TOKENS = 4,
};

/* DeepSeek-V3 chat format (the tokenizer_config.json chat_template without
 * tool calls): BOS, system prompts joined by "\n\n", then "<｜User｜>" + user
 * text, "<｜Assistant｜>" + assistant text + "<｜end▁of▁sentence｜>".
 * Returns BASE_ERR_INVALID for an unknown role. tok_chat_render gives the
 * text (malloc'd in *text); tok_chat_encode APPENDS the ids, message contents
 * encoded as plain text. */
base_status tok_chat_render(const tok_tokenizer *tk, const tok_msg *msgs, int n, int flags,
                            char **text);
base_status tok_chat_encode(const tok_tokenizer *tk, const tok_msg *msgs, int n, int flags,
                            tok_ids *out);

/* The tokenizer's own chat template (tokenizer_config.json "chat_template",
 * a Jinja text, or the entry named "default" of a list of templates), as
 * far as grpo can tell without a Jinja engine: the DeepSeek-V3 and
 * DeepSeek-R1 templates are recognised by the text they emit (the role
 * markers around message['content'], R1's content.split('</think>')[-1]
 * and its generation prompt "<｜Assistant｜><think>\n"); any other
 * template, DeepSeek-style variants with thinking switches included, is
 * TOK_CHAT_TEMPLATE_OTHER. */
typedef enum {
    TOK_CHAT_TEMPLATE_NONE = 0,    /* no chat_template (HF: apply_chat_template refuses) */
    TOK_CHAT_TEMPLATE_DEEPSEEK_V3, /* tok_chat_* with flags 0 renders it */
    TOK_CHAT_TEMPLATE_DEEPSEEK_R1, /* tok_chat_* with TOK_CHAT_R1 renders it */
    TOK_CHAT_TEMPLATE_OTHER,       /* not renderable here */
} tok_chat_template_kind;

/* Classify a chat_template text (NULL or "" = NONE). */
tok_chat_template_kind tok_chat_template_classify(const char *jinja);
/* The loaded tokenizer's chat template kind. */
tok_chat_template_kind tok_chat_template(const tok_tokenizer *tk);
/* "none", "DeepSeek-V3", "DeepSeek-R1", "other". */
const char *tok_chat_template_name(tok_chat_template_kind k);
/* Whether the DeepSeek chat format (tok_chat_*) is this model's own chat
 * format: BASE_OK when its chat template is DeepSeek-V3's or R1's, or when
 * it has no chat template but "<｜User｜>" and "<｜Assistant｜>" are added
 * tokens of its vocabulary. Otherwise BASE_ERR_UNSUPPORTED with a message
 * naming the tokenizer and why (the role markers would reach the model as
 * plain text it never saw, or its template is another one). */
base_status tok_chat_check(const tok_tokenizer *tk);

/* ------------------------------------------------------------------------ */
/* Writer for tiny byte-level tokenizers (tok_write.c)                      */

/* ids 0..255 are the bytes (vocabulary strings in the GPT-2 byte-level
 * alphabet), then special[i] gets id 256 + i. bos/eos/pad name entries of
 * special (or NULL). When add_bos, encoding with special tokens prepends BOS,
 * both here and in HF (TemplateProcessing + add_bos_token). */
typedef struct {
    const char *const *special;
    int n_special;
    const char *bos, *eos, *pad;
    int add_bos, add_eos;
} tok_bytelevel_spec;

/* Default special tokens: <|bos|> <|eos|> <|pad|> <think> </think> <answer>
 * </answer>, bos/eos/pad set, add_bos on. */
tok_bytelevel_spec tok_bytelevel_default(void);

/* Write DIR/tokenizer.json and DIR/tokenizer_config.json (atomically; DIR is
 * created). Loadable by tok_load and by HF tokenizers/transformers. */
base_status tok_write_bytelevel(const char *dir, const tok_bytelevel_spec *spec);

#ifdef __cplusplus
}
#endif

#endif
