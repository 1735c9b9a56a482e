/*
 * config.json for DeepSeek-V3-architecture models (spec §1), YaRN rope
 * frequencies (§3.3) and the softmax scale (§3.4), following the Hugging
 * Face transformers DeepseekV3Config and _compute_yarn_parameters: missing
 * keys take the HF defaults, `rope_scaling` (hub spelling, `type`) and
 * `rope_parameters` (transformers v5, `rope_type`, rope_theta inside) are
 * both read, `q_lora_rank` null or 0 means no query compression.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"

typedef struct {
    const cJSON *j;
    const char *what;
    base_status st;
} reader;

static const cJSON *item(const cJSON *j, const char *key) { return cJSON_GetObjectItemCaseSensitive(j, key); }

/* Integer field: absent or null -> dflt (*isnull set when null). */
static int64_t get_int(reader *r, const cJSON *obj, const char *key, int64_t dflt, int *isnull) {
    const cJSON *it = item(obj, key);
    if (isnull) *isnull = it && cJSON_IsNull(it);
    if (!it || cJSON_IsNull(it) || r->st) return dflt;
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) || fabs(it->valuedouble) > 9e15) {
        r->st = base_err_set(BASE_ERR_INVALID, "%s: %s must be an integer", r->what, key);
        return dflt;
    }
    return (int64_t)it->valuedouble;
}

static double get_num(reader *r, const cJSON *obj, const char *key, double dflt, int *found) {
    const cJSON *it = item(obj, key);
    if (found) *found = it && !cJSON_IsNull(it);
    if (!it || cJSON_IsNull(it) || r->st) return dflt;
    if (!cJSON_IsNumber(it)) {
        if (found) *found = 0;
        r->st = base_err_set(BASE_ERR_INVALID, "%s: %s must be a number", r->what, key);
        return dflt;
    }
    return it->valuedouble;
}

static int get_bool(reader *r, const cJSON *obj, const char *key, int dflt) {
    const cJSON *it = item(obj, key);
    if (!it || cJSON_IsNull(it) || r->st) return dflt;
    if (!cJSON_IsBool(it)) {
        r->st = base_err_set(BASE_ERR_INVALID, "%s: %s must be true or false", r->what, key);
        return dflt;
    }
    return cJSON_IsTrue(it);
}

static const char *get_str(reader *r, const cJSON *obj, const char *key, const char *dflt) {
    const cJSON *it = item(obj, key);
    if (!it || cJSON_IsNull(it) || r->st) return dflt;
    if (!cJSON_IsString(it)) {
        r->st = base_err_set(BASE_ERR_INVALID, "%s: %s must be a string", r->what, key);
        return dflt;
    }
    return it->valuestring;
}

static double yarn_mscale(double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * log(scale) + 1.0; }

