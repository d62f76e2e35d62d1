#pragma once
// The serving scheduler: a bounded set of admitted requests, a queue (STAT before routine, FIFO within each), and
// one worker thread that runs an in-flight decode loop (engine::Flight) on an engine::Replica (as CTranslate2's
// ReplicaPool: one replica, one thread calling it). It knows nothing of the model's internals and includes no
// LibTorch header: studies go in as preprocessing images, reports come back as ids; model errors arrive as
// absl::Status.
//
//   handler thread                         worker thread
//   admit()  -> Slot (or RESOURCE_EXHAUSTED at once)
//   DICOM -> images (outside the engine)
//   run(images, decoding, control) ---->   loop empty: waits up to max_queue_delay_ms for up to max_batch_size
//     waits; forwards progress;            studies, then they join the loop together (visual stage, encoder).
//     polls cancellation / deadline        Loop running: waiting studies join it between two steps, up to
//   <- result or DEADLINE_EXCEEDED /       max_batch_size live, each at its own step with its own decoding
//      CANCELLED (slot freed at once)      settings; a study leaves the moment it finishes (its result goes
//                                          out then), or between steps once its deadline passed or its caller
//                                          went away.
//
// A study decoded beside others gets the same tokens as decoded alone (engine/flight.h).
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "cmn/engine/replica.h"
#include "cmn/model/decoding_options.h"
#include "cmn/preprocessing/image_pipeline.h"
#include "cmn/server/config.h"

namespace cmn::engine {
class Flight;
}

namespace cmn::server {

class Metrics;

// What a finished study gets back.
struct JobResult {
  // ids (ending with 0 unless max_length was hit), their log-probs, and with JobControl::attention the
  // decoder's cross-attention for the chosen hypothesis (engine::TokenAttention: [layers, T, V*49], row t = the
  // step that produced ids[t], the final end token's step left out).
  engine::StudyResult hypothesis;
  double queue_s = 0;             // enqueued -> it joined the decode loop
  double visual_s = 0, encode_s = 0;  // of the studies that joined the loop with it
  double decode_s = 0;            // its first decoder step to its last, attention maps included
  int batch_size = 1;             // most studies in one decoder step with it (itself included)
  int64_t decode_steps = 0;       // decoder steps it ran
};

// Tokens that became certain (see cmn.v1.ReportProgress), delivered on the caller's thread.
struct JobProgress {
  std::vector<int64_t> stable_ids;  // all certain tokens so far (no end token)
  size_t new_from = 0;              // stable_ids[new_from:] are new since the previous progress
  int64_t step = 0;                 // decoder steps run so far
};

// Routine studies queue first come, first served; a STAT study goes ahead of every routine one.
enum class Priority { kRoutine, kStat };

struct JobControl {
  // The call's deadline; DEADLINE_EXCEEDED once it passes (checked before it joins the decode loop and between steps).
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  // Polled by the waiting caller every few milliseconds: true = the client went away (CANCELLED).
  std::function<bool()> cancelled;
  // Called on the caller's thread for each progress event; returning false abandons the call (CANCELLED).
  // Empty = no progress tracking.
  std::function<bool(const JobProgress&)> on_progress;
  // Capture JobResult::hypothesis.attention in the same pass (the replica replays only the decoder over the
  // study's kept encoder memory).
  bool attention = false;
  // STAT: queued ahead of every routine study; it starts an empty loop without waiting for partners and joins a
  // running one even when it is full (up to engine.stat_reserved_slots more studies).
  Priority priority = Priority::kRoutine;
  // The replica that decodes this study (the model the caller will read the ids with): after a hot reload, calls
  // that started before it finish on the old replica. Studies share the decode loop only with studies of the same
  // replica. Null: the engine's own (the one it was made with).
  std::shared_ptr<engine::Replica> replica;
  // Score this report (token ids, no end token) instead of writing one (issue 14: GenerateReportRequest.
  // score_report): one visual + encoder + teacher-forced pass on the worker, between two steps of the decode
  // loop; JobResult::hypothesis holds the given ids + the end token, their log-probs and the consistency.
  std::optional<std::vector<int64_t>> score_ids;
};

class Engine {
 public:
  // The engine owns the worker thread, the only thread that calls `replica` (and any replica a job names).
  Engine(std::shared_ptr<engine::Replica> replica, const EngineOptions& options, Metrics* metrics);
  ~Engine();  // stop()
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // An admitted request. Moving transfers it; destruction frees the slot.
  class Slot {
   public:
    Slot() = default;
    Slot(Slot&& other) noexcept : engine_(other.engine_) { other.engine_ = nullptr; }
    Slot& operator=(Slot&& other) noexcept;
    ~Slot();
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;

