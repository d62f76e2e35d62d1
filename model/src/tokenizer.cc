// The R2GenCMN tokenizer (modules/tokenizers.py), reproduced so that vocabularies and ids match the Python
// reference exactly: a model trained there indexes its embedding with these ids, so one differing token
// shifts every id after it in the sorted vocabulary.
//
// Deliberately free of LibTorch and of any JSON library: the caller supplies the train reports.
#include "cmn/model/tokenizer.h"

#include <algorithm>
#include <fstream>
#include <stdexcept>
#include <string_view>

namespace cmn::model {
namespace {

// ---- Python str semantics on UTF-8 bytes -------------------------------------------------------------

// Decodes the code point starting at s[pos]; returns its byte length in *len. Malformed sequences decode
// as one byte with a value that is never whitespace, so stray bytes survive untouched (Python never sees
// them: it would have refused to decode the file).
char32_t decode_utf8(std::string_view s, size_t pos, size_t* len) {
  const auto b0 = static_cast<unsigned char>(s[pos]);
  auto cont = [&](size_t i) -> int {
    if (pos + i >= s.size()) return -1;
    const auto b = static_cast<unsigned char>(s[pos + i]);
    return (b & 0xC0) == 0x80 ? (b & 0x3F) : -1;
  };
  *len = 1;
  if (b0 < 0x80) return b0;
  int n = 0;
  char32_t cp = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 1;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 2;
    cp = b0 & 0x0F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 3;
    cp = b0 & 0x07;
  } else {
    return 0xFFFD;
  }
  for (int i = 1; i <= n; ++i) {
    const int c = cont(static_cast<size_t>(i));
    if (c < 0) return 0xFFFD;
    cp = (cp << 6) | static_cast<char32_t>(c);
  }
  // Overlong / surrogate / out-of-range forms are not valid UTF-8; treat the lead byte as opaque.
  if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF)) {
    return 0xFFFD;
  }
  *len = static_cast<size_t>(n) + 1;
  return cp;
}

// str.isspace() as used by str.strip() / str.split() with no arguments. Note it includes the ASCII
// information separators 0x1C..0x1F, which C's isspace() does not.
bool is_python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// str.strip()
std::string py_strip(std::string_view s) {
  size_t begin = s.size(), end = 0;
  for (size_t pos = 0, len = 0; pos < s.size(); pos += len) {
    if (!is_python_space(decode_utf8(s, pos, &len))) {
      if (begin == s.size()) begin = pos;
      end = pos + len;
    }
  }
  return begin < end ? std::string(s.substr(begin, end - begin)) : std::string();
}

// str.split() (no separator): runs of whitespace separate, no empty fields.
std::vector<std::string> py_split_whitespace(std::string_view s) {
  std::vector<std::string> out;
  size_t start = std::string_view::npos;
  size_t pos = 0, len = 0;
  for (; pos < s.size(); pos += len) {
    const bool space = is_python_space(decode_utf8(s, pos, &len));
    if (space && start != std::string_view::npos) {
      out.emplace_back(s.substr(start, pos - start));
      start = std::string_view::npos;
    } else if (!space && start == std::string_view::npos) {
      start = pos;
    }
  }
  if (start != std::string_view::npos) out.emplace_back(s.substr(start));
  return out;
}

// str.split(sep): keeps empty fields, always at least one.
std::vector<std::string> py_split(std::string_view s, std::string_view sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t hit; (hit = s.find(sep, start)) != std::string_view::npos; start = hit + sep.size()) {
    out.emplace_back(s.substr(start, hit - start));
  }
  out.emplace_back(s.substr(start));
  return out;
}

// str.replace(old, new): every non-overlapping occurrence, scanning left to right, in one pass. A single
// pass is why the reference chains '..' -> '.' several times: '....' becomes '..' after one call.
std::string py_replace(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t start = 0;
  for (size_t hit; (hit = s.find(from, start)) != std::string_view::npos; start = hit + from.size()) {
    out.append(s.substr(start, hit - start));
    out.append(to);
  }
  out.append(s.substr(start));
  return out;
}

