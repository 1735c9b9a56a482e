/*
 * hub: the repository listing. Resolves the revision to a commit, reads the
 * tree API page by page (Link rel="next"), checks every path before anything
 * is written, and applies the include/exclude globs.
 */
#include "io/hub_internal.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

/* ---- names ------------------------------------------------------------------ */

static int utf8_valid(const unsigned char *s) {
    while (*s) {
        int n = *s < 0x80 ? 0 : (*s >> 5) == 6 ? 1 : (*s >> 4) == 14 ? 2 : (*s >> 3) == 30 ? 3 : -1;
        if (n < 0) return 0;
        unsigned cp = n == 0 ? *s : n == 1 ? (*s & 0x1fu) : n == 2 ? (*s & 0x0fu) : (*s & 0x07u);
        s++;
        for (int i = 0; i < n; i++, s++) {
            if ((*s & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (*s & 0x3fu);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0; /* overlong forms and surrogates */
    }
    return 1;
}

int hub_path_safe(const char *path) {
    size_t n = strlen(path);
    if (n == 0 || n > 1024 || path[0] == '/') return 0;
    for (const unsigned char *p = (const unsigned char *)path; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == '\\') return 0;
    if (!utf8_valid((const unsigned char *)path)) return 0;
    const char *seg = path;
    for (;;) {
        const char *e = strchr(seg, '/');
        size_t len = e ? (size_t)(e - seg) : strlen(seg);
        if (len == 0 || (len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.')) return 0;
        if (!e) return 1;
        seg = e + 1;
    }
}

static int name_part_ok(const char *s, size_t n) {
    if (n == 0 || n > 96) return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                 ch == '_' || ch == '.';
        if (!ok) return 0;
        if (i + 1 < n && (ch == '-' || ch == '.') && (s[i + 1] == '-' || s[i + 1] == '.')) return 0;
    }
    return !(s[0] == '-' || s[0] == '.' || s[n - 1] == '-' || s[n - 1] == '.');
}

int hub_repo_id_valid(const char *repo) {
    if (!repo) return 0;
    const char *slash = strchr(repo, '/');
    if (!slash) return name_part_ok(repo, strlen(repo));
    if (strchr(slash + 1, '/')) return 0;
    return name_part_ok(repo, (size_t)(slash - repo)) && name_part_ok(slash + 1, strlen(slash + 1));
}

/* huggingface_hub's filter: a pattern ending in '/' stands for everything
 * under it; `*` crosses '/' (Python fnmatch, i.e. no FNM_PATHNAME). */
static int glob_match(const char *pat, const char *path) {
    size_t n = strlen(pat);
    if (n && pat[n - 1] == '/') {
        char *p = base_xmalloc(n + 2);
        memcpy(p, pat, n);
        p[n] = '*';
        p[n + 1] = 0;
        int m = fnmatch(p, path, 0) == 0;
        free(p);
        return m;
    }
    return fnmatch(pat, path, 0) == 0;
}

int hub_path_selected(const hub_opts *o, const char *path) {
    if (o->n_include > 0) {
        int any = 0;
        for (int i = 0; i < o->n_include && !any; i++) any = glob_match(o->include[i], path);
        if (!any) return 0;
    }
    for (int i = 0; i < o->n_exclude; i++)
        if (glob_match(o->exclude[i], path)) return 0;
    return 1;
}

/* ---- JSON over HTTP ----------------------------------------------------------- */

#define MAX_JSON ((size_t)256 << 20)

typedef struct {
    base_buf b;
    int over;
} sink;

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
    sink *s = ud;
    size_t len = size * n;
    if (s->b.len + len > MAX_JSON) {
        s->over = 1;
        return 0;
    }
    base_buf_append(&s->b, p, len);
    return len;
}

/* GET url and parse its JSON body, with retries. `what` names the call in
 * messages. *next (may be NULL) receives the Link rel="next" URL or "". */
static base_status get_json(const hub_ctx *c, const char *url, const char *what, cJSON **out, char *next,
                            size_t next_cap) {
    *out = NULL;
    double wait = c->backoff_s;
    char last[512] = "";
    for (int a = 0; a <= c->retries; a++) {
        if (a) {
            base_info("%s: %s: %s; retrying in %.1f s (attempt %d of %d)", c->repo, what, last, wait, a + 1,
                      c->retries + 1);
            hub_sleep(wait);
            wait *= 2;
        }
        if (hub_stopped()) return base_err_set(BASE_ERR_IO, "%s: %s: interrupted", c->repo, what);
        struct curl_slist *hdrs;
        hub_resp r;
        CURL *h = hub_easy(c, url, &hdrs, &r);
        sink s = {{0}, 0};
        CHECK_CURL(curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body));
        CHECK_CURL(curl_easy_setopt(h, CURLOPT_WRITEDATA, &s));
        CHECK_CURL(curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, ""));
        CURLcode e = curl_easy_perform(h);
        long code = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_cleanup(h);
        curl_slist_free_all(hdrs);
        r.code = code;
        if (e != CURLE_OK) {
            base_buf_free(&s.b);
            if (s.over) return base_err_set(BASE_ERR_LIMIT, "%s: %s: answer over %zu bytes", c->repo, what, MAX_JSON);
            snprintf(last, sizeof last, "%s", curl_easy_strerror(e));
            if (hub_transient_curl(e)) continue;
            return base_err_set(BASE_ERR_IO, "%s: %s: %s", c->repo, what, last);
        }
        if (code != 200) {
            base_buf_free(&s.b);
            if (hub_transient_http(code)) {
                snprintf(last, sizeof last, "HTTP %ld", code);
                continue;
            }
            return hub_http_error(c, &r, NULL, what);
        }
        /* cJSON would cut a string at an escaped NUL, turning "a\u0000/../x"
         * into "a": refuse any NUL instead of guessing */
        if (s.b.data && (strstr(s.b.data, "\\u0000") || memchr(s.b.data, 0, s.b.len))) {
            base_buf_free(&s.b);
            return base_err_set(BASE_ERR_INVALID, "%s: %s: the answer holds a NUL character: refusing it", c->repo,
                                what);
        }
        base_status st = base_json_parse(s.b.data ? s.b.data : "", s.b.len, what, out);
        base_buf_free(&s.b);
        if (st) return base_err_wrap(st, "%s", c->repo);
        if (next) snprintf(next, next_cap, "%s", r.next);
        return BASE_OK;
    }
    return base_err_set(BASE_ERR_IO, "%s: %s: %s (gave up after %d attempts)", c->repo, what, last, c->retries + 1);
}

/* ---- the listing -------------------------------------------------------------- */

static int is_hex(const char *s, size_t n) {
    if (strlen(s) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

/* One tree entry into l (files only; directories skipped). */
static base_status add_entry(const hub_ctx *c, const hub_opts *o, const cJSON *e, hub_listing *l, int *cap,
                             const char *what) {
    if (!cJSON_IsObject(e)) return base_err_set(BASE_ERR_PARSE, "%s: %s: an entry is not an object", c->repo, what);
    const char *type = base_json_str(e, "type", "");
    const cJSON *pj = cJSON_GetObjectItemCaseSensitive(e, "path");
    if (!cJSON_IsString(pj)) return base_err_set(BASE_ERR_PARSE, "%s: %s: an entry has no \"path\"", c->repo, what);
    const char *path = pj->valuestring;
    if (!hub_path_safe(path)) {
        char shown[200];
        size_t k = 0;
        for (const unsigned char *p = (const unsigned char *)path; *p && k + 5 < sizeof shown; p++)
            k += (size_t)snprintf(shown + k, sizeof shown - k, *p >= 0x20 && *p < 0x7f ? "%c" : "\\x%02x", *p);
        return base_err_set(BASE_ERR_INVALID,
                            "%s: the listing has the unsafe path \"%s\" (absolute, '..', empty part or odd "
                            "character): refusing to download anything",
                            c->repo, shown);
    }
    if (!strcmp(type, "directory")) return BASE_OK;
    if (strcmp(type, "file"))
        return base_err_set(BASE_ERR_PARSE, "%s: %s: \"%s\" has type \"%s\"", c->repo, what, path, type);
    int found;
    int64_t size = base_json_int(e, "size", -1, &found);
    if (!found || size < 0)
        return base_err_set(BASE_ERR_PARSE, "%s: %s: \"%s\" has no valid \"size\"", c->repo, what, path);
    const char *oid = base_json_str(e, "oid", "");
    const cJSON *lfs = cJSON_GetObjectItemCaseSensitive(e, "lfs");
    const char *sha = "";
    if (lfs && !cJSON_IsNull(lfs)) {
        sha = base_json_str(lfs, "oid", "");
        int64_t lsize = base_json_int(lfs, "size", -1, &found);
        if (!is_hex(sha, 64) || !found || lsize != size)
            return base_err_set(BASE_ERR_PARSE, "%s: %s: \"%s\": malformed \"lfs\" (oid must be 64 hex digits, size %lld)",
                                c->repo, what, path, (long long)size);
    }
    if (!hub_path_selected(o, path)) return BASE_OK;
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->files[i].path, path))
            return base_err_set(BASE_ERR_PARSE, "%s: %s: \"%s\" listed twice", c->repo, what, path);
    if (l->n == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        l->files = base_xrealloc(l->files, (size_t)*cap * sizeof *l->files);
    }
    hub_file *f = &l->files[l->n++];
    memset(f, 0, sizeof *f);
    f->path = base_xstrdup(path);
    f->size = size;
    if (is_hex(oid, 40)) memcpy(f->oid, oid, 41);
    if (*sha) memcpy(f->sha256, sha, 65);
    return BASE_OK;
}

static int cmp_file(const void *a, const void *b) {
    return strcmp(((const hub_file *)a)->path, ((const hub_file *)b)->path);
}

base_status hub_list_ctx(const hub_ctx *c, const hub_opts *o, hub_listing *out) {
    memset(out, 0, sizeof *out);
    char *rev = hub_escape(c->revision, 0);
    base_buf url = {0};
    base_buf_printf(&url, "%s/api/models/%s/revision/%s", c->endpoint, c->repo, rev);
    free(rev);
    cJSON *info;
    base_status s = get_json(c, url.data, "revision", &info, NULL, 0);
    base_buf_free(&url);
    if (s) return s;
    const char *sha = base_json_str(info, "sha", "");
    if (!is_hex(sha, 40)) {
        cJSON_Delete(info);
        return base_err_set(BASE_ERR_PARSE, "%s: revision '%s': the answer has no 40-digit \"sha\"", c->repo,
                            c->revision);
    }
    out->commit = base_xstrdup(sha);
    cJSON_Delete(info);

    base_buf_printf(&url, "%s/api/models/%s/tree/%s?recursive=true", c->endpoint, c->repo, out->commit);
    char *next = base_xmalloc(2048);
    int cap = 0;
    for (int page = 1;; page++) {
        char what[64];
        snprintf(what, sizeof what, "file list page %d", page);
        cJSON *arr;
        s = get_json(c, url.data, what, &arr, next, 2048);
        if (s) break;
        if (!cJSON_IsArray(arr)) {
            cJSON_Delete(arr);
            s = base_err_set(BASE_ERR_PARSE, "%s: %s: not a JSON array", c->repo, what);
            break;
        }
        const cJSON *e;
        cJSON_ArrayForEach(e, arr) {
            if ((s = add_entry(c, o, e, out, &cap, what))) break;
        }
        cJSON_Delete(arr);
        if (s || !*next) break;
        /* the token goes with every page: follow only links to the endpoint */
        size_t el = strlen(c->endpoint);
        if (strncmp(next, c->endpoint, el) || next[el] != '/') {
            s = base_err_set(BASE_ERR_INVALID, "%s: %s: the next-page link leaves %s: refusing it", c->repo, what,
                             c->endpoint);
            break;
        }
        if (page >= 100000 || !strcmp(next, url.data)) {
            s = base_err_set(BASE_ERR_PARSE, "%s: %s: the next-page links loop", c->repo, what);
            break;
        }
        base_buf_reset(&url);
        base_buf_puts(&url, next);
    }
    free(next);
    base_buf_free(&url);
    if (!s && out->n > 1) qsort(out->files, (size_t)out->n, sizeof *out->files, cmp_file);
    return s;
}

base_status hub_list(const char *repo, const hub_opts *o, hub_listing *out) {
    memset(out, 0, sizeof *out);
    hub_ctx c;
    base_status s = hub_ctx_init(&c, repo, o);
    if (s) return s;
    s = hub_list_ctx(&c, o, out);
    hub_ctx_free(&c);
    return s;
}

void hub_listing_free(hub_listing *l) {
    for (int i = 0; i < l->n; i++) free(l->files[i].path);
    free(l->files);
    free(l->commit);
    memset(l, 0, sizeof *l);
}
