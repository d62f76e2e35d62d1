#pragma once
// Self-critical sequence training (Rennie et al. 2017, as M2 / S2-Transformer fine-tune after cross-entropy):
// sample reports, reward each with CIDEr-D against the study's reference, subtract the reward of the greedy
// report of the same study (the baseline), and minimise -(reward - baseline) * log p(sample).
// Works on patch features (att_feats [B,S,d_vf]), so the trunk is outside: cached features, or
// R2GenCMN::extract() with its gradient when the trunk trains.
#include <cstdint>
#include <functional>
#include <vector>

#include <torch/torch.h>

#include "cmn/model/encoder_decoder.h"

namespace cmn::train {

struct ScstOptions {
  int64_t after_epoch = 0;    // scst.after_epoch: epochs > after_epoch use SCST; 0 = cross-entropy only (R2GenCMN)
  int64_t samples = 5;        // scst.samples: sampled reports per study
  double temperature = 1.0;   // scst.temperature: of the sampling
  int64_t max_length = 0;     // scst.max_length: tokens at most per sample; 0 = model.max_seq_length
  uint64_t seed = 0;          // sampling seed of one step (the trainer derives it from trainer.seed, epoch, step)
};

// Reward of each sequence (generated ids, eos included when reached); study[i] = the study row i belongs to.
using RewardFn = std::function<std::vector<double>(const std::vector<std::vector<int64_t>>& sequences,
                                                   const std::vector<int64_t>& study)>;

struct ScstStep {
  torch::Tensor loss;                           // scalar, differentiable
  std::vector<std::vector<int64_t>> samples;    // B*samples sequences, grouped by study
  std::vector<double> rewards;                  // of each sample
  std::vector<double> baselines;                // greedy reward of its study, per sample
  double mean_reward = 0.0, mean_baseline = 0.0;
};

// The policy-gradient loss: -sum_n adv[n] * sum_t logp[n,t] * mask[n,t] / sum(mask)
//   (ruotianluo's RewardCriterion, as M2 uses it).
//   log_probs [N,T,V+1] of a teacher-forced pass over seq [N,T+1] = (0, sampled ids..., 0 padding),
//   mask [N,T+1] 1 on bos .. eos (the scored tokens are mask[:,1:]), advantage [N].
torch::Tensor scst_loss(const torch::Tensor& log_probs, const torch::Tensor& seq, const torch::Tensor& mask,
                        const torch::Tensor& advantage);

// One SCST loss on a batch: greedy baseline and samples decoded without gradient in eval mode, then a
// teacher-forced pass over the samples in the model's training mode with gradient. The caller backpropagates
// and steps. Leaves the model in training mode with its inference caches reset.
ScstStep scst_step(model::BaseCMNImpl& model, const torch::Tensor& att_feats, const ScstOptions& options,
                   const RewardFn& reward);

}  // namespace cmn::train