// str.lower(), ASCII only. Report text is ASCII in both datasets; bytes >= 0x80 are copied unchanged so
// UTF-8 is never corrupted (Python would also lowercase e.g. 'É', which we do not).
std::string ascii_lower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

// The character class of re.sub('[.,?;*!%^&_+():-\[\]{}]', '', ...). The `:-\[` inside it is a RANGE
// ':'..'[' (0x3A..0x5B: ':;<=>?@', 'A'-'Z', '['), not three literals, so '-' itself is NOT removed.
bool is_removed_punct(unsigned char c) {
  if (c >= 0x3A && c <= 0x5B) return true;
  switch (c) {
    case '.': case ',': case '?': case ';': case '*': case '!': case '%': case '^': case '&': case '_':
    case '+': case '(': case ')': case ']': case '{': case '}':
      return true;
    default:
      return false;
  }
}

// sent_cleaner: the same for both datasets.
std::string clean_sentence(std::string_view sentence) {
  std::string t = py_replace(sentence, "\"", "");
  t = py_replace(t, "/", "");
  t = py_replace(t, "\\", "");
  t = py_replace(t, "'", "");
  t = ascii_lower(py_strip(t));
  // The strip happens before the punctuation removal, so a sentence like "( x" keeps a leading space;
  // the reference's cleaned text carries such doubled spaces through, and so do we.
  std::string out;
  out.reserve(t.size());
  for (char c : t) {
    if (!is_removed_punct(static_cast<unsigned char>(c))) out.push_back(c);
  }
  return out;
}

// The replace chain shared by both report_cleaners after their dataset-specific prefix.
std::string strip_enumeration(std::string t) {
  t = py_replace(t, "1. ", "");
  t = py_replace(t, ". 2. ", ". ");
  t = py_replace(t, ". 3. ", ". ");
  t = py_replace(t, ". 4. ", ". ");
  t = py_replace(t, ". 5. ", ". ");
  t = py_replace(t, " 2. ", ". ");
  t = py_replace(t, " 3. ", ". ");
  t = py_replace(t, " 4. ", ". ");
  t = py_replace(t, " 5. ", ". ");
  return t;
}

}  // namespace

CleaningRule cleaning_rule_for_dataset(const std::string& dataset_name) {
  return dataset_name == "iu_xray" ? CleaningRule::kIuXray : CleaningRule::kMimicCxr;
}

std::string clean_report(const std::string& report, CleaningRule rule) {
  std::string t = report;
  if (rule == CleaningRule::kIuXray) {
    for (int i = 0; i < 3; ++i) t = py_replace(t, "..", ".");
  } else {
    t = py_replace(t, "\n", " ");
    for (int i = 0; i < 7; ++i) t = py_replace(t, "__", "_");
    for (int i = 0; i < 6; ++i) t = py_replace(t, "  ", " ");
    for (int i = 0; i < 8; ++i) t = py_replace(t, "..", ".");
  }
  t = ascii_lower(py_strip(strip_enumeration(std::move(t))));

  // The reference filters with `sent_cleaner(sent) != []`, which is always true for a str: empty
  // sentences (e.g. from a trailing ". ") are kept and produce " .  ." in the output.
  std::string out;
  bool first = true;
  for (const std::string& sentence : py_split(t, ". ")) {
    if (!first) out += " . ";
    first = false;
    out += clean_sentence(sentence);
  }
  out += " .";
  return out;
}

