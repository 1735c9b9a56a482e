/*
 * The built-in reward scripts (the rewards/ folder) through the pool, and the
 * `grpo score` command.
 *   - unit_tests.lua on HumanEval and MBPP rows: the canonical solutions
 *     score 1, broken ones (every `return X` made `return None; X`, or a
 *     solution that exits before the tests) score below 1. By default every
 *     12th row; GRPO_TEST_FULL=1 runs all 164 + 427 rows (about a minute).
 *   - code.lua (stdin/stdout programs) on synthetic problems.
 *   - grpo score: output fields, null for nil, malformed lines reported
 *     with their line number and skipped, missing columns rejected.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "reward/reward.h"
#include "test_common.h"

static reward_pool *builtin_pool(const char *spec_text, int workers) {
    reward_spec spec;
    assert_int_equal(reward_spec_parse(spec_text, &spec), BASE_OK);
    reward_limits lim;
    reward_limits_default(&lim);
    lim.sandbox.timeout_s = 10;
    reward_pool *p = NULL;
    base_status st = reward_pool_create(&spec, workers, &lim, NULL, &p);
    if (st) fprintf(stderr, "%s\n", base_err_msg());
    assert_int_equal(st, BASE_OK);
    reward_spec_free(&spec);
    return p;
}

static int stride(void) { return getenv("GRPO_TEST_FULL") ? 1 : 12; }

/* `return X` -> `return None; X`: every return now returns None (X stays
 * as an unreachable expression statement, so the code still compiles). */
static char *break_returns(const char *code, int *changed) {
    base_buf b = {0};
    *changed = 0;
    for (const char *p = code; *p;) {
        const char *r = strstr(p, "return ");
        if (!r) {
            base_buf_puts(&b, p);
            break;
        }
        base_buf_append(&b, p, (size_t)(r - p));
        base_buf_puts(&b, "return None; ");
        p = r + 7;
        (*changed)++;
    }
    return b.data ? b.data : base_xstrdup("");
}

static cJSON *fenced(cJSON *row, const char *code) {
    base_buf c = {0};
    base_buf_printf(&c, "<think>Let me write it.</think>\nHere it is:\n```python\n%s\n```\n", code);
    cJSON_AddStringToObject(row, "completion", c.data);
    base_buf_free(&c);
    return row;
}

/* rows -> samples with canonical, broken and exiting solutions */
typedef struct {
    cJSON **s;
    int n;
    int *kind; /* 0 canonical, 1 broken returns, 2 exits first */
} sample_set;

static void add(sample_set *ss, cJSON *s, int kind) {
    ss->s = base_xrealloc(ss->s, sizeof *ss->s * (size_t)(ss->n + 1));
    ss->kind = base_xrealloc(ss->kind, sizeof *ss->kind * (size_t)(ss->n + 1));
    ss->s[ss->n] = s;
    ss->kind[ss->n++] = kind;
}

static void check_set(sample_set *ss, const char *what) {
    reward_pool *p = builtin_pool("unit_tests", 2);
    reward_scores sc = {0};
    double t0 = base_now();
    assert_int_equal(reward_pool_score(p, (const cJSON *const *)ss->s, ss->n, &sc), BASE_OK);
    int good = 0, broken = 0;
    for (int i = 0; i < ss->n; i++) {
        char idbuf[64];
        const cJSON *idj = cJSON_GetObjectItem(ss->s[i], "id");
        if (cJSON_IsNumber(idj)) snprintf(idbuf, sizeof idbuf, "%d", idj->valueint);
        else snprintf(idbuf, sizeof idbuf, "%s", cJSON_IsString(idj) ? idj->valuestring : "?");
        const char *id = idbuf;
        if (sc.status[i] != REWARD_OK) fprintf(stderr, "%s %s kind %d: status %d\n", what, id, ss->kind[i], sc.status[i]);
        assert_int_equal(sc.status[i], REWARD_OK);
        if (ss->kind[i] == 0) {
            if (sc.total[i] != 1.0) fprintf(stderr, "%s %s: canonical scored %g\n", what, id, sc.total[i]);
            assert_true(sc.total[i] == 1.0);
            good++;
        } else {
            if (!(sc.total[i] < 1.0)) fprintf(stderr, "%s %s: broken (kind %d) scored %g\n", what, id, ss->kind[i], sc.total[i]);
            assert_true(sc.total[i] < 1.0);
            if (ss->kind[i] == 2) assert_true(sc.total[i] == 0.0);
            broken++;
        }
    }
    fprintf(stderr, "  %s: %d canonical pass, %d broken fail (%.1f s)\n", what, good, broken, base_now() - t0);
    assert_int_equal(reward_pool_n_errors(p), 0);
    reward_scores_free(&sc);
    reward_pool_destroy(p);
    for (int i = 0; i < ss->n; i++) cJSON_Delete(ss->s[i]);
    free(ss->s);
    free(ss->kind);
}

