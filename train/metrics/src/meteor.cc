// METEOR 1.5's exact and stem modules, ported from its Java sources (edu.cmu.meteor: util.Normalizer,
// aligner.Aligner/ExactMatcher/StemMatcher/PartialAlignment, scorer.MeteorScorer/MeteorStats, and
// util.Constants for the English "default" = ranking-task parameters). What it is NOT: METEOR 1.5 — there is
// no synonym module (WordNet), no paraphrase module, and no function-word list unless the caller supplies
// one. See metrics.h. This file: the scorer (MeteorScorer/MeteorStats) and the corpus METEOR; the aligner is
// meteor_align.cc, the normaliser meteor_normalize.cc.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cmn/metrics/metrics.h"
#include "meteor_internal.h"

namespace cmn::metrics {
namespace {

using meteor_detail::align_words;
using meteor_detail::kModules;

std::vector<std::string> string_tokenize(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : line) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f') {
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

// Python's str.replace(old, new): one left-to-right pass.
std::string py_replace(const std::string& s, const std::string& from, const std::string& to) {
  std::string out;
  std::size_t start = 0;
  for (std::size_t hit; (hit = s.find(from, start)) != std::string::npos; start = hit + from.size()) {
    out.append(s, start, hit - start);
    out += to;
  }
  out.append(s, start, std::string::npos);
  return out;
}

double total_matches(const std::array<double, 2>& content, const std::array<double, 2>& function) {
  return content[0] + function[0] + content[1] + function[1];
}

}  // namespace

void MeteorStats::add(const MeteorStats& o) {
  test_length += o.test_length;
  reference_length += o.reference_length;
  test_function_words += o.test_function_words;
  reference_function_words += o.reference_function_words;
  for (std::size_t k = 0; k < 2; ++k) {
    test_content[k] += o.test_content[k];
    reference_content[k] += o.reference_content[k];
    test_function[k] += o.test_function[k];
    reference_function[k] += o.reference_function[k];
  }
  chunks += o.chunks;
  test_word_matches += o.test_word_matches;
  reference_word_matches += o.reference_word_matches;
}

MeteorStats meteor_stats(const std::string& hypothesis, const std::string& reference, const MeteorOptions& opt) {
  std::string test = hypothesis, ref = reference;
  if (opt.normalize) {
    test = meteor_normalize(test);
    ref = meteor_normalize(ref);
  }
  return align_words(string_tokenize(test), string_tokenize(ref), opt);
}

double meteor_score(const MeteorStats& st, const MeteorOptions& opt) {
  const double alpha = opt.alpha, beta = opt.beta, gamma = opt.gamma, delta = opt.delta;
  const double weights[kModules] = {opt.exact_weight, opt.stem_weight};
  const double test_weighted_length =
      (delta * (st.test_length - st.test_function_words)) + ((1.0 - delta) * (st.test_function_words));
  const double reference_weighted_length =
      (delta * (st.reference_length - st.reference_function_words)) + ((1.0 - delta) * (st.reference_function_words));
  double test_weighted_matches = 0, reference_weighted_matches = 0;
  for (std::size_t i = 0; i < kModules; ++i) test_weighted_matches += st.test_content[i] * weights[i] * delta;
  for (std::size_t i = 0; i < kModules; ++i) reference_weighted_matches += st.reference_content[i] * weights[i] * delta;
  for (std::size_t i = 0; i < kModules; ++i) test_weighted_matches += st.test_function[i] * weights[i] * (1.0 - delta);
  for (std::size_t i = 0; i < kModules; ++i)
    reference_weighted_matches += st.reference_function[i] * weights[i] * (1.0 - delta);

  const double precision = test_weighted_matches / test_weighted_length;
  const double recall = reference_weighted_matches / reference_weighted_length;
  const double f_mean = 1.0 / (((1.0 - alpha) / precision) + (alpha / recall));
  double frag;
  if (total_matches(st.test_content, st.test_function) == st.test_length &&
      total_matches(st.reference_content, st.reference_function) == st.reference_length && st.chunks == 1) {
    frag = 0;
  } else {
    frag = st.chunks / ((st.test_word_matches + st.reference_word_matches) / 2);
  }
  const double frag_penalty = gamma * std::pow(frag, beta);
  const double score = f_mean * (1.0 - frag_penalty);
  if (std::isnan(score)) return 0;
  return std::max(score, 0.0);
}

CorpusScore meteor(const std::vector<Example>& examples, const MeteorOptions& opt) {
  CorpusScore r;
  MeteorStats total;
  r.per_image.reserve(examples.size());
  for (const Example& ex : examples) {
    if (ex.references.empty()) throw std::invalid_argument("meteor: an example has no reference");
    // pycocoevalcap's Meteor._stat(): hypothesis_str.replace('|||', '').replace('  ', ' ').
    const std::string hypothesis = py_replace(py_replace(ex.hypothesis, "|||", ""), "  ", " ");
    // MeteorScorer.getMeteorStats(test, references): the first reference with the highest score.
    MeteorStats best;
    double best_score = -1;
    for (const std::string& ref : ex.references) {
      const MeteorStats st = meteor_stats(hypothesis, ref, opt);
      const double sc = meteor_score(st, opt);
      if (sc > best_score) {
        best = st;
        best_score = sc;
      }
    }
    r.per_image.push_back(best_score);
    total.add(best);
  }
  r.score = examples.empty() ? 0.0 : meteor_score(total, opt);
  return r;
}

std::unordered_set<std::string> read_word_list(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open word list " + path);
  std::unordered_set<std::string> words;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    words.insert(line);
  }
  return words;
}

}  // namespace cmn::metrics
