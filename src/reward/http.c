/*
 * HTTP POST of JSON through libcurl, for reward services (a judge model, a
 * remote sandbox). One easy handle per request (no shared state between
 * worker threads), CURLOPT_NOSIGNAL (threads), a timeout per attempt and
 * retries with doubling back-off on connection errors, timeouts, HTTP 429
 * and 5xx. Other 4xx answers are final. The response is capped.
 */
#include "reward/reward.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void) {
    CURLcode c = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (c != CURLE_OK) base_die("curl_global_init: %s", curl_easy_strerror(c));
}

void reward_http_opts_default(reward_http_opts *o) {
    memset(o, 0, sizeof *o);
    o->timeout_s = 30;
    o->retries = 2;
    o->backoff_s = 0.2;
    o->max_bytes = (size_t)16 << 20;
}

typedef struct {
    base_buf buf;
    size_t cap;
    int over;
} sink;

static size_t on_data(char *p, size_t size, size_t n, void *ud) {
    sink *s = ud;
    size_t len = size * n;
    if (s->buf.len + len > s->cap) {
        s->over = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    base_buf_append(&s->buf, p, len);
    return len;
}

static void sleep_s(double s) {
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

base_status reward_http_post_json(const char *url, const char *body, const reward_http_opts *o_in, char **resp,
                                  long *http_code) {
    *resp = NULL;
    if (http_code) *http_code = 0;
    if (!url || !body) return base_err_set(BASE_ERR_INVALID, "http_post_json: url and body are required");
    reward_http_opts o;
    if (o_in) o = *o_in;
    else reward_http_opts_default(&o);
    if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8))
        return base_err_set(BASE_ERR_INVALID, "http_post_json: %s: only http:// and https:// URLs", url);
    pthread_once(&g_curl_once, curl_init_once);
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, "Accept: application/json");
    for (int i = 0; i < o.n_headers; i++) hdr = curl_slist_append(hdr, o.headers[i]);
    if (!hdr) base_die("curl_slist_append: out of memory");

    char last[256] = "no attempt";
    long code = 0;
    double wait = o.backoff_s;
    int attempts = o.retries < 0 ? 1 : o.retries + 1;
    for (int a = 0; a < attempts; a++) {
        if (a > 0) {
            sleep_s(wait);
            wait *= 2;
        }
        CURL *h = curl_easy_init();
        if (!h) base_die("curl_easy_init failed");
        sink s = {{0}, o.max_bytes, 0};
        char errbuf[CURL_ERROR_SIZE] = {0};
        long ms = (long)(o.timeout_s * 1000);
        if (ms < 1) ms = 1;
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, ms);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, ms);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        CURLcode rc = curl_easy_perform(h);
        code = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_cleanup(h);
        if (rc == CURLE_OK && code >= 200 && code < 300) {
            curl_slist_free_all(hdr);
            if (http_code) *http_code = code;
            *resp = s.buf.data ? s.buf.data : base_xstrdup("");
            return BASE_OK;
        }
        int retry;
        if (s.over) {
            snprintf(last, sizeof last, "response larger than %zu bytes", o.max_bytes);
            retry = 0;
        } else if (rc != CURLE_OK) {
            snprintf(last, sizeof last, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
            retry = 1;
        } else {
            size_t n = s.buf.len < 120 ? s.buf.len : 120;
            snprintf(last, sizeof last, "HTTP %ld: %.*s", code, (int)n, s.buf.data ? s.buf.data : "");
            for (char *c = last; *c; c++)
                if (*c == '\n' || *c == '\r') *c = ' ';
            retry = code == 429 || code >= 500;
        }
        base_buf_free(&s.buf);
        if (!retry) {
            attempts = a + 1;
            break;
        }
    }
    curl_slist_free_all(hdr);
    if (http_code) *http_code = code;
    return base_err_set(BASE_ERR_IO, "POST %s: %s (after %d attempt%s)", url, last, attempts,
                        attempts == 1 ? "" : "s");
}