static void test_humaneval(void **st) {
    (void)st;
    char *path = test_shared_path("data/humaneval.jsonl");
    base_jsonl *r;
    assert_int_equal(base_jsonl_open(path, &r), BASE_OK);
    sample_set ss = {0};
    cJSON *row;
    for (int i = 0; base_jsonl_next(r, &row) == BASE_OK; i++) {
        if (i % stride() == 0) {
            base_buf code = {0};
            base_buf_printf(&code, "%s%s", base_json_str(row, "prompt", ""), base_json_str(row, "canonical_solution", ""));
            for (int kind = 0; kind < 3; kind++) {
                cJSON *s = cJSON_CreateObject();
                cJSON_AddStringToObject(s, "id", base_json_str(row, "task_id", "?"));
                cJSON_AddStringToObject(s, "tests", base_json_str(row, "test", ""));
                cJSON_AddStringToObject(s, "entry_point", base_json_str(row, "entry_point", ""));
                cJSON_AddStringToObject(s, "prompt", base_json_str(row, "prompt", ""));
                int changed = 1;
                char *c = kind == 0 ? base_xstrdup(code.data)
                        : kind == 1 ? break_returns(code.data, &changed)
                                    : (base_buf_printf(&code, "\nimport os\nos._exit(0)\n"), base_xstrdup(code.data));
                if (changed) add(&ss, fenced(s, c), kind);
                else cJSON_Delete(s);
                free(c);
            }
            base_buf_free(&code);
        }
        cJSON_Delete(row);
    }
    base_jsonl_close(r);
    free(path);
    check_set(&ss, "HumanEval");
}

/* HumanEval's prompt helpers (/32 poly, /38 encode_cyclic, /50 encode_shift)
 * are the verifier's: a solution that replaces a helper and the function
 * together (an identity pair passes a round-trip test, poly = 0 makes any
 * root a zero) scores 0, while the canonical solution, which redefines the
 * helpers faithfully, still scores 1. With prompt_helpers = false the
 * replaced pair passes: what the script option guards against. */
static void test_humaneval_helpers(void **st) {
    (void)st;
    static const struct {
        const char *id, *fake;
    } cases[] = {
        {"HumanEval/32", "def poly(xs, x):\n    return 0\n\ndef find_zero(xs):\n    return 0.0\n"},
        {"HumanEval/38", "def encode_cyclic(s):\n    return s\n\ndef decode_cyclic(s):\n    return s\n"},
        {"HumanEval/50", "def encode_shift(s):\n    return s\n\ndef decode_shift(s):\n    return s\n"},
    };
    char *path = test_shared_path("data/humaneval.jsonl");
    base_jsonl *r;
    assert_int_equal(base_jsonl_open(path, &r), BASE_OK);
    cJSON *s[6];
    int n = 0;
    cJSON *row;
    while (base_jsonl_next(r, &row) == BASE_OK) {
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            if (strcmp(base_json_str(row, "task_id", ""), cases[k].id)) continue;
            base_buf canon = {0};
            base_buf_printf(&canon, "%s%s", base_json_str(row, "prompt", ""),
                            base_json_str(row, "canonical_solution", ""));
            for (int kind = 0; kind < 2; kind++) { /* canonical, fake pair */
                cJSON *x = cJSON_CreateObject();
                cJSON_AddStringToObject(x, "tests", base_json_str(row, "test", ""));
                cJSON_AddStringToObject(x, "entry_point", base_json_str(row, "entry_point", ""));
                cJSON_AddStringToObject(x, "prompt", base_json_str(row, "prompt", ""));
                s[n++] = fenced(x, kind == 0 ? canon.data : cases[k].fake);
            }
            base_buf_free(&canon);
        }
        cJSON_Delete(row);
    }
    base_jsonl_close(r);
    free(path);
    assert_int_equal(n, 6);
    reward_pool *p = builtin_pool("on=unit_tests:1,off=unit_tests:1{prompt_helpers=false}", 2);
    reward_scores sc = {0};
    assert_int_equal(reward_pool_score(p, (const cJSON *const *)s, n, &sc), BASE_OK);
    for (int i = 0; i < n; i++) {
        int kind = i % 2;
        double on = sc.score[i * sc.n_funcs + 0], off = sc.score[i * sc.n_funcs + 1];
        fprintf(stderr, "  %s kind %d: on %g off %g\n", cases[i / 2].id, kind, on, off);
        if (kind == 0) assert_true(on == 1.0 && off == 1.0); /* canonical */
        else assert_true(on == 0.0 && off == 1.0);                       /* fake pair */
    }
    reward_scores_free(&sc);
    reward_pool_destroy(p);
    for (int i = 0; i < n; i++) cJSON_Delete(s[i]);
}

static void test_mbpp(void **st) {
    (void)st;
    char *path = test_shared_path("data/mbpp_sanitized.jsonl");
    base_jsonl *r;
    assert_int_equal(base_jsonl_open(path, &r), BASE_OK);
    sample_set ss = {0};
    cJSON *row;
    for (int i = 0; base_jsonl_next(r, &row) == BASE_OK; i++) {
        if (i % stride() == 0) {
            const char *code = base_json_str(row, "code", "");
            for (int kind = 0; kind < 3; kind++) {
                cJSON *s = cJSON_CreateObject();
                cJSON_AddNumberToObject(s, "id", base_json_num(row, "task_id", 0, NULL));
                cJSON_AddItemToObject(s, "tests", cJSON_Duplicate(cJSON_GetObjectItem(row, "test_list"), 1));
                cJSON_AddItemToObject(s, "test_imports", cJSON_Duplicate(cJSON_GetObjectItem(row, "test_imports"), 1));
                int changed = 1;
                char *c;
                if (kind == 0) c = base_xstrdup(code);
                else if (kind == 1) c = break_returns(code, &changed);
                else {
                    base_buf b = {0};
                    base_buf_printf(&b, "import sys\nsys.exit(0)\n%s", code);
                    c = b.data;
                }
                if (changed) add(&ss, fenced(s, c), kind);
                else cJSON_Delete(s);
                free(c);
            }
        }
        cJSON_Delete(row);
    }
    base_jsonl_close(r);
    free(path);
    check_set(&ss, "MBPP");
}

