#pragma once
// The server's Prometheus metrics, rendered in the text exposition format 0.0.4 (GET /metrics on the metrics
// port). Everything is thread-safe; updates take one short mutex (the request rate is tens per second, not
// millions).
//
//   cmn_requests_total{method,code}                 counter    finished RPCs by gRPC status name
//   cmn_request_duration_seconds{method}            histogram  whole call inside the server
//   cmn_stage_duration_seconds{stage}               histogram  queue | preprocess | visual | encode | decode
//   cmn_batch_size                                  histogram  per decoded study: most studies in one decoder step
//                                                              with it (itself included)
//   cmn_decode_steps_total                          counter    decoder steps run (each over every live study)
//   cmn_studies_abandoned_total                     counter    studies dropped before their end: cancelled/expired
//   cmn_queue_depth                                 gauge      requests waiting for the model worker
//   cmn_requests_in_flight                          gauge      admitted requests (preprocessing, waiting, decoding)
//   cmn_model_info{name,version,digest,untrained}   gauge      always 1: the loaded model's identity
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace cmn::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);  // ascending; +Inf is implicit
  void observe(double value);
  // Appends `name_bucket{labels,le=...}`, `name_sum{labels}`, `name_count{labels}` lines.
  void render(const std::string& name, const std::string& labels, std::string* out) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); last = +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();

  void count_request(const std::string& method, const std::string& code, double seconds);
  void observe_stage(const std::string& stage, double seconds);
  void observe_batch(int size);  // a decoded study: the most studies that shared a decoder step with it
  void count_decode_steps(int64_t steps);
  void count_abandoned_study();
  void set_queue_depth(int64_t depth);
  void set_in_flight(int64_t count);
  void set_model_info(const std::string& name, const std::string& version, const std::string& digest,
                      bool untrained);

  // The whole exposition (text format 0.0.4), ending with a newline.
  std::string render() const;

  // A label value escaped for the exposition format (backslash, double quote, newline).
  static std::string escape_label(const std::string& value);

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, std::string>, uint64_t> requests_;  // (method, code) -> count
  std::map<std::string, Histogram> request_seconds_;                   // method -> latency
  std::map<std::string, Histogram> stage_seconds_;                     // stage -> latency
  Histogram batch_size_;
  uint64_t decode_steps_ = 0;
  uint64_t abandoned_studies_ = 0;
  int64_t queue_depth_ = 0;
  int64_t in_flight_ = 0;
  std::string model_labels_;  // rendered labels of cmn_model_info, "" before set_model_info
};

}  // namespace cmn::server
