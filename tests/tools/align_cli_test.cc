// Issue 14 end to end, as a user runs it: cmn-phantom draws studies, cmn-train trains a small model with the
// alignment head (a pre-training epoch, then ITC + ITM beside the cross-entropy, a retrieval index in the bundle),
// cmn-generate writes drafts with their consistency and similar training reports, scores given reports, and
// cmn-eval ranks the worst drafts. A bundle without the head gives no consistency and refuses --similar.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/run_command.h"

namespace {

namespace fs = std::filesystem;
using cmn::testing::RunResult;

RunResult run(const std::string& command) { return cmn::testing::run_command(command, "cmn_align_cli"); }

std::vector<nlohmann::json> json_lines(const fs::path& path) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  }
  return lines;
}

std::string slurp(const fs::path& p) {
  std::stringstream ss;
  ss << std::ifstream(p).rdbuf();
  return ss.str();
}

// One phantom dataset and one aligned training run for the whole binary (minutes would be wasted per test).
class AlignCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::path(::testing::TempDir()) / ("cmn_align_cli_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    const auto phantom = run(std::string(CMN_PHANTOM_BIN) + " --out " + (dir_ / "data").string() +
                             " --studies 24 --seed 5 --size 224 --val-fraction 0.25 --test-fraction 0.25");
    ASSERT_EQ(phantom.exit_code, 0) << phantom.err;
    // configs/phantom.yaml made tiny: 2 epochs (the first alignment-only), a few steps each.
    const std::string train = std::string(CMN_TRAIN_BIN) + " " + CMN_SOURCE_DIR + "/configs/phantom.yaml" +
                              " data.annotation=" + (dir_ / "data/annotation.json").string() +
                              " data.image_dir=" + (dir_ / "data/images").string() +
                              " model.d_model=32 model.d_ff=32 model.cmm_dim=32 model.cmm_size=32 model.topk=8"
                              " model.max_seq_length=30 model.threshold=1 model.align_queries=4 model.align_dim=16"
                              " align.pretrain_epochs=1 align.itc_weight=0.5 align.itm_weight=0.5"
                              " align.retrieval_index=true data.batch_size=4 trainer.epochs=2"
                              " trainer.max_steps_per_epoch=3 trainer.eval_max_examples=4 trainer.progress=false"
                              " trainer.save_dir=" + (dir_ / "run").string() +
                              " trainer.bundle_dir=" + (dir_ / "bundle").string();
    const auto trained = run(train);
    ASSERT_EQ(trained.exit_code, 0) << trained.err;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  void SetUp() override { ASSERT_TRUE(fs::exists(dir_ / "bundle/model.yaml")) << "the training run failed"; }

  static std::string generate(const std::string& extra) {
    return std::string(CMN_GENERATE_BIN) + " --bundle " + (dir_ / "bundle").string() + " --annotation " +
           (dir_ / "data/annotation.json").string() + " --image-root " + (dir_ / "data/images").string() +
           " --split test --progress never " + extra;
  }
  static fs::path dir_;
};
fs::path AlignCli::dir_;