static void test_unit_tests_edges(void **st) {
    (void)st;
    reward_pool *p = builtin_pool("unit_tests:1{timeout=2},bin=unit_tests:1{binary=true}", 2);
    const char *js[] = {
        /* code only inside the reasoning: not taken */
        "{\"completion\":\"<think>```python\\ndef f(x): return x\\n```</think>no code\",\"tests\":[\"assert f(1) == 1\"]}",
        /* the last block counts; 1 of 2 tests passes */
        "{\"completion\":\"```python\\ndef f(x): return 0\\n```\\n```python\\ndef f(x): return x\\n```\","
        "\"tests\":[\"assert f(1) == 1\",\"assert f(2) == 3\"]}",
        /* a bash block after the python one is ignored */
        "{\"completion\":\"```python\\ndef f(x): return x\\n```\\n```bash\\necho hi\\n```\",\"tests\":[\"assert f(5) == 5\"]}",
        /* an infinite loop: the timeout, 0 */
        "{\"completion\":\"```python\\nwhile True: pass\\n```\",\"tests\":[\"assert True\"]}",
        /* a broken test: sandbox_error -> nil and a log line */
        "{\"id\":\"badtest\",\"completion\":\"```python\\nx = 1\\n```\",\"tests\":[\"assert (\"]}",
    };
    int n = (int)(sizeof js / sizeof js[0]);
    cJSON *s[8];
    for (int i = 0; i < n; i++) assert_non_null(s[i] = cJSON_Parse(js[i]));
    reward_scores sc = {0};
    assert_int_equal(reward_pool_score(p, (const cJSON *const *)s, n, &sc), BASE_OK);
    /* function 0: fraction; function 1: binary */
    assert_true(sc.score[0 * 2] == 0.0);
    assert_true(base_json_num(sc.parts[0 * 2], "no_code", -1, NULL) == 1);
    assert_true(sc.score[1 * 2] == 0.5);
    assert_true(sc.score[1 * 2 + 1] == 0.0);
    assert_true(sc.score[2 * 2] == 1.0);
    assert_true(sc.score[2 * 2 + 1] == 1.0);
    assert_true(sc.score[3 * 2] == 0.0);
    assert_true(base_json_num(sc.parts[3 * 2], "timeout", -1, NULL) == 1);
    assert_int_equal(sc.status[4 * 2], REWARD_ERROR);
    assert_true(isnan(sc.total[4]));
    assert_int_equal(reward_pool_n_errors(p), 2);
    reward_scores_free(&sc);
    reward_pool_destroy(p);
    for (int i = 0; i < n; i++) cJSON_Delete(s[i]);
}

static void test_code_stdio(void **st) {
    (void)st;
    reward_pool *p = builtin_pool("code,binary_code=code{binary=true}", 2);
    const char *cases = "{\"language\":\"python\",\"test_cases\":["
                        "{\"input\":\"1 2\\n\",\"output\":\"3\\n\",\"type\":\"stdin_stdout\"},"
                        "{\"input\":\"10 -4\\n\",\"output\":\"6\\n\"},"
                        "{\"input\":\"5 5\\n\",\"output\":\"10\\n\"}]}";
    const char *progs[] = {
        "a, b = map(int, input().split())\\nprint(a + b)",                   /* right */
        "a, b = map(int, input().split())\\nprint(a + b if a < 10 else 0)",   /* 2 of 3 */
        "import sys\\na, b = map(int, input().split())\\nprint(a + b)\\nsys.exit(1)", /* non-zero exit */
        "a, b = map(int, input().split())\\nprint(a + b)\\nprint('extra')",   /* extra line */
        "import sys\\na, b = map(int, sys.stdin.read().split())\\nprint(a + b)\\nsys.exit(0)",
    };
    double want[] = {1.0, 2.0 / 3.0, 0.0, 0.0, 1.0};
    int n = (int)(sizeof progs / sizeof progs[0]);
    cJSON *s[8];
    for (int i = 0; i < n; i++) {
        char js[1024];
        snprintf(js, sizeof js, "{\"completion\":\"```python\\n%s\\n```\",\"verification_info\":%s}", progs[i],
                 i % 2 ? cases : "null");
        s[i] = cJSON_Parse(js);
        assert_non_null(s[i]);
        if (i % 2 == 0) {
            /* the JSON-text form of the column */
            cJSON_ReplaceItemInObject(s[i], "verification_info", cJSON_CreateString(cases));
        }
    }
    reward_scores sc = {0};
    assert_int_equal(reward_pool_score(p, (const cJSON *const *)s, n, &sc), BASE_OK);
    for (int i = 0; i < n; i++) {
        if (fabs(sc.score[i * 2] - want[i]) > 1e-12) fprintf(stderr, "program %d: %g want %g\n", i, sc.score[i * 2], want[i]);
        assert_true(fabs(sc.score[i * 2] - want[i]) < 1e-12);
        assert_true(sc.score[i * 2 + 1] == (want[i] > 0.99 ? 1.0 : 0.0));
    }
    assert_int_equal(reward_pool_n_errors(p), 0);
    reward_scores_free(&sc);
    reward_pool_destroy(p);
    for (int i = 0; i < n; i++) cJSON_Delete(s[i]);
}

