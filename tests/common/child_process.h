#pragma once
// A child process as the process-level tests run them (cmn-server, cmn-pacs, Orthanc): argv[0] is a path,
// stdout and stderr go to <log_base>.out / .err, and it is killed and reaped when it goes out of scope, or by
// the kernel when the test process dies first (PR_SET_PDEATHSIG).
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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
    // Everything the child needs is made before fork: after it, in a process with other threads (gRPC's),
    // the child may only make async-signal-safe calls until exec.
    const std::string out_path = log_base + ".out", err_path = log_base + ".err";
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    int exec_error[2];  // the child writes exec's errno here; a close without data means exec succeeded
    if (::pipe2(exec_error, O_CLOEXEC) != 0) {
      ADD_FAILURE() << "pipe2: " << std::strerror(errno);
      return;
    }
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {
      // Killed with the test process, also when it dies without running destructors (a sanitizer abort, a
      // crash, ctest's timeout): no Orthanc or cmn-server is left holding ports and CPU for later tests.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);  // the test process died before prctl took effect
      const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (out < 0 || err < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) {
        const int e = errno;
        (void)!::write(exec_error[1], &e, sizeof(e));
        ::_exit(127);
      }
      ::execve(args[0], args.data(), environ);
      const int e = errno;
      (void)!::write(exec_error[1], &e, sizeof(e));
      ::_exit(127);
    }
    ::close(exec_error[1]);
    int child_errno = 0;
    const bool exec_failed = pid_ > 0 && ::read(exec_error[0], &child_errno, sizeof(child_errno)) > 0;
    ::close(exec_error[0]);
    if (pid_ < 0 || exec_failed) {
      ADD_FAILURE() << "cannot run " << argv[0] << ": " << std::strerror(pid_ < 0 ? errno : child_errno);
      if (pid_ > 0) ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  ~ChildProcess() { kill_now(); }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  bool running() const { return pid_ > 0 && !exited_; }
  pid_t pid() const { return pid_; }

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
