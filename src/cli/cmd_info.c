/*
 * grpo info MODEL_DIR: what a checkpoint is, without loading it.
 *
 * Reads MODEL_DIR/config.json, validated exactly as `forward` / `generate`
 * validate it (model_config_parse: a config they refuse is refused here with
 * the same message), and opens the safetensors (single file or
 * sharded through the index; every header validated, nothing converted),
 * then prints the architecture and its key config values, the parameter
 * count, tensors by dtype, total bytes and files. It also checks that the
 * config predicts the parameter count it finds and that every FP8 weight
 * has a well-shaped `weight_scale_inv`.
 *
 * Parameters are the elements of every tensor except the FP8 block scales
 * (`*_scale_inv`): those are storage detail, not weights.
 *
 * --memory adds the bytes a run allocates to sample from the model, by
 * role, from the sizing code model_load and model_cache_new allocate with
 * (model_memory_plan, model_cache_plan): the frozen weights in the
 * precision asked (f32, bf16, fp8), the latent KV cache of N sequences of
 * T positions, block tables, the prefill/decode workspace, and how many
 * such sequences fit beside the weights in a device of B GB; and, to
 * compare, the weights of a trained model (f32 master copy, plus the bf16
 * copy in bf16 mode). With CONFIG.json instead of a directory it sizes a
 * config alone (no checkpoint: configs of models not downloaded).
 *
 * Exit status: 0 fine; 1 a missing, truncated or corrupt file (the message
 * names it and the tensor or key); 2 bad usage.
 */
#include "cli/cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base.h"
#include "io/st.h"
#include "model/model.h"

/* "1,234,567" */
static const char *commas(int64_t v, char *buf, size_t n) {
    char tmp[32];
    int len = snprintf(tmp, sizeof tmp, "%lld", (long long)(v < 0 ? -v : v));
    size_t o = 0;
    if (v < 0 && o + 1 < n) buf[o++] = '-';
    for (int i = 0; i < len && o + 2 < n; i++) {
        if (i && (len - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = 0;
    return buf;
}

static const char *human(double b, char *buf, size_t n) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) b /= 1024, i++;
    snprintf(buf, n, i ? "%.2f %s" : "%.0f %s", b, u[i]);
    return buf;
}

/* ---- config.json ---------------------------------------------------------- */

typedef struct {
    const char *path;
    const cJSON *root;
    base_status err;
} cfgr;

/* An optional integer key: -1 when absent or null; an error when present
 * with another type or a negative / fractional value. */
static int64_t cfg_int(cfgr *c, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);
    if (!v || cJSON_IsNull(v)) return -1;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble != floor(v->valuedouble) ||
        v->valuedouble > 9.0e15) {
        if (!c->err)
            c->err = base_err_set(BASE_ERR_INVALID, "%s: \"%s\" must be a non-negative integer", c->path,
                                  key);
        return -1;
    }
    return (int64_t)v->valuedouble;
}

static int64_t cfg_req(cfgr *c, const char *key) {
    int64_t v = cfg_int(c, key);
    if (v <= 0 && !c->err)
        c->err = base_err_set(BASE_ERR_INVALID, "%s: \"%s\" is %s (a positive integer is required)",
                              c->path, key, v < 0 ? "missing" : "0");
    return v;
}

static double cfg_num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

typedef struct {
    int64_t vocab, hidden, layers, heads, kv_heads, inter, moe_inter;
    int64_t q_lora, kv_lora, nope, rope, vdim;
    int64_t experts, shared, topk, groups, topk_group, dense, mtp;
    int tied, has_bias;
} cfg;

static void print_num(const char *label, int64_t v) {
    if (v >= 0) printf("  %-26s %lld\n", label, (long long)v);
}