/* `grpo score --rewards DIR/SCRIPT.lua[SPEC_TAIL] --in DIR/in.jsonl --out
 * DIR/out.jsonl OPTS` with the script and the input written first; returns
 * the exit status, the output in *log. */
static int score_cli(const char *dir, const char *script, const char *lua, const char *spec_tail,
                     const char *lines, const char *opts, char **log) {
    char *scr = base_path_join(dir, script), *in = base_path_join(dir, "in.jsonl");
    char *out = base_path_join(dir, "out.jsonl");
    test_write_file(scr, lua, strlen(lua));
    test_write_file(in, lines, strlen(lines));
    base_buf args = {0};
    base_buf_printf(&args, "score --rewards '%s%s' --in '%s' --out '%s' %s", scr, spec_tail, in, out, opts);
    int rc = test_run_grpo(args.data, log);
    if (rc) fprintf(stderr, "%s\n", *log);
    base_buf_free(&args);
    free(scr), free(in), free(out);
    return rc;
}

static void test_score_cli(void **st) {
    (void)st;
    char *dir = test_tmpdir();
    char *in = base_path_join(dir, "in.jsonl");
    char *out = base_path_join(dir, "out.jsonl");
    const char *lua = "return {columns = {'answer'}, score = function(s)\n"
                      "  if s.answer == 'skip' then return nil end\n"
                      "  if s.answer == 'boom' then error('boom') end\n"
                      "  return s.completion == s.answer and 1 or 0, {len = #s.completion} end}\n";
    const char *lines = "{\"completion\":\"4\",\"answer\":\"4\"}\n"
                        "{\"completion\":\"5\",\"answer\":\"4\"}\n"
                        "{not json\n"
                        "\n"
                        "{\"completion\":\"x\",\"answer\":\"skip\"}\n"
                        "{\"completion\":\"x\"}\n"
                        "[1,2]\n"
                        "{\"answer\":\"4\"}\n"
                        "{\"id\":\"b1\",\"completion\":\"x\",\"answer\":\"boom\"}\n"
                        /* invalid UTF-8 anywhere: rejected, not copied to the output */
                        "{\"completion\":\"4 \xff\",\"answer\":\"4\"}\n"
                        "{\"completion\":\"4\",\"answer\":\"4\",\"meta\":{\"k\":[\"ok\",\"\xc3\"]}}\n"
                        "{\"completion\":\"4\",\"answer\":\"4\",\"\xfe\":1}\n";
    char *o = NULL;
    /* a sample whose script failed (b1): exit 1 and no output, naming the
     * script, the first error and the log; nil (line 5) is not an error */
    char *elog = base_path_join(dir, "errors.log");
    base_buf eopt = {0};
    base_buf_printf(&eopt, "--workers 2 --error-log '%s'", elog);
    assert_int_equal(score_cli(dir, "eq.lua", lua, ":2", lines, eopt.data, &o), 1);
    assert_int_equal(access(out, F_OK), -1);
    char want[600];
    snprintf(want, sizeof want, "1 of 4 samples had a reward error (first: eq: sample b1: %s/eq.lua:3: boom; all in %s)",
             dir, elog);
    if (!strstr(o, want)) fail_msg("wanted '%s' in:\n%s", want, o);
    assert_non_null(strstr(o, "--allow-partial"));
    free(o);
    /* --allow-partial: the scores, null where the script failed */
    assert_int_equal(score_cli(dir, "eq.lua", lua, ":2", lines, "--workers 2 --allow-partial", &o), 0);
    /* malformed lines named with their number */
    snprintf(want, sizeof want, "%s:3:", in);
    assert_non_null(strstr(o, want));
    snprintf(want, sizeof want, "%s:6: missing column 'answer'", in);
    assert_non_null(strstr(o, want));
    snprintf(want, sizeof want, "%s:7: not a JSON object", in);
    assert_non_null(strstr(o, want));
    snprintf(want, sizeof want, "%s:8: no \"completion\"", in);
    assert_non_null(strstr(o, want));
    assert_non_null(strstr(o, "sample b1: eq ("));
    snprintf(want, sizeof want, "%s:10: \"completion\": invalid UTF-8 at byte 2 (skipped)", in);
    assert_non_null(strstr(o, want));
    snprintf(want, sizeof want, "%s:11: \"meta.k[1]\": invalid UTF-8 at byte 0 (skipped)", in);
    assert_non_null(strstr(o, want));
    snprintf(want, sizeof want, "%s:12: a key: invalid UTF-8 at byte 0 (skipped)", in);
    assert_non_null(strstr(o, want));
    assert_non_null(strstr(o, "4 samples scored, 7 lines skipped"));
    free(o);
    base_jsonl *r;
    assert_int_equal(base_jsonl_open(out, &r), BASE_OK);
    cJSON *row;
    double want_reward[] = {2, 0, NAN, NAN};
    int n = 0;
    while (base_jsonl_next(r, &row) == BASE_OK) {
        assert_true(n < 4);
        cJSON *rw = cJSON_GetObjectItem(row, "reward");
        cJSON *parts = cJSON_GetObjectItem(row, "reward_parts");
        assert_non_null(rw);
        assert_true(cJSON_IsObject(parts));
        if (isnan(want_reward[n])) {
            assert_true(cJSON_IsNull(rw));
            assert_true(cJSON_IsNull(cJSON_GetObjectItem(parts, "eq")));
        } else {
            assert_true(rw->valuedouble == want_reward[n]);
            assert_true(base_json_num(parts, "eq", -1, NULL) == want_reward[n] / 2);
            assert_true(base_json_num(parts, "eq/len", -1, NULL) == 1);
        }
        assert_non_null(cJSON_GetObjectItem(row, "answer")); /* input fields kept */
        cJSON_Delete(row);
        n++;
    }
    assert_int_equal(n, 4);
    base_jsonl_close(r);
    /* no line scored (every one skipped, or an empty file): exit 1, and no
     * output file */
    unlink(out);
    const char *none[] = {"{\"completion\":\"\xff\",\"answer\":\"4\"}\n{not json\n", ""};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(score_cli(dir, "eq.lua", lua, "", none[i], "", &o), 1);
        assert_non_null(strstr(o, "no sample scored"));
        assert_int_equal(access(out, F_OK), -1);
        free(o);
    }
    /* nil everywhere is "not scored", not an error: exit 0 without the flag */
    assert_int_equal(score_cli(dir, "eq.lua", lua, "", "{\"completion\":\"x\",\"answer\":\"skip\"}\n", "", &o), 0);
    assert_non_null(strstr(o, "1 samples scored, 0 lines skipped, 0 reward errors"));
    free(o);
    /* a script whose check fails (http_judge at a URL nobody answers):
     * exit 1 before any line, naming the URL */
    unlink(out);
    base_buf args = {0};
    base_buf_printf(&args, "score --rewards 'http_judge{url=http://127.0.0.1:1/x;retries=0}' --in '%s' --out '%s'", in,
                    out);
    assert_int_equal(test_run_grpo(args.data, &o), 1);
    if (!strstr(o, "reward 'http_judge'") || !strstr(o, "check failed") || !strstr(o, "http://127.0.0.1:1/x"))
        fail_msg("unexpected output: %s", o);
    assert_int_equal(access(out, F_OK), -1);
    free(o);
    /* unit_tests.lua's check: one trivial sandbox run must pass (here it
     * cannot: a wall clock of a microsecond), else nothing is scored */
    const char *ut = "{\"completion\":\"x\",\"tests\":[\"assert True\"]}\n";
    test_write_file(in, ut, strlen(ut));
    base_buf_reset(&args);
    base_buf_printf(&args, "score --rewards 'unit_tests{timeout=0.000001}' --in '%s' --out '%s'", in, out);
    assert_int_equal(test_run_grpo(args.data, &o), 1);
    if (!strstr(o, "reward 'unit_tests'") || !strstr(o, "check failed: sandbox: timeout"))
        fail_msg("unexpected output: %s", o);
    assert_int_equal(access(out, F_OK), -1);
    free(o);
    base_buf_free(&args);
    base_buf_free(&eopt);
    free(elog);
    /* usage errors and a bad spec */
    assert_int_equal(test_run_grpo("score --in x", NULL), 2);
    base_buf_printf(&args, "score --rewards /nonexistent.lua --in '%s' --out '%s'", in, out);
    assert_int_equal(test_run_grpo(args.data, &o), 1);
    assert_non_null(strstr(o, "/nonexistent.lua"));
    free(o);
    base_buf_free(&args);
    test_rmdir(dir);
    free(dir);
    free(in);
    free(out);
}

