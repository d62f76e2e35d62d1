#include "cmn/server/engine.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <optional>
#include <string>
#include <utility>

#include <ATen/Parallel.h>

#include "absl/strings/str_cat.h"
#include "cmn/model/encoder_decoder.h"
#include "cmn/pipeline/report_generator.h"
#include "cmn/server/metrics.h"

namespace cmn::server {

using Clock = std::chrono::steady_clock;

struct Engine::Job {
  torch::Tensor images;             // [V,3,H,W]
  model::DecodingOptions decoding;
  std::string batch_key;            // jobs with equal non-empty keys may share a batch; "" = alone
  Clock::time_point enqueued;
  Clock::time_point deadline = Clock::time_point::max();
  bool wants_progress = false;
  bool attention = false;           // JobControl::attention
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

// Thrown out of the decode loop when every study of the batch is gone; caught in run_batch.
struct BatchAbandoned : std::exception {
  const char* what() const noexcept override { return "every study of the batch was abandoned"; }
};

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
  if (d.method == "sample") return "";
  return absl::StrCat(d.method, "|", d.beam_size, "|", d.max_length, "|", d.temperature, "|", d.block_trigrams,
                      "|", d.length_penalty, "|", d.early_stop);
}

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Wraps the model's StepModel between the search and the network:
//  - before every step, stops the search (BatchAbandoned) when no study of the batch is wanted any more;
//  - follows every row's tokens through select_rows, so that the tokens all hypotheses that can still win
//    agree on (the common prefix of the live rows and of the finished ones) are streamed as they settle.
class TrackingStepModel : public model::StepModel {
 public:
  TrackingStepModel(model::StepModel& inner, const std::vector<std::shared_ptr<Engine::Job>>& jobs)
      : inner_(inner), jobs_(jobs), finished_lcp_(jobs.size()), published_(jobs.size(), 0) {
    track_ = std::any_of(jobs.begin(), jobs.end(), [](const auto& j) { return j->wants_progress; });
  }

  int64_t studies() const override { return inner_.studies(); }
  int64_t steps() const { return steps_; }

  torch::Tensor step(const torch::Tensor& tokens) override {
    if (all_gone(jobs_)) throw BatchAbandoned();
    if (track_) {
      follow(tokens);
      publish();
    }
    ++steps_;
    return inner_.step(tokens);
  }

  void select_rows(const torch::Tensor& rows, int64_t rows_per_study) override {
    if (track_) {
      const auto idx = rows.to(torch::kCPU).contiguous();
      const auto* p = idx.data_ptr<int64_t>();
      std::vector<Row> next(static_cast<size_t>(idx.numel()));
      for (size_t i = 0; i < next.size(); ++i) next[i] = rows_[static_cast<size_t>(p[i])];
      rows_ = std::move(next);
      rows_per_study_ = rows_per_study;
    }
    inner_.select_rows(rows, rows_per_study);
  }

 private:
  struct Row {
    std::vector<int64_t> ids;  // tokens after bos, up to (not including) the end token
    bool finished = false;     // fed the end token
  };

  static void shrink_to_common(std::vector<int64_t>* prefix, const std::vector<int64_t>& other) {
    size_t n = 0;
    while (n < prefix->size() && n < other.size() && (*prefix)[n] == other[n]) ++n;
    prefix->resize(n);
  }

  // tokens [rows]: the token each row consumes now (bos = 0 at the first step).
  void follow(const torch::Tensor& tokens) {
    const auto t = tokens.to(torch::kCPU).contiguous();
    const auto* p = t.data_ptr<int64_t>();
    if (steps_ == 0) {
      rows_.assign(static_cast<size_t>(t.numel()), Row{});
      rows_per_study_ = 1;
      return;
    }
    for (size_t i = 0; i < rows_.size(); ++i) {
      Row& row = rows_[i];
      if (row.finished) continue;
      if (p[i] != 0) {
        row.ids.push_back(p[i]);
        continue;
      }
      row.finished = true;
      auto& lcp = finished_lcp_[i / static_cast<size_t>(rows_per_study_)];
      if (lcp) {
        shrink_to_common(&*lcp, row.ids);
      } else {
        lcp = row.ids;
      }
    }
  }

  void publish() {
    const auto per = static_cast<size_t>(rows_per_study_);
    for (size_t s = 0; s < jobs_.size(); ++s) {
      if (!jobs_[s]->wants_progress || jobs_[s]->abandoned.load()) continue;
      std::vector<int64_t> stable = rows_[s * per].ids;
      for (size_t r = s * per + 1; r < (s + 1) * per; ++r) shrink_to_common(&stable, rows_[r].ids);
      if (finished_lcp_[s]) shrink_to_common(&stable, *finished_lcp_[s]);
      if (stable.size() <= published_[s]) continue;
      JobProgress progress;
      progress.new_from = published_[s];
      progress.step = steps_;
      published_[s] = stable.size();
      progress.stable_ids = std::move(stable);
      jobs_[s]->push_progress(std::move(progress));
    }
  }

