// The image-report alignment head (model/alignment.h, issue 14): where its weights live, what a model without it
// does, BLIP-2's hard-negative mining, that ITC + ITM training learns to tell matched from mismatched pairs,
// retrieval from a stored index (through a checkpoint round trip), and that scoring a given report is the
// decoder's own log-probabilities.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cmn/model/alignment.h"
#include "cmn/model/checkpoint.h"
#include "cmn/model/decoding.h"
#include "cmn/model/r2gencmn.h"

namespace cmn::model {
namespace {

ModelConfig small_config(int64_t align_queries) {
  ModelConfig c;
  c.visual_extractor = kPatchStatsTrunk;  // parameter-free: fast, and images [B,1,3,224,224] are enough
  c.d_vf = 64;
  c.d_model = 32;
  c.d_ff = 32;
  c.num_heads = 4;
  c.num_layers = 1;
  c.cmm_size = 16;
  c.cmm_dim = 32;
  c.topk = 4;
  c.vocab_size = 20;
  c.views = 1;
  c.dropout = 0;
  c.drop_prob_lm = 0;
  c.align_queries = align_queries;
  c.align_layers = 1;
  c.align_dim = 16;
  return c;
}

TEST(Alignment, WeightsLiveUnderAlignmentAndShareTheDecodersEmbedding) {
  torch::manual_seed(1);
  R2GenCMN with(small_config(4));
  std::set<std::string> names;
  for (const auto& p : with->named_parameters()) names.insert(p.key());
  for (const char* key : {"alignment.query_tokens", "alignment.cls_token", "alignment.logit_scale", "alignment.itm_head.weight",
                          "alignment.vision_proj.weight", "alignment.text_proj.weight",
                          "alignment.image_layers.0.src_attn.linears.0.weight",
                          "alignment.fusion_layers.0.src_attn.linears.0.weight",
                          "alignment.text_layers.0.self_attn.linears.0.weight"}) {
    EXPECT_TRUE(names.count(key)) << key;
  }
  for (const auto& n : names) EXPECT_EQ(n.find("alignment.") == 0 && n.find("lut") != std::string::npos, false) << n;
  EXPECT_EQ(with->alignment->query_tokens.sizes(), (std::vector<int64_t>{4, 32}));
  EXPECT_NEAR(with->alignment->temperature().item<double>(), 0.07, 1e-7);  // BLIP-2 initial temperature

  R2GenCMN without(small_config(0));
  for (const auto& p : without->named_parameters()) EXPECT_NE(p.key().rfind("alignment.", 0), 0u) << p.key();
  EXPECT_FALSE(without->has_alignment());
  // No head, no score: absent, not a made-up number.
  EXPECT_FALSE(without->consistency(torch::zeros({1, 49, 32}), {{1, 2}}).has_value());
  // A published checkpoint's state dict (no alignment keys) does not fit a model that expects the head.
  EXPECT_THROW(load_state_dict(*with, module_state_dict(*without)), c10::Error);
}

TEST(Alignment, HardNegativesFollowTheSimilaritiesAndNeverPickAnIdenticalReport) {
  torch::manual_seed(3);
  // Studies 0 and 1 have the same report; 2 and 3 differ from everything. Study 0's logits put nearly all weight
  // on report 1 (identical: never a negative) and the rest on report 3.
  auto same = torch::eye(4, torch::kBool);
  same[0][1] = true;
  same[1][0] = true;
  auto logits = torch::zeros({4, 4});
  logits[0][1] = 50.0;
  logits[0][3] = 10.0;
  for (int draw = 0; draw < 50; ++draw) {
    const auto m = mine_hard_negatives(logits, same);
    ASSERT_EQ(m.rows.numel(), 4);
    for (int64_t k = 0; k < 4; ++k) {
      const int64_t i = m.rows[k].item<int64_t>();
      EXPECT_FALSE(same[i][m.texts[k].item<int64_t>()].item<bool>());
      EXPECT_FALSE(same[m.images[k].item<int64_t>()][i].item<bool>());
    }
    EXPECT_EQ(m.texts[0].item<int64_t>(), 3);  // e^10 against e^0 + e^0: report 3 nearly always
  }
  // Every report identical: nothing to mine.
  EXPECT_EQ(mine_hard_negatives(torch::zeros({3, 3}), torch::ones({3, 3}, torch::kBool)).rows.numel(), 0);
}

// Two kinds of "studies" (patch features around one of two means) with two kinds of reports. ITC + ITM alone
// (the cmn-train pre-training stage) must learn to tell a study's own kind of report from the other kind's.
class AlignmentTraining : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(11);
    model_ = R2GenCMN(small_config(4));
    means_ = torch::randn({2, 49, 64});
    reports_ = {{{3, 4, 5, 6}, {3, 4, 5, 11}}, {{7, 8, 9, 10}, {7, 8, 9, 12}}};  // per kind, two phrasings
  }
  // kind[b] -> memory [B,49,32] (through the real encoder)
  torch::Tensor memory(const std::vector<int>& kinds) {
    std::vector<torch::Tensor> att;
    for (int k : kinds) att.push_back(means_[k] + 0.3 * torch::randn({49, 64}));
    return model_->encoder_decoder->encode(torch::stack(att));
  }
  // [B,L] targets as the trainer feeds them: 0, w..., 0, padding
  torch::Tensor targets(const std::vector<std::vector<int64_t>>& reports) {
    auto t = torch::zeros({static_cast<int64_t>(reports.size()), 7}, torch::kLong);
    for (size_t b = 0; b < reports.size(); ++b) {
      for (size_t i = 0; i < reports[b].size(); ++i) t[static_cast<int64_t>(b)][static_cast<int64_t>(i) + 1] = reports[b][i];
    }
    return t;
  }
  void train(int steps) {
    torch::optim::Adam adam(model_->parameters(), torch::optim::AdamOptions(2e-3));
    model_->train();
    for (int step = 0; step < steps; ++step) {
      std::vector<int> kinds;
      std::vector<std::vector<int64_t>> reports;
      for (int b = 0; b < 8; ++b) {
        const int k = (b + step) % 2;
        kinds.push_back(k);
        reports.push_back(reports_[k][static_cast<size_t>((b / 2 + step) % 2)]);
      }
      // The two phrasings of a kind state the same findings: positives of each other (the trainer marks them
      // from the labeler's findings); without that every rephrasing would be a false negative.
      auto same = torch::zeros({8, 8}, torch::kBool);
      for (int i = 0; i < 8; ++i) {
        for (int j = 0; j < 8; ++j) same[i][j] = kinds[static_cast<size_t>(i)] == kinds[static_cast<size_t>(j)];
      }
      auto losses =
          alignment_losses(*model_->alignment, *model_->encoder_decoder, memory(kinds), targets(reports), same);
      ASSERT_TRUE(std::isfinite(losses.itc.item<double>()) && std::isfinite(losses.itm.item<double>()));
      adam.zero_grad();
      (losses.itc + losses.itm).backward();
      adam.step();
    }
    model_->eval();
    model_->reset_inference_cache();
  }
  R2GenCMN model_{nullptr};
  torch::Tensor means_;
  std::vector<std::vector<std::vector<int64_t>>> reports_;
};

