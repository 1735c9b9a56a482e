/*
 * Private to the pipeline files of src/train (run*.c, stage_*.c, ckpt.c,
 * report.c): the run context every stage works in, and the helpers they
 * share (datasets, prompts, samples, rewards, metrics, data order).
 */
#ifndef GRPO_TRAIN_RUN_INTERNAL_H
#define GRPO_TRAIN_RUN_INTERNAL_H

#include <math.h>
#include <stdio.h>

#include "dist/dist.h"
#include "model/model.h"
#include "reward/reward.h"
#include "rollout/rollout.h"
#include "tok/tok.h"
#include "train/grpo.h"
#include "train/optim.h"
#include "train/run.h"

typedef struct st_plan st_plan; /* io/st.h: a file set laid out before it is written */
typedef struct st_part st_part; /* io/st.h: one rank's writes into it */

typedef struct {
    char *name;
    char *path;
    char *prompt_column;
    cJSON **rows; /* [n] owned */
    long *lines;  /* [n] source line of each row */
    int64_t n;
} run_dataset;

typedef struct {
    const recipe *rc;
    const recipe_cfg *cfg; /* the recipe's typed config */
    run_opts opts;
    char *dir;     /* run directory */
    char *name;
    const struct ops *ops;
    model_load_opts load;  /* how models are loaded: the run's precision */
    model *policy;         /* the weights every stage starts from / updates */
    model_lora *lora;      /* recipe lora table: the adapter attached to policy (owned by it); NULL: none */
    char *policy_src;      /* checkpoint directory the policy came from (with lora: the base model's) */
    int policy_on_disk;    /* its weights are policy_src's still (loaded, not random, not trained since) */
    tok_tokenizer *tok;
    char *tok_dir;
    /* what every checkpoint carries besides the weights (RUN_KEEP_*),
     * read when the policy and the tokenizer were loaded, so a save never
     * depends on a directory that checkpoint rotation may have removed;
     * data NULL: the source had no such file */
    base_buf keep_files[4];
    uint64_t seed;
    run_dataset *datasets; /* [n_datasets], loaded on first use */
    int n_datasets;
    FILE *metrics;
    FILE *samples;
    char *reward_log;
    cJSON *summary;        /* summary.json, rewritten after every stage */
    int64_t total_steps;   /* training steps of the run so far (all stages) */
    int64_t metrics_lines; /* lines written to metrics.jsonl / samples.jsonl */
    int64_t samples_lines;
    int stop_requested;    /* opts.max_total_steps reached, or a stop signal */
    int stop_signal;       /* the stop signal that arrived (run_poll_signal), else 0 */
    int64_t saved_step;    /* total_steps of the newest checkpoint of the run, -1: none */
    int64_t *prompt_tokens; /* [n_stages] longest prompt of each stage's data (run_plan.c); 0: not yet */
    struct run_tb *tb;      /* RUN/tb/ TensorBoard events (tb.c); NULL: none */
    /* data parallel (run_dist.c, docs/distributed.md): this process is rank
     * `rank` of `world`; host: the host communicator (metadata, rollout
     * results), dev: the communicator of the op table's buffers (gradients) */
    int rank, world;
    dist_comm *host, *dev;
    /* expert parallelism (run_ep.c): EP (0 or 1: off), the EP group and the
     * expert-data-parallel group (host and device communicators: the same
     * on the CPU backend), and the exchange functions the model calls */
    int ep;
    dist_comm *ep_host, *ep_dev, *edp_host, *edp_dev;
    model_ep ep_x;
    size_t *ep_sizes; /* [2 EP]: the exchange functions' counts (made once) */
    /* this rank's rollout steps over the run (EP > 1): decode steps with
     * its own sequences, zero-row steps joining its group, their seconds */
    int64_t ep_decode_steps, ep_join_steps;
    double ep_join_seconds, ep_gen_seconds;
    /* GRPO_TEST_FAIL_EP (run_ep_test_phase): the phase, its row exchanges
     * so far, and whether this rank's exchanges fail from now on */
    const char *ep_phase;
    int64_t ep_calls;
    int ep_broken;
    struct run_zero2 *z2;   /* the training stage's ZeRO 2 / 3 state (run_zero.c), else NULL */
    struct run_zero2 *z3;   /* after a stage-3 stage: the released policy's shard, windows and unit hook, kept
                               for the stages that follow (run_zero3_end), else NULL */
} run_ctx;

/* A stop signal (opts.stop_signal), polled where a stage can stop cleanly:
 * at the end of a training step (the stage then writes a checkpoint, as
 * for max_total_steps), between the chunks of eval and sample stages and
 * before a stage starts. Sets c->stop_signal and c->stop_requested and
 * returns the signal number; 0 when none arrived. (The one place where the
 * ranks of a multi-process run will agree to stop at the same step.) */
int run_poll_signal(run_ctx *c);
/* The status of an eval or sample stage stopped by a signal between two
 * chunks (done of total prompts): BASE_ERR_INTERRUPTED. */
base_status run_stage_interrupted(run_ctx *c, int64_t done, int64_t total);
/* The run's status once a stop signal stopped it (s: BASE_OK, or a stage's
 * BASE_ERR_INTERRUPTED, whose message becomes the detail): BASE_ERR_INTERRUPTED
 * "interrupted at step N by SIGINT: checkpoint DIR/checkpoints/step-N;
 * --resume continues". */
