/*
 * Loading tokenizer.json (+ tokenizer_config.json) into a tok_tokenizer.
 * Mirrors how Hugging Face `tokenizers` deserialises the file: the model's
 * vocabulary and merges (errors for merges naming unknown tokens), added
 * tokens with ids assigned the way AddedVocabulary::add_tokens assigns them,
 * and the pipeline components. Anything outside the supported set (tok.h) is
 * refused with BASE_ERR_UNSUPPORTED naming the file and the component, never
 * silently approximated.
 */
#include "tok/tok_int.h"

#include <stdlib.h>
#include <string.h>

#define GPT2_PATTERN \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

typedef struct {
    tok_tokenizer *tk;
    const char *path; /* tokenizer.json */
    char *pool;       /* vocabulary strings */
    size_t pool_len, pool_cap;
    int n_added_list; /* entries of "added_tokens" (bounds the ids) */
} loader;

static const char *type_of(const cJSON *o) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static base_status unsupported(const loader *L, const char *what, const char *type) {
    return base_err_set(BASE_ERR_UNSUPPORTED,
                        "%s: %s type '%s' is unsupported (grpo reads byte-level BPE tokenizers: "
                        "see src/tok/tok.h for the supported components)",
                        L->path, what, type ? type : "(missing)");
}

/* ------------------------------------------------------------------------ */
/* Model                                                                    */

static base_status load_vocab(loader *L, const cJSON *vocab) {
    tok_tokenizer *tk = L->tk;
    if (!cJSON_IsObject(vocab))
        return base_err_set(BASE_ERR_PARSE, "%s: model.vocab is not an object", L->path);
    size_t total = 0;
    int64_t n = cJSON_GetArraySize(vocab), max_id = -1;
    /* ids are bounded by what the file defines, so the per-id tables
     * (build_id_tables) stay proportional to the file */
    int64_t bound = n + L->n_added_list + TOK_ID_GAP;
    if (bound > INT32_MAX) bound = INT32_MAX;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int64_t id;
        if (!base_json_to_int(e, 0, INT64_MAX, &id)) {
            char got[64];
            return base_err_set(BASE_ERR_PARSE, "%s: model.vocab[\"%s\"] is not a valid id (got %s)",
                                L->path, e->string, base_json_describe(e, got, sizeof got));
        }
        if (id >= bound)
            return base_err_set(BASE_ERR_INVALID,
                                "%s: model.vocab[\"%s\"] has id %lld, but the file defines %lld "
                                "tokens (model.vocab + added_tokens): ids must be below %lld "
                                "(entries + %d)", L->path, e->string, (long long)id,
                                (long long)(n + L->n_added_list), (long long)bound, TOK_ID_GAP);
        total += strlen(e->string) + 1;
        if (id > max_id) max_id = id;
    }
    L->pool = base_xmalloc(total ? total : 1);
    L->pool_cap = total;
    tok_strmap_init(&tk->vocab, (uint32_t)n);
    tk->n_model = 0;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        size_t len = strlen(e->string);
        char *s = L->pool + L->pool_len;
        memcpy(s, e->string, len + 1);
        L->pool_len += len + 1;
        /* a repeated key: the map keeps the later id, as serde does */
        if (tok_strmap_put(&tk->vocab, s, (uint32_t)len, (int32_t)e->valuedouble) < 0)
            tk->n_model++;
    }
    tk->n_ids = (int32_t)(max_id + 1);
    return BASE_OK;
}

/* "a b" -> a, b (split on the single space; exactly two parts). */
static int split_merge(const char *s, char **a, char **b) {
    const char *sp = strchr(s, ' ');
    if (!sp || strchr(sp + 1, ' ')) return 0;
    *a = strndup(s, (size_t)(sp - s));
    *b = base_xstrdup(sp + 1);
    if (!*a) base_die("out of memory");
    return 1;
}

