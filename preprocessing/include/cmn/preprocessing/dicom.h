#pragma once
// DICOM instances -> the 8-bit grey images cmn feeds the model, and studies -> the model's N view slots.
// DCMTK is used in exactly one file (src/dcmtk_bridge.cc); no DCMTK type appears in this header.
//
// Grey-level policy (one code path for every instance; see read_dicom_image):
//   stored values (bits allocated/stored/high bit, signed or not) -> Modality LUT (Rescale Slope/Intercept or
//   Modality LUT Sequence) -> VOI LUT (Window Center/Width with VOI LUT Function LINEAR / LINEAR_EXACT /
//   SIGMOID, or a VOI LUT Sequence; without any, the documented percentile window of DicomReadOptions) ->
//   8 bits -> MONOCHROME1 inverted (and Presentation LUT Shape INVERSE honoured) so that bone is bright ->
//   then the same resize/normalise as PNG input (image_pipeline.h). Pixel Padding Value(s) are excluded from
//   windowing statistics. Multi-frame: frame 1. RGB/YBR: converted to grey.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include <opencv2/core.hpp>

#include "cmn/preprocessing/image_pipeline.h"

namespace cmn::preprocessing {

struct DicomReadOptions {
  int64_t max_pixels = 100'000'000;     // rows * columns above this is refused (decompression bomb guard)
  int64_t max_dimension = 65535;        // rows or columns above this is refused
  double percentile_low = 0.5;          // without VOI: window from this percentile of the non-padding pixels...
  double percentile_high = 99.5;        // ...to this one
};

enum class ViewPosition { kPA, kAP, kLateral, kOther };
const char* view_name(ViewPosition v);  // "PA", "AP", "LATERAL", "OTHER"

// What an instance says about itself (no patient identifiers are kept here: logs may print this).
struct InstanceInfo {
  std::string source;               // file name or caller-given name (for messages)
  std::string sop_instance_uid;
  std::string sop_class_uid;
  std::string study_instance_uid;
  std::string series_instance_uid;
  std::string modality;             // CR, DX, ...
  std::string transfer_syntax_uid;
  bool is_image = false;            // has Pixel Data and an image SOP class
  ViewPosition view = ViewPosition::kOther;
  std::string view_evidence;        // which attribute decided the view, e.g. "ViewPosition=PA"
  int64_t rows = 0, columns = 0;
};

struct DicomImage {
  InstanceInfo info;
  cv::Mat grey8;                    // CV_8UC1, rows x columns, bright = dense (bone), after the policy above
};

// Reads the instance's attributes only (no pixel decoding). `bytes` is a Part 10 file or a bare dataset.
absl::StatusOr<InstanceInfo> read_dicom_info(const std::string& bytes, const std::string& source,
                                             const DicomReadOptions& options = {});
// Decodes pixels and applies the grey-level policy. Errors name the instance (SOP Instance UID when known,
// else `source`) and the reason: not DICOM, truncated, no/short Pixel Data, bad dimensions, unsupported
// transfer syntax, corrupt compressed stream, inconsistent bits/photometric.
absl::StatusOr<DicomImage> read_dicom_image(const std::string& bytes, const std::string& source,
                                            const DicomReadOptions& options = {});
// The same, from a file path (source = the path).
absl::StatusOr<DicomImage> read_dicom_file(const std::string& path, const DicomReadOptions& options = {});

// --- Study assembly and view selection ---

struct InstanceInput {
  std::string source;  // file name (or "request[3]") for messages
  std::string bytes;   // the DICOM instance
};

struct StudyOptions {
  int64_t views = 4;                                  // the model's N
  std::vector<std::string> allowed_modalities = {"CR", "DX", "DR"};
  DicomReadOptions read;
  ImageOptions image;                                 // resize / normalisation
};

struct ViewSlot {
  int64_t slot = 0;                 // 0..N-1
  InstanceInfo instance;            // the instance that fills it
  std::string reason;               // why this instance in this slot, e.g. "frontal PA (ViewPosition=PA)", "repeat of slot 0: study has 1 image"
};

struct SkippedInstance {
  InstanceInfo instance;            // as far as it could be read
  std::string reason;               // "not an image (Basic Text SR)", "modality CT not allowed", "surplus lateral", ...
};

struct AssembledStudy {
  std::string study_instance_uid;
  std::vector<ViewSlot> slots;          // exactly N
  std::vector<SkippedInstance> skipped; // everything not used, with the reason
  std::vector<FloatImage> images;       // N model inputs, slot order
};

// Groups by StudyInstanceUID (several studies -> InvalidArgument naming both UIDs), skips non-images and
// disallowed modalities (saying so), classifies views and fills the N slots by the documented priority.
absl::StatusOr<AssembledStudy> assemble_study(const std::vector<InstanceInput>& instances, const StudyOptions& options);

}  // namespace cmn::preprocessing
