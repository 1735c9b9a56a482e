/*
 * The code sandbox against solutions that try to fool the verdict or to see
 * what they should not (issue 12, defect 4). Each attack is a wrong
 * solution (f(x) = 0 or worse where the tests want x * x) that tries to
 * score anyway: it must pass no test, in the normal mode and, for attacks
 * that do not read host files, also with namespaces=false (the explicit
 * fallback, which is documented to expose the host's files). Visibility
 * checks (what the code can see or change) run in the normal mode. After
 * every attack a correct solution must still pass.
 */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "reward/reward.h"
#include "sandbox_attack.h"
#include "test_common.h"


/* A wrong solution with an attack: no test may pass, in both modes. */
static void scores_zero_tests(const char *what, const char *code, const char *const *tests, int n, int both,
                              double timeout) {
    /* without namespaces a non-root caller's code runs as its uid and may
     * signal and read it (docs/rewards.md): that mode is attacked as root */
    if (geteuid() != 0) both = 0;
    for (int ns = 1; ns >= (both ? 0 : 1); ns--) {
        reward_run_result r = run_with(code, tests, n, NULL, ns, timeout);
        if (r.passed != 0 || r.status == REWARD_RUN_PASSED || r.status == REWARD_RUN_SANDBOX_ERROR)
            fprintf(stderr, "attack '%s' (namespaces=%d) scored %d/%d: %s %s\n", what, ns, r.passed, r.total,
                    reward_run_status_str(r.status), r.message);
        assert_int_equal(r.passed, 0);
        assert_true(r.status != REWARD_RUN_PASSED);
        assert_true(r.status != REWARD_RUN_SANDBOX_ERROR); /* the scripts' nil: a 0 escaped */
        next_run_ok(ns);
    }
}

static void scores_zero(const char *what, const char *code, int both) {
    scores_zero_tests(what, code, TESTS3, 3, both, 5.0);
}

/* ------------------------------------------------------------------------ */
/* The three attack families of the issue                                   */

/* Reach the harness's locals through frames and replace the compiled tests
 * by `pass`, at import time and again from inside the call. */
static void test_frames(void **st) {
    (void)st;
    scores_zero("frames: compiled tests made pass",
                "import sys\n"
                "def _pwn():\n"
                "    fr = sys._getframe()\n"
                "    while fr is not None:\n"
                "        for k, v in list(fr.f_locals.items()):\n"
                "            if isinstance(v, list) and v and all(type(c).__name__ == 'code' for c in v):\n"
                "                v[:] = [compile('pass', '<x>', 'exec')] * len(v)\n"
                "            if isinstance(v, dict) and 'tests' in v and isinstance(v['tests'], list):\n"
                "                v['tests'][:] = ['pass'] * len(v['tests'])\n"
                "        fr = fr.f_back\n"
                "_pwn()\n"
                "def f(x):\n"
                "    _pwn()\n"
                "    return 0\n",
                1);
    /* inspect, traceback frames and generator frames to the same end */
    scores_zero("frames via inspect, tracebacks and generators",
                "import inspect\n"
                "def _walk(fr):\n"
                "    while fr is not None:\n"
                "        for v in list(fr.f_locals.values()):\n"
                "            if isinstance(v, list) and v and all(inspect.iscode(c) for c in v):\n"
                "                v[:] = [compile('pass', '<x>', 'exec')] * len(v)\n"
                "        fr = fr.f_back\n"
                "def f(x):\n"
                "    _walk(inspect.currentframe())\n"
                "    try:\n"
                "        raise ValueError\n"
                "    except ValueError as e:\n"
                "        _walk(e.__traceback__.tb_frame)\n"
                "    def g():\n"
                "        yield me.gi_frame\n"
                "    me = g()\n"
                "    _walk(next(me))\n"
                "    for s in inspect.stack():\n"
                "        _walk(s.frame)\n"
                "    return 0\n",
                1);
}

