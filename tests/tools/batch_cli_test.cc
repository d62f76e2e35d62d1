// cmn-generate's archive mode (issue 7), run as a user would: resume after SIGKILL, shards + merge,
// manifests, annotation splits with scores (checked against cmn-eval), attention maps.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"

#include "common/fhir_validator.h"
#include "common/run_command.h"
#include "common/sr_validators.h"
#include "tools/generate_summary.h"

namespace {

namespace fs = std::filesystem;

std::string shared(const std::string& rel) { return std::string(CMN_SHARED_DIR) + "/" + rel; }

// Per-process names: ctest runs the tests of this binary in parallel processes.
fs::path temp(const std::string& name) {
  return fs::path(::testing::TempDir()) / (name + "_" + std::to_string(getpid()));
}

using cmn::testing::RunResult;

RunResult run(const std::string& command) { return cmn::testing::run_command(command, "cmn_batch"); }

std::string slurp(const fs::path& p) {
  std::stringstream ss;
  ss << std::ifstream(p, std::ios::binary).rdbuf();
  return ss.str();
}

std::vector<nlohmann::json> json_lines(const std::string& text) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  }
  return lines;
}

using cmn::testing::summary_of;

std::string untrained_bundle() {
  static const std::string dir = [] {
    const fs::path d = temp("cmn_batch_bundle");
    fs::remove_all(d);
    const auto r = run(std::string(CMN_BUNDLE_BIN) + " init-untrained --out " + d.string() + " --vocab " +
                       CMN_SOURCE_DIR + "/configs/default_vocab.txt --views 4 --seed 1");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return d.string();
  }();
  return dir;
}

// `count` one-image studies: the NIH DX instance (1024x1024, 8 bit: quick to decode) under new
// StudyInstanceUIDs, nested at different depths.
std::vector<std::string> make_tree(const fs::path& root, int count) {
  fs::remove_all(root);
  std::vector<std::string> uids;
  for (int i = 0; i < count; ++i) {
    const std::string uid = "1.2.826.0.1.3680043.8.498." + std::to_string(1000 + i);
    const fs::path to = root / ("p" + std::to_string(i % 3)) / (i % 2 ? "deeper/x" : "") / ("s" + std::to_string(i) + ".dcm");
    fs::create_directories(to.parent_path());
    DcmFileFormat file;
    EXPECT_TRUE(file.loadFile(shared("data/dicom/chest/NIH-ChestXray14_DX_implicitLE.dcm").c_str()).good());
    EXPECT_TRUE(file.getDataset()->putAndInsertString(DCM_StudyInstanceUID, uid.c_str()).good());
    EXPECT_TRUE(file.saveFile(to.c_str()).good());
    uids.push_back(uid);
  }
  return uids;
}

std::string quick() { return " --max-length 3 --beam-size 1 --threads 1 --progress never"; }

std::multiset<std::string> ids_of(const std::vector<nlohmann::json>& lines) {
  std::multiset<std::string> ids;
  for (const auto& l : lines) ids.insert(l.at("id").get<std::string>());
  return ids;
}

