#pragma once
// For readers that take a path: the input is written to a per-process file under /dev/shm (memory, no disk
// wear; a parallel -jobs run gets one file per process) and the real reader opens it.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace cmn::fuzz {

// /dev/shm/cmn-fuzz-<pid>-<name>, rewritten with `bytes`. Aborts if it cannot be written: a fuzz run that
// silently tested "file not found" a million times would be worthless.
inline std::string write_input(const std::string& name, const char* data, size_t size) {
  const std::string path = "/dev/shm/cmn-fuzz-" + std::to_string(::getpid()) + "-" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr || std::fwrite(data, 1, size, f) != size || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
  return path;
}

}  // namespace cmn::fuzz
