/*
 * The code sandbox: run model-written Python against tests so that the code
 * can neither fool the verdict nor reach the machine (docs/rewards.md, "The
 * sandbox").
 *
 * One run is two jailed interpreters (sandbox_jail.c), each with its own
 * namespaces and minimal root, and for root callers its own throw-away uid:
 *   runner    untrusted: runs the setup and the solution, then answers
 *             requests on fd 3 (look up a name, call, iterate ...). It is
 *             sent call arguments only, never a test or an expected value.
 *   verifier  trusted: runs the setup and the tests, never the solution.
 *             Names the tests use that neither it nor the builtins define
 *             are looked up in the runner; what comes back is plain data
 *             (size-capped JSON decoded without eval) or a handle whose
 *             comparison, truth value and arithmetic fail. It writes the
 *             verdict records to fd 4, a pipe only this process reads.
 * The two share nothing but the socketpair of fd 3. The parent feeds both
 * requests, reads their stdout/stderr (capped) and the evidence, enforces
 * the wall clock, and kills both (in a PID namespace PID 1 takes every
 * process of the namespace with it).
 */
#include "reward/reward.h"
#include "reward/sandbox_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define SBX_UID_BASE 2000000000u
#define SBX_EVIDENCE_CAP (1u << 20)
#define SBX_RPC_CAP (8u << 20) /* one message between verifier and runner */

const char *reward_run_status_str(reward_run_status s) {
    switch (s) {
    case REWARD_RUN_PASSED: return "passed";
    case REWARD_RUN_FAILED: return "failed";
    case REWARD_RUN_RUNTIME_ERROR: return "runtime_error";
    case REWARD_RUN_TIMEOUT: return "timeout";
    case REWARD_RUN_MEMORY: return "memory";
    case REWARD_RUN_OUTPUT_LIMIT: return "output_limit";
    case REWARD_RUN_SANDBOX_ERROR: return "sandbox_error";
    }
    return "?";
}

void reward_sandbox_limits_default(reward_sandbox_limits *lim) {
    lim->timeout_s = 10;
    lim->cpu_s = 0; /* 0 = ceil(timeout_s) */
    lim->memory_bytes = (size_t)1 << 30;
    lim->output_bytes = (size_t)64 << 10;
    lim->file_bytes = (size_t)16 << 20;
    lim->disk_bytes = (size_t)64 << 20;
    lim->nproc = 32;
    lim->nofile = 64;
    lim->python = "/usr/bin/python3";
    lim->namespaces = 1;
}

static atomic_int g_warned_unisolated;
static atomic_uint g_slot;
static char *g_text[2]; /* the verifier's and the runner's -c text, codec first */
static pthread_once_t g_text_once = PTHREAD_ONCE_INIT;

static void text_build(void) {
    const char *side[2] = {reward_sandbox_verifier_py, reward_sandbox_runner_py};
    size_t nj = strlen(reward_sandbox_json_py);
    for (int i = 0; i < 2; i++) {
        size_t n = strlen(side[i]);
        g_text[i] = base_xmalloc(nj + n + 1);
        memcpy(g_text[i], reward_sandbox_json_py, nj);
        memcpy(g_text[i] + nj, side[i], n + 1);
    }
}

/* Remove a directory tree without following links; directories are made
 * writable first (the code may have chmod-ed them). Depth-limited. */
static void rm_tree_at(int dfd, const char *name, int depth) {
    if (unlinkat(dfd, name, 0) == 0 || errno == ENOENT) return;
    if (depth > 64) return;
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return;
    fchmod(fd, 0700);
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        rm_tree_at(dirfd(d), e->d_name, depth + 1);
    }
    closedir(d);
    unlinkat(dfd, name, AT_REMOVEDIR);
}

/* Read what is available; returns 0 at EOF, 1 if more may come. */
static int drain(int fd, base_buf *b, size_t cap, int *over) {
    char tmp[16384];
    for (;;) {
        ssize_t n = read(fd, tmp, sizeof tmp);
        if (n > 0) {
            size_t room = b->len < cap ? cap - b->len : 0;
            base_buf_append(b, tmp, (size_t)n < room ? (size_t)n : room);
            if ((size_t)n > room) *over = 1;
            continue;
        }
        if (n == 0) return 0;
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? 1 : 0;
    }
}

