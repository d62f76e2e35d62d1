// Runs cmn-generate / cmn-bench as a user would and checks what they print and return.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"

#include "common/run_command.h"

namespace {

namespace fs = std::filesystem;

std::string shared(const std::string& rel) { return std::string(CMN_SHARED_DIR) + "/" + rel; }

using cmn::testing::RunResult;

RunResult run(const std::string& command) { return cmn::testing::run_command(command, "cmn_cli"); }

std::string parity_model_args() {
  return " --r2gencmn " + shared("parity/dev/model.pth") + " --args " + shared("parity/dev/config.json") +
         " --annotation " + shared("data/iu_xray/annotation.json");
}

std::string fixture_images() {
  std::string s = " --images";
  for (int study = 0; study < 2; ++study) {
    for (int view = 0; view < 4; ++view) {
      s += " " + shared("parity/dev/images/study" + std::to_string(study) + "_view" + std::to_string(view) + ".png");
    }
  }
  return s;
}

// PNG files -> PIL-exact preprocessing -> model -> beam search -> text: the reference's reports, word for word.
TEST(CmnGenerate, FixturePngsGiveTheReferenceBeamReports) {
  const auto expected = nlohmann::json::parse(std::ifstream(shared("parity/dev/expected.json")));
  const fs::path out = fs::path(::testing::TempDir()) / "cmn_generate_out.jsonl";
  fs::remove(out);
  const auto r = run(std::string(CMN_GENERATE_BIN) + parity_model_args() + fixture_images() +
                     " --beam-size 3 --max-length 60 --threads 1 --output " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(out);
  std::string line;
  int study = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j.at("study").get<int>(), study);
    const auto want_ids = expected.at("beam_ids")[study].get<std::vector<int64_t>>();
    auto got_ids = j.at("token_ids").get<std::vector<int64_t>>();
    // The fixture rows are padded with 0 to max_seq_length; ours stop at the end of the report.
    got_ids.resize(want_ids.size(), 0);
    EXPECT_EQ(got_ids, want_ids);
    EXPECT_EQ(j.at("report").get<std::string>(), expected.at("beam_reports")[study].get<std::string>());
    EXPECT_LT(j.at("log_prob").get<double>(), 0.0);
    EXPECT_FALSE(j.at("model").at("untrained").get<bool>());
    ++study;
  }
  EXPECT_EQ(study, 2);
  EXPECT_FALSE(fs::exists(out.string() + ".tmp"));
}

TEST(CmnGenerate, MissingImageIsOneClearLineAndNonZeroExit) {
  const auto r = run(std::string(CMN_GENERATE_BIN) + parity_model_args() + " --images /nonexistent/a.png");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("/nonexistent/a.png"), std::string::npos) << r.err;
}

TEST(CmnGenerate, CorruptImageFailsItsStudyNamingTheFile) {
  const fs::path bad = fs::path(::testing::TempDir()) / "not_an_image.png";
  std::ofstream(bad) << "this is not a PNG";
  std::string images = " --images " + bad.string();
  for (int view = 1; view < 4; ++view) images += " " + shared("parity/dev/images/study0_view" + std::to_string(view) + ".png");
  const auto r = run(std::string(CMN_GENERATE_BIN) + parity_model_args() + images + " --max-length 5");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not_an_image.png"), std::string::npos) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_NE(j.at("error").get<std::string>().find("not_an_image.png"), std::string::npos);
}

TEST(CmnGenerate, BadCheckpointIsAClearErrorNotACrash) {
  const fs::path bad = fs::path(::testing::TempDir()) / "broken.pth";
  std::ofstream(bad) << "PK\x03\x04 truncated";
  const auto r = run(std::string(CMN_GENERATE_BIN) + " --r2gencmn " + bad.string() + " --args " +
                     shared("parity/dev/config.json") + " --annotation " + shared("data/iu_xray/annotation.json") +
                     fixture_images());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("broken.pth"), std::string::npos) << r.err;
}

