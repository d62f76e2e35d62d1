// One study's search, a step at a time (decoding.h StudySearch): beam search and greedy / sampling.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "cmn/model/decoding_rules.h"
#include "search_states.h"

namespace cmn::model {
namespace search {

constexpr int64_t kEos = 0;  // bos = eos = pad = 0

std::function<double(int64_t, double)> penalty_builder(const std::string& spec) {
  const std::optional<LengthPenalty> parsed = parse_length_penalty(spec);
  TORCH_CHECK(parsed.has_value(), length_penalty_problem(spec));
  const double alpha = parsed->alpha;
  switch (parsed->kind) {
    case LengthPenalty::Kind::kWu:
      return [alpha](int64_t len, double p) {
        return p / (std::pow(5.0 + static_cast<double>(len), alpha) / std::pow(6.0, alpha));
      };
    case LengthPenalty::Kind::kAvg:
      return [](int64_t len, double p) { return p / static_cast<double>(len); };
    case LengthPenalty::Kind::kNone:
      break;
  }
  return [](int64_t, double p) { return p; };
}

BeamSearch::BeamSearch(const DecodingOptions& options)
    : options_(options),
      penalty_(penalty_builder(options.length_penalty)),
      can_stop_early_(options.early_stop && options.length_penalty.empty()),
      sums_(torch::zeros({options.beam_size}, torch::kFloat)) {}

void BeamSearch::advance(const torch::Tensor& step_output) {
  TORCH_CHECK(t_ < options_.max_length, "BeamSearch::advance after max_length steps");
  const int64_t beam = options_.beam_size;
  const int64_t rows = static_cast<int64_t>(tokens_.size());
  TORCH_CHECK(step_output.dim() == 2 && step_output.size(0) == rows, "BeamSearch::advance: expected [", rows,
              ", V] log-probs, got ", step_output.sizes());
  const int64_t vocab = step_output.size(1);
  TORCH_CHECK(beam <= vocab, "beam_size ", beam, " exceeds the vocabulary (", vocab, ")");
  // fp32 on the CPU whatever the replica's device and precision (a bf16 replica's logits may be bf16).
  const auto lp = (t_ == 0 ? step_output : torch::log_softmax(step_output / options_.temperature, -1))
                      .to(torch::kCPU, torch::kFloat)
                      .contiguous()
                      .view({rows * vocab});                                   // [rows*V]
  // Every (row, word) continuation by its summed log-prob; the best `beam` survive.
  auto candidates = (sums_.narrow(0, 0, rows).unsqueeze(-1) + lp.view({rows, vocab})).view({rows * vocab});
  auto [ys, ix] = torch::sort(candidates, -1, /*descending=*/true);             // [rows*V]
  ys = ys.narrow(0, 0, beam).contiguous();                                       // [beam]
  ix = ix.narrow(0, 0, beam).contiguous();                                       // [beam]
  const auto chosen_lp = lp.gather(0, ix).contiguous();                          // [beam]
  sums_ = ys.clone();  // == sums[parent] + logprobs[word], as the reference asserts

  const auto* ix_p = ix.data_ptr<int64_t>();
  const auto* lp_p = chosen_lp.data_ptr<float>();
  auto* sums_p = sums_.data_ptr<float>();
  std::vector<Beam> next(static_cast<size_t>(beam));
  tokens_.assign(static_cast<size_t>(beam), 0);
  parents_.assign(static_cast<size_t>(beam), 0);
  for (int64_t k = 0; k < beam; ++k) {
    const int64_t parent = ix_p[k] / vocab, word = ix_p[k] % vocab;
    next[k] = beams_[static_cast<size_t>(parent)];
    next[k].ids.push_back(word);
    next[k].log_probs.push_back(lp_p[k]);
    parents_[k] = parent;
    tokens_[k] = word;
  }
  beams_ = std::move(next);
  const bool last = t_ == options_.max_length - 1;
  // Record beams that ended (or all, at the last step); ended beams keep their slot, 1000 lower.
  for (int64_t k = 0; k < beam; ++k) {
    if (beams_[k].ids.back() != kEos && !last) continue;
    const double p = penalty_(t_ + 1, static_cast<double>(sums_p[k]));
    done_.push_back({beams_[k], p});
    best_done_ = std::max(best_done_, p);
    sums_p[k] -= 1000.0f;
  }
  ++t_;
  // Log-probs are <= 0, so once every live sum is <= the best finished score nothing later can win.
  finished_ = last || (can_stop_early_ && static_cast<double>(sums_.max().item<float>()) <= best_done_);
}

Hypothesis BeamSearch::best() const {
  TORCH_CHECK(!done_.empty(), "BeamSearch::best before any hypothesis finished");
  // sorted(..., key=-p) is stable: among equal scores the earliest recorded wins.
  std::vector<Done> ranked = done_;
  std::stable_sort(ranked.begin(), ranked.end(), [](const Done& x, const Done& y) { return x.p > y.p; });
  Hypothesis h;
  h.ids = std::move(ranked.front().beam.ids);
  h.token_log_probs = std::move(ranked.front().beam.log_probs);
  h.score = ranked.front().p;
  return h;
}

void TrigramBlocker::add_mask(const std::vector<int64_t>& seq, int64_t t, float* mask) {
  const auto at = [&](int64_t i) { return seq[static_cast<size_t>(i)]; };
  seen_[{at(t - 3), at(t - 2)}].push_back(at(t - 1));
  const auto it = seen_.find({at(t - 2), at(t - 1)});
  if (it == seen_.end()) return;
  for (int64_t j : it->second) mask[j] += 1.0f;
}

SampleSearch::SampleSearch(const DecodingOptions& options)
    : options_(options), generator_(at::make_generator<at::CPUGeneratorImpl>(options.seed)) {}

void SampleSearch::advance(const torch::Tensor& step_output) {
  const int64_t t = steps();
  TORCH_CHECK(!finished_, "SampleSearch::advance after the study finished");
  TORCH_CHECK(step_output.dim() == 2 && step_output.size(0) == 1, "SampleSearch::advance: expected [1, V] log-probs, got ",
              step_output.sizes());
  auto logprobs = step_output.to(torch::kCPU, torch::kFloat);                   // [1,V]
  if (options_.block_trigrams && t >= 3) {
    auto mask = torch::zeros_like(logprobs);
    trigrams_.add_mask(seq_, t, mask.data_ptr<float>());
    logprobs = logprobs + mask * -0.693 * 2.0;  // ln(1/2) * alpha, alpha = 2 (as written in the reference)
  }
  int64_t next = 0;
  float chosen = 0;
  if (options_.method != DecodingMethod::kSample) {
    auto [value, index] = torch::max(logprobs, 1);                             // [1], [1]
    next = index.item<int64_t>();
    chosen = value.item<float>();
  } else {
    auto scaled = logprobs / options_.temperature;
    auto probs = torch::softmax(scaled - scaled.logsumexp(-1, true), -1);     // Categorical(logits=...)
    next = at::multinomial(probs, 1, /*replacement=*/true, generator_).item<int64_t>();
    chosen = logprobs[0][next].item<float>();  // the model's log-prob (untempered), as the reference's seqLogprobs
  }
  seq_.push_back(next);
  hypothesis_.ids.push_back(next);
  hypothesis_.token_log_probs.push_back(chosen);
  hypothesis_.score += chosen;
  tokens_[0] = next;
  finished_ = next == kEos || steps() == options_.max_length;
}

}  // namespace search

std::unique_ptr<StudySearch> start_search(const DecodingOptions& options) {
  validate_decoding_options(options);
  if (options.beam_size > 1 && options.method != DecodingMethod::kSample) {
    return std::make_unique<search::BeamSearch>(options);
  }
  return std::make_unique<search::SampleSearch>(options);
}

}  // namespace cmn::model
