#pragma once
// A small HTTP server (cpp-httplib, from Debian) on its own port: GET /metrics (Prometheus text format 0.0.4)
// and GET /healthz ("ok"). Separate from the gRPC port so scraping never competes with calls for a slot.
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace cmn::server {

class Metrics;

class MetricsHttpServer {
 public:
  // Binds host:port (port 0 = any free port) and serves from a thread of its own. `metrics` must outlive it.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> start(const std::string& host, int port,
                                                                  const Metrics* metrics);
  ~MetricsHttpServer();  // stop()
  void stop();
  int port() const { return port_; }

 private:
  MetricsHttpServer() = default;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  int port_ = -1;
};

}  // namespace cmn::server
