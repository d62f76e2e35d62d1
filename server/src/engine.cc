#include "cmn/server/engine.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "cmn/server/metrics.h"

namespace cmn::server {

using Clock = std::chrono::steady_clock;

struct Engine::Job {
  std::vector<preprocessing::FloatImage> images;  // the model's V views, each [3,H,W]
  model::DecodingOptions decoding;
  std::string batch_key;            // jobs with equal non-empty keys may share a batch; "" = alone
  Clock::time_point enqueued;
  Clock::time_point deadline = Clock::time_point::max();
  bool wants_progress = false;
  bool attention = false;           // JobControl::attention
  Priority priority = Priority::kRoutine;
  std::shared_ptr<engine::Replica> replica;  // never null once queued
  std::atomic<bool> abandoned{false};  // the caller returned (cancelled, deadline, write failed)

  std::mutex mutex;                 // guards what follows
  std::condition_variable changed;
  bool done = false;
  absl::StatusOr<JobResult> result = absl::UnknownError("not run");
  std::deque<JobProgress> progress;

  // Nobody needs this study any more.
  bool gone(Clock::time_point now) const { return abandoned.load() || now >= deadline; }

  void finish(absl::StatusOr<JobResult> r) {
    std::lock_guard<std::mutex> lock(mutex);
    result = std::move(r);
    done = true;
    changed.notify_all();
  }
  void push_progress(JobProgress p) {
    std::lock_guard<std::mutex> lock(mutex);
    progress.push_back(std::move(p));
    changed.notify_all();
  }
};

namespace {

bool all_gone(const std::vector<std::shared_ptr<Engine::Job>>& jobs) {
  const auto now = Clock::now();
  return std::all_of(jobs.begin(), jobs.end(), [&](const auto& j) { return j->gone(now); });
}

absl::Status gone_status(const Engine::Job& job) {
  if (Clock::now() >= job.deadline) return absl::DeadlineExceededError("deadline exceeded before the report was finished");
  return absl::CancelledError("cancelled by the client");
}

// Decoding settings that may share a decode loop. Sampling draws from one generator per loop, so a sampled
// study would depend on its batch partners: it always runs alone.
std::string batch_key(const model::DecodingOptions& d) {
  if (d.method == model::DecodingMethod::kSample) return "";
  return absl::StrCat(model::method_name(d.method), "|", d.beam_size, "|", d.max_length, "|", d.temperature, "|", d.block_trigrams,
                      "|", d.length_penalty, "|", d.early_stop);
}

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Steers a batch from the replica's thread: stops it when no study of it is wanted any more (deadline passed,
// cancelled), and hands certain tokens to the studies that stream.
class BatchObserver : public engine::StepObserver {
 public:
  BatchObserver(const std::vector<std::shared_ptr<Engine::Job>>& jobs, const std::function<void(int64_t)>& hook)
      : jobs_(jobs), hook_(hook) {}

  bool keep_going(int64_t steps_done) override {
    if (hook_) hook_(steps_done);
    return !all_gone(jobs_);
  }

  void on_stable_tokens(size_t study, const std::vector<int64_t>& stable, size_t new_from,
                        int64_t steps_done) override {
    if (jobs_[study]->abandoned.load()) return;
    JobProgress progress;
    progress.stable_ids = stable;
    progress.new_from = new_from;
    progress.step = steps_done;
    jobs_[study]->push_progress(std::move(progress));
  }

 private:
  const std::vector<std::shared_ptr<Engine::Job>>& jobs_;
  const std::function<void(int64_t)> hook_;  // a copy: the engine's may be replaced while this batch runs
};

}  // namespace

Engine::Slot& Engine::Slot::operator=(Slot&& other) noexcept {
  if (this != &other) {
    if (engine_ != nullptr) engine_->release_slot();
    engine_ = other.engine_;
    other.engine_ = nullptr;
  }
  return *this;
}

Engine::Slot::~Slot() {
  if (engine_ != nullptr) engine_->release_slot();
}

Engine::Engine(std::shared_ptr<engine::Replica> replica, const EngineOptions& options, Metrics* metrics)
    : replica_(std::move(replica)), options_(options), metrics_(metrics) {
  worker_ = std::thread([this] { worker_loop(); });
}

Engine::~Engine() { stop(); }

absl::StatusOr<Engine::Slot> Engine::admit(Priority priority) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  const int64_t limit = options_.max_pending + (priority == Priority::kStat ? options_.stat_reserved_slots : 0);
  if (pending_ >= limit) {
    return absl::ResourceExhaustedError(absl::StrCat("server busy: ", pending_, " requests in progress (limit ", limit,
                                                     priority == Priority::kStat ? " for STAT" : "", "); retry later"));
  }
  ++pending_;
  if (metrics_ != nullptr) metrics_->set_in_flight(pending_);
  return Slot(this);
}

