#pragma once
// Private to cmn_preprocessing: the grey-level policy of dicom.h (stored values -> 8-bit grey), without DCMTK.
#include <string>

#include "absl/status/statusor.h"
#include <opencv2/core.hpp>

#include "cmn/preprocessing/dicom.h"
#include "dcmtk_bridge.h"

namespace cmn::preprocessing::internal {

struct GreyResult {
  cv::Mat grey8;            // CV_8UC1, same size as the frame
  std::string description;  // which rules applied (DicomImage::grey_levels)
};

// frame: as DecodedInstance::frame (CV_8UC(n) / CV_16UC(n) container words, samples interleaved).
// Errors carry the reason only; the caller names the instance.
absl::StatusOr<GreyResult> stored_to_grey8(const PixelDescription& pixels, const cv::Mat& frame,
                                           const DicomReadOptions& options);

}  // namespace cmn::preprocessing::internal
