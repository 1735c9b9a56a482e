/*
 * run: the R1 pipeline driver. `grpo run RECIPE.lua` loads a recipe
 * (src/recipe) and runs its stages in order, each starting from the weights
 * the previous one left:
 *
 *   sft     masked next-token NLL on completion / assistant tokens, packed
 *   grpo    rollout -> rewards -> group advantages -> GRPO loss -> AdamW
 *   sample  rejection sampling: G completions per prompt, rewards, a keep
 *           expression and R1's filters, written as SFT rows (the prompt as
 *           the model saw it, the completion, the template, chat messages)
 *   eval    pass@1 over K samples and cons@K (majority vote)
 *
 * Everything a run writes goes to OUTPUT_DIR/NAME/ (the run directory):
 *   config.resolved.lua   every value the run used
 *   metrics.jsonl         one line per training step and per eval
 *   samples.jsonl         prompts, completions, rewards, advantages (every
 *                         log_completions_steps GRPO steps)
 *   reward_errors.log     reward scripts that failed (never fatal)
 *   checkpoints/step-N/   HF-layout weights + optimizer + trainer state
 *   summary.json          per-stage results ({"eval_after": {"accuracy": ..}})
 *   report.html, plots/   the report (gnuplot PNGs)
 *
 * Determinism: every random draw is keyed by (seed, stage, step, ...), the
 * CPU numerics do not depend on thread count or batch composition, and a
 * checkpoint holds everything else, so `--resume` continues bit-exactly.
 *
 * Stopping: a stop request (opts.stop_signal, set by the command's SIGINT /
 * SIGTERM handler) is honoured where a stage can stop cleanly: a training
 * stage finishes its current step and writes a checkpoint; an eval or
 * sample stage finishes its current chunk of prompts and keeps nothing of
 * the stage (they keep no partial results; a resume runs them again from
 * their start, with the same results: they are deterministic); no new
 * stage starts. run_recipe then returns BASE_ERR_INTERRUPTED with
 * "interrupted at step N ...; --resume continues".
 *
 * Resuming with a changed recipe: the recipe is compared key by key with
 * the run directory's config.resolved.lua (recipe_changes) and every
 * difference printed; a change to a key that alters the trained result
 * (every key but those marked RF_NEUTRAL in the schema: output paths,
 * logging, checkpoint cadence, threads, the report) is refused unless
 * opts.allow_changes; the previous config is kept as
 * config.history/config.resolved.K.lua before the new one is written.
 */
#ifndef GRPO_TRAIN_RUN_H
#define GRPO_TRAIN_RUN_H

#include <signal.h>

#include "base/base.h"
#include "recipe/recipe.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int resume;         /* continue from the run directory's last checkpoint */
    int resume_last_good; /* with resume: the newest checkpoint that verifies,
                           * setting aside newer corrupt ones (else an error) */
    int overwrite;      /* replace an existing run directory (else an error) */
    int quiet;          /* no progress bars */
    const char *device; /* "cpu", "cuda", "auto"; NULL: the recipe's */
    const char *precision; /* "f32", "bf16"; NULL: the recipe's */
    /* stop after this many training steps of the whole run (0: no limit):
     * for tests of resume ("2N straight" vs "N, resume, N") */
    int64_t max_total_steps;
    /* for the one-stage commands (grpo eval, sample, sft): no_results, they
     * print the results themselves (their stdout stays theirs); temporary_dir,
     * they remove the run directory afterwards, so no message names it */
    int no_results;
    int temporary_dir;
    /* stop request: NULL, or a flag a signal handler sets to the signal
     * number (0: none); read at the end of every training step and between
     * the chunks of eval and sample stages (see "Stopping" above) */
    volatile sig_atomic_t *stop_signal;
    int allow_changes; /* resume: accept a recipe whose changes alter the trained result */
} run_opts;

/* ---- memory by role (run_mem.c) --------------------------------------------
 * The device bytes a GRPO stage holds, by role, from the sizing functions
 * the run allocates with (model_memory_plan, model_lora_param_bytes,
 * model_train_bytes_p, rollout_bytes): the stage records them in
 * summary.json ("memory_plan"), tests/train/test_lora_run.c checks them
 * against what a run allocates, and bench/mem_plan.c prints them for
 * large configs (docs/model.md). */
typedef struct {
    model_load_opts load;          /* the policy's load options (precision, max_context, ...) */
    tensor_device device;          /* the backend's (TENSOR_CPU, TENSOR_CUDA) */
    const model_lora_config *lora; /* NULL: full fine-tuning */
    int64_t num_generations;       /* G */
    int64_t prompts;               /* per step: generation_batch_size / G */
    int64_t max_prompt, max_completion; /* tokens (the longest prompt of the data, max_completion_length) */
    int64_t micro_batch;           /* completions per micro-batch (per_device_train_batch_size; 0: all) */
    int recompute;                 /* gradient_checkpointing */
    int ref;                       /* beta != 0: a reference pass */
    int world, rank;               /* data-parallel ranks (0: 1) and the one planned */
    int zero_stage;                /* 0: replicated; 1: AdamW m, v sharded by run_split range;
                                    * 2: gradients too (a shard + unit windows); 3: parameters too */
    int ep;                        /* expert_parallel_size (0: 1): the routed experts split over EP
                                    * consecutive ranks; needs zero_stage <= 1 and no LoRA */
    int whole_at_open;             /* ZeRO 3: the policy reaches the stage whole (an earlier stage
                                    * trained it at zero_stage 0-2), so the opening releases its
                                    * arena (release_peak); 0: the run holds it sharded already
                                    * (ZeRO 3's sharded load, or a stage-3 stage before) */
} run_grpo_shape;

