// Training parity with the reference R2GenCMN: three optimisation steps of the IU X-Ray recipe (Adam amsgrad,
// weight decay 5e-5, lr 1e-4 visual extractor / 5e-4 rest, betas (0.9, 0.98), eps 1e-9, no clipping) from
// ../shared/parity/dev/model.pth (float16 upcast to float32) on dev's two 4-view studies, batch norm in train
// mode (per-view batch statistics, running stats momentum 0.1), with the targets of parity/train/expected.json.
//
// How that fixture was made, as far as it can be told from its numbers (the shared README says "all dropout
// 0"; that is not what ran): R2GenCMN's main_train.py flow with --dropout 0 --drop_prob_lm 0 after
// torch.manual_seed(0). Two kinds of Dropout in the reference do not follow --dropout (make_model's
// MultiHeadedAttention and BaseCMN's MultiThreadMemory are built with their class default 0.1), so attention and
// memory dropout were ACTIVE, and the run was repeatable because it was seeded. A transcription of the reference
// modules run with Debian's python3-torch 1.13.1 (the same libtorch as ours) reproduces the fixture's first loss
// to 2e-7 that way, and gives 1.2107 (our no-dropout value) with every Dropout at 0.
//
// The C++ model draws from the same CPU generator with the same kernels, so the fixture's random masks can be
// replayed: seed 0, skip the draws that building the Python model took (kReferenceInitDraws), then the dropout
// calls come in the reference's order with the reference's sizes (cmn_model draws the memory query's mask in
// the reference's [B,h,T,k] order for exactly this reason). Then loss 0 and loss 1 agree to ~1e-6.
//
// After the first update, float32 rounding noise is amplified: Adam with eps 1e-9 moves every parameter by
// about lr * sign(g), and the sign of a near-zero gradient is decided by rounding. The reference itself, run
// with 1 instead of 2 threads, moves the second loss by 3.9e-4, the third by 2e-4, the eval loss by 2% and the
// trunk sums by up to 8%. The tolerances below are set from those measurements, not from the shared README's
// "about 1e-4", which holds for the first two losses.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/script.h>
#include <torch/torch.h>

#include "cmn/model/checkpoint.h"
#include "cmn/model/r2gencmn.h"
#include "cmn/train/loss.h"
#include "cmn/train/model_setup.h"
#include "cmn/train/optim.h"

