/*
 * The rollout engine: continuous batching over the latent KV cache.
 *
 * Slots: the cache holds max_seqs sequences. A prompt is admitted when G
 * slots are free: it is prefilled once into the first slot, its cache rows
 * are copied to the other G - 1 (the prompt's compute is shared; memory is
 * per sample), and every sample's first token is drawn from the same
 * prefill logits. Then all live sequences decode together, one token per
 * step; a finished sequence frees its slot and waiting prompts are
 * admitted before the next step. Token k of sample g of prompt p (global
 * index prompt_base + p) uses the draw rollout_uniform(seed, step,
 * prompt_base + p, g, k), and the model's per-row numerics do not depend
 * on which rows share a step, so a completion does not depend on batch
 * composition or on max_seqs.
 *
 * Positions: prompt tokens sit at 0..P-1, generated token k at P + k. The
 * logits for token k + 1 come from feeding token k at position P + k.
 *
 * Sampling: on the host (rollout_sample_token) with the host backend, and
 * with a device backend whenever the request truncates (top-k, top-p,
 * min-p). A device backend with plain sampling (temperature or greedy, no
 * truncation) draws on the device with the op table's `sample` (the same
 * inverse-CDF draw with the same uniforms; its sums run in another order,
 * so a draw within rounding of a boundary may differ from the host
 * sampler's): only ids and log-probs cross to the host, not [n, V] logits.
 */
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "rollout.h"
#include "tok/tok.h"

#define STOP_MAX_BYTES 256 /* longest stop string accepted */

typedef struct {
    int active;
    int prompt, sample; /* indices in the request */
    int64_t plen, len;  /* prompt length, tokens generated */
    int32_t last;       /* last generated token (input of the next step) */
    rollout_completion *c;
    int32_t *ids;
    float *logp;
} seq;

struct rollout_engine {
    model *m;
    const struct ops *ops;
    model_cache *cache;
    rollout_limits lim;
    int64_t V;
    seq *seqs;                 /* [max_seqs], index = cache slot */
    rollout_completion *comps; /* [max_prompts * max_group] */
    int32_t *ids_store;        /* [max_prompts * max_group * max_new_tokens] */
    float *logp_store;
    float *host_logits;  /* [max_seqs, V] when the model is not on the host */
    void *dev_smp;       /* device [3, max_seqs]: uniforms, ids, log-probs (device sampling) */
    float *host_u;       /* [max_seqs] uniforms of one device sampling call */
    float *probs;        /* [max_seqs, V] sampling scratch */
    int32_t *order;      /* [max_seqs, V] */
    int32_t *b_slots, *b_tokens, *b_pos, *b_cu, *b_ids; /* step batches */
    int *b_seq, *group;
    int32_t *tok;       /* [max_seqs] sampled tokens of a step */
    float *lp;          /* [max_seqs] their log-probabilities */
    float *rows_g;      /* [max_seqs, V] prefill logits repeated per sample */
    int64_t max_prefill; /* prompt tokens per prefill call */
    base_buf win_new, win_old; /* stop-string windows */
};

const char *rollout_finish_name(rollout_finish f) {
    return f == ROLLOUT_FINISH_LENGTH ? "length" : "stop";
}