base_status run_stop_status(run_ctx *c, base_status s);
/* --resume into a run directory with a checkpoint: the recipe against the
 * run's config.resolved.lua, every change printed key by key; changes that
 * alter the trained result are an error naming them unless
 * opts.allow_changes. (Before the checkpoints are verified: a changed seed
 * is named here, not as "a checkpoint of another run".) */
base_status run_check_changes(run_ctx *c);
/* --resume: keep the run's config.resolved.lua as
 * config.history/config.resolved.K.lua (K = 1, 2, ...: the next free one)
 * before it is replaced (from_step: the checkpoint resumed from, -1: none). */
base_status run_keep_config_history(run_ctx *c, int64_t from_step);

/* ---- expert parallelism (run_ep.c, docs/distributed.md) ------------------ */
/* The run's expert_parallel_size: the training stages' (they must agree:
 * BASE_ERR_INVALID naming the key otherwise); 1 without training stages. */
base_status run_ep_size(const recipe_cfg *cfg, int64_t *ep);
/* EP against the world size, the model's n_routed_experts, the ZeRO stage
 * (2 and 3 refused with EP > 1) and LoRA (refused with EP > 1): errors name
 * expert_parallel_size and the value. */
base_status run_ep_check(const model_config *mc, int64_t ep, int world, int zero_stage, int lora);
/* Before the policy loads (model_dir: where its config.json is): with EP >
 * 1 checks it (run_ep_check), splits the world into the EP and
 * expert-data-parallel groups and sets c->load.ep, so the policy holds its
 * EP index's experts. A no-op at EP 1. A collective. */
base_status run_ep_open(run_ctx *c, const char *model_dir);
void run_ep_close(run_ctx *c);
/* EP > 1 (every rank, in step): the gradient arena summed in place, the
 * routed experts' elements over the expert-data-parallel group and the rest
 * over the world (rank-ordered sums, per run of one kind in arena order). */
base_status run_ep_reduce_grads(run_ctx *c, float *grads);
/* The optimizer step with the global gradient norm: the non-expert sum of
 * squares (the same on every rank) plus the experts' summed over the EP
 * group (each expert counted once). */
base_status run_ep_optim_step(run_ctx *c, optim *o, int64_t k, optim_step_info *info);
/* The most passes of any rank when n rows are split over the ranks
 * (run_split) in micro-batches of at most mb (the same on every rank). */
int64_t run_ep_passes(const run_ctx *c, int64_t n, int64_t mb);
/* EP > 1: `passes` zero-row forwards of tr (model_train_join_forward: a
 * rank with fewer forward-only passes than its EP group's others); a no-op
 * otherwise. */
base_status run_ep_join_forwards(run_ctx *c, model_train *tr, int64_t passes);
/* A rank whose training pass or rollout step failed inside the EP group's
 * lockstep (its peers wait in an exchange it can no longer pair): with
 * EP > 1 it prints its error and that rank R failed inside the lockstep
 * of `what`, and ends every rank of the job at once (dist_abort; mpirun
 * names rank R too); returns s otherwise (EP 1, or s == BASE_OK). */
base_status run_ep_pass_failed(run_ctx *c, base_status s, const char *what);
/* Test hook (tests/dist): GRPO_TEST_FAIL_EP=R:PHASE:S:K makes rank R's
 * K-th MoE row exchange in PHASE ("rollout" or "train") of training step S
 * fail, and every exchange after it (a broken group); the phase is set by
 * the GRPO stage when it starts generating / training. */
void run_ep_test_phase(run_ctx *c, const char *phase);
/* EP > 1, after a stage (a collective): every rank's rollout step counts
 * and seconds so far (decode steps, zero-row join steps, join seconds,
 * generation seconds) into summary.json as STAGE.expert_parallel_rollout. */
base_status run_ep_summary(run_ctx *c, const char *stage);
/* The consolidated DIR/STEM.safetensors (or shards) of an EP > 1 model (the
 * policy, or a frozen reference), byte for byte what one process holding
 * every expert writes: every rank
 * lays out the whole model's table, rank 0 creates the files and writes
 * the non-expert tensors, ranks 0 .. EP - 1 their experts (pwrite into the
 * shared files), rank 0 renames them into place; each step agreed. */
base_status run_ep_write_weights(run_ctx *c, const model *m, const char *dir, const char *stem,
                                 uint64_t shard_bytes);
/* The whole model's parameter table (every routed expert, global names, the
 * table order of an EP 1 model) from an EP model's (or any model's): *out
 * [returned count] with the local entries' offsets, gidx[i] the local
 * entry of whole entry i or -1 (another EP index's expert). Caller frees
 * both. */
int run_ep_whole_table(const model *m, model_param **out, int **gidx);
/* ckpt_ep.c: the AdamW state of an EP > 1 run (ZeRO 0 or 1) into the
 * consolidated DIR/optimizer.safetensors ("m.NAME", "v.NAME" of every
 * trained parameter under its global name: what one process writes for
 * the whole model), each element written by exactly one rank holding it.
 * A collective; each step agreed. */
base_status run_ep_write_optim(run_ctx *c, const optim *o, const char *dir);
/* ckpt_ep.c: for every parameter of o (planned from model m's arena), its
 * offset in the arena of the whole model (EP 1, every expert) in src[i],
 * and that arena's size in *whole_n: how a checkpoint's ZeRO 1 shards of
 * an EP 1 run map onto m's arena. m without EP: o's own offsets. */
