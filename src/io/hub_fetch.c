/*
 * hub: downloading the listed files. One task per file on a thread pool of
 * `jobs` threads, one easy handle per attempt. A file goes to OUT/PATH.part,
 * hashed as it arrives (the bytes already in a .part are hashed first, so a
 * resumed 5 GB shard is not read twice), checked, fsync'd and renamed onto
 * OUT/PATH, then the directory is fsync'd.
 *
 * Resume: a .part of k bytes asks for `Range: bytes=k-`; 206 with
 * Content-Range starting at k appends; 200 (the server ignored the range)
 * truncates and starts over; 416 or a 206 at another offset drops the .part
 * and retries. A checksum mismatch deletes the .part; when the file was
 * resumed from an earlier run (whose bytes may come from another version),
 * it is downloaded once more from zero before giving up.
 */
#include "io/hub_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- hashing ------------------------------------------------------------------ */

typedef struct {
    EVP_MD_CTX *md;
    int git;      /* git blob SHA-1 (else SHA-256) */
    int64_t size; /* for the git header */
} hasher;

static void hasher_reset(hasher *h) {
    if (!h->md && !(h->md = EVP_MD_CTX_new())) base_die("EVP_MD_CTX_new failed");
    if (EVP_DigestInit_ex(h->md, h->git ? EVP_sha1() : EVP_sha256(), NULL) != 1) base_die("EVP_DigestInit_ex failed");
    if (h->git) {
        char head[48];
        int n = snprintf(head, sizeof head, "blob %lld", (long long)h->size);
        if (EVP_DigestUpdate(h->md, head, (size_t)n + 1) != 1) base_die("EVP_DigestUpdate failed"); /* with the NUL */
    }
}

static void hasher_add(hasher *h, const void *p, size_t n) {
    if (n && EVP_DigestUpdate(h->md, p, n) != 1) base_die("EVP_DigestUpdate failed");
}

static void hasher_hex(hasher *h, char *hex) {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(h->md, d, &n) != 1) base_die("EVP_DigestFinal_ex failed");
    for (unsigned i = 0; i < n; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    hex[2 * n] = 0;
}

static void hasher_free(hasher *h) {
    EVP_MD_CTX_free(h->md);
    h->md = NULL;
}

/* Hash the first n bytes of fd (from offset 0). */
static base_status hash_fd(hasher *h, int fd, int64_t n, const char *path) {
    size_t cap = (size_t)1 << 20;
    char *buf = base_xmalloc(cap);
    int64_t off = 0;
    while (off < n) {
        size_t want = (size_t)(n - off) < cap ? (size_t)(n - off) : cap;
        ssize_t r = pread(fd, buf, want, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            free(buf);
            return base_err_set(BASE_ERR_IO, "%s: read: %s", path, r < 0 ? base_strerror_now() : "unexpected end");
        }
        hasher_add(h, buf, (size_t)r);
        off += r;
    }
    free(buf);
    return BASE_OK;
}

static base_status hash_file(const char *path, int git, char *hex) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return base_err_set(BASE_ERR_IO, "%s: %s", path, base_strerror_now());
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return base_err_set(BASE_ERR_IO, "%s: %s", path, base_strerror_now());
    }
    hasher h = {NULL, git, (int64_t)st.st_size};
    hasher_reset(&h);
    base_status s = hash_fd(&h, fd, (int64_t)st.st_size, path);
    if (!s) hasher_hex(&h, hex);
    hasher_free(&h);
    close(fd);
    return s;
}

base_status hub_sha256_file(const char *path, char *hex_out) { return hash_file(path, 0, hex_out); }
base_status hub_git_oid_file(const char *path, char *hex_out) { return hash_file(path, 1, hex_out); }

/* ---- the job ------------------------------------------------------------------ */

typedef struct {
    const hub_ctx *c;
    const hub_listing *l;
    const char *out_dir;
    int verify;
    /* per file of l, by index: */
    char **err;   /* message of a failure, or NULL */
    int *skipped; /* already complete */
    int *untried; /* not attempted after an access error */
    atomic_int denied;   /* a file answered 401/403: the others would too */
    atomic_llong got;   /* bytes received this run */
    atomic_llong total; /* bytes to receive (grows when a file restarts) */
    atomic_int n_done;
    int progress;
    pthread_mutex_t mu;
    base_progress bar;
    double last_tick;
} job;

