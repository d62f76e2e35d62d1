#pragma once
// In-flight batching (issue 15 item 3): one decode loop that studies join between its steps and leave as soon as
// they finish, each at its own step, each with its own decoding settings. A study that arrives while others
// decode runs its visual stage and encoder between two of their steps and reads its first token at the next
// one; nobody waits for a batch they are not part of.
//
//   join(studies)  visual stage of the new studies together, then the encoder per study; each gets a decoder
//                  cache of its own (engine/src/flight.cc) and a StudySearch (model/decoding.h)
//   step()         one decoder call over every live study's rows (model::BaseCMNImpl::decode_step over their
//                  caches: row-wise work batched, attention per study), then each search advances; the studies
//                  that finished leave with their results (and their attention maps, replayed for them alone)
//   leave(key)     a study nobody wants any more (cancelled, deadline) is dropped between steps
//
// A study's tokens do not depend on which studies shared its steps: its encoder runs alone, its search state is
// its own (a sampled study draws from its own generator), and the row-wise kernels give a row the same numbers
// whatever rows are beside it (tests/engine/flight_test.cc). Not thread-safe: one thread drives a flight, and it
// is the replica's one thread while it does.
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "cmn/engine/replica.h"
#include "cmn/model/decoding_options.h"
#include "cmn/preprocessing/image_pipeline.h"

namespace cmn::model {
class ScopedThreads;
}

namespace cmn::engine {

struct FlightStudy {
  std::vector<preprocessing::FloatImage> images;  // the model's V views in slot order, each [3,H,W]
  model::DecodingOptions decoding;
  StudyOptions options;
};

struct FlightJoin {
  std::vector<int64_t> keys;            // one per study joined, in order; a flight never reuses a key
  double visual_s = 0, encode_s = 0;    // wall time of the join's two stages (all its studies together)
};

struct FlightResult {
  int64_t key = 0;
  StudyResult study;                    // as Replica::run gives it
  int64_t steps = 0;                    // decoder steps this study ran
  double decode_s = 0;                  // wall time from its first step to its last (its partners' work included)
  double attention_s = 0;               // replaying the decoder for its attention maps
  int most_partners = 1;                // most studies decoding in one step beside it, itself included
};

// Progress of a study that asked for it (StudyOptions::progress): see StepObserver::on_stable_tokens.
using StableTokensFn =
    std::function<void(int64_t key, const std::vector<int64_t>& stable, size_t new_from, int64_t steps_done)>;

class Flight {
 public:
  explicit Flight(std::shared_ptr<Replica> replica);
  ~Flight();
  Flight(const Flight&) = delete;
  Flight& operator=(const Flight&) = delete;

  const std::shared_ptr<Replica>& replica() const { return replica_; }

  // Errors: InvalidArgument (a study's view count or image shape, a decoding option out of range: nothing joins),
  // Cancelled (after_visual returned false: nothing joins), Internal (the model failed; live studies are kept).
  // after_visual (may be empty) runs between the visual stage and the encoder.
  absl::StatusOr<FlightJoin> join(const std::vector<FlightStudy>& studies,
                                  const std::function<bool()>& after_visual = {});
  // One decoder step for every live study; returns those that finished at it (they have left). Internal when the
  // model fails: every live study has then left (none of them can go on).
  absl::StatusOr<std::vector<FlightResult>> step(const StableTokensFn& on_stable = {});
  // Drops a live study (no effect on the others; unknown keys are ignored).
  void leave(int64_t key);

  size_t live() const;
  bool empty() const { return live() == 0; }
  int64_t steps() const { return steps_; }  // decoder calls so far

 private:
  struct Study;
  std::shared_ptr<Replica> replica_;
  std::vector<std::unique_ptr<Study>> live_;
  // The decode loop's threads (Replica::decode_threads), set at a step and kept until a join needs the trunk's
  // threads: at::set_num_threads rebuilds LibTorch's thread pool, too costly to do twice a step.
  std::unique_ptr<model::ScopedThreads> decode_threads_;
  int64_t next_key_ = 0;
  int64_t steps_ = 0;
};

}  // namespace cmn::engine
