// Hot reload (ReloadModel RPC; SIGHUP in cmn-server, tests/server/process_test.cc): a new model is loaded, warmed
// and swapped in while calls are in flight; each call finishes on the model it started with and says so.
#include <atomic>
#include <thread>

#include <gtest/gtest.h>

#include "server_test_util.h"

namespace cmn::server {
namespace {

using namespace cmn::server::testing;  // NOLINT: test helpers

// Serving the 2-view untrained model, one call is held in its decode while the server reloads to the 4-view
// parity bundle. The held call finishes on the model it started with (its 2 views could not even run on the new
// one); a call sent after the swap is decoded by the new model; both responses name the digest that served them.
TEST(ReloadTest, CallsInFlightFinishOnTheOldModelAndLaterCallsOnTheNew) {
  const std::string next_bundle = parity_bundle_dir();
  auto config = test_config(untrained_bundle_dir());
  auto s = start_server(config, untrained_model());
  ASSERT_TRUE(s.server);
  const v1::ModelInfo before = s.server->model_info();
  ASSERT_EQ(before.views(), 2);
  const std::weak_ptr<const ServedModel> old_model = s.server->served_model();
  const std::weak_ptr<engine::Replica> old_replica = s.server->served_model()->replica;

  Latch release;
  std::atomic<bool> holding{false};
  std::atomic<bool> first{true};
  s.server->engine().set_step_hook([&](int64_t steps_done) {
    if (steps_done != 1 || !first.exchange(false)) return;
    holding = true;
    release.wait();
  });
  const std::string cr = chest("CR-MONO1-10-chest_implicitLE_nometa.dcm");
  grpc::Status old_status;
  v1::GenerateReportResponse old_response;
  std::thread in_flight([&] {
    grpc::ClientContext context;
    set_deadline(&context, std::chrono::seconds(300));
    old_status = s.stub->GenerateReport(&context, make_request({cr}, 6), &old_response);
  });
  ASSERT_TRUE(wait_until([&] { return holding.load(); }));

  {
    grpc::ClientContext context;
    set_deadline(&context, std::chrono::seconds(300));
    v1::ReloadModelRequest request;
    request.set_bundle(next_bundle);
    v1::ModelInfo info;
    const grpc::Status status = s.stub->ReloadModel(&context, request, &info);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(info.views(), 4);
    EXPECT_NE(info.digest(), before.digest());
    EXPECT_EQ(info.precision(), "fp32");
  }
  const v1::ModelInfo after = s.server->model_info();
  EXPECT_EQ(after.views(), 4);

  // Sent after the swap: queued behind the held call, decoded by the new model.
  grpc::Status new_status;
  v1::GenerateReportResponse new_response;
  std::thread later([&] {
    grpc::ClientContext context;
    set_deadline(&context, std::chrono::seconds(300));
    new_status = s.stub->GenerateReport(&context, make_request({cr}, 6), &new_response);
  });
  ASSERT_TRUE(wait_until([&] { return s.server->engine().queued() == 1; }));
  release.open();
  in_flight.join();
  later.join();

  ASSERT_TRUE(old_status.ok()) << old_status.error_message();
  EXPECT_EQ(old_response.model().digest(), before.digest());
  EXPECT_EQ(old_response.slots_size(), 2);
  ASSERT_TRUE(new_status.ok()) << new_status.error_message();
  EXPECT_EQ(new_response.model().digest(), after.digest());
  EXPECT_EQ(new_response.slots_size(), 4);
  EXPECT_FALSE(new_response.report().empty());
  // Once the last call that started on it is done, nothing holds the old model or its replica.
  EXPECT_TRUE(wait_until([&] { return old_model.expired() && old_replica.expired(); }));
}

// A bundle that cannot be loaded is an error naming it, and the model that was serving keeps serving.
TEST(ReloadTest, ABadBundleLeavesTheServingModelInPlace) {
  auto config = test_config(untrained_bundle_dir());
  auto s = start_server(config, untrained_model());
  ASSERT_TRUE(s.server);
  const v1::ModelInfo before = s.server->model_info();
  grpc::ClientContext context;
  v1::ReloadModelRequest request;
  request.set_bundle("/nonexistent/bundle");
  v1::ModelInfo info;
  const grpc::Status status = s.stub->ReloadModel(&context, request, &info);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.error_message().find("/nonexistent/bundle"), std::string::npos) << status.error_message();
  EXPECT_EQ(s.server->model_info().digest(), before.digest());
  grpc::ClientContext call;
  v1::GenerateReportResponse response;
  ASSERT_TRUE(s.stub->GenerateReport(&call, make_request({chest("CR-MONO1-10-chest_implicitLE_nometa.dcm")}, 4),
                                     &response)
                  .ok());
  EXPECT_EQ(response.model().digest(), before.digest());
}

}  // namespace
}  // namespace cmn::server
