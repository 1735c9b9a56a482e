/*
 * The GRPO stage's host buffers (stage_grpo.c): a round's prompts,
 * completions, rewards and advantages, one buffer per role, sized once when
 * the stage opens (N completions, micro-batches of mb completions and
 * max_tok tokens), and the packing of completions into a micro-batch.
 */
#ifndef GRPO_TRAIN_GRPO_BUFS_H
#define GRPO_TRAIN_GRPO_BUFS_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "train/grpo.h"
#include "model/model.h"

typedef struct {
    /* sizes */
    int G, P, N;           /* group size, prompts per round, completions per round */
    int64_t max_prompt, max_new;
    int mb;                /* completions per micro-batch */
    int64_t max_tok;       /* tokens per micro-batch */
    int F;                 /* reward functions */
    /* the step's kept completions (up to N): host buffers, one per role */
    int n;                         /* kept completions */
    int32_t *pids;                 /* [N, max_prompt] prompt ids */
    int32_t *plen;                 /* [N] */
    int32_t *cids;                 /* [N, max_new] completion ids */
    int32_t *clen;                 /* [N] */
    uint8_t *trunc;                /* [N] finish == length */
    float *rewards;                /* [N, F] */
    float *adv;                    /* [N] */
    float *total;                  /* [N] */
    int64_t *rowidx;               /* [N] dataset row of each completion */
    char **ptext, **ctext;         /* [N] rendered prompt / completion text */
    float *old_lp;                 /* [N, max_new] old log-probs: the policy before the batch's first update */
    float *samp_lp;                /* [N, max_new] the sampler's log-probs */
    float *isr;                    /* [N, max_new] importance-sampling correction (grpo_is_correction) */
    int *ord;                      /* [N] training order (shuffled when steps_per_generation > 1) */
    int64_t *perm;                 /* [N] the shuffle behind ord */
    double *adv_ws;                /* [N] grpo_advantages_ws's workspace */
    cJSON **sel_rows;              /* [P] the rows of a generation round */
    char **sel_where;              /* [P] */
    float *adv_mb;                 /* [mb] advantages of a micro-batch, in its order */
    uint8_t *trunc_mb;             /* [mb] */
    /* micro-batch buffers */
    int32_t *ids, *cu, *tgt;       /* [max_tok], [mb + 1], [max_tok] */
    float *lp_pos, *ent_pos, *ref_pos, *g_pos, *gent_pos; /* [max_tok] */
    float *lp, *ent, *ref, *old, *g, *gent, *samp, *is;   /* [max_tok] packed completion tokens */
    uint8_t *mask;
    int64_t *offs;                 /* [mb + 1] */
} grpo_bufs;

/* Allocate every buffer for the sizes set in *b (G, P, N, max_prompt,
 * max_new, mb, max_tok, F); grpo_bufs_free releases them. */
void grpo_bufs_alloc(grpo_bufs *b);
void grpo_bufs_free(grpo_bufs *b);
/* Pack completions ix[0..n) into the micro-batch: ids/cu/targets by position
 * and the completion-token layout (offs) the loss works on (overwritten). */
void grpo_bufs_pack(grpo_bufs *b, const int *ix, int n, model_batch *mbatch, grpo_batch *gb);
/* Per-position values -> packed completion tokens of ix[0..n) (overwrites tok_vals). */
void grpo_bufs_gather(const grpo_bufs *b, const int *ix, int n, const float *pos_vals, float *tok_vals);
/* Packed completion tokens -> per-position values, 0 elsewhere (overwrites pos_vals). */
void grpo_bufs_scatter(const grpo_bufs *b, const int *ix, int n, const float *tok_vals, float *pos_vals);
/* Move group src (G completions) to slot dst in every per-completion buffer. */
void grpo_bufs_move_group(grpo_bufs *b, int dst, int src);

#endif
