/*
 * Checkpoints of a run (ckpt.c, ckpt_optim.c, ckpt_shard.c, ckpt_ep.c;
 * docs/checkpoints.md): their directories, the optimizer state in either
 * layout, the streamed and per-rank weights. Private to src/train; part of
 * run_internal.h (which includes it last).
 */
#ifndef GRPO_RUN_CKPT_H
#define GRPO_RUN_CKPT_H

#include "run_internal.h"

/* ---- checkpoints (ckpt.c) ----------------------------------------------- */

/* What a training stage saves and restores besides the weights. */
typedef struct {
    int stage_index;
    char stage_name[64];
    int stage_done;       /* 1: the stage finished (resume starts the next) */
    int64_t stage_step;   /* training steps of this stage completed */
    int64_t total_steps;  /* run-wide */
    int64_t data_epoch;   /* data cursor */
    int64_t data_pos;
    int64_t metrics_lines; /* metrics.jsonl / samples.jsonl lines at the save */
    int64_t samples_lines;
    double entropy_coef;  /* grpo: adaptive entropy control state (grpo_entropy_ctl) */
    double entropy_last;  /* +inf before the first optimizer step (saved as null) */
} run_train_state;

/* Save checkpoints/step-{total_steps}/ atomically (written under a
 * temporary name, fsynced, renamed): the policy as HF safetensors with
 * config.json and the tokenizer files (with LoRA: the adapter in PEFT's
 * format, adapter_config.json and adapter_model.safetensors, and the
 * tokenizer files; the base is the recipe's model), the optimizer (m, v,
 * counters) when opt != NULL, the reference model when ref != NULL,
 * trainer_state.json. Keeps the last `keep` checkpoints (0: all). */
base_status run_ckpt_save(run_ctx *c, const run_train_state *st, const optim *opt, const model *ref,
                          int keep);
/* The checkpoint to resume from: the newest complete one of the run
 * directory that verifies (trainer_state.json parses and agrees with the
 * recipe, config.json parses, the safetensors files open). When the newest
 * does not verify: an error naming it, why, and the newest one that does,
 * unless c->opts.resume_last_good, which renames each bad one to
 * checkpoints/corrupt-step-N (kept, never used or rotated) and takes the
 * newest good one. *out NULL (no error) when there is no checkpoint. */
base_status run_ckpt_latest(run_ctx *c, run_ckpt **out);
/* trainer_state.json's text (`dir` is its checkpoint, named in errors)
 * parsed and checked against the recipe: every field present with its type,
 * counters in range and consistent (stage_step >= 0 and <= the stage's
 * max_steps, total_steps >= stage_step, ...), the stage name and the seed
 * the recipe's. Errors name the file and the key. */
base_status run_ckpt_parse_state(const recipe *rc, const char *dir, const char *text, size_t len, run_ckpt **out);
/* BASE_ERR_INVALID naming trainer_state.json's data_pos when the data
 * cursor is outside a dataset of nrows rows. */
base_status run_ckpt_check_cursor(const run_ckpt *k, int64_t nrows);
const run_train_state *run_ckpt_state(const run_ckpt *k);
const char *run_ckpt_dir(const run_ckpt *k);
/* Restore optimizer moments and counters (opt planned from the arena of
 * `policy`, NULL for a LoRA adapter's; an EP policy maps the checkpoint's
 * whole-model layout onto its experts). */
base_status run_ckpt_load_optim(const run_ckpt *k, const model *policy, optim *opt);
base_status run_ckpt_load_optim_ep(run_ctx *c, const run_ckpt *k, optim *o);
/* ckpt_optim.c: the optimizer state of a checkpoint in either layout
 * (optimizer.safetensors; ZeRO 1: one file per rank of the run that wrote
 * it). "optimizer-rank-R-of-W.safetensors" (caller frees). */
char *run_ckpt_optim_shard_name(int rank, int world);
/* This rank's shard (o->zero_rank of o->zero_shards) into DIR. */
base_status run_ckpt_write_optim_shard(const optim *o, const char *dir);
/* m and v of o's range [state_lo, state_lo + state_n) from DIR's
 * optimizer.safetensors (shards 0; by name) or its `shards` shard files of
 * an arena of `numel` elements (by arena offset: o's own, or src[i] for
 * parameter i when src is not NULL, an arena of src_n elements): re-sharded
 * to any world size, ZeRO stage and expert_parallel_size. */
base_status run_ckpt_read_optim(const char *dir, int shards, int64_t numel, const int64_t *src, int64_t src_n,
                                optim *o);
/* Load the saved reference weights into ref (same config). */
base_status run_ckpt_load_ref(const run_ckpt *k, model *ref);
int run_ckpt_has_ref(const run_ckpt *k);
/* summary.json as it was at the save (a new object, caller owns). */
cJSON *run_ckpt_summary(const run_ckpt *k);
void run_ckpt_free(run_ckpt *k);
/* ---- streamed weights (ckpt.c, ckpt_shard.c; docs/checkpoints.md) -------- */
/* The float32 Hugging Face layout of a parameter table (arena order):
 * STEM.safetensors, or its shards past shard_bytes (0: never) with
 * STEM.safetensors.index.json, metadata {"format": "pt"} (io/st.h). */
