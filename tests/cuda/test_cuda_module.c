/* The CUDA backend module (grpo-cuda.so, CUDA builds only): it loads with
 * every symbol bound (RTLD_NOW) against this program's libgrpo, which the
 * programs export (--export-dynamic), and its entry answers: the backend's
 * table on a GPU machine, else NULL with the reason. Loading it is what
 * ops_cuda() does on first use; the programs themselves do not link the
 * CUDA libraries (test_outputs checks `grpo info`'s footprint). */
#include "common/test_common.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "tensor/ops.h"

static const char *module_path;

static void test_module_binds(void **state) {
    (void)state;
    void *h = dlopen(module_path, RTLD_NOW | RTLD_LOCAL);
    if (!h) fail_msg("dlopen %s: %s", module_path, dlerror());
    const struct ops *(*entry)(void) = (const struct ops *(*)(void))dlsym(h, "ops_cuda_module");
    assert_non_null(entry);
    const struct ops *o = entry();
    if (o) print_message("%s: the CUDA backend on a GPU\n", module_path);
    else print_message("%s: no GPU here (%s)\n", module_path, base_err_msg());
    if (!o) assert_non_null(strstr(base_err_msg(), "CUDA"));
}

/* ops_cuda() finds the module itself (GRPO_CUDA_MODULE unset: beside the
 * program or in the build directory) or names the missing GPU. */
static void test_ops_cuda(void **state) {
    (void)state;
    const struct ops *o = ops_cuda();
    if (!o) {
        print_message("ops_cuda: %s\n", base_err_msg());
        assert_null(strstr(base_err_msg(), "could not be loaded"));
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_cuda_module PATH/grpo-cuda.so\n");
        return 2;
    }
    module_path = argv[1];
    unsetenv("GRPO_CUDA_MODULE");
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_module_binds), cmocka_unit_test(test_ops_cuda)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
