// cmn-label, cmn-label-agreement and cmn-eval's label-file mode, run as a user runs them (issue 12):
// the CheXpert example file byte for byte, annotation.json -> JSONL, CE equal to sklearn (python3-sklearn, the
// library R2GenCMN's compute_ce.py calls) to 1e-6, and one stderr line with exit 2 on bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cmn/metrics/chexpert.h"
#include "cmn/metrics/chexpert_csv.h"
#include "common/run_command.h"

namespace fs = std::filesystem;

namespace {

const std::string kLabels = std::string(CMN_SHARED_DIR) + "/data/labels/";
const std::string kAnnotation = std::string(CMN_SHARED_DIR) + "/data/iu_xray/annotation.json";

cmn::testing::RunResult run(const std::string& command) { return cmn::testing::run_command(command, "label_cli"); }

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void spit(const fs::path& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

fs::path temp_dir(const std::string& name) {
  const fs::path dir = fs::path(::testing::TempDir()) / (name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// An error is exactly one line on stderr.
void expect_one_line_error(const cmn::testing::RunResult& r, int code, const std::string& needle) {
  EXPECT_EQ(r.exit_code, code) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
}

TEST(CmnLabel, ReportsModeWritesTheCheXpertLabelersExampleOutput) {
  const fs::path dir = temp_dir("cmn_label_reports");
  const auto r = run(std::string(CMN_LABEL_BIN) + " --reports " + kLabels + "chexpert_labeler_sample_reports.csv" +
                     " --output " + (dir / "labeled.csv").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(slurp(dir / "labeled.csv"), slurp(kLabels + "chexpert_labeler_labeled_reports.csv"));
  EXPECT_FALSE(fs::exists(dir / "labeled.csv.tmp"));
}

TEST(CmnLabel, AnnotationModeWritesOneLinePerStudyWithoutUnmentionedObservations) {
  const fs::path dir = temp_dir("cmn_label_annotation");
  nlohmann::json ann;
  ann["train"] = {{{"id", "t1"}, {"report", "Large right pleural effusion."}}};
  ann["val"] = nlohmann::json::array();
  ann["test"] = {{{"id", "a"}, {"report", "Cardiomegaly. No pneumothorax. Possible left base atelectasis."}},
                 {{"id", "b"}, {"report", "The lungs are clear."}}};
  spit(dir / "annotation.json", ann.dump());
  auto r = run(std::string(CMN_LABEL_BIN) + " --annotation " + (dir / "annotation.json").string() +
               " --split test --output " + (dir / "labels.jsonl").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(slurp(dir / "labels.jsonl"));
  std::vector<nlohmann::json> got;
  for (std::string line; std::getline(lines, line);) got.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0]["id"], "a");
  EXPECT_EQ(got[0]["labels"], nlohmann::json({{"Cardiomegaly", 1}, {"Atelectasis", -1}, {"Pneumothorax", 0}}));
  EXPECT_EQ(got[1]["labels"], nlohmann::json({{"No Finding", 1}}));
  // --split all: every split, train first.
  r = run(std::string(CMN_LABEL_BIN) + " --annotation " + (dir / "annotation.json").string() + " --output -");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 3);
  EXPECT_EQ(nlohmann::json::parse(r.out.substr(0, r.out.find('\n')))["labels"]["Pleural Effusion"], 1);
}

TEST(CmnLabel, BadInputIsExitTwoAndOneLine) {
  const fs::path dir = temp_dir("cmn_label_bad");
  const std::string bin = CMN_LABEL_BIN;
  const std::string out = " --output " + (dir / "o").string();
  expect_one_line_error(run(bin + " --reports " + (dir / "missing.csv").string() + out), 2, "cannot open");
  spit(dir / "two_fields.csv", "No effusion.\nHeart normal, lungs clear.\n");
  expect_one_line_error(run(bin + " --reports " + (dir / "two_fields.csv").string() + out), 2,
                        "row 2 has 2 fields");
  spit(dir / "empty.csv", "\n\n");
  expect_one_line_error(run(bin + " --reports " + (dir / "empty.csv").string() + out), 2, "no reports");
  spit(dir / "open_quote.csv", "\"No effusion.\n");
  expect_one_line_error(run(bin + " --reports " + (dir / "open_quote.csv").string() + out), 2, "unterminated");
  spit(dir / "not.json", "{");
  expect_one_line_error(run(bin + " --annotation " + (dir / "not.json").string() + out), 2, "not JSON");
  spit(dir / "no_test.json", R"({"train": []})");
  expect_one_line_error(run(bin + " --annotation " + (dir / "no_test.json").string() + " --split test" + out), 2,
                        "no 'test' split");
  spit(dir / "bad_entry.json", R"({"test": [{"id": "x"}]})");
  expect_one_line_error(run(bin + " --annotation " + (dir / "bad_entry.json").string() + out), 2, "test[0]");
  expect_one_line_error(run(bin + out), 2, "give one of");
  expect_one_line_error(run(bin + " --reports a.csv"), 2, "--output is required");
  EXPECT_FALSE(fs::exists(dir / "o"));  // nothing half-written
}

TEST(CmnLabelAgreement, PrintsOneRowPerObservationOnTheOpenIGoldStandard) {
  const auto r = run(std::string(CMN_LABEL_AGREEMENT_BIN) + " --reports " + kLabels + "indiana_reports.csv" +
                     " --gold " + kLabels + "openi_gld_std14.csv --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["reports"].get<int>(), 3800);  // 3,851 reports, a few without text
  ASSERT_EQ(j["observations"].size(), 11u);
  for (const auto& o : j["observations"]) {
    EXPECT_EQ((o["tp"].get<int>() + o["fp"].get<int>() + o["fn"].get<int>() + o["tn"].get<int>()),
              j["reports"].get<int>());
    EXPECT_GE(o["agreement"].get<double>(), 0.0);
  }
  // Cardiomegaly and Pleural Effusion are coded alike on both sides: agreement well above chance.
  EXPECT_GT(j["observations"][1]["f1"].get<double>(), 0.7);
  EXPECT_GT(j["observations"][9]["f1"].get<double>(), 0.7);
  expect_one_line_error(run(std::string(CMN_LABEL_AGREEMENT_BIN) + " --reports " + kLabels +
                            "openi_gld_std14.csv --gold " + kLabels + "openi_gld_std14.csv"),
                        2, "no column 'uid'");
}

// R2GenCMN's compute_ce.py semantics written against sklearn: NaN -> 0, -1 -> 0 (or 1), the 14 columns after
// the first, sklearn macro/micro P/R/F1 and per-column roc_auc_score; a column whose references hold one class
// makes roc_auc_score raise, which the script records instead of stopping.
constexpr const char* kSklearnScript = R"PY(
import csv, json, sys
import numpy as np
from sklearn.metrics import roc_auc_score, f1_score, recall_score, precision_score
ones = sys.argv[3] == "ones"
def table(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    def cell(c):
        v = 0.0 if c == "" else float(c)
        return (1.0 if ones else 0.0) if v == -1.0 else v
    return rows[0][1:], np.array([[cell(c) for c in r[1:]] for r in rows[1:]])
names, res = table(sys.argv[1])
_, gts = table(sys.argv[2])
out, raised = {}, []
for i, name in enumerate(names):
    try:
        out["AUCROC_" + name] = float(roc_auc_score(gts[:, i], res[:, i]))
    except ValueError:
        out["AUCROC_" + name] = None
        raised.append(name)
aucs = [out["AUCROC_" + n] for n in names]
out["AVG_AUCROC"] = None if raised else sum(aucs) / len(names)
for key, fn in (("F1", f1_score), ("RECALL", recall_score), ("PRECISION", precision_score)):
    for avg in ("macro", "micro"):
        out[key + "_" + avg.upper()] = float(fn(gts, res, average=avg))
out["raised"] = raised
print(json.dumps(out))
)PY";

// Label files as a CE run has them: the first `rows` references of the IU X-Ray test split, and as
// "predictions" the first two sentences of each study's next study's reference (so the scores are neither 0
// nor 1, and precision differs from recall).
void write_label_files(const fs::path& res, const fs::path& gts, std::size_t rows = 590) {
  const auto ann = nlohmann::json::parse(slurp(kAnnotation));
  std::vector<std::string> reports;
  for (const auto& e : ann.at("test")) reports.push_back(e.at("report").get<std::string>());
  reports.resize(std::min(rows, reports.size()));
  std::vector<std::string> next;
  for (std::size_t i = 0; i < reports.size(); ++i) {
    const std::string& r = reports[(i + 1) % reports.size()];
    const auto first = r.find(". ");
    const auto second = first == std::string::npos ? first : r.find(". ", first + 2);
    next.push_back(second == std::string::npos ? r : r.substr(0, second + 1));
  }
  auto labelled = [](const std::vector<std::string>& rs) {
    std::vector<cmn::metrics::ChexpertLabels> out;
    for (const auto& r : rs) out.push_back(cmn::metrics::chexpert_label(r));
    return cmn::metrics::write_labeled_csv(rs, out);
  };
  spit(gts, labelled(reports));
  spit(res, labelled(next));
}

TEST(CmnEvalLabelFiles, EqualToSklearnAsComputeCe) {
  const fs::path dir = temp_dir("cmn_eval_labels");
  spit(dir / "compute_ce.py", kSklearnScript);
  // 590 studies: every AUROC defined; 12 studies: some observation has one class in the references, where
  // roc_auc_score raises (and compute_ce.py would stop) and cmn-eval prints null.
  for (const auto& [rows, policy] : std::vector<std::pair<std::size_t, std::string>>{
           {590, "zeros"}, {590, "ones"}, {12, "zeros"}}) {
    write_label_files(dir / "res.csv", dir / "gts.csv", rows);
    const auto ours = run(std::string(CMN_EVAL_BIN) + " --res-labels " + (dir / "res.csv").string() +
                          " --gts-labels " + (dir / "gts.csv").string() + " --uncertain " + policy);
    ASSERT_EQ(ours.exit_code, 0) << ours.err;
    // Debian's interpreter, where apt's python3-sklearn lives (a pyenv python3 earlier on PATH would lack it).
    const auto sk = run("/usr/bin/python3 " + (dir / "compute_ce.py").string() + " " + (dir / "res.csv").string() + " " +
                        (dir / "gts.csv").string() + " " + policy);
    ASSERT_EQ(sk.exit_code, 0) << "python3 with sklearn (apt python3-sklearn, scripts/setup.sh): " << sk.err;
    const auto a = nlohmann::json::parse(ours.out);
    const auto b = nlohmann::json::parse(sk.out);
    EXPECT_EQ(a["examples"], rows);
    EXPECT_EQ(b["raised"].empty(), rows == 590) << b["raised"];
    if (rows == 590) {
      EXPECT_NE(a["PRECISION_MACRO"], a["RECALL_MACRO"]);
    }
    EXPECT_NE(a["uncertain"].get<std::string>().find(policy == "zeros" ? "U-zeros" : "U-ones"), std::string::npos);
    int compared = 0;
    for (const auto& [key, want] : b.items()) {
      if (key == "raised") continue;
      ASSERT_TRUE(a.contains(key)) << key;
      if (want.is_null()) {
        EXPECT_TRUE(a[key].is_null()) << key << " (sklearn raised: AUROC undefined)";
      } else {
        ASSERT_TRUE(a[key].is_number()) << key;
        EXPECT_NEAR(a[key].get<double>(), want.get<double>(), 1e-6) << key << " " << policy;
        ++compared;
      }
    }
    EXPECT_GE(compared, rows == 590 ? 6 + 1 + 14 : 6 + 1) << "P/R/F1 and the AUROCs sklearn defines";
    EXPECT_GT(a["F1_MICRO"].get<double>(), 0.0);
    EXPECT_LT(a["F1_MICRO"].get<double>(), 1.0);
  }
}

TEST(CmnEvalLabelFiles, BadFilesAndCommandLines) {
  const fs::path dir = temp_dir("cmn_eval_labels_bad");
  write_label_files(dir / "res.csv", dir / "gts.csv");
  const std::string bin = CMN_EVAL_BIN;
  std::string short_res = slurp(dir / "res.csv");
  short_res.erase(short_res.rfind('\n', short_res.size() - 2) + 1);  // drop the last row
  spit(dir / "short.csv", short_res);
  expect_one_line_error(run(bin + " --res-labels " + (dir / "short.csv").string() + " --gts-labels " +
                            (dir / "gts.csv").string()),
                        1, "589 rows but");
  spit(dir / "header.csv", "Reports,Cardiomegaly\nx,1.0\n");
  expect_one_line_error(run(bin + " --res-labels " + (dir / "header.csv").string() + " --gts-labels " +
                            (dir / "gts.csv").string()),
                        1, "header.csv: header has 2 columns");
  expect_one_line_error(run(bin + " --res-labels " + (dir / "res.csv").string()), 2, "go together");
  expect_one_line_error(run(bin + " --res-labels " + (dir / "res.csv").string() + " --gts-labels " +
                            (dir / "gts.csv").string() + " --uncertain maybe"),
                        2, "--uncertain");
}

// cmn-eval --clinical: CheXpert-14 CE of predictions against the split's references (each IU X-Ray test study
// "predicted" by the next study's report), the policy named, the phantom's findings only on request.
TEST(CmnEvalClinical, CheXpertFourteenWithItsPolicyAndPhantomFindingsOnRequest) {
  const fs::path dir = temp_dir("cmn_eval_clinical");
  const auto ann = nlohmann::json::parse(slurp(kAnnotation));
  const auto& test = ann.at("test");
  std::string preds;
  for (std::size_t i = 0; i < test.size(); ++i) {
    preds += nlohmann::json({{"id", test[i].at("id")}, {"report", test[(i + 1) % test.size()].at("report")}}).dump() +
             "\n";
  }
  spit(dir / "preds.jsonl", preds);
  const std::string cmd = std::string(CMN_EVAL_BIN) + " --annotation " + kAnnotation +
                          " --split test --clinical --predictions " + (dir / "preds.jsonl").string();
  auto r = run(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto zeros = nlohmann::json::parse(r.out);
  for (const char* key : {"BLEU_4", "CE_F1_MACRO", "CE_F1_MICRO", "CE_PRECISION_MACRO", "CE_RECALL_MICRO",
                          "CE_AVG_AUCROC", "CE_AUCROC_Cardiomegaly"}) {
    ASSERT_TRUE(zeros.contains(key)) << key;
  }
  EXPECT_GT(zeros["CE_F1_MICRO"].get<double>(), 0.0);
  EXPECT_LT(zeros["CE_F1_MICRO"].get<double>(), 1.0);
  EXPECT_NE(zeros["CE_uncertain"].get<std::string>().find("U-zeros"), std::string::npos);
  EXPECT_FALSE(zeros.contains("CE_phantom_macro_F1"));
  r = run(cmd + " --uncertain ones --phantom-findings");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto ones = nlohmann::json::parse(r.out);
  EXPECT_NE(ones["CE_uncertain"].get<std::string>().find("U-ones"), std::string::npos);
  EXPECT_NE(ones["CE_F1_MICRO"], zeros["CE_F1_MICRO"]);  // the IU references hold uncertain labels
  EXPECT_TRUE(ones.contains("CE_phantom_macro_F1"));
}

}  // namespace
