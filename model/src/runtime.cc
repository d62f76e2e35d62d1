#include "cmn/model/runtime.h"

#include <dlfcn.h>

#include <filesystem>
#include <iostream>

#include <ATen/Parallel.h>

namespace cmn::model {

BlasInfo active_blas() {
  BlasInfo info;
  void* sgemm = dlsym(RTLD_DEFAULT, "sgemm_");
  Dl_info where{};
  if (sgemm != nullptr && dladdr(sgemm, &where) != 0 && where.dli_fname != nullptr) info.library = where.dli_fname;
  // Debian's OpenBLAS provides libblas.so.3 as a thin library under .../openblas-*/ that forwards to
  // libopenblas.so.0; netlib's lives under .../blas/. The alternatives symlink hides which one is loaded,
  // so resolve it.
  if (!info.library.empty()) {
    std::error_code ec;
    const auto real = std::filesystem::canonical(info.library, ec);
    if (!ec) info.library = real.string();
  }
  info.openblas = info.library.find("openblas") != std::string::npos;
  using ConfigFn = char* (*)();
  if (auto fn = reinterpret_cast<ConfigFn>(dlsym(RTLD_DEFAULT, "openblas_get_config")); fn != nullptr) {
    if (const char* c = fn(); c != nullptr) info.config = c;
  }
  return info;
}

bool warn_if_slow_blas() {
  const BlasInfo info = active_blas();
  if (info.openblas) return true;
  std::cerr << "\n"
            << "************************************************************************\n"
            << "* WARNING: LibTorch is NOT using OpenBLAS (sgemm_ from '"
            << (info.library.empty() ? "<not found>" : info.library) << "').\n"
            << "* Matrix products will be ~14x slower (netlib reference BLAS).\n"
            << "* Fix: apt-get install libopenblas0-openmp and\n"
            << "*   update-alternatives --set libblas.so.3-x86_64-linux-gnu \\\n"
            << "*     /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3\n"
            << "* (scripts/setup.sh does both).\n"
            << "************************************************************************\n\n";
  return false;
}

void set_threads(int n) {
  if (n > 0) at::set_num_threads(n);
}

}  // namespace cmn::model
