// Per-request memory estimate (request_memory.h).
#include "cmn/server/request_memory.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace cmn::server {
namespace {
constexpr int64_t kFloat = 4;
constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kPatches = 49;  // 7 x 7 patches per view at 224 x 224
}  // namespace

ModelStateEstimate estimate_model_state(const model::ModelConfig& c, const model::DecodingOptions& d, int64_t views,
                                        int64_t image_size, bool attention) {
  ModelStateEstimate e;
  const int64_t beams = std::max<int64_t>(1, d.beam_size);
  const int64_t steps = std::max<int64_t>(1, d.max_length);
  const int64_t tokens = views * kPatches;  // the encoder's sequence
  e.inputs = views * 3 * image_size * image_size * kFloat;
  // ResNet's widest stage holds 256 channels at a quarter of the input side; a few such tensors live at once
  // (block input, bottleneck output, residual): 16 x 256 x (S/4)^2 bytes = 12.8 MB a view at 224.
  e.visual = views * 16 * 256 * (image_size / 4) * (image_size / 4);
  // Patch features [V*49, d_vf], encoder memory [beams, V*49, d_model] and its per-layer cross keys/values,
  // self-attention keys/values for every step [layers, 2, beams, steps, d_model], the memory query's scores
  // [beams, heads, cmm_size] and the logits [beams, vocab] of a step.
  e.decode = (tokens * c.d_vf + beams * tokens * c.d_model * (1 + 2 * c.num_layers) +
              c.num_layers * 2 * beams * steps * c.d_model + beams * c.num_heads * c.cmm_size +
              beams * std::max<int64_t>(c.vocab_size + 1, 1)) *
             kFloat;
  // One causal teacher-forced pass over the beams: [layers, beams, heads, steps, V*49] scores.
  if (attention) e.attention = c.num_layers * beams * c.num_heads * steps * tokens * kFloat;
  return e;
}

std::string over_memory_ceiling(int64_t request_bytes, const ModelStateEstimate& state, int64_t max_request_mb) {
  const int64_t need = request_bytes + state.total();
  if (need <= max_request_mb * kMiB) return "";
  return absl::StrCat("the request needs an estimated ", (need + kMiB - 1) / kMiB, " MiB before decoding its images (",
                      request_bytes / kMiB, " MiB of request, ", state.inputs / kMiB, " MiB of model inputs, ",
                      state.visual / kMiB, " MiB for the visual stage, ", state.decode / kMiB, " MiB for decoding, ",
                      state.attention / kMiB, " MiB of attention maps), over limits.max_request_mb ", max_request_mb);
}

}  // namespace cmn::server
