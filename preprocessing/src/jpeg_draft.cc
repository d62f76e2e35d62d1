// Draft JPEG decoding through libjpeg-turbo (jpeg_draft.h).
#include "jpeg_draft.h"

#include <csetjmp>
#include <cstdio>  // jpeglib.h needs FILE and size_t declared first

#include <jpeglib.h>

namespace cmn::preprocessing::internal {
namespace {

// libjpeg reports errors through error_exit, which must not return: it longjmps back to decompress().
struct ErrorManager {
  jpeg_error_mgr base;  // first member: libjpeg hands back a pointer to it
  std::jmp_buf jump;
};

[[noreturn]] void on_error(j_common_ptr cinfo) { std::longjmp(reinterpret_cast<ErrorManager*>(cinfo->err)->jump, 1); }
// Warnings (level -1: corrupt data, premature end of data, ...) are counted, not printed; trace messages
// (level >= 0) are ignored. Counting is this hook's job: libjpeg's own emit_message is what counts them.
void on_message(j_common_ptr cinfo, int level) {
  if (level < 0) ++cinfo->err->num_warnings;
}

enum class Outcome { kDone, kNotApplicable, kFailed };

// Everything between setjmp and a possible longjmp: no object with a destructor is created in this frame (a
// longjmp would skip it), and `out` is the caller's, so what it holds is freed normally either way.
Outcome decompress(jpeg_decompress_struct* cinfo, ErrorManager* errors, const std::string& bitstream, int64_t rows,
                   int64_t columns, int denominator, cv::Mat* out) {
  if (setjmp(errors->jump) != 0) return Outcome::kFailed;
  jpeg_mem_src(cinfo, reinterpret_cast<const unsigned char*>(bitstream.data()),
               static_cast<unsigned long>(bitstream.size()));
  jpeg_read_header(cinfo, TRUE);
  if (cinfo->num_components != 1 || cinfo->data_precision != 8 ||
      static_cast<int64_t>(cinfo->image_width) != columns || static_cast<int64_t>(cinfo->image_height) != rows) {
    return Outcome::kNotApplicable;
  }
  cinfo->scale_num = 1;
  cinfo->scale_denom = static_cast<unsigned int>(denominator);
  cinfo->out_color_space = JCS_GRAYSCALE;
  cinfo->dct_method = JDCT_ISLOW;  // the accurate integer IDCT, as DCMTK's decoder uses by default
  jpeg_start_decompress(cinfo);
  out->create(static_cast<int>(cinfo->output_height), static_cast<int>(cinfo->output_width), CV_8UC1);
  while (cinfo->output_scanline < cinfo->output_height) {
    JSAMPROW row = out->ptr<uint8_t>(static_cast<int>(cinfo->output_scanline));
    if (jpeg_read_scanlines(cinfo, &row, 1) != 1) return Outcome::kFailed;
  }
  jpeg_finish_decompress(cinfo);
  return cinfo->err->num_warnings == 0 ? Outcome::kDone : Outcome::kFailed;
}

}  // namespace

int jpeg_draft_denominator(int64_t rows, int64_t columns, int min_side) {
  if (min_side <= 0) return 1;
  const int64_t short_side = rows < columns ? rows : columns;
  int denominator = 1;
  while (denominator < 8 && (short_side + 2 * denominator - 1) / (2 * denominator) >= min_side) denominator *= 2;
  return denominator;
}

std::optional<JpegDraft> decode_jpeg_draft(const std::string& bitstream, int64_t rows, int64_t columns,
                                           int min_side) {
  const int denominator = jpeg_draft_denominator(rows, columns, min_side);
  if (denominator == 1 || bitstream.empty()) return std::nullopt;
  jpeg_decompress_struct cinfo{};
  ErrorManager errors{};
  cinfo.err = jpeg_std_error(&errors.base);
  errors.base.error_exit = on_error;
  errors.base.emit_message = on_message;
  jpeg_create_decompress(&cinfo);
  JpegDraft draft;
  const Outcome outcome = decompress(&cinfo, &errors, bitstream, rows, columns, denominator, &draft.frame);
  jpeg_destroy_decompress(&cinfo);
  if (outcome != Outcome::kDone) return std::nullopt;
  draft.scale = denominator;
  return draft;
}

}  // namespace cmn::preprocessing::internal
