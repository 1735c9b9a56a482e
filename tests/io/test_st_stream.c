/*
 * Tests of the streaming safetensors writer (st_plan, src/io/st_stream.c)
 * and the range loader (st_dir_load_f32_range):
 *   - one file: byte for byte what st_writer writes for the same tensors
 *     and metadata, for host buffers of 1 byte to the default; the peak
 *     piece never passes the buffer;
 *   - Hugging Face's sharded layout: huggingface_hub's split (the docs'
 *     [6, 6, 2, 6, 2, 2] under 10 example; a tensor over the limit alone in
 *     a shard numbered when it is met), the file names, the index (keys
 *     sorted, json.dumps' indent 2), and st_dir_open reads it back;
 *   - failures (a failing callback, duplicate names, a bad stem, a missing
 *     directory) leave no file and no temporary file; a one-file write
 *     removes a stale index;
 *   - st_dir_load_f32_range equals the matching slice of st_dir_load for
 *     F32, BF16 and FP8 blocks (ranges across block and row edges).
 */
#include "common/test_common.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/st.h"

typedef struct {
    const char *name;
    tensor_dtype dt;
    int ndim;
    int64_t shape[4];
    const void *data;
    size_t nbytes;
} tdesc;

typedef struct {
    const tdesc *t;
    int fail_at; /* tensor index whose fill fails; -1: none */
    size_t calls;
} src;

static base_status fill(void *ctx, int i, uint64_t off, void *dst, size_t n) {
    src *s = ctx;
    s->calls++;
    if (i == s->fail_at) return base_err_set(BASE_ERR_IO, "device download failed (test)");
    assert_true(off + n <= s->t[i].nbytes);
    memcpy(dst, (const char *)s->t[i].data + off, n);
    return BASE_OK;
}

static char *slurp(const char *dir, const char *name, size_t *len) {
    char *p = base_path_join(dir, name), *t = NULL;
    if (base_read_file(p, &t, len)) fail_msg("%s", base_err_msg());
    free(p);
    return t;
}

/* Files in dir whose name contains `part` (e.g. ".tmp"). */
static int count_files(const char *dir, const char *part) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && strstr(e->d_name, part)) n++;
    closedir(d);
    return n;
}

static st_plan *plan_of(const tdesc *t, int n, int meta) {
    st_plan *p = st_plan_new();
    for (int i = 0; i < n; i++) st_plan_add(p, t[i].name, t[i].dt, t[i].ndim, t[i].shape);
    if (meta) {
        st_plan_meta(p, "format", "pt");
        st_plan_meta(p, "note", "quote \" and \\ and tab\t");
    }
    return p;
}

static void test_one_file_equals_writer(void **state) {
    (void)state;
    char *dir = test_tmpdir();
    float a[24], e[1];
    test_rand_f32(a, 24, 3, 2.0f);
    uint16_t b[5] = {0x3f80, 0xc000, 0x7fc0, 0x0001, 0x8000};
    uint8_t q[3] = {0x38, 0xb8, 0x7e};
    int64_t c = 42;
    const tdesc t[] = {
        {"x.q", TENSOR_F8_E4M3, 1, {3}, q, 3},
        {"x.b", TENSOR_BF16, 1, {5}, b, 10},
        {"x.a", TENSOR_F32, 3, {2, 3, 4}, a, 96},
        {"empty", TENSOR_F32, 2, {0, 4}, e, 0},
        {"step", TENSOR_I64, 0, {0}, &c, 8},
        {"we\"ird\\name\n\x01\xc3\xa9", TENSOR_F32, 1, {7}, a + 3, 28},
    };
    const int n = (int)(sizeof t / sizeof *t);
    for (int meta = 0; meta < 2; meta++) {
        st_writer *w = st_writer_new();
        for (int i = 0; i < n; i++) st_writer_add(w, t[i].name, t[i].dt, t[i].ndim, t[i].shape, t[i].data);
        if (meta) {
            st_writer_meta(w, "format", "pt");
            st_writer_meta(w, "note", "quote \" and \\ and tab\t");
        }
        char *ref = base_path_join(dir, "ref.safetensors");
        assert_int_equal(st_writer_write(w, ref), BASE_OK);
        st_writer_free(w);
        free(ref);
        size_t rlen;
        char *rbytes = slurp(dir, "ref.safetensors", &rlen);
        const size_t bufs[] = {1, 3, 8, 27, 96, 1000, 0};
        for (size_t k = 0; k < sizeof bufs / sizeof *bufs; k++) {
            st_plan *p = plan_of(t, n, meta);
            assert_int_equal(st_plan_layout(p, "model", ST_SHARD_DEFAULT), BASE_OK);
            assert_int_equal(st_plan_nfiles(p), 1);
            assert_string_equal(st_plan_file_name(p, 0), "model.safetensors");
            assert_int_equal(st_plan_total_bytes(p), 3 + 10 + 96 + 0 + 8 + 28);
            src s = {t, -1, 0};
            size_t peak = 12345;
            assert_int_equal(st_plan_write(p, dir, bufs[k], fill, &s, &peak), BASE_OK);
            size_t want = bufs[k] && bufs[k] < 96 ? bufs[k] : 96; /* the largest tensor: 96 bytes */
            assert_int_equal(peak, want);
            size_t len;
            char *bytes = slurp(dir, "model.safetensors", &len);
            assert_int_equal(len, rlen);
            assert_memory_equal(bytes, rbytes, len);
            free(bytes);
            assert_int_equal(count_files(dir, ".tmp"), 0);
            assert_int_equal(count_files(dir, ".index.json"), 0);
            st_plan_free(p);
        }
        free(rbytes);
    }
    test_rmdir(dir);
    free(dir);
}

