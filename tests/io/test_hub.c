/*
 * Tests of src/io/hub (the Hugging Face Hub download) against the local
 * server of hub_srv.c, which follows the Hub's documented API (this machine
 * and CI cannot reach huggingface.co). Library tests call hub_fetch with
 * HF_ENDPOINT pointing at the server. test_fetch_cli.c drives `grpo fetch`.
 */
#include "common/test_common.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/base.h"
#include "hub_srv.h"
#include "io/hub.h"

#define has(msg, s)                                                                                \
    do {                                                                                           \
        if (!strstr((msg), (s))) fail_msg("missing \"%s\" in:\n%s", (s), (msg));                   \
    } while (0)
#define hasnt(msg, s)                                                                              \
    do {                                                                                           \
        if (strstr((msg), (s))) fail_msg("unexpected \"%s\" in:\n%s", (s), (msg));                 \
    } while (0)

/* ---- helpers ------------------------------------------------------------------ */

static unsigned char *pattern(size_t n, unsigned seed) {
    unsigned char *p = base_xmalloc(n + 1);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        p[i] = (unsigned char)x;
    }
    return p;
}

#define BIG 300000
static const char CONFIG[] = "{\"model_type\": \"deepseek_v3\", \"hidden_size\": 64}\n";
static const char TOK[] = "{\"version\": \"1.0\"}\n";

/* A server with three files: config.json (plain), weights.bin (LFS, behind a
 * CDN redirect) and sub/dir/tok.json (plain), listed two entries a page. */
static srv *three(void) {
    srv *s = srv_start();
    unsigned char *big = pattern(BIG, 7);
    srv_add(s, "config.json", CONFIG, strlen(CONFIG), 0);
    srv_add(s, "weights.bin", big, BIG, 1);
    srv_add(s, "sub/dir/tok.json", TOK, strlen(TOK), 0);
    free(big);
    s->page_size = 1;
    s->cdn_redirect = 1;
    setenv("HF_ENDPOINT", srv_url(s), 1);
    return s;
}

static hub_opts quick(void) {
    hub_opts o;
    hub_opts_default(&o);
    o.progress = 0;
    o.backoff_s = 0.02;
    o.retries = 3;
    o.timeout_s = 2;
    return o;
}

static char *join(const char *a, const char *b) { return base_path_join(a, b); }

#define same srv_same
#define exists srv_exists
#define fsize srv_fsize

static void put(const char *dir, const char *path, const void *d, size_t n) {
    char *p = join(dir, path);
    char *sl = strrchr(p, '/');
    *sl = 0;
    assert_int_equal(base_mkdir_p(p), BASE_OK);
    *sl = '/';
    test_write_file(p, d, n);
    free(p);
}

static int setup(void **st) {
    (void)st;
    unsetenv("HF_TOKEN");
    setenv("HF_HOME", "/nonexistent-hf-home", 1);
    return 0;
}

/* ---- names, globs, hashes ---------------------------------------------------- */

