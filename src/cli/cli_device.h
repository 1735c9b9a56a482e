/*
 * --device for every subcommand that runs a model: "cpu", "cuda", or
 * "auto" (cuda when a GPU is usable, else cpu). The default is
 * $GRPO_DEVICE when set, else "auto". Shared by src/cli/cmd_*.c.
 */
#ifndef GRPO_CLI_DEVICE_H
#define GRPO_CLI_DEVICE_H

#include "model/model.h"
#include "tensor/ops.h"

/* The usage line, for the commands' help texts. */
#define CLI_DEVICE_USAGE                                                                                               \
    "--device cpu|cuda|auto: where the model runs (default $GRPO_DEVICE, else auto: cuda when a\n"                     \
    "GPU is usable, else cpu).\n"

/* --precision f32|bf16|fp8 (docs/cuda.md, "bf16 mode"; docs/model.md, "Frozen
 * models"). */
#define CLI_PRECISION_USAGE                                                                                            \
    "--precision f32|bf16|fp8: weights and compute (default f32). bf16: bf16 GEMM operands with f32\n"               \
    "accumulation, f32 norms, router, attention and logprobs (training: --device cuda). fp8: frozen\n"              \
    "models only, e4m3 weights with 128x128 block scales (an FP8 checkpoint stays FP8). On the cpu\n"               \
    "bf16 and fp8 store a frozen model's weights so and compute in f32.\n"

/* Parse --precision NAME (NULL: f32) into lo->precision. On a bad name prints
 * "grpo CMD: --precision NAME: expected f32, bf16 or fp8" and returns 2 (usage);
 * else 0. */
int cli_precision(const char *cmd, const char *name, model_load_opts *lo);

/* The default device name ($GRPO_DEVICE or "auto"). */
const char *cli_device_default(void);
/* The op table for `name` (NULL: the default). On an unknown name or an
 * unusable device prints "grpo CMD: --device NAME: why" and returns NULL
 * (the command then exits with status 2 for a bad name, 1 for a device it
 * cannot use: see cli_device_status). */
const struct ops *cli_device(const char *cmd, const char *name);
/* Exit status for a failed cli_device: 2 (usage) for a name other than
 * cpu/cuda/auto, 1 (cannot run) otherwise. */
int cli_device_status(const char *name);

#endif
