/*
 * bench_gpu: our side of the GPU benchmarks of issue 8, on a Moonlight-
 * shaped DeepSeek-V3 config cut to 12 layers (hidden 2048, 16 heads, no
 * query LoRA, kv_lora_rank 512, 128/64/128 head dims, 64 routed experts
 * top-6, 2 shared, moe_intermediate 1408, intermediate 11264, one dense
 * layer, vocabulary 163840: about 7.2B parameters), random weights, float32
 * storage (the CUDA backend's float32 mode; docs/cuda.md), or with
 * --precision bf16 the model's bf16 mode (bf16 GEMM operands and a bf16
 * copy of the weights next to the f32 master weights; docs/cuda.md).
 *
 *   peak     device copy bandwidth (bytes read + written) and GEMM peaks
 *            (8192^3: float32, bf16 with f32 accumulation) measured here
 *   sample   the rollout engine: 64 prompts of 128 tokens, 128 new tokens
 *            each at temperature 1 (the benchmark of bench/hf_baseline.py):
 *            new tokens/s, the decode step time and its share of the HBM
 *            roofline (bytes of weights and latent cache read per step over
 *            the measured copy bandwidth)
 *   train    forward + backward of a token-level log-prob loss on 8 x 1024
 *            tokens: tokens/s and the share of the measured GEMM peaks
 *   grpo     one whole GRPO step (8 prompts x G = 16: rollout, a synthetic
 *            reward, advantages, forward + backward + AdamW), when the
 *            float32 weights, gradients and AdamW state fit on the device
 *   memory   concurrent sequences at 4K context that fit next to the
 *            weights, gradients and optimizer state (or the weights only):
 *            unshared, and in groups of G = 16 samples whose 1K or 3K-token
 *            prompt's full cache pages are shared (the rollout engine's
 *            paged cache)
 *
 * Every figure is one JSON line on --out (and a line of text on stdout):
 * the GPU session's bench/gpu_run.sh collects them for bench/RESULTS.md.
 *
 *   bench_gpu [--device cuda|cpu] [--config moonlight12|tiny] [--precision f32|bf16]
 *             [--only peak,sample,train,grpo,memory] [--variants] [--out FILE]
 * Every record carries "precision".
 * --variants then repeats, on the same model, the f32 GEMM peak and the
 * training step with TF32 GEMMs (GRPO_CUDA_TF32=1) and the sampling with
 * the experts' cuBLAS path (GRPO_CUDA_MOE_PATH=blas); those records carry
 * "variant".
 * --config tiny is a small config that runs every section on the CPU in
 * seconds (a smoke test of this program, not a benchmark).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef GRPO_BENCH_CUDA
#include <cuda_runtime_api.h>
#endif

#include "base/base.h"
#include "model/model.h"
#include "rollout/rollout.h"
#include "tensor/ops.h"
#include "train/grpo.h"
#include "train/optim.h"

static FILE *g_out;
static const struct ops *g_ops;
static const char *g_config = "moonlight12";
static double g_copy_bw, g_peak_bf16, g_peak_f32; /* from the peak section (0: not measured) */
static const char *g_variant;                       /* set while --variants runs one */
static model_precision g_prec;                      /* --precision */
/* Bytes per parameter of the weights a forward reads: the bf16 copy in bf16
 * mode (the router, norms and decode's kv_b read f32: a small share). */
static double wbytes_per_param(void) { return g_prec == MODEL_BF16 ? 2.0 : 4.0; } /* also the cache */
/* Bytes per parameter held for the weights: the f32 master weights, plus
 * the bf16 compute copy in bf16 mode. */
static double held_per_param(void) { return g_prec == MODEL_BF16 ? 6.0 : 4.0; }