TEST(CmnGenerateBatch, ResumesAfterSigkillWithoutLosingOrDuplicatingStudies) {
  const fs::path root = temp("cmn_batch_kill_tree");
  const auto uids = make_tree(root, 8);
  const fs::path out = temp("cmn_batch_kill_out.jsonl");
  fs::remove(out);

  // Start a run, kill -9 it once two studies are written.
  const std::string bin = CMN_GENERATE_BIN, bundle = untrained_bundle();
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    freopen("/dev/null", "w", stderr);
    execl(bin.c_str(), bin.c_str(), "--bundle", bundle.c_str(), "--dicom", root.c_str(), "--output", out.c_str(),
          "--max-length", "3", "--beam-size", "1", "--threads", "1", "--batch-size", "1", "--progress", "never",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  size_t seen = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    const std::string text = slurp(out);
    seen = static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
    if (seen >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_GE(seen, 2u) << "the run wrote nothing in time";
  const size_t before = json_lines(slurp(out)).size();
  EXPECT_LT(before, uids.size()) << "the run finished before it was killed: nothing was resumed";
  // A kill in the middle of a write leaves a torn last line: the rerun must drop it and redo that study.
  std::ofstream(out, std::ios::app) << R"({"id":"1.2.826.0.1.3680043.8.498.1007","rep)";

  const auto r = run(bin + " --bundle " + bundle + " --dicom " + root.string() + " --output " + out.string() + quick());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = json_lines(slurp(out));  // throws on a torn line left behind
  EXPECT_EQ(ids_of(lines), std::multiset<std::string>(uids.begin(), uids.end()));
  for (const auto& l : lines) {
    EXPECT_TRUE(l.at("report").is_string()) << l;
    EXPECT_EQ(l.at("study"), l.at("id"));
    EXPECT_TRUE(l.at("timings").contains("read_s")) << l;
  }
  const auto summary = summary_of(r.err);
  ASSERT_FALSE(summary.is_null()) << r.err;
  EXPECT_EQ(summary.at("skipped_already_in_output").get<size_t>(), before);
  EXPECT_EQ(summary.at("done").get<size_t>(), uids.size() - before);
  EXPECT_NE(r.err.find("torn last line"), std::string::npos) << r.err;
  // Logs carry no patient identifiers (the NIH file's PatientID/Name is "Covid0000").
  EXPECT_EQ(r.err.find("Covid0000"), std::string::npos) << r.err;

  // A third run has nothing to do.
  const auto again = run(bin + " --bundle " + bundle + " --dicom " + root.string() + " --output " + out.string() + quick());
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(summary_of(again.err).at("skipped_already_in_output").get<size_t>(), uids.size());
  EXPECT_EQ(json_lines(slurp(out)).size(), uids.size());
}

TEST(CmnGenerateBatch, ShardsSplitTheArchiveAndMergeChecksCompleteness) {
  const fs::path root = temp("cmn_batch_shard_tree");
  const auto uids = make_tree(root, 6);
  const std::string base = std::string(CMN_GENERATE_BIN) + " --bundle " + untrained_bundle() + " --dicom " +
                           root.string() + quick();
  std::vector<fs::path> outs;
  std::multiset<std::string> all;
  for (int i = 0; i < 3; ++i) {
    outs.push_back(temp("cmn_batch_shard" + std::to_string(i) + ".jsonl"));
    fs::remove(outs.back());
    const auto r = run(base + " --shard " + std::to_string(i) + "/3 --output " + outs.back().string());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto ids = ids_of(json_lines(slurp(outs.back())));
    all.insert(ids.begin(), ids.end());
  }
  EXPECT_EQ(all, std::multiset<std::string>(uids.begin(), uids.end()));  // a partition: each study in one shard

  const fs::path merged = temp("cmn_batch_merged.jsonl");
  fs::remove(merged);
  auto r = run(std::string(CMN_GENERATE_BIN) + " merge --output " + merged.string() + " " + outs[0].string() + " " +
               outs[1].string() + " " + outs[2].string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ids_of(json_lines(slurp(merged))), std::multiset<std::string>(uids.begin(), uids.end()));

  // A missing shard, and a duplicated one, are errors and write nothing.
  fs::remove(merged);
  r = run(std::string(CMN_GENERATE_BIN) + " merge -o " + merged.string() + " " + outs[0].string() + " " +
          outs[2].string());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("shard 1/3 is missing"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(merged));
  r = run(std::string(CMN_GENERATE_BIN) + " merge -o " + merged.string() + " " + outs[0].string() + " " +
          outs[0].string() + " " + outs[1].string() + " " + outs[2].string());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("duplicate study"), std::string::npos) << r.err;
  // A study lost from a shard's output (e.g. its run never finished) is named.
  std::string text = slurp(outs[1]);
  ASSERT_FALSE(text.empty());
  const auto first_nl = text.find('\n');
  const auto lost = nlohmann::json::parse(text.substr(0, first_nl)).at("id").get<std::string>();
  std::ofstream(outs[1], std::ios::trunc) << text.substr(first_nl + 1);
  r = run(std::string(CMN_GENERATE_BIN) + " merge -o " + merged.string() + " " + outs[0].string() + " " +
          outs[1].string() + " " + outs[2].string());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("missing study '" + lost + "'"), std::string::npos) << r.err;

  r = run(base + " --shard 3/3");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--shard"), std::string::npos) << r.err;
}