static base_status parse_rope(reader *r, const cJSON *j, model_config *c) {
    c->rope_theta = get_num(r, j, "rope_theta", 10000.0, NULL);
    const cJSON *rp = item(j, "rope_parameters");
    if (!rp || cJSON_IsNull(rp)) rp = item(j, "rope_scaling");
    c->rope_yarn = 0;
    c->attention_factor = 1.0;
    if (!rp || cJSON_IsNull(rp)) return r->st;
    if (!cJSON_IsObject(rp))
        return base_err_set(BASE_ERR_INVALID, "%s: rope_scaling / rope_parameters must be an object", r->what);
    const char *type = get_str(r, rp, "rope_type", NULL);
    if (!type) type = get_str(r, rp, "type", "default");
    int found;
    double theta = get_num(r, rp, "rope_theta", 0, &found);
    if (found) c->rope_theta = theta;
    double prf = get_num(r, rp, "partial_rotary_factor", 1.0, NULL);
    if (r->st) return r->st;
    if (prf != 1.0)
        return base_err_set(BASE_ERR_UNSUPPORTED, "%s: partial_rotary_factor %g is not supported (expected 1)",
                            r->what, prf);
    if (!strcmp(type, "default")) return r->st;
    if (strcmp(type, "yarn"))
        return base_err_set(BASE_ERR_UNSUPPORTED,
                            "%s: rope type '%s' is not supported (expected yarn or default)", r->what, type);
    c->rope_yarn = 1;
    /* HF standardize_rope_params: a top-level original_max_position_embeddings wins */
    int64_t orig = get_int(r, j, "original_max_position_embeddings", -1, NULL);
    if (orig < 0) orig = get_int(r, rp, "original_max_position_embeddings", c->max_position_embeddings, NULL);
    c->yarn_original_max_position_embeddings = orig;
    c->yarn_factor = get_num(r, rp, "factor", 0, &found);
    if (!found) c->yarn_factor = (double)c->max_position_embeddings / (double)orig;
    c->yarn_beta_fast = get_num(r, rp, "beta_fast", 0, NULL);
    if (c->yarn_beta_fast == 0) c->yarn_beta_fast = 32; /* HF: `or 32` */
    c->yarn_beta_slow = get_num(r, rp, "beta_slow", 0, NULL);
    if (c->yarn_beta_slow == 0) c->yarn_beta_slow = 1;
    c->yarn_mscale = get_num(r, rp, "mscale", 0, NULL);
    c->yarn_mscale_all_dim = get_num(r, rp, "mscale_all_dim", 0, NULL);
    c->yarn_attention_factor = get_num(r, rp, "attention_factor", 0, NULL);
    c->yarn_truncate = get_bool(r, rp, "truncate", 1);
    if (r->st) return r->st;
    if (orig < 1 || !(c->yarn_factor > 0))
        return base_err_set(BASE_ERR_INVALID, "%s: YaRN needs factor > 0 and original_max_position_embeddings >= 1 (got %g, %lld)",
                            r->what, c->yarn_factor, (long long)orig);
    double s = c->yarn_factor;
    if (c->yarn_attention_factor > 0)
        c->attention_factor = c->yarn_attention_factor;
    else if (c->yarn_mscale != 0 && c->yarn_mscale_all_dim != 0)
        c->attention_factor = yarn_mscale(s, c->yarn_mscale) / yarn_mscale(s, c->yarn_mscale_all_dim);
    else
        c->attention_factor = yarn_mscale(s, 1.0);
    return BASE_OK;
}

static base_status parse_quant(reader *r, const cJSON *j, model_config *c) {
    const cJSON *q = item(j, "quantization_config");
    c->fp8 = 0;
    if (!q || cJSON_IsNull(q)) return BASE_OK;
    if (!cJSON_IsObject(q)) return base_err_set(BASE_ERR_INVALID, "%s: quantization_config must be an object", r->what);
    const char *method = get_str(r, q, "quant_method", "");
    const char *fmt = get_str(r, q, "fmt", "e4m3");
    if (r->st) return r->st;
    if (strcmp(method, "fp8"))
        return base_err_set(BASE_ERR_UNSUPPORTED, "%s: quantization_config.quant_method '%s' is not supported (expected fp8)",
                            r->what, method);
    if (strcmp(fmt, "e4m3"))
        return base_err_set(BASE_ERR_UNSUPPORTED, "%s: quantization_config.fmt '%s' is not supported (expected e4m3)",
                            r->what, fmt);
    const cJSON *bs = item(q, "weight_block_size");
    if (bs && !cJSON_IsNull(bs)) {
        if (!cJSON_IsArray(bs) || cJSON_GetArraySize(bs) != 2 || !cJSON_IsNumber(cJSON_GetArrayItem(bs, 0)) ||
            !cJSON_IsNumber(cJSON_GetArrayItem(bs, 1)) || cJSON_GetArrayItem(bs, 0)->valuedouble != 128 ||
            cJSON_GetArrayItem(bs, 1)->valuedouble != 128)
            return base_err_set(BASE_ERR_UNSUPPORTED, "%s: quantization_config.weight_block_size must be [128, 128]", r->what);
    }
    c->fp8 = 1;
    return BASE_OK;
}

