/*
 * The sandbox's jail: start one interpreter in a child that sees only a
 * minimal root, cannot reach the network, the host's processes or the
 * kernel's riskier interfaces, and runs under rlimits (docs/rewards.md,
 * "The sandbox").
 *
 * The child is made with clone(CLONE_VM | CLONE_VFORK), like posix_spawn:
 * a trainer with a large heap is not copied, and the child makes only
 * system calls until execve, reading a plan the parent prepared. With
 * namespaces (new user (non-root callers), mount, PID, network, IPC, UTS
 * and cgroup namespaces) the child:
 *   - makes every mount private and opens each bind source (O_PATH);
 *   - mounts a small tmpfs on /tmp and builds the new root in it: /usr
 *     (read-only, recursive bind), the host's /bin, /lib... links or
 *     read-only binds, the interpreter's prefix when it is outside /usr,
 *     /etc with only ld.so.cache and python3* configuration, /dev with
 *     null, zero, full, random and urandom, a fresh /proc of the new PID
 *     namespace and /tmp, a size-capped tmpfs that is the work directory;
 *   - pivot_roots into it, detaches the old root and makes the new root
 *     read-only.
 * Always: setsid, rlimits, a fixed environment, no_new_privs, a parent-
 * death signal, a seccomp filter (below), the throw-away uid for root
 * callers, and nothing open but the fds the parent hands over.
 */
#include "reward/sandbox_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define JAIL_STACK (128 * 1024)
#define JAIL_OPS 48
#define JAIL_PATH 512
#define JAIL_STAGE "/tmp" /* where the new root is built (inside the new mount namespace) */

/* ------------------------------------------------------------------------ */
/* The plan of the minimal root, made by the parent                         */

enum { J_DIR, J_LINK, J_BIND, J_FILE, J_PROC, J_TMP };

typedef struct {
    int kind, required;
    char src[JAIL_PATH]; /* host path (J_BIND, J_FILE) or link target (J_LINK) */
    char dst[JAIL_PATH]; /* path inside the new root, without the leading '/' */
} jail_op;

typedef struct {
    jail_op op[JAIL_OPS];
    int n;
} jail_plan;

static int is_prefix_dir(const char *dir, const char *path) {
    size_t n = strlen(dir);
    return !strncmp(dir, path, n) && (path[n] == '/' || path[n] == 0);
}

static int plan_add(jail_plan *p, int kind, int required, const char *src, const char *dst) {
    if (p->n == JAIL_OPS || strlen(src) >= JAIL_PATH || strlen(dst) >= JAIL_PATH) return -1;
    jail_op *o = &p->op[p->n++];
    o->kind = kind;
    o->required = required;
    snprintf(o->src, sizeof o->src, "%s", src);
    snprintf(o->dst, sizeof o->dst, "%s", dst);
    return 0;
}

/* mkdir -p of an absolute path inside the new root */
static int plan_dirs(jail_plan *p, const char *abs) {
    char part[JAIL_PATH];
    size_t n = strlen(abs);
    if (n >= JAIL_PATH || abs[0] != '/') return -1;
    for (size_t i = 1; i <= n; i++) {
        if (abs[i] != '/' && abs[i] != 0) continue;
        if (i == 1) continue;
        memcpy(part, abs + 1, i - 1);
        part[i - 1] = 0;
        int have = 0;
        for (int k = 0; k < p->n; k++) have |= p->op[k].kind == J_DIR && !strcmp(p->op[k].dst, part);
        if (!have && plan_add(p, J_DIR, 1, "", part) < 0) return -1;
    }
    return 0;
}

static int plan_bind(jail_plan *p, const char *host, int required) {
    if (plan_dirs(p, host) < 0) return -1;
    return plan_add(p, J_BIND, required, host, host + 1);
}

