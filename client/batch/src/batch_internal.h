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

// The study key of an output line: "id", else "study" (jsonl_output.cc).
std::optional<std::string> line_key(const nlohmann::json& j);

}  // namespace cmn::batch::detail
