/*
 * Stops and resumes that never lie: a stop signal honoured where a stage
 * can stop cleanly and the status the run then ends with, and the checks a
 * --resume makes against the run's earlier config (every change shown key
 * by key; a change that alters the trained result refused unless
 * --allow-changes; the earlier config kept in config.history/). See run.h.
 */
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "recipe/recipe.h"
#include "run_internal.h"

/* Several ranks: a signal that reached any rank (the launcher forwards
 * it to all, or one process got it) stops every rank at the same poll: the
 * ranks agree on the largest signal number polled. A failing all-reduce
 * here leaves the flag as it is; the next collective reports it. */
int run_poll_signal(run_ctx *c) {
    volatile sig_atomic_t *f = c->opts.stop_signal;
    if (c->stop_signal) return c->stop_signal; /* every rank agreed already */
    int32_t sig = f ? (int32_t)*f : 0;
    if (c->world > 1 && dist_allreduce(c->host, &sig, 1, DIST_I32, DIST_MAX))
        base_warn("stop signal: the ranks could not agree: %s", base_err_msg());
    if (sig) {
        c->stop_signal = (int)sig;
        c->stop_requested = 1;
        if (f && !*f) *f = (sig_atomic_t)sig; /* the command's exit status (128 + signal) on every rank */
    }
    return c->stop_signal;
}

base_status run_stage_interrupted(run_ctx *c, int64_t done, int64_t total) {
    (void)c;
    return base_err_set(BASE_ERR_INTERRUPTED,
                        "stopped after %lld of %lld prompts; eval and sample stages keep no partial results: "
                        "--resume runs it again from its start",
                        (long long)done, (long long)total);
}

static const char *signal_name(int sig, char *buf, size_t n) {
    if (sig == SIGINT) return "SIGINT";
    if (sig == SIGTERM) return "SIGTERM";
    if (sig == SIGUSR1) return "SIGUSR1";
    snprintf(buf, n, "signal %d", sig);
    return buf;
}

base_status run_stop_status(run_ctx *c, base_status s) {
    char detail[700] = "", sig[32];
    if (s) snprintf(detail, sizeof detail, " (%s)", base_err_msg());
    const char *name = signal_name(c->stop_signal, sig, sizeof sig);
    if (c->saved_step < 0)
        return base_err_set(BASE_ERR_INTERRUPTED,
                            "interrupted at step %lld by %s, before the run's first checkpoint: --resume starts the "
                            "run again%s",
                            (long long)c->total_steps, name, detail);
    return base_err_set(BASE_ERR_INTERRUPTED, "interrupted at step %lld by %s: checkpoint %s/checkpoints/step-%lld; "
                        "--resume continues%s",
                        (long long)c->total_steps, name, c->dir, (long long)c->saved_step, detail);
}

/* ---- resuming with a changed recipe ------------------------------------------ */

/* The run directory has a checkpoint (complete or not): something was
 * trained that a resume continues. */
static int has_checkpoints(const char *dir) {
    char *root = base_path_join(dir, "checkpoints");
    DIR *d = opendir(root);
    int any = 0;
    struct dirent *e;
    while (d && !any && (e = readdir(d))) any = !strncmp(e->d_name, "step-", 5);
    if (d) closedir(d);
    free(root);
    return any;
}

base_status run_check_changes(run_ctx *c) {
    char *path = base_path_join(c->dir, "config.resolved.lua");
    if (!base_file_exists(path) || !has_checkpoints(c->dir)) { /* nothing to compare with, or nothing trained */
        free(path);
        return BASE_OK;
    }
    recipe_change *ch = NULL;
    int n = 0;
    base_status s = recipe_changes(c->rc, path, &ch, &n);
    if (s) {
        if (c->opts.allow_changes) {
            base_warn("--resume --allow-changes: not compared with the run's earlier config: %s", base_err_msg());
            free(path);
            return BASE_OK;
        }
        s = base_err_wrap(s, "--resume cannot compare the recipe with the run's earlier config (resume with "
                             "--allow-changes to take the recipe as it is)");
        free(path);
        return s;
    }
    int altering = 0;
    for (int i = 0; i < n; i++) altering += ch[i].alters;
    if (n) { /* every change, key by key */
        base_buf b = {0};
        base_buf_printf(&b, "--resume: the recipe differs from %s in %d key%s:", path, n, n == 1 ? "" : "s");
        for (int i = 0; i < n; i++)
            base_buf_printf(&b, "\n  %s: %s -> %s%s", ch[i].key, ch[i].before, ch[i].after,
                            ch[i].alters ? " (alters the trained result)" : "");
        if (altering && !c->opts.allow_changes) base_warn("%s", b.data);
        else if (altering) base_warn("%s\naccepted (--allow-changes)", b.data);
        else if (!c->opts.quiet) base_info("%s\n(none alters the trained result)", b.data);
        base_buf_free(&b);
    }
    if (altering && !c->opts.allow_changes) {
        base_buf b = {0};
        int shown = 0;
        for (int i = 0; i < n && shown < 4; i++)
            if (ch[i].alters)
                base_buf_printf(&b, "%s%s %s -> %s", shown++ ? ", " : "", ch[i].key, ch[i].before, ch[i].after);
        if (altering > shown) base_buf_printf(&b, " and %d more", altering - shown);
        s = base_err_set(BASE_ERR_INVALID,
                         "--resume: the recipe changes %d key%s of %s that alter%s the trained result: %s; resume "
                         "with --allow-changes to accept %s, undo %s, or start again with --overwrite",
                         altering, altering == 1 ? "" : "s", path, altering == 1 ? "s" : "", b.data,
                         altering == 1 ? "it" : "them", altering == 1 ? "it" : "them");
        base_buf_free(&b);
    }
    recipe_changes_free(ch, n);
    free(path);
    return s;
}

base_status run_keep_config_history(run_ctx *c, int64_t from_step) {
    char *path = base_path_join(c->dir, "config.resolved.lua");
    char *text = NULL;
    size_t len = 0;
    base_status s = base_file_exists(path) ? base_read_file(path, &text, &len) : BASE_OK;
    if (s || !text) {
        free(path);
        return s;
    }
    char *hist = base_path_join(c->dir, "config.history");
    s = base_mkdir_p(hist);
    base_buf dst = {0}, out = {0};
    for (int k = 1; !s; k++) { /* the next free number: 1 is the run's first config */
        base_buf_reset(&dst);
        base_buf_printf(&dst, "%s/config.resolved.%d.lua", hist, k);
        if (!base_file_exists(dst.data)) break;
    }
    if (!s) {
        char when[64] = "";
        time_t now = time(NULL);
        struct tm tm;
        if (localtime_r(&now, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
        if (from_step >= 0)
            base_buf_printf(&out, "-- replaced on %s by the config of a --resume from checkpoints/step-%lld\n", when,
                            (long long)from_step);
        else
            base_buf_printf(&out, "-- replaced on %s by the config of a --resume (no checkpoint: from the start)\n",
                            when);
        base_buf_append(&out, text, len);
        s = base_write_file_atomic(dst.data, out.data, out.len);
    }
    if (s) s = base_err_wrap(s, "keeping the run's earlier config in %s", hist);
    base_buf_free(&dst), base_buf_free(&out);
    free(text), free(hist), free(path);
    return s;
}
