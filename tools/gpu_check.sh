#!/usr/bin/env bash
# tools/gpu_check.sh: every GPU test, compute-sanitizer case and GPU benchmark of meap in one
# prepared command, for a short lease on a GPU machine that has the CUDA toolkit and PyTorch but
# no Eigen or Boost (docs/gpu.md, "The GPU check").
#
#   tools/gpu_check.sh build [--build-dir DIR] [--bundle FILE]
#       Stage 1, on the CPU machine. Builds the GPU-check programs (CMake target
#       gpu_check_programs: the `gpu` tests and the CUDA benchmarks; Release, sm_80 and sm_90, the
#       CUDA runtime linked statically, no CBLAS) and packs them, stripped, with the header-only
#       dependencies a fallback build needs, into one archive (default .gpu-check/bundle.tar.xz,
#       at most 60 MiB). A DIR configured already is reused when its cache fits.
#   tools/gpu_check.sh run [--bundle FILE] [--out DIR] [--deadline SECONDS]
#       Stage 2, on the GPU machine, in one call: prints the device; unpacks the bundle (or, when
#       its programs cannot load there, builds them from this tree with the bundled headers); runs
#       every GPU test, the determinism checks across processes, the compute-sanitizer cases of
#       tests/sanitizer_cases.txt and the benchmarks with their PyTorch baselines, each under a
#       time budget, a failure never stopping the later steps. Writes under DIR (default $OUT or
#       gpu-check-out): summary.txt (also printed last), results.json (every step and figure) and
#       logs.tar.gz (one log per step). Exit status: 0 when no step failed. --steps takes a
#       comma-separated subset of test,sanitizer,bench (a rerun after fixes can skip what passed).
#   tools/gpu_check.sh dry-run [--build-dir DIR] [--out DIR]
#       Both stages on this machine. Without a GPU every GPU step reports "skipped"; what runs is
#       the build, the packing, the unpacking, the load check of every program and the plumbing
#       of steps, logs, summary and JSON. CI runs this (.ci/run).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mode=${1:-}
shift || true
build_dir="$root/build-gpu-check"
bundle="$root/.gpu-check/bundle.tar.xz"
out_dir=${OUT:-$root/gpu-check-out}
deadline=${MEAP_GPU_CHECK_DEADLINE:-480}
parts="test,sanitizer,bench"
while (($# > 0)); do
  case "$1" in
    --steps) parts=$2; shift 2 ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --bundle) bundle=$2; shift 2 ;;
    --out) out_dir=$2; shift 2 ;;
    --deadline) deadline=$2; shift 2 ;;
    *) echo "gpu_check: unknown argument '$1' (see the comment at the top of tools/gpu_check.sh)" >&2; exit 2 ;;
  esac
done
max_bundle_bytes=$((60 * 1024 * 1024))

