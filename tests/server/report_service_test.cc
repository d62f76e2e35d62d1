// cmn.v1.ReportService end to end: a real server on 127.0.0.1:0, a real channel, the chest DICOMs of
// ../shared/data/dicom/chest, the untrained 2-view test bundle (and once the trained 4-view parity bundle).
#include <grpcpp/generic/generic_stub.h>

#include <atomic>
#include <iostream>
#include <set>
#include <thread>
#include <tuple>

#include <gtest/gtest.h>

#include "absl/strings/str_join.h"
#include "server_test_util.h"

namespace cmn::server {
namespace {

using namespace cmn::server::testing;  // NOLINT: test helpers

// RG1_J2KI and RG1_JLSN: two PA instances of one study (JPEG 2000 and JPEG-LS).
std::vector<std::string> rg1_study() { return {chest("RG1_J2KI.dcm"), chest("RG1_JLSN.dcm")}; }

class ReportServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { config_ = test_config(untrained_bundle_dir()); }
  RunningServer& start() {
    running_ = start_server(config_, untrained_model());
    return running_;
  }
  ServerConfig config_;
  RunningServer running_;
};

TEST_F(ReportServiceTest, HappyPathOnChestDicoms) {
  auto& s = start();
  ASSERT_TRUE(s.server);
  grpc::ClientContext context;
  set_deadline(&context, std::chrono::seconds(60));
  auto request = make_request(rg1_study(), 8);
  request.set_request_id("pacs-42");
  request.mutable_output()->set_token_scores(true);
  v1::GenerateReportResponse response;
  const grpc::Status status = s.stub->GenerateReport(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();

  EXPECT_FALSE(response.report().empty());
  EXPECT_EQ(absl::StrJoin(response.sentences(), " "), response.report());
  EXPECT_GT(response.token_ids_size(), 0);
  EXPECT_LE(response.token_ids_size(), 8);
  EXPECT_GE(response.token_log_probs_size(), response.token_ids_size());
  double sum = 0;
  for (float lp : response.token_log_probs()) {
    EXPECT_LE(lp, 0.0f);
    sum += lp;
  }
  EXPECT_NEAR(response.log_prob(), sum, 1e-4);
  EXPECT_EQ(response.study_instance_uid(), "1.3.6.1.4.1.5962.1.2.9.20040826185059.5457");
  ASSERT_EQ(response.slots_size(), 2);
  EXPECT_EQ(response.slots(0).slot(), 0);
  EXPECT_EQ(response.slots(0).source(), "file0.dcm");
  EXPECT_EQ(response.slots(0).sop_instance_uid(), "1.3.6.1.4.1.5962.1.1.9.1.3.20040826185059.5457");
  EXPECT_EQ(response.slots(0).series_instance_uid(), "1.3.6.1.4.1.5962.1.3.9.1.20040826185059.5457");
  EXPECT_EQ(response.slots(0).view(), "PA");
  EXPECT_FALSE(response.slots(0).reason().empty());
  EXPECT_EQ(response.slots(1).sop_instance_uid(), "1.3.6.1.4.1.5962.1.1.9.1.7.20040826185059.5457");
  EXPECT_EQ(response.skipped_size(), 0);
  EXPECT_EQ(response.model().name(), "cmn-untrained-test");
  EXPECT_TRUE(response.model().untrained());
  EXPECT_EQ(response.model().digest().rfind("sha256:", 0), 0u);
  EXPECT_EQ(response.model().views(), 2);
  EXPECT_FALSE(response.model().has_limits());
  EXPECT_EQ(response.decoding().max_length(), 8);
  EXPECT_EQ(response.decoding().beam_size(), 3);  // the bundle's default
  EXPECT_EQ(response.decoding().method(), v1::DECODING_METHOD_BEAM_SEARCH);
  EXPECT_GT(response.timings().preprocess_ms(), 0);
  EXPECT_GT(response.timings().visual_ms(), 0);
  EXPECT_GT(response.timings().decode_ms(), 0);
  EXPECT_GE(response.timings().total_ms(), response.timings().visual_ms());
  EXPECT_EQ(response.timings().batch_size(), 1);
  EXPECT_GT(response.timings().decode_steps(), 0);
  ASSERT_GE(response.warnings_size(), 1);
  EXPECT_NE(response.warnings(response.warnings_size() - 1).find("UNTRAINED"), std::string::npos);
  EXPECT_EQ(response.request_id(), "pacs-42");
  EXPECT_EQ(request_count(*s.server, "GenerateReport", "OK"), 1);
}

TEST_F(ReportServiceTest, DuplicateInstanceIsSkippedAndTheSlotRepeats) {
  // The two CR-MONO1-10 files are the same instance (same SOP Instance UID) with and without File Meta.
  auto& s = start();
  ASSERT_TRUE(s.server);
  grpc::ClientContext context;
  v1::GenerateReportResponse response;
  const grpc::Status status = s.stub->GenerateReport(
      &context,
      make_request({chest("CR-MONO1-10-chest_implicitLE_nometa.dcm"), chest("gdcm-CR-MONO1-10-chest_explicitLE.dcm")}, 4),
      &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.slots_size(), 2);
  EXPECT_EQ(response.slots(0).sop_instance_uid(), response.slots(1).sop_instance_uid());
  EXPECT_NE(response.slots(1).reason().find("repeat"), std::string::npos) << response.slots(1).reason();
  ASSERT_EQ(response.skipped_size(), 1);
  EXPECT_NE(response.skipped(0).reason().find("duplicate"), std::string::npos) << response.skipped(0).reason();
  EXPECT_EQ(response.token_log_probs_size(), 0) << "token scores only when asked";
}

TEST_F(ReportServiceTest, ModalitiesOutsideTheAllowedListAreSkipped) {
  config_.study.allowed_modalities = {"CR"};  // NIH-ChestXray14 is DX
  auto& s = start();
  ASSERT_TRUE(s.server);
  const std::string cr = chest("CR-MONO1-10-chest_implicitLE_nometa.dcm");
  const std::string dx = edit_dicom(chest("NIH-ChestXray14_DX_implicitLE.dcm"),
                                    {{DCM_StudyInstanceUID, "1.2.392.200036.9125.0.199302241758.16"}});
  grpc::ClientContext context;
  v1::GenerateReportResponse response;
  ASSERT_TRUE(s.stub->GenerateReport(&context, make_request({cr, dx}, 3), &response).ok());
  ASSERT_EQ(response.skipped_size(), 1);
  EXPECT_EQ(response.skipped(0).source(), "file1.dcm");
  EXPECT_NE(response.skipped(0).reason().find("DX"), std::string::npos) << response.skipped(0).reason();
  grpc::ClientContext only_dx;
  EXPECT_EQ(s.stub->GenerateReport(&only_dx, make_request({dx}, 3), &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ReportServiceTest, NotDicomIsInvalidArgument) {
  auto& s = start();
  ASSERT_TRUE(s.server);
  grpc::ClientContext context;
  v1::GenerateReportResponse response;
  const grpc::Status status =
      s.stub->GenerateReport(&context, make_request({"this is not a DICOM file, just text"}), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_NE(status.error_message().find("instance[0]"), std::string::npos) << status.error_message();
  EXPECT_EQ(request_count(*s.server, "GenerateReport", "INVALID_ARGUMENT"), 1);
}

TEST_F(ReportServiceTest, TruncatedDicomIsInvalidArgument) {
  auto& s = start();
  ASSERT_TRUE(s.server);
  const std::string whole = chest("gdcm-CR-MONO1-10-chest_explicitLE.dcm");
  grpc::ClientContext context;
  v1::GenerateReportResponse response;
  const grpc::Status status = s.stub->GenerateReport(&context, make_request({whole.substr(0, whole.size() / 2)}), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
}

TEST_F(ReportServiceTest, TwoStudiesAreInvalidArgumentNamingBoth) {
  auto& s = start();
  ASSERT_TRUE(s.server);
  grpc::ClientContext context;
  v1::GenerateReportResponse response;
  const grpc::Status status = s.stub->GenerateReport(
      &context, make_request({chest("RG1_J2KI.dcm"), chest("CR-MONO1-10-chest_implicitLE_nometa.dcm")}), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("1.3.6.1.4.1.5962.1.2.9.20040826185059.5457"), std::string::npos)
      << status.error_message();
  EXPECT_NE(status.error_message().find("1.2.392.200036.9125.0.199302241758.16"), std::string::npos)
      << status.error_message();
}

TEST_F(ReportServiceTest, EmptyRequestIsInvalidArgument) {
  auto& s = start();
  ASSERT_TRUE(s.server);
  grpc::ClientContext context;
  v1::GenerateReportResponse response;
  EXPECT_EQ(s.stub->GenerateReport(&context, v1::GenerateReportRequest(), &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ReportServiceTest, TooManyInstancesIsResourceExhausted) {
  config_.limits.max_instances = 2;
  auto& s = start();
  ASSERT_TRUE(s.server);
  const std::string one = chest("CR-MONO1-10-chest_implicitLE_nometa.dcm");
  grpc::ClientContext context;
  v1::GenerateReportResponse response;
  const grpc::Status status = s.stub->GenerateReport(&context, make_request({one, one, one}), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(status.error_message().find("at most 2"), std::string::npos) << status.error_message();
}

TEST_F(ReportServiceTest, MessageAboveTheSizeLimitIsResourceExhausted) {
  config_.server.max_receive_message_mb = 1;
  auto& s = start();
  ASSERT_TRUE(s.server);
  grpc::ClientContext context;
  v1::GenerateReportResponse response;
  const grpc::Status status = s.stub->GenerateReport(&context, make_request({chest("RG1_JLSN.dcm")}), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
}

TEST_F(ReportServiceTest, ImageAboveThePixelLimitIsInvalidArgument) {
  config_.limits.max_pixels = 1000 * 1000;  // RG1 is 1841 x 1955
  auto& s = start();
  ASSERT_TRUE(s.server);
  grpc::ClientContext context;
  v1::GenerateReportResponse response;
  const grpc::Status status = s.stub->GenerateReport(&context, make_request({chest("RG1_J2KI.dcm")}), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
}

TEST_F(ReportServiceTest, NegativeOverrideIsInvalidArgument) {
  auto& s = start();
  ASSERT_TRUE(s.server);
  grpc::ClientContext context;
  v1::GenerateReportResponse response;
  auto request = make_request(rg1_study(), 8, -1);
  const grpc::Status status = s.stub->GenerateReport(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("beam_size"), std::string::npos) << status.error_message();
}

TEST_F(ReportServiceTest, OverridesAreClampedToTheServerLimits) {
  config_.limits.max_beam_size = 2;
  config_.limits.max_length = 5;
  auto& s = start();
  ASSERT_TRUE(s.server);
  grpc::ClientContext context;
  v1::GenerateReportResponse response;
  const grpc::Status status = s.stub->GenerateReport(
      &context, make_request({chest("CR-MONO1-10-chest_implicitLE_nometa.dcm")}, 500, 9), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.decoding().beam_size(), 2);
  EXPECT_EQ(response.decoding().max_length(), 5);
  EXPECT_LE(response.token_ids_size(), 5);
  const std::string warnings = absl::StrJoin(response.warnings(), "\n");
  EXPECT_NE(warnings.find("decoding.beam_size 9 clamped to 2"), std::string::npos) << warnings;
  EXPECT_NE(warnings.find("decoding.max_length 500 clamped to 5"), std::string::npos) << warnings;
}

TEST_F(ReportServiceTest, TinyDeadlineIsDeadlineExceeded) {
  auto& s = start();
  ASSERT_TRUE(s.server);
  grpc::ClientContext context;
  set_deadline(&context, std::chrono::milliseconds(1));
  v1::GenerateReportResponse response;
  EXPECT_EQ(s.stub->GenerateReport(&context, make_request(rg1_study()), &response).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST_F(ReportServiceTest, DeadlineDuringDecodingIsCountedAndFreesTheEngine) {
  LogCapture logs;
  auto& s = start();
  ASSERT_TRUE(s.server);
  // The decode of the second call is held at its second step until its client has seen DEADLINE_EXCEEDED, so
  // the deadline passes mid-decode however fast this machine decodes (no guess of how long steps take).
  std::mutex held_mutex;
  std::condition_variable held_changed;
  bool client_returned = false;
  std::atomic<bool> hold{false};
  std::atomic<int> holds{0};
  s.server->engine().set_step_hook([&](int64_t steps_done) {
    if (!hold.load() || steps_done != 1) return;
    ++holds;
    std::unique_lock<std::mutex> lock(held_mutex);
    held_changed.wait_for(lock, std::chrono::seconds(120), [&] { return client_returned; });  // bound against hangs
  });
  // Warm-up, to know how long preprocessing and the visual stage take here.
  v1::GenerateReportResponse warm;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(s.stub->GenerateReport(&context, make_request({chest("CR-MONO1-10-chest_implicitLE_nometa.dcm")}, 2),
                                       &warm).ok());
  }
  // Generous: the call must reach its held step before the deadline; it never finishes before it.
  const auto budget = std::chrono::milliseconds(static_cast<int64_t>(3 * warm.timings().total_ms()) + 3000);
  hold = true;
  grpc::ClientContext context;
  set_deadline(&context, budget);
  v1::GenerateReportResponse response;
  const grpc::Status status = s.stub->GenerateReport(
      &context, make_request({chest("CR-MONO1-10-chest_implicitLE_nometa.dcm")}, 20, 3), &response);
  {
    std::lock_guard<std::mutex> lock(held_mutex);
    client_returned = true;
  }
  held_changed.notify_all();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(holds.load(), 1) << "the call's decode reached its second step before the deadline";
  // The server notices, gives up the decode and frees the slot (waits are bounds against hangs only).
  EXPECT_TRUE(wait_until([&] { return request_count(*s.server, "GenerateReport", "DEADLINE_EXCEEDED") == 1; }));
  EXPECT_TRUE(wait_until([&] { return s.server->engine().pending() == 0; }));
  // The worker dropped the study between two steps instead of running the 20 steps: it counts as abandoned,
  // not decoded.
  EXPECT_TRUE(wait_until([&] { return s.server->engine().stats().abandoned == 1; }));
  EXPECT_EQ(s.server->engine().stats().decoded, 1) << "only the warm-up ran to the end";
  // A new call is served, alone in the decode loop, to the end.
  grpc::ClientContext next;
  v1::GenerateReportResponse after;
  ASSERT_TRUE(s.stub->GenerateReport(&next, make_request({chest("CR-MONO1-10-chest_implicitLE_nometa.dcm")}, 2), &after).ok());
  EXPECT_EQ(after.timings().batch_size(), 1);
  EXPECT_EQ(s.server->engine().stats().decoded, 2);
  EXPECT_EQ(s.server->engine().stats().abandoned, 1);
  // Counted, never logged as an error.
  for (const auto& [severity, line] : logs.lines()) {
    if (line.find("DEADLINE_EXCEEDED") != std::string::npos) {
      EXPECT_EQ(severity, google::GLOG_INFO) << line;
    }
  }
}

TEST_F(ReportServiceTest, RequireTrainedModelIsFailedPreconditionOnTheDemoModel) {
  auto& s = start();
  ASSERT_TRUE(s.server);
  grpc::ClientContext context;
  auto request = make_request(rg1_study());
  request.set_require_trained_model(true);
  v1::GenerateReportResponse response;
  const grpc::Status status = s.stub->GenerateReport(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(status.error_message().find("untrained"), std::string::npos) << status.error_message();
}

// Big-endian 32-bit integer at `at` (PNG header fields).
uint32_t be32(const std::string& bytes, size_t at) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(bytes[at + i]);
  return v;
}

TEST_F(ReportServiceTest, AttentionMapsCoverEverySentenceLayerAndViewAndChangeNoReport) {
  auto& s = start();
  ASSERT_TRUE(s.server);
  v1::GenerateReportResponse plain, with_maps;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(s.stub->GenerateReport(&context, make_request(rg1_study()), &plain).ok());
  }
  {
    grpc::ClientContext context;
    auto request = make_request(rg1_study());
    request.mutable_output()->set_attention_maps(true);
    const grpc::Status status = s.stub->GenerateReport(&context, request, &with_maps);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  EXPECT_EQ(with_maps.report(), plain.report());
  EXPECT_EQ(plain.attention_maps_size(), 0);
  ASSERT_GT(with_maps.token_ids_size(), 0);
  ASSERT_GT(with_maps.sentences_size(), 0);
  const int views = with_maps.slots_size();
  int layers = 0;
  for (const auto& m : with_maps.attention_maps()) layers = std::max(layers, m.layer() + 1);
  ASSERT_GT(layers, 0);
  // Exactly one map per (sentence, layer, view), each a 224x224 PNG, labelled with its sentence.
  ASSERT_EQ(with_maps.attention_maps_size(), with_maps.sentences_size() * layers * views);
  std::set<std::tuple<int, int, int>> seen;
  for (const auto& m : with_maps.attention_maps()) {
    ASSERT_LT(m.sentence(), with_maps.sentences_size());
    ASSERT_LT(m.view(), views);
    EXPECT_TRUE(seen.insert({m.sentence(), m.layer(), m.view()}).second);
    ASSERT_GT(m.png().size(), 24u);
    EXPECT_EQ(m.png().substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
    EXPECT_EQ(be32(m.png(), 16), 224u);  // IHDR width
    EXPECT_EQ(be32(m.png(), 20), 224u);  // IHDR height
  }
}

TEST_F(ReportServiceTest, IdenticalRequestsGiveIdenticalReports) {
  auto& s = start();
  ASSERT_TRUE(s.server);
  std::vector<v1::GenerateReportResponse> responses(2);
  for (auto& response : responses) {
    grpc::ClientContext context;
    auto request = make_request({chest("NIH-ChestXray14_DX_implicitLE.dcm")}, 12);
    request.mutable_output()->set_token_scores(true);
    ASSERT_TRUE(s.stub->GenerateReport(&context, request, &response).ok());
  }
  EXPECT_EQ(responses[0].report(), responses[1].report());
  EXPECT_EQ(std::vector<int64_t>(responses[0].token_ids().begin(), responses[0].token_ids().end()),
            std::vector<int64_t>(responses[1].token_ids().begin(), responses[1].token_ids().end()));
  EXPECT_EQ(std::vector<float>(responses[0].token_log_probs().begin(), responses[0].token_log_probs().end()),
            std::vector<float>(responses[1].token_log_probs().begin(), responses[1].token_log_probs().end()));
}

TEST_F(ReportServiceTest, SamplingWithASeedIsReproducible) {
  auto& s = start();
  ASSERT_TRUE(s.server);
  std::vector<v1::GenerateReportResponse> responses(2);
  for (auto& response : responses) {
    grpc::ClientContext context;
    auto request = make_request({chest("CR-MONO1-10-chest_implicitLE_nometa.dcm")}, 10, 1);
    request.mutable_decoding()->set_method(v1::DECODING_METHOD_SAMPLE);
    request.mutable_decoding()->set_seed(1234);
    ASSERT_TRUE(s.stub->GenerateReport(&context, request, &response).ok());
    EXPECT_EQ(response.decoding().method(), v1::DECODING_METHOD_SAMPLE);
    EXPECT_EQ(response.decoding().seed(), 1234u);
  }
  EXPECT_EQ(responses[0].report(), responses[1].report());
}

TEST_F(ReportServiceTest, GetModelInfoDescribesTheModelAndLimits) {
  config_.limits.max_instances = 7;
  auto& s = start();
  ASSERT_TRUE(s.server);
  grpc::ClientContext context;
  v1::ModelInfo info;
  ASSERT_TRUE(s.stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.name(), "cmn-untrained-test");
  EXPECT_EQ(info.version(), "0");
  EXPECT_TRUE(info.untrained());
  EXPECT_EQ(info.digest(), untrained_model().info.digest);
  EXPECT_EQ(info.views(), 2);
  EXPECT_EQ(info.vocab_size(), untrained_model().model->tokenizer().vocab_size());
  EXPECT_EQ(info.default_decoding().beam_size(), 3);
  EXPECT_EQ(info.default_decoding().max_length(), 60);
  EXPECT_EQ(info.limits().max_instances(), 7);
  EXPECT_EQ(info.limits().max_receive_message_bytes(), 64 * 1024 * 1024);
}

TEST_F(ReportServiceTest, HealthServiceSaysServing) {
  auto& s = start();
  ASSERT_TRUE(s.server);
  int serving = -1;
  ASSERT_TRUE(health_check(s.channel, "", &serving).ok());
  EXPECT_EQ(serving, 1);
  ASSERT_TRUE(health_check(s.channel, "cmn.v1.ReportService", &serving).ok());
  EXPECT_EQ(serving, 1);
  EXPECT_EQ(health_check(s.channel, "no.such.Service", &serving).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ReportServiceTest, ReflectionListsTheReportService) {
  auto& s = start();
  ASSERT_TRUE(s.server);
  // grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo, a bidi stream; request {7: list_services}.
  grpc::GenericStub stub(s.channel);
  grpc::ClientContext context;
  set_deadline(&context, std::chrono::seconds(10));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag = nullptr;
  bool ok = false;
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  const std::string request = std::string("\x3a\x01*", 3);  // list_services: "*"
  grpc::Slice slice(request);
  grpc::ByteBuffer in(&slice, 1), out;
  call->Write(in, reinterpret_cast<void*>(2));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  call->Read(&out, reinterpret_cast<void*>(3));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(out.Dump(&slices).ok());
  std::string bytes;
  for (const auto& sl : slices) bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  EXPECT_NE(bytes.find("cmn.v1.ReportService"), std::string::npos);
  EXPECT_NE(bytes.find("grpc.health.v1.Health"), std::string::npos);
  call->WritesDone(reinterpret_cast<void*>(4));
  cq.Next(&tag, &ok);
  grpc::Status finish;
  call->Finish(&finish, reinterpret_cast<void*>(5));
  while (cq.Next(&tag, &ok) && tag != reinterpret_cast<void*>(5)) {
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

TEST_F(ReportServiceTest, StreamReportSendsCertainTokensThenTheFinalResponse) {
  auto& s = start();
  ASSERT_TRUE(s.server);
  for (int beam : {1, 3}) {
    grpc::ClientContext context;
    set_deadline(&context, std::chrono::seconds(60));
    auto request = make_request({chest("CR-MONO1-10-chest_implicitLE_nometa.dcm")}, 12, beam);
    auto reader = s.stub->StreamReport(&context, request);
    std::vector<int64_t> streamed;
    std::string last_text;
    int progress_messages = 0, finals = 0;
    v1::StreamReportResponse message;
    v1::GenerateReportResponse final_response;
    while (reader->Read(&message)) {
      ASSERT_EQ(finals, 0) << "nothing may follow the final response";
      if (message.has_progress()) {
        ++progress_messages;
        streamed.insert(streamed.end(), message.progress().token_ids().begin(), message.progress().token_ids().end());
        last_text = message.progress().text();
      } else {
        ASSERT_TRUE(message.has_final());
        final_response = message.final();
        ++finals;
      }
    }
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(finals, 1);
    // What was streamed is never taken back: a prefix of the final tokens.
    const std::vector<int64_t> final_ids(final_response.token_ids().begin(), final_response.token_ids().end());
    ASSERT_LE(streamed.size(), final_ids.size());
    EXPECT_TRUE(std::equal(streamed.begin(), streamed.end(), final_ids.begin())) << "beam " << beam;
    EXPECT_EQ(final_response.report().rfind(last_text, 0), 0u) << last_text << " | " << final_response.report();
    if (beam == 1) {
      EXPECT_GE(progress_messages, 2) << "greedy decoding streams every token";
      EXPECT_GE(streamed.size() + 1, final_ids.size());
    }
    // The same as the unary call.
    grpc::ClientContext unary_context;
    v1::GenerateReportResponse unary;
    ASSERT_TRUE(s.stub->GenerateReport(&unary_context, request, &unary).ok());
    EXPECT_EQ(unary.report(), final_response.report());
  }
}

TEST_F(ReportServiceTest, LogsAndMessagesNeverContainPatientIdentifiers) {
  const std::vector<std::string> secrets = {"Zzyzx^Secretname", "Zzyzx", "Secretname", "PID-55501234",
                                            "19230405", "ACC-77001299"};
  auto with_phi = [&](const std::string& bytes) {
    return edit_dicom(bytes, {{DCM_PatientName, secrets[0]},
                              {DCM_PatientID, secrets[3]},
                              {DCM_PatientBirthDate, secrets[4]},
                              {DCM_AccessionNumber, secrets[5]}});
  };
  const std::string a = with_phi(chest("CR-MONO1-10-chest_implicitLE_nometa.dcm"));
  const std::string b = with_phi(chest("NIH-ChestXray14_DX_implicitLE.dcm"));
  LogCapture logs;
  auto& s = start();
  ASSERT_TRUE(s.server);
  std::string everything;
  auto call = [&](const v1::GenerateReportRequest& request) {
    grpc::ClientContext context;
    v1::GenerateReportResponse response;
    const grpc::Status status = s.stub->GenerateReport(&context, request, &response);
    everything += status.error_message() + "\n" + response.DebugString();
    return status.error_code();
  };
  EXPECT_EQ(call(make_request({a}, 4)), grpc::StatusCode::OK);                        // a report
  EXPECT_EQ(call(make_request({a, b}, 4)), grpc::StatusCode::INVALID_ARGUMENT);       // two studies
  EXPECT_EQ(call(make_request({a.substr(0, a.size() - 1000)})), grpc::StatusCode::INVALID_ARGUMENT);  // truncated
  const std::string b_in_a = edit_dicom(b, {{DCM_StudyInstanceUID, "1.2.392.200036.9125.0.199302241758.16"}});
  EXPECT_EQ(call(make_request({a, b_in_a}, 4)), grpc::StatusCode::OK);              // two images, one study
  auto timed_out = make_request({a}, 4);
  {
    grpc::ClientContext context;
    set_deadline(&context, std::chrono::milliseconds(1));
    v1::GenerateReportResponse response;
    s.stub->GenerateReport(&context, timed_out, &response);
  }
  s.server->shutdown(std::chrono::seconds(1));
  everything += logs.all();
  ASSERT_NE(logs.all().find("rpc=GenerateReport code=OK"), std::string::npos) << "the capture saw no request line";
  for (const auto& secret : secrets) {
    EXPECT_EQ(everything.find(secret), std::string::npos) << "'" << secret << "' leaked:\n" << everything;
  }
}

// The trained parity checkpoint (R2GenCMN's own weights, 4 views): a real report from real chest DICOMs.
TEST(ReportServiceParityTest, TrainedParityBundleWritesAReport) {
  cmn::model::set_threads(1);
  ModelOptions options;
  options.bundle = parity_bundle_dir();
  options.allow_untrained = false;
  auto model = load_serving_model(options);
  ASSERT_TRUE(model.ok()) << model.status();
  auto config = test_config(parity_bundle_dir());
  config.model.allow_untrained = false;
  auto s = start_server(config, *model);
  ASSERT_TRUE(s.server);
  grpc::ClientContext context;
  auto request = make_request(rg1_study(), 0, 0);  // the bundle's defaults: beam 3, 60 tokens
  request.set_require_trained_model(true);
  v1::GenerateReportResponse response;
  const grpc::Status status = s.stub->GenerateReport(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_FALSE(response.model().untrained());
  EXPECT_EQ(response.model().views(), 4);
  ASSERT_EQ(response.slots_size(), 4);
  EXPECT_EQ(response.slots(2).sop_instance_uid(), response.slots(0).sop_instance_uid());  // PA PA -> cycled
  EXPECT_FALSE(response.report().empty());
  EXPECT_GE(response.sentences_size(), 1);
  for (const auto& w : response.warnings()) EXPECT_EQ(w.find("UNTRAINED"), std::string::npos) << w;
  std::cout << "parity model report: " << response.report() << "\n";
}

}  // namespace
}  // namespace cmn::server
