// The trainer's image-report alignment losses (issue 14, cmn/model/alignment.h): ITC + ITM per batch, as a
// pre-training stage or beside the cross-entropy, and their per-epoch means in metrics.jsonl.
#include <set>
#include <vector>

#include "cmn/model/alignment.h"
#include "cmn/train/trainer.h"
#include "trainer_internal.h"

#ifdef CMN_HAVE_METRICS
#include "cmn/metrics/chexpert.h"
#include "cmn/metrics/chexpert_ce.h"
#include "cmn/metrics/labels.h"
#endif

namespace cmn::train {

torch::Tensor Trainer::same_findings(const std::vector<int64_t>& examples) {
#ifdef CMN_HAVE_METRICS
  if (!config_.align.label_positives) return {};
  const auto& data = loader("train");
  if (train_findings_.empty()) {
    // Once per run: each training reference as the trainer scores it, labelled by both labelers (binary).
    for (const auto& e : data.examples()) {
      const std::string text = trainer_detail::reference_text(tokenizer_, e.ids);
      std::vector<bool> bits;
      for (auto m : metrics::chexpert_label(text)) bits.push_back(metrics::binary_label(m, metrics::UncertainPolicy::kZeros));
      for (auto l : metrics::extract_labels(text)) bits.push_back(metrics::is_positive(l));
      train_findings_.push_back(std::move(bits));
    }
  }
  const auto b = static_cast<int64_t>(examples.size());
  auto same = torch::zeros({b, b}, torch::kBool);
  auto a = same.accessor<bool, 2>();
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < b; ++j) {
      a[i][j] = train_findings_[static_cast<size_t>(examples[static_cast<size_t>(i)])] ==
                train_findings_[static_cast<size_t>(examples[static_cast<size_t>(j)])];
    }
  }
  return same.to(device_);
#else
  (void)examples;
  return {};
#endif
}

torch::Tensor Trainer::add_alignment_loss(const torch::Tensor& loss, const torch::Tensor& memory,
                                          const torch::Tensor& targets, const std::vector<int64_t>& examples,
                                          bool only) {
  if (memory.size(0) < 2) return loss;  // in-batch negatives need a second study
  const auto a = model::alignment_losses(*model_->alignment, *model_->encoder_decoder, memory, targets,
                                         same_findings(examples));
  align_stats_.itc += a.itc.item<double>();
  align_stats_.itm += a.itm.item<double>();
  align_stats_.itc_accuracy += a.itc_accuracy;
  ++align_stats_.batches;
  // Pre-training weighs the two as BLIP-2 does (1:1); afterwards the recipe's weights, beside the cross-entropy.
  if (only) return a.itc + a.itm;
  auto total = loss;
  if (config_.align.itc_weight > 0) total = total + config_.align.itc_weight * a.itc;
  if (config_.align.itm_weight > 0) total = total + config_.align.itm_weight * a.itm;
  return total;
}

void Trainer::add_alignment_log(EpochLog& log) const {
  if (align_stats_.batches == 0) return;
  const double n = static_cast<double>(align_stats_.batches);
  log.values["train_itc"] = align_stats_.itc / n;
  log.values["train_itm"] = align_stats_.itm / n;
  log.values["train_itc_accuracy"] = align_stats_.itc_accuracy / n;
}

void Trainer::build_retrieval_index() {
  const auto& examples = loader("train").examples();
  std::set<std::vector<int64_t>> distinct;  // token ids without bos/eos; ordered, so the index is reproducible
  for (const auto& e : examples) {
    if (e.ids.size() > 2) distinct.emplace(e.ids.begin() + 1, e.ids.end() - 1);  // (0, w1..wn, 0) -> w1..wn
  }
  TORCH_CHECK(!distinct.empty(), "align.retrieval_index: the train split has no report to index");
  size_t longest = 0;
  for (const auto& ids : distinct) longest = std::max(longest, ids.size());
  auto tokens = torch::zeros({static_cast<int64_t>(distinct.size()), static_cast<int64_t>(longest)}, torch::kLong);
  auto a = tokens.accessor<int64_t, 2>();
  int64_t row = 0;
  for (const auto& ids : distinct) {
    for (size_t t = 0; t < ids.size(); ++t) a[row][static_cast<int64_t>(t)] = ids[t];
    ++row;
  }
  model_->eval();
  const auto embeddings = model::embed_reports(*model_->alignment, *model_->encoder_decoder, tokens.to(device_));  // [N,e]
  model_->set_retrieval_index(embeddings.to(torch::kCPU), tokens);
  model_->to(device_);
  LOG(INFO) << "retrieval index: " << distinct.size() << " distinct training reports (of " << examples.size() << ")";
}

}  // namespace cmn::train
