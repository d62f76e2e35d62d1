// Runs cmn-generate / cmn-bench as a user would and checks what they print and return.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace {

namespace fs = std::filesystem;

std::string shared(const std::string& rel) { return std::string(CMN_SHARED_DIR) + "/" + rel; }

struct RunResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

RunResult run(const std::string& command) {
  const fs::path err_file = fs::path(::testing::TempDir()) / "cmn_cli_stderr.txt";
  RunResult r;
  FILE* pipe = popen((command + " 2>" + err_file.string()).c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) r.out.append(buf, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream e(err_file);
  std::stringstream ss;
  ss << e.rdbuf();
  r.err = ss.str();
  return r;
}

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
                     " --beam-size 3 --max-length 60 --threads 2 --output " + out.string());
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
                     " --repeat 1 --max-length 4 --threads 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  for (const char* key : {"preprocess_s", "visual_s", "encode_s", "decode_s", "total_s"}) {
    EXPECT_GE(j.at(key).get<double>(), 0.0) << key;
  }
  EXPECT_GT(j.at("total_s").get<double>(), 0.0);
  EXPECT_EQ(j.at("studies").get<int>(), 2);
  EXPECT_EQ(j.at("threads").get<int>(), 2);
  EXPECT_EQ(j.at("device").get<std::string>(), "cpu");
}

TEST(CmnBench, UnknownOptionIsAUsageError) {
  const auto r = run(std::string(CMN_BENCH_BIN) + " --bogus 1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--bogus"), std::string::npos);
}

}  // namespace