base_status run_ep_whole_offsets(const model *m, const optim *o, int64_t *src, int64_t *whole_n);
/* run_grpo_memory's roles with sh->ep > 1 (run_ep_check's refusals
 * first): the weights, reference weights, gradients, AdamW state and ZeRO
 * 1 copy of a rank holding 1 / EP of the routed experts (ZeRO 1: its
 * arena split over its W / EP expert-data-parallel ranks, which hold the
 * same arena). pm, rm: the whole policy's and reference's
 * plans (rm->params 0: none). */
base_status run_ep_plan_memory(const model_config *mc, const run_grpo_shape *sh, const model_mem *pm,
                               const model_mem *rm, run_grpo_mem *out);
/* run_grpo_comm's EP parts (run.h) with sh->ep > 1. */
void run_ep_plan_comm(const model_config *mc, const run_grpo_shape *sh, const model_mem *pm, run_grpo_comm *out);

/* ---- data parallel (run_dist.c) ------------------------------------------ */
/* The ranks of a multi-process run hold the same state (weights, optimizer,
 * data cursors: ZeRO stage 0) and make the same decisions from the same
 * gathered data; rank 0 alone writes the run directory. Every helper here is
 * a collective: every rank calls it at the same point. */

/* Rank 0 writes the run directory's files (metrics, samples, summary,
 * checkpoints, report); the other ranks write nothing there. */
static inline int run_writes(const run_ctx *c) { return c->rank == 0; }
/* [lo, hi) of n items for rank r of w: contiguous, in rank order, sizes
 * differing by at most one. */
void run_split(int64_t n, int r, int w, int64_t *lo, int64_t *hi);
/* Every rank learns whether a step that may fail on some ranks failed on
 * any: s on a rank where it failed; BASE_ERR_IO "WHAT: rank R failed (its
 * own message says why)" on the others; BASE_OK when none did. */
base_status run_agree(run_ctx *c, base_status s, const char *what);
/* The trained parameters' gradients (on the op table's device) summed over
 * the ranks, in place (dist_allreduce on c->dev: rank-ordered on the host
 * backend): `grads`, the policy's arena of model_numel values, or with
 * LoRA the adapter's own arena (model_lora_grads; `grads` is then NULL). */
base_status run_reduce_grads(run_ctx *c, float *grads);
/* ZeRO stages 1 and 2 (docs/distributed.md): the range [lo, hi) of an
 * arena of n elements whose AdamW state (and at stage 2 gradients) this rank
 * holds: run_split(n, rank, world) when train->zero_stage is 1 or 2, else
 * all of it. With EP > 1 the arena is the EP index's, split over the
 * expert-data-parallel group: run_split(n, rank / EP, world / EP). */
void run_zero_shard(const run_ctx *c, const recipe_train_cfg *train, int64_t n, int64_t *lo, int64_t *hi);
/* After an optimizer step of a sharded optimizer (o->zero_shards): every
 * rank's updated shard of the parameter arena all-gathered (on c->dev; with
 * EP > 1 over the expert-data-parallel group, o->zero_shards = world / EP
 * ranks holding the same arena), so every rank holds its whole updated
 * weights. A no-op otherwise. */
base_status run_gather_params(run_ctx *c, const optim *o);
/* ---- ZeRO 2 (run_zero.c) ---- */
typedef struct run_zero2 run_zero2;
/* The gradient shard (4 bytes x the optimizer's state range) and the unit
 * windows (model_grad_windows: two alternating, and a tied embedding's)
 * on the device; the optimizer's gradients become the shard
 * (optim_set_grad_shard). Freed by run_zero2_free (waits for what is in
 * flight). */
base_status run_zero2_new(run_ctx *c, optim *o, run_zero2 **out);
void run_zero2_free(run_zero2 *z);
/* One micro-batch's backward: model_backward into grads, or with c->z2 the
 * unit-wise backward whose windows are reduce-scattered (+=) into the
 * shard, every reduction completed before it returns. A collective: at
 * ZeRO 2 every rank makes the same number of calls per optimizer step
 * (run_zero2_pad for the micro-batches a rank lacks). */
base_status run_backward(run_ctx *c, model_train *tr, const float *g_logp, const float *g_ent, float *grads);
/* ZeRO 2: `passes` backward passes' reductions with zero windows (a rank
 * with fewer micro-batches, or one whose micro-batch failed before its
 * backward, so that no rank waits for it); a no-op otherwise. */
base_status run_zero2_pad(run_ctx *c, int64_t passes);
/* The training passes a rank lacks in an optimizer step (the most
 * micro-batches of any rank, run_ep_passes, less its own): with expert
 * parallelism `passes` zero-row passes (model_train_join_forward of tr,
 * of ref when not NULL (the reference's forward), then
 * model_train_join_backward into grads, or into ZeRO 2 / 3's windows,
 * reduced as run_zero2_pad's), so that the EP group's exchanges and the
 * world's reductions pair up call for call; run_zero2_pad without EP. */
base_status run_pad_passes(run_ctx *c, model_train *tr, model_train *ref, float *grads, int64_t passes);
/* The optimizer step: optim_step, or with sharded gradients the global
 * norm from every rank's shard (sums of squares added in rank order)
 * then optim_step_sumsq. A collective at ZeRO 2. */
