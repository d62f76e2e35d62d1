#pragma once
// What the files of cmn_batch share: reading a file whole, listing the files under folders, the key of an output
// line, and the clock.
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace cmn::batch::detail {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Files named, and every regular file under the folders named (recursively, sorted, hidden ones left out),
// each once (studies.cc).
std::vector<std::string> collect_files(const std::vector<std::string>& paths);

// The whole file (studies.cc).
absl::StatusOr<std::string> read_bytes(const std::string& path);

// A manifest's studies as listed (manifest.cc): ids in first-seen order, each with its paths in file order
// (rows with the same id merged), not yet resolved against the manifest's folder. `jsonl`: JSONL lines, else
// CSV with an "id,path" header. `name` prefixes errors ("name:line: ..."). No file system access, so the
// fuzz target (fuzz/manifest_fuzzer.cc) can run it on any bytes.
struct ManifestStudy {
  std::string id;
  std::vector<std::string> paths;
};
absl::StatusOr<std::vector<ManifestStudy>> parse_manifest(const std::string& text, bool jsonl,
                                                          const std::string& name);

// The study key of an output line: "id", else "study" (jsonl_output.cc).
std::optional<std::string> line_key(const nlohmann::json& j);

}  // namespace cmn::batch::detail
