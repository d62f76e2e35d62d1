#pragma once
// Image files -> the tensor the model was trained on, identical to R2GenCMN's test transform:
//   PIL Image.open(path).convert('RGB') -> Resize((224, 224)) (PIL bilinear, antialiased when shrinking)
//   -> ToTensor (/255) -> Normalize(ImageNet mean/std).
// OpenCV's INTER_LINEAR does not antialias when shrinking, so the resize here re-implements PIL's
// separable fixed-point resampler. No LibTorch in this library: results are plain float buffers (CHW).
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include <opencv2/core.hpp>

namespace cmn::preprocessing {

// The one bound on how large an image may declare itself, for every decoder of this library: DICOM Rows x
// Columns and the JPEG / JPEG-LS / JPEG 2000 / RLE headers inside the Pixel Data (DicomReadOptions), PNG and
// JPEG files (read_rgb8). It is checked on the header, before any pixel buffer is allocated; an image over it
// is refused with InvalidArgument "...image of W x H = N pixels exceeds the limits (M pixels, D per side)".
inline constexpr int64_t kDefaultMaxPixels = 100'000'000;
inline constexpr int64_t kDefaultMaxDimension = 65535;
struct PixelLimits {
  int64_t max_pixels = kDefaultMaxPixels;        // width * height above this is refused
  int64_t max_dimension = kDefaultMaxDimension;  // width or height above this is refused
};

struct ImageOptions {
  int size = 224;                                       // output height = width (Resize((size, size)))
  std::array<float, 3> mean = {0.485f, 0.456f, 0.406f}; // ImageNet mean, per RGB channel
  std::array<float, 3> std = {0.229f, 0.224f, 0.225f};  // ImageNet std, per RGB channel
  PixelLimits limits;                                   // for image files (load_model_input)
};

// A normalised image, channels-first: data[c * height * width + y * width + x].
struct FloatImage {
  int channels = 3;
  int height = 0;
  int width = 0;
  std::vector<float> data;
};

// Reads a PNG/JPEG (8- or 16-bit, grey, grey+alpha, RGB, RGBA) into an 8-bit RGB image (CV_8UC3, R,G,B
// order) as PIL's convert('RGB') does: grey is replicated, alpha dropped, 16-bit scaled to 8 bits.
// Errors name the file: missing, unreadable, not an image, empty, or (InvalidArgument) a PNG IHDR / JPEG frame
// header declaring a size over `limits`, refused before the decoder runs.
absl::StatusOr<cv::Mat> read_rgb8(const std::string& path, const PixelLimits& limits = {});

// The conversion step of read_rgb8, for an image already decoded with cv::IMREAD_UNCHANGED layout
// (CV_8U or CV_16U; 1 = grey, 2 = grey+alpha, 3 = BGR, 4 = BGRA) -> CV_8UC3 in R,G,B order.
// 16-bit samples keep their high byte (v >> 8); alpha is dropped, not composited (as PIL does).
absl::StatusOr<cv::Mat> to_rgb8(const cv::Mat& decoded);

// PIL's Image.resize((width, height), Image.BILINEAR) on an 8-bit image (1 or 3 channels), bit-exact with
// Pillow's integer implementation (separable, horizontal pass first, support scaled when shrinking).
// Preconditions (cv::Exception otherwise): CV_8U with 1..4 channels, non-empty, width and height > 0.
cv::Mat resize_bilinear_pil(const cv::Mat& image_u8, int width, int height);

// 8-bit RGB -> resize -> ToTensor -> Normalize. Takes CV_8UC3 (R,G,B) or CV_8UC1 (grey, replicated into
// all three channels, same result as converting first); anything else throws cv::Exception.
FloatImage to_model_input(const cv::Mat& rgb8, const ImageOptions& options = {});

// read_rgb8 (with options.limits) + to_model_input.
absl::StatusOr<FloatImage> load_model_input(const std::string& path, const ImageOptions& options = {});

}  // namespace cmn::preprocessing
