/*
 * Tests of src/io safetensors: every malformed-header case is rejected with
 * a message naming the file and the tensor; loading converts dtypes and
 * dequantises FP8 blocks (edge blocks included); the writer round-trips,
 * is 8-byte aligned and atomic; sharded directories resolve through the
 * index and reject every disagreement between index and shards.
 *
 * With GRPO_ST_KEEP=DIR set, the test also leaves a C-written sample and
 * every malformed image in DIR for tests/io/gen/check_python.py, which
 * checks them against the Python `safetensors` package.
 */
#include "common/test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/st.h"

/* ---- helpers ------------------------------------------------------------ */

/* An image: u64 LE length of `json`, json, then `datalen` pattern bytes. */
static uint8_t *mk(const char *json, size_t datalen, size_t *len) {
    size_t hn = strlen(json);
    *len = 8 + hn + datalen;
    uint8_t *b = malloc(*len);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hn >> (8 * i));
    memcpy(b + 8, json, hn);
    for (size_t i = 0; i < datalen; i++) b[8 + hn + i] = (uint8_t)(i * 7 + 1);
    return b;
}

static int n_kept;

static void keep(const char *prefix, const uint8_t *b, size_t len) {
    const char *dir = getenv("GRPO_ST_KEEP");
    if (!dir) return;
    char p[4096];
    snprintf(p, sizeof p, "%s/%s_%03d.safetensors", dir, prefix, n_kept++);
    test_write_file(p, b, len);
}

#define has(msg, s) assert_non_null(strstr((msg), (s)))

/* The image must be rejected with status st and a message naming the file
 * and containing `what` (the tensor name or the problem). */
static void reject_img(const uint8_t *b, size_t len, base_status st, const char *what) {
    /* "unsup": valid safetensors that grpo refuses; "bad": invalid format */
    keep(st == BASE_ERR_UNSUPPORTED ? "unsup" : "bad", b, len);
    st_file *f = NULL;
    base_status s = st_open_memory(b, len, "bad.safetensors", &f);
    if (s != st || !strstr(base_err_msg(), "bad.safetensors") || !strstr(base_err_msg(), what))
        fprintf(stderr, "status %d (want %d), message: %s\n", s, st, base_err_msg());
    assert_int_equal(s, st);
    assert_null(f);
    has(base_err_msg(), "bad.safetensors");
    has(base_err_msg(), what);
}

static void reject(const char *json, size_t datalen, base_status st, const char *what) {
    size_t len;
    uint8_t *b = mk(json, datalen, &len);
    reject_img(b, len, st, what);
    free(b);
}

static st_file *accept(const char *json, size_t datalen, uint8_t **img) {
    size_t len;
    *img = mk(json, datalen, &len);
    assert_int_equal(len, 8 + strlen(json) + datalen);
    keep("good", *img, len);
    st_file *f = NULL;
    base_status s = st_open_memory(*img, len, "good.safetensors", &f);
    if (s) fprintf(stderr, "%s\n", base_err_msg());
    assert_int_equal(s, BASE_OK);
    return f;
}

/* ---- header validation -------------------------------------------------- */

static void test_valid_basic(void **state) {
    (void)state;
    uint8_t *img;
    st_file *f = accept("{\"__metadata__\":{\"format\":\"pt\"},"
                        "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[16,28]},"
                        "\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                        "\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[28,36]},"
                        "\"z\":{\"dtype\":\"F16\",\"shape\":[0,5],\"data_offsets\":[36,36]}}   ",
                        36, &img);
    assert_int_equal(st_count(f), 4);
    /* file order is data order */
    assert_string_equal(st_at(f, 0)->name, "a");
    assert_string_equal(st_at(f, 1)->name, "b");
    assert_string_equal(st_at(f, 2)->name, "s");
    assert_null(st_at(f, 4));
    const st_tensor *b = st_find(f, "b");
    assert_non_null(b);
    assert_int_equal(b->dtype, TENSOR_BF16);
    assert_int_equal(b->ndim, 2);
    assert_int_equal(b->shape[1], 3);
    assert_int_equal(b->nbytes, 12);
    assert_int_equal(st_numel(b), 6);
    /* "a" opens the data section, which follows the header */
    const char *hdr = (const char *)img + 8;
    size_t hn = (size_t)(strstr(hdr, "}}   ") + 5 - hdr);
    assert_ptr_equal(st_find(f, "a")->data, img + 8 + hn);
    assert_int_equal((const uint8_t *)b->data - (const uint8_t *)st_find(f, "a")->data, 16);
    const st_tensor *s = st_find(f, "s");
    assert_int_equal(s->ndim, 0);
    assert_int_equal(st_numel(s), 1);
    assert_int_equal(st_numel(st_find(f, "z")), 0);
    assert_null(st_find(f, "nope"));
    assert_string_equal(base_json_str(st_metadata(f), "format", ""), "pt");
    assert_int_equal(st_data_bytes(f), 36);
    st_close(f);
    free(img);
    /* accepted as the reference accepts them: leading whitespace, fields
     * other than the three (ignored) */
    f = accept(" \n{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":[0]}}", 4, &img);
    assert_int_equal(st_count(f), 1);
    st_close(f);
    free(img);
}

