/*
 * The GRPO stage's host buffers and micro-batch packing (grpo_bufs.h).
 */
#include "grpo_bufs.h"

#include <stdlib.h>
#include <string.h>

#include "base/base.h"

void grpo_bufs_alloc(grpo_bufs *b) {
    size_t N = (size_t)b->N, T = (size_t)b->max_tok;
    b->pids = base_xmalloc(N * (size_t)b->max_prompt * sizeof(int32_t));
    b->plen = base_xcalloc(N, sizeof(int32_t));
    b->cids = base_xmalloc(N * (size_t)b->max_new * sizeof(int32_t));
    b->clen = base_xcalloc(N, sizeof(int32_t));
    b->trunc = base_xcalloc(N, 1);
    b->rewards = base_xmalloc(N * (size_t)b->F * sizeof(float));
    b->adv = base_xmalloc(N * sizeof(float));
    b->total = base_xmalloc(N * sizeof(float));
    b->rowidx = base_xmalloc(N * sizeof(int64_t));
    b->ptext = base_xcalloc(N, sizeof(char *));
    b->ctext = base_xcalloc(N, sizeof(char *));
    b->old_lp = base_xmalloc(N * (size_t)b->max_new * sizeof(float));
    b->samp_lp = base_xmalloc(N * (size_t)b->max_new * sizeof(float));
    b->isr = base_xmalloc(N * (size_t)b->max_new * sizeof(float));
    b->ord = base_xmalloc(N * sizeof(int));
    b->perm = base_xmalloc(N * sizeof(int64_t));
    b->adv_ws = base_xmalloc(N * sizeof(double));
    b->sel_rows = base_xcalloc((size_t)b->P, sizeof *b->sel_rows);
    b->sel_where = base_xcalloc((size_t)b->P, sizeof *b->sel_where);
    b->adv_mb = base_xmalloc((size_t)b->mb * sizeof(float));
    b->trunc_mb = base_xmalloc((size_t)b->mb);
    b->ids = base_xmalloc(T * sizeof(int32_t));
    b->tgt = base_xmalloc(T * sizeof(int32_t));
    b->cu = base_xmalloc(((size_t)b->mb + 1) * sizeof(int32_t));
    b->offs = base_xmalloc(((size_t)b->mb + 1) * sizeof(int64_t));
    float **f[] = {&b->lp_pos, &b->ent_pos, &b->ref_pos, &b->g_pos, &b->gent_pos,
                   &b->lp, &b->ent, &b->ref, &b->old, &b->g, &b->gent, &b->samp, &b->is};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) *f[i] = base_xmalloc(T * sizeof(float));
    b->mask = base_xmalloc(T);
}

void grpo_bufs_free(grpo_bufs *b) {
    for (int i = 0; i < b->N; i++) free(b->ptext[i]), free(b->ctext[i]);
    free(b->pids), free(b->plen), free(b->cids), free(b->clen), free(b->trunc), free(b->rewards);
    free(b->adv), free(b->total), free(b->rowidx), free(b->ptext), free(b->ctext), free(b->old_lp);
    free(b->ids), free(b->tgt), free(b->cu), free(b->offs), free(b->lp_pos), free(b->ent_pos);
    free(b->ref_pos), free(b->g_pos), free(b->gent_pos), free(b->lp), free(b->ent), free(b->ref);
    free(b->old), free(b->g), free(b->gent), free(b->mask), free(b->ord), free(b->perm), free(b->adv_ws), free(b->adv_mb), free(b->trunc_mb);
    free(b->sel_rows), free(b->sel_where), free(b->samp_lp), free(b->isr), free(b->samp), free(b->is);
}

/* Pack completions ix[0..n) into the micro-batch: ids/cu/targets by position
 * and the completion-token layout (offs) the loss works on. */