/* grpo score and score_group scripts: consecutive lines with one prompt are
 * one group, and a batch never splits one (--batch 2 with groups of 3, 1
 * and 4: the group size each sample saw is its score). */
static void test_score_cli_groups(void **st) {
    (void)st;
    char *dir = test_tmpdir();
    char *out = base_path_join(dir, "out.jsonl");
    const char *lua = "return {score_group = function(ss)\n"
                      "  local out = {}\n"
                      "  for i = 1, #ss do out[i] = #ss end\n"
                      "  return out end}\n";
    const int size[8] = {3, 3, 3, 1, 4, 4, 4, 4};
    const char *prompt[8] = {"p", "p", "p", "q", "p", "p", "p", "p"};
    base_buf lines = {0};
    for (int i = 0; i < 8; i++) base_buf_printf(&lines, "{\"prompt\":\"%s\",\"completion\":\"c%d\"}\n", prompt[i], i);
    char *o = NULL;
    assert_int_equal(score_cli(dir, "gsize.lua", lua, "", lines.data, "--batch 2", &o), 0);
    free(o);
    base_jsonl *r;
    assert_int_equal(base_jsonl_open(out, &r), BASE_OK);
    cJSON *row;
    int n = 0;
    while (base_jsonl_next(r, &row) == BASE_OK) {
        assert_true(n < 8);
        char want[8];
        snprintf(want, sizeof want, "c%d", n);
        assert_string_equal(base_json_str(row, "completion", ""), want); /* order kept */
        assert_true(base_json_num(row, "reward", -1, NULL) == size[n]);
        cJSON_Delete(row);
        n++;
    }
    assert_int_equal(n, 8);
    base_jsonl_close(r);
    base_buf_free(&lines);
    test_rmdir(dir);
    free(dir), free(out);
}

/* The open-r1 cases of reward_fn_cases.jsonl through the built-in scripts
 * (format, tag_count, reasoning_steps, repetition_penalty, soft_overlong,
 * cosine, code_format), with the case's params as spec params. The one zh
 * repetition case depends on the jieba segmenter (flagged in its note) and
 * is reported, not compared. */