/* The same through the garbage collector. */
static void test_gc(void **st) {
    (void)st;
    scores_zero("gc: compiled tests made pass",
                "import gc\n"
                "def _pwn():\n"
                "    for o in gc.get_objects():\n"
                "        if isinstance(o, list) and o and all(type(c).__name__ == 'code' for c in o):\n"
                "            o[:] = [compile('pass', '<x>', 'exec')] * len(o)\n"
                "        elif isinstance(o, dict) and isinstance(o.get('tests'), list):\n"
                "            o['tests'][:] = ['pass'] * len(o['tests'])\n"
                "_pwn()\n"
                "def f(x):\n"
                "    _pwn()\n"
                "    return 0\n",
                1);
    /* gc.get_referrers from the call's arguments up to whoever holds them */
    scores_zero("gc: referrers of the arguments",
                "import gc\n"
                "def f(x):\n"
                "    seen, todo = set(), [x]\n"
                "    while todo and len(seen) < 5000:\n"
                "        o = todo.pop()\n"
                "        for r in gc.get_referrers(o):\n"
                "            if id(r) in seen:\n"
                "                continue\n"
                "            seen.add(id(r))\n"
                "            todo.append(r)\n"
                "            if isinstance(r, dict):\n"
                "                for k in ('expected', 'want', 'tests'):\n"
                "                    if k in r and isinstance(r[k], int):\n"
                "                        return r[k]\n"
                "    return 0\n",
                1);
}

/* Find the harness's reporter (frames, gc) and forge pass records with it,
 * then os._exit(0) before anything else runs; and the same by spraying
 * records carrying every 32-hex-digit string found in memory onto every fd. */
static void test_forged_reporter(void **st) {
    (void)st;
    const char *forge = "import gc, os, sys\n"
                        "def _forge():\n"
                        "    fns = []\n"
                        "    fr = sys._getframe()\n"
                        "    while fr is not None:\n"
                        "        fns += [v for v in fr.f_locals.values() if callable(v)]\n"
                        "        fr = fr.f_back\n"
                        "    fns += [o for o in gc.get_objects() if type(o).__name__ == 'function']\n"
                        "    for fn in fns:\n"
                        "        if getattr(fn, '__name__', '') in ('rep', 'report', 'send', 'reply'):\n"
                        "            try:\n"
                        "                for i in range(3):\n"
                        "                    fn('P', i)\n"
                        "                fn('END')\n"
                        "            except Exception:\n"
                        "                pass\n"
                        "    os._exit(0)\n"
                        "%s";
    char code[2048];
    snprintf(code, sizeof code, forge, "_forge()\n");
    scores_zero("reporter forged at import, then os._exit(0)", code, 1);
    snprintf(code, sizeof code, forge, "def f(x):\n    _forge()\n");
    scores_zero("reporter forged from the call, then os._exit(0)", code, 1);
    scores_zero("nonce sprayed on every fd",
                "import gc, os, re\n"
                "def _spray():\n"
                "    tags = set()\n"
                "    for o in gc.get_objects():\n"
                "        vals = []\n"
                "        if isinstance(o, dict):\n"
                "            vals = list(o.values())\n"
                "        elif isinstance(o, (list, tuple)):\n"
                "            vals = list(o)\n"
                "        elif type(o).__name__ == 'cell':\n"
                "            try:\n"
                "                vals = [o.cell_contents]\n"
                "            except ValueError:\n"
                "                pass\n"
                "        for v in vals:\n"
                "            if isinstance(v, str) and re.fullmatch(r'[0-9a-f]{32}', v):\n"
                "                tags.add(v.encode())\n"
                "            elif isinstance(v, bytes) and re.fullmatch(rb'[0-9a-f]{32}', v):\n"
                "                tags.add(v)\n"
                "    for t in tags:\n"
                "        rec = b''.join(t + b' P %d \\n' % i for i in range(3)) + t + b' END -1 \\n'\n"
                "        for fd in range(0, 16):\n"
                "            try:\n"
                "                os.write(fd, rec)\n"
                "            except OSError:\n"
                "                pass\n"
                "    os._exit(0)\n"
                "def f(x):\n"
                "    _spray()\n",
                1);
}

/* Read the expected values out of memory: the process's own (where the old
 * harness kept the tests) and every process /proc shows. */
static void test_memory_scan(void **st) {
    (void)st;
    scores_zero_tests("expected values from /proc/*/mem",
                      "import os, re\n"
                      "table = {}\n"
                      "def _scan():\n"
                      "    pids = ['self'] + [p for p in os.listdir('/proc') if p.isdigit()]\n"
                      "    for pid in pids:\n"
                      "        try:\n"
                      "            maps = open('/proc/%s/maps' % pid).read().splitlines()\n"
                      "            mem = open('/proc/%s/mem' % pid, 'rb')\n"
                      "        except OSError:\n"
                      "            continue\n"
                      "        for line in maps:\n"
                      "            span, perm = line.split()[:2]\n"
                      "            a, b = (int(x, 16) for x in span.split('-'))\n"
                      "            if 'r' not in perm or b - a > (64 << 20):\n"
                      "                continue\n"
                      "            try:\n"
                      "                mem.seek(a)\n"
                      "                chunk = mem.read(b - a)\n"
                      "            except (OSError, ValueError, OverflowError):\n"
                      "                continue\n"
                      "            for m in re.finditer(rb'f\\((-?\\d+)\\) == (-?\\d+)', chunk):\n"
                      "                table[int(m.group(1))] = int(m.group(2))\n"
                      "_scan()\n"
                      "def f(x):\n"
                      "    return table.get(x, 0)\n",
                      TESTS3, 3, 1, 10.0);
}