void grpo_bufs_pack(grpo_bufs *b, const int *ix, int n, model_batch *mbatch, grpo_batch *gb) {
    int64_t pos = 0, tok = 0;
    b->cu[0] = 0;
    b->offs[0] = 0;
    for (int k = 0; k < n; k++) {
        int j = ix[k];
        int32_t P = b->plen[j], L = b->clen[j];
        memcpy(b->ids + pos, b->pids + (size_t)j * (size_t)b->max_prompt, (size_t)P * sizeof(int32_t));
        memcpy(b->ids + pos + P, b->cids + (size_t)j * (size_t)b->max_new, (size_t)L * sizeof(int32_t));
        for (int64_t t = 0; t < P + L; t++) b->tgt[pos + t] = -1;
        for (int32_t t = 0; t < L; t++) b->tgt[pos + P - 1 + t] = b->cids[(size_t)j * (size_t)b->max_new + (size_t)t];
        pos += P + L;
        tok += L;
        b->cu[k + 1] = (int32_t)pos;
        b->offs[k + 1] = tok;
        b->adv_mb[k] = b->adv[j];
        b->trunc_mb[k] = b->trunc[j];
    }
    memset(b->mask, 1, (size_t)tok);
    *mbatch = (model_batch){.nseq = n, .ids = b->ids, .cu_seqlens = b->cu, .targets = b->tgt};
    *gb = (grpo_batch){.n_seqs = n, .offsets = b->offs, .mask = b->mask, .truncated = b->trunc_mb,
                       .advantages = b->adv_mb};
}

/* Per-position values -> packed completion tokens of ix[0..n). */
void grpo_bufs_gather(const grpo_bufs *b, const int *ix, int n, const float *pos_vals, float *tok_vals) {
    int64_t pos = 0, tok = 0;
    for (int k = 0; k < n; k++) {
        int32_t P = b->plen[ix[k]], L = b->clen[ix[k]];
        memcpy(tok_vals + tok, pos_vals + pos + P - 1, (size_t)L * sizeof(float));
        pos += P + L;
        tok += L;
    }
}

void grpo_bufs_scatter(const grpo_bufs *b, const int *ix, int n, const float *tok_vals, float *pos_vals) {
    int64_t pos = 0, tok = 0;
    for (int k = 0; k < n; k++) {
        int32_t P = b->plen[ix[k]], L = b->clen[ix[k]];
        memset(pos_vals + pos, 0, (size_t)(P + L) * sizeof(float));
        memcpy(pos_vals + pos + P - 1, tok_vals + tok, (size_t)L * sizeof(float));
        pos += P + L;
        tok += L;
    }
}

/* Move group src (G completions) to slot dst in every per-completion buffer. */
void grpo_bufs_move_group(grpo_bufs *b, int dst, int src) {
    if (dst == src) return;
    int G = b->G;
    for (int g = 0; g < G; g++) {
        int d = dst * G + g, s = src * G + g;
        memcpy(b->pids + (size_t)d * (size_t)b->max_prompt, b->pids + (size_t)s * (size_t)b->max_prompt,
               (size_t)b->plen[s] * sizeof(int32_t));
        memcpy(b->cids + (size_t)d * (size_t)b->max_new, b->cids + (size_t)s * (size_t)b->max_new,
               (size_t)b->clen[s] * sizeof(int32_t));
        memcpy(b->samp_lp + (size_t)d * (size_t)b->max_new, b->samp_lp + (size_t)s * (size_t)b->max_new,
               (size_t)b->clen[s] * sizeof(float));
        memcpy(b->rewards + (size_t)d * (size_t)b->F, b->rewards + (size_t)s * (size_t)b->F, (size_t)b->F * sizeof(float));
        b->plen[d] = b->plen[s], b->clen[d] = b->clen[s], b->trunc[d] = b->trunc[s], b->rowidx[d] = b->rowidx[s];
        char *t = b->ptext[d];
        b->ptext[d] = b->ptext[s], b->ptext[s] = t;
        t = b->ctext[d];
        b->ctext[d] = b->ctext[s], b->ctext[s] = t;
    }
}

