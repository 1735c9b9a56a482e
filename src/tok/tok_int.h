/*
 * tok private header: the loaded tokenizer, its lookup tables and the
 * per-call scratch. Only the .c files of src/tok include it.
 */
#ifndef GRPO_TOK_INT_H
#define GRPO_TOK_INT_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>

#include "tok/tok.h"

/* ------------------------------------------------------------------------ */
/* String -> int32 map (open addressing; keys point into memory the owner
 * keeps alive). Not thread-safe for writes; reads are.                     */

typedef struct {
    const char *key;
    uint32_t len;
    uint32_t hash;
    int32_t val;
} tok_strmap_slot;

typedef struct {
    tok_strmap_slot *slots; /* [cap], key == NULL when empty */
    uint32_t cap, n;
} tok_strmap;

uint32_t tok_hash_bytes(const void *p, size_t n);
void tok_strmap_init(tok_strmap *m, uint32_t expected);
/* Insert or overwrite. Returns the previous value or -1. */
int32_t tok_strmap_put(tok_strmap *m, const char *key, uint32_t len, int32_t val);
int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len); /* -1 if absent */
void tok_strmap_free(tok_strmap *m);

/* (left id, right id) -> (rank, new id) for BPE merges. */
typedef struct {
    uint64_t key; /* (uint64)left << 32 | right; UINT64_MAX = empty */
    int32_t rank, new_id;
} tok_pair_slot;

typedef struct {
    tok_pair_slot *slots;
    uint32_t cap, n;
} tok_pairmap;

void tok_pairmap_init(tok_pairmap *m, uint32_t expected);
void tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t new_id);
const tok_pair_slot *tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b);
void tok_pairmap_free(tok_pairmap *m);

/* ------------------------------------------------------------------------ */
/* Byte trie for leftmost-longest added-token matching.                      */

typedef struct {
    int32_t *first;  /* [n_nodes] first child edge index or -1 */
    int32_t *next;   /* [n_edges] next sibling edge or -1 */
    uint8_t *byte;   /* [n_edges] */
    int32_t *child;  /* [n_edges] target node */
    int32_t *value;  /* [n_nodes] token id ending here or -1 */
    int32_t n_nodes, n_edges, cap_nodes, cap_edges;
    uint8_t first_byte[256]; /* 1 if some pattern starts with this byte */
    int empty;               /* no patterns */
} tok_trie;

void tok_trie_init(tok_trie *t);
void tok_trie_add(tok_trie *t, const char *s, size_t n, int32_t value); /* later wins */
/* Longest pattern starting at s[0] and ending at or before s[limit]: returns
 * its length (0 if none) and its value in *value. */
size_t tok_trie_longest(const tok_trie *t, const char *s, size_t limit, int32_t *value);
void tok_trie_free(tok_trie *t);

/* ------------------------------------------------------------------------ */
/* Pre-tokenizer steps                                                      */

typedef enum {
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_MERGED_PREV,
    TOK_SPLIT_MERGED_NEXT,
    TOK_SPLIT_CONTIGUOUS,
} tok_split_behavior;

/* PREFIX_SPACE is ByteLevel's add_prefix_space; ByteLevel's use_regex is a
 * SPLIT with the GPT-2 pattern; its byte mapping happens in the model step. */
typedef enum { TOK_PRE_SPLIT, TOK_PRE_PREFIX_SPACE } tok_pre_kind;

typedef struct {
    tok_pre_kind kind;
    /* SPLIT (Digits is a SPLIT on \p{N} or \p{N}+) */
    pcre2_code *re;
    int jit; /* pcre2_jit_compile succeeded */
    tok_split_behavior behavior;
    int invert;
} tok_pre_step;

typedef enum { TOK_NORM_NONE, TOK_NORM_NFC, TOK_NORM_NFKC, TOK_NORM_NFD, TOK_NORM_NFKD } tok_norm_form;

/* ------------------------------------------------------------------------ */
/* The tokenizer                                                            */