/* One result: a JSON line on --out and text on stdout. */
static void record(const char *section, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void record(const char *section, const char *fmt, ...) {
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    printf("%-7s %s%s%s\n", section, g_variant ? g_variant : "", g_variant ? " " : "", buf);
    if (g_out) {
        fprintf(g_out,
                "{\"section\": \"%s\", \"device\": \"%s\", \"config\": \"%s\", \"variant\": \"%s\", \"precision\": "
                "\"%s\", %s}\n",
                section, g_ops->name, g_config, g_variant ? g_variant : "default", model_precision_name(g_prec), buf);
        fflush(g_out);
    }
}

/* ---- the model config ----------------------------------------------------- */

static model_config make_config(const char *name) {
    cJSON *j = cJSON_CreateObject();
    int tiny = !strcmp(name, "tiny");
    if (!tiny && strcmp(name, "moonlight12")) base_die("bench_gpu: unknown --config %s", name);
    cJSON_AddStringToObject(j, "model_type", "deepseek_v3");
    cJSON_AddNumberToObject(j, "vocab_size", tiny ? 1024 : 163840);
    cJSON_AddNumberToObject(j, "hidden_size", tiny ? 128 : 2048);
    cJSON_AddNumberToObject(j, "intermediate_size", tiny ? 256 : 11264);
    cJSON_AddNumberToObject(j, "moe_intermediate_size", tiny ? 64 : 1408);
    cJSON_AddNumberToObject(j, "num_hidden_layers", tiny ? 3 : 12);
    cJSON_AddNumberToObject(j, "num_attention_heads", tiny ? 4 : 16);
    cJSON_AddNumberToObject(j, "num_key_value_heads", tiny ? 4 : 16);
    cJSON_AddNumberToObject(j, "n_shared_experts", 2);
    cJSON_AddNumberToObject(j, "n_routed_experts", tiny ? 16 : 64);
    cJSON_AddNumberToObject(j, "num_experts_per_tok", tiny ? 4 : 6);
    cJSON_AddNumberToObject(j, "routed_scaling_factor", 2.446);
    cJSON_AddNumberToObject(j, "n_group", 1);
    cJSON_AddNumberToObject(j, "topk_group", 1);
    cJSON_AddBoolToObject(j, "norm_topk_prob", 1);
    cJSON_AddNullToObject(j, "q_lora_rank");
    cJSON_AddNumberToObject(j, "kv_lora_rank", tiny ? 64 : 512);
    cJSON_AddNumberToObject(j, "qk_nope_head_dim", tiny ? 32 : 128);
    cJSON_AddNumberToObject(j, "qk_rope_head_dim", tiny ? 16 : 64);
    cJSON_AddNumberToObject(j, "v_head_dim", tiny ? 32 : 128);
    cJSON_AddNumberToObject(j, "first_k_dense_replace", 1);
    cJSON_AddNumberToObject(j, "moe_layer_freq", 1);
    cJSON_AddNumberToObject(j, "max_position_embeddings", 8192);
    cJSON_AddNumberToObject(j, "rope_theta", 50000.0);
    cJSON_AddNumberToObject(j, "rms_norm_eps", 1e-5);
    cJSON_AddBoolToObject(j, "tie_word_embeddings", 0);
    cJSON_AddNumberToObject(j, "bos_token_id", 0);
    cJSON_AddNumberToObject(j, "eos_token_id", 1);
    model_config c;
    if (model_config_parse(j, name, &c)) base_die("bench_gpu: %s", base_err_msg());
    cJSON_Delete(j);
    return c;
}

/* Parameters of one token's matmuls (its routed experts and the shared
 * ones), the LM head included, the embedding (a gather) not. */
static double active_matmul_params(const model_config *c) {
    double d = (double)c->hidden_size, H = c->num_attention_heads, dqk = c->qk_head_dim;
    double dc = c->kv_lora_rank, dr = c->qk_rope_head_dim, dn = c->qk_nope_head_dim, dv = c->v_head_dim;
    double q = c->q_lora_rank > 0 ? d * c->q_lora_rank + c->q_lora_rank * H * dqk : d * H * dqk;
    double attn = q + d * (dc + dr) + dc * H * (dn + dv) + H * dv * d;
    double dense = 3.0 * d * (double)c->intermediate_size;
    double moe = 3.0 * d * (double)c->moe_intermediate_size * (c->num_experts_per_tok + c->n_shared_experts) +
                 d * c->n_routed_experts;
    double total = (double)c->vocab_size * d; /* lm_head */
    for (int l = 0; l < c->num_hidden_layers; l++)
        total += attn + (model_layer_is_moe(c, l) ? moe : dense);
    return total;
}

/* Every parameter of the config (without allocating the model). */
static double param_count(const model_config *c) {
    double d = (double)c->hidden_size, H = c->num_attention_heads, dqk = c->qk_head_dim;
    double dc = c->kv_lora_rank, dr = c->qk_rope_head_dim, dn = c->qk_nope_head_dim, dv = c->v_head_dim;
    double q = c->q_lora_rank > 0 ? d * c->q_lora_rank + c->q_lora_rank + c->q_lora_rank * H * dqk : d * H * dqk;
    double attn = 2 * d + q + d * (dc + dr) + dc + dc * H * (dn + dv) + H * dv * d;
    double ie = (double)c->moe_intermediate_size, E = c->n_routed_experts;
    double moe = E * d + E + E * 3 * d * ie + 3 * d * ie * c->n_shared_experts;
    double total = (double)c->vocab_size * d * (c->tie_word_embeddings ? 1 : 2) + d;
    for (int l = 0; l < c->num_hidden_layers; l++)
        total += attn + (model_layer_is_moe(c, l) ? moe : 3.0 * d * (double)c->intermediate_size);
    return total;
}

/* Causal attention FLOPs of one sequence of T tokens, all layers, forward:
 * scores (dqk) and values (dv) over the T(T+1)/2 visible pairs per head. */
static double attn_flops(const model_config *c, double T) {
    return 2.0 * T * (T + 1) / 2 * c->num_attention_heads * (c->qk_head_dim + c->v_head_dim) * c->num_hidden_layers;
}

/* ---- device helpers ------------------------------------------------------------ */

static double device_free_bytes(double *total) {
#ifdef GRPO_BENCH_CUDA
    if (g_ops->device == TENSOR_CUDA) {
        size_t fr = 0, tot = 0;
        if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) {
            if (total) *total = (double)tot;
            return (double)fr;
        }
    }
#endif
    if (total) *total = 0;
    return -1; /* unknown (host memory) */
}

