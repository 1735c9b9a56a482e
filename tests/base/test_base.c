/* Tests of src/base: errors, arena, buffers, files, JSON/JSONL, Philox, pool. */
#include <math.h>
#include "common/test_common.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

static void test_err_messages(void **state) {
    (void)state;
    assert_int_equal(base_err_set(BASE_ERR_PARSE, "x.json:%d: bad", 3), BASE_ERR_PARSE);
    assert_string_equal(base_err_msg(), "x.json:3: bad");
    base_err_wrap(BASE_ERR_PARSE, "loading %s", "model");
    assert_string_equal(base_err_msg(), "loading model: x.json:3: bad");
    assert_string_equal(base_status_str(BASE_ERR_IO), "I/O error");
}

static void test_arena(void **state) {
    (void)state;
    base_arena a;
    base_arena_init(&a, 1000);
    char *p = base_arena_alloc(&a, 10, 0);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 64, 0);
    char *q = base_arena_alloc(&a, 100, 16);
    assert_true(q >= p + 10);
    assert_int_equal((uintptr_t)q % 16, 0);
    assert_int_equal(q[99], 0); /* zeroed */
    assert_null(base_arena_alloc(&a, 2000, 0)); /* too big: NULL, arena unchanged */
    size_t used = a.used;
    assert_null(base_arena_alloc(&a, 1000 - used + 1, 1));
    assert_non_null(base_arena_alloc(&a, 1000 - used, 1)); /* exactly fills */
    base_arena_reset(&a);
    assert_int_equal(a.used, 0);
    base_arena_free(&a);
}

static void test_buf(void **state) {
    (void)state;
    base_buf b = {0};
    base_buf_puts(&b, "abc");
    base_buf_printf(&b, "-%d-", 42);
    for (int i = 0; i < 1000; i++) base_buf_puts(&b, "x");
    assert_int_equal(b.len, 3 + 4 + 1000);
    assert_memory_equal(b.data, "abc-42-x", 8);
    assert_int_equal(b.data[b.len], 0);
    base_buf_free(&b);
}

static void test_files(void **state) {
    (void)state;
    char *dir = test_tmpdir();
    char *sub = base_path_join(dir, "a/b/c");
    assert_int_equal(base_mkdir_p(sub), BASE_OK);
    char *f = base_path_join(sub, "x.txt");
    assert_int_equal(base_write_file_atomic(f, "hello", 5), BASE_OK);
    char *txt;
    size_t n;
    assert_int_equal(base_read_file(f, &txt, &n), BASE_OK);
    assert_int_equal(n, 5);
    assert_string_equal(txt, "hello");
    free(txt);
    /* overwrite atomically */
    assert_int_equal(base_write_file_atomic(f, "bye", 3), BASE_OK);
    assert_int_equal(base_read_file(f, &txt, &n), BASE_OK);
    assert_string_equal(txt, "bye");
    free(txt);
    char *missing = base_path_join(dir, "nope");
    assert_int_equal(base_read_file(missing, &txt, &n), BASE_ERR_IO);
    assert_non_null(strstr(base_err_msg(), "nope"));
    assert_int_equal(base_read_file(dir, &txt, &n), BASE_ERR_IO); /* a directory */
    test_rmdir(dir);
    free(missing), free(f), free(sub), free(dir);
}

static void test_json(void **state) {
    (void)state;
    cJSON *j;
    const char *good = "{\"a\": 1.5, \"b\": true, \"s\": \"x\", \"n\": null}";
    assert_int_equal(base_json_parse(good, strlen(good), "t.json", &j), BASE_OK);
    int found;
    assert_true(base_json_num(j, "a", 0, &found) == 1.5 && found);
    assert_int_equal(base_json_int(j, "zz", 7, &found), 7);
    assert_false(found);
    assert_true(base_json_bool(j, "b", 0, NULL));
    assert_string_equal(base_json_str(j, "s", "d"), "x");
    assert_string_equal(base_json_str(j, "n", "d"), "d");
    cJSON_Delete(j);
    const char *bad = "{\n  \"a\": 1,\n  \"b\": ]\n}";
    assert_int_equal(base_json_parse(bad, strlen(bad), "t.json", &j), BASE_ERR_PARSE);
    assert_non_null(strstr(base_err_msg(), "t.json:3:"));
}

/* Integers: only finite, integral, in-range numbers convert (a cast of
 * 1e30 or 1e999 to int64 is undefined behaviour); the range getter names
 * the key and the value. */
