// Reading a model bundle: read_bundle_info verifies every file against SHA256SUMS before interpreting any,
// load_bundle then builds the tokenizer and the model. (The file helpers the other parts share: bundle_files.cc.)
#include "cmn/pipeline/bundle.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>

#include "absl/strings/str_cat.h"
#include "bundle_internal.h"
#include "cmn/common/durable_write.h"
#include "cmn/common/status_macros.h"

namespace cmn::pipeline {
namespace fs = std::filesystem;


using bundle_detail::ChecksumEntry;
using bundle_detail::parse_model_yaml;
using bundle_detail::parse_sha256sums;
using bundle_detail::path_in;
using bundle_detail::read_file_bytes;

absl::StatusOr<BundleInfo> read_bundle_info(const std::string& dir) {
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (!fs::exists(st)) return absl::NotFoundError(absl::StrCat("bundle directory '", dir, "' does not exist"));
  if (!fs::is_directory(st)) return absl::InvalidArgumentError(absl::StrCat("bundle '", dir, "' is not a directory"));

  const std::string sums_path = path_in(dir, kChecksumFile);
  if (!fs::exists(sums_path, ec)) {
    return absl::NotFoundError(absl::StrCat(sums_path, " is missing: '", dir, "' is not a model bundle"));
  }
  CMN_ASSIGN_OR_RETURN(const std::string sums, read_file_bytes(sums_path));
  CMN_ASSIGN_OR_RETURN(const std::vector<ChecksumEntry> entries, parse_sha256sums(sums, sums_path));

  // Integrity first: nothing of a file is interpreted before its bytes are known to be the published ones.
  // model.yaml is hashed from the same bytes that are parsed, so an edit between the two cannot slip in.
  const std::string yaml_path = path_in(dir, kModelYaml);
  std::string yaml_text;
  bool yaml_listed = false;
  for (const ChecksumEntry& entry : entries) {
    const std::string file_path = path_in(dir, entry.file);
    std::string actual;
    if (entry.file == kModelYaml) {
      CMN_ASSIGN_OR_RETURN(yaml_text, read_file_bytes(file_path));
      actual = sha256_hex(yaml_text);
      yaml_listed = true;
    } else {
      auto hashed = sha256_file(file_path);
      if (!hashed.ok()) {
        return absl::Status(hashed.status().code(),
                            absl::StrCat("bundle '", dir, "': ", entry.file, " (listed in SHA256SUMS): ",
                                         hashed.status().message()));
      }
      actual = *std::move(hashed);
    }
    if (actual != entry.hex) {
      return absl::DataLossError(absl::StrCat("bundle '", dir, "': ", entry.file,
                                              " does not match its SHA256SUMS entry (expected ", entry.hex,
                                              ", got ", actual, "): the file was changed or damaged"));
    }
  }
  if (!yaml_listed) {
    return absl::InvalidArgumentError(absl::StrCat(sums_path, " does not cover ", kModelYaml));
  }

  CMN_ASSIGN_OR_RETURN(BundleInfo info, parse_model_yaml(yaml_text, yaml_path));
  for (const std::string& required : {info.weights_file, std::string(kVocabFile)}) {
    bool listed = false;
    for (const ChecksumEntry& entry : entries) listed = listed || entry.file == required;
    if (!listed) return absl::InvalidArgumentError(absl::StrCat(sums_path, " does not cover ", required));
  }
  info.dir = dir;
  info.digest = "sha256:" + sha256_hex(sums);
  return info;
}

absl::StatusOr<LoadedBundle> load_bundle(const std::string& dir) {
  LoadedBundle bundle;
  CMN_ASSIGN_OR_RETURN(bundle.info, read_bundle_info(dir));
  model::ModelConfig config = bundle.info.config;

  const std::string vocab_path = path_in(dir, kVocabFile);
  try {
    bundle.tokenizer = model::Tokenizer::from_vocab_file(vocab_path, model::cleaning_rule_for_dataset(config.dataset_name));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("bundle '", dir, "': ", kVocabFile, ": ", e.what()));
  }
  if (config.vocab_size != 0 && config.vocab_size != bundle.tokenizer.vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat("bundle '", dir, "': ", kVocabFile, " has ",
                                                   bundle.tokenizer.vocab_size(), " tokens but model.yaml's ",
                                                   "architecture.vocab_size is ", config.vocab_size));
  }
  config.vocab_size = bundle.tokenizer.vocab_size();

  const std::string weights_path = path_in(dir, bundle.info.weights_file);
  try {
    bundle.model = model::load_r2gencmn(weights_path, config);
    bundle.model->eval();
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("bundle '", dir, "': ", bundle.info.weights_file, ": ", e.what_without_backtrace()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("bundle '", dir, "': out of memory loading ", bundle.info.weights_file));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("bundle '", dir, "': ", bundle.info.weights_file, ": ", e.what()));
  }
  bundle.info.config = config;
  return bundle;
}

}  // namespace cmn::pipeline
