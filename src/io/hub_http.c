/*
 * hub: settings (endpoint, token, limits), the common libcurl handle set-up,
 * which failures are retried, and the error messages for HTTP statuses.
 */
#include "io/hub_internal.h"

#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static atomic_int g_stop;

void hub_interrupt(void) { atomic_store(&g_stop, 1); }
int hub_stopped(void) { return atomic_load(&g_stop); }

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) {
    CURLcode e = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (e != CURLE_OK) base_die("curl_global_init: %s", curl_easy_strerror(e));
}
void hub_curl_init(void) { pthread_once(&g_once, curl_init_once); }

void hub_opts_default(hub_opts *o) {
    memset(o, 0, sizeof *o);
    o->retries = -1;
    o->progress = 1;
}

void hub_sleep(double s) {
    double end = base_now() + s;
    while (!hub_stopped()) {
        double left = end - base_now();
        if (left <= 0) return;
        if (left > 0.05) left = 0.05;
        struct timespec ts = {0, (long)(left * 1e9)};
        nanosleep(&ts, NULL);
    }
}

/* Strip surrounding white space in place. */
static char *trim(char *s) {
    while (*s && isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

/* The token: o->token, $HF_TOKEN, $HF_HOME/token (default
 * $XDG_CACHE_HOME/huggingface or ~/.cache/huggingface), as huggingface_hub
 * looks for it. *out malloc'd or NULL when there is none. */
static base_status find_token(const hub_opts *o, char **out) {
    *out = NULL;
    const char *t = o->token ? o->token : getenv("HF_TOKEN");
    char *owned = NULL;
    if (!t || !*t) {
        char *dir = NULL;
        const char *hf_home = getenv("HF_HOME"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
        if (hf_home && *hf_home) dir = base_xstrdup(hf_home);
        else if (xdg && *xdg) dir = base_path_join(xdg, "huggingface");
        else if (home && *home) dir = base_path_join(home, ".cache/huggingface");
        if (dir) {
            char *path = base_path_join(dir, "token");
            size_t len;
            if (base_file_exists(path) && base_read_file(path, &owned, &len) != BASE_OK) {
                base_status s = base_err_wrap(BASE_ERR_IO, "reading the Hugging Face token");
                free(path);
                free(dir);
                return s;
            }
            free(path);
            free(dir);
        }
        t = owned;
    }
    if (!t) return BASE_OK;
    char *copy = base_xstrdup(t);
    free(owned);
    char *tt = trim(copy);
    for (const char *p = tt; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            free(copy);
            return base_err_set(BASE_ERR_INVALID, "the Hugging Face token contains control characters");
        }
    if (*tt) *out = base_xstrdup(tt);
    free(copy);
    return BASE_OK;
}

base_status hub_ctx_init(hub_ctx *c, const char *repo, const hub_opts *o) {
    memset(c, 0, sizeof *c);
    if (!hub_repo_id_valid(repo))
        return base_err_set(BASE_ERR_INVALID, "'%s' is not a repository id (owner/name, letters, digits, '-', '_', '.')",
                            repo ? repo : "(null)");
    c->repo = repo;
    c->revision = o->revision && *o->revision ? o->revision : "main";
    const char *ep = o->endpoint ? o->endpoint : getenv("HF_ENDPOINT");
    if (!ep || !*ep) ep = HUB_DEFAULT_ENDPOINT;
    if (strncmp(ep, "http://", 7) && strncmp(ep, "https://", 8))
        return base_err_set(BASE_ERR_INVALID, "endpoint '%s': only http:// and https:// URLs", ep);
    for (const char *p = ep; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return base_err_set(BASE_ERR_INVALID, "endpoint '%s': space or control character", ep);
    c->endpoint = base_xstrdup(ep);
    size_t n = strlen(c->endpoint);
    while (n > 8 && c->endpoint[n - 1] == '/') c->endpoint[--n] = 0;
    char *tok;
    base_status s = find_token(o, &tok);
    if (s) {
        hub_ctx_free(c);
        return s;
    }
    if (tok) {
        base_buf b = {0};
        base_buf_printf(&b, "Authorization: Bearer %s", tok);
        c->auth = b.data;
        memset(tok, 0, strlen(tok));
        free(tok);
    }
    c->retries = o->retries < 0 ? 5 : o->retries;
    c->backoff_s = o->backoff_s > 0 ? o->backoff_s : 1.0;
    c->timeout_s = o->timeout_s;
    if (c->timeout_s <= 0) {
        const char *e = getenv("HF_HUB_DOWNLOAD_TIMEOUT");
        c->timeout_s = e && atol(e) > 0 ? atol(e) : 10;
    }
    return BASE_OK;
}

void hub_ctx_free(hub_ctx *c) {
    free(c->endpoint);
    if (c->auth) {
        memset(c->auth, 0, strlen(c->auth));
        free(c->auth);
    }
    memset(c, 0, sizeof *c);
}

/* Copy a header value, dropping control bytes (a server's text reaches the
 * terminal). */
static void copy_value(char *dst, size_t cap, const char *v, size_t n) {
    while (n && (*v == ' ' || *v == '\t')) v++, n--;
    while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ')) n--;
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++)
        if ((unsigned char)v[i] >= 0x20 && v[i] != 0x7f) dst[o++] = v[i];
    dst[o] = 0;
}

/* Link: <url1>; rel="prev", <url2>; rel="next" */
static void parse_link(hub_resp *r, const char *v, size_t n) {
    char buf[4096];
    copy_value(buf, sizeof buf, v, n);
    for (char *p = buf; (p = strchr(p, '<'));) {
        char *e = strchr(p, '>');
        if (!e) return;
        char *next_lt = strchr(e, '<');
        char *rel = strstr(e, "rel=\"next\"");
        if (!rel) rel = strstr(e, "rel=next");
        if (rel && (!next_lt || rel < next_lt)) {
            size_t len = (size_t)(e - p - 1);
            if (len < sizeof r->next) {
                memcpy(r->next, p + 1, len);
                r->next[len] = 0;
            }
            return;
        }
        p = e;
    }
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud) {
    hub_resp *r = ud;
    size_t n = size * nmemb;
    if (n >= 5 && !strncmp(p, "HTTP/", 5)) { /* a new response (redirect hop) */
        memset(r, 0, sizeof *r);
        r->range_start = -1;
        const char *sp = memchr(p, ' ', n);
        if (sp) r->code = strtol(sp + 1, NULL, 10);
        return n;
    }
    const char *colon = memchr(p, ':', n);
    if (!colon) return n;
    size_t klen = (size_t)(colon - p), vlen = n - klen - 1;
    const char *v = colon + 1;
#define IS(name) (klen == sizeof(name) - 1 && !strncasecmp(p, name, klen))
    if (IS("x-error-code")) copy_value(r->err_code, sizeof r->err_code, v, vlen);
    else if (IS("x-error-message")) copy_value(r->err_msg, sizeof r->err_msg, v, vlen);
    else if (IS("link")) parse_link(r, v, vlen);
    else if (IS("content-range")) {
        char buf[128];
        copy_value(buf, sizeof buf, v, vlen);
        long long a;
        if (sscanf(buf, "bytes %lld-", &a) == 1) r->range_start = a;
    }
#undef IS
    return n;
}

CURL *hub_easy(const hub_ctx *c, const char *url, struct curl_slist **hdrs, hub_resp *r) {
    hub_curl_init();
    CURL *h = curl_easy_init();
    if (!h) base_die("curl_easy_init failed");
    memset(r, 0, sizeof *r);
    r->range_start = -1;
    *hdrs = NULL;
    if (c->auth) {
        *hdrs = curl_slist_append(NULL, c->auth);
        if (!*hdrs) base_die("curl_slist_append: out of memory");
    }
    CHECK_CURL(curl_easy_setopt(h, CURLOPT_URL, url));
    CHECK_CURL(curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L));
    CHECK_CURL(curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L));
    CHECK_CURL(curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L));
    /* curl sends a custom Authorization header only to the first host: the
     * Hub's redirects to its CDN (signed URLs) never see the token. */
    CHECK_CURL(curl_easy_setopt(h, CURLOPT_UNRESTRICTED_AUTH, 0L));
    CHECK_CURL(curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https"));
    CHECK_CURL(curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https"));
    CHECK_CURL(curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, c->timeout_s));
    /* a stall (under 1 byte/s for timeout_s) aborts the attempt: never hang */
    CHECK_CURL(curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L));
    CHECK_CURL(curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, c->timeout_s));
    CHECK_CURL(curl_easy_setopt(h, CURLOPT_USERAGENT, "grpo/0.1 (hub fetch; libcurl)"));
    CHECK_CURL(curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header));
    CHECK_CURL(curl_easy_setopt(h, CURLOPT_HEADERDATA, r));
    if (*hdrs) CHECK_CURL(curl_easy_setopt(h, CURLOPT_HTTPHEADER, *hdrs));
    return h;
}

