// Trainer::evaluate: loss, decoded reports and scores (BLEU/METEOR/ROUGE/CIDEr and clinical efficacy when
// cmn_metrics is built) on one split; EvalResult::metric.
#include "cmn/train/trainer.h"

#include <algorithm>
#include <string>
#include <vector>

#include "cmn/train/loss.h"
#include "cmn/train/model_setup.h"
#include "trainer_internal.h"

#ifdef CMN_HAVE_METRICS
#include "cmn/metrics/chexpert_ce.h"
#include "cmn/metrics/labels.h"
#include "cmn/metrics/metrics.h"
#endif

namespace cmn::train {

namespace trainer_detail {

std::string reference_text(const model::Tokenizer& tokenizer, const std::vector<int64_t>& ids) {
  if (ids.size() <= 1) return std::string();
  return tokenizer.decode(std::vector<int64_t>(ids.begin() + 1, ids.end()));  // decode(reports_ids[:, 1:])
}

}  // namespace trainer_detail

using trainer_detail::kNaN;
using trainer_detail::reference_text;

double EvalResult::metric(const std::string& name) const {
  if (name == "loss") return loss;
  for (const auto& [k, v] : scores) {
    if (k == name) return v;
  }
  return kNaN;
}

EvalResult Trainer::evaluate(const std::string& split) {
  EvalResult result;
  result.split = split;
  auto& data = loader(split);
  const bool was_training = model_->is_training();
  model_->eval();
  model_->reset_inference_cache();
  torch::NoGradGuard no_grad;
  const auto decoding = model::decoding_options_from(model_->config());
  double loss_sum = 0.0;
  int64_t loss_batches = 0;
  if (config_.trainer.cache_visual_features) {
    const FeatureCache& cache = features(split);
    const int64_t n = cache.att.size(0);
    const int64_t bs = config_.trainer.eval_batch_size > 0 ? config_.trainer.eval_batch_size : config_.data.batch_size;
    for (int64_t b0 = 0; b0 < n; b0 += bs) {
      const int64_t b1 = std::min(n, b0 + bs);
      auto att = cache.att.slice(0, b0, b1);  // [B,V*49,d_vf]
      const std::vector<int64_t> examples(cache.example.begin() + b0, cache.example.begin() + b1);
      auto [targets, masks] = targets_for(data, examples);
      loss_sum += language_model_loss(model_->encoder_decoder->forward(att, targets), targets, masks).item<double>();
      ++loss_batches;
      auto decoded = model_->infer_features(att, decoding).decoded;  // the one inference pass, trunk cached
      for (size_t i = 0; i < decoded.best.size(); ++i) {
        const auto& example = data.examples()[static_cast<size_t>(examples[i])];
        result.ids.push_back(example.id);
        result.predictions.push_back(tokenizer_.decode(decoded.best[i].ids));
        result.references.push_back(reference_text(tokenizer_, example.ids));
      }
    }
  }
  if (!config_.trainer.cache_visual_features) data.start_epoch(0);
  while (!config_.trainer.cache_visual_features) {
    auto batch = data.next();
    if (!batch) break;
    for (const auto& m : batch->skipped) LOG(WARNING) << m;
    const auto images = batch->images.to(device_);    // [B,V,3,H,W]
    const auto targets = batch->targets.to(device_);  // [B,L]
    auto log_probs = model_->forward(images, targets);
    loss_sum += language_model_loss(log_probs, targets, batch->masks.to(device_)).item<double>();
    ++loss_batches;
    auto decoded = model_->generate(images, decoding);
    for (size_t i = 0; i < decoded.best.size(); ++i) {
      const auto& example = data.examples()[static_cast<size_t>(batch->indices[i])];
      result.ids.push_back(example.id);
      result.predictions.push_back(tokenizer_.decode(decoded.best[i].ids));
      result.references.push_back(reference_text(tokenizer_, example.ids));
    }
  }
  result.loss = loss_batches > 0 ? loss_sum / loss_batches : kNaN;
#ifdef CMN_HAVE_METRICS
  if (!result.predictions.empty()) {
    std::vector<metrics::Example> examples;
    for (size_t i = 0; i < result.predictions.size(); ++i) examples.push_back({result.predictions[i], {result.references[i]}});
    result.scores = metrics::evaluate(examples).named();
    // Clinical efficacy on CheXpert's 14 observations, U-zeros as R2GenCMN (issue 12): CE_F1_MACRO, CE_F1_MICRO,
    // CE_PRECISION_*, CE_RECALL_*, CE_AVG_AUCROC (NaN when a column of the references has one class).
    const auto ce = metrics::chexpert_ce(result.references, result.predictions, metrics::UncertainPolicy::kZeros);
    for (const auto& [name, value] : ce.named()) {
      if (name.rfind("AUCROC_", 0) == 0) continue;  // per-observation AUROCs: cmn-eval --clinical
      result.scores.emplace_back("CE_" + name, value);
    }
    // The phantom benchmark's six findings (issue 8; granuloma and degenerative spine are not CheXpert
    // observations): CE_phantom_macro_F1, CE_phantom_micro_F1, ..., CE_phantom_<finding>_F1.
    for (const auto& [name, value] : metrics::clinical_efficacy(result.predictions, result.references).named()) {
      result.scores.emplace_back("CE_phantom_" + name.substr(3), value);
    }
  }
#else
  // HOOK(metrics): built without train/metrics (cmn_metrics): no BLEU/METEOR/ROUGE/CIDEr; selection on "loss" only.
#endif
  if (was_training) train_mode(*model_);
  return result;
}

}  // namespace cmn::train
