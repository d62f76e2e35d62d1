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

// The CPUs this process may really use: the smaller of its affinity mask (sched_getaffinity: taskset, cpusets)
// and its cgroup v2 CPU quota (cpu.max "quota period", rounded up; "max" = no quota) — not the host's core
// count: a pod limited to 2 CPUs on a 64-core node gets 2. At least 1.
int cpu_budget();

// The CPU count of a cgroup v2 cpu.max line ("200000 100000" -> 2, "150000 100000" -> 2, "max 100000" -> 0 = no
// limit); 0 when unparsable.
int cpus_from_cgroup_cpu_max(const std::string& line);

// Sets LibTorch's intra-op threads (Debian's build defaults to 1); n <= 0 = cpu_budget().
void set_threads(int n);

// The calling thread's intra-op threads (at::set_num_threads: its OpenMP team size) set to n for a scope and
// restored after it; n <= 0, or the count already set, changes nothing. A decode step is ~100 small ops that
// gain little from threads and lose much when a thread loses its core (PassHooks::decode_threads).
class ScopedThreads {
 public:
  explicit ScopedThreads(int n);
  ~ScopedThreads();
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  int before_ = 0;
};

}  // namespace cmn::model