base_status run_optim_step(run_ctx *c, optim *o, int64_t k, optim_step_info *info);
/* ZeRO 3 (run_zero.c): run_zero3_begin, once the stage has what needs the
 * whole policy (the reference copy, the resumed optimizer state; the
 * rollout engine and the trainer need only its layout): the rank's shard of the master parameters copied out,
 * the policy's arena released (model_arena_release) with the unit hook
 * that all-gathers a unit into a parameter window. run_zero3_end, at the
 * stage's successful end: the gradient side freed, the policy left
 * released (below). run_zero3_write_weights (run_ckpt_save, into the checkpoint's
 * temporary directory): every rank writes its shard's part of the
 * consolidated model.safetensors (run_ckpt_write_range; shard_bytes as
 * run_ckpt_write_weights). No-ops below stage 3. Collectives. */
base_status run_zero3_begin(run_ctx *c);
base_status run_zero3_end(run_ctx *c);
/* After a stage-3 stage the policy stays released (run_zero3_end hands its
 * shard, windows and hook to the run, c->z3): eval and sample stages run on
 * it unit by unit. run_zero3_gather, before a stage that needs the whole
 * arena (a training stage), gathers every rank's shard into it, says so
 * (why) and frees c->z3; a no-op without c->z3. run_zero3_drop frees c->z3
 * without a gather (the policy is replaced or freed). */
base_status run_zero3_gather(run_ctx *c, const char *why);
/* ZeRO 3's sharded load (run_z3load.c): a policy made without its arena
 * (model_load_opts.no_arena) gets the run's shard state (c->z3: this
 * rank's parameter shard, the windows, the unit hook); *shard (device,
 * unfilled) receives arena range [*lo, *hi). A stage-3 stage takes c->z3
 * over (run_zero2_new) instead of copying from an arena. */
base_status run_zero3_open(run_ctx *c, float **shard, int64_t *lo, int64_t *hi);
/* With EP > 1 run_zero3_open's shard is the compact one by class (below:
 * [*lo, *hi) = [0, its elements)); run_zero_ep_parts lists the arena
 * ranges it holds: (*parts)[3i .. 3i + 2] = arena [a, b) at compact index
 * at, arena order within each class (caller frees; 0 and NULL without EP
 * sharding). */
int run_zero_ep_parts(const run_ctx *c, int64_t **parts);
/* Collective: a model (dst, e.g. the frozen reference) gets the released
 * policy's weights, unit by unit: each unit all-gathered into a parameter
 * window, downloaded into one host buffer of the largest unit, and dst's
 * parameters in it set (model_param_from_host); never the whole policy. */
base_status run_zero3_copy_to(run_ctx *c, model *dst);
/* The rule of the sharded load: 1 when the policy loaded before stage
 * `first` (a run's start or resume: the first stage to run; an init_from:
 * its stage) is next trained by a GRPO or SFT stage at zero_stage 3, with
 * no init_from in between, no LoRA and no expert parallelism. */
int run_zero3_load_sharded(const run_ctx *c, int first);
/* The policy from DIR's weights (or, random = 1, model_init_random's with
 * the recipe's init_std) without the whole arena on any rank: the model
 * made without its arena, this rank's range read through
 * run_ckpt_read_range (or drawn), c->z3 set. On error *out is NULL. */
base_status run_zero3_load(run_ctx *c, const char *dir, int random, model **out);
void run_zero3_drop(run_ctx *c);
base_status run_zero3_write_weights(run_ctx *c, const char *dir, uint64_t shard_bytes);
/* ZeRO 3: a phase of forward-only passes of the policy whose number differs
 * by rank (the rollout's prefills and decode steps, the old log-probs).
 * Every unit gather is a collective, so within a phase (run_zero3_phase,
 * then the passes, then run_zero3_sync on every rank, whatever failed)
 * each pass starts with a one-integer agreement, and a rank that has
 * finished (in run_zero3_sync) makes the gathers of every pass the others
 * still make, until none does. run_zero3_phase returns 1 when a phase
 * started (stage 3), 0 otherwise; run_zero3_sync is a no-op outside a
 * phase. Collectives. */
int run_zero3_phase(run_ctx *c);
base_status run_zero3_sync(run_ctx *c);
/* run_param_update of a released policy: the tensor gathered from the
 * shards, fn applied on every rank, each rank's part written back. */
base_status run_zero3_param_update(run_ctx *c, const model_param *p, void (*fn)(float *, int64_t, void *),
                                   void *ctx);
/* ZeRO 2 and 3 with expert parallelism (run_zero.c, docs/distributed.md):
 * the shard is two pieces, the non-expert elements cut over the world and
 * this EP index's expert elements cut over its expert-data-parallel group
 * (each in arena order), held back to back ("compact"). run_zero_ep_optim_new
 * makes c->z2 and the optimizer over the compact shard (its parameters the
 * pieces of the trained tensors; o->zero_stage = stage, zero_shards 0).
 * run_zero_ep_gather, after a ZeRO 2 step: the updated shards all-gathered
 * into the arena (a no-op otherwise). run_zero_ep_owned: the part [a, b)
 * of arena range [lo, hi) (inside one tensor) that this rank's shard holds,
 * at compact index *at; 0 when none. run_zero_ep_params: the compact master
 * weights (device), NULL without EP sharding. run_ep_is_expert: a routed
 * expert's tensor name. */
