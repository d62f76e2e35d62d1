// METEOR 1.5's -norm English normaliser (util.Normalizer), ported over code points: UTF-8 <-> code points,
// the Java regex character classes it uses, and meteor_normalize.
#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "cmn/metrics/metrics.h"
#include "meteor_internal.h"

namespace cmn::metrics {
namespace meteor_detail {

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

}  // namespace meteor_detail

namespace {

using meteor_detail::to_u32;

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

}  // namespace

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

}  // namespace cmn::metrics
