// Faults (issue 13): cmn-server killed with SIGKILL while calls are in flight. Every client must get UNAVAILABLE
// (not a hang until its deadline, not a made-up report), and a server restarted on the same port must serve the
// same channel again. The server runs as a real process on loopback; nothing here depends on how fast it is:
// the calls that must fail are held in flight with SIGSTOP (a stopped process cannot answer), and deadlines are
// only generous bounds against a hang.
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <regex>
#include <thread>

#include <gtest/gtest.h>

#include "common/child_process.h"
#include "server_test_util.h"

namespace cmn::server {
namespace {

using namespace cmn::server::testing;  // NOLINT: test helpers
using Clock = std::chrono::steady_clock;
using cmn::testing::ChildProcess;

// The gRPC port from cmn-server's start line ("cmn-server listening port=N ..."), 0 if it exited or took over
// 2 minutes (a bound, not an expectation: loading the model takes seconds).
int wait_listening(ChildProcess& server) {
  const std::regex line("listening port=(\\d+)");
  std::smatch match;
  for (const auto until = Clock::now() + std::chrono::minutes(2); Clock::now() < until;) {
    const std::string text = server.out();
    if (std::regex_search(text, match, line)) return std::stoi(match[1].str());
    if (server.wait_for(std::chrono::milliseconds(100)) != -1) return 0;
  }
  return 0;
}

std::vector<std::string> server_argv(int port) {
  return {CMN_SERVER_BIN, "--config", source_path("configs/server.yaml"), "model.bundle=" + untrained_bundle_dir(),
          "server.host=127.0.0.1", "server.port=" + std::to_string(port), "metrics.port=-1", "model.threads=1"};
}

// What one client thread saw.
struct Outcome {
  grpc::Status status;
  bool progress_seen = false;  // StreamReport: the server was decoding this call's batch
  bool final_seen = false;     // StreamReport: the complete report arrived
  bool done = false;
};

TEST(ServerFaultTest, SigkillMidBatchGivesClientsUnavailableAndARestartedServerServes) {
  ScopedDir dir("sigkill");
  auto first = std::make_unique<ChildProcess>(server_argv(0), dir.file("server1"));
  const int port = wait_listening(*first);
  ASSERT_GT(port, 0) << first->err();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  // One channel for every call, as an integration engine keeps one: after the restart it must recover by itself.
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  auto stub = v1::ReportService::NewStub(channel);
  const std::string study = chest("CR-MONO1-10-chest_implicitLE_nometa.dcm");
  // Generous bound against a hang; a failure must come from the dead connection, long before this.
  constexpr auto kBound = std::chrono::minutes(5);

  // 1. Streaming calls with the longest decode the server allows (max_length clamped to the limit; greedy, so
  //    every token is certain at once and is sent as progress).
  //    Each thread reads the first progress message, which the server sends only once this call's batch is
  //    decoding, then waits for the kill before reading on.
  constexpr int kStreams = 3;
  std::vector<Outcome> streams(kStreams);
  std::vector<std::unique_ptr<grpc::ClientContext>> stream_contexts;
  std::atomic<int> decoding{0};
  std::atomic<bool> killed{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    // The thread gets the context itself: the next push_back may move the vector's storage (found by TSan).
    stream_contexts.push_back(std::make_unique<grpc::ClientContext>());
    grpc::ClientContext* context = stream_contexts.back().get();
    set_deadline(context, kBound);
    threads.emplace_back([&, i, context] {
      auto reader = stub->StreamReport(context, make_request({study}, 1000, 1));
      v1::StreamReportResponse message;
      if (reader->Read(&message)) {
        streams[i].progress_seen = message.has_progress();
        streams[i].final_seen = message.has_final();
      }
      ++decoding;
      while (!killed.load()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      while (reader->Read(&message)) streams[i].final_seen = streams[i].final_seen || message.has_final();
      streams[i].status = reader->Finish();
      streams[i].done = true;
    });
  }
  const auto until = Clock::now() + kBound;
  while (decoding.load() < kStreams && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(decoding.load(), kStreams) << first->err();

  // 2. Freeze the server: calls sent now are certainly in flight when it dies, however fast the machine.
  first->signal(SIGSTOP);
  constexpr int kUnary = 3;
  std::vector<Outcome> unary(kUnary);
  std::vector<std::unique_ptr<grpc::ClientContext>> unary_contexts;
  std::atomic<int> issued{0};
  for (int i = 0; i < kUnary; ++i) {
    unary_contexts.push_back(std::make_unique<grpc::ClientContext>());
    grpc::ClientContext* context = unary_contexts.back().get();
    set_deadline(context, kBound);
    threads.emplace_back([&, i, context] {
      v1::GenerateReportResponse response;
      ++issued;
      unary[i].status = stub->GenerateReport(context, make_request({study}, 20, 1), &response);
      unary[i].done = true;
    });
  }
  // Every unary call is being issued when the kill comes; whether its bytes already sit in the frozen server's
  // socket or still in the channel, it cannot complete, and it must fail when the connection dies.
  while (issued.load() < kUnary) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  first->signal(SIGKILL);
  EXPECT_EQ(first->wait_for(kBound), 128 + SIGKILL);
  const auto killed_at = Clock::now();
  killed = true;
  for (auto& t : threads) t.join();
  const double seconds_to_fail = std::chrono::duration<double>(Clock::now() - killed_at).count();

  for (int i = 0; i < kUnary; ++i) {
    EXPECT_EQ(unary[i].status.error_code(), grpc::StatusCode::UNAVAILABLE)
        << "unary call " << i << ": " << unary[i].status.error_code() << " " << unary[i].status.error_message();
  }
  int streams_cut = 0;
  for (int i = 0; i < kStreams; ++i) {
    EXPECT_TRUE(streams[i].progress_seen) << "stream " << i << " was not decoding when the server was frozen";
    // A stream whose whole report arrived before the freeze may end OK; every other one must be UNAVAILABLE,
    // never OK without its report and never DEADLINE_EXCEEDED (that would be a hang cut short by the bound).
    if (streams[i].status.ok()) {
      EXPECT_TRUE(streams[i].final_seen) << "stream " << i << " ended OK without a report";
    } else {
      ++streams_cut;
      EXPECT_EQ(streams[i].status.error_code(), grpc::StatusCode::UNAVAILABLE)
          << "stream " << i << ": " << streams[i].status.error_code() << " " << streams[i].status.error_message();
      EXPECT_FALSE(streams[i].final_seen);
    }
  }
  std::cout << "[ fault ] " << kUnary << " unary + " << streams_cut << "/" << kStreams
            << " streaming calls cut by SIGKILL; all returned " << seconds_to_fail << " s after the kill" << std::endl;

  // 3. A new server on the same port serves the same channel (wait_for_ready: the channel may be backing off
  //    between reconnect attempts when the call starts).
  ChildProcess second(server_argv(port), dir.file("server2"));
  ASSERT_EQ(wait_listening(second), port) << second.err();
  grpc::ClientContext context;
  set_deadline(&context, kBound);
  context.set_wait_for_ready(true);
  v1::GenerateReportResponse response;
  const grpc::Status status = stub->GenerateReport(&context, make_request({study}, 8, 1), &response);
  ASSERT_TRUE(status.ok()) << status.error_code() << " " << status.error_message() << "\n" << second.err();
  EXPECT_FALSE(response.report().empty());
  EXPECT_EQ(response.study_instance_uid().empty(), false);
  second.signal(SIGTERM);
  EXPECT_EQ(second.wait_for(kBound), 0) << second.err();
}

}  // namespace
}  // namespace cmn::server
