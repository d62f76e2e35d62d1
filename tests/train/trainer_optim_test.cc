// Loss, Adam, schedules, parameter groups, dropout settings and clipping of cmn_train, checked against the
// formulas of R2GenCMN (modules/loss.py, optimizers.py) and PyTorch 1.13 (torch/optim/adam.py
// _single_tensor_adam, lr_scheduler.StepLR), worked out here by hand in double precision.
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cmn/model/r2gencmn.h"
#include "cmn/train/loss.h"
#include "cmn/train/model_setup.h"
#include "cmn/train/optim.h"

namespace cmn::train {
namespace {

// ---- loss ----

torch::Tensor example_log_probs() {
  // [1,3,4]: three steps over a 4-token vocabulary (ids 0..3)
  auto logits = torch::tensor({0.1, 0.5, -0.3, 1.0, 2.0, -1.0, 0.0, 0.3, -0.5, 0.2, 0.9, 0.1}, torch::kDouble);
  return torch::log_softmax(logits.view({1, 3, 4}), -1);
}

TEST(TrainLossTest, IsMaskedMeanNllOfTokensAfterBos) {
  auto lp = example_log_probs();
  auto targets = torch::tensor({0, 2, 1, 0}, torch::kLong).view({1, 4});
  auto masks = torch::tensor({1.0, 1.0, 1.0, 1.0}, torch::kDouble).view({1, 4});
  const double want = -(lp[0][0][2].item<double>() + lp[0][1][1].item<double>() + lp[0][2][0].item<double>()) / 3.0;
  EXPECT_NEAR(language_model_loss(lp, targets, masks).item<double>(), want, 1e-12);
}

TEST(TrainLossTest, IgnoresPaddingAndCutsTargetsToPredictions) {
  auto lp = example_log_probs();
  // L = 6 > T + 1: targets[:,1:][:, :3]; the third scored position is padding (mask 0).
  auto targets = torch::tensor({0, 3, 0, 0, 0, 0}, torch::kLong).view({1, 6});
  auto masks = torch::tensor({1.0, 1.0, 1.0, 0.0, 0.0, 0.0}, torch::kDouble).view({1, 6});
  const double want = -(lp[0][0][3].item<double>() + lp[0][1][0].item<double>()) / 2.0;
  EXPECT_NEAR(language_model_loss(lp, targets, masks).item<double>(), want, 1e-12);
}

TEST(TrainLossTest, LabelSmoothingFollowsFairseq) {
  auto lp = example_log_probs();
  auto targets = torch::tensor({0, 2, 1, 0}, torch::kLong).view({1, 4});
  auto masks = torch::ones({1, 4}, torch::kDouble);
  const double eps = 0.1, eps_i = eps / 3.0;
  double want = 0;
  const int64_t ids[] = {2, 1, 0};
  for (int t = 0; t < 3; ++t) {
    const double nll = -lp[0][t][ids[t]].item<double>();
    const double smooth = -lp[0][t].sum().item<double>();
    want += (1.0 - eps - eps_i) * nll + eps_i * smooth;
  }
  want /= 3.0;
  EXPECT_NEAR(language_model_loss(lp, targets, masks, LossOptions{eps}).item<double>(), want, 1e-12);
}

// ---- Adam ----

// PyTorch 1.13 _single_tensor_adam for one scalar, in double.
struct ReferenceAdam {
  double lr, beta1, beta2, eps, weight_decay;
  bool amsgrad;
  double m = 0, v = 0, vmax = 0;
  int step = 0;
  double update(double p, double g) {
    ++step;
    if (weight_decay != 0) g = g + weight_decay * p;  // L2 added to the gradient (not AdamW)
    m = m * beta1 + (1 - beta1) * g;
    v = v * beta2 + (1 - beta2) * g * g;
    const double bc1 = 1 - std::pow(beta1, step), bc2 = 1 - std::pow(beta2, step);
    double denom;
    if (amsgrad) {
      vmax = std::max(vmax, v);
      denom = std::sqrt(vmax) / std::sqrt(bc2) + eps;
    } else {
      denom = std::sqrt(v) / std::sqrt(bc2) + eps;
    }
    return p - lr / bc1 * m / denom;
  }
};

TEST(TrainAdamTest, LibTorchAdamMatchesPyTorchUpdateWithAmsgradAndWeightDecay) {
  // Two groups with their own lr; gradients chosen so that exp_avg_sq falls at some steps (amsgrad's max matters).
  auto a = torch::tensor({0.5, -1.5, 2.0}, torch::kDouble).requires_grad_();
  auto b = torch::tensor({-0.25, 3.0}, torch::kDouble).requires_grad_();
  std::vector<torch::optim::OptimizerParamGroup> groups;
  auto opts = [](double lr) {
    return std::make_unique<torch::optim::AdamOptions>(
        torch::optim::AdamOptions(lr).betas({0.9, 0.98}).eps(1e-9).weight_decay(5e-5).amsgrad(true));
  };
  groups.emplace_back(std::vector<torch::Tensor>{a}, opts(1e-4));
  groups.emplace_back(std::vector<torch::Tensor>{b}, opts(5e-4));
  torch::optim::Adam adam(std::move(groups), torch::optim::AdamOptions(1e-3));

  const std::vector<std::vector<double>> grads_a = {{1.0, -2.0, 0.5}, {0.1, 0.1, -3.0}, {0.01, 5.0, 1e-6}, {-4.0, 0.0, 0.2}};
  const std::vector<std::vector<double>> grads_b = {{3.0, -1e-3}, {0.0, 2.0}, {-0.5, -0.5}, {1e-8, 10.0}};
  std::vector<ReferenceAdam> ref_a(3, ReferenceAdam{1e-4, 0.9, 0.98, 1e-9, 5e-5, true});
  std::vector<ReferenceAdam> ref_b(2, ReferenceAdam{5e-4, 0.9, 0.98, 1e-9, 5e-5, true});
  std::vector<double> want_a = {0.5, -1.5, 2.0}, want_b = {-0.25, 3.0};
  for (size_t step = 0; step < grads_a.size(); ++step) {
    adam.zero_grad();
    a.mutable_grad() = torch::tensor(grads_a[step], torch::kDouble);
    b.mutable_grad() = torch::tensor(grads_b[step], torch::kDouble);
    adam.step();
    for (size_t i = 0; i < 3; ++i) want_a[i] = ref_a[i].update(want_a[i], grads_a[step][i]);
    for (size_t i = 0; i < 2; ++i) want_b[i] = ref_b[i].update(want_b[i], grads_b[step][i]);
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_NEAR(a[static_cast<int64_t>(i)].item<double>(), want_a[i], 1e-15) << "step " << step << " a" << i;
    }
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_NEAR(b[static_cast<int64_t>(i)].item<double>(), want_b[i], 1e-15) << "step " << step << " b" << i;
    }
  }
  // amsgrad mattered: without the max, the third step of a[1] would differ.
  ReferenceAdam plain{1e-4, 0.9, 0.98, 1e-9, 5e-5, false};
  double p = -1.5;
  for (const auto& g : grads_a) p = plain.update(p, g[1]);
  EXPECT_GT(std::abs(p - want_a[1]), 1e-9);
}

