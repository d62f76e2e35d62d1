#include "cmn/server/engine.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "cmn/engine/flight.h"
#include "cmn/server/metrics.h"

namespace cmn::server {

using Clock = std::chrono::steady_clock;

struct Engine::Job {
  std::vector<preprocessing::FloatImage> images;  // the model's V views, each [3,H,W]
  model::DecodingOptions decoding;
  Clock::time_point enqueued;
  Clock::time_point deadline = Clock::time_point::max();
  bool wants_progress = false;
  bool attention = false;           // JobControl::attention
  Priority priority = Priority::kRoutine;
  std::optional<std::vector<int64_t>> score_ids;  // JobControl::score_ids
  std::shared_ptr<engine::Replica> replica;  // never null once queued
  std::atomic<bool> abandoned{false};  // the caller returned (cancelled, deadline, write failed)
  // Set by the worker alone once the study joined the decode loop.
  int64_t flight_key = -1;
  Clock::time_point joined;
  double visual_s = 0, encode_s = 0;  // of the studies that joined with it

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

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

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
  job->deadline = control.deadline;
  job->wants_progress = static_cast<bool>(control.on_progress);
  job->attention = control.attention;
  job->priority = control.priority;
  job->score_ids = control.score_ids;
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
    // gRPC cancels a call whose deadline passed, too: a cancellation at the deadline is a deadline. "At" is
    // generous: the steady-clock deadline was converted from gRPC's system-clock one with two clock reads, and
    // a thread preempted between them (a loaded host, a sanitizer build: 23 ms seen under TSan) moves it later.
    const bool expired = now >= control.deadline;
    const bool cancelled = !expired && control.cancelled && control.cancelled();
    if (expired || (cancelled && now + std::chrono::milliseconds(250) >= control.deadline)) {
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
    auto fits = [&](const std::shared_ptr<Job>& j) { return j->replica == first->replica; };
    auto compatible = [&] { return static_cast<size_t>(std::count_if(queue_.begin(), queue_.end(), fits)); };
    // Wait for batch partners, at most max_queue_delay_ms after the oldest study arrived; a STAT study does not.
    if (max_batch > 1 && options_.max_queue_delay_ms > 0 && !flushing_ && first->priority != Priority::kStat) {
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

std::vector<std::shared_ptr<Engine::Job>> Engine::joiners_locked(const std::shared_ptr<engine::Replica>& replica,
                                                                  size_t live) {
  std::vector<std::shared_ptr<Job>> joining;
  std::vector<std::shared_ptr<Job>> dropped;
  const auto now = Clock::now();
  const auto most = static_cast<size_t>(options_.max_batch_size);
  // STAT studies (queued first) join even a full loop, up to stat_reserved_slots more: one does not wait for a
  // routine study to finish.
  const size_t most_with_stat = most + static_cast<size_t>(options_.stat_reserved_slots);
  for (auto it = queue_.begin(); it != queue_.end();) {
    const auto& j = *it;
    if (j->gone(now)) {
      dropped.push_back(j);
      it = queue_.erase(it);
      continue;
    }
    const size_t limit = j->priority == Priority::kStat ? most_with_stat : most;
    // First come, first served: a study for another replica (a hot reload) is older than the ones behind it, so
    // nobody joins past it; the loop drains and that study starts the next one. Nor past a study with no room.
    if (j->replica != replica || live + joining.size() >= limit) break;
    joining.push_back(j);
    it = queue_.erase(it);
  }
  publish_queue_depth_locked();
  for (const auto& j : dropped) j->finish(gone_status(*j));
  return joining;
}

void Engine::worker_loop() {
  std::unique_ptr<engine::Flight> flight;
  std::function<void(int64_t)> hook;        // the step hook of the current decode loop
  std::vector<std::shared_ptr<Job>> live;   // studies in the decode loop
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    std::vector<std::shared_ptr<Job>> joining;
    if (live.empty()) {
      flight.reset();
      joining = next_batch(lock);  // waits for work (and for batch partners, up to max_queue_delay_ms)
      if (joining.empty()) return;
    } else {
      joining = joiners_locked(flight->replica(), live.size());
    }
    lock.unlock();
    if (!flight) {
      flight = std::make_unique<engine::Flight>(joining.front()->replica);
      std::lock_guard<std::mutex> hook_lock(step_hook_mutex_);
      hook = step_hook_;
    }
    joining = score(*flight->replica(), std::move(joining));  // given reports: scored, answered, never joined
    if (!joining.empty()) join(*flight, joining, hook, &live);
    if (!live.empty()) step(*flight, hook, &live);
    lock.lock();
  }
}

std::vector<std::shared_ptr<Engine::Job>> Engine::score(engine::Replica& replica,
                                                         std::vector<std::shared_ptr<Job>> joining) {
  std::vector<std::shared_ptr<Job>> rest;
  for (auto& j : joining) {
    if (!j->score_ids) {
      rest.push_back(std::move(j));
      continue;
    }
    if (j->gone(Clock::now())) {
      count_abandoned();
      j->finish(gone_status(*j));
      continue;
    }
    const auto start = Clock::now();
    auto scored = replica.score({j->images}, {*j->score_ids});
    if (!scored.ok()) {
      j->finish(scored.status());
      continue;
    }
    JobResult r;
    r.hypothesis.ids = *j->score_ids;
    r.hypothesis.ids.push_back(0);  // the end token, scored last
    r.hypothesis.token_log_probs = std::move((*scored)[0].token_log_probs);
    r.hypothesis.score = (*scored)[0].log_prob;
    r.hypothesis.consistency = (*scored)[0].consistency;
    r.queue_s = seconds(start - j->enqueued);
    r.decode_s = seconds(Clock::now() - start);
    r.decode_steps = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++stats_.decoded;
    }
    j->finish(std::move(r));
  }
  return rest;
}

void Engine::join(engine::Flight& flight, const std::vector<std::shared_ptr<Job>>& joining,
                  const std::function<void(int64_t)>& hook, std::vector<std::shared_ptr<Job>>* live) {
  const auto start = Clock::now();
  std::vector<engine::FlightStudy> studies;
  studies.reserve(joining.size());
  for (const auto& j : joining) studies.push_back({std::move(j->images), j->decoding, {j->attention, j->wants_progress}});
  // Between its visual stage and its encoder: the test seam, then whether anybody still wants these studies.
  auto joined = flight.join(studies, [&] {
    if (hook) hook(flight.steps());
    return !all_gone(joining);
  });
  if (!joined.ok()) {
    const bool stopped = joined.status().code() == absl::StatusCode::kCancelled;
    for (const auto& j : joining) {
      if (stopped) count_abandoned();
      j->finish(stopped ? gone_status(*j) : joined.status());
    }
    return;
  }
  for (size_t i = 0; i < joining.size(); ++i) {
    const auto& j = joining[i];
    j->flight_key = joined->keys[i];
    j->joined = start;
    j->visual_s = joined->visual_s;
    j->encode_s = joined->encode_s;
    if (metrics_ != nullptr) metrics_->observe_stage("queue", seconds(start - j->enqueued));
    live->push_back(j);
  }
  if (metrics_ != nullptr) {
    metrics_->observe_stage("visual", joined->visual_s);
    metrics_->observe_stage("encode", joined->encode_s);
  }
}

void Engine::count_abandoned() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.abandoned;
  }
  if (metrics_ != nullptr) metrics_->count_abandoned_study();
}

