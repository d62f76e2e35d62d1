// Findings-section reports for phantom studies. The templates are the project's own, written in the register
// of chest radiograph findings sections (heart and mediastinum, lungs, pleura, bones), with several wordings
// per statement so that a model has to learn the finding, not one fixed string. Every template was checked
// against the label extractor (tests/phantom/phantom_test.cc): it must give back exactly the finding labels of
// the study it describes.
#include <algorithm>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "cmn/phantom/phantom.h"

namespace cmn::phantom {
namespace {

using metrics::Label;

std::size_t pick(std::mt19937_64& rng, std::size_t n) { return static_cast<std::size_t>(rng() % n); }

template <std::size_t N>
std::string pick(std::mt19937_64& rng, const std::array<const char*, N>& options) {
  return options[pick(rng, N)];
}

std::string replace_all(std::string s, const std::string& key, const std::string& value) {
  for (std::size_t p = s.find(key); p != std::string::npos; p = s.find(key, p + value.size())) s.replace(p, key.size(), value);
  return s;
}

std::string capitalise(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

std::string template_sentence(Finding f, bool present, const StudySpec& spec, std::mt19937_64& rng) {
  switch (f) {
    case Finding::kCardiomegaly:
      if (present) {
        static const std::array<const char*, 5> kPos = {"the heart is enlarged", "cardiomegaly", "the cardiac silhouette is enlarged",
                                                        "there is cardiomegaly", "the heart size is enlarged"};
        return pick(rng, kPos);
      } else {
        static const std::array<const char*, 5> kNeg = {"heart size is normal", "the heart is normal in size",
                                                        "the cardiomediastinal silhouette is within normal limits",
                                                        "normal heart size", "the heart is not enlarged"};
        return pick(rng, kNeg);
      }
    case Finding::kConsolidation:
      if (present) {
        static const std::array<const char*, 4> kPos = {"there is focal consolidation in the {zone}", "{zone} airspace consolidation",
                                                        "focal airspace opacity in the {zone} consistent with consolidation",
                                                        "consolidation in the {zone} with air bronchograms"};
        return replace_all(pick(rng, kPos), "{zone}", zone_name(spec.consolidation_zone));
      } else {
        static const std::array<const char*, 4> kNeg = {"no focal consolidation", "no focal airspace disease",
                                                        "the lungs are clear", "there is no consolidation"};
        return pick(rng, kNeg);
      }
    case Finding::kCalcifiedGranuloma:
      if (present) {
        static const std::array<const char*, 4> kPos = {"calcified granuloma in the {zone}", "there is a calcified granuloma in the {zone}",
                                                        "{zone} calcified granuloma",
                                                        "a small calcified granuloma projects over the {zone}"};
        return replace_all(pick(rng, kPos), "{zone}", zone_name(spec.granuloma_zone));
      } else {
        static const std::array<const char*, 3> kNeg = {"no calcified granuloma", "no calcified nodules",
                                                        "no granulomas are seen"};
        return pick(rng, kNeg);
      }
    case Finding::kPleuralEffusion:
      if (present) {
        const bool both = spec.effusion_side == Side::kBilateral;
        const std::string size = spec.effusion_height < 0.07 ? "small" : "moderate";
        if (both) {
          static const std::array<const char*, 3> kPos = {"there are {size} bilateral pleural effusions",
                                                          "bilateral pleural effusions with blunting of the costophrenic angles",
                                                          "{size} bilateral effusions"};
          return replace_all(pick(rng, kPos), "{size}", size);
        }
        static const std::array<const char*, 4> kPos = {"there is a {size} {side} pleural effusion",
                                                        "{side} pleural effusion with blunting of the costophrenic angle",
                                                        "{size} {side} effusion",
                                                        "blunting of the {side} costophrenic angle consistent with pleural effusion"};
        return replace_all(replace_all(pick(rng, kPos), "{size}", size), "{side}", side_name(spec.effusion_side));
      } else {
        static const std::array<const char*, 3> kNeg = {"no pleural effusion", "no effusion", "the costophrenic angles are sharp"};
        return pick(rng, kNeg);
      }
    case Finding::kPneumothorax:
      if (present) {
        static const std::array<const char*, 3> kPos = {"there is a {side} pneumothorax", "{side} apical pneumothorax",
                                                        "a {side} pneumothorax is present with a visible pleural line"};
        return replace_all(pick(rng, kPos), "{side}", side_name(spec.pneumothorax_side));
      } else {
        static const std::array<const char*, 2> kNeg = {"no pneumothorax", "there is no pneumothorax"};
        return pick(rng, kNeg);
      }
    case Finding::kDegenerativeSpine:
      if (present) {
        static const std::array<const char*, 4> kPos = {"degenerative changes of the thoracic spine",
                                                        "there are degenerative changes in the thoracic spine",
                                                        "mild degenerative changes of the spine with osteophytes",
                                                        "thoracic spondylosis"};
        return pick(rng, kPos);
      } else {
        static const std::array<const char*, 3> kNeg = {"no degenerative changes of the spine",
                                                        "no significant degenerative changes of the thoracic spine",
                                                        "no osteophytes"};
        return pick(rng, kNeg);
      }
  }
  return "";
}

// Heart and mediastinum, lungs, pleura, bones: the order of a findings section.
constexpr std::array<Finding, kNumFindings> kReportOrder = {Finding::kCardiomegaly,    Finding::kConsolidation,
                                                            Finding::kCalcifiedGranuloma, Finding::kPleuralEffusion,
                                                            Finding::kPneumothorax,    Finding::kDegenerativeSpine};

}  // namespace

std::string write_report(const StudySpec& spec, uint64_t seed, const ReportOptions& options) {
  std::mt19937_64 rng(seed * 0xD1B54A32D192ED03ULL + 0x51ULL);
  std::vector<std::string> sentences;
  const bool group_pleura = !spec.has(Finding::kPleuralEffusion) && !spec.has(Finding::kPneumothorax) &&
                            options.bank == nullptr && pick(rng, 10) < 6;
  for (Finding f : kReportOrder) {
    const bool present = spec.has(f);
    if (group_pleura && (f == Finding::kPleuralEffusion || f == Finding::kPneumothorax)) {
      if (f == Finding::kPleuralEffusion) {
        static const std::array<const char*, 3> kBoth = {"no pleural effusion or pneumothorax", "no pneumothorax or pleural effusion",
                                                         "there is no pleural effusion or pneumothorax"};
        sentences.push_back(pick(rng, kBoth));
      }
      continue;
    }
    if (options.bank != nullptr) {
      const auto& bucket = options.bank->sentences(f, present);
      if (!bucket.empty()) {
        sentences.push_back(bucket[pick(rng, bucket.size())]);
        continue;
      }
    }
    sentences.push_back(template_sentence(f, present, spec, rng));
  }
  std::string report;
  for (const auto& s : sentences) {
    if (!report.empty()) report += ' ';
    report += capitalise(s) + ".";
  }
  return report;
}

SentenceBank SentenceBank::from_annotation(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open annotation file '" + path + "'");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("annotation file '" + path + "' is not JSON: " + e.what());
  }
  if (!j.is_object() || !j.contains("train") || !j["train"].is_array()) {
    throw std::runtime_error("annotation file '" + path + "' has no \"train\" list (not an R2Gen annotation.json)");
  }
  SentenceBank bank;
  for (const auto& ex : j["train"]) {
    if (!ex.is_object() || !ex.contains("report") || !ex["report"].is_string()) continue;
    for (const auto& sentence : metrics::split_sentences(ex["report"].get<std::string>())) {
      // "xxxx" is the de-identification mask of IU X-Ray: such a sentence lost words that may have mattered.
      if (sentence.find("xxxx") != std::string::npos) continue;
      const auto labels = metrics::extract_labels(sentence);
      int mentioned = 0, which = -1;
      for (int f = 0; f < kNumFindings; ++f) {
        if (labels[static_cast<std::size_t>(f)] != Label::kNotMentioned) {
          ++mentioned;
          which = f;
        }
      }
      if (mentioned != 1) continue;
      const Label l = labels[static_cast<std::size_t>(which)];
      if (l != Label::kPositive && l != Label::kNegative) continue;
      auto& bucket = bank.buckets_[static_cast<std::size_t>(which)][l == Label::kPositive ? 1 : 0];
      if (std::find(bucket.begin(), bucket.end(), sentence) == bucket.end()) bucket.push_back(sentence);
    }
  }
  return bank;
}

const std::vector<std::string>& SentenceBank::sentences(Finding f, bool positive) const {
  return buckets_[static_cast<std::size_t>(f)][positive ? 1 : 0];
}

bool SentenceBank::complete() const {
  for (const auto& b : buckets_) {
    if (b[0].empty() || b[1].empty()) return false;
  }
  return true;
}

std::string SentenceBank::summary() const {
  std::ostringstream s;
  for (int f = 0; f < kNumFindings; ++f) {
    s << (f ? ", " : "") << metrics::finding_name(static_cast<Finding>(f)) << " +" << buckets_[static_cast<std::size_t>(f)][1].size()
      << "/-" << buckets_[static_cast<std::size_t>(f)][0].size();
  }
  return s.str();
}

}  // namespace cmn::phantom
