// The CheXpert-style labeler: clean, split, find mentions, classify them (chexpert_classify.cc), aggregate.
#include "cmn/metrics/chexpert.h"

#include <cctype>

#include "chexpert_classify.h"
#include "chexpert_phrases.h"

namespace cmn::metrics {
namespace {

using chexpert_detail::Token;

bool is_alpha(char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; }

struct Found {
  Observation observation;
  std::size_t begin, end;  // bytes in the sentence
  std::string sentence;
  chexpert_detail::Verdict verdict;
  std::string text;
};

// re.finditer of a literal: non-overlapping occurrences, left to right.
std::vector<std::pair<std::size_t, std::size_t>> occurrences(const std::string& text, const std::string& phrase) {
  std::vector<std::pair<std::size_t, std::size_t>> out;
  if (phrase.empty()) return out;
  for (std::size_t p = text.find(phrase); p != std::string::npos; p = text.find(phrase, p + phrase.size())) {
    out.emplace_back(p, p + phrase.size());
  }
  return out;
}

bool overlaps_unmention(const std::string& sentence, const std::vector<std::string>& unmentions, std::size_t begin,
                        std::size_t end) {
  for (const auto& u : unmentions) {
    for (const auto& [ub, ue] : occurrences(sentence, u)) {
      if (begin < ue && end > ub) return true;
    }
  }
  return false;
}

std::vector<Found> find_mentions(const std::string& report) {
  std::vector<Found> out;
  for (const std::string& sentence : chexpert_sentences(chexpert_clean(report))) {
    const std::vector<Token> tokens = chexpert_detail::tokenize(sentence);
    for (const auto& entry : chexpert_detail::phrase_table()) {
      for (const auto& phrase : entry.mention) {
        for (const auto& [b, e] : occurrences(sentence, phrase)) {
          if (overlaps_unmention(sentence, entry.unmention, b, e)) continue;
          // The tokens the match touches (a match may start or end inside a word: "opaci" in "opacities").
          std::size_t first = tokens.size(), last = 0;
          for (std::size_t i = 0; i < tokens.size(); ++i) {
            if (tokens[i].end > b && tokens[i].begin < e) {
              if (first == tokens.size()) first = i;
              last = i + 1;
            }
          }
          if (first >= last) continue;  // only spaces matched
          out.push_back({entry.observation, b, e, sentence,
                         chexpert_detail::classify_mention(tokens, first, last, phrase), sentence.substr(b, e - b)});
        }
      }
    }
  }
  return out;
}

// aggregate.py dict_to_vec: the label of an observation from the labels of its mentions.
Mention aggregate(const std::vector<Mention>& labels) {
  if (labels.empty()) return Mention::kBlank;
  if (labels.size() == 1) return labels.front();
  bool neg = false, unc = false, pos = false;
  for (Mention m : labels) {
    neg = neg || m == Mention::kNegative;
    unc = unc || m == Mention::kUncertain;
    pos = pos || m == Mention::kPositive;
  }
  if (neg && unc) return Mention::kUncertain;  // checked first, as in the labeler
  if (neg && pos) return Mention::kPositive;
  if (unc && pos) return Mention::kPositive;
  return labels.front();
}

}  // namespace

const std::array<std::string, kNumObservations>& observation_names() {
  static const std::array<std::string, kNumObservations> names = {
      "No Finding",    "Enlarged Cardiomediastinum", "Cardiomegaly",  "Lung Lesion",  "Lung Opacity",
      "Edema",         "Consolidation",              "Pneumonia",     "Atelectasis",  "Pneumothorax",
      "Pleural Effusion", "Pleural Other",           "Fracture",      "Support Devices"};
  return names;
}

const char* observation_name(Observation o) { return observation_names()[static_cast<std::size_t>(o)].c_str(); }

std::string chexpert_clean(const std::string& report) {
  std::string s;
  s.reserve(report.size());
  for (char c : report) s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  // "and/or" -> "or"
  for (std::size_t p = s.find("and/or"); p != std::string::npos; p = s.find("and/or", p + 2)) s.replace(p, 6, "or");
  // letter/letter -> "letter or letter"
  std::string t;
  t.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '/' && i > 0 && i + 1 < s.size() && is_alpha(s[i - 1]) && is_alpha(s[i + 1])) {
      t += " or ";
    } else {
      t += s[i];
    }
  }
  // ".." -> "." (str.replace: left to right, non-overlapping, one pass)
  std::string u;
  u.reserve(t.size());
  for (std::size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '.' && i + 1 < t.size() && t[i + 1] == '.') {
      u += '.';
      ++i;
    } else {
      u += t[i];
    }
  }
  // a space after '.' and ',', then whitespace runs -> one space, trimmed (' '.join(s.split())).
  std::string v;
  for (char c : u) {
    v += c;
    if (c == '.' || c == ',') v += ' ';
  }
  std::string out;
  bool space = false;
  for (char c : v) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      space = !out.empty();
    } else {
      if (space) out += ' ';
      space = false;
      out += c;
    }
  }
  return out;
}

std::vector<std::string> chexpert_sentences(const std::string& cleaned) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t i = 0; i < cleaned.size(); ++i) {
    const char c = cleaned[i];
    if ((c == '.' || c == '?' || c == '!') && (i + 1 == cleaned.size() || cleaned[i + 1] == ' ')) {
      out.push_back(cleaned.substr(start, i + 1 - start));
      start = i + 2;
    }
  }
  if (start < cleaned.size()) out.push_back(cleaned.substr(start));
  return out;
}

std::vector<MentionTrace> chexpert_trace(const std::string& report) {
  std::vector<MentionTrace> out;
  for (auto& f : find_mentions(report)) {
    out.push_back({f.observation, f.text, f.sentence, f.verdict.label, f.verdict.cue});
  }
  return out;
}

ChexpertLabels chexpert_label(const std::string& report) {
  std::array<std::vector<Mention>, kNumObservations> per;
  bool no_finding = true;
  for (const auto& f : find_mentions(report)) {
    const Mention label = f.verdict.label;
    const bool stated = label == Mention::kPositive || label == Mention::kUncertain;
    // Any stated observation other than Support Devices (the No Finding phrases included) is a finding.
    if (f.observation != Observation::kSupportDevices && stated) no_finding = false;
    if (f.observation == Observation::kNoFinding) continue;
    // aggregate.py: a stated "chf" / "heart failure" also makes Cardiomegaly uncertain.
    if (stated && (f.text == "chf" || f.text == "heart failure")) {
      per[static_cast<std::size_t>(Observation::kCardiomegaly)].push_back(Mention::kUncertain);
    }
    per[static_cast<std::size_t>(f.observation)].push_back(label);
  }
  ChexpertLabels labels;
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = aggregate(per[i]);
  labels[static_cast<std::size_t>(Observation::kNoFinding)] = no_finding ? Mention::kPositive : Mention::kBlank;
  return labels;
}

}  // namespace cmn::metrics