static void test_reject_framing(void **state) {
    (void)state;
    /* shorter than the length field */
    reject_img((const uint8_t *)"\x05\0\0", 3, BASE_ERR_PARSE, "too short");
    /* header length past the end of the file */
    size_t len;
    uint8_t *b = mk("{}", 0, &len);
    b[0] = 200;
    reject_img(b, len, BASE_ERR_PARSE, "runs past the end");
    b[0] = 0;
    reject_img(b, len, BASE_ERR_PARSE, "header length is 0");
    free(b);
    /* a length whose high bytes are set (would overflow 8 + N) */
    b = mk("{}", 0, &len);
    memset(b, 0xff, 8);
    reject_img(b, len, BASE_ERR_PARSE, "runs past the end");
    free(b);
}

static void test_reject_json(void **state) {
    (void)state;
    reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, BASE_ERR_PARSE,
           "not well-formed JSON");
    reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}x", 4, BASE_ERR_PARSE,
           "trailing bytes");
    reject("[1,2]", 0, BASE_ERR_PARSE, "header is not a JSON object");
    reject("\"x\"", 0, BASE_ERR_PARSE, "header is not a JSON object");
    reject("{\"\xff\":{}}", 0, BASE_ERR_PARSE, "not valid UTF-8");
    reject("{\"\xc0\xaf\":{}}", 0, BASE_ERR_PARSE, "not valid UTF-8"); /* overlong '/' */
    reject("{\"\xed\xa0\x80\":{}}", 0, BASE_ERR_PARSE, "not valid UTF-8"); /* surrogate */
    size_t len;
    uint8_t *b = mk("{\"a\":1}", 0, &len);
    b[8 + 3] = 0; /* NUL inside the header */
    reject_img(b, len, BASE_ERR_PARSE, "NUL byte");
    free(b);
    /* cJSON would cut the name at the NUL: "a\u0000b" would load as "a" */
    reject("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, BASE_ERR_PARSE,
           "U+0000 (NUL) in a string");
    reject("{\"w\":[1,2]}", 0, BASE_ERR_PARSE, "'w': entry is not a JSON object");
    reject("{\"__metadata__\":{\"k\":1}}", 0, BASE_ERR_PARSE, "__metadata__ value 'k'");
    reject("{\"__metadata__\":[]}", 0, BASE_ERR_PARSE, "__metadata__ is not an object");
    reject("{\"__metadata__\":{},\"__metadata__\":{}}", 0, BASE_ERR_PARSE, "__metadata__ appears twice");
}

static void test_reject_entries(void **state) {
    (void)state;
    reject("{\"w\":{\"dtype\":\"F99\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, BASE_ERR_PARSE,
           "'w': unknown dtype 'F99'");
    reject("{\"w\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, BASE_ERR_UNSUPPORTED,
           "'w': dtype F64 is not supported");
    reject("{\"w\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, BASE_ERR_PARSE,
           "'w': dtype is not a string");
    reject("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, BASE_ERR_PARSE, "'w': missing field 'dtype'");
    reject("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, BASE_ERR_PARSE,
           "'w': missing field 'shape'");
    reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, BASE_ERR_PARSE,
           "'w': missing field 'data_offsets'");
    reject("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
           BASE_ERR_PARSE, "'w': field 'dtype' appears twice");
    reject("{\"w\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]}}", 4, BASE_ERR_PARSE,
           "'w': shape is not an array");
    reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, BASE_ERR_PARSE,
           "'w': shape[0] is not a non-negative integer");
    reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1.5],\"data_offsets\":[0,4]}}", 4, BASE_ERR_PARSE,
           "'w': shape[1] is not");
    reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, BASE_ERR_PARSE,
           "'w': shape[0] is not");
    reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
           BASE_ERR_UNSUPPORTED, "'w': 5 dims");
    /* product overflow must not wrap to a small size */
    reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,1],\"data_offsets\":[0,0]}}", 0,
           BASE_ERR_PARSE, "'w': shape has 2^53 or more elements");
    reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, BASE_ERR_PARSE,
           "'w': shape [3] x F32 needs 12 bytes but data_offsets [0, 8) hold 8");
    reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, BASE_ERR_PARSE,
           "'w': data_offsets is not [begin, end]");
    reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4, BASE_ERR_PARSE,
           "'w': data_offsets is not [begin, end]");
    reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1e300]}}", 4, BASE_ERR_PARSE,
           "'w': data_offsets are not non-negative integers");
    reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4, BASE_ERR_PARSE,
           "'w': data_offsets [4, 0) end before begin");
    reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, BASE_ERR_PARSE,
           "'w': data_offsets [0, 8) run past the data section (4 bytes)");
}

