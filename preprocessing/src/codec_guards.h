#pragma once
// Private to cmn_preprocessing, DCMTK-free: checks run on a compressed image's header bytes BEFORE its codec
// runs. A codec allocates what its header declares (libjpeg and CharLS per frame header, OpenJPEG per SIZ
// marker and tile, OpenCV per PNG IHDR): a few hundred hostile bytes could make it ask for gigabytes. Every
// declared size is held to the one PixelLimits (image_pipeline.h) and refused with InvalidArgument naming the
// declared size and the limit. Streams too malformed to parse here are left to the codec, which reports them.
#include <cstddef>
#include <cstdint>
#include <istream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "cmn/preprocessing/image_pipeline.h"

namespace cmn::preprocessing::internal {

// OK when width x height is within `limits`; else InvalidArgument
//   "<what>image of W x H = N pixels exceeds the limits (M pixels, D per side)"
// (`what` is a prefix such as "JPEG frame header (SOF0): "; empty for the DICOM Rows x Columns).
absl::Status check_declared_size(const std::string& what, int64_t width, int64_t height, const PixelLimits& limits);

// A forward-only byte source: read(n) copies n bytes, skip(n) passes them; both false past the end.
class ByteReader {
 public:
  virtual ~ByteReader() = default;
  virtual bool read(uint8_t* out, size_t n) = 0;
  virtual bool skip(uint64_t n) = 0;
};

// Byte ranges read as one stream: the fragments of an encapsulated frame, or one buffer.
class SpanReader final : public ByteReader {
 public:
  void add(const uint8_t* data, size_t size) {
    if (size > 0) spans_.emplace_back(data, size);
  }
  bool read(uint8_t* out, size_t n) override;
  bool skip(uint64_t n) override;

 private:
  std::vector<std::pair<const uint8_t*, size_t>> spans_;
  size_t span_ = 0;
  size_t offset_ = 0;
};

// A file (std::istream) read from its current position.
class StreamReader final : public ByteReader {
 public:
  explicit StreamReader(std::istream* in) : in_(in) {}
  bool read(uint8_t* out, size_t n) override;
  bool skip(uint64_t n) override;

 private:
  std::istream* in_;
};

// The frame header of a JPEG (SOF0..SOF15) or JPEG-LS (SOF55) stream.
struct JpegFrameHeader {
  int marker = 0;           // 0xC0..0xCF or 0xF7
  int64_t height = 0;       // Y (0: defined later by a DNL / LSE marker)
  int64_t width = 0;        // X
  int components = 0;       // Nf
};

// Walks the marker segments from SOI to the first frame header. nullopt when the stream does not start with
// SOI, or reaches SOS / EOI / malformed bytes / its end first.
std::optional<JpegFrameHeader> find_jpeg_frame_header(ByteReader* in);

// find_jpeg_frame_header, then: more than 4 components or a size over `limits` is refused. A stream without a
// frame header passes (the decoder reports it).
absl::Status check_jpeg_frame_header(ByteReader* in, const PixelLimits& limits);

// DCMTK 3.6.7's DJCodecDecoder::scanJpegDataForBitDepth never steps past a TEM marker (FF01) met before the
// frame header: an endless loop on a 2 KB input (cmn-dicom-fuzzer). This walks the fragment the way that
// function does and says whether it would reach such a marker.
bool jpeg_bit_depth_scan_would_hang(const uint8_t* data, uint32_t length);

// The image and tiling a JPEG 2000 SIZ marker declares.
struct J2kSize {
  int64_t width = 0;        // Xsiz - XOsiz
  int64_t height = 0;       // Ysiz - YOsiz
  int64_t components = 0;   // Csiz
  int64_t tiles = 0;        // ceil((Xsiz - XTOsiz) / XTsiz) * ceil((Ysiz - YTOsiz) / YTsiz)
};

// OpenJPEG allocates per tile and component while reading the main header (several KB each, hundreds of MB
// for a crafted SIZ); real images have one tile or a few hundred.
inline constexpr int64_t kMaxJpeg2000Tiles = 4096;

// The SIZ marker of a J2K codestream, or of the codestream box (jp2c) of a JP2 file. Errors (InvalidArgument,
// "corrupt JPEG 2000 header: ...") when neither is found or the marker is truncated or inconsistent; then
// more than kMaxJpeg2000Tiles tiles, or a size over `limits`, is refused.
absl::StatusOr<J2kSize> check_jpeg2000_header(const uint8_t* data, size_t size, const PixelLimits& limits);

// An RLE frame (DICOM PS3.5 Annex G): its 64-byte header in `first_fragment`, `compressed_bytes` in all its
// fragments. The header must declare exactly `segments` segments (samples per pixel x bytes per sample), in
// order within the data, each long enough to decode to `segment_bytes` (Rows x Columns): PackBits yields at
// most 128 bytes per 2 compressed bytes, so a shorter segment cannot fill its frame, however large the frame
// the dataset declares. Errors start "corrupt compressed stream".
absl::Status check_rle_header(const uint8_t* first_fragment, size_t first_fragment_size, uint64_t compressed_bytes,
                              int segments, int64_t segment_bytes);

// A PNG (IHDR) or JPEG (frame header) file's declared size, read from `in` before any decoder sees the file;
// over `limits` -> InvalidArgument naming the size and the limit. Other formats pass unchecked.
absl::Status check_image_file_header(std::istream* in, const PixelLimits& limits);

}  // namespace cmn::preprocessing::internal
