// Pixel decoding: frame 1 of the Pixel Data, native or encapsulated. RLE, JPEG and JPEG-LS go through DCMTK's
// codecs (frame 1 only); JPEG 2000 frames are gathered here and decoded by jpeg2000.cc. Each codec's header is
// checked against the pixel limits (codec_guards.h) before anything it declares is allocated.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "cmn/common/status_macros.h"
#include "codec_guards.h"
#include "dcmtk_dataset.h"
#include "jpeg2000.h"
#include "jpeg_draft.h"

#include <dcmtk/dcmdata/dccodec.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>

#include <opencv2/core.hpp>

namespace cmn::preprocessing::internal {
namespace {

// ---------------------------------------------------------------------------------------------------------
// Frame 1 of native (uncompressed) pixel data

int bytes_per_sample(const PixelDescription& p) { return p.bits_allocated / 8; }

// Colour-by-plane -> colour-by-pixel, in place (bytes or words).
void interleave_planes(cv::Mat* frame) {
  std::vector<cv::Mat> planes(3);
  const int depth = frame->depth();
  const int rows = frame->rows;
  const int cols = frame->cols;
  const size_t plane_bytes = static_cast<size_t>(rows) * cols * frame->elemSize1();
  auto* base = frame->data;
  for (int c = 0; c < 3; ++c) {
    planes[c] = cv::Mat(rows, cols, CV_MAKETYPE(depth, 1), base + c * plane_bytes).clone();
  }
  cv::merge(planes, *frame);
}

absl::StatusOr<cv::Mat> native_frame(DcmElement* pixel_data, const PixelDescription& p, int planar_configuration) {
  const size_t sample_bytes = static_cast<size_t>(bytes_per_sample(p));
  const bool ybr422 = p.photometric == "YBR_FULL_422";
  if (ybr422 && p.columns % 2 != 0) {
    return absl::InvalidArgumentError("YBR_FULL_422 with an odd number of columns");
  }
  const size_t frame_bytes = static_cast<size_t>(p.rows) * p.columns * sample_bytes *
                             (ybr422 ? 2 : static_cast<size_t>(p.samples_per_pixel));
  Uint8* data = nullptr;
  if (pixel_data->getUint8Array(data).bad() || data == nullptr) {
    if (pixel_data->getLength() == 0) return absl::InvalidArgumentError("Pixel Data (7FE0,0010) is empty");
    return absl::InvalidArgumentError(
        "Pixel Data (7FE0,0010) is not readable as native pixels (encapsulated data in a native transfer syntax?)");
  }
  const size_t length = pixel_data->getLength();
  if (length < frame_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("Pixel Data (7FE0,0010) is short: ", length,
                                                   " bytes, frame 1 needs ", frame_bytes));
  }
  const int depth = p.bits_allocated == 8 ? CV_8U : CV_16U;
  const int rows = static_cast<int>(p.rows);
  const int cols = static_cast<int>(p.columns);
  if (ybr422) {  // Y1 Y2 Cb Cr per pair of pixels -> Y Cb Cr per pixel
    cv::Mat out(rows, cols, CV_MAKETYPE(depth, 3));
    for (int y = 0; y < rows; ++y) {
      for (int x = 0; x < cols; x += 2) {
        const size_t base = (static_cast<size_t>(y) * cols + x) * 2;  // in samples
        for (int k = 0; k < 2; ++k) {
          for (int c = 0; c < 3; ++c) {
            const size_t sample = base + (c == 0 ? static_cast<size_t>(k) : static_cast<size_t>(c + 1));
            if (depth == CV_8U) {
              out.ptr<uint8_t>(y)[(x + k) * 3 + c] = data[sample];
            } else {
              uint16_t w;
              std::memcpy(&w, data + sample * 2, 2);
              out.ptr<uint16_t>(y)[(x + k) * 3 + c] = w;
            }
          }
        }
      }
    }
    return out;
  }
  cv::Mat out(rows, cols, CV_MAKETYPE(depth, p.samples_per_pixel));
  std::memcpy(out.data, data, frame_bytes);
  if (p.samples_per_pixel == 3 && planar_configuration == 1) interleave_planes(&out);
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Frame 1 of encapsulated pixel data

bool is_jpeg2000(E_TransferSyntax xfer) {
  return xfer == EXS_JPEG2000LosslessOnly || xfer == EXS_JPEG2000 ||
         xfer == EXS_JPEG2000MulticomponentLosslessOnly || xfer == EXS_JPEG2000Multicomponent;
}

uint32_t read_le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

bool ends_with_eoc(const uint8_t* data, size_t length) {
  // JPEG 2000 End of Codestream FF D9, possibly followed by the fragment's even-length pad byte.
  if (length >= 2 && data[length - 2] == 0xFF && data[length - 1] == 0xD9) return true;
  return length >= 3 && data[length - 3] == 0xFF && data[length - 2] == 0xD9 && data[length - 1] == 0x00;
}

// The compressed bytes of frame 1: all fragments of a single-frame image; for multi-frame images the fragments
// before the Basic Offset Table's second entry, or the first fragment when there is one per frame, or the
// fragments up to the first that ends a codestream.
absl::StatusOr<std::string> frame1_bitstream(DcmPixelSequence* sequence, int64_t frames) {
  const unsigned long items = sequence->card();
  if (items < 2) return absl::InvalidArgumentError("encapsulated Pixel Data has no compressed fragment");
  std::vector<uint32_t> offsets;
  DcmPixelItem* item = nullptr;
  if (sequence->getItem(item, 0).good() && item != nullptr && item->getLength() >= 4) {
    Uint8* table = nullptr;
    if (item->getUint8Array(table).good() && table != nullptr) {
      for (Uint32 i = 0; i + 4 <= item->getLength(); i += 4) offsets.push_back(read_le32(table + i));
    }
  }
  std::string out;
  uint64_t position = 0;  // offset of the current fragment's item tag from the first fragment's
  for (unsigned long i = 1; i < items; ++i) {
    if (sequence->getItem(item, i).bad() || item == nullptr) break;
    const Uint32 length = item->getLength();
    if (frames > 1 && offsets.size() >= 2 && position >= offsets[1]) break;
    Uint8* fragment = nullptr;
    if (length > 0) {
      if (item->getUint8Array(fragment).bad() || fragment == nullptr) {
        return absl::InvalidArgumentError("unreadable compressed fragment");
      }
      out.append(reinterpret_cast<const char*>(fragment), length);
    }
    position += 8 + static_cast<uint64_t>(length);
    if (frames > 1 && offsets.size() < 2) {
      if (static_cast<int64_t>(items - 1) == frames) break;  // one fragment per frame
      if (fragment != nullptr && ends_with_eoc(fragment, length)) break;
    }
  }
  if (out.empty()) return absl::InvalidArgumentError("encapsulated Pixel Data: frame 1 is empty");
  return out;
}

bool is_dcmjpeg(E_TransferSyntax xfer) {
  return (xfer >= EXS_JPEGProcess1 && xfer <= EXS_JPEGProcess29) || xfer == EXS_JPEGProcess14SV1;
}

bool is_dcmjpls(E_TransferSyntax xfer) { return xfer == EXS_JPEGLSLossless || xfer == EXS_JPEGLSLossy; }

// The fragments of the Pixel Data from the first (frame 1 starts there) as one stream, each loaded only when
// reached: a JPEG header may continue into the next fragment, and a multi-frame object's other frames are
// never read.
class FragmentReader final : public ByteReader {
 public:
  explicit FragmentReader(DcmPixelSequence* sequence) : sequence_(sequence) {}
  bool read(uint8_t* out, size_t n) override {
    while (n > 0) {
      if (!load()) return false;
      const size_t k = std::min<size_t>(n, length_ - offset_);
      std::memcpy(out, data_ + offset_, k);
      out += k;
      n -= k;
      offset_ += k;
    }
    return true;
  }
  bool skip(uint64_t n) override {
    while (n > 0) {
      if (!load()) return false;
      const size_t k = static_cast<size_t>(std::min<uint64_t>(n, length_ - offset_));
      n -= k;
      offset_ += k;
    }
    return true;
  }

