// METEOR 1.5's exact and stem modules, ported from its Java sources (edu.cmu.meteor: util.Normalizer,
// aligner.Aligner/ExactMatcher/StemMatcher/PartialAlignment, scorer.MeteorScorer/MeteorStats, and
// util.Constants for the English "default" = ranking-task parameters). What it is NOT: METEOR 1.5 — there is
// no synonym module (WordNet), no paraphrase module, and no function-word list unless the caller supplies
// one. See metrics.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cmn/metrics/metrics.h"

namespace cmn::metrics {
namespace {

// ---- UTF-8 <-> code points -------------------------------------------------------------------------------

std::u32string to_u32(const std::string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    int n = 0;
    char32_t cp = b0;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      n = 1;
      cp = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      n = 2;
      cp = b0 & 0x0F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      n = 3;
      cp = b0 & 0x07;
    } else if (b0 >= 0x80) {
      n = -1;  // stray byte: kept as U+FFFD
    }
    // A sequence that is cut short or has a bad continuation byte decodes its lead byte as U+FFFD.
    bool ok = n >= 0 && i + static_cast<std::size_t>(n) < s.size();
    for (int k = 1; ok && k <= n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]);
      if ((b & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (b & 0x3F);
    }
    if (!ok) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += static_cast<std::size_t>(n) + 1;
  }
  return out;
}

std::string to_utf8(const std::u32string& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if (c < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (c >> 12)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (c >> 18)));
      out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

// ---- Normalizer character classes (Java regex classes of Normalizer.java) --------------------------------

