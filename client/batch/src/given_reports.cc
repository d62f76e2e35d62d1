// read_given_reports: cmn-generate --score-reports' JSONL of {"id", "report"} (issue 14 item 4).
#include <fstream>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "cmn/batch/batch.h"

namespace cmn::batch {

absl::StatusOr<std::map<std::string, std::string>> read_given_reports(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open reports file '", path, "'"));
  std::map<std::string, std::string> reports;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const auto where = [&] { return absl::StrCat("'", path, "' line ", line_no); };
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(absl::StrCat(where(), ": not a JSON object"));
    const auto id = j.find("id");
    const auto report = j.find("report");
    if (id == j.end() || !(id->is_string() || id->is_number_integer())) {
      return absl::InvalidArgumentError(absl::StrCat(where(), ": needs \"id\" (a string or an integer)"));
    }
    if (report == j.end() || !report->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(where(), ": needs \"report\" (a string)"));
    }
    const std::string key = id->is_string() ? id->get<std::string>() : std::to_string(id->get<int64_t>());
    if (!reports.emplace(key, report->get<std::string>()).second) {
      return absl::InvalidArgumentError(absl::StrCat(where(), ": id listed twice"));  // which one would be meant?
    }
  }
  return reports;
}

}  // namespace cmn::batch
