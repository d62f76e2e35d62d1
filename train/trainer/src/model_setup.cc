#include "cmn/train/model_setup.h"

#include <map>

#include "cmn/model/checkpoint.h"

namespace cmn::train {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

int set_dropout(model::R2GenCMNImpl& model, const DropoutOptions& options) {
  for (double p : {options.transformer, options.att_embed, options.attention, options.memory}) {
    TORCH_CHECK(p >= 0.0 && p < 1.0, "dropout probability must be in [0, 1), got ", p);
  }
  int count = 0;
  for (const auto& item : model.named_modules()) {
    auto* dropout = item.value()->as<torch::nn::DropoutImpl>();
    if (dropout == nullptr) continue;
    const std::string& name = item.key();
    double p = options.transformer;
    if (name == "encoder_decoder.att_embed.2") {
      p = options.att_embed;
    } else if (ends_with(name, "cmn.dropout")) {  // encoder_decoder.cmn == encoder_decoder.model.cmn
      p = options.memory;
    } else if (ends_with(name, "attn.dropout")) {  // self_attn / src_attn of every layer
      p = options.attention;
    }
    dropout->options.p(p);
    ++count;
  }
  return count;
}

std::vector<std::pair<std::string, double>> dropout_rates(model::R2GenCMNImpl& model) {
  std::vector<std::pair<std::string, double>> out;
  for (const auto& item : model.named_modules()) {
    if (auto* dropout = item.value()->as<torch::nn::DropoutImpl>()) out.emplace_back(item.key(), dropout->options.p());
  }
  return out;
}

int load_torchvision_resnet101(model::R2GenCMNImpl& model, const std::string& path) {
  auto ckpt = model::read_checkpoint(path);
  // torchvision children order: conv1, bn1, relu, maxpool, layer1..layer4 -> model.0, .1, .4 .. .7
  const std::map<std::string, std::string> prefixes = {{"conv1.", "model.0."}, {"bn1.", "model.1."},
                                                       {"layer1.", "model.4."}, {"layer2.", "model.5."},
                                                       {"layer3.", "model.6."}, {"layer4.", "model.7."}};
  model::StateDict renamed;
  for (const auto& [key, tensor] : ckpt.state_dict) {
    if (key.rfind("fc.", 0) == 0) continue;
    bool mapped = false;
    for (const auto& [from, to] : prefixes) {
      if (key.rfind(from, 0) == 0) {
        renamed.emplace_back(to + key.substr(from.size()), tensor);
        mapped = true;
        break;
      }
    }
    TORCH_CHECK(mapped, "'", path, "': key '", key, "' is not part of torchvision's ResNet-101");
  }
  try {
    model::load_state_dict(*model.visual_extractor, renamed);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "'", path, "' is not a torchvision ResNet-101 state_dict: ", e.msg());
  }
  model.reset_inference_cache();
  return static_cast<int>(renamed.size());
}

void freeze_visual_extractor(model::R2GenCMNImpl& model) {
  for (auto& p : model.visual_extractor->parameters()) p.set_requires_grad(false);
  model.visual_extractor->eval();
}

bool visual_extractor_frozen(model::R2GenCMNImpl& model) {
  for (auto& p : model.visual_extractor->parameters()) {
    if (p.requires_grad()) return false;
  }
  return true;
}

void train_mode(model::R2GenCMNImpl& model) {
  model.train();
  if (visual_extractor_frozen(model)) model.visual_extractor->eval();
}

}  // namespace cmn::train
