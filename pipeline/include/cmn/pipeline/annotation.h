#pragma once
// R2Gen's annotation.json: {"train": [{"id", "report", "image_path": [...]}, ...], "val": [...], "test": [...]}.
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cmn::pipeline {

struct AnnotationExample {
  std::string id;
  std::string report;
  std::vector<std::string> image_paths;  // relative to the dataset's image root
};

struct Annotation {
  std::vector<AnnotationExample> train, val, test;
};

// Errors name the file and the offending entry (missing "report", wrong type, malformed JSON).
absl::StatusOr<Annotation> read_annotation(const std::string& path);

}  // namespace cmn::pipeline
