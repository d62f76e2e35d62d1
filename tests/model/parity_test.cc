// Parity with the reference R2GenCMN, against ../shared/parity/dev (made by running the official code):
// visual features, teacher-forced log-probs, beam and greedy decodes of two 4-view studies.
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "cmn/model/r2gencmn.h"
#include "test_paths.h"

namespace cmn::model {
namespace {

using cmn::testing::parity_path;

torch::Tensor buffer(const std::string& file, const std::string& name) {
  return torch::jit::load(parity_path(file)).attr(name).toTensor();
}

class ParityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    torch::set_num_threads(1);  // ctest runs two tests at once on 2 cores: no oversubscription
    auto config = read_model_config(parity_path("dev/config.json"));
    model_ = new R2GenCMN(load_r2gencmn(parity_path("dev/model.pth"), config));
    images_ = new torch::Tensor(buffer("dev/inputs.pt", "images"));  // [2,4,3,224,224]
  }
  static void TearDownTestSuite() {
    delete model_;
    delete images_;
  }
  static R2GenCMN& model() { return *model_; }
  static const torch::Tensor& images() { return *images_; }

  // The ids of a hypothesis padded with 0 to `length` (the reference's seq rows).
  static std::vector<int64_t> padded(const Hypothesis& h, int64_t length) {
    std::vector<int64_t> out(h.ids);
    out.resize(length, 0);
    return out;
  }
  static std::vector<int64_t> row(const torch::Tensor& seq, int64_t i) {
    auto r = seq[i].to(torch::kLong).contiguous();
    return std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
  }

  static R2GenCMN* model_;
  static torch::Tensor* images_;
};
R2GenCMN* ParityTest::model_ = nullptr;
torch::Tensor* ParityTest::images_ = nullptr;

double max_relative_error(const torch::Tensor& got, const torch::Tensor& want) {
  return ((got - want).abs().max() / want.abs().max()).item<double>();
}

TEST_F(ParityTest, VisualFeaturesMatchReference) {
  c10::InferenceMode guard;
  auto feats = model()->extract(images());
  auto want_att = buffer("dev/expected.pt", "att_feats");  // [2,196,2048]
  auto want_fc = buffer("dev/expected.pt", "fc_feats");    // [2,8192]
  ASSERT_EQ(feats.att.sizes(), want_att.sizes());
  ASSERT_EQ(feats.fc.sizes(), want_fc.sizes());
  EXPECT_LT(max_relative_error(feats.att, want_att), 1e-3);
  EXPECT_LT(max_relative_error(feats.fc, want_fc), 1e-3);
}

TEST_F(ParityTest, TeacherForcedLogProbsMatchReference) {
  c10::InferenceMode guard;
  auto seq = buffer("dev/expected.pt", "tf_seq").to(torch::kLong);  // [2,L]
  auto want = buffer("dev/expected.pt", "tf_logprobs");             // [2,L-1,761]
  auto feats = model()->extract(images());
  auto got = model()->encoder_decoder->forward(feats.att, seq);
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_LT((got - want).abs().max().item<double>(), 1e-4);
}

TEST_F(ParityTest, BeamSearchIdsMatchReference) {
  c10::InferenceMode guard;
  auto want = buffer("dev/expected.pt", "beam_seq");                // [2,60]
  auto want_lp = buffer("dev/expected.pt", "beam_seq_logprobs");    // [2,60,761]
  DecodingOptions options = decoding_options_from(model()->config());
  options.method = DecodingMethod::kBeamSearch;
  options.beam_size = 3;
  options.max_length = want.size(1);
  auto result = model()->generate(images(), options);
  ASSERT_EQ(result.best.size(), 2u);
  for (int64_t s = 0; s < 2; ++s) {
    EXPECT_EQ(padded(result.best[s], want.size(1)), row(want, s)) << "study " << s;
    // Per-token log-probs of the chosen words equal the reference's rows gathered at those words.
    const auto& h = result.best[s];
    for (size_t t = 0; t < h.ids.size(); ++t) {
      const double ref = want_lp[s][static_cast<int64_t>(t)][h.ids[t]].item<double>();
      EXPECT_NEAR(h.token_log_probs[t], ref, 1e-4) << "study " << s << " step " << t;
    }
  }
}

TEST_F(ParityTest, GreedyIdsMatchReference) {
  c10::InferenceMode guard;
  auto want = buffer("dev/expected.pt", "greedy_seq");              // [2,60]
  DecodingOptions options;
  options.method = DecodingMethod::kGreedy;
  options.beam_size = 1;
  options.block_trigrams = false;  // the fixture was decoded without trigram blocking
  options.max_length = want.size(1);
  auto result = model()->generate(images(), options);
  for (int64_t s = 0; s < 2; ++s) {
    EXPECT_EQ(padded(result.best[s], want.size(1)), row(want, s)) << "study " << s;
  }
}

TEST_F(ParityTest, EarlyStopGivesTheSameBeamsAsRunningToMaxLength) {
  c10::InferenceMode guard;
  DecodingOptions options = decoding_options_from(model()->config());
  options.max_length = 120;  // long enough that the beams finish well before the end
  options.early_stop = false;
  auto full = model()->generate(images(), options);
  options.early_stop = true;
  auto early = model()->generate(images(), options);
  for (size_t s = 0; s < full.best.size(); ++s) {
    EXPECT_EQ(early.best[s].ids, full.best[s].ids);
    EXPECT_DOUBLE_EQ(early.best[s].score, full.best[s].score);
  }
  EXPECT_LE(early.steps, full.steps);
}

}  // namespace
}  // namespace cmn::model
