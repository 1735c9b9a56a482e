/*
 * LoRA adapters in PEFT's format: adapter_config.json and
 * adapter_model.safetensors, as peft's save_pretrained writes them and
 * PeftModel.from_pretrained reads them (tests/model/gen/check_peft.py
 * loads a grpo adapter with peft on the transformers model and compares
 * logits).
 *
 * Which modules an adapter adapts is read from the tensors of
 * adapter_model.safetensors (the names say it: ...self_attn.o_proj.lora_A
 * .weight), not only from target_modules, which PEFT also lets be a regular
 * expression; every tensor of the file must be one grpo's adapter layout
 * holds (no silently ignored weights), and every module of a targeted kind
 * must be there (an adapter on some layers only is refused, naming the
 * missing tensor).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/st.h"
#include "model/internal.h"

#define PREFIX "base_model.model.model.layers."

/* ---- writing ------------------------------------------------------------------ */

base_status model_lora_save(const model_lora *a, const char *dir, const char *base) {
    const model_lora_config *lc = &a->cfg;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "peft_type", "LORA");
    cJSON_AddStringToObject(j, "task_type", "CAUSAL_LM");
    cJSON_AddItemToObject(j, "base_model_name_or_path", base ? cJSON_CreateString(base) : cJSON_CreateNull());
    cJSON_AddNumberToObject(j, "r", lc->r);
    cJSON_AddNumberToObject(j, "lora_alpha", lc->lora_alpha);
    cJSON_AddNumberToObject(j, "lora_dropout", 0.0);
    cJSON *tm = cJSON_AddArrayToObject(j, "target_modules");
    for (int t = 0; t < MODEL_LORA_NTARGETS; t++)
        if (lc->targets & (1u << t)) cJSON_AddItemToArray(tm, cJSON_CreateString(model_lora_target_name(t)));
    cJSON_AddBoolToObject(j, "use_rslora", lc->use_rslora);
    cJSON_AddBoolToObject(j, "use_dora", 0);
    cJSON_AddStringToObject(j, "bias", "none");
    cJSON_AddBoolToObject(j, "fan_in_fan_out", 0);
    cJSON_AddBoolToObject(j, "inference_mode", 1);
    cJSON_AddBoolToObject(j, "init_lora_weights", 1);
    cJSON_AddItemToObject(j, "modules_to_save", cJSON_CreateNull());
    cJSON_AddItemToObject(j, "layers_to_transform", cJSON_CreateNull());
    cJSON_AddItemToObject(j, "layers_pattern", cJSON_CreateNull());
    cJSON_AddItemToObject(j, "rank_pattern", cJSON_CreateObject());
    cJSON_AddItemToObject(j, "alpha_pattern", cJSON_CreateObject());
    char *text = base_json_print(j, 1), *p = base_path_join(dir, "adapter_config.json");
    base_status s = base_write_file_atomic(p, text, strlen(text));
    free(text), free(p);
    cJSON_Delete(j);
    if (s) return s;
    const struct ops *o = a->m->ops;
    float *host = base_xmalloc((size_t)a->numel * sizeof(float) + 1);
    o->download(host, a->params, (size_t)a->numel * sizeof(float));
    st_writer *w = st_writer_new();
    for (int i = 0; i < a->ntab; i++) {
        const model_param *pp = &a->tab[i];
        st_writer_add(w, pp->name, TENSOR_F32, 2, pp->shape, host + pp->offset);
    }
    st_writer_meta(w, "format", "pt");
    p = base_path_join(dir, "adapter_model.safetensors");
    s = st_writer_write(w, p);
    free(p);
    st_writer_free(w);
    free(host);
    return s;
}

/* ---- reading -------------------------------------------------------------------- */

/* The target and whether it is a routed expert's, from a tensor name
 * PREFIX "L.<path>.lora_A.weight" (or lora_B); -1 when the name is not a
 * LoRA weight of a module kind grpo adapts. */
static int name_target(const char *name, int *layer, int *routed) {
    *routed = 0;
    if (strncmp(name, PREFIX, strlen(PREFIX))) return -1;
    const char *p = name + strlen(PREFIX);
    char *end;
    long l = strtol(p, &end, 10);
    if (end == p || *end != '.' || l < 0 || l > 1000000) return -1;
    *layer = (int)l;
    const char *tail = strstr(end, ".lora_A.weight");
    if (!tail) tail = strstr(end, ".lora_B.weight");
    if (!tail || strlen(tail) != strlen(".lora_A.weight")) return -1;
    const char *mod = tail;
    while (mod > end && mod[-1] != '.') mod--;
    char kind[64];
    size_t n = (size_t)(tail - mod);
    if (n == 0 || n >= sizeof kind) return -1;
    memcpy(kind, mod, n);
    kind[n] = 0;
    if (strstr(end, ".mlp.experts.")) *routed = 1;
    return model_lora_target_parse(kind);
}

/* adapter_config.json of dir, parsed (caller deletes). */
static base_status read_json(const char *dir, char **path, cJSON **out) {
    *path = base_path_join(dir, "adapter_config.json");
    base_status s = base_json_parse_file(*path, out);
    if (!s && !cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        s = base_err_set(BASE_ERR_INVALID, "%s: not a JSON object", *path);
    }
    return s;
}