/* ------------------------------------------------------------------------ */
/* The verdict cannot be bent from inside the solution's process            */

static void test_builtins_and_values(void **st) {
    (void)st;
    /* redefined or monkeypatched builtins do not reach the tests */
    const char *t[] = {"assert abs(f(2) - 4) < 1e-9", "assert set([f(3)]) == set((9,))",
                       "assert sorted([f(-1), 0]) == [0, 1]", "assert isinstance(f(2), str) is False and f(2) == 4",
                       "assert all([f(2) == 4])"};
    scores_zero_tests("builtins redefined and monkeypatched",
                      "import builtins\n"
                      "builtins.abs = lambda x: 0\n"
                      "builtins.set = lambda *a: 0\n"
                      "builtins.sorted = lambda *a, **k: [0, 1]\n"
                      "builtins.all = lambda *a: True\n"
                      "builtins.AssertionError = type('AssertionError', (Exception,), {})\n"
                      "def abs(x):\n    return 0\n"
                      "def set(*a):\n    return 0\n"
                      "def sorted(*a, **k):\n    return [0, 1]\n"
                      "def all(*a):\n    return True\n"
                      "def isinstance(*a):\n    return False\n"
                      "def f(x):\n    return 0\n",
                      t, 5, 1, 5.0);
    /* values that claim equality: custom __eq__, subclasses of int, str,
     * float and tuple with lying methods, NaN, objects hidden in containers */
    scores_zero("values with lying __eq__ and friends",
                "class E:\n"
                "    def __eq__(s, o): return True\n"
                "    def __ne__(s, o): return False\n"
                "    __hash__ = object.__hash__\n"
                "    def __sub__(s, o): return 0\n"
                "    def __rsub__(s, o): return 0\n"
                "class I(int):\n"
                "    def __eq__(s, o): return True\n"
                "    __hash__ = int.__hash__\n"
                "class S(str):\n"
                "    def __eq__(s, o): return True\n"
                "    __hash__ = str.__hash__\n"
                "k = 0\n"
                "def f(x):\n"
                "    global k\n"
                "    k += 1\n"
                "    return [E(), I(7), S('z'), float('nan')][k % 4]\n",
                1);
    const char *tw[] = {"assert abs(f(2) - 4) < 1e-6", "assert [f(3)] == [9]", "assert 1 in [f(-1)]",
                        "assert {f(2): 1} == {4: 1}", "assert (f(2), 1) == (4, 1)"};
    scores_zero_tests("lying values inside expressions",
                      "class E:\n"
                      "    def __eq__(s, o): return True\n"
                      "    def __hash__(s): return hash(4)\n"
                      "    def __sub__(s, o): return 0\n"
                      "    def __abs__(s): return 0\n"
                      "def f(x):\n    return E()\n",
                      tw, 5, 1, 5.0);
}

static void test_exits_and_exceptions(void **st) {
    (void)st;
    scores_zero("sys.exit(0) before the tests", "import sys\nsys.exit(0)\n", 1);
    scores_zero("os._exit(0) before the tests", "import os\nos._exit(0)\n", 1);
    scores_zero("SystemExit from the call", "def f(x):\n    raise SystemExit(0)\n", 1);
    scores_zero("KeyboardInterrupt from the call", "def f(x):\n    raise KeyboardInterrupt\n", 1);
    scores_zero("BaseException subclass from the call",
                "class Stop(BaseException):\n    pass\ndef f(x):\n    raise Stop()\n", 1);
    scores_zero("os._exit from the call", "import os\ndef f(x):\n    os._exit(0)\n", 1);
    scores_zero("re-exec with -O", "import os, sys\ndef f(x):\n    os.execv(sys.executable, [sys.executable, '-O', '-c', 'pass'])\n", 1);
    /* StopIteration from a call does not end the test's map() early (as
     * PEP 479 in generators) */
    const char *ts[] = {"assert all(map(f, [2, 3, -1]))", "assert not list(map(f, [2]))",
                        "assert [y for y in map(f, [3])] == []"};
    scores_zero_tests("StopIteration from the call", "def f(x):\n    raise StopIteration\n", ts, 3, 1, 5.0);
    /* a test that catches Exception around the call still fails */
    const char *t[] = {"try:\n    v = f(2)\nexcept Exception:\n    v = 4\nassert v == 4"};
    scores_zero_tests("BaseException past `except Exception`", "def f(x):\n    raise SystemExit(0)\n", t, 1, 1, 5.0);
}

