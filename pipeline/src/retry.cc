#include "cmn/pipeline/retry.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"

namespace cmn::pipeline {

absl::Status with_retries(const RetryPolicy& policy, const std::function<absl::Status()>& attempt) {
  const int attempts = std::max(1, policy.attempts);
  double backoff = std::max(0.0, policy.initial_backoff_s);
  absl::Status last;
  for (int i = 1; i <= attempts; ++i) {
    last = attempt();
    if (last.ok()) return last;
    const bool retryable = last.code() == absl::StatusCode::kUnavailable || last.code() == absl::StatusCode::kInternal ||
                           last.code() == absl::StatusCode::kDeadlineExceeded;
    if (!retryable) return last;
    if (i < attempts) {
      std::this_thread::sleep_for(std::chrono::duration<double>(backoff));
      backoff = std::min(backoff * 2, std::max(policy.max_backoff_s, 0.0));
    }
  }
  return absl::Status(last.code(), absl::StrCat(last.message(), " (after ", attempts, " attempt",
                                                attempts == 1 ? "" : "s", ")"));
}

}  // namespace cmn::pipeline
