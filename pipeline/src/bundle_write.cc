// Writing a model bundle: write_bundle (into a temporary directory beside the target, published by one
// rename), and the two ways to make one: import_r2gencmn (a trained checkpoint) and init_untrained.
#include "cmn/pipeline/bundle.h"
#include "cmn/pipeline/model_loader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "bundle_internal.h"
#include "cmn/common/status_macros.h"
#include "cmn/model/checkpoint.h"
#include "cmn/model/config_fields.h"

namespace cmn::pipeline {
namespace fs = std::filesystem;
namespace {

using bundle_detail::emit_model_yaml;
using bundle_detail::fsync_dir;
using bundle_detail::is_plain_file_name;
using bundle_detail::path_in;
using bundle_detail::sums_text;
using bundle_detail::write_file_durably;

// --- shared by import and init --------------------------------------------------------------------------

// Which dtype a checkpoint stores its weights in (the first floating tensor decides).
std::string stored_float_dtype(const model::StateDict& state_dict) {
  for (const auto& [key, tensor] : state_dict) {
    if (tensor.is_floating_point()) return tensor.scalar_type() == torch::kHalf ? "float16" : "float32";
  }
  return "float32";
}

absl::Status check_publish_target(const std::string& dir, bool overwrite) {
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (!fs::exists(st)) return absl::OkStatus();
  if (!fs::is_directory(st)) {
    return absl::AlreadyExistsError(absl::StrCat("'", dir, "' exists and is not a directory"));
  }
  if (!overwrite && !fs::is_empty(dir, ec)) {
    return absl::AlreadyExistsError(
        absl::StrCat("bundle directory '", dir, "' already exists and is not empty (replace it with overwrite, cmn-bundle --force)"));
  }
  return absl::OkStatus();
}

// Moves the finished temporary directory into place.
absl::Status publish(const std::string& tmp, const std::string& dir, bool overwrite) {
  CMN_RETURN_IF_ERROR(check_publish_target(dir, overwrite));
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    if (fs::is_empty(dir, ec)) {
      fs::remove(dir, ec);
    } else {
      // Swap both names in one step so readers see the old or the new bundle, never neither; the old one
      // then sits under the temporary name and is deleted.
      if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
        fs::remove_all(tmp, ec);
        return absl::OkStatus();
      }
      // File systems without RENAME_EXCHANGE: a short window without `dir` is the best POSIX offers.
      const std::string old = tmp + ".old";
      if (std::rename(dir.c_str(), old.c_str()) != 0) {
        return absl::InternalError(absl::StrCat("cannot move the old bundle '", dir, "' aside: ", std::strerror(errno)));
      }
      if (std::rename(tmp.c_str(), dir.c_str()) != 0) {
        const int err = errno;
        std::rename(old.c_str(), dir.c_str());
        return absl::InternalError(absl::StrCat("cannot rename '", tmp, "' to '", dir, "': ", std::strerror(err)));
      }
      fs::remove_all(old, ec);
      return absl::OkStatus();
    }
  }
  if (std::rename(tmp.c_str(), dir.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename '", tmp, "' to '", dir, "': ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// Removes the temporary directory unless it was published.
class TempDirGuard {
 public:
  explicit TempDirGuard(std::string path) : path_(std::move(path)) {}
  ~TempDirGuard() {
    if (!path_.empty()) {
      std::error_code ec;
      fs::remove_all(path_, ec);
    }
  }
  void release() { path_.clear(); }
  TempDirGuard(const TempDirGuard&) = delete;
  TempDirGuard& operator=(const TempDirGuard&) = delete;

 private:
  std::string path_;
};

}  // namespace

absl::Status write_bundle(const std::string& dir, const BundleInfo& meta, model::R2GenCMN& model,
                          const model::Tokenizer& tokenizer, const WriteBundleOptions& options) {
  if (dir.empty()) return absl::InvalidArgumentError("write_bundle: empty directory name");
  if (model.is_empty()) return absl::InvalidArgumentError("write_bundle: no model");
  if (meta.name.empty() || meta.version.empty()) {
    return absl::InvalidArgumentError("write_bundle: name and version must not be empty");
  }
  if (!is_plain_file_name(meta.weights_file) || meta.weights_file == kModelYaml || meta.weights_file == kVocabFile ||
      meta.weights_file == kChecksumFile) {
    return absl::InvalidArgumentError(absl::StrCat("write_bundle: bad weights file name '", meta.weights_file, "'"));
  }
  if (meta.weights_format != kWeightsFormatR2GenCMN) {
    return absl::InvalidArgumentError(absl::StrCat("write_bundle: weights_format '", meta.weights_format,
                                                   "' is not supported (only ", kWeightsFormatR2GenCMN, ")"));
  }
  if (meta.weights_dtype != "float32" && meta.weights_dtype != "float16") {
    return absl::InvalidArgumentError(
        absl::StrCat("write_bundle: weights_dtype must be float32 or float16, got '", meta.weights_dtype, "'"));
  }
  // Fail before writing hundreds of megabytes, and again at publication (someone may race us).
  CMN_RETURN_IF_ERROR(check_publish_target(dir, options.overwrite));

  BundleInfo info = meta;
  model::ModelConfig& c = info.config;
  c = model->config();
  model::copy_fields([](auto& v, model::ModelConfig& m) { model::visit_decoding(v, m); }, meta.config, c);
  c.views = c.effective_views();
  c.vocab_size = tokenizer.vocab_size();

  model::StateDict state;
  try {
    model::validate_model_config(c);
    torch::NoGradGuard no_grad;
    const torch::ScalarType dtype = info.weights_dtype == "float16" ? torch::kHalf : torch::kFloat;
    for (auto& [key, tensor] : model::module_state_dict(*model)) {
      torch::Tensor t = tensor.to(torch::kCPU);
      if (t.is_floating_point()) t = t.to(dtype);
      state.emplace_back(key, t.contiguous());
    }
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat("write_bundle: ", e.what_without_backtrace()));
  }
  const torch::Tensor* logit = nullptr;
  for (const auto& [key, tensor] : state) {
    if (key == "encoder_decoder.logit.weight") logit = &tensor;
  }
  if (logit == nullptr) return absl::InvalidArgumentError("write_bundle: model has no encoder_decoder.logit.weight");
  if (logit->size(0) - 1 != tokenizer.vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat("write_bundle: the model predicts ", logit->size(0) - 1,
                                                   " tokens but the tokenizer has ", tokenizer.vocab_size()));
  }

