#pragma once
// What the parts of the bundle code share (bundle.cc: reading and verifying; bundle_yaml.cc: model.yaml;
// bundle_checksum.cc: SHA-256 and SHA256SUMS; bundle_write.cc: writing, import, init). Private to cmn_pipeline.
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cmn/pipeline/bundle.h"

namespace cmn::pipeline::bundle_detail {

inline std::string path_in(const std::string& dir, const std::string& file) {
  return (std::filesystem::path(dir) / file).string();
}

// --- files (bundle.cc) -----------------------------------------------------------------------------------

absl::StatusOr<std::string> read_file_bytes(const std::string& path);
// durable_write.h with the error as a status.
absl::Status write_file_durably(const std::string& path, const std::string& bytes);
absl::Status fsync_dir(const std::string& dir);
// A weights/vocab file name from model.yaml or SHA256SUMS must stay inside the bundle.
bool is_plain_file_name(const std::string& name);

// --- SHA256SUMS (bundle_checksum.cc) ---------------------------------------------------------------------

struct ChecksumEntry {
  std::string hex;
  std::string file;
};

// sha256sum's output, one "<64 hex>  <name>" line per file; `where` names the file in errors.
absl::StatusOr<std::vector<ChecksumEntry>> parse_sha256sums(const std::string& text, const std::string& where);
// The SHA256SUMS text for `files` inside `dir`, in that order.
absl::StatusOr<std::string> sums_text(const std::string& dir, const std::vector<std::string>& files);

// --- model.yaml (bundle_yaml.cc) -------------------------------------------------------------------------

absl::StatusOr<BundleInfo> parse_model_yaml(const std::string& text, const std::string& file);
std::string emit_model_yaml(const BundleInfo& info);

}  // namespace cmn::pipeline::bundle_detail
