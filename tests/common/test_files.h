#pragma once
// File helpers shared by the test binaries that run real servers and tools: ../shared paths, whole-file
// reads/writes, and per-test temporary directories. Header-only, gtest and the standard library only.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>

#include <gtest/gtest.h>

namespace cmn::testing {

inline std::string shared_path(const std::string& relative) { return std::string(CMN_SHARED_DIR) + "/" + relative; }

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// A chest radiograph from ../shared/data/dicom/chest.
inline std::string chest(const std::string& name) { return read_bytes(shared_path("data/dicom/chest/" + name)); }

// A directory for one test, removed afterwards. `prefix` names the test binary; the pid keeps the parallel
// ctest processes of one binary apart.
class ScopedDir {
 public:
  ScopedDir(const std::string& prefix, const std::string& name)
      : path_((std::filesystem::path(::testing::TempDir()) / (prefix + "_" + std::to_string(::getpid()) + "_" + name))
                  .string()) {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
    std::filesystem::create_directories(path_);
  }
  ~ScopedDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScopedDir(const ScopedDir&) = delete;
  ScopedDir& operator=(const ScopedDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace cmn::testing
