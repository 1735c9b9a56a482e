/*
 * grpo fetch REPO_ID: download a model repository from the Hugging Face Hub
 * (src/io/hub.h) into a directory that `grpo info` and model_load read.
 *
 * Ctrl-C stops the transfers and keeps the .part files; running the same
 * command again resumes them (a second Ctrl-C kills at once, which also
 * keeps them).
 *
 * Exit status: 0 every selected file is complete; 1 a file or the listing
 * failed (each failure printed with the repository, the file and the HTTP
 * status); 2 bad usage; 130 interrupted.
 */
#include "cli/cli.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "io/hub.h"

static const char USAGE[] =
    "usage: grpo fetch REPO_ID [--out DIR] [--revision REV] [--include GLOB ...] [--exclude GLOB ...]\n"
    "                  [--jobs N] [--token TOKEN] [--verify] [--retries N] [--timeout S] [--dry-run] [--quiet]\n"
    "\n"
    "Downloads the files of a Hugging Face model repository (e.g. deepseek-ai/DeepSeek-V3) into DIR\n"
    "(default: ./NAME). Files already complete are skipped; a file.part left by an interrupted run is\n"
    "resumed. Every file is checked: size, SHA-256 for LFS files, git SHA-1 for the others.\n"
    "\n"
    "  --out DIR        where the files go (created)\n"
    "  --revision REV   branch, tag or commit (default main)\n"
    "  --include GLOB   only files matching a glob (repeatable; '*' matches '/' too; 'dir/' = everything in dir)\n"
    "  --exclude GLOB   leave out files matching a glob (repeatable)\n"
    "  --jobs N         files downloaded at once (default 4)\n"
    "  --token TOKEN    access token (default $HF_TOKEN, else $HF_HOME/token, ~/.cache/huggingface/token)\n"
    "  --verify         re-hash LFS files that are already complete\n"
    "  --retries N      extra attempts on 5xx / 429 / network errors (default 5, back-off 1 s doubling)\n"
    "  --timeout S      connect timeout and longest stall (default $HF_HUB_DOWNLOAD_TIMEOUT or 10)\n"
    "  --dry-run        list the files that would be downloaded, download nothing\n"
    "  --quiet          no progress line\n"
    "\n"
    "Environment: HF_ENDPOINT (default https://huggingface.co), HF_TOKEN, HF_HOME, HF_HUB_DOWNLOAD_TIMEOUT.\n";

static void on_sigint(int sig) {
    (void)sig;
    hub_interrupt();
}

static int positive(const char *v, long lo, long hi, long *out) {
    char *e;
    long x = strtol(v, &e, 10);
    if (*v == 0 || *e || x < lo || x > hi) return 0;
    *out = x;
    return 1;
}

static void human(double b, char *out, size_t n) {
    const char *u[] = {"B", "kB", "MB", "GB", "TB"};
    int i = 0;
    while (b >= 1000 && i < 4) b /= 1000, i++;
    snprintf(out, n, i ? "%.2f %s" : "%.0f %s", b, u[i]);
}

static int dry_run(const char *repo, const hub_opts *o) {
    hub_listing l;
    if (hub_list(repo, o, &l)) {
        fprintf(stderr, "grpo fetch: %s\n", base_err_msg());
        hub_listing_free(&l);
        return 1;
    }
    int64_t total = 0;
    for (int i = 0; i < l.n; i++) {
        char h[32];
        human((double)l.files[i].size, h, sizeof h);
        printf("%12s  %s%s\n", h, l.files[i].path, l.files[i].sha256[0] ? "  (lfs)" : "");
        total += l.files[i].size;
    }
    char h[32];
    human((double)total, h, sizeof h);
    printf("%d files, %s, at commit %s\n", l.n, h, l.commit);
    hub_listing_free(&l);
    return 0;
}

int cli_cmd_fetch(int argc, char **argv) {
    hub_opts o;
    hub_opts_default(&o);
    const char *repo = NULL, *out = NULL;
    const char **inc = base_xcalloc((size_t)argc + 1, sizeof *inc);
    const char **exc = base_xcalloc((size_t)argc + 1, sizeof *exc);
    int dry = 0, rc = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            rc = 0;
            goto done;
        } else if (!strcmp(a, "--verify")) o.verify = 1;
        else if (!strcmp(a, "--dry-run")) dry = 1;
        else if (!strcmp(a, "--quiet")) o.progress = 0;
        else if (a[0] == '-' && a[1] == '-' && !v) {
            rc = cli_usage_error("fetch", "%s needs a value\n%s", a, USAGE);
            goto done;
        } else if (!strcmp(a, "--out")) out = argv[++i];
        else if (!strcmp(a, "--revision")) o.revision = argv[++i];
        else if (!strcmp(a, "--include")) inc[o.n_include++] = argv[++i];
        else if (!strcmp(a, "--exclude")) exc[o.n_exclude++] = argv[++i];
        else if (!strcmp(a, "--token")) o.token = argv[++i];
        else if (!strcmp(a, "--jobs") || !strcmp(a, "--retries") || !strcmp(a, "--timeout")) {
            int jobs = !strcmp(a, "--jobs"), retries = !strcmp(a, "--retries");
            if (!positive(v, jobs ? 1 : retries ? 0 : 1, jobs ? 64 : 100000, &x)) {
                rc = cli_usage_error("fetch", "%s: '%s' is not a valid number (%s)", a, v,
                                     jobs ? "1..64" : retries ? ">= 0" : "seconds >= 1");
                goto done;
            }
            if (jobs) o.jobs = (int)x;
            else if (retries) o.retries = (int)x;
            else o.timeout_s = x;
            i++;
        } else if (a[0] == '-') {
            rc = cli_usage_error("fetch", "unknown option '%s'\n%s", a, USAGE);
            goto done;
        } else if (!repo) repo = a;
        else {
            rc = cli_usage_error("fetch", "unexpected argument '%s'\n%s", a, USAGE);
            goto done;
        }
    }
    o.include = inc;
    o.exclude = exc;
    if (!repo) {
        rc = cli_usage_error("fetch", "a repository id is required\n%s", USAGE);
        goto done;
    }
    if (!hub_repo_id_valid(repo)) {
        rc = cli_usage_error("fetch", "'%s' is not a repository id (owner/name)", repo);
        goto done;
    }
    if (!out) out = strchr(repo, '/') ? strchr(repo, '/') + 1 : repo;
    if (dry) {
        rc = dry_run(repo, &o);
        goto done;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESETHAND; /* a second Ctrl-C kills at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    hub_result r;
    base_status s = hub_fetch(repo, out, &o, &r);
    if (s) {
        fprintf(stderr, "grpo fetch: %s\n", base_err_msg());
        rc = r.interrupted ? 130 : 1;
        goto done;
    }
    char h[32];
    human((double)r.bytes, h, sizeof h);
    printf("%s: %d files in %s: %d downloaded (%s in %.1f s), %d already complete\n", repo, r.n_files, out,
           r.n_fetched, h, r.seconds, r.n_skipped);
    rc = 0;
done:
    free(inc);
    free(exc);
    return rc;
}
