#pragma once
// The image-report consistency of a draft (issue 14): the model's ITM probability that the text matches the
// study's images (cmn/model/alignment.h), and the words every output (gRPC warnings, JSONL, DICOM SR, FHIR) uses
// for it, so a reader meets one phrasing wherever the draft goes. Header only: no LibTorch, no DCMTK.
#include <cstdio>
#include <optional>
#include <string>

namespace cmn::pipeline {

// The warning under the threshold: the words, kept verbatim in every output.
inline constexpr char kLowConsistencyWarning[] = "low image-text consistency: review first";

// True when a threshold is set (> 0) and the score is below it. No score (a model without the alignment head):
// never low, there is nothing to compare.
inline bool consistency_is_low(const std::optional<double>& consistency, double warn_below) {
  return consistency.has_value() && warn_below > 0 && *consistency < warn_below;
}

// "Image-report consistency 0.873 (the model's probability that this draft matches the images)", then
// "; low image-text consistency: review first" when low. Three decimals: finer is noise, coarser hides a rank.
inline std::string consistency_statement(double consistency, double warn_below) {
  char value[32];
  std::snprintf(value, sizeof value, "%.3f", consistency);
  std::string s = std::string("Image-report consistency ") + value +
                  " (the model's probability that this draft matches the images)";
  if (consistency_is_low(consistency, warn_below)) s += std::string("; ") + kLowConsistencyWarning;
  return s;
}

}  // namespace cmn::pipeline
