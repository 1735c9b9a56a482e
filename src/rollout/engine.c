/*
 * The rollout engine: continuous batching over the latent KV cache.
 *
 * Slots and pages: the cache has max_seqs slots (block-table rows) and a
 * pool of pages of page_size positions (model.h). A prompt of P tokens is
 * admitted when G slots are free and its group's worst case fits (below):
 * its floor(P / page_size) full pages are allocated once and mapped into
 * the G samples' block tables (reference count G), each sample gets its own
 * page for the prompt's last partial page; the prompt is prefilled once
 * into the first sample's slot and the partial page copied to the others
 * (model_cache_copy skips the shared pages), and every sample's first token
 * is drawn from the same prefill logits. Then all live sequences decode
 * together, one token per step; a sequence about to write the first
 * position of a page takes a fresh page first. A finished sequence drops
 * its page references (a page returns to the free list at zero) and frees
 * its slot; waiting prompts are admitted before the next step.
 *
 * Page budget without preemption: a sequence writes positions 0..T-1 at
 * most, T = min(P + max_new_tokens - 1, max_position - 1) (the last token
 * is never fed back), so a group needs at most F + G (ceil(T / page_size)
 * - F) pages, F = floor(P / page_size). Admission reserves that worst case
 * (pages allocated at admission plus pages promised for later), and frees
 * the unused promise when a sequence finishes early. The free list always
 * holds the promised pages, so a live sequence never waits for a page and
 * nothing is preempted or recomputed; the price is admitting groups by
 * their worst case rather than their expected length. Host bookkeeping
 * only (reference counts, a free stack, block tables), all allocated in
 * rollout_new. Token k of sample g of prompt p (global
 * index prompt_base + p) uses the draw rollout_uniform(seed, step,
 * prompt_base + p, g, k), and the model's per-row numerics do not depend
 * on which rows share a step, so a completion does not depend on batch
 * composition or on max_seqs.
 *
 * Positions: prompt tokens sit at 0..P-1, generated token k at P + k. The
 * logits for token k + 1 come from feeding token k at position P + k. A
 * sequence that reaches the model's last position (max_position_embeddings)
 * stops with "length".
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
    int32_t *pages;     /* [mb] its block table (engine storage) */
    int64_t npages;     /* pages mapped */
    int64_t promised;   /* pages reserved for it, not yet taken */
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
    void *dev;           /* device: u [max_seqs] f32, ids [max_seqs] i32, logp [max_seqs] f32 */
    float *u;            /* host [max_seqs]: the draws of one sample call */
    int32_t *b_slots, *b_tokens, *b_pos, *b_cu, *b_ids; /* step batches */
    int *b_seq, *group;
    int32_t *tok;       /* [max_seqs] sampled tokens of a step */
    float *lp;          /* [max_seqs] their log-probabilities */
    int64_t max_prefill; /* prompt tokens per prefill call */
    int64_t max_pos;     /* positions the model takes (rope table) */
    int64_t ps, np, mb;  /* page size, pages in the pool, block-table entries per slot */
    int32_t *page_ref;   /* [np] references (block tables naming the page) */
    int32_t *free_pages; /* [np] stack of pages with no reference */
    int64_t nfree, promised, in_use, peak_pages;
    int64_t graph_replays; /* the cache's count at the end of the last call */
    int32_t *table_store; /* [max_seqs * mb] */
    base_buf win_new, win_old; /* stop-string windows */
};

float rollout_uniform(uint64_t seed, uint32_t step, uint32_t prompt, uint32_t sample, uint32_t position) {
    base_rng r;
    base_rng_init(&r, seed, step, prompt, sample);
    return base_rng_uniform(&r, position);
}

const char *rollout_finish_name(rollout_finish f) {
    return f == ROLLOUT_FINISH_LENGTH ? "length" : "stop";
}

