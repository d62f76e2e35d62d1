#pragma once
// The CheXpert labeler's phrase lists (internal to cmn_metrics; see chexpert_phrases.cc for their source).
#include <string>
#include <vector>

#include "cmn/metrics/chexpert.h"

namespace cmn::metrics::chexpert_detail {

struct ObservationPhrases {
  Observation observation;  // kNoFinding: the labeler's "No Finding" list (findings outside the 14)
  std::vector<std::string> mention;
  std::vector<std::string> unmention;
};

// In the labeler's mention order; phrases are plain lower-case substrings of a cleaned sentence.
const std::vector<ObservationPhrases>& phrase_table();

}  // namespace cmn::metrics::chexpert_detail