base_status rollout_new(model *m, const rollout_limits *lim, rollout_engine **out) {
    *out = NULL;
    if (lim->max_seqs < 1 || lim->max_group < 1 || lim->max_prompts < 1 || lim->max_prompt_len < 1 ||
        lim->max_new_tokens < 1)
        return base_err_set(BASE_ERR_INVALID, "rollout: limits must be positive");
    if (lim->max_seqs < lim->max_group)
        return base_err_set(BASE_ERR_INVALID,
                            "rollout: max_seqs (%d) must hold a whole group (G = %d)", lim->max_seqs,
                            lim->max_group);
    const model_config *cfg = model_cfg(m);
    model_cache_limits cl = {
        .slots = lim->max_seqs,
        .max_len = lim->max_prompt_len + lim->max_new_tokens,
        .max_batch = lim->max_seqs,
        .max_prefill = lim->max_prompt_len * (lim->max_seqs / lim->max_group),
    };
    if (cl.max_prefill < lim->max_prompt_len) cl.max_prefill = lim->max_prompt_len;
    rollout_engine *e = base_xcalloc(1, sizeof *e);
    e->m = m;
    e->ops = model_ops(m);
    e->lim = *lim;
    e->V = cfg->vocab_size;
    base_status s = model_cache_new(m, &cl, &e->cache);
    if (s) {
        free(e);
        return base_err_wrap(s, "rollout");
    }
    size_t ns = (size_t)lim->max_seqs, nc = (size_t)lim->max_prompts * (size_t)lim->max_group;
    e->seqs = base_xcalloc(ns, sizeof *e->seqs);
    e->comps = base_xcalloc(nc, sizeof *e->comps);
    e->ids_store = base_xmalloc(nc * (size_t)lim->max_new_tokens * sizeof(int32_t));
    e->logp_store = base_xmalloc(nc * (size_t)lim->max_new_tokens * sizeof(float));
    if (e->ops->device != TENSOR_CPU) {
        e->host_logits = base_xmalloc(ns * (size_t)e->V * sizeof(float));
        e->dev_smp = e->ops->alloc(3 * ns * sizeof(float));
        e->host_u = base_xmalloc(ns * sizeof(float));
    }
    e->probs = base_xmalloc(ns * (size_t)e->V * sizeof(float));
    e->order = base_xmalloc(ns * (size_t)e->V * sizeof(int32_t));
    e->b_slots = base_xmalloc(ns * sizeof(int32_t));
    e->b_tokens = base_xmalloc(ns * sizeof(int32_t));
    e->b_pos = base_xmalloc(ns * sizeof(int32_t));
    e->b_cu = base_xmalloc((ns + 1) * sizeof(int32_t));
    e->b_seq = base_xmalloc(ns * sizeof(int));
    e->b_ids = base_xmalloc((size_t)cl.max_prefill * sizeof(int32_t));
    e->group = base_xmalloc(ns * sizeof(int));
    e->tok = base_xmalloc(ns * sizeof(int32_t));
    e->lp = base_xmalloc(ns * sizeof(float));
    e->rows_g = base_xmalloc(ns * (size_t)e->V * sizeof(float));
    e->max_prefill = cl.max_prefill;
    *out = e;
    return BASE_OK;
}

void rollout_free(rollout_engine *e) {
    if (!e) return;
    model_cache_free(e->cache);
    base_buf_free(&e->win_new);
    base_buf_free(&e->win_old);
    free(e->group), free(e->tok), free(e->lp), free(e->rows_g);
    free(e->seqs), free(e->comps), free(e->ids_store), free(e->logp_store), free(e->host_logits);
    if (e->dev_smp) e->ops->free(e->dev_smp);
    free(e->host_u);
    free(e->probs), free(e->order), free(e->b_slots), free(e->b_tokens), free(e->b_pos);
    free(e->b_cu), free(e->b_seq), free(e->b_ids);
    free(e);
}

/* Host view of the logits rows (downloaded when the model is on a device). */
static const float *host_rows(rollout_engine *e, const tensor *logits, int n) {
    if (e->ops->device == TENSOR_CPU) return logits->data;
    e->ops->download(e->host_logits, logits->data, (size_t)n * (size_t)e->V * sizeof(float));
    return e->host_logits;
}

/* Did the token just appended complete a stop string? Decodes the last k
 * tokens with and without the newest one: a stop string found only in the
 * longer text ends in the newest token. k tokens cover the longest stop
 * string since every token decodes to at least one byte. */
