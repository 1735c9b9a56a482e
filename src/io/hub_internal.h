/*
 * Private to src/io/hub_*.c: the resolved settings of one hub session and
 * the HTTP helpers shared by the listing and the downloads.
 */
#ifndef GRPO_IO_HUB_INTERNAL_H
#define GRPO_IO_HUB_INTERNAL_H

#include <curl/curl.h>
#include <stdatomic.h>

#include "io/hub.h"

typedef struct {
    char *endpoint;   /* no trailing '/' */
    char *auth;       /* "Authorization: Bearer TOKEN" or NULL; never logged */
    const char *repo;
    const char *revision;
    int retries;
    double backoff_s;
    long timeout_s;
} hub_ctx;

/* Check the repository id, then resolve endpoint, token and limits from o
 * and the environment. */
base_status hub_ctx_init(hub_ctx *c, const char *repo, const hub_opts *o);
void hub_ctx_free(hub_ctx *c);

/* hub_list with a resolved ctx (hub_fetch lists and downloads with one).
 * Overwrites *out (free with hub_listing_free, also after an error). */
base_status hub_list_ctx(const hub_ctx *c, const hub_opts *o, hub_listing *out);

/* Headers of the final response that the hub code reads. */
typedef struct {
    long code;
    char err_code[64];  /* X-Error-Code */
    char err_msg[256];  /* X-Error-Message, control bytes removed */
    char next[2048];    /* Link rel="next" URL */
    int64_t range_start; /* Content-Range start, -1 if none */
} hub_resp;

/* A configured easy handle for url: redirects (http/https only), timeouts,
 * the auth header (*hdrs, freed by the caller with curl_slist_free_all), the
 * header callback filling *r (reset at every status line, so it describes
 * the last response of a redirect chain). */
CURL *hub_easy(const hub_ctx *c, const char *url, struct curl_slist **hdrs, hub_resp *r);

/* 1 for failures worth another attempt. */
int hub_transient_curl(CURLcode e);
int hub_transient_http(long code);

/* Set the message for an HTTP error status: names the repo, the file
 * (may be NULL for API calls), the status, and what to do (token,
 * licence); `api` names an API call instead of a file ("revision").
 * Returns BASE_ERR_INVALID for 4xx, BASE_ERR_IO otherwise. */
base_status hub_http_error(const hub_ctx *c, const hub_resp *r, const char *file, const char *api);

/* "a%20b/c" : each segment escaped, '/' kept when keep_slash. malloc'd. */
char *hub_escape(const char *s, int keep_slash);

/* Sleep s seconds in short steps, returning early once hub_stopped(). */
void hub_sleep(double s);
int hub_stopped(void);

/* One-time curl_global_init (thread-safe). */
void hub_curl_init(void);

#endif
