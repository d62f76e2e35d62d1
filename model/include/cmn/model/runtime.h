#pragma once
// Process-wide runtime facts that decide whether cmn is fast: which BLAS LibTorch calls, how many threads.
#include <string>

namespace cmn::model {

struct BlasInfo {
  std::string library;   // the shared object that provides sgemm_ (from dladdr), or "" if not found
  bool openblas = false; // true when OpenBLAS (openblas_get_config) provides it
  std::string config;    // openblas_get_config() when OpenBLAS
};

// Looks up the BLAS that LibTorch's CPU matmuls call. Debian's libtorch links libblas.so.3, whose
// alternative may point at netlib's reference BLAS (14x slower on a 512x512x2048 matmul) instead of OpenBLAS.
BlasInfo active_blas();

// Prints a loud multi-line warning to stderr when the active BLAS is not OpenBLAS; returns whether it is.
bool warn_if_slow_blas();

// Sets LibTorch's intra-op threads (Debian's build defaults to 1) and inter-op threads; n <= 0 keeps defaults.
void set_threads(int n);

}  // namespace cmn::model
