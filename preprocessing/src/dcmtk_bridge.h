#pragma once
// Private to cmn_preprocessing: what the DICOM layer (the files of preprocessing/src that include DCMTK, listed
// in dcmtk_dataset.h and ../README.md) hands to the rest of the library. No DCMTK type appears here.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include <opencv2/core.hpp>

#include "cmn/preprocessing/dicom.h"

namespace cmn::preprocessing::internal {

// A lookup table as DICOM encodes one: LUT Descriptor (0028,3002) + LUT Data (0028,3006).
struct DicomLut {
  int64_t first_mapped = 0;        // descriptor value 2: the input value mapped to data[0] (signed if the pixels are)
  int bits = 16;                   // descriptor value 3: bits per entry (output range 0 .. 2^bits - 1)
  std::vector<uint16_t> data;      // descriptor value 1 entries (0 in the descriptor means 65536)
};

// Everything the grey-level policy (grey_levels.h) needs to know about an instance's pixels.
struct PixelDescription {
  int64_t rows = 0;
  int64_t columns = 0;
  int samples_per_pixel = 1;
  int bits_allocated = 0;
  int bits_stored = 0;
  int high_bit = 0;
  bool is_signed = false;          // Pixel Representation 1
  int64_t frames = 1;              // Number of Frames; only frame 1 is decoded
  // Draft decoding (DicomReadOptions::draft_min_side): the frame was decoded at 1/draft_scale per side, and
  // rows x columns above have become the decoded frame's (ceil(Rows / scale) x ceil(Columns / scale)).
  int draft_scale = 1;
  // Photometric Interpretation of the decoded frame (after a codec's colour conversion; YBR_FULL_422 is
  // expanded to YBR_FULL by pixel_decoding.cc).
  std::string photometric;

  // Modality LUT: a Modality LUT Sequence item wins over Rescale Slope/Intercept.
  double rescale_slope = 1.0;
  double rescale_intercept = 0.0;
  std::optional<DicomLut> modality_lut;
  std::string modality_lut_problem;  // why a present Modality LUT Sequence could not be used (error)

  // VOI LUT
  std::vector<double> window_centers;
  std::vector<double> window_widths;
  std::string voi_lut_function;      // LINEAR (default), LINEAR_EXACT, SIGMOID
  std::optional<DicomLut> voi_lut;   // first item of the VOI LUT Sequence
  std::string voi_lut_problem;       // why a present VOI LUT Sequence was ignored (then: percentile window)

  std::string presentation_lut_shape;           // IDENTITY, INVERSE or empty
  std::optional<int64_t> padding_value;         // Pixel Padding Value, stored-value domain
  std::optional<int64_t> padding_range_limit;   // Pixel Padding Range Limit, stored-value domain
};

// An instance parsed and its frame 1 decoded.
struct DecodedInstance {
  InstanceInfo info;
  PixelDescription pixels;
  // Frame 1 as stored: CV_8UC(n) (bits allocated 8) or CV_16UC(n) (bits allocated 16) container words in host
  // byte order, samples interleaved (colour-by-plane data is interleaved here), rows x columns.
  cv::Mat frame;
};

// Parses a Part 10 file or a bare dataset and reads its attributes (no pixel decoding).
absl::StatusOr<InstanceInfo> parse_instance_info(const std::string& bytes, const std::string& source,
                                                const DicomReadOptions& options);

// Parses and decodes frame 1. Errors name the instance and the reason (see dicom.h).
absl::StatusOr<DecodedInstance> decode_instance(const std::string& bytes, const std::string& source,
                                                const DicomReadOptions& options);

// "DICOM instance <SOP Instance UID> (<source>)" or "DICOM '<source>'" when the UID is unknown: the prefix of
// every error message about an instance.
std::string instance_label(const std::string& sop_instance_uid, const std::string& source);

// The attributes view classification looks at (all optional, as read from the dataset).
struct ViewAttributes {
  std::string view_position;                  // (0018,5101)
  std::vector<std::string> view_code_values;  // (0054,0220) items: Code Value (0008,0100)
  std::vector<std::string> view_code_meanings;  // (0054,0220) items: Code Meaning (0008,0104)
  std::string image_laterality;               // (0020,0062)
  std::vector<std::string> patient_orientation;  // (0020,0020): row direction, column direction
  std::string series_description;             // (0008,103E)
  std::string protocol_name;                  // (0018,1030)
};

// The documented view rules (see dicom.h, "View classification"). Returns the view and sets *evidence.
ViewPosition classify_view(const ViewAttributes& attributes, std::string* evidence);

}  // namespace cmn::preprocessing::internal