TEST(CmnGenerateBatch, ManifestStudiesFailAloneAndFailOnErrorSetsTheExitCode) {
  const fs::path dir = temp("cmn_batch_manifest");
  fs::remove_all(dir);
  make_tree(dir / "tree", 2);
  std::string pngs;
  for (int v = 0; v < 4; ++v) pngs += (v ? ";" : "") + shared("parity/dev/images/study0_view" + std::to_string(v) + ".png");
  // CSV: a folder, a missing file; JSONL: a file list of 4 PNGs (an image study) and a folder.
  std::ofstream(dir / "m.csv") << "id,path,comment\nA,tree/p0,first\nB,/nonexistent/x.dcm,gone\n";
  nlohmann::json png_list = nlohmann::json::array();
  for (int v = 0; v < 4; ++v) png_list.push_back(shared("parity/dev/images/study0_view" + std::to_string(v) + ".png"));
  std::ofstream(dir / "m.jsonl") << nlohmann::json{{"id", "P"}, {"paths", png_list}}.dump() << "\n"
                                 << nlohmann::json{{"id", "T"}, {"path", "tree/p1"}}.dump() << "\n";
  const std::string base = std::string(CMN_GENERATE_BIN) + " --bundle " + untrained_bundle() + quick();

  fs::remove(dir / "csv.jsonl");
  auto r = run(base + " --manifest " + (dir / "m.csv").string() + " --output " + (dir / "csv.jsonl").string());
  EXPECT_EQ(r.exit_code, 0) << r.err;  // failures are recorded, not fatal, unless asked
  auto lines = json_lines(slurp(dir / "csv.jsonl"));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].at("id"), "A");
  EXPECT_TRUE(lines[0].at("report").is_string()) << lines[0];
  EXPECT_EQ(lines[1].at("id"), "B");
  EXPECT_NE(lines[1].at("error").get<std::string>().find("/nonexistent/x.dcm"), std::string::npos) << lines[1];
  EXPECT_EQ(lines[1].at("error_code"), "NOT_FOUND");
  EXPECT_EQ(summary_of(r.err).at("failed_by_reason").at("NOT_FOUND"), 1) << r.err;

  fs::remove(dir / "csv.jsonl");
  r = run(base + " --manifest " + (dir / "m.csv").string() + " --output " + (dir / "csv.jsonl").string() +
          " --fail-on-error");
  EXPECT_EQ(r.exit_code, 1) << r.err;

  fs::remove(dir / "j.jsonl");
  r = run(base + " --manifest " + (dir / "m.jsonl").string() + " --output " + (dir / "j.jsonl").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  lines = json_lines(slurp(dir / "j.jsonl"));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].at("images").size(), 4u) << lines[0];
  EXPECT_TRUE(lines[0].at("report").is_string()) << lines[0];
  EXPECT_TRUE(lines[1].at("instances").is_array()) << lines[1];

  std::ofstream(dir / "bad.csv") << "name,file\nA,x\n";
  r = run(base + " --manifest " + (dir / "bad.csv").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("bad.csv:1: the CSV header must name columns 'id' and 'path'"), std::string::npos) << r.err;
}