void rollout_cache_limits(const model_config *cfg, const rollout_limits *lim, model_cache_limits *out) {
    model_cache_limits cl = {
        .slots = lim->max_seqs,
        .max_len = lim->max_prompt_len + lim->max_new_tokens < cfg->max_position_embeddings
                       ? lim->max_prompt_len + lim->max_new_tokens
                       : cfg->max_position_embeddings,
        .max_batch = lim->max_seqs,
        .max_prefill = lim->max_prompt_len * (lim->max_seqs / (lim->max_group > 0 ? lim->max_group : 1)),
        .page_size = lim->page_size ? lim->page_size : MODEL_PAGE_SIZE,
        .no_graphs = lim->no_graphs,
    };
    int64_t mb = (cl.max_len + cl.page_size - 1) / cl.page_size;
    cl.pages = lim->max_pages ? lim->max_pages : (int64_t)lim->max_seqs * mb;
    if (cl.max_prefill < lim->max_prompt_len) cl.max_prefill = lim->max_prompt_len;
    *out = cl;
}

/* The sampler's device buffer: per sequence a uniform (f32), the sampled
 * token (i32) and its logprob (f32). */
#define SAMPLER_BYTES_PER_SEQ 12

size_t rollout_bytes(const model_config *cfg, const rollout_limits *lim, const model_lora_config *lc,
                     model_precision prec) {
    model_cache_limits cl;
    rollout_cache_limits(cfg, lim, &cl);
    return model_cache_bytes_p(cfg, &cl, lc, prec) + (size_t)lim->max_seqs * SAMPLER_BYTES_PER_SEQ;
}

size_t rollout_bytes_ep(const model_config *cfg, const rollout_limits *lim, const model_lora_config *lc,
                        model_precision prec, int ep_size) {
    model_cache_limits cl;
    rollout_cache_limits(cfg, lim, &cl);
    return model_cache_bytes_ep(cfg, &cl, lc, prec, ep_size) + (size_t)lim->max_seqs * SAMPLER_BYTES_PER_SEQ;
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
    if (lim->page_size < 0 || lim->max_pages < 0)
        return base_err_set(BASE_ERR_INVALID, "rollout: page_size and max_pages must be >= 0");
    model_cache_limits cl;
    rollout_cache_limits(cfg, lim, &cl);
    int64_t mb = (cl.max_len + cl.page_size - 1) / cl.page_size;
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
    e->dev = e->ops->alloc(ns * SAMPLER_BYTES_PER_SEQ);
    e->u = base_xmalloc(ns * sizeof(float));
    e->b_slots = base_xmalloc(ns * sizeof(int32_t));
    e->b_tokens = base_xmalloc(ns * sizeof(int32_t));
    e->b_pos = base_xmalloc(ns * sizeof(int32_t));
    e->b_cu = base_xmalloc((ns + 1) * sizeof(int32_t));
    e->b_seq = base_xmalloc(ns * sizeof(int));
    e->b_ids = base_xmalloc((size_t)cl.max_prefill * sizeof(int32_t));
    e->group = base_xmalloc(ns * sizeof(int));
    e->tok = base_xmalloc(ns * sizeof(int32_t));
    e->lp = base_xmalloc(ns * sizeof(float));
    e->max_prefill = cl.max_prefill;
    e->max_pos = cfg->max_position_embeddings;
    e->ps = cl.page_size;
    e->np = cl.pages;
    e->mb = mb;
    e->page_ref = base_xcalloc((size_t)e->np, sizeof(int32_t));
    e->free_pages = base_xmalloc((size_t)e->np * sizeof(int32_t));
    e->table_store = base_xmalloc(ns * (size_t)mb * sizeof(int32_t));
    for (size_t i = 0; i < ns; i++) e->seqs[i].pages = e->table_store + i * (size_t)mb;
    *out = e;
    return BASE_OK;
}

