// Tests for cmn::model decoding (beam_search / sample / decode) over scripted step models.
//
// The expectations are worked by hand from the reference R2GenCMN rules (CaptionModel.beam_search with
// group_size 1, AttModel._sample), not from the implementation: the probabilities below were chosen so the
// candidates of each step can be ranked on paper; the comments show the ranking.
//
// Vocabulary convention: 0 is bos = eos = pad; words are 1..V-1.
#include "cmn/model/decoding.h"
#include "cmn/model/decoding_rules.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "model/c10_error.h"

namespace cmn::model {
namespace {

using Ids = std::vector<int64_t>;
// Unnormalised scores (log-space) of the next token for a row of `study` whose fed tokens are `history`
// (history[0] is the bos); the model log-softmaxes them.
using Scores = std::function<std::vector<double>(int64_t study, const Ids& history)>;

// A StepModel whose log-probs depend on each row's full history. It keeps one history per row, applies
// select_rows to them (so a wrong parent or a wrong study grouping changes what the next step returns), and
// checks what it is given.
class ScriptedStepModel : public StepModel {
 public:
  ScriptedStepModel(int64_t studies, int64_t vocab, Scores scores, int64_t expected_rows_per_study)
      : studies_(studies), vocab_(vocab), scores_(std::move(scores)),
        expected_rows_per_study_(expected_rows_per_study) {
    for (int64_t s = 0; s < studies; ++s) rows_.push_back({s, {}});
  }

  int64_t studies() const override { return studies_; }

  torch::Tensor step(const torch::Tensor& tokens) override {
    if (tokens.dim() != 1 || tokens.scalar_type() != torch::kLong ||
        tokens.size(0) != static_cast<int64_t>(rows_.size())) {
      ADD_FAILURE() << "step: expected " << rows_.size() << " long tokens, got " << tokens.sizes() << " "
                    << tokens.scalar_type();
      throw std::runtime_error("bad step input");
    }
    auto t = tokens.contiguous();
    const auto* p = t.data_ptr<int64_t>();
    auto out = torch::empty({static_cast<int64_t>(rows_.size()), vocab_}, torch::kFloat);
    auto* o = out.data_ptr<float>();
    for (size_t r = 0; r < rows_.size(); ++r) {
      rows_[r].history.push_back(p[r]);
      const auto sc = scores_(rows_[r].study, rows_[r].history);
      if (static_cast<int64_t>(sc.size()) != vocab_) throw std::runtime_error("script gives a wrong vocab size");
      for (int64_t v = 0; v < vocab_; ++v) o[r * vocab_ + v] = static_cast<float>(sc[v]);
    }
    ++steps_;
    return torch::log_softmax(out, -1);
  }

  void select_rows(const torch::Tensor& rows, int64_t rows_per_study) override {
    EXPECT_EQ(rows_per_study, expected_rows_per_study_) << "select_rows: rows_per_study";
    if (rows.dim() != 1 || rows.scalar_type() != torch::kLong || rows.size(0) != studies_ * rows_per_study) {
      ADD_FAILURE() << "select_rows: expected " << studies_ * rows_per_study << " long rows, got " << rows.sizes();
      throw std::runtime_error("bad select_rows input");
    }
    auto t = rows.contiguous();
    const auto* p = t.data_ptr<int64_t>();
    std::vector<Row> next;
    Ids call;
    for (int64_t i = 0; i < rows.size(0); ++i) {
      if (p[i] < 0 || p[i] >= static_cast<int64_t>(rows_.size())) {
        ADD_FAILURE() << "select_rows: row " << p[i] << " out of range";
        throw std::runtime_error("bad row");
      }
      const Row& from = rows_[p[i]];
      EXPECT_EQ(from.study, i / rows_per_study) << "select_rows: slot " << i << " takes row " << p[i]
                                                << " of another study";
      next.push_back(from);
      next.back().study = i / rows_per_study;
      call.push_back(p[i]);
    }
    rows_ = std::move(next);
    select_calls_.push_back(std::move(call));
  }

  int64_t steps() const { return steps_; }
  const std::vector<Ids>& select_calls() const { return select_calls_; }
  std::vector<Ids> histories() const {
    std::vector<Ids> h;
    for (const auto& r : rows_) h.push_back(r.history);
    return h;
  }

