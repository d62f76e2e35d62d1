#pragma once
// The model a server serves: weights, tokenizer and identity, loaded once from `model:` in the config.
#include <string>

#include "absl/status/statusor.h"
#include "cmn/model/r2gencmn.h"
#include "cmn/model/tokenizer.h"
#include "cmn/pipeline/bundle.h"
#include "cmn/server/config.h"

namespace cmn::server {

struct ServingModel {
  pipeline::BundleInfo info;   // name, version, untrained, intended_use, config, image options, digest
  model::Tokenizer tokenizer;
  model::R2GenCMN model{nullptr};  // CPU, eval mode. Copies share the module: serve it from one server at a time
};

// A bundle directory (verified against SHA256SUMS), or an R2GenCMN checkpoint + args JSON + annotation.json
// (digest = SHA-256 of the checkpoint file). Errors say which file is bad and why, prefixed with the config
// key; model code's exceptions are caught here. With allow_untrained false, an untrained bundle is
// FAILED_PRECONDITION.
absl::StatusOr<ServingModel> load_serving_model(const ModelOptions& options);

}  // namespace cmn::server
