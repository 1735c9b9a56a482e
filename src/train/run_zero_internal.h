/*
 * Shared by run_zero.c (ZeRO 2 and 3) and run_zero_ep.c (the same with
 * expert parallelism): the stage's state and the functions each file
 * calls in the other. Private to src/train.
 */
#ifndef GRPO_RUN_ZERO_INTERNAL_H
#define GRPO_RUN_ZERO_INTERNAL_H

#include "run_internal.h"

struct zero_ep;
struct run_zero2 {
    run_ctx *c;
    int U;               /* units */
    int64_t *ulo, *uhi;  /* [U] each unit's arena range */
    int64_t *slo, *shi;  /* [W] each rank's shard */
    int64_t win_n;       /* elements of each alternating window */
    float *win[2];       /* device windows, alternating */
    float *emb;          /* a tied embedding's window (NULL: untied) */
    float *grad;         /* device [shi - slo]: this rank's gradient shard (the optimizer's) */
    dist_request *req[3]; /* in flight on win[0], win[1], emb */
    int cur;             /* the window the open unit uses (0, 1; 2: emb) */
    size_t *counts;      /* [W] scratch: a window's overlap with each shard */
    base_status err;     /* the first failed post or wait of the pass */
    /* ZeRO 3 */
    int stage;           /* 2 or 3 */
    optim *o;
    float *pshard;       /* device [shi - slo]: this rank's master parameters (the optimizer's) */
    float *pwin[3];      /* parameter windows: two alternating, a tied embedding's */
    uint16_t *pwin_c[3]; /* bf16 mode: their compute copies */
    int bound[3];        /* the unit each parameter window holds (-1: none or stale) */
    size_t *pcounts;     /* [W] scratch of the gathers */
    /* a phase of forward-only passes whose count differs by rank (run_zero3_phase) */
    int phase;           /* 1: every pass starts with an agreement (1: a pass follows) */
    int padding;         /* 1: run_zero3_sync's own passes (no agreement of their own) */
    int64_t phase_uses;  /* run_zero_param_use calls in the phase (the position in a pass's sequence) */
    base_status phase_err; /* the first failed agreement of the phase */
    int64_t emb_n;       /* a tied embedding's elements (0: untied) */
    struct zero_ep *ex;  /* expert parallelism: the shard by class (run_zero_ep.c), else NULL */
};

void run_zero_params_stale(run_zero2 *z);
void run_zero_release_state(run_zero2 *z, int restore);
void run_zero_param_use(void *ctx, int u);
void run_zero_ep_finish(run_zero2 *z, int k);
void run_zero_ep_reduce(run_zero2 *z, int k, int u);
void run_zero_ep_gather_unit(run_zero2 *z, int k, int u);
base_status run_zero_ep_gather_arena(run_zero2 *z, float *dst);
void run_zero_ep_shard_from(run_zero2 *z, const float *arena);
void run_zero_ep_free(run_zero2 *z);
base_status run_zero_ep_optim_step(run_ctx *c, optim *o, int64_t k, optim_step_info *info);
base_status run_zero_ep_alloc(run_ctx *c, int stage, run_zero2 **out);
void run_zero_ep_windows(run_zero2 *z);
int64_t run_zero_ep_compact_n(const run_zero2 *z);
base_status run_zero_ep_param_update(run_zero2 *z, const model_param *p, void (*fn)(float *, int64_t, void *),
                                     void *ctx);

#endif