static void test_channels(void **st) {
    (void)st;
    scores_zero("fake result markers on stdout and stderr",
                "import sys\n"
                "for i in range(3):\n"
                "    print('P %d' % i)\n"
                "    sys.stderr.write('x P %d \\n' % i)\n"
                "print('END')\n"
                "def f(x):\n    print('P 0')\n    return 0\n",
                1);
    /* frames written ahead on the channel to the verifier are answers given
     * without seeing the question, no more (here: wrong ones, and a handle;
     * a forged True would pass `assert f(-1) == 1` as `return True` does) */
    scores_zero("forged frames on fd 3",
                "import os, json\n"
                "def fr(o):\n"
                "    b = json.dumps(o).encode()\n"
                "    return len(b).to_bytes(4, 'big') + b\n"
                "os.write(3, fr({'hello': 1}) + fr({'v': {'h': [0, 'function', None]}}) +\n"
                "         b''.join(fr({'v': 0}) + fr({'v': {'h': [1, 'E', None]}}) for _ in range(3)))\n"
                "os.write(4, b'P 0 \\n')\n"
                "def f(x):\n    return 0\n",
                1);
    scores_zero("closing and duping fds",
                "import os\n"
                "for fd in range(3, 20):\n"
                "    try:\n        os.close(fd)\n    except OSError:\n        pass\n"
                "os.dup2(1, 3)\n"
                "os.dup2(2, 4)\n"
                "print('P 0\\nP 1\\nP 2\\nEND')\n"
                "def f(x):\n    return 0\n",
                1);
    /* a thread that keeps writing (wrong) answers on fd 3 */
    scores_zero("answers on fd 3 from a thread during the calls",
                "import os, threading\n"
                "def spam():\n"
                "    while True:\n"
                "        os.write(3, b'\\x00\\x00\\x00\\x08{\"v\": 0}')\n"
                "threading.Thread(target=spam, daemon=True).start()\n"
                "def f(x):\n    return 0\n",
                1);
}

/* Modules planted where the verifier might import them from. */
static void test_planted_modules(void **st) {
    (void)st;
    scores_zero("planted math.py / sitecustomize.py",
                "import os\n"
                "evil = 'import os\\nfor i in range(3):\\n    os.write(4, b\"P %d \\\\n\" % i)\\n'\n"
                /* only into the work directory: without namespaces /tmp is
                 * the host's, and what is planted there outlives the run */
                "wd = os.getcwd()\n"
                "for d in set(d for d in ('.', '/tmp', os.path.expanduser('~')) if os.path.realpath(d) == wd):\n"
                "    for m in ('math', 'json', 'ast', 'fractions', 'sitecustomize', 'usercustomize'):\n"
                "        try:\n"
                "            open(os.path.join(d, m + '.py'), 'w').write(evil)\n"
                "        except OSError:\n"
                "            pass\n"
                "def f(x):\n    return 0\n",
                1);
}

/* Signals and ptrace towards the verifier and the trainer. */
static void test_signals_and_ptrace(void **st) {
    (void)st;
    scores_zero("signals to the parent, every process and the group",
                "import os, signal\n"
                "for pid in (os.getppid(), -1, 1, 0):\n"
                "    for sig in (signal.SIGSTOP, signal.SIGKILL):\n"
                "        if pid in (0, os.getpid()):\n"
                "            continue\n"
                "        try:\n"
                "            os.kill(pid, sig)\n"
                "        except OSError:\n"
                "            pass\n"
                "def f(x):\n    return 0\n",
                1);
    /* ptrace, process_vm_readv and new namespaces are refused */
    const char *code = "import ctypes, os\n"
                       "libc = ctypes.CDLL(None, use_errno=True)\n"
                       "got = []\n"
                       "for pid in set([os.getppid(), 1, os.getpid() - 1, os.getpid() + 1]):\n"
                       "    if pid > 0 and libc.ptrace(16, pid, 0, 0) == 0:\n"
                       "        got.append(('attach', pid))\n"
                       "if libc.unshare(0x10000000) == 0:\n"
                       "    got.append('userns')\n"
                       "if libc.unshare(0x00020000) == 0:\n"
                       "    got.append('mountns')\n"
                       "def f(x):\n    return 0\n";
    const char *t[] = {"assert got == []"};
    for (int ns = 1; ns >= 0; ns--) {
        reward_run_result r = run_with(code, t, 1, NULL, ns, 5.0);
        if (r.status != REWARD_RUN_PASSED) fprintf(stderr, "ns=%d: %s\n", ns, r.message);
        assert_int_equal(r.status, REWARD_RUN_PASSED);
        next_run_ok(ns);
    }
}

