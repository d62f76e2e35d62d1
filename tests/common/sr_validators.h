#pragma once
// The two DICOM validators a PACS vendor would run on cmn's SRs, run on the bytes the tests produce:
// PixelMed's DicomSRValidator (IOD + SR template: Debian libpixelmed-java, run on a JRE) and dciodvfy (IOD and
// value checks: Debian dicom3tools). scripts/setup.sh installs both; a missing one is a failure, not a skip.
// Needs CMN_SOURCE_DIR (for tests/common/SrValidate.java).
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/run_command.h"

namespace cmn::testing {

namespace sr_validators_detail {

inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

inline std::string write_temp(const std::string& bytes, const std::string& stem) {
  static int count = 0;
  const std::filesystem::path path = std::filesystem::path(::testing::TempDir()) /
                                     (stem + "_" + std::to_string(::getpid()) + "_" + std::to_string(++count) + ".dcm");
  std::ofstream(path, std::ios::binary) << bytes;
  return path.string();
}

// dciodvfy's "Error" lines for a file (it reports on stderr).
inline std::vector<std::string> dciodvfy_errors(const std::string& path, std::string* problems) {
  const RunResult r = run_command("dciodvfy '" + path + "'", "dciodvfy");
  if (r.exit_code == 127) {
    *problems += "dciodvfy not found (Debian dicom3tools; scripts/setup.sh installs it)\n";
    return {};
  }
  std::vector<std::string> errors;
  for (const auto& line : lines_of(r.err + r.out)) {
    if (line.rfind("Error", 0) == 0) errors.push_back(line);
  }
  return errors;
}

}  // namespace sr_validators_detail

// "" when every SR in `srs` is clean: PixelMed found `root_template` (e.g. "TID_2000") as the root template,
// completed its template and IOD validation and printed no "Warning" and no "Error" line; dciodvfy printed no
// "Error" line that it does not also print for one of `sources` (a value copied from an invalid source instance
// is not the SR's error). Otherwise the problems, with the validators' reports.
inline std::string sr_validator_problems(const std::vector<std::string>& srs, const std::string& root_template,
                                         const std::vector<std::string>& sources = {}) {
  namespace d = sr_validators_detail;
  std::string problems;
  std::vector<std::string> paths;
  for (const auto& sr : srs) paths.push_back(d::write_temp(sr, "sr_under_test"));

  // PixelMed, all files in one JVM. The -D limits: PixelMed's XPath expressions exceed JDK 17's defaults. C1 only
  // and the serial collector halve the CPU time of such a short run (measured: 15.8 s -> 7.4 s for two SRs).
  std::string command = std::string("java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC ") +
                        "-Djdk.xml.xpathExprOpLimit=0 -Djdk.xml.xpathExprGrpLimit=0 " +
                        "-Djdk.xml.xpathTotalOpLimit=0 -cp /usr/share/java/pixelmed.jar " + CMN_SOURCE_DIR +
                        "/tests/common/SrValidate.java";
  for (const auto& p : paths) command += " '" + p + "'";
  const RunResult pixelmed = run_command(command, "pixelmed");
  if (pixelmed.exit_code == 127) {
    problems += "java not found (Debian default-jre-headless; scripts/setup.sh installs it)\n";
  } else if (pixelmed.exit_code != 0) {
    problems += "PixelMed DicomSRValidator failed (exit " + std::to_string(pixelmed.exit_code) + "): " + pixelmed.err +
                "\n";
  } else {
    for (const auto& p : paths) {
      const std::string header = "=== " + p;
      const auto start = pixelmed.out.find(header + "\n");
      if (start == std::string::npos) {
        problems += "PixelMed printed no report for " + p + "\n";
        continue;
      }
      const auto end = pixelmed.out.find("\n=== ", start + header.size());
      const std::string report = pixelmed.out.substr(start, end == std::string::npos ? std::string::npos : end - start);
      bool bad = report.find("Found Root Template " + root_template + " ") == std::string::npos ||
                 report.find("Root Template Validation Complete") == std::string::npos ||
                 report.find("IOD validation complete") == std::string::npos;
      for (const auto& line : d::lines_of(report)) {
        if (line.rfind("Error", 0) == 0 || line.rfind("Warning", 0) == 0) bad = true;
      }
      if (bad) problems += "PixelMed (expected root template " + root_template + "):\n" + report + "\n";
    }
  }

  // dciodvfy: errors of the SR's own.
  std::set<std::string> source_errors;
  for (const auto& source : sources) {
    const std::string path = d::write_temp(source, "sr_source");
    for (const auto& e : d::dciodvfy_errors(path, &problems)) source_errors.insert(e);
    std::filesystem::remove(path);
  }
  for (const auto& p : paths) {
    for (const auto& e : d::dciodvfy_errors(p, &problems)) {
      if (source_errors.count(e) == 0) problems += "dciodvfy " + p + ": " + e + "\n";
    }
  }
  if (problems.empty()) {
    for (const auto& p : paths) std::filesystem::remove(p);
  }
  return problems;
}

}  // namespace cmn::testing