/* n F32 tensors "t0".. of numel[i] elements (data: arena + running offset). */
static tdesc *f32_set(const int64_t *numel, int n, float *arena, char names[][8]) {
    tdesc *t = calloc((size_t)n, sizeof *t);
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        snprintf(names[i], 8, "t%d", i);
        t[i] = (tdesc){names[i], TENSOR_F32, 1, {numel[i]}, arena + off, (size_t)numel[i] * 4};
        off += numel[i];
    }
    return t;
}

/* Write the set sharded at `limit` bytes and check each tensor's file
 * number (1-based) and the read back values. */
static void sharded_case(const int64_t *numel, int n, uint64_t limit, const int *want_file, int want_files) {
    char *dir = test_tmpdir();
    float arena[64];
    test_rand_f32(arena, 64, 11, 1.0f);
    char names[8][8];
    tdesc *t = f32_set(numel, n, arena, names);
    st_plan *p = plan_of(t, n, 1);
    assert_int_equal(st_plan_layout(p, "model", limit), BASE_OK);
    assert_int_equal(st_plan_nfiles(p), want_files);
    for (int i = 0; i < n; i++) assert_int_equal(st_plan_file_of(p, i) + 1, want_file[i]);
    src s = {t, -1, 0};
    size_t peak;
    assert_int_equal(st_plan_write(p, dir, 4, fill, &s, &peak), BASE_OK);
    assert_int_equal(peak, 4);
    for (int f = 0; f < want_files; f++) {
        char nm[64];
        snprintf(nm, sizeof nm, "model-%05d-of-%05d.safetensors", f + 1, want_files);
        assert_string_equal(st_plan_file_name(p, f), nm);
    }
    st_dir *d;
    assert_int_equal(st_dir_open(dir, &d), BASE_OK);
    assert_non_null(st_dir_index_path(d));
    assert_int_equal(st_dir_nfiles(d), want_files);
    assert_int_equal(st_dir_count(d), n);
    for (int i = 0; i < n; i++) {
        float got[16];
        assert_int_equal(st_dir_load(d, t[i].name, TENSOR_F32, got, numel[i]), BASE_OK);
        assert_memory_equal(got, t[i].data, t[i].nbytes);
        assert_string_equal(strrchr(st_dir_file_of(d, st_dir_find(d, t[i].name)), '/') + 1,
                            st_plan_file_name(p, st_plan_file_of(p, i)));
    }
    /* the index as json.dumps(index, indent=2, sort_keys=True) prints it */
    size_t len;
    char *idx = slurp(dir, "model.safetensors.index.json", &len);
    base_buf want = {0};
    base_buf_printf(&want, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n  \"weight_map\": {",
                    (unsigned long long)st_plan_total_bytes(p));
    for (int i = 0; i < n; i++) /* t0..t7: name order is index order */
        base_buf_printf(&want, "%s\n    \"%s\": \"%s\"", i ? "," : "", t[i].name, st_plan_file_name(p, st_plan_file_of(p, i)));
    base_buf_puts(&want, "\n  }\n}\n");
    assert_string_equal(idx, want.data);
    base_buf_free(&want);
    free(idx);
    st_dir_close(d);
    assert_int_equal(count_files(dir, ".tmp"), 0);
    /* a one-file write into the same directory takes the index away */
    assert_int_equal(st_plan_layout(p, "model", 0), BASE_OK);
    assert_int_equal(st_plan_write(p, dir, 0, fill, &s, NULL), BASE_OK);
    assert_int_equal(count_files(dir, ".index.json"), 0);
    assert_int_equal(st_dir_open(dir, &d), BASE_OK);
    assert_null(st_dir_index_path(d));
    assert_int_equal(st_dir_count(d), n);
    st_dir_close(d);
    st_plan_free(p);
    free(t);
    test_rmdir(dir);
    free(dir);
}