static void human(double b, char *out, size_t n) {
    const char *u[] = {"B", "kB", "MB", "GB", "TB"};
    int i = 0;
    while (b >= 1000 && i < 4) b /= 1000, i++;
    snprintf(out, n, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

/* Redraw the progress line (at most every 0.1 s, from whichever thread). */
static void tick(job *j, int force) {
    if (!j->progress || (!force && atomic_load(&j->total) == 0) || pthread_mutex_trylock(&j->mu) != 0) return;
    double now = base_now();
    if (force || now - j->last_tick >= 0.1) {
        j->last_tick = now;
        int64_t got = atomic_load(&j->got), total = atomic_load(&j->total);
        j->bar.total = total;
        char a[32], b[32], r[32];
        human((double)got, a, sizeof a);
        human((double)total, b, sizeof b);
        double el = now - j->bar.t0;
        human(el > 0 ? (double)got / el : 0, r, sizeof r);
        base_progress_update(&j->bar, got < total ? got : total, "%d/%d files, %s of %s, %s/s",
                             atomic_load(&j->n_done), j->l->n, a, b, r);
    }
    pthread_mutex_unlock(&j->mu);
}

/* ---- one attempt -------------------------------------------------------------- */

typedef struct {
    job *j;
    hub_resp *r;
    int fd;
    hasher *h;
    int64_t have, size;
    int checked, swallow, bad_offset, too_long, restarted, write_errno;
} xfer;

/* Truncate the .part to zero and restart the hash. */
static int part_reset(xfer *x) {
    if (ftruncate(x->fd, 0) < 0) {
        x->write_errno = errno;
        return -1;
    }
    atomic_fetch_add(&x->j->total, x->have);
    x->have = 0;
    hasher_reset(x->h);
    return 0;
}

/* First body bytes of the final response: decide append, restart or swallow. */
static int on_first(xfer *x) {
    x->checked = 1;
    if (x->r->code == 206) {
        if (x->r->range_start != x->have) {
            x->bad_offset = 1;
            return -1;
        }
    } else if (x->r->code == 200) {
        if (x->have > 0) { /* the server ignored the Range request */
            x->restarted = 1;
            if (part_reset(x)) return -1;
        }
    } else {
        x->swallow = 1; /* an error page: not file data */
    }
    return 0;
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud) {
    xfer *x = ud;
    size_t n = size * nmemb;
    if (!x->checked && on_first(x)) return 0;
    if (x->swallow) return n;
    if (x->have + (int64_t)n > x->size) {
        x->too_long = 1;
        return 0;
    }
    for (size_t off = 0; off < n;) {
        ssize_t w = pwrite(x->fd, p + off, n - off, (off_t)(x->have + (int64_t)off));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            x->write_errno = w < 0 ? errno : EIO;
            return 0;
        }
        off += (size_t)w;
    }
    hasher_add(x->h, p, n);
    x->have += (int64_t)n;
    atomic_fetch_add(&x->j->got, (long long)n);
    return n;
}

static int on_xfer(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
    (void)dt, (void)dn, (void)ut, (void)un;
    xfer *x = ud;
    tick(x->j, 0);
    return hub_stopped() ? 1 : 0; /* non-zero aborts the transfer */
}

enum { TRY_OK, TRY_AGAIN, TRY_FAIL, TRY_STOP };

/* One GET of the rest of file f into x (x->have bytes already there). On
 * TRY_AGAIN / TRY_FAIL the message is in the thread's error buffer. */
static int attempt(xfer *x, const hub_file *f, const char *url, const char *part) {
    job *j = x->j;
    const hub_ctx *c = j->c;
    struct curl_slist *hdrs;
    hub_resp r;
    CURL *h = hub_easy(c, url, &hdrs, &r);
    x->r = &r;
    x->checked = x->swallow = x->bad_offset = x->too_long = x->write_errno = 0;
    char range[48];
    if (x->have > 0) {
        snprintf(range, sizeof range, "%lld-", (long long)x->have);
        CHECK_CURL(curl_easy_setopt(h, CURLOPT_RANGE, range));
    }
    CHECK_CURL(curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write));
    CHECK_CURL(curl_easy_setopt(h, CURLOPT_WRITEDATA, x));
    CHECK_CURL(curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L));
    CHECK_CURL(curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_xfer));
    CHECK_CURL(curl_easy_setopt(h, CURLOPT_XFERINFODATA, x));
    CURLcode e = curl_easy_perform(h);
    if (e == CURLE_OK && !x->checked && (r.code == 200 || r.code == 206) && on_first(x)) e = CURLE_WRITE_ERROR;
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    x->r = NULL;
    const char *repo = c->repo;
    if (x->write_errno) {
        errno = x->write_errno;
        return base_err_set(BASE_ERR_IO, "%s: %s: write: %s", repo, part, base_strerror_now()), TRY_FAIL;
    }
    if (hub_stopped()) return TRY_STOP;
    if (x->too_long) {
        unlink(part);
        return base_err_set(BASE_ERR_INVALID, "%s: %s: the server sent more than the %lld bytes listed; deleted %s",
                            repo, f->path, (long long)f->size, part),
               TRY_FAIL;
    }
    if (x->bad_offset || (e == CURLE_OK && r.code == 416)) {
        long long at = (long long)x->have;
        if (part_reset(x)) {
            errno = x->write_errno;
            return base_err_set(BASE_ERR_IO, "%s: %s: truncate: %s", repo, part, base_strerror_now()), TRY_FAIL;
        }
        return base_err_set(BASE_ERR_IO, "%s: %s: the server did not resume at byte %lld (HTTP %ld); starting over",
                            repo, f->path, at, r.code),
               TRY_AGAIN;
    }
    if (e != CURLE_OK) {
        base_err_set(BASE_ERR_IO, "%s: %s: %s (%lld of %lld bytes)", repo, f->path, curl_easy_strerror(e),
                     (long long)x->have, (long long)f->size);
        return hub_transient_curl(e) ? TRY_AGAIN : TRY_FAIL;
    }
    if (r.code != 200 && r.code != 206) {
        if (hub_transient_http(r.code))
            return base_err_set(BASE_ERR_IO, "%s: %s: HTTP %ld", repo, f->path, r.code), TRY_AGAIN;
        if (r.code == 401 || r.code == 403) atomic_store(&j->denied, 1);
        hub_http_error(c, &r, f->path, NULL);
        return TRY_FAIL;
    }
    if (x->restarted) base_info("%s: %s: the server ignored the resume range: downloaded from the start", repo, f->path);
    if (x->have < x->size)
        return base_err_set(BASE_ERR_IO, "%s: %s: the connection ended after %lld of %lld bytes", repo, f->path,
                            (long long)x->have, (long long)x->size),
               TRY_AGAIN;
    return TRY_OK;
}

