#include "eval_consistency.h"

#include <algorithm>

#include "cmn/metrics/chexpert.h"
#include "cmn/metrics/chexpert_ce.h"
#include "cmn/metrics/labels.h"
#include "cmn/metrics/ranking.h"

namespace cmn::eval {

namespace {

// True when the draft states every scored finding as its reference does (binary decisions, as CE scores them).
bool labels_agree(const std::string& draft, const std::string& reference, bool phantom) {
  if (phantom) {
    const auto a = metrics::extract_labels(draft), b = metrics::extract_labels(reference);
    for (size_t i = 0; i < a.size(); ++i) {
      if (metrics::is_positive(a[i]) != metrics::is_positive(b[i])) return false;
    }
    return true;
  }
  const auto a = metrics::chexpert_label(draft), b = metrics::chexpert_label(reference);
  for (size_t i = 0; i < a.size(); ++i) {
    if (metrics::binary_label(a[i], metrics::UncertainPolicy::kZeros) !=
        metrics::binary_label(b[i], metrics::UncertainPolicy::kZeros)) {
      return false;
    }
  }
  return true;
}

}  // namespace

nlohmann::ordered_json consistency_summary(const std::vector<ScoredDraft>& drafts, size_t worst, bool labels,
                                           bool phantom) {
  nlohmann::ordered_json out;
  out["scored"] = drafts.size();
  double sum = 0.0;
  for (const auto& d : drafts) sum += d.consistency;
  out["mean"] = drafts.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(sum / static_cast<double>(drafts.size()));
  std::vector<const ScoredDraft*> order;
  for (const auto& d : drafts) order.push_back(&d);
  // Lowest first; ties by id, so the list is the same on every run.
  std::sort(order.begin(), order.end(), [](const ScoredDraft* a, const ScoredDraft* b) {
    return a->consistency != b->consistency ? a->consistency < b->consistency : a->id < b->id;
  });
  auto list = nlohmann::ordered_json::array();
  for (size_t i = 0; i < std::min(worst, order.size()); ++i) {
    list.push_back({{"id", order[i]->id}, {"consistency", order[i]->consistency}, {"report", order[i]->report}});
  }
  out["worst"] = std::move(list);
  if (labels) {
    std::vector<double> scores;
    std::vector<bool> right;
    for (const auto& d : drafts) {
      scores.push_back(d.consistency);
      right.push_back(labels_agree(d.report, d.reference, phantom));
    }
    const auto n_right = std::count(right.begin(), right.end(), true);
    out["labels"] = phantom ? "phantom six findings" : "CheXpert-14, U-zeros";
    out["CE_right"] = n_right;
    out["CE_wrong"] = static_cast<int64_t>(right.size()) - n_right;
    const auto auc = metrics::roc_auc(scores, right);
    out["AUROC_right_vs_wrong"] = auc ? nlohmann::ordered_json(*auc) : nlohmann::ordered_json(nullptr);
  }
  return out;
}

}  // namespace cmn::eval
