#pragma once
// The model a server serves: made once by the one loader (pipeline::load_model) from `model:` in the config.
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cmn/engine/model.h"
#include "cmn/engine/replica.h"
#include "cmn/pipeline/bundle_info.h"
#include "cmn/server/config.h"

namespace cmn::server {

struct ServingModel {
  pipeline::BundleInfo info;                    // name, version, untrained, intended_use, config, image options, digest
  std::shared_ptr<const engine::Model> model;  // CPU weights, tokenizer, identity; shared with the replica
};

// A bundle directory (verified against SHA256SUMS), or an R2GenCMN checkpoint + args JSON + annotation.json
// (digest = SHA-256 of the checkpoint file). Errors say which file is bad and why, prefixed with the config
// key. With allow_untrained false, an untrained bundle is FAILED_PRECONDITION.
absl::StatusOr<ServingModel> load_serving_model(const ModelOptions& options);

// The served replica: `model.device` in `model.precision`. A device or precision this host cannot run is an
// error prefixed with its config key (FAILED_PRECONDITION "model.precision: precision bf16 needs a CPU with ...").
absl::StatusOr<std::unique_ptr<engine::Replica>> make_serving_replica(const ModelOptions& options,
                                                                      std::shared_ptr<const engine::Model> model);

}  // namespace cmn::server
