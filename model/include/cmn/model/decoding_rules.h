#pragma once
// The range checks of DecodingOptions and the length-penalty names, as plain functions (no LibTorch): the
// decoders throw on them (decoding.h, validate_decoding_options), the server's request checks and their fuzzer
// answer with a status (server/request_intake.h).
#include <optional>
#include <string>

#include "cmn/model/decoding_options.h"

namespace cmn::model {

// length_penalty, as utils.penalty_builder reads it: "" (none), "wu_<alpha>" (GNMT), "avg_<alpha>" (mean).
struct LengthPenalty {
  enum class Kind { kNone, kWu, kAvg };
  Kind kind = Kind::kNone;
  double alpha = 0.0;
};
// nullopt when `spec` is none of the three (length_penalty_problem says why).
std::optional<LengthPenalty> parse_length_penalty(const std::string& spec);
std::string length_penalty_problem(const std::string& spec);  // empty when it parses

// What is out of range in `options` ("beam_size must be >= 1, got 0"); empty when they can be decoded with.
std::string decoding_options_problem(const DecodingOptions& options);

}  // namespace cmn::model
