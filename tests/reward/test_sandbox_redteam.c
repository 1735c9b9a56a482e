/*
 * The code sandbox against a second, wider attack set (issue 12, defect 4,
 * follow-up): forged protocol frames and replies, objects that lie in
 * every test form, desync, verdicts bent into "no score", memory the
 * rlimits do not count, system calls, paths and sockets of a jail escape,
 * and what the work directory leaves behind. A wrong solution must pass no
 * test and must not turn its 0 into a sandbox_error (a reward left out of
 * the total, so a 0 escaped); a correct solution must still pass after
 * every attack; an escape must find nothing.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "reward/reward.h"
#include "sandbox_attack.h"
#include "test_common.h"


/* A wrong solution with an attack: no test passes, and the run is judged
 * (not sandbox_error, which the reward scripts turn into "no score"). */
static void scores_zero_tests(const char *what, const char *code, const char *const *tests, int n, const char *setup,
                              int both, double timeout) {
    for (int ns = 1; ns >= (both ? 0 : 1); ns--) {
        reward_run_result r = run_with(code, tests, n, setup, ns, timeout);
        if (r.passed != 0 || r.status == REWARD_RUN_PASSED || r.status == REWARD_RUN_SANDBOX_ERROR)
            fprintf(stderr, "attack '%s' (namespaces=%d) scored %d/%d: %s %s\n", what, ns, r.passed, r.total,
                    reward_run_status_str(r.status), r.message);
        assert_int_equal(r.passed, 0);
        assert_true(r.status != REWARD_RUN_PASSED);
        assert_true(r.status != REWARD_RUN_SANDBOX_ERROR);
        next_run_ok(ns);
    }
}

/* Every test of `tests` must pass (visibility checks made by a solution
 * that reports what it found). */
static void all_pass(const char *what, const char *code, const char *const *tests, int n, const char *setup, int ns) {
    reward_run_result r = run_with(code, tests, n, setup, ns, 10.0);
    if (r.status != REWARD_RUN_PASSED)
        fprintf(stderr, "'%s' (namespaces=%d): %s %d/%d %s\n", what, ns, reward_run_status_str(r.status), r.passed,
                r.total, r.message);
    assert_int_equal(r.status, REWARD_RUN_PASSED);
}

/* Frames the solution writes on fd 3 itself, ahead of the questions. */
#define FRAMES                                                                                                         \
    "import os, time\n"                                                                                                \
    "def fr(s):\n"                                                                                                     \
    "    b = s.encode() if isinstance(s, str) else s\n"                                                                \
    "    return len(b).to_bytes(4, 'big') + b\n"                                                                       \
    "def send(*m):\n"                                                                                                  \
    "    os.write(3, b''.join(fr(x) for x in m))\n"

/* ------------------------------------------------------------------------ */
/* The verdict                                                              */

/* The hello carries a setup failure "on the solution's side": it was a `B`
 * record, sandbox_error, and unit_tests.lua / code.lua make that a nil
 * reward, so a wrong solution that forged it traded its 0 for advantage 0. */
static void test_forged_setup_report(void **st) {
    (void)st;
    scores_zero_tests("hello reporting a failed setup, then exit",
                      FRAMES "send('{\"hello\": 1, \"setup\": [\"E\", \"ImportError\", \"no module named math\"]}')\n"
                             "os._exit(0)\n",
                      TESTS3, 3, NULL, 1, 5.0);
    scores_zero_tests("hello with a setup key of another type",
                      FRAMES "send('{\"hello\": 1, \"setup\": 0}')\n"
                             "time.sleep(30)\n",
                      TESTS3, 3, "import math", 1, 5.0);
    /* a setup that fails in the verifier is still the dataset's fault */
    reward_run_result r = run_with(SQUARE, TESTS3, 3, "import grpo_no_such_module", 1, 5.0);
    assert_int_equal(r.status, REWARD_RUN_SANDBOX_ERROR);
}

