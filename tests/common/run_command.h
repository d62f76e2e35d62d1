#pragma once
// Runs a shell command as a user would and captures what it prints and returns. Used by the CLI test binaries.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

namespace cmn::testing {

struct RunResult {
  int exit_code = -1;  // -1: did not start or did not exit normally
  std::string out;     // stdout
  std::string err;     // stderr
};

// `tag` names the binary in the stderr capture file: one file per process and call, because ctest runs the
// tests of a binary at once in separate processes.
inline RunResult run_command(const std::string& command, const std::string& tag) {
  static int calls = 0;
  const std::filesystem::path err_file =
      std::filesystem::path(::testing::TempDir()) /
      (tag + "_stderr_" + std::to_string(::getpid()) + "_" + std::to_string(++calls) + ".txt");
  RunResult r;
  FILE* pipe = popen((command + " 2>" + err_file.string()).c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) r.out.append(buf, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::stringstream ss;
  ss << std::ifstream(err_file).rdbuf();
  r.err = ss.str();
  std::error_code ec;
  std::filesystem::remove(err_file, ec);
  return r;
}

}  // namespace cmn::testing