TEST_F(AlignmentTraining, ItcAndItmLearnToTellMatchedFromMismatched) {
  // Untrained, ITM has no opinion; gradients reach the head and the shared token embedding.
  {
    auto losses = alignment_losses(*model_->alignment, *model_->encoder_decoder, memory({0, 1, 0, 1}),
                                   targets({reports_[0][0], reports_[1][0], reports_[0][1], reports_[1][1]}));
    (losses.itc + losses.itm).backward();
    EXPECT_TRUE(model_->alignment->query_tokens.grad().defined());
    EXPECT_TRUE(model_->alignment->logit_scale.grad().defined());
    EXPECT_TRUE(model_->encoder_decoder->model->tgt_tokens().lut->weight.grad().defined());
    model_->zero_grad();
  }
  train(120);
  torch::NoGradGuard no_grad;
  const std::vector<int> kinds = {0, 1, 0, 1, 0, 1, 0, 1};
  const auto m = memory(kinds);
  std::vector<std::vector<int64_t>> own, other;
  for (size_t b = 0; b < kinds.size(); ++b) {
    own.push_back(reports_[static_cast<size_t>(kinds[b])][b / 4]);
    other.push_back(reports_[static_cast<size_t>(1 - kinds[b])][b / 4]);
  }
  const auto c_own = *model_->consistency(m, own);
  const auto c_other = *model_->consistency(m, other);
  for (size_t b = 0; b < kinds.size(); ++b) {
    EXPECT_GT(c_own[b], 0.8) << "study " << b;
    EXPECT_LT(c_other[b], 0.2) << "study " << b;
  }
  // A trailing end token and padding do not change the score (the report is cut at its first 0).
  auto own_with_end = own;
  for (auto& r : own_with_end) r.insert(r.end(), {0, 0});
  const auto c_end = *model_->consistency(m, own_with_end);
  for (size_t b = 0; b < kinds.size(); ++b) EXPECT_NEAR(c_end[b], c_own[b], 1e-6);
}