/* The directory above the interpreter's bin/, when it is outside /usr. */
static int plan_prefix(jail_plan *p, const char *interp) {
    char d[JAIL_PATH];
    if (!interp || interp[0] != '/' || strlen(interp) >= sizeof d) return 0;
    snprintf(d, sizeof d, "%s", interp);
    for (int up = 0; up < 2; up++) {
        char *s = strrchr(d, '/');
        if (!s || s == d) return 0; /* the prefix would be "/": nothing to bind */
        *s = 0;
    }
    if (is_prefix_dir("/usr", d) || is_prefix_dir(JAIL_STAGE, d)) return 0;
    for (int k = 0; k < p->n; k++)
        if (p->op[k].kind == J_BIND && is_prefix_dir(p->op[k].src, d)) return 0;
    struct stat s;
    if (stat(d, &s) < 0 || !S_ISDIR(s.st_mode)) return 0;
    return plan_bind(p, d, 0);
}

static int plan_build(jail_plan *p, const char *interp) {
    p->n = 0;
    int r = 0;
    r |= plan_bind(p, "/usr", 1);
    static const char *const tops[] = {"bin", "sbin", "lib", "lib32", "lib64", "libx32"};
    for (size_t i = 0; i < sizeof tops / sizeof tops[0]; i++) {
        char host[32], target[JAIL_PATH];
        snprintf(host, sizeof host, "/%s", tops[i]);
        struct stat s;
        if (lstat(host, &s) < 0) continue;
        if (S_ISLNK(s.st_mode)) {
            ssize_t n = readlink(host, target, sizeof target - 1);
            if (n <= 0) continue;
            target[n] = 0;
            r |= plan_add(p, J_LINK, 1, target, tops[i]);
        } else if (S_ISDIR(s.st_mode)) {
            r |= plan_bind(p, host, 0);
        }
    }
    char real[PATH_MAX];
    if (interp && realpath(interp, real)) r |= plan_prefix(p, real);
    r |= plan_prefix(p, interp);
    r |= plan_add(p, J_DIR, 1, "", "etc");
    if (access("/etc/ld.so.cache", R_OK) == 0) r |= plan_add(p, J_FILE, 0, "/etc/ld.so.cache", "etc/ld.so.cache");
    DIR *d = opendir("/etc");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strncmp(e->d_name, "python3", 7)) continue;
            char host[300];
            snprintf(host, sizeof host, "/etc/%s", e->d_name);
            struct stat s;
            if (stat(host, &s) == 0 && S_ISDIR(s.st_mode)) r |= plan_bind(p, host, 0);
        }
        closedir(d);
    }
    r |= plan_add(p, J_DIR, 1, "", "dev");
    static const char *const devs[] = {"null", "zero", "full", "random", "urandom"};
    for (size_t i = 0; i < sizeof devs / sizeof devs[0]; i++) {
        char host[32], dst[32];
        snprintf(host, sizeof host, "/dev/%s", devs[i]);
        snprintf(dst, sizeof dst, "dev/%s", devs[i]);
        r |= plan_add(p, J_FILE, i == 0, host, dst);
    }
    r |= plan_add(p, J_LINK, 1, "/proc/self/fd", "dev/fd");
    r |= plan_add(p, J_LINK, 1, "/proc/self/fd/0", "dev/stdin");
    r |= plan_add(p, J_LINK, 1, "/proc/self/fd/1", "dev/stdout");
    r |= plan_add(p, J_LINK, 1, "/proc/self/fd/2", "dev/stderr");
    r |= plan_add(p, J_DIR, 1, "", "proc");
    r |= plan_add(p, J_PROC, 0, "", "proc");
    r |= plan_add(p, J_DIR, 1, "", "tmp");
    r |= plan_add(p, J_TMP, 1, "", "tmp");
    return r ? -1 : 0;
}

/* ------------------------------------------------------------------------ */
/* seccomp: the filter every sandboxed process runs under                   */

#if defined(__x86_64__)
#define SBX_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SBX_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

#ifdef SBX_AUDIT_ARCH
#define SBX_FILTER_MAX 256
static struct sock_filter g_filter[SBX_FILTER_MAX];
static unsigned short g_filter_len;
static pthread_once_t g_filter_once = PTHREAD_ONCE_INIT;