namespace cmn::train {
namespace {

// 32-bit draws that `torch.manual_seed(0); BaseCMNModel(args, tokenizer)` takes from the CPU generator before
// any forward pass: torchvision resnet101() (kaiming_uniform_ at construction, the discarded fc layer,
// kaiming_normal_ re-init of every conv) and BaseCMN (att_embed, one Linear each for the memory, attention
// and feed-forward prototypes that clones() deep-copies, the Embedding, xavier_uniform_ of every >1-D transformer
// weight, logit, memory_matrix normal_). Checked in Python: after skipping this many draws from seed 0 the
// generator state equals the state after building the model.
constexpr int64_t kReferenceInitDraws = 104'788'065;

std::string parity_path(const std::string& relative) { return std::string(CMN_SHARED_DIR) + "/parity/" + relative; }

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  return nlohmann::json::parse(in);
}

torch::Tensor matrix(const nlohmann::json& rows, torch::ScalarType dtype) {
  std::vector<torch::Tensor> out;
  for (const auto& row : rows) out.push_back(torch::tensor(row.get<std::vector<int64_t>>(), torch::kLong));
  return torch::stack(out).to(dtype);  // [B,L]
}

double relative_error(double got, double want) { return std::abs(got - want) / std::max(std::abs(want), 1e-12); }

// Advances the default CPU generator by `draws` 32-bit numbers (a float uniform_ takes one per element).
void skip_random_draws(int64_t draws) {
  while (draws > 0) {
    const int64_t chunk = std::min<int64_t>(draws, int64_t{1} << 24);
    torch::empty({chunk}, torch::kFloat).uniform_();
    draws -= chunk;
  }
}

struct RunOptions {
  DropoutOptions dropout = uniform_dropout(0.0);
  bool replay_fixture_rng = false;  // seed 0 + kReferenceInitDraws before the first step
};

struct ParityRun {
  std::vector<double> losses;                  // before each step
  double eval_loss_after = 0;
  std::map<std::string, double> sums_after;    // float64 sums of every state_dict tensor
  size_t groups = 0, group0_size = 0, group1_size = 0;
};

ParityRun run_reference_recipe(const nlohmann::json& expected, const RunOptions& run_options) {
  torch::set_num_threads(2);
  ParityRun run;
  auto config = model::read_model_config(parity_path("dev/config.json"));
  config.dropout = run_options.dropout.transformer;
  config.drop_prob_lm = run_options.dropout.att_embed;
  auto net = model::load_r2gencmn(parity_path("dev/model.pth"), config);  // float16 weights -> float32
  set_dropout(*net, run_options.dropout);
  train_mode(*net);

  auto images = torch::jit::load(parity_path("dev/inputs.pt")).attr("images").toTensor();  // [2,4,3,224,224]
  auto targets = matrix(expected["token_ids"], torch::kLong);  // [2,L]
  auto masks = matrix(expected["masks"], torch::kFloat);       // [2,L]

  const auto& o = expected["optimizer"];
  OptimOptions options;
  options.lr_ve = o["lr_visual_extractor"].get<double>();
  options.lr_ed = o["lr_rest"].get<double>();
  options.weight_decay = o["weight_decay"].get<double>();
  options.beta1 = o["betas"][0].get<double>();
  options.beta2 = o["betas"][1].get<double>();
  options.eps = o["eps"].get<double>();
  options.amsgrad = o["amsgrad"].get<bool>();
  auto optimizer = build_optimizer(*net, options);
  run.groups = optimizer->param_groups().size();
  run.group0_size = optimizer->param_groups()[0].params().size();
  run.group1_size = run.groups > 1 ? optimizer->param_groups()[1].params().size() : 0;

  if (run_options.replay_fixture_rng) {
    torch::manual_seed(0);
    skip_random_draws(kReferenceInitDraws);
  }
  for (int step = 0; step < 3; ++step) {
    auto log_probs = net->forward(images, targets);  // [2,L-1,761]
    auto loss = language_model_loss(log_probs, targets, masks);
    run.losses.push_back(loss.item<double>());
    optimizer->zero_grad();
    loss.backward();
    optimizer->step();
  }
  net->eval();
  {
    torch::NoGradGuard no_grad;
    auto log_probs = net->forward(images, targets);
    run.eval_loss_after = language_model_loss(log_probs, targets, masks).item<double>();
  }
  for (const auto& [name, tensor] : model::module_state_dict(*net)) {
    run.sums_after[name] = tensor.to(torch::kDouble).sum().item<double>();
  }
  return run;
}

void print_comparison(const std::string& title, const ParityRun& run, const std::vector<double>& want_losses,
                      double want_eval, const nlohmann::json& want_sums) {
  std::cout << std::setprecision(10) << "[" << title << "]\n";
  for (size_t i = 0; i < want_losses.size() && i < run.losses.size(); ++i) {
    std::cout << "  loss " << i << ": ours " << run.losses[i] << " want " << want_losses[i] << " rel "
              << relative_error(run.losses[i], want_losses[i]) << "\n";
  }
  if (want_eval > 0) {
    std::cout << "  eval loss: ours " << run.eval_loss_after << " want " << want_eval << " rel "
              << relative_error(run.eval_loss_after, want_eval) << "\n";
  }
  for (const auto& [name, value] : want_sums.items()) {
    auto it = run.sums_after.find(name);
    if (it == run.sums_after.end()) continue;
    std::cout << "  sum " << name << ": ours " << it->second << " want " << value.get<double>() << " rel "
              << relative_error(it->second, value.get<double>()) << "\n";
  }
}

// ---------------------------------------------------------------------------------------------------------
// The shared fixture (parity/train/expected.json), its random masks replayed.

class TrainParityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    expected_ = new nlohmann::json(read_json(parity_path("train/expected.json")));
    RunOptions options;
    options.dropout = uniform_dropout(0.0);
    options.dropout.attention = 0.1;  // the reference's fixed MultiHeadedAttention dropout
    options.dropout.memory = 0.1;     // the reference's fixed MultiThreadMemory dropout
    options.replay_fixture_rng = true;
    run_ = new ParityRun(run_reference_recipe(*expected_, options));
    print_comparison("fixture, masks replayed", *run_, (*expected_)["train_losses"].get<std::vector<double>>(),
                     (*expected_)["eval_loss_after"].get<double>(), (*expected_)["param_sums_after"]);
  }
  static void TearDownTestSuite() {
    delete run_;
    delete expected_;
  }
  static const nlohmann::json& expected() { return *expected_; }
  static const ParityRun& run() { return *run_; }

  static nlohmann::json* expected_;
  static ParityRun* run_;
};
nlohmann::json* TrainParityTest::expected_ = nullptr;
ParityRun* TrainParityTest::run_ = nullptr;

TEST_F(TrainParityTest, OptimizerHasTwoGroupsWithEachTensorOnce) {
  EXPECT_EQ(run().groups, 2u);
  EXPECT_EQ(run().group0_size, 312u);  // ResNet-101 trunk: 104 convs + 104 batch norms x (weight, bias)
  // The encoder-decoder's 144 distinct tensors: the memory module shared by encoder_decoder.cmn and
  // encoder_decoder.model.cmn counted once (LibTorch lists its 8 tensors under both names).
  EXPECT_EQ(run().group1_size, 144u);
}

TEST_F(TrainParityTest, FirstLossMatchesReference) {
  const double want = expected()["train_losses"][0].get<double>();
  // 1.9e-7 measured, with the memory's dropout mask drawn in the reference's [B,h,T,k] order.
  EXPECT_LT(relative_error(run().losses[0], want), 1e-5) << "ours " << run().losses[0] << " reference " << want;
}

