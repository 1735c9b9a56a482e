/* The committed tiny-demo data files are exactly what data/datagen.c makes
 * with the commands of data/tiny/README.md. */
#include "common/test_common.h"

#include <stdlib.h>
#include <string.h>

#include "base/base.h"

static void check(const char *args, const char *committed) {
    const char *exe = getenv("DATAGEN_EXE");
    assert_non_null(exe);
    char *dir = test_tmpdir(), *out = base_path_join(dir, "out.jsonl"), *want = test_src_path(committed);
    char *src = test_src_path("data/tiny");
    base_buf cmd = {0};
    base_buf_printf(&cmd, "cd '%s' && '%s' %s --out '%s'", src, exe, args, out);
    assert_int_equal(system(cmd.data), 0);
    char *a, *b;
    size_t na, nb;
    if (base_read_file(out, &a, &na) || base_read_file(want, &b, &nb)) fail_msg("%s", base_err_msg());
    if (na != nb || memcmp(a, b, na)) fail_msg("%s differs from: datagen %s", committed, args);
    free(a), free(b);
    base_buf_free(&cmd);
    test_rmdir(dir);
    free(dir), free(out), free(want), free(src);
}

static void test_tiny_data(void **state) {
    (void)state;
    check("--n 20000 --ops +- --seed 1 --noise 0.7", "data/tiny/pretrain.jsonl");
    check("--n 2000 --ops +- --seed 3", "data/tiny/train.jsonl");
    check("--n 200 --ops +- --seed 2 --exclude pretrain.jsonl --exclude train.jsonl", "data/tiny/test.jsonl");
}

static void test_tasks(void **state) {
    (void)state;
    /* every arith answer is the value of its prompt; noise only moves the boxed result */
    const char *exe = getenv("DATAGEN_EXE");
    char *dir = test_tmpdir(), *out = base_path_join(dir, "o.jsonl");
    base_buf cmd = {0};
    base_buf_printf(&cmd, "'%s' --n 300 --seed 9 --noise 0.5 --out '%s'", exe, out);
    assert_int_equal(system(cmd.data), 0);
    base_jsonl *r;
    assert_int_equal(base_jsonl_open(out, &r), BASE_OK);
    cJSON *v;
    int n = 0, noisy = 0;
    while (base_jsonl_next(r, &v) == BASE_OK) {
        long a, b, ans = atol(base_json_str(v, "answer", ""));
        char op;
        assert_int_equal(sscanf(base_json_str(v, "prompt", ""), "What is %ld %c %ld?", &a, &op, &b), 3);
        assert_int_equal(ans, op == '+' ? a + b : op == '-' ? a - b : a * b);
        const char *c = strstr(base_json_str(v, "completion", ""), "\\boxed{");
        assert_non_null(c);
        long shown = atol(c + 7);
        assert_true(shown == ans || shown == ans + 1);
        noisy += shown != ans;
        n++;
        cJSON_Delete(v);
    }
    base_jsonl_close(r);
    assert_int_equal(n, 300);
    assert_true(noisy > 100 && noisy < 200);
    base_buf_printf(&cmd, " --ops x");
    base_buf_reset(&cmd);
    base_buf_printf(&cmd, "'%s' --ops x --n 1 >/dev/null 2>&1", exe);
    assert_int_not_equal(system(cmd.data), 0);
    base_buf_free(&cmd);
    test_rmdir(dir);
    free(dir), free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_tiny_data), cmocka_unit_test(test_tasks)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
