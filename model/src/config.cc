#include "cmn/model/config.h"

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <variant>

#include <c10/util/Exception.h>

#include "cmn/model/config_fields.h"

namespace cmn::model {
namespace {

// A scalar JSON value: the args file is one flat object, so nothing else is needed (nested values are
// skipped, since R2GenCMN args never nest but other tools may add lists).
using Scalar = std::variant<std::nullptr_t, bool, double, std::string>;

class FlatJsonParser {
 public:
  FlatJsonParser(const std::string& text, const std::string& source) : s_(text), source_(source) {}

  std::map<std::string, Scalar> parse_object() {
    std::map<std::string, Scalar> out;
    skip_ws();
    expect('{');
    skip_ws();
    if (peek() == '}') { ++i_; return out; }
    while (true) {
      skip_ws();
      std::string key = parse_string();
      skip_ws();
      expect(':');
      skip_ws();
      if (peek() == '[' || peek() == '{') {
        skip_nested();
      } else {
        out[key] = parse_scalar();
      }
      skip_ws();
      if (peek() == ',') { ++i_; continue; }
      expect('}');
      break;
    }
    skip_ws();
    TORCH_CHECK(i_ == s_.size(), source_, ": trailing characters after the JSON object at offset ", i_);
    return out;
  }

 private:
  char peek() const {
    TORCH_CHECK(i_ < s_.size(), source_, ": unexpected end of JSON");
    return s_[i_];
  }
  void expect(char c) {
    TORCH_CHECK(peek() == c, source_, ": expected '", c, "' at offset ", i_, " but found '", s_[i_], "'");
    ++i_;
  }
  void skip_ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  std::string parse_string() {
    expect('"');
    std::string out;
    while (peek() != '"') {
      char c = s_[i_++];
      if (c == '\\') {
        char e = peek();
        ++i_;
        switch (e) {
          case 'n': out += '\n'; break;
          case 't': out += '\t'; break;
          case 'r': out += '\r'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'u': {
            TORCH_CHECK(i_ + 4 <= s_.size(), source_, ": bad \\u escape");
            const unsigned code = std::stoul(s_.substr(i_, 4), nullptr, 16);
            i_ += 4;
            // Encode the BMP code point as UTF-8 (surrogate pairs are not expected in args files).
            if (code < 0x80) {
              out += static_cast<char>(code);
            } else if (code < 0x800) {
              out += static_cast<char>(0xC0 | (code >> 6));
              out += static_cast<char>(0x80 | (code & 0x3F));
            } else {
              out += static_cast<char>(0xE0 | (code >> 12));
              out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
              out += static_cast<char>(0x80 | (code & 0x3F));
            }
            break;
          }
          default: out += e;
        }
      } else {
        out += c;
      }
    }
    ++i_;
    return out;
  }
  Scalar parse_scalar() {
    const char c = peek();
    if (c == '"') return parse_string();
    if (s_.compare(i_, 4, "true") == 0) { i_ += 4; return true; }
    if (s_.compare(i_, 5, "false") == 0) { i_ += 5; return false; }
    if (s_.compare(i_, 4, "null") == 0) { i_ += 4; return nullptr; }
    const char* begin = s_.c_str() + i_;
    char* end = nullptr;
    const double v = std::strtod(begin, &end);
    TORCH_CHECK(end != begin, source_, ": cannot parse a JSON value at offset ", i_);
    i_ += static_cast<size_t>(end - begin);
    return v;
  }
  void skip_nested() {
    int depth = 0;
    do {
      const char c = peek();
      if (c == '"') { parse_string(); continue; }
      if (c == '[' || c == '{') ++depth;
      if (c == ']' || c == '}') --depth;
      ++i_;
    } while (depth > 0);
  }

