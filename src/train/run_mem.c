/*
 * Memory of a GRPO stage by role, from the sizing functions its buffers are
 * allocated with (run.h). The shape is the stage's (stage_grpo.c builds
 * the same one and records the result in summary.json):
 *
 *   trainer        model_train_limits {mb * (max_prompt + max_completion)
 *                  tokens, mb sequences, recompute}, planned with the
 *                  adapter; full fine-tuning's reference pass (beta != 0)
 *                  another arena of the same size (LoRA's runs in the
 *                  trainer's, the adapter off)
 *   rollout        run_gen's engine for one step's prompts: P * G
 *                  sequences, P prompts, groups of G (rollout_bytes)
 *   full           the policy's f32 masters (+ bf16 copy), its gradient
 *                  arena, AdamW m and v over it, and with beta != 0 a
 *                  second model, the reference (frozen: compute weights)
 *   LoRA           the base as loaded, the adapter (f32 + bf16 copy), the
 *                  adapter's gradients and m, v; no reference model
 *
 * Per rank of W (run_dist.c): the rollout engine holds ceil(P / W) groups
 * (run_gen.c's local chunk); weights, gradients and activations are
 * replicated; at ZeRO 1, m and v cover the rank's run_split range of the
 * trained arena, and the parameter all-gather after each optimizer step
 * sends a copy of that range (run_gather_params), live on top of the rest.
 * At ZeRO 2 the gradient arena is replaced by the rank's shard of the same
 * range and the unit windows (two of the largest unit, and a tied
 * embedding's: model_grad_windows), all held through the stage (run_zero.c).
 * With expert parallelism (sh->ep > 1) the rank holds 1 / EP of the routed
 * experts: its weights, gradients and AdamW state shrink by the others'
 * (run_ep_plan_memory, run_ep.c); the trainer's arenas and the rollout
 * workspace hold the MoE dispatch buffers besides (model_train_bytes_ep,
 * rollout_bytes_ep: the model's own sizing), planned for the worst case of
 * routing: the rows a peer may send this rank are all of its tokens' K
 * choices that can land on this rank's experts (n min(K, E / EP) for n
 * tokens), from each of the EP ranks; ep_dispatch says how many bytes of
 * activations, ref_activations and rollout that is.
 */
#include "run_internal.h"

base_status run_grpo_memory(const model_config *mc, const run_grpo_shape *sh, run_grpo_mem *out) {
    memset(out, 0, sizeof *out);
    if (sh->zero_stage < 0 || sh->zero_stage > 3)
        return base_err_set(BASE_ERR_INVALID, "ZeRO stage %d: expected 0, 1, 2 or 3", sh->zero_stage);
    if (sh->zero_stage >= 2 && sh->lora)
        return base_err_set(BASE_ERR_UNSUPPORTED, "ZeRO %d with a LoRA adapter: its gradients are not sharded "
                            "(zero_stage 0 or 1)", sh->zero_stage);
    /* the activations' precision: bf16 on a device backend in bf16 / fp8
     * (the policy's compute dtype), f32 on the CPU whatever the storage */
    model_precision prec = sh->device != TENSOR_CPU && sh->load.precision != MODEL_F32 ? MODEL_BF16 : MODEL_F32;
    int W = sh->world > 1 ? sh->world : 1, rank = sh->world > 1 ? sh->rank : 0;
    int64_t local = (sh->prompts + W - 1) / W; /* prompts the rank's rollout engine is sized for */
    int64_t n_seqs = sh->prompts * sh->num_generations, mb = sh->micro_batch;
    if (mb <= 0 || mb > n_seqs) mb = n_seqs;
    model_train_limits tl = {.max_tokens = mb * (sh->max_prompt + sh->max_completion), .max_seqs = (int)mb,
                             .recompute = sh->recompute};
    model_mem pm, rm = {0};
    model_load_opts whole = sh->load; /* every expert: sh->ep says how many this rank holds */
    whole.ep = NULL;
    base_status s = model_memory_plan(mc, &whole, sh->device, &pm);
    if (s) return s;
    out->weights = model_mem_total(&pm);
    int ep = sh->ep > 1 ? sh->ep : 1;
    /* with EP the arena holds the dispatch buffers too (model_train_bytes_ep) */
    out->activations = model_train_bytes_ep(mc, &tl, sh->lora, prec, ep);
    out->ep_dispatch = out->activations - model_train_bytes_p(mc, &tl, sh->lora, prec);
    int64_t numel; /* the trained arena */
    if (sh->lora) {
        size_t p = model_lora_param_bytes(mc, sh->lora);
        out->adapter = p + model_lora_compute_bytes(mc, sh->lora, prec);
        out->grads = p; /* the reference pass: the trainer's arena with the adapter off */
        numel = (int64_t)(p / sizeof(float));
    } else {
        out->grads = (size_t)pm.params * sizeof(float); /* the policy's layout, MTP layers included */
        numel = pm.params;
        if (sh->ref) { /* frozen: compute weights only (stage_grpo.c open_ref) */
            model_load_opts ro = whole;
            ro.frozen = 1;
            s = model_memory_plan(mc, &ro, sh->device, &rm);
            if (s) return s;
            out->ref_weights = model_mem_total(&rm);
            out->ref_activations = out->activations; /* loaded with the same EP */
            out->ep_dispatch *= 2;
        }
    }
    int64_t lo = 0, hi = numel;
    if (sh->zero_stage >= 1) run_split(numel, rank, W, &lo, &hi);
    out->numel = numel;
    out->optimizer = 2 * (size_t)(hi - lo) * sizeof(float);
    if ((sh->zero_stage == 1 || sh->zero_stage == 2) && W > 1)
        out->gather = hi > lo ? (size_t)(hi - lo) * sizeof(float) : sizeof(float);
    if (sh->zero_stage == 3 && sh->ep <= 1) { /* the arena released: the master shard and the parameter windows instead */
        int bf16 = sh->device != TENSOR_CPU && sh->load.precision == MODEL_BF16;
        size_t win = 2 * (size_t)pm.grad_window + (size_t)pm.grad_window_emb;
        out->weights = out->weights - pm.master - pm.compute + (hi > lo ? (size_t)(hi - lo) : 1) * sizeof(float) +
                       win * sizeof(float) + (bf16 ? win * sizeof(uint16_t) : 0);
    }
    if (sh->zero_stage >= 2 && sh->ep <= 1) /* run_zero2_new: the shard, two windows, a tied embedding's (EP: run_ep.c) */
        out->grads = (hi > lo ? (size_t)(hi - lo) : 1) * sizeof(float) +
                     (2 * (size_t)pm.grad_window + (size_t)pm.grad_window_emb) * sizeof(float);
    if (sh->ep > 1 && (s = run_ep_plan_memory(mc, sh, &pm, &rm, out))) return s;
    rollout_limits rl = {.max_seqs = (int)(local * sh->num_generations), .max_prompts = (int)local,
                         .max_group = (int)sh->num_generations, .max_prompt_len = sh->max_prompt,
                         .max_new_tokens = sh->max_completion};
    out->rollout = rollout_bytes_ep(mc, &rl, sh->lora, prec, ep);
    out->ep_dispatch += out->rollout - rollout_bytes(mc, &rl, sh->lora, prec);
    out->total = out->weights + out->adapter + out->grads + out->optimizer + out->ref_weights + out->activations +
                 out->ref_activations + out->rollout + out->gather;
    if (sh->zero_stage == 3 && sh->whole_at_open) /* the trainer and rollout engine are made after the release */
        out->release_peak = out->total - out->activations - out->rollout +
                            (sh->ep > 1 ? out->release_peak /* the EP index's arena, run_ep.c */ : pm.master + pm.compute);
    else
        out->release_peak = 0;
    return BASE_OK;
}