  // The temporary directory sits beside `dir` so the final rename stays on one file system.
  fs::path target(dir);
  if (target.filename().empty()) target = target.parent_path();  // "out/bundle/" -> "out/bundle"
  fs::path parent = target.parent_path();
  if (parent.empty()) parent = ".";
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create '", parent.string(), "': ", ec.message()));
  std::string pattern = (parent / ("." + target.filename().string() + ".tmp-XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create a temporary directory beside '", dir, "': ", std::strerror(errno)));
  }
  const std::string tmp = pattern;
  TempDirGuard guard(tmp);
  ::chmod(tmp.c_str(), 0755);  // mkdtemp makes it 0700; a bundle is read by other users (the server)

  try {
    model::CheckpointWriteOptions write_options;
    write_options.archive_name = fs::path(info.weights_file).stem().string();
    if (write_options.archive_name.empty() || write_options.archive_name == ".") write_options.archive_name = "weights";
    model::write_checkpoint(path_in(tmp, info.weights_file), state, write_options);
  } catch (const c10::Error& e) {
    // The target is named first: the checkpoint's own path is inside the temporary folder, gone by now.
    return absl::InternalError(
        absl::StrCat("cannot write bundle '", dir, "': ", info.weights_file, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("cannot write bundle '", dir, "': ", info.weights_file, ": ", e.what()));
  }
  state.clear();
  try {
    tokenizer.save_vocab_file(path_in(tmp, kVocabFile));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("cannot write bundle '", dir, "': ", kVocabFile, ": ", e.what()));
  }
  auto in_bundle = [&](const absl::Status& s) {
    return s.ok() ? s : absl::Status(s.code(), absl::StrCat("cannot write bundle '", dir, "': ", s.message()));
  };
  CMN_RETURN_IF_ERROR(in_bundle(write_file_durably(path_in(tmp, kModelYaml), emit_model_yaml(info))));
  CMN_ASSIGN_OR_RETURN(const std::string sums, sums_text(tmp, {kModelYaml, info.weights_file, kVocabFile}));
  CMN_RETURN_IF_ERROR(in_bundle(write_file_durably(path_in(tmp, kChecksumFile), sums)));
  CMN_RETURN_IF_ERROR(in_bundle(fsync_dir(tmp)));

  CMN_RETURN_IF_ERROR(publish(tmp, target.string(), options.overwrite));
  guard.release();
  return fsync_dir(parent.string());
}

