/*
 * Checkpoint weights streamed tensor piece by piece (src/train/ckpt.c,
 * ckpt_shard.c; docs/checkpoints.md), on the hf-tiny-v3-a weights:
 *   - the policy (f32 master weights) and frozen bf16 / fp8 references:
 *     model.safetensors / ref.safetensors byte for byte what st_writer
 *     writes from a whole host copy (model_weights_to_host), with a host
 *     buffer far smaller than the model: the writer's peak (the host
 *     high-water mark of the weights) stays within it;
 *   - Hugging Face shards (a shard size a third of the model): model_load
 *     reads them back bit for bit; run_ckpt_read_range fills ranges of
 *     1, 2, 4 ranks (and odd ones) from single-file and sharded checkpoints
 *     bit for bit, through the op table (a buffer) and into host memory.
 *   - a checkpoint stored in BF16 with the linear weights in FP8 blocks:
 *     the ranges read equal what model_load dequantises, bit for bit;
 *   - a GRPO run (beta != 0: a reference model is saved) whose checkpoints
 *     are sharded (GRPO_TEST_CKPT_SHARD_BYTES) stopped after 2 steps and
 *     resumed: the checkpoints verify, the policy and the reference load
 *     back from shards, and the run ends bit-identical to an unsharded
 *     straight run (metrics, every weight of policy and reference).
 * The multi-rank write is tests/dist/test_ckpt_range.c.
 */
#include "common/test_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/st.h"
#include "recipe/recipe.h"
#include "train/run.h"
#include "train/run_internal.h"

static char *DIR_;

static int setup(void **state) {
    (void)state;
    DIR_ = test_tmpdir();
    test_run_fixture(DIR_); /* model/ (hf-tiny-v3-a with a tokenizer), data.jsonl, vary.lua */
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_rmdir(DIR_);
    free(DIR_);
    return 0;
}

static char *sub(const char *rel) {
    char *p = base_path_join(DIR_, rel);
    if (base_mkdir_p(p)) fail_msg("%s", base_err_msg());
    return p;
}

static model *load(model_precision prec, int frozen) {
    char *p = base_path_join(DIR_, "model");
    model_load_opts o = {.precision = prec, .frozen = frozen};
    model *m = NULL;
    if (model_load(p, ops_cpu(), &o, &m)) fail_msg("%s", base_err_msg());
    free(p);
    return m;
}

static char *slurp(const char *dir, const char *name, size_t *len) {
    char *p = base_path_join(dir, name), *t = NULL;
    if (base_read_file(p, &t, len)) fail_msg("%s", base_err_msg());
    free(p);
    return t;
}

/* What the checkpoint wrote before streaming: the whole model on the host,
 * every tensor through st_writer. */
static void write_whole(const model *m, const char *path) {
    float *host = malloc((size_t)model_numel(m) * sizeof(float));
    model_weights_to_host(m, host);
    st_writer *w = st_writer_new();
    for (int i = 0; i < model_nparams(m); i++) {
        const model_param *p = model_param_at(m, i);
        st_writer_add(w, p->name, TENSOR_F32, p->ndim, p->shape, host + p->offset);
    }
    st_writer_meta(w, "format", "pt");
    assert_int_equal(st_writer_write(w, path), BASE_OK);
    st_writer_free(w);
    free(host);
}

static size_t weight_bytes(const model *m) {
    size_t n = 0;
    for (int i = 0; i < model_nparams(m); i++) n += (size_t)model_param_at(m, i)->numel * sizeof(float);
    return n;
}

/* m streamed as STEM into dir with a `buf`-byte buffer: st_writer's bytes,
 * peak within the buffer. */
static void check_streamed(const model *m, const char *stem, size_t buf) {
    char *a = sub("whole"), *b = sub("streamed");
    char name[64];
    snprintf(name, sizeof name, "%s.safetensors", stem);
    char *ap = base_path_join(a, name);
    write_whole(m, ap);
    size_t peak = 0;
    assert_int_equal(run_ckpt_write_weights(m, b, stem, buf, ST_SHARD_DEFAULT, &peak), BASE_OK);
    size_t al, bl;
    char *x = slurp(a, name, &al), *y = slurp(b, name, &bl);
    assert_int_equal(al, bl);
    assert_memory_equal(x, y, al);
    size_t bound = run_ckpt_f32_buf(buf);
    printf("%s (%s): %zu weight bytes streamed, host peak %zu bytes (buffer %zu)\n", stem,
           model_precision_name(model_get_precision(m)), weight_bytes(m), peak, bound);
    assert_true(peak <= bound);
    assert_true(peak > 0);
    assert_true(weight_bytes(m) > 50 * bound); /* the model is far larger than the buffer */
    free(x), free(y), free(ap);
    test_rmdir(a), test_rmdir(b);
    free(a), free(b);
}