static void test_reward_fn_cases(void **st) {
    (void)st;
    char *path = test_shared_path("data/reward_fn_cases.jsonl");
    base_jsonl *r;
    assert_int_equal(base_jsonl_open(path, &r), BASE_OK);
    static const struct {
        const char *reward, *script;
    } map[] = {{"open_r1.format_reward", "format"},
               {"open_r1.tag_count_reward", "tag_count"},
               {"open_r1.reasoning_steps_reward", "reasoning_steps"},
               {"open_r1.repetition_penalty_reward", "repetition_penalty"},
               {"open_r1.soft_overlong_punishment", "soft_overlong"},
               {"open_r1.cosine_scaled_reward", "cosine"},
               {"open_r1.code_format_reward", "code_format"}};
    cJSON *row;
    int n = 0, ok = 0, skipped = 0;
    while (base_jsonl_next(r, &row) == BASE_OK) {
        const char *rw = base_json_str(row, "reward", "");
        const char *scr = NULL;
        for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
            if (!strcmp(rw, map[i].reward)) scr = map[i].script;
        assert_non_null(scr);
        const char *note = base_json_str(row, "note", "");
        if (strstr(note, "jieba")) {
            skipped++;
            cJSON_Delete(row);
            continue;
        }
        /* params: an object, or a Python dict repr (cosine cases) */
        cJSON *params = cJSON_GetObjectItem(row, "params");
        cJSON *pobj = NULL;
        if (cJSON_IsString(params)) {
            char *t = base_xstrdup(params->valuestring);
            for (char *c = t; *c; c++)
                if (*c == '\'') *c = '"';
            pobj = cJSON_Parse(t);
            free(t);
            assert_non_null(pobj);
        } else if (cJSON_IsObject(params)) {
            pobj = cJSON_Duplicate(params, 1);
        }
        cJSON *fixed = pobj ? pobj : cJSON_CreateObject(); /* the case's params are the scripts' */
        reward_spec spec = {0};
        char *bpath = base_path_join(reward_builtin_dir(), scr);
        base_buf full = {0};
        base_buf_printf(&full, "%s.lua", bpath);
        assert_int_equal(reward_spec_add(&spec, full.data, 1.0, NULL, fixed->child ? fixed : NULL), BASE_OK);
        base_buf_free(&full);
        free(bpath);
        cJSON_Delete(fixed);
        reward_pool *p = NULL;
        base_status bs = reward_pool_create(&spec, 1, NULL, NULL, &p);
        if (bs) fprintf(stderr, "%s\n", base_err_msg());
        assert_int_equal(bs, BASE_OK);
        reward_spec_free(&spec);
        cJSON *smp = cJSON_CreateObject();
        cJSON_AddStringToObject(smp, "completion", base_json_str(row, "completion", ""));
        if (cJSON_GetObjectItem(row, "completion_token_count"))
            cJSON_AddNumberToObject(smp, "completion_tokens", base_json_num(row, "completion_token_count", 0, NULL));
        if (cJSON_GetObjectItem(row, "solution"))
            cJSON_AddStringToObject(smp, "answer", base_json_str(row, "solution", ""));
        reward_scores sc = {0};
        const cJSON *one = smp;
        assert_int_equal(reward_pool_score(p, &one, 1, &sc), BASE_OK);
        double want = base_json_num(row, "expected", NAN, NULL);
        const char *cmp = base_json_str(row, "compare", "exact");
        double tol = !strcmp(cmp, "exact") ? 0 : !strcmp(cmp, "almost_equal_7dp") ? 0.5e-7
                   : !strcmp(cmp, "almost_equal_4dp")                         ? 0.5e-4
                                                                               : 0.5e-2;
        int good = sc.status[0] == REWARD_OK && fabs(sc.score[0] - want) <= tol;
        if (!good)
            fprintf(stderr, "%s: got %.17g (status %d), want %.17g (%s) for %.80s\n", rw, sc.score[0], sc.status[0],
                    want, cmp, base_json_str(row, "completion", ""));
        ok += good;
        n++;
        reward_scores_free(&sc);
        reward_pool_destroy(p);
        cJSON_Delete(smp);
        cJSON_Delete(row);
    }
    base_jsonl_close(r);
    free(path);
    fprintf(stderr, "  reward_fn_cases: %d/%d equal through the scripts, %d jieba case(s) not compared\n", ok, n,
            skipped);
    assert_true(n >= 50);
    assert_int_equal(ok, n);
}