static base_status parse_eos(reader *r, const cJSON *j, model_config *c) {
    const cJSON *e = item(j, "eos_token_id");
    c->n_eos = 0;
    if (!e) {
        c->eos_token_id[c->n_eos++] = 1;
        return BASE_OK;
    }
    if (cJSON_IsNull(e)) return BASE_OK;
    if (cJSON_IsNumber(e)) {
        c->eos_token_id[c->n_eos++] = (int64_t)e->valuedouble;
        return BASE_OK;
    }
    if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) > MODEL_MAX_EOS)
        return base_err_set(BASE_ERR_INVALID, "%s: eos_token_id must be an integer or a list of at most %d", r->what,
                            MODEL_MAX_EOS);
    const cJSON *x;
    cJSON_ArrayForEach(x, e) {
        if (!cJSON_IsNumber(x)) return base_err_set(BASE_ERR_INVALID, "%s: eos_token_id entries must be integers", r->what);
        c->eos_token_id[c->n_eos++] = (int64_t)x->valuedouble;
    }
    return BASE_OK;
}

#define INVALID(...) return base_err_set(BASE_ERR_INVALID, __VA_ARGS__)

static base_status validate(const model_config *c, const char *w) {
    struct {
        const char *name;
        int64_t v;
    } pos[] = {
        {"vocab_size", c->vocab_size}, {"hidden_size", c->hidden_size},
        {"intermediate_size", c->intermediate_size}, {"moe_intermediate_size", c->moe_intermediate_size},
        {"num_hidden_layers", c->num_hidden_layers}, {"num_attention_heads", c->num_attention_heads},
        {"n_routed_experts", c->n_routed_experts}, {"num_experts_per_tok", c->num_experts_per_tok},
        {"kv_lora_rank", c->kv_lora_rank}, {"qk_nope_head_dim", c->qk_nope_head_dim},
        {"qk_rope_head_dim", c->qk_rope_head_dim}, {"v_head_dim", c->v_head_dim},
        {"n_group", c->n_group}, {"topk_group", c->topk_group}, {"moe_layer_freq", c->moe_layer_freq},
        {"max_position_embeddings", c->max_position_embeddings},
    };
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++)
        if (pos[i].v < 1) INVALID("%s: %s must be >= 1 (got %lld)", w, pos[i].name, (long long)pos[i].v);
    if (c->q_lora_rank < 0) INVALID("%s: q_lora_rank must be null, 0 or positive (got %d)", w, c->q_lora_rank);
    if (c->n_shared_experts < 0) INVALID("%s: n_shared_experts must be >= 0 (got %d)", w, c->n_shared_experts);
    if (c->first_k_dense_replace < 0) INVALID("%s: first_k_dense_replace must be >= 0 (got %d)", w, c->first_k_dense_replace);
    if (c->num_nextn_predict_layers < 0) INVALID("%s: num_nextn_predict_layers must be >= 0", w);
    if (c->qk_rope_head_dim % 2) INVALID("%s: qk_rope_head_dim %d must be even", w, c->qk_rope_head_dim);
    if (c->num_key_value_heads != c->num_attention_heads)
        return base_err_set(BASE_ERR_UNSUPPORTED, "%s: num_key_value_heads %d differs from num_attention_heads %d (MLA needs them equal)",
                            w, c->num_key_value_heads, c->num_attention_heads);
    if (c->n_routed_experts % c->n_group)
        INVALID("%s: n_routed_experts %d is not divisible by n_group %d", w, c->n_routed_experts, c->n_group);
    if (c->topk_group > c->n_group) INVALID("%s: topk_group %d exceeds n_group %d", w, c->topk_group, c->n_group);
    if (c->num_experts_per_tok > c->topk_group * (c->n_routed_experts / c->n_group))
        INVALID("%s: num_experts_per_tok %d exceeds the %d experts of topk_group %d groups", w, c->num_experts_per_tok,
                c->topk_group * (c->n_routed_experts / c->n_group), c->topk_group);
    if (c->n_routed_experts > 4096)
        return base_err_set(BASE_ERR_UNSUPPORTED, "%s: n_routed_experts %d exceeds 4096", w, c->n_routed_experts);
    if (!(c->rms_norm_eps > 0)) INVALID("%s: rms_norm_eps must be > 0", w);
    if (!(c->rope_theta > 1)) INVALID("%s: rope_theta must be > 1 (got %g)", w, c->rope_theta);
    if (!(c->routed_scaling_factor > 0)) INVALID("%s: routed_scaling_factor must be > 0", w);
    if ((int64_t)c->num_attention_heads * c->qk_head_dim > ((int64_t)1 << 31) || c->vocab_size > INT32_MAX)
        INVALID("%s: dimensions too large", w);
    return BASE_OK;
}