say() { printf 'gpu_check: %s\n' "$*"; }
die() { printf 'gpu_check: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------------------------
# Stage 1
# ------------------------------------------------------------------------------------------------

cache_value() { sed -n "s/^$1:[A-Z]*=//p" "$build_dir/CMakeCache.txt" 2>/dev/null | head -n 1; }

stage_build() {
  if ! command -v xz >/dev/null; then  # Debian's standard compressor; not in every minimal image
    local sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq xz-utils >/dev/null ||
      die "xz is needed to pack the bundle: apt-get install xz-utils"
  fi
  local nvcc=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
  [[ -x "$nvcc" ]] || die "no nvcc found (set CUDACXX): stage 1 compiles the CUDA programs"
  if [[ -f "$build_dir/CMakeCache.txt" ]]; then
    # Reuse a configured tree only when it builds what the bundle needs.
    local type arches
    type=$(cache_value CMAKE_BUILD_TYPE)
    arches=$(cache_value MEAP_CUDA_ARCHITECTURES)
    [[ "$type" == "Release" ]] || die "$build_dir is a '$type' build: the GPU check needs Release (another --build-dir?)"
    # 90 runs on the H200 (a fresh tree below also builds 80, for an A100); CI's dry run packs its
    # sm_90-only build.
    [[ ";$arches;" == *";90;"* ]] ||
      die "$build_dir builds CUDA architectures '$arches': the GPU check needs 90 (the H200)"
    [[ "$(cache_value CMAKE_CUDA_RUNTIME_LIBRARY)" =~ ^(|Static|STATIC|static)$ ]] ||
      die "$build_dir links the CUDA runtime '$(cache_value CMAKE_CUDA_RUNTIME_LIBRARY)': the GPU check needs Static"
  else
    cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMEAP_ENABLE_CUDA=ON \
      "-DMEAP_CUDA_ARCHITECTURES=80;90" -DCMAKE_CUDA_RUNTIME_LIBRARY=Static -DCMAKE_CUDA_COMPILER="$nvcc" \
      -DMEAP_BUILD_EXAMPLES=OFF >/dev/null || die "configuring $build_dir failed"
  fi
  [[ "$(cache_value MEAP_ENABLE_CUDA)" != "OFF" ]] || die "$build_dir has MEAP_ENABLE_CUDA=OFF"
  cmake --build "$build_dir" --target gpu_check_programs -j "$(nproc 2>/dev/null || echo 2)" ||
    die "building the GPU-check programs failed"
  local list="$build_dir/gpu_check_programs.txt"
  [[ -s "$list" ]] || die "$list is missing: is CUDA enabled in $build_dir?"

  local stage
  stage=$(mktemp -d /tmp/meap-gpu-bundle.XXXXXX)
  mkdir -p "$stage/bin" "$stage/lib" "$stage/deps/include"
  local name path
  while read -r name path; do
    [[ -x "$path" ]] || die "$name was not built ($path)"
    strip -o "$stage/bin/$name" "$path" || die "strip $path failed"
  done <"$list"
  # The shared libraries every program needs besides the C library and CUDA's: copied, used on
  # the GPU machine only if its own are missing or too old.
  local lib
  for lib in $(ldd "$stage"/bin/* 2>/dev/null | awk '/=> \// {print $3}' | sort -u); do
    case "$(basename "$lib")" in
      # NCCL (218 MB) comes from the GPU machine's CUDA toolkit or PyTorch (find_cuda_library_dirs).
      libc.so* | libm.so* | libdl.so* | librt.so* | libpthread.so* | ld-linux* | libcuda.so* | libcublas* | libnccl*) ;;
      *) cp -L "$lib" "$stage/lib/" ;;
    esac
  done
  # Header-only dependencies for the fallback build on the GPU machine: exactly the Eigen,
  # Boost and nlohmann-json headers the GPU-check objects were compiled with (ninja's deps log),
  # plus the CMake package files that find them.
  (cd "$build_dir" && ninja -t deps) 2>/dev/null | awk '$1 ~ /^\/usr\/include\/(eigen3|boost|nlohmann)\// {print $1}' |
    sort -u >"$stage/headers.txt"
  printf '%s\n' /usr/include/boost/version.hpp /usr/include/boost/config.hpp >>"$stage/headers.txt"
  while read -r path; do
    [[ -f "$path" ]] || continue
    mkdir -p "$stage/deps/include/$(dirname "${path#/usr/include/}")"
    cp "$path" "$stage/deps/include/${path#/usr/include/}"
  done < <(sort -u "$stage/headers.txt")
  # Eigen's and nlohmann-json's headers are included by meap's own headers too: take them whole
  # (small), so that a fallback build compiles whatever the current tree includes.
  cp -r /usr/include/eigen3 "$stage/deps/include/" 2>/dev/null
  cp -r /usr/include/nlohmann "$stage/deps/include/" 2>/dev/null
  mkdir -p "$stage/deps/share"
  [[ -d /usr/share/eigen3/cmake ]] && mkdir -p "$stage/deps/share/eigen3" && cp -r /usr/share/eigen3/cmake "$stage/deps/share/eigen3/"
  [[ -d /usr/share/cmake/nlohmann_json ]] && mkdir -p "$stage/deps/share/cmake" && cp -r /usr/share/cmake/nlohmann_json "$stage/deps/share/cmake/"
  # CLI11 (the benchmarks' command lines; header-only, its CMake package finds the headers next
  # to itself) and zlib (meap::meap's CRC-32: its two headers and the link-time library).
  [[ -d /usr/include/CLI ]] && cp -r /usr/include/CLI "$stage/deps/include/"
  [[ -d /usr/share/cmake/CLI11 ]] && mkdir -p "$stage/deps/share/cmake" && cp -r /usr/share/cmake/CLI11 "$stage/deps/share/cmake/"
  cp /usr/include/zlib.h /usr/include/zconf.h "$stage/deps/include/" 2>/dev/null
  local zlib
  zlib=$(ldconfig -p 2>/dev/null | awk '/libz\.so\.1 .*x86-64/ {print $NF; exit}')
  [[ -n "$zlib" ]] && mkdir -p "$stage/deps/lib" && cp -L "$zlib" "$stage/deps/lib/libz.so"
  # Boost.Test's shared library, which the test programs link (found by FindBoost in deps/lib).
  local boost_test
  for boost_test in /usr/lib/x86_64-linux-gnu/libboost_unit_test_framework.so*; do
    [[ -e "$boost_test" ]] && mkdir -p "$stage/deps/lib" && cp -L "$boost_test" "$stage/deps/lib/"
  done
  {
    echo "commit $(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $(ldd --version 2>&1 | head -n 1)"
    echo "nvcc $("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
    echo "architectures $(cache_value MEAP_CUDA_ARCHITECTURES)"
    echo "programs $(awk '{printf "%s ", $1}' "$list")"
  } >"$stage/manifest.txt"
  rm -f "$stage/headers.txt"
  mkdir -p "$(dirname "$bundle")"
  tar -C "$stage" -cf - . | xz -T0 -6 >"$bundle.tmp" && mv "$bundle.tmp" "$bundle" || die "packing $bundle failed"
  rm -rf "$stage"
  local bytes
  bytes=$(stat -c %s "$bundle")
  ((bytes <= max_bundle_bytes)) || die "$bundle is $((bytes / 1048576)) MiB: over the 60 MiB the lease can carry"
  say "wrote $bundle ($((bytes / 1048576)) MiB; $(wc -l <"$list") programs)"
  say "on the GPU machine: tools/gpu_check.sh run --bundle ${bundle#$root/} (carry ${bundle#$root/})"
}

# ------------------------------------------------------------------------------------------------
# Stage 2
# ------------------------------------------------------------------------------------------------

work=""
steps_file=""
started=$SECONDS
has_gpu=0

left() { echo $((deadline - (SECONDS - started))); }

# record NAME KIND STATUS SECONDS EXIT DETAIL
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "${6//$'\t'/ }" >>"$steps_file"; }

# step NAME KIND BUDGET COMMAND...: runs COMMAND with its output in logs/NAME.log, stopped after
# BUDGET seconds (or what is left of the deadline); records passed / failed / skipped / timeout.
# A command that prints "SKIPPED:" or exits 77 was skipped (no device, or no tool).
step() {
  local name=$1 kind=$2 budget=$3
  shift 3
  local log="$work/logs/$name.log" remaining
  remaining=$(left)
  if ((remaining < 10)); then
    record "$name" "$kind" "not run" 0 - "the deadline (${deadline} s) had passed"
    return
  fi
  ((budget > remaining)) && budget=$remaining
  local t0=$SECONDS rc
  {
    echo "\$ $*"
    echo "(budget ${budget} s)"
  } >"$log"
  timeout --kill-after=10 "$budget" "$@" >>"$log" 2>&1
  rc=$?
  local seconds=$((SECONDS - t0)) status detail=""
  if ((rc == 124 || rc == 137)); then
    status="timeout"
    detail="stopped after ${budget} s"
  elif ((rc == 77)) || grep -q "SKIPPED:" "$log"; then
    status="skipped"
    detail=$(grep -m1 -o "SKIPPED:.*" "$log")
    # On a machine where nvidia-smi sees a GPU, a test that finds none is a failure (driver, runtime).
    if ((has_gpu)) && [[ "$kind" != "setup" ]]; then
      status="failed"
      detail="skipped although nvidia-smi sees a GPU: $detail"
    fi
  elif ((rc == 0)); then
    status="passed"
  else
    status="failed"
    # Boost.Test names every failed check with its file and line: the first few are the evidence.
    detail=$(grep -m3 -E "error: in|fatal error|\*\*\* [0-9]+ failure|ERROR SUMMARY: [1-9]|what\(\)|meap::error|not found" "$log" |
      tr '\n' ' ' | cut -c1-400)
  fi
  record "$name" "$kind" "$status" "$seconds" "$rc" "$detail"
  printf '  %-62s %-8s %4d s  %s\n' "$name" "$status" "$seconds" "${detail:0:100}"
}

skip_step() { record "$1" "$2" "skipped" 0 - "$3"; printf '  %-62s %-8s        %s\n' "$1" skipped "$3"; }

# Where the GPU machine keeps cuBLASLt: the CUDA toolkit's lib64, or PyTorch's nvidia-cublas wheel.
find_cuda_library_dirs() {
  local dirs=() d
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64; do
    [[ -e "$d/libcublasLt.so.13" ]] && dirs+=("$d")
  done
  d=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null)
  [[ -n "$d" && -e "$d/libcublasLt.so.13" ]] && dirs+=("$d")
  # NCCL (test_dist_cuda): the toolkit's copy, or PyTorch's wheel's.
  for d in /usr/local/cuda/lib /usr/local/cuda/lib64 /usr/local/cuda-*/lib /usr/lib/x86_64-linux-gnu; do
    [[ -e "$d/libnccl.so.2" ]] && dirs+=("$d") && break
  done
  d=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null)
  [[ -n "$d" && -e "$d/libnccl.so.2" ]] && dirs+=("$d")
  local IFS=:
  echo "${dirs[*]}"
}

missing_libraries() { ldd "$@" 2>&1 | grep -E "not found|version .* not found" | sort -u; }

# unpack ARCHIVE DIR: Python's tarfile reads xz without the xz program, which a bare image may lack.
unpack() {
  python3 - "$1" "$2" <<'PY'
import sys, tarfile
with tarfile.open(sys.argv[1], "r:xz") as archive:
    try:
        archive.extractall(sys.argv[2], filter="data")  # Python 3.12+: no absolute or escaping paths
    except TypeError:
        archive.extractall(sys.argv[2])
PY
}

# The programs to run: the bundle's, when they load here; else built from this tree.
prepare_programs() {
  bin="$work/bundle/bin"
  mkdir -p "$work/bundle"
  if [[ -f "$bundle" ]] && unpack "$bundle" "$work/bundle" && [[ -d "$bin" ]]; then
    say "bundle: $(tr '\n' ';' <"$work/bundle/manifest.txt")"
  else
    say "no usable bundle at $bundle: building here"
    bin=""
  fi
  local cublas_dirs
  cublas_dirs=$(find_cuda_library_dirs)
  [[ -n "$cublas_dirs" ]] && export LD_LIBRARY_PATH="$cublas_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  if [[ -n "$bin" ]]; then
    local missing
    missing=$(missing_libraries "$bin"/*)
    if [[ -n "$missing" ]]; then
      say "libraries missing here: $(echo "$missing" | tr -s ' \t\n' ' '); trying the bundle's copies"
      export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$work/bundle/lib"
      missing=$(missing_libraries "$bin"/*)
    fi
    if [[ -z "$missing" ]]; then
      record load_programs setup passed 0 0 "prebuilt bundle; LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
      return
    fi
    say "the bundle's programs cannot load here ($(echo "$missing" | head -n 2 | tr -s ' \t\n' ' ')): building here"
    record load_programs setup failed 0 - "missing: $(echo "$missing" | tr -s ' \t\n' ' ')"
  fi
  # The fallback: build the same targets here with this machine's CUDA toolkit.
  local deps="$work/bundle/deps" args=()
  if [[ -d "$deps/include" ]]; then
    args+=("-DCMAKE_PREFIX_PATH=$deps" "-DEigen3_DIR=$deps/share/eigen3/cmake" "-DBoost_INCLUDE_DIR=$deps/include"
      "-DBoost_NO_BOOST_CMAKE=ON" "-DBoost_LIBRARY_DIR=$deps/lib" "-Dnlohmann_json_DIR=$deps/share/cmake/nlohmann_json"
      "-DCLI11_DIR=$deps/share/cmake/CLI11")
    # zlib: the machine's own development files if it has them, else the bundled ones.
    [[ -f /usr/include/zlib.h ]] || args+=("-DZLIB_INCLUDE_DIR=$deps/include" "-DZLIB_LIBRARY=$deps/lib/libz.so")
  fi
  step fallback_build setup 400 bash -c "cmake -S '$root' -B '$work/build' -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DMEAP_ENABLE_CUDA=ON '-DMEAP_CUDA_ARCHITECTURES=90' -DMEAP_BUILD_EXAMPLES=OFF -DMEAP_BLAS=OFF ${args[*]} &&
    cmake --build '$work/build' --target gpu_check_programs -j \$(nproc)"
  bin="$work/build/bin-links"
  mkdir -p "$bin"
  local name path
  while read -r name path; do ln -sf "$path" "$bin/$name"; done <"$work/build/gpu_check_programs.txt" 2>/dev/null
}

device_report() {
  {
    if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
      has_gpu=1
      nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | head -n 1
      nvidia-smi -L 2>&1
    else
      echo "no GPU (nvidia-smi $(command -v nvidia-smi >/dev/null && echo 'finds none' || echo 'is not installed'))"
    fi
    echo "nvcc: $(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "(no GPU)")' 2>&1 | tail -n 1
    echo "host: $(uname -srm), $(nproc) CPUs, $(ldd --version 2>&1 | head -n 1)"
  } >"$work/device.txt" 2>&1
  sed 's/^/  /' "$work/device.txt"
}

# Every test case named in tests/sanitizer_cases.txt and by the determinism steps exists (no GPU
# needed: the listing runs without one).
check_case_names() {
  local tool program filter status=0
  while read -r tool program filter; do
    [[ -z "$tool" || "$tool" == \#* ]] && continue
    cmake -DPROGRAM="$bin/$program" -DFILTER="$filter" -P "$root/tests/support/check_case_exists.cmake" || status=1
  done < <(cat "$root/tests/sanitizer_cases.txt"; printf '%s\n' "- test_attention_cuda attention_cuda/print_digest" \
    "- test_train_cuda train_cuda/print_digest")
  return $status
}

have() { [[ -n "$bin" && -x "$bin/$1" ]]; }

wanted() { [[ ",$parts," == *",$1,"* ]]; }

# The GPU tests, each executable whole (Boost.Test logs every case with its time and every failed
# check with its values), then determinism across processes: a fixed problem's digest, twice.
run_tests() {
  local boost_args=(--log_level=test_suite --report_level=short --color_output=no) test
  for test in test_core_cuda test_masking_cuda test_optim_cuda test_layers_cuda test_attention_cuda test_nn_cuda test_train_cuda \
    test_eval_cuda test_dlpack_cuda test_dist_cuda; do
    if have "$test"; then
      step "$test" test 240 "$bin/$test" "${boost_args[@]}"
    else
      record "$test" test failed 0 - "program missing from the bundle and the build"
    fi
  done
  local pair label program filter
  for pair in "attention:test_attention_cuda:attention_cuda/print_digest" "train:test_train_cuda:train_cuda/print_digest"; do
    IFS=: read -r label program filter <<<"$pair"
    have "$program" && step "determinism_${label}_two_processes" test 120 cmake -DPROGRAM="$bin/$program" \
      -DFILTER="$filter" -P "$root/tests/support/same_digest_twice.cmake"
  done
}

# compute-sanitizer on the small cases of tests/sanitizer_cases.txt.
run_sanitizers() {
  local sanitizer tool program filter name
  sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer \
    /usr/local/cuda/compute-sanitizer/compute-sanitizer 2>/dev/null | head -n 1)
  while read -r tool program filter; do
    [[ -z "$tool" || "$tool" == \#* ]] && continue
    name="sanitize_${tool}_${program#test_}_${filter##*/}"
    if ((!has_gpu)); then
      skip_step "$name" sanitizer "SKIPPED: no GPU"
    elif [[ -z "$sanitizer" ]]; then
      skip_step "$name" sanitizer "SKIPPED: compute-sanitizer not found"
    elif have "$program"; then
      step "$name" sanitizer 150 cmake -DSANITIZER="$sanitizer" -DTOOL="$tool" -DPROGRAM="$bin/$program" \
        -DFILTER="$filter" -P "$root/tests/support/run_sanitizer.cmake"
    fi
  done <"$root/tests/sanitizer_cases.txt"
}

# The benchmarks, each beside its baseline in the same run (figures to figures-*.jsonl).
run_benches() {
  local b
  if ((!has_gpu)); then
    for b in attention_sdpa bench_attention_cuda bench_cross_entropy_cuda cross_entropy_torch bench_masking_cuda \
      train_step_torch bench_train_step_cuda; do
      skip_step "$b" bench "SKIPPED: no GPU"
    done
    return
  fi
  export PYTHONUNBUFFERED=1
  step attention_sdpa bench 150 python3 "$root/bench/attention_sdpa.py" --out "$work/sdpa.txt"
  local sdpa_args=()
  [[ -s "$work/sdpa.txt" ]] && sdpa_args=(--sdpa "$work/sdpa.txt")
  have bench_attention_cuda && step bench_attention_cuda bench 200 env MEAP_BENCH_FIGURES="$work/figures-attention.jsonl" \
    "$bin/bench_attention_cuda" "${sdpa_args[@]}"
  have bench_cross_entropy_cuda && step bench_cross_entropy_cuda bench 90 \
    env MEAP_BENCH_FIGURES="$work/figures-cross_entropy.jsonl" "$bin/bench_cross_entropy_cuda" 16384 2048 32000 0.3
  local ce_args=() ce_ms ce_mib
  if [[ -s "$work/figures-cross_entropy.jsonl" ]]; then
    read -r ce_ms ce_mib < <(python3 -c 'import json, sys; r = json.loads(open(sys.argv[1]).readline()); print(r["fused_fwd_bwd_ms"], r["fused_extra_mib"])' \
      "$work/figures-cross_entropy.jsonl")
    ce_args=(--meap-ms "$ce_ms" --meap-mib "$ce_mib")
  fi
  step cross_entropy_torch bench 90 env MEAP_BENCH_FIGURES="$work/figures-cross_entropy_torch.jsonl" \
    python3 "$root/bench/cross_entropy_torch.py" --tokens 16384 --d 2048 --vocab 32000 \
    --fraction 0.3 "${ce_args[@]}"
  have bench_masking_cuda && step bench_masking_cuda bench 60 env MEAP_BENCH_FIGURES="$work/figures-masking.jsonl" \
    "$bin/bench_masking_cuda"
  step train_step_torch bench 240 python3 "$root/bench/train_step_torch.py" --out "$work/torch-train.json"
  local peak=() torch_args=()
  grep -qE "H100|H200" "$work/device.txt" && peak=(--peak-tflops 989)  # dense bf16, the datasheet's SXM figure
  [[ -s "$work/torch-train.json" ]] && torch_args=(--torch "$work/torch-train.json")
  have bench_train_step_cuda && step bench_train_step_cuda bench 150 \
    env MEAP_BENCH_FIGURES="$work/figures-train_step.jsonl" "$bin/bench_train_step_cuda" "${peak[@]}" "${torch_args[@]}"
}

stage_run() {
  work=$(mktemp -d /tmp/meap-gpu-check.XXXXXX)
  mkdir -p "$work/logs" "$out_dir"
  steps_file="$work/steps.tsv"
  : >"$steps_file"
  say "stage 2 in $work, results to $out_dir, deadline ${deadline} s, steps: $parts"
  device_report
  prepare_programs
  ((has_gpu)) || say "no GPU here: every GPU step reports skipped"
  export -f check_case_names
  export root bin
  step case_names setup 60 bash -c check_case_names
  wanted test && run_tests
  wanted sanitizer && run_sanitizers
  wanted bench && run_benches
  summarize
}

summarize() {
  local failed
  python3 - "$work" "$out_dir" "$deadline" "$((SECONDS - started))" <<'PY'
import glob, json, os, sys
work, out_dir, deadline, elapsed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
steps = []
for line in open(os.path.join(work, "steps.tsv")):
    name, kind, status, seconds, code, detail = (line.rstrip("\n").split("\t") + [""] * 6)[:6]
    steps.append({"name": name, "kind": kind, "status": status, "seconds": int(seconds),
                  "exit_code": None if code in ("", "-") else int(code), "detail": detail,
                  "log": f"logs/{name}.log"})
figures = []
for path in sorted(glob.glob(os.path.join(work, "figures-*.jsonl"))):
    figures += [json.loads(l) for l in open(path) if l.strip()]
sdpa = os.path.join(work, "sdpa.txt")  # bench/attention_sdpa.py: "D T fwd_ms fwd_bwd_ms" lines
if os.path.exists(sdpa):
    for line in open(sdpa):
        if line.strip() and not line.startswith("#"):
            D, T, fwd, both = line.split()
            figures.append({"bench": "attention_sdpa", "D": int(D), "T": int(T), "fwd_ms": float(fwd), "fwd_bwd_ms": float(both)})
torch_train = os.path.join(work, "torch-train.json")
if os.path.exists(torch_train):
    try:
        figures.append({"bench": "train_step_torch", **json.load(open(torch_train))})
    except ValueError as e:
        figures.append({"bench": "train_step_torch", "error": str(e)})
device = open(os.path.join(work, "device.txt")).read() if os.path.exists(os.path.join(work, "device.txt")) else ""
manifest_path = os.path.join(work, "bundle", "manifest.txt")
manifest = open(manifest_path).read() if os.path.exists(manifest_path) else ""
counts = {}
for s in steps:
    counts[s["status"]] = counts.get(s["status"], 0) + 1
result = {"device": device.splitlines(), "bundle": manifest.splitlines(), "deadline_s": deadline,
          "elapsed_s": elapsed, "counts": counts, "steps": steps, "figures": figures}
json.dump(result, open(os.path.join(out_dir, "results.json"), "w"), indent=1)

lines = ["", "== meap GPU check: summary", "device: " + (device.splitlines() or ["(unknown)"])[0]]
lines.append(f"{'step':62} {'kind':9} {'status':8} {'s':>5}  detail")
for s in steps:
    lines.append(f"{s['name']:62} {s['kind']:9} {s['status']:8} {s['seconds']:5d}  {s['detail'][:90]}")
for f in figures:
    try:
        b = f.get("bench")
        if b == "attention":
            lines.append(f"attention {f['dtype']} D={f['D']} T={f['T']}: fwd {f['fwd_tflops']:.0f} TFLOP/s, fwd+bwd "
                         f"{f['fwd_bwd_tflops']:.0f}" + (f"; speed-up over SDPA fwd {f['sdpa_fwd_ms'] / f['fwd_ms']:.2f}x, fwd+bwd "
                         f"{f['sdpa_fwd_bwd_ms'] / f['fwd_bwd_ms']:.2f}x" if f.get("sdpa_fwd_ms") else ""))
        elif b == "cross_entropy":
            lines.append(f"fused CE fwd+bwd {f['fused_fwd_bwd_ms']:.2f} ms, {f['fused_extra_mib']:.0f} MiB extra; full logits "
                         f"{f['full_logits_fwd_bwd_ms']:.2f} ms, {f['full_logits_extra_mib']:.0f} MiB")
        elif b == "cross_entropy_torch":
            lines.append(f"{f['path']}: {f['fwd_bwd_ms']:.2f} ms, {f['extra_mib']:.0f} MiB extra")
        elif b == "masking":
            lines.append(f"masking {f['policy']}: {f['gpu_rows_per_s']:.3g} rows/s")
        elif b == "train_step":
            extra = "".join(f"; vs PyTorch {m} {f['ratio_' + m]:.2f}x" for m in ("eager", "compile") if "ratio_" + m in f)
            lines.append(f"train step 0.1B {f['dtype']}: {f['meap_tokens_per_second']:.0f} tokens/s, MFU {100 * f['meap_mfu']:.1f}%{extra}")
    except (KeyError, TypeError, ZeroDivisionError) as e:  # a figure the line cannot show stays in the JSON
        lines.append(f"{f.get('bench')}: figure not shown ({type(e).__name__}: {e})")
lines.append("totals: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + f"; {elapsed} s of {deadline} s")
text = "\n".join(lines) + "\n"
open(os.path.join(out_dir, "summary.txt"), "w").write(text)
print(text)
PY
  tar -C "$work" -czf "$out_dir/logs.tar.gz" logs device.txt steps.tsv $(cd "$work" && ls figures-*.jsonl sdpa.txt torch-train.json 2>/dev/null)
  failed=$(awk -F'\t' '$3 == "failed" || $3 == "timeout"' "$steps_file" | wc -l)
  say "logs in $out_dir/logs.tar.gz; $failed step(s) failed or timed out"
  rm -rf "$work"
  ((failed == 0))
}

case "$mode" in
  build) stage_build ;;
  run) stage_run ;;
  dry-run)
    stage_build || exit 1
    out_dir=${out_dir%/}
    stage_run
    ;;
  *)
    echo "usage: tools/gpu_check.sh build|run|dry-run [--build-dir DIR] [--bundle FILE] [--out DIR] [--deadline S]" >&2
    exit 2
    ;;
esac
