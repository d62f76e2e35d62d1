#include "cmn/metrics/observations.h"

#include <utility>

#include "cmn/metrics/chexpert.h"

namespace cmn::metrics {

const std::vector<std::string>& chexpert_observation_names() {
  static const std::vector<std::string> names = {
      "No Finding",   "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion",    "Lung Opacity",
      "Edema",        "Consolidation",              "Pneumonia",    "Atelectasis",    "Pneumothorax",
      "Pleural Effusion", "Pleural Other",          "Fracture",     "Support Devices"};
  return names;
}

// One code per CheXpert observation, for the TID 1500 findings SR and FHIR conclusionCode.
// SNOMED CT wherever a concept means what CheXpert's column means: it is the terminology DICOM (PS3.16) and FHIR
// both use for clinical findings, so one code serves the SR and the FHIR report. Sources the codes were checked
// against: DICOM PS3.16 context groups (CID 6101 "Chest Finding or Feature": DCM 112033 "Abnormal opacity";
// CID 6105: SCT 36118008 "Pneumothorax"; PixelMed's CID tables: SCT 60046008 "Pleural effusion"), FHIR value sets
// (SCT 281900007 "No abnormality detected", 63653004 "Medical device", 95436008 "Lung consolidation"), and the
// SNOMED CT concepts of the CheXpert / ChestX-ray14 label mappings in common use (8186001, 19242006, 233604007,
// 46621007, 125605004).
// Where CheXpert's column is a bucket with no single concept, the closest choice is documented:
//   Lung Opacity: DICOM's own chest CAD concept (112033, DCM, "Abnormal opacity"): any abnormal lung opacity,
//     which is CheXpert's definition; SNOMED CT has no concept of that scope.
//   Enlarged Cardiomediastinum, Lung Lesion, Pleural Other: CheXpert bundles several findings (mediastinal
//     widening with cardiac silhouette enlargement; nodule, mass and other lesions; pleural thickening, fibrosis
//     and calcification), and any one SNOMED CT concept would claim more (or less) than the report says. They get
//     codes of a private coding scheme (99CMN, PS3.16 8.2: private schemes start with "99"; FHIR system
//     urn:cmn:chexpert) whose meaning is CheXpert's column definition, so a receiver can map them itself.
ObservationCode observation_code(const std::string& observation) {
  static const std::string kSct = "http://snomed.info/sct";
  static const std::string kDcm = "http://dicom.nema.org/resources/ontology/DCM";
  static const std::string kCmn = "urn:cmn:chexpert";
  static const std::vector<std::pair<std::string, ObservationCode>> codes = {
      {"No Finding", {"SCT", kSct, "281900007", "No abnormality detected"}},
      {"Enlarged Cardiomediastinum", {"99CMN", kCmn, "CHX-ENL-CMED", "Enlarged cardiomediastinum"}},
      {"Cardiomegaly", {"SCT", kSct, "8186001", "Cardiomegaly"}},
      {"Lung Lesion", {"99CMN", kCmn, "CHX-LUNG-LESION", "Lung lesion"}},
      {"Lung Opacity", {"DCM", kDcm, "112033", "Abnormal opacity"}},
      {"Edema", {"SCT", kSct, "19242006", "Pulmonary edema"}},
      {"Consolidation", {"SCT", kSct, "95436008", "Lung consolidation"}},
      {"Pneumonia", {"SCT", kSct, "233604007", "Pneumonia"}},
      {"Atelectasis", {"SCT", kSct, "46621007", "Atelectasis"}},
      {"Pneumothorax", {"SCT", kSct, "36118008", "Pneumothorax"}},
      {"Pleural Effusion", {"SCT", kSct, "60046008", "Pleural effusion"}},
      {"Pleural Other", {"99CMN", kCmn, "CHX-PLEURAL-OTH", "Pleural abnormality other than effusion"}},
      {"Fracture", {"SCT", kSct, "125605004", "Fracture of bone"}},
      {"Support Devices", {"SCT", kSct, "63653004", "Medical device"}},
  };
  for (const auto& [name, code] : codes) {
    if (name == observation) return code;
  }
  return {};
}

const char* state_name(StatedObservation::State state) {
  switch (state) {
    case StatedObservation::State::kPresent: return "present";
    case StatedObservation::State::kAbsent: return "absent";
    case StatedObservation::State::kUncertain: return "uncertain";
  }
  return "?";
}

std::vector<StatedObservation> stated_observations(const std::string& report) {
  // The CheXpert-14 labeler (chexpert.h): 1 present, 0 absent, -1 uncertain, blank left out. No Finding is
  // only ever 1 or blank, so it is "present" or absent from the list.
  const ChexpertLabels labels = chexpert_label(report);
  std::vector<StatedObservation> out;
  for (std::size_t k = 0; k < labels.size(); ++k) {
    const Mention m = labels[k];
    if (m == Mention::kBlank) continue;
    StatedObservation o;
    o.name = observation_names()[k];
    o.state = m == Mention::kPositive   ? StatedObservation::State::kPresent
              : m == Mention::kNegative ? StatedObservation::State::kAbsent
                                        : StatedObservation::State::kUncertain;
    out.push_back(std::move(o));
  }
  return out;
}

}  // namespace cmn::metrics
