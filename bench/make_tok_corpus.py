#!/usr/bin/env python3
"""Build the tokenizer benchmark corpus: a JSONL of {"text": ...} documents
mixing English word problems (GSM8K), math with LaTeX (MATH-500), Python code
(HumanEval, MBPP) from ../shared/data, and Chinese prose: the zh_CN message
translations this machine's Debian packages install under
/usr/share/locale/zh_CN/LC_MESSAGES/*.mo (read with Python's gettext; the
corpus is built at run time and not committed).

    python3 bench/make_tok_corpus.py SHARED_DIR OUT.jsonl
"""
import gettext
import glob
import json
import os
import sys


def main():
    shared, out = sys.argv[1], sys.argv[2]
    data = os.path.join(shared, "data")
    docs = {"english": [], "math": [], "code": [], "chinese": []}

    def rows(name):
        with open(os.path.join(data, name), encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    docs["english"] = [r["question"] + "\n" + r["answer"] for r in rows("gsm8k_test.jsonl")]
    docs["math"] = [r["problem"] + "\n\n" + r["solution"] for r in rows("math500_test.jsonl")]
    docs["code"] = [r["prompt"] + r["canonical_solution"] + "\n" + r["test"] for r in rows("humaneval.jsonl")]
    docs["code"] += [r["prompt"] + "\n" + r["code"] for r in rows("mbpp_sanitized.jsonl")]
    cur, size = [], 0
    for mo in sorted(glob.glob("/usr/share/locale/zh_CN/LC_MESSAGES/*.mo")):
        try:
            with open(mo, "rb") as f:
                cat = gettext.GNUTranslations(f)._catalog
        except Exception:
            continue
        for k, v in cat.items():
            if not k or not isinstance(v, str) or not any("\u4e00" <= c <= "\u9fff" for c in v):
                continue
            cur.append(v)
            size += len(v.encode("utf-8"))
            if size > 2000:
                docs["chinese"].append("\n".join(cur))
                cur, size = [], 0
        if sum(len(d.encode("utf-8")) for d in docs["chinese"]) > 800_000:
            break
    # interleave the kinds so batches mix them
    mixed = []
    longest = max(len(v) for v in docs.values())
    for i in range(longest):
        for k in docs:
            if i < len(docs[k]):
                mixed.append(docs[k][i])
    with open(out, "w", encoding="utf-8") as f:
        for t in mixed:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    for k, v in docs.items():
        print(f"{k}: {len(v)} docs, {sum(len(d.encode('utf-8')) for d in v) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