/* Denied with EPERM: other processes' memory, new namespaces and mounts,
 * kernel keyrings, BPF, perf, userfaultfd, io_uring, modules, reboot,
 * clocks, file handles, and the like; and memory that RLIMIT_AS does not
 * count: memfd (written, never mapped) and System V / POSIX IPC objects,
 * which without namespaces also outlive the run in the host's IPC
 * namespace. */
static const int g_denied[] = {
    SYS_memfd_create, SYS_shmget, SYS_shmat, SYS_shmctl, SYS_shmdt, SYS_msgget, SYS_msgsnd, SYS_msgrcv, SYS_msgctl,
    SYS_semget, SYS_semop, SYS_semtimedop, SYS_semctl, SYS_mq_open,
#ifdef SYS_memfd_secret
    SYS_memfd_secret,
#endif
    SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev, SYS_kcmp, SYS_mount, SYS_umount2,
    SYS_pivot_root, SYS_chroot, SYS_unshare, SYS_setns, SYS_keyctl, SYS_add_key, SYS_request_key, SYS_bpf,
    SYS_perf_event_open, SYS_userfaultfd, SYS_kexec_load, SYS_init_module, SYS_finit_module,
    SYS_delete_module, SYS_reboot, SYS_swapon, SYS_swapoff, SYS_acct, SYS_quotactl, SYS_name_to_handle_at,
    SYS_open_by_handle_at, SYS_settimeofday, SYS_clock_settime, SYS_clock_adjtime, SYS_adjtimex,
    SYS_sethostname, SYS_setdomainname, SYS_syslog, SYS_vhangup, SYS_personality, SYS_fanotify_init,
#ifdef SYS_pidfd_getfd
    SYS_pidfd_getfd,
#endif
#ifdef SYS_io_uring_setup
    SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register,
#endif
#ifdef SYS_open_tree
    SYS_open_tree, SYS_move_mount, SYS_fsopen, SYS_fsconfig, SYS_fsmount, SYS_fspick,
#endif
#ifdef SYS_mount_setattr
    SYS_mount_setattr,
#endif
#ifdef SYS_kexec_file_load
    SYS_kexec_file_load,
#endif
#ifdef SYS_quotactl_fd
    SYS_quotactl_fd,
#endif
#ifdef SYS_lookup_dcookie
    SYS_lookup_dcookie,
#endif
#ifdef SYS_uselib
    SYS_uselib,
#endif
#ifdef SYS_iopl
    SYS_iopl, SYS_ioperm,
#endif
#ifdef SYS_modify_ldt
    SYS_modify_ldt,
#endif
};

#define F_STMT(code, k) ((struct sock_filter)BPF_STMT(code, k))
#define F_JUMP(code, k, jt, jf) ((struct sock_filter)BPF_JUMP(code, k, jt, jf))
#define F_RET_ERRNO(e) F_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((e) & SECCOMP_RET_DATA))
#define F_ALLOW F_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)
#define F_LD_NR F_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr))
#define F_LD_ARG0 F_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]))

static void filter_build(void) {
    struct sock_filter *f = g_filter;
    int n = 0;
    f[n++] = F_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    f[n++] = F_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SBX_AUDIT_ARCH, 1, 0);
    f[n++] = F_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    f[n++] = F_LD_NR;
#if defined(__x86_64__)
    f[n++] = F_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1); /* x32 system calls */
    f[n++] = F_RET_ERRNO(EPERM);
#endif
    for (size_t i = 0; i < sizeof g_denied / sizeof g_denied[0]; i++) {
        f[n++] = F_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)g_denied[i], 0, 1);
        f[n++] = F_RET_ERRNO(EPERM);
    }
    /* sockets: AF_UNIX only (no network even without a network namespace) */
    static const int sock_calls[] = {SYS_socket, SYS_socketpair};
    for (int i = 0; i < 2; i++) {
        f[n++] = F_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)sock_calls[i], 0, 4);
        f[n++] = F_LD_ARG0;
        f[n++] = F_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, 0, 1);
        f[n++] = F_ALLOW;
        f[n++] = F_RET_ERRNO(EAFNOSUPPORT);
    }
    /* clone: no new namespaces; clone3 (flags behind a pointer): ENOSYS,
     * so libc falls back to clone */
    f[n++] = F_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 4);
    f[n++] = F_LD_ARG0;
    f[n++] = F_JUMP(BPF_JMP | BPF_JSET | BPF_K,
                    CLONE_NEWNS | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS |
                        CLONE_NEWCGROUP,
                    0, 1);
    f[n++] = F_RET_ERRNO(EPERM);
    f[n++] = F_ALLOW;
