#pragma once
// The per-request memory estimate behind limits.max_request_mb: what one GenerateReport call holds at its
// peak, so a request that would take the server past its ceiling is refused (RESOURCE_EXHAUSTED, with the
// figures) before anything large is allocated. Estimates are upper bounds in fp32, not measurements; the
// decoding part (the largest chosen instance, preprocessing::decode_peak_bytes) is checked inside
// assemble_study against what is left after the parts below.
#include <cstdint>
#include <string>

#include "cmn/model/config.h"
#include "cmn/model/decoding_options.h"

namespace cmn::server {

struct ModelStateEstimate {
  int64_t inputs = 0;   // the views' model inputs, [V, 3, S, S]
  int64_t visual = 0;   // ResNet-101's largest live activations for V views at S x S
  int64_t decode = 0;   // features, encoder memory, the decoder's key/value caches and step scores for the beams
  int64_t attention = 0;  // attention maps captured for the chosen hypothesis (0 unless asked for)
  int64_t total() const { return inputs + visual + decode + attention; }
};

ModelStateEstimate estimate_model_state(const model::ModelConfig& config, const model::DecodingOptions& decoding,
                                        int64_t views, int64_t image_size, bool attention);

// "the request needs an estimated N MiB (...), over limits.max_request_mb M" when request_bytes + the model
// state exceed the ceiling; empty when it fits.
std::string over_memory_ceiling(int64_t request_bytes, const ModelStateEstimate& state, int64_t max_request_mb);

}  // namespace cmn::server
