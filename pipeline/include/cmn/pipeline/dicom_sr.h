#pragma once
// The report as a DICOM Structured Report, so that it goes back into the PACS in the same study (DESIGN.md,
// "Around the service"). Library `cmn_dicom_sr`; DCMTK (dcmsr, dcmdata) is private to src/dicom_sr.cc and no
// DCMTK type appears here.
//
// Document written by write_report_sr: Comprehensive SR, TID 2000 "Diagnostic Imaging Report" (LOINC 18748-4),
// clean in PixelMed's DicomSRValidator (TID 2000) and dciodvfy (tests/common/sr_validators.h):
//   CONTAINER (18748-4, LN, "Diagnostic Imaging Report")                       root, template 2000/DCMR
//     HAS CONCEPT MOD  CODE (121049, DCM, "Language of Content Item and Descendants") = (en, RFC5646, "English")
//     HAS OBS CONTEXT  CODE (121005, DCM, "Observer Type") = (121007, DCM, "Device")          TID 1001/1004
//     HAS OBS CONTEXT  UIDREF (121012, DCM, "Device Observer UID")           = the Device UID (below)
//     HAS OBS CONTEXT  TEXT (121013, DCM, "Device Observer Name")           = the model name
//     HAS OBS CONTEXT  TEXT (121014, DCM, "Device Observer Manufacturer")   = SrOptions::manufacturer
//     HAS OBS CONTEXT  TEXT (121015, DCM, "Device Observer Model Name")     = "<model name> <version>"
//     CONTAINS CONTAINER (121111, DCM, "Summary")    a CID 7001 section heading
//       CONTAINS TEXT (121111, DCM, "Summary")  = the machine-draft statement (SrOptions::draft_statement)
//       CONTAINS TEXT (121111, DCM, "Summary")  = the image-report consistency (SrOptions::consistency), when known
//     CONTAINS CONTAINER (121070, DCM, "Findings")   a CID 7001 section heading
//       CONTAINS TEXT (121071, DCM, "Finding")  one per sentence of the report, in order
// Why a "Summary" section for the statement: TID 2002 allows only CID 7002 report elements in a section (no
// "Comment"), and TID 1210 (an equivalent meaning of the title) fails PixelMed's TID 2000 check. TID 2000 has no
// place for TID 4019 (Algorithm Identification): the algorithm is identified by the header (below) and the device
// observer; the findings SR (findings_sr.h) carries TID 4019 with the decoding settings.
// Header: Preliminary Flag PRELIMINARY, Completion Flag COMPLETE, Verification Flag UNVERIFIED (a machine draft
// nobody has signed), the source study's StudyInstanceUID and its Patient / General Study / Patient Study modules
// copied from the first source instance, new Series and SOP Instance UIDs, Modality SR, SeriesDescription marking
// an AI draft, Current Requested Procedure Evidence Sequence = every distinct source instance (study/series/SOP
// class/instance UIDs), Content Date/Time = now (local time of the host), Manufacturer (SrOptions::manufacturer),
// Manufacturer's Model Name "<model name> <version>" (cmn-pacs recognises its own SRs by it), Software Versions
// "cmn <version>" \ "<model name> <version>".
// IHE AI Results algorithm identification: Contributing Equipment Sequence (0018,A001), one item: Purpose of
// Reference (Newcode1, 99IHE, "Processing Algorithm") (IHE AIR's code; DICOM has none: 109103 is "Modifying
// Equipment"), Manufacturer, Manufacturer's Model Name = the model (bundle) name, Software Versions = "cmn
// <version>" \ the model version, Device UID, Contribution DateTime / Description. The private coding schemes
// used are named in the Coding Scheme Identification Sequence.
// Evidence order is by (series UID, SOP instance UID) as DCMTK's reference list keeps it.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cmn::pipeline {