#ifdef SYS_clone3
    f[n++] = F_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 0, 1);
    f[n++] = F_RET_ERRNO(ENOSYS);
#endif
    f[n++] = F_ALLOW;
    if (n > SBX_FILTER_MAX) base_die("sandbox: seccomp filter of %d instructions over %d", n, SBX_FILTER_MAX);
    g_filter_len = (unsigned short)n;
}
#endif

/* ------------------------------------------------------------------------ */
/* The child: system calls only, on its own stack, sharing the parent's
 * memory (CLONE_VM) while the calling thread waits (CLONE_VFORK).          */

enum {
    ST_SETSID = 1, ST_MAPS, ST_PRIVATE, ST_OPEN, ST_ROOTFS, ST_PIVOT, /* namespace and root setup */
    ST_PROC,                                                        /* a warning */
    ST_CHDIR, ST_FDS, ST_RLIMIT, ST_CREDS, ST_PRCTL, ST_SECCOMP, ST_EXEC,
};

typedef struct {
    int stage, err, op;
} child_report;

typedef struct {
    const sbx_child_cfg *cfg;
    const jail_plan *plan;
    int userns;
    char uid_map[64], gid_map[64];
    char tmpfs_opts[160];
    struct rlimit rl[6];
    int rl_res[6];
    int status_fd;
    char *const *envp;
} child_args;

static void report(int fd, int stage, int op) {
    child_report r = {stage, errno, op};
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

/* dst = a + "/" + b, bounded (no allocation in the child) */
static void join2(char *dst, size_t cap, const char *a, const char *b) {
    size_t i = 0;
    for (const char *s = a; *s && i + 1 < cap; s++) dst[i++] = *s;
    if (i + 1 < cap) dst[i++] = '/';
    for (const char *s = b; *s && i + 1 < cap; s++) dst[i++] = *s;
    dst[i] = 0;
}

static void fd_path(char *dst, int fd) {
    static const char pre[] = "/proc/self/fd/";
    char digits[12];
    int n = 0;
    do {
        digits[n++] = (char)('0' + fd % 10);
        fd /= 10;
    } while (fd > 0 && n < 11);
    memcpy(dst, pre, sizeof pre - 1);
    for (int i = 0; i < n; i++) dst[sizeof pre - 1 + i] = digits[n - 1 - i];
    dst[sizeof pre - 1 + n] = 0;
}

static int set_attr(const char *path, unsigned flags, unsigned long long attrs) {
    struct mount_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.attr_set = attrs;
    return (int)syscall(SYS_mount_setattr, AT_FDCWD, path, flags, &attr, sizeof attr);
}

/* Build the minimal root and pivot into it; -1 after a report. */
static int jail_root(const child_args *a) {
    const jail_plan *p = a->plan;
    int st = a->status_fd;
    int src[JAIL_OPS];
    char path[JAIL_PATH + 16], fdp[32];
    for (int i = 0; i < p->n; i++) {
        src[i] = -1;
        const jail_op *o = &p->op[i];
        if (o->kind != J_BIND && o->kind != J_FILE) continue;
        src[i] = open(o->src, O_PATH | O_CLOEXEC | (o->kind == J_BIND ? O_DIRECTORY : 0));
        if (src[i] < 0 && o->required) {
            report(st, ST_OPEN, i);
            return -1;
        }
    }
    if (mount("tmpfs", JAIL_STAGE, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=1024,mode=0755") < 0) {
        report(st, ST_ROOTFS, -1);
        return -1;
    }
    for (int i = 0; i < p->n; i++) {
        const jail_op *o = &p->op[i];
        join2(path, sizeof path, JAIL_STAGE, o->dst);
        int bad = 0;
        switch (o->kind) {
        case J_DIR:
            bad = mkdir(path, 0755) < 0 && errno != EEXIST;
            break;
        case J_LINK:
            bad = symlink(o->src, path) < 0;
            break;
        case J_BIND:
            if (src[i] < 0) break;
            fd_path(fdp, src[i]);
            bad = mount(fdp, path, NULL, MS_BIND | MS_REC, NULL) < 0 ||
                  set_attr(path, AT_RECURSIVE, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV) < 0;
            break;
        case J_FILE: {
            if (src[i] < 0) break;
            int f = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0444);
            if (f < 0) {
                bad = 1;
                break;
            }
            close(f);
            fd_path(fdp, src[i]);
            bad = mount(fdp, path, NULL, MS_BIND, NULL) < 0 ||
                  set_attr(path, 0, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID) < 0;
            break;
        }
        case J_PROC:
            if (mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) report(st, ST_PROC, i);
            break;
        case J_TMP:
            bad = mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, a->tmpfs_opts) < 0;
            break;
        }
        if (bad && (o->required || o->kind == J_BIND || o->kind == J_FILE)) {
            report(st, ST_ROOTFS, i);
            return -1;
        }
    }
    for (int i = 0; i < p->n; i++)
        if (src[i] >= 0) close(src[i]);
    if (chdir(JAIL_STAGE) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 || umount2(".", MNT_DETACH) < 0 ||
        chdir("/") < 0 || set_attr("/", 0, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV) < 0) {
        report(st, ST_PIVOT, -1);
        return -1;
    }
    return 0;
}

