// The binaries as an operator and an integration engine use them: cmn-server (start-up refusals, SIGTERM
// drain), the metrics port (validated by promtool), cmn-client's exit codes, and an independent Python grpcio
// client.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cstdlib>
#include <regex>
#include <thread>

#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "common/child_process.h"
#include "server_test_util.h"

namespace cmn::server {
namespace {

using namespace cmn::server::testing;  // NOLINT: test helpers
using cmn::testing::ChildProcess;
using Clock = std::chrono::steady_clock;

// Runs to completion (at most 5 minutes).
int run(const std::vector<std::string>& argv, const ScopedDir& dir, std::string* out = nullptr, std::string* err = nullptr) {
  ChildProcess p(argv, dir.file("run"));
  const int code = p.wait_for(std::chrono::minutes(5));
  if (out != nullptr) *out = p.out();
  if (err != nullptr) *err = p.err();
  return code;
}

// GET http://127.0.0.1:port/path, the body ("" on failure).
std::string http_get(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    (void)!::write(fd, request.data(), request.size());
    char buffer[4096];
    ssize_t n;
    while ((n = ::read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || response.find(" 200 ") == std::string::npos || body == std::string::npos) {
    return "";
  }
  return response.substr(body + 4);
}

const std::string kServerBin = CMN_SERVER_BIN;
const std::string kClientBin = CMN_CLIENT_BIN;

TEST(ServerProcessTest, RefusesToStartOnAMissingBundle) {
  ScopedDir dir("missing_bundle");
  std::string err;
  const int code = run({kServerBin, "model.bundle=/nonexistent/bundle", "server.port=0", "metrics.port=-1"}, dir,
                       nullptr, &err);
  EXPECT_EQ(code, 1) << err;
  EXPECT_NE(err.find("model.bundle '/nonexistent/bundle'"), std::string::npos) << err;
}

TEST(ServerProcessTest, RefusesToStartOnACorruptBundleNamingTheFile) {
  ScopedDir dir("corrupt_bundle");
  const std::string bundle = dir.file("bundle");
  fs::create_directories(bundle);
  for (const char* f : {"model.yaml", "weights.pth", "SHA256SUMS"}) {
    fs::create_symlink(untrained_bundle_dir() + "/" + f, bundle + "/" + f);
  }
  write_bytes(bundle + "/vocab.txt", read_bytes(untrained_bundle_dir() + "/vocab.txt") + "tampered\n");
  std::string err;
  const int code = run({kServerBin, "model.bundle=" + bundle, "server.port=0", "metrics.port=-1"}, dir, nullptr, &err);
  EXPECT_EQ(code, 1) << err;
  EXPECT_NE(err.find("vocab.txt"), std::string::npos) << err;
  EXPECT_NE(err.find("cannot load the model"), std::string::npos) << err;
}

TEST(ServerProcessTest, UnknownConfigKeyExitsNamingIt) {
  ScopedDir dir("unknown_key");
  std::string err;
  const int code = run({kServerBin, "--config", source_path("configs/server.yaml"), "server.prot=1"}, dir, nullptr, &err);
  EXPECT_EQ(code, 1) << err;
  EXPECT_NE(err.find("'server.prot'"), std::string::npos) << err;
}

TEST(ServerProcessTest, CheckLoadsTheModelAndExits) {
  ScopedDir dir("check");
  std::string out, err;
  const int code = run({kServerBin, "--config", source_path("configs/server.yaml"), "model.bundle=" + untrained_bundle_dir(),
                        "--check"}, dir, &out, &err);
  EXPECT_EQ(code, 0) << err;
  EXPECT_NE(out.find("cmn-untrained-test"), std::string::npos) << out;
}

TEST(ServerProcessTest, CheckRefusesACudaDeviceWithoutCudaNamingIt) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "a GPU is visible: the no-CUDA refusal cannot be seen here";
  ScopedDir dir("check_cuda");
  std::string out, err;
  const int code = run({kServerBin, "--config", source_path("configs/server.yaml"), "model.bundle=" + untrained_bundle_dir(),
                        "model.device=cuda", "--check"}, dir, &out, &err);
  EXPECT_EQ(code, 1) << err;
  EXPECT_NE(err.find("model.device"), std::string::npos) << err;
  EXPECT_NE(err.find("CUDA"), std::string::npos) << err;
  EXPECT_EQ(out.find("ok: model"), std::string::npos) << out;
}

TEST(ServerProcessTest, SigtermDrainsInFlightCallsAndExitsZero) {
  ScopedDir dir("sigterm");
  ChildProcess server({kServerBin, "--config", source_path("configs/server.yaml"),
                       "model.bundle=" + untrained_bundle_dir(), "server.host=127.0.0.1", "server.port=0",
                       "metrics.host=127.0.0.1", "metrics.port=0", "model.threads=1", "server.shutdown_grace_s=60",
                       // A study waits up to 10 min for a batch partner that never comes: the call below is in
                       // flight when SIGTERM arrives however fast this machine decodes; draining must not wait
                       // that window.
                       "engine.max_batch_size=2", "engine.max_queue_delay_ms=600000"},
                      dir.file("server"));
  // "cmn-server listening port=N metrics_port=M"
  std::smatch match;
  std::string out;
  const std::regex line("listening port=(\\d+) metrics_port=(\\d+)");
  for (int i = 0; i < 600 && !std::regex_search(out, match, line); ++i) {
    ASSERT_EQ(server.wait_for(std::chrono::milliseconds(100)), -1) << server.err();
    out = server.out();
  }
  ASSERT_TRUE(std::regex_search(out, match, line)) << server.err();
  const std::string address = "127.0.0.1:" + match[1].str();
  const int metrics_port = std::stoi(match[2].str());
  auto stub = v1::ReportService::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));

