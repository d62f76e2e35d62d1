#include "cmn/server/metrics_http.h"

#include <chrono>

#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "cmn/server/metrics.h"

namespace cmn::server {

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::start(const std::string& host, int port,
                                                                            const Metrics* metrics) {
  std::unique_ptr<MetricsHttpServer> server(new MetricsHttpServer());
  server->http_ = std::make_unique<httplib::Server>();
  server->http_->Get("/metrics", [metrics](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics->render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server->http_->Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  const int bound = port == 0 ? server->http_->bind_to_any_port(host) : (server->http_->bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", host, ":", port));
  }
  server->port_ = bound;
  httplib::Server* http = server->http_.get();
  server->thread_ = std::thread([http] { http->listen_after_bind(); });
  // stop() before the accept loop runs would be lost (and join would hang): wait until it runs.
  for (int i = 0; i < 2000 && !http->is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return server;
}

MetricsHttpServer::~MetricsHttpServer() { stop(); }

void MetricsHttpServer::stop() {
  if (http_) http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace cmn::server
