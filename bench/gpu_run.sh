#!/bin/bash
# The whole GPU session of issue 8 in one command, on the GPU machine, from
# the repository root, after bench/gpu_prepare.sh made .gpu/bundle.tar.gz
# on the development machine:
#
#   run(command="bash bench/gpu_run.sh all", carry=[".gpu"], timeout_s=600)
#
# Phases (each can be run alone; `all` runs them in order):
#   check  correctness on the GPU: nvidia-smi; the parity harness (every op
#          against the CPU reference, synchronising after each op so a fault
#          names its kernel), the grouped expert GEMM's cuBLAS path, the
#          hf-tiny-v3-a fixtures (logits 1e-4, greedy tokens, gradients
#          1e-3), the rollout engine, the CLI with --device cuda, a whole
#          GRPO run with a checkpoint resume (bit-identical); then
#          compute-sanitizer (memcheck on the parity harness, racecheck on
#          the kernels with shared-memory reductions)
#   ours   bench_gpu: peaks, sampling, training step, GRPO step, memory;
#          then (--variants, same model) with TF32 GEMMs (f32 GEMM peak,
#          train) and with the cuBLAS expert path (sample)
#   bf16   bench_gpu --precision bf16 (bf16 mode, docs/cuda.md): sampling,
#          training step, GRPO step, memory, appended to bench_gpu.jsonl
#          (records carry "precision"); a command of its own when `all`
#          would not fit one 600 s call
#   hf     bench/hf_baseline.py (transformers, same device, same run)
#   summary  a markdown table of ours against transformers
#   quick  the short-window check (issue 17): about 7 minutes on the GPU,
#          every step under its own timeout, each result written under $OUT
#          as soon as it exists (quick.log, quick_status.txt, then
#          bench_gpu.jsonl, hf.jsonl, summary.md), so a timeout keeps what
#          finished: (1) the parity harness (every op, f32 and bf16 cases,
#          synchronising after each) and compute-sanitizer memcheck on it,
#          (2) the hf-tiny-v3-a fixtures in f32 (1e-4) and bf16 (the
#          emulator's budgets), the frozen fp8/bf16 weights, (3) a GRPO run
#          with resume (bit-exact), (4) bf16 sampling (64 prompts x 128 + 128
#          tokens) and the training step (8 x 1024) on the 12-layer
#          Moonlight-shaped config, (5) transformers' generate and training
#          step on the same config and device, (6) the summary table.
#          `bash bench/gpu_run.sh quick` again (same warm machine) reruns
#          only the steps that did not pass (quick_status.txt, kept beside
#          the unpacked bundle and copied to $OUT, says which).
#
# Rehearsal without a GPU (the development machine, after `ninja -C build`):
#   GRPO_GPU_REHEARSE=1 bash bench/gpu_run.sh quick
# runs the same steps with the same timeouts against build/'s programs on
# the CUDA emulator ("emu"), bench_gpu and transformers on the CPU with
# their tiny configs, and no compute-sanitizer: it checks the script, not
# the GPU.
# Results under $OUT (at most 8 files come back): check.log, bench_gpu.jsonl,
# bench_gpu.log, hf.jsonl, hf.log, summary.md. The last lines printed are
# the summary.
set -u
phase=${1:-all}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
OUT=${OUT:-/tmp/grpo_gpu_out}
mkdir -p "$OUT"
B=/tmp/grpo_gpu
if [ -n "${GRPO_GPU_REHEARSE:-}" ]; then
    [ "$phase" = quick ] || { echo "gpu_run: GRPO_GPU_REHEARSE rehearses the quick phase only"; exit 2; }
    [ -x build/grpo ] || { echo "gpu_run: rehearsal needs build/ (ninja -C build)"; exit 1; }
    export SHARED_DIR=${SHARED_DIR:-$root/../shared} GRPO_SRC="$root" GRPO_EXE="$root/build/grpo" OMP_WAIT_POLICY=passive
    echo "gpu_run: rehearsal on the emulator with build/ ($(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
fi
# the carried bundle replaces any older one unpacked by an earlier call (a
# later phase of the same session finds the same bundle and skips this)
if [ -f .gpu/bundle.tar.gz ] && ! cmp -s .gpu/bundle.tar.gz "$B/bundle.tar.gz"; then
    rm -rf "$B" /tmp/bundle
    mkdir -p /tmp && tar -xzf .gpu/bundle.tar.gz -C /tmp && mv /tmp/bundle "$B" && cp .gpu/bundle.tar.gz "$B/"
