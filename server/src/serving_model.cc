#include "cmn/server/serving_model.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "cmn/pipeline/model_loader.h"

namespace cmn::server {

absl::StatusOr<ServingModel> load_serving_model(const ModelOptions& options) {
  pipeline::ModelSource source;
  source.bundle = options.bundle;
  source.r2gencmn = options.r2gencmn;
  source.args = options.args;
  source.annotation = options.annotation;
  auto loaded = pipeline::load_model(source);
  if (!loaded.ok()) return loaded.status();
  if (loaded->info.untrained && !options.allow_untrained) {
    return absl::FailedPreconditionError(absl::StrCat("model '", loaded->info.name,
                                                      "' is an untrained (random weights) bundle and "
                                                      "model.allow_untrained is false"));
  }
  ServingModel served;
  served.info = std::move(loaded->info);
  served.model = std::move(loaded->model);
  return served;
}

absl::StatusOr<std::unique_ptr<engine::Replica>> make_serving_replica(const ModelOptions& options,
                                                                      std::shared_ptr<const engine::Model> model) {
  const auto precision = model::parse_precision(options.precision);
  if (!precision) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.precision: must be fp32, bf16 or int8, got '", options.precision, "'"));
  }
  if (std::string missing = model::precision_unavailable(*precision, options.device); !missing.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("model.precision: ", missing));
  }
  auto replica = engine::Replica::create(std::move(model), options.device, *precision);
  if (!replica.ok()) {  // e.g. model.device: cuda on a LibTorch without CUDA: a refused start naming both
    return absl::Status(replica.status().code(), absl::StrCat("model.device: ", replica.status().message()));
  }
  (*replica)->set_decode_threads(options.decode_threads);
  return replica;
}

}  // namespace cmn::server
