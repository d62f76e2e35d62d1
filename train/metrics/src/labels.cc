#include "cmn/metrics/labels.h"

#include <algorithm>
#include <cctype>
#include <regex>
#include <stdexcept>

namespace cmn::metrics {
namespace {

// One finding's rules. `mention` names it (the label then follows the cues around it); `absent` states its
// absence in words that no cue list would catch ("heart size is normal").
struct FindingRules {
  std::regex mention;
  std::regex absent;  // may match nothing
};

constexpr auto kFlags = std::regex::ECMAScript | std::regex::optimize;

const std::array<FindingRules, kNumFindings>& rules() {
  // Regexes are compiled once; std::regex is slow to build but fast enough to run on report-sized text.
  static const std::array<FindingRules, kNumFindings> kRules = {{
      // cardiomegaly
      {std::regex(R"(\bcardiomegaly\b|\b(heart|cardiac silhouette|cardiac shadow|heart size|cardiac size|)"
                  R"(cardiomediastinal silhouette)\b[^,;]*?\benlarge(d|ment)?\b|\benlarge(d|ment of)( the)? )"
                  R"((heart|cardiac))",
                  kFlags),
       std::regex(R"(\b(heart|cardiac silhouette|heart size|cardiac size|cardiomediastinal silhouette|)"
                  R"(cardiomediastinal contours?|cardiac contours?)\b[^,;]*?\b(normal|within normal limits|)"
                  R"(unremarkable)\b|\bnormal(-sized| sized)? (heart|cardiac|cardiomediastinal)\b)",
                  kFlags)},
      // pleural effusion
      {std::regex(R"(\b(pleural )?effusions?\b|\bcostophrenic (angle |sulcus )?blunting\b|\bblunting of the )"
                  R"(((right|left|bilateral|posterior) )*costophrenic\b|\bpleural fluid\b)",
                  kFlags),
       std::regex(R"(\bcostophrenic (angles?|sulci|sulcus) (is |are )?(sharp|clear|preserved|well-defined)\b|)"
                  R"(\b(sharp|preserved) costophrenic\b)",
                  kFlags)},
      // pneumothorax
      {std::regex(R"(\bpneumothora(x|ces)\b)", kFlags), std::regex(R"($^)", kFlags)},
      // consolidation
      {std::regex(R"(\bconsolidat(ion|ions|ive|ed)\b|\bair ?space (disease|opacity|opacities|consolidation)\b|)"
                  R"(\bpneumonia\b|\binfiltrates?\b)",
                  kFlags),
       std::regex(R"(\blungs (are |is )?(otherwise )?(clear|well expanded and clear)\b|\bclear lungs\b)", kFlags)},
      // calcified granuloma
      {std::regex(R"(\bgranulomas?\b|\bgranulomata\b|\bgranulomatous\b|\bcalcified (nodules?|nodular densit(y|ies))\b)",
                  kFlags),
       std::regex(R"($^)", kFlags)},
      // degenerative spine
      {std::regex(R"(\bdegenerative (changes?|disease|disc disease)\b[^,;]*?\b(spine|spinal|thoracic|vertebra\w*)\b|)"
                  R"(\b(spine|spinal|vertebra\w*)\b[^,;]*?\bdegenerative\b|\bspondylosis\b|\bosteophytes?\b|)"
                  R"(\bosteophytosis\b|\bdegenerative disc\b)",
                  kFlags),
       std::regex(R"($^)", kFlags)},
  }};
  return kRules;
}

// Uncertainty is checked before negation: "cannot be excluded" holds a negation word but means "maybe".
const std::regex& uncertainty_cue() {
  static const std::regex r(
      R"(\b(may|might|possible|possibly|probable|probably|questionable|cannot be excluded|cannot exclude|)"
      R"(can not be excluded|not excluded|could|suggest|suggests|suggestive|suspicious|concerning for|)"
      R"(concern for|versus|vs|equivocal|likely|uncertain|borderline|differential)\b)",
      kFlags);
  return r;
}

// A negation cue before the mention (or inside it: "the heart is not enlarged").
const std::regex& pre_negation_cue() {
  static const std::regex r(R"(\b(no|not|without|negative for|free of|clear of|nor|neither|rather than|)"
                            R"(resolution of|resolved|absence of|absent)\b)",
                            kFlags);
  return r;
}

// A negation cue after the mention ("effusion is not seen", "pneumothorax has resolved").
const std::regex& post_negation_cue() {
  static const std::regex r(R"(\b(not (seen|identified|present|visualized|evident|appreciated|demonstrated)|)"
                            R"(is absent|are absent|has resolved|have resolved|resolved|no longer)\b)",
                            kFlags);
  return r;
}

// "No change in the effusion" is not a negation (CheXpert's pre-negation exceptions).
const std::regex& negation_exception() {
  static const std::regex r(R"(\bno (significant |interval |appreciable )?(change|increase|decrease)\b)", kFlags);
  return r;
}

// Clause boundaries inside a sentence: the scope of a negation or uncertainty cue ends there.
const std::regex& clause_break() {
  static const std::regex r(R"(;|, (there|and there|although|but|however|which)\b| but | however |)"
                            R"( and there (is|are) | although )",
                            kFlags);
  return r;
}

std::string lower(const std::string& s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  const auto last = s.find_last_not_of(" \t\r\n");
  return s.substr(first, last - first + 1);
}

std::vector<std::string> split_clauses(const std::string& sentence) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (auto it = std::sregex_iterator(sentence.begin(), sentence.end(), clause_break()); it != std::sregex_iterator();
       ++it) {
    out.push_back(sentence.substr(start, static_cast<std::size_t>(it->position()) - start));
    // The break's words that open the next clause ("there is") stay with it; only the separator is dropped.
    start = static_cast<std::size_t>(it->position() + it->length());
  }
  out.push_back(sentence.substr(start));
  return out;
}

// Merge rule: positive > uncertain > negative > not mentioned.
int rank(Label l) {
  switch (l) {
    case Label::kPositive: return 3;
    case Label::kUncertain: return 2;
    case Label::kNegative: return 1;
    default: return 0;
  }
}
void merge(Label& into, Label l) {
  if (rank(l) > rank(into)) into = l;
}

Label label_mention(const std::string& clause, std::size_t pos, std::size_t len) {
  if (std::regex_search(clause, uncertainty_cue())) return Label::kUncertain;
  std::string before = clause.substr(0, pos + len);
  before = std::regex_replace(before, negation_exception(), "");
  if (std::regex_search(before, pre_negation_cue())) return Label::kNegative;
  if (std::regex_search(clause.substr(pos + len), post_negation_cue())) return Label::kNegative;
  return Label::kPositive;
}

}  // namespace

