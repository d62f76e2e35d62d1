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

// SNOMED CT: the terminology DICOM (PS3.16) and FHIR both use for clinical findings, so one code serves the SR
// and the FHIR report.
ObservationCode observation_code(const std::string& observation) {
  static const std::vector<std::pair<std::string, ObservationCode>> codes = {
      {"Cardiomegaly", {"SCT", "http://snomed.info/sct", "8186001", "Cardiomegaly"}},
      {"Pleural Effusion", {"SCT", "http://snomed.info/sct", "60046008", "Pleural effusion"}},
      {"Pneumothorax", {"SCT", "http://snomed.info/sct", "36118008", "Pneumothorax"}},
      {"Consolidation", {"SCT", "http://snomed.info/sct", "95436008", "Lung consolidation"}},
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
