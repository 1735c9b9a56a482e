/*
 * Built without CUDA (meson -Dcuda=disabled, or no nvcc found): the CUDA
 * backend is absent and says so.
 */
#include "ops.h"

const struct ops *ops_cuda(void) {
    base_err_set(BASE_ERR_UNSUPPORTED, "grpo was built without CUDA (meson -Dcuda=enabled needs nvcc)");
    return NULL;
}

void *ops_cuda_module_symbol(const char *name) {
    base_err_set(BASE_ERR_UNSUPPORTED, "%s: grpo was built without CUDA", name);
    return NULL;
}