int hub_transient_curl(CURLcode e) {
    switch (e) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return 1;
    default:
        return 0;
    }
}

int hub_transient_http(long code) { return code == 429 || code == 408 || code >= 500; }

base_status hub_http_error(const hub_ctx *c, const hub_resp *r, const char *file, const char *api) {
    long code = r->code;
    char srv[300] = "";
    if (r->err_msg[0]) snprintf(srv, sizeof srv, " (server: %s)", r->err_msg);
    char what[1200];
    if (file || api) snprintf(what, sizeof what, "%s: %s", c->repo, file ? file : api);
    else snprintf(what, sizeof what, "%s", c->repo);
    if (code == 401 || code == 403) {
        if (!strcmp(r->err_code, "GatedRepo"))
            return base_err_set(BASE_ERR_INVALID,
                                "%s: HTTP %ld: gated repository: accept its licence at %s/%s while logged in, "
                                "then pass a token of that account (--token, $HF_TOKEN or $HF_HOME/token)%s",
                                what, code, c->endpoint, c->repo, srv);
        if (!c->auth)
            return base_err_set(BASE_ERR_INVALID,
                                "%s: HTTP %ld: the repository is private, gated or does not exist: if it exists, "
                                "accept its licence at %s/%s and pass a token (--token, $HF_TOKEN or "
                                "$HF_HOME/token)%s",
                                what, code, c->endpoint, c->repo, srv);
        return base_err_set(BASE_ERR_INVALID,
                            "%s: HTTP %ld: access denied with the token given: the token is invalid, or the "
                            "repository is private, gated (accept its licence at %s/%s) or does not exist%s",
                            what, code, c->endpoint, c->repo, srv);
    }
    if (code == 404) {
        if (!strcmp(r->err_code, "RevisionNotFound"))
            return base_err_set(BASE_ERR_INVALID, "%s: HTTP 404: revision '%s' not found%s", what, c->revision,
                                srv);
        if (!strcmp(r->err_code, "RepoNotFound"))
            return base_err_set(BASE_ERR_INVALID, "%s: HTTP 404: repository not found%s", what, srv);
        if (file)
            return base_err_set(BASE_ERR_INVALID, "%s: HTTP 404: file not found at revision '%s'%s", what,
                                c->revision, srv);
        return base_err_set(BASE_ERR_INVALID, "%s: HTTP 404: repository or revision '%s' not found%s", what,
                            c->revision, srv);
    }
    if (code == 416)
        return base_err_set(BASE_ERR_IO, "%s: HTTP 416: the server refused the resume range%s", what, srv);
    return base_err_set(code >= 400 && code < 500 ? BASE_ERR_INVALID : BASE_ERR_IO, "%s: HTTP %ld%s", what, code,
                        srv);
}

char *hub_escape(const char *s, int keep_slash) {
    static const char hex[] = "0123456789ABCDEF";
    base_buf b = {0};
    base_buf_puts(&b, "");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int plain = isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~' || (keep_slash && *p == '/');
        if (plain) base_buf_append(&b, p, 1);
        else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            base_buf_append(&b, e, 3);
        }
    }
    return b.data;
}
