/*
 * Checkpoint weights streamed from device memory (src/train/ckpt.c,
 * ckpt_shard.c; docs/checkpoints.md) on the CUDA backend or the emulator:
 * hf-tiny-v3-a loaded on the device
 *   - trainable (f32 master weights): model.safetensors streamed through a
 *     4 KiB host buffer is byte for byte the file of the same model loaded
 *     on the CPU, the host peak within the buffer;
 *   - frozen bf16 and fp8: ref.safetensors streamed piece by piece (partial
 *     fp8 blocks widened on the host) equals st_writer's file of the whole
 *     host copy (model_weights_to_host);
 *   - ZeRO 3 ranges: a device shard written as world size 1
 *     (run_ckpt_write_range) gives the same file; ranges of 1, 2, 4 ranks
 *     read into device memory (run_ckpt_read_range, a 4 KiB staging buffer)
 *     equal the arena's ranges bit for bit.
 * Usage: test_cuda_ckpt [cuda|emu]. "cuda" prints "skipped: no GPU (...)"
 * and passes when no GPU is usable.
 */
#include "common/test_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/test_backend.h"
#include "io/st.h"
#include "recipe/recipe.h"
#include "train/run_internal.h"

static const struct ops *g_ops;
static char *DIR_;

static char *sub(const char *rel) {
    char *p = base_path_join(DIR_, rel);
    if (base_mkdir_p(p)) fail_msg("%s", base_err_msg());
    return p;
}

static model *load(const struct ops *ops, model_precision prec, int frozen) {
    char *p = base_path_join(DIR_, "model");
    model_load_opts o = {.precision = prec, .frozen = frozen};
    model *m = NULL;
    if (model_load(p, ops, &o, &m)) fail_msg("%s", base_err_msg());
    free(p);
    return m;
}

static void same_file(const char *a, const char *b, const char *name) {
    char *pa = base_path_join(a, name), *pb = base_path_join(b, name), *x, *y;
    size_t xl, yl;
    if (base_read_file(pa, &x, &xl) || base_read_file(pb, &y, &yl)) fail_msg("%s", base_err_msg());
    assert_int_equal(xl, yl);
    assert_memory_equal(x, y, xl);
    free(x), free(y), free(pa), free(pb);
}

static void test_policy(void **state) {
    (void)state;
    model *d = load(g_ops, MODEL_F32, 0), *c = load(ops_cpu(), MODEL_F32, 0);
    char *a = sub("dev"), *b = sub("cpu");
    size_t peak = 0;
    assert_int_equal(run_ckpt_write_weights(d, a, "model", 4096, 0, &peak), BASE_OK);
    assert_true(peak > 0 && peak <= 4096);
    assert_int_equal(run_ckpt_write_weights(c, b, "model", 0, 0, NULL), BASE_OK);
    same_file(a, b, "model.safetensors");
    printf("%s: model.safetensors streamed from the device, host peak %zu bytes\n", g_ops->name, peak);

    /* ZeRO 3 from a device shard, world size 1 */
    int64_t numel = model_numel(d);
    float *want = malloc((size_t)numel * sizeof(float));
    model_weights_to_host(c, want);
    float *shard = g_ops->alloc((size_t)numel * sizeof(float));
    g_ops->upload(shard, want, (size_t)numel * sizeof(float));
    run_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.world = 1;
    run_ckpt_range r = {model_param_at(d, 0), model_nparams(d), 0, numel, shard, g_ops, 4096, UINT64_MAX};
    char *z = sub("zero3");
    assert_int_equal(run_ckpt_write_range(&ctx, &r, z, "model", &peak), BASE_OK);
    assert_true(peak > 0 && peak <= 4096);
    same_file(z, b, "model.safetensors");
    g_ops->free(shard);
    for (int w = 1; w <= 4; w *= 2)
        for (int k = 0; k < w; k++) {
            int64_t lo, hi;
            run_split(numel, k, w, &lo, &hi);
            float *s = g_ops->alloc((size_t)(hi - lo + 1) * sizeof(float)), *got = malloc((size_t)(hi - lo + 1) * sizeof(float));
            run_ckpt_range rr = {model_param_at(d, 0), model_nparams(d), lo, hi, s, g_ops, 4096, 0};
            assert_int_equal(run_ckpt_read_range(b, "model", &rr, &peak), BASE_OK);
            assert_true(peak > 0 && peak <= 4096);
            g_ops->download(got, s, (size_t)(hi - lo) * sizeof(float));
            assert_memory_equal(got, want + lo, (size_t)(hi - lo) * sizeof(float));
            g_ops->free(s);
            free(got);
        }
    free(want), free(a), free(b), free(z);
    model_free(d), model_free(c);
}

static void test_frozen_ref(void **state) {
    (void)state;
    model_precision ps[2] = {MODEL_BF16, MODEL_FP8};
    for (int k = 0; k < 2; k++) {
        model *ref = load(g_ops, ps[k], 1);
        assert_null(model_params(ref));
        char *a = sub(k ? "fp8-whole" : "bf16-whole"), *b = sub(k ? "fp8-streamed" : "bf16-streamed");
        float *host = malloc((size_t)model_numel(ref) * sizeof(float));
        model_weights_to_host(ref, host);
        st_writer *w = st_writer_new();
        for (int i = 0; i < model_nparams(ref); i++) {
            const model_param *p = model_param_at(ref, i);
            st_writer_add(w, p->name, TENSOR_F32, p->ndim, p->shape, host + p->offset);
        }
        st_writer_meta(w, "format", "pt");
        char *ap = base_path_join(a, "ref.safetensors");
        assert_int_equal(st_writer_write(w, ap), BASE_OK);
        st_writer_free(w);
        size_t peak = 0;
        assert_int_equal(run_ckpt_write_weights(ref, b, "ref", 4096, 0, &peak), BASE_OK);
        assert_true(peak > 0 && peak <= 4096);
        same_file(a, b, "ref.safetensors");
        printf("%s: %s ref.safetensors streamed from the device, host peak %zu bytes\n", g_ops->name,
               model_precision_name(ps[k]), peak);
        free(host), free(ap), free(a), free(b);
        model_free(ref);
    }
}

int main(int argc, char **argv) {
    const char *backend = argc > 1 ? argv[1] : "cuda";
    int have = test_backend(backend, 0, &g_ops);
    if (have < 0) {
        fprintf(stderr, "usage: test_cuda_ckpt [cuda|emu]\n");
        return 2;
    }
    if (!have) return 0;
    DIR_ = test_tmpdir();
    char *m = base_path_join(DIR_, "model");
    test_tiny_model(m, 0);
    free(m);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy),
        cmocka_unit_test(test_frozen_ref),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    test_rmdir(DIR_);
    free(DIR_);
    return rc;
}