static void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* One of the two interpreters of a run. */
typedef struct {
    sbx_child ch;
    int started, exited, exited_early;
    int in_fd, out_fd, err_fd, pidfd;
    int open_out, open_err;
    char *req;
    size_t req_len, sent;
    base_buf out, err;
    int out_over, err_over;
    int wst;
    struct rusage ru;
    uid_t uid;
    char workdir[256]; /* without namespaces: the host work dir to remove */
} side;

static void side_init(side *s, uid_t uid, char *req) {
    memset(s, 0, sizeof *s);
    s->in_fd = s->out_fd = s->err_fd = s->pidfd = -1;
    s->uid = uid;
    s->req = req;
    s->req_len = strlen(req);
}

/* Start one side with its stdin/stdout/stderr plus `extra` as fds 3.. */
static int side_start(side *s, const reward_sandbox_limits *lim, int use_ns, char *const *argv, const int *extra,
                      int n_extra, char *msg, size_t cap) {
    int is_root = geteuid() == 0;
    if (!use_ns) {
        const char *t = getenv("TMPDIR");
        snprintf(s->workdir, sizeof s->workdir, "%s/grpo-sbx-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(s->workdir)) {
            snprintf(msg, cap, "sandbox: mkdtemp %s: %s", s->workdir, base_strerror_now());
            s->workdir[0] = 0;
            return -1;
        }
        if (is_root && chown(s->workdir, s->uid, (gid_t)s->uid) < 0) {
            snprintf(msg, cap, "sandbox: chown %s: %s", s->workdir, base_strerror_now());
            return -1;
        }
    }
    /* fd exhaustion in the trainer is a bug: these die */
    int sv[2], po[2], pe[2];
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    CHECK_SYS(pipe2(po, O_CLOEXEC));
    CHECK_SYS(pipe2(pe, O_CLOEXEC));
    sbx_child_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.lim = lim;
    cfg.argv = argv;
    cfg.use_ns = use_ns;
    cfg.drop_uid = is_root;
    cfg.uid = s->uid;
    cfg.gid = (gid_t)s->uid;
    cfg.workdir = s->workdir;
    cfg.fds[0] = sv[1];
    cfg.fds[1] = po[1];
    cfg.fds[2] = pe[1];
    for (int i = 0; i < n_extra; i++) cfg.fds[3 + i] = extra[i];
    cfg.n_fds = 3 + n_extra;
    int r = sbx_child_start(&cfg, &s->ch, msg, cap);
    close(sv[1]);
    close(po[1]);
    close(pe[1]);
    if (r < 0) {
        close(sv[0]);
        close(po[0]);
        close(pe[0]);
        return -1;
    }
    s->started = 1;
    s->in_fd = sv[0];
    s->out_fd = po[0];
    s->err_fd = pe[0];
    s->open_out = s->open_err = 1;
    set_nonblock(s->in_fd);
    set_nonblock(s->out_fd);
    set_nonblock(s->err_fd);
    s->pidfd = (int)syscall(SYS_pidfd_open, s->ch.pid, 0);
    return 0;
}