/* One added token, as Hugging Face's AddedVocabulary keeps it per id. The
 * strings are borrowed from tk->strs. */
typedef struct {
    int32_t id;
    int special; /* the content is in HF's special_tokens_set (any entry for it was special) */
    int lstrip, rstrip, single_word, normalized; /* of the last entry for this id */
    const char *content; /* as in the file */
    const char *cache;   /* HF normalized_cache of this id (normalized form != content), or NULL */
    const char *match;   /* the trie pattern: cache when normalized and cached, else content */
    const char *dec;     /* the decoding string: cache when cached, else content */
} tok_added;

/* Ids are dense-ish: every vocabulary id must be below the number of
 * entries the file defines (model.vocab + added_tokens) plus this gap, so
 * the per-id tables stay proportional to the file (tok.h, docs/tokenizer.md). */
#define TOK_ID_GAP 65536

struct tok_tokenizer {
    char *path; /* tokenizer.json path, for messages */

    /* model vocabulary */
    tok_strmap vocab;      /* token string -> id (model vocab only) */
    char *vocab_pool;      /* the vocabulary strings the map points into */
    int32_t n_model;       /* number of model vocab entries (HF get_vocab_size) */
    int32_t n_ids;         /* max id + 1 over model and added */
    char **id_str;         /* [n_ids] vocab or added string, NULL for holes */
    uint32_t *id_len;      /* [n_ids] */
    uint8_t **id_dec;      /* [n_ids] decoder bytes of each id (ByteLevel or raw) */
    uint32_t *id_dec_len;  /* [n_ids] */
    uint8_t *id_skip;      /* [n_ids] 1 if the id's string is a special token */
    tok_pairmap merges;
    int ignore_merges, byte_fallback, fuse_unk;
    int32_t unk_id;        /* -1 if none */
    char *prefix, *suffix; /* continuing_subword_prefix / end_of_word_suffix or NULL */
    int32_t byte_id[256];  /* byte-level char of each byte -> vocab id, or -1 */
    int32_t fallback_id[256]; /* "<0xAB>" -> id, or -1 (byte_fallback) */

    /* added tokens */
    tok_added *added;      /* one per id (HF added_tokens_map_r) */
    int32_t n_added;
    tok_strmap added_map;  /* content -> id (HF added_tokens_map; every content seen) */
    tok_strmap special_set; /* contents of special tokens -> 1 (HF special_tokens_set) */
    char **strs;           /* every added-token string; the maps and added[] borrow them */
    int32_t n_strs, cap_strs;
    tok_trie trie_raw;     /* normalized = false, matched on the raw text */
    tok_trie trie_norm;    /* normalized = true, matched on normalized text */
    int32_t *added_of_id;  /* [n_ids] index into added[] or -1 */

    tok_norm_form norm;
    tok_pre_step *pre;
    int n_pre;
    int bytelevel;         /* a ByteLevel pre-tokenizer step is present (last) */
    int decoder_bytelevel; /* decoder ByteLevel (else tokens joined by " ") */

    /* special tokens added by TOK_ENC_ADD_SPECIAL */
    int32_t *prefix_ids, *suffix_ids;
    int n_prefix_ids, n_suffix_ids;
    int32_t bos_id, eos_id, pad_id;
    int chat_template;     /* tok_chat_template_kind of tokenizer_config.json */

    /* \w and \s helpers for single_word/lstrip/rstrip (Rust regex classes) */
    pcre2_code *re_word;

    /* scratch free list */
    pthread_mutex_t mu;
    struct tok_scratch *free_scratch;
};

/* Pieces of text during encoding. id >= 0: an added token, already final. */
typedef struct {
    const char *p;
    uint32_t n;
    int32_t id;
} tok_piece;

typedef struct {
    tok_piece *v;
    size_t n, cap;
} tok_pieces;

void tok_pieces_push(tok_pieces *ps, const char *p, size_t n, int32_t id);

/* Word cache: piece bytes -> ids, bounded; cleared when full. */
typedef struct {
    uint32_t hash;
    uint32_t key_off, key_len; /* into pool */
    uint32_t ids_off, n_ids;   /* into idpool */
} tok_cache_slot;

