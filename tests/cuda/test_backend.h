/*
 * The backend a device test runs on, named by its first argument: "cuda"
 * (the GPU), "emu" (the kernels under the CUDA emulator, when the program
 * was built with GRPO_HAVE_CUDA_EMU) or, where allow_cpu, "cpu".
 * Shared by the test programs of tests/cuda and tests/rollout/test_paged.c.
 */
#ifndef GRPO_TESTS_CUDA_TEST_BACKEND_H
#define GRPO_TESTS_CUDA_TEST_BACKEND_H

#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "tensor/ops.h"
#ifdef GRPO_HAVE_CUDA_EMU
#include "emu/cuda_emu_ops.h"
#endif

/* 1: *ops is the backend; 0: the test is skipped (no GPU, or no emulator
 * in this build), the reason printed on stdout; -1: an unknown name. */
static inline int test_backend(const char *name, int allow_cpu, const struct ops **ops) {
    if (allow_cpu && !strcmp(name, "cpu")) {
        *ops = ops_cpu();
        return 1;
    }
    if (!strcmp(name, "cuda")) {
        *ops = ops_cuda();
        if (*ops) return 1;
        printf("skipped: no GPU (%s)\n", base_err_msg());
        return 0;
    }
    if (!strcmp(name, "emu")) {
#ifdef GRPO_HAVE_CUDA_EMU
        *ops = ops_cuda_emu();
        return 1;
#else
        printf("skipped: built without the CUDA emulator\n");
        return 0;
#endif
    }
    return -1;
}

#endif