static base_status load_merges(loader *L, const cJSON *merges) {
    tok_tokenizer *tk = L->tk;
    if (!cJSON_IsArray(merges))
        return base_err_set(BASE_ERR_PARSE, "%s: model.merges is not an array", L->path);
    int n = cJSON_GetArraySize(merges);
    tok_pairmap_init(&tk->merges, (uint32_t)n);
    size_t plen = tk->prefix ? strlen(tk->prefix) : 0;
    base_buf joined = {0};
    int rank = 0;
    base_status st = BASE_OK;
    for (const cJSON *m = merges->child; m; m = m->next) {
        char *a = NULL, *b = NULL;
        if (cJSON_IsString(m)) {
            if (!strncmp(m->valuestring, "#version", 8)) continue;
            if (!split_merge(m->valuestring, &a, &b)) {
                st = base_err_set(BASE_ERR_PARSE, "%s: merge %d (\"%s\") is not two tokens "
                                  "separated by one space", L->path, rank + 1, m->valuestring);
                break;
            }
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 &&
                   cJSON_IsString(m->child) && cJSON_IsString(m->child->next)) {
            a = base_xstrdup(m->child->valuestring);
            b = base_xstrdup(m->child->next->valuestring);
        } else {
            st = base_err_set(BASE_ERR_PARSE, "%s: merge %d is neither \"a b\" nor [\"a\", \"b\"]",
                              L->path, rank + 1);
            break;
        }
        int32_t ia = tok_strmap_get(&tk->vocab, a, strlen(a));
        int32_t ib = tok_strmap_get(&tk->vocab, b, strlen(b));
        const char *bad = ia < 0 ? a : ib < 0 ? b : NULL;
        int32_t inew = -1;
        if (!bad) {
            size_t lb = strlen(b);
            base_buf_reset(&joined);
            base_buf_puts(&joined, a);
            base_buf_append(&joined, b + (plen <= lb ? plen : lb), lb - (plen <= lb ? plen : lb));
            inew = tok_strmap_get(&tk->vocab, joined.data, joined.len);
            if (inew < 0) bad = joined.data;
        }
        if (bad) {
            st = base_err_set(BASE_ERR_INVALID,
                              "%s: merge %d (\"%s\" + \"%s\") names token \"%s\" that is not in "
                              "the vocabulary", L->path, rank + 1, a, b, bad);
            free(a);
            free(b);
            break;
        }
        tok_pairmap_put(&tk->merges, ia, ib, rank, inew);
        rank++;
        free(a);
        free(b);
    }
    base_buf_free(&joined);
    return st;
}

static base_status load_model(loader *L, const cJSON *model) {
    tok_tokenizer *tk = L->tk;
    if (!cJSON_IsObject(model))
        return base_err_set(BASE_ERR_PARSE, "%s: no \"model\" object", L->path);
    const char *type = type_of(model);
    if (type ? strcmp(type, "BPE") : !cJSON_GetObjectItemCaseSensitive(model, "merges"))
        return base_err_set(BASE_ERR_UNSUPPORTED,
                            "%s: model type '%s' is unsupported (grpo reads BPE tokenizers only)",
                            L->path, type ? type : "(missing, not BPE)");
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble != 0.0)
        return base_err_set(BASE_ERR_UNSUPPORTED, "%s: BPE dropout %g is unsupported "
                            "(it makes encoding random)", L->path, dropout->valuedouble);
    const char *pre = base_json_str(model, "continuing_subword_prefix", NULL);
    const char *suf = base_json_str(model, "end_of_word_suffix", NULL);
    tk->prefix = pre ? base_xstrdup(pre) : NULL;
    tk->suffix = suf ? base_xstrdup(suf) : NULL;
    tk->ignore_merges = base_json_bool(model, "ignore_merges", 0, NULL);
    tk->byte_fallback = base_json_bool(model, "byte_fallback", 0, NULL);
    tk->fuse_unk = base_json_bool(model, "fuse_unk", 0, NULL);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!vocab || !merges)
        return base_err_set(BASE_ERR_PARSE, "%s: model has no vocab or no merges", L->path);
    base_status st = load_vocab(L, vocab);
    if (st) return st;
    const char *unk = base_json_str(model, "unk_token", NULL);
    tk->unk_id = -1;
    if (unk) {
        tk->unk_id = tok_strmap_get(&tk->vocab, unk, strlen(unk));
        if (tk->unk_id < 0)
            return base_err_set(BASE_ERR_INVALID, "%s: unk_token \"%s\" is not in the vocabulary",
                                L->path, unk);
    }
    st = load_merges(L, merges);
    if (st) return st;
    char buf[16];
    for (int b = 0; b < 256; b++) {
        int n = tok_utf8_put(tok_byte_to_cp((uint8_t)b), buf);
        tk->byte_id[b] = tok_strmap_get(&tk->vocab, buf, (size_t)n);
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        tk->fallback_id[b] = tok_strmap_get(&tk->vocab, buf, strlen(buf));
    }
    return BASE_OK;
}