/* Replies the solution forges in every encoding the codec knows, each one
 * a wrong answer: none may decode into a pass or a sandbox_error. */
static void test_forged_replies(void **st) {
    (void)st;
    static const char *const odd[] = {
        "{\"v\": 0, \"v\": 5}",                     /* duplicate keys */
        "{\"v\": -0.0}",                            /* negative zero */
        "{\"v\": NaN}",                             /* JSON extensions */
        "{\"v\": -Infinity}",
        "{\"v\": {\"i\": \"-0\"}}",                 /* a big int that is not */
        "{\"v\": {\"i\": \"nan\"}}",
        "{\"v\": {\"i\": \"fffffffffffffffffffffffffffffffffffffffff\"}}",
        "{\"v\": \"\\ud800\"}",                     /* a lone surrogate */
        "{\"v\": {\"bt\": \"True\"}}",              /* the verifier-only tag */
        "{\"v\": {\"h\": [0, \"int\", \"builtins\"]}}", /* handles naming modules */
        "{\"v\": {\"h\": [0, \"int\", [\"math\"]]}}",
        "{\"v\": {\"k\": \"True\"}}",
        "{\"v\": {\"q\": [3, 0]}}",                 /* Fraction(3, 0) */
        "{\"v\": {\"dec\": \"sNaN\"}}",
        "{\"v\": {\"c\": [NaN, 0.0]}}",
        "{\"v\": {\"r\": [0, 4, 0]}}",              /* range step 0 */
        "{\"v\": {\"t\": [4], \"s\": [9]}}",        /* two tags */
        "{\"v\": 0, \"wb\": [[0, 4]]}",             /* write-back not asked for */
        "{\"absent\": 1}",
        "{\"x\": [\"B\", \"SystemExit\", \"0\"]}",
        "{\"x\": [\"E\", \"StopIteration\", \"\"]}",
        "[4]",                                      /* not an object */
        "{\"hello\": 1}",                           /* a second hello */
    };
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        char code[1024], what[200];
        snprintf(code, sizeof code,
                 FRAMES "X = r'''%s'''\n"
                        "send('{\"hello\": 1}', '{\"v\": {\"h\": [0, \"function\", null]}}', X, X, X)\n"
                        "time.sleep(30)\n",
                 odd[i]);
        snprintf(what, sizeof what, "forged reply %s", odd[i]);
        scores_zero_tests(what, code, TESTS3, 3, NULL, 0, 5.0);
    }
    /* frames cut short, too long, or of length 0 */
    static const char *const bad[] = {
        "os.write(3, (100).to_bytes(4, 'big') + b'{\"v\": 4')\nos._exit(0)\n",
        "os.write(3, (0xffffffff).to_bytes(4, 'big'))\ntime.sleep(30)\n",
        "os.write(3, (0).to_bytes(4, 'big'))\ntime.sleep(30)\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char code[1024];
        snprintf(code, sizeof code, FRAMES "send('{\"hello\": 1}', '{\"v\": {\"h\": [0, \"function\", null]}}')\n%s",
                 bad[i]);
        scores_zero_tests("a broken frame", code, TESTS3, 3, NULL, 0, 5.0);
    }
}

/* One object that answers every question as it likes (but is not a number:
 * no __index__), against the test forms datasets use; the expected values
 * are ones its conversions do not give. */
