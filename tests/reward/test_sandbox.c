/*
 * The code sandbox (reward_sandbox_run_tests): classification of outcomes
 * and the attack suite of issue #5 §4 (test_sandbox_attacks.c has the
 * verdict attacks of issue 12). Every attack must be contained,
 * classified, leave the machine unharmed (canary files outside the work
 * directory intact, no stray processes) and leave the next run unaffected
 * (a normal run right after still passes). Limits are small so each case
 * takes at most about a second.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <grp.h>
#include <unistd.h>

#include "base/base.h"
#include "reward/reward.h"
#include "test_common.h"

static const char *SQUARE = "def f(x):\n    return x * x\n";
static const char *TESTS3[] = {"assert f(2) == 4", "assert f(3) == 9", "assert f(-1) == 1"};

static reward_sandbox_limits small_limits(int namespaces) {
    reward_sandbox_limits l;
    reward_sandbox_limits_default(&l);
    l.timeout_s = 1.0;
    l.memory_bytes = (size_t)256 << 20;
    l.output_bytes = 16 << 10;
    l.file_bytes = 1 << 20;
    l.disk_bytes = 4 << 20;
    l.nproc = 16;
    l.namespaces = namespaces;
    return l;
}

static double g_timeout = 1.0; /* wall clock of the next runs */

static reward_run_result run(const char *code, const char *const *tests, int n, int namespaces) {
    reward_sandbox_limits l = small_limits(namespaces);
    l.timeout_s = g_timeout;
    reward_run_result r;
    assert_int_equal(reward_sandbox_run_tests(code, tests, n, NULL, &l, &r), BASE_OK);
    if (getenv("GRPO_TEST_VERBOSE"))
        fprintf(stderr, "  -> %s %d/%d iso=%#x %.2fs %s\n", reward_run_status_str(r.status), r.passed, r.total,
                r.isolation, r.seconds, r.message);
    return r;
}

/* Processes still alive under one of this process's sandbox uids (root
 * callers run code under 2000000000 + (pid % 15625) * 64 + (run % 64);
 * other test programs run sandboxes at the same time under their own).
 * Zombies waiting for init do not count. */
static int stray_sandbox_processes(void) {
    DIR *d = opendir("/proc");
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char path[300], buf[4096];
        snprintf(path, sizeof path, "/proc/%s/status", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        unsigned long uid = 0;
        char state = 0;
        while (fgets(buf, sizeof buf, f)) {
            if (!strncmp(buf, "State:", 6)) sscanf(buf + 6, " %c", &state);
            if (!strncmp(buf, "Uid:", 4)) sscanf(buf + 4, "%lu", &uid);
        }
        fclose(f);
        unsigned long lo = 2000000000ul + (unsigned long)(getpid() % 15625) * 64ul;
        if (uid >= lo && uid < lo + 64 && state != 'Z') n++;
    }
    closedir(d);
    return n;
}

/* The next run after an attack must behave normally. */
static void assert_next_run_ok(int namespaces) {
    reward_run_result r = run(SQUARE, TESTS3, 3, namespaces);
    assert_int_equal(r.status, REWARD_RUN_PASSED);
    assert_int_equal(r.passed, 3);
    if (geteuid() == 0) {
        /* processes killed a moment ago may still be on their way out */
        for (int i = 0; i < 50 && stray_sandbox_processes() > 0; i++) usleep(20000);
        assert_int_equal(stray_sandbox_processes(), 0);
    }
}

static void check_status(const char *code, reward_run_status want, int want_passed, int namespaces) {
    reward_run_result r = run(code, TESTS3, 3, namespaces);
    if (r.status != want || r.passed != want_passed)
        fprintf(stderr, "code:\n%s\ngot %s %d/3 (%s), want %s %d\n", code, reward_run_status_str(r.status),
                r.passed, r.message, reward_run_status_str(want), want_passed);
    assert_int_equal(r.status, want);
    assert_int_equal(r.passed, want_passed);
    /* the wall-clock kill bounds every run: its timeout plus a grace for
     * process start and teardown on a loaded machine */
    assert_true(r.seconds < g_timeout + 5.0);
    assert_next_run_ok(namespaces);
}