static void test_sharded_layout(void **state) {
    (void)state;
    /* huggingface_hub's docstring: [6, 6, 2, 6, 2, 2] GB under 10 GB shard
     * as [6], [6+2], [6+2+2] (here in units of 4 bytes) */
    const int64_t a[] = {6, 6, 2, 6, 2, 2};
    sharded_case(a, 6, 40, (const int[]){1, 2, 2, 3, 3, 3}, 3);
    /* a tensor over the limit is a shard of its own, numbered when met:
     * before the shard that was open then */
    const int64_t b[] = {2, 12, 2, 2};
    sharded_case(b, 4, 40, (const int[]){2, 1, 2, 2}, 2);
    /* exactly the limit: one file, no index */
    char *dir = test_tmpdir();
    float x[10] = {0};
    char names[8][8];
    const int64_t c[] = {4, 6};
    tdesc *t = f32_set(c, 2, x, names);
    st_plan *p = plan_of(t, 2, 0);
    assert_int_equal(st_plan_layout(p, "ref", 40), BASE_OK);
    assert_int_equal(st_plan_nfiles(p), 1);
    assert_string_equal(st_plan_file_name(p, 0), "ref.safetensors");
    src s = {t, -1, 0};
    assert_int_equal(st_plan_write(p, dir, 0, fill, &s, NULL), BASE_OK);
    st_dir *d;
    assert_int_equal(st_dir_open_stem(dir, "ref", &d), BASE_OK);
    assert_int_equal(st_dir_count(d), 2);
    st_dir_close(d);
    /* "ref" sharded next to it: the stem's index is the one read */
    assert_int_equal(st_plan_layout(p, "ref", 39), BASE_OK);
    assert_int_equal(st_plan_nfiles(p), 2);
    assert_int_equal(st_plan_write(p, dir, 0, fill, &s, NULL), BASE_OK);
    assert_int_equal(st_dir_open_stem(dir, "ref", &d), BASE_OK);
    assert_int_equal(st_dir_nfiles(d), 2);
    st_dir_close(d);
    assert_int_equal(st_dir_open_stem(dir, "model", &d), BASE_ERR_IO);
    assert_non_null(strstr(base_err_msg(), "model.safetensors.index.json"));
    st_plan_free(p);
    free(t);
    test_rmdir(dir);
    free(dir);
}

static void test_failures(void **state) {
    (void)state;
    char *dir = test_tmpdir();
    float x[16];
    test_rand_f32(x, 16, 5, 1.0f);
    char names[8][8];
    const int64_t c[] = {4, 6, 6};
    tdesc *t = f32_set(c, 3, x, names);
    /* a failing callback (sharded and not): an error naming the tensor and
     * the file, nothing left behind */
    for (uint64_t limit = 0; limit <= 24; limit += 24) {
        st_plan *p = plan_of(t, 3, 0);
        assert_int_equal(st_plan_layout(p, "model", limit), BASE_OK);
        src s = {t, 1, 0};
        assert_int_equal(st_plan_write(p, dir, 8, fill, &s, NULL), BASE_ERR_IO);
        assert_non_null(strstr(base_err_msg(), "device download failed"));
        assert_non_null(strstr(base_err_msg(), "'t1'"));
        assert_int_equal(count_files(dir, ""), 0);
        st_plan_free(p);
    }
    /* duplicate and reserved names, a bad tensor, a bad stem */
    st_plan *p = plan_of(t, 3, 0);
    st_plan_add(p, "t1", TENSOR_F32, 1, (int64_t[]){2});
    assert_int_equal(st_plan_layout(p, "model", 0), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "'t1' added twice"));
    st_plan_free(p);
    p = plan_of(t, 3, 0);
    st_plan_add(p, "__metadata__", TENSOR_F32, 1, (int64_t[]){2});
    assert_int_equal(st_plan_layout(p, "model", 0), BASE_ERR_INVALID);
    st_plan_free(p);
    p = plan_of(t, 3, 0);
    st_plan_add(p, "neg", TENSOR_F32, 1, (int64_t[]){-2});
    assert_int_equal(st_plan_layout(p, "model", 0), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "'neg': negative dim"));
    st_plan_free(p);
    p = plan_of(t, 3, 0);
    assert_int_equal(st_plan_layout(p, "a/b", 0), BASE_ERR_INVALID);
    assert_int_equal(st_plan_layout(p, "", 0), BASE_ERR_INVALID);
    /* a missing directory */
    assert_int_equal(st_plan_layout(p, "model", 0), BASE_OK);
    char *gone = base_path_join(dir, "no/such");
    src s = {t, -1, 0};
    assert_int_equal(st_plan_write(p, gone, 0, fill, &s, NULL), BASE_ERR_IO);
    assert_non_null(strstr(base_err_msg(), "no/such/model.safetensors.tmp"));
    /* a piece outside its tensor */
    assert_int_equal(st_plan_create(p, dir), BASE_OK);
    st_part *w = st_part_open(p, dir, 0);
    assert_int_equal(st_part_put(w, 0, 8, 9, fill, &s), BASE_ERR_INVALID);
    assert_int_equal(st_part_put(w, 3, 0, 1, fill, &s), BASE_ERR_INVALID);
    assert_int_equal(st_part_close(w, NULL), BASE_OK);
    st_plan_abandon(p, dir);
    assert_int_equal(count_files(dir, ""), 0);
    free(gone);
    st_plan_free(p);
    free(t);
    test_rmdir(dir);
    free(dir);
}