static void test_lying_object_test_forms(void **st) {
    (void)st;
    const char *code = "import math\n"
                       "class C:\n"
                       "    def __eq__(s, o): return True\n"
                       "    def __ne__(s, o): return False\n"
                       "    __lt__ = __le__ = __gt__ = __ge__ = __eq__\n"
                       "    def __hash__(s): return 5\n"
                       "    def __bool__(s): return True\n"
                       "    def __len__(s): return 3\n"
                       "    def __iter__(s): return iter([1, 2, 3])\n"
                       "    def __contains__(s, o): return True\n"
                       "    def __sub__(s, o): return 0.0\n"
                       "    __rsub__ = __add__ = __radd__ = __mul__ = __rmul__ = __sub__\n"
                       "    def __abs__(s): return 0.0\n"
                       "    def __float__(s): return 3.14\n"
                       "    def __int__(s): return 4\n"
                       "    def __round__(s, n=None): return 5\n"
                       "    def __str__(s): return 'x'\n"
                       "    __repr__ = __str__\n"
                       "    def __getitem__(s, k): return 5\n"
                       "    def __format__(s, spec): return '5'\n"
                       "    def count(s, o): return 1\n"
                       "    def startswith(s, o): return True\n"
                       "def f(*a, **k):\n"
                       "    return C()\n"
                       "g = f\n";
    static const char *const forms[] = {
        "assert f(2) == 5",
        "assert 5 == f(2)",
        "assert not (f(2) != 5)",
        "assert f(2) in [5]",
        "assert 5 in f(2)",
        "assert f(2) is True",
        "assert not f(2)",
        "assert isinstance(f(2), list)",
        "assert sorted(f(2)) == [1, 2, 5]",
        "assert abs(f(2) - 5) < 1e-6",
        "import math\nassert math.isclose(f(2), 5.0)",
        "assert set(f(2)) == {1, 2, 5}",
        "assert list(f(2)) == [5]",
        "assert len(f(2)) == 5",
        "assert round(f(2), 2) == 5",
        "assert f(2) >= 5 and f(2) <= 5",
        "assert max(f(2), 5) == 5 and f(2) == 5",
        "assert str(f(2)) == '5'",
        "assert f'{f(2)}' == '5' and f(2) == 5",
        "assert int(f(2)) == 5",
        "assert float(f(2)) == 5.0",
        "assert math.floor(f(2)) == 5",
        "assert sum([f(2)]) == 5",
        "assert [f(2)] == [5]",
        "assert (f(2), 1) == (5, 1)",
        "assert {'a': f(2)} == {'a': 5}",
        "assert {f(2): 1} == {5: 1}",
        "assert f(2) in {5}",
        "assert f(2) in (5,)",
        "assert [5].count(f(2)) == 1",
        "assert f(2).count(5) == 1 and f(2) == 5",
        "assert type(f(2)) == int",
        "assert hash(f(2)) == hash(5)",
        "import operator\nassert operator.eq(f(2), 5)",
        "assert f(2) == g(3) and f(2) == 5",
        "assert dict(a=f(2)) == dict(a=5)",
        "def check(candidate):\n    assert candidate(2) == 5\n    assert abs(candidate(3) - 5) < 1e-6\ncheck(f)",
        "try:\n    assert f(2) == 5\nexcept TypeError:\n    pass\n",
    };
    /* the last form passes only if a comparison raised TypeError: it must
     * raise AssertionError (the assert fails) */
    scores_zero_tests("an object lying in every test form", code, forms, (int)(sizeof forms / sizeof forms[0]), NULL,
                      0, 10.0);
}

/* Tests that expect an exception. */
static void test_exceptions_as_expected(void **st) {
    (void)st;
    const char *t[] = {"try:\n    f(-1)\n    assert False\nexcept ValueError:\n    pass",
                       "try:\n    f(-2)\nexcept ValueError:\n    pass\nelse:\n    assert False",
                       "try:\n    f(-3)\nexcept Exception:\n    pass\nelse:\n    raise AssertionError('no error')"};
    scores_zero_tests("no exception", "def f(x):\n    return 0\n", t, 3, NULL, 1, 5.0);
    scores_zero_tests("SystemExit for ValueError", "def f(x):\n    raise SystemExit(1)\n", t, 3, NULL, 1, 5.0);
    scores_zero_tests("the process ends in the call", "import os\ndef f(x):\n    os._exit(1)\n", t, 3, NULL, 1,
                      5.0);
    scores_zero_tests("StopIteration for ValueError", "def f(x):\n    raise StopIteration\n", t, 2, NULL, 1, 5.0);
    const char *ok = "def f(x):\n    raise ValueError('negative')\n";
    reward_run_result r = run_with(ok, t, 3, NULL, 1, 5.0);
    assert_int_equal(r.status, REWARD_RUN_PASSED);
}