// The parity model on an annotation split whose test studies are the two fixture studies: the reports are
// the reference's, and the scores are cmn-eval's on the same output (one shared implementation).
TEST(CmnGenerateBatch, AnnotationSplitIsGeneratedAndScoredAsCmnEvalScoresIt) {
  const fs::path dir = temp("cmn_batch_split");
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto annotation = nlohmann::json::parse(std::ifstream(shared("data/iu_xray/annotation.json")));
  nlohmann::json test = nlohmann::json::array();
  for (int s = 0; s < 2; ++s) {
    nlohmann::json e = annotation.at("test")[s];
    e["image_path"] = nlohmann::json::array();
    for (int v = 0; v < 4; ++v) e["image_path"].push_back("study" + std::to_string(s) + "_view" + std::to_string(v) + ".png");
    test.push_back(e);
  }
  annotation["test"] = test;
  annotation["val"] = nlohmann::json::array();
  std::ofstream(dir / "annotation.json") << annotation.dump();
  const fs::path out = dir / "out.jsonl";
  const auto r = run(std::string(CMN_GENERATE_BIN) + " --r2gencmn " + shared("parity/dev/model.pth") + " --args " +
                     shared("parity/dev/config.json") + " --annotation " + (dir / "annotation.json").string() +
                     " --split test --image-root " + shared("parity/dev/images") +
                     " --beam-size 3 --max-length 60 --threads 1 --progress never --output " + out.string() +
                     " --summary " + (dir / "summary.json").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto expected = nlohmann::json::parse(std::ifstream(shared("parity/dev/expected.json")));
  const auto lines = json_lines(slurp(out));
  ASSERT_EQ(lines.size(), 2u);
  for (int s = 0; s < 2; ++s) {
    EXPECT_EQ(lines[s].at("id"), test[s].at("id"));
    EXPECT_EQ(lines[s].at("report"), expected.at("beam_reports")[s]);
  }
  const auto summary = nlohmann::json::parse(std::ifstream(dir / "summary.json"));
  const auto& scores = summary.at("scores");
  EXPECT_EQ(scores.at("scored"), 2);
  const auto eval = run(std::string(CMN_EVAL_BIN) + " --annotation " + (dir / "annotation.json").string() +
                        " --split test --clinical --predictions " + out.string());
  ASSERT_EQ(eval.exit_code, 0) << eval.err;
  const auto want = nlohmann::json::parse(eval.out);
  for (const char* key : {"BLEU_1", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr", "CE_F1_MACRO", "CE_F1_MICRO",
                          "CE_PRECISION_MACRO", "CE_RECALL_MICRO"}) {
    EXPECT_EQ(scores.at(key).get<double>(), want.at(key).get<double>()) << key;
  }
  // Clinical efficacy on the CheXpert-14 observations names its uncertainty policy in both outputs.
  EXPECT_EQ(scores.at("CE_uncertain"), want.at("CE_uncertain"));
  EXPECT_NE(scores.at("CE_uncertain").get<std::string>().find("U-zeros"), std::string::npos);
}

TEST(CmnGenerateBatch, AttentionDirHoldsOnePngPerSentenceLayerAndView) {
  const fs::path dir = temp("cmn_batch_attention");
  fs::remove_all(dir);
  fs::create_directories(dir);
  nlohmann::json png_list = nlohmann::json::array();
  for (int v = 0; v < 4; ++v) png_list.push_back(shared("parity/dev/images/study1_view" + std::to_string(v) + ".png"));
  std::ofstream(dir / "m.jsonl") << nlohmann::json{{"id", "study/1"}, {"paths", png_list}}.dump() << "\n";
  const auto r = run(std::string(CMN_GENERATE_BIN) + " --r2gencmn " + shared("parity/dev/model.pth") + " --args " +
                     shared("parity/dev/config.json") + " --annotation " + shared("data/iu_xray/annotation.json") +
                     " --manifest " + (dir / "m.jsonl").string() + " --max-length 20 --threads 1 --attention-dir " +
                     (dir / "att").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 1u);
  const std::string report = lines[0].at("report").get<std::string>();
  const fs::path study_dir = dir / "att" / "study_1";  // the key made a safe folder name
  ASSERT_TRUE(fs::exists(study_dir / "sentences.json")) << r.err << lines[0];
  const auto index = nlohmann::json::parse(std::ifstream(study_dir / "sentences.json"));
  std::set<int> sentences;
  std::string joined;
  for (const auto& m : index) {
    const int s = m.at("sentence").get<int>();
    if (sentences.insert(s).second) joined += (joined.empty() ? "" : " ") + m.at("text").get<std::string>();
    const std::string png = slurp(study_dir / m.at("file").get<std::string>());
    ASSERT_GT(png.size(), 8u);
    EXPECT_EQ(png.substr(1, 3), "PNG");
  }
  EXPECT_EQ(joined, report);  // the sentences cover the report, in order
  EXPECT_EQ(index.size(), sentences.size() * 3 /*layers*/ * 4 /*views*/);
}

}  // namespace