void rollout_free(rollout_engine *e) {
    if (!e) return;
    model_cache_free(e->cache);
    base_buf_free(&e->win_new);
    base_buf_free(&e->win_old);
    e->ops->free(e->dev);
    free(e->group), free(e->tok), free(e->lp), free(e->u);
    free(e->seqs), free(e->comps), free(e->ids_store), free(e->logp_store);
    free(e->b_slots), free(e->b_tokens), free(e->b_pos);
    free(e->b_cu), free(e->b_seq), free(e->b_ids);
    free(e->page_ref), free(e->free_pages), free(e->table_store);
    free(e);
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
    if (q->len >= r->max_new_tokens || q->plen + q->len >= e->max_pos) {
        q->c->finish = ROLLOUT_FINISH_LENGTH;
        return 1;
    }
    return 0;
}

/* Draw one token for each of n rows of logits (device [>= n, V], row
 * stride as given) with the `sample` op; row i belongs to sequence
 * seq_of[i] and uses that sequence's Philox draw. tok/lp: host [n]. */
static void sample_rows(rollout_engine *e, const rollout_request *r, const tensor *logits, int n,
                        const int *seq_of, int32_t *tok, float *lp) {
    for (int i = 0; i < n; i++) {
        const seq *q = &e->seqs[seq_of[i]];
        e->u[i] = rollout_uniform(r->seed, r->step, r->prompt_base + (uint32_t)q->prompt, (uint32_t)q->sample,
                                  (uint32_t)q->len);
    }
    size_t S = (size_t)e->lim.max_seqs;
    const struct ops *o = e->ops;
    o->upload(e->dev, e->u, (size_t)n * sizeof(float));
    tensor tu = tensor_make(e->dev, TENSOR_F32, o->device, 1, (int64_t[]){n});
    tensor ti = tensor_make((char *)e->dev + S * 4, TENSOR_I32, o->device, 1, (int64_t[]){n});
    tensor tl = tensor_make((char *)e->dev + S * 8, TENSOR_F32, o->device, 1, (int64_t[]){n});
    tensor lg = *logits;
    lg.shape[0] = n;
    const rollout_sampling *sp = &r->sampling;
    o->sample(&ti, &tl, &lg, &tu, sp->temperature, sp->top_k, sp->top_p > 0 ? sp->top_p : 1.0f, sp->min_p);
    o->download(tok, ti.data, (size_t)n * sizeof(int32_t));
    o->download(lp, tl.data, (size_t)n * sizeof(float));
}

/* ---- pages --------------------------------------------------------------- */

/* Positions a sample of a P-token prompt writes at most (header). */
static int64_t sample_span(const rollout_engine *e, const rollout_request *r, int64_t P) {
    int64_t t = P + r->max_new_tokens - 1;
    return t < e->max_pos - 1 ? t : e->max_pos - 1;
}

/* Worst-case pages of a group: F shared full pages, then each sample's own. */
static int64_t group_pages(const rollout_engine *e, const rollout_request *r, int64_t P) {
    int64_t F = P / e->ps, per = (sample_span(e, r, P) + e->ps - 1) / e->ps - F;
    return F + (int64_t)r->G * per;
}

/* A page off the free stack with `refs` references. */
static int32_t take_page(rollout_engine *e, int32_t refs) {
    if (e->nfree == 0) base_die("rollout: page pool empty (a reservation was not kept)");
    int32_t pg = e->free_pages[--e->nfree];
    e->page_ref[pg] = refs;
    if (++e->in_use > e->peak_pages) e->peak_pages = e->in_use;
    return pg;
}

static void map_slot(rollout_engine *e, int slot) {
    const seq *q = &e->seqs[slot];
    if (model_cache_map(e->cache, slot, q->pages, q->npages))
        base_die("rollout: %s", base_err_msg()); /* the engine's own page ids: a bug */
}

