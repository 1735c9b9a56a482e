/*
 * grpo merge --model BASE --adapter LORA_DIR --out DIR [--dtype f32|bf16]
 *
 * Merge a LoRA adapter in PEFT's format (a LoRA run's checkpoint) into its
 * base model, as PEFT's merge_and_unload: W += s B A for every adapted
 * module (s = lora_alpha / r, or / sqrt(r) with use_rslora). Writes a
 * Hugging Face checkpoint: DIR/model.safetensors (every tensor of the base
 * under its hub name, in --dtype, f32 by default; past 5 GB save_pretrained's
 * shards model-0000i-of-0000N.safetensors and model.safetensors.index.json,
 * written piece by piece through one 64 MiB buffer), config.json (the base's,
 * without quantization_config: the merged weights are not FP8),
 * generation_config.json and the tokenizer files when the base has them.
 * The merge runs on the CPU in f32 (the base's weights widened as on load:
 * 4 bytes per parameter of host memory).
 * Exit status: 0 done; 1 bad input (the message names the file, key or
 * tensor); 2 bad usage.
 */
#include "cli/cli.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/st.h"
#include "model/model.h"

static const char *USAGE = "usage: grpo merge --model BASE_DIR --adapter LORA_DIR --out DIR [--dtype f32|bf16]\n"
                           "Merges a LoRA adapter (PEFT format: adapter_config.json, adapter_model.safetensors)\n"
                           "into its base model: W += (lora_alpha / r) B A; writes a Hugging Face checkpoint.\n";

/* config.json of the base, without quantization_config (NULL: none). */
static base_status merged_config(const char *base, char **text) {
    *text = NULL;
    char *p = base_path_join(base, "config.json");
    cJSON *j;
    base_status s = base_json_parse_file(p, &j);
    free(p);
    if (s) return s;
    cJSON_DeleteItemFromObjectCaseSensitive(j, "quantization_config");
    *text = base_json_print(j, 1);
    cJSON_Delete(j);
    return BASE_OK;
}

static base_status copy_if_present(const char *from, const char *to, const char *name) {
    char *src = base_path_join(from, name), *dst = base_path_join(to, name);
    base_status s = BASE_OK;
    if (base_file_exists(src)) {
        char *text;
        size_t n;
        s = base_read_file(src, &text, &n);
        if (!s) {
            s = base_write_file_atomic(dst, text, n);
            free(text);
        }
    }
    free(src), free(dst);
    return s;
}

/* A directory that is absent or empty: the output never mixes with
 * earlier files (the shards of another checkpoint, the base itself). */
static base_status check_out(const char *out) {
    DIR *d = opendir(out);
    if (!d) return BASE_OK;
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
    closedir(d);
    return empty ? BASE_OK
                 : base_err_set(BASE_ERR_INVALID, "--out %s: the directory exists and is not empty (give a new one)", out);
}

/* The merged weights (host f32, the CPU model's arena) piece by piece, in
 * bf16 when asked: no second copy of the model. */
typedef struct {
    const model *m;
    int bf16;
} merged_src;

static base_status fill_merged(void *ctx, int i, uint64_t off, void *dst, size_t n) {
    const merged_src *ms = ctx;
    const model_param *p = model_param_at(ms->m, i);
    if (!ms->bf16) {
        memcpy(dst, model_params(ms->m) + p->offset + off / sizeof(float), n);
        return BASE_OK;
    }
    const float *w = model_params(ms->m) + p->offset + off / sizeof(uint16_t);
    uint16_t *h = dst;
    for (size_t k = 0; k < n / sizeof(uint16_t); k++) h[k] = tensor_f32_to_bf16(w[k]);
    return BASE_OK;
}

static base_status merge(const char *base, const char *adapter, const char *out, int bf16) {
    base_status s0 = check_out(out);
    if (s0) return s0;
    model *m = NULL;
    model_lora *a = NULL;
    base_status s = model_load(base, ops_cpu(), NULL, &m);
    if (!s) s = model_lora_load(m, adapter, &a);
    if (s) {
        model_free(m);
        return s;
    }
    int n_mod = 0;
    for (int i = 0; i < model_lora_nparams(a); i++) n_mod += strstr(model_lora_param_at(a, i)->name, ".lora_A.") != NULL;
    model_lora_merge(a);
    model_lora_free(a); /* the merged weights alone */
    char *cfg = NULL;
    s = merged_config(base, &cfg);
    if (!s) s = base_mkdir_p(out);
    /* model.safetensors, or save_pretrained's shards past 5 GB */
    st_plan *plan = st_plan_new();
    for (int i = 0; i < model_nparams(m); i++) {
        const model_param *p = model_param_at(m, i);
        st_plan_add(plan, p->name, bf16 ? TENSOR_BF16 : TENSOR_F32, p->ndim, p->shape);
    }
    st_plan_meta(plan, "format", "pt");
    if (!s) s = st_plan_layout(plan, "model", ST_SHARD_DEFAULT);
    merged_src src = {m, bf16};
    if (!s) s = st_plan_write(plan, out, 0, fill_merged, &src, NULL); /* 64 MiB pieces: whole elements */
    st_plan_free(plan);
    if (!s) {
        char *cp = base_path_join(out, "config.json");
        s = base_write_file_atomic(cp, cfg, strlen(cfg));
        free(cp);
    }
    const char *keep[] = {"generation_config.json", "tokenizer.json", "tokenizer_config.json"};
    for (size_t i = 0; i < sizeof keep / sizeof keep[0] && !s; i++) s = copy_if_present(base, out, keep[i]);
    if (!s)
        fprintf(stderr, "grpo merge: %d adapted modules merged into %lld parameters (%s) -> %s\n", n_mod,
                (long long)model_numel(m), bf16 ? "bf16" : "f32", out);
    free(cfg);
    model_free(m);
    return s;
}

int cli_cmd_merge(int argc, char **argv) {
    const char *base = NULL, *adapter = NULL, *out = NULL, *dtype = "f32";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            return 0;
        }
        if (i + 1 >= argc) return cli_usage_error("merge", "unexpected argument '%s'\n%s", a, USAGE);
        if (!strcmp(a, "--model")) base = argv[++i];
        else if (!strcmp(a, "--adapter")) adapter = argv[++i];
        else if (!strcmp(a, "--out")) out = argv[++i];
        else if (!strcmp(a, "--dtype")) dtype = argv[++i];
        else return cli_usage_error("merge", "unexpected argument '%s'\n%s", a, USAGE);
    }
    if (!base || !adapter || !out) return cli_usage_error("merge", "--model, --adapter and --out are required\n%s", USAGE);
    if (strcmp(dtype, "f32") && strcmp(dtype, "bf16"))
        return cli_usage_error("merge", "--dtype %s: expected f32 or bf16", dtype);
    base_status s = merge(base, adapter, out, !strcmp(dtype, "bf16"));
    if (s) {
        fprintf(stderr, "grpo merge: %s\n", base_err_msg());
        return 1;
    }
    return 0;
}
