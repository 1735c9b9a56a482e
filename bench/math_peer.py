#!/usr/bin/env python3
"""Time Math-Verify (parse + verify) on the equivalence cases whose mode is a
Math-Verify call, the same subset `build/bench/bench_math CASES 20 mv` times
for grpo. One sample = parse(gold) + parse(pred) + verify, like our
reward_math_equal (which also extracts both sides). Timeouts are disabled
(parsing_timeout=None, timeout_seconds=None) so no signal machinery is
timed. Prints the median of 5 passes after a warm-up pass.

    /work/venv/bin/python bench/math_peer.py [CASES_JSONL] [PASSES_PER_RUN]
"""
import json
import statistics
import sys
import time

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify


def configs(match_types):
    c = []
    if "latex" in match_types:
        c.append(LatexExtractionConfig(boxed_match_priority=0))
    if "expr" in match_types:
        c.append(ExprExtractionConfig())
    return c


def one(case):
    mode, o = case["mode"], case.get("options") or {}
    if mode == "math_verify.compare_strings":
        c = configs(o["match_types"])
        g = parse(case["gold"], c, parsing_timeout=None)
        p = parse(case["pred"], c, parsing_timeout=None)
        return verify(g, p, float_rounding=o.get("precision", 6), strict=o.get("strict", True),
                      allow_set_relation_comp=o.get("allow_set_relation_comp", False),
                      timeout_seconds=None)
    g = parse(case["gold"], parsing_timeout=None)
    p = parse(case["pred"], parsing_timeout=None)
    return verify(g, p, timeout_seconds=None)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/math_equivalence_cases.jsonl"
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    cases = [json.loads(l) for l in open(path)]
    cases = [c for c in cases if c["mode"] in ("math_verify.compare_strings",
                                               "math_verify.parse_default+verify_default")]
    for c in cases:  # warm-up; Math-Verify caches compiled regexes and parses
        one(c)
    times, equal = [], 0
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            equal = sum(bool(one(c)) for c in cases)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    n = len(cases) * reps
    print(f"Math-Verify single thread: {len(cases)} cases x {reps} passes, median {t:.3f} s, "
          f"{n / t:.0f} samples/s ({1e6 * t / n:.1f} us/sample), equal {equal}/{len(cases)}")


if __name__ == "__main__":
    main()
