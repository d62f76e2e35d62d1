// Tests for the label extractor and the clinical-efficacy scores of cmn_metrics (cmn/metrics/labels.h):
// mention, negation and uncertainty on hand-written sentences; CE values worked out by hand.
#include "cmn/metrics/labels.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace cmn::metrics {
namespace {

Label label_of(const std::string& report, Finding f) { return extract_labels(report)[static_cast<std::size_t>(f)]; }

struct Case {
  const char* text;
  Finding finding;
  Label expected;
};

TEST(LabelExtractor, MentionNegationUncertainty) {
  const std::vector<Case> cases = {
      // mentions
      {"The heart is enlarged.", Finding::kCardiomegaly, Label::kPositive},
      {"Cardiomegaly.", Finding::kCardiomegaly, Label::kPositive},
      {"Mild enlargement of the cardiac silhouette.", Finding::kCardiomegaly, Label::kPositive},
      {"There is a small right pleural effusion.", Finding::kPleuralEffusion, Label::kPositive},
      {"Blunting of the left costophrenic angle.", Finding::kPleuralEffusion, Label::kPositive},
      {"Left apical pneumothorax.", Finding::kPneumothorax, Label::kPositive},
      {"Right lower lobe airspace opacity.", Finding::kConsolidation, Label::kPositive},
      {"Calcified granuloma in the right upper lobe.", Finding::kCalcifiedGranuloma, Label::kPositive},
      {"Degenerative changes of the thoracic spine.", Finding::kDegenerativeSpine, Label::kPositive},
      {"Thoracic spine osteophytes.", Finding::kDegenerativeSpine, Label::kPositive},
      // negation before, inside and after the mention; negation over a list
      {"No pneumothorax.", Finding::kPneumothorax, Label::kNegative},
      {"No pleural effusion or pneumothorax.", Finding::kPneumothorax, Label::kNegative},
      {"No focal consolidation, pleural effusion, or pneumothorax.", Finding::kPleuralEffusion, Label::kNegative},
      {"The heart is not enlarged.", Finding::kCardiomegaly, Label::kNegative},
      {"Pneumothorax is not seen.", Finding::kPneumothorax, Label::kNegative},
      {"The previously seen effusion has resolved.", Finding::kPleuralEffusion, Label::kNegative},
      {"Negative for pneumonia.", Finding::kConsolidation, Label::kNegative},
      {"Without evidence of effusion.", Finding::kPleuralEffusion, Label::kNegative},
      // absence stated in words
      {"Heart size is normal.", Finding::kCardiomegaly, Label::kNegative},
      {"The cardiomediastinal silhouette is within normal limits.", Finding::kCardiomegaly, Label::kNegative},
      {"The lungs are clear.", Finding::kConsolidation, Label::kNegative},
      {"The costophrenic angles are sharp.", Finding::kPleuralEffusion, Label::kNegative},
      // uncertainty (wins over the negation word in "cannot be excluded")
      {"Small effusion cannot be excluded.", Finding::kPleuralEffusion, Label::kUncertain},
      {"Possible right lower lobe pneumonia.", Finding::kConsolidation, Label::kUncertain},
      {"Borderline cardiomegaly.", Finding::kCardiomegaly, Label::kUncertain},
      // "no change" is not a negation
      {"No change in the large left pleural effusion.", Finding::kPleuralEffusion, Label::kPositive},
      // scope ends at the clause: the negation of one finding does not reach the next clause
      {"No pneumothorax; there is a right pleural effusion.", Finding::kPleuralEffusion, Label::kPositive},
      {"No effusion, but there is a left pneumothorax.", Finding::kPneumothorax, Label::kPositive},
      // not mentioned at all
      {"Heart size is normal.", Finding::kPneumothorax, Label::kNotMentioned},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(label_of(c.text, c.finding), c.expected)
        << "\"" << c.text << "\" " << finding_name(c.finding) << ": got " << label_name(label_of(c.text, c.finding));
  }
}

TEST(LabelExtractor, ReportMergesMentionsPositiveFirst) {
  // One positive sentence beats a general negative one ("lungs are otherwise clear").
  const std::string report = "Right lower lobe consolidation. The lungs are otherwise clear. No pneumothorax.";
  const auto labels = extract_labels(report);
  EXPECT_EQ(labels[static_cast<std::size_t>(Finding::kConsolidation)], Label::kPositive);
  EXPECT_EQ(labels[static_cast<std::size_t>(Finding::kPneumothorax)], Label::kNegative);
  EXPECT_EQ(labels[static_cast<std::size_t>(Finding::kCardiomegaly)], Label::kNotMentioned);
  // Uncertain beats negative.
  EXPECT_EQ(label_of("No effusion on the right. Possible small left effusion.", Finding::kPleuralEffusion),
            Label::kUncertain);
}

TEST(LabelExtractor, SentencesSplitOnPeriodsButNotDecimals) {
  const auto s = split_sentences("A 1.5 cm nodule. No effusion!\nHeart normal");
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0], "a 1.5 cm nodule");
  EXPECT_EQ(s[1], "no effusion");
  EXPECT_EQ(s[2], "heart normal");
}

