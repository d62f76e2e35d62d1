#pragma once
// CSV in the shapes the CheXpert labeler reads and writes (pandas' read_csv / to_csv defaults), so cmn-label is
// a drop-in and cmn-eval reads the original labeler's files:
//   reports:  one report per row, no header; a report with a comma, quote or line break is quoted ("" inside);
//             blank lines are skipped (pandas' skip_blank_lines).
//   labeled:  header "Reports,No Finding,...,Support Devices", then per report the report as read and the 14
//             labels as 1.0 / 0.0 / -1.0 / blank. A field is quoted only when it holds ',', '"', '\n' or '\r'
//             (csv.QUOTE_MINIMAL); rows end in "\n".
// Errors throw std::invalid_argument with a message naming the row.
#include <string>
#include <vector>

#include "cmn/metrics/chexpert.h"

namespace cmn::metrics {

// RFC 4180 records of `text` (quoted fields may span lines; "\r\n" or "\n" ends a record). Empty records
// (blank lines) are dropped. Throws on an unterminated quote or text after a closing quote.
std::vector<std::vector<std::string>> parse_csv(const std::string& text);

// The reports of a labeler input file's text: one field per row.
std::vector<std::string> read_reports_csv(const std::string& text);

// The labeler's output file for these reports and labels (same length, else std::invalid_argument).
std::string write_labeled_csv(const std::vector<std::string>& reports, const std::vector<ChexpertLabels>& labels);

// The labels of a labeled file (a first column, then the 14 observation columns in CheXpert's order, as the
// labeler writes them). Cells: blank, or a number equal to 1, 0 or -1 ("1.0", "1", "-1.0", ...).
std::vector<ChexpertLabels> read_labeled_csv(const std::string& text);

// "1.0", "0.0", "-1.0" or "".
const char* mention_cell(Mention m);

}  // namespace cmn::metrics