TEST_F(TrainParityTest, LaterLossesMatchReferenceWithinItsRoundingSpread) {
  const auto want = expected()["train_losses"].get<std::vector<double>>();
  ASSERT_EQ(run().losses.size(), want.size());
  // Measured: step 1 9.8e-7 (forward, backward and one Adam step exact), step 2 1.4e-3 (rounding spread).
  const double tolerance[] = {1e-5, 1e-5, 3e-3};
  for (size_t i = 1; i < want.size(); ++i) {
    EXPECT_LT(relative_error(run().losses[i], want[i]), tolerance[i])
        << "step " << i << ": ours " << run().losses[i] << " reference " << want[i];
  }
}

TEST_F(TrainParityTest, EvalLossAfterStepsMatchesReferenceWithinItsRoundingSpread) {
  const double want = expected()["eval_loss_after"].get<double>();
  EXPECT_LT(relative_error(run().eval_loss_after, want), 3e-2)
      << "ours " << run().eval_loss_after << " reference " << want;
}

TEST_F(TrainParityTest, ParamSumsAfterStepsMatchReferenceWithinItsRoundingSpread) {
  for (const auto& [name, value] : expected()["param_sums_after"].items()) {
    auto it = run().sums_after.find(name);
    ASSERT_NE(it, run().sums_after.end()) << "no tensor " << name;
    const double want = value.get<double>();
    // Trunk tensors take lr_ve * sign(g) steps decided by rounding (8% between 1 and 2 threads in the
    // reference); the encoder-decoder's moved 1.4e-3 at most there. memory_matrix also carries the permuted
    // memory masks of every step (3.4e-3 here), hence 1e-2.
    const double tolerance = name.rfind("visual_extractor.", 0) == 0 ? 0.15 : 1e-2;
    EXPECT_LT(relative_error(it->second, want), tolerance) << name << ": ours " << it->second << " reference " << want;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Every Dropout at 0 (what the fixture meant to test): deterministic, compared with the reference's modules run
// the same way with Debian's python3-torch 1.13.1 (2 threads). The first two losses depend on the forward, the
// backward and one Adam update of every parameter; they agree to float32 rounding.

class TrainParityNoDropoutTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    expected_ = new nlohmann::json(read_json(parity_path("train/expected.json")));
    run_ = new ParityRun(run_reference_recipe(*expected_, RunOptions{}));
    print_comparison("no dropout, reference code", *run_, kReferenceLosses, kReferenceEvalLoss, nlohmann::json::object());
  }
  static void TearDownTestSuite() {
    delete run_;
    delete expected_;
  }
  static const ParityRun& run() { return *run_; }

  // Reference values (R2GenCMN modules, all nn.Dropout p = 0, seed irrelevant).
  static inline const std::vector<double> kReferenceLosses = {1.210660457611084, 0.6398720741271973,
                                                              0.37998300790786743};
  static constexpr double kReferenceEvalLoss = 0.2303507924079895;

  static nlohmann::json* expected_;
  static ParityRun* run_;
};
nlohmann::json* TrainParityNoDropoutTest::expected_ = nullptr;
ParityRun* TrainParityNoDropoutTest::run_ = nullptr;

TEST_F(TrainParityNoDropoutTest, FirstTwoLossesMatchReferenceCode) {
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_LT(relative_error(run().losses[i], kReferenceLosses[i]), 1e-5)
        << "step " << i << ": ours " << run().losses[i] << " reference " << kReferenceLosses[i];
  }
}

TEST_F(TrainParityNoDropoutTest, ThirdLossAndEvalLossMatchReferenceCodeWithinRoundingSpread) {
  // Our own spread, same code and CPU (2-core AMD EPYC, avx512), only the thread count changed: third loss
  // 0.38031 (1 thread), 0.37960 (2), 0.37949 (3), 0.37948 (4), i.e. 2.2e-3 of the value; eval loss 0.2246 to
  // 0.2311 (2.9%). At 2 threads this CPU gives 1.01e-3 from the reference's value (earlier CI machines stayed
  // < 1e-3 before), so the bound is that measured spread, not a guess: 3e-3 and 3e-2 as for the fixture above.
  EXPECT_LT(relative_error(run().losses[2], kReferenceLosses[2]), 3e-3)
      << "ours " << run().losses[2] << " reference " << kReferenceLosses[2];
  EXPECT_LT(relative_error(run().eval_loss_after, kReferenceEvalLoss), 3e-2)
      << "ours " << run().eval_loss_after << " reference " << kReferenceEvalLoss;
}

TEST_F(TrainParityNoDropoutTest, DiffersFromFixtureBecauseTheFixtureHadDropout) {
  // Guards the explanation above: with dropout really off, the first loss is NOT the fixture's.
  EXPECT_GT(relative_error(run().losses[0], 1.2725341320037842), 1e-2);
}

}  // namespace
}  // namespace cmn::train