/* ------------------------------------------------------------------------ */
/* Normalizer, pre-tokenizer, post-processor, decoder                       */

static base_status load_normalizer(loader *L, const cJSON *n) {
    if (!n || cJSON_IsNull(n)) return BASE_OK;
    const char *type = type_of(n);
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (!cJSON_IsArray(list))
            return base_err_set(BASE_ERR_PARSE, "%s: Sequence normalizer without a list", L->path);
        for (const cJSON *e = list->child; e; e = e->next) {
            base_status st = load_normalizer(L, e);
            if (st) return st;
        }
        return BASE_OK;
    }
    static const struct {
        const char *name;
        tok_norm_form form;
    } forms[] = {{"NFC", TOK_NORM_NFC}, {"NFKC", TOK_NORM_NFKC}, {"NFD", TOK_NORM_NFD},
                 {"NFKD", TOK_NORM_NFKD}};
    for (size_t i = 0; type && i < sizeof forms / sizeof forms[0]; i++) {
        if (strcmp(type, forms[i].name)) continue;
        if (L->tk->norm != TOK_NORM_NONE)
            return base_err_set(BASE_ERR_UNSUPPORTED, "%s: more than one Unicode normalizer in "
                                "a Sequence is unsupported", L->path);
        if (!tok_norm_available())
            return base_err_set(BASE_ERR_UNSUPPORTED, "%s: normalizer %s needs ICU, and this "
                                "build has none (install libicu-dev and rebuild)", L->path, type);
        L->tk->norm = forms[i].form;
        return BASE_OK;
    }
    return unsupported(L, "normalizer", type);
}

static base_status add_step(loader *L, tok_pre_step step) {
    tok_tokenizer *tk = L->tk;
    tk->pre = base_xrealloc(tk->pre, (size_t)(tk->n_pre + 1) * sizeof *tk->pre);
    tk->pre[tk->n_pre++] = step;
    return BASE_OK;
}

static base_status add_split(loader *L, const char *pattern, int literal, tok_split_behavior b,
                             int invert) {
    tok_pre_step st = {.kind = TOK_PRE_SPLIT, .behavior = b, .invert = invert};
    st.re = tok_regex_compile(pattern, literal, L->path, &st.jit);
    if (!st.re) return BASE_ERR_INVALID;
    return add_step(L, st);
}