  const std::string& s_;
  const std::string& source_;
  size_t i_ = 0;
};

void read_value(const std::map<std::string, Scalar>& m, const char* key, int64_t& out, const std::string& src) {
  auto it = m.find(key);
  if (it == m.end() || std::holds_alternative<std::nullptr_t>(it->second)) return;
  if (const bool* b = std::get_if<bool>(&it->second)) { out = *b ? 1 : 0; return; }
  const double* d = std::get_if<double>(&it->second);
  TORCH_CHECK(d != nullptr, src, ": key '", key, "' must be a number");
  TORCH_CHECK(*d == static_cast<double>(static_cast<int64_t>(*d)), src, ": key '", key, "' must be an integer, got ", *d);
  out = static_cast<int64_t>(*d);
}
void read_value(const std::map<std::string, Scalar>& m, const char* key, double& out, const std::string& src) {
  auto it = m.find(key);
  if (it == m.end() || std::holds_alternative<std::nullptr_t>(it->second)) return;
  const double* d = std::get_if<double>(&it->second);
  TORCH_CHECK(d != nullptr, src, ": key '", key, "' must be a number");
  out = *d;
}
void read_value(const std::map<std::string, Scalar>& m, const char* key, std::string& out, const std::string& src) {
  auto it = m.find(key);
  if (it == m.end() || std::holds_alternative<std::nullptr_t>(it->second)) return;
  const std::string* s = std::get_if<std::string>(&it->second);
  TORCH_CHECK(s != nullptr, src, ": key '", key, "' must be a string");
  out = *s;
}

// Visits ModelConfig's field table (config_fields.h) and reads the args JSON's value of each field.
struct ArgsReader {
  const std::map<std::string, Scalar>& values;
  const std::string& source;
  template <class T>
  void operator()(const char* key, T& field, unsigned formats) {
    if ((formats & kArgsJson) != 0) read_value(values, key, field, source);
  }
};

}  // namespace

void validate_model_config(const ModelConfig& c) {
  TORCH_CHECK(c.visual_extractor == "resnet101" || c.visual_extractor == "patch_stats", "visual_extractor '",
              c.visual_extractor, "' is not supported (resnet101, or patch_stats: see visual_extractor.h)");
  TORCH_CHECK(c.visual_extractor != "patch_stats" || c.d_vf == 64, "visual_extractor patch_stats gives d_vf = 64, got ",
              c.d_vf);
  TORCH_CHECK(c.use_bn == 0, "use_bn=", c.use_bn, " is not supported (the published models use 0)");
  TORCH_CHECK(c.group_size == 1, "group_size=", c.group_size, " (diverse beam search) is not supported");
  TORCH_CHECK(c.num_heads > 0 && c.d_model % c.num_heads == 0, "d_model (", c.d_model,
              ") must be a multiple of num_heads (", c.num_heads, ")");
  TORCH_CHECK(c.cmm_dim == c.d_model, "cmm_dim (", c.cmm_dim, ") must equal d_model (", c.d_model, ")");
  TORCH_CHECK(c.topk > 0 && c.topk <= c.cmm_size, "topk (", c.topk, ") must be in 1..cmm_size (", c.cmm_size, ")");
  TORCH_CHECK(c.views >= 0 && c.views <= 4, "views must be 1..4, got ", c.views);
  TORCH_CHECK(c.num_layers > 0 && c.d_ff > 0 && c.d_vf > 0, "num_layers, d_ff and d_vf must be positive");
  TORCH_CHECK(c.max_seq_length > 0, "max_seq_length must be positive, got ", c.max_seq_length);
  TORCH_CHECK(c.beam_size >= 1, "beam_size must be >= 1, got ", c.beam_size);
  TORCH_CHECK(c.sample_method == "beam_search" || c.sample_method == "greedy" || c.sample_method == "sample",
              "sample_method '", c.sample_method, "' is not one of beam_search, greedy, sample");
  TORCH_CHECK(c.align_queries >= 0, "align_queries must be >= 0 (0 = no alignment head), got ", c.align_queries);
  TORCH_CHECK(c.align_queries == 0 || (c.align_layers > 0 && c.align_dim > 0),
              "align_layers and align_dim must be positive with align_queries > 0, got ", c.align_layers, " and ",
              c.align_dim);
  TORCH_CHECK(c.align_index_size >= 0 && c.align_index_length >= 0 && (c.align_index_size == 0) == (c.align_index_length == 0),
              "align_index_size and align_index_length must both be 0 (no retrieval index) or both positive, got ",
              c.align_index_size, " and ", c.align_index_length);
  TORCH_CHECK(c.align_index_size == 0 || c.align_queries > 0, "a retrieval index (align_index_size ", c.align_index_size,
              ") needs the alignment head (align_queries > 0)");
}

ModelConfig parse_model_config(const std::string& text, const std::string& src) {
  FlatJsonParser parser(text, src);
  const auto m = parser.parse_object();
  ModelConfig c;
  ArgsReader reader{m, src};
  visit_model_config(reader, c);
  try {
    validate_model_config(c);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, src, ": ", e.msg());
  }
  return c;
}

ModelConfig read_model_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), "cannot open model args file '", path, "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_model_config(ss.str(), path);
}

}  // namespace cmn::model