/* ------------------------------------------------------------------------ */

static void test_pass_fail_partial(void **st) {
    (void)st;
    reward_run_result r = run(SQUARE, TESTS3, 3, 1);
    assert_int_equal(r.status, REWARD_RUN_PASSED);
    assert_int_equal(r.passed, 3);
    assert_int_equal(r.total, 3);
    assert_true(r.isolation & REWARD_ISO_MOUNTNS); /* this machine allows namespaces */
    assert_true(r.isolation & REWARD_ISO_ROOTFS);
    assert_true(r.isolation & REWARD_ISO_SECCOMP);
    r = run("def f(x):\n    return x * 2\n", TESTS3, 3, 1);
    assert_int_equal(r.status, REWARD_RUN_FAILED);
    assert_int_equal(r.passed, 1); /* f(2) == 4 only */
    assert_non_null(strstr(r.message, "AssertionError"));
    /* a test that raises something else counts as failed too */
    const char *t2[] = {"assert f(2) == 4", "assert f('a') == 1"};
    r = run(SQUARE, t2, 2, 1);
    assert_int_equal(r.status, REWARD_RUN_FAILED);
    assert_int_equal(r.passed, 1);
    assert_non_null(strstr(r.message, "TypeError"));
    /* a solution that does not even import */
    r = run("def f(x)\n    return 1\n", TESTS3, 3, 1);
    assert_int_equal(r.status, REWARD_RUN_RUNTIME_ERROR);
    assert_int_equal(r.passed, 0);
    assert_non_null(strstr(r.message, "SyntaxError"));
    /* setup runs before the solution; a broken test is a sandbox error */
    reward_sandbox_limits l = small_limits(1);
    const char *tm[] = {"assert math.isqrt(f(3)) == 3"};
    assert_int_equal(reward_sandbox_run_tests(SQUARE, tm, 1, "import math", &l, &r), BASE_OK);
    assert_int_equal(r.status, REWARD_RUN_PASSED);
    const char *tb[] = {"assert f(2) == (", "assert f(2) == 4"};
    assert_int_equal(reward_sandbox_run_tests(SQUARE, tb, 2, NULL, &l, &r), BASE_OK);
    assert_int_equal(r.status, REWARD_RUN_SANDBOX_ERROR);
    /* a missing interpreter is a sandbox error, never a pass */
    l.python = "/nonexistent/python3";
    assert_int_equal(reward_sandbox_run_tests(SQUARE, TESTS3, 3, NULL, &l, &r), BASE_OK);
    assert_int_equal(r.status, REWARD_RUN_SANDBOX_ERROR);
    assert_int_equal(r.passed, 0);
}

static void test_trusted_values_still_compare(void **st) {
    (void)st;
    /* legitimate non-builtin results from the standard library compare */
    const char *code = "from fractions import Fraction\nfrom collections import OrderedDict\n"
                       "def half():\n    return Fraction(1, 2)\n"
                       "def od():\n    return OrderedDict(a=1)\n"
                       "def many():\n    return {1: [2, (3, 'x')], 'k': {4.5}}\n";
    const char *t[] = {"assert half() == Fraction(1, 2)", "assert half() == 0.5", "assert od() == {'a': 1}",
                       "assert many() == {1: [2, (3, 'x')], 'k': {4.5}}", "assert 0 < half() < 1",
                       "assert not (half() != 0.5)", "assert 'x' in many()[1][1] and half()"};
    reward_sandbox_limits l = small_limits(1);
    reward_run_result r;
    assert_int_equal(reward_sandbox_run_tests(code, t, 7, "from fractions import Fraction", &l, &r), BASE_OK);
    if (r.status != REWARD_RUN_PASSED) fprintf(stderr, "%s\n", r.message);
    assert_int_equal(r.status, REWARD_RUN_PASSED);
    assert_int_equal(r.passed, 7);
}

