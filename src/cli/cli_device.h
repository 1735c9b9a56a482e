/*
 * --device for every subcommand that runs a model: "cpu", "cuda", or
 * "auto" (cuda when a GPU is usable, else cpu). The default is
 * $GRPO_DEVICE when set, else "auto". Shared by src/cli/cmd_*.c.
 */
#ifndef GRPO_CLI_DEVICE_H
#define GRPO_CLI_DEVICE_H

#include "tensor/ops.h"

/* The usage line, for the commands' help texts. */
#define CLI_DEVICE_USAGE                                                                                               \
    "--device cpu|cuda|auto: where the model runs (default $GRPO_DEVICE, else auto: cuda when a\n"                     \
    "GPU is usable, else cpu).\n"

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
