// The Image Pixel module and the grey-level attributes (Modality LUT, VOI LUT, Presentation LUT Shape,
// padding) -> PixelDescription. The declared Rows x Columns are checked against the pixel limits here, before
// any codec runs.
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "codec_guards.h"
#include "dcmtk_dataset.h"

#include <dcmtk/dcmdata/dcdeftag.h>

namespace cmn::preprocessing::internal {
namespace {


// A LUT Descriptor + LUT Data pair of a Modality or VOI LUT Sequence item. Returns nullopt and sets *problem
// when the item is unusable.
std::optional<DicomLut> read_lut(DcmItem* item, bool is_signed, std::string* problem) {
  const auto entries = get_count16(item, DCM_LUTDescriptor, 0);
  const auto first = get_xs(item, DCM_LUTDescriptor, 1, is_signed);
  const auto bits = get_count16(item, DCM_LUTDescriptor, 2);
  if (!entries || !first || !bits) {
    *problem = "LUT Descriptor (0028,3002) missing or not 3 values";
    return std::nullopt;
  }
  if (*bits < 1 || *bits > 16) {
    *problem = absl::StrCat("LUT Descriptor gives ", *bits, " bits per entry (1..16 allowed)");
    return std::nullopt;
  }
  const int64_t n = *entries == 0 ? 65536 : *entries;
  DcmElement* data = nullptr;
  Uint16* words = nullptr;
  if (item->findAndGetElement(DCM_LUTData, data).bad() || data == nullptr || data->getUint16Array(words).bad() ||
      words == nullptr) {
    *problem = "LUT Data (0028,3006) missing or unreadable";
    return std::nullopt;
  }
  const int64_t count = data->getLength() / 2;
  DicomLut lut;
  lut.first_mapped = *first;
  lut.bits = static_cast<int>(*bits);
  lut.data.resize(static_cast<size_t>(n));
  if (count >= n) {
    std::copy(words, words + n, lut.data.begin());
  } else if (*bits <= 8 && count * 2 >= n) {  // 8-bit entries packed two per word, low byte first
    for (int64_t k = 0; k < n; ++k) lut.data[k] = static_cast<uint16_t>((words[k / 2] >> (8 * (k % 2))) & 0xFF);
  } else {
    *problem = absl::StrCat("LUT Data has ", count, " entries, the LUT Descriptor says ", n);
    return std::nullopt;
  }
  return lut;
}

}  // namespace

bool is_monochrome(const std::string& photometric) {
  return photometric == "MONOCHROME1" || photometric == "MONOCHROME2";
}

bool is_supported_colour(const std::string& photometric) {
  return photometric == "RGB" || photometric == "YBR_FULL" || photometric == "YBR_FULL_422" ||
         photometric == "YBR_RCT" || photometric == "YBR_ICT";
}

// Reads and checks the Image Pixel module and the grey-level attributes. Errors carry the reason only.
absl::Status read_pixel_description(DcmDataset* ds, const DicomReadOptions& options, PixelDescription* p) {
  const auto rows = get_uint16(ds, DCM_Rows);
  const auto columns = get_uint16(ds, DCM_Columns);
  if (!rows || !columns) return absl::InvalidArgumentError("Rows (0028,0010) or Columns (0028,0011) missing");
  p->rows = *rows;
  p->columns = *columns;
  if (p->rows == 0 || p->columns == 0) {
    return absl::InvalidArgumentError(absl::StrCat("zero image dimension (", p->columns, " x ", p->rows, ")"));
  }
  if (absl::Status s = check_declared_size("", p->columns, p->rows, options.pixel_limits()); !s.ok()) return s;
  p->samples_per_pixel = static_cast<int>(get_uint16(ds, DCM_SamplesPerPixel).value_or(1));
  const auto bits_allocated = get_uint16(ds, DCM_BitsAllocated);
  if (!bits_allocated) return absl::InvalidArgumentError("Bits Allocated (0028,0100) missing");
  p->bits_allocated = static_cast<int>(*bits_allocated);
  p->bits_stored = static_cast<int>(get_uint16(ds, DCM_BitsStored).value_or(p->bits_allocated));
  p->high_bit = static_cast<int>(get_uint16(ds, DCM_HighBit).value_or(p->bits_stored - 1));
  p->is_signed = get_uint16(ds, DCM_PixelRepresentation).value_or(0) == 1;
  if (p->bits_allocated != 8 && p->bits_allocated != 16) {
    return absl::UnimplementedError(
        absl::StrCat("Bits Allocated ", p->bits_allocated, " is not supported (8 or 16)"));
  }
  if (p->bits_stored < 1 || p->bits_stored > p->bits_allocated) {
    return absl::InvalidArgumentError(absl::StrCat("inconsistent bits: Bits Stored ", p->bits_stored,
                                                   " with Bits Allocated ", p->bits_allocated));
  }
  if (p->high_bit >= p->bits_allocated || p->high_bit + 1 < p->bits_stored) {
    return absl::InvalidArgumentError(absl::StrCat("inconsistent bits: High Bit ", p->high_bit, " with Bits Stored ",
                                                   p->bits_stored, " and Bits Allocated ", p->bits_allocated));
  }
  Sint32 frames = 1;
  if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad() || frames < 1) frames = 1;
  p->frames = frames;