static base_status read_config(const char *dir, cJSON **root, cfg *m, model_config *mc) {
    char *p = base_path_join(dir, "config.json");
    base_status s = base_json_parse_file(p, root);
    if (!s) s = model_config_parse(*root, p, mc); /* the validation `forward` runs */
    if (s) {
        free(p);
        return s;
    }
    cfgr c = {p, *root, BASE_OK};
    m->vocab = cfg_req(&c, "vocab_size");
    m->hidden = cfg_req(&c, "hidden_size");
    m->layers = cfg_req(&c, "num_hidden_layers");
    m->heads = cfg_req(&c, "num_attention_heads");
    m->kv_heads = cfg_int(&c, "num_key_value_heads");
    m->inter = cfg_int(&c, "intermediate_size");
    m->moe_inter = cfg_int(&c, "moe_intermediate_size");
    m->q_lora = cfg_int(&c, "q_lora_rank");
    m->kv_lora = cfg_int(&c, "kv_lora_rank");
    m->nope = cfg_int(&c, "qk_nope_head_dim");
    m->rope = cfg_int(&c, "qk_rope_head_dim");
    m->vdim = cfg_int(&c, "v_head_dim");
    m->experts = cfg_int(&c, "n_routed_experts");
    m->shared = cfg_int(&c, "n_shared_experts");
    m->topk = cfg_int(&c, "num_experts_per_tok");
    m->groups = cfg_int(&c, "n_group");
    m->topk_group = cfg_int(&c, "topk_group");
    m->dense = cfg_int(&c, "first_k_dense_replace");
    m->mtp = cfg_int(&c, "num_nextn_predict_layers");
    int found;
    m->tied = base_json_bool(*root, "tie_word_embeddings", 0, &found);
    const char *tm = base_json_str(*root, "topk_method", "");
    m->has_bias = !strcmp(tm, "noaux_tc");
    s = c.err;
    free(p);
    return s;
}

/* Parameters the config predicts for the HF DeepSeek-V3 layout
 * (deepseek-v3-spec.md §2, model_config_param_count): main model, and the
 * MTP layers on top. -1 when config.json lacks what the formula needs (the
 * count would rest on DeepseekV3Config defaults). */
static void predict(const cfg *m, const model_config *mc, int64_t *main_params, int64_t *mtp_params) {
    *main_params = *mtp_params = -1;
    if (m->kv_lora < 0 || m->nope < 0 || m->rope < 0 || m->vdim < 0) return;
    for (int l = 0; l < mc->num_hidden_layers + mc->num_nextn_predict_layers; l++) {
        if (model_layer_is_moe(mc, l) ? m->experts < 0 || m->moe_inter < 0 : m->inter < 0) return;
    }
    *main_params = model_config_param_count(mc, mtp_params);
}

