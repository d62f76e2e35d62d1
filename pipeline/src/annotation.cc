#include "cmn/pipeline/annotation.h"

#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace cmn::pipeline {
namespace {

absl::Status read_split(const nlohmann::json& root, const char* name, const std::string& path,
                        std::vector<AnnotationExample>& out) {
  if (!root.contains(name)) return absl::OkStatus();  // a split may be absent (e.g. no val)
  const auto& split = root.at(name);
  if (!split.is_array()) return absl::InvalidArgumentError(absl::StrCat(path, ": '", name, "' is not a list"));
  for (size_t i = 0; i < split.size(); ++i) {
    const auto& e = split[i];
    if (!e.is_object() || !e.contains("report") || !e.at("report").is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", name, "[", i, "] has no string 'report'"));
    }
    AnnotationExample ex;
    ex.report = e.at("report").get<std::string>();
    if (e.contains("id")) {
      // A string, or a number taken as written. Anything else is refused rather than dumped: dump() recurses
      // once per nesting level, and an id of a million nested lists overflowed the stack (fuzz/).
      const auto& id = e.at("id");
      if (!id.is_string() && !id.is_number()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": ", name, "[", i, "].id is not a string or number"));
      }
      ex.id = id.is_string() ? id.get<std::string>() : id.dump();
    }
    if (e.contains("image_path")) {
      const auto& paths = e.at("image_path");
      if (!paths.is_array()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": ", name, "[", i, "].image_path is not a list"));
      }
      for (const auto& p : paths) {
        if (!p.is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(path, ": ", name, "[", i, "].image_path has a non-string"));
        }
        ex.image_paths.push_back(p.get<std::string>());
      }
    }
    out.push_back(std::move(ex));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Annotation> read_annotation(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in.good()) return absl::NotFoundError(absl::StrCat("cannot open annotation file '", path, "'"));
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON: ", e.what()));
  }
  if (!root.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": top level is not an object"));
  Annotation a;
  for (auto [name, dest] : {std::pair{"train", &a.train}, std::pair{"val", &a.val}, std::pair{"test", &a.test}}) {
    if (auto s = read_split(root, name, path, *dest); !s.ok()) return s;
  }
  if (a.train.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no 'train' examples (the vocabulary is built from them)"));
  return a;
}

}  // namespace cmn::pipeline
