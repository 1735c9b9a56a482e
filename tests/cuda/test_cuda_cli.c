/*
 * --device on the model subcommands (src/cli/cli_device.c):
 *   - an unknown name is a usage error (status 2) naming the choices;
 *   - --device cpu runs;
 *   - --device cuda without a usable GPU fails with status 1 and says why;
 *     with one, `grpo forward`, `grpo grad` and `grpo generate --greedy`
 *     run on the GPU and match the hf-tiny-v3-a references (logits and
 *     token logprobs within 1e-4, gradients within 1e-3 relative L2 with
 *     exact zeros, the 24 greedy tokens identical);
 *   - $GRPO_DEVICE sets the default;
 *   - --precision: an unknown name is a usage error (2); bf16 on the CPU
 *     backend (the f32 reference) fails with status 1 naming --device cuda;
 *     with a GPU, `grpo forward --precision bf16` gives token logprobs
 *     within the bf16 budget (2^-3, tests/cuda/test_cuda_fixture.c).
 */
#include "common/test_common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/st.h"
#include "tensor/ops.h"

static char *fx, *tmp;

static int setup(void **s) {
    (void)s;
    fx = test_shared_path("fixtures/hf-tiny-v3-a");
    tmp = test_tmpdir();
    return 0;
}
static int teardown(void **s) {
    (void)s;
    test_rmdir(tmp);
    free(tmp);
    free(fx);
    return 0;
}

static int run(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run(char **out, const char *fmt, ...) {
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    return test_run_grpo(args, out);
}

static st_file *open_ref(const char *name) {
    char *p = base_path_join(fx, name);
    st_file *f = NULL;
    assert_int_equal(st_open(p, &f), BASE_OK);
    free(p);
    return f;
}

/* The reference ids `name` as a JSONL line {"ids": [...]} in file `path`. */
static void write_ids(st_file *ref, const char *name, const char *path) {
    const st_tensor *t = st_find(ref, name);
    assert_non_null(t);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"ids\": [");
    for (int64_t i = 0; i < t->shape[0]; i++)
        fprintf(f, "%s%lld", i ? "," : "", (long long)((const int64_t *)t->data)[i]);
    fprintf(f, "]}\n");
    fclose(f);
}

static void test_bad_name(void **s) {
    (void)s;
    char *o = NULL;
    int rc = run(&o, "forward --model '%s' --in x --out y --device gpu", fx);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(o, "--device gpu: expected cpu, cuda or auto"));
    free(o);
    o = NULL;
    assert_int_equal(run(&o, "grad --model '%s' --in x --out y --device tpu", fx), 2);
    free(o);
    o = NULL;
    assert_int_equal(run(&o, "generate --model '%s' --in x --device 0", fx), 2);
    free(o);
}

static void test_cpu_and_default(void **s) {
    (void)s;
    st_file *ref = open_ref("reference.safetensors");
    char *in = base_path_join(tmp, "ids.jsonl"), *outp = base_path_join(tmp, "lg.safetensors");
    write_ids(ref, "input_ids.1", in);
    char *o = NULL;
    int rc = run(&o, "forward --model '%s' --in '%s' --out '%s' --device cpu", fx, in, outp);
    if (rc) fail_msg("grpo forward --device cpu: %s", o);
    free(o);
    o = NULL;
    /* $GRPO_DEVICE is the default: an unknown one is reported as such */
    rc = run(&o, "forward --model '%s' --in '%s' --out '%s'", fx, in, outp);
    assert_int_equal(rc, 0);
    free(o);
    o = NULL;
    setenv("GRPO_DEVICE", "abacus", 1);
    rc = run(&o, "forward --model '%s' --in '%s' --out '%s'", fx, in, outp);
    unsetenv("GRPO_DEVICE");
    assert_int_equal(rc, 2);
    assert_non_null(strstr(o, "--device abacus"));
    free(o), free(in), free(outp);
    st_close(ref);
}

static void test_precision(void **s) {
    (void)s;
    st_file *ref = open_ref("reference.safetensors");
    char *in = base_path_join(tmp, "idsp.jsonl"), *outp = base_path_join(tmp, "p.safetensors");
    write_ids(ref, "input_ids.0", in);
    char *o = NULL;
    assert_int_equal(run(&o, "forward --model '%s' --in '%s' --out '%s' --device cpu --precision fp4", fx, in, outp), 2);
    assert_non_null(strstr(o, "--precision fp4: expected f32, bf16 or fp8"));
    free(o);
    /* training needs master weights: grad refuses bf16 on the cpu and fp8
     * anywhere; forward and generate hold frozen bf16 / fp8 weights on the
     * cpu (docs/model.md, "Frozen models") */
    const char *bad[2][2] = {{"bf16", "bf16 training needs --device cuda"}, {"fp8", "fp8: for frozen models only"}};
    for (int i = 0; i < 2; i++) {
        o = NULL;
        assert_int_equal(run(&o, "grad --model '%s' --in '%s' --out '%s' --device cpu --precision %s", fx, in, outp, bad[i][0]), 1);
        if (!strstr(o, bad[i][1])) fail_msg("grpo grad --precision %s on cpu: %s", bad[i][0], o);
        free(o);
    }
    const char *cmds[2] = {"forward", "generate"}, *precs[2] = {"bf16", "fp8"};
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 2; k++) {
            o = NULL;
            int rc = i == 0 ? run(&o, "forward --model '%s' --in '%s' --out '%s' --device cpu --precision %s", fx, in, outp, precs[k])
                            : run(&o, "generate --model '%s' --in '%s' --greedy --device cpu --precision %s", fx, in, precs[k]);
            if (rc) fail_msg("grpo %s --precision %s on cpu: %s", cmds[i], precs[k], o);
            free(o);
        }
    o = NULL;
    assert_int_equal(run(&o, "forward --model '%s' --in '%s' --out '%s' --device cpu --precision f32", fx, in, outp), 0);
    free(o);
    if (ops_cuda()) {
        o = NULL;
        int rc = run(&o, "forward --model '%s' --in '%s' --out '%s' --device cuda --precision bf16", fx, in, outp);
        if (rc) fail_msg("grpo forward --device cuda --precision bf16: %s", o);
        st_file *got = NULL;
        assert_int_equal(st_open(outp, &got), BASE_OK);
        const st_tensor *g = st_find(got, "token_logprobs.0"), *r = st_find(ref, "token_logprobs.0");
        assert_non_null(g);
        double err = test_max_abs_diff(g->data, r->data, (int64_t)(r->nbytes / 4));
        printf("cuda cli bf16: token_logprobs.0 max |diff| %.3g\n", err);
        assert_true(err < 0.125);
        st_close(got);
        free(o);
    }
    free(in), free(outp);
    st_close(ref);
}

