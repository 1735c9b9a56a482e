/*
 * The model subcommands end to end on shared/fixtures/hf-tiny-v3-a:
 * `grpo forward` logits and token logprobs against the reference, `grpo
 * grad` against grads.safetensors, `grpo generate --greedy` against the 24
 * reference tokens, sampled generation independent of batching and of the
 * other prompts, text prompts through a tokenizer, and usage / input errors.
 */
#include "common/test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/st.h"
#include "tok/tok.h"

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

static char *tp(const char *name) { return base_path_join(tmp, name); }

/* Reference ids as a JSON array string. */
static char *ids_json(st_file *ref, const char *name) {
    const st_tensor *t = st_find(ref, name);
    assert_non_null(t);
    base_buf b = {0};
    base_buf_puts(&b, "[");
    for (int64_t i = 0; i < t->shape[0]; i++) base_buf_printf(&b, "%s%lld", i ? "," : "", (long long)((const int64_t *)t->data)[i]);
    base_buf_puts(&b, "]");
    return b.data;
}

static st_file *open_ref(const char *name) {
    char *p = base_path_join(fx, name);
    st_file *f = NULL;
    assert_int_equal(st_open(p, &f), BASE_OK);
    free(p);
    return f;
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

static void test_forward(void **s) {
    (void)s;
    st_file *ref = open_ref("reference.safetensors");
    char *a = ids_json(ref, "input_ids.0"), *b = ids_json(ref, "input_ids.1");
    char *in = tp("ids.jsonl"), *outp = tp("logits.safetensors");
    FILE *f = fopen(in, "w");
    fprintf(f, "{\"ids\": %s}\n\n{\"ids\": %s, \"other\": 1}\n", a, b);
    fclose(f);
    char *o = NULL;
    int rc = run(&o, "forward --model '%s' --in '%s' --out '%s'", fx, in, outp);
    if (rc) fail_msg("grpo forward: %s", o);
    st_file *got = NULL;
    assert_int_equal(st_open(outp, &got), BASE_OK);
    assert_int_equal(st_count(got), 4);
    const char *names[] = {"logits.0", "logits.1", "token_logprobs.0", "token_logprobs.1"};
    for (int i = 0; i < 4; i++) {
        const st_tensor *g = st_find(got, names[i]), *r = st_find(ref, names[i]);
        assert_non_null(g);
        assert_int_equal(g->ndim, r->ndim);
        for (int d = 0; d < r->ndim; d++) assert_int_equal(g->shape[d], r->shape[d]);
        double err = test_max_abs_diff(g->data, r->data, (int64_t)(r->nbytes / 4));
        printf("%s max |diff| %.3g\n", names[i], err);
        assert_true(err < 1e-4);
    }
    st_close(got);
    st_close(ref);
    free(o), free(a), free(b), free(in), free(outp);
}

static void test_grad(void **s) {
    (void)s;
    st_file *ref = open_ref("reference.safetensors"), *gref = open_ref("grads.safetensors");
    char *a = ids_json(ref, "input_ids.0");
    char *in = tp("ids0.jsonl"), *outp = tp("grads.safetensors");
    FILE *f = fopen(in, "w");
    fprintf(f, "{\"ids\": %s}\n", a);
    fclose(f);
    for (int rc_mode = 0; rc_mode < 2; rc_mode++) {
        char *o = NULL;
        int rc = run(&o, "grad --model '%s' --in '%s' --out '%s'%s", fx, in, outp, rc_mode ? " --recompute" : "");
        if (rc) fail_msg("grpo grad: %s", o);
        double loss = 0;
        assert_int_equal(sscanf(o, "loss %lf", &loss), 1);
        assert_true(fabs(loss - 5.7898278236) < 1e-5);
        st_file *got = NULL;
        assert_int_equal(st_open(outp, &got), BASE_OK);
        assert_int_equal(st_count(got), st_count(gref));
        for (int i = 0; i < st_count(gref); i++) {
            const st_tensor *r = st_at(gref, i), *g = st_find(got, r->name);
            if (!g) fail_msg("no gradient for %s", r->name);
            int64_t n = (int64_t)(r->nbytes / 4);
            double rel = test_rel_l2(g->data, r->data, n);
            for (int64_t k = 0; k < n; k++)
                if (((const float *)r->data)[k] == 0.0f) assert_true(((const float *)g->data)[k] == 0.0f);
            if (rel > 1e-3) fail_msg("%s: relative L2 %.3g", r->name, rel);
        }
        st_close(got);
        free(o);
    }
    st_close(ref);
    st_close(gref);
    free(a), free(in), free(outp);
}

static void test_generate_greedy(void **s) {
    (void)s;
    st_file *ref = open_ref("reference.safetensors");
    char *p = ids_json(ref, "greedy.prompt"), *want = ids_json(ref, "greedy.output");
    char *in = tp("prompt.jsonl");
    FILE *f = fopen(in, "w");
    fprintf(f, "{\"ids\": %s}\n", p);
    fclose(f);
    char *o = NULL;
    int rc = run(&o, "generate --model '%s' --in '%s' --greedy --max-new-tokens 24", fx, in);
    if (rc) fail_msg("grpo generate: %s", o);
    cJSON *j = cJSON_Parse(o);
    assert_non_null(j);
    char *got = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "completion_ids"));
    printf("greedy: %s\n", got);
    assert_string_equal(got, want);
    assert_string_equal(cJSON_GetObjectItem(j, "finish_reason")->valuestring, "length");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "logprobs")), 24);
    cJSON_Delete(j);
    free(got), free(o), free(p), free(want), free(in);
    st_close(ref);
}