static void print_config(const cJSON *root, const cfg *m) {
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    printf("architecture: ");
    if (cJSON_IsArray(arch) && cJSON_IsString(arch->child)) printf("%s", arch->child->valuestring);
    else printf("(no \"architectures\")");
    printf(" (model_type %s)\n", base_json_str(root, "model_type", "?"));
    print_num("hidden_size", m->hidden);
    print_num("num_hidden_layers", m->layers);
    if (m->experts > 0)
        printf("  %-26s %lld dense + %lld MoE\n", "layers", (long long)(m->dense < 0 ? 0 : m->dense),
               (long long)(m->layers - (m->dense < 0 ? 0 : m->dense)));
    print_num("num_attention_heads", m->heads);
    print_num("num_key_value_heads", m->kv_heads);
    print_num("vocab_size", m->vocab);
    print_num("intermediate_size", m->inter);
    char ql[32];
    if (m->q_lora > 0) snprintf(ql, sizeof ql, "%lld", (long long)m->q_lora);
    else snprintf(ql, sizeof ql, "none");
    printf("  %-26s q_lora_rank %s, kv_lora_rank %lld, qk_nope %lld, qk_rope %lld, v_head %lld\n",
           "MLA", ql, (long long)m->kv_lora, (long long)m->nope, (long long)m->rope, (long long)m->vdim);
    if (m->experts > 0) {
        printf("  %-26s %lld routed (width %lld) + %lld shared, top-%lld", "experts",
               (long long)m->experts, (long long)m->moe_inter, (long long)(m->shared < 0 ? 0 : m->shared),
               (long long)m->topk);
        if (m->groups > 0) printf(", %lld groups keep %lld", (long long)m->groups, (long long)m->topk_group);
        printf("\n  %-26s %s, %s, norm_topk_prob %s, routed_scaling_factor %g\n", "routing",
               base_json_str(root, "scoring_func", "?"), base_json_str(root, "topk_method", "?"),
               base_json_bool(root, "norm_topk_prob", 0, NULL) ? "true" : "false",
               base_json_num(root, "routed_scaling_factor", 1.0, NULL));
    }
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (!cJSON_IsObject(rs)) rs = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    double theta = base_json_num(root, "rope_theta", NAN, NULL);
    if (isnan(theta) && cJSON_IsObject(rs)) theta = cfg_num(rs, "rope_theta");
    printf("  %-26s theta %g, max_position_embeddings %lld\n", "rope", theta,
           (long long)base_json_int(root, "max_position_embeddings", -1, NULL));
    if (cJSON_IsObject(rs)) {
        const char *type = base_json_str(rs, "type", base_json_str(rs, "rope_type", "?"));
        printf("  %-26s %s factor %g (original %g), beta_fast %g, beta_slow %g, mscale %g, "
               "mscale_all_dim %g\n",
               "rope scaling", type, cfg_num(rs, "factor"), cfg_num(rs, "original_max_position_embeddings"),
               cfg_num(rs, "beta_fast"), cfg_num(rs, "beta_slow"), cfg_num(rs, "mscale"),
               cfg_num(rs, "mscale_all_dim"));
    }
    printf("  %-26s %g\n", "rms_norm_eps", base_json_num(root, "rms_norm_eps", NAN, NULL));
    printf("  %-26s %s\n", "tie_word_embeddings", m->tied ? "true" : "false");
    print_num("num_nextn_predict_layers", m->mtp);
    const char *td = base_json_str(root, "torch_dtype", base_json_str(root, "dtype", NULL));
    if (td) printf("  %-26s %s\n", "torch_dtype", td);
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    if (cJSON_IsObject(q)) {
        const cJSON *bs = cJSON_GetObjectItemCaseSensitive(q, "weight_block_size");
        printf("  %-26s %s %s", "quantization", base_json_str(q, "quant_method", "?"),
               base_json_str(q, "fmt", ""));
        if (cJSON_GetArraySize(bs) == 2)
            printf(", blocks %gx%g", cJSON_GetArrayItem(bs, 0)->valuedouble,
                   cJSON_GetArrayItem(bs, 1)->valuedouble);
        printf("\n");
    }
}

/* ---- tensors ---------------------------------------------------------------- */

static int is_scale(const char *name) {
    size_t n = strlen(name);
    return n >= 10 && !strcmp(name + n - 10, "_scale_inv");
}

/* Every FP8 weight needs its block scale: [ceil(r/128), ceil(c/128)]. */
static base_status check_fp8(const st_dir *d) {
    for (int i = 0; i < st_dir_count(d); i++) {
        const st_tensor *t = st_dir_at(d, i);
        if (t->dtype != TENSOR_F8_E4M3) continue;
        const char *file = st_dir_file_of(d, t);
        if (t->ndim != 2)
            return base_err_set(BASE_ERR_INVALID, "%s: tensor '%s': F8_E4M3 weight is %d-D, not 2-D", file,
                                t->name, t->ndim);
        base_buf sn = {0};
        base_buf_printf(&sn, "%s_scale_inv", t->name);
        const st_tensor *s = st_dir_find(d, sn.data);
        int64_t br = (t->shape[0] + 127) / 128, bc = (t->shape[1] + 127) / 128;
        base_status st = BASE_OK;
        if (!s)
            st = base_err_set(BASE_ERR_INVALID, "%s: tensor '%s': F8_E4M3 weight without '%s'", file,
                              t->name, sn.data);
        else if (s->ndim != 2 || s->shape[0] != br || s->shape[1] != bc)
            st = base_err_set(BASE_ERR_INVALID,
                              "%s: tensor '%s': shape does not match its weight '%s' (expected [%lld, %lld])",
                              st_dir_file_of(d, s), s->name, t->name, (long long)br, (long long)bc);
        base_buf_free(&sn);
        if (st) return st;
    }
    return BASE_OK;
}

