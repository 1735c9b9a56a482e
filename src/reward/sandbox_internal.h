/*
 * Private to src/reward: the parts of the code sandbox.
 *   sandbox.c          one run: the two processes, the wall clock, the verdict
 *   sandbox_jail.c     starting one jailed interpreter (namespaces, minimal
 *                      root, seccomp, rlimits, uid)
 *   sandbox_harness.c  the protocol, the JSON codec and the runner (Python)
 *   sandbox_verifier.c the verifier (Python)
 */
#ifndef GRPO_REWARD_SANDBOX_INTERNAL_H
#define GRPO_REWARD_SANDBOX_INTERNAL_H

#include <stddef.h>
#include <sys/types.h>

#include "reward/reward.h"

/* Both sides start with this JSON codec (_grpo_dumps, _grpo_loads). */
extern const char reward_sandbox_json_py[];
/* The trusted side: runs the setup and the tests, never the solution, and
 * writes the verdict records. */
extern const char reward_sandbox_verifier_py[];
/* The untrusted side: runs the setup and the solution, then answers the
 * verifier's requests (look up a name, call, iterate ...) with values. */
extern const char reward_sandbox_runner_py[];

#define SBX_MAX_FDS 6

typedef struct {
    const reward_sandbox_limits *lim;
    char *const *argv;     /* argv[0]: the interpreter (lim->python) */
    int use_ns;            /* namespaces + minimal root (else: no namespaces) */
    int drop_uid;          /* root callers: run as uid/gid */
    uid_t uid;
    gid_t gid;
    const char *workdir;   /* without namespaces: the host work directory */
    int fds[SBX_MAX_FDS];  /* parent's ends that become the child's 0..n_fds-1 */
    int n_fds;
} sbx_child_cfg;

typedef struct {
    pid_t pid;
    int isolation;   /* REWARD_ISO_* applied */
    int ns_refused;  /* start failed because the kernel refused namespaces */
} sbx_child;

/* Start one jailed interpreter (clone like posix_spawn, set up, execve).
 * 0 with *out filled, or -1 with a one-line reason in msg. Thread-safe. */
int sbx_child_start(const sbx_child_cfg *cfg, sbx_child *out, char *msg, size_t cap);

/* Kill every process of `uid` (a throw-away uid of a run without a PID
 * namespace) from a helper running as that uid. Root callers only. */
void sbx_sweep_uid(uid_t uid);

#endif
