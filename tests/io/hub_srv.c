/*
 * The test Hub server (see hub_srv.h). Hashes come from OpenSSL's EVP
 * directly, not from src/io/hub, so a wrong hash in the code under test is
 * caught.
 */
#include "hub_srv.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"

static void send_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        c += w;
        n -= (size_t)w;
    }
}

static void respond(int fd, int code, const char *extra_headers, const char *body) {
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%sConnection: "
                     "close\r\n\r\n",
                     code, strlen(body), extra_headers ? extra_headers : "");
    send_all(fd, head, (size_t)n);
    send_all(fd, body, strlen(body));
}

static void hex_digest(const EVP_MD *md, const char *prefix, size_t plen, const void *p, size_t n, char *hex) {
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dn = 0;
    if (!c || EVP_DigestInit_ex(c, md, NULL) != 1 || (plen && EVP_DigestUpdate(c, prefix, plen) != 1) ||
        EVP_DigestUpdate(c, p, n) != 1 || EVP_DigestFinal_ex(c, d, &dn) != 1)
        base_die("EVP digest failed");
    EVP_MD_CTX_free(c);
    for (unsigned i = 0; i < dn; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

static void unescape(char *s) {
    char *o = s;
    for (char *p = s; *p; p++) {
        if (*p == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
            char h[3] = {p[1], p[2], 0};
            *o++ = (char)strtol(h, NULL, 16);
            p += 2;
        } else *o++ = *p;
    }
    *o = 0;
}

srv_file *srv_find(srv *s, const char *path) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->files[i].path, path)) return &s->files[i];
    return NULL;
}

/* JSON entry for file f (directories are added by the caller). */
static void entry(base_buf *b, const srv_file *f) {
    char sha[65] = {0}, oid[41] = {0};
    hex_digest(EVP_sha256(), NULL, 0, f->data, f->len, sha);
    char head[48];
    int hn = snprintf(head, sizeof head, "blob %zu", f->len);
    hex_digest(EVP_sha1(), head, (size_t)hn + 1, f->data, f->len, oid);
    size_t len = f->len - (f->short_listed ? 1 : 0);
    if (f->wrong_hash) {
        if (f->lfs) sha[0] = sha[0] == '0' ? '1' : '0';
        else oid[0] = oid[0] == '0' ? '1' : '0';
    }
    if (f->lfs)
        base_buf_printf(b,
                        "{\"type\":\"file\",\"oid\":\"%s\",\"size\":%zu,\"path\":\"%s\",\"lfs\":{\"oid\":\"%s\","
                        "\"size\":%zu,\"pointerSize\":134}}",
                        "0123456789abcdef0123456789abcdef01234567", len, f->path, sha, len);
    else base_buf_printf(b, "{\"type\":\"file\",\"oid\":\"%s\",\"size\":%zu,\"path\":\"%s\"}", oid, len, f->path);
}

static void tree(srv *s, int fd, const char *query) {
    /* every entry: directories of nested paths, the files, the injected one */
    int cap = 64, n = 0;
    char **items = base_xcalloc((size_t)cap, sizeof *items);
    pthread_mutex_lock(&s->mu);
    s->tree_pages++;
    for (int i = 0; i < s->n; i++) {
        const char *sl = strrchr(s->files[i].path, '/');
        if (sl && n < cap) {
            base_buf b = {0};
            base_buf_printf(&b, "{\"type\":\"directory\",\"oid\":\"%040d\",\"size\":0,\"path\":\"%.*s\"}", 0,
                            (int)(sl - s->files[i].path), s->files[i].path);
            items[n++] = b.data;
        }
        base_buf b = {0};
        entry(&b, &s->files[i]);
        if (n < cap) items[n++] = b.data;
    }
    if (s->bad_path && n < cap) {
        base_buf b = {0};
        base_buf_printf(&b, "{\"type\":\"file\",\"oid\":\"%040d\",\"size\":4,\"path\":\"%s\"}", 0, s->bad_path);
        items[n++] = b.data;
    }
    int page = s->page_size > 0 ? s->page_size : n;
    int foreign = s->foreign_next;
    pthread_mutex_unlock(&s->mu);
    const char *c = strstr(query, "cursor=");
    int from = c ? atoi(c + 7) : 0;
    base_buf body = {0}, hdr = {0};
    base_buf_puts(&body, "[");
    for (int i = from; i < n && i < from + page; i++) {
        if (i > from) base_buf_puts(&body, ",");
        base_buf_puts(&body, items[i]);
    }
    base_buf_puts(&body, "]");
    if (from + page < n) {
        if (foreign)
            base_buf_printf(&hdr, "Link: <http://localhost:%d/api/models/%s/tree/%s?recursive=true&cursor=%d>; rel=\"next\"\r\n",
                            s->port, s->repo, s->commit, from + page);
        else
            base_buf_printf(&hdr, "Link: <%s/api/models/%s/tree/%s?recursive=true&cursor=%d>; rel=\"next\"\r\n",
                            srv_url(s), s->repo, s->commit, from + page);
    }
    respond(fd, 200, hdr.data, body.data);
    base_buf_free(&body);
    base_buf_free(&hdr);
    for (int i = 0; i < n; i++) free(items[i]);
    free(items);
}

