// Image files -> normalised CHW float buffers, bit-exact with R2GenCMN's PIL/torchvision test transform.
//
// The resampler below mirrors Pillow's src/libImaging/Resample.c (ImagingResample with the BILINEAR
// filter and the default box (0, 0, width, height)), 8-bit path:
//   * coefficients are computed in double, normalised to sum 1, then converted to fixed point with
//     PRECISION_BITS = 22 bits, rounding half away from zero;
//   * each output sample is 1 << 21 (one half, so the final shift rounds) plus the sum of 8-bit samples
//     times the fixed-point weights, in a 32-bit int, shifted right by 22 and clipped to 0..255;
//   * the horizontal pass runs first, but only over the source rows the vertical pass will read, and its
//     result (8-bit, so rounded once per pass) feeds the vertical pass.
// Any deviation (float weights, one 2-D pass, different rounding) shifts some pixels by one grey level,
// which is exactly what the parity test against inputs.pt would catch.
#include "cmn/preprocessing/image_pipeline.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "codec_guards.h"

namespace cmn::preprocessing {
namespace {

// Pillow: "8 bits for result. Filter can have negative areas ... two extra bits for overflow and int type."
constexpr int kPrecisionBits = 32 - 8 - 2;

// Pillow's bilinear_filter (a triangle of support 1).
double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

// Fixed-point taps for one output axis: output sample i reads `count[i]` input samples starting at
// `first[i]`, with weights `weights[i * ksize + j]`.
struct AxisCoefficients {
  int ksize = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<std::int32_t> weights;
};

// Pillow's precompute_coeffs followed by normalize_coeffs_8bpc, for the box [0, in_size).
AxisCoefficients precompute_coefficients(int in_size, int out_size) {
  // Pillow passes the box edges as float; (double)(in1 - in0) is exact for any realistic size.
  const float in0 = 0.0f;
  const auto in1 = static_cast<float>(in_size);
  const double scale = static_cast<double>(in1 - in0) / out_size;
  // Antialiasing: when shrinking, the filter is stretched over `scale` input pixels.
  const double filterscale = std::max(scale, 1.0);
  const double support = 1.0 * filterscale;  // BILINEAR support is 1.0
  const int ksize = static_cast<int>(std::ceil(support)) * 2 + 1;

  AxisCoefficients c;
  c.ksize = ksize;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.weights.assign(static_cast<std::size_t>(out_size) * ksize, 0);
  std::vector<double> k(ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    // (int) truncates toward zero, as in C; the "+ 0.5" is Pillow's rounding of the window edges.
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      // Same expression order as Pillow: ((x + xmin) - center + 0.5) * ss.
      const double w = bilinear_filter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x) {
      if (ww != 0.0) k[x] /= ww;
    }
    // normalize_coeffs_8bpc: round half away from zero to 22 fractional bits.
    std::int32_t* out = &c.weights[static_cast<std::size_t>(xx) * ksize];
    for (int x = 0; x < xmax; ++x) {
      const double scaled = k[x] * (1 << kPrecisionBits);
      out[x] = static_cast<std::int32_t>(k[x] < 0 ? -0.5 + scaled : 0.5 + scaled);
    }
    c.first[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

// Pillow's clip8: drop the fraction bits, clamp to a byte.
inline std::uint8_t clip8(std::int32_t acc) {
  // >> on a negative int is arithmetic with GCC/Clang, as Pillow relies on too.
  const std::int32_t v = acc >> kPrecisionBits;
  return static_cast<std::uint8_t>(std::clamp<std::int32_t>(v, 0, 255));
}

// Horizontal pass over source rows [row_offset, row_offset + out.rows).
template <int C>
void resample_horizontal(const cv::Mat& in, cv::Mat& out, int row_offset, const AxisCoefficients& c) {
  const int out_width = out.cols;
  for (int yy = 0; yy < out.rows; ++yy) {
    const std::uint8_t* src = in.ptr<std::uint8_t>(yy + row_offset);
    std::uint8_t* dst = out.ptr<std::uint8_t>(yy);
    for (int xx = 0; xx < out_width; ++xx) {
      const int xmin = c.first[xx];
      const int n = c.count[xx];
      const std::int32_t* k = &c.weights[static_cast<std::size_t>(xx) * c.ksize];
      std::int32_t acc[C];
      for (int ch = 0; ch < C; ++ch) acc[ch] = 1 << (kPrecisionBits - 1);
      const std::uint8_t* p = src + static_cast<std::size_t>(xmin) * C;
      for (int x = 0; x < n; ++x) {
        for (int ch = 0; ch < C; ++ch) acc[ch] += static_cast<std::int32_t>(p[x * C + ch]) * k[x];
      }
      for (int ch = 0; ch < C; ++ch) dst[xx * C + ch] = clip8(acc[ch]);
    }
  }
}

// Vertical pass. Integer addition is associative, so accumulating whole rows tap by tap (cache-friendly)
// gives the same bits as Pillow's per-pixel loop.
void resample_vertical(const cv::Mat& in, cv::Mat& out, const AxisCoefficients& c) {
  const int row_elems = in.cols * in.channels();
  std::vector<std::int32_t> acc(row_elems);
  for (int yy = 0; yy < out.rows; ++yy) {
    const int ymin = c.first[yy];
    const int n = c.count[yy];
    const std::int32_t* k = &c.weights[static_cast<std::size_t>(yy) * c.ksize];
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    for (int y = 0; y < n; ++y) {
      const std::uint8_t* src = in.ptr<std::uint8_t>(ymin + y);
      const std::int32_t w = k[y];
      for (int i = 0; i < row_elems; ++i) acc[i] += static_cast<std::int32_t>(src[i]) * w;
    }
    std::uint8_t* dst = out.ptr<std::uint8_t>(yy);
    for (int i = 0; i < row_elems; ++i) dst[i] = clip8(acc[i]);
  }
}

void dispatch_horizontal(const cv::Mat& in, cv::Mat& out, int row_offset, const AxisCoefficients& c) {
  switch (in.channels()) {
    case 1: resample_horizontal<1>(in, out, row_offset, c); break;
    case 2: resample_horizontal<2>(in, out, row_offset, c); break;
    case 3: resample_horizontal<3>(in, out, row_offset, c); break;
    default: resample_horizontal<4>(in, out, row_offset, c); break;
  }
}

absl::Status file_error(absl::StatusCode code, const std::string& path, const std::string& what) {
  return absl::Status(code, absl::StrCat("image '", path, "': ", what));
}

}  // namespace

absl::StatusOr<cv::Mat> to_rgb8(const cv::Mat& decoded) {
  if (decoded.empty()) return absl::InvalidArgumentError("to_rgb8: empty image");
  cv::Mat u8;
  switch (decoded.depth()) {
    case CV_8U:
      u8 = decoded;
      break;
    case CV_16U:
      // 16 -> 8 bits by keeping the high byte (v >> 8). That is what PIL does for 16-bit RGB(A) PNGs,
      // which it decodes straight to 8-bit "RGB;16B" rawmode. For 16-bit grey PIL differs: it opens
      // them as "I;16" and convert('RGB') clips to 255, turning almost every real 16-bit radiograph
      // white; we prefer the meaningful high byte. The reference data set is 8-bit, so no parity risk.
      // An explicit shift, not convertTo(1/256), which would round 0xFF80 up and saturate.
      {
        cv::Mat shifted(decoded.size(), CV_MAKETYPE(CV_8U, decoded.channels()));
        const int elems = decoded.cols * decoded.channels();
        for (int y = 0; y < decoded.rows; ++y) {
          const std::uint16_t* s = decoded.ptr<std::uint16_t>(y);
          std::uint8_t* d = shifted.ptr<std::uint8_t>(y);
          for (int i = 0; i < elems; ++i) d[i] = static_cast<std::uint8_t>(s[i] >> 8);
        }
        u8 = shifted;
      }
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("to_rgb8: unsupported sample depth (OpenCV depth ", decoded.depth(),
                       "); only 8- and 16-bit unsigned images are supported"));
  }
  // OpenCV decodes colour as BGR(A). PIL's convert('RGB') replicates grey and drops alpha without
  // compositing it over any background, so the colour under a transparent pixel is kept as is.
  cv::Mat rgb;
  switch (u8.channels()) {
    case 1: cv::cvtColor(u8, rgb, cv::COLOR_GRAY2RGB); break;
    case 2: {
      // Grey + alpha (OpenCV usually expands these to BGRA, but some decoders return 2 channels).
      cv::Mat grey;
      cv::extractChannel(u8, grey, 0);
      cv::cvtColor(grey, rgb, cv::COLOR_GRAY2RGB);
      break;
    }
    case 3: cv::cvtColor(u8, rgb, cv::COLOR_BGR2RGB); break;
    case 4: cv::cvtColor(u8, rgb, cv::COLOR_BGRA2RGB); break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("to_rgb8: unsupported channel count ", u8.channels()));
  }
  return rgb;
}

absl::StatusOr<cv::Mat> read_rgb8(const std::string& path, const PixelLimits& limits) {
  namespace fs = std::filesystem;
  // imread only says "empty Mat" for every failure; check the file first so errors say what went wrong.
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) return file_error(absl::StatusCode::kNotFound, path, "no such file");
  if (!fs::is_regular_file(st)) return file_error(absl::StatusCode::kInvalidArgument, path, "not a regular file");
  const auto size = fs::file_size(path, ec);
  if (ec) return file_error(absl::StatusCode::kPermissionDenied, path, absl::StrCat("cannot stat: ", ec.message()));
  if (size == 0) return file_error(absl::StatusCode::kInvalidArgument, path, "file is empty");