 private:
  struct Row {
    int64_t study;
    Ids history;
  };
  int64_t studies_, vocab_;
  Scores scores_;
  int64_t expected_rows_per_study_;
  std::vector<Row> rows_;
  int64_t steps_ = 0;
  std::vector<Ids> select_calls_;
};

std::vector<double> logs(const std::vector<double>& probs) {
  std::vector<double> l;
  for (double p : probs) l.push_back(std::log(p));
  return l;
}

// Probabilities keyed by the full history (bos included), with a fallback for histories not listed.
Scores by_history(std::map<Ids, std::vector<double>> table, std::vector<double> fallback) {
  return [table = std::move(table), fallback = std::move(fallback)](int64_t, const Ids& h) {
    auto it = table.find(h);
    return logs(it == table.end() ? fallback : it->second);
  };
}

// Probabilities keyed by the last fed token.
Scores by_last(std::map<int64_t, std::vector<double>> table) {
  return [table = std::move(table)](int64_t, const Ids& h) { return logs(table.at(h.back())); };
}

// Seeded pseudo-random scores per (study, history): a splitmix64 hash, so the same history always gets the
// same scores however the rows are ordered or batched. eos becomes likelier with length so beams end.
Scores random_scores(uint64_t seed, int64_t vocab, double eos_growth = 0.5) {
  return [=](int64_t study, const Ids& h) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(study) * 0xBF58476D1CE4E5B9ULL;
    for (int64_t t : h) x = (x ^ static_cast<uint64_t>(t + 1)) * 0x94D049BB133111EBULL + 0x2545F4914F6CDD1DULL;
    std::vector<double> sc(vocab);
    for (int64_t v = 0; v < vocab; ++v) {
      uint64_t z = (x += 0x9E3779B97F4A7C15ULL);
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
      z ^= z >> 31;
      sc[v] = 4.0 * static_cast<double>(z >> 11) / 9007199254740992.0;  // [0, 4)
    }
    sc[0] += -2.5 + eos_growth * static_cast<double>(h.size());
    return sc;
  };
}

// Scores of study `study` of `scores`, as study 0 of a one-study model.
Scores only_study(Scores scores, int64_t study) {
  return [=](int64_t, const Ids& h) { return scores(study, h); };
}

DecodingOptions beam_options(int64_t beam, int64_t max_length) {
  DecodingOptions o;
  o.method = DecodingMethod::kBeamSearch;
  o.beam_size = beam;
  o.max_length = max_length;
  return o;
}

DecodingOptions greedy_options(int64_t max_length) {
  DecodingOptions o;
  o.method = DecodingMethod::kGreedy;
  o.beam_size = 1;
  o.max_length = max_length;
  return o;
}

double sum_of(const std::vector<float>& v) {
  double s = 0.0;
  for (float x : v) s += x;
  return s;
}

using cmn::testing::error_of;

constexpr double kTol = 1e-5;

// ---------------------------------------------------------------------------------------------------------
// (1) Three beams over three steps; greedy and a 2-beam search both find a worse sentence.
//
//   t0 (bos):   p(1)=.45 p(2)=.3 p(3)=.2 p(4)=.04 p(0)=.01       -> beams [1] .45, [2] .3, [3] .2
//   t1: [1]: 0 .1, 1 .3, 2 .25, 3 .2, 4 .15  -> [1,1] .135 [1,2] .1125 [1,3] .09 ...
//       [2]: 0 .05, 1 .05, 2 .35, 3 .25, 4 .3 -> [2,2] .105 [2,4] .09 ...
//       [3]: 4 .96, others .01                -> [3,4] .192
//       top 3: [3,4] .192 (parent row 2), [1,1] .135 (row 0), [1,2] .1125 (row 0)
//   t2: [3,4]: 0 .8, others .05 -> [3,4,0] .1536
//       [1,1]: 0 .5, 1 .2, others .1 -> [1,1,0] .0675
//       [1,2]: 0 .4, others .15 -> [1,2,0] .045
//       top 3 all end: best [3,4,0], p = ln(.2 * .96 * .8) = ln .1536
//   greedy: 1 (.45), 1 (.3), 0 (.5) -> [1,1,0], ln .0675; beam 2 drops [3] at t0 and also ends on [1,1,0].
Scores worked_case() {
  return by_history({{{0}, {.01, .45, .3, .2, .04}},
                     {{0, 1}, {.1, .3, .25, .2, .15}},
                     {{0, 2}, {.05, .05, .35, .25, .3}},
                     {{0, 3}, {.01, .01, .01, .01, .96}},
                     {{0, 3, 4}, {.8, .05, .05, .05, .05}},
                     {{0, 1, 1}, {.5, .2, .1, .1, .1}},
                     {{0, 1, 2}, {.4, .15, .15, .15, .15}}},
                    {.4, .15, .15, .15, .15});
}

TEST(BeamSearchTest, ThreeBeamsFindWhatGreedyMisses) {
  ScriptedStepModel model(1, 5, worked_case(), 3);
  const auto r = beam_search(model, beam_options(3, 5));
  ASSERT_EQ(r.best.size(), 1u);
  EXPECT_EQ(r.best[0].ids, (Ids{3, 4, 0}));
  EXPECT_NEAR(r.best[0].score, std::log(.1536), kTol);
  ASSERT_EQ(r.best[0].token_log_probs.size(), 3u);
  EXPECT_NEAR(r.best[0].token_log_probs[0], std::log(.2), kTol);
  EXPECT_NEAR(r.best[0].token_log_probs[1], std::log(.96), kTol);
  EXPECT_NEAR(r.best[0].token_log_probs[2], std::log(.8), kTol);
  // All three beams ended at t2, so the search stops there (early_stop is the default).
  EXPECT_EQ(r.steps, 3);
  EXPECT_EQ(model.steps(), r.steps);
  // Parents: t0 all from the single bos row; t1 from rows 2, 0, 0.
  ASSERT_EQ(model.select_calls().size(), 2u);
  EXPECT_EQ(model.select_calls()[0], (Ids{0, 0, 0}));
  EXPECT_EQ(model.select_calls()[1], (Ids{2, 0, 0}));

  ScriptedStepModel greedy_model(1, 5, worked_case(), 1);
  const auto g = sample(greedy_model, greedy_options(5));
  EXPECT_EQ(g.best[0].ids, (Ids{1, 1, 0}));
  EXPECT_NEAR(g.best[0].score, std::log(.0675), kTol);
  EXPECT_EQ(g.steps, 3);

  ScriptedStepModel two(1, 5, worked_case(), 2);
  const auto b2 = beam_search(two, beam_options(2, 5));
  EXPECT_EQ(b2.best[0].ids, (Ids{1, 1, 0}));
  EXPECT_NEAR(b2.best[0].score, std::log(.0675), kTol);
}

TEST(BeamSearchTest, RunningToMaxLengthGivesTheSameAnswer) {
  auto o = beam_options(3, 5);
  o.early_stop = false;
  ScriptedStepModel model(1, 5, worked_case(), 3);
  const auto r = beam_search(model, o);
  EXPECT_EQ(r.best[0].ids, (Ids{3, 4, 0}));
  EXPECT_NEAR(r.best[0].score, std::log(.1536), kTol);
  EXPECT_EQ(r.steps, 5);
  EXPECT_EQ(model.steps(), 5);
}

// ---------------------------------------------------------------------------------------------------------
// (2) The -1000 rule.
//
// (a) An early end wins. t0: 0 .5, 1 .3, 2 .15, 3 .05 -> [0] (ends, p = ln .5), [1] .3.
//     t1: the ended row (fed 0) would continue with 2 at .97 (.485 without the rule, the best candidate);
//     with the rule both slots go to [1]'s children: [1,0] .18 (ends), [1,1] .06. t2: [1,1,0] .054.
//     Best: [0], ln .5; the second select_rows takes both beams from row 1 ([1]), never the ended row 0.
TEST(BeamSearchTest, EndedBeamIsNotExtendedAndEarlyEndWins) {
  auto script = by_history({{{0}, {.5, .3, .15, .05}},
                            {{0, 0}, {.01, .01, .97, .01}},
                            {{0, 1}, {.6, .2, .15, .05}},
                            {{0, 1, 1}, {.9, .05, .03, .02}}},
                           {.7, .1, .1, .1});
  auto o = beam_options(2, 3);
  o.early_stop = false;
  ScriptedStepModel model(1, 4, script, 2);
  const auto r = beam_search(model, o);
  EXPECT_EQ(r.best[0].ids, (Ids{0}));
  EXPECT_NEAR(r.best[0].score, std::log(.5), kTol);
  ASSERT_EQ(model.select_calls().size(), 2u);
  EXPECT_EQ(model.select_calls()[0], (Ids{0, 0}));
  EXPECT_EQ(model.select_calls()[1], (Ids{1, 1}));
  // No row descends from the beam that ended at t0: the rows fed at t2 are [1,0] (ended at t1) and [1,1].
  EXPECT_EQ(model.histories(), (std::vector<Ids>{{0, 1, 0}, {0, 1, 1}}));
}

// (b) A longer beam with a better sum wins. t0: 0 .3, 1 .6 -> [1] .6, [0] .3 (ends, ln .3).
//     t1: [1]: 0 .1, 1 .8 -> [1,1] .48, [1,0] .06 (ends); the ended row's continuations are 1000 lower.
//     t2 (last): [1,1]: 0 .7, 1 .15, 2 .1, 3 .05 -> [1,1,0] .336, [1,1,1] .072, both recorded.
//     Best: [1,1,0], ln .336 > ln .3.
TEST(BeamSearchTest, LongerBeamWithBetterSumWins) {
  auto script = by_history({{{0}, {.3, .6, .05, .05}},
                            {{0, 0}, {.01, .01, .97, .01}},
                            {{0, 1}, {.1, .8, .05, .05}},
                            {{0, 1, 1}, {.7, .15, .1, .05}}},
                           {.7, .1, .1, .1});
  ScriptedStepModel model(1, 4, script, 2);
  const auto r = beam_search(model, beam_options(2, 3));
  EXPECT_EQ(r.best[0].ids, (Ids{1, 1, 0}));
  EXPECT_NEAR(r.best[0].score, std::log(.6 * .8 * .7), kTol);
  ASSERT_EQ(model.select_calls().size(), 2u);
  EXPECT_EQ(model.select_calls()[0], (Ids{0, 0}));
  EXPECT_EQ(model.select_calls()[1], (Ids{0, 0}));
}

// (c) Where the rule decides the answer: with avg_ the continuation [0,0] of the ended beam [0] would score
//     ln(.5 * .99) / 2 = -0.35 > ln(.5) / 1 = -0.69 if the ended beam kept its sum. With the rule it is 1000
//     lower, so [0] (ln .5) stays the best; [1,0] scores ln(.15) / 2 and [1,1] ln(.09) / 2.
TEST(BeamSearchTest, EndedBeamContinuationCannotWinWithLengthPenalty) {
  auto script = by_history({{{0}, {.5, .3, .1, .1}},
                            {{0, 0}, {.99, .01 / 3, .01 / 3, .01 / 3}},
                            {{0, 1}, {.5, .3, .1, .1}}},
                           {.7, .1, .1, .1});
  auto o = beam_options(2, 2);
  o.length_penalty = "avg_1";
  ScriptedStepModel model(1, 4, script, 2);
  const auto r = beam_search(model, o);
  EXPECT_EQ(r.best[0].ids, (Ids{0}));
  EXPECT_NEAR(r.best[0].score, std::log(.5), kTol);
}

// ---------------------------------------------------------------------------------------------------------
// (3) max_length without eos. Table by last token (eos never makes the top 3):
//   bos: 0 .02, 1 .6, 2 .3, 3 .08   1: 0 .05, 1 .1, 2 .7, 3 .15   2: 0 .05, 1 .5, 2 .1, 3 .35
//   3: 0 .1, 1 .35, 2 .3, 3 .25
//   t0: [1] .6, [2] .3, [3] .08.  t1: [1,2] .42, [2,1] .15, [2,3] .105 ([1,3] .09 next).
//   t2 (last): [1,2,1] .21, [1,2,3] .147, [2,1,2] .105 -> all recorded, best [1,2,1], ln .21.
Scores no_eos_case() {
  return by_last({{0, {.02, .6, .3, .08}},
                  {1, {.05, .1, .7, .15}},
                  {2, {.05, .5, .1, .35}},
                  {3, {.1, .35, .3, .25}}});
}

TEST(BeamSearchTest, MaxLengthWithoutEosRecordsAllBeams) {
  ScriptedStepModel model(1, 4, no_eos_case(), 3);
  const auto r = beam_search(model, beam_options(3, 3));
  EXPECT_EQ(r.best[0].ids, (Ids{1, 2, 1}));  // no trailing 0
  EXPECT_NEAR(r.best[0].score, std::log(.21), kTol);
  ASSERT_EQ(r.best[0].token_log_probs.size(), 3u);
  EXPECT_NEAR(r.best[0].token_log_probs[0], std::log(.6), kTol);
  EXPECT_NEAR(r.best[0].token_log_probs[1], std::log(.7), kTol);
  EXPECT_NEAR(r.best[0].token_log_probs[2], std::log(.5), kTol);
  EXPECT_EQ(r.steps, 3);
  ASSERT_EQ(model.select_calls().size(), 2u);
  EXPECT_EQ(model.select_calls()[1], (Ids{0, 1, 1}));  // [1,2] <- [1], [2,1] and [2,3] <- [2]

  // max_length 1: the first step's beams are all recorded; the best is [1].
  ScriptedStepModel one(1, 4, no_eos_case(), 3);
  const auto r1 = beam_search(one, beam_options(3, 1));
  EXPECT_EQ(r1.best[0].ids, (Ids{1}));
  EXPECT_NEAR(r1.best[0].score, std::log(.6), kTol);
  EXPECT_EQ(r1.steps, 1);
  EXPECT_TRUE(one.select_calls().empty());
}

// Temperature divides the log-probs from the second step on (log_softmax(x / T)); the first step's are used
// as given. With T = 2 the winner stays [1,2,1] (t1: [1,2], [1,3], [2,1]; t2: [1,2,1] first), its tokens now
// having log-probs ln .6, ln(sqrt .7 / sum sqrt p(.|1)), ln(sqrt .5 / sum sqrt p(.|2)).
TEST(BeamSearchTest, TemperatureAppliesFromTheSecondStep) {
  auto o = beam_options(3, 3);
  o.temperature = 2.0;
  ScriptedStepModel model(1, 4, no_eos_case(), 3);
  const auto r = beam_search(model, o);
  const double z1 = std::sqrt(.05) + std::sqrt(.1) + std::sqrt(.7) + std::sqrt(.15);
  const double z2 = std::sqrt(.05) + std::sqrt(.5) + std::sqrt(.1) + std::sqrt(.35);
  const double l0 = std::log(.6), l1 = std::log(std::sqrt(.7) / z1), l2 = std::log(std::sqrt(.5) / z2);
  EXPECT_EQ(r.best[0].ids, (Ids{1, 2, 1}));
  ASSERT_EQ(r.best[0].token_log_probs.size(), 3u);
  EXPECT_NEAR(r.best[0].token_log_probs[0], l0, kTol);
  EXPECT_NEAR(r.best[0].token_log_probs[1], l1, kTol);
  EXPECT_NEAR(r.best[0].token_log_probs[2], l2, kTol);
  EXPECT_NEAR(r.best[0].score, l0 + l1 + l2, kTol);
  // At T = 2, [1,3] (.6 * sqrt .15 / z1 = .1317) overtakes [2,1] (.3 * sqrt .1 / z2 ... = .1154) at t1.
  ASSERT_EQ(model.select_calls().size(), 2u);
  EXPECT_EQ(model.select_calls()[1], (Ids{0, 0, 1}));
}

// ---------------------------------------------------------------------------------------------------------
// (4) Early stop changes nothing but the number of steps, on seeded random models with 3 studies.
TEST(BeamSearchTest, EarlyStopMatchesFullRunOnRandomModels) {
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    for (int64_t beam : {2, 3, 5}) {
      SCOPED_TRACE("seed " + std::to_string(seed) + " beam " + std::to_string(beam));
      const auto scores = random_scores(seed, 8);
      auto o = beam_options(beam, 25);
      ScriptedStepModel early_model(3, 8, scores, beam);
      const auto early = beam_search(early_model, o);
      o.early_stop = false;
      ScriptedStepModel full_model(3, 8, scores, beam);
      const auto full = beam_search(full_model, o);
      EXPECT_EQ(full.steps, 25);
      EXPECT_LT(early.steps, full.steps);
      EXPECT_EQ(early_model.steps(), early.steps);
      ASSERT_EQ(early.best.size(), 3u);
      ASSERT_EQ(full.best.size(), 3u);
      for (int s = 0; s < 3; ++s) {
        EXPECT_EQ(early.best[s].ids, full.best[s].ids) << "study " << s;
        EXPECT_EQ(early.best[s].score, full.best[s].score) << "study " << s;
        EXPECT_EQ(early.best[s].token_log_probs, full.best[s].token_log_probs) << "study " << s;
        EXPECT_FALSE(early.best[s].ids.empty());
      }
    }
  }
}

