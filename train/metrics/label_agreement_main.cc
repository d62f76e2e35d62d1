// cmn-label-agreement: how cmn-label's labels of the IU X-Ray (OpenI) reports agree with NegBio's OpenI gold
// standard (radiologist-coded MeSH findings as ChestX-ray14 classes, examples/openi_gld_std14.csv).
//   cmn-label-agreement --reports indiana_reports.csv --gold openi_gld_std14.csv
//                       [--section findings|impression|both] [--uncertain zeros|ones] [--json]
// Joins indiana_reports.csv's uid to the gold file's "CXR<uid>", labels the chosen section(s) and prints, per
// CheXpert observation with a gold counterpart, agreement ((TP+TN)/n) and precision / recall / F1 of the
// positive class. The class mapping (gold -> CheXpert) is printed with the table; loose ones are marked.
// Exit 2 and one line on stderr on bad input.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cmn/common/cli.h"
#include "cmn/metrics/chexpert.h"
#include "cmn/metrics/chexpert_ce.h"
#include "cmn/metrics/chexpert_csv.h"

namespace {

using cmn::metrics::Observation;

struct Mapping {
  Observation observation;
  std::vector<std::string> gold;  // gold columns whose OR is the observation
  const char* note;               // "" exact, else why it is loose
};

const std::vector<Mapping>& mappings() {
  static const std::vector<Mapping> m = {
      {Observation::kNoFinding, {"normal"}, "loose: MeSH 'normal' means no tag at all; CheXpert allows e.g. granuloma"},
      {Observation::kCardiomegaly, {"Cardiomegaly"}, ""},
      {Observation::kLungLesion, {"Mass", "Nodule"}, ""},
      {Observation::kLungOpacity, {"Infiltration"}, "loose: Opacity tags are not in the gold classes"},
      {Observation::kEdema, {"Edema"}, ""},
      {Observation::kConsolidation, {"Consolidation"}, ""},
      {Observation::kPneumonia, {"Pneumonia"}, ""},
      {Observation::kAtelectasis, {"Atelectasis"}, ""},
      {Observation::kPneumothorax, {"Pneumothorax"}, ""},
      {Observation::kPleuralEffusion, {"Effusion"}, ""},
      {Observation::kPleuralOther, {"Pleural_Thickening", "Fibrosis"}, "loose: Fibrosis is mostly pulmonary"},
  };
  return m;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::map<std::string, std::size_t> columns(const std::vector<std::string>& header) {
  std::map<std::string, std::size_t> c;
  for (std::size_t i = 0; i < header.size(); ++i) c[header[i]] = i;
  return c;
}

std::size_t need(const std::map<std::string, std::size_t>& c, const std::string& name, const std::string& file) {
  auto it = c.find(name);
  if (it == c.end()) throw std::runtime_error(file + ": no column '" + name + "'");
  return it->second;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cmn-label-agreement: cmn-label vs NegBio's OpenI gold standard, per observation",
               "cmn-label-agreement"};
  std::string reports_path, gold_path, section = "both", uncertain = "zeros";
  bool json = false;
  app.add_option("--reports", reports_path, "indiana_reports.csv (uid, ..., findings, impression)")->required();
  app.add_option("--gold", gold_path, "openi_gld_std14.csv (filename = CXR<uid>, 0/1 columns)")->required();
  app.add_option("--section", section, "report text to label")
      ->check(CLI::IsMember({"findings", "impression", "both"}))
      ->capture_default_str();
  app.add_option("--uncertain", uncertain, "uncertain labels count as: zeros (negative) or ones (positive)")
      ->check(CLI::IsMember({"zeros", "ones"}))
      ->capture_default_str();
  app.add_flag("--json", json, "one JSON object instead of a markdown table");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::cerr << "cmn-label-agreement: " << cmn::one_line(e.what()) << " (run with --help for usage)\n";
    return 2;
  }
  try {
    const auto policy = cmn::metrics::parse_uncertain_policy(uncertain);
    const auto reports = cmn::metrics::parse_csv(read_file(reports_path));
    const auto gold = cmn::metrics::parse_csv(read_file(gold_path));
    if (reports.empty() || gold.empty()) throw std::runtime_error("empty input file");
    const auto rc = columns(reports[0]);
    const auto gc = columns(gold[0]);
    const std::size_t uid = need(rc, "uid", reports_path), fi = need(rc, "findings", reports_path),
                      im = need(rc, "impression", reports_path), fname = need(gc, "filename", gold_path);
    std::map<std::string, const std::vector<std::string>*> gold_by_uid;
    for (std::size_t r = 1; r < gold.size(); ++r) {
      if (gold[r].size() != gold[0].size()) throw std::runtime_error(gold_path + ": row " + std::to_string(r + 1) + " has the wrong field count");
      gold_by_uid[gold[r][fname]] = &gold[r];
    }
    struct Counts {
      int64_t tp = 0, fp = 0, fn = 0, tn = 0;
    };
    std::vector<Counts> counts(mappings().size());
    int64_t joined = 0, empty = 0, unmatched = 0;
    for (std::size_t r = 1; r < reports.size(); ++r) {
      const auto& row = reports[r];
      if (row.size() != reports[0].size()) throw std::runtime_error(reports_path + ": row " + std::to_string(r + 1) + " has the wrong field count");
      auto g = gold_by_uid.find("CXR" + row[uid]);
      if (g == gold_by_uid.end()) {
        ++unmatched;
        continue;
      }
      std::string text = section == "findings" ? row[fi] : section == "impression" ? row[im] : row[fi] + " " + row[im];
      if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
        ++empty;
        continue;
      }
      ++joined;
      const auto labels = cmn::metrics::chexpert_label(text);
      for (std::size_t m = 0; m < mappings().size(); ++m) {
        bool truth = false;
        for (const auto& col : mappings()[m].gold) truth = truth || (*g->second)[need(gc, col, gold_path)] == "1";
        const bool pred = cmn::metrics::binary_label(labels[static_cast<std::size_t>(mappings()[m].observation)], policy);
        counts[m].tp += truth && pred;
        counts[m].fp += !truth && pred;
        counts[m].fn += truth && !pred;
        counts[m].tn += !truth && !pred;
      }
    }
    if (joined == 0) throw std::runtime_error("no report joined the gold standard (uid -> CXR<uid>)");
    auto ratio = [](int64_t a, int64_t b) { return b == 0 ? 0.0 : static_cast<double>(a) / static_cast<double>(b); };
    nlohmann::ordered_json out;
    out["reports"] = joined;
    out["section"] = section;
    out["uncertain"] = cmn::metrics::uncertain_policy_description(policy);
    out["skipped_empty"] = empty;
    out["skipped_not_in_gold"] = unmatched;
    out["observations"] = nlohmann::ordered_json::array();
    if (!json) {
      std::printf("cmn-label vs OpenI gold standard: %lld reports (%s), %s\n\n", static_cast<long long>(joined),
                  section.c_str(), cmn::metrics::uncertain_policy_description(policy));
      std::printf("| observation | gold class(es) | gold pos | cmn pos | agreement | precision | recall | F1 |\n");
      std::printf("|---|---|---:|---:|---:|---:|---:|---:|\n");
    }
    for (std::size_t m = 0; m < mappings().size(); ++m) {
      const Counts& c = counts[m];
      const double p = ratio(c.tp, c.tp + c.fp), rcl = ratio(c.tp, c.tp + c.fn);
      const double f1 = p + rcl == 0 ? 0.0 : 2 * p * rcl / (p + rcl);
      const double agree = ratio(c.tp + c.tn, c.tp + c.fp + c.fn + c.tn);
      std::string gold_cols;
      for (const auto& col : mappings()[m].gold) gold_cols += (gold_cols.empty() ? "" : " + ") + col;
      const std::string note = mappings()[m].note;
      out["observations"].push_back({{"observation", cmn::metrics::observation_name(mappings()[m].observation)},
                                     {"gold", gold_cols},
                                     {"note", note},
                                     {"tp", c.tp},
                                     {"fp", c.fp},
                                     {"fn", c.fn},
                                     {"tn", c.tn},
                                     {"agreement", agree},
                                     {"precision", p},
                                     {"recall", rcl},
                                     {"f1", f1}});
      if (!json) {
        std::printf("| %s | %s%s | %lld | %lld | %.3f | %.3f | %.3f | %.3f |\n",
                    cmn::metrics::observation_name(mappings()[m].observation), gold_cols.c_str(),
                    note.empty() ? "" : " (loose)", static_cast<long long>(c.tp + c.fn),
                    static_cast<long long>(c.tp + c.fp), agree, p, rcl, f1);
      }
    }
    if (json) std::cout << out.dump() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "cmn-label-agreement: " << cmn::one_line(e.what()) << "\n";
    return 2;
  }
}