typedef struct tok_scratch {
    struct tok_scratch *next_free;
    tok_pieces a, b;           /* pre-tokenizer double buffer */
    base_buf norm;             /* normalized text of all segments */
    base_buf prefixed;         /* pieces with a prepended space */
    base_buf mapped;           /* byte-level mapped string (ignore_merges, prefix) */
    /* BPE */
    struct tok_sym *syms;
    size_t syms_cap;
    struct tok_merge *heap;
    size_t heap_cap;
    /* regex */
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jstack;
    /* cache */
    tok_cache_slot *cache;
    uint32_t cache_cap, cache_n;
    base_buf cache_keys;
    int32_t *cache_ids;
    uint32_t cache_ids_n, cache_ids_cap;
    /* protected ranges in norm-space */
    size_t *prot;
    size_t prot_n, prot_cap;
} tok_scratch;

tok_scratch *tok_scratch_get(const tok_tokenizer *tk);
void tok_scratch_put(const tok_tokenizer *tk, tok_scratch *s);
void tok_scratch_free(tok_scratch *s);

/* A protected byte range of the input: added tokens are not matched in it. */
typedef struct {
    size_t start, end;
} tok_range;

/* The full encode with protected ranges (sorted, disjoint). */
base_status tok_encode_ranges(const tok_tokenizer *tk, const char *text, size_t len,
                              const tok_range *prot, int n_prot, int flags, tok_ids *out);

/* Pre-tokenize: split the non-added pieces in s->a through every step; the
 * result is left in s->a. Returns BASE_ERR_LIMIT when the regex engine fails. */
base_status tok_pretokenize(const tok_tokenizer *tk, tok_scratch *s);
/* Compile a tokenizer.json regex with Oniguruma's \s meaning; NULL + message on error. */
pcre2_code *tok_regex_compile(const char *pattern, int literal, const char *what, int *jit);

/* BPE on one pre-token; APPENDS ids. `bytes` is the piece before the
 * byte-level mapping when tk->bytelevel, else the model string itself. */
void tok_bpe_word(const tok_tokenizer *tk, tok_scratch *s, const char *bytes, size_t n,
                  tok_ids *out);

/* Normalize src into *dst (appends). Returns BASE_ERR_INVALID on failure. */
base_status tok_normalize(tok_norm_form form, const char *src, size_t n, base_buf *dst);
int tok_norm_available(void);

/* Load the added_tokens list (may be NULL) as HF AddedVocabulary::add_tokens
 * does: ids, duplicates, special_tokens_set, normalized forms, the tries.
 * Needs the model vocabulary and the normalizer loaded. */
base_status tok_added_load(tok_tokenizer *tk, const cJSON *list);

/* Added-token matching on one segment (HF AddedVocabulary::find_matches):
 * splits [p, p+n) into pieces appended to *outp. prot: protected ranges
 * relative to p (sorted), may be NULL. */
void tok_added_split(const tok_tokenizer *tk, const tok_trie *trie, const char *p, size_t n,
                     const size_t *prot, size_t n_prot, int flags, tok_pieces *outp);

/* tok_utf8_lossy; with nul != 0 a 0 byte becomes U+FFFD as well (decoding). */
void tok_utf8_lossy_at(const char *s, size_t len, int nul, base_buf *out);

/* GPT-2 byte-level alphabet: byte -> code point, and code point -> byte (-1). */
uint32_t tok_byte_to_cp(uint8_t b);
int tok_cp_to_byte(uint32_t cp);
/* Encode one code point as UTF-8 into out (>= 4 bytes); returns bytes written. */
int tok_utf8_put(uint32_t cp, char *out);
/* Decode one code point at s (valid UTF-8 assumed); *adv gets its length. */
uint32_t tok_utf8_get(const char *s, size_t n, int *adv);
/* Unicode White_Space property (Rust's \s, Oniguruma's \s). */
int tok_is_white_space(uint32_t cp);

#endif
