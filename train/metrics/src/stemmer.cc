// Snowball's English stemmer ("Porter2", snowball english.sbl), the stemmer METEOR's stem module uses
// (org.tartarus.snowball.ext.englishStemmer). Written from the algorithm's definition for lowercase ASCII
// words; Snowball's `among` semantics are kept: the LONGEST matching suffix is chosen first and its
// condition tested, with no fallback to a shorter suffix when the condition fails.
#include <array>
#include <cstring>
#include <string>
#include <string_view>

#include "cmn/metrics/metrics.h"

namespace cmn::metrics {
namespace {

bool is_vowel(char c) { return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u' || c == 'y'; }

bool ends_with(const std::string& w, std::string_view suffix) {
  return w.size() >= suffix.size() && std::string_view(w).substr(w.size() - suffix.size()) == suffix;
}

// Longest suffix of w among the list, or an empty view.
template <std::size_t N>
std::string_view longest_suffix(const std::string& w, const std::array<std::string_view, N>& list) {
  std::string_view best;
  for (std::string_view s : list) {
    if (s.size() > best.size() && ends_with(w, s)) best = s;
  }
  return best;
}

void replace_suffix(std::string& w, std::size_t suffix_len, std::string_view by) {
  w.resize(w.size() - suffix_len);
  w += by;
}

// shortv at the end of w[0, end): ( non-v_WXY v non-v ) or ( non-v v atlimit ).
bool ends_short_syllable(const std::string& w, std::size_t end) {
  if (end >= 3) {
    const char c = w[end - 1];
    if (!is_vowel(c) && c != 'w' && c != 'x' && c != 'Y' && is_vowel(w[end - 2]) && !is_vowel(w[end - 3])) return true;
  }
  return end == 2 && !is_vowel(w[1]) && is_vowel(w[0]);
}

bool is_double(std::string_view s) {
  return s == "bb" || s == "dd" || s == "ff" || s == "gg" || s == "mm" || s == "nn" || s == "pp" || s == "rr" ||
         s == "tt";
}

bool is_li_ending(char c) { return std::strchr("cdeghkmnrt", c) != nullptr && c != '\0'; }

// gopast v gopast non-v from position `from`: the position after the first non-vowel that follows a vowel.
std::size_t region_start(const std::string& w, std::size_t from) {
  std::size_t i = from;
  while (i < w.size() && !is_vowel(w[i])) ++i;
  if (i >= w.size()) return w.size();
  ++i;
  while (i < w.size() && is_vowel(w[i])) ++i;
  if (i >= w.size()) return w.size();
  return i + 1;
}

}  // namespace

std::string snowball_english_stem(const std::string& word) {
  // exception1 (whole-word forms), tested before anything else.
  static const std::array<std::pair<std::string_view, std::string_view>, 18> kException1 = {{
      {"skis", "ski"},
      {"skies", "sky"},
      {"dying", "die"},
      {"lying", "lie"},
      {"tying", "tie"},
      {"idly", "idl"},
      {"gently", "gentl"},
      {"ugly", "ugli"},
      {"early", "earli"},
      {"only", "onli"},
      {"singly", "singl"},
      {"sky", "sky"},
      {"news", "news"},
      {"howe", "howe"},
      {"atlas", "atlas"},
      {"cosmos", "cosmos"},
      {"bias", "bias"},
      {"andes", "andes"},
  }};
  for (const auto& [from, to] : kException1) {
    if (word == from) return std::string(to);
  }
  if (word.size() < 3) return word;  // not hop 3

  std::string w = word;
  // prelude: drop an initial apostrophe; y at the start or after a vowel becomes Y.
  if (!w.empty() && w[0] == '\'') w.erase(0, 1);
  if (!w.empty() && w[0] == 'y') w[0] = 'Y';
  for (std::size_t i = 1; i < w.size(); ++i) {
    if (w[i] == 'y' && is_vowel(w[i - 1])) w[i] = 'Y';
  }

  // mark_regions
  std::size_t p1 = w.size();
  if (w.compare(0, 5, "gener") == 0 && w.size() >= 5) {
    p1 = 5;
  } else if (w.compare(0, 6, "commun") == 0 && w.size() >= 6) {
    p1 = 6;
  } else if (w.compare(0, 5, "arsen") == 0 && w.size() >= 5) {
    p1 = 5;
  } else {
    p1 = region_start(w, 0);
  }
  const std::size_t p2 = region_start(w, p1);
  auto in_r1 = [&](std::size_t pos) { return pos >= p1; };
  auto in_r2 = [&](std::size_t pos) { return pos >= p2; };

  // Step_1a, part 1: the apostrophe-s suffixes.
  {
    static const std::array<std::string_view, 3> kApos = {"'", "'s", "'s'"};
    const std::string_view s = longest_suffix(w, kApos);
    if (!s.empty()) w.resize(w.size() - s.size());
  }
  // Step_1a, part 2.
  {
    static const std::array<std::string_view, 6> kList = {"sses", "ied", "ies", "s", "us", "ss"};
    const std::string_view s = longest_suffix(w, kList);
    const std::size_t start = w.size() - s.size();
    if (s == "sses") {
      replace_suffix(w, 4, "ss");
    } else if (s == "ied" || s == "ies") {
      replace_suffix(w, 3, start >= 2 ? "i" : "ie");  // hop 2 <- 'i', or <- 'ie'
    } else if (s == "s") {
      // next gopast v: a vowel somewhere before the letter that precedes the s.
      bool vowel = false;
      for (std::size_t i = 0; start >= 1 && i + 1 < start; ++i) vowel = vowel || is_vowel(w[i]);
      if (vowel) w.resize(start);
    }
  }

  // exception2: invariant after Step_1a.
  static const std::array<std::string_view, 8> kException2 = {"inning",  "outing",  "canning", "herring",
                                                              "earring", "proceed", "exceed",  "succeed"};
  for (std::string_view e : kException2) {
    if (w == e) return w;  // no Y can be present in these words
  }

  // Step_1b
  {
    static const std::array<std::string_view, 6> kList = {"eed", "eedly", "ed", "edly", "ing", "ingly"};
    const std::string_view s = longest_suffix(w, kList);
    if (!s.empty()) {
      const std::size_t start = w.size() - s.size();
      if (s == "eed" || s == "eedly") {
        if (in_r1(start)) replace_suffix(w, s.size(), "ee");
      } else {
        bool vowel = false;
        for (std::size_t i = 0; i < start; ++i) vowel = vowel || is_vowel(w[i]);
        if (vowel) {
          w.resize(start);
          if (ends_with(w, "at") || ends_with(w, "bl") || ends_with(w, "iz")) {
            w += 'e';
          } else if (w.size() >= 2 && is_double(std::string_view(w).substr(w.size() - 2))) {
            w.pop_back();
          } else if (w.size() == p1 && ends_short_syllable(w, w.size())) {
            w += 'e';
          }
        }
      }
    }
  }

  // Step_1c: y/Y -> i after a non-vowel that is not the first letter.
  if (w.size() >= 3 && (w.back() == 'y' || w.back() == 'Y') && !is_vowel(w[w.size() - 2])) w.back() = 'i';

  // Step_2 (suffix in R1)
  {
    static const std::array<std::string_view, 24> kList = {"tional",  "enci",    "anci",  "abli",    "entli",   "izer",
                                                           "ization", "ational", "ation", "ator",    "alism",   "aliti",
                                                           "alli",    "fulness", "ousli", "ousness", "iveness", "iviti",
                                                           "biliti",  "bli",     "ogi",   "fulli",   "lessli",  "li"};
    const std::string_view s = longest_suffix(w, kList);
    if (!s.empty() && in_r1(w.size() - s.size())) {
      const std::size_t start = w.size() - s.size();
      if (s == "tional")
        replace_suffix(w, s.size(), "tion");
      else if (s == "enci")
        replace_suffix(w, s.size(), "ence");
      else if (s == "anci")
        replace_suffix(w, s.size(), "ance");
      else if (s == "abli")
        replace_suffix(w, s.size(), "able");
      else if (s == "entli")
        replace_suffix(w, s.size(), "ent");
      else if (s == "izer" || s == "ization")
        replace_suffix(w, s.size(), "ize");
      else if (s == "ational" || s == "ation" || s == "ator")
        replace_suffix(w, s.size(), "ate");
      else if (s == "alism" || s == "aliti" || s == "alli")
        replace_suffix(w, s.size(), "al");
      else if (s == "fulness")
        replace_suffix(w, s.size(), "ful");
      else if (s == "ousli" || s == "ousness")
        replace_suffix(w, s.size(), "ous");
      else if (s == "iveness" || s == "iviti")
        replace_suffix(w, s.size(), "ive");
      else if (s == "biliti" || s == "bli")
        replace_suffix(w, s.size(), "ble");
      else if (s == "ogi") {
        if (start >= 1 && w[start - 1] == 'l') replace_suffix(w, s.size(), "og");
      } else if (s == "fulli")
        replace_suffix(w, s.size(), "ful");
      else if (s == "lessli")
        replace_suffix(w, s.size(), "less");
      else if (s == "li") {
        if (start >= 1 && is_li_ending(w[start - 1])) w.resize(start);
      }
    }
  }

  // Step_3 (suffix in R1)
  {
    static const std::array<std::string_view, 9> kList = {"tional", "ational", "alize", "icate", "iciti",
                                                          "ical",   "ful",     "ness",  "ative"};
    const std::string_view s = longest_suffix(w, kList);
    if (!s.empty() && in_r1(w.size() - s.size())) {
      const std::size_t start = w.size() - s.size();
      if (s == "tional")
        replace_suffix(w, s.size(), "tion");
      else if (s == "ational")
        replace_suffix(w, s.size(), "ate");
      else if (s == "alize")
        replace_suffix(w, s.size(), "al");
      else if (s == "icate" || s == "iciti" || s == "ical")
        replace_suffix(w, s.size(), "ic");
      else if (s == "ful" || s == "ness")
        w.resize(start);
      else if (s == "ative") {
        if (in_r2(start)) w.resize(start);
      }
    }
  }

  // Step_4 (suffix in R2)
  {
    static const std::array<std::string_view, 18> kList = {"al",   "ance", "ence",  "er",   "ic",  "able",
                                                           "ible", "ant",  "ement", "ment", "ent", "ism",
                                                           "ate",  "iti",  "ous",   "ive",  "ize", "ion"};
    const std::string_view s = longest_suffix(w, kList);
    if (!s.empty() && in_r2(w.size() - s.size())) {
      const std::size_t start = w.size() - s.size();
      if (s == "ion") {
        if (start >= 1 && (w[start - 1] == 's' || w[start - 1] == 't')) w.resize(start);
      } else {
        w.resize(start);
      }
    }
  }

  // Step_5
  if (!w.empty()) {
    const std::size_t start = w.size() - 1;
    if (w.back() == 'e') {
      if (in_r2(start) || (in_r1(start) && !ends_short_syllable(w, start))) w.resize(start);
    } else if (w.back() == 'l') {
      if (in_r2(start) && start >= 1 && w[start - 1] == 'l') w.resize(start);
    }
  }

  // postlude
  for (char& c : w) {
    if (c == 'Y') c = 'y';
  }
  return w;
}

}  // namespace cmn::metrics