  // A call that is in flight (queued for its batch) when SIGTERM arrives.
  grpc::ClientContext context;
  set_deadline(&context, std::chrono::seconds(120));
  auto reader = stub->StreamReport(&context, make_request({chest("CR-MONO1-10-chest_implicitLE_nometa.dcm")}, 30, 1));
  ASSERT_TRUE(wait_until([&] {
    const std::string metrics = http_get(metrics_port, "/metrics");
    return metrics.find("cmn_requests_in_flight 1") != std::string::npos &&
           metrics.find("cmn_queue_depth 1") != std::string::npos;
  })) << server.err();
  server.signal(SIGTERM);
  v1::StreamReportResponse message;

  // It finishes...
  bool final_seen = false;
  while (reader->Read(&message)) final_seen = final_seen || message.has_final();
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  EXPECT_TRUE(final_seen);
  // ... and the server exits 0; later calls find nobody.
  EXPECT_EQ(server.wait_for(std::chrono::seconds(60)), 0) << server.err();
  grpc::ClientContext late;
  set_deadline(&late, std::chrono::seconds(5));
  v1::ModelInfo info;
  EXPECT_EQ(stub->GetModelInfo(&late, v1::GetModelInfoRequest(), &info).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(server.err().find("draining"), std::string::npos) << server.err();
}

// SIGHUP: cmn-server reads its configuration file again and hot-reloads `model:`; a model that fails to load is
// logged and the one serving keeps serving.
TEST(ServerProcessTest, SighupReloadsTheModelFromTheConfigurationFile) {
  ScopedDir dir("sighup");
  const std::string config_file = dir.file("server.yaml");
  write_bytes(config_file, "model:\n  bundle: \"" + untrained_bundle_dir() + "\"\n");
  ChildProcess server({kServerBin, "--config", config_file, "server.host=127.0.0.1", "server.port=0", "metrics.port=-1",
                       "model.threads=1"},
                      dir.file("server"));
  std::smatch match;
  std::string out;
  const std::regex line("listening port=(\\d+)");
  for (int i = 0; i < 600 && !std::regex_search(out, match, line); ++i) {
    ASSERT_EQ(server.wait_for(std::chrono::milliseconds(100)), -1) << server.err();
    out = server.out();
  }
  ASSERT_TRUE(std::regex_search(out, match, line)) << server.err();
  auto stub = v1::ReportService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + match[1].str(), grpc::InsecureChannelCredentials()));
  auto model_info = [&] {
    grpc::ClientContext context;
    set_deadline(&context, std::chrono::seconds(30));
    v1::ModelInfo info;
    EXPECT_TRUE(stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info).ok());
    return info;
  };
  const v1::ModelInfo first = model_info();
  ASSERT_EQ(first.views(), 2);

  write_bytes(config_file, "model:\n  bundle: \"" + parity_bundle_dir() + "\"\n");
  server.signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return model_info().digest() != first.digest(); })) << server.err();
  const v1::ModelInfo second = model_info();
  EXPECT_EQ(second.views(), 4);
  {
    grpc::ClientContext context;
    set_deadline(&context, std::chrono::seconds(120));
    v1::GenerateReportResponse response;
    ASSERT_TRUE(stub->GenerateReport(&context, make_request({chest("CR-MONO1-10-chest_implicitLE_nometa.dcm")}, 4),
                                     &response)
                    .ok());
    EXPECT_EQ(response.model().digest(), second.digest());
  }

  write_bytes(config_file, "model:\n  bundle: \"/nonexistent/bundle\"\n");
  server.signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return server.err().find("reload failed") != std::string::npos; })) << server.err();
  EXPECT_NE(server.err().find("/nonexistent/bundle"), std::string::npos) << server.err();
  EXPECT_EQ(model_info().digest(), second.digest());

  // cmn-client: --reload names a bundle (prints the new model), --stat sends a STAT study.
  std::string client_out, client_err;
  const std::string address = "127.0.0.1:" + match[1].str();
  EXPECT_EQ(run({kClientBin, "--server", address, "--reload", untrained_bundle_dir()}, dir, &client_out, &client_err), 0)
      << client_err;
  EXPECT_NE(client_out.find("cmn-untrained-test"), std::string::npos) << client_out;
  EXPECT_EQ(model_info().digest(), first.digest());
  EXPECT_EQ(run({kClientBin, "--server", address, "--stat", "--max-length", "4",
                 shared_path("data/dicom/chest/CR-MONO1-10-chest_implicitLE_nometa.dcm")},
                dir, &client_out, &client_err),
            0)
      << client_err;
  EXPECT_FALSE(client_out.empty());
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait_for(std::chrono::seconds(60)), 0) << server.err();
}