static void test_policy_streamed(void **state) {
    (void)state;
    model *m = load(MODEL_F32, 0);
    check_streamed(m, "model", 4096);
    check_streamed(m, "model", 1001); /* rounded down to whole floats */
    model_free(m);
}

static void test_frozen_ref_streamed(void **state) {
    (void)state;
    model_precision ps[2] = {MODEL_BF16, MODEL_FP8};
    for (int k = 0; k < 2; k++) {
        model *ref = load(ps[k], 1);
        assert_null(model_params(ref)); /* stored in bf16 / fp8 only */
        check_streamed(ref, "ref", 4096);
        model_free(ref);
    }
}

/* r's range of the arena `want` equals got (the range's values). */
static void check_range_read(const char *dir, const model *m, const float *want, int w, int on_device) {
    int64_t numel = model_numel(m);
    for (int rank = 0; rank < w; rank++) {
        int64_t lo, hi;
        run_split(numel, rank, w, &lo, &hi);
        size_t n = (size_t)(hi - lo);
        float *host = malloc((n + 1) * sizeof(float));
        memcpy(host, want + lo, n * sizeof(float)); /* gaps keep their values */
        for (int i = 0; i < model_nparams(m); i++) { /* poison the tensors' elements */
            const model_param *p = model_param_at(m, i);
            for (int64_t e = p->offset; e < p->offset + p->numel; e++)
                if (e >= lo && e < hi) host[e - lo] = -12345.0f;
        }
        float *shard = host;
        const struct ops *o = ops_cpu();
        if (on_device) {
            shard = o->alloc((n + 1) * sizeof(float));
            o->upload(shard, host, n * sizeof(float));
        }
        run_ckpt_range r = {model_param_at(m, 0), model_nparams(m), lo, hi, shard, on_device ? o : NULL, 256, 0};
        size_t peak = 0;
        assert_int_equal(run_ckpt_read_range(dir, "model", &r, &peak), BASE_OK);
        if (on_device) {
            assert_true(peak <= 256);
            o->download(host, shard, n * sizeof(float));
            o->free(shard);
        } else {
            assert_int_equal(peak, 0); /* straight from the mapping into the shard */
        }
        assert_memory_equal(host, want + lo, n * sizeof(float));
        free(host);
    }
}

static void test_sharded_and_ranges(void **state) {
    (void)state;
    model *m = load(MODEL_F32, 0);
    int64_t numel = model_numel(m);
    float *want = malloc((size_t)numel * sizeof(float));
    model_weights_to_host(m, want);
    char *one = sub("one"), *sh = sub("sharded");
    uint64_t total = weight_bytes(m);
    assert_int_equal(run_ckpt_write_weights(m, one, "model", 0, ST_SHARD_DEFAULT, NULL), BASE_OK);
    assert_int_equal(run_ckpt_write_weights(m, sh, "model", 8192, total / 3, NULL), BASE_OK);
    st_dir *d;
    assert_int_equal(st_dir_open(sh, &d), BASE_OK);
    assert_non_null(st_dir_index_path(d));
    assert_true(st_dir_nfiles(d) >= 3);
    printf("sharded at %llu bytes: %d files\n", (unsigned long long)(total / 3), st_dir_nfiles(d));
    st_dir_close(d);
    /* model_load reads the shards back bit for bit */
    char *cfg = test_shared_path("fixtures/hf-tiny-v3-a/config.json"), *dst = base_path_join(sh, "config.json");
    test_copy_shared("fixtures/hf-tiny-v3-a/config.json", dst);
    model *back = NULL;
    model_load_opts o = {0};
    assert_int_equal(model_load(sh, ops_cpu(), &o, &back), BASE_OK);
    assert_int_equal(model_numel(back), numel);
    float *got = malloc((size_t)numel * sizeof(float));
    model_weights_to_host(back, got);
    assert_memory_equal(got, want, (size_t)numel * sizeof(float));
    model_free(back);
    const int ws[] = {1, 2, 3, 4};
    for (int k = 0; k < 4; k++) {
        check_range_read(one, m, want, ws[k], 0);
        check_range_read(one, m, want, ws[k], 1);
        check_range_read(sh, m, want, ws[k], 0);
        check_range_read(sh, m, want, ws[k], 1);
    }
    /* a checkpoint of another model: the tensor named */
    model_param bad = *model_param_at(m, 0);
    bad.numel += 1;
    bad.shape[bad.ndim - 1] += 1;
    float *tmp = malloc((size_t)(bad.numel + 1) * sizeof(float));
    run_ckpt_range r = {&bad, 1, bad.offset, bad.offset + bad.numel, tmp, NULL, 0, 0};
    assert_int_equal(run_ckpt_read_range(sh, "model", &r, NULL), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), bad.name));
    snprintf(bad.name, sizeof bad.name, "model.no_such.weight");
    bad.numel -= 1;
    r.hi -= 1;
    assert_int_equal(run_ckpt_read_range(sh, "model", &r, NULL), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "model.no_such.weight"));
    assert_int_equal(run_ckpt_read_range(sh, "ref", &r, NULL), BASE_ERR_IO); /* no ref files */
    free(tmp), free(got), free(want), free(cfg), free(dst), free(one), free(sh);
    model_free(m);
}

