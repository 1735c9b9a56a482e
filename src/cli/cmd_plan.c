/*
 * grpo plan: the device memory of a GRPO stage per rank, by role, and the
 * bytes each collective moves per step, for a model config on N GPUs
 * (run_grpo_memory and run_grpo_comm_volume: the sizing code the run
 * allocates with; tests/dist/test_dp.c checks every rank's plan against
 * what it allocated). A plan, no GPU needed.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "model/model.h"
#include "recipe/recipe.h"
#include "train/grpo.h"
#include "train/run.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: grpo plan --model DIR|CONFIG.json --gpus N [--zero 0|1|2|3] [--ep E] [--precision f32|bf16|fp8]\n"
            "                 [--gpu-memory 80GB] [--recipe R.lua [--stage NAME]] [--lora-r R]\n"
            "  The device memory of a GRPO stage on each of N data-parallel ranks, by role\n"
            "  (weights, LoRA adapter, gradients, AdamW m and v, reference model, activations,\n"
            "  reference pass, rollout engine, ZeRO 1/2's all-gather copy), whether it fits in\n"
            "  --gpu-memory (decimal GB, default 80GB), the smallest GPU count it fits on, and\n"
            "  the bytes each collective moves per optimizer step per rank. Shapes come from\n"
            "  the recipe's GRPO stage (the first, or --stage NAME), else TRL-like defaults\n"
            "  (printed). --precision: bf16 by default (or the recipe's); LoRA (--lora-r, or the\n"
            "  recipe's lora table) holds its base frozen in it (fp8: LoRA only). ZeRO 2 shards\n"
            "  the gradients, ZeRO 3 the parameters too (full fine-tuning). --ep E (or the\n"
            "  recipe's expert_parallel_size): the routed experts split over E consecutive ranks\n"
            "  (E divides N and n_routed_experts; ZeRO 0 or 1), with the MoE all-to-all bytes\n"
            "  per decode step, prefill and training step.\n");
}

typedef struct {
    run_grpo_shape sh;        /* world, rank set per plan */
    int64_t gen_batch;        /* generation_batch_size; 0: 8 per GPU (TRL: per_device x processes) */
    double beta;
} plan_in;

/* The shape on W ranks (generation_batch_size scales with W when not given). */
static run_grpo_shape shape_at(const plan_in *in, int W) {
    run_grpo_shape sh = in->sh;
    int64_t n = in->gen_batch > 0 ? in->gen_batch : 8 * (int64_t)W;
    sh.prompts = n / sh.num_generations > 0 ? n / sh.num_generations : 1;
    sh.world = W;
    return sh;
}

/* The plan of the rank holding the largest ZeRO shard (run_split sizes
 * differ by one element; rank 0 otherwise) in *out, its rank returned. */
static int largest_rank(const model_config *mc, const run_grpo_shape *sh0, run_grpo_mem *out, base_status *s) {
    run_grpo_shape sh = *sh0;
    sh.rank = 0;
    if ((*s = run_grpo_memory(mc, &sh, out))) return 0;
    if (sh.zero_stage < 1 || sh.world <= 1) return 0;
    if (sh.ep > 1) { /* non-expert shards over W, expert shards over W / EP */
        model_mem pm;
        if ((*s = model_memory_plan(mc, &sh.load, sh.device, &pm))) return 0;
        sh.rank = run_ep_plan_largest_rank(mc, &sh, pm.params);
        *s = run_grpo_memory(mc, &sh, out);
        return sh.rank;
    }
    int64_t n = out->numel, W = sh.world, best = 0, bsz = -1;
    for (int64_t r = 0; r < W; r++) { /* run_split(n, r, W) */
        int64_t sz = n * (r + 1) / W - n * r / W;
        if (sz > bsz) bsz = sz, best = r;
    }
    sh.rank = (int)best;
    *s = run_grpo_memory(mc, &sh, out);
    return (int)best;
}

/* A rank's peak: the stage's plan, or at ZeRO 3 after a stage at 0-2 the
 * opening with the whole model, when that is more. */
static size_t run_peak(const run_grpo_mem *m) { return m->release_peak > m->total ? m->release_peak : m->total; }

static void line(const char *role, size_t r0, size_t rl) {
    printf("  %-34s %20zu %10.2f GiB %20zu %10.2f GiB\n", role, r0, r0 / 1073741824.0, rl, rl / 1073741824.0);
}

