/*
 * The code sandbox: run model-written Python against tests in a child
 * process that cannot harm the machine, the trainer or the next run.
 *
 * Design (see docs/rewards.md, "Sandbox"):
 *   child   clone(CLONE_VM|CLONE_VFORK) like posix_spawn, so a trainer with
 *           a large heap is not copied; the child only makes system calls
 *           until execve. Where the kernel allows: new PID, mount, network,
 *           IPC and UTS namespaces (plus a user namespace for non-root
 *           callers, mapping only the caller's own uid). In the mount
 *           namespace the whole tree is made read-only (mount_setattr,
 *           recursive), /root, /home and $HOME are covered by empty
 *           read-only tmpfs, /tmp is a fresh size-capped tmpfs (the work
 *           dir; it vanishes with the namespace) and /proc is remounted for
 *           the new PID namespace. Always: setsid (own session and process
 *           group), rlimits (CPU, address space, file size, processes,
 *           open files, no core), no-new-privileges, a fixed minimal
 *           environment (nothing inherited), stdin a socket that the
 *           harness drains and replaces by /dev/null. Root callers run the
 *           code under a throw-away uid/gid: 2000000000 + (pid % 15625)
 *           * 64 + (run % 64).
 *   parent  feeds the request, reads stdout/stderr (capped) and the
 *           evidence pipe, enforces the wall clock, and kills the whole
 *           process group (and in a PID namespace PID 1, which takes every
 *           process of the namespace with it).
 * Fallback: when namespaces are refused (EPERM, no user namespaces) the run
 * goes on with everything in "Always" plus a fresh mkdtemp work directory
 * that is removed afterwards; one warning line says so, once per process.
 * After a root fallback run every process of the throw-away uid is killed.
 */
#include "reward/reward.h"
#include "reward/sandbox_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define SBX_UID_BASE 2000000000u
#define SBX_EVIDENCE_CAP (1u << 20)
#define SBX_STACK (128 * 1024)

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

/* ------------------------------------------------------------------------ */
/* The child: system calls only, on its own stack, sharing the parent's
 * memory (CLONE_VM) while the calling thread waits (CLONE_VFORK).          */

enum {
    ST_SETSID = 1, ST_MAPS, ST_PRIVATE, ST_READONLY, ST_TMPFS, /* fatal: namespace setup */
    ST_HIDE, ST_PROC,                                         /* warnings */
    ST_CHDIR, ST_FDS, ST_RLIMIT, ST_CREDS, ST_PRCTL, ST_EXEC,  /* fatal */
};
#define ST_NS_FATAL(s) ((s) >= ST_MAPS && (s) <= ST_TMPFS)
#define ST_WARNING(s) ((s) == ST_HIDE || (s) == ST_PROC)

typedef struct {
    int stage, err;
} child_report;

typedef struct {
    int use_ns, userns, drop_uid, mount_proc;
    uid_t uid;
    gid_t gid;
    char uid_map[64], gid_map[64];
    char tmpfs_opts[160];
    char workdir[256];
    const char *hide[3];
    int n_hide;
    struct rlimit rl[6];
    int rl_res[6];
    int fd[5]; /* child ends: stdin, stdout, stderr, evidence, status */
    const char *python;
    char *const *argv;
    char *const *envp;
} child_args;

static void child_report_at(int fd, int stage) {
    child_report r = {stage, errno};
    ssize_t w = write(fd, &r, sizeof r);
    (void)w;
}

static int write_proc_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = (ssize_t)strlen(text);
    ssize_t w = write(fd, text, (size_t)n);
    int e = errno;
    close(fd);
    errno = e;
    return w == n ? 0 : -1;
}

