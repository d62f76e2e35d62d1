#include "cmn/model/loss.h"

#include <algorithm>

namespace cmn::model {

torch::Tensor language_model_loss(const torch::Tensor& log_probs, const torch::Tensor& targets,
                                  const torch::Tensor& masks, const LossOptions& options) {
  TORCH_CHECK(log_probs.dim() == 3, "log_probs must be [B,T,V], got ", log_probs.sizes());
  TORCH_CHECK(targets.dim() == 2 && masks.sizes() == targets.sizes(), "targets and masks must be [B,L] alike, got ",
              targets.sizes(), " and ", masks.sizes());
  TORCH_CHECK(targets.size(0) == log_probs.size(0), "batch of ", log_probs.size(0), " predictions vs ",
              targets.size(0), " targets");
  TORCH_CHECK(targets.size(1) >= 2, "targets need bos and at least one token, got length ", targets.size(1));
  const int64_t steps = std::min(log_probs.size(1), targets.size(1) - 1);
  auto target = targets.narrow(1, 1, steps).to(torch::kLong);                  // [B,T]  ids[:,1:][:, :T]
  auto mask = masks.narrow(1, 1, steps).to(log_probs.scalar_type());           // [B,T]
  auto lp = log_probs.narrow(1, 0, steps);                                     // [B,T,V]
  auto nll = -lp.gather(2, target.unsqueeze(2)).squeeze(2);                    // [B,T]
  if (options.label_smoothing > 0.0) {
    const double eps = options.label_smoothing;
    const double eps_i = eps / static_cast<double>(lp.size(-1) - 1);
    auto smooth = -lp.sum(-1);                                                 // [B,T]
    nll = (1.0 - eps - eps_i) * nll + eps_i * smooth;
  }
  return (nll * mask).sum() / mask.sum();
}

}  // namespace cmn::model