static void test_load_range(void **state) {
    (void)state;
    char *dir = test_tmpdir();
    enum { R = 130, C = 200 }; /* 2 x 2 blocks, partial at the edges */
    float *w = malloc(R * C * sizeof(float)), *full = malloc(R * C * sizeof(float)), *got = malloc((R * C + 1) * sizeof(float));
    test_rand_f32(w, R * C, 9, 1.0f);
    uint16_t *bf = malloc(R * C * sizeof(uint16_t));
    uint8_t *q = malloc(R * C);
    float sc[4] = {0.5f, 2.0f, 0.125f, 3.0f};
    for (int i = 0; i < R * C; i++) bf[i] = tensor_f32_to_bf16(w[i]), q[i] = (uint8_t)(i * 37 + 11);
    q[5] = 0x7f; /* a NaN */
    int64_t s2[2] = {R, C}, ss[2] = {2, 2}, one = 3;
    int64_t ids[3] = {1, 2, 3};
    st_writer *wr = st_writer_new();
    st_writer_add(wr, "f", TENSOR_F32, 2, s2, w);
    st_writer_add(wr, "b", TENSOR_BF16, 2, s2, bf);
    st_writer_add(wr, "q", TENSOR_F8_E4M3, 2, s2, q);
    st_writer_add(wr, "q_scale_inv", TENSOR_F32, 2, ss, sc);
    st_writer_add(wr, "i", TENSOR_I64, 1, &one, ids);
    st_writer_add(wr, "lone", TENSOR_F8_E4M3, 2, s2, q);
    char *p = base_path_join(dir, "model.safetensors");
    assert_int_equal(st_writer_write(wr, p), BASE_OK);
    st_writer_free(wr);
    st_dir *d;
    assert_int_equal(st_dir_open(dir, &d), BASE_OK);
    const char *names[3] = {"f", "b", "q"};
    const int64_t ranges[][2] = {{0, R * C}, {0, 1}, {127, 2}, {199, 130}, {128 * C - 5, 300}, {R * C - 1, 1}, {333, 0}};
    for (int k = 0; k < 3; k++) {
        assert_int_equal(st_dir_load(d, names[k], TENSOR_F32, full, R * C), BASE_OK);
        for (size_t r = 0; r < sizeof ranges / sizeof *ranges; r++) {
            int64_t off = ranges[r][0], n = ranges[r][1];
            memset(got, 0xa5, (size_t)(n + 1) * sizeof(float));
            assert_int_equal(st_dir_load_f32_range(d, names[k], off, n, got), BASE_OK);
            assert_memory_equal(got, full + off, (size_t)n * sizeof(float)); /* bit for bit, NaN included */
            uint32_t guard;
            memcpy(&guard, got + n, 4);
            assert_int_equal(guard, 0xa5a5a5a5u); /* nothing past n */
        }
    }
    assert_int_equal(st_dir_load_f32_range(d, "f", R * C - 1, 2, got), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "'f'"));
    assert_int_equal(st_dir_load_f32_range(d, "f", -1, 1, got), BASE_ERR_INVALID);
    assert_int_equal(st_dir_load_f32_range(d, "i", 0, 1, got), BASE_ERR_UNSUPPORTED);
    assert_int_equal(st_dir_load_f32_range(d, "lone", 0, 1, got), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "lone_scale_inv"));
    assert_int_equal(st_dir_load_f32_range(d, "nope", 0, 1, got), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "no tensor 'nope'"));
    st_dir_close(d);
    free(p), free(w), free(full), free(got), free(bf), free(q);
    test_rmdir(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_file_equals_writer),
        cmocka_unit_test(test_sharded_layout),
        cmocka_unit_test(test_failures),
        cmocka_unit_test(test_load_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
