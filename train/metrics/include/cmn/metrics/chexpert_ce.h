#pragma once
// Clinical efficacy (CE) on CheXpert's 14 observations, computed as R2GenCMN's compute_ce.py does
// (modules/metrics.py compute_mlc on two label tables):
//   - both tables: blank (NaN) -> 0; uncertain -1 -> 0 ("U-zeros", R2GenCMN's choice) or -> 1 ("U-ones");
//   - over the 14 columns (No Finding included), sklearn's precision_score / recall_score / f1_score with
//     average="macro" (unweighted mean of the per-column values) and "micro" (from tp/fp/fn summed over the
//     columns); a 0/0 precision, recall or F1 counts 0 (sklearn's zero_division default);
//   - per column roc_auc_score(gt, pred) on the binary predictions, i.e. (TP*TN + (TP*FP + FN*TN)/2) / (P*N),
//     and AVG_AUCROC their mean. When a column of the references holds one class only, roc_auc_score raises
//     ValueError and compute_ce.py stops with no numbers at all; here that column's AUCROC and AVG_AUCROC are
//     NaN (JSON null) and the other numbers are still given.
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "cmn/metrics/chexpert.h"

namespace cmn::metrics {

enum class UncertainPolicy { kZeros, kOnes };
// "zeros" / "ones" (the --uncertain values), and a sentence for outputs.
const char* uncertain_policy_name(UncertainPolicy policy);
const char* uncertain_policy_description(UncertainPolicy policy);
// Throws std::invalid_argument unless "zeros" or "ones".
UncertainPolicy parse_uncertain_policy(const std::string& name);

// The binary value compute_ce.py scores a cell as.
bool binary_label(Mention m, UncertainPolicy policy);

struct ChexpertCe {
  UncertainPolicy policy = UncertainPolicy::kZeros;
  int64_t examples = 0;
  std::array<int64_t, kNumObservations> tp{}, fp{}, fn{}, tn{};
  std::array<double, kNumObservations> precision{}, recall{}, f1{}, auroc{};  // auroc NaN when undefined
  double f1_macro = 0, f1_micro = 0, precision_macro = 0, precision_micro = 0, recall_macro = 0, recall_micro = 0;
  double avg_auroc = 0;  // NaN when any column's AUROC is undefined

  // ("F1_MACRO", v), ("F1_MICRO", v), ("PRECISION_MACRO", v), ("PRECISION_MICRO", v), ("RECALL_MACRO", v),
  // ("RECALL_MICRO", v), ("AVG_AUCROC", v), ("AUCROC_<observation>", v) x 14: compute_ce.py's keys.
  std::vector<std::pair<std::string, double>> named() const;
};

// `references` (gts) and `predictions` (res) row by row; same length (else std::invalid_argument).
ChexpertCe chexpert_ce(const std::vector<ChexpertLabels>& references, const std::vector<ChexpertLabels>& predictions,
                       UncertainPolicy policy = UncertainPolicy::kZeros);
// Labels both report lists with chexpert_label first.
ChexpertCe chexpert_ce(const std::vector<std::string>& references, const std::vector<std::string>& predictions,
                       UncertainPolicy policy = UncertainPolicy::kZeros);

}  // namespace cmn::metrics