struct SrOptions {
  // UID root for the new Series and SOP Instance UIDs (e.g. your organisation's registered root,
  // "1.2.826.0.1.3680043.10.1234"). "" = UUID-derived UIDs under 2.25 (PS3.5 B.2), valid anywhere.
  std::string uid_root;
  // Device UID of the Contributing Equipment item and Device Observer UID (121012). "" = a stable UID derived
  // from model_digest (or, without one, from manufacturer + model name + version): 2.25.<a version 8 UUID of
  // their SHA-256>, so one model is one device across restarts.
  std::string device_uid;
  // The model's identity, "sha256:<64 hex>" (BundleInfo::digest; the checkpoint's SHA-256 for a bare
  // checkpoint). When set (and device_uid is ""), the Device UID / Device Observer UID is derived from it
  // (2.25.<name-based UUID of its SHA-256>): a retrained model, even under the same name and version, is a new
  // device. "" = derived from manufacturer + model name + version instead.
  std::string model_digest;
  // The decoding settings, written as TID 4019 Algorithm Parameters ("beam_size=3", ...) in the findings SR.
  std::vector<std::string> algorithm_parameters;
  std::string model_name = "r2gencmn";       // Device Observer Name (121013)
  std::string model_version;                 // in Device Observer Model Name and Software Versions
  std::string manufacturer = "cmn";          // Device Observer Manufacturer (121014) and Manufacturer (0008,0070)
  bool untrained = false;                    // random weights: the draft statement says the text is not a report
  std::string series_description = "AI DRAFT report - unverified, not for diagnostic use (cmn)";
  int32_t series_number = 9901;              // Series Number of the SR series (high, to sort after the images)
  // Series Description of the coded-findings SR (findings_sr.h; its Series Number is series_number + 1).
  std::string findings_series_description = "AI DRAFT coded findings - unverified, not for diagnosis (cmn)";
  // The Summary item's text. "" = the default statement: a machine-generated draft, unverified, not for
  // diagnostic use, naming the model and version (and "UNTRAINED" when untrained).
  std::string draft_statement;
  // The draft's image-report consistency (consistency.h); written as a second Summary TEXT item (121111) after the
  // draft statement, with the low-consistency warning when below consistency_warn_below (> 0). nullopt: no item
  // (a model without the alignment head).
  std::optional<double> consistency;
  double consistency_warn_below = 0.0;
};

// What an SR says, as read back by read_report_sr (tests, the PACS loop).
struct SrEvidence {
  std::string study_instance_uid;
  std::string series_instance_uid;
  std::string sop_class_uid;
  std::string sop_instance_uid;
};

// An item of the Contributing Equipment Sequence (0018,A001).
struct SrEquipment {
  std::string purpose_code;                    // "Newcode1"  } IHE AIR's (Newcode1, 99IHE, "Processing Algorithm")
  std::string purpose_scheme;                  // "99IHE"     }
  std::string manufacturer;
  std::string model_name;                      // Manufacturer's Model Name: the bundle name
  std::vector<std::string> software_versions;  // "cmn <version>", then the bundle version
  std::string device_uid;
};

struct ReportSr {
  std::string sop_class_uid;            // Comprehensive SR Storage
  std::string sop_instance_uid;
  std::string series_instance_uid;
  std::string study_instance_uid;
  std::string series_description;
  std::string completion_flag;          // "COMPLETE"
  std::string verification_flag;        // "UNVERIFIED"
  std::string preliminary_flag;         // "PRELIMINARY"
  std::string manufacturer_model_name;  // header (0008,1090): "<model name> <version>"
  std::string template_id;              // root's TID ("2000")
  std::string device_observer_uid;
  std::string device_observer_name;     // the model name
  std::vector<SrEquipment> contributing_equipment;  // (0018,A001): the IHE AIR algorithm identification
  std::string draft_statement;          // the Summary item
  std::string consistency_statement;    // the second Summary item, when the draft had a consistency score
  std::vector<std::string> findings;    // the Finding items, in order
  std::vector<SrEvidence> evidence;     // Current Requested Procedure Evidence Sequence
  std::string text() const;             // findings joined with " " (equals the report text, see below)
};

// The SR for a report. `sources` are the study's instances the report was made from (Part 10 files or bare
// datasets; duplicates by SOP Instance UID are listed once); all must have one StudyInstanceUID. `sentences` is
// the report split into sentences (GenerateReportResponse.sentences); joined with " " they are the report text.
// Returns a Part 10 file (explicit VR little endian). Errors: InvalidArgument (no source, unreadable source,
// sources of several studies, a source without the UIDs the evidence needs, UIDs longer than 64 characters from
// a long uid_root), Internal (DCMTK refused the document; the message carries its reason). Messages name
// instances by SOP Instance UID or position, never by patient attributes.
absl::StatusOr<std::string> write_report_sr(const std::vector<std::string>& sources,
                                            const std::vector<std::string>& sentences, const SrOptions& options);

// Parses an SR written by write_report_sr (or any SR with the same structure). InvalidArgument when the bytes
// are not a DICOM SR DCMTK can read.
absl::StatusOr<ReportSr> read_report_sr(const std::string& bytes);

// A new UID under `root` ("" = 2.25 UUID-derived). InvalidArgument when root is not a valid UID prefix or the
// result would exceed 64 characters.
absl::StatusOr<std::string> make_uid(const std::string& root);

}  // namespace cmn::pipeline
