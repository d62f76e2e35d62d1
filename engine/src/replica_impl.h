#pragma once
// What a Replica holds (replica.cc) and the image packing its entry points share (replica.cc, flight.cc).
#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "cmn/engine/replica.h"
#include "cmn/model/r2gencmn.h"
#include "cmn/preprocessing/image_pipeline.h"

namespace cmn::engine {

struct ReplicaImpl {
  torch::Device device{torch::kCPU};
  model::R2GenCMN network{nullptr};
};

// [layers,T,S] on any device -> TokenAttention on the CPU (empty when undefined).
TokenAttention to_token_attention(const torch::Tensor& t);

// studies[b] = V views, each [3,H,W] -> [B,V,3,H,W] on the CPU; InvalidArgument naming the study and view whose
// count or shape does not fit.
absl::StatusOr<torch::Tensor> pack_images(const std::vector<const std::vector<preprocessing::FloatImage>*>& studies,
                                          int64_t views);

}  // namespace cmn::engine
