// pycocoevalcap rouge/rouge.py: ROUGE-L with beta = 1.2 (Vedantam's value), tokens from str.split(" ").
#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "cmn/metrics/metrics.h"
#include "text_util.h"

namespace cmn::metrics {
namespace {

// my_lcs(): length of the longest common subsequence (one rolling row of the reference's table).
std::size_t lcs_length(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  const std::vector<std::string>& longer = a.size() >= b.size() ? a : b;
  const std::vector<std::string>& shorter = a.size() >= b.size() ? b : a;
  std::vector<std::size_t> prev(shorter.size() + 1, 0), cur(shorter.size() + 1, 0);
  for (std::size_t i = 1; i <= longer.size(); ++i) {
    for (std::size_t j = 1; j <= shorter.size(); ++j) {
      cur[j] = longer[i - 1] == shorter[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    }
    std::swap(prev, cur);
  }
  return prev[shorter.size()];
}

}  // namespace

double rouge_l_sentence(const std::string& candidate, const std::vector<std::string>& references, double beta) {
  if (references.empty()) throw std::invalid_argument("rouge_l: an example has no reference");
  const std::vector<std::string> token_c = detail::py_split_space(candidate);
  double prec_max = 0.0, rec_max = 0.0;
  bool first = true;
  for (const std::string& reference : references) {
    const std::vector<std::string> token_r = detail::py_split_space(reference);
    const double lcs = static_cast<double>(lcs_length(token_r, token_c));
    const double prec = lcs / static_cast<double>(token_c.size());
    const double rec = lcs / static_cast<double>(token_r.size());
    prec_max = first ? prec : std::max(prec_max, prec);
    rec_max = first ? rec : std::max(rec_max, rec);
    first = false;
  }
  if (prec_max != 0 && rec_max != 0) {
    const double b2 = beta * beta;  // self.beta ** 2
    return ((1 + b2) * prec_max * rec_max) / (rec_max + b2 * prec_max);
  }
  return 0.0;
}

CorpusScore rouge_l(const std::vector<Example>& examples, double beta) {
  CorpusScore r;
  r.per_image.reserve(examples.size());
  for (const Example& ex : examples) r.per_image.push_back(rouge_l_sentence(ex.hypothesis, ex.references, beta));
  r.score = detail::numpy_mean(r.per_image);
  return r;
}

}  // namespace cmn::metrics
