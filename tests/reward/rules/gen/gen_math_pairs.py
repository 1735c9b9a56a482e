#!/usr/bin/env python3
"""Generate tests/reward/rules/data/math500_pairs.jsonl: answer pairs built
from the MATH-500 gold answers, each labelled by Math-Verify.

For every MATH-500 answer A (../shared/data/math500_test.jsonl):
  cross      gold A, pred = the next problem's answer (mostly different)
  sympy      gold A, pred = SymPy's LaTeX of Math-Verify's parse of A (the
             same value written the way SymPy prints it)
  numeric    gold A, pred = A evaluated to 12 significant digits, when A is
             a real number that is not already a plain number
  expanded   gold A, pred = LaTeX of expand(A) when A has variables and
             expanding changes it
  assigned   gold A, pred = "x = " + A when A is a single expression
Label: verify(parse("$" + gold + "$"), parse("$" + pred + "$")) with
Math-Verify's defaults and timeouts disabled. Our side (test_math_pairs.c)
compares the raw strings with reward_math_equal defaults (no extraction),
so the two pipelines see the same text. Pairs Math-Verify cannot parse on
either side are dropped.

    /work/venv/bin/python tests/reward/rules/gen/gen_math_pairs.py \
        ../shared/data/math500_test.jsonl tests/reward/rules/data/math500_pairs.jsonl
"""
import json
import sys

import sympy
from math_verify import parse, verify


def mv_parse(s):
    r = parse("$" + s + "$", parsing_timeout=None)
    return r if r and not isinstance(r[0], str) else None


def label(gold, pred):
    g, p = mv_parse(gold), mv_parse(pred)
    if g is None or p is None:
        return None
    return bool(verify(g, p, timeout_seconds=None))


def main():
    src, dst = sys.argv[1], sys.argv[2]
    answers = [json.loads(l)["answer"] for l in open(src)]
    out = []
    for i, a in enumerate(answers):
        cands = [("cross", answers[(i + 1) % len(answers)])]
        parsed = mv_parse(a)
        if parsed is not None:
            e = parsed[0]
            try:
                cands.append(("sympy", sympy.latex(e)))
            except Exception:
                pass
            try:
                if isinstance(e, sympy.Expr) and not e.free_symbols and not e.is_Number:
                    v = sympy.N(e, 12)
                    if v.is_real:
                        cands.append(("numeric", str(v)))
            except Exception:
                pass
            try:
                if isinstance(e, sympy.Expr) and e.free_symbols:
                    x = sympy.expand(e)
                    if x != e:
                        cands.append(("expanded", sympy.latex(x)))
            except Exception:
                pass
            if isinstance(e, sympy.Expr) and "," not in a and "=" not in a:
                cands.append(("assigned", "x = " + a))
        for kind, pred in cands:
            if pred == a and kind != "cross":
                continue
            lab = label(a, pred)
            if lab is None:
                continue
            out.append({"gold": a, "pred": pred, "kind": kind, "mv_equal": lab})
    with open(dst, "w") as f:
        for o in out:
            f.write(json.dumps(o, ensure_ascii=False) + "\n")
    print(f"{len(out)} pairs -> {dst}")


if __name__ == "__main__":
    main()