static void test_names(void **st) {
    (void)st;
    const char *good[] = {"config.json", "a/b/c.safetensors", "dir/ünï.txt", "x..y", ".gitattributes", "a/.hidden"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        if (!hub_path_safe(good[i])) fail_msg("refused %s", good[i]);
    const char *bad[] = {"", "/etc/passwd", "..", "../x", "a/../../x", "a/..", "a//b", "./a", "a/.", "a/",
                         "a\\b", "a\x01" "b", "a\x7f", "\xff", "\xc0\xaf", "\xed\xa0\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (hub_path_safe(bad[i])) fail_msg("accepted \"%s\"", bad[i]);
    char longp[1100];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    assert_false(hub_path_safe(longp));

    assert_true(hub_repo_id_valid("deepseek-ai/DeepSeek-V3"));
    assert_true(hub_repo_id_valid("gpt2"));
    assert_true(hub_repo_id_valid("Qwen/Qwen2.5-0.5B"));
    const char *bad_ids[] = {"", "a/b/c", "../x", "a/..", "a--b/c", "-a/b", "a/b.", "a b/c", "a/b?x", "/a", "a/"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++)
        if (hub_repo_id_valid(bad_ids[i])) fail_msg("accepted repo id \"%s\"", bad_ids[i]);

    hub_opts o;
    hub_opts_default(&o);
    assert_true(hub_path_selected(&o, "anything/at/all"));
    const char *inc[] = {"*.json", "sub/"}, *exc[] = {"sub/x/*"};
    o.include = inc;
    o.n_include = 2;
    o.exclude = exc;
    o.n_exclude = 1;
    assert_true(hub_path_selected(&o, "config.json"));
    assert_true(hub_path_selected(&o, "deep/er/tok.json")); /* '*' crosses '/' as in Python's fnmatch */
    assert_true(hub_path_selected(&o, "sub/w.bin"));        /* "sub/" = everything under sub */
    assert_false(hub_path_selected(&o, "sub/x/tok.json"));  /* exclude wins */
    assert_false(hub_path_selected(&o, "model.safetensors"));
}

static void test_hashes(void **st) {
    (void)st;
    char *dir = test_tmpdir(), *p = join(dir, "f");
    char hex[65];
    test_write_file(p, "abc", 3); /* FIPS 180-2 example */
    assert_int_equal(hub_sha256_file(p, hex), BASE_OK);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    test_write_file(p, "hello\n", 6); /* `echo hello | git hash-object --stdin` */
    assert_int_equal(hub_git_oid_file(p, hex), BASE_OK);
    assert_string_equal(hex, "ce013625030ba8dba906f756967f9e9ca394464a");
    test_write_file(p, "", 0); /* git's empty blob */
    assert_int_equal(hub_git_oid_file(p, hex), BASE_OK);
    assert_string_equal(hex, "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
    assert_int_equal(hub_sha256_file("/nonexistent/f", hex), BASE_ERR_IO);
    has(base_err_msg(), "/nonexistent/f");
    free(p);
    test_rmdir(dir);
    free(dir);
}

/* ---- downloads --------------------------------------------------------------- */

static void test_fetch_all(void **st) {
    (void)st;
    srv *s = three();
    s->token = "hf_TESTtoken";
    char *dir = test_tmpdir(), *out = join(dir, "m");
    hub_opts o = quick();
    o.token = "hf_TESTtoken";
    hub_result r;
    if (hub_fetch("org/tiny", out, &o, &r)) fail_msg("%s", base_err_msg());
    assert_int_equal(r.n_files, 3);
    assert_int_equal(r.n_fetched, 3);
    assert_int_equal(r.bytes, (int64_t)(BIG + strlen(CONFIG) + strlen(TOK)));
    assert_true(same(out, s, "config.json") && same(out, s, "weights.bin") && same(out, s, "sub/dir/tok.json"));
    assert_false(exists(out, "weights.bin.part"));
    assert_int_equal(s->tree_pages, 4); /* 3 files + 1 directory, one a page */
    assert_int_equal(s->resolve_other_rev, 0); /* downloads pinned to the commit */
    /* the token reached the Hub, never the CDN host of the redirect */
    assert_true(s->auth_ok_requests >= 4);
    assert_int_equal(s->cdn_requests, 1);
    assert_int_equal(s->cdn_with_auth, 0);

    /* again: all complete, nothing requested */
    int before = srv_find(s, "weights.bin")->requests + srv_find(s, "config.json")->requests;
    if (hub_fetch("org/tiny", out, &o, &r)) fail_msg("%s", base_err_msg());
    assert_int_equal(r.n_skipped, 3);
    assert_int_equal(r.n_fetched, 0);
    assert_int_equal(srv_find(s, "weights.bin")->requests + srv_find(s, "config.json")->requests, before);

    /* a plain file changed in place (same size) is always re-hashed and fetched */
    char *bad = base_xstrdup(CONFIG);
    bad[3] ^= 1;
    put(out, "config.json", bad, strlen(bad));
    free(bad);
    /* an LFS file changed in place is skipped by size ... */
    unsigned char *junk = pattern(BIG, 99);
    put(out, "weights.bin", junk, BIG);
    free(junk);
    if (hub_fetch("org/tiny", out, &o, &r)) fail_msg("%s", base_err_msg());
    assert_int_equal(r.n_fetched, 1);
    assert_true(same(out, s, "config.json"));
    assert_false(same(out, s, "weights.bin"));
    /* ... and re-hashed with verify */
    o.verify = 1;
    if (hub_fetch("org/tiny", out, &o, &r)) fail_msg("%s", base_err_msg());
    assert_int_equal(r.n_fetched, 1);
    assert_int_equal(r.n_skipped, 2);
    assert_true(same(out, s, "weights.bin"));

    /* filters: only the selected files are fetched */
    char *out2 = join(dir, "m2");
    const char *inc[] = {"*.json"}, *exc[] = {"sub/*"};
    o.include = inc;
    o.n_include = 1;
    o.exclude = exc;
    o.n_exclude = 1;
    if (hub_fetch("org/tiny", out2, &o, &r)) fail_msg("%s", base_err_msg());
    assert_int_equal(r.n_files, 1);
    assert_int_equal(test_count_entries(out2), 1);
    assert_true(same(out2, s, "config.json"));
    /* globs that select nothing: an error, not an empty success */
    const char *none[] = {"*.nothing"};
    o.include = none;
    o.n_exclude = 0;
    assert_int_equal(hub_fetch("org/tiny", out2, &o, &r), BASE_ERR_INVALID);
    has(base_err_msg(), "org/tiny: no file at revision 'main' matches the include/exclude globs");
    free(out2);

    /* the token from $HF_TOKEN, then from $HF_HOME/token */
    char *out3 = join(dir, "m3");
    hub_opts o3 = quick();
    setenv("HF_TOKEN", "hf_TESTtoken", 1);
    if (hub_fetch("org/tiny", out3, &o3, &r)) fail_msg("%s", base_err_msg());
    unsetenv("HF_TOKEN");
    char *home = join(dir, "hfhome"), *tokf = join(home, "token");
    assert_int_equal(base_mkdir_p(home), BASE_OK);
    test_write_file(tokf, "hf_TESTtoken\n", 13);
    setenv("HF_HOME", home, 1);
    o3.verify = 1;
    if (hub_fetch("org/tiny", out3, &o3, &r)) fail_msg("%s", base_err_msg());
    assert_int_equal(r.n_skipped, 3);
    /* ... and from ~/.cache/huggingface/token when HF_HOME is not set */
    unsetenv("HF_HOME");
    unsetenv("XDG_CACHE_HOME");
    char *old_home = getenv("HOME") ? base_xstrdup(getenv("HOME")) : NULL;
    char *h2 = join(dir, "home"), *h2d = join(h2, ".cache/huggingface"), *h2t = join(h2d, "token");
    assert_int_equal(base_mkdir_p(h2d), BASE_OK);
    test_write_file(h2t, " hf_TESTtoken \n", 15);
    setenv("HOME", h2, 1);
    if (hub_fetch("org/tiny", out3, &o3, &r)) fail_msg("%s", base_err_msg());
    if (old_home) setenv("HOME", old_home, 1);
    free(old_home);
    free(h2);
    free(h2d);
    free(h2t);
    setenv("HF_HOME", "/nonexistent-hf-home", 1);
    assert_int_not_equal(hub_fetch("org/tiny", out3, &o3, &r), BASE_OK); /* no token: denied */
    free(home);
    free(tokf);
    free(out3);

    srv_stop(s);
    free(out);
    test_rmdir(dir);
    free(dir);
}

/* Drop dir/weights.bin and leave a weights.bin.part of the n bytes d, as an
 * earlier run stopped midway would. */
static void restart_from(const char *dir, const void *d, size_t n) {
    char *p = join(dir, "weights.bin");
    unlink(p);
    free(p);
    put(dir, "weights.bin.part", d, n);
}

/* A .part from an earlier run resumes with a Range request. */
static void test_resume(void **st) {
    (void)st;
    srv *s = three();
    char *dir = test_tmpdir();
    srv_file *w = srv_find(s, "weights.bin");
    put(dir, "weights.bin.part", w->data, 1000);
    hub_opts o = quick();
    hub_result r;
    if (hub_fetch("org/tiny", dir, &o, &r)) fail_msg("%s", base_err_msg());
    assert_int_equal(w->range_requests, 1);
    assert_int_equal(w->last_range_start, 1000);
    assert_int_equal(r.bytes, (int64_t)(BIG - 1000 + strlen(CONFIG) + strlen(TOK)));
    assert_true(same(dir, s, "weights.bin"));

    /* a server that ignores Range (200): start over, still right */
    restart_from(dir, w->data, 5000);
    w->ignore_range = 1;
    if (hub_fetch("org/tiny", dir, &o, &r)) fail_msg("%s", base_err_msg());
    assert_int_equal(w->range_requests, 2);
    assert_true(same(dir, s, "weights.bin"));
    assert_false(exists(dir, "weights.bin.part"));
    w->ignore_range = 0;

    /* a 206 that starts elsewhere than asked: drop the .part, start over */
    restart_from(dir, w->data, 2000);
    w->bad_offset = 1;
    int req0 = w->requests;
    if (hub_fetch("org/tiny", dir, &o, &r)) fail_msg("%s", base_err_msg());
    assert_int_equal(w->requests, req0 + 2);
    assert_true(same(dir, s, "weights.bin"));

    /* 416 to the range: drop the .part, start over */
    restart_from(dir, w->data, 3000);
    w->refuse_range = 1;
    req0 = w->requests;
    if (hub_fetch("org/tiny", dir, &o, &r)) fail_msg("%s", base_err_msg());
    assert_int_equal(w->requests, req0 + 2);
    assert_true(same(dir, s, "weights.bin"));

    /* a .part whose bytes are from another version: the checksum fails after
     * resuming, and one fresh download from zero fixes it */
    unsigned char *other = pattern(4000, 3);
    restart_from(dir, other, 4000);
    free(other);
    int req = w->requests;
    if (hub_fetch("org/tiny", dir, &o, &r)) fail_msg("%s", base_err_msg());
    assert_int_equal(w->requests, req + 2);
    assert_true(same(dir, s, "weights.bin"));

    /* a .part already whole (stopped before the rename): no request at all */
    restart_from(dir, w->data, w->len);
    req = w->requests;
    if (hub_fetch("org/tiny", dir, &o, &r)) fail_msg("%s", base_err_msg());
    assert_int_equal(w->requests, req);
    assert_true(same(dir, s, "weights.bin"));
    srv_stop(s);
    test_rmdir(dir);
    free(dir);
}

/* Transient faults are retried (resuming what arrived); 4xx are not. */
static void test_faults(void **st) {
    (void)st;
    srv *s = three();
    char *dir = test_tmpdir();
    srv_file *w = srv_find(s, "weights.bin"), *c = srv_find(s, "config.json");
    hub_opts o = quick();
    hub_result r;
    w->truncate = 1; /* half the body, then the connection closes */
    c->fail500 = 2;  /* two 500s, then the file */
    s->api_fail500 = 1;
    if (hub_fetch("org/tiny", dir, &o, &r)) fail_msg("%s", base_err_msg());
    assert_true(same(dir, s, "weights.bin") && same(dir, s, "config.json"));
    assert_int_equal(w->range_requests, 1);
    assert_int_equal(w->last_range_start, BIG / 2);
    assert_int_equal(c->requests, 3);
    assert_int_equal(s->revision_requests, 2);

    /* always truncated: gives up after 1 + retries attempts, keeps the .part */
    char *d2 = join(dir, "t");
    w->truncate = 100;
    o.retries = 2;
    assert_int_equal(hub_fetch("org/tiny", d2, &o, &r), BASE_ERR_IO);
    has(base_err_msg(), "org/tiny: weights.bin");
    has(base_err_msg(), "gave up after 3 attempts");
    has(base_err_msg(), "1 of 3 files failed");
    assert_int_equal(r.n_failed, 1);
    assert_int_equal(r.n_fetched, 2); /* the other files are complete */
    assert_false(exists(d2, "weights.bin"));
    assert_true(fsize(d2, "weights.bin.part") > BIG / 2);
    w->truncate = 0;

    /* 500 for ever: retried, then the status in the message */
    c->fail500 = 1000;
    char *d3 = join(dir, "u");
    assert_int_equal(hub_fetch("org/tiny", d3, &o, &r), BASE_ERR_IO);
    has(base_err_msg(), "org/tiny: config.json: HTTP 500");
    c->fail500 = 0;

    /* a connection reset mid-body: retried, resumed */
    char *d8 = join(dir, "z");
    w->reset = 1;
    int req_rst = w->requests;
    if (hub_fetch("org/tiny", d8, &o, &r)) fail_msg("%s", base_err_msg());
    assert_true(same(d8, s, "weights.bin"));
    assert_int_equal(w->requests, req_rst + 2);
    free(d8);

    /* 429 (rate limit) is retried too */
    c->fail500 = 1;
    c->fail_status = 429;
    char *d6 = join(dir, "x");
    int req429 = c->requests;
    if (hub_fetch("org/tiny", d6, &o, &r)) fail_msg("%s", base_err_msg());
    assert_int_equal(c->requests, req429 + 2);
    c->fail_status = 0;
    /* more bytes than listed: refused, the .part deleted */
    char *d7 = join(dir, "y");
    w->short_listed = 1;
    assert_int_equal(hub_fetch("org/tiny", d7, &o, &r), BASE_ERR_IO);
    has(base_err_msg(), "org/tiny: weights.bin: the server sent more than the 299999 bytes listed");
    assert_false(exists(d7, "weights.bin.part"));
    assert_false(exists(d7, "weights.bin"));
    w->short_listed = 0;
    free(d6);
    free(d7);

    /* 404 and 403 on a file: final at once */
    int req = c->requests;
    c->status = 404;
    assert_int_equal(hub_fetch("org/tiny", d3, &o, &r), BASE_ERR_IO);
    has(base_err_msg(), "org/tiny: config.json: HTTP 404: file not found at revision 'main'");
    assert_int_equal(c->requests, req + 1);
    c->status = 403;
    assert_int_equal(hub_fetch("org/tiny", d3, &o, &r), BASE_ERR_IO);
    has(base_err_msg(), "config.json: HTTP 403");
    assert_int_equal(c->requests, req + 2);
    c->status = 0;
    /* 403 on every file (gated at download time): one request, the others not tried */
    for (int i = 0; i < s->n; i++) s->files[i].status = 403;
    int all = 0;
    for (int i = 0; i < s->n; i++) all += s->files[i].requests;
    o.jobs = 1;
    assert_int_equal(hub_fetch("org/tiny", d3, &o, &r), BASE_ERR_IO);
    has(base_err_msg(), "3 of 3 files failed");
    has(base_err_msg(), "HTTP 403");
    has(base_err_msg(), "2 more files not attempted after the access error");
    for (int i = 0; i < s->n; i++) all -= s->files[i].requests, s->files[i].status = 0;
    assert_int_equal(all, -1);
    o.jobs = 0;

    /* a stalled transfer is cut by the timeout (1 s), retried and resumed */
    char *d4 = join(dir, "v");
    w->stall = 1;
    o.timeout_s = 0; /* from $HF_HUB_DOWNLOAD_TIMEOUT */
    setenv("HF_HUB_DOWNLOAD_TIMEOUT", "1", 1);
    double t0 = base_now();
    if (hub_fetch("org/tiny", d4, &o, &r)) fail_msg("%s", base_err_msg());
    double dt = base_now() - t0;
    unsetenv("HF_HUB_DOWNLOAD_TIMEOUT");
    o.timeout_s = 1;
    if (dt > 4.0) fail_msg("a stalled transfer took %.1f s", dt);
    assert_true(same(d4, s, "weights.bin"));
    assert_int_equal(w->last_range_start, BIG / 2);

    /* nobody listening: a connection error, bounded */
    srv_stop(s);
    char *d5 = join(dir, "w");
    o.retries = 1;
    assert_int_equal(hub_fetch("org/tiny", d5, &o, &r), BASE_ERR_IO);
    has(base_err_msg(), "org/tiny: revision:");
    has(base_err_msg(), "gave up after 2 attempts");
    free(d2);
    free(d3);
    free(d4);
    free(d5);
    test_rmdir(dir);
    free(dir);
}

static void test_checksum(void **st) {
    (void)st;
    srv *s = three();
    char *dir = test_tmpdir();
    hub_opts o = quick();
    hub_result r;
    srv_find(s, "weights.bin")->wrong_hash = 1;
    assert_int_equal(hub_fetch("org/tiny", dir, &o, &r), BASE_ERR_IO);
    has(base_err_msg(), "org/tiny: weights.bin: checksum mismatch: expected SHA-256");
    has(base_err_msg(), "deleted");
    assert_false(exists(dir, "weights.bin"));
    assert_false(exists(dir, "weights.bin.part"));
    assert_true(same(dir, s, "config.json") && same(dir, s, "sub/dir/tok.json")); /* nothing else lost */
    srv_find(s, "weights.bin")->wrong_hash = 0;
    srv_find(s, "sub/dir/tok.json")->wrong_hash = 1; /* plain files: the git SHA-1 */
    char *d2 = join(dir, "b");
    assert_int_equal(hub_fetch("org/tiny", d2, &o, &r), BASE_ERR_IO);
    has(base_err_msg(), "org/tiny: sub/dir/tok.json: checksum mismatch: expected git SHA-1");
    assert_false(exists(d2, "sub/dir/tok.json"));
    assert_true(same(d2, s, "weights.bin"));
    free(d2);
    srv_stop(s);
    test_rmdir(dir);
    free(dir);
}

static void test_access(void **st) {
    (void)st;
    srv *s = three();
    s->token = "hf_RIGHTsecret";
    char *dir = test_tmpdir(), *out = join(dir, "m");
    hub_opts o = quick();
    hub_result r;
    /* no token: 401, say what to do */
    assert_int_equal(hub_fetch("org/tiny", out, &o, &r), BASE_ERR_INVALID);
    has(base_err_msg(), "org/tiny");
    has(base_err_msg(), "HTTP 401");
    has(base_err_msg(), "pass a token");
    /* gated, wrong token: 403 and the licence; the token never shown */
    s->gated = 1;
    o.token = "hf_WRONGsecret";
    assert_int_equal(hub_fetch("org/tiny", out, &o, &r), BASE_ERR_INVALID);
    has(base_err_msg(), "HTTP 403: gated repository: accept its licence at ");
    has(base_err_msg(), "/org/tiny");
    hasnt(base_err_msg(), "hf_WRONGsecret");
    assert_int_equal(s->revision_requests, 2); /* 4xx: no retry */
    assert_false(exists(dir, "m")); /* nothing written */
    s->token = NULL;
    /* 404s: the repository, the revision */
    assert_int_equal(hub_fetch("org/other", out, &o, &r), BASE_ERR_INVALID);
    has(base_err_msg(), "org/other: revision: HTTP 404: repository not found");
    o.revision = "nope";
    assert_int_equal(hub_fetch("org/tiny", out, &o, &r), BASE_ERR_INVALID);
    has(base_err_msg(), "org/tiny: revision: HTTP 404: revision 'nope' not found");
    /* a revision with '/' is escaped into one path segment */
    o.revision = "refs/pr/1";
    if (hub_fetch("org/tiny", out, &o, &r)) fail_msg("%s", base_err_msg());
    assert_true(same(out, s, "weights.bin"));
    /* bad ids and endpoints are refused before any request */
    assert_int_equal(hub_fetch("../etc", out, &o, &r), BASE_ERR_INVALID);
    o.endpoint = "file:///etc";
    assert_int_equal(hub_fetch("org/tiny", out, &o, &r), BASE_ERR_INVALID);
    has(base_err_msg(), "only http:// and https://");
    srv_stop(s);
    free(out);
    test_rmdir(dir);
    free(dir);
}

/* Unsafe listings write nothing; neither do listings whose next page leaves
 * the endpoint (the token would follow). */
static void test_unsafe(void **st) {
    (void)st;
    srv *s = three();
    char *dir = test_tmpdir(), *out = join(dir, "m");
    hub_opts o = quick();
    hub_result r;
    const char *bad[] = {"../evil.txt", "/tmp/evil.txt", "a/../../evil.txt", "ok\\u0000/../../evil", "a\\\\b",
                         "x\\u0001y"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        s->bad_path = bad[i];
        assert_int_equal(hub_fetch("org/tiny", out, &o, &r), BASE_ERR_INVALID);
        if (!strstr(base_err_msg(), "unsafe path") && !strstr(base_err_msg(), "NUL"))
            fail_msg("%s: %s", bad[i], base_err_msg());
        assert_int_equal(test_count_entries(dir), 0);
    }
    s->bad_path = NULL;
    s->foreign_next = 1;
    assert_int_equal(hub_fetch("org/tiny", out, &o, &r), BASE_ERR_INVALID);
    has(base_err_msg(), "next-page link leaves");
    assert_int_equal(test_count_entries(dir), 0);
    srv_stop(s);
    free(out);
    test_rmdir(dir);
    free(dir);
}

/* An output path that cannot be made, and a write that fails (EFBIG from
 * RLIMIT_FSIZE, standing for a full disk): clear errors, no crash. */
static void test_disk(void **st) {
    (void)st;
    srv *s = three();
    char *dir = test_tmpdir(), *file = join(dir, "plain"), *out = join(file, "sub");
    test_write_file(file, "x", 1);
    hub_opts o = quick();
    hub_result r;
    assert_int_equal(hub_fetch("org/tiny", out, &o, &r), BASE_ERR_IO);
    has(base_err_msg(), "output directory");
    has(base_err_msg(), "Not a directory");
    /* a .part that is a symbolic link is not written through */
    char *lk = join(dir, "lk"), *target = join(dir, "target"), *lpart = join(lk, "weights.bin.part");
    test_write_file(target, "keep", 4);
    assert_int_equal(base_mkdir_p(lk), BASE_OK);
    assert_int_equal(symlink(target, lpart), 0);
    assert_int_equal(hub_fetch("org/tiny", lk, &o, &r), BASE_ERR_IO);
    has(base_err_msg(), "weights.bin.part: Too many levels of symbolic links");
    char *kept;
    size_t kn;
    assert_int_equal(base_read_file(target, &kept, &kn), BASE_OK);
    assert_true(kn == 4 && !memcmp(kept, "keep", 4));
    free(kept);
    free(lk);
    free(target);
    free(lpart);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {100000, 100000};
        setrlimit(RLIMIT_FSIZE, &rl);
        char *o2 = join(dir, "full");
        base_status e = hub_fetch("org/tiny", o2, &o, &r);
        int ok = e == BASE_ERR_IO && strstr(base_err_msg(), "weights.bin.part: write: File too large") &&
                 r.n_failed == 1 && r.n_fetched == 2;
        if (!ok) fprintf(stderr, "child: status %d: %s\n", (int)e, base_err_msg());
        _exit(ok ? 0 : 1);
    }
    int wst;
    assert_int_equal(waitpid(pid, &wst, 0), pid);
    assert_true(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
    srv_stop(s);
    free(file);
    free(out);
    test_rmdir(dir);
    free(dir);
}

/* Several files at once: with jobs 3, three answers are under way at once
 * (the server holds each until three are, at most 10 s: a client that
 * fetched one at a time would show 1); with jobs 1, slow answers never
 * overlap. */
static void test_jobs(void **st) {
    (void)st;
    srv *s = three();
    char *dir = test_tmpdir(), *a = join(dir, "a"), *b = join(dir, "b");
    hub_opts o = quick();
    hub_result r;
    o.jobs = 3;
    o.timeout_s = 15; /* the held answers wait for the slowest thread to start */
    s->hold_in_flight = 3;
    if (hub_fetch("org/tiny", a, &o, &r)) fail_msg("%s", base_err_msg());
    assert_int_equal(s->max_in_flight, 3);
    s->hold_in_flight = 0;
    for (int i = 0; i < s->n; i++) s->files[i].delay_ms = 400;
    s->max_in_flight = 0;
    o.jobs = 1;
    o.timeout_s = 2;
    if (hub_fetch("org/tiny", b, &o, &r)) fail_msg("%s", base_err_msg());
    assert_int_equal(s->max_in_flight, 1);
    srv_stop(s);
    free(a);
    free(b);
    test_rmdir(dir);
    free(dir);
}

/* A server that never completes the TCP handshake: the connect timeout
 * ends each attempt. The listening socket's accept queue is filled and
 * never drained, so the kernel drops further SYNs. */
static void test_connect_timeout(void **st) {
    (void)st;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(l, 0), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &al), 0);
    int fill[4];
    for (int i = 0; i < 4; i++) { /* non-blocking: the later ones stay pending */
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        (void)connect(fill[i], (struct sockaddr *)&a, sizeof a);
    }
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", ntohs(a.sin_port));
    hub_opts o = quick();
    o.endpoint = url;
    o.timeout_s = 1;
    o.retries = 0;
    hub_listing lst;
    double t0 = base_now();
    assert_int_equal(hub_list("org/tiny", &o, &lst), BASE_ERR_IO);
    double dt = base_now() - t0;
    hub_listing_free(&lst);
    has(base_err_msg(), "org/tiny: revision: Timeout was reached");
    if (dt > 3.0) fail_msg("the connect timeout of 1 s took %.1f s", dt);
    for (int i = 0; i < 4; i++) close(fill[i]);
    close(l);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),     cmocka_unit_test(test_hashes), cmocka_unit_test(test_fetch_all),
        cmocka_unit_test(test_resume),    cmocka_unit_test(test_faults), cmocka_unit_test(test_checksum),
        cmocka_unit_test(test_access),    cmocka_unit_test(test_unsafe), cmocka_unit_test(test_disk),
        cmocka_unit_test(test_jobs),      cmocka_unit_test(test_connect_timeout),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
