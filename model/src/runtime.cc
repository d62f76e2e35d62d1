#include "cmn/model/runtime.h"

#include <dlfcn.h>
#include <sched.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>

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

int cpus_from_cgroup_cpu_max(const std::string& line) {
  std::istringstream in(line);
  std::string quota;
  long long period = 0;
  if (!(in >> quota >> period) || period <= 0 || quota == "max") return 0;
  long long q = 0;
  try {
    q = std::stoll(quota);
  } catch (const std::exception&) {
    return 0;
  }
  if (q <= 0) return 0;
  return static_cast<int>((q + period - 1) / period);  // 1.5 CPUs of quota -> 2 threads
}

namespace {

// The cgroup v2 cpu.max of this process's cgroup ("0::/path" in /proc/self/cgroup); its parents may limit it
// further, so every level up to the root is read and the smallest limit wins.
int cgroup_cpu_limit() {
  std::ifstream cgroup("/proc/self/cgroup");
  std::string line, path;
  while (std::getline(cgroup, line)) {
    if (line.rfind("0::", 0) == 0) path = line.substr(3);
  }
  if (path.empty()) return 0;
  int limit = 0;
  for (std::filesystem::path p = path;; p = p.parent_path()) {
    std::ifstream max(std::filesystem::path("/sys/fs/cgroup") / p.relative_path() / "cpu.max");
    std::string content;
    if (max && std::getline(max, content)) {
      const int cpus = cpus_from_cgroup_cpu_max(content);
      if (cpus > 0) limit = limit == 0 ? cpus : std::min(limit, cpus);
    }
    if (p == p.root_path() || p.empty() || !p.has_relative_path()) break;
  }
  return limit;
}

}  // namespace

int cpu_budget() {
  int cpus = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cpus = CPU_COUNT(&set);
  if (cpus <= 0) cpus = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int quota = cgroup_cpu_limit();
  if (quota > 0) cpus = std::min(cpus, quota);
  return std::max(1, cpus);
}

void set_threads(int n) { at::set_num_threads(n > 0 ? n : cpu_budget()); }

ScopedThreads::ScopedThreads(int n) {
  if (n > 0 && n != at::get_num_threads()) {
    before_ = at::get_num_threads();
    at::set_num_threads(n);
  }
}

ScopedThreads::~ScopedThreads() {
  if (before_ > 0) at::set_num_threads(before_);
}

}  // namespace cmn::model
