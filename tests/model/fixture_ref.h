/*
 * Reading the model fixtures' references: shared by the CPU fixture test
 * (tests/model/test_fixtures.c) and the device one
 * (tests/cuda/test_cuda_fixture.c). Each includes it once, after
 * common/test_common.h (cmocka) and io/st.h.
 */
#ifndef GRPO_TESTS_MODEL_FIXTURE_REF_H
#define GRPO_TESTS_MODEL_FIXTURE_REF_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A reference tensor as floats (malloc'd; *n its element count when n). */
static float *ref_f32(st_file *f, const char *name, int64_t *n) {
    const st_tensor *t = st_find(f, name);
    if (!t) fail_msg("reference: no tensor %s", name);
    int64_t k = 1;
    for (int i = 0; i < t->ndim; i++) k *= t->shape[i];
    float *x = malloc((size_t)k * sizeof(float) + 1);
    assert_int_equal(st_file_load(f, name, TENSOR_F32, x, k), BASE_OK);
    if (n) *n = k;
    return x;
}

/* An I64 reference vector as int32 (malloc'd, *n entries). */
static int32_t *ref_ids(st_file *f, const char *name, int64_t *n) {
    const st_tensor *t = st_find(f, name);
    if (!t) fail_msg("reference: no tensor %s", name);
    assert_int_equal(t->dtype, TENSOR_I64);
    int64_t k = t->shape[0];
    int32_t *x = malloc((size_t)k * sizeof(int32_t) + 1);
    const int64_t *src = t->data;
    for (int64_t i = 0; i < k; i++) x[i] = (int32_t)src[i];
    *n = k;
    return x;
}

/* The directory of a fixture: the shared hf-tiny-v3-a, or one of
 * tests/model/data/ (malloc'd). */
static char *fixture_dir(const char *name) {
    if (!strcmp(name, "hf-tiny-v3-a")) return test_shared_path("fixtures/hf-tiny-v3-a");
    char rel[256];
    snprintf(rel, sizeof rel, "tests/model/data/%s", name);
    return test_src_path(rel);
}

#endif
