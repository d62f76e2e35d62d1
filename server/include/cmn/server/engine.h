#pragma once
// The serving scheduler: a bounded set of admitted requests, a queue (STAT before routine, FIFO within each), and
// one worker thread that forms
// batches of waiting studies and hands them to an engine::Replica (as CTranslate2's ReplicaPool + batcher: one
// replica, one thread calling it). It knows nothing of the model's internals and includes no LibTorch header:
// studies go in as preprocessing images, reports come back as ids; model errors arrive as absl::Status.
//
//   handler thread                         worker thread
//   admit()  -> Slot (or RESOURCE_EXHAUSTED at once)
//   DICOM -> images (outside the engine)
//   run(images, decoding, control) ---->   waits up to max_queue_delay_ms for up to max_batch_size studies with
//     waits; forwards progress;            the same decoding settings, then Replica::run on the batch
//     polls cancellation / deadline        (visual -> encoder -> decode loop, all studies' beams together).
//   <- result or DEADLINE_EXCEEDED /       Between decode steps it checks every study's deadline and
//      CANCELLED (slot freed at once)      abandonment; when every study of the batch is gone it stops.
//
// A study decoded in a batch gets the same tokens as decoded alone: rows never interact and beam search's
// early stop does not change any study's result (model/decoding.h).
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "cmn/engine/replica.h"
#include "cmn/model/decoding_options.h"
#include "cmn/preprocessing/image_pipeline.h"
#include "cmn/server/config.h"

namespace cmn::server {

class Metrics;

// What a finished study gets back.
struct JobResult {
  // ids (ending with 0 unless max_length was hit), their log-probs, and with JobControl::attention the
  // decoder's cross-attention for the chosen hypothesis (engine::TokenAttention: [layers, T, V*49], row t = the
  // step that produced ids[t], the final end token's step left out).
  engine::StudyResult hypothesis;
  double queue_s = 0;             // enqueued -> its batch started
  double visual_s = 0, encode_s = 0, decode_s = 0;  // of its batch
  int batch_size = 1;             // studies in its batch
  int64_t decode_steps = 0;       // decoder steps its batch ran
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
  // The call's deadline; DEADLINE_EXCEEDED once it passes (checked before the batch and between steps).
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  // Polled by the waiting caller every few milliseconds: true = the client went away (CANCELLED).
  std::function<bool()> cancelled;
  // Called on the caller's thread for each progress event; returning false abandons the call (CANCELLED).
  // Empty = no progress tracking.
  std::function<bool(const JobProgress&)> on_progress;
  // Capture JobResult::hypothesis.attention in the same pass (the replica replays only the decoder over the
  // batch's kept encoder memory, one row for this study).
  bool attention = false;
  // STAT: queued ahead of every routine study and started without waiting for batch partners.
  Priority priority = Priority::kRoutine;
  // The replica that decodes this study (the model the caller will read the ids with): after a hot reload, calls
  // that started before it finish on the old replica. Studies share a batch only with studies of the same
  // replica. Null: the engine's own (the one it was made with).
  std::shared_ptr<engine::Replica> replica;
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
  // deadline passes, or it is cancelled. A model failure fails its batch (INTERNAL). The slot proves admission.
  absl::StatusOr<JobResult> run(const Slot& slot, std::vector<preprocessing::FloatImage> images,
                                const model::DecodingOptions& decoding, const JobControl& control);

  // The replica for studies whose JobControl names none, from now on (a hot reload: the old one is freed when the
  // last study that named it is done).
  void set_replica(std::shared_ptr<engine::Replica> replica);

  // Test seam: called on the worker thread after a batch's visual stage and before each decoder step
  // (steps_done = steps run so far), before the engine checks whether the batch is still wanted. Tests hold a
  // decode here (a latch) instead of guessing how long it takes. Safe while the worker runs; a batch keeps the
  // hook it started with, so a new one takes effect from the next batch.
  void set_step_hook(std::function<void(int64_t steps_done)> hook);

  // Finishes the queued and running studies, then stops the worker. Later admits get UNAVAILABLE.
  void stop();

  // From now on batches start without waiting for partners (max_queue_delay_ms): a draining server finishes
  // its queued studies at once instead of sitting out their batching windows. Admission is unchanged.
  void flush_batches();

  int64_t pending() const;  // admitted requests
  int64_t queued() const;   // waiting for the worker

  struct Stats {
    int64_t batches = 0;            // batches decoded to the end
    int64_t abandoned_batches = 0;  // batches stopped early because no study of theirs was wanted any more
  };
  Stats stats() const;

  struct Job;  // internal

 private:
  void release_slot();
  void worker_loop();
  std::vector<std::shared_ptr<Job>> next_batch(std::unique_lock<std::mutex>& lock);
  void run_batch(const std::vector<std::shared_ptr<Job>>& batch);
  void withdraw(const std::shared_ptr<Job>& job);
  void publish_queue_depth_locked();

  std::shared_ptr<engine::Replica> replica_;  // guarded by mutex_
  EngineOptions options_;
  std::mutex step_hook_mutex_;             // set_step_hook from a test thread, read by the worker per batch
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