static int child_main(void *arg) {
    const child_args *a = arg;
    int st = a->fd[4];
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP) sigaction(s, &dfl, NULL); /* glibc-internal ones fail: fine */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    if (setsid() < 0) goto fail_setsid;
    if (a->use_ns) {
        if (a->userns) {
            if (write_proc_file("/proc/self/setgroups", "deny") < 0 ||
                write_proc_file("/proc/self/uid_map", a->uid_map) < 0 ||
                write_proc_file("/proc/self/gid_map", a->gid_map) < 0) {
                child_report_at(st, ST_MAPS);
                _exit(127);
            }
        }
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
            child_report_at(st, ST_PRIVATE);
            _exit(127);
        }
        struct mount_attr attr;
        memset(&attr, 0, sizeof attr);
        attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID;
        if (syscall(SYS_mount_setattr, AT_FDCWD, "/", AT_RECURSIVE, &attr, sizeof attr) < 0) {
            child_report_at(st, ST_READONLY);
            _exit(127);
        }
        for (int i = 0; i < a->n_hide; i++)
            if (mount("tmpfs", a->hide[i], "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                      "size=4k,nr_inodes=4,mode=0755") < 0)
                child_report_at(st, ST_HIDE);
        if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, a->tmpfs_opts) < 0) {
            child_report_at(st, ST_TMPFS);
            _exit(127);
        }
        if (a->mount_proc &&
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
            child_report_at(st, ST_PROC);
    }
    if (chdir(a->workdir) < 0) {
        child_report_at(st, ST_CHDIR);
        _exit(127);
    }
    /* Move the five ends to 0..4 via fds >= 10 (an end may already sit on
     * a target number). dup2 clears close-on-exec; fd 4 gets it back. */
    int tmp[5];
    for (int i = 0; i < 5; i++) {
        tmp[i] = fcntl(a->fd[i], F_DUPFD_CLOEXEC, 10);
        if (tmp[i] < 0) {
            child_report_at(st, ST_FDS);
            _exit(127);
        }
    }
    for (int i = 0; i < 5; i++) {
        if (dup2(tmp[i], i) < 0) {
            child_report_at(tmp[4], ST_FDS);
            _exit(127);
        }
    }
    st = 4;
    if (fcntl(4, F_SETFD, FD_CLOEXEC) < 0 || syscall(SYS_close_range, 5u, ~0u, 0u) < 0) {
        child_report_at(st, ST_FDS);
        _exit(127);
    }
    for (int i = 0; i < 6; i++) {
        if (setrlimit(a->rl_res[i], &a->rl[i]) < 0) {
            child_report_at(st, ST_RLIMIT);
            _exit(127);
        }
    }
    if (a->drop_uid) {
        /* raw system calls: glibc's setuid would try to signal threads that
         * exist only in the parent */
        if (syscall(SYS_setgroups, 0, NULL) < 0 || syscall(SYS_setresgid, a->gid, a->gid, a->gid) < 0 ||
            syscall(SYS_setresuid, a->uid, a->uid, a->uid) < 0) {
            child_report_at(st, ST_CREDS);
            _exit(127);
        }
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) {
        child_report_at(st, ST_PRCTL);
        _exit(127);
    }
    execve(a->python, a->argv, a->envp);
    child_report_at(st, ST_EXEC);
    _exit(127);
fail_setsid:
    child_report_at(st, ST_SETSID);
    _exit(127);
}

/* clone like posix_spawn; returns the pid or -1 (errno set). */
static pid_t spawn_vm(int (*fn)(void *), void *arg, int ns_flags) {
    char *stack = malloc(SBX_STACK);
    if (!stack) return -1;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pid_t pid = clone(fn, stack + SBX_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD | ns_flags, arg);
    int e = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    free(stack);
    errno = e;
    return pid;
}

typedef struct {
    uid_t uid;
} sweep_args;

static int sweep_main(void *arg) {
    const sweep_args *s = arg;
    if (syscall(SYS_setresuid, s->uid, s->uid, s->uid) < 0) _exit(1);
    kill(-1, SIGKILL); /* every process of the throw-away uid, never ourselves */
    _exit(0);
}

/* ------------------------------------------------------------------------ */
/* Parent side                                                              */

static atomic_int g_ns_state;   /* 0 untried, 1 works, -1 refused */
static atomic_int g_warned_fallback, g_warned_proc, g_warned_hide;
static atomic_uint g_slot;

static void warn_once(atomic_int *flag, const char *fmt, const char *what, int err) {
    int expect = 0;
    if (atomic_compare_exchange_strong(flag, &expect, 1)) base_warn(fmt, what, strerrordesc_np(err));
}