void Engine::release_slot() {
  std::lock_guard<std::mutex> lock(mutex_);
  --pending_;
  if (metrics_ != nullptr) metrics_->set_in_flight(pending_);
}

int64_t Engine::pending() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return pending_;
}

Engine::Stats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

int64_t Engine::queued() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(queue_.size());
}

void Engine::publish_queue_depth_locked() {
  if (metrics_ != nullptr) metrics_->set_queue_depth(static_cast<int64_t>(queue_.size()));
}

absl::StatusOr<JobResult> Engine::run(const Slot& slot, std::vector<preprocessing::FloatImage> images,
                                      const model::DecodingOptions& decoding, const JobControl& control) {
  if (slot.engine_ != this) return absl::FailedPreconditionError("request was not admitted by this engine");
  auto job = std::make_shared<Job>();
  job->images = std::move(images);
  job->decoding = decoding;
  job->batch_key = batch_key(decoding);
  job->deadline = control.deadline;
  job->wants_progress = static_cast<bool>(control.on_progress);
  job->attention = control.attention;
  job->priority = control.priority;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return absl::UnavailableError("the server is shutting down");
    job->replica = control.replica != nullptr ? control.replica : replica_;
    job->enqueued = Clock::now();
    // STAT: behind the STAT studies already waiting, ahead of every routine one.
    auto at = queue_.end();
    if (job->priority == Priority::kStat) {
      at = std::find_if(queue_.begin(), queue_.end(), [](const auto& j) { return j->priority != Priority::kStat; });
    }
    queue_.insert(at, job);
    publish_queue_depth_locked();
  }
  work_ready_.notify_all();

  // Gives the study up: the worker skips it, or stops its batch when no other study is left.
  auto abandon = [&](absl::Status why) {
    job->abandoned.store(true);
    withdraw(job);
    return why;
  };
  std::unique_lock<std::mutex> lock(job->mutex);
  while (true) {
    job->changed.wait_for(lock, std::chrono::milliseconds(10), [&] { return job->done || !job->progress.empty(); });
    while (!job->progress.empty()) {
      JobProgress p = std::move(job->progress.front());
      job->progress.pop_front();
      lock.unlock();
      const bool keep_going = control.on_progress(p);
      lock.lock();
      if (!keep_going) {
        lock.unlock();
        return abandon(absl::CancelledError("the client stopped reading the stream"));
      }
    }
    if (job->done) return std::move(job->result);
    const auto now = Clock::now();
    // gRPC cancels a call whose deadline passed, too: a cancellation at the deadline is a deadline.
    const bool expired = now >= control.deadline;
    const bool cancelled = !expired && control.cancelled && control.cancelled();
    if (expired || (cancelled && now + std::chrono::milliseconds(20) >= control.deadline)) {
      lock.unlock();
      return abandon(absl::DeadlineExceededError("deadline exceeded before the report was finished"));
    }
    if (cancelled) {
      lock.unlock();
      return abandon(absl::CancelledError("cancelled by the client"));
    }
  }
}

void Engine::withdraw(const std::shared_ptr<Job>& job) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = std::find(queue_.begin(), queue_.end(), job);
  if (it != queue_.end()) {
    queue_.erase(it);
    publish_queue_depth_locked();
  }
}

void Engine::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void Engine::flush_batches() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    flushing_ = true;
  }
  work_ready_.notify_all();
}

