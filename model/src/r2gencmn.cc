#include "cmn/model/r2gencmn.h"

#include "cmn/model/checkpoint.h"

namespace cmn::model {

R2GenCMNImpl::R2GenCMNImpl(const ModelConfig& config) : config_(config) {
  validate_model_config(config_);
  visual_extractor = register_module("visual_extractor", VisualExtractor(config_.visual_extractor));
  encoder_decoder = register_module("encoder_decoder", BaseCMN(config_));
}

VisualFeatures R2GenCMNImpl::extract(const torch::Tensor& images) {
  TORCH_CHECK(images.dim() == 5 && images.size(1) == config_.effective_views() && images.size(2) == 3,
              "expected images [B,", config_.effective_views(), ",3,H,W], got ", images.sizes());
  return visual_extractor->extract(images);
}

torch::Tensor R2GenCMNImpl::forward(const torch::Tensor& images, const torch::Tensor& targets) {
  auto feats = extract(images);
  return encoder_decoder->forward(feats.att, targets);
}

DecodeResult R2GenCMNImpl::generate(const torch::Tensor& images, const DecodingOptions& options) {
  auto feats = extract(images);
  auto memory = encoder_decoder->encode(feats.att);  // [B,S,d]
  CmnStepModel stepper(*encoder_decoder, memory);
  return decode(stepper, options);
}

void R2GenCMNImpl::reset_inference_cache() {
  visual_extractor->reset_inference_cache();
  encoder_decoder->reset_inference_cache();
}

DecodingOptions decoding_options_from(const ModelConfig& c) {
  DecodingOptions o;
  o.method = c.sample_method;
  o.beam_size = c.beam_size;
  o.max_length = c.max_seq_length;
  o.temperature = c.temperature;
  o.block_trigrams = c.block_trigrams != 0;
  o.length_penalty = c.length_penalty;
  o.seed = static_cast<uint64_t>(c.seed);
  return o;
}

R2GenCMN load_r2gencmn(const std::string& path, ModelConfig config) {
  auto ckpt = read_checkpoint(path);
  const torch::Tensor* logit = nullptr;
  for (const auto& [key, tensor] : ckpt.state_dict) {
    if (key == "encoder_decoder.logit.weight") logit = &tensor;
  }
  TORCH_CHECK(logit != nullptr, "checkpoint '", path, "' has no encoder_decoder.logit.weight: not an R2GenCMN model");
  const int64_t vocab_in_file = logit->size(0) - 1;
  if (config.vocab_size == 0) config.vocab_size = vocab_in_file;
  TORCH_CHECK(config.vocab_size == vocab_in_file, "checkpoint '", path, "' has a vocabulary of ", vocab_in_file,
              " tokens but the tokenizer/config gives ", config.vocab_size,
              " (was the vocabulary built from the same annotation.json and threshold?)");
  R2GenCMN model(config);
  try {
    load_state_dict(*model, ckpt.state_dict);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "checkpoint '", path, "' does not fit the model: ", e.msg());
  }
  model->eval();
  model->reset_inference_cache();
  return model;
}

}  // namespace cmn::model