static base_status load_pre(loader *L, const cJSON *p) {
    tok_tokenizer *tk = L->tk;
    if (!p || cJSON_IsNull(p)) return BASE_OK;
    const char *type = type_of(p);
    if (tk->bytelevel)
        return base_err_set(BASE_ERR_UNSUPPORTED, "%s: a pre-tokenizer after ByteLevel is "
                            "unsupported (ByteLevel must come last)", L->path);
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        if (!cJSON_IsArray(list))
            return base_err_set(BASE_ERR_PARSE, "%s: Sequence pre-tokenizer without a list",
                                L->path);
        for (const cJSON *e = list->child; e; e = e->next) {
            base_status st = load_pre(L, e);
            if (st) return st;
        }
        return BASE_OK;
    }
    if (type && !strcmp(type, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const char *re = base_json_str(pat, "Regex", NULL);
        const char *lit = base_json_str(pat, "String", NULL);
        const char *beh = base_json_str(p, "behavior", NULL);
        static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious",
                                      "MergedWithNext", "Contiguous"};
        int b = -1;
        for (int i = 0; beh && i < 5; i++)
            if (!strcmp(beh, names[i])) b = i;
        if ((!re && !lit) || b < 0)
            return base_err_set(BASE_ERR_PARSE, "%s: Split pre-tokenizer needs a pattern "
                                "{\"Regex\"|\"String\": ...} and a behavior (%s)", L->path,
                                beh ? beh : "missing");
        return add_split(L, re ? re : lit, !re, (tok_split_behavior)b,
                         base_json_bool(p, "invert", 0, NULL));
    }
    if (type && !strcmp(type, "Digits")) {
        /* char::is_numeric == \p{N}; Contiguous over single-char matches is
         * the same as Isolated over runs. */
        int indiv = base_json_bool(p, "individual_digits", 0, NULL);
        return add_split(L, indiv ? "\\p{N}" : "\\p{N}+", 0, TOK_SPLIT_ISOLATED, 0);
    }
    if (type && !strcmp(type, "ByteLevel")) {
        if (base_json_bool(p, "add_prefix_space", 1, NULL))
            add_step(L, (tok_pre_step){.kind = TOK_PRE_PREFIX_SPACE});
        if (base_json_bool(p, "use_regex", 1, NULL)) {
            base_status st = add_split(L, GPT2_PATTERN, 0, TOK_SPLIT_ISOLATED, 0);
            if (st) return st;
        }
        tk->bytelevel = 1;
        return BASE_OK;
    }
    return unsupported(L, "pre_tokenizer", type);
}

static base_status load_template(loader *L, const cJSON *pp) {
    tok_tokenizer *tk = L->tk;
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(pp, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(pp, "special_tokens");
    if (!cJSON_IsArray(single))
        return base_err_set(BASE_ERR_PARSE, "%s: TemplateProcessing without \"single\"", L->path);
    int seen_seq = 0;
    for (const cJSON *it = single->child; it; it = it->next) {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
        if (cJSON_GetObjectItemCaseSensitive(it, "Sequence")) {
            seen_seq = 1;
            continue;
        }
        const char *name = base_json_str(sp, "id", NULL);
        const cJSON *def = name ? cJSON_GetObjectItemCaseSensitive(specials, name) : NULL;
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(def, "ids");
        if (!cJSON_IsArray(ids))
            return base_err_set(BASE_ERR_PARSE, "%s: TemplateProcessing special token \"%s\" "
                                "has no ids", L->path, name ? name : "?");
        for (const cJSON *id = ids->child; id; id = id->next) {
            int32_t **v = seen_seq ? &tk->suffix_ids : &tk->prefix_ids;
            int *n = seen_seq ? &tk->n_suffix_ids : &tk->n_prefix_ids;
            int64_t x;
            /* checked against the ids the tokenizer has in build_id_tables */
            if (!base_json_to_int(id, 0, INT32_MAX, &x))
                return base_err_set(BASE_ERR_PARSE, "%s: TemplateProcessing special token \"%s\" "
                                    "has an id that is not an integer in [0, 2^31)", L->path, name);
            *v = base_xrealloc(*v, (size_t)(*n + 1) * sizeof **v);
            (*v)[(*n)++] = (int32_t)x;
        }
    }
    return BASE_OK;
}

static base_status load_post(loader *L, const cJSON *pp) {
    if (!pp || cJSON_IsNull(pp)) return BASE_OK;
    const char *type = type_of(pp);
    if (type && !strcmp(type, "ByteLevel")) return BASE_OK; /* offsets only */
    if (type && !strcmp(type, "TemplateProcessing")) return load_template(L, pp);
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(pp, "processors");
        for (const cJSON *e = list ? list->child : NULL; e; e = e->next) {
            base_status st = load_post(L, e);
            if (st) return st;
        }
        return BASE_OK;
    }
    return unsupported(L, "post_processor", type);
}

static base_status load_decoder(loader *L, const cJSON *d) {
    if (!d || cJSON_IsNull(d)) return BASE_OK;
    const char *type = type_of(d);
    if (type && !strcmp(type, "ByteLevel")) {
        L->tk->decoder_bytelevel = 1;
        return BASE_OK;
    }
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(d, "decoders");
        if (cJSON_GetArraySize(list) == 1) return load_decoder(L, list->child);
    }
    return unsupported(L, "decoder", type);
}

