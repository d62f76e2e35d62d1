#include "cmn/model/decoding.h"

#include <utility>

#include <ATen/CPUGeneratorImpl.h>

#include "cmn/model/decoding_rules.h"
#include "cmn/model/encoder_decoder.h"
#include "search_states.h"

namespace cmn::model {
namespace {

constexpr int64_t kEos = 0;  // bos = eos = pad = 0
constexpr int64_t kPad = 0;

}  // namespace

void validate_decoding_options(const DecodingOptions& o) {
  const std::string problem = decoding_options_problem(o);
  TORCH_CHECK(problem.empty(), problem);
}

DecodeResult beam_search(StepModel& model, const DecodingOptions& o) {
  validate_decoding_options(o);
  const int64_t b = model.studies(), beam = o.beam_size;
  std::vector<search::BeamSearch> studies(static_cast<size_t>(b), search::BeamSearch(o));

  DecodeResult result;
  auto long_opts = torch::TensorOptions().dtype(torch::kLong);
  // First step: bos for each study, one row per study; then `beam` rows per study.
  auto out = model.step(torch::full({b}, kEos, long_opts));                  // [B*rows,V]
  ++result.steps;
  while (true) {
    const int64_t rows = out.size(0) / b;
    bool all_finished = true;
    for (int64_t s = 0; s < b; ++s) {
      auto& study = studies[static_cast<size_t>(s)];
      study.advance(out.narrow(0, s * rows, rows));                             // [rows,V]
      all_finished = all_finished && study.finished();
    }
    // Studies that finished early (early_stop) keep stepping beside the others: nothing later changes their
    // best hypothesis, and the batch keeps its shape.
    if (all_finished) break;
    auto state_ix = torch::empty({b * beam}, long_opts);
    auto next_tokens = torch::empty({b * beam}, long_opts);
    auto* state_p = state_ix.data_ptr<int64_t>();
    auto* next_p = next_tokens.data_ptr<int64_t>();
    for (int64_t s = 0; s < b; ++s) {
      const auto& study = studies[static_cast<size_t>(s)];
      for (int64_t k = 0; k < beam; ++k) {
        state_p[s * beam + k] = s * rows + study.parents()[static_cast<size_t>(k)];
        next_p[s * beam + k] = study.tokens()[static_cast<size_t>(k)];
      }
    }
    model.select_rows(state_ix, beam);
    out = model.step(next_tokens);                                              // [B*beam,V]
    ++result.steps;
  }
  for (const auto& study : studies) result.best.push_back(study.best());
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
  std::vector<search::TrigramBlocker> trigrams(static_cast<size_t>(b));
  std::vector<bool> unfinished(b, true);
  auto tokens = torch::full({b}, kEos, long_opts);

  for (int64_t t = 0; t < o.max_length; ++t) {
    auto logprobs = model.step(tokens).to(torch::kCPU);                         // [B,V]
    ++result.steps;
    if (o.block_trigrams && t >= 3) {
      auto mask = torch::zeros_like(logprobs);
      auto* m = mask.data_ptr<float>();
      const int64_t vocab = logprobs.size(1);
      for (int64_t s = 0; s < b; ++s) trigrams[s].add_mask(seq[s], t, m + s * vocab);
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
