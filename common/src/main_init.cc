#include "cmn/common/main_init.h"

#include <pthread.h>

#include <glog/logging.h>

namespace cmn {

void init_logging(const char* argv0) {
  static bool done = false;
  if (done) return;
  done = true;
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv0);
}

StopSignals::StopSignals(bool reload) {
  sigemptyset(&set_);
  sigaddset(&set_, SIGTERM);
  sigaddset(&set_, SIGINT);
  if (reload) sigaddset(&set_, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set_, nullptr);
}

int StopSignals::wait() const {
  int signal_number = 0;
  sigwait(&set_, &signal_number);
  return signal_number;
}

}  // namespace cmn
