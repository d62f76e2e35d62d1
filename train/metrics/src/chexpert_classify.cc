// Negation and uncertainty of one mention, by cues around it in its clause. The cue lists follow the CheXpert
// labeler's patterns/pre_negation_uncertainty.txt, negation.txt and post_negation_uncertainty.txt; where those
// link a cue to a mention through the dependency parse, the scope rules below (a clause, a verb, "with")
// stand in for the parse.
#include "chexpert_classify.h"

#include <algorithm>
#include <cctype>
#include <initializer_list>
#include <set>

namespace cmn::metrics::chexpert_detail {
namespace {

using Tokens = std::vector<Token>;

bool is_word_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

bool one_of(const std::string& w, std::initializer_list<const char*> words) {
  for (const char* x : words) {
    if (w == x) return true;
  }
  return false;
}

// The word at i, or "" outside the tokens.
const std::string& at(const Tokens& t, std::ptrdiff_t i) {
  static const std::string kNone;
  return i >= 0 && static_cast<std::size_t>(i) < t.size() ? t[static_cast<std::size_t>(i)].word : kNone;
}

// A clause ends here (the scope of every cue stops).
bool clause_break(const std::string& w) {
  return one_of(w, {";", ":", "but", "however", "although", "though", "whereas", "except", "which", "where",
                    "while", "?", "!"});
}

// Finite verbs and auxiliaries: a negation word before one does not reach past it ("no effusion is seen and
// the heart is enlarged"); a predicate after a mention reaches it over one of them ("heart size is normal").
bool is_verb(const std::string& w) {
  return one_of(w, {"is", "are", "was", "were", "be", "been", "being", "am", "has", "have", "had", "appears",
                    "appear", "appeared", "remains", "remain", "remained", "seems", "seem", "demonstrates",
                    "demonstrate", "shows", "show", "reveals", "reveal", "represents", "represent", "reflects",
                    "reflect", "may", "might", "could", "would", "can", "should", "will", "persists", "persist"});
}

bool starts_new_clause(const Tokens& t, std::size_t i) {
  // ", the ..." / "and there ..." open a new subject: a "no" before it does not reach into it.
  const std::string& w = t[i].word;
  if (w != "," && w != "and") return false;
  return one_of(at(t, static_cast<std::ptrdiff_t>(i) + 1), {"the", "there", "this", "these", "a", "an", "it"});
}

// [first, last) of the clause holding tokens [a, b).
std::pair<std::size_t, std::size_t> clause_of(const Tokens& t, std::size_t a, std::size_t b) {
  std::size_t lo = a;
  while (lo > 0 && !clause_break(t[lo - 1].word)) --lo;
  std::size_t hi = b;
  while (hi < t.size() && !clause_break(t[hi].word)) ++hi;
  return {lo, hi};
}

// ---- a. pre-negation uncertainty ------------------------------------------------------------------------

std::string pre_negation_uncertainty(const Tokens& t, std::size_t first, std::size_t lo, std::size_t hi) {
  static const std::vector<std::vector<const char*>> kAnywhere = {
      {"cannot", "exclude"}, {"can", "not", "exclude"}, {"cannot", "be", "excluded"}, {"not", "be", "excluded"},
      {"not", "excluded"},   {"cannot", "rule", "out"}, {"can", "not", "rule", "out"}, {"cannot", "be", "ruled"},
      {"not", "be", "ruled"}, {"not", "ruled", "out"}, {"not", "been", "excluded"}};
  for (const auto& seq : kAnywhere) {
    for (std::size_t i = lo; i + seq.size() <= hi; ++i) {
      bool match = true;
      for (std::size_t k = 0; k < seq.size() && match; ++k) match = t[i + k].word == seq[k];
      if (match) {
        std::string cue;
        for (const char* w : seq) cue += (cue.empty() ? "" : " ") + std::string(w);
        return cue;
      }
    }
  }
  // "no new XXX", "no new area of XXX": a few modifiers between.
  for (std::size_t i = first, steps = 0; i > lo && steps < 5; --i, ++steps) {
    if (t[i - 1].word == "new" && i >= 2 && t[i - 2].word == "no") return "no new";
    if (t[i - 1].word == "," || is_verb(t[i - 1].word)) break;
  }
  return "";
}

// ---- b. negation -------------------------------------------------------------------------------------------

// A negation cue ending at token i whose scope runs forward; "" if none.
std::string negation_cue_before(const Tokens& t, std::size_t i) {
  const std::string& w = t[i].word;
  const std::string& next = at(t, static_cast<std::ptrdiff_t>(i) + 1);
  if (one_of(w, {"no", "without", "normal", "unremarkable", "exclude", "excluding", "removed", "resolved",
                 "cleared", "absent"})) {
    return w;
  }
  if (w == "not" && next.rfind("well", 0) != 0 && next != "clearly") return w;
  if (one_of(w, {"negative"}) && next == "for") return "negative for";
  if (one_of(w, {"free", "clear", "clearing", "resolution", "removal", "history", "disappearance", "drainage",
                 "absence"}) &&
      next == "of") {
    return w + " of";
  }
  if (w == "rather" && next == "than") return "rather than";
  if ((w == "rule" || w == "ruled") && next == "out") return w + " out";
  return "";
}

std::string negation_before(const Tokens& t, std::size_t first, std::size_t lo) {
  // "no XXX to suggest/explain YYY": YYY is negated across the verb.
  std::size_t to_suggest = 0;
  bool suggest = false;
  for (std::size_t i = first; i > lo; --i) {
    const std::size_t j = i - 1;
    if (one_of(t[j].word, {"suggest", "explain", "diagnose"}) && j > lo && t[j - 1].word == "to") {
      suggest = true;
      to_suggest = j - 1;
      break;
    }
  }
  if (suggest) {
    for (std::size_t j = lo; j < to_suggest; ++j) {
      if (t[j].word == "no" || t[j].word == "without") return t[j].word + " ... to " + t[to_suggest + 1].word;
    }
  }
  bool comma = false;
  for (std::size_t i = first; i > lo; --i) {
    const std::size_t j = i - 1;
    const std::string cue = negation_cue_before(t, j);
    if (!cue.empty()) {
      // "not" and the predicate adjectives only reach a mention close by ("not pneumonia", "normal heart size");
      // an adjective modifies its own noun phrase, not the next item of a comma list.
      if ((cue == "not" || cue == "absent") && first - j > 3) return "";
      if ((cue == "normal" || cue == "unremarkable") && comma) return "";
      return cue;
    }
    comma = comma || t[j].word == ",";
    if (is_verb(t[j].word) || t[j].word == "with" || starts_new_clause(t, j)) return "";
  }
  return "";
}

// A cue after the mention, reached over `verbs` verbs; "" if none at i.
std::string negation_cue_after(const Tokens& t, std::size_t i, int verbs, std::size_t hi) {
  const std::string& w = t[i].word;
  const std::string& next = i + 1 < hi ? t[i + 1].word : std::string();
  if (w == "normal" || w == "unremarkable" || w == "clear") {
    // Attributive ("cardiomegaly and normal vascularity") modifies what follows, not the mention.
    const bool attributive =
        !next.empty() && is_word_char(next[0]) &&
        !one_of(next, {"in", "for", "and", "or", "with", "without", "at", "to", "on", "of", "by", "but", "limits",
                       "limit", "size", "appearance", "caliber", "configuration", "contour", "contours", "allowing",
                       "given", "except", "otherwise", "again", "now", "today", "bilaterally"});
    if (verbs == 0 && attributive) return "";
    return w;
  }
  if (one_of(w, {"absent", "resolved", "removed", "cleared", "excluded"})) return w;
  if (w == "not") {
    // "not enlarged", "not significantly enlarged"
    const bool adverb = one_of(next, {"significantly", "substantially", "markedly", "definitely", "grossly"});
    const std::string& word = adverb && i + 2 < hi ? t[i + 2].word : next;
    if (one_of(word, {"enlarged", "seen", "identified", "visualized", "present", "evident", "demonstrated",
                      "detected", "noted", "visible", "appreciable"})) {
      return "not " + (adverb ? next + " " : std::string()) + word;
    }
  }
  if (w == "no" && next == "longer") return "no longer";
  return "";
}

std::string negation_after(const Tokens& t, std::size_t last, std::size_t hi) {
  int verbs = 0;
  bool comma = false, conjunction = false, comma_clause = false;
  for (std::size_t i = last, steps = 0; i < hi && steps < 16; ++i, ++steps) {
    const std::string cue = negation_cue_after(t, i, verbs, hi);
    // "heart size, mediastinal silhouette, vascularity are normal" lists subjects (often without "and"), but
    // "cardiomegaly, lungs are clear" is a second clause: "clear" is said of the lungs far more often than of a
    // list of mentions.
    if (!cue.empty() && !(cue == "clear" && comma_clause)) return cue;
    if (!cue.empty()) return "";
    const std::string& w = t[i].word;
    if (one_of(w, {"with", "without", "otherwise", "no", "there"}) || starts_new_clause(t, i)) return "";
    comma = comma || w == ",";
    conjunction = conjunction || w == "and" || w == "or";
    if (is_verb(w) && comma && !conjunction) comma_clause = true;
    if (is_verb(w) && ++verbs > 1) return "";
    if (one_of(w, {"seen", "noted", "identified", "present", "enlarged", "increased", "decreased", "large",
                   "small", "mild", "moderate", "severe"}) &&
        verbs > 0) {
      return "";  // the predicate is already something else ("is enlarged and ... normal")
    }
  }
  return "";
}

// ---- c. post-negation uncertainty -------------------------------------------------------------------------

std::string uncertainty_cue_before(const Tokens& t, std::size_t i) {
  const std::string& w = t[i].word;
  const std::string& next = at(t, static_cast<std::ptrdiff_t>(i) + 1);
  if (one_of(w, {"may", "might", "could", "would", "possible", "possibly", "presumably", "probable",
                 "questionable", "suspect", "suspected", "suspicious", "suspicion", "question", "favor",
                 "favored", "consider", "considered", "maybe", "differential", "worrisome", "obscuring",
                 "obscures", "obscured", "versus", "vs", "equivocal"})) {
    return w;
  }
  if (one_of(w, {"suggestion", "concern", "concerning"}) && (next == "of" || next == "for")) return w + " " + next;
  if (w == "secondary" && next == "to") return "secondary to";
  if (w == "less" && next == "likely") return "less likely";
  if (w == "correlate" || w == "correlation") return w;
  return "";
}

std::string uncertainty_before(const Tokens& t, std::size_t first, std::size_t lo) {
  for (std::size_t i = first; i > lo; --i) {
    const std::string cue = uncertainty_cue_before(t, i - 1);
    if (!cue.empty()) return cue;
    if (starts_new_clause(t, i - 1)) return "";  // "..., may be positional, the heart is enlarged"
  }
  return "";
}

std::string uncertainty_after(const Tokens& t, std::size_t last, std::size_t hi) {
  int verbs = 0;
  for (std::size_t i = last, steps = 0; i < hi && steps < 8; ++i, ++steps) {
    const std::string& w = t[i].word;
    const std::string& next = i + 1 < hi ? t[i + 1].word : std::string();
    if (one_of(w, {"suspected", "questionable", "possible", "obscured", "equivocal", "versus", "vs"})) return w;
    if (w == "not" && one_of(next, {"appreciated", "well", "clearly", "excluded", "well-seen", "well-visualized"})) {
      return "not " + next;
    }
    if (one_of(w, {"poorly", "incompletely"}) && one_of(next, {"evaluated", "visualized", "seen"})) {
      return w + " " + next;
    }
    if (one_of(w, {"may", "might", "could", "can"}) && next == "be" &&
        one_of(at(t, static_cast<std::ptrdiff_t>(i) + 2), {"present", "seen", "noted"})) {
      return w + " be " + at(t, static_cast<std::ptrdiff_t>(i) + 2);
    }
    if (one_of(w, {"with", "without", "no", "there"}) || starts_new_clause(t, i)) return "";
    if (is_verb(w) && ++verbs > 1) return "";
  }
  return "";
}

// The mention is one member of an "or" / "versus" list ("atelectasis or consolidation").
std::string alternative(const Tokens& t, std::size_t first, std::size_t last, std::size_t lo, std::size_t hi) {
  auto list_word = [](const std::string& w) {
    return !is_verb(w) && !one_of(w, {"with", "without", "in", "of", "at", "on", "within", "from", "to", "along",
                                      "over", "for", "by", "near", "no", "not", "there", "."});
  };
  for (std::size_t i = last, steps = 0; i < hi && steps < 6; ++i, ++steps) {
    if (one_of(t[i].word, {"or", "versus", "vs"})) return t[i].word;
    if (!list_word(t[i].word)) break;
  }
  for (std::size_t i = first, steps = 0; i > lo && steps < 6; --i, ++steps) {
    if (one_of(t[i - 1].word, {"or", "versus", "vs"})) return t[i - 1].word;
    if (!list_word(t[i - 1].word)) break;
  }
  return "";
}

// "stable cardiomediastinal silhouette", "heart size is unchanged", "borderline heart size".
std::string stable_heart(const Tokens& t, std::size_t first, std::size_t last, std::size_t lo, std::size_t hi) {
  static const std::set<std::string> kHeartWords = {
      "cardiomediastinal", "pericardial", "mediastinal", "mediastinum", "cardiomediastinum", "contour", "contours",
      "configuration",     "silhouette",  "size",        "heart",       "shadow"};
  bool heart = false;
  bool size = false;
  for (std::size_t i = first; i < last; ++i) {
    heart = heart || kHeartWords.count(t[i].word) > 0;
    size = size || t[i].word == "size";
  }
  if (!heart) return "";
  // Its own modifiers, also over "and" ("stable heart size and mediastinal contours"), but not "stable
  // enlargement of the heart".
  for (std::size_t i = first, steps = 0; i > lo && steps < 5; --i, ++steps) {
    const std::string& w = t[i - 1].word;
    if (w == "stable" || w == "unchanged") return w;
    if (w == "borderline" && size) return w;
    if (!is_word_char(w[0]) || is_verb(w) || one_of(w, {"of", "the", "a", "an", "or", "with", "no", "normal"})) break;
  }
  int verbs = 0;
  for (std::size_t i = last, steps = 0; i < hi && steps < 8; ++i, ++steps) {
    const std::string& w = t[i].word;
    if (one_of(w, {"stable", "unchanged", "similar"})) return w;
    if (w == "borderline" && size) return w;
    if (w == "not" && at(t, static_cast<std::ptrdiff_t>(i) + 1) == "changed") return "not changed";
    if (one_of(w, {"with", "without", "there", ";"}) || starts_new_clause(t, i)) break;
    if (is_verb(w) && ++verbs > 1) break;
  }
  return "";
}

}  // namespace

std::vector<Token> tokenize(const std::string& s) {
  std::vector<Token> out;
  std::size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      ++i;
      continue;
    }
    if (!is_word_char(c)) {
      out.push_back({std::string(1, c), i, i + 1});
      ++i;
      continue;
    }
    std::size_t j = i + 1;
    while (j < s.size() && (is_word_char(s[j]) || ((s[j] == '-' || s[j] == '\'') && j + 1 < s.size() &&
                                                   is_word_char(s[j + 1])))) {
      ++j;
    }
    out.push_back({s.substr(i, j - i), i, j});
    i = j;
  }
  return out;
}