static void test_eq_always_true(void **st) {
    (void)st;
    const char *evil = "class E:\n"
                       "    def __eq__(s, o): return True\n"
                       "    def __ne__(s, o): return False\n"
                       "    def __lt__(s, o): return True\n"
                       "    def __gt__(s, o): return True\n"
                       "    def __bool__(s): return True\n"
                       "    def __hash__(s): return 0\n"
                       "def f(x):\n    return E()\n";
    check_status(evil, REWARD_RUN_FAILED, 0, 1);
    /* the same object hidden in a container, as a subclass of int, behind
     * `not` and `in` (its truth value alone is the solution's answer, as a
     * returned True would be: `assert f(1)` passes) */
    const char *t[] = {"assert [f(1)] == [1]", "assert 1 in [f(1)]", "assert not (f(1) != 1)", "assert g(1) == 1",
                       "assert f(1) == f(2)"};
    const char *code = "class E:\n    def __eq__(s, o): return True\n    def __bool__(s): return True\n"
                       "    def __ne__(s, o): return False\n"
                       "class I(int):\n    def __eq__(s, o): return True\n    __hash__ = int.__hash__\n"
                       "def f(x):\n    return E()\ndef g(x):\n    return I(7)\n";
    reward_run_result r = run(code, t, 5, 1);
    assert_int_equal(r.status, REWARD_RUN_FAILED);
    assert_int_equal(r.passed, 0);
}

static void test_exit_before_tests(void **st) {
    (void)st;
    check_status("import os\nos._exit(0)\n", REWARD_RUN_RUNTIME_ERROR, 0, 1);
    check_status("import sys\nsys.exit(0)\n", REWARD_RUN_RUNTIME_ERROR, 0, 1);
    /* exit from inside a test, after one passed: the passed one counts,
     * the run is not a pass */
    const char *t[] = {"assert f(2) == 4", "import os; os._exit(0)", "assert f(3) == 9"};
    reward_run_result r = run(SQUARE, t, 3, 1);
    assert_int_equal(r.status, REWARD_RUN_RUNTIME_ERROR);
    assert_int_equal(r.passed, 1);
    /* forged evidence without the nonce is ignored */
    check_status("import os\nfor i in range(3):\n    os.write(3, b'x P %d \\n' % i)\nos.write(3, b'x END -1 \\n')\n"
                 "os._exit(0)\n",
                 REWARD_RUN_RUNTIME_ERROR, 0, 1);
}

static void test_timeouts(void **st) {
    (void)st;
    check_status("while True:\n    pass\n", REWARD_RUN_TIMEOUT, 0, 1);
    check_status("import time\ntime.sleep(1000)\n", REWARD_RUN_TIMEOUT, 0, 1);
    check_status("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nx = 10 ** (10 ** 8)\n",
                 REWARD_RUN_TIMEOUT, 0, 1);
    /* blocking on stdin ends at once: stdin is /dev/null */
    check_status("x = input()\n", REWARD_RUN_RUNTIME_ERROR, 0, 1);
    /* a test that hangs after two passed keeps the two */
    const char *t[] = {"assert f(2) == 4", "assert f(3) == 9", "while True: pass"};
    reward_run_result r = run(SQUARE, t, 3, 1);
    assert_int_equal(r.status, REWARD_RUN_TIMEOUT);
    assert_int_equal(r.passed, 2);
}