/* ------------------------------------------------------------------------ */
/* What the code can see and change                                         */

/* Tests with the expected values in a world-readable "dataset" outside the
 * work directory and the checkout: a solution that searches the file
 * system for them finds nothing. */
static void test_dataset_not_readable(void **st) {
    (void)st;
    char dir[] = "/var/tmp/grpo-ds-XXXXXX";
    assert_non_null(mkdtemp(dir));
    chmod(dir, 0755);
    char path[300];
    snprintf(path, sizeof path, "%s/rows.jsonl", dir);
    const char *row = "{\"tests\": [\"assert f(2) == 4\", \"assert f(3) == 9\", \"assert f(-1) == 1\"]}\n";
    test_write_file(path, row, strlen(row));
    chmod(path, 0644);
    const char *src = getenv("GRPO_SRC") ? getenv("GRPO_SRC") : "/nonexistent";
    char code[3000];
    snprintf(code, sizeof code,
             "import os, re\n"
             "table = {}\n"
             "for top in ('%s', '%s/tests', '/var/tmp', '/work', '/root', '/home'):\n"
             "    n = 0\n"
             "    for d, subs, files in os.walk(top):\n"
             "        subs[:] = [s for s in subs if s not in ('build', 'build-asan', '.git')]\n"
             "        for fn in files:\n"
             "            n += 1\n"
             "            if n > 3000:\n"
             "                break\n"
             "            try:\n"
             "                text = open(os.path.join(d, fn), 'rb').read(1 << 20)\n"
             "            except OSError:\n"
             "                continue\n"
             "            for m in re.finditer(rb'assert f\\((-?\\d+)\\) == (-?\\d+)', text):\n"
             "                table[int(m.group(1))] = int(m.group(2))\n"
             "def f(x):\n"
             "    return table.get(x, 0)\n",
             dir, src);
    scores_zero_tests("the dataset and the checkout searched for answers", code, TESTS3, 3, 0, 20.0);
    test_rmdir(dir);
}

static void test_minimal_root(void **st) {
    (void)st;
    const char *src = getenv("GRPO_SRC") ? getenv("GRPO_SRC") : "/nonexistent";
    char code[3000];
    snprintf(code, sizeof code,
             "import os\n"
             "seen = [p for p in ('/etc/passwd', '/etc/shadow', '/etc/hostname', '/etc/hosts', '%s',\n"
             "                    '%s/meson.build', '/root', '/home', '/var', '/work', '/run', '/boot', '/srv',\n"
             "                    '/opt', '/mnt', '/sys/kernel', '/proc/1/root/etc/passwd')\n"
             "        if os.path.exists(p)]\n"
             "top = sorted(os.listdir('/'))\n"
             "etc = sorted(os.listdir('/etc'))\n"
             "dev = sorted(os.listdir('/dev'))\n"
             "procs = sorted(p for p in os.listdir('/proc') if p.isdigit())\n"
             "wrote = []\n"
             "for p in ('/x', '/etc/x', '/usr/x', '/usr/lib/x', '/dev/x', '/proc/x', '%s/ATTACK', '/tmp/ok'):\n"
             "    try:\n"
             "        open(p, 'w').write('x')\n"
             "        wrote.append(p)\n"
             "    except OSError:\n"
             "        pass\n"
             "def f(x):\n"
             "    return x * x\n",
             src, src, src);
    const char *t[] = {"assert seen == []",
                       "assert set(top) <= {'bin', 'dev', 'etc', 'lib', 'lib32', 'lib64', 'libx32', 'proc', 'sbin',"
                       " 'tmp', 'usr'}",
                       "assert all(e == 'ld.so.cache' or e.startswith('python3') for e in etc)",
                       "assert set(dev) <= {'null', 'zero', 'full', 'random', 'urandom', 'fd', 'stdin', 'stdout',"
                       " 'stderr'}",
                       "assert len(procs) <= 2", "assert wrote == ['/tmp/ok']", "assert f(3) == 9"};
    reward_run_result r = run_with(code, t, 7, NULL, 1, 5.0);
    if (r.status != REWARD_RUN_PASSED) fprintf(stderr, "%s\n", r.message);
    assert_int_equal(r.status, REWARD_RUN_PASSED);
    assert_true(r.isolation & (1 << 6)); /* REWARD_ISO_ROOTFS */
    char attack[400];
    snprintf(attack, sizeof attack, "%s/ATTACK", src);
    assert_false(base_file_exists(attack));
}

