#!/bin/sh
# `mpirun -H HOSTS grpo run` over several nodes (docs/distributed.md, "Launch"):
#   1. test_dist (every collective, the local rank of each node) over the hosts;
#   2. 4 ranks over the hosts give the weights and every logged value (timings
#      aside) of 4 ranks on this node, byte for byte;
#   3. the last rank killed (SIGKILL, on the last host) after the first
#      checkpoint: every rank gone within 60 s, the job exits non-zero and
#      names the rank; --resume over the hosts ends with the weights of an
#      uninterrupted run on this node.
# Runs when GRPO_TEST_HOSTS names the hosts (mpirun's -H, e.g. node1:2,node2:2,
# 4 slots in all; passwordless ssh to each, the build and /tmp's run
# directories on a file system every host sees); GRPO_TEST_MPIRUN_ARGS adds
# mpirun options (e.g. --mca btl_tcp_if_include 10.77.0.0/24). Skipped (77)
# otherwise, as on CI. tests/dist/fake_nodes.sh makes two such nodes on one
# Linux machine (network namespaces, sshd). Environment (meson): GRPO_EXE,
# GRPO_SRC, MPIRUN, SHARED_DIR, TEST_DIST_EXE.
set -u
skip() { echo "multinode_check: skipped: $*"; exit 77; }
fail() { echo "multinode_check: FAIL: $*"; exit 1; }
[ -n "${GRPO_TEST_HOSTS:-}" ] || skip "GRPO_TEST_HOSTS is not set (tests/dist/fake_nodes.sh)"
: "${GRPO_EXE:?}" "${GRPO_SRC:?}" "${MPIRUN:=mpirun}" "${TEST_DIST_EXE:?}"
XA=${GRPO_TEST_MPIRUN_ARGS:-}
last=$(echo "$GRPO_TEST_HOSTS" | tr ',' '\n' | tail -1 | cut -d: -f1)
first=$(echo "$GRPO_TEST_HOSTS" | cut -d, -f1 | cut -d: -f1)
[ "$last" != "$first" ] || skip "GRPO_TEST_HOSTS names one host"
multi() { "$MPIRUN" --oversubscribe -H "$GRPO_TEST_HOSTS" -np 4 $XA -x SHARED_DIR "$@"; }
local4() { "$MPIRUN" --oversubscribe -np 4 "$@"; }

T=$(mktemp -d) || fail "mktemp"
trap 'rm -rf "$T"' EXIT
R="$GRPO_SRC/recipes/tiny-zero.lua"
SET="--set datasets.test.limit=2 --quiet"
strip() { sed -E 's/"(tokens_per_s|step_time|time\/[a-z_]+)":[^,}]*,?//g' "$1"; }

# 1. the collectives and the local ranks over the hosts
multi "$TEST_DIST_EXE" >"$T/d.log" 2>&1 || { rc=$?; cat "$T/d.log"; fail "test_dist over $GRPO_TEST_HOSTS exited $rc"; }
[ "$(grep -c 'PASSED' "$T/d.log")" -eq 4 ] || { cat "$T/d.log"; fail "test_dist: not 4 ranks passing"; }
echo "multinode_check: test_dist passes on 4 ranks over $GRPO_TEST_HOSTS"

# 2. over the hosts == this node
multi "$GRPO_EXE" run "$R" --max-total-steps 2 --set output_dir="$T/h" $SET >"$T/h.log" 2>&1 ||
    { rc=$?; cat "$T/h.log"; fail "grpo run over the hosts exited $rc"; }
local4 "$GRPO_EXE" run "$R" --max-total-steps 2 --set output_dir="$T/l" $SET >"$T/l.log" 2>&1 ||
    { rc=$?; cat "$T/l.log"; fail "grpo run on this node exited $rc"; }
cmp "$T/h/tiny-zero/checkpoints/step-2/model.safetensors" "$T/l/tiny-zero/checkpoints/step-2/model.safetensors" ||
    fail "the weights over the hosts differ from one node's"
strip "$T/h/tiny-zero/metrics.jsonl" >"$T/h.m"
strip "$T/l/tiny-zero/metrics.jsonl" >"$T/l.m"
cmp "$T/h.m" "$T/l.m" || fail "the metrics over the hosts differ from one node's"
echo "multinode_check: 4 ranks over the hosts == 4 ranks on one node (weights and metrics, byte for byte)"

# 3. rank 3 (on the last host) killed after the step-1 checkpoint, then --resume
multi "$GRPO_EXE" run "$R" --max-total-steps 4 --set stages.grpo.save_steps=1 --set output_dir="$T/k" $SET \
    >"$T/k.log" 2>&1 &
job=$!
ck="$T/k/tiny-zero/checkpoints/step-1/trainer_state.json"
i=0
while [ ! -e "$ck" ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i + 1)); done
[ -e "$ck" ] || { kill $job; fail "no step-1 checkpoint within 120 s"; }
t0=$(date +%s)
ssh "$last" "for p in \$(pgrep -f 'output_dir=$T/[k]'); do tr '\\0' '\\n' </proc/\$p/environ 2>/dev/null |
    grep -qx OMPI_COMM_WORLD_RANK=3 && kill -9 \$p && echo killed \$p; done" >"$T/kill.log" 2>&1
grep -q killed "$T/kill.log" || { kill $job; cat "$T/kill.log"; fail "rank 3 not found on $last"; }
wait $job
rc=$?
dt=$(($(date +%s) - t0))
[ $rc -ne 0 ] || fail "mpirun exited 0 after rank 3 was killed"
[ $dt -le 60 ] || fail "the job took $dt s to end after rank 3 was killed"
for h in $(echo "$GRPO_TEST_HOSTS" | tr ',' '\n' | cut -d: -f1); do
    ssh "$h" "pgrep -f 'output_dir=$T/[k]'" >/dev/null && fail "ranks left running on $h"
done
grep -q 'rank 3' "$T/k.log" || { cat "$T/k.log"; fail "the job's output does not name rank 3"; }
echo "multinode_check: rank 3 killed on $last: every rank gone in $dt s, exit $rc, rank 3 named"
multi "$GRPO_EXE" run "$R" --max-total-steps 4 --resume --set stages.grpo.save_steps=1 --set output_dir="$T/k" $SET \
    >"$T/r.log" 2>&1 || { rc=$?; cat "$T/r.log"; fail "--resume over the hosts exited $rc"; }
local4 "$GRPO_EXE" run "$R" --max-total-steps 4 --set stages.grpo.save_steps=1 --set output_dir="$T/u" $SET \
    >"$T/u.log" 2>&1 || { rc=$?; cat "$T/u.log"; fail "grpo run on this node exited $rc"; }
cmp "$T/k/tiny-zero/checkpoints/step-4/model.safetensors" "$T/u/tiny-zero/checkpoints/step-4/model.safetensors" ||
    fail "the resumed run's weights differ from the uninterrupted run's"
echo "multinode_check: --resume over the hosts: step-4 weights byte-identical to the uninterrupted run"
