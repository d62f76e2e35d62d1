#!/usr/bin/env bash
# Installs every build and test dependency of cmn from Debian 12's archive. Nothing is downloaded at build time.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends \
  build-essential cmake ninja-build ccache pkg-config git ca-certificates \
  libtorch-dev libopenblas0-openmp \
  libdcmtk-dev dcmtk libopenjp2-7-dev libjpeg62-turbo-dev zlib1g-dev \
  dicom3tools libpixelmed-java default-jre-headless \
  libopencv-dev \
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
  libabsl-dev libgoogle-glog-dev \
  libgtest-dev libgmock-dev \
  libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libssl-dev \
  libcpp-httplib-dev openssl prometheus python3-grpcio python3-grpc-tools \
  orthanc orthanc-dicomweb \
  gnuplot-nox libgloo-dev \
  python3-sklearn   # the CE test compares cmn-eval with sklearn (R2GenCMN compute_ce.py's library)
# Not installed by default: the libFuzzer target (cmake -DCMN_FUZZ=ON) needs clang and its runtimes,
#   apt-get install clang libclang-rt-14-dev      (see preprocessing/fuzz/dicom_fuzzer.cc)
# Debian's libtorch links the generic libblas.so.3; make sure the alternative points at OpenBLAS (OpenMP build),
# otherwise LibTorch silently runs on netlib's reference BLAS (14x slower on a 512x512x2048 matmul).
for alt in libblas.so.3-x86_64-linux-gnu liblapack.so.3-x86_64-linux-gnu; do
  cand=$(update-alternatives --list "$alt" 2>/dev/null | grep openblas-openmp | head -n1 || true)
  if [ -n "$cand" ]; then $SUDO update-alternatives --set "$alt" "$cand" >/dev/null; fi
done
# FHIR output tests: FHIR.js (npm "fhir", pinned by tests/fhir/package-lock.json) validates every DiagnosticReport
# the tests write. Debian's nodejs + npm, unless a node with npm is already installed (a newer one from elsewhere
# would conflict with Debian's npm package); the package goes into tests/fhir/node_modules, never at build time.
if ! command -v npm >/dev/null 2>&1; then
  $SUDO apt-get install -y -q --no-install-recommends nodejs npm
fi
(cd "$(dirname "$0")/../tests/fhir" && npm ci --no-audit --no-fund --loglevel=error)