/* The solution answers out of turn: a thread reads the questions and
 * answers them too, a call writes an extra reply, replies are replayed. */
static void test_protocol_desync(void **st) {
    (void)st;
    scores_zero_tests("a second reader answering every question",
                      "import os, threading\n"
                      "def fr(b):\n"
                      "    return len(b).to_bytes(4, 'big') + b\n"
                      "def steal():\n"
                      "    while True:\n"
                      "        n = int.from_bytes(os.read(3, 4), 'big')\n"
                      "        os.read(3, n)\n"
                      "        os.write(3, fr(b'{\"v\": 0}') * 2)\n"
                      "threading.Thread(target=steal, daemon=True).start()\n"
                      "def f(x):\n"
                      "    return 0\n",
                      TESTS3, 3, NULL, 1, 5.0);
    scores_zero_tests("an extra reply from inside the call",
                      "import os\n"
                      "def fr(b):\n"
                      "    return len(b).to_bytes(4, 'big') + b\n"
                      "def f(x):\n"
                      "    os.write(3, fr(b'{\"v\": 7}'))\n"
                      "    return 0\n",
                      TESTS3, 3, NULL, 1, 5.0);
    scores_zero_tests("replayed replies",
                      FRAMES "send('{\"hello\": 1}', '{\"v\": {\"h\": [0, \"function\", null]}}',\n"
                             "     *(['{\"v\": 0}'] * 50))\n"
                             "time.sleep(30)\n",
                      TESTS3, 3, NULL, 1, 5.0);
}

/* The solution keeps the verifier busy or starves it: the run ends by a
 * limit, with what passed before (nothing) and never as sandbox_error. */
static void test_verifier_starved(void **st) {
    (void)st;
    scores_zero_tests("no answer ever", "import time\ndef f(x):\n    time.sleep(60)\n", TESTS3, 3, NULL, 1, 1.0);
    /* 4.5 MB replies that cost the verifier ~40 times their size to decode */
    scores_zero_tests("replies expensive to decode",
                      "def f(x):\n"
                      "    return [[] for _ in range(1500000)]\n",
                      TESTS3, 3, NULL, 1, 3.0);
    scores_zero_tests("CPU hogs beside the verifier",
                      "import os\n"
                      "for _ in range(8):\n"
                      "    if os.fork() == 0:\n"
                      "        while True:\n"
                      "            pass\n"
                      "def f(x):\n"
                      "    while True:\n"
                      "        pass\n",
                      TESTS3, 3, NULL, 1, 1.5);
}

/* HumanEval/38 and /50 call a helper of the prompt (encode_cyclic,
 * encode_shift) that the test does not define: with the helper in the
 * setup the verifier runs its own, and a solution that redefines both to
 * the identity scores 0 (docs/rewards.md, "Weak tests"). */
static void test_prompt_helpers_in_setup(void **st) {
    (void)st;
    const char *setup = "def encode_shift(s):\n"
                        "    return ''.join(chr(((ord(ch) + 5 - ord('a')) % 26) + ord('a')) for ch in s)\n";
    const char *t[] = {"assert decode_shift(encode_shift('hello')) == 'hello'",
                       "assert decode_shift(encode_shift('xyz')) == 'xyz'"};
    scores_zero_tests("prompt helper redefined",
                      "def encode_shift(s):\n    return s\ndef decode_shift(s):\n    return s\n", t, 2, setup, 1, 5.0);
    const char *right = "def decode_shift(s):\n"
                        "    return ''.join(chr(((ord(ch) - 5 - ord('a')) % 26) + ord('a')) for ch in s)\n";
    all_pass("prompt helper from the setup", right, t, 2, setup, 1);
}