static int child_main(void *arg) {
    const child_args *a = arg;
    const sbx_child_cfg *c = a->cfg;
    int st = a->status_fd;
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP) sigaction(s, &dfl, NULL); /* glibc-internal ones fail: fine */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    if (setsid() < 0) {
        report(st, ST_SETSID, -1);
        _exit(127);
    }
    if (c->use_ns) {
        if (a->userns && (write_proc_file("/proc/self/setgroups", "deny") < 0 ||
                          write_proc_file("/proc/self/uid_map", a->uid_map) < 0 ||
                          write_proc_file("/proc/self/gid_map", a->gid_map) < 0)) {
            report(st, ST_MAPS, -1);
            _exit(127);
        }
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
            report(st, ST_PRIVATE, -1);
            _exit(127);
        }
        if (jail_root(a) < 0) _exit(127);
    }
    if (chdir(c->use_ns ? "/tmp" : c->workdir) < 0) {
        report(st, ST_CHDIR, -1);
        _exit(127);
    }
    /* Move the ends to 0..n-1 via fds >= 10 (an end may already sit on a
     * target number); dup2 clears close-on-exec. The status pipe goes to
     * n, close-on-exec. */
    int n = c->n_fds, tmp[SBX_MAX_FDS + 1];
    for (int i = 0; i <= n; i++) {
        tmp[i] = fcntl(i < n ? c->fds[i] : st, F_DUPFD_CLOEXEC, 10);
        if (tmp[i] < 0) {
            report(st, ST_FDS, -1);
            _exit(127);
        }
    }
    for (int i = 0; i < n; i++) {
        if (dup2(tmp[i], i) < 0) {
            report(tmp[n], ST_FDS, -1);
            _exit(127);
        }
    }
    if (dup3(tmp[n], n, O_CLOEXEC) < 0) {
        report(tmp[n], ST_FDS, -1);
        _exit(127);
    }
    st = n;
    if (syscall(SYS_close_range, (unsigned)n + 1, ~0u, 0u) < 0) {
        report(st, ST_FDS, -1);
        _exit(127);
    }
    for (int i = 0; i < 6; i++) {
        if (setrlimit(a->rl_res[i], &a->rl[i]) < 0) {
            report(st, ST_RLIMIT, -1);
            _exit(127);
        }
    }
    if (c->drop_uid) {
        /* raw system calls: glibc's setuid would try to signal threads that
         * exist only in the parent */
        if (syscall(SYS_setgroups, 0, NULL) < 0 || syscall(SYS_setresgid, c->gid, c->gid, c->gid) < 0 ||
            syscall(SYS_setresuid, c->uid, c->uid, c->uid) < 0) {
            report(st, ST_CREDS, -1);
            _exit(127);
        }
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) {
        report(st, ST_PRCTL, -1);
        _exit(127);
    }
