#pragma once
// The CheXpert observations a report states, in the form the clinical outputs carry them (the TID 1500 findings
// SR, FHIR DiagnosticReport.conclusionCode): the observation's CheXpert column name, a code for it, and whether
// the report says it is present, absent or uncertain. Observations the report does not mention are left out.
//
// The labels come from the CheXpert-14 labeler of this library (chexpert.h). Each observation's code is in
// observation_code(); the coding scheme and the reason for choosing it are documented there.
#include <string>
#include <vector>

namespace cmn::metrics {

// CheXpert's 14 observations, in the labeler's column order ("No Finding", ..., "Support Devices").
const std::vector<std::string>& chexpert_observation_names();

struct ObservationCode {
  std::string scheme;         // DICOM Coding Scheme Designator, e.g. "SCT"
  std::string fhir_system;    // the same scheme as a FHIR system URI, e.g. "http://snomed.info/sct"
  std::string code;
  std::string meaning;        // the scheme's display name
};

// The code of a CheXpert observation (by column name); empty code when the name is not one of the 14.
ObservationCode observation_code(const std::string& observation);

struct StatedObservation {
  enum class State { kPresent, kAbsent, kUncertain };
  std::string name;  // CheXpert column name
  State state = State::kPresent;
};
const char* state_name(StatedObservation::State state);  // "present", "absent", "uncertain"

// Every observation `report` mentions, in column order.
std::vector<StatedObservation> stated_observations(const std::string& report);

}  // namespace cmn::metrics