typedef struct {
    size_t weights;         /* the policy model as loaded (with LoRA: the frozen base) */
    size_t adapter;         /* LoRA A and B (f32, + the bf16 copy in bf16 mode); 0 without */
    size_t grads;           /* the gradient arena: the model's, or only the adapter's; ZeRO 2:
                             * the rank's shard + the unit windows (model_grad_windows) */
    size_t optimizer;       /* AdamW m and v over what trains */
    size_t ref_weights;     /* the reference model (full fine-tuning with beta != 0: frozen,
                             * compute weights only); LoRA: 0, the base with the adapter off */
    size_t activations;     /* the trainer's activation arena */
    size_t ref_activations; /* the reference pass's arena (full fine-tuning, beta != 0; LoRA: 0) */
    size_t rollout;         /* latent cache pages, block tables, prefill/decode workspace, for
                             * the rank's share of a step's prompts: ceil(prompts / world) groups */
    size_t gather;          /* ZeRO 1 / 2 on several ranks: the copy of the rank's parameter shard its
                             * all-gather sends (held while the gathered weights arrive) */
    size_t total;
    size_t ep_dispatch;     /* EP > 1: of activations, ref_activations and rollout, the MoE dispatch
                             * buffers (rows received from every peer, counts, expert-sorted rows,
                             * planned for the worst case: all of every peer's rows to this rank);
                             * not a role of its own (total does not add it again) */
    size_t release_peak;    /* ZeRO 3 with whole_at_open: the stage's opening before the arena's
                             * release: the model whole (its f32 arena + bf16 copy) beside what
                             * the stage allocates before it (all of total but the activations
                             * and the rollout); 0 otherwise (below stage 3, and a sharded load:
                             * no rank ever holds the whole model). A rank peaks at max(total,
                             * this) */
    int64_t numel;          /* elements of the trained arena (what the ZeRO shards split) */
    int64_t expert_numel;   /* of which routed experts held by this rank (EP: 1 / EP of them) */
} run_grpo_mem;

/* BASE_ERR_INVALID / UNSUPPORTED: the load options' precision checks
 * (model_memory_plan); ZeRO 2 with LoRA, ZeRO 3 (as the run refuses them). */
base_status run_grpo_memory(const model_config *mc, const run_grpo_shape *sh, run_grpo_mem *out);
/* out as a JSON object of byte counts, the role names above (and "total"). */
cJSON *run_grpo_memory_json(const run_grpo_mem *m);

/* Bytes each collective moves per rank per optimizer step (sent; a ring
 * receives as much): the gradient all-reduce 2 (W-1)/W x the gradient
 * arena, ZeRO 1's parameter all-gather (W-1)/W x the parameter arena, and
 * the small reductions of the loss statistics and step agreement. All 0
 * on one rank. */
typedef struct {
    double grad_allreduce, param_allgather, metrics;
    /* ZeRO 2 instead of grad_allreduce: the window reduce-scatters, (W-1)/W
     * x the units' bytes per micro-batch, over micro_batches (the most a
     * rank trains per optimizer step), and the norm's one double */
    double grad_reduce_scatter;
    int64_t micro_batches;
    /* ZeRO 3 instead of param_allgather: the unit gathers of every training
     * micro-batch's forward and backward (2 x (W-1)/W x the units' bytes
     * each), and of the rollout's passes per generation step (a prefill and
     * max_completion - 1 decode steps, (W-1)/W x the units' bytes each) */
    double train_allgather, rollout_allgather;
    /* expert parallelism (EP > 1): grad_allreduce sums the non-expert
     * arena over the W ranks and the rank's experts over its W / EP
     * expert-data-parallel ranks; ZeRO 1's param_allgather gathers the
     * rank's arena over those W / EP ranks; the MoE all-to-alls inside the EP
     * group, bytes this rank sends (uniform routing: (EP - 1) / EP of its
     * rows leave it; rows of hidden_size f32; every MoE layer of the main
     * model a dispatch and a combine, plus the (EP - 1) E / EP int64
     * counts): per decode step of the rollout, per prefill (one per
     * generation step), and per optimizer step of training (forward and
     * backward, the recomputation with gradient_checkpointing and the
     * reference pass with beta != 0; one pass over the generation batch) */
    double a2a_decode_step, a2a_prefill, a2a_train;
} run_grpo_comm;
void run_grpo_comm_volume(const model_config *mc, const run_grpo_shape *sh, run_grpo_comm *out);
/* With sh->ep > 1 at ZeRO 1: the rank whose AdamW shard is the largest
 * (each rank's arena split over its W / EP expert-data-parallel ranks;
 * params: the whole policy arena, every expert). run_ep.c. */
int run_ep_plan_largest_rank(const model_config *mc, const run_grpo_shape *sh, int64_t params);

/* Run every stage of the recipe. Errors name the stage, the file and the
 * line; a failure leaves the run directory consistent (the last complete
 * checkpoint stays valid). */
base_status run_recipe(const recipe *rc, const run_opts *opts);

/* The run directory a recipe writes to (malloc'd). */
char *run_dir_of(const recipe *rc);

#ifdef __cplusplus
}
#endif

#endif
