// The grey-level policy documented in dicom.h, and read_dicom_image / read_dicom_file on top of the bridge.
// Every rule is evaluated once per possible stored value (at most 2^16), giving an 8-bit table; the frame is
// then mapped through that table in one pass.
#include "grey_levels.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cmn/common/status_macros.h"

namespace cmn::preprocessing {
namespace internal {
namespace {

double lut_lookup(const DicomLut& lut, double x) {
  const double index = std::floor(x) - static_cast<double>(lut.first_mapped);
  const double last = static_cast<double>(lut.data.size()) - 1;
  return lut.data[static_cast<size_t>(std::clamp(index, 0.0, last))];
}

// PS3.3 C.11.2.1.2.1 / C.11.2.1.3.1 with ymin = 0, ymax = 255. The middle branches are the standard's
// formulas rearranged to multiply before dividing ((m - (c - 0.5)) / (w - 1) + 0.5 = (m - c + w / 2) / (w - 1)),
// so that integer inputs landing on a half grey level round the same way on every machine.
double window_linear(double x, double c, double w) {
  if (x <= c - 0.5 - (w - 1) / 2) return 0;
  if (x > c - 0.5 + (w - 1) / 2) return 255;
  return (x - c + w / 2) * 255 / (w - 1);
}

double window_linear_exact(double x, double c, double w) {
  if (x <= c - w / 2) return 0;
  if (x > c + w / 2) return 255;
  return (x - c + w / 2) * 255 / w;
}

double window_sigmoid(double x, double c, double w) { return 255 / (1 + std::exp(-4 * (x - c) / w)); }

// Applies `table` (indexed by the stored value's bits) to every sample of a 1-channel frame.
template <typename Word>
void map_frame(const cv::Mat& frame, int shift, uint32_t mask, const std::vector<uint8_t>& table, cv::Mat* out) {
  for (int y = 0; y < frame.rows; ++y) {
    const Word* src = frame.ptr<Word>(y);
    uint8_t* dst = out->ptr<uint8_t>(y);
    for (int x = 0; x < frame.cols; ++x) dst[x] = table[(static_cast<uint32_t>(src[x]) >> shift) & mask];
  }
}

template <typename Word>
void histogram(const cv::Mat& frame, int shift, uint32_t mask, std::vector<uint64_t>* counts) {
  for (int y = 0; y < frame.rows; ++y) {
    const Word* src = frame.ptr<Word>(y);
    for (int x = 0; x < frame.cols; ++x) ++(*counts)[(static_cast<uint32_t>(src[x]) >> shift) & mask];
  }
}

template <typename Word>
void colour_to_luma(const cv::Mat& frame, int shift, uint32_t mask, const std::vector<uint8_t>& scale8,
                    bool is_ybr, cv::Mat* out) {
  for (int y = 0; y < frame.rows; ++y) {
    const Word* src = frame.ptr<Word>(y);
    uint8_t* dst = out->ptr<uint8_t>(y);
    for (int x = 0; x < frame.cols; ++x) {
      const uint32_t a = scale8[(static_cast<uint32_t>(src[3 * x]) >> shift) & mask];
      if (is_ybr) {
        dst[x] = static_cast<uint8_t>(a);
        continue;
      }
      const uint32_t g = scale8[(static_cast<uint32_t>(src[3 * x + 1]) >> shift) & mask];
      const uint32_t b = scale8[(static_cast<uint32_t>(src[3 * x + 2]) >> shift) & mask];
      dst[x] = static_cast<uint8_t>((a * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);  // PIL's convert('L')
    }
  }
}

absl::StatusOr<GreyResult> colour_to_grey8(const PixelDescription& p, const cv::Mat& frame, int shift,
                                           uint32_t mask) {
  const size_t domain = size_t{1} << p.bits_stored;
  std::vector<uint8_t> scale8(domain);
  for (size_t i = 0; i < domain; ++i) {
    scale8[i] = static_cast<uint8_t>((i * 255 + (domain - 1) / 2) / (domain - 1));
  }
  const bool is_ybr = p.photometric == "YBR_FULL";
  GreyResult result;
  result.grey8.create(frame.rows, frame.cols, CV_8UC1);
  if (frame.depth() == CV_8U) {
    colour_to_luma<uint8_t>(frame, shift, mask, scale8, is_ybr, &result.grey8);
  } else {
    colour_to_luma<uint16_t>(frame, shift, mask, scale8, is_ybr, &result.grey8);
  }
  result.description = is_ybr ? "YBR_FULL: Y sample" : absl::StrCat(p.photometric, ": luma (PIL convert('L'))");
  return result;
}

}  // namespace

absl::StatusOr<GreyResult> stored_to_grey8(const PixelDescription& p, const cv::Mat& frame,
                                           const DicomReadOptions& options) {
  const int expected_depth = p.bits_allocated == 8 ? CV_8U : CV_16U;
  if (frame.depth() != expected_depth || frame.channels() != p.samples_per_pixel || frame.rows != p.rows ||
      frame.cols != p.columns || p.bits_stored < 1 || p.bits_stored > 16 ||
      p.high_bit + 1 - p.bits_stored < 0 || p.high_bit >= p.bits_allocated) {
    return absl::InternalError("decoded frame does not match its pixel description");
  }
  const int bits = p.bits_stored;
  const int shift = p.high_bit + 1 - bits;
  const uint32_t mask = (uint32_t{1} << bits) - 1;
  const size_t domain = size_t{1} << bits;
  if (p.samples_per_pixel == 3) return colour_to_grey8(p, frame, shift, mask);

  // Stored value of a table index: sign-extended from `bits` bits for signed pixels.
  auto value_of = [&](size_t index) -> int64_t {
    if (p.is_signed && (index >> (bits - 1)) != 0) return static_cast<int64_t>(index) - static_cast<int64_t>(domain);
    return static_cast<int64_t>(index);
  };

  // 1. Modality LUT
  std::vector<double> modality(domain);
  std::string description;
  if (p.modality_lut) {
    for (size_t i = 0; i < domain; ++i) modality[i] = lut_lookup(*p.modality_lut, static_cast<double>(value_of(i)));
    description = absl::StrCat("Modality LUT Sequence (", p.modality_lut->data.size(), " entries)");
  } else {
    if (!std::isfinite(p.rescale_slope) || !std::isfinite(p.rescale_intercept) || p.rescale_slope == 0) {
      return absl::InvalidArgumentError(absl::StrCat("unusable Rescale Slope ", p.rescale_slope, " / Intercept ",
                                                     p.rescale_intercept));
    }
    for (size_t i = 0; i < domain; ++i) {
      modality[i] = p.rescale_slope * static_cast<double>(value_of(i)) + p.rescale_intercept;
    }
    description = absl::StrCat("rescale ", p.rescale_slope, "*s+", p.rescale_intercept);
  }

  // Histogram of the stored values and the padding mask: the percentile window needs them, and so does the
  // check that a window or VOI LUT does not flatten the whole image.
  std::vector<uint64_t> counts(domain, 0);
  if (frame.depth() == CV_8U) {
    histogram<uint8_t>(frame, shift, mask, &counts);
  } else {
    histogram<uint16_t>(frame, shift, mask, &counts);
  }
  std::vector<bool> padding(domain, false);
  if (p.padding_value) {
    const int64_t a = *p.padding_value;
    const int64_t b = p.padding_range_limit.value_or(a);
    const int64_t lo = std::min(a, b);
    const int64_t hi = std::max(a, b);
    for (size_t i = 0; i < domain; ++i) padding[i] = value_of(i) >= lo && value_of(i) <= hi;
  }
  uint64_t total = 0;
  uint64_t padded = 0;
  for (size_t i = 0; i < domain; ++i) (padding[i] ? padded : total) += counts[i];
  const bool exclude_padding = total > 0;  // every pixel padding: use them all
  if (!exclude_padding) total = padded;
  auto counted = [&](size_t i) { return counts[i] != 0 && !(exclude_padding && padding[i]); };
  // True when the image's (non-padding) pixels do not all land on one 8-bit level.
  auto has_contrast = [&](const std::vector<double>& y) {
    double lo = 256, hi = -1;
    for (size_t i = 0; i < domain; ++i) {
      if (!counted(i)) continue;
      const double v = std::isfinite(y[i]) ? std::clamp(std::floor(y[i] + 0.5), 0.0, 255.0) : 0.0;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    return hi > lo;
  };

  // 2. VOI LUT, first that applies: window, VOI LUT Sequence, percentile window.
  std::vector<double> voi(domain);
  bool voi_done = false;
  if (!p.window_centers.empty() && !p.window_widths.empty()) {
    const double c = p.window_centers[0];
    const double w = p.window_widths[0];
    const std::string function = p.voi_lut_function.empty() ? "LINEAR" : p.voi_lut_function;
    const bool finite = std::isfinite(c) && std::isfinite(w);
    bool usable = false;
    if (finite && function == "LINEAR" && w >= 1) {
      for (size_t i = 0; i < domain; ++i) voi[i] = window_linear(modality[i], c, w);
      usable = true;
    } else if (finite && function == "LINEAR_EXACT" && w > 0) {
      for (size_t i = 0; i < domain; ++i) voi[i] = window_linear_exact(modality[i], c, w);
      usable = true;
    } else if (finite && function == "SIGMOID" && w > 0) {
      for (size_t i = 0; i < domain; ++i) voi[i] = window_sigmoid(modality[i], c, w);
      usable = true;
    }
    const std::string window = absl::StrCat("C=", c, " W=", w, " ", function);
    if (!usable) {
      absl::StrAppend(&description, "; unusable window ignored: ", window);
    } else if (!has_contrast(voi)) {
      absl::StrAppend(&description, "; window ignored (maps every pixel to one grey level): ", window);
    } else {
      absl::StrAppend(&description, "; window ", window);
      voi_done = true;
    }
  }
  if (!voi_done && p.voi_lut) {
    const double top = static_cast<double>((uint32_t{1} << p.voi_lut->bits) - 1);
    for (size_t i = 0; i < domain; ++i) voi[i] = lut_lookup(*p.voi_lut, modality[i]) / top * 255;
    const std::string lut = absl::StrCat("(", p.voi_lut->data.size(), " entries, ", p.voi_lut->bits, " bits)");
    if (has_contrast(voi)) {
      absl::StrAppend(&description, "; VOI LUT Sequence ", lut);
      voi_done = true;
    } else {
      absl::StrAppend(&description, "; VOI LUT Sequence ignored (maps every pixel to one grey level) ", lut);
    }
  } else if (!voi_done && !p.voi_lut_problem.empty()) {
    absl::StrAppend(&description, "; VOI LUT Sequence ignored: ", p.voi_lut_problem);
  }
  if (!voi_done) {
    std::vector<std::pair<double, uint64_t>> bins;  // (modality value, count), sorted by value
    for (size_t i = 0; i < domain; ++i) {
      if (counted(i)) bins.emplace_back(modality[i], counts[i]);
    }
    std::sort(bins.begin(), bins.end());
    auto percentile = [&](double pct) {  // nearest rank
      const double rank = std::clamp(std::ceil(pct / 100.0 * static_cast<double>(total)), 1.0,
                                     static_cast<double>(total));
      uint64_t seen = 0;
      for (const auto& [value, count] : bins) {
        seen += count;
        if (static_cast<double>(seen) >= rank) return value;
      }
      return bins.back().first;
    };
    const double lo = percentile(options.percentile_low);
    const double hi = percentile(options.percentile_high);
    for (size_t i = 0; i < domain; ++i) {
      voi[i] = hi > lo ? std::clamp((modality[i] - lo) / (hi - lo), 0.0, 1.0) * 255 : (modality[i] > lo ? 255 : 0);
    }
    absl::StrAppend(&description, "; percentile window P", options.percentile_low, "=", lo, " P",
                    options.percentile_high, "=", hi,
                    exclude_padding && padded > 0 ? absl::StrCat(" (", padded, " padding pixels excluded)") : "");
  }

  // 3. 8 bits, 4. inversion
  const bool invert = p.photometric == "MONOCHROME1" || p.presentation_lut_shape == "INVERSE";
  if (invert) {
    absl::StrAppend(&description, p.photometric == "MONOCHROME1" ? "; inverted (MONOCHROME1)"
                                                                 : "; inverted (Presentation LUT Shape INVERSE)");
  }
  std::vector<uint8_t> table(domain);
  for (size_t i = 0; i < domain; ++i) {
    const double v = std::isfinite(voi[i]) ? std::clamp(std::floor(voi[i] + 0.5), 0.0, 255.0) : 0.0;
    table[i] = static_cast<uint8_t>(invert ? 255 - v : v);
  }
  GreyResult result;
  result.grey8.create(frame.rows, frame.cols, CV_8UC1);
  if (frame.depth() == CV_8U) {
    map_frame<uint8_t>(frame, shift, mask, table, &result.grey8);
  } else {
    map_frame<uint16_t>(frame, shift, mask, table, &result.grey8);
  }
  result.description = std::move(description);
  return result;
}

}  // namespace internal

absl::StatusOr<DicomImage> read_dicom_image(const std::string& bytes, const std::string& source,
                                            const DicomReadOptions& options) {
  internal::DecodedInstance decoded;
  CMN_ASSIGN_OR_RETURN(decoded, internal::decode_instance(bytes, source, options));
  absl::StatusOr<internal::GreyResult> grey = internal::stored_to_grey8(decoded.pixels, decoded.frame, options);
  if (!grey.ok()) {
    return absl::Status(grey.status().code(),
                        absl::StrCat(internal::instance_label(decoded.info.sop_instance_uid, source), ": ",
                                     grey.status().message()));
  }
  DicomImage image;
  image.info = std::move(decoded.info);
  image.grey8 = std::move(grey->grey8);
  image.grey_levels = std::move(grey->description);
  if (decoded.pixels.draft_scale > 1) {
    absl::StrAppend(&image.grey_levels, "; draft decode 1/", decoded.pixels.draft_scale, " (",
                    decoded.pixels.columns, " x ", decoded.pixels.rows, ")");
  }
  return image;
}

absl::StatusOr<DicomImage> read_dicom_file(const std::string& path, const DicomReadOptions& options) {
  std::error_code ec;
  const std::filesystem::file_status status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    return absl::NotFoundError(absl::StrCat("DICOM '", path, "': no such file"));
  }
  if (!std::filesystem::is_regular_file(status)) {
    return absl::InvalidArgumentError(absl::StrCat("DICOM '", path, "': not a regular file"));
  }
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return absl::NotFoundError(absl::StrCat("DICOM '", path, "': cannot open the file"));
  const std::streamoff size = in.tellg();
  if (size < 0) return absl::InvalidArgumentError(absl::StrCat("DICOM '", path, "': not a readable file"));
  std::string bytes(static_cast<size_t>(size), '\0');
  in.seekg(0);
  if (!in.read(bytes.data(), size)) {
    return absl::InvalidArgumentError(absl::StrCat("DICOM '", path, "': read error"));
  }
  return read_dicom_image(bytes, path, options);
}

}  // namespace cmn::preprocessing