base_status run_ckpt_weights_plan(const model_param *params, int nparams, const char *stem, uint64_t shard_bytes,
                                  st_plan **out);
/* m's weights into DIR (stem "model" or "ref"), one process, tensor piece
 * by tensor piece from the device through one host buffer of buf_bytes
 * (0: ST_BUF_DEFAULT, 64 MiB); shard_bytes: ST_SHARD_DEFAULT in checkpoints.
 * *peak (may be NULL): the largest piece held, the host high-water mark. */
base_status run_ckpt_write_weights(const model *m, const char *dir, const char *stem, size_t buf_bytes,
                                   uint64_t shard_bytes, size_t *peak);
/* A host buffer size for f32 pieces: buf_bytes rounded down to whole
 * floats (at least one); 0 stays 0 (the default). */
static inline size_t run_ckpt_f32_buf(size_t buf_bytes) {
    return buf_bytes && buf_bytes < sizeof(float) ? sizeof(float) : buf_bytes / sizeof(float) * sizeof(float);
}

/* ZeRO 3 (parameters sharded): each rank holds the arena elements [lo, hi)
 * of the flat f32 parameter arena (run_split ranges; the arena may have
 * gaps between tensors). */
typedef struct {
    const model_param *params; /* every tensor written / read, arena order (model_param_at(m, 0)) */
    int nparams;
    int64_t lo, hi;       /* this rank's range */
    float *shard;         /* its hi - lo elements: element e of the arena at shard[e - lo] */
    const struct ops *ops; /* the backend whose memory shard is; NULL: host memory */
    size_t buf_bytes;     /* host buffer bound (0: ST_BUF_DEFAULT) */
    uint64_t shard_bytes; /* Hugging Face file size limit (0: ST_SHARD_DEFAULT; UINT64_MAX: one file) */
} run_ckpt_range;
/* Collective (every rank of c, each with its range; the ranges together
 * cover every tensor): the consolidated DIR/STEM.safetensors (or its
 * shards and index), byte for byte what run_ckpt_write_weights writes for
 * the whole arena. Rank 0 creates the files (headers written, sizes set),
 * every rank pwrites its range's bytes at their file offsets through its
 * bounded buffer, rank 0 renames them into place; each step agreed
 * (run_agree), so a failure on any rank fails it on every rank and leaves
 * no file under its final name. DIR must be one directory every rank sees
 * (a shared filesystem, as ZeRO 1's optimizer shards assume). *peak: this
 * rank's largest piece (may be NULL). */
base_status run_ckpt_write_range(run_ctx *c, const run_ckpt_range *r, const char *dir, const char *stem,
                                 size_t *peak);
/* The protocol of every collective checkpoint write (ckpt_shard.c): s, this
 * rank's status of laying out p, agreed; rank 0 creates p's files in DIR;
 * put(ctx, w) writes this rank's parts through w (a bounded host buffer of
 * buf_bytes, 0: ST_BUF_DEFAULT); rank 0 renames the files into place (or,
 * after a failure anywhere, removes them); each step agreed, `what` naming
 * the files in the messages. The caller owns p (NULL when its layout
 * failed). *peak: this rank's largest piece (may be NULL). */
typedef base_status (*run_ckpt_put_fn)(void *ctx, st_part *w);
base_status run_ckpt_write_agreed(run_ctx *c, base_status s, st_plan *p, const char *dir, const char *what,
                                  size_t buf_bytes, run_ckpt_put_fn put, void *ctx, size_t *peak);
/* One rank, no communication: fill r->shard's range [lo, hi) from DIR's
 * weights (stem "model": any layout st_dir_open reads; else STEM.safetensors
 * or its index), F32 / BF16 / F16 / FP8 blocks converted to f32, reading
 * only the tensors that overlap the range, each in pieces through a host
 * buffer of r->buf_bytes (none when the shard is host memory). Arena gaps
 * are left as they are. Errors: a tensor missing or of another size
 * (named), the files' errors. */
base_status run_ckpt_read_range(const char *dir, const char *stem, const run_ckpt_range *r, size_t *peak);
/* The same for nr ranges (e.g. the parts of a shard by class, ZeRO 3 with
 * EP: each part's shard pointer at its first element), the files opened
 * once, one host buffer of r[0].buf_bytes. */
base_status run_ckpt_read_ranges(const char *dir, const char *stem, const run_ckpt_range *r, int nr, size_t *peak);

/* Write the policy weights (HF names) + config.json + tokenizer files into dir. */
base_status run_save_model(run_ctx *c, const model *m, const char *dir);
/* With LoRA: the adapter (PEFT format) + tokenizer files into dir. */
base_status run_save_adapter(run_ctx *c, const char *dir);
/* Load the checkpoint's adapter weights into c->lora (resume); errors
 * when the checkpoint's adapter_config.json disagrees with the recipe's
 * lora table. */
base_status run_ckpt_load_adapter(run_ctx *c, const char *dir);
/* Read the files run_save_model copies into c->keep_files: config.json and
 * generation_config.json from policy_dir, tokenizer.json and
 * tokenizer_config.json from tok_dir (either may be NULL: kept as is). */
base_status run_keep_files(run_ctx *c, const char *policy_dir, const char *tok_dir);
void run_keep_files_free(run_ctx *c);

#endif
