// parse_manifest: the CSV / JSONL text of a cmn-generate manifest -> ids and listed paths (batch_internal.h).
// Split from list_manifest_studies (studies.cc), which resolves the paths and walks folders, so that parsing
// alone can be fuzzed.
#include <algorithm>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "batch_internal.h"

namespace cmn::batch::detail {

absl::StatusOr<std::vector<ManifestStudy>> parse_manifest(const std::string& text, bool jsonl,
                                                          const std::string& name) {
  std::vector<std::string> order;                          // ids in first-seen order
  std::map<std::string, std::vector<std::string>> paths;   // id -> paths as listed
  std::istringstream in(text);
  std::string line;
  int64_t line_no = 0;
  int id_col = -1, path_col = -1;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    const std::string where = absl::StrCat(name, ":", line_no);
    std::string id;
    std::vector<std::string> listed;
    if (jsonl) {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception&) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": malformed line (not JSON)"));
      }
      if (!j.is_object() || !j.contains("id") || !(j["id"].is_string() || j["id"].is_number())) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": want {\"id\": ..., \"path\" or \"paths\": ...}"));
      }
      id = j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump();
      if (j.contains("path") && j["path"].is_string()) listed.push_back(j["path"].get<std::string>());
      if (j.contains("paths") && j["paths"].is_array()) {
        for (const auto& p : j["paths"]) {
          if (!p.is_string()) return absl::InvalidArgumentError(absl::StrCat(where, ": \"paths\" must hold strings"));
          listed.push_back(p.get<std::string>());
        }
      }
      if (listed.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": no \"path\" or \"paths\""));
    } else {
      // Plain CSV: comma-separated, no quoting (paths with commas need the JSONL form).
      std::vector<std::string> cells = absl::StrSplit(line, ',');
      for (auto& c : cells) c = std::string(absl::StripAsciiWhitespace(c));
      if (id_col < 0) {
        for (size_t i = 0; i < cells.size(); ++i) {
          if (cells[i] == "id") id_col = static_cast<int>(i);
          if (cells[i] == "path") path_col = static_cast<int>(i);
        }
        if (id_col < 0 || path_col < 0) {
          return absl::InvalidArgumentError(absl::StrCat(where, ": the CSV header must name columns 'id' and 'path'"));
        }
        continue;
      }
      if (static_cast<int>(cells.size()) <= std::max(id_col, path_col)) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": ", cells.size(), " columns, the header has more"));
      }
      id = cells[static_cast<size_t>(id_col)];
      listed.push_back(cells[static_cast<size_t>(path_col)]);
    }
    if (id.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": empty id"));
    if (!paths.count(id)) order.push_back(id);
    for (auto& p : listed) paths[id].push_back(std::move(p));
  }
  std::vector<ManifestStudy> out;
  out.reserve(order.size());
  for (auto& id : order) out.push_back({id, std::move(paths[id])});
  return out;

}

}  // namespace cmn::batch::detail