static void print_tensors(const st_dir *d, int64_t *params_out) {
    int64_t count[TENSOR_DTYPE_COUNT] = {0}, elems[TENSOR_DTYPE_COUNT] = {0};
    size_t bytes[TENSOR_DTYPE_COUNT] = {0};
    int64_t params = 0, nscale = 0;
    char b1[32], b2[32], b3[32];
    for (int i = 0; i < st_dir_count(d); i++) {
        const st_tensor *t = st_dir_at(d, i);
        count[t->dtype]++;
        elems[t->dtype] += st_numel(t);
        bytes[t->dtype] += t->nbytes;
        if (is_scale(t->name)) nscale++;
        else params += st_numel(t);
    }
    printf("parameters: %s", commas(params, b1, sizeof b1));
    if (nscale) printf(" (%lld FP8 block-scale tensors not counted)", (long long)nscale);
    printf("\ntensors by dtype:\n");
    for (int k = 0; k < TENSOR_DTYPE_COUNT; k++)
        if (count[k])
            printf("  %-8s %8lld tensors %18s elements %18s bytes (%s)\n", tensor_dtype_name(k),
                   (long long)count[k], commas(elems[k], b1, sizeof b1), commas((int64_t)bytes[k], b2, sizeof b2),
                   human((double)bytes[k], b3, sizeof b3));
    printf("total: %d tensors, %s bytes (%s) of tensor data in %d file%s\n", st_dir_count(d),
           commas((int64_t)st_dir_total_bytes(d), b1, sizeof b1),
           human((double)st_dir_total_bytes(d), b2, sizeof b2), st_dir_nfiles(d),
           st_dir_nfiles(d) == 1 ? "" : "s");
    *params_out = params;
}

static void print_files(const st_dir *d) {
    char b1[32], b2[32];
    printf("files:\n");
    if (st_dir_index_path(d)) printf("  %s\n", st_dir_index_path(d));
    for (int i = 0; i < st_dir_nfiles(d); i++) {
        const st_file *f = st_dir_file(d, i);
        struct stat sb;
        int64_t disk = stat(st_path(f), &sb) == 0 ? (int64_t)sb.st_size : -1;
        printf("  %s  %d tensors, %s bytes of data, %s bytes on disk\n", st_path(f), st_count(f),
               commas((int64_t)st_data_bytes(f), b1, sizeof b1), commas(disk, b2, sizeof b2));
    }
}

static void usage(FILE *f) {
    fprintf(f, "usage: grpo info MODEL_DIR|CONFIG.json [--memory [--precision f32|bf16|fp8] [--device cpu|cuda]\n"
               "                 [--sequences N] [--max-len T] [--budget-gb B]]\n"
               "  Architecture and key config values (config.json), parameter count, tensors by\n"
               "  dtype, bytes and files of a Hugging Face checkpoint directory (model.safetensors,\n"
               "  or shards through model.safetensors.index.json). config.json is validated as\n"
               "  `grpo forward` validates it, and every safetensors header; a missing, truncated\n"
               "  or corrupt file, or a config forward refuses, exits 1 and names it.\n"
               "  --memory: bytes by role to sample from the model (frozen weights in --precision,\n"
               "  default f32; the latent KV cache of N sequences of T positions, default 16 x 4096;\n"
               "  block tables; workspace) on --device (default cuda: a plan, no GPU needed), from\n"
               "  the sizing code the run allocates with, and the sequences of T positions that fit\n"
               "  beside the weights in B GB (default 80). A CONFIG.json sizes a config alone.\n");
}

/* ---- memory ------------------------------------------------------------------ */

typedef struct {
    model_precision prec;
    tensor_device dev;
    int64_t seqs, max_len;
    double budget_gb;
} mem_opts;

static void mem_line(const char *role, size_t b, const char *note) {
    char b1[32], b2[32];
    printf("  %-36s %18s bytes %12s%s%s\n", role, commas((int64_t)b, b1, sizeof b1), human((double)b, b2, sizeof b2),
           note ? "  " : "", note ? note : "");
}

