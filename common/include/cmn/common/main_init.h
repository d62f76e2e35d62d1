#pragma once
// What every cmn binary does first in main(), once: logging set up, and (for the long-running ones) SIGTERM and
// SIGINT turned into an orderly stop instead of a kill in the middle of a decode.
#include <signal.h>

namespace cmn {

// glog (which LibTorch's c10 also logs through) writes to stderr, never to files under /tmp, and is initialised,
// so that the first LOG or TORCH_WARN does not print "Logging before InitGoogleLogging() is written to STDERR".
// Call before any thread starts; a second call does nothing.
void init_logging(const char* argv0);

// Blocks SIGTERM and SIGINT in the calling thread and in every thread it starts afterwards (LibTorch, gRPC,
// workers inherit the mask), so they reach only wait() and never interrupt work. Construct before any thread.
// With `reload`, SIGHUP too (a server's "load the model again"): wait() returns it like the others.
class StopSignals {
 public:
  explicit StopSignals(bool reload = false);
  // Waits for SIGTERM or SIGINT (or SIGHUP when asked for); returns the signal number.
  int wait() const;

 private:
  sigset_t set_;
};

}  // namespace cmn