// ---- schedules ----

struct OneParam {
  torch::Tensor p = torch::zeros({1}, torch::kDouble).requires_grad_();
  std::unique_ptr<torch::optim::Adam> adam;
  OneParam(double lr0, double lr1) {
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(std::vector<torch::Tensor>{p}, std::make_unique<torch::optim::AdamOptions>(lr0));
    groups.emplace_back(std::vector<torch::Tensor>{torch::zeros({1}).requires_grad_()},
                        std::make_unique<torch::optim::AdamOptions>(lr1));
    adam = std::make_unique<torch::optim::Adam>(std::move(groups), torch::optim::AdamOptions(1.0));
  }
};

TEST(TrainSchedulerTest, StepLrMultipliesByGammaEveryStepSizeEpochs) {
  OneParam setup(1e-4, 5e-4);
  LrScheduler sched(*setup.adam, SchedulerOptions{"step", 10, 0.8, 0});
  double lr0 = 1e-4, lr1 = 5e-4;  // PyTorch's chainable StepLR: lr *= gamma at epochs 10, 20, ...
  for (int epoch = 1; epoch <= 35; ++epoch) {
    sched.step_epoch();
    if (epoch % 10 == 0) {
      lr0 *= 0.8;
      lr1 *= 0.8;
    }
    EXPECT_DOUBLE_EQ(sched.current_lrs()[0], lr0) << "epoch " << epoch;
    EXPECT_DOUBLE_EQ(sched.current_lrs()[1], lr1) << "epoch " << epoch;
  }
  EXPECT_NEAR(sched.current_lrs()[0], 1e-4 * std::pow(0.8, 3), 1e-18);
}

