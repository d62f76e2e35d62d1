// The instance as the rest of cmn sees it: InstanceInfo (identity, view) and the entry points that parse
// (dicom_parse.cc), read the pixel module (pixel_module.cc) and decode frame 1 (pixel_decoding.cc).
#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "cmn/common/status_macros.h"
#include "dcmtk_dataset.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcsequen.h>

namespace cmn::preprocessing {
namespace internal {
namespace {

// Non-image SOP classes that may still carry pixel-like data elements (we never treat them as images).
bool is_non_image_sop_class(const std::string& uid) {
  static const char* const kPrefixes[] = {
      "1.2.840.10008.5.1.4.1.1.88.",   // structured reports, key object selection
      "1.2.840.10008.5.1.4.1.1.11.",   // presentation states
      "1.2.840.10008.5.1.4.1.1.104.",  // encapsulated documents
      "1.2.840.10008.5.1.4.1.1.9.",    // waveforms
      "1.2.840.10008.5.1.4.1.1.66",    // raw data, spatial registration, fiducials, ...
      "1.2.840.10008.5.1.4.1.1.481.",  // RT (plans, structure sets, doses are not radiographs)
  };
  for (const char* prefix : kPrefixes) {
    if (uid.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

ViewAttributes read_view_attributes(DcmItem* dataset) {
  ViewAttributes a;
  a.view_position = get_string(dataset, DCM_ViewPosition);
  DcmSequenceOfItems* codes = nullptr;
  if (dataset->findAndGetSequence(DCM_ViewCodeSequence, codes).good() && codes != nullptr) {
    for (unsigned long i = 0; i < codes->card(); ++i) {
      DcmItem* item = codes->getItem(i);
      if (item == nullptr) continue;
      a.view_code_values.push_back(get_string(item, DCM_CodeValue));
      a.view_code_meanings.push_back(get_string(item, DCM_CodeMeaning));
    }
  }
  a.image_laterality = get_string(dataset, DCM_ImageLaterality);
  a.patient_orientation = get_strings(dataset, DCM_PatientOrientation);
  a.series_description = get_string(dataset, DCM_SeriesDescription);
  a.protocol_name = get_string(dataset, DCM_ProtocolName);
  return a;
}

InstanceInfo read_info(const Parsed& parsed, const std::string& source) {
  DcmDataset* ds = parsed.dataset;
  InstanceInfo info;
  info.source = source;
  info.sop_instance_uid = parsed.sop_instance_uid;
  info.sop_class_uid = get_string(ds, DCM_SOPClassUID);
  info.study_instance_uid = get_string(ds, DCM_StudyInstanceUID);
  info.series_instance_uid = get_string(ds, DCM_SeriesInstanceUID);
  info.modality = get_string(ds, DCM_Modality);
  info.transfer_syntax_uid = parsed.transfer_syntax_uid;
  info.is_image = ds->tagExists(DCM_PixelData) && !is_non_image_sop_class(info.sop_class_uid);
  info.series_number = get_integer(ds, DCM_SeriesNumber);
  info.instance_number = get_integer(ds, DCM_InstanceNumber);
  info.rows = get_uint16(ds, DCM_Rows).value_or(0);
  info.columns = get_uint16(ds, DCM_Columns).value_or(0);
  info.samples_per_pixel = std::max<int64_t>(1, get_uint16(ds, DCM_SamplesPerPixel).value_or(1));
  info.bits_allocated = std::max<int64_t>(1, get_uint16(ds, DCM_BitsAllocated).value_or(16));
  info.view = classify_view(read_view_attributes(ds), &info.view_evidence);
  return info;
}

}  // namespace

absl::StatusOr<InstanceInfo> parse_instance_info(const std::string& bytes, const std::string& source,
                                                const DicomReadOptions& options) {
  Parsed parsed;
  CMN_ASSIGN_OR_RETURN(parsed, parse(bytes, source, options));
  return read_info(parsed, source);
}

absl::StatusOr<DecodedInstance> decode_instance(const std::string& bytes, const std::string& source,
                                                const DicomReadOptions& options) {
  Parsed parsed;
  CMN_ASSIGN_OR_RETURN(parsed, parse(bytes, source, options));
  DecodedInstance out;
  out.info = read_info(parsed, source);
  auto fail = [&](const absl::Status& s) {
    return instance_error(s.code(), out.info.sop_instance_uid, source, std::string(s.message()));
  };
  if (absl::Status s = read_pixel_description(parsed.dataset, options, &out.pixels); !s.ok()) return fail(s);
  if (!out.pixels.modality_lut_problem.empty()) {
    return fail(absl::InvalidArgumentError("unusable Modality LUT Sequence: " + out.pixels.modality_lut_problem));
  }
  absl::StatusOr<cv::Mat> frame = decode_frame1(parsed.dataset, parsed.xfer, &out.pixels, options);
  if (!frame.ok()) return fail(frame.status());
  out.frame = *std::move(frame);
  return out;
}

}  // namespace internal

absl::StatusOr<InstanceInfo> read_dicom_info(const std::string& bytes, const std::string& source,
                                             const DicomReadOptions& options) {
  return internal::parse_instance_info(bytes, source, options);
}

absl::StatusOr<DicomStoredPixels> read_dicom_stored_pixels(const std::string& bytes, const std::string& source,
                                                           const DicomReadOptions& options) {
  internal::DecodedInstance decoded;
  CMN_ASSIGN_OR_RETURN(decoded, internal::decode_instance(bytes, source, options));
  DicomStoredPixels out;
  out.info = std::move(decoded.info);
  out.photometric = decoded.pixels.photometric;
  out.samples_per_pixel = decoded.pixels.samples_per_pixel;
  out.bits_allocated = decoded.pixels.bits_allocated;
  out.bits_stored = decoded.pixels.bits_stored;
  out.high_bit = decoded.pixels.high_bit;
  out.is_signed = decoded.pixels.is_signed;
  out.frames = decoded.pixels.frames;
  out.frame = std::move(decoded.frame);
  return out;
}

}  // namespace cmn::preprocessing