base_status run_zero_ep_optim_new(run_ctx *c, const optim_config *oc, int stage, optim *o);
base_status run_zero_ep_gather(run_ctx *c);
int run_zero_ep_owned(const run_ctx *c, int64_t lo, int64_t hi, int64_t *a, int64_t *b, int64_t *at);
const float *run_zero_ep_params(const run_ctx *c);
int run_ep_is_expert(const char *name);
/* run_ep_write_optim's parts (ckpt_ep.c: optimizer.safetensors, every
 * trained tensor of the whole table t [ng] as m.NAME, v.NAME pairs in table
 * order) at ZeRO 2 / 3: this rank's parts of its shard by class
 * (run_zero_ep_owned) from mv[0], mv[1] (host m and v indexed like the
 * shard) through w (run_ep.c). */
base_status run_zero_ep_put_optim(run_ctx *c, st_part *w, const model_param *t, const int *g, int ng,
                                  const float *mv[2]);
/* --resume at ZeRO 2 / 3 with EP: this rank's parts of m and v read by
 * name from DIR/optimizer.safetensors (any expert_parallel_size, ZeRO 0-3
 * with EP, or ZeRO 0 without) (run_ep.c); run_ckpt_load_optim_ep (ckpt.c)
 * adds the counters and refuses ZeRO 1 shard files by name. */
base_status run_zero_ep_read_optim(run_ctx *c, const char *dir, optim *o);

/* Loss statistics merged over the ranks (sums added, extremes min / max,
 * flags or'ed), in place: every rank gets the step's. */
base_status run_reduce_loss_stats(run_ctx *c, grpo_loss_stats *s);
/* Rows of a per-completion table shared: row j (len[j] floats at buf + j *
 * stride) was computed by rank owner(j) = the rank whose run_split range of
 * [0, n) holds k, for j = ord[k]; afterwards every rank has every row. */
base_status run_share_rows(run_ctx *c, float *buf, int64_t stride, const int32_t *len, const int *ord, int n);
/* Test hook (tests/dist): GRPO_TEST_FAIL_RANK=R:S makes rank R fail the
 * run's training step S (1-based) with an error, as a rank-local failure
 * would (a file it cannot read, memory it cannot get); BASE_OK otherwise. */
base_status run_test_fault(run_ctx *c);

/* ---- datasets and prompts (run_data.c) ---------------------------------- */

/* The recipe's dataset ds, loaded on first use. A path of the form
 * "stage:NAME" is the output file of sample stage NAME. Malformed lines are
 * errors naming file:line (nothing has been trained yet). */
base_status run_dataset_get(run_ctx *c, const recipe_dataset *ds, run_dataset **out);
/* All rows of a stage's datasets (the list in `dataset`), concatenated:
 * *rows borrows the datasets' rows, *where gets "file:line" strings
 * (malloc'd array of malloc'd strings; free with run_where_free). */
base_status run_stage_rows(run_ctx *c, const recipe_stage_cfg *stage, cJSON ***rows, char ***where, int64_t *n);
void run_where_free(char **where, int64_t n);

/* s as a JSON string literal ("{prompt}\n" shows its newline), for
 * messages; free with cJSON_free. */
char *run_quote(const char *s);
/* The stage's template key: its own, else the recipe's. */
const char *run_template(const run_ctx *c, const recipe_stage_cfg *stage);
/* 1 for the DeepSeek chat format keys "chat" and "r1". */
int run_template_is_chat(const char *tmpl);

/* Render and encode a conversation (the messages before the answer) as the
 * generation prompt, with the stage's template; the one rule generation and
 * SFT share:
 *   "chat", "r1"  the DeepSeek-V3 chat format (r1: the R1 variant, prompt
 *                 ending "<｜Assistant｜><think>\n"), the recipe's
 *                 system_prompt first; only when it is the model's own
 *                 (tok_chat_check), else an error
 *   "r1-zero" (the R1-Zero paper template), "raw" ("{prompt}"), or a text
 *                 with {prompt} and {system}: one question, i.e. a user
 *                 message after at most a system message (into {system},
 *                 after the recipe's system_prompt); any other
 *                 conversation is an error naming its roles
 * ids gets the tokens (overwritten), *text the rendered prompt (malloc'd,
 * NULL on error). Errors name `where`. */
base_status run_render_messages(run_ctx *c, const recipe_stage_cfg *stage, const tok_msg *msgs, int n,
                                const char *where, tok_ids *ids, char **text);

/* Encode the prompt of a row: its prompt column (the first dataset's) is a
 * question (a string) or a conversation (a list of messages), rendered by
 * run_render_messages. A row written by a sample stage, whose "prompt" is
 * the text the model saw and "prompt_template" the template that rendered
 * it, is used as is when the prompt column is "prompt" (encoded as HF
 * encodes the text, added tokens matched, nothing added); an error when
 * the stage's template is another one. Prompts longer than max_len keep
 * their last max_len tokens. */
base_status run_prompt(run_ctx *c, const recipe_stage_cfg *stage, const cJSON *row, const char *where,
                       int64_t max_len, tok_ids *ids, char **text);

/* When a rendered prompt ends with an opened "<think>" (plus whitespace),
 * as the r1 template's does, that tail (a pointer into prompt); else "".
 * The answer to such a prompt starts inside the reasoning. */
const char *run_open_think_tail(const char *prompt);

/* The completion's text: ids decoded with added tokens kept, without the
 * final stop token (EOS). malloc'd. */
