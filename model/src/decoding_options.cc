// Decoding settings without LibTorch (beyond c10's exception header): defaults from the R2GenCMN args
// (decoding_options.h), the range checks and length-penalty names (decoding_rules.h). The server's request
// checks (server/request_intake.cc) and the request fuzzer use the very code the decoders use.
#include "cmn/model/decoding_options.h"
#include "cmn/model/decoding_rules.h"

#include <c10/util/Exception.h>

#include <cerrno>
#include <cstdlib>
#include <sstream>

namespace cmn::model {

std::optional<LengthPenalty> parse_length_penalty(const std::string& spec) {
  if (spec.empty()) return LengthPenalty{};
  const auto sep = spec.find('_');
  if (sep == std::string::npos) return std::nullopt;
  const std::string type = spec.substr(0, sep);
  LengthPenalty penalty;
  if (type == "wu") {
    penalty.kind = LengthPenalty::Kind::kWu;
  } else if (type == "avg") {
    penalty.kind = LengthPenalty::Kind::kAvg;
  } else {
    return std::nullopt;
  }
  // std::stod's rules (leading spaces, a prefix that is a number), without its exceptions.
  const std::string number = spec.substr(sep + 1);
  const char* begin = number.c_str();
  char* end = nullptr;
  errno = 0;
  penalty.alpha = std::strtod(begin, &end);
  if (end == begin || errno == ERANGE) return std::nullopt;
  return penalty;
}

std::string length_penalty_problem(const std::string& spec) {
  if (parse_length_penalty(spec).has_value()) return "";
  const auto sep = spec.find('_');
  if (sep != std::string::npos) {
    const std::string type = spec.substr(0, sep);
    if (type == "wu" || type == "avg") return "length_penalty '" + spec + "': alpha is not a number";
  }
  return "length_penalty '" + spec + "' is not '', 'wu_<alpha>' or 'avg_<alpha>'";
}

std::string decoding_options_problem(const DecodingOptions& o) {
  std::ostringstream out;
  if (o.beam_size < 1) {
    out << "beam_size must be >= 1, got " << o.beam_size;
  } else if (o.max_length < 1) {
    out << "max_length must be >= 1, got " << o.max_length;
  } else if (!(o.temperature > 0.0)) {
    out << "temperature must be > 0, got " << o.temperature;
  } else {
    return length_penalty_problem(o.length_penalty);
  }
  return out.str();
}

DecodingOptions decoding_options_from(const ModelConfig& c) {
  DecodingOptions o;
  const auto method = parse_decoding_method(c.sample_method);
  TORCH_CHECK(method.has_value(), "sample_method '", c.sample_method, "' is not one of beam_search, greedy, sample");
  o.method = *method;
  o.beam_size = c.beam_size;
  o.max_length = c.max_seq_length;
  o.temperature = c.temperature;
  o.block_trigrams = c.block_trigrams != 0;
  o.length_penalty = c.length_penalty;
  o.seed = static_cast<uint64_t>(c.seed);
  return o;
}

}  // namespace cmn::model
