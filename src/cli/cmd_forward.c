/*
 * grpo forward --model DIR [--adapter DIR] --in ids.jsonl --out logits.safetensors [--device D]
 *
 * Full-sequence forward of each input line {"ids": [...]} (positions from
 * 0; lines are independent). Writes, for line K (0-based):
 *   logits.K          F32 [T, V]  the logits at every position
 *   token_logprobs.K  F32 [T-1]   log p(ids[t+1] | ids[..t])
 * --adapter runs the model with a LoRA adapter in PEFT's format (a LoRA
 * run's checkpoint) over its frozen weights.
 * Exit status: 0 done; 1 bad input (the message names the file and line,
 * or the tensor); 2 bad usage.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_device.h"
#include "cli/model_cli.h"
#include "io/st.h"

static const char *USAGE = "usage: grpo forward --model DIR --in ids.jsonl --out logits.safetensors [--device D]\n"
                           "                 [--precision f32|bf16|fp8] [--adapter LORA_DIR]\n"
                           "Each input line is {\"ids\": [...]}; the output holds logits.K [T, V] and\n"
                           "token_logprobs.K [T-1] (F32) for line K, counted from 0.\n" CLI_DEVICE_USAGE CLI_PRECISION_USAGE;

int cli_cmd_forward(int argc, char **argv) {
    const char *dir = NULL, *in = NULL, *out = NULL, *dev = NULL, *prec = NULL, *adapter = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            return 0;
        }
        if (i + 1 >= argc) return cli_usage_error("forward", "unexpected argument '%s'\n%s", a, USAGE);
        if (!strcmp(a, "--model")) dir = argv[++i];
        else if (!strcmp(a, "--in")) in = argv[++i];
        else if (!strcmp(a, "--out")) out = argv[++i];
        else if (!strcmp(a, "--device")) dev = argv[++i];
        else if (!strcmp(a, "--precision")) prec = argv[++i];
        else if (!strcmp(a, "--adapter")) adapter = argv[++i];
        else return cli_usage_error("forward", "unexpected argument '%s'\n%s", a, USAGE);
    }
    if (!dir || !in || !out) return cli_usage_error("forward", "--model, --in and --out are required\n%s", USAGE);
    const struct ops *ops = cli_device("forward", dev);
    if (!ops) return cli_device_status(dev);
    model *m = NULL;
    model_load_opts lo = {.frozen = 1}; /* nothing trains: compute weights only */
    if (cli_precision("forward", prec, &lo)) return 2;
    base_status st = model_load(dir, ops, &lo, &m);
    model_lora *ad = NULL;
    if (!st && adapter) st = model_lora_load(m, adapter, &ad); /* attached: freed with the model */
    if (st) {
        fprintf(stderr, "grpo forward: %s\n", base_err_msg());
        model_free(m);
        return 1;
    }
    int64_t V = model_cfg(m)->vocab_size;
    cli_seqs s;
    if ((st = cli_read_ids(in, V, &s))) {
        fprintf(stderr, "grpo forward: %s\n", base_err_msg());
        model_free(m);
        return 1;
    }
    st_writer *w = st_writer_new();
    float **bufs = base_xcalloc((size_t)s.n * 2, sizeof(float *));
    char name[64];
    for (int k = 0; k < s.n && !st; k++) {
        int64_t T = s.cu[k + 1] - s.cu[k];
        int32_t cu[2] = {0, (int32_t)T};
        float *lg = base_xmalloc((size_t)(T * V) * sizeof(float)), *lp = base_xmalloc((size_t)T * sizeof(float));
        bufs[2 * k] = lg, bufs[2 * k + 1] = lp;
        st = model_forward_logits(m, 1, s.ids + s.cu[k], cu, lg, lp);
        if (st) {
            base_err_wrap(st, "%s:%ld", in, s.line[k]);
            break;
        }
        int64_t sl[2] = {T, V}, st1[1] = {T - 1};
        snprintf(name, sizeof name, "logits.%d", k);
        st_writer_add(w, name, TENSOR_F32, 2, sl, lg);
        snprintf(name, sizeof name, "token_logprobs.%d", k);
        st_writer_add(w, name, TENSOR_F32, 1, st1, lp);
    }
    if (!st) {
        st_writer_meta(w, "producer", "grpo forward");
        st = st_writer_write(w, out);
    }
    if (st) fprintf(stderr, "grpo forward: %s\n", base_err_msg());
    else fprintf(stderr, "grpo forward: %d sequences, %d tokens -> %s\n", s.n, s.cu[s.n], out);
    st_writer_free(w);
    for (int k = 0; k < 2 * s.n; k++) free(bufs[k]);
    free(bufs);
    cli_seqs_free(&s);
    model_free(m);
    return st ? 1 : 0;
}
