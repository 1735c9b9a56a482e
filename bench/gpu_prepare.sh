#!/bin/bash
# Prepares the GPU session (bench/gpu_run.sh) on the development machine.
#
# The GPU machine has the CUDA toolkit and driver, Python with torch and
# transformers, but none of this project's Debian libraries (cjson, Lua,
# PCRE2, curl, cmocka), and its time is scarce. So everything is built
# here, where nvcc is, for a generic x86-64 CPU and sm_90:
#   build-gpu/                 meson build with CUDA, -Dnative=false, and
#                              without ICU (its 30 MB data library would
#                              not fit the device tool's 64 MiB transfer)
#   .gpu/bundle.tar.gz         the programs gpu_run.sh runs (grpo, the
#                              parity harness, the CUDA tests, bench_gpu),
#                              every shared library they load that is not
#                              part of glibc, libstdc++ or CUDA, and the
#                              fixtures (shared/fixtures/hf-tiny-v3-a)
# The device call then carries .gpu (it is in .gitignore):
#   run(command="bash bench/gpu_run.sh all", carry=[".gpu"], timeout_s=600)
#
# usage: bash bench/gpu_prepare.sh       (SHARED_DIR: fixtures, default ../shared)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
shared=${SHARED_DIR:-$root/../shared}
build=build-gpu
[ -d "$shared/fixtures/hf-tiny-v3-a" ] || { echo "gpu_prepare: no fixtures at $shared (set SHARED_DIR)" >&2; exit 1; }
command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || { echo "gpu_prepare: no nvcc" >&2; exit 1; }

# pkg-config sees every package but ICU's
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/pc"
for d in $(pkg-config --variable pc_path pkg-config | tr ':' ' '); do
    [ -d "$d" ] || continue
    for f in "$d"/*.pc; do
        [ -e "$f" ] || continue
        case $(basename "$f") in icu-*) continue ;; esac
        [ -e "$tmp/pc/$(basename "$f")" ] || cp "$f" "$tmp/pc/"
    done
done
if [ ! -f "$build/build.ninja" ]; then
    PKG_CONFIG_LIBDIR="$tmp/pc" meson setup "$build" -Dnative=false -Dbuildtype=release -Dcuda=enabled
fi
targets="grpo grpo-cuda.so tests/parity/parity tests/parity/attn_invariance tests/cuda/test_cuda_fixture tests/cuda/test_cuda_rollout tests/cuda/test_cuda_cli tests/cuda/test_cuda_run tests/cuda/test_cuda_paged tests/cuda/test_cuda_graph tests/cuda/test_cuda_frozen bench/bench_gpu"
ninja -C "$build" $targets
[ -f "$build/kernels/cuda_backend.o" ] || { echo "gpu_prepare: $build has no CUDA objects" >&2; exit 1; }

# the bundle
b="$tmp/bundle"
mkdir -p "$b/bin" "$b/lib" "$b/shared/fixtures"
for t in $targets; do cp "$build/$t" "$b/bin/"; done
# shared libraries: everything ldd resolves but glibc, the C++ runtime and
# CUDA (the GPU machine's own, matching its driver)
for t in $targets; do ldd "$build/$t"; done | awk '/=>/ {print $3}' | sort -u | while read -r lib; do
    case $(basename "$lib") in
    libc.so.* | libm.so.* | libdl.so.* | libpthread.so.* | librt.so.* | libresolv.so.* | ld-linux*) ;;
    libstdc++.so.* | libgcc_s.so.*) ;;
    libcuda.so.* | libcudart.so.* | libcublas.so.* | libcublasLt.so.* | libnccl.so.*) ;;
    *) cp -L "$lib" "$b/lib/" ;;
    esac
done
if ldd "$build/grpo" | grep -q libicu; then echo "gpu_prepare: $build links ICU; remove it and rerun" >&2; exit 1; fi
cp -r "$shared/fixtures/hf-tiny-v3-a" "$b/shared/fixtures/"
git describe --always --dirty > "$b/COMMIT" 2>/dev/null || echo unknown > "$b/COMMIT"
mkdir -p .gpu
tar -czf .gpu/bundle.tar.gz -C "$tmp" bundle
echo "gpu_prepare: .gpu/bundle.tar.gz $(du -h .gpu/bundle.tar.gz | cut -f1) (commit $(cat "$b/COMMIT")); programs: $targets"
echo "gpu_prepare: libraries: $(ls "$b/lib" | tr '\n' ' ')"
echo 'next: run(command="bash bench/gpu_run.sh quick", carry=[".gpu"], timeout_s=540) (then `all` phases if time is left)'
