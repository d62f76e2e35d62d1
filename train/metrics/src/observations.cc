#include "cmn/metrics/observations.h"

#include <utility>

#include "cmn/metrics/labels.h"

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
  // The phantom labeler's findings that are CheXpert observations (granuloma and spine are phantom extras).
  static const std::vector<std::pair<Finding, std::string>> mapped = {
      {Finding::kCardiomegaly, "Cardiomegaly"},
      {Finding::kConsolidation, "Consolidation"},
      {Finding::kPneumothorax, "Pneumothorax"},
      {Finding::kPleuralEffusion, "Pleural Effusion"},
  };
  const ReportLabels labels = extract_labels(report);
  std::vector<StatedObservation> out;
  for (const auto& name : chexpert_observation_names()) {
    for (const auto& [finding, mapped_name] : mapped) {
      if (mapped_name != name) continue;
      const Label l = labels[static_cast<size_t>(finding)];
      if (l == Label::kNotMentioned) continue;
      StatedObservation o;
      o.name = name;
      o.state = l == Label::kPositive    ? StatedObservation::State::kPresent
                : l == Label::kNegative  ? StatedObservation::State::kAbsent
                                         : StatedObservation::State::kUncertain;
      out.push_back(std::move(o));
    }
  }
  return out;
}

}  // namespace cmn::metrics
