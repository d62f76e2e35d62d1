#pragma once
// Decoding settings of one request (no LibTorch: the server's scheduler carries them without torch).
#include <cstdint>
#include <optional>
#include <string>

#include "cmn/model/config.h"

namespace cmn::model {

// beam_size > 1 with kBeamSearch or kGreedy means beam search (as the reference). kBeamSearch with beam_size 1
// decodes greedily: the reference would sample there (its sample_next_word has no 'beam_search' branch), which
// we take to be an accident.
enum class DecodingMethod { kBeamSearch, kGreedy, kSample };

// R2GenCMN's --sample_method names: "beam_search", "greedy", "sample".
inline const char* method_name(DecodingMethod m) {
  switch (m) {
    case DecodingMethod::kGreedy: return "greedy";
    case DecodingMethod::kSample: return "sample";
    case DecodingMethod::kBeamSearch: break;
  }
  return "beam_search";
}
inline std::optional<DecodingMethod> parse_decoding_method(const std::string& name) {
  if (name == "beam_search") return DecodingMethod::kBeamSearch;
  if (name == "greedy") return DecodingMethod::kGreedy;
  if (name == "sample") return DecodingMethod::kSample;
  return std::nullopt;
}

struct DecodingOptions {
  DecodingMethod method = DecodingMethod::kBeamSearch;
  int64_t beam_size = 3;               // beams per study
  int64_t max_length = 60;             // steps at most (max_seq_length)
  double temperature = 1.0;            // divides log-probs before sampling / between beam steps
  bool block_trigrams = false;         // greedy/sample only: penalise repeated trigrams as the reference
  std::string length_penalty;          // beam: "" (none, the reference default), "wu_<a>" or "avg_<a>"
  bool early_stop = true;              // beam: stop once no live beam can beat the best finished one
  uint64_t seed = 0;                   // sample: per-request generator seed
};

// Decoding defaults from the R2GenCMN args.
DecodingOptions decoding_options_from(const ModelConfig& config);

}  // namespace cmn::model