absl::StatusOr<BundleInfo> import_r2gencmn(const std::string& checkpoint_pth, const std::string& args_json,
                                           const std::string& annotation_json, const std::string& out_dir,
                                           const ImportOptions& options) {
  model::ModelConfig config;
  try {
    config = model::read_model_config(args_json);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(e.what_without_backtrace());
  }
  CMN_ASSIGN_OR_RETURN(model::Tokenizer tokenizer,
                       tokenizer_from_annotation(annotation_json, model::cleaning_rule_for_dataset(config.dataset_name),
                                                 static_cast<int>(config.threshold)));
  if (config.vocab_size != 0 && config.vocab_size != tokenizer.vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        args_json, " says vocab_size ", config.vocab_size, " but ", annotation_json, " gives ", tokenizer.vocab_size(),
        " tokens (dataset_name '", config.dataset_name, "', threshold ", config.threshold,
        "): is it the annotation file the model was trained with?"));
  }
  config.vocab_size = tokenizer.vocab_size();
  // Before reading 100+ MB: is there somewhere to put the result?
  CMN_RETURN_IF_ERROR(check_publish_target(out_dir, options.overwrite));

  BundleInfo meta;
  meta.name = options.name;
  meta.version = options.version;
  meta.untrained = false;
  meta.intended_use = options.intended_use.empty()
                          ? absl::StrCat("Research use only. Drafts the findings section of a chest radiograph "
                                         "report from ", config.effective_views(), " view(s) (R2GenCMN, imported "
                                         "from ", fs::path(checkpoint_pth).filename().string(), "). Not a "
                                         "medical device: a radiologist must review and edit every report.")
                          : options.intended_use;
  model::R2GenCMN model{nullptr};
  try {
    // Read the checkpoint here rather than through load_r2gencmn to learn the stored dtype without a second
    // pass over the file; the checks mirror load_r2gencmn's.
    model::CheckpointInfo ckpt = model::read_checkpoint(checkpoint_pth);
    meta.weights_dtype = options.weights_dtype.empty() ? stored_float_dtype(ckpt.state_dict) : options.weights_dtype;
    const torch::Tensor* logit = nullptr;
    for (const auto& [key, tensor] : ckpt.state_dict) {
      if (key == "encoder_decoder.logit.weight") logit = &tensor;
    }
    if (logit == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(checkpoint_pth, " has no encoder_decoder.logit.weight: not an R2GenCMN checkpoint"));
    }
    if (logit->dim() != 2 || logit->size(0) - 1 != tokenizer.vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          checkpoint_pth, " predicts ", logit->size(0) - 1, " tokens but ", annotation_json, " gives ",
          tokenizer.vocab_size(), " (dataset_name '", config.dataset_name, "', threshold ", config.threshold, ")"));
    }
    model = model::R2GenCMN(config);
    model::load_state_dict(*model, ckpt.state_dict);
    model->eval();
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(checkpoint_pth, ": ", e.what_without_backtrace()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat("out of memory reading ", checkpoint_pth));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(checkpoint_pth, ": ", e.what()));
  }
  meta.config = config;
  CMN_RETURN_IF_ERROR(write_bundle(out_dir, meta, model, tokenizer, WriteBundleOptions{options.overwrite}));
  return read_bundle_info(out_dir);
}

absl::StatusOr<BundleInfo> init_untrained(const std::string& out_dir, const InitUntrainedOptions& options) {
  if (options.vocab_file.empty() == options.annotation_json.empty()) {
    return absl::InvalidArgumentError("init_untrained: give exactly one vocabulary source (a vocab file or an "
                                      "annotation.json)");
  }
  if (options.views < 1 || options.views > 4) {
    return absl::InvalidArgumentError(absl::StrCat("init_untrained: views must be 1..4, got ", options.views));
  }
  CMN_RETURN_IF_ERROR(check_publish_target(out_dir, options.overwrite));
  const model::CleaningRule rule = model::cleaning_rule_for_dataset(options.dataset_name);
  model::Tokenizer tokenizer;
  if (!options.vocab_file.empty()) {
    try {
      tokenizer = model::Tokenizer::from_vocab_file(options.vocab_file, rule);
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(e.what());
    }
  } else {
    CMN_ASSIGN_OR_RETURN(tokenizer, tokenizer_from_annotation(options.annotation_json, rule, options.threshold));
  }

  model::ModelConfig config;
  config.views = options.views;
  config.dataset_name = options.dataset_name;
  config.threshold = options.threshold;
  config.align_queries = options.align_queries;
  config.vocab_size = tokenizer.vocab_size();

  model::R2GenCMN model{nullptr};
  try {
    // Seed the global generator right before the parameters are drawn: same seed, same weights, same digest.
    torch::manual_seed(options.seed);
    model = model::R2GenCMN(config);
    model->eval();
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat("init_untrained: ", e.what_without_backtrace()));
  }

  BundleInfo meta;
  meta.name = options.name;
  meta.version = options.version;
  meta.untrained = true;
  meta.intended_use = absl::StrCat("UNTRAINED: random weights (seed ", options.seed, ") for pipeline demos and "
                                   "tests. The reports it writes are meaningless; never use it on patient data.");
  meta.config = config;
  meta.weights_dtype = options.weights_dtype;
  CMN_RETURN_IF_ERROR(write_bundle(out_dir, meta, model, tokenizer, WriteBundleOptions{options.overwrite}));
  return read_bundle_info(out_dir);
}

}  // namespace cmn::pipeline