/* ------------------------------------------------------------------------ */
/* The jail                                                                 */

/* Memory that RLIMIT_AS does not count: a memfd written and never mapped,
 * System V shared memory detached after use, message queues. Refused in
 * both modes (without namespaces the IPC objects would also outlive the
 * run in the host's IPC namespace). */
static void test_uncounted_memory(void **st) {
    (void)st;
    const char *code = "import ctypes, os\n"
                       "libc = ctypes.CDLL(None, use_errno=True)\n"
                       "made = []\n"
                       "try:\n"
                       "    fd = os.memfd_create('m')\n"
                       "    os.write(fd, b'x' * (1 << 20))\n"
                       "    made.append('memfd')\n"
                       "except OSError:\n"
                       "    pass\n"
                       "sid = libc.shmget(0, 1 << 20, 0o1600)\n"
                       "if sid >= 0:\n"
                       "    made.append('shm')\n"
                       "    libc.shmctl(sid, 0, None)\n" /* IPC_RMID: leave nothing on old kernels' hosts */
                       "q = libc.msgget(0, 0o1600)\n"
                       "if q >= 0:\n"
                       "    made.append('msg')\n"
                       "    libc.msgctl(q, 0, None)\n"
                       "s = libc.semget(0, 1, 0o1600)\n"
                       "if s >= 0:\n"
                       "    made.append('sem')\n"
                       "    libc.semctl(s, 0, 0)\n"
                       "mq = libc.mq_open(b'/grpo-sbx-mq', 0o102, 0o600, None)\n"
                       "if mq >= 0:\n"
                       "    made.append('mq')\n"
                       "    libc.mq_unlink(b'/grpo-sbx-mq')\n"
                       "def f(x):\n"
                       "    return x * x\n";
    const char *t[] = {"assert made == []", "assert f(3) == 9"};
    all_pass("memfd and IPC objects (namespaces)", code, t, 2, NULL, 1);
    all_pass("memfd and IPC objects (namespaces=false)", code, t, 2, NULL, 0);
}

/* What a jail escape tries: system calls that reach the kernel's riskier
 * interfaces or other namespaces, host paths, host sockets, inherited fds,
 * processes. Numbered system calls are x86-64's; the rest go through libc. */
