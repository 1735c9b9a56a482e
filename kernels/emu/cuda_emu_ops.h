/*
 * The emulated CUDA backend (tests only): the kernels/ sources compiled for the
 * host and run by the CUDA emulator (cuda_emu.h). Same kernels, same host
 * logic, same shape checks as ops_cuda(); GEMMs go through the CPU backend
 * (bf16 operands widened to f32) instead of cuBLAS. The table's device is
 * TENSOR_CUDA, so code that branches on the device takes its GPU path.
 */
#ifndef GRPO_CUDA_EMU_OPS_H
#define GRPO_CUDA_EMU_OPS_H

#include "tensor/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

const struct ops *ops_cuda_emu(void);

#ifdef __cplusplus
}
#endif

#endif
