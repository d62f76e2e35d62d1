#pragma once
// Decoding settings of one request (no LibTorch: the server's scheduler carries them without torch).
#include <cstdint>
#include <string>

#include "cmn/model/config.h"

namespace cmn::model {

struct DecodingOptions {
  // beam_search | greedy | sample. beam_size > 1 with beam_search or greedy means beam search (as the
  // reference). beam_search with beam_size 1 decodes greedily: the reference would sample there (its
  // sample_next_word has no 'beam_search' branch), which we take to be an accident.
  std::string method = "beam_search";
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
