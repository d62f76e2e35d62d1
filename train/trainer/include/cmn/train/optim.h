#pragma once
// Optimiser, learning-rate schedules and gradient clipping as R2GenCMN trains (modules/optimizers.py,
// main_train.py), plus fairseq's inverse-square-root warm-up as an alternative schedule.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "cmn/model/r2gencmn.h"

namespace cmn::train {

struct OptimOptions {
  std::string type = "adam";       // only "adam" (torch.optim.Adam, R2GenCMN's --optim Adam)
  double lr_ve = 5e-5;             // visual_extractor.* learning rate (--lr_ve; the published recipes use 1e-4)
  double lr_ed = 7e-4;             // every other parameter (--lr_ed; the published recipes use 5e-4)
  double weight_decay = 5e-5;      // L2 added to the gradient (torch.optim.Adam's, not AdamW's decoupled decay)
  double beta1 = 0.9;              // --adam_betas[0]
  double beta2 = 0.98;             // --adam_betas[1]
  double eps = 1e-9;               // --adam_eps
  bool amsgrad = true;             // --amsgrad: normalise by the running max of exp_avg_sq
  // Gradient clipping by value before each step (torch.nn.utils.clip_grad_value_). 0 = off, as R2GenCMN's
  // trainer; R2Gen's trainer clips at 0.1.
  double grad_clip_value = 0.0;
  // Gradient clipping by global L2 norm (torch.nn.utils.clip_grad_norm_). 0 = off.
  double grad_clip_norm = 0.0;
};

// The optimiser's parameters in two groups, as build_optimizer: group 0 = visual_extractor.* (lr_ve), group
// 1 = the rest (lr_ed). Each tensor appears once even where modules are shared (encoder_decoder.cmn and
// encoder_decoder.model.cmn are one module; LibTorch's named_parameters lists it under both names, Python's
// parameters() once). Parameters with requires_grad false (a frozen trunk) are left out.
struct ParamGroups {
  std::vector<torch::Tensor> visual_extractor;
  std::vector<std::string> visual_extractor_names;
  std::vector<torch::Tensor> rest;
  std::vector<std::string> rest_names;
};
ParamGroups split_param_groups(model::R2GenCMNImpl& model);

// torch.optim.Adam([{visual_extractor, lr_ve}, {rest, lr_ed}], betas, eps, weight_decay, amsgrad).
// LibTorch 1.13's Adam::step is the same update as PyTorch 1.13's _single_tensor_adam (grad += wd * p;
// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; amsgrad: vmax = max(vmax, v); denom = sqrt(vmax or v) /
// sqrt(1 - b2^t) + eps; p -= lr / (1 - b1^t) * m / denom); tests/train/trainer_test.cc checks it against
// that formula. A visual-extractor group with no trainable parameters (frozen trunk) is omitted.
std::unique_ptr<torch::optim::Adam> build_optimizer(model::R2GenCMNImpl& model, const OptimOptions& options);

// Clips the gradients of every trainable parameter as `options` says (value, then norm); no-op when both 0.
void clip_gradients(model::R2GenCMNImpl& model, const OptimOptions& options);

struct SchedulerOptions {
  // "step": torch.optim.lr_scheduler.StepLR(step_size, gamma), stepped once per epoch (R2GenCMN).
  // "inverse_sqrt": fairseq's, per update: linear warm-up from 0 over warmup_updates, then
  //                 lr * sqrt(warmup_updates / update). "none": constant.
  std::string type = "step";
  int64_t step_size = 50;          // epochs between decays (--step_size; IU X-Ray recipe 10, MIMIC-CXR 3)
  double gamma = 0.1;              // decay factor (--gamma; both recipes 0.8)
  int64_t warmup_updates = 4000;   // inverse_sqrt only
};

// The learning rate of every optimiser group over training. StepLR is chainable like PyTorch's (each decay
// multiplies the current lr), so the lrs follow the reference's float sequence exactly.
class LrScheduler {
 public:
  LrScheduler(torch::optim::Optimizer& optimizer, const SchedulerOptions& options);

  void step_epoch();   // end of an epoch (lr_scheduler.step() in R2GenCMN's _train_epoch)
  void step_update();  // after each optimiser step

  struct State {
    int64_t last_epoch = 0;          // epochs stepped
    int64_t num_updates = 0;         // optimiser steps seen
    std::vector<double> lrs;         // current lr per group
  };
  State state() const;
  void load_state(const State& state);  // sets the optimiser's lrs too
  std::vector<double> current_lrs() const;

 private:
  void apply(const std::vector<double>& lrs);
  torch::optim::Optimizer& optimizer_;
  SchedulerOptions options_;
  std::vector<double> base_lrs_;
  int64_t last_epoch_ = 0;
  int64_t num_updates_ = 0;
};

}  // namespace cmn::train