static void test_json_int(void **state) {
    (void)state;
    cJSON *j;
    const char *t = "{\"a\": -3, \"big\": 1e30, \"inf\": 1e999, \"frac\": 2.5, \"max\": "
                    "9223372036854775807, \"min\": -9223372036854775808, \"s\": \"7\", \"n\": null}";
    assert_int_equal(base_json_parse(t, strlen(t), "t.json", &j), BASE_OK);
    int found;
    assert_int_equal(base_json_int(j, "a", 0, &found), -3);
    assert_true(found);
    const char *bad[] = {"big", "inf", "frac", "max", "s", "n", "absent"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        found = -1;
        assert_int_equal(base_json_int(j, bad[i], 42, &found), 42);
        assert_int_equal(found, 0);
    }
    assert_int_equal(base_json_int(j, "min", 0, &found), INT64_MIN); /* -2^63 is exact */
    assert_true(found);
    int64_t v;
    assert_int_equal(base_json_int_range(j, "a", -5, 5, 0, "t.json", &v), BASE_OK);
    assert_int_equal(v, -3);
    assert_int_equal(base_json_int_range(j, "absent", 0, 5, 4, "t.json", &v), BASE_OK);
    assert_int_equal(v, 4);
    assert_int_equal(base_json_int_range(j, "n", 0, 5, 4, "t.json", &v), BASE_OK);
    assert_int_equal(v, 4);
    assert_int_equal(base_json_int_range(j, "a", 0, 5, 1, "t.json", &v), BASE_ERR_INVALID);
    assert_int_equal(v, 1);
    assert_string_equal(base_err_msg(), "t.json: a must be an integer in [0, 5] (got -3)");
    assert_int_equal(base_json_int_range(j, "big", 0, INT64_MAX, 1, "t.json", &v), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "t.json: big must be an integer in [0, "));
    assert_non_null(strstr(base_err_msg(), "(got 1e+30)"));
    assert_int_equal(base_json_int_range(j, "s", 0, 9, 1, "t.json", &v), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "(got a string)"));
    cJSON_Delete(j);
}

/* U+0000 cannot live in a cJSON string: text holding one is refused with
 * its position, never cut short. An escaped backslash before "u0000" is
 * ordinary text. Also: text after the value is an error. */
static void test_json_nul(void **state) {
    (void)state;
    cJSON *j;
    struct {
        const char *text;
        size_t len;
        const char *where; /* NULL: accepted */
    } cases[] = {
        {"{\"text\": \"a\\u0000b\"}", 0, "t.json:1:12: U+0000 (NUL) in a string: not supported"},
        {"{\n \"k\\u0000\": 1}", 0, "t.json:2:4: U+0000 (NUL) in a string: not supported"},
        {"[\"\\\\\\u0000\"]", 0, "t.json:1:5: U+0000 (NUL)"},
        {"{\"text\": \"a\0b\"}", 15, "t.json:1:12: U+0000 (NUL)"},
        {"{\"a\": 1} x", 0, "t.json:1:10: extra text after the JSON value"},
        {"{\"a\": 1}\0", 9, "t.json:1:9: U+0000 (NUL)"},
        {"{\"text\": \"a\\\\u0000b\", \"u\": \"\\u0001\\\"\\u0000\"}", 0, "t.json:1:37: U+0000"},
        {"{\"text\": \"a\\\\u0000b\"} \n\t", 0, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].text);
        base_status st = base_json_parse(cases[i].text, len, "t.json", &j);
        if (!cases[i].where) {
            assert_int_equal(st, BASE_OK);
            assert_string_equal(base_json_str(j, "text", ""), "a\\u0000b");
            cJSON_Delete(j);
            continue;
        }
        if (st != BASE_ERR_PARSE || !strstr(base_err_msg(), cases[i].where))
            fail_msg("case %zu: status %d, message \"%s\"", i, st, base_err_msg());
        assert_null(j);
    }
    /* the same through the JSONL reader: the bad line is reported, the
     * others are read */
    const char *lines = "{\"text\": \"a\"}\n{\"text\": \"a\\u0000b\"}\n{\"text\": \"a\\\\u0000b\"}\n"
                        "{\"text\": \"c\0\"}\n";
    base_jsonl *r;
    assert_int_equal(base_jsonl_open_mem(lines, strlen(lines) + 4, "m.jsonl", &r), BASE_OK);
    assert_int_equal(base_jsonl_next(r, &j), BASE_OK);
    cJSON_Delete(j);
    assert_int_equal(base_jsonl_next(r, &j), BASE_ERR_PARSE);
    assert_string_equal(base_err_msg(), "m.jsonl:2:12: U+0000 (NUL) in a string: not supported");
    assert_int_equal(base_jsonl_next(r, &j), BASE_OK);
    assert_string_equal(base_json_str(j, "text", ""), "a\\u0000b");
    cJSON_Delete(j);
    assert_int_equal(base_jsonl_next(r, &j), BASE_ERR_PARSE);
    assert_string_equal(base_err_msg(), "m.jsonl:4:12: NUL byte in line");
    assert_int_equal(base_jsonl_next(r, &j), BASE_ERR_EOF);
    assert_int_equal(base_jsonl_line(r), 4);
    base_jsonl_close(r);
}