  model::StepModel& inner_;
  const std::vector<std::shared_ptr<Engine::Job>>& jobs_;
  bool track_ = false;
  std::vector<Row> rows_;
  int64_t rows_per_study_ = 1;
  std::vector<std::optional<std::vector<int64_t>>> finished_lcp_;  // per study
  std::vector<size_t> published_;                                  // per study: stable tokens sent
  int64_t steps_ = 0;
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

Engine::Engine(model::R2GenCMN model, const EngineOptions& options, Metrics* metrics)
    : model_(std::move(model)), options_(options), metrics_(metrics) {
  model_->eval();
  worker_ = std::thread([this] { worker_loop(); });
}

Engine::~Engine() { stop(); }

absl::StatusOr<Engine::Slot> Engine::admit() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  if (pending_ >= options_.max_pending) {
    return absl::ResourceExhaustedError(absl::StrCat("server busy: ", pending_, " requests in progress (limit ",
                                                     options_.max_pending, "); retry later"));
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

absl::StatusOr<JobResult> Engine::run(const Slot& slot, torch::Tensor images, const model::DecodingOptions& decoding,
                                      const JobControl& control) {
  if (slot.engine_ != this) return absl::FailedPreconditionError("request was not admitted by this engine");
  auto job = std::make_shared<Job>();
  job->images = std::move(images);
  job->decoding = decoding;
  job->batch_key = batch_key(decoding);
  job->deadline = control.deadline;
  job->wants_progress = static_cast<bool>(control.on_progress);
  job->attention = control.attention;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return absl::UnavailableError("the server is shutting down");
    job->enqueued = Clock::now();
    queue_.push_back(job);
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

std::vector<std::shared_ptr<Engine::Job>> Engine::next_batch(std::unique_lock<std::mutex>& lock) {
  const auto max_batch = static_cast<size_t>(options_.max_batch_size);
  while (true) {
    work_ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return {};  // stopping, nothing left

    const std::shared_ptr<Job> first = queue_.front();
    auto compatible = [&] {
      return static_cast<size_t>(std::count_if(queue_.begin(), queue_.end(), [&](const auto& j) {
        return j == first || (!first->batch_key.empty() && j->batch_key == first->batch_key);
      }));
    };
    // Wait for batch partners, at most max_queue_delay_ms after the oldest study arrived.
    if (!first->batch_key.empty() && max_batch > 1 && options_.max_queue_delay_ms > 0) {
      const auto until = first->enqueued + std::chrono::milliseconds(options_.max_queue_delay_ms);
      work_ready_.wait_until(lock, until, [&] {
        return stopping_ || first->abandoned.load() || compatible() >= max_batch;
      });
    }

    std::vector<std::shared_ptr<Job>> batch;
    std::vector<std::shared_ptr<Job>> dropped;
    const auto now = Clock::now();
    for (auto it = queue_.begin(); it != queue_.end() && batch.size() < max_batch;) {
      const auto& j = *it;
      const bool fits = j == first || (!first->batch_key.empty() && j->batch_key == first->batch_key);
      if (j->gone(now)) {
        dropped.push_back(j);
        it = queue_.erase(it);
      } else if (fits) {
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
  at::init_num_threads();  // this thread's OpenMP team takes the size set with at::set_num_threads
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
  const int batch_size = static_cast<int>(batch.size());
  JobResult shared;
  shared.batch_size = batch_size;
  try {
    c10::InferenceMode guard;
    std::vector<torch::Tensor> views;
    views.reserve(batch.size());
    for (const auto& j : batch) views.push_back(j->images);
    const auto images = torch::stack(views);                                  // [B,V,3,H,W]

    auto t = Clock::now();
    const auto features = model_->extract(images);                           // att [B,V*49,2048]
    shared.visual_s = seconds(Clock::now() - t);
    if (all_gone(batch)) throw BatchAbandoned();

    t = Clock::now();
    const auto memory = model_->encoder_decoder->encode(features.att);        // [B,S,d]
    shared.encode_s = seconds(Clock::now() - t);

    t = Clock::now();
    model::CmnStepModel network(*model_->encoder_decoder, memory);
    TrackingStepModel stepper(network, batch);
    auto decoded = model::decode(stepper, batch.front()->decoding);
    shared.decode_s = seconds(Clock::now() - t);
    shared.decode_steps = decoded.steps;

    if (metrics_ != nullptr) {
      metrics_->observe_stage("visual", shared.visual_s);
      metrics_->observe_stage("encode", shared.encode_s);
      metrics_->observe_stage("decode", shared.decode_s);
      metrics_->observe_batch(batch_size, decoded.steps);
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++stats_.batches;
    }
    // Studies that asked for attention maps last: their capture (one more visual + encoder pass each) must not
    // delay the answers of their batch partners.
    for (const bool with_attention : {false, true}) {
      for (size_t i = 0; i < batch.size(); ++i) {
        if (batch[i]->attention != with_attention) continue;
        JobResult r = shared;
        r.queue_s = seconds(start - batch[i]->enqueued);
        if (metrics_ != nullptr) metrics_->observe_stage("queue", r.queue_s);
        r.hypothesis = std::move(decoded.best[i]);
        if (with_attention && !batch[i]->gone(Clock::now())) {
          // On this thread: the model is not thread-safe and the encoder records its attention as it runs.
          std::vector<int64_t> ids = r.hypothesis.ids;
          if (!ids.empty() && ids.back() == 0) ids.pop_back();  // the end token's step is not plotted
          auto captured = pipeline::capture_token_attention(model_, batch[i]->images.unsqueeze(0), {ids});
          if (!captured.ok()) {
            batch[i]->finish(captured.status());
            continue;
          }
          r.token_attention = std::move((*captured)[0]);                    // [layers,T,V*49]
        }
        batch[i]->finish(std::move(r));
      }
    }
    return;
  } catch (const BatchAbandoned&) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++stats_.abandoned_batches;
    }
    if (metrics_ != nullptr) metrics_->count_abandoned_batch();
    for (const auto& j : batch) j->finish(gone_status(*j));
    return;
  } catch (const c10::Error& e) {
    const absl::Status failed = absl::InternalError(absl::StrCat("model failed: ", e.msg()));
    for (const auto& j : batch) j->finish(failed);
  } catch (const std::exception& e) {
    const absl::Status failed = absl::InternalError(absl::StrCat("model failed: ", e.what()));
    for (const auto& j : batch) j->finish(failed);
  }
}

}  // namespace cmn::server