/* ------------------------------------------------------------------------ */
/* Per-id tables                                                            */

static base_status build_id_tables(tok_tokenizer *tk) {
    int32_t n = tk->n_ids;
    const int32_t *fix[2] = {tk->prefix_ids, tk->suffix_ids};
    int nfix[2] = {tk->n_prefix_ids, tk->n_suffix_ids};
    for (int w = 0; w < 2; w++)
        for (int i = 0; i < nfix[w]; i++)
            if (fix[w][i] >= n)
                return base_err_set(BASE_ERR_INVALID, "%s: post_processor: TemplateProcessing "
                                    "id %d is not a token (the tokenizer has ids 0..%d)",
                                    tk->path, fix[w][i], n - 1);
    tk->id_str = base_xcalloc((size_t)n, sizeof *tk->id_str);
    tk->id_len = base_xcalloc((size_t)n, sizeof *tk->id_len);
    tk->id_dec = base_xcalloc((size_t)n, sizeof *tk->id_dec);
    tk->id_dec_len = base_xcalloc((size_t)n, sizeof *tk->id_dec_len);
    tk->id_skip = base_xcalloc((size_t)n, 1);
    tk->added_of_id = base_xmalloc((size_t)n * sizeof *tk->added_of_id);
    for (int32_t i = 0; i < n; i++) tk->added_of_id[i] = -1;
    for (uint32_t j = 0; j < tk->vocab.cap; j++) {
        const tok_strmap_slot *s = &tk->vocab.slots[j];
        /* two strings with one id: the first in the file (the pool keeps
         * file order), so the choice does not depend on hashing */
        if (!s->key || (tk->id_str[s->val] && tk->id_str[s->val] < s->key)) continue;
        tk->id_str[s->val] = (char *)s->key;
        tk->id_len[s->val] = s->len;
    }
    for (int32_t k = 0; k < tk->n_added; k++) tk->added_of_id[tk->added[k].id] = k;
    for (int32_t i = 0; i < n; i++) {
        /* decode string: an added token's (HF simple_id_to_token), else the vocab's */
        const char *s = tk->id_str[i];
        size_t len = tk->id_len[i];
        if (tk->added_of_id[i] >= 0) {
            s = tk->added[tk->added_of_id[i]].dec;
            len = strlen(s);
        }
        if (!s) continue;
        /* HF decode skips a token whose string is in special_tokens_set */
        tk->id_skip[i] = tok_strmap_get(&tk->special_set, s, len) >= 0;
        uint8_t *d = base_xmalloc(len + 1);
        size_t dn = 0;
        int all = tk->decoder_bytelevel;
        for (size_t p = 0; all && p < len;) {
            int adv;
            int b = tok_cp_to_byte(tok_utf8_get(s + p, len - p, &adv));
            if (b < 0) all = 0;
            else d[dn++] = (uint8_t)b;
            p += (size_t)adv;
        }
        if (!all) {
            if (len) memcpy(d, s, len);
            dn = len;
        }
        tk->id_dec[i] = d;
        tk->id_dec_len[i] = (uint32_t)dn;
    }
    return BASE_OK;
}

/* ------------------------------------------------------------------------ */
/* tokenizer_config.json                                                    */

static const char *config_token(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) return base_json_str(v, "content", NULL);
    return NULL;
}

/* chat_template: a string, or a list of {"name", "template"} whose
 * "default" entry is the one apply_chat_template uses. */
static const char *config_chat_template(const cJSON *cfg) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsArray(v))
        for (const cJSON *e = v->child; e; e = e->next) {
            const char *name = base_json_str(e, "name", NULL);
            if (name && !strcmp(name, "default")) return base_json_str(e, "template", NULL);
        }
    return NULL;
}

