#pragma once
// Preparing an R2GenCMN network for training: dropout rates, trunk initialisation, freezing.
#include <string>

#include <torch/torch.h>

#include "cmn/model/r2gencmn.h"

namespace cmn::train {

// Dropout rates of the four kinds of Dropout module in R2GenCMN. The defaults are the reference's; note that
// two of them do NOT follow --dropout in the reference (modules/base_cmn.py):
//   make_model builds `attn = MultiHeadedAttention(self.num_heads, self.d_model)` without the dropout argument,
//   and BaseCMN builds `MultiThreadMemory(args.num_heads, args.d_model, topk=args.topk)` likewise, so both keep
//   their class default 0.1 whatever --dropout says (--dropout 0 leaves them active).
struct DropoutOptions {
  double transformer = 0.1;   // --dropout: sublayer residuals, feed-forward inner, positional encodings
  double att_embed = 0.5;     // --drop_prob_lm: encoder_decoder.att_embed.2 (after Linear + ReLU)
  double attention = 0.1;     // attention weights of every self_attn / src_attn (fixed 0.1 in the reference)
  double memory = 0.1;        // top-k weights of the memory query, cmn.dropout (fixed 0.1 in the reference)
};
// Every Dropout module at probability p (p = 0: deterministic training).
inline DropoutOptions uniform_dropout(double p) { return {p, p, p, p}; }

// Sets the probability of every torch::nn::Dropout in the model by kind. Returns how many modules were set.
int set_dropout(model::R2GenCMNImpl& model, const DropoutOptions& options);

// The probability of every Dropout module by name (for tests and logs).
std::vector<std::pair<std::string, double>> dropout_rates(model::R2GenCMNImpl& model);

// Initialises the trunk from torchvision's ImageNet ResNet-101 state_dict file (torch.save of
// torchvision.models.resnet101(pretrained=True).state_dict(): conv1.*, bn1.*, layer1..4.*, fc.*), as
// R2GenCMN's --visual_extractor_pretrained does. fc.* is dropped; any other missing/unexpected/mis-shaped key
// is an error naming it. Returns the number of tensors loaded.
int load_torchvision_resnet101(model::R2GenCMNImpl& model, const std::string& path);

// Freezes the visual extractor: no gradients, and kept in eval mode (running statistics stay as loaded) by
// train_mode() below.
void freeze_visual_extractor(model::R2GenCMNImpl& model);
bool visual_extractor_frozen(model::R2GenCMNImpl& model);

// model.train() that keeps a frozen trunk in eval mode.
void train_mode(model::R2GenCMNImpl& model);

}  // namespace cmn::train