Verdict classify_mention(const Tokens& t, std::size_t first, std::size_t last, const std::string& text) {
  const auto [lo, hi] = clause_of(t, first, last);
  // negdetect.py: a sentence opening "findings: no" / "impression: no" negates all of it.
  if (t.size() >= 3 && (t[0].word == "findings" || t[0].word == "impression") && t[1].word == ":" &&
      t[2].word == "no") {
    return {Mention::kNegative, t[0].word + ": no"};
  }
  if (auto cue = pre_negation_uncertainty(t, first, lo, hi); !cue.empty()) return {Mention::kUncertain, cue};
  if (auto cue = negation_before(t, first, lo); !cue.empty()) return {Mention::kNegative, cue};
  if (auto cue = negation_after(t, last, hi); !cue.empty()) return {Mention::kNegative, cue};
  if (auto cue = uncertainty_before(t, first, lo); !cue.empty()) return {Mention::kUncertain, cue};
  if (auto cue = uncertainty_after(t, last, hi); !cue.empty()) return {Mention::kUncertain, cue};
  if (auto cue = alternative(t, first, last, lo, hi); !cue.empty()) return {Mention::kUncertain, cue};
  if (auto cue = stable_heart(t, first, last, lo, hi); !cue.empty()) return {Mention::kUncertain, cue};
  // post_negation_uncertainty.txt: these Edema phrases are uncertain by themselves.
  if (text == "vascular congestion" || text == "pulmonary congestion" || text == "indistinctness" ||
      text == "vascular prominence") {
    return {Mention::kUncertain, text};
  }
  return {Mention::kPositive, ""};
}

}  // namespace cmn::metrics::chexpert_detail
