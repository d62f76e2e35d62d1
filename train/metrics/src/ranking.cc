#include "cmn/metrics/ranking.h"

#include <algorithm>
#include <cstddef>
#include <numeric>
#include <stdexcept>

namespace cmn::metrics {

std::optional<double> roc_auc(const std::vector<double>& scores, const std::vector<bool>& positive) {
  if (scores.size() != positive.size()) throw std::invalid_argument("roc_auc: scores and labels differ in length");
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  // Average ranks (1-based) over ties, then U = sum of the positives' ranks - P(P+1)/2.
  double rank_sum = 0.0;
  double n_pos = 0.0, n_neg = 0.0;
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j < order.size() && scores[order[j]] == scores[order[i]]) ++j;
    const double average_rank = (static_cast<double>(i + 1) + static_cast<double>(j)) / 2.0;
    for (size_t k = i; k < j; ++k) {
      if (positive[order[k]]) {
        rank_sum += average_rank;
        n_pos += 1.0;
      } else {
        n_neg += 1.0;
      }
    }
    i = j;
  }
  if (n_pos == 0.0 || n_neg == 0.0) return std::nullopt;
  return (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg);
}

}  // namespace cmn::metrics
