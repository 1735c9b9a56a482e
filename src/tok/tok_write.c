/*
 * Writer for tiny byte-level tokenizers: 256 byte tokens (ids 0..255, the
 * GPT-2 byte-level alphabet, no merges) plus chosen special tokens from id
 * 256. Tiny demo models use them. The files are standard: tok_load reads
 * them, and Hugging Face tokenizers/transformers load them too. BOS/EOS on
 * "add special tokens" are written both as a TemplateProcessing
 * post-processor (what tokenizers applies) and as add_bos_token /
 * add_eos_token (what tok_load and transformers' Llama tokenizers apply), so
 * every reader adds the same ids.
 */
#include "tok/tok_int.h"

#include <stdlib.h>
#include <string.h>

tok_bytelevel_spec tok_bytelevel_default(void) {
    static const char *const specials[] = {"<|bos|>", "<|eos|>", "<|pad|>", "<think>",
                                           "</think>", "<answer>", "</answer>"};
    tok_bytelevel_spec s = {specials, 7, "<|bos|>", "<|eos|>", "<|pad|>", 1, 0};
    return s;
}

static cJSON *template_item(const char *special, const char *seq, int type_id) {
    cJSON *o = cJSON_CreateObject(), *in = cJSON_CreateObject();
    cJSON_AddStringToObject(in, "id", special ? special : seq);
    cJSON_AddNumberToObject(in, "type_id", type_id);
    cJSON_AddItemToObject(o, special ? "SpecialToken" : "Sequence", in);
    return o;
}

static cJSON *post_processor(const tok_bytelevel_spec *sp, int bos_id, int eos_id) {
    if (!(sp->add_bos && sp->bos) && !(sp->add_eos && sp->eos)) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "type", "ByteLevel");
        cJSON_AddBoolToObject(p, "add_prefix_space", 0);
        cJSON_AddBoolToObject(p, "trim_offsets", 0);
        cJSON_AddBoolToObject(p, "use_regex", 0);
        return p;
    }
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "type", "TemplateProcessing");
    const char *seqs[2] = {"A", "B"};
    cJSON *single = cJSON_AddArrayToObject(p, "single"), *pair = cJSON_AddArrayToObject(p, "pair");
    for (int k = 0; k < 2; k++) {
        if (sp->add_bos && sp->bos) {
            if (k == 0) cJSON_AddItemToArray(single, template_item(sp->bos, NULL, 0));
            cJSON_AddItemToArray(pair, template_item(sp->bos, NULL, k));
        }
        if (k == 0) cJSON_AddItemToArray(single, template_item(NULL, seqs[k], 0));
        cJSON_AddItemToArray(pair, template_item(NULL, seqs[k], k));
        if (sp->add_eos && sp->eos) {
            if (k == 0) cJSON_AddItemToArray(single, template_item(sp->eos, NULL, 0));
            cJSON_AddItemToArray(pair, template_item(sp->eos, NULL, k));
        }
    }
    cJSON *st = cJSON_AddObjectToObject(p, "special_tokens");
    const char *names[2] = {sp->add_bos ? sp->bos : NULL, sp->add_eos ? sp->eos : NULL};
    int ids[2] = {bos_id, eos_id};
    for (int k = 0; k < 2; k++) {
        if (!names[k] || cJSON_GetObjectItemCaseSensitive(st, names[k])) continue;
        cJSON *t = cJSON_AddObjectToObject(st, names[k]);
        cJSON_AddStringToObject(t, "id", names[k]);
        cJSON_AddItemToObject(t, "ids", cJSON_CreateIntArray(&ids[k], 1));
        cJSON *toks = cJSON_AddArrayToObject(t, "tokens");
        cJSON_AddItemToArray(toks, cJSON_CreateString(names[k]));
    }
    return p;
}

static base_status write_json(const char *dir, const char *name, cJSON *root) {
    char *text = cJSON_Print(root);
    if (!text) base_die("cJSON_Print: out of memory");
    char *path = base_path_join(dir, name);
    size_t n = strlen(text);
    text = base_xrealloc(text, n + 2);
    text[n] = '\n';
    base_status st = base_write_file_atomic(path, text, n + 1);
    free(path);
    free(text);
    return st;
}

static int special_index(const tok_bytelevel_spec *sp, const char *name) {
    for (int i = 0; name && i < sp->n_special; i++)
        if (!strcmp(sp->special[i], name)) return i;
    return -1;
}