static void test_fork_bombs_and_threads(void **st) {
    (void)st;
    const char *bombs[] = {
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        "import posix\nwhile True:\n    try:\n        posix.fork()\n    except OSError:\n        pass\n",
        "import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.fork()\n",
        "import subprocess\nwhile True:\n    try:\n        subprocess.Popen(['/usr/bin/python3', '-c', "
        "'import time; time.sleep(100)'])\n    except OSError:\n        pass\n",
    };
    for (size_t i = 0; i < sizeof bombs / sizeof bombs[0]; i++) {
        reward_run_result r = run(bombs[i], TESTS3, 3, 1);
        assert_true(r.status == REWARD_RUN_TIMEOUT || r.status == REWARD_RUN_RUNTIME_ERROR);
        assert_int_equal(r.passed, 0);
        assert_next_run_ok(1);
    }
    const char *threads = "import threading, time\nts = []\nwhile True:\n"
                          "    t = threading.Thread(target=time.sleep, args=(100,))\n    t.start()\n    ts.append(t)\n";
    check_status(threads, REWARD_RUN_RUNTIME_ERROR, 0, 1);
}

static void test_memory_recursion_segfault(void **st) {
    (void)st;
    check_status("x = bytearray(10 ** 10)\n", REWARD_RUN_MEMORY, 0, 1);
    /* growing to the cap 1 MB at a time takes over 1 s on a loaded machine
     * (seen at load 8 on 2 cores): the wall clock is not what is tested */
    g_timeout = 5.0;
    check_status("x = []\nwhile True:\n    x.append(' ' * 10 ** 6)\n", REWARD_RUN_MEMORY, 0, 1);
    g_timeout = 1.0;
    /* recursion inside a test: RecursionError is a failed test */
    const char *t[] = {"assert r(0) == 1"};
    reward_run_result rr = run("def r(n):\n    return r(n + 1)\n", t, 1, 1);
    assert_int_equal(rr.status, REWARD_RUN_FAILED);
    assert_non_null(strstr(rr.message, "RecursionError"));
    /* C-stack overflow and a plain segfault kill the interpreter (building
     * the nested list takes a while on a loaded machine: more time) */
    g_timeout = 5.0;
    check_status("import sys\nsys.setrecursionlimit(10 ** 7)\nl = []\nfor _ in range(10 ** 5):\n    l = [l]\n"
                 "repr(l)\n",
                 REWARD_RUN_RUNTIME_ERROR, 0, 1);
    g_timeout = 1.0;
    check_status("import ctypes\nctypes.string_at(0)\n", REWARD_RUN_RUNTIME_ERROR, 0, 1);
}

static void test_output_and_disk(void **st) {
    (void)st;
    check_status("print('x' * 10 ** 7)\n", REWARD_RUN_OUTPUT_LIMIT, 0, 1);
    check_status("import sys\nwhile True:\n    sys.stderr.write('y' * 1000)\n", REWARD_RUN_OUTPUT_LIMIT, 0, 1);
    /* junk on the channel to the verifier ends the solution's side */
    check_status("import os\nwhile True:\n    os.write(3, b'z' * 65536)\n", REWARD_RUN_RUNTIME_ERROR, 0, 1);
    /* one big file hits RLIMIT_FSIZE, many files the tmpfs size and inode
     * caps; either way the write fails inside the sandbox */
    check_status("f = open('big', 'wb')\nwhile True:\n    f.write(b'x' * 65536)\n", REWARD_RUN_RUNTIME_ERROR, 0, 1);
    check_status("i = 0\nwhile True:\n    open('f%d' % i, 'wb').write(b'x' * 500000)\n    i += 1\n",
                 REWARD_RUN_RUNTIME_ERROR, 0, 1);
    /* files may be used inside the work dir (the solution's: the tests run
     * in the verifier, which has its own) */
    const char *t[] = {"assert rd() == 'hello'"};
    reward_run_result r = run("open('data.txt', 'w').write('hello')\ndef rd():\n    return open('data.txt').read()\n",
                              t, 1, 1);
    assert_int_equal(r.status, REWARD_RUN_PASSED);
}

/* Files outside the work directory: a world-writable canary must survive
 * deletion, truncation and rmtree attempts; nothing may be created. */