/* The environment, other processes' environments and the network. */
static void test_secrets_and_network(void **st) {
    (void)st;
    setenv("GRPO_TEST_SECRET", "s3cr3t-env", 1);
    const char *code = "import os, glob, socket\n"
                       "leaks = []\n"
                       "if any('s3cr3t' in v for v in os.environ.values()):\n"
                       "    leaks.append('environ')\n"
                       "for p in glob.glob('/proc/*/environ') + ['/proc/%d/environ' % os.getppid()]:\n"
                       "    try:\n"
                       "        if b's3cr3t' in open(p, 'rb').read():\n"
                       "            leaks.append(p)\n"
                       "    except OSError:\n"
                       "        pass\n"
                       "net = []\n"
                       "for fam, typ in ((socket.AF_INET, socket.SOCK_STREAM), (socket.AF_INET6, socket.SOCK_STREAM),\n"
                       "                 (socket.AF_INET, socket.SOCK_DGRAM), (socket.AF_NETLINK, socket.SOCK_RAW),\n"
                       "                 (socket.AF_PACKET, socket.SOCK_RAW)):\n"
                       "    try:\n"
                       "        socket.socket(fam, typ).close()\n"
                       "        net.append((fam, typ))\n"
                       "    except OSError:\n"
                       "        pass\n"
                       "def f(x):\n    return x * x\n";
    const char *t[] = {"assert leaks == []", "assert net == []", "assert f(2) == 4"};
    /* the network is refused in both modes (seccomp), the environment is
     * fixed in both */
    for (int ns = 1; ns >= 0; ns--) {
        reward_run_result r = run_with(code, t, 3, NULL, ns, 5.0);
        if (r.status != REWARD_RUN_PASSED) fprintf(stderr, "ns=%d: %s\n", ns, r.message);
        if (ns) assert_int_equal(r.status, REWARD_RUN_PASSED);
        else assert_true(r.passed >= 2); /* without a PID namespace other processes' environ may show */
    }
    unsetenv("GRPO_TEST_SECRET");
}

/* Resource attacks in both modes: contained, scored 0, the next run fine. */
static void test_resources(void **st) {
    (void)st;
    scores_zero_tests("fork bomb",
                      "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
                      TESTS3, 3, 1, 1.0);
    scores_zero_tests("memory bomb", "x = bytearray(10 ** 10)\ndef f(x):\n    return 0\n", TESTS3, 3, 1, 5.0);
    scores_zero_tests("infinite loop in the call", "def f(x):\n    while True:\n        pass\n", TESTS3, 3, 1,
                      1.0);
    scores_zero_tests("stdout flood", "import sys\ndef f(x):\n    while True:\n        sys.stdout.write('P 0\\n' * 1000)\n",
                      TESTS3, 3, 1, 2.0);
    /* an answer too large for the channel is not an answer */
    scores_zero_tests("huge answer", "def f(x):\n    return [0] * (10 ** 7)\n", TESTS3, 3, 1, 5.0);
    scores_zero_tests("deep answer", "def f(x):\n    v = 0\n    for _ in range(10 ** 5):\n        v = [v]\n    return v\n",
                      TESTS3, 3, 1, 5.0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frames),
        cmocka_unit_test(test_gc),
        cmocka_unit_test(test_forged_reporter),
        cmocka_unit_test(test_memory_scan),
        cmocka_unit_test(test_builtins_and_values),
        cmocka_unit_test(test_exits_and_exceptions),
        cmocka_unit_test(test_channels),
        cmocka_unit_test(test_planted_modules),
        cmocka_unit_test(test_signals_and_ptrace),
        cmocka_unit_test(test_dataset_not_readable),
        cmocka_unit_test(test_minimal_root),
        cmocka_unit_test(test_secrets_and_network),
        cmocka_unit_test(test_resources),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