base_status model_lora_read_config(const char *dir, const model_config *mc, model_lora_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    char *path;
    cJSON *j = NULL;
    base_status s = read_json(dir, &path, &j);
    const char *type = s ? NULL : base_json_str(j, "peft_type", "LORA");
    if (!s && strcmp(type, "LORA"))
        s = base_err_set(BASE_ERR_UNSUPPORTED, "%s: peft_type '%s': only LORA adapters are supported", path, type);
    int64_t r = 0;
    if (!s) s = base_json_int_range(j, "r", 1, MODEL_LORA_MAX_RANK, 8, path, &r);
    int found;
    double alpha = s ? 0 : base_json_num(j, "lora_alpha", 8, &found);
    const cJSON *av = s ? NULL : cJSON_GetObjectItemCaseSensitive(j, "lora_alpha");
    if (!s && ((av && !cJSON_IsNull(av) && !found) || !(alpha > 0) || !isfinite(alpha)))
        s = base_err_set(BASE_ERR_INVALID, "%s: lora_alpha must be a finite number > 0", path);
    if (!s && base_json_bool(j, "use_dora", 0, NULL))
        s = base_err_set(BASE_ERR_UNSUPPORTED, "%s: use_dora: DoRA adapters are not supported (LoRA only)", path);
    const char *bias = s ? "none" : base_json_str(j, "bias", "none");
    if (!s && strcmp(bias, "none"))
        s = base_err_set(BASE_ERR_UNSUPPORTED, "%s: bias '%s': adapters with bias terms are not supported (\"none\")",
                         path, bias);
    const cJSON *rp = s ? NULL : cJSON_GetObjectItemCaseSensitive(j, "rank_pattern");
    const cJSON *ap = s ? NULL : cJSON_GetObjectItemCaseSensitive(j, "alpha_pattern");
    if (!s && ((cJSON_IsObject(rp) && rp->child) || (cJSON_IsObject(ap) && ap->child)))
        s = base_err_set(BASE_ERR_UNSUPPORTED, "%s: rank_pattern / alpha_pattern: one r and lora_alpha for every "
                                               "module only", path);
    if (!s) {
        cfg->r = (int)r;
        cfg->lora_alpha = alpha;
        cfg->use_rslora = base_json_bool(j, "use_rslora", 0, NULL);
    }
    cJSON_Delete(j);
    /* the modules: from the tensors */
    char *stp = base_path_join(dir, "adapter_model.safetensors");
    st_file *f = NULL;
    if (!s) s = st_open(stp, &f);
    for (int i = 0; !s && i < st_count(f); i++) {
        const char *name = st_at(f, i)->name;
        int layer, routed, t = name_target(name, &layer, &routed);
        if (t < 0 || layer >= mc->num_hidden_layers)
            s = base_err_set(BASE_ERR_INVALID,
                             "%s: tensor %s is not a LoRA weight of a module grpo adapts (%s of layers 0..%d)", stp,
                             name, MODEL_LORA_TARGET_NAMES, mc->num_hidden_layers - 1);
        else {
            cfg->targets |= 1u << t;
            if (routed) cfg->routed_experts = 1;
        }
    }
    if (!s && f && !cfg->targets) s = base_err_set(BASE_ERR_INVALID, "%s: no LoRA weights", stp);
    st_close(f);
    free(stp), free(path);
    return s;
}

base_status model_lora_load_weights(model_lora *a, const char *dir) {
    char *p = base_path_join(dir, "adapter_model.safetensors");
    st_file *f = NULL;
    base_status s = st_open(p, &f);
    float *host = s ? NULL : base_xcalloc((size_t)a->numel + 1, sizeof(float));
    for (int i = 0; !s && i < a->ntab; i++) {
        const model_param *pp = &a->tab[i];
        const st_tensor *t = st_find(f, pp->name);
        if (!t) {
            s = base_err_set(BASE_ERR_INVALID, "%s: missing tensor %s (r = %d, target_modules as configured)", p,
                             pp->name, a->cfg.r);
        } else if (t->ndim != 2 || t->shape[0] != pp->shape[0] || t->shape[1] != pp->shape[1]) {
            s = base_err_set(BASE_ERR_INVALID, "%s: tensor %s has shape [%lld, %lld], the adapter needs [%lld, %lld]",
                             p, pp->name, (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 1),
                             (long long)pp->shape[0], (long long)pp->shape[1]);
        } else {
            s = st_file_load(f, pp->name, TENSOR_F32, host + pp->offset, pp->numel);
        }
    }
    /* nothing the adapter does not hold */
    for (int i = 0; !s && i < st_count(f); i++)
        if (!model_lora_param_find(a, st_at(f, i)->name))
            s = base_err_set(BASE_ERR_INVALID, "%s: tensor %s is not part of this adapter (r = %d, target_modules as "
                                               "configured)", p, st_at(f, i)->name, a->cfg.r);
    if (!s) {
        a->m->ops->upload(a->params, host, (size_t)a->numel * sizeof(float));
        model_lora_sync(a);
    }
    free(host);
    st_close(f);
    free(p);
    return s;
}

base_status model_lora_load(model *m, const char *dir, model_lora **out) {
    *out = NULL;
    model_lora_config lc;
    base_status s = model_lora_read_config(dir, &m->cfg, &lc);
    if (s) return s;
    model_lora *a;
    if ((s = lora_new_zero(m, &lc, &a))) return s;
    if ((s = model_lora_load_weights(a, dir))) {
        model_lora_free(a);
        return s;
    }
    *out = a;
    return BASE_OK;
}