TEST(TrainSchedulerTest, InverseSqrtWarmsUpLinearlyThenDecays) {
  OneParam setup(1e-3, 2e-3);
  LrScheduler sched(*setup.adam, SchedulerOptions{"inverse_sqrt", 1, 1.0, 4});
  EXPECT_EQ(sched.current_lrs()[0], 0.0);
  const double want[] = {0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3 * std::sqrt(4.0 / 5.0), 1e-3 * std::sqrt(4.0 / 16.0)};
  const int updates[] = {1, 2, 3, 4, 5, 16};
  int done = 0;
  for (int i = 0; i < 6; ++i) {
    while (done < updates[i]) {
      sched.step_update();
      ++done;
    }
    EXPECT_NEAR(sched.current_lrs()[0], want[i], 1e-15) << "update " << updates[i];
    EXPECT_NEAR(sched.current_lrs()[1], 2 * want[i], 1e-15) << "update " << updates[i];
  }
}

TEST(TrainSchedulerTest, StateRestoresLearningRates) {
  OneParam a(1e-4, 5e-4), b(1e-4, 5e-4);
  LrScheduler sa(*a.adam, SchedulerOptions{"step", 2, 0.5, 0});
  LrScheduler sb(*b.adam, SchedulerOptions{"step", 2, 0.5, 0});
  for (int i = 0; i < 5; ++i) sa.step_epoch();
  sb.load_state(sa.state());
  sa.step_epoch();
  sb.step_epoch();
  EXPECT_EQ(sa.current_lrs(), sb.current_lrs());
  EXPECT_DOUBLE_EQ(sb.current_lrs()[0], 1e-4 * 0.125);
  EXPECT_DOUBLE_EQ(b.adam->param_groups()[1].options().get_lr(), 5e-4 * 0.125);
}

// ---- model-level settings (one small-vocabulary R2GenCMN for the suite) ----

class TrainModelSetupTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    torch::manual_seed(3);
    model::ModelConfig c;
    c.vocab_size = 20;
    c.views = 1;
    net_ = new model::R2GenCMN(c);
  }
  static void TearDownTestSuite() { delete net_; }
  static model::R2GenCMN& net() { return *net_; }
  static model::R2GenCMN* net_;
};
model::R2GenCMN* TrainModelSetupTest::net_ = nullptr;

