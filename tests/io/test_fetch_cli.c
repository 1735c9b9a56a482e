/*
 * `grpo fetch` end to end against the local Hub server of hub_srv.c: the
 * tiny fixture (config.json, model.safetensors as an LFS file behind a CDN
 * redirect) fetched, then read by `grpo info`; --verify, --dry-run, the
 * default --out, usage errors, a gated repository without printing the
 * token, and Ctrl-C during a download followed by a resuming rerun.
 */
#include "common/test_common.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/base.h"
#include "hub_srv.h"

#define has(msg, s)                                                                                \
    do {                                                                                           \
        if (!strstr((msg), (s))) fail_msg("missing \"%s\" in:\n%s", (s), (msg));                   \
    } while (0)
#define hasnt(msg, s)                                                                              \
    do {                                                                                           \
        if (strstr((msg), (s))) fail_msg("unexpected \"%s\" in:\n%s", (s), (msg));                 \
    } while (0)
#define same srv_same
#define exists srv_exists
#define fsize srv_fsize

static char *join(const char *a, const char *b) { return base_path_join(a, b); }

static int setup(void **st) {
    (void)st;
    unsetenv("HF_TOKEN");
    setenv("HF_HOME", "/nonexistent-hf-home", 1);
    return 0;
}

static srv *fixture_server(void) {
    srv *s = srv_start();
    const char *names[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "fixtures/hf-tiny-v3-a/%s", names[i]);
        char *p = test_shared_path(rel), *d;
        size_t n;
        if (base_read_file(p, &d, &n)) fail_msg("%s", base_err_msg());
        srv_add(s, names[i], d, n, i == 1);
        free(d);
        free(p);
    }
    s->cdn_redirect = 1;
    setenv("HF_ENDPOINT", srv_url(s), 1);
    return s;
}

static void test_cli(void **st) {
    (void)st;
    srv *s = fixture_server();
    char *dir = test_tmpdir(), *out = join(dir, "v3"), args[4096], *o;
    snprintf(args, sizeof args, "fetch org/tiny --out '%s' --jobs 2", out);
    int rc = test_run_grpo(args, &o);
    if (rc) fail_msg("rc %d:\n%s", rc, o);
    has(o, "org/tiny: 2 files in ");
    has(o, "2 downloaded");
    has(o, "2/2 files, 1.1 MB of 1.1 MB"); /* the progress line (plain: not a terminal) */
    free(o);
    assert_true(same(out, s, "model.safetensors") && same(out, s, "config.json"));
    snprintf(args, sizeof args, "info '%s'", out);
    rc = test_run_grpo(args, &o);
    if (rc) fail_msg("rc %d:\n%s", rc, o);
    has(o, "parameters: 273,088");
    free(o);
    snprintf(args, sizeof args, "fetch org/tiny --out '%s' --verify --quiet", out);
    assert_int_equal(test_run_grpo(args, &o), 0);
    has(o, "0 downloaded");
    has(o, "2 already complete");
    free(o);
    /* --dry-run lists, writes nothing */
    snprintf(args, sizeof args, "fetch org/tiny --out '%s/dry' --dry-run", dir);
    assert_int_equal(test_run_grpo(args, &o), 0);
    has(o, "model.safetensors  (lfs)");
    has(o, "2 files, ");
    has(o, s->commit);
    free(o);
    assert_int_equal(exists(dir, "dry"), 0);
    /* default --out: the repository's name */
    base_buf cmd = {0};
    base_buf_printf(&cmd, "cd '%s' && '%s' fetch org/tiny --quiet", dir, getenv("GRPO_EXE"));
    base_buf_puts(&cmd, " >/dev/null 2>&1");
    assert_int_equal(system(cmd.data), 0);
    base_buf_free(&cmd);
    char *tiny = join(dir, "tiny");
    assert_true(same(tiny, s, "model.safetensors"));
    free(tiny);
    /* errors: usage 2, gated 1 without showing the token */
    assert_int_equal(test_run_grpo("fetch", &o), 2);
    has(o, "usage: grpo fetch REPO_ID");
    free(o);
    assert_int_equal(test_run_grpo("fetch org/tiny --jobs 0", &o), 2);
    free(o);
    s->token = "hf_RIGHT";
    s->gated = 1;
    snprintf(args, sizeof args, "fetch org/tiny --out '%s/g' --token hf_CLIsecret --retries 0", dir);
    assert_int_equal(test_run_grpo(args, &o), 1);
    has(o, "gated repository");
    hasnt(o, "hf_CLIsecret");
    free(o);
    srv_stop(s);
    free(out);
    test_rmdir(dir);
    free(dir);
}

/* Ctrl-C during a download keeps the .part; the same command resumes it. */
static void test_cli_interrupt(void **st) {
    (void)st;
    srv *s = fixture_server();
    srv_file *m = srv_find(s, "model.safetensors");
    m->stall = 1;
    char *dir = test_tmpdir(), *out = join(dir, "v3");
    char *log = join(dir, "log");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        FILE *f = freopen(log, "w", stderr);
        if (!f) _exit(99);
        execl(getenv("GRPO_EXE"), "grpo", "fetch", "org/tiny", "--out", out, "--quiet", (char *)NULL);
        _exit(98);
    }
    double t0 = base_now();
    while (fsize(out, "model.safetensors.part") <= 0 && base_now() - t0 < 10) usleep(20000);
    assert_true(fsize(out, "model.safetensors.part") > 0);
    kill(pid, SIGINT);
    int wst;
    assert_int_equal(waitpid(pid, &wst, 0), pid);
    char *msg;
    size_t n;
    assert_int_equal(base_read_file(log, &msg, &n), BASE_OK);
    if (!WIFEXITED(wst) || WEXITSTATUS(wst) != 130) fail_msg("status %d:\n%s", wst, msg);
    has(msg, "interrupted");
    has(msg, "run the same command again to resume");
    free(msg);
    long have = fsize(out, "model.safetensors.part");
    assert_true(have > 0);
    assert_false(exists(out, "model.safetensors"));
    char args[4096], *o;
    snprintf(args, sizeof args, "fetch org/tiny --out '%s' --quiet", out);
    int rc = test_run_grpo(args, &o);
    if (rc) fail_msg("rc %d:\n%s", rc, o);
    free(o);
    assert_int_equal(m->last_range_start, have);
    assert_true(same(out, s, "model.safetensors"));
    srv_stop(s);
    free(log);
    free(out);
    test_rmdir(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_cli_interrupt),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