fi
[ -n "${GRPO_GPU_REHEARSE:-}" ] || [ -x "$B/bin/grpo" ] || { echo "gpu_run: no .gpu/bundle.tar.gz (run bench/gpu_prepare.sh here, then carry .gpu)"; exit 1; }
# CUDA libraries of this machine (toolkit, or the pip wheels torch uses)
cudalib=""
for l in libcudart.so.13 libcublas.so.13 libcublasLt.so.13; do
    p=$(ls /usr/local/cuda/lib64/$l /usr/local/cuda-13*/lib64/$l /usr/local/cuda/targets/x86_64-linux/lib/$l 2>/dev/null | head -1)
    [ -n "$p" ] || p=$(find /usr /opt -name "$l*" -path '*lib*' 2>/dev/null | head -1)
    [ -n "$p" ] && cudalib="$cudalib:$(dirname "$p")"
done
orig_ld=${LD_LIBRARY_PATH:-}
if [ -z "${GRPO_GPU_REHEARSE:-}" ]; then
    export LD_LIBRARY_PATH="$B/lib$cudalib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export SHARED_DIR="$B/shared" GRPO_SRC="$root" GRPO_EXE="$B/bin/grpo" OMP_WAIT_POLICY=passive
    echo "gpu_run: bundle of commit $(cat "$B/COMMIT"), repo at $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
fi

run_check() {
    local log="$OUT/check.log" fails=0
    : > "$log"
    step() { # name, command...
        local name=$1
        shift
        echo "== $name: $*" | tee -a "$log"
        local t0=$(date +%s)
        timeout 300 "$@" >> "$log" 2>&1
        local rc=$?
        echo "== $name: exit $rc ($(($(date +%s) - t0)) s)" | tee -a "$log"
        [ $rc -eq 0 ] || fails=$((fails + 1))
    }
    nvidia-smi >> "$log" 2>&1
    ldd "$B/bin/grpo" | grep -E "not found|cuda|cublas" >> "$log" 2>&1
    step parity env GRPO_CUDA_SYNC=1 "$B/bin/parity"
    step parity_moe_blas env GRPO_CUDA_MOE_PATH=blas "$B/bin/parity" --filter moe_matmul
    step parity_fast "$B/bin/parity"
    step attn_invariance "$B/bin/attn_invariance" cuda
    step fixtures "$B/bin/test_cuda_fixture" cuda
    step rollout "$B/bin/test_cuda_rollout" cuda
    step cli "$B/bin/test_cuda_cli"
    step grpo_run "$B/bin/test_cuda_run" cuda
    step paged "$B/bin/test_cuda_paged" cuda
    step graphs "$B/bin/test_cuda_graph" cuda
    step fixtures_bf16 "$B/bin/test_cuda_fixture" cuda bf16
    step rollout_bf16 "$B/bin/test_cuda_rollout" cuda bf16
    step grpo_run_bf16 "$B/bin/test_cuda_run" cuda bf16
    step paged_bf16 "$B/bin/test_cuda_paged" cuda bf16
    step graphs_bf16 "$B/bin/test_cuda_graph" cuda bf16
    if command -v compute-sanitizer >/dev/null; then
        step memcheck compute-sanitizer --tool memcheck --error-exitcode 9 "$B/bin/parity"
        for op in mla_attn_fwd mla_attn_bwd mla_decode moe_route moe_matmul rmsnorm_bwd sample sumsq; do
            step "racecheck_$op" compute-sanitizer --tool racecheck --error-exitcode 9 "$B/bin/parity" --filter $op
        done
    fi
    grep -E "^(FAIL|parity on|skipped)|PASSED|FAILED|ERROR SUMMARY|Error|error" "$log" | head -60
    echo "check: $fails step(s) failed (details in check.log)"
}

run_ours() {
    local j="$OUT/bench_gpu.jsonl" log="$OUT/bench_gpu.log"
    : > "$j"
    : > "$log"
    timeout 540 "$B/bin/bench_gpu" --variants --out "$j" 2>&1 | tee -a "$log"
}

