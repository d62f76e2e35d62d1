// cmn-label: CheXpert-14 labels of radiology reports (cmn/metrics/chexpert.h).
//   cmn-label --reports reports.csv --output labeled.csv       the CheXpert labeler's own CLI shape: one report
//                                                               per row, no header -> Reports + 14 columns
//   cmn-label --annotation annotation.json --split train|val|test|all --output labels.jsonl
//                                                               one {"id", "labels": {...}} line per study,
//                                                               observations not mentioned left out
//   cmn-label --text "No pneumothorax." [--explain]             one report -> one JSON line (and its mentions)
// --output - writes to stdout; files are written atomically. Bad input or command line: exit 2 and one line on
// stderr naming the problem.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cmn/common/cli.h"
#include "cmn/metrics/chexpert.h"
#include "cmn/metrics/chexpert_csv.h"

namespace {

constexpr int kExitBad = 2;

struct BadInput : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw BadInput("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw BadInput("cannot read " + path);
  return ss.str();
}

// Temporary file next to the target, then rename: a reader never sees half a file.
void write_output(const std::string& path, const std::string& bytes) {
  if (path == "-") {
    std::cout << bytes << std::flush;
    return;
  }
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw BadInput("cannot write " + path);
    out << bytes;
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      throw BadInput("cannot write " + path);
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw BadInput("cannot write " + path);
  }
}

nlohmann::ordered_json labels_json(const cmn::metrics::ChexpertLabels& labels) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (std::size_t k = 0; k < labels.size(); ++k) {
    if (labels[k] == cmn::metrics::Mention::kBlank) continue;
    j[cmn::metrics::observation_names()[k]] = static_cast<int>(labels[k]);
  }
  return j;
}

std::string label_annotation(const std::string& path, const std::string& split) {
  nlohmann::json ann;
  try {
    ann = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw BadInput(path + ": not JSON (" + e.what() + ")");
  }
  if (!ann.is_object()) throw BadInput(path + ": want an object of splits {\"train\": [...], ...}");
  std::vector<std::string> splits = split == "all" ? std::vector<std::string>{"train", "val", "test"}
                                                   : std::vector<std::string>{split};
  std::string out;
  for (const auto& s : splits) {
    if (!ann.contains(s)) {
      if (split == "all") continue;
      throw BadInput(path + ": no '" + s + "' split");
    }
    if (!ann[s].is_array()) throw BadInput(path + ": split '" + s + "' is not a list");
    for (std::size_t i = 0; i < ann[s].size(); ++i) {
      const auto& ex = ann[s][i];
      const std::string where = path + ": " + s + "[" + std::to_string(i) + "]";
      if (!ex.is_object() || !ex.contains("id") || !ex.contains("report") ||
          !(ex["id"].is_string() || ex["id"].is_number()) || !ex["report"].is_string()) {
        throw BadInput(where + ": want {\"id\": string, \"report\": string}");
      }
      nlohmann::ordered_json line;
      line["id"] = ex["id"];
      line["labels"] = labels_json(cmn::metrics::chexpert_label(ex["report"].get<std::string>()));
      out += line.dump() + "\n";
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cmn-label: CheXpert-14 labels (1 positive, 0 negative, -1 uncertain) of radiology reports",
               "cmn-label"};
  std::string reports_path, annotation_path, split = "all", output_path, text;
  bool explain = false;
  auto* reports_opt = app.add_option("--reports", reports_path, "reports CSV: one report per row, no header");
  auto* annotation_opt = app.add_option("--annotation", annotation_path, "annotation.json (R2Gen format)");
  auto* text_opt = app.add_option("--text", text, "label this one report; prints one JSON line");
  app.add_option("--split", split, "with --annotation: the split to label")
      ->check(CLI::IsMember({"train", "val", "test", "all"}))
      ->capture_default_str();
  app.add_option("--output", output_path, "labeled CSV (--reports) or JSONL (--annotation); - for stdout");
  app.add_flag("--explain", explain, "with --text: also list each mention, its label and the deciding cue");
  reports_opt->excludes(annotation_opt)->excludes(text_opt);
  annotation_opt->excludes(text_opt);
  try {
    app.parse(argc, argv);
    const int modes = static_cast<int>(reports_opt->count() > 0) + static_cast<int>(annotation_opt->count() > 0) +
                      static_cast<int>(text_opt->count() > 0);
    if (modes != 1) throw CLI::ValidationError("give one of --reports, --annotation, --text");
    if (text_opt->count() == 0 && output_path.empty()) throw CLI::ValidationError("--output is required");
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::cerr << "cmn-label: " << cmn::one_line(e.what()) << " (run with --help for usage)\n";
    return kExitBad;
  }

  try {
    if (text_opt->count() > 0) {
      nlohmann::ordered_json j;
      j["labels"] = labels_json(cmn::metrics::chexpert_label(text));
      if (explain) {
        j["mentions"] = nlohmann::ordered_json::array();
        for (const auto& m : cmn::metrics::chexpert_trace(text)) {
          j["mentions"].push_back({{"observation", m.observation == cmn::metrics::Observation::kNoFinding
                                                       ? std::string("(other finding)")
                                                       : cmn::metrics::observation_name(m.observation)},
                                   {"text", m.text},
                                   {"label", static_cast<int>(m.label)},
                                   {"cue", m.cue},
                                   {"sentence", m.sentence}});
        }
      }
      std::cout << j.dump() << "\n";
      return 0;
    }
    if (reports_opt->count() > 0) {
      std::vector<std::string> reports;
      try {
        reports = cmn::metrics::read_reports_csv(read_file(reports_path));
      } catch (const std::invalid_argument& e) {
        throw BadInput(reports_path + ": " + e.what());
      }
      if (reports.empty()) throw BadInput(reports_path + ": no reports (want one report per row)");
      std::vector<cmn::metrics::ChexpertLabels> labels;
      labels.reserve(reports.size());
      for (const auto& r : reports) labels.push_back(cmn::metrics::chexpert_label(r));
      write_output(output_path, cmn::metrics::write_labeled_csv(reports, labels));
      return 0;
    }
    write_output(output_path, label_annotation(annotation_path, split));
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "cmn-label: " << cmn::one_line(e.what()) << "\n";
    return kExitBad;
  }
}