static void test_files_outside(void **st) {
    (void)st;
    char dir[] = "/var/tmp/grpo-canary-XXXXXX";
    assert_non_null(mkdtemp(dir));
    chmod(dir, 0777);
    char canary[300];
    snprintf(canary, sizeof canary, "%s/canary.txt", dir);
    test_write_file(canary, "precious", 8);
    chmod(canary, 0666);
    char code[2048];
    snprintf(code, sizeof code,
             "import os, shutil, pathlib\nerrs = 0\n"
             "for act in (lambda: os.remove('%s'), lambda: open('%s', 'w').write('gone'),\n"
             "            lambda: shutil.rmtree('%s'), lambda: pathlib.Path('%s').unlink(),\n"
             "            lambda: open('%s/new.txt', 'w').write('x'), lambda: os.rename('%s', '/tmp/x'),\n"
             "            lambda: open('/etc/grpo-test', 'w'), lambda: os.system('rm -f %s')):\n"
             "    try:\n        act()\n    except Exception:\n        errs += 1\n"
             "def f(x):\n    return x * x\n",
             canary, canary, dir, canary, dir, canary, canary);
    reward_run_result r = run(code, TESTS3, 3, 1);
    assert_int_equal(r.status, REWARD_RUN_PASSED); /* the code ran to its end */
    char *txt = NULL;
    size_t len = 0;
    assert_int_equal(base_read_file(canary, &txt, &len), BASE_OK);
    assert_int_equal(len, 8);
    assert_memory_equal(txt, "precious", 8);
    free(txt);
    char other[300];
    snprintf(other, sizeof other, "%s/new.txt", dir);
    assert_false(base_file_exists(other));
    assert_false(base_file_exists("/etc/grpo-test"));
    test_rmdir(dir);
    assert_next_run_ok(1);
}

/* The parent's environment, home and other processes stay invisible. */
static void test_secrets_and_network(void **st) {
    (void)st;
    setenv("GRPO_TEST_SECRET", "s3cr3t-env", 1);
    char home[] = "/var/tmp/grpo-home-XXXXXX";
    assert_non_null(mkdtemp(home));
    chmod(home, 0755);
    char secret[300];
    snprintf(secret, sizeof secret, "%s/.secret", home);
    test_write_file(secret, "s3cr3t-file", 11);
    chmod(secret, 0644);
    char *old_home = getenv("HOME") ? base_xstrdup(getenv("HOME")) : NULL;
    setenv("HOME", home, 1);
    /* a listener on loopback in the parent's network namespace */
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(ls >= 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(ls, 4), 0);
    socklen_t al = sizeof a;
    getsockname(ls, (struct sockaddr *)&a, &al);
    char code[3000];
    snprintf(code, sizeof code,
             "import os, socket, glob\nleaks = []\n"
             "if any('s3cr3t' in v for v in os.environ.values()): leaks.append('environ')\n"
             "for p in glob.glob('/proc/*/environ') + ['%s', '/root/.bash_history']:\n"
             "    try:\n"
             "        if b's3cr3t' in open(p, 'rb').read(): leaks.append(p)\n"
             "    except Exception:\n        pass\n"
             "net = []\n"
             "for host in ('127.0.0.1', '1.1.1.1'):\n"
             "    try:\n"
             "        socket.create_connection((host, %d if host == '127.0.0.1' else 80), timeout=0.5)\n"
             "        net.append(host)\n"
             "    except OSError:\n        pass\n"
             "procs = len(glob.glob('/proc/[0-9]*'))\n",
             secret, (int)ntohs(a.sin_port));
    const char *t[] = {"assert leaks == []", "assert net == []", "assert procs <= 3"};
    reward_run_result r = run(code, t, 3, 1);
    if (r.status != REWARD_RUN_PASSED) fprintf(stderr, "%s\n", r.message);
    assert_int_equal(r.status, REWARD_RUN_PASSED);
    assert_true(r.isolation & REWARD_ISO_NETNS);
    close(ls);
    if (old_home) setenv("HOME", old_home, 1);
    else unsetenv("HOME");
    free(old_home);
    unsetenv("GRPO_TEST_SECRET");
    test_rmdir(home);
}

/* Non-root callers: the same containment through a user namespace (or the
 * logged fallback where the kernel refuses one). Runs in a child that
 * drops to nobody; results come back through a pipe. */
