#include "cmn/engine/model.h"

#include <utility>

#include "cmn/model/r2gencmn.h"

namespace cmn::engine {

Model::Model(std::shared_ptr<model::R2GenCMNImpl> network, model::Tokenizer tokenizer, ModelIdentity identity)
    : network_(std::move(network)), tokenizer_(std::move(tokenizer)), identity_(std::move(identity)) {
  TORCH_CHECK(network_ != nullptr, "engine::Model needs a network");
  network_->eval();
  config_ = network_->config();
}

std::vector<std::string> Model::sentences(const std::vector<int64_t>& ids) const {
  return model::split_sentences(tokenizer_.words(ids));
}

}  // namespace cmn::engine