/* ---- one file ----------------------------------------------------------------- */

static base_status sync_rename(int fd, const char *part, const char *final) {
    if (fsync(fd) < 0) return base_err_set(BASE_ERR_IO, "%s: fsync: %s", part, base_strerror_now());
    if (rename(part, final) < 0) return base_err_set(BASE_ERR_IO, "rename %s: %s", part, base_strerror_now());
    char *dir = base_xstrdup(final);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd); /* some file systems refuse fsync on a directory */
        close(dfd);
    }
    free(dir);
    return BASE_OK;
}

static char *part_path(const char *final) {
    base_buf b = {0};
    base_buf_printf(&b, "%s.part", final);
    return b.data;
}

/* Download f into final (through final.part). */
static base_status get_file(job *j, const hub_file *f, const char *final) {
    const hub_ctx *c = j->c;
    char *part = part_path(final);
    char *slash = strrchr(part, '/');
    *slash = 0;
    base_status s = base_mkdir_p(part);
    *slash = '/';
    if (s) {
        base_err_wrap(s, "%s: %s", c->repo, f->path);
        free(part);
        return s;
    }
    int fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        s = base_err_set(BASE_ERR_IO, "%s: %s: %s", c->repo, part, base_strerror_now());
        free(part);
        return s;
    }
    hasher h = {NULL, !f->sha256[0], f->size};
    hasher_reset(&h);
    xfer x = {.j = j, .fd = fd, .h = &h, .size = f->size};
    struct stat st;
    if (fstat(fd, &st) < 0) {
        s = base_err_set(BASE_ERR_IO, "%s: %s", part, base_strerror_now());
        goto out;
    }
    x.have = (int64_t)st.st_size;
    if (x.have > f->size) {
        if (ftruncate(fd, 0) < 0) {
            s = base_err_set(BASE_ERR_IO, "%s: truncate: %s", part, base_strerror_now());
            goto out;
        }
        x.have = 0;
    }
    if (x.have > 0) {
        base_debug("%s: resuming at byte %lld", part, (long long)x.have);
        if ((s = hash_fd(&h, fd, x.have, part))) goto out;
    }
    int resumed = x.have > 0, fresh_retry = 0;
    char *rev = hub_escape(j->l->commit, 0), *path = hub_escape(f->path, 1);
    base_buf url = {0};
    base_buf_printf(&url, "%s/%s/resolve/%s/%s", c->endpoint, c->repo, rev, path);
    free(rev);
    free(path);
    double wait = c->backoff_s;
    /* a .part already whole (an earlier run stopped before the rename)
     * needs no request; an empty file still needs one, to exist */
    int fails = 0, need_get = !(x.have == f->size && f->size > 0);
    for (;; need_get = 1) {
        if (need_get) {
            int k = attempt(&x, f, url.data, part);
            if (k == TRY_STOP) {
                s = base_err_set(BASE_ERR_IO, "%s: %s: interrupted", c->repo, f->path);
                break;
            }
            if (k == TRY_FAIL) {
                s = BASE_ERR_IO;
                break;
            }
            if (k == TRY_AGAIN) {
                if (++fails > c->retries) {
                    char *m = base_xstrdup(base_err_msg());
                    s = base_err_set(BASE_ERR_IO, "%s (gave up after %d attempts)", m, fails);
                    free(m);
                    break;
                }
                base_info("%s; retrying in %.1f s (attempt %d of %d)", base_err_msg(), wait, fails + 1,
                          c->retries + 1);
                hub_sleep(wait);
                wait *= 2;
                continue;
            }
        }
        char want[65] = "", got[65];
        if (f->sha256[0]) memcpy(want, f->sha256, 65);
        else if (f->oid[0]) memcpy(want, f->oid, 41);
        hasher_hex(&h, got);
        if (!want[0] || !strcmp(want, got)) {
            s = sync_rename(fd, part, final);
            break;
        }
        unlink(part);
        if (resumed && !fresh_retry) {
            base_info("%s: %s: checksum mismatch after resuming an earlier .part: downloading it again from zero",
                      c->repo, f->path);
            fresh_retry = 1;
            if (part_reset(&x) == 0) {
                close(fd);
                fd = open(part, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
                x.fd = fd;
                if (fd >= 0) continue;
            }
            s = base_err_set(BASE_ERR_IO, "%s: %s", part, base_strerror_now());
            break;
        }
        s = base_err_set(BASE_ERR_INVALID,
                         "%s: %s: checksum mismatch: expected %s %s, got %s; deleted %s (other files are not "
                         "affected)",
                         c->repo, f->path, f->sha256[0] ? "SHA-256" : "git SHA-1", want, got, part);
        break;
    }
    base_buf_free(&url);
out:
    hasher_free(&h);
    if (fd >= 0) close(fd);
    free(part);
    return s;
}