static void fill_random(void *dev, tensor_dtype dt, int64_t n, uint64_t seed) {
    const int64_t chunk = 1 << 22;
    float *f = base_xmalloc((size_t)chunk * sizeof(float));
    void *h = base_xmalloc((size_t)chunk * 4);
    size_t es = tensor_dtype_size(dt);
    base_rng r;
    base_rng_init(&r, seed, 0xbe, 0, 0);
    for (int64_t off = 0; off < n; off += chunk) {
        int64_t m = n - off < chunk ? n - off : chunk;
        for (int64_t i = 0; i < m; i++)
            f[i] = 2.0f * base_rng_uniform(&r, (uint32_t)(off + i)) - 1.0f;
        tensor_from_f32(h, dt, f, m);
        g_ops->upload((char *)dev + (size_t)off * es, h, (size_t)m * es);
    }
    free(f), free(h);
}

/* ---- peak -------------------------------------------------------------------- */

static double time_gemm(tensor_dtype dt, int64_t n, int reps) {
    size_t es = tensor_dtype_size(dt);
    void *a = g_ops->alloc((size_t)(n * n) * es), *b = g_ops->alloc((size_t)(n * n) * es);
    void *c = g_ops->alloc((size_t)(n * n) * es);
    fill_random(a, dt, n * n, 1), fill_random(b, dt, n * n, 2);
    int64_t s[2] = {n, n};
    tensor ta = tensor_make(a, dt, g_ops->device, 2, s), tb = tensor_make(b, dt, g_ops->device, 2, s);
    tensor tc = tensor_make(c, dt, g_ops->device, 2, s);
    for (int i = 0; i < 2; i++)
        g_ops->matmul(&tc, &ta, &tb, 0, 1, 1.0f, 0.0f);
    g_ops->sync();
    double t0 = base_now();
    for (int i = 0; i < reps; i++)
        g_ops->matmul(&tc, &ta, &tb, 0, 1, 1.0f, 0.0f);
    g_ops->sync();
    double t = (base_now() - t0) / reps;
    g_ops->free(a), g_ops->free(b), g_ops->free(c);
    return 2.0 * (double)n * n * n / t;
}

static void run_peak(int tiny, int gemm_f32_only) {
    int64_t n = tiny ? 512 : 8192;
    if (gemm_f32_only) {
        double f = time_gemm(TENSOR_F32, n, tiny ? 2 : 10);
        record("peak", "\"what\": \"gemm_f32\", \"n\": %lld, \"TFLOP_per_s\": %.2f", (long long)n, f / 1e12);
        return;
    }
    size_t bytes = tiny ? (size_t)64 << 20 : (size_t)2 << 30;
    void *x = g_ops->alloc(bytes), *y = g_ops->alloc(bytes);
    fill_random(x, TENSOR_F32, (int64_t)(bytes / 4), 3);
    g_ops->copy(y, x, bytes);
    g_ops->sync();
    int reps = tiny ? 3 : 20;
    double t0 = base_now();
    for (int i = 0; i < reps; i++)
        g_ops->copy(i & 1 ? x : y, i & 1 ? y : x, bytes);
    g_ops->sync();
    double t = (base_now() - t0) / reps;
    g_copy_bw = 2.0 * (double)bytes / t;
    g_ops->free(x), g_ops->free(y);
    record("peak", "\"what\": \"copy\", \"bytes\": %zu, \"GB_per_s\": %.1f", bytes, g_copy_bw / 1e9);
    g_peak_f32 = time_gemm(TENSOR_F32, n, tiny ? 2 : 10);
    record("peak", "\"what\": \"gemm_f32\", \"n\": %lld, \"TFLOP_per_s\": %.2f", (long long)n, g_peak_f32 / 1e12);
    if (g_ops->device != TENSOR_CPU) {
        g_peak_bf16 = time_gemm(TENSOR_BF16, n, tiny ? 2 : 20);
        record("peak", "\"what\": \"gemm_bf16\", \"n\": %lld, \"TFLOP_per_s\": %.2f", (long long)n, g_peak_bf16 / 1e12);
    }
}