char *run_completion_text(run_ctx *c, const int32_t *ids, int64_t n, int stopped_by_token);

/* A reward sample: a copy of the row plus prompt, completion,
 * completion_tokens and finish_reason. */
cJSON *run_make_sample(const cJSON *row, const char *prompt, const char *completion, int64_t ntok,
                       const char *finish);

/* Stop tokens of generation: the tokenizer's EOS and the config's eos ids. */
int run_stop_ids(run_ctx *c, int32_t *ids, int max);

/* The longest prompt, in tokens, of the stage's rows encoded with its
 * template and left-truncated to cap (max_prompt_length): what the stage's
 * rollout engine and trainer are planned with (run_plan.c). Computed once
 * per stage; errors are run_prompt's (a row without a usable prompt). */
base_status run_stage_prompt_tokens(run_ctx *c, const recipe_stage_cfg *st, int64_t cap, int64_t *out);

/* ---- rewards ------------------------------------------------------------ */

/* A reward pool for the stage's rewards (its own, else the recipe's). */
base_status run_reward_pool(run_ctx *c, const recipe_stage_cfg *stage, reward_pool **out);
/* Every row must have the columns the reward scripts declare. */
base_status run_check_columns(reward_pool *p, cJSON **rows, char **where, int64_t n);

/* ---- data order --------------------------------------------------------- */

/* Shuffled order of n rows for (seed, stage, epoch): perm [n] overwritten. */
void run_shuffle(uint64_t seed, uint32_t stage, int64_t epoch, int64_t n, int64_t *perm);

/* ---- output ------------------------------------------------------------- */

/* A compensated (Neumaier) sum: the means a summary reports come out as
 * the correctly rounded mean of their terms (800 rewards of 1.2 and 0.2
 * average to 0.3925, not 0.39249999999999424). */
typedef struct {
    double s, c;
} run_sum;
static inline void run_sum_add(run_sum *k, double v) {
    double t = k->s + v;
    k->c += fabs(k->s) >= fabs(v) ? (k->s - t) + v : (v - t) + k->s;
    k->s = t;
}
static inline double run_sum_get(const run_sum *k) { return k->s + k->c; }

/* Append one line to metrics.jsonl (takes ownership of line). */
void run_metrics_write(run_ctx *c, cJSON *line);
void run_samples_write(run_ctx *c, cJSON *line);
/* TensorBoard event files (tb.c): RUN/tb/events.out.tfevents.*, one per
 * process, every metrics line as scalars tagged "train/", "eval/" or
 * "sample/" + the TRL name, at the run's global step. */
typedef struct run_tb run_tb;
base_status run_tb_open(const char *run_dir, int64_t resume_step, run_tb **out);
/* One Event of the numeric keys of a metrics line (step and global_step
 * excepted) as simple_value scalars. */
base_status run_tb_scalars(run_tb *tb, const char *prefix, const cJSON *line, int64_t step);
void run_tb_close(run_tb *tb);
/* The tag of a metrics key: prefix + "/" + its TRL name. */
void run_tb_tag(const char *prefix, const char *key, char *tag, size_t n);
/* c->tb for this process; resume_step >= 0: a resumed run, whose events
 * from that step on replace the earlier ones (SessionLog START). */
base_status run_tb_start(run_ctx *c, int64_t resume_step);
/* The line's scalars into c->tb (run_metrics_write calls it); a write
 * error warns once and stops the events, never the run. */
void run_tb_metrics(run_ctx *c, const cJSON *line);
/* summary[stage] = obj (takes ownership); rewrites summary.json atomically. */
base_status run_summary_set(run_ctx *c, const char *stage, cJSON *obj);

/* ---- reward errors and parts (run_gen.c) -------------------------------- */

/* The reward error policy: a reward function that fails (raises, overruns
 * its budget or memory, returns a bad value; nil is "not scored", not an
 * error) on more than max_reward_error_rate of the samples scored in the
 * last reward_error_window batches (training steps; in eval and sample
 * stages, generation batches), fewer at the start of a stage, stops the
 * stage with an error naming the function, its script, the first error
 * and the error log. */
typedef struct {
    double max_rate;
    int window, F;
    int64_t *n, *err;      /* ring of the last `window` batches: samples [window], failed calls [window * F] */
    int next, filled;
    int64_t cur_n, *cur_err; /* the batch being collected: samples, failed calls [F] */
    int64_t last_errors;   /* failed calls (all functions) of the last closed batch */
    int64_t total_errors;  /* of the stage */
} run_reward_errors;

void run_reward_errors_init(run_reward_errors *e, const run_ctx *c, int F);
/* Count the failed calls of sc (all its samples) into the current batch. */
void run_reward_errors_add(run_reward_errors *e, const reward_scores *sc);
/* Close the current batch and apply the policy (unit: "step" or "batch",
 * for the message). */
base_status run_reward_errors_close(run_reward_errors *e, reward_pool *pool, const char *unit);
void run_reward_errors_free(run_reward_errors *e);

/* Means of the reward parts: part P of function f averaged over the
 * samples that returned it, logged as "rewards/NAME/P". */
typedef struct {
    int F;
    int *n;            /* [F] parts seen */
    char ***name;      /* [F][n] */
    double **sum;
    int64_t **cnt;
} run_reward_parts;