static int hits_stop_string(rollout_engine *e, const rollout_request *r, const seq *q) {
    if (!r->n_stop_strings || !r->tok) return 0;
    size_t maxlen = 0;
    for (int i = 0; i < r->n_stop_strings; i++)
        if (strlen(r->stop_strings[i]) > maxlen) maxlen = strlen(r->stop_strings[i]);
    int64_t k = (int64_t)maxlen + 1;
    if (k > q->len) k = q->len;
    const int32_t *w = q->ids + q->len - k;
    base_buf_reset(&e->win_new);
    base_buf_reset(&e->win_old);
    tok_decode(r->tok, w, k, 0, &e->win_new);
    tok_decode(r->tok, w, k - 1, 0, &e->win_old);
    base_buf_append(&e->win_new, "", 0); /* NUL-terminate even when empty */
    base_buf_append(&e->win_old, "", 0);
    for (int i = 0; i < r->n_stop_strings; i++)
        if (strstr(e->win_new.data, r->stop_strings[i]) && !strstr(e->win_old.data, r->stop_strings[i]))
            return 1;
    return 0;
}

/* Record a sampled token for sequence q; returns 1 when q finished. */
static int push_token(rollout_engine *e, const rollout_request *r, int slot, int32_t tok, float lp) {
    seq *q = &e->seqs[slot];
    q->ids[q->len] = tok;
    q->logp[q->len] = lp;
    q->len++;
    q->last = tok;
    q->c->len = q->len;
    for (int i = 0; i < r->n_stop_ids; i++)
        if (tok == r->stop_ids[i]) {
            q->c->finish = ROLLOUT_FINISH_STOP;
            return 1;
        }
    if (hits_stop_string(e, r, q)) {
        q->c->finish = ROLLOUT_FINISH_STOP;
        return 1;
    }
    if (q->len >= r->max_new_tokens) {
        q->c->finish = ROLLOUT_FINISH_LENGTH;
        return 1;
    }
    return 0;
}

typedef struct {
    rollout_engine *e;
    const rollout_request *r;
    const float *rows;
    int n;
    int32_t *tok;
    float *lp;
} sample_job;

/* Draw the next token of batch row i (sequence b_seq[i]) from rows[i]. */
static void sample_row(void *ctx, int64_t i, int worker) {
    (void)worker;
    sample_job *j = ctx;
    rollout_engine *e = j->e;
    const seq *q = &e->seqs[e->b_seq[i]];
    float u = rollout_uniform(j->r->seed, j->r->step, j->r->prompt_base + (uint32_t)q->prompt,
                              (uint32_t)q->sample, (uint32_t)q->len);
    size_t off = (size_t)i * (size_t)e->V;
    j->tok[i] = rollout_sample_token(j->rows + off, e->V, &j->r->sampling, u, &j->lp[i], e->probs + off,
                                     e->order + off);
}

static void sample_rows(rollout_engine *e, const rollout_request *r, const float *rows, int n,
                        int32_t *tok, float *lp) {
    sample_job j = {e, r, rows, n, tok, lp};
#pragma omp parallel for schedule(static) if (n > 1)
    for (int i = 0; i < n; i++) sample_row(&j, i, 0);
}

/* Sample on the device? (a device backend and no truncation) */
static int device_sampling(const rollout_engine *e, const rollout_request *r) {
    const rollout_sampling *sp = &r->sampling;
    int truncating = (sp->top_k > 0 && sp->top_k < e->V) || (sp->top_p > 0 && sp->top_p < 1) || sp->min_p > 0;
    return e->ops->device != TENSOR_CPU && e->ops->sample && !truncating;
}

/* Device sampling of n rows of `logits` (row stride `stride` elements: 0
 * repeats one row) for the sequences in slots[0..n); tokens and log-probs
 * to tok/lp (host). */
static void sample_device(rollout_engine *e, const rollout_request *r, const tensor *logits, const float *row0,
                          int64_t stride, const int *slots, int n, int32_t *tok, float *lp) {
    const struct ops *o = e->ops;
    size_t ns = (size_t)e->lim.max_seqs;
    for (int i = 0; i < n; i++) {
        const seq *q = &e->seqs[slots[i]];
        e->host_u[i] = rollout_uniform(r->seed, r->step, r->prompt_base + (uint32_t)q->prompt, (uint32_t)q->sample,
                                       (uint32_t)q->len);
    }
    int64_t nn = n;
    tensor u = tensor_make(e->dev_smp, TENSOR_F32, o->device, 1, &nn);
    tensor ids = tensor_make((float *)e->dev_smp + ns, TENSOR_I32, o->device, 1, &nn);
    tensor lps = tensor_make((float *)e->dev_smp + 2 * ns, TENSOR_F32, o->device, 1, &nn);
    tensor lg = *logits;
    lg.data = (void *)row0;
    lg.shape[0] = n;
    lg.stride[0] = stride;
    o->upload(u.data, e->host_u, (size_t)n * sizeof(float));
    o->sample(&ids, &lps, &lg, &u, r->sampling.temperature, 0, 1.0f);
    o->download(tok, ids.data, (size_t)n * sizeof(int32_t));
    o->download(lp, lps.data, (size_t)n * sizeof(float));
}