static base_status load_config(tok_tokenizer *tk, const char *text, size_t len, const char *path) {
    cJSON *cfg = NULL;
    base_status st = base_json_parse(text, len, path, &cfg);
    if (st) return st;
    if (!cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return base_err_set(BASE_ERR_PARSE, "%s: not a JSON object", path);
    }
    const char *names[3] = {config_token(cfg, "bos_token"), config_token(cfg, "eos_token"),
                            config_token(cfg, "pad_token")};
    int32_t *ids[3] = {&tk->bos_id, &tk->eos_id, &tk->pad_id};
    for (int i = 0; i < 3; i++) {
        if (!names[i]) continue;
        *ids[i] = tok_token_id(tk, names[i]);
        if (*ids[i] < 0) {
            st = base_err_set(BASE_ERR_INVALID, "%s: %s \"%s\" is not a token of the tokenizer",
                              path, i == 0 ? "bos_token" : i == 1 ? "eos_token" : "pad_token",
                              names[i]);
            break;
        }
    }
    int has_bos, has_eos;
    int add_bos = base_json_bool(cfg, "add_bos_token", 0, &has_bos);
    int add_eos = base_json_bool(cfg, "add_eos_token", 0, &has_eos);
    if (!st && (has_bos || has_eos)) {
        /* LlamaTokenizerFast semantics: these flags replace the post-processor */
        free(tk->prefix_ids);
        free(tk->suffix_ids);
        tk->prefix_ids = tk->suffix_ids = NULL;
        tk->n_prefix_ids = tk->n_suffix_ids = 0;
        if (add_bos && tk->bos_id < 0)
            st = base_err_set(BASE_ERR_INVALID, "%s: add_bos_token without a bos_token", path);
        if (add_eos && tk->eos_id < 0)
            st = base_err_set(BASE_ERR_INVALID, "%s: add_eos_token without an eos_token", path);
        if (!st && add_bos) {
            tk->prefix_ids = base_xmalloc(sizeof(int32_t));
            tk->prefix_ids[tk->n_prefix_ids++] = tk->bos_id;
        }
        if (!st && add_eos) {
            tk->suffix_ids = base_xmalloc(sizeof(int32_t));
            tk->suffix_ids[tk->n_suffix_ids++] = tk->eos_id;
        }
    }
    if (tk->pad_id < 0) tk->pad_id = tk->eos_id;
    tk->chat_template = (int)tok_chat_template_classify(config_chat_template(cfg));
    cJSON_Delete(cfg);
    return st;
}

/* ------------------------------------------------------------------------ */

/* tokenizer.json text (named `what`) and, when cfg != NULL, the text of
 * tokenizer_config.json (named `cfg_what`). */
