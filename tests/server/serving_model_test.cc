// Loading what a server serves (a bundle, or a checkpoint + args + annotation), and request decoding overrides.
#include "cmn/server/serving_model.h"

#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "cmn/server/report_service.h"
#include "server_test_util.h"

namespace cmn::server {
namespace {

using namespace cmn::server::testing;  // NOLINT: test helpers

TEST(ServingModelTest, LoadsAnR2GenCmnCheckpointWithItsArgsAndAnnotation) {
  cmn::model::set_threads(1);
  ModelOptions options;
  options.r2gencmn = shared_path("parity/dev/model.pth");
  options.args = shared_path("parity/dev/config.json");
  options.annotation = shared_path("data/iu_xray/annotation.json");
  auto served = load_serving_model(options);
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_FALSE(served->info.untrained);
  EXPECT_EQ(served->info.name, "model");
  auto digest = pipeline::sha256_file(options.r2gencmn);
  ASSERT_TRUE(digest.ok());
  EXPECT_EQ(served->info.digest, "sha256:" + *digest);
  EXPECT_EQ(served->info.config.effective_views(), 4);
  EXPECT_EQ(served->model->tokenizer().vocab_size(), 760);  // IU X-Ray, threshold 3 (DESIGN.md)
}

TEST(ServingModelTest, BadSourcesNameTheKeyAndTheFile) {
  ModelOptions missing;
  missing.bundle = "/nonexistent/bundle";
  auto a = load_serving_model(missing);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("model.bundle '/nonexistent/bundle'"), std::string::npos) << a.status();

  ModelOptions bad_args;
  bad_args.r2gencmn = shared_path("parity/dev/model.pth");
  bad_args.args = "/nonexistent/args.json";
  bad_args.annotation = shared_path("data/iu_xray/annotation.json");
  auto b = load_serving_model(bad_args);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("model.args"), std::string::npos) << b.status();
}

TEST(ServingModelTest, UntrainedBundleIsRefusedWhenNotAllowed) {
  ModelOptions options;
  options.bundle = untrained_bundle_dir();
  options.allow_untrained = false;
  auto served = load_serving_model(options);
  ASSERT_FALSE(served.ok());
  EXPECT_EQ(served.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(served.status().message().find("model.allow_untrained"), std::string::npos) << served.status();
}

TEST(ServingModelTest, CudaDeviceWithoutCudaIsARefusedStartNamingTheKeyAndCuda) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "a GPU is visible: the no-CUDA refusal cannot be seen here";
  ServerConfig config = test_config(untrained_bundle_dir());
  config.model.device = "cuda";
  auto server = ReportServer::serve(config, untrained_model());
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(server.status().message().find("model.device"), std::string::npos) << server.status();
  EXPECT_NE(server.status().message().find("CUDA"), std::string::npos) << server.status();

  config.model.device = "tpu";
  auto bad = ReportServer::serve(config, untrained_model());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("'tpu'"), std::string::npos) << bad.status();
}

// model.precision: a name that is not a precision, or one this host cannot run, is a refused start naming the
// key; one it can run serves real requests over gRPC.
TEST(ServingModelTest, PrecisionIsCheckedAtStartAndTheReplicaServesInIt) {
  ServerConfig config = test_config(untrained_bundle_dir());
  config.model.precision = "fp16";
  auto bad = ReportServer::serve(config, untrained_model());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("model.precision"), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("'fp16'"), std::string::npos) << bad.status();

  config.model.precision = "int8";
  config.model.device = "cuda";
  auto cuda = ReportServer::serve(config, untrained_model());
  ASSERT_FALSE(cuda.ok());
  EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(cuda.status().message().find("model.precision"), std::string::npos) << cuda.status();
  EXPECT_NE(cuda.status().message().find("CPU only"), std::string::npos) << cuda.status();

  config.model.device = "cpu";
  config.model.precision = model::precision_unavailable(model::Precision::kBf16, "cpu").empty() ? "bf16" : "int8";
  auto replica = make_serving_replica(config.model, untrained_model().model);
  ASSERT_TRUE(replica.ok()) << replica.status();
  EXPECT_EQ(model::precision_name((*replica)->precision()), config.model.precision);
  RunningServer s = start_server(config, untrained_model());
  ASSERT_TRUE(s.server);
  grpc::ClientContext context;
  set_deadline(&context, std::chrono::seconds(120));
  v1::GenerateReportResponse response;
  const grpc::Status status = s.stub->GenerateReport(
      &context, make_request({cmn::testing::chest("gdcm-CR-MONO1-10-chest_explicitLE.dcm")}, 6), &response);
  ASSERT_TRUE(status.ok()) << config.model.precision << ": " << status.error_message();
  EXPECT_FALSE(response.report().empty());
}

TEST(ResolveDecodingTest, DefaultsOverridesAndClamps) {
  model::ModelConfig config;  // beam 3, 60 tokens, beam_search
  LimitsOptions limits;
  limits.max_beam_size = 4;
  limits.max_length = 50;
  std::vector<std::string> warnings;
  auto d = resolve_decoding(config, v1::DecodingOverrides(), limits, &warnings);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->beam_size, 3);
  EXPECT_EQ(d->max_length, 50) << "the bundle default is capped by the limit";
  EXPECT_TRUE(warnings.empty());

  v1::DecodingOverrides o;
  o.set_beam_size(1);
  o.set_max_length(20);
  o.set_method(v1::DECODING_METHOD_SAMPLE);
  o.set_temperature(0.5);
  o.set_seed(99);
  d = resolve_decoding(config, o, limits, &warnings);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->method, model::DecodingMethod::kSample);
  EXPECT_EQ(d->beam_size, 1);
  EXPECT_EQ(d->max_length, 20);
  EXPECT_EQ(d->temperature, 0.5);
  EXPECT_EQ(d->seed, 99u);

  o.set_beam_size(10);
  d = resolve_decoding(config, o, limits, &warnings);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->beam_size, 4);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0], "decoding.beam_size 10 clamped to 4");

  v1::DecodingOverrides bad;
  bad.set_method(static_cast<v1::DecodingMethod>(42));
  EXPECT_EQ(resolve_decoding(config, bad, limits, &warnings).status().code(), absl::StatusCode::kInvalidArgument);
  v1::DecodingOverrides negative;
  negative.set_temperature(-1);
  EXPECT_EQ(resolve_decoding(config, negative, limits, &warnings).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SplitSentencesTest, SplitsAfterEachPeriodToken) {
  EXPECT_EQ(split_sentences({"the", "heart", "is", "normal", ".", "no", "effusion", ".", "and"}),
            (std::vector<std::string>{"the heart is normal .", "no effusion .", "and"}));
  EXPECT_TRUE(split_sentences({}).empty());
}

}  // namespace
}  // namespace cmn::server