static void test_cuda(void **s) {
    (void)s;
    st_file *ref = open_ref("reference.safetensors"), *gref = open_ref("grads.safetensors");
    char *in = base_path_join(tmp, "ids0.jsonl"), *outp = base_path_join(tmp, "out.safetensors");
    write_ids(ref, "input_ids.0", in);
    char *o = NULL;
    int rc = run(&o, "forward --model '%s' --in '%s' --out '%s' --device cuda", fx, in, outp);
    if (!ops_cuda()) {
        /* no GPU here: the command says why and fails */
        assert_int_equal(rc, 1);
        assert_true(strstr(o, "--device cuda:") != NULL);
        printf("no GPU: grpo forward --device cuda fails as it should (%s)\n", base_err_msg());
        free(o), free(in), free(outp);
        st_close(ref), st_close(gref);
        return;
    }
    if (rc) fail_msg("grpo forward --device cuda: %s", o);
    st_file *got = NULL;
    assert_int_equal(st_open(outp, &got), BASE_OK);
    const char *names[] = {"logits.0", "token_logprobs.0"};
    for (int i = 0; i < 2; i++) {
        const st_tensor *g = st_find(got, names[i]), *r = st_find(ref, names[i]);
        assert_non_null(g);
        assert_int_equal(g->nbytes, r->nbytes);
        double err = test_max_abs_diff(g->data, r->data, (int64_t)(r->nbytes / 4));
        printf("cuda cli: %s max |diff| %.3g\n", names[i], err);
        assert_true(err < 1e-4);
    }
    st_close(got);
    free(o);
    o = NULL;
    rc = run(&o, "grad --model '%s' --in '%s' --out '%s' --device cuda", fx, in, outp);
    if (rc) fail_msg("grpo grad --device cuda: %s", o);
    assert_int_equal(st_open(outp, &got), BASE_OK);
    assert_int_equal(st_count(got), st_count(gref));
    double worst = 0;
    for (int i = 0; i < st_count(gref); i++) {
        const st_tensor *r = st_at(gref, i), *g = st_find(got, r->name);
        if (!g) fail_msg("no gradient for %s", r->name);
        int64_t n = (int64_t)(r->nbytes / 4);
        double rel = test_rel_l2(g->data, r->data, n);
        for (int64_t k = 0; k < n; k++)
            if (((const float *)r->data)[k] == 0.0f && ((const float *)g->data)[k] != 0.0f)
                fail_msg("%s[%lld] is not zero", r->name, (long long)k);
        if (rel > 1e-3) fail_msg("%s: relative L2 %.3g", r->name, rel);
        worst = rel > worst ? rel : worst;
    }
    printf("cuda cli: %d gradients, worst relative L2 %.3g\n", st_count(gref), worst);
    st_close(got);
    free(o);
    o = NULL;
    /* greedy generation: the reference's 24 tokens after its 12-token prompt */
    const st_tensor *pr = st_find(ref, "greedy.prompt"), *want = st_find(ref, "greedy.output");
    char *pin = base_path_join(tmp, "prompt.jsonl"), *gout = base_path_join(tmp, "gen.jsonl");
    write_ids(ref, "greedy.prompt", pin);
    rc = run(&o, "generate --model '%s' --in '%s' --out '%s' --greedy --max-new-tokens %lld --device cuda", fx, pin,
             gout, (long long)want->shape[0]);
    if (rc) fail_msg("grpo generate --device cuda: %s", o);
    size_t n = 0;
    char *text = NULL;
    assert_int_equal(base_read_file(gout, &text, &n), BASE_OK);
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(j, "completion_ids");
    assert_int_equal(cJSON_GetArraySize(ids), (int)want->shape[0]);
    for (int64_t i = 0; i < want->shape[0]; i++)
        assert_int_equal((int64_t)cJSON_GetArrayItem(ids, (int)i)->valuedouble, ((const int64_t *)want->data)[i]);
    printf("cuda cli: %lld greedy tokens identical (prompt of %lld)\n", (long long)want->shape[0],
           (long long)pr->shape[0]);
    cJSON_Delete(j);
    free(text), free(pin), free(gout), free(o), free(in), free(outp);
    st_close(ref), st_close(gref);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_name),
        cmocka_unit_test(test_cpu_and_default),
        cmocka_unit_test(test_cuda),
        cmocka_unit_test(test_precision),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
