/*
 * grpo.http_post_json / reward_http_post_json against a minimal HTTP/1.1
 * POST responder started by the test on loopback (one thread, one request
 * per connection). Routes:
 *   /echo   200 {"method":..,"ctype":..,"got":BODY}
 *   /flaky  503 for the first two requests, then 200 {"attempt":N}
 *   /slow   answers after 1.5 s (clients here time out before)
 *   /bad    200 with a body that is not JSON
 *   /gone   404
 *   /big    200 with 200 kB of JSON
 */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/base.h"
#include "reward/reward.h"
#include "test_common.h"

static int g_listen = -1;
static int g_port;
static pthread_t g_thread;
static atomic_int g_flaky, g_stop;

static void respond(int fd, int code, const char *body) {
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                     code, strlen(body));
    if (send(fd, head, (size_t)n, MSG_NOSIGNAL) < 0 || send(fd, body, strlen(body), MSG_NOSIGNAL) < 0) return;
}

static void handle(int fd) {
    base_buf req = {0};
    char tmp[4096];
    size_t need = (size_t)-1, head_end = 0;
    while (req.len < need) {
        ssize_t n = read(fd, tmp, sizeof tmp);
        if (n <= 0) break;
        base_buf_append(&req, tmp, (size_t)n);
        if (!head_end) {
            char *e = strstr(req.data, "\r\n\r\n");
            if (e) {
                head_end = (size_t)(e - req.data) + 4;
                char *cl = strcasestr(req.data, "Content-Length:");
                need = head_end + (cl ? strtoul(cl + 15, NULL, 10) : 0);
            }
        }
    }
    if (!head_end) {
        base_buf_free(&req);
        return;
    }
    char method[16] = {0}, path[128] = {0};
    sscanf(req.data, "%15s %127s", method, path);
    char *ct = strcasestr(req.data, "Content-Type:");
    char ctype[64] = {0};
    if (ct) sscanf(ct + 13, " %63[^\r]", ctype);
    const char *body = req.data + head_end;
    base_buf out = {0};
    if (!strcmp(path, "/echo")) {
        base_buf_printf(&out, "{\"method\":\"%s\",\"ctype\":\"%s\",\"got\":%s}", method, ctype, body);
        respond(fd, 200, out.data);
    } else if (!strcmp(path, "/flaky")) {
        int k = atomic_fetch_add(&g_flaky, 1);
        if (k < 2) respond(fd, 503, "{\"error\":\"busy\"}");
        else {
            base_buf_printf(&out, "{\"attempt\":%d}", k + 1);
            respond(fd, 200, out.data);
        }
    } else if (!strcmp(path, "/slow")) {
        usleep(1500 * 1000);
        respond(fd, 200, "{\"late\":true}");
    } else if (!strcmp(path, "/bad")) {
        respond(fd, 200, "this is not json");
    } else if (!strcmp(path, "/big")) {
        base_buf_puts(&out, "{\"pad\":\"");
        for (int i = 0; i < 200000; i++) base_buf_append(&out, "x", 1);
        base_buf_puts(&out, "\"}");
        respond(fd, 200, out.data);
    } else {
        respond(fd, 404, "{\"error\":\"not found\"}");
    }
    base_buf_free(&out);
    base_buf_free(&req);
}

static void *serve(void *arg) {
    (void)arg;
    while (!atomic_load(&g_stop)) {
        int c = accept(g_listen, NULL, NULL);
        if (c < 0) break;
        handle(c);
        close(c);
    }
    return NULL;
}

static int setup(void **st) {
    (void)st;
    g_listen = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (g_listen < 0) return -1;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(g_listen, (struct sockaddr *)&a, sizeof a) < 0 || listen(g_listen, 16) < 0) return -1;
    socklen_t al = sizeof a;
    getsockname(g_listen, (struct sockaddr *)&a, &al);
    g_port = ntohs(a.sin_port);
    return pthread_create(&g_thread, NULL, serve, NULL) ? -1 : 0;
}

static int teardown(void **st) {
    (void)st;
    atomic_store(&g_stop, 1);
    shutdown(g_listen, SHUT_RDWR);
    close(g_listen);
    pthread_join(g_thread, NULL);
    return 0;
}

static char *url(const char *path) {
    base_buf b = {0};
    base_buf_printf(&b, "http://127.0.0.1:%d%s", g_port, path);
    return b.data;
}

