/*
 * Helpers shared by the model subcommands (forward, grad, generate):
 * reading token-id JSONL and opening a model for the CPU backend.
 * Private to src/cli/cmd_{forward,grad,generate}.c.
 */
#ifndef GRPO_CLI_MODEL_CLI_H
#define GRPO_CLI_MODEL_CLI_H

#include <stdint.h>

#include "base/base.h"
#include "model/model.h"

/* Sequences read from JSONL, packed: sequence k is ids[cu[k] .. cu[k+1]). */
typedef struct {
    int n;
    int32_t *ids;
    int32_t *cu;
    long *line; /* input line of each sequence */
} cli_seqs;

/* Parse a JSON array of token ids (integers in [0, vocab)); `what` names the
 * place in messages ("ids.jsonl:3: ids"). Appends to *buf (n, cap). */
base_status cli_parse_ids(const cJSON *arr, const char *what, int64_t vocab, int32_t **buf, int64_t *n,
                          int64_t *cap);
/* Read every line's "ids" (non-empty unless allow_empty). */
base_status cli_read_ids(const char *path, int64_t vocab, cli_seqs *out);
void cli_seqs_free(cli_seqs *s);

#endif