/* Has the side's process exited (without reaping it)? */
static int side_gone(const side *s) {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    return waitid(P_PID, (id_t)s->ch.pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == s->ch.pid;
}

static void side_send(side *s) {
    ssize_t w = send(s->in_fd, s->req + s->sent, s->req_len - s->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) s->sent += (size_t)w;
    if ((w < 0 && errno != EAGAIN && errno != EINTR) || s->sent == s->req_len) {
        close(s->in_fd);
        s->in_fd = -1;
    }
}

static void side_kill_reap(side *s) {
    if (!s->started) return;
    kill(-s->ch.pid, SIGKILL);
    kill(s->ch.pid, SIGKILL);
    while (wait4(s->ch.pid, &s->wst, 0, &s->ru) < 0 && errno == EINTR) {
    }
}

static void side_close(side *s, size_t out_cap) {
    if (s->started) {
        drain(s->out_fd, &s->out, out_cap, &s->out_over);
        drain(s->err_fd, &s->err, out_cap, &s->err_over);
    }
    if (s->in_fd >= 0) close(s->in_fd);
    if (s->out_fd >= 0) close(s->out_fd);
    if (s->err_fd >= 0) close(s->err_fd);
    if (s->pidfd >= 0) close(s->pidfd);
    s->in_fd = s->out_fd = s->err_fd = s->pidfd = -1;
    if (s->workdir[0]) rm_tree_at(AT_FDCWD, s->workdir, 0);
    s->workdir[0] = 0;
}

static double side_cpu(const side *s) {
    return (double)s->ru.ru_utime.tv_sec + s->ru.ru_utime.tv_usec * 1e-6 + (double)s->ru.ru_stime.tv_sec +
           s->ru.ru_stime.tv_usec * 1e-6;
}

/* Evidence records: "NONCE KIND I [MSG]". */
typedef struct {
    int ready, end, memory, sol_err, died, bad, passed;
    char msg[400];
} evidence;

static void parse_evidence(const char *text, size_t len, const char *nonce, int n_tests, evidence *ev) {
    unsigned char *seen = base_xcalloc((size_t)(n_tests > 0 ? n_tests : 1), 1);
    size_t nl = strlen(nonce);
    const char *p = text, *stop = text + len;
    while (p < stop) {
        const char *e = memchr(p, '\n', (size_t)(stop - p));
        if (!e) break; /* a record is complete only with its newline */
        size_t L = (size_t)(e - p);
        char line[512];
        if (L > nl + 2 && !memcmp(p, nonce, nl) && p[nl] == ' ') {
            char kind[8] = {0};
            int i = -1, off = 0;
            size_t ll = L < sizeof line - 1 ? L : sizeof line - 1;
            memcpy(line, p, ll);
            line[ll] = 0;
            if (sscanf(line + nl + 1, "%7s %d %n", kind, &i, &off) >= 2) {
                const char *m = off ? line + nl + 1 + off : "";
                const char *text_m = m[0] && m[1] == ' ' ? m + 2 : m;
                if (!strcmp(kind, "R")) ev->ready = 1;
                else if (!strcmp(kind, "END")) ev->end = 1;
                else if (!strcmp(kind, "P")) {
                    if (i >= 0 && i < n_tests && !seen[i]) {
                        seen[i] = 1;
                        ev->passed++;
                    }
                } else if (!strcmp(kind, "F") || !strcmp(kind, "S") || !strcmp(kind, "B")) {
                    if (kind[0] != 'B' && m[0] == 'M' && m[1] == ' ') ev->memory = 1;
                    if (kind[0] != 'B' && m[0] == 'D' && m[1] == ' ') ev->died = 1;
                    if (kind[0] == 'S') ev->sol_err = 1;
                    if (kind[0] == 'B') ev->bad = 1;
                    if (!ev->msg[0]) {
                        if (kind[0] == 'F') snprintf(ev->msg, sizeof ev->msg, "test %d: %s", i, text_m);
                        else if (kind[0] == 'S') snprintf(ev->msg, sizeof ev->msg, "solution: %s", text_m);
                        else snprintf(ev->msg, sizeof ev->msg, "bad test %d: %s", i, m);
                    }
                }
            }
        }
        p = e + 1;
    }
    free(seen);
}

static void tail_line(const base_buf *b, char *out, size_t cap) {
    if (!b->len) return;
    /* last non-empty line, flattened */
    size_t end = b->len;
    while (end > 0 && (b->data[end - 1] == '\n' || b->data[end - 1] == ' ')) end--;
    size_t start = end;
    while (start > 0 && b->data[start - 1] != '\n') start--;
    size_t n = end - start < cap - 1 ? end - start : cap - 1;
    memcpy(out, b->data + start, n);
    out[n] = 0;
}

static void describe_end(const side *s, char *out, size_t cap) {
    if (WIFSIGNALED(s->wst)) {
        int sig = WTERMSIG(s->wst);
        snprintf(out, cap, "killed by signal %d (%s)", sig, sigabbrev_np(sig) ? sigabbrev_np(sig) : "?");
    } else {
        snprintf(out, cap, "exit status %d", WIFEXITED(s->wst) ? WEXITSTATUS(s->wst) : -1);
    }
}

static char *request_json(cJSON *req) {
    char *s = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    if (!s) base_die("cJSON_PrintUnformatted: out of memory");
    return s;
}

typedef struct {
    int killed_time, killed_output, ev_over;
    base_buf ev;
} run_state;

/* Feed, drain and watch both sides until the verifier exits, the deadline
 * passes or an output cap is hit. */
static void watch(side *T, side *U, int ev_fd, const reward_sandbox_limits *lim, double deadline, run_state *rs) {
    int open_ev = 1;
    side *sides[2] = {T, U};
    enum { W_IN, W_OUT, W_ERR, W_PID, W_EV };
    for (;;) {
        struct pollfd pf[10];
        int np = 0, what[10], who[10];
        for (int k = 0; k < 2; k++) {
            side *s = sides[k];
            if (s->in_fd >= 0) pf[np] = (struct pollfd){s->in_fd, POLLOUT, 0}, what[np] = W_IN, who[np++] = k;
            if (s->open_out) pf[np] = (struct pollfd){s->out_fd, POLLIN, 0}, what[np] = W_OUT, who[np++] = k;
            if (s->open_err) pf[np] = (struct pollfd){s->err_fd, POLLIN, 0}, what[np] = W_ERR, who[np++] = k;
            if (s->pidfd >= 0 && !s->exited)
                pf[np] = (struct pollfd){s->pidfd, POLLIN, 0}, what[np] = W_PID, who[np++] = k;
        }
        if (open_ev) pf[np] = (struct pollfd){ev_fd, POLLIN, 0}, what[np] = W_EV, who[np++] = 0;
        double left = deadline - base_now();
        if (left <= 0) {
            rs->killed_time = 1;
            return;
        }
        int wait_ms = (int)(left * 1000) + 1;
        if ((T->pidfd < 0 || U->pidfd < 0) && wait_ms > 20) wait_ms = 20; /* no pidfd: poll for the exits */
        int r = poll(pf, (nfds_t)np, wait_ms);
        if (r < 0 && errno != EINTR) base_die("poll: %s", base_strerror_now());
        for (int i = 0; i < np && r > 0; i++) {
            if (!pf[i].revents) continue;
            side *s = sides[who[i]];
            switch (what[i]) {
            case W_IN:
                if (pf[i].revents & POLLOUT) {
                    side_send(s);
                } else {
                    close(s->in_fd);
                    s->in_fd = -1;
                }
                break;
            case W_OUT: s->open_out = drain(s->out_fd, &s->out, lim->output_bytes, &s->out_over); break;
            case W_ERR: s->open_err = drain(s->err_fd, &s->err, lim->output_bytes, &s->err_over); break;
            case W_PID: s->exited = 1; break;
            case W_EV: open_ev = drain(ev_fd, &rs->ev, SBX_EVIDENCE_CAP, &rs->ev_over); break;
            }
        }
        for (int k = 0; k < 2; k++)
            if (sides[k]->pidfd < 0 && !sides[k]->exited && side_gone(sides[k])) sides[k]->exited = 1;
        if (T->out_over || T->err_over || U->out_over || U->err_over || rs->ev_over) {
            rs->killed_output = 1;
            return;
        }
        if (U->exited) U->exited_early = 1;
        if (T->exited) {
            if (!U->exited && side_gone(U)) U->exited_early = 1;
            return;
        }
    }
}

static void classify(reward_run_result *res, const side *T, const side *U, const run_state *rs, const evidence *ev,
                     int n_tests, const reward_sandbox_limits *lim) {
    double cpu_lim = lim->cpu_s > 0 ? lim->cpu_s : lim->timeout_s;
    int sig_t = WIFSIGNALED(T->wst) ? WTERMSIG(T->wst) : 0;
    int sig_u = U->exited_early && WIFSIGNALED(U->wst) ? WTERMSIG(U->wst) : 0;
    int cpu_t = sig_t == SIGXCPU || (sig_t == SIGKILL && side_cpu(T) >= cpu_lim - 0.05);
    int cpu_u = sig_u == SIGXCPU || (sig_u == SIGKILL && side_cpu(U) >= cpu_lim - 0.05);
    int u_memory = U->err.data && memmem(U->err.data, U->err.len, "MemoryError", 11) != NULL;
    char u_end[80] = "", errline[200] = "";
    if (U->exited_early) describe_end(U, u_end, sizeof u_end);
    tail_line(&T->err, errline, sizeof errline);
    res->passed = ev->passed;
    if (rs->killed_output) {
        res->status = REWARD_RUN_OUTPUT_LIMIT;
        snprintf(res->message, sizeof res->message, "output over %zu bytes",
                 rs->ev_over ? (size_t)SBX_EVIDENCE_CAP : lim->output_bytes);
    } else if (rs->killed_time || cpu_t || cpu_u) {
        res->status = REWARD_RUN_TIMEOUT;
        snprintf(res->message, sizeof res->message, "%s limit (%.3g s) after %d of %d tests",
                 rs->killed_time ? "wall clock" : "CPU time", rs->killed_time ? lim->timeout_s : cpu_lim, ev->passed,
                 n_tests);
    } else if (ev->bad) {
        res->status = REWARD_RUN_SANDBOX_ERROR;
        snprintf(res->message, sizeof res->message, "%s", ev->msg);
    } else if (!ev->ready) {
        char how[80];
        describe_end(T, how, sizeof how);
        res->status = REWARD_RUN_SANDBOX_ERROR;
        snprintf(res->message, sizeof res->message, "verifier did not start (%s): %s", how, errline);
    } else if (ev->memory || ((ev->died || ev->sol_err) && u_memory)) {
        res->status = REWARD_RUN_MEMORY;
        snprintf(res->message, sizeof res->message, "%s", ev->msg[0] ? ev->msg : "MemoryError");
    } else if (ev->sol_err) {
        res->status = REWARD_RUN_RUNTIME_ERROR;
        int say = ev->died && u_end[0];
        snprintf(res->message, sizeof res->message, "%s%s%s%s", ev->msg, say ? " [" : "", say ? u_end : "",
                 say ? "]" : "");
    } else if (!ev->end) {
        char how[80];
        describe_end(T, how, sizeof how);
        res->status = REWARD_RUN_RUNTIME_ERROR;
        snprintf(res->message, sizeof res->message, "a test ended the verifier (%s) after %d of %d tests", how,
                 ev->passed, n_tests);
    } else if (ev->passed == n_tests) {
        res->status = REWARD_RUN_PASSED;
    } else if (ev->died) {
        res->status = REWARD_RUN_RUNTIME_ERROR;
        snprintf(res->message, sizeof res->message, "the solution's process ended%s%s after %d of %d tests: %s",
                 u_end[0] ? " by " : "", u_end, ev->passed, n_tests, ev->msg);
    } else {
        res->status = REWARD_RUN_FAILED;
        snprintf(res->message, sizeof res->message, "%s", ev->msg);
    }
}

base_status reward_sandbox_run_tests(const char *code, const char *const *tests, int n_tests, const char *setup,
                                     const reward_sandbox_limits *lim_in, reward_run_result *res) {
    memset(res, 0, sizeof *res);
    res->total = n_tests;
    if (!code || n_tests < 0 || (n_tests > 0 && !tests))
        return base_err_set(BASE_ERR_INVALID, "run_tests: code and tests are required");
    reward_sandbox_limits lim;
    if (lim_in) lim = *lim_in;
    else reward_sandbox_limits_default(&lim);
    if (!lim.python || !lim.python[0]) lim.python = "/usr/bin/python3";
    if (!(lim.timeout_s > 0)) return base_err_set(BASE_ERR_INVALID, "run_tests: timeout must be > 0");
    double t0 = base_now();
    int is_root = geteuid() == 0, use_ns = lim.namespaces != 0;
    if (!use_ns) {
        int expect = 0;
        if (atomic_compare_exchange_strong(&g_warned_unisolated, &expect, 1))
            base_warn("sandbox: namespaces=false: model code runs WITHOUT PID, mount and network namespaces and "
                      "can read every host file its uid can (datasets with their answers, the checkout)%s; use "
                      "it only where there is nothing to protect",
                      is_root ? "" : ", the trainer's memory, and signal the trainer");
    }

    unsigned char rnd[16];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) base_die("getrandom: %s", base_strerror_now());
    char nonce[33];
    for (int i = 0; i < 16; i++) snprintf(nonce + 2 * i, 3, "%02x", rnd[i]);
    cJSON *tq = cJSON_CreateObject(), *uq = cJSON_CreateObject();
    cJSON_AddStringToObject(tq, "nonce", nonce);
    cJSON_AddStringToObject(tq, "setup", setup ? setup : "");
    cJSON *arr = cJSON_AddArrayToObject(tq, "tests");
    for (int i = 0; i < n_tests; i++) cJSON_AddItemToArray(arr, cJSON_CreateString(tests[i] ? tests[i] : ""));
    cJSON_AddNumberToObject(tq, "cap", SBX_RPC_CAP);
    cJSON_AddStringToObject(uq, "setup", setup ? setup : "");
    cJSON_AddStringToObject(uq, "code", code);
    cJSON_AddNumberToObject(uq, "cap", SBX_RPC_CAP);
    char *treq = request_json(tq), *ureq = request_json(uq);

    /* 64 uids per process, cycled, two per run: concurrent runs of one
     * process differ, processes differ unless their pids agree modulo 15625 */
    unsigned slot = atomic_fetch_add(&g_slot, 2);
    uid_t base_uid = SBX_UID_BASE + (uid_t)(((unsigned)getpid() % 15625u) * 64u);
    side T, U;
    side_init(&T, base_uid + slot % 64u, treq);
    side_init(&U, base_uid + (slot + 1) % 64u, ureq);
    pthread_once(&g_text_once, text_build);
    char *targv[] = {(char *)lim.python, "-I", "-B", "-c", g_text[0], NULL};
    char *uargv[] = {(char *)lim.python, "-s", "-B", "-c", g_text[1], NULL};
    int rpc[2], evp[2];
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, rpc));
    CHECK_SYS(pipe2(evp, O_CLOEXEC));
    char msg[400] = "";
    int failed = 0, tfds[2] = {rpc[0], evp[1]};
    if (side_start(&T, &lim, use_ns, targv, tfds, 2, msg, sizeof msg) < 0) failed = 1;
    close(rpc[0]);
    close(evp[1]);
    if (!failed && side_start(&U, &lim, use_ns, uargv, &rpc[1], 1, msg, sizeof msg) < 0) failed = 1;
    close(rpc[1]);
    run_state rs;
    memset(&rs, 0, sizeof rs);
    set_nonblock(evp[0]);
    if (!failed) watch(&T, &U, evp[0], &lim, t0 + lim.timeout_s, &rs);
    side_kill_reap(&T);
    side_kill_reap(&U);
    if (is_root && !use_ns) {
        if (T.started) sbx_sweep_uid(T.uid);
        if (U.started) sbx_sweep_uid(U.uid);
    }
    if (!rs.killed_output) {
        drain(evp[0], &rs.ev, SBX_EVIDENCE_CAP, &rs.ev_over);
        if (rs.ev_over) rs.killed_output = 1;
    }
    close(evp[0]);
    side_close(&T, lim.output_bytes);
    side_close(&U, lim.output_bytes);
    if (!rs.killed_output && (T.out_over || T.err_over || U.out_over || U.err_over)) rs.killed_output = 1;
    res->isolation = U.started ? U.ch.isolation : T.ch.isolation;
    if (failed) {
        res->status = REWARD_RUN_SANDBOX_ERROR;
        int refused = T.ch.ns_refused || U.ch.ns_refused;
        snprintf(res->message, sizeof res->message, "%s%s", msg,
                 refused ? " (the sandbox needs these namespaces; the run_tests option namespaces=false runs "
                           "without them, exposing the host's files to the code)"
                         : "");
    } else {
        evidence ev;
        memset(&ev, 0, sizeof ev);
        parse_evidence(rs.ev.data ? rs.ev.data : "", rs.ev.len, nonce, n_tests, &ev);
        classify(res, &T, &U, &rs, &ev, n_tests, &lim);
    }
    base_buf_free(&T.out);
    base_buf_free(&T.err);
    base_buf_free(&U.out);
    base_buf_free(&U.err);
    base_buf_free(&rs.ev);
    free(treq);
    free(ureq);
    res->seconds = base_now() - t0;
    return BASE_OK;
}