void run_reward_parts_init(run_reward_parts *a, int F);
/* Add sample i's parts of sc. */
void run_reward_parts_add(run_reward_parts *a, const reward_scores *sc, int64_t i);
/* Add "rewards/NAME/PART": mean to obj. */
void run_reward_parts_put(const run_reward_parts *a, const reward_pool *pool, cJSON *obj);
void run_reward_parts_reset(run_reward_parts *a);
void run_reward_parts_free(run_reward_parts *a);

/* How a row's prompt is rendered, for messages: "template 'r1-zero'",
 * "template 'r1' (a list of messages)", "template '{prompt}\n' (the prompt
 * as it was sampled)" ("" for a row without a prompt). */
void run_prompt_format(run_ctx *c, const recipe_stage_cfg *st, const cJSON *row, base_buf *out);
/* BASE_ERR_LIMIT "WHERE: the WHAT has N tokens with FORMAT; the model takes
 * only M positions (max_position_embeddings): HINT" when n tokens do not
 * fit: n >= M for a prompt (room for one new token), n > M else. */
base_status run_check_positions(run_ctx *c, const recipe_stage_cfg *st, const cJSON *row, const char *where,
                                int64_t n, const char *what, int prompt);

/* ---- generate and score (run_gen.c): the eval and sample stages ---------- */

typedef struct {
    run_ctx *c;
    const recipe_stage_cfg *st;
    reward_pool *pool;     /* borrowed */
    rollout_engine *eng;   /* owned */
    int chunk, K;          /* prompts per call, completions per prompt */
    int64_t max_prompt, max_new;
    rollout_sampling sp;   /* the stage's temperature, top_p, top_k, min_p */
    int32_t stop_ids[8];
    int n_stop_ids;
    recipe_strlist stop;   /* the stage's stop strings (borrowed) */
    tok_ids *pids;         /* [chunk] prompt ids */
    char **ptext;          /* [chunk] rendered prompts */
    const int32_t **pp;
    int32_t *pl;
    /* the last chunk: np prompts x K samples, prompt-major, every rank's */
    int np;
    cJSON **samples;       /* [chunk * K] reward samples */
    int64_t *group_off;    /* [chunk + 1] i * K: the reward groups (a prompt's K samples) */
    reward_scores sc;      /* their scores */
    const rollout_completion *out; /* [np * K] their completions */
    rollout_result res;    /* this rank's share of them (all of them at world size 1) */
    /* several ranks: each generates and scores its run_split share of a
     * chunk, then every rank gets every completion, sample and score */
    int local_chunk;       /* prompts this rank generates per call at most */
    rollout_completion *all; /* [chunk * K] `out` (world > 1) */
    int32_t *all_ids;      /* [chunk * K * max_new] their tokens */
    float *all_logp;       /* [chunk * K * max_new] their sampling log-probs */
    reward_scores sc_local; /* this rank's share's scores (world > 1) */
    cJSON **local_samples; /* [local_chunk * K] its reward samples (world > 1) */
    int64_t new_tokens;    /* totals over the chunks */
    double gen_seconds;
    run_reward_errors errs; /* the error policy; each chunk is a batch unless step_batches */
    int step_batches;      /* 1: the caller closes batches (grpo: one per step) */
} run_gen;

/* Prompts per call for a stage without training: about 256 sequences,
 * at most nrows prompts. */
int run_gen_chunk_size(const recipe_gen_cfg *gen, int64_t nrows);
/* An engine for `chunk` prompts x K (gen's num_generations) per call (its
 * run_split share of them per rank); sampling, lengths and stops from gen
 * (the stage's generation settings). */
base_status run_gen_init(run_gen *g, run_ctx *c, const recipe_stage_cfg *st, const recipe_gen_cfg *gen,
                         reward_pool *pool, int chunk);
/* rows[0..np) (np <= chunk): prompts, K completions each (Philox keys
 * (seed, step_key, prompt_base + i, sample, position)), reward samples,
 * scores; a prompt that leaves the model no position to generate into is an
 * error naming its row and the template. The reward errors are counted
 * (g->errs) and, unless step_batches, the policy applied to the chunk.
 * Several ranks: a collective; rank r generates and scores prompts
 * run_split(np, r) and every rank gets the whole chunk (g->out, samples,
 * sc), the same bytes as one process would have made. */
base_status run_gen_chunk(run_gen *g, cJSON **rows, char **where, int np, uint32_t step_key,
                          uint32_t prompt_base);
void run_gen_free(run_gen *g);

/* ---- stages (stage_*.c) ------------------------------------------------- */

typedef struct run_ckpt run_ckpt; /* a loaded checkpoint (ckpt.c) */

/* The stages, over their typed config (the recipe checked every option;
 * stage->index is the stage's position). */
base_status run_stage_grpo(run_ctx *c, const recipe_stage_cfg *stage, const run_ckpt *resume_from);
base_status run_stage_sft(run_ctx *c, const recipe_stage_cfg *stage, const run_ckpt *resume_from);
base_status run_stage_eval(run_ctx *c, const recipe_stage_cfg *stage);
base_status run_stage_sample(run_ctx *c, const recipe_stage_cfg *stage);
/* The sample stage's keep expression compiled without running anything
 * (the pre-flight's check; the stage compiles it first too). */
base_status run_stage_sample_check(const recipe_stage_cfg *stage);

/* Build an optim over the policy's trainable parameters (MTP excluded):
 * the stage's optimizer settings, a schedule over max_steps. With a LoRA
 * adapter (c->lora) the trainable parameters are the adapter's (its own
 * gradient arena; grads is not used: pass NULL, the base is frozen). */