/* Lines [from_line, ...) of two generate outputs: identical (same tokens and
 * bit-identical logprobs: every op's per-row numerics are independent of
 * the batch) or all different in their tokens. */
static void same_outputs(const char *a, const char *b, int from_line, int want_equal) {
    char *x = base_xstrdup(a), *y = base_xstrdup(b), *sx, *sy;
    char *lx = strtok_r(x, "\n", &sx), *ly = strtok_r(y, "\n", &sy);
    for (int i = 0; lx && ly; i++, lx = strtok_r(NULL, "\n", &sx), ly = strtok_r(NULL, "\n", &sy)) {
        if (i < from_line) continue;
        if (want_equal) {
            assert_string_equal(lx, ly);
            continue;
        }
        cJSON *jx = cJSON_Parse(lx), *jy = cJSON_Parse(ly);
        assert_non_null(jx);
        assert_non_null(jy);
        char *ix = cJSON_PrintUnformatted(cJSON_GetObjectItem(jx, "completion_ids"));
        char *iy = cJSON_PrintUnformatted(cJSON_GetObjectItem(jy, "completion_ids"));
        assert_string_not_equal(ix, iy);
        free(ix), free(iy);
        cJSON_Delete(jx), cJSON_Delete(jy);
    }
    assert_true(lx == NULL && ly == NULL);
    free(x), free(y);
}

/* Sampled outputs are keyed by (seed, prompt, sample, position): the same
 * tokens whatever --batch, and prompts 1 and 2 keep their samples when
 * prompt 0 changes. */