// Studies decoded together equal the same studies decoded one at a time (beam, both stop rules, greedy).
TEST(BeamSearchTest, StudiesInABatchAreIndependent) {
  for (uint64_t seed = 11; seed <= 14; ++seed) {
    for (bool early_stop : {true, false}) {
      SCOPED_TRACE("seed " + std::to_string(seed) + " early_stop " + std::to_string(early_stop));
      const auto scores = random_scores(seed, 7, 0.4);
      auto o = beam_options(3, 20);
      o.early_stop = early_stop;
      ScriptedStepModel batch(3, 7, scores, 3);
      const auto together = beam_search(batch, o);
      ASSERT_EQ(together.best.size(), 3u);
      for (int64_t s = 0; s < 3; ++s) {
        ScriptedStepModel alone(1, 7, only_study(scores, s), 3);
        const auto single = beam_search(alone, o);
        ASSERT_EQ(single.best.size(), 1u);
        EXPECT_EQ(together.best[s].ids, single.best[0].ids) << "study " << s;
        EXPECT_EQ(together.best[s].score, single.best[0].score) << "study " << s;
        EXPECT_EQ(together.best[s].token_log_probs, single.best[0].token_log_probs) << "study " << s;
      }
    }
  }
  // The studies really differ (otherwise the comparison above proves little).
  ScriptedStepModel batch(3, 7, random_scores(11, 7, 0.4), 3);
  const auto r = beam_search(batch, beam_options(3, 20));
  EXPECT_FALSE(r.best[0].ids == r.best[1].ids && r.best[1].ids == r.best[2].ids);
}