TEST_F(TrainModelSetupTest, ParamGroupsSplitTrunkFromRestWithEachTensorOnce) {
  auto groups = split_param_groups(*net());
  EXPECT_EQ(groups.visual_extractor.size(), 312u);
  EXPECT_EQ(groups.rest.size(), 144u);
  std::set<const void*> seen;
  for (const auto& name : groups.visual_extractor_names) EXPECT_EQ(name.rfind("visual_extractor.", 0), 0u) << name;
  for (const auto& name : groups.rest_names) EXPECT_NE(name.rfind("visual_extractor.", 0), 0u) << name;
  for (const auto& p : groups.visual_extractor) EXPECT_TRUE(seen.insert(p.unsafeGetTensorImpl()).second);
  for (const auto& p : groups.rest) EXPECT_TRUE(seen.insert(p.unsafeGetTensorImpl()).second);
  // every parameter of the module is in one group
  for (const auto& p : net()->parameters()) EXPECT_TRUE(seen.count(p.unsafeGetTensorImpl())) << "missing a tensor";

  auto adam = build_optimizer(*net(), OptimOptions{});
  ASSERT_EQ(adam->param_groups().size(), 2u);
  EXPECT_DOUBLE_EQ(adam->param_groups()[0].options().get_lr(), OptimOptions{}.lr_ve);
  EXPECT_DOUBLE_EQ(adam->param_groups()[1].options().get_lr(), OptimOptions{}.lr_ed);
  const auto& o = static_cast<const torch::optim::AdamOptions&>(adam->param_groups()[1].options());
  EXPECT_EQ(std::get<0>(o.betas()), 0.9);
  EXPECT_EQ(std::get<1>(o.betas()), 0.98);
  EXPECT_EQ(o.eps(), 1e-9);
  EXPECT_EQ(o.weight_decay(), 5e-5);
  EXPECT_TRUE(o.amsgrad());
}

TEST_F(TrainModelSetupTest, SetDropoutSetsEachKind) {
  const int n = set_dropout(*net(), DropoutOptions{0.11, 0.22, 0.33, 0.44});
  EXPECT_GT(n, 0);
  int attention = 0, memory = 0, embed = 0, other = 0;
  for (const auto& [name, p] : dropout_rates(*net())) {
    if (name == "encoder_decoder.att_embed.2") {
      EXPECT_DOUBLE_EQ(p, 0.22);
      ++embed;
    } else if (name.find("cmn.dropout") != std::string::npos) {
      EXPECT_DOUBLE_EQ(p, 0.44) << name;
      ++memory;
    } else if (name.find("attn.dropout") != std::string::npos) {
      EXPECT_DOUBLE_EQ(p, 0.33) << name;
      ++attention;
    } else {
      EXPECT_DOUBLE_EQ(p, 0.11) << name;
      ++other;
    }
  }
  EXPECT_EQ(embed, 1);
  EXPECT_EQ(memory, 2);      // one module, reachable as encoder_decoder.cmn and encoder_decoder.model.cmn
  EXPECT_EQ(attention, 9);   // 3 encoder self_attn + 3 x (decoder self_attn, src_attn)
  EXPECT_GT(other, 0);
  set_dropout(*net(), DropoutOptions{});
}

TEST_F(TrainModelSetupTest, ClipGradientsByValueBoundsEveryGradient) {
  for (auto& p : net()->parameters()) p.mutable_grad() = torch::full_like(p, 3.0);
  OptimOptions o;
  o.grad_clip_value = 0.1;
  clip_gradients(*net(), o);
  for (auto& p : net()->parameters()) {
    ASSERT_LE(p.grad().abs().max().item<double>(), 0.1 + 1e-7);
  }
  for (auto& p : net()->parameters()) p.mutable_grad() = torch::Tensor();
}

TEST(TrainFreezeTest, FrozenTrunkLeavesOneGroupAndStaysInEvalMode) {
  model::ModelConfig c;
  c.vocab_size = 10;
  c.views = 1;
  model::R2GenCMN net(c);
  freeze_visual_extractor(*net);
  EXPECT_TRUE(visual_extractor_frozen(*net));
  auto adam = build_optimizer(*net, OptimOptions{});
  EXPECT_EQ(adam->param_groups().size(), 1u);
  train_mode(*net);
  EXPECT_TRUE(net->encoder_decoder->is_training());
  EXPECT_FALSE(net->visual_extractor->is_training());
}

}  // namespace
}  // namespace cmn::train