  // The declared size first: OpenCV's own cap (2^30 pixels) still lets a 100-byte PNG allocate gigabytes.
  {
    std::ifstream in(path, std::ios::binary);  // unopenable: imread below says so, as before
    if (absl::Status s = in ? internal::check_image_file_header(&in, limits) : absl::OkStatus(); !s.ok()) {
      return file_error(s.code(), path, std::string(s.message()));
    }
  }
  cv::Mat decoded;
  try {
    // IMREAD_UNCHANGED keeps bit depth and alpha, and (like PIL's Image.open) ignores EXIF orientation.
    decoded = cv::imread(path, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception& e) {
    return file_error(absl::StatusCode::kInvalidArgument, path, absl::StrCat("cannot decode: ", e.what()));
  }
  if (decoded.empty()) {
    return file_error(absl::StatusCode::kInvalidArgument, path,
                      "not a decodable image (unknown format, corrupt, or unreadable)");
  }
  auto rgb = to_rgb8(decoded);
  if (!rgb.ok()) return file_error(absl::StatusCode::kInvalidArgument, path, std::string(rgb.status().message()));
  return rgb;
}

cv::Mat resize_bilinear_pil(const cv::Mat& image_u8, int width, int height) {
  CV_Assert(!image_u8.empty() && image_u8.depth() == CV_8U);
  CV_Assert(image_u8.channels() >= 1 && image_u8.channels() <= 4);
  CV_Assert(width > 0 && height > 0);
  const int in_width = image_u8.cols;
  const int in_height = image_u8.rows;
  const int type = image_u8.type();

  // Pillow's ImagingResampleInner with box (0, 0, in_width, in_height): a pass runs only when its size
  // changes.
  const bool need_horizontal = width != in_width;
  const bool need_vertical = height != in_height;

  const AxisCoefficients vert = precompute_coefficients(in_height, height);
  cv::Mat current = image_u8;
  // Bounds of the vertical pass, relative to `current`'s first row.
  std::vector<int> vert_first = vert.first;

  if (need_horizontal) {
    // Pillow only resamples the source rows the vertical pass will read: [first used, last used). With
    // the full-image box this window is always every row (the first output's window clamps to row 0,
    // the last one's to in_height), but keeping Pillow's bookkeeping makes a future box/crop exact too.
    const int ybox_first = vert.first.front();
    const int ybox_last = vert.first.back() + vert.count.back();
    const AxisCoefficients horiz = precompute_coefficients(in_width, width);
    cv::Mat temp(ybox_last - ybox_first, width, type);
    dispatch_horizontal(current, temp, ybox_first, horiz);
    for (int& f : vert_first) f -= ybox_first;
    current = temp;
  }
  if (need_vertical) {
    AxisCoefficients shifted = vert;
    shifted.first = vert_first;
    cv::Mat out(height, current.cols, type);
    resample_vertical(current, out, shifted);
    return out;
  }
  // Neither pass (same size) or horizontal only: `current` is already the answer. With the horizontal
  // pass but no vertical one the row window is the whole image (a 1:1 axis reads one row per row).
  return need_horizontal ? current : image_u8.clone();
}

FloatImage to_model_input(const cv::Mat& rgb8, const ImageOptions& options) {
  CV_Assert(!rgb8.empty() && (rgb8.type() == CV_8UC3 || rgb8.type() == CV_8UC1));
  const int size = options.size;
  const cv::Mat resized = resize_bilinear_pil(rgb8, size, size);

  FloatImage result;
  result.channels = 3;
  result.height = size;
  result.width = size;
  const std::size_t plane = static_cast<std::size_t>(size) * size;
  result.data.resize(3 * plane);
  const int in_channels = resized.channels();  // 1: grey, replicated into R, G and B
  for (int c = 0; c < 3; ++c) {
    // torchvision: ToTensor is uint8 -> float32 then div(255); Normalize is sub_(mean).div_(std), all in
    // float32. Keep the same operations and order (no fused reciprocal) so the floats match bit for bit.
    const float mean = options.mean[c];
    const float stdev = options.std[c];
    float lut[256];
    for (int v = 0; v < 256; ++v) {
      const float x = static_cast<float>(v) / 255.0f;
      lut[v] = (x - mean) / stdev;
    }
    float* out = result.data.data() + c * plane;
    const int src_c = in_channels == 1 ? 0 : c;
    for (int y = 0; y < size; ++y) {
      const std::uint8_t* row = resized.ptr<std::uint8_t>(y);
      for (int x = 0; x < size; ++x) out[static_cast<std::size_t>(y) * size + x] = lut[row[x * in_channels + src_c]];
    }
  }
  return result;
}

absl::StatusOr<FloatImage> load_model_input(const std::string& path, const ImageOptions& options) {
  auto rgb = read_rgb8(path, options.limits);
  if (!rgb.ok()) return rgb.status();
  return to_model_input(*rgb, options);
}

}  // namespace cmn::preprocessing