static void test_as_non_root(void **st) {
    (void)st;
    if (geteuid() != 0) {
        /* already non-root: the other tests covered this path */
        reward_run_result r = run(SQUARE, TESTS3, 3, 1);
        assert_int_equal(r.status, REWARD_RUN_PASSED);
        return;
    }
    char dir[] = "/var/tmp/grpo-canary-XXXXXX";
    assert_non_null(mkdtemp(dir));
    chmod(dir, 0777);
    char canary[300];
    snprintf(canary, sizeof canary, "%s/canary.txt", dir);
    test_write_file(canary, "precious", 8);
    chown(canary, 65534, 65534); /* owned by the very uid the code runs as */
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
            _exit(3);
        /* a process that changed uid is not dumpable and so may not write its
         * own /proc files (the user namespace's uid_map): namespaces are
         * refused, and the run is a sandbox error, never silently weaker */
        reward_run_result refused = run(SQUARE, TESTS3, 3, 1);
        int out0[3] = {refused.status, refused.passed, strstr(refused.message, "namespaces=false") != NULL};
        /* a user's process started by exec is dumpable */
        if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0) _exit(3);
        char code[1024];
        snprintf(code, sizeof code,
                 "import os\ntry:\n    os.remove('%s')\nexcept OSError:\n    pass\n"
                 "def f(x):\n    return x * x\n",
                 canary);
        const char *codes[] = {SQUARE, code, "import os\nwhile True:\n    try:\n        os.fork()\n"
                                             "    except OSError:\n        pass\n",
                               "import os\nos._exit(0)\n"};
        int out[4][3];
        for (int i = 0; i < 4; i++) {
            reward_run_result r = run(codes[i], TESTS3, 3, 1);
            out[i][0] = r.status;
            out[i][1] = r.passed;
            out[i][2] = r.isolation;
        }
        ssize_t w = write(p[1], out, sizeof out), w0 = write(p[1], out0, sizeof out0);
        _exit(w == (ssize_t)sizeof out && w0 == (ssize_t)sizeof out0 ? 0 : 4);
    }
    close(p[1]);
    int out[4][3], out0[3];
    ssize_t n = read(p[0], out, sizeof out), n0 = read(p[0], out0, sizeof out0);
    close(p[0]);
    int wst;
    waitpid(pid, &wst, 0);
    assert_true(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
    assert_int_equal(n, (ssize_t)sizeof out);
    assert_int_equal(n0, (ssize_t)sizeof out0);
    assert_int_equal(out0[0], REWARD_RUN_SANDBOX_ERROR);
    assert_int_equal(out0[1], 0);
    assert_true(out0[2]); /* the message names the explicit way out */
    fprintf(stderr, "  non-root isolation bits: %#x (%s)\n", out[0][2],
            out[0][2] & REWARD_ISO_USERNS ? "user namespace" : "fallback");
    assert_true(out[0][2] & REWARD_ISO_USERNS);
    assert_int_equal(out[0][0], REWARD_RUN_PASSED);
    assert_int_equal(out[1][0], REWARD_RUN_PASSED);
    assert_true(out[2][0] == REWARD_RUN_TIMEOUT || out[2][0] == REWARD_RUN_RUNTIME_ERROR);
    assert_int_equal(out[3][0], REWARD_RUN_RUNTIME_ERROR);
    assert_int_equal(out[3][1], 0);
    if (out[0][2] & REWARD_ISO_MOUNTNS) assert_true(base_file_exists(canary)); /* read-only mount held */
    test_rmdir(dir);
}

/* The fallback path (namespaces off): still classified, still no pass
 * without evidence, work dir removed, throw-away uid swept. */
