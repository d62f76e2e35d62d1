// The one inference path (engine::Replica): what every caller relies on — a study's tokens do not depend on its
// batch partners, the observer sees every step and can stop a batch, streamed tokens end as the report, attention
// maps come from the same pass, bad input and an unavailable device are clear errors.
#include "cmn/engine/replica.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "cmn/model/runtime.h"
#include "engine_test_util.h"

namespace cmn::engine {
namespace {

using namespace cmn::engine::testing;  // NOLINT: test helpers

TEST(ReplicaTest, AStudysTokensDoNotDependOnItsBatchPartners) {
  auto replica = cpu_replica();
  ASSERT_NE(replica, nullptr);
  const auto studies = fixture_studies();
  for (int64_t beam_size : {1, 3}) {
    auto together = replica->run(studies, beam(beam_size, 40));
    ASSERT_TRUE(together.ok()) << together.status();
    for (size_t s = 0; s < studies.size(); ++s) {
      auto alone = replica->run({studies[s]}, beam(beam_size, 40));
      ASSERT_TRUE(alone.ok()) << alone.status();
      EXPECT_EQ(alone->studies[0].ids, together->studies[s].ids) << "study " << s << " beam " << beam_size;
      ASSERT_EQ(alone->studies[0].token_log_probs.size(), together->studies[s].token_log_probs.size());
      for (size_t t = 0; t < alone->studies[0].token_log_probs.size(); ++t) {
        EXPECT_NEAR(alone->studies[0].token_log_probs[t], together->studies[s].token_log_probs[t], 1e-4);
      }
    }
  }
}

// Records what the replica tells it; stops the batch before decoder step `stop_at` (-1 = never).
class Recorder : public StepObserver {
 public:
  explicit Recorder(int64_t stop_at = -1) : stop_at_(stop_at) {}
  bool keep_going(int64_t steps_done) override {
    calls.push_back(steps_done);
    return steps_done != stop_at_;
  }
  void on_stable_tokens(size_t study, const std::vector<int64_t>& stable, size_t new_from, int64_t) override {
    if (study >= stable_by_study.size()) stable_by_study.resize(study + 1);
    auto& seen = stable_by_study[study];
    EXPECT_EQ(new_from, seen.size()) << "each call continues where the previous one ended";
    EXPECT_TRUE(std::equal(seen.begin(), seen.end(), stable.begin())) << "stable tokens never change";
    seen = stable;
  }
  std::vector<int64_t> calls;
  std::vector<std::vector<int64_t>> stable_by_study;

