/* The one-stage commands (grpo sample, grpo eval, grpo sft): argument
 * errors, and sample/eval end to end on hf-tiny-v3-a with a byte-level
 * tokenizer: outputs where the usage says, temporary run directories
 * removed, --run-dir kept. */
#include "common/test_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/base.h"
#include "tok/tok.h"

static char *g_dir, *g_tmp; /* fixture dir; private TMPDIR of the commands */

static char *P(const char *rel) { return base_path_join(g_dir, rel); }

static void write_text(const char *rel, const char *text) { test_write_text(g_dir, rel, text); }

static int setup(void **state) {
    (void)state;
    g_dir = test_tmpdir();
    g_tmp = P("tmp");
    char *m = P("m");
    if (base_mkdir_p(m) || base_mkdir_p(g_tmp)) fail_msg("%s", base_err_msg());
    test_tiny_model(m, 1);
    free(m);
    write_text("p.jsonl", "{\"prompt\": \"What is 2+2?\", \"answer\": \"4\"}\n"
                          "{\"prompt\": \"What is 3+5?\", \"answer\": \"8\"}\n"
                          "{\"prompt\": \"Compute 7*6.\", \"answer\": \"42\"}\n");
    write_text("parity.lua", "return { score = function(s) return #s.completion % 2 end }\n");
    setenv("TMPDIR", g_tmp, 1); /* the commands' temporary run directories go here */
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_rmdir(g_dir);
    free(g_dir), free(g_tmp);
    return 0;
}

static int run(const char *fmt, char **out) {
    base_buf a = {0};
    base_buf_printf(&a, fmt, g_dir, g_dir, g_dir, g_dir, g_dir, g_dir);
    int rc = test_run_grpo(a.data, out);
    base_buf_free(&a);
    return rc;
}

static void expect(int want_rc, const char *fmt, const char *want_msg) {
    char *out;
    int rc = run(fmt, &out);
    if (rc != want_rc || (want_msg && !strstr(out, want_msg)))
        fail_msg("grpo %s: rc %d (want %d), output:\n%s\n(wanted '%s')", fmt, rc, want_rc, out, want_msg);
    free(out);
}

static int count_lines(const char *path) {
    char *t;
    size_t n;
    if (base_read_file(path, &t, &n)) fail_msg("%s", base_err_msg());
    int k = 0;
    for (size_t i = 0; i < n; i++) k += t[i] == '\n';
    free(t);
    return k;
}

static void test_usage_errors(void **state) {
    (void)state;
    const char *M = "--model %s/m --in %s/p.jsonl";
    char buf[512];
    expect(2, "sample --in x.jsonl --rewards r --out o.jsonl", "--model, --in, --rewards and --out are required");
    snprintf(buf, sizeof buf, "sample %s --out o.jsonl", M);
    expect(2, buf, "are required");
    snprintf(buf, sizeof buf, "sample %s --rewards %%s/parity.lua --out o.jsonl --n four", M);
    expect(2, buf, "--n: 'four' is not an integer");
    snprintf(buf, sizeof buf, "sample %s --rewards %%s/parity.lua --out o.jsonl --temperature hot", M);
    expect(2, buf, "--temperature: 'hot' is not a number");
    snprintf(buf, sizeof buf, "sample %s --rewards '%%s/parity.lua:heavy' --out o.jsonl", M);
    expect(2, buf, "weight 'heavy' is not a number");
    snprintf(buf, sizeof buf, "sample %s --rewards %%s/parity.lua --out o.jsonl extra_arg", M);
    expect(2, buf, "unexpected argument 'extra_arg'");
    expect(2, "sample --no-such-option", "usage: grpo sample");
    expect(0, "sample --help", "--keep EXPR");
    expect(2, "eval --model m --in x.jsonl", "--model, --in and --rewards are required");
    snprintf(buf, sizeof buf, "eval %s --rewards %%s/parity.lua --top-p x", M);
    expect(2, buf, "--top-p: 'x' is not a number");
    expect(0, "eval --help", "cons@K");
    expect(2, "sft --model m --in x.jsonl", "--model, --in and --out are required");
    expect(2, "sft --model m --in x.jsonl --out o --epochs one", "--epochs: 'one' is not a number");
    expect(2, "sft --model m --in x.jsonl --out o --resume", "--resume needs --run-dir");
    expect(2, "sft --model m --in x.jsonl --out o --rewards r", "usage: grpo sft");
    expect(0, "sft --help", "CKPT_DIR");
    /* bad input (not usage): rc 1 with the stage named */
    snprintf(buf, sizeof buf, "sample %s --rewards %%s/parity.lua --out %%s/o.jsonl --keep 'reward >' --template raw",
             M);
    expect(1, buf, "stage 'sample': keep expression 'reward >': syntax error");
    /* an option value outside its key's allowed values: bad usage, named by the option */
    snprintf(buf, sizeof buf, "sample %s --rewards %%s/parity.lua --out %%s/o.jsonl --filters code_blocks,nope", M);
    expect(2, buf,
           "grpo sample: --filters code_blocks,nope: must be one of mixed_language|long_paragraphs|code_blocks");
    expect(1, "eval --model /nonexistent --in /nonexistent.jsonl --rewards parity", "grpo eval:");
    /* no temporary run directory is left behind, failed runs included */
    assert_int_equal(test_count_entries(g_tmp), 0);
}

