#pragma once
// The reference text R2GenCMN scores against, built exactly as its trainer builds it:
//   dataset:  ids = tokenizer(report)[:max_seq_length]     -> [0, w1, ..., wk, 0], truncated
//   trainer:  ground_truth = tokenizer.decode(ids[1:])      -> words up to the first 0, joined by ' '
// so the text is cleaned, out-of-vocabulary words are "<unk>", and at most max_seq_length - 1 words are
// kept. A template so that this library stays free of cmn_model (and LibTorch): any type with
// `std::vector<int64_t> encode(const std::string&)` and `std::string decode(const std::vector<int64_t>&)`
// (cmn::model::Tokenizer) works.
#include <cstddef>
#include <string>
#include <vector>

namespace cmn::metrics {

template <class Tokenizer>
std::string r2gen_reference(const Tokenizer& tokenizer, const std::string& report, std::size_t max_seq_length) {
  auto ids = tokenizer.encode(report);
  if (ids.size() > max_seq_length) ids.resize(max_seq_length);
  if (ids.size() <= 1) return std::string();
  return tokenizer.decode(decltype(ids)(ids.begin() + 1, ids.end()));
}

}  // namespace cmn::metrics