namespace {

// --sr-dir: each reported DICOM study also as a DICOM SR in its own study, written before its line.
TEST(CmnGenerateBatch, SrDirHoldsOneSrPerReportedDicomStudy) {
  const fs::path root = temp("cmn_batch_sr_tree");
  const auto uids = make_tree(root, 2);
  const fs::path sr_dir = temp("cmn_batch_sr_out");
  fs::remove_all(sr_dir);
  const auto r = run(std::string(CMN_GENERATE_BIN) + " --bundle " + untrained_bundle() + " --dicom " + root.string() +
                     " --sr-dir " + sr_dir.string() + quick());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 2u);
  for (const auto& l : lines) {
    ASSERT_TRUE(l.contains("sr_file")) << l;
    const std::string path = l.at("sr_file").get<std::string>();
    EXPECT_EQ(fs::path(path).filename().string(), l.at("id").get<std::string>() + ".dcm");
    DcmFileFormat sr;
    ASSERT_TRUE(sr.loadFile(path.c_str()).good()) << path;
    OFString study, modality, flag;
    sr.getDataset()->findAndGetOFString(DCM_StudyInstanceUID, study);
    sr.getDataset()->findAndGetOFString(DCM_Modality, modality);
    sr.getDataset()->findAndGetOFString(DCM_VerificationFlag, flag);
    EXPECT_EQ(std::string(study.c_str()), l.at("id").get<std::string>());
    EXPECT_EQ(std::string(modality.c_str()), "SR");
    EXPECT_EQ(std::string(flag.c_str()), "UNVERIFIED");
    std::vector<std::string> sources;
    for (const auto& slot : l.at("instances")) sources.push_back(slurp(slot.at("source").get<std::string>()));
    EXPECT_EQ(cmn::testing::sr_validator_problems({slurp(path)}, "TID_2000", sources), "");
  }
  const auto usage = run(std::string(CMN_GENERATE_BIN) + " --bundle " + untrained_bundle() + " --images " +
                         shared("parity/dev/images/study0_view0.png") + " --sr-dir " + sr_dir.string());
  EXPECT_EQ(usage.exit_code, 2) << usage.err;
}

