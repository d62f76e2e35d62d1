#pragma once
// The per-study searches behind StudySearch (decoding.h), shared by the batch searches in decoding.cc.
#include <cstdint>
#include <functional>
#include <map>
#include <utility>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "cmn/model/decoding.h"

namespace cmn::model::search {

// utils.penalty_builder: '' -> none; 'wu_a' -> GNMT length normalisation; 'avg_a' -> mean log-prob.
std::function<double(int64_t, double)> penalty_builder(const std::string& spec);

// The reference's beam search (beam_search in decoding.h) for one study.
class BeamSearch final : public StudySearch {
 public:
  explicit BeamSearch(const DecodingOptions& options);
  const std::vector<int64_t>& tokens() const override { return tokens_; }
  const std::vector<int64_t>& parents() const override { return parents_; }
  // step_output [rows, V]: at the first step (one row, bos) the decoder's log-probs as they are; later ones
  // log_softmax(step_output / temperature), as the reference.
  void advance(const torch::Tensor& step_output) override;
  bool finished() const override { return finished_; }
  int64_t steps() const override { return t_; }
  Hypothesis best() const override;

 private:
  struct Beam {
    std::vector<int64_t> ids;
    std::vector<float> log_probs;
  };
  struct Done {
    Beam beam;
    double p;
  };
  DecodingOptions options_;
  std::function<double(int64_t, double)> penalty_;
  bool can_stop_early_;
  int64_t t_ = 0;                     // steps taken
  std::vector<Beam> beams_{1};        // one empty beam before the first step
  torch::Tensor sums_;                // [beam] beam_logprobs_sum (float, CPU)
  std::vector<Done> done_;
  double best_done_ = -std::numeric_limits<double>::infinity();
  std::vector<int64_t> tokens_{0}, parents_;
  bool finished_ = false;
};

// The reference's trigram blocking (_sample with block_trigrams): before step t >= 3, the trigram generated at
// the step before is stored; each continuation already seen after the last two tokens gets +1 in the mask.
class TrigramBlocker {
 public:
  // seq: the study's tokens so far (t of them); mask: [V] floats, zeroed by the caller.
  void add_mask(const std::vector<int64_t>& seq, int64_t t, float* mask);

 private:
  std::map<std::pair<int64_t, int64_t>, std::vector<int64_t>> seen_;
};

// Greedy argmax or sampling with temperature (the reference's _sample, beam size 1) for one study, drawing from
// its own generator.
class SampleSearch final : public StudySearch {
 public:
  explicit SampleSearch(const DecodingOptions& options);
  const std::vector<int64_t>& tokens() const override { return tokens_; }
  const std::vector<int64_t>& parents() const override { return parents_; }
  void advance(const torch::Tensor& step_output) override;
  bool finished() const override { return finished_; }
  int64_t steps() const override { return static_cast<int64_t>(seq_.size()); }
  Hypothesis best() const override { return hypothesis_; }

 private:
  DecodingOptions options_;
  at::Generator generator_;
  TrigramBlocker trigrams_;
  std::vector<int64_t> seq_;
  Hypothesis hypothesis_;
  std::vector<int64_t> tokens_{0}, parents_{0};
  bool finished_ = false;
};

}  // namespace cmn::model::search