static base_status print_memory(const model_config *mc, const mem_opts *o) {
    model_load_opts lo = {.precision = o->prec, .frozen = 1, .max_context = o->max_len};
    model_mem w, t;
    base_status s = model_memory_plan(mc, &lo, o->dev, &w);
    if (s) return s;
    model_cache_limits cl = {.slots = (int)o->seqs, .max_len = o->max_len, .max_batch = (int)o->seqs,
                             .max_prefill = o->max_len};
    model_cache_mem c, c1;
    if ((s = model_cache_plan(mc, &cl, o->prec, o->dev, &c))) return s;
    model_cache_limits one = cl;
    one.slots = one.max_batch = 1;
    if ((s = model_cache_plan(mc, &one, o->prec, o->dev, &c1))) return s;
    char note[160];
    const char *dn = o->dev == TENSOR_CPU ? "cpu" : "cuda";
    printf("memory to sample (frozen %s weights on %s; planned by model_load / model_cache_new's sizing code):\n",
           model_precision_name(o->prec), dn);
    snprintf(note, sizeof note, "%.3f bytes per parameter (%lld parameters)",
             (double)(w.master + w.compute + w.scales) / (double)w.params, (long long)w.params);
    mem_line(o->prec == MODEL_F32 ? "weights (f32)" : o->prec == MODEL_BF16 ? "weights (bf16; norms, router f32)"
                                                                            : "weights (e4m3; embedding, head bf16)",
             w.master + w.compute, note);
    if (w.scales) mem_line("fp8 block scales", w.scales, "f32, one per 128 x 128 block");
    mem_line("rope tables", w.rope, NULL);
    int bf = o->prec != MODEL_F32 && o->dev != TENSOR_CPU; /* the cache's dtype: the activations' */
    size_t per_tok = model_cache_page_bytes_p(mc, 1, bf ? MODEL_BF16 : MODEL_F32);
    snprintf(note, sizeof note, "%lld sequences x %lld positions, %zu bytes per token (%s)", (long long)o->seqs,
             (long long)o->max_len, per_tok, bf ? "bf16" : "f32");
    mem_line("latent KV cache", c.pages, note);
    mem_line("block tables", c.table, NULL);
    snprintf(note, sizeof note, "prefill of %lld tokens, decode of %lld sequences, logits", (long long)o->max_len,
             (long long)o->seqs);
    mem_line("workspace", c.workspace, note);
    size_t total = model_mem_total(&w) + c.pages + c.table + c.workspace;
    mem_line("total", total, NULL);
    /* sequences that fit: the weights and the workspace of one decode
     * batch are fixed, each sequence adds its pages */
    double budget = o->budget_gb * 1e9;
    size_t per_seq = (c.pages - c1.pages) / (size_t)(o->seqs - 1 > 0 ? o->seqs - 1 : 1);
    double fixed = (double)model_mem_total(&w) + (double)c.workspace;
    if (o->seqs > 1 && per_seq > 0) {
        double fit = (budget - fixed) / (double)per_seq;
        printf("  in %g GB (%.0f bytes): %s the weights and this workspace; %.0f sequences of %lld positions fit "
               "beside them (%s per sequence)\n",
               o->budget_gb, budget, fixed <= budget ? "room for" : "NOT room for", fit > 0 ? floor(fit) : 0.0,
               (long long)o->max_len, human((double)per_seq, note, sizeof note));
    }
    model_load_opts tl = {.precision = o->prec == MODEL_FP8 ? MODEL_BF16 : o->prec, .max_context = o->max_len};
    if (o->dev == TENSOR_CPU) tl.precision = MODEL_F32;
    if ((s = model_memory_plan(mc, &tl, o->dev, &t))) return s;
    printf("weights of a trained model (%s mode on %s; gradients and optimizer state not included):\n",
           model_precision_name(tl.precision), dn);
    mem_line("master weights (f32)", t.master, NULL);
    if (t.compute) mem_line("compute copy (bf16)", t.compute, NULL);
    return BASE_OK;
}

