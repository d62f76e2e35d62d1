#include "cmn/model/visual_extractor.h"

namespace cmn::model {
namespace {

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t padding) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(padding).bias(false));
}

}  // namespace

BottleneckImpl::BottleneckImpl(int64_t in_channels, int64_t planes, int64_t stride, bool with_downsample) {
  const int64_t out_channels = planes * 4;
  conv1 = register_module("conv1", conv(in_channels, planes, 1, 1, 0));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(planes));
  conv2 = register_module("conv2", conv(planes, planes, 3, stride, 1));
  bn2 = register_module("bn2", torch::nn::BatchNorm2d(planes));
  conv3 = register_module("conv3", conv(planes, out_channels, 1, 1, 0));
  bn3 = register_module("bn3", torch::nn::BatchNorm2d(out_channels));
  if (with_downsample) {
    downsample = register_module("downsample", torch::nn::ModuleList(conv(in_channels, out_channels, 1, stride, 0),
                                                                     torch::nn::BatchNorm2d(out_channels)));
  }
}

torch::Tensor BottleneckImpl::forward(const torch::Tensor& x) {
  auto out = torch::relu(bn1(conv1(x)));     // [N,planes,H,W]
  out = torch::relu(bn2(conv2(out)));        // [N,planes,H/s,W/s]
  out = bn3(conv3(out));                     // [N,4*planes,H/s,W/s]
  auto identity = downsample ? downsample->ptr<torch::nn::BatchNorm2dImpl>(1)->forward(
                                   downsample->ptr<torch::nn::Conv2dImpl>(0)->forward(x))
                             : x;
  return torch::relu(out + identity);
}

VisualExtractorImpl::VisualExtractorImpl() { build_resnet101(); }

void VisualExtractorImpl::build_resnet101() {
  model = torch::nn::ModuleList();
  model->push_back(conv(3, 64, 7, 2, 3));                                                  // 0: conv1
  model->push_back(torch::nn::BatchNorm2d(64));                                            // 1: bn1
  model->push_back(torch::nn::ReLU());                                                     // 2: relu
  model->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2).padding(1)));  // 3: maxpool
  const int64_t blocks[4] = {3, 4, 23, 3};  // ResNet-101
  const int64_t planes[4] = {64, 128, 256, 512};
  int64_t in_channels = 64;
  for (int layer = 0; layer < 4; ++layer) {                                                 // 4..7: layer1..4
    torch::nn::ModuleList stage;
    const int64_t stride = layer == 0 ? 1 : 2;
    for (int64_t b = 0; b < blocks[layer]; ++b) {
      stage->push_back(Bottleneck(in_channels, planes[layer], b == 0 ? stride : 1, b == 0));
      in_channels = planes[layer] * 4;
    }
    model->push_back(stage);
  }
  register_module("model", model);
}

namespace {

// conv (no bias) followed by eval-mode BatchNorm == conv with weight * g and bias b', where
// g = gamma / sqrt(running_var + eps), b' = beta - running_mean * g.
std::pair<torch::Tensor, torch::Tensor> fold(const torch::nn::Conv2d& c, const torch::nn::BatchNorm2d& bn) {
  auto g = bn->weight / torch::sqrt(bn->running_var + bn->options.eps());  // [Cout]
  auto w = c->weight * g.view({-1, 1, 1, 1});                               // [Cout,Cin,k,k]
  auto b = bn->bias - bn->running_mean * g;                                  // [Cout]
  return {w.contiguous(), b.contiguous()};
}

}  // namespace

