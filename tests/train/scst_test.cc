// Self-critical sequence training (cmn/train/scst.h): the loss's gradient sign on hand-made log-probs, the
// direction of one step on a tiny model (a sample that beats the greedy baseline becomes more likely, one that
// loses becomes less likely), and a smoke run of cmn-train's SCST epoch on cached phantom features.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cmn/model/encoder_decoder.h"
#include "cmn/phantom/dataset.h"
#include "cmn/train/config.h"
#include "cmn/train/scst.h"
#include "cmn/train/trainer.h"

namespace cmn::train {
namespace {

namespace fs = std::filesystem;

TEST(ScstLossTest, GradientOnSampledTokensIsMinusAdvantageOverTokenCount) {
  auto log_probs = torch::log_softmax(torch::randn({2, 3, 5}, torch::kDouble), -1).detach().requires_grad_(true);
  auto seq = torch::tensor({0, 2, 4, 0, 0, 3, 0, 0}, torch::kLong).view({2, 4});       // [N,T+1]
  auto mask = torch::tensor({1, 1, 1, 1, 1, 1, 1, 0}, torch::kDouble).view({2, 4});    // bos .. eos
  auto advantage = torch::tensor({1.5, -2.0}, torch::kDouble);
  auto loss = scst_loss(log_probs, seq, mask, advantage);
  loss.backward();
  const double tokens = 5.0;  // scored: row 0 ids 2,4,0 and row 1 ids 3,0
  auto g = log_probs.grad();
  EXPECT_NEAR(g[0][0][2].item<double>(), -1.5 / tokens, 1e-12);
  EXPECT_NEAR(g[0][2][0].item<double>(), -1.5 / tokens, 1e-12);
  EXPECT_NEAR(g[1][0][3].item<double>(), 2.0 / tokens, 1e-12);
  EXPECT_NEAR(g[1][2][0].item<double>(), 0.0, 1e-12);   // after eos: not scored
  EXPECT_NEAR(g.abs().sum().item<double>(), (3 * 1.5 + 2 * 2.0) / tokens, 1e-12);  // nothing else
}

model::ModelConfig tiny_config() {
  model::ModelConfig c;
  c.d_vf = 12;
  c.d_model = 16;
  c.d_ff = 16;
  c.num_heads = 2;
  c.num_layers = 1;
  c.cmm_size = 16;
  c.cmm_dim = 16;
  c.topk = 4;
  c.vocab_size = 4;
  c.max_seq_length = 6;
  return c;
}

// Teacher-forced summed log-prob of `ids` (eos included) given att [1,S,d_vf].
double sequence_log_prob(model::BaseCMNImpl& m, const torch::Tensor& att, const std::vector<int64_t>& ids) {
  torch::NoGradGuard no_grad;
  auto seq = torch::zeros({1, static_cast<int64_t>(ids.size()) + 1}, torch::kLong);
  for (size_t t = 0; t < ids.size(); ++t) seq[0][static_cast<int64_t>(t) + 1] = ids[t];
  auto lp = m.forward(att, seq);                                              // [1,T,V+1]
  return lp.gather(2, seq.narrow(1, 1, seq.size(1) - 1).unsqueeze(2)).sum().item<double>();
}

TEST(ScstStepTest, OneStepMovesTheSampleLogProbWithTheSignOfItsAdvantage) {
  torch::manual_seed(17);
  model::BaseCMN m(tiny_config());
  for (auto& module : m->modules()) {
    if (auto* d = module->as<torch::nn::DropoutImpl>()) d->options.p(0.0);
  }
  auto att = torch::randn({1, 5, 12});  // [1,S,d_vf]
  // Reward: how many times id `target` occurs (any function of the ids would do). Over targets 1..4 some id is
  // rarer in the greedy report than in samples (positive advantages) and some more frequent (negative ones).
  int64_t target = 1;
  const RewardFn reward = [&target](const std::vector<std::vector<int64_t>>& seqs, const std::vector<int64_t>&) {
    std::vector<double> r;
    for (const auto& s : seqs) r.push_back(static_cast<double>(std::count(s.begin(), s.end(), target)));
    return r;
  };
  int positive = 0, negative = 0;
  for (uint64_t trial = 0; trial < 80 && (positive < 2 || negative < 2); ++trial) {
    target = 1 + static_cast<int64_t>(trial % 4);
    const uint64_t seed = 1 + trial;
    ScstOptions o;
    o.samples = 1;
    o.temperature = 3.0;  // flat sampling: samples differ from the greedy report
    o.seed = seed;
    m->zero_grad();
    auto step = scst_step(*m, att, o, reward);
    const double advantage = step.rewards[0] - step.baselines[0];
    if (advantage == 0.0) continue;
    const double before = sequence_log_prob(*m, att, step.samples[0]);
    step.loss.backward();
    std::vector<torch::Tensor> saved;
    {
      torch::NoGradGuard no_grad;
      for (auto& p : m->parameters()) {
        saved.push_back(p.clone());
        if (p.grad().defined()) p.sub_(p.grad(), 0.05);  // one SGD step
      }
    }
    const double after = sequence_log_prob(*m, att, step.samples[0]);
    if (advantage > 0) {
      EXPECT_GT(after, before) << "seed " << seed << ", advantage " << advantage;
      ++positive;
    } else {
      EXPECT_LT(after, before) << "seed " << seed << ", advantage " << advantage;
      ++negative;
    }
    torch::NoGradGuard no_grad;  // back to the same weights for the next seed
    auto params = m->parameters();
    for (size_t i = 0; i < params.size(); ++i) params[i].copy_(saved[i]);
  }
  EXPECT_GE(positive, 1);  // the sign was checked on a sample better than the baseline
  EXPECT_GE(negative + positive, 2);
}

const fs::path kSourceDir = fs::path(__FILE__).parent_path().parent_path().parent_path();

TEST(ScstTrainerTest, ScstEpochAfterCrossEntropyRunsAndMovesTheWeights) {
  const fs::path dir = fs::temp_directory_path() / ("cmn_scst_smoke_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  phantom::DatasetOptions d;
  d.studies = 8;
  d.seed = 5;
  d.val_fraction = 0.25;
  d.test_fraction = 0.25;
  d.render.size = 224;
  phantom::write_dataset(dir.string(), d);
  auto config = load_train_config(
      (kSourceDir / "configs/phantom.yaml").string(),
      {"data.annotation=" + (dir / "annotation.json").string(), "data.image_dir=" + (dir / "images").string(),
       "data.batch_size=2", "model.d_model=32", "model.d_ff=32", "model.cmm_dim=32", "model.cmm_size=64",
       "model.topk=8", "model.num_layers=1", "model.max_seq_length=12", "model.threshold=1",
       "trainer.save_dir=" + (dir / "run").string(), "trainer.cache_visual_features=true",
       "trainer.progress=false", "trainer.epochs=2", "trainer.max_steps_per_epoch=2", "scst.after_epoch=1",
       "scst.samples=2"});
  Trainer trainer(config);
  EXPECT_TRUE(std::isfinite(trainer.train_epoch(1)));  // cross-entropy
  const auto before = trainer.model()->encoder_decoder->logit->weight.clone();
  EXPECT_TRUE(std::isfinite(trainer.train_epoch(2)));  // SCST
  EXPECT_FALSE(torch::equal(before, trainer.model()->encoder_decoder->logit->weight));
  fs::remove_all(dir);
}

TEST(ScstTrainerTest, BadScstKeysAreErrorsNamingTheKey) {
  const auto yaml = (kSourceDir / "configs/iu_xray.yaml").string();
  try {
    load_train_config(yaml, {"scst.samples=0"});
    FAIL() << "scst.samples=0 accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.msg()).find("scst.samples"), std::string::npos) << e.msg();
  }
  EXPECT_THROW(load_train_config(yaml, {"scst.temprature=1"}), c10::Error);
  EXPECT_EQ(load_train_config(yaml).scst.after_epoch, 0);  // off unless asked for: R2GenCMN's recipe
}

}  // namespace
}  // namespace cmn::train