static base_status check_request(const rollout_engine *e, const rollout_request *r) {
    if (r->n_prompts < 0 || r->n_prompts > e->lim.max_prompts)
        return base_err_set(BASE_ERR_INVALID, "rollout: %d prompts, at most %d", r->n_prompts,
                            e->lim.max_prompts);
    if (r->G < 1 || r->G > e->lim.max_group)
        return base_err_set(BASE_ERR_INVALID, "rollout: G = %d, expected 1..%d", r->G, e->lim.max_group);
    if (r->max_new_tokens < 1 || r->max_new_tokens > e->lim.max_new_tokens)
        return base_err_set(BASE_ERR_INVALID, "rollout: max_new_tokens %lld, expected 1..%lld",
                            (long long)r->max_new_tokens, (long long)e->lim.max_new_tokens);
    for (int p = 0; p < r->n_prompts; p++) {
        if (r->prompt_len[p] < 1 || r->prompt_len[p] > e->lim.max_prompt_len)
            return base_err_set(BASE_ERR_INVALID, "rollout: prompt %d has %d tokens, expected 1..%lld", p,
                                r->prompt_len[p], (long long)e->lim.max_prompt_len);
        for (int32_t t = 0; t < r->prompt_len[p]; t++)
            if (r->prompt_ids[p][t] < 0 || r->prompt_ids[p][t] >= e->V)
                return base_err_set(BASE_ERR_INVALID, "rollout: prompt %d token %d is id %d, outside [0, %lld)",
                                    p, t, r->prompt_ids[p][t], (long long)e->V);
    }
    for (int i = 0; i < r->n_stop_strings; i++) {
        size_t n = strlen(r->stop_strings[i]);
        if (n == 0 || n > STOP_MAX_BYTES)
            return base_err_set(BASE_ERR_INVALID, "rollout: stop string %d has %zu bytes, expected 1..%d", i,
                                n, STOP_MAX_BYTES);
    }
    if (r->n_stop_strings && !r->tok)
        return base_err_set(BASE_ERR_INVALID, "rollout: stop strings need a tokenizer");
    return BASE_OK;
}

