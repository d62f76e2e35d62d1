#pragma once
// cmn-server as a library object: model + engine + ReportService + health + reflection + metrics endpoint.
// main.cc only parses the command line, installs the SIGTERM handling and calls start / wait / shutdown.
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "cmn/server/auth.h"
#include "cmn/server/config.h"
#include "cmn/server/engine.h"
#include "cmn/server/metrics.h"
#include "cmn/server/metrics_http.h"
#include "cmn/server/report_service.h"
#include "cmn/server/serving_model.h"

namespace cmn::server {

// The gRPC health service name of the report service (the overall server is "").
inline constexpr char kServiceName[] = "cmn.v1.ReportService";

class ReportServer {
 public:
  // Loads config.model (refusing a bad bundle with a message naming the file), then serve().
  static absl::StatusOr<std::unique_ptr<ReportServer>> start(const ServerConfig& config);
  // Serves an already loaded model. The model's module must not run anywhere else while this server lives.
  static absl::StatusOr<std::unique_ptr<ReportServer>> serve(const ServerConfig& config, ServingModel model);

  ~ReportServer();  // shutdown(0 s) unless already shut down
  ReportServer(const ReportServer&) = delete;
  ReportServer& operator=(const ReportServer&) = delete;

  int port() const { return port_; }                   // the bound gRPC port (config port 0 -> the OS's pick)
  int metrics_port() const;                            // -1 when metrics.port is -1
  int health_port() const { return health_port_; }     // -1 when server.health_port is -1
  const ServerConfig& config() const { return config_; }
  v1::ModelInfo model_info() const { return service_->model_info(); }
  // The model calls start on now (a hot reload replaces it).
  std::shared_ptr<const ServedModel> served_model() const { return service_->current(); }
  Metrics& metrics() { return metrics_; }
  Engine& engine() { return *engine_; }

  // Health -> NOT_SERVING, stop accepting calls, let in-flight calls finish for up to `grace` (then cancel
  // them), stop the engine and the metrics endpoint. Idempotent; safe from any thread but a handler's.
  void shutdown(std::chrono::milliseconds grace);
  // Blocks until shutdown() has run.
  void wait();

  // Hot reload (SIGHUP, the ReloadModel RPC): loads `bundle` ("" = the configured model: model_options_source's
  // answer when set, else config().model again, e.g. a bundle directory replaced in place), warms a replica of
  // it on the server's device and precision, and swaps it in; calls in flight finish on the old model. An error
  // (bad bundle, failed warm-up) leaves the old model serving. One reload at a time; returns the new ModelInfo.
  absl::StatusOr<v1::ModelInfo> reload(const std::string& bundle = "");
  // Where reload("") reads the model section (cmn-server: the configuration file and overrides, read again).
  void set_model_options_source(std::function<absl::StatusOr<ModelOptions>()> source) {
    std::lock_guard<std::mutex> lock(reload_mutex_);
    model_options_source_ = std::move(source);
  }

 private:
  ReportServer() = default;

  ServerConfig config_;
  std::mutex reload_mutex_;
  std::function<absl::StatusOr<ModelOptions>()> model_options_source_;
  Metrics metrics_;
  std::unique_ptr<TokenAuthenticator> auth_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<ReportServiceImpl> service_;
  std::unique_ptr<grpc::Server> grpc_;
  std::unique_ptr<grpc::Server> health_grpc_;  // plaintext, health service only (server.health_port)
  int health_port_ = -1;
  std::unique_ptr<MetricsHttpServer> metrics_http_;
  int port_ = 0;

  std::mutex shutdown_mutex_;
  bool shut_down_ = false;
};

}  // namespace cmn::server