 private:
  int64_t stop_at_;
};

TEST(ReplicaTest, ObserverSeesEveryStepAndStreamedTokensEndAsTheReport) {
  auto replica = cpu_replica();
  ASSERT_NE(replica, nullptr);
  Recorder recorder;
  const auto studies = fixture_studies();
  auto result = replica->run(studies, beam(3, 40), {{false, true}, {false, false}}, &recorder);
  ASSERT_TRUE(result.ok()) << result.status();
  // After the visual stage (0), then before every decoder step (0, 1, ..., steps - 1).
  ASSERT_EQ(recorder.calls.size(), static_cast<size_t>(result->steps) + 1);
  EXPECT_EQ(recorder.calls[0], 0);
  for (int64_t t = 0; t < result->steps; ++t) EXPECT_EQ(recorder.calls[static_cast<size_t>(t) + 1], t);
  // Only study 0 asked for progress; what it was told is a prefix of its report (all of it when it ended).
  ASSERT_GE(recorder.stable_by_study.size(), 1u);
  if (recorder.stable_by_study.size() > 1) {
    EXPECT_TRUE(recorder.stable_by_study[1].empty());
  }
  std::vector<int64_t> ids = result->studies[0].ids;
  if (!ids.empty() && ids.back() == 0) ids.pop_back();
  const auto& streamed = recorder.stable_by_study[0];
  ASSERT_LE(streamed.size(), ids.size());
  EXPECT_TRUE(std::equal(streamed.begin(), streamed.end(), ids.begin()));
  EXPECT_GT(streamed.size(), 0u);
}

TEST(ReplicaTest, ObserverStopsTheBatchBetweenSteps) {
  auto replica = cpu_replica();
  ASSERT_NE(replica, nullptr);
  Recorder recorder(/*stop_at=*/3);
  auto result = replica->run(fixture_studies(), beam(3, 40), {}, &recorder);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(recorder.calls, (std::vector<int64_t>{0, 0, 1, 2, 3})) << "nothing ran after the stop";
  // The replica is usable afterwards.
  EXPECT_TRUE(replica->run(fixture_studies(), beam(3, 5)).ok());
}

TEST(ReplicaTest, AttentionComesFromTheSamePassAndChangesNothing) {
  auto replica = cpu_replica();
  ASSERT_NE(replica, nullptr);
  const auto studies = fixture_studies();
  auto plain = replica->run(studies, beam(3, 30));
  auto with = replica->run(studies, beam(3, 30), {{true, false}, {false, false}});
  ASSERT_TRUE(plain.ok() && with.ok());
  for (size_t s = 0; s < 2; ++s) {
    EXPECT_EQ(with->studies[s].ids, plain->studies[s].ids);
    EXPECT_TRUE(plain->studies[s].attention.empty());
  }
  EXPECT_TRUE(with->studies[1].attention.empty()) << "only the study that asked";
  const auto& a = with->studies[0].attention;
  std::vector<int64_t> ids = with->studies[0].ids;
  if (!ids.empty() && ids.back() == 0) ids.pop_back();
  EXPECT_EQ(a.layers, 3);
  EXPECT_EQ(a.tokens, static_cast<int64_t>(ids.size()));
  EXPECT_EQ(a.patches, 4 * 49);
  for (int64_t l = 0; l < a.layers; ++l) {
    for (int64_t t = 0; t < a.tokens; ++t) {
      double sum = 0;
      for (int64_t p = 0; p < a.patches; ++p) sum += a.at(l, t, p);
      EXPECT_NEAR(sum, 1.0, 1e-4) << "softmax rows";
    }
  }
  EXPECT_GT(with->attention_s, 0.0);
}

TEST(ReplicaTest, BadInputIsInvalidArgumentNamingTheProblem) {
  auto replica = cpu_replica();
  ASSERT_NE(replica, nullptr);
  auto studies = fixture_studies();
  studies[1].pop_back();
  auto wrong_views = replica->run(studies, beam(3, 5));
  EXPECT_EQ(wrong_views.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong_views.status().message().find("study 1 has 3 images"), std::string::npos) << wrong_views.status();
  studies = fixture_studies();
  studies[0][2].data.resize(10);
  EXPECT_EQ(replica->run(studies, beam(3, 5)).status().code(), absl::StatusCode::kInvalidArgument);
  auto bad_beam = replica->run(fixture_studies(), beam(0, 5));
  EXPECT_EQ(bad_beam.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_beam.status().message().find("beam_size"), std::string::npos) << bad_beam.status();
  auto bad_options = replica->run(fixture_studies(), beam(3, 5), {{true, false}});
  EXPECT_EQ(bad_options.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ReplicaTest, DeviceIsCheckedAtCreation) {
  auto bad = Replica::create(parity_model(), "tpu:7");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("tpu:7"), std::string::npos);
  if (torch::cuda::is_available()) GTEST_SKIP() << "a GPU is visible: the no-CUDA refusal cannot be seen here";
  auto cuda = Replica::create(parity_model(), "cuda:0");
  EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(cuda.status().message().find("CUDA"), std::string::npos) << cuda.status();
}

// A replica that decodes on one thread (model.decode_threads: 1) writes the same reports, and gives the calling
// thread its thread count back.
TEST(ReplicaTest, DecodeOnOneThreadGivesTheSameReportsAndRestoresTheThreads) {
  auto replica = cpu_replica();
  ASSERT_NE(replica, nullptr);
  const auto studies = fixture_studies();
  model::set_threads(2);
  auto usual = replica->run(studies, beam(3, 30));
  ASSERT_TRUE(usual.ok()) << usual.status();
  replica->set_decode_threads(1);
  auto single = replica->run(studies, beam(3, 30));
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(at::get_num_threads(), 2);
  for (size_t s = 0; s < studies.size(); ++s) {
    EXPECT_EQ(single->studies[s].ids, usual->studies[s].ids) << s;
    for (size_t t = 0; t < usual->studies[s].token_log_probs.size(); ++t) {
      EXPECT_NEAR(single->studies[s].token_log_probs[t], usual->studies[s].token_log_probs[t], 1e-4) << s << " " << t;
    }
  }
  model::set_threads(1);  // as the other tests of this process expect
}

// Bag-of-tokens F1 of two reports, the end token left out.
double token_f1(std::vector<int64_t> a, std::vector<int64_t> b) {
  auto strip = [](std::vector<int64_t>& v) { v.erase(std::remove(v.begin(), v.end(), 0), v.end()); };
  strip(a);
  strip(b);
  if (a.empty() && b.empty()) return 1.0;
  std::multiset<int64_t> left(a.begin(), a.end());
  int common = 0;
  for (int64_t id : b) {
    if (auto it = left.find(id); it != left.end()) left.erase(it), ++common;
  }
  if (common == 0) return 0.0;
  const double p = static_cast<double>(common) / b.size(), r = static_cast<double>(common) / a.size();
  return 2 * p * r / (p + r);
}

// A bf16 or int8 replica has its own derived weights: its reports stay close to fp32's (the parity model is
// untrained, so near-ties can flip a beam: scores and token overlap, not identity), and making it changes
// nothing for the fp32 replica that shares the Model.
TEST(ReplicaPrecisionTest, ReducedPrecisionReportsStayCloseAndLeaveFp32Exact) {
  auto fp32 = cpu_replica();
  ASSERT_NE(fp32, nullptr);
  EXPECT_EQ(fp32->precision(), model::Precision::kFp32);
  const auto studies = fixture_studies();
  auto exact = fp32->run(studies, beam(3, 60));
  ASSERT_TRUE(exact.ok()) << exact.status();
  for (model::Precision p : {model::Precision::kBf16, model::Precision::kInt8}) {
    const char* name = model::precision_name(p);
    if (const auto missing = model::precision_unavailable(p, "cpu"); !missing.empty()) {
      auto refused = Replica::create(parity_model(), "cpu", p);
      EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << name;
      EXPECT_EQ(refused.status().message(), missing);
      continue;  // this CPU cannot run it: the refusal is what there is to check
    }
    auto replica = Replica::create(parity_model(), "cpu", p);
    ASSERT_TRUE(replica.ok()) << name << ": " << replica.status();
    EXPECT_EQ((*replica)->precision(), p);
    auto reduced = (*replica)->run(studies, beam(3, 60));
    ASSERT_TRUE(reduced.ok()) << name << ": " << reduced.status();
    double f1 = 0;
    for (size_t s = 0; s < studies.size(); ++s) {
      const auto& a = exact->studies[s];
      const auto& b = reduced->studies[s];
      f1 += token_f1(a.ids, b.ids) / static_cast<double>(studies.size());
      if (a.ids == b.ids) {
        // The same report: each token's log-prob within 0.05 of fp32's (measured: <= 0.03, mean 0.005).
        for (size_t t = 0; t < a.ids.size(); ++t) {
          EXPECT_NEAR(b.token_log_probs[t], a.token_log_probs[t], 0.05) << name << " study " << s << " token " << t;
        }
      } else {
        // Another beam won: its score is still near fp32's best (measured: 2.6% bf16, 5.5% int8).
        EXPECT_NEAR(b.score, a.score, 0.1 * std::abs(a.score)) << name << " study " << s;
      }
    }
    EXPECT_GE(f1, 0.8) << name;
    // The shared fp32 network was not touched: the same ids and bit-identical log-probs as before.
    auto again = fp32->run(studies, beam(3, 60));
    ASSERT_TRUE(again.ok()) << again.status();
    for (size_t s = 0; s < studies.size(); ++s) {
      EXPECT_EQ(again->studies[s].ids, exact->studies[s].ids) << name;
      EXPECT_EQ(again->studies[s].token_log_probs, exact->studies[s].token_log_probs) << name;
    }
  }
}

// On a GPU host: the same ids as the CPU replica (skipped without one; CI has none).
TEST(ReplicaCudaTest, SameReportsAsTheCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto gpu = Replica::create(parity_model(), "cuda");
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  auto cpu = cpu_replica();
  const auto studies = fixture_studies();
  auto a = cpu->run(studies, beam(3, 60));
  auto b = (*gpu)->run(studies, beam(3, 60));
  ASSERT_TRUE(a.ok() && b.ok());
  for (size_t s = 0; s < studies.size(); ++s) {
    EXPECT_EQ(a->studies[s].ids, b->studies[s].ids);
    for (size_t t = 0; t < a->studies[s].token_log_probs.size(); ++t) {
      EXPECT_NEAR(a->studies[s].token_log_probs[t], b->studies[s].token_log_probs[t], 1e-3);
    }
  }
}

}  // namespace
}  // namespace cmn::engine
