#include "cmn/train/optim.h"

#include <cmath>
#include <unordered_set>

namespace cmn::train {

ParamGroups split_param_groups(model::R2GenCMNImpl& model) {
  ParamGroups groups;
  std::unordered_set<const void*> seen;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    const torch::Tensor& p = item.value();
    if (!p.requires_grad()) continue;
    if (!seen.insert(p.unsafeGetTensorImpl()).second) continue;  // shared module listed under a second name
    const bool ve = item.key().rfind("visual_extractor.", 0) == 0;
    (ve ? groups.visual_extractor : groups.rest).push_back(p);
    (ve ? groups.visual_extractor_names : groups.rest_names).push_back(item.key());
  }
  return groups;
}

std::unique_ptr<torch::optim::Adam> build_optimizer(model::R2GenCMNImpl& model, const OptimOptions& o) {
  TORCH_CHECK(o.type == "adam", "optim.type '", o.type, "' is not supported (only adam, as R2GenCMN)");
  TORCH_CHECK(o.lr_ve >= 0 && o.lr_ed >= 0, "learning rates must be >= 0");
  TORCH_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, "adam betas must be in [0, 1)");
  auto options_with = [&](double lr) {
    return torch::optim::AdamOptions(lr)
        .betas(std::make_tuple(o.beta1, o.beta2))
        .eps(o.eps)
        .weight_decay(o.weight_decay)
        .amsgrad(o.amsgrad);
  };
  auto groups = split_param_groups(model);
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  if (!groups.visual_extractor.empty()) {
    param_groups.emplace_back(groups.visual_extractor,
                              std::make_unique<torch::optim::AdamOptions>(options_with(o.lr_ve)));
  }
  TORCH_CHECK(!groups.rest.empty(), "the model has no trainable encoder-decoder parameters");
  param_groups.emplace_back(groups.rest, std::make_unique<torch::optim::AdamOptions>(options_with(o.lr_ed)));
  return std::make_unique<torch::optim::Adam>(std::move(param_groups), options_with(o.lr_ed));
}

void clip_gradients(model::R2GenCMNImpl& model, const OptimOptions& o) {
  if (o.grad_clip_value <= 0 && o.grad_clip_norm <= 0) return;
  auto groups = split_param_groups(model);
  std::vector<torch::Tensor> params = groups.visual_extractor;
  params.insert(params.end(), groups.rest.begin(), groups.rest.end());
  if (o.grad_clip_value > 0) torch::nn::utils::clip_grad_value_(params, o.grad_clip_value);
  if (o.grad_clip_norm > 0) torch::nn::utils::clip_grad_norm_(params, o.grad_clip_norm);
}

LrScheduler::LrScheduler(torch::optim::Optimizer& optimizer, const SchedulerOptions& options)
    : optimizer_(optimizer), options_(options) {
  TORCH_CHECK(options.type == "step" || options.type == "inverse_sqrt" || options.type == "none",
              "scheduler.type '", options.type, "' is not one of step, inverse_sqrt, none");
  TORCH_CHECK(options.type != "step" || options.step_size > 0, "scheduler.step_size must be > 0");
  TORCH_CHECK(options.type != "inverse_sqrt" || options.warmup_updates > 0, "scheduler.warmup_updates must be > 0");
  for (auto& group : optimizer_.param_groups()) base_lrs_.push_back(group.options().get_lr());
  if (options_.type == "inverse_sqrt") {
    apply(std::vector<double>(base_lrs_.size(), 0.0));  // warm-up starts from 0, the first update sets it
  }
}

std::vector<double> LrScheduler::current_lrs() const {
  std::vector<double> lrs;
  for (auto& group : optimizer_.param_groups()) lrs.push_back(group.options().get_lr());
  return lrs;
}

void LrScheduler::apply(const std::vector<double>& lrs) {
  auto& groups = optimizer_.param_groups();
  TORCH_CHECK(lrs.size() == groups.size(), "scheduler: ", lrs.size(), " lrs for ", groups.size(), " groups");
  for (size_t i = 0; i < groups.size(); ++i) groups[i].options().set_lr(lrs[i]);
}

void LrScheduler::step_epoch() {
  ++last_epoch_;
  if (options_.type != "step" || last_epoch_ % options_.step_size != 0) return;
  auto lrs = current_lrs();
  for (auto& lr : lrs) lr *= options_.gamma;  // PyTorch's StepLR.get_lr: group['lr'] * gamma
  apply(lrs);
}

void LrScheduler::step_update() {
  ++num_updates_;
  if (options_.type != "inverse_sqrt") return;
  const double u = static_cast<double>(num_updates_), w = static_cast<double>(options_.warmup_updates);
  const double factor = num_updates_ < options_.warmup_updates ? u / w : std::sqrt(w / u);
  std::vector<double> lrs;
  for (double base : base_lrs_) lrs.push_back(base * factor);
  apply(lrs);
}

LrScheduler::State LrScheduler::state() const { return {last_epoch_, num_updates_, current_lrs()}; }

void LrScheduler::load_state(const State& state) {
  last_epoch_ = state.last_epoch;
  num_updates_ = state.num_updates;
  apply(state.lrs);
}

}  // namespace cmn::train
