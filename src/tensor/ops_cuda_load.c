/*
 * The CUDA backend, loaded when it is first asked for.
 *
 * The kernels (kernels/, one .cu per op family) and the libraries they need (cudart, cuBLAS,
 * cuBLASLt) are the module grpo-cuda.so, not part of the grpo program:
 * merely loading cuBLASLt costs about 210 MB of resident memory (its
 * relocations and static constructors), which every process paid before,
 * `grpo info` and the CPU demo included. ops_cuda() now
 *
 *   1. checks for a usable GPU through the driver library alone
 *      (libcuda.so.1: cuInit, cuDeviceGetCount), so "auto" on a machine
 *      without one never maps the CUDA libraries;
 *   2. loads the module: $GRPO_CUDA_MODULE when set, else grpo-cuda.so
 *      beside the program, in the build directory, or in the install's
 *      library directory (GRPO_CUDA_MODULE_BUILD / _INSTALL, set by meson);
 *   3. returns its ops_cuda_module() (which initialises the device).
 *
 * The module binds to this program's own copy of libgrpo (errors, tensor
 * views, the shape checks): programs are linked with --export-dynamic, and
 * host_symbols below makes every program that can load the module link
 * the objects it calls into. Any failure is an error message naming the
 * file and the reason (dlerror), and the backend is then unavailable.
 */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ops.h"

#ifndef GRPO_CUDA_MODULE_BUILD
#define GRPO_CUDA_MODULE_BUILD ""
#endif
#ifndef GRPO_CUDA_MODULE_INSTALL
#define GRPO_CUDA_MODULE_INSTALL ""
#endif
#define MODULE_NAME "grpo-cuda.so"

/* What the kernels call in libgrpo (nm -u of the objects): one symbol of
 * each object file, so the static link keeps those objects. */
__attribute__((used)) static void *const host_symbols[] = {
    (void *)base_err_set,         (void *)base_die_at,        (void *)base_xcalloc_at,
    (void *)tensor_make,          (void *)ops_check_same_shape, (void *)ops_matmul_resolve,
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static const struct ops *(*entry)(void);
static void *module; /* the loaded grpo-cuda.so */
static char why[2048];

/* 1 when the driver reports a device; else 0 with the reason in why. */
static int gpu_present(void) {
    void *d = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!d) {
        snprintf(why, sizeof why, "no usable CUDA device (the NVIDIA driver library libcuda.so.1 is not loadable: %s)",
                 dlerror());
        return 0;
    }
    int (*init)(unsigned) = (int (*)(unsigned))dlsym(d, "cuInit");
    int (*count)(int *) = (int (*)(int *))dlsym(d, "cuDeviceGetCount");
    int n = 0, e = init && count ? init(0) : -1;
    if (e == 0) e = count(&n);
    if (e != 0 || n < 1) {
        snprintf(why, sizeof why, "no usable CUDA device (%s)",
                 e == -1 ? "libcuda.so.1 lacks cuInit" : e ? "cuInit/cuDeviceGetCount failed" : "device count is 0");
        return 0;
    }
    return 1; /* the driver stays loaded: the module uses it */
}

static void *try_open(const char *path, base_buf *tried) {
    if (!path || !*path) return NULL;
    if (access(path, F_OK) != 0) {
        base_buf_printf(tried, "%s%s (absent)", tried->len ? ", " : "", path);
        return NULL;
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) base_buf_printf(tried, "%s%s (%s)", tried->len ? ", " : "", path, dlerror());
    return h;
}

static void load(void) {
    if (!gpu_present()) return;
    base_buf tried = {0};
    void *h = NULL;
    const char *env = getenv("GRPO_CUDA_MODULE");
    if (env && *env) {
        h = try_open(env, &tried);
    } else {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n > 0) {
            exe[n] = 0;
            char *slash = strrchr(exe, '/');
            if (slash) {
                slash[1] = 0;
                char *p = base_path_join(exe, MODULE_NAME);
                h = try_open(p, &tried);
                free(p);
            }
        }
        if (!h) h = try_open(GRPO_CUDA_MODULE_BUILD, &tried);
        if (!h) h = try_open(GRPO_CUDA_MODULE_INSTALL, &tried);
    }
    if (h) {
        module = h;
        entry = (const struct ops *(*)(void))dlsym(h, "ops_cuda_module");
        if (!entry) base_buf_printf(&tried, "%s: no ops_cuda_module", env && *env ? env : MODULE_NAME);
    }
    if (!entry)
        snprintf(why, sizeof why, "the CUDA backend module %s could not be loaded: %s (set GRPO_CUDA_MODULE to its path)",
                 MODULE_NAME, tried.data ? tried.data : "no path to try");
    base_buf_free(&tried);
}

const struct ops *ops_cuda(void) {
    pthread_once(&once, load);
    if (!entry) {
        base_err_set(BASE_ERR_UNSUPPORTED, "%s", why);
        return NULL;
    }
    return entry(); /* NULL and its own message when the device does not initialise */
}

void *ops_cuda_module_symbol(const char *name) {
    pthread_once(&once, load);
    if (!entry) {
        base_err_set(BASE_ERR_UNSUPPORTED, "%s", why);
        return NULL;
    }
    void *p = dlsym(module, name);
    if (!p) base_err_set(BASE_ERR_UNSUPPORTED, "the CUDA module has no symbol %s: %s", name, dlerror());
    return p;
}
