// Clinical efficacy on the 14 CheXpert observations (cmn/metrics/chexpert_ce.h) on a table worked out by hand;
// equality with sklearn (R2GenCMN's compute_ce.py) is checked end to end in metrics/cli/label_cli_test.cc.
#include "cmn/metrics/chexpert_ce.h"

#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <vector>

namespace cmn::metrics {
namespace {

constexpr auto kCard = static_cast<std::size_t>(Observation::kCardiomegaly);
constexpr auto kEdema = static_cast<std::size_t>(Observation::kEdema);

std::vector<ChexpertLabels> blank_table(std::size_t rows) {
  std::vector<ChexpertLabels> t(rows);
  for (auto& r : t) r.fill(Mention::kBlank);
  return t;
}

struct Tables {
  std::vector<ChexpertLabels> gts = blank_table(4), res = blank_table(4);
  Tables() {
    const Mention P = Mention::kPositive, N = Mention::kNegative, U = Mention::kUncertain, B = Mention::kBlank;
    const Mention gc[] = {P, P, N, B}, ge[] = {U, P, B, B}, rc[] = {P, B, P, B}, re[] = {P, U, B, B};
    for (std::size_t i = 0; i < 4; ++i) {
      gts[i][kCard] = gc[i];
      gts[i][kEdema] = ge[i];
      res[i][kCard] = rc[i];
      res[i][kEdema] = re[i];
    }
  }
};

TEST(ChexpertCe, UZerosAsComputeCeByHand) {
  const Tables t;
  const ChexpertCe ce = chexpert_ce(t.gts, t.res, UncertainPolicy::kZeros);
  // Cardiomegaly: gt 1 1 0 0, pred 1 0 1 0 -> tp fp fn tn = 1 1 1 1
  EXPECT_DOUBLE_EQ(ce.precision[kCard], 0.5);
  EXPECT_DOUBLE_EQ(ce.f1[kCard], 0.5);
  EXPECT_DOUBLE_EQ(ce.auroc[kCard], 0.5);
  // Edema: gt 0 1 0 0 (uncertain -> 0), pred 1 0 0 0 -> tp 0, fp 1, fn 1, tn 2; AUROC (0 + (0 + 2)/2) / 3
  EXPECT_DOUBLE_EQ(ce.f1[kEdema], 0.0);
  EXPECT_NEAR(ce.auroc[kEdema], 1.0 / 3.0, 1e-15);
  EXPECT_NEAR(ce.f1_macro, 0.5 / 14, 1e-15);
  EXPECT_NEAR(ce.precision_macro, 0.5 / 14, 1e-15);
  EXPECT_NEAR(ce.f1_micro, 1.0 / 3.0, 1e-15);  // tp 1, fp 2, fn 2
  EXPECT_NEAR(ce.recall_micro, 1.0 / 3.0, 1e-15);
  // No Finding (all blank) has one class in the references: AUROC undefined, and with it the average.
  EXPECT_TRUE(std::isnan(ce.auroc[0]));
  EXPECT_TRUE(std::isnan(ce.avg_auroc));
  const auto named = ce.named();
  ASSERT_EQ(named.size(), 7u + 14u);
  EXPECT_EQ(named[0].first, "F1_MACRO");
  EXPECT_EQ(named[6].first, "AVG_AUCROC");
  EXPECT_EQ(named[7 + kCard].first, "AUCROC_Cardiomegaly");
}

TEST(ChexpertCe, UOnesCountsUncertainAsPositive) {
  const Tables t;
  const ChexpertCe ce = chexpert_ce(t.gts, t.res, UncertainPolicy::kOnes);
  EXPECT_DOUBLE_EQ(ce.f1[kEdema], 1.0);  // gt 1 1 0 0, pred 1 1 0 0
  EXPECT_DOUBLE_EQ(ce.auroc[kEdema], 1.0);
  EXPECT_NEAR(ce.f1_macro, 1.5 / 14, 1e-15);
  EXPECT_NEAR(ce.f1_micro, 0.75, 1e-15);  // tp 3, fp 1, fn 1
  EXPECT_STREQ(uncertain_policy_name(ce.policy), "ones");
}

TEST(ChexpertCe, ReportsAreLabelledAndMismatchedLengthsRejected) {
  const ChexpertCe ce = chexpert_ce(std::vector<std::string>{"Cardiomegaly.", "No effusion."},
                                    std::vector<std::string>{"Cardiomegaly.", "Small effusion."});
  EXPECT_EQ(ce.tp[kCard], 1);
  EXPECT_EQ(ce.fp[static_cast<std::size_t>(Observation::kPleuralEffusion)], 1);
  EXPECT_THROW(chexpert_ce(blank_table(2), blank_table(3)), std::invalid_argument);
  EXPECT_THROW(parse_uncertain_policy("maybe"), std::invalid_argument);
}

}  // namespace
}  // namespace cmn::metrics
