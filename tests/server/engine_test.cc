// The serving engine: batching, the bounded queue, cancellation and deadlines between decode steps.
#include "cmn/server/engine.h"

#include <atomic>
#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "server_test_util.h"

namespace cmn::server {
namespace {

using namespace cmn::server::testing;  // NOLINT: test helpers
using Clock = std::chrono::steady_clock;

// Four different single-study requests from the chest DICOMs (two of them multi-instance).
std::vector<v1::GenerateReportRequest> four_studies(int max_length) {
  const std::string cr = chest("CR-MONO1-10-chest_implicitLE_nometa.dcm");
  const std::string nih = chest("NIH-ChestXray14_DX_implicitLE.dcm");
  const std::string nih_in_cr = edit_dicom(nih, {{DCM_StudyInstanceUID, "1.2.392.200036.9125.0.199302241758.16"}});
  return {make_request({cr}, max_length), make_request({nih}, max_length), make_request({cr, nih_in_cr}, max_length),
          make_request({chest("CR_Monochrome1-JpegBaseline_orthanc-issue44.dcm")}, max_length)};
}

std::vector<int64_t> ids_of(const v1::GenerateReportResponse& r) { return {r.token_ids().begin(), r.token_ids().end()}; }

// Sends every request at once from its own thread.
std::vector<std::pair<grpc::Status, v1::GenerateReportResponse>> send_concurrently(
    v1::ReportService::Stub& stub, const std::vector<v1::GenerateReportRequest>& requests) {
  std::vector<std::pair<grpc::Status, v1::GenerateReportResponse>> results(requests.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < requests.size(); ++i) {
    threads.emplace_back([&, i] {
      grpc::ClientContext context;
      set_deadline(&context, std::chrono::seconds(120));
      results[i].first = stub.GenerateReport(&context, requests[i], &results[i].second);
    });
  }
  for (auto& t : threads) t.join();
  return results;
}

TEST(EngineTest, ConcurrentCallsAllSucceed) {
  auto config = test_config(untrained_bundle_dir());
  auto s = start_server(config, untrained_model());
  ASSERT_TRUE(s.server);
  auto requests = four_studies(6);
  const auto extra = four_studies(4);
  requests.insert(requests.end(), extra.begin(), extra.end());
  const auto results = send_concurrently(*s.stub, requests);
  int max_batch = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    EXPECT_TRUE(results[i].first.ok()) << i << ": " << results[i].first.error_message();
    EXPECT_FALSE(results[i].second.report().empty()) << i;
    max_batch = std::max(max_batch, results[i].second.timings().batch_size());
  }
  EXPECT_EQ(request_count(*s.server, "GenerateReport", "OK"), 8);
  EXPECT_GT(max_batch, 1) << "8 concurrent calls never shared a batch";
  EXPECT_EQ(s.server->engine().pending(), 0);
}

TEST(EngineTest, BatchedAndAloneGiveIdenticalReports) {
  const auto requests = four_studies(10);
  // Alone: batches of one.
  std::vector<v1::GenerateReportResponse> alone(requests.size());
  {
    auto config = test_config(untrained_bundle_dir());
    config.engine.max_batch_size = 1;
    auto s = start_server(config, untrained_model());
    ASSERT_TRUE(s.server);
    for (size_t i = 0; i < requests.size(); ++i) {
      grpc::ClientContext context;
      ASSERT_TRUE(s.stub->GenerateReport(&context, requests[i], &alone[i]).ok());
      EXPECT_EQ(alone[i].timings().batch_size(), 1);
    }
  }
  // Together: the batch waits (up to 20 s) until all four are there.
  auto config = test_config(untrained_bundle_dir());
  config.engine.max_batch_size = static_cast<int>(requests.size());
  config.engine.max_queue_delay_ms = 20000;
  config.engine.preprocess_threads = 4;
  auto s = start_server(config, untrained_model());
  ASSERT_TRUE(s.server);
  const auto batched = send_concurrently(*s.stub, requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(batched[i].first.ok()) << batched[i].first.error_message();
    const auto& b = batched[i].second;
    EXPECT_EQ(b.timings().batch_size(), static_cast<int>(requests.size())) << i;
    EXPECT_EQ(b.report(), alone[i].report()) << i;
    EXPECT_EQ(ids_of(b), ids_of(alone[i])) << i;
    EXPECT_NEAR(b.log_prob(), alone[i].log_prob(), 1e-3) << i;
    EXPECT_EQ(b.study_instance_uid(), alone[i].study_instance_uid());
  }
}

TEST(EngineTest, QueueFullIsResourceExhaustedAtOnce) {
  auto config = test_config(untrained_bundle_dir());
  config.engine.max_pending = 1;
  auto s = start_server(config, untrained_model());
  ASSERT_TRUE(s.server);
  // A long greedy decode holds the only slot; its first streamed token proves it is decoding.
  grpc::ClientContext long_context;
  auto long_request = make_request({chest("CR-MONO1-10-chest_implicitLE_nometa.dcm")}, 100, 1);
  auto reader = s.stub->StreamReport(&long_context, long_request);
  v1::StreamReportResponse first;
  ASSERT_TRUE(reader->Read(&first));
  ASSERT_TRUE(first.has_progress());

  grpc::ClientContext context;
  v1::GenerateReportResponse response;
  const auto start = Clock::now();
  const grpc::Status status =
      s.stub->GenerateReport(&context, make_request({chest("CR-MONO1-10-chest_implicitLE_nometa.dcm")}), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(1500)) << "a full queue must answer at once";
  long_context.TryCancel();
  v1::StreamReportResponse rest;
  while (reader->Read(&rest)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST(EngineTest, CancelledCallFreesItsSlotAndStopsItsDecode) {
  auto config = test_config(untrained_bundle_dir());
  config.engine.max_pending = 1;
  auto s = start_server(config, untrained_model());
  ASSERT_TRUE(s.server);
  grpc::ClientContext long_context;
  auto reader = s.stub->StreamReport(&long_context,
                                     make_request({chest("CR-MONO1-10-chest_implicitLE_nometa.dcm")}, 100, 1));
  v1::StreamReportResponse first;
  ASSERT_TRUE(reader->Read(&first));
  ASSERT_TRUE(first.has_progress());
  long_context.TryCancel();
  while (reader->Read(&first)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  int64_t cancelled = 0;
  for (int i = 0; i < 200 && cancelled == 0; ++i) {
    cancelled = request_count(*s.server, "StreamReport", "CANCELLED");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(cancelled, 1);
  // The worker stopped the decode between two steps (100 greedy steps would still be running).
  for (int i = 0; i < 200 && s.server->engine().stats().abandoned_batches == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(s.server->engine().stats().abandoned_batches, 1);
  EXPECT_EQ(s.server->engine().stats().batches, 0);

  // The only slot is free again, and the worker is not busy with the cancelled study.
  grpc::ClientContext context;
  v1::GenerateReportResponse response;
  const grpc::Status status = s.stub->GenerateReport(
      &context, make_request({chest("CR-MONO1-10-chest_implicitLE_nometa.dcm")}, 4), &response);
  ASSERT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  EXPECT_LT(response.timings().queue_ms(), 1000);
  EXPECT_EQ(s.server->engine().pending(), 0);
}

// The engine directly: only studies with equal decoding settings share a batch; sampling runs alone.
TEST(EngineTest, BatchesOnlyStudiesWithEqualDecodingSettings) {
  const auto& served = untrained_model();
  EngineOptions options;
  options.max_batch_size = 8;
  options.max_queue_delay_ms = 1500;
  Metrics metrics;
  Engine engine(replica_of(served), options, &metrics);
  const auto images = noise_views(2, 3);
  model::DecodingOptions a;
  a.max_length = 3;
  model::DecodingOptions b = a;
  b.max_length = 4;
  model::DecodingOptions sampled = a;
  sampled.method = model::DecodingMethod::kSample;
  sampled.beam_size = 1;
  const std::vector<model::DecodingOptions> settings = {a, b, a, sampled, b};
  std::vector<absl::StatusOr<JobResult>> results(settings.size(), absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < settings.size(); ++i) {
    threads.emplace_back([&, i] {
      auto slot = engine.admit();
      ASSERT_TRUE(slot.ok());
      results[i] = engine.run(*slot, images, settings[i], JobControl{});
    });
  }
  for (auto& t : threads) t.join();
  const std::vector<int> expected = {2, 2, 2, 1, 2};
  for (size_t i = 0; i < settings.size(); ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].status();
    EXPECT_EQ(results[i]->batch_size, expected[i]) << i;
  }
  EXPECT_EQ(results[0]->hypothesis.ids, results[2]->hypothesis.ids);
  EXPECT_EQ(engine.pending(), 0);
  EXPECT_EQ(engine.queued(), 0);
}

TEST(EngineTest, ExpiredStudyIsNotDecoded) {
  const auto& served = untrained_model();
  EngineOptions options;
  Metrics metrics;
  Engine engine(replica_of(served), options, &metrics);
  auto slot = engine.admit();
  ASSERT_TRUE(slot.ok());
  JobControl control;
  control.deadline = Clock::now() - std::chrono::milliseconds(1);
  model::DecodingOptions d;
  const auto result = engine.run(*slot, noise_views(2, 0), d, control);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(metrics.render().find("cmn_batch_size_count 1"), std::string::npos) << "no batch should have run";
}

TEST(EngineTest, StopRefusesNewWork) {
  const auto& served = untrained_model();
  Metrics metrics;
  Engine engine(replica_of(served), EngineOptions{}, &metrics);
  engine.stop();
  EXPECT_EQ(engine.admit().status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace cmn::server
