/*
 * Errors and logging. The per-thread error buffer carries the message of the
 * last recoverable failure up to whoever decides what to do with it.
 */
#include "base.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static _Thread_local char err_buf[1024];
static _Thread_local char errno_buf[256];
static int log_level = -1;

const char *base_status_str(base_status s) {
    switch (s) {
    case BASE_OK: return "ok";
    case BASE_ERR_IO: return "I/O error";
    case BASE_ERR_PARSE: return "parse error";
    case BASE_ERR_INVALID: return "invalid";
    case BASE_ERR_UNSUPPORTED: return "unsupported";
    case BASE_ERR_NOMEM: return "out of memory";
    case BASE_ERR_LIMIT: return "limit exceeded";
    case BASE_ERR_EOF: return "end of input";
    case BASE_ERR_INTERRUPTED: return "interrupted";
    }
    return "unknown status";
}

base_status base_err_set(base_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return s;
}

base_status base_err_wrap(base_status s, const char *fmt, ...) {
    char prefix[512], old[sizeof err_buf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_buf, sizeof old);
    size_t np = strlen(prefix);
    if (np > sizeof err_buf - 3) np = sizeof err_buf - 3;
    memcpy(err_buf, prefix, np);
    memcpy(err_buf + np, ": ", 2);
    size_t room = sizeof err_buf - np - 3, no = strlen(old);
    if (no > room) no = room;
    memcpy(err_buf + np + 2, old, no);
    err_buf[np + 2 + no] = 0;
    return s;
}

const char *base_err_msg(void) { return err_buf; }
void base_err_clear(void) { err_buf[0] = 0; }

const char *base_strerror_now(void) {
    int e = errno;
    /* GNU strerror_r may return a static string instead of filling buf */
#if defined(_GNU_SOURCE)
    const char *s = strerror_r(e, errno_buf, sizeof errno_buf);
    return s;
#else
    strerror_r(e, errno_buf, sizeof errno_buf);
    return errno_buf;
#endif
}

static void log_init(void) {
    if (log_level >= 0) return;
    log_level = BASE_LOG_INFO;
    const char *e = getenv("GRPO_LOG");
    if (!e) return;
    if (!strcmp(e, "debug")) log_level = BASE_LOG_DEBUG;
    else if (!strcmp(e, "info")) log_level = BASE_LOG_INFO;
    else if (!strcmp(e, "warn")) log_level = BASE_LOG_WARN;
    else if (!strcmp(e, "error")) log_level = BASE_LOG_ERROR;
}

void base_log_set_level(int level) { log_level = level; }

/* "grpo", or "grpo[rank R]" in a multi-process run (base_log_set_tag) */
static char log_tag[48] = "grpo";
void base_log_set_tag(const char *tag) { snprintf(log_tag, sizeof log_tag, "%s", tag && *tag ? tag : "grpo"); }
const char *base_log_tag(void) { return log_tag; }
int base_log_level(void) {
    log_init();
    return log_level;
}

void base_log_at(int level, const char *file, int line, const char *fmt, ...) {
    static const char *names[] = {"debug", "info", "warn", "error"};
    log_init();
    if (level < log_level) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (level == BASE_LOG_DEBUG)
        fprintf(stderr, "%s [%s] %s:%d: %s\n", log_tag, names[level], file, line, msg);
    else if (level == BASE_LOG_INFO)
        fprintf(stderr, "%s: %s\n", log_tag, msg);
    else
        fprintf(stderr, "%s [%s]: %s\n", log_tag, names[level], msg);
}

BASE_NORETURN void base_die_at(const char *file, int line, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fflush(stdout);
    fprintf(stderr, "%s: fatal: %s:%d: %s\n", log_tag, file, line, msg);
    exit(1);
}

double base_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