static void test_reject_layout(void **state) {
    (void)state;
    reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
           12, BASE_ERR_PARSE, "tensor 'b' [4, 12) overlaps tensor 'a' [0, 8)");
    reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
           12, BASE_ERR_PARSE, "bytes [4, 8) of the data section belong to no tensor (gap before tensor 'b')");
    reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 9, BASE_ERR_PARSE,
           "data section is 9 bytes but the tensors cover 4");
    reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
           "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
           8, BASE_ERR_PARSE, "tensor 'a' appears twice");
    /* two empty tensors at one offset do not overlap */
    uint8_t *img;
    st_file *f = accept("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                        "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                        "\"c\":{\"dtype\":\"I32\",\"shape\":[2,0],\"data_offsets\":[4,4]}}",
                        4, &img);
    assert_int_equal(st_count(f), 3);
    st_close(f);
    free(img);
}

/* st_open: an empty file, a missing one, a truncated one, a sparse file
 * with a header length over the 100 MB limit. */
static void test_open_files(void **state) {
    (void)state;
    char *dir = test_tmpdir();
    char *p = base_path_join(dir, "x.safetensors");
    st_file *f = NULL;
    assert_int_equal(st_open(p, &f), BASE_ERR_IO);
    has(base_err_msg(), p);
    test_write_file(p, "", 0);
    assert_int_equal(st_open(p, &f), BASE_ERR_PARSE);
    has(base_err_msg(), p);
    has(base_err_msg(), "too short");
    assert_int_equal(st_open(dir, &f), BASE_ERR_IO);
    has(base_err_msg(), "not a regular file");

    float v[6] = {1, 2, 3, 4, 5, 6};
    int64_t sh[2] = {2, 3};
    st_writer *w = st_writer_new();
    st_writer_add(w, "w", TENSOR_F32, 2, sh, v);
    st_writer_add(w, "v", TENSOR_F32, 1, sh + 1, v);
    assert_int_equal(st_writer_write(w, p), BASE_OK);
    st_writer_free(w);
    assert_int_equal(st_open(p, &f), BASE_OK);
    st_close(f);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(truncate(p, sb.st_size - 4), 0);
    assert_int_equal(st_open(p, &f), BASE_ERR_PARSE);
    has(base_err_msg(), p);
    has(base_err_msg(), "'v'"); /* the last tensor now runs past the data section */

    /* sparse: 8 + 100,000,001 + 8 bytes, header length 100,000,001 */
    FILE *fp = fopen(p, "wb");
    assert_non_null(fp);
    uint8_t len8[8] = {0x01, 0xe1, 0xf5, 0x05, 0, 0, 0, 0}; /* 100000001 */
    assert_int_equal(fwrite(len8, 1, 8, fp), 8);
    fclose(fp);
    assert_int_equal(truncate(p, 8 + 100000001 + 8), 0);
    assert_int_equal(st_open(p, &f), BASE_ERR_PARSE);
    has(base_err_msg(), "exceeds the limit");
    free(p);
    test_rmdir(dir);
    free(dir);
}

static void test_fixture(void **state) {
    (void)state;
    char *p = test_shared_path("fixtures/hf-tiny-v3-a/model.safetensors");
    st_file *f = NULL;
    if (st_open(p, &f)) fail_msg("%s", base_err_msg());
    int64_t params = 0;
    for (int i = 0; i < st_count(f); i++) params += st_numel(st_at(f, i));
    assert_int_equal(st_count(f), 91);
    assert_int_equal(params, 273088); /* the fixture README's count */
    assert_string_equal(base_json_str(st_metadata(f), "format", ""), "pt");
    const st_tensor *e = st_find(f, "model.embed_tokens.weight");
    assert_non_null(e);
    assert_int_equal(e->shape[0], 320);
    assert_int_equal(e->shape[1], 64);
    st_close(f);
    free(p);
}

/* ---- loading ------------------------------------------------------------ */

