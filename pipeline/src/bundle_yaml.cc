// model.yaml: its field table (read and emitted from the same visit()), and the checks on what was read
// beyond the types: names, weights format and dtype, views, modalities, image size, the model's own ranges.
#include "cmn/pipeline/bundle.h"

#include <c10/util/Exception.h>
#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"
#include "bundle_internal.h"
#include "cmn/common/config_reader.h"
#include "cmn/common/status_macros.h"
#include "cmn/model/config_fields.h"

namespace cmn::pipeline {
namespace {

// model.yaml's field table (cmn/common/config_reader.h); ModelConfig's own fields come from its table
// (cmn/model/config_fields.h). Reading, writing and the known keys all follow from it.
template <class V>
void visit(V& v, BundleInfo& b) {
  v("name", b.name, config::kRequired);
  v("version", b.version, config::kRequired);  // a YAML number is read as its text
  v("untrained", b.untrained, config::kRequired);
  v("intended_use", b.intended_use);
  v.section("architecture", [&](auto& s) { model::visit_architecture(s, b.config); }, config::kRequired);
  v.section("decoding", [&](auto& s) { model::visit_decoding(s, b.config); });
  v.section("preprocessing", [&](auto& s) {
    s("image_size", b.image.size);
    s("mean", b.image.mean);
    s("std", b.image.std);
    s("allowed_modalities", b.allowed_modalities);
  });
  v("weights", b.weights_file, config::kRequired);
  v("weights_format", b.weights_format, config::kRequired);
  v("weights_dtype", b.weights_dtype);
}

}  // namespace

namespace bundle_detail {

namespace {

// Offset of the first byte that is not part of well-formed UTF-8 (no overlongs, surrogates or code points
// above U+10FFFF), or npos.
size_t invalid_utf8_at(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    if (b < 0x80) {
      ++i;
      continue;
    } else if (b >= 0xc2 && b <= 0xdf) {
      n = 1, cp = b & 0x1fu;
    } else if (b >= 0xe0 && b <= 0xef) {
      n = 2, cp = b & 0x0fu;
    } else if (b >= 0xf0 && b <= 0xf4) {
      n = 3, cp = b & 0x07u;
    } else {
      return i;
    }
    if (s.size() - i <= n) return i;
    for (size_t k = 1; k <= n; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xc0) != 0x80) return i;
      cp = (cp << 6) | (c & 0x3fu);
    }
    if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff))) {
      return i;
    }
    i += n + 1;
  }
  return std::string::npos;
}

}  // namespace

absl::StatusOr<BundleInfo> parse_model_yaml(const std::string& text, const std::string& file) {
  // YAML is Unicode text. yaml-cpp reads other bytes as they are but its emitter writes U+FFFD for them, so
  // a Latin-1 name or weights file name changed silently between parse_model_yaml and emit_model_yaml
  // (found by fuzz/bundle_fuzzer.cc's round trip).
  if (const size_t at = invalid_utf8_at(text); at != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": not UTF-8 text (byte ", at, ")"));
  }
  CMN_ASSIGN_OR_RETURN(const YAML::Node root, config::parse_document(text, file));
  config::Section top(root, "", file);
  BundleInfo info;
  config::ReadVisitor reader(top, model::kBundleYaml);
  visit(reader, info);
  CMN_RETURN_IF_ERROR(reader.finish());

  const auto error = [&](const std::string& key, const std::string& what) { return top.error(key, what); };
  if (info.name.empty()) return error("name", "must not be empty");
  if (info.version.empty()) return error("version", "must not be empty");
  if (!is_plain_file_name(info.weights_file)) return error("weights", "must be a file name inside the bundle");
  if (info.weights_format != kWeightsFormatR2GenCMN) {
    return error("weights_format", absl::StrCat("'", info.weights_format, "' is not supported (only ",
                                                kWeightsFormatR2GenCMN, ")"));
  }
  if (info.weights_dtype != "float32" && info.weights_dtype != "float16") {
    return error("weights_dtype", absl::StrCat("must be float32 or float16, got '", info.weights_dtype, "'"));
  }
  const model::ModelConfig& c = info.config;
  // The view count decides the input tensor's shape: a bundle must say it rather than lean on a default.
  const YAML::Node& document = root;
  if (const YAML::Node views = document["architecture"]["views"]; !views.IsDefined() || views.IsNull()) {
    return error("architecture.views", "is required");
  }
  if (c.views < 1 || c.views > 4) return error("architecture.views", absl::StrCat("must be 1..4, got ", c.views));
  if (c.vocab_size < 0) return error("architecture.vocab_size", "must not be negative");
  if (info.allowed_modalities.empty()) {
    return error("preprocessing.allowed_modalities", "must be a non-empty list of modality codes");
  }
  for (const std::string& m : info.allowed_modalities) {
    if (m.empty()) return error("preprocessing.allowed_modalities", "entries must be modality codes such as CR");
  }
  // ResNet-101 downsamples by 32; below 32 pixels there is no patch grid left.
  if (info.image.size < 32 || info.image.size > 4096) {
    return error("preprocessing.image_size", absl::StrCat("must be 32..4096, got ", info.image.size));
  }
  for (float s : info.image.std) {
    if (!(s > 0.0f)) return error("preprocessing.std", "values must be positive");
  }

  // The model library's own range checks (heads divide d_model, sample_method known, ...) name the field.
  try {
    model::validate_model_config(c);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": ", e.msg()));
  }
  return info;
}

std::string emit_model_yaml(const BundleInfo& info) {
  BundleInfo copy = info;
  YAML::Emitter out;
  out << YAML::Comment(
      "cmn model bundle. After editing this file, refresh the checksums:\n"
      "  sha256sum model.yaml " + info.weights_file + " vocab.txt > SHA256SUMS");
  out << YAML::Newline;
  out << YAML::BeginMap;
  config::EmitVisitor emit(out, model::kBundleYaml);
  visit(emit, copy);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace bundle_detail
}  // namespace cmn::pipeline
