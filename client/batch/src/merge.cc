// Merging shard outputs: every line once, and proof of completeness from each shard's key list (.keys.json).
#include <filesystem>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "batch_internal.h"
#include "cmn/batch/batch.h"
#include "cmn/common/file_util.h"
#include "cmn/common/status_macros.h"

namespace cmn::batch {

namespace fs = std::filesystem;

absl::StatusOr<MergeResult> merge_outputs(const std::vector<std::string>& inputs, const std::string& output,
                                          bool force) {
  MergeResult result;
  std::string merged;
  std::set<std::string> present, expected;
  std::map<int64_t, std::string> shard_files;  // index -> input
  int64_t shard_count = -1;
  bool have_keys = true;
  for (const auto& input : inputs) {
    CMN_ASSIGN_OR_RETURN(const std::string bytes, detail::read_bytes(input));
    // Lines, as scan_output reads them (a torn tail is noted and left out).
    size_t pos = 0;
    int64_t line_no = 0;
    while (pos < bytes.size()) {
      const size_t nl = bytes.find('\n', pos);
      ++line_no;
      const std::string line = bytes.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
      pos = nl == std::string::npos ? bytes.size() : nl + 1;
      if (absl::StripAsciiWhitespace(line).empty()) continue;
      nlohmann::json j;
      std::optional<std::string> key;
      try {
        j = nlohmann::json::parse(line);
        key = detail::line_key(j);
      } catch (const nlohmann::json::exception&) {
      }
      if (!key || nl == std::string::npos) {
        if (pos >= bytes.size()) {
          result.problems.push_back(absl::StrCat(input, ":", line_no, ": torn last line left out (rerun that shard)"));
          continue;
        }
        return absl::DataLossError(absl::StrCat(input, ":", line_no, ": not a study line (JSON with \"id\")"));
      }
      if (!present.insert(*key).second) {
        result.problems.push_back(absl::StrCat("duplicate study '", *key, "' (", input, ":", line_no, ")"));
        continue;
      }
      if (j.contains("error")) ++result.failed;
      ++result.lines;
      merged += line + "\n";
    }
    // The shard's key list, when it wrote one.
    const std::string keys_path = keys_file_for(input);
    if (!fs::exists(keys_path)) {
      have_keys = false;
      continue;
    }
    CMN_ASSIGN_OR_RETURN(const std::string keys_text, detail::read_bytes(keys_path));
    nlohmann::json k;
    try {
      k = nlohmann::json::parse(keys_text);
    } catch (const nlohmann::json::exception&) {
      return absl::DataLossError(absl::StrCat(keys_path, ": malformed"));
    }
    if (!k.is_object() || !k.contains("shard") || !k["shard"].is_string() || !k.contains("keys") || !k["keys"].is_array()) {
      return absl::DataLossError(absl::StrCat(keys_path, ": want {\"shard\": \"i/n\", \"keys\": [...]}"));
    }
    CMN_ASSIGN_OR_RETURN(const Shard shard, parse_shard(k["shard"].get<std::string>()));
    if (shard_count >= 0 && shard.count != shard_count) {
      result.problems.push_back(absl::StrCat(input, " is shard ", shard.text(), " but another input has n = ", shard_count));
    }
    shard_count = shard.count;
    if (!shard_files.emplace(shard.index, input).second) {
      result.problems.push_back(absl::StrCat("shard ", shard.text(), " given twice (", shard_files[shard.index], ", ", input, ")"));
    }
    for (const auto& key : k["keys"]) expected.insert(key.get<std::string>());
  }
  if (have_keys && shard_count > 0) {
    for (int64_t i = 0; i < shard_count; ++i) {
      if (!shard_files.count(i)) result.problems.push_back(absl::StrCat("shard ", i, "/", shard_count, " is missing"));
    }
  } else if (!have_keys) {
    result.problems.push_back("note: some inputs have no .keys.json: missing studies cannot be detected for them");
  }
  int64_t missing = 0;
  for (const auto& key : expected) {
    if (present.count(key)) continue;
    if (++missing <= 20) result.problems.push_back(absl::StrCat("missing study '", key, "'"));
  }
  if (missing > 20) result.problems.push_back(absl::StrCat("... ", missing - 20, " more missing studies"));
  result.ok = true;
  for (const auto& p : result.problems) {
    if (p.rfind("note:", 0) != 0 && p.find("torn last line") == std::string::npos) result.ok = false;
  }
  if (missing > 0) result.ok = false;
  if (result.ok || force) CMN_RETURN_IF_ERROR(write_file_atomically(output, merged));
  return result;
}

}  // namespace cmn::batch
