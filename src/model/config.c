/*
 * config.json for DeepSeek-V3-architecture models (spec §1), YaRN rope
 * frequencies (§3.3) and the softmax scale (§3.4), following the Hugging
 * Face transformers DeepseekV3Config and _compute_yarn_parameters: missing
 * keys take the HF defaults, `rope_scaling` (hub spelling, `type`) and
 * `rope_parameters` (transformers v5, `rope_type`, rope_theta inside) are
 * both read, `q_lora_rank` null or 0 means no query compression.
 *
 * config.json is untrusted (it comes from the Hub): every integer is read
 * with a range (LIMITS below; far above any released model, small enough
 * that no product of sizes overflows), numbers must be finite, token ids
 * must be ids of the vocabulary, and the parameter count of the layout the
 * config describes must stay under MODEL_MAX_PARAMS, all before anything is
 * allocated. An error names the file and the key.
 */
#include <float.h>
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

/* Caps of single fields (docs/model.md). */
enum {
    MAX_VOCAB = 1 << 24,     /* 16.7M ids */
    MAX_HIDDEN = 1 << 20,    /* hidden_size */
    MAX_INTER = 1 << 22,     /* (moe_)intermediate_size */
    MAX_LAYERS = 1 << 14,    /* layers, dense layers, MTP layers, moe_layer_freq */
    MAX_HEADS = 1 << 14,     /* attention heads */
    MAX_EXPERTS = 1 << 16,   /* n_routed_experts is checked against 4096 in validate */
    MAX_RANK = 1 << 20,      /* q_lora_rank, kv_lora_rank */
    MAX_HEAD_DIM = 1 << 12,  /* qk_nope / qk_rope / v head dims */
    MAX_POSITIONS = 1 << 24, /* max_position_embeddings, YaRN original length */
};
/* The rope tables hold max_position_embeddings x qk_rope_head_dim floats. */
#define MAX_ROPE_ELEMS ((int64_t)1 << 32)

/* Integer field in [lo, hi]: absent or null -> dflt (*isnull set when null). */
static int64_t get_int(reader *r, const cJSON *obj, const char *key, int64_t dflt, int64_t lo, int64_t hi,
                       int *isnull) {
    const cJSON *it = item(obj, key);
    if (isnull) *isnull = it && cJSON_IsNull(it);
    if (!it || cJSON_IsNull(it) || r->st) return dflt;
    int64_t v;
    if (!base_json_to_int(it, lo, hi, &v)) {
        char got[64];
        r->st = base_err_set(BASE_ERR_INVALID, "%s: %s must be an integer in [%lld, %lld] (got %s)", r->what, key,
                             (long long)lo, (long long)hi, base_json_describe(it, got, sizeof got));
        return dflt;
    }
    return v;
}

static double get_num(reader *r, const cJSON *obj, const char *key, double dflt, int *found) {
    const cJSON *it = item(obj, key);
    if (found) *found = it && !cJSON_IsNull(it);
    if (!it || cJSON_IsNull(it) || r->st) return dflt;
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble)) {
        if (found) *found = 0;
        r->st = base_err_set(BASE_ERR_INVALID, "%s: %s must be a finite number", r->what, key);
        return dflt;
    }
    return it->valuedouble;
}

