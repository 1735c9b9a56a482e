/*
 * grpo generate --model DIR --in prompts.jsonl
 *               [--greedy | --temperature T --top-p P --top-k K --seed S]
 *               [--n G] [--max-new-tokens N] [--batch B] [--out FILE] [--device D]
 *
 * Each input line has "ids" (token ids) or "prompt" (text, encoded with the
 * model's tokenizer, BOS added as Hugging Face does). Each prompt is
 * prefilled once into the latent KV cache, its cache is copied to its G
 * sample slots, and all sequences decode together one token per step.
 * Output (JSONL, stdout unless --out; prompt order, then sample order):
 *   {"index": K, "sample": J, "completion_ids": [...], "completion": "...",
 *    "logprobs": [...], "finish_reason": "stop" | "length"}
 * "completion" needs DIR/tokenizer.json (it is the decoded text without the
 * final EOS). "logprobs" holds log softmax(logits / T)[token] over the whole
 * vocabulary (T = 1 when greedy). Generation stops at an EOS id of the
 * config or tokenizer ("stop", the EOS id included), after N new tokens or
 * at the model's last position ("length").
 *
 * The uniform draw of completion token i of sample J of prompt K is
 * rollout_uniform(seed, 0, K, J, i): Philox keyed by (seed, prompt, sample,
 * position), and every op computes a row the same way whatever the batch,
 * so the output does not depend on --batch or on the other prompts.
 * Exit status: 0 done; 1 bad input; 2 bad usage.
 */
#include "cli/cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_device.h"
#include "cli/model_cli.h"
#include "rollout/rollout.h"
#include "tok/tok.h"

static const char *USAGE =
    "usage: grpo generate --model DIR --in prompts.jsonl\n"
    "                     [--greedy | --temperature T --top-p P --top-k K --seed S]\n"
    "                     [--n G] [--max-new-tokens N] [--batch B] [--out FILE] [--device D]\n"
    "Input lines have \"ids\" or \"prompt\" (text; needs DIR/tokenizer.json). Output lines:\n"
    "index, sample, completion_ids, completion (with a tokenizer), logprobs, finish_reason.\n"
    "Defaults: temperature 1, top-p 1, top-k 0 (off), seed 0, n 1, max-new-tokens 256,\n"
    "batch 64 sequences decoded together.\n" CLI_DEVICE_USAGE;

typedef struct {
    int prompt, sample, slot;
    int32_t *out;  /* [max_new] */
    float *lp;     /* [max_new] */
    int n, done;
    const char *finish;
} seq;

typedef struct {
    model *m;
    const struct ops *o;
    tok_tokenizer *tk;
    float temp, top_p;
    int top_k, G, max_new;
    uint64_t seed;
    int32_t eos[MODEL_MAX_EOS + 1];
    int neos;
    int64_t limit; /* positions the model can take */
    /* device buffers for one sampling call */
    void *dmem;
    tensor u, ids, lp;
} gen;

static int is_eos(const gen *g, int32_t t) {
    for (int i = 0; i < g->neos; i++)
        if (g->eos[i] == t) return 1;
    return 0;
}

/* Sample rows of logits [n, V] with uniforms u (host [n]); ids/lp host [n]. */
static void sample_rows(gen *g, const tensor *logits, int64_t row0, int n, const float *u, int32_t *ids, float *lp) {
    tensor lg = *logits;
    lg.data = (float *)logits->data + row0 * logits->stride[0];
    lg.shape[0] = n;
    tensor tu = g->u, ti = g->ids, tl = g->lp;
    tu.shape[0] = ti.shape[0] = tl.shape[0] = n;
    g->o->upload(tu.data, u, (size_t)n * sizeof(float));
    g->o->sample(&ti, &tl, &lg, &tu, g->temp, g->top_k, g->top_p);
    g->o->download(ids, ti.data, (size_t)n * sizeof(int32_t));
    g->o->download(lp, tl.data, (size_t)n * sizeof(float));
}

