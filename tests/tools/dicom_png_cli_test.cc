// Runs cmn-dicom-png as a user would: PNG names, exit status, one stderr line per failed file.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

namespace {

namespace fs = std::filesystem;

std::string chest(const std::string& name) { return std::string(CMN_SHARED_DIR) + "/data/dicom/chest/" + name; }

struct RunResult {
  int exit_code = -1;
  std::vector<std::string> stderr_lines;
};

RunResult run(const std::string& arguments) {
  // One file per test process: ctest -j runs this binary's tests side by side, and a shared name let one
  // test read another's stderr.
  const fs::path err_file =
      fs::path(::testing::TempDir()) / ("cmn_dicom_png_stderr_" + std::to_string(::getpid()) + ".txt");
  RunResult r;
  const int status = std::system((std::string(CMN_DICOM_PNG_BIN) + " " + arguments + " 2>" + err_file.string() +
                                  " >/dev/null").c_str());
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(err_file);
  for (std::string line; std::getline(in, line);) r.stderr_lines.push_back(line);
  return r;
}

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::path(::testing::TempDir()) / name;
  fs::remove_all(dir);
  return dir;
}

TEST(CmnDicomPng, WritesOneGreyPngPerFile) {
  const fs::path out = fresh_dir("cmn_dicom_png_ok");
  const RunResult r = run(chest("CR-MONO1-10-chest_implicitLE_nometa.dcm") + " " +
                          chest("CR_Monochrome1-JpegBaseline_orthanc-issue44.dcm") + " --output-dir " + out.string());
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(r.stderr_lines.empty()) << r.stderr_lines.front();
  const cv::Mat small = cv::imread((out / "CR-MONO1-10-chest_implicitLE_nometa.png").string(), cv::IMREAD_UNCHANGED);
  ASSERT_FALSE(small.empty());
  EXPECT_EQ(small.type(), CV_8UC1);
  EXPECT_EQ(small.cols, 440);
  const cv::Mat big =
      cv::imread((out / "CR_Monochrome1-JpegBaseline_orthanc-issue44.png").string(), cv::IMREAD_UNCHANGED);
  ASSERT_FALSE(big.empty());
  EXPECT_EQ(big.cols, 2010);
  EXPECT_EQ(big.rows, 2446);
}

TEST(CmnDicomPng, NamesWithoutADicomExtensionKeepTheirWholeName) {
  const fs::path dir = fresh_dir("cmn_dicom_png_uid");
  fs::create_directories(dir);
  const fs::path uid_named = dir / "1.2.840.113619.2.55.3";  // the last component is no extension
  fs::copy_file(chest("gdcm-CR-MONO1-10-chest_explicitLE.dcm"), uid_named);
  const RunResult r = run(uid_named.string() + " --output-dir " + (dir / "out").string());
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(fs::exists(dir / "out" / "1.2.840.113619.2.55.3.png"));
}

TEST(CmnDicomPng, FailuresGiveOneStderrLineEachAndExitStatus1) {
  const fs::path dir = fresh_dir("cmn_dicom_png_bad");
  fs::create_directories(dir);
  std::ofstream(dir / "notes.dcm") << "not a DICOM file";
  const RunResult r = run((dir / "notes.dcm").string() + " " + (dir / "missing.dcm").string() + " " +
                          chest("gdcm-CR-MONO1-10-chest_explicitLE.dcm") + " --output-dir " + (dir / "out").string());
  EXPECT_EQ(r.exit_code, 1);
  ASSERT_EQ(r.stderr_lines.size(), 2u);
  EXPECT_NE(r.stderr_lines[0].find("notes.dcm"), std::string::npos) << r.stderr_lines[0];
  EXPECT_NE(r.stderr_lines[0].find("not a DICOM file"), std::string::npos) << r.stderr_lines[0];
  EXPECT_NE(r.stderr_lines[1].find("missing.dcm"), std::string::npos) << r.stderr_lines[1];
  EXPECT_TRUE(fs::exists(dir / "out" / "gdcm-CR-MONO1-10-chest_explicitLE.png"));  // the good one still converts
  EXPECT_FALSE(fs::exists(dir / "out" / "notes.png"));
}

}  // namespace
