// pycocoevalcap bleu/bleu_scorer.py (David Chiang's scorer as modified for COCO), compute_score with
// option='closest', operation for operation so that the doubles come out identical.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "cmn/metrics/metrics.h"
#include "text_util.h"

namespace cmn::metrics {
namespace {

// precook(): counts of every k-gram (k = 1..n), one map per k. Keys join words with '\x1f', which
// str.split() never leaves inside a word.
using NgramCounts = std::vector<std::unordered_map<std::string, int64_t>>;

NgramCounts precook(const std::vector<std::string>& words, int n) {
  NgramCounts counts(static_cast<std::size_t>(n));
  for (int k = 1; k <= n; ++k) {
    const int64_t count = static_cast<int64_t>(words.size()) - k + 1;
    for (int64_t i = 0; i < count; ++i) {
      std::string key = words[static_cast<std::size_t>(i)];
      for (int j = 1; j < k; ++j) {
        key += '\x1f';
        key += words[static_cast<std::size_t>(i + j)];
      }
      ++counts[static_cast<std::size_t>(k - 1)][key];
    }
  }
  return counts;
}

struct CookedTest {
  int64_t testlen = 0;
  std::vector<int64_t> reflens;
  std::vector<int64_t> guess, correct;
};

// cook_refs() + cook_test().
CookedTest cook(const Example& ex, int n) {
  if (ex.references.empty()) throw std::invalid_argument("bleu: an example has no reference");
  NgramCounts maxcounts(static_cast<std::size_t>(n));
  CookedTest c;
  for (const std::string& ref : ex.references) {
    const std::vector<std::string> words = detail::py_split(ref);
    c.reflens.push_back(static_cast<int64_t>(words.size()));
    const NgramCounts counts = precook(words, n);
    for (std::size_t k = 0; k < counts.size(); ++k) {
      for (const auto& [ngram, count] : counts[k]) {
        int64_t& m = maxcounts[k][ngram];
        if (count > m) m = count;
      }
    }
  }
  const std::vector<std::string> words = detail::py_split(ex.hypothesis);
  c.testlen = static_cast<int64_t>(words.size());
  c.guess.resize(static_cast<std::size_t>(n));
  c.correct.assign(static_cast<std::size_t>(n), 0);
  for (int k = 1; k <= n; ++k) c.guess[static_cast<std::size_t>(k - 1)] = std::max<int64_t>(0, c.testlen - k + 1);
  const NgramCounts counts = precook(words, n);
  for (std::size_t k = 0; k < counts.size(); ++k) {
    for (const auto& [ngram, count] : counts[k]) {
      const auto it = maxcounts[k].find(ngram);
      const int64_t ref = it == maxcounts[k].end() ? 0 : it->second;
      c.correct[k] += std::min(ref, count);
    }
  }
  return c;
}

// _single_reflen(option='closest'): min over (|l - testlen|, l), so ties go to the shorter reference.
int64_t closest_reflen(const std::vector<int64_t>& reflens, int64_t testlen) {
  int64_t best_diff = -1, best = 0;
  for (int64_t l : reflens) {
    const int64_t diff = std::llabs(l - testlen);
    if (best_diff < 0 || diff < best_diff || (diff == best_diff && l < best)) {
      best_diff = diff;
      best = l;
    }
  }
  return best;
}

}  // namespace

BleuResult bleu(const std::vector<Example>& examples, int max_n) {
  if (max_n < 1) throw std::invalid_argument("bleu: max_n must be >= 1");
  const std::size_t n = static_cast<std::size_t>(max_n);
  const double small = 1e-9;
  const double tiny = 1e-15;  // so that if guess is 0 still return 0

  BleuResult r;
  r.per_image.assign(n, {});
  std::vector<int64_t> total_guess(n, 0), total_correct(n, 0);
  for (const Example& ex : examples) {
    const CookedTest c = cook(ex, max_n);
    r.testlen += c.testlen;
    r.reflen += closest_reflen(c.reflens, c.testlen);
    for (std::size_t k = 0; k < n; ++k) {
      total_guess[k] += c.guess[k];
      total_correct[k] += c.correct[k];
      r.per_image[k].push_back(
          std::pow((static_cast<double>(c.correct[k]) + tiny) / (static_cast<double>(c.guess[k]) + small),
                   1. / (static_cast<double>(k) + 1.)));
    }
  }

  const double ratio = (static_cast<double>(r.testlen) + tiny) / (static_cast<double>(r.reflen) + small);
  for (std::size_t nn = 1; nn <= n; ++nn) {
    double b = 1.;
    for (std::size_t k = 0; k < nn; ++k) {
      b *= (static_cast<double>(total_correct[k]) + tiny) / (static_cast<double>(total_guess[k]) + small);
    }
    double score = std::pow(b, 1. / static_cast<double>(nn));
    if (ratio < 1) score *= std::exp(1 - 1 / ratio);
    r.scores.push_back(score);
  }
  return r;
}

}  // namespace cmn::metrics
