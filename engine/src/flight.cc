#include "cmn/engine/flight.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "cmn/model/decoding.h"
#include "cmn/model/encoder_decoder.h"
#include "cmn/model/runtime.h"
#include "replica_impl.h"
#include "stable_tokens.h"

namespace cmn::engine {
namespace {

using Clock = std::chrono::steady_clock;

// Wall time since `start`; on CUDA the device's queued work must have finished first.
double seconds_since(Clock::time_point start, const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

struct Flight::Study {
  int64_t key = 0;
  StudyOptions options;
  torch::Tensor memory;                          // [1,S,d] its encoder memory (attention maps replay over it)
  model::DecoderCache cache;                     // its rows only, at its own length
  std::unique_ptr<model::StudySearch> search;
  StableTokens progress;                         // with options.progress
  Clock::time_point first_step;
  int most_partners = 0;
};

Flight::Flight(std::shared_ptr<Replica> replica) : replica_(std::move(replica)) {}
Flight::~Flight() = default;  // decode_threads_ restores the thread count

size_t Flight::live() const { return live_.size(); }

void Flight::leave(int64_t key) {
  live_.erase(std::remove_if(live_.begin(), live_.end(), [&](const auto& s) { return s->key == key; }), live_.end());
}

absl::StatusOr<FlightJoin> Flight::join(const std::vector<FlightStudy>& studies,
                                        const std::function<bool()>& after_visual) {
  FlightJoin joined;
  if (studies.empty()) return joined;
  std::vector<const std::vector<preprocessing::FloatImage>*> views_of;
  for (size_t s = 0; s < studies.size(); ++s) {
    if (absl::Status valid = validate_decoding(studies[s].decoding); !valid.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("study ", s, ": ", valid.message()));
    }
    views_of.push_back(&studies[s].images);
  }
  auto images = pack_images(views_of, replica_->model().config().effective_views());  // [B,V,3,H,W]
  if (!images.ok()) return images.status();
  ReplicaImpl& replica = replica_->internals();
  auto& network = *replica.network;
  try {
    decode_threads_.reset();  // the trunk and the encoder take the replica's threads
    c10::InferenceMode guard;
    at::init_num_threads();  // the calling thread's OpenMP team takes the size set with at::set_num_threads
    auto start = Clock::now();
    const auto att = network.extract(images->to(replica.device)).att;         // [B,V*49,d_vf]
    joined.visual_s = seconds_since(start, replica.device);
    if (after_visual && !after_visual()) {
      return absl::CancelledError("the studies were stopped before their encoder: none of them is wanted any more");
    }
    start = Clock::now();
    std::vector<std::unique_ptr<Study>> fresh;
    for (size_t s = 0; s < studies.size(); ++s) {
      auto study = std::make_unique<Study>();
      // The encoder per study: its memory is then the same whoever joined with it (a Linear over all the join's
      // patches would take another path past kMaxLinearRows rows).
      study->memory = network.encoder_decoder->encode(att.narrow(0, static_cast<int64_t>(s), 1));  // [1,S,d]
      study->cache = network.encoder_decoder->start_decoding(study->memory);
      study->search = model::start_search(studies[s].decoding);
      study->options = studies[s].options;
      fresh.push_back(std::move(study));
    }
    joined.encode_s = seconds_since(start, replica.device);
    for (auto& study : fresh) {
      study->key = next_key_++;
      joined.keys.push_back(study->key);
      live_.push_back(std::move(study));
    }
    return joined;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("model failed: ", e.msg()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("model failed: ", e.what()));
  }
}

absl::StatusOr<std::vector<FlightResult>> Flight::step(const StableTokensFn& on_stable) {
  std::vector<FlightResult> finished;
  if (live_.empty()) return finished;
  ReplicaImpl& replica = replica_->internals();
  auto& network = *replica.network;
  try {
    c10::InferenceMode guard;
    at::init_num_threads();
    if (decode_threads_ == nullptr) decode_threads_ = std::make_unique<model::ScopedThreads>(replica_->decode_threads());
    // Every live study's rows one after another: rows[i] of them for study i.
    std::vector<int64_t> tokens;
    std::vector<int64_t> rows;
    std::vector<model::DecoderCache*> caches;
    const auto now = Clock::now();
    for (auto& study : live_) {
      const auto& t = study->search->tokens();
      const int64_t steps_done = study->search->steps();
      if (steps_done == 0) study->first_step = now;
      study->most_partners = std::max(study->most_partners, static_cast<int>(live_.size()));
      if (study->options.progress && on_stable) {
        study->progress.follow(t.data(), t.size(), steps_done == 0);
        std::vector<int64_t> stable;
        size_t new_from = 0;
        if (study->progress.grew(&stable, &new_from)) on_stable(study->key, stable, new_from, steps_done);
      }
      rows.push_back(static_cast<int64_t>(t.size()));
      tokens.insert(tokens.end(), t.begin(), t.end());
      caches.push_back(&study->cache);
    }
    const auto input = torch::tensor(tokens, torch::kLong).to(replica.device);  // [N]
    const auto out = network.encoder_decoder->decode_step(input, caches);        // [N,V+1]
    ++steps_;

    std::vector<std::unique_ptr<Study>> going_on;
    int64_t first = 0;
    for (size_t i = 0; i < live_.size(); ++i) {
      auto& study = live_[i];
      study->search->advance(out.narrow(0, first, rows[i]));                     // [rows_i,V+1]
      first += rows[i];
      if (!study->search->finished()) {
        const auto& parents = study->search->parents();
        if (study->options.progress && on_stable) study->progress.select(parents.data(), parents.size());
        const auto kept = torch::tensor(parents, torch::kLong).to(replica.device);  // [rows']
        model::BaseCMNImpl::select_rows(study->cache, kept, kept.size(0));
        going_on.push_back(std::move(study));
        continue;
      }
      FlightResult r;
      r.key = study->key;
      model::Hypothesis best = study->search->best();
      r.study.ids = std::move(best.ids);
      r.study.token_log_probs = std::move(best.token_log_probs);
      r.study.score = best.score;
      if (auto c = network.consistency(study->memory, {r.study.ids})) r.study.consistency = c->front();
      r.steps = study->search->steps();
      r.decode_s = seconds_since(study->first_step, replica.device);
      r.most_partners = study->most_partners;
      if (study->options.attention) {
        const auto start = Clock::now();
        std::vector<int64_t> chosen = r.study.ids;
        if (!chosen.empty() && chosen.back() == 0) chosen.pop_back();  // the end token's step is not plotted
        const auto maps = model::decoder_cross_attention(*network.encoder_decoder, study->memory, {chosen});
        r.study.attention = to_token_attention(maps.front());             // [layers,T,S]
        r.attention_s = seconds_since(start, replica.device);
      }
      finished.push_back(std::move(r));
    }
    live_ = std::move(going_on);
    return finished;
  } catch (const c10::Error& e) {
    live_.clear();
    return absl::InternalError(absl::StrCat("model failed: ", e.msg()));
  } catch (const std::exception& e) {
    live_.clear();
    return absl::InternalError(absl::StrCat("model failed: ", e.what()));
  }
}

}  // namespace cmn::engine
