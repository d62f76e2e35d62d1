#pragma once
// How the senders (cmn_senders: C-STORE, STOW-RS, the FHIR POST) retry: one policy, one loop.
#include <functional>

#include "absl/status/status.h"

namespace cmn::pipeline {

struct RetryPolicy {
  int attempts = 3;                 // tries in all (>= 1)
  double initial_backoff_s = 1.0;   // wait before the second try; doubled after each failure...
  double max_backoff_s = 30.0;      // ...up to this
};

// Runs `attempt` up to policy.attempts times with exponential back-off while it returns a retryable status
// (Unavailable, Internal, DeadlineExceeded: the network, a 5xx, a refused association); any other status, or OK,
// returns at once. The final error says how many attempts were made.
absl::Status with_retries(const RetryPolicy& policy, const std::function<absl::Status()>& attempt);

}  // namespace cmn::pipeline