#ifdef SBX_AUDIT_ARCH
    struct sock_fprog prog = {g_filter_len, g_filter};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) {
        report(st, ST_SECCOMP, -1);
        _exit(127);
    }
#endif
    execve(c->argv[0], c->argv, a->envp);
    report(st, ST_EXEC, -1);
    _exit(127);
}

/* clone like posix_spawn; returns the pid or -1 (errno set). */
static pid_t spawn_vm(int (*fn)(void *), void *arg, int ns_flags) {
    char *stack = malloc(JAIL_STACK);
    if (!stack) return -1;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pid_t pid = clone(fn, stack + JAIL_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD | ns_flags, arg);
    int e = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    free(stack);
    errno = e;
    return pid;
}

static const char *stage_name(int s) {
    switch (s) {
    case ST_SETSID: return "setsid";
    case ST_MAPS: return "writing uid_map/gid_map";
    case ST_PRIVATE: return "making mounts private";
    case ST_OPEN: return "opening a path of the minimal root";
    case ST_ROOTFS: return "building the minimal root";
    case ST_PIVOT: return "pivot_root into the minimal root";
    case ST_PROC: return "mounting /proc";
    case ST_CHDIR: return "chdir to the work dir";
    case ST_FDS: return "setting up file descriptors";
    case ST_RLIMIT: return "setrlimit";
    case ST_CREDS: return "dropping to the sandbox uid";
    case ST_PRCTL: return "prctl";
    case ST_SECCOMP: return "installing the seccomp filter";
    case ST_EXEC: return "execve of the interpreter";
    }
    return "?";
}

static void warn_proc_once(int err) {
    static atomic_int warned;
    int expect = 0;
    if (atomic_compare_exchange_strong(&warned, &expect, 1))
        base_warn("sandbox: mounting /proc in the sandbox failed (%s); the code runs without /proc",
                  strerrordesc_np(err));
}