/* Append token t (logprob l) to sequence s and decide whether it is done. */
static void push(gen *g, seq *s, int32_t t, float l, int64_t plen) {
    s->out[s->n] = t;
    s->lp[s->n] = l;
    s->n++;
    if (is_eos(g, t)) s->done = 1, s->finish = "stop";
    else if (s->n >= g->max_new || plen + s->n >= g->limit) s->done = 1, s->finish = "length";
}

static void emit(gen *g, const seq *s, base_buf *outb) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "index", s->prompt);
    cJSON_AddNumberToObject(o, "sample", s->sample);
    cJSON *ids = cJSON_AddArrayToObject(o, "completion_ids");
    for (int i = 0; i < s->n; i++) cJSON_AddItemToArray(ids, cJSON_CreateNumber(s->out[i]));
    if (g->tk) {
        int n = s->n - (s->n > 0 && !strcmp(s->finish, "stop") ? 1 : 0);
        char *text = tok_decode_str(g->tk, s->out, n, 0, NULL);
        cJSON_AddStringToObject(o, "completion", text);
        free(text);
    }
    cJSON *lps = cJSON_AddArrayToObject(o, "logprobs");
    for (int i = 0; i < s->n; i++) cJSON_AddItemToArray(lps, cJSON_CreateNumber(s->lp[i]));
    cJSON_AddStringToObject(o, "finish_reason", s->finish);
    char *line = cJSON_PrintUnformatted(o);
    if (!line) base_die("cJSON_PrintUnformatted: out of memory");
    base_buf_puts(outb, line);
    base_buf_puts(outb, "\n");
    free(line);
    cJSON_Delete(o);
}

/* Prompts from JSONL: "ids" or "prompt" text. */
static base_status read_prompts(gen *g, const char *path, cli_seqs *ps) {
    memset(ps, 0, sizeof *ps);
    base_jsonl *r = NULL;
    base_status st = base_jsonl_open(path, &r);
    if (st) return st;
    int64_t n = 0, cap = 0, V = model_cfg(g->m)->vocab_size;
    int scap = 0;
    cJSON *o = NULL;
    tok_ids tmp = {0};
    while ((st = base_jsonl_next(r, &o)) == BASE_OK) {
        long line = base_jsonl_line(r);
        char what[512];
        snprintf(what, sizeof what, "%s:%ld: ids", path, line);
        int64_t before = n;
        const cJSON *ids = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, "ids") : NULL;
        const cJSON *pr = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, "prompt") : NULL;
        if (ids) {
            st = cli_parse_ids(ids, what, V, &ps->ids, &n, &cap);
        } else if (cJSON_IsString(pr)) {
            if (!g->tk) {
                st = base_err_set(BASE_ERR_INVALID, "%s:%ld: a text prompt needs the model's tokenizer.json", path, line);
            } else {
                tmp.n = 0;
                st = tok_encode(g->tk, pr->valuestring, strlen(pr->valuestring), TOK_ENC_ADD_SPECIAL, &tmp);
                if (st) base_err_wrap(st, "%s:%ld", path, line);
                for (int64_t i = 0; !st && i < tmp.n; i++) {
                    if (tmp.ids[i] >= V) {
                        st = base_err_set(BASE_ERR_INVALID, "%s:%ld: token id %d from the tokenizer is outside the model's vocabulary (%lld)",
                                          path, line, tmp.ids[i], (long long)V);
                        break;
                    }
                    if (n == cap) {
                        cap = cap ? 2 * cap : 1024;
                        ps->ids = base_xrealloc(ps->ids, (size_t)cap * sizeof(int32_t));
                    }
                    ps->ids[n++] = tmp.ids[i];
                }
            }
        } else {
            st = base_err_set(BASE_ERR_INVALID, "%s:%ld: expected an object with \"ids\" or a \"prompt\" string", path, line);
        }
        if (!st && n == before) st = base_err_set(BASE_ERR_INVALID, "%s:%ld: empty prompt", path, line);
        cJSON_Delete(o);
        if (st) break;
        if (ps->n + 2 > scap) {
            scap = scap ? 2 * scap : 64;
            ps->cu = base_xrealloc(ps->cu, (size_t)scap * sizeof(int32_t));
            ps->line = base_xrealloc(ps->line, (size_t)scap * sizeof(long));
        }
        ps->cu[ps->n] = (int32_t)before;
        ps->line[ps->n] = line;
        ps->n++;
        ps->cu[ps->n] = (int32_t)n;
    }
    tok_ids_free(&tmp);
    base_jsonl_close(r);
    if (st == BASE_ERR_EOF) st = BASE_OK;
    if (!st && ps->n == 0) st = base_err_set(BASE_ERR_INVALID, "%s: no prompts", path);
    if (st) cli_seqs_free(ps);
    return st;
}

