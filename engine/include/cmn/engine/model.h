#pragma once
// The engine's two halves (ENGINE.md; CTranslate2's Model / Replica split):
//   Model   - immutable once made and shared by every thread: the network's weights on the CPU, its config, the
//             tokenizer and the identity every output names (bundle name, version, digest).
//   Replica - (replica.h) a Model bound to one torch device; runs batches of studies.
// This header and replica.h include no LibTorch header, so the server (a scheduler) stays free of torch.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cmn/model/config.h"
#include "cmn/model/tokenizer.h"

namespace cmn::model {
class R2GenCMNImpl;  // cmn/model/r2gencmn.h
}

namespace cmn::engine {

// What every output says about the model that wrote it.
struct ModelIdentity {
  std::string name = "r2gencmn";
  std::string version;
  std::string digest;       // "sha256:..." of a bundle, or of the checkpoint file
  bool untrained = false;   // a randomly initialised model: its text is not a report
};

class Model {
 public:
  // `network` in eval mode on the CPU; nobody may change its weights afterwards.
  Model(std::shared_ptr<model::R2GenCMNImpl> network, model::Tokenizer tokenizer, ModelIdentity identity);

  const model::ModelConfig& config() const { return config_; }
  const model::Tokenizer& tokenizer() const { return tokenizer_; }
  const ModelIdentity& identity() const { return identity_; }
  const std::shared_ptr<model::R2GenCMNImpl>& network() const { return network_; }

  // The report's sentences (model::split_sentences of tokenizer().words(ids)).
  std::vector<std::string> sentences(const std::vector<int64_t>& ids) const;

 private:
  std::shared_ptr<model::R2GenCMNImpl> network_;
  model::ModelConfig config_;
  model::Tokenizer tokenizer_;
  ModelIdentity identity_;
};

}  // namespace cmn::engine