static void test_sample_command(void **state) {
    (void)state;
    char *out;
    int rc = run("sample --model %s/m --in %s/p.jsonl --rewards parity=%s/parity.lua:2 --keep 'rewards.parity == 1'"
                 " --n 4 --max-new-tokens 8 --temperature 1 --top-p 1 --template raw --max-per-prompt 0"
                 " --filters long_paragraphs --max-paragraph-chars 1000 --seed 5 --out %s/o/sft.jsonl",
                 &out);
    if (rc) fail_msg("rc %d: %s", rc, out);
    free(out);
    char *o = P("o/sft.jsonl"), *pr = P("o/sft.pass_rates.jsonl");
    assert_int_equal(count_lines(pr), 3);
    int kept = count_lines(o);
    /* the same with a kept run directory: same output, the run's files there */
    rc = run("sample --model %s/m --in %s/p.jsonl --rewards parity=%s/parity.lua:2 --keep 'rewards.parity == 1'"
             " --n 4 --max-new-tokens 8 --temperature 1 --top-p 1 --template raw --max-per-prompt 0"
             " --filters long_paragraphs --max-paragraph-chars 1000 --seed 5 --out %s/o/sft2.jsonl --run-dir %s/rd",
             &out);
    if (rc) fail_msg("rc %d: %s", rc, out);
    free(out);
    char *o2 = P("o/sft2.jsonl"), *a, *b, *sum = P("rd/summary.json");
    size_t na, nb;
    assert_int_equal(base_read_file(o, &a, &na), BASE_OK);
    assert_int_equal(base_read_file(o2, &b, &nb), BASE_OK);
    assert_true(na == nb && !memcmp(a, b, na));
    cJSON *js;
    if (base_json_parse_file(sum, &js)) fail_msg("%s", base_err_msg());
    const cJSON *st = cJSON_GetObjectItem(js, "sample");
    assert_int_equal(base_json_int(st, "kept", -1, NULL), kept);
    assert_int_equal(base_json_int(st, "total", -1, NULL), 12);
    printf("grpo sample: kept %d of 12\n", kept);
    assert_true(kept > 0 && kept < 12);
    /* the weight of the spec reached the pool: reward = 2 * parity */
    assert_true(base_json_num(st, "reward", -1, NULL) == 2 * base_json_num(st, "rewards/parity", -1, NULL));
    /* an existing run directory is not replaced without --overwrite */
    rc = run("sample --model %s/m --in %s/p.jsonl --rewards %s/parity.lua --out %s/o/x.jsonl --run-dir %s/rd", &out);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "already exists"));
    free(out);
    /* built-in scripts with params in the spec (the distill.lua example):
     * the random model gets nothing right, so nothing is kept */
    rc = run("sample --model %s/m --in %s/p.jsonl --rewards 'accuracy=boxed_math,format=think_format{prefilled=true}'"
             " --keep '(rewards.accuracy or 0) == 1' --n 2 --max-new-tokens 4 --template '{prompt}<think>'"
             " --out %s/o/acc.jsonl",
             &out);
    if (rc) fail_msg("rc %d: %s", rc, out);
    free(out);
    /* the DeepSeek chat format (r1) is not this byte-level model's: refused */
    rc = run("sample --model %s/m --in %s/p.jsonl --rewards boxed_math --n 2 --max-new-tokens 4 --template r1"
             " --out %s/o/r1.jsonl",
             &out);
    assert_int_equal(rc, 1);
    if (!strstr(out, "template 'r1' is the DeepSeek chat format, not this model's") || !strstr(out, "no chat template"))
        fail_msg("%s", out);
    free(out);
    char *acc = P("o/acc.jsonl");
    assert_int_equal(count_lines(acc), 0);
    free(acc);
    rc = run("sample --model %s/m --in %s/p.jsonl --rewards 'think_format{nope=1}' --out %s/o/x.jsonl", &out);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "unknown parameter 'nope'"));
    free(out);
    cJSON_Delete(js);
    free(a), free(b), free(o), free(o2), free(pr), free(sum);
    assert_int_equal(test_count_entries(g_tmp), 0);
}