/* Drop slot's page references and its unused promise. */
static void release_pages(rollout_engine *e, int slot) {
    seq *q = &e->seqs[slot];
    for (int64_t k = 0; k < q->npages; k++) {
        int32_t pg = q->pages[k];
        if (--e->page_ref[pg] == 0) {
            e->free_pages[e->nfree++] = pg;
            e->in_use--;
        }
    }
    e->promised -= q->promised;
    q->promised = 0;
    if (q->npages) {
        q->npages = 0;
        map_slot(e, slot);
    }
}

/* Before a decode step: the page of the position slot writes next. */
static void grow_pages(rollout_engine *e, int slot) {
    seq *q = &e->seqs[slot];
    int64_t pos = q->plen + q->len - 1;
    if (pos / e->ps < q->npages) return;
    if (q->promised < 1) base_die("rollout: sequence at position %lld has no page promised", (long long)pos);
    q->promised--, e->promised--;
    q->pages[q->npages++] = take_page(e, 1);
    map_slot(e, slot);
}

static void finish_seq(rollout_engine *e, int slot, int *free_slots, int *n_done) {
    e->seqs[slot].active = 0;
    release_pages(e, slot);
    (*free_slots)++;
    (*n_done)++;
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
        if (r->prompt_len[p] >= e->max_pos)
            return base_err_set(BASE_ERR_LIMIT, "rollout: prompt %d has %d tokens; the model takes %lld positions", p,
                                r->prompt_len[p], (long long)e->max_pos);
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
    for (int p = 0; p < r->n_prompts; p++)
        if (group_pages(e, r, r->prompt_len[p]) > e->np)
            return base_err_set(BASE_ERR_LIMIT,
                                "rollout: prompt %d (%d tokens) with G = %d needs up to %lld cache pages of %lld "
                                "positions; the pool has %lld (max_pages)",
                                p, r->prompt_len[p], r->G, (long long)group_pages(e, r, r->prompt_len[p]),
                                (long long)e->ps, (long long)e->np);
    return BASE_OK;
}

