#!/bin/sh
# `srun --mpi=pmix grpo run` under Slurm (docs/distributed.md, "Launch"):
#   1. srun -n 2 of the demo's GRPO stage gives the weights and every logged
#      value (timings aside) of mpirun -np 2, byte for byte;
#   2. a rank killed (SIGKILL) after the first checkpoint: srun and every
#      rank are gone within 60 s, srun names the task and exits non-zero;
#   3. `--resume` under srun ends with the weights of an uninterrupted run.
# It needs a Slurm whose partition has an idle node on this machine (srun,
# sinfo, slurmd with the pmix MPI plugin): without one it is skipped (77),
# as on CI; a developer's machine with Slurm runs it. Environment (meson):
# GRPO_EXE, GRPO_SRC, MPIRUN.
set -u
skip() { echo "srun_check: skipped: $*"; exit 77; }
fail() { echo "srun_check: FAIL: $*"; exit 1; }
command -v srun >/dev/null 2>&1 || skip "no srun"
command -v sinfo >/dev/null 2>&1 || skip "no sinfo"
idle=$(timeout 10 sinfo -h -t idle,mix -o %n 2>/dev/null) || skip "sinfo failed (no slurmctld)"
[ -n "$idle" ] || skip "no idle Slurm node"
srun --mpi=list 2>&1 | grep -q pmix || skip "Slurm without the pmix MPI plugin"
: "${GRPO_EXE:?}" "${GRPO_SRC:?}" "${MPIRUN:=mpirun}"

T=$(mktemp -d) || fail "mktemp"
trap 'rm -rf "$T"' EXIT
R="$GRPO_SRC/recipes/tiny-zero.lua"
# the eval stages shortened (2 test prompts) to keep the check fast; the GRPO stage as the demo's
SET="--set datasets.test.limit=2 --quiet"
# metrics.jsonl without its wall-clock fields
strip() { sed -E 's/"(tokens_per_s|step_time|time\/[a-z_]+)":[^,}]*,?//g' "$1"; }

# 1. srun and mpirun, 2 steps
srun --mpi=pmix -n 2 --oversubscribe --kill-on-bad-exit=1 "$GRPO_EXE" run "$R" --max-total-steps 2 \
    --set output_dir="$T/s" $SET >"$T/s.log" 2>&1 || { rc=$?; cat "$T/s.log"; fail "srun run exited $rc"; }
"$MPIRUN" --oversubscribe -np 2 "$GRPO_EXE" run "$R" --max-total-steps 2 \
    --set output_dir="$T/m" $SET >"$T/m.log" 2>&1 || { rc=$?; cat "$T/m.log"; fail "mpirun run exited $rc"; }
cmp "$T/s/tiny-zero/checkpoints/step-2/model.safetensors" "$T/m/tiny-zero/checkpoints/step-2/model.safetensors" ||
    fail "srun's weights differ from mpirun's"
strip "$T/s/tiny-zero/metrics.jsonl" >"$T/s.m"
strip "$T/m/tiny-zero/metrics.jsonl" >"$T/m.m"
cmp "$T/s.m" "$T/m.m" || fail "srun's metrics differ from mpirun's"
tr -d ' \n' <"$T/s/tiny-zero/summary.json" | grep -q '"peak_allocated":\[[0-9]*,[0-9]*\]' ||
    fail "srun's summary.json does not hold two ranks' peaks (was it one world of 2?)"
echo "srun_check: srun -n 2 == mpirun -np 2 (weights and metrics, byte for byte)"

# 2. rank 1 killed after the step-1 checkpoint, no --kill-on-bad-exit: the job must still end
srun --mpi=pmix -n 2 --oversubscribe "$GRPO_EXE" run "$R" --max-total-steps 4 --set stages.grpo.save_steps=1 \
    --set output_dir="$T/k" $SET >"$T/k.log" 2>&1 &
job=$!
ck="$T/k/tiny-zero/checkpoints/step-1/trainer_state.json"
i=0
while [ ! -e "$ck" ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i + 1)); done
[ -e "$ck" ] || { kill $job; fail "no step-1 checkpoint within 120 s"; }
victim=""
for p in $(pgrep -f "$T/k"); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx 'SLURM_PROCID=1' && victim=$p
done
[ -n "$victim" ] || { kill $job; fail "rank 1 not found"; }
t0=$(date +%s)
kill -9 "$victim"
wait $job
rc=$?
dt=$(($(date +%s) - t0))
[ $rc -ne 0 ] || fail "srun exited 0 after a rank was killed"
[ $dt -le 60 ] || fail "the job took $dt s to end after rank 1 was killed"
pgrep -f "$T/k" >/dev/null && fail "ranks left running after srun ended"
grep -q 'task 1' "$T/k.log" || { cat "$T/k.log"; fail "the log does not name task 1"; }
echo "srun_check: rank 1 killed: every rank gone in $dt s, srun exit $rc, task 1 named"

# 3. resume under srun to step 4 == an uninterrupted run to step 4
srun --mpi=pmix -n 2 --oversubscribe --kill-on-bad-exit=1 "$GRPO_EXE" run "$R" --max-total-steps 4 --resume \
    --set stages.grpo.save_steps=1 --set output_dir="$T/k" $SET >"$T/r.log" 2>&1 || { rc=$?; cat "$T/r.log"; fail "srun --resume exited $rc"; }
"$MPIRUN" --oversubscribe -np 2 "$GRPO_EXE" run "$R" --max-total-steps 4 --set stages.grpo.save_steps=1 \
    --set output_dir="$T/u" $SET >"$T/u.log" 2>&1 || { rc=$?; cat "$T/u.log"; fail "mpirun run exited $rc"; }
cmp "$T/k/tiny-zero/checkpoints/step-4/model.safetensors" "$T/u/tiny-zero/checkpoints/step-4/model.safetensors" ||
    fail "the resumed run's weights differ from the uninterrupted run's"
echo "srun_check: --resume under srun: step-4 weights byte-identical to the uninterrupted run"