 private:
  // Makes the current fragment one with bytes left; false at the end.
  bool load() {
    while (data_ == nullptr || offset_ == length_) {
      if (item_ >= sequence_->card()) return false;
      DcmPixelItem* item = nullptr;
      Uint8* data = nullptr;
      if (sequence_->getItem(item, item_++).bad() || item == nullptr || item->getLength() == 0) continue;
      if (item->getUint8Array(data).bad() || data == nullptr) return false;
      data_ = data;
      length_ = item->getLength();
      offset_ = 0;
    }
    return true;
  }

  DcmPixelSequence* sequence_;
  unsigned long item_ = 1;  // item 0 is the Basic Offset Table
  const uint8_t* data_ = nullptr;
  size_t length_ = 0;
  size_t offset_ = 0;
};

// The fragments of encapsulated Pixel Data as read from the file, or nullptr when it is not encapsulated.
DcmPixelSequence* encapsulated_sequence(DcmPixelData* pixel_data) {
  E_TransferSyntax rep_type = EXS_Unknown;
  const DcmRepresentationParameter* rep_param = nullptr;
  pixel_data->getOriginalRepresentationKey(rep_type, rep_param);
  DcmPixelSequence* sequence = nullptr;
  if (pixel_data->getEncapsulatedRepresentation(rep_type, rep_param, sequence).bad()) return nullptr;
  return sequence;
}

// The header checks of codec_guards.h on frame 1's compressed bytes, before DCMTK's codec (or the frame buffer
// here) allocates what they declare.
absl::Status check_codec_header(DcmPixelData* pixel_data, E_TransferSyntax xfer, const PixelDescription& p,
                                const PixelLimits& limits) {
  DcmPixelSequence* sequence = encapsulated_sequence(pixel_data);
  DcmPixelItem* item = nullptr;
  Uint8* first = nullptr;
  if (sequence == nullptr ||
      sequence->getItem(item, 1).bad() || item == nullptr || item->getUint8Array(first).bad() || first == nullptr) {
    return absl::OkStatus();  // nothing to scan: DCMTK's decoder reports it
  }
  const Uint32 first_size = item->getLength();
  if (is_dcmjpeg(xfer) && jpeg_bit_depth_scan_would_hang(first, first_size)) {
    return absl::InvalidArgumentError("corrupt compressed stream: JPEG marker FF01 (TEM) before the frame header");
  }
  if (is_dcmjpeg(xfer) || is_dcmjpls(xfer)) {
    FragmentReader fragments(sequence);
    return check_jpeg_frame_header(&fragments, limits);
  }
  if (xfer == EXS_RLELossless) {
    uint64_t compressed_bytes = 0;  // an upper bound for frame 1: the fragments of every frame
    for (unsigned long i = 1; i < sequence->card(); ++i) {
      if (sequence->getItem(item, i).good() && item != nullptr) compressed_bytes += item->getLength();
    }
    return check_rle_header(first, first_size, compressed_bytes, p.samples_per_pixel * bytes_per_sample(p),
                            p.rows * p.columns);
  }
  return absl::OkStatus();
}

// A DCMTK codec (JPEG, JPEG-LS, RLE) decodes frame 1 only, through DcmPixelData::getUncompressedFrame:
// chooseRepresentation would decompress every frame (a multi-frame object is a decompression bomb).
absl::StatusOr<cv::Mat> dcmtk_codec_frame(DcmDataset* ds, DcmPixelData* pixel_data, E_TransferSyntax xfer,
                                          PixelDescription* p, int planar_configuration,
                                          const DicomReadOptions& options) {
  const size_t full_frame = static_cast<size_t>(p->rows) * p->columns * p->samples_per_pixel * bytes_per_sample(*p);
  CMN_RETURN_IF_ERROR(check_codec_header(pixel_data, xfer, *p, options.pixel_limits()));
  Uint32 dcmtk_frame = 0;
  if (pixel_data->getUncompressedFrameSize(ds, dcmtk_frame).bad()) {
    return absl::InvalidArgumentError("cannot compute the size of a decoded frame");
  }
  const int depth = p->bits_allocated == 8 ? CV_8U : CV_16U;
  cv::Mat out(static_cast<int>(p->rows), static_cast<int>(p->columns), CV_MAKETYPE(depth, p->samples_per_pixel));
  // Decode straight into `out` when DCMTK's frame fits it (an even size: codecs may swap 16-bit words);
  // otherwise through a buffer of DCMTK's size.
  const bool direct = dcmtk_frame <= full_frame && full_frame % 2 == 0;
  std::vector<uint8_t> buffer;
  if (!direct) buffer.resize((std::max<size_t>(full_frame, dcmtk_frame) + 2) & ~size_t{1});
  uint8_t* target = direct ? out.data : buffer.data();
  const size_t target_size = direct ? full_frame : buffer.size();
  Uint32 start_fragment = 0;
  OFString colour_model;
  const OFCondition cond = pixel_data->getUncompressedFrame(ds, 0, start_fragment, target,
                                                            static_cast<Uint32>(target_size), colour_model);
  if (cond.bad()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot decode frame 1 (", DcmXfer(xfer).getXferName(),
                                                   "): corrupt compressed stream? (", condition_text(cond), ")"));
  }
  const std::string decoded_model = absl::AsciiStrToUpper(trimmed(colour_model));
  if (!decoded_model.empty()) p->photometric = decoded_model;
  if (p->samples_per_pixel == 3 && !is_supported_colour(p->photometric)) {
    return absl::UnimplementedError(absl::StrCat("decoded colour model '", p->photometric, "' is not supported"));
  }
  if (!direct) std::memcpy(out.data, buffer.data(), full_frame);
  if (p->samples_per_pixel == 3 && planar_configuration == 1) interleave_planes(&out);
  if (p->photometric == "YBR_FULL_422") p->photometric = "YBR_FULL";  // codecs remove the subsampling
  return out;
}

// JPEG processes whose 8-bit streams libjpeg-turbo decodes with DCT scaling (baseline, extended).
bool is_draft_jpeg(E_TransferSyntax xfer) { return xfer == EXS_JPEGProcess1 || xfer == EXS_JPEGProcess2_4; }

// The pixel description follows a frame decoded at 1/scale: its rows x columns are the frame's from here on.
void took_draft(const cv::Mat& frame, int scale, PixelDescription* p) {
  if (scale <= 1) return;
  p->draft_scale = scale;
  p->rows = frame.rows;
  p->columns = frame.cols;
}

}  // namespace