TEST_F(AlignmentTraining, RetrievalFindsTheStudysKindAndSurvivesACheckpoint) {
  train(120);
  torch::NoGradGuard no_grad;
  // The index: the four reports, embedded by the trained text side.
  std::vector<std::vector<int64_t>> stored = {reports_[0][0], reports_[1][0], reports_[0][1], reports_[1][1]};
  const auto tokens = pad_reports(stored, torch::kCPU);  // [4,4]
  model_->set_retrieval_index(embed_reports(*model_->alignment, *model_->encoder_decoder, tokens), tokens);
  EXPECT_EQ(model_->config().align_index_size, 4);
  EXPECT_EQ(model_->config().align_index_length, 4);
  const auto m = memory({0, 1});
  const auto found = similar_reports(*model_->alignment, m, 2);
  ASSERT_EQ(found.size(), 2u);
  for (int k = 0; k < 2; ++k) {
    ASSERT_EQ(found[static_cast<size_t>(k)].size(), 2u);
    for (const auto& f : found[static_cast<size_t>(k)]) {
      EXPECT_EQ(f.ids.front(), reports_[static_cast<size_t>(k)][0].front()) << "kind " << k;  // both of its kind
    }
    EXPECT_GE(found[static_cast<size_t>(k)][0].similarity, found[static_cast<size_t>(k)][1].similarity);
  }
  EXPECT_EQ(similar_reports(*model_->alignment, m, 10)[0].size(), 4u);  // k is capped at the index size

  // The index is part of the weights: a model built from the saved config loads it and retrieves the same.
  const auto path = std::filesystem::temp_directory_path() / ("cmn_align_index_" + std::to_string(::getpid()) + ".pth");
  write_checkpoint(path.string(), module_state_dict(*model_));
  R2GenCMN reloaded(model_->config());
  load_state_dict(*reloaded, read_checkpoint(path.string()).state_dict);
  std::filesystem::remove(path);
  reloaded->eval();
  const auto again = similar_reports(*reloaded->alignment, reloaded->encoder_decoder->encode(torch::zeros({1, 49, 64})), 4);
  const auto before = similar_reports(*model_->alignment, model_->encoder_decoder->encode(torch::zeros({1, 49, 64})), 4);
  ASSERT_EQ(again[0].size(), before[0].size());
  for (size_t j = 0; j < again[0].size(); ++j) {
    EXPECT_EQ(again[0][j].ids, before[0][j].ids);
    EXPECT_NEAR(again[0][j].similarity, before[0][j].similarity, 1e-6);
  }
}

TEST(ScoreReports, TeacherForcedLogProbsAreTheDecodersOwn) {
  torch::manual_seed(5);
  R2GenCMN model(small_config(4));
  model->eval();
  c10::InferenceMode guard;
  const auto images = torch::rand({2, 1, 3, 224, 224});
  DecodingOptions greedy;
  greedy.beam_size = 1;
  greedy.method = DecodingMethod::kGreedy;
  greedy.block_trigrams = false;
  greedy.max_length = 8;
  const auto pass = model->infer(images, greedy);
  std::vector<std::vector<int64_t>> reports;
  for (const auto& h : pass.decoded.best) {
    std::vector<int64_t> ids = h.ids;
    if (!ids.empty() && ids.back() == 0) ids.pop_back();
    reports.push_back(ids);
  }
  const auto scored = model->score_reports(images, reports);
  ASSERT_EQ(scored.size(), 2u);
  for (size_t b = 0; b < 2; ++b) {
    const auto& decoded = pass.decoded.best[b].token_log_probs;  // one per generated id (and the end token)
    ASSERT_EQ(scored[b].token_log_probs.size(), reports[b].size() + 1);
    for (size_t t = 0; t < decoded.size(); ++t) EXPECT_NEAR(scored[b].token_log_probs[t], decoded[t], 1e-4) << t;
    // The consistency of the pass's memory and of a fresh pass agree.
    ASSERT_TRUE(scored[b].consistency.has_value());
    EXPECT_NEAR(*scored[b].consistency, (*model->consistency(pass.memory, reports))[b], 1e-5);
    EXPECT_GE(*scored[b].consistency, 0.0);
    EXPECT_LE(*scored[b].consistency, 1.0);
  }
}

}  // namespace
}  // namespace cmn::model
