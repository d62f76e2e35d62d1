#include "cmn/metrics/chexpert_ce.h"

#include <limits>
#include <stdexcept>

namespace cmn::metrics {
namespace {

double ratio(int64_t num, int64_t den) { return den == 0 ? 0.0 : static_cast<double>(num) / static_cast<double>(den); }
double f1_of(double p, double r) { return p + r == 0.0 ? 0.0 : 2.0 * p * r / (p + r); }

}  // namespace

const char* uncertain_policy_name(UncertainPolicy p) { return p == UncertainPolicy::kZeros ? "zeros" : "ones"; }

const char* uncertain_policy_description(UncertainPolicy p) {
  return p == UncertainPolicy::kZeros ? "U-zeros: uncertain (-1) and blank count as negative (R2GenCMN compute_ce.py)"
                                      : "U-ones: uncertain (-1) counts as positive, blank as negative";
}

UncertainPolicy parse_uncertain_policy(const std::string& name) {
  if (name == "zeros") return UncertainPolicy::kZeros;
  if (name == "ones") return UncertainPolicy::kOnes;
  throw std::invalid_argument("uncertainty policy '" + name + "' is not zeros or ones");
}

bool binary_label(Mention m, UncertainPolicy policy) {
  return m == Mention::kPositive || (m == Mention::kUncertain && policy == UncertainPolicy::kOnes);
}

ChexpertCe chexpert_ce(const std::vector<ChexpertLabels>& gts, const std::vector<ChexpertLabels>& res,
                       UncertainPolicy policy) {
  if (gts.size() != res.size()) {
    throw std::invalid_argument("clinical efficacy: " + std::to_string(gts.size()) + " reference rows but " +
                                std::to_string(res.size()) + " prediction rows");
  }
  ChexpertCe ce;
  ce.policy = policy;
  ce.examples = static_cast<int64_t>(gts.size());
  const double nan = std::numeric_limits<double>::quiet_NaN();
  int64_t tp = 0, fp = 0, fn = 0;
  double auroc_sum = 0.0;
  bool auroc_defined = true;
  for (std::size_t k = 0; k < static_cast<std::size_t>(kNumObservations); ++k) {
    for (std::size_t i = 0; i < gts.size(); ++i) {
      const bool g = binary_label(gts[i][k], policy);
      const bool p = binary_label(res[i][k], policy);
      ce.tp[k] += g && p;
      ce.fp[k] += !g && p;
      ce.fn[k] += g && !p;
      ce.tn[k] += !g && !p;
    }
    ce.precision[k] = ratio(ce.tp[k], ce.tp[k] + ce.fp[k]);
    ce.recall[k] = ratio(ce.tp[k], ce.tp[k] + ce.fn[k]);
    ce.f1[k] = f1_of(ce.precision[k], ce.recall[k]);
    const int64_t pos = ce.tp[k] + ce.fn[k], neg = ce.fp[k] + ce.tn[k];
    if (pos == 0 || neg == 0) {
      ce.auroc[k] = nan;
      auroc_defined = false;
    } else {
      // Mann-Whitney: a (positive, negative) pair scores 1 when ordered, 1/2 when tied.
      const double ordered = static_cast<double>(ce.tp[k]) * static_cast<double>(ce.tn[k]);
      const double tied = static_cast<double>(ce.tp[k]) * static_cast<double>(ce.fp[k]) +
                          static_cast<double>(ce.fn[k]) * static_cast<double>(ce.tn[k]);
      ce.auroc[k] = (ordered + 0.5 * tied) / (static_cast<double>(pos) * static_cast<double>(neg));
      auroc_sum += ce.auroc[k];
    }
    ce.precision_macro += ce.precision[k];
    ce.recall_macro += ce.recall[k];
    ce.f1_macro += ce.f1[k];
    tp += ce.tp[k];
    fp += ce.fp[k];
    fn += ce.fn[k];
  }
  ce.precision_macro /= kNumObservations;
  ce.recall_macro /= kNumObservations;
  ce.f1_macro /= kNumObservations;
  ce.precision_micro = ratio(tp, tp + fp);
  ce.recall_micro = ratio(tp, tp + fn);
  ce.f1_micro = f1_of(ce.precision_micro, ce.recall_micro);
  ce.avg_auroc = auroc_defined ? auroc_sum / kNumObservations : nan;
  return ce;
}

ChexpertCe chexpert_ce(const std::vector<std::string>& references, const std::vector<std::string>& predictions,
                       UncertainPolicy policy) {
  if (references.size() != predictions.size()) {
    throw std::invalid_argument("clinical efficacy: " + std::to_string(references.size()) + " references but " +
                                std::to_string(predictions.size()) + " predictions");
  }
  std::vector<ChexpertLabels> g, r;
  g.reserve(references.size());
  r.reserve(predictions.size());
  for (const auto& s : references) g.push_back(chexpert_label(s));
  for (const auto& s : predictions) r.push_back(chexpert_label(s));
  return chexpert_ce(g, r, policy);
}

std::vector<std::pair<std::string, double>> ChexpertCe::named() const {
  std::vector<std::pair<std::string, double>> out = {
      {"F1_MACRO", f1_macro},         {"F1_MICRO", f1_micro},         {"PRECISION_MACRO", precision_macro},
      {"PRECISION_MICRO", precision_micro}, {"RECALL_MACRO", recall_macro}, {"RECALL_MICRO", recall_micro},
      {"AVG_AUCROC", avg_auroc}};
  for (std::size_t k = 0; k < static_cast<std::size_t>(kNumObservations); ++k) {
    out.emplace_back("AUCROC_" + observation_names()[k], auroc[k]);
  }
  return out;
}

}  // namespace cmn::metrics
