// limits.max_request_mb: a request whose estimated peak memory exceeds the ceiling is refused with
// RESOURCE_EXHAUSTED and the figures, before its images are decoded; below the ceiling it is served.
#include "cmn/server/request_memory.h"

#include <gtest/gtest.h>

#include "server_test_util.h"

namespace cmn::server {
namespace {

using namespace cmn::server::testing;  // NOLINT: test helpers

constexpr int64_t kMiB = int64_t{1} << 20;

// The NIH chest image: 1024 x 1024, 8 bits, one sample -> decode_peak_bytes = 1 Mi x (1 x (1 + 4) + 5) = 10 MiB.
const std::string& nih() {
  static const std::string bytes = chest("NIH-ChestXray14_DX_implicitLE.dcm");
  return bytes;
}

class RequestMemoryTest : public ::testing::Test {
 protected:
  // The ceiling that leaves exactly `decode_mib` MiB (rounded up to whole MiB) for decoding this request.
  int64_t ceiling_leaving(const v1::GenerateReportRequest& request, int64_t decode_mib) {
    const auto& served = untrained_model();
    model::DecodingOptions d;
    d.beam_size = request.decoding().beam_size() > 0 ? request.decoding().beam_size() : served.info.config.beam_size;
    d.max_length = request.decoding().max_length();
    const auto state = estimate_model_state(served.info.config, d, served.info.config.effective_views(),
                                            served.info.image.size, false);
    const int64_t before = static_cast<int64_t>(request.ByteSizeLong()) + state.total();
    return (before + kMiB - 1) / kMiB + decode_mib;
  }

  grpc::Status send(int64_t max_request_mb, const v1::GenerateReportRequest& request) {
    auto config = test_config(untrained_bundle_dir());
    config.limits.max_request_mb = max_request_mb;
    auto s = start_server(config, untrained_model());
    EXPECT_TRUE(s.server);
    if (!s.server) return grpc::Status(grpc::StatusCode::INTERNAL, "no server");
    grpc::ClientContext context;
    set_deadline(&context, std::chrono::seconds(120));
    v1::GenerateReportResponse response;
    return s.stub->GenerateReport(&context, request, &response);
  }
};

TEST_F(RequestMemoryTest, DecodingEstimateIsRowsTimesColumnsTimesSampleCost) {
  preprocessing::InstanceInfo info;
  info.rows = 1024;
  info.columns = 1024;
  info.samples_per_pixel = 1;
  info.bits_allocated = 8;
  EXPECT_EQ(preprocessing::decode_peak_bytes(info), 10 * kMiB);
  info.bits_allocated = 16;
  info.samples_per_pixel = 3;
  EXPECT_EQ(preprocessing::decode_peak_bytes(info), 1024 * 1024 * (3 * 6 + 5));
}

TEST_F(RequestMemoryTest, ModelStateGrowsWithBeamsStepsViewsAndAttention) {
  const auto& config = untrained_model().info.config;
  model::DecodingOptions small;
  small.beam_size = 1;
  small.max_length = 10;
  model::DecodingOptions wide = small;
  wide.beam_size = 5;
  model::DecodingOptions longer = small;
  longer.max_length = 100;
  const auto base = estimate_model_state(config, small, 2, 224, false);
  EXPECT_GT(estimate_model_state(config, wide, 2, 224, false).decode, base.decode);
  EXPECT_GT(estimate_model_state(config, longer, 2, 224, false).decode, base.decode);
  EXPECT_EQ(estimate_model_state(config, small, 4, 224, false).inputs, 2 * base.inputs);
  EXPECT_EQ(base.attention, 0);
  EXPECT_GT(estimate_model_state(config, small, 2, 224, true).attention, 0);
  EXPECT_EQ(base.inputs, 2 * 3 * 224 * 224 * 4);
}

TEST_F(RequestMemoryTest, CeilingBelowTheModelStateRefusesBeforeDecoding) {
  const auto request = make_request({nih()}, 8, 2);
  const grpc::Status status = send(1, request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_NE(status.error_message().find("before decoding its images"), std::string::npos) << status.error_message();
  EXPECT_NE(status.error_message().find("over limits.max_request_mb 1"), std::string::npos) << status.error_message();
}

TEST_F(RequestMemoryTest, ImageTooLargeForWhatIsLeftIsRefusedNamingIt) {
  const auto request = make_request({nih()}, 8, 2);
  // 9 MiB left for a 10 MiB decode: refused, naming the instance by position and its size.
  const grpc::Status refused = send(ceiling_leaving(request, 9), request);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();
  for (const char* part : {"decoding instance[0] (1024x1024, samples 1, bits 8)", "needs an estimated 10 MiB",
                           "limits.max_request_mb"}) {
    EXPECT_NE(refused.error_message().find(part), std::string::npos) << part << " in " << refused.error_message();
  }
  // 11 MiB left: served.
  const grpc::Status served = send(ceiling_leaving(request, 11), request);
  EXPECT_TRUE(served.ok()) << served.error_code() << " " << served.error_message();
}

TEST_F(RequestMemoryTest, HugeDeclaredImageIsRefusedFromItsHeaderAlone) {
  // Rows x Columns say 16000 x 3000 (48 M pixels, within limits.max_pixels) while the Pixel Data holds 1 M:
  // decoding it would fail, so RESOURCE_EXHAUSTED (not INVALID_ARGUMENT) shows the refusal came first.
  const std::string huge = edit_dicom(nih(), {{DCM_Rows, "16000"}, {DCM_Columns, "3000"}});
  const auto request = make_request({huge}, 8, 2);
  const grpc::Status status = send(256, request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_NE(status.error_message().find("16000x3000"), std::string::npos) << status.error_message();
}

TEST_F(RequestMemoryTest, DefaultCeilingServesTheChestStudies) {
  const grpc::Status status = send(ServerConfig().limits.max_request_mb, make_request({nih()}, 8, 2));
  EXPECT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
}

}  // namespace
}  // namespace cmn::server
