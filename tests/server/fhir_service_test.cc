// output.fhir over real gRPC on loopback: the response's FHIR R4 DiagnosticReport is valid for FHIR.js and
// carries the response's study, text and model (a real server on 127.0.0.1:0, the untrained 2-view test bundle,
// chest DICOMs from ../shared).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/fhir_validator.h"
#include "server_test_util.h"

namespace cmn::server {
namespace {

using namespace cmn::server::testing;  // NOLINT: test helpers
using nlohmann::json;

TEST(FhirServiceTest, ResponseCarriesAValidDiagnosticReportOfTheStudy) {
  const std::string missing = cmn::testing::fhir_validator_missing();
  ASSERT_TRUE(missing.empty()) << missing;
  RunningServer s = start_server(test_config(untrained_bundle_dir()), untrained_model());
  ASSERT_TRUE(s.server);
  grpc::ClientContext context;
  set_deadline(&context, std::chrono::seconds(120));
  auto request = make_request({chest("RG1_J2KI.dcm")}, 12);
  request.mutable_output()->set_fhir(true);
  v1::GenerateReportResponse response;
  const grpc::Status status = s.stub->GenerateReport(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_FALSE(response.fhir().empty());
  const auto v = cmn::testing::validate_fhir_json(response.fhir());
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err << "\n" << response.fhir();

  const json r = json::parse(response.fhir());
  EXPECT_EQ(r["resourceType"], "DiagnosticReport");
  EXPECT_EQ(r["status"], "preliminary");
  EXPECT_EQ(r["imagingStudy"][0]["identifier"]["value"], "urn:oid:" + response.study_instance_uid());
  ASSERT_FALSE(response.report().empty());
  // The demo model is untrained: the report says so before the text, and codes nothing.
  const std::string conclusion = r["conclusion"];
  EXPECT_EQ(conclusion.rfind("UNTRAINED", 0), 0u) << conclusion;
  EXPECT_EQ(conclusion.substr(conclusion.size() - response.report().size()), response.report());
  EXPECT_FALSE(r.contains("conclusionCode"));
  const json& device = r["contained"][0];
  EXPECT_EQ(device["resourceType"], "Device");
  EXPECT_EQ(device["deviceName"][0]["name"], response.model().name());
  EXPECT_EQ(device["identifier"][0]["value"], response.model().digest());
  ASSERT_FALSE(response.model().digest().empty());
  if (!response.model().version().empty()) {
    EXPECT_EQ(device["version"][0]["value"], response.model().version());
  }
  EXPECT_FALSE(r.contains("subject"));
}

TEST(FhirServiceTest, NoFhirUnlessAskedAndStreamingFinalCarriesIt) {
  RunningServer s = start_server(test_config(untrained_bundle_dir()), untrained_model());
  ASSERT_TRUE(s.server);
  {
    grpc::ClientContext context;
    set_deadline(&context, std::chrono::seconds(120));
    v1::GenerateReportResponse response;
    ASSERT_TRUE(s.stub->GenerateReport(&context, make_request({chest("RG1_J2KI.dcm")}, 6), &response).ok());
    EXPECT_TRUE(response.fhir().empty());
  }
  grpc::ClientContext context;
  set_deadline(&context, std::chrono::seconds(120));
  auto request = make_request({chest("RG1_J2KI.dcm")}, 6);
  request.mutable_output()->set_fhir(true);
  auto reader = s.stub->StreamReport(&context, request);
  v1::StreamReportResponse message, last;
  while (reader->Read(&message)) last = message;
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_TRUE(last.has_final());
  const json r = json::parse(last.final().fhir());
  EXPECT_EQ(r["imagingStudy"][0]["identifier"]["value"], "urn:oid:" + last.final().study_instance_uid());
}

}  // namespace
}  // namespace cmn::server