TEST(GreedyTest, StudiesInABatchAreIndependent) {
  for (uint64_t seed = 21; seed <= 24; ++seed) {
    for (bool block : {false, true}) {
      SCOPED_TRACE("seed " + std::to_string(seed) + " block " + std::to_string(block));
      const auto scores = random_scores(seed, 6, 0.3);
      auto o = greedy_options(20);
      o.block_trigrams = block;
      ScriptedStepModel batch(3, 6, scores, 1);
      const auto together = sample(batch, o);
      ASSERT_EQ(together.best.size(), 3u);
      int64_t longest = 0;
      for (int64_t s = 0; s < 3; ++s) {
        ScriptedStepModel alone(1, 6, only_study(scores, s), 1);
        const auto single = sample(alone, o);
        EXPECT_EQ(together.best[s].ids, single.best[0].ids) << "study " << s;
        EXPECT_EQ(together.best[s].token_log_probs, single.best[0].token_log_probs) << "study " << s;
        EXPECT_EQ(single.steps, static_cast<int64_t>(single.best[0].ids.size()));
        longest = std::max<int64_t>(longest, static_cast<int64_t>(single.best[0].ids.size()));
      }
      EXPECT_EQ(together.steps, longest);  // stops once every study has ended
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// (5) Length penalties. t0: 0 .05, 1 .5, 2 .4, 3 .05 -> [1] .5, [2] .4.
//   t1: [1]: 0 .8 -> [1,0] .4 (ends, length 2); [2]: 3 .94 -> [2,3] .376.
//   t2: [2,3]: 1 .9, 2 .05 -> [2,3,1] .3384, [2,3,2] .0188.
//   t3: [2,3,1]: 0 .95 -> [2,3,1,0] .32148 (length 4); [2,3,2]: 0 .7 -> [2,3,2,0] .01316.
//   none:   ln .4 = -0.916 vs ln .32148 = -1.135                     -> [1,0]
//   avg_1:  -0.916 / 2 = -0.458 vs -1.135 / 4 = -0.284                -> [2,3,1,0]
//   wu_1:   -0.916 / (7/6) = -0.785 vs -1.135 / (9/6) = -0.757        -> [2,3,1,0]
//   wu_0.5: -0.916 / sqrt(7/6) = -0.848 vs -1.135 / sqrt(9/6) = -0.927 -> [1,0]
Scores penalty_case() {
  return by_history({{{0}, {.05, .5, .4, .05}},
                     {{0, 1}, {.8, .1, .05, .05}},
                     {{0, 2}, {.02, .02, .02, .94}},
                     {{0, 2, 3}, {.02, .9, .05, .03}},
                     {{0, 2, 3, 1}, {.95, .02, .02, .01}}},
                    {.7, .15, .1, .05});
}

TEST(BeamSearchTest, LengthPenaltiesChangeTheWinner) {
  const double short_sum = std::log(.5 * .8), long_sum = std::log(.4 * .94 * .9 * .95);
  struct Case {
    std::string penalty;
    Ids ids;
    double score;
  };
  const std::vector<Case> cases = {
      {"", {1, 0}, short_sum},
      {"avg_1", {2, 3, 1, 0}, long_sum / 4.0},
      {"avg_0.3", {2, 3, 1, 0}, long_sum / 4.0},  // avg ignores alpha
      {"wu_1", {2, 3, 1, 0}, long_sum / (9.0 / 6.0)},
      {"wu_0.5", {1, 0}, short_sum / std::sqrt(7.0 / 6.0)},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("length_penalty '" + c.penalty + "'");
    auto o = beam_options(2, 4);
    o.length_penalty = c.penalty;
    ScriptedStepModel model(1, 4, penalty_case(), 2);
    const auto r = beam_search(model, o);
    EXPECT_EQ(r.best[0].ids, c.ids);
    EXPECT_NEAR(r.best[0].score, c.score, kTol);
  }
}

// ---------------------------------------------------------------------------------------------------------
// (6) Trigram blocking (greedy). By last token: bos -> 1 (.9); 1 -> 2 (.9); 2 -> 1 (.8), 3 (.15);
// 3 -> 0 (.7). Unblocked: 1 2 1 2 ... up to max_length.
// Blocked (penalty 1.386 per count of a seen continuation of the last two tokens):
//   t3: store (1,2)->1; (2,1) unseen -> 2.     t4: store (2,1)->2; (1,2)->{1}: 1 at ln .8 - 1.386 = -1.609
//   still beats 3 at ln .15 = -1.897 -> 1.     t5: store (1,2)->1 (twice now); (2,1)->{2}: 2 at -1.491 -> 2.
//   t6: store (2,1)->2; (1,2)->{1,1}: 1 at ln .8 - 2.772 = -2.995 < ln .15 -> 3.   t7: (2,3) unseen -> 0.
Scores repetitive_case() {
  return by_last({{0, {.01, .9, .05, .04}},
                  {1, {.02, .03, .9, .05}},
                  {2, {.03, .8, .02, .15}},
                  {3, {.7, .1, .1, .1}}});
}

TEST(GreedyTest, TrigramBlockingBreaksRepetition) {
  auto o = greedy_options(10);
  ScriptedStepModel plain(1, 4, repetitive_case(), 1);
  const auto r = sample(plain, o);
  EXPECT_EQ(r.best[0].ids, (Ids{1, 2, 1, 2, 1, 2, 1, 2, 1, 2}));
  EXPECT_EQ(r.steps, 10);
  EXPECT_NEAR(r.best[0].score, 6 * std::log(.9) + 4 * std::log(.8), kTol);

  o.block_trigrams = true;
  ScriptedStepModel blocked(1, 4, repetitive_case(), 1);
  const auto b = sample(blocked, o);
  EXPECT_EQ(b.best[0].ids, (Ids{1, 2, 1, 2, 1, 2, 3, 0}));
  EXPECT_EQ(b.steps, 8);
  ASSERT_EQ(b.best[0].token_log_probs.size(), 8u);
  EXPECT_NEAR(b.best[0].score, sum_of(b.best[0].token_log_probs), 1e-4);
  // Tokens chosen without a penalty keep the model's log-prob.
  EXPECT_NEAR(b.best[0].token_log_probs[3], std::log(.9), kTol);
  EXPECT_NEAR(b.best[0].token_log_probs[6], std::log(.15), kTol);
  EXPECT_NEAR(b.best[0].token_log_probs[7], std::log(.7), kTol);
}

// Blocking is per study: two studies with the same repetitive history each get their own trigram counts
// (shared counts would penalise 1 twice already at t4 and end both with 1 2 1 2 3 0).
TEST(GreedyTest, TrigramBlockingIsPerStudy) {
  auto o = greedy_options(10);
  o.block_trigrams = true;
  ScriptedStepModel model(2, 4, repetitive_case(), 1);
  const auto r = sample(model, o);
  ASSERT_EQ(r.best.size(), 2u);
  EXPECT_EQ(r.best[0].ids, (Ids{1, 2, 1, 2, 1, 2, 3, 0}));
  EXPECT_EQ(r.best[1].ids, (Ids{1, 2, 1, 2, 1, 2, 3, 0}));
}

// A finished row keeps producing (and being fed) the pad 0; its hypothesis stops at the eos.
TEST(GreedyTest, FinishedRowsArePadded) {
  // Study 0: bos -> 3 -> 0. After the eos its table (last token 0) would say 3 again: it must be fed 0.
  // Study 1: 1 2 1 2 ... to max_length.
  auto scores = [](int64_t study, const Ids& h) {
    if (study == 1) return repetitive_case()(0, h);
    static const std::map<int64_t, std::vector<double>> t = {
        {0, {.1, .1, .1, .7}}, {1, {.7, .1, .1, .1}}, {2, {.7, .1, .1, .1}}, {3, {.8, .1, .05, .05}}};
    return logs(t.at(h.back()));
  };
  ScriptedStepModel model(2, 4, scores, 1);
  const auto r = sample(model, greedy_options(5));
  EXPECT_EQ(r.best[0].ids, (Ids{3, 0}));
  EXPECT_NEAR(r.best[0].score, std::log(.7 * .8), kTol);
  EXPECT_EQ(r.best[1].ids, (Ids{1, 2, 1, 2, 1}));  // max_length: no eos
  EXPECT_EQ(r.steps, 5);
  const auto h = model.histories();
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[0], (Ids{0, 3, 0, 0, 0}));  // bos, 3, eos, then pads
  EXPECT_EQ(h[1], (Ids{0, 1, 2, 1, 2}));
  EXPECT_TRUE(model.select_calls().empty());
}

// ---------------------------------------------------------------------------------------------------------
// (7) Sampling.
TEST(SamplingTest, SameSeedSameOutputAndSeedMatters) {
  const auto scores = random_scores(31, 8, 0.2);
  DecodingOptions o;
  o.method = DecodingMethod::kSample;
  o.beam_size = 1;
  o.max_length = 20;
  o.seed = 7;
  ScriptedStepModel m1(3, 8, scores, 1), m2(3, 8, scores, 1);
  const auto a = sample(m1, o), b = sample(m2, o);
  for (int s = 0; s < 3; ++s) {
    EXPECT_EQ(a.best[s].ids, b.best[s].ids);
    EXPECT_EQ(a.best[s].token_log_probs, b.best[s].token_log_probs);
    EXPECT_EQ(a.best[s].score, b.best[s].score);
  }
  ScriptedStepModel mg(3, 8, scores, 1);
  const auto g = sample(mg, greedy_options(20));
  bool seed_matters = false, differs_from_greedy = false;
  for (uint64_t seed = 100; seed < 110; ++seed) {
    o.seed = seed;
    ScriptedStepModel m(3, 8, scores, 1);
    const auto c = sample(m, o);
    for (int s = 0; s < 3; ++s) {
      seed_matters = seed_matters || c.best[s].ids != a.best[s].ids;
      differs_from_greedy = differs_from_greedy || c.best[s].ids != g.best[s].ids;
    }
  }
  EXPECT_TRUE(seed_matters);
  EXPECT_TRUE(differs_from_greedy);
}

TEST(SamplingTest, TinyTemperatureEqualsGreedy) {
  for (uint64_t seed = 41; seed <= 45; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    const auto scores = random_scores(seed, 8, 0.3);
    ScriptedStepModel mg(3, 8, scores, 1);
    const auto g = sample(mg, greedy_options(20));
    DecodingOptions o;
    o.method = DecodingMethod::kSample;
    o.beam_size = 1;
    o.max_length = 20;
    o.temperature = 1e-4;
    o.seed = seed;
    ScriptedStepModel ms(3, 8, scores, 1);
    const auto s = sample(ms, o);
    for (int k = 0; k < 3; ++k) EXPECT_EQ(s.best[k].ids, g.best[k].ids) << "study " << k;
  }
}

// One-step samples follow softmax(log p / T): p = (.1, .2, .3, .4) at T = 1, and p^(1/2) normalised at T = 2.
TEST(SamplingTest, FrequenciesFollowTheTemperedDistribution) {
  const std::vector<double> p = {.1, .2, .3, .4};
  auto scores = [&](int64_t, const Ids&) { return logs(p); };
  for (double temperature : {1.0, 2.0}) {
    SCOPED_TRACE("temperature " + std::to_string(temperature));
    std::vector<double> expected;
    for (double x : p) expected.push_back(std::pow(x, 1.0 / temperature));
    const double z = std::accumulate(expected.begin(), expected.end(), 0.0);
    for (double& x : expected) x /= z;
    std::vector<int> counts(4, 0);
    const int n = 4000;
    for (int seed = 0; seed < n; ++seed) {
      DecodingOptions o;
      o.method = DecodingMethod::kSample;
      o.beam_size = 1;
      o.max_length = 1;
      o.temperature = temperature;
      o.seed = static_cast<uint64_t>(seed);
      ScriptedStepModel m(1, 4, scores, 1);
      const auto r = sample(m, o);
      ASSERT_EQ(r.best[0].ids.size(), 1u);
      ++counts.at(r.best[0].ids[0]);
    }
    for (int v = 0; v < 4; ++v) EXPECT_NEAR(counts[v] / static_cast<double>(n), expected[v], 0.03) << "token " << v;
  }
}

// ---------------------------------------------------------------------------------------------------------
// (8) Without a length penalty the beam's score is the sum of its tokens' log-probs.
TEST(BeamSearchTest, TokenLogProbsSumToScore) {
  for (uint64_t seed = 51; seed <= 55; ++seed) {
    for (double temperature : {1.0, 1.5}) {
      SCOPED_TRACE("seed " + std::to_string(seed));
      auto o = beam_options(3, 15);
      o.temperature = temperature;
      ScriptedStepModel m(3, 9, random_scores(seed, 9), 3);
      const auto r = beam_search(m, o);
      for (int s = 0; s < 3; ++s) {
        EXPECT_EQ(r.best[s].token_log_probs.size(), r.best[s].ids.size());
        EXPECT_NEAR(sum_of(r.best[s].token_log_probs), r.best[s].score, 1e-4) << "study " << s;
        for (size_t i = 0; i + 1 < r.best[s].ids.size(); ++i) EXPECT_NE(r.best[s].ids[i], 0) << "eos inside";
      }
    }
  }
  ScriptedStepModel m(1, 5, worked_case(), 3);
  const auto r = beam_search(m, beam_options(3, 5));
  EXPECT_NEAR(sum_of(r.best[0].token_log_probs), r.best[0].score, 1e-5);
}

// decode(): beam search for beam_size > 1 with beam_search or greedy (as the reference), else _sample.
TEST(DecodingTest, DecodeDispatches) {
  {
    auto o = beam_options(3, 5);
    o.method = DecodingMethod::kGreedy;  // beam_size 3 + greedy is still beam search in the reference
    ScriptedStepModel m(1, 5, worked_case(), 3);
    EXPECT_EQ(decode(m, o).best[0].ids, (Ids{3, 4, 0}));
  }
  {
    auto o = beam_options(3, 5);
    ScriptedStepModel m(1, 5, worked_case(), 3);
    EXPECT_EQ(decode(m, o).best[0].ids, (Ids{3, 4, 0}));
  }
  {
    ScriptedStepModel m(1, 5, worked_case(), 1);
    EXPECT_EQ(decode(m, greedy_options(5)).best[0].ids, (Ids{1, 1, 0}));
  }
  {
    // sample with beam_size 3 samples (one row per study, no select_rows): tiny temperature -> greedy path.
    DecodingOptions o;
    o.method = DecodingMethod::kSample;
    o.beam_size = 3;
    o.max_length = 5;
    o.temperature = 1e-4;
    ScriptedStepModel m(1, 5, worked_case(), 1);
    EXPECT_EQ(decode(m, o).best[0].ids, (Ids{1, 1, 0}));
    EXPECT_TRUE(m.select_calls().empty());
  }
}

// ---------------------------------------------------------------------------------------------------------
// (9) Invalid options name the field, from validate_decoding_options and from each entry point.
TEST(DecodingTest, InvalidOptionsNameTheField) {
  struct Case {
    std::function<void(DecodingOptions&)> edit;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](DecodingOptions& o) { o.beam_size = 0; }, "beam_size"},
      {[](DecodingOptions& o) { o.beam_size = -2; }, "beam_size"},
      {[](DecodingOptions& o) { o.length_penalty = "foo"; }, "length_penalty"},
      {[](DecodingOptions& o) { o.length_penalty = "wu_x"; }, "length_penalty"},
      {[](DecodingOptions& o) { o.length_penalty = "len_1"; }, "length_penalty"},
      {[](DecodingOptions& o) { o.temperature = 0.0; }, "temperature"},
      {[](DecodingOptions& o) { o.temperature = -1.0; }, "temperature"},
      {[](DecodingOptions& o) { o.max_length = 0; }, "max_length"},
  };
  for (const auto& c : cases) {
    DecodingOptions o = beam_options(3, 5);
    c.edit(o);
    SCOPED_TRACE(c.field);
    EXPECT_NE(error_of([&] { validate_decoding_options(o); }).find(c.field), std::string::npos);
    ScriptedStepModel m1(1, 5, worked_case(), 3);
    EXPECT_NE(error_of([&] { beam_search(m1, o); }).find(c.field), std::string::npos);
    ScriptedStepModel m2(1, 5, worked_case(), 1);
    EXPECT_NE(error_of([&] { sample(m2, o); }).find(c.field), std::string::npos);
    ScriptedStepModel m3(1, 5, worked_case(), 3);
    EXPECT_NE(error_of([&] { decode(m3, o); }).find(c.field), std::string::npos);
    EXPECT_EQ(m1.steps() + m2.steps() + m3.steps(), 0) << "validated before decoding";
  }
  EXPECT_NO_THROW(validate_decoding_options(DecodingOptions{}));
  // A beam wider than the vocabulary cannot be filled.
  ScriptedStepModel m(1, 5, worked_case(), 6);
  EXPECT_NE(error_of([&] { beam_search(m, beam_options(6, 5)); }).find("beam_size"), std::string::npos);
}