base_status tok_write_bytelevel(const char *dir, const tok_bytelevel_spec *sp) {
    for (int i = 0; i < sp->n_special; i++) {
        if (!sp->special[i] || !*sp->special[i] || tok_utf8_check(sp->special[i],
                                                   strlen(sp->special[i])) != strlen(sp->special[i]))
            return base_err_set(BASE_ERR_INVALID, "special token %d is empty or not UTF-8", i);
        if (special_index(sp, sp->special[i]) != i)
            return base_err_set(BASE_ERR_INVALID, "special token \"%s\" is listed twice",
                                sp->special[i]);
    }
    const char *roles[3] = {sp->bos, sp->eos, sp->pad};
    const char *role_names[3] = {"bos", "eos", "pad"};
    for (int k = 0; k < 3; k++)
        if (roles[k] && special_index(sp, roles[k]) < 0)
            return base_err_set(BASE_ERR_INVALID, "%s token \"%s\" is not one of the special "
                                "tokens", role_names[k], roles[k]);
    if ((sp->add_bos && !sp->bos) || (sp->add_eos && !sp->eos))
        return base_err_set(BASE_ERR_INVALID, "add_bos/add_eos without a bos/eos token");
    base_status st = base_mkdir_p(dir);
    if (st) return st;

    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int i = 0; i < sp->n_special; i++) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddNumberToObject(t, "id", 256 + i);
        cJSON_AddStringToObject(t, "content", sp->special[i]);
        cJSON_AddBoolToObject(t, "single_word", 0);
        cJSON_AddBoolToObject(t, "lstrip", 0);
        cJSON_AddBoolToObject(t, "rstrip", 0);
        cJSON_AddBoolToObject(t, "normalized", 0);
        cJSON_AddBoolToObject(t, "special", 1);
        cJSON_AddItemToArray(added, t);
    }
    cJSON_AddNullToObject(root, "normalizer");
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "ByteLevel");
    cJSON_AddBoolToObject(pre, "add_prefix_space", 0);
    cJSON_AddBoolToObject(pre, "trim_offsets", 1);
    cJSON_AddBoolToObject(pre, "use_regex", 0);
    cJSON_AddItemToObject(root, "post_processor",
                          post_processor(sp, 256 + special_index(sp, sp->bos),
                                         256 + special_index(sp, sp->eos)));
    cJSON *dec = cJSON_AddObjectToObject(root, "decoder");
    cJSON_AddStringToObject(dec, "type", "ByteLevel");
    cJSON_AddBoolToObject(dec, "add_prefix_space", 1);
    cJSON_AddBoolToObject(dec, "trim_offsets", 1);
    cJSON_AddBoolToObject(dec, "use_regex", 1);
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddBoolToObject(model, "fuse_unk", 0);
    cJSON_AddBoolToObject(model, "byte_fallback", 0);
    cJSON_AddBoolToObject(model, "ignore_merges", 0);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (int b = 0; b < 256; b++) {
        char c[5] = {0};
        tok_utf8_put(tok_byte_to_cp((uint8_t)b), c);
        cJSON_AddNumberToObject(vocab, c, b);
    }
    cJSON_AddArrayToObject(model, "merges");
    st = write_json(dir, "tokenizer.json", root);
    cJSON_Delete(root);
    if (st) return st;

    cJSON *cfg = cJSON_CreateObject();
    cJSON_AddStringToObject(cfg, "tokenizer_class", "PreTrainedTokenizerFast");
    for (int k = 0; k < 3; k++) {
        char key[16];
        snprintf(key, sizeof key, "%s_token", role_names[k]);
        if (roles[k]) cJSON_AddStringToObject(cfg, key, roles[k]);
        else cJSON_AddNullToObject(cfg, key);
    }
    cJSON_AddBoolToObject(cfg, "add_bos_token", sp->add_bos);
    cJSON_AddBoolToObject(cfg, "add_eos_token", sp->add_eos);
    cJSON_AddBoolToObject(cfg, "clean_up_tokenization_spaces", 0);
    cJSON_AddNumberToObject(cfg, "model_max_length", 1048576);
    st = write_json(dir, "tokenizer_config.json", cfg);
    cJSON_Delete(cfg);
    return st;
}