  p->photometric = absl::AsciiStrToUpper(get_string(ds, DCM_PhotometricInterpretation));
  if (p->photometric.empty() && p->samples_per_pixel == 1) p->photometric = "MONOCHROME2";  // ACR-NEMA files
  if (p->photometric == "PALETTE COLOR") {
    return absl::UnimplementedError("Photometric Interpretation PALETTE COLOR is not supported");
  }
  if (is_monochrome(p->photometric)) {
    if (p->samples_per_pixel != 1) {
      return absl::InvalidArgumentError(absl::StrCat("inconsistent photometric: ", p->photometric, " with ",
                                                     p->samples_per_pixel, " samples per pixel"));
    }
  } else if (is_supported_colour(p->photometric)) {
    if (p->samples_per_pixel != 3) {
      return absl::InvalidArgumentError(absl::StrCat("inconsistent photometric: ", p->photometric, " with ",
                                                     p->samples_per_pixel, " samples per pixel"));
    }
  } else {
    return absl::UnimplementedError(
        absl::StrCat("Photometric Interpretation '", p->photometric, "' is not supported"));
  }

  // Modality LUT
  const std::vector<double> slope = get_decimals(ds, DCM_RescaleSlope);
  const std::vector<double> intercept = get_decimals(ds, DCM_RescaleIntercept);
  if (!slope.empty()) p->rescale_slope = slope[0];
  if (!intercept.empty()) p->rescale_intercept = intercept[0];
  DcmItem* item = nullptr;
  if (ds->findAndGetSequenceItem(DCM_ModalityLUTSequence, item, 0).good() && item != nullptr) {
    p->modality_lut = read_lut(item, p->is_signed, &p->modality_lut_problem);
  }
  // VOI LUT
  p->window_centers = get_decimals(ds, DCM_WindowCenter);
  p->window_widths = get_decimals(ds, DCM_WindowWidth);
  p->voi_lut_function = absl::AsciiStrToUpper(get_string(ds, DCM_VOILUTFunction));
  item = nullptr;
  if (ds->findAndGetSequenceItem(DCM_VOILUTSequence, item, 0).good() && item != nullptr) {
    // VOI LUT input is the Modality LUT output: negative when the pixels are signed or the intercept is.
    p->voi_lut = read_lut(item, p->is_signed || p->rescale_intercept < 0, &p->voi_lut_problem);
  }
  p->presentation_lut_shape = absl::AsciiStrToUpper(get_string(ds, DCM_PresentationLUTShape));
  p->padding_value = get_xs(ds, DCM_PixelPaddingValue, 0, p->is_signed);
  p->padding_range_limit = get_xs(ds, DCM_PixelPaddingRangeLimit, 0, p->is_signed);
  return absl::OkStatus();
}

}  // namespace cmn::preprocessing::internal
