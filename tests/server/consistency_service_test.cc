// The image-report consistency over real gRPC on loopback (issue 14): a bundle with an alignment head answers
// every draft with `consistency`, warns under study.consistency_warn_below, and puts the same number into its DICOM
// SR (checked by PixelMed and dciodvfy) and FHIR report (checked by FHIR.js); a bundle without the head answers
// none and never warns.
#include <cmath>
#include <cstdio>
#include <vector>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cmn/pipeline/dicom_sr.h"
#include "common/fhir_validator.h"
#include "common/sr_validators.h"
#include "server_test_util.h"

namespace cmn::server {
namespace {

using namespace cmn::server::testing;  // NOLINT: test helpers

// The untrained 2-view test model with an (untrained) alignment head: its consistency is a real ITM probability
// of random weights, which is all plumbing needs.
const std::string& aligned_bundle_dir() {
  static const std::string dir = cached_bundle("untrained_aligned_v2", [](const std::string& out) {
    pipeline::InitUntrainedOptions options;
    options.vocab_file = source_path("configs/default_vocab.txt");
    options.views = 2;
    options.seed = 7;
    options.name = "cmn-untrained-aligned-test";
    options.align_queries = 8;
    options.overwrite = true;
    return pipeline::init_untrained(out, options).status();
  });
  return dir;
}

const ServingModel& aligned_model() {
  static const ServingModel model = [] {
    cmn::model::set_threads(1);
    ModelOptions options;
    options.bundle = aligned_bundle_dir();
    auto loaded = load_serving_model(options);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded.ok() ? std::move(*loaded) : ServingModel{};
  }();
  return model;
}

v1::GenerateReportResponse call(RunningServer& s, const v1::GenerateReportRequest& request) {
  grpc::ClientContext context;
  set_deadline(&context, std::chrono::seconds(120));
  v1::GenerateReportResponse response;
  const grpc::Status status = s.stub->GenerateReport(&context, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response;
}

bool has_warning(const v1::GenerateReportResponse& r) {
  for (const auto& w : r.warnings()) {
    if (w == "low image-text consistency: review first") return true;
  }
  return false;
}

TEST(ConsistencyServiceTest, EveryOutputCarriesTheSameScoreAndWarnsUnderTheThreshold) {
  ASSERT_TRUE(cmn::testing::fhir_validator_missing().empty()) << cmn::testing::fhir_validator_missing();
  auto config = test_config(aligned_bundle_dir());
  config.study.consistency_warn_below = 1.0;  // every probability is below 1: every draft is flagged
  RunningServer s = start_server(config, aligned_model());
  ASSERT_TRUE(s.server);
  const std::string image = chest("RG1_J2KI.dcm");
  auto request = make_request({image}, 10);
  request.mutable_output()->set_dicom_sr(true);
  request.mutable_output()->set_fhir(true);
  const auto response = call(s, request);
  ASSERT_TRUE(response.has_consistency());
  const double c = response.consistency();
  EXPECT_GE(c, 0.0);
  EXPECT_LE(c, 1.0);
  EXPECT_TRUE(has_warning(response));
  // The same study again: the same number (a property of images and text, not of the call).
  EXPECT_DOUBLE_EQ(call(s, request).consistency(), c);

  auto sr = pipeline::read_report_sr(response.dicom_sr());
  ASSERT_TRUE(sr.ok()) << sr.status();
  char expected[32];
  std::snprintf(expected, sizeof expected, "%.3f", c);
  EXPECT_NE(sr->consistency_statement.find(std::string("Image-report consistency ") + expected), std::string::npos)
      << sr->consistency_statement;
  EXPECT_NE(sr->consistency_statement.find("review first"), std::string::npos);
  EXPECT_EQ(cmn::testing::sr_validator_problems({response.dicom_sr()}, "TID_2000", {image}), "");

  const auto v = cmn::testing::validate_fhir_json(response.fhir());
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  const auto fhir = nlohmann::json::parse(response.fhir());
  EXPECT_DOUBLE_EQ(fhir["extension"][0]["valueDecimal"].get<double>(), std::round(c * 1000.0) / 1000.0);
}

TEST(ConsistencyServiceTest, AScoredReportGetsTheLogProbsTheSearchSawForTheSameTokens) {
  RunningServer s = start_server(test_config(aligned_bundle_dir()), aligned_model());
  ASSERT_TRUE(s.server);
  auto request = make_request({chest("RG1_J2KI.dcm")}, 10);
  request.mutable_output()->set_token_scores(true);
  const auto draft = call(s, request);
  ASSERT_TRUE(draft.has_consistency());
  EXPECT_FALSE(draft.scored());
  // The draft's own text, given back to be scored. The tokenizer cleans it as R2GenCMN cleans a reference (a
  // report ends with " ."), so the scored tokens are the draft's, then whatever the cleaning added; the draft's
  // tokens get the log-probabilities the search saw (teacher forcing is causal: what follows cannot change them).
  request.set_score_report(draft.report());
  const auto scored = call(s, request);
  EXPECT_TRUE(scored.scored());
  const std::vector<int64_t> draft_ids(draft.token_ids().begin(), draft.token_ids().end());
  const std::vector<int64_t> scored_ids(scored.token_ids().begin(), scored.token_ids().end());
  ASSERT_GE(scored_ids.size(), draft_ids.size());
  EXPECT_EQ(std::vector<int64_t>(scored_ids.begin(), scored_ids.begin() + static_cast<std::ptrdiff_t>(draft_ids.size())),
            draft_ids);
  ASSERT_EQ(scored.token_log_probs_size(), scored.token_ids_size() + 1);  // the end token last
  for (size_t i = 0; i < draft_ids.size(); ++i) {
    EXPECT_NEAR(scored.token_log_probs(static_cast<int>(i)), draft.token_log_probs(static_cast<int>(i)), 1e-3) << i;
  }
  double sum = 0;
  for (float lp : scored.token_log_probs()) sum += lp;
  EXPECT_NEAR(scored.log_prob(), sum, 1e-4);
  ASSERT_TRUE(scored.has_consistency());
  EXPECT_GE(scored.consistency(), 0.0);
  EXPECT_LE(scored.consistency(), 1.0);
  EXPECT_EQ(scored.timings().decode_steps(), 0);
  // Another report of the same study scores differently, and attention maps of a scored report are refused.
  request.set_score_report("the heart is enlarged . large right pleural effusion .");
  const auto other = call(s, request);
  EXPECT_TRUE(other.scored());
  EXPECT_NE(other.log_prob(), scored.log_prob());
  request.mutable_output()->set_attention_maps(true);
  grpc::ClientContext context;
  set_deadline(&context, std::chrono::seconds(120));
  v1::GenerateReportResponse refused;
  const grpc::Status status = s.stub->GenerateReport(&context, request, &refused);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("score_report"), std::string::npos) << status.error_message();
}

TEST(ConsistencyServiceTest, NoHeadNoScoreNoWarning) {
  auto config = test_config(untrained_bundle_dir());
  config.study.consistency_warn_below = 1.0;
  RunningServer s = start_server(config, untrained_model());
  ASSERT_TRUE(s.server);
  auto request = make_request({chest("RG1_J2KI.dcm")}, 6);
  request.mutable_output()->set_fhir(true);
  const auto response = call(s, request);
  EXPECT_FALSE(response.has_consistency());
  EXPECT_FALSE(has_warning(response));
  EXPECT_FALSE(nlohmann::json::parse(response.fhir()).contains("extension"));
}

TEST(ConsistencyServiceTest, ThresholdOutsideZeroToOneIsAConfigError) {
  auto config = load_server_config("", {"model.bundle=b", "study.consistency_warn_below=1.5"});
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("study.consistency_warn_below"), std::string::npos) << config.status();
}

}  // namespace
}  // namespace cmn::server
