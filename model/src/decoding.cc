#include "cmn/model/decoding.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include <ATen/CPUGeneratorImpl.h>

#include "cmn/model/decoding_rules.h"
#include "cmn/model/encoder_decoder.h"

namespace cmn::model {
namespace {

constexpr int64_t kEos = 0;  // bos = eos = pad = 0
constexpr int64_t kPad = 0;

// utils.penalty_builder: '' -> none; 'wu_a' -> GNMT length normalisation; 'avg_a' -> mean log-prob.
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

struct Beam {
  std::vector<int64_t> ids;
  std::vector<float> log_probs;
};

}  // namespace

void validate_decoding_options(const DecodingOptions& o) {
  const std::string problem = decoding_options_problem(o);
  TORCH_CHECK(problem.empty(), problem);
}

DecodeResult beam_search(StepModel& model, const DecodingOptions& o) {
  validate_decoding_options(o);
  const auto penalty = penalty_builder(o.length_penalty);
  const bool can_stop_early = o.early_stop && o.length_penalty.empty();
  const int64_t b = model.studies(), beam = o.beam_size;

  DecodeResult result;
  auto long_opts = torch::TensorOptions().dtype(torch::kLong);
  // First step: bos for each study, one row per study.
  auto logprobs = model.step(torch::full({b}, kEos, long_opts));       // [B,V]
  ++result.steps;
  const int64_t vocab = logprobs.size(-1);
  TORCH_CHECK(beam <= vocab, "beam_size ", beam, " exceeds the vocabulary (", vocab, ")");

  std::vector<std::vector<Beam>> beams(b, std::vector<Beam>(1));
  auto sums = torch::zeros({b, beam}, logprobs.options().device(torch::kCPU));  // beam_logprobs_sum
  struct Done {
    Beam beam;
    double p;
  };
  std::vector<std::vector<Done>> done(b);
  std::vector<double> best_done(b, -std::numeric_limits<double>::infinity());

  for (int64_t t = 0; t < o.max_length; ++t) {
    const int64_t rows = t == 0 ? 1 : beam;
    auto lp = logprobs.to(torch::kCPU).view({b, rows, vocab});                   // [B,rows,V]
    auto candidates = sums.narrow(1, 0, rows).unsqueeze(-1) + lp;                 // [B,rows,V]
    auto [ys, ix] = torch::sort(candidates.view({b, rows * vocab}), -1, /*descending=*/true);
    ys = ys.narrow(1, 0, beam).contiguous();                                      // [B,beam]
    ix = ix.narrow(1, 0, beam).contiguous();                                      // [B,beam]
    auto lp_flat = lp.view({b, rows * vocab}).gather(1, ix).contiguous();        // [B,beam]
    sums = ys.clone();  // == sums[beam_ix] + logprobs[ix], as the reference asserts

    const auto* ix_p = ix.data_ptr<int64_t>();
    const auto* lp_p = lp_flat.data_ptr<float>();
    auto state_ix = torch::empty({b * beam}, long_opts);
    auto* state_p = state_ix.data_ptr<int64_t>();
    auto next_tokens = torch::empty({b * beam}, long_opts);
    auto* next_p = next_tokens.data_ptr<int64_t>();
    auto* sums_p = sums.data_ptr<float>();

    for (int64_t s = 0; s < b; ++s) {
      std::vector<Beam> next(beam);
      for (int64_t k = 0; k < beam; ++k) {
        const int64_t flat = ix_p[s * beam + k];
        const int64_t parent = flat / vocab, word = flat % vocab;
        next[k] = beams[s][parent];
        next[k].ids.push_back(word);
        next[k].log_probs.push_back(lp_p[s * beam + k]);
        state_p[s * beam + k] = s * rows + parent;
        next_p[s * beam + k] = word;
      }
      beams[s] = std::move(next);
      // Record beams that ended (or all, at the last step); ended beams keep their slot, 1000 lower.
      for (int64_t k = 0; k < beam; ++k) {
        const bool ended = beams[s][k].ids.back() == kEos || t == o.max_length - 1;
        if (!ended) continue;
        const double p = penalty(t + 1, static_cast<double>(sums_p[s * beam + k]));
        done[s].push_back({beams[s][k], p});
        best_done[s] = std::max(best_done[s], p);
        sums_p[s * beam + k] -= 1000.0f;
      }
    }
    if (t == o.max_length - 1) break;

    if (can_stop_early) {
      bool all_settled = true;
      for (int64_t s = 0; s < b && all_settled; ++s) {
        const double best_live = sums[s].max().item<float>();
        all_settled = best_live <= best_done[s];
      }
      if (all_settled) break;
    }

    model.select_rows(state_ix, beam);
    logprobs = torch::log_softmax(model.step(next_tokens) / o.temperature, -1);  // [B*beam,V]
    ++result.steps;
  }

  for (int64_t s = 0; s < b; ++s) {
    // sorted(..., key=-p) is stable: among equal scores the earliest recorded wins.
    std::stable_sort(done[s].begin(), done[s].end(), [](const Done& x, const Done& y) { return x.p > y.p; });
    Hypothesis h;
    h.ids = done[s].front().beam.ids;
    h.token_log_probs = done[s].front().beam.log_probs;
    h.score = done[s].front().p;
    result.best.push_back(std::move(h));
  }
  return result;
}

DecodeResult sample(StepModel& model, const DecodingOptions& o) {
  validate_decoding_options(o);
  const int64_t b = model.studies();
  const bool greedy = o.method != DecodingMethod::kSample;
  auto long_opts = torch::TensorOptions().dtype(torch::kLong);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(o.seed);

  DecodeResult result;
  std::vector<Hypothesis> hyps(b);
  std::vector<std::vector<int64_t>> seq(b);  // what the reference's `seq` holds (pads after the end)
  std::vector<std::map<std::pair<int64_t, int64_t>, std::vector<int64_t>>> trigrams(b);
  std::vector<bool> unfinished(b, true);
  auto tokens = torch::full({b}, kEos, long_opts);

  for (int64_t t = 0; t < o.max_length; ++t) {
    auto logprobs = model.step(tokens).to(torch::kCPU);                         // [B,V]
    ++result.steps;
    if (o.block_trigrams && t >= 3) {
      auto mask = torch::zeros_like(logprobs);
      auto* m = mask.data_ptr<float>();
      const int64_t vocab = logprobs.size(1);
      for (int64_t s = 0; s < b; ++s) {
        // Store the trigram generated at the last step, then count continuations of the last two tokens.
        trigrams[s][{seq[s][t - 3], seq[s][t - 2]}].push_back(seq[s][t - 1]);
        auto it = trigrams[s].find({seq[s][t - 2], seq[s][t - 1]});
        if (it == trigrams[s].end()) continue;
        for (int64_t j : it->second) m[s * vocab + j] += 1.0f;
      }
      logprobs = logprobs + mask * -0.693 * 2.0;  // ln(1/2) * alpha, alpha = 2 (as written in the reference)
    }
    torch::Tensor next, chosen;
    if (greedy) {
      std::tie(chosen, next) = torch::max(logprobs, 1);                         // [B], [B]
    } else {
      auto scaled = logprobs / o.temperature;
      auto probs = torch::softmax(scaled - scaled.logsumexp(-1, true), -1);     // Categorical(logits=...)
      next = at::multinomial(probs, 1, /*replacement=*/true, generator).view({b});
      // Reported log-probs are the model's (untempered), as the reference's seqLogprobs.
      chosen = logprobs.gather(1, next.view({b, 1})).view({b});
    }
    auto* next_p = next.data_ptr<int64_t>();
    auto* chosen_p = chosen.data_ptr<float>();
    bool any_left = false;
    for (int64_t s = 0; s < b; ++s) {
      if (t > 0 && !unfinished[s]) next_p[s] = kPad;
      seq[s].push_back(next_p[s]);
      if (unfinished[s]) {
        hyps[s].ids.push_back(next_p[s]);
        hyps[s].token_log_probs.push_back(chosen_p[s]);
        hyps[s].score += chosen_p[s];
      }
      unfinished[s] = unfinished[s] && next_p[s] != kEos;
      any_left = any_left || unfinished[s];
    }
    if (!any_left) break;
    tokens = next;
  }
  result.best = std::move(hyps);
  return result;
}

DecodeResult decode(StepModel& model, const DecodingOptions& o) {
  if (o.beam_size > 1 && o.method != DecodingMethod::kSample) return beam_search(model, o);
  return sample(model, o);
}

CmnStepModel::CmnStepModel(BaseCMNImpl& model, const torch::Tensor& memory, bool keep_attention)
    : model_(model), cache_(std::make_unique<DecoderCache>(model.start_decoding(memory, keep_attention))) {}
CmnStepModel::~CmnStepModel() = default;
int64_t CmnStepModel::studies() const { return cache_->studies; }
torch::Tensor CmnStepModel::step(const torch::Tensor& tokens) {
  return model_.decode_step(tokens.to(model_.logit->weight.device()), *cache_);
}
void CmnStepModel::select_rows(const torch::Tensor& rows, int64_t rows_per_study) {
  BaseCMNImpl::select_rows(*cache_, rows.to(model_.logit->weight.device()), rows_per_study);
}
const DecoderCache& CmnStepModel::cache() const { return *cache_; }

}  // namespace cmn::model