/* A number stored as float: finite and within float's range. */
static float get_float(reader *r, const cJSON *obj, const char *key, double dflt) {
    double x = get_num(r, obj, key, dflt, NULL);
    if (!r->st && fabs(x) > FLT_MAX) {
        r->st = base_err_set(BASE_ERR_INVALID, "%s: %s %g is out of float range", r->what, key, x);
        return (float)dflt;
    }
    return (float)x;
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
    int64_t orig = get_int(r, j, "original_max_position_embeddings", -1, 1, MAX_POSITIONS, NULL);
    if (orig < 0)
        orig = get_int(r, rp, "original_max_position_embeddings", c->max_position_embeddings, 1, MAX_POSITIONS,
                       NULL);
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
    if (!(c->yarn_beta_fast > 0) || !(c->yarn_beta_slow > 0))
        return base_err_set(BASE_ERR_INVALID, "%s: YaRN beta_fast and beta_slow must be > 0 (got %g, %g)", r->what,
                            c->yarn_beta_fast, c->yarn_beta_slow);
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

/* eos_token_id: an id or a list of ids of the vocabulary (generation stops on them). */
static base_status parse_eos(reader *r, const cJSON *j, model_config *c) {
    const cJSON *e = item(j, "eos_token_id");
    c->n_eos = 0;
    if (!e) { /* the DeepseekV3Config default, an id like any other */
        if (c->vocab_size < 2)
            return base_err_set(BASE_ERR_INVALID, "%s: eos_token_id is absent and its default 1 is not an id of "
                                "the vocabulary (vocab_size %lld)", r->what, (long long)c->vocab_size);
        c->eos_token_id[c->n_eos++] = 1;
        return BASE_OK;
    }
    if (cJSON_IsNull(e)) return BASE_OK;
    if (!cJSON_IsNumber(e) && (!cJSON_IsArray(e) || cJSON_GetArraySize(e) > MODEL_MAX_EOS))
        return base_err_set(BASE_ERR_INVALID, "%s: eos_token_id must be an integer or a list of at most %d", r->what,
                            MODEL_MAX_EOS);
    int i = 0;
    for (const cJSON *x = cJSON_IsNumber(e) ? e : e->child; x; x = cJSON_IsNumber(e) ? NULL : x->next, i++) {
        int64_t id;
        if (!base_json_to_int(x, 0, c->vocab_size - 1, &id)) {
            char got[64];
            return base_err_set(BASE_ERR_INVALID, "%s: eos_token_id%s must be an id of the vocabulary, an integer in "
                                "[0, %lld] (vocab_size %lld) (got %s)", r->what, cJSON_IsNumber(e) ? "" : " entries",
                                (long long)c->vocab_size - 1, (long long)c->vocab_size,
                                base_json_describe(x, got, sizeof got));
        }
        c->eos_token_id[c->n_eos++] = id;
    }
    return BASE_OK;
}

static int64_t sat_add(int64_t a, int64_t b) { return a > INT64_MAX - b ? INT64_MAX : a + b; }
static int64_t sat_mul(int64_t a, int64_t b) { return a && b > INT64_MAX / a ? INT64_MAX : a * b; }
static int64_t sat_mul3(int64_t a, int64_t b, int64_t c) { return sat_mul(sat_mul(a, b), c); }

/* One decoder layer: attention with its norms, then the dense MLP or the MoE. */
static int64_t layer_params(const model_config *c, int layer) {
    int64_t d = c->hidden_size, H = c->num_attention_heads, dqk = c->qk_head_dim, dc = c->kv_lora_rank;
    int64_t p = 2 * d; /* input_layernorm, post_attention_layernorm */
    if (c->q_lora_rank > 0)
        p = sat_add(p, sat_add(sat_mul(c->q_lora_rank, d) + c->q_lora_rank, sat_mul3(H, dqk, c->q_lora_rank)));
    else
        p = sat_add(p, sat_mul3(H, dqk, d));
    p = sat_add(p, sat_mul(dc + c->qk_rope_head_dim, d) + dc);
    p = sat_add(p, sat_add(sat_mul3(H, c->qk_nope_head_dim + c->v_head_dim, dc), sat_mul3(d, H, c->v_head_dim)));
    if (!model_layer_is_moe(c, layer)) return sat_add(p, sat_mul3(3, c->intermediate_size, d));
    int64_t E = c->n_routed_experts, ie = c->moe_intermediate_size;
    p = sat_add(p, sat_mul(E, d) + E); /* router, e_score_correction_bias */
    p = sat_add(p, sat_mul(E, sat_mul3(3, ie, d)));
    return sat_add(p, sat_mul(c->n_shared_experts, sat_mul3(3, ie, d)));
}

int64_t model_config_param_count(const model_config *c, int64_t *mtp) {
    int64_t d = c->hidden_size, vd = sat_mul(c->vocab_size, d);
    int64_t p = sat_add(sat_mul(vd, c->tie_word_embeddings ? 1 : 2), d); /* embed, lm_head, norm */
    for (int l = 0; l < c->num_hidden_layers; l++) p = sat_add(p, layer_params(c, l));
    if (mtp) {
        /* an MTP module: a decoder layer, enorm, hnorm, eh_proj [d, 2d],
         * shared_head.norm, copies of the embedding and the head */
        int64_t m = 0;
        for (int k = 0; k < c->num_nextn_predict_layers; k++)
            m = sat_add(m, sat_add(layer_params(c, c->num_hidden_layers + k),
                                   sat_add(sat_mul(2, vd), sat_add(3 * d, sat_mul3(2, d, d)))));
        *mtp = m;
    }
    return p;
}

#define INVALID(...) return base_err_set(BASE_ERR_INVALID, __VA_ARGS__)

static base_status validate(const model_config *c, const char *w) {
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
    if ((int64_t)c->num_attention_heads * c->qk_head_dim > ((int64_t)1 << 31))
        INVALID("%s: num_attention_heads %d x (qk_nope_head_dim + qk_rope_head_dim) %d exceeds 2^31", w,
                c->num_attention_heads, c->qk_head_dim);
    if (c->max_position_embeddings * c->qk_rope_head_dim > MAX_ROPE_ELEMS)
        INVALID("%s: max_position_embeddings %lld x qk_rope_head_dim %d exceeds 2^32 (the rope tables)", w,
                (long long)c->max_position_embeddings, c->qk_rope_head_dim);
    /* the size budget, before anything is allocated */
    int64_t mtp, params = model_config_param_count(c, &mtp);
    params = sat_add(params, mtp);
    if (params > MODEL_MAX_PARAMS)
        INVALID("%s: the config describes %.4g parameters (hidden_size %lld, num_hidden_layers %d, "
                "vocab_size %lld, intermediate_size %lld, n_routed_experts %d x moe_intermediate_size %lld, "
                "num_nextn_predict_layers %d), more than the limit of 2^40",
                w, (double)params, (long long)c->hidden_size, c->num_hidden_layers, (long long)c->vocab_size,
                (long long)c->intermediate_size, c->n_routed_experts, (long long)c->moe_intermediate_size,
                c->num_nextn_predict_layers);
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
    c->vocab_size = get_int(&r, j, "vocab_size", 129280, 1, MAX_VOCAB, NULL);
    c->hidden_size = get_int(&r, j, "hidden_size", 7168, 1, MAX_HIDDEN, NULL);
    c->intermediate_size = get_int(&r, j, "intermediate_size", 18432, 1, MAX_INTER, NULL);
    c->moe_intermediate_size = get_int(&r, j, "moe_intermediate_size", 2048, 1, MAX_INTER, NULL);
    c->num_hidden_layers = (int)get_int(&r, j, "num_hidden_layers", 61, 1, MAX_LAYERS, NULL);
    c->num_attention_heads = (int)get_int(&r, j, "num_attention_heads", 128, 1, MAX_HEADS, NULL);
    c->num_key_value_heads =
        (int)get_int(&r, j, "num_key_value_heads", c->num_attention_heads, 1, MAX_HEADS, NULL);
    c->n_shared_experts = (int)get_int(&r, j, "n_shared_experts", 1, 0, MAX_EXPERTS, &isnull);
    if (isnull) c->n_shared_experts = 0;
    c->n_routed_experts = (int)get_int(&r, j, "n_routed_experts", 256, 1, MAX_EXPERTS, NULL);
    c->num_experts_per_tok = (int)get_int(&r, j, "num_experts_per_tok", 8, 1, MAX_EXPERTS, NULL);
    c->routed_scaling_factor = get_float(&r, j, "routed_scaling_factor", 2.5);
    c->n_group = (int)get_int(&r, j, "n_group", 8, 1, MAX_EXPERTS, &isnull);
    if (isnull) c->n_group = 1;
    c->topk_group = (int)get_int(&r, j, "topk_group", 4, 1, MAX_EXPERTS, &isnull);
    if (isnull) c->topk_group = 1;
    c->norm_topk_prob = get_bool(&r, j, "norm_topk_prob", 1);
    c->first_k_dense_replace = (int)get_int(&r, j, "first_k_dense_replace", 3, 0, MAX_LAYERS, NULL);
    c->moe_layer_freq = (int)get_int(&r, j, "moe_layer_freq", 1, 1, MAX_LAYERS, NULL);
    c->q_lora_rank = (int)get_int(&r, j, "q_lora_rank", 1536, 0, MAX_RANK, &isnull);
    if (isnull) c->q_lora_rank = 0;
    c->kv_lora_rank = (int)get_int(&r, j, "kv_lora_rank", 512, 1, MAX_RANK, NULL);
    c->qk_nope_head_dim = (int)get_int(&r, j, "qk_nope_head_dim", 128, 1, MAX_HEAD_DIM, NULL);
    c->qk_rope_head_dim = (int)get_int(&r, j, "qk_rope_head_dim", 64, 1, MAX_HEAD_DIM, NULL);
    c->v_head_dim = (int)get_int(&r, j, "v_head_dim", 128, 1, MAX_HEAD_DIM, NULL);
    c->rms_norm_eps = get_float(&r, j, "rms_norm_eps", 1e-6);
    c->max_position_embeddings = get_int(&r, j, "max_position_embeddings", 4096, 1, MAX_POSITIONS, NULL);
    c->rope_interleave = get_bool(&r, j, "rope_interleave", 1);
    c->tie_word_embeddings = get_bool(&r, j, "tie_word_embeddings", 0);
    int nl = (int)get_int(&r, j, "num_nextn_predict_layers", -1, 0, MAX_LAYERS, NULL);
    if (nl < 0) nl = (int)get_int(&r, j, "num_mtp_layers", 0, 0, MAX_LAYERS, NULL);
    c->num_nextn_predict_layers = nl;
    /* not used for generation (eos is): any id or -1 */
    c->bos_token_id = get_int(&r, j, "bos_token_id", 0, -1, INT32_MAX, &isnull);
    if (isnull) c->bos_token_id = -1;
    c->pad_token_id = get_int(&r, j, "pad_token_id", -1, -1, INT32_MAX, &isnull);
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