void Engine::drop_gone(engine::Flight& flight, std::vector<std::shared_ptr<Job>>* live) {
  const auto now = Clock::now();
  auto kept = live->begin();
  for (auto& j : *live) {
    if (!j->gone(now)) {
      *kept++ = std::move(j);
      continue;
    }
    flight.leave(j->flight_key);
    count_abandoned();
    j->finish(gone_status(*j));
  }
  live->erase(kept, live->end());
}

void Engine::step(engine::Flight& flight, const std::function<void(int64_t)>& hook,
                  std::vector<std::shared_ptr<Job>>* live) {
  if (hook) hook(flight.steps());
  drop_gone(flight, live);  // between steps: a study nobody wants any more leaves the loop
  if (live->empty()) return;
  auto find = [&](int64_t key) -> std::shared_ptr<Job> {
    for (const auto& j : *live) {
      if (j->flight_key == key) return j;
    }
    return nullptr;
  };
  auto finished = flight.step([&](int64_t key, const std::vector<int64_t>& stable, size_t new_from, int64_t steps) {
    const auto job = find(key);
    if (job == nullptr || job->abandoned.load()) return;
    job->push_progress({stable, new_from, steps});
  });
  if (!finished.ok()) {  // the model failed: every study of the loop has left it
    for (const auto& j : *live) j->finish(finished.status());
    live->clear();
    return;
  }
  if (metrics_ != nullptr) metrics_->count_decode_steps(1);
  for (auto& done : *finished) {
    const auto job = find(done.key);
    if (job == nullptr) continue;  // cannot happen: every key of the loop is a live job's
    live->erase(std::find(live->begin(), live->end(), job));
    JobResult r;
    r.queue_s = seconds(job->joined - job->enqueued);
    r.visual_s = job->visual_s;
    r.encode_s = job->encode_s;
    r.decode_s = done.decode_s + done.attention_s;
    r.batch_size = done.most_partners;
    r.decode_steps = done.steps;
    r.hypothesis = std::move(done.study);
    if (metrics_ != nullptr) {
      metrics_->observe_stage("decode", r.decode_s);
      metrics_->observe_batch(r.batch_size);
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++stats_.decoded;
    }
    job->finish(std::move(r));
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
