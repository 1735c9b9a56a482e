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
 * Generation runs through the rollout engine (src/rollout): the uniform
 * draw of completion token i of sample J of prompt K is
 * rollout_uniform(seed, 0, K, J, i), Philox keyed by (seed, prompt, sample,
 * position), and each row's numerics do not depend on the other rows, so
 * the output does not depend on --batch or on the other prompts.
 * Exit status: 0 done; 1 bad input; 2 bad usage.
 */
#include "cli/cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_device.h"
#include "cli/model_cli.h"
#include "recipe/recipe.h"
#include "rollout/rollout.h"
#include "tok/tok.h"

static const char *USAGE =
    "usage: grpo generate --model DIR --in prompts.jsonl\n"
    "                     [--greedy | --temperature T --top-p P --top-k K --seed S]\n"
    "                     [--n G] [--max-new-tokens N] [--batch B] [--out FILE] [--device D]\n"
    "                     [--precision f32|bf16|fp8]\n"
    "Input lines have \"ids\" or \"prompt\" (text; needs DIR/tokenizer.json). Output lines:\n"
    "index, sample, completion_ids, completion (with a tokenizer), logprobs, finish_reason.\n"
    "Defaults: temperature 1, top-p 1, top-k 0 (off), seed 0, n 1, max-new-tokens 256,\n"
    "batch 64 sequences decoded together.\n" CLI_DEVICE_USAGE CLI_PRECISION_USAGE;

typedef struct {
    model *m;
    tok_tokenizer *tk;
} gen;

static void emit(const gen *g, int prompt, int sample, const rollout_completion *c, base_buf *outb) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "index", prompt);
    cJSON_AddNumberToObject(o, "sample", sample);
    cJSON *ids = cJSON_AddArrayToObject(o, "completion_ids");
    for (int64_t i = 0; i < c->len; i++) cJSON_AddItemToArray(ids, cJSON_CreateNumber(c->ids[i]));
    if (g->tk) {
        /* without the final stop token */
        int64_t n = c->len - (c->len > 0 && c->finish == ROLLOUT_FINISH_STOP ? 1 : 0);
        char *text = tok_decode_str(g->tk, c->ids, n, 0, NULL);
        cJSON_AddStringToObject(o, "completion", text);
        free(text);
    }
    cJSON *lps = cJSON_AddArrayToObject(o, "logprobs");
    for (int64_t i = 0; i < c->len; i++) cJSON_AddItemToArray(lps, cJSON_CreateNumber(c->logp[i]));
    cJSON_AddStringToObject(o, "finish_reason", rollout_finish_name(c->finish));
    char *line = base_json_print(o, 0);
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

/* A flag that takes the value of the eval stage's recipe key `key`
 * (temperature, top_p, top_k, num_generations, max_completion_length):
 * checked against that key's range, as a recipe value is. */
