/*
 * Progress bar: one redrawn line on a terminal (step, bar, ETA, caller's
 * figures), plain log lines otherwise so CI logs stay readable.
 */
#include "base.h"

#include <string.h>
#include <unistd.h>

static void fmt_time(char *out, size_t n, double s) {
    if (s < 0 || s > 1e7) {
        snprintf(out, n, "?");
        return;
    }
    int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(out, n, "%dh%02dm", t / 3600, (t / 60) % 60);
    else snprintf(out, n, "%dm%02ds", t / 60, t % 60);
}

void base_progress_start(base_progress *p, const char *label, int64_t total) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->total = total;
    p->t0 = base_now();
    p->tty = isatty(STDERR_FILENO);
    p->plain_every = 10.0;
}

static void draw(base_progress *p, int final) {
    double el = base_now() - p->t0;
    double eta = p->done > 0 ? el / (double)p->done * (double)(p->total - p->done) : -1;
    char e1[32], e2[32];
    fmt_time(e1, sizeof e1, el);
    fmt_time(e2, sizeof e2, eta);
    if (p->tty) {
        char bar[21];
        int fill = p->total > 0 ? (int)(20 * p->done / p->total) : 0;
        for (int i = 0; i < 20; i++) bar[i] = i < fill ? '#' : '.';
        bar[20] = 0;
        fprintf(stderr, "\r\033[K%s [%s] %lld/%lld %s eta %s %s", p->label, bar,
                (long long)p->done, (long long)p->total, e1, e2, p->extra);
        if (final) fputc('\n', stderr);
    } else {
        fprintf(stderr, "%s: %lld/%lld elapsed %s eta %s %s\n", p->label, (long long)p->done,
                (long long)p->total, e1, e2, p->extra);
    }
    fflush(stderr);
}

void base_progress_update(base_progress *p, int64_t done, const char *extra_fmt, ...) {
    p->done = done;
    if (extra_fmt) {
        va_list ap;
        va_start(ap, extra_fmt);
        vsnprintf(p->extra, sizeof p->extra, extra_fmt, ap);
        va_end(ap);
    }
    double now = base_now();
    double every = p->tty ? 0.1 : p->plain_every;
    if (now - p->last_draw >= every || done == p->total) {
        p->last_draw = now;
        draw(p, 0);
    }
}

void base_progress_finish(base_progress *p) {
    if (p->tty) draw(p, 1);
}