base_status model_config_parse(const cJSON *j, const char *what, model_config *c) {
    memset(c, 0, sizeof *c);
    if (!cJSON_IsObject(j)) INVALID("%s: not a JSON object", what);
    reader r = {j, what, BASE_OK};
    const char *mt = get_str(&r, j, "model_type", "");
    if (r.st) return r.st;
    if (strcmp(mt, "deepseek_v3") && strcmp(mt, "kimi_k2"))
        return base_err_set(BASE_ERR_UNSUPPORTED,
                            "%s: model_type '%s' is not supported (expected deepseek_v3 or kimi_k2)", what, mt);
    snprintf(c->model_type, sizeof c->model_type, "%s", mt);
    const char *sf = get_str(&r, j, "scoring_func", "sigmoid");
    const char *tm = get_str(&r, j, "topk_method", "noaux_tc");
    const char *act = get_str(&r, j, "hidden_act", "silu");
    if (r.st) return r.st;
    if (strcmp(sf, "sigmoid"))
        return base_err_set(BASE_ERR_UNSUPPORTED, "%s: scoring_func '%s' is not supported (expected sigmoid)", what, sf);
    if (strcmp(tm, "noaux_tc"))
        return base_err_set(BASE_ERR_UNSUPPORTED, "%s: topk_method '%s' is not supported (expected noaux_tc)", what, tm);
    if (strcmp(act, "silu"))
        return base_err_set(BASE_ERR_UNSUPPORTED, "%s: hidden_act '%s' is not supported (expected silu)", what, act);
    if (get_bool(&r, j, "attention_bias", 0))
        return base_err_set(BASE_ERR_UNSUPPORTED, "%s: attention_bias true is not supported", what);

    int isnull;
    c->vocab_size = get_int(&r, j, "vocab_size", 129280, NULL);
    c->hidden_size = get_int(&r, j, "hidden_size", 7168, NULL);
    c->intermediate_size = get_int(&r, j, "intermediate_size", 18432, NULL);
    c->moe_intermediate_size = get_int(&r, j, "moe_intermediate_size", 2048, NULL);
    c->num_hidden_layers = (int)get_int(&r, j, "num_hidden_layers", 61, NULL);
    c->num_attention_heads = (int)get_int(&r, j, "num_attention_heads", 128, NULL);
    c->num_key_value_heads = (int)get_int(&r, j, "num_key_value_heads", c->num_attention_heads, NULL);
    c->n_shared_experts = (int)get_int(&r, j, "n_shared_experts", 1, &isnull);
    if (isnull) c->n_shared_experts = 0;
    c->n_routed_experts = (int)get_int(&r, j, "n_routed_experts", 256, NULL);
    c->num_experts_per_tok = (int)get_int(&r, j, "num_experts_per_tok", 8, NULL);
    c->routed_scaling_factor = (float)get_num(&r, j, "routed_scaling_factor", 2.5, NULL);
    c->n_group = (int)get_int(&r, j, "n_group", 8, &isnull);
    if (isnull) c->n_group = 1;
    c->topk_group = (int)get_int(&r, j, "topk_group", 4, &isnull);
    if (isnull) c->topk_group = 1;
    c->norm_topk_prob = get_bool(&r, j, "norm_topk_prob", 1);
    c->first_k_dense_replace = (int)get_int(&r, j, "first_k_dense_replace", 3, NULL);
    c->moe_layer_freq = (int)get_int(&r, j, "moe_layer_freq", 1, NULL);
    c->q_lora_rank = (int)get_int(&r, j, "q_lora_rank", 1536, &isnull);
    if (isnull) c->q_lora_rank = 0;
    c->kv_lora_rank = (int)get_int(&r, j, "kv_lora_rank", 512, NULL);
    c->qk_nope_head_dim = (int)get_int(&r, j, "qk_nope_head_dim", 128, NULL);
    c->qk_rope_head_dim = (int)get_int(&r, j, "qk_rope_head_dim", 64, NULL);
    c->v_head_dim = (int)get_int(&r, j, "v_head_dim", 128, NULL);
    c->rms_norm_eps = (float)get_num(&r, j, "rms_norm_eps", 1e-6, NULL);
    c->max_position_embeddings = get_int(&r, j, "max_position_embeddings", 4096, NULL);
    c->rope_interleave = get_bool(&r, j, "rope_interleave", 1);
    c->tie_word_embeddings = get_bool(&r, j, "tie_word_embeddings", 0);
    int nl = (int)get_int(&r, j, "num_nextn_predict_layers", -1, NULL);
    if (nl < 0) nl = (int)get_int(&r, j, "num_mtp_layers", 0, NULL);
    c->num_nextn_predict_layers = nl;
    c->bos_token_id = get_int(&r, j, "bos_token_id", 0, &isnull);
    if (isnull) c->bos_token_id = -1;
    c->pad_token_id = get_int(&r, j, "pad_token_id", -1, &isnull);
    if (isnull) c->pad_token_id = -1;
    if (r.st) return r.st;
    base_status st;
    if ((st = parse_eos(&r, j, c)) || (st = parse_quant(&r, j, c)) || (st = parse_rope(&r, j, c))) return st;
    if (r.st) return r.st;
    c->qk_head_dim = c->qk_nope_head_dim + c->qk_rope_head_dim;
    if ((st = validate(c, what))) return st;
    /* spec §3.4 / HF yarn_apply_mscale: only when mscale_all_dim is non-zero */
    c->softmax_scale = pow((double)c->qk_head_dim, -0.5);
    if (c->rope_yarn && c->yarn_mscale_all_dim != 0) {
        double ms = yarn_mscale(c->yarn_factor, c->yarn_mscale_all_dim);
        c->softmax_scale *= ms * ms;
    }
    return BASE_OK;
}