static void test_load_convert(void **state) {
    (void)state;
    /* one F8 byte first, so the BF16 tensor after it sits at an odd offset */
    float f32[5] = {1.5f, -2.25f, 3.0e-3f, 65504.0f, -0.0f};
    uint16_t bf[5], h[5];
    for (int i = 0; i < 5; i++) bf[i] = tensor_f32_to_bf16(f32[i] * 3), h[i] = tensor_f32_to_f16(f32[i]);
    int64_t i64[3] = {-7, 0, 123456789};
    int32_t i32[3] = {-3, 4, 1 << 20};
    uint8_t q = 0x38; /* 1.0 */
    int64_t n5 = 5, n3 = 3, n1 = 1;
    char *dir = test_tmpdir();
    char *p = base_path_join(dir, "c.safetensors");
    st_writer *w = st_writer_new();
    st_writer_add(w, "q", TENSOR_F8_E4M3, 1, &n1, &q);
    st_writer_add(w, "bf", TENSOR_BF16, 1, &n5, bf);
    st_writer_add(w, "f32", TENSOR_F32, 1, &n5, f32);
    st_writer_add(w, "h", TENSOR_F16, 1, &n5, h);
    st_writer_add(w, "i64", TENSOR_I64, 1, &n3, i64);
    st_writer_add(w, "i32", TENSOR_I32, 1, &n3, i32);
    assert_int_equal(st_writer_write(w, p), BASE_OK);
    st_writer_free(w);
    st_file *f;
    assert_int_equal(st_open(p, &f), BASE_OK);
    assert_int_equal(((uintptr_t)st_find(f, "bf")->data) % 2, 1);
    float out[5];
    uint16_t ob[5];
    assert_int_equal(st_file_load(f, "bf", TENSOR_F32, out, 5), BASE_OK);
    for (int i = 0; i < 5; i++) assert_true(out[i] == tensor_bf16_to_f32(bf[i]));
    assert_int_equal(st_file_load(f, "f32", TENSOR_BF16, ob, 5), BASE_OK);
    for (int i = 0; i < 5; i++) assert_int_equal(ob[i], tensor_f32_to_bf16(f32[i]));
    assert_int_equal(st_file_load(f, "h", TENSOR_F32, out, 5), BASE_OK);
    for (int i = 0; i < 5; i++) assert_true(out[i] == f32[i] || (i == 2 && fabsf(out[i] - f32[i]) < 2e-6f));
    assert_int_equal(st_file_load(f, "i64", TENSOR_F32, out, 3), BASE_OK);
    assert_true(out[0] == -7.0f && out[2] == 123456792.0f); /* nearest float */
    int64_t oi[3];
    assert_int_equal(st_file_load(f, "i64", TENSOR_I64, oi, 3), BASE_OK);
    assert_memory_equal(oi, i64, sizeof i64);
    assert_int_equal(st_file_load(f, "i32", TENSOR_F32, out, 3), BASE_OK);
    assert_true(out[0] == -3.0f && out[2] == 1048576.0f);
    /* errors name the file and the tensor */
    assert_int_equal(st_file_load(f, "bf", TENSOR_F32, out, 4), BASE_ERR_INVALID);
    has(base_err_msg(), p);
    has(base_err_msg(), "'bf': [5] has 5 elements, expected 4");
    assert_int_equal(st_file_load(f, "f32", TENSOR_F16, h, 5), BASE_ERR_UNSUPPORTED);
    has(base_err_msg(), "'f32': cannot load F32 as F16");
    assert_int_equal(st_file_load(f, "zz", TENSOR_F32, out, 1), BASE_ERR_INVALID);
    has(base_err_msg(), "no tensor 'zz'");
    assert_int_equal(st_file_load(f, "q", TENSOR_F32, out, 1), BASE_ERR_UNSUPPORTED);
    has(base_err_msg(), "'q': F8_E4M3 with shape [1]");
    st_close(f);
    free(p);
    test_rmdir(dir);
    free(dir);
}

/* FP8 weight [200, 300]: scale [2, 3], last row block 72 rows, last column
 * block 44 columns. Checked against the spec's formula element by element
 * and at hand-picked positions in each block. */
static void check_fp8(const st_tensor *q, const float *s, const float *w, int rows, int cols) {
    const uint8_t *qd = q->data;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            float want = tensor_f8e4m3_to_f32(qd[i * cols + j]) * s[(i / 128) * 3 + j / 128];
            if (w[i * cols + j] != want) fail_msg("W[%d,%d] = %g, want %g", i, j, w[i * cols + j], want);
        }
}

