#pragma once
// Validates FHIR JSON with the real FHIR.js validator (npm "fhir", pinned in tests/fhir/package.json, installed
// into tests/fhir/node_modules by scripts/setup.sh) through tests/fhir/validate.js. Shared by every test binary
// that checks a DiagnosticReport (the writer, cmn-server's output.fhir, cmn-generate --fhir-dir, cmn-pacs).
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "common/run_command.h"

namespace cmn::testing {

inline std::string fhir_tools_dir() { return std::string(CMN_SOURCE_DIR) + "/tests/fhir"; }

// "" when the validator can run, else what is missing (the test then fails with this message).
inline std::string fhir_validator_missing() {
  if (run_command("node --version", "node").exit_code != 0) return "node is not installed (scripts/setup.sh)";
  if (!std::filesystem::exists(fhir_tools_dir() + "/node_modules/fhir/package.json")) {
    return "FHIR.js is not installed: run scripts/setup.sh (or: cd tests/fhir && npm ci)";
  }
  return "";
}

// Validates one JSON file; exit_code 0 = valid, out = the validator's messages.
inline RunResult validate_fhir_file(const std::string& path) {
  return run_command("node '" + fhir_tools_dir() + "/validate.js' '" + path + "'", "fhir_validate");
}

// Validates JSON text (written to a temporary file first).
inline RunResult validate_fhir_json(const std::string& json) {
  static int calls = 0;
  const std::string path = (std::filesystem::path(::testing::TempDir()) /
                            ("fhir_" + std::to_string(::getpid()) + "_" + std::to_string(++calls) + ".json"))
                               .string();
  std::ofstream(path, std::ios::binary) << json;
  RunResult r = validate_fhir_file(path);
  std::error_code ec;
  std::filesystem::remove(path, ec);
  return r;
}

}  // namespace cmn::testing
