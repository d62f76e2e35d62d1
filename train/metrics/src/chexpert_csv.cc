#include "cmn/metrics/chexpert_csv.h"

#include <cmath>
#include <cstdlib>
#include <stdexcept>

namespace cmn::metrics {
namespace {

std::string quote_minimal(const std::string& field) {
  if (field.find_first_of(",\"\n\r") == std::string::npos) return field;
  std::string out = "\"";
  for (char c : field) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

bool record_is_blank(const std::vector<std::string>& r) { return r.size() == 1 && r[0].empty(); }

}  // namespace

std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted_field = false;  // the current field was quoted (a quoted "" is a field, not a blank line)
  std::size_t i = 0;
  std::size_t line = 1;
  auto end_record = [&] {
    row.push_back(field);
    if (!(record_is_blank(row) && !quoted_field)) rows.push_back(row);
    row.clear();
    field.clear();
    quoted_field = false;
  };
  // A UTF-8 byte order mark is not part of the first field.
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) i = 3;
  while (i < text.size()) {
    const char c = text[i];
    if (c == '"' && field.empty() && !quoted_field) {
      quoted_field = true;
      const std::size_t start_line = line;
      ++i;
      for (;;) {
        if (i >= text.size()) {
          throw std::invalid_argument("unterminated quoted field starting on line " + std::to_string(start_line));
        }
        if (text[i] == '"') {
          if (i + 1 < text.size() && text[i + 1] == '"') {
            field += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        if (text[i] == '\n') ++line;
        field += text[i++];
      }
      if (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
        throw std::invalid_argument("text after a closing quote on line " + std::to_string(line));
      }
      continue;
    }
    if (c == ',') {
      row.push_back(field);
      field.clear();
      quoted_field = false;
      ++i;
    } else if (c == '\n' || c == '\r') {
      end_record();
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      ++i;
      ++line;
    } else {
      field += c;
      ++i;
    }
  }
  if (!field.empty() || !row.empty() || quoted_field) end_record();
  return rows;
}

std::vector<std::string> read_reports_csv(const std::string& text) {
  std::vector<std::string> reports;
  const auto rows = parse_csv(text);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    if (rows[r].size() != 1) {
      throw std::invalid_argument("row " + std::to_string(r + 1) + " has " + std::to_string(rows[r].size()) +
                                  " fields, want one report per row (quote reports that hold a comma)");
    }
    reports.push_back(rows[r][0]);
  }
  return reports;
}

const char* mention_cell(Mention m) {
  switch (m) {
    case Mention::kPositive: return "1.0";
    case Mention::kNegative: return "0.0";
    case Mention::kUncertain: return "-1.0";
    case Mention::kBlank: return "";
  }
  return "";
}

std::string write_labeled_csv(const std::vector<std::string>& reports, const std::vector<ChexpertLabels>& labels) {
  if (reports.size() != labels.size()) {
    throw std::invalid_argument(std::to_string(reports.size()) + " reports but " + std::to_string(labels.size()) +
                                " label rows");
  }
  std::string out = "Reports";
  for (const auto& name : observation_names()) out += "," + quote_minimal(name);
  out += "\n";
  for (std::size_t r = 0; r < reports.size(); ++r) {
    out += quote_minimal(reports[r]);
    for (Mention m : labels[r]) out += std::string(",") + mention_cell(m);
    out += "\n";
  }
  return out;
}

std::vector<ChexpertLabels> read_labeled_csv(const std::string& text) {
  const auto rows = parse_csv(text);
  if (rows.empty()) throw std::invalid_argument("no header row");
  const auto& header = rows[0];
  if (header.size() != kNumObservations + 1) {
    throw std::invalid_argument("header has " + std::to_string(header.size()) + " columns, want Reports + the " +
                                std::to_string(kNumObservations) + " CheXpert observations");
  }
  for (int k = 0; k < kNumObservations; ++k) {
    if (header[static_cast<std::size_t>(k) + 1] != observation_names()[static_cast<std::size_t>(k)]) {
      throw std::invalid_argument("header column " + std::to_string(k + 2) + " is '" +
                                  header[static_cast<std::size_t>(k) + 1] + "', want '" +
                                  observation_names()[static_cast<std::size_t>(k)] + "'");
    }
  }
  std::vector<ChexpertLabels> out;
  for (std::size_t r = 1; r < rows.size(); ++r) {
    if (rows[r].size() != header.size()) {
      throw std::invalid_argument("row " + std::to_string(r + 1) + " has " + std::to_string(rows[r].size()) +
                                  " fields, want " + std::to_string(header.size()));
    }
    ChexpertLabels labels;
    for (int k = 0; k < kNumObservations; ++k) {
      const std::string& cell = rows[r][static_cast<std::size_t>(k) + 1];
      Mention m = Mention::kBlank;
      if (!cell.empty()) {
        char* end = nullptr;
        const double v = std::strtod(cell.c_str(), &end);
        if (end != cell.c_str() + cell.size() || !std::isfinite(v) || (v != 1.0 && v != 0.0 && v != -1.0)) {
          throw std::invalid_argument("row " + std::to_string(r + 1) + ", column '" +
                                      observation_names()[static_cast<std::size_t>(k)] + "': '" + cell +
                                      "' is not 1, 0, -1 or blank");
        }
        m = v == 1.0 ? Mention::kPositive : v == 0.0 ? Mention::kNegative : Mention::kUncertain;
      }
      labels[static_cast<std::size_t>(k)] = m;
    }
    out.push_back(labels);
  }
  return out;
}

}  // namespace cmn::metrics
