#pragma once
// ResNet-101 trunk exactly as torchvision's, cut before avgpool/fc (list(model.children())[:-2]), registered
// as the Sequential "model" so keys read visual_extractor.model.0 (conv1), .1 (bn1), .4-.7 (layer1-layer4).
#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "cmn/model/precision.h"

namespace cmn::model {

// torchvision's Bottleneck (ResNet v1.5: the stride sits on the 3x3 conv).
class BottleneckImpl : public torch::nn::Module {
 public:
  BottleneckImpl(int64_t in_channels, int64_t planes, int64_t stride, bool downsample);
  torch::Tensor forward(const torch::Tensor& x);  // [N,Cin,H,W] -> [N,4*planes,H/stride,W/stride]
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::ModuleList downsample{nullptr};  // downsample.0 conv 1x1, downsample.1 bn; null when identity
};
TORCH_MODULE(Bottleneck);

struct VisualFeatures {
  torch::Tensor att;  // [B, V*49, 2048] patch features, views stacked along the patch axis
  torch::Tensor fc;   // [B, V*2048] 7x7 average features, views concatenated
};

// Trunk kinds (ModelConfig::visual_extractor). "resnet101" is R2GenCMN's and the default. "patch_stats" is a
// fixed, parameter-free feature extractor for fast CPU experiments without pretrained weights (issue 8): it
// keeps the 7x7 patch grid per view, so everything after the trunk is unchanged, and gives each patch
// kPatchStatsDim values (d_vf must be set to that):
//   grey = mean over the 3 normalised channels; each 32x32 patch of a 224x224 view is cut into 4x4 sub-blocks
//   of 8x8 pixels, and for each sub-block the mean, the max and the standard deviation are taken (48 values:
//   shading, small dense objects, texture); then the patch's own mean and standard deviation (2) and its row
//   and column as one-hot codes (7 + 7). R2GenCMN adds a sinusoidal position to the patch sequence (src_embed),
//   but only after att_embed; the codes put the row and column into the features themselves, as a ResNet's
//   padding and receptive fields partly do, so that "right" and "left" are a linear read-out of one patch.
constexpr const char* kResNet101Trunk = "resnet101";
constexpr const char* kPatchStatsTrunk = "patch_stats";
constexpr int64_t kPatchStatsDim = 64;

class VisualExtractorImpl : public torch::nn::Module {
 public:
  VisualExtractorImpl();
  // `kind`: kResNet101Trunk (as the default constructor) or kPatchStatsTrunk (no parameters, no submodules).
  explicit VisualExtractorImpl(const std::string& kind);
  // images [N,3,224,224] -> patch_feats [N,49,2048], avg_feats [N,2048] (VisualExtractor.forward)
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& images);
  // A study batch [B,V,3,224,224] -> stacked features, as forward_iu_xray does for 2 views (any V in 1..4).
  VisualFeatures extract(const torch::Tensor& studies);

  // Inference copy of the trunk with every BatchNorm folded into its convolution (eval mode only).
  // Rebuilt after weights change (reset_inference_cache); the training path never uses it.
  void reset_inference_cache() { folded_.clear(); }
  // kBf16: the folded weights in bfloat16, channels_last (oneDNN's fast layout); the trunk's input is cast to
  // bf16 and its output back to fp32. Anything else: fp32. Inference only, like the folded trunk itself.
  void set_precision(Precision p) {
    bf16_ = p == Precision::kBf16;
    folded_.clear();
  }

  // ModuleList rather than Sequential: LibTorch's Sequential cannot nest Sequentials; the indices (and so the
  // state_dict keys) are the same: 0 conv1, 1 bn1, 2 relu, 3 maxpool, 4..7 layer1..layer4.
  torch::nn::ModuleList model{nullptr};

 private:
  struct FoldedConv {
    torch::Tensor weight, bias;
    int64_t stride = 1, padding = 0;
  };
  struct FoldedBlock {
    FoldedConv c1, c2, c3;
    bool has_downsample = false;
    FoldedConv down;
  };
  void build_resnet101();
  std::pair<torch::Tensor, torch::Tensor> forward_patch_stats(const torch::Tensor& images);
  void build_folded();
  torch::Tensor forward_folded(const torch::Tensor& images);  // [N,3,H,W] -> [N,2048,H/32,W/32]
  torch::Tensor forward_trunk(const torch::Tensor& images);   // same, with the modules (training)
  std::string kind_ = kResNet101Trunk;
  bool bf16_ = false;
  FoldedConv stem_;
  std::vector<FoldedBlock> folded_;
};
TORCH_MODULE(VisualExtractor);

}  // namespace cmn::model
