#pragma once
// Private to cmn_preprocessing's DICOM layer: the DCMTK-facing declarations its .cc files share. This header
// includes DCMTK, so only files of preprocessing/src include it (dcmtk_bridge.h is the DCMTK-free face the rest
// of the library sees). DCMTK's OFCondition becomes absl::Status in these files and nowhere else.
//
// Which file holds what (see also ../README.md):
//   dcmtk_attributes.cc  DCMTK set-up (codecs, log levels), attribute getters, error labels
//   dicom_parse.cc       Part 10 / bare dataset -> DcmDataset, with the guards against hostile headers
//   dicom_instance.cc    InstanceInfo, the entry points read_dicom_info / decode_instance / stored pixels
//   pixel_module.cc      Image Pixel module + Modality/VOI LUT attributes -> PixelDescription
//   pixel_decoding.cc    frame 1: native, RLE / JPEG / JPEG-LS (DCMTK codecs), encapsulated JPEG 2000 framing
//   jpeg2000.cc          JPEG 2000 codestreams through OpenJPEG (no DCMTK)
//   codec_guards.cc      declared-size and stream checks run before any codec allocates (no DCMTK)
//   view_rules.cc        view classification (no DCMTK)
//   grey_levels.cc       the grey-level policy (no DCMTK)
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include <opencv2/core.hpp>

#include <dcmtk/config/osconfig.h>  // first of the DCMTK headers

#include <dcmtk/dcmdata/dcdatset.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcitem.h>
#include <dcmtk/dcmdata/dcxfer.h>

#include "dcmtk_bridge.h"

namespace cmn::preprocessing::internal {

// Process-wide DCMTK set-up, idempotent: codecs registered once; DCMTK's log output limited to FATAL.
void init_dcmtk_once();

std::string trimmed(const OFString& s);
std::string condition_text(const OFCondition& cond);

// Attribute getters. Absent, unreadable or implausibly long values read as empty / nullopt.
std::string get_string(DcmItem* item, const DcmTagKey& tag);
std::vector<std::string> get_strings(DcmItem* item, const DcmTagKey& tag);
std::optional<int64_t> get_integer(DcmItem* item, const DcmTagKey& tag);  // IS, first value
std::optional<int64_t> get_uint16(DcmItem* item, const DcmTagKey& tag);
// A value in the stored-pixel domain: signed when its VR is SS or `is_signed`, unsigned otherwise.
std::optional<int64_t> get_xs(DcmItem* item, const DcmTagKey& tag, unsigned long pos, bool is_signed);
// An unsigned 16-bit count whatever the VR says (LUT Descriptor values 1 and 3).
std::optional<int64_t> get_count16(DcmItem* item, const DcmTagKey& tag, unsigned long pos);
std::vector<double> get_decimals(DcmItem* item, const DcmTagKey& tag);

// `reason` prefixed with instance_label(uid, source).
absl::Status instance_error(absl::StatusCode code, const std::string& uid, const std::string& source,
                            const std::string& reason);

// A parsed instance (dicom_parse.cc).
struct Parsed {
  std::unique_ptr<std::string> inflated;  // deflated transfer syntax: the dataset DCMTK reads (lazily)
  std::unique_ptr<DcmFileFormat> file;    // after `inflated`: destroyed first
  DcmDataset* dataset = nullptr;
  E_TransferSyntax xfer = EXS_Unknown;    // of `dataset` as DCMTK read it (deflated: explicit LE)
  std::string transfer_syntax_uid;        // as the instance declares it
  std::string sop_instance_uid;
};

// Part 10 file or bare dataset -> DcmDataset; large values stay in `bytes` until accessed, so `bytes` must
// outlive the result. Errors name the instance.
absl::StatusOr<Parsed> parse(const std::string& bytes, const std::string& source, const DicomReadOptions& options);

// Photometric Interpretation families (pixel_module.cc).
bool is_monochrome(const std::string& photometric);
bool is_supported_colour(const std::string& photometric);

// Reads and checks the Image Pixel module and the grey-level attributes, refusing declared sizes over the
// limits before anything is decoded. Errors carry the reason only (pixel_module.cc).
absl::Status read_pixel_description(DcmDataset* ds, const DicomReadOptions& options, PixelDescription* p);

// Frame 1 of the Pixel Data as DecodedInstance::frame describes it; updates p->photometric to the decoded
// colour model. Every codec's header is checked against options' limits first. Errors carry the reason only
// (pixel_decoding.cc).
absl::StatusOr<cv::Mat> decode_frame1(DcmDataset* ds, E_TransferSyntax xfer, PixelDescription* p,
                                      const DicomReadOptions& options);

}  // namespace cmn::preprocessing::internal