/* 1 if final already holds f (by size; by hash for non-LFS files, and for
 * LFS files when verifying). */
static int complete(job *j, const hub_file *f, const char *final) {
    struct stat st;
    if (stat(final, &st) < 0 || !S_ISREG(st.st_mode) || (int64_t)st.st_size != f->size) return 0;
    if (f->sha256[0] && !j->verify) return 1;
    if (!f->sha256[0] && !f->oid[0]) return 1;
    char got[65];
    base_status s = hash_file(final, !f->sha256[0], got);
    if (s) {
        base_info("%s: cannot check it (%s): downloading it again", final, base_err_msg());
        return 0;
    }
    if (!strcmp(got, f->sha256[0] ? f->sha256 : f->oid)) return 1;
    base_info("%s: differs from the listing (hash %s): downloading it again", final, got);
    return 0;
}

static void task(void *ctx, int64_t i, int worker) {
    (void)worker;
    job *j = ctx;
    const hub_file *f = &j->l->files[i];
    char *final = base_path_join(j->out_dir, f->path);
    base_err_clear();
    if (hub_stopped()) {
        j->err[i] = base_xstrdup("interrupted");
    } else if (atomic_load(&j->denied)) {
        j->untried[i] = 1;
    } else if (complete(j, f, final)) {
        j->skipped[i] = 1;
    } else {
        struct stat st;
        if (stat(final, &st) == 0 && (int64_t)st.st_size == f->size) atomic_fetch_add(&j->total, f->size);
        if (get_file(j, f, final)) j->err[i] = base_xstrdup(base_err_msg());
    }
    atomic_fetch_add(&j->n_done, 1);
    tick(j, 0);
    free(final);
}