/* boxed_math, think_format and lang_consistency on hand-made samples. */
static void test_math_format_lang(void **st) {
    (void)st;
    reward_pool *p = builtin_pool("boxed_math,think_format,lang_consistency", 2);
    const char *js[] = {
        "{\"completion\":\"<think>\\nhalf of it\\n</think>\\nSo $\\\\boxed{\\\\dfrac{1}{2}}$.\",\"answer\":\"0.5\"}",
        "{\"completion\":\"<think>\\nmaybe \\\\boxed{3}\\n</think>\\nThe answer is 4.\",\"answer\":\"3\"}",
        "{\"completion\":\"<think>我们来计算这个问题</think>答案是 \\\\boxed{7}\",\"answer\":\"7\",\"lang\":\"zh\"}",
        "{\"completion\":\"no think at all \\\\boxed{x+1}\",\"answer\":\"1+x\"}",
    };
    int n = 4;
    cJSON *s[4];
    for (int i = 0; i < n; i++) assert_non_null(s[i] = cJSON_Parse(js[i]));
    reward_scores sc = {0};
    assert_int_equal(reward_pool_score(p, (const cJSON *const *)s, n, &sc), BASE_OK);
    /* boxed_math: equal; box only in the CoT -> 0; equal; equal (commuted) */
    double want_math[] = {1, 0, 1, 1};
    double want_fmt[] = {1, 1, 1, 0};
    for (int i = 0; i < n; i++) {
        assert_int_equal(sc.status[i * 3], REWARD_OK);
        if (sc.score[i * 3] != want_math[i]) fprintf(stderr, "boxed_math sample %d: %g\n", i, sc.score[i * 3]);
        assert_true(sc.score[i * 3] == want_math[i]);
        assert_true(sc.score[i * 3 + 1] == want_fmt[i]);
    }
    assert_true(base_json_num(sc.parts[1 * 3], "no_box", -1, NULL) == 1);
    /* lang: English CoT under en, Chinese CoT under zh */
    assert_true(sc.score[0 * 3 + 2] == 1.0);
    assert_true(sc.score[2 * 3 + 2] == 1.0);
    assert_true(base_json_num(sc.parts[2 * 3 + 2], "words", 0, NULL) > 0);
    assert_int_equal(reward_pool_n_errors(p), 0);
    reward_scores_free(&sc);
    reward_pool_destroy(p);
    for (int i = 0; i < n; i++) cJSON_Delete(s[i]);
}

/* A gold answer that cannot be parsed skips the sample (nil) in every math
 * script, whether or not the completion has a box (TRL and open-r1 return
 * None before looking at the completion); len_reward counts it as correct
 * (open-r1). cosine clamps lengths past max_len by default (TRL);
 * clamp = false is open-r1's periodic cosine. */
static void test_math_no_gold_and_clamp(void **st) {
    (void)st;
    const char *bad = "\"answer\":\"\\\\undefinedcommand{2}\"";
    reward_pool *p = builtin_pool("boxed_math,cosine,cos_r1=cosine{clamp=false}", 1);
    base_buf long_right = {0}, long_wrong = {0};
    base_buf_puts(&long_right, "{\"answer\":\"3\",\"completion\":\"");
    for (int i = 0; i < 1991; i++) base_buf_puts(&long_right, "a");
    base_buf_puts(&long_right, "\\\\boxed{3}\"}"); /* 1991 + 9 = 2000 characters */
    base_buf_puts(&long_wrong, "{\"answer\":\"3\",\"completion\":\"");
    for (int i = 0; i < 1491; i++) base_buf_puts(&long_wrong, "a");
    base_buf_puts(&long_wrong, "\\\\boxed{4}\"}"); /* 1500 characters */
    char nobox[128], boxed[128];
    snprintf(nobox, sizeof nobox, "{%s,\"completion\":\"I do not know.\"}", bad);
    snprintf(boxed, sizeof boxed, "{%s,\"completion\":\"so \\\\boxed{3}\"}", bad);
    const char *js[] = {nobox, boxed, "{\"answer\":\"3\",\"completion\":\"I do not know.\"}", long_right.data,
                        long_wrong.data};
    enum { N = 5 };
    cJSON *s[N];
    for (int i = 0; i < N; i++) assert_non_null(s[i] = cJSON_Parse(js[i]));
    reward_scores sc = {0};
    assert_int_equal(reward_pool_score(p, (const cJSON *const *)s, N, &sc), BASE_OK);
    for (int i = 0; i < 2; i++) /* unparsable gold: nil everywhere, box or not */
        for (int f = 0; f < 3; f++) {
            if (sc.status[i * 3 + f] != REWARD_NIL) fprintf(stderr, "sample %d function %d: %g\n", i, f, sc.score[i * 3 + f]);
            assert_int_equal(sc.status[i * 3 + f], REWARD_NIL);
        }
    assert_true(isnan(sc.total[0]) && isnan(sc.total[1]));
    /* a good gold without a box: 0, and cosine's shortest-wrong value */
    assert_true(sc.score[2 * 3] == 0.0);
    assert_true(base_json_num(sc.parts[2 * 3], "no_box", -1, NULL) == 1);
    /* right at 2 * max_len: clamped 0.5; unclamped cos(2 pi) = 1 -> 1.0 */
    assert_true(sc.score[3 * 3] == 1.0);
    assert_true(fabs(sc.score[3 * 3 + 1] - 0.5) < 1e-12);
    assert_true(fabs(sc.score[3 * 3 + 2] - 1.0) < 1e-12);
    /* wrong at 1.5 * max_len: clamped -0.5; unclamped cos(1.5 pi) = 0 -> -0.75 */
    assert_true(fabs(sc.score[4 * 3 + 1] - -0.5) < 1e-12);
    assert_true(fabs(sc.score[4 * 3 + 2] - -0.75) < 1e-12);
    assert_int_equal(reward_pool_n_errors(p), 0);
    reward_scores_free(&sc);
    reward_pool_destroy(p);
    for (int i = 0; i < N; i++) cJSON_Delete(s[i]);
    base_buf_free(&long_right), base_buf_free(&long_wrong);

    /* countdown: an unparsable target skips the sample */
    p = builtin_pool("countdown", 1);
    const char *cd[] = {"{\"numbers\":[3,7,9,9],%s,\"completion\":\"\\\\boxed{3+7+9+9}\"}",
                        "{\"numbers\":[3,7,9,9],%s,\"completion\":\"no box\"}"};
    for (int i = 0; i < 2; i++) {
        char b[256];
        snprintf(b, sizeof b, cd[i], bad);
        assert_non_null(s[i] = cJSON_Parse(b));
    }
    assert_int_equal(reward_pool_score(p, (const cJSON *const *)s, 2, &sc), BASE_OK);
    assert_int_equal(sc.status[0], REWARD_NIL);
    assert_int_equal(sc.status[1], REWARD_NIL);
    reward_scores_free(&sc);
    reward_pool_destroy(p);
    for (int i = 0; i < 2; i++) cJSON_Delete(s[i]);

    /* len_reward: one group of three, the gold unparsable: all correct, so
     * lambda = 0.5 - (len - min) / (max - min) for each, box or not */
    p = builtin_pool("len_reward", 1);
    const char *lr[] = {"{\"prompt\":\"q\",%s,\"completion\":\"no\"}",
                        "{\"prompt\":\"q\",%s,\"completion\":\"x \\\\boxed{5}\"}",
                        "{\"prompt\":\"q\",%s,\"completion\":\"a longer one\"}"};
    for (int i = 0; i < 3; i++) {
        char b[256];
        snprintf(b, sizeof b, lr[i], bad);
        assert_non_null(s[i] = cJSON_Parse(b));
    }
    int64_t off[2] = {0, 3};
    assert_int_equal(reward_pool_score_groups(p, (const cJSON *const *)s, 3, off, 1, &sc), BASE_OK);
    double want[3] = {0.5, 0.5 - 9.0 / 10.0, -0.5}; /* lengths 2, 11, 12 */
    for (int i = 0; i < 3; i++) {
        if (fabs(sc.score[i] - want[i]) > 1e-12) fprintf(stderr, "len_reward %d: %g want %g\n", i, sc.score[i], want[i]);
        assert_true(fabs(sc.score[i] - want[i]) < 1e-12);
        assert_true(base_json_num(sc.parts[i], "correct", -1, NULL) == 1);
    }
    reward_scores_free(&sc);
    reward_pool_destroy(p);
    for (int i = 0; i < 3; i++) cJSON_Delete(s[i]);
}