void VisualExtractorImpl::build_folded() {
  torch::NoGradGuard no_grad;
  auto stem_conv = model->ptr<torch::nn::Conv2dImpl>(0);
  auto stem_bn = model->ptr<torch::nn::BatchNorm2dImpl>(1);
  std::tie(stem_.weight, stem_.bias) = fold(torch::nn::Conv2d(stem_conv), torch::nn::BatchNorm2d(stem_bn));
  stem_.stride = 2;
  stem_.padding = 3;
  std::vector<FoldedBlock> blocks;
  for (size_t layer = 4; layer < 8; ++layer) {
    auto stage = model->ptr<torch::nn::ModuleListImpl>(layer);
    for (size_t b = 0; b < stage->size(); ++b) {
      auto blk = stage->ptr<BottleneckImpl>(b);
      FoldedBlock f;
      std::tie(f.c1.weight, f.c1.bias) = fold(blk->conv1, blk->bn1);
      std::tie(f.c2.weight, f.c2.bias) = fold(blk->conv2, blk->bn2);
      f.c2.stride = blk->conv2->options.stride()->at(0);
      f.c2.padding = 1;
      std::tie(f.c3.weight, f.c3.bias) = fold(blk->conv3, blk->bn3);
      if (blk->downsample) {
        f.has_downsample = true;
        std::tie(f.down.weight, f.down.bias) =
            fold(torch::nn::Conv2d(blk->downsample->ptr<torch::nn::Conv2dImpl>(0)),
                 torch::nn::BatchNorm2d(blk->downsample->ptr<torch::nn::BatchNorm2dImpl>(1)));
        f.down.stride = f.c2.stride;
      }
      blocks.push_back(std::move(f));
    }
  }
  if (bf16_) {
    auto to_bf16 = [](FoldedConv& c) {
      c.weight = c.weight.to(torch::kBFloat16).contiguous(torch::MemoryFormat::ChannelsLast);  // [Cout,Cin,k,k]
      c.bias = c.bias.to(torch::kBFloat16);                                                     // [Cout]
    };
    to_bf16(stem_);
    for (auto& f : blocks) {
      to_bf16(f.c1);
      to_bf16(f.c2);
      to_bf16(f.c3);
      if (f.has_downsample) to_bf16(f.down);
    }
  }
  folded_ = std::move(blocks);
}

torch::Tensor VisualExtractorImpl::forward_folded(const torch::Tensor& images) {
  if (folded_.empty()) build_folded();
  auto apply = [](const torch::Tensor& x, const FoldedConv& c) {
    return torch::conv2d(x, c.weight, c.bias, c.stride, c.padding);
  };
  const auto input = bf16_ ? images.to(torch::kBFloat16).contiguous(torch::MemoryFormat::ChannelsLast) : images;
  auto x = apply(input, stem_).relu_();                              // [N,64,112,112]
  x = torch::max_pool2d(x, 3, 2, 1);                                       // [N,64,56,56]
  for (const auto& b : folded_) {
    auto out = apply(x, b.c1).relu_();
    out = apply(out, b.c2).relu_();
    out = apply(out, b.c3);
    out.add_(b.has_downsample ? apply(x, b.down) : x);
    x = out.relu_();
  }
  if (bf16_) return x.to(torch::kFloat).contiguous();                      // [N,2048,7,7] fp32, NCHW
  return x;                                                                // [N,2048,7,7]
}

torch::Tensor VisualExtractorImpl::forward_trunk(const torch::Tensor& images) {
  auto x = model->ptr<torch::nn::Conv2dImpl>(0)->forward(images);          // [N,64,112,112]
  x = torch::relu(model->ptr<torch::nn::BatchNorm2dImpl>(1)->forward(x));
  x = torch::max_pool2d(x, 3, 2, 1);                                       // [N,64,56,56]
  for (size_t layer = 4; layer < 8; ++layer) {
    for (const auto& block : *model->ptr<torch::nn::ModuleListImpl>(layer)) {
      x = block->as<BottleneckImpl>()->forward(x);
    }
  }
  return x;                                                                // [N,2048,7,7]
}

VisualExtractorImpl::VisualExtractorImpl(const std::string& kind) : kind_(kind) {
  TORCH_CHECK(kind == kResNet101Trunk || kind == kPatchStatsTrunk, "visual_extractor '", kind,
              "' is not supported (resnet101 or patch_stats)");
  if (kind == kResNet101Trunk) build_resnet101();
}