static void test_fallback(void **st) {
    (void)st;
    char *tmp = test_tmpdir();
    chmod(tmp, 0755);
    char *old = getenv("TMPDIR") ? base_xstrdup(getenv("TMPDIR")) : NULL;
    setenv("TMPDIR", tmp, 1);
    reward_run_result r = run(SQUARE, TESTS3, 3, 0);
    assert_int_equal(r.status, REWARD_RUN_PASSED);
    assert_int_equal(r.isolation & (REWARD_ISO_PIDNS | REWARD_ISO_MOUNTNS | REWARD_ISO_NETNS), 0);
    check_status("import os\nos._exit(0)\n", REWARD_RUN_RUNTIME_ERROR, 0, 0);
    check_status("class E:\n    def __eq__(s, o): return True\ndef f(x):\n    return E()\n", REWARD_RUN_FAILED, 0, 0);
    check_status("while True:\n    pass\n", REWARD_RUN_TIMEOUT, 0, 0);
    check_status("x = bytearray(10 ** 10)\n", REWARD_RUN_MEMORY, 0, 0);
    check_status("print('x' * 10 ** 7)\n", REWARD_RUN_OUTPUT_LIMIT, 0, 0);
    /* fork bomb whose children leave the process group: swept by uid (root) */
    reward_run_result b = run("import os\nwhile True:\n    try:\n        if os.fork() == 0:\n            os.setsid()\n"
                              "    except OSError:\n        pass\n",
                              TESTS3, 3, 0);
    assert_true(b.status == REWARD_RUN_TIMEOUT || b.status == REWARD_RUN_RUNTIME_ERROR);
    assert_next_run_ok(0);
    /* every work dir was removed */
    DIR *d = opendir(tmp);
    assert_non_null(d);
    int left = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) left++;
    closedir(d);
    assert_int_equal(left, 0);
    if (old) setenv("TMPDIR", old, 1);
    else unsetenv("TMPDIR");
    free(old);
    test_rmdir(tmp);
    free(tmp);
}

static void test_humaneval_rows(void **st) {
    (void)st;
    /* canonical solutions pass, broken ones fail: a few rows of each set
     * (the scripts test runs many more through grpo.run_tests) */
    char *path = test_shared_path("data/humaneval.jsonl");
    base_jsonl *r;
    assert_int_equal(base_jsonl_open(path, &r), BASE_OK);
    reward_sandbox_limits l = small_limits(1);
    l.timeout_s = 5;
    for (int k = 0; k < 3; k++) {
        cJSON *row;
        assert_int_equal(base_jsonl_next(r, &row), BASE_OK);
        base_buf code = {0}, test = {0};
        base_buf_printf(&code, "%s%s", base_json_str(row, "prompt", ""), base_json_str(row, "canonical_solution", ""));
        base_buf_printf(&test, "%s\ncheck(%s)\n", base_json_str(row, "test", ""), base_json_str(row, "entry_point", ""));
        const char *t[] = {test.data};
        reward_run_result res;
        assert_int_equal(reward_sandbox_run_tests(code.data, t, 1, NULL, &l, &res), BASE_OK);
        assert_int_equal(res.status, REWARD_RUN_PASSED);
        base_buf_reset(&code);
        base_buf_printf(&code, "%s    return None\n", base_json_str(row, "prompt", ""));
        assert_int_equal(reward_sandbox_run_tests(code.data, t, 1, NULL, &l, &res), BASE_OK);
        assert_int_equal(res.status, REWARD_RUN_FAILED);
        base_buf_free(&code);
        base_buf_free(&test);
        cJSON_Delete(row);
    }
    base_jsonl_close(r);
    free(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pass_fail_partial),
        cmocka_unit_test(test_trusted_values_still_compare),
        cmocka_unit_test(test_eq_always_true),
        cmocka_unit_test(test_exit_before_tests),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_fork_bombs_and_threads),
        cmocka_unit_test(test_memory_recursion_segfault),
        cmocka_unit_test(test_output_and_disk),
        cmocka_unit_test(test_files_outside),
        cmocka_unit_test(test_secrets_and_network),
        cmocka_unit_test(test_as_non_root),
        cmocka_unit_test(test_fallback),
        cmocka_unit_test(test_humaneval_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
