#pragma once
// Ranking quality of a score: ROC AUC as sklearn's roc_auc_score computes it for a binary target (the
// Mann-Whitney U statistic over P*N pairs, a tie counting one half). Used to prove what the image-report
// consistency separates (issue 14): matched vs mismatched pairs, right vs wrong drafts.
#include <optional>
#include <vector>

namespace cmn::metrics {

// P(score of a random positive > score of a random negative) + 0.5 * P(tie). nullopt when either class is
// empty (sklearn raises there). scores and positive have the same length.
std::optional<double> roc_auc(const std::vector<double>& scores, const std::vector<bool>& positive);

}  // namespace cmn::metrics