base_status hub_fetch(const char *repo, const char *out_dir, const hub_opts *o, hub_result *res) {
    hub_result rs;
    memset(&rs, 0, sizeof rs);
    double t0 = base_now();
    if (res) *res = rs;
    hub_ctx c;
    base_status s = hub_ctx_init(&c, repo, o);
    if (s) return s;
    hub_listing l;
    s = hub_list_ctx(&c, o, &l);
    if (s) goto done_list;
    rs.n_files = l.n;
    if (l.n == 0) {
        s = base_err_set(BASE_ERR_INVALID, "%s: no file at revision '%s' matches the include/exclude globs", repo,
                         c.revision);
        goto done_list;
    }
    if ((s = base_mkdir_p(out_dir))) {
        base_err_wrap(s, "%s: output directory", repo);
        goto done_list;
    }
    job j;
    memset(&j, 0, sizeof j);
    j.c = &c;
    j.l = &l;
    j.out_dir = out_dir;
    j.verify = o->verify;
    j.progress = o->progress;
    j.err = base_xcalloc((size_t)l.n + 1, sizeof *j.err);
    j.skipped = base_xcalloc((size_t)l.n + 1, sizeof *j.skipped);
    j.untried = base_xcalloc((size_t)l.n + 1, sizeof *j.untried);
    pthread_mutex_init(&j.mu, NULL);
    /* the bar's total: what is missing now, judged by size (a file found
     * stale when hashed adds its size later) */
    int64_t total = 0;
    for (int i = 0; i < l.n; i++) {
        const hub_file *f = &l.files[i];
        char *final = base_path_join(out_dir, f->path);
        struct stat st;
        if (stat(final, &st) == 0 && (int64_t)st.st_size == f->size) {
            free(final);
            continue;
        }
        char *part = part_path(final);
        int64_t have = stat(part, &st) == 0 && (int64_t)st.st_size <= f->size ? (int64_t)st.st_size : 0;
        total += f->size - have;
        free(part);
        free(final);
    }
    atomic_store(&j.total, total);
    if (j.progress) base_progress_start(&j.bar, "fetch", total);
    int jobs = o->jobs > 0 ? o->jobs : 4;
    if (jobs > l.n) jobs = l.n; /* l.n > 0 here */
    base_pool *pool = base_pool_create(jobs);
    base_pool_for(pool, l.n, task, &j);
    base_pool_destroy(pool);
    if (j.progress) {
        tick(&j, 1);
        base_progress_finish(&j.bar);
    }
    rs.bytes = atomic_load(&j.got);
    base_buf msg = {0};
    int shown = 0, untried = 0;
    for (int i = 0; i < l.n; i++) {
        if (j.skipped[i]) rs.n_skipped++;
        else if (j.untried[i]) rs.n_failed++, untried++;
        else if (j.err[i]) {
            rs.n_failed++;
            if (shown++ < 20) base_buf_printf(&msg, "\n  %s", j.err[i]);
        } else rs.n_fetched++;
        free(j.err[i]);
    }
    if (shown > 20) base_buf_printf(&msg, "\n  ... and %d more", shown - 20);
    if (untried) base_buf_printf(&msg, "\n  %d more file%s not attempted after the access error", untried,
                                 untried > 1 ? "s" : "");
    rs.interrupted = hub_stopped();
    if (rs.interrupted)
        s = base_err_set(BASE_ERR_IO, "%s: interrupted: partial files are kept as .part in %s; run the same command "
                                      "again to resume",
                         repo, out_dir);
    else if (rs.n_failed)
        s = base_err_set(BASE_ERR_IO, "%s: %d of %d files failed:%s", repo, rs.n_failed, rs.n_files, msg.data);
    base_buf_free(&msg);
    free(j.err);
    free(j.skipped);
    free(j.untried);
    pthread_mutex_destroy(&j.mu);
done_list:
    hub_listing_free(&l);
    hub_ctx_free(&c);
    rs.interrupted = hub_stopped();
    rs.seconds = base_now() - t0;
    if (res) *res = rs;
    return s;
}