static void test_read_range_bf16_fp8(void **state) {
    (void)state;
    char *src = base_path_join(DIR_, "model/model.safetensors"), *dir = sub("lowp");
    st_file *f;
    assert_int_equal(st_open(src, &f), BASE_OK);
    st_writer *w = st_writer_new();
    void **keep = calloc((size_t)st_count(f) * 2, sizeof(void *));
    int nfp8 = 0;
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        assert_int_equal(t->dtype, TENSOR_F32);
        int64_t n = st_numel(t);
        const float *x = t->data;
        if (t->ndim == 2 && strstr(t->name, "proj.weight")) { /* FP8, 128 x 128 block scales */
            int64_t ns = tensor_qblock_nscale(t->shape[0], t->shape[1]);
            uint8_t *q = malloc((size_t)n);
            float *scale = malloc((size_t)ns * sizeof(float));
            tensor_quantize_fp8_block(q, scale, x, t->shape[0], t->shape[1]);
            char nm[160];
            snprintf(nm, sizeof nm, "%s_scale_inv", t->name);
            st_writer_add(w, t->name, TENSOR_F8_E4M3, 2, t->shape, q);
            st_writer_add(w, nm, TENSOR_F32, 2, (int64_t[]){(t->shape[0] + 127) / 128, (t->shape[1] + 127) / 128},
                          scale);
            keep[2 * i] = q, keep[2 * i + 1] = scale;
            nfp8++;
        } else {
            uint16_t *b = malloc((size_t)n * 2);
            for (int64_t k = 0; k < n; k++) b[k] = tensor_f32_to_bf16(x[k]);
            st_writer_add(w, t->name, TENSOR_BF16, t->ndim, t->shape, b);
            keep[2 * i] = b;
        }
    }
    assert_true(nfp8 > 4);
    char *out = base_path_join(dir, "model.safetensors"), *cfg = base_path_join(dir, "config.json");
    assert_int_equal(st_writer_write(w, out), BASE_OK);
    st_writer_free(w);
    for (int i = 0; i < 2 * st_count(f); i++) free(keep[i]);
    free(keep);
    st_close(f);
    test_copy_shared("fixtures/hf-tiny-v3-a/config.json", cfg);
    model *m = NULL;
    model_load_opts o = {0};
    assert_int_equal(model_load(dir, ops_cpu(), &o, &m), BASE_OK);
    int64_t numel = model_numel(m);
    float *want = malloc((size_t)numel * sizeof(float));
    model_weights_to_host(m, want);
    for (int w2 = 1; w2 <= 4; w2 *= 2) {
        check_range_read(dir, m, want, w2, 0);
        check_range_read(dir, m, want, w2, 1);
    }
    free(want), free(out), free(cfg), free(src), free(dir);
    model_free(m);
}

