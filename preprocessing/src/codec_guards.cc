// Declared-size and stream checks run before a codec allocates (codec_guards.h). DCMTK-free.
#include "codec_guards.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace cmn::preprocessing::internal {
namespace {

uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
uint32_t be32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | static_cast<uint32_t>(p[3]);
}
uint32_t le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

bool is_frame_header(int marker) {
  return (marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC) ||
         marker == 0xF7;  // SOF55: JPEG-LS
}

std::string jpeg_marker_name(int marker) {
  if (marker == 0xF7) return "SOF55";
  return absl::StrCat("SOF", marker - 0xC0);
}

// A JPEG 2000 codestream from its SOC marker: the SIZ marker segment that must follow it.
absl::StatusOr<J2kSize> read_siz(const uint8_t* data, size_t size) {
  // SOC, SIZ, Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz, XTOsiz, YTOsiz, Csiz: 42 bytes.
  if (size < 42 || be16(data) != 0xFF4F || be16(data + 2) != 0xFF51) {
    return absl::InvalidArgumentError("corrupt JPEG 2000 header: no SIZ marker after the start of the codestream");
  }
  const uint8_t* siz = data + 4;
  const int64_t x = be32(siz + 4), y = be32(siz + 8), x0 = be32(siz + 12), y0 = be32(siz + 16);
  const int64_t tile_w = be32(siz + 20), tile_h = be32(siz + 24), tile_x0 = be32(siz + 28), tile_y0 = be32(siz + 32);
  J2kSize out;
  out.components = be16(siz + 36);
  if (x <= x0 || y <= y0 || tile_w == 0 || tile_h == 0 || tile_x0 > x0 || tile_y0 > y0 || tile_x0 + tile_w <= x0 ||
      tile_y0 + tile_h <= y0) {
    return absl::InvalidArgumentError(absl::StrCat("corrupt JPEG 2000 header: inconsistent SIZ marker (image ", x0,
                                                   ",", y0, " to ", x, ",", y, ", tiles of ", tile_w, " x ", tile_h,
                                                   " from ", tile_x0, ",", tile_y0, ")"));
  }
  out.width = x - x0;
  out.height = y - y0;
  out.tiles = ((x - tile_x0 + tile_w - 1) / tile_w) * ((y - tile_y0 + tile_h - 1) / tile_h);
  return out;
}

// The codestream box (jp2c) of a JP2 file: the boxes at the top level, in order (ISO 15444-1 I.4).
absl::StatusOr<J2kSize> read_jp2(const uint8_t* data, size_t size) {
  size_t pos = 0;
  while (pos + 8 <= size) {
    uint64_t length = be32(data + pos);
    const uint32_t type = be32(data + pos + 4);
    size_t header = 8;
    if (length == 1) {  // XLBox
      if (pos + 16 > size) break;
      length = (static_cast<uint64_t>(be32(data + pos + 8)) << 32) | be32(data + pos + 12);
      header = 16;
    } else if (length == 0) {  // the last box: to the end of the file
      length = size - pos;
    }
    if (length < header || length > size - pos) break;
    if (type == 0x6A703263) return read_siz(data + pos + header, static_cast<size_t>(length) - header);  // 'jp2c'
    pos += static_cast<size_t>(length);
  }
  return absl::InvalidArgumentError("corrupt JPEG 2000 header: the JP2 file has no codestream box (jp2c)");
}

}  // namespace

absl::Status check_declared_size(const std::string& what, int64_t width, int64_t height, const PixelLimits& limits) {
  if (width <= limits.max_dimension && height <= limits.max_dimension && width * height <= limits.max_pixels) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(what, "image of ", width, " x ", height, " = ", width * height,
                                                 " pixels exceeds the limits (", limits.max_pixels, " pixels, ",
                                                 limits.max_dimension, " per side)"));
}

bool SpanReader::read(uint8_t* out, size_t n) {
  while (n > 0) {
    if (span_ >= spans_.size()) return false;
    const auto& [data, size] = spans_[span_];
    const size_t k = std::min(n, size - offset_);
    std::memcpy(out, data + offset_, k);
    out += k;
    n -= k;
    offset_ += k;
    if (offset_ == size) {
      ++span_;
      offset_ = 0;
    }
  }
  return true;
}

bool SpanReader::skip(uint64_t n) {
  while (n > 0) {
    if (span_ >= spans_.size()) return false;
    const size_t k = static_cast<size_t>(std::min<uint64_t>(n, spans_[span_].second - offset_));
    n -= k;
    offset_ += k;
    if (offset_ == spans_[span_].second) {
      ++span_;
      offset_ = 0;
    }
  }
  return true;
}

bool StreamReader::read(uint8_t* out, size_t n) {
  in_->read(reinterpret_cast<char*>(out), static_cast<std::streamsize>(n));
  return in_->good() || (in_->eof() && static_cast<size_t>(in_->gcount()) == n);
}

bool StreamReader::skip(uint64_t n) {
  in_->seekg(static_cast<std::streamoff>(n), std::ios::cur);
  return in_->good();
}

std::optional<JpegFrameHeader> find_jpeg_frame_header(ByteReader* in) {
  uint8_t b[8];
  if (!in->read(b, 2) || b[0] != 0xFF || b[1] != 0xD8) return std::nullopt;  // SOI
  for (;;) {
    if (!in->read(b, 1) || b[0] != 0xFF) return std::nullopt;  // not at a marker: the decoder says why
    do {
      if (!in->read(b, 1)) return std::nullopt;
    } while (b[0] == 0xFF);  // fill bytes
    const int marker = b[0];
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) continue;  // TEM, RSTn, SOI: no length
    if (marker == 0xD9 || marker == 0xDA || marker == 0x00) return std::nullopt;  // EOI, SOS before a frame
    if (!in->read(b, 2)) return std::nullopt;
    const uint16_t length = be16(b);
    if (length < 2) return std::nullopt;
    if (is_frame_header(marker)) {
      if (length < 8 || !in->read(b, 6)) return std::nullopt;
      JpegFrameHeader header;
      header.marker = marker;
      header.height = be16(b + 1);
      header.width = be16(b + 3);
      header.components = b[5];
      return header;
    }
    if (!in->skip(length - 2u)) return std::nullopt;
  }
}