Tokenizer Tokenizer::build(const std::vector<std::string>& train_reports, CleaningRule rule, int threshold) {
  // Counting order is irrelevant: the vocabulary is sorted afterwards.
  std::unordered_map<std::string, int64_t> counts;
  for (const std::string& report : train_reports) {
    for (std::string& token : py_split_whitespace(clean_report(report, rule))) ++counts[std::move(token)];
  }
  std::vector<std::string> vocab;
  for (auto& [token, count] : counts) {
    if (count >= threshold) vocab.push_back(token);
  }
  vocab.emplace_back("<unk>");
  // std::string's operator< compares bytes as unsigned char, which on UTF-8 is code-point order, i.e.
  // Python's sort of str.
  std::sort(vocab.begin(), vocab.end());

  Tokenizer tok;
  tok.rule_ = rule;
  tok.idx2token_ = std::move(vocab);
  // As in the reference, a later duplicate overwrites an earlier one in token2idx. Cleaning removes '<'
  // and '>', so "<unk>" cannot also come from the data; this just keeps the semantics identical.
  for (size_t i = 0; i < tok.idx2token_.size(); ++i) {
    tok.token2idx_[tok.idx2token_[i]] = static_cast<int64_t>(i) + 1;
  }
  return tok;
}

Tokenizer Tokenizer::from_vocab_file(const std::string& path, CleaningRule rule) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("tokenizer: cannot open vocab file " + path);
  Tokenizer tok;
  tok.rule_ = rule;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();  // tolerate CRLF; tokens never hold '\r'
    if (line.empty()) {
      // Tokens come from a whitespace split, so they are never empty; an empty line means a damaged file
      // and skipping it would silently shift every later id.
      throw std::runtime_error("tokenizer: empty line " + std::to_string(tok.idx2token_.size() + 1) + " in " +
                               path);
    }
    tok.idx2token_.push_back(line);
    if (!tok.token2idx_.emplace(line, static_cast<int64_t>(tok.idx2token_.size())).second) {
      throw std::runtime_error("tokenizer: duplicate token '" + line + "' in " + path);
    }
  }
  if (tok.token2idx_.find("<unk>") == tok.token2idx_.end()) {
    throw std::runtime_error("tokenizer: vocab file " + path + " has no <unk>");
  }
  return tok;
}

void Tokenizer::save_vocab_file(const std::string& path) const {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("tokenizer: cannot write vocab file " + path);
  for (const std::string& token : idx2token_) out << token << '\n';
  out.flush();
  if (!out) throw std::runtime_error("tokenizer: write failed for " + path);
}

int64_t Tokenizer::id_of(const std::string& token) const {
  auto it = token2idx_.find(token);
  if (it != token2idx_.end()) return it->second;
  it = token2idx_.find("<unk>");
  if (it == token2idx_.end()) throw std::logic_error("tokenizer: vocabulary has no <unk>");
  return it->second;
}

std::vector<int64_t> Tokenizer::encode(const std::string& report) const {
  std::vector<int64_t> ids{0};
  for (const std::string& token : py_split_whitespace(clean_report(report, rule_))) ids.push_back(id_of(token));
  ids.push_back(0);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  // Reference: a space before every token except the one at index 0, stop at the first id <= 0. Since
  // it stops at the first 0, an encode() result (which starts with 0) decodes to "".
  std::string txt;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t id = ids[i];
    if (id <= 0) break;
    if (id > vocab_size()) {
      // Python raises KeyError from idx2token here.
      throw std::out_of_range("tokenizer: id " + std::to_string(id) + " outside vocabulary of " +
                              std::to_string(vocab_size()));
    }
    if (i >= 1) txt += ' ';
    txt += idx2token_[static_cast<size_t>(id - 1)];
  }
  return txt;
}

std::vector<std::string> Tokenizer::words(const std::vector<int64_t>& ids) const {
  std::vector<std::string> out;
  for (int64_t id : ids) {
    if (id <= 0) break;
    out.push_back(id <= vocab_size() ? idx2token_[static_cast<size_t>(id - 1)] : "<unk>");
  }
  return out;
}

std::vector<std::string> split_sentences(const std::vector<std::string>& words) {
  std::vector<std::string> sentences;
  std::string current;
  for (const auto& w : words) {
    if (!current.empty()) current += ' ';
    current += w;
    if (w == ".") {
      sentences.push_back(std::move(current));
      current.clear();
    }
  }
  if (!current.empty()) sentences.push_back(std::move(current));
  return sentences;
}

}  // namespace cmn::model
