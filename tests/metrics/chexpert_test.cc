// The CheXpert-style labeler (cmn/metrics/chexpert.h) and its CSV shapes (chexpert_csv.h): the CheXpert
// labeler's own example reproduced byte for byte, then the rules one by one on hand-written sentences.
#include "cmn/metrics/chexpert.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cmn/metrics/chexpert_csv.h"
#include "cmn/metrics/observations.h"

namespace cmn::metrics {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const std::string kLabels = std::string(CMN_SHARED_DIR) + "/data/labels/";

Mention label_of(const std::string& report, Observation o) {
  return chexpert_label(report)[static_cast<std::size_t>(o)];
}

// stanfordmlgroup/chexpert-labeler's sample_reports.csv -> labeled_reports.csv, as that labeler wrote it:
// same CSV quoting (a report with a line break or a comma is quoted), same cells, same bytes.
TEST(ChexpertLabeler, ReproducesTheLabelersOwnExampleByteForByte) {
  const auto reports = read_reports_csv(slurp(kLabels + "chexpert_labeler_sample_reports.csv"));
  ASSERT_EQ(reports.size(), 4u);
  EXPECT_NE(reports[1].find("present.\n\n2. Cardiomegaly"), std::string::npos);  // a quoted multi-line report
  std::vector<ChexpertLabels> labels;
  for (const auto& r : reports) labels.push_back(chexpert_label(r));
  EXPECT_EQ(write_labeled_csv(reports, labels), slurp(kLabels + "chexpert_labeler_labeled_reports.csv"));
}

struct Case {
  const char* text;
  Observation observation;
  Mention expected;
};

void expect_cases(const std::vector<Case>& cases) {
  for (const auto& c : cases) {
    EXPECT_EQ(static_cast<int>(label_of(c.text, c.observation)), static_cast<int>(c.expected))
        << "'" << c.text << "' / " << observation_name(c.observation);
  }
}

TEST(ChexpertLabeler, NegationBeforeAndAfterTheMention) {
  expect_cases({
      {"No pneumothorax.", Observation::kPneumothorax, Mention::kNegative},
      // a negation reaches every member of a list
      {"No focal consolidation, pleural effusion, or pneumothorax.", Observation::kPleuralEffusion,
       Mention::kNegative},
      {"There is no evidence of pneumothorax or large pleural effusion.", Observation::kPleuralEffusion,
       Mention::kNegative},
      {"The lungs are clear without focal airspace disease.", Observation::kLungOpacity, Mention::kNegative},
      {"Negative for pneumothorax.", Observation::kPneumothorax, Mention::kNegative},
      {"The lungs are free of consolidation.", Observation::kConsolidation, Mention::kNegative},
      // "normal" before or after, over one verb and a list of subjects
      {"Normal heart size.", Observation::kCardiomegaly, Mention::kNegative},
      {"Heart size and mediastinal contours are within normal limits.", Observation::kCardiomegaly,
       Mention::kNegative},
      {"Heart size and mediastinal contours are within normal limits.", Observation::kEnlargedCardiomediastinum,
       Mention::kNegative},
      {"The heart is not enlarged.", Observation::kCardiomegaly, Mention::kNegative},
      {"The heart is not significantly enlarged.", Observation::kCardiomegaly, Mention::kNegative},
      {"The previously seen left effusion has resolved.", Observation::kPleuralEffusion, Mention::kNegative},
      {"Impression: no pneumothorax, the heart size is large.", Observation::kCardiomegaly, Mention::kNegative},
  });
}

TEST(ChexpertLabeler, UncertaintyCues) {
  expect_cases({
      // pre-negation uncertainty wins over the negation word it holds
      {"Small effusion cannot be excluded.", Observation::kPleuralEffusion, Mention::kUncertain},
      {"Cannot rule out pneumonia.", Observation::kPneumonia, Mention::kUncertain},
      {"No new consolidation.", Observation::kConsolidation, Mention::kUncertain},
      // post-negation uncertainty: before, after, and "or" lists
      {"Possible right lower lobe pneumonia.", Observation::kPneumonia, Mention::kUncertain},
      {"Opacity may reflect atelectasis.", Observation::kAtelectasis, Mention::kUncertain},
      {"Opacity may reflect atelectasis.", Observation::kLungOpacity, Mention::kPositive},
      {"Left base atelectasis or consolidation.", Observation::kAtelectasis, Mention::kUncertain},
      {"Left base scarring/atelectasis.", Observation::kAtelectasis, Mention::kUncertain},  // "/" reads "or"
      {"Pneumothorax is suspected.", Observation::kPneumothorax, Mention::kUncertain},
      // the labeler's special rules: stable heart size, borderline heart size, vascular congestion
      {"Stable cardiomediastinal silhouette.", Observation::kEnlargedCardiomediastinum, Mention::kUncertain},
      {"Heart size is unchanged.", Observation::kCardiomegaly, Mention::kUncertain},
      {"Borderline heart size.", Observation::kCardiomegaly, Mention::kUncertain},
      {"Stable mild cardiomegaly.", Observation::kCardiomegaly, Mention::kPositive},
      {"Mild pulmonary vascular congestion.", Observation::kEdema, Mention::kUncertain},
  });
}

TEST(ChexpertLabeler, ScopeEndsAtTheClauseAndTheVerb) {
  expect_cases({
      {"No pneumothorax; there is a right pleural effusion.", Observation::kPleuralEffusion, Mention::kPositive},
      {"No effusion, but there is a left pneumothorax.", Observation::kPneumothorax, Mention::kPositive},
      {"No effusion is seen and the heart is enlarged.", Observation::kCardiomegaly, Mention::kPositive},
      {"Cardiomegaly without overt edema.", Observation::kCardiomegaly, Mention::kPositive},
      {"Cardiomegaly without overt edema.", Observation::kEdema, Mention::kNegative},
      {"Normal heart size with a small left pleural effusion.", Observation::kPleuralEffusion, Mention::kPositive},
      {"Cardiomegaly and normal pulmonary vascularity.", Observation::kCardiomegaly, Mention::kPositive},
      {"The heart size is enlarged and the mediastinum is normal.", Observation::kCardiomegaly,
       Mention::kPositive},
      // "clear" negates its own subject, also a list of them, but not across a second clause
      {"Heart size, mediastinal silhouette, pulmonary vascularity are within normal limits.",
       Observation::kCardiomegaly, Mention::kNegative},
      {"The cardiomediastinal silhouette is clear.", Observation::kEnlargedCardiomediastinum, Mention::kNegative},
      {"Mild cardiomegaly, lungs are clear.", Observation::kCardiomegaly, Mention::kPositive},
      // a sentence boundary always ends the scope
      {"No pneumothorax. Small left pleural effusion.", Observation::kPleuralEffusion, Mention::kPositive},
  });
}

TEST(ChexpertLabeler, MentionsAndUnmentions) {
  expect_cases({
      {"Calcified nodule in the left upper lobe.", Observation::kLungLesion, Mention::kBlank},  // unmention
      {"Massive cardiomegaly.", Observation::kLungLesion, Mention::kBlank},
      {"Right upper lobe nodule.", Observation::kLungLesion, Mention::kPositive},
      {"Small pericardial effusion.", Observation::kPleuralEffusion, Mention::kBlank},
      {"Density projecting over the heart.", Observation::kCardiomegaly, Mention::kBlank},  // positional unmention
      {"Bibasilar opacities.", Observation::kLungOpacity, Mention::kPositive},  // "opaci" inside a word
      {"Right IJ catheter tip in the SVC.", Observation::kSupportDevices, Mention::kPositive},
      {"Healed left rib fracture.", Observation::kFracture, Mention::kPositive},
      {"Pleural thickening at the left apex.", Observation::kPleuralOther, Mention::kPositive},
  });
}

TEST(ChexpertLabeler, NoFindingRule) {
  // 1 when nothing but Support Devices is positive or uncertain; blank otherwise, never 0.
  EXPECT_EQ(label_of("Heart size normal. No effusion.", Observation::kNoFinding), Mention::kPositive);
  EXPECT_EQ(label_of("The lungs are clear.", Observation::kNoFinding), Mention::kPositive);  // nothing mentioned
  EXPECT_EQ(label_of("Right PICC line in place. No pneumothorax.", Observation::kNoFinding), Mention::kPositive);
  EXPECT_EQ(label_of("Small right effusion.", Observation::kNoFinding), Mention::kBlank);
  EXPECT_EQ(label_of("Possible small right effusion.", Observation::kNoFinding), Mention::kBlank);
  // a finding outside the 14 (the labeler's No Finding phrases) also stops it, without a column of its own
  const auto granuloma = chexpert_label("Calcified granuloma in the right upper lobe. No effusion.");
  EXPECT_EQ(granuloma[static_cast<std::size_t>(Observation::kNoFinding)], Mention::kBlank);
  EXPECT_EQ(granuloma[static_cast<std::size_t>(Observation::kPleuralEffusion)], Mention::kNegative);
  EXPECT_EQ(label_of("No emphysema.", Observation::kNoFinding), Mention::kPositive);  // negated: not a finding
}

TEST(ChexpertLabeler, AggregationOverMentions) {
  // 0 and -1 -> -1, even when a 1 is present too (the labeler checks that case first)
  EXPECT_EQ(label_of("No effusion on the right. Possible left effusion.", Observation::kPleuralEffusion),
            Mention::kUncertain);
  EXPECT_EQ(label_of("No effusion on the right. Possible left effusion. Effusion at the base.",
                     Observation::kPleuralEffusion),
            Mention::kUncertain);
  // 0 and 1 -> 1; -1 and 1 -> 1
  EXPECT_EQ(label_of("No right effusion. Large left effusion.", Observation::kPleuralEffusion), Mention::kPositive);
  EXPECT_EQ(label_of("Possible left effusion. Right effusion.", Observation::kPleuralEffusion), Mention::kPositive);
  // a stated "chf" / "heart failure" is Edema and makes Cardiomegaly uncertain
  const auto chf = chexpert_label("Findings consistent with congestive heart failure.");
  EXPECT_EQ(chf[static_cast<std::size_t>(Observation::kEdema)], Mention::kPositive);
  EXPECT_EQ(chf[static_cast<std::size_t>(Observation::kCardiomegaly)], Mention::kUncertain);
  EXPECT_EQ(label_of("No evidence of CHF.", Observation::kCardiomegaly), Mention::kBlank);
}

TEST(ChexpertLabeler, CleaningAndSentences) {
  EXPECT_EQ(chexpert_clean("Heart  size NORMAL.No effusion,pneumothorax and/or\nedema.."),
            "heart size normal. no effusion, pneumothorax or edema.");
  EXPECT_EQ(chexpert_clean("atelectasis/scarring"), "atelectasis or scarring");
  EXPECT_EQ(chexpert_sentences("a b. c d? e"), (std::vector<std::string>{"a b.", "c d?", "e"}));
}

TEST(ChexpertCsv, QuotingRoundTripsAndBadFilesAreNamed) {
  const std::vector<std::string> reports = {"plain", "with, comma", "with \"quote\"", "two\nlines"};
  std::vector<ChexpertLabels> labels(reports.size());
  for (auto& l : labels) l.fill(Mention::kBlank);
  labels[1][2] = Mention::kUncertain;
  const std::string csv = write_labeled_csv(reports, labels);
  EXPECT_NE(csv.find("\n\"with, comma\",,,-1.0,"), std::string::npos) << csv;
  EXPECT_NE(csv.find("\n\"with \"\"quote\"\"\","), std::string::npos) << csv;
  const auto back = read_labeled_csv(csv);
  ASSERT_EQ(back.size(), 4u);
  EXPECT_EQ(back[1][2], Mention::kUncertain);
  EXPECT_EQ(back[0][2], Mention::kBlank);
  const auto rows = parse_csv(csv);
  EXPECT_EQ(rows[4][0], "two\nlines");

  EXPECT_THROW(read_reports_csv("one\nbad,row\n"), std::invalid_argument);
  EXPECT_THROW(parse_csv("\"never closed\n"), std::invalid_argument);
  EXPECT_THROW(read_labeled_csv("Reports,A,B\n"), std::invalid_argument);
  std::string bad_cell = csv;
  bad_cell.replace(bad_cell.find("-1.0"), 4, "0.5");
  EXPECT_THROW(read_labeled_csv(bad_cell), std::invalid_argument);
  // blank lines between reports are skipped, as pandas does
  EXPECT_EQ(read_reports_csv("a\n\nb\n"), (std::vector<std::string>{"a", "b"}));
}

// observations.h (the SR / FHIR outputs) states what the 14-observation labeler finds, in column order.
TEST(StatedObservations, AllFourteenObservationsFromTheLabeler) {
  const auto stated = stated_observations("Possible small effusion. No pneumothorax. Cardiomegaly. Left PICC line.");
  ASSERT_EQ(stated.size(), 4u);
  EXPECT_EQ(stated[0].name, "Cardiomegaly");
  EXPECT_EQ(stated[0].state, StatedObservation::State::kPresent);
  EXPECT_EQ(stated[1].name, "Pneumothorax");
  EXPECT_EQ(stated[1].state, StatedObservation::State::kAbsent);
  EXPECT_EQ(stated[2].name, "Pleural Effusion");
  EXPECT_EQ(stated[2].state, StatedObservation::State::kUncertain);
  EXPECT_EQ(stated[3].name, "Support Devices");
  const auto normal = stated_observations("Heart size is normal. The lungs are clear.");
  ASSERT_EQ(normal.size(), 2u);
  EXPECT_EQ(normal[0].name, "No Finding");
  EXPECT_EQ(normal[0].state, StatedObservation::State::kPresent);
  EXPECT_EQ(normal[1].name, "Cardiomegaly");
  EXPECT_EQ(normal[1].state, StatedObservation::State::kAbsent);
}

}  // namespace
}  // namespace cmn::metrics