static void test_fp8(void **state) {
    (void)state;
    enum { R = 200, C = 300 };
    uint8_t *q = malloc(R * C);
    base_rng rng;
    base_rng_init(&rng, 42, 1, 2, 3);
    for (int i = 0; i < R * C; i++) {
        uint8_t c = (uint8_t)(base_rng_uniform(&rng, (uint32_t)i) * 256);
        q[i] = (c & 0x7f) == 0x7f ? 0x38 : c; /* no NaN codes */
    }
    q[0] = 0x38;                       /* 1.0 in block (0,0) */
    q[199 * C + 299] = 0xb8;           /* -1.0 in the corner edge block (1,2) */
    q[127 * C + 256] = 0x40;           /* 2.0 in block (0,2) */
    q[128 * C + 255] = 0x7e;           /* 448 in block (1,1) */
    float s[6] = {0.5f, 1.0f, 2.0f, 0.25f, 4.0f, 3.0f};
    int64_t qs[2] = {R, C}, ss[2] = {2, 3}, ss_bad[2] = {2, 2};
    char *dir = test_tmpdir();
    char *p = base_path_join(dir, "f8.safetensors");
    st_writer *w = st_writer_new();
    st_writer_add(w, "l.weight", TENSOR_F8_E4M3, 2, qs, q);
    st_writer_add(w, "l.weight_scale_inv", TENSOR_F32, 2, ss, s);
    st_writer_add(w, "m.weight", TENSOR_F8_E4M3, 2, qs, q);
    st_writer_add(w, "m.weight_scale_inv", TENSOR_F32, 2, ss_bad, s);
    st_writer_add(w, "n.weight", TENSOR_F8_E4M3, 2, qs, q);
    assert_int_equal(st_writer_write(w, p), BASE_OK);
    st_writer_free(w);
    st_file *f;
    assert_int_equal(st_open(p, &f), BASE_OK);
    float *out = malloc(R * C * sizeof(float));
    uint16_t *ob = malloc(R * C * 2);
    assert_int_equal(st_file_load(f, "l.weight", TENSOR_F32, out, R * C), BASE_OK);
    check_fp8(st_find(f, "l.weight"), s, out, R, C);
    assert_true(out[0] == 0.5f);
    assert_true(out[199 * C + 299] == -3.0f);
    assert_true(out[127 * C + 256] == 4.0f);
    assert_true(out[128 * C + 255] == 448.0f * 4.0f);
    assert_int_equal(st_file_load(f, "l.weight", TENSOR_BF16, ob, R * C), BASE_OK);
    for (int i = 0; i < R * C; i++) assert_int_equal(ob[i], tensor_f32_to_bf16(out[i]));
    /* raw F8 bytes on request */
    uint8_t *raw = malloc(R * C);
    assert_int_equal(st_file_load(f, "l.weight", TENSOR_F8_E4M3, raw, R * C), BASE_OK);
    assert_memory_equal(raw, q, R * C);
    assert_int_equal(st_file_load(f, "m.weight", TENSOR_F32, out, R * C), BASE_ERR_INVALID);
    has(base_err_msg(), "'m.weight_scale_inv': scale is F32 [2, 2], expected F32 [2, 3]");
    has(base_err_msg(), p);
    assert_int_equal(st_file_load(f, "n.weight", TENSOR_F32, out, R * C), BASE_ERR_INVALID);
    has(base_err_msg(), "'n.weight': F8_E4M3 weight without its 'n.weight_scale_inv'");
    st_close(f);
    free(raw);
    free(ob);
    free(out);
    free(q);
    free(p);
    test_rmdir(dir);
    free(dir);
}

/* ---- writing ------------------------------------------------------------ */

