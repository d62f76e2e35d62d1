// JPEG 2000 through OpenJPEG, from memory (jpeg2000.h).
#include "jpeg2000.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "cmn/common/status_macros.h"
#include "codec_guards.h"

#include <openjpeg.h>

namespace cmn::preprocessing::internal {
namespace {

// OpenJPEG reads from memory through these callbacks.
struct OpjBuffer {
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t offset = 0;
};

OPJ_SIZE_T opj_buffer_read(void* out, OPJ_SIZE_T n, void* user) {
  auto* b = static_cast<OpjBuffer*>(user);
  if (b->offset >= b->size) return static_cast<OPJ_SIZE_T>(-1);
  const size_t k = std::min(static_cast<size_t>(n), b->size - b->offset);
  std::memcpy(out, b->data + b->offset, k);
  b->offset += k;
  return k;
}

OPJ_OFF_T opj_buffer_skip(OPJ_OFF_T n, void* user) {
  auto* b = static_cast<OpjBuffer*>(user);
  if (n < 0) {
    const OPJ_OFF_T back = std::min<OPJ_OFF_T>(-n, static_cast<OPJ_OFF_T>(b->offset));
    b->offset -= static_cast<size_t>(back);
    return -back;
  }
  const OPJ_OFF_T k = std::min<OPJ_OFF_T>(n, static_cast<OPJ_OFF_T>(b->size - b->offset));
  b->offset += static_cast<size_t>(k);
  return k;
}

OPJ_BOOL opj_buffer_seek(OPJ_OFF_T position, void* user) {
  auto* b = static_cast<OpjBuffer*>(user);
  if (position < 0 || static_cast<uint64_t>(position) > b->size) return OPJ_FALSE;
  b->offset = static_cast<size_t>(position);
  return OPJ_TRUE;
}

void opj_collect_error(const char* message, void* user) {
  auto* errors = static_cast<std::string*>(user);
  if (errors->size() < 512) absl::StrAppend(errors, absl::StripTrailingAsciiWhitespace(message), "; ");
}
void opj_ignore_message(const char*, void*) {}

// opj_codec_t and opj_stream_t are the same type (void*): one deleter type each.
struct OpjCodecDeleter {
  void operator()(opj_codec_t* c) const { opj_destroy_codec(c); }
};
struct OpjStreamDeleter {
  void operator()(opj_stream_t* s) const { opj_stream_destroy(s); }
};
struct OpjImageDeleter {
  void operator()(opj_image_t* i) const { opj_image_destroy(i); }
};

// The number of resolution levels every component of the main header's COD/COC has (reduce factors up to one
// less are possible), or 1 when OpenJPEG cannot say.
int resolution_levels(opj_codec_t* codec, OPJ_UINT32 components) {
  opj_codestream_info_v2_t* info = opj_get_cstr_info(codec);
  if (info == nullptr) return 1;
  OPJ_UINT32 levels = 0;
  if (info->m_default_tile_info.tccp_info != nullptr) {
    for (OPJ_UINT32 c = 0; c < components && c < info->nbcomps; ++c) {
      const OPJ_UINT32 n = info->m_default_tile_info.tccp_info[c].numresolutions;
      levels = c == 0 ? n : std::min(levels, n);
    }
  }
  opj_destroy_cstr_info(&info);
  return std::max<int>(1, static_cast<int>(levels));
}

// One decode, of level *reduce (set here: 0 = full resolution, unless draft_min_side > 0). The header checks
// against the dataset are repeated on what OpenJPEG read.
absl::StatusOr<cv::Mat> decode_at(const std::string& bitstream, OPJ_CODEC_FORMAT format, const PixelDescription& p,
                                  int draft_min_side, int* reduce) {
  const auto* data = reinterpret_cast<const uint8_t*>(bitstream.data());
  std::unique_ptr<opj_codec_t, OpjCodecDeleter> codec(opj_create_decompress(format));
  if (!codec) return absl::InternalError("OpenJPEG: cannot create a decoder");
  std::string errors;
  opj_set_error_handler(codec.get(), opj_collect_error, &errors);
  opj_set_warning_handler(codec.get(), opj_ignore_message, nullptr);
  opj_set_info_handler(codec.get(), opj_ignore_message, nullptr);
  opj_dparameters_t parameters;
  opj_set_default_decoder_parameters(&parameters);
  if (!opj_setup_decoder(codec.get(), &parameters)) return absl::InternalError("OpenJPEG: decoder set-up failed");
  opj_decoder_set_strict_mode(codec.get(), OPJ_TRUE);  // a truncated codestream is an error, not a blurry image

  OpjBuffer buffer{data, bitstream.size(), 0};
  std::unique_ptr<opj_stream_t, OpjStreamDeleter> stream(opj_stream_create(OPJ_J2K_STREAM_CHUNK_SIZE, OPJ_TRUE));
  if (!stream) return absl::InternalError("OpenJPEG: cannot create a stream");
  opj_stream_set_user_data(stream.get(), &buffer, nullptr);
  opj_stream_set_user_data_length(stream.get(), bitstream.size());
  opj_stream_set_read_function(stream.get(), opj_buffer_read);
  opj_stream_set_skip_function(stream.get(), opj_buffer_skip);
  opj_stream_set_seek_function(stream.get(), opj_buffer_seek);

  opj_image_t* raw_image = nullptr;
  const bool header_ok = opj_read_header(stream.get(), codec.get(), &raw_image);
  std::unique_ptr<opj_image_t, OpjImageDeleter> image(raw_image);
  if (!header_ok || !image) return absl::InvalidArgumentError("corrupt JPEG 2000 header: " + errors);
  const int64_t width = static_cast<int64_t>(image->x1) - image->x0;
  const int64_t height = static_cast<int64_t>(image->y1) - image->y0;
  if (width != p.columns || height != p.rows || static_cast<int>(image->numcomps) != p.samples_per_pixel) {
    return absl::InvalidArgumentError(absl::StrCat("JPEG 2000 codestream is ", width, " x ", height, " x ",
                                                   image->numcomps, ", the dataset says ", p.columns, " x ", p.rows,
                                                   " x ", p.samples_per_pixel));
  }
  for (OPJ_UINT32 c = 0; c < image->numcomps; ++c) {
    const opj_image_comp_t& comp = image->comps[c];
    if (comp.dx != 1 || comp.dy != 1 || comp.w != width || comp.h != height) {
      return absl::UnimplementedError("JPEG 2000 with subsampled components is not supported");
    }
    if (comp.prec < 1 || static_cast<int>(comp.prec) > p.bits_allocated) {
      return absl::InvalidArgumentError(absl::StrCat("JPEG 2000 component precision ", comp.prec,
                                                     " exceeds Bits Allocated ", p.bits_allocated));
    }
  }
  // Draft: the coarsest level whose short side is still >= draft_min_side (level r is ceil(side / 2^r)).
  *reduce = 0;
  if (draft_min_side > 0) {
    const int levels = resolution_levels(codec.get(), image->numcomps);
    const int64_t short_side = std::min(width, height);
    while (*reduce + 1 < levels && *reduce < 16 &&
           (short_side + (int64_t{1} << (*reduce + 1)) - 1) >> (*reduce + 1) >= draft_min_side) {
      ++*reduce;
    }
    if (*reduce > 0 && !opj_set_decoded_resolution_factor(codec.get(), static_cast<OPJ_UINT32>(*reduce))) {
      return absl::InternalError("OpenJPEG: cannot set the resolution factor " + std::to_string(*reduce));
    }
  }
  if (!opj_decode(codec.get(), stream.get(), image.get()) || !opj_end_decompress(codec.get(), stream.get())) {
    return absl::InvalidArgumentError("corrupt JPEG 2000 stream: " + errors);
  }
  // What was reconstructed: the full size, or level *reduce (OpenJPEG sets the components' w x h to it).
  const int64_t out_width = image->comps[0].w, out_height = image->comps[0].h;
  for (OPJ_UINT32 c = 0; c < image->numcomps; ++c) {
    if (image->comps[c].w != image->comps[0].w || image->comps[c].h != image->comps[0].h ||
        out_width != (width + (int64_t{1} << *reduce) - 1) >> *reduce ||
        out_height != (height + (int64_t{1} << *reduce) - 1) >> *reduce) {
      return absl::InvalidArgumentError(absl::StrCat("corrupt JPEG 2000 stream: component ", c, " decoded as ",
                                                     image->comps[c].w, " x ", image->comps[c].h));
    }
  }
  const int spp = p.samples_per_pixel;
  const int depth = p.bits_allocated == 8 ? CV_8U : CV_16U;
  cv::Mat out(static_cast<int>(out_height), static_cast<int>(out_width), CV_MAKETYPE(depth, spp));
  const size_t pixels = static_cast<size_t>(out_width) * static_cast<size_t>(out_height);
  for (int c = 0; c < spp; ++c) {
    const OPJ_INT32* src = image->comps[c].data;
    if (src == nullptr) return absl::InvalidArgumentError("corrupt JPEG 2000 stream: a component has no data");
    if (depth == CV_8U) {
      auto* dst = out.ptr<uint8_t>(0);
      for (size_t i = 0; i < pixels; ++i) dst[i * spp + c] = static_cast<uint8_t>(src[i]);
    } else {
      auto* dst = out.ptr<uint16_t>(0);
      for (size_t i = 0; i < pixels; ++i) dst[i * spp + c] = static_cast<uint16_t>(src[i]);
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<cv::Mat> decode_jpeg2000(const std::string& bitstream, const PixelDescription& p,
                                        const PixelLimits& limits, int draft_min_side, int* scale) {
  static const uint8_t kJp2Signature[] = {0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20};
  static const uint8_t kJ2kSignature[] = {0xFF, 0x4F, 0xFF, 0x51};
  const auto* data = reinterpret_cast<const uint8_t*>(bitstream.data());
  OPJ_CODEC_FORMAT format;
  if (bitstream.size() >= 8 && std::memcmp(data, kJp2Signature, 8) == 0) {
    format = OPJ_CODEC_JP2;
  } else if (bitstream.size() >= 4 && std::memcmp(data, kJ2kSignature, 4) == 0) {
    format = OPJ_CODEC_J2K;
  } else {
    return absl::InvalidArgumentError("corrupt JPEG 2000 data: frame 1 is not a JPEG 2000 codestream");
  }
  // The declared size, before OpenJPEG reads the header (it allocates per tile and component there) and
  // decodes (width x height x 4 bytes per component).
  J2kSize declared;
  CMN_ASSIGN_OR_RETURN(declared, check_jpeg2000_header(data, bitstream.size(), limits));
  if (declared.width != p.columns || declared.height != p.rows || declared.components != p.samples_per_pixel) {
    return absl::InvalidArgumentError(absl::StrCat("JPEG 2000 codestream is ", declared.width, " x ", declared.height,
                                                   " x ", declared.components, ", the dataset says ", p.columns,
                                                   " x ", p.rows, " x ", p.samples_per_pixel));
  }
  int reduce = 0;
  absl::StatusOr<cv::Mat> frame = decode_at(bitstream, format, p, draft_min_side, &reduce);
  if (!frame.ok() && reduce > 0) {
    reduce = 0;
    frame = decode_at(bitstream, format, p, 0, &reduce);
  }
  if (scale != nullptr) *scale = 1 << reduce;
  return frame;
}

}  // namespace cmn::preprocessing::internal
