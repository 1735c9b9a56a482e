/*
 * hub: download a model repository from the Hugging Face Hub (or any server
 * speaking its HTTP API) into a plain directory that st_dir_open and
 * model_load read. libcurl for HTTP, OpenSSL's EVP for SHA-256 / SHA-1.
 *
 * The API used (huggingface_hub's own calls):
 *   GET {endpoint}/api/models/{repo}/revision/{rev}       -> {"sha": commit, ...}
 *   GET {endpoint}/api/models/{repo}/tree/{commit}?recursive=true
 *       -> [{"type": "file", "path", "size", "oid" (git blob SHA-1),
 *            "lfs": {"oid": SHA-256, "size"}}, ...], pages chained by a
 *       `Link: <url>; rel="next"` header
 *   GET {endpoint}/{repo}/resolve/{commit}/{path}           (redirects followed)
 * The revision is resolved to a commit once, so every file comes from the
 * same snapshot even if the branch moves during a long download.
 *
 * Files land in OUT/PATH.part (resumed with an HTTP Range request when
 * present), are checked (size; SHA-256 for LFS files, the git blob SHA-1 for
 * the others) and renamed onto OUT/PATH. A file already complete is skipped
 * (LFS: by size, or re-hashed with `verify`; others: always re-hashed, they
 * are small). A path in the listing that could write outside OUT (absolute,
 * `..`, control bytes, backslash, invalid UTF-8) refuses the whole download
 * before anything is written.
 *
 * Errors: every message names the repository, the file where there is one,
 * and the HTTP status; 5xx, 429 and connection failures (refused, reset,
 * timeout, truncated body) are retried with doubling back-off, other 4xx are
 * final. The token is sent only as `Authorization: Bearer` to the endpoint's
 * host (curl drops it on a redirect to another host) and never appears in a
 * message or log.
 */
#ifndef GRPO_IO_HUB_H
#define GRPO_IO_HUB_H

#include <stdint.h>

#include "base/base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HUB_DEFAULT_ENDPOINT "https://huggingface.co"

typedef struct {
    const char *endpoint; /* NULL: $HF_ENDPOINT, else HUB_DEFAULT_ENDPOINT */
    const char *token;    /* NULL: $HF_TOKEN, else the file $HF_HOME/token
                             (default ~/.cache/huggingface/token), else none */
    const char *revision; /* branch, tag or commit; NULL: "main" */
    const char *const *include; /* fnmatch globs (`*` matches `/` as in Python's
                                   fnmatch; "dir/" means "dir/x"); none: all */
    int n_include;
    const char *const *exclude;
    int n_exclude;
    int jobs;            /* files at once; <= 0: 4 */
    int verify;          /* re-hash LFS files that are already complete */
    int retries;         /* extra attempts on transient errors; < 0: 5 */
    double backoff_s;    /* first back-off; doubles; <= 0: 1 s */
    long timeout_s;      /* connect timeout and the longest stall of a
                            transfer (under 1 byte/s); <= 0: $HF_HUB_DOWNLOAD_TIMEOUT
                            or 10 s */
    int progress;        /* draw the progress line on stderr */
} hub_opts;

void hub_opts_default(hub_opts *o); /* all zero/NULL, progress on */

typedef struct {
    char *path;       /* relative, checked by hub_path_safe */
    int64_t size;     /* bytes */
    char oid[41];     /* git blob SHA-1, hex ("" if the listing gave none) */
    char sha256[65];  /* LFS files: SHA-256, hex; "" otherwise */
} hub_file;

typedef struct {
    char *commit; /* the resolved revision */
    hub_file *files;
    int n;
} hub_listing;

/* Resolve the revision and list the repository's files (every page),
 * keeping those the include/exclude globs select. Overwrites *out (free
 * with hub_listing_free, also after an error). */
base_status hub_list(const char *repo, const hub_opts *o, hub_listing *out);
void hub_listing_free(hub_listing *l);

typedef struct {
    int n_files;      /* selected by the filters */
    int n_fetched;    /* downloaded now */
    int n_skipped;    /* already complete */
    int n_failed;
    int64_t bytes;    /* downloaded now (resumed bytes not counted) */
    double seconds;
    int interrupted;  /* hub_interrupt was called: .part files kept */
} hub_result;

/* List, then download every selected file into out_dir (created). Files
 * fail independently: one failure does not stop the others; the message
 * (base_err_msg) then lists every failed file. *res (may be NULL) is
 * overwritten. */
base_status hub_fetch(const char *repo, const char *out_dir, const hub_opts *o, hub_result *res);

/* Async-signal-safe: ask a running hub_fetch to stop (transfers abort,
 * .part files stay for a later resume). */
void hub_interrupt(void);

/* 1 if a repository path is safe to create under a directory: relative,
 * no empty, "." or ".." component, no backslash, no byte < 0x20 or 0x7f,
 * valid UTF-8, at most 1024 bytes. */
int hub_path_safe(const char *path);
/* 1 if `repo` is "name" or "owner/name" with [A-Za-z0-9._-] parts, no "..",
 * "--" or leading/trailing "-" "." (the Hub's rule). */
int hub_repo_id_valid(const char *repo);
/* 1 if `path` is kept by the include/exclude globs of o. */
int hub_path_selected(const hub_opts *o, const char *path);

/* Hash a whole file: SHA-256 (hex_out 65 bytes) or the git blob SHA-1
 * ("blob SIZE\0" + bytes; hex_out 41 bytes). BASE_ERR_IO on a read error. */
base_status hub_sha256_file(const char *path, char *hex_out);
base_status hub_git_oid_file(const char *path, char *hex_out);

#ifdef __cplusplus
}
#endif

#endif
