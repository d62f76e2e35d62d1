#include "cmn/server/metrics.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"

namespace cmn::server {
namespace {

// Latency buckets from 5 ms to 2 min: a decode on 2 CPU cores takes seconds, a rejected call microseconds.
const std::vector<double>& latency_bounds() {
  static const std::vector<double> bounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,  2.5,
                                             5,     10,   20,    30,   60,  120};
  return bounds;
}

// The shortest text that reads back as the same double ("0.005", not "0.0050000000000000001").
std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buffer[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*g", precision, v);
    if (std::strtod(buffer, nullptr) == v) break;
  }
  return buffer;
}

void header(const char* name, const char* type, const char* help, std::string* out) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::render(const std::string& name, const std::string& labels, std::string* out) const {
  const std::string sep = labels.empty() ? "" : ",";
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    const std::string le = i < bounds_.size() ? number(bounds_[i]) : "+Inf";
    absl::StrAppend(out, name, "_bucket{", labels, sep, "le=\"", le, "\"} ", cumulative, "\n");
  }
  const std::string braces = labels.empty() ? "" : absl::StrCat("{", labels, "}");
  absl::StrAppend(out, name, "_sum", braces, " ", number(sum_), "\n");
  absl::StrAppend(out, name, "_count", braces, " ", count_, "\n");
}

Metrics::Metrics() : batch_size_({1, 2, 3, 4, 6, 8, 12, 16, 24, 32}) {
  // Stages exist from the start so dashboards see zeros rather than missing series.
  for (const char* stage : {"queue", "preprocess", "visual", "encode", "decode"}) {
    stage_seconds_.emplace(stage, Histogram(latency_bounds()));
  }
}

std::string Metrics::escape_label(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void Metrics::count_request(const std::string& method, const std::string& code, double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{method, code}];
  request_seconds_.try_emplace(method, latency_bounds()).first->second.observe(seconds);
}

void Metrics::observe_stage(const std::string& stage, double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  stage_seconds_.try_emplace(stage, latency_bounds()).first->second.observe(seconds);
}

void Metrics::observe_batch(int size) {
  std::lock_guard<std::mutex> lock(mutex_);
  batch_size_.observe(size);
}

void Metrics::count_decode_steps(int64_t steps) {
  std::lock_guard<std::mutex> lock(mutex_);
  decode_steps_ += static_cast<uint64_t>(steps);
}

void Metrics::count_abandoned_study() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++abandoned_studies_;
}

void Metrics::set_queue_depth(int64_t depth) {
  std::lock_guard<std::mutex> lock(mutex_);
  queue_depth_ = depth;
}

void Metrics::set_in_flight(int64_t count) {
  std::lock_guard<std::mutex> lock(mutex_);
  in_flight_ = count;
}

void Metrics::set_model_info(const std::string& name, const std::string& version, const std::string& digest,
                             bool untrained) {
  std::lock_guard<std::mutex> lock(mutex_);
  model_labels_ = absl::StrCat("name=\"", escape_label(name), "\",version=\"", escape_label(version),
                               "\",digest=\"", escape_label(digest), "\",untrained=\"",
                               untrained ? "true" : "false", "\"");
}

std::string Metrics::render() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  header("cmn_requests_total", "counter", "Finished RPCs by method and gRPC status code.", &out);
  for (const auto& [key, count] : requests_) {
    absl::StrAppend(&out, "cmn_requests_total{method=\"", escape_label(key.first), "\",code=\"",
                    escape_label(key.second), "\"} ", count, "\n");
  }
  header("cmn_request_duration_seconds", "histogram", "Time from receiving an RPC to its status, per method.", &out);
  for (const auto& [method, h] : request_seconds_) {
    h.render("cmn_request_duration_seconds", absl::StrCat("method=\"", escape_label(method), "\""), &out);
  }
  header("cmn_stage_duration_seconds", "histogram",
         "Time per pipeline stage: queue, preprocess and decode per request, visual/encode per group joining the decode loop.", &out);
  for (const auto& [stage, h] : stage_seconds_) {
    h.render("cmn_stage_duration_seconds", absl::StrCat("stage=\"", escape_label(stage), "\""), &out);
  }
  header("cmn_batch_size", "histogram",
         "Per decoded study: the most studies that shared a decoder step with it, itself included.", &out);
  batch_size_.render("cmn_batch_size", "", &out);
  header("cmn_decode_steps_total", "counter", "Decoder steps run, each over every study in the decode loop.", &out);
  absl::StrAppend(&out, "cmn_decode_steps_total ", decode_steps_, "\n");
  header("cmn_studies_abandoned_total", "counter",
         "Studies dropped before their end because they were cancelled or past their deadline.", &out);
  absl::StrAppend(&out, "cmn_studies_abandoned_total ", abandoned_studies_, "\n");
  header("cmn_queue_depth", "gauge", "Requests waiting for the model worker.", &out);
  absl::StrAppend(&out, "cmn_queue_depth ", queue_depth_, "\n");
  header("cmn_requests_in_flight", "gauge", "Admitted requests: preprocessing, waiting or decoding.", &out);
  absl::StrAppend(&out, "cmn_requests_in_flight ", in_flight_, "\n");
  if (!model_labels_.empty()) {
    header("cmn_model_info", "gauge", "The loaded model (always 1).", &out);
    absl::StrAppend(&out, "cmn_model_info{", model_labels_, "} 1\n");
  }
  return out;
}

}  // namespace cmn::server
