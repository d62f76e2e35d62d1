// In-flight batching (engine::Flight, issue 15 item 3) on the parity model: studies join a running decode loop
// between its steps, each at its own step with its own settings, leave as soon as they finish, and get exactly
// what the replica gives each of them alone.
#include "cmn/engine/flight.h"

#include <algorithm>
#include <map>
#include <vector>

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "engine_test_util.h"

namespace cmn::engine {
namespace {

using namespace cmn::engine::testing;  // NOLINT: test helpers

StudyResult alone(Replica& replica, const std::vector<preprocessing::FloatImage>& study,
                  const model::DecodingOptions& decoding, StudyOptions options = {}) {
  auto r = replica.run({study}, decoding, {options});
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->studies[0] : StudyResult{};
}

// Steps the flight until it is empty; results by key, and the step each finished at.
std::map<int64_t, std::pair<FlightResult, int64_t>> run_to_end(Flight& flight, const StableTokensFn& on_stable = {}) {
  std::map<int64_t, std::pair<FlightResult, int64_t>> out;
  while (!flight.empty()) {
    auto done = flight.step(on_stable);
    EXPECT_TRUE(done.ok()) << done.status();
    if (!done.ok()) break;
    for (auto& r : *done) out[r.key] = {r, flight.steps()};
  }
  return out;
}

TEST(FlightTest, StudiesJoiningMidDecodeGetWhatTheyGetAlone) {
  auto replica = cpu_replica();
  ASSERT_NE(replica, nullptr);
  std::shared_ptr<Replica> shared_replica = std::move(replica);
  const auto studies = fixture_studies();
  const auto beam3 = beam(3, 40);
  auto beam5 = beam(5, 30);
  model::DecodingOptions greedy = beam(1, 25);
  greedy.block_trigrams = true;
  const StudyResult first_alone = alone(*shared_replica, studies[0], beam3);
  const StudyResult second_alone = alone(*shared_replica, studies[1], beam5);
  const StudyResult third_alone = alone(*shared_replica, studies[1], greedy);

  Flight flight(shared_replica);
  auto a = flight.join({{studies[0], beam3, {}}});
  ASSERT_TRUE(a.ok()) << a.status();
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(flight.step().ok());
  // Joins at the first one's 5th step, with other settings.
  auto b = flight.join({{studies[1], beam5, {}}, {studies[1], greedy, {}}});
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(flight.live(), 3u);
  ASSERT_EQ(b->keys.size(), 2u);
  EXPECT_GT(b->visual_s, 0.0);
  const auto results = run_to_end(flight);
  ASSERT_EQ(results.size(), 3u);
  const auto& first = results.at(a->keys[0]).first;
  const auto& second = results.at(b->keys[0]).first;
  const auto& third = results.at(b->keys[1]).first;
  EXPECT_EQ(first.study.ids, first_alone.ids);
  EXPECT_EQ(first.study.token_log_probs, first_alone.token_log_probs);  // bit for bit
  EXPECT_EQ(first.study.score, first_alone.score);
  EXPECT_EQ(second.study.ids, second_alone.ids);
  EXPECT_EQ(second.study.token_log_probs, second_alone.token_log_probs);
  EXPECT_EQ(third.study.ids, third_alone.ids);
  EXPECT_EQ(third.study.token_log_probs, third_alone.token_log_probs);
  EXPECT_EQ(first.most_partners, 3);
  EXPECT_EQ(third.most_partners, 3);
  // Each left at its own end: the loop's step count when it finished is its join step plus its own steps.
  EXPECT_EQ(results.at(a->keys[0]).second, first.steps);
  EXPECT_EQ(results.at(b->keys[0]).second, 4 + second.steps);
  EXPECT_EQ(results.at(b->keys[1]).second, 4 + third.steps);
}

// A sampled study draws from its own generator (DecodingOptions::seed): joined mid-decode beside a beam search,
// it samples what Replica::run samples for it alone.
TEST(FlightTest, ASampledStudyDrawsWhatItDrawsAlone) {
  std::shared_ptr<Replica> replica = cpu_replica();
  ASSERT_NE(replica, nullptr);
  const auto studies = fixture_studies();
  model::DecodingOptions sampled = beam(1, 30);
  sampled.method = model::DecodingMethod::kSample;
  sampled.temperature = 0.8;
  sampled.seed = 1234;
  const StudyResult expected = alone(*replica, studies[0], sampled);
  Flight flight(replica);
  ASSERT_TRUE(flight.join({{studies[1], beam(3, 40), {}}}).ok());
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(flight.step().ok());
  auto joined = flight.join({{studies[0], sampled, {}}});
  ASSERT_TRUE(joined.ok()) << joined.status();
  const auto results = run_to_end(flight);
  const auto& r = results.at(joined->keys[0]).first;
  EXPECT_EQ(r.study.ids, expected.ids);
  EXPECT_EQ(r.study.token_log_probs, expected.token_log_probs);
}

TEST(FlightTest, ALeavingStudyChangesNothingForTheOthers) {
  std::shared_ptr<Replica> replica = cpu_replica();
  ASSERT_NE(replica, nullptr);
  const auto studies = fixture_studies();
  const StudyResult expected = alone(*replica, studies[1], beam(3, 40));
  Flight flight(replica);
  auto joined = flight.join({{studies[0], beam(3, 40), {}}, {studies[1], beam(3, 40), {}}});
  ASSERT_TRUE(joined.ok()) << joined.status();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(flight.step().ok());
  flight.leave(joined->keys[0]);  // cancelled: gone between two steps
  flight.leave(12345);            // unknown: ignored
  EXPECT_EQ(flight.live(), 1u);
  const auto results = run_to_end(flight);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results.begin()->first, joined->keys[1]);
  EXPECT_EQ(results.begin()->second.first.study.ids, expected.ids);
  EXPECT_EQ(results.begin()->second.first.study.token_log_probs, expected.token_log_probs);
}

TEST(FlightTest, ProgressAndAttentionAreTheReplicasForThatStudy) {
  std::shared_ptr<Replica> replica = cpu_replica();
  ASSERT_NE(replica, nullptr);
  const auto studies = fixture_studies();
  const StudyOptions both{/*attention=*/true, /*progress=*/true};
  const StudyResult expected = alone(*replica, studies[0], beam(3, 40), both);
  Flight flight(replica);
  ASSERT_TRUE(flight.join({{studies[1], beam(3, 40), {}}}).ok());
  ASSERT_TRUE(flight.step().ok());
  auto joined = flight.join({{studies[0], beam(3, 40), both}});
  ASSERT_TRUE(joined.ok()) << joined.status();
  std::vector<int64_t> streamed;
  int calls = 0;
  const auto results = run_to_end(flight, [&](int64_t key, const std::vector<int64_t>& stable, size_t new_from,
                                              int64_t) {
    EXPECT_EQ(key, joined->keys[0]) << "only the study that asked";
    EXPECT_EQ(new_from, streamed.size()) << "each call continues where the previous one ended";
    EXPECT_TRUE(std::equal(streamed.begin(), streamed.end(), stable.begin())) << "stable tokens never change";
    streamed = stable;
    ++calls;
  });
  const auto& r = results.at(joined->keys[0]).first;
  EXPECT_EQ(r.study.ids, expected.ids);
  std::vector<int64_t> ids = r.study.ids;
  if (!ids.empty() && ids.back() == 0) ids.pop_back();
  EXPECT_GT(calls, 0);
  ASSERT_LE(streamed.size(), ids.size());
  EXPECT_TRUE(std::equal(streamed.begin(), streamed.end(), ids.begin()));
  // The attention maps: replayed for this study alone over its own encoder memory, as the replica does.
  ASSERT_FALSE(r.study.attention.empty());
  ASSERT_EQ(r.study.attention.values.size(), expected.attention.values.size());
  EXPECT_EQ(r.study.attention.tokens, expected.attention.tokens);
  for (size_t i = 0; i < expected.attention.values.size(); ++i) {
    ASSERT_NEAR(r.study.attention.values[i], expected.attention.values[i], 1e-5) << i;
  }
  EXPECT_TRUE(results.at(0).first.study.attention.empty()) << "the other study did not ask";
}

// The decode loop runs on Replica::decode_threads from its first step until a join (whose trunk takes the
// replica's threads), and the count is restored when the flight ends: not switched twice a step.
TEST(FlightTest, DecodeThreadsHoldBetweenJoinsAndAreRestoredAfterwards) {
  std::shared_ptr<Replica> replica = cpu_replica();
  ASSERT_NE(replica, nullptr);
  const auto studies = fixture_studies();
  const int before = at::get_num_threads();
  const int decode = before + 1;
  replica->set_decode_threads(decode);
  const StudyResult expected = alone(*replica, studies[0], beam(3, 12));
  {
    Flight flight(replica);
    ASSERT_TRUE(flight.join({{studies[0], beam(3, 12), {}}}).ok());
    EXPECT_EQ(at::get_num_threads(), before);
    ASSERT_TRUE(flight.step().ok());
    EXPECT_EQ(at::get_num_threads(), decode) << "kept between steps";
    ASSERT_TRUE(flight.join({{studies[1], beam(3, 12), {}}}).ok());
    EXPECT_EQ(at::get_num_threads(), before) << "the join's trunk ran on the replica's threads";
    const auto results = run_to_end(flight);
    EXPECT_EQ(results.at(0).first.study.ids, expected.ids);
  }
  EXPECT_EQ(at::get_num_threads(), before);
}

TEST(FlightTest, BadStudiesAreInvalidArgumentAndJoinNothing) {
  std::shared_ptr<Replica> replica = cpu_replica();
  ASSERT_NE(replica, nullptr);
  auto studies = fixture_studies();
  Flight flight(replica);
  auto three_views = studies[0];
  three_views.pop_back();
  auto wrong_views = flight.join({{studies[1], beam(3, 10), {}}, {three_views, beam(3, 10), {}}});
  EXPECT_EQ(wrong_views.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong_views.status().message().find("study 1 has 3 images but the model takes 4"), std::string::npos)
      << wrong_views.status();
  auto no_length = beam(3, 0);
  auto bad_option = flight.join({{studies[0], no_length, {}}});
  EXPECT_EQ(bad_option.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_option.status().message().find("max_length"), std::string::npos) << bad_option.status();
  EXPECT_TRUE(flight.empty());
  auto stopped = flight.join({{studies[0], beam(3, 10), {}}}, [] { return false; });
  EXPECT_EQ(stopped.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(flight.empty());
  auto step = flight.step();  // nothing live: nothing to do
  ASSERT_TRUE(step.ok());
  EXPECT_TRUE(step->empty());
  EXPECT_EQ(flight.steps(), 0);
}

}  // namespace
}  // namespace cmn::engine
