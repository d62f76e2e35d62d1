// What the service does with a request before the engine (server/request_intake.h), called directly: the order
// of the checks, the decode budget they leave, and the study assembly that spends it. The same functions run
// under fuzz/generate_request_fuzzer.cc; the tests through a real server are in report_service_test.cc and
// request_memory_test.cc.
#include "cmn/server/request_intake.h"

#include <gtest/gtest.h>

#include <cmath>

#include "cmn/server/request_memory.h"
#include "server_test_util.h"

namespace cmn::server {
namespace {

using namespace cmn::server::testing;  // NOLINT: test helpers

constexpr int64_t kMiB = int64_t{1} << 20;

pipeline::BundleInfo untrained_two_view_model() {
  pipeline::BundleInfo info;
  info.name = "intake-test";
  info.untrained = true;
  info.config.views = 2;
  return info;
}

const std::string& nih() {
  static const std::string bytes = chest("NIH-ChestXray14_DX_implicitLE.dcm");
  return bytes;
}

TEST(PlanRequestTest, EachCheckAnswersWithItsOwnCodeBeforeAnyDecoding) {
  const pipeline::BundleInfo model = untrained_two_view_model();
  const LimitsOptions limits;
  const auto study = study_options_for(model, StudyConfig(), limits);
  EXPECT_EQ(study.views, 2);
  EXPECT_EQ(study.read.max_pixels, limits.max_pixels);

  auto none = plan_request(v1::GenerateReportRequest(), model, study, limits);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument) << none.status();

  // Too many instances is refused before their bytes are looked at (they are not DICOM here).
  v1::GenerateReportRequest many;
  for (int i = 0; i <= limits.max_instances; ++i) many.add_instances()->set_data("not dicom");
  auto too_many = plan_request(many, model, study, limits);
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(too_many.status().message().find("at most 16"), std::string::npos) << too_many.status();

  v1::GenerateReportRequest one = make_request({nih()});
  one.set_require_trained_model(true);
  EXPECT_EQ(plan_request(one, model, study, limits).status().code(), absl::StatusCode::kFailedPrecondition);
  one.set_require_trained_model(false);

  // A config the bundle reader would refuse still gives a status here, not an exception.
  pipeline::BundleInfo odd = model;
  odd.config.sample_method = "nucleus";
  auto bad_method = plan_request(one, odd, study, limits);
  EXPECT_EQ(bad_method.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_method.status().message().find("sample_method 'nucleus'"), std::string::npos) << bad_method.status();

  LimitsOptions tiny = limits;
  tiny.max_request_mb = 1;
  auto over = plan_request(one, model, study, tiny);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(over.status().message().find("limits.max_request_mb 1"), std::string::npos) << over.status();
}

TEST(PlanRequestTest, DecodeBudgetIsTheCeilingLessTheRequestAndTheModelState) {
  const pipeline::BundleInfo model = untrained_two_view_model();
  LimitsOptions limits;
  const auto study = study_options_for(model, StudyConfig(), limits);
  v1::GenerateReportRequest request = make_request({nih(), nih()}, /*max_length=*/500, /*beam_size=*/9);
  auto plan = plan_request(request, model, study, limits);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->decoding.beam_size, limits.max_beam_size);
  EXPECT_EQ(plan->decoding.max_length, limits.max_length);
  EXPECT_EQ(plan->warnings.size(), 2u) << "both clamps are reported";
  const auto state = estimate_model_state(model.config, plan->decoding, 2, study.image.size, false);
  EXPECT_EQ(plan->decode_budget,
            limits.max_request_mb * kMiB - static_cast<int64_t>(request.ByteSizeLong()) - state.total());
}

TEST(AssembleRequestStudyTest, SpendsTheBudgetAndNamesTheCeilingWhenItIsTooSmall) {
  const pipeline::BundleInfo model = untrained_two_view_model();
  const LimitsOptions limits;
  const auto study = study_options_for(model, StudyConfig(), limits);
  const v1::GenerateReportRequest request = make_request({nih()});

  // The NIH image needs 10 MiB to decode (request_memory_test.cc): 10 MiB is enough, one byte less is not.
  auto fits = assemble_request_study(request, study, 10 * kMiB, limits);
  ASSERT_TRUE(fits.ok()) << fits.status();
  ASSERT_EQ(fits->images.size(), 2u) << "one instance fills both view slots";
  for (const auto& image : fits->images) {
    EXPECT_EQ(image.data.size(), static_cast<size_t>(3 * study.image.size * study.image.size));
  }
  auto short_by_one = assemble_request_study(request, study, 10 * kMiB - 1, limits);
  EXPECT_EQ(short_by_one.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(short_by_one.status().message().find("(limits.max_request_mb 2048)"), std::string::npos)
      << short_by_one.status();
  // Instances are named by position, never by the caller's file name.
  EXPECT_EQ(short_by_one.status().message().find("file0.dcm"), std::string::npos) << short_by_one.status();
}

// study.draft_decode reaches the decoder: the JPEG 2000 study is decoded at the size of the model input's
// level (tests/preprocessing/draft_decode_test.cc checks the images themselves), so its model inputs differ
// from the exact path's, but only slightly; a native instance is decoded exactly either way.
TEST(AssembleRequestStudyTest, DraftDecodeIsTheStudyConfigsAndStaysCloseToTheExactInputs) {
  const pipeline::BundleInfo model = untrained_two_view_model();
  const LimitsOptions limits;
  StudyConfig draft_config;
  draft_config.draft_decode = true;
  const auto exact_options = study_options_for(model, StudyConfig(), limits);
  const auto draft_options = study_options_for(model, draft_config, limits);
  EXPECT_EQ(exact_options.read.draft_min_side, 0);
  EXPECT_EQ(draft_options.read.draft_min_side, exact_options.image.size);

  auto mean_abs_difference = [](const preprocessing::FloatImage& a, const preprocessing::FloatImage& b) {
    double sum = 0;
    for (size_t i = 0; i < a.data.size(); ++i) sum += std::abs(a.data[i] - b.data[i]);
    return sum / static_cast<double>(a.data.size());
  };
  const v1::GenerateReportRequest j2k = make_request({chest("RG1_J2KI.dcm")});
  auto exact = assemble_request_study(j2k, exact_options, 1024 * kMiB, limits);
  auto draft = assemble_request_study(j2k, draft_options, 1024 * kMiB, limits);
  ASSERT_TRUE(exact.ok() && draft.ok()) << exact.status() << " / " << draft.status();
  ASSERT_EQ(exact->images[0].data.size(), draft->images[0].data.size());
  const double j2k_difference = mean_abs_difference(exact->images[0], draft->images[0]);
  EXPECT_GT(j2k_difference, 0.0) << "the draft setting did not reach the JPEG 2000 decoder";
  EXPECT_LT(j2k_difference, 0.05) << "normalised units: ~2.5 grey levels";

  const v1::GenerateReportRequest native = make_request({nih()});
  auto native_exact = assemble_request_study(native, exact_options, 1024 * kMiB, limits);
  auto native_draft = assemble_request_study(native, draft_options, 1024 * kMiB, limits);
  ASSERT_TRUE(native_exact.ok() && native_draft.ok());
  EXPECT_EQ(native_exact->images[0].data, native_draft->images[0].data);
}

}  // namespace
}  // namespace cmn::server