cJSON *run_grpo_memory_json(const run_grpo_mem *m) {
    cJSON *j = cJSON_CreateObject();
    const struct {
        const char *k;
        size_t v;
    } f[] = {{"weights", m->weights},       {"adapter", m->adapter},
             {"grads", m->grads},           {"optimizer", m->optimizer},
             {"ref_weights", m->ref_weights}, {"activations", m->activations},
             {"ref_activations", m->ref_activations}, {"rollout", m->rollout},
             {"gather", m->gather},
             {"ep_dispatch", m->ep_dispatch},
             {"total", m->total},           {"release_peak", m->release_peak}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) cJSON_AddNumberToObject(j, f[i].k, (double)f[i].v);
    return j;
}

void run_grpo_comm_volume(const model_config *mc, const run_grpo_shape *sh, run_grpo_comm *out) {
    memset(out, 0, sizeof *out);
    int W = sh->world > 1 ? sh->world : 1;
    if (W == 1) return;
    model_mem pm;
    memset(&pm, 0, sizeof pm);
    model_load_opts whole = sh->load;
    whole.ep = NULL;
    double bytes; /* the trained arena, f32 */
    if (sh->lora) bytes = (double)model_lora_param_bytes(mc, sh->lora);
    else if (!model_memory_plan(mc, &whole, sh->device, &pm)) bytes = (double)pm.params * sizeof(float);
    else bytes = 0;
    if (sh->zero_stage >= 2 && !sh->lora) { /* a reduce-scatter of every unit per micro-batch */
        double units = (double)pm.grad_units * sizeof(float);
        int64_t rows = sh->prompts * sh->num_generations, mb = sh->micro_batch > 0 ? sh->micro_batch : rows;
        int64_t mine = (rows + W - 1) / W;
        out->micro_batches = (mine + mb - 1) / mb;
        out->grad_reduce_scatter = (double)out->micro_batches * (W - 1) / W * units + 2.0 * (W - 1) / W * 8;
    } else {
        out->grad_allreduce = 2.0 * (W - 1) / W * bytes;
    }
    if (sh->zero_stage == 1 || sh->zero_stage == 2) out->param_allgather = (double)(W - 1) / W * bytes;
    if (sh->zero_stage == 3 && !sh->lora) {
        double units = (double)pm.grad_units * sizeof(float) * (W - 1) / W;
        out->train_allgather = 2.0 * (double)out->micro_batches * units;
        out->rollout_allgather = (double)(sh->max_completion > 0 ? sh->max_completion : 1) * units;
    }
    /* run_reduce_loss_stats: 14 + 2 doubles and 5 int32, each all-reduced
     * (ring: 2 (W-1)/W of the payload) */
    out->metrics = 2.0 * (W - 1) / W * (16 * sizeof(double) + 5 * sizeof(int32_t));
    if (sh->ep > 1 && !sh->lora && pm.params > 0) run_ep_plan_comm(mc, sh, &pm, out);
}
