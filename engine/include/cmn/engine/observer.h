#pragma once
// How a caller follows and steers a batch while the replica runs it (on the replica's thread): the server's
// scheduler stops a batch whose studies all passed their deadline or were cancelled, and streams tokens as they
// become certain. Plain types only.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace cmn::engine {

class StepObserver {
 public:
  virtual ~StepObserver() = default;
  // Called after the visual stage (steps_done = 0, before the encoder) and before every decoder step. Returning
  // false stops the batch at once: Replica::run returns Cancelled and nothing more is computed.
  virtual bool keep_going(int64_t steps_done) = 0;
  // For studies run with StudyOptions::progress: the tokens every hypothesis that can still win agrees on (the
  // common prefix of the live rows and of the finished ones; no end token), when it grew. stable[new_from:] are
  // the tokens new since the previous call for this study.
  virtual void on_stable_tokens(size_t study, const std::vector<int64_t>& stable, size_t new_from,
                                int64_t steps_done) {
    (void)study, (void)stable, (void)new_from, (void)steps_done;
  }
};

}  // namespace cmn::engine
