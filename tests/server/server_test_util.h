#pragma once
// Shared fixtures of the server tests: model bundles built once per build tree (under a file lock, so parallel
// ctest processes share them), loaded once per process; chest DICOMs from ../shared edited in memory with
// DCMTK; real servers on 127.0.0.1:0 with real channels; a glog sink that keeps every log line.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <dcmtk/dcmdata/dctk.h>
#include <glog/logging.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "cmn/model/runtime.h"
#include "common/test_files.h"
#include "cmn/pipeline/bundle.h"
#include "cmn/server/config.h"
#include "cmn/server/server.h"
#include "cmn/server/serving_model.h"
#include "cmn/v1/report_service.grpc.pb.h"

namespace cmn::server::testing {

namespace fs = std::filesystem;

using cmn::testing::chest;
using cmn::testing::read_bytes;
using cmn::testing::shared_path;
using cmn::testing::write_bytes;

inline std::string source_path(const std::string& relative) { return std::string(CMN_SOURCE_DIR) + "/" + relative; }

// A directory for one test, removed afterwards; the pid keeps parallel ctest processes apart.
class ScopedDir : public cmn::testing::ScopedDir {
 public:
  explicit ScopedDir(const std::string& name) : cmn::testing::ScopedDir("cmn_server_test", name) {}
};

// The instance with the given attributes set (DCMTK; the transfer syntax is kept).
inline std::string edit_dicom(const std::string& bytes, const std::vector<std::pair<DcmTagKey, std::string>>& values) {
  static int counter = 0;
  const std::string base = (fs::path(::testing::TempDir()) /
                            ("cmn_edit_" + std::to_string(::getpid()) + "_" + std::to_string(counter++)))
                               .string();
  write_bytes(base + ".in", bytes);
  DcmFileFormat file;
  OFCondition cond = file.loadFile((base + ".in").c_str());
  EXPECT_TRUE(cond.good()) << cond.text();
  for (const auto& [tag, value] : values) {
    cond = file.getDataset()->putAndInsertString(tag, value.c_str());
    EXPECT_TRUE(cond.good()) << cond.text();
  }
  cond = file.saveFile((base + ".out").c_str(), EXS_Unknown);
  EXPECT_TRUE(cond.good()) << cond.text();
  std::string out = read_bytes(base + ".out");
  std::remove((base + ".in").c_str());
  std::remove((base + ".out").c_str());
  return out;
}

// Runs `make` under an exclusive lock on `dir`.lock unless `dir` already holds a valid bundle.
template <typename Make>
std::string cached_bundle(const std::string& name, Make make) {
  const fs::path dir = fs::path(CMN_BINARY_DIR) / "tests" / "server_fixtures" / name;
  fs::create_directories(dir.parent_path());
  const std::string lock_path = dir.string() + ".lock";
  const int fd = ::open(lock_path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
  EXPECT_GE(fd, 0);
  ::flock(fd, LOCK_EX);
  if (!pipeline::read_bundle_info(dir.string()).ok()) {
    std::error_code ec;
    fs::remove_all(dir, ec);
    const absl::Status made = make(dir.string());
    EXPECT_TRUE(made.ok()) << made;
  }
  ::flock(fd, LOCK_UN);
  ::close(fd);
  return dir.string();
}

// The untrained demo model with 2 views (IU X-ray style: frontal + lateral), seed 7.
inline const std::string& untrained_bundle_dir() {
  static const std::string dir = cached_bundle("untrained_v2", [](const std::string& out) {
    pipeline::InitUntrainedOptions options;
    options.vocab_file = source_path("configs/default_vocab.txt");
    options.views = 2;
    options.seed = 7;
    options.name = "cmn-untrained-test";
    options.overwrite = true;
    return pipeline::init_untrained(out, options).status();
  });
  return dir;
}

// The published-architecture R2GenCMN parity checkpoint (4 views, trained) as a bundle.
inline const std::string& parity_bundle_dir() {
  static const std::string dir = cached_bundle("parity", [](const std::string& out) {
    pipeline::ImportOptions options;
    options.name = "r2gencmn-parity";
    options.version = "dev";
    options.overwrite = true;
    return pipeline::import_r2gencmn(shared_path("parity/dev/model.pth"), shared_path("parity/dev/config.json"),
                                     shared_path("data/iu_xray/annotation.json"), out, options)
        .status();
  });
  return dir;
}

// Loaded once per test process, on 1 torch thread (CI has 2 cores for 2 test processes).
inline const ServingModel& untrained_model() {
  static const ServingModel model = [] {
    cmn::model::set_threads(1);
    ModelOptions options;
    options.bundle = untrained_bundle_dir();
    auto loaded = load_serving_model(options);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded.ok() ? std::move(*loaded) : ServingModel{};
  }();
  return model;
}

// A CPU replica of a loaded model (the engine's only way to run it).
inline std::unique_ptr<engine::Replica> replica_of(const ServingModel& served) {
  auto replica = engine::Replica::create(served.model, "cpu");
  EXPECT_TRUE(replica.ok()) << replica.status();
  return replica.ok() ? std::move(*replica) : nullptr;
}

// `views` model inputs [3,224,224] of seeded normal noise.
inline std::vector<preprocessing::FloatImage> noise_views(int views, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<preprocessing::FloatImage> out(static_cast<size_t>(views));
  for (auto& image : out) {
    image.height = image.width = 224;
    image.data.resize(3 * 224 * 224);
    for (auto& x : image.data) x = normal(rng);
  }
  return out;
}

// 127.0.0.1, any port, no metrics port, 1 torch thread, short batching delay.
inline ServerConfig test_config(const std::string& bundle_dir) {
  ServerConfig config;
  config.server.host = "127.0.0.1";
  config.server.port = 0;
  config.server.shutdown_grace_s = 5;
  config.metrics.port = -1;
  config.model.bundle = bundle_dir;
  config.model.threads = 1;
  config.engine.max_queue_delay_ms = 5;
  return config;
}

struct RunningServer {
  std::unique_ptr<ReportServer> server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::ReportService::Stub> stub;
  std::string address() const { return "127.0.0.1:" + std::to_string(server->port()); }
};

inline RunningServer start_server(const ServerConfig& config, const ServingModel& model,
                                  std::shared_ptr<grpc::ChannelCredentials> creds = nullptr,
                                  const std::string& tls_name = "") {
  RunningServer r;
  auto server = ReportServer::serve(config, model);
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return r;
  r.server = std::move(*server);
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(-1);
  if (!tls_name.empty()) args.SetSslTargetNameOverride(tls_name);
  r.channel = grpc::CreateCustomChannel(r.address(), creds ? creds : grpc::InsecureChannelCredentials(), args);
  r.stub = v1::ReportService::NewStub(r.channel);
  return r;
}

inline v1::GenerateReportRequest make_request(const std::vector<std::string>& instances, int max_length = 8,
                                              int beam_size = 0) {
  v1::GenerateReportRequest request;
  for (size_t i = 0; i < instances.size(); ++i) {
    auto* instance = request.add_instances();
    instance->set_data(instances[i]);
    instance->set_name("file" + std::to_string(i) + ".dcm");
  }
  request.mutable_decoding()->set_max_length(max_length);
  request.mutable_decoding()->set_beam_size(beam_size);
  return request;
}

inline void set_deadline(grpc::ClientContext* context, std::chrono::milliseconds in) {
  context->set_deadline(std::chrono::system_clock::now() + in);
}

// Keeps every glog line (with its severity) while it lives.
class LogCapture : public google::LogSink {
 public:
  LogCapture() { google::AddLogSink(this); }
  ~LogCapture() override { google::RemoveLogSink(this); }
  void send(google::LogSeverity severity, const char*, const char*, int, const google::LogMessageTime&,
            const char* message, size_t message_len) override {
    std::lock_guard<std::mutex> lock(mutex_);
    lines_.emplace_back(severity, std::string(message, message_len));
  }
  std::vector<std::pair<google::LogSeverity, std::string>> lines() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return lines_;
  }
  std::string all() const {
    std::string out;
    for (const auto& [severity, line] : lines()) out += line + "\n";
    return out;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::pair<google::LogSeverity, std::string>> lines_;
};

// Polls `done` until it holds or `bound` passes (a bound against hangs, never a guess of how long work takes:
// tests wait for the state they need, however slow or loaded this machine is). True when `done` held.
template <typename F>
bool wait_until(F done, std::chrono::seconds bound = std::chrono::seconds(120)) {
  const auto until = std::chrono::steady_clock::now() + bound;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// A one-shot gate between a test and a hook on another thread: wait() blocks until open() (or a hang bound
// passes: false then).
class Latch {
 public:
  void open() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      open_ = true;
    }
    changed_.notify_all();
  }
  bool wait(std::chrono::seconds bound = std::chrono::seconds(120)) {
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, bound, [&] { return open_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool open_ = false;
};

// `count` of cmn_requests_total{method,code} in the server's exposition (0 when absent).
inline int64_t request_count(ReportServer& server, const std::string& method, const std::string& code) {
  const std::string key = "cmn_requests_total{method=\"" + method + "\",code=\"" + code + "\"} ";
  const std::string text = server.metrics().render();
  const size_t at = text.find(key);
  if (at == std::string::npos) return 0;
  return std::stoll(text.substr(at + key.size()));
}

// grpc.health.v1.Health/Check with a hand-encoded request: {1: service}. The response is {1: status},
// SERVING = 1.
inline grpc::Status health_check(const std::shared_ptr<grpc::Channel>& channel, const std::string& service, int* serving) {
  grpc::GenericStub stub(channel);
  std::string request;
  if (!service.empty()) {
    request.push_back(0x0a);
    request.push_back(static_cast<char>(service.size()));
    request += service;
  }
  grpc::Slice slice(request);
  grpc::ByteBuffer in(&slice, 1), out;
  grpc::ClientContext context;
  set_deadline(&context, std::chrono::seconds(10));
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;
  grpc::Status result;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &in, &out, [&](grpc::Status s) {
    std::lock_guard<std::mutex> lock(mutex);
    result = s;
    done = true;
    done_cv.notify_all();
  });
  std::unique_lock<std::mutex> lock(mutex);
  done_cv.wait(lock, [&] { return done; });
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (result.ok() && out.Dump(&slices).ok()) {
    for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  *serving = bytes.size() == 2 && bytes[0] == 0x08 ? bytes[1] : 0;
  return result;
}

}  // namespace cmn::server::testing