static void test_generate_sampling(void **s) {
    (void)s;
    char *in = tp("p3.jsonl"), *in2 = tp("p3b.jsonl"), *outf = tp("gen.jsonl");
    FILE *f = fopen(in, "w");
    fprintf(f, "{\"ids\": [0, 5, 9, 13]}\n{\"ids\": [0, 77, 3]}\n{\"ids\": [0, 1, 2, 3, 4, 5, 6, 7]}\n");
    fclose(f);
    f = fopen(in2, "w");
    fprintf(f, "{\"ids\": [0, 6, 9, 13, 20, 21]}\n{\"ids\": [0, 77, 3]}\n{\"ids\": [0, 1, 2, 3, 4, 5, 6, 7]}\n");
    fclose(f);
    const char *opt = "--n 3 --temperature 0.9 --top-p 0.95 --top-k 50 --seed 17 --max-new-tokens 12";
    char *o1 = NULL, *o2 = NULL, *o3 = NULL, *o4 = NULL, *o5 = NULL;
    assert_int_equal(run(&o1, "generate --model '%s' --in '%s' %s --batch 64", fx, in, opt), 0);
    assert_int_equal(run(&o2, "generate --model '%s' --in '%s' %s --batch 1", fx, in, opt), 0);
    assert_int_equal(run(&o3, "generate --model '%s' --in '%s' %s --batch 6 --out '%s'", fx, in, opt, outf), 0);
    assert_int_equal(run(&o4, "generate --model '%s' --in '%s' %s", fx, in2, opt), 0);
    assert_int_equal(run(&o5, "generate --model '%s' --in '%s' %s --seed 18", fx, in, opt), 0);
    same_outputs(o1, o2, 0, 1);
    char *file = NULL;
    size_t n;
    assert_int_equal(base_read_file(outf, &file, &n), BASE_OK);
    same_outputs(o1, file, 0, 1);
    same_outputs(o1, o4, 3, 1);   /* prompts 1 and 2 */
    same_outputs(o1, o5, 0, 0);   /* another seed: other samples */
    int lines = 0;
    for (char *sp, *l = strtok_r(o1, "\n", &sp); l; l = strtok_r(NULL, "\n", &sp), lines++) {
        cJSON *j = cJSON_Parse(l);
        assert_int_equal((int)cJSON_GetObjectItem(j, "index")->valuedouble, lines / 3);
        assert_int_equal((int)cJSON_GetObjectItem(j, "sample")->valuedouble, lines % 3);
        cJSON *ids = cJSON_GetObjectItem(j, "completion_ids");
        int k = cJSON_GetArraySize(ids);
        if (!strcmp(cJSON_GetObjectItem(j, "finish_reason")->valuestring, "stop"))
            assert_int_equal((int)cJSON_GetArrayItem(ids, k - 1)->valuedouble, 1); /* the config's eos */
        else
            assert_int_equal(k, 12);
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "logprobs")), k);
        cJSON_Delete(j);
    }
    assert_int_equal(lines, 9);
    free(o1), free(o2), free(o3), free(o4), free(o5), free(file), free(in), free(in2), free(outf);
}

/* An FP8 checkpoint on the cpu: `--precision fp8` keeps the e4m3 weights
 * (1 byte per parameter) and gives the bytes of the default load, which
 * dequantises them to f32 (the GEMM widens e4m3 x scale while packing: the
 * same f32 values, the same arithmetic): forward's logits and sampled
 * generations with their logprobs. */
static void test_fp8_cli(void **s) {
    (void)s;
    char *fp8 = test_src_path("tests/model/data/tiny-v3-a-fp8"), *in = tp("fp8ids.jsonl"), *pin = tp("fp8p.jsonl");
    char *o32 = tp("fp8_f32.safetensors"), *o8 = tp("fp8_fp8.safetensors");
    FILE *f = fopen(in, "w");
    fprintf(f, "{\"ids\": [0, 5, 9, 13, 200, 31, 7]}\n{\"ids\": [0, 77, 3]}\n");
    fclose(f);
    f = fopen(pin, "w");
    fprintf(f, "{\"ids\": [0, 5, 9, 13]}\n{\"ids\": [0, 77, 3]}\n");
    fclose(f);
    char *o = NULL;
    if (run(&o, "forward --model '%s' --in '%s' --out '%s' --device cpu", fp8, in, o32)) fail_msg("forward: %s", o);
    free(o), o = NULL;
    if (run(&o, "forward --model '%s' --in '%s' --out '%s' --device cpu --precision fp8", fp8, in, o8)) fail_msg("forward fp8: %s", o);
    free(o), o = NULL;
    st_file *a = NULL, *b = NULL;
    assert_int_equal(st_open(o32, &a), BASE_OK);
    assert_int_equal(st_open(o8, &b), BASE_OK);
    assert_int_equal(st_count(a), st_count(b));
    for (int i = 0; i < st_count(a); i++) {
        const st_tensor *x = st_at(a, i), *y = st_find(b, x->name);
        assert_non_null(y);
        assert_int_equal(x->nbytes, y->nbytes);
        assert_memory_equal(x->data, y->data, x->nbytes);
    }
    st_close(a), st_close(b);
    const char *opt = "--n 3 --temperature 0.9 --top-p 0.95 --seed 5 --max-new-tokens 10 --device cpu";
    char *g32 = NULL, *g8 = NULL, *g16 = NULL;
    assert_int_equal(run(&g32, "generate --model '%s' --in '%s' %s", fp8, pin, opt), 0);
    assert_int_equal(run(&g8, "generate --model '%s' --in '%s' %s --precision fp8", fp8, pin, opt), 0);
    assert_string_equal(g32, g8);
    /* bf16 frozen weights on the cpu: a run of its own (other weights: no equality) */
    assert_int_equal(run(&g16, "generate --model '%s' --in '%s' %s --precision bf16", fx, pin, opt), 0);
    assert_non_null(strstr(g16, "\"completion_ids\""));
    printf("fp8 forward bytes and sampled generations identical to the f32 load\n");
    free(g32), free(g8), free(g16), free(fp8), free(in), free(pin), free(o32), free(o8);
}