int sbx_child_start(const sbx_child_cfg *c, sbx_child *out, char *msg, size_t cap) {
    /* HOME and TMPDIR: the work directory (without namespaces /tmp is the
     * host's, and what is written there outlives the run) */
    char home[JAIL_PATH + 8], tmpdir[JAIL_PATH + 8];
    const char *wd = c->use_ns ? "/tmp" : c->workdir;
    snprintf(home, sizeof home, "HOME=%s", wd);
    snprintf(tmpdir, sizeof tmpdir, "TMPDIR=%s", wd);
    char *const envp[] = {"PYTHONHASHSEED=0", "PYTHONDONTWRITEBYTECODE=1", "PYTHONIOENCODING=utf-8",
                          "LC_ALL=C.UTF-8", "PATH=/usr/bin:/bin", home, tmpdir, NULL};
    const reward_sandbox_limits *lim = c->lim;
    memset(out, 0, sizeof *out);
    if (c->n_fds < 0 || c->n_fds > SBX_MAX_FDS) base_die("sbx_child_start: %d fds", c->n_fds);
#ifdef SBX_AUDIT_ARCH
    pthread_once(&g_filter_once, filter_build);
#endif
    int is_root = geteuid() == 0;
    jail_plan *plan = NULL;
    if (c->use_ns) {
        plan = base_xmalloc(sizeof *plan);
        if (plan_build(plan, c->argv[0]) < 0) {
            snprintf(msg, cap, "sandbox: the minimal root needs more than %d entries or longer paths", JAIL_OPS);
            free(plan);
            return -1;
        }
    }
    child_args a;
    memset(&a, 0, sizeof a);
    a.cfg = c;
    a.plan = plan;
    a.userns = c->use_ns && !is_root;
    a.envp = envp;
    snprintf(a.uid_map, sizeof a.uid_map, "%u %u 1", (unsigned)geteuid(), (unsigned)geteuid());
    snprintf(a.gid_map, sizeof a.gid_map, "%u %u 1", (unsigned)getegid(), (unsigned)getegid());
    unsigned tuid = c->drop_uid ? (unsigned)c->uid : (unsigned)geteuid();
    unsigned tgid = c->drop_uid ? (unsigned)c->gid : (unsigned)getegid();
    snprintf(a.tmpfs_opts, sizeof a.tmpfs_opts, "size=%zu,nr_inodes=4096,mode=0700,uid=%u,gid=%u",
             lim->disk_bytes, tuid, tgid);
    double cpu = lim->cpu_s > 0 ? lim->cpu_s : lim->timeout_s;
    rlim_t vals[6] = {(rlim_t)ceil(cpu < 1 ? 1 : cpu), lim->memory_bytes, lim->file_bytes, (rlim_t)lim->nproc,
                      (rlim_t)lim->nofile, 0};
    int res[6] = {RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC, RLIMIT_NOFILE, RLIMIT_CORE};
    for (int i = 0; i < 6; i++) {
        a.rl_res[i] = res[i];
        a.rl[i].rlim_cur = vals[i];
        a.rl[i].rlim_max = i == 0 ? vals[i] + 1 : vals[i]; /* SIGXCPU first, SIGKILL 1 s later */
    }
    int ps[2];
    CHECK_SYS(pipe2(ps, O_CLOEXEC)); /* fd exhaustion in the trainer is a bug */
    a.status_fd = ps[1];
    int flags = 0;
    if (c->use_ns)
        flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP |
                (a.userns ? CLONE_NEWUSER : 0);
    pid_t pid = spawn_vm(child_main, &a, flags);
    int clone_err = errno;
    close(ps[1]);
    /* the child has exec'd or exited: its reports are in the pipe */
    child_report rep[8];
    int n_rep = 0;
    if (pid > 0) {
        ssize_t n;
        while (n_rep < 8 && (n = read(ps[0], &rep[n_rep], sizeof rep[0])) == (ssize_t)sizeof rep[0]) n_rep++;
    }
    close(ps[0]);
    int fatal = -1, proc_ok = 1;
    for (int i = 0; i < n_rep; i++) {
        if (rep[i].stage == ST_PROC) {
            proc_ok = 0;
            warn_proc_once(rep[i].err);
        } else if (fatal < 0) {
            fatal = i;
        }
    }
    if (pid < 0) {
        free(plan);
        out->ns_refused = c->use_ns;
        snprintf(msg, cap, "sandbox: clone%s: %s", c->use_ns ? " with namespaces" : "", strerrordesc_np(clone_err));
        return -1;
    }
    if (fatal >= 0) {
        waitpid(pid, NULL, 0);
        int s = rep[fatal].stage, op = rep[fatal].op;
        out->ns_refused = s >= ST_MAPS && s <= ST_PIVOT;
        if (plan && op >= 0 && op < plan->n)
            snprintf(msg, cap, "sandbox: %s (%s%s/%s): %s", stage_name(s), plan->op[op].src,
                     plan->op[op].src[0] ? " -> " : "", plan->op[op].dst, strerrordesc_np(rep[fatal].err));
        else
            snprintf(msg, cap, "sandbox: %s failed: %s", stage_name(s), strerrordesc_np(rep[fatal].err));
        free(plan);
        return -1;
    }
    free(plan);
    out->pid = pid;
    out->isolation = (c->drop_uid ? REWARD_ISO_UID : 0) |
                     (c->use_ns ? REWARD_ISO_PIDNS | REWARD_ISO_MOUNTNS | REWARD_ISO_NETNS | REWARD_ISO_ROOTFS : 0) |
                     (a.userns ? REWARD_ISO_USERNS : 0) | (c->use_ns && proc_ok ? REWARD_ISO_PROC : 0);
#ifdef SBX_AUDIT_ARCH
    out->isolation |= REWARD_ISO_SECCOMP;
#endif
    return 0;
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

void sbx_sweep_uid(uid_t uid) {
    sweep_args sa = {uid};
    pid_t sp = spawn_vm(sweep_main, &sa, 0);
    if (sp > 0) waitpid(sp, NULL, 0);
}
