#pragma once
// Private to cmn_preprocessing, DCMTK-free: JPEG 2000 codestreams (J2K or JP2) through OpenJPEG. DCMTK 3.6 has
// no free JPEG 2000 codec; pixel_decoding.cc hands over frame 1's bytes.
#include <string>

#include "absl/status/statusor.h"
#include <opencv2/core.hpp>

#include "cmn/preprocessing/image_pipeline.h"
#include "dcmtk_bridge.h"

namespace cmn::preprocessing::internal {

// Decodes `bitstream` into a frame as DecodedInstance::frame describes it. The SIZ marker is checked first,
// before OpenJPEG allocates anything (codec_guards.h: size within `limits`, tile count), and the codestream
// must match the dataset's Columns x Rows x Samples per Pixel. Errors carry the reason only.
// Draft decoding (draft_min_side > 0): only the coarsest resolution level whose short side is still
// >= draft_min_side is reconstructed (OpenJPEG's reduce factor r: ceil(Columns / 2^r) x ceil(Rows / 2^r)), and
// *scale is set to 2^r. If the codestream cannot be reduced that far after all (a tile-part COD with fewer
// levels), it is decoded in full, scale 1.
absl::StatusOr<cv::Mat> decode_jpeg2000(const std::string& bitstream, const PixelDescription& p,
                                        const PixelLimits& limits, int draft_min_side = 0, int* scale = nullptr);

}  // namespace cmn::preprocessing::internal
