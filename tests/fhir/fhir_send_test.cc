// post_fhir_report against a real HTTP server on loopback that records what it receives.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cmn/pipeline/fhir_report.h"
#include "common/fhir_validator.h"
#include "fhir/loopback_fhir_server.h"

namespace cmn::pipeline {
namespace {

using cmn::testing::LoopbackFhirServer;

std::string report() {
  FhirReportInput in;
  in.study_instance_uid = "1.2.826.0.1.3680043.10.543.7.2";
  in.text = "the heart is enlarged .";
  in.model = {"phantom-r2gencmn", "3", "sha256:" + std::string(64, 'c'), "cmn", false};
  return *write_fhir_report(in);
}

const RetryPolicy kFast{3, 0.01, 0.02};

FhirTarget target(const std::string& url) {
  FhirTarget t;
  t.base_url = url;
  t.timeout_s = 5;
  return t;
}

TEST(FhirSendTest, PostsTheReportAsFhirJsonWithConditionalCreate) {
  LoopbackFhirServer server;
  const std::string body = report();
  ASSERT_TRUE(post_fhir_report(body, target(server.base_url("/fhir/")), kFast).ok());
  const auto got = server.received();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].path, "/fhir/DiagnosticReport");
  EXPECT_EQ(got[0].content_type, "application/fhir+json");
  EXPECT_EQ(got[0].body, body);
  const std::string id = nlohmann::json::parse(body)["identifier"][0]["value"];
  EXPECT_EQ(got[0].if_none_exist, "identifier=urn:ietf:rfc:3986|" + id);
  const auto v = cmn::testing::validate_fhir_json(got[0].body);
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
}

TEST(FhirSendTest, ServerErrorsAreRetriedThenSucceed) {
  LoopbackFhirServer server;
  server.script({503, 500});
  EXPECT_TRUE(post_fhir_report(report(), target(server.base_url()), kFast).ok());
  EXPECT_EQ(server.received().size(), 3u);
}

TEST(FhirSendTest, FailuresNameTheAttemptsAndRefusalsAreNotRetried) {
  LoopbackFhirServer server;
  server.script({503, 503, 503});
  const absl::Status busy = post_fhir_report(report(), target(server.base_url()), kFast);
  EXPECT_EQ(busy.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(busy.message().find("after 3 attempts"), std::string::npos) << busy;
  EXPECT_NE(busy.message().find("HTTP 503"), std::string::npos) << busy;
  server.script({422});
  const absl::Status refused = post_fhir_report(report(), target(server.base_url()), kFast);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(server.received().size(), 4u) << "a 4xx is not retried";
  // The message names the report by its identifier, never by study or patient attributes.
  EXPECT_EQ(refused.message().find("1.2.826.0.1.3680043.10.543.7.2"), std::string::npos) << refused;
}

TEST(FhirSendTest, UnreachableAndBadTargetsAreErrors) {
  int port = 0;
  {
    LoopbackFhirServer gone;  // a port that was just free
    port = std::stoi(gone.base_url("").substr(std::string("http://127.0.0.1:").size()));
  }
  const absl::Status unreachable =
      post_fhir_report(report(), target("http://127.0.0.1:" + std::to_string(port) + "/fhir"), {2, 0.01, 0.01});
  EXPECT_EQ(unreachable.code(), absl::StatusCode::kUnavailable) << unreachable;
  EXPECT_NE(unreachable.message().find("after 2 attempts"), std::string::npos) << unreachable;
  EXPECT_EQ(post_fhir_report(report(), target("https://example/fhir")).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(post_fhir_report("{\"resourceType\":\"Patient\"}", target("http://127.0.0.1:1/fhir")).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cmn::pipeline