static int parse_key(const char *flag, const char *key, const char *v, double *out) {
    char *end, what[160];
    double x = strtod(v, &end);
    if (*v == 0 || *end || !isfinite(x)) {
        cli_usage_error("generate", "%s: '%s' is not a number", flag, v);
        return 0;
    }
    snprintf(what, sizeof what, "%s %s", flag, v);
    if (recipe_check_number("eval", key, x, what)) {
        cli_usage_error("generate", "%s", base_err_msg());
        return 0;
    }
    *out = x;
    return 1;
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
    const char *dir = NULL, *in = NULL, *outp = NULL, *dev = NULL, *prec = NULL;
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
        else if (!strcmp(a, "--precision")) prec = v;
        else if (!strcmp(a, "--temperature")) ok = parse_key(a, "temperature", v, &temp), sampling_opt = 1;
        else if (!strcmp(a, "--top-p")) ok = parse_key(a, "top_p", v, &top_p), sampling_opt = 1;
        else if (!strcmp(a, "--top-k")) ok = parse_key(a, "top_k", v, &top_k), sampling_opt = 1;
        else if (!strcmp(a, "--seed")) ok = parse_num("generate", a, v, 0, 1.8e19, &seed), sampling_opt = 1;
        else if (!strcmp(a, "--n")) ok = parse_key(a, "num_generations", v, &n);
        else if (!strcmp(a, "--max-new-tokens")) ok = parse_key(a, "max_completion_length", v, &max_new);
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
    const struct ops *ops = cli_device("generate", dev);
    if (!ops) return cli_device_status(dev);
    model_load_opts lo = {.frozen = 1}; /* nothing trains: compute weights only */
    if (cli_precision("generate", prec, &lo)) return 2;
    base_status st = model_load(dir, ops, &lo, &g.m);
    if (st) {
        fprintf(stderr, "grpo generate: %s\n", base_err_msg());
        return 1;
    }
    const model_config *cf = model_cfg(g.m);
    char *tkp = base_path_join(dir, "tokenizer.json");
    if (base_file_exists(tkp) && (st = tok_load(dir, &g.tk))) {
        fprintf(stderr, "grpo generate: %s\n", base_err_msg());
        free(tkp);
        model_free(g.m);
        return 1;
    }
    free(tkp);
    int32_t eos[MODEL_MAX_EOS + 1];
    int neos = 0;
    for (int i = 0; i < cf->n_eos; i++) eos[neos++] = (int32_t)cf->eos_token_id[i];
    if (g.tk && tok_eos_id(g.tk) >= 0) eos[neos++] = tok_eos_id(g.tk);
    cli_seqs ps;
    if ((st = read_prompts(&g, in, &ps))) {
        fprintf(stderr, "grpo generate: %s\n", base_err_msg());
        tok_free(g.tk);
        model_free(g.m);
        return 1;
    }
    /* chunks of prompts: G samples each, at most `batch` sequences (one
     * prompt at least), through the rollout engine */
    int G = (int)n, per = (int)batch / G;
    if (per < 1) per = 1;
    int64_t maxp = 0, limit = cf->max_position_embeddings;
    for (int k = 0; k < ps.n; k++)
        if (ps.cu[k + 1] - ps.cu[k] > maxp) maxp = ps.cu[k + 1] - ps.cu[k];
    if (maxp >= limit)
        st = base_err_set(BASE_ERR_LIMIT, "%s: a prompt has %lld tokens; the model takes %lld positions", in,
                          (long long)maxp, (long long)limit);
    rollout_engine *eng = NULL;
    rollout_limits rl = {.max_seqs = per * G, .max_prompts = per, .max_group = G, .max_prompt_len = maxp,
                         .max_new_tokens = (int64_t)max_new};
    if (!st) st = rollout_new(g.m, &rl, &eng);
    const int32_t **pp = base_xcalloc((size_t)per, sizeof *pp);
    int32_t *pl = base_xcalloc((size_t)per, sizeof *pl);
    base_buf outb = {0}; /* --out: everything, written atomically at the end */
    for (int k = 0; k < ps.n && !st; k += per) {
        int k1 = k + per < ps.n ? k + per : ps.n;
        for (int i = k; i < k1; i++) {
            pp[i - k] = ps.ids + ps.cu[i];
            pl[i - k] = ps.cu[i + 1] - ps.cu[i];
        }
        rollout_request rq = {.n_prompts = k1 - k, .prompt_ids = pp, .prompt_len = pl, .G = G,
                              .sampling = {greedy ? 0.0f : (float)temp, (float)top_p, (int)top_k, 0.0f},
                              .max_new_tokens = (int64_t)max_new, .stop_ids = eos, .n_stop_ids = neos,
                              .seed = (uint64_t)seed, .step = 0, .prompt_base = (uint32_t)k};
        rollout_result res;
        st = rollout_generate(eng, &rq, &res);
        if (st) {
            base_err_wrap(st, "%s:%ld", in, ps.line[k]);
            break;
        }
        if (!outp) outb.len = 0;
        for (int i = 0; i < res.n; i++) emit(&g, k + i / G, i % G, &res.out[i], &outb);
        if (!outp && outb.len) fwrite(outb.data, 1, outb.len, stdout);
    }
    if (!st && outp) st = base_write_file_atomic(outp, outb.data ? outb.data : "", outb.len);
    if (st) fprintf(stderr, "grpo generate: %s\n", base_err_msg());
    base_buf_free(&outb);
    free(pp), free(pl);
    rollout_free(eng);
    cli_seqs_free(&ps);
    tok_free(g.tk);
    model_free(g.m);
    return st ? 1 : 0;
}