static void stall_wait(srv *s) {
    double t0 = base_now();
    while (!atomic_load(&s->stop) && base_now() - t0 < 8.0) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static void serve_file_(srv *s, int fd, srv_file *f, const char *range);

static void serve_file(srv *s, int fd, srv_file *f, const char *range) {
    pthread_mutex_lock(&s->mu);
    if (++s->in_flight > s->max_in_flight) s->max_in_flight = s->in_flight;
    int delay = f->delay_ms, hold = s->hold_in_flight;
    pthread_mutex_unlock(&s->mu);
    /* hold: proves overlap without depending on the machine's load (a fixed
     * delay does not when the client's threads start late) */
    for (double t0 = base_now(); hold > 0 && !atomic_load(&s->stop) && base_now() - t0 < 10.0;) {
        pthread_mutex_lock(&s->mu);
        int now = s->in_flight;
        pthread_mutex_unlock(&s->mu);
        if (now >= hold) break;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (delay) {
        struct timespec ts = {delay / 1000, (long)(delay % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    serve_file_(s, fd, f, range);
    pthread_mutex_lock(&s->mu);
    s->in_flight--;
    pthread_mutex_unlock(&s->mu);
}

static void serve_file_(srv *s, int fd, srv_file *f, const char *range) {
    pthread_mutex_lock(&s->mu);
    f->requests++;
    long start = -1;
    if (range) {
        f->range_requests++;
        const char *b = strstr(range, "bytes=");
        start = b ? atol(b + 6) : 0;
        f->last_range_start = start;
    }
    int status = f->status, fail = 0, trunc = 0, stall = 0, rst = 0, ignore = f->ignore_range,
        bad_off = f->bad_offset;
    if (f->refuse_range && start > 0) f->refuse_range = 0, status = 416;
    if (f->reset > 0) f->reset--, rst = 1;
    if (bad_off && start > 0) f->bad_offset = 0; /* once */
    if (f->fail500 > 0) f->fail500--, fail = 1;
    else if (f->truncate > 0) f->truncate--, trunc = 1;
    else if (f->stall > 0) f->stall--, stall = 1;
    pthread_mutex_unlock(&s->mu);
    if (status) {
        respond(fd, status, status == 404 ? "X-Error-Code: EntryNotFound\r\n" : NULL, "{\"error\":\"no\"}");
        return;
    }
    if (fail) {
        respond(fd, f->fail_status ? f->fail_status : 500, NULL, "{\"error\":\"internal\"}");
        return;
    }
    size_t from = 0;
    char head[512];
    int hn;
    if (start >= 0 && !ignore) {
        if ((size_t)start >= f->len) {
            respond(fd, 416, NULL, "{\"error\":\"range\"}");
            return;
        }
        from = bad_off ? 0 : (size_t)start;
        hn = snprintf(head, sizeof head,
                      "HTTP/1.1 206 Partial Content\r\nContent-Length: %zu\r\nContent-Range: bytes %zu-%zu/%zu\r\n"
                      "Connection: close\r\n\r\n",
                      f->len - from, from, f->len - 1, f->len);
    } else {
        hn = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", f->len);
    }
    send_all(fd, head, (size_t)hn);
    size_t n = f->len - from;
    if (trunc || stall || rst) {
        send_all(fd, f->data + from, n / 2);
        if (rst) { /* linger 0: close sends RST, the client sees "connection reset" */
            struct linger lg = {1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        if (stall) stall_wait(s);
        return;
    }
    send_all(fd, f->data + from, n);
}

/* 1 if the request carries the expected token (or none is needed). */
static int authorised(srv *s, const char *req, int *has_auth) {
    const char *a = strcasestr(req, "\r\nAuthorization:");
    *has_auth = a != NULL;
    if (!s->token) return 1;
    if (!a) return 0;
    char want[256];
    snprintf(want, sizeof want, "\r\nAuthorization: Bearer %s\r\n", s->token);
    return strstr(req, want) != NULL;
}

static void deny(srv *s, int fd) {
    if (s->gated)
        respond(fd, 403, "X-Error-Code: GatedRepo\r\nX-Error-Message: Access to model org/tiny is restricted.\r\n",
                "{\"error\":\"gated\"}");
    else respond(fd, 401, "X-Error-Code: RepoNotFound\r\nX-Error-Message: Repository not found\r\n", "{\"error\":\"no\"}");
}

static void handle(srv *s, int fd) {
    base_buf req = {0};
    char tmp[4096];
    while (!req.data || !strstr(req.data, "\r\n\r\n")) {
        ssize_t n = recv(fd, tmp, sizeof tmp, 0);
        if (n <= 0 || req.len > 65536) {
            base_buf_free(&req);
            return;
        }
        base_buf_append(&req, tmp, (size_t)n);
    }
    char method[16] = {0}, target[2048] = {0};
    sscanf(req.data, "%15s %2047s", method, target);
    char range[128] = {0};
    const char *rh = strcasestr(req.data, "\r\nRange:");
    if (rh) sscanf(rh + 8, " %127[^\r]", range);
    int has_auth;
    int ok = authorised(s, req.data, &has_auth);
    char *q = strchr(target, '?');
    char query[512] = "";
    if (q) {
        snprintf(query, sizeof query, "%s", q + 1);
        *q = 0;
    }
    char pre_api[128], pre_res[128];
    snprintf(pre_api, sizeof pre_api, "/api/models/%s/", s->repo);
    snprintf(pre_res, sizeof pre_res, "/%s/resolve/", s->repo);
    if (!strcmp(target, "/cdn") || !strncmp(target, "/cdn/", 5)) {
        pthread_mutex_lock(&s->mu);
        s->cdn_requests++;
        if (has_auth) s->cdn_with_auth++;
        pthread_mutex_unlock(&s->mu);
        unescape(target);
        srv_file *f = srv_find(s, target + 5);
        if (f) serve_file(s, fd, f, rh ? range : NULL);
        else respond(fd, 404, NULL, "{}");
    } else if (!strncmp(target, "/api/models/", 12) && strncmp(target, pre_api, strlen(pre_api))) {
        respond(fd, 404, "X-Error-Code: RepoNotFound\r\n", "{\"error\":\"Repository not found\"}");
    } else if (!ok && (!strncmp(target, pre_api, strlen(pre_api)) || !strncmp(target, pre_res, strlen(pre_res)))) {
        pthread_mutex_lock(&s->mu);
        s->revision_requests += strstr(target, "/revision/") != NULL;
        pthread_mutex_unlock(&s->mu);
        deny(s, fd);
    } else if (!strncmp(target, pre_api, strlen(pre_api))) {
        pthread_mutex_lock(&s->mu);
        s->auth_ok_requests += s->token != NULL;
        pthread_mutex_unlock(&s->mu);
        const char *rest = target + strlen(pre_api);
        if (!strncmp(rest, "revision/", 9)) {
            char rev[256];
            snprintf(rev, sizeof rev, "%s", rest + 9);
            unescape(rev);
            pthread_mutex_lock(&s->mu);
            s->revision_requests++;
            int fail = s->api_fail500 > 0;
            if (fail) s->api_fail500--;
            pthread_mutex_unlock(&s->mu);
            if (fail) respond(fd, 500, NULL, "{}");
            else if (strcmp(rev, "main") && strcmp(rev, "refs/pr/1") && strcmp(rev, s->commit))
                respond(fd, 404, "X-Error-Code: RevisionNotFound\r\n", "{\"error\":\"Invalid rev id\"}");
            else {
                base_buf b = {0};
                base_buf_printf(&b, "{\"id\":\"%s\",\"sha\":\"%s\",\"siblings\":[]}", s->repo, s->commit);
                respond(fd, 200, NULL, b.data);
                base_buf_free(&b);
            }
        } else if (!strncmp(rest, "tree/", 5) && !strcmp(rest + 5, s->commit) && strstr(query, "recursive=true")) {
            tree(s, fd, query);
        } else respond(fd, 404, NULL, "{}");
    } else if (!strncmp(target, pre_res, strlen(pre_res))) {
        pthread_mutex_lock(&s->mu);
        s->auth_ok_requests += s->token != NULL;
        pthread_mutex_unlock(&s->mu);
        char *rev = target + strlen(pre_res);
        char *sl = strchr(rev, '/');
        if (!sl) {
            respond(fd, 404, NULL, "{}");
        } else {
            *sl = 0;
            char *path = sl + 1;
            if (strcmp(rev, s->commit)) { /* the client must pin the commit */
                pthread_mutex_lock(&s->mu);
                s->resolve_other_rev++;
                pthread_mutex_unlock(&s->mu);
            }
            char raw[1024];
            snprintf(raw, sizeof raw, "%s", path);
            unescape(path);
            srv_file *f = srv_find(s, path);
            if (!f) respond(fd, 404, "X-Error-Code: EntryNotFound\r\n", "{\"error\":\"Entry not found\"}");
            else if (f->lfs && s->cdn_redirect) {
                char loc[1400];
                snprintf(loc, sizeof loc, "Location: http://localhost:%d/cdn/%s\r\n", s->port, raw);
                respond(fd, 302, loc, "");
            } else serve_file(s, fd, f, rh ? range : NULL);
        }
    } else {
        respond(fd, 404, NULL, "{}");
    }
    base_buf_free(&req);
}

typedef struct {
    srv *s;
    int fd;
} conn;

static void *conn_main(void *arg) {
    conn *c = arg;
    handle(c->s, c->fd);
    shutdown(c->fd, SHUT_WR);
    close(c->fd);
    atomic_fetch_sub(&c->s->active, 1);
    free(c);
    return NULL;
}

static void *accept_main(void *arg) {
    srv *s = arg;
    while (!atomic_load(&s->stop)) {
        int fd = accept(s->fd, NULL, NULL);
        if (fd < 0) break;
        conn *c = base_xmalloc(sizeof *c);
        c->s = s;
        c->fd = fd;
        atomic_fetch_add(&s->active, 1);
        pthread_t t;
        if (pthread_create(&t, NULL, conn_main, c)) base_die("pthread_create failed");
        pthread_detach(t);
    }
    return NULL;
}

srv *srv_start(void) {
    srv *s = base_xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    snprintf(s->repo, sizeof s->repo, "org/tiny");
    snprintf(s->commit, sizeof s->commit, "c0ffee0123456789abcdef0123456789abcdef01");
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->fd < 0) base_die("socket: %s", base_strerror_now());
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s->fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(s->fd, 64) < 0)
        base_die("bind/listen: %s", base_strerror_now());
    socklen_t al = sizeof a;
    if (getsockname(s->fd, (struct sockaddr *)&a, &al) < 0) base_die("getsockname: %s", base_strerror_now());
    s->port = ntohs(a.sin_port);
    snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", s->port);
    if (pthread_create(&s->thread, NULL, accept_main, s)) base_die("pthread_create failed");
    return s;
}

srv_file *srv_add(srv *s, const char *path, const void *data, size_t len, int lfs) {
    if (s->n == 16) base_die("srv_add: too many files");
    srv_file *f = &s->files[s->n++];
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", path);
    f->data = base_xmalloc(len + 1);
    if (len) memcpy(f->data, data, len);
    f->len = len;
    f->lfs = lfs;
    f->last_range_start = -1;
    return f;
}

const char *srv_url(srv *s) { return s->url; }

void srv_stop(srv *s) {
    atomic_store(&s->stop, 1);
    shutdown(s->fd, SHUT_RDWR);
    close(s->fd);
    pthread_join(s->thread, NULL);
    while (atomic_load(&s->active) > 0) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < s->n; i++) free(s->files[i].data);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ---- checks on a download ---- */

/* 1 if dir/path holds exactly the server's bytes of that file. */
int srv_same(const char *dir, srv *s, const char *path) {
    char *p = base_path_join(dir, path);
    char *d;
    size_t n;
    int ok = base_read_file(p, &d, &n) == BASE_OK;
    free(p);
    if (!ok) return 0;
    srv_file *f = srv_find(s, path);
    ok = f && n == f->len && !memcmp(d, f->data, n);
    free(d);
    return ok;
}

int srv_exists(const char *dir, const char *path) {
    char *p = base_path_join(dir, path);
    int e = base_file_exists(p);
    free(p);
    return e;
}

long srv_fsize(const char *dir, const char *path) {
    char *p = base_path_join(dir, path);
    struct stat st;
    long n = stat(p, &st) == 0 ? (long)st.st_size : -1;
    free(p);
    return n;
}