static void test_write_roundtrip(void **state) {
    (void)state;
    char *dir = test_tmpdir();
    char *p = base_path_join(dir, "rt.safetensors");
    float a[12];
    test_rand_f32(a, 12, 7, 1.0f);
    uint16_t b[3] = {0x3f80, 0xc000, 0x7fc0};
    int64_t c = 42;
    int64_t sa[3] = {2, 3, 2}, sb[1] = {3};
    const char *odd = "we\"ird\\name\n\x01\xc3\xa9";
    st_writer *w = st_writer_new();
    st_writer_add(w, "x.b", TENSOR_BF16, 1, sb, b);
    st_writer_add(w, "x.a", TENSOR_F32, 3, sa, a);
    st_writer_add(w, "step", TENSOR_I64, 0, NULL, &c);
    st_writer_add(w, odd, TENSOR_F32, 1, sb, a);
    st_writer_meta(w, "format", "pt");
    st_writer_meta(w, "note", "quote \" and \\ and tab\t");
    st_writer_meta(w, "format", "pt"); /* replaces, not duplicates */
    assert_int_equal(st_writer_write(w, p), BASE_OK);
    st_writer_free(w);
    char *tmp = malloc(strlen(p) + 32);
    sprintf(tmp, "%s.tmp.%ld", p, (long)getpid());
    assert_false(base_file_exists(tmp));
    free(tmp);

    char *txt;
    size_t len;
    assert_int_equal(base_read_file(p, &txt, &len), BASE_OK);
    uint64_t hn = 0;
    for (int i = 7; i >= 0; i--) hn = (hn << 8) | (uint8_t)txt[i];
    assert_int_equal((8 + hn) % 8, 0); /* data section 8-byte aligned */
    assert_int_equal(len, 8 + hn + 6 + 48 + 8 + 12);
    keep("good_c_written", (const uint8_t *)txt, len);
    free(txt);

    st_file *f;
    assert_int_equal(st_open(p, &f), BASE_OK);
    assert_int_equal(st_count(f), 4);
    assert_string_equal(st_at(f, 0)->name, "x.b"); /* order added */
    assert_string_equal(st_at(f, 1)->name, "x.a");
    assert_memory_equal(st_find(f, "x.b")->data, b, sizeof b);
    assert_memory_equal(st_find(f, "x.a")->data, a, sizeof a);
    assert_int_equal(st_find(f, "x.a")->shape[2], 2);
    assert_int_equal(st_find(f, "step")->ndim, 0);
    assert_memory_equal(st_find(f, "step")->data, &c, 8);
    assert_non_null(st_find(f, odd));
    assert_string_equal(base_json_str(st_metadata(f), "note", ""), "quote \" and \\ and tab\t");
    assert_int_equal(cJSON_GetArraySize(st_metadata(f)), 2);
    st_close(f);

    /* errors: duplicate, reserved name, bad add, unwritable path; the old
     * file survives each */
    w = st_writer_new();
    st_writer_add(w, "d", TENSOR_F32, 1, sb, a);
    st_writer_add(w, "d", TENSOR_F32, 1, sb, a);
    assert_int_equal(st_writer_write(w, p), BASE_ERR_INVALID);
    has(base_err_msg(), "tensor 'd' added twice");
    st_writer_free(w);
    w = st_writer_new();
    st_writer_add(w, "__metadata__", TENSOR_F32, 1, sb, a);
    assert_int_equal(st_writer_write(w, p), BASE_ERR_INVALID);
    has(base_err_msg(), "reserved");
    st_writer_free(w);
    w = st_writer_new();
    int64_t s5[5] = {1, 1, 1, 1, 1};
    st_writer_add(w, "five", TENSOR_F32, 5, s5, a);
    assert_int_equal(st_writer_write(w, p), BASE_ERR_INVALID);
    has(base_err_msg(), "tensor 'five': more than 4 dims");
    has(base_err_msg(), p);
    st_writer_free(w);
    assert_int_equal(st_open(p, &f), BASE_OK);
    assert_int_equal(st_count(f), 4);
    st_close(f);
    char *q = base_path_join(dir, "no/such/dir/x.safetensors");
    w = st_writer_new();
    st_writer_add(w, "a", TENSOR_F32, 1, sb, a);
    assert_int_equal(st_writer_write(w, q), BASE_ERR_IO);
    has(base_err_msg(), "no/such/dir/x.safetensors.tmp");
    st_writer_free(w);
    free(q);
    /* an empty file (no tensors) is valid */
    w = st_writer_new();
    assert_int_equal(st_writer_write(w, p), BASE_OK);
    st_writer_free(w);
    assert_int_equal(st_open(p, &f), BASE_OK);
    assert_int_equal(st_count(f), 0);
    assert_null(st_metadata(f));
    st_close(f);
    free(p);
    test_rmdir(dir);
    free(dir);
}

/* A file written by the Python package (tests/io/gen/make_py_fixture.py):
 * its values follow a formula the test recomputes. */
static void test_python_written(void **state) {
    (void)state;
    char *p = test_src_path("tests/io/data/py_written.safetensors");
    st_file *f;
    if (st_open(p, &f)) fail_msg("%s", base_err_msg());
    assert_string_equal(base_json_str(st_metadata(f), "writer", ""), "python safetensors");
    float w[6 * 7];
    assert_int_equal(st_file_load(f, "w", TENSOR_F32, w, 42), BASE_OK);
    for (int i = 0; i < 42; i++) assert_true(w[i] == (float)i * 0.25f - 3.0f);
    float hh[5];
    assert_int_equal(st_file_load(f, "h", TENSOR_F32, hh, 5), BASE_OK);
    for (int i = 0; i < 5; i++) assert_true(hh[i] == (float)(i - 2) * 0.5f);
    int64_t ids[4];
    assert_int_equal(st_file_load(f, "ids", TENSOR_I64, ids, 4), BASE_OK);
    for (int i = 0; i < 4; i++) assert_int_equal(ids[i], (int64_t)i * 1000003);
    const st_tensor *e = st_find(f, "empty");
    assert_non_null(e);
    assert_int_equal(st_numel(e), 0);
    st_close(f);
    free(p);
}

/* ---- directories -------------------------------------------------------- */

static char *put(const char *dir, const char *name, const char *t1, const char *t2, const void *d,
                 tensor_dtype dt, int64_t n) {
    char *p = base_path_join(dir, name);
    st_writer *w = st_writer_new();
    if (t1) st_writer_add(w, t1, dt, 1, &n, d);
    if (t2) st_writer_add(w, t2, dt, 1, &n, d);
    assert_int_equal(st_writer_write(w, p), BASE_OK);
    st_writer_free(w);
    return p;
}

static void put_index(const char *dir, const char *json) {
    char *p = base_path_join(dir, "model.safetensors.index.json");
    test_write_file(p, json, strlen(json));
    free(p);
}

