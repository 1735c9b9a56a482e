/*
 * What the two sandbox attack suites (test_sandbox_attacks.c,
 * test_sandbox_redteam.c) share: the correct solution and its tests, and
 * one run of a solution under the suites' limits. Included by one test
 * file each; everything here is static inline.
 */
#ifndef GRPO_TEST_SANDBOX_ATTACK_H
#define GRPO_TEST_SANDBOX_ATTACK_H

#include <stdio.h>
#include <stdlib.h>

#include "base/base.h"
#include "reward/reward.h"
#include "test_common.h"

/* f(x) = x * x and three asserts it passes; the attacks are wrong f()s. */
static const char *const SQUARE = "def f(x):\n    return x * x\n";
static const char *const TESTS3[] = {"assert f(2) == 4", "assert f(3) == 9", "assert f(-1) == 1"};

/* Run `code` against `tests` (verifier setup `setup`, may be NULL) with the
 * suites' limits: 256 MiB, 16 KiB of output, 1 MiB files, 4 MiB of disk, 16
 * processes; namespaces on or off (the explicit weak mode). The run itself
 * must return BASE_OK: what the attack got is in the result. */
static inline reward_run_result run_with(const char *code, const char *const *tests, int n, const char *setup,
                                         int ns, double timeout) {
    reward_sandbox_limits l;
    reward_sandbox_limits_default(&l);
    l.timeout_s = timeout;
    l.memory_bytes = (size_t)256 << 20;
    l.output_bytes = 16 << 10;
    l.file_bytes = 1 << 20;
    l.disk_bytes = 4 << 20;
    l.nproc = 16;
    l.namespaces = ns;
    reward_run_result r;
    assert_int_equal(reward_sandbox_run_tests(code, tests, n, setup, &l, &r), BASE_OK);
    if (getenv("GRPO_TEST_VERBOSE"))
        fprintf(stderr, "  ns=%d -> %s %d/%d %.2fs %s\n", ns, reward_run_status_str(r.status), r.passed, r.total,
                r.seconds, r.message);
    return r;
}

/* After an attack the sandbox still judges a correct solution: all pass. */
static inline void next_run_ok(int ns) {
    reward_run_result r = run_with(SQUARE, TESTS3, 3, NULL, ns, 5.0);
    assert_int_equal(r.status, REWARD_RUN_PASSED);
    assert_int_equal(r.passed, 3);
}

#endif
