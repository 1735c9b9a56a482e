/*
 * grpo grad --model DIR --in ids.jsonl --out grads.safetensors [--recompute] [--device D]
 *
 * The gradient of the mean next-token NLL over all tokens of all input
 * lines (each line {"ids": [...]} an independent sequence; a line of T ids
 * has T-1 predicted tokens) with respect to every trainable parameter,
 * written as F32 under the Hugging Face tensor names (the routing bias
 * e_score_correction_bias has no gradient and is not written, nor are MTP
 * layers, which this loss does not reach). Lines run
 * one at a time, their gradients accumulating. Prints the loss.
 * Exit status: 0 done; 1 bad input; 2 bad usage.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_device.h"
#include "cli/model_cli.h"
#include "io/st.h"

static const char *USAGE = "usage: grpo grad --model DIR --in ids.jsonl --out grads.safetensors [--recompute]\n"
                           "                 [--device D]\n"
                           "                 [--precision f32|bf16]\n"
                           "Gradient of the mean next-token NLL over all lines {\"ids\": [...]}, F32,\n"
                           "Hugging Face tensor names. --recompute keeps one layer's activations.\n" CLI_DEVICE_USAGE CLI_PRECISION_USAGE;

int cli_cmd_grad(int argc, char **argv) {
    const char *dir = NULL, *in = NULL, *out = NULL, *dev = NULL, *prec = NULL;
    int recompute = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            return 0;
        }
        if (!strcmp(a, "--recompute")) {
            recompute = 1;
            continue;
        }
        if (i + 1 >= argc) return cli_usage_error("grad", "unexpected argument '%s'\n%s", a, USAGE);
        if (!strcmp(a, "--model")) dir = argv[++i];
        else if (!strcmp(a, "--in")) in = argv[++i];
        else if (!strcmp(a, "--out")) out = argv[++i];
        else if (!strcmp(a, "--device")) dev = argv[++i];
        else if (!strcmp(a, "--precision")) prec = argv[++i];
        else return cli_usage_error("grad", "unexpected argument '%s'\n%s", a, USAGE);
    }
    if (!dir || !in || !out) return cli_usage_error("grad", "--model, --in and --out are required\n%s", USAGE);
    const struct ops *ops = cli_device("grad", dev);
    if (!ops) return cli_device_status(dev);
    model *m = NULL;
    model_load_opts lo = {0};
    if (cli_precision("grad", prec, &lo)) return 2;
    base_status st = model_load(dir, ops, &lo, &m);
    if (st) {
        fprintf(stderr, "grpo grad: %s\n", base_err_msg());
        return 1;
    }
    cli_seqs s;
    if ((st = cli_read_ids(in, model_cfg(m)->vocab_size, &s))) {
        fprintf(stderr, "grpo grad: %s\n", base_err_msg());
        model_free(m);
        return 1;
    }
    int64_t maxlen = 0, ntgt = 0;
    for (int k = 0; k < s.n; k++) {
        int64_t T = s.cu[k + 1] - s.cu[k];
        if (T > maxlen) maxlen = T;
        ntgt += T - 1;
    }
    if (ntgt == 0) {
        fprintf(stderr, "grpo grad: %s: no line has two tokens, so there is nothing to predict\n", in);
        cli_seqs_free(&s);
        model_free(m);
        return 1;
    }
    model_train_limits lim = {.max_tokens = maxlen, .max_seqs = 1, .recompute = recompute};
    model_train *tr = NULL;
    float *grads = NULL, *g = base_xmalloc((size_t)maxlen * sizeof(float)), *lp = base_xmalloc((size_t)maxlen * sizeof(float));
    double loss = 0;
    if (!(st = model_train_new(m, &lim, &tr))) {
        grads = model_grads_new(m);
        for (int k = 0; k < s.n && !st; k++) {
            int64_t T = s.cu[k + 1] - s.cu[k];
            int32_t cu[2] = {0, (int32_t)T};
            model_batch b = {.nseq = 1, .ids = s.ids + s.cu[k], .cu_seqlens = cu};
            if ((st = model_forward(tr, &b))) {
                base_err_wrap(st, "%s:%ld", in, s.line[k]);
                break;
            }
            model_train_download(tr, lp, NULL);
            for (int64_t t = 0; t < T; t++) {
                g[t] = t + 1 < T ? (float)(-1.0 / (double)ntgt) : 0.0f;
                if (t + 1 < T) loss -= lp[t];
            }
            model_backward(tr, g, NULL, grads);
        }
    }
    float *host = NULL; /* the gradients on the host (the arena itself on the CPU backend) */
    if (!st) {
        loss /= (double)ntgt;
        const struct ops *o = model_ops(m);
        host = grads;
        if (o->device != TENSOR_CPU) {
            host = base_xmalloc((size_t)model_numel(m) * sizeof(float));
            o->download(host, grads, (size_t)model_numel(m) * sizeof(float));
        }
        st_writer *w = st_writer_new();
        for (int i = 0; i < model_nparams(m); i++) {
            const model_param *p = model_param_at(m, i);
            if (p->trainable && !p->mtp) st_writer_add(w, p->name, TENSOR_F32, p->ndim, p->shape, host + p->offset);
        }
        char ls[64];
        snprintf(ls, sizeof ls, "%.9g", loss);
        st_writer_meta(w, "loss", ls);
        st_writer_meta(w, "producer", "grpo grad");
        st = st_writer_write(w, out);
        st_writer_free(w);
    }
    if (st) fprintf(stderr, "grpo grad: %s\n", base_err_msg());
    else printf("loss %.9g over %lld tokens of %d sequences -> %s\n", loss, (long long)ntgt, s.n, out);
    if (host != grads) free(host);
    if (grads) model_ops(m)->free(grads);
    free(g);
    free(lp);
    model_train_free(tr);
    cli_seqs_free(&s);
    model_free(m);
    return st ? 1 : 0;
}
