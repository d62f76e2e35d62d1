#pragma once
// BaseCMNModel (models/models.py): visual_extractor + encoder_decoder, the whole R2GenCMN network.
#include <string>

#include <torch/torch.h>

#include "cmn/model/config.h"
#include "cmn/model/decoding.h"
#include "cmn/model/encoder_decoder.h"
#include "cmn/model/visual_extractor.h"

namespace cmn::model {

class R2GenCMNImpl : public torch::nn::Module {
 public:
  explicit R2GenCMNImpl(const ModelConfig& config);

  // images [B,V,3,224,224] -> att [B,V*49,2048], fc [B,V*2048]
  VisualFeatures extract(const torch::Tensor& images);
  // images [B,V,3,224,224], targets [B,L] -> log-probs [B,L-1,V+1] (training forward)
  torch::Tensor forward(const torch::Tensor& images, const torch::Tensor& targets);
  // images -> decoded reports (ids); inference mode is the caller's job (c10::InferenceMode)
  DecodeResult generate(const torch::Tensor& images, const DecodingOptions& options);

  // Forget weight-derived caches (folded batch norm, memory projections): call after changing weights.
  void reset_inference_cache();

  const ModelConfig& config() const { return config_; }

  VisualExtractor visual_extractor{nullptr};
  BaseCMN encoder_decoder{nullptr};

 private:
  ModelConfig config_;
};
TORCH_MODULE(R2GenCMN);

// Decoding defaults from the R2GenCMN args.
DecodingOptions decoding_options_from(const ModelConfig& config);

// Builds the network for `config` and loads an R2GenCMN checkpoint (.pth) into it, on the CPU in eval mode.
// vocab_size 0 in `config` is taken from the checkpoint's logit layer; a different non-zero value is an
// error. Missing / unexpected / mis-shaped keys are an error listing them (see load_state_dict).
R2GenCMN load_r2gencmn(const std::string& checkpoint_path, ModelConfig config);

}  // namespace cmn::model
