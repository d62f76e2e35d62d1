#include "cmn/pipeline/model_loader.h"

#include <filesystem>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cmn/common/status_macros.h"
#include "cmn/model/r2gencmn.h"
#include "cmn/pipeline/annotation.h"
#include "cmn/pipeline/bundle.h"

namespace cmn::pipeline {
namespace {

absl::Status prefixed(const std::string& key, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat(key, ": ", status.message()));
}

absl::StatusOr<LoadedModel> load_checkpoint(const ModelSource& source) {
  LoadedModel loaded;
  auto& config = loaded.info.config;
  try {
    config = model::read_model_config(source.args);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(source.args_key, ": ", e.msg()));
  }
  auto tokenizer = tokenizer_from_annotation(source.annotation, model::cleaning_rule_for_dataset(config.dataset_name),
                                             static_cast<int>(config.threshold));
  if (!tokenizer.ok()) return prefixed(source.annotation_key, tokenizer.status());
  config.vocab_size = tokenizer->vocab_size();
  auto digest = sha256_file(source.r2gencmn);
  if (!digest.ok()) return absl::NotFoundError(absl::StrCat(source.r2gencmn_key, ": ", digest.status().message()));
  model::R2GenCMN network{nullptr};
  try {
    network = model::load_r2gencmn(source.r2gencmn, config);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(source.r2gencmn_key, ": ", e.msg()));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source.r2gencmn_key, ": ", e.what()));
  }
  loaded.info.name = std::filesystem::path(source.r2gencmn).stem().string();
  loaded.info.digest = "sha256:" + *digest;
  loaded.info.intended_use = "R2GenCMN checkpoint served directly (no bundle): research use";
  loaded.info.dir = source.r2gencmn;
  loaded.model = std::make_shared<const engine::Model>(network.ptr(), std::move(*tokenizer), identity_of(loaded.info));
  return loaded;
}

}  // namespace

engine::ModelIdentity identity_of(const BundleInfo& info) {
  engine::ModelIdentity identity;
  identity.name = info.name;
  identity.version = info.version;
  identity.digest = info.digest;
  identity.untrained = info.untrained;
  return identity;
}

absl::StatusOr<model::Tokenizer> tokenizer_from_annotation(const std::string& path, model::CleaningRule rule,
                                                           int threshold) {
  CMN_ASSIGN_OR_RETURN(const Annotation annotation, read_annotation(path));
  std::vector<std::string> reports;
  reports.reserve(annotation.train.size());
  for (const AnnotationExample& example : annotation.train) reports.push_back(example.report);
  if (reports.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": the train split is empty"));
  try {
    return model::Tokenizer::build(reports, rule, threshold);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot build the vocabulary: ", e.what()));
  }
}

absl::StatusOr<LoadedModel> load_model(const ModelSource& source) {
  if (source.bundle.empty()) {
    if (source.r2gencmn.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("no model: set ", source.bundle_key, " or ", source.r2gencmn_key));
    }
    return load_checkpoint(source);
  }
  auto bundle = load_bundle(source.bundle);
  if (!bundle.ok()) {
    return absl::Status(bundle.status().code(),
                        absl::StrCat(source.bundle_key, " '", source.bundle, "': ", bundle.status().message()));
  }
  LoadedModel loaded;
  loaded.info = std::move(bundle->info);
  loaded.model = std::make_shared<const engine::Model>(bundle->model.ptr(), std::move(bundle->tokenizer),
                                                       identity_of(loaded.info));
  return loaded;
}

}  // namespace cmn::pipeline