static void test_c_api(void **st) {
    (void)st;
    reward_http_opts o;
    reward_http_opts_default(&o);
    o.timeout_s = 0.5;
    o.backoff_s = 0.01;
    char *resp = NULL;
    long code = 0;
    char *u = url("/echo");
    assert_int_equal(reward_http_post_json(u, "{\"x\":[1,2]}", &o, &resp, &code), BASE_OK);
    assert_int_equal(code, 200);
    cJSON *j = cJSON_Parse(resp);
    assert_non_null(j);
    assert_string_equal(base_json_str(j, "method", ""), "POST");
    assert_string_equal(base_json_str(j, "ctype", ""), "application/json");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "got"), "x")), 2);
    cJSON_Delete(j);
    free(resp);
    free(u);
    /* retries: two 503s then success within 2 retries */
    atomic_store(&g_flaky, 0);
    u = url("/flaky");
    assert_int_equal(reward_http_post_json(u, "{}", &o, &resp, &code), BASE_OK);
    assert_non_null(strstr(resp, "\"attempt\":3"));
    free(resp);
    /* not enough retries: the error names the status and the attempts */
    atomic_store(&g_flaky, 0);
    o.retries = 1;
    assert_int_equal(reward_http_post_json(u, "{}", &o, &resp, &code), BASE_ERR_IO);
    assert_null(resp);
    assert_int_equal(code, 503);
    assert_non_null(strstr(base_err_msg(), "HTTP 503"));
    assert_non_null(strstr(base_err_msg(), "2 attempts"));
    free(u);
    /* 404 is final: no retry */
    o.retries = 3;
    u = url("/gone");
    double t0 = base_now();
    assert_int_equal(reward_http_post_json(u, "{}", &o, &resp, &code), BASE_ERR_IO);
    assert_non_null(strstr(base_err_msg(), "1 attempt)"));
    assert_true(base_now() - t0 < 0.5);
    free(u);
    /* timeout per attempt, retried, bounded in time */
    o.retries = 1;
    o.timeout_s = 0.2;
    u = url("/slow");
    t0 = base_now();
    assert_int_equal(reward_http_post_json(u, "{}", &o, &resp, &code), BASE_ERR_IO);
    double dt = base_now() - t0;
    assert_true(dt >= 0.4 && dt < 1.4);
    assert_non_null(strstr(base_err_msg(), "2 attempts"));
    free(u);
    /* response cap */
    o.max_bytes = 1000;
    o.timeout_s = 2;
    u = url("/big");
    assert_int_equal(reward_http_post_json(u, "{}", &o, &resp, &code), BASE_ERR_IO);
    assert_non_null(strstr(base_err_msg(), "larger than 1000 bytes"));
    free(u);
    /* nobody listening: a connection error after the retries */
    reward_http_opts_default(&o);
    o.retries = 1;
    o.backoff_s = 0.01;
    o.timeout_s = 1;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(s, (struct sockaddr *)&a, sizeof a);
    socklen_t al = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &al);
    close(s); /* the port is now closed */
    char closed[64];
    snprintf(closed, sizeof closed, "http://127.0.0.1:%d/x", ntohs(a.sin_port));
    assert_int_equal(reward_http_post_json(closed, "{}", &o, &resp, &code), BASE_ERR_IO);
    assert_non_null(strstr(base_err_msg(), closed));
    assert_int_equal(reward_http_post_json("file:///etc/passwd", "{}", &o, &resp, &code), BASE_ERR_INVALID);
}

static void test_from_lua(void **st) {
    (void)st;
    char *dir = test_tmpdir();
    char *path = base_path_join(dir, "judge.lua");
    const char *src =
        "return {columns = {'url'}, score = function(s)\n"
        "  local r, code = grpo.http_post_json(s.url .. '/echo', {answer = s.completion, n = 3},\n"
        "                                      {timeout = 2, retries = 0, headers = {'X-Test: 1'}})\n"
        "  if not r then error(code) end\n"
        "  assert(code == 200 and r.method == 'POST' and r.got.n == 3)\n"
        "  local bad, msg = grpo.http_post_json(s.url .. '/bad', '{}', {timeout = 2, retries = 0})\n"
        "  assert(bad == nil and msg:find('not JSON'))\n"
        "  local gone, msg2 = grpo.http_post_json(s.url .. '/gone', '{}', {retries = 0})\n"
        "  assert(gone == nil and msg2:find('HTTP 404'))\n"
        "  return r.got.answer == '42' and 1 or 0, {code = code}\n"
        "end}\n";
    test_write_file(path, src, strlen(src));
    reward_spec spec;
    assert_int_equal(reward_spec_parse(path, &spec), BASE_OK);
    reward_pool *p = NULL;
    assert_int_equal(reward_pool_create(&spec, 2, NULL, NULL, &p), BASE_OK);
    char js[256];
    snprintf(js, sizeof js, "{\"completion\":\"42\",\"url\":\"http://127.0.0.1:%d\"}", g_port);
    cJSON *s1 = cJSON_Parse(js);
    snprintf(js, sizeof js, "{\"completion\":\"41\",\"url\":\"http://127.0.0.1:%d\"}", g_port);
    cJSON *s2 = cJSON_Parse(js);
    const cJSON *ss[2] = {s1, s2};
    reward_scores sc = {0};
    assert_int_equal(reward_pool_score(p, ss, 2, &sc), BASE_OK);
    assert_int_equal(reward_pool_n_errors(p), 0);
    assert_true(sc.total[0] == 1.0);
    assert_true(sc.total[1] == 0.0);
    assert_true(base_json_num(sc.parts[0], "code", 0, NULL) == 200);
    reward_scores_free(&sc);
    reward_pool_destroy(p);
    reward_spec_free(&spec);
    cJSON_Delete(s1);
    cJSON_Delete(s2);
    test_rmdir(dir);
    free(dir);
    free(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_c_api),
        cmocka_unit_test(test_from_lua),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