TEST(CmnGenerate, ImageCountMustBeAMultipleOfViews) {
  const auto r = run(std::string(CMN_GENERATE_BIN) + parity_model_args() + " --images " +
                     shared("parity/dev/images/study0_view0.png"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("multiple"), std::string::npos) << r.err;
}

TEST(CmnBench, PrintsOneJsonLineOfMedians) {
  const auto r = run(std::string(CMN_BENCH_BIN) + " --r2gencmn " + shared("parity/dev/model.pth") + " --args " +
                     shared("parity/dev/config.json") + " --inputs " + shared("parity/dev/inputs.pt") +
                     " --repeat 1 --max-length 4 --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  for (const char* key : {"preprocess_s", "visual_s", "encode_s", "decode_s", "total_s"}) {
    EXPECT_GE(j.at(key).get<double>(), 0.0) << key;
  }
  EXPECT_GT(j.at("total_s").get<double>(), 0.0);
  EXPECT_EQ(j.at("studies").get<int>(), 2);
  EXPECT_EQ(j.at("threads").get<int>(), 1);
  EXPECT_EQ(j.at("device").get<std::string>(), "cpu");
}

// --precision int8 (available wherever LibTorch has a quantized engine, as Debian's has): the same two studies
// get reports; a name that is not a precision is a usage error naming the flag.
TEST(CmnGenerate, PrecisionInt8WritesReportsAndOtherNamesAreUsageErrors) {
  const fs::path out = fs::path(::testing::TempDir()) / ("cmn_generate_int8_" + std::to_string(getpid()) + ".jsonl");
  fs::remove(out);
  const auto r = run(std::string(CMN_GENERATE_BIN) + parity_model_args() + fixture_images() +
                     " --beam-size 3 --max-length 20 --threads 1 --precision int8 --output " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(out);
  int studies = 0;
  for (std::string line; std::getline(in, line); ++studies) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_FALSE(j.at("report").get<std::string>().empty());
    EXPECT_LT(j.at("log_prob").get<double>(), 0.0);
  }
  EXPECT_EQ(studies, 2);
  const auto bad = run(std::string(CMN_GENERATE_BIN) + parity_model_args() + fixture_images() + " --precision fp16");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("--precision"), std::string::npos) << bad.err;
}

// cmn-precision-check: one JSON line per asked precision, with agreement, log-prob deltas and speed ratios.
TEST(CmnPrecisionCheck, PrintsAgreementLogProbDeltasAndSpeedPerPrecision) {
  const auto r = run(std::string(CMN_PRECISION_CHECK_BIN) + " --r2gencmn " + shared("parity/dev/model.pth") +
                     " --args " + shared("parity/dev/config.json") + " --inputs " + shared("parity/dev/inputs.pt") +
                     " --precisions int8 --repeat 1 --max-length 8 --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("precision").get<std::string>(), "int8");
  EXPECT_EQ(j.at("studies").get<int>(), 2);
  EXPECT_GE(j.at("exact_reports").get<int>(), 0);
  EXPECT_LE(j.at("exact_reports").get<int>(), 2);
  EXPECT_GT(j.at("token_f1_mean").get<double>(), 0.5);
  EXPECT_LE(j.at("token_f1_mean").get<double>(), 1.0);
  // Teacher-forced over fp32's own tokens: int8 moves a token's log-prob by hundredths, not tenths.
  EXPECT_GT(j.at("logprob_delta_max").get<double>(), 0.0);
  EXPECT_LT(j.at("logprob_delta_max").get<double>(), 0.2);
  EXPECT_GT(j.at("total_speedup").get<double>(), 0.0);
  const auto bad = run(std::string(CMN_PRECISION_CHECK_BIN) + " --r2gencmn x --args y --random 1 --precisions fp16");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("fp16"), std::string::npos) << bad.err;
}