const char* finding_name(Finding f) {
  switch (f) {
    case Finding::kCardiomegaly: return "cardiomegaly";
    case Finding::kPleuralEffusion: return "pleural_effusion";
    case Finding::kPneumothorax: return "pneumothorax";
    case Finding::kConsolidation: return "consolidation";
    case Finding::kCalcifiedGranuloma: return "calcified_granuloma";
    case Finding::kDegenerativeSpine: return "degenerative_spine";
  }
  return "?";
}

const std::array<Finding, kNumFindings>& all_findings() {
  static const std::array<Finding, kNumFindings> kAll = {Finding::kCardiomegaly,       Finding::kPleuralEffusion,
                                                         Finding::kPneumothorax,       Finding::kConsolidation,
                                                         Finding::kCalcifiedGranuloma, Finding::kDegenerativeSpine};
  return kAll;
}

const char* label_name(Label l) {
  switch (l) {
    case Label::kNotMentioned: return "not_mentioned";
    case Label::kNegative: return "negative";
    case Label::kPositive: return "positive";
    case Label::kUncertain: return "uncertain";
  }
  return "?";
}

std::vector<std::string> split_sentences(const std::string& report) {
  std::vector<std::string> out;
  std::string current;
  const std::string text = lower(report);
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    // A '.' between digits is a decimal point ("1.5 cm"), not a sentence end.
    const bool decimal = c == '.' && i > 0 && i + 1 < text.size() && std::isdigit(static_cast<unsigned char>(text[i - 1])) &&
                         std::isdigit(static_cast<unsigned char>(text[i + 1]));
    if ((c == '.' && !decimal) || c == '?' || c == '!' || c == '\n') {
      if (auto t = trim(current); !t.empty()) out.push_back(t);
      current.clear();
    } else {
      current += c;
    }
  }
  if (auto t = trim(current); !t.empty()) out.push_back(t);
  return out;
}

