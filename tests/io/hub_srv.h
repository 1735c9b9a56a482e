/*
 * A small HTTP/1.1 server speaking the part of the Hugging Face Hub API that
 * src/io/hub uses, for tests (no network in CI). It listens on 127.0.0.1, an
 * ephemeral port; one thread per connection, one request per connection.
 *
 *   GET /api/models/REPO/revision/REV          {"id", "sha": COMMIT}
 *   GET /api/models/REPO/tree/COMMIT?recursive=true[&cursor=K]
 *                                               page_size entries a page, Link rel="next"
 *   GET /REPO/resolve/COMMIT/PATH               the file, or for an LFS file a 302 to
 *                                               http://localhost:PORT/cdn/PATH when cdn_redirect
 *   GET /cdn/PATH                               the file (records whether a token came along)
 *
 * Files honour `Range: bytes=A-` (206) unless told to ignore it, and carry
 * injectable faults. Fault counters count down, one per request.
 */
#ifndef TEST_HUB_SRV_H
#define TEST_HUB_SRV_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

typedef struct {
    char path[256];
    unsigned char *data; /* owned */
    size_t len;
    int lfs;
    /* faults */
    int fail500;      /* the next N requests answer fail_status (default 500) */
    int fail_status;
    int short_listed; /* the listing gives a size 1 byte short */
    int bad_offset;   /* answer a Range request with 206 from byte 0 */
    int delay_ms;     /* wait before answering */
    int reset;        /* the next N requests send half the body, then a TCP reset */
    int refuse_range; /* answer the next Range request with 416 */
    int truncate;     /* the next N requests send half the body, then close */
    int stall;        /* the next N requests send half the body, then stall (up to 8 s) */
    int ignore_range; /* answer 200 with everything even to a Range request */
    int wrong_hash;   /* the listing advertises a wrong SHA-256 (LFS) or git SHA-1 */
    int status;       /* answer this status to every request (0: none) */
    /* what the server saw */
    int requests, range_requests;
    long last_range_start;
} srv_file;

typedef struct {
    int fd, port;
    char url[64]; /* http://127.0.0.1:PORT */
    pthread_t thread;
    atomic_int stop, active;
    pthread_mutex_t mu; /* guards the counters and faults below */
    char repo[64];
    char commit[41];
    srv_file files[16];
    int n;
    int page_size;        /* tree entries per page (0: all on one) */
    const char *token;    /* required "Bearer TOKEN" (NULL: none) */
    int gated;            /* without the token: 403 GatedRepo (else 401 RepoNotFound) */
    const char *bad_path; /* raw JSON string text added to the listing */
    int cdn_redirect;
    int api_fail500;      /* the next N revision requests answer 500 */
    int foreign_next;     /* the first page's next link points to another host */
    /* what the server saw */
    int in_flight, max_in_flight; /* file answers under way at once */
    int hold_in_flight;           /* > 0: a file answer waits (up to 10 s) until this many are under way */
    int cdn_requests, cdn_with_auth, auth_ok_requests, tree_pages, revision_requests, resolve_other_rev;
} srv;

/* Start on 127.0.0.1:0 with repo "org/tiny" and no files. Dies on failure. */
srv *srv_start(void);
/* Add a file (data copied). Returns it, to set faults. */
srv_file *srv_add(srv *s, const char *path, const void *data, size_t len, int lfs);
srv_file *srv_find(srv *s, const char *path);
/* "http://127.0.0.1:PORT" in a static buffer of s. */
const char *srv_url(srv *s);
void srv_stop(srv *s); /* joins every thread, frees */

/* 1 if dir/path holds exactly the server's bytes of that file. */
int srv_same(const char *dir, srv *s, const char *path);
int srv_exists(const char *dir, const char *path);
long srv_fsize(const char *dir, const char *path); /* -1 if absent */

#endif
