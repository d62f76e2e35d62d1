// The engine carries the alignment head (issue 14): every study decoded by Replica::run or by the in-flight loop
// gets its consistency, the same whichever path decoded it; Replica::score gives a given report the decoder's own
// log-probs and the same consistency; a model without the head gives none and refuses retrieval.
#include <memory>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cmn/engine/flight.h"
#include "cmn/model/r2gencmn.h"
#include "engine_test_util.h"

namespace cmn::engine {
namespace {

using namespace cmn::engine::testing;  // NOLINT: test helpers

// A small 4-view model with an (untrained) alignment head over the default vocabulary.
std::shared_ptr<const Model> aligned_model() {
  model::set_threads(1);
  auto tokenizer = model::Tokenizer::from_vocab_file(std::string(CMN_SOURCE_DIR) + "/configs/default_vocab.txt",
                                                     model::CleaningRule::kIuXray);
  model::ModelConfig c;
  c.visual_extractor = model::kPatchStatsTrunk;
  c.d_vf = 64;
  c.d_model = 32;
  c.d_ff = 32;
  c.num_heads = 4;
  c.num_layers = 1;
  c.cmm_size = 16;
  c.cmm_dim = 32;
  c.topk = 4;
  c.views = 4;
  c.vocab_size = tokenizer.vocab_size();
  c.align_queries = 4;
  c.align_dim = 16;
  torch::manual_seed(21);
  model::R2GenCMN network(c);
  network->eval();
  return std::make_shared<const Model>(network.ptr(), std::move(tokenizer), ModelIdentity{"aligned-test", "1", "", true});
}

TEST(AlignmentEngine, EveryDecodedStudyGetsOneConsistencyWhicheverPathDecodedIt) {
  auto created = Replica::create(aligned_model());
  ASSERT_TRUE(created.ok()) << created.status();
  std::shared_ptr<Replica> replica = std::move(*created);
  const auto studies = fixture_studies();
  const auto decoding = beam(3, 12);
  auto batch = replica->run(studies, decoding);
  ASSERT_TRUE(batch.ok()) << batch.status();
  for (const auto& s : batch->studies) {
    ASSERT_TRUE(s.consistency.has_value());
    EXPECT_GE(*s.consistency, 0.0);
    EXPECT_LE(*s.consistency, 1.0);
  }
  // The in-flight loop (cmn-server's path): the same number for the same study.
  Flight flight(replica);
  ASSERT_TRUE(flight.join({{studies[1], decoding, {}}}).ok());
  std::vector<FlightResult> done;
  while (!flight.empty()) {
    auto finished = flight.step();
    ASSERT_TRUE(finished.ok()) << finished.status();
    for (auto& r : *finished) done.push_back(std::move(r));
  }
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].study.ids, batch->studies[1].ids);
  ASSERT_TRUE(done[0].study.consistency.has_value());
  EXPECT_NEAR(*done[0].study.consistency, *batch->studies[1].consistency, 1e-5);

  // Scoring the drafts as given reports: the same consistency, and the decoder's log-probs for their tokens.
  std::vector<std::vector<int64_t>> reports;
  for (const auto& s : batch->studies) {
    std::vector<int64_t> ids = s.ids;
    if (!ids.empty() && ids.back() == 0) ids.pop_back();
    reports.push_back(ids);
  }
  auto scored = replica->score(studies, reports);
  ASSERT_TRUE(scored.ok()) << scored.status();
  ASSERT_EQ(scored->size(), 2u);
  for (size_t s = 0; s < 2; ++s) {
    ASSERT_TRUE((*scored)[s].consistency.has_value());
    EXPECT_NEAR(*(*scored)[s].consistency, *batch->studies[s].consistency, 1e-5);
    ASSERT_EQ((*scored)[s].token_log_probs.size(), reports[s].size() + 1);
    double sum = 0;
    for (float lp : (*scored)[s].token_log_probs) sum += lp;
    EXPECT_NEAR((*scored)[s].log_prob, sum, 1e-6);
  }
  // Bad input names the problem.
  auto mismatched = replica->score(studies, {reports[0]});
  EXPECT_EQ(mismatched.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(mismatched.status().message().find("1 reports for 2 studies"), std::string::npos);
  // Retrieval needs an index, which this model has not got.
  auto similar = replica->run(studies, decoding, {{false, false, 3}, {false, false, 0}});
  EXPECT_EQ(similar.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(similar.status().message().find("no retrieval index"), std::string::npos);
}

TEST(AlignmentEngine, AModelWithoutTheHeadGivesNoConsistency) {
  auto replica = cpu_replica();  // the parity fixture: R2GenCMN as published, no alignment weights
  ASSERT_NE(replica, nullptr);
  auto batch = replica->run(fixture_studies(), beam(3, 5));
  ASSERT_TRUE(batch.ok()) << batch.status();
  for (const auto& s : batch->studies) EXPECT_FALSE(s.consistency.has_value());
  auto scored = replica->score({fixture_studies()[0]}, {{5, 6, 7}});
  ASSERT_TRUE(scored.ok()) << scored.status();
  EXPECT_FALSE((*scored)[0].consistency.has_value());
  EXPECT_EQ((*scored)[0].token_log_probs.size(), 4u);
}

}  // namespace
}  // namespace cmn::engine