absl::StatusOr<cv::Mat> decode_frame1(DcmDataset* ds, E_TransferSyntax xfer, PixelDescription* p,
                                      const DicomReadOptions& options) {
  if (!ds->tagExists(DCM_PixelData)) {
    if (ds->tagExists(DCM_FloatPixelData) || ds->tagExists(DCM_DoubleFloatPixelData)) {
      return absl::UnimplementedError("Float / Double Float Pixel Data is not supported");
    }
    return absl::InvalidArgumentError("no Pixel Data (7FE0,0010)");
  }
  DcmElement* element = nullptr;
  if (ds->findAndGetElement(DCM_PixelData, element).bad() || element == nullptr) {
    return absl::InvalidArgumentError("Pixel Data (7FE0,0010) is unreadable");
  }
  auto* pixel_data = dynamic_cast<DcmPixelData*>(element);
  if (pixel_data == nullptr) return absl::InvalidArgumentError("Pixel Data (7FE0,0010) has an unexpected type");
  const int planar_configuration =
      p->samples_per_pixel == 3 ? static_cast<int>(get_uint16(ds, DCM_PlanarConfiguration).value_or(0)) : 0;
  const DcmXfer xfer_info(xfer);
  if (!xfer_info.isEncapsulated()) {
    cv::Mat frame;
    CMN_ASSIGN_OR_RETURN(frame, native_frame(pixel_data, *p, planar_configuration));
    if (p->photometric == "YBR_FULL_422") p->photometric = "YBR_FULL";
    return frame;
  }
  if (is_jpeg2000(xfer)) {
    DcmPixelSequence* sequence = encapsulated_sequence(pixel_data);
    if (sequence == nullptr) {
      return absl::InvalidArgumentError("JPEG 2000 transfer syntax but the Pixel Data is not encapsulated");
    }
    std::string bitstream;
    CMN_ASSIGN_OR_RETURN(bitstream, frame1_bitstream(sequence, p->frames));
    cv::Mat frame;
    int scale = 1;
    CMN_ASSIGN_OR_RETURN(frame,
                         decode_jpeg2000(bitstream, *p, options.pixel_limits(), options.draft_min_side, &scale));
    if (p->samples_per_pixel == 3) p->photometric = "RGB";  // OpenJPEG applies the inverse ICT/RCT
    took_draft(frame, scale, p);
    return frame;
  }
  if (!DcmCodecList::canChangeCoding(xfer, EXS_LittleEndianExplicit)) {
    return absl::UnimplementedError(absl::StrCat("unsupported transfer syntax ", xfer_info.getXferID(), " (",
                                                 xfer_info.getXferName(), ")"));
  }
  if (options.draft_min_side > 0 && is_draft_jpeg(xfer) && p->samples_per_pixel == 1 && p->bits_allocated == 8) {
    // The header checks first, as on the exact path; then libjpeg-turbo's scaled decoding, or (nullopt: not
    // 8-bit, or any libjpeg error or warning) DCMTK's exact decoder and its error message.
    CMN_RETURN_IF_ERROR(check_codec_header(pixel_data, xfer, *p, options.pixel_limits()));
    if (DcmPixelSequence* sequence = encapsulated_sequence(pixel_data); sequence != nullptr) {
      absl::StatusOr<std::string> bitstream = frame1_bitstream(sequence, p->frames);
      if (bitstream.ok()) {
        std::optional<JpegDraft> draft = decode_jpeg_draft(*bitstream, p->rows, p->columns, options.draft_min_side);
        if (draft.has_value()) {
          took_draft(draft->frame, draft->scale, p);
          return std::move(draft->frame);
        }
      }
    }
  }
  return dcmtk_codec_frame(ds, pixel_data, xfer, p, planar_configuration, options);
}

}  // namespace cmn::preprocessing::internal