// alpha = "A-Za-zŠŽšžŸÀ-ÖØ-öø-ž" + "Ѐ-ӿԀ-ԧꙀ-ꙮ꙾-ꚗᴀ-ᵿ"
bool is_alpha(char32_t c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == 0x160 || c == 0x17D || c == 0x161 || c == 0x17E ||
         c == 0x178 || (c >= 0xC0 && c <= 0xD6) || (c >= 0xD8 && c <= 0xF6) || (c >= 0xF8 && c <= 0x17E) ||
         (c >= 0x400 && c <= 0x4FF) || (c >= 0x500 && c <= 0x527) || (c >= 0xA640 && c <= 0xA66E) ||
         (c >= 0xA67E && c <= 0xA697) || (c >= 0x1D00 && c <= 0x1D7F);
}
bool is_digit(char32_t c) { return c >= '0' && c <= '9'; }  // \p{Digit} (ASCII without UNICODE_CHARACTER_CLASS)
bool is_alnum(char32_t c) { return is_digit(c) || is_alpha(c); }
bool is_java_space(char32_t c) { return c == ' ' || c == '\t' || c == '\n' || c == 0x0B || c == '\f' || c == '\r'; }
bool is_tokenizer_delim(char32_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; }
// r_white's class: the space and the Unicode spaces listed in Normalizer.java.
bool is_white(char32_t c) {
  return c == ' ' || c == 0xA0 || (c >= 0x2000 && c <= 0x200B) || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Java's Matcher.replaceAll for a three-character pattern (A)m(B): left to right, non-overlapping.
template <class A, class M, class B, class Emit>
std::u32string replace3(const std::u32string& s, A a, M m, B b, Emit emit) {
  std::u32string out;
  out.reserve(s.size() + 8);
  std::size_t i = 0;
  while (i < s.size()) {
    if (i + 2 < s.size() && a(s[i]) && m(s[i + 1]) && b(s[i + 2])) {
      emit(out, s[i], s[i + 1], s[i + 2]);
      i += 3;
    } else {
      out.push_back(s[i]);
      ++i;
    }
  }
  return out;
}

// String.replace(from, to): one left-to-right pass over non-overlapping occurrences.
std::u32string replace_all(const std::u32string& s, const std::u32string& from, const std::u32string& to) {
  std::u32string out;
  std::size_t start = 0;
  for (std::size_t hit; (hit = s.find(from, start)) != std::u32string::npos; start = hit + from.size()) {
    out.append(s, start, hit - start);
    out += to;
  }
  out.append(s, start, std::u32string::npos);
  return out;
}

const std::u32string kDotMulti = U"DOTMULTI";
const std::u32string kDotMultiDot = U"DOTMULTI.";
const std::u32string kDotDotMulti = U"DOTDOTMULTI";

// ---- Java String.hashCode (the aligner compares words and stems by hash) ----------------------------------

int32_t java_hash(const std::string& s) {
  uint32_t h = 0;
  for (char32_t c : to_u32(s)) {
    if (c >= 0x10000) {  // UTF-16 surrogate pair
      const char32_t v = c - 0x10000;
      h = 31 * h + static_cast<uint32_t>(0xD800 + (v >> 10));
      h = 31 * h + static_cast<uint32_t>(0xDC00 + (v & 0x3FF));
    } else {
      h = 31 * h + static_cast<uint32_t>(c);
    }
  }
  return static_cast<int32_t>(h);
}

std::vector<std::string> string_tokenize(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : line) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f') {
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

// ---- Aligner -----------------------------------------------------------------------------------------------

constexpr int kExact = 0;
constexpr int kStem = 1;
constexpr int kModules = 2;

struct Match {
  int start = 0;  // line 2 (reference)
  int length = 1;
  int match_start = 0;  // line 1 (hypothesis)
  int match_length = 1;
  int module = kExact;
};

// All matches here are one word to one word (exact, stem), so a line-2 word is used exactly when a match
// starts there; one int vector per path holds the match ids by line-2 position (-1: none) followed by the
// line-1 used flags. The search copies paths constantly: one allocation per copy.
struct PartialAlignment {
  std::vector<int32_t> state;  // [0, n2): match id or -1; [n2, n2 + n1): line-1 word used
  std::size_t n2 = 0;
  int match_count = 0;
  int matches1 = 0, matches2 = 0;  // Java ints: `+= length * weight` truncates, so 0.5-weight matches add 0
  int all_matches1 = 0, all_matches2 = 0;
  int chunks = 0;
  int idx = 0;
  int last_match_end = -1;
  int distance = 0;

  PartialAlignment(std::size_t line1, std::size_t line2) : state(line2 + line1, 0), n2(line2) {
    std::fill(state.begin(), state.begin() + static_cast<std::ptrdiff_t>(line2), -1);
  }
  int32_t match_at(std::size_t j) const { return state[j]; }
  bool line2_used(std::size_t j) const { return state[j] >= 0; }
  bool is_used(const Match& m) const {
    return line2_used(static_cast<std::size_t>(m.start)) || state[n2 + static_cast<std::size_t>(m.match_start)] != 0;
  }
  void take(int32_t id, const Match& m) {
    state[static_cast<std::size_t>(m.start)] = id;
    state[n2 + static_cast<std::size_t>(m.match_start)] = 1;
  }
};

// Constants.PARTIAL_COMPARE_TOTAL: more (weighted, truncated) matches, then fewer chunks, then less distance.
int compare_total(const PartialAlignment& x, const PartialAlignment& y) {
  const int match_diff = (y.matches1 + y.matches2) - (x.matches1 + x.matches2);
  if (match_diff > 0) return 1;
  if (match_diff < 0) return -1;
  const int chunk_diff = x.chunks - y.chunks;
  if (chunk_diff != 0) return chunk_diff;
  return x.distance - y.distance;
}

void add_match_stats(PartialAlignment& p, const Match& m, const double* search_weights) {
  p.match_count++;
  // Java: `path.matches1 += m.matchLength * moduleWeights.get(m.module);` on an int field.
  p.matches1 = static_cast<int>(p.matches1 + m.match_length * search_weights[m.module]);
  p.matches2 = static_cast<int>(p.matches2 + m.length * search_weights[m.module]);
  p.all_matches1 += m.match_length;
  p.all_matches2 += m.length;
}

// Aligner.resolve(): left-to-right beam search over line-2 positions. `table` holds every candidate match,
// `by_start[j]` the ids of those starting at line-2 position j, in the matchers' order.
PartialAlignment resolve(const std::vector<Match>& table, const std::vector<std::vector<int32_t>>& by_start,
                         PartialAlignment start, int beam_size, const double* search_weights) {
  const auto comparator = [](const PartialAlignment& x, const PartialAlignment& y) { return compare_total(x, y) < 0; };
  std::vector<PartialAlignment> paths;
  std::vector<PartialAlignment> next_paths;
  next_paths.push_back(std::move(start));
  const int n = static_cast<int>(by_start.size());
  for (int current = 0; current <= n; ++current) {
    paths = std::move(next_paths);
    next_paths.clear();
    std::stable_sort(paths.begin(), paths.end(), comparator);  // Collections.sort is stable
    const int ranks = std::min(beam_size, static_cast<int>(paths.size()));
    for (int rank = 0; rank < ranks; ++rank) {
      PartialAlignment& path = paths[static_cast<std::size_t>(rank)];
      if (current == n) {  // complete: close the last chunk
        if (path.last_match_end != -1) path.chunks++;
        next_paths.push_back(std::move(path));
        continue;
      }
      if (path.line2_used(static_cast<std::size_t>(current))) {
        if (current < path.idx) {
          next_paths.push_back(std::move(path));
        } else if (path.match_at(static_cast<std::size_t>(path.idx)) >= 0) {  // fixed match
          const Match& m = table[static_cast<std::size_t>(path.match_at(static_cast<std::size_t>(path.idx)))];
          add_match_stats(path, m, search_weights);
          if (path.last_match_end != -1 && m.match_start != path.last_match_end) path.chunks++;
          path.idx = m.start + m.length;
          path.last_match_end = m.match_start + m.match_length;
          path.distance += std::abs(m.start - m.match_start);
          next_paths.push_back(std::move(path));
        }
        continue;
      }
      for (const int32_t id : by_start[static_cast<std::size_t>(current)]) {
        const Match& m = table[static_cast<std::size_t>(id)];
        if (path.is_used(m)) continue;
        PartialAlignment np = path;
        np.take(id, m);
        add_match_stats(np, m, search_weights);
        if (np.last_match_end != -1 && m.match_start != np.last_match_end) np.chunks++;
        np.idx = m.start + m.length;
        np.last_match_end = m.match_start + m.match_length;
        // METEOR 1.5 adds the distance to the path being extended, not to the new one; kept as is.
        path.distance += std::abs(m.start - m.match_start);
        next_paths.push_back(std::move(np));
      }
      // Try skipping this index.
      if (path.last_match_end != -1) {
        path.chunks++;
        path.last_match_end = -1;
      }
      path.idx++;
      next_paths.push_back(std::move(path));
    }
    // Only reached when no path was pushed, hence none moved from.
    if (next_paths.empty()) next_paths.push_back(paths.front());
  }
  std::stable_sort(next_paths.begin(), next_paths.end(), comparator);
  return std::move(next_paths.front());
}

// Aligner.getCountAndChunks(): chunks of the final alignment.
int count_chunks(const std::vector<const Match*>& matches) {
  int chunks = 0;
  std::size_t idx = 0;
  int last_match_end = -1;
  while (idx < matches.size()) {
    const Match* m = matches[idx];
    if (m == nullptr) {
      if (last_match_end != -1) {
        chunks++;
        last_match_end = -1;
      }
      idx++;
    } else {
      if (last_match_end != -1 && m->match_start != last_match_end) chunks++;
      idx = static_cast<std::size_t>(m->start + m->length);
      last_match_end = m->match_start + m->match_length;
    }
  }
  if (last_match_end != -1) chunks++;
  return chunks;
}

MeteorStats align_words(const std::vector<std::string>& words1, const std::vector<std::string>& words2,
                        const MeteorOptions& opt) {
  const std::size_t n1 = words1.size(), n2 = words2.size();
  std::vector<int32_t> keys1(n1), keys2(n2);
  for (std::size_t i = 0; i < n1; ++i) keys1[i] = java_hash(words1[i]);
  for (std::size_t j = 0; j < n2; ++j) keys2[j] = java_hash(words2[j]);

  // Stage: all candidate matches, by line-2 start, with coverage counts.
  std::vector<Match> table;
  std::vector<std::vector<int32_t>> by_start(n2);
  std::vector<int> cover1(n1, 0), cover2(n2, 0);
  const bool identical = keys1 == keys2;  // then only the exact module runs
  auto add = [&](int module, std::size_t i, std::size_t j) {
    Match m;
    m.start = static_cast<int>(j);
    m.match_start = static_cast<int>(i);
    m.module = module;
    by_start[j].push_back(static_cast<int32_t>(table.size()));
    table.push_back(m);
    cover1[i]++;
    cover2[j]++;
  };
  for (std::size_t j = 0; j < n2; ++j) {
    for (std::size_t i = 0; i < n1; ++i) {
      if (keys1[i] == keys2[j]) add(kExact, i, j);
    }
  }
  if (opt.stem && !identical) {
    std::vector<int32_t> stems1(n1), stems2(n2);
    for (std::size_t i = 0; i < n1; ++i) stems1[i] = java_hash(snowball_english_stem(words1[i]));
    for (std::size_t j = 0; j < n2; ++j) stems2[j] = java_hash(snowball_english_stem(words2[j]));
    for (std::size_t j = 0; j < n2; ++j) {
      for (std::size_t i = 0; i < n1; ++i) {
        // Match for DIFFERENT words with SAME stems.
        if (stems1[i] == stems2[j] && keys1[i] != keys2[j]) add(kStem, i, j);
      }
    }
  }

  PartialAlignment initial(n1, n2);
  // One-to-one, non-overlapping matches are definite.
  for (std::size_t j = 0; j < n2; ++j) {
    if (by_start[j].size() != 1) continue;
    const int32_t id = by_start[j][0];
    const Match& m = table[static_cast<std::size_t>(id)];
    const bool overlap = cover2[j] != 1 || cover1[static_cast<std::size_t>(m.match_start)] != 1;
    if (!overlap) initial.take(id, m);
  }
  // The search ranks alignments with METEOR's "best alignments for evaluation" weights: exact 1.0,
  // every other module 0.5 (MeteorScorer.loadConfiguration), not the scoring weights.
  const double search_weights[kModules] = {1.0, 0.5};
  const PartialAlignment best = resolve(table, by_start, std::move(initial), opt.beam_size, search_weights);
  std::vector<const Match*> best_matches(n2, nullptr);
  for (std::size_t j = 0; j < n2; ++j) {
    if (best.match_at(j) >= 0) best_matches[j] = &table[static_cast<std::size_t>(best.match_at(j))];
  }

  std::vector<bool> function1(n1, false), function2(n2, false);
  MeteorStats st;
  st.test_length = static_cast<double>(n1);
  st.reference_length = static_cast<double>(n2);
  for (std::size_t i = 0; i < n1; ++i) {
    function1[i] = opt.function_words.count(words1[i]) > 0;
    st.test_function_words += function1[i] ? 1 : 0;
  }
  for (std::size_t j = 0; j < n2; ++j) {
    function2[j] = opt.function_words.count(words2[j]) > 0;
    st.reference_function_words += function2[j] ? 1 : 0;
  }
  for (const Match* m : best_matches) {
    if (m == nullptr) continue;
    const auto mod = static_cast<std::size_t>(m->module);
    for (int k = 0; k < m->match_length; ++k) {
      (function1[static_cast<std::size_t>(m->match_start + k)] ? st.test_function : st.test_content)[mod] += 1;
    }
    for (int k = 0; k < m->length; ++k) {
      (function2[static_cast<std::size_t>(m->start + k)] ? st.reference_function : st.reference_content)[mod] += 1;
    }
  }
  st.chunks = count_chunks(best_matches);
  for (int mod = 0; mod < kModules; ++mod) {
    const auto k = static_cast<std::size_t>(mod);
    st.test_word_matches += st.test_content[k] + st.test_function[k];
    st.reference_word_matches += st.reference_content[k] + st.reference_function[k];
  }
  return st;
}

// Python's str.replace(old, new): one left-to-right pass.
std::string py_replace(const std::string& s, const std::string& from, const std::string& to) {
  std::string out;
  std::size_t start = 0;
  for (std::size_t hit; (hit = s.find(from, start)) != std::string::npos; start = hit + from.size()) {
    out.append(s, start, hit - start);
    out += to;
  }
  out.append(s, start, std::string::npos);
  return out;
}

double total_matches(const std::array<double, 2>& content, const std::array<double, 2>& function) {
  return content[0] + function[0] + content[1] + function[1];
}

}  // namespace

