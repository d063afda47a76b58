#!/usr/bin/env bash
# tests/fuzz/run.sh [seconds-per-target]: short libFuzzer runs of meap's four parsers.
#
# Configures a clang build with -DMEAP_BUILD_FUZZERS=ON in $MEAP_FUZZ_BUILD_DIR (default: a new
# directory under /tmp, kept), builds fuzz_safetensors, fuzz_token_dataset, fuzz_hf_config and
# fuzz_instruction
# (libFuzzer + ASan + UBSan), and runs each for the given seconds (default 5) over a copy of
# tests/fuzz/corpus/<target> and tests/fuzz/regressions/<target> (with tests/fuzz/<target>.dict as
# libFuzzer's dictionary where there is one): the repository is never written.
# Prints each target's executions; on a crash (a sanitizer report, a signal, an exception other
# than meap::error, a timeout, running out of memory) it prints the log's end, the input's path
# in the work directory and a hex dump of its first 256 bytes, runs the other targets, and exits 1.
#
# Environment: MEAP_FUZZ_BUILD_DIR (build and work directory), MEAP_FUZZ_CXX (default clang++),
# MEAP_FUZZ_JOBS (build jobs, default nproc), MEAP_FUZZ_ARGS (extra libFuzzer flags),
# MEAP_FUZZ_TARGETS (default "safetensors token_dataset hf_config instruction").
set -euo pipefail
seconds=${1:-5}
[[ $seconds =~ ^[0-9]+$ && $seconds -ge 1 ]] || { echo "usage: $0 [seconds-per-target >= 1]" >&2; exit 2; }
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir=${MEAP_FUZZ_BUILD_DIR:-$(mktemp -d /tmp/meap-fuzz.XXXXXX)}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
build="$dir/build"
jobs=${MEAP_FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}
read -r -a targets <<<"${MEAP_FUZZ_TARGETS:-safetensors token_dataset hf_config instruction}"
read -r -a extra <<<"${MEAP_FUZZ_ARGS:-}"
started=$SECONDS
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

# OpenMP, a CBLAS and -march=native are of no use to the parsers; leaving them out keeps the build
# small and the sanitizers free of uninstrumented runtimes.
CXX=${MEAP_FUZZ_CXX:-clang++} cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMEAP_BUILD_FUZZERS=ON -DMEAP_ENABLE_CUDA=OFF -DMEAP_BUILD_EXAMPLES=OFF -DMEAP_BUILD_BENCHMARKS=OFF \
  -DMEAP_INSTALL=OFF -DMEAP_ENABLE_OPENMP=OFF -DMEAP_BLAS=OFF -DMEAP_NATIVE_ARCH=OFF >"$dir/configure.log" 2>&1 ||
  { cat "$dir/configure.log" >&2; exit 1; }
cmake --build "$build" -j "$jobs" --target "${targets[@]/#/fuzz_}"
echo "fuzz: built in $((SECONDS - started)) s; ${seconds} s per target; work directory $dir/run"

failed=()
for target in "${targets[@]}"; do
  work="$dir/run/$target"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  # A copy: libFuzzer adds the inputs it finds to the corpus directory it is given.
  for from in corpus regressions; do
    for file in "$root/tests/fuzz/$from/$target"/*; do
      [[ -f $file ]] && cp "$file" "$work/corpus/$from-$(basename "$file")"
    done
  done
  dict=()
  [[ -f "$root/tests/fuzz/$target.dict" ]] && dict=(-dict="$root/tests/fuzz/$target.dict")
  status=0
  "$build/tests/fuzz/fuzz_$target" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" "${dict[@]}" "${extra[@]}" "$work/corpus" >"$work/log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
  corpus=$(find "$work/corpus" -type f | wc -l)
  shopt -s nullglob
  found=("$work"/artifacts/{crash,leak,timeout,oom}-*)
  shopt -u nullglob
  if [[ $status -eq 0 && ${#found[@]} -eq 0 ]]; then
    echo "fuzz $target: ${runs:-?} executions in ${seconds} s, corpus $corpus inputs, no crash"
    continue
  fi
  failed+=("$target")
  echo "fuzz $target: FAILED (exit $status) after ${runs:-?} executions; log $work/log"
  tail -n 60 "$work/log" | sed 's/^/  | /'
  for input in "${found[@]}"; do
    known=""
    for file in "$root/tests/fuzz/regressions/$target"/*; do
      [[ -f $file ]] && cmp -s "$file" "$input" && known=" = known regression tests/fuzz/regressions/$target/$(basename "$file")"
    done
    echo "fuzz $target: input $input ($(stat -c %s "$input") bytes)$known, first 256 bytes:"
    od -A x -t x1z -v -N 256 "$input" | sed 's/^/  /'
  done
  [[ ${#found[@]} -gt 0 ]] || echo "fuzz $target: no crash input written (see the log)"
done

echo "fuzz: done in $((SECONDS - started)) s"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: crashes in: ${failed[*]} (keep each new input in tests/fuzz/regressions/<target>/)" >&2
  exit 1
fi
