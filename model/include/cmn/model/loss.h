#pragma once
// The model's training loss over report tokens (R2GenCMN's modules/loss.py): it lives with the model so that
// anything built on cmn_model alone (cmn-train-bench on a GPU host) scores exactly as cmn-train does.
#include <torch/torch.h>

namespace cmn::model {

struct LossOptions {
  // 0 = R2GenCMN's loss exactly (modules/loss.py, LanguageModelCriterion). > 0 = fairseq's
  // label_smoothed_nll_loss on the same tokens: (1 - eps - eps_i) * nll + eps_i * sum_v(-logp_v) with
  // eps_i = eps / (V - 1), V = log_probs.size(-1) (id 0 included).
  double label_smoothing = 0.0;
};

// R2GenCMN's compute_loss: the masked mean negative log-likelihood of the report tokens after bos.
//   log_probs [B,T,V+1] (the model's forward: T = L-1 predictions of ids[:,1:])
//   targets   [B,L] int64 ids (0, w1..wn, 0, pad 0 ...)
//   masks     [B,L] 1 on the tokens to score (bos and the final 0 included), 0 on padding; any dtype
// -> scalar sum(-logp[target] * mask[:,1:]) / sum(mask[:,1:]), where targets and masks are cut at T after
// dropping column 0 (LanguageModelCriterion's `target[:, :input.size(1)]`).
torch::Tensor language_model_loss(const torch::Tensor& log_probs, const torch::Tensor& targets,
                                  const torch::Tensor& masks, const LossOptions& options = {});

}  // namespace cmn::model