/* Generate for prompts [p0, p1) with a cache of (p1 - p0) * G slots. */
static base_status run_chunk(gen *g, model_cache *c, const cli_seqs *ps, int p0, int p1, seq *sq, base_buf *outb) {
    int np = p1 - p0, ns = np * g->G;
    int64_t V = model_cfg(g->m)->vocab_size;
    int32_t *slots = base_xmalloc((size_t)ns * sizeof(int32_t)), *cu = base_xmalloc((size_t)(np + 1) * sizeof(int32_t));
    int32_t *tok = base_xmalloc((size_t)ns * sizeof(int32_t)), *pos = base_xmalloc((size_t)ns * sizeof(int32_t));
    int32_t *nid = base_xmalloc((size_t)ns * sizeof(int32_t));
    float *u = base_xmalloc((size_t)ns * sizeof(float)), *nlp = base_xmalloc((size_t)ns * sizeof(float));
    int *act = base_xmalloc((size_t)ns * sizeof(int));
    for (int k = 0; k <= np; k++) cu[k] = ps->cu[p0 + k] - ps->cu[p0];
    for (int k = 0; k < np; k++) slots[k] = k * g->G;
    const tensor *lg = NULL;
    base_status st = model_prefill(c, np, slots, ps->ids + ps->cu[p0], cu, &lg);
    for (int k = 0; k < np && !st; k++) {
        int64_t plen = cu[k + 1] - cu[k];
        for (int j = 0; j < g->G; j++) {
            seq *s = &sq[k * g->G + j];
            s->prompt = p0 + k, s->sample = j, s->slot = k * g->G + j, s->n = 0, s->done = 0;
            if (j) model_cache_copy(c, s->slot, k * g->G, plen);
            u[j] = rollout_uniform(g->seed, 0, (uint32_t)s->prompt, (uint32_t)j, 0);
        }
        /* the first token of every sample from the prompt's one logits row */
        for (int j = 0; j < g->G; j++) {
            seq *s = &sq[k * g->G + j];
            sample_rows(g, lg, k, 1, &u[j], &nid[0], &nlp[0]);
            push(g, s, nid[0], nlp[0], plen);
        }
    }
    while (!st) {
        int n = 0;
        for (int i = 0; i < ns; i++) {
            seq *s = &sq[i];
            if (s->done) continue;
            int64_t plen = ps->cu[s->prompt + 1] - ps->cu[s->prompt];
            act[n] = i, slots[n] = s->slot, tok[n] = s->out[s->n - 1], pos[n] = (int32_t)(plen + s->n - 1);
            u[n] = rollout_uniform(g->seed, 0, (uint32_t)s->prompt, (uint32_t)s->sample, (uint32_t)s->n);
            n++;
        }
        if (!n) break;
        if ((st = model_decode(c, n, slots, tok, pos, &lg))) break;
        sample_rows(g, lg, 0, n, u, nid, nlp);
        for (int i = 0; i < n; i++) {
            seq *s = &sq[act[i]];
            push(g, s, nid[i], nlp[i], ps->cu[s->prompt + 1] - ps->cu[s->prompt]);
        }
    }
    if (!st)
        for (int i = 0; i < ns; i++) emit(g, &sq[i], outb);
    free(slots), free(cu), free(tok), free(pos), free(nid), free(u), free(nlp), free(act);
    (void)V;
    return st;
}