static void test_escape_attempts(void **st) {
    (void)st;
    const char *code =
        "import os, ctypes, socket, platform, struct\n"
        "fds = sorted(int(x) for x in os.listdir('/proc/self/fd'))\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "calls = []\n"
        "def try_(name, r):\n"
        "    if r >= 0:\n"
        "        calls.append(name)\n"
        "try_('mount', libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))\n"
        "try_('unshare user', libc.unshare(0x10000000))\n"
        "try_('unshare net', libc.unshare(0x40000000))\n"
        "try_('unshare mnt', libc.unshare(0x00020000))\n"
        "try_('setns', libc.setns(0, 0))\n"
        "try_('chroot', libc.chroot(b'/tmp'))\n"
        "try_('personality', libc.personality(0x0040000))\n"
        "try_('klogctl', libc.klogctl(3, ctypes.create_string_buffer(64), 64))\n"
        "try_('ptrace', libc.ptrace(0, 0, None, None))\n"
        "h = ctypes.create_string_buffer(200)\n"
        "struct.pack_into('I', h, 0, 128)\n"
        "try_('name_to_handle_at', libc.name_to_handle_at(-100, b'/usr', h, ctypes.byref(ctypes.c_int()), 0))\n"
        "if platform.machine() == 'x86_64':\n"
        "    attr = ctypes.create_string_buffer(128)\n"
        "    struct.pack_into('II', attr, 0, 1, 128)\n"
        "    for name, nr, args in (('keyctl', 250, (0, -3, 0)), ('add_key', 248, (b'user', b'k', b'v', 1, -3)),\n"
        "                           ('userfaultfd', 323, (0,)), ('perf_event_open', 298, (attr, 0, -1, -1, 0)),\n"
        "                           ('bpf', 321, (0, None, 0)),\n"
        "                           ('io_uring_setup', 425, (8, ctypes.create_string_buffer(120))),\n"
        "                           ('clone newuser', 56, (0x10000000 | 17, None, None, None, None)),\n"
        "                           ('open_tree', 428, (-100, b'/usr', 1)), ('fsopen', 430, (b'tmpfs', 0)),\n"
        "                           ('kcmp', 312, (os.getpid(), os.getpid(), 0, 0, 0)),\n"
        "                           ('pivot_root', 155, (b'/tmp', b'/tmp')), ('x32 getpid', 0x40000000 + 39, ())):\n"
        "        try_(name, libc.syscall(nr, *args))\n"
        "paths = [p for p in ('/etc/passwd', '/proc/1/root/etc/passwd', '/proc/self/root/etc/passwd',\n"
        "                     '/usr/../etc/passwd', '/root', '/home', '/work', '/sys', '/dev/mem', '/dev/kmsg',\n"
        "                     '/dev/shm', '/run', '/var', '/dev/tty', '/proc/kcore', '/proc/1/cwd/etc/passwd')\n"
        "         if os.path.exists(p)]\n"
        "socks = []\n"
        "for a in ('\\0/tmp/.X11-unix/X0', '\\0/org/freedesktop/systemd1/notify', '/run/dbus/system_bus_socket',\n"
        "          '/var/run/docker.sock', '/run/systemd/private'):\n"
        "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "    try:\n"
        "        s.connect(a)\n"
        "        socks.append(a)\n"
        "    except OSError:\n"
        "        pass\n"
        "    s.close()\n"
        "for fam, typ in ((socket.AF_NETLINK, socket.SOCK_RAW), (socket.AF_INET, socket.SOCK_DGRAM),\n"
        "                 (socket.AF_INET6, socket.SOCK_STREAM), (socket.AF_PACKET, socket.SOCK_RAW),\n"
        "                 (40, socket.SOCK_STREAM)):\n" /* AF_VSOCK */
        "    try:\n"
        "        socket.socket(fam, typ).close()\n"
        "        socks.append(fam)\n"
        "    except OSError:\n"
        "        pass\n"
        "others = [p for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]\n"
        /* the interpreter's prefix and site-packages: a module, a .pth or a
         * .pyc planted there would run in the verifier */
        "import sys, site, sysconfig\n"
        "planted = []\n"
        "dirs = sys.path + site.getsitepackages() + [sys.prefix, sysconfig.get_paths()['purelib']]\n"
        "for d in set(p for p in dirs if p and os.path.isdir(p) and os.getcwd() == '/tmp'):\n" /* not the host's */
        "    for n in ('grpo_evil.pth', 'grpo_evil.py', '__pycache__/grpo_evil.cpython-3.pyc'):\n"
        "        try:\n"
        "            open(os.path.join(d, n), 'w').write('import os\\n')\n"
        "            planted.append(os.path.join(d, n))\n"
        "        except OSError:\n"
        "            pass\n"
        "def f(x):\n"
        "    return x * x\n";
    /* fds: 0-3 and the one listdir used */
    const char *t_ns[] = {"assert calls == []",     "assert paths == []",   "assert socks == []",
                          "assert fds == [0, 1, 2, 3, 4]", "assert others == []", "assert planted == []",
                          "assert f(3) == 9"};
    all_pass("escape attempts (namespaces)", code, t_ns, 7, NULL, 1);
    const char *t_host[] = {"assert calls == []", "assert [s for s in socks if type(s) is int] == []",
                            "assert fds == [0, 1, 2, 3, 4]", "assert f(3) == 9"};
    all_pass("escape attempts (namespaces=false)", code, t_host, 4, NULL, 0);
}