/* Rejection sampling and eval from an FP8 checkpoint (tests/model/data/
 * tiny-v3-a-fp8): --precision fp8 keeps its e4m3 weights and block scales
 * (a run that trains nothing holds its model frozen) and writes the bytes
 * the default f32 load (dequantised) writes; a command that trains refuses
 * fp8 naming why. */
static void test_fp8_sample_eval(void **state) {
    (void)state;
    char *m8 = P("m8"), *src = test_src_path("tests/model/data/tiny-v3-a-fp8");
    if (base_mkdir_p(m8)) fail_msg("%s", base_err_msg());
    const char *files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char *a = base_path_join(src, files[i]), *b = base_path_join(m8, files[i]), *t;
        size_t n;
        if (base_read_file(a, &t, &n)) fail_msg("%s", base_err_msg());
        test_write_file(b, t, n);
        free(t), free(a), free(b);
    }
    tok_bytelevel_spec spec = tok_bytelevel_default();
    if (tok_write_bytelevel(m8, &spec)) fail_msg("%s", base_err_msg());
    const char *prec[2] = {"f32", "fp8"};
    char *out, *txt[2][3];
    size_t len[2][3];
    for (int k = 0; k < 2; k++) {
        base_buf a = {0};
        base_buf_printf(&a, "sample --model %s --in %s/p.jsonl --rewards %s/parity.lua --n 4 --max-new-tokens 8"
                            " --temperature 1 --template raw --seed 3 --device cpu --precision %s --out %s/o8/s_%s.jsonl",
                        m8, g_dir, g_dir, prec[k], g_dir, prec[k]);
        int rc = test_run_grpo(a.data, &out);
        if (rc) fail_msg("%s: rc %d: %s", a.data, rc, out);
        free(out);
        base_buf_reset(&a);
        base_buf_printf(&a, "eval --model %s --in %s/p.jsonl --rewards %s/parity.lua --n 3 --max-new-tokens 6"
                            " --template raw --device cpu --precision %s --out %s/o8/e_%s.json",
                        m8, g_dir, g_dir, prec[k], g_dir, prec[k]);
        rc = test_run_grpo(a.data, &out);
        if (rc) fail_msg("%s: rc %d: %s", a.data, rc, out);
        free(out);
        base_buf_free(&a);
        char nm[3][64];
        snprintf(nm[0], sizeof nm[0], "o8/s_%s.jsonl", prec[k]);
        snprintf(nm[1], sizeof nm[1], "o8/s_%s.pass_rates.jsonl", prec[k]);
        snprintf(nm[2], sizeof nm[2], "o8/e_%s.json", prec[k]);
        for (int j = 0; j < 3; j++) {
            char *p = P(nm[j]);
            if (base_read_file(p, &txt[k][j], &len[k][j])) fail_msg("%s", base_err_msg());
            free(p);
        }
        /* eval's summary: everything but its speed */
        cJSON *e = cJSON_Parse(txt[k][2]);
        assert_non_null(e);
        cJSON_DeleteItemFromObject(e, "tokens_per_s");
        free(txt[k][2]);
        txt[k][2] = cJSON_PrintUnformatted(e);
        len[k][2] = strlen(txt[k][2]);
        cJSON_Delete(e);
    }
    for (int j = 0; j < 3; j++) {
        if (len[0][j] != len[1][j] || memcmp(txt[0][j], txt[1][j], len[0][j]))
            fail_msg("f32 and fp8 outputs differ:\n%.*s\n%.*s", (int)len[0][j], txt[0][j], (int)len[1][j], txt[1][j]);
        free(txt[0][j]), free(txt[1][j]);
    }
    char buf[512];
    snprintf(buf, sizeof buf, "sft --model %s --in %%s/p.jsonl --out %%s/o8/sft --precision fp8 --device cpu", m8);
    expect(1, buf, "fp8: for frozen models only");
    free(m8), free(src);
    assert_int_equal(test_count_entries(g_tmp), 0);
}