ReportLabels extract_labels(const std::string& report) {
  ReportLabels labels;
  labels.fill(Label::kNotMentioned);
  for (const auto& sentence : split_sentences(report)) {
    for (const auto& clause : split_clauses(sentence)) {
      for (int f = 0; f < kNumFindings; ++f) {
        const FindingRules& r = rules()[static_cast<std::size_t>(f)];
        for (auto it = std::sregex_iterator(clause.begin(), clause.end(), r.mention); it != std::sregex_iterator();
             ++it) {
          merge(labels[static_cast<std::size_t>(f)],
                label_mention(clause, static_cast<std::size_t>(it->position()), static_cast<std::size_t>(it->length())));
        }
        if (std::regex_search(clause, r.absent)) merge(labels[static_cast<std::size_t>(f)], Label::kNegative);
      }
    }
  }
  return labels;
}

bool is_positive(Label label, bool uncertain_positive) {
  return label == Label::kPositive || (uncertain_positive && label == Label::kUncertain);
}

namespace {

double ratio(int64_t num, int64_t den) { return den == 0 ? 0.0 : static_cast<double>(num) / static_cast<double>(den); }
double f1_of(double p, double r) { return p + r == 0.0 ? 0.0 : 2.0 * p * r / (p + r); }

}  // namespace

ClinicalEfficacy clinical_efficacy(const std::vector<ReportLabels>& hyp, const std::vector<ReportLabels>& ref,
                                   bool uncertain_positive) {
  if (hyp.size() != ref.size()) {
    throw std::invalid_argument("clinical_efficacy: " + std::to_string(hyp.size()) + " hypotheses but " +
                                std::to_string(ref.size()) + " references");
  }
  ClinicalEfficacy ce;
  ce.examples = static_cast<int64_t>(hyp.size());
  int64_t tp = 0, fp = 0, fn = 0;
  for (int f = 0; f < kNumFindings; ++f) {
    FindingScore& s = ce.per_finding[static_cast<std::size_t>(f)];
    for (std::size_t i = 0; i < hyp.size(); ++i) {
      const bool h = is_positive(hyp[i][static_cast<std::size_t>(f)], uncertain_positive);
      const bool r = is_positive(ref[i][static_cast<std::size_t>(f)], uncertain_positive);
      s.tp += h && r;
      s.fp += h && !r;
      s.fn += !h && r;
      s.tn += !h && !r;
    }
    s.precision = ratio(s.tp, s.tp + s.fp);
    s.recall = ratio(s.tp, s.tp + s.fn);
    s.f1 = f1_of(s.precision, s.recall);
    ce.macro_precision += s.precision / kNumFindings;
    ce.macro_recall += s.recall / kNumFindings;
    ce.macro_f1 += s.f1 / kNumFindings;
    tp += s.tp;
    fp += s.fp;
    fn += s.fn;
  }
  ce.micro_precision = ratio(tp, tp + fp);
  ce.micro_recall = ratio(tp, tp + fn);
  ce.micro_f1 = f1_of(ce.micro_precision, ce.micro_recall);
  return ce;
}

ClinicalEfficacy clinical_efficacy(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references,
                                   bool uncertain_positive) {
  if (hypotheses.size() != references.size()) {
    throw std::invalid_argument("clinical_efficacy: " + std::to_string(hypotheses.size()) + " hypotheses but " +
                                std::to_string(references.size()) + " references");
  }
  std::vector<ReportLabels> h, r;
  h.reserve(hypotheses.size());
  r.reserve(references.size());
  for (const auto& s : hypotheses) h.push_back(extract_labels(s));
  for (const auto& s : references) r.push_back(extract_labels(s));
  return clinical_efficacy(h, r, uncertain_positive);
}

std::vector<std::pair<std::string, double>> ClinicalEfficacy::named() const {
  std::vector<std::pair<std::string, double>> out = {
      {"CE_macro_F1", macro_f1},        {"CE_micro_F1", micro_f1},          {"CE_macro_P", macro_precision},
      {"CE_macro_R", macro_recall},     {"CE_micro_P", micro_precision},    {"CE_micro_R", micro_recall}};
  for (int f = 0; f < kNumFindings; ++f) {
    out.emplace_back(std::string("CE_") + finding_name(static_cast<Finding>(f)) + "_F1",
                     per_finding[static_cast<std::size_t>(f)].f1);
  }
  return out;
}

}  // namespace cmn::metrics