run_bf16() {
    local j="$OUT/bench_gpu.jsonl" log="$OUT/bench_gpu.log"
    timeout 540 "$B/bin/bench_gpu" --precision bf16 --only sample,train,grpo,memory --out "$j" 2>&1 | tee -a "$log"
}

run_hf() {
    : > "$OUT/hf.jsonl"
    # Python and torch with the machine's own libraries, not the bundle's
    LD_LIBRARY_PATH="$orig_ld" PYTHONUNBUFFERED=1 timeout 500 python3 bench/hf_baseline.py --out "$OUT/hf.jsonl" 2>&1 |
        tee "$OUT/hf.log" | grep -v Warning
}

run_summary() {
    python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name)
    return [json.loads(l) for l in open(p)] if os.path.exists(p) else []
ours, hf = load("bench_gpu.jsonl"), load("hf.jsonl")
def first(rows, section, **kv):
    for r in rows:
        if r.get("section") == section and r.get("variant", "default") == kv.get("variant", "default") and \
                r.get("precision", "f32") == kv.get("precision", "f32") and \
                all(r.get(k) == v for k, v in kv.items() if k not in ("variant", "precision")):
            return r
    return {}
lines = ["| figure | ours | transformers | ratio |", "| --- | --- | --- | --- |"]
def row(name, a, b, unit=""):
    ratio = f"{a / b:.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "-"
    lines.append(f"| {name} | {a if a is not None else '-'} {unit} | {b if b is not None else '-'} {unit} | {ratio} |")
row("copy bandwidth (GB/s)", first(ours, "peak", what="copy").get("GB_per_s"), first(hf, "peak", what="copy").get("GB_per_s"))
row("bf16 GEMM 8192^3 (TFLOP/s)", first(ours, "peak", what="gemm_bf16").get("TFLOP_per_s"), first(hf, "peak", what="gemm_bf16").get("TFLOP_per_s"))
s, g = first(ours, "sample"), first(hf, "generate")
row("sampling 64x128 -> +128 (new tokens/s)", s.get("new_tokens_per_s"), g.get("new_tokens_per_s"))
lines.append(f"| decode step (ms), share of HBM roofline | {s.get('decode_step_ms')} ms, {s.get('roofline_share')} | | |")
t, h = first(ours, "train"), first(hf, "train")
row("train fwd+bwd 8x1024 (tokens/s)", t.get("tokens_per_s"), h.get("tokens_per_s"))
lines.append(f"| train share of bf16 GEMM peak | {t.get('share_of_bf16_peak')} | {h.get('share_of_bf16_peak')} | |")
tt = first(ours, "train", variant="tf32")
lines.append(f"| train with TF32 GEMMs (tokens/s) | {tt.get('tokens_per_s', '-')} | | |")
sb = first(ours, "sample", variant="moe-blas")
lines.append(f"| sampling, experts through cuBLAS (new tokens/s) | {sb.get('new_tokens_per_s', '-')} | | |")
s16, t16 = first(ours, "sample", precision="bf16"), first(ours, "train", precision="bf16")
row("bf16 mode: sampling (new tokens/s)", s16.get("new_tokens_per_s"), g.get("new_tokens_per_s"))
lines.append(f"| bf16 mode: decode step (ms), share of HBM roofline | {s16.get('decode_step_ms')} ms, {s16.get('roofline_share')} | | |")
row("bf16 mode: train fwd+bwd 8x1024 (tokens/s)", t16.get("tokens_per_s"), h.get("tokens_per_s"))
for r in ours:
    if r.get("section") in ("grpo", "memory"):
        lines.append("| " + r["section"] + " " + r.get("precision", "f32") + " | " + ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("section", "device", "config", "variant")) + " | | |")
dev = (ours or hf or [{}])[0].get("device", "?")
text = f"GPU benchmarks on {dev}\n\n" + "\n".join(lines) + "\n"
open(os.path.join(out, "summary.md"), "w").write(text)
print(text)
EOF
}