static void dir_fails(const char *dir, const char *what1, const char *what2) {
    st_dir *d = NULL;
    base_status s = st_dir_open(dir, &d);
    if (!s || !strstr(base_err_msg(), what1) || !strstr(base_err_msg(), what2))
        fprintf(stderr, "status %d, message: %s\n", s, base_err_msg());
    assert_int_not_equal(s, BASE_OK);
    assert_null(d);
    has(base_err_msg(), what1);
    has(base_err_msg(), what2);
}

static void test_dir_single_and_glob(void **state) {
    (void)state;
    char *fx = test_shared_path("fixtures/hf-tiny-v3-a");
    st_dir *d;
    if (st_dir_open(fx, &d)) fail_msg("%s", base_err_msg());
    assert_int_equal(st_dir_nfiles(d), 1);
    assert_int_equal(st_dir_count(d), 91);
    assert_null(st_dir_index_path(d));
    for (int i = 1; i < st_dir_count(d); i++)
        assert_true(strcmp(st_dir_at(d, i - 1)->name, st_dir_at(d, i)->name) < 0);
    assert_int_equal(st_dir_total_bytes(d), 273088 * 4);
    const st_tensor *t = st_dir_find(d, "model.norm.weight");
    assert_non_null(t);
    has(st_dir_file_of(d, t), "model.safetensors");
    float v[64];
    assert_int_equal(st_dir_load(d, "model.norm.weight", TENSOR_F32, v, 64), BASE_OK);
    assert_memory_equal(v, t->data, sizeof v);
    assert_int_equal(st_dir_load(d, "model.nope", TENSOR_F32, v, 64), BASE_ERR_INVALID);
    has(base_err_msg(), "model.safetensors: no tensor 'model.nope'");
    st_dir_close(d);
    free(fx);

    char *dir = test_tmpdir();
    dir_fails(dir, dir, "no model.safetensors.index.json, model.safetensors or *.safetensors");
    float x[4] = {1, 2, 3, 4};
    free(put(dir, "b.safetensors", "t2", "t3", x, TENSOR_F32, 4));
    free(put(dir, "a.safetensors", "t1", NULL, x, TENSOR_F32, 4));
    assert_int_equal(st_dir_open(dir, &d), BASE_OK);
    assert_int_equal(st_dir_nfiles(d), 2);
    has(st_path(st_dir_file(d, 0)), "a.safetensors");
    has(st_dir_file_of(d, st_dir_find(d, "t3")), "b.safetensors");
    assert_int_equal(st_dir_count(d), 3);
    st_dir_close(d);
    free(put(dir, "c.safetensors", "t1", NULL, x, TENSOR_F32, 4));
    dir_fails(dir, "tensor 't1' is in both", "a.safetensors and");
    char *nd = base_path_join(dir, "nope");
    dir_fails(nd, nd, "No such file");
    free(nd);
    test_rmdir(dir);
    free(dir);
}