static int parse_i64(const char *v, int64_t lo, int64_t *out) {
    char *end;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v || *end || x < lo) return -1;
    *out = x;
    return 0;
}

int cli_cmd_info(int argc, char **argv) {
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    const char *dir = NULL;
    int memory = 0;
    mem_opts mo = {MODEL_F32, TENSOR_CUDA, 16, 4096, 80.0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--memory")) {
            memory = 1;
            continue;
        } else if (!strcmp(a, "--precision")) {
            bad = !v || model_precision_parse(v, &mo.prec);
        } else if (!strcmp(a, "--device")) {
            bad = !v || (strcmp(v, "cpu") && strcmp(v, "cuda"));
            if (!bad) mo.dev = strcmp(v, "cpu") ? TENSOR_CUDA : TENSOR_CPU;
        } else if (!strcmp(a, "--sequences")) {
            bad = parse_i64(v, 1, &mo.seqs) || mo.seqs > 1 << 20;
        } else if (!strcmp(a, "--max-len")) {
            bad = parse_i64(v, 1, &mo.max_len) || mo.max_len > 1 << 24;
        } else if (!strcmp(a, "--budget-gb")) {
            char *end;
            mo.budget_gb = v ? strtod(v, &end) : 0;
            bad = !v || *end || !(mo.budget_gb > 0 && mo.budget_gb < 1e6);
        } else if (a[0] != '-' && !dir) {
            dir = a;
            continue;
        } else {
            usage(stderr);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "grpo info: %s %s: bad value\n", a, v ? v : "(missing)");
            return 2;
        }
        i++;
    }
    if (!dir) {
        usage(stderr);
        return 2;
    }
    struct stat sb;
    if (stat(dir, &sb) < 0) {
        fprintf(stderr, "grpo info: %s: %s\n", dir, base_strerror_now());
        return 1;
    }
    if (!S_ISDIR(sb.st_mode)) { /* CONFIG.json: the config and its memory, no checkpoint */
        model_config mc;
        base_status s = model_config_load(dir, &mc);
        if (!s) {
            printf("config: %s\n", dir);
            if (memory) s = print_memory(&mc, &mo);
            else printf("parameters: %lld (config)\n", (long long)model_config_param_count(&mc, NULL));
        }
        if (s) {
            fprintf(stderr, "grpo info: %s\n", base_err_msg());
            return 1;
        }
        return 0;
    }
    cJSON *root = NULL;
    cfg m;
    memset(&m, 0, sizeof m);
    model_config mc;
    st_dir *d = NULL;
    base_status s = read_config(dir, &root, &m, &mc);
    if (!s) s = st_dir_open(dir, &d);
    if (!s) s = check_fp8(d);
    if (s) {
        fprintf(stderr, "grpo info: %s\n", base_err_msg());
        st_dir_close(d);
        cJSON_Delete(root);
        return 1;
    }
    printf("model: %s\n", dir);
    print_config(root, &m);
    int64_t params, want, want_mtp;
    print_tensors(d, &params);
    predict(&m, &mc, &want, &want_mtp);
    char b1[32], b2[32];
    if (want < 0) printf("config check: config.json lacks the fields to predict the parameter count\n");
    else if (params == want)
        printf("config check: config.json predicts %s parameters: matches\n", commas(want, b1, sizeof b1));
    else if (params == want + want_mtp)
        printf("config check: config.json predicts %s parameters with the %lld MTP layer%s: matches\n",
               commas(want + want_mtp, b1, sizeof b1), (long long)m.mtp, m.mtp == 1 ? "" : "s");
    else
        printf("config check: WARNING: config.json predicts %s parameters (%s with MTP), the "
               "checkpoint holds %s\n",
               commas(want, b1, sizeof b1), commas(want + want_mtp, b2, sizeof b2),
               commas(params, (char[32]){0}, 32));
    print_files(d);
    st_dir_close(d);
    cJSON_Delete(root);
    if (memory && (s = print_memory(&mc, &mo))) {
        fprintf(stderr, "grpo info: %s\n", base_err_msg());
        return 1;
    }
    return 0;
}