/* ---- sampling ------------------------------------------------------------------ */

typedef struct {
    int n;
    int32_t **ids;
    int32_t *len;
} prompts;

static prompts make_prompts(int n, int len, int64_t V, uint64_t seed) {
    prompts p = {n, base_xcalloc((size_t)n, sizeof(int32_t *)), base_xcalloc((size_t)n, sizeof(int32_t))};
    base_rng r;
    base_rng_init(&r, seed, 0x9e, 0, 0);
    for (int i = 0; i < n; i++) {
        p.ids[i] = base_xmalloc((size_t)len * sizeof(int32_t));
        p.len[i] = len;
        for (int t = 0; t < len; t++)
            p.ids[i][t] = 2 + (int32_t)(base_rng_uniform(&r, (uint32_t)(i * len + t)) * (float)(V - 2));
    }
    return p;
}
static void free_prompts(prompts *p) {
    for (int i = 0; i < p->n; i++)
        free(p->ids[i]);
    free(p->ids), free(p->len);
}

static double gen(rollout_engine *e, const prompts *p, int G, int64_t max_new, float T, uint64_t seed,
                  rollout_result *res) {
    rollout_request r = {.n_prompts = p->n,
                         .prompt_ids = (const int32_t *const *)p->ids,
                         .prompt_len = p->len,
                         .G = G,
                         .sampling = {T, 1.0f, 0, 0.0f},
                         .max_new_tokens = max_new,
                         .seed = seed};
    g_ops->sync();
    double t0 = base_now();
    if (rollout_generate(e, &r, res)) base_die("bench_gpu: %s", base_err_msg());
    g_ops->sync();
    return base_now() - t0;
}

static void run_sample(model *m, int tiny) {
    const model_config *c = model_cfg(m);
    int B = tiny ? 8 : 64, P = tiny ? 32 : 128, NEW = tiny ? 16 : 128;
    rollout_limits lim = {.max_seqs = B, .max_prompts = B, .max_group = 1, .max_prompt_len = P, .max_new_tokens = NEW};
    rollout_engine *e;
    if (rollout_new(m, &lim, &e)) base_die("bench_gpu: %s", base_err_msg());
    prompts p = make_prompts(B, P, c->vocab_size, 7);
    rollout_result res;
    gen(e, &p, 1, 2, 1.0f, 1, &res); /* warm-up: scratch buffers, cuBLAS handles */
    double t1 = gen(e, &p, 1, 1, 1.0f, 2, &res), t1b = gen(e, &p, 1, 1, 1.0f, 2, &res);
    if (t1b < t1) t1 = t1b; /* prefill + first token: the less disturbed of two */
    double tn = gen(e, &p, 1, NEW, 1.0f, 3, &res);
    double step = (tn - t1) / (NEW - 1);
    /* bytes one decode step reads: every weight but the embedding (a gather
     * of B rows; with B x top-k routes over the experts all of them are
     * touched), the latent cache (f32, bf16 in bf16 mode) at its mean length, the logits
     * written and read back by the sampler */
    double wbytes = ((double)model_numel(m) - (double)c->vocab_size * c->hidden_size) * wbytes_per_param();
    double mean_len = P + NEW / 2.0;
    double cbytes = (double)B * mean_len * (c->kv_lora_rank + c->qk_rope_head_dim) * (wbytes_per_param()) *
                    c->num_hidden_layers;
    double lbytes = 2.0 * B * (double)c->vocab_size * 4.0;
    double roof = g_copy_bw > 0 ? (wbytes + cbytes + lbytes) / g_copy_bw : 0;
    record("sample",
           "\"prompts\": %d, \"prompt_len\": %d, \"new_tokens\": %lld, \"seconds\": %.3f, \"new_tokens_per_s\": %.1f, "
           "\"prefill_plus_first_s\": %.3f, \"decode_step_ms\": %.3f, \"step_bytes_GB\": %.3f, \"roofline_step_ms\": "
           "%.3f, \"roofline_share\": %.3f",
           B, P, (long long)res.new_tokens, tn, (double)res.new_tokens / tn, t1, step * 1e3,
           (wbytes + cbytes + lbytes) / 1e9, roof * 1e3, roof > 0 ? roof / step : 0.0);
    free_prompts(&p);
    rollout_free(e);
}

