#!/usr/bin/env bash
# The README's quick start: installs what meap needs (Debian packages), builds, and then
#   bash cmake/quickstart.sh demo   runs the main job (the demo)
#   bash cmake/quickstart.sh test   runs every test (GPU tests report "skipped" without a GPU)
#   bash cmake/quickstart.sh study  runs the demo's NTP-vs-MEAP study over 8 seeds (docs/fidelity.md;
#                                   about 15 minutes on 2 idle cores)
# Build directory: build/ (override with MEAP_BUILD_DIR); extra CMake arguments in
# MEAP_CMAKE_ARGS (CI adds -Werror and CUDA=ON this way). Safe to run again; it rebuilds only
# what changed.
set -euo pipefail

what=${1:-}
if [[ "$what" != "demo" && "$what" != "test" && "$what" != "study" ]]; then
  echo "usage: bash cmake/quickstart.sh demo|test|study" >&2
  exit 2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${MEAP_BUILD_DIR:-$root/build}

# Debian packages: compiler and build tools, Eigen (CPU linear algebra), OpenBLAS in its OpenMP
# build (the large CPU GEMMs; it shares meap's OpenMP threads instead of running a pool of its
# own), Boost.Test (tests), nlohmann-json (JSON), CLI11 (the programs' command lines), zlib
# (checksums of checkpoint files), gnuplot (the plots of meap_demo and meap_eval), SentencePiece
# (optional: the tokenizer of LLaMA-family models for text instruction data, meap::sentencepiece;
# spm_train trains the small model its tests use), DLPack (optional: one header, for exchanging
# tensors with other frameworks, meap::dlpack), OpenMPI (optional: data-parallel training with
# mpirun, meap::dist; its tests start real ranks).
packages=(g++ cmake ninja-build libeigen3-dev libopenblas-openmp-dev libboost-test-dev nlohmann-json3-dev libcli11-dev
          zlib1g-dev gnuplot-nox libsentencepiece-dev sentencepiece libdlpack-dev libopenmpi-dev openmpi-bin)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if (( ${#missing[@]} > 0 )); then
  echo "quickstart: installing ${missing[*]}"
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

jobs=$(nproc 2>/dev/null || echo 2)
# shellcheck disable=SC2086 # MEAP_CMAKE_ARGS is a list of arguments
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release ${MEAP_CMAKE_ARGS:-} >/dev/null
case "$what" in
  demo)
    cmake --build "$build" --target meap_demo -j "$jobs"
    mkdir -p "$build/demo"
    "$build/studies/meap_demo" --out "$build/demo"
    echo "quickstart: table, CSV and plot in $build/demo"
    ;;
  study)
    cmake --build "$build" --target meap_demo -j "$jobs"
    mkdir -p "$build/study"
    "$build/studies/meap_demo" --seeds 8 --out "$build/study"
    echo "quickstart: per-seed tables, the summary, CSVs and plot in $build/study"
    ;;
  test)
    cmake --build "$build" -j "$jobs"
    ctest --test-dir "$build" --output-on-failure -j "$jobs"
    ;;
esac