static base_status load_text(const char *text, size_t len, const char *what, const char *cfg,
                             size_t cfg_len, const char *cfg_what, tok_tokenizer **out) {
    *out = NULL;
    /* serde reads tokenizer.json as a UTF-8 string: HF refuses it too */
    size_t bad = tok_utf8_check(text, len);
    if (bad < len) {
        int line, col;
        base_text_linecol(text, bad, &line, &col);
        return base_err_set(BASE_ERR_PARSE, "%s:%d:%d: invalid UTF-8", what, line, col);
    }
    cJSON *root = NULL;
    base_status st = base_json_parse(text, len, what, &root);
    if (st) return st;
    tok_tokenizer *tk = base_xcalloc(1, sizeof *tk);
    pthread_mutex_init(&tk->mu, NULL);
    tk->path = base_xstrdup(what);
    tk->bos_id = tk->eos_id = tk->pad_id = tk->unk_id = -1;
    loader L = {.tk = tk, .path = what};
    if (!cJSON_IsObject(root))
        st = base_err_set(BASE_ERR_PARSE, "%s: not a JSON object", what);
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    L.n_added_list = cJSON_IsArray(added) ? cJSON_GetArraySize(added) : 0;
    /* the normalizer first: normalized added tokens need it */
    if (!st) st = load_normalizer(&L, cJSON_GetObjectItemCaseSensitive(root, "normalizer"));
    if (!st) st = load_model(&L, cJSON_GetObjectItemCaseSensitive(root, "model"));
    if (!st) st = load_pre(&L, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"));
    if (!st) st = load_post(&L, cJSON_GetObjectItemCaseSensitive(root, "post_processor"));
    if (!st) st = load_decoder(&L, cJSON_GetObjectItemCaseSensitive(root, "decoder"));
    if (!st) st = tok_added_load(tk, added);
    cJSON_Delete(root);
    /* the vocabulary strings live in L.pool: hand it to the tokenizer */
    tk->vocab_pool = L.pool;
    if (!st) st = build_id_tables(tk);
    if (!st) {
        const char *wre = "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]";
        int jit;
        tk->re_word = tok_regex_compile(wre, 0, "single_word class", &jit);
        if (!tk->re_word) st = BASE_ERR_INVALID;
    }
    if (!st && cfg) st = load_config(tk, cfg, cfg_len, cfg_what);
    if (st) {
        tok_free(tk);
        return st;
    }
    *out = tk;
    return BASE_OK;
}

base_status tok_load_mem(const char *json, size_t len, const char *config, size_t config_len,
                         const char *what, tok_tokenizer **out) {
    return load_text(json, len, what, config, config_len, "tokenizer_config.json", out);
}

base_status tok_load_files(const char *json_path, const char *config_path, tok_tokenizer **out) {
    *out = NULL;
    char *text = NULL, *cfg = NULL;
    size_t len = 0, cfg_len = 0;
    base_status st = base_read_file(json_path, &text, &len);
    if (!st && config_path && base_file_exists(config_path))
        st = base_read_file(config_path, &cfg, &cfg_len);
    if (!st) st = load_text(text, len, json_path, cfg, cfg_len, config_path, out);
    free(text);
    free(cfg);
    return st;
}

base_status tok_load(const char *dir, tok_tokenizer **out) {
    char *j = base_path_join(dir, "tokenizer.json");
    char *c = base_path_join(dir, "tokenizer_config.json");
    base_status st = tok_load_files(j, c, out);
    free(j);
    free(c);
    return st;
}

void tok_free(tok_tokenizer *tk) {
    if (!tk) return;
    tok_strmap_free(&tk->vocab);
    tok_pairmap_free(&tk->merges);
    tok_strmap_free(&tk->added_map);
    tok_strmap_free(&tk->special_set);
    tok_trie_free(&tk->trie_raw);
    tok_trie_free(&tk->trie_norm);
    free(tk->added);
    for (int32_t i = 0; i < tk->n_strs; i++) free(tk->strs[i]);
    free(tk->strs);
    if (tk->id_dec)
        for (int32_t i = 0; i < tk->n_ids; i++) free(tk->id_dec[i]);
    free(tk->id_dec);
    free(tk->id_dec_len);
    free(tk->id_str);
    free(tk->id_len);
    free(tk->id_skip);
    free(tk->added_of_id);
    for (int i = 0; i < tk->n_pre; i++) pcre2_code_free(tk->pre[i].re);
    free(tk->pre);
    pcre2_code_free(tk->re_word);
    free(tk->prefix_ids);
    free(tk->suffix_ids);
    free(tk->prefix);
    free(tk->suffix);
    free(tk->vocab_pool);
    while (tk->free_scratch) {
        tok_scratch *s = tk->free_scratch;
        tk->free_scratch = s->next_free;
        tok_scratch_free(s);
    }
    pthread_mutex_destroy(&tk->mu);
    free(tk->path);
    free(tk);
}

int32_t tok_vocab_size(const tok_tokenizer *tk) { return tk->n_ids; }

int32_t tok_token_id(const tok_tokenizer *tk, const char *token) {
    size_t n = strlen(token);
    int32_t id = tok_strmap_get(&tk->added_map, token, n);
    return id >= 0 ? id : tok_strmap_get(&tk->vocab, token, n);
}

const char *tok_token_str(const tok_tokenizer *tk, int32_t id) {
    if (id < 0 || id >= tk->n_ids) return NULL;
    if (tk->added_of_id[id] >= 0) return tk->added[tk->added_of_id[id]].content;
    return tk->id_str[id];
}

int tok_is_special(const tok_tokenizer *tk, int32_t id) {
    return id >= 0 && id < tk->n_ids && tk->added_of_id[id] >= 0 &&
           tk->added[tk->added_of_id[id]].special;
}

int32_t tok_bos_id(const tok_tokenizer *tk) { return tk->bos_id; }
int32_t tok_eos_id(const tok_tokenizer *tk) { return tk->eos_id; }
int32_t tok_pad_id(const tok_tokenizer *tk) { return tk->pad_id; }