std::pair<torch::Tensor, torch::Tensor> VisualExtractorImpl::forward_patch_stats(const torch::Tensor& images) {
  TORCH_CHECK(images.dim() == 4 && images.size(2) == 224 && images.size(3) == 224,
              "the patch_stats trunk expects [N,3,224,224] images, got ", images.sizes());
  const int64_t n = images.size(0);
  auto grey = images.mean(1, /*keepdim=*/true);                                    // [N,1,224,224]
  auto mean8 = torch::avg_pool2d(grey, 8);                                         // [N,1,28,28]
  auto max8 = torch::max_pool2d(grey, 8);                                          // [N,1,28,28]
  auto std8 = (torch::avg_pool2d(grey * grey, 8) - mean8 * mean8).clamp_min(0).sqrt();  // [N,1,28,28]
  // 28x28 sub-blocks -> 7x7 patches of 4x4 sub-blocks, patch-major as the ResNet's reshape(n, c, 49).
  auto per_patch = [&](const torch::Tensor& m) {
    return m.reshape({n, 7, 4, 7, 4}).permute({0, 1, 3, 2, 4}).reshape({n, 49, 16});  // [N,49,16]
  };
  auto mean32 = torch::avg_pool2d(grey, 32);                                       // [N,1,7,7]
  auto std32 = (torch::avg_pool2d(grey * grey, 32) - mean32 * mean32).clamp_min(0).sqrt();  // [N,1,7,7]
  auto eye = torch::eye(7, images.options());                                      // [7,7]
  auto rows = eye.unsqueeze(1).expand({7, 7, 7}).reshape({49, 7});                // [49,7] row one-hot
  auto cols = eye.unsqueeze(0).expand({7, 7, 7}).reshape({49, 7});                // [49,7] column one-hot
  auto att = torch::cat({per_patch(mean8), per_patch(max8), per_patch(std8), mean32.reshape({n, 49, 1}),
                         std32.reshape({n, 49, 1}), rows.unsqueeze(0).expand({n, 49, 7}),
                         cols.unsqueeze(0).expand({n, 49, 7})},
                        2);                                                        // [N,49,64]
  return {att, att.mean(1)};                                                       // [N,49,64], [N,64]
}

std::pair<torch::Tensor, torch::Tensor> VisualExtractorImpl::forward(const torch::Tensor& images) {
  if (kind_ == kPatchStatsTrunk) return forward_patch_stats(images);
  const bool folded = !is_training() && !torch::GradMode::is_enabled();
  auto patch = folded ? forward_folded(images) : forward_trunk(images);    // [N,2048,7,7]
  const int64_t n = patch.size(0), c = patch.size(1);
  auto avg = torch::avg_pool2d(patch, 7, 1, 0).reshape({-1, c});           // [N,2048]
  auto att = patch.reshape({n, c, -1}).permute({0, 2, 1});                 // [N,49,2048]
  return {att, avg};
}

VisualFeatures VisualExtractorImpl::extract(const torch::Tensor& studies) {
  TORCH_CHECK(studies.dim() == 5, "expected images [B,V,3,H,W], got ", studies.sizes());
  const int64_t b = studies.size(0), v = studies.size(1);
  if (is_training()) {
    // Training: one trunk call per view, as the reference, because batch norm then normalises with the
    // statistics of that call's batch (and updates its running stats once per view).
    std::vector<torch::Tensor> atts, fcs;
    for (int64_t i = 0; i < v; ++i) {
      auto [a, f] = forward(studies.select(1, i));                         // [B,49,2048], [B,2048]
      atts.push_back(a);
      fcs.push_back(f);
    }
    return {torch::cat(atts, 1), torch::cat(fcs, 1)};                     // [B,V*49,2048], [B,V*2048]
  }
  // Inference: all views of all studies in one trunk call; eval-mode batch norm makes this equal to the
  // reference's one call per view.
  auto [att, avg] = forward(studies.flatten(0, 1));                        // [B*V,49,2048], [B*V,2048]
  VisualFeatures f;
  f.att = att.reshape({b, v * att.size(1), att.size(2)});                 // [B,V*49,2048]
  f.fc = avg.reshape({b, v * avg.size(1)});                                // [B,V*2048]
  return f;
}

}  // namespace cmn::model