std::vector<std::shared_ptr<Engine::Job>> Engine::next_batch(std::unique_lock<std::mutex>& lock) {
  const auto max_batch = static_cast<size_t>(options_.max_batch_size);
  while (true) {
    work_ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return {};  // stopping, nothing left

    const std::shared_ptr<Job> first = queue_.front();
    auto fits = [&](const std::shared_ptr<Job>& j) {
      return j == first ||
             (!first->batch_key.empty() && j->batch_key == first->batch_key && j->replica == first->replica);
    };
    auto compatible = [&] { return static_cast<size_t>(std::count_if(queue_.begin(), queue_.end(), fits)); };
    // Wait for batch partners, at most max_queue_delay_ms after the oldest study arrived; a STAT study does not.
    if (!first->batch_key.empty() && max_batch > 1 && options_.max_queue_delay_ms > 0 && !flushing_ &&
        first->priority != Priority::kStat) {
      const auto until = first->enqueued + std::chrono::milliseconds(options_.max_queue_delay_ms);
      work_ready_.wait_until(lock, until, [&] {
        return stopping_ || flushing_ || first->abandoned.load() || compatible() >= max_batch ||
               queue_.empty() || queue_.front() != first;
      });
      // A STAT study went ahead of this one while it waited for partners (or it was withdrawn): start again
      // from the new front, which does not wait if it is STAT.
      if (queue_.empty() || queue_.front() != first) continue;
    }

    std::vector<std::shared_ptr<Job>> batch;
    std::vector<std::shared_ptr<Job>> dropped;
    const auto now = Clock::now();
    for (auto it = queue_.begin(); it != queue_.end() && batch.size() < max_batch;) {
      const auto& j = *it;
      if (j->gone(now)) {
        dropped.push_back(j);
        it = queue_.erase(it);
      } else if (fits(j)) {
        batch.push_back(j);
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
    publish_queue_depth_locked();
    for (const auto& j : dropped) j->finish(gone_status(*j));
    if (!batch.empty()) return batch;
  }
}

void Engine::worker_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    auto batch = next_batch(lock);
    if (batch.empty()) return;
    lock.unlock();
    run_batch(batch);
    lock.lock();
  }
}

void Engine::run_batch(const std::vector<std::shared_ptr<Job>>& batch) {
  const auto start = Clock::now();
  std::vector<std::vector<preprocessing::FloatImage>> studies;
  std::vector<engine::StudyOptions> wants;
  studies.reserve(batch.size());
  for (const auto& j : batch) {
    studies.push_back(j->images);
    wants.push_back({j->attention, j->wants_progress});
  }
  std::function<void(int64_t)> hook;
  {
    std::lock_guard<std::mutex> lock(step_hook_mutex_);
    hook = step_hook_;
  }
  BatchObserver observer(batch, hook);
  auto ran = batch.front()->replica->run(studies, batch.front()->decoding, wants, &observer);
  if (!ran.ok()) {
    if (ran.status().code() == absl::StatusCode::kCancelled) {  // the observer stopped it: nobody wants it
      {
        std::lock_guard<std::mutex> lock(mutex_);
        ++stats_.abandoned_batches;
      }
      if (metrics_ != nullptr) metrics_->count_abandoned_batch();
      for (const auto& j : batch) j->finish(gone_status(*j));
      return;
    }
    for (const auto& j : batch) j->finish(ran.status());
    return;
  }
  JobResult shared;
  shared.batch_size = static_cast<int>(batch.size());
  shared.visual_s = ran->visual_s;
  shared.encode_s = ran->encode_s;
  shared.decode_s = ran->decode_s + ran->attention_s;
  shared.decode_steps = ran->steps;
  if (metrics_ != nullptr) {
    metrics_->observe_stage("visual", shared.visual_s);
    metrics_->observe_stage("encode", shared.encode_s);
    metrics_->observe_stage("decode", shared.decode_s);
    metrics_->observe_batch(shared.batch_size, shared.decode_steps);
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.batches;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    JobResult r = shared;
    r.queue_s = seconds(start - batch[i]->enqueued);
    if (metrics_ != nullptr) metrics_->observe_stage("queue", r.queue_s);
    r.hypothesis = std::move(ran->studies[i]);
    batch[i]->finish(std::move(r));
  }
}

void Engine::set_replica(std::shared_ptr<engine::Replica> replica) {
  std::lock_guard<std::mutex> lock(mutex_);
  replica_ = std::move(replica);
}

void Engine::set_step_hook(std::function<void(int64_t steps_done)> hook) {
  std::lock_guard<std::mutex> lock(step_hook_mutex_);
  step_hook_ = std::move(hook);
}

}  // namespace cmn::server