absl::Status check_jpeg_frame_header(ByteReader* in, const PixelLimits& limits) {
  const std::optional<JpegFrameHeader> header = find_jpeg_frame_header(in);
  if (!header) return absl::OkStatus();
  const std::string what = absl::StrCat("JPEG frame header (", jpeg_marker_name(header->marker), "): ");
  if (header->components > 4) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, header->components, " components (at most 4 are decoded)"));
  }
  return check_declared_size(what, header->width, header->height, limits);
}

bool jpeg_bit_depth_scan_would_hang(const uint8_t* data, uint32_t length) {
  uint32_t offset = 0;
  while (offset + 4 < length) {
    const uint32_t marker = (static_cast<uint32_t>(data[offset]) << 8) | data[offset + 1];
    const uint32_t segment = (static_cast<uint32_t>(data[offset + 2]) << 8) | data[offset + 3];
    if (marker == 0xFF01) return true;
    if ((marker >= 0xFFC0 && marker <= 0xFFCF && marker != 0xFFC4 && marker != 0xFFC8 && marker != 0xFFCC)) {
      return false;  // a frame header (SOF): the scan returns
    }
    if (marker == 0xFFC4 || marker == 0xFFC8 || marker == 0xFFCC || (marker >= 0xFFDA && marker <= 0xFFDF) ||
        (marker >= 0xFFE0 && marker <= 0xFFFE)) {
      offset += segment + 2;
    } else if ((marker >= 0xFFD0 && marker <= 0xFFD9)) {
      offset += 2;
    } else if (marker == 0xFFFF) {
      offset += 1;
    } else if (data[offset] == 0xFF && data[offset + 1] > 2 && data[offset + 1] <= 0xBF) {
      offset += 2;
    } else {
      return false;  // invalid marker: the scan stops
    }
  }
  return false;
}

absl::StatusOr<J2kSize> check_jpeg2000_header(const uint8_t* data, size_t size, const PixelLimits& limits) {
  static const uint8_t kJp2Signature[] = {0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20};
  const bool jp2 = size >= 8 && std::memcmp(data, kJp2Signature, 8) == 0;
  absl::StatusOr<J2kSize> siz = jp2 ? read_jp2(data, size) : read_siz(data, size);
  if (!siz.ok()) return siz.status();
  if (siz->tiles > kMaxJpeg2000Tiles) {
    return absl::InvalidArgumentError(absl::StrCat("JPEG 2000 codestream (SIZ): ", siz->tiles,
                                                   " tiles exceed the limit of ", kMaxJpeg2000Tiles));
  }
  absl::Status size_ok = check_declared_size("JPEG 2000 codestream (SIZ): ", siz->width, siz->height, limits);
  if (!size_ok.ok()) return size_ok;
  return siz;
}

absl::Status check_rle_header(const uint8_t* first_fragment, size_t first_fragment_size, uint64_t compressed_bytes,
                              int segments, int64_t segment_bytes) {
  if (first_fragment_size < 64) {
    return absl::InvalidArgumentError(absl::StrCat("corrupt compressed stream: the RLE fragment has ",
                                                   first_fragment_size, " bytes, less than its 64-byte header"));
  }
  const uint32_t declared = le32(first_fragment);
  if (declared != static_cast<uint32_t>(segments)) {
    return absl::InvalidArgumentError(absl::StrCat("corrupt compressed stream: the RLE header declares ", declared,
                                                   " segments, the image has ", segments,
                                                   " (samples per pixel x bytes per sample)"));
  }
  // The fewest compressed bytes that decode to segment_bytes: one replicate run (2 bytes) per 128 bytes.
  const uint64_t least = 2 * ((static_cast<uint64_t>(segment_bytes) + 127) / 128);
  for (int s = 0; s < segments; ++s) {
    const uint64_t begin = le32(first_fragment + 4 + 4 * s);
    const uint64_t end = s + 1 < segments ? le32(first_fragment + 8 + 4 * s) : compressed_bytes;
    if (begin < 64 || end < begin || end > compressed_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("corrupt compressed stream: RLE segment ", s + 1, " spans bytes ",
                                                     begin, " to ", end, " of ", compressed_bytes));
    }
    if (end - begin < least) {
      return absl::InvalidArgumentError(absl::StrCat(
          "corrupt compressed stream: RLE segment ", s + 1, " has ", end - begin, " bytes, too few to decode to the ",
          segment_bytes, " bytes the image declares (at least ", least, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status check_image_file_header(std::istream* in, const PixelLimits& limits) {
  uint8_t head[24];
  in->read(reinterpret_cast<char*>(head), sizeof head);
  const auto got = static_cast<size_t>(in->gcount());
  static const uint8_t kPng[] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (got >= 24 && std::memcmp(head, kPng, 8) == 0 && std::memcmp(head + 12, "IHDR", 4) == 0) {
    return check_declared_size("PNG header (IHDR): ", be32(head + 16), be32(head + 20), limits);
  }
  if (got >= 3 && head[0] == 0xFF && head[1] == 0xD8 && head[2] == 0xFF) {
    in->clear();
    in->seekg(0);
    StreamReader reader(in);
    return check_jpeg_frame_header(&reader, limits);
  }
  return absl::OkStatus();
}

}  // namespace cmn::preprocessing::internal