static base_status run_grpo(const char *name, int resume, int64_t max_total) {
    base_buf b = {0};
    base_buf_printf(&b,
                    "return {\n"
                    "  name = '%s', model = '%s/model', output_dir = '%s/runs', seed = 7,\n"
                    "  template = 'Q: {prompt}\\nA: ', report = false,\n"
                    "  datasets = { train = '%s/data.jsonl' }, rewards = { '%s/vary.lua:1.0' },\n"
                    "  stages = {\n"
                    "    { type = 'grpo', dataset = 'train', num_generations = 4, generation_batch_size = 8,\n"
                    "      max_steps = 3, max_completion_length = 8, learning_rate = 3e-3, beta = 0.04,\n"
                    "      sync_ref_model = true, ref_model_sync_steps = 1, ref_model_mixup_alpha = 0.5,\n"
                    "      save_steps = 1, save_total_limit = 0, per_device_train_batch_size = 4 },\n"
                    "  },\n"
                    "}\n",
                    name, DIR_, DIR_, DIR_, DIR_);
    recipe *rc;
    base_status s = recipe_load_string(b.data, "t.lua", NULL, 0, &rc);
    base_buf_free(&b);
    if (s) return s;
    run_opts o = {.resume = resume, .overwrite = !resume, .quiet = 1, .max_total_steps = max_total};
    s = run_recipe(rc, &o);
    recipe_free(rc);
    return s;
}

static char *ckpt_dir(const char *name, int step) {
    base_buf b = {0};
    base_buf_printf(&b, "%s/runs/%s/checkpoints/step-%d", DIR_, name, step);
    return b.data;
}

/* Every tensor of stem in both checkpoint directories: same names, same bytes. */
static void same_tensors(const char *a, const char *b, const char *stem) {
    st_dir *x, *y;
    assert_int_equal(st_dir_open_stem(a, stem, &x), BASE_OK);
    assert_int_equal(st_dir_open_stem(b, stem, &y), BASE_OK);
    assert_int_equal(st_dir_count(x), st_dir_count(y));
    for (int i = 0; i < st_dir_count(x); i++) {
        const st_tensor *t = st_dir_at(x, i), *u = st_dir_find(y, t->name);
        assert_non_null(u);
        assert_int_equal(t->nbytes, u->nbytes);
        assert_memory_equal(t->data, u->data, t->nbytes);
    }
    st_dir_close(x), st_dir_close(y);
}

static void test_run_sharded_resume(void **state) {
    (void)state;
    if (run_grpo("straight", 0, 0)) fail_msg("%s", base_err_msg());
    setenv("GRPO_TEST_CKPT_SHARD_BYTES", "300000", 1); /* the tiny model's 1.09 MB: 4 or more shards */
    base_status s = run_grpo("sharded", 0, 2);
    if (!s) s = run_grpo("sharded", 1, 0); /* resumes from the sharded step-2 */
    unsetenv("GRPO_TEST_CKPT_SHARD_BYTES");
    if (s) fail_msg("%s", base_err_msg());
    for (int step = 1; step <= 3; step++) {
        char *a = ckpt_dir("straight", step), *b = ckpt_dir("sharded", step);
        char *one = base_path_join(a, "model.safetensors"), *idx = base_path_join(b, "model.safetensors.index.json");
        char *ridx = base_path_join(b, "ref.safetensors.index.json"), *sh1 = base_path_join(b, "ref-00001-of-00004.safetensors");
        assert_true(base_file_exists(one));
        assert_true(base_file_exists(idx));
        assert_true(base_file_exists(ridx));
        assert_true(base_file_exists(sh1));
        same_tensors(a, b, "model");
        same_tensors(a, b, "ref");
        free(a), free(b), free(one), free(idx), free(ridx), free(sh1);
    }
    base_buf pa = {0}, pb = {0};
    base_buf_printf(&pa, "%s/runs/straight/metrics.jsonl", DIR_);
    base_buf_printf(&pb, "%s/runs/sharded/metrics.jsonl", DIR_);
    char *ma = test_metrics_canon(pa.data), *mb = test_metrics_canon(pb.data);
    assert_string_equal(ma, mb);
    free(ma), free(mb);
    base_buf_free(&pa), base_buf_free(&pb);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_streamed),
        cmocka_unit_test(test_frozen_ref_streamed),
        cmocka_unit_test(test_sharded_and_ranges),
        cmocka_unit_test(test_read_range_bf16_fp8),
        cmocka_unit_test(test_run_sharded_resume),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