static int parse_int(const char *v, long lo, long hi, long *out) {
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

int cli_cmd_plan(int argc, char **argv) {
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    const char *model_path = NULL, *recipe_path = NULL, *stage_name = NULL, *prec_name = NULL;
    long gpus = 0, zero = -1, lora_r = 0, ep_opt = 0;
    double gpu_gb = 80;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--model")) model_path = v, bad = !v;
        else if (!strcmp(a, "--recipe")) recipe_path = v, bad = !v;
        else if (!strcmp(a, "--stage")) stage_name = v, bad = !v;
        else if (!strcmp(a, "--precision")) prec_name = v, bad = !v;
        else if (!strcmp(a, "--gpus")) bad = parse_int(v, 1, 1 << 20, &gpus);
        else if (!strcmp(a, "--ep")) bad = parse_int(v, 1, 4096, &ep_opt);
        else if (!strcmp(a, "--zero")) {
            bad = parse_int(v, 0, 3, &zero);
        } else if (!strcmp(a, "--lora-r")) bad = parse_int(v, 1, MODEL_LORA_MAX_RANK, &lora_r);
        else if (!strcmp(a, "--gpu-memory")) {
            char *end;
            gpu_gb = v ? strtod(v, &end) : 0;
            bad = !v || !(gpu_gb > 0 && gpu_gb < 1e6) || (*end && strcmp(end, "GB") && strcmp(end, "G"));
        } else {
            usage(stderr);
            return 2;
        }
        if (bad) return cli_usage_error("plan", "%s %s: bad value", a, v ? v : "(missing)");
        i++;
    }
    if (!model_path || !gpus) {
        usage(stderr);
        return 2;
    }
    model_config mc;
    base_status s = model_config_load(model_path, &mc);
    recipe *rc = NULL;
    model_lora_config lc = {.r = (int)lora_r, .lora_alpha = 2.0 * (double)lora_r,
                            .targets = (1u << MODEL_LORA_NTARGETS) - 1}; /* all-linear, alpha 2r */
    plan_in in = {.sh = {.load = {.precision = MODEL_BF16}, .device = TENSOR_CUDA, .num_generations = 8,
                         .max_prompt = 512, .max_completion = 256, .micro_batch = 8, .recompute = 1}};
    int zs = 0;
    const char *src = "TRL-like defaults";
    if (!s && recipe_path) {
        s = recipe_load(recipe_path, NULL, 0, &rc);
        const recipe_cfg *c = rc ? recipe_config(rc) : NULL;
        const recipe_stage_cfg *st = NULL;
        for (int k = 0; c && k < c->n_stages && !s; k++)
            if (c->stages[k].type == RECIPE_STAGE_GRPO && (!stage_name || !strcmp(c->stages[k].name, stage_name))) {
                st = &c->stages[k];
                /* ZeRO 3: the policy comes whole when the training stage
                 * before it (no init_from between) trains at 0-2; else the
                 * run loads it sharded or holds it so (run_zero3_load_sharded) */
                for (int j = k; j >= 1; j--) {
                    const recipe_stage_cfg *p = &c->stages[j - 1];
                    if (c->stages[j].init_from) break;
                    const recipe_train_cfg *t = p->type == RECIPE_STAGE_GRPO  ? &p->grpo.train
                                                : p->type == RECIPE_STAGE_SFT ? &p->sft.train
                                                                              : NULL;
                    if (t) {
                        in.sh.whole_at_open = t->zero_stage != 3;
                        break;
                    }
                }
                break;
            }
        if (!s && !st)
            s = base_err_set(BASE_ERR_INVALID, "%s: no GRPO stage%s%s", recipe_path, stage_name ? " named " : "",
                             stage_name ? stage_name : "");
        if (!s) {
            const recipe_grpo_cfg *g = &st->grpo;
            in.sh.num_generations = g->gen.num_generations;
            in.sh.max_prompt = g->gen.max_prompt_length;
            in.sh.max_completion = g->gen.max_completion_length;
            in.sh.micro_batch = g->per_device_train_batch_size;
            in.sh.recompute = g->train.gradient_checkpointing;
            in.sh.ref = grpo_needs_ref_logp(&g->loss);
            in.gen_batch = g->generation_batch_size;
            in.beta = g->beta;
            zs = (int)g->train.zero_stage;
            in.sh.ep = (int)g->train.expert_parallel_size;
            if (!prec_name) s = model_precision_parse(c->precision, &in.sh.load.precision);
            if (c->lora.set && !lora_r) lc = c->lora.model;
            src = st->name;
        }
    }
    if (!s && prec_name) s = model_precision_parse(prec_name, &in.sh.load.precision);
    if (s) {
        fprintf(stderr, "grpo plan: %s\n", base_err_msg());
        recipe_free(rc);
        return 1;
    }
    if (zero >= 0) zs = (int)zero;
    in.sh.zero_stage = zs;
    if (ep_opt) in.sh.ep = (int)ep_opt;
    int ep = in.sh.ep > 1 ? in.sh.ep : 1;
    if (lora_r || (rc && recipe_config(rc)->lora.set)) in.sh.lora = &lc, in.sh.load.frozen = 1;
    in.sh.load.max_context = in.sh.max_prompt + in.sh.max_completion;
    double budget = gpu_gb * 1e9;

    run_grpo_shape sh = shape_at(&in, (int)gpus);
    run_grpo_mem m0, ml;
    sh.rank = 0;
    s = run_grpo_memory(&mc, &sh, &m0);
    int rl = s ? 0 : largest_rank(&mc, &sh, &ml, &s);
    if (s) {
        fprintf(stderr, "grpo plan: %s\n", base_err_msg());
        recipe_free(rc);
        return 1;
    }
    printf("model: %s (%lld parameters)\n", model_path, (long long)model_config_param_count(&mc, NULL));
    printf("GRPO on %ld GPUs, ZeRO %d, expert_parallel_size %d, %s%s; shapes from %s: num_generations %lld, generation_batch_size %lld "
           "(%lld prompts per step, at most %lld per rank), max_prompt_length %lld, max_completion_length %lld, "
           "per_device_train_batch_size %lld, gradient_checkpointing %s, reference model %s\n",
           gpus, zs, ep, model_precision_name(in.sh.load.precision), in.sh.lora ? " (LoRA: the base frozen)" : "", src,
           (long long)sh.num_generations, (long long)(sh.prompts * sh.num_generations), (long long)sh.prompts,
           (long long)((sh.prompts + gpus - 1) / gpus), (long long)sh.max_prompt, (long long)sh.max_completion,
           (long long)sh.micro_batch, sh.recompute ? "on" : "off",
           sh.lora ? (sh.ref ? "the base, adapter off" : "no") : sh.ref ? "yes (beta != 0)" : "no");
    if (in.sh.lora)
        printf("LoRA: r %d, lora_alpha %g, %lld adapter parameters\n", lc.r, lc.lora_alpha,
               (long long)model_lora_param_count(&mc, &lc));
    char hl[32];
    snprintf(hl, sizeof hl, "largest: rank %d", rl);
    printf("  %-34s %31s %31s\n", "memory per rank (bytes)", "rank 0", hl);
    line("weights", m0.weights, ml.weights);
    line("LoRA adapter", m0.adapter, ml.adapter);
    line("gradients", m0.grads, ml.grads);
    line("AdamW m, v", m0.optimizer, ml.optimizer);
    line("reference model", m0.ref_weights, ml.ref_weights);
    line("activations", m0.activations, ml.activations);
    line("reference pass activations", m0.ref_activations, ml.ref_activations);
    line("rollout (KV cache, tables, workspace)", m0.rollout, ml.rollout);
    if (ep > 1) line("  (of these three: EP dispatch)", m0.ep_dispatch, ml.ep_dispatch);
    line("ZeRO 1/2 all-gather copy", m0.gather, ml.gather);
    line("total", m0.total, ml.total);
    if (zs == 3 && !in.sh.lora && in.sh.whole_at_open) /* an earlier stage-0-2 stage left the policy whole */
        line("ZeRO 3 peak at the release", m0.release_peak, ml.release_peak);
    size_t need = run_peak(&ml);
    printf("fits in %g GB: %s (largest rank %.2f GB%s)\n", gpu_gb, need <= budget ? "yes" : "NO", need / 1e9,
           need > ml.total && ep > 1 ? ": the EP index's model, left whole by the stage before (zero_stage 0-2), "
           "beside the buffers made before the release"
           : need > ml.total ? ": the whole model, left by the stage before (zero_stage 0-2), beside the buffers "
           "made before the release" : zs == 3 && !in.sh.lora && !in.sh.whole_at_open
                                   ? "; the load reads each rank's shard only" : "");
    /* a rank's bytes never grow with W (its prompts ceil(P / W), its ZeRO
     * shard ceil(n / W)): the smallest W in [1, 4096] that fits (a multiple
     * of EP), by bisection */
    int fit_at = 0, lo = 1, hi = 4096 / ep;
    while (lo <= hi && !s) {
        int W = (lo + (hi - lo) / 2) * ep;
        run_grpo_shape t = shape_at(&in, W);
        run_grpo_mem mm;
        largest_rank(&mc, &t, &mm, &s);
        if (!s && run_peak(&mm) <= budget) fit_at = W, hi = W / ep - 1;
        else lo = W / ep + 1;
    }
    if (s) {
        fprintf(stderr, "grpo plan: %s\n", base_err_msg());
        recipe_free(rc);
        return 1;
    }
    int steps_at = 0; /* ZeRO 3: the steps alone (total, the load's release peak aside) */
    for (lo = 1, hi = 4096 / ep; zs == 3 && !in.sh.lora && lo <= hi && !s;) {
        int W = (lo + (hi - lo) / 2) * ep;
        run_grpo_shape t = shape_at(&in, W);
        run_grpo_mem mm;
        largest_rank(&mc, &t, &mm, &s);
        if (!s && mm.total <= budget) steps_at = W, hi = W / ep - 1;
        else lo = W / ep + 1;
    }
    if (s) {
        fprintf(stderr, "grpo plan: %s\n", base_err_msg());
        recipe_free(rc);
        return 1;
    }
    if (steps_at && steps_at != fit_at)
        printf("the training steps alone (ZeRO 3 shards, windows, activations, rollout; the load aside) fit from %d "
               "GPUs (EP %d)\n", steps_at, ep);
    if (fit_at)
        printf("smallest GPU count it fits on (ZeRO %d, EP %d, these shapes): %d\n", zs, ep, fit_at);
    else
        printf("fits on no GPU count up to 4096 at ZeRO %d: %s alone exceed %g GB (%s)\n", zs,
               ep > 1 && zs == 3 ? (in.sh.whole_at_open ? "the EP index's model left whole by the stage before "
                                                          "(zero_stage 0-2) or the unit windows, activations and rollout"
                                                        : "the unit windows, activations and rollout")
               : ep > 1 ? "the non-expert weights and gradients, 1 / EP of the experts' and the activations"
               : zs < 2 ? "the replicated weights, gradients and activations"
               : zs == 2 ? "the replicated weights and activations"
                         : in.sh.whole_at_open ? "the whole model left by the stage before (zero_stage 0-2)"
                                                 : "the unit windows, activations and rollout",
               gpu_gb, zs < 3 ? "needs ZeRO 3 or expert / tensor parallelism"
               : in.sh.whole_at_open ? "train the stage before at zero_stage 3 too"
                                     : "needs expert / tensor parallelism");
    run_grpo_comm cv;
    run_grpo_comm_volume(&mc, &sh, &cv);
    printf("communication per optimizer step per rank (bytes sent, ring algorithms; computed):\n");
    if (zs >= 2) {
        char what[64];
        snprintf(what, sizeof what, "gradient reduce-scatters (%lld mb)", (long long)cv.micro_batches);
        printf("  %-34s %20.0f %10.2f GiB\n", what, cv.grad_reduce_scatter, cv.grad_reduce_scatter / 1073741824.0);
    } else {
        printf("  %-34s %20.0f %10.2f GiB\n", "gradient all-reduce", cv.grad_allreduce,
               cv.grad_allreduce / 1073741824.0);
    }
    if (zs == 3) {
        printf("  %-34s %20.0f %10.2f GiB\n", "ZeRO 3 unit gathers, training", cv.train_allgather,
               cv.train_allgather / 1073741824.0);
        printf("  %-34s %20.0f %10.2f GiB\n", "ZeRO 3 unit gathers, rollout", cv.rollout_allgather,
               cv.rollout_allgather / 1073741824.0);
    } else {
        printf("  %-34s %20.0f %10.2f GiB\n", "ZeRO 1/2 parameter all-gather", cv.param_allgather,
               cv.param_allgather / 1073741824.0);
    }
    printf("  %-34s %20.0f\n", "loss statistics all-reduces", cv.metrics);
    if (ep > 1) {
        printf("expert-parallel all-to-alls per rank (bytes sent in the EP group of %d; uniform routing, f32 rows; "
               "computed):\n", ep);
        printf("  %-34s %20.0f %10.2f MiB\n", "per decode step", cv.a2a_decode_step, cv.a2a_decode_step / 1048576.0);
        printf("  %-34s %20.0f %10.2f MiB\n", "per prefill (one per step)", cv.a2a_prefill,
               cv.a2a_prefill / 1048576.0);
        printf("  %-34s %20.0f %10.2f GiB\n", "per training step", cv.a2a_train, cv.a2a_train / 1073741824.0);
    }
    recipe_free(rc);
    return 0;
}