TEST_F(AlignCli, TrainingLogsAlignmentLossesAndTheBundleCarriesHeadAndIndex) {
  const auto epochs = json_lines(dir_ / "run/metrics.jsonl");
  ASSERT_EQ(epochs.size(), 2u);
  for (const auto& e : epochs) {
    for (const char* key : {"train_itc", "train_itm", "train_itc_accuracy"}) {
      ASSERT_TRUE(e.contains(key) && e[key].is_number()) << key << " in " << e.dump();
    }
  }
  // The pre-training epoch trains no decoder: nothing is evaluated or selected then.
  EXPECT_FALSE(epochs[0].contains("val_BLEU_4")) << epochs[0].dump();
  EXPECT_TRUE(epochs[1].contains("val_BLEU_4")) << epochs[1].dump();
  const std::string yaml = slurp(dir_ / "bundle/model.yaml");
  EXPECT_NE(yaml.find("align_queries: 4"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("align_index_size:"), std::string::npos) << yaml;
  EXPECT_EQ(yaml.find("align_index_size: 0"), std::string::npos) << yaml;
}

TEST_F(AlignCli, DraftsCarryConsistencyWarningsAndSimilarTrainingReports) {
  const fs::path out = dir_ / "drafts.jsonl";
  const auto r = run(generate("--similar 2 --consistency-warn-below 1.0 --output " + out.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::set<std::string> train_reports;  // the reports the index may hold (decoded: lower case, spaced)
  const auto annotation = nlohmann::json::parse(slurp(dir_ / "data/annotation.json"));
  const auto lines = json_lines(out);
  ASSERT_EQ(lines.size(), annotation["test"].size());
  for (const auto& l : lines) {
    ASSERT_TRUE(l.contains("consistency") && l["consistency"].is_number()) << l.dump();
    EXPECT_GE(l["consistency"].get<double>(), 0.0);
    EXPECT_LE(l["consistency"].get<double>(), 1.0);
    // Every probability is below 1.0, so every draft is flagged.
    EXPECT_EQ(l.value("consistency_warning", ""), "low image-text consistency: review first");
    ASSERT_EQ(l["similar"].size(), 2u) << l.dump();
    EXPECT_GE(l["similar"][0]["similarity"].get<double>(), l["similar"][1]["similarity"].get<double>());
    EXPECT_FALSE(l["similar"][0]["report"].get<std::string>().empty());
  }
  // cmn-eval ranks them: the worst first, and (labels of both sides) an AUROC or null when one class is empty.
  const auto eval = run(std::string(CMN_EVAL_BIN) + " --annotation " + (dir_ / "data/annotation.json").string() +
                        " --split test --predictions " + out.string() +
                        " --threshold 1 --max-seq-length 30 --clinical --phantom-findings --consistency --worst 3");
  ASSERT_EQ(eval.exit_code, 0) << eval.err;
  const auto summary = nlohmann::json::parse(eval.out)["consistency"];
  EXPECT_EQ(summary["scored"], lines.size());
  ASSERT_EQ(summary["worst"].size(), 3u);
  double lowest = 1.0;
  for (const auto& l : lines) lowest = std::min(lowest, l["consistency"].get<double>());
  EXPECT_DOUBLE_EQ(summary["worst"][0]["consistency"].get<double>(), lowest);
  EXPECT_LE(summary["worst"][0]["consistency"].get<double>(), summary["worst"][1]["consistency"].get<double>());
  EXPECT_EQ(summary["CE_right"].get<int64_t>() + summary["CE_wrong"].get<int64_t>(), static_cast<int64_t>(lines.size()));
  EXPECT_TRUE(summary.contains("AUROC_right_vs_wrong"));
}

TEST_F(AlignCli, GivenReportsAreScoredNotGenerated) {
  const auto annotation = nlohmann::json::parse(slurp(dir_ / "data/annotation.json"));
  const auto& test = annotation["test"];
  ASSERT_GE(test.size(), 2u);
  // Every test study but the last gets its own reference report.
  const fs::path given = dir_ / "given.jsonl";
  {
    std::ofstream g(given);
    for (size_t i = 0; i + 1 < test.size(); ++i) g << nlohmann::json{{"id", test[i]["id"]}, {"report", test[i]["report"]}}.dump() << "\n";
  }
  const fs::path out = dir_ / "scored.jsonl";
  const auto r = run(generate("--score-reports " + given.string() + " --output " + out.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = json_lines(out);
  ASSERT_EQ(lines.size(), test.size());
  size_t scored = 0, missing = 0;
  for (const auto& l : lines) {
    if (l.contains("error")) {
      EXPECT_EQ(l["id"], test[test.size() - 1]["id"]);
      EXPECT_NE(l["error"].get<std::string>().find("no report for this study in --score-reports"), std::string::npos);
      ++missing;
      continue;
    }
    ++scored;
    EXPECT_EQ(l["scored"], true);
    EXPECT_FALSE(l.contains("token_ids")) << "nothing was generated";
    double sum = 0;
    for (const auto& lp : l["token_log_probs"]) sum += lp.get<double>();
    EXPECT_NEAR(l["log_prob"].get<double>(), sum, 1e-3);
    EXPECT_LT(l["log_prob"].get<double>(), 0.0);
    ASSERT_TRUE(l.contains("consistency"));
  }
  EXPECT_EQ(scored, test.size() - 1);
  EXPECT_EQ(missing, 1u);
  // A malformed reports file is a bad command line: exit 2, one line naming the file and line.
  std::ofstream(dir_ / "bad.jsonl") << R"({"id": "x", "report": "a"})" << "\n" << R"({"id": "x", "report": "b"})" << "\n";
  const auto bad = run(generate("--score-reports " + (dir_ / "bad.jsonl").string() + " --output " +
                                (dir_ / "bad_out.jsonl").string()));
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("bad.jsonl' line 2: id listed twice"), std::string::npos) << bad.err;
}

TEST_F(AlignCli, ABundleWithoutTheHeadHasNoConsistencyAndRefusesSimilar) {
  const fs::path plain = dir_ / "plain";
  const auto made = run(std::string(CMN_BUNDLE_BIN) + " init-untrained --out " + plain.string() + " --vocab " +
                        CMN_SOURCE_DIR + "/configs/default_vocab.txt --views 4 --force");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const std::string base = std::string(CMN_GENERATE_BIN) + " --bundle " + plain.string() + " --annotation " +
                           (dir_ / "data/annotation.json").string() + " --image-root " + (dir_ / "data/images").string() +
                           " --split test --progress never --max-length 5";
  const fs::path out = dir_ / "plain.jsonl";
  const auto r = run(base + " --output " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const auto& l : json_lines(out)) {
    EXPECT_TRUE(l.contains("report")) << l.dump();
    EXPECT_FALSE(l.contains("consistency")) << l.dump();
  }
  const auto similar = run(base + " --similar 1 --output " + (dir_ / "plain_similar.jsonl").string());
  EXPECT_EQ(similar.exit_code, 2);
  EXPECT_NE(similar.err.find("no retrieval index"), std::string::npos) << similar.err;
}

}  // namespace