# The short-window check (header). qstep NAME SECONDS COMMAND...: skipped
# when quick_status.txt already records NAME as passed (a rerun redoes only
# what failed or did not finish); its status line is appended at once.
run_quick() {
    # the status lives beside the unpacked bundle, which stays while the
    # machine is warm ($OUT is empty at every call), and is copied to $OUT
    local log="$OUT/quick.log" st="$B/quick_status.txt" fails=0 t_all=$(date +%s)
    [ -n "${GRPO_GPU_REHEARSE:-}" ] && st="$OUT/quick_status.txt"
    local dev=cuda bin="$B/bin" bcfg=moonlight12 hfargs="" bdev=cuda bprec=bf16 py=${GRPO_GPU_PYTHON:-python3}
    if [ -n "${GRPO_GPU_REHEARSE:-}" ]; then
        dev=emu bin="$root/build/tests" bcfg=tiny hfargs="--tiny --device cpu" bdev=cpu bprec=f32 # (bf16 training needs a GPU)
    fi
    touch "$st" "$log"
    qstep() {
        local name=$1 secs=$2
        shift 2
        if grep -qx "$name ok" "$st"; then echo "== $name: passed earlier (quick_status.txt)"; return; fi
        echo "== $name (timeout ${secs}s): $*" | tee -a "$log"
        local t0=$(date +%s)
        timeout "$secs" "$@" >> "$log" 2>&1
        local rc=$? dt=$(($(date +%s) - t0))
        if [ $rc -eq 0 ]; then echo "$name ok" >> "$st"; else echo "$name failed rc=$rc ${dt}s" >> "$st"; fails=$((fails + 1)); fi
        echo "== $name: exit $rc (${dt} s)" | tee -a "$log"
        [ "$st" = "$OUT/quick_status.txt" ] || cp "$st" "$OUT/"
    }
    local parity=$bin/parity fixture=$bin/test_cuda_fixture run=$bin/test_cuda_run frozen=$bin/test_cuda_frozen
    local bench=$bin/bench_gpu pargs=""
    if [ -n "${GRPO_GPU_REHEARSE:-}" ]; then
        parity=$bin/parity/parity pargs="--backend emu" fixture=$bin/cuda/test_cuda_fixture
        run=$bin/cuda/test_cuda_run frozen=$bin/cuda/test_cuda_frozen bench=$root/build/bench/bench_gpu
    fi
    [ -z "${GRPO_GPU_REHEARSE:-}" ] && nvidia-smi >> "$log" 2>&1
    # (1) every op against the CPU, then memcheck on the same harness
    qstep parity 120 env GRPO_CUDA_SYNC=1 "$parity" $pargs
    if [ -z "${GRPO_GPU_REHEARSE:-}" ] && command -v compute-sanitizer >/dev/null; then
        qstep memcheck 150 compute-sanitizer --tool memcheck --error-exitcode 9 "$parity"
    fi
    # (2) the fixtures, f32 then bf16, and the frozen stored weights
    qstep fixtures 60 "$fixture" $dev
    qstep fixtures_bf16 60 "$fixture" $dev bf16
    qstep frozen 60 "$frozen" $dev
    # (3) a GRPO run with a resume, bit-exact
    qstep grpo_run 120 "$run" $dev
    # (4) grpo: bf16 sampling and training step (appended as they finish)
    qstep ours_bf16 120 "$bench" --device $bdev --config $bcfg --precision $bprec --only sample,train --out "$OUT/bench_gpu.jsonl"
    # (5) transformers on the same config and device
    qstep hf 150 env LD_LIBRARY_PATH="$orig_ld" PYTHONUNBUFFERED=1 "$py" bench/hf_baseline.py --only generate,train $hfargs --out "$OUT/hf.jsonl"
    # (6) the table
    run_summary > /dev/null
    echo "quick: $fails step(s) failed, $(($(date +%s) - t_all)) s; status:"
    cat "$st"
    grep -E "^(FAIL|parity on)|FAILED|ERROR SUMMARY" "$log" | head -30
    [ -s "$OUT/summary.md" ] && cat "$OUT/summary.md"
}

case $phase in
check) run_check ;;
quick) run_quick ;;
ours) run_ours ;;
bf16) run_bf16 ;;
hf) run_hf ;;
summary) run_summary ;;
all)
    run_check
    run_ours
    run_bf16
    run_hf
    run_summary
    ;;
*) echo "usage: bash bench/gpu_run.sh [all|quick|check|ours|bf16|hf|summary]"; exit 2 ;;
esac
