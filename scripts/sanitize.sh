#!/usr/bin/env bash
# Issue 13: the suites under sanitizers, one build folder per kind, exit status non-zero on any report.
#   scripts/sanitize.sh [asan|tsan|all]      (default all; JOBS=N for the build, default nproc)
# ASan+UBSan: every suite. TSan: the concurrent code (server + engine scheduler, engine, batch read-ahead, PACS).
# Far too slow for .ci/run on 2 cores (two more full builds, suites 2-10x slower): run it before resolving.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
jobs=${JOBS:-$(nproc)}
status=0

build() {  # folder, sanitizers, [extra cmake arguments...] -- [targets...]
  local dir=$1 kind=$2
  shift 2
  local args=() targets=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do args+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  targets=("$@")
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMN_SANITIZE="$kind" "${args[@]}" >/dev/null
  if [ ${#targets[@]} -gt 0 ]; then
    cmake --build "$dir" -j "$jobs" --target "${targets[@]}"
  else
    cmake --build "$dir" -j "$jobs"
  fi
}

if [ "$what" = asan ] || [ "$what" = all ]; then
  build build-asan address,undefined
  # Leaks are reported (LSan); a finding aborts the process, so its test fails.
  ASAN_OPTIONS=abort_on_error=1:detect_leaks=1:strict_string_checks=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan -j "$jobs" --output-on-failure || status=1
fi
if [ "$what" = tsan ] || [ "$what" = all ]; then
  # Only what the TSan suites run (their binaries and the cmn-server / cmn-generate / cmn-pacs they start):
  # cmn-train is not among them, and each instrumented LibTorch-heavy object costs about a minute.
  build build-tsan thread -DCMN_BUILD_TRAIN=OFF -- cmn_server_test cmn_engine_test cmn_batch_cli_test cmn_pacs_test
  # ignore_noninstrumented_modules: memory accesses inside uninstrumented libraries (gRPC, abseil, LibTorch,
  # libstdc++) are not checked (TSan cannot see their atomics, so their handoffs would read as races); their
  # locks still count. scripts/tsan.supp: the third-party reports left, each with its reason.
  TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1:suppressions=$PWD/scripts/tsan.supp" \
    ctest --test-dir build-tsan -j "$jobs" --output-on-failure \
      -L 'cmn_server_test|cmn_engine_test|cmn_batch_cli_test|cmn_pacs_test' || status=1
fi
exit $status