/* The work directory: capped in size and inodes, not shared with the
 * verifier, and HOME and TMPDIR point into it in both modes (without
 * namespaces /tmp is the host's: files put there would outlive the run). */
static void test_work_dir(void **st) {
    (void)st;
    const char *code = "import os, tempfile\n"
                       "wd = os.getcwd()\n"
                       "home, tmp = os.path.expanduser('~'), tempfile.gettempdir()\n"
                       "open('planted.py', 'w').write('x = 1\\n')\n"
                       "if home == wd:\n" /* else (the old HOME=/tmp) it would litter the host */
                       "    open(os.path.join(home, 'sitecustomize.py'), 'w').write('x = 1\\n')\n"
                       "size = files = 0\n"
                       "if wd == '/tmp':\n"
                       "    try:\n"
                       "        for i in range(8):\n" /* 1 MiB files (RLIMIT_FSIZE) into a 4 MiB tmpfs */
                       "            with open('big%d' % i, 'wb') as fh:\n"
                       "                for _ in range(16):\n"
                       "                    fh.write(b'x' * (1 << 16))\n"
                       "                    fh.flush()\n"
                       "                    size += 1 << 16\n"
                       "    except OSError:\n"
                       "        pass\n"
                       "    for n in os.listdir('.'):\n"
                       "        if n.startswith('big'):\n"
                       "            os.unlink(n)\n"
                       "    os.mkdir('d')\n"
                       "    try:\n"
                       "        for files in range(10000):\n"
                       "            open('d/%d' % files, 'w').close()\n"
                       "    except OSError:\n"
                       "        pass\n"
                       "def f(x):\n"
                       "    return x * x\n";
    const char *t[] = {"assert home == wd and tmp == wd", "assert size <= 4 << 20", "assert files < 4096",
                       "import os\nassert not os.path.exists(os.path.join(wd, 'planted.py')) or wd != '/tmp'",
                       "import os\nassert not os.path.exists('planted.py') and not os.path.exists('sitecustomize.py')",
                       "assert f(3) == 9"};
    all_pass("work dir (namespaces)", code, t, 6, NULL, 1);
    all_pass("work dir (namespaces=false)", code, t, 6, NULL, 0);
}

/* Without namespaces the trainer removes the work directory: it follows no
 * link the code left there, also under directories made unreadable. */
static void test_work_dir_cleanup(void **st) {
    (void)st;
    char *dir = test_tmpdir();
    chmod(dir, 0755);
    char victim[512], code[2048];
    snprintf(victim, sizeof victim, "%s/victim", dir);
    test_write_file(victim, "keep\n", 5);
    chmod(victim, 0666);
    snprintf(code, sizeof code,
             "import os\n"
             "os.symlink('%s', 'link')\n"
             "os.symlink('%s', 'dirlink')\n"
             "os.makedirs('a/b')\n"
             "os.symlink('%s', 'a/b/link')\n"
             "os.mkfifo('a/fifo')\n"
             "os.chmod('a/b', 0)\n"
             "os.chmod('a', 0)\n"
             "def f(x):\n"
             "    return x * x\n",
             victim, dir, victim);
    const char *t[] = {"assert f(3) == 9"};
    all_pass("links left in the work dir", code, t, 1, NULL, 0);
    assert_true(base_file_exists(victim));
    struct stat s;
    assert_int_equal(stat(dir, &s), 0);
    test_rmdir(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forged_setup_report),
        cmocka_unit_test(test_forged_replies),
        cmocka_unit_test(test_lying_object_test_forms),
        cmocka_unit_test(test_exceptions_as_expected),
        cmocka_unit_test(test_protocol_desync),
        cmocka_unit_test(test_verifier_starved),
        cmocka_unit_test(test_prompt_helpers_in_setup),
        cmocka_unit_test(test_uncounted_memory),
        cmocka_unit_test(test_escape_attempts),
        cmocka_unit_test(test_work_dir),
        cmocka_unit_test(test_work_dir_cleanup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