base_status model_config_load(const char *dir, model_config *cfg) {
    size_t n = strlen(dir);
    char *path = n > 5 && !strcmp(dir + n - 5, ".json") ? base_xstrdup(dir) : base_path_join(dir, "config.json");
    cJSON *j = NULL;
    base_status st = base_json_parse_file(path, &j);
    if (!st) st = model_config_parse(j, path, cfg);
    cJSON_Delete(j);
    free(path);
    return st;
}

int model_layer_is_moe(const model_config *c, int layer) {
    return layer >= c->first_k_dense_replace && layer % c->moe_layer_freq == 0;
}

void model_rope_inv_freq(const model_config *c, float *inv) {
    int dim = c->qk_rope_head_dim, half = dim / 2;
    double base = c->rope_theta;
    /* HF: pos_freqs = base ** (arange(0, dim, 2) / dim) in f32 */
    for (int i = 0; i < half; i++) {
        float pf = (float)pow(base, (double)(float)(2 * i) / dim);
        inv[i] = 1.0f / pf;
    }
    if (!c->rope_yarn) return;
    double s = c->yarn_factor, L0 = (double)c->yarn_original_max_position_embeddings;
    double lo = dim * log(L0 / (c->yarn_beta_fast * 2 * M_PI)) / (2 * log(base));
    double hi = dim * log(L0 / (c->yarn_beta_slow * 2 * M_PI)) / (2 * log(base));
    if (c->yarn_truncate) {
        lo = floor(lo);
        hi = ceil(hi);
    }
    if (lo < 0) lo = 0;
    if (hi > dim - 1) hi = dim - 1;
    if (lo == hi) hi += 0.001;
    for (int i = 0; i < half; i++) {
        float pf = (float)pow(base, (double)(float)(2 * i) / dim);
        float extra = 1.0f / pf, inter = 1.0f / ((float)s * pf);
        float ramp = (float)(((double)i - lo) / (hi - lo));
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        float ef = 1.0f - ramp; /* extrapolation share */
        inv[i] = inter * (1.0f - ef) + extra * ef;
    }
}