static void test_eval_command(void **state) {
    (void)state;
    char *out;
    int rc = run("eval --model %s/m --in %s/p.jsonl --rewards %s/parity.lua --n 3 --max-new-tokens 6 --template raw"
                 " --answer-from last_number --out %s/ev.json",
                 &out);
    if (rc) fail_msg("rc %d: %s", rc, out);
    assert_non_null(strstr(out, "pass@1 "));
    assert_non_null(strstr(out, "cons@3 "));
    free(out);
    char *p = P("ev.json");
    cJSON *js;
    if (base_json_parse_file(p, &js)) fail_msg("%s", base_err_msg());
    double acc = base_json_num(js, "pass@1", -1, NULL);
    assert_true(acc >= 0 && acc <= 1);
    assert_true(base_json_num(js, "accuracy", -1, NULL) == acc);
    assert_non_null(cJSON_GetObjectItem(js, "cons@3"));
    assert_int_equal(base_json_int(js, "n_prompts", -1, NULL), 3);
    /* without --out the JSON goes to stdout */
    rc = run("eval --model %s/m --in %s/p.jsonl --rewards %s/parity.lua --n 3 --max-new-tokens 6 --template raw"
             " --answer-from last_number --quiet",
             &out);
    if (rc) fail_msg("rc %d: %s", rc, out);
    char *brace = strstr(out, "\n{");
    assert_non_null(brace);
    cJSON *js2 = cJSON_Parse(brace + 1);
    assert_non_null(js2);
    assert_true(base_json_num(js2, "pass@1", -1, NULL) == acc); /* deterministic */
    cJSON_Delete(js2);
    free(out);
    cJSON_Delete(js);
    free(p);
    assert_int_equal(test_count_entries(g_tmp), 0);
}

/* sample -> sft -> eval with the commands on the tiny demo model: the chat
 * data `grpo sample` writes trains with `grpo sft`, whose exported model
 * directory `grpo eval --model` loads. */
static void test_sample_sft_eval_chain(void **state) {
    (void)state;
    char *base = test_src_path("data/tiny/base"), *train = test_src_path("data/tiny/train.jsonl");
    char *pre = test_src_path("data/tiny/pretrain.jsonl");
    base_buf a = {0};
    base_buf_printf(&a,
                    "sample --model %s --in %s --rewards boxed_math --keep '(rewards.boxed_math or 0) == 1'"
                    " --template '{prompt}\n' --n 4 --max-new-tokens 40 --limit 12 --merge %s"
                    " --set datasets.merge_1.limit=4 --out %s/chain/sft.jsonl --quiet",
                    base, train, pre, g_dir);
    char *out;
    int rc = test_run_grpo(a.data, &out);
    if (rc) fail_msg("sample: rc %d: %s", rc, out);
    free(out);
    char *sft = P("chain/sft.jsonl");
    int lines = count_lines(sft);
    printf("chain: %d SFT rows (kept + 4 merged)\n", lines);
    assert_true(lines >= 4);
    base_buf_reset(&a);
    base_buf_printf(&a,
                    "sft --model %s --in %s --out %s/chain/model --max-steps 2 --batch-size 4 --max-length 128"
                    " --lr 1e-4 --template '{prompt}\n' --quiet",
                    base, sft, g_dir);
    rc = test_run_grpo(a.data, &out);
    if (rc) fail_msg("sft: rc %d: %s", rc, out);
    free(out);
    const char *files[] = {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; i < 4; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "chain/model/%s", files[i]);
        char *p = P(rel);
        if (!base_file_exists(p)) fail_msg("%s missing", p);
        free(p);
    }
    base_buf_reset(&a);
    base_buf_printf(&a,
                    "eval --model %s/chain/model --in %s --rewards boxed_math --n 2 --limit 4 --max-new-tokens 40"
                    " --template '{prompt}\n' --out %s/chain/eval.json --quiet",
                    g_dir, train, g_dir);
    rc = test_run_grpo(a.data, &out);
    if (rc) fail_msg("eval: rc %d: %s", rc, out);
    free(out);
    char *ev = P("chain/eval.json");
    cJSON *js;
    if (base_json_parse_file(ev, &js)) fail_msg("%s", base_err_msg());
    assert_int_equal(base_json_int(js, "n_prompts", -1, NULL), 4);
    cJSON_Delete(js);
    /* --resume with a kept run directory continues (here: nothing left to do) */
    base_buf_reset(&a);
    base_buf_printf(&a,
                    "sft --model %s --in %s --out %s/chain/model2 --max-steps 2 --batch-size 4 --max-length 128"
                    " --template '{prompt}\n' --run-dir %s/chain/run --quiet",
                    base, sft, g_dir, g_dir);
    rc = test_run_grpo(a.data, &out);
    if (rc) fail_msg("sft --run-dir: rc %d: %s", rc, out);
    free(out);
    base_buf_reset(&a);
    base_buf_printf(&a,
                    "sft --model %s --in %s --out %s/chain/model3 --max-steps 2 --batch-size 4 --max-length 128"
                    " --template '{prompt}\n' --run-dir %s/chain/run --resume --quiet",
                    base, sft, g_dir, g_dir);
    rc = test_run_grpo(a.data, &out);
    if (rc) fail_msg("sft --resume: rc %d: %s", rc, out);
    free(out);
    /* the resumed run exports the same weights */
    char *m2 = P("chain/model2/model.safetensors"), *m3 = P("chain/model3/model.safetensors"), *x, *y;
    size_t nx, ny;
    assert_int_equal(base_read_file(m2, &x, &nx), BASE_OK);
    assert_int_equal(base_read_file(m3, &y, &ny), BASE_OK);
    assert_true(nx == ny && !memcmp(x, y, nx));
    free(x), free(y), free(m2), free(m3);
    free(ev), free(sft), free(base), free(train), free(pre);
    base_buf_free(&a);
    assert_int_equal(test_count_entries(g_tmp), 0);
}