base_status rollout_generate(rollout_engine *e, const rollout_request *r, rollout_result *res) {
    memset(res, 0, sizeof *res);
    base_status s = check_request(e, r);
    if (s) return s;
    double t0 = base_now();
    int G = r->G, S = e->lim.max_seqs;
    for (int i = 0; i < S; i++) { /* a failed call may leave sequences behind */
        seq *q = &e->seqs[i];
        q->active = 0;
        q->promised = 0;
        if (q->npages) q->npages = 0, map_slot(e, i);
    }
    memset(e->page_ref, 0, (size_t)e->np * sizeof(int32_t));
    for (int64_t i = 0; i < e->np; i++) e->free_pages[i] = (int32_t)(e->np - 1 - i); /* page 0 on top */
    e->nfree = e->np;
    e->promised = e->in_use = e->peak_pages = 0;
    int peak_seqs = 0;
    int n_done = 0, n_total = r->n_prompts * G, next_prompt = 0, free_slots = S;
    int64_t new_tokens = 0, prefill_tokens = 0, steps = 0;
    int32_t *tok = e->tok;
    float *lp = e->lp;
    int *group = e->group;
    /* expert parallelism: every rank of the EP group makes one model call
     * per iteration (a prefill, a decode step, or, once its own sequences
     * are done, a zero-row decode step that only joins the MoE exchanges)
     * until the group agrees that no rank has work left */
    const model_ep *ep = model_get_ep(e->m);
    int64_t join_steps = 0;
    double join_s = 0;
    for (;;) {
        int mine = n_done < n_total;
        if (ep && ep->size > 1) {
            int any = 0;
            double tj = mine ? 0 : base_now();
            s = ep->any_active(ep->ctx, mine, &any);
            if (s) goto fail;
            if (!any) {
                if (!mine) join_s += base_now() - tj;
                break;
            }
            if (!mine) {
                const tensor *none;
                s = model_decode(e->cache, 0, NULL, NULL, NULL, &none);
                if (s) goto fail;
                join_steps++;
                join_s += base_now() - tj;
                continue;
            }
        } else if (!mine) {
            break;
        }
        /* admit waiting prompts into free slots, one prefill for all */
        int np = 0;
        int64_t ntok = 0;
        e->b_cu[0] = 0;
        while (next_prompt < r->n_prompts && free_slots >= G &&
               ntok + r->prompt_len[next_prompt] <= e->max_prefill &&
               e->nfree - e->promised >= group_pages(e, r, r->prompt_len[next_prompt])) {
            int p = next_prompt++;
            int taken = 0;
            int64_t P = r->prompt_len[p], F = P / e->ps, part = P % e->ps ? 1 : 0;
            int64_t later = (sample_span(e, r, P) + e->ps - 1) / e->ps - F - part;
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
                /* the F full prompt pages shared by the group, then its own partial page */
                for (int64_t k = 0; k < F; k++)
                    q->pages[k] = taken == 0 ? take_page(e, G) : e->seqs[group[np * G]].pages[k];
                if (part) q->pages[F] = take_page(e, 1);
                q->npages = F + part;
                q->promised = later;
                e->promised += later;
                map_slot(e, slot);
                taken++;
            }
            free_slots -= G;
            if (S - free_slots > peak_seqs) peak_seqs = S - free_slots;
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
             * every sample's first token from the prompt's logits: one
             * sample call per sample index g over the np prompt rows */
            for (int i = 0; i < np; i++)
                for (int g = 1; g < G; g++)
                    model_cache_copy(e->cache, group[i * G + g], group[i * G], e->seqs[group[i * G]].plen);
            for (int g = 0; g < G; g++) {
                for (int i = 0; i < np; i++) e->b_seq[i] = group[i * G + g];
                sample_rows(e, r, logits, np, e->b_seq, tok, lp);
                for (int i = 0; i < np; i++) {
                    int slot = group[i * G + g];
                    new_tokens++;
                    if (push_token(e, r, slot, tok[i], lp[i])) finish_seq(e, slot, &free_slots, &n_done);
                }
            }
            continue; /* admit more before decoding if slots freed */
        }
        /* one decode step over every live sequence */
        int n = 0;
        for (int slot = 0; slot < S; slot++) {
            seq *q = &e->seqs[slot];
            if (!q->active) continue;
            grow_pages(e, slot);
            e->b_seq[n] = slot;
            e->b_slots[n] = slot;
            e->b_tokens[n] = q->last;
            e->b_pos[n] = (int32_t)(q->plen + q->len - 1);
            n++;
        }
        if (!n) {
            s = base_err_set(BASE_ERR_INVALID, "rollout: no sequence can be admitted (G = %d, %d slots, %lld pages)", G,
                             S, (long long)e->np);
            goto fail;
        }
        const tensor *logits;
        s = model_decode(e->cache, n, e->b_slots, e->b_tokens, e->b_pos, &logits);
        if (s) goto fail;
        steps++;
        sample_rows(e, r, logits, n, e->b_seq, tok, lp);
        for (int i = 0; i < n; i++) {
            int slot = e->b_seq[i];
            new_tokens++;
            if (push_token(e, r, slot, tok[i], lp[i])) finish_seq(e, slot, &free_slots, &n_done);
        }
    }
    res->n = n_total;
    res->out = e->comps;
    res->new_tokens = new_tokens;
    res->prefill_tokens = prefill_tokens;
    res->decode_steps = steps;
    res->join_steps = join_steps;
    res->join_seconds = join_s;
    res->peak_seqs = peak_seqs;
    res->peak_pages = e->peak_pages;
    int64_t rep0 = e->graph_replays;
    model_cache_graph_stats(e->cache, NULL, &e->graph_replays);
    res->graph_replays = e->graph_replays - rep0;
    res->seconds = base_now() - t0;
    return BASE_OK;
fail:
    return base_err_wrap(s, "rollout");
}