TEST(MetricsEndpointTest, ServesValidPrometheusText) {
  auto config = test_config(untrained_bundle_dir());
  config.metrics.host = "127.0.0.1";
  config.metrics.port = 0;
  auto s = start_server(config, untrained_model());
  ASSERT_TRUE(s.server);
  ASSERT_GT(s.server->metrics_port(), 0);
  {
    grpc::ClientContext context;
    v1::GenerateReportResponse response;
    ASSERT_TRUE(s.stub->GenerateReport(&context, make_request({chest("CR-MONO1-10-chest_implicitLE_nometa.dcm")}, 3),
                                       &response).ok());
    grpc::ClientContext bad;
    s.stub->GenerateReport(&bad, make_request({"not dicom"}), &response);
  }
  const std::string text = http_get(s.server->metrics_port(), "/metrics");
  ASSERT_FALSE(text.empty());
  EXPECT_NE(text.find("cmn_requests_total{method=\"GenerateReport\",code=\"OK\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("cmn_requests_total{method=\"GenerateReport\",code=\"INVALID_ARGUMENT\"} 1"), std::string::npos);
  EXPECT_NE(text.find("cmn_stage_duration_seconds_count{stage=\"visual\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("cmn_batch_size_count 1"), std::string::npos) << text;
  EXPECT_NE(text.find("cmn_model_info{name=\"cmn-untrained-test\""), std::string::npos) << text;
  EXPECT_EQ(http_get(s.server->metrics_port(), "/healthz"), "ok\n");
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) GTEST_SKIP() << "promtool (Debian: prometheus) not installed";
  ScopedDir dir("promtool_live");
  write_bytes(dir.file("metrics.txt"), text);
  const int rc = std::system(("promtool check metrics < " + dir.file("metrics.txt") + " > " + dir.file("out.txt") +
                              " 2>&1").c_str());
  EXPECT_EQ(rc, 0) << read_bytes(dir.file("out.txt"));
}

TEST(ClientProcessTest, PrintsTheReportAndExitsByGrpcStatus) {
  auto s = start_server(test_config(untrained_bundle_dir()), untrained_model());
  ASSERT_TRUE(s.server);
  ScopedDir dir("client");
  const std::string study = dir.file("study");
  fs::create_directories(study + "/series1");
  fs::copy_file(shared_path("data/dicom/chest/RG1_J2KI.dcm"), study + "/series1/a.dcm");
  fs::copy_file(shared_path("data/dicom/chest/RG1_JLSN.dcm"), study + "/b.dcm");
  write_bytes(dir.file("junk.dcm"), "not dicom at all");

  std::string out, err;
  EXPECT_EQ(run({kClientBin, "--server", s.address(), "--max-length", "5", study}, dir, &out, &err), 0) << err;
  EXPECT_GT(out.size(), 1u);
  EXPECT_NE(err.find("UNTRAINED"), std::string::npos) << err;

  EXPECT_EQ(run({kClientBin, "--server", s.address(), "--max-length", "5", "--json", "--stream", study}, dir, &out, &err),
            0) << err;
  EXPECT_NE(out.find("\"sop_instance_uid\": \"1.3.6.1.4.1.5962.1.1.9.1.7.20040826185059.5457\""), std::string::npos)
      << out;

  EXPECT_EQ(run({kClientBin, "--server", s.address(), "--max-length", "5", "--attention-dir", dir.file("maps"), study},
                dir, &out, &err), 0) << err;
  EXPECT_TRUE(fs::exists(dir.file("maps") + "/s00_layer0_view0.png"));
  EXPECT_TRUE(fs::exists(dir.file("maps") + "/s00_layer0_view1.png"));  // the 2-view test bundle

  EXPECT_EQ(run({kClientBin, "--server", s.address(), dir.file("junk.dcm")}, dir, &out, &err), 13) << err;
  EXPECT_EQ(run({kClientBin, "--server", s.address(), "--require-trained", study}, dir, &out, &err), 19) << err;
  EXPECT_EQ(run({kClientBin, "--server", s.address(), "--info"}, dir, &out, &err), 0) << err;
  EXPECT_NE(out.find("cmn-untrained-test"), std::string::npos) << out;
  EXPECT_EQ(run({kClientBin, "--server", s.address(), dir.file("missing.dcm")}, dir, &out, &err), 1) << err;
  EXPECT_EQ(run({kClientBin, "--server", s.address()}, dir, &out, &err), 2) << err;
  // --health is the container's HEALTHCHECK: the standard grpc.health.v1 Check.
  EXPECT_EQ(run({kClientBin, "--server", s.address(), "--health", "--service", "cmn.v1.ReportService"}, dir, &out, &err),
            0) << err;
  EXPECT_EQ(out, "SERVING\n");
  EXPECT_EQ(run({kClientBin, "--server", s.address(), "--health", "--service", "no.such.Service"}, dir, &out, &err),
            10 + static_cast<int>(grpc::StatusCode::NOT_FOUND)) << err;
  const std::string address = s.address();
  s.server->shutdown(std::chrono::milliseconds(0));
  EXPECT_EQ(run({kClientBin, "--server", address, "--deadline-s", "5", study}, dir, &out, &err), 24) << err;
  EXPECT_EQ(run({kClientBin, "--server", address, "--deadline-s", "5", "--health"}, dir, &out, &err), 24) << err;
}

TEST(PythonClientTest, IndependentGrpcioClientGetsAReport) {
  if (std::system("/usr/bin/python3 -c 'import grpc, grpc_tools' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "python3-grpcio / python3-grpc-tools not installed";
  }
  auto s = start_server(test_config(untrained_bundle_dir()), untrained_model());
  ASSERT_TRUE(s.server);
  ScopedDir dir("grpcio");
  std::string out, err;
  const int code = run({"/usr/bin/python3", source_path("tests/server/grpcio_client.py"), source_path("proto"),
                        dir.path(), s.address(), shared_path("data/dicom/chest/RG1_J2KI.dcm"),
                        shared_path("data/dicom/chest/RG1_JLSN.dcm")},
                       dir, &out, &err);
  EXPECT_EQ(code, 0) << out << err;
  EXPECT_NE(out.find("\"untrained\": true"), std::string::npos) << out;
  EXPECT_NE(out.find("\"health_serving\": true"), std::string::npos) << out;
}

}  // namespace
}  // namespace cmn::server
