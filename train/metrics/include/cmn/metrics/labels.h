#pragma once
// Finding labels from report text and the clinical-efficacy (CE) scores built on them.
//
// The extractor follows the CheXpert labeler's three stages, with hand-written rules instead of its NLP parse:
//   1. mention   — each finding has phrases that name it ("cardiomegaly", "the heart is enlarged",
//                  "blunting of the costophrenic angle") and phrases that state it is absent in so many words
//                  ("heart size is normal", "the lungs are clear", "costophrenic angles are sharp");
//   2. negation  — a cue before the mention in the same clause ("no", "without", "negative for",
//                  "no evidence of", "free of") or after it ("is not seen", "has resolved", "are absent");
//                  a clause ends at ';', ',' followed by but/however, or the words "but" / "however";
//   3. uncertainty — "may", "possible", "cannot be excluded", "questionable", "suggestive of", "concerning for",
//                  "versus", ... in the clause; uncertainty wins over negation ("cannot exclude" is not "no").
// Per report, the labels of all mentions are merged: positive beats uncertain beats negative; a finding never
// mentioned is kNotMentioned. Sentences end at '.', '?', '!' or a newline. Text is lower-cased first.
//
// The findings are the ones cmn-phantom draws (the issue 8 benchmark); the rules were written against the
// phrasings of IU X-Ray findings sections as well as against the phantom's own templates. Clinical efficacy on
// CheXpert's 14 observations (cmn-eval --clinical, the trainer's CE_*) uses chexpert.h / chexpert_ce.h; these
// phantom labels remain for the phantom benchmark (CE_phantom_*) and cmn-phantom's own report checks.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace cmn::metrics {

enum class Finding : int {
  kCardiomegaly = 0,
  kPleuralEffusion,
  kPneumothorax,
  kConsolidation,
  kCalcifiedGranuloma,
  kDegenerativeSpine,
};
constexpr int kNumFindings = 6;
// "cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "calcified_granuloma", "degenerative_spine"
const char* finding_name(Finding finding);
const std::array<Finding, kNumFindings>& all_findings();

enum class Label : int8_t { kNotMentioned = -2, kNegative = 0, kPositive = 1, kUncertain = -1 };
const char* label_name(Label label);  // "not_mentioned", "negative", "positive", "uncertain"

using ReportLabels = std::array<Label, kNumFindings>;  // indexed by Finding

// The labels of one report.
ReportLabels extract_labels(const std::string& report);

// Sentences as the extractor sees them (lower-cased, trimmed, without the final '.'); empty ones dropped.
std::vector<std::string> split_sentences(const std::string& report);

// Binary decision for scoring: positive, or uncertain when `uncertain_positive` (CheXpert's "U-Ones").
bool is_positive(Label label, bool uncertain_positive = false);

// ---- clinical efficacy --------------------------------------------------------------------------------------

struct FindingScore {
  int64_t tp = 0, fp = 0, fn = 0, tn = 0;
  double precision = 0.0;  // tp / (tp + fp); 0 when nothing predicted (sklearn's zero_division=0)
  double recall = 0.0;     // tp / (tp + fn); 0 when the references hold no positive
  double f1 = 0.0;         // 2PR / (P + R); 0 when P + R = 0
};

struct ClinicalEfficacy {
  std::array<FindingScore, kNumFindings> per_finding;
  // Macro: the unweighted mean over the findings of precision, recall and F1 (each as above).
  double macro_precision = 0.0, macro_recall = 0.0, macro_f1 = 0.0;
  // Micro: precision, recall, F1 of the tp/fp/fn summed over the findings.
  double micro_precision = 0.0, micro_recall = 0.0, micro_f1 = 0.0;
  int64_t examples = 0;
  // ("CE_macro_F1", v), ("CE_micro_F1", v), ("CE_macro_P", ..), ..., ("CE_<finding>_F1", v) in a fixed order.
  std::vector<std::pair<std::string, double>> named() const;
};

// Labels each hypothesis and reference with extract_labels and scores the hypotheses' binary decisions
// against the references'. `hypotheses` and `references` must have the same length (else std::invalid_argument).
ClinicalEfficacy clinical_efficacy(const std::vector<std::string>& hypotheses,
                                   const std::vector<std::string>& references, bool uncertain_positive = false);
// The same from labels already extracted.
ClinicalEfficacy clinical_efficacy(const std::vector<ReportLabels>& hypotheses,
                                   const std::vector<ReportLabels>& references, bool uncertain_positive = false);

}  // namespace cmn::metrics