// utils.penalty_builder's names, read without LibTorch (decoding_options.cc): the server checks requests with it.
TEST(DecodingTest, LengthPenaltyNamesParseAsThePenaltyBuilderReadsThem) {
  EXPECT_EQ(parse_length_penalty("")->kind, LengthPenalty::Kind::kNone);
  EXPECT_EQ(parse_length_penalty("wu_0.5")->kind, LengthPenalty::Kind::kWu);
  EXPECT_DOUBLE_EQ(parse_length_penalty("wu_0.5")->alpha, 0.5);
  EXPECT_EQ(parse_length_penalty("avg_2")->kind, LengthPenalty::Kind::kAvg);
  EXPECT_DOUBLE_EQ(parse_length_penalty("avg_2")->alpha, 2.0);
  EXPECT_EQ(length_penalty_problem("wu_0.5"), "");
  // std::stod threw on these (out of range, no digits); they stay refused with the same words.
  for (const char* spec : {"wu_1e999", "wu_", "avg_x"}) {
    SCOPED_TRACE(spec);
    EXPECT_FALSE(parse_length_penalty(spec).has_value());
    EXPECT_NE(length_penalty_problem(spec).find("alpha is not a number"), std::string::npos);
  }
  for (const char* spec : {"len_1", "wu", "foo"}) {
    SCOPED_TRACE(spec);
    EXPECT_FALSE(parse_length_penalty(spec).has_value());
    EXPECT_NE(length_penalty_problem(spec).find("is not '', 'wu_<alpha>' or 'avg_<alpha>'"), std::string::npos);
  }
  EXPECT_EQ(decoding_options_problem(DecodingOptions{}), "");
}

TEST(DecodingMethodTest, TheReferenceNamesRoundTripAndOthersAreRefused) {
  for (auto m : {DecodingMethod::kBeamSearch, DecodingMethod::kGreedy, DecodingMethod::kSample}) {
    EXPECT_EQ(parse_decoding_method(method_name(m)), m) << method_name(m);
  }
  EXPECT_STREQ(method_name(DecodingMethod::kBeamSearch), "beam_search");
  EXPECT_FALSE(parse_decoding_method("nope").has_value());
  EXPECT_FALSE(parse_decoding_method("Greedy").has_value());  // R2GenCMN's names are lower case
  ModelConfig config;
  config.sample_method = "nope";
  EXPECT_NE(error_of([&] { decoding_options_from(config); }).find("sample_method 'nope'"), std::string::npos);
}

}  // namespace
}  // namespace cmn::model