void MeteorStats::add(const MeteorStats& o) {
  test_length += o.test_length;
  reference_length += o.reference_length;
  test_function_words += o.test_function_words;
  reference_function_words += o.reference_function_words;
  for (std::size_t k = 0; k < 2; ++k) {
    test_content[k] += o.test_content[k];
    reference_content[k] += o.reference_content[k];
    test_function[k] += o.test_function[k];
    reference_function[k] += o.reference_function[k];
  }
  chunks += o.chunks;
  test_word_matches += o.test_word_matches;
  reference_word_matches += o.reference_word_matches;
}

std::string meteor_normalize(const std::string& line) {
  std::u32string s = U" " + to_u32(line) + U" ";

  // Separate all non-alphanumeric characters that aren't special cases.
  {
    std::u32string out;
    out.reserve(s.size() + 16);
    for (char32_t c : s) {
      const bool special = is_alnum(c) || is_java_space(c) || c == '.' || c == '\'' || c == '`' || c == ',' ||
                           c == '-' || c == 0x2018 || c == 0x2019;
      if (special) {
        out.push_back(c);
      } else {
        out += U" ";
        out.push_back(c);
        out += U" ";
      }
    }
    s = std::move(out);
  }

  // Escape multiple dots: r_multi_dot "\.([\.]+)" -> " DOTMULTI$1", then the DOTMULTI loop.
  {
    std::u32string out;
    std::size_t i = 0;
    while (i < s.size()) {
      if (s[i] == '.' && i + 1 < s.size() && s[i + 1] == '.') {
        std::size_t j = i + 1;
        while (j < s.size() && s[j] == '.') ++j;
        out += U" DOTMULTI";
        out.append(s, i + 1, j - (i + 1));
        i = j;
      } else {
        out.push_back(s[i]);
        ++i;
      }
    }
    s = std::move(out);
    while (s.find(kDotMultiDot) != std::u32string::npos) {
      // r_multi_dot2 "DOTMULTI\.([^\.])" -> "DOTDOTMULTI $1"
      std::u32string o2;
      std::size_t k = 0;
      while (k < s.size()) {
        if (s.compare(k, kDotMultiDot.size(), kDotMultiDot) == 0 && k + kDotMultiDot.size() < s.size() &&
            s[k + kDotMultiDot.size()] != '.') {
          o2 += U"DOTDOTMULTI ";
          o2.push_back(s[k + kDotMultiDot.size()]);
          k += kDotMultiDot.size() + 1;
        } else {
          o2.push_back(s[k]);
          ++k;
        }
      }
      s = replace_all(o2, kDotMultiDot, kDotDotMulti);
    }
  }

  // Separate commas except within numbers.
  auto not_digit = [](char32_t c) { return !is_digit(c); };
  auto comma = [](char32_t c) { return c == ','; };
  auto sep_comma = [](std::u32string& out, char32_t a, char32_t, char32_t b) {
    out.push_back(a);
    out += U" , ";
    out.push_back(b);
  };
  s = replace3(s, not_digit, comma, not_digit, sep_comma);
  s = replace3(s, is_digit, comma, not_digit, sep_comma);
  s = replace3(s, not_digit, comma, is_digit, sep_comma);

  // Normalise quotes.
  for (char32_t& c : s) {
    if (c == '`' || c == 0x2018 || c == 0x2019) c = '\'';
  }
  {
    std::u32string out;
    std::size_t i = 0;
    while (i < s.size()) {
      if (s[i] == 0x201C || s[i] == 0x201D) {
        out += U" \" ";
        ++i;
      } else if (s[i] == '\'' && i + 1 < s.size() && s[i + 1] == '\'') {
        out += U" \" ";
        i += 2;
      } else {
        out.push_back(s[i]);
        ++i;
      }
    }
    s = std::move(out);
  }

  // Normalise dashes, then remove dashes between words.
  s = replace_all(s, U"\u2013", U"-");
  s = replace_all(s, U"--", U"-");
  s = replace3(
      s, [](char32_t c) { return is_alnum(c) || c == '.'; }, [](char32_t c) { return c == '-'; }, is_alnum,
      [](std::u32string& out, char32_t a, char32_t, char32_t b) {
        out.push_back(a);
        out.push_back(' ');
        out.push_back(b);
      });

  // English splits contractions right.
  auto apos = [](char32_t c) { return c == '\''; };
  auto not_alpha = [](char32_t c) { return !is_alpha(c); };
  auto spaced = [](std::u32string& out, char32_t a, char32_t, char32_t b) {
    out.push_back(a);
    out += U" ' ";
    out.push_back(b);
  };
  auto attached = [](std::u32string& out, char32_t a, char32_t, char32_t b) {
    out.push_back(a);
    out += U" '";
    out.push_back(b);
  };
  s = replace3(s, not_alpha, apos, not_alpha, spaced);
  s = replace3(
      s, [](char32_t c) { return !is_alpha(c) && !is_digit(c); }, apos, is_alpha, spaced);
  s = replace3(s, is_alpha, apos, not_alpha, spaced);
  s = replace3(s, is_alpha, apos, is_alpha, attached);
  s = replace3(
      s, is_digit, apos, [](char32_t c) { return c == 's'; }, attached);

  // Split words, dots still attached; rebuild, breaking a final dot unless the word is nonbreaking. No
  // non-breaking-prefix list here (Meteor loads nonbreaking/english.prefixes): only its "followed by a
  // lowercase word" rule and the U.S.-style dot removal apply.
  std::vector<std::u32string> words;
  {
    std::u32string cur;
    for (char32_t c : s) {
      if (is_tokenizer_delim(c)) {
        if (!cur.empty()) words.push_back(std::move(cur));
        cur.clear();
      } else {
        cur.push_back(c);
      }
    }
    if (!cur.empty()) words.push_back(std::move(cur));
  }
  std::u32string rebuilt;
  for (std::size_t i = 0; i < words.size(); ++i) {
    const std::u32string& w = words[i];
    if (w.size() > 1 && w.back() == '.') {
      const std::u32string pre = w.substr(0, w.size() - 1);
      const bool mixed = pre.find(U'.') != std::u32string::npos &&
                         std::any_of(pre.begin(), pre.end(), [](char32_t c) { return is_alpha(c); });
      if (mixed) {
        for (char32_t c : w) {
          if (c != '.') rebuilt.push_back(c);
        }
      } else if (i + 1 < words.size() && words[i + 1][0] >= 'a' && words[i + 1][0] <= 'z') {
        rebuilt += w;
      } else {
        rebuilt += pre;
        rebuilt += U" .";
      }
    } else {
      rebuilt += w;
    }
    rebuilt.push_back(' ');
  }
  s = std::move(rebuilt);

  // Unescape multiple dots.
  while (s.find(kDotDotMulti) != std::u32string::npos) s = replace_all(s, kDotDotMulti, kDotMultiDot);
  s = replace_all(s, kDotMulti, U".");

  // Normalise whitespace, trim (Java's trim drops every char <= ' ' at both ends), lowercase.
  {
    std::u32string out;
    bool in_white = false;
    for (char32_t c : s) {
      if (is_white(c)) {
        if (!in_white) out.push_back(' ');
        in_white = true;
      } else {
        out.push_back(c);
        in_white = false;
      }
    }
    std::size_t b = 0, e = out.size();
    while (b < e && out[b] <= ' ') ++b;
    while (e > b && out[e - 1] <= ' ') --e;
    s = out.substr(b, e - b);
  }
  for (char32_t& c : s) {
    if (c >= 'A' && c <= 'Z') c = c - 'A' + 'a';
  }
  return to_utf8(s);
}