/* ---- training --------------------------------------------------------------------- */

/* Forward + backward of the mean token log-prob loss over nseq x len
 * random tokens; returns seconds per step (best of reps). */
static double train_steps(model *m, model_train *tr, float *grads, int nseq, int len, int reps) {
    const model_config *c = model_cfg(m);
    int n = nseq * len;
    int32_t *ids = base_xmalloc((size_t)n * sizeof(int32_t)), *cu = base_xmalloc((size_t)(nseq + 1) * sizeof(int32_t));
    float *g = base_xmalloc((size_t)n * sizeof(float));
    base_rng r;
    base_rng_init(&r, 99, 0x7a, 0, 0);
    for (int i = 0; i < n; i++)
        ids[i] = 2 + (int32_t)(base_rng_uniform(&r, (uint32_t)i) * (float)(c->vocab_size - 2));
    for (int s = 0; s <= nseq; s++)
        cu[s] = s * len;
    for (int i = 0; i < n; i++)
        g[i] = (i % len) + 1 < len ? -1.0f / (float)(nseq * (len - 1)) : 0.0f;
    model_batch b = {.nseq = nseq, .ids = ids, .cu_seqlens = cu};
    double best = 1e30;
    for (int k = 0; k <= reps; k++) { /* k = 0: warm-up */
        g_ops->sync();
        double t0 = base_now();
        if (model_forward(tr, &b)) base_die("bench_gpu: %s", base_err_msg());
        model_backward(tr, g, NULL, grads);
        g_ops->sync();
        double t = base_now() - t0;
        if (k && t < best) best = t;
    }
    free(ids), free(cu), free(g);
    return best;
}

static void run_train(model *m, int tiny) {
    const model_config *c = model_cfg(m);
    int nseq = tiny ? 2 : 8, len = tiny ? 64 : 1024;
    double pbytes = (double)model_numel(m) * 4.0; /* the f32 gradients */
    model_train_limits lim = {.max_tokens = nseq * len, .max_seqs = nseq, .recompute = 0};
    double need = (double)model_train_bytes(c, &lim) + pbytes; /* + gradients */
    double fr = device_free_bytes(NULL);
    if (fr > 0 && need > 0.95 * fr) lim.recompute = 1; /* activations of one layer only */
    model_train *tr;
    if (model_train_new(m, &lim, &tr)) base_die("bench_gpu: %s", base_err_msg());
    float *grads = model_grads_new(m);
    double t = train_steps(m, tr, grads, nseq, len, tiny ? 1 : 3);
    int n = nseq * len;
    double flops = 6.0 * active_matmul_params(c) * n + 3.0 * nseq * attn_flops(c, len);
    record(
        "train",
        "\"seqs\": %d, \"seq_len\": %d, \"recompute\": %d, \"step_s\": %.4f, \"tokens_per_s\": %.1f, \"TFLOP\": %.2f, "
        "\"TFLOP_per_s\": %.2f, \"share_of_bf16_peak\": %.3f, \"share_of_f32_peak\": %.3f, \"activation_arena_GB\": %.2f",
        nseq, len, lim.recompute, t, n / t, flops / 1e12, flops / t / 1e12,
        g_peak_bf16 > 0 ? flops / t / g_peak_bf16 : 0.0, g_peak_f32 > 0 ? flops / t / g_peak_f32 : 0.0,
        (double)model_train_arena_bytes(tr) / 1e9);
    g_ops->free(grads);
    model_train_free(tr);
}

/* ---- a whole GRPO step --------------------------------------------------------------- */