static const char *stage_name(int s) {
    switch (s) {
    case ST_SETSID: return "setsid";
    case ST_MAPS: return "writing uid_map/gid_map";
    case ST_PRIVATE: return "making mounts private";
    case ST_READONLY: return "read-only remount of /";
    case ST_TMPFS: return "tmpfs on /tmp";
    case ST_HIDE: return "hiding home directories";
    case ST_PROC: return "mounting /proc";
    case ST_CHDIR: return "chdir to the work dir";
    case ST_FDS: return "setting up file descriptors";
    case ST_RLIMIT: return "setrlimit";
    case ST_CREDS: return "dropping to the sandbox uid";
    case ST_PRCTL: return "prctl";
    case ST_EXEC: return "execve of the interpreter";
    }
    return "?";
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

static void rm_tree(const char *path) { rm_tree_at(AT_FDCWD, path, 0); }

typedef struct {
    base_buf out, err, ev;
    int out_over, err_over, ev_over;
} captured;

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

static int dir_exists(const char *p) {
    struct stat s;
    return p && stat(p, &s) == 0 && S_ISDIR(s.st_mode);
}

static int is_prefix_dir(const char *dir, const char *path) {
    size_t n = strlen(dir);
    return !strncmp(dir, path, n) && (path[n] == '/' || path[n] == 0);
}

typedef struct {
    int stdin_fd, out_fd, err_fd, ev_fd;
    pid_t pid;
    int isolation;
    char workdir[256]; /* fallback work dir to remove; "" in ns mode */
    uid_t sweep_uid;   /* root fallback: uid to sweep; 0 = none */
} launched;

/* Start the interpreter. Returns 0 and fills *l, or -1 with a message in
 * res (sandbox error). Retries without namespaces when they are refused. */
static int launch(const reward_sandbox_limits *lim, launched *l, reward_run_result *res) {
    static char *const envp[] = {"PYTHONHASHSEED=0", "PYTHONDONTWRITEBYTECODE=1", "PYTHONIOENCODING=utf-8",
                                 "LC_ALL=C.UTF-8", "PATH=/usr/bin:/bin", "HOME=/tmp", NULL};
    char *argv[] = {(char *)lim->python, "-s", "-B", "-c", (char *)reward_sandbox_harness_py, NULL};
    int is_root = geteuid() == 0;
    unsigned slot = atomic_fetch_add(&g_slot, 1);
    /* 64 uids per process, cycled: concurrent runs of one process differ,
     * processes differ unless their pids agree modulo 15625 */
    uid_t uid = SBX_UID_BASE + (uid_t)(((unsigned)getpid() % 15625u) * 64u + slot % 64u);

    for (int attempt = 0; attempt < 2; attempt++) {
        int use_ns = lim->namespaces && atomic_load(&g_ns_state) >= 0;
        child_args a;
        memset(&a, 0, sizeof a);
        a.use_ns = use_ns;
        a.userns = use_ns && !is_root;
        a.drop_uid = is_root;
        a.mount_proc = use_ns;
        a.uid = uid;
        a.gid = (gid_t)uid;
        a.python = lim->python;
        a.argv = argv;
        a.envp = envp;
        snprintf(a.uid_map, sizeof a.uid_map, "%u %u 1", (unsigned)geteuid(), (unsigned)geteuid());
        snprintf(a.gid_map, sizeof a.gid_map, "%u %u 1", (unsigned)getegid(), (unsigned)getegid());
        unsigned tuid = is_root ? uid : geteuid(), tgid = is_root ? uid : getegid();
        snprintf(a.tmpfs_opts, sizeof a.tmpfs_opts, "size=%zu,nr_inodes=4096,mode=0700,uid=%u,gid=%u",
                 lim->disk_bytes, tuid, tgid);
        if (use_ns) {
            const char *home = getenv("HOME");
            const char *cand[3] = {"/root", "/home", home};
            for (int i = 0; i < 3; i++) {
                const char *c = cand[i];
                if (!dir_exists(c) || !strcmp(c, "/") || is_prefix_dir(c, "/tmp") || is_prefix_dir("/tmp", c) ||
                    is_prefix_dir(c, lim->python))
                    continue;
                int dup = 0;
                for (int j = 0; j < a.n_hide; j++) dup |= !strcmp(a.hide[j], c);
                if (!dup) a.hide[a.n_hide++] = c;
            }
            snprintf(a.workdir, sizeof a.workdir, "/tmp");
            l->workdir[0] = 0;
        } else {
            const char *t = getenv("TMPDIR");
            snprintf(l->workdir, sizeof l->workdir, "%s/grpo-sbx-XXXXXX", t && *t ? t : "/tmp");
            if (!mkdtemp(l->workdir)) {
                snprintf(res->message, sizeof res->message, "sandbox: mkdtemp %s: %s", l->workdir,
                         base_strerror_now());
                return -1;
            }
            if (is_root && chown(l->workdir, uid, (gid_t)uid) < 0) {
                snprintf(res->message, sizeof res->message, "sandbox: chown %s: %s", l->workdir,
                         base_strerror_now());
                rm_tree(l->workdir);
                return -1;
            }
            snprintf(a.workdir, sizeof a.workdir, "%s", l->workdir);
        }
        double cpu = lim->cpu_s > 0 ? lim->cpu_s : lim->timeout_s;
        rlim_t cpus = (rlim_t)ceil(cpu < 1 ? 1 : cpu);
        int res_ids[6] = {RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC, RLIMIT_NOFILE, RLIMIT_CORE};
        rlim_t vals[6] = {cpus, lim->memory_bytes, lim->file_bytes, (rlim_t)lim->nproc, (rlim_t)lim->nofile, 0};
        for (int i = 0; i < 6; i++) {
            a.rl_res[i] = res_ids[i];
            a.rl[i].rlim_cur = vals[i];
            a.rl[i].rlim_max = i == 0 ? vals[i] + 1 : vals[i]; /* SIGXCPU first, SIGKILL 1 s later */
        }

        int sv[2], po[2], pe[2], pv[2], ps[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
            snprintf(res->message, sizeof res->message, "sandbox: socketpair: %s", base_strerror_now());
            if (l->workdir[0]) rm_tree(l->workdir);
            return -1;
        }
        if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0 || pipe2(pv, O_CLOEXEC) < 0 ||
            pipe2(ps, O_CLOEXEC) < 0)
            base_die("pipe2: %s", base_strerror_now()); /* fd exhaustion in the trainer is a bug */
        a.fd[0] = sv[1];
        a.fd[1] = po[1];
        a.fd[2] = pe[1];
        a.fd[3] = pv[1];
        a.fd[4] = ps[1];
        int flags = 0;
        if (use_ns) flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS |
                            (a.userns ? CLONE_NEWUSER : 0);
        pid_t pid = spawn_vm(child_main, &a, flags);
        int clone_err = errno;
        close(sv[1]);
        close(po[1]);
        close(pe[1]);
        close(pv[1]);
        close(ps[1]);
        /* The child has exec'd or exited: its reports are in the pipe. */
        child_report rep[8];
        int n_rep = 0;
        if (pid > 0) {
            set_nonblock(ps[0]);
            ssize_t n;
            while (n_rep < 8 && (n = read(ps[0], &rep[n_rep], sizeof rep[0])) == (ssize_t)sizeof rep[0]) n_rep++;
        }
        close(ps[0]);
        int fatal = -1, fatal_err = 0;
        for (int i = 0; i < n_rep; i++) {
            if (ST_WARNING(rep[i].stage)) {
                warn_once(rep[i].stage == ST_PROC ? &g_warned_proc : &g_warned_hide,
                          "sandbox: %s failed (%s); the host's entries stay visible to the code",
                          stage_name(rep[i].stage), rep[i].err);
            } else if (fatal < 0) {
                fatal = rep[i].stage;
                fatal_err = rep[i].err;
            }
        }
        int proc_ok = 1;
        for (int i = 0; i < n_rep; i++) proc_ok &= rep[i].stage != ST_PROC;
        if (pid < 0 || fatal >= 0) {
            if (pid > 0) waitpid(pid, NULL, 0);
            close(sv[0]);
            close(po[0]);
            close(pe[0]);
            close(pv[0]);
            int ns_problem = use_ns && (pid < 0 || ST_NS_FATAL(fatal));
            if (ns_problem && attempt == 0) {
                atomic_store(&g_ns_state, -1);
                char what[160];
                snprintf(what, sizeof what, "%s", pid < 0 ? "clone with namespaces" : stage_name(fatal));
                warn_once(&g_warned_fallback,
                          "sandbox: namespaces unavailable (%s: %s); falling back to rlimits, a private "
                          "session, an empty environment and a temporary directory (no PID, mount or "
                          "network isolation)",
                          what, pid < 0 ? clone_err : fatal_err);
                continue;
            }
            if (l->workdir[0]) rm_tree(l->workdir);
            snprintf(res->message, sizeof res->message, "sandbox: %s failed: %s",
                     pid < 0 ? "clone" : stage_name(fatal), strerrordesc_np(pid < 0 ? clone_err : fatal_err));
            return -1;
        }
        if (use_ns) atomic_store(&g_ns_state, 1);
        l->pid = pid;
        l->stdin_fd = sv[0];
        l->out_fd = po[0];
        l->err_fd = pe[0];
        l->ev_fd = pv[0];
        l->isolation = (a.drop_uid ? REWARD_ISO_UID : 0) |
                       (use_ns ? REWARD_ISO_PIDNS | REWARD_ISO_MOUNTNS | REWARD_ISO_NETNS : 0) |
                       (a.userns ? REWARD_ISO_USERNS : 0) | (use_ns && proc_ok ? REWARD_ISO_PROC : 0);
        l->sweep_uid = (!use_ns && is_root) ? uid : 0;
        return 0;
    }
    snprintf(res->message, sizeof res->message, "sandbox: could not start");
    return -1;
}

