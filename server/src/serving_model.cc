#include "cmn/server/serving_model.h"

#include <filesystem>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>

#include "absl/strings/str_cat.h"
#include "cmn/pipeline/annotation.h"

namespace cmn::server {
namespace {

absl::StatusOr<ServingModel> load_checkpoint(const ModelOptions& options) {
  ServingModel served;
  try {
    served.info.config = model::read_model_config(options.args);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat("model.args: ", e.msg()));
  }
  auto annotation = pipeline::read_annotation(options.annotation);
  if (!annotation.ok()) {
    return absl::Status(annotation.status().code(), absl::StrCat("model.annotation: ", annotation.status().message()));
  }
  std::vector<std::string> reports;
  reports.reserve(annotation->train.size());
  for (const auto& e : annotation->train) reports.push_back(e.report);
  if (reports.empty()) return absl::InvalidArgumentError("model.annotation: the train split is empty");
  auto& config = served.info.config;
  served.tokenizer = model::Tokenizer::build(reports, model::cleaning_rule_for_dataset(config.dataset_name),
                                             static_cast<int>(config.threshold));
  config.vocab_size = served.tokenizer.vocab_size();
  auto digest = pipeline::sha256_file(options.r2gencmn);
  if (!digest.ok()) return absl::NotFoundError(absl::StrCat("model.r2gencmn: ", digest.status().message()));
  try {
    served.model = model::load_r2gencmn(options.r2gencmn, config);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat("model.r2gencmn: ", e.msg()));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("model.r2gencmn: ", e.what()));
  }
  served.info.name = std::filesystem::path(options.r2gencmn).stem().string();
  served.info.version = "";
  served.info.digest = "sha256:" + *digest;
  served.info.intended_use = "R2GenCMN checkpoint served directly (no bundle): research use";
  served.info.dir = options.r2gencmn;
  return served;
}

}  // namespace

absl::StatusOr<ServingModel> load_serving_model(const ModelOptions& options) {
  ServingModel served;
  if (!options.bundle.empty()) {
    auto bundle = pipeline::load_bundle(options.bundle);
    if (!bundle.ok()) {
      return absl::Status(bundle.status().code(),
                          absl::StrCat("model.bundle '", options.bundle, "': ", bundle.status().message()));
    }
    served.info = std::move(bundle->info);
    served.tokenizer = std::move(bundle->tokenizer);
    served.model = std::move(bundle->model);
  } else {
    auto loaded = load_checkpoint(options);
    if (!loaded.ok()) return loaded.status();
    served = std::move(*loaded);
  }
  if (served.info.untrained && !options.allow_untrained) {
    return absl::FailedPreconditionError(absl::StrCat("model '", served.info.name,
                                                      "' is an untrained (random weights) bundle and "
                                                      "model.allow_untrained is false"));
  }
  served.model->eval();
  return served;
}

}  // namespace cmn::server
