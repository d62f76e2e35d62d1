#pragma once
// cmn-eval --consistency (issue 14): what a run's image-report consistency scores say. From the predictions'
// "consistency" values: how many, their mean, the K lowest drafts (the ones a radiologist should read first),
// and, against the references' labels, how well the score ranks drafts whose labels are right above those whose
// labels are wrong (ROC AUC; a draft is right when its labels equal its reference's on every scored finding).
#include <cstddef>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace cmn::eval {

struct ScoredDraft {
  std::string id;
  std::string report;
  double consistency = 0.0;
  std::string reference;  // the reference text as scored (cleaned, truncated)
};

// "consistency": {"scored", "mean", "worst": [{"id", "consistency", "report"}...], and with labels
// "CE_right", "CE_wrong", "AUROC_right_vs_wrong" (null when one class is empty), "labels" naming the label set}.
// phantom: the phantom's six findings (cmn/metrics/labels.h); else CheXpert-14 U-zeros (chexpert_ce.h).
nlohmann::ordered_json consistency_summary(const std::vector<ScoredDraft>& drafts, size_t worst, bool labels,
                                           bool phantom);

}  // namespace cmn::eval