static void kill_all(pid_t pid) {
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
}

/* Evidence records: "NONCE KIND I [MSG]". */
static void parse_evidence(const char *text, size_t len, const char *nonce, int n_tests, unsigned char *seen,
                           int *ready, int *end, int *memory, int *solution_err, int *bad, int *passed,
                           char *msg, size_t msg_cap) {
    size_t nl = strlen(nonce);
    const char *p = text, *stop = text + len;
    while (p < stop) {
        const char *e = memchr(p, '\n', (size_t)(stop - p));
        if (!e) break; /* a record is complete only with its newline */
        size_t L = (size_t)(e - p);
        if (L > nl + 2 && !memcmp(p, nonce, nl) && p[nl] == ' ') {
            char kind[8] = {0};
            int i = -1, off = 0;
            char line[512];
            size_t ll = L < sizeof line - 1 ? L : sizeof line - 1;
            memcpy(line, p, ll);
            line[ll] = 0;
            if (sscanf(line + nl + 1, "%7s %d %n", kind, &i, &off) >= 2) {
                const char *m = off ? line + nl + 1 + off : "";
                if (!strcmp(kind, "R")) *ready = 1;
                else if (!strcmp(kind, "END")) *end = 1;
                else if (!strcmp(kind, "P")) {
                    if (i >= 0 && i < n_tests && !seen[i]) {
                        seen[i] = 1;
                        (*passed)++;
                    }
                } else if (!strcmp(kind, "F") || !strcmp(kind, "S") || !strcmp(kind, "B")) {
                    if (m[0] == 'M' && m[1] == ' ') *memory = 1;
                    if (kind[0] == 'S') *solution_err = 1;
                    if (kind[0] == 'B') *bad = 1;
                    if (!msg[0]) {
                        if (kind[0] == 'F') snprintf(msg, msg_cap, "test %d: %s", i, m[1] == ' ' ? m + 2 : m);
                        else if (kind[0] == 'S') snprintf(msg, msg_cap, "solution: %s", m[1] == ' ' ? m + 2 : m);
                        else snprintf(msg, msg_cap, "bad test %d: %s", i, m);
                    }
                }
            }
        }
        p = e + 1;
    }
}