/* countdown.lua: the expression must use only the listed numbers (each as
 * often as listed) and equal the target. */
static void test_countdown(void **st) {
    (void)st;
    reward_pool *p = builtin_pool("countdown", 1);
    const char *row = "\"numbers\":[7,3,9,9],\"answer\":\"28\"";
    const char *comp[] = {
        "<think>3+7+9+9</think> \\\\boxed{3+7+9+9}",   /* right */
        "<think>x</think> \\\\boxed{(9+9)+3+7}",         /* right, other order */
        "<think>x</think> \\\\boxed{1+3+7+9+9}",       /* 1 is not listed */
        "<think>x</think> \\\\boxed{7+7+9+5}",         /* 7 twice, 5 not listed */
        "<think>x</think> \\\\boxed{28}",              /* the target itself */
        "<think>x</think> \\\\boxed{3*9+1}",           /* wrong value */
        "<think>x</think> \\\\boxed{9/3+7+9}",         /* division is not an operation */
        "<think>x</think> no box",
    };
    double want[] = {1, 1, 0, 0, 0, 0, 0, 0};
    int n = 8;
    cJSON *s[8];
    for (int i = 0; i < n; i++) {
        base_buf b = {0};
        base_buf_printf(&b, "{%s,\"completion\":\"%s\"}", row, comp[i]);
        assert_non_null(s[i] = cJSON_Parse(b.data));
        base_buf_free(&b);
    }
    reward_scores sc = {0};
    assert_int_equal(reward_pool_score(p, (const cJSON *const *)s, n, &sc), BASE_OK);
    for (int i = 0; i < n; i++) {
        if (sc.score[i] != want[i]) fprintf(stderr, "countdown sample %d: %g\n", i, sc.score[i]);
        assert_true(sc.score[i] == want[i]);
    }
    assert_true(base_json_num(sc.parts[7], "no_box", -1, NULL) == 1);
    assert_true(base_json_num(sc.parts[2], "bad_numbers", -1, NULL) == 1);
    /* a row without `numbers` is caught before scoring */
    cJSON *bad = cJSON_Parse("{\"answer\":\"3\",\"completion\":\"x\"}");
    assert_int_equal(reward_check_row(p, bad, "rows.jsonl:1"), BASE_ERR_INVALID);
    assert_non_null(strstr(base_err_msg(), "numbers"));
    cJSON_Delete(bad);
    reward_scores_free(&sc);
    reward_pool_destroy(p);
    for (int i = 0; i < n; i++) cJSON_Delete(s[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_countdown),
        cmocka_unit_test(test_humaneval),
        cmocka_unit_test(test_humaneval_helpers),
        cmocka_unit_test(test_mbpp),
        cmocka_unit_test(test_unit_tests_edges),
        cmocka_unit_test(test_code_stdio),
        cmocka_unit_test(test_score_cli),
        cmocka_unit_test(test_score_cli_groups),
        cmocka_unit_test(test_reward_fn_cases),
        cmocka_unit_test(test_math_format_lang),
        cmocka_unit_test(test_math_no_gold_and_clamp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
