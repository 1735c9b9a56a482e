#!/usr/bin/env python3
"""Peer for bench_tok: Hugging Face `tokenizers` (the Rust library through
its Python binding) on the same corpus, measured the same way: one warm-up
pass, then the median of REPEATS passes of a single-threaded `encode` loop
and of `encode_batch` (Rayon over all cores). Prints the token count and the
same FNV-1a checksum of all ids as bench_tok, so the two runs can be seen to
produce identical tokens.

    python bench/tok_peer.py TOKENIZER_DIR CORPUS.jsonl [REPEATS]
"""
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
from tokenizers import Tokenizer  # noqa: E402


def main():
    tdir, corpus = sys.argv[1], sys.argv[2]
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    t0 = time.perf_counter()
    tk = Tokenizer.from_file(os.path.join(tdir, "tokenizer.json"))
    load_s = time.perf_counter() - t0
    texts = [json.loads(line)["text"] for line in open(corpus, encoding="utf-8") if line.strip()]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    single, batch = [], []
    for rep in range(-1, reps):
        a = time.perf_counter()
        ids = [tk.encode(t, add_special_tokens=False).ids for t in texts]
        b = time.perf_counter()
        bids = [e.ids for e in tk.encode_batch(texts, add_special_tokens=False)]
        c = time.perf_counter()
        if rep >= 0:
            single.append(b - a)
            batch.append(c - b)
    assert ids == bids
    h = 0xCBF29CE484222325
    tokens = 0
    for seq in ids:
        tokens += len(seq)
        for i in seq:
            h = ((h ^ i) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    s1, sb = statistics.median(single), statistics.median(batch)
    import tokenizers
    print(f"HF tokenizers {tokenizers.__version__}: {len(texts)} docs, {mb:.2f} MB, {tokens} tokens, "
          f"ids checksum {h:016x}, load {load_s:.2f} s")
    print(f"HF tokenizers: single thread {mb / s1:.2f} MB/s ({tokens / s1:.0f} tokens/s)")
    print(f"HF tokenizers: encode_batch, {os.cpu_count()} cores {mb / sb:.2f} MB/s ({tokens / sb:.0f} tokens/s)")


if __name__ == "__main__":
    main()
