#pragma once
// The one loader (ENGINE.md): every caller that needs a model — cmn-server, cmn-generate, cmn-pacs in process,
// cmn-bundle import — makes it here, from a model bundle directory or from an R2GenCMN checkpoint + its args JSON
// + the annotation.json its vocabulary is rebuilt from (R2GenCMN does not store the vocabulary).
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cmn/engine/model.h"
#include "cmn/model/tokenizer.h"
#include "cmn/pipeline/bundle_info.h"

namespace cmn::pipeline {

struct ModelSource {
  std::string bundle;      // a bundle directory (verified against its SHA256SUMS); or the three below:
  std::string r2gencmn;    // R2GenCMN checkpoint (.pth, torch.save zip)
  std::string args;        // R2GenCMN's arguments as JSON (model::read_model_config)
  std::string annotation;  // annotation.json whose train split gives the vocabulary
  // Where each path came from (a config key or a CLI flag): error messages start with it.
  std::string bundle_key = "model.bundle";
  std::string r2gencmn_key = "model.r2gencmn";
  std::string args_key = "model.args";
  std::string annotation_key = "model.annotation";
};

struct LoadedModel {
  // A bundle's model.yaml; for a checkpoint: name = the file's stem, no version, digest = "sha256:" of the file,
  // config from the args with vocab_size from the annotation, default image options.
  BundleInfo info;
  std::shared_ptr<const engine::Model> model;  // CPU weights, eval mode
};

// Errors name the source key and the file: NotFound (missing file), DataLoss (checksum mismatch),
// InvalidArgument (bad YAML / JSON / weights that do not fit the architecture).
absl::StatusOr<LoadedModel> load_model(const ModelSource& source);

// The reference's vocabulary: the train split's reports of `annotation.json`, cleaned with `rule`, tokens seen
// at least `threshold` times (val/test must not leak into it).
absl::StatusOr<model::Tokenizer> tokenizer_from_annotation(const std::string& path, model::CleaningRule rule,
                                                           int threshold);

// The identity every output names, from a bundle's info.
engine::ModelIdentity identity_of(const BundleInfo& info);

}  // namespace cmn::pipeline
