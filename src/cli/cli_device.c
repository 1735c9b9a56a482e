/*
 * --device parsing shared by the model subcommands (cli_device.h).
 */
#include "cli/cli_device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *cli_device_default(void) {
    const char *e = getenv("GRPO_DEVICE");
    return e && *e ? e : "auto";
}

static int known(const char *name) { return !strcmp(name, "cpu") || !strcmp(name, "cuda") || !strcmp(name, "auto"); }

const struct ops *cli_device(const char *cmd, const char *name) {
    if (!name) name = cli_device_default();
    if (!known(name)) {
        fprintf(stderr, "grpo %s: --device %s: expected cpu, cuda or auto\n", cmd, name);
        return NULL;
    }
    const struct ops *o = ops_by_name(name);
    if (!o) fprintf(stderr, "grpo %s: --device %s: %s\n", cmd, name, base_err_msg());
    return o;
}

int cli_precision(const char *cmd, const char *name, model_load_opts *lo) {
    if (model_precision_parse(name, &lo->precision)) {
        fprintf(stderr, "grpo %s: --precision %s: expected f32, bf16 or fp8\n", cmd, name);
        return 2;
    }
    return 0;
}

int cli_device_status(const char *name) {
    if (!name) name = cli_device_default();
    return known(name) ? 1 : 2;
}