TEST(CmnBench, UnknownOptionIsAUsageError) {
  const auto r = run(std::string(CMN_BENCH_BIN) + " --bogus 1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--bogus"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------------
// cmn-generate --dicom: folder trees of DICOM instances, grouped into studies by StudyInstanceUID.

std::string chest(const std::string& name) { return shared("data/dicom/chest/" + name); }

constexpr char kCrStudy[] = "1.2.392.200036.9125.0.199302241758.16";   // gdcm-CR-MONO1-10-chest (PA)
constexpr char kCrSop[] = "1.2.392.200036.9125.0.19950720112207";
constexpr char kJpegSop[] = "1.2.276.0.7230010.3.1.4.8323329.5910.1497009828.987561";  // orthanc issue 44
constexpr char kNihStudy[] = "1.3.6.1.4.1.11129.5.5.112507010803284478207522016832191866964708";
constexpr char kNihSop[] = "1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888";

// An untrained 4-view bundle (random weights), made once per run of this binary.
std::string untrained_bundle() {
  static const std::string dir = [] {
    // Per process: ctest runs the tests of this binary in parallel processes, which must not share it.
    const fs::path d = fs::path(::testing::TempDir()) / ("cmn_cli_untrained_bundle_v4_" + std::to_string(getpid()));
    fs::remove_all(d);
    const auto r = run(std::string(CMN_BUNDLE_BIN) + " init-untrained --out " + d.string() + " --vocab " +
                       CMN_SOURCE_DIR + "/configs/default_vocab.txt --views 4 --seed 1");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return d.string();
  }();
  return dir;
}

// A fresh folder for one test's DICOM tree.
fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::path(::testing::TempDir()) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Copies a real instance into the tree, giving it another StudyInstanceUID when `study` is not empty.
void copy_instance(const std::string& from, const fs::path& to, const std::string& study = "") {
  fs::create_directories(to.parent_path());
  if (study.empty()) {
    fs::copy_file(from, to, fs::copy_options::overwrite_existing);
    return;
  }
  DcmFileFormat file;
  ASSERT_TRUE(file.loadFile(from.c_str()).good()) << from;
  ASSERT_TRUE(file.getDataset()->putAndInsertString(DCM_StudyInstanceUID, study.c_str()).good());
  const OFCondition cond = file.saveFile(to.c_str());  // same transfer syntax as read
  ASSERT_TRUE(cond.good()) << cond.text();
}

// A Basic Text SR (no pixels) in `study`.
void write_sr(const fs::path& to, const std::string& study, const std::string& sop) {
  fs::create_directories(to.parent_path());
  DcmFileFormat file;
  DcmDataset* ds = file.getDataset();
  ASSERT_TRUE(ds->putAndInsertString(DCM_SOPClassUID, UID_BasicTextSRStorage).good());
  ASSERT_TRUE(ds->putAndInsertString(DCM_SOPInstanceUID, sop.c_str()).good());
  ASSERT_TRUE(ds->putAndInsertString(DCM_StudyInstanceUID, study.c_str()).good());
  ASSERT_TRUE(ds->putAndInsertString(DCM_SeriesInstanceUID, (sop + ".1").c_str()).good());
  ASSERT_TRUE(ds->putAndInsertString(DCM_Modality, "SR").good());
  ASSERT_TRUE(ds->putAndInsertString(DCM_ValueType, "CONTAINER").good());
  const OFCondition cond = file.saveFile(to.c_str(), EXS_LittleEndianExplicit);
  ASSERT_TRUE(cond.good()) << cond.text();
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

std::vector<std::string> slot_sops(const nlohmann::json& line) {
  std::vector<std::string> sops;
  for (const auto& slot : line.at("instances")) sops.push_back(slot.at("sop_instance_uid").get<std::string>());
  return sops;
}

TEST(CmnGenerateDicom, FolderTreeGivesOneLinePerStudyWithSlotsAndSkips) {
  const fs::path root = fresh_dir("cmn_cli_dicom_tree");
  copy_instance(chest("gdcm-CR-MONO1-10-chest_explicitLE.dcm"), root / "a" / "pa.dcm");
  // Another real chest image (no view attributes), moved into the same study.
  copy_instance(chest("CR_Monochrome1-JpegBaseline_orthanc-issue44.dcm"), root / "a" / "sub" / "other.dcm", kCrStudy);
  write_sr(root / "a" / "report.dcm", kCrStudy, "1.2.826.0.1.3680043.8.498.77");
  copy_instance(chest("NIH-ChestXray14_DX_implicitLE.dcm"), root / "b" / "nih.dcm");
  fs::create_directories(root / ".cache");
  std::ofstream(root / ".cache" / "junk.txt") << "hidden folders are ignored";
  const fs::path out = fs::path(::testing::TempDir()) / "cmn_generate_dicom_out.jsonl";
  fs::remove(out);

  const auto r = run(std::string(CMN_GENERATE_BIN) + " --bundle " + untrained_bundle() + " --dicom " + root.string() +
                     " --max-length 4 --beam-size 2 --threads 2 --output " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::stringstream ss;
  ss << std::ifstream(out).rdbuf();
  const auto lines = json_lines(ss.str());
  ASSERT_EQ(lines.size(), 2u) << ss.str();

  // Studies in StudyInstanceUID order.
  const auto& cr = lines[0];
  EXPECT_EQ(cr.at("study").get<std::string>(), kCrStudy);
  // PA first, then the only other image; 2 images for 4 slots cycle.
  EXPECT_EQ(slot_sops(cr), (std::vector<std::string>{kCrSop, kJpegSop, kCrSop, kJpegSop}));
  const auto& slot0 = cr.at("instances")[0];
  EXPECT_EQ(slot0.at("slot").get<int>(), 0);
  EXPECT_EQ(slot0.at("view").get<std::string>(), "PA");
  EXPECT_EQ(slot0.at("series_instance_uid").get<std::string>(), kCrStudy);  // this file's series UID = study UID
  EXPECT_NE(slot0.at("reason").get<std::string>().find("frontal PA"), std::string::npos) << slot0;
  EXPECT_NE(cr.at("instances")[2].at("reason").get<std::string>().find("repeat of slot 0"), std::string::npos);
  ASSERT_EQ(cr.at("skipped").size(), 1u);
  EXPECT_EQ(cr.at("skipped")[0].at("sop_instance_uid").get<std::string>(), "1.2.826.0.1.3680043.8.498.77");
  EXPECT_NE(cr.at("skipped")[0].at("reason").get<std::string>().find("not an image (Basic Text SR)"),
            std::string::npos);
  EXPECT_TRUE(cr.at("report").is_string());
  EXPECT_TRUE(cr.at("model").at("untrained").get<bool>());
  EXPECT_TRUE(cr.contains("warning"));
  EXPECT_FALSE(cr.contains("error"));

  const auto& nih = lines[1];
  EXPECT_EQ(nih.at("study").get<std::string>(), kNihStudy);
  EXPECT_EQ(slot_sops(nih), (std::vector<std::string>(4, kNihSop)));
  EXPECT_TRUE(nih.at("skipped").empty());
  EXPECT_TRUE(nih.at("report").is_string());
  EXPECT_FALSE(fs::exists(out.string() + ".tmp"));
}

TEST(CmnGenerateDicom, BadFilesAndStudiesFailAloneWithClearMessages) {
  const fs::path root = fresh_dir("cmn_cli_dicom_bad");
  copy_instance(chest("NIH-ChestXray14_DX_implicitLE.dcm"), root / "good" / "nih.dcm");
  std::ofstream(root / "notes.txt") << "not a DICOM file";
  write_sr(root / "sr_only" / "report.dcm", "1.2.826.0.1.3680043.8.498.5", "1.2.826.0.1.3680043.8.498.55");

  const auto r = run(std::string(CMN_GENERATE_BIN) + " --bundle " + untrained_bundle() + " --dicom " + root.string() +
                     " --max-length 3 --beam-size 1 --threads 2");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("notes.txt"), std::string::npos) << r.err;
  const auto lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 2u) << r.out;
  // "1.2.826..." sorts before "1.3.6...": the SR-only study first, with its error; the good study reported.
  EXPECT_EQ(lines[0].at("study").get<std::string>(), "1.2.826.0.1.3680043.8.498.5");
  ASSERT_TRUE(lines[0].contains("error")) << lines[0];
  EXPECT_NE(lines[0].at("error").get<std::string>().find("no usable image"), std::string::npos) << lines[0];
  EXPECT_FALSE(lines[0].contains("report"));
  EXPECT_EQ(lines[1].at("study").get<std::string>(), kNihStudy);
  EXPECT_TRUE(lines[1].at("report").is_string()) << lines[1];
}

TEST(CmnGenerateDicom, ImagesAndDicomTogetherIsAUsageError) {
  const auto r = run(std::string(CMN_GENERATE_BIN) + " --bundle " + untrained_bundle() + " --images " +
                     shared("parity/dev/images/study0_view0.png") + " --dicom " + chest("RG1_JLSN.dcm"));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--dicom"), std::string::npos) << r.err;
}

// --draft-decode (issue 15): DICOM only, runs end to end on a JPEG 2000 study (the decoding itself is tested in
// tests/preprocessing/draft_decode_test.cc, its plumbing into the batch's study options there and in
// request_intake_test.cc).
TEST(CmnGenerateDicom, DraftDecodeRunsOnJpeg2000AndGoesOnlyWithDicom) {
  const fs::path out = fs::path(::testing::TempDir()) / "cmn_generate_draft_out.jsonl";
  fs::remove(out);
  const auto r = run(std::string(CMN_GENERATE_BIN) + " --bundle " + untrained_bundle() + " --dicom " +
                     chest("RG1_J2KI.dcm") + " --draft-decode --max-length 4 --beam-size 1 --threads 2 --output " +
                     out.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::stringstream ss;
  ss << std::ifstream(out).rdbuf();
  const auto lines = json_lines(ss.str());
  ASSERT_EQ(lines.size(), 1u) << ss.str();
  EXPECT_TRUE(lines[0].at("report").is_string()) << lines[0];

  const auto images = run(std::string(CMN_GENERATE_BIN) + " --bundle " + untrained_bundle() + " --images " +
                          shared("parity/dev/images/study0_view0.png") + " --draft-decode");
  EXPECT_EQ(images.exit_code, 2) << images.err;
  EXPECT_NE(images.err.find("--draft-decode go with --dicom"), std::string::npos) << images.err;
}

}  // namespace

// ---- cmn-eval ----------------------------------------------------------------------------------------------
namespace {

// A tiny annotation: the vocabulary (threshold 1) comes from the one train report, so "enlarged", "no" and
// "effusion" are <unk> in the references.
fs::path write_eval_annotation(const fs::path& dir) {
  fs::create_directories(dir);
  const fs::path path = dir / "annotation.json";
  std::ofstream(path) << R"({"train": [{"id": "t1", "report": "The heart is normal. The lungs are clear.", "image_path": []}],
    "test": [{"id": "s1", "report": "The heart is normal. The lungs are clear.", "image_path": []},
             {"id": "s2", "report": "The heart is enlarged. No effusion.", "image_path": []}]})";
  return path;
}

std::string eval_cmd(const fs::path& annotation, const fs::path& preds, const std::string& extra = "") {
  return std::string(CMN_EVAL_BIN) + " --annotation " + annotation.string() + " --split test --predictions " +
         preds.string() + " --threshold 1" + extra;
}

// References are R2GenCMN's decoded ids: cleaned, <unk>-mapped, truncated to max_seq_length - 1 words.
TEST(CmnEval, ScoresAgainstR2GenCMNReferences) {
  const fs::path dir = fs::path(::testing::TempDir()) / "cmn_eval_ok";
  const fs::path annotation = write_eval_annotation(dir);
  const fs::path preds = dir / "preds.jsonl";
  std::ofstream(preds) << R"({"id": "s2", "report": "the heart is <unk> . <unk> <unk> ."})" << "\n"
                       << R"({"id": "s1", "report": "the heart is normal . the lungs are clear ."})" << "\n";
  auto r = run(eval_cmd(annotation, preds));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  for (const char* key : {"BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr"}) {
    ASSERT_TRUE(j.contains(key) && j.at(key).is_number()) << key << " in " << r.out;
  }
  EXPECT_NEAR(j.at("BLEU_4").get<double>(), 1.0, 1e-6);
  EXPECT_NEAR(j.at("ROUGE_L").get<double>(), 1.0, 1e-12);
  EXPECT_NE(j.at("METEOR_method").get<std::string>().find("not METEOR 1.5"), std::string::npos);

  // --max-seq-length 5 keeps 4 words: "the heart is normal" / "the heart is <unk>". Clipped unigrams
  // 4 of 10 and 4 of 8 (the hypotheses are longer: no brevity penalty) -> BLEU_1 = 8/18.
  r = run(eval_cmd(annotation, preds, " --max-seq-length 5"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_NEAR(j.at("BLEU_1").get<double>(), 8.0 / 18.0, 1e-8);
}

TEST(CmnEval, BadPredictionsAreOneLineNamingTheProblem) {
  const fs::path dir = fs::path(::testing::TempDir()) / "cmn_eval_bad";
  const fs::path annotation = write_eval_annotation(dir);
  const fs::path preds = dir / "preds.jsonl";
  auto expect_error = [&](const std::string& content, const std::string& needle) {
    std::ofstream(preds, std::ios::trunc) << content;
    const auto r = run(eval_cmd(annotation, preds));
    EXPECT_EQ(r.exit_code, 1) << content;
    EXPECT_TRUE(r.out.empty()) << r.out;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;  // exactly one line
  };
  expect_error(R"({"id": "s1", "report": "x"})" "\n", "missing prediction for id 's2'");
  expect_error(R"({"id": "s1", "report": "x"})" "\n" R"({"id": "s9", "report": "x"})" "\n", "preds.jsonl:2: unknown id 's9'");
  expect_error(R"({"id": "s1", "report": "x"})" "\n" "not json\n", "preds.jsonl:2: malformed line");
  expect_error(R"({"id": "s1"})" "\n", "preds.jsonl:1: malformed line");
}

}  // namespace