TEST(ClinicalEfficacy, ValuesWorkedOutByHand) {
  // 4 studies. References: cardiomegaly in 0 and 1, effusion in 2; nothing else anywhere.
  // Hypotheses: cardiomegaly in 0 and 2 (tp 1, fp 1, fn 1), effusion in 2 (tp 1), pneumothorax in 3 (fp 1).
  const std::vector<std::string> ref = {"Cardiomegaly.", "The heart is enlarged. No effusion.",
                                        "Heart size is normal. Right pleural effusion.", "Normal study."};
  const std::vector<std::string> hyp = {"The heart is enlarged.", "Heart size is normal.",
                                        "Cardiomegaly. Small right pleural effusion.", "Left pneumothorax."};
  const ClinicalEfficacy ce = clinical_efficacy(hyp, ref);
  const auto& cardio = ce.per_finding[static_cast<std::size_t>(Finding::kCardiomegaly)];
  EXPECT_EQ(cardio.tp, 1);
  EXPECT_EQ(cardio.fp, 1);
  EXPECT_EQ(cardio.fn, 1);
  EXPECT_EQ(cardio.tn, 1);
  EXPECT_DOUBLE_EQ(cardio.precision, 0.5);
  EXPECT_DOUBLE_EQ(cardio.recall, 0.5);
  EXPECT_DOUBLE_EQ(cardio.f1, 0.5);
  const auto& eff = ce.per_finding[static_cast<std::size_t>(Finding::kPleuralEffusion)];
  EXPECT_DOUBLE_EQ(eff.f1, 1.0);
  const auto& ptx = ce.per_finding[static_cast<std::size_t>(Finding::kPneumothorax)];
  EXPECT_EQ(ptx.fp, 1);
  EXPECT_DOUBLE_EQ(ptx.precision, 0.0);  // zero_division = 0
  EXPECT_DOUBLE_EQ(ptx.f1, 0.0);
  // Macro over the 6 findings: F1 (0.5 + 1 + 0 + 0 + 0 + 0) / 6; P (0.5 + 1) / 6; R (0.5 + 1) / 6.
  EXPECT_DOUBLE_EQ(ce.macro_f1, 1.5 / 6);
  EXPECT_DOUBLE_EQ(ce.macro_precision, 1.5 / 6);
  EXPECT_DOUBLE_EQ(ce.macro_recall, 1.5 / 6);
  // Micro: tp 2, fp 2, fn 1 -> P 0.5, R 2/3, F1 2 * 0.5 * 2/3 / (0.5 + 2/3) = 4/7.
  EXPECT_DOUBLE_EQ(ce.micro_precision, 0.5);
  EXPECT_DOUBLE_EQ(ce.micro_recall, 2.0 / 3.0);
  EXPECT_NEAR(ce.micro_f1, 4.0 / 7.0, 1e-15);
  EXPECT_EQ(ce.examples, 4);
  EXPECT_EQ(ce.named().front().first, "CE_macro_F1");
  EXPECT_THROW(clinical_efficacy(std::vector<std::string>{"a"}, std::vector<std::string>{}), std::invalid_argument);
}

TEST(ClinicalEfficacy, UncertainCountsOnlyWhenAsked) {
  const std::vector<std::string> ref = {"Right pleural effusion."};
  const std::vector<std::string> hyp = {"Possible right pleural effusion."};
  EXPECT_DOUBLE_EQ(clinical_efficacy(hyp, ref).per_finding[1].recall, 0.0);
  EXPECT_DOUBLE_EQ(clinical_efficacy(hyp, ref, /*uncertain_positive=*/true).per_finding[1].recall, 1.0);
}

}  // namespace
}  // namespace cmn::metrics
