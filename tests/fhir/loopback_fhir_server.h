#pragma once
// A small FHIR endpoint on 127.0.0.1 (cpp-httplib) that records every POST /.../DiagnosticReport it receives and
// answers with the status the test scripts (201 once the scripted failures are used up). Shared by the
// post_fhir_report test and the cmn-pacs end-to-end test.
#include <httplib.h>

#include <chrono>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace cmn::testing {

class LoopbackFhirServer {
 public:
  struct Received {
    std::string path, content_type, if_none_exist, body;
  };

  LoopbackFhirServer() {
    server_.Post(R"(/.*)", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard<std::mutex> lock(mutex_);
      received_.push_back({req.path, req.get_header_value("Content-Type"), req.get_header_value("If-None-Exist"),
                           req.body});
      int status = 201;
      if (!statuses_.empty()) {
        status = statuses_.front();
        statuses_.pop_front();
      }
      res.status = status;
      res.set_content(status < 300 ? req.body : R"({"resourceType":"OperationOutcome"})", "application/fhir+json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // stop() before the accept loop runs would be lost (and join() would hang): wait until it runs.
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~LoopbackFhirServer() {
    server_.stop();
    thread_.join();
  }
  LoopbackFhirServer(const LoopbackFhirServer&) = delete;
  LoopbackFhirServer& operator=(const LoopbackFhirServer&) = delete;

  std::string base_url(const std::string& path = "/fhir") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  // The next answers, in order (e.g. {503, 503}: two failures, then 201).
  void script(const std::vector<int>& statuses) {
    std::lock_guard<std::mutex> lock(mutex_);
    statuses_.assign(statuses.begin(), statuses.end());
  }
  std::vector<Received> received() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return received_;
  }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::vector<Received> received_;
  std::deque<int> statuses_;
};

}  // namespace cmn::testing