static void test_dir_sharded(void **state) {
    (void)state;
    char *dir = test_tmpdir();
    /* an FP8 weight in shard 1 with its scale in shard 2 */
    enum { R = 130, C = 5 };
    uint8_t q[R * C];
    for (int i = 0; i < R * C; i++) q[i] = (uint8_t)(0x30 + i % 16);
    float sc[2] = {2.0f, -1.0f};
    int64_t qs[2] = {R, C}, ss[2] = {2, 1}, n3 = 3;
    float bias[3] = {1, 2, 3};
    char *p1 = base_path_join(dir, "model-00001-of-00002.safetensors");
    char *p2 = base_path_join(dir, "model-00002-of-00002.safetensors");
    st_writer *w = st_writer_new();
    st_writer_add(w, "l.weight", TENSOR_F8_E4M3, 2, qs, q);
    st_writer_add(w, "bias", TENSOR_F32, 1, &n3, bias);
    assert_int_equal(st_writer_write(w, p1), BASE_OK);
    st_writer_free(w);
    w = st_writer_new();
    st_writer_add(w, "l.weight_scale_inv", TENSOR_F32, 2, ss, sc);
    assert_int_equal(st_writer_write(w, p2), BASE_OK);
    st_writer_free(w);
    /* a stray file the index does not mention is not opened */
    float x[4] = {0};
    free(put(dir, "stray.safetensors", "bias", NULL, x, TENSOR_F32, 4));
    put_index(dir, "{\"metadata\":{\"total_size\":663},\"weight_map\":{"
                   "\"l.weight\":\"model-00001-of-00002.safetensors\","
                   "\"bias\":\"model-00001-of-00002.safetensors\","
                   "\"l.weight_scale_inv\":\"model-00002-of-00002.safetensors\"}}");
    st_dir *d;
    if (st_dir_open(dir, &d)) fail_msg("%s", base_err_msg());
    assert_int_equal(st_dir_nfiles(d), 2);
    assert_int_equal(st_dir_count(d), 3);
    has(st_dir_index_path(d), "model.safetensors.index.json");
    assert_int_equal(st_dir_total_bytes(d), R * C + 12 + 8);
    assert_int_equal(st_dir_find(d, "l.weight_scale_inv")->shard, 1);
    has(st_dir_file_of(d, st_dir_find(d, "bias")), "model-00001-of-00002");
    float out[R * C];
    assert_int_equal(st_dir_load(d, "l.weight", TENSOR_F32, out, R * C), BASE_OK);
    for (int i = 0; i < R * C; i++)
        assert_true(out[i] == tensor_f8e4m3_to_f32(q[i]) * (i / C < 128 ? 2.0f : -1.0f));
    assert_int_equal(st_dir_load(d, "zz", TENSOR_F32, out, 1), BASE_ERR_INVALID);
    has(base_err_msg(), "model.safetensors.index.json: no tensor 'zz'");
    st_dir_close(d);

    /* every disagreement between the index and the shards */
    put_index(dir, "{\"weight_map\":{\"l.weight\":\"model-00001-of-00002.safetensors\","
                   "\"bias\":\"model-00001-of-00002.safetensors\","
                   "\"l.weight_scale_inv\":\"model-00001-of-00002.safetensors\"}}");
    dir_fails(dir, "model.safetensors.index.json: tensor 'l.weight_scale_inv' is mapped to "
                   "model-00001-of-00002.safetensors, which does not contain it", "");
    put_index(dir, "{\"weight_map\":{\"l.weight\":\"model-00001-of-00002.safetensors\","
                   "\"l.weight_scale_inv\":\"model-00002-of-00002.safetensors\"}}");
    dir_fails(dir, "model-00001-of-00002.safetensors: tensor 'bias' is not listed in", "index.json");
    put_index(dir, "{\"weight_map\":{\"l.weight\":\"model-00001-of-00002.safetensors\","
                   "\"bias\":\"model-00001-of-00002.safetensors\",\"ghost\":\"model-00003-of-00003.safetensors\","
                   "\"l.weight_scale_inv\":\"model-00002-of-00002.safetensors\"}}");
    dir_fails(dir, "model-00003-of-00003.safetensors", "No such file");
    put_index(dir, "{\"weight_map\":{\"l.weight\":\"model-00001-of-00002.safetensors\","
                   "\"l.weight\":\"model-00001-of-00002.safetensors\","
                   "\"bias\":\"model-00001-of-00002.safetensors\","
                   "\"l.weight_scale_inv\":\"model-00002-of-00002.safetensors\"}}");
    dir_fails(dir, "tensor 'l.weight' is listed twice in weight_map", "index.json");
    put_index(dir, "{\"weight_map\":{\"bias\":\"../x.safetensors\"}}");
    dir_fails(dir, "weight_map['bias'] = '../x.safetensors' is not a file inside the directory", "");
    put_index(dir, "{\"weight_map\":{\"bias\":3}}");
    dir_fails(dir, "index.json: weight_map['bias'] is not a file name", "");
    put_index(dir, "{\"weight_map\":{}}");
    dir_fails(dir, "index.json: weight_map is empty", "");
    put_index(dir, "{\"metadata\":{}}");
    dir_fails(dir, "index.json: no \"weight_map\" object", "");
    put_index(dir, "{\"weight_map\":{\"bias\":");
    dir_fails(dir, "model.safetensors.index.json:1:", "malformed JSON");
    /* the same tensor in two shards */
    w = st_writer_new();
    st_writer_add(w, "l.weight_scale_inv", TENSOR_F32, 2, ss, sc);
    st_writer_add(w, "bias", TENSOR_F32, 1, &n3, bias);
    assert_int_equal(st_writer_write(w, p2), BASE_OK);
    st_writer_free(w);
    put_index(dir, "{\"weight_map\":{\"l.weight\":\"model-00001-of-00002.safetensors\","
                   "\"bias\":\"model-00001-of-00002.safetensors\","
                   "\"l.weight_scale_inv\":\"model-00002-of-00002.safetensors\"}}");
    dir_fails(dir, "tensor 'bias' is in both", "model-00001-of-00002.safetensors and");
    /* a corrupt shard names the shard */
    assert_int_equal(truncate(p2, 20), 0);
    dir_fails(dir, "model-00002-of-00002.safetensors", "runs past the end");
    free(p1);
    free(p2);
    test_rmdir(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_basic),
        cmocka_unit_test(test_reject_framing),
        cmocka_unit_test(test_reject_json),
        cmocka_unit_test(test_reject_entries),
        cmocka_unit_test(test_reject_layout),
        cmocka_unit_test(test_open_files),
        cmocka_unit_test(test_fixture),
        cmocka_unit_test(test_load_convert),
        cmocka_unit_test(test_fp8),
        cmocka_unit_test(test_write_roundtrip),
        cmocka_unit_test(test_python_written),
        cmocka_unit_test(test_dir_single_and_glob),
        cmocka_unit_test(test_dir_sharded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