static void run_grpo(model *m, int tiny) {
    const model_config *c = model_cfg(m);
    int NP = tiny ? 2 : 8, G = 16, P = tiny ? 32 : 128, NEW = tiny ? 16 : 128;
    int S = NP * G, L = P + NEW, micro = tiny ? 16 : 32; /* sequences per micro-batch */
    double pbytes = (double)model_numel(m) * 4.0;
    model_train_limits lim = {.max_tokens = (int64_t)micro * L, .max_seqs = micro, .recompute = 1};
    model_cache_limits cl = {.slots = S, .max_len = L, .max_batch = S, .max_prefill = (int64_t)P * S};
    /* the weights are allocated already: gradients, AdamW m and v, activations, cache */
    double need = 3.0 * pbytes + (double)model_train_bytes(c, &lim) + (double)model_cache_bytes(c, &cl);
    double total = 0, fr = device_free_bytes(&total);
    /* AdamW's m and v off the device (offload_optimizer) when the whole
     * state does not fit: the gradients, 2 x 64 MB of staging, activations
     * and the cache stay */
    int offload = fr > 0 && need > 0.97 * fr;
    if (offload) need -= 2.0 * pbytes - 2.0 * 64e6;
    if (fr > 0 && need > 0.97 * fr) {
        record("grpo",
               "\"fits\": false, \"needs_GB\": %.1f, \"free_GB\": %.1f, \"why\": \"float32 gradients and AdamW "
               "moments (12 bytes per parameter, next to the weights' 4, or 6 with the bf16 copy) plus activations and "
               "the rollout cache\"",
               need / 1e9, fr / 1e9);
        return;
    }
    rollout_limits rl = {.max_seqs = S, .max_prompts = NP, .max_group = G, .max_prompt_len = P, .max_new_tokens = NEW};
    rollout_engine *e;
    if (rollout_new(m, &rl, &e)) base_die("bench_gpu: %s", base_err_msg());
    float *grads = model_grads_new(m);
    int np = model_nparams(m), ns = 0;
    optim_param_spec *specs = base_xcalloc((size_t)np, sizeof *specs);
    for (int i = 0; i < np; i++) {
        const model_param *p = model_param_at(m, i);
        if (!p->trainable || p->mtp) continue;
        specs[ns].name = p->name, specs[ns].numel = p->numel, specs[ns].offset = p->offset;
        ns++;
    }
    optim_config oc;
    optim_config_default(&oc);
    oc.offload_optimizer = offload;
    optim o;
    if (optim_init_arena(&o, g_ops, &oc, specs, ns, NULL, model_params(m), grads, model_numel(m)))
        base_die("bench_gpu: %s", base_err_msg());
    model_train *tr;
    if (model_train_new(m, &lim, &tr)) base_die("bench_gpu: %s", base_err_msg());
    prompts pr = make_prompts(NP, P, c->vocab_size, 11);
    grpo_config gc;
    grpo_config_default(&gc);
    rollout_result res;
    gen(e, &pr, G, 2, 1.0f, 1, &res); /* warm-up */
    double best_total = 1e30, best_gen = 0, best_train = 0, best_opt = 0;
    float *rew = base_xmalloc((size_t)S * sizeof(float)), *adv = base_xmalloc((size_t)S * sizeof(float));
    int32_t *ids = base_xmalloc((size_t)micro * L * sizeof(int32_t)),
            *tg = base_xmalloc((size_t)micro * L * sizeof(int32_t));
    int32_t *cu = base_xmalloc((size_t)(micro + 1) * sizeof(int32_t));
    float *lp = base_xmalloc((size_t)micro * L * sizeof(float)), *glp = base_xmalloc((size_t)micro * L * sizeof(float));
    float *clp = base_xmalloc((size_t)micro * L * sizeof(float)), *cg = base_xmalloc((size_t)micro * L * sizeof(float));
    int64_t *off = base_xmalloc((size_t)(micro + 1) * sizeof(int64_t));
    for (int step = 0; step < 2; step++) {
        double t0 = base_now();
        double tg_ = gen(e, &pr, G, NEW, 1.0f, 100 + step, &res);
        /* a synthetic verifiable reward: the share of even token ids */
        for (int i = 0; i < S; i++) {
            int even = 0;
            for (int64_t t = 0; t < res.out[i].len; t++)
                even += res.out[i].ids[t] % 2 == 0;
            rew[i] = res.out[i].len ? (float)even / (float)res.out[i].len : 0.0f;
        }
        if (grpo_advantages(&gc, rew, S, 1, NULL, G, adv, NULL, NULL)) base_die("bench_gpu: %s", base_err_msg());
        double t1 = base_now();
        optim_zero_grad(&o);
        grpo_norm nm = {.n_seqs = S, .n_tokens = 0, .n_micro = S / micro};
        for (int i = 0; i < S; i++)
            nm.n_tokens += res.out[i].len;
        for (int mb = 0; mb < S / micro; mb++) {
            int n = 0;
            cu[0] = 0, off[0] = 0;
            for (int k = 0; k < micro; k++) {
                const rollout_completion *cp = &res.out[mb * micro + k];
                const int32_t *pp = pr.ids[(mb * micro + k) / G];
                for (int t = 0; t < P; t++)
                    ids[n + t] = pp[t], tg[n + t] = t + 1 < P ? -1 : cp->ids[0];
                for (int64_t t = 0; t < cp->len; t++)
                    ids[n + P + t] = cp->ids[t], tg[n + P + t] = t + 1 < cp->len ? cp->ids[t + 1] : -1;
                n += P + (int)cp->len;
                cu[k + 1] = n;
                off[k + 1] = off[k] + cp->len;
            }
            model_batch b = {.nseq = micro, .ids = ids, .cu_seqlens = cu, .targets = tg, .logit_scale = 1.0f};
            if (model_forward(tr, &b)) base_die("bench_gpu: %s", base_err_msg());
            model_train_download(tr, lp, NULL);
            /* completion token t of sequence k is predicted at position P - 1 + t */
            for (int k = 0; k < micro; k++)
                for (int64_t t = 0; t < off[k + 1] - off[k]; t++)
                    clp[off[k] + t] = lp[cu[k] + P - 1 + t];
            grpo_batch gb = {.n_seqs = micro, .offsets = off, .advantages = adv + mb * micro, .logp = clp};
            grpo_loss_stats st;
            if (grpo_loss(&gc, &gb, &nm, cg, NULL, &st)) base_die("bench_gpu: %s", base_err_msg());
            memset(glp, 0, (size_t)n * sizeof(float));
            for (int k = 0; k < micro; k++)
                for (int64_t t = 0; t < off[k + 1] - off[k]; t++)
                    glp[cu[k] + P - 1 + t] = cg[off[k] + t];
            model_backward(tr, glp, NULL, grads);
        }
        g_ops->sync();
        double t2 = base_now();
        optim_step_info info;
        optim_step(&o, step, &info);
        model_sync_compute(m); /* bf16 mode: the compute copy from the new master weights */
        g_ops->sync();
        double t3 = base_now();
        if (t3 - t0 < best_total) best_total = t3 - t0, best_gen = tg_, best_train = t2 - t1, best_opt = t3 - t2;
    }
    record("grpo",
           "\"fits\": true, \"prompts\": %d, \"G\": %d, \"prompt_len\": %d, \"new_tokens\": %d, \"step_s\": %.3f, "
           "\"generate_s\": %.3f, \"generate_share\": %.3f, \"train_s\": %.3f, \"optimizer_s\": %.3f, "
           "\"offload_optimizer\": %d",
           NP, G, P, NEW, best_total, best_gen, best_gen / best_total, best_train, best_opt, offload);
    free(rew), free(adv), free(ids), free(tg), free(cu), free(lp), free(glp), free(clp), free(cg), free(off);
    free_prompts(&pr);
    model_train_free(tr);
    optim_free(&o);
    free(specs);
    g_ops->free(grads);
    rollout_free(e);
}

