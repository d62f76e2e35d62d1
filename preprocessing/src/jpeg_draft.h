#pragma once
// Private to cmn_preprocessing, DCMTK-free: draft decoding of 8-bit greyscale JPEG (DICOM JPEG baseline /
// extended with 8-bit samples) at a reduced size, through libjpeg-turbo's DCT scaling. The model sees 224 x 224:
// a 2010 x 2446 radiograph decoded at 1/8 (252 x 306) skips most of the inverse DCT and all of the full-size
// frame. DCMTK's own JPEG codec (the exact path) has no scaled decoding.
#include <cstdint>
#include <optional>
#include <string>

#include <opencv2/core.hpp>

namespace cmn::preprocessing::internal {

// The largest power-of-two denominator (2, 4 or 8) that keeps ceil(min(rows, columns) / d) >= min_side;
// 1 when even 1/2 would go below it (then a draft decode gains nothing).
int jpeg_draft_denominator(int64_t rows, int64_t columns, int min_side);

struct JpegDraft {
  cv::Mat frame;  // CV_8UC1, ceil(rows / scale) x ceil(columns / scale)
  int scale = 1;  // the denominator used
};

// Decodes `bitstream` (one JPEG frame) at 1/jpeg_draft_denominator(rows, columns, min_side). nullopt when the
// draft path does not apply or does not succeed cleanly, so the caller decodes exactly instead: the stream is
// not 8-bit single-component, its frame header disagrees with rows x columns, the denominator is 1, or libjpeg
// reported an error or even a warning (a truncated or corrupt stream gets the exact decoder's error message).
// The frame header's size has been checked against the pixel limits by the caller.
std::optional<JpegDraft> decode_jpeg_draft(const std::string& bitstream, int64_t rows, int64_t columns, int min_side);

}  // namespace cmn::preprocessing::internal
