#pragma once
// A child process as the process-level tests run them (cmn-server, cmn-pacs, Orthanc): argv[0] is a path,
// stdout and stderr go to <log_base>.out / .err, and it is killed and reaped when it goes out of scope.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/test_files.h"

extern char** environ;

namespace cmn::testing {

class ChildProcess {
 public:
  ChildProcess(const std::vector<std::string>& argv, const std::string& log_base) : log_base_(log_base) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, (log_base + ".out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, (log_base + ".err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const int rc = posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    EXPECT_EQ(rc, 0) << "cannot run " << argv[0];
    if (rc != 0) pid_ = -1;
  }
  ~ChildProcess() { kill_now(); }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  bool running() const { return pid_ > 0 && !exited_; }

  // The exit code (128 + signal when killed), or -1 if it is still running after `timeout` (a bound: it
  // returns as soon as the process exits).
  int wait_for(std::chrono::milliseconds timeout) {
    if (!running()) return code_;
    const auto until = std::chrono::steady_clock::now() + timeout;
    do {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return code_;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } while (std::chrono::steady_clock::now() < until);
    return -1;
  }

  // A signal now (SIGSTOP freezes it: it holds its sockets open but answers nothing).
  void signal(int sig) const {
    if (running()) ::kill(pid_, sig);
  }
  // SIGTERM, then SIGKILL if it has not exited after 10 s.
  void stop() {
    if (!running()) return;
    ::kill(pid_, SIGTERM);
    if (wait_for(std::chrono::seconds(10)) == -1) kill_now();
  }
  // SIGKILL (a crash, also of a stopped process) and reap.
  void kill_now() {
    if (!running()) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    exited_ = true;
    code_ = 128 + SIGKILL;
  }

  std::string out() const { return read_bytes(log_base_ + ".out"); }
  std::string err() const { return read_bytes(log_base_ + ".err"); }

 private:
  pid_t pid_ = -1;
  std::string log_base_;
  bool exited_ = false;
  int code_ = -1;
};

}  // namespace cmn::testing