base_status rollout_generate(rollout_engine *e, const rollout_request *r, rollout_result *res) {
    memset(res, 0, sizeof *res);
    base_status s = check_request(e, r);
    if (s) return s;
    double t0 = base_now();
    int G = r->G, S = e->lim.max_seqs;
    for (int i = 0; i < S; i++) e->seqs[i].active = 0;
    int n_done = 0, n_total = r->n_prompts * G, next_prompt = 0, free_slots = S;
    int64_t new_tokens = 0, prefill_tokens = 0, steps = 0;
    int32_t *tok = e->tok;
    float *lp = e->lp;
    int *group = e->group;
    while (n_done < n_total) {
        /* admit waiting prompts into free slots, one prefill for all */
        int np = 0;
        int64_t ntok = 0;
        e->b_cu[0] = 0;
        while (next_prompt < r->n_prompts && free_slots >= G &&
               ntok + r->prompt_len[next_prompt] <= e->max_prefill) {
            int p = next_prompt++;
            int taken = 0;
            for (int slot = 0; slot < S && taken < G; slot++) {
                seq *q = &e->seqs[slot];
                if (q->active) continue;
                size_t ci = (size_t)p * (size_t)G + (size_t)taken;
                q->active = 1;
                q->prompt = p;
                q->sample = taken;
                q->plen = r->prompt_len[p];
                q->len = 0;
                q->c = &e->comps[ci];
                q->ids = e->ids_store + ci * (size_t)e->lim.max_new_tokens;
                q->logp = e->logp_store + ci * (size_t)e->lim.max_new_tokens;
                q->c->ids = q->ids;
                q->c->logp = q->logp;
                q->c->len = 0;
                q->c->finish = ROLLOUT_FINISH_LENGTH;
                if (taken == 0) e->b_slots[np] = slot;
                group[np * G + taken] = slot; /* the G slots of admitted prompt np */
                taken++;
            }
            free_slots -= G;
            memcpy(e->b_ids + ntok, r->prompt_ids[p], (size_t)r->prompt_len[p] * sizeof(int32_t));
            ntok += r->prompt_len[p];
            e->b_cu[np + 1] = (int32_t)ntok;
            np++;
        }
        if (np) {
            const tensor *logits;
            s = model_prefill(e->cache, np, e->b_slots, e->b_ids, e->b_cu, &logits);
            if (s) goto fail;
            prefill_tokens += ntok;
            /* share the prompt's cache with its other samples, then draw
             * every sample's first token from the prompt's logits */
            for (int i = 0; i < np; i++)
                for (int g = 1; g < G; g++)
                    model_cache_copy(e->cache, group[i * G + g], group[i * G], e->seqs[group[i * G]].plen);
            for (int i = 0; i < np * G; i++) e->b_seq[i] = group[i];
            if (device_sampling(e, r)) {
                for (int i = 0; i < np; i++) /* the prompt's row, once per sample */
                    sample_device(e, r, logits, (const float *)logits->data + (int64_t)i * logits->stride[0], 0,
                                  group + i * G, G, tok + i * G, lp + i * G);
            } else {
                const float *rows = host_rows(e, logits, np);
                for (int i = 0; i < np * G; i++)
                    memcpy(e->rows_g + (size_t)i * (size_t)e->V, rows + (size_t)(i / G) * (size_t)e->V,
                           (size_t)e->V * sizeof(float));
                sample_rows(e, r, e->rows_g, np * G, tok, lp);
            }
            for (int i = 0; i < np * G; i++) {
                int slot = group[i];
                new_tokens++;
                if (push_token(e, r, slot, tok[i], lp[i])) {
                    e->seqs[slot].active = 0;
                    free_slots++;
                    n_done++;
                }
            }
            continue; /* admit more before decoding if slots freed */
        }
        /* one decode step over every live sequence */
        int n = 0;
        for (int slot = 0; slot < S; slot++) {
            seq *q = &e->seqs[slot];
            if (!q->active) continue;
            e->b_seq[n] = slot;
            e->b_slots[n] = slot;
            e->b_tokens[n] = q->last;
            e->b_pos[n] = (int32_t)(q->plen + q->len - 1);
            n++;
        }
        if (!n) {
            s = base_err_set(BASE_ERR_INVALID, "rollout: no sequence can be admitted (G = %d, %d slots)", G, S);
            goto fail;
        }
        const tensor *logits;
        s = model_decode(e->cache, n, e->b_slots, e->b_tokens, e->b_pos, &logits);
        if (s) goto fail;
        steps++;
        if (device_sampling(e, r))
            sample_device(e, r, logits, (const float *)logits->data, logits->stride[0], e->b_seq, n, tok, lp);
        else
            sample_rows(e, r, host_rows(e, logits, n), n, tok, lp);
        for (int i = 0; i < n; i++) {
            int slot = e->b_seq[i];
            new_tokens++;
            if (push_token(e, r, slot, tok[i], lp[i])) {
                e->seqs[slot].active = 0;
                free_slots++;
                n_done++;
            }
        }
    }
    res->n = n_total;
    res->out = e->comps;
    res->new_tokens = new_tokens;
    res->prefill_tokens = prefill_tokens;
    res->decode_steps = steps;
    res->seconds = base_now() - t0;
    return BASE_OK;
fail:
    return base_err_wrap(s, "rollout");
}
