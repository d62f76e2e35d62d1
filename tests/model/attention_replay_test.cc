// decoder_cross_attention (one causal teacher-forced pass) against the incremental decoder run token by token with
// its cross-attention kept, on the dev parity model and its two beam-3 reports of different lengths: the maps an
// attention-dir shows are the decoding pass's own numbers.
#include <algorithm>

#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "cmn/model/decoding.h"
#include "cmn/model/r2gencmn.h"
#include "test_paths.h"

namespace cmn::model {
namespace {

using cmn::testing::parity_path;

// The oracle: one decoder call per token, each study fed its own chosen tokens, attention kept.
std::vector<torch::Tensor> stepwise(BaseCMNImpl& model, const torch::Tensor& memory,
                                    const std::vector<std::vector<int64_t>>& ids) {
  const auto b = static_cast<int64_t>(ids.size());
  size_t longest = 0;
  for (const auto& s : ids) longest = std::max(longest, s.size());
  CmnStepModel stepper(model, memory, /*keep_attention=*/true);
  std::vector<std::vector<torch::Tensor>> steps(ids.size());
  auto tokens = torch::zeros({b}, torch::kLong);                                  // bos
  for (size_t t = 0; t < longest; ++t) {
    stepper.step(tokens);
    auto per_layer = torch::stack(stepper.cache().cross_attention).mean(2);       // [layers,B,S]
    std::vector<int64_t> next(static_cast<size_t>(b), 0);
    for (int64_t s = 0; s < b; ++s) {
      const auto& seq = ids[static_cast<size_t>(s)];
      if (t >= seq.size()) continue;
      steps[static_cast<size_t>(s)].push_back(per_layer.select(1, s));           // [layers,S]
      next[static_cast<size_t>(s)] = seq[t];
    }
    tokens = torch::tensor(next, torch::kLong);
  }
  std::vector<torch::Tensor> out;
  for (auto& s : steps) out.push_back(s.empty() ? torch::Tensor() : torch::stack(s, 1));  // [layers,T,S]
  return out;
}

TEST(AttentionReplayTest, OneCausalPassEqualsTheIncrementalDecoderTokenByToken) {
  torch::set_num_threads(1);
  c10::InferenceMode guard;
  auto model = load_r2gencmn(parity_path("dev/model.pth"), read_model_config(parity_path("dev/config.json")));
  auto att = torch::jit::load(parity_path("dev/expected.pt")).attr("att_feats").toTensor();  // [2,196,2048]
  auto options = decoding_options_from(model->config());
  auto pass = model->infer_features(att, options);
  std::vector<std::vector<int64_t>> ids;
  for (const auto& h : pass.decoded.best) {
    ids.push_back(h.ids);
    if (!ids.back().empty() && ids.back().back() == 0) ids.back().pop_back();  // no eos step
  }
  ids.push_back({});                                           // a study with nothing to show
  ids[1].resize(ids[1].size() / 2);                            // lengths differ: padding must not leak
  auto memory = torch::cat({pass.memory, pass.memory.narrow(0, 0, 1)});  // [3,S,d]

  const auto fast = decoder_cross_attention(*model->encoder_decoder, memory, ids);
  const auto oracle = stepwise(*model->encoder_decoder, memory, ids);
  ASSERT_EQ(fast.size(), 3u);
  for (size_t s = 0; s < 2; ++s) {
    ASSERT_TRUE(fast[s].defined()) << "study " << s;
    ASSERT_EQ(fast[s].sizes(), oracle[s].sizes()) << "study " << s;
    EXPECT_EQ(fast[s].size(1), static_cast<int64_t>(ids[s].size()));
    EXPECT_LT((fast[s] - oracle[s]).abs().max().item<double>(), 1e-5) << "study " << s;
    // Each row is a distribution over the 196 patches.
    EXPECT_LT((fast[s].sum(-1) - 1).abs().max().item<double>(), 1e-4);
  }
  EXPECT_FALSE(fast[2].defined());
}

}  // namespace
}  // namespace cmn::model