static int parse_num(const char *cmd, const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    double x = strtod(v, &end);
    if (*v == 0 || *end || !(x >= lo && x <= hi)) {
        cli_usage_error(cmd, "%s: '%s' is not a number in [%g, %g]", flag, v, lo, hi);
        return 0;
    }
    *out = x;
    return 1;
}

int cli_cmd_generate(int argc, char **argv) {
    const char *dir = NULL, *in = NULL, *outp = NULL, *dev = NULL;
    double temp = 1.0, top_p = 1.0, top_k = 0, seed = 0, n = 1, max_new = 256, batch = 64;
    int greedy = 0, sampling_opt = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            return 0;
        }
        if (!strcmp(a, "--greedy")) {
            greedy = 1;
            continue;
        }
        if (i + 1 >= argc) return cli_usage_error("generate", "unexpected argument '%s'\n%s", a, USAGE);
        const char *v = argv[++i];
        int ok = 1;
        if (!strcmp(a, "--model")) dir = v;
        else if (!strcmp(a, "--in")) in = v;
        else if (!strcmp(a, "--out")) outp = v;
        else if (!strcmp(a, "--device")) dev = v;
        else if (!strcmp(a, "--temperature")) ok = parse_num("generate", a, v, 0, 1e6, &temp), sampling_opt = 1;
        else if (!strcmp(a, "--top-p")) ok = parse_num("generate", a, v, 0, 1, &top_p), sampling_opt = 1;
        else if (!strcmp(a, "--top-k")) ok = parse_num("generate", a, v, 0, 1e9, &top_k), sampling_opt = 1;
        else if (!strcmp(a, "--seed")) ok = parse_num("generate", a, v, 0, 1.8e19, &seed), sampling_opt = 1;
        else if (!strcmp(a, "--n")) ok = parse_num("generate", a, v, 1, 1e6, &n);
        else if (!strcmp(a, "--max-new-tokens")) ok = parse_num("generate", a, v, 1, 1e9, &max_new);
        else if (!strcmp(a, "--batch")) ok = parse_num("generate", a, v, 1, 1e6, &batch);
        else return cli_usage_error("generate", "unexpected argument '%s'\n%s", a, USAGE);
        if (!ok) return 2;
    }
    if (!dir || !in) return cli_usage_error("generate", "--model and --in are required\n%s", USAGE);
    if (greedy && sampling_opt)
        return cli_usage_error("generate", "--greedy excludes --temperature, --top-p, --top-k and --seed");
    if (top_k != floor(top_k) || n != floor(n) || max_new != floor(max_new) || batch != floor(batch))
        return cli_usage_error("generate", "--top-k, --n, --max-new-tokens and --batch take integers");
    gen g;
    memset(&g, 0, sizeof g);
    g.temp = greedy ? 0.0f : (float)temp;
    g.top_p = (float)top_p;
    g.top_k = (int)top_k;
    g.seed = (uint64_t)seed;
    g.G = (int)n;
    g.max_new = (int)max_new;
    const struct ops *ops = cli_device("generate", dev);
    if (!ops) return cli_device_status(dev);
    base_status st = model_load(dir, ops, NULL, &g.m);
    if (st) {
        fprintf(stderr, "grpo generate: %s\n", base_err_msg());
        return 1;
    }
    g.o = model_ops(g.m);
    const model_config *cf = model_cfg(g.m);
    char *tkp = base_path_join(dir, "tokenizer.json");
    if (base_file_exists(tkp) && (st = tok_load(dir, &g.tk))) {
        fprintf(stderr, "grpo generate: %s\n", base_err_msg());
        free(tkp);
        model_free(g.m);
        return 1;
    }
    free(tkp);
    for (int i = 0; i < cf->n_eos; i++) g.eos[g.neos++] = (int32_t)cf->eos_token_id[i];
    if (g.tk && tok_eos_id(g.tk) >= 0) g.eos[g.neos++] = tok_eos_id(g.tk);
    g.limit = cf->max_position_embeddings;
    cli_seqs ps;
    if ((st = read_prompts(&g, in, &ps))) {
        fprintf(stderr, "grpo generate: %s\n", base_err_msg());
        tok_free(g.tk);
        model_free(g.m);
        return 1;
    }
    /* chunks of prompts: G samples each, at most `batch` sequences (one
     * prompt at least) */
    int per = (int)batch / g.G;
    if (per < 1) per = 1;
    int64_t maxp = 0, maxpre = 0;
    for (int k = 0; k < ps.n; k++) {
        int64_t L = ps.cu[k + 1] - ps.cu[k];
        if (L > maxp) maxp = L;
    }
    for (int k = 0; k < ps.n; k += per) {
        int k1 = k + per < ps.n ? k + per : ps.n;
        if (ps.cu[k1] - ps.cu[k] > maxpre) maxpre = ps.cu[k1] - ps.cu[k];
    }
    if (maxp >= g.limit) {
        st = base_err_set(BASE_ERR_LIMIT, "%s: a prompt has %lld tokens; the model takes %lld positions", in,
                          (long long)maxp, (long long)g.limit);
    }
    int slots = per * g.G;
    int64_t max_len = maxp + g.max_new < g.limit ? maxp + g.max_new : g.limit;
    model_cache *c = NULL;
    model_cache_limits lim = {.slots = slots, .max_len = max_len, .max_batch = slots, .max_prefill = maxpre};
    if (!st) st = model_cache_new(g.m, &lim, &c);
    seq *sq = base_xcalloc((size_t)slots, sizeof(seq));
    for (int i = 0; i < slots; i++) {
        sq[i].out = base_xmalloc((size_t)g.max_new * sizeof(int32_t));
        sq[i].lp = base_xmalloc((size_t)g.max_new * sizeof(float));
    }
    g.dmem = g.o->alloc((size_t)slots * 12);
    g.u = tensor_make(g.dmem, TENSOR_F32, g.o->device, 1, (int64_t[]){slots});
    g.ids = tensor_make((char *)g.dmem + (size_t)slots * 4, TENSOR_I32, g.o->device, 1, (int64_t[]){slots});
    g.lp = tensor_make((char *)g.dmem + (size_t)slots * 8, TENSOR_F32, g.o->device, 1, (int64_t[]){slots});
    base_buf outb = {0}; /* --out: everything, written atomically at the end */
    for (int k = 0; k < ps.n && !st; k += per) {
        int k1 = k + per < ps.n ? k + per : ps.n;
        if (!outp) outb.len = 0;
        st = run_chunk(&g, c, &ps, k, k1, sq, &outb);
        if (st) base_err_wrap(st, "%s:%ld", in, ps.line[k]);
        else if (!outp && outb.len) fwrite(outb.data, 1, outb.len, stdout);
    }
    if (!st && outp) st = base_write_file_atomic(outp, outb.data ? outb.data : "", outb.len);
    if (st) fprintf(stderr, "grpo generate: %s\n", base_err_msg());
    base_buf_free(&outb);
    for (int i = 0; i < slots; i++) free(sq[i].out), free(sq[i].lp);
    free(sq);
    g.o->free(g.dmem);
    model_cache_free(c);
    cli_seqs_free(&ps);
    tok_free(g.tk);
    model_free(g.m);
    return st ? 1 : 0;
}