static void test_jsonl(void **state) {
    (void)state;
    char *dir = test_tmpdir();
    char *f = base_path_join(dir, "d.jsonl");
    const char *text = "{\"x\": 1}\n\n   \n{\"x\": 2}\r\n{\"x\": \n{\"x\": 4} junk\n[1,2]\n{\"x\": 5}";
    test_write_file(f, text, strlen(text));
    base_jsonl *r;
    assert_int_equal(base_jsonl_open(f, &r), BASE_OK);
    cJSON *v;
    int good = 0, bad = 0;
    long bad_lines[4];
    base_status s;
    while ((s = base_jsonl_next(r, &v)) != BASE_ERR_EOF) {
        if (s == BASE_OK) {
            good++;
            cJSON_Delete(v);
        } else {
            assert_int_equal(s, BASE_ERR_PARSE);
            assert_non_null(strstr(base_err_msg(), "d.jsonl:"));
            bad_lines[bad++] = base_jsonl_line(r);
        }
    }
    assert_int_equal(good, 4); /* lines 1, 4, 7, 8 */
    assert_int_equal(bad, 2);
    assert_int_equal(bad_lines[0], 5);
    assert_int_equal(bad_lines[1], 6);
    base_jsonl_close(r);
    char *missing = base_path_join(dir, "none.jsonl");
    assert_int_equal(base_jsonl_open(missing, &r), BASE_ERR_IO);
    test_rmdir(dir);
    free(missing), free(f), free(dir);
}

/* Known-answer vectors from Random123's kat_vectors (philox4x32, 10 rounds). */
static void test_philox_kat(void **state) {
    (void)state;
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
         0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        base_philox4x32(kat[i], kat[i] + 4, out);
        for (int j = 0; j < 4; j++) assert_int_equal(out[j], kat[i][6 + j]);
    }
}

static void test_rng_streams(void **state) {
    (void)state;
    base_rng a, b;
    base_rng_init(&a, 1234, 1, 2, 3);
    base_rng_init(&b, 1234, 1, 2, 3);
    /* pure function of (seed, counters, index): order does not matter */
    float x5 = base_rng_uniform(&a, 5);
    for (int i = 0; i < 5; i++) (void)base_rng_uniform(&b, (uint32_t)i);
    assert_true(base_rng_uniform(&b, 5) == x5);
    base_rng_init(&b, 1234, 1, 2, 4);
    assert_true(base_rng_uniform(&b, 5) != x5);
    /* moments */
    double s = 0, s2 = 0, ns = 0, ns2 = 0;
    int n = 200000;
    for (int i = 0; i < n; i++) {
        double u = base_rng_uniform(&a, (uint32_t)i);
        assert_true(u >= 0 && u < 1);
        s += u, s2 += u * u;
        double z = base_rng_normal(&a, (uint32_t)i);
        ns += z, ns2 += z * z;
    }
    assert_true(fabs(s / n - 0.5) < 0.005);
    assert_true(fabs(s2 / n - 1.0 / 3) < 0.005);
    assert_true(fabs(ns / n) < 0.01);
    assert_true(fabs(ns2 / n - 1) < 0.02);
}

typedef struct {
    atomic_int hits[1000];
} pool_ctx;

static void pool_fn(void *ctx, int64_t i, int worker) {
    pool_ctx *c = ctx;
    (void)worker;
    atomic_fetch_add(&c->hits[i], 1);
}

static void test_pool(void **state) {
    (void)state;
    base_pool *p = base_pool_create(4);
    assert_int_equal(base_pool_size(p), 4);
    pool_ctx *c = calloc(1, sizeof *c);
    for (int round = 0; round < 50; round++) base_pool_for(p, 1000, pool_fn, c);
    for (int i = 0; i < 1000; i++) assert_int_equal(atomic_load(&c->hits[i]), 50);
    base_pool_for(p, 0, pool_fn, c);
    free(c);
    base_pool_destroy(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_messages), cmocka_unit_test(test_arena),
        cmocka_unit_test(test_buf),          cmocka_unit_test(test_files),
        cmocka_unit_test(test_json),         cmocka_unit_test(test_json_int), cmocka_unit_test(test_json_nul),
        cmocka_unit_test(test_jsonl),
        cmocka_unit_test(test_philox_kat),   cmocka_unit_test(test_rng_streams),
        cmocka_unit_test(test_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
