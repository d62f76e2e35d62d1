// pycocoevalcap cider/cider_scorer.py (salaniz/pycocoevalcap, the Python 3 package R2Gen-era code installs),
// CIDEr-D as Vedantam's scorer computes it: clipped tf-idf cosine per n-gram order, Gaussian length
// penalty with sigma 6, document frequencies from the reference sets given to the scorer.
//
// Dict iteration order matters for the last bits of a float sum, so n-grams are kept in the order Python's
// defaultdict would hold them (first occurrence in precook's loops: k = 1..n, then left to right).
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cmn/metrics/metrics.h"
#include "text_util.h"

namespace cmn::metrics {
namespace {

struct NgramCount {
  std::string key;  // words joined by '\x1f'
  int order;        // 0-based: len(ngram) - 1
  double count;
};

// precook(): n-gram counts in insertion order.
std::vector<NgramCount> precook(const std::string& sentence, int n) {
  const std::vector<std::string> words = detail::py_split(sentence);
  std::vector<NgramCount> out;
  std::unordered_map<std::string, std::size_t> index;
  for (int k = 1; k <= n; ++k) {
    const int64_t count = static_cast<int64_t>(words.size()) - k + 1;
    for (int64_t i = 0; i < count; ++i) {
      std::string key = words[static_cast<std::size_t>(i)];
      for (int j = 1; j < k; ++j) {
        key += '\x1f';
        key += words[static_cast<std::size_t>(i + j)];
      }
      const auto [it, inserted] = index.emplace(key, out.size());
      if (inserted) {
        out.push_back({std::move(key), k - 1, 1.0});
      } else {
        out[it->second].count += 1.0;
      }
    }
  }
  return out;
}

// counts2vec(): tf-idf weights per order (insertion order kept), their norms, and the scorer's "length",
// which is the number of bigrams (`if n == 1: length += term_freq`, n being the 0-based order).
struct TfIdf {
  std::vector<std::vector<std::pair<const std::string*, double>>> items;  // per order
  std::unordered_map<std::string, double> weight;                         // all orders (keys are distinct)
  std::vector<double> norm;
  double length = 0;
};

}  // namespace

namespace {

TfIdf counts2vec(const std::vector<NgramCount>& cnts, int n, double ref_len,
                 const std::unordered_map<std::string, double>& df) {
  TfIdf v;
  v.items.resize(static_cast<std::size_t>(n));
  v.norm.assign(static_cast<std::size_t>(n), 0.0);
  v.weight.reserve(cnts.size());
  for (const NgramCount& g : cnts) {
    const auto it = df.find(g.key);
    const double d = std::log(std::max(1.0, it == df.end() ? 0.0 : it->second));
    const std::size_t o = static_cast<std::size_t>(g.order);
    const double w = g.count * (ref_len - d);
    v.items[o].emplace_back(&g.key, w);
    v.weight.emplace(g.key, w);
    v.norm[o] += std::pow(w, 2);
    if (g.order == 1) v.length += g.count;
  }
  for (double& x : v.norm) x = std::sqrt(x);
  return v;
}

}  // namespace

CiderD::CiderD(const std::vector<std::vector<std::string>>& reference_sets, int n, double sigma)
    : n_(n), sigma_(sigma) {
  if (n < 1) throw std::invalid_argument("cider: n must be >= 1");
  // compute_doc_freq(): each image counts once per n-gram found in any of its references.
  for (const std::vector<std::string>& refs : reference_sets) {
    std::unordered_set<std::string> seen;
    for (const std::string& ref : refs) {
      for (NgramCount& g : precook(ref, n)) seen.insert(std::move(g.key));
    }
    for (const std::string& key : seen) df_[key] += 1.0;
  }
  ref_len_ = std::log(static_cast<double>(reference_sets.size()));
}

double CiderD::log_df(const std::string& ngram) const {
  std::string key;
  for (const std::string& w : detail::py_split(ngram)) {
    if (!key.empty()) key += '\x1f';
    key += w;
  }
  const auto it = df_.find(key);
  return std::log(std::max(1.0, it == df_.end() ? 0.0 : it->second));
}

double CiderD::score(const std::string& hypothesis, const std::vector<std::string>& references) const {
  if (references.empty()) throw std::invalid_argument("cider: an example has no reference");
  const std::vector<NgramCount> test = precook(hypothesis, n_);
  const TfIdf vec = counts2vec(test, n_, ref_len_, df_);
  std::vector<double> score(static_cast<std::size_t>(n_), 0.0);
  for (const std::string& ref_text : references) {
    const std::vector<NgramCount> ref = precook(ref_text, n_);
    const TfIdf vec_ref = counts2vec(ref, n_, ref_len_, df_);
    // sim()
    const double delta = vec.length - vec_ref.length;
    for (std::size_t o = 0; o < static_cast<std::size_t>(n_); ++o) {
      double val = 0.0;
      for (const auto& [key, h] : vec.items[o]) {
        const auto it = vec_ref.weight.find(*key);
        const double r = it == vec_ref.weight.end() ? 0.0 : it->second;
        val += std::min(h, r) * r;  // vrama91: clipping
      }
      if (vec.norm[o] != 0 && vec_ref.norm[o] != 0) val /= (vec.norm[o] * vec_ref.norm[o]);
      // vrama91: length-based Gaussian penalty, np.e ** (-(delta ** 2) / (2 * sigma ** 2))
      val *= std::pow(2.718281828459045, -std::pow(delta, 2) / (2 * std::pow(sigma_, 2)));
      score[o] = score[o] + val;
    }
  }
  // np.mean over the orders (fewer than 8 values: a plain left-to-right sum), / #refs, * 10.
  double score_avg = detail::numpy_mean(score);
  score_avg /= static_cast<double>(references.size());
  score_avg *= 10.0;
  return score_avg;
}

CorpusScore cider_d(const std::vector<Example>& examples, int n, double sigma) {
  std::vector<std::vector<std::string>> sets;
  sets.reserve(examples.size());
  for (const Example& ex : examples) {
    if (ex.references.empty()) throw std::invalid_argument("cider: an example has no reference");
    sets.push_back(ex.references);
  }
  const CiderD scorer(sets, n, sigma);
  CorpusScore r;
  r.per_image.reserve(examples.size());
  for (const Example& ex : examples) r.per_image.push_back(scorer.score(ex.hypothesis, ex.references));
  r.score = detail::numpy_mean(r.per_image);
  return r;
}

}  // namespace cmn::metrics
