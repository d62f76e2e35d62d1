#pragma once
// The report's coded findings as a DICOM SR a viewer can use (opt-in companion of the TID 2000 report SR of
// dicom_sr.h): Comprehensive 3D SR, TID 1500 "Measurement Report". Library `cmn_dicom_sr`; no DCMTK type here.
//
// Document written by write_findings_sr:
//   CONTAINER (126000, DCM, "Imaging Measurement Report")                     root, template 1500/DCMR
//     HAS CONCEPT MOD  CODE (121049, DCM, "Language of Content Item and Descendants") = (en, RFC5646, "English")
//     HAS OBS CONTEXT  the device observer items of the report SR (TID 1001/1004, same Device Observer UID)
//     CONTAINS CONTAINER (111028, DCM, "Image Library")                                 TID 1600
//       CONTAINS CONTAINER (126200, DCM, "Image Library Group")
//         CONTAINS IMAGE  one per source instance (the slot instances), in source order
//           HAS ACQ CONTEXT CODE (121139, DCM, "Modality") = the instance's modality (CID 29)   TID 1602
//     CONTAINS CONTAINER (C0034375, UMLS, "Qualitative Evaluations")                    TID 1500 row 12
//       CONTAINS TEXT (111001, DCM, "Algorithm Name")       = the model name               TID 4019
//       CONTAINS TEXT (111003, DCM, "Algorithm Version")    = the model version (digest if none)
//       CONTAINS TEXT (111002, DCM, "Algorithm Parameters") one per SrOptions::algorithm_parameters
//          (CONTAINS, not HAS CONCEPT MOD: PixelMed's TID 1500 check takes every TEXT child of this container for
//          row 14, TEXT by CONTAINS, and reports HAS CONCEPT MOD as an error)
//       CONTAINS CODE <observation> = <state>   one per stated observation, in the order given
//          <observation>: metrics::observation_code() (SNOMED CT, see train/metrics observations.cc)
//          <state>: present   (52101004, SCT, "Present")      } CID 241 "Present-Absent Only"
//                   absent    (2667000, SCT, "Absent")        }
//                   uncertain (373068000, SCT, "Undetermined")  CID 230 "Yes-No" (its "cannot say" value)
// Why this scheme: SNOMED CT qualifier values are what DICOM's own value sets for presence use (CID 241 / 230)
// and what FHIR's Observation.valueCodeableConcept takes, so the SR and the FHIR output agree; one code per
// state keeps the evaluation a single CODE item that any TID 1500 reader (OHIF, dcmqi, highdicom) shows.
// Why not TID 1501 measurement groups: the TID 1501 that PixelMed validates has no qualitative evaluation row,
// and there are no measurements; the document-level Qualitative Evaluations container is TID 1500's place for
// evaluations of the whole subject, and the Image Library names the images they were made from. DCMTK's
// TID1500_MeasurementReport class cannot put TID 4019 into that container, so the tree is built item by item.
// Header: as the report SR (dicom_sr.h: patient/study copied, Preliminary PRELIMINARY, Completion COMPLETE,
// Verification UNVERIFIED, Contributing Equipment Sequence, same ManufacturerModelName, evidence), Comprehensive
// 3D SR Storage, its own new series (SrOptions::findings_series_description, series number
// SrOptions::series_number + 1).
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cmn/metrics/observations.h"
#include "cmn/pipeline/dicom_sr.h"

namespace cmn::pipeline {

// The coded state of an observation (the <state> values above).
struct SrCode {
  std::string value;
  std::string scheme;
  std::string meaning;
  bool operator==(const SrCode& o) const { return value == o.value && scheme == o.scheme && meaning == o.meaning; }
};
SrCode state_code(metrics::StatedObservation::State state);

// What a findings SR says, as read back by read_findings_sr.
struct FindingsSr {
  std::string sop_class_uid;  // Comprehensive 3D SR Storage
  std::string sop_instance_uid;
  std::string series_instance_uid;
  std::string study_instance_uid;
  std::string template_id;  // "1500"
  std::string preliminary_flag;
  std::string completion_flag;
  std::string verification_flag;
  std::string device_observer_uid;
  std::string algorithm_name;
  std::string algorithm_version;
  std::vector<std::string> algorithm_parameters;
  struct Evaluation {
    SrCode observation;
    SrCode state;
  };
  std::vector<Evaluation> evaluations;
  std::vector<std::string> image_sop_instance_uids;  // the Image Library's IMAGE items
  std::vector<SrEquipment> contributing_equipment;
};

// The findings SR for `observations` (metrics::stated_observations of the report) over `sources` (as
// write_report_sr). An empty list is a valid document (the report states no observation). Errors as
// write_report_sr, and InvalidArgument for an observation without a code (not one of CheXpert's 14).
absl::StatusOr<std::string> write_findings_sr(const std::vector<std::string>& sources,
                                              const std::vector<metrics::StatedObservation>& observations,
                                              const SrOptions& options);

// Parses an SR written by write_findings_sr. InvalidArgument when the bytes are not a DICOM SR DCMTK can read.
absl::StatusOr<FindingsSr> read_findings_sr(const std::string& bytes);

}  // namespace cmn::pipeline
