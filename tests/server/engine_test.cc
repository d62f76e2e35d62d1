// The serving engine: batching, the bounded queue, cancellation and deadlines between decode steps.
#include "cmn/server/engine.h"

#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <string>
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
  // The first study is held after its visual stage until four studies wait behind it: they join its decode
  // loop at its first step however fast this machine decodes.
  std::atomic<bool> first_batch{true};
  s.server->engine().set_step_hook([&](int64_t steps_done) {
    if (steps_done != 0 || !first_batch.exchange(false)) return;
    wait_until([&] { return s.server->engine().queued() >= 4; });
  });
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
  EXPECT_GT(max_batch, 1) << "8 concurrent calls never shared a decoder step";
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
  // A greedy decode holds the only slot: the step hook keeps it at its third step (its first token went out as
  // progress in the second) until the second call has been answered. Had that call waited for the slot instead
  // of answering at once, it would wait for ever (its 60 s deadline, a bound against hangs, would end it as
  // DEADLINE_EXCEEDED).
  Latch answered;
  s.server->engine().set_step_hook([&](int64_t steps_done) {
    if (steps_done == 2) answered.wait();
  });
  grpc::ClientContext long_context;
  auto long_request = make_request({chest("CR-MONO1-10-chest_implicitLE_nometa.dcm")}, 100, 1);
  auto reader = s.stub->StreamReport(&long_context, long_request);
  v1::StreamReportResponse first;
  ASSERT_TRUE(reader->Read(&first));
  ASSERT_TRUE(first.has_progress());

  grpc::ClientContext context;
  set_deadline(&context, std::chrono::seconds(60));
  v1::GenerateReportResponse response;
  const grpc::Status status =
      s.stub->GenerateReport(&context, make_request({chest("CR-MONO1-10-chest_implicitLE_nometa.dcm")}), &response);
  answered.open();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  long_context.TryCancel();
  v1::StreamReportResponse rest;
  while (reader->Read(&rest)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

// A STAT call sent while routine calls fill every slot is admitted (engine.stat_reserved_slots) and decoded
// before the routine calls that were waiting ahead of it (it joins the full loop beside the routine study being
// decoded); routine calls keep their order. The worker is held after the first study's visual stage until the
// queue is set up, and from then on waits, before each step and each join, until every call answered so far
// has been recorded, so the recorded order is the engine's order, not a race between handler threads.
TEST(EngineTest, StatCallIntoAFullQueueOfRoutineCallsIsAnsweredFirst) {
  auto config = test_config(untrained_bundle_dir());
  config.engine.max_batch_size = 1;
  config.engine.max_pending = 3;
  config.engine.stat_reserved_slots = 1;
  auto s = start_server(config, untrained_model());
  ASSERT_TRUE(s.server);
  Engine& engine = s.server->engine();

  std::mutex order_mutex;
  std::vector<std::string> order;
  auto recorded = [&] {
    std::lock_guard<std::mutex> lock(order_mutex);
    return order.size();
  };
  Latch release;
  std::atomic<bool> holding{false};
  engine.set_step_hook([&](int64_t) {
    if (!holding.exchange(true)) {
      release.wait();
      return;
    }
    wait_until([&] { return recorded() >= static_cast<size_t>(engine.stats().decoded); });
  });

  const std::string cr = chest("CR-MONO1-10-chest_implicitLE_nometa.dcm");
  std::vector<std::thread> calls;
  std::map<std::string, grpc::Status> statuses;
  std::mutex statuses_mutex;
  auto send = [&](const std::string& id, v1::Priority priority) {
    calls.emplace_back([&, id, priority] {
      auto request = make_request({cr}, 4);
      request.set_request_id(id);
      request.set_priority(priority);
      grpc::ClientContext context;
      set_deadline(&context, std::chrono::seconds(120));
      v1::GenerateReportResponse response;
      const grpc::Status status = s.stub->GenerateReport(&context, request, &response);
      {
        std::lock_guard<std::mutex> lock(order_mutex);
        if (status.ok()) order.push_back(response.request_id());
      }
      std::lock_guard<std::mutex> lock(statuses_mutex);
      statuses[id] = status;
    });
  };
  send("routine-1", v1::PRIORITY_ROUTINE);  // decoding, held
  ASSERT_TRUE(wait_until([&] { return holding.load(); }));
  send("routine-2", v1::PRIORITY_UNSPECIFIED);
  ASSERT_TRUE(wait_until([&] { return engine.queued() == 1; }));
  send("routine-3", v1::PRIORITY_ROUTINE);
  ASSERT_TRUE(wait_until([&] { return engine.queued() == 2; }));
  ASSERT_EQ(engine.pending(), 3);

  // Full for routine work: refused at once.
  {
    auto request = make_request({cr}, 4);
    grpc::ClientContext context;
    set_deadline(&context, std::chrono::seconds(60));
    v1::GenerateReportResponse response;
    EXPECT_EQ(s.stub->GenerateReport(&context, request, &response).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  send("stat", v1::PRIORITY_STAT);
  ASSERT_TRUE(wait_until([&] { return engine.queued() == 3; }));
  release.open();
  for (auto& t : calls) t.join();
  for (const auto& [id, status] : statuses) EXPECT_TRUE(status.ok()) << id << ": " << status.error_message();
  EXPECT_EQ(order, (std::vector<std::string>{"routine-1", "stat", "routine-2", "routine-3"}));
  EXPECT_EQ(engine.pending(), 0);
}

// A STAT study joins a decode loop that routine studies fill (engine.stat_reserved_slots more): it is answered
// while the long routine study it joined is still decoding (held at its 20th step until then).
TEST(EngineTest, StatStudyJoinsAFullLoop) {
  EngineOptions options;
  options.max_batch_size = 1;
  options.stat_reserved_slots = 1;
  options.max_queue_delay_ms = 0;
  Metrics metrics;
  Engine engine(replica_of(untrained_model()), options, &metrics);
  model::DecodingOptions long_run;
  long_run.max_length = 30;
  long_run.early_stop = false;
  model::DecodingOptions short_run;
  short_run.max_length = 3;
  Latch at_three, stat_answered;
  std::atomic<bool> waited{false};
  std::atomic<bool> stat_first{false};
  engine.set_step_hook([&](int64_t steps_done) {
    if (steps_done == 3 && !waited.exchange(true)) {
      at_three.open();
      wait_until([&] { return engine.queued() == 1; });
    }
    if (steps_done == 20) stat_first = stat_answered.wait();
  });
  absl::StatusOr<JobResult> routine = absl::UnknownError("not run");
  std::thread routine_call([&] {
    auto slot = engine.admit();
    ASSERT_TRUE(slot.ok());
    routine = engine.run(*slot, noise_views(2, 31), long_run, JobControl{});
  });
  ASSERT_TRUE(at_three.wait());
  absl::StatusOr<JobResult> stat = absl::UnknownError("not run");
  {
    auto slot = engine.admit(Priority::kStat);
    ASSERT_TRUE(slot.ok());
    JobControl control;
    control.priority = Priority::kStat;
    stat = engine.run(*slot, noise_views(2, 32), short_run, control);
  }
  stat_answered.open();
  routine_call.join();
  ASSERT_TRUE(stat.ok()) << stat.status();
  ASSERT_TRUE(routine.ok()) << routine.status();
  EXPECT_TRUE(stat_first.load());
  EXPECT_EQ(stat->batch_size, 2) << "beside the routine study, past max_batch_size";
  EXPECT_EQ(routine->decode_steps, 30);
}

// A routine study waiting for batch partners (a 10-minute window here) does not hold up a STAT study that arrives
// meanwhile: the STAT one is decoded and answered while the routine one still waits.
TEST(EngineTest, StatCallDoesNotWaitOutARoutineBatchingWindow) {
  auto config = test_config(untrained_bundle_dir());
  config.engine.max_batch_size = 4;
  config.engine.max_queue_delay_ms = 600000;
  auto s = start_server(config, untrained_model());
  ASSERT_TRUE(s.server);
  const std::string cr = chest("CR-MONO1-10-chest_implicitLE_nometa.dcm");
  std::atomic<bool> routine_done{false};
  grpc::Status routine_status;
  std::thread routine([&] {
    grpc::ClientContext context;
    set_deadline(&context, std::chrono::seconds(300));
    v1::GenerateReportResponse response;
    routine_status = s.stub->GenerateReport(&context, make_request({cr}, 6), &response);
    routine_done = true;
  });
  ASSERT_TRUE(wait_until([&] { return s.server->engine().queued() == 1; }));
  {
    auto request = make_request({cr}, 4);
    request.set_priority(v1::PRIORITY_STAT);
    grpc::ClientContext context;
    set_deadline(&context, std::chrono::seconds(120));  // a bound against hangs: the window is 10 minutes
    v1::GenerateReportResponse response;
    const grpc::Status status = s.stub->GenerateReport(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_FALSE(routine_done.load()) << "the routine study was not waiting for partners any more";
  }
  s.server->engine().flush_batches();  // now the routine study goes too
  routine.join();
  EXPECT_TRUE(routine_status.ok()) << routine_status.error_message();
}

TEST(EngineTest, CancelledCallFreesItsSlotAndStopsItsDecode) {
  auto config = test_config(untrained_bundle_dir());
  config.engine.max_pending = 1;
  auto s = start_server(config, untrained_model());
  ASSERT_TRUE(s.server);
  // The decode is held at its third step (its first token was published in the second) until the server has
  // counted the call as cancelled, so the
  // cancellation lands mid-decode however fast this machine decodes.
  std::atomic<bool> hold{true};
  s.server->engine().set_step_hook([&](int64_t steps_done) {
    if (steps_done != 2 || !hold.exchange(false)) return;
    wait_until([&] { return request_count(*s.server, "StreamReport", "CANCELLED") == 1; });
  });
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
  EXPECT_TRUE(wait_until([&] { return request_count(*s.server, "StreamReport", "CANCELLED") == 1; }));
  // The worker stopped the decode between two steps instead of running the 100 greedy steps.
  EXPECT_TRUE(wait_until([&] { return s.server->engine().stats().abandoned == 1; }));
  EXPECT_EQ(s.server->engine().stats().decoded, 0);

  // The only slot is free again, and the worker is free for the next study: it is decoded to the end.
  grpc::ClientContext context;
  v1::GenerateReportResponse response;
  const grpc::Status status = s.stub->GenerateReport(
      &context, make_request({chest("CR-MONO1-10-chest_implicitLE_nometa.dcm")}, 4), &response);
  ASSERT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  EXPECT_EQ(s.server->engine().stats().decoded, 1);
  EXPECT_EQ(s.server->engine().pending(), 0);
}

// Decodes each study alone (a loop of one) on its own engine.
std::vector<JobResult> decode_alone(const std::vector<std::vector<preprocessing::FloatImage>>& studies,
                                    const std::vector<model::DecodingOptions>& settings) {
  EngineOptions options;
  options.max_batch_size = 1;
  Metrics metrics;
  Engine engine(replica_of(untrained_model()), options, &metrics);
  std::vector<JobResult> out;
  for (size_t i = 0; i < settings.size(); ++i) {
    auto slot = engine.admit();
    EXPECT_TRUE(slot.ok());
    auto r = engine.run(*slot, studies[i], settings[i], JobControl{});
    EXPECT_TRUE(r.ok()) << i << ": " << r.status();
    out.push_back(r.ok() ? *r : JobResult{});
    EXPECT_EQ(out.back().batch_size, 1);
  }
  return out;
}

// The engine directly: studies with different decoding settings (beam sizes, lengths, greedy, sampled) share
// the decode loop, each at its own step, and each gets exactly the tokens it gets alone.
TEST(EngineTest, StudiesWithDifferentSettingsShareTheLoopAndDecodeAsAlone) {
  model::DecodingOptions a;
  a.max_length = 5;
  model::DecodingOptions b = a;
  b.max_length = 7;
  b.beam_size = 2;
  model::DecodingOptions greedy = a;
  greedy.beam_size = 1;
  greedy.block_trigrams = true;
  greedy.max_length = 9;
  model::DecodingOptions sampled = a;
  sampled.method = model::DecodingMethod::kSample;
  sampled.beam_size = 1;
  sampled.seed = 7;
  sampled.temperature = 0.7;
  const std::vector<model::DecodingOptions> settings = {a, b, greedy, sampled, a};
  std::vector<std::vector<preprocessing::FloatImage>> studies;
  for (size_t i = 0; i < settings.size(); ++i) studies.push_back(noise_views(2, 10 + static_cast<unsigned>(i)));
  const auto alone = decode_alone(studies, settings);

  EngineOptions options;
  options.max_batch_size = 8;
  Metrics metrics;
  Engine engine(replica_of(untrained_model()), options, &metrics);
  // A first study keeps the worker after its visual stage until all five wait, so they join its loop together
  // at its first step however the threads are scheduled.
  model::DecodingOptions blocker = a;
  blocker.max_length = 2;
  Latch blocking;
  std::atomic<bool> held{false};
  engine.set_step_hook([&](int64_t steps_done) {
    if (steps_done != 0 || held.exchange(true)) return;
    blocking.open();
    wait_until([&] { return engine.queued() == static_cast<int64_t>(settings.size()); });
  });
  std::thread first([&] {
    auto slot = engine.admit();
    ASSERT_TRUE(slot.ok());
    EXPECT_TRUE(engine.run(*slot, noise_views(2, 3), blocker, JobControl{}).ok());
  });
  ASSERT_TRUE(blocking.wait());
  std::vector<absl::StatusOr<JobResult>> results(settings.size(), absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < settings.size(); ++i) {
    threads.emplace_back([&, i] {
      auto slot = engine.admit();
      ASSERT_TRUE(slot.ok());
      results[i] = engine.run(*slot, studies[i], settings[i], JobControl{});
    });
  }
  for (auto& t : threads) t.join();
  first.join();
  for (size_t i = 0; i < settings.size(); ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].status();
    EXPECT_GE(results[i]->batch_size, static_cast<int>(settings.size())) << i << ": the five decoded side by side";
    EXPECT_EQ(results[i]->hypothesis.ids, alone[i].hypothesis.ids) << i;
    EXPECT_EQ(results[i]->hypothesis.token_log_probs, alone[i].hypothesis.token_log_probs) << i;
    EXPECT_EQ(results[i]->decode_steps, alone[i].decode_steps) << i;
  }
  EXPECT_EQ(engine.pending(), 0);
  EXPECT_EQ(engine.queued(), 0);
}

// In-flight batching: a study that arrives while another decodes joins the running loop between two of its
// steps, and is answered as soon as it is done, while the long decode goes on; both get their tokens alone.
TEST(EngineTest, StudyArrivingMidDecodeJoinsAndLeavesBeforeTheLongOne) {
  model::DecodingOptions long_run;
  long_run.max_length = 30;
  long_run.early_stop = false;  // all 30 steps, whatever the untrained model's tokens
  model::DecodingOptions short_run;
  short_run.max_length = 3;
  const std::vector<std::vector<preprocessing::FloatImage>> studies = {noise_views(2, 21), noise_views(2, 22)};
  const auto alone = decode_alone(studies, {long_run, short_run});
  ASSERT_EQ(alone[0].decode_steps, 30);

  EngineOptions options;
  options.max_batch_size = 4;
  options.max_queue_delay_ms = 0;
  Metrics metrics;
  Engine engine(replica_of(untrained_model()), options, &metrics);
  // The long decode waits before its 5th step until the short study is queued, and before its 20th until the
  // short study's call has returned: had the short study waited for the long one's end, it never would.
  Latch at_five, short_answered;
  std::atomic<bool> short_before_long_end{false};
  std::atomic<bool> waited{false};
  engine.set_step_hook([&](int64_t steps_done) {
    if (steps_done == 5 && !waited.exchange(true)) {  // (the short study's join calls the hook at 5 too)
      at_five.open();
      wait_until([&] { return engine.queued() == 1; });
    }
    if (steps_done == 20) short_before_long_end = short_answered.wait();
  });
  absl::StatusOr<JobResult> long_result = absl::UnknownError("not run");
  std::thread long_call([&] {
    auto slot = engine.admit();
    ASSERT_TRUE(slot.ok());
    long_result = engine.run(*slot, studies[0], long_run, JobControl{});
  });
  ASSERT_TRUE(at_five.wait());
  absl::StatusOr<JobResult> short_result = absl::UnknownError("not run");
  {
    auto slot = engine.admit();
    ASSERT_TRUE(slot.ok());
    short_result = engine.run(*slot, studies[1], short_run, JobControl{});
  }
  short_answered.open();
  long_call.join();
  ASSERT_TRUE(short_result.ok()) << short_result.status();
  ASSERT_TRUE(long_result.ok()) << long_result.status();
  EXPECT_TRUE(short_before_long_end.load());
  EXPECT_EQ(short_result->batch_size, 2);
  EXPECT_EQ(long_result->batch_size, 2);
  EXPECT_EQ(short_result->hypothesis.ids, alone[1].hypothesis.ids);
  EXPECT_EQ(short_result->hypothesis.token_log_probs, alone[1].hypothesis.token_log_probs);
  EXPECT_EQ(long_result->hypothesis.ids, alone[0].hypothesis.ids);
  EXPECT_EQ(long_result->hypothesis.token_log_probs, alone[0].hypothesis.token_log_probs);
  EXPECT_EQ(long_result->decode_steps, 30);
  EXPECT_EQ(short_result->decode_steps, alone[1].decode_steps);
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
  EXPECT_EQ(metrics.render().find("cmn_batch_size_count 1"), std::string::npos) << "no study should have been decoded";
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