base_status run_optim_new(run_ctx *c, const recipe_train_cfg *train, int64_t max_steps, float *grads, optim *o);
/* optim_free, and the stage's ZeRO 2 state (c->z2). */
void run_optim_free(run_ctx *c, optim *o);
/* The base's gradient arena for a training stage: NULL with a LoRA adapter
 * (frozen base: model_backward skips its weight gradients) and at ZeRO 2
 * (the gradients are run_optim_new's shard). */
float *run_policy_grads(run_ctx *c, const recipe_train_cfg *train);
/* Apply a host-side update to the policy's master values of one parameter
 * by name (the MoE router bias after a step, ...): fn(vals, numel, ctx) on
 * the host copy of the tensor, written back and the compute copy
 * refreshed. Every rank calls it with the same fn (the weights are
 * replicated at ZeRO 0, 1 and 2: each rank updates its copy the same way;
 * at ZeRO 3 the tensor is gathered from the shards and each rank writes
 * its part back: run_zero3_param_update). A collective at ZeRO 3.
 * Errors: no such parameter (BASE_ERR_INVALID naming it), a frozen model
 * without master weights (BASE_ERR_UNSUPPORTED). */
base_status run_param_update(run_ctx *c, const char *name, void (*fn)(float *vals, int64_t numel, void *ctx),
                             void *ctx);
/* After an optimizer step: the compute weights of what it updated (the
 * adapter's bf16 copy with LoRA, else the policy's; bf16 mode). */
void run_sync_policy(run_ctx *c);
/* Add a host-side delta to one of the policy's parameters, by its Hugging
 * Face name (n values): what moves e_score_correction_bias (run_moe.c).
 * scratch: host [n]. At ZeRO 0 and 1 every rank holds the whole arena and
 * applies the same delta. BASE_ERR_INVALID for an unknown name or another
 * size, BASE_ERR_UNSUPPORTED when the base weights are frozen (LoRA). */
base_status run_param_add(run_ctx *c, const char *name, const float *delta, float *scratch, int64_t n);

/* ---- MoE expert load and aux-loss-free balancing (run_moe.c) ------------ */
/* Per layer and routed expert, the tokens the training forwards of an
 * optimizer step sent there (model_train_expert_load), summed over the
 * ranks at the step's end (exact integer sums); after an applied update,
 * DeepSeek-V3's bias step e_score_correction_bias[l][i] +=
 * speed * sign(mean_l - load_l,i) from those global loads; the logged
 * step's totals for metrics.jsonl (docs/training.md, "MoE expert load"). */
typedef struct {
    int L, E;       /* layers, routed experts; L = 0: the model has no MoE layer (all no-ops) */
    uint8_t *moe;   /* [L] MoE layers */
    int64_t *opt;   /* [L E] this optimizer step's counts (this rank's until run_moe_update) */
    int64_t *step;  /* [L E] the logged step's global counts */
    int64_t opt_pairs[2], step_pairs[2]; /* (token, expert) pairs routed, processed */
    double speed;   /* router_bias_update_speed */
    float *delta, *scratch; /* host [E] */
    double aux_coef; /* router_aux_loss_coef */
    double opt_aux[2], step_aux[2]; /* balance loss summed over layers and sequences; sequences */
} run_moe;
/* Sized for the policy; refuses a bias speed > 0 on a frozen base (LoRA). */
base_status run_moe_init(run_ctx *c, const recipe_train_cfg *train, run_moe *mo);
void run_moe_free(run_moe *mo);
/* A new logged step: its totals to zero. */
void run_moe_step_reset(run_moe *mo);
/* Before an optimizer step's micro-batches: with router_aux_loss_coef
 * alpha > 0, tr's forwards compute the sequence-wise balance loss and its
 * backwards add the gradient of alpha / n_seqs times its sum over the
 * sequences (n_seqs: the optimizer step's, over every rank: the mean). */
void run_moe_aux_begin(run_moe *mo, model_train *tr, int64_t n_seqs);
/* After a training forward of tr over nseq sequences (whose backward the
 * step applies): its expert loads and balance loss. */
void run_moe_add(run_moe *mo, const model_train *tr, int nseq);
/* At the end of an optimizer step, on every rank (a collective): the
 * step's counts summed over the ranks into the logged step's totals, then,
 * when applied (the update was not skipped) and speed > 0, the bias step
 * of every MoE layer. */
base_status run_moe_update(run_ctx *c, run_moe *mo, int applied);
/* The logged step's moe/ metrics into line: moe/load_max_over_mean (the
 * worst layer), moe/load_max_over_mean/layer_L per MoE layer,
 * moe/dropped_tokens, and with router_aux_loss_coef alpha > 0
 * moe/aux_loss (alpha times the mean over the step's sequences of the
 * balance loss summed over layers: the term the training loss gets).
 * Nothing when the model has no MoE layer. */
void run_moe_put(const run_moe *mo, cJSON *line);

/* ---- report (report.c) -------------------------------------------------- */

/* RUN/report.html with PNG plots (gnuplot) from metrics.jsonl and
 * summary.json. Without gnuplot the page says so and lists the data. */
base_status run_report_write(const char *run_dir);

#include "run_ckpt.h" /* checkpoints: ckpt.c, ckpt_optim.c, ckpt_shard.c, ckpt_ep.c */

#endif