// --findings-sr-dir (with --sr-dir): each reported DICOM study's coded findings as a TID 1500 SR next to its
// report SR, both clean in PixelMed and dciodvfy, the same model's.
TEST(CmnGenerateBatch, FindingsSrDirHoldsACodedFindingsSrPerStudy) {
  const fs::path root = temp("cmn_batch_findings_tree");
  make_tree(root, 1);
  const fs::path sr_dir = temp("cmn_batch_findings_sr");
  const fs::path findings_dir = temp("cmn_batch_findings_out");
  fs::remove_all(sr_dir);
  fs::remove_all(findings_dir);
  const auto r = run(std::string(CMN_GENERATE_BIN) + " --bundle " + untrained_bundle() + " --dicom " + root.string() +
                     " --sr-dir " + sr_dir.string() + " --findings-sr-dir " + findings_dir.string() + quick());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 1u);
  const auto& l = lines[0];
  ASSERT_TRUE(l.contains("findings_sr_file")) << l;
  ASSERT_TRUE(l.contains("sr_file")) << l;
  const std::string path = l.at("findings_sr_file").get<std::string>();
  EXPECT_EQ(fs::path(path).parent_path(), findings_dir);
  DcmFileFormat sr;
  ASSERT_TRUE(sr.loadFile(path.c_str()).good()) << path;
  OFString sop_class, study, model;
  sr.getDataset()->findAndGetOFString(DCM_SOPClassUID, sop_class);
  sr.getDataset()->findAndGetOFString(DCM_StudyInstanceUID, study);
  sr.getDataset()->findAndGetOFString(DCM_ManufacturerModelName, model);
  EXPECT_EQ(std::string(sop_class.c_str()), "1.2.840.10008.5.1.4.1.1.88.34");  // Comprehensive 3D SR
  EXPECT_EQ(std::string(study.c_str()), l.at("id").get<std::string>());
  EXPECT_FALSE(std::string(model.c_str()).empty());
  std::vector<std::string> sources;
  for (const auto& slot : l.at("instances")) sources.push_back(slurp(slot.at("source").get<std::string>()));
  EXPECT_EQ(cmn::testing::sr_validator_problems({slurp(path)}, "TID_1500", sources), "");
  EXPECT_EQ(cmn::testing::sr_validator_problems({slurp(l.at("sr_file").get<std::string>())}, "TID_2000", sources), "");
}

// --fhir-dir: each reported DICOM study also as a FHIR R4 DiagnosticReport, valid for FHIR.js, written before
// its line (atomically: no temporary file is left).
TEST(CmnGenerateBatch, FhirDirHoldsOneValidDiagnosticReportPerReportedDicomStudy) {
  const std::string missing = cmn::testing::fhir_validator_missing();
  ASSERT_TRUE(missing.empty()) << missing;
  const fs::path root = temp("cmn_batch_fhir_tree");
  const auto uids = make_tree(root, 2);
  const fs::path fhir_dir = temp("cmn_batch_fhir_out");
  fs::remove_all(fhir_dir);
  const auto r = run(std::string(CMN_GENERATE_BIN) + " --bundle " + untrained_bundle() + " --dicom " + root.string() +
                     " --fhir-dir " + fhir_dir.string() + quick());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 2u);
  for (const auto& l : lines) {
    ASSERT_TRUE(l.contains("fhir_file")) << l;
    const std::string path = l.at("fhir_file").get<std::string>();
    EXPECT_EQ(fs::path(path).filename().string(), l.at("id").get<std::string>() + ".json");
    const auto v = cmn::testing::validate_fhir_file(path);
    EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
    const auto report = nlohmann::json::parse(slurp(path));
    EXPECT_EQ(report.at("imagingStudy")[0]["identifier"]["value"], "urn:oid:" + l.at("study").get<std::string>());
    EXPECT_EQ(report.at("status"), "preliminary");
    const std::string conclusion = report.at("conclusion");
    const std::string text = l.at("report");
    ASSERT_GE(conclusion.size(), text.size());
    EXPECT_EQ(conclusion.substr(conclusion.size() - text.size()), text);
    EXPECT_EQ(conclusion.rfind("UNTRAINED", 0), 0u) << "the untrained bundle's report must say so";
    EXPECT_EQ(report.at("contained")[0]["identifier"][0]["value"], l.at("model").at("digest"));
  }
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(fhir_dir)) {
    EXPECT_EQ(e.path().extension(), ".json") << e.path();
    ++files;
  }
  EXPECT_EQ(files, 2u);
  const auto usage = run(std::string(CMN_GENERATE_BIN) + " --bundle " + untrained_bundle() + " --images " +
                         shared("parity/dev/images/study0_view0.png") + " --fhir-dir " + fhir_dir.string());
  EXPECT_EQ(usage.exit_code, 2) << usage.err;
}

}  // namespace