/* A model directory with a tokenizer: text prompts in, text out, EOS stops. */
static void test_generate_text(void **s) {
    (void)s;
    char *dir = tp("withtok");
    assert_int_equal(base_mkdir_p(dir), BASE_OK);
    const char *files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char *src = base_path_join(fx, files[i]), *dst = base_path_join(dir, files[i]);
        assert_int_equal(symlink(src, dst), 0);
        free(src), free(dst);
    }
    tok_bytelevel_spec spec = tok_bytelevel_default();
    assert_int_equal(tok_write_bytelevel(dir, &spec), BASE_OK);
    char *in = tp("text.jsonl");
    FILE *f = fopen(in, "w");
    fprintf(f, "{\"prompt\": \"What is 2+2?\"}\n{\"ids\": [256, 5]}\n");
    fclose(f);
    char *o = NULL;
    int rc = run(&o, "generate --model '%s' --in '%s' --seed 3 --max-new-tokens 40 --n 2", dir, in);
    if (rc) fail_msg("generate: %s", o);
    int lines = 0, stops = 0;
    for (char *sp, *l = strtok_r(o, "\n", &sp); l; l = strtok_r(NULL, "\n", &sp), lines++) {
        cJSON *j = cJSON_Parse(l);
        assert_non_null(j);
        assert_true(cJSON_IsString(cJSON_GetObjectItem(j, "completion")));
        const char *fr = cJSON_GetObjectItem(j, "finish_reason")->valuestring;
        cJSON *ids = cJSON_GetObjectItem(j, "completion_ids");
        int n = cJSON_GetArraySize(ids);
        if (!strcmp(fr, "stop")) {
            stops++;
            int last = (int)cJSON_GetArrayItem(ids, n - 1)->valuedouble;
            assert_true(last == 1 || last == 257); /* config eos 1 or the tokenizer's <|eos|> */
        } else {
            assert_int_equal(n, 40);
        }
        cJSON_Delete(j);
    }
    assert_int_equal(lines, 4);
    printf("text generation: %d of 4 stopped at EOS\n", stops);
    free(o), free(in), free(dir);
}

static void test_errors(void **s) {
    (void)s;
    char *o = NULL, *in = tp("bad.jsonl"), *outp = tp("x.safetensors");
    assert_int_equal(run(&o, "forward --in x"), 2);
    free(o);
    assert_int_equal(run(&o, "generate --model '%s' --in x --greedy --temperature 1", fx), 2);
    free(o);
    assert_int_equal(run(&o, "generate --model '%s' --in x --top-p 2", fx), 2);
    free(o);
    FILE *f = fopen(in, "w");
    fprintf(f, "{\"ids\": [1, 2]}\n{\"ids\": [1, 320]}\n");
    fclose(f);
    assert_int_equal(run(&o, "forward --model '%s' --in '%s' --out '%s'", fx, in, outp), 1);
    assert_non_null(strstr(o, "bad.jsonl:2: ids[1]: not a token id in [0, 320)"));
    free(o);
    assert_int_equal(run(&o, "grad --model '%s' --in '%s' --out '%s'", fx, in, outp), 1);
    assert_non_null(strstr(o, "bad.jsonl:2"));
    free(o);
    f = fopen(in, "w");
    fprintf(f, "{\"prompt\": \"hello\"}\n");
    fclose(f);
    assert_int_equal(run(&o, "generate --model '%s' --in '%s'", fx, in), 1);
    assert_non_null(strstr(o, "bad.jsonl:1: a text prompt needs the model's tokenizer.json"));
    free(o);
    assert_int_equal(run(&o, "forward --model /nonexistent --in '%s' --out '%s'", in, outp), 1);
    free(o);
    assert_false(base_file_exists(outp));
    free(in), free(outp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward),           cmocka_unit_test(test_grad),
        cmocka_unit_test(test_generate_greedy),   cmocka_unit_test(test_generate_sampling),
        cmocka_unit_test(test_generate_text),     cmocka_unit_test(test_errors),
        cmocka_unit_test(test_fp8_cli),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
