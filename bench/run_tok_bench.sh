#!/bin/sh
# Tokenizer speed, grpo next to Hugging Face tokenizers, same corpus, same run.
#   bench/run_tok_bench.sh [TOKENIZER_DIR] [PYTHON]
# Defaults: the DeepSeek-V3 tokenizer in ../shared and /work/venv/bin/python.
# Needs a built tree (make build). The npm JavaScript port (@lenml/tokenizers)
# is not run: no npm registry is reachable from this machine.
set -eu
cd "$(dirname "$0")/.."
SHARED=${SHARED:-$(pwd)/../shared}
TOK=${1:-$SHARED/fixtures/deepseek-v3-tokenizer}
PY=${2:-/work/venv/bin/python}
CORPUS=${CORPUS:-build/tok_corpus.jsonl}
python3 bench/make_tok_corpus.py "$SHARED" "$CORPUS"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
./build/bench/bench_tok "$TOK" "$CORPUS"
"$PY" bench/tok_peer.py "$TOK" "$CORPUS"
