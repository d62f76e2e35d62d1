// The process tests' ChildProcess (child_process.h): a child it started does not outlive the test process,
// even when that process dies without running destructors (a sanitizer abort or crash used to leave Orthanc and
// cmn-server running, holding ports and CPU for the tests after it).
#include "common/child_process.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

namespace cmn::testing {
namespace {

// Running or stopped; a zombie (killed, not yet reaped by whoever adopted it) is dead.
bool alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const auto close = line.rfind(')');  // "pid (comm) S ...": comm may hold spaces
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
}

TEST(ChildProcessTest, ChildDiesWithATestProcessThatDiesWithoutCleaningUp) {
  const std::string base = ::testing::TempDir() + "cmn_child_process_" + std::to_string(::getpid());
  const std::string pid_file = base + ".pid";
  const pid_t test_process = ::fork();
  ASSERT_GE(test_process, 0);
  if (test_process == 0) {
    // Stands in for a test process: starts a child, reports its pid, and dies by SIGKILL (no destructors).
    ChildProcess child({"/bin/sleep", "600"}, base);
    std::ofstream(pid_file) << child.pid() << "\n";
    ::kill(::getpid(), SIGKILL);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(test_process, &status, 0), test_process);
  ASSERT_TRUE(WIFSIGNALED(status));
  pid_t grandchild = 0;
  std::ifstream(pid_file) >> grandchild;
  ASSERT_GT(grandchild, 0) << "the stand-in test process did not start its child";
  // The kernel sends SIGKILL when the parent dies; the orphan is then reaped by init (or a subreaper). Bound
  // only against a hang: it is normally gone within milliseconds.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (alive(grandchild) && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_FALSE(alive(grandchild)) << "sleep " << grandchild << " outlived the process that started it";
  if (alive(grandchild)) ::kill(grandchild, SIGKILL);
  ::unlink(pid_file.c_str());
}

TEST(ChildProcessTest, AProgramThatCannotRunIsAFailureNamingIt) {
  const std::string base = ::testing::TempDir() + "cmn_child_process_missing_" + std::to_string(::getpid());
  // The failure is recorded on this test; expect it rather than fail.
  ::testing::TestPartResultArray failures;
  {
    ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &failures);
    ChildProcess missing({"/nonexistent/cmn-no-such-binary"}, base);
    EXPECT_FALSE(missing.running());
  }
  ASSERT_EQ(failures.size(), 1);
  EXPECT_NE(std::string(failures.GetTestPartResult(0).message()).find("cannot run /nonexistent/cmn-no-such-binary"),
            std::string::npos)
      << failures.GetTestPartResult(0).message();
}

}  // namespace
}  // namespace cmn::testing
