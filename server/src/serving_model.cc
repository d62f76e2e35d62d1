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

}  // namespace cmn::server
