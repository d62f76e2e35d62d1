// The Prometheus exposition: counters, histograms, gauges, model info; valid for promtool when installed.
#include "cmn/server/metrics.h"

#include <cstdio>
#include <cstdlib>

#include <gtest/gtest.h>

#include "server_test_util.h"

namespace cmn::server {
namespace {

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

TEST(MetricsTest, RendersCountersHistogramsGaugesAndModelInfo) {
  Metrics m;
  m.set_model_info("iu \"xray\"", "1.0", "sha256:ab", false);
  m.count_request("GenerateReport", "OK", 0.3);
  m.count_request("GenerateReport", "OK", 3.0);
  m.count_request("GenerateReport", "INVALID_ARGUMENT", 0.001);
  m.observe_stage("decode", 0.7);
  m.observe_batch(3);
  m.count_decode_steps(40);
  m.count_abandoned_study();
  m.set_queue_depth(2);
  m.set_in_flight(5);
  const std::string text = m.render();
  EXPECT_TRUE(has_line(text, "cmn_requests_total{method=\"GenerateReport\",code=\"OK\"} 2")) << text;
  EXPECT_TRUE(has_line(text, "cmn_requests_total{method=\"GenerateReport\",code=\"INVALID_ARGUMENT\"} 1")) << text;
  EXPECT_TRUE(has_line(text, "cmn_request_duration_seconds_bucket{method=\"GenerateReport\",le=\"0.005\"} 1")) << text;
  EXPECT_TRUE(has_line(text, "cmn_request_duration_seconds_bucket{method=\"GenerateReport\",le=\"0.5\"} 2")) << text;
  EXPECT_TRUE(has_line(text, "cmn_request_duration_seconds_bucket{method=\"GenerateReport\",le=\"+Inf\"} 3")) << text;
  EXPECT_TRUE(has_line(text, "cmn_request_duration_seconds_count{method=\"GenerateReport\"} 3")) << text;
  EXPECT_TRUE(has_line(text, "cmn_stage_duration_seconds_bucket{stage=\"decode\",le=\"1\"} 1")) << text;
  EXPECT_TRUE(has_line(text, "cmn_stage_duration_seconds_count{stage=\"visual\"} 0")) << text;
  EXPECT_TRUE(has_line(text, "cmn_batch_size_bucket{le=\"3\"} 1")) << text;
  EXPECT_TRUE(has_line(text, "cmn_batch_size_bucket{le=\"2\"} 0")) << text;
  EXPECT_TRUE(has_line(text, "cmn_decode_steps_total 40")) << text;
  EXPECT_TRUE(has_line(text, "cmn_studies_abandoned_total 1")) << text;
  EXPECT_TRUE(has_line(text, "cmn_queue_depth 2")) << text;
  EXPECT_TRUE(has_line(text, "cmn_requests_in_flight 5")) << text;
  EXPECT_TRUE(has_line(
      text, "cmn_model_info{name=\"iu \\\"xray\\\"\",version=\"1.0\",digest=\"sha256:ab\",untrained=\"false\"} 1"))
      << text;
}

TEST(MetricsTest, EscapesLabelValues) {
  EXPECT_EQ(Metrics::escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
}

TEST(MetricsTest, ExpositionPassesPromtool) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) GTEST_SKIP() << "promtool (Debian: prometheus) not installed";
  Metrics m;
  m.set_model_info("cmn", "1", "sha256:00", true);
  m.count_request("GenerateReport", "OK", 1.5);
  m.count_request("StreamReport", "CANCELLED", 0.2);
  m.observe_batch(2);
  m.count_decode_steps(10);
  m.count_abandoned_study();
  testing::ScopedDir dir("promtool");
  testing::write_bytes(dir.file("metrics.txt"), m.render());
  const std::string command = "promtool check metrics < " + dir.file("metrics.txt") + " > " + dir.file("out.txt") + " 2>&1";
  const int rc = std::system(command.c_str());
  EXPECT_EQ(rc, 0) << testing::read_bytes(dir.file("out.txt"));
}

}  // namespace
}  // namespace cmn::server
