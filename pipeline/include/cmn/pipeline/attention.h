#pragma once
// Per-sentence attention maps of a generated report, as R2GenCMN's plotting code draws them
// (modules/tester.py Tester.plot + modules/utils.py generate_heatmap): for each decoder layer, the
// cross-attention (src_attn) probabilities averaged over heads and over the tokens of a sentence (the
// reference averages over the tokens of each entity the same way), min-max normalised, upsampled to the
// image with bilinear interpolation, JET colour map, blended 50/50 with the model input image.
// With several views the patch axis holds V blocks of 7x7; each view gets its own map.
// Used by cmn-generate --attention-dir and by the server's output.attention_maps.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cmn/model/tokenizer.h"
#include "cmn/engine/replica.h"
#include "cmn/preprocessing/image_pipeline.h"

namespace cmn::pipeline {

inline constexpr int kPatchGrid = 7;  // ResNet-101 at 224x224 -> 7x7 patches per view

struct AttentionMap {
  int64_t sentence = 0;        // 0-based sentence index in the report
  std::string text;            // the sentence's words, ending with "." when the model wrote one
  int64_t layer = 0;           // decoder layer (the reference plots each layer separately)
  int64_t view = 0;            // view slot
  std::vector<float> weights;  // [kPatchGrid * kPatchGrid], row-major (y, x); mean over heads and tokens
};

// Splits the report (its token ids, without the end token) into sentences at the "." token and averages the
// decoder's cross-attention over each sentence's tokens. FailedPrecondition when `attention` is empty (the report
// was generated without attention capture); InvalidArgument when it does not fit the ids or views * 49 patches.
absl::StatusOr<std::vector<AttentionMap>> sentence_attention_maps(const std::vector<int64_t>& token_ids,
                                                                  const engine::TokenAttention& attention,
                                                                  const model::Tokenizer& tokenizer,
                                                                  int64_t views);

// The heat map over one view's model input (denormalised back to 8 bits as the reference does) as PNG
// bytes. InvalidArgument on a wrong-sized map or image.
absl::StatusOr<std::string> render_attention_png(const AttentionMap& map, const preprocessing::FloatImage& view,
                                                 const preprocessing::ImageOptions& image_options);

// Writes every map of `maps` as <dir>/s<NN>_layer<L>_view<V>.png plus <dir>/sentences.json (index, text,
// files), each file atomically (temporary name, then rename). Creates `dir`.
absl::Status write_attention_maps(const std::string& dir, const std::vector<AttentionMap>& maps,
                                  const std::vector<preprocessing::FloatImage>& views,
                                  const preprocessing::ImageOptions& image_options);

}  // namespace cmn::pipeline