MeteorStats meteor_stats(const std::string& hypothesis, const std::string& reference, const MeteorOptions& opt) {
  std::string test = hypothesis, ref = reference;
  if (opt.normalize) {
    test = meteor_normalize(test);
    ref = meteor_normalize(ref);
  }
  return align_words(string_tokenize(test), string_tokenize(ref), opt);
}

double meteor_score(const MeteorStats& st, const MeteorOptions& opt) {
  const double alpha = opt.alpha, beta = opt.beta, gamma = opt.gamma, delta = opt.delta;
  const double weights[kModules] = {opt.exact_weight, opt.stem_weight};
  const double test_weighted_length =
      (delta * (st.test_length - st.test_function_words)) + ((1.0 - delta) * (st.test_function_words));
  const double reference_weighted_length =
      (delta * (st.reference_length - st.reference_function_words)) + ((1.0 - delta) * (st.reference_function_words));
  double test_weighted_matches = 0, reference_weighted_matches = 0;
  for (std::size_t i = 0; i < kModules; ++i) test_weighted_matches += st.test_content[i] * weights[i] * delta;
  for (std::size_t i = 0; i < kModules; ++i) reference_weighted_matches += st.reference_content[i] * weights[i] * delta;
  for (std::size_t i = 0; i < kModules; ++i) test_weighted_matches += st.test_function[i] * weights[i] * (1.0 - delta);
  for (std::size_t i = 0; i < kModules; ++i)
    reference_weighted_matches += st.reference_function[i] * weights[i] * (1.0 - delta);

  const double precision = test_weighted_matches / test_weighted_length;
  const double recall = reference_weighted_matches / reference_weighted_length;
  const double f_mean = 1.0 / (((1.0 - alpha) / precision) + (alpha / recall));
  double frag;
  if (total_matches(st.test_content, st.test_function) == st.test_length &&
      total_matches(st.reference_content, st.reference_function) == st.reference_length && st.chunks == 1) {
    frag = 0;
  } else {
    frag = st.chunks / ((st.test_word_matches + st.reference_word_matches) / 2);
  }
  const double frag_penalty = gamma * std::pow(frag, beta);
  const double score = f_mean * (1.0 - frag_penalty);
  if (std::isnan(score)) return 0;
  return std::max(score, 0.0);
}

CorpusScore meteor(const std::vector<Example>& examples, const MeteorOptions& opt) {
  CorpusScore r;
  MeteorStats total;
  r.per_image.reserve(examples.size());
  for (const Example& ex : examples) {
    if (ex.references.empty()) throw std::invalid_argument("meteor: an example has no reference");
    // pycocoevalcap's Meteor._stat(): hypothesis_str.replace('|||', '').replace('  ', ' ').
    const std::string hypothesis = py_replace(py_replace(ex.hypothesis, "|||", ""), "  ", " ");
    // MeteorScorer.getMeteorStats(test, references): the first reference with the highest score.
    MeteorStats best;
    double best_score = -1;
    for (const std::string& ref : ex.references) {
      const MeteorStats st = meteor_stats(hypothesis, ref, opt);
      const double sc = meteor_score(st, opt);
      if (sc > best_score) {
        best = st;
        best_score = sc;
      }
    }
    r.per_image.push_back(best_score);
    total.add(best);
  }
  r.score = examples.empty() ? 0.0 : meteor_score(total, opt);
  return r;
}

std::unordered_set<std::string> read_word_list(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open word list " + path);
  std::unordered_set<std::string> words;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    words.insert(line);
  }
  return words;
}

}  // namespace cmn::metrics