/* `grpo ARGS` with stdout and stderr apart (each malloc'd); the exit status. */
static int run_split(const char *args, char **out, char **err) {
    char *o = P("split.out"), *e = P("split.err");
    base_buf cmd = {0};
    const char *exe = getenv("GRPO_EXE");
    base_buf_printf(&cmd, "'%s' %s >'%s' 2>'%s'", exe ? exe : "./grpo", args, o, e);
    int st = system(cmd.data);
    size_t n;
    if (base_read_file(o, out, &n) || base_read_file(e, err, &n)) fail_msg("%s", base_err_msg());
    base_buf_free(&cmd);
    unlink(o), unlink(e);
    free(o), free(e);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* The one-stage commands name no path inside a temporary run directory
 * they have removed (no "results (DIR/summary.json)", no "done (DIR)", no
 * checkpoint it came from), and grpo eval's stdout is its JSON summary
 * alone. When the run's reward_errors.log has lines, the directory is kept
 * and said so (the error message points into it). */
static void test_no_deleted_paths(void **state) {
    (void)state;
    write_text("sft.jsonl", "{\"prompt\": \"What is 2+2?\", \"completion\": \"4\"}\n"
                            "{\"prompt\": \"What is 3+5?\", \"completion\": \"8\"}\n");
    base_buf a = {0};
    base_buf_printf(&a, "eval --model %s/m --in %s/p.jsonl --rewards %s/parity.lua --n 2 --max-new-tokens 4 --template raw",
                    g_dir, g_dir, g_dir);
    char *out, *err;
    int rc = run_split(a.data, &out, &err);
    if (rc) fail_msg("rc %d: %s", rc, err);
    cJSON *js = cJSON_Parse(out); /* the whole of stdout */
    if (!js) fail_msg("stdout is not the JSON summary:\n%s", out);
    assert_int_equal(base_json_int(js, "n_prompts", -1, NULL), 3);
    cJSON_Delete(js);
    if (strstr(out, g_tmp) || strstr(err, g_tmp)) fail_msg("names the removed run directory:\n%s%s", out, err);
    free(out), free(err);
    const char *cmds[] = {
        "sample --model %s/m --in %s/p.jsonl --rewards %s/parity.lua --n 2 --max-new-tokens 4 --template raw"
        " --out %s/o/np.jsonl",
        "sft --model %s/m --in %s/sft.jsonl --out %s/o/np_model --max-steps 1 --batch-size 2 --max-length 64"
        " --template raw"};
    for (int i = 0; i < 2; i++) {
        rc = run(cmds[i], &out);
        if (rc) fail_msg("rc %d: %s", rc, out);
        if (strstr(out, g_tmp)) fail_msg("names the removed run directory:\n%s", out);
        assert_non_null(strstr(out, "grpo: stage 1/1")); /* not quiet: the messages were there to check */
        free(out);
    }
    assert_int_equal(test_count_entries(g_tmp), 0);
    /* a reward that fails everywhere: exit 1, the message names the log in
     * the run directory, which is kept */
    write_text("down.lua", "return function(s) error('down') end\n");
    rc = run("eval --model %s/m --in %s/p.jsonl --rewards %s/down.lua --n 2 --max-new-tokens 4 --template raw", &out);
    assert_int_equal(rc, 1);
    assert_int_equal(test_count_entries(g_tmp), 1);
    char *log = strstr(out, "every error is in ");
    assert_non_null(log);
    log += strlen("every error is in ");
    char path[600];
    size_t n = strcspn(log, "\n");
    snprintf(path, sizeof path, "%.*s", (int)n, log);
    if (strncmp(path, g_tmp, strlen(g_tmp)) || !base_file_exists(path)) fail_msg("log %s is gone:\n%s", path, out);
    assert_non_null(strstr(out, "kept the run directory"));
    free(out);
    test_rmdir(g_tmp);
    base_mkdir_p(g_tmp);
    base_buf_free(&a);
}

/* --template is read as the recipe reads it: '{prompt}\n' (backslash, n:
 * as copied from a recipe) ends in a newline; an escape Lua does not know,
 * or a control character (\b of an unescaped \boxed), is a usage error.
 * A prompt the template makes too long for the model names the template
 * (eval: the default r1-zero on the 256-position tiny model; sft too). */
static void test_template_cli(void **state) {
    (void)state;
    char *out;
    int rc = run("eval --model %s/m --in %s/p.jsonl --rewards %s/parity.lua --n 1 --max-new-tokens 2"
                 " --template 'Q: {prompt}\\n' --run-dir %s/esc --quiet",
                 &out);
    if (rc) fail_msg("rc %d: %s", rc, out);
    free(out);
    char *smp = P("esc/eval.samples.jsonl");
    base_jsonl *r;
    assert_int_equal(base_jsonl_open(smp, &r), BASE_OK);
    cJSON *row;
    int n = 0;
    while (base_jsonl_next(r, &row) == BASE_OK) {
        const char *pr = base_json_str(row, "prompt", "");
        size_t len = strlen(pr);
        if (len < 4 || strncmp(pr, "Q: ", 3) || pr[len - 1] != '\n' || pr[len - 2] == '\\')
            fail_msg("prompt '%s': not 'Q: ...' ending in a newline", pr);
        cJSON_Delete(row);
        n++;
    }
    base_jsonl_close(r);
    assert_int_equal(n, 3);
    free(smp);
    expect(2, "eval --model %s/m --in %s/p.jsonl --rewards %s/parity.lua --template '{prompt} \\boxed{}'",
           "grpo eval: --template '{prompt} \\boxed{}': byte 9: '\\b' is a control character");
    expect(2, "eval --model %s/m --in %s/p.jsonl --rewards %s/parity.lua --template '{prompt}\\q'",
           "'\\q' is not an escape of a Lua string");
    /* too long with the template: named */
    char *base = test_src_path("data/tiny/base"), *test = test_src_path("data/tiny/test.jsonl");
    base_buf a = {0};
    base_buf_printf(&a, "eval --model %s --in %s --rewards boxed_math --limit 2 --quiet", base, test);
    rc = test_run_grpo(a.data, &out);
    assert_int_equal(rc, 1);
    if (!strstr(out, "test.jsonl:1: the prompt has ") || !strstr(out, "tokens with template 'r1-zero'") ||
        !strstr(out, "the model takes only 256 positions") || !strstr(out, "--template"))
        fail_msg("unexpected output: %s", out);
    free(out);
    base_buf_reset(&a);
    base_buf_printf(&a, "sft --model %s --in %s --out %s/o/long --max-steps 1 --quiet", base, test, g_dir);
    rc = test_run_grpo(a.data, &out);
    assert_int_equal(rc, 1);
    if (!strstr(out, "test.jsonl:1: the sample has ") || !strstr(out, "tokens with template 'r1-zero'") ||
        !strstr(out, "256 positions"))
        fail_msg("unexpected output: %s", out);
    free(out);
    base_buf_free(&a);
    free(base), free(test);
    assert_int_equal(test_count_entries(g_tmp), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_usage_errors),
        cmocka_unit_test(test_sample_command),
        cmocka_unit_test(test_eval_command),
        cmocka_unit_test(test_fp8_sample_eval),
        cmocka_unit_test(test_sample_sft_eval_chain),
        cmocka_unit_test(test_no_deleted_paths),
        cmocka_unit_test(test_template_cli),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