   private:
    friend class Engine;
    explicit Slot(Engine* engine) : engine_(engine) {}
    Engine* engine_ = nullptr;
  };

  // RESOURCE_EXHAUSTED at once when max_pending requests are admitted (STAT: max_pending + stat_reserved_slots);
  // UNAVAILABLE after stop().
  absl::StatusOr<Slot> admit(Priority priority = Priority::kRoutine);

  // Queues one study (the model's V views in slot order, each [3,H,W]) and blocks until it is decoded, its
  // deadline passes, or it is cancelled. A model failure fails every study of the decode loop (INTERNAL). The slot proves admission.
  absl::StatusOr<JobResult> run(const Slot& slot, std::vector<preprocessing::FloatImage> images,
                                const model::DecodingOptions& decoding, const JobControl& control);

  // The replica for studies whose JobControl names none, from now on (a hot reload: the old one is freed when the
  // last study that named it is done).
  void set_replica(std::shared_ptr<engine::Replica> replica);

  // Test seam: called on the worker thread after the visual stage of the studies joining the decode loop and
  // before each decoder step (steps_done = steps the loop ran since it was last empty), before the engine checks
  // whether its studies are still wanted. Tests hold a decode here (a latch) instead of guessing how long it
  // takes. Safe while the worker runs; a loop keeps the hook it started with, so a new one takes effect once
  // the loop has drained.
  void set_step_hook(std::function<void(int64_t steps_done)> hook);

  // Finishes the queued and running studies, then stops the worker. Later admits get UNAVAILABLE.
  void stop();

  // From now on an empty loop starts without waiting for partners (max_queue_delay_ms): a draining server finishes
  // its queued studies at once instead of sitting out their batching windows. Admission is unchanged.
  void flush_batches();

  int64_t pending() const;  // admitted requests
  int64_t queued() const;   // waiting for the worker

  struct Stats {
    int64_t decoded = 0;    // studies decoded to the end
    int64_t abandoned = 0;  // studies dropped before their end: cancelled or past their deadline
  };
  Stats stats() const;

  struct Job;  // internal

 private:
  void release_slot();
  void worker_loop();
  // The studies that start an empty decode loop (after the batching window); empty when stopping.
  std::vector<std::shared_ptr<Job>> next_batch(std::unique_lock<std::mutex>& lock);
  // The waiting studies that join a running loop on `replica` with `live` studies in it: up to max_batch_size
  // in all, STAT studies up to stat_reserved_slots more.
  std::vector<std::shared_ptr<Job>> joiners_locked(const std::shared_ptr<engine::Replica>& replica, size_t live);
  // Answers the scoring jobs among `joining` (JobControl::score_ids) on `replica`; returns the others.
  std::vector<std::shared_ptr<Job>> score(engine::Replica& replica, std::vector<std::shared_ptr<Job>> joining);
  void join(engine::Flight& flight, const std::vector<std::shared_ptr<Job>>& joining,
            const std::function<void(int64_t)>& hook, std::vector<std::shared_ptr<Job>>* live);
  void step(engine::Flight& flight, const std::function<void(int64_t)>& hook, std::vector<std::shared_ptr<Job>>* live);
  void drop_gone(engine::Flight& flight, std::vector<std::shared_ptr<Job>>* live);
  void count_abandoned();
  void withdraw(const std::shared_ptr<Job>& job);
  void publish_queue_depth_locked();

  std::shared_ptr<engine::Replica> replica_;  // guarded by mutex_
  EngineOptions options_;
  std::mutex step_hook_mutex_;             // set_step_hook from a test thread, read by the worker per decode loop
  std::function<void(int64_t)> step_hook_;  // guarded by step_hook_mutex_
  Metrics* metrics_;

  mutable std::mutex mutex_;
  std::condition_variable work_ready_;
  std::deque<std::shared_ptr<Job>> queue_;
  int64_t pending_ = 0;
  bool stopping_ = false;
  bool flushing_ = false;  // flush_batches(): no more waiting for batch partners
  Stats stats_;
  std::thread worker_;
};

}  // namespace cmn::server