/* ---- memory --------------------------------------------------------------------------- */

/* Sequences of 4096 positions that fit in `avail` bytes of paged cache
 * (pages of MODEL_PAGE_SIZE): unshared, and in groups of G samples sharing
 * a P-token prompt (its full pages held once, the rest per sample; the
 * rollout engine's worst-case reservation, src/rollout/engine.c). */
static double seqs_4k(double avail, double page, int G, int P) {
    int64_t ps = MODEL_PAGE_SIZE, per = (4096 + ps - 1) / ps, F = P / ps;
    double group = (double)(F + (int64_t)G * (per - F)) * page;
    return avail > 0 ? (double)G * floor(avail / group) : 0.0;
}

/* Bytes per sequence of 4096 positions in a group of G sharing a P-token prompt. */
static double per_sample_4k(double page, int G, int P) {
    int64_t ps = MODEL_PAGE_SIZE, per = (4096 + ps - 1) / ps, F = P / ps;
    return (double)(F + (int64_t)G * (per - F)) * page / G;
}

static void run_memory(const model_config *c, int64_t numel) {
    double total = 0;
    device_free_bytes(&total); /* capacity: the whole device, not what is free now */
    double page = (double)model_cache_page_bytes_p(c, MODEL_PAGE_SIZE, g_prec); /* bf16 pages in bf16 mode */
    double per_seq = page * (double)((4096 + MODEL_PAGE_SIZE - 1) / MODEL_PAGE_SIZE);
    /* f32 weights, gradients, AdamW m and v (+ the bf16 copy in bf16 mode) */
    double state = (12.0 + held_per_param()) * (double)numel;
    double weights = held_per_param() * (double)numel;
    if (total <= 0) {
        record("memory",
               "\"per_seq_4k_MB\": %.1f, \"per_seq_4k_G16_prompt1k_MB\": %.1f, \"per_seq_4k_G16_prompt3k_MB\": %.1f, "
               "\"state_GB\": %.1f, \"device_GB\": null",
               per_seq / 1e6, per_sample_4k(page, 16, 1024) / 1e6, per_sample_4k(page, 16, 3072) / 1e6, state / 1e9);
        return;
    }
    double avail = total - state, avail_inf = total - weights;
    record("memory",
           "\"device_GB\": %.1f, \"per_seq_4k_MB\": %.1f, \"train_state_GB\": %.1f, \"seqs_4k_next_to_train_state\": "
           "%.0f, \"seqs_4k_next_to_weights_only\": %.0f, \"seqs_4k_G16_prompt1k_next_to_train_state\": %.0f, "
           "\"seqs_4k_G16_prompt1k_next_to_weights_only\": %.0f, \"seqs_4k_G16_prompt3k_next_to_weights_only\": %.0f",
           total / 1e9, per_seq / 1e6, state / 1e9, avail > 0 ? floor(avail / per_seq) : 0.0,
           avail_inf > 0 ? floor(avail_inf / per_seq) : 0.0, seqs_4k(avail, page, 16, 1024),
           seqs_4k(avail_inf, page, 16, 1024), seqs_4k(avail_inf, page, 16, 3072));
}