static void tail_line(const base_buf *b, char *out, size_t cap) {
    if (!b->len) return;
    /* last non-empty line of stderr, flattened */
    size_t end = b->len;
    while (end > 0 && (b->data[end - 1] == '\n' || b->data[end - 1] == ' ')) end--;
    size_t start = end;
    while (start > 0 && b->data[start - 1] != '\n') start--;
    size_t n = end - start < cap - 1 ? end - start : cap - 1;
    memcpy(out, b->data + start, n);
    out[n] = 0;
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

    /* request */
    unsigned char rnd[16];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) base_die("getrandom: %s", base_strerror_now());
    char nonce[33];
    for (int i = 0; i < 16; i++) snprintf(nonce + 2 * i, 3, "%02x", rnd[i]);
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "nonce", nonce);
    cJSON_AddStringToObject(req, "code", code);
    cJSON_AddStringToObject(req, "setup", setup ? setup : "");
    cJSON *arr = cJSON_AddArrayToObject(req, "tests");
    for (int i = 0; i < n_tests; i++) cJSON_AddItemToArray(arr, cJSON_CreateString(tests[i] ? tests[i] : ""));
    char *payload = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    if (!payload) base_die("cJSON_PrintUnformatted: out of memory");
    size_t payload_len = strlen(payload), sent = 0;

    launched l;
    memset(&l, 0, sizeof l);
    if (launch(&lim, &l, res) < 0) {
        free(payload);
        res->status = REWARD_RUN_SANDBOX_ERROR;
        res->seconds = base_now() - t0;
        return BASE_OK;
    }
    res->isolation = l.isolation;
    set_nonblock(l.stdin_fd);
    set_nonblock(l.out_fd);
    set_nonblock(l.err_fd);
    set_nonblock(l.ev_fd);
    int pidfd = (int)syscall(SYS_pidfd_open, l.pid, 0);

    captured c;
    memset(&c, 0, sizeof c);
    int open_out = 1, open_err = 1, open_ev = 1, exited = 0, killed_time = 0, killed_output = 0;
    double deadline = t0 + lim.timeout_s;
    while (!exited) {
        struct pollfd pf[5];
        int np = 0, i_in = -1, i_out = -1, i_err = -1, i_ev = -1, i_pid = -1;
        if (l.stdin_fd >= 0) pf[i_in = np++] = (struct pollfd){l.stdin_fd, POLLOUT, 0};
        if (open_out) pf[i_out = np++] = (struct pollfd){l.out_fd, POLLIN, 0};
        if (open_err) pf[i_err = np++] = (struct pollfd){l.err_fd, POLLIN, 0};
        if (open_ev) pf[i_ev = np++] = (struct pollfd){l.ev_fd, POLLIN, 0};
        if (pidfd >= 0) pf[i_pid = np++] = (struct pollfd){pidfd, POLLIN, 0};
        double left = deadline - base_now();
        if (left <= 0) {
            killed_time = 1;
            break;
        }
        int wait_ms = (int)(left * 1000) + 1;
        if (pidfd < 0 && wait_ms > 20) wait_ms = 20;
        int r = poll(pf, (nfds_t)np, wait_ms);
        if (r < 0 && errno != EINTR) base_die("poll: %s", base_strerror_now());
        if (i_in >= 0 && pf[i_in].revents) {
            if (pf[i_in].revents & POLLOUT) {
                ssize_t w = send(l.stdin_fd, payload + sent, payload_len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (w > 0) sent += (size_t)w;
                if ((w < 0 && errno != EAGAIN && errno != EINTR) || sent == payload_len) {
                    close(l.stdin_fd);
                    l.stdin_fd = -1;
                }
            } else {
                close(l.stdin_fd);
                l.stdin_fd = -1;
            }
        }
        if (i_out >= 0 && pf[i_out].revents) open_out = drain(l.out_fd, &c.out, lim.output_bytes, &c.out_over);
        if (i_err >= 0 && pf[i_err].revents) open_err = drain(l.err_fd, &c.err, lim.output_bytes, &c.err_over);
        if (i_ev >= 0 && pf[i_ev].revents) open_ev = drain(l.ev_fd, &c.ev, SBX_EVIDENCE_CAP, &c.ev_over);
        if (c.out_over || c.err_over || c.ev_over) {
            killed_output = 1;
            break;
        }
        if (i_pid >= 0 && (pf[i_pid].revents & POLLIN)) exited = 1;
        if (pidfd < 0) {
            siginfo_t si;
            memset(&si, 0, sizeof si);
            if (waitid(P_PID, (id_t)l.pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == l.pid)
                exited = 1;
        }
    }
    /* Kill whatever is left of the group (in a PID namespace, PID 1's
     * death already took the rest), then collect the last bytes. */
    kill_all(l.pid);
    int wst = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(l.pid, &wst, 0, &ru) < 0 && errno == EINTR) {
    }
    if (l.sweep_uid) {
        sweep_args sa = {l.sweep_uid};
        pid_t sp = spawn_vm(sweep_main, &sa, 0);
        if (sp > 0) waitpid(sp, NULL, 0);
    }
    if (!killed_output) {
        drain(l.out_fd, &c.out, lim.output_bytes, &c.out_over);
        drain(l.err_fd, &c.err, lim.output_bytes, &c.err_over);
        drain(l.ev_fd, &c.ev, SBX_EVIDENCE_CAP, &c.ev_over);
        if (c.out_over || c.err_over || c.ev_over) killed_output = 1;
    }
    if (l.stdin_fd >= 0) close(l.stdin_fd);
    close(l.out_fd);
    close(l.err_fd);
    close(l.ev_fd);
    if (pidfd >= 0) close(pidfd);
    if (l.workdir[0]) rm_tree(l.workdir);
    free(payload);

    /* classify */
    unsigned char *seen = base_xcalloc((size_t)(n_tests > 0 ? n_tests : 1), 1);
    int ready = 0, end = 0, memory = 0, sol_err = 0, bad = 0, passed = 0;
    char fmsg[400] = {0};
    parse_evidence(c.ev.data ? c.ev.data : "", c.ev.len, nonce, n_tests, seen, &ready, &end, &memory, &sol_err,
                   &bad, &passed, fmsg, sizeof fmsg);
    free(seen);
    res->passed = passed;
    double cpu_used = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
                      ru.ru_stime.tv_usec * 1e-6;
    double cpu_lim = lim.cpu_s > 0 ? lim.cpu_s : lim.timeout_s;
    int sig = WIFSIGNALED(wst) ? WTERMSIG(wst) : 0;
    int err_mentions_memory = c.err.data && strstr(c.err.data, "MemoryError") != NULL;
    char errline[200] = {0};
    tail_line(&c.err, errline, sizeof errline);

    if (killed_output) {
        res->status = REWARD_RUN_OUTPUT_LIMIT;
        snprintf(res->message, sizeof res->message, "output over %zu bytes", c.ev_over ? (size_t)SBX_EVIDENCE_CAP
                                                                                        : lim.output_bytes);
    } else if (killed_time || sig == SIGXCPU || (sig == SIGKILL && cpu_used >= cpu_lim - 0.05)) {
        res->status = REWARD_RUN_TIMEOUT;
        snprintf(res->message, sizeof res->message, "%s limit (%.3g s) after %d of %d tests",
                 killed_time ? "wall clock" : "CPU time", killed_time ? lim.timeout_s : cpu_lim, passed, n_tests);
    } else if (bad) {
        res->status = REWARD_RUN_SANDBOX_ERROR;
        snprintf(res->message, sizeof res->message, "%s", fmsg);
    } else if (!ready) {
        res->status = REWARD_RUN_SANDBOX_ERROR;
        snprintf(res->message, sizeof res->message, "harness did not start (%s %d): %s",
                 sig ? "signal" : "exit status", sig ? sig : WEXITSTATUS(wst), errline);
    } else if (memory || (!end && err_mentions_memory)) {
        res->status = REWARD_RUN_MEMORY;
        snprintf(res->message, sizeof res->message, "%s", fmsg[0] ? fmsg : "MemoryError");
    } else if (sol_err) {
        res->status = REWARD_RUN_RUNTIME_ERROR;
        snprintf(res->message, sizeof res->message, "%s", fmsg);
    } else if (!end) {
        res->status = REWARD_RUN_RUNTIME_ERROR;
        if (sig) snprintf(res->message, sizeof res->message, "killed by signal %d (%s) after %d of %d tests",
                          sig, sigabbrev_np(sig) ? sigabbrev_np(sig) : "?", passed, n_tests);
        else snprintf(res->message, sizeof res->message, "exited (status %d) before the tests finished",
                      WIFEXITED(wst) ? WEXITSTATUS(wst) : -1);
    } else if (passed == n_tests) {
        res->status = REWARD_RUN_PASSED;
    } else {
        res->status = REWARD_RUN_FAILED;
        snprintf(res->message, sizeof res->message, "%s", fmsg);
    }
    base_buf_free(&c.out);
    base_buf_free(&c.err);
    base_buf_free(&c.ev);
    res->seconds = base_now() - t0;
    return BASE_OK;
}