int main(int argc, char **argv) {
    const char *dev = "cuda", *only = "peak,sample,train,grpo,memory", *outp = NULL;
    int variants = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--device") && i + 1 < argc)
            dev = argv[++i];
        else if (!strcmp(argv[i], "--config") && i + 1 < argc)
            g_config = argv[++i];
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc)
            outp = argv[++i];
        else if (!strcmp(argv[i], "--variants"))
            variants = 1;
        else if (!strcmp(argv[i], "--precision") && i + 1 < argc) {
            if (model_precision_parse(argv[++i], &g_prec)) {
                fprintf(stderr, "bench_gpu: %s\n", base_err_msg());
                return 2;
            }
        }
        else {
            fprintf(stderr, "usage: bench_gpu [--device cuda|cpu] [--config moonlight12|tiny] [--precision f32|bf16] "
                            "[--only peak,sample,train,grpo,memory] [--variants] [--out FILE]\n");
            return 2;
        }
    }
    g_ops = ops_by_name(dev);
    if (!g_ops) {
        printf("skipped: %s\n", base_err_msg());
        return 0;
    }
    if (outp && !(g_out = fopen(outp, "a"))) base_die("bench_gpu: %s: cannot write", outp);
    int tiny = !strcmp(g_config, "tiny");
    model_config cfg = make_config(g_config);
    if (strstr(only, "peak")) run_peak(tiny, 0);
    model *m = NULL;
    if (strstr(only, "sample") || strstr(only, "train") || strstr(only, "grpo")) {
        double t0 = base_now();
        model_load_opts lo = {.max_context = 4096, .precision = g_prec};
        if (model_init_random(&cfg, g_ops, 1234, 0.02f, &lo, &m)) base_die("bench_gpu: %s", base_err_msg());
        record("model", "\"params\": %lld, \"active_matmul_params\": %.0f, \"init_s\": %.1f", (long long)model_numel(m),
               active_matmul_params(&cfg), base_now() - t0);
    }
    if (strstr(only, "sample")) run_sample(m, tiny);
    if (strstr(only, "train")) run_train(m, tiny);
    if (strstr(only, "grpo")) run_grpo(m, tiny);
    if (strstr(only, "memory")) run_memory(&cfg, m ? model_numel(m) : (int64_t)param_count(&cfg));
    if (variants) {
        /* the knobs are read at every call: switch them on the same model */
        g_variant = "tf32";
        setenv("GRPO_CUDA_TF32", "1", 1);
        if (strstr(only, "peak")) run_peak(tiny, 1);
        if (m && strstr(only, "train")) run_train(m, tiny);
        unsetenv("GRPO_CUDA_TF32");
        g_variant = "moe-blas";
        setenv("GRPO_CUDA_MOE_PATH", "blas", 1);
        if (m && strstr(only, "sample")) run_sample(m, tiny);
        unsetenv("GRPO_CUDA_MOE_PATH");
        g_variant = NULL;
    }
    model_free(m);
    if (g_out) fclose(g_out);
    return 0;
}
